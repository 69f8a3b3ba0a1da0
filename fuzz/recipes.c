/*
 * recipes.c: the recorded sessions the session targets start from
 * (fuzz.h).  Each recipe is a different walk through the command table on
 * the tiny demo: finished and interrupted sessions, a search, learning,
 * every settings command and undo, a rank budget, a held-out split, a
 * recorded error, an export and a note.  Everything is deterministic (one
 * BLAS thread, fixed seeds), so the seed writer and every harness record
 * the same blobs.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz/fuzz.h"
#include "sessions/db.h"
#include "sessions/session.h"

const char *const fz_recipe_names[FZ_RECIPES] = {
	"rtn-export", "sq-search-interrupted", "mas-learn", "mas-cmc-settings-interrupted", "mas-cmc-budget",
	"usq-split-error",
};

/* Run command id with args (a json_pack format and its values, or NULL). */
static void
cmd(sess *s, int id, json_t *args, int may_fail)
{
	masq_err err = {0};
	int rc = sess_dispatch(s, id, args, NULL, &err);
	json_decref(args);
	if (rc < 0 && !may_fail)
		fz_die("recipe: %s: %s", sess_cmds[id].name, err.msg);
}

static void
run_to(sess *s, int until)
{
	masq_err err = {0};
	if (sess_run_to(s, until, NULL, NULL, &err) < 0)
		fz_die("recipe: run to layer %d: %s", until, err.msg);
}

static void
recipe(sdb *db, int r, const char *model_dir, const char *calib_path)
{
	masq_err err = {0};
	pipe_opts o;
	sess *s;

	pipe_opts_default(&o);
	o.epochs = 0;
	switch (r) {
	case 0: o.method = METHOD_RTN; o.wbits = 8; o.abits = 8; break;
	case 1: o.method = METHOD_SQ; o.wbits = 8; o.abits = 8; o.search = 1; o.alpha_lo = 0.3f;
		o.alpha_hi = 0.7f; o.alpha_step = 0.2f; break;
	case 2: o.method = METHOD_MAS; o.epochs = 1; break;
	case 3: o.method = METHOD_MAS_CMC; o.rank = 2; break;
	case 4: o.method = METHOD_MAS_CMC; o.cmc_dtype = ST_F32; break;
	case 5: o.method = METHOD_USQ; o.epochs = 1; o.eval_split = 0.25; o.wgroup = 32; break;
	}
	if (sess_create(&s, db, &o, model_dir, calib_path, 1, &err) < 0)
		fz_die("recipe %s: %s", fz_recipe_names[r], err.msg);
	json_t *oa = json_pack("{s:s, s:s}", "model", model_dir, "calib", calib_path);
	cmd(s, SC_OPEN, oa, 0);
	int n = sess_view_get(s)->n_layers;
	switch (r) {
	case 0:
		cmd(s, SC_NOTE, json_pack("{s:s}", "text", "rtn at W8A8, then a fake export"), 0);
		run_to(s, n);
		cmd(s, SC_FINISH, NULL, 0);
		{
			char *out = fz_path("recipe-export");
			fz_rm_rf(out);
			cmd(s, SC_EXPORT, json_pack("{s:s, s:s}", "format", "fake", "out", out), 0);
			fz_rm_rf(out);
			free(out);
		}
		break;
	case 1:
		run_to(s, 1);
		cmd(s, SC_CALIBRATE, json_pack("{s:i}", "layer", 1), 0);
		break;
	case 2:
		run_to(s, n);
		cmd(s, SC_FINISH, NULL, 0);
		break;
	case 3:
		cmd(s, SC_SET_METHOD, json_pack("{s:s, s:s}", "layer", "1", "method", "mas"), 0);
		cmd(s, SC_SET_ALPHA, json_pack("{s:s, s:s, s:s, s:f}", "layer", "0", "linear", "qkv", "modality", "vision",
		    "value", 0.3), 0);
		cmd(s, SC_SET_RANK, json_pack("{s:s, s:s, s:f}", "layer", "*", "linear", "gateup", "value", 4.0), 0);
		cmd(s, SC_SET, json_pack("{s:s}", "assignment", "1.o.alpha.audio=0.6"), 0);
		cmd(s, SC_UNDO, NULL, 0);
		cmd(s, SC_SET_BITS, json_pack("{s:i, s:i}", "wbits", 4, "abits", 6), 0);
		run_to(s, 1);
		cmd(s, SC_CALIBRATE, json_pack("{s:i}", "layer", 1), 0);
		cmd(s, SC_QUANTIZE, json_pack("{s:i}", "layer", 1), 0);
		cmd(s, SC_SET, json_pack("{s:s}", "assignment", "1.gate.alpha=0.4"), 0);	/* layer 1 is stale */
		break;
	case 4:
		cmd(s, SC_ALLOC, json_pack("{s:s}", "budget", "24kB"), 0);
		run_to(s, n);
		cmd(s, SC_FINISH, NULL, 0);
		break;
	case 5:
		cmd(s, SC_NEXT, json_pack("{s:i}", "layer", 0), 1);	/* refused: recorded as an error */
		run_to(s, n);
		cmd(s, SC_FINISH, NULL, 0);
		break;
	}
	sess_free(s);
}

void
fz_recipes_record(const char *db_path, const char *model_dir, const char *calib_path)
{
	masq_err err = {0};
	sdb *db;
	if (sdb_open(&db, db_path, SDB_CREATE, &err) < 0)
		fz_die("%s", err.msg);
	for (int r = 0; r < FZ_RECIPES; r++)
		recipe(db, r, model_dir, calib_path);
	sdb_close(db);
}

struct text {
	char *p;
	size_t n, cap;
};

static void
put(struct text *t, const char *s)
{
	size_t k = strlen(s);
	if (t->n + k + 1 > t->cap) {
		t->cap = 2 * (t->n + k + 1);
		t->p = xrealloc(t->p, t->cap);
	}
	memcpy(t->p + t->n, s, k + 1);
	t->n += k;
}

static int
ev_line(void *ctx, const sdb_event *e)
{
	struct text *t = ctx;
	put(t, e->kind);
	put(t, "\t");
	put(t, e->name);
	put(t, "\t");
	put(t, e->payload);
	put(t, "\n");
	return 0;
}

char *
fz_events_text(const char *db_path, int64_t sid)
{
	masq_err err = {0};
	sdb *db;
	sdb_session row;
	struct text t = {0};
	if (sdb_open(&db, db_path, 0, &err) < 0 || sdb_session_get(db, sid, &row, &err) < 0)
		fz_die("%s", err.msg);
	put(&t, "settings\t");
	put(&t, row.settings);
	put(&t, "\n");
	sdb_session_free(&row);
	if (sdb_event_each(db, sid, ev_line, &t, &err) < 0)
		fz_die("%s", err.msg);
	sdb_close(db);
	return t.p;
}
