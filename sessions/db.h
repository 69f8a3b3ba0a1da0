/*
 * db.h: the session database (masq-session(5)).  One SQLite file holds many
 * sessions; large arrays live in files beside it (DB.blobs/<sha256>), named
 * by their content's sha256.  Only sessions/ includes sqlite3.h.
 *
 * The file is identified by PRAGMA application_id (SDB_APPLICATION_ID) and
 * versioned by PRAGMA user_version with ordered migrations; it runs in WAL
 * mode with foreign_keys on; every table is STRICT; the event table is
 * append-only (triggers refuse UPDATE and DELETE).
 *
 *	sdb *db;
 *	if (sdb_open(&db, "masq.db", SDB_CREATE, &err) < 0) ...
 *	int64_t sid;
 *	sdb_session_new(db, &info, &sid, &err);
 *	sdb_event_append(db, sid, "command", "quantize-layer", "{\"layer\":0}", NULL, &err);
 *	sdb_close(db);
 */
#ifndef MASQ_SDB_H
#define MASQ_SDB_H

#include <stdint.h>
#include <stdio.h>

#include "core/util.h"

#define SDB_APPLICATION_ID 0x6d617371	/* "masq" */
#define SDB_USER_VERSION 2		/* the schema this build writes */
#define SDB_DEFAULT_PATH "masq.db"

enum { SDB_CREATE = 1 };

typedef struct sdb sdb;

/* Open path (creating it with SDB_CREATE when missing).  Refuses, with a
 * message naming the file: not an SQLite database, a truncated or corrupt
 * file (PRAGMA quick_check), another application's database (application_id),
 * a newer schema (user_version above SDB_USER_VERSION).  Applies pending
 * migrations in order, in one transaction. */
int sdb_open(sdb **out, const char *path, int flags, masq_err *err);
void sdb_close(sdb *db);
const char *sdb_path(const sdb *db);
/* The blob directory, DB.blobs (created on first use). */
const char *sdb_blob_dir(const sdb *db);

/* A session row: what replay needs pinned. */
typedef struct sdb_session {
	int64_t id;
	char *created;		/* UTC, ISO 8601 */
	char *masq_version;
	int64_t seed;
	int threads;		/* BLAS threads, pinned on replay */
	char *model_path;
	char *model_fp;		/* sha256 fingerprint (masq_fingerprint_model) */
	char *calib_path;
	char *calib_fp;
	char *settings;		/* JSON: the run's options */
	char *status;		/* "open", "finished", "failed" (never got to its first layer) */
	char *environment;	/* JSON: the numeric environment (core/numenv.h), NULL before schema 2 */
} sdb_session;

/* Insert a session; *id gets its id. */
int sdb_session_new(sdb *db, const sdb_session *s, int64_t *id, masq_err *err);
/* Read session id (id <= 0: the most recent one that did not fail before
 * its first layer); MASQ_ERR_USAGE when absent.  Every column is checked:
 * a NULL where a value is required, a status or a JSON column that is not
 * what masq writes is MASQ_ERR_FORMAT naming the session and the column. */
int sdb_session_get(sdb *db, int64_t id, sdb_session *out, masq_err *err);
void sdb_session_free(sdb_session *s);
/* Set a session's status (sessions are not events: their status may change). */
int sdb_session_set_status(sdb *db, int64_t id, const char *status, masq_err *err);
/* Replace its numeric environment (JSON text): a resume in another one
 * records that there (core/numenv.h). */
int sdb_session_set_environment(sdb *db, int64_t id, const char *environment, masq_err *err);
/* Call fn for every session, oldest first; fn returns non-zero to stop. */
int sdb_session_each(sdb *db, int (*fn)(void *ctx, const sdb_session *s), void *ctx, masq_err *err);

typedef struct sdb_event {
	int64_t seq;		/* position in the session, 1, 2, ... */
	int64_t session;
	const char *kind;	/* "command", "result", "error", "note" */
	const char *name;	/* the command's name */
	const char *payload;	/* JSON text */
	const char *created;
} sdb_event;

/* Append an event (durable when this returns: its own transaction, unless
 * inside sdb_begin/sdb_commit); *seq gets its position if not NULL. */
int sdb_event_append(sdb *db, int64_t session, const char *kind, const char *name,
    const char *payload, int64_t *seq, masq_err *err);
/* Call fn for each event of a session in order; fn returns non-zero to stop
 * (that value is returned).  Pointers are valid during the call only. */
int sdb_event_each(sdb *db, int64_t session, int (*fn)(void *ctx, const sdb_event *e), void *ctx,
    masq_err *err);

/* Group several appends in one transaction. */
int sdb_begin(sdb *db, masq_err *err);
int sdb_commit(sdb *db, masq_err *err);

/* Store the file at src as a blob: hash it, copy it to DB.blobs/<sha256>
 * (temporary name, fsync, rename; nothing to do if already there).  sha
 * gets the 64 hex digits. */
int sdb_blob_put_file(sdb *db, const char *src, char sha[65], masq_err *err);
/* Path of blob sha (a new string) after checking it exists and its content
 * still hashes to sha; MASQ_ERR_FORMAT when it was altered, MASQ_ERR_IO when
 * missing. */
char *sdb_blob_path(sdb *db, const char *sha, masq_err *err);

/* What a garbage collection of the blobs found. */
typedef struct sdb_gc_report {
	int kept, removed;
	uint64_t kept_bytes, removed_bytes;
} sdb_gc_report;
/* Garbage collection of the blobs (dry: only count): the checkpoints a
 * later next-layer of their session superseded (resume needs a session's
 * latest only; replay recomputes), and every blob no event names that is
 * older than SDB_GC_MIN_AGE seconds (younger ones may belong to a command
 * of another process still being recorded).  A blob any event still needs
 * stays, whichever session it came from, and so does one stored again
 * within the last SDB_GC_HOLD seconds (its time is set that far ahead):
 * another process may be about to name it. */
#define SDB_GC_MIN_AGE 3600
#define SDB_GC_HOLD 600
int sdb_blob_gc(sdb *db, int dry, sdb_gc_report *rep, masq_err *err);
/* After a next-layer result of session is recorded: remove the checkpoint
 * it superseded (the session's previous one) unless another event names it
 * or it is held (SDB_GC_HOLD).  Costs one query over the events. */
int sdb_checkpoint_release(sdb *db, int64_t session, masq_err *err);

/* Print SQL text that recreates the session (its row and its events) in
 * another masq database: plain INSERTs in one transaction. */
int sdb_dump(sdb *db, int64_t session, FILE *out, masq_err *err);
/* Load a dump: the text is data, not a script.  Its statements run in a
 * private in-memory database where nothing but BEGIN, COMMIT and INSERT
 * into sessions and events is allowed; it must hold exactly one session
 * row and that session's events, numbered 1, 2, ...  The session is then
 * appended to db under a fresh id (*new_id) through the same append-only
 * path as a live session, in one transaction.  Anything else is refused
 * with a message naming the first offending statement, and db is left
 * unchanged. */
int sdb_load(sdb *db, const char *sql, int64_t *new_id, masq_err *err);
/* Execute SQL text against db (tests only: masq never runs SQL it read). */
int sdb_exec_sql(sdb *db, const char *sql, masq_err *err);
/* PRAGMA integrity_check == "ok". */
int sdb_integrity_ok(sdb *db, masq_err *err);

#endif
