/*
 * ralloc.c: the rank budget (ralloc.h).  n is a few hundred items and a
 * rank at most a few thousand, so the greedy step scans the items: no heap.
 */
#include "config.h"

#include <math.h>

#include "core/ralloc.h"

void
ralloc_eval(const ralloc_item *it, int n, ralloc_result *r)
{
	r->bytes = r->error = r->energy = 0;
	for (int i = 0; i < n; i++) {
		double e = it[i].total;
		for (int k = 0; k < it[i].rank && k < it[i].cap; k++)
			e -= it[i].gain[k];
		r->bytes += it[i].rank * it[i].cost;
		r->error += fmax(e, 0.0);
		r->energy += it[i].total;
	}
}

/* Item i's next step: how many ranks (*k), their gain (*g). */
static void
step_of(const ralloc_item *it, int *k, double *g)
{
	*k = it->rank == 0 ? RALLOC_MIN_RANK : 1;
	*g = 0;
	for (int j = it->rank; j < it->rank + *k && j < it->cap; j++)
		*g += it->gain[j];
}

/* The item whose next step removes the most error per byte and fits in
 * left bytes; -1 when none does (or none removes anything). */
static int
best_next(const ralloc_item *it, int n, double left)
{
	int best = -1;
	double bv = 0;
	for (int i = 0; i < n; i++) {
		int k;
		double g;
		step_of(&it[i], &k, &g);
		if (it[i].rank + k > it[i].cap || k * it[i].cost > left || !(it[i].cost > 0))
			continue;
		double v = g / (k * it[i].cost);
		if (v > bv) {
			bv = v;
			best = i;
		}
	}
	return best;
}

void
ralloc_budget(ralloc_item *it, int n, double budget, ralloc_result *r)
{
	double left = budget;
	for (int i = 0; i < n; i++)
		it[i].rank = 0;
	for (;;) {
		int b = best_next(it, n, left), k;
		double g;
		if (b < 0)
			break;
		step_of(&it[b], &k, &g);
		it[b].rank += k;
		left -= k * it[b].cost;
	}
	ralloc_eval(it, n, r);
}

void
ralloc_target(ralloc_item *it, int n, double target, ralloc_result *r)
{
	double energy = 0, err;
	for (int i = 0; i < n; i++) {
		it[i].rank = 0;
		energy += it[i].total;
	}
	err = energy;
	while (err > target * energy) {
		int b = best_next(it, n, INFINITY), k;
		double g;
		if (b < 0)
			break;
		step_of(&it[b], &k, &g);
		err -= g;
		it[b].rank += k;
	}
	ralloc_eval(it, n, r);
}

static void
uniform_at(ralloc_item *it, int n, double ratio)
{
	for (int i = 0; i < n; i++) {
		int k = (int)floor(ratio * it[i].mn);
		it[i].rank = k < 0 ? 0 : k > it[i].cap ? it[i].cap : k;
	}
}

void
ralloc_uniform(ralloc_item *it, int n, double budget, double *ratio, ralloc_result *r)
{
	/* bytes grow with the ratio, in steps: bisect for the largest that fits */
	double lo = 0, hi = 1;
	for (int k = 0; k < 60; k++) {
		double mid = 0.5 * (lo + hi);
		uniform_at(it, n, mid);
		ralloc_eval(it, n, r);
		if (r->bytes <= budget)
			lo = mid;
		else
			hi = mid;
	}
	uniform_at(it, n, lo);
	*ratio = lo;
	ralloc_eval(it, n, r);
}
