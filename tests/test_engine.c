/*
 * test_engine.c: the BLAS decoder layer against the plain reference
 * (engine_layer_forward_ref), on random weights with multimodal RoPE
 * positions and several sequences of different lengths; the hooks see
 * every linear input once, and a linear override is honoured.  The bf16
 * forward's attention (engine_attention_b16) against a plain twin of
 * PyTorch's CPU flash kernel written here, across its 512-key blocks.
 */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/engine.h"
#include "core/rng.h"
#include "tests/tap.h"

/* float32 + BLAS against double-accumulated loops: the error budget is
 * relative to the largest |output|; measured 2e-7 to 4e-7 here. */
#define ENGINE_REL_TOL 2e-5

static float *
randn(rng *r, size_t n, double sd, double mean)
{
	float *x = xmalloc(n * sizeof(float));
	for (size_t i = 0; i < n; i++)
		x[i] = (float)(mean + sd * rng_normal(r));
	return x;
}

static void
make_layer(rng *r, const model_config *c, layer_weights *w, int bias)
{
	memset(w, 0, sizeof *w);
	w->hidden = c->hidden;
	w->q_dim = c->n_heads * c->head_dim;
	w->kv_dim = c->n_kv_heads * c->head_dim;
	w->inter = c->intermediate;
	w->attn_norm = randn(r, (size_t)c->hidden, 0.1, 1.0);
	w->mlp_norm = randn(r, (size_t)c->hidden, 0.1, 1.0);
	if (c->qk_norm) {
		w->q_norm = randn(r, (size_t)c->head_dim, 0.3, 1.0);
		w->k_norm = randn(r, (size_t)c->head_dim, 0.3, 1.0);
	}
	for (int k = 0; k < LIN_COUNT; k++) {
		int out, in;
		layer_lin_shape(c, k, &out, &in);
		w->w[k] = randn(r, (size_t)out * in, 1.0 / sqrt(in), 0.0);
		if (bias && k <= LIN_V)
			w->b[k] = randn(r, (size_t)out, 0.5, 0.0);
	}
}

/* Qwen2-VL style positions: text runs, an image block (t fixed, h/w grid),
 * text continuing from the block's maximum + 1. */
static void
make_positions(const int32_t *lens, int nseq, int64_t *pos, int n, int grid)
{
	int t0 = 0;
	for (int s = 0; s < nseq; s++) {
		int L = lens[s], p = 0, i = 0;
		for (; i < L && i < 5; i++, p++)
			for (int r = 0; r < 3; r++)
				pos[(size_t)r * n + t0 + i] = p;
		if (s % 2 == 0 && L - i >= grid * grid) {
			for (int a = 0; a < grid; a++)
				for (int b = 0; b < grid; b++, i++) {
					pos[(size_t)0 * n + t0 + i] = p;
					pos[(size_t)1 * n + t0 + i] = p + a;
					pos[(size_t)2 * n + t0 + i] = p + b;
				}
			p += grid;
		}
		for (; i < L; i++, p++)
			for (int r = 0; r < 3; r++)
				pos[(size_t)r * n + t0 + i] = p;
		t0 += L;
	}
}

struct hook_count {
	int calls[SITE_COUNT];
	int dims[SITE_COUNT];
	int overrides;
};

static void
count_observe(void *ctx, int layer, int site, const float *x, int n, int d)
{
	struct hook_count *h = ctx;
	(void)layer; (void)x; (void)n;
	h->calls[site]++;
	h->dims[site] = d;
}

/* Replace only o_proj, by the plain product scaled by zero: the layer then
 * skips its attention residual. */
static int
zero_o(void *ctx, const layer_weights *w, int lin, const float *x, int n, float *y)
{
	struct hook_count *h = ctx;
	(void)x;
	if (lin != LIN_O)
		return 1;
	h->overrides++;
	memset(y, 0, (size_t)n * w->hidden * sizeof(float));
	return 0;
}

static double
rel_err(const float *a, const float *b, size_t n)
{
	double mx = 0, ref = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - b[i]);
		if (d > mx || isnan(d))
			mx = d;
		if (fabs(b[i]) > ref)
			ref = fabs(b[i]);
	}
	return mx / (ref > 0 ? ref : 1);
}

static void
run_case(const char *name, model_config *c, const int32_t *lens, int nseq, int bias, uint64_t seed)
{
	rng r;
	layer_weights w;
	engine e;
	int n = 0;

	for (int s = 0; s < nseq; s++)
		n += lens[s];
	rng_init(&r, seed);
	make_layer(&r, c, &w, bias);
	int64_t *pos = xmalloc((size_t)3 * n * sizeof(int64_t));
	make_positions(lens, nseq, pos, n, 4);
	float *h0 = randn(&r, (size_t)n * c->hidden, 1.0, 0.0);
	float *h1 = xmalloc((size_t)n * c->hidden * sizeof(float));
	float *h2 = xmalloc((size_t)n * c->hidden * sizeof(float));
	memcpy(h1, h0, (size_t)n * c->hidden * sizeof(float));
	memcpy(h2, h0, (size_t)n * c->hidden * sizeof(float));
	engine_batch b = {.n_tokens = n, .n_seqs = nseq, .seq_lens = lens, .pos = pos};
	struct hook_count hc = {{0}, {0}, 0};
	engine_ops ops = {.ctx = &hc, .observe = count_observe};

	engine_init(&e, c);
	engine_layer_forward(&e, &w, &b, h1, &ops);
	engine_layer_forward_ref(c, &w, &b, h2);
	double err = rel_err(h1, h2, (size_t)n * c->hidden);
	tap_ok(err <= ENGINE_REL_TOL, "%s: engine matches the reference (rel max err %.2e <= %.0e)",
	    name, err, ENGINE_REL_TOL);
	double moved = rel_err(h0, h2, (size_t)n * c->hidden);
	tap_ok(moved > 1e-2, "%s: the layer changes its input (rel change %.2e)", name, moved);
	tap_ok(hc.calls[SITE_QKV] == 1 && hc.calls[SITE_O] == 1 && hc.calls[SITE_GATEUP] == 1 &&
	    hc.calls[SITE_DOWN] == 1, "%s: each linear-input hook is called once", name);
	tap_ok(hc.dims[SITE_QKV] == c->hidden && hc.dims[SITE_O] == c->n_heads * c->head_dim &&
	    hc.dims[SITE_GATEUP] == c->hidden && hc.dims[SITE_DOWN] == c->intermediate,
	    "%s: hook widths are hidden, q_dim, hidden, intermediate", name);

	/* Reusing the engine with a smaller batch must give the same answer as a
	 * fresh one (scratch buffers are reused, not re-initialised). */
	engine_batch b1 = {.n_tokens = lens[0], .n_seqs = 1, .seq_lens = lens, .pos = NULL};
	int64_t *pos1 = xmalloc((size_t)3 * lens[0] * sizeof(int64_t));
	for (int rr = 0; rr < 3; rr++)
		for (int i = 0; i < lens[0]; i++)
			pos1[(size_t)rr * lens[0] + i] = pos[(size_t)rr * n + i];
	b1.pos = pos1;
	memcpy(h1, h0, (size_t)lens[0] * c->hidden * sizeof(float));
	memcpy(h2, h0, (size_t)lens[0] * c->hidden * sizeof(float));
	engine_layer_forward(&e, &w, &b1, h1, NULL);
	engine_layer_forward_ref(c, &w, &b1, h2);
	err = rel_err(h1, h2, (size_t)lens[0] * c->hidden);
	tap_ok(err <= ENGINE_REL_TOL, "%s: first sequence alone matches too (%.2e)", name, err);
	/* Causality and independence: the first sequence's output in the batch
	 * equals its output alone. */
	memcpy(h2, h0, (size_t)n * c->hidden * sizeof(float));
	engine_layer_forward(&e, &w, &b, h2, NULL);
	err = rel_err(h2, h1, (size_t)lens[0] * c->hidden);
	tap_ok(err <= ENGINE_REL_TOL, "%s: sequences do not attend to each other (%.2e)", name, err);

	/* Override: a zero o_proj removes the attention residual. */
	engine_ops zo = {.ctx = &hc, .linear = zero_o};
	memcpy(h1, h0, (size_t)n * c->hidden * sizeof(float));
	engine_layer_forward(&e, &w, &b, h1, &zo);
	layer_weights wz = w;
	float *zero = xcalloc((size_t)c->hidden * w.q_dim, sizeof(float));
	wz.w[LIN_O] = zero;
	memcpy(h2, h0, (size_t)n * c->hidden * sizeof(float));
	engine_layer_forward_ref(c, &wz, &b, h2);
	err = rel_err(h1, h2, (size_t)n * c->hidden);
	tap_ok(hc.overrides == 1 && err <= ENGINE_REL_TOL,
	    "%s: a linear override replaces exactly that linear (%.2e)", name, err);
	free(zero);
	engine_done(&e);
	layer_weights_done(&w);
	free(pos);
	free(pos1);
	free(h0);
	free(h1);
	free(h2);
}

/* ---- the bf16 attention ------------------------------------------------------------ */

/* The flash twin's error budget: the engine sums q k and P v in float32
 * through sgemm, the twin in double; where a sum lands across a bf16
 * rounding edge one probability or one output moves by a bf16 unit.
 * Relative RMS over the output, measured 0 to 3e-5 here (the most where
 * 511 or 512 keys are summed).  The forms the kernel does not have (no
 * 512-key blocks, a block-local maximum) are 5.8e-4 and 0.41 away on 1199
 * tokens, and the test checks that both are more than the tolerance and
 * more than 5x the engine's own distance away. */
#define FLASH_TWIN_TOL 1e-4

/* One head of causal attention as FlashAttentionKernel.cpp computes it:
 * float32 scores times the scale; keys in blocks of `blk` with a running
 * maximum (mode 1: each block's own maximum instead, a wrong form kept to
 * show the test can tell); exp(s - max) summed unrounded and rounded to
 * bf16 for P v; the output rescaled as the maximum grows, divided by the
 * sum and rounded once.  Sums in double. */
static void
flash_twin(const float *q, const float *k, const float *v, float *out, int L, int hd, int ldq, int ldk,
    int blk, int mode)
{
	float scale = (float)(1.0 / sqrt((double)hd));
	float *s = xmalloc((size_t)L * sizeof(float));
	double *pv = xmalloc((size_t)hd * sizeof(double));
	float *dst = xmalloc((size_t)hd * sizeof(float));
	for (int i = 0; i < L; i++) {
		for (int j = 0; j <= i; j++) {
			double d = 0;
			for (int t = 0; t < hd; t++)
				d += (double)q[(size_t)i * ldq + t] * k[(size_t)j * ldk + t];
			s[j] = (float)d * scale;
		}
		float m = -INFINITY, tot = 0;
		for (int b0 = 0; b0 <= i; b0 += blk) {
			int b1 = b0 + blk - 1 < i ? b0 + blk - 1 : i;
			float nm = mode == 1 || b0 == 0 ? -INFINITY : m;
			for (int j = b0; j <= b1; j++)
				nm = s[j] > nm ? s[j] : nm;
			double bsum = 0;
			memset(pv, 0, (size_t)hd * sizeof(double));
			for (int j = b0; j <= b1; j++) {
				float e = expf(s[j] - nm);
				bsum += e;
				float p = bf16_round(e);
				for (int t = 0; t < hd; t++)
					pv[t] += (double)p * v[(size_t)j * ldk + t];
			}
			if (b0 == 0) {
				tot = (float)bsum;
				for (int t = 0; t < hd; t++)
					dst[t] = (float)pv[t];
			} else {
				float et = mode == 1 ? 1.0f : expf(m - nm);
				tot = (float)bsum + et * tot;
				for (int t = 0; t < hd; t++)
					dst[t] = (float)((double)(dst[t] * et) + pv[t]);
			}
			m = nm;
		}
		float inv = 1.0f / tot;
		for (int t = 0; t < hd; t++)
			out[(size_t)i * ldq + t] = bf16_round(dst[t] * inv);
	}
	free(s);
	free(pv);
	free(dst);
}

static double
rel_rms(const float *a, const float *b, size_t n)
{
	double num = 0, den = 0;
	for (size_t i = 0; i < n; i++) {
		num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
		den += (double)b[i] * b[i];
	}
	return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void
test_flash(void)
{
	model_config c = {
		.hidden = 64, .n_layers = 1, .n_heads = 4, .n_kv_heads = 2, .head_dim = 16,
		.intermediate = 64, .rms_eps = 1e-6f, .rope_theta = 1e4,
	};
	static const int Ls[] = {5, 255, 256, 257, 511, 512, 513, 1199};
	int hd = c.head_dim, qd = c.n_heads * hd, kd = c.n_kv_heads * hd, G = c.n_heads / c.n_kv_heads;
	rng r;
	rng_init(&r, 0xf1a5);
	for (size_t li = 0; li < sizeof Ls / sizeof Ls[0]; li++) {
		int L = Ls[li];
		/* sharp attention (q scaled up) so that the maximum moves between
		 * blocks and the probabilities' rounding matters */
		float *q = randn(&r, (size_t)L * qd, 2.5, 0.0), *k = randn(&r, (size_t)L * kd, 1.0, 0.0);
		float *v = randn(&r, (size_t)L * kd, 1.0, 0.0);
		for (size_t i = 0; i < (size_t)L * qd; i++)
			q[i] = bf16_round(q[i]);
		for (size_t i = 0; i < (size_t)L * kd; i++) {
			k[i] = bf16_round(k[i]);
			v[i] = bf16_round(v[i]);
		}
		float *out = xmalloc((size_t)L * qd * sizeof(float)), *tw = xmalloc((size_t)L * qd * sizeof(float));
		float *nb = xmalloc((size_t)L * qd * sizeof(float)), *lm = xmalloc((size_t)L * qd * sizeof(float));
		engine e;
		engine_init(&e, &c);
		engine_set_compute(&e, ENGINE_BF16);
		engine_attention_b16(&e, q, k, v, out, L);
		engine_done(&e);
		for (int h = 0; h < c.n_heads; h++) {
			const float *qh = q + (size_t)h * hd, *kh = k + (size_t)(h / G) * hd, *vh = v + (size_t)(h / G) * hd;
			flash_twin(qh, kh, vh, tw + (size_t)h * hd, L, hd, qd, kd, 512, 0);
			flash_twin(qh, kh, vh, nb + (size_t)h * hd, L, hd, qd, kd, 1 << 30, 0);
			flash_twin(qh, kh, vh, lm + (size_t)h * hd, L, hd, qd, kd, 512, 1);
		}
		int allb = 1;
		for (size_t i = 0; i < (size_t)L * qd; i++)
			allb &= bf16_round(out[i]) == out[i];
		double err = rel_rms(out, tw, (size_t)L * qd);
		tap_ok(allb && err <= FLASH_TWIN_TOL, "bf16 attention, %d tokens: bf16 values, rel RMS %.2e from the flash twin (<= %g)",
		    L, err, FLASH_TWIN_TOL);
		if (L > 1024) {
			/* two full key blocks and more: the wrong forms must be told apart */
			double e1 = rel_rms(nb, tw, (size_t)L * qd), e2 = rel_rms(lm, tw, (size_t)L * qd);
			double floor = fmax(FLASH_TWIN_TOL, 5 * err);
			tap_ok(e1 > floor && e2 > floor,
			    "... %d tokens: the twin without key blocks is %.2e away, with block-local maxima %.2e "
			    "(both > %.2e: the tolerance, and 5x the engine's distance)", L, e1, e2, floor);
		}
		free(q), free(k), free(v), free(out), free(tw), free(nb), free(lm);
	}
}

int
main(void)
{
	model_config c = {
		.hidden = 64, .n_layers = 1, .n_heads = 4, .n_kv_heads = 2, .head_dim = 16,
		.intermediate = 176, .rms_eps = 1e-6f, .rope_theta = 1e6, .mrope = 1,
		.mrope_section = {2, 3, 3},
	};
	int32_t lens[] = {37, 61, 9, 300};
	run_case("mrope, GQA 4/2, bias, 4 sequences", &c, lens, 4, 1, 1);

	c.mrope = 0;
	c.rope_theta = 10000;
	run_case("plain rope, no bias", &c, lens, 3, 0, 2);

	model_config c2 = {
		.hidden = 48, .n_layers = 1, .n_heads = 6, .n_kv_heads = 1, .head_dim = 12,
		.intermediate = 100, .rms_eps = 1e-5f, .rope_theta = 1e4, .mrope = 1,
		.mrope_section = {2, 2, 2},
	};
	int32_t lens2[] = {1, 270, 2};
	run_case("head_dim != hidden/heads, MQA, block boundary", &c2, lens2, 3, 1, 3);

	/* Qwen3-VL: per-head q/k norms, interleaved M-RoPE */
	model_config c3 = {
		.hidden = 64, .n_layers = 1, .n_heads = 4, .n_kv_heads = 2, .head_dim = 32,
		.intermediate = 176, .rms_eps = 1e-6f, .rope_theta = 5e6, .mrope = 1,
		.mrope_section = {6, 5, 5}, .mrope_interleaved = 1, .qk_norm = 1,
	};
	run_case("Qwen3-VL: q/k norms, interleaved mrope, head_dim 32", &c3, lens, 4, 0, 4);
	{
		/* the layout matters: frequency rows as apply_interleaved_mrope
		 * assigns them (1, 4, 7, 10, 13 take h; 2, 5, 8, 11, 14 take w) ... */
		int rows[16], want[16] = {0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0};
		int ok = 1;
		for (int i = 0; i < 16; i++)
			ok &= (rows[i] = engine_freq_row(&c3, i)) == want[i];
		tap_ok(ok, "interleaved mrope [6, 5, 5]: h at 1, 4, ..., 13, w at 2, 5, ..., 14, t elsewhere");
		model_config c4 = c3;
		c4.mrope_section[0] = 8;
		c4.mrope_section[1] = 4;
		c4.mrope_section[2] = 4;
		int w4[16] = {0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 0, 0};
		ok = 1;
		for (int i = 0; i < 16; i++)
			ok &= engine_freq_row(&c4, i) == w4[i];
		tap_ok(ok, "interleaved mrope [8, 4, 4]: h and w stop at 3 * section, t takes the rest");
		/* ... and the engine uses them: chunked sections give another layer */
		rng r;
		layer_weights w;
		engine e3, e5;
		rng_init(&r, 5);
		make_layer(&r, &c3, &w, 0);
		int n = lens[0] + lens[1];
		int64_t *pos = xmalloc((size_t)3 * n * sizeof(int64_t));
		make_positions(lens, 2, pos, n, 4);
		float *h0 = randn(&r, (size_t)n * c3.hidden, 1.0, 0.0);
		float *h1 = xmalloc((size_t)n * c3.hidden * sizeof(float));
		memcpy(h1, h0, (size_t)n * c3.hidden * sizeof(float));
		engine_batch b = {.n_tokens = n, .n_seqs = 2, .seq_lens = lens, .pos = pos};
		model_config c5 = c3;
		c5.mrope_interleaved = 0;
		engine_init(&e3, &c3);
		engine_init(&e5, &c5);
		engine_layer_forward(&e3, &w, &b, h0, NULL);
		engine_layer_forward(&e5, &w, &b, h1, NULL);
		double d = rel_err(h0, h1, (size_t)n * c3.hidden);
		tap_ok(d > 1e-4, "interleaved and chunked mrope differ on a multimodal batch (%.2e)", d);
		model_config c6 = c3;
		c6.qk_norm = 0;
		engine e6;
		engine_init(&e6, &c6);
		memcpy(h1, h0, (size_t)n * c3.hidden * sizeof(float));
		float *h2 = xmalloc((size_t)n * c3.hidden * sizeof(float));
		memcpy(h2, h0, (size_t)n * c3.hidden * sizeof(float));
		engine_layer_forward(&e3, &w, &b, h1, NULL);
		engine_layer_forward(&e6, &w, &b, h2, NULL);
		d = rel_err(h1, h2, (size_t)n * c3.hidden);
		tap_ok(d > 1e-4, "the q/k norms change the layer (%.2e)", d);
		engine_done(&e3);
		engine_done(&e5);
		engine_done(&e6);
		layer_weights_done(&w);
		free(pos);
		free(h0);
		free(h1);
		free(h2);
	}
	test_flash();
	return tap_done();
}
