/*
 * test_igemm.c: the integer GEMM (core/igemm.c) and the integer quantized
 * linear (engine_qlinear_rows_int).
 *
 *   - igemm equals its plain twin igemm_ref exactly (the sums are integers:
 *     the error budget is zero) on every shape class the blocking has:
 *     m and n around the tile sizes (3 and 6 rows, 3, 16 and 64 columns),
 *     k around the 4- and 32-byte steps, k of several blocks (past
 *     16384, the VNNI kernels' longest),
 *     long k, one to three threads, weight grids from 2 to 8 bits (the
 *     offset kernel up to |level| 63, the sign kernel above), and the
 *     extremes that would saturate vpmaddubsw's int16 pairs if the chunking
 *     were wrong (every level at +-qmax);
 *   - every kernel this CPU runs (MASQ_IGEMM names each in turn: plain,
 *     avx2, avxvnni, avx512vnni; the others are skipped) on all of that,
 *     and at IGEMM_MAX_K, where the VNNI lanes' offset sums wrap;
 *   - quant_act_rows_int: levels * scale == quant_act_rows bit for bit;
 *   - engine_qlinear_rows_int against an exact reference (the integer sum
 *     in int64, the scales applied in double): within QLIN_RESCALE_ULPS
 *     units in the last place, the rescale's and the bias add's roundings;
 *   - engine_qlinear_rows_int against engine_qlinear_rows, today's float
 *     product of the same fake-quant operands: within the float GEMM's own
 *     rounding bound, QLIN_FLOAT_GAMMA * k * u * sum |xq w|, on smoothed
 *     rows picked by index, with a bias and a low-rank branch.
 */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/engine.h"
#include "core/igemm.h"
#include "core/quant.h"
#include "core/rng.h"
#include "core/util.h"
#include "tests/tap.h"

/* The integer path rounds twice: the double rescale to float, then the
 * float bias add. */
#define QLIN_RESCALE_ULPS 2.0
/* The float path's sums: a dot product of k float terms is within
 * gamma_k = k u / (1 - k u) of the exact sum of |terms| (Higham, 3.1); the
 * fake-quant operands themselves are exact products rounded once (1 u
 * each side), so 1.01 * (k + 2) u bounds the difference. */
#define QLIN_FLOAT_GAMMA 1.01

static void
fill_levels(int8_t *x, size_t n, int qmax, rng *g)
{
	for (size_t i = 0; i < n; i++)
		x[i] = (int8_t)((int)rng_below(g, (uint64_t)(2 * qmax + 1)) - qmax);
}

/* igemm against igemm_ref on one shape; returns 1 when equal. */
static int
same_as_ref(int m, int n, int k, int aq, int wq, int extreme, int threads, rng *g)
{
	int8_t *A = xmalloc((size_t)m * k + 1), *B = xmalloc((size_t)n * k + 1);
	int32_t *C = xmalloc(((size_t)m * n + 1) * sizeof(int32_t));
	int32_t *R = xmalloc(((size_t)m * n + 1) * sizeof(int32_t));
	if (extreme) {
		/* every pair at its largest: same signs, then opposite ones */
		for (size_t i = 0; i < (size_t)m * k; i++)
			A[i] = (int8_t)(extreme > 0 ? aq : -aq);
		for (size_t i = 0; i < (size_t)n * k; i++)
			B[i] = (int8_t)((i / k) % 2 ? -wq : wq);
	} else {
		fill_levels(A, (size_t)m * k, aq, g);
		fill_levels(B, (size_t)n * k, wq, g);
	}
	igemm_b pb;
	igemm_b_pack(&pb, B, n, k);
	igemm(C, A, m, k, &pb, threads);
	igemm_ref(R, A, m, k, B, n);
	int ok = memcmp(C, R, (size_t)m * n * sizeof(int32_t)) == 0;
	igemm_b_done(&pb);
	free(A);
	free(B);
	free(C);
	free(R);
	return ok;
}

/* igemm_scaled against igemm_ref and igemm_rescale_ref on one shape, bit
 * for bit (the same operations in the same order: tolerance zero), a NaN
 * where the reference has a NaN (its payload is the compiler's choice when
 * both scales are NaN); row 1 has a NaN scale, as a row below the
 * quantizer's clamp can, and column 2 a NaN weight scale. */
static int
scaled_same(int m, int n, int k, int wq, int with_bias, int threads, rng *g)
{
	int8_t *A = xmalloc((size_t)m * k + 1), *B = xmalloc((size_t)n * k + 1);
	int32_t *R = xmalloc(((size_t)m * n + 1) * sizeof(int32_t));
	float *y = xmalloc(((size_t)m * n + 1) * sizeof(float)), *yr = xmalloc(((size_t)m * n + 1) * sizeof(float));
	float *sa = xmalloc(((size_t)m + 1) * sizeof(float)), *ws = xmalloc(((size_t)n + 1) * sizeof(float));
	float *bias = xmalloc(((size_t)n + 1) * sizeof(float));
	fill_levels(A, (size_t)m * k, 127, g);
	fill_levels(B, (size_t)n * k, wq, g);
	for (int i = 0; i < m; i++)
		sa[i] = (float)(rng_uniform(g) * 0.1 + 1e-4);
	if (m > 1)
		sa[1] = NAN;
	for (int j = 0; j < n; j++) {
		ws[j] = (float)(rng_uniform(g) * 0.02 + 1e-5);
		bias[j] = (float)rng_normal(g);
	}
	if (n > 2)
		ws[2] = -NAN;
	igemm_b pb;
	igemm_b_pack(&pb, B, n, k);
	igemm_scaled(y, A, m, k, &pb, sa, ws, with_bias ? bias : NULL, threads);
	igemm_ref(R, A, m, k, B, n);
	igemm_rescale_ref(yr, R, m, n, sa, ws, with_bias ? bias : NULL);
	int ok = 1;
	for (size_t i = 0; i < (size_t)m * n; i++)
		ok &= isnan(yr[i]) ? isnan(y[i]) != 0 : memcmp(&y[i], &yr[i], sizeof(float)) == 0;
	igemm_b_done(&pb);
	free(A), free(B), free(R), free(y), free(yr), free(sa), free(ws), free(bias);
	return ok;
}

/* The checks of one kernel: CHECKS_PER_KERNEL results, or as many skips
 * when the CPU does not run it. */
#define CHECKS_PER_KERNEL 7

static void
test_kernel(const char *name, rng *g)
{
	static const int ms[] = {1, 3, 4, 5, 6, 7, 17, 64};
	static const int ns[] = {1, 2, 3, 4, 7, 16, 17, 65, 100};
	static const int ks[] = {1, 3, 4, 5, 31, 32, 33, 100, 1000};

	setenv("MASQ_IGEMM", name, 1);
	if (strcmp(igemm_kernel(), name) != 0) {
		for (int i = 0; i < CHECKS_PER_KERNEL; i++)
			tap_ok(1, "igemm kernel %s, check %d # SKIP this CPU does not run it", name, i + 1);
		unsetenv("MASQ_IGEMM");
		return;
	}
	/* every shape class of the tiles: rows around 3 (AVX2) and 6 (VNNI),
	 * columns around 3, 16 and 64 (the panels), k around 4 and 32 */
	int bad = 0, cases = 0;
	for (int bits = 2; bits <= 8; bits++) {
		int wq = quant_qmax(bits);
		for (size_t a = 0; a < sizeof ms / sizeof ms[0]; a++)
			for (size_t b = 0; b < sizeof ns / sizeof ns[0]; b++)
				for (size_t c = 0; c < sizeof ks / sizeof ks[0]; c++) {
					cases++;
					if (!same_as_ref(ms[a], ns[b], ks[c], 127, wq, 0, 1 + (int)(c % 3), g)) {
						if (bad++ < 5)
							tap_diag("differs: W%d, %d x %d x %d", bits, ms[a], ns[b], ks[c]);
					}
				}
	}
	tap_ok(bad == 0, "%s: igemm == igemm_ref, W2..W8 x A8 levels: %d shapes, %d differ", name, cases, bad);
	/* saturation bounds: every pair at its extreme, long k (many chunks) */
	bad = 0;
	for (int bits = 2; bits <= 8; bits++) {
		int wq = quant_qmax(bits);
		if (!same_as_ref(9, 7, 2049, 127, wq, 1, 2, g) || !same_as_ref(9, 7, 2049, 127, wq, -1, 2, g))
			bad++;
	}
	tap_ok(bad == 0, "%s: igemm == igemm_ref with every level at +-qmax, W2..W8 x A8, k 2049", name);
	tap_ok(same_as_ref(130, 67, 4099, 127, 7, 0, 2, g) && same_as_ref(401, 200, 1100, 127, 127, 0, 3, g),
	    "%s: igemm == igemm_ref across blocks of rows and panels: 130 x 67 x 4099, 401 x 200 x 1100", name);
	tap_ok(same_as_ref(5, 11, 11008, 127, 127, 0, 3, g), "%s: igemm == igemm_ref, k 11008 (a down_proj row), 3 threads", name);
	/* the longest k: sums near 2^31 (an offset form's lanes wrap past it) */
	tap_ok(same_as_ref(2, 3, IGEMM_MAX_K, 127, 127, 1, 2, g) && same_as_ref(2, 3, IGEMM_MAX_K, 127, 127, -1, 1, g),
	    "%s: igemm == igemm_ref at k %d with every level at +-127", name, IGEMM_MAX_K);
	/* the rescale: tile edges, a k of one block and of several (16384 is
	 * the VNNI kernels' longest block), with and without a bias */
	static const int sm[] = {1, 5, 6, 7, 13}, sn[] = {1, 15, 16, 17, 64, 65, 130}, sk[] = {1, 4, 37, 1000};
	bad = 0, cases = 0;
	for (size_t a = 0; a < sizeof sm / sizeof sm[0]; a++)
		for (size_t b = 0; b < sizeof sn / sizeof sn[0]; b++)
			for (size_t c = 0; c < sizeof sk / sizeof sk[0]; c++) {
				cases++;
				if (!scaled_same(sm[a], sn[b], sk[c], c % 2 ? 7 : 127, (int)(b % 2), 1 + (int)(a % 2), g) &&
				    bad++ < 5)
					tap_diag("rescale differs: %d x %d x %d", sm[a], sn[b], sk[c]);
			}
	tap_ok(bad == 0, "%s: igemm_scaled == igemm_ref + igemm_rescale_ref bit for bit: %d shapes, %d differ",
	    name, cases, bad);
	tap_ok(scaled_same(13, 70, 20000, 127, 1, 2, g) && scaled_same(7, 17, 40000, 7, 0, 1, g) &&
	    scaled_same(400, 200, 2048, 7, 1, 2, g),
	    "%s: igemm_scaled bit for bit at k 20000 and 40000 (two and three blocks) and 400 x 200 x 2048", name);
	unsetenv("MASQ_IGEMM");
}

static void
test_shapes(void)
{
	static const char *const kernels[] = {"plain", "avx2", "avxvnni", "avx512vnni"};
	rng g;

	rng_init(&g, 0x19e11);
	tap_diag("igemm kernel here: %s", igemm_kernel());
	for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++)
		test_kernel(kernels[i], &g);
	setenv("MASQ_IGEMM", "plain", 1);
	tap_ok(strcmp(igemm_kernel(), "plain") == 0, "MASQ_IGEMM=plain names the plain loops");
	setenv("MASQ_IGEMM", "no-such-kernel", 1);
	const char *best = igemm_kernel();
	unsetenv("MASQ_IGEMM");
	tap_ok(strcmp(best, igemm_kernel()) == 0, "MASQ_IGEMM with an unknown name runs the best kernel (%s)", best);
	igemm_b pb;
	int8_t one = 1;
	igemm_b_pack(&pb, &one, 1, 1);
	int32_t c = 7;
	igemm(&c, &one, 0, 1, &pb, 2);
	tap_ok(c == 7, "igemm with no rows writes nothing");
	igemm_b_done(&pb);
}

/* Rows with the awkward values the fake quantizer is tested on. */
static void
fill_rows(float *x, int n, int d, rng *g)
{
	for (int r = 0; r < n; r++)
		for (int j = 0; j < d; j++) {
			double v = rng_normal(g);
			if (r % 5 == 1 && j == 3)
				v *= 300;	/* an outlier channel */
			if (r % 5 == 2)
				v *= 1e-7;	/* a row below the scale clamp */
			x[(size_t)r * d + j] = (float)v;
		}
}

static void
test_act_int(void)
{
	enum { N = 12, D = 77 };
	float *x = xmalloc(N * D * sizeof *x), *y = xmalloc(N * D * sizeof *y), sc[N];
	int8_t *q = xmalloc(N * D);
	rng g;

	rng_init(&g, 5);
	fill_rows(x, N, D, &g);
	for (int j = 0; j < D; j++)
		x[(N - 1) * D + j] = (float)(j - 38) * 0.5f;	/* exact ties */
	for (int bits = 2; bits <= 8; bits++) {
		int ok = 1;
		quant_act_rows(y, x, N, D, bits);
		quant_act_rows_int(q, sc, x, N, D, bits);
		for (int r = 0; r < N; r++)
			for (int j = 0; j < D; j++)
				if (!((float)q[r * D + j] * sc[r] == y[r * D + j]))
					ok = 0;
		tap_ok(ok, "quant_act_rows_int, %d bits: levels * scale == quant_act_rows", bits);
	}
	x[3] = NAN;
	quant_act_rows_int(q, sc, x, N, D, 8);
	tap_ok(isnan(sc[0]) && q[0] == 0 && q[3] == 0, "a NaN row: scale NaN, levels 0");
	free(x);
	free(y);
	free(q);
}

static void
test_linear(void)
{
	enum { N = 40, K = 23, IN = 300, OUT = 37, RANK = 3 };
	float *x = xmalloc(N * IN * sizeof *x), *W = xmalloc(OUT * IN * sizeof *W);
	float *Wq = xmalloc(OUT * IN * sizeof *Wq), *s = xmalloc(IN * sizeof *s);
	float *bias = xmalloc(OUT * sizeof *bias), wsc[OUT];
	float *L1 = xmalloc(IN * RANK * sizeof *L1), *L2 = xmalloc(RANK * OUT * sizeof *L2);
	float *xs = xmalloc(K * IN * sizeof *xs), *xq = xmalloc(K * IN * sizeof *xq);
	float *yi = xmalloc(K * OUT * sizeof *yi), *yf = xmalloc(K * OUT * sizeof *yf);
	float *ye = xmalloc(K * OUT * sizeof *ye);
	int8_t *lw = xmalloc(OUT * IN), *la = xmalloc(K * IN);
	float sa[K];
	int rows[K];
	rng g;

	rng_init(&g, 21);
	fill_rows(x, N, IN, &g);
	fill_rows(W, OUT, IN, &g);
	for (int j = 0; j < IN; j++)
		s[j] = (float)(0.25 + rng_uniform(&g) * 4);
	for (int o = 0; o < OUT; o++)
		bias[o] = (float)rng_normal(&g);
	for (int i = 0; i < IN * RANK; i++)
		L1[i] = (float)(rng_normal(&g) * 0.01);
	for (int i = 0; i < RANK * OUT; i++)
		L2[i] = (float)(rng_normal(&g) * 0.01);
	for (int r = 0; r < K; r++)
		rows[r] = (r * 7 + 3) % N;

	static const int wbits[] = {4, 8};
	for (size_t wi = 0; wi < 2; wi++)
		for (int rank = 0; rank <= RANK; rank += RANK) {
			int bits = wbits[wi];
			igemm_b pb;
			quant_weight_rows_int(lw, wsc, W, OUT, IN, bits);
			for (int o = 0; o < OUT; o++)
				for (int j = 0; j < IN; j++)
					Wq[o * IN + j] = (float)lw[o * IN + j] * wsc[o];
			igemm_b_pack(&pb, lw, OUT, IN);
			engine_qlinear_rows_int(x, IN, rows, K, s, 8, &pb, wsc, bias, OUT, rank, L1, L2, xs, yi, 2);
			engine_qlinear_rows(x, IN, rows, K, s, 8, Wq, bias, OUT, rank, L1, L2, xs, xq, yf);
			/* the exact reference: int64 sums, double scales (and the
			 * low-rank branch as the float path adds it) */
			quant_act_rows_int(la, sa, xs, K, IN, 8);
			double worst_e = 0, worst_f = 0;
			for (int t = 0; t < K; t++)
				for (int o = 0; o < OUT; o++) {
					int64_t acc = 0;
					double mag = 0;
					for (int j = 0; j < IN; j++) {
						acc += (int64_t)la[t * IN + j] * lw[o * IN + j];
						mag += fabs((double)la[t * IN + j] * sa[t] * Wq[o * IN + j]);
					}
					double v = (double)acc * sa[t] * wsc[o];
					double e = v + bias[o];
					double u = 0x1p-24;
					double tol_e = QLIN_RESCALE_ULPS * u * (fabs(v) + fabs(bias[o]));
					/* with a rank the low-rank branch is the same float code
					 * in both paths; the bound takes its terms' size too */
					double lr = fabs((double)yf[t * OUT + o] - e);
					double tol_f = QLIN_FLOAT_GAMMA * (IN + 2) * u * (mag + fabs(bias[o]) + lr) + tol_e;
					double de = fabs((double)yi[t * OUT + o] - e);
					double df = fabs((double)yi[t * OUT + o] - (double)yf[t * OUT + o]);
					if (rank == 0 && tol_e > 0 && de / tol_e > worst_e)
						worst_e = de / tol_e;
					if (tol_f > 0 && df / tol_f > worst_f)
						worst_f = df / tol_f;
					ye[t * OUT + o] = (float)e;
				}
			if (rank == 0)
				tap_ok(worst_e <= 1.0, "W%dA8: the integer linear is the exact sum rescaled (worst %.3f of %g ulps)",
				    bits, worst_e, QLIN_RESCALE_ULPS);
			tap_ok(worst_f <= 1.0, "W%dA8%s: it agrees with the float product within its rounding bound (worst %.3f of the bound)",
			    bits, rank ? " with a rank-3 branch" : "", worst_f);
			igemm_b_done(&pb);
		}
	free(x);
	free(W);
	free(Wq);
	free(s);
	free(bias);
	free(L1);
	free(L2);
	free(xs);
	free(xq);
	free(yi);
	free(yf);
	free(ye);
	free(lw);
	free(la);
}

int
main(void)
{
	test_shapes();
	test_act_int();
	test_linear();
	return tap_done();
}
