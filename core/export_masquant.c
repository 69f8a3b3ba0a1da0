/*
 * export_masquant.c: masq's own format, which masq eval runs: weights
 * quantized with the base (text) factor, "P.weight" I8 [out, in] levels and
 * "P.weight_scale" F32 [out, 1]; masquant.safetensors with every linear's
 * per-modality factors and CMC factors; masquant.json, the manifest.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/export_internal.h"
#include "core/quant.h"
#include "core/smooth.h"

/* 2: levels of 4 bits and fewer two per byte (U4x2), L1/L2 in F32, F16
 * or BF16, the quantization_config block in config.json.  1: every level
 * in an I8 byte, L1/L2 F32 (masq eval reads both). */
#define EXPORT_MASQUANT_VERSION 2

int
export_cmc_dtype_ok(int dtype)
{
	return dtype == ST_F32 || dtype == ST_F16 || dtype == ST_BF16;
}

/* The container of a layer's levels: two per byte at 4 bits and fewer. */
static int
packs4(int wbits)
{
	return wbits <= 4;
}

static int
masquant_check(const xjob *j, int l, const lsum *s, masq_err *err)
{
	(void)j;
	if (s->wbits > 8)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "the masquant export stores quantized weights: this session left them at %d bits "
		    "(layer %d)", s->wbits, l);
	if (s->wgroup > 0)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "the masquant export stores weights per output channel: asymmetric groups of %d (layer %d) are "
		    "not supported yet; quantize with --wgroup 0, or export compressed-tensors (W4A16 and W8A16 "
		    "groups) or fake", s->wgroup, l);
	return 0;
}

static void
masquant_plan_tensor(xjob *j, const st_tensor *t, int l, int lin, int nm)
{
	(void)nm;
	if (lin >= 0) {
		export_plan_levels(j, t, l, lin, packs4(j->ls[l].wbits));
	} else {
		otensor *o = otensor_push(&j->t, &j->nt, &j->tcap, t->name, t->dtype, t->ndim, t->shape, OK_COPY);
		o->src = t;
	}
}

/* masquant.json from the layer summaries. */
static void
plan_manifest(xjob *j)
{
	const model *m = j->m;
	json_t *doc = json_object(), *layers = json_array();
	int uniform = 1;

	for (int l = 1; l < m->cfg.n_layers; l++)
		if (j->ls[l].wbits != j->ls[0].wbits || j->ls[l].abits != j->ls[0].abits)
			uniform = 0;
	json_object_set_new(doc, "format", json_string("masquant"));
	json_object_set_new(doc, "format_version", json_integer(EXPORT_MASQUANT_VERSION));
	json_object_set_new(doc, "masq_version", json_string(PACKAGE_VERSION));
	json_object_set_new(doc, "base_modality", json_string(modality_name(MOD_TEXT)));
	json_object_set_new(doc, "factors", json_string("masquant.safetensors"));
	json_object_set_new(doc, "layer_prefix", json_string(m->prefix));
	json_object_set_new(doc, "wbits", uniform ? json_integer(j->ls[0].wbits) : json_null());
	json_object_set_new(doc, "abits", uniform ? json_integer(j->ls[0].abits) : json_null());
	json_object_set_new(doc, "weights", json_pack("{s:{s:s, s:s}, s:s, s:b, s:s}", "containers",
	    "I8", "P.weight I8 [out, in]: one level per byte (5 to 8 bits)",
	    "U4x2", "P.weight U8 [out, ceil(in / 2)]: input 2i in the low nibble of byte i, 2i + 1 in the high "
	    "one, each nibble level + 8 (4 bits and fewer; an odd row's last high nibble is 8, level 0)",
	    "scale", "F32 [out, 1] per output channel", "symmetric", 1, "levels", "[-(2^(bits-1)-1), 2^(bits-1)-1]"));
	json_object_set_new(doc, "compensation_dtype", json_string(st_dtype_name(j->cmc_dtype)));
	/* the factors F16 could not hold, kept in F32 (each tensor's header says which) */
	json_object_set_new(doc, "compensation_f32_fallback", json_integer(j->cmc_wide));
	json_object_set_new(doc, "activations", json_pack("{s:s, s:b, s:b}", "strategy", "token",
	    "symmetric", 1, "dynamic", 1));
	json_object_set_new(doc, "semantics", json_string(
	    "a token of modality m through linear P: y = Q_a(x / s_m) (P.weight * P.weight_scale)^T + P.bias "
	    "[+ (x / s_m) P.cmc.m.L1 P.cmc.m.L2 when present]; s_m = P.smooth.m (absent: 1); Q_a per token, "
	    "symmetric, abits (16: none); the low-rank branch takes the unquantized x / s_m"));
	for (int l = 0; l < m->cfg.n_layers; l++) {
		const lsum *s = &j->ls[l];
		json_t *jl = json_object(), *lins = json_object();
		json_object_set_new(jl, "layer", json_integer(l));
		json_object_set_new(jl, "method", json_string(method_name(s->method)));
		json_object_set_new(jl, "wbits", json_integer(s->wbits));
		json_object_set_new(jl, "abits", json_integer(s->abits));
		json_object_set_new(jl, "container", json_string(packs4(s->wbits) ? "U4x2" : "I8"));
		for (int k = 0; k < LIN_COUNT; k++) {
			json_t *jk = json_object(), *rk = json_object();
			json_object_set_new(jk, "smoothed", json_boolean(s->smoothed[k]));
			json_object_set_new(jk, "unified", json_boolean(!s->permod[k]));
			for (int md = 0; md < MOD_COUNT; md++)
				if (s->rank[k][md] > 0)
					json_object_set_new(rk, modality_name(md), json_integer(s->rank[k][md]));
			json_object_set_new(jk, "rank", rk);
			json_object_set_new(lins, lin_name(k), jk);
		}
		json_object_set_new(jl, "linears", lins);
		json_array_append_new(layers, jl);
	}
	json_object_set_new(doc, "layers", layers);
	j->manifest_text = export_json_text(doc);
	json_decref(doc);
}

/* masquant.safetensors' tensors: per smoothed linear the three factors,
 * per compensated modality L1 and L2. */
static void
plan_sidecar(xjob *j)
{
	const model *m = j->m;
	char name[320], mod[256];

	for (int l = 0; l < m->cfg.n_layers; l++) {
		const lsum *s = &j->ls[l];
		for (int k = 0; k < LIN_COUNT; k++) {
			int out, in;
			layer_lin_shape(&m->cfg, k, &out, &in);
			snprintf(mod, sizeof mod, "%s%d.%s", m->prefix, l, lin_path(k));
			if (!s->smoothed[k])
				continue;
			for (int md = 0; md < MOD_COUNT; md++) {
				int64_t sh[1] = {in};
				snprintf(name, sizeof name, "%s.smooth.%s", mod, modality_name(md));
				otensor *o = otensor_push(&j->side, &j->nside, &j->sidecap, name, ST_F32, 1, sh, OK_SMOOTH);
				o->layer = l; o->lin = k; o->mod = md;
			}
			for (int md = 0; md < MOD_COUNT; md++) {
				int r = s->rank[k][md];
				int64_t s1[2] = {in, r}, s2[2] = {r, out};
				if (r <= 0)
					continue;
				/* F16 holds what fits its range; a factor beyond it stays F32 */
				st_dtype dt = (st_dtype)s->cmc_dtype[k][md];
				j->cmc_wide += dt != j->cmc_dtype;
				snprintf(name, sizeof name, "%s.cmc.%s.L1", mod, modality_name(md));
				otensor *o = otensor_push(&j->side, &j->nside, &j->sidecap, name, dt, 2, s1, OK_L1);
				o->layer = l; o->lin = k; o->mod = md;
				snprintf(name, sizeof name, "%s.cmc.%s.L2", mod, modality_name(md));
				o = otensor_push(&j->side, &j->nside, &j->sidecap, name, dt, 2, s2, OK_L2);
				o->layer = l; o->lin = k; o->mod = md;
			}
		}
	}
}

/* The manifest and the side file's tensors. */
static int
masquant_plan_files(xjob *j, masq_err *err)
{
	plan_sidecar(j);
	export_align(j->side, j->nside);
	plan_manifest(j);
	/* a loader that does not know masquant refuses it by name, rather
	 * than loading the levels as weights without their scales */
	json_t *qc = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s}", "quant_method", "masquant",
	    "format_version", EXPORT_MASQUANT_VERSION, "masq_version", PACKAGE_VERSION, "manifest", "masquant.json",
	    "factors", "masquant.safetensors", "runtime", "masq eval (masq-eval(1)); no other loader runs this format");
	if (qc == NULL)
		fatal("out of memory building quantization_config");
	if (export_config_amend(j, qc, err) < 0)
		return -1;
	st_writer *w = export_declare(j->side, j->nside, -1, err);
	if (w == NULL)
		return -1;
	j->side_size = st_writer_size(w);
	st_writer_free(w);
	return 0;
}

static int
masquant_linear(xjob *j, lcache *c, const qplan_layer *q, int k, float *Ws, const float *s, int out, int in,
    masq_err *err)
{
	(void)j;
	(void)s;
	(void)err;
	c->q[k] = xmalloc(xmul((size_t)out * in, sizeof(int8_t)));
	c->scale[k] = xmalloc(xmul((size_t)out, sizeof(float)));
	quant_weight_rows_int(c->q[k], c->scale[k], Ws, out, in, q->wbits);
	free(Ws);
	if (packs4(q->wbits)) {
		/* U4x2, in place: byte i of a row takes inputs 2i and 2i + 1 */
		int half = (in + 1) / 2;
		uint8_t *b = (uint8_t *)c->q[k];
		for (int r = 0; r < out; r++) {
			const int8_t *x = c->q[k] + (size_t)r * in;
			for (int i = 0; i < half; i++) {
				unsigned lo = (unsigned)(x[2 * i] + 8), hi = 2 * i + 1 < in ? (unsigned)(x[2 * i + 1] + 8) : 8u;
				b[(size_t)r * half + i] = (uint8_t)(lo | hi << 4);
			}
		}
	}
	return 0;
}

/* Pass 3: masquant.safetensors, one layer's plan at a time. */
static int
write_sidecar(xjob *j, const char *dir, masq_err *err)
{
	char *path = masq_path_join(dir, "masquant.safetensors");
	st_writer *w = export_declare(j->side, j->nside, -1, err);
	qplan_layer q;
	int cur = -1, rc = -1;

	memset(&q, 0, sizeof q);
	if (w == NULL || st_writer_begin(w, path, err) < 0)
		goto out;
	for (int i = 0; i < j->nside; i++) {
		const otensor *o = &j->side[i];
		const qplan_linear *ql;
		int r;
		if (o->layer != cur) {
			if (cur >= 0)
				qplan_layer_done(&q);
			cur = -1;
			if (export_plan_get(j, o->layer, &q, err) < 0)
				goto out;
			cur = o->layer;
		}
		ql = &q.lin[o->lin];
		if (o->kind == OK_SMOOTH) {
			/* unified linears: the stored factor for every modality; per-modality ones:
			 * the modality's own, or the base's where the plan has none */
			const float *s = export_stored_factor(&q, o->lin);
			if (export_per_modality(&q, o->lin) && ql->smooth[o->mod] != NULL)
				s = ql->smooth[o->mod];
			MASQ_ASSERT(s != NULL);
			r = st_writer_write_f32(w, s, (size_t)ql->in, err);
		} else if (o->kind == OK_L1) {
			MASQ_ASSERT(ql->rank[o->mod] == o->shape[1]);
			r = st_writer_write_f32(w, ql->L1[o->mod], (size_t)ql->in * ql->rank[o->mod], err);
		} else {
			r = st_writer_write_f32(w, ql->L2[o->mod], (size_t)ql->rank[o->mod] * ql->out, err);
		}
		if (r < 0)
			goto out;
	}
	rc = st_writer_finish(w, err);
out:
	if (cur >= 0)
		qplan_layer_done(&q);
	st_writer_free(w);
	free(path);
	return rc;
}

/* After the shards: masquant.json and masquant.safetensors. */
static int
masquant_write_files(xjob *j, const char *dir, masq_err *err)
{
	if (export_write_text(dir, "masquant.json", j->manifest_text, strlen(j->manifest_text), err) < 0)
		return -1;
	return write_sidecar(j, dir, err);
}

static void
masquant_dropped(xjob *j, const export_counts *n)
{
	if (n->mas)
		snprintf(j->rep.dropped, sizeof j->rep.dropped, "mas keeps one weight per modality, which the masquant "
		    "export cannot store: in %d of %d layers every token uses the text factor and its weight.",
		    n->mas, n->layers);
}

const export_format_ops export_masquant_ops = {
	.name = "masquant",
	.describe = "weights quantized with the text factor, plus masquant.safetensors (per-modality factors, "
	    "CMC L1/L2) and masquant.json; masq eval runs it",
	.drops = "nothing",
	.check = masquant_check,
	.plan_tensor = masquant_plan_tensor,
	.plan_files = masquant_plan_files,
	.dropped = masquant_dropped,
	.linear = masquant_linear,
	.write_files = masquant_write_files,
	.side_files = 2,
};
