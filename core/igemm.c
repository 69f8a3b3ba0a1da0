#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "core/igemm.h"
#include "core/util.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define IGEMM_X86 1
#include <immintrin.h>
#if defined(__clang__) || __GNUC__ >= 9
#define IGEMM_AVX512VNNI 1
#endif
#if !defined(__clang__) && __GNUC__ >= 11
#define IGEMM_AVXVNNI 1	/* clang 14 lacks the cpu-supports name */
#endif
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

enum { K_PLAIN, K_AVX2, K_AVXVNNI, K_AVX512VNNI };

#define MR 3		/* rows of A per tile */
#define NR 3		/* rows of B per tile */
#define KSTEP 32	/* bytes per vector step */

/*
 * The VNNI kernels (AVX512-VNNI on zmm, AVX-VNNI on ymm) use vpdpbusd,
 * which multiplies four unsigned by four signed bytes and adds the four
 * products to an int32 lane, without saturation.  The weights are the
 * unsigned operand, stored as b + 128 in a panel layout (vnni_index); the
 * activations' four bytes are broadcast to every lane.  A tile of VN_MR
 * rows of A by nb columns keeps its accumulators in registers over a
 * block of k (the whole k up to 16384), adds them to C between blocks,
 * subtracts 128 * sum(a) per row after the last and then stores the int32
 * sums or, with an epilogue, the rescaled floats.  A lane's int32 sum may wrap where the exact
 * sum((b + 128) a) exceeds 2^31 (k above 66000), but the arithmetic is
 * modulo 2^32 and the true result fits int32 (IGEMM_MAX_K), so the final
 * value is exact either way.
 */
#define VN_MR 6		/* rows of A per tile */
#define VN512_NB 64	/* columns per panel: four zmm of sixteen int32 */
#define VN256_NB 16	/* columns per panel: two ymm of eight int32 */
#define KC_Q 4096	/* groups of four k per block at most (k 16384: a 1 MiB zmm panel) */

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

/* ---- the rescale --------------------------------------------------------------------- */

/* What igemm_scaled writes after the sums: y[i][j] = float(C[i][j] *
 * (sa[i] * ws[j])) + bias[j]; y NULL: the int32 sums themselves. */
struct epi {
	float *y;
	const float *sa, *ws, *bias;
};

/* One row of the rescale: the product of the two scales and the exact sum
 * in double, rounded once to float, then the float bias add. */
static void
rescale_row(float *y, const int32_t *c, int n, double st, const float *ws, const float *bias)
{
	for (int j = 0; j < n; j++) {
		float v = (float)((double)c[j] * (st * (double)ws[j]));
		y[j] = bias != NULL ? v + bias[j] : v;
	}
}

void
igemm_rescale_ref(float *y, const int32_t *C, int m, int n, const float *sa, const float *ws,
    const float *bias)
{
	for (int i = 0; i < m; i++)
		rescale_row(y + (size_t)i * n, C + (size_t)i * n, n, (double)sa[i], ws, bias);
}

/* ---- packing ------------------------------------------------------------------------- */

/*
 * The VNNI kernels' layout: panels of `nb` columns (rows of B); within a
 * panel, for each group of four k, the four bytes of every column in turn,
 * so that one vector load gives the next four k of nb/16 (or nb/8) columns.
 * Stored as b + 128 in [1, 255]: vpdpbusd's unsigned operand.  Padding
 * (k beyond k, columns beyond n) holds 128, level 0.
 */
static size_t
vnni_index(const igemm_b *pb, int j, int t)
{
	size_t nq = (size_t)pb->kp / 4;
	return ((size_t)(j / pb->nb) * nq + (size_t)(t / 4)) * (size_t)pb->nb * 4 +
	    (size_t)(j % pb->nb) * 4 + (size_t)(t % 4);
}

/* The level of row j, column t of a packed B, in either layout. */
static int
packed_level(const igemm_b *pb, int j, int t)
{
	if (pb->nb > 0)
		return (int)((const uint8_t *)pb->b)[vnni_index(pb, j, t)] - 128;
	return pb->b[(size_t)j * pb->kp + t];
}

static int kernel_pick(void);

void
igemm_b_pack(igemm_b *pb, const int8_t *B, int n, int k)
{
	MASQ_ASSERT(n >= 0 && k >= 0 && k <= IGEMM_MAX_K);
	memset(pb, 0, sizeof *pb);
	pb->n = n;
	pb->k = k;
	pb->kern = kernel_pick();
	pb->nb = pb->kern == K_AVX512VNNI ? VN512_NB : pb->kern == K_AVXVNNI ? VN256_NB : 0;
	pb->kp = (k + KSTEP - 1) / KSTEP * KSTEP;
	/* rows padded with zero rows to whole tiles (NR) or whole panels (nb) */
	int unit = pb->nb > 0 ? pb->nb : NR;
	int np = (n + unit - 1) / unit * unit;
	size_t bytes = xmul((size_t)np, (size_t)(pb->kp ? pb->kp : 1));
	pb->b = xcalloc(bytes, 1);
	if (pb->nb > 0)
		memset(pb->b, 128, bytes);
	pb->rowsum = xcalloc((size_t)np + 1, sizeof(int32_t));
	int maxabs = 0;
	for (int j = 0; j < n; j++) {
		const int8_t *src = B + (size_t)j * k;
		int32_t s = 0;
		for (int t = 0; t < k; t++) {
			int8_t v = src[t];
			MASQ_ASSERT(v >= -127);
			if (pb->nb > 0)
				((uint8_t *)pb->b)[vnni_index(pb, j, t)] = (uint8_t)(v + 128);
			else
				pb->b[(size_t)j * pb->kp + t] = v;
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

static const char *const kernel_names[] = {"plain", "avx2", "avxvnni", "avx512vnni"};

/* Does this CPU (and this compiler) run kernel kern? */
static int
kernel_runs(int kern)
{
	if (kern == K_PLAIN)
		return 1;
#ifdef IGEMM_X86
	__builtin_cpu_init();
	switch (kern) {
	case K_AVX2:
		return __builtin_cpu_supports("avx2");
#ifdef IGEMM_AVXVNNI
	case K_AVXVNNI:
		return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avxvnni");
#endif
#ifdef IGEMM_AVX512VNNI
	case K_AVX512VNNI:
		return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		    __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
		    __builtin_cpu_supports("avx512vnni");
#endif
	default:
		break;
	}
#endif
	return 0;
}

/* The best kernel this CPU runs, or the one MASQ_IGEMM names when the CPU
 * runs it (a name it cannot run, or does not know, falls back to the best:
 * the sums are the same either way). */
static int
kernel_pick(void)
{
	int want = -1;
	const char *e = getenv("MASQ_IGEMM");
	if (e != NULL)
		for (int i = 0; i < (int)(sizeof kernel_names / sizeof kernel_names[0]); i++)
			if (strcmp(e, kernel_names[i]) == 0)
				want = i;
	if (want >= 0 && kernel_runs(want))
		return want;
	for (int kern = K_AVX512VNNI; kern > K_PLAIN; kern--)
		if (kernel_runs(kern))
			return kern;
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
	return kernel_names[kernel_pick()];
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


/* ---- the VNNI kernels ---------------------------------------------------------------- */

/* The four bytes of a at p as one int32 (a load; no alignment assumed). */
static inline int32_t
quad_at(const int8_t *p)
{
	int32_t v;
	memcpy(&v, p, sizeof v);
	return v;
}

#ifdef IGEMM_AVX512VNNI
/*
 * One VN_MR x 64 tile over nq groups of four k.  A: rows of lda bytes from
 * the block's first k; Bp: the panel block (nq x 256 bytes); C: the tile's
 * first element, ldc int32 apart.  The sums start from zero in registers;
 * after the loop, rows (1..VN_MR) rows and the columns in mask[0..3] of C
 * are added (unless first) and stored; corr (when last) holds 128 * sum(a)
 * of each row.  (Loading C before the loop made GCC keep the accumulators
 * in memory.)  24 accumulators, four of B and the broadcast
 * are 29 of the 32 zmm registers; named variables keep them there.
 */
/* acc += the four-byte dot products of u (unsigned) and s (signed), in
 * place: GCC 12 compiles the intrinsic with a copy of every accumulator
 * and a store to the stack each step (half the speed), so the one
 * instruction is written out. */
#define DPBUSD(acc, u, s) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "v"(s))
#define Z_ROW(i)                                                                       \
	do {                                                                           \
		__m512i a = _mm512_set1_epi32(quad_at(A + (i) * lda + 4 * (size_t)q)); \
		DPBUSD(c##i##0, b0, a);                                                \
		DPBUSD(c##i##1, b1, a);                                                \
		DPBUSD(c##i##2, b2, a);                                                \
		DPBUSD(c##i##3, b3, a);                                                \
	} while (0)
#define Z_OUT(i)                                                                       \
	do {                                                                           \
		_mm512_storeu_si512((void *)(T + (i) * 64), c##i##0);                  \
		_mm512_storeu_si512((void *)(T + (i) * 64 + 16), c##i##1);             \
		_mm512_storeu_si512((void *)(T + (i) * 64 + 32), c##i##2);             \
		_mm512_storeu_si512((void *)(T + (i) * 64 + 48), c##i##3);             \
	} while (0)

/* The loop alone, its sums stored to T (VN_MR x 64): with nothing
 * conditional after it, GCC keeps the accumulators in registers. */
__attribute__((target("avx512f,avx512bw,avx512vnni"), noinline)) static void
tile_vnni512_sums(const int8_t *A, size_t lda, const uint8_t *Bp, int nq, int32_t *T)
{
	__m512i z = _mm512_setzero_si512();
	__m512i c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z;
	__m512i c20 = z, c21 = z, c22 = z, c23 = z, c30 = z, c31 = z, c32 = z, c33 = z;
	__m512i c40 = z, c41 = z, c42 = z, c43 = z, c50 = z, c51 = z, c52 = z, c53 = z;
	for (int q = 0; q < nq; q++) {
		const uint8_t *b = Bp + (size_t)q * VN512_NB * 4;
		__m512i b0 = _mm512_loadu_si512((const void *)b);
		__m512i b1 = _mm512_loadu_si512((const void *)(b + 64));
		__m512i b2 = _mm512_loadu_si512((const void *)(b + 128));
		__m512i b3 = _mm512_loadu_si512((const void *)(b + 192));
		Z_ROW(0); Z_ROW(1); Z_ROW(2); Z_ROW(3); Z_ROW(4); Z_ROW(5);
	}
	Z_OUT(0); Z_OUT(1); Z_OUT(2); Z_OUT(3); Z_OUT(4); Z_OUT(5);
}

/*
 * One VN_MR x 64 tile over nq groups of four k.  A: rows of lda bytes from
 * the block's first k; Bp: the panel block (nq x 256 bytes); C: the tile's
 * first element, ldc int32 apart.  The first `rows` rows and the columns in
 * mask[0..3] of C receive the sums, added to what C holds unless first;
 * when last, less corr (128 * sum(a) of each row).  24 accumulators, four
 * of B and the broadcast are 29 of the 32 zmm registers.
 */
/* y[0..15] (the lanes in m) = float(c * (st * ws)) + bias: the scalar
 * rescale_row's operations, in the same order, eight doubles at a time
 * (the same bits, but for which NaN payload wins when both scales are NaN:
 * the compiler may swap a scalar product's operands). */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) static inline void
store_scaled512(float *y, __m512i c, double st, const float *ws, const float *bias, uint16_t m)
{
	__mmask8 ml = (__mmask8)(m & 0xff), mh = (__mmask8)(m >> 8);
	__m512d s = _mm512_set1_pd(st);
	__m512d wl = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(ml, ws));
	__m512d wh = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(mh, ws + 8));
	__m512d cl = _mm512_cvtepi32_pd(_mm512_castsi512_si256(c));
	__m512d ch = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(c, 1));
	__m256 vl = _mm512_cvtpd_ps(_mm512_mul_pd(cl, _mm512_mul_pd(s, wl)));
	__m256 vh = _mm512_cvtpd_ps(_mm512_mul_pd(ch, _mm512_mul_pd(s, wh)));
	if (bias != NULL) {
		vl = _mm256_add_ps(vl, _mm256_maskz_loadu_ps(ml, bias));
		vh = _mm256_add_ps(vh, _mm256_maskz_loadu_ps(mh, bias + 8));
	}
	_mm256_mask_storeu_ps(y, ml, vl);
	_mm256_mask_storeu_ps(y + 8, mh, vh);
}

/*
 * One VN_MR x 64 tile over nq groups of four k: rows i0.., columns j0.. of
 * the product.  A: the tile's rows, lda bytes apart, from the block's first
 * k; Bp: the panel block (nq x 256 bytes).  The first `rows` rows and the
 * columns in mask[0..3] receive the sums: added to the partial sums in C
 * unless first; when last, less 128 * sum(a) (corr) and, with an epilogue,
 * rescaled into ep->y instead of C.  24 accumulators, four of B and the
 * broadcast are 29 of the 32 zmm registers.
 */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"))) static void
tile_vnni512(const int8_t *A, size_t lda, const uint8_t *Bp, int nq, int32_t *C, int n,
    int i0, int j0, int rows, const uint16_t mask[4], int first, int last, const int32_t *corr,
    const struct epi *ep)
{
	int32_t T[VN_MR * 64] __attribute__((aligned(64)));
	tile_vnni512_sums(A, lda, Bp, nq, T);
	for (int i = 0; i < rows; i++) {
		size_t at = (size_t)(i0 + i) * n + j0;
		__m512i s = _mm512_set1_epi32(last ? corr[i0 + i] : 0);
		for (int v = 0; v < 4; v++) {
			__m512i c = _mm512_load_si512((const void *)(T + i * 64 + 16 * v));
			if (!first)
				c = _mm512_add_epi32(c, _mm512_maskz_loadu_epi32(mask[v], C + at + 16 * v));
			c = _mm512_sub_epi32(c, s);
			if (last && ep->y != NULL)
				store_scaled512(ep->y + at + 16 * v, c, (double)ep->sa[i0 + i], ep->ws + j0 + 16 * v,
				    ep->bias != NULL ? ep->bias + j0 + 16 * v : NULL, mask[v]);
			else
				_mm512_mask_storeu_epi32(C + at + 16 * v, mask[v], c);
		}
	}
}
#endif /* IGEMM_AVX512VNNI */

#ifdef IGEMM_AVXVNNI
/*
 * The same tile on ymm (AVX-VNNI, VEX-encoded: no masks, no embedded
 * broadcast): VN_MR x 16 columns, twelve accumulators, two of B and the
 * broadcast in the sixteen ymm registers.  Columns beyond ncols go through
 * a small buffer.
 */
#define DPBUSD_VEX(acc, u, s) __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u), "x"(s))
#define Y_ROW(i)                                                                       \
	do {                                                                           \
		__m256i a = _mm256_set1_epi32(quad_at(A + (i) * lda + 4 * (size_t)q)); \
		DPBUSD_VEX(c##i##0, b0, a);                                            \
		DPBUSD_VEX(c##i##1, b1, a);                                            \
	} while (0)
#define Y_OUT(i)                                                                       \
	do {                                                                           \
		_mm256_storeu_si256((__m256i *)(T + (i) * 16), c##i##0);               \
		_mm256_storeu_si256((__m256i *)(T + (i) * 16 + 8), c##i##1);           \
	} while (0)

__attribute__((target("avx2,avxvnni"), noinline)) static void
tile_avxvnni_sums(const int8_t *A, size_t lda, const uint8_t *Bp, int nq, int32_t *T)
{
	__m256i z = _mm256_setzero_si256();
	__m256i c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z;
	__m256i c30 = z, c31 = z, c40 = z, c41 = z, c50 = z, c51 = z;
	for (int q = 0; q < nq; q++) {
		const uint8_t *b = Bp + (size_t)q * VN256_NB * 4;
		__m256i b0 = _mm256_loadu_si256((const __m256i *)b);
		__m256i b1 = _mm256_loadu_si256((const __m256i *)(b + 32));
		Y_ROW(0); Y_ROW(1); Y_ROW(2); Y_ROW(3); Y_ROW(4); Y_ROW(5);
	}
	Y_OUT(0); Y_OUT(1); Y_OUT(2); Y_OUT(3); Y_OUT(4); Y_OUT(5);
}

/* The same tile on ymm (AVX-VNNI, VEX-encoded: no masks): VN_MR x 16
 * columns, twelve accumulators, two of B and the broadcast in the sixteen
 * ymm registers; the first ncols columns receive the sums as in
 * tile_vnni512, the epilogue by the scalar rescale_row. */
static void
tile_avxvnni(const int8_t *A, size_t lda, const uint8_t *Bp, int nq, int32_t *C, int n,
    int i0, int j0, int rows, int ncols, int first, int last, const int32_t *corr,
    const struct epi *ep)
{
	int32_t T[VN_MR * 16];
	tile_avxvnni_sums(A, lda, Bp, nq, T);
	for (int i = 0; i < rows; i++) {
		size_t at = (size_t)(i0 + i) * n + j0;
		uint32_t s = last ? (uint32_t)corr[i0 + i] : 0;
		int32_t *r = T + i * 16;
		for (int j = 0; j < ncols; j++) {
			uint32_t v = (uint32_t)r[j] - s;	/* modulo 2^32 */
			if (!first)
				v += (uint32_t)C[at + j];
			r[j] = (int32_t)v;
		}
		if (last && ep->y != NULL)
			rescale_row(ep->y + at, r, ncols, (double)ep->sa[i0 + i], ep->ws + j0,
			    ep->bias != NULL ? ep->bias + j0 : NULL);
		else
			memcpy(C + at, r, (size_t)ncols * sizeof(int32_t));
	}
}
#endif /* IGEMM_AVXVNNI */

/* The VNNI product's operands; vjob_panels computes panels [lo, hi) over
 * every row of A and every block of k. */
struct vjob {
	int32_t *C;		/* (m, n): the partial sums, or the result without an epilogue */
	const int8_t *A;	/* (mp, kp), zero padded */
	const int32_t *corr;	/* (mp): 128 * sum(a) of each row, modulo 2^32 */
	int m, kq;		/* rows; groups of four k per block */
	const igemm_b *pb;
	const struct epi *ep;
};

static void
vjob_panels(void *ctx, int lo, int hi, int tid)
{
	struct vjob *jb = ctx;
	(void)tid;
	const igemm_b *pb = jb->pb;
	int n = pb->n, nb = pb->nb, nqt = pb->kp / 4;
	size_t kp = (size_t)pb->kp;
	/* rows of A per block: about 512 KiB of them, half the L2, stay there
	 * while the thread's panels pass */
	int mc = (int)((512 * 1024) / ((size_t)jb->kq * 4)) / VN_MR * VN_MR;
	if (mc < VN_MR)
		mc = VN_MR;

	for (int q0 = 0; q0 < nqt; q0 += jb->kq) {
		int nq = nqt - q0 < jb->kq ? nqt - q0 : jb->kq;
		int first = q0 == 0, last = q0 + nq == nqt;
		for (int m0 = 0; m0 < jb->m; m0 += mc) {
			int m1 = m0 + mc < jb->m ? m0 + mc : jb->m;
			for (int p = lo; p < hi; p++) {
				const uint8_t *Bp = (const uint8_t *)pb->b +
				    ((size_t)p * nqt + (size_t)q0) * (size_t)nb * 4;
				int j0 = p * nb, ncols = n - j0 < nb ? n - j0 : nb;
				uint16_t mask[4];
				for (int v = 0; v < 4; v++) {
					int c = ncols - 16 * v;
					mask[v] = c >= 16 ? 0xffff : c <= 0 ? 0 : (uint16_t)((1u << c) - 1);
				}
				for (int i0 = m0; i0 < m1; i0 += VN_MR) {
					int rows = m1 - i0 < VN_MR ? m1 - i0 : VN_MR;
					const int8_t *A = jb->A + (size_t)i0 * kp + (size_t)q0 * 4;
#ifdef IGEMM_AVX512VNNI
					if (pb->kern == K_AVX512VNNI)
						tile_vnni512(A, kp, Bp, nq, jb->C, n, i0, j0, rows, mask, first, last,
						    jb->corr, jb->ep);
#endif
#ifdef IGEMM_AVXVNNI
					if (pb->kern == K_AVXVNNI)
						tile_avxvnni(A, kp, Bp, nq, jb->C, n, i0, j0, rows, ncols, first, last,
						    jb->corr, jb->ep);
#endif
					(void)A, (void)mask, (void)rows, (void)first, (void)last, (void)ncols;
				}
			}
		}
	}
}

/* The VNNI product into C (ep->y NULL) or rescaled into ep->y (C then
 * holds the partial sums of a k longer than one block, or is NULL). */
static void
igemm_vnni(int32_t *C, const int8_t *A, int m, int k, const igemm_b *pb, const struct epi *ep, int threads)
{
	size_t kp = (size_t)pb->kp;
	int mp = (m + VN_MR - 1) / VN_MR * VN_MR;
	int nqt = (int)(kp / 4);
	/* k in as few equal blocks of at most KC_Q groups as it takes: the
	 * partial sums between blocks go through C, which costs more than a
	 * panel read from L2 */
	int nblk = (nqt + KC_Q - 1) / KC_Q;
	int kq = nblk > 0 ? (nqt + nblk - 1) / nblk : 1;
	int32_t *scratch = NULL;
	if (C == NULL && nblk > 1)
		C = scratch = xmalloc(xmul(xmul((size_t)m, (size_t)pb->n), sizeof(int32_t)));
	int8_t *Ap = xcalloc(xmul((size_t)mp, kp), 1);
	int32_t *corr = xcalloc((size_t)mp, sizeof(int32_t));
	for (int i = 0; i < m; i++) {
		const int8_t *src = A + (size_t)i * k;
		memcpy(Ap + (size_t)i * kp, src, (size_t)k);
		uint32_t s = 0;
		for (int t = 0; t < k; t++)
			s += (uint32_t)(int32_t)src[t];
		corr[i] = (int32_t)(s * 128u);	/* modulo 2^32, as the lanes add */
	}
	struct vjob jb = {C, Ap, corr, m, kq, pb, ep};
	masq_parallel((pb->n + pb->nb - 1) / pb->nb, threads, vjob_panels, &jb);
	free(Ap);
	free(corr);
	free(scratch);
}

/* ---- the blocked driver (AVX2) -------------------------------------------------------- */

struct job {
	int32_t *C;
	const uint8_t *A;	/* (mp, kp): a + 128 (offset) or a (sign), zero padded */
	int m, mp, mc;
	const igemm_b *pb;
	int offset, chunk;
};

/* The B tiles [lo, hi) over every row of A. */
static void
job_tiles(void *ctx, int lo, int hi, int tid)
{
#ifdef IGEMM_X86
	struct job *jb = ctx;
	(void)tid;
	const igemm_b *pb = jb->pb;
	int kp = pb->kp, n = pb->n;
	int32_t t[MR][NR];

	for (int m0 = 0; m0 < jb->mp; m0 += jb->mc) {
		int m1 = m0 + jb->mc < jb->mp ? m0 + jb->mc : jb->mp;
		for (int nt = lo; nt < hi; nt++) {
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
	(void)ctx, (void)lo, (void)hi, (void)tid;
#endif
}

void
igemm(int32_t *C, const int8_t *A, int m, int k, const igemm_b *pb, int threads)
{
	MASQ_ASSERT(m >= 0 && k == pb->k);
	int n = pb->n;
	if (m == 0 || n == 0)
		return;
	if (pb->kern == K_PLAIN || k == 0 || !kernel_runs(pb->kern)) {
		/* the plain loops on the packed rows (their padding is level 0) */
		for (int i = 0; i < m; i++)
			for (int j = 0; j < n; j++) {
				int32_t acc = 0;
				const int8_t *a = A + (size_t)i * k;
				for (int t = 0; t < k; t++)
					acc += (int32_t)a[t] * (int32_t)packed_level(pb, j, t);
				C[(size_t)i * n + j] = acc;
			}
		return;
	}
	if (pb->nb > 0) {
		struct epi none = {NULL, NULL, NULL, NULL};
		igemm_vnni(C, A, m, k, pb, &none, threads);
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
	struct job jb = {C, Ap, m, mp, mc, pb, offset, chunk};
	masq_parallel((n + NR - 1) / NR, threads, job_tiles, &jb);
	free(Ap);
}

/* ---- the product rescaled ------------------------------------------------------------- */

struct rjob {
	float *y;
	const int32_t *C;
	int n;
	const float *sa, *ws, *bias;
};

/* Rows [lo, hi) of the rescale. */
static void
rjob_rows(void *ctx, int lo, int hi, int tid)
{
	struct rjob *jb = ctx;
	(void)tid;
	for (int i = lo; i < hi; i++)
		rescale_row(jb->y + (size_t)i * jb->n, jb->C + (size_t)i * jb->n, jb->n, (double)jb->sa[i],
		    jb->ws, jb->bias);
}

void
igemm_scaled(float *y, const int8_t *A, int m, int k, const igemm_b *pb, const float *sa,
    const float *ws, const float *bias, int threads)
{
	MASQ_ASSERT(m >= 0 && k == pb->k);
	int n = pb->n;
	if (m == 0 || n == 0)
		return;
	if (pb->nb > 0 && k > 0 && kernel_runs(pb->kern)) {
		/* the VNNI kernels rescale each tile as its sums complete */
		struct epi ep = {y, sa, ws, bias};
		igemm_vnni(NULL, A, m, k, pb, &ep, threads);
		return;
	}
	int32_t *C = xmalloc(xmul(xmul((size_t)m, (size_t)n), sizeof(int32_t)));
	igemm(C, A, m, k, pb, threads);
	struct rjob jb = {y, C, n, sa, ws, bias};
	masq_parallel(m, threads, rjob_rows, &jb);
	free(C);
}
