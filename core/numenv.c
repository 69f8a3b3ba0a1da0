#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#if defined(__GLIBC__)
#include <gnu/libc-version.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "core/dist.h"
#include "core/blas.h"
#include "core/engine.h"
#include "core/bgemm.h"
#include "core/igemm.h"
#include "core/numenv.h"
#include "core/sha256.h"
#include "core/util.h"

#ifdef HAVE_OPENBLAS_GET_CONFIG
char *openblas_get_config(void);
#endif
#ifdef HAVE_OPENBLAS_GET_CORENAME
char *openblas_get_corename(void);
#endif

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MASQ_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define MASQ_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define MASQ_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define MASQ_TSAN 1
#endif
/* configure's sanitizer flags define MASQ_UBSAN (no compiler macro says so) */
static const char *
build_sanitizers(void)
{
	return ""
#ifdef MASQ_ASAN
	    "address "
#endif
#ifdef MASQ_UBSAN
	    "undefined "
#endif
#ifdef MASQ_TSAN
	    "thread "
#endif
	    "";
}

/* ---- this build ------------------------------------------------------------ */

static const char *
build_compiler(void)
{
#if defined(__clang__)
	return "clang " __clang_version__;
#elif defined(__GNUC__)
	return "gcc " __VERSION__;
#else
	return "unknown";
#endif
}


/* What the compiler was told that can change a floating-point result:
 * contraction into FMA, fast-math's reassociation, excess precision. */
static void
build_fp(char *buf, size_t n)
{
	snprintf(buf, n, "optimize=%d fast-math=%d finite-math=%d fma=%d flt-eval=%d",
#ifdef __OPTIMIZE__
	    1,
#else
	    0,
#endif
#ifdef __FAST_MATH__
	    1,
#else
	    0,
#endif
#if defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__
	    1,
#else
	    0,
#endif
#if defined(__FMA__) || defined(__FP_FAST_FMAF)
	    1,
#else
	    0,
#endif
#ifdef __FLT_EVAL_METHOD__
	    (int)__FLT_EVAL_METHOD__
#else
	    -1
#endif
	    );
}

static const char *
build_isa(void)
{
#if defined(__AVX512F__)
	return "x86-64 avx512f";
#elif defined(__AVX2__)
	return "x86-64 avx2";
#elif defined(__AVX__)
	return "x86-64 avx";
#elif defined(__x86_64__)
	return "x86-64";
#elif defined(__aarch64__)
	return "aarch64";
#else
	return "other";
#endif
}

static void
libc_version(char *buf, size_t n)
{
#if defined(__GLIBC__)
	snprintf(buf, n, "glibc %s", gnu_get_libc_version());
#else
	snprintf(buf, n, "unknown");
#endif
}

/* ---- the CPU ------------------------------------------------------------------ */

/* The features that select OpenBLAS's x86 kernels (and the ones masq might
 * dispatch on). */
static const char *const cpu_feature_names[] = {
	"sse4.2", "avx", "avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl",
	"avx512vnni", "avx512bf16", "avxvnni", "amx-tile", "amx-bf16", "avx512fp16",
};
#define N_CPU_FEATURES (sizeof cpu_feature_names / sizeof cpu_feature_names[0])

#if defined(__x86_64__) || defined(__i386__)
/* 1 when the OS saves the register state XCR0 bits mask name. */
static int
xcr0_has(unsigned mask)
{
	unsigned a, b, c, d;
	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27)))	/* OSXSAVE */
		return 0;
	unsigned lo, hi;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	(void)hi;
	return (lo & mask) == mask;
}
#endif

/* Feature i of cpu_feature_names on this CPU (and enabled by the OS). */
static int
cpu_has_i(size_t i)
{
#if defined(__x86_64__) || defined(__i386__)
	unsigned a = 0, b = 0, c = 0, d = 0, a7 = 0, b7 = 0, c7 = 0, d7 = 0, a71 = 0, b71 = 0, c71 = 0, d71 = 0;
	__get_cpuid(1, &a, &b, &c, &d);
	__get_cpuid_count(7, 0, &a7, &b7, &c7, &d7);
	__get_cpuid_count(7, 1, &a71, &b71, &c71, &d71);
	int ymm = xcr0_has(0x6), zmm = xcr0_has(0xe6), tile = xcr0_has(0x60000);
	switch (i) {
	case 0: return (c >> 20) & 1;
	case 1: return ((c >> 28) & 1) && ymm;
	case 2: return ((b7 >> 5) & 1) && ymm;
	case 3: return ((c >> 12) & 1) && ymm;
	case 4: return ((b7 >> 16) & 1) && zmm;
	case 5: return ((b7 >> 28) & 1) && zmm;
	case 6: return ((b7 >> 30) & 1) && zmm;
	case 7: return ((b7 >> 17) & 1) && zmm;
	case 8: return ((b7 >> 31) & 1) && zmm;
	case 9: return ((c7 >> 11) & 1) && zmm;
	case 10: return ((a71 >> 5) & 1) && zmm;
	case 11: return ((a71 >> 4) & 1) && ymm;
	case 12: return ((d7 >> 24) & 1) && tile;
	case 13: return ((d7 >> 22) & 1) && tile;
	case 14: return ((d7 >> 23) & 1) && zmm;
	}
#else
	(void)i;
#endif
	return 0;
}

static int
cpu_has(const char *name)
{
	for (size_t i = 0; i < N_CPU_FEATURES; i++)
		if (strcmp(cpu_feature_names[i], name) == 0)
			return cpu_has_i(i);
	return 0;
}

static void
cpu_ident(char *vendor, size_t nv, char *name, size_t nm)
{
	snprintf(vendor, nv, "unknown");
	snprintf(name, nm, "unknown");
#if defined(__x86_64__) || defined(__i386__)
	unsigned r[4];
	char v[13];
	if (__get_cpuid(0, &r[0], &r[1], &r[2], &r[3])) {
		memcpy(v, &r[1], 4);
		memcpy(v + 4, &r[3], 4);
		memcpy(v + 8, &r[2], 4);
		v[12] = '\0';
		snprintf(vendor, nv, "%s", v);
	}
	unsigned top = __get_cpuid_max(0x80000000u, NULL);
	if (top >= 0x80000004u) {
		char b[49];
		for (unsigned k = 0; k < 3; k++) {
			__get_cpuid(0x80000002u + k, &r[0], &r[1], &r[2], &r[3]);
			memcpy(b + 16 * k, r, 16);
		}
		b[48] = '\0';
		char *s = b;
		while (*s == ' ')
			s++;
		size_t l = strlen(s);
		while (l > 0 && s[l - 1] == ' ')
			s[--l] = '\0';
		snprintf(name, nm, "%s", s);
	}
#endif
}

/* ---- OpenBLAS ---------------------------------------------------------------------- */

const char *
numenv_corename_now(void)
{
#ifdef HAVE_OPENBLAS_GET_CORENAME
	const char *c = openblas_get_corename();
	return c && *c ? c : "unknown";
#else
	return "unknown";
#endif
}

static const char *
blas_config(void)
{
#ifdef HAVE_OPENBLAS_GET_CONFIG
	const char *c = openblas_get_config();
	return c ? c : "unknown";
#else
	return "unknown";
#endif
}

/* The version word of OpenBLAS's config string ("OpenBLAS 0.3.21 ..."). */
static void
blas_version(char *buf, size_t n)
{
	const char *c = blas_config();
	snprintf(buf, n, "unknown");
	if (strncmp(c, "OpenBLAS ", 9) == 0) {
		size_t l = strcspn(c + 9, " ");
		snprintf(buf, n, "%.*s", (int)l, c + 9);
	}
}

/* The kernel sets OPENBLAS_CORETYPE takes on x86-64, with the CPU features
 * each one's code uses (DYNAMIC_ARCH builds, driver/others/dynamic.c). */
static const struct core_need {
	const char *name;
	const char *needs[6];
} core_needs[] = {
	{"Prescott", {NULL}}, {"Core2", {NULL}}, {"Penryn", {NULL}}, {"Dunnington", {NULL}},
	{"Atom", {NULL}}, {"Opteron", {NULL}}, {"Opteron_SSE3", {NULL}}, {"Barcelona", {NULL}},
	{"Nehalem", {"sse4.2", NULL}},
	{"Sandybridge", {"avx", NULL}},
	{"Haswell", {"avx2", "fma", NULL}},
	{"Zen", {"avx2", "fma", NULL}},
	{"SkylakeX", {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", NULL}},
	{"Cooperlake", {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512bf16", NULL}},
	{"SapphireRapids", {"avx512f", "avx512bw", "avx512vl", "avx512bf16", "amx-bf16", NULL}},
};

int
numenv_corename_runnable(const char *name)
{
#if defined(__x86_64__)
	if (name == NULL)
		return 0;
	for (size_t i = 0; i < sizeof core_needs / sizeof core_needs[0]; i++) {
		if (strcasecmp(core_needs[i].name, name) != 0)
			continue;
		for (int k = 0; core_needs[i].needs[k] != NULL; k++)
			if (!cpu_has(core_needs[i].needs[k]))
				return 0;
		return 1;
	}
#else
	(void)name;
#endif
	return 0;
}

/* ---- the probe ---------------------------------------------------------------------- */

/* Uniform values in [-0.5, 0.5) from an integer generator (no libm, no
 * rounding mode: the same bits on every machine). */
static void
probe_fill_f(float *x, size_t n, uint32_t *s)
{
	for (size_t i = 0; i < n; i++) {
		*s = *s * 1664525u + 1013904223u;
		x[i] = (float)(*s >> 8) * (1.0f / 16777216.0f) - 0.5f;
	}
}

static void
probe_fill_d(double *x, size_t n, uint32_t *s)
{
	for (size_t i = 0; i < n; i++) {
		*s = *s * 1664525u + 1013904223u;
		x[i] = (double)(*s >> 8) * (1.0 / 16777216.0) - 0.5;
	}
}

/* The bits of the BLAS and LAPACK calls masq makes, at shapes that reach
 * the libraries' blocking (K beyond one panel) and threading: sgemm as the
 * engine calls it (x W^T and x L1), dsyrk as the statistics accumulate
 * Gram matrices, dgemm, dsyevd and dgesdd as CMC uses them.  Returns the
 * first 16 hex digits of the sha256 of every output. */
static void
probe_run(char out[17])
{
	enum { PM = 96, PN = 160, PK = 1100, GD = 64, GK = 700, EM = 48, SM = 60, SN = 40 };
	uint32_t seed = 20260305u;
	sha256_ctx c;
	char hex[65];

	sha256_init(&c);
	float *x = xmalloc(sizeof(float) * PM * PK), *w = xmalloc(sizeof(float) * PN * PK);
	float *y = xmalloc(sizeof(float) * PM * PN);
	probe_fill_f(x, (size_t)PM * PK, &seed);
	probe_fill_f(w, (size_t)PN * PK, &seed);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, PM, PN, PK, 1.0f, x, PK, w, PK, 0.0f, y, PN);
	sha256_update(&c, y, sizeof(float) * PM * PN);
	/* x (PM, PK) times w viewed as (PK, PN): the NN form */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, PM, PN, PK, 1.0f, x, PK, w, PN, 0.0f, y, PN);
	sha256_update(&c, y, sizeof(float) * PM * PN);
	free(x);
	free(w);
	free(y);

	double *a = xmalloc(sizeof(double) * GK * GD), *g = xcalloc((size_t)GD * GD, sizeof(double));
	probe_fill_d(a, (size_t)GK * GD, &seed);
	cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, GD, GK, 1.0, a, GD, 1.0, g, GD);
	sha256_update(&c, g, sizeof(double) * GD * GD);
	double *b = xmalloc(sizeof(double) * GD * GD);
	cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, GD, GD, GK, 1.0, a, GD, a, GD, 0.0, b, GD);
	sha256_update(&c, b, sizeof(double) * GD * GD);
	/* a symmetric positive definite matrix for the eigensolver */
	double *e = xmalloc(sizeof(double) * EM * EM), lam[EM];
	for (int i = 0; i < EM; i++)
		for (int j = 0; j < EM; j++)
			e[i * EM + j] = b[i * GD + j] + (i == j ? 1.0 : 0.0);
	if (LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', EM, e, EM, lam) == 0) {
		sha256_update(&c, lam, sizeof lam);
		sha256_update(&c, e, sizeof(double) * EM * EM);
	} else {
		sha256_update(&c, "dsyevd failed", 13);
	}
	double *m = xmalloc(sizeof(double) * SM * SN), sv[SN];
	double *u = xmalloc(sizeof(double) * SM * SN), *vt = xmalloc(sizeof(double) * SN * SN);
	probe_fill_d(m, (size_t)SM * SN, &seed);
	if (LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', SM, SN, m, SN, sv, u, SN, vt, SN) == 0) {
		sha256_update(&c, sv, sizeof sv);
		sha256_update(&c, u, sizeof(double) * SM * SN);
	} else {
		sha256_update(&c, "dgesdd failed", 13);
	}
	free(a);
	free(g);
	free(b);
	free(e);
	free(m);
	free(u);
	free(vt);
	sha256_hex(&c, hex);
	memcpy(out, hex, 16);
	out[16] = '\0';
}

/* ---- the record ---------------------------------------------------------------------- */

json_t *
numenv_collect(int threads, int compute)
{
	char fp[160], libc[64], ver[32], vendor[16], cpuname[64], probe[17];
	json_t *j = json_object(), *b = json_object(), *blas = json_object(), *cpu = json_object();
	json_t *feat = json_array();

	if (threads > 0)
		masq_blas_set_threads(threads);
	build_fp(fp, sizeof fp);
	libc_version(libc, sizeof libc);
	blas_version(ver, sizeof ver);
	cpu_ident(vendor, sizeof vendor, cpuname, sizeof cpuname);
	probe_run(probe);

	json_object_set_new(j, "masq", json_string(PACKAGE_VERSION));
	json_object_set_new(b, "compiler", json_string(build_compiler()));
	json_object_set_new(b, "fp", json_string(fp));
	json_object_set_new(b, "isa", json_string(build_isa()));
	{
		char san[64];
		snprintf(san, sizeof san, "%s", build_sanitizers());
		size_t l = strlen(san);
		if (l > 0)
			san[l - 1] = '\0';
		json_object_set_new(b, "sanitizers", json_string(l > 0 ? san : "none"));
	}
#ifdef MASQ_BUILD_CFLAGS
	json_object_set_new(b, "cflags", json_string(MASQ_BUILD_CFLAGS));
#endif
	json_object_set_new(j, "build", b);
	json_object_set_new(j, "libc", json_string(libc));
	json_object_set_new(blas, "library", json_string(strncmp(blas_config(), "OpenBLAS", 8) == 0 ? "OpenBLAS" : "unknown"));
	json_object_set_new(blas, "version", json_string(ver));
	json_object_set_new(blas, "config", json_string(blas_config()));
	json_object_set_new(blas, "corename", json_string(numenv_corename_now()));
#ifdef HAVE_OPENBLAS_GET_PARALLEL
	{
		int openblas_get_parallel(void);
		int par = openblas_get_parallel();
		json_object_set_new(blas, "parallel", json_string(par == 0 ? "serial" : par == 1 ? "pthreads" :
		    par == 2 ? "openmp" : "unknown"));
	}
#endif
	json_object_set_new(blas, "threads", json_integer(masq_blas_get_threads()));
	const char *ct = getenv("OPENBLAS_CORETYPE");
	json_object_set_new(blas, "coretype_env", ct && *ct ? json_string(ct) : json_null());
	json_object_set_new(j, "blas", blas);
	json_object_set_new(cpu, "vendor", json_string(vendor));
	json_object_set_new(cpu, "model", json_string(cpuname));
	for (size_t i = 0; i < N_CPU_FEATURES; i++)
		if (cpu_has_i(i))
			json_array_append_new(feat, json_string(cpu_feature_names[i]));
	json_object_set_new(cpu, "features", feat);
	json_object_set_new(j, "cpu", cpu);
	/* the quantized linears' product: exact integer sums, or float */
	json_object_set_new(j, "qgemm", json_string(igemm_enabled() ? "int8" : "float"));
	/* the bf16 forward's GEMM, for a session that computes in bf16 (the
	 * others do not depend on it, and an absent field equals an absent one) */
	if (compute == ENGINE_BF16)
		json_object_set_new(j, "bgemm", json_string(bgemm_kernel()));
	json_object_set_new(j, "probe", json_string(probe));
	/* several processes (mpirun) sum the statistics in another order
	 * than one does; one process records nothing, as before */
	if (dist_size() > 1)
		json_object_set_new(j, "processes", json_integer(dist_size()));
	return j;
}

/* The fields whose equality the key demands, as paths into the record. */
static const char *const key_fields[][2] = {
	{"masq", NULL}, {"build", "compiler"}, {"build", "fp"}, {"build", "isa"}, {"libc", NULL},
	{"blas", "config"}, {"blas", "corename"}, {"blas", "parallel"}, {"blas", "threads"},
	{"probe", NULL}, {"qgemm", NULL}, {"bgemm", NULL}, {"processes", NULL}, {"ranks", NULL},
};

static json_t *
field_get(json_t *env, const char *a, const char *b)
{
	json_t *v = json_object_get(env, a);
	return b ? json_object_get(v, b) : v;
}

/* v as short text into buf. */
static void
field_text(json_t *v, char *buf, size_t n)
{
	if (v == NULL)
		snprintf(buf, n, "(not recorded)");
	else if (json_is_string(v))
		snprintf(buf, n, "%s", json_string_value(v));
	else if (json_is_integer(v))
		snprintf(buf, n, "%lld", (long long)json_integer_value(v));
	else {
		char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		snprintf(buf, n, "%s", t ? t : "?");
		free(t);
	}
}

/* The key fields that differ between a and b as "name: LA X, LB Y" lines
 * (numenv_key_diff's, with the two sides named la and lb). */
static int
key_fields_diff(json_t *a, json_t *b, const char *la, const char *lb, char **diff, int max)
{
	int nd = 0;
	for (size_t i = 0; i < sizeof key_fields / sizeof key_fields[0]; i++) {
		json_t *x = field_get(a, key_fields[i][0], key_fields[i][1]);
		json_t *y = field_get(b, key_fields[i][0], key_fields[i][1]);
		if (x == NULL ? y == NULL : y != NULL && json_equal(x, y))
			continue;	/* equal, or absent from both */
		if (nd < max) {
			char tx[256], ty[256], line[600];
			field_text(x, tx, sizeof tx);
			field_text(y, ty, sizeof ty);
			snprintf(line, sizeof line, "%s%s%s: %s %s, %s %s", key_fields[i][0],
			    key_fields[i][1] ? "." : "", key_fields[i][1] ? key_fields[i][1] : "", la, tx, lb, ty);
			diff[nd] = xstrdup(line);
		}
		nd++;
	}
	return nd;
}

int
numenv_key_diff(json_t *a, json_t *b, char **diff, int max)
{
	if (!json_is_object(a)) {
		if (max > 0)
			diff[0] = xstrdup("the session recorded no numeric environment (recorded by masq 0.1)");
		return 1;
	}
	int nd = key_fields_diff(a, b, "recorded", "here", diff, max);
	/* a session resumed in another environment computed its later layers
	 * there: no one environment reproduces it */
	json_t *ra = json_object_get(a, "resumed"), *r0 = json_array_get(ra, 0);
	if (json_is_array(ra) && r0 != NULL && !json_equal(ra, json_object_get(b, "resumed"))) {
		if (nd < max) {
			char line[600];
			const char *why = json_string_value(json_array_get(json_object_get(r0, "differs"), 0));
			snprintf(line, sizeof line, "resumed at layer %lld in another numeric environment (%s)",
			    (long long)json_integer_value(json_object_get(r0, "layer")), why ? why : "?");
			diff[nd] = xstrdup(line);
		}
		nd++;
	}
	return nd;
}

int
numenv_ranks(json_t *env)
{
	if (dist_size() < 2)
		return 0;
	/* rank 0's record to every rank, each compares its own with it */
	char *text = dist_rank() == 0 ? json_dumps(env, JSON_COMPACT) : NULL, *got = NULL;
	dist_bcast_strings((const char *const *)&text, &got, 1);
	free(text);
	json_t *root = got != NULL ? json_loads(got, 0, NULL) : NULL;
	free(got);
	char *d[1] = {NULL};
	int nd = dist_rank() == 0 || !json_is_object(root) ? 0 : key_fields_diff(root, env, "rank 0 has", "this one", d, 1);
	json_decref(root);
	masq_err e = {0};
	if (nd > 0)
		masq_err_set(&e, MASQ_ERR_USAGE, "%s", d[0]);
	free(d[0]);
	/* the lowest rank that differs, named, on every rank */
	if (!dist_agree(nd > 0, &e))
		return 0;
	if (dist_rank() == 0)
		json_object_set_new(env, "ranks", json_string(e.msg));
	return 1;
}

const char *
numenv_corename(json_t *env)
{
	return json_string_value(field_get(env, "blas", "corename"));
}
