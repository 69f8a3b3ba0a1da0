/*
 * metrics.h: how far a quantized output is from the full-precision one.
 *
 * SQNR of token t: 10 log10(mean y_t^2 / max(mean (y_t - y^_t)^2,
 * METRICS_NOISE_FLOOR)), as the reference's compute_sqnr_per_token floors
 * the mean squared error; a modality's figure is the mean over its tokens,
 * in dB.  masq 0.1 floored the sum of squares instead (a cap 10 log10 d
 * higher: 99 to 108 dB for a lossless layer); sessions it recorded keep that
 * floor when they replay (METRICS_FLOOR_SUM).  MAE is the mean |y - y^| over a modality's
 * elements.  KL is the mean over text positions of KL(p_fp || p_q) of the
 * next-token distributions.
 */
#ifndef MASQ_METRICS_H
#define MASQ_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/calib.h"

#define METRICS_NOISE_FLOOR 1e-5

enum metrics_floor { METRICS_FLOOR_SUM, METRICS_FLOOR_MEAN };

/* Running per-modality sums; metrics_acc_init (the floor on the mean). */
typedef struct metrics_acc {
	int floor;			/* enum metrics_floor */
	double sqnr_sum[MOD_COUNT + 1];	/* sum of per-token SQNR (dB); [MOD_COUNT] = all tokens */
	double abs_sum[MOD_COUNT + 1];	/* sum of |y - y^| */
	double elems[MOD_COUNT + 1];	/* elements seen */
	int64_t tokens[MOD_COUNT + 1];	/* tokens seen */
} metrics_acc;

void metrics_acc_init(metrics_acc *a);
/* The same with the floor given (a session recorded by masq 0.1: SUM). */
void metrics_acc_init_floor(metrics_acc *a, int floor);
/* Add n tokens of width d: ref and got (n, d), modality (n) or NULL (all text). */
void metrics_acc_add(metrics_acc *a, const float *ref, const float *got, const uint8_t *modality,
    int n, int d);
/* Mean SQNR (dB) of modality m (MOD_COUNT: all tokens); NAN when no tokens. */
double metrics_sqnr(const metrics_acc *a, int m);
/* MAE of modality m; NAN when no tokens. */
double metrics_mae(const metrics_acc *a, int m);

/* SQNR (dB) of one token of width d. */
double metrics_sqnr_token(const float *ref, const float *got, int d);

/* Mean KL(softmax(ref) || softmax(got)) over the n rows (n, v) of logits. */
double metrics_kl_rows(const float *ref_logits, const float *got_logits, int n, int v);
/* Their sum (0 for no rows), which several processes add up. */
double metrics_kl_rows_sum(const float *ref_logits, const float *got_logits, int n, int v);

/* How far b (n) is from a (n), two ways: *elem the largest
 * |a_i - b_i| / (max(|a_i|, |b_i|) + floor) (its index in *at, if not
 * NULL), *fro the relative Frobenius distance ||a - b|| / ||a|| (0 when
 * both are zero, INFINITY when only a is).  Replay compares recomputed
 * arrays with recorded ones this way. */
void metrics_rel_diff(const float *a, const float *b, size_t n, double floor, double *elem, double *fro,
    size_t *at);

#endif
