/*
 * test_ralloc.c: the rank budget (core/ralloc.h) on random decreasing
 * spectra: within budget, never worse than the uniform ratio at the same
 * bytes, within one step of the exhaustive optimum on small cases, and a
 * target reached with no more bytes than needed.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/ralloc.h"
#include "core/rng.h"
#include "tests/tap.h"

#define NI 5		/* items of the exhaustive cases */
#define CAP 6

/* Random items: decreasing gains (a geometric-ish spectrum with noise),
 * costs of different sizes. */
static void
make_items(rng *g, ralloc_item *it, double *gain, int n, int cap)
{
	for (int i = 0; i < n; i++) {
		double v = 1.0 + 10.0 * rng_uniform(g), decay = 0.3 + 0.6 * rng_uniform(g), sum = 0;
		for (int k = 0; k < cap; k++) {
			gain[i * cap + k] = v;
			sum += v;
			v *= decay * (0.8 + 0.2 * rng_uniform(g));
		}
		it[i].cap = cap;
		it[i].mn = cap;
		it[i].cost = 1.0 + (double)(int)(4.0 * rng_uniform(g));
		it[i].total = sum * (1.0 + rng_uniform(g));	/* energy beyond the cap too */
		it[i].gain = gain + i * cap;
	}
}

/* The least error within budget over every choice of ranks in {0, 2..cap}. */
static double
brute(ralloc_item *it, int n, double budget)
{
	int r[NI] = {0};
	double best = INFINITY;
	for (;;) {
		ralloc_result x;
		for (int i = 0; i < n; i++)
			it[i].rank = r[i];
		ralloc_eval(it, n, &x);
		if (x.bytes <= budget && x.error < best)
			best = x.error;
		int i = 0;
		while (i < n) {
			r[i] = r[i] == 0 ? RALLOC_MIN_RANK : r[i] + 1;
			if (r[i] <= CAP)
				break;
			r[i] = 0;
			i++;
		}
		if (i == n)
			break;
	}
	return best;
}

int
main(void)
{
	rng g;
	ralloc_item it[64];
	double gain[64 * 40];
	int within = 1, never_worse = 1, better = 0, cases = 0, near = 1, target_ok = 1;
	double worst_gap = 0;

	rng_init(&g, 20261201);
	for (int c = 0; c < 300; c++) {
		int n = 8 + c % 40;
		make_items(&g, it, gain, n, 40);
		double budget = 20.0 + 400.0 * rng_uniform(&g);
		ralloc_result a, u;
		double ratio;
		ralloc_budget(it, n, budget, &a);
		within &= a.bytes <= budget + 1e-9;
		ralloc_uniform(it, n, a.bytes, &ratio, &u);
		/* the uniform at the bytes the allocation spent: never less error */
		never_worse &= a.error <= u.error * (1 + 1e-12);
		better += a.error < u.error * (1 - 1e-9);
		cases++;
	}
	tap_ok(within, "the allocation stays within its budget (300 random cases)");
	tap_ok(never_worse, "at the same bytes it never leaves more error than the uniform ratio");
	tap_ok(better > cases / 2, "and leaves less in most cases (%d of %d)", better, cases);

	/* exhaustive optimum on small cases: greedy by gain per byte is within
	 * the gain of one step of it (the knapsack's last unit) */
	for (int c = 0; c < 200; c++) {
		make_items(&g, it, gain, NI, CAP);
		double budget = 4.0 + 30.0 * rng_uniform(&g), step = 0;
		ralloc_result a;
		ralloc_budget(it, NI, budget, &a);
		double opt = brute(it, NI, budget);
		for (int i = 0; i < NI; i++)
			step = fmax(step, it[i].gain[0] + it[i].gain[1]);
		double gap = a.error - opt;
		worst_gap = fmax(worst_gap, gap / step);
		near &= gap <= step + 1e-9 && gap >= -1e-9;
	}
	tap_ok(near, "within one step of the exhaustive optimum (200 cases, worst gap %.3f of a step)", worst_gap);

	for (int c = 0; c < 100; c++) {
		int n = 10;
		make_items(&g, it, gain, n, 40);
		ralloc_result a, less;
		double target = 0.3 + 0.4 * rng_uniform(&g);
		ralloc_target(it, n, target, &a);
		/* reached when reachable, and the budget just below does not reach it */
		double reachable = 0, energy = 0;
		for (int i = 0; i < n; i++) {
			double e = it[i].total;
			for (int k = 0; k < it[i].cap; k++)
				e -= it[i].gain[k];
			reachable += e;
			energy += it[i].total;
		}
		if (reachable <= target * energy) {
			target_ok &= a.error <= target * energy * (1 + 1e-12);
			/* a budget of the bytes it spent reaches it too */
			ralloc_budget(it, n, a.bytes, &less);
			target_ok &= less.error <= target * energy * (1 + 1e-12);
		}
	}
	tap_ok(target_ok, "a reachable target is reached, and a budget of the bytes it spent reaches it too");
	return tap_done();
}
