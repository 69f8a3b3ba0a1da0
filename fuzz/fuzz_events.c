/*
 * fuzz_events.c: a session's recorded events, read back through restore
 * and one step of resume (sess_attach, sess_restore, sess_run_to;
 * sessions/session.h), as masq resume reads them.
 *
 * At start-up the recipes (recipes.c) are recorded on the tiny demo into
 * this process's database, which leaves their blobs (statistics, factors,
 * plans, checkpoints) in its blob directory; then the database itself is
 * replaced by a template holding one session row of the same model and
 * calibration set, and no events.  Each input becomes that session's
 * events, one line each:
 *
 *	settings<TAB>{"method": "rtn", ...}       (optional, first line: the row's settings)
 *	KIND<TAB>NAME<TAB>PAYLOAD
 *	...
 *
 * (fields missing from a line are empty; empty lines are skipped; the
 * seeds are the recipes' own events, fz_events_text).  The template's
 * tables have no CHECK constraints, as a hostile file's need not: its
 * rows can hold a payload that is not JSON, a kind masq never writes,
 * settings that are not JSON, and PRAGMA quick_check still passes.  Then the session is attached with
 * the demo's paths, restored, and, when it has not finished, resumed by
 * one command of the recipe (or finish, past the last layer).  Blobs the
 * step writes are removed again, so no input sees another's files.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "core/engine.h"
#include "fuzz/fuzz.h"
#include "sessions/db.h"
#include "sessions/session.h"

#define FZ_MAX_EVENTS 4096

static char *db_path, *blob_dir;
static char **keep;		/* the recipes' blobs, sorted */
static int n_keep;
static void *tmpl;		/* the template database file */
static size_t tmpl_size;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max, unsigned int seed);

/* Mutations that know the input's structure, mixed with libFuzzer's own
 * (mutate.c). */
size_t
LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max, unsigned int seed)
{
	return fz_events_mutate(data, size, max, seed);
}

static void
db_unlink(void)
{
	static const char *const sfx[] = {"", "-wal", "-shm", "-journal"};
	for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
		char *p = xmalloc(strlen(db_path) + 16);
		strcpy(p, db_path);
		strcat(p, sfx[i]);
		unlink(p);
		free(p);
	}
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
done(void)
{
	masq_dir_list_free(keep, n_keep);
	keep = NULL;
	free(tmpl);
	free(db_path);
	free(blob_dir);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	masq_err err = {0};
	sdb *db;
	sdb_session row;
	(void)argc;
	(void)argv;

	fz_init();
	db_path = fz_path("work.db");
	blob_dir = fz_path("work.db.blobs");
	fz_recipes_record(db_path, fz_demo_model(), fz_demo_calib());
	if ((n_keep = masq_dir_list(blob_dir, &keep, &err)) < 0)
		fz_die("%s", err.msg);
	/* the template: the first recipe's row, without its events */
	if (sdb_open(&db, db_path, 0, &err) < 0 || sdb_session_get(db, 1, &row, &err) < 0)
		fz_die("%s", err.msg);
	sdb_close(db);
	db_unlink();
	char *t = fz_path("template.db");
	if (sdb_open(&db, t, SDB_CREATE, &err) < 0 || sdb_session_new(db, &row, NULL, &err) < 0)
		fz_die("%s", err.msg);
	sdb_close(db);
	sdb_session_free(&row);
	/* what a hostile file can hold: the same tables without their CHECK
	 * constraints (PRAGMA quick_check would refuse rows that break them) */
	sqlite3 *h;
	if (sqlite3_open_v2(t, &h, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
	    sqlite3_exec(h, "PRAGMA writable_schema = ON;"
	    " UPDATE sqlite_schema SET sql = replace(sql, ' CHECK (json_valid(settings))', '') WHERE name = 'sessions';"
	    " UPDATE sqlite_schema SET sql = replace(replace(replace(sql, ' CHECK (seq > 0)', ''),"
	    "   ' CHECK (kind IN (''command'', ''result'', ''error'', ''note''))', ''),"
	    "   ' CHECK (json_valid(payload))', '') WHERE name = 'events';"
	    " PRAGMA writable_schema = OFF;", NULL, NULL, NULL) != SQLITE_OK)
		fz_die("%s: %s", t, sqlite3_errmsg(h));
	sqlite3_close(h);
	if (sqlite3_open_v2(t, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
		fz_die("%s: %s", t, sqlite3_errmsg(h));
	sqlite3_stmt *q;
	if (sqlite3_prepare_v2(h, "SELECT count(*) FROM sqlite_schema WHERE"
	    " (name = 'events' AND sql LIKE '%CHECK%') OR (name = 'sessions' AND sql LIKE '%json_valid(settings)%')", -1, &q, NULL) != SQLITE_OK ||
	    sqlite3_step(q) != SQLITE_ROW || sqlite3_column_int(q, 0) != 0)
		fz_die("%s: the CHECK constraints are still there", t);
	sqlite3_finalize(q);
	sqlite3_close(h);
	tmpl = fz_read(t, &tmpl_size);
	unlink(t);
	free(t);
	atexit(done);
	return 0;
}

/* Remove what the input left: the database, and blobs that are not the
 * recipes'. */
static void
clean(void)
{
	char **names;
	int n;
	db_unlink();
	if ((n = masq_dir_list(blob_dir, &names, NULL)) < 0)
		return;
	for (int i = 0; i < n; i++)
		if (bsearch(&names[i], keep, (size_t)n_keep, sizeof *keep, cmp_str) == NULL) {
			char *p = masq_path_join(blob_dir, names[i]);
			fz_rm_rf(p);
			free(p);
		}
	masq_dir_list_free(names, n);
}

/* The next field of the line [*p, end): up to a tab (the last field: to
 * the end) . */
static void
field(const uint8_t **p, const uint8_t *end, int last, const uint8_t **f, int *n)
{
	const uint8_t *t = last ? NULL : memchr(*p, '\t', (size_t)(end - *p));
	*f = *p;
	*n = (int)((t ? t : end) - *p);
	*p = t ? t + 1 : end;
}

/* Write the input's rows into the template's session. */
static void
write_rows(const uint8_t *data, size_t size)
{
	sqlite3 *h;
	sqlite3_stmt *ins, *set;
	const uint8_t *p = data, *end = data + size;
	int64_t seq = 0;

	fz_write(db_path, tmpl, tmpl_size);
	if (sqlite3_open_v2(db_path, &h, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
	    sqlite3_exec(h, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(h, "INSERT INTO events (session, seq, kind, name, payload, created)"
	    " VALUES (1, ?1, ?2, ?3, ?4, '2026-03-05T00:00:00.000Z')", -1, &ins, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(h, "UPDATE sessions SET settings = ?1 WHERE id = 1", -1, &set, NULL) != SQLITE_OK)
		fz_die("%s: %s", db_path, sqlite3_errmsg(h));
	while (p < end && seq < FZ_MAX_EVENTS) {
		const uint8_t *nl = memchr(p, '\n', (size_t)(end - p)), *le = nl ? nl : end;
		const uint8_t *k, *nm, *pl;
		int kn, nn, pn;
		if (le == p) {
			p = le + 1;
			continue;
		}
		field(&p, le, 0, &k, &kn);
		if (k == data && kn == 8 && memcmp(k, "settings", 8) == 0) {
			field(&p, le, 1, &pl, &pn);
			sqlite3_bind_text(set, 1, (const char *)pl, pn, SQLITE_TRANSIENT);
			if (sqlite3_step(set) != SQLITE_DONE)
				fz_die("%s: settings: %s", db_path, sqlite3_errmsg(h));
			sqlite3_reset(set);
		} else {
			field(&p, le, 0, &nm, &nn);
			field(&p, le, 1, &pl, &pn);
			sqlite3_bind_int64(ins, 1, ++seq);
			sqlite3_bind_text(ins, 2, (const char *)k, kn, SQLITE_TRANSIENT);
			sqlite3_bind_text(ins, 3, (const char *)nm, nn, SQLITE_TRANSIENT);
			sqlite3_bind_text(ins, 4, (const char *)pl, pn, SQLITE_TRANSIENT);
			if (sqlite3_step(ins) != SQLITE_DONE)
				fz_die("%s: event %lld: %s", db_path, (long long)seq, sqlite3_errmsg(h));
			sqlite3_reset(ins);
		}
		p = le + 1;
	}
	sqlite3_finalize(ins);
	sqlite3_finalize(set);
	if (sqlite3_exec(h, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		fz_die("%s: commit: %s", db_path, sqlite3_errmsg(h));
	sqlite3_close(h);
}

/* sess_run_to's hook: one command, then stop. */
static int
one_step(void *ctx, const sess_progress *p)
{
	int *n = ctx;
	return p->phase == SP_BEFORE && (*n)++ >= 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	masq_err err = {0};
	sdb *db;
	sess *s;
	int finished;

	write_rows(data, size);
	if (sdb_open(&db, db_path, 0, &err) < 0)
		fz_die("the template database does not open: %s", err.msg);
	if (sess_attach(&s, db, 1, fz_demo_model(), fz_demo_calib(), 1, &err) == 0) {
		int cursor = sess_restore(s, &finished, &err);
		if (cursor < 0) {
			fz_note("sess_restore", &err);
		} else if (!finished) {
			const sess_view *v = sess_view_get(s);
			int n = 0;
			if (cursor < v->n_layers) {
				if (sess_run_to(s, v->n_layers, one_step, &n, &err) < 0)
					fz_note("resume", &err);
			} else if (sess_dispatch(s, SC_FINISH, NULL, NULL, &err) < 0) {
				fz_note("finish", &err);
			}
		}
		sess_free(s);
	} else {
		fz_note("sess_attach", &err);
	}
	sdb_close(db);
	clean();
	/* what a session's row asked of OpenBLAS stays with the session */
	masq_blas_set_threads(1);
	return 0;
}
