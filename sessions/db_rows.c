/*
 * db_rows.c: the rows of a session database: sessions and their
 * append-only events, every column checked as it is read back.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "core/sha256.h"
#include "sessions/db.h"
#include "sessions/db_internal.h"

/* ---- sessions ---------------------------------------------------------- */



/* A new copy of text column i, or NULL. */
static char *
sdb_col_dup(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return t ? xstrdup((const char *)t) : NULL;
}

/* Fill out (owned copies) from a row of SDB_SESSION_COLS, checking every
 * column: what is read back is input too.  -1 with err (out freed) when a
 * required column is NULL or of the wrong type, the status is not one masq
 * writes, or a JSON column does not hold an object. */
int
sdb_session_row(sqlite3_stmt *st, const char *path, sdb_session *out, masq_err *err)
{
	static const char *const names[] = {"id", "created", "masq_version", "seed", "threads",
		"model_path", "model_fp", "calib_path", "calib_fp", "settings", "status", "environment"};
	/* columns that may be NULL: model_path, calib_path, environment */
	static const int nullable[] = {0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1};
	static const int integer[] = {1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0};
	int64_t id = sqlite3_column_int64(st, 0);

	memset(out, 0, sizeof *out);
	for (int i = 0; i < 12; i++) {
		int t = sqlite3_column_type(st, i);
		if (t == SQLITE_NULL ? !nullable[i] : integer[i] ? t != SQLITE_INTEGER : t != SQLITE_TEXT)
			return masq_err_set(err, MASQ_ERR_FORMAT, "%s: session %" PRId64 ": column %s is %s", path, id,
			    names[i], t == SQLITE_NULL ? "NULL" : integer[i] ? "not an integer" : "not text");
	}
	out->id = id;
	out->created = sdb_col_dup(st, 1);
	out->masq_version = sdb_col_dup(st, 2);
	out->seed = sqlite3_column_int64(st, 3);
	int64_t th = sqlite3_column_int64(st, 4);
	out->model_path = sdb_col_dup(st, 5);
	out->model_fp = sdb_col_dup(st, 6);
	out->calib_path = sdb_col_dup(st, 7);
	out->calib_fp = sdb_col_dup(st, 8);
	out->settings = sdb_col_dup(st, 9);
	out->status = sdb_col_dup(st, 10);
	out->environment = sdb_col_dup(st, 11);
	const char *bad = NULL;
	if (th < 1 || th > 4096)
		bad = "threads (not in 1..4096)";
	else if (strcmp(out->status, "open") != 0 && strcmp(out->status, "finished") != 0 &&
	    strcmp(out->status, "failed") != 0)
		bad = "status (not open, finished or failed)";
	else if (!sdb_sha_valid(out->model_fp))
		bad = "model_fp (not a sha256)";
	else if (!sdb_sha_valid(out->calib_fp))
		bad = "calib_fp (not a sha256)";
	if (bad != NULL) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: session %" PRId64 ": column %s", path, id, bad);
		sdb_session_free(out);
		return -1;
	}
	out->threads = (int)th;
	return 0;
}

/* Insert a session; s->id is ignored (SQLite numbers it), a NULL created
 * means now, a NULL masq_version this build's, NULL settings "{}" and a
 * NULL status "open".  *id gets the new id. */
int
sdb_session_new(sdb *db, const sdb_session *s, int64_t *id, masq_err *err)
{
	sqlite3_stmt *st = sdb_prepare(db,
	    "INSERT INTO sessions (created, masq_version, seed, threads, model_path, model_fp,"
	    " calib_path, calib_fp, settings, status, environment)"
	    " VALUES (coalesce(?1, " SDB_NOW "), ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)", err);

	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, s->created, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, s->masq_version ? s->masq_version : PACKAGE_VERSION, -1,
	    SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, s->seed);
	sqlite3_bind_int(st, 4, s->threads);
	sqlite3_bind_text(st, 5, s->model_path, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, s->model_fp, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 7, s->calib_path, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 8, s->calib_fp, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 9, s->settings ? s->settings : "{}", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 10, s->status ? s->status : "open", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 11, s->environment, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE) {
		sdb_fail(db->h, db->path, "cannot record a new session", err);
		sqlite3_finalize(st);
		return -1;
	}
	sqlite3_finalize(st);
	if (id != NULL)
		*id = sqlite3_last_insert_rowid(db->h);
	return 0;
}

/* Read session id (id <= 0: the most recent) into out, which the caller
 * frees with sdb_session_free; MASQ_ERR_USAGE when there is none. */
int
sdb_session_get(sdb *db, int64_t id, sdb_session *out, masq_err *err)
{
	sqlite3_stmt *st = sdb_prepare(db, id > 0 ?
	    "SELECT " SDB_SESSION_COLS " FROM sessions WHERE id = ?1" :
	    "SELECT " SDB_SESSION_COLS " FROM sessions WHERE status IS NOT 'failed'"
	    " ORDER BY id DESC LIMIT 1", err);
	int rc;

	memset(out, 0, sizeof *out);
	if (st == NULL)
		return -1;
	if (id > 0)
		sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		rc = sdb_session_row(st, db->path, out, err);
		sqlite3_finalize(st);
		return rc;
	}
	if (rc == SQLITE_DONE) {
		if (id > 0)
			masq_err_set(err, MASQ_ERR_USAGE, "%s: no session %" PRId64, db->path, id);
		else
			masq_err_set(err, MASQ_ERR_USAGE, "%s: no sessions yet", db->path);
	} else {
		sdb_fail(db->h, db->path, "cannot read the session", err);
	}
	sqlite3_finalize(st);
	return -1;
}

/* Free the strings of s (not s itself) and zero it. */
void
sdb_session_free(sdb_session *s)
{
	if (s == NULL)
		return;
	free(s->created);
	free(s->masq_version);
	free(s->model_path);
	free(s->model_fp);
	free(s->calib_path);
	free(s->calib_fp);
	free(s->settings);
	free(s->status);
	free(s->environment);
	memset(s, 0, sizeof *s);
}

/* Set session id's status; MASQ_ERR_USAGE when there is no such session. */
/* Set one of a session's mutable columns. */
static int
session_set(sdb *db, int64_t id, const char *sql, const char *value, const char *what, masq_err *err)
{
	sqlite3_stmt *st = sdb_prepare(db, sql, err);

	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, value, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, id);
	if (sqlite3_step(st) != SQLITE_DONE) {
		sdb_fail(db->h, db->path, what, err);
		sqlite3_finalize(st);
		return -1;
	}
	sqlite3_finalize(st);
	if (sqlite3_changes(db->h) == 0)
		return masq_err_set(err, MASQ_ERR_USAGE, "%s: no session %" PRId64, db->path, id);
	return 0;
}

int
sdb_session_set_status(sdb *db, int64_t id, const char *status, masq_err *err)
{
	return session_set(db, id, "UPDATE sessions SET status = ?1 WHERE id = ?2", status,
	    "cannot set the session's status", err);
}

int
sdb_session_set_environment(sdb *db, int64_t id, const char *environment, masq_err *err)
{
	return session_set(db, id, "UPDATE sessions SET environment = ?1 WHERE id = ?2", environment,
	    "cannot record the session's numeric environment", err);
}

/* Call fn for every session, oldest first; returns 0 after the last, fn's
 * non-zero value when it stops early, -1 with err on a database error. */
int
sdb_session_each(sdb *db, int (*fn)(void *ctx, const sdb_session *s), void *ctx, masq_err *err)
{
	sqlite3_stmt *st = sdb_prepare(db, "SELECT " SDB_SESSION_COLS " FROM sessions ORDER BY id",
	    err);
	int rc, r = 0;

	if (st == NULL)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		sdb_session s;
		if (sdb_session_row(st, db->path, &s, err) < 0) {
			sqlite3_finalize(st);
			return -1;
		}
		r = fn(ctx, &s);
		sdb_session_free(&s);
		if (r != 0)
			break;
	}
	if (r == 0 && rc != SQLITE_DONE) {
		sdb_fail(db->h, db->path, "cannot list the sessions", err);
		r = -1;
	}
	sqlite3_finalize(st);
	return r;
}

/* ---- events ------------------------------------------------------------ */

/* Append an event with seq = 1 + the session's last and the given created
 * time (NULL: now), in its own BEGIN IMMEDIATE transaction unless inside
 * sdb_begin; a NULL payload is "{}". */
int
sdb_event_insert(sdb *db, int64_t session, const char *kind, const char *name,
    const char *payload, const char *created, int64_t *seq, masq_err *err)
{
	sqlite3_stmt *st;
	int own = !db->in_tx, rc;
	int64_t got = 0;

	if (kind == NULL || name == NULL)
		return masq_err_set(err, MASQ_ERR_INTERNAL, "sdb_event_append: kind and name are required");
	if (own && sdb_exec(db, "BEGIN IMMEDIATE", "cannot start a transaction", err) < 0)
		return -1;
	st = sdb_prepare(db,
	    "INSERT INTO events (session, seq, kind, name, payload, created)"
	    " SELECT ?1, coalesce(max(seq), 0) + 1, ?2, ?3, ?4, coalesce(?5, " SDB_NOW ")"
	    " FROM events WHERE session = ?1 RETURNING seq", err);
	if (st == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, session);
	sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, payload ? payload : "{}", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, created, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		got = sqlite3_column_int64(st, 0);
	if (rc != SQLITE_DONE) {
		char what[256];
		snprintf(what, sizeof what, "session %" PRId64 ": cannot append the %s event '%s'",
		    session, kind, name);
		sdb_fail(db->h, db->path, what, err);
		sqlite3_finalize(st);
		goto fail;
	}
	sqlite3_finalize(st);
	if (own && sdb_exec(db, "COMMIT", "cannot commit an event", err) < 0)
		goto fail;
	if (seq != NULL)
		*seq = got;
	return 0;
fail:
	if (own)
		sdb_rollback(db);
	return -1;
}

/* Append an event now (see sdb_event_insert).  Durable against a killed
 * process when this returns (see the top). */
int
sdb_event_append(sdb *db, int64_t session, const char *kind, const char *name,
    const char *payload, int64_t *seq, masq_err *err)
{
	return sdb_event_insert(db, session, kind, name, payload, NULL, seq, err);
}

/* Call fn for each event of session in seq order; returns 0 after the
 * last, fn's non-zero value when it stops early, -1 with err on a
 * database error. */
int
sdb_event_each(sdb *db, int64_t session, int (*fn)(void *ctx, const sdb_event *e), void *ctx,
    masq_err *err)
{
	sqlite3_stmt *st = sdb_prepare(db,
	    "SELECT seq, session, kind, name, payload, created FROM events"
	    " WHERE session = ?1 ORDER BY seq", err);
	int rc, r = 0;

	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, session);
	int64_t want = 1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		/* what is read back is input too: every column as masq writes it */
		static const char *const col[] = {"seq", "session", "kind", "name", "payload", "created"};
		int bad = -1, bt = 0;
		for (int i = 0; i < 6 && bad < 0; i++) {
			int t = sqlite3_column_type(st, i);
			if (t != (i < 2 ? SQLITE_INTEGER : SQLITE_TEXT)) {
				bad = i;
				bt = t;
			}
		}
		if (bad >= 0) {
			r = masq_err_set(err, MASQ_ERR_FORMAT, "%s: session %" PRId64 ", event %" PRId64
			    ": column %s is %s", db->path, session, want, col[bad],
			    bt == SQLITE_NULL ? "NULL" : bad < 2 ? "not an integer" : "not text");
			break;
		}
		const char *k = (const char *)sqlite3_column_text(st, 2);
		if (strcmp(k, "command") != 0 && strcmp(k, "result") != 0 && strcmp(k, "error") != 0 &&
		    strcmp(k, "note") != 0) {
			r = masq_err_set(err, MASQ_ERR_FORMAT, "%s: session %" PRId64 ", event %" PRId64
			    ": kind '%.40s' is not command, result, error or note", db->path, session, want, k);
			break;
		}
		if (sqlite3_column_int64(st, 0) != want) {
			r = masq_err_set(err, MASQ_ERR_FORMAT, "%s: session %" PRId64 ": events are not numbered"
			    " 1, 2, ...: event %" PRId64 " follows event %" PRId64, db->path, session,
			    (int64_t)sqlite3_column_int64(st, 0), want - 1);
			break;
		}
		want++;
		sdb_event e = {
			.seq = sqlite3_column_int64(st, 0),
			.session = sqlite3_column_int64(st, 1),
			.kind = (const char *)sqlite3_column_text(st, 2),
			.name = (const char *)sqlite3_column_text(st, 3),
			.payload = (const char *)sqlite3_column_text(st, 4),
			.created = (const char *)sqlite3_column_text(st, 5),
		};
		r = fn(ctx, &e);
		if (r != 0)
			break;
	}
	if (r == 0 && rc != SQLITE_DONE && rc != SQLITE_ROW) {
		sdb_fail(db->h, db->path, "cannot read the events", err);
		r = -1;
	}
	sqlite3_finalize(st);
	return r;
}

/* Start a write transaction (BEGIN IMMEDIATE) that groups appends. */
int
sdb_begin(sdb *db, masq_err *err)
{
	if (db->in_tx)
		return masq_err_set(err, MASQ_ERR_INTERNAL, "%s: sdb_begin inside a transaction",
		    db->path);
	if (sdb_exec(db, "BEGIN IMMEDIATE", "cannot start a transaction", err) < 0)
		return -1;
	db->in_tx = 1;
	return 0;
}

/* Commit sdb_begin's transaction; when the commit fails it is rolled back. */
int
sdb_commit(sdb *db, masq_err *err)
{
	if (!db->in_tx)
		return masq_err_set(err, MASQ_ERR_INTERNAL, "%s: sdb_commit without sdb_begin",
		    db->path);
	db->in_tx = 0;
	if (sdb_exec(db, "COMMIT", "cannot commit", err) < 0) {
		sdb_rollback(db);
		return -1;
	}
	return 0;
}
