#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/blas.h"
#include "core/dtype.h"
#include "core/engine.h"
#include "core/quant.h"

/* Query rows per attention block: bounds the score buffer to
 * ATT_BLOCK x (longest sequence) floats whatever the sequence length. */
#define ATT_BLOCK 256

static const char *const site_names[SITE_COUNT] = {"qkv", "o", "gateup", "down"};

const char *
engine_site_name(int site)
{
	return (unsigned)site < SITE_COUNT ? site_names[site] : "?";
}

int
engine_lin_site(int lin)
{
	switch (lin) {
	case LIN_Q: case LIN_K: case LIN_V: return SITE_QKV;
	case LIN_O: return SITE_O;
	case LIN_GATE: case LIN_UP: return SITE_GATEUP;
	default: return SITE_DOWN;
	}
}

void
engine_init(engine *e, const model_config *cfg)
{
	int half = cfg->head_dim / 2;

	memset(e, 0, sizeof *e);
	e->cfg = *cfg;
	e->inv_freq = xmalloc(xmul((size_t)half, sizeof *e->inv_freq));
	e->freq_row = xmalloc((size_t)half);
	for (int i = 0; i < half; i++) {
		e->inv_freq[i] = (float)pow(cfg->rope_theta, -2.0 * i / cfg->head_dim);
		e->freq_row[i] = engine_freq_row(cfg, i);
	}
}

int
engine_freq_row(const model_config *cfg, int i)
{
	if (!cfg->mrope)
		return 0;
	/* Qwen3-VL interleaves: h takes frequencies 1, 4, 7, ... below
	 * 3 * section[1], w takes 2, 5, 8, ... below 3 * section[2] */
	if (cfg->mrope_interleaved)
		return i % 3 == 1 && i < 3 * cfg->mrope_section[1] ? 1 :
		    i % 3 == 2 && i < 3 * cfg->mrope_section[2] ? 2 : 0;
	/* Qwen2-VL: the first section takes row t, the next h, the last w */
	if (i < cfg->mrope_section[0])
		return 0;
	return i < cfg->mrope_section[0] + cfg->mrope_section[1] ? 1 : 2;
}

void
engine_done(engine *e)
{
	free(e->n1);
	free(e->q);
	free(e->k);
	free(e->v);
	free(e->att);
	free(e->proj);
	free(e->gate);
	free(e->up);
	free(e->scores);
	free(e->inv_freq);
	free(e->freq_row);
	for (int k = 0; k < LIN_COUNT; k++)
		bgemm_b_done(&e->wb[k]);
	memset(e, 0, sizeof *e);
}

void
engine_release_weights(engine *e)
{
	for (int k = 0; k < LIN_COUNT; k++) {
		bgemm_b_done(&e->wb[k]);
		e->wb_gen[k] = 0;
		e->wb_src[k] = NULL;
	}
}

void
engine_set_compute(engine *e, int compute)
{
	MASQ_ASSERT(compute == ENGINE_F32 || compute == ENGINE_BF16);
	e->compute = compute;
}

const char *
engine_compute_name(int compute)
{
	return compute == ENGINE_BF16 ? "bf16" : "f32";
}

int
engine_compute_check(const model_config *cfg, int compute, masq_err *err)
{
	if (compute == ENGINE_BF16 && cfg->qk_norm)
		return masq_err_set(err, MASQ_ERR_USAGE, "--compute bf16 does not cover this model's per-head q/k"
		    " norms (Qwen3) yet; use --compute f32");
	return 0;
}

int
engine_compute_parse(const char *s)
{
	if (strcmp(s, "f32") == 0)
		return ENGINE_F32;
	if (strcmp(s, "bf16") == 0)
		return ENGINE_BF16;
	return -1;
}

/* Grow the scratch buffers to hold n tokens and sequences up to max_len.
 * Invalidates every scratch pointer. */
static void
engine_reserve(engine *e, int n, int max_len)
{
	const model_config *c = &e->cfg;
	size_t q_dim = (size_t)c->n_heads * c->head_dim, kv_dim = (size_t)c->n_kv_heads * c->head_dim;

	if (n > e->cap_tokens) {
		size_t N = (size_t)n;
		free(e->n1); free(e->q); free(e->k); free(e->v);
		free(e->att); free(e->proj); free(e->gate); free(e->up);
		e->n1 = xmalloc(xmul(N * c->hidden, sizeof(float)));
		e->q = xmalloc(xmul(N * q_dim, sizeof(float)));
		e->k = xmalloc(xmul(N * kv_dim, sizeof(float)));
		e->v = xmalloc(xmul(N * kv_dim, sizeof(float)));
		e->att = xmalloc(xmul(N * q_dim, sizeof(float)));
		e->proj = xmalloc(xmul(N * c->hidden, sizeof(float)));
		e->gate = xmalloc(xmul(N * c->intermediate, sizeof(float)));
		e->up = xmalloc(xmul(N * c->intermediate, sizeof(float)));
		e->cap_tokens = n;
	}
	if (max_len > e->cap_seq) {
		free(e->scores);
		e->scores = xmalloc(xmul((size_t)ATT_BLOCK * max_len, sizeof(float)));
		e->cap_seq = max_len;
	}
}

void
engine_linear(const float *x, int n, int in, const float *W, const float *bias, int out, float *y)
{
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, W, in,
	    0.0f, y, out);
	if (bias != NULL)
		for (int t = 0; t < n; t++) {
			float *row = y + (size_t)t * out;
			for (int j = 0; j < out; j++)
				row[j] += bias[j];
		}
}

/* xs (k, in) = x[rows] / s, the smoothed rows both linears start from. */
MASQ_VECTOR_CLONES static void
smooth_rows(const float *x, int in, const int *rows, int k, const float *s, float *xs)
{
	for (int r = 0; r < k; r++) {
		const float *src = x + (size_t)(rows ? rows[r] : r) * in;
		float *dst = xs + (size_t)r * in;
		if (s != NULL)
			for (int j = 0; j < in; j++)
				dst[j] = src[j] / s[j];
		else
			memcpy(dst, src, (size_t)in * sizeof(float));
	}
}

/* y (k, out) += (xs L1) L2, the compensation branch on the unquantized rows. */
static void
lowrank_add(const float *xs, int k, int in, int rank, const float *L1, const float *L2, int out,
    float *y)
{
	float *t = xmalloc(xmul((size_t)k * rank, sizeof(float)));
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, k, rank, in, 1.0f, xs, in, L1, rank,
	    0.0f, t, rank);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, k, out, rank, 1.0f, t, rank, L2, out,
	    1.0f, y, out);
	free(t);
}

void
engine_qlinear_rows(const float *x, int in, const int *rows, int k, const float *s, int abits,
    const float *W, const float *bias, int out, int rank, const float *L1, const float *L2,
    float *xs, float *xq, float *y)
{
	smooth_rows(x, in, rows, k, s, xs);
	if (abits < 16)
		quant_act_rows(xq, xs, k, in, abits);
	engine_linear(abits < 16 ? xq : xs, k, in, W, bias, out, y);
	if (rank > 0)
		lowrank_add(xs, k, in, rank, L1, L2, out, y);
}

/* The integer linear's input, rows lo..hi-1: smoothed, then quantized to
 * levels (both row by row, so any split gives the same). */
struct prep {
	const float *x;
	const int *rows;
	const float *s;
	float *xs, *sa;
	int8_t *qa;
	int in, abits;
};

static void
prep_rows(void *ctx, int lo, int hi, int tid)
{
	struct prep *j = ctx;
	size_t off = (size_t)lo * j->in;
	(void)tid;
	/* with a row list, its entries lo..; without, x's rows lo.. */
	if (j->rows != NULL)
		smooth_rows(j->x, j->in, j->rows + lo, hi - lo, j->s, j->xs + off);
	else
		smooth_rows(j->x + off, j->in, NULL, hi - lo, j->s, j->xs + off);
	quant_act_rows_int(j->qa + off, j->sa + lo, j->xs + off, hi - lo, j->in, j->abits);
}

void
engine_qlinear_rows_int(const float *x, int in, const int *rows, int k, const float *s,
    int abits, const igemm_b *Wi, const float *wscale, const float *bias, int out, int rank,
    const float *L1, const float *L2, float *xs, float *y, int threads)
{
	MASQ_ASSERT(abits >= 2 && abits <= 8 && Wi->n == out && Wi->k == in);
	if (k == 0)
		return;
	int8_t *qa = xmalloc(xmul((size_t)k, (size_t)in));
	float *sa = xmalloc(xmul((size_t)k, sizeof(float)));
	struct prep pr = {x, rows, s, xs, sa, qa, in, abits};
	masq_parallel(k, threads, prep_rows, &pr);
	igemm_scaled(y, qa, k, in, Wi, sa, wscale, bias, threads);
	free(sa);
	free(qa);
	if (rank > 0)
		lowrank_add(xs, k, in, rank, L1, L2, out, y);
}

float *
engine_head_logits(const float *h, const int *idx, int k, int D, const float *norm, float eps,
    const float *W, int V)
{
	float *x = xmalloc(xmul((size_t)k * D, sizeof(float)));
	float *logits = xmalloc(xmul((size_t)k * V, sizeof(float)));
	for (int r = 0; r < k; r++) {
		const float *src = h + (size_t)idx[r] * D;
		double ss = 0.0;
		for (int j = 0; j < D; j++)
			ss += (double)src[j] * src[j];
		float inv = (float)(1.0 / sqrt(ss / D + eps));
		for (int j = 0; j < D; j++)
			x[(size_t)r * D + j] = src[j] * inv * norm[j];
	}
	engine_linear(x, k, D, W, NULL, V, logits);
	free(x);
	return logits;
}

/* out (n, d) = rmsnorm(x) * weight */
static void
rmsnorm(float *out, const float *x, const float *weight, int n, int d, float eps)
{
	for (int t = 0; t < n; t++) {
		const float *xr = x + (size_t)t * d;
		float *o = out + (size_t)t * d;
		double ss = 0.0;
		for (int j = 0; j < d; j++)
			ss += (double)xr[j] * xr[j];
		float r = (float)(1.0 / sqrt(ss / d + eps));
		for (int j = 0; j < d; j++)
			o[j] = xr[j] * r * weight[j];
	}
}

/* Rotate-half RoPE in place on x (n, heads * hd) with per-token angles. */
static void
rope_apply(const engine *e, float *x, int n, int heads, const int64_t *pos, int n_total)
{
	int hd = e->cfg.head_dim, half = hd / 2;
	float *cs = xmalloc(xmul((size_t)hd, sizeof(float)));

	for (int t = 0; t < n; t++) {
		for (int i = 0; i < half; i++) {
			double p = (double)pos[(size_t)e->freq_row[i] * n_total + t];
			double a = p * (double)e->inv_freq[i];
			cs[i] = (float)cos(a);
			cs[half + i] = (float)sin(a);
		}
		for (int h = 0; h < heads; h++) {
			float *v = x + ((size_t)t * heads + h) * hd;
			for (int i = 0; i < half; i++) {
				float a = v[i], b = v[i + half];
				v[i] = a * cs[i] - b * cs[half + i];
				v[i + half] = b * cs[i] + a * cs[half + i];
			}
		}
	}
	free(cs);
}

float
engine_softmax_prefix(float *row, int last, int K)
{
	float mx = row[0];
	for (int j = 1; j <= last; j++)
		if (row[j] > mx)
			mx = row[j];
	float sum = 0.0f;
	for (int j = 0; j <= last; j++) {
		row[j] = expf(row[j] - mx);
		sum += row[j];
	}
	float inv = 1.0f / sum;
	for (int j = 0; j <= last; j++)
		row[j] *= inv;
	for (int j = last + 1; j < K; j++)
		row[j] = 0.0f;
	return mx + logf(sum);
}

/* Causal grouped-query attention of one sequence of L tokens. */
static void
attention_seq(engine *e, const float *q, const float *k, const float *v, float *out, int L)
{
	const model_config *c = &e->cfg;
	int hd = c->head_dim, H = c->n_heads, G = c->n_heads / c->n_kv_heads;
	int q_dim = H * hd, kv_dim = c->n_kv_heads * hd;
	float scale = 1.0f / sqrtf((float)hd);

	for (int h = 0; h < H; h++) {
		const float *kh = k + (size_t)(h / G) * hd, *vh = v + (size_t)(h / G) * hd;
		for (int i0 = 0; i0 < L; i0 += ATT_BLOCK) {
			int B = L - i0 < ATT_BLOCK ? L - i0 : ATT_BLOCK;
			int K = i0 + B;	/* keys 0 .. K-1 are visible to this block */
			float *S = e->scores;
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, K, hd, scale,
			    q + (size_t)i0 * q_dim + (size_t)h * hd, q_dim, kh, kv_dim, 0.0f, S, K);
			for (int r = 0; r < B; r++)
				engine_softmax_prefix(S + (size_t)r * K, i0 + r, K);	/* causal: keys 0..i0+r */
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, hd, K, 1.0f, S, K,
			    vh, kv_dim, 0.0f, out + (size_t)i0 * q_dim + (size_t)h * hd, q_dim);
		}
	}
}

/* Output and input size of linear lin of w. */
static void
lw_shape(const layer_weights *w, int lin, int *out, int *in)
{
	static const int io[LIN_COUNT][2] = {{1, 0}, {2, 0}, {2, 0}, {0, 1}, {3, 0}, {3, 0}, {0, 3}};
	int dims[4] = {w->hidden, w->q_dim, w->kv_dim, w->inter};
	*out = dims[io[lin][0]];
	*in = dims[io[lin][1]];
}

/* A linear of the forward: the ops hook's, or one GEMM a sequence.  A
 * sequence's rows then come out the same bits however the batch around it
 * is cut (OpenBLAS's sgemm rounds a row differently with the number of
 * rows it is given): a run sharded by sequence across processes gives one
 * process's FP chain exactly. */
static void
run_linear(const engine_ops *ops, const layer_weights *w, int lin, const engine_batch *b, const float *x,
    float *y)
{
	int out, in, n = b->n_tokens;

	if (ops != NULL && ops->linear != NULL && ops->linear(ops->ctx, w, lin, x, n, y) == 0)
		return;
	lw_shape(w, lin, &out, &in);
	for (int s = 0, t0 = 0; s < b->n_seqs; t0 += b->seq_lens[s], s++)
		engine_linear(x + (size_t)t0 * in, b->seq_lens[s], in, w->w[lin], w->b[lin], out,
		    y + (size_t)t0 * out);
}

static void
observe(const engine_ops *ops, int layer, int site, const float *x, int n, int d)
{
	if (ops != NULL && ops->observe != NULL)
		ops->observe(ops->ctx, layer, site, x, n, d);
}

static void layer_forward_bf16(engine *e, const layer_weights *w, const engine_batch *b, float *h,
    const engine_ops *ops);

void
engine_layer_forward(engine *e, const layer_weights *w, const engine_batch *b, float *h,
    const engine_ops *ops)
{
	if (e->compute == ENGINE_BF16) {
		layer_forward_bf16(e, w, b, h, ops);
		return;
	}
	const model_config *c = &e->cfg;
	int n = b->n_tokens, D = c->hidden, NI = c->intermediate;
	int q_dim = w->q_dim, kv_dim = w->kv_dim, max_len = 0;

	MASQ_ASSERT(w->hidden == D && q_dim == c->n_heads * c->head_dim);
	for (int s = 0; s < b->n_seqs; s++)
		if (b->seq_lens[s] > max_len)
			max_len = b->seq_lens[s];
	engine_reserve(e, n, max_len);

	/* attention block */
	rmsnorm(e->n1, h, w->attn_norm, n, D, c->rms_eps);
	observe(ops, w->layer, SITE_QKV, e->n1, n, D);
	run_linear(ops, w, LIN_Q, b, e->n1, e->q);
	run_linear(ops, w, LIN_K, b, e->n1, e->k);
	run_linear(ops, w, LIN_V, b, e->n1, e->v);
	if (c->qk_norm) {
		/* Qwen3: each head of q and k RMS-normalised before RoPE */
		rmsnorm(e->q, e->q, w->q_norm, n * c->n_heads, c->head_dim, c->rms_eps);
		rmsnorm(e->k, e->k, w->k_norm, n * c->n_kv_heads, c->head_dim, c->rms_eps);
	}
	rope_apply(e, e->q, n, c->n_heads, b->pos, n);
	rope_apply(e, e->k, n, c->n_kv_heads, b->pos, n);
	for (int s = 0, t0 = 0; s < b->n_seqs; t0 += b->seq_lens[s], s++)
		attention_seq(e, e->q + (size_t)t0 * q_dim, e->k + (size_t)t0 * kv_dim,
		    e->v + (size_t)t0 * kv_dim, e->att + (size_t)t0 * q_dim, b->seq_lens[s]);
	observe(ops, w->layer, SITE_O, e->att, n, q_dim);
	run_linear(ops, w, LIN_O, b, e->att, e->proj);
	for (size_t i = 0; i < (size_t)n * D; i++)
		h[i] += e->proj[i];

	/* MLP block */
	rmsnorm(e->n1, h, w->mlp_norm, n, D, c->rms_eps);
	observe(ops, w->layer, SITE_GATEUP, e->n1, n, D);
	run_linear(ops, w, LIN_GATE, b, e->n1, e->gate);
	run_linear(ops, w, LIN_UP, b, e->n1, e->up);
	for (size_t i = 0; i < (size_t)n * NI; i++) {
		float g = e->gate[i];
		e->gate[i] = g / (1.0f + expf(-g)) * e->up[i];
	}
	observe(ops, w->layer, SITE_DOWN, e->gate, n, NI);
	run_linear(ops, w, LIN_DOWN, b, e->gate, e->proj);
	for (size_t i = 0; i < (size_t)n * D; i++)
		h[i] += e->proj[i];
}

/* ---- the bf16 forward ------------------------------------------------------------- */

/* The KV block of PyTorch's CPU flash attention (FlashAttentionKernel.cpp:
 * kv_split_size 512): the online softmax rescales at its edges, and the
 * probabilities are rounded to bf16 against each block's running maximum. */
#define FLASH_KV_BLOCK 512

/* A bf16-rounded copy of the parameter vector p (n), or NULL for NULL. */
static float *
b16_copy(const float *p, size_t n)
{
	if (p == NULL)
		return NULL;
	float *c = xmalloc(xmul(n, sizeof(float)) + 1);
	for (size_t i = 0; i < n; i++)
		c[i] = bf16_round(p[i]);
	return c;
}

/* Qwen2RMSNorm on bf16 rows: the mean of squares and the scaling in
 * float32, rounded, times the bf16 weight, rounded. */
static void
rmsnorm_b16(float *out, const float *x, const float *wb, int n, int d, float eps)
{
	for (int t = 0; t < n; t++) {
		const float *xr = x + (size_t)t * d;
		float *o = out + (size_t)t * d;
		double ss = 0.0;
		for (int j = 0; j < d; j++)
			ss += (double)xr[j] * xr[j];
		float var = (float)ss / (float)d;
		float r = 1.0f / sqrtf(var + eps);
		for (int j = 0; j < d; j++)
			o[j] = bf16_round(wb[j] * bf16_round(xr[j] * r));
	}
}

/* RoPE as a bf16 model runs it: inv_freq = 1 / base^(2i / hd) in float32,
 * the angle pos * inv_freq in float32, cos and sin rounded to bf16, then
 * (x * cos) + (rotate_half(x) * sin) with each op rounded. */
static void
rope_b16(const engine *e, float *x, int n, int heads, const int64_t *pos, int n_total)
{
	int hd = e->cfg.head_dim, half = hd / 2;
	float *cs = xmalloc(xmul((size_t)hd, sizeof(float)));
	float *inv = xmalloc(xmul((size_t)half, sizeof(float)));
	float base = (float)e->cfg.rope_theta;
	for (int i = 0; i < half; i++)
		inv[i] = 1.0f / (float)pow((double)base, (double)((float)(2 * i) / (float)hd));
	for (int t = 0; t < n; t++) {
		for (int i = 0; i < half; i++) {
			float a = (float)pos[(size_t)e->freq_row[i] * n_total + t] * inv[i];
			cs[i] = bf16_round((float)cos((double)a));
			cs[half + i] = bf16_round((float)sin((double)a));
		}
		for (int h = 0; h < heads; h++) {
			float *v = x + ((size_t)t * heads + h) * hd;
			for (int i = 0; i < half; i++) {
				float a = v[i], bb = v[i + half];
				v[i] = bf16_round(bf16_round(a * cs[i]) + bf16_round(-bb * cs[half + i]));
				v[i + half] = bf16_round(bf16_round(bb * cs[i]) + bf16_round(a * cs[half + i]));
			}
		}
	}
	free(inv);
	free(cs);
}

/* Causal attention of one sequence as PyTorch's CPU flash kernel runs it
 * on bf16 q, k, v: float32 scores times the scale, an online softmax over
 * blocks of FLASH_KV_BLOCK keys (the running maximum and sum in float32),
 * each block's probabilities rounded to bf16 for P v while the sum takes
 * them unrounded, the output divided by the sum and rounded once. */
static void
attention_seq_b16(engine *e, const float *q, const float *k, const float *v, float *out, int L)
{
	const model_config *c = &e->cfg;
	int hd = c->head_dim, H = c->n_heads, G = c->n_heads / c->n_kv_heads;
	int q_dim = H * hd, kv_dim = c->n_kv_heads * hd;
	float scale = (float)(1.0 / sqrt((double)hd));
	float mx[ATT_BLOCK], tot[ATT_BLOCK];

	for (int h = 0; h < H; h++) {
		const float *kh = k + (size_t)(h / G) * hd, *vh = v + (size_t)(h / G) * hd;
		for (int i0 = 0; i0 < L; i0 += ATT_BLOCK) {
			int B = L - i0 < ATT_BLOCK ? L - i0 : ATT_BLOCK;
			int K = i0 + B;
			float *S = e->scores, *O = out + (size_t)i0 * q_dim + (size_t)h * hd;
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, K, hd, 1.0f,
			    q + (size_t)i0 * q_dim + (size_t)h * hd, q_dim, kh, kv_dim, 0.0f, S, K);
			for (int b0 = 0; b0 < K; b0 += FLASH_KV_BLOCK) {
				int b1 = K - b0 < FLASH_KV_BLOCK ? K : b0 + FLASH_KV_BLOCK;
				/* rows before b0 see none of this block's keys */
				int r0 = b0 > i0 ? b0 - i0 : 0;
				for (int r = r0; r < B; r++) {
					float *row = S + (size_t)r * K;
					int last = i0 + r < b1 - 1 ? i0 + r : b1 - 1;	/* causal */
					float m = b0 == 0 ? -INFINITY : mx[r];
					for (int j = b0; j <= last; j++) {
						row[j] *= scale;
						if (row[j] > m)
							m = row[j];
					}
					double bsum = 0.0;
					for (int j = b0; j < b1; j++) {
						float ej = j <= last ? expf(row[j] - m) : 0.0f;
						bsum += ej;
						row[j] = bf16_round(ej);
					}
					if (b0 == 0) {
						tot[r] = (float)bsum;
					} else {
						float et = expf(mx[r] - m);
						tot[r] = (float)bsum + et * tot[r];
						float *o = O + (size_t)r * q_dim;
						for (int d = 0; d < hd; d++)
							o[d] *= et;
					}
					mx[r] = m;
				}
				if (r0 >= B)
					continue;
				/* P v of this block: the first block writes, the others add */
				int nr = B - r0;
				if (b0 == 0) {
					cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, hd, b1 - b0, 1.0f,
					    S + (size_t)r0 * K + b0, K, vh + (size_t)b0 * kv_dim, kv_dim, 0.0f,
					    O + (size_t)r0 * q_dim, q_dim);
				} else {
					cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, hd, b1 - b0, 1.0f,
					    S + (size_t)r0 * K + b0, K, vh + (size_t)b0 * kv_dim, kv_dim, 1.0f,
					    O + (size_t)r0 * q_dim, q_dim);
				}
			}
			for (int r = 0; r < B; r++) {
				float *o = O + (size_t)r * q_dim, inv = 1.0f / tot[r];
				for (int d = 0; d < hd; d++)
					o[d] = bf16_round(o[d] * inv);
			}
		}
	}
}

/* Rows lo..hi-1 of g (rows of d): g = bf16(bf16(silu(g)) * u), each
 * element on its own (any split gives the same). */
struct silu_mul {
	float *g;
	const float *u;
	size_t d;
};

static void
silu_mul_rows(void *ctx, int lo, int hi, int tid)
{
	struct silu_mul *j = ctx;
	(void)tid;
	for (size_t i = (size_t)lo * j->d; i < (size_t)hi * j->d; i++) {
		float x = j->g[i];
		j->g[i] = bf16_round(bf16_round(x / (1.0f + expf(-x))) * j->u[i]);
	}
}

void
engine_attention_b16(engine *e, const float *q, const float *k, const float *v, float *out, int L)
{
	engine_reserve(e, L, L);
	attention_seq_b16(e, q, k, v, out, L);
}

/* A linear of the bf16 forward: an ops hook's result rounded to bf16, or
 * bgemm with the weight packed once per load. */
static void
run_linear_b16(engine *e, const engine_ops *ops, const layer_weights *w, int lin, const engine_batch *b,
    const float *x, const float *bias_b16, float *y)
{
	int out, in, n = b->n_tokens;
	lw_shape(w, lin, &out, &in);
	if (ops != NULL && ops->linear != NULL && ops->linear(ops->ctx, w, lin, x, n, y) == 0) {
		bf16_round_inplace(y, (size_t)n * out);
		return;
	}
	if (e->wb_gen[lin] != w->gen || e->wb_src[lin] != w->w[lin] || e->wb[lin].n != out || e->wb[lin].k != in) {
		bgemm_b_done(&e->wb[lin]);
		bgemm_b_pack(&e->wb[lin], w->w[lin], out, in);
		e->wb_gen[lin] = w->gen;
		e->wb_src[lin] = w->w[lin];
	}
	/* one GEMM a sequence, as run_linear */
	for (int s = 0, t0 = 0; s < b->n_seqs; t0 += b->seq_lens[s], s++)
		bgemm(y + (size_t)t0 * out, x + (size_t)t0 * in, b->seq_lens[s], in, &e->wb[lin], bias_b16, 1,
		    masq_blas_get_threads());
}

static void
layer_forward_bf16(engine *e, const layer_weights *w, const engine_batch *b, float *h,
    const engine_ops *ops)
{
	const model_config *c = &e->cfg;
	int n = b->n_tokens, D = c->hidden, NI = c->intermediate;
	int q_dim = w->q_dim, kv_dim = w->kv_dim, max_len = 0;

	MASQ_ASSERT(w->hidden == D && q_dim == c->n_heads * c->head_dim);
	MASQ_ASSERT(!c->qk_norm);	/* refused by the callers: see engine_compute_check */
	for (int s = 0; s < b->n_seqs; s++)
		if (b->seq_lens[s] > max_len)
			max_len = b->seq_lens[s];
	engine_reserve(e, n, max_len);
	float *an = b16_copy(w->attn_norm, (size_t)D), *mn = b16_copy(w->mlp_norm, (size_t)D);
	float *bq = b16_copy(w->b[LIN_Q], (size_t)q_dim), *bk = b16_copy(w->b[LIN_K], (size_t)kv_dim);
	float *bv = b16_copy(w->b[LIN_V], (size_t)kv_dim);
	float *bo = b16_copy(w->b[LIN_O], (size_t)D), *bg = b16_copy(w->b[LIN_GATE], (size_t)NI);
	float *bu = b16_copy(w->b[LIN_UP], (size_t)NI), *bd = b16_copy(w->b[LIN_DOWN], (size_t)D);

	/* the residual stream is bf16 */
	bf16_round_inplace(h, (size_t)n * D);
	rmsnorm_b16(e->n1, h, an, n, D, c->rms_eps);
	observe(ops, w->layer, SITE_QKV, e->n1, n, D);
	run_linear_b16(e, ops, w, LIN_Q, b, e->n1, bq, e->q);
	run_linear_b16(e, ops, w, LIN_K, b, e->n1, bk, e->k);
	run_linear_b16(e, ops, w, LIN_V, b, e->n1, bv, e->v);
	rope_b16(e, e->q, n, c->n_heads, b->pos, n);
	rope_b16(e, e->k, n, c->n_kv_heads, b->pos, n);
	for (int s = 0, t0 = 0; s < b->n_seqs; t0 += b->seq_lens[s], s++)
		attention_seq_b16(e, e->q + (size_t)t0 * q_dim, e->k + (size_t)t0 * kv_dim,
		    e->v + (size_t)t0 * kv_dim, e->att + (size_t)t0 * q_dim, b->seq_lens[s]);
	observe(ops, w->layer, SITE_O, e->att, n, q_dim);
	run_linear_b16(e, ops, w, LIN_O, b, e->att, bo, e->proj);
	for (size_t i = 0; i < (size_t)n * D; i++)
		h[i] = bf16_round(h[i] + e->proj[i]);

	rmsnorm_b16(e->n1, h, mn, n, D, c->rms_eps);
	observe(ops, w->layer, SITE_GATEUP, e->n1, n, D);
	run_linear_b16(e, ops, w, LIN_GATE, b, e->n1, bg, e->gate);
	run_linear_b16(e, ops, w, LIN_UP, b, e->n1, bu, e->up);
	struct silu_mul sm = {e->gate, e->up, (size_t)NI};
	masq_parallel(n, masq_blas_get_threads(), silu_mul_rows, &sm);
	observe(ops, w->layer, SITE_DOWN, e->gate, n, NI);
	run_linear_b16(e, ops, w, LIN_DOWN, b, e->gate, bd, e->proj);
	for (size_t i = 0; i < (size_t)n * D; i++)
		h[i] = bf16_round(h[i] + e->proj[i]);
	free(an), free(mn), free(bq), free(bk), free(bv), free(bo), free(bg), free(bu), free(bd);
}

/* ---- the plain reference ------------------------------------------------- */

/* y (n, out) = x W^T + b with double accumulation, no BLAS. */
static void
ref_linear(const float *x, int n, int in, const float *W, const float *bias, int out, double *y)
{
	for (int t = 0; t < n; t++)
		for (int o = 0; o < out; o++) {
			double acc = bias ? bias[o] : 0.0;
			for (int i = 0; i < in; i++)
				acc += (double)x[(size_t)t * in + i] * W[(size_t)o * in + i];
			y[(size_t)t * out + o] = acc;
		}
}

static void
ref_rmsnorm(const float *x, const float *wt, int n, int d, float eps, float *out)
{
	for (int t = 0; t < n; t++) {
		double ss = 0.0;
		for (int j = 0; j < d; j++)
			ss += (double)x[(size_t)t * d + j] * x[(size_t)t * d + j];
		double r = 1.0 / sqrt(ss / d + eps);
		for (int j = 0; j < d; j++)
			out[(size_t)t * d + j] = (float)(x[(size_t)t * d + j] * r * wt[j]);
	}
}

/* Each of the rows (rows, hd) of x divided by its RMS and times wt, in double. */
static void
ref_head_norm(double *x, int rows, int hd, const float *wt, float eps)
{
	for (int r = 0; r < rows; r++) {
		double *v = x + (size_t)r * hd, ss = 0.0;
		for (int d = 0; d < hd; d++)
			ss += v[d] * v[d];
		double inv = 1.0 / sqrt(ss / hd + (double)eps);
		for (int d = 0; d < hd; d++)
			v[d] = v[d] * inv * wt[d];
	}
}

/*
 * RoPE the way Hugging Face writes it: cos and sin of length hd are
 * cat(freqs, freqs); with mrope the hd entries are cut into chunks
 * mrope_section * 2 and chunk j takes its positions from row j % 3.
 */
static void
ref_rope(const model_config *c, double *x, int n, int heads, const int64_t *pos, int n_total)
{
	int hd = c->head_dim, half = hd / 2;
	double *rot = xmalloc(xmul((size_t)hd, sizeof(double)));

	for (int t = 0; t < n; t++)
		for (int h = 0; h < heads; h++) {
			double *v = x + ((size_t)t * heads + h) * hd;
			for (int d = 0; d < hd; d++)
				rot[d] = d < half ? -v[d + half] : v[d - half];
			for (int d = 0; d < hd; d++) {
				int row = 0;
				if (c->mrope && c->mrope_interleaved) {
					/* written out from apply_interleaved_mrope: frequency
					 * f = d mod half takes h at offset 1 of every 3 up to
					 * 3 * section[1], w at offset 2 up to 3 * section[2] */
					int f = d % half;
					if (f % 3 == 1 && f < 3 * c->mrope_section[1])
						row = 1;
					else if (f % 3 == 2 && f < 3 * c->mrope_section[2])
						row = 2;
				} else if (c->mrope) {
					int chunk = 0, edge = 0;
					for (; chunk < 6; chunk++) {
						edge += c->mrope_section[chunk % 3];
						if (d < edge)
							break;
					}
					row = chunk % 3;
				}
				double f = pow(c->rope_theta, -2.0 * (d % half) / hd);
				double a = (double)pos[(size_t)row * n_total + t] * f;
				v[d] = v[d] * cos(a) + rot[d] * sin(a);
			}
		}
	free(rot);
}

void
engine_layer_forward_ref(const model_config *c, const layer_weights *w, const engine_batch *b,
    float *h)
{
	int n = b->n_tokens, D = c->hidden, hd = c->head_dim, H = c->n_heads;
	int KV = c->n_kv_heads, NI = c->intermediate, qd = H * hd, kd = KV * hd;
	float *xn = xmalloc(xmul((size_t)n * (NI > D ? NI : D), sizeof(float)));
	float *att = xmalloc(xmul((size_t)n * qd, sizeof(float)));
	double *q = xmalloc(xmul((size_t)n * qd, sizeof(double)));
	double *k = xmalloc(xmul((size_t)n * kd, sizeof(double)));
	double *v = xmalloc(xmul((size_t)n * kd, sizeof(double)));
	double *y = xmalloc(xmul((size_t)n * (NI > D ? NI : D), sizeof(double)));
	double *y2 = xmalloc(xmul((size_t)n * NI, sizeof(double)));
	double *p = xmalloc(xmul((size_t)n, sizeof(double)));

	ref_rmsnorm(h, w->attn_norm, n, D, c->rms_eps, xn);
	ref_linear(xn, n, D, w->w[LIN_Q], w->b[LIN_Q], qd, q);
	ref_linear(xn, n, D, w->w[LIN_K], w->b[LIN_K], kd, k);
	ref_linear(xn, n, D, w->w[LIN_V], w->b[LIN_V], kd, v);
	if (c->qk_norm) {
		ref_head_norm(q, n * H, hd, w->q_norm, c->rms_eps);
		ref_head_norm(k, n * KV, hd, w->k_norm, c->rms_eps);
	}
	ref_rope(c, q, n, H, b->pos, n);
	ref_rope(c, k, n, KV, b->pos, n);
	for (int s = 0, t0 = 0; s < b->n_seqs; t0 += b->seq_lens[s], s++) {
		int L = b->seq_lens[s];
		for (int hh = 0; hh < H; hh++) {
			int g = hh / (H / KV);
			for (int i = 0; i < L; i++) {
				const double *qi = q + ((size_t)(t0 + i) * H + hh) * hd;
				double mx = -INFINITY, sum = 0.0;
				for (int j = 0; j <= i; j++) {
					const double *kj = k + ((size_t)(t0 + j) * KV + g) * hd;
					double dot = 0.0;
					for (int d = 0; d < hd; d++)
						dot += qi[d] * kj[d];
					p[j] = dot / sqrt((double)hd);
					if (p[j] > mx)
						mx = p[j];
				}
				for (int j = 0; j <= i; j++)
					sum += (p[j] = exp(p[j] - mx));
				for (int d = 0; d < hd; d++) {
					double acc = 0.0;
					for (int j = 0; j <= i; j++)
						acc += p[j] / sum * v[((size_t)(t0 + j) * KV + g) * hd + d];
					att[((size_t)(t0 + i) * H + hh) * hd + d] = (float)acc;
				}
			}
		}
	}
	ref_linear(att, n, qd, w->w[LIN_O], w->b[LIN_O], D, y);
	for (size_t i = 0; i < (size_t)n * D; i++)
		h[i] = (float)(h[i] + y[i]);
	ref_rmsnorm(h, w->mlp_norm, n, D, c->rms_eps, xn);
	ref_linear(xn, n, D, w->w[LIN_GATE], w->b[LIN_GATE], NI, y);
	ref_linear(xn, n, D, w->w[LIN_UP], w->b[LIN_UP], NI, y2);
	for (size_t i = 0; i < (size_t)n * NI; i++)
		xn[i] = (float)(y[i] / (1.0 + exp(-y[i])) * y2[i]);
	ref_linear(xn, n, NI, w->w[LIN_DOWN], w->b[LIN_DOWN], D, y);
	for (size_t i = 0; i < (size_t)n * D; i++)
		h[i] = (float)(h[i] + y[i]);
	free(xn); free(att); free(q); free(k); free(v); free(y); free(y2); free(p);
}
