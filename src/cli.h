/*
 * cli.h: the subcommands of src/ and the helpers they share.
 * Each cmd_* takes the arguments after its name (argv[0] is the command
 * name) and returns the process exit status: 0 success, 1 a result that
 * differs, 2 bad usage or bad input, 3 an internal error.
 */
#ifndef MASQ_CLI_H
#define MASQ_CLI_H

#include <stddef.h>

#include "core/util.h"

int cmd_demo(int argc, char **argv);
int cmd_forward(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_sessions(int argc, char **argv);
int cmd_replay(int argc, char **argv);
int cmd_resume(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_tui(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_calib(int argc, char **argv);

/* main's argv (NULL-terminated), for masq replay running itself again. */
extern char **cli_argv;

/* The subcommands' usage texts (masq --help, masq CMD --help). */
typedef struct cli_subcmd {
	const char *name;
	const char *usage;	/* after "masq " */
	const char *summary;
} cli_subcmd;
extern const cli_subcmd cli_subcmds[];	/* terminated by a NULL name */
const cli_subcmd *cli_subcmd_find(const char *name);
/* Print the usage of subcommand cmd (masq CMD --help). */
void cli_cmd_help(const char *cmd);

/* Print "masq: <msg>" for err on stderr and return its exit status. */
int cli_fail(const masq_err *err);
/* Warn on stderr that a Qwen3-VL model meets n_vision vision tokens without
 * deepstack features (masq-calib(5)). */
void cli_deepstack_warn(int n_vision);
/* Print a usage error "masq CMD: msg" and a hint, return 2. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Parse a positive integer option value; -1 with a message on error. */
int cli_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out);
/* Resolve model and calibration paths: when both are NULL, write (or reuse)
 * the embedded demo and point them at it.  the strings at model and calib become owned. */
int cli_default_inputs(char **model_dir, char **calib_path, masq_err *err);
/* x with two decimals into buf, "-" when not finite (tables of dB). */
void cli_fmt_db(char *buf, size_t n, double x);
/* Apply --threads (0: leave OpenBLAS's own default). */
void cli_set_threads(long n);
/* Under mpirun, rank 0: what to say if mpirun ends this process (SIGTERM,
 * after another process died): the session, its database (NULL: none) and
 * the layer it was in.  Elsewhere nothing. */
void cli_stop_note(const char *db_path, long long session, int layer, int n_layers);

#endif
