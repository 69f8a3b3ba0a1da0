/*
 * test_quant.c: the fake quantizers (core/quant.c) and the metrics
 * (core/metrics.c).
 *
 *   - every fast kernel equals its _ref twin bit for bit (memcmp: the error
 *     budget of these kernels is zero, signs of zero included) on random
 *     matrices with awkward widths and awkward rows (zeros, one huge
 *     outlier, values small or large enough to saturate the scale clamps,
 *     exact ties, rows far from zero, values within an ulp of a rounding tie
 *     so that x / s and x * (1 / s) round apart), at 2, 3, 4, 6, 8 and 16
 *     bits, and for groups of 128 and 32 with a ragged last group;
 *   - an independent oracle: small inputs whose outputs are worked out by
 *     hand below (ties to even, scale clamps, W4 levels, asymmetric groups);
 *   - numpy (float32 throughout, np.round is half to even, x / scale as a
 *     true division) on a random matrix, compared bit for bit; skipped when
 *     PYTHON3 is unset or not executable;
 *   - the integer form: q * scale == the fake-quant output, |q| <= qmax;
 *   - metrics: SQNR, MAE and KL on hand-computed examples, NaN for an
 *     absent modality, tokens routed by the modality array.
 */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/metrics.h"
#include "core/quant.h"
#include "core/rng.h"
#include "core/util.h"
#include "tests/tap.h"

static char workdir[600];

/* Print count TAP lines "ok N # SKIP why". */
static void
tap_skip(int count, const char *why)
{
	for (int i = 0; i < count; i++)
		printf("ok %d # SKIP %s\n", ++tap_n, why);
	fflush(stdout);
}

/*
 * Fill x (n, d) with test rows; row r % 8 picks the kind: zeros, normal with
 * one outlier 1e4 times larger, tiny (scale clamps at 1e-5), large (1e3 to
 * 1e7: the scale clamps at 1e4 or comes close), exact multiples of 0.5 up to
 * 63.5 (ties at 8 bits), a row far from zero with little spread, normal with
 * a random amplitude, and a row with half of its entries exactly zero.
 */
static void
fill_rows(float *x, int n, int d, rng *g)
{
	for (int r = 0; r < n; r++) {
		float *row = x + (size_t)r * d;
		double amp = exp(3.0 * rng_normal(g)), big = pow(10.0, 3.0 + 4.0 * rng_uniform(g));
		for (int j = 0; j < d; j++) {
			double v = rng_normal(g);
			switch (r % 8) {
			case 0: row[j] = 0.0f; break;
			case 1: row[j] = (float)v; break;
			case 2: row[j] = (float)(v * 1e-5); break;
			case 3: row[j] = (float)(v * big); break;
			case 4: row[j] = (float)((int64_t)rng_below(g, 255) - 127) * 0.5f; break;
			case 5: row[j] = (float)(100.0 + 0.01 * v); break;
			case 6: row[j] = (float)(amp * v); break;
			default: row[j] = rng_below(g, 2) ? (float)v : 0.0f; break;
			}
		}
		if (r % 8 == 1)
			row[rng_below(g, (uint64_t)d)] = rng_below(g, 2) ? 1e4f : -1e4f;
		if (r % 8 == 4)
			row[rng_below(g, (uint64_t)d)] = 63.5f;
	}
}

/* t nudged by -1, 0 or +1 ulp at random. */
static float
nudge(float t, rng *g)
{
	switch (rng_below(g, 3)) {
	case 0: return nextafterf(t, -INFINITY);
	case 1: return t;
	default: return nextafterf(t, INFINITY);
	}
}

/*
 * Fill row (d) with values whose x / scale is within an ulp of a tie k + 0.5
 * at bits: symmetric per row (group 0: the row's absmax comes first) or
 * asymmetric per group (each group starts with its min and max).  Here
 * x / s and x * (1 / s) often round differently, which random data almost
 * never shows.
 */
static void
fill_near_ties(float *row, int d, int bits, int group, rng *g)
{
	if (group == 0) {
		int qmax = quant_qmax(bits);
		float m = (float)(0.2 + 3.0 * exp(rng_normal(g)));
		float s = quant_scale_sym(m, bits);
		row[0] = rng_below(g, 2) ? m : -m;
		for (int j = 1; j < d; j++) {
			int k = (int)rng_below(g, 2 * (uint64_t)qmax) - qmax;
			row[j] = nudge(((float)k + 0.5f) * s, g);
		}
		return;
	}
	float top = (float)((1 << bits) - 1);
	for (int a = 0; a < d; a += group) {
		int len = d - a < group ? d - a : group;
		float lo = (float)(3.0 * rng_normal(g));
		float hi = lo + (float)(0.1 + exp(rng_normal(g)));
		float s = (hi - lo) / top;
		float kmin = ceilf(lo / s), kmax = floorf(hi / s) - 1.0f;
		row[a] = lo;
		if (len > 1)
			row[a + 1] = hi;
		for (int j = 2; j < len; j++) {
			float k = kmin + (float)rng_below(g, (uint64_t)(kmax - kmin + 1.0f));
			float t = nudge((k + 0.5f) * s, g);
			row[a + j] = t < lo || t > hi ? lo : t;
		}
	}
}

/* 1 if a and b (n) are the same bits; else print the first difference. */
static int
same_bits(const float *a, const float *b, size_t n, const char *what)
{
	if (memcmp(a, b, n * sizeof *a) == 0)
		return 1;
	for (size_t i = 0; i < n; i++) {
		uint32_t ua, ub;
		memcpy(&ua, &a[i], 4);
		memcpy(&ub, &b[i], 4);
		if (ua != ub) {
			tap_diag("%s: element %zu: %.9g (0x%08x) vs %.9g (0x%08x)", what, i,
			    (double)a[i], (unsigned)ua, (double)b[i], (unsigned)ub);
			break;
		}
	}
	return 0;
}

static const int test_bits[] = {2, 3, 4, 6, 8, 16};
#define N_BITS (int)(sizeof test_bits / sizeof test_bits[0])

/* Fast kernels equal their _ref twins bit for bit (error budget: zero). */
static void
test_fast_vs_ref(void)
{
	static const int shapes[][2] = {
		{1, 1}, {2, 7}, {8, 8}, {8, 15}, {9, 16}, {16, 33}, {8, 100}, {8, 129},
		{16, 300}, {3, 1000},
	};
	static const int gshapes[][3] = {	/* rows, in, group */
		{8, 300, 128}, {16, 300, 32}, {8, 256, 128}, {8, 5, 32}, {8, 1, 32}, {8, 97, 32},
	};
	enum { MAXN = 16 * 300 };
	float *x = xmalloc(MAXN * sizeof *x), *a = xmalloc(MAXN * sizeof *a);
	float *b = xmalloc(MAXN * sizeof *b);
	rng g;
	char what[128];

	rng_init(&g, 20240611);
	for (int k = 0; k < N_BITS; k++) {
		int bits = test_bits[k], ok_act = 1, ok_w = 1, ok_inplace = 1, ok_g = 1;
		for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
			int n = shapes[s][0], d = shapes[s][1];
			size_t nd = (size_t)n * d;
			fill_rows(x, n, d, &g);
			if (bits < 16 && n > 1)
				fill_near_ties(x + (size_t)(n - 1) * d, d, bits, 0, &g);
			snprintf(what, sizeof what, "act %dx%d at %d bits", n, d, bits);
			quant_act_rows(a, x, n, d, bits);
			quant_act_rows_ref(b, x, n, d, bits);
			ok_act &= same_bits(a, b, nd, what);
			memcpy(b, x, nd * sizeof *x);
			quant_act_rows(b, b, n, d, bits);
			ok_inplace &= same_bits(a, b, nd, what);
			snprintf(what, sizeof what, "weight %dx%d at %d bits", n, d, bits);
			quant_weight_rows(a, x, n, d, bits);
			quant_weight_rows_ref(b, x, n, d, bits);
			ok_w &= same_bits(a, b, nd, what);
		}
		for (size_t s = 0; s < sizeof gshapes / sizeof gshapes[0]; s++) {
			int n = gshapes[s][0], d = gshapes[s][1], grp = gshapes[s][2];
			fill_rows(x, n, d, &g);
			if (bits < 16)
				fill_near_ties(x + (size_t)(n - 1) * d, d, bits, grp, &g);
			snprintf(what, sizeof what, "groups %dx%d g%d at %d bits", n, d, grp, bits);
			quant_weight_groups(a, x, n, d, bits, grp);
			quant_weight_groups_ref(b, x, n, d, bits, grp);
			ok_g &= same_bits(a, b, (size_t)n * d, what);
		}
		tap_ok(ok_act, "quant_act_rows == _ref bit for bit, %d bits, 10 shapes", bits);
		tap_ok(ok_inplace, "quant_act_rows in place (y == x) == out of place, %d bits", bits);
		tap_ok(ok_w, "quant_weight_rows == _ref bit for bit, %d bits", bits);
		tap_ok(ok_g, "quant_weight_groups == _ref bit for bit, %d bits, g128/g32 ragged", bits);
	}
	/* bits 16 is a copy */
	fill_rows(x, 8, 33, &g);
	quant_act_rows(a, x, 8, 33, 16);
	quant_weight_groups(b, x, 8, 33, 16, 32);
	tap_ok(memcmp(a, x, 8 * 33 * sizeof *x) == 0 && memcmp(b, x, 8 * 33 * sizeof *x) == 0,
	    "16 bits copies the input unchanged");
	free(x);
	free(a);
	free(b);
}

/* 1 if y (n) equals want (n) exactly in value; else print the difference. */
static int
same_values(const float *y, const float *want, int n, const char *what)
{
	for (int i = 0; i < n; i++)
		if (!(y[i] == want[i])) {
			tap_diag("%s: element %d: got %.9g, want %.9g", what, i, (double)y[i],
			    (double)want[i]);
			return 0;
		}
	return 1;
}

/* Small inputs with outputs worked out by hand. */
static void
test_oracle(void)
{
	float y[8];
	int8_t q[8];
	float sc[2];

	tap_ok(quant_qmax(2) == 1 && quant_qmax(4) == 7 && quant_qmax(6) == 31 &&
	    quant_qmax(8) == 127 && quant_qmax(16) == 32767, "qmax = 2^(b-1) - 1");
	tap_ok(quant_scale_sym(127.0f, 8) == 1.0f && quant_scale_sym(14.0f, 4) == 2.0f,
	    "scale = absmax / qmax");
	tap_ok(quant_scale_sym(0.0f, 8) == QUANT_SCALE_MIN && quant_scale_sym(1e-4f, 8) == 1e-5f,
	    "scale clamps at 1e-5 (absmax 0, absmax 1e-4 at 8 bits)");
	tap_ok(quant_scale_sym(1e9f, 8) == QUANT_SCALE_MAX && quant_scale_sym(7.1e4f, 4) == 1e4f,
	    "scale clamps at 1e4");

	/* A8: absmax 127 -> scale 1; -0.5 ties to -0, 0.25 -> 0. */
	{
		const float x[] = {1.0f, -0.5f, 0.25f, 127.0f}, want[] = {1.0f, 0.0f, 0.0f, 127.0f};
		quant_act_rows(y, x, 1, 4, 8);
		tap_ok(same_values(y, want, 4, "A8 exact") && signbit(y[1]),
		    "A8 of [1, -0.5, 0.25, 127]: scale 1, -0.5 -> -0");
	}
	/* absmax 63.5 -> scale 0.5 exactly; x / s = 2.5, 3.5, -2.5, 0.5, 1.5 */
	{
		const float x[] = {1.25f, 1.75f, -1.25f, 0.25f, 0.75f, 63.5f};
		const float want[] = {1.0f, 2.0f, -1.0f, 0.0f, 1.0f, 63.5f};
		quant_act_rows(y, x, 1, 6, 8);
		tap_ok(same_values(y, want, 6, "ties"),
		    "ties go to even: 2.5 -> 2, 3.5 -> 4, -2.5 -> -2, 0.5 -> 0, 1.5 -> 2");
	}
	/* all zeros: scale 1e-5, output 0; tiny row: scale 1e-5, x / s < 0.5 */
	{
		const float x[] = {0.0f, 0.0f, 0.0f, 1e-7f, -4e-6f, 4.9e-6f};
		const float want[] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
		quant_act_rows(y, x, 2, 3, 8);
		tap_ok(same_values(y, want, 6, "tiny"), "zero and tiny rows: scale 1e-5, output 0");
	}
	/* absmax 1e9: scale 1e4; 1e9 / 1e4 = 1e5 clamps to +-127; 5e3 -> 0.5 -> 0;
	 * 1.5e4 -> 1.5 -> 2; 2.5e4 -> 2.5 -> 2 */
	{
		const float x[] = {1e9f, -1e9f, 5e3f, 1.5e4f, 2.5e4f, -1.27e6f};
		const float want[] = {1.27e6f, -1.27e6f, 0.0f, 2e4f, 2e4f, -1.27e6f};
		quant_act_rows(y, x, 1, 6, 8);
		tap_ok(same_values(y, want, 6, "huge"),
		    "absmax 1e9: scale 1e4, levels clamp to +-127");
	}
	/* W4 per channel: row 0 absmax 7 -> scale 1; row 1 absmax 14 -> scale 2 */
	{
		const float w[] = {7.0f, -3.5f, 1.2f, -7.0f, 14.0f, 3.0f, -5.0f, 1.0f};
		const float want[] = {7.0f, -4.0f, 1.0f, -7.0f, 14.0f, 4.0f, -4.0f, 0.0f};
		const int8_t wantq[] = {7, -4, 1, -7, 7, 2, -2, 0};
		quant_weight_rows(y, w, 2, 4, 4);
		tap_ok(same_values(y, want, 8, "W4"), "W4 per channel by hand");
		quant_weight_rows_int(q, sc, w, 2, 4, 4);
		tap_ok(memcmp(q, wantq, sizeof wantq) == 0 && sc[0] == 1.0f && sc[1] == 2.0f,
		    "W4 integer levels [7 -4 1 -7], [7 2 -2 0], scales 1, 2");
	}
	/* W2 per channel: levels -1, 0, 1 */
	{
		const float w[] = {3.0f, -1.4f, 1.6f, -3.0f};
		const float want[] = {3.0f, -0.0f, 3.0f, -3.0f};
		quant_weight_rows(y, w, 1, 4, 2);
		tap_ok(same_values(y, want, 4, "W2"), "W2: levels -1, 0, 1 times absmax");
	}
	/* asymmetric, 2 bits, group [2, 2.5, 3.5, 5]: scale 3/3 = 1, zero -2;
	 * 2.5 -> 2, 3.5 -> 4 */
	{
		const float w[] = {2.0f, 2.5f, 3.5f, 5.0f}, want[] = {2.0f, 2.0f, 4.0f, 5.0f};
		quant_weight_groups(y, w, 1, 4, 2, 4);
		tap_ok(same_values(y, want, 4, "asym"),
		    "asymmetric W2 group [2 2.5 3.5 5] -> [2 2 4 5] (zero not in range)");
	}
	/* asymmetric, 3 bits, groups of 4 over 7 inputs: [0 1 2.5 7] scale 1 zero 0;
	 * ragged [10 13.5 17] scale 1 zero -10, 13.5 -> 14 */
	{
		const float w[] = {0.0f, 1.0f, 2.5f, 7.0f, 10.0f, 13.5f, 17.0f};
		const float want[] = {0.0f, 1.0f, 2.0f, 7.0f, 10.0f, 14.0f, 17.0f};
		quant_weight_groups(y, w, 1, 7, 3, 4);
		tap_ok(same_values(y, want, 7, "ragged"), "asymmetric W3 g4 with a ragged last group");
	}
	/* asymmetric, negative group [-6 -5 -1]: 2 bits, scale 5/3 in float,
	 * zero = round(6 / s) = round(3.6) = 4 ... worked with the formula */
	{
		const float w[] = {-6.0f, -5.0f, -1.0f};
		float s = 5.0f / 3.0f, z = 4.0f, want[3];
		/* x / s = -3.6, -3, -0.6 -> -4, -3, -1; + 4 -> 0, 1, 3 */
		want[0] = (0.0f - z) * s;
		want[1] = (1.0f - z) * s;
		want[2] = (3.0f - z) * s;
		quant_weight_groups(y, w, 1, 3, 2, 8);
		tap_ok(same_values(y, want, 3, "negative group"),
		    "asymmetric W2 group [-6 -5 -1] -> levels 0 1 3, zero 4");
	}
	/* a constant group far from zero: range 0 -> scale 1e-5, zero clamps to
	 * -1e4, every level saturates at 15; the reference's formula gives
	 * (15 + 1e4) * 1e-5, not 1000 */
	{
		const float w[] = {1000.0f, 1000.0f};
		float want = (15.0f + 1e4f) * 1e-5f;
		quant_weight_groups(y, w, 1, 2, 4, 128);
		tap_ok(y[0] == want && y[1] == want,
		    "constant group 1000 at W4: scale 1e-5, zero -1e4, output %.6g", (double)y[0]);
	}
}

/* A NaN poisons its row (symmetric) or its group (asymmetric), as torch's
 * amax does, in the fast and the reference kernels alike. */
static void
test_nan(void)
{
	float x[12], y[12], yr[12], sc[2];
	int8_t q[12];
	int ok = 1, okr = 1;

	for (int j = 0; j < 12; j++)
		x[j] = (float)j - 5.5f;
	x[2] = NAN;
	quant_act_rows(y, x, 2, 6, 8);
	quant_act_rows_ref(yr, x, 2, 6, 8);
	for (int j = 0; j < 12; j++) {
		ok &= j < 6 ? isnan(y[j]) : !isnan(y[j]);
		okr &= j < 6 ? isnan(yr[j]) : !isnan(yr[j]);
	}
	tap_ok(ok && okr, "a NaN makes its whole row NaN, other rows intact (fast and ref)");
	quant_weight_rows_int(q, sc, x, 2, 6, 8);
	tap_ok(isnan(sc[0]) && !isnan(sc[1]) && q[0] == 0 && q[2] == 0,
	    "int form of a NaN row: scale NaN, levels 0");
	quant_weight_groups(y, x, 1, 12, 4, 4);
	quant_weight_groups_ref(yr, x, 1, 12, 4, 4);
	ok = okr = 1;
	for (int j = 0; j < 12; j++) {
		ok &= j < 4 ? isnan(y[j]) : !isnan(y[j]);
		okr &= j < 4 ? isnan(yr[j]) : !isnan(yr[j]);
	}
	tap_ok(ok && okr, "a NaN makes its whole group NaN, other groups intact (fast and ref)");
}

/* The integer form reproduces the fake quant exactly. */
static void
test_int_form(void)
{
	enum { N = 16, D = 129 };
	float *w = xmalloc(N * D * sizeof *w), *y = xmalloc(N * D * sizeof *y);
	int8_t *q = xmalloc(N * D);
	float sc[N];
	rng g;

	rng_init(&g, 7);
	fill_rows(w, N, D, &g);
	for (int bits = 2; bits <= 8; bits++) {
		int ok = 1, inrange = 1, hit = 0, qmax = quant_qmax(bits);
		fill_near_ties(w + (size_t)(N - 1) * D, D, bits, 0, &g);
		quant_weight_rows(y, w, N, D, bits);
		quant_weight_rows_int(q, sc, w, N, D, bits);
		for (int r = 0; r < N; r++)
			for (int j = 0; j < D; j++) {
				int v = q[r * D + j];
				if (!((float)v * sc[r] == y[r * D + j]))
					ok = 0;
				if (v < -qmax || v > qmax)
					inrange = 0;
				if (v == qmax || v == -qmax)
					hit = 1;
			}
		tap_ok(ok, "int form, %d bits: q * scale == quant_weight_rows", bits);
		tap_ok(inrange && hit, "int form, %d bits: levels within +-%d and reach it", bits, qmax);
	}
	free(w);
	free(y);
	free(q);
}

/* quant_weight_groups_int: (q - zero) * scale is quant_weight_groups bit
 * for bit, levels in range, zero points whole; a row of one sign (zero out
 * of range) and a short last group included. */
static void
test_group_int_form(void)
{
	enum { N = 9, D = 200, G = 64 };
	int ng = (D + G - 1) / G;
	float *w = xmalloc(N * D * sizeof *w), *y = xmalloc(N * D * sizeof *y);
	float *sc = xmalloc(N * ng * sizeof *sc), *z = xmalloc(N * ng * sizeof *z);
	uint8_t *q = xmalloc(N * D);
	rng g;

	rng_init(&g, 11);
	fill_rows(w, N, D, &g);
	for (int j = 0; j < D; j++)
		w[j] = fabsf(w[j]) + 0.5f;	/* row 0: every group positive, zero < 0 */
	for (int bits = 2; bits <= 8; bits++) {
		int ok = 1, inrange = 1, whole = 1, neg = 0, top = (1 << bits) - 1;
		quant_weight_groups(y, w, N, D, bits, G);
		quant_weight_groups_int(q, sc, z, w, N, D, bits, G);
		for (int r = 0; r < N; r++)
			for (int j = 0; j < D; j++) {
				float s = sc[r * ng + j / G], zz = z[r * ng + j / G];
				if (!(((float)q[r * D + j] - zz) * s == y[r * D + j]))
					ok = 0;
				if (q[r * D + j] > top)
					inrange = 0;
				if (zz != nearbyintf(zz))
					whole = 0;
				neg |= zz < 0;
			}
		tap_ok(ok, "group int form, %d bits: (q - zero) * scale == quant_weight_groups", bits);
		tap_ok(inrange && whole && neg, "group int form, %d bits: levels in [0, %d], whole zero points, "
		    "a one-signed group's below 0", bits, top);
	}
	free(w);
	free(y);
	free(sc);
	free(z);
	free(q);
}

/* The same fake quant computed by numpy in float32, compared bit for bit. */
static const char numpy_script[] =
	"import sys\n"
	"import numpy as np\n"
	"f32 = np.float32\n"
	"d, n, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
	"x = np.fromfile(d + '/x.bin', dtype=f32).reshape(n, cols)\n"
	"def sym(x, b):\n"
	"    qmax = f32(2 ** (b - 1) - 1)\n"
	"    s = np.abs(x).max(axis=1, keepdims=True) / qmax\n"
	"    s = np.clip(s, f32(1e-5), f32(1e4))\n"
	"    q = np.clip(np.round(x / s), -qmax, qmax)\n"
	"    return q * s\n"
	"def asym(x, b, g):\n"
	"    top = f32(2 ** b - 1)\n"
	"    y = np.empty_like(x)\n"
	"    for a in range(0, x.shape[1], g):\n"
	"        w = x[:, a:a + g]\n"
	"        mn = w.min(axis=1, keepdims=True)\n"
	"        mx = w.max(axis=1, keepdims=True)\n"
	"        s = np.clip((mx - mn) / top, f32(1e-5), f32(1e4))\n"
	"        z = np.clip(np.round(-mn / s), f32(-1e4), f32(1e4))\n"
	"        q = np.clip(np.round(w / s) + z, f32(0), top)\n"
	"        y[:, a:a + g] = (q - z) * s\n"
	"    return y\n"
	"outs = [sym(x, b) for b in (2, 3, 4, 6, 8)]\n"
	"outs += [asym(x, b, g) for b, g in ((4, 128), (3, 32), (2, 32), (8, 128))]\n"
	"assert all(o.dtype == f32 for o in outs)\n"
	"np.concatenate([o.reshape(-1) for o in outs]).tofile(d + '/y.bin')\n";

static void
test_numpy(void)
{
	enum { NCFG = 9, N = 16 + 2 * NCFG, D = 300 };
	static const int cfg[NCFG][2] = {	/* bits, group (0: symmetric per row) */
		{2, 0}, {3, 0}, {4, 0}, {6, 0}, {8, 0}, {4, 128}, {3, 32}, {2, 32}, {8, 128},
	};
	const char *py = getenv("PYTHON3");
	char path[700], cmd[2200];
	float *x, *y, *want;
	FILE *f;
	rng g;

	if (py == NULL || *py == '\0' || access(py, X_OK) != 0) {
		tap_skip(NCFG, "PYTHON3 (with numpy) not available");
		return;
	}
	x = xmalloc(N * D * sizeof *x);
	y = xmalloc(N * D * sizeof *y);
	want = xmalloc((size_t)NCFG * N * D * sizeof *want);
	rng_init(&g, 99);
	fill_rows(x, 16, D, &g);
	for (int k = 0; k < NCFG; k++)	/* two near-tie rows for each setting */
		for (int i = 0; i < 2; i++)
			fill_near_ties(x + (size_t)(16 + 2 * k + i) * D, D, cfg[k][0], cfg[k][1], &g);

	snprintf(path, sizeof path, "%s/x.bin", workdir);
	f = fopen(path, "wb");
	int wrote = f && fwrite(x, sizeof *x, N * D, f) == N * D;
	if (f)
		wrote &= fclose(f) == 0;
	snprintf(path, sizeof path, "%s/check.py", workdir);
	f = fopen(path, "w");
	wrote &= f && fputs(numpy_script, f) >= 0;
	if (f)
		wrote &= fclose(f) == 0;
	snprintf(cmd, sizeof cmd, "'%s' '%s' '%s' %d %d", py, path, workdir, N, D);
	int rc = wrote ? system(cmd) : -1;
	snprintf(path, sizeof path, "%s/y.bin", workdir);
	f = rc == 0 ? fopen(path, "rb") : NULL;
	int got = f && fread(want, sizeof *want, (size_t)NCFG * N * D, f) == (size_t)NCFG * N * D;
	if (f)
		fclose(f);
	if (!got) {
		tap_diag("numpy run failed (rc %d): %s", rc, cmd);
		for (int k = 0; k < NCFG; k++)
			tap_ok(0, "numpy cross-check %d bits group %d", cfg[k][0], cfg[k][1]);
	} else {
		for (int k = 0; k < NCFG; k++) {
			char what[64];
			snprintf(what, sizeof what, "numpy %d bits group %d", cfg[k][0], cfg[k][1]);
			if (cfg[k][1] == 0)
				quant_act_rows(y, x, N, D, cfg[k][0]);
			else
				quant_weight_groups(y, x, N, D, cfg[k][0], cfg[k][1]);
			tap_ok(same_bits(y, want + (size_t)k * N * D, (size_t)N * D, what),
			    "numpy float32 agrees bit for bit: %s, %d bits", cfg[k][1] ? (cfg[k][1] == 32 ?
			    "asymmetric g32" : "asymmetric g128") : "symmetric per row", cfg[k][0]);
		}
	}
	free(x);
	free(y);
	free(want);
}

/* Bad bit widths and group sizes are numeric invariants: MASQ_ASSERT, which
 * exits through fatal() with status 3. */
static void
test_asserts(void)
{
	static const int bad[][2] = {{1, 32}, {17, 32}, {4, 0}};
	float x[4] = {1, 2, 3, 4}, y[4];

	fflush(stdout);
	for (int k = 0; k < 3; k++) {
		pid_t pid = fork();
		if (pid == 0) {
			if (freopen("/dev/null", "w", stderr) == NULL)
				_exit(98);
			if (bad[k][1] == 32)
				quant_act_rows(y, x, 1, 4, bad[k][0]);
			else
				quant_weight_groups(y, x, 1, 4, bad[k][0], bad[k][1]);
			_exit(0);
		}
		int st = 0;
		waitpid(pid, &st, 0);
		tap_ok(pid > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 3,
		    "bits %d group %d is rejected by MASQ_ASSERT", bad[k][0], bad[k][1]);
	}
}

/* Metrics on examples worked out by hand. */
static void
test_metrics(void)
{
	metrics_acc a, b;

	{
		const float v[] = {1.0f, 2.0f, 3.0f, 4.0f};
		/* the reference floors the mean squared error at 1e-5: mean y^2 = 7.5 */
		tap_near(metrics_sqnr_token(v, v, 4), 10.0 * log10(7.5 / 1e-5), 1e-12,
		    "SQNR of identical tokens = 10 log10(mean y^2 / 1e-5)");
	}
	/* d = 2; tokens: text [3 4] vs [3 3]: 25 / 1, |e| 1;
	 * vision [1 0] vs [0 0]: 1 / 1 = 0 dB, |e| 1;
	 * vision [10 0] vs [9 0.5]: 100 / 1.25, |e| 1.5;
	 * text [0.5 0.5] vs itself: mean 0.25 / 1e-5, |e| 0 (masq 0.1: 0.5 / 1e-5) */
	const float ref[] = {3, 4, 1, 0, 10, 0, 0.5f, 0.5f};
	const float got[] = {3, 3, 0, 0, 9, 0.5f, 0.5f, 0.5f};
	const uint8_t mod[] = {MOD_TEXT, MOD_VISION, MOD_VISION, MOD_TEXT};
	double s0 = 10 * log10(25.0), s1 = 0.0, s2 = 10 * log10(80.0), s3 = 10 * log10(2.5e4);

	tap_near(metrics_sqnr_token(ref, got, 2), s0, 1e-12, "SQNR of [3 4] vs [3 3] = 10 log10 25");
	metrics_acc_init(&a);
	metrics_acc_add(&a, ref, got, mod, 4, 2);
	tap_near(metrics_sqnr(&a, MOD_TEXT), (s0 + s3) / 2, 1e-12, "text SQNR: mean of its tokens");
	tap_near(metrics_sqnr(&a, MOD_VISION), (s1 + s2) / 2, 1e-12, "vision SQNR: mean of its tokens");
	tap_near(metrics_sqnr(&a, MOD_COUNT), (s0 + s1 + s2 + s3) / 4, 1e-12, "all-token SQNR");
	tap_ok(isnan(metrics_sqnr(&a, MOD_AUDIO)) && isnan(metrics_mae(&a, MOD_AUDIO)),
	    "absent modality (audio): SQNR and MAE are NaN");
	tap_near(metrics_mae(&a, MOD_TEXT), 1.0 / 4, 1e-15, "text MAE = 1 / 4 elements");
	tap_near(metrics_mae(&a, MOD_VISION), 2.5 / 4, 1e-15, "vision MAE = 2.5 / 4 elements");
	tap_near(metrics_mae(&a, MOD_COUNT), 3.5 / 8, 1e-15, "all-token MAE = 3.5 / 8");
	tap_ok(a.tokens[MOD_TEXT] == 2 && a.tokens[MOD_VISION] == 2 && a.tokens[MOD_AUDIO] == 0 &&
	    a.tokens[MOD_COUNT] == 4 && a.elems[MOD_COUNT] == 8, "tokens routed by the modality array");

	/* the floor of masq 0.1's sessions, on the sum of squares */
	metrics_acc_init_floor(&b, METRICS_FLOOR_SUM);
	metrics_acc_add(&b, ref, got, mod, 4, 2);
	tap_near(metrics_sqnr(&b, MOD_TEXT), (s0 + 10 * log10(5e4)) / 2, 1e-12,
	    "METRICS_FLOOR_SUM: a lossless token's SQNR is 10 log10(|y|^2 / 1e-5), as masq 0.1 recorded");

	/* the same tokens in two calls accumulate to the same sums */
	metrics_acc_init(&b);
	metrics_acc_add(&b, ref, got, mod, 1, 2);
	metrics_acc_add(&b, ref + 2, got + 2, mod + 1, 3, 2);
	tap_ok(memcmp(&a, &b, sizeof a) == 0, "adding in two calls gives the same sums");

	/* NULL modality: everything is text */
	metrics_acc_init(&b);
	metrics_acc_add(&b, ref, got, NULL, 4, 2);
	tap_near(metrics_sqnr(&b, MOD_TEXT), (s0 + s1 + s2 + s3) / 4, 1e-12,
	    "modality NULL: every token is text");
	tap_ok(isnan(metrics_sqnr(&b, MOD_VISION)) && b.tokens[MOD_COUNT] == 4,
	    "modality NULL: no vision tokens");
	metrics_acc_init(&b);
	tap_ok(isnan(metrics_sqnr(&b, MOD_COUNT)) && isnan(metrics_mae(&b, MOD_COUNT)),
	    "an empty accumulator gives NaN");

	/* KL */
	{
		enum { V = 50 };
		float l[3 * V];
		rng g;
		rng_init(&g, 3);
		for (int i = 0; i < 3 * V; i++)
			l[i] = (float)(5 * rng_normal(&g));
		tap_ok(metrics_kl_rows(l, l, 3, V) == 0.0, "KL of identical logits is 0");
	}
	{
		/* p = (1/2, 1/2), q = softmax(1, 0): KL = -log 2 - 1/2 + log(1 + e) */
		const float p[] = {0, 0}, q[] = {1, 0};
		const float pb[] = {1000, 1000}, qb[] = {1001, 1000};
		double want = -log(2.0) - 0.5 + log(1.0 + exp(1.0));
		tap_near(metrics_kl_rows(p, q, 1, 2), want, 1e-12, "KL of a 2-class example by hand");
		tap_near(metrics_kl_rows(pb, qb, 1, 2), want, 1e-12,
		    "KL is stable for logits near 1000 (shift invariance)");
		/* reversed: p = softmax(1, 0), q = (1/2, 1/2):
		 * KL = log 2 + p0 log p0 + p1 log p1 */
		double p0 = exp(1.0) / (1.0 + exp(1.0)), p1 = 1.0 / (1.0 + exp(1.0));
		tap_near(metrics_kl_rows(q, p, 1, 2), log(2.0) + p0 * log(p0) + p1 * log(p1), 1e-12,
		    "KL(p || q) takes p from the first argument");
		const float p2[] = {0, 0, 7, 7}, q2[] = {1, 0, 7, 7};
		tap_near(metrics_kl_rows(p2, q2, 2, 2), want / 2, 1e-12, "KL is the mean over rows");
	}
}

int
main(void)
{
	masq_err err = {0};
	const char *bd = getenv("builddir");

	snprintf(workdir, sizeof workdir, "%s/work/test_quant", bd && *bd ? bd : ".");
	if (masq_mkdir_p(workdir, &err) < 0) {
		printf("Bail out! %s\n", err.msg);
		return 99;
	}
	test_fast_vs_ref();
	test_oracle();
	test_nan();
	test_int_form();
	test_group_int_form();
	test_numpy();
	test_asserts();
	test_metrics();
	return tap_done();
}
