/*
 * cmd_run.c: masq run, the headless MASQuant pipeline: every layer is
 * calibrated on the FP model, optionally searched, quantized with its
 * method and measured per modality against the FP model.
 */
#include "config.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "core/calib.h"
#include "core/dist.h"
#include "core/export.h"
#include "core/model.h"
#include "core/numenv.h"
#include "core/pipeline.h"
#include "sessions/db.h"
#include "sessions/session.h"
#include "src/cli.h"


struct run_args {
	char *model_dir, *calib_path;
	const char *layer_prefix;	/* --layer-prefix, or NULL */
	const char *db_path;	/* NULL: not recorded */
	pipe_opts o;
	int all;		/* --method all */
	int json, verbose;
	const char *rank_budget;	/* --rank-budget SIZE */
	json_t *alloc;			/* allocate-ranks' result, when it ran */
	double rank_target;		/* --rank-target DB, or NAN */
	const char *rank_objective;	/* --rank-objective, or NULL */
	long threads;
	char **sets;
	int nsets;
	int follow;		/* a rank other than 0 of several, rank 0 recording */
};


static json_t *
run_json(const sess *s, const struct run_args *a, int method)
{
	const sess_view *v = sess_view_get(s);
	const pipe_opts *po = v->opts;
	json_t *d = json_object(), *layers = json_array();

	json_object_set_new(d, "session", v->id > 0 ? json_integer(v->id) : json_null());
	json_object_set_new(d, "database", a->db_path ? json_string(a->db_path) : json_null());

	json_object_set_new(d, "method", json_string(method_name(method)));
	json_object_set_new(d, "wbits", json_integer(v->wbits));
	json_object_set_new(d, "abits", json_integer(v->abits));
	json_object_set_new(d, "weight_group", json_integer(v->wgroup));
	json_object_set_new(d, "alpha", po->search ? json_string("search") : json_real(po->alpha));
	json_object_set_new(d, "rank", json_real(po->rank));
	json_object_set_new(d, "rank_floor", json_integer(po->rank_floor));
	json_object_set_new(d, "whiten", json_boolean(po->whiten));
	json_object_set_new(d, "cmc_whitener", json_string(po->whiten_kind == CMC_WHITEN_CHOL ? "cholesky" : "eig"));
	json_object_set_new(d, "cmc_rsvd", json_string(pipe_rsvd_name(po->rsvd_gram)));
	json_object_set_new(d, "cmc_target", json_string(po->cmc_quant_target ? "quantized" : "fp"));
	json_object_set_new(d, "seed", json_integer((json_int_t)po->seed));
	json_object_set_new(d, "epochs", json_integer(po->epochs));
	json_object_set_new(d, "lr", json_real(po->lr));
	json_object_set_new(d, "loss", json_string(learn_loss_name(po->loss)));
	json_object_set_new(d, "loss_weights", json_pack("{s:f, s:f, s:f}", "text", po->lambda[0], "vision",
	    po->lambda[1], "audio", po->lambda[2]));
	json_object_set_new(d, "tie", json_boolean(po->tie));
	json_object_set_new(d, "model", json_string(a->model_dir));
	json_object_set_new(d, "calib", json_string(a->calib_path));
	json_object_set_new(d, "tokens", sess_json_mods(s, (double[]){v->tokens_mod[0], v->tokens_mod[1], v->tokens_mod[2],
	    v->tokens}, 1));
	json_t *sum = json_object();
	json_object_set_new(sum, "sqnr_db", sess_json_mods(s, v->summary->sqnr, 1));
	json_object_set_new(sum, "mae", sess_json_mods(s, v->summary->mae, 1));
	json_object_set_new(sum, "kl_text", sess_json_num(v->summary->kl_text));
	json_object_set_new(sum, "seconds", json_real(v->summary->seconds));
	if (isfinite(v->summary->sqnr_held[STATS_ALL])) {
		json_t *seqs = json_array();
		for (int i = 0; i < sess_n_seqs(s); i++)
			if (sess_seq_held(s, i))
				json_array_append_new(seqs, json_integer(i));
		json_object_set_new(sum, "held_out", json_pack("{s:f, s:o, s:o, s:o, s:o}", "split", po->eval_split,
		    "sequences", seqs, "sqnr_db", sess_json_mods(s, v->summary->sqnr_held, 1), "mae",
		    sess_json_mods(s, v->summary->mae_held, 1), "kl_text", sess_json_num(v->summary->kl_text_held)));
	}
	json_object_set_new(d, "summary", sum);
	if (a->alloc != NULL && method == METHOD_MAS_CMC)
		json_object_set_new(d, "rank_allocation", json_incref(a->alloc));
	int64_t cmcp = sess_cmc_params(s);
	json_object_set_new(d, "cost", json_pack("{s:I, s:I, s:s, s:I}", "cmc_params", (json_int_t)cmcp, "cmc_bytes",
	    (json_int_t)(cmcp * sess_cmc_elem_bytes(s)), "cmc_dtype", sess_cmc_dtype_name(s), "checkpoint_bytes",
	    (json_int_t)sess_checkpoint_bytes(s)));
	for (int l = 0; l < v->n_layers; l++) {
		const pipe_layer_result *r = sess_layer_result(s, l);
		json_t *jl = json_object(), *lins = json_array();
		/* layer, method, sqnr_db, mae: the field table's */
		sess_fields_json(s, l, jl);
		for (int k = 0; k < LIN_COUNT; k++) {
			const pipe_lin_result *lr = &r->lin[k];
			json_t *jk = json_object(), *al = json_object();
			json_object_set_new(jk, "name", json_string(lin_name(k)));
			for (int m = 0; m < MOD_COUNT; m++)
				json_object_set_new(al, modality_name(m), sess_mod_present(s, m) ? sess_json_num(lr->alpha[m]) :
				    json_null());
			json_object_set_new(jk, "alpha", al);
			json_object_set_new(jk, "rank", json_integer(lr->rank));
			json_object_set_new(jk, "cmc_params", json_integer(sess_lin_cmc_params(s, l, k)));
			json_object_set_new(jk, "rank_floored", json_boolean(r->method == METHOD_MAS_CMC && lr->rank > 0 &&
			    sess_lin_rank_floored(s, l, k)));
			json_object_set_new(jk, "sqnr_db", sess_json_mods(s, lr->sqnr, 1));
			json_object_set_new(jk, "mae", sess_json_mods(s, lr->mae, 1));
			if (isfinite(lr->sqnr_no_cmc[STATS_ALL]))
				json_object_set_new(jk, "sqnr_no_cmc_db", sess_json_mods(s, lr->sqnr_no_cmc, 1));
			if (r->method == METHOD_MAS_CMC && lr->rank > 0) {
				json_t *jc = json_object();
				for (int m = MOD_VISION; m < MOD_COUNT; m++) {
					const pipe_cmc_diag *cd = &lr->cmc[m];
					if (!sess_mod_present(s, m))
						continue;
					json_t *x = json_object(), *cu = json_array(), *cp = json_array();
					json_object_set_new(x, "rank", json_integer(cd->rank));
					json_object_set_new(x, "rel_err", sess_json_num(cd->rel_err));
					json_object_set_new(x, "effective_rank", sess_json_num(cd->erank));
					/* a Cholesky basis counts none: null */
					json_object_set_new(x, "floored_eigenvalues",
					    cd->n_floored >= 0 ? json_integer(cd->n_floored) : json_null());
					for (int i = 0; i < PIPE_RANK_CURVE; i++) {
						json_array_append_new(cu, json_pack("[f, o]", pipe_rank_curve[i], sess_json_num(cd->curve[i])));
						json_array_append_new(cp, json_pack("[f, o]", pipe_rank_curve[i], sess_json_num(cd->curve_plain[i])));
					}
					json_object_set_new(x, "rel_err_by_rank", cu);
					json_object_set_new(x, "rel_err_by_rank_unwhitened", cp);
					json_object_set_new(jc, modality_name(m), x);
				}
				json_object_set_new(jk, "cmc", jc);
			}
			json_array_append_new(lins, jk);
		}
		json_object_set_new(jl, "linears", lins);
		json_t *mis = json_object();
		for (int site = 0; site < SITE_COUNT; site++) {
			const misalign *ma = &r->mis[site];
			json_t *x = json_object(), *share = json_object(), *loss = json_object(), *rq = json_object();
			for (int m = 0; m < MOD_COUNT; m++) {
				if (!ma->present[m])
					continue;
				json_object_set_new(share, modality_name(m), json_real(ma->dominant_share[m]));
				json_object_set_new(loss, modality_name(m), sess_json_num(ma->thm1_loss_db[m]));
				json_object_set_new(rq, modality_name(m), json_pack("[f, f, f, f]", ma->ratio_q[m][0],
				    ma->ratio_q[m][1], ma->ratio_q[m][2], ma->ratio_q[m][3]));
			}
			json_object_set_new(x, "dominant_share", share);
			json_object_set_new(x, "range_ratio_q50_q90_q99_max", rq);
			json_object_set_new(x, "thm1_loss_db", loss);
			json_object_set_new(mis, engine_site_name(site), x);
		}
		json_object_set_new(jl, "misalignment", mis);
		if (r->learn.done) {
			const pipe_learn_result *lr = &r->learn;
			json_t *jt = json_object(), *curve = json_array();
			json_object_set_new(jt, "epochs", json_integer(lr->epochs));
			json_object_set_new(jt, "steps", json_integer(lr->steps));
			json_object_set_new(jt, "skipped", json_integer(lr->skipped));
			json_object_set_new(jt, "chain", json_string(lr->chain ? "mas" : "deployed"));
			for (int i = 0; i < lr->steps; i++)
				json_array_append_new(curve, sess_json_num(lr->loss[i]));
			json_object_set_new(jt, "losses", curve);
			json_object_set_new(jt, "sqnr_init_db", sess_json_mods(s, lr->sqnr_init, 1));
			json_object_set_new(jt, "sqnr_learned_db", sess_json_mods(s, lr->sqnr_learned, 1));
			json_object_set_new(jt, "seconds", json_real(lr->seconds));
			json_object_set_new(jl, "learning", jt);
		}
		if (r->search.done && r->search.n > 0) {
			json_t *js = json_object();
			for (int row = 0; row < ALPHA_ROWS; row++) {
				if (row < MOD_COUNT ? (!sess_mod_present(s, row) || !method_per_modality(r->method))
				    : method_per_modality(r->method))
					continue;
				json_t *curve = json_array();
				for (int i = 0; i < r->search.n; i++)
					json_array_append_new(curve, json_pack("[f, o]", r->search.alpha[i], sess_json_num(r->search.sqnr[row][i])));
				json_t *x = json_object();
				json_object_set_new(x, "best", json_real(r->search.best[row]));
				json_object_set_new(x, "curve", curve);
				json_object_set_new(js, row < MOD_COUNT ? modality_name(row) : "unified", x);
			}
			json_object_set_new(js, "tokens", json_integer(r->search.tokens));
			json_object_set_new(jl, "alpha_search", js);
		}
		json_object_set_new(jl, "seconds", json_real(r->t_calib + r->t_search + r->t_quant));
		/* where the layer's time went (the FP forward with its statistics,
		 * the alpha search, learning, quantizing with its measurement) */
		json_object_set_new(jl, "phase_seconds", json_pack("{s:f, s:f, s:f, s:f}", "calibrate", r->t_calib,
		    "search", r->t_search, "learn", r->learn.seconds, "quantize", r->t_quant));
		json_array_append_new(layers, jl);
	}
	json_object_set_new(d, "layers", layers);
	return d;
}


static void
print_table(const sess *s, int verbose)
{
	const sess_view *v = sess_view_get(s);
	char t[4][32], m[32], al[32];

	printf("%-5s %-8s %-17s %8s %8s %8s %8s %8s\n", sess_fields[SF_LAYER].title, sess_fields[SF_METHOD].title,
	    sess_fields[SF_ALPHAS].title, sess_fields[SF_SQNR_T].title, sess_fields[SF_SQNR_V].title,
	    sess_fields[SF_SQNR_A].title, sess_fields[SF_SQNR_ALL].title, "seconds");
	for (int l = 0; l < v->n_layers; l++) {
		const pipe_layer_result *r = sess_layer_result(s, l);
		for (int k = 0; k < 4; k++)
			sess_field_format(s, SF_SQNR_T + k, l, 8, t[k], sizeof t[k]);
		sess_field_format(s, SF_METHOD, l, 0, m, sizeof m);
		sess_field_format(s, SF_ALPHAS, l, 0, al, sizeof al);
		printf("%-5d %-8s %-17s %s %s %s %s %8.2f\n", l, m, al, t[0], t[1], t[2], t[3],
		    r->t_calib + r->t_search + r->t_quant);
		if (isfinite(r->sqnr_held[STATS_ALL])) {
			for (int k = 0; k < 4; k++)
				sess_field_format(s, SF_HELD_T + k, l, 8, t[k], sizeof t[k]);
			printf("%-5s %-26s %s %s %s %s\n", "", "  held out", t[0], t[1], t[2], t[3]);
		}
		if (!verbose)
			continue;
		for (int k = 0; k < LIN_COUNT; k++) {
			const pipe_lin_result *lr = &r->lin[k];
			for (int mm = 0; mm < STATS_ROWS; mm++)
				cli_fmt_db(t[mm], sizeof t[mm], mm < MOD_COUNT && !sess_mod_present(s, mm) ? NAN : lr->sqnr[mm]);
			char cm[160] = "", by[32];
			if (lr->rank > 0)
				snprintf(cm, sizeof cm, "  rank %d%s, cmc err v %.3g a %.3g, %s", lr->rank,
				    sess_lin_rank_floored(s, l, k) ? " (the floor's)" : "",
				    sess_mod_present(s, 1) ? lr->cmc[1].rel_err : NAN, sess_mod_present(s, 2) ? lr->cmc[2].rel_err : NAN,
				    masq_fmt_bytes((uint64_t)(sess_lin_cmc_params(s, l, k) * sess_cmc_elem_bytes(s)), by, sizeof by));
			printf("  %-11s %-17s %8s %8s %8s %8s%s\n", lin_name(k), "", t[0], t[1], t[2], t[3], cm);
			for (int mm = MOD_VISION; mm < MOD_COUNT; mm++) {
				double wo;
				if (sess_lin_cmc_hurts(s, l, k, mm, &wo))
					printf("  %-11s ! %s: %.2f dB with the compensation, %.2f without (rank 0)\n", "",
					    modality_name(mm), lr->sqnr[mm], wo);
			}
		}
	}
}

/* allocate-ranks' result: what it spent and left, against the uniform
 * ratio at the same bytes, per layer, and the budget curve. */
static void
print_alloc(const sess *s, json_t *r)
{
	char b1[32], b2[32];
	json_t *u = json_object_get(r, "uniform"), *e;
	size_t i;
	(void)s;
	double budget = json_number_value(json_object_get(r, "budget"));
	printf("\nrank allocation from layer %lld, ", (long long)json_integer_value(json_object_get(r, "from_layer")));
	if (json_object_get(r, "budget") != NULL)
		printf("budget %s", masq_fmt_bytes((uint64_t)budget, b1, sizeof b1));
	else
		printf("target %.1f dB", json_number_value(json_object_get(r, "target_db")));
	printf(": %s of L1/L2, whitened error %.2f dB of none; the uniform ratio %.4f at %s: %.2f dB\n",
	    masq_fmt_bytes((uint64_t)json_number_value(json_object_get(r, "bytes")), b1, sizeof b1),
	    json_number_value(json_object_get(r, "error_db")), json_number_value(json_object_get(u, "ratio")),
	    masq_fmt_bytes((uint64_t)json_number_value(json_object_get(u, "bytes")), b2, sizeof b2),
	    json_number_value(json_object_get(u, "error_db")));
	printf("%-5s %10s %9s  ranks q k v o gate up\n", "layer", "bytes", "error dB");
	json_t *ranks = json_object_get(r, "ranks");
	json_array_foreach(json_object_get(r, "per_layer"), i, e) {
		long long l = json_integer_value(json_object_get(e, "layer"));
		printf("%-5lld %10s %9.2f ", l, masq_fmt_bytes((uint64_t)json_number_value(json_object_get(e, "bytes")), b1,
		    sizeof b1), json_number_value(json_object_get(e, "error_db")));
		size_t j;
		json_t *x;
		json_array_foreach(ranks, j, x)
			if (json_integer_value(json_array_get(x, 0)) == l)
				printf(" %lld", (long long)json_integer_value(json_array_get(x, 2)));
		printf("\n");
	}
	printf("error (dB) against bytes, allocated | uniform:");
	json_array_foreach(json_object_get(r, "budget_curve"), i, e)
		printf("%s %s %.1f|%.1f", i ? "," : "", masq_fmt_bytes((uint64_t)json_number_value(json_array_get(e, 0)), b1,
		    sizeof b1), json_number_value(json_array_get(e, 1)), json_number_value(json_array_get(e, 2)));
	printf("\n");
}

static void
print_summary(const sess *s)
{
	const sess_view *v = sess_view_get(s);
	printf("\nsummary, SQNR (dB) of the last layer's output against the FP model:\n ");
	for (int m = 0; m < MOD_COUNT; m++)
		if (sess_mod_present(s, m))
			printf(" %s %.2f", modality_name(m), v->summary->sqnr[m]);
	printf("  all %.2f\n", v->summary->sqnr[STATS_ALL]);
	if (isfinite(v->summary->sqnr_held[STATS_ALL])) {
		printf(" held out (%g of the sequences, in no statistic, search or learning):", v->opts->eval_split);
		for (int m = 0; m < MOD_COUNT; m++)
			if (sess_mod_present(s, m))
				printf(" %s %.2f", modality_name(m), v->summary->sqnr_held[m]);
		printf("  all %.2f", v->summary->sqnr_held[STATS_ALL]);
		if (isfinite(v->summary->kl_text_held))
			printf("  KL %.4g", v->summary->kl_text_held);
		printf("\n");
	}
	printf("MAE:");
	for (int m = 0; m < MOD_COUNT; m++)
		if (sess_mod_present(s, m))
			printf(" %s %.4g", modality_name(m), v->summary->mae[m]);
	if (isfinite(v->summary->kl_text))
		printf("\nKL of next-token distributions at text positions: %.4g", v->summary->kl_text);
	/* sensitivity: the layers that add the most error themselves */
	if (v->n_layers > 1) {
		int order[v->n_layers], n = 0;
		for (int l = 0; l < v->n_layers; l++) {
			double x = sess_fields[SF_OWN_ALL].value(s, l);
			if (!isfinite(x))
				continue;
			int j = n++;
			for (; j > 0 && sess_fields[SF_OWN_ALL].value(s, order[j - 1]) > x; j--)
				order[j] = order[j - 1];
			order[j] = l;
		}
		if (n > 0)
			printf("\nthe layers adding the most error themselves (own SQNR, all tokens):");
		for (int i = 0; i < n && i < 3; i++)
			printf("%s layer %d %.2f dB", i ? "," : "", order[i], sess_fields[SF_OWN_ALL].value(s, order[i]));
	}
	/* where the compensation costs more than it mends */
	for (int m = MOD_VISION; m < MOD_COUNT; m++) {
		int hurt = 0, all = 0, wl = -1, wk = -1;
		double worst = 0, wo = 0;
		for (int l = 0; l < v->n_layers; l++)
			for (int k = 0; k < LIN_COUNT; k++) {
				double w0;
				if (sess_layer_result(s, l)->lin[k].rank <= 0 || !sess_mod_present(s, m))
					continue;
				all++;
				if (!sess_lin_cmc_hurts(s, l, k, m, &w0))
					continue;
				hurt++;
				if (w0 - sess_layer_result(s, l)->lin[k].sqnr[m] > worst) {
					worst = w0 - sess_layer_result(s, l)->lin[k].sqnr[m];
					wl = l, wk = k, wo = w0;
				}
			}
		if (hurt > 0)
			printf("\nwarning: for %s the compensation measures below none at all in %d of %d linears "
			    "(worst: layer %d %s, %.2f dB against %.2f without); rank 0 there (--set %d.%s.rank=0, "
			    "or r 0 in the workbench) gives the uncompensated figure", modality_name(m), hurt, all, wl,
			    lin_name(wk), sess_layer_result(s, wl)->lin[wk].sqnr[m], wo, wl, lin_name(wk));
	}
	int64_t cp = sess_cmc_params(s);
	if (cp > 0) {
		char b1[32], b2[32];
		uint64_t cb = (uint64_t)cp * (uint64_t)sess_cmc_elem_bytes(s), ck = sess_checkpoint_bytes(s);
		printf("\ncompensation: %lld parameters, %s in %s as the masquant export stores them, %.1f%% of the "
		    "checkpoint's %s", (long long)cp, masq_fmt_bytes(cb, b1, sizeof b1), sess_cmc_dtype_name(s),
		    ck ? 100.0 * (double)cb / (double)ck : 0.0, masq_fmt_bytes(ck, b2, sizeof b2));
	}
	printf("\n%.1f s in all\n", v->summary->seconds);
}

/* The progress of a run on standard error: on a terminal a line rewritten
 * in place; elsewhere (a CI log, a pipe) one line per finished layer, so a
 * job killed half-way still shows how far it got. */
struct run_progress {
	const sess *s;
	const char *method;
	int tty;
};

static int
run_progress(void *ctx, const sess_progress *p)
{
	const struct run_progress *rp = ctx;
	const sess_view *v = sess_view_get(rp->s);
	if (dist_rank() != 0)
		return 0;	/* under mpirun rank 0 reports for all */
	if (p->phase == SP_BEFORE)
		cli_stop_note(v->db_path, (long long)v->id, p->layer, v->n_layers);
	static const char *const doing[SC_COUNT] = {[SC_CALIBRATE] = "calibrating...   ",
		[SC_SEARCH] = "searching alpha...", [SC_TRAIN] = "learning...      ", [SC_QUANTIZE] = "quantizing...    "};
	if (p->phase == SP_BEFORE && rp->tty && doing[p->cmd] != NULL)
		fprintf(stderr, "\r%s layer %d/%d: %s", rp->method, p->layer + 1, v->n_layers, doing[p->cmd]);
	if (p->phase == SP_WORK && p->what != NULL && rp->tty)
		fprintf(stderr, "\r%s layer %d/%d: %s %3.0f%%, %s\033[K", rp->method, p->layer + 1, v->n_layers,
		    sess_cmds[p->cmd].name, 100.0 * p->frac, p->what);
	if (p->phase == SP_WORK && p->cmd == SC_TRAIN && rp->tty)
		fprintf(stderr, "\r%s layer %d/%d: learning, step %d/%d, loss %.5g   ", rp->method, p->layer + 1,
		    v->n_layers, p->step, p->steps, p->loss);
	if (p->phase == SP_AFTER && p->cmd == SC_NEXT && p->rc >= 0) {
		const pipe_layer_result *r = sess_layer_result(rp->s, p->layer);
		fprintf(stderr, "%s%s layer %d/%d: SQNR text %.2f vision %.2f audio %.2f dB (%.1f s)\n",
		    rp->tty ? "\r" : "", rp->method, p->layer + 1, v->n_layers, r->sqnr[0], r->sqnr[1], r->sqnr[2],
		    r->t_calib + r->t_search + r->learn.seconds + r->t_quant);
	}
	if (p->phase == SP_AFTER && p->rc < 0 && rp->tty)
		fprintf(stderr, "\n");
	return 0;
}

/* Under mpirun: every process computes in its own numeric environment;
 * when one's key differs from rank 0's (another kernel set or library on
 * another node), the figures depend on which process holds which
 * sequences: rank 0 says so and records it (numenv_ranks). */
static int
ranks_env_note(sess *s, sdb *db, masq_err *err)
{
	json_t *env = sess_environment(s);
	if (!numenv_ranks(env) || dist_rank() != 0)
		return 0;
	fprintf(stderr, "masq: not every process computes in rank 0's numeric environment (%s): the figures depend on "
	    "which process holds which sequences, and replay compares within tolerances\n",
	    json_string_value(json_object_get(env, "ranks")));
	if (db == NULL)
		return 0;
	char *text = json_dumps(env, JSON_COMPACT | JSON_PRESERVE_ORDER);
	int rc = text != NULL ? sdb_session_set_environment(db, sess_view_get(s)->id, text, err) :
	    masq_err_set(err, MASQ_ERR_INTERNAL, "cannot write the numeric environment");
	free(text);
	return rc;
}

static int
run_method_layers(sess **sp, sdb *db, struct run_args *a, int method, masq_err *err)
{
	pipe_opts o = a->o;
	json_t *args;

	o.method = method;
	int crc = sess_create(sp, db, &o, a->model_dir, a->calib_path, (int)a->threads, err);
	if (dist_size() > 1 && dist_agree(crc < 0, err))
		crc = -1;	/* another rank could not begin: run_method marks the session failed */
	if (crc < 0)
		return -1;
	sess *s = *sp;
	if (dist_size() > 1) {
		crc = ranks_env_note(s, db, err);
		if (dist_agree(crc < 0, err))
			return -1;
	}
	sess_set_follow(s, a->follow);
	args = json_pack("{s:s, s:s}", "model", a->model_dir, "calib", a->calib_path);
	if (a->layer_prefix != NULL)
		json_object_set_new(args, "prefix", json_string(a->layer_prefix));
	int rc = sess_dispatch(s, SC_OPEN, args, NULL, err);
	json_decref(args);
	if (rc < 0)
		return -1;
	if (sess_view_get(s)->deepstack_missing && dist_rank() == 0)
		cli_deepstack_warn(sess_view_get(s)->tokens_mod[MOD_VISION]);
	if (method == METHOD_MAS_CMC && (a->rank_budget != NULL || isfinite(a->rank_target))) {
		args = a->rank_budget != NULL ? json_pack("{s:s}", "budget", a->rank_budget) :
		    json_pack("{s:f}", "target", a->rank_target);
		if (a->rank_objective != NULL)
			json_object_set_new(args, "objective", json_string(a->rank_objective));
		json_t *res = NULL;
		rc = sess_dispatch(s, SC_ALLOC, args, &res, err);
		json_decref(args);
		if (rc < 0)
			return masq_err_prefix(err, a->rank_budget != NULL ? "--rank-budget" : "--rank-target");
		json_decref(a->alloc);
		a->alloc = res;
	}
	for (int i = 0; i < a->nsets; i++) {
		args = json_pack("{s:s}", "assignment", a->sets[i]);
		rc = sess_dispatch(s, SC_SET, args, NULL, err);
		json_decref(args);
		if (rc < 0)
			return masq_err_prefix(err, "--set");
	}
	struct run_progress rp = {s, method_name(method), isatty(2) && !a->json};
	sess_set_one_pass(s, 1);	/* each layer quantized once: free what compensation used */
	if (sess_run_to(s, sess_view_get(s)->n_layers, run_progress, &rp, err) < 0)
		return -1;
	return sess_dispatch(s, SC_FINISH, NULL, NULL, err) < 0 ? -1 : 0;
}

/* Run one method over every layer as a sequence of session commands; the
 * session is left finished for reporting.  A run that fails before its
 * first layer is committed is marked failed: it is no session to resume,
 * and not the default of replay, resume or export. */
static int
run_method(sess **sp, sdb *db, struct run_args *a, int method, masq_err *err)
{
	int rc = run_method_layers(sp, db, a, method, err);
	if (rc < 0 && db != NULL && *sp != NULL) {
		const sess_view *v = sess_view_get(*sp);
		if (v->id > 0 && (!v->opened || v->cursor == 0))
			sdb_session_set_status(db, v->id, "failed", NULL);
	}
	return rc;
}

static int
parse_float(const char *opt, const char *s, double lo, double hi, double *out)
{
	char *end;
	double v = strtod(s, &end);
	if (end == s || *end != '\0' || !(v >= lo && v <= hi)) {
		cli_usage("run", "%s must be a number in [%g, %g], not '%s'", opt, lo, hi, s);
		return -1;
	}
	*out = v;
	return 0;
}

int
cmd_run(int argc, char **argv)
{
	enum { O_MODEL = 256, O_CALIB, O_METHOD, O_WBITS, O_ABITS, O_ALPHA, O_RANK, O_SET, O_JSON,
	    O_THREADS, O_SEED, O_WGROUP, O_RANK_FLOOR, O_SVD, O_NO_WHITEN, O_CMC_TARGET, O_CMC_DIAG,
	    O_GRID, O_SEARCH_TOKENS, O_VERBOSE, O_DB, O_NO_DB, O_EPOCHS, O_LR, O_LOSS, O_LOSS_WEIGHTS, O_TIE,
	    O_RANK_BUDGET, O_RANK_TARGET, O_RANK_OBJECTIVE, O_WHITENER, O_RSVD, O_EVAL_SPLIT, O_CMC_DTYPE,
	    O_LAYER_PREFIX, O_CMC_PRECISION, O_COMPUTE };
	static const struct option opts[] = {
		{"model", required_argument, NULL, O_MODEL},
		{"calib", required_argument, NULL, O_CALIB},
		{"method", required_argument, NULL, O_METHOD},
		{"wbits", required_argument, NULL, O_WBITS},
		{"abits", required_argument, NULL, O_ABITS},
		{"alpha", required_argument, NULL, O_ALPHA},
		{"rank", required_argument, NULL, O_RANK},
		{"set", required_argument, NULL, O_SET},
		{"json", no_argument, NULL, O_JSON},
		{"threads", required_argument, NULL, O_THREADS},
		{"seed", required_argument, NULL, O_SEED},
		{"wgroup", required_argument, NULL, O_WGROUP},
		{"rank-floor", required_argument, NULL, O_RANK_FLOOR},
		{"svd", required_argument, NULL, O_SVD},
		{"no-whiten", no_argument, NULL, O_NO_WHITEN},
		{"cmc-target", required_argument, NULL, O_CMC_TARGET},
		{"cmc-diagnostics", no_argument, NULL, O_CMC_DIAG},
		{"alpha-grid", required_argument, NULL, O_GRID},
		{"search-tokens", required_argument, NULL, O_SEARCH_TOKENS},
		{"verbose", no_argument, NULL, O_VERBOSE},
		{"epochs", required_argument, NULL, O_EPOCHS},
		{"lr", required_argument, NULL, O_LR},
		{"loss", required_argument, NULL, O_LOSS},
		{"loss-weights", required_argument, NULL, O_LOSS_WEIGHTS},
		{"tie", no_argument, NULL, O_TIE},
		{"rank-budget", required_argument, NULL, O_RANK_BUDGET},
		{"rank-target", required_argument, NULL, O_RANK_TARGET},
		{"rank-objective", required_argument, NULL, O_RANK_OBJECTIVE},
		{"eval-split", required_argument, NULL, O_EVAL_SPLIT},
		{"cmc-dtype", required_argument, NULL, O_CMC_DTYPE},
		{"cmc-precision", required_argument, NULL, O_CMC_PRECISION},
		{"whitener", required_argument, NULL, O_WHITENER},
		{"rsvd", required_argument, NULL, O_RSVD},
		{"compute", required_argument, NULL, O_COMPUTE},
		{"layer-prefix", required_argument, NULL, O_LAYER_PREFIX},
		{"db", required_argument, NULL, O_DB},
		{"no-db", no_argument, NULL, O_NO_DB},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	struct run_args a;
	masq_err err = {0};
	sdb *db = NULL;
	int c, rc = 2, no_db = 0;
	long v;
	double x;
	char given[O_EVAL_SPLIT - O_MODEL + 1] = {0};	/* which options were written */

	memset(&a, 0, sizeof a);
	pipe_opts_default(&a.o);
	a.o.epochs = 2;	/* the reference's: mas, mas-cmc and usq learn unless --epochs 0 */
	a.rank_target = NAN;
	a.sets = xcalloc((size_t)argc + 1, sizeof(char *));
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c >= O_MODEL && c <= O_EVAL_SPLIT)
			given[c - O_MODEL] = 1;
		switch (c) {
		case O_MODEL: free(a.model_dir); a.model_dir = xstrdup(optarg); break;
		case O_CALIB: free(a.calib_path); a.calib_path = xstrdup(optarg); break;
		case O_METHOD:
			if (strcmp(optarg, "all") == 0) {
				a.all = 1;
			} else if ((a.o.method = method_parse(optarg)) < 0) {
				rc = cli_usage("run", "unknown method '%s' (rtn, sq, mas, mas-cmc, usq, all)", optarg);
				goto done;
			}
			break;
		case O_WBITS:
		case O_ABITS:
			if (cli_int("run", c == O_WBITS ? "--wbits" : "--abits", optarg, 2, 16, &v) < 0)
				goto done;
			if (v > 8 && v != 16) {
				rc = cli_usage("run", "%s must be 2 to 8, or 16 for no quantization",
				    c == O_WBITS ? "--wbits" : "--abits");
				goto done;
			}
			if (c == O_WBITS)
				a.o.wbits = (int)v;
			else
				a.o.abits = (int)v;
			break;
		case O_ALPHA:
			if (strcmp(optarg, "search") == 0) {
				a.o.search = 1;
			} else {
				if (parse_float("--alpha", optarg, 0, 1, &x) < 0)
					goto done;
				a.o.alpha = (float)x;
			}
			break;
		case O_RANK:
			if (parse_float("--rank", optarg, 0, 1e6, &x) < 0)
				goto done;
			if (x > 1 && x != floor(x)) {
				rc = cli_usage("run", "--rank is a ratio in (0, 1] or a whole number, not '%s'", optarg);
				goto done;
			}
			a.o.rank = x;
			break;
		case O_SET: a.sets[a.nsets++] = optarg; break;
		case O_EPOCHS:
			if (cli_int("run", "--epochs", optarg, 0, SETTING_EPOCHS_MAX, &v) < 0)
				goto done;
			a.o.epochs = (int)v;
			break;
		case O_LR:
			if (parse_float("--lr", optarg, 1e-12, 10, &x) < 0)
				goto done;
			a.o.lr = (float)x;
			break;
		case O_LOSS:
			if ((a.o.loss = learn_loss_parse(optarg)) < 0) {
				rc = cli_usage("run", "--loss is mae or mse, not '%s'", optarg);
				goto done;
			}
			break;
		case O_LOSS_WEIGHTS:
			if (setting_parse_lambda(optarg, a.o.lambda, &err) < 0) {
				rc = cli_usage("run", "--loss-weights: %s", err.msg);
				goto done;
			}
			break;
		case O_TIE: a.o.tie = 1; break;
		case O_RANK_BUDGET: {
			double b;
			if (masq_parse_bytes(optarg, &b, &err) < 0) {
				rc = cli_usage("run", "--rank-budget: %s", err.msg);
				goto done;
			}
			a.rank_budget = optarg;
			break;
		}
		case O_EVAL_SPLIT:
			if (parse_float("--eval-split", optarg, 1e-9, PIPE_SPLIT_MAX, &x) < 0)
				goto done;
			a.o.eval_split = x;
			break;
		case O_LAYER_PREFIX:
			a.layer_prefix = optarg;
			break;
		case O_COMPUTE:
			if ((a.o.compute = engine_compute_parse(optarg)) < 0) {
				rc = cli_usage("run", "--compute takes f32 or bf16, not '%s'", optarg);
				goto done;
			}
			break;
		case O_CMC_PRECISION:
			if (strcasecmp(optarg, "f32") == 0)
				a.o.cmc_precision = CMC_F32;
			else if (strcasecmp(optarg, "f64") == 0)
				a.o.cmc_precision = CMC_F64;
			else {
				rc = cli_usage("run", "--cmc-precision is f32 or f64, not '%s'", optarg);
				goto done;
			}
			break;
		case O_WHITENER:
			if (strcasecmp(optarg, "cholesky") == 0)
				a.o.whiten_kind = CMC_WHITEN_CHOL;
			else if (strcasecmp(optarg, "eig") == 0)
				a.o.whiten_kind = CMC_WHITEN_EIG;
			else {
				rc = cli_usage("run", "--whitener is cholesky or eig, not '%s'", optarg);
				goto done;
			}
			break;
		case O_RSVD:
			if ((a.o.rsvd_gram = pipe_rsvd_parse(optarg)) < 0) {
				rc = cli_usage("run", "--rsvd is gram or householder, not '%s'", optarg);
				goto done;
			}
			break;
		case O_CMC_DTYPE:
			if (strcasecmp(optarg, "f32") == 0)
				a.o.cmc_dtype = ST_F32;
			else if (strcasecmp(optarg, "f16") == 0)
				a.o.cmc_dtype = ST_F16;
			else if (strcasecmp(optarg, "bf16") == 0)
				a.o.cmc_dtype = ST_BF16;
			else {
				rc = cli_usage("run", "--cmc-dtype is f16, bf16 or f32, not '%s'", optarg);
				goto done;
			}
			break;
		case O_RANK_OBJECTIVE:
			if (strcmp(optarg, "relative") != 0 && strcmp(optarg, "absolute") != 0) {
				rc = cli_usage("run", "--rank-objective is relative or absolute, not '%s'", optarg);
				goto done;
			}
			a.rank_objective = optarg;
			break;
		case O_RANK_TARGET:
			if (parse_float("--rank-target", optarg, -200, -1e-9, &x) < 0)
				goto done;
			a.rank_target = x;
			break;
		case O_DB: a.db_path = optarg; break;
		case O_NO_DB: no_db = 1; break;
		case O_JSON: a.json = 1; break;
		case O_VERBOSE: a.verbose = 1; break;
		case O_THREADS:
			if (cli_int("run", "--threads", optarg, 1, 512, &a.threads) < 0)
				goto done;
			break;
		case O_SEED:
			if (cli_int("run", "--seed", optarg, 0, 0x7fffffffL, &v) < 0)
				goto done;
			a.o.seed = (uint64_t)v;
			break;
		case O_WGROUP:
			if (cli_int("run", "--wgroup", optarg, 0, 1 << 20, &v) < 0)
				goto done;
			a.o.wgroup = (int)v;
			break;
		case O_RANK_FLOOR:
			if (cli_int("run", "--rank-floor", optarg, 0, 1 << 20, &v) < 0)
				goto done;
			a.o.rank_floor = (int)v;
			break;
		case O_SVD:
			if (strcmp(optarg, "full") == 0)
				a.o.svd_mode = CMC_SVD_FULL;
			else if (strcmp(optarg, "randomized") == 0)
				a.o.svd_mode = CMC_SVD_RANDOMIZED;
			else if (strcmp(optarg, "auto") == 0)
				a.o.svd_mode = CMC_SVD_AUTO;
			else {
				rc = cli_usage("run", "--svd is full, randomized or auto, not '%s'", optarg);
				goto done;
			}
			break;
		case O_NO_WHITEN: a.o.whiten = 0; break;
		case O_CMC_TARGET:
			if (strcmp(optarg, "fp") == 0)
				a.o.cmc_quant_target = 0;
			else if (strcmp(optarg, "quantized") == 0)
				a.o.cmc_quant_target = 1;
			else {
				rc = cli_usage("run", "--cmc-target is fp or quantized, not '%s'", optarg);
				goto done;
			}
			break;
		case O_CMC_DIAG: a.o.cmc_diag = 1; break;
		case O_GRID: {
			float lo, st, hi;
			char tail;
			if (sscanf(optarg, "%f:%f:%f%c", &lo, &st, &hi, &tail) != 3 || !(lo >= 0 && hi <= 1 &&
			    lo <= hi && st > 0)) {
				rc = cli_usage("run", "--alpha-grid is LO:STEP:HI within [0, 1], not '%s'", optarg);
				goto done;
			}
			a.o.alpha_lo = lo; a.o.alpha_step = st; a.o.alpha_hi = hi;
			break;
		}
		case O_SEARCH_TOKENS:
			if (cli_int("run", "--search-tokens", optarg, 1, 1 << 30, &v) < 0)
				goto done;
			a.o.search_tokens = (int)v;
			break;
		case 'h':
			if (dist_rank() == 0)
				cli_cmd_help("run");
			rc = 0;
			goto done;
		default:
			rc = cli_usage("run", "unknown or incomplete option '%s'", argv[optind - 1]);
			goto done;
		}
	}
	if (optind != argc) {
		rc = cli_usage("run", "unexpected argument '%s'", argv[optind]);
		goto done;
	}
	/* options that contradict each other, or the method, are refused
	 * rather than resolved in silence */
	{
#define GIVEN(o) given[(o) - O_MODEL]
		int m = a.o.method, smooths = a.all || m != METHOD_RTN, cmc = a.all || m == METHOD_MAS_CMC;
		int learns = a.all || method_learns(m);
		static const struct { int opt; const char *name; } cmc_opts[] = {
			{O_RANK, "--rank"}, {O_RANK_FLOOR, "--rank-floor"}, {O_SVD, "--svd"}, {O_NO_WHITEN, "--no-whiten"},
			{O_WHITENER, "--whitener"}, {O_RSVD, "--rsvd"},
			{O_CMC_TARGET, "--cmc-target"}, {O_CMC_DIAG, "--cmc-diagnostics"}, {O_RANK_BUDGET, "--rank-budget"},
			{O_RANK_TARGET, "--rank-target"},
		}, learning_opts[] = {
			{O_EPOCHS, "--epochs"}, {O_LR, "--lr"}, {O_LOSS, "--loss"}, {O_LOSS_WEIGHTS, "--loss-weights"},
			{O_TIE, "--tie"},
		};
		const char *bad = NULL, *why = NULL;
		if (GIVEN(O_DB) && no_db) {
			rc = cli_usage("run", "--db and --no-db contradict each other: one records, the other does not");
			goto done;
		}
		if (GIVEN(O_RANK_BUDGET) + GIVEN(O_RANK_TARGET) + GIVEN(O_RANK) > 1) {
			rc = cli_usage("run", "--rank, --rank-budget and --rank-target each choose the ranks: give one");
			goto done;
		}
		if (GIVEN(O_RANK_OBJECTIVE) && !GIVEN(O_RANK_BUDGET) && !GIVEN(O_RANK_TARGET)) {
			rc = cli_usage("run", "--rank-objective has no effect without --rank-budget or --rank-target");
			goto done;
		}
		if (GIVEN(O_ALPHA) && !smooths)
			bad = "--alpha", why = "rtn smooths nothing (methods sq, mas, mas-cmc, usq)";
		else if (GIVEN(O_GRID) && !a.o.search)
			bad = "--alpha-grid", why = "it is the grid of --alpha search";
		else if (GIVEN(O_SEARCH_TOKENS) && !a.o.search)
			bad = "--search-tokens", why = "it is the batch of --alpha search";
		for (size_t i = 0; bad == NULL && i < sizeof cmc_opts / sizeof cmc_opts[0]; i++)
			if (GIVEN(cmc_opts[i].opt) && !cmc)
				bad = cmc_opts[i].name, why = "only mas-cmc compensates";
		for (size_t i = 0; bad == NULL && i < sizeof learning_opts / sizeof learning_opts[0]; i++)
			if (GIVEN(learning_opts[i].opt) && !learns)
				bad = learning_opts[i].name, why = "only mas, mas-cmc and usq learn their factors";
			else if (i > 0 && GIVEN(learning_opts[i].opt) && a.o.epochs == 0)
				bad = learning_opts[i].name, why = "--epochs 0 learns nothing";
		if (bad != NULL) {
			rc = cli_usage("run", "%s has no effect with --method %s%s: %s", bad, a.all ? "all" : method_name(m),
			    a.o.epochs == 0 && learns ? " --epochs 0" : "", why);
			goto done;
		}
#undef GIVEN
	}
	cli_set_threads(a.threads);
	/* under mpirun rank 0 finds (or writes) the default inputs first, so
	 * that the others never write the demo beside it; every rank learns
	 * whether each could before any waits for another */
	{
		int drc = 0;
		if (dist_rank() == 0)
			drc = cli_default_inputs(&a.model_dir, &a.calib_path, &err);
		if (dist_size() > 1 && dist_agree(drc < 0, &err))
			drc = -1;
		if (drc == 0 && dist_rank() != 0)
			drc = cli_default_inputs(&a.model_dir, &a.calib_path, &err);
		if (dist_size() > 1 && dist_agree(drc < 0, &err))
			drc = -1;
		if (drc < 0) {
			rc = cli_fail(&err);
			goto done;
		}
	}
	if (!no_db) {
		if (a.db_path == NULL)
			a.db_path = getenv("MASQ_DB") && *getenv("MASQ_DB") ? getenv("MASQ_DB") : SDB_DEFAULT_PATH;
		/* under mpirun rank 0 alone opens the database; the others
		 * learn whether it could */
		int orc = dist_rank() == 0 ? sdb_open(&db, a.db_path, SDB_CREATE, &err) : 0;
		if (dist_size() > 1 && dist_agree(orc < 0, &err))
			orc = -1;
		if (orc < 0) {
			rc = cli_fail(&err);
			goto done;
		}
		a.follow = dist_rank() != 0;
	} else {
		a.db_path = NULL;
	}

	int methods[METHOD_COUNT], nm = 0;
	if (a.all)
		for (int k = 0; k < METHOD_COUNT; k++)
			methods[nm++] = k;
	else
		methods[nm++] = a.o.method;
	sess **ss = xcalloc((size_t)nm, sizeof *ss);
	int ok = 1;
	for (int i = 0; i < nm && ok; i++) {
		if (run_method(&ss[i], db, &a, methods[i], &err) < 0)
			ok = 0;
	}
	if (!ok) {
		rc = cli_fail(&err);
	} else if (dist_rank() != 0) {
		rc = 0;	/* rank 0 reports the run */
	} else if (a.json) {
		json_t *doc;
		if (nm == 1) {
			doc = run_json(ss[0], &a, methods[0]);
		} else {
			doc = json_object();
			json_t *runs = json_array();
			json_object_set_new(doc, "method", json_string("all"));
			for (int i = 0; i < nm; i++)
				json_array_append_new(runs, run_json(ss[i], &a, methods[i]));
			json_object_set_new(doc, "runs", runs);
		}
		json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		printf("\n");
		json_decref(doc);
		rc = 0;
	} else {
		const sess_view *v0 = sess_view_get(ss[0]);
		char learn[160] = "";
		if (a.o.epochs > 0)
			snprintf(learn, sizeof learn, "; mas, mas-cmc, usq learn %d epoch%s (lr %g, %s%s)", a.o.epochs,
			    a.o.epochs == 1 ? "" : "s", a.o.lr, learn_loss_name(a.o.loss), a.o.tie ? ", tied" : "");
		printf("masq run: W%dA%d%s, alpha %s, CMC rank %g (floor %d)%s%s\n", a.o.wbits, a.o.abits,
		    v0->wgroup > 0 ? " (weights in asymmetric groups)" : "",
		    a.o.search ? "searched" : "given", a.o.rank, a.o.rank_floor, a.o.whiten ? "" : ", unwhitened", learn);
		printf("model %s; calibration %s: %d tokens (text %d, vision %d, audio %d)\n", a.model_dir,
		    a.calib_path, v0->tokens, v0->tokens_mod[0], v0->tokens_mod[1], v0->tokens_mod[2]);
		if (db != NULL) {
			printf("recorded in %s as session%s", a.db_path, nm > 1 ? "s" : "");
			for (int i = 0; i < nm; i++)
				printf(" %lld", (long long)sess_view_get(ss[i])->id);
			printf("\n");
		}
		printf("\n");
		if (nm == 1) {
			printf("layer output SQNR (dB) against the FP model, each quantized layer feeding the next:\n");
			print_table(ss[0], a.verbose);
			if (a.alloc != NULL)
				print_alloc(ss[0], a.alloc);
			print_summary(ss[0]);
		} else {
			printf("layer output SQNR (dB) per method, text / vision / audio:\n%-5s", "layer");
			for (int i = 0; i < nm; i++)
				printf(" | %-20s", method_name(methods[i]));
			printf("\n");
			for (int l = 0; l < v0->n_layers; l++) {
				printf("%-5d", l);
				for (int i = 0; i < nm; i++) {
					const double *sq = sess_layer_result(ss[i], l)->sqnr;
					printf(" | %6.2f %6.2f %6.2f", sq[0], sq[1], sq[2]);
				}
				printf("\n");
			}
			printf("%-5s", "model");
			for (int i = 0; i < nm; i++) {
				const pipe_summary *sm = sess_view_get(ss[i])->summary;
				printf(" | %6.2f %6.2f %6.2f", sm->sqnr[0], sm->sqnr[1], sm->sqnr[2]);
			}
			printf("\n%-5s", "KL");
			for (int i = 0; i < nm; i++)
				printf(" | %-20.4g", sess_view_get(ss[i])->summary->kl_text);
			printf("\n");
		}
		rc = 0;
	}
	for (int i = 0; i < nm; i++)
		sess_free(ss[i]);
	free(ss);
done:
	if (db != NULL)
		sdb_close(db);
	json_decref(a.alloc);
	free(a.sets);
	free(a.model_dir);
	free(a.calib_path);
	return rc;
}
