/*
 * cli.c: what the subcommands of src/ share: the usage text of each (for
 * masq --help and masq CMD --help), error printing, option parsing, the
 * default demo inputs.  main.c dispatches; the cmd_*.c files call these.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/demo.h"
#include "core/dist.h"
#include "core/engine.h"
#include "src/cli.h"

char **cli_argv;

const cli_subcmd cli_subcmds[] = {
	{"demo",
	    "demo DIR [--preset tiny|tiny-vl|small|3b|7b|72b] [--seed N]",
	    "write the embedded demo: DIR/model and DIR/calib.safetensors"},
	{"inspect",
	    "inspect PATH [--layer-prefix P] [--json]",
	    "summarise a model directory, a calibration set or a safetensors file"},
	{"run",
	    "run [--model DIR --calib FILE] [--method rtn|sq|mas|mas-cmc|usq|all] [--wbits N] [--abits N]\n"
	    "           [--alpha X|search] [--epochs N] [--lr X] [--loss mae|mse] [--loss-weights T,V,A] [--tie]\n"
	    "           [--rank R | --rank-budget SIZE | --rank-target DB] [--rank-objective relative|absolute]\n"
	    "           [--eval-split SHARE] [--cmc-dtype f16|bf16|f32] [--cmc-precision f32|f64]\n"
	    "           [--whitener cholesky|eig] [--rsvd gram|householder] [--compute f32|bf16]\n"
	    "           [--layer-prefix P] [--set LAYER.LINEAR.KEY=VALUE ...] [--json]",
	    "quantize every layer with a method (mas, mas-cmc, usq learn their factors: 2 epochs unless --epochs 0)\n"
	    "      and measure it per modality against the FP model; under mpirun (a --with-mpi build)\n"
	    "      the processes share the sequences and rank 0 records the session"},
	{"sessions",
	    "sessions [list | show ID | diff A B | dump ID | load FILE | gc [--dry-run]] [--db FILE] [--json]",
	    "list the recorded sessions, show one's events, compare two layer by layer, dump one as SQL, load a dump,\n"
	    "      remove the blobs no session needs"},
	{"replay",
	    "replay [--db FILE] [--session ID] [--exact | --tolerance] [--export DIR]\n"
	    "           [--model DIR --calib FILE] [--json] [--verbose]",
	    "recompute a recorded session and compare every result, exactly or within tolerances (exit 1 at a divergence)"},
	{"resume",
	    "resume [--db FILE] [--session ID]",
	    "continue an interrupted run from its last completed layer (under mpirun too, with any number of processes)"},
	{"export",
	    "export [--db FILE] [--session ID] --format fake|compressed-tensors|masquant --out DIR",
	    "write a session's quantized model"},
	{"eval",
	    "eval --model EXPORT_DIR --reference FP_MODEL_DIR --calib FILE [--layer-prefix P] [--threads N] [--json]",
	    "run an export with deployment semantics; SQNR per layer and modality against the FP model"},
	{"tui",
	    "tui [--model DIR --calib FILE] [--db FILE] [--session ID] [--method M] [--wbits N] [--abits N]\n"
	    "           [--threads N] [--ascii]",
	    "the interactive workbench: step through the layers, see the statistics, tune alpha, export"},
	{"forward",
	    "forward [--model DIR] [--calib FILE] [--out FILE] [--layer-prefix P] [--compute f32|bf16]\n"
	    "           [--threads N] [--json]",
	    "run the full-precision decoder layer by layer; write every layer's output;\n"
	    "      under mpirun (a --with-mpi build) the processes share the sequences, with one process's bits"},
	{"calib",
	    "calib --model DIR --prompts FILE --out FILE [--images DIR] [--min-pixels N] [--max-pixels N]\n"
	    "           [--threads N] [--dry-run] [--json]",
	    "a calibration set from prompts and images (Qwen2.5-VL): chat template, tokenizer, image processor,\n"
	    "      vision tower and positions in masq itself"},
	{"tokenize",
	    "tokenize --model DIR | --tokenizer FILE [--split-special] [--json] [--stats]",
	    "token ids of each line of standard input, one line out per line in, by the model's tokenizer.json"},
	{NULL, NULL, NULL},
};

const cli_subcmd *
cli_subcmd_find(const char *name)
{
	for (const cli_subcmd *c = cli_subcmds; c->name != NULL; c++)
		if (strcmp(c->name, name) == 0)
			return c;
	return NULL;
}

void
cli_cmd_help(const char *cmd)
{
	const cli_subcmd *c = cli_subcmd_find(cmd);
	if (c != NULL)
		printf("usage: masq %s\n  %s\nSee masq(1).\n", c->usage, c->summary);
}

int
cli_fail(const masq_err *err)
{
	/* under mpirun every rank meets the same failure (they agree on it):
	 * rank 0 says it */
	if (dist_rank() == 0)
		fprintf(stderr, "masq: %s\n", err->msg);
	return masq_exit_code(err->status == MASQ_OK ? MASQ_ERR_INTERNAL : err->status);
}

int
cli_usage(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	if (dist_rank() != 0)
		return 2;	/* every rank parses the same words: rank 0 says what is wrong */
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

void
cli_deepstack_warn(int n_vision)
{
	fprintf(stderr, "masq: warning: the calibration set has %d vision tokens but no deepstack features: "
		    "Qwen3-VL adds its vision tower's intermediate features to them after its first layers, so from "
		    "layer 1 on their hidden states are not the model's (capture them: masq-calib(5))\n", n_vision);
}

/* ---- a run that mpirun ends -------------------------------------------------- */

/* When a process of several dies, mpirun names it and ends the others with
 * SIGTERM: rank 0 then says where the run stood and how to go on.  The
 * note is written before the signal can come (write(2) is safe in a
 * handler; the note is swapped with SIGTERM blocked). */
static char stop_note[1024];
static size_t stop_len;

static void
on_term(int sig)
{
	if (stop_len > 0) {
		ssize_t w = write(2, stop_note, stop_len);
		(void)w;
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

void
cli_stop_note(const char *db_path, long long session, int layer, int n_layers)
{
	static int armed;
	char buf[sizeof stop_note];
	if (dist_size() < 2 || dist_rank() != 0)
		return;
	int n = db_path != NULL ?
	    snprintf(buf, sizeof buf, "\nmasq: terminated in layer %d of %d of session %lld (mpirun ends every process"
		" when one dies, and names it); 'masq resume --db %s --session %lld' continues from the last completed"
		" layer\n", layer, n_layers, session, db_path, session) :
	    snprintf(buf, sizeof buf, "\nmasq: terminated in layer %d of %d (mpirun ends every process when one dies,"
		" and names it); nothing was recorded\n", layer, n_layers);
	if (n < 0 || (size_t)n >= sizeof buf)
		n = (int)sizeof buf - 1;
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigprocmask(SIG_BLOCK, &block, &old);
	memcpy(stop_note, buf, (size_t)n);
	stop_len = (size_t)n;
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (!armed) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_term;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGTERM, &sa, NULL);
		armed = 1;
	}
}
