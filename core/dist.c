#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef HAVE_MPI
#include <mpi.h>
#endif

#include "core/dist.h"

#ifdef HAVE_MPI
static int dist_on;		/* MPI_Init ran */
#endif
static int dist_me, dist_n = 1;

/* Messages go in pieces of at most this many bytes (MPI counts are int). */
#define DIST_CHUNK ((size_t)1 << 28)

int
dist_init(int *argc, char ***argv)
{
#ifdef HAVE_MPI
	/* started by mpirun (Open MPI, or a PMI launcher): join the world;
	 * started alone: one process, no MPI at all */
	if (getenv("OMPI_COMM_WORLD_SIZE") == NULL && getenv("PMIX_RANK") == NULL &&
	    getenv("PMI_RANK") == NULL)
		return 0;
	/* mpirun -np 1: one process, and one that may exec itself again
	 * (replay does, to pin the recorded kernels), which MPI_Init in the
	 * new image would refuse; so no MPI for it */
	const char *np = getenv("OMPI_COMM_WORLD_SIZE");
	if (np == NULL)
		np = getenv("PMI_SIZE");
	if (np != NULL && strcmp(np, "1") == 0)
		return 0;
	if (MPI_Init(argc, argv) != MPI_SUCCESS) {
		fprintf(stderr, "masq: MPI_Init failed\n");
		return -1;
	}
	dist_on = 1;
	MPI_Comm_rank(MPI_COMM_WORLD, &dist_me);
	MPI_Comm_size(MPI_COMM_WORLD, &dist_n);
#else
	(void)argc;
	(void)argv;
#endif
	return 0;
}

void
dist_finalize(void)
{
#ifdef HAVE_MPI
	if (dist_on)
		MPI_Finalize();
	dist_on = 0;
#endif
}

int
dist_rank(void)
{
	return dist_me;
}

int
dist_size(void)
{
	return dist_n;
}

const char *
dist_library(void)
{
#ifdef HAVE_MPI
	static char name[64];
	if (name[0] == '\0') {
#ifdef OMPI_MAJOR_VERSION
		snprintf(name, sizeof name, "Open MPI %d.%d.%d", OMPI_MAJOR_VERSION, OMPI_MINOR_VERSION,
		    OMPI_RELEASE_VERSION);
#else
		snprintf(name, sizeof name, "MPI %d.%d", MPI_VERSION, MPI_SUBVERSION);
#endif
	}
	return name;
#else
	return NULL;
#endif
}

/* How many ranks whole sequences in order need when none may hold more
 * than cap tokens (every sequence fits: cap >= the longest). */
static int
shard_count(const int32_t *seq_lens, int n_seqs, int64_t cap)
{
	int parts = 1;
	int64_t run = 0;
	for (int s = 0; s < n_seqs; s++) {
		if (run + seq_lens[s] > cap) {
			parts++;
			run = 0;
		}
		run += seq_lens[s];
	}
	return parts;
}

void
dist_shard(const int32_t *seq_lens, int n_seqs, int size, int *first)
{
	int64_t lo = 0, hi = 0;

	MASQ_ASSERT(size >= 1 && n_seqs >= size);
	for (int s = 0; s < n_seqs; s++) {
		hi += seq_lens[s];
		if (seq_lens[s] > lo)
			lo = seq_lens[s];
	}
	/* the smallest largest share: binary search on the cap, which the
	 * greedy packing decides */
	while (lo < hi) {
		int64_t mid = lo + (hi - lo) / 2;
		if (shard_count(seq_lens, n_seqs, mid) <= size)
			hi = mid;
		else
			lo = mid + 1;
	}
	/* pack greedily under that cap, but leave a sequence for every rank
	 * still to come: cutting earlier only empties a share into ranks that
	 * then hold one sequence each, so no share exceeds the cap */
	int s = 0;
	first[0] = 0;
	for (int r = 0; r < size - 1; r++) {
		int64_t run = seq_lens[s++];
		while (s < n_seqs - (size - 1 - r) && run + seq_lens[s] <= lo)
			run += seq_lens[s++];
		first[r + 1] = s;
	}
	first[size] = n_seqs;
}

#ifdef HAVE_MPI
/* Send or receive n bytes in pieces. */
static void
dist_send(const void *p, size_t n, int to)
{
	for (size_t off = 0; off < n; off += DIST_CHUNK) {
		size_t k = n - off < DIST_CHUNK ? n - off : DIST_CHUNK;
		MPI_Send((const char *)p + off, (int)k, MPI_BYTE, to, 0, MPI_COMM_WORLD);
	}
}

static void
dist_recv(void *p, size_t n, int from)
{
	for (size_t off = 0; off < n; off += DIST_CHUNK) {
		size_t k = n - off < DIST_CHUNK ? n - off : DIST_CHUNK;
		MPI_Recv((char *)p + off, (int)k, MPI_BYTE, from, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
	}
}

static void
dist_bcast(void *p, size_t n)
{
	dist_bcast_from(p, n, 0);
}

/* The fixed-order combination of every rank's x (n elements of size bytes)
 * into rank 0's, then broadcast: rank 0 receives rank 1, 2, ... in turn. */
static void
dist_combine(void *x, size_t n, size_t size, void (*op)(void *acc, const void *part, size_t n))
{
	if (!dist_on || dist_n == 1)
		return;
	if (dist_me == 0) {
		void *part = xmalloc(xmul(n, size));
		for (int r = 1; r < dist_n; r++) {
			dist_recv(part, n * size, r);
			op(x, part, n);
		}
		free(part);
	} else {
		dist_send(x, n * size, 0);
	}
	dist_bcast(x, n * size);
}

static void
op_max_f32(void *acc, const void *part, size_t n)
{
	float *a = acc;
	const float *b = part;
	for (size_t i = 0; i < n; i++)
		if (b[i] > a[i])
			a[i] = b[i];
}

static void
op_sum_f64(void *acc, const void *part, size_t n)
{
	double *a = acc;
	const double *b = part;
	for (size_t i = 0; i < n; i++)
		a[i] += b[i];
}

static void
op_sum_i64(void *acc, const void *part, size_t n)
{
	int64_t *a = acc;
	const int64_t *b = part;
	for (size_t i = 0; i < n; i++)
		a[i] += b[i];
}
#endif

void
dist_max_f32(float *x, size_t n)
{
#ifdef HAVE_MPI
	dist_combine(x, n, sizeof *x, op_max_f32);
#else
	(void)x;
	(void)n;
#endif
}

void
dist_sum_f64(double *x, size_t n)
{
#ifdef HAVE_MPI
	dist_combine(x, n, sizeof *x, op_sum_f64);
#else
	(void)x;
	(void)n;
#endif
}

void
dist_sum_i64(int64_t *x, size_t n)
{
#ifdef HAVE_MPI
	dist_combine(x, n, sizeof *x, op_sum_i64);
#else
	(void)x;
	(void)n;
#endif
}

void
dist_bcast_from(void *x, size_t n, int root)
{
#ifdef HAVE_MPI
	if (!dist_on || dist_n == 1)
		return;
	for (size_t off = 0; off < n; off += DIST_CHUNK) {
		size_t k = n - off < DIST_CHUNK ? n - off : DIST_CHUNK;
		MPI_Bcast((char *)x + off, (int)k, MPI_BYTE, root, MPI_COMM_WORLD);
	}
#else
	(void)x;
	(void)n;
	(void)root;
#endif
}

void
dist_gather_f32(const float *local, const size_t *counts, float *all)
{
	if (dist_n == 1) {
		if (all != local)
			memcpy(all, local, counts[0] * sizeof(float));
		return;
	}
#ifdef HAVE_MPI
	if (dist_me == 0) {
		size_t off = counts[0];
		memcpy(all, local, counts[0] * sizeof(float));
		for (int r = 1; r < dist_n; r++) {
			dist_recv(all + off, counts[r] * sizeof(float), r);
			off += counts[r];
		}
	} else {
		dist_send(local, counts[dist_me] * sizeof(float), 0);
	}
#endif
}

void
dist_merge_f32(float *x, size_t n)
{
#ifdef HAVE_MPI
	if (!dist_on || dist_n == 1)
		return;
	/* the order of a sum of one value and negative zeros does not matter */
	for (size_t off = 0; off < n; off += DIST_CHUNK / sizeof *x) {
		size_t k = n - off < DIST_CHUNK / sizeof *x ? n - off : DIST_CHUNK / sizeof *x;
		MPI_Allreduce(MPI_IN_PLACE, x + off, (int)k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
	}
#else
	(void)x;
	(void)n;
#endif
}

/* Pieces of a streamed part: 16 MiB, so rank 0 holds one at a time. */
#define DIST_STREAM ((size_t)1 << 22)

#ifdef HAVE_MPI
/* n floats to rank to, in pieces of DIST_STREAM floats: each piece one
 * message, received whole (dist_stream_f32's sink takes one at a time). */
static void
send_pieces(const float *x, size_t n, int to)
{
	for (size_t off = 0; off < n; off += DIST_STREAM) {
		size_t k = n - off < DIST_STREAM ? n - off : DIST_STREAM;
		MPI_Send(x + off, (int)k, MPI_FLOAT, to, 0, MPI_COMM_WORLD);
	}
}
#endif

int
dist_stream_f32(const float *local, size_t n, int (*sink)(void *ctx, const float *x, size_t n), void *ctx)
{
	if (dist_n == 1)
		return sink(ctx, local, n);
#ifdef HAVE_MPI
	/* the length, then the pieces */
	if (dist_me != 0) {
		uint64_t len = n;
		dist_send(&len, sizeof len, 0);
		send_pieces(local, n, 0);
		return 0;
	}
	int rc = sink(ctx, local, n);
	float *buf = xmalloc(DIST_STREAM * sizeof *buf);
	for (int r = 1; r < dist_n; r++) {
		uint64_t len;
		dist_recv(&len, sizeof len, r);
		for (uint64_t off = 0; off < len; off += DIST_STREAM) {
			size_t k = len - off < DIST_STREAM ? (size_t)(len - off) : DIST_STREAM;
			MPI_Recv(buf, (int)k, MPI_FLOAT, r, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
			if (rc == 0)
				rc = sink(ctx, buf, k);
		}
	}
	free(buf);
	return rc;
#else
	return sink(ctx, local, n);
#endif
}

/* The counterpart of dist_stream_f32: rank 0's all (every rank's count
 * floats in rank order) to each rank's local, in pieces. */
void
dist_scatter_f32(const float *all, float *local, size_t n)
{
	if (dist_n == 1) {
		memcpy(local, all, n * sizeof *local);
		return;
	}
#ifdef HAVE_MPI
	if (dist_me != 0) {
		uint64_t len = n;
		dist_send(&len, sizeof len, 0);
		for (size_t off = 0; off < n; off += DIST_STREAM) {
			size_t k = n - off < DIST_STREAM ? n - off : DIST_STREAM;
			MPI_Recv(local + off, (int)k, MPI_FLOAT, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
		}
		return;
	}
	memcpy(local, all, n * sizeof *local);
	size_t at = n;
	for (int r = 1; r < dist_n; r++) {
		uint64_t len;
		dist_recv(&len, sizeof len, r);
		send_pieces(all + at, (size_t)len, r);
		at += (size_t)len;
	}
#endif
}

void
dist_bcast_strings(const char *const *in, char **out, size_t n)
{
	/* their lengths (UINT64_MAX for NULL), then their bytes end to end */
	uint64_t *len = xmalloc(xmul(n + 1, sizeof *len)), total = 0;
	for (size_t i = 0; i < n; i++)
		len[i] = dist_me != 0 ? 0 : in[i] == NULL ? UINT64_MAX : strlen(in[i]);
	dist_bcast_from(len, n * sizeof *len, 0);
	for (size_t i = 0; i < n; i++)
		total += len[i] == UINT64_MAX ? 0 : len[i];
	char *all = xmalloc((size_t)total + 1), *at = all;
	for (size_t i = 0; i < n && dist_me == 0; i++)
		if (in[i] != NULL) {
			memcpy(at, in[i], (size_t)len[i]);
			at += len[i];
		}
	dist_bcast_from(all, (size_t)total, 0);
	at = all;
	for (size_t i = 0; i < n; i++) {
		if (len[i] == UINT64_MAX) {
			out[i] = NULL;
			continue;
		}
		out[i] = xmalloc((size_t)len[i] + 1);
		memcpy(out[i], at, (size_t)len[i]);
		out[i][len[i]] = 0;
		at += len[i];
	}
	free(all);
	free(len);
}

int
dist_same_text(const char *text)
{
	char mine[256], root[256];
	snprintf(mine, sizeof mine, "%s", text);
	memcpy(root, mine, sizeof root);
#ifdef HAVE_MPI
	if (dist_on && dist_n > 1)
		MPI_Bcast(root, (int)sizeof root, MPI_BYTE, 0, MPI_COMM_WORLD);
#endif
	return strcmp(mine, root) == 0;
}

/* The lowest rank that failed (failed != 0 on it), on every rank, or
 * INT_MAX when none did. */
static int
first_failed(int failed, int *count)
{
	int v[2] = {failed ? -dist_me : -INT_MAX, failed != 0};	/* the max of -rank is the lowest rank */
#ifdef HAVE_MPI
	if (dist_on && dist_n > 1) {
		MPI_Allreduce(MPI_IN_PLACE, &v[0], 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
		MPI_Allreduce(MPI_IN_PLACE, &v[1], 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
	}
#endif
	if (count != NULL)
		*count = v[1];
	return v[0] == -INT_MAX ? INT_MAX : -v[0];
}

int
dist_agree(int failed, masq_err *err)
{
	int nfail;
	int first = first_failed(failed, &nfail);
	if (first == INT_MAX)
		return 0;
	if (dist_n == 1)
		return 1;
#ifdef HAVE_MPI
	/* the failing rank's status and message, to everyone */
	struct {
		int status;
		char msg[sizeof err->msg];
	} m;
	memset(&m, 0, sizeof m);
	if (first == dist_me) {
		m.status = err != NULL ? (int)err->status : (int)MASQ_ERR_INTERNAL;
		snprintf(m.msg, sizeof m.msg, "%s", err != NULL && err->msg[0] ? err->msg : "failed");
	}
	MPI_Bcast(&m, (int)sizeof m, MPI_BYTE, first, MPI_COMM_WORLD);
	/* a failure that an earlier agreement passed on (and callers
	 * prefixed since) names its rank already; one that every rank met
	 * names none */
	static char last[sizeof err->msg];
	size_t lm = strlen(m.msg), ll = strlen(last);
	int named = ll > 0 && lm >= ll && strcmp(m.msg + lm - ll, last) == 0;
	masq_err e;
	masq_err_set(&e, (masq_status)m.status, "%s", m.msg);
	if (!named && nfail < dist_n)
		masq_err_prefix(&e, "rank %d of %d", first, dist_n);
	snprintf(last, sizeof last, "%s", e.msg);
	if (err != NULL)
		*err = e;
#endif
	return 1;
}

int
dist_stop(int failed, int layer, const masq_err *err)
{
	int first = first_failed(failed, NULL);
	if (first == INT_MAX)
		return 0;
	if (dist_n == 1)
		return 1;	/* one process: the caller reports err as always */
	if (first == dist_me) {
		const char *msg = err != NULL && err->msg[0] ? err->msg : "failed";
		if (layer >= 0)
			fprintf(stderr, "masq: rank %d of %d stopped the run at layer %d: %s\n", dist_me,
			    dist_n, layer, msg);
		else
			fprintf(stderr, "masq: rank %d of %d stopped the run: %s\n", dist_me, dist_n, msg);
	}
	return 1;
}
