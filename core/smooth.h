/*
 * smooth.h: smoothing factors and the per-layer settings that choose them.
 *
 * The closed form (SmoothQuant, and MAS per modality):
 *   s_j = max(R_j, 1e-5)^a / max(w_j, 1e-5)^(1-a), then clamped to >= 1e-5,
 * where R_j is the per-channel max|x| of the linear's input over the tokens
 * concerned and w_j = max over output rows of |W[o, j]|.
 *
 * Which factor each linear gets (the reference's reuse rules):
 *   RTN      none (s = 1 everywhere)
 *   SQ       q,k,v share one factor from R^all at their input and w over
 *            the concatenated q,k,v; gate,up likewise; o and down: s = 1
 *   MAS      per modality m: q from R^m and q's own w; k, v reuse q's;
 *            o from its own input and weight; up likewise; gate reuses up's;
 *            down: s = 1 (quantized, never smoothed)
 *   MAS-CMC  MAS's factors; the stored weight is Q(W diag(s_text)) and
 *            vision/audio tokens add (x / s_m) L1 L2 (core/cmc.h)
 *   USQ      the reference's own unified baseline (not SmoothQuant's): one
 *            factor for every token from R^all, with the weight maxima of q
 *            (for q, k, v), o's own and up's (for gate, up); o is smoothed
 *            too; down: s = 1
 *
 * MAS, MAS-CMC and USQ learn (core/learn.h): the closed form is where
 * training starts; with epochs 0 it is what is used.  USQ learned is the
 * paper's "uniform + opt" row.
 */
#ifndef MASQ_SMOOTH_H
#define MASQ_SMOOTH_H

#include "core/calib.h"
#include "core/model.h"

#define SMOOTH_CLAMP 1e-5f

enum method { METHOD_RTN, METHOD_SQ, METHOD_MAS, METHOD_MAS_CMC, METHOD_USQ, METHOD_COUNT };
/* "rtn", "sq", "mas", "mas-cmc", "usq" */
const char *method_name(int m);
/* Parse a method name; -1 when unknown. */
int method_parse(const char *s);
/* 1 for the methods whose factors are learned when epochs > 0. */
int method_learns(int m);
/* 1 for the methods with one factor per modality (MAS, MAS-CMC). */
int method_per_modality(int m);

/* Smoothing groups: the linears that share an input (and, in SQ, a factor);
 * numbered like the engine's sites (SITE_QKV, SITE_O, SITE_GATEUP). */
enum smooth_group { GRP_QKV, GRP_O, GRP_GATEUP, GRP_COUNT };
const char *smooth_group_name(int g);
/* The group of linear lin, or -1 for down_proj. */
int smooth_lin_group(int lin);

/* Alpha rows: one per modality and one for the unified (SQ) factor. */
#define ALPHA_UNIFIED MOD_COUNT
#define ALPHA_ROWS (MOD_COUNT + 1)

/* What the user chose for one layer. */
typedef struct layer_setting {
	int method;				/* enum method */
	float alpha[GRP_COUNT][ALPHA_ROWS];	/* migration strength per group, per modality (+ unified) */
	double rank[LIN_COUNT];			/* CMC rank: ratio <= 1 of min(in,out), or absolute; 0 = none */
	int rank_floor;				/* minimum rank when rank is a ratio */
	/* learning (methods that learn; core/learn.h) */
	int epochs;				/* passes over the calibration set; 0: the closed form */
	float lr;				/* AdamW learning rate */
	int loss;				/* enum learn_loss: 0 MAE, 1 MSE */
	float lambda[MOD_COUNT];		/* MAE weight of each modality's tokens */
	int tie;				/* k, v and gate train with q's and up's factors */
} layer_setting;

/* Is learning asked for (a method that learns, epochs > 0)? */
int setting_learns(const layer_setting *ls);
/* Do a and b ask for the same learned factors (method, alpha, learning)? */
int setting_same_learning(const layer_setting *a, const layer_setting *b);

/* Fill ls with method, one alpha everywhere, one rank for every linear. */
void layer_setting_init(layer_setting *ls, int method, float alpha, double rank, int rank_floor);

/*
 * Typed settings, with the ranges every front end shares (the command
 * line, the workbench, a session restored from its database): each
 * returns -1 with err naming the value ("alpha must be in [0, 1], not 2");
 * the caller prefixes what the user did.
 */
#define SETTING_RANK_MAX 1e6	/* the largest absolute rank accepted */
int setting_check_alpha(double v, masq_err *err);
/* 0 (no compensation), a ratio in (0, 1] of min(in, out), or a whole rank. */
int setting_check_rank(double v, masq_err *err);
/* 2 to 8, or 16 for not quantized. */
int setting_check_bits(int wbits, int abits, masq_err *err);
/* Alpha of group grp (-1: every group) and alpha row row (-1: every row). */
int setting_set_alpha(layer_setting *ls, int grp, int row, double v, masq_err *err);
/* Rank of linear lin; down_proj takes none. */
int setting_set_rank(layer_setting *ls, int lin, double v, masq_err *err);
int setting_set_method(layer_setting *ls, int method, masq_err *err);
#define SETTING_EPOCHS_MAX 10000
int setting_check_epochs(int v, masq_err *err);
/* (0, 10], finite */
int setting_check_lr(double v, masq_err *err);
/* each >= 0 and finite, not all 0 */
int setting_check_lambda(const float lambda[MOD_COUNT], masq_err *err);
/* "TEXT,VISION,AUDIO" loss weights, checked. */
int setting_parse_lambda(const char *t, float lambda[MOD_COUNT], masq_err *err);
/* Learning settings with their checks (loss: 0 MAE, 1 MSE). */
int setting_set_learning(layer_setting *ls, int epochs, double lr, int loss, const float lambda[MOD_COUNT],
    int tie, masq_err *err);

/* s (d) from statistic R (d) and weight column maxima w (d). */
void smooth_factors(float *s, const float *R, const float *w, int d, float alpha);
/* Plain reference of smooth_factors (double pow). */
void smooth_factors_ref(float *s, const float *R, const float *w, int d, float alpha);
/* w (in) = max(w, max over rows of |W[o, j]|) for W (out, in); w must be
 * initialised (zeros) by the caller, so groups can be accumulated. */
void smooth_col_absmax(float *w, const float *W, int out, int in);

#endif
