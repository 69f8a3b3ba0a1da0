#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/blas.h"
#include "core/engine.h"
#include "core/learn.h"
#include "core/quant.h"

static const char *const loss_names[LEARN_LOSS_COUNT] = {"mae", "mse"};

const char *
learn_loss_name(int loss)
{
	return (unsigned)loss < LEARN_LOSS_COUNT ? loss_names[loss] : "?";
}

int
learn_loss_parse(const char *s)
{
	for (int i = 0; i < LEARN_LOSS_COUNT; i++)
		if (strcmp(s, loss_names[i]) == 0)
			return i;
	return -1;
}

void
learn_opts_default(learn_opts *o)
{
	memset(o, 0, sizeof *o);
	o->wbits = 4;
	o->abits = 8;
	o->loss = LEARN_LOSS_MAE;
	o->lambda[MOD_TEXT] = 1.0f;
	o->lambda[MOD_VISION] = 0.5f;
	o->lambda[MOD_AUDIO] = 1.0f;
	o->lr = 5e-2f;
}

/* ---- scratch ----------------------------------------------------------------- */

/* One sequence's activations and the per-linear buffers, grown on demand. */
struct learn_ws {
	int cap;		/* tokens */
	float *h1, *n1, *n2, *r1, *r2;
	float *q, *k, *v, *att, *lse;	/* q, k after RoPE; lse (heads, cap) */
	float *G, *U, *A, *out;
	float *cs;		/* (cap, head_dim): cos | sin per token */
	float *qp, *kp, *rq, *rk;	/* Qwen3: q, k before their per-head norms; inverse RMS per head */
	float *gqp, *gkp;
	float *gout, *gh1, *gA, *gG, *gU, *gn2, *gatt, *gq, *gk, *gv, *dsum;
	/* per linear, rows of one group: (cap, widest) each */
	float *X, *Aq, *Ad, *GY, *Ga, *P, *GP;
	int *rows[MOD_COUNT];
	float *B, *gB;		/* (widest linear) */
	size_t bcap;
	int wide;		/* max(in, out) over the linears */
};

static void
ws_free(struct learn_ws *ws)
{
	float **f[] = {&ws->h1, &ws->n1, &ws->n2, &ws->r1, &ws->r2, &ws->q, &ws->k, &ws->v, &ws->att,
	    &ws->lse, &ws->G, &ws->U, &ws->A, &ws->out, &ws->cs, &ws->gout, &ws->gh1, &ws->gA, &ws->gG,
	    &ws->gU, &ws->gn2, &ws->gatt, &ws->gq, &ws->gk, &ws->gv, &ws->dsum, &ws->X, &ws->Aq, &ws->Ad,
	    &ws->GY, &ws->Ga, &ws->P, &ws->GP, &ws->qp, &ws->kp, &ws->rq, &ws->rk, &ws->gqp, &ws->gkp};
	for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
		free(*f[i]);
		*f[i] = NULL;
	}
	for (int m = 0; m < MOD_COUNT; m++) {
		free(ws->rows[m]);
		ws->rows[m] = NULL;
	}
	ws->cap = 0;
}

static float *
fbuf(size_t a, size_t b)
{
	return xmalloc(xmul(a ? a : 1, xmul(b ? b : 1, sizeof(float))));
}

static void
ws_reserve(learn_state *L, int n)
{
	struct learn_ws *ws = L->ws;
	const model_config *c = &L->cfg;
	size_t N = (size_t)n, D = c->hidden, NI = c->intermediate;
	size_t qd = (size_t)c->n_heads * c->head_dim, kd = (size_t)c->n_kv_heads * c->head_dim;
	size_t wide = (size_t)ws->wide;

	if (n <= ws->cap)
		return;
	ws_free(ws);
	ws->h1 = fbuf(N, D); ws->n1 = fbuf(N, D); ws->n2 = fbuf(N, D);
	ws->r1 = fbuf(N, 1); ws->r2 = fbuf(N, 1);
	ws->q = fbuf(N, qd); ws->k = fbuf(N, kd); ws->v = fbuf(N, kd); ws->att = fbuf(N, qd);
	ws->lse = fbuf((size_t)c->n_heads, N);
	ws->G = fbuf(N, NI); ws->U = fbuf(N, NI); ws->A = fbuf(N, NI); ws->out = fbuf(N, D);
	ws->cs = fbuf(N, (size_t)c->head_dim);
	if (c->qk_norm) {
		ws->qp = fbuf(N, qd); ws->kp = fbuf(N, kd); ws->gqp = fbuf(N, qd); ws->gkp = fbuf(N, kd);
		ws->rq = fbuf(N, (size_t)c->n_heads); ws->rk = fbuf(N, (size_t)c->n_kv_heads);
	}
	ws->gout = fbuf(N, D); ws->gh1 = fbuf(N, D); ws->gA = fbuf(N, NI); ws->gG = fbuf(N, NI);
	ws->gU = fbuf(N, NI); ws->gn2 = fbuf(N, D); ws->gatt = fbuf(N, qd);
	ws->gq = fbuf(N, qd); ws->gk = fbuf(N, kd); ws->gv = fbuf(N, kd);
	ws->dsum = fbuf((size_t)c->n_heads, N);
	ws->X = fbuf(N, wide); ws->Aq = fbuf(N, wide); ws->Ad = fbuf(N, wide); ws->GY = fbuf(N, wide); ws->Ga = fbuf(N, wide);
	ws->P = fbuf(LEARN_ATT_BLOCK, N); ws->GP = fbuf(LEARN_ATT_BLOCK, N);
	for (int m = 0; m < MOD_COUNT; m++)
		ws->rows[m] = xmalloc(xmul(N, sizeof(int)));
	ws->cap = n;
}

/* ---- life cycle -------------------------------------------------------------- */

static int
slot(int lin, int mod)
{
	return lin * MOD_COUNT + mod;
}

void
learn_init(learn_state *L, const model_config *cfg, const layer_weights *w, const learn_opts *o,
    const float *const init[LEARN_LINS][MOD_COUNT])
{
	memset(L, 0, sizeof *L);
	L->cfg = *cfg;
	L->w = w;
	L->o = *o;
	L->ws = xcalloc(1, sizeof *L->ws);
	size_t big = 0;
	for (int k = 0; k < LIN_COUNT; k++) {
		int out, in;
		layer_lin_shape(cfg, k, &out, &in);
		L->in[k] = in;
		if ((size_t)out * in > big)
			big = (size_t)out * in;
		if (in > L->ws->wide)
			L->ws->wide = in;
		if (out > L->ws->wide)
			L->ws->wide = out;
	}
	L->ws->B = fbuf(big, 1);
	L->ws->gB = fbuf(big, 1);
	L->ws->bcap = big;
	for (int k = 0; k < LEARN_LINS; k++)
		for (int m = 0; m < MOD_COUNT; m++) {
			int ok = k, om = o->unified ? 0 : m;
			if (o->tied && (k == LIN_K || k == LIN_V))
				ok = LIN_Q;
			if (o->tied && k == LIN_GATE)
				ok = LIN_UP;
			L->owner[k][m] = slot(ok, om);
		}
	for (int k = 0; k < LEARN_LINS; k++)
		for (int m = 0; m < MOD_COUNT; m++) {
			if (L->owner[k][m] != slot(k, m))
				continue;
			int i = slot(k, m);
			L->s[k][m] = fbuf((size_t)L->in[k], 1);
			memcpy(L->s[k][m], init[k][m], (size_t)L->in[k] * sizeof(float));
			L->g[k][m] = xcalloc((size_t)L->in[k], sizeof(float));
			L->m1[i] = xcalloc((size_t)L->in[k], sizeof(float));
			L->m2[i] = xcalloc((size_t)L->in[k], sizeof(float));
		}
	for (int k = 0; k < LEARN_LINS; k++)
		for (int m = 0; m < MOD_COUNT; m++) {
			int ow = L->owner[k][m];
			L->s[k][m] = L->s[ow / MOD_COUNT][ow % MOD_COUNT];
			L->g[k][m] = L->g[ow / MOD_COUNT][ow % MOD_COUNT];
		}
}

int
learn_owns(const learn_state *L, int lin, int mod)
{
	return L->owner[lin][mod] == slot(lin, mod);
}

void
learn_done(learn_state *L)
{
	for (int k = 0; k < LEARN_LINS; k++)
		for (int m = 0; m < MOD_COUNT; m++)
			if (learn_owns(L, k, m)) {
				free(L->s[k][m]);
				free(L->g[k][m]);
				free(L->m1[slot(k, m)]);
				free(L->m2[slot(k, m)]);
			}
	if (L->ws != NULL) {
		ws_free(L->ws);
		free(L->ws->B);
		free(L->ws->gB);
		free(L->ws);
	}
	memset(L, 0, sizeof *L);
}

void
learn_truncate(learn_state *L)
{
	for (int k = 0; k < LEARN_LINS; k++)
		for (int m = 0; m < MOD_COUNT; m++) {
			if (!learn_owns(L, k, m))
				continue;
			float *s = L->s[k][m];
			for (int i = 0; i < L->in[k]; i++)
				if (fabsf(s[i]) < LEARN_TRUNC && s[i] != 0.0f)
					s[i] = copysignf(LEARN_TRUNC, s[i]);
		}
}

/*
 * torch.optim.AdamW's single-tensor step in float: the moments by lerp and
 * addcmul, denom = sqrt(v) / sqrt(bias_correction2) + eps, then p -= lr /
 * bias_correction1 * m / denom; the scalars come from double as torch's
 * Python floats do.
 */
int
learn_adam_step(learn_state *L)
{
	for (int k = 0; k < LEARN_LINS; k++)
		for (int m = 0; m < MOD_COUNT; m++) {
			if (!learn_owns(L, k, m))
				continue;
			for (int i = 0; i < L->in[k]; i++)
				if (!isfinite(L->g[k][m][i])) {
					L->skipped++;
					return 1;
				}
		}
	L->steps++;
	double bc1 = 1.0 - pow(LEARN_BETA1, L->steps), bc2 = 1.0 - pow(LEARN_BETA2, L->steps);
	float step = (float)(L->o.lr / bc1), bc2s = (float)sqrt(bc2);
	float w1 = (float)(1.0 - LEARN_BETA1), b2 = (float)LEARN_BETA2, w2 = (float)(1.0 - LEARN_BETA2);
	float eps = (float)LEARN_ADAM_EPS;
	for (int k = 0; k < LEARN_LINS; k++)
		for (int m = 0; m < MOD_COUNT; m++) {
			if (!learn_owns(L, k, m))
				continue;
			float *p = L->s[k][m], *g = L->g[k][m], *m1 = L->m1[slot(k, m)], *m2 = L->m2[slot(k, m)];
			for (int i = 0; i < L->in[k]; i++) {
				m1[i] = m1[i] + w1 * (g[i] - m1[i]);
				m2[i] = m2[i] * b2 + w2 * (g[i] * g[i]);
				float denom = sqrtf(m2[i]) / bc2s + eps;
				p[i] = p[i] + -step * (m1[i] / denom);
			}
		}
	return 0;
}

int
learn_target_linear(void *ctx, const layer_weights *w, int lin, const float *x, int n, float *y)
{
	int out = lin == LIN_O || lin == LIN_DOWN ? w->hidden : lin == LIN_Q ? w->q_dim :
	    lin == LIN_K || lin == LIN_V ? w->kv_dim : w->inter;
	int in = lin == LIN_O ? w->q_dim : lin == LIN_DOWN ? w->inter : w->hidden;
	float *xs = fbuf((size_t)n, (size_t)in);
	float d = 1.0f + LEARN_EPS;
	const engine_batch *b = ctx;

	for (size_t i = 0; i < (size_t)n * in; i++)
		xs[i] = x[i] / d;
	/* one GEMM a sequence, as the engine's own linears: a sequence's
	 * target is the same bits however the batch around it is cut */
	if (b == NULL)
		engine_linear(xs, n, in, w->w[lin], w->b[lin], out, y);
	else
		for (int s = 0, t0 = 0; s < b->n_seqs; t0 += b->seq_lens[s], s++)
			engine_linear(xs + (size_t)t0 * in, b->seq_lens[s], in, w->w[lin], w->b[lin], out,
			    y + (size_t)t0 * out);
	free(xs);
	return 0;
}

/* ---- the pieces of the block ---------------------------------------------------- */

/* Row lists of linear lin's step: one group per modality present, or all
 * rows in one (unified factors, and down_proj, whose factor is 1 for every
 * modality: one weight, one product). */
static int
groups(const learn_state *L, const learn_seq *q, int lin, int *gmod, int *gcount)
{
	struct learn_ws *ws = L->ws;
	int cnt[MOD_COUNT] = {0}, ng = 0;

	for (int t = 0; t < q->n; t++) {
		int m = L->o.unified || lin == LIN_DOWN ? 0 : q->modality[t];
		ws->rows[m][cnt[m]++] = t;
	}
	for (int m = 0; m < MOD_COUNT; m++)
		if (cnt[m] > 0) {
			gmod[ng] = m;
			gcount[ng++] = cnt[m];
		}
	return ng;
}

/*
 * The weight side, row by row over the output channels and split over as
 * many threads as BLAS has (rows are independent; each thread sums its
 * factor gradient over its own block of rows in double and the blocks are
 * added in order, so a thread count gives one result).  The weight
 * quantizer is symmetric per output channel here, fused: W diag(s) is
 * never stored, each row's scale comes from max|W[o, j] s_j| computed on
 * the fly, exactly as quant_weight_rows computes it on the stored product.
 * Grouped (asymmetric) weights take the plain path below them.
 */
/* fn over rows 0..n-1 in nth contiguous blocks (one block below 64 rows). */
static void
rows_par(int n, int nth, masq_range_fn fn, void *ctx)
{
	masq_parallel(n, n < 64 ? 1 : nth, fn, ctx);
}

static int
w_threads(void)
{
	int t = masq_blas_get_threads();
	return t < 1 ? 1 : t > 16 ? 16 : t;
}

struct wq_ctx {
	const float *W, *s;
	float *B;		/* (out, in) Q(W diag(s)) */
	int in, bits;
	/* the backward: */
	const float *gB;	/* (out, in) d loss / d B^ */
	double *gs;		/* (threads, in) partial factor gradients */
};

/* nearbyintf for |v| <= 2^22 without a call, as quant.c's rint_small
 * (the loops stay vectorizable; the tests compare with quant.c). */
static inline float
rint_fast(float v)
{
	const float magic = 0x1.8p23f;
	return copysignf((v + magic) - magic, v);
}

/* max |W[o, j] s_j| of row o, as quant_absmax over the stored product. */
static float
wrow_absmax(const float *w, const float *s, int in)
{
	uint32_t m = 0;
	for (int j = 0; j < in; j++) {
		float b = w[j] * s[j];
		uint32_t u;
		memcpy(&u, &b, sizeof u);
		u &= 0x7fffffffu;
		m = u > m ? u : m;
	}
	float f;
	memcpy(&f, &m, sizeof f);
	return f;
}

static void
wq_rows(void *ctx, int lo, int hi, int tid)
{
	struct wq_ctx *c = ctx;
	float qmax = (float)quant_qmax(c->bits);
	(void)tid;
	for (int o = lo; o < hi; o++) {
		const float *w = c->W + (size_t)o * c->in;
		float *b = c->B + (size_t)o * c->in;
		float sc = quant_scale_sym(wrow_absmax(w, c->s, c->in), c->bits), lim = qmax + 1.0f;
		for (int j = 0; j < c->in; j++) {
			float v = (w[j] * c->s[j]) / sc;
			v = v < -lim ? -lim : v > lim ? lim : v;
			float q = rint_fast(v);
			q = q < -qmax ? -qmax : q > qmax ? qmax : q;
			b[j] = q * sc;
		}
	}
}

/* d loss / d s from d loss / d B^ through B^ = Q(W diag(s)): the
 * straight-through rule with the scale path, then B = W diag(s); and B^
 * itself into c->B when not NULL (the backward's other GEMM needs it).  One
 * pass over the row after the one that finds its extremes (and so its
 * scale), a third only where the row's extreme is tied. */
static void
wq_rows_bwd(void *ctx, int lo, int hi, int tid)
{
	struct wq_ctx *c = ctx;
	float qmax = (float)quant_qmax(c->bits);
	double *gs = c->gs + (size_t)tid * c->in;
	for (int o = lo; o < hi; o++) {
		const float *w = c->W + (size_t)o * c->in, *g = c->gB + (size_t)o * c->in;
		float *bq = c->B != NULL ? c->B + (size_t)o * c->in : NULL;
		float mx = -INFINITY, mn = INFINITY;
		for (int j = 0; j < c->in; j++) {
			float b = w[j] * c->s[j];
			mx = b > mx ? b : mx;
			mn = b < mn ? b : mn;
		}
		float am = fabsf(mx) > fabsf(mn) ? fabsf(mx) : fabsf(mn);
		float raw = am / qmax, sc = quant_scale_sym(am, c->bits), lim = qmax + 1.0f;
		double gsc = 0.0;
		int nmax = 0, nmin = 0, jmax = -1, jmin = -1;
		for (int j = 0; j < c->in; j++) {
			float b = w[j] * c->s[j], u = b / sc;
			float v = u < -lim ? -lim : u > lim ? lim : u;
			float q = rint_fast(v);
			int inside = q >= -qmax && q <= qmax;
			q = q < -qmax ? -qmax : q > qmax ? qmax : q;
			if (bq != NULL)
				bq[j] = q * sc;
			gsc += (double)g[j] * (q - (inside ? u : 0.0f));
			gs[j] += inside ? (double)g[j] * w[j] : 0.0;
			if (b == mx) {
				nmax++;
				jmax = j;
			}
			if (b == mn) {
				nmin++;
				jmin = j;
			}
		}
		if (!(raw >= QUANT_SCALE_MIN && raw <= QUANT_SCALE_MAX) || nmax == 0 || nmin == 0)
			continue;	/* the scale is clamped (or the row is not finite) */
		/* the scale reaches the row's extremes, as quant_rows_sym_ste */
		double amx = fabs(mx), amn = fabs(mn), wt = amx > amn ? 1.0 : amx == amn ? 0.5 : 0.0;
		float gmax = (float)(gsc / qmax * wt * (mx > 0 ? 1.0 : mx < 0 ? -1.0 : 0.0) / nmax);
		float gmin = (float)(gsc / qmax * (1.0 - wt) * (mn > 0 ? 1.0 : mn < 0 ? -1.0 : 0.0) / nmin);
		if (nmax == 1 && nmin == 1) {
			gs[jmax] += (double)gmax * w[jmax];
			gs[jmin] += (double)gmin * w[jmin];
			continue;
		}
		for (int j = 0; j < c->in; j++) {
			float b = w[j] * c->s[j];
			if (b == mx)
				gs[j] += (double)gmax * w[j];
			if (b == mn)
				gs[j] += (double)gmin * w[j];
		}
	}
}

/* B (out, in) = Q_W(W diag(s)), s NULL: 1. */
static void
quant_w(const learn_state *L, float *B, const float *W, const float *s, int out, int in)
{
	if (s != NULL && L->o.wbits < 16 && L->o.wgroup <= 0) {
		struct wq_ctx c = {.W = W, .s = s, .B = B, .in = in, .bits = L->o.wbits};
		rows_par(out, w_threads(), wq_rows, &c);
		return;
	}
	for (int o = 0; o < out; o++)
		for (int j = 0; j < in; j++)
			B[(size_t)o * in + j] = s ? W[(size_t)o * in + j] * s[j] : W[(size_t)o * in + j];
	if (L->o.wbits >= 16)
		return;
	if (L->o.wgroup > 0)
		quant_weight_groups(B, B, out, in, L->o.wbits, L->o.wgroup);
	else
		quant_weight_rows(B, B, out, in, L->o.wbits);
}

/* gs (in) += d loss / d s through B^ = Q(W diag(s)) from gB (out, in) = d
 * loss / d B^, and B (out, in) = B^; gB is scratch. */
static void
quant_w_bwd(const learn_state *L, double *gs, float *gB, float *B, const float *W, const float *s, int out, int in)
{
	if (L->o.wbits < 16 && L->o.wgroup <= 0) {
		int nth = w_threads();
		double *part = xcalloc(xmul((size_t)nth, (size_t)in), sizeof(double));
		struct wq_ctx c = {.W = W, .s = s, .B = B, .in = in, .bits = L->o.wbits, .gB = gB, .gs = part};
		rows_par(out, nth, wq_rows_bwd, &c);
		for (int t = 0; t < nth; t++)
			for (int j = 0; j < in; j++)
				gs[j] += part[(size_t)t * in + j];
		free(part);
		return;
	}
	for (int o = 0; o < out; o++)
		for (int j = 0; j < in; j++)
			B[(size_t)o * in + j] = W[(size_t)o * in + j] * s[j];
	if (L->o.wbits < 16)
		quant_groups_asym_ste(gB, gB, B, out, in, L->o.wbits, L->o.wgroup);
	for (int o = 0; o < out; o++) {
		const float *gb = gB + (size_t)o * in, *wr = W + (size_t)o * in;
		for (int j = 0; j < in; j++)
			gs[j] += (double)gb[j] * wr[j];
	}
	quant_w(L, B, W, s, out, in);
}

/* Gather rows of x (n, d) into X (k, d); d1 (d), when not NULL, divides. */
static void
gather(float *X, const float *x, const int *rows, int k, int d, const float *div)
{
	for (int r = 0; r < k; r++) {
		const float *src = x + (size_t)rows[r] * d;
		float *dst = X + (size_t)r * d;
		if (div != NULL)
			for (int j = 0; j < d; j++)
				dst[j] = src[j] / div[j];
		else
			memcpy(dst, src, (size_t)d * sizeof(float));
	}
}

/* The factor divisor s + eps (s NULL: 1 + eps) into d (in). */
static void
divisor(float *d, const float *s, int in)
{
	for (int j = 0; j < in; j++)
		d[j] = (s ? s[j] : 1.0f) + LEARN_EPS;
}

/* y (n, out) of linear lin in train mode; down (lin == LIN_DOWN) has s = 1. */
static void
slin_fwd(learn_state *L, const learn_seq *q, int lin, const float *x, float *y)
{
	struct learn_ws *ws = L->ws;
	const layer_weights *w = L->w;
	int out, in, gmod[MOD_COUNT], gcnt[MOD_COUNT];
	int ng = groups(L, q, lin, gmod, gcnt);
	float *d = xmalloc(xmul((size_t)L->in[lin], sizeof(float)));

	layer_lin_shape(&L->cfg, lin, &out, &in);
	for (int gi = 0; gi < ng; gi++) {
		int m = gmod[gi], k = gcnt[gi];
		const float *s = lin == LIN_DOWN ? NULL : L->s[lin][m];
		divisor(d, s, in);
		gather(ws->Ad, x, ws->rows[m], k, in, d);
		quant_act_rows(ws->Aq, ws->Ad, k, in, L->o.abits);
		quant_w(L, ws->B, w->w[lin], s, out, in);
		engine_linear(ws->Aq, k, in, ws->B, w->b[lin], out, ws->GY);
		for (int r = 0; r < k; r++)
			memcpy(y + (size_t)ws->rows[m][r] * out, ws->GY + (size_t)r * out, (size_t)out * sizeof(float));
	}
	free(d);
}

/*
 * Backward of slin_fwd from gy (n, out): the factor gradients into L->g
 * (summed: several linears may share an owner) and, when gx is not NULL,
 * d loss / d x added into gx (n, in).
 */
static void
slin_bwd(learn_state *L, const learn_seq *q, int lin, const float *x, const float *gy, float *gx)
{
	struct learn_ws *ws = L->ws;
	const layer_weights *w = L->w;
	int out, in, gmod[MOD_COUNT], gcnt[MOD_COUNT];
	int ng = groups(L, q, lin, gmod, gcnt);
	float *d = xmalloc(xmul((size_t)L->in[lin], sizeof(float)));
	double *gs = xmalloc(xmul((size_t)L->in[lin], sizeof(double)));

	layer_lin_shape(&L->cfg, lin, &out, &in);
	for (int gi = 0; gi < ng; gi++) {
		int m = gmod[gi], k = gcnt[gi];
		const int *rows = ws->rows[m];
		const float *s = lin == LIN_DOWN ? NULL : L->s[lin][m];
		divisor(d, s, in);
		gather(ws->X, x, rows, k, in, NULL);
		gather(ws->Ad, x, rows, k, in, d);
		gather(ws->GY, gy, rows, k, out, NULL);
		for (int j = 0; j < in; j++)
			gs[j] = 0.0;
		if (s != NULL) {
			/* the weight path first: g_B^ (out, in) = GY^T A^, then in one
			 * pass over the weight its straight-through backward and B^ */
			if (L->o.abits < 16)
				quant_act_rows(ws->Aq, ws->Ad, k, in, L->o.abits);
			else
				memcpy(ws->Aq, ws->Ad, (size_t)k * in * sizeof(float));
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, k, 1.0f, ws->GY, out, ws->Aq, in,
			    0.0f, ws->gB, in);
			quant_w_bwd(L, gs, ws->gB, ws->B, w->w[lin], s, out, in);
		} else {
			quant_w(L, ws->B, w->w[lin], NULL, out, in);
		}
		/* g_ahat (k, in) = GY B^ */
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, k, in, out, 1.0f, ws->GY, out, ws->B, in,
		    0.0f, ws->Ga, in);
		if (L->o.abits < 16)
			quant_rows_sym_ste(ws->Ga, ws->Ga, ws->Ad, k, in, L->o.abits);
		if (gx != NULL)
			for (int r = 0; r < k; r++) {
				float *dst = gx + (size_t)rows[r] * in;
				const float *src = ws->Ga + (size_t)r * in;
				for (int j = 0; j < in; j++)
					dst[j] += src[j] / d[j];
			}
		if (s == NULL)
			continue;	/* down_proj: no factor */
		/* the activation path: a = x / (s + eps) */
		double *ga = xcalloc((size_t)in, sizeof(double));
		for (int r = 0; r < k; r++) {
			const float *g = ws->Ga + (size_t)r * in, *xr = ws->X + (size_t)r * in;
			for (int j = 0; j < in; j++)
				ga[j] -= (double)g[j] * xr[j];
		}
		float *g = L->g[lin][m];
		for (int j = 0; j < in; j++)
			g[j] = (float)(g[j] + (gs[j] + ga[j] / ((double)d[j] * d[j])));
		free(ga);
	}
	free(d);
	free(gs);
}

/* out (n, d) = rmsnorm(x) * wt, r (n) the inverse RMS, as engine.c. */
static void
rms_fwd(float *out, float *r, const float *x, const float *wt, int n, int d, float eps)
{
	for (int t = 0; t < n; t++) {
		const float *xr = x + (size_t)t * d;
		double ss = 0.0;
		for (int j = 0; j < d; j++)
			ss += (double)xr[j] * xr[j];
		r[t] = (float)(1.0 / sqrt(ss / d + eps));
		for (int j = 0; j < d; j++)
			out[(size_t)t * d + j] = xr[j] * r[t] * wt[j];
	}
}

/* gx (n, d) += d loss / d x of rms_fwd from gy. */
static void
rms_bwd(float *gx, const float *gy, const float *x, const float *r, const float *wt, int n, int d)
{
	for (int t = 0; t < n; t++) {
		const float *xr = x + (size_t)t * d, *g = gy + (size_t)t * d;
		double dot = 0.0, rt = r[t];
		for (int j = 0; j < d; j++)
			dot += (double)xr[j] * wt[j] * g[j];
		dot /= d;
		for (int j = 0; j < d; j++)
			gx[(size_t)t * d + j] += (float)(rt * wt[j] * g[j] - rt * rt * rt * xr[j] * dot);
	}
}

/* cos | sin (n, head_dim) per token, as engine.c's rope_apply. */
static void
rope_tables(const learn_state *L, const learn_seq *q, float *cs)
{
	const model_config *c = &L->cfg;
	int hd = c->head_dim, half = hd / 2;

	for (int t = 0; t < q->n; t++)
		for (int i = 0; i < half; i++) {
			int row = engine_freq_row(c, i);
			double inv = (double)(float)pow(c->rope_theta, -2.0 * i / hd);
			double a = (double)q->pos[(size_t)row * q->pos_stride + t] * inv;
			cs[(size_t)t * hd + i] = (float)cos(a);
			cs[(size_t)t * hd + half + i] = (float)sin(a);
		}
}

/* Rotate x (n, heads * hd) in place; inverse: the transpose (backward). */
static void
rope(const learn_state *L, float *x, int n, int heads, const float *cs, int inverse)
{
	int hd = L->cfg.head_dim, half = hd / 2;
	for (int t = 0; t < n; t++) {
		const float *c = cs + (size_t)t * hd, *s = c + half;
		for (int h = 0; h < heads; h++) {
			float *v = x + ((size_t)t * heads + h) * hd;
			for (int i = 0; i < half; i++) {
				float a = v[i], b = v[i + half];
				if (!inverse) {
					v[i] = a * c[i] - b * s[i];
					v[i + half] = b * c[i] + a * s[i];
				} else {
					v[i] = a * c[i] + b * s[i];
					v[i + half] = b * c[i] - a * s[i];
				}
			}
		}
	}
}

/* Causal GQA attention of the sequence; lse (H, n) kept for the backward. */
static void
att_fwd(learn_state *L, int n)
{
	struct learn_ws *ws = L->ws;
	const model_config *c = &L->cfg;
	int hd = c->head_dim, H = c->n_heads, G = c->n_heads / c->n_kv_heads;
	int qd = H * hd, kd = c->n_kv_heads * hd;
	float scale = 1.0f / sqrtf((float)hd);

	for (int h = 0; h < H; h++) {
		const float *kh = ws->k + (size_t)(h / G) * hd, *vh = ws->v + (size_t)(h / G) * hd;
		for (int i0 = 0; i0 < n; i0 += LEARN_ATT_BLOCK) {
			int B = n - i0 < LEARN_ATT_BLOCK ? n - i0 : LEARN_ATT_BLOCK, K = i0 + B;
			float *S = ws->P;
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, K, hd, scale,
			    ws->q + (size_t)i0 * qd + (size_t)h * hd, qd, kh, kd, 0.0f, S, K);
			for (int r = 0; r < B; r++)
				ws->lse[(size_t)h * n + i0 + r] = engine_softmax_prefix(S + (size_t)r * K, i0 + r, K);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, hd, K, 1.0f, S, K, vh, kd, 0.0f,
			    ws->att + (size_t)i0 * qd + (size_t)h * hd, qd);
		}
	}
}

/* From gatt (n, qd): gq (n, qd), gk, gv (n, kd), the probabilities
 * recomputed per block from lse. */
static void
att_bwd(learn_state *L, int n)
{
	struct learn_ws *ws = L->ws;
	const model_config *c = &L->cfg;
	int hd = c->head_dim, H = c->n_heads, G = c->n_heads / c->n_kv_heads;
	int qd = H * hd, kd = c->n_kv_heads * hd;
	float scale = 1.0f / sqrtf((float)hd);

	memset(ws->gk, 0, (size_t)n * kd * sizeof(float));
	memset(ws->gv, 0, (size_t)n * kd * sizeof(float));
	for (int h = 0; h < H; h++)
		for (int t = 0; t < n; t++) {
			const float *go = ws->gatt + (size_t)t * qd + (size_t)h * hd;
			const float *o = ws->att + (size_t)t * qd + (size_t)h * hd;
			double acc = 0.0;
			for (int j = 0; j < hd; j++)
				acc += (double)go[j] * o[j];
			ws->dsum[(size_t)h * n + t] = (float)acc;
		}
	for (int h = 0; h < H; h++) {
		const float *kh = ws->k + (size_t)(h / G) * hd, *vh = ws->v + (size_t)(h / G) * hd;
		float *gkh = ws->gk + (size_t)(h / G) * hd, *gvh = ws->gv + (size_t)(h / G) * hd;
		for (int i0 = 0; i0 < n; i0 += LEARN_ATT_BLOCK) {
			int B = n - i0 < LEARN_ATT_BLOCK ? n - i0 : LEARN_ATT_BLOCK, K = i0 + B;
			const float *qb = ws->q + (size_t)i0 * qd + (size_t)h * hd;
			const float *gob = ws->gatt + (size_t)i0 * qd + (size_t)h * hd;
			float *S = ws->P, *GP = ws->GP;
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, K, hd, scale, qb, qd, kh, kd, 0.0f, S, K);
			for (int r = 0; r < B; r++) {
				float *row = S + (size_t)r * K;
				int last = i0 + r;
				float l = ws->lse[(size_t)h * n + last];
				for (int j = 0; j <= last; j++)
					row[j] = expf(row[j] - l);
				for (int j = last + 1; j < K; j++)
					row[j] = 0.0f;
			}
			/* gV += P^T gO */
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, hd, B, 1.0f, S, K, gob, qd, 1.0f, gvh, kd);
			/* gP = gO V^T */
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, K, hd, 1.0f, gob, qd, vh, kd, 0.0f, GP, K);
			for (int r = 0; r < B; r++) {
				float *p = S + (size_t)r * K, *gp = GP + (size_t)r * K;
				float dsum = ws->dsum[(size_t)h * n + i0 + r];
				for (int j = 0; j < K; j++)
					gp[j] = p[j] * (gp[j] - dsum) * scale;
			}
			/* gQ = gS K, gK += gS^T Q (the scale is in gS) */
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, hd, K, 1.0f, GP, K, kh, kd, 0.0f,
			    ws->gq + (size_t)i0 * qd + (size_t)h * hd, qd);
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, hd, B, 1.0f, GP, K, qb, qd, 1.0f, gkh, kd);
		}
	}
}

/* ---- the step --------------------------------------------------------------------- */

void
learn_forward(learn_state *L, const learn_seq *seq, float *out)
{
	learn_step_grad(L, seq, out, 0);
}

double
learn_step_grad(learn_state *L, const learn_seq *q, float *out, int grad)
{
	struct learn_ws *ws;
	const model_config *c = &L->cfg;
	const layer_weights *w = L->w;
	int n = q->n, D = c->hidden, NI = c->intermediate;
	int qd = c->n_heads * c->head_dim, kd = c->n_kv_heads * c->head_dim;
	size_t nD = (size_t)n * D, nI = (size_t)n * NI;

	ws_reserve(L, n);
	ws = L->ws;
	/* forward */
	rope_tables(L, q, ws->cs);
	rms_fwd(ws->n1, ws->r1, q->h, w->attn_norm, n, D, c->rms_eps);
	if (c->qk_norm) {
		/* Qwen3: each head of q and k RMS-normalised before RoPE */
		slin_fwd(L, q, LIN_Q, ws->n1, ws->qp);
		slin_fwd(L, q, LIN_K, ws->n1, ws->kp);
		rms_fwd(ws->q, ws->rq, ws->qp, w->q_norm, n * c->n_heads, c->head_dim, c->rms_eps);
		rms_fwd(ws->k, ws->rk, ws->kp, w->k_norm, n * c->n_kv_heads, c->head_dim, c->rms_eps);
	} else {
		slin_fwd(L, q, LIN_Q, ws->n1, ws->q);
		slin_fwd(L, q, LIN_K, ws->n1, ws->k);
	}
	slin_fwd(L, q, LIN_V, ws->n1, ws->v);
	rope(L, ws->q, n, c->n_heads, ws->cs, 0);
	rope(L, ws->k, n, c->n_kv_heads, ws->cs, 0);
	att_fwd(L, n);
	slin_fwd(L, q, LIN_O, ws->att, ws->h1);
	for (size_t i = 0; i < nD; i++)
		ws->h1[i] += q->h[i];
	rms_fwd(ws->n2, ws->r2, ws->h1, w->mlp_norm, n, D, c->rms_eps);
	slin_fwd(L, q, LIN_GATE, ws->n2, ws->G);
	slin_fwd(L, q, LIN_UP, ws->n2, ws->U);
	for (size_t i = 0; i < nI; i++) {
		float g = ws->G[i];
		ws->A[i] = g / (1.0f + expf(-g)) * ws->U[i];
	}
	slin_fwd(L, q, LIN_DOWN, ws->A, ws->out);
	for (size_t i = 0; i < nD; i++)
		ws->out[i] += ws->h1[i];
	if (out != NULL)
		memcpy(out, ws->out, nD * sizeof(float));
	if (q->target == NULL)
		return NAN;	/* learn_forward: the output alone */

	/* loss and its gradient */
	double loss = 0.0, inv = 1.0 / (double)nD;
	for (int t = 0; t < n; t++) {
		double lam = L->o.loss == LEARN_LOSS_MAE ? L->o.lambda[q->modality[t]] : 1.0;
		for (int j = 0; j < D; j++) {
			size_t i = (size_t)t * D + j;
			double e = (double)ws->out[i] - q->target[i];
			if (L->o.loss == LEARN_LOSS_MAE) {
				loss += lam * fabs(e);
				ws->gout[i] = (float)(e > 0 ? lam * inv : e < 0 ? -lam * inv : 0.0);
			} else {
				loss += e * e;
				ws->gout[i] = (float)(2.0 * e * inv);
			}
		}
	}
	loss *= inv;
	if (!grad)
		return loss;

	/* backward */
	for (int k = 0; k < LEARN_LINS; k++)
		for (int m = 0; m < MOD_COUNT; m++)
			if (learn_owns(L, k, m))
				memset(L->g[k][m], 0, (size_t)L->in[k] * sizeof(float));
	memcpy(ws->gh1, ws->gout, nD * sizeof(float));
	memset(ws->gA, 0, nI * sizeof(float));
	slin_bwd(L, q, LIN_DOWN, ws->A, ws->gout, ws->gA);
	for (size_t i = 0; i < nI; i++) {
		float g = ws->G[i], sg = 1.0f / (1.0f + expf(-g));
		ws->gG[i] = ws->gA[i] * ws->U[i] * sg * (1.0f + g * (1.0f - sg));
		ws->gU[i] = ws->gA[i] * g * sg;
	}
	memset(ws->gn2, 0, nD * sizeof(float));
	slin_bwd(L, q, LIN_GATE, ws->n2, ws->gG, ws->gn2);
	slin_bwd(L, q, LIN_UP, ws->n2, ws->gU, ws->gn2);
	rms_bwd(ws->gh1, ws->gn2, ws->h1, ws->r2, w->mlp_norm, n, D);
	memset(ws->gatt, 0, (size_t)n * qd * sizeof(float));
	slin_bwd(L, q, LIN_O, ws->att, ws->gh1, ws->gatt);
	att_bwd(L, n);
	rope(L, ws->gq, n, c->n_heads, ws->cs, 1);
	rope(L, ws->gk, n, c->n_kv_heads, ws->cs, 1);
	float *gq = ws->gq, *gk = ws->gk;
	if (c->qk_norm) {
		memset(ws->gqp, 0, (size_t)n * qd * sizeof(float));
		memset(ws->gkp, 0, (size_t)n * kd * sizeof(float));
		rms_bwd(ws->gqp, ws->gq, ws->qp, ws->rq, w->q_norm, n * c->n_heads, c->head_dim);
		rms_bwd(ws->gkp, ws->gk, ws->kp, ws->rk, w->k_norm, n * c->n_kv_heads, c->head_dim);
		gq = ws->gqp;
		gk = ws->gkp;
	}
	slin_bwd(L, q, LIN_Q, ws->n1, gq, NULL);
	slin_bwd(L, q, LIN_K, ws->n1, gk, NULL);
	slin_bwd(L, q, LIN_V, ws->n1, ws->gv, NULL);
	return loss;
}
