/*
 * learn_ref.c: the plain twin of learn.c's step.  Loops in double, no
 * BLAS, every intermediate kept (attention probabilities included), the
 * backward written from the formulas of learned-mas.md one at a time.  For
 * tests only: O(tokens^2 * heads) memory.
 *
 * LEARN_REF_FLOAT rounds to float exactly where the fast path stores a
 * float (so both make the same rounding decisions in the quantizers, which
 * run as the float _ref kernels of quant.c); LEARN_REF_DOUBLE keeps double
 * throughout with its own quantizer, whose rounding can be recorded and
 * then frozen so that the loss becomes a smooth function of the factors
 * for finite differences.
 */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/learn.h"
#include "core/quant.h"

struct ref {
	const learn_state *L;
	const learn_seq *q;
	int mode;
	learn_freeze *fz;
	const double *const (*sv)[MOD_COUNT];	/* factor overrides, or NULL */
};

void
learn_freeze_done(learn_freeze *f)
{
	free(f->c);
	free(f->inside);
	memset(f, 0, sizeof *f);
}

static void
fz_push(learn_freeze *f, double c, int inside)
{
	if (f->n == f->cap) {
		f->cap = f->cap ? 2 * f->cap : 4096;
		f->c = xrealloc(f->c, xmul(f->cap, sizeof(double)));
		f->inside = xrealloc(f->inside, f->cap);
	}
	f->c[f->n] = c;
	f->inside[f->n++] = (uint8_t)inside;
}

static double
fl(const struct ref *r, double x)
{
	return r->mode == LEARN_REF_FLOAT ? (double)(float)x : x;
}

static double *
dalloc(size_t a, size_t b)
{
	return xcalloc(a ? a : 1, xmul(b ? b : 1, sizeof(double)));
}

/*
 * Symmetric per-row fake quant of x (n, d) at bits into y, in the mode's
 * arithmetic.  *at is where this call's rounding starts in the freeze
 * record (set on the way).
 */
static void
rq_sym(struct ref *r, double *y, const double *x, int n, int d, int bits, size_t *at)
{
	if (bits >= 16) {
		memcpy(y, x, (size_t)n * d * sizeof(double));
		return;
	}
	if (r->mode == LEARN_REF_FLOAT) {
		float *fx = xmalloc(xmul((size_t)n * d + 1, sizeof(float)));
		for (size_t i = 0; i < (size_t)n * d; i++)
			fx[i] = (float)x[i];
		quant_act_rows_ref(fx, fx, n, d, bits);
		for (size_t i = 0; i < (size_t)n * d; i++)
			y[i] = fx[i];
		free(fx);
		return;
	}
	double qmax = (1 << (bits - 1)) - 1;
	*at = r->fz ? r->fz->n : 0;
	if (r->mode & LEARN_REF_FROZEN)
		*at = r->fz->pos, r->fz->pos += (size_t)n * d;
	for (int t = 0; t < n; t++) {
		const double *xr = x + (size_t)t * d;
		double am = 0.0;
		for (int j = 0; j < d; j++)
			am = fabs(xr[j]) > am ? fabs(xr[j]) : am;
		double scale = fmin(fmax(am / qmax, 1e-5), 1e4);
		for (int j = 0; j < d; j++) {
			double u = xr[j] / scale, c;
			int inside;
			if (r->mode & LEARN_REF_FROZEN) {
				c = r->fz->c[*at + (size_t)t * d + j];
				inside = r->fz->inside[*at + (size_t)t * d + j];
			} else {
				double level = nearbyint(u);
				inside = fabs(level) <= qmax;
				level = fmin(fmax(level, -qmax), qmax);
				c = inside ? level - u : level;
				if (r->mode & LEARN_REF_RECORD)
					fz_push(r->fz, c, inside);
			}
			y[(size_t)t * d + j] = inside ? xr[j] + c * scale : c * scale;
		}
	}
}

/* d loss / d x of rq_sym from g (n, d), into gx. */
static void
rq_sym_ste(struct ref *r, double *gx, const double *g, const double *x, int n, int d, int bits, size_t at)
{
	if (bits >= 16) {
		memcpy(gx, g, (size_t)n * d * sizeof(double));
		return;
	}
	if (r->mode == LEARN_REF_FLOAT) {
		float *fx = xmalloc(xmul((size_t)n * d + 1, sizeof(float)));
		float *fg = xmalloc(xmul((size_t)n * d + 1, sizeof(float)));
		for (size_t i = 0; i < (size_t)n * d; i++) {
			fx[i] = (float)x[i];
			fg[i] = (float)g[i];
		}
		quant_rows_sym_ste_ref(fg, fg, fx, n, d, bits);
		for (size_t i = 0; i < (size_t)n * d; i++)
			gx[i] = fg[i];
		free(fx);
		free(fg);
		return;
	}
	double qmax = (1 << (bits - 1)) - 1;
	for (int t = 0; t < n; t++) {
		const double *xr = x + (size_t)t * d, *gr = g + (size_t)t * d;
		double hi = xr[0], lo = xr[0];
		for (int j = 0; j < d; j++) {
			hi = xr[j] > hi ? xr[j] : hi;
			lo = xr[j] < lo ? xr[j] : lo;
		}
		double am = fmax(fabs(hi), fabs(lo)), raw = am / qmax;
		double scale = fmin(fmax(raw, 1e-5), 1e4), gscale = 0.0;
		for (int j = 0; j < d; j++) {
			double u = xr[j] / scale, c;
			int inside;
			if (r->mode & LEARN_REF_FROZEN) {
				c = r->fz->c[at + (size_t)t * d + j];
				inside = r->fz->inside[at + (size_t)t * d + j];
			} else {
				double level = nearbyint(u);
				inside = fabs(level) <= qmax;
				level = fmin(fmax(level, -qmax), qmax);
				c = inside ? level - u : level;
			}
			/* d x^ / d scale is c either way (x + c s inside, c s outside) */
			gscale += gr[j] * c;
			gx[(size_t)t * d + j] = inside ? gr[j] : 0.0;
		}
		if (raw < 1e-5 || raw > 1e4)
			continue;
		int nhi = 0, nlo = 0;
		for (int j = 0; j < d; j++) {
			nhi += xr[j] == hi;
			nlo += xr[j] == lo;
		}
		double whi = fabs(hi) > fabs(lo) ? 1.0 : fabs(hi) < fabs(lo) ? 0.0 : 0.5;
		for (int j = 0; j < d; j++) {
			if (xr[j] == hi)
				gx[(size_t)t * d + j] += gscale / qmax * whi * (hi > 0 ? 1 : hi < 0 ? -1 : 0) / nhi;
			if (xr[j] == lo)
				gx[(size_t)t * d + j] += gscale / qmax * (1 - whi) * (lo > 0 ? 1 : lo < 0 ? -1 : 0) / nlo;
		}
	}
}

/* Weight quantizer: per channel as rq_sym, or asymmetric groups (float mode only). */
static void
rq_w(struct ref *r, double *y, const double *x, int out, int in, size_t *at)
{
	const learn_opts *o = &r->L->o;
	if (o->wgroup <= 0 || o->wbits >= 16) {
		rq_sym(r, y, x, out, in, o->wbits, at);
		return;
	}
	MASQ_ASSERT(r->mode == LEARN_REF_FLOAT);
	float *f = xmalloc(xmul((size_t)out * in, sizeof(float)));
	for (size_t i = 0; i < (size_t)out * in; i++)
		f[i] = (float)x[i];
	quant_weight_groups_ref(f, f, out, in, o->wbits, o->wgroup);
	for (size_t i = 0; i < (size_t)out * in; i++)
		y[i] = f[i];
	free(f);
}

static void
rq_w_ste(struct ref *r, double *gx, const double *g, const double *x, int out, int in, size_t at)
{
	const learn_opts *o = &r->L->o;
	if (o->wgroup <= 0 || o->wbits >= 16) {
		rq_sym_ste(r, gx, g, x, out, in, o->wbits, at);
		return;
	}
	float *fx = xmalloc(xmul((size_t)out * in, sizeof(float)));
	float *fg = xmalloc(xmul((size_t)out * in, sizeof(float)));
	for (size_t i = 0; i < (size_t)out * in; i++) {
		fx[i] = (float)x[i];
		fg[i] = (float)g[i];
	}
	quant_groups_asym_ste_ref(fg, fg, fx, out, in, o->wbits, o->wgroup);
	for (size_t i = 0; i < (size_t)out * in; i++)
		gx[i] = fg[i];
	free(fx);
	free(fg);
}

/* One modality's branch of one linear, kept for the backward. */
struct branch {
	int m, k, *rows;
	double *s;		/* (in) the factor (1 for down_proj) */
	double *x, *a, *ah;	/* (k, in) */
	double *B, *Bh;		/* (out, in) */
	size_t fa, fw;		/* freeze offsets of the two quantizers */
};

struct lin_rec {
	int lin, out, in, nb;
	struct branch b[MOD_COUNT];
};

static void
lin_rec_free(struct lin_rec *lr)
{
	for (int i = 0; i < lr->nb; i++) {
		struct branch *b = &lr->b[i];
		free(b->rows); free(b->s); free(b->x); free(b->a); free(b->ah); free(b->B); free(b->Bh);
	}
}

/* y (n, out) of linear lin on x (n, in) in train mode, recorded in lr. */
static void
ref_lin(struct ref *r, int lin, const double *x, double *y, struct lin_rec *lr)
{
	const learn_state *L = r->L;
	const layer_weights *w = L->w;
	int n = r->q->n, out, in;

	layer_lin_shape(&L->cfg, lin, &out, &in);
	memset(lr, 0, sizeof *lr);
	lr->lin = lin;
	lr->out = out;
	lr->in = in;
	for (int m = 0; m < MOD_COUNT; m++) {
		int k = 0;
		for (int t = 0; t < n; t++)
			k += (L->o.unified ? 0 : r->q->modality[t]) == m;
		if (k == 0)
			continue;
		struct branch *b = &lr->b[lr->nb++];
		b->m = m;
		b->k = k;
		b->rows = xmalloc(xmul((size_t)k, sizeof(int)));
		for (int t = 0, i = 0; t < n; t++)
			if ((L->o.unified ? 0 : r->q->modality[t]) == m)
				b->rows[i++] = t;
		b->s = dalloc((size_t)in, 1);
		for (int j = 0; j < in; j++)
			b->s[j] = lin == LIN_DOWN ? 1.0 : r->sv != NULL ? r->sv[lin][m][j] : L->s[lin][m][j];
		b->x = dalloc((size_t)k, (size_t)in);
		b->a = dalloc((size_t)k, (size_t)in);
		b->ah = dalloc((size_t)k, (size_t)in);
		b->B = dalloc((size_t)out, (size_t)in);
		b->Bh = dalloc((size_t)out, (size_t)in);
		for (int i = 0; i < k; i++)
			for (int j = 0; j < in; j++) {
				double xv = x[(size_t)b->rows[i] * in + j];
				double d = fl(r, b->s[j] + (double)LEARN_EPS);
				b->x[(size_t)i * in + j] = xv;
				b->a[(size_t)i * in + j] = fl(r, xv / d);
			}
		rq_sym(r, b->ah, b->a, k, in, L->o.abits, &b->fa);
		for (int o = 0; o < out; o++)
			for (int j = 0; j < in; j++)
				b->B[(size_t)o * in + j] = fl(r, w->w[lin][(size_t)o * in + j] * b->s[j]);
		rq_w(r, b->Bh, b->B, out, in, &b->fw);
		for (int i = 0; i < k; i++)
			for (int o = 0; o < out; o++) {
				double acc = 0.0;
				for (int j = 0; j < in; j++)
					acc += b->ah[(size_t)i * in + j] * b->Bh[(size_t)o * in + j];
				if (w->b[lin] != NULL)
					acc = fl(r, acc) + w->b[lin][o];
				y[(size_t)b->rows[i] * out + o] = fl(r, acc);
			}
	}
}

/* Backward of ref_lin: factor gradients into g (per branch modality) and
 * d loss / d x into gx (n, in) when not NULL. */
static void
ref_lin_bwd(struct ref *r, const struct lin_rec *lr, const double *gy, double *gx, double *const g[MOD_COUNT])
{
	const learn_state *L = r->L;
	const float *W = L->w->w[lr->lin];
	int out = lr->out, in = lr->in;

	for (int bi = 0; bi < lr->nb; bi++) {
		const struct branch *b = &lr->b[bi];
		int k = b->k;
		double *gah = dalloc((size_t)k, (size_t)in), *ga = dalloc((size_t)k, (size_t)in);
		double *gBh = dalloc((size_t)out, (size_t)in), *gB = dalloc((size_t)out, (size_t)in);
		/* y = ah Bh^T: g_ah = gy Bh, g_Bh = gy^T ah */
		for (int i = 0; i < k; i++)
			for (int o = 0; o < out; o++) {
				double gv = gy[(size_t)b->rows[i] * out + o];
				for (int j = 0; j < in; j++) {
					gah[(size_t)i * in + j] += gv * b->Bh[(size_t)o * in + j];
					gBh[(size_t)o * in + j] += gv * b->ah[(size_t)i * in + j];
				}
			}
		rq_sym_ste(r, ga, gah, b->a, k, in, L->o.abits, b->fa);
		rq_w_ste(r, gB, gBh, b->B, out, in, b->fw);
		for (int j = 0; j < in; j++) {
			double d = fl(r, b->s[j] + (double)LEARN_EPS), gs = 0.0;
			for (int i = 0; i < k; i++) {
				double gai = ga[(size_t)i * in + j];
				if (gx != NULL)
					gx[(size_t)b->rows[i] * in + j] += gai / d;
				/* a = x / d: d a / d s = -x / d^2 */
				gs -= gai * b->x[(size_t)i * in + j] / (d * d);
			}
			/* B = W s: d B[o, j] / d s_j = W[o, j] */
			for (int o = 0; o < out; o++)
				gs += gB[(size_t)o * in + j] * W[(size_t)o * in + j];
			if (lr->lin != LIN_DOWN)
				g[b->m][j] += gs;
		}
		free(gah); free(ga); free(gBh); free(gB);
	}
}

static void
ref_rms(struct ref *r, const double *x, const float *wt, int n, int d, double *y, double *rr)
{
	for (int t = 0; t < n; t++) {
		double ss = 0.0;
		for (int j = 0; j < d; j++)
			ss += x[(size_t)t * d + j] * x[(size_t)t * d + j];
		rr[t] = fl(r, 1.0 / sqrt(ss / d + r->L->cfg.rms_eps));
		for (int j = 0; j < d; j++)
			y[(size_t)t * d + j] = fl(r, fl(r, x[(size_t)t * d + j] * rr[t]) * wt[j]);
	}
}

/* gx (n, d) = d loss / d x of ref_rms (y = x rr wt) from gy:
 * rr (wt gy) - rr^3 x mean(x wt gy). */
static void
ref_rms_bwd(const double *x, const float *wt, const double *rr, const double *gy, int n, int d, double *gx)
{
	for (int t = 0; t < n; t++) {
		double dot = 0.0, rt = rr[t];
		for (int j = 0; j < d; j++)
			dot += x[(size_t)t * d + j] * wt[j] * gy[(size_t)t * d + j];
		for (int j = 0; j < d; j++)
			gx[(size_t)t * d + j] = rt * wt[j] * gy[(size_t)t * d + j] - rt * rt * rt * x[(size_t)t * d + j] * dot / d;
	}
}

/* The angle of frequency i at token t. */
static double
ref_angle(const struct ref *r, int t, int i)
{
	const model_config *c = &r->L->cfg;
	int row = 0;
	if (c->mrope && c->mrope_interleaved) {
		/* Qwen3-VL: h at 1, 4, 7, ... below 3 * section[1], w at 2, 5, ...
		 * below 3 * section[2] */
		if (i % 3 == 1 && i < 3 * c->mrope_section[1])
			row = 1;
		else if (i % 3 == 2 && i < 3 * c->mrope_section[2])
			row = 2;
	} else if (c->mrope) {
		if (i >= c->mrope_section[0] + c->mrope_section[1])
			row = 2;
		else if (i >= c->mrope_section[0])
			row = 1;
	}
	double f = pow(c->rope_theta, -2.0 * i / c->head_dim);
	if (r->mode == LEARN_REF_FLOAT)
		f = (float)f;
	return (double)r->q->pos[(size_t)row * r->q->pos_stride + t] * f;
}

/* Rotate-half on x (n, heads, hd); sign -1 applies the transpose (to
 * gradients, which are not rounded). */
static void
ref_rope(struct ref *r, double *x, int n, int heads, int sign)
{
	struct ref rd = *r;
	if (sign < 0)
		rd.mode = LEARN_REF_DOUBLE;
	int hd = r->L->cfg.head_dim, half = hd / 2;
	for (int t = 0; t < n; t++)
		for (int h = 0; h < heads; h++)
			for (int i = 0; i < half; i++) {
				double a = ref_angle(r, t, i), c = fl(r, cos(a)), s = fl(r, sin(a)) * sign;
				double *v = x + ((size_t)t * heads + h) * hd;
				double x1 = v[i], x2 = v[i + half];
				v[i] = fl(&rd, x1 * c - x2 * s);
				v[i + half] = fl(&rd, x2 * c + x1 * s);
			}
}

double
learn_step_grad_ref(const learn_state *L, const learn_seq *q, int mode, learn_freeze *fz,
    const double *const sv[LEARN_LINS][MOD_COUNT], double *const g[LEARN_LINS][MOD_COUNT])
{
	struct ref r = {L, q, mode, fz, sv};
	const model_config *c = &L->cfg;
	const layer_weights *w = L->w;
	int n = q->n, D = c->hidden, NI = c->intermediate, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim;
	int qd = H * hd, kd = KV * hd, G = H / KV;
	size_t N = (size_t)n;
	struct lin_rec lr[LIN_COUNT];

	if (fz != NULL && (mode & LEARN_REF_FROZEN))
		fz->pos = 0;
	for (int k = 0; k < LEARN_LINS; k++)
		for (int m = 0; m < MOD_COUNT; m++)
			if (learn_owns(L, k, m))
				memset(g[k][m], 0, (size_t)L->in[k] * sizeof(double));

	double *h = dalloc(N, D), *n1 = dalloc(N, D), *r1 = dalloc(N, 1), *n2 = dalloc(N, D), *r2 = dalloc(N, 1);
	double *Q = dalloc(N, qd), *K = dalloc(N, kd), *V = dalloc(N, kd), *att = dalloc(N, qd);
	double *P = dalloc((size_t)H * N, N), *h1 = dalloc(N, D), *Gt = dalloc(N, NI), *U = dalloc(N, NI);
	double *A = dalloc(N, NI), *out = dalloc(N, D), *y = dalloc(N, D);

	for (size_t i = 0; i < N * D; i++)
		h[i] = q->h[i];
	ref_rms(&r, h, w->attn_norm, n, D, n1, r1);
	ref_lin(&r, LIN_Q, n1, Q, &lr[LIN_Q]);
	ref_lin(&r, LIN_K, n1, K, &lr[LIN_K]);
	ref_lin(&r, LIN_V, n1, V, &lr[LIN_V]);
	double *Qp = NULL, *Kp = NULL, *rq = NULL, *rk = NULL;
	if (c->qk_norm) {
		/* Qwen3: each head of q and k RMS-normalised before RoPE */
		Qp = dalloc(N, qd);
		Kp = dalloc(N, kd);
		rq = dalloc(N, H);
		rk = dalloc(N, KV);
		memcpy(Qp, Q, N * qd * sizeof(double));
		memcpy(Kp, K, N * kd * sizeof(double));
		ref_rms(&r, Qp, w->q_norm, n * H, hd, Q, rq);
		ref_rms(&r, Kp, w->k_norm, n * KV, hd, K, rk);
	}
	ref_rope(&r, Q, n, H, 1);
	ref_rope(&r, K, n, KV, 1);
	for (int hh = 0; hh < H; hh++)
		for (int i = 0; i < n; i++) {
			double *p = P + ((size_t)hh * N + i) * N, mx = -INFINITY, sum = 0.0;
			for (int j = 0; j <= i; j++) {
				double dot = 0.0;
				for (int e = 0; e < hd; e++)
					dot += Q[((size_t)i * H + hh) * hd + e] * K[((size_t)j * KV + hh / G) * hd + e];
				p[j] = fl(&r, dot * fl(&r, 1.0 / sqrt((double)hd)));
				mx = p[j] > mx ? p[j] : mx;
			}
			for (int j = 0; j <= i; j++)
				sum += (p[j] = exp(p[j] - mx));
			for (int j = 0; j <= i; j++)
				p[j] = fl(&r, p[j] / sum);
			for (int e = 0; e < hd; e++) {
				double acc = 0.0;
				for (int j = 0; j <= i; j++)
					acc += p[j] * V[((size_t)j * KV + hh / G) * hd + e];
				att[((size_t)i * H + hh) * hd + e] = fl(&r, acc);
			}
		}
	ref_lin(&r, LIN_O, att, y, &lr[LIN_O]);
	for (size_t i = 0; i < N * D; i++)
		h1[i] = fl(&r, h[i] + y[i]);
	ref_rms(&r, h1, w->mlp_norm, n, D, n2, r2);
	ref_lin(&r, LIN_GATE, n2, Gt, &lr[LIN_GATE]);
	ref_lin(&r, LIN_UP, n2, U, &lr[LIN_UP]);
	for (size_t i = 0; i < N * NI; i++)
		A[i] = fl(&r, Gt[i] / (1.0 + exp(-Gt[i])) * U[i]);
	ref_lin(&r, LIN_DOWN, A, y, &lr[LIN_DOWN]);
	for (size_t i = 0; i < N * D; i++)
		out[i] = fl(&r, h1[i] + y[i]);

	/* the loss */
	double loss = 0.0, *gout = dalloc(N, D);
	for (int t = 0; t < n; t++)
		for (int j = 0; j < D; j++) {
			size_t i = (size_t)t * D + j;
			double e = out[i] - q->target[i];
			if (L->o.loss == LEARN_LOSS_MAE) {
				double lam = L->o.lambda[q->modality[t]];
				loss += lam * fabs(e);
				gout[i] = lam * (e > 0 ? 1 : e < 0 ? -1 : 0) / (double)(N * D);
			} else {
				loss += e * e;
				gout[i] = 2 * e / (double)(N * D);
			}
		}
	loss /= (double)(N * D);

	/* the backward, from the output down */
	double *gA = dalloc(N, NI), *gGt = dalloc(N, NI), *gU = dalloc(N, NI), *gn2 = dalloc(N, D);
	double *gh1 = dalloc(N, D), *gatt = dalloc(N, qd), *gQ = dalloc(N, qd), *gK = dalloc(N, kd), *gV = dalloc(N, kd);
	double *none[MOD_COUNT] = {NULL, NULL, NULL};
	double *gl[LIN_COUNT][MOD_COUNT];
	for (int k = 0; k < LEARN_LINS; k++)
		for (int m = 0; m < MOD_COUNT; m++) {
			int ow = L->owner[k][m];
			gl[k][m] = g[ow / MOD_COUNT][ow % MOD_COUNT];
		}
	ref_lin_bwd(&r, &lr[LIN_DOWN], gout, gA, none);
	for (size_t i = 0; i < N * NI; i++) {
		double sg = 1.0 / (1.0 + exp(-Gt[i]));
		gGt[i] = gA[i] * U[i] * sg * (1.0 + Gt[i] * (1.0 - sg));
		gU[i] = gA[i] * Gt[i] * sg;
	}
	ref_lin_bwd(&r, &lr[LIN_GATE], gGt, gn2, gl[LIN_GATE]);
	ref_lin_bwd(&r, &lr[LIN_UP], gU, gn2, gl[LIN_UP]);
	/* RMSNorm: g_x = r (w g) - r^3 x mean(x w g) */
	for (int t = 0; t < n; t++) {
		double dot = 0.0, rt = r2[t];
		for (int j = 0; j < D; j++)
			dot += h1[(size_t)t * D + j] * w->mlp_norm[j] * gn2[(size_t)t * D + j];
		for (int j = 0; j < D; j++)
			gh1[(size_t)t * D + j] = gout[(size_t)t * D + j] + rt * w->mlp_norm[j] * gn2[(size_t)t * D + j] -
			    rt * rt * rt * h1[(size_t)t * D + j] * dot / D;
	}
	ref_lin_bwd(&r, &lr[LIN_O], gh1, gatt, gl[LIN_O]);
	/* attention: g_V = P^T g_O, g_P = g_O V^T, g_S = P (g_P - rowsum(g_P P)) */
	double sc = fl(&r, 1.0 / sqrt((double)hd));
	for (int hh = 0; hh < H; hh++)
		for (int i = 0; i < n; i++) {
			const double *p = P + ((size_t)hh * N + i) * N;
			const double *go = gatt + ((size_t)i * H + hh) * hd;
			double *gp = dalloc((size_t)i + 1, 1), dot = 0.0;
			for (int j = 0; j <= i; j++) {
				const double *vj = V + ((size_t)j * KV + hh / G) * hd;
				for (int e = 0; e < hd; e++) {
					gp[j] += go[e] * vj[e];
					gV[((size_t)j * KV + hh / G) * hd + e] += p[j] * go[e];
				}
				dot += gp[j] * p[j];
			}
			for (int j = 0; j <= i; j++) {
				double gs = p[j] * (gp[j] - dot) * sc;
				for (int e = 0; e < hd; e++) {
					gQ[((size_t)i * H + hh) * hd + e] += gs * K[((size_t)j * KV + hh / G) * hd + e];
					gK[((size_t)j * KV + hh / G) * hd + e] += gs * Q[((size_t)i * H + hh) * hd + e];
				}
			}
			free(gp);
		}
	/* the rotation's transpose */
	ref_rope(&r, gQ, n, H, -1);
	ref_rope(&r, gK, n, KV, -1);
	if (c->qk_norm) {
		double *gp = dalloc(N, qd > kd ? qd : kd);
		ref_rms_bwd(Qp, w->q_norm, rq, gQ, n * H, hd, gp);
		memcpy(gQ, gp, N * qd * sizeof(double));
		ref_rms_bwd(Kp, w->k_norm, rk, gK, n * KV, hd, gp);
		memcpy(gK, gp, N * kd * sizeof(double));
		free(gp);
	}
	free(Qp); free(Kp); free(rq); free(rk);
	ref_lin_bwd(&r, &lr[LIN_Q], gQ, NULL, gl[LIN_Q]);
	ref_lin_bwd(&r, &lr[LIN_K], gK, NULL, gl[LIN_K]);
	ref_lin_bwd(&r, &lr[LIN_V], gV, NULL, gl[LIN_V]);

	for (int k = 0; k < LIN_COUNT; k++)
		lin_rec_free(&lr[k]);
	free(h); free(n1); free(r1); free(n2); free(r2); free(Q); free(K); free(V); free(att); free(P);
	free(h1); free(Gt); free(U); free(A); free(out); free(y); free(gout); free(gA); free(gGt); free(gU);
	free(gn2); free(gh1); free(gatt); free(gQ); free(gK); free(gV);
	return loss;
}
