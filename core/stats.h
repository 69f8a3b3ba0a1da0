/*
 * stats.h: per-modality activation statistics at one linear-input site,
 * collected during the full-precision forward (the engine's observe hook).
 *
 * For each modality (text, vision, audio) and for all tokens together:
 * token count, per-channel max|x| (R^m, the SmoothQuant statistic),
 * per-channel mean|x|, and a histogram of log2|x| with fixed bin edges.
 * For the modalities asked for, the Gram matrix X^T X in double (CMC's
 * whitening), and a seeded reservoir sample of token rows (fast
 * re-evaluation).  Misalignment figures are derived from R^m.
 *
 *	site_stats s;
 *	stats_site_init(&s, d, STATS_GRAM_VISION | STATS_GRAM_AUDIO, 256);
 *	stats_site_add(&s, x, modality, n, &rng);     // per batch, any number
 *	stats_misalign(&s, &mis);
 *	stats_site_done(&s);
 */
#ifndef MASQ_STATS_H
#define MASQ_STATS_H

#include <stdint.h>

#include "core/calib.h"
#include "core/rng.h"

/* Index of "all tokens" in the per-modality arrays. */
#define STATS_ALL MOD_COUNT
#define STATS_ROWS (MOD_COUNT + 1)

/* Histogram of log2|x|: bin 0 holds |x| < 2^STATS_HIST_LO (zeros
 * included), bins 1..STATS_HIST_BINS-2 are STATS_HIST_STEP wide from
 * STATS_HIST_LO, the last bin holds everything from the top edge up. */
#define STATS_HIST_BINS 64
#define STATS_HIST_LO (-16.0)
#define STATS_HIST_STEP 0.5
/* log2 lower edge of bin b (b >= 1). */
double stats_hist_edge(int b);
/* Bin of a value. */
int stats_hist_bin(float x);

enum {
	STATS_GRAM_TEXT = 1 << MOD_TEXT,
	STATS_GRAM_VISION = 1 << MOD_VISION,
	STATS_GRAM_AUDIO = 1 << MOD_AUDIO
};

typedef struct site_stats {
	int d;			/* channels */
	int64_t count[STATS_ROWS];	/* tokens per modality, [STATS_ALL] = all */
	float *absmax;		/* (STATS_ROWS, d) per-channel max|x| */
	double *abssum;		/* (STATS_ROWS, d) per-channel sum |x| */
	uint64_t *hist;		/* (STATS_ROWS, STATS_HIST_BINS) */
	int gram_mask;		/* STATS_GRAM_* bits */
	double *gram[MOD_COUNT];	/* (d, d) row-major, full symmetric, or (gram_packed[m]) its upper
					   triangle row by row, d (d + 1) / 2, or NULL */
	uint8_t gram_packed[MOD_COUNT];
	int sample_cap;		/* reservoir size per modality */
	int sample_n[MOD_COUNT];	/* rows held */
	int64_t sample_seen[MOD_COUNT];	/* rows offered */
	float *sample[MOD_COUNT];	/* (sample_cap, d) */
	int32_t *sample_tok[MOD_COUNT];	/* (sample_cap) global token index of each row */
	int64_t tok_base;	/* token index of the next batch's first row */
	/* a sharded run's reservoir, drawn before the rows come
	 * (stats_reservoir_plan): the slot of each of this rank's rows, or -1 */
	int32_t *plan_slot;	/* (plan_n) or NULL: the reservoir draws as rows come */
	int64_t plan_lo, plan_n;	/* token index of this rank's first row, its rows */
} site_stats;

void stats_site_init(site_stats *s, int d, int gram_mask, int sample_cap);
void stats_site_done(site_stats *s);
/* Add n rows x (n, d) with their modalities; g drives the reservoir.  Rows
 * are numbered consecutively across calls (sample_tok). */
void stats_site_add(site_stats *s, const float *x, const uint8_t *modality, int n, rng *g);
/* The reservoir of one rank of several, before any row is added: draw
 * from g what one process offered all n_all tokens in order (modality, with
 * MOD_SKIP for held-out ones) would draw, so that sample_n, sample_seen,
 * sample_tok and g end as they would there; this rank holds tokens lo ..
 * lo + n - 1 and will add exactly those.  The rows it does not hold are
 * -0.0, for dist_merge_f32. */
void stats_reservoir_plan(site_stats *s, const uint8_t *modality, int64_t n_all, int64_t lo, int64_t n,
    rng *g);
/* Every full Gram matrix of s into its packed upper triangle, in place
 * (half the memory while it waits for its basis; no row may be added
 * after).  The values are copied, not recomputed. */
void stats_gram_pack(site_stats *s);
/* Modality m's Gram matrix full symmetric again, in place (a no-op when it
 * is full or NULL): the very values it had before stats_gram_pack. */
void stats_gram_unpack(site_stats *s, int m);
/* Plain reference of the max / sum / histogram / Gram part (no reservoir). */
void stats_site_add_ref(site_stats *s, const float *x, const uint8_t *modality, int n);

/* Per-channel mean |x| of modality m (STATS_ALL: all), into out (d). */
void stats_mean_abs(const site_stats *s, int m, float *out);
/* Over the channels of modality m (STATS_ALL: all): the largest per-channel
 * max|x| and the median of them (the upper median for an even count); 0
 * when m has no tokens. */
void stats_channel_range(const site_stats *s, int m, float *max, float *median);

/* Smoothing misalignment at one site (paper section 4.1). */
typedef struct misalign {
	int present[MOD_COUNT];		/* modality has tokens here */
	double dominant_share[MOD_COUNT];	/* share of channels whose largest R^m is m's */
	/* Quantiles of R^dom / R^m over channels where m is not dominant,
	 * for each modality m: 50%, 90%, 99%, max. */
	double ratio_q[MOD_COUNT][4];
	/* Histogram of log2(R^all / R^m) per modality: bins of 0.5 from 0. */
	int ratio_hist[MOD_COUNT][16];
	/* Theorem 1: predicted SQNR loss (dB) of the unified factor for m:
	 * 10 log10(d / ((min a)^2 sum a^-2)), a_i = R^all_i / R^m_i. */
	double thm1_loss_db[MOD_COUNT];
} misalign;

void stats_misalign(const site_stats *s, misalign *out);

#endif
