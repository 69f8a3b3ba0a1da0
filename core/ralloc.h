/*
 * ralloc.h: a rank budget for the compensation.  Each item is one
 * compensated linear of one layer; keeping rank r of it costs r * cost
 * bytes (L1 and L2 of every compensated modality) and leaves
 * resid(r) = total - gain[0] - ... - gain[r-1] of whitened error, where
 * gain[i] is the i-th singular value squared of the whitened weight
 * difference summed over the modalities (the spectra cmc_compute returns).
 * Since each item's gains decrease, the greedy allocation by gain per byte
 * is the water-filling one: every item keeps the singular values worth
 * more than one threshold, and no other choice of the same bytes leaves
 * less error, up to the last rank that does not fit.  An item goes from
 * rank 0 straight to RALLOC_MIN_RANK (masq's rank 1 is the ratio 1, the
 * full rank, so an absolute rank starts at 2), as one step of that many
 * ranks' gain and cost.
 *
 *	ralloc_item it[n];           // filled from the spectra
 *	ralloc_result r;
 *	ralloc_budget(it, n, budget_bytes, &r);        // or ralloc_target
 *	ralloc_uniform(it, n, r.bytes, &u);            // the ratio at the same bytes
 */
#ifndef MASQ_RALLOC_H
#define MASQ_RALLOC_H

#include <stdint.h>

#define RALLOC_MIN_RANK 2

typedef struct ralloc_item {
	int cap;		/* ranks known (the spectrum's length) */
	int mn;			/* min(in, out): the uniform ratio's base */
	double cost;		/* bytes per rank */
	double total;		/* whitened error at rank 0 */
	const double *gain;	/* (cap) decreasing: what each further rank removes */
	int rank;		/* out */
} ralloc_item;

typedef struct ralloc_result {
	double bytes;		/* spent */
	double error;		/* total whitened error left */
	double energy;		/* total whitened error at rank 0 */
} ralloc_result;

/* The ranks, within budget bytes, that leave the least total error. */
void ralloc_budget(ralloc_item *it, int n, double budget, ralloc_result *r);
/* The fewest bytes that bring the total error to target (a fraction of
 * the energy, e.g. 10^(-dB/10)), or as far as the spectra allow. */
void ralloc_target(ralloc_item *it, int n, double target, ralloc_result *r);
/* The uniform ratio: rank floor(ratio * mn) for every item (within its
 * cap), the largest ratio whose bytes fit in budget; *ratio gets it.
 * The ranks go to it[].rank. */
void ralloc_uniform(ralloc_item *it, int n, double budget, double *ratio, ralloc_result *r);
/* The error and bytes of it[].rank as they stand. */
void ralloc_eval(const ralloc_item *it, int n, ralloc_result *r);

#endif
