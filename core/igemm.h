/*
 * igemm.h: integer GEMM for the quantized linears: C (m, n) int32 =
 * A (m, k) int8 times B (n, k)^T int8, with every level in [-127, 127] (the
 * symmetric grids of quant.h, 8 bits and fewer).  The sums are exact in
 * int32 (k <= IGEMM_MAX_K), so the result does not depend on the kernel,
 * the blocking, the thread count or the BLAS library: the scales are
 * applied after, by the caller (engine_qlinear_rows_int).
 *
 *	igemm_b wb;
 *	igemm_b_pack(&wb, levels, out, in);         // the weight, once
 *	igemm(C, act_levels, n, in, &wb, threads);  // any number of times
 *	igemm_b_done(&wb);
 *
 * igemm_ref is the plain twin (three loops); igemm_b_pack picks a kernel at
 * run time, the best the CPU runs: AVX512-VNNI, AVX-VNNI, AVX2, else the
 * plain loops.  MASQ_IGEMM=plain|avx2|avxvnni|avx512vnni in the environment
 * asks for one (tests and diagnosis; one the CPU cannot run falls back to
 * the best).  See HACKING.md, "Integer GEMM".
 */
#ifndef MASQ_IGEMM_H
#define MASQ_IGEMM_H

#include <stdint.h>

/* Longest k whose sums of 127 * 127 products fit int32. */
#define IGEMM_MAX_K 133000

/* A packed weight: rows padded with zeros to kp (a multiple of 32), each
 * row's sum of levels, and the largest |level| (which picks the kernel). */
typedef struct igemm_b {
	int n, k, kp;
	int kern;		/* the kernel it was packed for (igemm_kernel's index) */
	int nb;			/* 0: rows of kp levels; else panels of nb rows, VNNI order, b + 128 */
	int8_t *b;		/* (n, kp) in the kernel's layout; NULL: not packed */
	int32_t *rowsum;	/* (n) */
	int maxabs;
} igemm_b;

void igemm_b_pack(igemm_b *pb, const int8_t *B, int n, int k);
void igemm_b_done(igemm_b *pb);

/* C (m, n) = A (m, k) B^T: the kernel igemm_kernel() names, on `threads`
 * threads (<= 0: one). */
void igemm(int32_t *C, const int8_t *A, int m, int k, const igemm_b *pb, int threads);
/*
 * y (m, n) = float(C[i][j] * (sa[i] * ws[j])) + bias[j] (bias NULL: none),
 * C = A B^T: the scales multiplied in double, the exact sum times them in
 * double, rounded once to float, then the float bias add, bit for bit what
 * igemm followed by igemm_rescale_ref gives (NaN payloads aside: where both
 * scales are NaN, which of the two comes out is the compiler's choice).  The VNNI kernels rescale
 * each tile as it completes (no int32 product in memory); the others
 * rescale after, on `threads` threads.
 */
void igemm_scaled(float *y, const int8_t *A, int m, int k, const igemm_b *pb, const float *sa,
    const float *ws, const float *bias, int threads);
/* The rescale alone, plain: the twin igemm_scaled is tested against. */
void igemm_rescale_ref(float *y, const int32_t *C, int m, int n, const float *sa, const float *ws,
    const float *bias);

/* The plain twin on the unpacked B (n, k). */
void igemm_ref(int32_t *C, const int8_t *A, int m, int k, const int8_t *B, int n);

/* 0 when MASQ_QGEMM=float asks the quantized linears to keep the float
 * product (fake quant through sgemm), else 1. */
int igemm_enabled(void);

/* "avx512vnni", "avxvnni", "avx2" or "plain": what a weight packed now would
 * run on, on this machine under this environment. */
const char *igemm_kernel(void);

#endif
