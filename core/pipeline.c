#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/blas.h"
#include "core/dist.h"
#include "core/pipeline.h"
#include "core/quant.h"

const double pipe_rank_curve[PIPE_RANK_CURVE] = {
	1.0 / 128, 1.0 / 64, 1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0 / 2, 1.0
};

void
pipe_opts_default(pipe_opts *o)
{
	memset(o, 0, sizeof *o);
	o->method = METHOD_MAS_CMC;
	o->wbits = 4;
	o->abits = 8;
	o->wgroup = -1;
	o->alpha = 0.5f;
	o->alpha_lo = 0.2f;
	o->alpha_hi = 0.9f;
	o->alpha_step = 0.05f;
	o->search_tokens = 1024;
	o->rank = 0.05;
	o->rank_floor = CMC_RANK_FLOOR;
	o->whiten = 1;
	o->svd_mode = CMC_SVD_AUTO;
	o->sample_cap = 256;
	o->seed = 20260305u;
	o->sqnr_floor = METRICS_FLOOR_MEAN;
	o->epochs = 0;	/* the front ends ask for learning (masq run: 2) */
	o->lr = 5e-2f;
	o->loss = LEARN_LOSS_MAE;
	o->lambda[MOD_TEXT] = 1.0f;
	o->lambda[MOD_VISION] = 0.5f;
	o->lambda[MOD_AUDIO] = 1.0f;
	o->cmc_dtype = ST_F16;
	o->cmc_precision = CMC_F32;
	o->whiten_kind = CMC_WHITEN_CHOL;
	o->rsvd_gram = 1;
	o->compute = ENGINE_F32;
}

int
pipe_opts_check(const pipe_opts *o, masq_err *err)
{
	if (o->method < 0 || o->method >= METHOD_COUNT)
		return masq_err_set(err, MASQ_ERR_USAGE, "method %d is not rtn, sq, mas, mas-cmc or usq", o->method);
	if (setting_check_bits(o->wbits, o->abits, err) < 0)
		return -1;
	if (o->wgroup < -1 || o->wgroup > (1 << 20) || o->wgroup == 1)
		return masq_err_set(err, MASQ_ERR_USAGE, "the weight group must be 0 (per channel) or 2 to %d, not %d",
		    1 << 20, o->wgroup);
	if (setting_check_alpha(o->alpha, err) < 0)
		return -1;
	/* the grid's points as pipe_search_alpha counts them, compared before
	 * the conversion to int: a tiny step makes a count no int holds */
	float points = (o->alpha_hi - o->alpha_lo) / o->alpha_step + 1.5f;
	if (!(o->alpha_step > 0.0f) || !(o->alpha_lo >= 0.0f) || !(o->alpha_hi <= 1.0f) || o->alpha_lo > o->alpha_hi ||
	    !(points < PIPE_ALPHA_MAX + 1))
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "the alpha grid %g:%g:%g is not within [0, 1], is empty or has more than %d points", o->alpha_lo,
		    o->alpha_step, o->alpha_hi, PIPE_ALPHA_MAX);
	if (o->search_tokens < 1 || o->search_tokens > (1 << 30))
		return masq_err_set(err, MASQ_ERR_USAGE, "the search's token budget must be 1 to %d, not %d", 1 << 30,
		    o->search_tokens);
	if (setting_check_rank(o->rank, err) < 0)
		return -1;
	if (o->rank_floor < 0 || o->rank_floor > (1 << 20))
		return masq_err_set(err, MASQ_ERR_USAGE, "the rank floor must be 0 to %d, not %d", 1 << 20, o->rank_floor);
	if (o->svd_mode != CMC_SVD_FULL && o->svd_mode != CMC_SVD_RANDOMIZED && o->svd_mode != CMC_SVD_AUTO)
		return masq_err_set(err, MASQ_ERR_USAGE, "svd mode %d is not full, randomized or auto", o->svd_mode);
	if (o->sample_cap < 1 || o->sample_cap > (1 << 20))
		return masq_err_set(err, MASQ_ERR_USAGE, "the token sample must hold 1 to %d rows, not %d", 1 << 20,
		    o->sample_cap);
	if ((o->search | o->cmc_quant_target | o->whiten | o->cmc_diag | o->tie | o->sqnr_floor) & ~1)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "search, cmc_quant_target, whiten, cmc_diag, tie and sqnr_floor are 0 or 1");
	if (o->cmc_dtype != ST_F32 && o->cmc_dtype != ST_F16 && o->cmc_dtype != ST_BF16)
		return masq_err_set(err, MASQ_ERR_USAGE, "the compensation is stored as F32, F16 or BF16, not dtype %d",
		    o->cmc_dtype);
	if (o->cmc_precision != CMC_F32 && o->cmc_precision != CMC_F64)
		return masq_err_set(err, MASQ_ERR_USAGE, "CMC's products are in f32 or f64, not precision %d",
		    o->cmc_precision);
	if (o->whiten_kind != CMC_WHITEN_EIG && o->whiten_kind != CMC_WHITEN_CHOL)
		return masq_err_set(err, MASQ_ERR_USAGE, "CMC whitens with eig or cholesky, not %d", o->whiten_kind);
	if (o->rsvd_gram != 0 && o->rsvd_gram != 1)
		return masq_err_set(err, MASQ_ERR_USAGE, "the randomized SVD's steps are gram (1) or householder (0), not %d",
		    o->rsvd_gram);
	if (o->compute != ENGINE_F32 && o->compute != ENGINE_BF16)
		return masq_err_set(err, MASQ_ERR_USAGE, "the forward computes in f32 or bf16, not %d", o->compute);
	if (setting_check_epochs(o->epochs, err) < 0 || setting_check_lr(o->lr, err) < 0 ||
	    setting_check_lambda(o->lambda, err) < 0)
		return -1;
	if (o->loss < 0 || o->loss >= LEARN_LOSS_COUNT)
		return masq_err_set(err, MASQ_ERR_USAGE, "loss %d is not mae or mse", o->loss);
	if (!(o->eval_split >= 0 && o->eval_split <= PIPE_SPLIT_MAX))
		return masq_err_set(err, MASQ_ERR_USAGE, "the held-out split is a share of the sequences in [0, %g], not %g",
		    PIPE_SPLIT_MAX, o->eval_split);
	return 0;
}

/* The held-out sequences: split * n_seqs of them to the nearest, at least one,
 * leaving at least one to fit, drawn from their own seeded stream. */
static int
split_init(pipeline *p, masq_err *err)
{
	const calib *all = p->all;
	int S = all->n_seqs, k = (int)floor(p->opts.eval_split * S + 0.5);
	if (p->opts.eval_split <= 0)
		return 0;
	if (k < 1)
		k = 1;
	if (k >= S)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "a held-out split of %g leaves no sequence to fit: the calibration set has %d", p->opts.eval_split, S);
	int *idx = xmalloc(xmul((size_t)S, sizeof(int)));
	rng g;
	rng_init(&g, p->opts.seed ^ 0x5eedfeedc0ffeeULL);
	for (int s = 0; s < S; s++)
		idx[s] = s;
	for (int s = S - 1; s > 0; s--) {
		int j = (int)rng_below(&g, (uint64_t)s + 1), t = idx[s];
		idx[s] = idx[j];
		idx[j] = t;
	}
	p->held = xcalloc((size_t)S, 1);
	for (int i = 0; i < k; i++)
		p->held[idx[i]] = 1;
	free(idx);
	p->mod_fit = xmalloc((size_t)p->c->n_tokens + 1);
	p->mod_held = xmalloc((size_t)p->c->n_tokens + 1);
	for (int s = 0, t0 = 0; s < p->c->n_seqs; t0 += p->c->seq_lens[s], s++)
		for (int t = t0; t < t0 + p->c->seq_lens[s]; t++) {
			p->mod_fit[t] = p->held[p->seq0 + s] ? MOD_SKIP : p->c->modality[t];
			p->mod_held[t] = p->held[p->seq0 + s] ? p->c->modality[t] : MOD_SKIP;
		}
	if (p->sharded) {
		p->mod_fit_all = xmalloc((size_t)all->n_tokens + 1);
		for (int s = 0, t0 = 0; s < S; t0 += all->seq_lens[s], s++)
			for (int t = t0; t < t0 + all->seq_lens[s]; t++)
				p->mod_fit_all[t] = p->held[s] ? MOD_SKIP : all->modality[t];
	}
	return 0;
}

/* ---- life cycle ------------------------------------------------------------ */

int
pipe_init(pipeline *p, const model *m, const calib *c, const pipe_opts *o, masq_err *err)
{
	return pipe_init_shard(p, m, c, c, 0, o, err);
}

int
pipe_init_shard(pipeline *p, const model *m, const calib *c, const calib *all, int seq0,
    const pipe_opts *o, masq_err *err)
{
	size_t n = (size_t)c->n_tokens * m->cfg.hidden;

	memset(p, 0, sizeof *p);
	MASQ_ASSERT(seq0 >= 0 && seq0 + c->n_seqs <= all->n_seqs);
	p->all = all;
	p->seq0 = seq0;
	for (int s = 0; s < seq0; s++)
		p->tok0 += all->seq_lens[s];
	p->sharded = all != c;
	if (c->hidden != m->cfg.hidden)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "the calibration set's width %d is not the model's hidden size %d", c->hidden,
		    m->cfg.hidden);
	if (pipe_opts_check(o, err) < 0)
		return -1;
	if (pipe_check_rank(&m->cfg, o->rank, err) < 0)
		return masq_err_prefix(err, "--rank");
	if (model_deepstack_check(&m->cfg, c->n_deepstack, err) < 0 ||
	    engine_compute_check(&m->cfg, o->compute, err) < 0)
		return -1;
	p->m = m;
	p->c = c;
	p->opts = *o;
	if (p->opts.wgroup < 0)
		p->opts.wgroup = o->abits >= 16 ? 128 : 0;
	p->n_layers = m->cfg.n_layers;
	p->settings = xcalloc((size_t)p->n_layers, sizeof *p->settings);
	p->results = xcalloc((size_t)p->n_layers, sizeof *p->results);
	for (int l = 0; l < p->n_layers; l++) {
		layer_setting_init(&p->settings[l], o->method, o->alpha, o->rank, o->rank_floor);
		if (setting_set_learning(&p->settings[l], o->epochs, o->lr, o->loss, o->lambda, o->tie, err) < 0)
			MASQ_ASSERT(!"pipe_opts_check passed the learning settings");
	}
	p->h_fp = xmalloc(xmul(n, sizeof(float)));
	p->h_fp_out = xmalloc(xmul(n, sizeof(float)));
	p->h_q = xmalloc(xmul(n, sizeof(float)));
	p->h_q_out = xmalloc(xmul(n, sizeof(float)));
	memcpy(p->h_fp, c->embeds, n * sizeof(float));
	memcpy(p->h_q, c->embeds, n * sizeof(float));
	if (method_learns(o->method) && o->epochs > 0) {
		p->h_train = xmalloc(xmul(n, sizeof(float)));
		p->h_train_out = xmalloc(xmul(n, sizeof(float)));
		p->h_fpe = xmalloc(xmul(n, sizeof(float)));
		p->h_fpe_out = xmalloc(xmul(n, sizeof(float)));
		memcpy(p->h_train, c->embeds, n * sizeof(float));
		memcpy(p->h_fpe, c->embeds, n * sizeof(float));
	}
	engine_init(&p->eng, &m->cfg);
	engine_set_compute(&p->eng, o->compute);
	p->batch = (engine_batch){.n_tokens = c->n_tokens, .n_seqs = c->n_seqs,
	    .seq_lens = c->seq_lens, .pos = c->pos, .modality = c->modality};
	rng_init(&p->g, o->seed);
	p->summary.kl_text = NAN;
	for (int r = 0; r < STATS_ROWS; r++)
		p->summary.sqnr_held[r] = p->summary.mae_held[r] = NAN;
	for (int l = 0; l < p->n_layers; l++)
		for (int r = 0; r < STATS_ROWS; r++)
			p->results[l].sqnr_held[r] = p->results[l].mae_held[r] = NAN;
	if (split_init(p, err) < 0) {
		pipe_done(p);
		return -1;
	}
	p->t_start = masq_now();
	return 0;
}

static void
pipe_learned_drop(pipeline *p)
{
	for (int k = 0; k < LEARN_LINS; k++)
		for (int m = 0; m < MOD_COUNT; m++) {
			free(p->learned[k][m]);
			p->learned[k][m] = NULL;
		}
	p->learned_valid = 0;
}

static void wcache_free(struct wcache *wc);
static void wcache_release(pipeline *p, struct wcache *wc, int grp);

int
pipe_rank_max(const model_config *c)
{
	int best = 0;
	for (int k = 0; k < LIN_COUNT; k++) {
		int out, in;
		if (k == LIN_DOWN)
			continue;
		layer_lin_shape(c, k, &out, &in);
		int r = in < out ? in : out;
		if (r > best)
			best = r;
	}
	return best;
}

int
pipe_check_rank(const model_config *c, double rank, masq_err *err)
{
	int mx = pipe_rank_max(c);
	if (rank > 1 && rank > mx)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "rank %g is more than any compensated linear can hold: min(in, out) is at most %d on this model",
		    rank, mx);
	return 0;
}

static void
pipe_release_layer(pipeline *p)
{
	/* the bases hold the Gram matrices' storage: they go with the statistics */
	if (p->wc != NULL) {
		wcache_free(p->wc);
		free(p->wc);
		p->wc = NULL;
	}
	if (!p->calibrated)
		return;
	engine_release_weights(&p->eng);
	layer_weights_done(&p->w);
	p->w_spent = 0;
	for (int s = 0; s < SITE_COUNT; s++)
		stats_site_done(&p->st[s]);
	for (int k = 0; k < LIN_COUNT; k++) {
		free(p->wmax_lin[k]);
		p->wmax_lin[k] = NULL;
	}
	for (int g = 0; g < GRP_COUNT; g++) {
		free(p->wmax_grp[g]);
		p->wmax_grp[g] = NULL;
	}
	if (p->plan_valid)
		qplan_layer_done(&p->plan);
	p->plan_valid = 0;
	pipe_learned_drop(p);
	p->train_out_valid = 0;
	p->calibrated = 0;
}

/* -1 with a message when a one-pass quantize has freed the layer's
 * weights (w_spent); else 0. */
static int
pipe_weights_here(const pipeline *p, masq_err *err)
{
	if (p->w_spent)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "layer %d: its weights were freed after it was quantized (a one-pass run); "
		    "calibrate the layer again", p->layer);
	return 0;
}

/* pipe_weights_here, then (lazy_w) load every linear not loaded: for what
 * runs the layer's linears more than once (training, searches, previews). */
static int
pipe_weights_all(pipeline *p, masq_err *err)
{
	if (pipe_weights_here(p, err) < 0)
		return -1;
	for (int k = 0; k < LIN_COUNT; k++)
		if (layer_weight_fetch(&p->w, p->m, k, err) < 0)
			return masq_err_prefix(err, "layer %d", p->layer);
	return 0;
}

void
pipe_done(pipeline *p)
{
	pipe_release_layer(p);
	engine_done(&p->eng);
	free(p->settings);
	for (int l = 0; l < p->n_layers && p->results != NULL; l++)
		free(p->results[l].learn.loss);
	free(p->results);
	free(p->h_train);
	free(p->h_train_out);
	free(p->h_fpe);
	free(p->h_fpe_out);
	free(p->h_fp);
	free(p->h_fp_out);
	free(p->h_q);
	free(p->h_q_out);
	free(p->held);
	free(p->mod_fit);
	free(p->mod_held);
	free(p->mod_fit_all);
	memset(p, 0, sizeof *p);
}

/* ---- calibration: the FP forward with statistics ------------------------------ */

struct calib_ctx {
	pipeline *p;
	const uint8_t *modality;
	masq_err *err;
	int failed;		/* lazy_w: a linear's weight did not load */
};

/* Report progress from inside a command. */
static void
work(const pipeline *p, double frac, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void
work(const pipeline *p, double frac, const char *fmt, ...)
{
	char what[96];
	va_list ap;
	if (p->work == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	p->work(p->work_ctx, frac, what);
}

static void
calib_observe(void *ctx, int layer, int site, const float *x, int n, int d)
{
	struct calib_ctx *cc = ctx;
	(void)layer;
	MASQ_ASSERT(cc->p->st[site].d == d);
	stats_site_add(&cc->p->st[site], x, cc->modality, n, &cc->p->g);
	/* the site's Gram matrices are complete (one call a site): half their
	 * memory until a basis takes them (sharded: once reduced) */
	if (!cc->p->sharded)
		stats_gram_pack(&cc->p->st[site]);
	work(cc->p, (double)(site + 1) / SITE_COUNT, "statistics at the %s input (%d of %d)", engine_site_name(site),
	    site + 1, SITE_COUNT);
}

/* Linear k's column maxima (its own, for MAS) from its loaded weight. */
static void
lin_wmax(pipeline *p, int k)
{
	int out, in;
	layer_lin_shape(&p->m->cfg, k, &out, &in);
	if (p->wmax_lin[k] == NULL)
		p->wmax_lin[k] = xcalloc((size_t)in, sizeof(float));
	smooth_col_absmax(p->wmax_lin[k], p->w.w[k], out, in);
}

/* Free every loaded linear weight but keep's (-1: all of them). */
static void
lazy_release(pipeline *p, int keep)
{
	for (int k = 0; k < LIN_COUNT; k++)
		if (k != keep && p->w.w[k] != NULL) {
			free(p->w.w[k]);
			p->w.w[k] = NULL;
		}
}

/* The calibration forward's linears with lazy_w: load the weight, take its
 * column maxima and let the engine run its own GEMMs (return 1); the
 * previous linear's weight goes first (the engine reads no linear's
 * weight after its own linear).  A weight that does not load leaves zeros
 * in y and the error in cc. */
static int
calib_linear(void *ctx, const layer_weights *w, int lin, const float *x, int n, float *y)
{
	struct calib_ctx *cc = ctx;
	pipeline *p = cc->p;
	int out, in;
	(void)x;
	MASQ_ASSERT(w == &p->w && p->lazy_w);
	lazy_release(p, lin);
	if (!cc->failed && layer_weight_fetch(&p->w, p->m, lin, cc->err) == 0) {
		lin_wmax(p, lin);
		return 1;
	}
	cc->failed = 1;
	layer_lin_shape(&p->m->cfg, lin, &out, &in);
	memset(y, 0, xmul(xmul((size_t)n, (size_t)out), sizeof(float)));
	return 0;
}

/* One site's statistics over every rank: maxima and counts exactly, sums
 * in rank order, the reservoir's rows from the ranks that hold them. */
static void
stats_reduce(site_stats *st)
{
	size_t rows = xmul(STATS_ROWS, (size_t)st->d);
	dist_max_f32(st->absmax, rows);
	dist_sum_f64(st->abssum, rows);
	dist_sum_i64((int64_t *)st->hist, STATS_ROWS * STATS_HIST_BINS);
	dist_sum_i64(st->count, STATS_ROWS);
	for (int m = 0; m < MOD_COUNT; m++) {
		if (st->gram[m] != NULL)
			dist_sum_f64(st->gram[m], xmul((size_t)st->d, (size_t)st->d));
		if (st->sample[m] != NULL && st->sample_n[m] > 0)
			dist_merge_f32(st->sample[m], xmul((size_t)st->sample_n[m], (size_t)st->d));
	}
}

/* A metrics accumulator over every rank (sums in rank order). */
static void
acc_reduce(metrics_acc *a)
{
	dist_sum_f64(a->sqnr_sum, MOD_COUNT + 1);
	dist_sum_f64(a->abs_sum, MOD_COUNT + 1);
	dist_sum_f64(a->elems, MOD_COUNT + 1);
	dist_sum_i64(a->tokens, MOD_COUNT + 1);
}

int
pipe_calibrate(pipeline *p, masq_err *err)
{
	const model_config *c = &p->m->cfg;
	int dims[SITE_COUNT] = {c->hidden, c->n_heads * c->head_dim, c->hidden, c->intermediate};
	int gram = 0;
	double t0 = masq_now();

	if (p->layer >= p->n_layers)
		return masq_err_set(err, MASQ_ERR_USAGE, "all %d layers are done", p->n_layers);
	pipe_release_layer(p);
	/* One stream per layer, from the seed and the layer alone: a layer's
	 * draws (reservoir, randomized SVD) never depend on what ran before, so
	 * a resumed run gives what an uninterrupted one gives. */
	rng_init(&p->g, p->opts.seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(p->layer + 1)));
	p->lazy_w = p->one_pass && !p->sharded && p->h_train == NULL;
	int rc = layer_weights_load_parts(&p->w, p->m, p->layer, !p->lazy_w, err);
	if (p->sharded && dist_agree(rc < 0, err)) {
		if (rc == 0)
			layer_weights_done(&p->w);
		return masq_err_prefix(err, "layer %d", p->layer);
	}
	if (rc < 0)
		return -1;
	/* CMC whitens vision and audio inputs of every smoothed site (every
	 * rank keeps them, whether or not its share has such tokens). */
	if (p->all->n_mod[MOD_VISION])
		gram |= STATS_GRAM_VISION;
	if (p->all->n_mod[MOD_AUDIO])
		gram |= STATS_GRAM_AUDIO;
	for (int s = 0; s < SITE_COUNT; s++) {
		stats_site_init(&p->st[s], dims[s], s == SITE_DOWN ? 0 : gram, p->lazy_w ? 0 : p->opts.sample_cap);
		/* the reservoir one process would draw, site by site as the
		 * forward offers them */
		if (p->sharded)
			stats_reservoir_plan(&p->st[s], p->mod_fit_all ? p->mod_fit_all : p->all->modality,
			    p->all->n_tokens, p->tok0, p->c->n_tokens, &p->g);
	}
	/* Weight column maxima, once per layer: each linear's own (MAS) here,
	 * or (lazy_w) as the calibration forward loads it; its group's after */
	for (int k = 0; k < LIN_COUNT && !p->lazy_w; k++)
		lin_wmax(p, k);
	p->calibrated = 1;

	struct calib_ctx cc = {p, p->mod_fit != NULL ? p->mod_fit : p->c->modality, err, 0};
	engine_ops ops = {.ctx = &cc, .observe = calib_observe, .linear = p->lazy_w ? calib_linear : NULL};
	memcpy(p->h_fp_out, p->h_fp, (size_t)p->c->n_tokens * c->hidden * sizeof(float));
	engine_layer_forward(&p->eng, &p->w, &p->batch, p->h_fp_out, &ops);
	if (p->lazy_w)
		lazy_release(p, -1);
	if (cc.failed) {
		pipe_release_layer(p);
		return masq_err_prefix(err, "layer %d", p->layer);
	}
	/* a group's maxima (SmoothQuant's, over the concatenated q, k, v or
	 * gate, up) from its linears' */
	for (int k = 0; k < LIN_COUNT; k++) {
		int out, in, g = smooth_lin_group(k);
		if (g < 0)
			continue;
		layer_lin_shape(c, k, &out, &in);
		if (p->wmax_grp[g] == NULL)
			p->wmax_grp[g] = xcalloc((size_t)in, sizeof(float));
		for (int j = 0; j < in; j++)
			if (p->wmax_lin[k][j] > p->wmax_grp[g][j])
				p->wmax_grp[g][j] = p->wmax_lin[k][j];
	}
	if (p->sharded)
		for (int s = 0; s < SITE_COUNT; s++) {
			stats_reduce(&p->st[s]);
			stats_gram_pack(&p->st[s]);
		}
	for (int s = 0; s < SITE_COUNT; s++)
		stats_misalign(&p->st[s], &p->results[p->layer].mis[s]);
	p->results[p->layer].t_calib = masq_now() - t0;
	return 0;
}

/* ---- the quantized linear ----------------------------------------------------- */

/* The whitening basis of one input site and modality: the
 * eigendecomposition of its Gram matrix, built in the Gram's own storage
 * the first time a linear of the site is compensated, and kept while the
 * layer is calibrated (it does not depend on the smoothing factors, so
 * every linear of the site, every alpha and every preview shares it). */
struct wcache {
	int state;		/* 0 not built (the Gram is in the statistics), 1 built (in the Gram's storage), -1 LAPACK failed, 2 released (one_pass) */
	cmc_basis b;
};

struct qctx {
	pipeline *p;
	const layer_setting *ls;
	int method;			/* how the layer runs (ls->method, or mas where a search stands in for mas-cmc) */
	const uint8_t *modality;	/* (n) of the batch being run */
	int n;
	int *rows[MOD_COUNT];		/* token indices of each modality in the batch */
	int nrows[MOD_COUNT];
	int present[MOD_COUNT];		/* the modality's factors are made: it has rows here, or (sharded) on some rank */
	/* the batch's sequences: each linear runs as one GEMM a sequence (as
	 * the engine's FP linears do), so a token's result does not depend on
	 * the batch around it; n_seqs 0: one block (a preview's sample) */
	int n_seqs;
	const int32_t *seq_lens;
	int measure;			/* per-linear metrics and CMC diagnostics */
	metrics_acc acc[LIN_COUNT];
	metrics_acc acc0[LIN_COUNT];	/* measure, mas-cmc: the linear without compensation */
	int have0[LIN_COUNT];
	pipe_lin_result *lr;		/* (LIN_COUNT) where diagnostics go, or NULL */
	qplan_layer *plan;		/* where factors and CMC factors go, or NULL */
	struct wcache *wc;		/* (GRP_COUNT * MOD_COUNT): the pipeline's bases, or NULL: no CMC */
	/* sharded, mas-cmc: every compensated linear and modality's factors,
	 * computed by the rank that owns the pair and broadcast
	 * (cmc_distribute), or NULL: lin_cmc computes them */
	struct cmc_pre *pre;
	masq_err *err;
	int failed;
};

const float *
pipe_factor(const pipeline *p, const layer_setting *ls, int method, int lin, int row, float *s)
{
	int grp = smooth_lin_group(lin), in = 0, out;

	if (method == METHOD_RTN || grp < 0)
		return NULL;
	if (method == METHOD_SQ && grp == GRP_O)
		return NULL;	/* SmoothQuant smooths the two norm mappings only */
	layer_lin_shape(&p->m->cfg, lin, &out, &in);
	if (method_learns(method) && setting_learns(ls) && p->learned_valid &&
	    setting_same_learning(&p->learned_for, ls)) {
		memcpy(s, p->learned[lin][row == ALPHA_UNIFIED ? 0 : row], (size_t)in * sizeof(float));
		return s;
	}
	const float *R, *wmax;
	float alpha;
	/* q, o, up lead their groups with their own weight (MAS, USQ) */
	const float *lead = p->wmax_lin[grp == GRP_QKV ? LIN_Q : grp == GRP_O ? LIN_O : LIN_UP];
	if (method == METHOD_SQ) {
		/* one factor per mapping, w over every weight of the mapping */
		wmax = p->wmax_grp[grp];
		R = p->st[grp].absmax + (size_t)STATS_ALL * in;
		alpha = ls->alpha[grp][ALPHA_UNIFIED];
	} else if (method == METHOD_USQ) {
		/* the reference's unified baseline: every token, the lead's weight */
		wmax = lead;
		R = p->st[grp].absmax + (size_t)STATS_ALL * in;
		alpha = ls->alpha[grp][ALPHA_UNIFIED];
	} else {
		wmax = lead;
		R = p->st[grp].absmax + (size_t)row * in;
		alpha = ls->alpha[grp][row];
	}
	smooth_factors(s, R, wmax, in, alpha);
	return s;
}

/* The factor of linear lin for alpha row `row` in the forward q runs. */
static const float *
lin_factor(struct qctx *q, int lin, int method, int row, float *s)
{
	return pipe_factor(q->p, q->ls, method, lin, row, s);
}

/* dst (rows, in) = W diag(s) (s NULL: W) for W's first rows rows. */
static void
scale_cols(float *dst, const float *W, const float *s, int rows, int in)
{
	if (s == NULL) {
		memcpy(dst, W, (size_t)rows * in * sizeof(float));
		return;
	}
	for (int o = 0; o < rows; o++)
		for (int j = 0; j < in; j++)
			dst[(size_t)o * in + j] = W[(size_t)o * in + j] * s[j];
}

/* Wq (out, in) = Q(W diag(s)) with the pipeline's weight quantizer. */
static void
quant_weight(const pipeline *p, float *Wq, const float *W, const float *s, int out, int in)
{
	scale_cols(Wq, W, s, out, in);
	if (p->opts.wbits >= 16)
		return;
	if (p->opts.wgroup > 0)
		quant_weight_groups(Wq, Wq, out, in, p->opts.wbits, p->opts.wgroup);
	else
		quant_weight_rows(Wq, Wq, out, in, p->opts.wbits);
}

/*
 * The integer GEMM (igemm.h) runs a quantized linear whenever its grids are
 * integer ones it can take: activations quantized per token at 8 bits or
 * fewer, weights per output channel at 8 bits or fewer.  Groups (their
 * zero points) and weight-only sessions keep the float product.
 * MASQ_QGEMM=float forces the float product everywhere (igemm_enabled;
 * the numeric environment records it as "qgemm").
 */
int
pipe_qgemm_int(const pipe_opts *o)
{
	return igemm_enabled() && o->abits <= 8 && o->wbits <= 8 && o->wgroup == 0;
}

/* A quantized weight in the forms the forward takes: on the float path
 * Wq (out, in), the fake-quant float weight; where the integer GEMM runs
 * (pipe_qgemm_int), its levels packed (ib.b != NULL) and per-row scales
 * instead, and the levels unpacked in lv when asked for (compensation
 * forms its residual from them). */
struct qweight {
	float *Wq;
	igemm_b ib;
	float *scale;
	int8_t *lv;
};

/* The integer path: pack w's levels for the integer GEMM and free them
 * (qweight_row reads them no more); nothing on the float path. */
static void
qweight_pack(struct qweight *w, int out, int in)
{
	if (w->lv == NULL)
		return;
	igemm_b_pack(&w->ib, w->lv, out, in);
	free(w->lv);
	w->lv = NULL;
}

/* Rows of W diag(s) quantized at a time on the integer path. */
#define QWEIGHT_BLOCK 64

/* w = Q(W diag(s)) (s NULL: W).  On the float path into Wq, the caller's
 * (out, in) array; on the integer path (pipe_qgemm_int) Wq is unused (NULL)
 * and the levels are made a block of rows at a time, with no (out, in)
 * float array, and packed for the integer GEMM; keep_levels keeps them
 * unpacked instead (w->lv, for compensation's residual), for qweight_pack
 * to pack once that is done: the two forms are never held together. */
static void
qweight_make(const pipeline *p, struct qweight *w, float *Wq, const float *W, const float *s,
    int out, int in, int keep_levels)
{
	memset(w, 0, sizeof *w);
	if (!pipe_qgemm_int(&p->opts)) {
		MASQ_ASSERT(Wq != NULL);
		w->Wq = Wq;
		quant_weight(p, Wq, W, s, out, in);
		return;
	}
	int8_t *lv = xmalloc(xmul((size_t)out, (size_t)in));
	float *blk = xmalloc(xmul((size_t)QWEIGHT_BLOCK * in, sizeof(float)));
	w->scale = xmalloc(xmul((size_t)out, sizeof(float)));
	for (int o0 = 0; o0 < out; o0 += QWEIGHT_BLOCK) {
		int rows = out - o0 < QWEIGHT_BLOCK ? out - o0 : QWEIGHT_BLOCK;
		scale_cols(blk, W + (size_t)o0 * in, s, rows, in);
		quant_weight_rows_int(lv + (size_t)o0 * in, w->scale + o0, blk, rows, in, p->opts.wbits);
	}
	free(blk);
	w->lv = lv;
	if (!keep_levels)
		qweight_pack(w, out, in);
}

/* Row o of w as the fake-quant float weight, columns j0..j1-1 into dst:
 * on the integer path the float weight quant_weight_rows gives, from the
 * same levels. */
static void
qweight_row(const struct qweight *w, int o, int in, int j0, int j1, float *dst)
{
	if (w->Wq != NULL) {
		memcpy(dst, w->Wq + (size_t)o * in + j0, (size_t)(j1 - j0) * sizeof(float));
		return;
	}
	MASQ_ASSERT(w->lv != NULL);
	const int8_t *l = w->lv + (size_t)o * in;
	float sc = w->scale[o];
	for (int j = j0; j < j1; j++)
		dst[j - j0] = (float)l[j] * sc;
}

static void
qweight_done(struct qweight *w)
{
	igemm_b_done(&w->ib);
	free(w->scale);
	free(w->lv);
	w->scale = NULL;
	w->lv = NULL;
}

/* engine_qlinear_rows on w, through the integer GEMM where w has levels. */
static void
qweight_rows(const pipeline *p, const struct qweight *w, const float *x, int in, const int *rows,
    int k, const float *s, const float *bias, int out, int rank, const float *L1, const float *L2,
    float *xs, float *xq, float *y)
{
	if (w->ib.b != NULL && p->opts.abits <= 8)
		engine_qlinear_rows_int(x, in, rows, k, s, p->opts.abits, &w->ib, w->scale, bias, out,
		    rank, L1, L2, xs, y, masq_blas_get_threads());
	else
		engine_qlinear_rows(x, in, rows, k, s, p->opts.abits, w->Wq, bias, out, rank, L1, L2,
		    xs, xq, y);
}

/* qweight_rows one sequence of q's batch at a time: rows (k, ascending
 * token indices, or NULL: x's first k rows are tokens 0..k-1) into y's
 * rows in the same order. */
static void
qweight_rows_seq(const struct qctx *q, const struct qweight *w, const float *x, int in, const int *rows,
    int k, const float *s, const float *bias, int out, int rank, const float *L1, const float *L2,
    float *xs, float *xq, float *y)
{
	if (q->n_seqs <= 1) {
		qweight_rows(q->p, w, x, in, rows, k, s, bias, out, rank, L1, L2, xs, xq, y);
		return;
	}
	for (int sq = 0, t0 = 0, r = 0; sq < q->n_seqs && r < k; t0 += q->seq_lens[sq], sq++) {
		int t1 = t0 + q->seq_lens[sq], r1 = r;
		if (rows == NULL)
			r1 = t1 < k ? t1 : k;
		else
			while (r1 < k && rows[r1] < t1)
				r1++;
		if (r1 > r)
			qweight_rows(q->p, w, rows == NULL ? x + (size_t)r * in : x, in, rows == NULL ? NULL : rows + r,
			    r1 - r, s, bias, out, rank, L1, L2, xs, xq, y + (size_t)r * out);
		r = r1;
	}
}

/* The FP linear on x (q's batch), one GEMM a sequence. */
static void
fp_rows_seq(const struct qctx *q, const float *x, int in, const float *W, const float *bias, int out, float *y)
{
	if (q->n_seqs <= 1) {
		engine_linear(x, q->n, in, W, bias, out, y);
		return;
	}
	for (int sq = 0, t0 = 0; sq < q->n_seqs; t0 += q->seq_lens[sq], sq++)
		engine_linear(x + (size_t)t0 * in, q->seq_lens[sq], in, W, bias, out, y + (size_t)t0 * out);
}

/* A compensated pair's factors, precomputed (cmc_distribute). */
struct cmc_pre {
	int have;
	cmc_result res;		/* rank, L1, L2 (the owner's other fields are not sent) */
	pipe_cmc_diag diag;
};

/* The randomized SVD's draws for linear lin and modality mod of a layer: a
 * stream of their own, from the seed, the layer, the linear and the
 * modality alone, so that quantizing, a preview and the spectra draw the
 * same whatever ran before, and any process can compute any pair. */
static void
cmc_rng(const pipeline *p, int layer, int lin, int mod, rng *g)
{
	uint64_t k = (uint64_t)(layer + 1) * 0x9e3779b97f4a7c15ULL ^
	    (uint64_t)(lin * MOD_COUNT + mod + 1) * 0xbf58476d1ce4e5b9ULL;
	rng_init(g, p->opts.seed ^ 0x636d632d72616e64ULL ^ k);
}

const char *
pipe_rsvd_name(int gram)
{
	return gram ? "gram" : "householder";
}

int
pipe_rsvd_parse(const char *s)
{
	if (strcmp(s, "gram") == 0)
		return 1;
	if (strcmp(s, "householder") == 0)
		return 0;
	return -1;
}

/* The flags CMC's randomized SVD takes from the settings (cmc.h). */
static int
pipe_svd_flags(const pipe_opts *o)
{
	return o->rsvd_gram ? CMC_SVD_GRAM : 0;
}

/* Bind wh to the basis of group grp's input site for modality mod with
 * factors s (d); builds the basis on first use.  0, or -1 on error. */
static int
get_whitener(struct qctx *q, int grp, int mod, const float *s, int d, cmc_whitener *wh)
{
	pipeline *p = q->p;
	struct wcache *c = &q->wc[grp * MOD_COUNT + mod];
	site_stats *st = &p->st[grp];

	if (c->state < 0)
		return masq_err_set(q->err, MASQ_ERR_INTERNAL,
		    "cmc: the whitening basis of the %s input for %s failed earlier; calibrate layer %d again",
		    smooth_group_name(grp), modality_name(mod), p->layer);
	if (c->state == 2)
		return masq_err_set(q->err, MASQ_ERR_INTERNAL,
		    "cmc: the Gram matrices of the %s input of layer %d were freed after it was quantized "
		    "(a one-pass run); calibrate the layer again", smooth_group_name(grp), p->layer);
	if (c->state == 0) {
		if (st->gram[mod] == NULL)
			return masq_err_set(q->err, MASQ_ERR_INTERNAL,
			    "cmc: layer %d has no Gram matrix of the %s input for %s", p->layer,
			    smooth_group_name(grp), modality_name(mod));
		MASQ_ASSERT(st->d == d);
		stats_gram_unpack(st, mod);
		int rc = cmc_basis_take_as(&c->b, st->gram[mod], d, CMC_EIG_FLOOR, p->opts.whiten_kind, q->err);
		if (rc < 0 && q->err->status != MASQ_ERR_INTERNAL)
			return -1;	/* the Gram is intact: the next call says the same */
		if (rc < 0) {
			/* LAPACK overwrote it: the layer must be calibrated again */
			free(st->gram[mod]);
			st->gram[mod] = NULL;
			c->state = -1;
			return -1;
		}
		st->gram[mod] = NULL;	/* the basis's now */
		c->state = 1;
	}
	return cmc_whitener_bind(wh, &c->b, s, q->err) < 0 ? -1 : 0;
}

/* dWt (in, out) = (target - base)^T with base the stored weight (its float
 * form, qweight_row) and target W diag(s_m) (or its quantized form), a new
 * array. */
static float *
cmc_dwt(const pipeline *p, int lin, const struct qweight *base, const float *s_m, int out, int in)
{
	/* Transposing, in tiles: a plain row-by-row loop writes dWt a column
	 * at a time and misses the cache on every element. */
	enum { TILE = 64 };
	float *dWt = xmalloc(xmul((size_t)out * in, sizeof(float)));
	float *target = NULL;
	if (p->opts.cmc_quant_target) {
		target = xmalloc(xmul((size_t)out * in, sizeof(float)));
		quant_weight(p, target, p->w.w[lin], s_m, out, in);
	}
	const float *W = p->w.w[lin];
	float wb[TILE];
	for (int o0 = 0; o0 < out; o0 += TILE)
		for (int j0 = 0; j0 < in; j0 += TILE) {
			int o1 = o0 + TILE < out ? o0 + TILE : out;
			int j1 = j0 + TILE < in ? j0 + TILE : in;
			for (int o = o0; o < o1; o++) {
				qweight_row(base, o, in, j0, j1, wb);
				if (target != NULL) {
					const float *t = target + (size_t)o * in;
					for (int j = j0; j < j1; j++)
						dWt[(size_t)j * out + o] = t[j] - wb[j - j0];
				} else {
					/* no (out, in) temporary: the target is formed as it is read */
					const float *w = W + (size_t)o * in;
					for (int j = j0; j < j1; j++)
						dWt[(size_t)j * out + o] = w[j] * s_m[j] - wb[j - j0];
				}
			}
		}
	free(target);
	return dWt;
}

/* CMC for linear lin and modality mod: dWt = (target - base)^T with base =
 * Q(W diag(s_t)) and target W diag(s_m) (or its quantized form); fills L1
 * (in, r) and L2 (r, out) (owned by res) and the diagnostics.  Returns -1 on
 * error, 0 with res->rank = 0 when there is nothing to do. */
static int
lin_cmc(struct qctx *q, int lin, int mod, const struct qweight *base, const float *s_m, int out, int in,
    cmc_result *res, pipe_cmc_diag *diag)
{
	pipeline *p = q->p;
	int grp = smooth_lin_group(lin);
	int rank = cmc_rank_resolve(q->ls->rank[lin], q->ls->rank_floor, in, out);

	memset(res, 0, sizeof *res);
	if (rank <= 0 || !q->present[mod])
		return 0;
	if (q->pre != NULL) {
		struct cmc_pre *c = &q->pre[lin * MOD_COUNT + mod];
		MASQ_ASSERT(c->have);
		*res = c->res;
		memset(&c->res, 0, sizeof c->res);
		c->have = 0;
		if (diag != NULL)
			*diag = c->diag;
		return 0;
	}
	rng g;
	cmc_rng(p, p->layer, lin, mod, &g);
	/* The basis first: its eigendecomposition's workspace is freed before
	 * dWt exists, one (in, out) array fewer at the layer's peak. */
	cmc_whitener whb;
	const cmc_whitener *wh = NULL;
	memset(&whb, 0, sizeof whb);
	if (p->opts.whiten) {
		if (get_whitener(q, grp, mod, s_m, in, &whb) < 0)
			return -1;
		wh = &whb;
	}
	float *dWt = cmc_dwt(p, lin, base, s_m, out, in);
	int mode = (q->measure && p->opts.cmc_diag ? CMC_SVD_FULL : p->opts.svd_mode) | pipe_svd_flags(&p->opts);
	int rc;
	if (p->opts.cmc_diag) {
		/* the diagnostics below read dWt again */
		rc = cmc_compute_prec(res, dWt, in, out, wh, rank, mode, p->opts.cmc_precision, &g, q->err);
	} else {
		/* the whitened product in dWt's storage; dWt is spent after */
		rc = cmc_compute_prec_inplace(res, dWt, in, out, wh, rank, mode, p->opts.cmc_precision, &g,
		    q->err);
		if (rc == 1) {
			free(dWt);
			dWt = cmc_dwt(p, lin, base, s_m, out, in);
			cmc_rng(p, p->layer, lin, mod, &g);	/* the same draws again */
			rc = cmc_compute(res, dWt, in, out, wh, rank, mode, &g, q->err);
			res->fell_back = rc == 0;
		}
	}
	if (rc < 0) {
		cmc_whitener_done(&whb);
		free(dWt);
		return -1;
	}
	if (diag != NULL) {
		int full = res->n_sv == (in < out ? in : out);
		double head = 0.0;
		diag->rank = res->rank;
		diag->rel_err = res->total_energy > 0 ? res->resid_energy / res->total_energy : 0.0;
		diag->erank = full ? cmc_effective_rank(res->sv, res->n_sv) : NAN;
		diag->n_floored = wh ? wh->b->n_floored : 0;
		/* With whitening the error at rank r is the spectrum's tail
		 * (T is invertible, L1 = T^-1 U_r); known up to the values computed. */
		for (int i = 0; i < PIPE_RANK_CURVE; i++) {
			int r = cmc_rank_resolve(pipe_rank_curve[i], 1, in, out);
			diag->curve[i] = NAN;
			diag->curve_plain[i] = NAN;
			if (res->whitened && r <= res->n_sv && res->total_energy > 0) {
				head = 0.0;
				for (int k = 0; k < r; k++)
					head += res->sv[k] * res->sv[k];
				diag->curve[i] = fmax(0.0, 1.0 - head / res->total_energy);
			}
		}
		if (p->opts.cmc_diag && wh != NULL) {
			/* the plain SVD's factors, measured in the whitened metric */
			cmc_result plain;
			int rmax = in < out ? in : out;
			if (cmc_compute(&plain, dWt, in, out, NULL, rmax, CMC_SVD_FULL, &g, q->err) < 0) {
				cmc_whitener_done(&whb);
				free(dWt);
				cmc_result_done(res);
				return -1;
			}
			for (int i = 0; i < PIPE_RANK_CURVE; i++) {
				int r = cmc_rank_resolve(pipe_rank_curve[i], 1, in, out);
				float *L1 = xmalloc(xmul((size_t)in * r, sizeof(float)));
				for (int j = 0; j < in; j++)
					memcpy(L1 + (size_t)j * r, plain.L1 + (size_t)j * rmax, (size_t)r * sizeof(float));
				double e = cmc_residual(wh, dWt, in, out, L1, plain.L2, r);
				diag->curve_plain[i] = res->total_energy > 0 ? e / res->total_energy : 0.0;
				free(L1);
			}
			cmc_result_done(&plain);
		}
	}
	cmc_whitener_done(&whb);
	free(dWt);
	return 0;
}

static float *
fdup(const float *x, size_t n)
{
	if (x == NULL)
		return NULL;
	float *y = xmalloc(xmul(n, sizeof(float)));
	memcpy(y, x, n * sizeof(float));
	return y;
}

/* qlinear's token buffers: the smoothed rows (n, in), on the float path
 * their quantized copy, and (want_yr) the rows' output (n, out). */
static void
token_bufs(int n, int in, int out, int int_path, int want_yr, float **xs, float **xq, float **yr)
{
	*xs = xmalloc(xmul(xmul((size_t)n, (size_t)in), sizeof(float)));
	*xq = int_path ? NULL : xmalloc(xmul(xmul((size_t)n, (size_t)in), sizeof(float)));
	*yr = want_yr ? xmalloc(xmul(xmul((size_t)n, (size_t)out), sizeof(float))) : NULL;
}

/* The engine's linear override: y (n, out) for linear lin of the cursor's
 * layer under the layer's setting. */
static int
qlinear(void *ctx, const layer_weights *w, int lin, const float *x, int n, float *y)
{
	struct qctx *q = ctx;
	pipeline *p = q->p;
	int method = q->method, out, in;

	layer_lin_shape(&p->m->cfg, lin, &out, &in);
	/* lazy_w: the weight loads here, for this linear alone */
	if (!q->failed && w == &p->w && layer_weight_fetch(&p->w, p->m, lin, q->err) < 0) {
		masq_err_prefix(q->err, "layer %d", p->layer);
		q->failed = 1;
	}
	if (q->failed) {
		/* the result is discarded; let the engine finish the layer
		 * (with zeros: the weight may not be loaded) */
		memset(y, 0, xmul(xmul((size_t)n, (size_t)out), sizeof(float)));
		return 0;
	}
	MASQ_ASSERT(n == q->n);
	int per_mod = method_per_modality(method) && smooth_lin_group(lin) >= 0;
	/* mas-cmc's rank for this linear (0: no compensation) */
	int cmc_rank = method == METHOD_MAS_CMC && smooth_lin_group(lin) >= 0
	    ? cmc_rank_resolve(q->ls->rank[lin], q->ls->rank_floor, in, out) : 0;
	/* what this method needs: a weight of its own (mas-cmc's is qbase),
	 * per-modality rows, the float path's quantized copies (the integer
	 * path makes levels without an (out, in) float array: qweight_make);
	 * every one of them is out x in or tokens x in, a layer's worth on 7B
	 * shapes */
	int int_path = pipe_qgemm_int(&p->opts);
	int need_wq = (!per_mod || method == METHOD_MAS) && !int_path;
	float *Wq = need_wq ? xmalloc(xmul((size_t)out * in, sizeof(float))) : NULL;
	/* the token buffers, made once compensation's factors are (token_bufs):
	 * its working arrays are gone by then, so the two never meet */
	float *xs = NULL, *xq = NULL, *yr = NULL;
	float *s = xmalloc(xmul((size_t)in, sizeof(float)));
	pipe_lin_result *lr = q->lr ? &q->lr[lin] : NULL;
	float *y0 = NULL;	/* measure, mas-cmc with a rank: y with vision and audio uncompensated */

	if (!per_mod) {
		token_bufs(n, in, out, int_path, q->measure, &xs, &xq, &yr);
		/* one factor (or none) and one weight for every token */
		const float *sf = lin_factor(q, lin, method, ALPHA_UNIFIED, s);
		struct qweight qw;
		qweight_make(p, &qw, Wq, w->w[lin], sf, out, in, 0);
		qweight_rows_seq(q, &qw, x, in, NULL, n, sf, w->b[lin], out, 0, NULL, NULL, xs, xq, y);
		qweight_done(&qw);
		if (q->plan != NULL && sf != NULL)
			for (int m = 0; m < MOD_COUNT; m++)
				if (p->all->n_mod[m])
					q->plan->lin[lin].smooth[m] = fdup(sf, (size_t)in);
		if (lr != NULL)
			for (int m = 0; m < MOD_COUNT; m++)
				lr->alpha[m] = sf ? q->ls->alpha[smooth_lin_group(lin)][ALPHA_UNIFIED] : NAN;
	} else {
		float *s_t = NULL, *Wbase = NULL;
		struct qweight qbase, qm;
		cmc_result res[MOD_COUNT];
		memset(&qbase, 0, sizeof qbase);
		memset(&qm, 0, sizeof qm);
		memset(res, 0, sizeof res);
		if (method == METHOD_MAS_CMC) {
			/* the stored weight: Q(W diag(s_text)) */
			s_t = xmalloc(xmul((size_t)in, sizeof(float)));
			lin_factor(q, lin, method, MOD_TEXT, s_t);
			/* its levels kept unpacked on the integer path (a quarter
			 * of a float copy): compensation's residual reads them */
			if (!int_path)
				Wbase = xmalloc(xmul((size_t)out * in, sizeof(float)));
			qweight_make(p, &qbase, Wbase, w->w[lin], s_t, out, in, 1);
			if (q->plan != NULL) {
				q->plan->lin[lin].base = MOD_TEXT;
				q->plan->lin[lin].smooth[MOD_TEXT] = fdup(s_t, (size_t)in);
			}
			/* compensation's factors first, every modality's: dWt and
			 * the whitening's arrays are freed before the token buffers
			 * exist */
			for (int m = 0; m < MOD_COUNT && cmc_rank > 0; m++) {
				if (m == MOD_TEXT || !q->present[m])
					continue;
				lin_factor(q, lin, method, m, s);
				if (q->plan != NULL)
					work(p, (double)lin / LIN_COUNT, "%s, compensation for %s tokens (linear %d of %d)",
					    lin_name(lin), modality_name(m), lin + 1, LIN_COUNT);
				if (lin_cmc(q, lin, m, &qbase, s, out, in, &res[m], lr ? &lr->cmc[m] : NULL) < 0)
					q->failed = 1;
			}
			if (q->measure && cmc_rank > 0)
				y0 = xmalloc(xmul((size_t)n * out, sizeof(float)));
			qweight_pack(&qbase, out, in);
		}
		token_bufs(n, in, out, int_path, 1, &xs, &xq, &yr);
		for (int m = 0; m < MOD_COUNT; m++) {
			int k = q->nrows[m];
			if (lr != NULL)
				lr->alpha[m] = q->ls->alpha[smooth_lin_group(lin)][m];
			if (!q->present[m])
				continue;
			lin_factor(q, lin, method, m, s);
			/* no compensation (rank 0): nothing bridges x / s_m and a weight
			 * smoothed with s_text, so every token takes s_text */
			if (method == METHOD_MAS_CMC && m != MOD_TEXT && cmc_rank <= 0)
				memcpy(s, s_t, (size_t)in * sizeof(float));
			if (q->plan != NULL && q->plan->lin[lin].smooth[m] == NULL)
				q->plan->lin[lin].smooth[m] = fdup(s, (size_t)in);
			const struct qweight *Wm = &qbase;
			if (method == METHOD_MAS) {
				qweight_done(&qm);
				qweight_make(p, &qm, Wq, w->w[lin], s, out, in, 0);
				Wm = &qm;
			}
			if (k > 0)
				qweight_rows_seq(q, Wm, x, in, q->rows[m], k, s, w->b[lin], out, res[m].rank, res[m].L1,
				    res[m].L2, xs, xq, yr);
			if (q->plan != NULL && res[m].rank > 0) {
				/* the plan keeps the factors */
				q->plan->lin[lin].rank[m] = res[m].rank;
				q->plan->lin[lin].L1[m] = res[m].L1;
				q->plan->lin[lin].L2[m] = res[m].L2;
				res[m].L1 = res[m].L2 = NULL;
			}
			cmc_result_done(&res[m]);
			if (q->plan != NULL)
				work(p, (lin + (m + 1.0) / MOD_COUNT) / LIN_COUNT, "%s, %s tokens%s (linear %d of %d)", lin_name(lin),
				    modality_name(m), method == METHOD_MAS_CMC && m != MOD_TEXT ? " with compensation" : "",
				    lin + 1, LIN_COUNT);
			for (int r = 0; r < k; r++)
				memcpy(y + (size_t)q->rows[m][r] * out, yr + (size_t)r * out,
				    (size_t)out * sizeof(float));
			if (y0 != NULL) {
				/* the alternative: these tokens through x / s_text and the
				 * stored weight, as rank 0 runs them */
				if (m != MOD_TEXT && k > 0)
					qweight_rows_seq(q, &qbase, x, in, q->rows[m], k, s_t, w->b[lin], out, 0, NULL,
					    NULL, xs, xq, yr);
				for (int r = 0; r < k; r++)
					memcpy(y0 + (size_t)q->rows[m][r] * out, yr + (size_t)r * out,
					    (size_t)out * sizeof(float));
			}
		}
		qweight_done(&qbase);
		qweight_done(&qm);
		free(s_t);
		free(Wbase);
	}
	if (lr != NULL)
		lr->rank = cmc_rank;
	if (q->plan != NULL && !per_mod)
		work(p, (lin + 1.0) / LIN_COUNT, "%s (linear %d of %d)", lin_name(lin), lin + 1, LIN_COUNT);
	if (q->measure) {
		/* the FP linear on the same input, once for both measurements */
		fp_rows_seq(q, x, in, w->w[lin], w->b[lin], out, yr);
		metrics_acc_add(&q->acc[lin], yr, y, q->modality, n, out);
		if (y0 != NULL) {
			metrics_acc_add(&q->acc0[lin], yr, y0, q->modality, n, out);
			q->have0[lin] = 1;
		}
	}
	free(y0);
	free(Wq);
	free(xs);
	free(xq);
	free(yr);
	free(s);
	/* a one-pass run quantizes the layer once: the group's bases and Gram
	 * matrices are not needed again */
	int grp = smooth_lin_group(lin), last = grp >= 0;
	for (int k = lin + 1; k < LIN_COUNT && last; k++)
		last = smooth_lin_group(k) != grp;
	if (last && p->one_pass && q->plan != NULL && q->wc != NULL)
		wcache_release(p, q->wc, grp);
	/* ... nor the linear's f32 weight, unless a training chain runs the
	 * layer again after it (train_chain_forward); the engine reads no
	 * linear's weight after its own linear */
	if (p->one_pass && q->plan != NULL && q->measure && p->h_train == NULL && !q->failed &&
	    w == &p->w) {
		free(p->w.w[lin]);
		p->w.w[lin] = NULL;
		p->w_spent = 1;
	}
	return 0;
}

/* Free group grp's bases and whatever Gram matrices of its site are left,
 * for good: the layer's later uses of them are refused (one_pass). */
static void
wcache_release(pipeline *p, struct wcache *wc, int grp)
{
	for (int m = 0; m < MOD_COUNT; m++) {
		struct wcache *c = &wc[grp * MOD_COUNT + m];
		if (c->state == 1)
			cmc_basis_done(&c->b);
		free(p->st[grp].gram[m]);
		p->st[grp].gram[m] = NULL;
		c->state = 2;
	}
}

/* The pipeline's whitening bases, allocated on first use. */
static struct wcache *
pipe_wcache(pipeline *p)
{
	if (p->wc == NULL)
		p->wc = xcalloc(GRP_COUNT * MOD_COUNT, sizeof *p->wc);
	return p->wc;
}

static void
qctx_init(struct qctx *q, pipeline *p, const layer_setting *ls, const uint8_t *modality, int n,
    struct wcache *wc, masq_err *err)
{
	memset(q, 0, sizeof *q);
	q->p = p;
	q->ls = ls;
	q->method = ls->method;
	q->modality = modality;
	q->n = n;
	q->wc = wc;
	q->err = err;
	for (int m = 0; m < MOD_COUNT; m++)
		q->rows[m] = xmalloc(xmul((size_t)n + 1, sizeof(int)));
	for (int t = 0; t < n; t++) {
		int m = modality[t];
		q->rows[m][q->nrows[m]++] = t;
	}
	for (int m = 0; m < MOD_COUNT; m++)
		q->present[m] = q->nrows[m] > 0;
	for (int k = 0; k < LIN_COUNT; k++) {
		metrics_acc_init_floor(&q->acc[k], p->opts.sqnr_floor);
		metrics_acc_init_floor(&q->acc0[k], p->opts.sqnr_floor);
	}
}

static void
qctx_done(struct qctx *q)
{
	for (int m = 0; m < MOD_COUNT; m++)
		free(q->rows[m]);
	for (int k = 0; q->pre != NULL && k < LIN_COUNT * MOD_COUNT; k++)
		cmc_result_done(&q->pre[k].res);
	free(q->pre);
	q->pre = NULL;
}

/* Free the bases of wc (GRP_COUNT * MOD_COUNT). */
static void
wcache_free(struct wcache *wc)
{
	for (int i = 0; i < GRP_COUNT * MOD_COUNT; i++) {
		if (wc[i].state == 1)
			cmc_basis_done(&wc[i].b);
		wc[i].state = 0;
	}
}

/* ---- learning -------------------------------------------------------------------- */

int
pipe_factors_ready(const pipeline *p)
{
	const layer_setting *ls = &p->settings[p->layer];
	return !setting_learns(ls) || (p->learned_valid && setting_same_learning(&p->learned_for, ls));
}

static void learn_opts_of(const pipeline *p, const layer_setting *ls, learn_opts *lo);
static learn_seq *learn_seqs(const pipeline *p, const float *h, const float *target, int *maxlen);

/* The layer's target: the train-mode module with quantization off, on
 * FP input h (the train-mode FP chain's, or the FP chain's), into out. */
static void
fp_target(pipeline *p, const float *h, float *out)
{
	memcpy(out, h, (size_t)p->c->n_tokens * p->m->cfg.hidden * sizeof(float));
	engine_ops tops = {.linear = learn_target_linear, .ctx = (void *)&p->batch};
	engine_layer_forward(&p->eng, &p->w, &p->batch, out, &tops);
}

/* The learning chains' next inputs, when training did not leave them: the
 * train-mode FP layer, and the train-mode forward under the layer's
 * factors (closed form or learned; a method that does not learn runs as
 * deployed, its compensation left out). */
static int
train_chain_forward(pipeline *p, masq_err *err)
{
	const model_config *c = &p->m->cfg;
	const layer_setting *ls = &p->settings[p->layer];

	if (p->h_train == NULL || p->train_out_valid)
		return 0;
	fp_target(p, p->h_fpe, p->h_fpe_out);
	if (method_learns(ls->method)) {
		float *f[LEARN_LINS][MOD_COUNT];
		for (int k = 0; k < LEARN_LINS; k++)
			for (int m = 0; m < MOD_COUNT; m++) {
				int out, in;
				layer_lin_shape(c, k, &out, &in);
				f[k][m] = xmalloc(xmul((size_t)in, sizeof(float)));
				pipe_factor(p, ls, ls->method, k, ls->method == METHOD_USQ ? ALPHA_UNIFIED : m, f[k][m]);
			}
		learn_opts lo;
		learn_opts_of(p, ls, &lo);
		learn_state L;
		learn_init(&L, c, &p->w, &lo, (const float *const (*)[MOD_COUNT])f);
		int maxlen;
		learn_seq *seq = learn_seqs(p, p->h_train, NULL, &maxlen);
		for (int s = 0, t0 = 0; s < p->c->n_seqs; t0 += seq[s].n, s++)
			learn_forward(&L, &seq[s], p->h_train_out + (size_t)t0 * c->hidden);
		learn_done(&L);
		free(seq);
		for (int k = 0; k < LEARN_LINS; k++)
			for (int m = 0; m < MOD_COUNT; m++)
				free(f[k][m]);
	} else {
		struct qctx q;
		qctx_init(&q, p, ls, p->c->modality, p->c->n_tokens, NULL, err);
		q.n_seqs = p->c->n_seqs;
		q.seq_lens = p->c->seq_lens;
		if (q.method == METHOD_MAS_CMC)
			q.method = METHOD_MAS;
		engine_ops ops = {.ctx = &q, .linear = qlinear};
		memcpy(p->h_train_out, p->h_train, (size_t)p->c->n_tokens * c->hidden * sizeof(float));
		engine_layer_forward(&p->eng, &p->w, &p->batch, p->h_train_out, &ops);
		int failed = q.failed;
		qctx_done(&q);
		if (failed)
			return masq_err_prefix(err, "layer %d (the training chain)", p->layer);
	}
	p->train_out_valid = 1;
	return 0;
}

/* The train-mode forward of every sequence under L; the SQNR per modality
 * against the FP output into sqnr, the outputs into out (tokens, hidden)
 * when not NULL. */
static void
learn_measure(pipeline *p, learn_state *L, const learn_seq *seq, float *buf, float *out, double *sqnr)
{
	int D = p->m->cfg.hidden;
	metrics_acc a;

	metrics_acc_init_floor(&a, p->opts.sqnr_floor);
	for (int s = 0, t0 = 0; s < p->c->n_seqs; t0 += seq[s].n, s++) {
		learn_step_grad(L, &seq[s], buf, 0);
		metrics_acc_add(&a, p->h_fp_out + (size_t)t0 * D, buf, p->c->modality + t0, seq[s].n, D);
		if (out != NULL)
			memcpy(out + (size_t)t0 * D, buf, (size_t)seq[s].n * D * sizeof(float));
	}
	if (p->sharded)
		acc_reduce(&a);
	for (int m = 0; m < STATS_ROWS; m++)
		sqnr[m] = metrics_sqnr(&a, m);
}

/* What learning under setting ls of the cursor's layer uses. */
static void
learn_opts_of(const pipeline *p, const layer_setting *ls, learn_opts *lo)
{
	learn_opts_default(lo);
	lo->wbits = p->opts.wbits;
	lo->abits = p->opts.abits;
	lo->wgroup = p->opts.wgroup;
	lo->loss = ls->loss;
	memcpy(lo->lambda, ls->lambda, sizeof lo->lambda);
	lo->lr = ls->lr;
	lo->unified = ls->method == METHOD_USQ;
	lo->tied = ls->tie;
}

/* The calibration sequences over hidden states h (input) and target; the
 * longest's length into *maxlen.  A new array. */
static learn_seq *
learn_seqs(const pipeline *p, const float *h, const float *target, int *maxlen)
{
	int D = p->m->cfg.hidden, S = p->c->n_seqs;
	learn_seq *seq = xmalloc(xmul((size_t)S, sizeof *seq));
	*maxlen = 0;
	for (int s = 0, t0 = 0; s < S; t0 += p->c->seq_lens[s], s++) {
		seq[s] = (learn_seq){.n = p->c->seq_lens[s], .h = h + (size_t)t0 * D,
		    .target = target ? target + (size_t)t0 * D : NULL, .pos = p->c->pos + t0,
		    .pos_stride = p->c->n_tokens, .modality = p->c->modality + t0};
		if (seq[s].n > *maxlen)
			*maxlen = seq[s].n;
	}
	return seq;
}

int
pipe_learned_adopt(pipeline *p, const float *const f[LEARN_LINS][MOD_COUNT], masq_err *err)
{
	const model_config *c = &p->m->cfg;
	if (!p->calibrated || !p->learned_valid)
		return masq_err_set(err, MASQ_ERR_USAGE, "layer %d has no learned factors to replace", p->layer);
	for (int k = 0; k < LEARN_LINS; k++) {
		int out, in;
		layer_lin_shape(c, k, &out, &in);
		for (int m = 0; m < MOD_COUNT; m++)
			for (int i = 0; i < in; i++)
				if (!isfinite(f[k][m][i]) || f[k][m][i] == 0.0f)
					return masq_err_set(err, MASQ_ERR_FORMAT, "factor %s.%s[%d] is %g, not a finite non-zero number",
					    lin_name(k), modality_name(m), i, (double)f[k][m][i]);
	}
	for (int k = 0; k < LEARN_LINS; k++) {
		int out, in;
		layer_lin_shape(c, k, &out, &in);
		for (int m = 0; m < MOD_COUNT; m++)
			memcpy(p->learned[k][m], f[k][m], (size_t)in * sizeof(float));
	}
	if (p->plan_valid)
		qplan_layer_done(&p->plan);
	p->plan_valid = 0;
	p->results[p->layer].done = 0;
	if (p->h_train != NULL && p->train_out_valid) {
		/* the train-mode chain's next input under the factors now in force */
		learn_opts lo;
		learn_opts_of(p, &p->learned_for, &lo);
		learn_state L;
		learn_init(&L, c, &p->w, &lo, (const float *const (*)[MOD_COUNT])p->learned);
		int maxlen, D = c->hidden;
		learn_seq *seq = learn_seqs(p, p->h_train, NULL, &maxlen);
		for (int s = 0, t0 = 0; s < p->c->n_seqs; t0 += seq[s].n, s++)
			learn_forward(&L, &seq[s], p->h_train_out + (size_t)t0 * D);
		learn_done(&L);
		free(seq);
	}
	return 0;
}

int
pipe_train(pipeline *p, pipe_progress_fn progress, void *ctx, masq_err *err)
{
	const model_config *c = &p->m->cfg;
	const layer_setting *ls = &p->settings[p->layer];
	pipe_learn_result *lr = &p->results[p->layer].learn;
	int D = c->hidden, maxlen = 0, rc = 0;
	double t0 = masq_now();

	if (!p->calibrated)
		return masq_err_set(err, MASQ_ERR_USAGE, "layer %d is not calibrated yet", p->layer);
	if (pipe_weights_all(p, err) < 0)
		return -1;
	if (!setting_learns(ls))
		return masq_err_set(err, MASQ_ERR_USAGE, "layer %d: %s with %d epochs learns nothing", p->layer,
		    method_name(ls->method), ls->epochs);
	/* learning replaces whatever the layer had */
	if (p->plan_valid)
		qplan_layer_done(&p->plan);
	p->plan_valid = 0;
	p->results[p->layer].done = 0;
	p->train_out_valid = 0;
	pipe_learned_drop(p);
	free(lr->loss);
	memset(lr, 0, sizeof *lr);

	/* the start: the closed form under the same setting */
	layer_setting closed = *ls;
	closed.epochs = 0;
	float *init[LEARN_LINS][MOD_COUNT];
	for (int k = 0; k < LEARN_LINS; k++)
		for (int m = 0; m < MOD_COUNT; m++) {
			int out, in;
			layer_lin_shape(c, k, &out, &in);
			init[k][m] = xmalloc(xmul((size_t)in, sizeof(float)));
			pipe_factor(p, &closed, ls->method, k, ls->method == METHOD_USQ ? ALPHA_UNIFIED : m, init[k][m]);
		}
	learn_opts lo;
	learn_opts_of(p, ls, &lo);
	learn_state L;
	learn_init(&L, c, &p->w, &lo, (const float *const (*)[MOD_COUNT])init);
	for (int k = 0; k < LEARN_LINS; k++)
		for (int m = 0; m < MOD_COUNT; m++)
			free(init[k][m]);

	/* what it learns from: its input on the chain the reference trains on,
	 * and the FP output as the train-mode module computes it (h_q_out is
	 * free until the layer is quantized again) */
	/* what it learns from: the train-mode chains when the run keeps them
	 * (the reference's quant_inps and fp_inps), else the deployed input and
	 * a target from the FP input (h_q_out is free until the layer is
	 * quantized again) */
	const float *hin = p->h_train != NULL ? p->h_train : p->h_q;
	float *target = p->h_train != NULL ? p->h_fpe_out : p->h_q_out;
	fp_target(p, p->h_train != NULL ? p->h_fpe : p->h_fp, target);
	learn_seq *seq = learn_seqs(p, hin, target, &maxlen);
	float *buf = xmalloc(xmul((size_t)maxlen * D, sizeof(float)));

	learn_measure(p, &L, seq, buf, NULL, lr->sqnr_init);
	lr->epochs = ls->epochs;
	/* the whole set's sequences, in file order, one step each (the
	 * reference's schedule: batch 1).  Sharded, each step is its
	 * sequence's rank's, which sends the gradients; every rank then takes
	 * the same AdamW step, so the factors are one process's bits.  The
	 * steps stay one after another: they do not speed up with ranks. */
	int SA = p->all->n_seqs, nr = dist_size();
	int *first = xmalloc(xmul((size_t)nr + 1, sizeof(int)));
	if (p->sharded)
		dist_shard(p->all->seq_lens, SA, nr, first);
	else
		first[0] = 0, first[1] = SA;
	lr->loss = xmalloc(xmul((size_t)ls->epochs * SA, sizeof(double)));
	int S_fit = SA;
	for (int s = 0; p->held != NULL && s < SA; s++)
		S_fit -= p->held[s];
	for (int e = 0; e < ls->epochs && rc == 0; e++)
		for (int s = 0, owner = 0; s < SA && rc == 0; s++) {
			if (p->held != NULL && p->held[s])
				continue;	/* held out of learning */
			while (s >= first[owner + 1])
				owner++;
			learn_truncate(&L);
			double loss = 0;
			if (!p->sharded || owner == dist_rank())
				loss = learn_step_grad(&L, &seq[s - p->seq0], NULL, 1);
			if (p->sharded) {
				for (int k = 0; k < LEARN_LINS; k++)
					for (int m = 0; m < MOD_COUNT; m++)
						if (learn_owns(&L, k, m))
							dist_bcast_from(L.g[k][m], (size_t)L.in[k] * sizeof(float), owner);
				dist_bcast_from(&loss, sizeof loss, owner);
			}
			learn_adam_step(&L);
			lr->loss[lr->steps++] = loss;
			int stop = progress != NULL && progress(ctx, lr->steps, ls->epochs * S_fit, loss) != 0;
			if (p->sharded ? dist_agree(stop, err) : stop)
				rc = masq_err_set(err, MASQ_ERR_USAGE, "layer %d: training interrupted after %d of %d steps",
				    p->layer, lr->steps, ls->epochs * S_fit);
		}
	free(first);
	lr->skipped = L.skipped;
	if (rc == 0) {
		learn_measure(p, &L, seq, buf, p->h_train_out, lr->sqnr_learned);
		p->train_out_valid = p->h_train != NULL;
		for (int k = 0; k < LEARN_LINS; k++)
			for (int m = 0; m < MOD_COUNT; m++) {
				p->learned[k][m] = xmalloc(xmul((size_t)L.in[k], sizeof(float)));
				memcpy(p->learned[k][m], L.s[k][m], (size_t)L.in[k] * sizeof(float));
			}
		p->learned_valid = 1;
		p->learned_for = *ls;
		lr->chain = p->h_train != NULL;
		lr->done = 1;
	} else {
		free(lr->loss);
		memset(lr, 0, sizeof *lr);
	}
	lr->seconds = masq_now() - t0;
	learn_done(&L);
	free(seq);
	free(buf);
	return rc;
}

/* ---- quantize, search, next ----------------------------------------------------- */

/* One rank of several, mas-cmc: the compensated pairs (linear, vision or
 * audio) of the layer are shared out, the largest first to the least
 * loaded rank; each computes its own pairs' factors (their draws are their
 * own: cmc_rng) and broadcasts them, so that the quantized forward that
 * follows finds every pair's in q->pre.  What a pair costs, and so its
 * share of the work, does not depend on the tokens. */
static int
cmc_distribute(struct qctx *q)
{
	pipeline *p = q->p;
	const model_config *c = &p->m->cfg;
	int nr = dist_size(), me = dist_rank(), np = 0, failed = 0;
	int pair[LIN_COUNT * MOD_COUNT], owner[LIN_COUNT * MOD_COUNT];
	double cost[LIN_COUNT * MOD_COUNT];
	double *load = xcalloc((size_t)nr, sizeof *load);

	for (int lin = 0; lin < LIN_COUNT; lin++) {
		int out, in;
		if (smooth_lin_group(lin) < 0)
			continue;
		layer_lin_shape(c, lin, &out, &in);
		if (cmc_rank_resolve(q->ls->rank[lin], q->ls->rank_floor, in, out) <= 0)
			continue;
		for (int m = MOD_VISION; m < MOD_COUNT; m++)
			if (q->present[m]) {
				cost[np] = (double)in * out;
				pair[np++] = lin * MOD_COUNT + m;
			}
	}
	/* the largest pair first (ties: the earlier), to the least loaded rank (ties: the lower) */
	int *order = xmalloc(xmul((size_t)np + 1, sizeof(int)));
	for (int i = 0; i < np; i++)
		order[i] = i;
	for (int i = 1; i < np; i++)
		for (int j = i; j > 0 && cost[order[j]] > cost[order[j - 1]]; j--) {
			int t = order[j];
			order[j] = order[j - 1];
			order[j - 1] = t;
		}
	for (int i = 0; i < np; i++) {
		int best = 0;
		for (int r = 1; r < nr; r++)
			if (load[r] < load[best])
				best = r;
		owner[order[i]] = best;
		load[best] += cost[order[i]];
	}
	free(order);
	free(load);

	q->pre = xcalloc(LIN_COUNT * MOD_COUNT, sizeof *q->pre);
	for (int i = 0; i < np && !failed; i++) {
		if (owner[i] != me)
			continue;
		int lin = pair[i] / MOD_COUNT, m = pair[i] % MOD_COUNT, out, in;
		layer_lin_shape(c, lin, &out, &in);
		float *s_t = xmalloc(xmul((size_t)in, sizeof(float)));
		float *s_m = xmalloc(xmul((size_t)in, sizeof(float)));
		float *Wbase = xmalloc(xmul((size_t)out * in, sizeof(float)));
		/* what qlinear would hand lin_cmc: the stored weight Q(W diag(s_text)), s_m */
		lin_factor(q, lin, q->method, MOD_TEXT, s_t);
		quant_weight(p, Wbase, p->w.w[lin], s_t, out, in);
		lin_factor(q, lin, q->method, m, s_m);
		struct cmc_pre *pc = &q->pre[pair[i]], *keep = q->pre;
		struct qweight base = {.Wq = Wbase};
		q->pre = NULL;
		if (lin_cmc(q, lin, m, &base, s_m, out, in, &pc->res, &pc->diag) < 0)
			failed = 1;
		q->pre = keep;
		free(s_t);
		free(s_m);
		free(Wbase);
	}
	if (dist_agree(failed, q->err))
		return -1;
	for (int i = 0; i < np; i++) {
		struct cmc_pre *pc = &q->pre[pair[i]];
		int lin = pair[i] / MOD_COUNT, out, in;
		layer_lin_shape(c, lin, &out, &in);
		dist_bcast_from(&pc->res.rank, sizeof pc->res.rank, owner[i]);
		if (owner[i] != me && pc->res.rank > 0) {
			pc->res.in = in;
			pc->res.out = out;
			pc->res.L1 = xmalloc(xmul(xmul((size_t)in, (size_t)pc->res.rank), sizeof(float)));
			pc->res.L2 = xmalloc(xmul(xmul((size_t)pc->res.rank, (size_t)out), sizeof(float)));
		}
		if (pc->res.rank > 0) {
			dist_bcast_from(pc->res.L1, (size_t)in * pc->res.rank * sizeof(float), owner[i]);
			dist_bcast_from(pc->res.L2, (size_t)pc->res.rank * out * sizeof(float), owner[i]);
		}
		dist_bcast_from(&pc->diag, sizeof pc->diag, owner[i]);
		pc->have = 1;
	}
	return 0;
}

int
pipe_quantize(pipeline *p, masq_err *err)
{
	const model_config *c = &p->m->cfg;
	pipe_layer_result *res = &p->results[p->layer];
	struct qctx q;
	double t0 = masq_now();
	size_t n = (size_t)p->c->n_tokens * c->hidden;

	if (!p->calibrated)
		return masq_err_set(err, MASQ_ERR_USAGE, "layer %d is not calibrated yet", p->layer);
	if (pipe_weights_here(p, err) < 0)
		return -1;
	if (!pipe_factors_ready(p)) {
		const layer_setting *ls = &p->settings[p->layer];
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "layer %d: %s learns its factors (%d epochs) and they are not learned for this setting yet: "
		    "train the layer first", p->layer, method_name(ls->method), ls->epochs);
	}
	memset(res->lin, 0, sizeof res->lin);
	qctx_init(&q, p, &p->settings[p->layer], p->c->modality, p->c->n_tokens, pipe_wcache(p), err);
	q.n_seqs = p->c->n_seqs;
	q.seq_lens = p->c->seq_lens;
	q.measure = 1;
	q.lr = res->lin;
	/* every rank makes every modality's factors (and the randomized SVD's
	 * draws), whether or not its share has the modality's tokens */
	for (int m = 0; m < MOD_COUNT && p->sharded; m++)
		q.present[m] = p->all->n_mod[m] > 0;
	/* compensation's factors do not depend on the tokens: shared out */
	if (p->sharded && q.method == METHOD_MAS_CMC && cmc_distribute(&q) < 0) {
		qctx_done(&q);
		return masq_err_prefix(err, "layer %d", p->layer);
	}
	if (p->plan_valid)
		qplan_layer_done(&p->plan);
	qplan_layer_init(&p->plan, c, p->layer);
	p->plan.method = p->settings[p->layer].method;
	p->plan.wbits = p->opts.wbits;
	p->plan.abits = p->opts.abits;
	p->plan.wgroup = p->opts.wgroup;
	p->plan_valid = 1;
	q.plan = &p->plan;
	engine_ops ops = {.ctx = &q, .linear = qlinear};
	memcpy(p->h_q_out, p->h_q, n * sizeof(float));
	engine_layer_forward(&p->eng, &p->w, &p->batch, p->h_q_out, &ops);
	int failed = q.failed;
	if (p->sharded) {
		failed = dist_agree(failed, err);
		for (int k = 0; k < LIN_COUNT && !failed; k++) {
			acc_reduce(&q.acc[k]);
			acc_reduce(&q.acc0[k]);
		}
	}
	for (int k = 0; k < LIN_COUNT; k++)
		for (int m = 0; m < STATS_ROWS; m++) {
			res->lin[k].sqnr[m] = metrics_sqnr(&q.acc[k], m);
			res->lin[k].mae[m] = metrics_mae(&q.acc[k], m);
			res->lin[k].sqnr_no_cmc[m] = q.have0[k] ? metrics_sqnr(&q.acc0[k], m) : NAN;
		}
	qctx_done(&q);
	if (failed) {
		qplan_layer_done(&p->plan);
		p->plan_valid = 0;
		return masq_err_prefix(err, "layer %d", p->layer);
	}
	metrics_acc a;
	metrics_acc_init_floor(&a, p->opts.sqnr_floor);
	metrics_acc_add(&a, p->h_fp_out, p->h_q_out, p->mod_fit ? p->mod_fit : p->c->modality, p->c->n_tokens,
	    c->hidden);
	if (p->sharded)
		acc_reduce(&a);
	for (int m = 0; m < STATS_ROWS; m++) {
		res->sqnr[m] = metrics_sqnr(&a, m);
		res->mae[m] = metrics_mae(&a, m);
		res->sqnr_held[m] = res->mae_held[m] = NAN;
	}
	if (p->mod_held != NULL) {
		metrics_acc_init_floor(&a, p->opts.sqnr_floor);
		metrics_acc_add(&a, p->h_fp_out, p->h_q_out, p->mod_held, p->c->n_tokens, c->hidden);
		if (p->sharded)
			acc_reduce(&a);
		for (int m = 0; m < STATS_ROWS; m++) {
			res->sqnr_held[m] = metrics_sqnr(&a, m);
			res->mae_held[m] = metrics_mae(&a, m);
		}
	}
	int bad = 0;
	for (size_t i = 0; i < n && !bad; i++)
		if (!isfinite(p->h_q_out[i]))
			bad = masq_err_set(err, MASQ_ERR_INTERNAL,
			    "layer %d: the quantized forward produced a non-finite value at token %lld",
			    p->layer, (long long)(p->tok0 + (int64_t)(i / c->hidden)));
	if (p->sharded ? dist_agree(bad, err) : bad)
		return -1;
	if (train_chain_forward(p, err) < 0)
		return -1;
	res->method = p->settings[p->layer].method;
	res->done = 1;
	res->t_quant = masq_now() - t0;
	return 0;
}

/* Whole sequences, in order, until the budget is spent, always taking a
 * sequence that brings a modality not yet covered.  Fills idx with the
 * chosen sequence indices; returns how many. */
static int
search_pick(const pipeline *p, int *idx, int *tokens)
{
	int covered[MOD_COUNT] = {0}, k = 0, total = 0, t0 = 0;
	for (int s = 0; s < p->all->n_seqs; s++) {
		int L = p->all->seq_lens[s], adds = 0;
		int has[MOD_COUNT] = {0};
		if (p->held != NULL && p->held[s]) {
			t0 += L;
			continue;	/* held out of the search */
		}
		for (int t = 0; t < L; t++)
			has[p->all->modality[t0 + t]] = 1;
		for (int m = 0; m < MOD_COUNT; m++)
			if (has[m] && !covered[m])
				adds = 1;
		if (total + L <= p->opts.search_tokens || adds || k == 0) {
			idx[k++] = s;
			total += L;
			for (int m = 0; m < MOD_COUNT; m++)
				covered[m] |= has[m];
		}
		t0 += L;
	}
	*tokens = total;
	return k;
}

int
pipe_search_alpha(pipeline *p, masq_err *err)
{
	const model_config *c = &p->m->cfg;
	layer_setting *ls = &p->settings[p->layer];
	pipe_search *sr = &p->results[p->layer].search;
	int D = c->hidden, ns, ntok;
	double t0 = masq_now();

	if (!p->calibrated)
		return masq_err_set(err, MASQ_ERR_USAGE, "layer %d is not calibrated yet", p->layer);
	if (pipe_weights_all(p, err) < 0)
		return -1;
	memset(sr, 0, sizeof *sr);
	if (ls->method == METHOD_RTN) {
		sr->done = 1;
		return 0;	/* nothing to search */
	}
	int *seqs = xmalloc(xmul((size_t)p->all->n_seqs, sizeof(int)));
	ns = search_pick(p, seqs, &ntok);
	sr->tokens = ntok;
	/* this rank's part of the chosen sequences (all of them in one process) */
	int nl = 0;
	ntok = 0;
	for (int i = 0; i < ns; i++)
		if (seqs[i] >= p->seq0 && seqs[i] < p->seq0 + p->c->n_seqs) {
			seqs[nl++] = seqs[i] - p->seq0;
			ntok += p->c->seq_lens[seqs[i] - p->seq0];
		}
	ns = nl;
	/* The search batch: the chosen sequences of the quantized input, their
	 * FP outputs (sequences are independent), modalities and positions. */
	float *hin = xmalloc(xmul((size_t)ntok * D + 1, sizeof(float)));
	float *href = xmalloc(xmul((size_t)ntok * D + 1, sizeof(float)));
	float *hout = xmalloc(xmul((size_t)ntok * D + 1, sizeof(float)));
	uint8_t *mod = xmalloc((size_t)ntok + 1);
	int64_t *pos = xmalloc(xmul((size_t)ntok * 3 + 1, sizeof(int64_t)));
	int32_t *lens = xmalloc(xmul((size_t)ns + 1, sizeof(int32_t)));
	int *start = xmalloc(xmul((size_t)p->c->n_seqs + 1, sizeof(int)));
	start[0] = 0;
	for (int s = 0; s < p->c->n_seqs; s++)
		start[s + 1] = start[s] + p->c->seq_lens[s];
	for (int i = 0, o = 0; i < ns; i++) {
		int s = seqs[i], L = p->c->seq_lens[s];
		memcpy(hin + (size_t)o * D, p->h_q + (size_t)start[s] * D, (size_t)L * D * sizeof(float));
		memcpy(href + (size_t)o * D, p->h_fp_out + (size_t)start[s] * D, (size_t)L * D * sizeof(float));
		memcpy(mod + o, p->c->modality + start[s], (size_t)L);
		for (int r = 0; r < 3; r++)
			memcpy(pos + (size_t)r * ntok + o, p->c->pos + (size_t)r * p->c->n_tokens + start[s],
			    (size_t)L * sizeof(int64_t));
		lens[i] = L;
		o += L;
	}
	engine_batch b = {.n_tokens = ntok, .n_seqs = ns, .seq_lens = lens, .pos = pos, .modality = mod};
	layer_setting trial = *ls;
	/* CMC changes no factor: the search runs MAS semantics for mas-cmc. */
	if (trial.method == METHOD_MAS_CMC)
		trial.method = METHOD_MAS;
	sr->n = (int)((p->opts.alpha_hi - p->opts.alpha_lo) / p->opts.alpha_step + 1.5f);
	for (int i = 0; i < sr->n; i++)
		sr->alpha[i] = p->opts.alpha_lo + (float)i * p->opts.alpha_step;

	int rows[ALPHA_ROWS], nrows = 0;
	if (!method_per_modality(trial.method)) {
		rows[nrows++] = ALPHA_UNIFIED;
	} else {
		for (int m = 0; m < MOD_COUNT; m++)
			if (p->all->n_mod[m])
				rows[nrows++] = m;
	}
	int rc = 0;
	for (int ri = 0; ri < nrows && rc == 0; ri++) {
		int row = rows[ri], best = 0;
		int target = row == ALPHA_UNIFIED ? STATS_ALL : row;
		for (int i = 0; i < sr->n && rc == 0; i++) {
			struct qctx q;
			for (int g = 0; g < GRP_COUNT; g++)
				trial.alpha[g][row] = sr->alpha[i];
			qctx_init(&q, p, &trial, mod, ntok, NULL, err);
			q.n_seqs = ns;
			q.seq_lens = lens;
			engine_ops ops = {.ctx = &q, .linear = qlinear};
			memcpy(hout, hin, (size_t)ntok * D * sizeof(float));
			if (ntok > 0)	/* a rank may hold none of the chosen sequences */
				engine_layer_forward(&p->eng, &p->w, &b, hout, &ops);
			int failed = q.failed;
			qctx_done(&q);
			if (p->sharded ? dist_agree(failed, err) : failed) {
				rc = -1;
				break;
			}
			metrics_acc a;
			metrics_acc_init_floor(&a, p->opts.sqnr_floor);
			metrics_acc_add(&a, href, hout, mod, ntok, D);
			if (p->sharded)
				acc_reduce(&a);
			sr->sqnr[row][i] = metrics_sqnr(&a, target);
			work(p, (ri * sr->n + i + 1.0) / (nrows * sr->n), "%s alpha %.2f (%d of %d)",
			    row == ALPHA_UNIFIED ? "unified" : modality_name(row), sr->alpha[i], ri * sr->n + i + 1, nrows * sr->n);
			/* the first maximum wins, so ties keep the smaller alpha */
			if (sr->sqnr[row][i] > sr->sqnr[row][best])
				best = i;
		}
		sr->best[row] = sr->alpha[best];
		for (int g = 0; g < GRP_COUNT; g++)
			trial.alpha[g][row] = sr->alpha[best];
	}
	if (rc == 0) {
		for (int ri = 0; ri < nrows; ri++)
			for (int g = 0; g < GRP_COUNT; g++)
				ls->alpha[g][rows[ri]] = sr->best[rows[ri]];
		sr->done = 1;
	}
	p->results[p->layer].t_search = masq_now() - t0;
	free(seqs); free(hin); free(href); free(hout); free(mod); free(pos); free(lens); free(start);
	return rc;
}

int
pipe_preview_sample(pipeline *p, int grp, int mod, pipe_preview *out, masq_err *err)
{
	double t0 = masq_now();

	if (!p->calibrated)
		return masq_err_set(err, MASQ_ERR_USAGE, "layer %d is not calibrated yet", p->layer);
	if (pipe_weights_here(p, err) < 0)
		return -1;
	if (p->lazy_w)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "layer %d: a one-pass run keeps no sampled rows to preview; open the session in the workbench",
		    p->layer);
	for (int k = 0; k < LIN_COUNT; k++)
		for (int m = 0; m < STATS_ROWS; m++)
			out->sqnr[k][m] = out->mae[k][m] = out->sqnr_no_cmc[k][m] = NAN;
	memset(out->rows, 0, sizeof out->rows);
	const layer_setting *ls = &p->settings[p->layer];
	/* the randomized SVD draws each pair's own stream (cmc_rng): a
	 * preview draws what quantizing draws, and leaves the pipeline's
	 * generator, and so every recorded figure, as it was */
	for (int site = 0; site < SITE_COUNT; site++) {
		const site_stats *st = &p->st[site];
		int n = 0;
		if (grp >= 0 && site != grp)
			continue;
		for (int m = 0; m < MOD_COUNT; m++)
			if (mod < 0 || m == mod)
				n += st->sample_n[m];
		if (n == 0)
			continue;
		/* the sampled rows of the chosen modalities, stacked */
		float *x = xmalloc(xmul((size_t)n * st->d, sizeof(float)));
		uint8_t *mods = xmalloc((size_t)n);
		int r = 0;
		for (int m = 0; m < MOD_COUNT; m++) {
			if (mod >= 0 && m != mod)
				continue;
			memcpy(x + (size_t)r * st->d, st->sample[m], (size_t)st->sample_n[m] * st->d * sizeof(float));
			memset(mods + r, m, (size_t)st->sample_n[m]);
			r += st->sample_n[m];
			out->rows[m] = st->sample_n[m];
		}
		struct qctx q;
		qctx_init(&q, p, ls, mods, n, pipe_wcache(p), err);
		q.measure = 1;
		for (int k = 0; k < LIN_COUNT && !q.failed; k++) {
			int o, in;
			if (engine_lin_site(k) != site)
				continue;
			layer_lin_shape(&p->m->cfg, k, &o, &in);
			float *y = xmalloc(xmul((size_t)n * o, sizeof(float)));
			qlinear(&q, &p->w, k, x, n, y);
			for (int m = 0; m < STATS_ROWS; m++) {
				out->sqnr[k][m] = metrics_sqnr(&q.acc[k], m);
				out->mae[k][m] = metrics_mae(&q.acc[k], m);
				out->sqnr_no_cmc[k][m] = q.have0[k] ? metrics_sqnr(&q.acc0[k], m) : NAN;
			}
			free(y);
		}
		int failed = q.failed;
		qctx_done(&q);
		free(x);
		free(mods);
		if (failed)
			return -1;
	}
	out->seconds = masq_now() - t0;
	return 0;
}

/* ---- the compensation's spectra, for a rank budget ------------------------------- */

void
pipe_spectra_free(pipe_spectrum *sp, int n)
{
	for (int i = 0; i < n && sp != NULL; i++)
		free(sp[i].gain);
	free(sp);
}

/* Linear lin of sh's calibrated layer: the summed whitened spectra of its
 * compensated modalities, up to cap values, into *o. */
static int
lin_spectrum(pipeline *sh, struct qctx *q, int lin, int cap, pipe_spectrum *o, masq_err *err)
{
	int out, in;
	layer_lin_shape(&sh->m->cfg, lin, &out, &in);
	int mn = in < out ? in : out;
	float *s_t = xmalloc(xmul((size_t)in, sizeof(float))), *s_m = xmalloc(xmul((size_t)in, sizeof(float)));
	float *Wbase = xmalloc(xmul((size_t)out * in, sizeof(float)));
	lin_factor(q, lin, METHOD_MAS_CMC, MOD_TEXT, s_t);
	quant_weight(sh, Wbase, sh->w.w[lin], s_t, out, in);
	struct qweight base = {.Wq = Wbase};
	o->lin = lin;
	o->in = in;
	o->out = out;
	o->mn = mn;
	o->cap = cap < mn ? cap : mn;
	o->gain = xcalloc((size_t)o->cap, sizeof(double));
	o->total = 0;
	o->nmod = 0;
	int rc = 0;
	for (int m = MOD_VISION; m < MOD_COUNT && rc == 0; m++) {
		if (sh->all->n_mod[m] == 0)
			continue;	/* (sharded: on every rank, whether or not its share has the modality) */
		lin_factor(q, lin, METHOD_MAS_CMC, m, s_m);
		cmc_whitener whb;
		const cmc_whitener *wh = NULL;
		memset(&whb, 0, sizeof whb);
		if (sh->opts.whiten) {
			if (get_whitener(q, smooth_lin_group(lin), m, s_m, in, &whb) < 0)
				rc = -1;
			else
				wh = &whb;
		}
		float *dWt = cmc_dwt(sh, lin, &base, s_m, out, in);	/* after the basis, as in lin_cmc */
		cmc_result res;
		rng g;
		memset(&res, 0, sizeof res);
		cmc_rng(sh, sh->layer, lin, m, &g);
		if (rc == 0 && cmc_compute_prec(&res, dWt, in, out, wh, o->cap, CMC_SVD_AUTO | pipe_svd_flags(&sh->opts),
		    sh->opts.cmc_precision, &g, err) < 0)
			rc = -1;
		if (rc == 0) {
			if (res.n_sv < o->cap)
				o->cap = res.n_sv;
			for (int i = 0; i < o->cap; i++)
				o->gain[i] += res.sv[i] * res.sv[i];
			o->total += res.total_energy;
			o->nmod++;
		}
		cmc_result_done(&res);
		cmc_whitener_done(&whb);
		free(dWt);
	}
	free(s_t);
	free(s_m);
	free(Wbase);
	return rc;
}

int
pipe_spectra(pipeline *p, int cap, pipe_spectrum **out, int *nout, pipe_progress_fn progress, void *ctx,
    masq_err *err)
{
	const model_config *c = &p->m->cfg;
	size_t n = (size_t)p->c->n_tokens * c->hidden;
	pipeline sh;
	int cnt = 0, rc = 0, from = p->layer;

	*out = NULL;
	*nout = 0;
	if (p->layer >= p->n_layers)
		return masq_err_set(err, MASQ_ERR_USAGE, "all %d layers are done", p->n_layers);
	/* a shadow of the pipeline on the FP chain alone: its own engine,
	 * statistics, results and generator; the settings are read, not written */
	memset(&sh, 0, sizeof sh);
	sh.m = p->m;
	sh.c = p->c;
	sh.all = p->all;
	/* sharded: each rank its share of the FP chain, the statistics reduced
	 * as the pipeline's are; every rank then computes every spectrum from
	 * the same reduced figures and draws */
	sh.sharded = p->sharded;
	sh.seq0 = p->seq0;
	sh.tok0 = p->tok0;
	sh.mod_fit_all = p->mod_fit_all;
	sh.opts = p->opts;
	sh.n_layers = p->n_layers;
	sh.settings = p->settings;
	sh.results = xcalloc((size_t)p->n_layers, sizeof *sh.results);
	engine_init(&sh.eng, c);
	engine_set_compute(&sh.eng, p->opts.compute);
	sh.batch = p->batch;
	sh.mod_fit = p->mod_fit;	/* the statistics of the fitted tokens (shared, not freed here) */
	sh.h_fp = xmalloc(xmul(n, sizeof(float)));
	sh.h_fp_out = xmalloc(xmul(n, sizeof(float)));
	memcpy(sh.h_fp, p->h_fp, n * sizeof(float));
	pipe_spectrum *sp = xcalloc((size_t)(p->n_layers - from) * LIN_COUNT, sizeof *sp);
	for (int l = from; l < p->n_layers && rc == 0; l++) {
		sh.layer = l;
		if (pipe_calibrate(&sh, err) < 0) {
			rc = -1;
			break;
		}
		if (p->settings[l].method == METHOD_MAS_CMC) {
			struct qctx q;
			qctx_init(&q, &sh, &sh.settings[l], p->c->modality, p->c->n_tokens, pipe_wcache(&sh), err);
			q.n_seqs = p->c->n_seqs;
			q.seq_lens = p->c->seq_lens;
			for (int m = 0; m < MOD_COUNT && p->sharded; m++)
				q.present[m] = p->all->n_mod[m] > 0;
			for (int k = 0; k < LIN_COUNT && rc == 0; k++) {
				if (smooth_lin_group(k) < 0)
					continue;
				sp[cnt].layer = l;
				if (lin_spectrum(&sh, &q, k, cap, &sp[cnt], err) < 0)
					rc = -1;
				cnt++;
			}
			qctx_done(&q);
		}
		float *t = sh.h_fp; sh.h_fp = sh.h_fp_out; sh.h_fp_out = t;
		calib_deepstack_add(sh.c, l, sh.h_fp);
		pipe_release_layer(&sh);
		int stop = rc == 0 && progress != NULL && progress(ctx, l - from + 1, p->n_layers - from, NAN);
		if (p->sharded ? dist_agree(stop, err) && rc == 0 : stop) {
			rc = masq_err_set(err, MASQ_ERR_USAGE, "interrupted");
			break;
		}
	}
	pipe_release_layer(&sh);
	engine_done(&sh.eng);
	free(sh.results);
	free(sh.h_fp);
	free(sh.h_fp_out);
	if (rc < 0) {
		pipe_spectra_free(sp, cnt);
		return masq_err_prefix(err, "layer %d", sh.layer);
	}
	*out = sp;
	*nout = cnt;
	return 0;
}

int
pipe_next(pipeline *p, masq_err *err)
{
	float *t;

	if (p->layer >= p->n_layers)
		return masq_err_set(err, MASQ_ERR_USAGE, "all %d layers are done", p->n_layers);
	if (!p->results[p->layer].done)
		return masq_err_set(err, MASQ_ERR_USAGE, "layer %d is not quantized yet", p->layer);
	if (p->h_train != NULL && !p->train_out_valid)
		return masq_err_set(err, MASQ_ERR_INTERNAL, "layer %d: the training chain has no output", p->layer);
	t = p->h_fp; p->h_fp = p->h_fp_out; p->h_fp_out = t;
	t = p->h_q; p->h_q = p->h_q_out; p->h_q_out = t;
	if (p->h_train != NULL) {
		t = p->h_train; p->h_train = p->h_train_out; p->h_train_out = t;
		t = p->h_fpe; p->h_fpe = p->h_fpe_out; p->h_fpe_out = t;
	}
	/* Qwen3-VL's deepstack: the same features join every chain after the
	 * layer (its output was measured before, as the layer module's) */
	calib_deepstack_add(p->c, p->layer, p->h_fp);
	calib_deepstack_add(p->c, p->layer, p->h_q);
	if (p->h_train != NULL) {
		calib_deepstack_add(p->c, p->layer, p->h_train);
		calib_deepstack_add(p->c, p->layer, p->h_fpe);
	}
	pipe_release_layer(p);
	p->layer++;
	return 0;
}

int
pipe_finish(pipeline *p, masq_err *err)
{
	const model_config *c = &p->m->cfg;
	int last = p->n_layers - 1;

	if (p->layer < p->n_layers)
		return masq_err_set(err, MASQ_ERR_USAGE, "layer %d of %d is not done yet", p->layer,
		    p->n_layers);
	for (int m = 0; m < STATS_ROWS; m++) {
		p->summary.sqnr[m] = p->results[last].sqnr[m];
		p->summary.mae[m] = p->results[last].mae[m];
		p->summary.sqnr_held[m] = p->results[last].sqnr_held[m];
		p->summary.mae_held[m] = p->results[last].mae_held[m];
	}
	p->summary.kl_text = p->summary.kl_text_held = NAN;
	if (p->m->lm_head_name != NULL && p->m->norm_name != NULL && p->all->n_mod[MOD_TEXT] > 0) {
		const st_tensor *tn = st_set_find(&p->m->st, p->m->norm_name);
		const st_tensor *th = st_set_find(&p->m->st, p->m->lm_head_name);
		int V = (int)th->shape[0];
		int *idx = xmalloc(xmul((size_t)p->c->n_tokens + 1, sizeof(int)));
		float *norm = st_tensor_to_f32(tn), *W = st_tensor_to_f32(th);
		st_tensor_release(th);
		/* the fitted text positions (all without a split), then the held-out
		 * ones; the head runs one sequence at a time (as the layers'
		 * linears do), and the KL of each position is added in token order,
		 * then across processes in rank order */
		for (int part = 0; part < (p->mod_held != NULL ? 2 : 1); part++) {
			const uint8_t *mod = part == 0 ? (p->mod_fit ? p->mod_fit : p->c->modality) : p->mod_held;
			double sum = 0.0;
			int64_t cnt = 0;
			for (int s = 0, t0 = 0; s < p->c->n_seqs; t0 += p->c->seq_lens[s], s++) {
				int k = 0;
				for (int t = t0; t < t0 + p->c->seq_lens[s]; t++)
					if (mod[t] == MOD_TEXT)
						idx[k++] = t;
				if (k == 0)
					continue;
				/* after pipe_next the final states are in h_fp and h_q */
				float *lf = engine_head_logits(p->h_fp, idx, k, c->hidden, norm, c->rms_eps, W, V);
				float *lq = engine_head_logits(p->h_q, idx, k, c->hidden, norm, c->rms_eps, W, V);
				for (int r = 0; r < k; r++)
					sum += metrics_kl_rows_sum(lf + (size_t)r * V, lq + (size_t)r * V, 1, V);
				cnt += k;
				free(lf);
				free(lq);
			}
			if (p->sharded) {
				dist_sum_f64(&sum, 1);
				dist_sum_i64(&cnt, 1);
			}
			if (cnt > 0 && V > 0)
				*(part == 0 ? &p->summary.kl_text : &p->summary.kl_text_held) = sum / (double)cnt;
		}
		free(norm); free(W); free(idx);
	}
	p->summary.seconds = masq_now() - p->t_start;
	p->finished = 1;
	return 0;
}
