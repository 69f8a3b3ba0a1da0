#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "core/sha256.h"
#include "sessions/db.h"

/*
 * Durability: the database runs in WAL mode with synchronous=NORMAL.  A
 * commit appends its pages to DB-wal with write(2) before returning, so a
 * killed process (kill -9, a crash) loses nothing committed; only a power
 * failure or a kernel crash can lose the last few commits (never the
 * database's consistency), which is the usual trade-off for WAL and what
 * issue 4 asks for (kill -9 loses at most the layer in progress).
 * synchronous=FULL would fsync DB-wal on every commit for power-loss
 * durability too, at a cost per event.
 */

struct sdb {
	sqlite3 *h;
	char *path;
	char *blobdir;		/* path + ".blobs" */
	int in_tx;		/* inside sdb_begin .. sdb_commit */
};

#define SDB_NOW "strftime('%Y-%m-%dT%H:%M:%fZ','now')"

/*
 * Migrations: sdb_migrations[i] brings user_version i to i + 1.  They are
 * applied in order in one transaction by sdb_migrate, which then sets
 * user_version and application_id.  Never edit a migration that has
 * shipped: add one (and raise SDB_USER_VERSION); a changed view is a DROP
 * VIEW and CREATE VIEW in the new migration.  masq-session(5) documents
 * the schema.
 */
static const char *const sdb_migrations[] = {
	/* 0 -> 1: sessions, the append-only event log, two views */
	"CREATE TABLE sessions (\n"
	"	id INTEGER PRIMARY KEY,\n"
	"	created TEXT NOT NULL,\n"
	"	masq_version TEXT NOT NULL,\n"
	"	seed INTEGER NOT NULL,\n"
	"	threads INTEGER NOT NULL,\n"
	"	model_path TEXT,\n"
	"	model_fp TEXT NOT NULL,\n"
	"	calib_path TEXT,\n"
	"	calib_fp TEXT NOT NULL,\n"
	"	settings TEXT NOT NULL CHECK (json_valid(settings)),\n"
	"	status TEXT NOT NULL DEFAULT 'open'\n"
	") STRICT;\n"
	"CREATE TABLE events (\n"
	"	session INTEGER NOT NULL REFERENCES sessions(id),\n"
	"	seq INTEGER NOT NULL CHECK (seq > 0),\n"
	"	kind TEXT NOT NULL CHECK (kind IN ('command', 'result', 'error', 'note')),\n"
	"	name TEXT NOT NULL,\n"
	"	payload TEXT NOT NULL CHECK (json_valid(payload)),\n"
	"	created TEXT NOT NULL,\n"
	"	PRIMARY KEY (session, seq)\n"
	") STRICT;\n"
	"CREATE TRIGGER events_no_update BEFORE UPDATE ON events\n"
	"BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;\n"
	"CREATE TRIGGER events_no_delete BEFORE DELETE ON events\n"
	"BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;\n"
	/* INSERT OR REPLACE deletes without firing DELETE triggers: refuse any
	 * insert but the session's next seq (this also keeps seq gapless) */
	"CREATE TRIGGER events_seq_next BEFORE INSERT ON events\n"
	"WHEN NEW.seq IS NOT (SELECT coalesce(max(seq), 0) + 1 FROM events WHERE session = NEW.session)\n"
	"BEGIN SELECT RAISE(ABORT, 'events are append-only: seq must be one more than the session''s last'); END;\n"
	"CREATE VIEW session_summary (id, created, status, masq_version, model_path,\n"
	"    calib_path, events, layers_done, last_event) AS\n"
	"SELECT s.id, s.created, s.status, s.masq_version, s.model_path, s.calib_path,\n"
	"	(SELECT count(*) FROM events e WHERE e.session = s.id),\n"
	"	(SELECT count(DISTINCT json_extract(e.payload, '$.layer')) FROM events e\n"
	"	    WHERE e.session = s.id AND e.kind = 'result' AND e.name = 'quantize-layer'),\n"
	"	(SELECT e.created FROM events e WHERE e.session = s.id ORDER BY e.seq DESC LIMIT 1)\n"
	"FROM sessions s;\n"
	"CREATE VIEW layer_sqnr (session, layer, text, vision, audio, all_tokens, seq) AS\n"
	"SELECT session, layer, text, vision, audio, all_tokens, seq FROM (\n"
	"	SELECT session, seq,\n"
	"	    json_extract(payload, '$.layer') AS layer,\n"
	"	    CAST(json_extract(payload, '$.sqnr_db.text') AS REAL) AS text,\n"
	"	    CAST(json_extract(payload, '$.sqnr_db.vision') AS REAL) AS vision,\n"
	"	    CAST(json_extract(payload, '$.sqnr_db.audio') AS REAL) AS audio,\n"
	"	    CAST(json_extract(payload, '$.sqnr_db.all') AS REAL) AS all_tokens,\n"
	"	    row_number() OVER (PARTITION BY session, json_extract(payload, '$.layer')\n"
	"	        ORDER BY seq DESC) AS latest\n"
	"	FROM events WHERE kind = 'result' AND name = 'quantize-layer')\n"
	"WHERE latest = 1;\n",
	/* 1 -> 2: every session records its numeric environment (core/numenv.h);
	 * NULL for sessions recorded before */
	"ALTER TABLE sessions ADD COLUMN environment TEXT\n"
	"	CHECK (environment IS NULL OR json_valid(environment));\n",
};
_Static_assert(sizeof sdb_migrations / sizeof sdb_migrations[0] == SDB_USER_VERSION,
    "one migration per schema version");

/* Fill err from the connection's last error: damage and foreign files get
 * their own wording, anything else is "<path>: <what>: <sqlite message>". */
static int
sdb_fail(sqlite3 *h, const char *path, const char *what, masq_err *err)
{
	int rc = sqlite3_extended_errcode(h);
	const char *msg = sqlite3_errmsg(h);
	masq_status st;

	switch (rc & 0xff) {
	case SQLITE_NOTADB:
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: not an SQLite database", path);
	case SQLITE_CORRUPT:
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: database is damaged (%s)", path, msg);
	case SQLITE_NOMEM:
		fatal("%s: out of memory in SQLite", path);
	case SQLITE_CONSTRAINT:
	case SQLITE_ERROR:
	case SQLITE_MISMATCH:
	case SQLITE_TOOBIG:
	case SQLITE_RANGE:
		st = MASQ_ERR_FORMAT;
		break;
	case SQLITE_INTERNAL:
	case SQLITE_MISUSE:
		st = MASQ_ERR_INTERNAL;
		break;
	default:		/* IOERR, FULL, BUSY, LOCKED, READONLY, CANTOPEN, ... */
		st = MASQ_ERR_IO;
		break;
	}
	return masq_err_set(err, st, "%s: %s: %s", path, what, msg);
}

/* Prepare sql on db; NULL with err filled on failure. */
static sqlite3_stmt *
sdb_prepare(sdb *db, const char *sql, masq_err *err)
{
	sqlite3_stmt *st = NULL;

	if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK) {
		sdb_fail(db->h, db->path, "cannot prepare a statement", err);
		sqlite3_finalize(st);
		return NULL;
	}
	return st;
}

/* Run SQL without results; what names the step in the error message. */
static int
sdb_exec(sdb *db, const char *sql, const char *what, masq_err *err)
{
	if (sqlite3_exec(db->h, sql, NULL, NULL, NULL) != SQLITE_OK)
		return sdb_fail(db->h, db->path, what, err);
	return 0;
}

/* Roll back the transaction in progress, if any (errors ignored: the
 * first error is the one reported). */
static void
sdb_rollback(sdb *db)
{
	if (!sqlite3_get_autocommit(db->h))
		sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
}

/* *out gets the first column of the first row of sql (0 when no row). */
static int
sdb_query_int(sdb *db, const char *sql, int64_t *out, masq_err *err)
{
	sqlite3_stmt *st = sdb_prepare(db, sql, err);
	int rc;

	if (st == NULL)
		return -1;
	*out = 0;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(st, 0);
		rc = sqlite3_step(st);
	}
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		sdb_fail(db->h, db->path, sql, err);
		sqlite3_finalize(st);
		return -1;
	}
	sqlite3_finalize(st);
	return 0;
}

/* Run a check pragma (quick_check, integrity_check): 0 when it answers
 * "ok", else -1 with "<path>: <pre><first problem><post>". */
static int
sdb_check(sdb *db, const char *pragma, const char *pre, const char *post, masq_err *err)
{
	sqlite3_stmt *st = sdb_prepare(db, pragma, err);
	int rc, bad = 0;

	if (st == NULL)
		return -1;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *r = (const char *)sqlite3_column_text(st, 0);
		if (r == NULL || strcmp(r, "ok") != 0) {
			static const char head[] = "*** in database main ***\n";
			const char *c = r ? r : "(no answer)";
			/* one line: drop the banner, newlines become spaces */
			if (strncmp(c, head, sizeof head - 1) == 0)
				c += sizeof head - 1;
			masq_err_set(err, MASQ_ERR_FORMAT, "%s: %s%s%s", db->path, pre, c, post);
			for (char *q = err ? err->msg : NULL; q != NULL && (q = strchr(q, '\n')) != NULL; )
				*q = ' ';
			bad = 1;
		}
	} else if (rc != SQLITE_DONE) {
		sdb_fail(db->h, db->path, pragma, err);
		bad = 1;
	}
	sqlite3_finalize(st);
	return bad ? -1 : 0;
}

/* Big-endian 16 and 32-bit fields of the file header. */
static unsigned
sdb_be16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

static uint32_t
sdb_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* 1 when path+suffix exists. */
static int
sdb_exists_suffix(const char *path, const char *suffix)
{
	size_t a = strlen(path), b = strlen(suffix);
	char *p = xmalloc(a + b + 1);
	struct stat sb;
	int r;

	memcpy(p, path, a);
	memcpy(p + a, suffix, b + 1);
	r = stat(p, &sb) == 0;
	free(p);
	return r;
}

/*
 * Look at the file before SQLite does: *exists says whether it is there;
 * a non-empty file must start with the SQLite header, be at least one
 * header long and, unless a WAL or journal beside it may still complete it,
 * hold the whole pages its header counts (SQLite file format, section 1.3).
 */
static int
sdb_file_check(const char *path, int flags, int *exists, masq_err *err)
{
	static const char magic[16] = "SQLite format 3";	/* with its NUL */
	unsigned char hdr[100];
	struct stat sb;
	size_t n = 0;
	int fd;

	if (stat(path, &sb) < 0) {
		if (errno != ENOENT)
			return masq_err_set(err, MASQ_ERR_IO, "%s: %s", path, strerror(errno));
		if (!(flags & SDB_CREATE))
			return masq_err_set(err, MASQ_ERR_IO, "%s: no such session database", path);
		*exists = 0;
		return 0;
	}
	*exists = 1;
	if (S_ISDIR(sb.st_mode))
		return masq_err_set(err, MASQ_ERR_IO, "%s: is a directory, not a session database", path);
	if (!S_ISREG(sb.st_mode))
		return masq_err_set(err, MASQ_ERR_IO, "%s: not a regular file", path);
	if (sb.st_size == 0)
		return 0;	/* an empty file is an empty database */

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return masq_err_set(err, MASQ_ERR_IO, "%s: %s", path, strerror(errno));
	while (n < sizeof hdr) {
		ssize_t got = read(fd, hdr + n, sizeof hdr - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			int e = errno;
			close(fd);
			return masq_err_set(err, MASQ_ERR_IO, "%s: read error: %s", path, strerror(e));
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	close(fd);

	if (memcmp(hdr, magic, n < sizeof magic ? n : sizeof magic) != 0)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: not an SQLite database", path);
	if (n < sizeof hdr)
		return masq_err_set(err, MASQ_ERR_FORMAT,
		    "%s: database is damaged (truncated to %zu bytes)", path, n);
	{
		unsigned psz = sdb_be16(hdr + 16);
		uint32_t npages = sdb_be32(hdr + 28);
		int size_valid = sdb_be32(hdr + 24) == sdb_be32(hdr + 92);

		if (psz == 1)
			psz = 65536;
		if (psz < 512 || psz > 65536 || (psz & (psz - 1)) != 0)
			return masq_err_set(err, MASQ_ERR_FORMAT,
			    "%s: database is damaged (page size %u in its header)", path, psz);
		if (sdb_exists_suffix(path, "-wal") || sdb_exists_suffix(path, "-journal"))
			return 0;
		if (sb.st_size % psz != 0)
			return masq_err_set(err, MASQ_ERR_FORMAT,
			    "%s: database is damaged (%lld bytes is not a whole number of %u-byte pages)",
			    path, (long long)sb.st_size, psz);
		if (size_valid && npages > 0 && (long long)npages * psz > (long long)sb.st_size)
			return masq_err_set(err, MASQ_ERR_FORMAT,
			    "%s: database is damaged (truncated: %lld bytes, its header counts %" PRIu32
			    " pages of %u bytes)", path, (long long)sb.st_size, npages, psz);
	}
	return 0;
}

/* Bring the schema from its user_version to SDB_USER_VERSION in one
 * transaction and stamp application_id; a no-op when already there. */
static int
sdb_migrate(sdb *db, masq_err *err)
{
	int64_t v, appid;
	char sql[128];

	if (sdb_exec(db, "BEGIN IMMEDIATE", "cannot start the migration", err) < 0)
		return -1;
	/* read again inside the transaction: another masq may have migrated */
	if (sdb_query_int(db, "PRAGMA user_version", &v, err) < 0 ||
	    sdb_query_int(db, "PRAGMA application_id", &appid, err) < 0)
		goto fail;
	if (v > SDB_USER_VERSION) {
		masq_err_set(err, MASQ_ERR_FORMAT,
		    "%s: written by a newer masq (schema version %" PRId64 "; this masq knows up to %d)",
		    db->path, v, SDB_USER_VERSION);
		goto fail;
	}
	for (; v < SDB_USER_VERSION; v++) {
		char what[64];
		snprintf(what, sizeof what, "migration to schema version %" PRId64, v + 1);
		if (sdb_exec(db, sdb_migrations[v], what, err) < 0)
			goto fail;
	}
	snprintf(sql, sizeof sql, "PRAGMA user_version = %d; PRAGMA application_id = %d",
	    SDB_USER_VERSION, SDB_APPLICATION_ID);
	if (sdb_exec(db, sql, "cannot stamp the schema version", err) < 0 ||
	    sdb_exec(db, "COMMIT", "cannot commit the migration", err) < 0)
		goto fail;
	return 0;
fail:
	sdb_rollback(db);
	return -1;
}

/* The checks and set-up of sdb_open once SQLite has the file; nothing is
 * written before every check has passed. */
static int
sdb_setup(sdb *db, masq_err *err)
{
	int64_t appid, v, nobj;
	sqlite3_stmt *st;
	const char *mode;
	int ok;

	if (sqlite3_db_readonly(db->h, "main") == 1)
		return masq_err_set(err, MASQ_ERR_IO, "%s: cannot open for writing", db->path);
	if (sdb_query_int(db, "PRAGMA application_id", &appid, err) < 0 ||
	    sdb_query_int(db, "PRAGMA user_version", &v, err) < 0 ||
	    sdb_query_int(db, "SELECT count(*) FROM sqlite_master", &nobj, err) < 0)
		return -1;
	if (appid != SDB_APPLICATION_ID && !(appid == 0 && v == 0 && nobj == 0))
		return masq_err_set(err, MASQ_ERR_FORMAT,
		    "%s: not a masq session database (application_id 0x%08" PRIx32 ")",
		    db->path, (uint32_t)appid);
	if (v > SDB_USER_VERSION)
		return masq_err_set(err, MASQ_ERR_FORMAT,
		    "%s: written by a newer masq (schema version %" PRId64 "; this masq knows up to %d)",
		    db->path, v, SDB_USER_VERSION);
	if (v < 0)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: unknown schema version %" PRId64,
		    db->path, v);
	if (nobj > 0 && sdb_check(db, "PRAGMA quick_check", "database is damaged (quick_check: ", ")",
	    err) < 0)
		return -1;

	/* Checks passed: from here on the file may be written. */
	st = sdb_prepare(db, "PRAGMA journal_mode = WAL", err);
	if (st == NULL)
		return -1;
	if (sqlite3_step(st) != SQLITE_ROW) {
		sdb_fail(db->h, db->path, "cannot switch to WAL mode", err);
		sqlite3_finalize(st);
		return -1;
	}
	mode = (const char *)sqlite3_column_text(st, 0);
	ok = mode != NULL && strcmp(mode, "wal") == 0;
	if (!ok)
		masq_err_set(err, MASQ_ERR_IO, "%s: cannot switch to WAL mode (journal_mode stays %s)",
		    db->path, mode ? mode : "unknown");
	sqlite3_finalize(st);
	if (!ok)
		return -1;
	/* NORMAL in WAL: see the comment at the top of this file */
	if (sdb_exec(db, "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON",
	    "cannot set the connection's pragmas", err) < 0)
		return -1;
	if (v < SDB_USER_VERSION || appid != SDB_APPLICATION_ID)
		return sdb_migrate(db, err);
	return 0;
}

/* Remove a database file we created (and what SQLite put beside it). */
static void
sdb_unlink_created(const char *path)
{
	static const char *const sfx[] = {"", "-wal", "-shm", "-journal"};
	size_t n = strlen(path);
	char *p = xmalloc(n + 16);

	for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
		memcpy(p, path, n);
		strcpy(p + n, sfx[i]);
		unlink(p);
	}
	free(p);
}

/* Open path (creating it with SDB_CREATE when missing); on any refusal
 * nothing was changed and a file this call created is removed again. */
int
sdb_open(sdb **out, const char *path, int flags, masq_err *err)
{
	sdb *db;
	int exists = 0, rc;
	size_t n;

	*out = NULL;
	if (sdb_file_check(path, flags, &exists, err) < 0)
		return -1;
	db = xcalloc(1, sizeof *db);
	db->path = xstrdup(path);
	n = strlen(path);
	db->blobdir = xmalloc(n + sizeof ".blobs");
	memcpy(db->blobdir, path, n);
	memcpy(db->blobdir + n, ".blobs", sizeof ".blobs");

	rc = sqlite3_open_v2(path, &db->h, SQLITE_OPEN_READWRITE | (exists ? 0 : SQLITE_OPEN_CREATE),
	    NULL);
	if (rc != SQLITE_OK) {
		if (db->h == NULL)
			fatal("%s: out of memory opening the database", path);
		sdb_fail(db->h, path, "cannot open", err);
		goto fail;
	}
	sqlite3_extended_result_codes(db->h, 1);
	sqlite3_busy_timeout(db->h, 5000);
	if (sdb_setup(db, err) < 0)
		goto fail;
	*out = db;
	return 0;
fail:
	sqlite3_close(db->h);
	db->h = NULL;
	if (!exists)
		sdb_unlink_created(path);
	sdb_close(db);
	return -1;
}

/* Close db (rolling back an unfinished sdb_begin) and free it; NULL is a no-op. */
void
sdb_close(sdb *db)
{
	if (db == NULL)
		return;
	if (db->h != NULL)
		sqlite3_close_v2(db->h);
	free(db->path);
	free(db->blobdir);
	free(db);
}

const char *
sdb_path(const sdb *db)
{
	return db->path;
}

const char *
sdb_blob_dir(const sdb *db)
{
	return db->blobdir;
}

/* ---- sessions ---------------------------------------------------------- */

static int sdb_sha_valid(const char *s);

#define SDB_SESSION_COLS \
	"id, created, masq_version, seed, threads, model_path, model_fp, calib_path, calib_fp, " \
	"settings, status, environment"

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
static int
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
int
sdb_session_set_status(sdb *db, int64_t id, const char *status, masq_err *err)
{
	sqlite3_stmt *st = sdb_prepare(db, "UPDATE sessions SET status = ?1 WHERE id = ?2", err);

	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, status, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, id);
	if (sqlite3_step(st) != SQLITE_DONE) {
		sdb_fail(db->h, db->path, "cannot set the session's status", err);
		sqlite3_finalize(st);
		return -1;
	}
	sqlite3_finalize(st);
	if (sqlite3_changes(db->h) == 0)
		return masq_err_set(err, MASQ_ERR_USAGE, "%s: no session %" PRId64, db->path, id);
	return 0;
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
static int
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

/* ---- blobs ------------------------------------------------------------- */

/* 1 when s is 64 lowercase hex digits. */
static int
sdb_sha_valid(const char *s)
{
	size_t i;

	for (i = 0; i < 64; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return s[64] == '\0';
}

/* fsync a directory, so a rename or a new entry in it survives a power loss. */
static int
sdb_fsync_dir(const char *dir, masq_err *err)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return masq_err_set(err, MASQ_ERR_IO, "%s: %s", dir, strerror(errno));
	if (fsync(fd) < 0 && errno != EINVAL) {
		int e = errno;
		close(fd);
		return masq_err_set(err, MASQ_ERR_IO, "%s: fsync: %s", dir, strerror(e));
	}
	close(fd);
	return 0;
}

/* Create the blob directory if missing (and make its entry durable). */
static int
sdb_blob_dir_make(sdb *db, masq_err *err)
{
	struct stat sb;
	char *parent, *slash;
	int r;

	if (stat(db->blobdir, &sb) == 0) {
		if (!S_ISDIR(sb.st_mode))
			return masq_err_set(err, MASQ_ERR_IO, "%s: not a directory", db->blobdir);
		return 0;
	}
	if (mkdir(db->blobdir, 0777) < 0 && errno != EEXIST)
		return masq_err_set(err, MASQ_ERR_IO, "%s: cannot create directory: %s", db->blobdir,
		    strerror(errno));
	parent = xstrdup(db->blobdir);
	slash = strrchr(parent, '/');
	if (slash == NULL)
		strcpy(parent, ".");
	else if (slash == parent)
		slash[1] = '\0';
	else
		*slash = '\0';
	r = sdb_fsync_dir(parent, err);
	free(parent);
	return r;
}

/* Write all n bytes of p to fd. */
static int
sdb_write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Store the file at src as DB.blobs/<sha256>: copy it to a temporary file
 * in the blob directory while hashing it (one read, so the name matches
 * what was copied), fsync, rename to its hash, fsync the directory.  When a
 * blob of that hash is already there and intact, the copy is dropped. */
int
sdb_blob_put_file(sdb *db, const char *src, char sha[65], masq_err *err)
{
	enum { BUFSZ = 64 * 1024 };
	char *tmp = NULL, *dst = NULL, *buf = NULL, have[65];
	int in = -1, fd = -1, r = -1;
	sha256_ctx c;
	struct stat sb;

	if (sdb_blob_dir_make(db, err) < 0)
		return -1;
	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return masq_err_set(err, MASQ_ERR_IO, "%s: %s", src, strerror(errno));
	tmp = masq_path_join(db->blobdir, ".tmp-XXXXXX");
	fd = mkstemp(tmp);
	if (fd < 0) {
		masq_err_set(err, MASQ_ERR_IO, "%s: cannot create a temporary file: %s", db->blobdir,
		    strerror(errno));
		free(tmp);
		tmp = NULL;
		goto out;
	}
	buf = xmalloc(BUFSZ);
	sha256_init(&c);
	for (;;) {
		ssize_t got = read(in, buf, BUFSZ);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			masq_err_set(err, MASQ_ERR_IO, "%s: read error: %s", src, strerror(errno));
			goto out;
		}
		if (got == 0)
			break;
		sha256_update(&c, buf, (size_t)got);
		if (sdb_write_all(fd, buf, (size_t)got) < 0) {
			masq_err_set(err, MASQ_ERR_IO, "%s: write error: %s", tmp, strerror(errno));
			goto out;
		}
	}
	sha256_hex(&c, sha);
	/* blobs are content-addressed: read-only, to discourage edits */
	if (fchmod(fd, 0444) < 0 || fsync(fd) < 0) {
		masq_err_set(err, MASQ_ERR_IO, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	if (close(fd) < 0) {
		fd = -1;
		masq_err_set(err, MASQ_ERR_IO, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	dst = masq_path_join(db->blobdir, sha);
	if (stat(dst, &sb) == 0 && sha256_file(dst, have, NULL) == 0 && strcmp(have, sha) == 0) {
		r = 0;		/* already stored and intact; tmp is removed below */
		goto out;
	}
	if (rename(tmp, dst) < 0) {
		masq_err_set(err, MASQ_ERR_IO, "%s: cannot rename to %s: %s", tmp, dst, strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	r = sdb_fsync_dir(db->blobdir, err);
out:
	if (fd >= 0)
		close(fd);
	if (tmp != NULL)
		unlink(tmp);
	close(in);
	free(tmp);
	free(dst);
	free(buf);
	return r;
}

/* Path of blob sha (a new string) once it is known to exist and still hash
 * to sha; MASQ_ERR_FORMAT when altered or sha is not a sha256,
 * MASQ_ERR_IO when missing or unreadable. */
char *
sdb_blob_path(sdb *db, const char *sha, masq_err *err)
{
	char *p, got[65];
	struct stat sb;

	if (!sdb_sha_valid(sha)) {
		masq_err_set(err, MASQ_ERR_FORMAT, "blob name '%.80s' is not a sha256 (64 lowercase hex digits)",
		    sha);
		return NULL;
	}
	p = masq_path_join(db->blobdir, sha);
	if (stat(p, &sb) < 0) {
		if (errno == ENOENT)
			masq_err_set(err, MASQ_ERR_IO, "blob %s is missing (%s)", sha, p);
		else
			masq_err_set(err, MASQ_ERR_IO, "%s: %s", p, strerror(errno));
		free(p);
		return NULL;
	}
	if (sha256_file(p, got, err) < 0) {
		free(p);
		return NULL;
	}
	if (strcmp(got, sha) != 0) {
		masq_err_set(err, MASQ_ERR_FORMAT, "blob %s was altered (%s now hashes to %s)", sha, p,
		    got);
		free(p);
		return NULL;
	}
	return p;
}

/* ---- dump, raw SQL, integrity ----------------------------------------- */

/* fputs an sqlite3_mprintf result and free it. */
static void
sdb_put(FILE *out, char *s)
{
	if (s == NULL)
		fatal("out of memory formatting SQL");
	fputs(s, out);
	sqlite3_free(s);
}

/*
 * Print SQL text that recreates session (id <= 0: the most recent) in
 * another masq database: the session row with its id and its events, plain
 * INSERTs in one transaction.  masq sessions load (sdb_load) reads it as
 * data and gives the session the target's next id; sqlite3 run on it would
 * refuse it where that id is taken.
 */
int
sdb_dump(sdb *db, int64_t session, FILE *out, masq_err *err)
{
	sdb_session s;
	sqlite3_stmt *st;
	int rc;

	if (sdb_session_get(db, session, &s, err) < 0)
		return -1;
	fprintf(out, "-- masq session %" PRId64 " of %s, dumped by masq %s (schema version %d).\n",
	    s.id, db->path, PACKAGE_VERSION, SDB_USER_VERSION);
	fputs("-- Load it into another masq session database with masq sessions load FILE\n"
	    "-- (the session gets that database's next id).  The file is read as data:\n"
	    "-- one session row and its events, nothing else.\n"
	    "-- Blobs (the files in DB.blobs/ that events name by sha256) are NOT in this\n"
	    "-- dump: copy them to the target's blob directory yourself.\n"
	    "BEGIN;\n", out);
	sdb_put(out, sqlite3_mprintf(
	    "INSERT INTO sessions (id, created, masq_version, seed, threads, model_path, model_fp,"
	    " calib_path, calib_fp, settings, status, environment)\n"
	    "  VALUES (%lld, %Q, %Q, %lld, %d, %Q, %Q, %Q, %Q, %Q, %Q, %Q);\n",
	    (long long)s.id, s.created, s.masq_version, (long long)s.seed, s.threads, s.model_path,
	    s.model_fp, s.calib_path, s.calib_fp, s.settings, s.status, s.environment));

	st = sdb_prepare(db, "SELECT seq, kind, name, payload, created FROM events"
	    " WHERE session = ?1 ORDER BY seq", err);
	if (st == NULL) {
		sdb_session_free(&s);
		return -1;
	}
	sqlite3_bind_int64(st, 1, s.id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		sdb_put(out, sqlite3_mprintf(
		    "INSERT INTO events (session, seq, kind, name, payload, created) VALUES"
		    " (%lld, %lld, %Q, %Q, %Q, %Q);\n", (long long)s.id,
		    (long long)sqlite3_column_int64(st, 0),
		    (const char *)sqlite3_column_text(st, 1), (const char *)sqlite3_column_text(st, 2),
		    (const char *)sqlite3_column_text(st, 3), (const char *)sqlite3_column_text(st, 4)));
	if (rc != SQLITE_DONE) {
		sdb_fail(db->h, db->path, "cannot read the events", err);
		sqlite3_finalize(st);
		sdb_session_free(&s);
		return -1;
	}
	sqlite3_finalize(st);
	fputs("COMMIT;\n", out);
	if (fflush(out) != 0 || ferror(out)) {
		masq_err_set(err, MASQ_ERR_IO, "dump of session %" PRId64 ": write error: %s", s.id,
		    strerror(errno));
		sdb_session_free(&s);
		return -1;
	}
	sdb_session_free(&s);
	return 0;
}

/* ---- load: a dump is data ---------------------------------------------- */

/* The staging database's tables: the target's columns and checks, no
 * triggers, no views, nothing else to touch. */
static const char sdb_stage_schema[] =
	"CREATE TABLE sessions (\n"
	"	id INTEGER PRIMARY KEY, created TEXT NOT NULL, masq_version TEXT NOT NULL,\n"
	"	seed INTEGER NOT NULL, threads INTEGER NOT NULL, model_path TEXT, model_fp TEXT NOT NULL,\n"
	"	calib_path TEXT, calib_fp TEXT NOT NULL,\n"
	"	settings TEXT NOT NULL CHECK (json_valid(settings)),\n"
	"	status TEXT NOT NULL DEFAULT 'open',\n"
	"	environment TEXT CHECK (environment IS NULL OR json_valid(environment))) STRICT;\n"
	"CREATE TABLE events (\n"
	"	session INTEGER NOT NULL, seq INTEGER NOT NULL CHECK (seq > 0),\n"
	"	kind TEXT NOT NULL CHECK (kind IN ('command', 'result', 'error', 'note')),\n"
	"	name TEXT NOT NULL, payload TEXT NOT NULL CHECK (json_valid(payload)),\n"
	"	created TEXT NOT NULL, PRIMARY KEY (session, seq)) STRICT;\n";

struct sdb_stage_auth {
	int refused;		/* the authorizer said no */
	char why[160];		/* what it refused */
};

/* The staging connection's authorizer: INSERT into its two tables and
 * transaction control, nothing else (no reads of anything, no function but
 * the json_valid of the tables' checks, no schema change, no ATTACH, no
 * PRAGMA). */
static int
sdb_stage_authorize(void *ctx, int action, const char *a1, const char *a2, const char *dbname,
    const char *trigger)
{
	struct sdb_stage_auth *au = ctx;
	(void)a2;
	(void)trigger;
	switch (action) {
	case SQLITE_INSERT:
		if (dbname != NULL && strcmp(dbname, "main") == 0 && a1 != NULL &&
		    (strcmp(a1, "sessions") == 0 || strcmp(a1, "events") == 0))
			return SQLITE_OK;
		snprintf(au->why, sizeof au->why, "an INSERT into %s.%s", dbname ? dbname : "?", a1 ? a1 : "?");
		break;
	case SQLITE_TRANSACTION:
		if (a1 != NULL && (strcmp(a1, "BEGIN") == 0 || strcmp(a1, "COMMIT") == 0))
			return SQLITE_OK;
		snprintf(au->why, sizeof au->why, "%s", a1 ? a1 : "a transaction statement");
		break;
	case SQLITE_SELECT:
		return SQLITE_OK;	/* a VALUES list is compiled as a SELECT; reads are refused below */
	case SQLITE_FUNCTION:
		if (a2 != NULL && strcmp(a2, "json_valid") == 0)
			return SQLITE_OK;
		snprintf(au->why, sizeof au->why, "a call of %s()", a2 ? a2 : "a function");
		break;
	case SQLITE_READ:
		snprintf(au->why, sizeof au->why, "a read of %s.%s", a1 ? a1 : "?", a2 ? a2 : "?");
		break;
	case SQLITE_PRAGMA:
		snprintf(au->why, sizeof au->why, "PRAGMA %s", a1 ? a1 : "");
		break;
	case SQLITE_ATTACH:
	case SQLITE_DETACH:
		snprintf(au->why, sizeof au->why, "%s", action == SQLITE_ATTACH ? "ATTACH" : "DETACH");
		break;
	default:
		if (action == SQLITE_DELETE || action == SQLITE_UPDATE)
			snprintf(au->why, sizeof au->why, "%s", action == SQLITE_DELETE ? "a DELETE" : "an UPDATE");
		else if ((action >= SQLITE_CREATE_INDEX && action <= SQLITE_DROP_VIEW) || action == SQLITE_ALTER_TABLE ||
		    action == SQLITE_CREATE_VTABLE || action == SQLITE_DROP_VTABLE)
			snprintf(au->why, sizeof au->why, "a schema change");
		else
			snprintf(au->why, sizeof au->why, "this statement (SQLite authorizer action %d)", action);
		break;
	}
	au->refused = 1;
	return SQLITE_DENY;
}

/* The first keyword of statement text sql (after blanks and comments),
 * upper-cased into kw. */
static void
sdb_first_word(const char *sql, char *kw, size_t n)
{
	const char *p = sql;
	size_t k = 0;
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f')
			p++;
		if (p[0] == '-' && p[1] == '-') {
			while (*p && *p != '\n')
				p++;
		} else if (p[0] == '/' && p[1] == '*') {
			const char *e = strstr(p + 2, "*/");
			p = e ? e + 2 : p + strlen(p);
		} else {
			break;
		}
	}
	while (k + 1 < n && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
		kw[k++] = (char)(*p >= 'a' ? *p - 32 : *p), p++;
	kw[k] = '\0';
}

/* "statement N (line L): TEXT" for the statement sql[0..len) into buf, the
 * text cut at 100 characters, newlines as spaces. */
static void
sdb_stmt_name(char *buf, size_t n, int idx, const char *all, const char *sql, size_t len)
{
	int line = 1;
	for (const char *q = all; q < sql; q++)
		line += *q == '\n';
	while (len > 0 && (*sql == ' ' || *sql == '\n' || *sql == '\t' || *sql == '\r'))
		sql++, len--;
	/* skip leading comment lines so the statement itself is quoted */
	while (len > 1 && sql[0] == '-' && sql[1] == '-') {
		while (len > 0 && *sql != '\n')
			sql++, len--;
		while (len > 0 && (*sql == '\n' || *sql == ' ' || *sql == '\t' || *sql == '\r')) {
			line += *sql == '\n';
			sql++, len--;
		}
	}
	char text[104];
	size_t k = 0;
	for (size_t i = 0; i < len && k < 100; i++)
		text[k++] = sql[i] == '\n' || sql[i] == '\r' || sql[i] == '\t' ? ' ' : sql[i];
	text[k] = '\0';
	snprintf(buf, n, "statement %d (line %d): %s%s", idx, line, text, len > 100 ? "..." : "");
}

int
sdb_load(sdb *db, const char *sql, int64_t *new_id, masq_err *err)
{
	sqlite3 *h = NULL;
	sqlite3_stmt *st = NULL;
	struct sdb_stage_auth au = {0};
	const char *tail = sql;
	int idx = 0, rc = -1;
	char name[256];

	if (sqlite3_open_v2(":memory:", &h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK)
		fatal("cannot open an in-memory database: %s", h ? sqlite3_errmsg(h) : "out of memory");
	sqlite3_db_config(h, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
	sqlite3_db_config(h, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, NULL);
	if (sqlite3_exec(h, sdb_stage_schema, NULL, NULL, NULL) != SQLITE_OK) {
		masq_err_set(err, MASQ_ERR_INTERNAL, "cannot create the staging tables: %s", sqlite3_errmsg(h));
		goto out;
	}
	sqlite3_set_authorizer(h, sdb_stage_authorize, &au);
	while (*tail != '\0') {
		const char *next = NULL;
		char kw[16];
		au.refused = 0;
		/* the statement's first keyword before SQLite sees it: a dump is
		 * BEGIN, INSERT ..., COMMIT and nothing else */
		sdb_first_word(tail, kw, sizeof kw);
		if (kw[0] != '\0' && strcmp(kw, "INSERT") != 0 && strcmp(kw, "BEGIN") != 0 &&
		    strcmp(kw, "COMMIT") != 0 && strcmp(kw, "END") != 0) {
			const char *semi = strchr(tail, ';');
			idx++;
			sdb_stmt_name(name, sizeof name, idx, sql, tail, semi ? (size_t)(semi + 1 - tail) : strlen(tail));
			masq_err_set(err, MASQ_ERR_FORMAT, "the dump is not one session's rows: %s: %s is not allowed"
			    " (a dump holds BEGIN, INSERT INTO sessions, INSERT INTO events, COMMIT)", name, kw);
			goto out;
		}
		int prc = sqlite3_prepare_v2(h, tail, -1, &st, &next);
		if (next == NULL || next <= tail)
			next = tail + strlen(tail);
		if (prc != SQLITE_OK || st != NULL)
			idx++;
		sdb_stmt_name(name, sizeof name, idx, sql, tail, (size_t)(next - tail));
		if (prc != SQLITE_OK) {
			if (au.refused)
				masq_err_set(err, MASQ_ERR_FORMAT, "the dump is not one session's rows: %s: %s is not"
				    " allowed (a dump holds BEGIN, INSERT INTO sessions, INSERT INTO events, COMMIT)",
				    name, au.why);
			else
				masq_err_set(err, MASQ_ERR_FORMAT, "the dump does not parse: %s: %s", name,
				    sqlite3_errmsg(h));
			goto out;
		}
		if (st == NULL) {	/* blanks or comments only */
			tail = next;
			continue;
		}
		int src = sqlite3_step(st);
		while (src == SQLITE_ROW)
			src = sqlite3_step(st);
		if (src != SQLITE_DONE) {
			masq_err_set(err, MASQ_ERR_FORMAT, "the dump's rows are not what masq writes: %s: %s", name,
			    sqlite3_errmsg(h));
			goto out;
		}
		sqlite3_finalize(st);
		st = NULL;
		tail = next;
	}
	sqlite3_set_authorizer(h, NULL, NULL);
	if (!sqlite3_get_autocommit(h)) {
		masq_err_set(err, MASQ_ERR_FORMAT, "the dump ends inside a transaction (BEGIN without COMMIT):"
		    " it was cut short");
		goto out;
	}

	/* What the staging database now holds must be one session's rows. */
	{
		sqlite3_stmt *q;
		int64_t nsess = 0, sid = 0, nev = 0, other = 0, maxseq = 0, oid = 0;
		if (sqlite3_prepare_v2(h, "SELECT (SELECT count(*) FROM sessions), (SELECT max(id) FROM sessions),"
		    " (SELECT count(*) FROM events), (SELECT count(*) FROM events WHERE session IS NOT"
		    " (SELECT max(id) FROM sessions)), (SELECT coalesce(max(seq), 0) FROM events),"
		    " (SELECT session FROM events WHERE session IS NOT (SELECT max(id) FROM sessions) LIMIT 1)",
		    -1, &q, NULL) !=
		    SQLITE_OK || sqlite3_step(q) != SQLITE_ROW) {
			masq_err_set(err, MASQ_ERR_INTERNAL, "cannot read the staged rows: %s", sqlite3_errmsg(h));
			sqlite3_finalize(q);
			goto out;
		}
		nsess = sqlite3_column_int64(q, 0);
		sid = sqlite3_column_int64(q, 1);
		nev = sqlite3_column_int64(q, 2);
		other = sqlite3_column_int64(q, 3);
		maxseq = sqlite3_column_int64(q, 4);
		oid = sqlite3_column_int64(q, 5);
		sqlite3_finalize(q);
		if (nsess != 1) {
			masq_err_set(err, MASQ_ERR_FORMAT, "the dump holds %lld session rows; a dump is exactly one"
			    " session", (long long)nsess);
			goto out;
		}
		if (other > 0) {
			masq_err_set(err, MASQ_ERR_FORMAT, "the dump holds rows of two sessions: its session row is"
			    " session %lld, and %lld of its events belong to session %lld", (long long)sid,
			    (long long)other, (long long)oid);
			goto out;
		}
		if (maxseq != nev) {
			masq_err_set(err, MASQ_ERR_FORMAT, "the dump's events are not numbered 1 to %lld (the last is"
			    " %lld): events were left out", (long long)nev, (long long)maxseq);
			goto out;
		}
		/* the session row, checked like one read from a database */
		sdb_session row;
		if (sqlite3_prepare_v2(h, "SELECT " SDB_SESSION_COLS " FROM sessions", -1, &q, NULL) != SQLITE_OK ||
		    sqlite3_step(q) != SQLITE_ROW) {
			masq_err_set(err, MASQ_ERR_INTERNAL, "cannot read the staged session: %s", sqlite3_errmsg(h));
			sqlite3_finalize(q);
			goto out;
		}
		int r = sdb_session_row(q, "the dump", &row, err);
		sqlite3_finalize(q);
		if (r < 0)
			goto out;
		/* into the target, through the append-only path, all or nothing */
		int64_t id = 0;
		if (sdb_begin(db, err) < 0) {
			sdb_session_free(&row);
			goto out;
		}
		r = sdb_session_new(db, &row, &id, err);
		sdb_session_free(&row);
		if (r == 0 && sqlite3_prepare_v2(h, "SELECT kind, name, payload, created FROM events ORDER BY seq",
		    -1, &q, NULL) != SQLITE_OK)
			r = masq_err_set(err, MASQ_ERR_INTERNAL, "cannot read the staged events: %s", sqlite3_errmsg(h));
		else if (r == 0) {
			while (r == 0 && sqlite3_step(q) == SQLITE_ROW)
				r = sdb_event_insert(db, id, (const char *)sqlite3_column_text(q, 0),
				    (const char *)sqlite3_column_text(q, 1), (const char *)sqlite3_column_text(q, 2),
				    (const char *)sqlite3_column_text(q, 3), NULL, err);
			sqlite3_finalize(q);
		}
		if (r < 0) {
			db->in_tx = 0;
			sdb_rollback(db);
			goto out;
		}
		if (sdb_commit(db, err) < 0)
			goto out;
		if (new_id != NULL)
			*new_id = id;
	}
	rc = 0;
out:
	sqlite3_finalize(st);
	sqlite3_close(h);
	return rc;
}

/* Execute SQL text against db; on an error, a transaction the text began
 * is rolled back (unless inside sdb_begin). */
int
sdb_exec_sql(sdb *db, const char *sql, masq_err *err)
{
	char *msg = NULL;

	if (sqlite3_exec(db->h, sql, NULL, NULL, &msg) != SQLITE_OK) {
		int rc = sqlite3_errcode(db->h) & 0xff;
		masq_err_set(err, rc == SQLITE_IOERR || rc == SQLITE_FULL || rc == SQLITE_BUSY ||
		    rc == SQLITE_READONLY || rc == SQLITE_CANTOPEN ? MASQ_ERR_IO : MASQ_ERR_FORMAT,
		    "%s: %s", db->path, msg ? msg : sqlite3_errmsg(db->h));
		sqlite3_free(msg);
		if (!db->in_tx)
			sdb_rollback(db);
		return -1;
	}
	return 0;
}

/* 0 when PRAGMA integrity_check answers "ok"; -1 with MASQ_ERR_FORMAT
 * naming the first problem otherwise. */
int
sdb_integrity_ok(sdb *db, masq_err *err)
{
	return sdb_check(db, "PRAGMA integrity_check", "integrity_check: ", "", err);
}
