/*
 * dist.h: the processes of one masq run.  Built with --with-mpi and started
 * by mpirun, masq runs as several ranks of MPI_COMM_WORLD; otherwise (the
 * plain build, or an MPI build started without mpirun) it is one process of
 * rank 0 and every call below is the identity.  core/dist.c is the only
 * includer of mpi.h.
 *
 * Every reduction has a fixed order: rank 0 receives each rank's part in
 * rank order and combines them in that order, so a result never depends on
 * which rank finished first.  Maxima and counts are exact; sums of floats
 * differ from one process's sum by their association only.
 *
 * Errors: a rank that fails must still reach the next dist_stop with the
 * others, or they wait forever; dist_stop is where a run learns that some
 * rank failed, and which.
 *
 *	dist_init(&argc, &argv);
 *	... int first[size + 1]; dist_shard(seq_lens, n_seqs, dist_size(), first);
 *	... dist_max_f32(absmax, n); dist_sum_f64(sums, n);
 *	if (dist_stop(failed, layer, &err)) ...
 *	dist_finalize();
 */
#ifndef MASQ_DIST_H
#define MASQ_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

/* MPI_Init when built with MPI and started by mpirun (its environment says
 * so); 0, or -1 with a message on stderr when MPI fails to start. */
int dist_init(int *argc, char ***argv);
void dist_finalize(void);
int dist_rank(void);
int dist_size(void);
/* "Open MPI 4.1.4" in an MPI build, NULL in the plain one. */
const char *dist_library(void);

/* Whole sequences to ranks, in order, with the largest share of tokens as
 * small as a contiguous split allows: rank r takes sequences first[r] ..
 * first[r + 1] - 1 (first has size + 1 entries).  Every rank gets at least
 * one sequence; n_seqs >= size. */
void dist_shard(const int32_t *seq_lens, int n_seqs, int size, int *first);

/* x (n) becomes the elementwise maximum over ranks, on every rank. */
void dist_max_f32(float *x, size_t n);
/* x (n) becomes rank 0's + rank 1's + ... in that order, on every rank. */
void dist_sum_f64(double *x, size_t n);
void dist_sum_i64(int64_t *x, size_t n);
/* root's n bytes at x, to every rank. */
void dist_bcast_from(void *x, size_t n, int root);
/* Rank 0's all (sum of counts[r] floats) = every rank's local part
 * (counts[rank] floats) in rank order; other ranks pass all = NULL. */
void dist_gather_f32(const float *local, const size_t *counts, float *all);

/* x (n): each element is set on one rank at most and is -0.0 on every
 * other; afterwards every rank holds every element, exactly (x + -0.0 is
 * x for every x, in any order). */
void dist_merge_f32(float *x, size_t n);
/* Rank 0's sink gets every rank's local part (n floats each, n may differ),
 * in rank order, in pieces; every other rank sends its own.  Returns rank
 * 0's first sink failure (the parts after it are received and dropped, so
 * no rank waits), 0 on the others; one process calls sink once. */
int dist_stream_f32(const float *local, size_t n, int (*sink)(void *ctx, const float *x, size_t n),
    void *ctx);

/* Its counterpart: each rank's local (n floats, n may differ) becomes its
 * part of rank 0's all, the parts in rank order (all: their sum; other
 * ranks pass NULL).  One process copies. */
void dist_scatter_f32(const float *all, float *local, size_t n);
/* Rank 0's n strings in (each may be NULL; other ranks pass in = NULL) as
 * new strings (or NULL) in out, on every rank; n is the same on all. */
void dist_bcast_strings(const char *const *in, char **out, size_t n);

/* Whether text (at most 255 bytes) is rank 0's on this rank (1 in one
 * process); every rank calls it. */
int dist_same_text(const char *text);

/* Whether any rank failed (failed != 0 on it), on every rank, without
 * printing: when one did, every rank's err becomes the lowest failing
 * rank's (its status, and its message prefixed "rank R of N: " unless
 * every rank failed), so that rank 0 reports and records what went wrong wherever it
 * did.  One process: failed, err untouched. */
int dist_agree(int failed, masq_err *err);

/* Whether any rank failed (failed != 0 on it), on every rank.  When one
 * did among several, the lowest such rank prints its err on stderr, naming
 * itself and `layer` (when >= 0), and every rank returns 1; one process
 * prints nothing (its caller reports err as it always does). */
int dist_stop(int failed, int layer, const masq_err *err);

#endif
