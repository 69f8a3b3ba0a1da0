/*
 * test_stats: the per-site statistics.
 *   - histogram bins by hand at the edges (powers of two, the floats either
 *     side of 2^(k+1/2), the bottom and top edges), and against a log2
 *     definition for the floats around every edge;
 *   - stats_site_add against stats_site_add_ref: absmax, histograms and
 *     counts exactly, abssum and Gram within 1e-12 relative;
 *   - the reservoir: small sets kept whole and in order, large ones
 *     deterministic per seed, valid, and uniform over seeds;
 *   - misalignment figures on a case worked out by hand;
 *   - an independent numpy oracle for absmax, Gram and histogram.
 */
#include "config.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/stats.h"
#include "core/util.h"
#include "tests/tap.h"

static char workdir[600];

/* The histogram definition from stats.h, written independently. */
static int
bin_by_log2(float x)
{
	double a = fabs((double)x);

	if (isnan(a))
		return STATS_HIST_BINS - 1;
	if (a < exp2(STATS_HIST_LO))
		return 0;
	double b = floor((log2(a) - STATS_HIST_LO) / STATS_HIST_STEP) + 1;
	return b > STATS_HIST_BINS - 1 ? STATS_HIST_BINS - 1 : (int)b;
}

static float
from_bits(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static void
test_hist_edges(void)
{
	int bad = 0;

	tap_near(stats_hist_edge(1), STATS_HIST_LO, 0, "edge of bin 1 is 2^LO");
	tap_near(stats_hist_edge(STATS_HIST_BINS - 1), STATS_HIST_LO + (STATS_HIST_BINS - 2) * STATS_HIST_STEP, 0,
	    "the last bin starts at 2^(LO + (BINS-2) STEP)");

	tap_ok(stats_hist_bin(0.0f) == 0 && stats_hist_bin(-0.0f) == 0, "zeros go to bin 0");
	int lo = (int)STATS_HIST_LO, top = (int)(STATS_HIST_LO + (STATS_HIST_BINS - 2) * STATS_HIST_STEP);
	tap_ok(stats_hist_bin(ldexpf(1, lo)) == 1 && stats_hist_bin(-ldexpf(1, lo)) == 1,
	    "2^LO goes to bin 1");
	tap_ok(stats_hist_bin(nextafterf(ldexpf(1, lo), 0)) == 0 && stats_hist_bin(ldexpf(1, lo - 1)) == 0 &&
	    stats_hist_bin(1e-40f) == 0 && stats_hist_bin(FLT_MIN) == 0, "below 2^LO (and subnormals) go to bin 0");

	int b1 = stats_hist_bin(1.0f);
	tap_ok(stats_hist_edge(b1) == 0.0 && stats_hist_bin(-1.0f) == b1, "1.0 is in the bin whose lower edge is 2^0 (bin %d)", b1);
	tap_ok(stats_hist_bin(nextafterf(1.0f, 0)) == b1 - 1, "the float below 1.0 is one bin lower");
	/* sqrt(2) is not a float: sqrtf(2) = 0x3fb504f3 = 1.41421354 lies just
	 * below the edge 2^0.5, the next float 1.41421366 just above it. */
	float r2 = sqrtf(2.0f);
	tap_ok(stats_hist_bin(r2) == b1 && (double)r2 < 1.4142135623730951,
	    "sqrtf(2) (just below 2^0.5) stays in 1.0's bin");
	tap_ok(stats_hist_bin(nextafterf(r2, 2)) == b1 + 1 && stats_hist_edge(b1 + 1) == 0.5,
	    "the next float (just above 2^0.5) is in the bin with edge 2^0.5");
	tap_ok(stats_hist_bin(ldexpf(1, top)) == STATS_HIST_BINS - 1 &&
	    stats_hist_bin(nextafterf(ldexpf(1, top), 0)) == STATS_HIST_BINS - 2, "the top edge");
	tap_ok(stats_hist_bin(ldexpf(1, 20)) == STATS_HIST_BINS - 1 && stats_hist_bin(1e30f) == STATS_HIST_BINS - 1 &&
	    stats_hist_bin(-FLT_MAX) == STATS_HIST_BINS - 1 && stats_hist_bin(INFINITY) == STATS_HIST_BINS - 1,
	    "2^20 and above go to the last bin");
	tap_ok(stats_hist_bin(NAN) == STATS_HIST_BINS - 1 && stats_hist_bin(-NAN) == STATS_HIST_BINS - 1,
	    "NaN goes to the last bin");

	/* Every power of two and the floats either side of 2^(k+1/2), k over
	 * the whole float range, plus 5 ulps around each. */
	for (int k = -149; k < 128; k++)
		for (int half = 0; half < 2; half++) {
			float c = (float)exp2(k + 0.5 * half);
			if (isinf(c) || c == 0)
				continue;
			uint32_t u;
			memcpy(&u, &c, 4);
			for (int dlt = -5; dlt <= 5; dlt++) {
				float f = from_bits(u + (uint32_t)dlt);
				if (stats_hist_bin(f) != bin_by_log2(f) || stats_hist_bin(-f) != bin_by_log2(-f)) {
					if (bad++ < 5)
						tap_diag("bin(%a) = %d, log2 definition %d", f, stats_hist_bin(f), bin_by_log2(f));
				}
			}
		}
	/* And a random sweep of the bit patterns. */
	rng g;
	rng_init(&g, 7);
	for (int i = 0; i < 200000; i++) {
		float f = from_bits((uint32_t)rng_next(&g));
		if (stats_hist_bin(f) != bin_by_log2(f) && bad++ < 5)
			tap_diag("bin(%a) = %d, log2 definition %d", f, stats_hist_bin(f), bin_by_log2(f));
	}
	tap_ok(bad == 0, "stats_hist_bin equals the log2 definition around every edge and on random floats");
}

/* A value of mixed scale, with exact bin edges, zeros, tiny and huge ones. */
static float
value_draw(rng *g)
{
	static const float fixed[] = {0.0f, -0.0f, 1e-40f, FLT_MIN, 1e30f, -3e38f, 0x1p-20f, -0x1p-20f,
		0x1.fffffep-21f, 0x1p11f, 0x1.fffffep10f, 1.0f, 0x1.6a09e6p0f, 0x1.6a09e8p0f};
	uint64_t k = rng_below(g, 100);

	if (k < 8)
		return fixed[rng_below(g, sizeof fixed / sizeof fixed[0])];
	if (k < 16)	/* a power of two */
		return ldexpf(rng_below(g, 2) ? 1.0f : -1.0f, (int)rng_below(g, 60) - 30);
	if (k < 22) {	/* the floats either side of 2^(j+1/2) */
		float f = ldexpf(0x1.6a09e6p0f, (int)rng_below(g, 50) - 25);
		return rng_below(g, 2) ? f : nextafterf(f, INFINITY);
	}
	return (float)(rng_normal(g) * exp2((double)rng_below(g, 40) - 20));
}

/* n rows of d values with random modalities (or all `only` when >= 0);
 * every 17th row is zero. */
static void
data_fill(float *x, uint8_t *mod, int n, int d, int only, rng *g)
{
	for (int i = 0; i < n; i++) {
		mod[i] = (uint8_t)(only >= 0 ? only : (int)rng_below(g, MOD_COUNT));
		for (int j = 0; j < d; j++)
			x[(size_t)i * d + j] = i % 17 == 5 ? 0.0f : value_draw(g);
	}
}

static void
test_fast_ref(int d, int gram_mask)
{
	/* A batch with more than GRAM_CHUNK (256) rows of one modality, one
	 * of a single row, an empty one, and a mixed one. */
	static const int sizes[] = {300, 1, 0, 611};
	static const int only[] = {-1, MOD_AUDIO, -1, -1};
	site_stats f, r;
	rng g, gs;
	int ok_max = 1, ok_hist = 1, ok_cnt = 1, ok_sum = 1, ok_gram = 1, ok_sym = 1;

	rng_init(&g, 1000 + (uint64_t)d);
	rng_init(&gs, 5);
	stats_site_init(&f, d, gram_mask, 8);
	stats_site_init(&r, d, gram_mask, 0);
	for (size_t bi = 0; bi < sizeof sizes / sizeof sizes[0]; bi++) {
		int n = sizes[bi];
		float *x = xmalloc(xmul((size_t)(n + 1) * d, sizeof *x));
		uint8_t *mod = xmalloc((size_t)n + 1);
		data_fill(x, mod, n, d, only[bi], &g);
		if (bi == 3)	/* mostly vision: > 256 rows in one call */
			for (int i = 0; i < n; i++)
				mod[i] = i % 5 == 0 ? (uint8_t)(i % 3) : MOD_VISION;
		stats_site_add(&f, x, mod, n, &gs);
		stats_site_add_ref(&r, x, mod, n);
		free(x);
		free(mod);
	}

	for (int m = 0; m < STATS_ROWS; m++)
		ok_cnt &= f.count[m] == r.count[m];
	ok_cnt &= f.count[STATS_ALL] == 912 && f.tok_base == 912 && r.tok_base == 912;
	for (size_t i = 0; i < (size_t)STATS_ROWS * d; i++) {
		ok_max &= memcmp(&f.absmax[i], &r.absmax[i], sizeof(float)) == 0;
		ok_sum &= fabs(f.abssum[i] - r.abssum[i]) <= 1e-12 * fabs(r.abssum[i]);
	}
	for (int i = 0; i < STATS_ROWS * STATS_HIST_BINS; i++)
		ok_hist &= f.hist[i] == r.hist[i];
	uint64_t tot = 0;
	for (int b = 0; b < STATS_HIST_BINS; b++)
		tot += f.hist[STATS_ALL * STATS_HIST_BINS + b];
	ok_hist &= tot == (uint64_t)912 * d;

	for (int m = 0; m < MOD_COUNT; m++) {
		if (!(gram_mask & (1 << m))) {
			ok_gram &= f.gram[m] == NULL;
			continue;
		}
		const double *gf = f.gram[m], *gr = r.gram[m];
		for (int i = 0; i < d; i++)
			for (int j = 0; j < d; j++) {
				double want = gr[(size_t)i * d + j], got = gf[(size_t)i * d + j];
				double tol = 1e-12 * sqrt(gr[(size_t)i * d + i]) * sqrt(gr[(size_t)j * d + j]);
				if (!(fabs(got - want) <= tol)) {
					if (ok_gram)
						tap_diag("gram[%d][%d][%d] = %.17g, reference %.17g", m, i, j, got, want);
					ok_gram = 0;
				}
				ok_sym &= got == gf[(size_t)j * d + i];
			}
	}
	tap_ok(ok_cnt, "d=%d: counts and token numbering equal the reference", d);
	tap_ok(ok_max, "d=%d: absmax equals the reference exactly", d);
	tap_ok(ok_hist, "d=%d: histograms equal the reference exactly (and hold every value)", d);
	tap_ok(ok_sum, "d=%d: abssum within 1e-12 relative", d);
	tap_ok(ok_gram, "d=%d: Gram (mask %d) within 1e-12 of sqrt(G_ii G_jj)", d, gram_mask);
	tap_ok(ok_sym, "d=%d: Gram is full symmetric", d);
	stats_site_done(&f);
	stats_site_done(&r);
}

/* Fill sample buffers from the given rows in calls of the given sizes. */
static void
reservoir_run(site_stats *s, const float *x, const uint8_t *mod, const int *calls, int ncalls, uint64_t seed)
{
	rng g;
	int off = 0;

	rng_init(&g, seed);
	for (int c = 0; c < ncalls; c++) {
		stats_site_add(s, x + (size_t)off * s->d, mod + off, calls[c], &g);
		off += calls[c];
	}
}

static void
test_reservoir(void)
{
	enum { D = 3, N = 200, CAP = 16 };
	static const int calls[] = {70, 0, 1, 129};
	float *x = xmalloc(N * D * sizeof *x);
	uint8_t mod[N];
	site_stats a, b;
	rng g;

	rng_init(&g, 11);
	for (int i = 0; i < N; i++) {
		mod[i] = (uint8_t)(i % 7 == 0 ? MOD_AUDIO : i % 2 ? MOD_VISION : MOD_TEXT);
		for (int j = 0; j < D; j++)
			x[i * D + j] = (float)(i * 10 + j);
	}

	/* Fewer rows than cap: all kept, in order. */
	stats_site_init(&a, D, 0, CAP);
	static const int small[] = {9, 12};
	reservoir_run(&a, x, mod, small, 2, 1);
	int ok = 1;
	for (int m = 0; m < MOD_COUNT; m++) {
		int k = 0;
		for (int i = 0; i < 21; i++)
			if (mod[i] == m) {
				ok &= k < a.sample_n[m] && a.sample_tok[m][k] == i &&
				    memcmp(a.sample[m] + k * D, x + i * D, D * sizeof *x) == 0;
				k++;
			}
		ok &= a.sample_n[m] == k && a.sample_seen[m] == k;
	}
	tap_ok(ok, "reservoir: fewer rows than cap are all kept, in order, across calls");
	stats_site_done(&a);

	/* More rows than cap: deterministic, distinct, valid, matching. */
	stats_site_init(&a, D, 0, CAP);
	stats_site_init(&b, D, 0, CAP);
	reservoir_run(&a, x, mod, calls, 4, 42);
	reservoir_run(&b, x, mod, calls, 4, 42);
	int same = 1, valid = 1;
	for (int m = 0; m < MOD_COUNT; m++) {
		same &= a.sample_n[m] == b.sample_n[m] &&
		    memcmp(a.sample[m], b.sample[m], CAP * D * sizeof(float)) == 0 &&
		    memcmp(a.sample_tok[m], b.sample_tok[m], CAP * sizeof(int32_t)) == 0;
		int cnt = 0;
		for (int i = 0; i < N; i++)
			cnt += mod[i] == m;
		valid &= a.sample_seen[m] == cnt && a.sample_n[m] == (cnt < CAP ? cnt : CAP);
		for (int k = 0; k < a.sample_n[m]; k++) {
			int t = a.sample_tok[m][k];
			valid &= t >= 0 && t < N && mod[t] == m &&
			    memcmp(a.sample[m] + k * D, x + t * D, D * sizeof *x) == 0;
			for (int k2 = 0; k2 < k; k2++)
				valid &= a.sample_tok[m][k2] != t;
		}
	}
	tap_ok(same, "reservoir: the same seed gives the same sample");
	tap_ok(valid, "reservoir: indices distinct, valid, of the right modality, rows match the source");
	stats_site_done(&b);
	stats_site_init(&b, D, 0, CAP);
	reservoir_run(&b, x, mod, calls, 4, 43);
	tap_ok(memcmp(a.sample_tok[MOD_VISION], b.sample_tok[MOD_VISION], CAP * sizeof(int32_t)) != 0,
	    "reservoir: another seed gives another sample");
	stats_site_done(&a);
	stats_site_done(&b);

	/* Inclusion frequency over seeds: cap / n_m for every row. */
	enum { SEEDS = 4000 };
	static int hits[N];
	static const int one[] = {N};
	static const int split[] = {37, 100, 63};
	int cnt[MOD_COUNT] = {0};
	for (int i = 0; i < N; i++)
		cnt[mod[i]]++;
	for (int sd = 0; sd < SEEDS; sd++) {
		stats_site_init(&a, D, 0, CAP);
		if (sd % 2)
			reservoir_run(&a, x, mod, one, 1, 1000 + (uint64_t)sd);
		else
			reservoir_run(&a, x, mod, split, 3, 1000 + (uint64_t)sd);
		for (int m = 0; m < MOD_COUNT; m++)
			for (int k = 0; k < a.sample_n[m]; k++)
				hits[a.sample_tok[m][k]]++;
		stats_site_done(&a);
	}
	double worst = 0;
	for (int i = 0; i < N; i++) {
		double want = SEEDS * (cnt[mod[i]] < CAP ? 1.0 : (double)CAP / cnt[mod[i]]);
		double dev = fabs(hits[i] - want) / want;
		worst = dev > worst ? dev : worst;
	}
	tap_ok(worst < 0.2, "reservoir: every row's inclusion frequency within 20%% of cap/n (worst %.3f)", worst);
	free(x);
}

/* Feed one row per modality holding the ranges r[m] (d), signs mixed;
 * a NULL r[m] leaves the modality absent. */
static void
site_from_ranges(site_stats *s, int d, const float *const *r)
{
	float *x = xmalloc(xmul((size_t)MOD_COUNT * 2, (size_t)d * sizeof *x));
	uint8_t mod[MOD_COUNT * 2];
	int n = 0;

	stats_site_init(s, d, 0, 0);
	for (int m = 0; m < MOD_COUNT; m++) {
		if (r[m] == NULL)
			continue;
		for (int k = 0; k < 2; k++) {	/* the range, and a smaller row */
			for (int j = 0; j < d; j++)
				x[n * d + j] = (j % 2 ? -1.0f : 1.0f) * r[m][j] * (k ? 0.25f : 1.0f);
			mod[n++] = (uint8_t)m;
		}
	}
	stats_site_add(s, x, mod, n, NULL);
	free(x);
}

static int
hist_is(const int *h, const int *want)
{
	return memcmp(h, want, 16 * sizeof *h) == 0;
}

static void
test_misalign(void)
{
	/*
	 * d = 8, ranges R^m per channel:
	 *	ch   0   1   2   3   4   5   6   7
	 *	t    1   1   1   1   1   1   4   8
	 *	v   16   8   4   2   2   1   1   1
	 *	a    1   2   1   1   4   1   2   1
	 *	dom  v   v   v   v   a   t   t   t	(ch 5: a three-way tie -> text)
	 *	all 16   8   4   2   4   1   4   8
	 * Shares: text 3/8, vision 4/8, audio 1/8.
	 * Ratios R^dom / R^m where m is not dominant, quantiles linear at
	 * position p (n - 1):
	 *	text  (ch 0-4)  sorted 2 4 4 8 16:   q50 = v[2] = 4,
	 *		q90 = v[3.6] = 8 + 0.6*8 = 12.8, q99 = v[3.96] = 15.68, max 16
	 *	vision (ch 4-7) sorted 1 2 4 8:      q50 = v[1.5] = 3,
	 *		q90 = v[2.7] = 6.8, q99 = v[2.97] = 7.88, max 8
	 *	audio (ch 0-3, 5-7) 16 4 4 2 1 2 8 -> 1 2 2 4 4 8 16: q50 = v[3] = 4,
	 *		q90 = v[5.4] = 11.2, q99 = v[5.94] = 15.52, max 16
	 * a = R^all / R^m, log2 a, bins of 0.5 (= 2 log2 a):
	 *	text   16 8 4 2 4 1 1 1   bins 8 6 4 2 4 0 0 0
	 *	vision  1 1 1 1 2 1 4 8   bins 0 0 0 0 2 0 4 6
	 *	audio  16 4 4 2 1 1 2 8   bins 8 4 4 2 0 0 2 6
	 * Theorem 1, min a = 1 for all three (each dominates a channel):
	 *	text   sum a^-2 = 3 + 1/4 + 2/16 + 1/64 + 1/256 = 3.39453125,
	 *		loss = 10 log10(8 / 3.39453125) = 3.72310 dB
	 *	vision sum = 5 + 1/4 + 1/16 + 1/64 = 5.328125, 10 log10(8 / 5.328125) = 1.76516 dB
	 *	audio  sum = 2 + 2/4 + 2/16 + 1/64 + 1/256 = 2.64453125,
	 *		10 log10(8 / 2.64453125) = 4.80741 dB
	 */
	static const float rt[8] = {1, 1, 1, 1, 1, 1, 4, 8};
	static const float rv[8] = {16, 8, 4, 2, 2, 1, 1, 1};
	static const float ra[8] = {1, 2, 1, 1, 4, 1, 2, 1};
	const float *r3[MOD_COUNT] = {rt, rv, ra};
	site_stats s;
	misalign mi;

	site_from_ranges(&s, 8, r3);
	stats_misalign(&s, &mi);
	tap_ok(mi.present[0] && mi.present[1] && mi.present[2], "all three modalities present");
	tap_ok(mi.dominant_share[0] == 0.375 && mi.dominant_share[1] == 0.5 && mi.dominant_share[2] == 0.125,
	    "dominant shares 3/8, 4/8, 1/8 (ties to the lowest index)");
	static const double wq[3][4] = {{4, 12.8, 15.68, 16}, {3, 6.8, 7.88, 8}, {4, 11.2, 15.52, 16}};
	int okq = 1;
	for (int m = 0; m < 3; m++)
		for (int q = 0; q < 4; q++)
			if (fabs(mi.ratio_q[m][q] - wq[m][q]) > 1e-12) {
				tap_diag("ratio_q[%d][%d] = %.17g, want %g", m, q, mi.ratio_q[m][q], wq[m][q]);
				okq = 0;
			}
	tap_ok(okq, "ratio quantiles match the hand-computed values");
	static const int ht[16] = {3, 0, 1, 0, 2, 0, 1, 0, 1};
	static const int hv[16] = {5, 0, 1, 0, 1, 0, 1};
	static const int ha[16] = {2, 0, 2, 0, 2, 0, 1, 0, 1};
	tap_ok(hist_is(mi.ratio_hist[0], ht) && hist_is(mi.ratio_hist[1], hv) && hist_is(mi.ratio_hist[2], ha),
	    "log2(R^all / R^m) histograms match");
	tap_near(mi.thm1_loss_db[0], 10 * log10(8 / 3.39453125), 1e-12, "Theorem 1 loss, text");
	tap_near(mi.thm1_loss_db[1], 10 * log10(8 / 5.328125), 1e-12, "Theorem 1 loss, vision");
	tap_near(mi.thm1_loss_db[2], 10 * log10(8 / 2.64453125), 1e-12, "Theorem 1 loss, audio");
	tap_ok(fabs(mi.thm1_loss_db[0] - 3.72310) < 1e-5 && fabs(mi.thm1_loss_db[1] - 1.76516) < 1e-5 &&
	    fabs(mi.thm1_loss_db[2] - 4.80741) < 1e-5, "Theorem 1 losses are 3.72310, 1.76516, 4.80741 dB");

	/* mean |x|: rows R and R/4, so (1 + 1/4) R / 2. */
	float mean[8];
	stats_mean_abs(&s, MOD_VISION, mean);
	tap_ok(mean[0] == 10.0f && mean[7] == 0.625f, "mean |x| = abssum / count");
	stats_mean_abs(&s, STATS_ALL, mean);
	tap_ok(mean[0] == (16 + 4 + 1.25f + 1.25f) / 6, "mean |x| over all tokens");
	stats_site_done(&s);

	/*
	 * Text dominates every channel, vision is four times smaller on channels
	 * 0-3 and 2^10 times on 4-7 (the last, open histogram bin), audio is
	 * absent (its zero statistics must not count).
	 *	text: a = 1 everywhere -> loss 0, shares 1, ratio quantiles 1.
	 *	vision: a = 4 (x4), 1024 (x4): min a = 4, sum a^-2 = 4/16 + 4/2^20,
	 *	loss = 10 log10(8 / (16 (1/4 + 2^-18))) = 10 log10(2 / (1 + 2^-16)).
	 */
	static const float t2[8] = {4, 4, 4, 4, 1024, 1024, 1024, 1024};
	static const float v2[8] = {1, 1, 1, 1, 1, 1, 1, 1};
	const float *r2[MOD_COUNT] = {t2, v2, NULL};
	site_from_ranges(&s, 8, r2);
	stats_misalign(&s, &mi);
	tap_ok(mi.present[0] && mi.present[1] && !mi.present[2], "absent modality is flagged");
	tap_ok(mi.dominant_share[0] == 1 && mi.dominant_share[1] == 0 && mi.dominant_share[2] == 0,
	    "text dominates every channel");
	tap_ok(mi.thm1_loss_db[0] == 0, "Theorem 1: 0 dB for the modality that dominates every channel");
	tap_ok(mi.ratio_q[0][0] == 1 && mi.ratio_q[0][1] == 1 && mi.ratio_q[0][2] == 1 && mi.ratio_q[0][3] == 1,
	    "ratio quantiles are 1 when the modality dominates everywhere");
	tap_near(mi.thm1_loss_db[1], 10 * log10(2 / (1 + 0x1p-16)), 1e-12, "Theorem 1 loss with min a = 4");
	static const int hv2[16] = {[4] = 4, [15] = 4};
	tap_ok(hist_is(mi.ratio_hist[1], hv2), "ratio histogram: 2^2 in bin 4, 2^10 in the open last bin");
	tap_ok(mi.ratio_q[2][3] == 0 && mi.thm1_loss_db[2] == 0 && mi.ratio_hist[2][0] == 0,
	    "an absent modality has zero figures");
	stats_site_done(&s);

	/* Vision four times text on every channel: text dominates nothing, but
	 * a is constant, so Theorem 1 predicts no loss. */
	static const float t3[8] = {1, 2, 3, 4, 5, 6, 7, 8};
	static const float v3[8] = {4, 8, 12, 16, 20, 24, 28, 32};
	const float *r3b[MOD_COUNT] = {t3, v3, NULL};
	site_from_ranges(&s, 8, r3b);
	stats_misalign(&s, &mi);
	tap_ok(mi.dominant_share[0] == 0 && fabs(mi.thm1_loss_db[0]) < 1e-12 && mi.ratio_q[0][0] == 4,
	    "Theorem 1: constant a gives 0 dB even for a dominated modality");
	stats_site_done(&s);

	/* Nothing added: everything zero. */
	stats_site_init(&s, 4, 0, 0);
	stats_misalign(&s, &mi);
	tap_ok(!mi.present[0] && mi.dominant_share[0] == 0 && mi.thm1_loss_db[1] == 0, "an empty site gives zeros");
	stats_site_done(&s);
}

static const char oracle_py[] =
    "import sys\n"
    "import numpy as np\n"
    "w, n, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
    "LO, STEP, BINS = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])\n"
    "x = np.fromfile(w + '/x.f32', dtype='<f4').reshape(n, d)\n"
    "mod = np.fromfile(w + '/mod.u8', dtype=np.uint8)\n"
    "a = np.abs(x.astype(np.float64))\n"
    "with np.errstate(divide='ignore'):\n"
    "    b = np.floor((np.log2(a) - LO) / STEP) + 1\n"
    "b = np.where(a < 2.0 ** LO, 0, np.minimum(b, BINS - 1)).astype(np.int64)\n"
    "amax = np.zeros((4, d), np.float32)\n"
    "hist = np.zeros((4, BINS), np.int64)\n"
    "gram = np.zeros((3, d, d), np.float64)\n"
    "for m in range(3):\n"
    "    sel = mod == m\n"
    "    if sel.any():\n"
    "        amax[m] = np.abs(x[sel]).max(axis=0)\n"
    "    hist[m] = np.bincount(b[sel].ravel(), minlength=BINS)\n"
    "    xm = x[sel].astype(np.float64)\n"
    "    gram[m] = xm.T @ xm\n"
    "amax[3] = np.abs(x).max(axis=0)\n"
    "hist[3] = np.bincount(b.ravel(), minlength=BINS)\n"
    "amax.astype('<f4').tofile(w + '/amax.f32')\n"
    "hist.astype('<i8').tofile(w + '/hist.i64')\n"
    "gram.astype('<f8').tofile(w + '/gram.f64')\n";

static int
file_put(const char *name, const void *p, size_t n)
{
	char path[700];
	snprintf(path, sizeof path, "%s/%s", workdir, name);
	FILE *f = fopen(path, "wb");
	if (f == NULL)
		return -1;
	size_t w = fwrite(p, 1, n, f);
	return fclose(f) == 0 && w == n ? 0 : -1;
}

static int
file_get(const char *name, void *p, size_t n)
{
	char path[700];
	snprintf(path, sizeof path, "%s/%s", workdir, name);
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return -1;
	size_t r = fread(p, 1, n, f);
	fclose(f);
	return r == n ? 0 : -1;
}

static void
test_numpy(void)
{
	enum { N = 500, D = 48 };
	const char *py = getenv("PYTHON3");
	char cmd[2000];

	if (py == NULL || *py == '\0' || access(py, X_OK) != 0) {
		printf("ok %d # SKIP numpy oracle: PYTHON3 is not executable\n", ++tap_n);
		return;
	}
	float *x = xmalloc(N * D * sizeof *x);
	uint8_t mod[N];
	rng g;
	rng_init(&g, 99);
	data_fill(x, mod, N, D, -1, &g);
	if (file_put("x.f32", x, N * D * sizeof *x) < 0 || file_put("mod.u8", mod, N) < 0 ||
	    file_put("oracle.py", oracle_py, sizeof oracle_py - 1) < 0) {
		tap_ok(0, "numpy oracle: cannot write its inputs in %s", workdir);
		free(x);
		return;
	}
	snprintf(cmd, sizeof cmd, "'%s' '%s/oracle.py' '%s' %d %d %.17g %.17g %d", py, workdir, workdir,
	    N, D, STATS_HIST_LO, STATS_HIST_STEP, STATS_HIST_BINS);
	if (system(cmd) != 0) {
		tap_ok(0, "numpy oracle: %s failed", cmd);
		free(x);
		return;
	}

	site_stats s;
	rng gs;
	rng_init(&gs, 1);
	stats_site_init(&s, D, STATS_GRAM_TEXT | STATS_GRAM_VISION | STATS_GRAM_AUDIO, 4);
	stats_site_add(&s, x, mod, 123, &gs);
	stats_site_add(&s, x + 123 * D, mod + 123, N - 123, &gs);

	float *amax = xmalloc(STATS_ROWS * D * sizeof *amax);
	int64_t *hist = xmalloc(STATS_ROWS * STATS_HIST_BINS * sizeof *hist);
	double *gram = xmalloc(MOD_COUNT * D * D * sizeof *gram);
	if (file_get("amax.f32", amax, STATS_ROWS * D * sizeof *amax) < 0 ||
	    file_get("hist.i64", hist, STATS_ROWS * STATS_HIST_BINS * sizeof *hist) < 0 ||
	    file_get("gram.f64", gram, MOD_COUNT * D * D * sizeof *gram) < 0) {
		tap_ok(0, "numpy oracle: cannot read its outputs");
	} else {
		int okm = memcmp(amax, s.absmax, STATS_ROWS * D * sizeof *amax) == 0, okh = 1, okg = 1;
		for (int i = 0; i < STATS_ROWS * STATS_HIST_BINS; i++)
			okh &= (uint64_t)hist[i] == s.hist[i];
		for (int m = 0; m < MOD_COUNT; m++)
			for (int i = 0; i < D; i++)
				for (int j = 0; j < D; j++) {
					const double *w = gram + (size_t)m * D * D;
					double tol = 1e-12 * sqrt(w[i * D + i]) * sqrt(w[j * D + j]);
					okg &= fabs(s.gram[m][i * D + j] - w[i * D + j]) <= tol;
				}
		tap_ok(okm, "numpy oracle: absmax per modality and overall");
		tap_ok(okh, "numpy oracle: histograms");
		tap_ok(okg, "numpy oracle: Gram matrices within 1e-12");
	}
	stats_site_done(&s);
	free(amax);
	free(hist);
	free(gram);
	free(x);
}

/* The reservoir of one rank of several (stats_reservoir_plan): each shard
 * of the rows, planned from the whole token order and filled with its own
 * rows, then the shards' samples summed element by element as
 * dist_merge_f32 sums them (the rows a shard does not hold are -0.0), must
 * give one process's Algorithm R: the same slots, rows (bits, signed
 * zeros included), counts and the generator's state after.  Held-out rows
 * (MOD_SKIP) are in no reservoir. */
static void
test_reservoir_plan(void)
{
	enum { D = 3, N = 300, CAP = 16 };
	float *x = xmalloc(N * D * sizeof *x);
	uint8_t mod[N];
	static const int cuts[][4] = {{300}, {150, 150}, {1, 298, 1}, {97, 3, 120, 80}, {10, 10, 10, 270}};
	int all_ok = 1;

	for (int i = 0; i < N; i++) {
		mod[i] = (uint8_t)(i % 11 == 0 ? MOD_SKIP : i % 7 == 0 ? MOD_AUDIO : i % 3 ? MOD_VISION : MOD_TEXT);
		for (int j = 0; j < D; j++)
			x[i * D + j] = (i + j) % 5 == 0 ? -0.0f : (float)((i * 10 + j) * (j == 1 ? -1 : 1));
	}
	for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
		site_stats one, merged, part;
		rng g1, g2;
		rng_init(&g1, 77);
		stats_site_init(&one, D, 0, CAP);
		stats_site_add(&one, x, mod, N, &g1);
		stats_site_init(&merged, D, 0, CAP);
		int lo = 0, ok = 1;
		for (int k = 0; k < 4 && cuts[c][k] > 0; k++) {
			int n = cuts[c][k];
			rng_init(&g2, 77);
			stats_site_init(&part, D, 0, CAP);
			stats_reservoir_plan(&part, mod, N, lo, n, &g2);
			stats_site_add(&part, x + (size_t)lo * D, mod + lo, n, &g2);
			for (int m = 0; m < MOD_COUNT; m++) {
				ok &= part.sample_n[m] == one.sample_n[m] && part.sample_seen[m] == one.sample_seen[m] &&
				    memcmp(part.sample_tok[m], one.sample_tok[m], CAP * sizeof(int32_t)) == 0;
				merged.sample_n[m] = part.sample_n[m];
				for (int e = 0; e < part.sample_n[m] * D; e++)
					merged.sample[m][e] = k == 0 ? part.sample[m][e] : merged.sample[m][e] + part.sample[m][e];
			}
			ok &= memcmp(&g2, &g1, sizeof g1) == 0;	/* the draws one process made */
			stats_site_done(&part);
			lo += n;
		}
		for (int m = 0; m < MOD_COUNT; m++)
			ok &= memcmp(merged.sample[m], one.sample[m], (size_t)one.sample_n[m] * D * sizeof(float)) == 0;
		all_ok &= ok;
		stats_site_done(&one);
		stats_site_done(&merged);
	}
	tap_ok(all_ok, "reservoir planned per shard and merged = one process's Algorithm R (5 cuts, held-out rows, signed zeros)");
	free(x);
}

/* stats_gram_pack / stats_gram_unpack: the packed form is the upper
 * triangle row by row, and unpacking gives back the very bits. */
static void
test_gram_pack(int d)
{
	site_stats s;
	rng g;
	int n = 3 * d + 5;
	float *x = xmalloc(xmul(xmul((size_t)n, (size_t)d), sizeof(float)));
	uint8_t *mod = xmalloc((size_t)n);
	rng_init(&g, 77 + (uint64_t)d);
	for (size_t i = 0; i < (size_t)n * d; i++)
		x[i] = (float)rng_normal(&g);
	for (int i = 0; i < n; i++)
		mod[i] = (uint8_t)(i % MOD_COUNT);
	stats_site_init(&s, d, STATS_GRAM_VISION | STATS_GRAM_AUDIO, 0);
	stats_site_add(&s, x, mod, n, NULL);
	size_t dd = (size_t)d * d;
	double *keep = xmalloc(xmul(dd, sizeof(double)));
	memcpy(keep, s.gram[MOD_VISION], dd * sizeof(double));
	stats_gram_pack(&s);
	int upper = s.gram_packed[MOD_VISION] && s.gram_packed[MOD_AUDIO] && s.gram[MOD_TEXT] == NULL &&
	    !s.gram_packed[MOD_TEXT];
	for (size_t i = 0, k = 0; i < (size_t)d && upper; i++)
		for (size_t j = i; j < (size_t)d; j++, k++)
			upper &= memcmp(&s.gram[MOD_VISION][k], &keep[i * d + j], sizeof(double)) == 0;
	tap_ok(upper, "d=%d: a packed Gram matrix is its upper triangle, row by row, to the bit", d);
	stats_gram_unpack(&s, MOD_VISION);
	stats_gram_unpack(&s, MOD_TEXT);	/* NULL: nothing */
	tap_ok(!s.gram_packed[MOD_VISION] && s.gram_packed[MOD_AUDIO] &&
	    memcmp(s.gram[MOD_VISION], keep, dd * sizeof(double)) == 0,
	    "d=%d: unpacked, it is the full symmetric matrix it was, to the bit (the other still packed)", d);
	stats_gram_unpack(&s, MOD_VISION);	/* full: nothing */
	tap_ok(memcmp(s.gram[MOD_VISION], keep, dd * sizeof(double)) == 0, "d=%d: unpacking a full one changes nothing", d);
	stats_site_done(&s);
	free(keep);
	free(mod);
	free(x);
}

int
main(void)
{
	masq_err err = {0};
	const char *bd = getenv("builddir");

	snprintf(workdir, sizeof workdir, "%s/work/test_stats", bd && *bd ? bd : ".");
	if (masq_mkdir_p(workdir, &err) < 0) {
		printf("Bail out! %s\n", err.msg);
		return 99;
	}
	test_hist_edges();
	test_fast_ref(37, STATS_GRAM_TEXT | STATS_GRAM_VISION | STATS_GRAM_AUDIO);
	test_fast_ref(64, STATS_GRAM_VISION | STATS_GRAM_AUDIO);
	test_fast_ref(5, 0);
	test_gram_pack(1);
	test_gram_pack(2);
	test_gram_pack(37);
	test_gram_pack(300);
	test_reservoir();
	test_reservoir_plan();
	test_misalign();
	test_numpy();
	return tap_done();
}
