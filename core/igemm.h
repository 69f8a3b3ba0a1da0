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
 * igemm_ref is the plain twin (three loops); igemm picks a kernel at run
 * time: AVX2 where the CPU has it, else the plain loops.  MASQ_IGEMM=plain
 * in the environment forces the plain loops (tests and diagnosis).  See
 * HACKING.md, "Integer GEMM".
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
	int8_t *b;		/* (n, kp) */
	int32_t *rowsum;	/* (n) */
	int maxabs;
} igemm_b;

void igemm_b_pack(igemm_b *pb, const int8_t *B, int n, int k);
void igemm_b_done(igemm_b *pb);

/* C (m, n) = A (m, k) B^T: the kernel igemm_kernel() names, on `threads`
 * threads (<= 0: one). */
void igemm(int32_t *C, const int8_t *A, int m, int k, const igemm_b *pb, int threads);
/* The plain twin on the unpacked B (n, k). */
void igemm_ref(int32_t *C, const int8_t *A, int m, int k, const int8_t *B, int n);

/* 0 when MASQ_QGEMM=float asks the quantized linears to keep the float
 * product (fake quant through sgemm), else 1. */
int igemm_enabled(void);

/* "avx2" or "plain": what igemm runs on this machine under this environment. */
const char *igemm_kernel(void);

#endif
