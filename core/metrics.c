#include "config.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "core/metrics.h"
#include "core/util.h"

/* Zero every running sum of a. */
void
metrics_acc_init(metrics_acc *a)
{
	metrics_acc_init_floor(a, METRICS_FLOOR_MEAN);
}

void
metrics_acc_init_floor(metrics_acc *a, int floor)
{
	memset(a, 0, sizeof *a);
	a->floor = floor;
}

/* 10 log10(mean ref^2 / max(mean (ref - got)^2, METRICS_NOISE_FLOOR)) for
 * one token of width d (floor on the sum of squares: METRICS_FLOOR_SUM),
 * summed in double; -inf when ref is all zeros. */
static double
sqnr_token(const float *ref, const float *got, int d, int floor)
{
	double signal = 0.0, noise = 0.0;

	for (int j = 0; j < d; j++) {
		double r = ref[j], e = (double)ref[j] - (double)got[j];
		signal += r * r;
		noise += e * e;
	}
	double f = floor == METRICS_FLOOR_SUM ? METRICS_NOISE_FLOOR : METRICS_NOISE_FLOOR * d;
	if (noise < f)
		noise = f;
	return 10.0 * log10(signal / noise);
}

double
metrics_sqnr_token(const float *ref, const float *got, int d)
{
	return sqnr_token(ref, got, d, METRICS_FLOOR_MEAN);
}

/* Add each of the n tokens (rows of ref and got, width d) to the sums of its
 * modality (modality[t], or text when modality is NULL) and to the total. */
void
metrics_acc_add(metrics_acc *a, const float *ref, const float *got, const uint8_t *modality,
    int n, int d)
{
	MASQ_ASSERT(n >= 0 && d >= 0);
	for (int t = 0; t < n; t++) {
		const float *r = ref + (size_t)t * (size_t)d;
		const float *g = got + (size_t)t * (size_t)d;
		int m = modality ? modality[t] : MOD_TEXT;
		double abs_sum = 0.0;

		if (m == MOD_SKIP)
			continue;
		MASQ_ASSERT(m < MOD_COUNT);
		for (int j = 0; j < d; j++)
			abs_sum += fabs((double)r[j] - (double)g[j]);
		double sqnr = sqnr_token(r, g, d, a->floor);
		int slot[2] = {m, MOD_COUNT};
		for (int k = 0; k < 2; k++) {
			a->sqnr_sum[slot[k]] += sqnr;
			a->abs_sum[slot[k]] += abs_sum;
			a->elems[slot[k]] += d;
			a->tokens[slot[k]]++;
		}
	}
}

/* Mean per-token SQNR (dB) of modality m (MOD_COUNT: all); NAN without tokens. */
double
metrics_sqnr(const metrics_acc *a, int m)
{
	MASQ_ASSERT(m >= 0 && m <= MOD_COUNT);
	if (a->tokens[m] == 0)
		return NAN;
	return a->sqnr_sum[m] / (double)a->tokens[m];
}

/* Mean |ref - got| over the elements of modality m; NAN without tokens (or
 * when its tokens have width 0). */
double
metrics_mae(const metrics_acc *a, int m)
{
	MASQ_ASSERT(m >= 0 && m <= MOD_COUNT);
	if (a->tokens[m] == 0 || a->elems[m] == 0.0)
		return NAN;
	return a->abs_sum[m] / a->elems[m];
}

/* log(sum_i exp(x[i])) of x (v) in double, shifted by the max so it never
 * overflows. */
static double
metrics_logsumexp(const float *x, int v)
{
	double mx = x[0], sum = 0.0;

	for (int i = 1; i < v; i++)
		if (x[i] > mx)
			mx = x[i];
	for (int i = 0; i < v; i++)
		sum += exp((double)x[i] - mx);
	return mx + log(sum);
}

/* Mean over the n rows (n, v) of KL(softmax(ref) || softmax(got)) in nats,
 * from log-softmax in double; NAN when n or v is 0. */
double
metrics_kl_rows_sum(const float *ref_logits, const float *got_logits, int n, int v)
{
	double total = 0.0;

	MASQ_ASSERT(n >= 0 && v >= 0);
	for (int t = 0; t < n && v > 0; t++) {
		const float *p = ref_logits + (size_t)t * (size_t)v;
		const float *q = got_logits + (size_t)t * (size_t)v;
		double lp0 = metrics_logsumexp(p, v), lq0 = metrics_logsumexp(q, v);
		double kl = 0.0;
		for (int i = 0; i < v; i++) {
			double lp = (double)p[i] - lp0, lq = (double)q[i] - lq0;
			kl += exp(lp) * (lp - lq);
		}
		total += kl;
	}
	return total;
}

double
metrics_kl_rows(const float *ref_logits, const float *got_logits, int n, int v)
{
	MASQ_ASSERT(n >= 0 && v >= 0);
	if (n == 0 || v == 0)
		return NAN;
	return metrics_kl_rows_sum(ref_logits, got_logits, n, v) / n;
}

void
metrics_rel_diff(const float *a, const float *b, size_t n, double floor, double *elem, double *fro,
    size_t *at)
{
	double worst = 0.0, d2 = 0.0, a2 = 0.0;
	size_t wi = 0;
	for (size_t i = 0; i < n; i++) {
		double x = a[i], y = b[i], d = fabs(x - y);
		double r = d / (fmax(fabs(x), fabs(y)) + floor);
		if (!(r <= worst)) {	/* NaN counts as the worst */
			worst = isnan(r) ? INFINITY : r;
			wi = i;
		}
		d2 += d * d;
		a2 += x * x;
	}
	*elem = worst;
	*fro = a2 > 0 ? sqrt(d2 / a2) : d2 > 0 ? INFINITY : 0.0;
	if (at != NULL)
		*at = wi;
}
