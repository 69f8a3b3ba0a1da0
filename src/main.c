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
#include "core/engine.h"
#include "src/cli.h"

static const struct subcmd {
	const char *name;
	int (*fn)(int, char **);
	const char *usage;
	const char *summary;
} subcmds[] = {
	{"demo", cmd_demo, "demo DIR [--preset tiny|small|3b] [--seed N]",
	    "write the embedded demo: DIR/model and DIR/calib.safetensors"},
	{"inspect", cmd_inspect, "inspect PATH [--json]",
	    "summarise a model directory, a calibration set or a safetensors file"},
	{"run", cmd_run,
	    "run [--model DIR --calib FILE] [--method rtn|sq|mas|mas-cmc|all] [--wbits N] [--abits N]\n"
	    "           [--alpha X|search] [--rank R] [--set LAYER.LINEAR.KEY=VALUE ...] [--json]",
	    "quantize every layer with a method and measure it per modality against the FP model"},
	{"sessions", cmd_sessions, "sessions [list | show ID | dump ID | load FILE] [--db FILE] [--json]",
	    "list the recorded sessions, show one's events, dump one as SQL, load a dump"},
	{"replay", cmd_replay, "replay [--db FILE] [--session ID] [--exact | --tolerance] [--export DIR]\n"
	    "           [--model DIR --calib FILE] [--json] [--verbose]",
	    "recompute a recorded session and compare every result, exactly or within tolerances (exit 1 at a divergence)"},
	{"resume", cmd_resume, "resume [--db FILE] [--session ID]",
	    "continue an interrupted run from its last completed layer"},
	{"export", cmd_export, "export [--db FILE] [--session ID] --format fake|compressed-tensors|masquant --out DIR",
	    "write a session's quantized model"},
	{"eval", cmd_eval, "eval --model EXPORT_DIR --reference FP_MODEL_DIR --calib FILE [--threads N] [--json]",
	    "run an export with deployment semantics; SQNR per layer and modality against the FP model"},
	{"tui", cmd_tui, "tui [--model DIR --calib FILE] [--db FILE] [--session ID] [--method M] [--wbits N] [--abits N]\n"
	    "           [--threads N] [--ascii]",
	    "the interactive workbench: step through the layers, see the statistics, tune alpha, export"},
	{"forward", cmd_forward,
	    "forward [--model DIR] [--calib FILE] [--out FILE] [--threads N] [--json]",
	    "run the full-precision decoder layer by layer; write every layer's output"},
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
	for (size_t i = 0; i < NSUBCMDS; i++)
		fprintf(fp, "  masq %s\n      %s\n", subcmds[i].usage, subcmds[i].summary);
	fprintf(fp,
	    "\n"
	    "options:\n"
	    "  --model DIR    a Hugging Face model directory (config.json + safetensors);\n"
	    "                 default: the embedded demo (see masq demo)\n"
	    "  --calib FILE   a calibration set (masq-calib(5)); default: the demo's\n"
	    "  --out FILE     forward: write layers.N.output [tokens, hidden] F32 to FILE\n"
	    "  --threads N    BLAS threads (default: OPENBLAS_NUM_THREADS or all cores)\n"
	    "  --json         print one JSON document instead of tables\n"
	    "  --preset NAME  demo size: tiny (tests), small, 3b (Qwen2.5-VL-3B shapes)\n"
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

/* Print the one-line usage of cmd (for `masq CMD --help`). */
void cli_cmd_help(const char *cmd);

void
cli_cmd_help(const char *cmd)
{
	for (size_t i = 0; i < NSUBCMDS; i++)
		if (strcmp(subcmds[i].name, cmd) == 0)
			printf("usage: masq %s\n  %s\nSee masq(1).\n", subcmds[i].usage, subcmds[i].summary);
}

int
cli_fail(const masq_err *err)
{
	fprintf(stderr, "masq: %s\n", err->msg);
	return masq_exit_code(err->status == MASQ_OK ? MASQ_ERR_INTERNAL : err->status);
}

int
cli_usage(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "masq %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'masq %s --help'.\n", cmd);
	return 2;
}

int
cli_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
		cli_usage(cmd, "%s must be an integer in [%ld, %ld], not '%s'", opt, lo, hi, s);
		return -1;
	}
	*out = v;
	return 0;
}

void
cli_fmt_db(char *buf, size_t n, double x)
{
	if (isfinite(x))
		snprintf(buf, n, "%.2f", x);
	else
		snprintf(buf, n, "-");
}

void
cli_set_threads(long n)
{
	if (n > 0)
		masq_blas_set_threads((int)n);
}

int
cli_default_inputs(char **model_dir, char **calib_path, masq_err *err)
{
	char *base, *dir, *stamp, sub[64];
	const char *env = getenv("MASQ_DEMO_DIR");
	struct stat sb;
	demo_preset p;

	if (*model_dir != NULL && *calib_path != NULL)
		return 0;
	if (*model_dir != NULL || *calib_path != NULL)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "--model and --calib go together (give both, or neither for the demo)");
	if (env != NULL && *env != '\0') {
		base = xstrdup(env);
	} else if ((env = getenv("XDG_CACHE_HOME")) != NULL && *env != '\0') {
		base = masq_path_join(env, "masq");
	} else {
		const char *home = getenv("HOME");
		char *cache = masq_path_join(home && *home ? home : ".", ".cache");
		base = masq_path_join(cache, "masq");
		free(cache);
	}
	snprintf(sub, sizeof sub, "demo-tiny-%u-v%s", DEMO_DEFAULT_SEED, PACKAGE_VERSION);
	dir = masq_path_join(base, sub);
	free(base);
	stamp = masq_path_join(dir, "complete");
	if (stat(stamp, &sb) != 0) {
		FILE *fp;
		demo_preset_get("tiny", &p);
		fprintf(stderr, "masq: writing the embedded demo to %s\n", dir);
		if (demo_write(dir, &p, DEMO_DEFAULT_SEED, err) < 0 ||
		    (fp = fopen(stamp, "w")) == NULL) {
			if (err->status == MASQ_OK)
				masq_err_set(err, MASQ_ERR_IO, "%s: cannot write", stamp);
			free(stamp);
			free(dir);
			return -1;
		}
		fclose(fp);
	}
	free(stamp);
	*model_dir = masq_path_join(dir, "model");
	*calib_path = masq_path_join(dir, "calib.safetensors");
	free(dir);
	return 0;
}

char **cli_argv;

int
main(int argc, char **argv)
{
	cli_argv = argv;
	/* Progress and tables reach a pipe or a CI log line by line, so a job
	 * killed half-way still shows how far it got. */
	if (!isatty(1))
		setvbuf(stdout, NULL, _IOLBF, 0);
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
		if (argc > 2 && strcmp(argv[1], "help") == 0) {
			for (size_t i = 0; i < NSUBCMDS; i++)
				if (strcmp(subcmds[i].name, argv[2]) == 0) {
					cli_cmd_help(argv[2]);
					return 0;
				}
		}
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
		printf("masq %s\n", PACKAGE_VERSION);
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
