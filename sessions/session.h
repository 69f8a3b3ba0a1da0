/*
 * session.h: the workbench session, the one place that changes a
 * quantization's state.  Every change is a named command with typed
 * arguments, run by sess_dispatch from the table sess_cmds; when the session
 * records, the command, its result (metric values and the sha256 of what it
 * produced) or its error are appended to the session database as they
 * happen.  masq run, the TUI and replay are three drivers of this table.
 *
 *	sess s;
 *	sess_create(&s, db, &opts, model_dir, calib_path, threads, &err);  // new session row
 *	sess_dispatch(&s, "open", args, &result, &err);
 *	sess_dispatch(&s, "calibrate-layer", NULL, &result, &err);
 *	...
 *	sess_done(&s);
 */
#ifndef MASQ_SESSION_H
#define MASQ_SESSION_H

#include <stdint.h>

#include <jansson.h>

#include "core/calib.h"
#include "core/export.h"
#include "core/model.h"
#include "core/pipeline.h"
#include "sessions/db.h"

typedef enum sess_arg_type { SARG_INT, SARG_NUM, SARG_STR, SARG_BOOL } sess_arg_type;

typedef struct sess_arg {
	const char *name;
	sess_arg_type type;
	int required;
	const char *help;
} sess_arg;

typedef struct sess sess;

typedef struct sess_cmd {
	const char *name;
	const sess_arg *args;	/* terminated by a NULL name */
	const char *summary;	/* one line, for help screens and the man page */
	int key;		/* the TUI's default key, 0 for none */
	/* Run the command; fill result (an object); -1 with err on failure. */
	int (*exec)(sess *s, json_t *args, json_t *result, masq_err *err);
} sess_cmd;

/* The command table, terminated by a NULL name. */
extern const sess_cmd sess_cmds[];
const sess_cmd *sess_cmd_find(const char *name);

struct sess {
	sdb *db;		/* NULL: not recorded anywhere */
	int64_t id;		/* session id in db */
	int record;		/* append events (0 while replaying) */
	int opened;		/* "open" succeeded: m, c, p are live */
	model m;
	calib c;
	pipeline p;
	pipe_opts opts;
	int threads;
	char *model_dir, *calib_path;
	char *model_fp, *calib_fp;	/* fingerprints pinned in the session row */
	char *status;		/* the session row's status when attached ("open", "finished", "failed") */
	char **plan_sha;	/* (n_layers) sha256 of each layer's latest plan blob, or NULL */
	json_t *env;		/* the numeric environment: recorded (attach) or this machine's (create) */
	/* replay: */
	char *blob_scratch;	/* blobs a replay writes go here, not beside the database (NULL: there) */
	char *export_redirect;	/* replay --export DIR: export commands write into DIR/<name> */
	json_t *exports_done;	/* replay: the export directories written, [{event, format, dir}] */
	int skip_exports;	/* replay without --export: exports are checked, nothing is written */
	int64_t cur_event;	/* replay: the recorded command event being replayed */
};

/* Fingerprints: sha256 over config.json and every safetensors file's name,
 * size and header; over the whole calibration file. */
int sess_fingerprint_model(const char *dir, char out[65], masq_err *err);
int sess_fingerprint_calib(const char *path, char out[65], masq_err *err);

/* Start a new recorded session (db may be NULL: not recorded): computes the
 * fingerprints and inserts the session row pinning version, seed, threads,
 * fingerprints and the options as JSON. */
int sess_create(sess *s, sdb *db, const pipe_opts *o, const char *model_dir, const char *calib_path,
    int threads, masq_err *err);
/* Attach to recorded session id for replay or resume (record says whether new
 * events are appended).  model_dir / calib_path override the recorded paths
 * (NULL: use them); their fingerprints must match the recorded ones. */
int sess_attach(sess *s, sdb *db, int64_t id, const char *model_dir, const char *calib_path,
    int record, masq_err *err);
void sess_done(sess *s);

/* Run command name with args (an object, or NULL for none): validates the
 * arguments against the table, records command then result (or error).
 * *result (if not NULL) gets a new reference to the result object. */
int sess_dispatch(sess *s, const char *name, json_t *args, json_t **result, masq_err *err);

/* Rebuild an attached session's state from its events without recomputing:
 * "open" and the settings commands run again, searched alphas and plans are
 * taken from their recorded results, and the pipeline is placed after the
 * last committed layer, from its checkpoint.  *finished is set when the
 * session had finished.  Returns the cursor's layer. */
int sess_restore(sess *s, int *finished, masq_err *err);

/* Blobs: store the file at tmp (then removed) as a blob of the session
 * (beside the database, or in the replay's scratch directory); sha gets
 * its name.  A temporary path to write one at, and the path of blob sha
 * (the scratch directory first), checked against its hash. */
int sess_blob_store(sess *s, char *tmp, char sha[65], masq_err *err);
char *sess_blob_tmp(sess *s, const char *what);
char *sess_blob_path(sess *s, const char *sha, masq_err *err);

/* Replay (sessions/replay.c): see replay.h. */

/* Queries for front ends: they change nothing and record nothing. */
/* Re-evaluate the cursor's layer from the token sample under the current
 * settings (pipe_preview_sample): what an alpha change does, in ms. */
int sess_preview(sess *s, int grp, int mod, pipe_preview *out, masq_err *err);
/* The same preview with the cursor's layer under method (enum method)
 * instead of its own: the method is set on the layer's setting for the
 * preview and the setting restored afterwards, so nothing changes. */
int sess_preview_method(sess *s, int method, int grp, int mod, pipe_preview *out, masq_err *err);

/* What exporting the session in format f would write: export_preview's
 * tensor list (JSON text, a new string) and report, or NULL with err (a
 * layer not yet quantized, bits the format cannot hold). */
char *sess_export_preview(sess *s, int format, export_report *rep, masq_err *err);

/* The options as JSON (the session row's settings) and back. */
json_t *sess_opts_json(const pipe_opts *o);
int sess_opts_from_json(pipe_opts *o, json_t *j, masq_err *err);

/* A JSON number, or null when x is not finite. */
json_t *sess_json_num(double x);
/* {"text": .., "vision": .., "audio": .. [, "all": ..]} from v (STATS_ROWS);
 * null for modalities absent from c. */
json_t *sess_json_mods(const double *v, const calib *c, int with_all);

/* Canonical JSON text of a result (sorted keys, full precision): what is
 * stored and what replay compares. */
char *sess_json_text(json_t *j);

#endif
