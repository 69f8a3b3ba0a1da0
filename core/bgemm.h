/*
 * bgemm.h: the bf16 GEMM of the bf16 forward (--compute bf16): y (m, n) =
 * bf16(x (m, k) W (n, k)^T + bias), x and W rounded to bf16, the products
 * (exact in float32) summed in float32, the bias added in float32 and the
 * sum rounded once to bf16, as PyTorch's bf16 Linear does on a CPU.
 *
 *	bgemm_b wb;
 *	bgemm_b_pack(&wb, W, out, in);              // the weight, once
 *	bgemm(y, x, n, in, &wb, bias, 1, threads);  // any number of times
 *	bgemm_b_done(&wb);
 *
 * Kernels, picked when a weight is packed: "avx512bf16" (vdpbf16ps, where
 * the CPU has AVX512-BF16), else "sgemm" (the bf16 values as float32
 * through cblas_sgemm: the same products, summed in the BLAS's order).
 * MASQ_BGEMM=sgemm asks for the second.  The float32 sums differ between
 * kernels by their rounding, bounded in tests/test_bgemm.c by Higham's
 * gamma_k times the sum of |products|; after the bf16 rounding that is
 * one bf16 unit where the sum is well away from zero, and can be more
 * where it cancels (4096 * 4096 + 1 - 4096 * 4096 is 1 or 0).
 * bgemm_ref is the plain twin: three loops, float32 sums in k order.
 */
#ifndef MASQ_BGEMM_H
#define MASQ_BGEMM_H

#include <stdint.h>

typedef struct bgemm_b {
	int n, k, kp;		/* kp: k rounded up to a pair */
	int kern;		/* the kernel it was packed for */
	uint16_t *b;		/* avx512bf16: panels of 64 rows, k in pairs */
	float *w;		/* sgemm: (n, k), the bf16 values as float32 */
} bgemm_b;

/* Pack W (n, k), rounded to bf16 (nearest even). */
void bgemm_b_pack(bgemm_b *pb, const float *W, int n, int k);
void bgemm_b_done(bgemm_b *pb);

/* y (m, n) = x (m, k) W^T + bias (bias NULL: none), x rounded to bf16 on
 * the way in; round_out: the result rounded to bf16 (else the float32
 * sums, for tests).  threads <= 0: one. */
void bgemm(float *y, const float *x, int m, int k, const bgemm_b *pb, const float *bias, int round_out,
    int threads);
/* The plain twin, on the unpacked W. */
void bgemm_ref(float *y, const float *x, int m, int k, const float *W, int n, const float *bias,
    int round_out);

/* x (n) rounded to bf16 values in place (nearest even; NaN stays NaN). */
void bf16_round_inplace(float *x, size_t n);

/* "avx512bf16" or "sgemm": what a weight packed now would run on. */
const char *bgemm_kernel(void);

#endif
