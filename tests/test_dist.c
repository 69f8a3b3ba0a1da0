/*
 * test_dist.c: core/dist in one process: the sharding of sequences to
 * ranks against a brute-force optimum of the largest share (every split of
 * small sets), and the reductions, the scatter, the string broadcast and
 * dist_stop as the identity.  Several
 * processes are tests/mpi.sh's.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dist.h"
#include "core/rng.h"
#include "tests/tap.h"

#define MAXN 12

/* The smallest largest share over every contiguous split of len (n) into
 * size non-empty parts (dynamic programme over prefixes). */
static int64_t
best_split(const int32_t *len, int n, int size)
{
	int64_t pre[MAXN + 1] = {0}, dp[MAXN + 1][MAXN + 1];
	for (int i = 0; i < n; i++)
		pre[i + 1] = pre[i] + len[i];
	for (int k = 0; k <= size; k++)
		for (int i = 0; i <= n; i++)
			dp[k][i] = INT64_MAX;
	dp[0][0] = 0;
	for (int k = 1; k <= size; k++)
		for (int i = 1; i <= n; i++)
			for (int j = k - 1; j < i; j++) {
				if (dp[k - 1][j] == INT64_MAX)
					continue;
				int64_t part = pre[i] - pre[j], m = dp[k - 1][j] > part ? dp[k - 1][j] : part;
				if (m < dp[k][i])
					dp[k][i] = m;
			}
	return dp[size][n];
}

int
main(void)
{
	rng g;
	rng_init(&g, 2026);
	int bad_shape = 0, bad_balance = 0, cases = 0;
	for (int t = 0; t < 3000; t++) {
		int n = 1 + (int)(rng_uniform(&g) * MAXN);
		int size = 1 + (int)(rng_uniform(&g) * n);
		int32_t len[MAXN];
		int first[MAXN + 1];
		for (int i = 0; i < n; i++)
			len[i] = 1 + (int32_t)(rng_uniform(&g) * (t % 3 == 0 ? 5 : 1000));
		dist_shard(len, n, size, first);
		cases++;
		int ok = first[0] == 0 && first[size] == n;
		int64_t worst = 0;
		for (int r = 0; r < size && ok; r++) {
			ok = first[r + 1] > first[r];
			int64_t share = 0;
			for (int s = first[r]; s < first[r + 1]; s++)
				share += len[s];
			if (share > worst)
				worst = share;
		}
		bad_shape += !ok;
		bad_balance += ok && worst != best_split(len, n, size);
	}
	tap_ok(bad_shape == 0, "dist_shard: every rank a non-empty run of sequences, in order, all covered (%d of %d bad)",
	    bad_shape, cases);
	tap_ok(bad_balance == 0, "dist_shard: the largest share is the smallest a contiguous split allows (%d of %d off)",
	    bad_balance, cases);

	/* one process: the identity */
	tap_ok(dist_size() == 1 && dist_rank() == 0, "one process: rank 0 of 1");
	float x[3] = {1, -2, 3};
	double y[2] = {0.5, 1e300};
	int64_t z[2] = {7, -1};
	dist_max_f32(x, 3);
	dist_sum_f64(y, 2);
	dist_sum_i64(z, 2);
	tap_ok(x[0] == 1 && x[1] == -2 && x[2] == 3 && y[0] == 0.5 && y[1] == 1e300 && z[0] == 7 && z[1] == -1,
	    "one process: the reductions leave their arrays as they are");
	float all[3];
	size_t counts[1] = {3};
	dist_gather_f32(x, counts, all);
	tap_ok(memcmp(all, x, sizeof x) == 0, "one process: the gather is a copy");
	float back[3] = {0};
	dist_scatter_f32(all, back, 3);
	tap_ok(memcmp(back, x, sizeof x) == 0, "one process: the scatter is a copy");
	/* what resume sends: text as bytes (a path need not be UTF-8), NULL kept */
	const char *in[4] = {"settings {}", NULL, "", "/m\xe9dia/model"};
	char *out[4];
	dist_bcast_strings(in, out, 4);
	tap_ok(strcmp(out[0], in[0]) == 0 && out[1] == NULL && strcmp(out[2], "") == 0 && strcmp(out[3], in[3]) == 0,
	    "one process: dist_bcast_strings copies each string, NULL as NULL, bytes as bytes");
	for (int i = 0; i < 4; i++)
		free(out[i]);
	masq_err err = {0};
	tap_ok(dist_stop(0, 0, &err) == 0 && dist_stop(1, 0, &err) == 1, "one process: dist_stop says whether it failed");
	return tap_done();
}
