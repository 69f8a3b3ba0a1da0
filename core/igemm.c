#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/igemm.h"
#include "core/util.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define IGEMM_X86 1
#include <immintrin.h>
#endif

/*
 * The AVX2 kernels multiply 32 bytes at a time with vpmaddubsw, which takes
 * one unsigned and one signed operand and adds adjacent products into int16
 * with saturation.  Exactness is kept two ways:
 *
 * - offset (weights within [-63, 63], so every W7 and narrower grid): the
 *   activations are stored as a + 128 in [1, 255]; a pair of products is at
 *   most 2 * 255 * 63 = 32130 and never saturates.  Several steps add in
 *   int16 while their sum provably fits (chunk below), then vpmaddwd widens
 *   them to int32.  C = sum((a + 128) b) - 128 * rowsum(b).
 * - sign (any level in [-127, 127]): |a| times b with a's sign moved onto it
 *   (vpsignb); a pair is at most 2 * 127 * 127 = 32258.
 *
 * Either way every int16 and int32 sum is exact, so both kernels equal the
 * plain loops bit for bit; the tests check that on every shape class.
 */

#define MR 3		/* rows of A per tile */
#define NR 3		/* rows of B per tile */
#define KSTEP 32	/* bytes per vector step */

/* ---- the plain twin ---------------------------------------------------------------- */

void
igemm_ref(int32_t *C, const int8_t *A, int m, int k, const int8_t *B, int n)
{
	MASQ_ASSERT(m >= 0 && n >= 0 && k >= 0 && k <= IGEMM_MAX_K);
	for (int i = 0; i < m; i++)
		for (int j = 0; j < n; j++) {
			int32_t acc = 0;
			const int8_t *a = A + (size_t)i * k, *b = B + (size_t)j * k;
			for (int t = 0; t < k; t++)
				acc += (int32_t)a[t] * (int32_t)b[t];
			C[(size_t)i * n + j] = acc;
		}
}

/* ---- packing ------------------------------------------------------------------------- */

void
igemm_b_pack(igemm_b *pb, const int8_t *B, int n, int k)
{
	MASQ_ASSERT(n >= 0 && k >= 0 && k <= IGEMM_MAX_K);
	memset(pb, 0, sizeof *pb);
	pb->n = n;
	pb->k = k;
	pb->kp = (k + KSTEP - 1) / KSTEP * KSTEP;
	/* rows padded to a multiple of NR with zero rows */
	int np = (n + NR - 1) / NR * NR;
	pb->b = xcalloc(xmul((size_t)np, (size_t)(pb->kp ? pb->kp : 1)), 1);
	pb->rowsum = xcalloc((size_t)np + 1, sizeof(int32_t));
	int maxabs = 0;
	for (int j = 0; j < n; j++) {
		const int8_t *src = B + (size_t)j * k;
		int8_t *dst = pb->b + (size_t)j * pb->kp;
		int32_t s = 0;
		for (int t = 0; t < k; t++) {
			int8_t v = src[t];
			MASQ_ASSERT(v >= -127);
			dst[t] = v;
			s += v;
			int av = v < 0 ? -v : v;
			maxabs = av > maxabs ? av : maxabs;
		}
		pb->rowsum[j] = s;
	}
	pb->maxabs = maxabs;
}

void
igemm_b_done(igemm_b *pb)
{
	free(pb->b);
	free(pb->rowsum);
	memset(pb, 0, sizeof *pb);
}

/* ---- dispatch ------------------------------------------------------------------------ */

enum { K_PLAIN, K_AVX2 };

static int
kernel_pick(void)
{
	const char *e = getenv("MASQ_IGEMM");
	if (e != NULL && strcmp(e, "plain") == 0)
		return K_PLAIN;
#ifdef IGEMM_X86
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2"))
		return K_AVX2;
#endif
	return K_PLAIN;
}

int
igemm_enabled(void)
{
	const char *e = getenv("MASQ_QGEMM");
	return !(e != NULL && strcmp(e, "float") == 0);
}

const char *
igemm_kernel(void)
{
	return kernel_pick() == K_AVX2 ? "avx2" : "plain";
}

/* ---- the AVX2 kernels ---------------------------------------------------------------- */

#ifdef IGEMM_X86

/* Sum of the eight int32 lanes of v. */
__attribute__((target("avx2"))) static inline int32_t
hsum32(__m256i v)
{
	__m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
	return _mm_cvtsi128_si32(s);
}

/*
 * One MR x NR tile over the whole padded k, offset form: A holds a + 128
 * (lda = kp), B the packed levels (ldb = kp); `chunk` steps add in int16
 * before widening.  out[i][j] receives the raw sums (the caller subtracts
 * 128 * rowsum).  The nine accumulators are named variables, not an array,
 * so that they live in registers: nine, the three rows of B, one of A and
 * a product are fourteen of the sixteen ymm registers (a 4 x 3 tile needs
 * seventeen and spills).
 */
#define ROW_OFFSET(i)                                                                  \
	do {                                                                           \
		__m256i a = _mm256_loadu_si256((const __m256i *)(A + (i) * (size_t)kp + off)); \
		h##i##0 = _mm256_add_epi16(h##i##0, _mm256_maddubs_epi16(a, b0));     \
		h##i##1 = _mm256_add_epi16(h##i##1, _mm256_maddubs_epi16(a, b1));     \
		h##i##2 = _mm256_add_epi16(h##i##2, _mm256_maddubs_epi16(a, b2));     \
	} while (0)
#define WIDEN(i, j) acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(h##i##j, ones))

__attribute__((target("avx2"))) static void
tile_offset(const uint8_t *A, const int8_t *B, int kp, int chunk, int32_t out[MR][NR])
{
	const __m256i ones = _mm256_set1_epi16(1);
	__m256i acc[MR][NR];
	for (int i = 0; i < MR; i++)
		for (int j = 0; j < NR; j++)
			acc[i][j] = _mm256_setzero_si256();
	int steps = kp / KSTEP;
	for (int s0 = 0; s0 < steps; s0 += chunk) {
		int s1 = s0 + chunk < steps ? s0 + chunk : steps;
		__m256i z = _mm256_setzero_si256();
		__m256i h00 = z, h01 = z, h02 = z, h10 = z, h11 = z, h12 = z;
		__m256i h20 = z, h21 = z, h22 = z;
		for (int s = s0; s < s1; s++) {
			size_t off = (size_t)s * KSTEP;
			__m256i b0 = _mm256_loadu_si256((const __m256i *)(B + off));
			__m256i b1 = _mm256_loadu_si256((const __m256i *)(B + kp + off));
			__m256i b2 = _mm256_loadu_si256((const __m256i *)(B + 2 * (size_t)kp + off));
			ROW_OFFSET(0);
			ROW_OFFSET(1);
			ROW_OFFSET(2);
		}
		WIDEN(0, 0); WIDEN(0, 1); WIDEN(0, 2);
		WIDEN(1, 0); WIDEN(1, 1); WIDEN(1, 2);
		WIDEN(2, 0); WIDEN(2, 1); WIDEN(2, 2);
		/* acc stays in memory: kept in registers across the chunks it
		 * would push the accumulators above out of theirs */
		__asm__ volatile("" : : : "memory");
	}
	for (int i = 0; i < MR; i++)
		for (int j = 0; j < NR; j++)
			out[i][j] = hsum32(acc[i][j]);
}

/* The same tile, sign form: A holds the signed levels; each pair widens at
 * once (two 127 * 127 pairs would not fit int16). */
#define PAIR_SIGN(i, j, bj)                                                            \
	h##i##j = _mm256_add_epi32(h##i##j,                                            \
	    _mm256_madd_epi16(_mm256_maddubs_epi16(ua, _mm256_sign_epi8(bj, a)), ones))
#define ROW_SIGN(i)                                                                    \
	do {                                                                           \
		__m256i a = _mm256_loadu_si256((const __m256i *)(A + (i) * (size_t)kp + off)); \
		__m256i ua = _mm256_abs_epi8(a);                                       \
		PAIR_SIGN(i, 0, b0);                                                   \
		PAIR_SIGN(i, 1, b1);                                                   \
		PAIR_SIGN(i, 2, b2);                                                   \
	} while (0)

__attribute__((target("avx2"))) static void
tile_sign(const uint8_t *Au, const int8_t *B, int kp, int chunk, int32_t out[MR][NR])
{
	(void)chunk;
	const int8_t *A = (const int8_t *)Au;
	const __m256i ones = _mm256_set1_epi16(1);
	__m256i z = _mm256_setzero_si256();
	__m256i h00 = z, h01 = z, h02 = z, h10 = z, h11 = z, h12 = z;
	__m256i h20 = z, h21 = z, h22 = z;
	int steps = kp / KSTEP;
	for (int s = 0; s < steps; s++) {
		size_t off = (size_t)s * KSTEP;
		__m256i b0 = _mm256_loadu_si256((const __m256i *)(B + off));
		__m256i b1 = _mm256_loadu_si256((const __m256i *)(B + kp + off));
		__m256i b2 = _mm256_loadu_si256((const __m256i *)(B + 2 * (size_t)kp + off));
		ROW_SIGN(0);
		ROW_SIGN(1);
		ROW_SIGN(2);
	}
	out[0][0] = hsum32(h00); out[0][1] = hsum32(h01); out[0][2] = hsum32(h02);
	out[1][0] = hsum32(h10); out[1][1] = hsum32(h11); out[1][2] = hsum32(h12);
	out[2][0] = hsum32(h20); out[2][1] = hsum32(h21); out[2][2] = hsum32(h22);
}

#endif /* IGEMM_X86 */

/* ---- the blocked driver ------------------------------------------------------------- */

struct job {
	int32_t *C;
	const uint8_t *A;	/* (mp, kp): a + 128 (offset) or a (sign), zero padded */
	int m, mp, mc;
	const igemm_b *pb;
	int offset, chunk;
	int nt0, nt1;		/* the B tiles [nt0, nt1) this thread computes */
};

static void *
job_main(void *arg)
{
#ifdef IGEMM_X86
	struct job *jb = arg;
	const igemm_b *pb = jb->pb;
	int kp = pb->kp, n = pb->n;
	int32_t t[MR][NR];

	for (int m0 = 0; m0 < jb->mp; m0 += jb->mc) {
		int m1 = m0 + jb->mc < jb->mp ? m0 + jb->mc : jb->mp;
		for (int nt = jb->nt0; nt < jb->nt1; nt++) {
			int j0 = nt * NR;
			const int8_t *B = pb->b + (size_t)j0 * kp;
			for (int i0 = m0; i0 < m1; i0 += MR) {
				const uint8_t *A = jb->A + (size_t)i0 * kp;
				if (jb->offset)
					tile_offset(A, B, kp, jb->chunk, t);
				else
					tile_sign(A, B, kp, jb->chunk, t);
				for (int i = 0; i < MR && i0 + i < jb->m; i++)
					for (int j = 0; j < NR && j0 + j < n; j++)
						jb->C[(size_t)(i0 + i) * n + j0 + j] =
						    jb->offset ? t[i][j] - 128 * pb->rowsum[j0 + j] : t[i][j];
			}
		}
	}
#else
	(void)arg;
#endif
	return NULL;
}

void
igemm(int32_t *C, const int8_t *A, int m, int k, const igemm_b *pb, int threads)
{
	MASQ_ASSERT(m >= 0 && k == pb->k);
	int n = pb->n;
	if (m == 0 || n == 0)
		return;
	if (kernel_pick() == K_PLAIN || k == 0) {
		/* the plain loops on the packed rows (their padding is zero) */
		for (int i = 0; i < m; i++)
			for (int j = 0; j < n; j++) {
				int32_t acc = 0;
				const int8_t *a = A + (size_t)i * k, *b = pb->b + (size_t)j * pb->kp;
				for (int t = 0; t < k; t++)
					acc += (int32_t)a[t] * (int32_t)b[t];
				C[(size_t)i * n + j] = acc;
			}
		return;
	}
	int kp = pb->kp;
	int mp = (m + MR - 1) / MR * MR;
	int offset = pb->maxabs <= 63;
	/* steps whose int16 pair sums stay below 2^15 (offset form) */
	int chunk = offset && pb->maxabs > 0 ? 32767 / (2 * 255 * pb->maxabs) : kp / KSTEP;
	if (chunk < 1)
		chunk = 1;
	uint8_t *Ap = xcalloc(xmul((size_t)mp, (size_t)kp), 1);
	for (int i = 0; i < m; i++) {
		const int8_t *src = A + (size_t)i * k;
		uint8_t *dst = Ap + (size_t)i * kp;
		if (offset)
			for (int t = 0; t < k; t++)
				dst[t] = (uint8_t)(src[t] + 128);
		else
			memcpy(dst, src, (size_t)k);
		/* offset padding is 0, not 128: it meets zero levels of B either way */
	}
	/* rows of A per block: about 256 KiB, the L2 share a B tile sweeps */
	int mc = (int)((256 * 1024) / (size_t)kp) / MR * MR;
	if (mc < MR)
		mc = MR;
	int ntiles = (n + NR - 1) / NR;
	if (threads < 1)
		threads = 1;
	if (threads > 16)
		threads = 16;
	if (threads > ntiles)
		threads = ntiles;
	struct job jobs[16];
	pthread_t th[16];
	int started[16] = {0};
	for (int t = 0; t < threads; t++) {
		jobs[t] = (struct job){C, Ap, m, mp, mc, pb, offset, chunk,
		    (int)((long)ntiles * t / threads), (int)((long)ntiles * (t + 1) / threads)};
	}
	for (int t = 1; t < threads; t++)
		started[t] = pthread_create(&th[t], NULL, job_main, &jobs[t]) == 0;
	job_main(&jobs[0]);
	for (int t = 1; t < threads; t++) {
		if (started[t])
			pthread_join(th[t], NULL);
		else
			job_main(&jobs[t]);	/* no thread: run its share here */
	}
	free(Ap);
}
