#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "core/bgemm.h"
#include "core/blas.h"
#include "core/dtype.h"
#include "core/util.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__clang__) || __GNUC__ >= 10)
#define BGEMM_AVX512BF16 1
#include <immintrin.h>
#endif

/*
 * The AVX512-BF16 kernel: vdpbf16ps multiplies two pairs of bf16 and adds
 * both products (exact in float32) to a float32 lane, with round to
 * nearest even; bf16 subnormals count as zero.  The weights are packed in
 * panels of 64 rows, two k at a time (pack_index); each row of x gives one
 * pair broadcast to every lane.  A 6 x 64 tile keeps its 24 accumulators
 * in registers over a block of k (the whole k up to BK_Q pairs; longer k
 * in equal blocks whose partial sums go through y), then adds the bias,
 * rounds to bf16 and stores.  Each lane sums its pairs in a fixed order (k
 * order by pairs, the odd element of a pair first), so the result depends
 * only on k and the block length, not on the thread count or the tiling.
 */
enum { BK_SGEMM, BK_AVX512BF16 };

#define BN 64		/* rows of W per panel: four zmm of sixteen floats */
#define BM 6		/* rows of x per tile */
#define BK_Q 2048	/* pairs of k per block at most (a 512 KiB panel block) */

static size_t
pack_index(int kp, int j, int t)
{
	return ((size_t)(j / BN) * (size_t)(kp / 2) + (size_t)(t / 2)) * BN * 2 + (size_t)(j % BN) * 2 +
	    (size_t)(t % 2);
}

static int
kern_runs(int kern)
{
	if (kern == BK_SGEMM)
		return 1;
#ifdef BGEMM_AVX512BF16
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
	    __builtin_cpu_supports("avx512bf16");
#else
	return 0;
#endif
}

static int
kern_pick(void)
{
	const char *e = getenv("MASQ_BGEMM");
	if (e != NULL && strcmp(e, "sgemm") == 0)
		return BK_SGEMM;
	return kern_runs(BK_AVX512BF16) ? BK_AVX512BF16 : BK_SGEMM;
}

const char *
bgemm_kernel(void)
{
	return kern_pick() == BK_AVX512BF16 ? "avx512bf16" : "sgemm";
}

void
bf16_round_inplace(float *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		x[i] = bf16_round(x[i]);
}

void
bgemm_b_pack(bgemm_b *pb, const float *W, int n, int k)
{
	MASQ_ASSERT(n >= 0 && k >= 0);
	memset(pb, 0, sizeof *pb);
	pb->n = n;
	pb->k = k;
	pb->kp = (k + 1) / 2 * 2;
	pb->kern = kern_pick();
	if (pb->kern == BK_SGEMM) {
		pb->w = xmalloc(xmul(xmul((size_t)n, (size_t)k), sizeof(float)) + 1);
		for (size_t i = 0; i < (size_t)n * k; i++)
			pb->w[i] = bf16_round(W[i]);
		return;
	}
	int np = (n + BN - 1) / BN * BN;
	pb->b = xcalloc(xmul((size_t)np, (size_t)(pb->kp ? pb->kp : 2)), sizeof(uint16_t));
	for (int j = 0; j < n; j++)
		for (int t = 0; t < k; t++)
			pb->b[pack_index(pb->kp, j, t)] = bf16_rne(W[(size_t)j * k + t]);
}

void
bgemm_b_done(bgemm_b *pb)
{
	free(pb->b);
	free(pb->w);
	memset(pb, 0, sizeof *pb);
}

void
bgemm_ref(float *y, const float *x, int m, int k, const float *W, int n, const float *bias, int round_out)
{
	for (int i = 0; i < m; i++)
		for (int j = 0; j < n; j++) {
			float acc = 0.0f;
			for (int t = 0; t < k; t++)
				acc += bf16_round(x[(size_t)i * k + t]) * bf16_round(W[(size_t)j * k + t]);
			if (bias != NULL)
				acc += bias[j];
			y[(size_t)i * n + j] = round_out ? bf16_round(acc) : acc;
		}
}

/* ---- the AVX512-BF16 kernel ---------------------------------------------------------- */

#ifdef BGEMM_AVX512BF16

/* acc += the pairwise products of u and s, in place (the intrinsic makes
 * GCC 12 copy every accumulator each step, as with vpdpbusd in igemm.c). */
#define DPBF16(acc, u, s) __asm__("vdpbf16ps %2, %1, %0" : "+v"(acc) : "v"(u), "v"(s))
#define B_ROW(i)                                                                       \
	do {                                                                           \
		int32_t pr;                                                            \
		memcpy(&pr, A + (i) * lda + 2 * (size_t)q, sizeof pr);                 \
		__m512i a = _mm512_set1_epi32(pr);                                     \
		DPBF16(c##i##0, b0, a);                                                \
		DPBF16(c##i##1, b1, a);                                                \
		DPBF16(c##i##2, b2, a);                                                \
		DPBF16(c##i##3, b3, a);                                                \
	} while (0)
#define B_OUT(i)                                                                       \
	do {                                                                           \
		_mm512_storeu_ps(T + (i) * 64, c##i##0);                               \
		_mm512_storeu_ps(T + (i) * 64 + 16, c##i##1);                          \
		_mm512_storeu_ps(T + (i) * 64 + 32, c##i##2);                          \
		_mm512_storeu_ps(T + (i) * 64 + 48, c##i##3);                          \
	} while (0)

/* The loop alone, its sums stored to T (BM x 64). */
__attribute__((target("avx512f,avx512bw,avx512bf16"), noinline)) static void
tile_sums(const uint16_t *A, size_t lda, const uint16_t *Bp, int nq, float *T)
{
	__m512 z = _mm512_setzero_ps();
	__m512 c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z;
	__m512 c20 = z, c21 = z, c22 = z, c23 = z, c30 = z, c31 = z, c32 = z, c33 = z;
	__m512 c40 = z, c41 = z, c42 = z, c43 = z, c50 = z, c51 = z, c52 = z, c53 = z;
	for (int q = 0; q < nq; q++) {
		const uint16_t *b = Bp + (size_t)q * BN * 2;
		__m512i b0 = _mm512_loadu_si512((const void *)b);
		__m512i b1 = _mm512_loadu_si512((const void *)(b + 32));
		__m512i b2 = _mm512_loadu_si512((const void *)(b + 64));
		__m512i b3 = _mm512_loadu_si512((const void *)(b + 96));
		B_ROW(0); B_ROW(1); B_ROW(2); B_ROW(3); B_ROW(4); B_ROW(5);
	}
	B_OUT(0); B_OUT(1); B_OUT(2); B_OUT(3); B_OUT(4); B_OUT(5);
}

/* v rounded to bf16 values as f32_to_bf16 rounds them (nearest even, NaN
 * kept a quiet NaN), sixteen at a time on the bits. */
__attribute__((target("avx512f,avx512bw"))) static inline __m512
round16(__m512 v)
{
	__m512i u = _mm512_castps_si512(v);
	__m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
	__m512i r = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd));
	__m512i nanq = _mm512_or_si512(u, _mm512_set1_epi32(0x00400000));
	__mmask16 isnan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
	r = _mm512_mask_mov_epi32(r, isnan, nanq);
	return _mm512_castsi512_ps(_mm512_and_si512(r, _mm512_set1_epi32((int)0xffff0000u)));
}

/* One tile: rows i0 .. i0+rows-1, panel columns j0 .. j0+ncols-1 of y. */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void
tile(const uint16_t *A, size_t lda, const uint16_t *Bp, int nq, float *y, int n, int i0, int j0, int rows,
    const uint16_t mask[4], int first, int last, const float *bias, int round_out)
{
	float T[BM * 64] __attribute__((aligned(64)));
	tile_sums(A, lda, Bp, nq, T);
	for (int i = 0; i < rows; i++) {
		float *r = y + (size_t)(i0 + i) * n + j0;
		for (int v = 0; v < 4; v++) {
			__m512 c = _mm512_load_ps(T + i * 64 + 16 * v);
			if (!first)
				c = _mm512_add_ps(_mm512_maskz_loadu_ps(mask[v], r + 16 * v), c);
			if (last && bias != NULL)
				c = _mm512_add_ps(c, _mm512_maskz_loadu_ps(mask[v], bias + j0 + 16 * v));
			if (last && round_out)
				c = round16(c);
			_mm512_mask_storeu_ps(r + 16 * v, mask[v], c);
		}
	}
}

struct bjob {
	float *y;
	const uint16_t *A;	/* (mp, kp) bf16, zero padded */
	int m, kq;
	const bgemm_b *pb;
	const float *bias;
	int round_out;
};

/* Panels [lo, hi) over every row of x and every block of k. */
static void
bjob_panels(void *ctx, int lo, int hi, int tid)
{
	struct bjob *jb = ctx;
	(void)tid;
	const bgemm_b *pb = jb->pb;
	int n = pb->n, nqt = pb->kp / 2;
	size_t kp = (size_t)pb->kp;
	int mc = (int)((512 * 1024) / ((size_t)jb->kq * 4)) / BM * BM;
	if (mc < BM)
		mc = BM;
	for (int q0 = 0; q0 < nqt; q0 += jb->kq) {
		int nq = nqt - q0 < jb->kq ? nqt - q0 : jb->kq;
		int first = q0 == 0, last = q0 + nq == nqt;
		for (int m0 = 0; m0 < jb->m; m0 += mc) {
			int m1 = m0 + mc < jb->m ? m0 + mc : jb->m;
			for (int p = lo; p < hi; p++) {
				const uint16_t *Bp = pb->b + ((size_t)p * nqt + (size_t)q0) * BN * 2;
				int j0 = p * BN, ncols = n - j0 < BN ? n - j0 : BN;
				uint16_t mask[4];
				for (int v = 0; v < 4; v++) {
					int c = ncols - 16 * v;
					mask[v] = c >= 16 ? 0xffff : c <= 0 ? 0 : (uint16_t)((1u << c) - 1);
				}
				for (int i0 = m0; i0 < m1; i0 += BM) {
					int rows = m1 - i0 < BM ? m1 - i0 : BM;
					tile(jb->A + (size_t)i0 * kp + (size_t)q0 * 2, kp, Bp, nq, jb->y, n, i0, j0, rows,
					    mask, first, last, jb->bias, jb->round_out);
				}
			}
		}
	}
}

/* x (m, k) as bf16 rows of kp (the padding stays zero). */
struct cjob {
	uint16_t *Ap;
	const float *x;
	int k, kp;
};

/* Rows [lo, hi) of the conversion. */
static void
cjob_rows(void *ctx, int lo, int hi, int tid)
{
	struct cjob *j = ctx;
	(void)tid;
	for (int i = lo; i < hi; i++)
		for (int t = 0; t < j->k; t++)
			j->Ap[(size_t)i * j->kp + t] = bf16_rne(j->x[(size_t)i * j->k + t]);
}

static void
bgemm_bf16(float *y, const float *x, int m, int k, const bgemm_b *pb, const float *bias, int round_out,
    int threads)
{
	size_t kp = (size_t)pb->kp;
	int mp = (m + BM - 1) / BM * BM, nqt = (int)(kp / 2);
	int nblk = (nqt + BK_Q - 1) / BK_Q;
	int kq = nblk > 0 ? (nqt + nblk - 1) / nblk : 1;
	uint16_t *Ap = xcalloc(xmul((size_t)mp, kp), sizeof(uint16_t));
	struct cjob cj = {Ap, x, k, (int)kp};
	masq_parallel(m, threads, cjob_rows, &cj);
	struct bjob jb = {y, Ap, m, kq, pb, bias, round_out};
	masq_parallel((pb->n + BN - 1) / BN, threads, bjob_panels, &jb);
	free(Ap);
}

#endif /* BGEMM_AVX512BF16 */

void
bgemm(float *y, const float *x, int m, int k, const bgemm_b *pb, const float *bias, int round_out,
    int threads)
{
	MASQ_ASSERT(m >= 0 && k == pb->k);
	int n = pb->n;
	if (m == 0 || n == 0)
		return;
#ifdef BGEMM_AVX512BF16
	if (pb->kern == BK_AVX512BF16 && k > 0 && kern_runs(BK_AVX512BF16)) {
		bgemm_bf16(y, x, m, k, pb, bias, round_out, threads);
		return;
	}
#endif
	MASQ_ASSERT(pb->w != NULL || k == 0);
	float *xb = xmalloc(xmul(xmul((size_t)m, (size_t)k), sizeof(float)) + 1);
	for (size_t i = 0; i < (size_t)m * k; i++)
		xb[i] = bf16_round(x[i]);
	if (k > 0)
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, xb, k, pb->w, k, 0.0f, y, n);
	else
		memset(y, 0, xmul(xmul((size_t)m, (size_t)n), sizeof(float)));
	free(xb);
	for (int i = 0; i < m; i++) {
		float *r = y + (size_t)i * n;
		for (int j = 0; j < n; j++) {
			float v = bias != NULL ? r[j] + bias[j] : r[j];
			r[j] = round_out ? bf16_round(v) : v;
		}
	}
}
