/*
 * benchutil.h: what the benchmarks share: median of repeated timings,
 * integer options, and how busy the rest of the machine was while they ran
 * (a same-run ratio is only as good as the machine is quiet).
 */
#ifndef MASQ_BENCHUTIL_H
#define MASQ_BENCHUTIL_H

/* CPU time counters for telling how busy the rest of the machine was. */
typedef struct bench_load {
	double t;		/* masq_now() when taken */
	double all_busy;	/* seconds all CPUs were busy since boot (/proc/stat) */
	double self_busy;	/* seconds this process ran (/proc/self/stat) */
	int ok;			/* both files could be read */
} bench_load;

/* Take the machine's and this process's CPU time; ld->ok = 0 where /proc
 * is not there (the load report is then left out). */
void bench_load_take(bench_load *ld);
/* Print "other processes during the timing: X CPUs busy of N", with a
 * warning above 0.2 CPUs, for the interval from a to b (nothing when
 * unknown). */
void bench_load_report(const bench_load *a, const bench_load *b);
/* Median of the n > 0 values of v; v is reordered. */
double bench_median(double *v, int n);
/* Parse a decimal int in [lo, hi] from s into *v; -1 when s is not one. */
int bench_parse_int(const char *s, int lo, int hi, int *v);

#endif
