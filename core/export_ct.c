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

/* compressed-tensors version the quantization_config block follows. */
#define EXPORT_CT_VERSION "0.9.0"

static int
ct_check(const xjob *j, int l, const lsum *s, masq_err *err)
{
	if (s->wbits != 8)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "the compressed-tensors export is W8A8: this session quantized weights to %d bits "
		    "(layer %d)", s->wbits, l);
	if (s->abits == 16)
		/* int-quantized with input_activations null: vLLM asserts the
		 * weights are float in exactly that case, so nothing could load it */
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "the compressed-tensors export writes int-quantized W8A8, which needs 8-bit activations: this "
		    "session left them unquantized (layer %d), and vLLM loads weight-only checkpoints only in the "
		    "pack-quantized format, which masq does not write yet; quantize with --abits 8, or export fake "
		    "or masquant", l);
	if (s->abits != 8)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "the compressed-tensors export takes 8-bit activations: "
		    "this session quantized them to %d bits (layer %d)", s->abits, l);
	if (s->wgroup > 0)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "the compressed-tensors export quantizes weights per output channel: this session "
		    "used asymmetric groups of %d (layer %d); quantize with --wgroup 0", s->wgroup, l);
	if (s->abits != j->ls[0].abits)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "the compressed-tensors export has one activation scheme: layer 0 has A%d, layer %d A%d",
		    j->ls[0].abits, l, s->abits);
	return 0;
}

static void
ct_plan_tensor(xjob *j, const st_tensor *t, int l, int lin, int nm)
{
	if (lin >= 0) {
		export_plan_levels(j, t, l, lin);
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
	static const char *const fixed[] = {
		"lm_head", "re:.*lm_head", "re:.*visual.*", "re:.*audio_tower.*", NULL
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
		    strstr(t->name, "visual") || strstr(t->name, "audio_tower") || strstr(t->name, "embed"))
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
	char *path = masq_path_join(j->m->dir, "config.json");
	json_error_t je;
	json_t *root = json_load_file(path, 0, &je);
	int abits = j->ls[0].abits;

	if (root == NULL || !json_is_object(root)) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: cannot read as a JSON object: %s", path,
		    root ? "not an object" : je.text);
		json_decref(root);
		free(path);
		return -1;
	}
	free(path);
	json_t *w = json_pack("{s:i, s:s, s:b, s:s, s:n, s:b, s:n, s:n, s:s, s:{}}",
	    "num_bits", 8, "type", "int", "symmetric", 1, "strategy", "channel", "group_size",
	    "dynamic", 0, "actorder", "block_structure", "observer", "minmax", "observer_kwargs");
	json_t *a = abits >= 16 ? json_null() :
	    json_pack("{s:i, s:s, s:b, s:s, s:b, s:n, s:n}", "num_bits", 8, "type", "int",
	    "symmetric", 1, "strategy", "token", "dynamic", 1, "group_size", "observer");
	json_t *qc = json_pack("{s:s, s:s, s:s, s:s, s:n, s:n, s:o, s:{s:{s:[s], s:o, s:o, s:n}}}",
	    "quant_method", "compressed-tensors", "format", "int-quantized",
	    "quantization_status", "compressed", "version", EXPORT_CT_VERSION,
	    "global_compression_ratio", "kv_cache_scheme", "ignore", ct_ignore(j),
	    "config_groups", "group_0", "targets", "Linear", "weights", w,
	    "input_activations", a, "output_activations");
	if (qc == NULL)
		fatal("out of memory building quantization_config");
	if (json_object_get(root, "quantization_config") != NULL) {
		/* replace an existing block: the whole file is rewritten */
		json_object_set_new(root, "quantization_config", qc);
		j->config_text = export_json_text(root);
		json_decref(root);
		return 0;
	}
	json_decref(root);
	/* else the block is inserted before the final '}', so the rest of the
	 * file keeps its bytes (jansson would reprint 1e-6 as 9.99...e-7) */
	path = masq_path_join(j->m->dir, "config.json");
	size_t n;
	char *text = masq_read_file(path, 64u << 20, &n, err);
	free(path);
	if (text == NULL) {
		json_decref(qc);
		return -1;
	}
	char *block = json_dumps(qc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(qc);
	if (block == NULL)
		fatal("out of memory building quantization_config");
	while (n > 0 && text[n - 1] != '\0' && strchr(" \t\r\n", text[n - 1]) != NULL)
		n--;
	MASQ_ASSERT(n > 0 && text[n - 1] == '}');	/* it parsed as an object */
	size_t body = n - 1, bl = strlen(block);
	while (body > 0 && text[body - 1] != '\0' && strchr(" \t\r\n", text[body - 1]) != NULL)
		body--;
	int empty = body > 0 && text[body - 1] == '{';
	/* the block indented by two spaces, as a top-level member */
	char *out = xmalloc(body + 2 * bl + 64), *o = out;
	memcpy(o, text, body);
	o += body;
	o += sprintf(o, "%s\n  \"quantization_config\": ", empty ? "" : ",");
	for (size_t i = 0; i < bl; i++) {
		*o++ = block[i];
		if (block[i] == '\n') {
			*o++ = ' ';
			*o++ = ' ';
		}
	}
	strcpy(o, "\n}\n");
	j->config_text = out;
	free(block);
	free(text);
	return 0;
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

static void
ct_linear(xjob *j, lcache *c, const qplan_layer *q, int k, float *Ws, const float *s, int out, int in)
{
	(void)j;
	(void)q;
	(void)s;
	c->q[k] = xmalloc(xmul((size_t)out * in, sizeof(int8_t)));
	c->scale[k] = xmalloc(xmul((size_t)out, sizeof(float)));
	quant_weight_rows_int(c->q[k], c->scale[k], Ws, out, in, 8);
	free(Ws);
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
	.describe = "W8A8 int8 as vLLM loads it: int8 weights with per-channel scales, dynamic per-token "
	    "activations, the unified (text) factor folded into the norms; needs W8",
	.drops = "for mas and mas-cmc: the vision and audio factors, o_proj's factor and the compensation",
	.check = ct_check,
	.plan_tensor = ct_plan_tensor,
	.plan_files = ct_plan_files,
	.dropped = ct_dropped,
	.linear = ct_linear,
	.layer_begin = ct_layer_begin,
};
