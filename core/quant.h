/*
 * quant.h: fake quantizers (quantize, then dequantize back to float32), as
 * MASQuant's reference and SmoothQuant define them.
 *
 * Symmetric: scale = absmax / (2^(b-1) - 1), clamped to [QUANT_SCALE_MIN,
 * QUANT_SCALE_MAX]; q = clamp(nearbyint(x / scale), -(2^(b-1)-1), 2^(b-1)-1);
 * x^ = q * scale.  Rounding is half to even (the default FP rounding mode),
 * as torch.round does.
 * Asymmetric (weights, groups along the input dimension): scale =
 * (max - min) / (2^b - 1) clamped likewise; zero = clamp(nearbyint(-min /
 * scale), -1e4, 1e4); q = clamp(nearbyint(x / scale) + zero, 0, 2^b - 1);
 * x^ = (q - zero) * scale.  min and max are the group's raw values.
 *
 *	quant_act_rows(y, x, n, d, 8);              // A8, per token
 *	quant_weight_rows(wq, w, out, in, 4);       // W4, per output channel
 *	quant_weight_groups(wq, w, out, in, 4, 128);// W4 g128 asymmetric
 *
 * Every kernel has a plain _ref twin (scalar, obviously right) that the
 * tests compare it with; bits = 16 (or more) means "not quantized" (copy).
 */
#ifndef MASQ_QUANT_H
#define MASQ_QUANT_H

#include <stdint.h>

#define QUANT_SCALE_MIN 1e-5f
#define QUANT_SCALE_MAX 1e4f

/* Largest symmetric level, 2^(bits-1) - 1 (127 for 8 bits). */
int quant_qmax(int bits);
/* The clamped symmetric scale for absmax at bits. */
float quant_scale_sym(float absmax, int bits);

/* y (n, d) = per-row (per-token) symmetric fake quant of x; y may equal x. */
void quant_act_rows(float *y, const float *x, int n, int d, int bits);
void quant_act_rows_ref(float *y, const float *x, int n, int d, int bits);

/* Integer form of quant_act_rows for the integer GEMM: q (n, d) levels and
 * scale (n) with q * scale == quant_act_rows() exactly; bits <= 8. */
void quant_act_rows_int(int8_t *q, float *scale, const float *x, int n, int d, int bits);

/* y (out, in) = per-output-channel (per-row) symmetric fake quant of W. */
void quant_weight_rows(float *y, const float *W, int out, int in, int bits);
void quant_weight_rows_ref(float *y, const float *W, int out, int in, int bits);

/* Integer form of quant_weight_rows for export: q (out, in) int8 levels and
 * scale (out) so that y = q * scale; bits <= 8. */
void quant_weight_rows_int(int8_t *q, float *scale, const float *W, int out, int in, int bits);

/* y (out, in) = asymmetric fake quant in groups of `group` consecutive input
 * channels of each row (the last group may be shorter). */
void quant_weight_groups(float *y, const float *W, int out, int in, int bits, int group);
void quant_weight_groups_ref(float *y, const float *W, int out, int in, int bits, int group);

/* Integer form of quant_weight_groups for export: q (out, in) levels in
 * [0, 2^bits - 1], scale and zero (out, ceil(in / group)) so that
 * y = (q - zero) * scale exactly; bits <= 8.  zero is a whole number, but
 * may lie outside [0, 2^bits - 1] (a group of one sign: min and max are the
 * raw values); a NaN group has levels 0, zero 0 and scale NaN. */
void quant_weight_groups_int(uint8_t *q, float *scale, float *zero, const float *W, int out, int in,
    int bits, int group);

/*
 * The straight-through backward of the fake quantizers (learned smoothing,
 * core/learn.h).  Given g = d loss / d y for y = Q(x), gx = d loss / d x with
 * the rounding passed straight through:
 *   - inside the clamp g passes unchanged, outside it is 0;
 *   - the scale path: dy_j / dscale = level_j - inside_j * x_j / scale, so
 *     gscale = sum_j g_j (level_j - inside_j x_j / scale), and the scale
 *     reaches the elements that set it.  Symmetric: scale = max(|max x|,
 *     |min x|) / qmax, so gscale / qmax goes to the elements equal to max x
 *     (times its sign) or to min x, split evenly over equal values (and
 *     halved when |max x| == |min x|), as torch's amax, amin and maximum
 *     do.  Asymmetric: scale = (max - min) / (2^b - 1): +gscale / (2^b - 1)
 *     to the max elements, - to the min ones; the zero point is rounded
 *     without a gradient.  Nothing passes where the scale is clamped.
 * gx may equal g.  bits >= 16 copies g.  The _ref twins are scalar and
 * double; the tests compare the two within QUANT_STE_TOL.
 */
#define QUANT_STE_TOL 1e-5	/* relative, of the fast kernels against their twins */
void quant_rows_sym_ste(float *gx, const float *g, const float *x, int n, int d, int bits);
void quant_rows_sym_ste_ref(float *gx, const float *g, const float *x, int n, int d, int bits);
void quant_groups_asym_ste(float *gx, const float *g, const float *x, int out, int in, int bits, int group);
void quant_groups_asym_ste_ref(float *gx, const float *g, const float *x, int out, int in, int bits,
    int group);

#endif
