#include "config.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/quant.h"
#include "core/util.h"

/*
 * Matching the reference bit for bit.  The reference's quantizer is an
 * OmniQuant-style UniformAffineQuantizer; MASQuant's shipped scripts run it
 * in bfloat16, masq (and the float32 port of the reference it is checked
 * against) in float32, a documented departure (HACKING.md).  It rounds
 * x / scale computed as a true
 * division, never x * (1 / scale), which differs in the last bit for many
 * x.  Rounding is nearbyintf in the default round-to-nearest-even mode, as
 * torch.round.  Every intermediate stays in float; the sums in the
 * asymmetric path are exact or saturate in the clamp.  A NaN anywhere in a
 * row (symmetric) or group (asymmetric) makes its scale and so its whole
 * output NaN, as torch's amax/amin do.
 *
 * One deliberate difference: the reference keeps a zero point of qmax and
 * clamps the rounded x / scale + qmax to [0, 2^b - 1], so a level of +qmax + 1
 * is reachable when the scale saturates at QUANT_SCALE_MAX.  quant.h
 * specifies the symmetric grid [-qmax, qmax] (which also fits int8 at 8
 * bits); only rows whose absmax exceeds qmax * 1e4 can tell the difference.
 */

/* 2^(bits-1) - 1 for bits in [2, 16]. */
int
quant_qmax(int bits)
{
	MASQ_ASSERT(bits >= 2 && bits <= 16);
	return (1 << (bits - 1)) - 1;
}

/* absmax / qmax in float, clamped to [QUANT_SCALE_MIN, QUANT_SCALE_MAX] (NaN stays NaN). */
float
quant_scale_sym(float absmax, int bits)
{
	float s = absmax / (float)quant_qmax(bits);

	if (s < QUANT_SCALE_MIN)
		s = QUANT_SCALE_MIN;
	if (s > QUANT_SCALE_MAX)
		s = QUANT_SCALE_MAX;
	return s;
}

/*
 * Largest |x[j]| over the d values of x (0 for d = 0; a NaN if any x[j] is
 * NaN).  Computed on the bit patterns: with the sign cleared, IEEE floats
 * order as unsigned integers (NaNs above infinity), and an integer max
 * reduction vectorizes where a float one may not without -ffast-math.
 */
static float
quant_absmax(const float *x, int d)
{
	uint32_t m = 0;
	float f;

	for (int j = 0; j < d; j++) {
		uint32_t u;
		memcpy(&u, &x[j], sizeof u);
		u &= 0x7fffffffu;
		m = u > m ? u : m;
	}
	memcpy(&f, &m, sizeof f);
	return f;
}

/*
 * nearbyintf(v) for |v| <= 2^22 in the default rounding mode, without a
 * library call, so the loops below vectorize: adding and subtracting
 * 1.5 * 2^23 leaves v rounded half to even in the float's last place.
 * copysignf keeps the sign of a zero result (-0.3 -> -0), as nearbyintf.
 * Callers clamp v to a few units past +-qmax first, so it is in range;
 * a NaN stays a NaN.  Exact equality with nearbyintf is tested.
 */
static inline float
rint_small(float v)
{
	const float magic = 0x1.8p23f;
	return copysignf((v + magic) - magic, v);
}

/* y (d) = clamp(nearbyint(x / s), -qmax, qmax) * s; y may equal x. */
MASQ_VECTOR_CLONES static void
quant_row_sym(float *y, const float *x, int d, float s, float qmax)
{
	float lim = qmax + 1.0f;
	for (int j = 0; j < d; j++) {
		float v = x[j] / s;	/* x / s, as torch: not x * (1/s) */
		v = v < -lim ? -lim : v;
		v = v > lim ? lim : v;
		float q = rint_small(v);
		q = q < -qmax ? -qmax : q;
		q = q > qmax ? qmax : q;
		y[j] = q * s;
	}
}

/* Per-row symmetric fake quant of x (n, d) into y (n, d); bits >= 16 copies. */
static void
quant_rows_sym(float *y, const float *x, int n, int d, int bits)
{
	MASQ_ASSERT(bits >= 2 && bits <= 16 && n >= 0 && d >= 0);
	if (bits >= 16) {
		if (y != x && n > 0 && d > 0)
			memcpy(y, x, (size_t)n * (size_t)d * sizeof *x);
		return;
	}
	float qmax = (float)quant_qmax(bits);
	for (int r = 0; r < n; r++) {
		const float *xr = x + (size_t)r * (size_t)d;
		float *yr = y + (size_t)r * (size_t)d;
		quant_row_sym(yr, xr, d, quant_scale_sym(quant_absmax(xr, d), bits), qmax);
	}
}

/* y (n, d) = per-token symmetric fake quant of x (n, d); y may equal x. */
void
quant_act_rows(float *y, const float *x, int n, int d, int bits)
{
	quant_rows_sym(y, x, n, d, bits);
}

/*
 * q (n, d) levels and scale (n) of the per-token symmetric quantizer, with
 * q * scale == quant_act_rows() exactly: the same clamp and rounding as
 * quant_row_sym, the levels kept instead of multiplied back.  A NaN row
 * gets levels 0 and a NaN scale (its outputs are NaN either way).
 */
MASQ_VECTOR_CLONES void
quant_act_rows_int(int8_t *q, float *scale, const float *x, int n, int d, int bits)
{
	MASQ_ASSERT(bits >= 2 && bits <= 8 && n >= 0 && d >= 0);
	float qmax = (float)quant_qmax(bits), lim = qmax + 1.0f;
	for (int r = 0; r < n; r++) {
		const float *xr = x + (size_t)r * (size_t)d;
		int8_t *qr = q + (size_t)r * (size_t)d;
		float s = quant_scale_sym(quant_absmax(xr, d), bits);
		for (int j = 0; j < d; j++) {
			float v = xr[j] / s;
			v = v < -lim ? -lim : v;
			v = v > lim ? lim : v;
			v = rint_small(v);
			v = v < -qmax ? -qmax : v;
			v = v > qmax ? qmax : v;
			qr[j] = (int8_t)(v == v ? v : 0.0f);
		}
		scale[r] = s;
	}
}

/* y (out, in) = per-output-channel symmetric fake quant of W (out, in). */
void
quant_weight_rows(float *y, const float *W, int out, int in, int bits)
{
	quant_rows_sym(y, W, out, in, bits);
}

/* q (out, in) levels and scale (out) with q * scale == quant_weight_rows() exactly. */
void
quant_weight_rows_int(int8_t *q, float *scale, const float *W, int out, int in, int bits)
{
	MASQ_ASSERT(bits >= 2 && bits <= 8 && out >= 0 && in >= 0);
	float qmax = (float)quant_qmax(bits);
	for (int r = 0; r < out; r++) {
		const float *wr = W + (size_t)r * (size_t)in;
		int8_t *qr = q + (size_t)r * (size_t)in;
		float s = quant_scale_sym(quant_absmax(wr, in), bits);
		for (int j = 0; j < in; j++) {
			float v = nearbyintf(wr[j] / s);
			v = v < -qmax ? -qmax : v;
			v = v > qmax ? qmax : v;
			qr[j] = v == v ? (int8_t)v : 0;	/* NaN row: level 0, scale NaN */
		}
		scale[r] = s;
	}
}

/* One group's scale and zero point, as quant_group_asym computes them. */
static void
group_asym_params(const float *x, int len, int bits, float *scale, float *zero)
{
	float mn = x[0], mx = x[0];
	int nan = 0;
	for (int j = 0; j < len; j++) {
		mn = x[j] < mn ? x[j] : mn;
		mx = x[j] > mx ? x[j] : mx;
		nan |= x[j] != x[j];
	}
	float top = (float)((1 << bits) - 1);
	float s = nan ? NAN : (mx - mn) / top;
	s = s < QUANT_SCALE_MIN ? QUANT_SCALE_MIN : s;
	s = s > QUANT_SCALE_MAX ? QUANT_SCALE_MAX : s;
	float z = nearbyintf(-mn / s);
	z = z < -1e4f ? -1e4f : z;
	z = z > 1e4f ? 1e4f : z;
	*scale = s;
	*zero = z;
}

/* y (len) = asymmetric fake quant of one group x (len) at 2^bits levels. */
static void
quant_group_asym(float *y, const float *x, int len, int bits)
{
	float top = (float)((1 << bits) - 1), s, z;
	group_asym_params(x, len, bits, &s, &z);
	for (int j = 0; j < len; j++) {
		float q = nearbyintf(x[j] / s) + z;	/* x / s, as torch */
		q = q < 0.0f ? 0.0f : q;
		q = q > top ? top : q;
		y[j] = (q - z) * s;
	}
}

void
quant_weight_groups_int(uint8_t *q, float *scale, float *zero, const float *W, int out, int in,
    int bits, int group)
{
	MASQ_ASSERT(bits >= 2 && bits <= 8 && group > 0 && out >= 0 && in >= 0);
	int ng = (in + group - 1) / group;
	float top = (float)((1 << bits) - 1);
	for (int r = 0; r < out; r++) {
		size_t row = (size_t)r * (size_t)in;
		for (int g = 0, gi = 0; g < in; g += group, gi++) {
			int len = in - g < group ? in - g : group;
			const float *x = W + row + (size_t)g;
			float s, z;
			group_asym_params(x, len, bits, &s, &z);
			int nan = s != s || z != z;
			for (int j = 0; j < len; j++) {
				float v = nearbyintf(x[j] / s) + z;	/* as quant_group_asym */
				v = v < 0.0f ? 0.0f : v;
				v = v > top ? top : v;
				q[row + (size_t)g + j] = nan || v != v ? 0 : (uint8_t)v;
			}
			scale[(size_t)r * ng + gi] = s;
			zero[(size_t)r * ng + gi] = nan ? 0.0f : z;
		}
	}
}

/* y (out, in) = asymmetric fake quant of W in groups of `group` inputs per row. */
void
quant_weight_groups(float *y, const float *W, int out, int in, int bits, int group)
{
	MASQ_ASSERT(bits >= 2 && bits <= 16 && group > 0 && out >= 0 && in >= 0);
	if (bits >= 16) {
		if (y != W && out > 0 && in > 0)
			memcpy(y, W, (size_t)out * (size_t)in * sizeof *W);
		return;
	}
	for (int r = 0; r < out; r++) {
		size_t row = (size_t)r * (size_t)in;
		for (int g = 0; g < in; g += group) {
			int len = in - g < group ? in - g : group;
			quant_group_asym(y + row + (size_t)g, W + row + (size_t)g, len, bits);
		}
	}
}

/*
 * The reference twins.  Deliberately independent of the helpers above:
 * the scale is recomputed inline (in float, the one way that matches
 * torch), absmax, min and max are found in double (exact: a max of floats
 * is one of them), and every element is handled one at a time.
 */

/* Per-row symmetric fake quant, written the most obvious way. */
static void
quant_rows_sym_ref(float *y, const float *x, int n, int d, int bits)
{
	MASQ_ASSERT(bits >= 2 && bits <= 16);
	for (int r = 0; r < n; r++) {
		double absmax = 0.0;
		for (int j = 0; j < d; j++) {
			if (isnan(x[(size_t)r * d + j]))
				absmax = NAN;	/* sticks: nothing compares greater */
			if (fabs(x[(size_t)r * d + j]) > absmax)
				absmax = fabs(x[(size_t)r * d + j]);
		}
		if (bits >= 16) {
			for (int j = 0; j < d; j++)
				y[(size_t)r * d + j] = x[(size_t)r * d + j];
			continue;
		}
		int qmax = (1 << (bits - 1)) - 1;
		float scale = (float)absmax / (float)qmax;
		if (scale < 1e-5f)
			scale = 1e-5f;
		if (scale > 1e4f)
			scale = 1e4f;
		for (int j = 0; j < d; j++) {
			float level = nearbyintf(x[(size_t)r * d + j] / scale);
			if (level < (float)-qmax)
				level = (float)-qmax;
			if (level > (float)qmax)
				level = (float)qmax;
			y[(size_t)r * d + j] = level * scale;
		}
	}
}

/* Reference twin of quant_act_rows. */
void
quant_act_rows_ref(float *y, const float *x, int n, int d, int bits)
{
	quant_rows_sym_ref(y, x, n, d, bits);
}

/* Reference twin of quant_weight_rows. */
void
quant_weight_rows_ref(float *y, const float *W, int out, int in, int bits)
{
	quant_rows_sym_ref(y, W, out, in, bits);
}

/* The twins' asymmetric group scale: raw (max - min) / (2^b - 1), the
 * scale clamped to [1e-5, 1e4] (NaN when the group has one), the zero
 * point rounded and clamped to [-1e4, 1e4]; all in float. */
static void
ref_group_scale(double hi, double lo, int bits, int has_nan, float *raw, float *scale, float *zero)
{
	float levels = (float)((1 << bits) - 1);
	*raw = ((float)hi - (float)lo) / levels;
	*scale = has_nan ? NAN : *raw;
	if (*scale < 1e-5f)
		*scale = 1e-5f;
	if (*scale > 1e4f)
		*scale = 1e4f;
	*zero = nearbyintf(-(float)lo / *scale);
	if (*zero < -1e4f)
		*zero = -1e4f;
	if (*zero > 1e4f)
		*zero = 1e4f;
}

/* Reference twin of quant_weight_groups: group by group, element by element. */
void
quant_weight_groups_ref(float *y, const float *W, int out, int in, int bits, int group)
{
	MASQ_ASSERT(bits >= 2 && bits <= 16 && group > 0);
	for (int r = 0; r < out; r++) {
		for (int start = 0; start < in; start += group) {
			int end = start + group < in ? start + group : in;
			const float *w = W + (size_t)r * in;
			float *out_row = y + (size_t)r * in;
			if (bits >= 16) {
				for (int j = start; j < end; j++)
					out_row[j] = w[j];
				continue;
			}
			double lo = w[start], hi = w[start];
			int has_nan = 0;
			for (int j = start; j < end; j++) {
				if (w[j] < lo)
					lo = w[j];
				if (w[j] > hi)
					hi = w[j];
				if (isnan(w[j]))
					has_nan = 1;
			}
			float levels = (float)((1 << bits) - 1), raw, scale, zero;
			ref_group_scale(hi, lo, bits, has_nan, &raw, &scale, &zero);
			for (int j = start; j < end; j++) {
				float q = nearbyintf(w[j] / scale) + zero;
				if (q < 0.0f)
					q = 0.0f;
				if (q > levels)
					q = levels;
				out_row[j] = (q - zero) * scale;
			}
		}
	}
}

/* ---- the straight-through backward ----------------------------------------- */

/*
 * Where the scale's gradient goes, for one row or group x (len) with
 * gscale = d loss / d scale already through the clamp: gx[j] += share for
 * the elements that set the scale.  sym: the scale is max(|max|, |min|) /
 * qmax (top = qmax); asym: (max - min) / top.
 */
static void
ste_scale_to_extremes(float *gx, const float *x, int len, double gscale, double top, int sym)
{
	float mx = x[0], mn = x[0];
	for (int j = 1; j < len; j++) {
		mx = x[j] > mx ? x[j] : mx;
		mn = x[j] < mn ? x[j] : mn;
	}
	int nmax = 0, nmin = 0;
	for (int j = 0; j < len; j++) {
		nmax += x[j] == mx;
		nmin += x[j] == mn;
	}
	double gmax, gmin;
	if (sym) {
		double amx = fabs(mx), amn = fabs(mn);
		double w = amx > amn ? 1.0 : amx == amn ? 0.5 : 0.0;	/* torch.maximum splits ties */
		gmax = gscale / top * w * (mx > 0 ? 1.0 : mx < 0 ? -1.0 : 0.0);
		gmin = gscale / top * (1.0 - w) * (mn > 0 ? 1.0 : mn < 0 ? -1.0 : 0.0);
	} else {
		gmax = gscale / top;
		gmin = -gscale / top;
	}
	if (nmax == 0 || nmin == 0)
		return;	/* a NaN row: nothing compares equal; the step is skipped anyway */
	for (int j = 0; j < len; j++) {
		double add = 0.0;
		if (x[j] == mx)
			add += gmax / nmax;
		if (x[j] == mn)
			add += gmin / nmin;
		gx[j] = (float)(gx[j] + add);
	}
}

void
quant_rows_sym_ste(float *gx, const float *g, const float *x, int n, int d, int bits)
{
	MASQ_ASSERT(bits >= 2 && bits <= 16 && n >= 0 && d >= 0);
	if (bits >= 16) {
		if (gx != g && n > 0 && d > 0)
			memcpy(gx, g, (size_t)n * (size_t)d * sizeof *g);
		return;
	}
	float qmax = (float)quant_qmax(bits);
	for (int r = 0; r < n; r++) {
		const float *xr = x + (size_t)r * d, *gr = g + (size_t)r * d;
		float *out = gx + (size_t)r * d;
		float am = quant_absmax(xr, d), raw = am / qmax;
		float s = quant_scale_sym(am, bits);
		int live = raw >= QUANT_SCALE_MIN && raw <= QUANT_SCALE_MAX;
		double gs = 0.0;
		for (int j = 0; j < d; j++) {
			float u = xr[j] / s;
			float lim = qmax + 1.0f;
			float v = u < -lim ? -lim : u > lim ? lim : u;
			float q = rint_small(v);
			int inside = q >= -qmax && q <= qmax;
			q = q < -qmax ? -qmax : q > qmax ? qmax : q;
			gs += (double)gr[j] * (q - (inside ? u : 0.0f));
			out[j] = inside ? gr[j] : 0.0f;
		}
		if (live && d > 0)
			ste_scale_to_extremes(out, xr, d, gs, qmax, 1);
	}
}

void
quant_groups_asym_ste(float *gx, const float *g, const float *x, int out, int in, int bits, int group)
{
	MASQ_ASSERT(bits >= 2 && bits <= 16 && group > 0 && out >= 0 && in >= 0);
	if (bits >= 16) {
		if (gx != g && out > 0 && in > 0)
			memcpy(gx, g, (size_t)out * (size_t)in * sizeof *g);
		return;
	}
	float top = (float)((1 << bits) - 1);
	for (int r = 0; r < out; r++) {
		for (int g0 = 0; g0 < in; g0 += group) {
			int len = in - g0 < group ? in - g0 : group;
			const float *xr = x + (size_t)r * in + g0, *gr = g + (size_t)r * in + g0;
			float *o = gx + (size_t)r * in + g0;
			float mn = xr[0], mx = xr[0];
			for (int j = 0; j < len; j++) {
				mn = xr[j] < mn ? xr[j] : mn;
				mx = xr[j] > mx ? xr[j] : mx;
			}
			float raw = (mx - mn) / top, s = raw;
			s = s < QUANT_SCALE_MIN ? QUANT_SCALE_MIN : s;
			s = s > QUANT_SCALE_MAX ? QUANT_SCALE_MAX : s;
			int live = raw >= QUANT_SCALE_MIN && raw <= QUANT_SCALE_MAX;
			float z = nearbyintf(-mn / s);
			z = z < -1e4f ? -1e4f : z > 1e4f ? 1e4f : z;
			double gs = 0.0;
			for (int j = 0; j < len; j++) {
				float u = xr[j] / s;
				float q = nearbyintf(u) + z;
				int inside = q >= 0.0f && q <= top;
				q = q < 0.0f ? 0.0f : q > top ? top : q;
				gs += (double)gr[j] * ((q - z) - (inside ? u : 0.0f));
				o[j] = inside ? gr[j] : 0.0f;
			}
			if (live)
				ste_scale_to_extremes(o, xr, len, gs, top, 0);
		}
	}
}

/*
 * The twins: the same rules written out in double, element by element,
 * with the extremes, their counts and the tie split found inline.
 */
void
quant_rows_sym_ste_ref(float *gx, const float *g, const float *x, int n, int d, int bits)
{
	MASQ_ASSERT(bits >= 2 && bits <= 16);
	for (int r = 0; r < n; r++) {
		const float *xr = x + (size_t)r * d, *gr = g + (size_t)r * d;
		double *acc = xmalloc(xmul((size_t)d + 1, sizeof(double)));
		if (bits >= 16) {
			for (int j = 0; j < d; j++)
				gx[(size_t)r * d + j] = gr[j];
			free(acc);
			continue;
		}
		int qmax = (1 << (bits - 1)) - 1;
		double hi = -INFINITY, lo = INFINITY;
		for (int j = 0; j < d; j++) {
			if (xr[j] > hi)
				hi = xr[j];
			if (xr[j] < lo)
				lo = xr[j];
		}
		float absmax = (float)(fabs(hi) > fabs(lo) ? fabs(hi) : fabs(lo));
		float raw = absmax / (float)qmax, scale = raw;
		if (scale < 1e-5f)
			scale = 1e-5f;
		if (scale > 1e4f)
			scale = 1e4f;
		double gscale = 0.0;
		for (int j = 0; j < d; j++) {
			float u = xr[j] / scale;
			float level = nearbyintf(u);
			int inside = fabsf(level) <= (float)qmax;
			if (!inside)
				level = level < 0 ? (float)-qmax : (float)qmax;
			gscale += (double)gr[j] * ((double)level - (inside ? (double)u : 0.0));
			acc[j] = inside ? gr[j] : 0.0;
		}
		if (raw >= 1e-5f && raw <= 1e4f && d > 0) {
			int nhi = 0, nlo = 0;
			for (int j = 0; j < d; j++) {
				nhi += xr[j] == hi;
				nlo += xr[j] == lo;
			}
			double whi = fabs(hi) > fabs(lo) ? 1.0 : fabs(hi) < fabs(lo) ? 0.0 : 0.5;
			double sh = hi > 0 ? 1.0 : hi < 0 ? -1.0 : 0.0, sl = lo > 0 ? 1.0 : lo < 0 ? -1.0 : 0.0;
			for (int j = 0; j < d && nhi > 0 && nlo > 0; j++) {
				if (xr[j] == hi)
					acc[j] += gscale / qmax * whi * sh / nhi;
				if (xr[j] == lo)
					acc[j] += gscale / qmax * (1.0 - whi) * sl / nlo;
			}
		}
		for (int j = 0; j < d; j++)
			gx[(size_t)r * d + j] = (float)acc[j];
		free(acc);
	}
}

void
quant_groups_asym_ste_ref(float *gx, const float *g, const float *x, int out, int in, int bits, int group)
{
	MASQ_ASSERT(bits >= 2 && bits <= 16 && group > 0);
	double *acc = xmalloc(xmul((size_t)group + 1, sizeof(double)));
	for (int r = 0; r < out; r++)
		for (int start = 0; start < in; start += group) {
			int end = start + group < in ? start + group : in;
			const float *xr = x + (size_t)r * in, *gr = g + (size_t)r * in;
			if (bits >= 16) {
				for (int j = start; j < end; j++)
					gx[(size_t)r * in + j] = gr[j];
				continue;
			}
			double hi = xr[start], lo = xr[start];
			for (int j = start; j < end; j++) {
				if (xr[j] > hi)
					hi = xr[j];
				if (xr[j] < lo)
					lo = xr[j];
			}
			float levels = (float)((1 << bits) - 1), raw, scale, zero;
			ref_group_scale(hi, lo, bits, 0, &raw, &scale, &zero);
			double gscale = 0.0;
			for (int j = start; j < end; j++) {
				float u = xr[j] / scale;
				float q = nearbyintf(u) + zero;
				int inside = q >= 0.0f && q <= levels;
				if (!inside)
					q = q < 0.0f ? 0.0f : levels;
				gscale += (double)gr[j] * ((double)(q - zero) - (inside ? (double)u : 0.0));
				acc[j - start] = inside ? gr[j] : 0.0;
			}
			if (raw >= 1e-5f && raw <= 1e4f) {
				int nhi = 0, nlo = 0;
				for (int j = start; j < end; j++) {
					nhi += xr[j] == hi;
					nlo += xr[j] == lo;
				}
				for (int j = start; j < end && nhi > 0 && nlo > 0; j++) {
					if (xr[j] == hi)
						acc[j - start] += gscale / levels / nhi;
					if (xr[j] == lo)
						acc[j - start] -= gscale / levels / nlo;
				}
			}
			for (int j = start; j < end; j++)
				gx[(size_t)r * in + j] = (float)acc[j - start];
		}
	free(acc);
}
