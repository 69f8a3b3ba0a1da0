/*
 * make_seeds.c: the seed corpora of the fuzz targets, made from the demo
 * (HACKING.md, Fuzzing).  Usage: make-seeds OUTDIR; writes OUTDIR/<target>/
 * for every target of fuzz/:
 *
 *   safetensors  the tiny demo's checkpoint and calibration set, a sharded
 *                "nano" demo's shards, and one blob of each kind a session
 *                writes (statistics, learned factors, plan, checkpoint)
 *   index        the nano demo as fuzz_index reads it (index + shards), in
 *                two shardings, and unsharded (no index)
 *   config       the demos' config.json
 *   calib        the demos' calibration sets
 *   plan         every plan blob the recipes' sessions wrote
 *   events       each recipe session's settings and events (fz_events_text),
 *                and the same with the results' bulky figures left out
 *   db           the recipes' masq.db, and each session alone in a database
 *                of its own (dumped and loaded, as masq sessions load does)
 *
 * The sessions are the recipes of recipes.c, recorded with relative paths
 * in a scratch directory, so the seeds are the same bytes from run to run
 * on a machine; fuzz_events and fuzz_db record the same recipes at start-up
 * and so hold every blob the seeds' events name.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "core/demo.h"
#include "fuzz/fuzz.h"
#include "sessions/db.h"
#include "sessions/session.h"

static char *out;	/* OUTDIR, absolute */

/* A new string: OUTDIR/target/name. */
static char *
seed_path(const char *target, const char *name)
{
	char *d = masq_path_join(out, target), *p = masq_path_join(d, name);
	free(d);
	return p;
}

static void
seed_copy(const char *target, const char *name, const char *src)
{
	char *p = seed_path(target, name);
	fz_copy(src, p);
	free(p);
}

/* The nano demo: one layer of width 16, sharded every shard_bytes. */
static void
nano_write(const char *dir, uint64_t shard_bytes)
{
	demo_preset p = {"nano", 16, 32, 1, 2, 1, 8, {1, 1, 2}, 32, 2, 48, shard_bytes};
	masq_err err = {0};
	if (demo_write(dir, &p, DEMO_DEFAULT_SEED, &err) < 0)
		fz_die("the nano demo: %s", err.msg);
}

/* A model directory as one fuzz_index input: the index (or nothing), then
 * "\n@@@ NAME\n" and the bytes of each safetensors file. */
static void
index_seed(const char *name, const char *mdir)
{
	char **names;
	masq_err err = {0};
	int n = masq_dir_list(mdir, &names, &err);
	char *p = seed_path("index", name);
	FILE *fp = fopen(p, "wb");
	size_t len;
	if (n < 0 || fp == NULL)
		fz_die("%s: %s", mdir, n < 0 ? err.msg : strerror(errno));
	char *ip = masq_path_join(mdir, "model.safetensors.index.json");
	if (access(ip, F_OK) == 0) {
		char *t = fz_read(ip, &len);
		fwrite(t, 1, len, fp);
		free(t);
	}
	free(ip);
	for (int i = 0; i < n; i++) {
		size_t l = strlen(names[i]);
		if (l <= 12 || strcmp(names[i] + l - 12, ".safetensors") != 0)
			continue;
		char *f = masq_path_join(mdir, names[i]);
		char *t = fz_read(f, &len);
		fprintf(fp, "\n@@@ %s\n", names[i]);
		fwrite(t, 1, len, fp);
		free(t);
		free(f);
	}
	if (fclose(fp) != 0)
		fz_die("%s: %s", p, strerror(errno));
	free(p);
	masq_dir_list_free(names, n);
}

/* The small shards of a sharded demo (a few tensors each) into safetensors/. */
static void
shard_seeds(const char *mdir)
{
	char **names;
	masq_err err = {0};
	int n = masq_dir_list(mdir, &names, &err);
	if (n < 0)
		fz_die("%s", err.msg);
	for (int i = 0; i < n; i++) {
		size_t l = strlen(names[i]), len;
		if (l <= 12 || strcmp(names[i] + l - 12, ".safetensors") != 0)
			continue;
		char *f = masq_path_join(mdir, names[i]), name[160];
		free(fz_read(f, &len));
		snprintf(name, sizeof name, "nano-%s", names[i]);
		if (len <= 8192)
			seed_copy("safetensors", name, f);
		free(f);
	}
	masq_dir_list_free(names, n);
}

/* The events of session sid with their results' bulky figures left out
 * (the misalignment, the per-linear rows, the curves): what restore reads,
 * in a tenth of the bytes, so that more of libFuzzer's mutations land on
 * it. */
static char *
events_compact(const char *db_path, int64_t sid)
{
	static const char *const bulky[] = {"misalignment", "linears", "curves", "budget_curve", "per_layer"};
	char *full = fz_events_text(db_path, sid), *line, *save = NULL;
	size_t cap = strlen(full) + 1, n = 0;
	char *buf = xmalloc(cap);
	buf[0] = '\0';
	for (line = strtok_r(full, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		char *tab2 = strchr(line, '\t') ? strchr(strchr(line, '\t') + 1, '\t') : NULL;
		json_t *j = NULL;
		if (tab2 != NULL && strncmp(line, "result\t", 7) == 0 && (j = json_loads(tab2 + 1, 0, NULL)) != NULL) {
			for (size_t k = 0; k < sizeof bulky / sizeof bulky[0]; k++)
				json_object_del(j, bulky[k]);
			char *t = sess_json_text(j);
			*tab2 = '\0';
			n += (size_t)snprintf(buf + n, cap - n, "%s\t%s\n", line, t);
			free(t);
			json_decref(j);
		} else {
			n += (size_t)snprintf(buf + n, cap - n, "%s\n", line);
		}
	}
	free(full);
	return buf;
}

/* The blobs the sessions' results name, by kind. */
struct blobs {
	const char *recipe;
	int have[4];	/* one of each kind into safetensors/ */
	json_t *seen;	/* sha -> true */
};

static int
blob_event(void *ctx, const sdb_event *e)
{
	static const char *const kinds[4] = {"stats", "factors", "plan", "checkpoint"};
	struct blobs *b = ctx;
	if (strcmp(e->kind, "result") != 0)
		return 0;
	json_t *j = json_loads(e->payload, 0, NULL);
	for (int k = 0; k < 4; k++) {
		const char *sha = json_string_value(json_object_get(j, kinds[k]));
		if (sha == NULL || json_object_get(b->seen, sha) != NULL)
			continue;
		json_object_set_new(b->seen, sha, json_true());
		char name[160], *src = masq_path_join("masq.db.blobs", sha);
		snprintf(name, sizeof name, "%s-%s-layer%lld.safetensors", kinds[k], b->recipe,
		    (long long)json_integer_value(json_object_get(j, "layer")));
		if (k == 2)
			seed_copy("plan", name, src);
		if (!b->have[k]++)
			seed_copy("safetensors", name, src);
		free(src);
	}
	json_decref(j);
	return 0;
}

int
main(int argc, char **argv)
{
	static const char *const targets[] = {"safetensors", "index", "config", "calib", "plan", "events", "db"};
	masq_err err = {0};
	demo_preset pr;

	if (argc != 2) {
		fprintf(stderr, "usage: make-seeds OUTDIR\n");
		return 2;
	}
	if (masq_mkdir_p(argv[1], &err) < 0 || (out = realpath(argv[1], NULL)) == NULL)
		fz_die("%s: %s", argv[1], err.msg[0] ? err.msg : strerror(errno));
	for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
		char *d = masq_path_join(out, targets[t]);
		fz_rm_rf(d);
		if (masq_mkdir_p(d, &err) < 0)
			fz_die("%s", err.msg);
		free(d);
	}
	fz_init();
	if (chdir(fz_dir()) != 0)
		fz_die("%s: %s", fz_dir(), strerror(errno));

	/* the demos' files */
	if (demo_preset_get("tiny", &pr) < 0 || demo_write("demo", &pr, DEMO_DEFAULT_SEED, &err) < 0)
		fz_die("the tiny demo: %s", err.msg);
	nano_write("nano", 0);
	nano_write("nano-sharded", 2048);
	nano_write("nano-sharded-2", 6144);
	seed_copy("safetensors", "tiny-model.safetensors", "demo/model/model.safetensors");
	seed_copy("safetensors", "tiny-calib.safetensors", "demo/calib.safetensors");
	seed_copy("safetensors", "nano-model.safetensors", "nano/model/model.safetensors");
	seed_copy("safetensors", "nano-calib.safetensors", "nano/calib.safetensors");
	shard_seeds("nano-sharded-2/model");
	seed_copy("config", "tiny-config.json", "demo/model/config.json");
	seed_copy("config", "nano-config.json", "nano/model/config.json");
	seed_copy("calib", "tiny-calib.safetensors", "demo/calib.safetensors");
	seed_copy("calib", "nano-calib.safetensors", "nano/calib.safetensors");
	index_seed("nano-sharded", "nano-sharded/model");
	index_seed("nano-sharded-2", "nano-sharded-2/model");
	index_seed("nano-unsharded", "nano/model");

	/* the recipes' sessions, their blobs, events and databases */
	fz_recipes_record("masq.db", "demo/model", "demo/calib.safetensors");
	seed_copy("db", "recipes.db", "masq.db");
	sdb *db;
	if (sdb_open(&db, "masq.db", 0, &err) < 0)
		fz_die("%s", err.msg);
	struct blobs b = {0};
	b.seen = json_object();
	for (int r = 0; r < FZ_RECIPES; r++) {
		char name[128];
		b.recipe = fz_recipe_names[r];
		if (sdb_event_each(db, r + 1, blob_event, &b, &err) < 0)
			fz_die("%s", err.msg);
		char *ev = fz_events_text("masq.db", r + 1);
		snprintf(name, sizeof name, "%s.txt", fz_recipe_names[r]);
		char *p = seed_path("events", name);
		fz_write(p, ev, strlen(ev));
		free(p);
		free(ev);
		ev = events_compact("masq.db", r + 1);
		snprintf(name, sizeof name, "%s-compact.txt", fz_recipe_names[r]);
		p = seed_path("events", name);
		fz_write(p, ev, strlen(ev));
		free(p);
		free(ev);
		/* the session alone, through a dump */
		char *text = NULL;
		size_t len;
		FILE *fp = open_memstream(&text, &len);
		if (fp == NULL || sdb_dump(db, r + 1, fp, &err) < 0)
			fz_die("dump: %s", err.msg);
		fclose(fp);
		sdb *one;
		int64_t nid;
		unlink("one.db");
		if (sdb_open(&one, "one.db", SDB_CREATE, &err) < 0 || sdb_load(one, text, &nid, &err) < 0)
			fz_die("load: %s", err.msg);
		sdb_close(one);
		free(text);
		snprintf(name, sizeof name, "%s.db", fz_recipe_names[r]);
		seed_copy("db", name, "one.db");
		unlink("one.db");
	}
	json_decref(b.seen);
	sdb_close(db);
	printf("make-seeds: wrote the seeds of 7 targets into %s\n", out);
	free(out);
	return 0;
}
