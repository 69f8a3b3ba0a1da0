/*
 * numenv.h: the numeric environment, what decides the last bits of every
 * floating-point result masq computes: this build (compiler, the flags that
 * change floating point, sanitizers), the C library's libm, the BLAS
 * library with its version, kernel set and thread count, the CPU features
 * that select kernels, and a probe: the bits of a few BLAS and LAPACK calls
 * at the shapes and blockings the pipeline uses.  A session records it when
 * it opens; replay compares it with the machine it runs on (masq(1),
 * REPLAY).
 *
 *	json_t *env = numenv_collect(threads, compute);  // after the threads are set
 *	numenv_key_diff(recorded, env, diffs, 8);  // what keeps exactness away
 *	if (numenv_corename_runnable("Haswell")) ... OPENBLAS_CORETYPE=Haswell
 *
 * Two environments with equal keys (numenv_key_diff returns 0) give
 * bit-identical results; sanitizers are recorded but are not part of the
 * key (they do not change floating point: the example sessions replay
 * exactly under both builds, tests/examples.sh).
 */
#ifndef MASQ_NUMENV_H
#define MASQ_NUMENV_H

#include <jansson.h>

/* The environment as a JSON object (a new reference):
 *   {"masq": VERSION, "build": {compiler, fp, isa, sanitizers, cflags},
 *    "libc": "glibc 2.36",
 *    "blas": {library, version, config, corename, parallel, threads,
 *             coretype_env},
 *    "cpu": {vendor, model, features: [...]},
 *    "probe": "<16 hex digits>",
 *    "qgemm": "int8" | "float",   (the quantized linears' product, igemm.h)
 *    "bgemm": "avx512bf16" | "sgemm",   (the bf16 GEMM, bgemm.h: only when
 *                                        compute is ENGINE_BF16)
 *    "processes": N,   (under mpirun, N > 1)
 *    "ranks": "rank R of N: ..."}   (under mpirun, a rank whose key differs
 *                                    from rank 0's: numenv_ranks)
 * A session resumed in another environment adds to its record
 * "resumed": [{"layer": L, "differs": ["name: recorded X, here Y", ...]}];
 * a recorded "resumed" differs from every environment (what it computed
 * came from two).
 * threads > 0 pins the BLAS threads before the probe runs; compute is the
 * session's enum engine_compute (what its forwards depend on). */
json_t *numenv_collect(int threads, int compute);

/* The fields of the key that differ between a (recorded) and b (here), as
 * "name: recorded X, here Y" lines into diff[0..max) (new strings, the
 * caller frees them); returns how many differ (they may be more than max).
 * A NULL or non-object a differs in everything ("not recorded"). */
int numenv_key_diff(json_t *a, json_t *b, char **diff, int max);

/* Under mpirun, every rank with its own env: when some rank's key differs
 * from rank 0's, rank 0's env gains "ranks": "rank R of N: name: recorded
 * X, here Y" (the lowest such rank, X rank 0's) and every rank returns 1;
 * else 0.  A recorded "ranks" is part of the key: no one process
 * reproduces such a run.  One process: 0. */
int numenv_ranks(json_t *env);

/* The OpenBLAS kernel set an environment names ("Haswell"), or NULL. */
const char *numenv_corename(json_t *env);

/* 1 when this CPU can run OpenBLAS's kernel set name (a name
 * OPENBLAS_CORETYPE accepts), 0 when it cannot or the name is unknown. */
int numenv_corename_runnable(const char *name);

/* The BLAS kernel set in use now ("Haswell", or "unknown"). */
const char *numenv_corename_now(void);

#endif
