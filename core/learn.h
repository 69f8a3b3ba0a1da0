/*
 * learn.h: learned smoothing factors, MASQuant's training stage (the
 * reference's `--let` with split scales; ../shared/reference/learned-mas.md).
 *
 * One decoder layer at a time, after calibration and before quantization:
 * the closed-form factors (smooth.h) are the start; each of q, k, v, o,
 * gate and up has one vector per modality (or one for every token,
 * `unified`, the "uniform + opt" baseline); k and v start as copies of q's,
 * gate of up's, and train on their own unless `tied`.  Every step takes one
 * calibration sequence:
 *
 *   truncate      |s_i| < LEARN_TRUNC becomes sign(s_i) LEARN_TRUNC
 *   forward       the whole block in train mode on the sequence's input:
 *                 each smoothed linear, for modality m over m's rows,
 *                 y = Q_A(x / (s_m + LEARN_EPS)) Q_W(W diag(s_m))^T + b;
 *                 down_proj quantized with s = 1 (its input divided by
 *                 1 + LEARN_EPS as well), never trained
 *   loss          against the target (the layer's FP output, see
 *                 learn_target_linear): the pooled modality-weighted MAE
 *                 sum_t lambda_m(t) sum_j |out - target| / (tokens * hidden),
 *                 or the plain MSE (lambda unused)
 *   backward      by hand: the straight-through quantizers with their scale
 *                 path (quant.h), x / (s + eps) and W diag(s), both GEMMs
 *                 of every linear, SiLU * up, RMSNorm, causal GQA attention
 *                 (probabilities recomputed block by block from the saved
 *                 log-sum-exp), RoPE rotated back
 *   AdamW         torch's, in float: lr, betas 0.9 / 0.999, eps 1e-8, no
 *                 weight decay, bias correction; a modality absent from the
 *                 sequence has a zero gradient and still steps; a step with
 *                 any non-finite gradient is skipped (the step count stays)
 *
 *	learn_state L;
 *	learn_init(&L, &cfg, &w, &o, init);      // init[lin][mod]: starting vectors
 *	for (e = 0; e < epochs; e++)
 *		for (i = 0; i < n_seqs; i++) {
 *			learn_truncate(&L);
 *			loss = learn_step_grad(&L, &seq[i], NULL);
 *			learn_adam_step(&L);
 *		}
 *	... L.s[lin][mod] ...
 *	learn_done(&L);
 *
 * Memory: the layer's weights (the caller's), two scratch matrices of the
 * largest linear, the factors and their moments, and one sequence's
 * activations; attention never holds more than LEARN_ATT_BLOCK query rows
 * of probabilities.
 *
 * Every kernel has a plain twin in learn_ref.c: the same step written as
 * loops in double, no BLAS; the tests compare the two, and check the
 * twin's gradient against central finite differences of a surrogate in
 * which the quantizers' rounding is frozen (x^ = x + c * scale(x) with c
 * fixed): its exact derivative is the straight-through rule, scale path
 * included.
 */
#ifndef MASQ_LEARN_H
#define MASQ_LEARN_H

#include <stdint.h>

#include "core/calib.h"
#include "core/model.h"

#define LEARN_EPS 1e-5f		/* a = x / (s + eps) in train mode */
#define LEARN_TRUNC 1e-2f	/* factors are kept at least this far from 0 */
#define LEARN_BETA1 0.9
#define LEARN_BETA2 0.999
#define LEARN_ADAM_EPS 1e-8
#define LEARN_ATT_BLOCK 128	/* query rows of probabilities held at once */
#define LEARN_TOL 2e-3		/* fast step against its twin: relative to the largest gradient */

/* The trained linears are LIN_Q .. LIN_UP; down_proj carries no factor. */
#define LEARN_LINS LIN_DOWN

enum learn_loss { LEARN_LOSS_MAE, LEARN_LOSS_MSE, LEARN_LOSS_COUNT };
/* "mae", "mse" */
const char *learn_loss_name(int loss);
int learn_loss_parse(const char *s);

typedef struct learn_opts {
	int wbits, abits;	/* the run's quantizers (16: off) */
	int wgroup;		/* 0: per output channel, else asymmetric groups */
	int loss;		/* enum learn_loss */
	float lambda[MOD_COUNT];	/* MAE weights per modality */
	float lr;
	int unified;		/* one vector per linear for every token */
	int tied;		/* k, v train q's vectors and gate up's */
} learn_opts;

/* The reference's defaults at W4A8: MAE, lambda text 1, vision 0.5, audio 1, lr 5e-2. */
void learn_opts_default(learn_opts *o);

typedef struct learn_seq {
	int n;			/* tokens */
	const float *h;		/* (n, hidden) the layer's input */
	const float *target;	/* (n, hidden) its FP output */
	const int64_t *pos;	/* position row r of token i at pos[r * pos_stride + i] */
	int pos_stride;
	const uint8_t *modality;	/* (n) */
} learn_seq;

struct learn_ws;

typedef struct learn_state {
	model_config cfg;
	const layer_weights *w;	/* the caller's, FP */
	learn_opts o;
	int in[LIN_COUNT];	/* input width of each linear */
	/* owner[k][m]: the slot (k' * MOD_COUNT + m') whose vector linear k
	 * uses for modality m (itself, q's / up's when tied, row 0 when unified) */
	int owner[LEARN_LINS][MOD_COUNT];
	float *s[LEARN_LINS][MOD_COUNT];	/* the factors (aliases of the owners' vectors) */
	float *g[LEARN_LINS][MOD_COUNT];	/* d loss / d s of the last step (aliases likewise) */
	float *m1[LEARN_LINS * MOD_COUNT];	/* AdamW moments of the owned slots, or NULL */
	float *m2[LEARN_LINS * MOD_COUNT];
	int steps;		/* AdamW steps taken */
	int skipped;		/* steps skipped for a non-finite gradient */
	struct learn_ws *ws;
} learn_state;

/* init[k][m] (in[k]) are copied; with unified only init[k][0] is read,
 * with tied k and v take q's and gate up's. */
void learn_init(learn_state *L, const model_config *cfg, const layer_weights *w, const learn_opts *o,
    const float *const init[LEARN_LINS][MOD_COUNT]);
void learn_done(learn_state *L);

/* Is slot (k, m) a vector of its own (not an alias)? */
int learn_owns(const learn_state *L, int lin, int mod);

void learn_truncate(learn_state *L);
/* Forward of seq, its loss, and (grad) the gradients into L->g.  out
 * (n, hidden), when not NULL, receives the train-mode output. */
double learn_step_grad(learn_state *L, const learn_seq *seq, float *out, int grad);
/* The train-mode forward alone (seq->target may be NULL): out (n, hidden). */
void learn_forward(learn_state *L, const learn_seq *seq, float *out);
/* AdamW on every owned vector with L->g; 1 (and no change) when a
 * gradient is not finite, else 0. */
int learn_adam_step(learn_state *L);

/*
 * The FP target is the layer run by the train-mode module with the
 * quantizers off and s = 1 (the reference's fp_inps): every linear's input
 * divided by 1 + LEARN_EPS.  An engine_ops linear hook; ctx is the
 * engine_batch it runs on (one GEMM a sequence), or NULL (one GEMM).
 */
int learn_target_linear(void *ctx, const layer_weights *w, int lin, const float *x, int n, float *y);

/* ---- the plain twin (learn_ref.c) --------------------------------------- */

enum learn_ref_mode {
	LEARN_REF_FLOAT = 0,	/* round to float where the fast path stores floats */
	LEARN_REF_DOUBLE = 1,	/* everything in double (finite differences) */
	LEARN_REF_RECORD = 2,	/* with DOUBLE: record each quantizer's rounding */
	LEARN_REF_FROZEN = 4	/* with DOUBLE: replay it (x^ = x + c * scale(x)) */
};

typedef struct learn_freeze {
	double *c;		/* rounding residuals level - x / scale, in call order */
	uint8_t *inside;
	size_t n, cap, pos;
} learn_freeze;
void learn_freeze_done(learn_freeze *f);

/* The step of learn_step_grad written plainly: the loss, and gradients
 * into g[k][m] (double, in[k]; the owners' zeroed first, aliases summed
 * into their owners as in L).  The factors are L's, or sv[k][m] (double)
 * when sv is not NULL (finite differences need steps finer than a
 * float's).  fz is used by RECORD and FROZEN, else NULL. */
double learn_step_grad_ref(const learn_state *L, const learn_seq *seq, int mode, learn_freeze *fz,
    const double *const sv[LEARN_LINS][MOD_COUNT], double *const g[LEARN_LINS][MOD_COUNT]);

#endif
