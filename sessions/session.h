/*
 * session.h: the workbench session, the one place that changes a
 * quantization's state.  Every change is a command of the table
 * sess_cmds, run by one dispatcher; when the session records, the command,
 * its result (metric values and the sha256 of what it produced) or its
 * error are appended to the session database as they happen.  masq run,
 * masq resume, the workbench and replay are drivers of this table; what
 * they show comes from the read-only view below.
 *
 *	sess *s;
 *	sess_create(&s, db, &opts, model_dir, calib_path, threads, &err);  // a new session row
 *	sess_dispatch(s, SC_OPEN, NULL, NULL, &err);
 *	sess_run_to(s, sess_view_get(s)->n_layers, progress, ctx, &err);  // every layer
 *	sess_dispatch(s, SC_FINISH, NULL, NULL, &err);
 *	sess_free(s);
 *
 * The struct is private (sessions/internal.h): front ends read the
 * session's state through sess_view_get, sess_layer_* and the field table
 * sess_fields, and change it only through commands.
 */
#ifndef MASQ_SESSION_H
#define MASQ_SESSION_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "core/export.h"
#include "core/pipeline.h"
#include "sessions/db.h"

typedef struct sess sess;

/* ---- the command table -------------------------------------------------------- */

typedef enum sess_arg_type { SARG_INT, SARG_NUM, SARG_STR, SARG_BOOL } sess_arg_type;

typedef struct sess_arg {
	const char *name;
	sess_arg_type type;
	int required;
	const char *help;
} sess_arg;

/* The commands, as front ends name them (names are for records and typing). */
enum sess_cmd_id {
	SC_OPEN, SC_CALIBRATE, SC_SET_METHOD, SC_SET_BITS, SC_SET_ALPHA, SC_SEARCH, SC_SET_RANK, SC_SET,
	SC_QUANTIZE, SC_NEXT, SC_FINISH, SC_EXPORT, SC_NOTE, SC_TRAIN, SC_ALLOC, SC_UNDO, SC_COUNT
};

/* What a command is (sess_cmd.flags). */
enum sess_cmd_flag {
	SCF_NEEDS_OPEN = 1 << 0,	/* the model must be open */
	SCF_LAYER = 1 << 1,	/* acts on the cursor's layer; a "layer" argument must name it */
	SCF_LONG = 1 << 2,	/* long work: front ends run it off their input loop, with progress */
	SCF_SETTING = 1 << 3,	/* changes a setting: resume applies it again; a quantized layer it
				   touches becomes stale */
	SCF_FILES = 1 << 4,	/* writes files outside the database: replay checks it, or redirects it */
};

/* How resume rebuilds what a recorded command did (sess_cmd.restore). */
enum sess_restore_kind {
	SR_NONE,		/* nothing to rebuild (export, note) */
	SR_RERUN,		/* run it again (open, the settings) */
	SR_RESULT,		/* take its effect from the recorded result (restore_fn) */
};

/* What exec returns. */
typedef enum sess_retval {
	SESS_ERROR = -1,	/* failed; err says why; the error is recorded */
	SESS_OK = 0,
	SESS_SKIPPED = 1,	/* replay: checked, not carried out (an export without --export) */
} sess_retval;

struct sess_restore_state;

typedef struct sess_cmd {
	const char *name;
	const sess_arg *args;	/* terminated by a NULL name */
	const char *summary;	/* one line, for help screens and the man page */
	int flags;		/* enum sess_cmd_flag */
	int restore;		/* enum sess_restore_kind */
	/* Run it; fill result (an object). */
	sess_retval (*exec)(sess *s, json_t *args, json_t *result, masq_err *err);
	/* SR_RESULT: apply the recorded result res of this command (args as
	 * recorded) to the state being rebuilt. */
	int (*restore_fn)(sess *s, json_t *args, json_t *res, struct sess_restore_state *rs, masq_err *err);
} sess_cmd;

/* The table, indexed by enum sess_cmd_id, terminated by a NULL name. */
extern const sess_cmd sess_cmds[SC_COUNT + 1];
/* The entry named name, or NULL. */
const sess_cmd *sess_cmd_find(const char *name);
/* The id of entry c. */
int sess_cmd_id(const sess_cmd *c);

/* ---- life cycle ------------------------------------------------------------------- */

/* Start a new session (db may be NULL: not recorded): the fingerprints and
 * numeric environment are computed and a session row pins version, seed,
 * threads, fingerprints, options and environment.  *out gets it. */
int sess_create(sess **out, sdb *db, const pipe_opts *o, const char *model_dir, const char *calib_path,
    int threads, masq_err *err);
/* Attach to recorded session id (<= 0: the most recent that did not fail)
 * for replay or resume; record says whether new events are appended.
 * model_dir / calib_path override the recorded paths (NULL: use them);
 * their fingerprints must match the recorded ones.  Settings read back are
 * checked as the command line checks them. */
int sess_attach(sess **out, sdb *db, int64_t id, const char *model_dir, const char *calib_path, int record,
    masq_err *err);
void sess_free(sess *s);

/* Fingerprints: sha256 over config.json and every safetensors file's name,
 * size and header; over the whole calibration file. */
int sess_fingerprint_model(const char *dir, char out[65], masq_err *err);
int sess_fingerprint_calib(const char *path, char out[65], masq_err *err);

/* ---- commands ------------------------------------------------------------------------- */

/* Run command id with args (an object, or NULL for none): checks the
 * arguments against the table and the command's flags, records command
 * then result (or error).  *result (if not NULL) gets a new reference to
 * the result.  Returns SESS_OK, SESS_SKIPPED or SESS_ERROR. */
int sess_dispatch(sess *s, int id, json_t *args, json_t **result, masq_err *err);
/* The same by name (typed command lines, recorded events); an unknown
 * name is a usage error. */
int sess_dispatch_name(sess *s, const char *name, json_t *args, json_t **result, masq_err *err);

/* Progress of the recipe and of long commands. */
enum sess_phase { SP_BEFORE, SP_WORK, SP_AFTER };
typedef struct sess_progress {
	int cmd;		/* enum sess_cmd_id of the command */
	int phase;		/* before it, inside it (frac), after it (rc) */
	int layer;		/* its layer */
	int until;		/* sess_run_to: the layer it stops before */
	double frac;		/* SP_WORK: the part of the command done, 0..1 */
	int rc;			/* SP_AFTER: what it returned */
	/* SP_WORK of train-layer: steps done of steps, the last step's loss */
	int step, steps;
	double loss;
	/* SP_WORK from inside calibrate, search, quantize: what is being done
	 * ("statistics at the o input (2 of 4)"), valid during the call */
	const char *what;
} sess_progress;
/* Called on the thread that runs the session; non-zero asks sess_run_to to
 * stop before its next command (a command under way finishes). */
typedef int (*sess_progress_fn)(void *ctx, const sess_progress *p);
/* The hook single commands report their work to (fn NULL: none);
 * sess_run_to installs its own while it runs. */
void sess_set_progress(sess *s, sess_progress_fn fn, void *ctx);
/* 1: every layer is quantized once and left, as masq run and masq resume
 * run them (pipeline.one_pass: compensation's Gram matrices are freed as
 * soon as they are used, a layer's peak memory holding one group's); the
 * figures are the same either way.  0 (the default: the workbench and
 * replay) keeps them for previews and re-quantizing. */
void sess_set_one_pass(sess *s, int on);
/* A rank other than 0 of several, whose session (created without a
 * database) rank 0 records: it streams its share of each checkpoint to
 * rank 0 (the blobs are rank 0's to write).  Set before the first layer. */
void sess_set_follow(sess *s, int on);

/* The per-layer recipe, one copy for every driver: from the cursor up to
 * (not including) layer until, calibrate each layer that is not, search
 * alpha when the session searches and the layer has no search, learn its
 * factors when its setting learns and they are not learned for it,
 * quantize it when it is not quantized or stale, and commit it.  progress (may be NULL)
 * is called before and after every command and may stop the run.  Returns
 * 0 when the cursor reached until, 1 when progress stopped it, -1 with err
 * when a command failed. */
int sess_run_to(sess *s, int until, sess_progress_fn progress, void *ctx, masq_err *err);

/* Rebuild an attached session's state from its events without recomputing:
 * each recorded command's restore rule (SR_RERUN, SR_RESULT), then the
 * pipeline placed after the last committed layer, from its checkpoint.
 * *finished is set when the session had finished.  Returns the cursor. */
int sess_restore(sess *s, int *finished, masq_err *err);

/* ---- the view: what front ends read -------------------------------------------------------- */

/* A layer's state, owned by the session. */
enum sess_layer_state {
	SLS_PENDING,		/* not calibrated (or its statistics were released before a commit) */
	SLS_CALIBRATED,		/* the cursor's layer, statistics in memory */
	SLS_QUANTIZED,		/* the cursor's layer, quantized and measured here */
	SLS_STALE,		/* quantized, then a setting of it changed: the figures are the old setting's */
	SLS_COMMITTED,		/* behind the cursor */
	SLS_LEARNED,		/* the cursor's layer, its factors learned, not quantized yet */
	SLS_COUNT
};
/* "pending", "calibrated", "quantized", "stale", "committed" */
const char *sess_layer_state_name(int st);

typedef struct sess_view {
	int64_t id;		/* 0: not recorded */
	const char *db_path;	/* NULL: not recorded */
	const char *model_dir, *calib_path;
	int opened;		/* the model is open: everything below is valid */
	int n_layers;
	int cursor;		/* the layer being worked on; n_layers when all are committed */
	int finished;
	int wbits, abits, wgroup;	/* what is quantized next */
	int search;		/* the session searches alpha at every layer */
	int tokens;		/* calibration tokens */
	int tokens_mod[MOD_COUNT];
	int deepstack;		/* the calibration set's deepstack features (Qwen3-VL) */
	int deepstack_missing;	/* a Qwen3-VL model, vision tokens, and no deepstack features */
	const pipe_summary *summary;	/* valid when finished */
	const pipe_opts *opts;	/* the session's options */
} sess_view;

/* The view of s (valid until the next command). */
const sess_view *sess_view_get(const sess *s);
int sess_layer_state(const sess *s, int l);
/* Does layer l still have to learn its factors before it can be quantized
 * (its setting learns; for the cursor's layer: not learned for it yet)? */
int sess_layer_needs_learning(const sess *s, int l);
/* Layer l's figures (output SQNR, MAE, method, times) are known: committed,
 * restored, or quantized here. */
int sess_layer_measured(const sess *s, int l);
/* Layer l's per-linear figures and CMC diagnostics are in memory
 * (quantized in this process). */
int sess_layer_linears_known(const sess *s, int l);
/* Layer l's misalignment figures are in memory (calibrated in this process). */
int sess_layer_misalign_known(const sess *s, int l);
/* The method that made layer l's figures (when measured) or that will. */
int sess_layer_method(const sess *s, int l);
const layer_setting *sess_layer_setting(const sess *s, int l);
const pipe_layer_result *sess_layer_result(const sess *s, int l);
/* The cursor layer's statistics at site, or NULL when not calibrated. */
const site_stats *sess_cursor_stats(const sess *s, int site);
/* Modality m has calibration tokens. */
int sess_mod_present(const sess *s, int m);
/* The session's BLAS threads (pinned). */
int sess_threads(const sess *s);
/* Its numeric environment (core/numenv.h): the recorded one when attached,
 * this machine's when created; NULL when none was recorded.  Borrowed. */
json_t *sess_environment(const sess *s);
/* It failed before its first layer (its row's status). */
int sess_failed(const sess *s);
/* Two sessions of the same model compared layer by layer (fa, fb: whether
 * each is finished): [{layer (or "model"), what, a, b, b_minus_a for
 * figures}], every setting that differs and the SQNR everywhere; NULL with
 * err when they cannot be compared (not opened, other models). */
json_t *sess_diff(sess *a, int fa, sess *b, int fb, masq_err *err);
/* The session's database (NULL: not recorded). */
sdb *sess_db(const sess *s);
/* The recorded fingerprints of the session's model and calibration set. */
const char *sess_model_fingerprint(const sess *s);
const char *sess_calib_fingerprint(const sess *s);

/* What the compensation costs: the parameters of L1 and L2 of linear k of
 * layer l, summed over the compensated modalities present (the ranks in
 * effect once measured, else those its setting gives), of the layer, of
 * the model; bytes as the masquant export stores them
 * (sess_cmc_elem_bytes: the cmc_dtype setting).  The checkpoint's tensor
 * bytes beside them. */
int64_t sess_lin_cmc_params(const sess *s, int l, int k);
/* The calibration sequences, and whether sequence i is held out. */
int sess_n_seqs(const sess *s);
int sess_seq_held(const sess *s, int i);
int64_t sess_layer_cmc_params(const sess *s, int l);
int64_t sess_cmc_params(const sess *s);
int sess_cmc_elem_bytes(const sess *s);
const char *sess_cmc_dtype_name(const sess *s);
/* The whole-number rank of linear k of layer l: in effect once measured,
 * else the one its setting gives (0: none, or not mas-cmc). */
int sess_lin_rank(const sess *s, int l, int k);
uint64_t sess_checkpoint_bytes(const sess *s);
/* Does the compensation of linear k of layer l, as last measured, leave
 * modality m (vision, audio) more than SESS_CMC_WORSE_DB below the same
 * linear without compensation?  *without gets that figure. */
#define SESS_CMC_WORSE_DB 0.1
int sess_lin_cmc_hurts(const sess *s, int l, int k, int m, double *without);
/* Did the rank floor, not the ratio, decide linear k's rank at layer l
 * (a ratio setting whose share of min(in, out) is below the floor)? */
int sess_lin_rank_floored(const sess *s, int l, int k);

/* One field of a layer's row: the list, the overview, masq run's table and
 * its --json read these (htop's Process_fields). */
enum sess_field_kind { SFK_INT, SFK_TEXT, SFK_DB, SFK_ALPHA, SFK_RANK, SFK_SECONDS, SFK_BYTES };
typedef struct sess_field {
	const char *name;	/* short name, also the --json key (with json_sub) */
	const char *title;	/* column header */
	int width;		/* columns in a table, the separating blank included */
	int kind;		/* enum sess_field_kind */
	const char *json;	/* the --json key; NULL: not in --json */
	const char *json_sub;	/* the key inside it ("text" of "sqnr_db"), or NULL */
	/* the value of layer l; NAN when none (not measured, modality absent) */
	double (*value)(const sess *s, int l);
	/* SFK_TEXT: the text of layer l */
	const char *(*text)(const sess *s, int l);
} sess_field;

enum sess_field_id {
	SF_LAYER, SF_STATE, SF_METHOD, SF_ALPHAS, SF_ALPHA_T, SF_ALPHA_V, SF_ALPHA_A, SF_RANK, SF_SQNR_T,
	SF_SQNR_V, SF_SQNR_A, SF_SQNR_ALL, SF_MAE_T, SF_MAE_V, SF_MAE_A, SF_MAE_ALL, SF_SECONDS, SF_EPOCHS, SF_GAIN,
	SF_CMC_BYTES, SF_OWN_T, SF_OWN_V, SF_OWN_A, SF_OWN_ALL, SF_HELD_T, SF_HELD_V, SF_HELD_A, SF_HELD_ALL, SF_COUNT
};
extern const sess_field sess_fields[SF_COUNT];
/* The value of field f for layer l, formatted in w columns (w 0: no
 * padding; right-aligned numbers, left-aligned text), "-" when none. */
void sess_field_format(const sess *s, int f, int l, int w, char *buf, size_t n);
/* Layer l's fields that have a json key, into the object o. */
void sess_fields_json(const sess *s, int l, json_t *o);

/* ---- queries: they change nothing and record nothing -------------------------------------- */

/* Re-evaluate the cursor's layer from the token sample under the current
 * settings (pipe_preview_sample): what an alpha change does, in ms. */
int sess_preview(sess *s, int grp, int mod, pipe_preview *out, masq_err *err);
/* The same preview with the cursor's layer under method (enum method)
 * instead of its own; the layer's setting is left as it was. */
int sess_preview_method(sess *s, int method, int grp, int mod, pipe_preview *out, masq_err *err);
/* What exporting the session in format f would write: export_preview's
 * tensor list (JSON text, a new string) and report, or NULL with err. */
char *sess_export_preview(sess *s, int format, export_report *rep, masq_err *err);
/* The masq version that recorded s. */
const char *sess_recorded_version(const sess *s);
/* The sizes an export command's result records ("bytes"), as a report. */
void sess_export_sizes(const json_t *res, export_report *r);

/* ---- settings as JSON, and JSON helpers ---------------------------------------------------- */

/* The options as JSON (the session row's settings) and back; reading back
 * checks every value as the command line does (pipe_opts_check). */
json_t *sess_opts_json(const pipe_opts *o);
int sess_opts_from_json(pipe_opts *o, json_t *j, masq_err *err);
/* A JSON number, or null when x is not finite. */
json_t *sess_json_num(double x);
/* {"text": .., "vision": .., "audio": .. [, "all": ..]} from v (STATS_ROWS);
 * null for modalities absent from the session's calibration set. */
json_t *sess_json_mods(const sess *s, const double *v, int with_all);
/* The same for a calibration set's modality counts n_mod (masq eval). */
json_t *sess_json_mods_counts(const int *n_mod, const double *v, int with_all);
/* Canonical JSON text of a result (sorted keys, full precision): what is
 * stored and what replay compares. */
char *sess_json_text(json_t *j);

#endif
