/*
 * engine.h: the forward pass of one decoder layer over a batch of
 * variable-length sequences, in float32 through OpenBLAS.
 *
 *   h += o_proj(attn(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1)))   n1 = rmsnorm(h)
 *   h += down_proj(silu(gate_proj(n2)) * up_proj(n2))                   n2 = rmsnorm(h)
 *
 * Attention is causal within each sequence and grouped-query across heads.
 * RoPE is the rotate-half form; with cfg->mrope the frequency bands of each
 * head take their positions from rows t, h, w of the 3-row position ids
 * (Qwen2-VL's multimodal RoPE: consecutive sections; Qwen3-VL's
 * interleaved), else row t is used.  With cfg->qk_norm (Qwen3) each head of
 * q and k is RMS-normalised with its own weights before RoPE.
 *
 * Hooks: before each linear group the engine calls ops->observe with that
 * group's input (the shared input of q,k,v; o_proj's; the shared input of
 * gate,up; down_proj's).  ops->linear, when set, may replace any linear
 * (quantized forward); it returns 0 when it computed y, 1 to fall back to
 * the plain float32 product.
 */
#ifndef MASQ_ENGINE_H
#define MASQ_ENGINE_H

#include <stdint.h>

#include "core/bgemm.h"
#include "core/igemm.h"
#include "core/model.h"

/* Linear-input sites, in forward order. */
enum engine_site { SITE_QKV, SITE_O, SITE_GATEUP, SITE_DOWN, SITE_COUNT };
const char *engine_site_name(int site);
/* The site whose input feeds linear lin. */
int engine_lin_site(int lin);

typedef struct engine_batch {
	int n_tokens;
	int n_seqs;
	const int32_t *seq_lens;	/* (n_seqs), sum = n_tokens */
	const int64_t *pos;		/* (3, n_tokens) */
	const uint8_t *modality;	/* (n_tokens) or NULL */
} engine_batch;

typedef struct engine_ops {
	void *ctx;
	/* x: (n, d) row-major; valid only during the call. */
	void (*observe)(void *ctx, int layer, int site, const float *x, int n, int d);
	/* y (n, out) = x (n, in) W^T + b; return 0 if done, 1 to use the default. */
	int (*linear)(void *ctx, const layer_weights *w, int lin, const float *x,
	    int n, float *y);
} engine_ops;

typedef struct engine {
	model_config cfg;
	int cap_tokens;		/* scratch capacity in tokens */
	int cap_seq;		/* longest sequence the score buffer holds */
	float *n1;		/* (cap, hidden) normed input */
	float *q, *k, *v;	/* (cap, q_dim), (cap, kv_dim) x2 */
	float *att;		/* (cap, q_dim) attention output */
	float *proj;		/* (cap, hidden) o_proj / down_proj output */
	float *gate, *up;	/* (cap, inter) */
	float *scores;		/* (cap_seq, cap_seq) */
	float *inv_freq;	/* (head_dim / 2) */
	uint8_t *freq_row;	/* (head_dim / 2): position row (0 t, 1 h, 2 w) per frequency */
	int compute;		/* enum engine_compute */
	/* bf16: the weights packed for bgemm, of the load wb_gen */
	bgemm_b wb[LIN_COUNT];
	uint64_t wb_gen[LIN_COUNT];
	const float *wb_src[LIN_COUNT];
} engine;

/*
 * What the forward computes in.  F32: float32 throughout (BLAS sgemm),
 * the default, exact against the float64 oracle.  BF16: as PyTorch runs a
 * model loaded in bfloat16 (the MASQuant reference): the residual stream,
 * every parameter and every op's output rounded to bf16; linears through
 * bgemm (bf16 products summed in float32, rounded once after the bias);
 * RMSNorm in float32, rounded, times the weight, rounded; RoPE tables in
 * float32 rounded to bf16, each multiply and add rounded; attention as
 * PyTorch's CPU flash kernel (float32 scores and online softmax over
 * blocks of 512 keys, the probabilities rounded to bf16 before P v, the
 * output rounded once); SiLU in float32, rounded, times up, rounded.  A
 * linear an ops hook computes is rounded to bf16 after it.
 */
enum engine_compute { ENGINE_F32, ENGINE_BF16 };
void engine_set_compute(engine *e, int compute);
/* "f32" or "bf16"; engine_compute_parse returns -1 for another name. */
const char *engine_compute_name(int compute);
int engine_compute_parse(const char *s);
/* 0 when the bf16 forward covers cfg, else MASQ_ERR_USAGE naming why
 * (Qwen3's q/k norms are not written for it yet). */
int engine_compute_check(const model_config *cfg, int compute, masq_err *err);
/* Drop the weights the bf16 forward packed (the next forward packs them
 * again): what a caller does when it releases the layer. */
void engine_release_weights(engine *e);
/* The bf16 forward's causal attention of one sequence of L tokens (q (L,
 * q_dim), k and v (L, kv_dim), bf16 values; out (L, q_dim)), for tests;
 * engine_reserve'd by the call. */
void engine_attention_b16(engine *e, const float *q, const float *k, const float *v, float *out, int L);

void engine_init(engine *e, const model_config *cfg);
/* The position row (0 t, 1 h, 2 w) frequency i of a head takes. */
int engine_freq_row(const model_config *cfg, int i);
void engine_done(engine *e);

/* h (n_tokens, hidden) is updated in place to the layer's output. */
void engine_layer_forward(engine *e, const layer_weights *w, const engine_batch *b,
    float *h, const engine_ops *ops);

/* Plain reference of the same layer: naive loops in double accumulation, no
 * BLAS, no hooks.  For tests only; O(tokens * weights). */
void engine_layer_forward_ref(const model_config *cfg, const layer_weights *w,
    const engine_batch *b, float *h);

/* The quantized linear as deployed, for k rows of x (n, in) picked by rows
 * (NULL: the first k): xs (k, in) = x[rows] / s (s NULL: 1); then
 * y (k, out) = Q_a(xs) W^T + bias, activations fake-quantized per token at
 * abits (16: not at all), plus (xs L1) L2 when rank > 0 (the CMC branch
 * takes the unquantized smoothed rows).  xq (k, in) is scratch. */
void engine_qlinear_rows(const float *x, int in, const int *rows, int k, const float *s, int abits,
    const float *W, const float *bias, int out, int rank, const float *L1, const float *L2,
    float *xs, float *xq, float *y);

/* The same linear with the integer GEMM (igemm.h): W given as its packed
 * levels Wi and per-row scales wscale (y uses W = levels * wscale, exactly
 * the fake-quant weight), the activations quantized to levels per token at
 * abits <= 8; y = (levels_a levels_w^T) * scale_a * scale_w + bias, the
 * integer sums exact and the rescale in double, rounded once to float.
 * Agrees with engine_qlinear_rows on the same weight to the float
 * rounding of its sums (tests/test_engine.c names the bound).  threads:
 * the integer GEMM's (<= 0: one). */
void engine_qlinear_rows_int(const float *x, int in, const int *rows, int k, const float *s,
    int abits, const igemm_b *Wi, const float *wscale, const float *bias, int out, int rank,
    const float *L1, const float *L2, float *xs, float *y, int threads);

/* logits (k, V), a new array, of rows idx of h (n, D): RMSNorm with norm
 * and eps, then the head W (V, D). */
float *engine_head_logits(const float *h, const int *idx, int k, int D, const float *norm, float eps,
    const float *W, int V);

/* Softmax of row[0..last] in place (the causal prefix of a row of K
 * attention scores), row[last+1..K-1] = 0; returns log(sum exp), the
 * row's log-sum-exp (what a backward recomputes the row from). */
float engine_softmax_prefix(float *row, int last, int K);

/* Pin OpenBLAS to n threads (n <= 0: leave as configured); the count in use. */
void masq_blas_set_threads(int n);
int masq_blas_get_threads(void);

/* y (n, out) = x (n, in) W^T + b through cblas_sgemm. */
void engine_linear(const float *x, int n, int in, const float *W, const float *bias,
    int out, float *y);

#endif
