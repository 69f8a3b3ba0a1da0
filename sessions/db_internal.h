/*
 * db_internal.h: what the files of the session database (db*.c) share:
 * the handle and the helpers around SQLite.  Only sessions/db*.c include it.
 */
#ifndef MASQ_SDB_INTERNAL_H
#define MASQ_SDB_INTERNAL_H

#include <sqlite3.h>

#include "sessions/db.h"

struct sdb {
	sqlite3 *h;
	char *path;
	char *blobdir;		/* path + ".blobs" */
	int in_tx;		/* inside sdb_begin .. sdb_commit */
};

#define SDB_NOW "strftime('%Y-%m-%dT%H:%M:%fZ','now')"

/* Fill err from the connection's last error ("<path>: <what>: <message>",
 * damage and foreign files in their own words); returns -1. */
int sdb_fail(sqlite3 *h, const char *path, const char *what, masq_err *err);
/* Prepare sql on db; NULL with err filled on failure. */
sqlite3_stmt *sdb_prepare(sdb *db, const char *sql, masq_err *err);
/* Run SQL without results; what names the step in the error message. */
int sdb_exec(sdb *db, const char *sql, const char *what, masq_err *err);
/* Roll back the transaction in progress, if any. */
void sdb_rollback(sdb *db);
/* *out gets the first column of the first row of sql (0 when no row). */
int sdb_query_int(sdb *db, const char *sql, int64_t *out, masq_err *err);
/* Run a check pragma: 0 when it answers "ok". */
int sdb_check(sdb *db, const char *pragma, const char *pre, const char *post, masq_err *err);
/* 1 when s is 64 lowercase hex digits. */
int sdb_sha_valid(const char *s);
/* A row of SDB_SESSION_COLS into out, every column checked (path names the
 * database in messages). */
#define SDB_SESSION_COLS \
	"id, created, masq_version, seed, threads, model_path, model_fp, calib_path, calib_fp, " \
	"settings, status, environment"
int sdb_session_row(sqlite3_stmt *st, const char *path, sdb_session *out, masq_err *err);
/* Append an event with the given created time (NULL: now). */
int sdb_event_insert(sdb *db, int64_t session, const char *kind, const char *name, const char *payload,
    const char *created, int64_t *seq, masq_err *err);

#endif
