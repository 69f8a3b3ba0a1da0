#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/smooth.h"

static const char *const method_names[METHOD_COUNT] = {"rtn", "sq", "mas", "mas-cmc", "usq"};
static const char *const group_names[GRP_COUNT] = {"qkv", "o", "gateup"};

const char *
method_name(int m)
{
	return (unsigned)m < METHOD_COUNT ? method_names[m] : "?";
}

int
method_parse(const char *s)
{
	for (int i = 0; i < METHOD_COUNT; i++)
		if (strcmp(s, method_names[i]) == 0)
			return i;
	if (strcmp(s, "smoothquant") == 0)
		return METHOD_SQ;
	if (strcmp(s, "mascmc") == 0 || strcmp(s, "masquant") == 0)
		return METHOD_MAS_CMC;
	return -1;
}

int
method_learns(int m)
{
	return m == METHOD_MAS || m == METHOD_MAS_CMC || m == METHOD_USQ;
}

int
method_per_modality(int m)
{
	return m == METHOD_MAS || m == METHOD_MAS_CMC;
}

const char *
smooth_group_name(int g)
{
	return (unsigned)g < GRP_COUNT ? group_names[g] : "?";
}

int
smooth_lin_group(int lin)
{
	switch (lin) {
	case LIN_Q: case LIN_K: case LIN_V: return GRP_QKV;
	case LIN_O: return GRP_O;
	case LIN_GATE: case LIN_UP: return GRP_GATEUP;
	default: return -1;
	}
}

void
layer_setting_init(layer_setting *ls, int method, float alpha, double rank, int rank_floor)
{
	memset(ls, 0, sizeof *ls);
	ls->method = method;
	for (int g = 0; g < GRP_COUNT; g++)
		for (int m = 0; m < ALPHA_ROWS; m++)
			ls->alpha[g][m] = alpha;
	for (int k = 0; k < LIN_COUNT; k++)
		ls->rank[k] = k == LIN_DOWN ? 0 : rank;
	ls->rank_floor = rank_floor;
	ls->lr = 5e-2f;
	ls->lambda[MOD_TEXT] = 1.0f;
	ls->lambda[MOD_VISION] = 0.5f;
	ls->lambda[MOD_AUDIO] = 1.0f;
}

int
setting_learns(const layer_setting *ls)
{
	return method_learns(ls->method) && ls->epochs > 0;
}

int
setting_same_learning(const layer_setting *a, const layer_setting *b)
{
	if (a->method != b->method || a->epochs != b->epochs || a->lr != b->lr || a->loss != b->loss ||
	    a->tie != b->tie || memcmp(a->lambda, b->lambda, sizeof a->lambda) != 0)
		return 0;
	return memcmp(a->alpha, b->alpha, sizeof a->alpha) == 0;
}

int
setting_check_epochs(int v, masq_err *err)
{
	if (v < 0 || v > SETTING_EPOCHS_MAX)
		return masq_err_set(err, MASQ_ERR_USAGE, "epochs must be 0 (the closed form) to %d, not %d",
		    SETTING_EPOCHS_MAX, v);
	return 0;
}

int
setting_check_lr(double v, masq_err *err)
{
	if (!(v > 0.0 && v <= 10.0))
		return masq_err_set(err, MASQ_ERR_USAGE, "the learning rate must be in (0, 10], not %g", v);
	return 0;
}

int
setting_check_lambda(const float lambda[MOD_COUNT], masq_err *err)
{
	double sum = 0.0;
	for (int m = 0; m < MOD_COUNT; m++) {
		if (!(lambda[m] >= 0.0f && lambda[m] <= 1e6f))
			return masq_err_set(err, MASQ_ERR_USAGE, "the %s loss weight must be in [0, 1e6], not %g",
			    modality_name(m), (double)lambda[m]);
		sum += lambda[m];
	}
	if (sum == 0.0)
		return masq_err_set(err, MASQ_ERR_USAGE, "the loss weights are all 0: nothing would be learned");
	return 0;
}

int
setting_parse_lambda(const char *t, float lambda[MOD_COUNT], masq_err *err)
{
	const char *p = t;
	char *end;
	for (int m = 0; m < MOD_COUNT; m++) {
		errno = 0;
		double v = strtod(p, &end);
		if (errno || end == p || !isfinite(v) || (m < MOD_COUNT - 1 ? *end != ',' : *end != '\0'))
			return masq_err_set(err, MASQ_ERR_USAGE, "loss weights '%s' are not TEXT,VISION,AUDIO numbers", t);
		lambda[m] = (float)v;
		p = end + 1;
	}
	return setting_check_lambda(lambda, err);
}

int
setting_set_learning(layer_setting *ls, int epochs, double lr, int loss, const float lambda[MOD_COUNT], int tie,
    masq_err *err)
{
	if (setting_check_epochs(epochs, err) < 0 || setting_check_lr(lr, err) < 0 ||
	    setting_check_lambda(lambda, err) < 0)
		return -1;
	if (loss != 0 && loss != 1)
		return masq_err_set(err, MASQ_ERR_USAGE, "the loss must be mae or mse");
	if (tie != 0 && tie != 1)
		return masq_err_set(err, MASQ_ERR_USAGE, "tie is 0 or 1, not %d", tie);
	ls->epochs = epochs;
	ls->lr = (float)lr;
	ls->loss = loss;
	memcpy(ls->lambda, lambda, sizeof ls->lambda);
	ls->tie = tie;
	return 0;
}

int
setting_check_alpha(double v, masq_err *err)
{
	if (!(v >= 0.0 && v <= 1.0))
		return masq_err_set(err, MASQ_ERR_USAGE, "alpha must be in [0, 1], not %g", v);
	return 0;
}

int
setting_check_rank(double v, masq_err *err)
{
	if (!(v >= 0.0) || (v > 1.0 && v != floor(v)) || v > SETTING_RANK_MAX)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "rank must be 0 (none), a ratio in (0, 1] of min(in, out) or a whole number up to %g, not %g",
		    SETTING_RANK_MAX, v);
	return 0;
}

int
setting_check_bits(int wbits, int abits, masq_err *err)
{
	if (wbits < 2 || (wbits > 8 && wbits != 16) || abits < 2 || (abits > 8 && abits != 16))
		return masq_err_set(err, MASQ_ERR_USAGE, "bits must be 2 to 8, or 16 for not quantized: not W%d A%d",
		    wbits, abits);
	return 0;
}

int
setting_set_alpha(layer_setting *ls, int grp, int row, double v, masq_err *err)
{
	if (setting_check_alpha(v, err) < 0)
		return -1;
	if (grp < -1 || grp >= GRP_COUNT || row < -1 || row >= ALPHA_ROWS)
		return masq_err_set(err, MASQ_ERR_INTERNAL, "setting_set_alpha: group %d, row %d", grp, row);
	for (int g = 0; g < GRP_COUNT; g++)
		for (int m = 0; m < ALPHA_ROWS; m++)
			if ((grp < 0 || g == grp) && (row < 0 || m == row))
				ls->alpha[g][m] = (float)v;
	return 0;
}

int
setting_set_rank(layer_setting *ls, int lin, double v, masq_err *err)
{
	if (setting_check_rank(v, err) < 0)
		return -1;
	if (lin < 0 || lin >= LIN_COUNT)
		return masq_err_set(err, MASQ_ERR_INTERNAL, "setting_set_rank: linear %d", lin);
	if (lin == LIN_DOWN)
		return masq_err_set(err, MASQ_ERR_USAGE, "down_proj gets no compensation (it is not smoothed)");
	ls->rank[lin] = v;
	return 0;
}

int
setting_set_method(layer_setting *ls, int method, masq_err *err)
{
	if (method < 0 || method >= METHOD_COUNT)
		return masq_err_set(err, MASQ_ERR_USAGE, "method %d is not rtn, sq, mas, mas-cmc or usq", method);
	ls->method = method;
	return 0;
}

void
smooth_factors(float *s, const float *R, const float *w, int d, float alpha)
{
	/* powf in float: a^b = exp2(b log2 a) evaluated per channel; the
	 * reference computes in bf16/float, so float is the faithful choice. */
	for (int j = 0; j < d; j++) {
		float r = R[j] > SMOOTH_CLAMP ? R[j] : SMOOTH_CLAMP;
		float x = w[j] > SMOOTH_CLAMP ? w[j] : SMOOTH_CLAMP;
		float v = powf(r, alpha) / powf(x, 1.0f - alpha);
		s[j] = v > SMOOTH_CLAMP ? v : SMOOTH_CLAMP;
	}
}

void
smooth_factors_ref(float *s, const float *R, const float *w, int d, float alpha)
{
	for (int j = 0; j < d; j++) {
		double r = fmax(R[j], SMOOTH_CLAMP), x = fmax(w[j], SMOOTH_CLAMP);
		double v = pow(r, alpha) / pow(x, 1.0 - alpha);
		s[j] = (float)fmax(v, SMOOTH_CLAMP);
	}
}

void
smooth_col_absmax(float *w, const float *W, int out, int in)
{
	for (int o = 0; o < out; o++) {
		const float *row = W + (size_t)o * in;
		for (int j = 0; j < in; j++) {
			float a = fabsf(row[j]);
			if (a > w[j])
				w[j] = a;
		}
	}
}
