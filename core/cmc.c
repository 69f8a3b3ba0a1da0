#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/blas.h"
#include "core/cmc.h"
#include "core/dtype.h"

/* Seed of the test matrix when cmc_compute is given no generator. */
#define CMC_DEFAULT_SEED 0x636d63ULL

/* A new (n) double array holding the float array x (n). */
static double *
cmc_dup_double(const float *x, size_t n)
{
	double *y = xmalloc(xmul(n, sizeof(double)));
	for (size_t i = 0; i < n; i++)
		y[i] = x[i];
	return y;
}

/* Sum of squares of x (n). */
static double
cmc_sumsq(const double *x, size_t n)
{
	double acc = 0;
	for (size_t i = 0; i < n; i++)
		acc += x[i] * x[i];
	return acc;
}

/* Index of the first non-finite value of x (n), or n when all are finite. */
static size_t
cmc_find_nonfinite(const float *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isfinite(x[i]))
			return i;
	return n;
}

/* Check G (d, d) as cmc_basis_init does. */
static int
cmc_basis_check(const double *G, int d, double floor_rel, masq_err *err)
{
	if (d <= 0)
		return masq_err_set(err, MASQ_ERR_USAGE, "cmc: whitener of dimension %d", d);
	if (!(floor_rel > 0 && floor_rel < 1))
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "cmc: eigenvalue floor %g is not in (0, 1)", floor_rel);
	/* dsyevd's workspace (1 + 6d + 2d^2 doubles) in LAPACK's 32-bit
	 * integers: refused here, while G is still intact */
	if (1 + 6LL * d + 2LL * d * d > INT32_MAX)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "cmc: the eigendecomposition of a %d x %d Gram matrix needs more workspace "
		    "than LAPACK's 32-bit sizes hold (at most 32766 channels)", d, d);
	/* Only the upper triangle is read, as dsyevd does with uplo 'U'. */
	int nonzero = 0;
	for (int i = 0; i < d; i++)
		for (int j = i; j < d; j++) {
			double v = G[(size_t)i * d + j];
			if (!isfinite(v))
				return masq_err_set(err, MASQ_ERR_FORMAT,
				    "cmc: Gram matrix entry (%d, %d) is %g", i, j, v);
			if (v != 0)
				nonzero = 1;
		}
	if (!nonzero)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "cmc: the Gram matrix is zero: no tokens of this modality");
	return 0;
}

/* Transpose the square A (d, d) in place, in tiles for the caches. */
static void
cmc_transpose_square(double *A, int d)
{
	enum { TILE = 32 };
	for (int i0 = 0; i0 < d; i0 += TILE)
		for (int j0 = i0; j0 < d; j0 += TILE)
			for (int i = i0; i < i0 + TILE && i < d; i++)
				for (int j = (j0 == i0 ? i + 1 : j0); j < j0 + TILE && j < d; j++) {
					double t = A[(size_t)i * d + j];
					A[(size_t)i * d + j] = A[(size_t)j * d + i];
					A[(size_t)j * d + i] = t;
				}
}

/* dsyevd ('V', 'U') on the column-major A (d, d) in place, eigenvalues
 * ascending into w. LAPACKE's row-major call would transpose A into a copy
 * and back: one d x d array more at the layer's peak, and two passes over
 * it. The workspace is the query's, or LAPACK's documented minimum if that
 * is larger, sized in 64-bit arithmetic (cmc_basis_check refuses a d whose
 * minimum does not fit LAPACK's integers; a query beyond them is reported as
 * an illegal workspace, info -8): LAPACK's info. */
static lapack_int
cmc_dsyevd_colmajor(double *A, int d, double *w)
{
	double wq;
	lapack_int iwq, info;
	info = LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'V', 'U', d, A, d, w, &wq, -1, &iwq, -1);
	if (info != 0)
		return info;
	/* dsyevd's minimum for jobz 'V': 1 + 6d + 2d^2 reals, 3 + 5d integers */
	long long lmin = 1 + 6LL * d + 2LL * d * d, limin = 3 + 5LL * d;
	long long lwork = (long long)wq > lmin ? (long long)wq : lmin;
	long long liwork = (long long)iwq > limin ? (long long)iwq : limin;
	if (lwork > INT32_MAX || liwork > INT32_MAX)
		return -8;
	double *work = xmalloc(xmul((size_t)lwork, sizeof(double)));
	lapack_int *iwork = xmalloc(xmul((size_t)liwork, sizeof(lapack_int)));
	/* dsyevd, not ssyevd: see DESIGN.md, "Known pitfalls". */
	info = LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'V', 'U', d, A, d, w, work,
	    (lapack_int)lwork, iwork, (lapack_int)liwork);
	free(work);
	free(iwork);
	return info;
}

/* E's diagonal (d, new) for the Gram matrix C (d, d; upper triangle), and C
 * scaled by it to a unit diagonal in place (the upper triangle). */
static double *
cmc_scale_unit(double *C, int d)
{
	double *sc = xmalloc(xmul((size_t)d, sizeof(double)));
	for (int i = 0; i < d; i++) {
		double g = C[(size_t)i * d + i];
		sc[i] = g > 0 ? sqrt(g) : 1.0;
	}
	for (int i = 0; i < d; i++)
		for (int j = i; j < d; j++)
			C[(size_t)i * d + j] /= sc[i] * sc[j];
	return sc;
}

/* Eigendecompose C (d, d; upper triangle, channels at a unit diagonal) in
 * place into b, which owns C and sc (E's diagonal) on success. */
static int
cmc_basis_eig_scaled(cmc_basis *b, double *C, int d, double *sc, double floor_rel, masq_err *err)
{
	double *lam = xmalloc(xmul((size_t)d, sizeof(double)));
	/* Symmetric: mirrored, the row-major array is also the column-major
	 * matrix, and LAPACK works on it in place. */
	for (int i = 0; i < d; i++)
		for (int j = i + 1; j < d; j++)
			C[(size_t)j * d + i] = C[(size_t)i * d + j];
	lapack_int info = cmc_dsyevd_colmajor(C, d, lam);
	if (info != 0) {
		free(lam);
		free(sc);
		return masq_err_set(err, MASQ_ERR_INTERNAL,
		    "cmc: LAPACKE_dsyevd failed on the %d x %d Gram matrix (info %d)", d, d,
		    (int)info);
	}
	double lmax = lam[d - 1];
	if (!(lmax > 0)) {
		/* not a Gram matrix (those are semidefinite and not zero here);
		 * INTERNAL, as C is overwritten (cmc_basis_take's contract) */
		free(lam);
		free(sc);
		return masq_err_set(err, MASQ_ERR_INTERNAL,
		    "cmc: the Gram matrix has no positive eigenvalue (largest %g)", lmax);
	}
	/* Row k now holds the k-th eigenvector, ascending: reverse the rows'
	 * order, then transpose, so that column j is the j-th largest. */
	for (int i = 0, k = d - 1; i < k; i++, k--) {
		double *ri = C + (size_t)i * d, *rk = C + (size_t)k * d;
		for (int j = 0; j < d; j++) {
			double t = ri[j];
			ri[j] = rk[j];
			rk[j] = t;
		}
	}
	cmc_transpose_square(C, d);
	b->d = d;
	b->kind = CMC_WHITEN_EIG;
	b->lambda_max = lmax;
	b->P = C;
	b->scale = sc;
	b->n_floored = 0;
	b->sqrt_lambda = xmalloc(xmul((size_t)d, sizeof(double)));
	double floor_val = floor_rel * lmax;
	for (int j = 0; j < d; j++) {
		double l = lam[d - 1 - j];
		if (l < floor_val) {
			l = floor_val;
			b->n_floored++;
		}
		b->sqrt_lambda[j] = sqrt(l);
	}
	free(lam);
	return 0;
}

/* The largest eigenvalue of the symmetric C (d, d; upper triangle read):
 * CMC_POWER_STEPS power steps from the ones vector, the last Rayleigh
 * quotient, and at least the largest diagonal entry (both bound it from
 * below). */
static double
cmc_lambda_max(const double *C, int d)
{
	double *v = xmalloc(xmul((size_t)d, sizeof(double)));
	double *u = xmalloc(xmul((size_t)d, sizeof(double)));
	double lam = 0;
	for (int i = 0; i < d; i++) {
		v[i] = 1.0 / sqrt((double)d);
		lam = fmax(lam, C[(size_t)i * d + i]);
	}
	for (int it = 0; it < CMC_POWER_STEPS; it++) {
		cblas_dsymv(CblasRowMajor, CblasUpper, d, 1.0, C, d, v, 1, 0.0, u, 1);
		double q = cblas_ddot(d, v, 1, u, 1), nrm = cblas_dnrm2(d, u, 1);
		lam = fmax(lam, q);
		if (!(nrm > 0) || !isfinite(nrm))
			break;
		for (int i = 0; i < d; i++)
			v[i] = u[i] / nrm;
	}
	free(v);
	free(u);
	return lam;
}

/* Factor C (d, d; upper triangle, channels at a unit diagonal) in place
 * into b as CHOL; as EIG when dpotrf fails (C restored first). */
static int
cmc_basis_chol_scaled(cmc_basis *b, double *C, int d, double *sc, double floor_rel, masq_err *err)
{
	double lmax = cmc_lambda_max(C, d);
	if (!(lmax > 0) || !isfinite(lmax)) {
		free(sc);
		/* INTERNAL: the caller's Gram is scaled (cmc_basis_take's contract) */
		return masq_err_set(err, MASQ_ERR_INTERNAL,
		    "cmc: the Gram matrix has no positive eigenvalue (largest %g)", lmax);
	}
	/* C's mirror below the diagonal and its diagonal aside: what restores
	 * it if dpotrf fails */
	double *diag = xmalloc(xmul((size_t)d, sizeof(double)));
	for (int i = 0; i < d; i++) {
		diag[i] = C[(size_t)i * d + i];
		for (int j = i + 1; j < d; j++)
			C[(size_t)j * d + i] = C[(size_t)i * d + j];
	}
	double shift = floor_rel * lmax;
	for (int i = 0; i < d; i++)
		C[(size_t)i * d + i] += shift;
	/* column-major lower is the row-major upper: C + shift I = L L^T
	 * there, which read row-major is U = L^T */
	lapack_int info = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', d, C, d);
	if (info != 0) {
		for (int i = 0; i < d; i++) {
			C[(size_t)i * d + i] = diag[i];
			for (int j = i + 1; j < d; j++)
				C[(size_t)i * d + j] = C[(size_t)j * d + i];
		}
		free(diag);
		return cmc_basis_eig_scaled(b, C, d, sc, floor_rel, err);
	}
	free(diag);
	b->d = d;
	b->kind = CMC_WHITEN_CHOL;
	b->P = C;
	b->scale = sc;
	b->sqrt_lambda = NULL;
	b->n_floored = -1;
	b->lambda_max = lmax;
	return 0;
}

/* C (d, d) of malloc's into b, which owns it on success; C is untouched
 * when kind is neither. */
static int
cmc_basis_build(cmc_basis *b, double *C, int d, double floor_rel, int kind, masq_err *err)
{
	if (kind != CMC_WHITEN_EIG && kind != CMC_WHITEN_CHOL)
		return masq_err_set(err, MASQ_ERR_USAGE, "cmc: whitening factorization %d is not eig or cholesky", kind);
	double *sc = cmc_scale_unit(C, d);
	return kind == CMC_WHITEN_CHOL ? cmc_basis_chol_scaled(b, C, d, sc, floor_rel, err)
	    : cmc_basis_eig_scaled(b, C, d, sc, floor_rel, err);
}

int
cmc_basis_init_as(cmc_basis *b, const double *G, int d, double floor_rel, int kind, masq_err *err)
{
	memset(b, 0, sizeof *b);
	if (cmc_basis_check(G, d, floor_rel, err) < 0)
		return -1;
	size_t dd = xmul((size_t)d, (size_t)d);
	double *C = xmalloc(xmul(dd, sizeof(double)));
	memcpy(C, G, dd * sizeof(double));
	if (cmc_basis_build(b, C, d, floor_rel, kind, err) < 0) {
		free(C);
		return -1;
	}
	return 0;
}

int
cmc_basis_take_as(cmc_basis *b, double *G, int d, double floor_rel, int kind, masq_err *err)
{
	memset(b, 0, sizeof *b);
	if (cmc_basis_check(G, d, floor_rel, err) < 0)
		return -1;
	return cmc_basis_build(b, G, d, floor_rel, kind, err);
}

int
cmc_basis_init(cmc_basis *b, const double *G, int d, double floor_rel, masq_err *err)
{
	return cmc_basis_init_as(b, G, d, floor_rel, CMC_WHITEN_EIG, err);
}

int
cmc_basis_take(cmc_basis *b, double *G, int d, double floor_rel, masq_err *err)
{
	return cmc_basis_take_as(b, G, d, floor_rel, CMC_WHITEN_EIG, err);
}

void
cmc_basis_done(cmc_basis *b)
{
	free(b->P);
	free(b->sqrt_lambda);
	free(b->scale);
	memset(b, 0, sizeof *b);
}

int
cmc_whitener_bind(cmc_whitener *w, const cmc_basis *b, const float *s, masq_err *err)
{
	memset(w, 0, sizeof *w);
	for (int j = 0; j < b->d; j++)
		if (!isfinite(s[j]) || s[j] <= 0)
			return masq_err_set(err, MASQ_ERR_USAGE,
			    "cmc: smoothing factor %d is %g, not a positive number", j,
			    (double)s[j]);
	w->d = b->d;
	w->b = b;
	w->s = xmalloc(xmul((size_t)b->d, sizeof(double)));
	for (int j = 0; j < b->d; j++)
		w->s[j] = (double)s[j] / b->scale[j];
	return 0;
}

int
cmc_whitener_init(cmc_whitener *w, const double *G, const float *s, int d, double floor_rel,
    masq_err *err)
{
	return cmc_whitener_init_as(w, G, s, d, floor_rel, CMC_WHITEN_EIG, err);
}

int
cmc_whitener_init_as(cmc_whitener *w, const double *G, const float *s, int d, double floor_rel,
    int kind, masq_err *err)
{
	memset(w, 0, sizeof *w);
	cmc_basis own;
	if (cmc_basis_init_as(&own, G, d, floor_rel, kind, err) < 0)
		return -1;
	if (cmc_whitener_bind(w, &own, s, err) < 0) {
		cmc_basis_done(&own);
		return -1;
	}
	w->own = own;
	w->b = &w->own;
	return 0;
}

void
cmc_whitener_done(cmc_whitener *w)
{
	free(w->s);
	cmc_basis_done(&w->own);
	memset(w, 0, sizeof *w);
}

/* A (d, n) := D^-1 E A, row i divided by s_i / scale_i. */
static void
cmc_unsmooth_rows(const cmc_whitener *w, double *A, int n)
{
	for (int i = 0; i < w->d; i++) {
		double si = w->s[i];
		double *row = A + (size_t)i * n;
		for (int j = 0; j < n; j++)
			row[j] /= si;
	}
}

/* M (d, n) = K A (diag(sqrt lambda) P^T, or U) for A already through
 * cmc_unsmooth_rows. */
static void
cmc_whiten_unsmoothed(const cmc_whitener *w, const double *A, int n, double *M)
{
	int d = w->d;

	if (w->b->kind == CMC_WHITEN_CHOL) {
		memcpy(M, A, xmul(xmul((size_t)d, (size_t)n), sizeof(double)));
		cblas_dtrmm(CblasRowMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, d, n, 1.0,
		    w->b->P, d, M, n);
		return;
	}
	cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, n, d, 1.0, w->b->P, d, A, n, 0.0,
	    M, n);
	for (int i = 0; i < d; i++) {
		double sl = w->b->sqrt_lambda[i];
		double *row = M + (size_t)i * n;
		for (int j = 0; j < n; j++)
			row[j] *= sl;
	}
}

void
cmc_whiten(const cmc_whitener *w, const double *A, int n, double *M)
{
	size_t len = xmul((size_t)w->d, (size_t)n);
	double *As = xmalloc(xmul(len, sizeof(double)));

	memcpy(As, A, len * sizeof(double));
	cmc_unsmooth_rows(w, As, n);
	cmc_whiten_unsmoothed(w, As, n, M);
	free(As);
}

/* |M - (T L1) L2|_F^2 where M = T dWt (in, out) is already whitened (T = I
 * when w is NULL) and L1 (in, rank), L2 (rank, out) are the stored floats;
 * equal to |T (dWt - L1 L2)|_F^2, without a second (in, in, out) product. */
static double
cmc_residual_whitened(const cmc_whitener *w, const double *M, int in, int out, const float *L1,
    const float *L2, int rank)
{
	size_t n = xmul((size_t)in, (size_t)out);
	if (rank <= 0 || L1 == NULL || L2 == NULL)
		return cmc_sumsq(M, n);

	double *L1d = cmc_dup_double(L1, xmul((size_t)in, (size_t)rank));
	double *L2d = cmc_dup_double(L2, xmul((size_t)rank, (size_t)out));
	double *TL1 = L1d;
	if (w != NULL) {
		TL1 = xmalloc(xmul(xmul((size_t)in, (size_t)rank), sizeof(double)));
		cmc_unsmooth_rows(w, L1d, rank);
		cmc_whiten_unsmoothed(w, L1d, rank, TL1);
	}
	double *E = xmalloc(xmul(n, sizeof(double)));
	memcpy(E, M, n * sizeof(double));
	cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, in, out, rank, -1.0, TL1, rank,
	    L2d, out, 1.0, E, out);
	double res = cmc_sumsq(E, n);
	free(E);
	if (TL1 != L1d)
		free(TL1);
	free(L1d);
	free(L2d);
	return res;
}

double
cmc_residual(const cmc_whitener *w, const float *dWt, int in, int out, const float *L1,
    const float *L2, int rank)
{
	MASQ_ASSERT(in > 0 && out > 0);
	MASQ_ASSERT(w == NULL || w->d == in);
	size_t n = xmul((size_t)in, (size_t)out);
	double *E = cmc_dup_double(dWt, n);
	if (rank > 0 && L1 != NULL && L2 != NULL) {
		double *L1d = cmc_dup_double(L1, xmul((size_t)in, (size_t)rank));
		double *L2d = cmc_dup_double(L2, xmul((size_t)rank, (size_t)out));
		cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, in, out, rank, -1.0, L1d,
		    rank, L2d, out, 1.0, E, out);
		free(L1d);
		free(L2d);
	}
	double res;
	if (w != NULL) {
		double *TE = xmalloc(xmul(n, sizeof(double)));
		cmc_unsmooth_rows(w, E, out);
		cmc_whiten_unsmoothed(w, E, out, TE);
		res = cmc_sumsq(TE, n);
		free(TE);
	} else {
		res = cmc_sumsq(E, n);
	}
	free(E);
	return res;
}

/* Replace the column-major C (m, n; leading dimension m), m >= n, by the
 * orthonormal Q of its thin QR: the calls LAPACKE's row-major layout makes
 * on its transposed copy, so the same bits, without its two transposes
 * each way. */
static int
cmc_qr_colmajor(double *C, int m, int n, masq_err *err)
{
	double *tau = xmalloc(xmul((size_t)n, sizeof(double)));
	lapack_int info = LAPACKE_dgeqrf(LAPACK_COL_MAJOR, m, n, C, m, tau);
	if (info != 0) {
		free(tau);
		return masq_err_set(err, MASQ_ERR_INTERNAL,
		    "cmc: LAPACKE_dgeqrf failed on a %d x %d matrix (info %d)", m, n, (int)info);
	}
	info = LAPACKE_dorgqr(LAPACK_COL_MAJOR, m, n, n, C, m, tau);
	free(tau);
	if (info != 0)
		return masq_err_set(err, MASQ_ERR_INTERNAL,
		    "cmc: LAPACKE_dorgqr failed on a %d x %d matrix (info %d)", m, n, (int)info);
	return 0;
}

/* Tiles of the transposes between row-major blocks and LAPACK's layout. */
#define CMC_TTILE 32

/* The orthonormal Q of the thin QR of the row-major (m, n) block, m >= n,
 * in place: the block is ad (double) or af (float; the other NULL), copied
 * into LAPACK's layout in double in one pass and back in one. */
static int
cmc_orthonormalize_any(double *ad, float *af, int m, int n, masq_err *err)
{
	double *C = xmalloc(xmul(xmul((size_t)m, (size_t)n), sizeof(double)));
	for (int i0 = 0; i0 < m; i0 += CMC_TTILE)
		for (int j0 = 0; j0 < n; j0 += CMC_TTILE)
			for (int i = i0; i < i0 + CMC_TTILE && i < m; i++)
				for (int j = j0; j < j0 + CMC_TTILE && j < n; j++)
					C[(size_t)j * m + i] = ad ? ad[(size_t)i * n + j] : af[(size_t)i * n + j];
	int rc = cmc_qr_colmajor(C, m, n, err);
	for (int i0 = 0; i0 < m && rc == 0; i0 += CMC_TTILE)
		for (int j0 = 0; j0 < n; j0 += CMC_TTILE)
			for (int i = i0; i < i0 + CMC_TTILE && i < m; i++)
				for (int j = j0; j < j0 + CMC_TTILE && j < n; j++) {
					double q = C[(size_t)j * m + i];
					if (ad)
						ad[(size_t)i * n + j] = q;
					else
						af[(size_t)i * n + j] = (float)q;
				}
	free(C);
	return rc;
}

/* One CholeskyQR step on the row-major A (m, n), m >= n, in place: R^T R
 * = A^T A (dpotrf), A := A R^-1 (dtrtri, dtrmm), R (n, n) its workspace.
 * With check, A^T A must be within CMC_CHOLQR_NEAR of I in the Frobenius
 * norm: its eigenvalues are then within it of 1, cond(A) is below
 * sqrt(3), and the step is accurate to working precision.  0, or 1 (A
 * untouched) when A^T A is refused or not numerically positive definite. */
#define CMC_CHOLQR_NEAR 0.5
static int
cmc_cholqr_step(double *A, int m, int n, double *R, int check)
{
	/* dgemm rather than dsyrk, and R^-1 then dtrmm rather than dtrsm:
	 * OpenBLAS runs these several times faster on a tall, thin A */
	cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, n, m, 1.0, A, n, A, n, 0.0, R, n);
	if (check) {
		double off = 0;
		for (int i = 0; i < n; i++)
			for (int j = 0; j < n; j++) {
				double e = R[(size_t)i * n + j] - (i == j);
				off += e * e;
			}
		if (!(off < CMC_CHOLQR_NEAR * CMC_CHOLQR_NEAR))
			return 1;
	}
	/* R^T R with R upper in row-major is L L^T, L = R^T lower, in the
	 * column-major view of the same storage: no transposes */
	if (LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', n, R, n) != 0)
		return 1;
	for (int i = 0; i < n; i++)
		if (!(R[(size_t)i * n + i] > 0) || !isfinite(R[(size_t)i * n + i]))
			return 1;
	if (LAPACKE_dtrtri_work(LAPACK_COL_MAJOR, 'L', 'N', n, R, n) != 0)
		return 1;
	for (size_t i = 0; i < (size_t)n * n; i++)
		if (!isfinite(R[i]))
			return 1;
	cblas_dtrmm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, m, n, 1.0, R, n,
	    A, n);
	return 0;
}

/* The orthonormal Q of the row-major A (m, n), m >= n, in place, by
 * CholeskyQR2 (Fukaya et al. 2014): a first CholeskyQR step, which loses
 * orthogonality to cond(A)^2, and a second on its result, which restores
 * it; two GEMM-like products a step, where Householder QR of a tall, thin
 * block is mostly BLAS-2 (dgeqrf's panels) with twice the passes over A.
 * 0, or 1 where the first step fails or leaves a result the second cannot
 * repair (cond(A) beyond about 1e7, a range the sketch has not filled): A
 * is then spent. */
static int
cmc_cholqr2(double *A, int m, int n)
{
	double *R = xmalloc(xmul(xmul((size_t)n, (size_t)n), sizeof(double)));
	int rc = cmc_cholqr_step(A, m, n, R, 0) != 0 || cmc_cholqr_step(A, m, n, R, 1) != 0;
	free(R);
	return rc;
}

/* cmc_cholqr2 on A, or where it refuses, Householder QR from A's original
 * values, counted in *fallbacks. */
static int
cmc_orthonormalize_gram(double *A, int m, int n, int *fallbacks, masq_err *err)
{
	size_t mn = xmul((size_t)m, (size_t)n);
	double *A0 = xmalloc(xmul(mn, sizeof(double)));
	int rc = 0;
	memcpy(A0, A, mn * sizeof(double));
	if (cmc_cholqr2(A, m, n) != 0) {
		memcpy(A, A0, mn * sizeof(double));
		rc = cmc_orthonormalize_any(A, NULL, m, n, err);
		(*fallbacks)++;
	}
	free(A0);
	return rc;
}

/* Replace A (m, n), m >= n, by the orthonormal Q of its thin QR: by
 * Householder QR (fallbacks NULL), or cmc_orthonormalize_gram's. */
static int
cmc_orthonormalize(double *A, int m, int n, int *fallbacks, masq_err *err)
{
	if (fallbacks != NULL)
		return cmc_orthonormalize_gram(A, m, n, fallbacks, err);
	return cmc_orthonormalize_any(A, NULL, m, n, err);
}

/* Store L1 = T^-1 U_r (T = I without w) and L2 = S_r V_r^T as floats in r,
 * from U (in, >= rank; leading dimension ldu), S and Vt (>= rank, out); S
 * NULL: Vt is S_r V_r^T already. */
static int
cmc_store_factors(cmc_result *r, const cmc_whitener *w, const double *U, int ldu,
    const double *S, const double *Vt, masq_err *err)
{
	int in = r->in, out = r->out, rank = r->rank;
	size_t n1 = xmul((size_t)in, (size_t)rank), n2 = xmul((size_t)rank, (size_t)out);
	double *Ur = xmalloc(xmul(n1, sizeof(double)));
	int chol = w != NULL && w->b->kind == CMC_WHITEN_CHOL;

	for (int i = 0; i < in; i++) {
		double inv = w != NULL && !chol ? 1.0 / w->b->sqrt_lambda[i] : 1.0;
		for (int j = 0; j < rank; j++)
			Ur[(size_t)i * rank + j] = U[(size_t)i * ldu + j] * inv;
	}
	r->L1 = xmalloc(xmul(n1, sizeof(float)));
	r->L2 = xmalloc(xmul(n2, sizeof(float)));
	if (chol) {
		/* L1 = D E^-1 U^-1 U_r */
		cblas_dtrsm(CblasRowMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, in, rank, 1.0,
		    w->b->P, in, Ur, rank);
		for (int i = 0; i < in; i++) {
			double si = w->s[i];
			for (int j = 0; j < rank; j++)
				r->L1[(size_t)i * rank + j] = (float)(Ur[(size_t)i * rank + j] * si);
		}
	} else if (w != NULL) {
		double *L1d = xmalloc(xmul(n1, sizeof(double)));
		/* L1 = D E^-1 P diag(1/sqrt lambda) U_r */
		cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, in, rank, in, 1.0, w->b->P,
		    in, Ur, rank, 0.0, L1d, rank);
		for (int i = 0; i < in; i++) {
			double si = w->s[i];
			for (int j = 0; j < rank; j++)
				r->L1[(size_t)i * rank + j] = (float)(L1d[(size_t)i * rank + j] * si);
		}
		free(L1d);
	} else {
		for (size_t i = 0; i < n1; i++)
			r->L1[i] = (float)Ur[i];
	}
	free(Ur);
	for (int i = 0; i < rank; i++)
		for (int j = 0; j < out; j++)
			r->L2[(size_t)i * out + j] = (float)(S != NULL ? S[i] * Vt[(size_t)i * out + j]
			    : Vt[(size_t)i * out + j]);
	if (cmc_find_nonfinite(r->L1, n1) < n1 || cmc_find_nonfinite(r->L2, n2) < n2)
		return masq_err_set(err, MASQ_ERR_INTERNAL,
		    "cmc: the rank-%d factors overflow float32", rank);
	return 0;
}

/* Full SVD of M (in, out) with dgesdd; factors and all singular values into r. */
static int
cmc_svd_full(cmc_result *r, const cmc_whitener *w, const double *M, masq_err *err)
{
	int in = r->in, out = r->out, mn = in < out ? in : out;
	double *A = xmalloc(xmul(xmul((size_t)in, (size_t)out), sizeof(double)));
	double *U = xmalloc(xmul(xmul((size_t)in, (size_t)mn), sizeof(double)));
	double *Vt = xmalloc(xmul(xmul((size_t)mn, (size_t)out), sizeof(double)));
	int rc = 0;

	memcpy(A, M, (size_t)in * out * sizeof(double));
	r->n_sv = mn;
	r->sv = xmalloc(xmul((size_t)mn, sizeof(double)));
	lapack_int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', in, out, A, out, r->sv, U, mn,
	    Vt, out);
	if (info != 0)
		rc = masq_err_set(err, MASQ_ERR_INTERNAL,
		    "cmc: LAPACKE_dgesdd failed on a %d x %d matrix (info %d)", in, out, (int)info);
	else if (r->rank > 0)
		rc = cmc_store_factors(r, w, U, mn, r->sv, Vt, err);
	free(A);
	free(U);
	free(Vt);
	return rc;
}

/* cmc_randomized_finish by the eigendecomposition of the small Gram
 * matrix B B^T (k, k) = U_B S^2 U_B^T: the singular values are the square
 * roots of its eigenvalues (accurate to about eps (sigma_1 / sigma_i)^2
 * relative, ample for the kept ones), and the factors need no division by
 * them:
 * L2 = S_r V_r^T = U_B,r^T B, L1 from Y U_B,r. */
static int
cmc_randomized_finish_gram(cmc_result *r, const cmc_whitener *w, const double *B, const double *Y,
    int k, masq_err *err)
{
	int in = r->in, out = r->out, rank = r->rank, rc = 0;
	double *C = xmalloc(xmul(xmul((size_t)k, (size_t)k), sizeof(double)));
	double *lam = xmalloc(xmul((size_t)k, sizeof(double)));
	/* row-major lower is column-major upper, what cmc_dsyevd_colmajor
	 * reads; column j of its column-major result (row j here) is
	 * eigenvector j */
	cblas_dsyrk(CblasRowMajor, CblasLower, CblasNoTrans, k, out, 1.0, B, out, 0.0, C, k);
	lapack_int info = cmc_dsyevd_colmajor(C, k, lam);
	r->n_sv = k;
	r->sv = xmalloc(xmul((size_t)k, sizeof(double)));
	if (info != 0) {
		rc = masq_err_set(err, MASQ_ERR_INTERNAL,
		    "cmc: LAPACKE_dsyevd failed on the %d x %d Gram matrix of the projection (info %d)", k, k,
		    (int)info);
		goto out;
	}
	/* ascending from dsyevd: sigma descending, eigenvector rows reversed */
	for (int i = 0; i < k; i++)
		r->sv[i] = sqrt(fmax(lam[k - 1 - i], 0.0));
	if (rank > 0) {
		double *UBr = xmalloc(xmul(xmul((size_t)k, (size_t)rank), sizeof(double)));	/* (k, rank) */
		for (int j = 0; j < rank; j++)
			for (int i = 0; i < k; i++)
				UBr[(size_t)i * rank + j] = C[(size_t)(k - 1 - j) * k + i];
		double *U = xmalloc(xmul(xmul((size_t)in, (size_t)rank), sizeof(double)));
		double *SVt = xmalloc(xmul(xmul((size_t)rank, (size_t)out), sizeof(double)));
		cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, in, rank, k, 1.0, Y, k, UBr, rank,
		    0.0, U, rank);
		cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rank, out, k, 1.0, UBr, rank, B, out,
		    0.0, SVt, out);
		rc = cmc_store_factors(r, w, U, rank, NULL, SVt, err);
		free(SVt);
		free(U);
		free(UBr);
	}
out:
	free(C);
	free(lam);
	return rc;
}

/* The randomized SVD's last step, shared by both precisions: the exact SVD
 * of the small projection B (k, out) (overwritten), then U = Y U_B with the
 * orthonormal range basis Y (in, k), and the factors.  Fills r->sv.  gram:
 * cmc_randomized_finish_gram. */
static int
cmc_randomized_finish(cmc_result *r, const cmc_whitener *w, double *B, const double *Y, int k,
    int gram, masq_err *err)
{
	int in = r->in, out = r->out, rc = 0;
	if (gram)
		return cmc_randomized_finish_gram(r, w, B, Y, k, err);
	double *UB = xmalloc(xmul(xmul((size_t)k, (size_t)k), sizeof(double)));
	double *Vt = xmalloc(xmul(xmul((size_t)k, (size_t)out), sizeof(double)));
	r->n_sv = k;
	r->sv = xmalloc(xmul((size_t)k, sizeof(double)));
	lapack_int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', k, out, B, out, r->sv, UB, k,
	    Vt, out);
	if (info != 0) {
		rc = masq_err_set(err, MASQ_ERR_INTERNAL,
		    "cmc: LAPACKE_dgesdd failed on a %d x %d matrix (info %d)", k, out, (int)info);
	} else if (r->rank > 0) {
		double *U = xmalloc(xmul(xmul((size_t)in, (size_t)r->rank), sizeof(double)));
		cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, in, r->rank, k, 1.0, Y, k,
		    UB, k, 0.0, U, r->rank);
		rc = cmc_store_factors(r, w, U, r->rank, r->sv, Vt, err);
		free(U);
	}
	free(UB);
	free(Vt);
	return rc;
}

/* Randomized truncated SVD of M (in, out) (Halko, Martinsson and Tropp 2011,
 * algorithms 4.4 and 5.1): k = rank + oversample Gaussian test vectors, a few
 * subspace iterations, then the exact SVD of the small (k, out) projection. */
static int
cmc_svd_randomized(cmc_result *r, const cmc_whitener *w, const double *M, rng *g, int gram,
    masq_err *err)
{
	int *fb = gram ? &r->qr_fallbacks : NULL;
	int in = r->in, out = r->out, mn = in < out ? in : out;
	int k = r->rank + CMC_OVERSAMPLE < mn ? r->rank + CMC_OVERSAMPLE : mn;
	double *Om = xmalloc(xmul(xmul((size_t)out, (size_t)k), sizeof(double)));	/* (out, k) */
	double *Y = xmalloc(xmul(xmul((size_t)in, (size_t)k), sizeof(double)));	/* (in, k) */
	double *B = xmalloc(xmul(xmul((size_t)k, (size_t)out), sizeof(double)));	/* (k, out) */
	rng local;
	int rc = -1;

	if (g == NULL) {
		rng_init(&local, CMC_DEFAULT_SEED);
		g = &local;
	}
	for (size_t i = 0; i < (size_t)out * k; i++)
		Om[i] = rng_normal(g);
	cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, in, k, out, 1.0, M, out, Om, k,
	    0.0, Y, k);
	/* Om is reused as Z = M^T Y (out, k). */
	for (int it = 0; it < CMC_POWER_ITERS; it++) {
		if (cmc_orthonormalize(Y, in, k, fb, err) < 0)
			goto out;
		cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, k, in, 1.0, M, out, Y,
		    k, 0.0, Om, k);
		if (cmc_orthonormalize(Om, out, k, fb, err) < 0)
			goto out;
		cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, in, k, out, 1.0, M, out,
		    Om, k, 0.0, Y, k);
	}
	if (cmc_orthonormalize(Y, in, k, fb, err) < 0)
		goto out;
	cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, out, in, 1.0, Y, k, M, out, 0.0,
	    B, out);
	rc = cmc_randomized_finish(r, w, B, Y, k, gram, err);
out:
	free(Om);
	free(Y);
	free(B);
	return rc;
}

/* ---- single precision ----------------------------------------------------------- */

/* Sum of squares of x (n) floats, accumulated in double. */
static double
cmc_sumsq_f(const float *x, size_t n)
{
	double acc = 0;
	for (size_t i = 0; i < n; i++)
		acc += (double)x[i] * x[i];
	return acc;
}

/* Columns of the float whitening product formed at a time. */
#define CMC_F32_BLOCK 512

/* A (in, out) := T A in float, in place: EIG, sgemm with D^-1 E P in float
 * on CMC_F32_BLOCK columns at a time (copied out, multiplied back into A),
 * then the rows scaled by sqrt(lambda); CHOL, strmm with U D^-1 E in float;
 * nothing without w. */
static void
cmc_whiten_f32(const cmc_whitener *w, float *A, int in, int out)
{
	if (w == NULL)
		return;
	if (w->b->kind == CMC_WHITEN_CHOL) {
		/* U D^-1 E in float, its upper triangle: strmm works in place */
		float *Us = xcalloc(xmul((size_t)in, (size_t)in), sizeof(float));
		for (int i = 0; i < in; i++) {
			const double *src = w->b->P + (size_t)i * in;
			float *dst = Us + (size_t)i * in;
			for (int j = i; j < in; j++)
				dst[j] = (float)(src[j] / w->s[j]);
		}
		cblas_strmm(CblasRowMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, in, out, 1.0f,
		    Us, in, A, out);
		free(Us);
		return;
	}
	/* (D^-1 E P) in float, d * d: smaller than a scaled copy of dWt
	 * wherever out >= in, and the large linears are those */
	float *Ps = xmalloc(xmul(xmul((size_t)in, (size_t)in), sizeof(float)));
	for (int i = 0; i < in; i++) {
		double si = w->s[i];
		const double *src = w->b->P + (size_t)i * in;
		float *dst = Ps + (size_t)i * in;
		for (int j = 0; j < in; j++)
			dst[j] = (float)(src[j] / si);
	}
	int nb = out < CMC_F32_BLOCK ? out : CMC_F32_BLOCK;
	float *B = xmalloc(xmul(xmul((size_t)in, (size_t)nb), sizeof(float)));
	for (int j0 = 0; j0 < out; j0 += nb) {
		int k = out - j0 < nb ? out - j0 : nb;
		for (int i = 0; i < in; i++)
			memcpy(B + (size_t)i * k, A + (size_t)i * out + j0, (size_t)k * sizeof(float));
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, in, k, in, 1.0f, Ps, in, B, k,
		    0.0f, A + j0, out);
	}
	free(B);
	free(Ps);
	for (int i = 0; i < in; i++) {
		float sl = (float)w->b->sqrt_lambda[i];
		float *row = A + (size_t)i * out;
		for (int j = 0; j < out; j++)
			row[j] *= sl;
	}
}

/* A (m, n) float replaced by the Q of its thin QR, computed in double:
 * Householder QR (fallbacks NULL), or cmc_cholqr2, falling back as
 * cmc_orthonormalize_gram does. */
static int
cmc_orthonormalize_f(float *A, int m, int n, int *fallbacks, masq_err *err)
{
	if (fallbacks == NULL)
		return cmc_orthonormalize_any(NULL, A, m, n, err);
	/* the float block is its own saved copy: one double block at a time,
	 * as Householder QR holds */
	size_t mn = xmul((size_t)m, (size_t)n);
	double *Ad = cmc_dup_double(A, mn);
	int refused = cmc_cholqr2(Ad, m, n);
	for (size_t i = 0; i < mn && !refused; i++)
		A[i] = (float)Ad[i];
	free(Ad);
	if (!refused)
		return 0;
	(*fallbacks)++;
	return cmc_orthonormalize_any(NULL, A, m, n, err);
}

/* cmc_svd_randomized with the products against M (in, out) in sgemm; the
 * test matrix, the QR steps and the small SVD as there. */
static int
cmc_svd_randomized_f32(cmc_result *r, const cmc_whitener *w, const float *M, rng *g, int gram,
    masq_err *err)
{
	int *fb = gram ? &r->qr_fallbacks : NULL;
	int in = r->in, out = r->out, mn = in < out ? in : out;
	int k = r->rank + CMC_OVERSAMPLE < mn ? r->rank + CMC_OVERSAMPLE : mn;
	float *Om = xmalloc(xmul(xmul((size_t)out, (size_t)k), sizeof(float)));	/* (out, k) */
	float *Y = xmalloc(xmul(xmul((size_t)in, (size_t)k), sizeof(float)));	/* (in, k) */
	float *Bf = xmalloc(xmul(xmul((size_t)k, (size_t)out), sizeof(float)));	/* (k, out) */
	double *B = NULL, *Yd = NULL;
	rng local;
	int rc = -1;

	if (g == NULL) {
		rng_init(&local, CMC_DEFAULT_SEED);
		g = &local;
	}
	for (size_t i = 0; i < (size_t)out * k; i++)
		Om[i] = (float)rng_normal(g);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, in, k, out, 1.0f, M, out, Om, k,
	    0.0f, Y, k);
	for (int it = 0; it < CMC_POWER_ITERS; it++) {
		if (cmc_orthonormalize_f(Y, in, k, fb, err) < 0)
			goto out;
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, k, in, 1.0f, M, out, Y,
		    k, 0.0f, Om, k);
		if (cmc_orthonormalize_f(Om, out, k, fb, err) < 0)
			goto out;
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, in, k, out, 1.0f, M, out,
		    Om, k, 0.0f, Y, k);
	}
	if (cmc_orthonormalize_f(Y, in, k, fb, err) < 0)
		goto out;
	cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, out, in, 1.0f, Y, k, M, out, 0.0f,
	    Bf, out);
	B = cmc_dup_double(Bf, xmul((size_t)k, (size_t)out));
	Yd = cmc_dup_double(Y, xmul((size_t)in, (size_t)k));
	rc = cmc_randomized_finish(r, w, B, Yd, k, gram, err);
out:
	free(Om);
	free(Y);
	free(Bf);
	free(B);
	free(Yd);
	return rc;
}

/* |M - (T L1) L2|_F^2 for the float M = T dWt, the product in sgemm and the
 * sum in double; M is overwritten by the residual (its last use). */
static double
cmc_residual_whitened_f32(const cmc_whitener *w, float *M, int in, int out,
    const float *L1, const float *L2, int rank)
{
	size_t n = xmul((size_t)in, (size_t)out), n1 = xmul((size_t)in, (size_t)rank);
	if (rank <= 0 || L1 == NULL || L2 == NULL)
		return cmc_sumsq_f(M, n);
	float *TL1 = xmalloc(xmul(n1, sizeof(float)));
	if (w != NULL) {
		double *L1d = cmc_dup_double(L1, n1);
		double *T = xmalloc(xmul(n1, sizeof(double)));
		cmc_unsmooth_rows(w, L1d, rank);
		cmc_whiten_unsmoothed(w, L1d, rank, T);
		for (size_t i = 0; i < n1; i++)
			TL1[i] = (float)T[i];
		free(T);
		free(L1d);
	} else {
		memcpy(TL1, L1, n1 * sizeof(float));
	}
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, in, out, rank, -1.0f, TL1, rank, L2,
	    out, 1.0f, M, out);
	double res = cmc_sumsq_f(M, n);
	free(TL1);
	return res;
}

/* The argument checks both precisions share; fills r's shape. */
static int
cmc_check_args(cmc_result *r, const float *dWt, int in, int out, const cmc_whitener *w,
    int rank, masq_err *err)
{
	memset(r, 0, sizeof *r);
	if (in <= 0 || out <= 0)
		return masq_err_set(err, MASQ_ERR_USAGE, "cmc: residual of shape (%d, %d)", in,
		    out);
	if (w != NULL && w->d != in)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "cmc: whitener of dimension %d for a residual with %d input channels", w->d,
		    in);
	if (rank < 0)
		return masq_err_set(err, MASQ_ERR_USAGE, "cmc: negative rank %d", rank);
	size_t n = xmul((size_t)in, (size_t)out);
	size_t bad = cmc_find_nonfinite(dWt, n);
	if (bad < n)
		return masq_err_set(err, MASQ_ERR_FORMAT,
		    "cmc: residual entry (%zu, %zu) is %g", bad / (size_t)out,
		    bad % (size_t)out, (double)dWt[bad]);
	int mn = in < out ? in : out;
	r->in = in;
	r->out = out;
	r->rank = rank < mn ? rank : mn;
	r->whitened = w != NULL;
	return 0;
}

/* The single-precision computation on M (in, out), which holds dWt and is
 * overwritten (by T dWt, then the residual): 0, or 1 when it failed or its
 * check did (r emptied; the caller reruns it in double). */
static int
cmc_compute_f32(cmc_result *r, float *M, const cmc_whitener *w, enum cmc_svd_mode mode,
    rng *g, masq_err *err)
{
	int in = r->in, out = r->out, mn = in < out ? in : out, gram = (mode & CMC_SVD_GRAM) != 0;
	size_t n = xmul((size_t)in, (size_t)out);
	mode &= ~CMC_SVD_GRAM;
	cmc_whiten_f32(w, M, in, out);
	r->total_energy = cmc_sumsq_f(M, n);
	r->precision = 32;
	if (mode == CMC_SVD_AUTO)
		mode = r->rank + CMC_OVERSAMPLE < mn / 4 ? CMC_SVD_RANDOMIZED : CMC_SVD_FULL;
	int rc;
	if (mode == CMC_SVD_RANDOMIZED) {
		rc = cmc_svd_randomized_f32(r, w, M, g, gram, err);
	} else {
		double *Md = cmc_dup_double(M, n);
		rc = cmc_svd_full(r, w, Md, err);
		free(Md);
	}
	if (rc == 0)
		r->resid_energy = r->rank > 0
		    ? cmc_residual_whitened_f32(w, M, in, out, r->L1, r->L2, r->rank)
		    : r->total_energy;
	if (rc < 0) {
		/* LAPACK on what float overflowed to, or factors float cannot
		 * hold: the double path decides (and reports what still fails) */
		cmc_result_done(r);
		return 1;
	}
	/* the residual the singular values promise: exact for both SVDs */
	double kept = 0;
	for (int i = 0; i < r->rank && i < r->n_sv; i++)
		kept += r->sv[i] * r->sv[i];
	double promised = r->total_energy - kept;
	if (promised < 0)
		promised = 0;
	int finite = isfinite(r->total_energy) && isfinite(r->resid_energy);
	for (int i = 0; i < r->n_sv && finite; i++)
		finite = isfinite(r->sv[i]);
	if (!finite || !(r->resid_energy <= promised * (1 + CMC_F32_CHECK) + 1e-9 * r->total_energy)) {
		cmc_result_done(r);
		return 1;
	}
	return 0;
}

int
cmc_compute_prec(cmc_result *r, const float *dWt, int in, int out, const cmc_whitener *w,
    int rank, enum cmc_svd_mode mode, enum cmc_precision prec, rng *g, masq_err *err)
{
	if (prec != CMC_F32)
		return cmc_compute(r, dWt, in, out, w, rank, mode, g, err);
	if (cmc_check_args(r, dWt, in, out, w, rank, err) < 0)
		return -1;
	/* the double rerun draws the same test matrix */
	rng saved = g != NULL ? *g : (rng){0};
	size_t n = xmul((size_t)in, (size_t)out);
	float *M = xmalloc(xmul(n, sizeof(float)));
	memcpy(M, dWt, n * sizeof(float));
	int f = cmc_compute_f32(r, M, w, mode, g, err);
	free(M);
	if (f == 0)
		return 0;
	if (g != NULL)
		*g = saved;
	int rc = cmc_compute(r, dWt, in, out, w, rank, mode, g, err);
	if (rc == 0)
		r->fell_back = 1;
	return rc;
}

int
cmc_compute_prec_inplace(cmc_result *r, float *dWt, int in, int out, const cmc_whitener *w,
    int rank, enum cmc_svd_mode mode, enum cmc_precision prec, rng *g, masq_err *err)
{
	if (prec != CMC_F32)
		return cmc_compute(r, dWt, in, out, w, rank, mode, g, err);
	if (cmc_check_args(r, dWt, in, out, w, rank, err) < 0)
		return -1;
	rng saved = g != NULL ? *g : (rng){0};
	if (cmc_compute_f32(r, dWt, w, mode, g, err) == 0)
		return 0;
	if (g != NULL)
		*g = saved;	/* the caller's double rerun draws the same test matrix */
	return 1;
}

int
cmc_compute(cmc_result *r, const float *dWt, int in, int out, const cmc_whitener *w, int rank,
    enum cmc_svd_mode mode, rng *g, masq_err *err)
{
	if (cmc_check_args(r, dWt, in, out, w, rank, err) < 0)
		return -1;
	size_t n = xmul((size_t)in, (size_t)out);
	int mn = in < out ? in : out, gram = (mode & CMC_SVD_GRAM) != 0;
	r->precision = 64;
	mode &= ~CMC_SVD_GRAM;

	double *M = cmc_dup_double(dWt, n);
	if (w != NULL) {
		double *TM = xmalloc(xmul(n, sizeof(double)));
		cmc_unsmooth_rows(w, M, out);
		cmc_whiten_unsmoothed(w, M, out, TM);
		free(M);
		M = TM;
	}
	r->total_energy = cmc_sumsq(M, n);

	if (mode == CMC_SVD_AUTO)
		mode = r->rank + CMC_OVERSAMPLE < mn / 4 ? CMC_SVD_RANDOMIZED : CMC_SVD_FULL;
	int rc = mode == CMC_SVD_RANDOMIZED ? cmc_svd_randomized(r, w, M, g, gram, err)
	    : cmc_svd_full(r, w, M, err);
	if (rc == 0)
		r->resid_energy = r->rank > 0
		    ? cmc_residual_whitened(w, M, in, out, r->L1, r->L2, r->rank)
		    : r->total_energy;
	free(M);
	if (rc < 0)
		cmc_result_done(r);
	return rc;
}

void
cmc_result_done(cmc_result *r)
{
	free(r->L1);
	free(r->L2);
	free(r->sv);
	memset(r, 0, sizeof *r);
}

double
cmc_effective_rank(const double *sv, int n)
{
	double sum = 0, h = 0;

	for (int i = 0; i < n; i++)
		if (sv[i] > 1e-15)
			sum += sv[i];
	if (!(sum > 0))
		return 0;
	for (int i = 0; i < n; i++)
		if (sv[i] > 1e-15) {
			double p = sv[i] / sum;
			h -= p * log(p);
		}
	return exp(h);
}

int
cmc_rank_resolve(double setting, int floor_rank, int in, int out)
{
	int mn = in < out ? in : out;
	int r;

	if (mn <= 0 || !(setting > 0))
		return 0;
	if (setting <= 1) {
		r = (int)floor(setting * mn);
		if (r < floor_rank)
			r = floor_rank;
	} else {
		r = setting >= (double)mn ? mn : (int)setting;
	}
	if (r < 1)
		r = 1;
	if (r > mn)
		r = mn;
	return r;
}

/* ---- storage -------------------------------------------------------------- */

#define CMC_F16_MAX 65504.0f

int
cmc_stored_dtype(int want, const float *L1, const float *L2, int in, int out, int r)
{
	if (want != ST_F16)
		return want;
	size_t n1 = (size_t)in * r, n2 = (size_t)r * out;
	for (size_t i = 0; i < n1; i++)
		if (!(fabsf(L1[i]) <= CMC_F16_MAX))
			return ST_F32;
	for (size_t i = 0; i < n2; i++)
		if (!(fabsf(L2[i]) <= CMC_F16_MAX))
			return ST_F32;
	return ST_F16;
}
