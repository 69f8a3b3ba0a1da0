/*
 * export_ct.c: the compressed-tensors export, W8A8 int8 as vLLM loads it:
 * per quantized linear P, "P.weight" I8 [out, in] and "P.weight_scale" F32
 * [out, 1] (symmetric per channel, dynamic per-token activations); the
 * unified factor of q,k,v folded into input_layernorm, gate,up's into
 * post_attention_layernorm; o_proj and down_proj quantized unsmoothed;
 * config.json gains the quantization_config block.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/export_internal.h"
#include "core/quant.h"
#include "core/smooth.h"

/* The compressed-tensors release whose quantization_config the block
 * follows (its "version" field), and the observer name it writes for static
 * min-max weights (since 0.14; before, "minmax").  scale_dtype and zp_dtype
 * (0.13 on) are left out: releases before them refuse unknown fields. */
#define EXPORT_CT_VERSION "0.18.0"
#define EXPORT_CT_OBSERVER "memoryless_minmax"

/* The scheme of a job: weight-only (pack-quantized) or W8A8 int8. */
static int
ct_packed(const xjob *j)
{
	return j->ls[0].abits >= 16;
}

static int
ct_check(const xjob *j, int l, const lsum *s, masq_err *err)
{
	const lsum *s0 = &j->ls[0];
	const model_config *c = &j->m->cfg;

	if (s->wbits != s0->wbits || s->abits != s0->abits || s->wgroup != s0->wgroup)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "the compressed-tensors export has one scheme for every linear: layer 0 is W%dA%d group %d, "
		    "layer %d W%dA%d group %d", s0->wbits, s0->abits, s0->wgroup, l, s->wbits, s->abits, s->wgroup);
	if (s->abits >= 16) {
		/* weight-only: pack-quantized, vLLM's WNA16 */
		if (s->wbits != 4 && s->wbits != 8)
			return masq_err_set(err, MASQ_ERR_USAGE,
			    "the compressed-tensors export writes weight-only checkpoints as vLLM serves them (WNA16, "
			    "pack-quantized), at 4 or 8 bits: this session quantized weights to %d bits", s->wbits);
		if (s->wgroup > 0 && s->wbits != 4)
			return masq_err_set(err, MASQ_ERR_USAGE,
			    "the compressed-tensors export takes groups at 4 bits only: masq's groups are asymmetric, and "
			    "vLLM's Marlin kernels take zero points at 4 bits only (W8A16 groups of %d); quantize W8A16 per "
			    "channel (--wgroup 0)", s->wgroup);
		if (s->wgroup > 0 && s->wgroup != 32 && s->wgroup != 64 && s->wgroup != 128)
			return masq_err_set(err, MASQ_ERR_USAGE,
			    "the compressed-tensors export takes groups of 32, 64 or 128, the sizes vLLM's Marlin kernels "
			    "run: this session used %d", s->wgroup);
		for (int k = 0; k < LIN_COUNT; k++) {
			int out, in, per = 32 / s->wbits;
			layer_lin_shape(c, k, &out, &in);
			if (s->wgroup > 0 && in % s->wgroup != 0)
				return masq_err_set(err, MASQ_ERR_USAGE,
				    "the compressed-tensors export needs whole groups (vLLM's WNA16 kernels do): groups of %d "
				    "do not divide %s's %d inputs; quantize with a --wgroup that divides every linear's "
				    "inputs (%d, %d), or 0 for per channel", s->wgroup, lin_name(k), in, c->hidden,
				    c->intermediate);
			if (in % per != 0)
				return masq_err_set(err, MASQ_ERR_USAGE,
				    "the compressed-tensors export packs %d values per 32-bit word: %s's %d inputs "
				    "are not a multiple of %d", per, lin_name(k), in, per);
		}
		return 0;
	}
	if (s->abits != 8 || s->wbits != 8)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "the compressed-tensors export writes W8A8 int8 (int-quantized) or weight-only W4A16 and W8A16 "
		    "(pack-quantized), the schemes vLLM serves from integer weights: this session is W%dA%d; "
		    "export fake or masquant", s->wbits, s->abits);
	if (s->wgroup > 0)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "the compressed-tensors W8A8 export quantizes weights per output channel: this session "
		    "used asymmetric groups of %d (layer %d); quantize with --wgroup 0", s->wgroup, l);
	return 0;
}

/* A pack-quantized linear: weight_packed, weight_scale (in the checkpoint's
 * dtype, as llm-compressor writes it and vLLM's WNA16 holds it),
 * weight_zero_point when asymmetric, weight_shape. */
static void
ct_plan_packed(xjob *j, const st_tensor *t, int l, int lin)
{
	const lsum *s = &j->ls[l];
	int out, in, per = 32 / s->wbits;
	layer_lin_shape(&j->m->cfg, lin, &out, &in);
	int ng = s->wgroup > 0 ? in / s->wgroup : 1;
	size_t bl = strlen(t->name) - strlen(".weight");
	char *name = xmalloc(bl + 32);
	st_dtype sdt = t->dtype == ST_BF16 || t->dtype == ST_F16 ? t->dtype : ST_F32;
	struct { const char *suffix; st_dtype dt; int ndim; int64_t sh[2]; int kind; } v[4] = {
		{"weight_packed", ST_I32, 2, {out, in / per}, OK_PACKED},
		{"weight_scale", sdt, 2, {out, ng}, OK_SCALE},
		{"weight_zero_point", ST_I32, 2, {(out + per - 1) / per, ng}, OK_ZP},
		{"weight_shape", ST_I64, 1, {2, 0}, OK_WSHAPE},
	};
	for (int i = 0; i < 4; i++) {
		if (v[i].kind == OK_ZP && s->wgroup == 0)
			continue;	/* symmetric: no zero points */
		snprintf(name, bl + 32, "%.*s.%s", (int)bl, t->name, v[i].suffix);
		otensor *o = otensor_push(&j->t, &j->nt, &j->tcap, name, v[i].dt, v[i].ndim, v[i].sh, v[i].kind);
		o->src = t;
		o->layer = l;
		o->lin = lin;
	}
	free(name);
}

static void
ct_plan_tensor(xjob *j, const st_tensor *t, int l, int lin, int nm)
{
	if (lin >= 0 && ct_packed(j)) {
		ct_plan_packed(j, t, l, lin);
	} else if (lin >= 0) {
		export_plan_levels(j, t, l, lin, 0);
	} else if (nm >= 0) {
		otensor *o = otensor_push(&j->t, &j->nt, &j->tcap, t->name, t->dtype, t->ndim, t->shape, OK_NORM);
		o->src = t;
		o->layer = l;
		o->lin = nm;
	} else {
		otensor *o = otensor_push(&j->t, &j->nt, &j->tcap, t->name, t->dtype, t->ndim, t->shape, OK_COPY);
		o->src = t;
	}
}

/* The ignore list: the head, the towers, and any other 2-D weight outside
 * the decoder that is not an embedding (a projector, say) by name. */
static json_t *
ct_ignore(const xjob *j)
{
	/* by pattern: the head, the towers, and Omni's talker and codec
	 * (each with hundreds of linears of its own) */
	static const char *const fixed[] = {
		"lm_head", "re:.*lm_head", "re:.*visual.*", "re:.*audio_tower.*", "re:.*talker.*",
		"re:.*token2wav.*", NULL
	};
	json_t *a = json_array();
	const st_set *s = &j->m->st;

	for (int i = 0; fixed[i] != NULL; i++)
		json_array_append_new(a, json_string(fixed[i]));
	for (int i = 0; i < s->ntensors; i++) {
		const st_tensor *t = s->index[i];
		size_t n = strlen(t->name);
		int l, k, nm;
		if (t->ndim != 2 || n < 8 || strcmp(t->name + n - 7, ".weight") != 0 ||
		    export_decoder_tensor(j->m, t->name, &l, &k, &nm) == 0 || strstr(t->name, "lm_head") ||
		    strstr(t->name, "visual") || strstr(t->name, "audio_tower") || strstr(t->name, "embed") ||
		    strstr(t->name, "talker") || strstr(t->name, "token2wav"))
			continue;
		json_t *v = json_stringn(t->name, n - 7);
		json_array_append_new(a, v);
	}
	return a;
}

/* config.json with the compressed-tensors quantization_config block. */
static int
ct_plan_files(xjob *j, masq_err *err)
{
	int abits = j->ls[0].abits;

	const lsum *s0 = &j->ls[0];
	int packed = ct_packed(j), group = packed ? s0->wgroup : 0;
	/* the weights' arguments as compressed-tensors' QuantizationArgs
	 * writes them: masq's groups are asymmetric (min-max, zero point),
	 * its channels symmetric */
	json_t *w = json_pack("{s:i, s:s, s:b, s:s, s:o, s:b, s:n, s:n, s:s, s:{}}",
	    "num_bits", packed ? s0->wbits : 8, "type", "int", "symmetric", group == 0,
	    "strategy", group > 0 ? "group" : "channel", "group_size", group > 0 ? json_integer(group) : json_null(),
	    "dynamic", 0, "actorder", "block_structure", "observer", EXPORT_CT_OBSERVER, "observer_kwargs");
	json_t *a = abits >= 16 ? json_null() :
	    json_pack("{s:i, s:s, s:b, s:s, s:b, s:n, s:n}", "num_bits", 8, "type", "int",
	    "symmetric", 1, "strategy", "token", "dynamic", 1, "group_size", "observer");
	const char *format = packed ? "pack-quantized" : "int-quantized";
	json_t *qc = json_pack("{s:s, s:s, s:s, s:s, s:n, s:n, s:o, s:{s:{s:[s], s:o, s:o, s:n, s:s}}}",
	    "quant_method", "compressed-tensors", "format", format,
	    "quantization_status", "compressed", "version", EXPORT_CT_VERSION,
	    "global_compression_ratio", "kv_cache_scheme", "ignore", ct_ignore(j),
	    "config_groups", "group_0", "targets", "Linear", "weights", w,
	    "input_activations", a, "output_activations", "format", format);
	if (qc == NULL)
		fatal("out of memory building quantization_config");
	return export_config_amend(j, qc, err);
}

/* Fold factor s (in, or NULL) into norm (hidden) stored as dt: the new norm
 * is norm / s rounded to dt, and s_eff (in) is the factor that rounded norm
 * actually carries, norm / new (s where the norm is 0), so that folding
 * stays exact whatever the norm's precision. */
static void
ct_fold(float *newnorm, float *s_eff, const float *norm, const float *s, int n, st_dtype dt)
{
	for (int i = 0; i < n; i++)
		newnorm[i] = s != NULL ? norm[i] / s[i] : norm[i];
	export_round_to_dtype(newnorm, (size_t)n, dt);
	for (int i = 0; i < n; i++) {
		float f = s != NULL ? s[i] : 1.0f;
		if (s != NULL && norm[i] != 0.0f && newnorm[i] != 0.0f && isfinite(newnorm[i])) {
			float e = norm[i] / newnorm[i];
			if (isfinite(e) && e > 0.0f)
				f = e;
		}
		s_eff[i] = f;
	}
}

/* The norms with the factors folded in, and the factors they carry. */
static void
ct_layer_begin(xjob *j, lcache *c, const qplan_layer *q, const layer_weights *w, float *s_fold[2])
{
	const model *m = j->m;
	const float *sq = export_stored_factor(q, LIN_Q), *su = export_stored_factor(q, LIN_UP);
	const float *nw[2] = {w->attn_norm, w->mlp_norm};
	const char *nn[2] = {"input_layernorm.weight", "post_attention_layernorm.weight"};
	for (int i = 0; i < 2; i++) {
		char name[320];
		model_tensor_name(m, q->layer, nn[i], name, sizeof name);
		const st_tensor *t = st_set_find(&m->st, name);
		c->norm[i] = xmalloc(xmul((size_t)w->hidden, sizeof(float)));
		s_fold[i] = xmalloc(xmul((size_t)w->hidden, sizeof(float)));
		ct_fold(c->norm[i], s_fold[i], nw[i], i == 0 ? sq : su, w->hidden, t->dtype);
	}
}

/* Store word v little-endian at p. */
static void
put_word(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

/*
 * A linear as pack-quantized words.  compressed-tensors stores signed
 * values and adds 2^(bits-1) before packing, value i of each run of
 * 32 / bits consecutive inputs in bits [i * bits, (i + 1) * bits) of its
 * word; zero points are packed the same way along the output dimension.
 * masq's asymmetric levels and zero points are the unsigned values
 * themselves (their signed form is level - 2^(bits-1)); its symmetric
 * levels in [-qmax, qmax] are offset.  Dequantized, (level - zero) * scale
 * is the session's quantized weight exactly (with the scale as stored).
 */
static int
ct_linear_packed(lcache *c, const qplan_layer *q, int k, const float *Ws, int out, int in, masq_err *err)
{
	int bits = q->wbits, per = 32 / bits, group = q->wgroup, ng = group > 0 ? in / group : 1;
	uint32_t top = (1u << bits) - 1, off = 1u << (bits - 1);
	uint8_t *lv = xmalloc(xmul((size_t)out, (size_t)in));

	c->scale[k] = xmalloc(xmul((size_t)out * ng, sizeof(float)));
	c->packed[k] = xmalloc(xmul((size_t)out * (in / per), 4));
	if (group > 0) {
		float *z = xmalloc(xmul((size_t)out * ng, sizeof(float)));
		quant_weight_groups_int(lv, c->scale[k], z, Ws, out, in, bits, group);
		int zr = (out + per - 1) / per;
		c->zp[k] = xcalloc((size_t)zr * ng, 4);
		for (int r = 0; r < out; r++)
			for (int g = 0; g < ng; g++) {
				float zz = z[(size_t)r * ng + g], sc = c->scale[k][(size_t)r * ng + g];
				if (!isfinite(sc) || !(zz >= 0.0f && zz <= (float)top)) {
					masq_err_set(err, MASQ_ERR_USAGE,
					    "row %d, group %d: %s; compressed-tensors stores zero points in %d bits, "
					    "within [0, %u] (masq, as MASQuant's reference, does not force zero into a group's "
					    "range); nothing was written", r, g, !isfinite(sc) ? "the weights are not finite" :
					    "every weight of the group has one sign, so its zero point lies outside the "
					    "levels", bits, top);
					free(z);
					free(lv);
					return -1;
				}
				unsigned char *p = c->zp[k] + 4 * ((size_t)(r / per) * ng + g);
				uint32_t word = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
				put_word(p, word | (uint32_t)zz << (bits * (r % per)));
			}
		free(z);
	} else {
		int8_t *sq = (int8_t *)lv;
		quant_weight_rows_int(sq, c->scale[k], Ws, out, in, bits);
		for (int r = 0; r < out; r++)
			if (!isfinite(c->scale[k][r])) {
				free(lv);
				return masq_err_set(err, MASQ_ERR_USAGE, "row %d: the weights are not finite", r);
			}
		/* the signed levels as compressed-tensors packs them: plus 2^(bits-1) */
		for (size_t i = 0; i < (size_t)out * in; i++)
			lv[i] = (uint8_t)((int)sq[i] + (int)off);
	}
	for (int r = 0; r < out; r++)
		for (int wi = 0; wi < in / per; wi++) {
			const uint8_t *x = lv + (size_t)r * in + (size_t)wi * per;
			uint32_t word = 0;
			for (int i = 0; i < per; i++)
				word |= ((uint32_t)x[i] & top) << (bits * i);
			put_word(c->packed[k] + 4 * ((size_t)r * (in / per) + wi), word);
		}
	free(lv);
	return 0;
}

static int
ct_linear(xjob *j, lcache *c, const qplan_layer *q, int k, float *Ws, const float *s, int out, int in,
    masq_err *err)
{
	(void)s;
	int rc = 0;
	if (ct_packed(j)) {
		rc = ct_linear_packed(c, q, k, Ws, out, in, err);
	} else {
		c->q[k] = xmalloc(xmul((size_t)out * in, sizeof(int8_t)));
		c->scale[k] = xmalloc(xmul((size_t)out, sizeof(float)));
		quant_weight_rows_int(c->q[k], c->scale[k], Ws, out, in, 8);
	}
	free(Ws);
	return rc;
}

static void
ct_dropped(xjob *j, const export_counts *n)
{
	if (n->mas || n->cmc)
		snprintf(j->rep.dropped, sizeof j->rep.dropped, "compressed-tensors folds one factor per norm: the "
		    "per-modality factors (vision and audio tokens use the text factor folded into the norms), o_proj's "
		    "smoothing (o_proj is quantized unsmoothed)%s are dropped in %d of %d layers.",
		    n->cmc_rank ? " and the CMC low-rank compensation" : "", n->mas + n->cmc, n->layers);
}

const export_format_ops export_ct_ops = {
	.name = "compressed-tensors",
	.describe = "what vLLM serves from integer weights: W8A8 int8 (int-quantized: int8 weights, per-channel "
	    "scales, dynamic per-token activations) or weight-only W4A16/W8A16 (pack-quantized: levels packed in "
	    "int32 words, per-channel or group scales); the unified (text) factor folded into the norms",
	.drops = "for mas and mas-cmc: the vision and audio factors, o_proj's factor and the compensation",
	.check = ct_check,
	.plan_tensor = ct_plan_tensor,
	.plan_files = ct_plan_files,
	.dropped = ct_dropped,
	.linear = ct_linear,
	.layer_begin = ct_layer_begin,
};
