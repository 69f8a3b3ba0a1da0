/*
 * cmd_ralloc.c: allocate-ranks, the compensation's rank budget.  From the
 * whitened spectra of every compensated linear still to be quantized
 * (pipe_spectra, one pass over the FP chain), the ranks that leave the
 * least total whitened error within a byte budget, or the fewest bytes
 * that reach a target error (core/ralloc.h); set as whole-number ranks of
 * those linears and recorded with the uniform ratio of the same bytes for
 * comparison.  Restore takes the recorded ranks.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/export.h"
#include "core/ralloc.h"
#include "sessions/internal.h"

#define RALLOC_CAP 512		/* singular values computed per linear at most */

/*
 * The objective: "relative" (the default) sums each linear's whitened
 * error relative to its own error without compensation, the figure of the
 * rank view, so every linear counts alike; "absolute" sums the errors
 * themselves (output error energy on the calibration tokens), which lets
 * the few linears with the largest energy take the budget.  On the small
 * demo at 1 MB the relative objective gives the better model (audio 30.9
 * against 30.0 dB).
 */
#define RALLOC_CURVE 9		/* points of the budget curve */

static double
err_db(const ralloc_result *r)
{
	return r->energy > 0 && r->error > 0 ? 10.0 * log10(r->error / r->energy) : -INFINITY;
}

static json_t *
num_or_null(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

/* The spectra pass reports each layer as a step. */
static int
spectra_progress(void *ctx, int done, int total, double loss)
{
	(void)loss;
	char what[64];
	snprintf(what, sizeof what, "the spectra of %d of %d layers", done, total);
	sess_report_work(ctx, SC_ALLOC, (double)done / total, what);
	return 0;
}

/* Set layer l's linear k to rank r (a whole number, 0 for none); marks the
 * layer stale when that changes a measured setting. */
static int
apply_rank(sess *s, int l, int k, int r, masq_err *err)
{
	layer_setting *ls = &s->p.settings[l];
	layer_setting before = *ls;
	if (r == 1)
		return masq_err_set(err, MASQ_ERR_FORMAT, "layer %d %s: rank 1 is not a whole-number rank", l, lin_name(k));
	if (setting_set_rank(ls, k, r, err) < 0)
		return -1;
	if (memcmp(&before, ls, sizeof before) != 0)
		sess_mark_stale(s, l, l);
	return 0;
}

sess_retval
scmd_allocate_ranks(sess *s, json_t *args, json_t *res, masq_err *err)
{
	pipeline *p = &s->p;
	const char *bs = sess_arg_str(args, "budget", NULL), *obj = sess_arg_str(args, "objective", "relative");
	double target_db = sess_arg_num(args, "target", NAN), budget = NAN;

	if ((bs == NULL) == !isfinite(target_db))
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "allocate-ranks takes a budget (bytes, e.g. budget=2MB) or a target (target=-30, in dB), one of them");
	int relative = strcmp(obj, "relative") == 0;
	if (!relative && strcmp(obj, "absolute") != 0)
		return masq_err_set(err, MASQ_ERR_USAGE, "objective is relative or absolute, not '%s'", obj);
	if (bs != NULL && masq_parse_bytes(bs, &budget, err) < 0)
		return masq_err_prefix(err, "budget");
	if (isfinite(target_db) && !(target_db < 0 && target_db >= -200))
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "the target is the whitened error left against none compensated, in dB: below 0, not %g", target_db);
	if (p->layer >= p->n_layers)
		return masq_err_set(err, MASQ_ERR_USAGE, "every layer is committed: there is nothing to allocate");
	pipe_spectrum *sp;
	int n;
	if (pipe_spectra(p, RALLOC_CAP, &sp, &n, spectra_progress, s, err) < 0)
		return SESS_ERROR;
	if (n == 0) {
		pipe_spectra_free(sp, n);
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "no layer from %d on compensates (mas-cmc with vision or audio tokens): nothing to allocate", p->layer);
	}
	int eb = sess_cmc_elem_bytes(s);
	ralloc_item *it = xcalloc((size_t)n, sizeof *it);
	for (int i = 0; i < n; i++) {
		it[i].cap = sp[i].cap;
		it[i].mn = sp[i].mn;
		it[i].cost = (double)sp[i].nmod * (sp[i].in + sp[i].out) * eb;
		it[i].total = sp[i].total;
		it[i].gain = sp[i].gain;
		if (relative && sp[i].total > 0) {
			for (int j = 0; j < sp[i].cap; j++)
				sp[i].gain[j] /= sp[i].total;
			it[i].total = 1;
		}
	}
	ralloc_result a, u;
	double ratio;
	if (bs != NULL)
		ralloc_budget(it, n, budget, &a);
	else
		ralloc_target(it, n, pow(10.0, target_db / 10.0), &a);
	int *ranks = xcalloc((size_t)n, sizeof *ranks);
	for (int i = 0; i < n; i++)
		ranks[i] = it[i].rank;
	/* the budget curve, before the uniform comparison takes it[].rank */
	json_t *curve = json_array();
	for (int c = 0; c < RALLOC_CURVE; c++) {
		double b = a.bytes * pow(2.0, (c - 6) / 2.0);	/* 1/8 .. 2x the bytes spent */
		ralloc_result ca, cu;
		double cr;
		ralloc_budget(it, n, b, &ca);
		ralloc_uniform(it, n, b, &cr, &cu);
		json_array_append_new(curve, json_pack("[f, o, o]", b, num_or_null(err_db(&ca)), num_or_null(err_db(&cu))));
	}
	ralloc_uniform(it, n, a.bytes, &ratio, &u);

	/* set the ranks and record them, per layer in linear order */
	json_t *jr = json_array(), *jl = json_array();
	int rc = 0;
	for (int i = 0; i < n && rc == 0; i++) {
		if (apply_rank(s, sp[i].layer, sp[i].lin, ranks[i], err) < 0)
			rc = -1;
		json_array_append_new(jr, json_pack("[i, s, i]", sp[i].layer, lin_name(sp[i].lin), ranks[i]));
	}
	for (int i = 0; i < n && rc == 0;) {
		int l = sp[i].layer;
		ralloc_result lr = {0, 0, 0};
		for (; i < n && sp[i].layer == l; i++) {
			ralloc_item one = it[i];
			ralloc_result r1;
			one.rank = ranks[i];
			ralloc_eval(&one, 1, &r1);
			lr.bytes += r1.bytes;
			lr.error += r1.error;
			lr.energy += r1.energy;
		}
		json_array_append_new(jl, json_pack("{s:i, s:f, s:o}", "layer", l, "bytes", lr.bytes,
		    "error_db", num_or_null(err_db(&lr))));
	}
	free(ranks);
	free(it);
	pipe_spectra_free(sp, n);
	if (rc < 0) {
		json_decref(jr);
		json_decref(jl);
		json_decref(curve);
		return SESS_ERROR;
	}
	json_object_set_new(res, "from_layer", json_integer(p->layer));
	json_object_set_new(res, "objective", json_string(obj));
	if (bs != NULL)
		json_object_set_new(res, "budget", json_real(budget));
	else
		json_object_set_new(res, "target_db", json_real(target_db));
	json_object_set_new(res, "bytes", json_real(a.bytes));
	json_object_set_new(res, "error_db", num_or_null(err_db(&a)));
	json_object_set_new(res, "uniform", json_pack("{s:f, s:f, s:o}", "ratio", ratio, "bytes", u.bytes, "error_db",
	    num_or_null(err_db(&u))));
	json_object_set_new(res, "ranks", jr);
	json_object_set_new(res, "per_layer", jl);
	json_object_set_new(res, "budget_curve", curve);
	return SESS_OK;
}

int
scmd_allocate_ranks_restore(sess *s, json_t *args, json_t *res, sess_restore_state *rs, masq_err *err)
{
	(void)args;
	(void)rs;
	json_t *jr = json_object_get(res, "ranks"), *e;
	size_t i;
	if (!json_is_array(jr))
		return masq_err_set(err, MASQ_ERR_FORMAT, "its result has no \"ranks\" array");
	json_array_foreach(jr, i, e) {
		json_t *jl = json_array_get(e, 0), *jk = json_array_get(e, 1), *jv = json_array_get(e, 2);
		int k = json_is_string(jk) ? lin_parse(json_string_value(jk)) : -1;
		if (!json_is_array(e) || json_array_size(e) != 3 || !json_is_integer(jl) || !json_is_integer(jv) || k < 0 ||
		    json_integer_value(jl) < 0 || json_integer_value(jl) >= s->p.n_layers || json_integer_value(jv) < 0 ||
		    json_integer_value(jv) > SETTING_RANK_MAX)
			return masq_err_set(err, MASQ_ERR_FORMAT, "ranks[%zu] is not [layer, linear, rank] of this model", i);
		if (apply_rank(s, (int)json_integer_value(jl), k, (int)json_integer_value(jv), err) < 0)
			return masq_err_prefix(err, "ranks[%zu]", i);
	}
	return 0;
}
