/*
 * main.c: masq's entry point, the subcommand table and the help text.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/demo.h"
#include "core/dist.h"
#include "core/engine.h"
#include "src/cli.h"

static const struct {
	const char *name;
	int (*fn)(int, char **);
} subcmds[] = {
	{"demo", cmd_demo},
	{"inspect", cmd_inspect},
	{"run", cmd_run},
	{"sessions", cmd_sessions},
	{"replay", cmd_replay},
	{"resume", cmd_resume},
	{"export", cmd_export},
	{"eval", cmd_eval},
	{"tui", cmd_tui},
	{"forward", cmd_forward},
	{"tokenize", cmd_tokenize},
	{"calib", cmd_calib},
};
#define NSUBCMDS (sizeof subcmds / sizeof subcmds[0])

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: masq [--help] [--version] [COMMAND [ARGS]]\n"
	    "\n"
	    "masq is a workbench for MASQuant post-training quantization of multimodal\n"
	    "language models.  With no command it opens the workbench (masq tui) on the\n"
	    "embedded demo when run from a terminal, and otherwise runs every method on it\n"
	    "side by side (masq run --method all).\n"
	    "\n"
	    "commands:\n");
	for (const cli_subcmd *c = cli_subcmds; c->name != NULL; c++)
		fprintf(fp, "  masq %s\n      %s\n", c->usage, c->summary);
	fprintf(fp,
	    "\n"
	    "options:\n"
	    "  --model DIR    a Hugging Face model directory (config.json + safetensors);\n"
	    "                 default: the embedded demo (see masq demo)\n"
	    "  --calib FILE   a calibration set (masq-calib(5)); default: the demo's\n"
	    "  --out FILE     forward: write layers.N.output [tokens, hidden] F32 to FILE\n"
	    "  --threads N    BLAS threads (default: OPENBLAS_NUM_THREADS or all cores)\n"
	    "  --json         print one JSON document instead of tables\n"
	    "  --preset NAME  demo size: tiny (tests), tiny-vl (with what masq calib needs), small,\n"
	    "                 3b (Qwen2.5-VL-3B shapes), 7b, 72b (memory benchmarks)\n"
	    "  --seed N       demo: its seed (default %u); run: the generator's seed\n"
	    "\n"
	    "run options (defaults are the reference implementation's):\n"
	    "  --method M     rtn, sq (SmoothQuant), mas (per-modality smoothing),\n"
	    "                 mas-cmc (MAS + cross-modal compensation; default), or all\n"
	    "  --wbits N      weight bits, 2-8 or 16 (default 4)\n"
	    "  --abits N      activation bits, 2-8 or 16 (default 8)\n"
	    "  --wgroup N     weights in asymmetric groups of N input channels; default:\n"
	    "                 per output channel, or groups of 128 when --abits is 16\n"
	    "  --alpha X      migration strength in [0, 1] (default 0.5), or 'search'\n"
	    "  --alpha-grid LO:STEP:HI   the search grid (default 0.2:0.05:0.9)\n"
	    "  --search-tokens N         tokens (whole sequences) the search runs on (1024)\n"
	    "  --rank R       CMC rank: a ratio in (0, 1] of min(in, out) or a whole number\n"
	    "                 (default 0.05); 0 turns compensation off\n"
	    "  --rank-floor N the smallest rank a ratio gives (default 32)\n"
	    "  --svd MODE     full, randomized or auto (default: randomized when the rank\n"
	    "                 is small against the matrix)\n"
	    "  --no-whiten    plain SVD of the weight difference (the reference's no-white)\n"
	    "  --cmc-target T fp (default: S_m W in full precision) or quantized (Q(S_m W))\n"
	    "  --cmc-diagnostics         CMC error against rank, whitened and not\n"
	    "  --set L.LIN.KEY=VALUE     per-layer override: L a layer or '*'; LIN q, k, v,\n"
	    "                 o, gate, up, down, qkv, gateup or '*'; KEY alpha,\n"
	    "                 alpha.text|vision|audio|unified, rank, method\n"
	    "  --verbose      per-linear rows in the table (sessions show: whole payloads;\n"
	    "                 replay: one line per replayed event)\n"
	    "\n"
	    "sessions (run records every step; replay, resume and export read them):\n"
	    "  --db FILE      the session database (default masq.db, or $MASQ_DB)\n"
	    "  --no-db        run: record nothing\n"
	    "  --session ID   which session (default: the most recent)\n"
	    "  --export DIR   replay: also re-run exports, each into DIR/<its name>, and\n"
	    "                 compare their bytes\n"
	    "  --exact        replay: refuse unless the numeric environment is the recorded\n"
	    "                 one or can be reproduced (another OpenBLAS kernel set)\n"
	    "  --tolerance    replay: compare within the named tolerances (statistics 1e-4,\n"
	    "                 quantized 2e-2 relative, SQNR 0.05 dB) even where exact is possible\n"
	    "  --format F     export: fake, compressed-tensors or masquant\n"
	    "  -h, --help     this help; masq COMMAND --help for one command\n"
	    "  --version      print the version\n"
	    "\n"
	    "environment:\n"
	    "  MASQ_DB        the session database when --db is not given\n"
	    "  MASQ_DEMO_DIR  where the demo used by default is kept\n"
	    "                 (default $XDG_CACHE_HOME/masq or ~/.cache/masq)\n"
	    "  OPENBLAS_CORETYPE  the OpenBLAS kernel set; replay sets it to reproduce one\n"
	    "\n"
	    "exit status: 0 success, 1 replay diverged, 2 bad usage or bad input,\n"
	    "3 an internal error.\n"
	    "See masq(1).\n", DEMO_DEFAULT_SEED);
}

static int masq_main(int argc, char **argv);

int
main(int argc, char **argv)
{
	if (dist_init(&argc, &argv) < 0)
		return 3;
	int rc = masq_main(argc, argv);
	dist_finalize();
	return rc;
}

static int
masq_main(int argc, char **argv)
{
	cli_argv = argv;
	/* Progress and tables reach a pipe or a CI log line by line, so a job
	 * killed half-way still shows how far it got. */
	if (!isatty(1))
		setvbuf(stdout, NULL, _IOLBF, 0);
	if (dist_size() > 1 && (argc < 2 || (strcmp(argv[1], "forward") != 0 && strcmp(argv[1], "run") != 0 &&
	    strcmp(argv[1], "resume") != 0))) {
		/* the commands that shard today; the rest (the main job, help
		 * and version too) would run N times over and write beside each
		 * other */
		if (dist_rank() == 0)
			fprintf(stderr, "masq: under mpirun only masq run, masq resume and masq forward run in several processes "
			    "(%d here); run masq%s%s as one process\n", dist_size(), argc < 2 ? "" : " ",
			    argc < 2 ? "" : argv[1]);
		return 2;
	}
	if (argc < 2) {
		/* The main job on the embedded demo: the workbench on a
		 * terminal, else the headless pipeline, every method side by
		 * side. */
		if (isatty(0) && isatty(1)) {
			char *targs[] = {"tui", NULL};
			return cmd_tui(1, targs);
		}
		char *args[] = {"run", "--method", "all", NULL};
		return cmd_run(3, args);
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		if (argc > 2 && strcmp(argv[1], "help") == 0 && cli_subcmd_find(argv[2]) != NULL) {
			cli_cmd_help(argv[2]);
			return 0;
		}
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
		printf("masq %s\n", PACKAGE_VERSION);
		if (dist_library() != NULL)
			printf("built with %s: under mpirun, masq run, masq resume and masq forward shard their sequences\n", dist_library());
		return 0;
	}
	for (size_t i = 0; i < NSUBCMDS; i++)
		if (strcmp(argv[1], subcmds[i].name) == 0)
			return subcmds[i].fn(argc - 1, argv + 1);
	if (argv[1][0] == '-') {
		/* Options without a command belong to the main job. */
		argv[0] = "run";
		return cmd_run(argc, argv);
	}
	fprintf(stderr, "masq: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
