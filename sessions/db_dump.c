/*
 * db_dump.c: a session as SQL text, and a dump read back as data: one
 * session's rows through a sandboxed staging database, then the append-only
 * path.
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
