/*
 * db.c: opening a session database: the checks before SQLite sees the
 * file, the schema and its migrations, the pragmas.
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
int
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
sqlite3_stmt *
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
int
sdb_exec(sdb *db, const char *sql, const char *what, masq_err *err)
{
	if (sqlite3_exec(db->h, sql, NULL, NULL, NULL) != SQLITE_OK)
		return sdb_fail(db->h, db->path, what, err);
	return 0;
}

/* Roll back the transaction in progress, if any (errors ignored: the
 * first error is the one reported). */
void
sdb_rollback(sdb *db)
{
	if (!sqlite3_get_autocommit(db->h))
		sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
}

/* *out gets the first column of the first row of sql (0 when no row). */
int
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
int
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

	if ((fd = masq_open_regular(path, err)) < 0)
		return -1;
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
	/* The row comes before the switch commits: on a new database the
	 * commit (a rollback journal's writes and syncs) happens when the
	 * statement completes, and a failed one leaves the file as it was. */
	else if (sqlite3_step(st) != SQLITE_DONE) {
		sdb_fail(db->h, db->path, "cannot switch to WAL mode", err);
		ok = 0;
	}
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

/* ---- raw SQL, integrity ---------------------------------------------------- */

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
