/*
 * pipeline.h: MASQuant layer by layer, the numeric heart of masq.
 *
 * Two hidden states travel through the decoder: the full-precision one
 * (statistics, Gram matrices and the reference outputs come from it, as in
 * the reference implementation) and the quantized one (each quantized
 * layer's output feeds the next, so errors propagate as in deployment).
 * For the layer under the cursor:
 *
 *   pipe_calibrate(p)   load its weights, run the FP forward on the FP state
 *                       with statistics hooks (stats.h) -> FP output
 *   pipe_search_alpha   optional: grid search of alpha per modality (MAS) or
 *                       per layer (SQ) for the best layer-output SQNR
 *   pipe_train          learn the factors (core/learn.h) from the closed
 *                       form, when the setting asks for it (a method that
 *                       learns, epochs > 0)
 *   pipe_quantize(p)    factors (smooth.h), CMC (cmc.h), the quantized
 *                       forward on the quantized state, and the measurements;
 *                       may be repeated with other settings
 *   pipe_next(p)        commit the layer: both states advance, the layer's
 *                       weights and statistics are released
 *
 *	pipeline p;
 *	pipe_init(&p, &model, &calib, &opts, &err);
 *	while (p.layer < p.n_layers) {
 *		pipe_calibrate(&p, &err); pipe_quantize(&p, &err); pipe_next(&p, &err);
 *	}
 *	pipe_finish(&p, &err);          // model summary (+ KL when there is an lm_head)
 *	pipe_done(&p);
 *
 * Memory: one layer's weights (plus their quantized copies), the layer's
 * statistics, and four hidden states of the calibration set; eight when
 * the run learns, for the two chains the reference learns on: the
 * train-mode chain (each layer's three-weight train-mode forward under its
 * learned factors, no compensation, inputs divided by s + eps) gives a
 * layer its input, the train-mode FP chain (quantization off, inputs
 * divided by 1 + eps) its target; both travel beside the FP and deployed
 * ones, which the statistics, the compensation and every figure use.
 */
#ifndef MASQ_PIPELINE_H
#define MASQ_PIPELINE_H

#include "core/calib.h"
#include "core/cmc.h"
#include "core/engine.h"
#include "core/learn.h"
#include "core/metrics.h"
#include "core/model.h"
#include "core/qplan.h"
#include "core/rng.h"
#include "core/smooth.h"
#include "core/stats.h"

/* Ranks at which the whitened (and optionally plain) CMC error is reported. */
#define PIPE_RANK_CURVE 8
extern const double pipe_rank_curve[PIPE_RANK_CURVE];	/* ratios of min(in, out) */
/* Alpha grid points kept per search curve. */
#define PIPE_ALPHA_MAX 64

typedef struct pipe_opts {
	int method;		/* default method of every layer */
	int wbits, abits;	/* weight bits (2..8, 16 = off), activation bits (2..8, 16 = off) */
	int wgroup;		/* weight group size (0: per output channel); -1: 128 when abits
				   is 16 (W4A16, as the reference), else per channel */
	float alpha;		/* default migration strength */
	int search;		/* search alpha at every layer */
	float alpha_lo, alpha_hi, alpha_step;	/* the search grid */
	int search_tokens;	/* token budget of the search batch (whole sequences) */
	double rank;		/* default CMC rank setting (ratio <= 1 or absolute) */
	int rank_floor;		/* minimum rank for ratios */
	int cmc_quant_target;	/* 0: target S_m W in full precision (reference default);
				   1: target Q(S_m W) (--quant_cmc 1) */
	int whiten;		/* 1: whitened CMC (default); 0: plain SVD ("no-white") */
	int svd_mode;		/* enum cmc_svd_mode */
	int cmc_diag;		/* also compute the unwhitened error curve and full SVDs */
	int sample_cap;		/* reservoir rows per modality and site */
	uint64_t seed;
	int sqnr_floor;		/* enum metrics_floor: MEAN, the reference's (SUM: masq 0.1's sessions) */
	/* learning, the default of every layer (layer_setting) */
	int epochs;		/* 0: the closed form */
	float lr;
	int loss;		/* enum learn_loss */
	float lambda[MOD_COUNT];
	int tie;
	/* the held-out split: this share of the sequences (0: none, up to
	 * PIPE_SPLIT_MAX) stays out of the statistics, the search and
	 * learning, and is measured apart */
	double eval_split;
	/* how the masquant export stores L1 and L2 (st_dtype: F16 by
	 * default, F32 for sessions that predate the setting): what the
	 * compensation costs.  The pipeline computes them in F32. */
	int cmc_dtype;
	/* the precision of CMC's large products (enum cmc_precision): F32 by
	 * default, with a check that falls back to F64 per linear; F64 for
	 * sessions that predate the setting (cmc_compute_prec) */
	int cmc_precision;
	/* how CMC's whitening factors each Gram matrix (enum
	 * cmc_whiten_kind): CHOL by default, EIG (the eigendecomposition)
	 * for sessions that predate the setting */
	int whiten_kind;
	/* the randomized SVD's inner steps by Gram matrices (cmc.h,
	 * CMC_SVD_GRAM): 1 by default, 0 (Householder QR and dgesdd) for
	 * sessions that predate the setting */
	int rsvd_gram;
	/* what the forwards compute in (enum engine_compute): F32 by default
	 * and for sessions that predate the setting; BF16 as the reference's
	 * bfloat16 model (engine.h) */
	int compute;
} pipe_opts;
#define PIPE_SPLIT_MAX 0.9

/* The reference's defaults: W4A8, alpha 0.5, rank 0.05 with floor 32. */
void pipe_opts_default(pipe_opts *o);
/* Every field within its range (the rules of the command line): -1 with
 * err naming the field and the value.  pipe_init checks with it, and so
 * does a session read back from its database. */
int pipe_opts_check(const pipe_opts *o, masq_err *err);
/* 1 when the quantized linears of a pipeline with these options run as
 * integer GEMMs (igemm.h): abits and wbits <= 8, per-channel weights, and
 * MASQ_QGEMM not "float". */
int pipe_qgemm_int(const pipe_opts *o);

/* pipe_opts.rsvd_gram's names: "gram" (1) or "householder" (0);
 * pipe_rsvd_parse returns -1 for another name. */
const char *pipe_rsvd_name(int gram);
int pipe_rsvd_parse(const char *s);

typedef struct pipe_cmc_diag {
	int rank;			/* rank used, 0 when no compensation */
	double rel_err;			/* |T (dWt - L1 L2)|^2 / |T dWt|^2 at that rank */
	double erank;			/* effective rank of T dWt (NAN without the full spectrum) */
	double curve[PIPE_RANK_CURVE];		/* whitened rel. error at pipe_rank_curve ratios (NAN: unknown) */
	double curve_plain[PIPE_RANK_CURVE];	/* unwhitened factors, same metric (NAN unless cmc_diag) */
	int n_floored;			/* whitening eigenvalues raised to the floor */
} pipe_cmc_diag;

typedef struct pipe_lin_result {
	float alpha[MOD_COUNT];		/* alpha in effect per modality (unified: all equal) */
	int rank;			/* CMC rank in effect (0: none) */
	double sqnr[STATS_ROWS];	/* linear output vs FP linear on the same input, dB */
	double mae[STATS_ROWS];
	/* mas-cmc with a rank: the same linear with no compensation (vision
	 * and audio through x / s_text and the stored weight, rank 0), dB;
	 * NAN otherwise.  Below it, the compensation at this rank costs more
	 * than it mends. */
	double sqnr_no_cmc[STATS_ROWS];
	pipe_cmc_diag cmc[MOD_COUNT];	/* [vision], [audio] used */
} pipe_lin_result;

typedef struct pipe_search {
	int done;
	int n;				/* grid points */
	float alpha[PIPE_ALPHA_MAX];
	double sqnr[ALPHA_ROWS][PIPE_ALPHA_MAX];	/* layer-output SQNR per searched row */
	float best[ALPHA_ROWS];		/* chosen alpha per modality (+ unified for SQ) */
	int tokens;			/* tokens in the search batch */
} pipe_search;

/* What pipe_train did for a layer. */
typedef struct pipe_learn_result {
	int done;			/* the layer's factors are learned for its setting */
	int epochs, steps, skipped;	/* steps = epochs * sequences; skipped: non-finite gradients */
	double *loss;			/* (steps) the loss of each step, owned */
	/* the train-mode layer output against the FP output, dB, with the
	 * closed-form start and with the learned factors */
	double sqnr_init[STATS_ROWS], sqnr_learned[STATS_ROWS];
	int chain;			/* trained on the train-mode chains (1) or the deployed and FP ones (0) */
	double seconds;
} pipe_learn_result;

typedef struct pipe_layer_result {
	int done;			/* quantized at least once */
	int method;
	double sqnr[STATS_ROWS];	/* layer output vs FP layer output, dB (the fitted tokens) */
	double mae[STATS_ROWS];
	double sqnr_held[STATS_ROWS];	/* the same on the held-out tokens (NAN without a split) */
	double mae_held[STATS_ROWS];
	pipe_lin_result lin[LIN_COUNT];
	misalign mis[SITE_COUNT];
	pipe_search search;
	pipe_learn_result learn;
	double t_calib, t_quant, t_search;	/* seconds */
} pipe_layer_result;

typedef struct pipe_summary {
	double sqnr[STATS_ROWS];	/* of the last layer's output (the fitted tokens) */
	double mae[STATS_ROWS];
	double sqnr_held[STATS_ROWS];	/* on the held-out tokens (NAN without a split) */
	double mae_held[STATS_ROWS];
	double kl_text;			/* mean KL of next-token distributions at text positions; NAN without lm_head */
	double kl_text_held;		/* at the held-out text positions (NAN without a split) */
	double seconds;
} pipe_summary;

typedef struct pipeline {
	const model *m;
	const calib *c;			/* the tokens this process runs */
	/* one rank of several (mpirun): every rank's calibration set (its
	 * sequences and modalities; its embeddings may be gone) and where
	 * this rank's share starts in it; in one process all == c */
	const calib *all;
	int seq0;
	int64_t tok0;
	int sharded;
	pipe_opts opts;
	int n_layers;
	int layer;			/* the cursor: the layer being worked on */
	int calibrated;			/* the cursor's layer has weights, statistics and FP output */
	layer_setting *settings;	/* (n_layers) */
	pipe_layer_result *results;	/* (n_layers) */
	pipe_summary summary;
	int finished;
	engine eng;
	engine_batch batch;
	rng g;
	layer_weights w;		/* the cursor's layer, FP */
	site_stats st[SITE_COUNT];	/* the cursor's layer's statistics */
	float *wmax_lin[LIN_COUNT];	/* (in) column maxima of each linear's own weight */
	float *wmax_grp[GRP_COUNT];	/* (in) column maxima over every weight of a group (SQ) */
	qplan_layer plan;		/* what the last pipe_quantize of the cursor's layer decided */
	int plan_valid;
	float *h_fp;			/* (tokens, hidden) FP input of the cursor's layer */
	float *h_fp_out;		/* (tokens, hidden) its FP output */
	float *h_q;			/* (tokens, hidden) quantized input */
	float *h_q_out;			/* (tokens, hidden) quantized output */
	/* the chains learning uses (a run that learns), or NULL: the
	 * train-mode chain and the train-mode FP chain */
	float *h_train, *h_train_out;
	float *h_fpe, *h_fpe_out;
	int train_out_valid;		/* h_train_out and h_fpe_out are the cursor layer's */
	/* the cursor layer's learned factors (learned[k][m], in of linear k)
	 * and the setting they were learned for */
	float *learned[LEARN_LINS][MOD_COUNT];
	int learned_valid;
	layer_setting learned_for;
	struct wcache *wc;		/* the whitening bases (GRP_COUNT * MOD_COUNT), kept while the layer is calibrated */
	/* 1: the layer is quantized once and left (masq run, masq resume):
	 * pipe_quantize frees each group's bases and Gram matrices after its
	 * last linear, so that the layer's peak holds one group's, and any
	 * later use of them in the layer is refused; 0 (the workbench,
	 * replay): kept for previews and re-quantizing. With no training
	 * chain, it also frees each linear's f32 weight once the linear is
	 * quantized and measured (w_spent): until the layer is calibrated
	 * again, every use of its weights is refused. */
	int one_pass;
	int w_spent;
	/* one_pass, one process, no training chain: the layer's linears are
	 * loaded one at a time (layer_weight_fetch) for the calibration
	 * forward and again for the quantized one, each freed after its use,
	 * so that one linear's f32 weight is resident, not the layer's; nor
	 * are the sampled rows kept that only previews read (sample_cap 0) */
	int lazy_w;
	/* the held-out split (opts.eval_split > 0), or NULL: per sequence
	 * whether it is held out; the modalities with the held-out tokens
	 * (fit) or the fitted ones (held) marked MOD_SKIP */
	uint8_t *held;			/* (all->n_seqs) */
	uint8_t *mod_fit, *mod_held;	/* (c->n_tokens) */
	uint8_t *mod_fit_all;		/* (all->n_tokens) sharded: every rank's mod_fit, or NULL */
	/* where calibrate, search and quantize report their progress from
	 * inside (the part done, 0..1, and what is being done), or NULL */
	void (*work)(void *ctx, double frac, const char *what);
	void *work_ctx;
	double t_start;
} pipeline;

/* The largest min(in, out) of the compensated linears (q .. up): an
 * absolute rank above it is refused (MASQ_ERR_USAGE) rather than clamped
 * everywhere; ranks up to it are clamped per linear. */
int pipe_rank_max(const model_config *c);
int pipe_check_rank(const model_config *c, double rank, masq_err *err);

int pipe_init(pipeline *p, const model *m, const calib *c, const pipe_opts *o, masq_err *err);
/* The same for one rank of dist_size() > 1: c holds sequences seq0 ..
 * seq0 + c->n_seqs - 1 of all (calib_slice).  Every rank makes the same
 * calls in the same order; the statistics, the metrics, the search and the
 * summary are reduced across ranks (core/dist.h), so every rank holds the
 * results one process would (sums to their association), and the
 * factors, plans and decisions that follow from them; mas-cmc's factors
 * are computed by one rank a pair and broadcast.  Learned factors and the
 * spectra are refused (MASQ_ERR_USAGE); a preview runs on the reservoir,
 * which every rank holds whole. */
int pipe_init_shard(pipeline *p, const model *m, const calib *c, const calib *all, int seq0,
    const pipe_opts *o, masq_err *err);
void pipe_done(pipeline *p);
/* Load the cursor's layer and run its FP forward with statistics. */
int pipe_calibrate(pipeline *p, masq_err *err);
/* Grid-search alpha for the cursor's layer under its setting's method and
 * store the best values in its setting (requires pipe_calibrate). */
int pipe_search_alpha(pipeline *p, masq_err *err);
/* Learn the cursor layer's factors under its setting (calibrated first).
 * progress, when not NULL, is called after every step with the steps done,
 * the total and the step's loss; a non-zero return stops training
 * (MASQ_ERR_USAGE, "interrupted") and leaves the layer without learned
 * factors.  Learning invalidates an earlier pipe_quantize of the layer. */
typedef int (*pipe_progress_fn)(void *ctx, int done, int total, double loss);
int pipe_train(pipeline *p, pipe_progress_fn progress, void *ctx, masq_err *err);
/* Replace the cursor layer's learned factors (learned first) by f[k][m]
 * (in of linear k), as a replay does to continue from recorded ones; the
 * MAS chain's next input follows them.  Finite, non-zero values only
 * (MASQ_ERR_FORMAT). */
int pipe_learned_adopt(pipeline *p, const float *const f[LEARN_LINS][MOD_COUNT], masq_err *err);
/* Are the cursor layer's learned factors those its setting asks for (or
 * does the setting not learn)? */
int pipe_factors_ready(const pipeline *p);
/* Quantize the cursor's layer with its current setting and measure; a
 * setting that learns needs pipe_train first (MASQ_ERR_USAGE otherwise). */
int pipe_quantize(pipeline *p, masq_err *err);
/* The factor linear lin (q .. up) uses for alpha row `row` (a modality, or
 * ALPHA_UNIFIED) when the cursor's layer runs `method` with setting ls
 * (method may differ from ls->method: mas-cmc is searched and previewed as
 * mas): the learned one when the layer has it for ls, else the closed
 * form; NULL means s = 1.  Written into s (in). */
const float *pipe_factor(const pipeline *p, const layer_setting *ls, int method, int lin, int row, float *s);
/* What a setting change does, measured on the token sample alone: each
 * linear of the cursor's layer on the sampled FP inputs of its site,
 * quantized under the current setting against the FP linear, per modality.
 * Linear-local (no attention), so it is fast enough for interactive tuning.
 * mas-cmc is previewed with its compensation, computed as pipe_quantize
 * computes it (the layer's Gram matrices, the same rank); the whiteners are
 * kept between previews while the factors they were built for hold, and
 * the randomized SVD draws from a copy of the generator, so a preview
 * changes nothing that is recorded.  Entries not recomputed are NAN. */
typedef struct pipe_preview {
	double sqnr[LIN_COUNT][STATS_ROWS];
	double mae[LIN_COUNT][STATS_ROWS];
	double sqnr_no_cmc[LIN_COUNT][STATS_ROWS];	/* pipe_lin_result's */
	int rows[MOD_COUNT];		/* sampled tokens used per modality */
	double seconds;
} pipe_preview;

/* Re-evaluate group grp (-1: every linear, down_proj included) for modality
 * mod (-1: all) from the token sample (requires pipe_calibrate). */
int pipe_preview_sample(pipeline *p, int grp, int mod, pipe_preview *out, masq_err *err);

/* The whitened spectrum of one compensated linear of one layer: gain[i]
 * is the i-th singular value squared of T dWt summed over the compensated
 * modalities (what rank i + 1 removes of the whitened error), total the
 * error at rank 0; cost per rank: r (in + out) per modality. */
typedef struct pipe_spectrum {
	int layer, lin;
	int in, out, mn;
	int nmod;			/* compensated modalities (vision, audio present) */
	int cap;			/* values known */
	double *gain;			/* (cap) */
	double total;
} pipe_spectrum;

/* The spectra of every compensated linear of the mas-cmc layers from the
 * cursor's to the last, up to cap values each, for a rank budget: a pass
 * over the FP chain alone (each layer calibrated again on a shadow of the
 * pipeline, its factors in closed form, the pipeline itself untouched).
 * progress, when not NULL, is called after each layer.  *out (owned; free
 * with pipe_spectra_free) gets *n entries in layer and linear order. */
int pipe_spectra(pipeline *p, int cap, pipe_spectrum **out, int *n, pipe_progress_fn progress, void *ctx,
    masq_err *err);
void pipe_spectra_free(pipe_spectrum *sp, int n);

/* Commit the cursor's layer and move to the next. */
int pipe_next(pipeline *p, masq_err *err);
/* After the last layer: the model summary (and KL with an lm_head). */
int pipe_finish(pipeline *p, masq_err *err);


#endif
