/*
 * test_db.c: the session database (sessions/db.c, masq-session(5)).
 *
 *   - create, open, reopen; the file's application_id, user_version and
 *     journal mode as a second, plain SQLite connection sees them;
 *   - sessions and events round trip; seq is 1..n per session; STRICT
 *     types, CHECKs and foreign keys refuse bad rows; the triggers refuse
 *     UPDATE and DELETE on events; the views;
 *   - refusals that change nothing (same bytes, no file beside it): a
 *     newer schema, another application's database, a text file, truncated
 *     and damaged databases, a missing file without SDB_CREATE;
 *   - a dump loaded into a database that already has a session;
 *   - blobs: put, path, altered, missing;
 *   - kill -9 of a writer at random moments, ten times: integrity_check is
 *     ok and every event the writer saw committed is there, seq gapless.
 *
 * Files live under $builddir/work/test_db.  sqlite3.h is used here only to
 * look at the files from outside the module.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "core/sha256.h"
#include "sessions/db.h"
#include "tests/tap.h"

static char workdir[1024];

/* workdir/name in a static buffer (one of four, so a few can be live). */
static const char *
wpath(const char *name)
{
	static char buf[4][1200];
	static int k;
	char *p = buf[k++ & 3];
	snprintf(p, sizeof buf[0], "%s/%s", workdir, name);
	return p;
}

static int
exists(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0;
}

static int
exists_sfx(const char *path, const char *sfx)
{
	char p[1300];
	snprintf(p, sizeof p, "%s%s", path, sfx);
	return exists(p);
}

/* Remove a database, its WAL files and its blob directory. */
static void
db_remove(const char *path)
{
	char p[1300];
	DIR *d;
	struct dirent *de;

	unlink(path);
	snprintf(p, sizeof p, "%s-wal", path);
	unlink(p);
	snprintf(p, sizeof p, "%s-shm", path);
	unlink(p);
	snprintf(p, sizeof p, "%s.blobs", path);
	d = opendir(p);
	if (d != NULL) {
		while ((de = readdir(d)) != NULL) {
			char f[1600];
			if (de->d_name[0] == '.' && (de->d_name[1] == '\0' ||
			    (de->d_name[1] == '.' && de->d_name[2] == '\0')))
				continue;
			snprintf(f, sizeof f, "%s/%s", p, de->d_name);
			unlink(f);
		}
		closedir(d);
		rmdir(p);
	}
}

static char *
slurp(const char *path, size_t *n)
{
	return masq_read_file(path, (size_t)1 << 30, n, NULL);
}

static int
spit(const char *path, const void *data, size_t n)
{
	FILE *fp = fopen(path, "wb");
	if (fp == NULL)
		return -1;
	if (fwrite(data, 1, n, fp) != n) {
		fclose(fp);
		return -1;
	}
	return fclose(fp);
}

/* The first column of the first row of sql, run by a plain SQLite
 * connection (INT64_MIN on any error). */
static int64_t
raw_int(const char *path, const char *sql)
{
	sqlite3 *h = NULL;
	sqlite3_stmt *st = NULL;
	int64_t v = INT64_MIN;

	if (sqlite3_open_v2(path, &h, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(h);
	return v;
}

/* Same, text (a new string, or NULL). */
static char *
raw_text(const char *path, const char *sql)
{
	sqlite3 *h = NULL;
	sqlite3_stmt *st = NULL;
	char *v = NULL;

	if (sqlite3_open_v2(path, &h, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW &&
	    sqlite3_column_text(st, 0) != NULL)
		v = xstrdup((const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	sqlite3_close(h);
	return v;
}

/* Run sql on a new plain SQLite file (another application's database). */
static int
raw_make(const char *path, const char *sql)
{
	sqlite3 *h = NULL;
	int rc;

	unlink(path);
	rc = sqlite3_open(path, &h);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(h, sql, NULL, NULL, NULL);
	sqlite3_close(h);
	return rc == SQLITE_OK ? 0 : -1;
}

static sdb_session
session_example(void)
{
	sdb_session s = {
		.masq_version = "0.1.0-test",
		.seed = -1234567890123LL,
		.threads = 2,
		.model_path = "/models/it's \"quoted\"",
		.model_fp = "aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11",
		.calib_path = NULL,
		.calib_fp = "bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22",
		.settings = "{\"method\":\"masquant\",\"alpha\":0.5,\"note\":\"line1\\nline2 \\u00e9\"}",
	};
	return s;
}

/* Events collected by sdb_event_each. */
typedef struct evlist {
	int n;
	int64_t seq[4096];		/* (n) */
	char *kind[4096];		/* (n) */
	char *name[4096];		/* (n) */
	char *payload[4096];		/* (n) */
	char *created[4096];		/* (n) */
	int stop_at;			/* return 7 after this many events (0: never) */
} evlist;

static int
ev_collect(void *ctx, const sdb_event *e)
{
	evlist *l = ctx;
	if (l->n >= 4096)
		return 1;
	l->seq[l->n] = e->seq;
	l->kind[l->n] = xstrdup(e->kind);
	l->name[l->n] = xstrdup(e->name);
	l->payload[l->n] = xstrdup(e->payload);
	l->created[l->n] = xstrdup(e->created);
	l->n++;
	return l->stop_at > 0 && l->n == l->stop_at ? 7 : 0;
}

static void
ev_free(evlist *l)
{
	for (int i = 0; i < l->n; i++) {
		free(l->kind[i]);
		free(l->name[i]);
		free(l->payload[i]);
		free(l->created[i]);
	}
	l->n = 0;
}

/* 1 when the events are seq 1..n in order. */
static int
ev_gapless(const evlist *l)
{
	for (int i = 0; i < l->n; i++)
		if (l->seq[i] != i + 1)
			return 0;
	return 1;
}

static void
test_create(void)
{
	const char *p = wpath("create.db");
	masq_err err = {0};
	sdb *db = NULL;
	char *s;

	db_remove(p);
	tap_ok(sdb_open(&db, p, 0, &err) == -1 && err.status == MASQ_ERR_IO && db == NULL,
	    "open: a missing file without SDB_CREATE is an I/O error");
	tap_contains(err.msg, "no such session database", "open: ... saying so");
	tap_contains(err.msg, p, "open: ... naming the file");
	tap_ok(!exists(p) && !exists_sfx(p, "-wal") && !exists_sfx(p, "-shm"),
	    "open: ... and creates nothing");

	tap_ok(sdb_open(&db, p, SDB_CREATE, &err) == 0 && db != NULL, "open: SDB_CREATE creates it");
	if (db == NULL) {
		tap_diag("%s", err.msg);
		return;
	}
	tap_streq(sdb_path(db), p, "sdb_path");
	tap_ok(strcmp(sdb_blob_dir(db) + strlen(p), ".blobs") == 0 && strncmp(sdb_blob_dir(db), p,
	    strlen(p)) == 0, "sdb_blob_dir is DB.blobs");
	tap_ok(!exists(sdb_blob_dir(db)), "the blob directory is created on first use only");
	tap_ok(sdb_integrity_ok(db, &err) == 0, "integrity_check of a new database");
	sdb_close(db);

	tap_ok(raw_int(p, "PRAGMA application_id") == SDB_APPLICATION_ID, "application_id is 'masq'");
	tap_ok(raw_int(p, "PRAGMA user_version") == SDB_USER_VERSION, "user_version is %d",
	    SDB_USER_VERSION);
	s = raw_text(p, "PRAGMA journal_mode");
	tap_streq(s, "wal", "journal_mode is WAL");
	free(s);
	tap_ok(raw_int(p, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND"
	    " sql LIKE '%) STRICT'") == 2, "both tables are STRICT");
	tap_ok(raw_int(p, "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'") == 3,
	    "three triggers");
	tap_ok(raw_int(p, "SELECT count(*) FROM sqlite_master WHERE type = 'view'") == 2, "two views");
	tap_ok(!exists_sfx(p, "-wal") && !exists_sfx(p, "-shm"), "a clean close leaves no -wal, -shm");

	tap_ok(sdb_open(&db, p, 0, &err) == 0, "reopen without SDB_CREATE");
	sdb_close(db);
	tap_ok(sdb_open(&db, p, SDB_CREATE, &err) == 0, "reopen with SDB_CREATE");
	sdb_close(db);
	tap_ok(raw_int(p, "PRAGMA user_version") == SDB_USER_VERSION, "reopening keeps the version");

	/* an empty file, and an SQLite database with nothing in it, are initialised */
	db_remove(p);
	tap_ok(spit(p, "", 0) == 0 && sdb_open(&db, p, 0, &err) == 0, "an empty file is initialised");
	sdb_close(db);
	tap_ok(raw_int(p, "PRAGMA application_id") == SDB_APPLICATION_ID, "... and stamped");
	tap_ok(raw_make(p, "CREATE TABLE t (x); DROP TABLE t") == 0 && sdb_open(&db, p, 0, &err) == 0,
	    "an SQLite database with no tables is initialised");
	sdb_close(db);
	tap_ok(raw_int(p, "PRAGMA user_version") == SDB_USER_VERSION, "... and stamped");

	db_remove(p);
	tap_ok(sdb_open(&db, wpath("no-such-dir/x.db"), SDB_CREATE, &err) == -1 &&
	    err.status == MASQ_ERR_IO && !exists(wpath("no-such-dir")),
	    "open: a file in a missing directory is an I/O error");
	tap_contains(err.msg, "no-such-dir/x.db", "... naming the file");
	tap_ok(sdb_open(&db, workdir, SDB_CREATE, &err) == -1 && err.status == MASQ_ERR_IO,
	    "open: a directory is refused");
	tap_contains(err.msg, "is a directory", "... saying so");
}

static int
sess_count(void *ctx, const sdb_session *s)
{
	int64_t *last = ctx;
	if (s->id <= last[0])
		last[1] = -1;		/* out of order */
	last[0] = s->id;
	last[1] += last[1] >= 0;
	return 0;
}

static int
sess_stop(void *ctx, const sdb_session *s)
{
	(void)s;
	++*(int *)ctx;
	return 5;
}

static void
test_sessions(void)
{
	const char *p = wpath("sessions.db");
	masq_err err = {0};
	sdb_session s = session_example(), g;
	int64_t id1 = 0, id2 = 0, cnt[2] = {0, 0};
	sdb *db;
	int calls = 0;

	db_remove(p);
	if (sdb_open(&db, p, SDB_CREATE, &err) < 0) {
		tap_ok(0, "open: %s", err.msg);
		return;
	}
	tap_ok(sdb_session_get(db, 0, &g, &err) == -1 && err.status == MASQ_ERR_USAGE,
	    "session_get: none yet is a usage error");
	tap_contains(err.msg, "no sessions", "... saying so");
	tap_ok(sdb_session_new(db, &s, &id1, &err) == 0 && id1 == 1, "session_new: id 1");
	s.created = "2026-01-02T03:04:05.678Z";
	s.status = "finished";
	s.model_path = NULL;
	tap_ok(sdb_session_new(db, &s, &id2, &err) == 0 && id2 == 2, "session_new: id 2");

	tap_ok(sdb_session_get(db, id1, &g, &err) == 0, "session_get 1");
	tap_ok(g.id == 1 && g.seed == -1234567890123LL && g.threads == 2, "... id, seed, threads");
	tap_streq(g.masq_version, "0.1.0-test", "... masq_version");
	tap_streq(g.model_path, "/models/it's \"quoted\"", "... model_path");
	tap_ok(g.calib_path == NULL, "... calib_path NULL");
	tap_streq(g.model_fp, session_example().model_fp, "... model_fp");
	tap_streq(g.calib_fp, session_example().calib_fp, "... calib_fp");
	tap_streq(g.settings, session_example().settings, "... settings");
	tap_streq(g.status, "open", "... status defaults to open");
	tap_ok(g.created != NULL && strlen(g.created) == 24 && g.created[10] == 'T' &&
	    g.created[23] == 'Z', "... created is UTC ISO 8601 (%s)", g.created ? g.created : "");
	sdb_session_free(&g);

	tap_ok(sdb_session_get(db, 0, &g, &err) == 0 && g.id == 2, "session_get 0: the most recent");
	tap_streq(g.created, "2026-01-02T03:04:05.678Z", "... a given created is kept");
	tap_streq(g.status, "finished", "... a given status is kept");
	tap_ok(g.model_path == NULL, "... NULL model_path");
	sdb_session_free(&g);

	tap_ok(sdb_session_set_status(db, id1, "finished", &err) == 0, "set_status");
	tap_ok(sdb_session_get(db, id1, &g, &err) == 0 && strcmp(g.status, "finished") == 0,
	    "... is read back");
	sdb_session_free(&g);
	tap_ok(sdb_session_set_status(db, 99, "finished", &err) == -1 && err.status == MASQ_ERR_USAGE,
	    "set_status of a missing session: usage error");
	tap_ok(sdb_session_get(db, 99, &g, &err) == -1 && err.status == MASQ_ERR_USAGE,
	    "session_get of a missing session: usage error");
	tap_contains(err.msg, "no session 99", "... naming it");

	tap_ok(sdb_session_each(db, sess_count, cnt, &err) == 0 && cnt[1] == 2 && cnt[0] == 2,
	    "session_each: both, oldest first");
	tap_ok(sdb_session_each(db, sess_stop, &calls, &err) == 5 && calls == 1,
	    "session_each: stops at fn's non-zero value and returns it");

	/* the schema refuses what does not fit */
	s = session_example();
	s.settings = "{not json";
	tap_ok(sdb_session_new(db, &s, &id1, &err) == -1 && err.status == MASQ_ERR_FORMAT,
	    "session_new: settings must be JSON");
	tap_diag("%s", err.msg);
	s = session_example();
	s.model_fp = NULL;
	tap_ok(sdb_session_new(db, &s, &id1, &err) == -1, "session_new: model_fp is required");
	tap_contains(err.msg, "model_fp", "... naming it");
	tap_ok(sdb_exec_sql(db, "INSERT INTO sessions (created, masq_version, seed, threads, model_fp,"
	    " calib_fp, settings) VALUES ('x', 'v', 'not a number', 1, 'a', 'b', '{}')", &err) == -1,
	    "STRICT: a TEXT in seed is refused");
	tap_contains(err.msg, "cannot store TEXT value in INTEGER column sessions.seed", "... by SQLite");
	tap_ok(sdb_exec_sql(db, "INSERT INTO sessions (created, masq_version, seed, threads, model_fp,"
	    " calib_fp, settings) VALUES ('x', 'v', 1, 2.5, 'a', 'b', '{}')", &err) == -1,
	    "STRICT: a REAL in threads is refused");
	tap_ok(sdb_exec_sql(db, "INSERT INTO sessions (created, masq_version, seed, threads, model_fp,"
	    " calib_fp, settings) VALUES ('x', 'v', '7', 1, 'a', 'b', '{}')", &err) == 0,
	    "STRICT: an integer-looking text is converted, as documented");
	tap_ok(raw_int(p, "SELECT typeof(seed) = 'integer' FROM sessions WHERE id = 3") == 1,
	    "... and stored as INTEGER");
	sdb_close(db);
}

static void
test_events(void)
{
	const char *p = wpath("events.db");
	masq_err err = {0};
	sdb_session s = session_example();
	static evlist l;
	int64_t a, b, seq = 0;
	sdb *db;
	int ok = 1;

	db_remove(p);
	if (sdb_open(&db, p, SDB_CREATE, &err) < 0 || sdb_session_new(db, &s, &a, &err) < 0 ||
	    sdb_session_new(db, &s, &b, &err) < 0) {
		tap_ok(0, "set-up: %s", err.msg);
		return;
	}
	for (int i = 1; i <= 20; i++) {
		char pl[64];
		snprintf(pl, sizeof pl, "{\"i\":%d}", i);
		ok &= sdb_event_append(db, a, i % 2 ? "command" : "result", "quantize-layer", pl, &seq,
		    &err) == 0 && seq == i;
		if (i % 5 == 0)		/* interleave the other session */
			ok &= sdb_event_append(db, b, "note", "note", NULL, &seq, &err) == 0 &&
			    seq == i / 5;
	}
	tap_ok(ok, "append: seq is 1, 2, ... per session");
	tap_ok(sdb_event_each(db, a, ev_collect, &l, &err) == 0 && l.n == 20 && ev_gapless(&l),
	    "event_each: 20 events, seq 1..20 in order");
	ok = 1;
	for (int i = 0; i < l.n; i++) {
		char pl[64];
		snprintf(pl, sizeof pl, "{\"i\":%d}", i + 1);
		ok &= strcmp(l.payload[i], pl) == 0 && strcmp(l.name[i], "quantize-layer") == 0 &&
		    strcmp(l.kind[i], i % 2 ? "result" : "command") == 0 && strlen(l.created[i]) == 24;
	}
	tap_ok(ok, "event_each: kind, name, payload, created as appended");
	ev_free(&l);
	tap_ok(sdb_event_each(db, b, ev_collect, &l, &err) == 0 && l.n == 4 && ev_gapless(&l) &&
	    strcmp(l.payload[0], "{}") == 0, "event_each: the other session's 4, NULL payload is {}");
	ev_free(&l);
	l.stop_at = 3;
	tap_ok(sdb_event_each(db, a, ev_collect, &l, &err) == 7 && l.n == 3,
	    "event_each: stops at fn's non-zero value and returns it");
	l.stop_at = 0;
	ev_free(&l);

	tap_ok(sdb_event_append(db, a, "bogus", "x", "{}", &seq, &err) == -1 &&
	    err.status == MASQ_ERR_FORMAT, "append: an unknown kind is refused");
	tap_contains(err.msg, "CHECK constraint failed", "... by the CHECK");
	tap_ok(sdb_event_append(db, a, "note", "x", "{\"a\":", &seq, &err) == -1,
	    "append: a payload that is not JSON is refused");
	tap_ok(sdb_event_append(db, 42, "note", "x", "{}", &seq, &err) == -1,
	    "append: a missing session is refused (foreign key)");
	tap_contains(err.msg, "FOREIGN KEY", "... by the foreign key");
	tap_ok(sdb_event_append(db, a, "error", "quantize-layer", "{\"msg\":\"boom\"}", &seq, &err) == 0
	    && seq == 21, "append after refusals: no gap (21)");

	/* a group of appends in one transaction */
	ok = sdb_begin(db, &err) == 0;
	for (int i = 0; i < 5; i++)
		ok &= sdb_event_append(db, a, "note", "note", "{}", &seq, &err) == 0 && seq == 22 + i;
	ok &= sdb_event_append(db, a, "nonsense", "note", "{}", &seq, &err) == -1;
	ok &= sdb_event_append(db, a, "note", "note", "{}", &seq, &err) == 0 && seq == 27;
	tap_ok(ok, "begin: appends inside number on; a refused one inside leaves no gap");
	tap_ok(sdb_begin(db, &err) == -1, "begin inside begin is refused");
	tap_ok(sdb_commit(db, &err) == 0, "commit");
	tap_ok(sdb_commit(db, &err) == -1, "commit without begin is refused");
	tap_ok(sdb_event_each(db, a, ev_collect, &l, &err) == 0 && l.n == 27 && ev_gapless(&l),
	    "27 events, gapless");
	ev_free(&l);

	/* append-only */
	tap_ok(sdb_exec_sql(db, "UPDATE events SET name = 'x' WHERE seq = 1", &err) == -1,
	    "UPDATE on events is refused");
	tap_contains(err.msg, "events are append-only", "... by the trigger");
	tap_ok(sdb_exec_sql(db, "DELETE FROM events WHERE seq = 1", &err) == -1,
	    "DELETE on events is refused");
	tap_contains(err.msg, "events are append-only", "... by the trigger");
	tap_ok(sdb_exec_sql(db, "INSERT OR REPLACE INTO events (session, seq, kind, name, payload,"
	    " created) VALUES (1, 1, 'note', 'x', '{}', 'x')", &err) == -1,
	    "INSERT OR REPLACE over an event is refused");
	tap_contains(err.msg, "events are append-only", "... by the trigger");
	tap_ok(sdb_exec_sql(db, "INSERT INTO events (session, seq, kind, name, payload, created)"
	    " VALUES (1, 29, 'note', 'x', '{}', 'x')", &err) == -1, "an INSERT leaving a gap is refused");
	tap_ok(sdb_exec_sql(db, "INSERT INTO events (session, seq, kind, name, payload, created)"
	    " VALUES (1, 28, 'note', 'x', '{}', 'x')", &err) == 0,
	    "an INSERT of the next seq by hand is allowed");
	tap_ok(sdb_exec_sql(db, "INSERT INTO events (session, seq, kind, name, payload, created)"
	    " VALUES (1, 28, 'note', 'x', '{}', 'x') ON CONFLICT DO UPDATE SET name = 'y'", &err) == -1,
	    "an UPSERT over an event is refused");
	tap_ok(sdb_exec_sql(db, "DELETE FROM sessions WHERE id = 1", &err) == -1,
	    "deleting a session with events is refused (foreign key)");
	tap_ok(sdb_event_each(db, a, ev_collect, &l, &err) == 0 && l.n == 28 && ev_gapless(&l) &&
	    strcmp(l.name[0], "quantize-layer") == 0, "... the events are unchanged");
	ev_free(&l);

	/* a failed script leaves no transaction open */
	tap_ok(sdb_exec_sql(db, "BEGIN; INSERT INTO sessions (created, masq_version, seed, threads,"
	    " model_fp, calib_fp, settings) VALUES ('x', 'v', 1, 1, 'a', 'b', '{}'); NONSENSE;",
	    &err) == -1, "exec_sql: a script with an error fails");
	tap_ok(raw_int(p, "SELECT count(*) FROM sessions") == 2, "... its INSERT was rolled back");
	tap_ok(sdb_begin(db, &err) == 0 && sdb_commit(db, &err) == 0, "... and no transaction is left");
	sdb_close(db);
}

static void
test_views(void)
{
	const char *p = wpath("views.db");
	masq_err err = {0};
	sdb_session s = session_example();
	int64_t a, b;
	sdb *db;
	int ok = 1;
	char *t;

	db_remove(p);
	if (sdb_open(&db, p, SDB_CREATE, &err) < 0 || sdb_session_new(db, &s, &a, &err) < 0 ||
	    sdb_session_new(db, &s, &b, &err) < 0) {
		tap_ok(0, "set-up: %s", err.msg);
		return;
	}
	ok &= sdb_event_append(db, a, "command", "quantize-layer", "{\"layer\":0}", NULL, &err) == 0;
	ok &= sdb_event_append(db, a, "result", "quantize-layer",
	    "{\"layer\":0,\"sqnr_db\":{\"text\":30.5,\"vision\":20.25,\"audio\":25,\"all\":28},"
	    "\"sha256\":\"ab\"}", NULL, &err) == 0;
	ok &= sdb_event_append(db, a, "result", "quantize-layer",
	    "{\"layer\":1,\"sqnr_db\":{\"text\":29,\"vision\":19,\"audio\":24,\"all\":27}}", NULL,
	    &err) == 0;
	ok &= sdb_event_append(db, a, "command", "set-alpha", "{\"layer\":0,\"alpha\":0.6}", NULL,
	    &err) == 0;
	ok &= sdb_event_append(db, a, "result", "quantize-layer",
	    "{\"layer\":0,\"sqnr_db\":{\"text\":31.5,\"vision\":22,\"audio\":26,\"all\":29}}", NULL,
	    &err) == 0;
	ok &= sdb_event_append(db, a, "result", "calibrate-layer", "{\"layer\":2}", NULL, &err) == 0;
	ok &= sdb_event_append(db, b, "result", "quantize-layer",
	    "{\"layer\":0,\"sqnr_db\":{\"text\":1,\"vision\":2,\"audio\":3,\"all\":4}}", NULL,
	    &err) == 0;
	tap_ok(ok, "view set-up: events appended");
	sdb_close(db);

	tap_ok(raw_int(p, "SELECT count(*) FROM layer_sqnr WHERE session = 1") == 2,
	    "layer_sqnr: one row per layer");
	tap_ok(raw_int(p, "SELECT seq FROM layer_sqnr WHERE session = 1 AND layer = 0") == 5,
	    "layer_sqnr: the latest result of layer 0 (seq 5)");
	t = raw_text(p, "SELECT printf('%g %g %g %g', text, vision, audio, all_tokens)"
	    " FROM layer_sqnr WHERE session = 1 AND layer = 0");
	tap_streq(t, "31.5 22 26 29", "layer_sqnr: its text, vision, audio, all_tokens");
	free(t);
	t = raw_text(p, "SELECT group_concat(layer || ':' || text, ' ') FROM"
	    " (SELECT * FROM layer_sqnr WHERE session = 1 ORDER BY layer)");
	tap_streq(t, "0:31.5 1:29.0", "layer_sqnr: layers 0 and 1");
	free(t);
	tap_ok(raw_int(p, "SELECT typeof(layer) = 'integer' AND typeof(text) = 'real' FROM layer_sqnr"
	    " WHERE session = 1 AND layer = 1") == 1, "layer_sqnr: layer INTEGER, text REAL (JSON 29)");
	tap_ok(raw_int(p, "SELECT audio FROM layer_sqnr WHERE session = 2") == 3,
	    "layer_sqnr: sessions are apart");
	t = raw_text(p, "SELECT printf('%d %d %d %s', id, events, layers_done, status)"
	    " FROM session_summary WHERE id = 1");
	tap_streq(t, "1 6 2 open", "session_summary: events and layers done");
	free(t);
	tap_ok(raw_int(p, "SELECT count(*) FROM session_summary") == 2, "session_summary: both");
	tap_ok(raw_int(p, "SELECT last_event = (SELECT created FROM events WHERE session = 1 AND"
	    " seq = 6) FROM session_summary WHERE id = 1") == 1, "session_summary: last_event");
}

/* Check that opening path is refused with status st and a message holding
 * want, and that the file and what is beside it stay as they were. */
static void
refused(const char *path, masq_status st, const char *want, const char *what)
{
	masq_err err = {0};
	size_t n0 = 0, n1 = 0;
	char *before = slurp(path, &n0), *after;
	int wal0 = exists_sfx(path, "-wal"), shm0 = exists_sfx(path, "-shm");
	sdb *db = NULL;
	int r = sdb_open(&db, path, SDB_CREATE, &err);

	tap_ok(r == -1 && db == NULL && err.status == st, "%s: refused (%s)", what,
	    masq_status_name(st));
	tap_contains(err.msg, want, what);
	tap_contains(err.msg, path, "... the message names the file");
	after = slurp(path, &n1);
	tap_ok(before != NULL && after != NULL && n0 == n1 && memcmp(before, after, n0) == 0,
	    "... the file is unchanged");
	tap_ok(exists_sfx(path, "-wal") == wal0 && exists_sfx(path, "-shm") == shm0 &&
	    !exists_sfx(path, ".blobs"), "... nothing created beside it");
	if (r == 0)
		sdb_close(db);
	free(before);
	free(after);
}

/* A masq database of several pages: a session and 200 events. */
static int
make_big(const char *path)
{
	masq_err err = {0};
	sdb_session s = session_example();
	int64_t id;
	sdb *db;
	char pl[300];

	db_remove(path);
	if (sdb_open(&db, path, SDB_CREATE, &err) < 0 || sdb_session_new(db, &s, &id, &err) < 0)
		return -1;
	memset(pl, 'x', sizeof pl);
	memcpy(pl, "{\"pad\":\"", 8);
	memcpy(pl + sizeof pl - 3, "\"}", 3);
	sdb_begin(db, &err);
	for (int i = 0; i < 200; i++)
		if (sdb_event_append(db, id, "note", "note", pl, NULL, &err) < 0)
			return -1;
	if (sdb_commit(db, &err) < 0)
		return -1;
	sdb_close(db);
	return 0;
}

static void
test_refusals(void)
{
	const char *p = wpath("refuse.db"), *q = wpath("cut.db");
	masq_err err = {0};
	sdb *db;
	char *buf;
	size_t n;

	/* a newer schema */
	db_remove(p);
	if (sdb_open(&db, p, SDB_CREATE, &err) < 0) {
		tap_ok(0, "open: %s", err.msg);
		return;
	}
	tap_ok(sdb_exec_sql(db, "PRAGMA user_version = 3", &err) == 0, "set user_version 3");
	sdb_close(db);
	refused(p, MASQ_ERR_FORMAT, "written by a newer masq (schema version 3; this masq knows up to 2)",
	    "a newer schema");

	/* another application's databases */
	tap_ok(raw_make(p, "CREATE TABLE t (x); PRAGMA application_id = 305419896") == 0,
	    "make a foreign SQLite database");
	refused(p, MASQ_ERR_FORMAT, "not a masq session database (application_id 0x12345678)",
	    "another application's database");
	tap_ok(raw_make(p, "PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1)")
	    == 0, "make a foreign SQLite database in WAL mode, no application_id");
	refused(p, MASQ_ERR_FORMAT, "not a masq session database (application_id 0x00000000)",
	    "a database without application_id");

	/* not SQLite at all */
	db_remove(p);
	tap_ok(spit(p, "hello, world\n", 13) == 0, "write a text file");
	refused(p, MASQ_ERR_FORMAT, "not an SQLite database", "a text file");
	buf = xcalloc(1, 8192);
	memcpy(buf, "SQLite format 2", 15);
	tap_ok(spit(p, buf, 8192) == 0, "write 8 KiB that almost look like SQLite");
	refused(p, MASQ_ERR_FORMAT, "not an SQLite database", "a near-SQLite header");
	free(buf);

	/* truncated and damaged masq databases */
	tap_ok(make_big(p) == 0, "make a masq database of several pages");
	buf = slurp(p, &n);
	tap_ok(buf != NULL && n >= 8 * 4096, "... %zu bytes", n);
	if (buf == NULL || n < 8 * 4096) {
		free(buf);
		return;
	}
	db_remove(q);
	tap_ok(spit(q, buf, 50) == 0, "cut it to 50 bytes");
	refused(q, MASQ_ERR_FORMAT, "database is damaged (truncated to 50 bytes)", "50 bytes");
	tap_ok(spit(q, buf, 1024) == 0, "cut it to 1024 bytes");
	refused(q, MASQ_ERR_FORMAT, "database is damaged (1024 bytes is not a whole number",
	    "the first 1024 bytes");
	tap_ok(spit(q, buf, n / 4096 / 2 * 4096) == 0, "cut it to half its pages");
	refused(q, MASQ_ERR_FORMAT, "database is damaged (truncated:", "half its pages");
	tap_ok(spit(q, buf, n - 4096 - 100) == 0, "cut it in the middle of a page");
	refused(q, MASQ_ERR_FORMAT, "database is damaged", "cut in a page");

	/* a page of garbage in the middle: found by quick_check or by the first read */
	for (size_t i = 2 * 4096; i < 3 * 4096; i++)
		buf[i] = (char)(i * 131 + 7);
	tap_ok(spit(q, buf, n) == 0, "overwrite page 3 with garbage");
	refused(q, MASQ_ERR_FORMAT, "database is damaged", "a damaged page");
	{
		sdb *d2 = NULL;
		masq_err e2 = {0};
		sdb_open(&d2, q, 0, &e2);
		tap_diag("damaged page: %s", e2.msg);
		sdb_close(d2);
	}
	free(buf);
	db_remove(q);
}

/* The first n bytes of s, as a new string. */
static char *
xstrndup_(const char *s, size_t n)
{
	char *d = xmalloc(n + 1);
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

/* Run sql on an existing file through a plain connection (no unlink). */
static int
raw_exec(const char *path, const char *sql)
{
	sqlite3 *h = NULL;
	int rc = sqlite3_open_v2(path, &h, SQLITE_OPEN_READWRITE, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(h, sql, NULL, NULL, NULL);
	sqlite3_close(h);
	return rc == SQLITE_OK ? 0 : -1;
}

/* Schema 2: a database of schema 1 migrates (its sessions keep a NULL
 * environment); what is read back is input too: NULL columns, a foreign
 * status, events out of order are refused by name, never a crash. */
static void
test_schema2(void)
{
	const char *p = wpath("schema2.db");
	masq_err err = {0};
	sdb_session s = session_example(), g;
	int64_t id = 0;
	sdb *db;

	tap_ok(masq_exit_code(MASQ_ERR_INTERNAL) == 3 && masq_exit_code(MASQ_ERR_MISMATCH) == 1 &&
	    masq_exit_code(MASQ_ERR_FORMAT) == 2 && masq_exit_code(MASQ_OK) == 0,
	    "exit statuses: 0 ok, 1 a divergence, 2 bad input, 3 an internal error");
	db_remove(p);
	if (sdb_open(&db, p, SDB_CREATE, &err) < 0 || sdb_session_new(db, &s, &id, &err) < 0) {
		tap_ok(0, "set-up: %s", err.msg);
		return;
	}
	sdb_close(db);
	tap_ok(raw_exec(p, "ALTER TABLE sessions DROP COLUMN environment; PRAGMA user_version = 1") == 0,
	    "a database of schema 1 (no environment column)");
	tap_ok(sdb_open(&db, p, 0, &err) == 0, "... opens");
	tap_ok(raw_int(p, "PRAGMA user_version") == 2, "... migrated to schema 2");
	tap_ok(sdb_session_get(db, id, &g, &err) == 0 && g.environment == NULL, "... its session has no environment");
	sdb_session_free(&g);
	s.environment = "{\"probe\":\"0123\"}";
	tap_ok(sdb_session_new(db, &s, &id, &err) == 0 && sdb_session_get(db, id, &g, &err) == 0 &&
	    g.environment != NULL && strcmp(g.environment, s.environment) == 0, "a new session records one");
	sdb_session_free(&g);
	s.environment = "{not json";
	tap_ok(sdb_session_new(db, &s, &id, &err) == -1, "an environment that is not JSON is refused");
	s.environment = NULL;
	tap_ok(sdb_session_new(db, &s, &id, &err) == 0 && sdb_session_set_status(db, id, "failed", &err) == 0 &&
	    sdb_session_get(db, 0, &g, &err) == 0 && g.id == id - 1, "a failed session is not the default");
	sdb_session_free(&g);
	sdb_close(db);

	/* a hand-made table without NOT NULL, as a hostile file may hold */
	tap_ok(raw_exec(p, "CREATE TABLE s2 AS SELECT * FROM sessions; DROP VIEW session_summary;"
	    " PRAGMA foreign_keys = OFF; DROP TABLE sessions; ALTER TABLE s2 RENAME TO sessions;"
	    " UPDATE sessions SET model_fp = NULL WHERE id = 1; UPDATE sessions SET status = 'odd' WHERE id = 2;"
	    " UPDATE sessions SET threads = -4 WHERE id = 3") == 0, "a sessions table with NULLs and foreign values");
	tap_ok(sdb_open(&db, p, 0, &err) == 0, "... opens");
	tap_ok(sdb_session_get(db, 1, &g, &err) == -1 && err.status == MASQ_ERR_FORMAT, "a NULL model_fp is refused");
	tap_contains(err.msg, "session 1: column model_fp is NULL", "... naming the session and the column");
	tap_ok(sdb_session_get(db, 2, &g, &err) == -1, "a status masq never writes is refused");
	tap_contains(err.msg, "column status", "... naming it");
	tap_ok(sdb_session_get(db, 3, &g, &err) == -1, "a thread count of -4 is refused");
	tap_contains(err.msg, "column threads", "... naming it");
	sdb_close(db);
	db_remove(p);
}

static void
test_dump(void)
{
	const char *p = wpath("dump-src.db"), *q = wpath("dump-dst.db");
	masq_err err = {0};
	sdb_session s = session_example(), g1, g2;
	static evlist la, lb, lc;
	int64_t sid, other;
	sdb *db, *dst;
	char *text = NULL;
	size_t len = 0;
	FILE *mem;
	int ok = 1;

	db_remove(p);
	db_remove(q);
	if (sdb_open(&db, p, SDB_CREATE, &err) < 0 || sdb_session_new(db, &s, &other, &err) < 0 ||
	    sdb_session_new(db, &s, &sid, &err) < 0) {
		tap_ok(0, "set-up: %s", err.msg);
		return;
	}
	ok &= sdb_event_append(db, sid, "command", "open", "{\"model\":\"it's\"}", NULL, &err) == 0;
	ok &= sdb_event_append(db, sid, "note", "note",
	    "{\"text\":\"a 'quoted' \\\"line\\\"\\nand -- not a comment; DROP TABLE events;\"}", NULL,
	    &err) == 0;
	ok &= sdb_event_append(db, sid, "result", "quantize-layer",
	    "{\"layer\":0,\"sqnr_db\":{\"all\":1.5},\"unicode\":\"\xc3\xa9\xe2\x82\xac\"}", NULL,
	    &err) == 0;
	ok &= sdb_event_append(db, sid, "error", "export", "{\"msg\":\"disk full\"}", NULL, &err) == 0;
	ok &= sdb_event_append(db, other, "note", "note", "{}", NULL, &err) == 0;
	ok &= sdb_session_set_status(db, sid, "finished", &err) == 0;
	tap_ok(ok, "dump set-up");

	mem = open_memstream(&text, &len);
	tap_ok(sdb_dump(db, sid, mem, &err) == 0, "dump session 2");
	fclose(mem);
	tap_contains(text, "NOT in this\n-- dump", "the dump says blobs are not in it");
	tap_ok(sdb_dump(db, 77, stdout, &err) == -1 && err.status == MASQ_ERR_USAGE,
	    "dump of a missing session: usage error");

	/* the target already has a session with events */
	ok = sdb_open(&dst, q, SDB_CREATE, &err) == 0 && sdb_session_new(dst, &s, &other, &err) == 0;
	for (int i = 0; i < 3; i++)
		ok &= sdb_event_append(dst, other, "note", "note", "{}", NULL, &err) == 0;
	tap_ok(ok, "target with one session of 3 events");
	int64_t nid = 0;
	if (!tap_ok(sdb_load(dst, text, &nid, &err) == 0 && nid == 2, "load the dump into it"))
		tap_diag("%s", err.msg);
	tap_ok(sdb_session_get(dst, 0, &g2, &err) == 0 && g2.id == 2, "... as session 2");
	sdb_session_get(db, sid, &g1, &err);
	tap_ok(strcmp(g1.created, g2.created) == 0 && strcmp(g1.masq_version, g2.masq_version) == 0 &&
	    g1.seed == g2.seed && g1.threads == g2.threads && g2.model_path != NULL &&
	    strcmp(g1.model_path, g2.model_path) == 0 && g2.calib_path == NULL &&
	    strcmp(g1.model_fp, g2.model_fp) == 0 && strcmp(g1.calib_fp, g2.calib_fp) == 0 &&
	    strcmp(g1.settings, g2.settings) == 0 && strcmp(g2.status, "finished") == 0,
	    "... the session row is identical but for its id");
	sdb_session_free(&g1);
	sdb_session_free(&g2);
	sdb_event_each(db, sid, ev_collect, &la, &err);
	sdb_event_each(dst, 2, ev_collect, &lb, &err);
	ok = la.n == 4 && lb.n == 4;
	for (int i = 0; ok && i < la.n; i++)
		ok = la.seq[i] == lb.seq[i] && strcmp(la.kind[i], lb.kind[i]) == 0 &&
		    strcmp(la.name[i], lb.name[i]) == 0 && strcmp(la.payload[i], lb.payload[i]) == 0 &&
		    strcmp(la.created[i], lb.created[i]) == 0;
	tap_ok(ok, "... identical events under the new id");
	sdb_event_each(dst, 1, ev_collect, &lc, &err);
	tap_ok(lc.n == 3, "... the target's own session keeps its 3 events");
	ev_free(&lc);
	tap_ok(sdb_load(dst, text, &nid, &err) == 0 && nid == 3 && sdb_event_each(dst, 3, ev_collect, &lc, &err) == 0
	    && lc.n == 4, "loading it again gives session 3");
	ev_free(&lc);
	tap_ok(sdb_integrity_ok(dst, &err) == 0, "target passes integrity_check");

	/* a dump is data: anything but one session's rows is refused and adds
	 * nothing (tests/replay.sh tries DROP, ATTACH, PRAGMA and the like) */
	{
		char *bad = xstrdup(text), *v = strstr(bad, "VALUES (");
		v = v ? strchr(v, ',') : NULL;	/* break the session INSERT */
		if (v != NULL)
			*v = ';';
		tap_ok(sdb_load(dst, bad, &nid, &err) == -1 && err.status == MASQ_ERR_FORMAT, "a broken dump is refused");
		tap_contains(err.msg, "statement 2 (line", "... naming the statement");
		tap_ok(raw_int(q, "SELECT count(*) FROM events") == 3 + 4 + 4 &&
		    raw_int(q, "SELECT count(*) FROM sessions") == 3, "... adding nothing");
		free(bad);
		const char *cut = strstr(text, "INSERT INTO events");
		bad = xstrndup_(text, cut ? (size_t)(cut - text) : strlen(text));
		tap_ok(sdb_load(dst, bad, &nid, &err) == -1, "a dump cut after BEGIN is refused");
		tap_contains(err.msg, "BEGIN without COMMIT", "... as cut short");
		free(bad);
		tap_ok(sdb_load(dst, "-- nothing\n", &nid, &err) == -1, "an empty dump is refused");
		tap_contains(err.msg, "0 session rows", "... saying so");
		tap_ok(raw_int(q, "SELECT count(*) FROM sessions") == 3, "... adding nothing");
	}
	ev_free(&la);
	ev_free(&lb);
	free(text);
	sdb_close(dst);
	sdb_close(db);
}

static void
test_blobs(void)
{
	const char *p = wpath("blobs.db"), *src = wpath("blob-src.bin");
	masq_err err = {0};
	char sha[65], sha2[65], want[65], *path, *bp;
	size_t n = 150000;
	unsigned char *data = xmalloc(n);
	sdb *db;
	DIR *d;
	struct dirent *de;
	int entries = 0;

	for (size_t i = 0; i < n; i++)
		data[i] = (unsigned char)(i * 2654435761u >> 13);
	spit(src, data, n);
	sha256_buf(data, n, want);
	db_remove(p);
	if (sdb_open(&db, p, SDB_CREATE, &err) < 0) {
		tap_ok(0, "open: %s", err.msg);
		free(data);
		return;
	}
	tap_ok(sdb_blob_put_file(db, src, sha, &err) == 0, "blob_put_file");
	tap_streq(sha, want, "... names it by its sha256");
	tap_ok(sdb_blob_put_file(db, src, sha2, &err) == 0 && strcmp(sha, sha2) == 0,
	    "blob_put_file again: same name");
	d = opendir(sdb_blob_dir(db));
	while (d != NULL && (de = readdir(d)) != NULL)
		entries += de->d_name[0] != '.' || de->d_name[1] == 't';
	if (d != NULL)
		closedir(d);
	tap_ok(entries == 1, "... one file in the blob directory, no temporary left");

	path = sdb_blob_path(db, sha, &err);
	tap_ok(path != NULL, "blob_path");
	bp = masq_path_join(sdb_blob_dir(db), sha);
	tap_streq(path, bp, "... is DB.blobs/<sha256>");
	{
		size_t m = 0;
		char *c = slurp(bp, &m);
		tap_ok(c != NULL && m == n && memcmp(c, data, n) == 0, "... holding the bytes");
		free(c);
	}
	free(path);

	/* altered */
	chmod(bp, 0644);
	data[n / 2] ^= 1;
	spit(bp, data, n);
	data[n / 2] ^= 1;
	path = sdb_blob_path(db, sha, &err);
	tap_ok(path == NULL && err.status == MASQ_ERR_FORMAT, "an altered blob is a format error");
	free(path);
	{
		char w[100];
		snprintf(w, sizeof w, "blob %s was altered", sha);
		tap_contains(err.msg, w, "... saying so");
	}
	tap_ok(sdb_blob_put_file(db, src, sha2, &err) == 0 && (path = sdb_blob_path(db, sha, &err)) !=
	    NULL, "putting the file again repairs it");
	free(path);

	/* missing */
	unlink(bp);
	path = sdb_blob_path(db, sha, &err);
	tap_ok(path == NULL && err.status == MASQ_ERR_IO, "a missing blob is an I/O error");
	tap_contains(err.msg, "is missing", "... saying so");
	free(path);
	path = sdb_blob_path(db, "../../etc/passwd", &err);
	tap_ok(path == NULL && err.status == MASQ_ERR_FORMAT, "a name that is not a sha256 is refused");
	free(path);
	path = sdb_blob_path(db, "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", &err);
	tap_ok(path == NULL, "... upper-case hex too");
	free(path);
	tap_ok(sdb_blob_put_file(db, wpath("no-such-file"), sha, &err) == -1 &&
	    err.status == MASQ_ERR_IO, "put of a missing file is an I/O error");
	tap_contains(err.msg, "no-such-file", "... naming it");
	free(bp);
	free(data);
	sdb_close(db);
}

/* The writer the kill test kills: append events to session 1 for ever,
 * telling the parent each seq once it is committed. */
static void __attribute__((noreturn))
writer(const char *path, int fd)
{
	masq_err err = {0};
	sdb *db;
	int64_t seq;

	if (sdb_open(&db, path, 0, &err) < 0)
		_exit(3);
	for (int i = 0; i < 10000000; i++) {
		if (sdb_event_append(db, 1, i % 2 ? "result" : "command", "quantize-layer",
		    "{\"layer\":0,\"sqnr_db\":{\"all\":12.5}}", &seq, &err) < 0)
			_exit(4);
		if (write(fd, &seq, sizeof seq) != sizeof seq)
			_exit(5);
	}
	_exit(0);
}

static void
test_kill(void)
{
	const char *p = wpath("kill.db");
	masq_err err = {0};
	sdb_session s = session_example();
	static evlist l;
	unsigned rs = 20261127;
	int64_t id;
	sdb *db;
	int all_ok = 1, durable = 1;

	db_remove(p);
	if (sdb_open(&db, p, SDB_CREATE, &err) < 0 || sdb_session_new(db, &s, &id, &err) < 0) {
		tap_ok(0, "set-up: %s", err.msg);
		return;
	}
	sdb_close(db);
	for (int round = 0; round < 10; round++) {
		int fds[2], status = 0;
		int64_t seq, last = 0;
		pid_t pid;
		ssize_t got;

		if (pipe(fds) < 0) {
			tap_ok(0, "pipe: %s", strerror(errno));
			return;
		}
		fflush(stdout);
		pid = fork();
		if (pid == 0) {
			close(fds[0]);
			writer(p, fds[1]);
		}
		close(fds[1]);
		/* odd rounds: once the writer has committed one event, kill it
		 * 0-40 ms later; even rounds: 0-10 ms after the fork, perhaps
		 * while it opens the database and recovers the last WAL */
		if (round % 2 == 1) {
			got = read(fds[0], &seq, sizeof seq);
			if (got == sizeof seq)
				last = seq;
		}
		rs = rs * 1103515245u + 12345u;
		usleep((rs >> 8) % (round % 2 == 1 ? 40000 : 10000));
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		while ((got = read(fds[0], &seq, sizeof seq)) == sizeof seq)
			last = seq;
		close(fds[0]);
		if (last > 0 && (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)) {
			tap_diag("round %d: the writer ended by itself (status %d)", round, status);
			all_ok = 0;
		}

		if (sdb_open(&db, p, 0, &err) < 0) {
			tap_diag("round %d: reopen: %s", round, err.msg);
			all_ok = 0;
			continue;
		}
		if (sdb_integrity_ok(db, &err) < 0) {
			tap_diag("round %d: %s", round, err.msg);
			all_ok = 0;
		}
		ev_free(&l);
		if (sdb_event_each(db, id, ev_collect, &l, &err) < 0 || !ev_gapless(&l)) {
			tap_diag("round %d: events not gapless (%d)", round, l.n);
			all_ok = 0;
		}
		if (l.n < last)
			durable = 0;
		tap_diag("round %d: %d events, the writer saw %" PRId64 " committed", round, l.n, last);
		sdb_close(db);
	}
	ev_free(&l);
	tap_ok(all_ok, "kill -9 of a writer, 10 times: integrity_check ok, events gapless 1..n");
	tap_ok(durable, "... every event the writer saw committed survived");
	/* the database is still writable after all that */
	if (sdb_open(&db, p, 0, &err) == 0) {
		int64_t seq = 0;
		int r = sdb_event_append(db, id, "note", "note", "{}", &seq, &err);
		tap_ok(r == 0 && seq > 10, "... and appends continue (seq %" PRId64 ")", seq);
		sdb_close(db);
	} else {
		tap_ok(0, "reopen: %s", err.msg);
	}
}

int
main(void)
{
	masq_err err = {0};
	const char *bd = getenv("builddir");

	snprintf(workdir, sizeof workdir, "%s/work/test_db", bd && *bd ? bd : ".");
	if (masq_mkdir_p(workdir, &err) < 0) {
		printf("Bail out! %s\n", err.msg);
		return 99;
	}
	test_create();
	test_sessions();
	test_events();
	test_views();
	test_refusals();
	test_schema2();
	test_dump();
	test_blobs();
	test_kill();
	return tap_done();
}
