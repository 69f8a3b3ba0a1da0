#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/blas.h"
#include "core/stats.h"
#include "core/util.h"

/* Rows gathered per cblas_dsyrk call. */
#define GRAM_CHUNK 256
/* Clamp applied to every statistic before it is divided by (as the reference). */
#define STAT_FLOOR 1e-5f

/* The bit-level bin below is written for half-octave bins starting at an
 * integer power of two; stats_site_init checks that the macros still say so. */
#define HIST_LO_BITS ((uint32_t)(127 + (int)STATS_HIST_LO) << 23)
/* Mantissa bits of the smallest float >= sqrt(2) (0x3fb504f4 = 1.41421366). */
#define HIST_SQRT2_MANT 0x3504f4u

double
stats_hist_edge(int b)
{
	return STATS_HIST_LO + (b - 1) * STATS_HIST_STEP;
}

/* Bin of x from its bits: the octave is the exponent, the half octave is
 * whether the mantissa reaches sqrt(2).  Equal to hist_bin_ref for every
 * float: powers of two have exact log2, and the floats nearest 2^(k+1/2)
 * are at least 2.4e-8 away from it in log2, far beyond double log2's error. */
static inline int
hist_bin_fast(float x)
{
	uint32_t u;
	memcpy(&u, &x, 4);
	u &= 0x7fffffffu;
	if (u < HIST_LO_BITS)	/* zeros, subnormals, below 2^LO */
		return 0;
	/* bin = 2 log2|x| - 2 LO + 1, in half octaves; NaN and inf have
	 * exponent 255 and land in the last bin. */
	int b = 2 * (int)(u >> 23) - 2 * 127 - 2 * (int)STATS_HIST_LO + 1 +
	    ((u & 0x7fffffu) >= HIST_SQRT2_MANT);
	return b < STATS_HIST_BINS - 1 ? b : STATS_HIST_BINS - 1;
}

int
stats_hist_bin(float x)
{
	return hist_bin_fast(x);
}

/* The definition, written plainly: log2 in double, zeros and |x| < 2^LO in
 * bin 0, NaN and everything from the top edge up in the last bin. */
static int
hist_bin_ref(float x)
{
	double a = fabs((double)x);

	if (isnan(a))
		return STATS_HIST_BINS - 1;
	if (a < exp2(STATS_HIST_LO))
		return 0;
	double b = floor((log2(a) - STATS_HIST_LO) / STATS_HIST_STEP) + 1;
	if (b > STATS_HIST_BINS - 1)
		return STATS_HIST_BINS - 1;
	return (int)b;
}

/* Allocate zeroed statistics for d channels; Gram matrices for the
 * modalities in gram_mask, reservoirs of sample_cap rows per modality. */
void
stats_site_init(site_stats *s, int d, int gram_mask, int sample_cap)
{
	MASQ_ASSERT(d > 0 && sample_cap >= 0);
	MASQ_ASSERT((gram_mask & ~((1 << MOD_COUNT) - 1)) == 0);
	/* hist_bin_fast's assumptions about the bin layout. */
	MASQ_ASSERT(STATS_HIST_STEP == 0.5 && STATS_HIST_LO == floor(STATS_HIST_LO) &&
	    STATS_HIST_LO > -126 && STATS_HIST_LO < 127);

	memset(s, 0, sizeof *s);
	s->d = d;
	s->absmax = xcalloc(xmul(STATS_ROWS, (size_t)d), sizeof *s->absmax);
	s->abssum = xcalloc(xmul(STATS_ROWS, (size_t)d), sizeof *s->abssum);
	s->hist = xcalloc(STATS_ROWS * STATS_HIST_BINS, sizeof *s->hist);
	s->gram_mask = gram_mask;
	s->sample_cap = sample_cap;
	for (int m = 0; m < MOD_COUNT; m++) {
		if (gram_mask & (1 << m))
			s->gram[m] = xcalloc(xmul((size_t)d, (size_t)d), sizeof *s->gram[m]);
		if (sample_cap > 0) {
			s->sample[m] = xcalloc(xmul((size_t)sample_cap, (size_t)d), sizeof *s->sample[m]);
			s->sample_tok[m] = xcalloc((size_t)sample_cap, sizeof *s->sample_tok[m]);
		}
	}
}

/* Free everything stats_site_init allocated and zero the struct. */
void
stats_site_done(site_stats *s)
{
	free(s->absmax);
	free(s->abssum);
	free(s->hist);
	for (int m = 0; m < MOD_COUNT; m++) {
		free(s->gram[m]);
		free(s->sample[m]);
		free(s->sample_tok[m]);
	}
	free(s->plan_slot);
	memset(s, 0, sizeof *s);
}

/* Copy the upper triangle of the (d, d) row-major g into its lower one,
 * in tiles so both sides stay in cache. */
static void
gram_mirror(double *g, int d)
{
	enum { T = 64 };

	for (int ib = 0; ib < d; ib += T)
		for (int jb = 0; jb <= ib; jb += T) {
			int ie = ib + T < d ? ib + T : d, je = jb + T < d ? jb + T : d;
			for (int i = ib; i < ie; i++)
				for (int j = jb; j < je && j < i; j++)
					g[(size_t)i * d + j] = g[(size_t)j * d + i];
		}
}

/* Accumulate the k gathered rows a (k, d) into the upper triangle of g. */
static void
gram_flush(double *g, const double *a, int k, int d)
{
	if (k > 0)
		cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, k, 1.0, a, d, 1.0, g, d);
}

/* Offer row r (d) with global token index tok to modality m's reservoir
 * (Algorithm R: keep the first cap rows, then replace a uniform slot with
 * probability cap / seen, one rng draw per row once full). */
/* Algorithm R's draw for the next row of modality m: the slot it takes,
 * or -1 (one rng draw once the reservoir is full). */
static int
reservoir_slot(site_stats *s, int m, rng *g)
{
	int slot;
	if (s->sample_n[m] < s->sample_cap) {
		slot = s->sample_n[m]++;
	} else {
		uint64_t k = rng_below(g, (uint64_t)s->sample_seen[m] + 1);
		slot = k < (uint64_t)s->sample_cap ? (int)k : -1;
	}
	s->sample_seen[m]++;
	return slot;
}

static void
reservoir_offer(site_stats *s, int m, const float *r, int64_t tok, rng *g)
{
	int d = s->d, slot;

	MASQ_ASSERT(tok <= INT32_MAX);
	slot = reservoir_slot(s, m, g);
	if (slot >= 0) {
		memcpy(s->sample[m] + (size_t)slot * d, r, (size_t)d * sizeof *r);
		s->sample_tok[m][slot] = (int32_t)tok;
	}
}

void
stats_reservoir_plan(site_stats *s, const uint8_t *modality, int64_t n_all, int64_t lo, int64_t n, rng *g)
{
	MASQ_ASSERT(s->tok_base == 0 && s->count[STATS_ALL] == 0 && s->plan_slot == NULL);
	MASQ_ASSERT(lo >= 0 && n >= 0 && lo + n <= n_all && n_all <= INT32_MAX);
	s->tok_base = lo;
	if (s->sample_cap == 0)
		return;
	/* reservoir_offer's draws, without the rows */
	for (int64_t t = 0; t < n_all; t++) {
		int m = modality[t], slot;
		if (m == MOD_SKIP)
			continue;
		MASQ_ASSERT(m < MOD_COUNT);
		slot = reservoir_slot(s, m, g);
		if (slot >= 0)
			s->sample_tok[m][slot] = (int32_t)t;
	}
	s->plan_slot = xmalloc(xmul((size_t)n + 1, sizeof *s->plan_slot));
	for (int64_t i = 0; i < n; i++)
		s->plan_slot[i] = -1;
	for (int m = 0; m < MOD_COUNT; m++)
		for (int j = 0; j < s->sample_n[m]; j++) {
			int64_t t = s->sample_tok[m][j];
			for (int c = 0; c < s->d; c++)
				s->sample[m][(size_t)j * s->d + c] = -0.0f;
			if (t >= lo && t < lo + n)
				s->plan_slot[t - lo] = j;
		}
	s->plan_lo = lo;
	s->plan_n = n;
}

/* Add n rows x (n, d) of the given modalities: absmax, abssum and
 * histograms per modality and for all, Gram matrices (dsyrk in chunks of
 * GRAM_CHUNK rows, mirrored to full symmetric before returning), reservoir
 * samples drawn from g (g may be NULL when sample_cap is 0). */
void
stats_site_add(site_stats *s, const float *x, const uint8_t *modality, int n, rng *g)
{
	int d = s->d;
	uint64_t h[MOD_COUNT][STATS_HIST_BINS];	/* this call's histograms */
	int64_t cnt[MOD_COUNT] = {0};
	double *buf[MOD_COUNT] = {NULL};	/* (min(n, GRAM_CHUNK), d) gathered rows */
	int nbuf[MOD_COUNT] = {0};
	float *mx_all = s->absmax + (size_t)STATS_ALL * d;
	double *sm_all = s->abssum + (size_t)STATS_ALL * d;

	MASQ_ASSERT(n >= 0);
	MASQ_ASSERT(s->sample_cap == 0 || g != NULL);
	for (int m = 0; m < MOD_COUNT; m++)
		MASQ_ASSERT(!s->gram_packed[m]);	/* stats_gram_pack: no rows after */
	memset(h, 0, sizeof h);

	for (int i = 0; i < n; i++) {
		const float *r = x + (size_t)i * d;
		int m = modality[i];

		if (m == MOD_SKIP)
			continue;	/* held out: in no statistic */
		MASQ_ASSERT(m < MOD_COUNT);
		cnt[m]++;
		float *mx = s->absmax + (size_t)m * d;
		double *sm = s->abssum + (size_t)m * d;
		uint64_t *hm = h[m];
		for (int j = 0; j < d; j++) {
			float a = fabsf(r[j]);
			mx[j] = a > mx[j] ? a : mx[j];
			sm[j] += a;
			sm_all[j] += a;
			hm[hist_bin_fast(r[j])]++;
		}
		if (s->gram[m] != NULL) {
			if (buf[m] == NULL)
				buf[m] = xmalloc(xmul(xmul(n < GRAM_CHUNK ? (size_t)n : GRAM_CHUNK,
				    (size_t)d), sizeof(double)));
			double *dst = buf[m] + (size_t)nbuf[m] * d;
			for (int j = 0; j < d; j++)
				dst[j] = r[j];
			if (++nbuf[m] == GRAM_CHUNK) {
				gram_flush(s->gram[m], buf[m], nbuf[m], d);
				nbuf[m] = 0;
			}
		}
		if (s->plan_slot != NULL) {
			int64_t t = s->tok_base + i - s->plan_lo;
			MASQ_ASSERT(t >= 0 && t < s->plan_n);
			if (s->plan_slot[t] >= 0)
				memcpy(s->sample[m] + (size_t)s->plan_slot[t] * d, r, (size_t)d * sizeof *r);
		} else if (s->sample_cap > 0) {
			reservoir_offer(s, m, r, s->tok_base + i, g);
		}
	}

	for (int m = 0; m < MOD_COUNT; m++) {
		if (buf[m] != NULL) {
			gram_flush(s->gram[m], buf[m], nbuf[m], d);
			free(buf[m]);
			gram_mirror(s->gram[m], d);
		}
		if (cnt[m] == 0)
			continue;
		const float *mx = s->absmax + (size_t)m * d;
		for (int j = 0; j < d; j++)
			mx_all[j] = mx[j] > mx_all[j] ? mx[j] : mx_all[j];
		for (int b = 0; b < STATS_HIST_BINS; b++) {
			s->hist[m * STATS_HIST_BINS + b] += h[m][b];
			s->hist[STATS_ALL * STATS_HIST_BINS + b] += h[m][b];
		}
		s->count[m] += cnt[m];
		s->count[STATS_ALL] += cnt[m];
	}
	s->tok_base += n;
}

void
stats_gram_pack(site_stats *s)
{
	size_t d = (size_t)s->d;
	for (int m = 0; m < MOD_COUNT; m++) {
		double *g = s->gram[m];
		if (g == NULL || s->gram_packed[m])
			continue;
		/* row i's j >= i part moves to i d - i (i - 1) / 2, never past
		 * where it is read from (i d + i): forward in one pass */
		for (size_t i = 1; i < d; i++)
			memmove(g + i * d - i * (i - 1) / 2, g + i * d + i, (d - i) * sizeof *g);
		double *r = realloc(g, xmul(d * (d + 1) / 2, sizeof *g));
		s->gram[m] = r != NULL ? r : g;	/* a failed shrink keeps the block */
		s->gram_packed[m] = 1;
	}
}

void
stats_gram_unpack(site_stats *s, int m)
{
	size_t d = (size_t)s->d;
	MASQ_ASSERT(m >= 0 && m < MOD_COUNT);
	if (s->gram[m] == NULL || !s->gram_packed[m])
		return;
	double *g = xrealloc(s->gram[m], xmul(xmul(d, d), sizeof *g));
	/* the rows back to i d + i, last row first (each moves up) */
	for (size_t i = d; i-- > 1;)
		memmove(g + i * d + i, g + i * d - i * (i - 1) / 2, (d - i) * sizeof *g);
	gram_mirror(g, (int)d);
	s->gram[m] = g;
	s->gram_packed[m] = 0;
}

/* Reference of stats_site_add without the reservoir: scalar loops, log2
 * per element, Gram by a triple loop over the full matrix in double. */
void
stats_site_add_ref(site_stats *s, const float *x, const uint8_t *modality, int n)
{
	int d = s->d;

	for (int i = 0; i < n; i++) {
		const float *r = x + (size_t)i * d;
		int m = modality[i];

		if (m == MOD_SKIP)
			continue;
		MASQ_ASSERT(m < MOD_COUNT);
		int rows[2] = {m, STATS_ALL};
		for (int k = 0; k < 2; k++) {
			float *mx = s->absmax + (size_t)rows[k] * d;
			double *sm = s->abssum + (size_t)rows[k] * d;
			uint64_t *hm = s->hist + rows[k] * STATS_HIST_BINS;
			for (int j = 0; j < d; j++) {
				float a = fabsf(r[j]);
				if (a > mx[j])
					mx[j] = a;
				sm[j] += a;
				hm[hist_bin_ref(r[j])]++;
			}
			s->count[rows[k]]++;
		}
		if (s->gram[m] != NULL)
			for (int j = 0; j < d; j++)
				for (int k = 0; k < d; k++)
					s->gram[m][(size_t)j * d + k] += (double)r[j] * (double)r[k];
	}
	s->tok_base += n;
}

/* out (d) = abssum / count of row m (0 when it has no tokens). */
void
stats_mean_abs(const site_stats *s, int m, float *out)
{
	MASQ_ASSERT(m >= 0 && m < STATS_ROWS);
	int64_t c = s->count[m];
	const double *sm = s->abssum + (size_t)m * s->d;

	for (int j = 0; j < s->d; j++)
		out[j] = c > 0 ? (float)(sm[j] / (double)c) : 0.0f;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Quantile p of the sorted v (n > 0), linear between order statistics
 * (numpy's default: position p (n - 1)). */
static double
quantile_sorted(const double *v, int n, double p)
{
	double pos = p * (n - 1);
	int lo = (int)floor(pos);

	if (lo >= n - 1)
		return v[n - 1];
	return v[lo] + (pos - lo) * (v[lo + 1] - v[lo]);
}

/* Range clamped as the reference clamps statistics. */
static inline double
range_at(const site_stats *s, int m, int i)
{
	float r = s->absmax[(size_t)m * s->d + i];
	return r > STAT_FLOOR ? r : STAT_FLOOR;
}

/* Misalignment figures of a site from its ranges R^m = max|x| per channel
 * (clamped at 1e-5): dominant modality per channel among the present ones
 * (ties to the lowest index), range ratios to the dominant one, the
 * histogram of log2(R^all / R^m) and Theorem 1's predicted loss. */
void
stats_misalign(const site_stats *s, misalign *out)
{
	static const double qs[4] = {0.50, 0.90, 0.99, 1.0};
	int d = s->d;
	int nd[MOD_COUNT] = {0}, any = 0;

	memset(out, 0, sizeof *out);
	for (int m = 0; m < MOD_COUNT; m++) {
		out->present[m] = s->count[m] > 0;
		any |= out->present[m];
	}
	if (!any)
		return;

	int *dom = xmalloc(xmul((size_t)d, sizeof *dom));	/* (d) dominant modality */
	double *ratio = xmalloc(xmul((size_t)d, sizeof *ratio));	/* (d) scratch */
	for (int i = 0; i < d; i++) {
		int best = -1;
		for (int m = 0; m < MOD_COUNT; m++)
			if (out->present[m] && (best < 0 || range_at(s, m, i) > range_at(s, best, i)))
				best = m;
		dom[i] = best;
		nd[best]++;
	}

	for (int m = 0; m < MOD_COUNT; m++) {
		if (!out->present[m])
			continue;
		out->dominant_share[m] = (double)nd[m] / d;

		/* R^dom / R^m over the channels m does not dominate. */
		int k = 0;
		for (int i = 0; i < d; i++)
			if (dom[i] != m)
				ratio[k++] = range_at(s, dom[i], i) / range_at(s, m, i);
		if (k == 0) {
			for (int q = 0; q < 4; q++)
				out->ratio_q[m][q] = 1.0;
		} else {
			qsort(ratio, (size_t)k, sizeof *ratio, cmp_double);
			for (int q = 0; q < 4; q++)
				out->ratio_q[m][q] = quantile_sorted(ratio, k, qs[q]);
		}

		/*
		 * Theorem 1 (paper eq. 16-20, as rebuilt in masquant-brief.md
		 * section 1.3): with uniform rounding error and a token made flat
		 * by m's own factors, SQNR(s, x) is proportional to
		 * sum_i (x_i / s_i)^2 / max_i (x_i / s_i)^2.  Per-modality
		 * factors give d; the unified factor s_i ~ R^all_i leaves
		 * x_i / s_i ~ 1 / a_i with a_i = R^all_i / R^m_i >= 1, so it gives
		 * (min_i a_i)^2 sum_i a_i^-2, and the loss is
		 *	10 log10(d / ((min_i a_i)^2 sum_i a_i^-2)) >= 0,
		 * zero iff all a_i are equal.  Rounding can push the argument a
		 * hair below 1; the loss is clamped at 0.
		 */
		double amin = INFINITY, suminv = 0;
		for (int i = 0; i < d; i++) {
			double a = range_at(s, STATS_ALL, i) / range_at(s, m, i);
			amin = a < amin ? a : amin;
			suminv += 1.0 / (a * a);

			/* log2(R^all / R^m) in bins of 0.5 from 0, the last open. */
			double l = log2(a);
			out->ratio_hist[m][l <= 0 ? 0 : l >= 15 * 0.5 ? 15 : (int)(l / 0.5)]++;
		}
		double loss = 10.0 * log10(d / (amin * amin * suminv));
		out->thm1_loss_db[m] = loss > 0 ? loss : 0.0;
	}
	free(dom);
	free(ratio);
}

static int
cmp_float_asc(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

void
stats_channel_range(const site_stats *s, int m, float *max, float *median)
{
	*max = *median = 0.0f;
	if (s->count[m] == 0)
		return;
	float *r = xmalloc(xmul((size_t)s->d, sizeof(float)));
	memcpy(r, s->absmax + (size_t)m * s->d, (size_t)s->d * sizeof(float));
	qsort(r, (size_t)s->d, sizeof(float), cmp_float_asc);
	*max = r[s->d - 1];
	*median = r[s->d / 2];
	free(r);
}
