/*
 * internal.h: what the files of sessions/ share and nothing above them
 * sees: the session itself, the recorded events collected in order, the
 * helpers every command family uses, and the commands' exec functions for
 * the table (dispatch.c).
 *
 *	sess_evlist l = {0};
 *	sdb_event_each(db, id, sess_evlist_collect, &l, &err);
 *	long o = sess_evlist_outcome(&l, i);   // command i's result or error
 *	sess_evlist_free(&l);
 */
#ifndef MASQ_SESS_INTERNAL_H
#define MASQ_SESS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/calib.h"
#include "core/model.h"
#include "core/pipeline.h"
#include "sessions/db.h"
#include "sessions/session.h"

/* What a layer has in this process (sess.live[l]). */
enum {
	SLIVE_CALIB = 1,	/* calibrated here: its misalignment figures are in memory */
	SLIVE_QUANT = 2,	/* quantized here: per-linear figures in memory, output ready to commit */
	SLIVE_STALE = 4,	/* a setting of it changed after that quantization */
};

struct sess {
	sdb *db;		/* NULL: not recorded anywhere */
	int64_t id;		/* session id in db */
	int record;		/* append events (0 while replaying or restoring) */
	int opened;		/* "open" succeeded: m, c, p are live */
	model m;
	calib c;		/* the calibration set (one rank of several: its embeddings are gone) */
	calib part;		/* one rank of several: its share of c, which the pipeline runs */
	int sharded;		/* part is live */
	int follow;		/* a rank of several whose session rank 0 records (sess_set_follow) */
	pipeline p;
	pipe_opts opts;
	int threads;
	char *model_dir, *calib_path;
	char *model_fp, *calib_fp;	/* fingerprints pinned in the session row */
	char *recorded_version;		/* the masq that recorded the session (NULL: this one) */
	char *status;		/* the row's status when attached */
	char **plan_sha;	/* (n_layers) sha256 of each layer's latest plan blob, or NULL */
	unsigned char *live;	/* (n_layers) SLIVE_* flags */
	json_t *env;		/* the numeric environment: recorded (attach) or this machine's (create) */
	sess_view view;		/* what sess_view_get returns, refreshed there */
	/* the progress hook of the command running (sess_run_to's, or none) */
	sess_progress_fn progress;
	void *progress_ctx;
	int progress_until;
	/* replay (sessions/replay.c): */
	char *blob_scratch;	/* blobs a replay writes go here, not beside the database (NULL: there) */
	char *export_redirect;	/* exports write into DIR/<name> (replay --export DIR) */
	json_t *exports_done;	/* the export directories written, [{event, format, dir}] */
	int skip_exports;	/* exports are checked, nothing is written */
	int64_t cur_event;	/* the recorded command event being replayed */
	/* undo: the settings before each command that changed them, newest
	 * last; rebuilt by restore as the commands are restored */
	struct sess_undo *undo;
	int n_undo, cap_undo;
	int cur_cmd;		/* the command running (its progress), or -1 */
};

/* What a setting command changed: every layer's setting and the bits as
 * they were before it. */
typedef struct sess_undo {
	layer_setting *set;	/* (n_layers) */
	int wbits, abits, wgroup;
	char what[64];		/* the command's name */
} sess_undo;

/* Keep the settings as they are (before a command that may change them);
 * after it, push them when the command changed anything, else drop them. */
sess_undo *sess_undo_take(sess *s);
void sess_undo_push(sess *s, sess_undo *u, const char *what);
void sess_undo_free_all(sess *s);

/* ---- events -------------------------------------------------------------- */

typedef struct sess_ev {
	int64_t seq;
	char *kind, *name, *payload;	/* owned */
} sess_ev;

typedef struct sess_evlist {
	sess_ev *v;	/* (n) */
	size_t n, cap;
} sess_evlist;

/* sdb_event_each callback: append a copy of e to the list ctx. */
int sess_evlist_collect(void *ctx, const sdb_event *e);
void sess_evlist_free(sess_evlist *l);
/* The recorded outcome of command event i: the index of its result or
 * error event, or -1 when the process died before recording one. */
long sess_evlist_outcome(const sess_evlist *l, size_t i);

/* What sess_restore rebuilds while it walks the events. */
typedef struct sess_restore_state {
	int cursor;		/* the layer after the last committed one */
	char *checkpoint;	/* the checkpoint of the last next-layer (owned), or NULL */
	int finished;
	int64_t event;		/* the event being restored, for messages */
} sess_restore_state;

/* ---- blobs (session.c) -------------------------------------------------------- */

/* Store the file at tmp (then removed) as a blob: beside the database, or
 * in the replay's scratch directory; sha gets its name.  A temporary path
 * to write one at; the path of blob sha (the scratch directory first),
 * checked against its hash. */
int sess_blob_store(sess *s, char *tmp, char sha[65], masq_err *err);
char *sess_blob_tmp(sess *s, const char *what);
char *sess_blob_path(sess *s, const char *sha, masq_err *err);

/* ---- helpers of the command families ----------------------------------------- */

const char *sess_arg_str(json_t *args, const char *k, const char *dflt);
double sess_arg_num(json_t *args, const char *k, double dflt);
/* Mark the layers l0..l1 that were quantized here as stale (a setting of
 * theirs changed). */
void sess_mark_stale(sess *s, int l0, int l1);
/* Report the progress of the command running (SP_WORK, frac) to the hook. */
void sess_report_work(sess *s, int cmd, double frac, const char *what);
/* The pipeline's progress hook (pipeline.work): the command running reports it. */
void sess_work(void *ctx, double frac, const char *what);
/* The same for a training step (step of steps, its loss). */
void sess_report_step(sess *s, int cmd, int step, int steps, double loss);

/* The assignments of masq run --set and the set-* commands, parsed once:
 * the --set grammar LAYER.LINEAR.KEY=VALUE lives here (cmd_setting.c). */
enum sess_assign_key { SA_ALPHA, SA_RANK, SA_METHOD, SA_EPOCHS, SA_LR, SA_LOSS, SA_WEIGHTS, SA_TIE };
typedef struct sess_assign {
	int l0, l1;		/* the layers */
	int lins[LIN_COUNT];	/* the linears */
	int nl;
	int key;		/* enum sess_assign_key */
	int row;		/* SA_ALPHA: the alpha row, -1 for every row */
	double value;		/* SA_ALPHA, SA_RANK, SA_LR */
	int method;		/* SA_METHOD */
	int ivalue;		/* SA_EPOCHS, SA_LOSS (enum learn_loss), SA_TIE */
	float lambda[MOD_COUNT];	/* SA_WEIGHTS */
} sess_assign;
/* Parse "LAYER.LINEAR.KEY=VALUE"; err names what is wrong in it. */
int sess_assign_parse(const char *text, int n_layers, sess_assign *a, masq_err *err);
/* Apply a to the session's settings (ranges checked by core's setters). */
int sess_assign_apply(sess *s, const sess_assign *a, masq_err *err);

/* ---- the commands' functions, for the table (dispatch.c) ---------------------------- */

sess_retval scmd_open(sess *s, json_t *args, json_t *res, masq_err *err);
sess_retval scmd_calibrate(sess *s, json_t *args, json_t *res, masq_err *err);
sess_retval scmd_search(sess *s, json_t *args, json_t *res, masq_err *err);
sess_retval scmd_quantize(sess *s, json_t *args, json_t *res, masq_err *err);
sess_retval scmd_train(sess *s, json_t *args, json_t *res, masq_err *err);
int scmd_train_restore(sess *s, json_t *args, json_t *res, sess_restore_state *rs, masq_err *err);
sess_retval scmd_next(sess *s, json_t *args, json_t *res, masq_err *err);
sess_retval scmd_finish(sess *s, json_t *args, json_t *res, masq_err *err);
int scmd_search_restore(sess *s, json_t *args, json_t *res, sess_restore_state *rs, masq_err *err);
int scmd_quantize_restore(sess *s, json_t *args, json_t *res, sess_restore_state *rs, masq_err *err);
int scmd_next_restore(sess *s, json_t *args, json_t *res, sess_restore_state *rs, masq_err *err);
int scmd_finish_restore(sess *s, json_t *args, json_t *res, sess_restore_state *rs, masq_err *err);
/* Continue the cursor's layer from the learned factors in blob file path. */
int sess_factors_read(sess *s, const char *path, masq_err *err);
/* Read the hidden states entering layer rs->cursor from checkpoint sha. */
int sess_checkpoint_read(sess *s, const char *sha, masq_err *err);

sess_retval scmd_set_method(sess *s, json_t *args, json_t *res, masq_err *err);
sess_retval scmd_set_bits(sess *s, json_t *args, json_t *res, masq_err *err);
sess_retval scmd_set_alpha(sess *s, json_t *args, json_t *res, masq_err *err);
sess_retval scmd_set_rank(sess *s, json_t *args, json_t *res, masq_err *err);
sess_retval scmd_set(sess *s, json_t *args, json_t *res, masq_err *err);
sess_retval scmd_note(sess *s, json_t *args, json_t *res, masq_err *err);

sess_retval scmd_export(sess *s, json_t *args, json_t *res, masq_err *err);
sess_retval scmd_allocate_ranks(sess *s, json_t *args, json_t *res, masq_err *err);
sess_retval scmd_undo(sess *s, json_t *args, json_t *res, masq_err *err);
int scmd_allocate_ranks_restore(sess *s, json_t *args, json_t *res, sess_restore_state *rs, masq_err *err);

#endif
