/*
 * test_bgemm.c: the bf16 GEMM (core/bgemm.c) against its plain twin.
 *
 *   - every kernel this CPU runs (MASQ_BGEMM names each in turn; without
 *     AVX512-BF16 only "sgemm" runs, and the other's checks are skipped)
 *     against bgemm_ref on every tile edge (rows around 6, columns around
 *     16 and 64, odd k, k across the 4096-k blocks), one to three threads:
 *     the float32 sums (round_out 0) within BGEMM_SUM_GAMMA of each other,
 *     Higham's bound for two float32 sums of the same exact products in
 *     different orders; rounded to bf16 (round_out 1), every value a bf16
 *     and within that bound plus one bf16 unit in the last place;
 *   - the output rounding on the bits: ties to even, carries into the
 *     exponent, the largest float to infinity, NaN, subnormals, signs,
 *     compared with f32_to_bf16 exactly.
 */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bgemm.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "core/util.h"
#include "tests/tap.h"

/* Two float32 sums of the same k exact products differ by at most
 * 2 gamma_k sum |x w| (Higham 3.1; gamma_k = k u / (1 - k u)); the bias
 * add is one more term, the 1.01 absorbs the 1 / (1 - k u). */
#define BGEMM_SUM_GAMMA 1.01

static int
is_bf16(float v)
{
	uint32_t u;
	memcpy(&u, &v, 4);
	return (u & 0xffffu) == 0;
}

/* One shape: the worst difference relative to its bound (<= 1 passes). */
static double
worst_vs_ref(int m, int n, int k, int with_bias, int round_out, int threads, rng *g)
{
	float *x = xmalloc(((size_t)m * k + 1) * sizeof(float)), *W = xmalloc(((size_t)n * k + 1) * sizeof(float));
	float *bias = xmalloc(((size_t)n + 1) * sizeof(float));
	float *y = xmalloc(((size_t)m * n + 1) * sizeof(float)), *yr = xmalloc(((size_t)m * n + 1) * sizeof(float));
	for (size_t i = 0; i < (size_t)m * k; i++)
		x[i] = (float)(rng_normal(g) * (i % 97 == 3 ? 40.0 : 1.0));	/* outlier channels */
	for (size_t i = 0; i < (size_t)n * k; i++)
		W[i] = (float)(rng_normal(g) * 0.05);
	for (int j = 0; j < n; j++)
		bias[j] = (float)rng_normal(g);
	bgemm_b pb;
	bgemm_b_pack(&pb, W, n, k);
	bgemm(y, x, m, k, &pb, with_bias ? bias : NULL, round_out, threads);
	bgemm_ref(yr, x, m, k, W, n, with_bias ? bias : NULL, round_out);
	double worst = 0.0, u = ldexp(1.0, -24);
	int terms = k + (with_bias ? 1 : 0);
	double gam = terms * u / (1.0 - terms * u);
	for (int i = 0; i < m; i++)
		for (int j = 0; j < n; j++) {
			double s = with_bias ? fabs(bias[j]) : 0.0;
			for (int t = 0; t < k; t++)
				s += fabs((double)bf16_to_f32(f32_to_bf16(x[(size_t)i * k + t])) *
				    bf16_to_f32(f32_to_bf16(W[(size_t)j * k + t])));
			double bound = 2.0 * BGEMM_SUM_GAMMA * gam * s;
			float a = y[(size_t)i * n + j], b = yr[(size_t)i * n + j];
			if (round_out) {
				if (!is_bf16(a))
					return INFINITY;
				/* one bf16 unit at the larger magnitude */
				int e;
				frexp(fmax(fabs(a), fabs(b)), &e);
				bound += ldexp(1.0, e - 8);
			}
			double d = fabs((double)a - b);
			double r = bound > 0 ? d / bound : (d == 0 ? 0 : INFINITY);
			if (!(r <= worst))
				worst = r;
		}
	bgemm_b_done(&pb);
	free(x), free(W), free(bias), free(y), free(yr);
	return worst;
}

#define CHECKS_PER_KERNEL 4

static void
test_kernel(const char *name, rng *g)
{
	static const int ms[] = {1, 5, 6, 7, 13};
	static const int ns[] = {1, 15, 16, 17, 64, 65, 130};
	static const int ks[] = {1, 2, 3, 8, 33, 300};

	setenv("MASQ_BGEMM", name, 1);
	if (strcmp(bgemm_kernel(), name) != 0) {
		for (int i = 0; i < CHECKS_PER_KERNEL; i++)
			tap_ok(1, "bgemm kernel %s, check %d # SKIP this CPU does not run it", name, i + 1);
		unsetenv("MASQ_BGEMM");
		return;
	}
	for (int round_out = 0; round_out <= 1; round_out++) {
		double worst = 0.0;
		int cases = 0;
		for (size_t a = 0; a < sizeof ms / sizeof ms[0]; a++)
			for (size_t b = 0; b < sizeof ns / sizeof ns[0]; b++)
				for (size_t c = 0; c < sizeof ks / sizeof ks[0]; c++) {
					double r = worst_vs_ref(ms[a], ns[b], ks[c], (int)(c % 2), round_out, 1 + (int)(b % 3), g);
					cases++;
					if (!(r <= worst))
						worst = r;
				}
		tap_ok(worst <= 1.0, "%s: bgemm vs bgemm_ref, %s: %d shapes, worst %.3f of the bound", name,
		    round_out ? "rounded to bf16" : "float32 sums", cases, worst);
	}
	double r1 = worst_vs_ref(130, 70, 2048, 1, 1, 2, g);
	tap_ok(r1 <= 1.0, "%s: bgemm vs bgemm_ref, 130 x 70 x 2048 (blocks of rows), worst %.3f", name, r1);
	double r2 = worst_vs_ref(7, 20, 9001, 0, 0, 2, g);
	tap_ok(r2 <= 1.0, "%s: bgemm vs bgemm_ref, k 9001 (three blocks of k), worst %.3f", name, r2);
	unsetenv("MASQ_BGEMM");
}

/* The output rounding: bias values through a zero product. */
static void
test_rounding(void)
{
	static const uint32_t bits[] = {
		0x3f808000u,	/* a tie, even below: stays 0x3f80 */
		0x3f818000u,	/* a tie, odd below: up to 0x3f82 */
		0x3f808001u,	/* above the tie: up */
		0x3f807fffu,	/* below the tie: down */
		0x3fffffffu,	/* carries into the exponent */
		0x7f7fffffu,	/* the largest float: to infinity */
		0x7f800000u, 0xff800000u,	/* infinities */
		0x7fc00000u, 0x7f800001u, 0xffa00000u,	/* NaNs, one signalling */
		0x00000001u, 0x00008000u, 0x00018000u, 0x807fffffu,	/* subnormals */
		0x80000000u, 0x00000000u, 0xbf818000u, 0x4b7fffffu,
	};
	int nb = (int)(sizeof bits / sizeof bits[0]);
	float bias[64], x = 0.0f, W[64], y[64];
	for (int j = 0; j < 64; j++) {
		uint32_t u = bits[j % nb];
		memcpy(&bias[j], &u, 4);
		W[j] = 1.0f;
	}
	static const char *const kernels[] = {"sgemm", "avx512bf16"};
	for (int kk = 0; kk < 2; kk++) {
		setenv("MASQ_BGEMM", kernels[kk], 1);
		if (strcmp(bgemm_kernel(), kernels[kk]) != 0) {
			tap_ok(1, "%s: output rounding # SKIP this CPU does not run it", kernels[kk]);
			continue;
		}
		bgemm_b pb;
		bgemm_b_pack(&pb, W, 64, 1);
		bgemm(y, &x, 1, 1, &pb, bias, 1, 1);
		int bad = 0;
		for (int j = 0; j < 64; j++) {
			uint32_t got, want;
			float w = bf16_to_f32(f32_to_bf16(0.0f + bias[j]));	/* -0 + 0 is +0 */
			memcpy(&got, &y[j], 4);
			memcpy(&want, &w, 4);
			/* 0 + a NaN is a NaN; its payload is the hardware's */
			if (isnan(w) ? !isnan(y[j]) : got != want) {
				if (bad++ < 3)
					tap_diag("bias %08x: got %08x, want %08x", bits[j % nb], got, want);
			}
		}
		tap_ok(bad == 0, "%s: the output rounds as f32_to_bf16 (ties to even, overflow, NaN, subnormals)",
		    kernels[kk]);
		bgemm_b_done(&pb);
	}
	unsetenv("MASQ_BGEMM");
}

int
main(void)
{
	rng g;
	rng_init(&g, 0xbf16);
	tap_diag("bgemm kernel here: %s", bgemm_kernel());
	test_kernel("sgemm", &g);
	test_kernel("avx512bf16", &g);
	test_rounding();
	return tap_done();
}
