/*
 * rng.h: the one seeded random generator (xoshiro256**, seeded by splitmix64).
 * Every random choice in masq draws from an rng passed in explicitly, so a
 * seed stored with a session reproduces the run.
 */
#ifndef MASQ_RNG_H
#define MASQ_RNG_H

#include <stdint.h>

typedef struct rng {
	uint64_t s[4];
} rng;

void rng_init(rng *r, uint64_t seed);
uint64_t rng_next(rng *r);
/* Uniform in [0, 1). */
double rng_uniform(rng *r);
/* Standard normal (Box-Muller, no cached second value: reproducible). */
double rng_normal(rng *r);
/* Uniform integer in [0, n). */
uint64_t rng_below(rng *r, uint64_t n);

#endif
