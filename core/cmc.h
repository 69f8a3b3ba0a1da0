/*
 * cmc.h: Cross-Modal Compensation, the whitened low-rank correction that
 * lets a non-text modality m share the weight stored for text.
 *
 * Layout: W is [out, in] as in Hugging Face; a token x (1, in) gives
 * y = x W^T.  With smoothing factors s (in), the smoothed input is x / s and
 * the smoothed weight W diag(s).  For modality m:
 *
 *   dWt  = (W diag(s_m))^T - Q(W diag(s_t))^T          (in, out)
 *   G_m  = sum of x^T x over modality-m tokens (the raw Gram matrix, in, in)
 *   E    = diag(sqrt(diag G_m))    (its channels' scales; 1 for a zero one)
 *   E^-1 G_m E^-1 = P diag(lambda) P^T                  (LAPACKE_dsyevd)
 *   T    = diag(sqrt(lambda)) P^T E D_m^-1,  D_m = diag(s_m)
 *   T^-1 = D_m E^-1 P diag(1/sqrt(lambda))
 *   T dWt = U S V^T  (truncated at rank r)
 *   L1   = T^-1 U_r  (in, r),  L2 = S_r V_r^T  (r, out)
 *
 * so that sum over modality-m tokens of |(x/s_m) (dWt - L1 L2)|^2 =
 * |T (dWt - L1 L2)|_F^2 is minimal (the paper's Theorem 2).  T^T T =
 * D^-1 G D^-1, the covariance of the smoothed inputs the reference
 * eigendecomposes: the two whiteners differ by an orthogonal factor on the
 * left, which changes neither the singular values nor L1 L2.  Whitening
 * against G itself makes the eigendecomposition independent of the
 * smoothing factors; scaling G's channels to a unit diagonal first keeps
 * channels of massive activations from spreading its spectrum (C has them
 * divided down by the smoothing; G would not), so one basis serves every linear of an input site
 * (q/k/v, gate/up, each with factors of its own under MAS) and every
 * alpha (HACKING.md, "Departures from DESIGN.md").  Eigenvalues of the
 * scaled G below floor_rel * lambda_max are raised to it (the reference has no guard; a
 * rank-deficient Gram would otherwise divide by zero).  Without whitening
 * (T = I) it is the plain truncated SVD of dWt.
 *
 *	cmc_basis b;
 *	cmc_basis_init(&b, gram, in, CMC_EIG_FLOOR, &err);
 *	cmc_whitener wh;
 *	cmc_whitener_bind(&wh, &b, s_vision, &err);
 *	cmc_result r;
 *	cmc_compute(&r, dWt, in, out, &wh, rank, CMC_SVD_AUTO, &g, &err);
 *	... r.L1, r.L2, r.resid_energy / r.total_energy ...
 *	cmc_result_done(&r);
 *	cmc_whitener_done(&wh);
 *	cmc_basis_done(&b);
 *
 * cmc_whitener_init does both steps with a basis of its own.
 */
#ifndef MASQ_CMC_H
#define MASQ_CMC_H

#include "core/rng.h"
#include "core/util.h"

#define CMC_EIG_FLOOR 1e-10	/* eigenvalues below this x lambda_max are raised to it */
#define CMC_RANK_FLOOR 32	/* the reference's minimum rank */
#define CMC_OVERSAMPLE 10	/* randomized SVD: extra columns */
#define CMC_POWER_ITERS 4	/* randomized SVD: subspace iterations (2 missed 1% on slow spectra) */

/* How a basis factors the scaled Gram matrix C = E^-1 G E^-1.  Both give a
 * T with T^T T = C (floored), so the same singular values and L1 L2 up to
 * rounding:
 *   EIG   C = P diag(lambda) P^T (dsyevd), eigenvalues below floor x
 *         lambda_max raised to it; T = diag(sqrt lambda) P^T E D^-1
 *   CHOL  C + floor x lambda_max I = U^T U (dpotrf, U upper triangular),
 *         lambda_max from CMC_POWER_STEPS power steps; T = U E D^-1,
 *         applied and inverted as a triangle (dtrmm, dtrsm): a small
 *         fraction of dsyevd's time.  The floor is added to every
 *         eigenvalue rather than raising those below it: the same to
 *         1e-10 relative wherever lambda is above it.  If dpotrf fails
 *         even so, the basis is built as EIG (kind says which it is). */
enum cmc_whiten_kind { CMC_WHITEN_EIG, CMC_WHITEN_CHOL };
#define CMC_POWER_STEPS 30	/* CHOL: power steps for lambda_max, from the ones vector */

/* The factorization of one Gram matrix: what every linear reading the same
 * input site and modality shares. */
typedef struct cmc_basis {
	int d;
	int kind;		/* enum cmc_whiten_kind */
	double *P;		/* (d, d) row-major; EIG: column j = eigenvector j of E^-1 G E^-1, lambda
				   descending; CHOL: U in the upper triangle (with the diagonal), C's
				   mirror below it */
	double *sqrt_lambda;	/* (d) EIG: square roots of the floored eigenvalues, descending; CHOL: NULL */
	double *scale;		/* (d) E's diagonal: sqrt(G_jj), 1 where G_jj is 0 */
	int n_floored;		/* EIG: eigenvalues raised to the floor; CHOL: -1 (not counted) */
	double lambda_max;	/* the largest eigenvalue of C (CHOL: the power steps' estimate) */
} cmc_basis;

/* Eigendecompose G (d, d) symmetric (upper triangle or full, row-major;
 * only the upper triangle is read).  MASQ_ERR_INTERNAL if LAPACK fails; a G
 * of all zeros (modality absent) or floor_rel outside (0, 1) is
 * MASQ_ERR_USAGE; a non-finite G entry is MASQ_ERR_FORMAT.  b is zeroed
 * first and left empty on error. */
int cmc_basis_init(cmc_basis *b, const double *G, int d, double floor_rel, masq_err *err);
/* The same in G's own storage (d * d doubles from malloc): on success b
 * owns it (b->P == G, freed by cmc_basis_done).  On error G stays the
 * caller's; its contents are intact unless the error is MASQ_ERR_INTERNAL
 * (LAPACK overwrote them). */
int cmc_basis_take(cmc_basis *b, double *G, int d, double floor_rel, masq_err *err);
/* The same two with the factorization chosen (the two above are EIG). */
int cmc_basis_init_as(cmc_basis *b, const double *G, int d, double floor_rel, int kind, masq_err *err);
int cmc_basis_take_as(cmc_basis *b, double *G, int d, double floor_rel, int kind, masq_err *err);
void cmc_basis_done(cmc_basis *b);

/* One linear's whitener: a basis (not owned) and the linear's factors. */
typedef struct cmc_whitener {
	int d;
	const cmc_basis *b;
	double *s;		/* (d) s_j / scale_j: T = K diag(1 / s), K = diag(sqrt lambda) P^T or L^T */
	cmc_basis own;		/* cmc_whitener_init's basis */
} cmc_whitener;

/* w (overwritten, not read) = basis b with factors s (d; copied); a
 * factor s_j <= 0 or not finite is MASQ_ERR_USAGE.  b must outlive w. */
int cmc_whitener_bind(cmc_whitener *w, const cmc_basis *b, const float *s, masq_err *err);
/* cmc_basis_init into a basis of w's own, then cmc_whitener_bind. */
int cmc_whitener_init(cmc_whitener *w, const double *G, const float *s, int d, double floor_rel,
    masq_err *err);
int cmc_whitener_init_as(cmc_whitener *w, const double *G, const float *s, int d, double floor_rel,
    int kind, masq_err *err);
void cmc_whitener_done(cmc_whitener *w);
/* M (d, n) = T A for A (d, n), row-major, double. */
void cmc_whiten(const cmc_whitener *w, const double *A, int n, double *M);

enum cmc_svd_mode {
	CMC_SVD_FULL,		/* LAPACKE_dgesdd of the whole matrix */
	CMC_SVD_RANDOMIZED,	/* randomized range finder + small SVD (rank + oversample) */
	CMC_SVD_AUTO,		/* randomized when rank + oversample < min(in, out) / 4 */
	/* A flag or'ed into one of the above: the randomized SVD orthonormalizes
	 * by CholeskyQR2 (dgemm, dpotrf, dtrtri, dtrmm, twice; Householder QR
	 * from the block's original values where a pass is refused, counted in
	 * qr_fallbacks) instead of Householder QR, and takes the small
	 * projection's SVD from the eigendecomposition of its Gram matrix
	 * instead of dgesdd: the same subspace and factors up to rounding (see
	 * HACKING.md, "The randomized SVD's inner steps") */
	CMC_SVD_GRAM = 0x10
};

typedef struct cmc_result {
	int in, out, rank;
	float *L1;		/* (in, rank) row-major */
	float *L2;		/* (rank, out) row-major */
	double *sv;		/* (n_sv) singular values of T dWt, descending */
	int n_sv;		/* min(in, out) for the full SVD, rank + oversample otherwise */
	double total_energy;	/* |T dWt|_F^2 */
	double resid_energy;	/* |T (dWt - L1 L2)|_F^2, computed, not inferred */
	int whitened;		/* 1 when a whitener was used */
	int precision;		/* 32 or 64: the products it was computed with */
	int fell_back;		/* 1 when single precision was asked for and failed its check */
	int qr_fallbacks;	/* CMC_SVD_GRAM: orthonormalizations CholeskyQR2 left to Householder QR */
} cmc_result;

/* The products' precision (cmc_compute_prec). */
enum cmc_precision { CMC_F64, CMC_F32 };

/* How far the single-precision result's computed residual may exceed the
 * residual its own singular values promise, relative to that residual,
 * before cmc_compute_prec redoes the linear in double (see HACKING.md,
 * "CMC in single precision"): 1%, the bound on the factors. */
#define CMC_F32_CHECK 0.01

/* Low-rank factors of dWt (in, out) at rank (clamped to min(in, out); 0
 * gives no factors, L1 = L2 = NULL, and resid_energy = total_energy; the
 * singular values are still computed).  w NULL: no whitening (T = I); the
 * residual is then measured in the plain Frobenius norm unless metric_w is
 * given to cmc_residual.  g draws the randomized SVD's test matrix (NULL: a
 * fixed seed).  A non-finite dWt entry is MASQ_ERR_FORMAT, a negative rank
 * or a whitener of another dimension MASQ_ERR_USAGE.  r is zeroed first and
 * left empty on error. */
int cmc_compute(cmc_result *r, const float *dWt, int in, int out, const cmc_whitener *w, int rank,
    enum cmc_svd_mode mode, rng *g, masq_err *err);
/* The same with the precision of the large products chosen: CMC_F64 is
 * cmc_compute; CMC_F32 forms T dWt and runs the randomized SVD's products
 * with sgemm (the eigendecomposition, the QR steps, the small SVD, the
 * factors' back-transformation and every energy sum stay double), then
 * checks that the residual it measures is within CMC_F32_CHECK of
 * total_energy - sum of the kept sv^2 (the two agree in exact arithmetic)
 * and redoes the linear in double when not (fell_back = 1).  The test
 * matrix is drawn the same way in both, so the two are comparable. */
int cmc_compute_prec(cmc_result *r, const float *dWt, int in, int out, const cmc_whitener *w,
    int rank, enum cmc_svd_mode mode, enum cmc_precision prec, rng *g, masq_err *err);
/* cmc_compute_prec allowed to overwrite dWt: in single precision the
 * whitened product is formed in dWt's own storage, one (in, out) array
 * fewer at the peak, with the same bits.  0, -1 on error, or 1 when single
 * precision failed its check: dWt is then spent (r is empty, g as it was),
 * and the caller reruns cmc_compute on a fresh dWt and sets fell_back.  In
 * double precision dWt is not touched (cmc_compute). */
int cmc_compute_prec_inplace(cmc_result *r, float *dWt, int in, int out, const cmc_whitener *w,
    int rank, enum cmc_svd_mode mode, enum cmc_precision prec, rng *g, masq_err *err);
void cmc_result_done(cmc_result *r);

/* How L1 (in, r) and L2 (r, out) are stored when dtype `want` (st_dtype:
 * F32, F16, BF16) is asked for: want, but F32 where F16 cannot hold them
 * (a value beyond +-65504 or not finite).  The pipeline measures with the
 * F32 factors: rounding inside the measured path would make the figures a
 * step function of the inputs, and a last-bit difference between BLAS
 * kernels would move them by far more than replay's tolerances (0.06 dB
 * instead of 0.0003 on the tiny demo).  What half precision costs is
 * measured on the export with masq eval (HACKING.md). */
int cmc_stored_dtype(int want, const float *L1, const float *L2, int in, int out, int r);

/* |T (dWt - L1 L2)|_F^2 for factors of any origin (whitened or not), so the
 * two variants can be compared in the metric that matters. */
double cmc_residual(const cmc_whitener *w, const float *dWt, int in, int out, const float *L1,
    const float *L2, int rank);

/* exp(entropy of p_i = sv_i / sum sv), counting sv > 1e-15 (the reference's
 * effective rank); 0 when no value counts. */
double cmc_effective_rank(const double *sv, int n);

/* Rank from a setting: ratio in (0, 1] of min(in, out) (floored, then
 * raised to floor_rank), or an absolute rank (> 1); clamped to [1, min(in,
 * out)].  A setting <= 0 (or NaN) gives 0: no compensation. */
int cmc_rank_resolve(double setting, int floor_rank, int in, int out);

#endif
