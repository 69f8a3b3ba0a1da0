/*
 * fuzz_db.c: the session database file itself, read as the CLI reads it
 * (src/cmd_session.c), through the library: sdb_open, then masq sessions
 * list (every session row and its events, the settings and the finish and
 * export results parsed), for each of the first FZ_MAX_SESSIONS sessions
 * sessions show (the row, its environment and settings parsed, every
 * event's payload parsed), sessions dump (into memory, then loaded into an
 * empty database as masq sessions load does), and a restore as replay,
 * resume, export and sessions diff start (sess_attach with the tiny demo's
 * paths, sess_restore).
 *
 * The input is the database file.  Its blob directory holds the blobs of
 * the recipes (recipes.c), recorded at start-up: the seeds are databases
 * of those recipes (make_seeds.c), so their events find their blobs.
 */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "core/engine.h"
#include "fuzz/fuzz.h"
#include "sessions/db.h"
#include "sessions/session.h"

#define FZ_MAX_SESSIONS 8

static char *db_path, *blob_dir, *load_path;
static char **keep;		/* the recipes' blobs, sorted */
static int n_keep;
static void *empty_db;		/* an empty session database (for the loads) */
static size_t empty_size;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max, unsigned int seed);

/* Mutations that know the input's structure, mixed with libFuzzer's own
 * (mutate.c). */
size_t
LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max, unsigned int seed)
{
	return fz_db_mutate(data, size, max, seed);
}

static void
db_unlink(const char *path)
{
	static const char *const sfx[] = {"", "-wal", "-shm", "-journal"};
	for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
		char *p = xmalloc(strlen(path) + 16);
		strcpy(p, path);
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
	free(empty_db);
	free(db_path);
	free(blob_dir);
	free(load_path);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	masq_err err = {0};
	sdb *db;
	(void)argc;
	(void)argv;

	fz_init();
	db_path = fz_path("work.db");
	blob_dir = fz_path("work.db.blobs");
	load_path = fz_path("load.db");
	fz_recipes_record(db_path, fz_demo_model(), fz_demo_calib());
	db_unlink(db_path);
	if ((n_keep = masq_dir_list(blob_dir, &keep, &err)) < 0)
		fz_die("%s", err.msg);
	if (sdb_open(&db, load_path, SDB_CREATE, &err) < 0)
		fz_die("%s", err.msg);
	sdb_close(db);
	empty_db = fz_read(load_path, &empty_size);
	db_unlink(load_path);
	atexit(done);
	return 0;
}

/* ---- sessions list ---------------------------------------------------------- */

struct list_ctx {
	sdb *db;
	json_t *arr;		/* the --json document */
	int64_t ids[FZ_MAX_SESSIONS];
	int n;
	masq_err *err;
};

struct ends {
	double sqnr[MOD_COUNT];
	double export_bytes;
};

static int
ends_event(void *ctx, const sdb_event *e)
{
	struct ends *x = ctx;
	if (strcmp(e->kind, "result") != 0)
		return 0;
	if (strcmp(e->name, "finish") == 0 || strcmp(e->name, "export") == 0) {
		json_t *j = json_loads(e->payload, 0, NULL);
		if (strcmp(e->name, "finish") == 0) {
			json_t *sq = json_object_get(j, "sqnr_db");
			for (int m = 0; m < MOD_COUNT; m++) {
				json_t *v = json_object_get(sq, modality_name(m));
				x->sqnr[m] = json_is_number(v) ? json_number_value(v) : NAN;
			}
		} else {
			json_t *v = json_object_get(json_object_get(j, "bytes"), "tensors");
			if (json_is_number(v))
				x->export_bytes = json_number_value(v);
		}
		json_decref(j);
	}
	return 0;
}

static int
list_one(void *ctx, const sdb_session *s)
{
	struct list_ctx *lc = ctx;
	struct ends x = {{NAN, NAN, NAN}, NAN};
	char line[512];
	if (sdb_event_each(lc->db, s->id, ends_event, &x, lc->err) < 0)
		return masq_err_prefix(lc->err, "session %lld", (long long)s->id);
	json_t *st = json_loads(s->settings, 0, NULL);
	json_t *j = json_object(), *sq = json_object();
	json_object_set_new(j, "id", json_integer(s->id));
	json_object_set_new(j, "created", json_string(s->created));
	json_object_set_new(j, "status", json_string(s->status));
	json_object_set_new(j, "model", json_string(s->model_path ? s->model_path : ""));
	json_object_set_new(j, "calib", json_string(s->calib_path ? s->calib_path : ""));
	json_object_set_new(j, "settings", st ? json_incref(st) : json_null());
	for (int m = 0; m < MOD_COUNT; m++)
		json_object_set_new(sq, modality_name(m), isfinite(x.sqnr[m]) ? json_real(x.sqnr[m]) : json_null());
	json_object_set_new(j, "sqnr_db", sq);
	json_object_set_new(j, "export_bytes", isfinite(x.export_bytes) ? json_integer((json_int_t)x.export_bytes) :
	    json_null());
	json_array_append_new(lc->arr, j);
	const char *method = json_string_value(json_object_get(st, "method"));
	snprintf(line, sizeof line, "%-5lld %-24s %-9s %-8s W%lldA%-3lld %s", (long long)s->id, s->created, s->status,
	    method ? method : "?", (long long)json_integer_value(json_object_get(st, "wbits")),
	    (long long)json_integer_value(json_object_get(st, "abits")), s->model_path ? s->model_path : "");
	json_decref(st);
	if (lc->n < FZ_MAX_SESSIONS)
		lc->ids[lc->n++] = s->id;
	return 0;
}

/* ---- sessions show ---------------------------------------------------------- */

static int
show_event(void *ctx, const sdb_event *e)
{
	json_t *arr = ctx;
	char line[256];
	json_t *p = json_loads(e->payload, 0, NULL);
	snprintf(line, sizeof line, "%5lld  %-7s %-15s %.96s", (long long)e->seq, e->kind, e->name, e->payload);
	json_array_append_new(arr, json_pack("{s:I, s:s, s:s, s:o, s:s}", "seq", (json_int_t)e->seq, "kind", e->kind,
	    "name", e->name, "payload", p ? p : json_string(e->payload), "created", e->created));
	return 0;
}

static void
show_environment(const sdb_session *s)
{
	json_t *env = s->environment ? json_loads(s->environment, 0, NULL) : NULL;
	char line[1024];
	size_t i;
	json_t *f;
	if (env == NULL)
		return;
	json_t *b = json_object_get(env, "build"), *bl = json_object_get(env, "blas"), *cpu = json_object_get(env, "cpu");
	snprintf(line, sizeof line, "masq %s, built by %s (%s; %s; sanitizers: %s) %s", json_string_value(json_object_get(env,
	    "masq")), json_string_value(json_object_get(b, "compiler")), json_string_value(json_object_get(b, "isa")),
	    json_string_value(json_object_get(b, "fp")), json_string_value(json_object_get(b, "sanitizers")),
	    json_string_value(json_object_get(env, "libc")));
	snprintf(line, sizeof line, "BLAS: %s, kernels %s, %s, %lld threads%s%s", json_string_value(json_object_get(bl,
	    "config")), json_string_value(json_object_get(bl, "corename")),
	    json_string_value(json_object_get(bl, "parallel")) ? json_string_value(json_object_get(bl, "parallel")) : "?",
	    (long long)json_integer_value(json_object_get(bl, "threads")),
	    json_is_string(json_object_get(bl, "coretype_env")) ? ", OPENBLAS_CORETYPE=" : "",
	    json_is_string(json_object_get(bl, "coretype_env")) ? json_string_value(json_object_get(bl, "coretype_env")) : "");
	snprintf(line, sizeof line, "CPU: %s, %s", json_string_value(json_object_get(cpu, "vendor")),
	    json_string_value(json_object_get(cpu, "model")));
	json_array_foreach(json_object_get(cpu, "features"), i, f)
		snprintf(line, sizeof line, " %s", json_string_value(f));
	snprintf(line, sizeof line, "probe %s", json_string_value(json_object_get(env, "probe")));
	json_decref(env);
}

static void
show(sdb *db, int64_t id)
{
	masq_err err = {0};
	sdb_session s;
	if (sdb_session_get(db, id, &s, &err) < 0) {
		fz_note("sdb_session_get", &err);
		return;
	}
	json_t *d = json_pack("{s:I, s:s, s:s, s:s, s:I, s:i, s:s?, s:s, s:s?, s:s}", "id", (json_int_t)s.id,
	    "created", s.created, "status", s.status, "masq_version", s.masq_version, "seed", (json_int_t)s.seed,
	    "threads", s.threads, "model", s.model_path, "model_fp", s.model_fp, "calib", s.calib_path, "calib_fp",
	    s.calib_fp);
	json_object_set_new(d, "settings", json_loads(s.settings, 0, NULL));
	json_t *env = s.environment ? json_loads(s.environment, 0, NULL) : NULL;
	json_object_set_new(d, "environment", env ? env : json_null());
	json_t *evs = json_array();
	(void)sdb_event_each(db, s.id, show_event, evs, &err);
	json_object_set_new(d, "events", evs);
	char *text = json_dumps(d, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	free(text);
	json_decref(d);
	show_environment(&s);
	sdb_session_free(&s);
}

/* ---- sessions dump, and load ---------------------------------------------------- */

static void
dump_load(sdb *db, int64_t id)
{
	masq_err err = {0};
	char *text = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&text, &len);
	if (fp == NULL)
		fz_die("open_memstream");
	int rc = sdb_dump(db, id, fp, &err);
	fclose(fp);
	if (rc < 0)
		fz_note("sdb_dump", &err);
	if (rc == 0 && strlen(text) == len) {
		sdb *to;
		int64_t nid;
		fz_write(load_path, empty_db, empty_size);
		if (sdb_open(&to, load_path, 0, &err) < 0)
			fz_die("the empty database does not open: %s", err.msg);
		if (sdb_load(to, text, &nid, &err) < 0)
			fz_note("sdb_load", &err);
		sdb_close(to);
		db_unlink(load_path);
	}
	free(text);
}

/* ---- restore ---------------------------------------------------------------- */

static void
restore(sdb *db, int64_t id)
{
	masq_err err = {0};
	sess *s;
	int finished;
	if (sess_attach(&s, db, id, fz_demo_model(), fz_demo_calib(), 0, &err) < 0) {
		fz_note("sess_attach", &err);
		return;
	}
	if (sess_restore(s, &finished, &err) < 0)
		fz_note("sess_restore", &err);
	sess_free(s);
}

/* Remove what the input left: its database, and blobs that are not the
 * recipes'. */
static void
clean(void)
{
	char **names;
	int n;
	db_unlink(db_path);
	db_unlink(load_path);
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

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	masq_err err = {0};
	sdb *db;

	fz_write(db_path, data, size);
	if (sdb_open(&db, db_path, 0, &err) == 0) {
		struct list_ctx lc = {db, json_array(), {0}, 0, &err};
		int rc = sdb_session_each(db, list_one, &lc, &err);
		if (rc < 0)
			fz_note("sdb_session_each", &err);
		char *text = json_dumps(lc.arr, JSON_INDENT(2));
		free(text);
		json_decref(lc.arr);
		/* list stops at the first bad row; show and friends take ids
		 * from the command line: the listed ones, and the most recent */
		if ((rc < 0 || lc.n == 0) && lc.n < FZ_MAX_SESSIONS)
			lc.ids[lc.n++] = 0;
		for (int i = 0; i < lc.n; i++) {
			show(db, lc.ids[i]);
			dump_load(db, lc.ids[i]);
			restore(db, lc.ids[i]);
		}
		sdb_close(db);
	} else {
		fz_note("sdb_open", &err);
		if (err.msg[0] == '\0')
			fz_die("sdb_open failed without a message");
	}
	clean();
	/* what a session's row asked of OpenBLAS stays with the session */
	masq_blas_set_threads(1);
	return 0;
}
