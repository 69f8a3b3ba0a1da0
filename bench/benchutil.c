#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/benchutil.h"
#include "core/util.h"

void
bench_load_take(bench_load *ld)
{
	unsigned long long v[8] = {0}, ut = 0, st = 0;
	double tick = (double)sysconf(_SC_CLK_TCK);
	char buf[1024], *p;
	FILE *f;
	int n;

	memset(ld, 0, sizeof *ld);
	ld->t = masq_now();
	if (tick <= 0 || (f = fopen("/proc/stat", "r")) == NULL)
		return;
	n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
	    &v[3], &v[4], &v[5], &v[6], &v[7]);
	fclose(f);
	if (n < 4 || (f = fopen("/proc/self/stat", "r")) == NULL)
		return;
	p = fgets(buf, sizeof buf, f);
	fclose(f);
	/* fields after "pid (comm) ": state is field 3, utime 14, stime 15 */
	if (p == NULL || (p = strrchr(buf, ')')) == NULL ||
	    sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
	    &ut, &st) != 2)
		return;
	/* busy = user nice system irq softirq steal (not idle, iowait) */
	ld->all_busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / tick;
	ld->self_busy = (double)(ut + st) / tick;
	ld->ok = 1;
}

void
bench_load_report(const bench_load *a, const bench_load *b)
{
	if (!a->ok || !b->ok || b->t <= a->t)
		return;
	double other = ((b->all_busy - a->all_busy) - (b->self_busy - a->self_busy)) / (b->t - a->t);
	if (other < 0.0)
		other = 0.0;
	printf("other processes during the timing: %.2f CPUs busy of %ld%s\n", other,
	    sysconf(_SC_NPROCESSORS_ONLN),
	    other > 0.2 ? " -- the machine was not quiet; rerun before trusting the times" : "");
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

double
bench_median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof v[0], cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int
bench_parse_int(const char *s, int lo, int hi, int *v)
{
	char *end;
	long x;

	if (s == NULL || *s == '\0')
		return -1;
	errno = 0;
	x = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || x < lo || x > hi)
		return -1;
	*v = (int)x;
	return 0;
}
