/*
 * test_session.c: the session's middle floor on the tiny demo, through its
 * public header only: the dispatcher (argument checks, what a command's
 * flags demand, what is recorded), the typed settings and the --set
 * grammar (one parser, the same settings either way, errors naming what
 * was written), the layer states (stale after a setting change, refused
 * by next-layer, requantized by the recipe), the recipe and its progress
 * callback (the order of commands, stopping), restore, the field table.
 *
 * Files live under $builddir/work/test_session.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/demo.h"
#include "sessions/db.h"
#include "sessions/session.h"
#include "tests/tap.h"

static char workdir[4096], model_dir[4200], calib_path[4200];

static const char *
wpath(const char *name)
{
	static char buf[4][4300];
	static int k;
	char *b = buf[k++ % 4];
	snprintf(b, 4300, "%s/%s", workdir, name);
	return b;
}

static void
db_remove(const char *p)
{
	char b[4400];
	unlink(p);
	snprintf(b, sizeof b, "%s-wal", p);
	unlink(b);
	snprintf(b, sizeof b, "%s-shm", p);
	unlink(b);
}

/* The events of a session as "kind name" lines. */
static int
ev_line(void *ctx, const sdb_event *e)
{
	char *buf = ctx;
	size_t n = strlen(buf);
	snprintf(buf + n, 16384 - n, "%s %s\n", e->kind, e->name);
	return 0;
}

/* A new database at wpath(name), removed first; NULL (and a failed check)
 * when it cannot be opened. */
static sdb *
fresh_db(const char *name)
{
	const char *p = wpath(name);
	masq_err err = {0};
	sdb *db;
	db_remove(p);
	if (sdb_open(&db, p, SDB_CREATE, &err) < 0) {
		tap_ok(0, "open %s: %s", name, err.msg);
		return NULL;
	}
	return db;
}

/* A new session on the tiny demo, opened; NULL on failure. */
static sess *
open_session(sdb *db, const pipe_opts *o)
{
	masq_err err = {0};
	sess *s;
	if (sess_create(&s, db, o, model_dir, calib_path, 2, &err) < 0) {
		tap_diag("create: %s", err.msg);
		return NULL;
	}
	if (sess_dispatch(s, SC_OPEN, NULL, NULL, &err) < 0) {
		tap_diag("open: %s", err.msg);
		sess_free(s);
		return NULL;
	}
	return s;
}

static void
test_dispatch(void)
{
	const char *p = wpath("dispatch.db");
	masq_err err = {0};
	sdb *db;
	pipe_opts o;
	char evs[16384] = "";

	db_remove(p);
	pipe_opts_default(&o);
	if (sdb_open(&db, p, SDB_CREATE, &err) < 0) {
		tap_ok(0, "open the database: %s", err.msg);
		return;
	}
	sess *s;
	tap_ok(sess_create(&s, db, &o, model_dir, calib_path, 2, &err) == 0, "a new session");
	tap_ok(sess_dispatch(s, SC_CALIBRATE, NULL, NULL, &err) == SESS_ERROR && strstr(err.msg, "no model is open"),
	    "a command on a layer before open is refused: %s", err.msg);
	tap_ok(sess_dispatch(s, SC_OPEN, NULL, NULL, &err) == SESS_OK, "open");
	tap_ok(sess_dispatch(s, SC_OPEN, NULL, NULL, &err) == SESS_ERROR && strstr(err.msg, "already open"),
	    "open twice is refused");
	json_t *a = json_pack("{s:i}", "bogus", 1);
	tap_ok(sess_dispatch(s, SC_CALIBRATE, a, NULL, &err) == SESS_ERROR && strstr(err.msg, "unknown argument 'bogus'"),
	    "an unknown argument is refused by name");
	json_decref(a);
	a = json_pack("{s:s}", "layer", "0");
	tap_ok(sess_dispatch(s, SC_CALIBRATE, a, NULL, &err) == SESS_ERROR && strstr(err.msg, "must be an integer"),
	    "a wrongly typed argument is refused: %s", err.msg);
	json_decref(a);
	a = json_pack("{s:i}", "layer", 1);
	tap_ok(sess_dispatch(s, SC_CALIBRATE, a, NULL, &err) == SESS_ERROR &&
	    strstr(err.msg, "the cursor is at layer 0, not 1"), "a layer command names the cursor's layer: %s", err.msg);
	json_decref(a);
	tap_ok(sess_dispatch(s, SC_SET_ALPHA, NULL, NULL, &err) == SESS_ERROR &&
	    strstr(err.msg, "missing argument 'layer'"), "a missing argument is refused by name");
	tap_ok(sess_dispatch_name(s, "frobnicate", NULL, NULL, &err) == SESS_ERROR &&
	    strstr(err.msg, "unknown command 'frobnicate'"), "an unknown name is refused");
	sdb_event_each(db, sess_view_get(s)->id, ev_line, evs, &err);
	/* argument errors are refused before anything is recorded; state
	 * errors are recorded as the command and its error */
	tap_streq(evs, "command calibrate-layer\nerror calibrate-layer\ncommand open\nresult open\n"
	    "command open\nerror open\ncommand calibrate-layer\nerror calibrate-layer\n",
	    "what the dispatcher recorded");
	sess_free(s);
	sdb_close(db);
}

static void
test_settings(void)
{
	masq_err err = {0};
	pipe_opts o;
	pipe_opts_default(&o);
	sess *a = open_session(NULL, &o), *b = open_session(NULL, &o);
	if (a == NULL || b == NULL) {
		tap_ok(0, "two sessions");
		return;
	}
	/* the same settings by the typed command and by --set */
	json_t *x = json_pack("{s:s, s:s, s:s, s:f}", "layer", "1", "linear", "qkv", "modality", "vision", "value", 0.7);
	json_t *r = NULL;
	tap_ok(sess_dispatch(a, SC_SET_ALPHA, x, &r, &err) == SESS_OK, "set-alpha 1 qkv vision 0.7");
	tap_streq(json_string_value(json_object_get(r, "applied")), "1.qkv.alpha.vision=0.7", "... applied as written");
	json_decref(x);
	json_decref(r);
	x = json_pack("{s:s}", "assignment", "1.qkv.alpha.vision=0.7");
	tap_ok(sess_dispatch(b, SC_SET, x, NULL, &err) == SESS_OK, "set 1.qkv.alpha.vision=0.7");
	json_decref(x);
	tap_ok(memcmp(sess_layer_setting(a, 1), sess_layer_setting(b, 1), sizeof(layer_setting)) == 0,
	    "both give the same setting");
	tap_ok(fabsf(sess_layer_setting(a, 1)->alpha[GRP_QKV][MOD_VISION] - 0.7f) < 1e-7f &&
	    sess_layer_setting(a, 1)->alpha[GRP_QKV][MOD_TEXT] == 0.5f &&
	    fabsf(sess_layer_setting(a, 0)->alpha[GRP_QKV][MOD_VISION] - 0.5f) < 1e-7f,
	    "... vision of layer 1 only");
	/* errors name what was written */
	static const struct { const char *text, *want; } bad[] = {
		{"1.q.alpha=2", "'1.q.alpha=2': alpha must be in [0, 1], not 2"},
		{"9.q.alpha=0.5", "'9.q.alpha=0.5': layer '9' is not in 0..1 or '*'"},
		{"1.z.alpha=0.5", "linear 'z' is not q, k, v, o, gate, up, down, qkv, gateup or '*'"},
		{"1.q.alpha.sound=0.5", "modality 'sound' is not text, vision, audio, unified or all"},
		{"1.q.beta=0.5", "unknown key 'beta'"},
		{"1.q.rank=2.5", "rank must be 0 (none), a ratio in (0, 1] of min(in, out) or a whole number"},
		{"1.down.rank=8", "down_proj gets no compensation"},
		{"1.q.method=mas", "the method is chosen per layer"},
		{"1.method=frob", "unknown method 'frob'"},
		{"1.q.alpha", "expected LAYER.LINEAR.KEY=VALUE"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		x = json_pack("{s:s}", "assignment", bad[i].text);
		layer_setting before = *sess_layer_setting(a, 1);
		int rc = sess_dispatch(a, SC_SET, x, NULL, &err);
		tap_ok(rc == SESS_ERROR && strstr(err.msg, bad[i].want) != NULL &&
		    memcmp(&before, sess_layer_setting(a, 1), sizeof before) == 0,
		    "set %s is refused, naming it: %s", bad[i].text, err.msg);
		json_decref(x);
	}
	x = json_pack("{s:s, s:f}", "layer", "1", "value", 1.5);
	tap_ok(sess_dispatch(a, SC_SET_ALPHA, x, NULL, &err) == SESS_ERROR && strstr(err.msg, "alpha must be in [0, 1], not 1.5"),
	    "set-alpha 1.5 is refused by the same rule: %s", err.msg);
	json_decref(x);
	x = json_pack("{s:i, s:i}", "wbits", 12, "abits", 8);
	tap_ok(sess_dispatch(a, SC_SET_BITS, x, NULL, &err) == SESS_ERROR && strstr(err.msg, "not W12 A8"),
	    "set-bits 12 8 is refused");
	json_decref(x);
	/* settings read back: an alpha grid whose point count no int holds
	 * (fuzz_events: the count overflowed its conversion to int) */
	pipe_opts ro;
	x = json_pack("{s:f}", "alpha_step", 5e-31);
	tap_ok(sess_opts_from_json(&ro, x, &err) < 0 && strstr(err.msg, "has more than 64 points") != NULL,
	    "settings with an alpha step of 5e-31 are refused: %s", err.msg);
	json_decref(x);
	x = json_pack("{s:f, s:f, s:f}", "alpha_lo", 0.0, "alpha_step", 1.0 / 63, "alpha_hi", 1.0);
	tap_ok(sess_opts_from_json(&ro, x, &err) == 0, "a grid of 64 points is accepted");
	json_decref(x);
	x = json_pack("{s:f, s:f, s:f}", "alpha_lo", 0.0, "alpha_step", 1.0 / 64, "alpha_hi", 1.0);
	tap_ok(sess_opts_from_json(&ro, x, &err) < 0 && strstr(err.msg, "has more than 64 points") != NULL,
	    "one of 65 points is refused: %s", err.msg);
	json_decref(x);
	/* the whitener: absent is eig (sessions before the setting), a name
	 * neither is refused, and the default writes and reads back */
	x = json_object();
	tap_ok(sess_opts_from_json(&ro, x, &err) == 0 && ro.whiten_kind == CMC_WHITEN_EIG,
	    "settings without cmc_whitener read back as eig");
	json_decref(x);
	x = json_pack("{s:s}", "cmc_whitener", "qr");
	tap_ok(sess_opts_from_json(&ro, x, &err) < 0 && strstr(err.msg, "\"cmc_whitener\" is not eig or cholesky") != NULL,
	    "cmc_whitener \"qr\" is refused: %s", err.msg);
	json_decref(x);
	x = json_pack("{s:i}", "cmc_whitener", 1);
	tap_ok(sess_opts_from_json(&ro, x, &err) < 0 && strstr(err.msg, "cmc_whitener") != NULL,
	    "cmc_whitener 1 (not a name) is refused: %s", err.msg);
	json_decref(x);
	pipe_opts def;
	pipe_opts_default(&def);
	x = sess_opts_json(&def);
	tap_ok(def.whiten_kind == CMC_WHITEN_CHOL && sess_opts_from_json(&ro, x, &err) == 0 &&
	    ro.whiten_kind == CMC_WHITEN_CHOL, "the default (cholesky) writes and reads back");
	json_decref(x);
	/* the randomized SVD's steps: the same three */
	x = json_object();
	tap_ok(sess_opts_from_json(&ro, x, &err) == 0 && ro.rsvd_gram == 0,
	    "settings without cmc_rsvd read back as householder");
	json_decref(x);
	x = json_pack("{s:s}", "cmc_rsvd", "qr");
	tap_ok(sess_opts_from_json(&ro, x, &err) < 0 && strstr(err.msg, "\"cmc_rsvd\" is not gram or householder") != NULL,
	    "cmc_rsvd \"qr\" is refused: %s", err.msg);
	json_decref(x);
	x = json_pack("{s:b}", "cmc_rsvd", 1);
	tap_ok(sess_opts_from_json(&ro, x, &err) < 0 && strstr(err.msg, "cmc_rsvd") != NULL,
	    "cmc_rsvd true (not a name) is refused: %s", err.msg);
	json_decref(x);
	x = json_pack("{s:s}", "cmc_rsvd", "householder");
	tap_ok(sess_opts_from_json(&ro, x, &err) == 0 && ro.rsvd_gram == 0, "cmc_rsvd householder reads back");
	json_decref(x);
	x = sess_opts_json(&def);
	tap_ok(def.rsvd_gram == 1 && sess_opts_from_json(&ro, x, &err) == 0 && ro.rsvd_gram == 1 &&
	    strcmp(json_string_value(json_object_get(x, "cmc_rsvd")), "gram") == 0,
	    "the default (gram) writes and reads back");
	json_decref(x);
	sess_free(a);
	sess_free(b);
}

/* The recipe's progress callback: the commands in order, and a stop. */
struct trace {
	char seq[4096];
	int stop_after_next;	/* stop once this many layers were committed */
	int committed;
};

static int
trace_cb(void *ctx, const sess_progress *p)
{
	struct trace *t = ctx;
	size_t n = strlen(t->seq);
	if (p->phase == SP_WORK)
		return 0;
	snprintf(t->seq + n, sizeof t->seq - n, "%s %s %d%s\n", p->phase == SP_BEFORE ? "before" : "after",
	    sess_cmds[p->cmd].name, p->layer, p->phase == SP_AFTER && p->rc < 0 ? " failed" : "");
	if (p->phase == SP_AFTER && p->cmd == SC_NEXT)
		t->committed++;
	return t->stop_after_next > 0 && t->committed >= t->stop_after_next;
}

static void
test_recipe(void)
{
	const char *p = wpath("recipe.db");
	masq_err err = {0};
	sdb *db;
	pipe_opts o;
	struct trace t;

	db_remove(p);
	pipe_opts_default(&o);
	if (sdb_open(&db, p, SDB_CREATE, &err) < 0) {
		tap_ok(0, "open the database: %s", err.msg);
		return;
	}
	sess *s = open_session(db, &o);
	if (s == NULL) {
		tap_ok(0, "a session");
		return;
	}
	int64_t id = sess_view_get(s)->id;
	memset(&t, 0, sizeof t);
	t.stop_after_next = 1;
	tap_ok(sess_run_to(s, 2, trace_cb, &t, &err) == 1, "the callback stops the recipe after layer 0");
	tap_streq(t.seq, "before calibrate-layer 0\nafter calibrate-layer 0\nbefore quantize-layer 0\n"
	    "after quantize-layer 0\nbefore next-layer 0\nafter next-layer 0\nbefore calibrate-layer 1\n",
	    "calibrate, quantize, commit, in that order, reported before and after");
	tap_ok(sess_view_get(s)->cursor == 1 && sess_layer_state(s, 0) == SLS_COMMITTED &&
	    sess_layer_state(s, 1) == SLS_PENDING, "the cursor is at layer 1, layer 0 committed");

	/* stale: a setting changed after the measurement */
	tap_ok(sess_dispatch(s, SC_CALIBRATE, NULL, NULL, &err) == SESS_OK &&
	    sess_layer_state(s, 1) == SLS_CALIBRATED, "layer 1 calibrated");
	tap_ok(sess_dispatch(s, SC_QUANTIZE, NULL, NULL, &err) == SESS_OK && sess_layer_state(s, 1) == SLS_QUANTIZED,
	    "layer 1 quantized");
	double before = sess_layer_result(s, 1)->sqnr[MOD_VISION];
	json_t *x = json_pack("{s:s}", "assignment", "1.qkv.alpha.vision=0.8");
	tap_ok(sess_dispatch(s, SC_SET, x, NULL, &err) == SESS_OK && sess_layer_state(s, 1) == SLS_STALE,
	    "an alpha changed after the quantization makes layer 1 stale");
	json_decref(x);
	x = json_pack("{s:s}", "assignment", "0.qkv.alpha.vision=0.8");
	tap_ok(sess_dispatch(s, SC_SET, x, NULL, &err) == SESS_OK && sess_layer_state(s, 0) == SLS_COMMITTED,
	    "... a committed layer's setting stays committed");
	json_decref(x);
	tap_ok(sess_dispatch(s, SC_NEXT, NULL, NULL, &err) == SESS_ERROR && strstr(err.msg, "layer 1 is stale"),
	    "next-layer refuses a stale layer: %s", err.msg);
	memset(&t, 0, sizeof t);
	tap_ok(sess_run_to(s, 2, trace_cb, &t, &err) == 0, "the recipe finishes the model");
	tap_streq(t.seq, "before quantize-layer 1\nafter quantize-layer 1\nbefore next-layer 1\nafter next-layer 1\n",
	    "... requantizing the stale layer, not recalibrating it");
	tap_ok(sess_layer_result(s, 1)->sqnr[MOD_VISION] != before, "the committed figures are the new setting's");
	tap_ok(sess_dispatch(s, SC_FINISH, NULL, NULL, &err) == SESS_OK && sess_view_get(s)->finished, "finish");

	/* the field table */
	char buf[64];
	sess_field_format(s, SF_STATE, 0, 0, buf, sizeof buf);
	tap_streq(buf, "committed", "the state field");
	sess_field_format(s, SF_SQNR_V, 1, 8, buf, sizeof buf);
	char want[64];
	snprintf(want, sizeof want, "%8.2f", sess_layer_result(s, 1)->sqnr[MOD_VISION]);
	tap_streq(buf, want, "the vision SQNR field, formatted in 8 columns");
	json_t *row = json_object();
	sess_fields_json(s, 1, row);
	tap_ok(json_integer_value(json_object_get(row, "layer")) == 1 &&
	    strcmp(json_string_value(json_object_get(row, "method")), "mas-cmc") == 0 &&
	    json_real_value(json_object_get(json_object_get(row, "sqnr_db"), "vision")) ==
	    sess_layer_result(s, 1)->sqnr[MOD_VISION], "the fields as JSON: layer, method, sqnr_db.vision");
	json_decref(row);
	double final_v = sess_view_get(s)->summary->sqnr[MOD_VISION];
	sess_free(s);

	/* restore rebuilds the state from the events */
	sess *r;
	int finished = 0;
	tap_ok(sess_attach(&r, db, id, NULL, NULL, 0, &err) == 0, "attach to the session");
	tap_ok(sess_restore(r, &finished, &err) == 2 && finished, "restore: the cursor after the last layer, finished");
	tap_ok(fabsf(sess_layer_setting(r, 0)->alpha[GRP_QKV][MOD_VISION] - 0.8f) < 1e-7f &&
	    fabsf(sess_layer_setting(r, 1)->alpha[GRP_QKV][MOD_VISION] - 0.8f) < 1e-7f, "... the settings applied again");
	tap_ok(sess_layer_measured(r, 1) && sess_layer_result(r, 1)->sqnr[MOD_VISION] != 0 && isfinite(final_v),
	    "... the committed figures taken from the results");
	sess_free(r);
	sdb_close(db);
}

/* The preview computes what quantize-layer measures.  On layer 0 q, k and
 * v see the same input in the FP and the quantized layer, so their
 * previews from the token sample must be within PREVIEW_TOL_DB of the
 * measurement on all tokens, mas-cmc's compensation included; o, gate, up
 * and down are previewed on FP inputs and measured on what the quantized
 * layer feeds them, so they get PREVIEW_TOL_DOWNSTREAM_DB.  A preview must
 * leave every recorded figure as it was. */
#define PREVIEW_TOL_DB 0.5
#define PREVIEW_TOL_DOWNSTREAM_DB 2.0

static void
preview_vs_measure(sdb *db, int method, int epochs, double rank)
{
	masq_err err = {0};
	pipe_opts o;
	pipe_preview pv;

	pipe_opts_default(&o);
	o.method = method;
	o.epochs = epochs;
	o.rank = rank;
	sess *s = open_session(db, &o);
	if (s == NULL) {
		tap_ok(0, "a session");
		return;
	}
	sess *t = open_session(db, &o);
	tap_ok(sess_dispatch(s, SC_CALIBRATE, NULL, NULL, &err) == SESS_OK &&
	    sess_dispatch(t, SC_CALIBRATE, NULL, NULL, &err) == SESS_OK, "%s: two sessions calibrate layer 0",
	    method_name(method));
	if (epochs > 0)
		tap_ok(sess_dispatch(s, SC_TRAIN, NULL, NULL, &err) == SESS_OK &&
		    sess_dispatch(t, SC_TRAIN, NULL, NULL, &err) == SESS_OK, "... and learn");
	tap_ok(sess_preview(s, -1, -1, &pv, &err) == 0 && sess_preview(s, -1, -1, &pv, &err) == 0,
	    "... one previews every linear twice");
	tap_ok(sess_dispatch(s, SC_QUANTIZE, NULL, NULL, &err) == SESS_OK &&
	    sess_dispatch(t, SC_QUANTIZE, NULL, NULL, &err) == SESS_OK, "... both quantize");
	const pipe_layer_result *r = sess_layer_result(s, 0), *rt = sess_layer_result(t, 0);
	int same = 1;
	for (int m = 0; m < STATS_ROWS; m++)
		same &= r->sqnr[m] == rt->sqnr[m];
	tap_ok(same, "... the previewed session measures exactly what the other does");
	for (int part = 0; part < 2; part++) {
		double worst = 0, tol = part ? PREVIEW_TOL_DOWNSTREAM_DB : PREVIEW_TOL_DB;
		int wl = 0, wm = 0, n = 0, want = 0;
		for (int k = 0; k < LIN_COUNT; k++) {
			if ((k <= LIN_V) == part)
				continue;
			want += MOD_COUNT;
			for (int m = 0; m < MOD_COUNT; m++) {
				if (!isfinite(pv.sqnr[k][m]))
					continue;
				double d = fabs(pv.sqnr[k][m] - r->lin[k].sqnr[m]);
				n++;
				if (d > worst) {
					worst = d;
					wl = k;
					wm = m;
				}
			}
		}
		tap_ok(n == want && worst <= tol,
		    "%s%s rank %g, %s: %d previews within %.1f dB of the measurement (worst %s %s: %.3f dB)",
		    method_name(method), epochs ? " learned" : "", rank, part ? "o, gate, up, down" : "q, k, v", n, tol,
		    lin_name(wl), modality_name(wm), worst);
	}
	sess_free(s);
	sess_free(t);
}

static void
test_preview(void)
{
	sdb *db;

	if ((db = fresh_db("preview.db")) == NULL)
		return;
	preview_vs_measure(db, METHOD_MAS_CMC, 0, 0.05);
	preview_vs_measure(db, METHOD_MAS_CMC, 0, 0);
	preview_vs_measure(db, METHOD_MAS_CMC, 2, 0.05);
	preview_vs_measure(db, METHOD_MAS, 0, 0.05);
	preview_vs_measure(db, METHOD_SQ, 0, 0.05);
	sdb_close(db);
}

/* undo: the settings as they were before the last command that changed
 * them, across search and set-bits, and again after restore. */
static void
test_undo(void)
{
	masq_err err = {0};
	sdb *db;
	pipe_opts o;

	pipe_opts_default(&o);
	o.epochs = 0;
	if ((db = fresh_db("undo.db")) == NULL)
		return;
	sess *s = open_session(db, &o);
	if (s == NULL) {
		sdb_close(db);
		return;
	}
	int64_t id = sess_view_get(s)->id;
	tap_ok(sess_dispatch(s, SC_UNDO, NULL, NULL, &err) == SESS_ERROR && strstr(err.msg, "nothing to undo"),
	    "undo with nothing changed is refused: %s", err.msg);
	json_t *x = json_pack("{s:s}", "assignment", "0.qkv.alpha.vision=0.7");
	tap_ok(sess_dispatch(s, SC_SET, x, NULL, &err) == SESS_OK, "set 0.qkv.alpha.vision=0.7");
	json_decref(x);
	x = json_pack("{s:s}", "assignment", "0.qkv.alpha.vision=0.7");
	tap_ok(sess_dispatch(s, SC_SET, x, NULL, &err) == SESS_OK, "the same again (changes nothing: not undoable)");
	json_decref(x);
	tap_ok(sess_dispatch(s, SC_CALIBRATE, NULL, NULL, &err) == SESS_OK &&
	    sess_dispatch(s, SC_SEARCH, NULL, NULL, &err) == SESS_OK, "calibrate and search layer 0");
	float searched = sess_layer_setting(s, 0)->alpha[GRP_QKV][MOD_VISION];
	json_t *res = NULL;
	tap_ok(sess_dispatch(s, SC_UNDO, NULL, &res, &err) == SESS_OK &&
	    strcmp(json_string_value(json_object_get(res, "undid")), "search-alpha") == 0 &&
	    fabsf(sess_layer_setting(s, 0)->alpha[GRP_QKV][MOD_VISION] - 0.7f) < 1e-7f,
	    "undo after a search restores the hand-set alpha 0.7 (the search chose %.2f)", searched);
	json_decref(res);
	x = json_pack("{s:i, s:i}", "wbits", 8, "abits", 8);
	tap_ok(sess_dispatch(s, SC_SET_BITS, x, NULL, &err) == SESS_OK && sess_view_get(s)->wbits == 8, "set-bits 8 8");
	json_decref(x);
	tap_ok(sess_dispatch(s, SC_UNDO, NULL, NULL, &err) == SESS_OK && sess_view_get(s)->wbits == 4 &&
	    sess_view_get(s)->abits == 8, "undo restores W4A8");
	tap_ok(sess_dispatch(s, SC_UNDO, NULL, NULL, &err) == SESS_OK &&
	    fabsf(sess_layer_setting(s, 0)->alpha[GRP_QKV][MOD_VISION] - 0.5f) < 1e-7f,
	    "undo again restores the default 0.5");
	tap_ok(sess_dispatch(s, SC_UNDO, NULL, NULL, &err) == SESS_ERROR, "and then there is nothing left to undo");
	x = json_pack("{s:s}", "assignment", "1.o.rank=8");
	tap_ok(sess_dispatch(s, SC_SET, x, NULL, &err) == SESS_OK, "set 1.o.rank=8");
	json_decref(x);
	layer_setting want = *sess_layer_setting(s, 1), want0 = *sess_layer_setting(s, 0);
	sess_free(s);
	int finished;
	tap_ok(sess_attach(&s, db, id, NULL, NULL, 1, &err) == 0 && sess_restore(s, &finished, &err) >= 0,
	    "attach and restore%s%s", err.msg[0] ? ": " : "", err.msg);
	tap_ok(memcmp(sess_layer_setting(s, 1), &want, sizeof want) == 0 &&
	    memcmp(sess_layer_setting(s, 0), &want0, sizeof want0) == 0, "restore replays the undos: the same settings");
	tap_ok(sess_dispatch(s, SC_UNDO, NULL, NULL, &err) == SESS_OK && sess_layer_setting(s, 1)->rank[LIN_O] == o.rank,
	    "and the restored session can undo its last change (rank back to %g)", o.rank);
	sess_free(s);
	sdb_close(db);
}

/* Progress from inside the long commands: calibrate, search and quantize
 * report what they do, the part done growing to 1. */
struct work_trace {
	int n[SC_COUNT], bad, last_cmd;
	double last, end[SC_COUNT];
	char first[SC_COUNT][96];
};

static int
work_cb(void *ctx, const sess_progress *p)
{
	struct work_trace *t = ctx;
	if (p->phase == SP_BEFORE) {
		t->last = 0;
		t->last_cmd = p->cmd;
	}
	if (p->phase != SP_WORK || p->what == NULL)
		return 0;
	if (p->cmd != t->last_cmd || !(p->frac >= t->last && p->frac <= 1.0))
		t->bad++;
	if (t->n[p->cmd]++ == 0)
		snprintf(t->first[p->cmd], sizeof t->first[p->cmd], "%s", p->what);
	t->last = t->end[p->cmd] = p->frac;
	return 0;
}

static void
test_work_progress(void)
{
	masq_err err = {0};
	sdb *db;
	pipe_opts o;
	struct work_trace t;

	pipe_opts_default(&o);
	o.epochs = 0;
	o.search = 1;
	if ((db = fresh_db("work.db")) == NULL)
		return;
	sess *s = open_session(db, &o);
	if (s == NULL) {
		sdb_close(db);
		return;
	}
	memset(&t, 0, sizeof t);
	t.last_cmd = -1;
	tap_ok(sess_run_to(s, 1, work_cb, &t, &err) == 0, "the recipe runs layer 0");
	tap_ok(t.n[SC_CALIBRATE] == SITE_COUNT && strstr(t.first[SC_CALIBRATE], "statistics at the qkv input") != NULL,
	    "calibrate reports each of the %d sites (%d): '%s'", SITE_COUNT, t.n[SC_CALIBRATE], t.first[SC_CALIBRATE]);
	tap_ok(t.n[SC_QUANTIZE] >= LIN_COUNT && strstr(t.first[SC_QUANTIZE], "q_proj") != NULL,
	    "quantize reports per linear and modality (%d): '%s'", t.n[SC_QUANTIZE], t.first[SC_QUANTIZE]);
	tap_ok(t.n[SC_SEARCH] > 1 && strstr(t.first[SC_SEARCH], "alpha") != NULL,
	    "search reports per grid point (%d): '%s'", t.n[SC_SEARCH], t.first[SC_SEARCH]);
	tap_ok(t.bad == 0 && t.end[SC_CALIBRATE] == 1.0 && t.end[SC_SEARCH] == 1.0 && t.end[SC_QUANTIZE] == 1.0,
	    "the part done only grows, to 1 in each (%d out of order)", t.bad);
	sess_free(s);
	sdb_close(db);
}

int
main(void)
{
	const char *b = getenv("builddir");
	demo_preset pr;
	masq_err err = {0};

	snprintf(workdir, sizeof workdir, "%s/work/test_session", b && *b ? b : ".");
	if (masq_mkdir_p(workdir, &err) < 0 || demo_preset_get("tiny", &pr) < 0 ||
	    demo_write(wpath("demo"), &pr, DEMO_DEFAULT_SEED, &err) < 0) {
		fprintf(stderr, "test_session: %s\n", err.msg);
		return 99;
	}
	snprintf(model_dir, sizeof model_dir, "%s/model", wpath("demo"));
	snprintf(calib_path, sizeof calib_path, "%s/calib.safetensors", wpath("demo"));
	masq_blas_set_threads(2);
	test_dispatch();
	test_settings();
	test_recipe();
	test_preview();
	test_undo();
	test_work_progress();
	return tap_done();
}
