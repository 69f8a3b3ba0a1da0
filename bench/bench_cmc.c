/*
 * bench_cmc: Cross-Modal Compensation of one linear, full SVD against the
 * randomized truncated SVD, in the same run.
 *
 *	bench_cmc [--d 2048] [--out 2048] [--rank-ratio 0.05] [--tokens 2048]
 *	    [--threads 2] [--seed 1] [--power 1.0]
 *
 * The case is built to look like a real linear of a multimodal model:
 * vision activations X (tokens, d) with a power-law spectrum (sigma_k ~
 * k^-power) over a random basis and a few outlier channels; text activations with their own
 * outliers and a smaller scale; W (out, d) Gaussian.  Smoothing factors come
 * from SmoothQuant's closed form at alpha 0.5, s_j = sqrt(max|X_j| /
 * max|W_j|), once for vision (s_v) and once for text (s_t); the base weight
 * is Q(W diag(s_t)) at 4 bits per output channel (quant_weight_rows); the
 * residual is dWt = (W diag(s_v))^T - Q(W diag(s_t))^T.
 *
 * Timed: the Gram matrix (cblas_dsyrk), the whitener (LAPACKE_dsyevd),
 * cmc_compute with the full SVD (LAPACKE_dgesdd, the baseline) and with the
 * randomized SVD, at rank cmc_rank_resolve(ratio, CMC_RANK_FLOOR, d, out).
 * Both cmc_compute calls include the whitening product, the factors and the
 * residual measurement, so the speedup is what a caller sees.  The figures
 * of merit are speedup = full / randomized time and the relative
 * difference of the whitened residuals |T (dWt - L1 L2)|^2 / |T dWt|^2.
 * Also timed: the Cholesky whitener (LAPACKE_dpotrf, the pipeline's
 * default), and single precision on it, its factors' residual measured in
 * the eigendecomposition's metric against double (bench_cmc_whitener).
 * Exit 0 whether or not the targets are met, 2 on a usage error, 1 when a
 * computation fails.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/benchutil.h"
#include "core/blas.h"
#include "core/cmc.h"
#include "core/engine.h"
#include "core/quant.h"
#include "core/rng.h"
#include "core/util.h"

#define BENCH_TARGET_SPEEDUP 5.0
#define BENCH_TARGET_ERR 0.01
#define BENCH_RAND_REPS 3	/* the randomized run is short: median of 3 */
#define BENCH_POWER_LAW 1.0	/* default activation spectrum sigma_k ~ k^-power */
#define BENCH_OUTLIER_SHARE 0.01	/* share of channels with outliers */


/* Settings from the command line. */
typedef struct bench_opts {
	int d, out, tokens, threads;
	double ratio;
	double power;		/* activation spectrum exponent */
	unsigned long long seed;
} bench_opts;

/* Print the usage line to f. */
static void
bench_usage(FILE *f)
{
	fprintf(f, "usage: bench_cmc [--d 2048] [--out 2048] [--rank-ratio 0.05] "
	    "[--tokens 2048] [--threads 2] [--seed 1] [--power 1.0]\n");
}


/* Parse argv into o; 0 on success, 1 after --help, -1 on a usage error. */
static int
bench_parse_args(int argc, char **argv, bench_opts *o)
{
	const char *env = getenv("OPENBLAS_NUM_THREADS");

	o->d = 2048;
	o->out = 2048;
	o->tokens = 2048;
	o->ratio = 0.05;
	o->seed = 1;
	o->power = BENCH_POWER_LAW;
	if (env == NULL || bench_parse_int(env, 1, 1024, &o->threads) < 0)
		o->threads = 2;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		int bad = 0;

		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			bench_usage(stdout);
			return 1;
		}
		static const char *const known[] = { "--d", "--out", "--tokens", "--threads",
			"--rank-ratio", "--power", "--seed" };
		int is_known = 0;
		for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
			if (strcmp(a, known[k]) == 0)
				is_known = 1;
		if (!is_known) {
			fprintf(stderr, "bench_cmc: unknown option %s\n", a);
			return -1;
		}
		if (v == NULL) {
			fprintf(stderr, "bench_cmc: %s needs a value\n", a);
			return -1;
		}
		if (strcmp(a, "--d") == 0)
			bad = bench_parse_int(v, 1, 16384, &o->d);
		else if (strcmp(a, "--out") == 0)
			bad = bench_parse_int(v, 1, 65536, &o->out);
		else if (strcmp(a, "--tokens") == 0)
			bad = bench_parse_int(v, 1, 1 << 20, &o->tokens);
		else if (strcmp(a, "--threads") == 0)
			bad = bench_parse_int(v, 1, 1024, &o->threads);
		else if (strcmp(a, "--rank-ratio") == 0) {
			char *end;
			errno = 0;
			o->ratio = strtod(v, &end);
			bad = errno != 0 || *end != '\0' || !(o->ratio > 0) || o->ratio > 1e6;
		} else if (strcmp(a, "--power") == 0) {
			char *end;
			errno = 0;
			o->power = strtod(v, &end);
			bad = errno != 0 || *end != '\0' || !(o->power >= 0) || o->power > 10;
		} else if (strcmp(a, "--seed") == 0) {
			char *end;
			errno = 0;
			o->seed = strtoull(v, &end, 10);
			bad = errno != 0 || *end != '\0' || *v == '-';
		}
		if (bad) {
			fprintf(stderr, "bench_cmc: bad value for %s: %s\n", a, v);
			return -1;
		}
		i++;
	}
	if ((double)o->tokens * o->d > 1.5e9) {
		fprintf(stderr, "bench_cmc: --tokens x --d is too large (%d x %d)\n", o->tokens,
		    o->d);
		return -1;
	}
	return 0;
}

/* A random orthogonal (d, d) matrix: Q of a Gaussian matrix's QR. */
static double *
bench_rand_orthogonal(rng *g, int d)
{
	double *Q = xmalloc(xmul(xmul((size_t)d, (size_t)d), sizeof(double)));
	double *tau = xmalloc(xmul((size_t)d, sizeof(double)));

	for (size_t i = 0; i < (size_t)d * d; i++)
		Q[i] = rng_normal(g);
	if (LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, d, d, Q, d, tau) != 0 ||
	    LAPACKE_dorgqr(LAPACK_ROW_MAJOR, d, d, d, Q, d, tau) != 0)
		fatal("bench_cmc: QR of a %d x %d Gaussian matrix failed", d, d);
	free(tau);
	return Q;
}

/* Activations X (n, d) = Z diag(scale * k^-power) R, Z Gaussian, then a
 * share of channels multiplied by outlier factors in [8, 40) (a
 * different set per seed of g), as real decoder inputs look. */
static double *
bench_make_acts(rng *g, const double *R, int n, int d, double scale, double power)
{
	double *Z = xmalloc(xmul(xmul((size_t)n, (size_t)d), sizeof(double)));
	double *X = xmalloc(xmul(xmul((size_t)n, (size_t)d), sizeof(double)));
	int n_out = (int)ceil(BENCH_OUTLIER_SHARE * d);

	for (int t = 0; t < n; t++)
		for (int k = 0; k < d; k++)
			Z[(size_t)t * d + k] = scale * pow(k + 1.0, -power) *
			    rng_normal(g);
	cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, d, 1.0, Z, d, R, d, 0.0,
	    X, d);
	for (int c = 0; c < n_out; c++) {
		int j = (int)rng_below(g, (uint64_t)d);
		double f = 8.0 + 32.0 * rng_uniform(g);
		for (int t = 0; t < n; t++)
			X[(size_t)t * d + j] *= f;
	}
	free(Z);
	return X;
}

/* SmoothQuant at alpha 0.5: s (d) = sqrt(max_t |X_tj| / max_o |W_oj|),
 * both maxima clamped to 1e-5 as the reference does. */
static void
bench_smooth(float *s, const double *X, int n, int d, const float *W, int out)
{
	for (int j = 0; j < d; j++) {
		double xm = 1e-5, wm = 1e-5;
		for (int t = 0; t < n; t++)
			xm = fmax(xm, fabs(X[(size_t)t * d + j]));
		for (int o = 0; o < out; o++)
			wm = fmax(wm, fabs((double)W[(size_t)o * d + j]));
		s[j] = (float)sqrt(xm / wm);
	}
}



/* The randomized SVD in single precision on w (flags: 0 or CMC_SVD_GRAM),
 * BENCH_RAND_REPS times from the same seed: the last result in rs, the
 * median time in *t.  -1 on error (rs empty). */
static int
rand_f32(cmc_result *rs, const float *dWt, int d, int out, const cmc_whitener *w, int rank, int flags,
    uint64_t seed, double *t, masq_err *err)
{
	double tv[BENCH_RAND_REPS];
	for (int k = 0; k < BENCH_RAND_REPS; k++) {
		rng gr;
		rng_init(&gr, seed);
		if (k > 0)
			cmc_result_done(rs);
		double t0 = masq_now();
		if (cmc_compute_prec(rs, dWt, d, out, w, rank, CMC_SVD_RANDOMIZED | flags, CMC_F32, &gr, err) < 0)
			return -1;
		tv[k] = masq_now() - t0;
	}
	*t = bench_median(tv, BENCH_RAND_REPS);
	return 0;
}

int
main(int argc, char **argv)
{
	bench_opts o;
	int rc = bench_parse_args(argc, argv, &o);
	if (rc != 0) {
		if (rc < 0)
			bench_usage(stderr);
		return rc < 0 ? 2 : 0;
	}
	masq_blas_set_threads(o.threads);
	int d = o.d, out = o.out, n = o.tokens, nt = n / 4 > 0 ? n / 4 : 1;
	int rank = cmc_rank_resolve(o.ratio, CMC_RANK_FLOOR, d, out);
	printf("bench_cmc: d %d, out %d, tokens %d (text %d), rank %d (setting %g, floor %d), "
	    "threads %d (OpenBLAS reports %d, kernels %s), seed %llu, spectrum k^-%g\n", d, out,
	    n, nt, rank, o.ratio, CMC_RANK_FLOOR, o.threads, masq_blas_get_threads(),
	    openblas_get_corename(), o.seed, o.power);

	/* The case. */
	rng g;
	rng_init(&g, o.seed);
	double t0 = masq_now();
	double *R = bench_rand_orthogonal(&g, d);
	double *Xv = bench_make_acts(&g, R, n, d, 10.0, o.power);
	double *Xt = bench_make_acts(&g, R, nt, d, 1.0, o.power);
	size_t nw = xmul((size_t)out, (size_t)d);
	float *W = xmalloc(xmul(nw, sizeof(float)));
	for (size_t i = 0; i < nw; i++)
		W[i] = (float)(rng_normal(&g) / sqrt((double)d));
	float *sv = xmalloc(xmul((size_t)d, sizeof(float)));
	float *st = xmalloc(xmul((size_t)d, sizeof(float)));
	bench_smooth(sv, Xv, n, d, W, out);
	bench_smooth(st, Xt, nt, d, W, out);
	float *Wst = xmalloc(xmul(nw, sizeof(float)));
	for (int r = 0; r < out; r++)
		for (int j = 0; j < d; j++)
			Wst[(size_t)r * d + j] = W[(size_t)r * d + j] * st[j];
	quant_weight_rows(Wst, Wst, out, d, 4);
	float *dWt = xmalloc(xmul(nw, sizeof(float)));
	for (int j = 0; j < d; j++)
		for (int r = 0; r < out; r++)
			dWt[(size_t)j * out + r] = W[(size_t)r * d + j] * sv[j] -
			    Wst[(size_t)r * d + j];
	free(Wst);
	free(Xt);
	free(R);
	printf("setup (activations, factors, W4 base weight): %.2f s\n", masq_now() - t0);

	/* Gram matrix of the vision tokens (upper triangle). */
	double *G = xcalloc(xmul((size_t)d, (size_t)d), sizeof(double));
	t0 = masq_now();
	cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, n, 1.0, Xv, d, 0.0, G, d);
	double t_gram = masq_now() - t0;
	free(Xv);

	masq_err err = {0};
	cmc_whitener wh;
	t0 = masq_now();
	if (cmc_whitener_init(&wh, G, sv, d, CMC_EIG_FLOOR, &err) < 0) {
		fprintf(stderr, "bench_cmc: %s\n", err.msg);
		return 1;
	}
	double t_eig = masq_now() - t0;
	/* The Cholesky whitener (the pipeline's default): the same T^T T */
	cmc_whitener whc;
	t0 = masq_now();
	if (cmc_whitener_init_as(&whc, G, sv, d, CMC_EIG_FLOOR, CMC_WHITEN_CHOL, &err) < 0) {
		fprintf(stderr, "bench_cmc: %s\n", err.msg);
		return 1;
	}
	double t_chol = masq_now() - t0;
	free(G);

	/* The shared whitening product alone, for the breakdown. */
	size_t nd = xmul((size_t)d, (size_t)out);
	double *A = xmalloc(xmul(nd, sizeof(double)));
	double *M = xmalloc(xmul(nd, sizeof(double)));
	for (size_t i = 0; i < nd; i++)
		A[i] = dWt[i];
	t0 = masq_now();
	cmc_whiten(&wh, A, out, M);
	double t_whiten = masq_now() - t0;
	free(A);
	free(M);

	cmc_result rf, rr;
	bench_load ld0, ld1;
	bench_load_take(&ld0);
	t0 = masq_now();
	if (cmc_compute(&rf, dWt, d, out, &wh, rank, CMC_SVD_FULL, &g, &err) < 0) {
		fprintf(stderr, "bench_cmc: full SVD: %s\n", err.msg);
		return 1;
	}
	double t_full = masq_now() - t0;
	double t_rand_v[BENCH_RAND_REPS];
	for (int k = 0; k < BENCH_RAND_REPS; k++) {
		rng gr;
		rng_init(&gr, o.seed + 1);
		if (k > 0)
			cmc_result_done(&rr);
		t0 = masq_now();
		if (cmc_compute(&rr, dWt, d, out, &wh, rank, CMC_SVD_RANDOMIZED, &gr, &err) < 0) {
			fprintf(stderr, "bench_cmc: randomized SVD: %s\n", err.msg);
			return 1;
		}
		t_rand_v[k] = masq_now() - t0;
	}
	double t_sorted[BENCH_RAND_REPS];
	memcpy(t_sorted, t_rand_v, sizeof t_sorted);
	double t_rand = bench_median(t_sorted, BENCH_RAND_REPS);
	bench_load_take(&ld1);

	/* The same randomized SVD in single precision (cmc_compute_prec,
	 * CMC_F32): its factors' whitened residual measured in double. */
	cmc_result rs;
	double t_f32;
	if (rand_f32(&rs, dWt, d, out, &wh, rank, 0, o.seed + 1, &t_f32, &err) < 0) {
		fprintf(stderr, "bench_cmc: randomized SVD in f32: %s\n", err.msg);
		return 1;
	}
	double err_f32 = cmc_residual(&wh, dWt, d, out, rs.L1, rs.L2, rank) / rf.total_energy;
	double err_rand_d = cmc_residual(&wh, dWt, d, out, rr.L1, rr.L2, rank) / rf.total_energy;
	double f32_rel = (err_f32 - err_rand_d) / err_rand_d;
	int f32_fell = rs.fell_back;
	cmc_result_done(&rs);

	/* Single precision on the Cholesky whitener, its factors measured in
	 * the eigendecomposition's metric */
	double t_chol_f32;
	if (rand_f32(&rs, dWt, d, out, &whc, rank, 0, o.seed + 1, &t_chol_f32, &err) < 0) {
		fprintf(stderr, "bench_cmc: randomized SVD in f32, cholesky: %s\n", err.msg);
		return 1;
	}
	double err_chol = cmc_residual(&wh, dWt, d, out, rs.L1, rs.L2, rank) / rf.total_energy;
	double chol_rel = (err_chol - err_rand_d) / err_rand_d;
	int chol_fell = rs.fell_back;
	cmc_result_done(&rs);

	/* The pipeline's default: the same with the inner steps by Gram
	 * matrices (CMC_SVD_GRAM) */
	double t_rsvd_gram;
	if (rand_f32(&rs, dWt, d, out, &whc, rank, CMC_SVD_GRAM, o.seed + 1, &t_rsvd_gram, &err) < 0) {
		fprintf(stderr, "bench_cmc: randomized SVD in f32, cholesky, gram steps: %s\n", err.msg);
		return 1;
	}
	double err_gram = cmc_residual(&wh, dWt, d, out, rs.L1, rs.L2, rank) / rf.total_energy;
	double gram_rel = (err_gram - err_chol) / err_chol;
	int gram_fell = rs.fell_back, gram_qr = rs.qr_fallbacks;
	cmc_result_done(&rs);

	/* What whitening buys: plain (unwhitened) factors in the whitened metric. */
	cmc_result rp;
	if (cmc_compute(&rp, dWt, d, out, NULL, rank, CMC_SVD_RANDOMIZED, &g, &err) < 0) {
		fprintf(stderr, "bench_cmc: plain SVD: %s\n", err.msg);
		return 1;
	}
	double err_plain = cmc_residual(&wh, dWt, d, out, rp.L1, rp.L2, rank) / rf.total_energy;

	double err_full = rf.resid_energy / rf.total_energy;
	double err_rand = rr.resid_energy / rr.total_energy;
	double err_rel = (err_rand - err_full) / err_full;
	double speedup = t_full / t_rand;
	double top_sv = 0;
	for (int i = 0; i < rank; i++)
		top_sv = fmax(top_sv, fabs(rr.sv[i] - rf.sv[i]) / rf.sv[i]);
	double er = cmc_effective_rank(rf.sv, rf.n_sv);

	printf("\n");
	printf("%-44s %10s\n", "step", "seconds");
	printf("%-44s %10.3f\n", "Gram X^T X (cblas_dsyrk)", t_gram);
	printf("%-44s %10.3f\n", "whitener (LAPACKE_dsyevd)", t_eig);
	printf("%-44s %10.3f\n", "whitener, cholesky (LAPACKE_dpotrf)", t_chol);
	printf("%-44s %10.3f\n", "  of which in cmc_compute: T dWt (dgemm)", t_whiten);
	printf("%-44s %10.3f\n", "cmc_compute, full SVD (dgesdd) [baseline]", t_full);
	printf("%-44s %10.3f\n", "cmc_compute, randomized SVD (median of 3)", t_rand);
	printf("%-44s %10.3f\n", "cmc_compute_prec f32, randomized (median of 3)", t_f32);
	printf("%-44s %10.3f\n", "  the same on the cholesky whitener", t_chol_f32);
	printf("%-44s %10.3f\n", "  the same with the gram steps [pipeline]", t_rsvd_gram);
	printf("%-44s", "  randomized runs");
	for (int k = 0; k < BENCH_RAND_REPS; k++)
		printf(" %.3f", t_rand_v[k]);
	printf("\n");
	printf("\n");
	printf("eigenvalues floored: %d of %d\n", wh.b->n_floored, d);
	printf("whitened effective rank: %.1f (%.3f of min(d, out))\n", er,
	    er / (d < out ? d : out));
	printf("whitened residual at rank %d: full %.6f, randomized %.6f (rel diff %.2e), "
	    "plain-SVD factors %.6f\n", rank, err_full, err_rand, err_rel, err_plain);
	printf("top %d singular values, randomized vs full: max rel diff %.2e\n", rank, top_sv);
	printf("speedup full / randomized: %.2f\n", speedup);
	printf("single precision: whitened residual %.6f against %.6f in double (rel diff %.2e%s), "
	    "speedup f64 / f32 %.2f\n", err_f32, err_rand_d, f32_rel, f32_fell ? ", fell back to f64" : "",
	    t_rand / t_f32);
	bench_load_report(&ld0, &ld1);
	int pass = speedup >= BENCH_TARGET_SPEEDUP && fabs(err_rel) <= BENCH_TARGET_ERR;
	printf("bench_cmc: d=%d out=%d rank=%d full_s=%.3f rand_s=%.3f speedup=%.2f "
	    "err_full=%.6f err_rand=%.6f err_rel_diff=%.2e target_speedup=%g target_err=%g %s\n",
	    d, out, rank, t_full, t_rand, speedup, err_full, err_rand, err_rel,
	    BENCH_TARGET_SPEEDUP, BENCH_TARGET_ERR, pass ? "PASS" : "BELOW");

	printf("bench_cmc_f32: d=%d out=%d rank=%d f64_s=%.3f f32_s=%.3f speedup=%.2f err_f64=%.6f err_f32=%.6f "
	    "err_rel_diff=%.2e fell_back=%d target_err=0.01 %s\n", d, out, rank, t_rand, t_f32, t_rand / t_f32,
	    err_rand_d, err_f32, f32_rel, f32_fell, fabs(f32_rel) <= 0.01 && !f32_fell ? "PASS" : "BELOW");

	printf("bench_cmc_whitener: d=%d out=%d rank=%d eig_s=%.3f chol_s=%.3f speedup=%.1f f32_eig_s=%.3f "
	    "f32_chol_s=%.3f err_f64=%.6f err_chol_f32=%.6f err_rel_diff=%.2e fell_back=%d target_err=0.01 %s\n",
	    d, out, rank, t_eig, t_chol, t_eig / t_chol, t_f32, t_chol_f32, err_rand_d, err_chol, chol_rel, chol_fell,
	    fabs(chol_rel) <= 0.01 && !chol_fell ? "PASS" : "BELOW");

	printf("bench_cmc_rsvd: d=%d out=%d rank=%d householder_s=%.3f gram_s=%.3f speedup=%.2f err_householder=%.6f "
	    "err_gram=%.6f err_rel_diff=%.2e fell_back=%d qr_fallbacks=%d target_err=0.01 %s\n", d, out, rank,
	    t_chol_f32, t_rsvd_gram, t_chol_f32 / t_rsvd_gram, err_chol, err_gram, gram_rel, gram_fell, gram_qr,
	    fabs(gram_rel) <= 0.01 && !gram_fell ? "PASS" : "BELOW");

	cmc_result_done(&rf);
	cmc_result_done(&rr);
	cmc_result_done(&rp);
	cmc_whitener_done(&whc);
	cmc_whitener_done(&wh);
	free(W);
	free(sv);
	free(st);
	free(dWt);
	return 0;
}
