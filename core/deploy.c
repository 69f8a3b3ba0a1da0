/*
 * deploy.c: an export run with deployment semantics beside its FP model
 * (deploy.h).  The quantized linear mirrors the pipeline's qlinear
 * (core/pipeline.c) call for call: one batch of every token for a linear
 * with one factor, else one batch per modality in modality order, the
 * factor division, per-token activation quantization, engine_linear, and
 * the two sgemms of the low-rank branch.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "core/blas.h"
#include "core/deploy.h"
#include "core/engine.h"
#include "core/export.h"
#include "core/metrics.h"
#include "core/model.h"
#include "core/quant.h"
#include "core/safetensors.h"

/* One linear as deployed. */
typedef struct dlin {
	int unified;			/* one factor and one batch for every token */
	float *s[MOD_COUNT];		/* (in) factor per modality, NULL for 1 */
	int rank[MOD_COUNT];
	float *L1[MOD_COUNT];		/* (in, rank) */
	float *L2[MOD_COUNT];		/* (rank, out) */
	igemm_b ib;			/* the stored levels packed for the integer GEMM (ib.b NULL: none) */
	float *wscale;			/* (out) their per-channel scales */
} dlin;

/* One layer of the export. */
typedef struct dlayer {
	layer_weights w;		/* norms, biases and the stored weights as float */
	dlin lin[LIN_COUNT];
	int abits;			/* activation bits (16: none) */
} dlayer;

/* The export being run. */
typedef struct dexport {
	const char *dir;
	int format;
	const model *ref;		/* names and shapes come from the reference */
	st_set st;			/* the export's shards */
	st_file side;			/* masquant.safetensors */
	int has_side;
	json_t *manifest;		/* masquant.json */
	int abits;			/* compressed-tensors: from quantization_config */
	int wbits;
	int packed;			/* compressed-tensors pack-quantized */
	int wgroup;			/* its group size, 0 per channel */
	int wsym;			/* symmetric: no zero points (2^(bits-1) implied) */
} dexport;

/* Free a loaded layer. */
static void
dlayer_done(dlayer *d)
{
	layer_weights_done(&d->w);
	for (int k = 0; k < LIN_COUNT; k++)
		for (int m = 0; m < MOD_COUNT; m++) {
			free(d->lin[k].s[m]);
			free(d->lin[k].L1[m]);
			free(d->lin[k].L2[m]);
		}
	for (int k = 0; k < LIN_COUNT; k++) {
		igemm_b_done(&d->lin[k].ib);
		free(d->lin[k].wscale);
	}
	memset(d, 0, sizeof *d);
}

/* ---- opening ----------------------------------------------------------------- */

/* An integer member of obj in [lo, hi], or -1 with err filled. */
static int
jint(json_t *obj, const char *key, int lo, int hi, const char *where, int *out, masq_err *err)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: \"%s\" is not an integer in [%d, %d]", where,
		    key, lo, hi);
	*out = (int)json_integer_value(v);
	return 0;
}

/* compressed-tensors: accept W8 int channel-wise with per-token dynamic
 * int8 activations (or none). */
static int
ct_parse(dexport *e, json_t *qc, const char *path, masq_err *err)
{
	json_t *fmt = json_object_get(qc, "format"), *groups = json_object_get(qc, "config_groups");
	json_t *g = NULL, *w, *a;
	const char *key = "";

	if (!json_is_string(fmt) || (strcmp(json_string_value(fmt), "int-quantized") != 0 &&
	    strcmp(json_string_value(fmt), "pack-quantized") != 0))
		return masq_err_set(err, MASQ_ERR_FORMAT,
		    "%s: quantization_config.format is not \"int-quantized\" or \"pack-quantized\"; masq eval runs "
		    "compressed-tensors W8A8 int8 and weight-only W4A16/W8A16 only", path);
	e->packed = strcmp(json_string_value(fmt), "pack-quantized") == 0;
	if (!json_is_object(groups) || json_object_size(groups) != 1)
		return masq_err_set(err, MASQ_ERR_FORMAT,
		    "%s: quantization_config.config_groups must hold exactly one group", path);
	json_object_foreach(groups, key, g)
		break;
	w = json_object_get(g, "weights");
	a = json_object_get(g, "input_activations");
	if (e->packed) {
		json_t *ty = json_object_get(w, "type"), *ao = json_object_get(w, "actorder");
		if (!json_is_string(ty) || strcmp(json_string_value(ty), "int") != 0 || (ao != NULL && !json_is_null(ao)))
			return masq_err_set(err, MASQ_ERR_FORMAT,
			    "%s: config group '%s': masq eval runs integer weights in their natural column order only "
			    "(weights.type \"int\", actorder null)", path, key);
		json_t *nb = json_object_get(w, "num_bits"), *st = json_object_get(w, "strategy");
		json_t *gs = json_object_get(w, "group_size"), *sy = json_object_get(w, "symmetric");
		int group = json_is_string(st) && strcmp(json_string_value(st), "group") == 0;
		if (!json_is_object(w) || !json_is_integer(nb) || (json_integer_value(nb) != 4 &&
		    json_integer_value(nb) != 8) || !json_is_string(st) || !json_is_boolean(sy) ||
		    (!group && strcmp(json_string_value(st), "channel") != 0) ||
		    (group && (!json_is_integer(gs) || json_integer_value(gs) < 2 || json_integer_value(gs) > (1 << 20))) ||
		    (a != NULL && !json_is_null(a)))
			return masq_err_set(err, MASQ_ERR_FORMAT,
			    "%s: config group '%s': pack-quantized weights must be 4 or 8 bits per channel or in groups, "
			    "with no input activations", path, key);
		e->wbits = (int)json_integer_value(nb);
		e->wgroup = group ? (int)json_integer_value(gs) : 0;
		e->wsym = json_is_true(sy);
		e->abits = 16;
		return 0;
	}
	if (!json_is_object(w) || !json_is_integer(json_object_get(w, "num_bits")) ||
	    json_integer_value(json_object_get(w, "num_bits")) != 8 ||
	    !json_is_true(json_object_get(w, "symmetric")) ||
	    !json_is_string(json_object_get(w, "strategy")) ||
	    strcmp(json_string_value(json_object_get(w, "strategy")), "channel") != 0)
		return masq_err_set(err, MASQ_ERR_FORMAT,
		    "%s: config group '%s': weights must be 8-bit symmetric per channel", path, key);
	e->wbits = 8;
	if (a == NULL || json_is_null(a)) {
		e->abits = 16;
		return 0;
	}
	if (!json_is_object(a) || !json_is_integer(json_object_get(a, "num_bits")) ||
	    json_integer_value(json_object_get(a, "num_bits")) < 2 ||
	    json_integer_value(json_object_get(a, "num_bits")) > 8 ||
	    !json_is_true(json_object_get(a, "dynamic")) || !json_is_true(json_object_get(a, "symmetric")) ||
	    !json_is_string(json_object_get(a, "strategy")) ||
	    strcmp(json_string_value(json_object_get(a, "strategy")), "token") != 0)
		return masq_err_set(err, MASQ_ERR_FORMAT,
		    "%s: config group '%s': input activations must be dynamic, symmetric, per token", path, key);
	e->abits = (int)json_integer_value(json_object_get(a, "num_bits"));
	return 0;
}

/* Recognise the export's format and open its files. */
static int
dexport_open(dexport *e, const char *dir, const model *ref, masq_err *err)
{
	char *p;
	struct stat sb;
	model_config c;
	int rc = -1;

	memset(e, 0, sizeof *e);
	e->dir = dir;
	e->ref = ref;
	e->format = EXPORT_FAKE;
	p = masq_path_join(dir, "config.json");
	if (model_config_load(&c, p, err) < 0) {
		free(p);
		return -1;
	}
	const model_config *r = &ref->cfg;
	if (c.hidden != r->hidden || c.n_layers != r->n_layers || c.n_heads != r->n_heads ||
	    c.n_kv_heads != r->n_kv_heads || c.head_dim != r->head_dim ||
	    c.intermediate != r->intermediate || c.rms_eps != r->rms_eps ||
	    c.rope_theta != r->rope_theta || c.mrope != r->mrope || c.mrope_interleaved != r->mrope_interleaved ||
	    c.qk_norm != r->qk_norm ||
	    memcmp(c.mrope_section, r->mrope_section, sizeof c.mrope_section) != 0) {
		masq_err_set(err, MASQ_ERR_USAGE,
		    "%s: not the reference's architecture (hidden %d, %d layers, %d/%d heads, "
		    "intermediate %d against the reference's %d, %d, %d/%d, %d, or its norm/rope settings differ)",
		    p, c.hidden, c.n_layers, c.n_heads, c.n_kv_heads, c.intermediate, r->hidden,
		    r->n_layers, r->n_heads, r->n_kv_heads, r->intermediate);
		free(p);
		return -1;
	}
	json_t *root = json_load_file(p, 0, NULL);
	json_t *qc = root ? json_object_get(root, "quantization_config") : NULL;
	if (json_is_object(qc)) {
		json_t *qm = json_object_get(qc, "quant_method");
		if (json_is_string(qm) && strcmp(json_string_value(qm), "masquant") == 0) {
			/* the block that keeps other loaders out: masquant.json says the rest */
			char *mp = masq_path_join(dir, "masquant.json");
			int there = stat(mp, &sb) == 0;
			free(mp);
			if (!there) {
				masq_err_set(err, MASQ_ERR_FORMAT, "%s: quantization_config names masquant, but %s/masquant.json "
				    "is missing", p, dir);
				json_decref(root);
				free(p);
				return -1;
			}
		} else if (!json_is_string(qm) || strcmp(json_string_value(qm), "compressed-tensors") != 0) {
			masq_err_set(err, MASQ_ERR_FORMAT,
			    "%s: quantization_config.quant_method is not \"compressed-tensors\" or \"masquant\"; masq eval "
			    "runs masquant, compressed-tensors (W8A8 int8, W4A16 and W8A16 pack-quantized) and dense exports", p);
			json_decref(root);
			free(p);
			return -1;
		} else {
			e->format = EXPORT_COMPRESSED_TENSORS;
			if (ct_parse(e, qc, p, err) < 0) {
				json_decref(root);
				free(p);
				return -1;
			}
		}
	}
	json_decref(root);
	free(p);

	p = masq_path_join(dir, "masquant.json");
	if (stat(p, &sb) == 0 && !S_ISREG(sb.st_mode)) {
		masq_err_set(err, MASQ_ERR_IO, "%s: not a regular file", p);
		goto out;
	}
	if (stat(p, &sb) == 0) {
		json_error_t je;
		e->format = EXPORT_MASQUANT;
		e->manifest = json_load_file(p, JSON_REJECT_DUPLICATES, &je);
		if (e->manifest == NULL) {
			masq_err_set(err, MASQ_ERR_FORMAT, "%s: invalid JSON at line %d: %s", p, je.line, je.text);
			goto out;
		}
		json_t *f = json_object_get(e->manifest, "format");
		json_t *v = json_object_get(e->manifest, "format_version");
		json_t *ls = json_object_get(e->manifest, "layers");
		if (!json_is_string(f) || strcmp(json_string_value(f), "masquant") != 0 ||
		    !json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 2) {
			masq_err_set(err, MASQ_ERR_FORMAT,
			    "%s: not a masquant manifest of format version 1 or 2 (this masq reads those)", p);
			goto out;
		}
		if (!json_is_array(ls) || (int)json_array_size(ls) != r->n_layers) {
			masq_err_set(err, MASQ_ERR_FORMAT, "%s: \"layers\" must list the model's %d layers", p,
			    r->n_layers);
			goto out;
		}
		json_t *wb = json_object_get(e->manifest, "wbits");
		e->wbits = json_is_integer(wb) ? (int)json_integer_value(wb) : 0;
		json_t *ab = json_object_get(e->manifest, "abits");
		e->abits = json_is_integer(ab) ? (int)json_integer_value(ab) : 0;
		free(p);
		p = masq_path_join(dir, "masquant.safetensors");
		if (st_open(&e->side, p, err) < 0)
			goto out;
		e->has_side = 1;
	}
	if (st_set_open_dir(&e->st, dir, err) < 0)
		goto out;
	rc = 0;
out:
	free(p);
	if (rc < 0) {
		if (e->has_side)
			st_close(&e->side);
		json_decref(e->manifest);
		e->manifest = NULL;
		e->has_side = 0;
	}
	return rc;
}

/* Close what dexport_open opened. */
static void
dexport_close(dexport *e)
{
	st_set_close(&e->st);
	if (e->has_side)
		st_close(&e->side);
	json_decref(e->manifest);
	memset(e, 0, sizeof *e);
}

/* ---- loading a layer ------------------------------------------------------------- */

/* Float tensor name of shape [a] (b == 0) or [a, b] from the export, or NULL
 * (absent and optional); -1 with err on a fault. */
static int
load_float(const dexport *e, const char *name, int64_t a, int64_t b, int required, float **out,
    masq_err *err)
{
	const st_tensor *t = st_set_find(&e->st, name);

	*out = NULL;
	if (t == NULL)
		return required ? masq_err_set(err, MASQ_ERR_FORMAT, "%s: missing tensor '%s'", e->dir, name) : 0;
	if (!st_dtype_is_float(t->dtype) || t->ndim != (b ? 2 : 1) || t->shape[0] != a ||
	    (b && t->shape[1] != b))
	{
		if (b)
			return masq_err_set(err, MASQ_ERR_FORMAT, "%s: tensor '%s' must be a float [%lld, %lld]",
			    st_set_file_path(&e->st, t), name, (long long)a, (long long)b);
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: tensor '%s' must be a float [%lld]",
		    st_set_file_path(&e->st, t), name, (long long)a);
	}
	*out = st_tensor_to_f32(t);
	return 0;
}

/* Little-endian 32-bit word i of t's data. */
static uint32_t
word_at(const st_tensor *t, size_t i)
{
	const unsigned char *p = (const unsigned char *)t->data + 4 * i;
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A pack-quantized linear as compressed-tensors decompresses it: the
 * unsigned values of weight_packed (per_word per I32, the first input in
 * the low bits), minus the zero point (weight_zero_point packed the same
 * way along the outputs; 2^(bits-1) when symmetric), times the scale of
 * the value's group. */
static int
load_packed(const dexport *e, const char *name, int out, int in, float **W, masq_err *err)
{
	int bits = e->wbits, per = 32 / bits, group = e->wgroup > 0 ? e->wgroup : in;
	int ng = in / group;
	uint32_t mask = (1u << bits) - 1;
	size_t bl = strlen(name) - strlen(".weight");
	char n1[400], n2[400], n3[400];
	snprintf(n1, sizeof n1, "%.*s.weight_packed", (int)bl, name);
	snprintf(n2, sizeof n2, "%.*s.weight_scale", (int)bl, name);
	snprintf(n3, sizeof n3, "%.*s.weight_zero_point", (int)bl, name);
	const st_tensor *tp = st_set_find(&e->st, n1), *ts = st_set_find(&e->st, n2), *tz = st_set_find(&e->st, n3);

	*W = NULL;
	if (in % group != 0 || in % per != 0)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: '%s' has %d inputs: not whole groups of %d or words of %d",
		    e->dir, n1, in, group, per);
	char n4[400];
	snprintf(n4, sizeof n4, "%.*s.weight_g_idx", (int)bl, name);
	if (st_set_find(&e->st, n4) != NULL)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: '%s': columns reordered by activation order are not "
		    "supported", e->dir, n4);
	if (tp == NULL || tp->dtype != ST_I32 || tp->ndim != 2 || tp->shape[0] != out || tp->shape[1] != in / per)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: '%s' must be I32 [%d, %d]", e->dir, n1, out, in / per);
	if (ts == NULL || !st_dtype_is_float(ts->dtype) || ts->ndim != 2 || ts->shape[0] != out || ts->shape[1] != ng)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: '%s' must be a float [%d, %d]", e->dir, n2, out, ng);
	if (!e->wsym && (tz == NULL || tz->dtype != ST_I32 || tz->ndim != 2 || tz->shape[0] != (out + per - 1) / per ||
	    tz->shape[1] != ng))
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: '%s' must be I32 [%d, %d] (asymmetric weights)", e->dir,
		    n3, (out + per - 1) / per, ng);
	float *sc = st_tensor_to_f32(ts), *w = xmalloc(xmul((size_t)out * in, sizeof(float)));
	for (int o = 0; o < out; o++)
		for (int g = 0; g < ng; g++) {
			float z = e->wsym ? (float)(1u << (bits - 1)) :
			    (float)((word_at(tz, (size_t)(o / per) * ng + g) >> (bits * (o % per))) & mask);
			float s = sc[(size_t)o * ng + g];
			for (int i = g * group; i < (g + 1) * group; i++) {
				uint32_t v = (word_at(tp, (size_t)o * (in / per) + i / per) >> (bits * (i % per))) & mask;
				w[(size_t)o * in + i] = ((float)v - z) * s;
			}
		}
	free(sc);
	*W = w;
	return 0;
}

/* The stored weight of a linear: I8 levels (or U4x2 pairs of them, u4x2)
 * times weight_scale, a pack-quantized weight, or a float tensor.  Levels
 * with per-channel scales are also packed into L->ib with their scales in
 * L->wscale, so that the integer GEMM runs them as the pipeline did. */
static int
load_weight(const dexport *e, const char *name, int out, int in, int u4x2, float **W, dlin *L,
    masq_err *err)
{
	const st_tensor *t = st_set_find(&e->st, name), *ts;
	char sn[340];
	int cols = u4x2 ? (in + 1) / 2 : in;

	*W = NULL;
	if (e->packed)
		return load_packed(e, name, out, in, W, err);
	if (t == NULL)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: missing tensor '%s'", e->dir, name);
	if (t->ndim != 2 || t->shape[0] != out || t->shape[1] != (st_dtype_is_float(t->dtype) ? in : cols))
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: tensor '%s' must have shape [%d, %d]",
		    st_set_file_path(&e->st, t), name, out, st_dtype_is_float(t->dtype) ? in : cols);
	if (st_dtype_is_float(t->dtype)) {
		*W = st_tensor_to_f32(t);
		return 0;
	}
	if (t->dtype != (u4x2 ? ST_U8 : ST_I8))
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: tensor '%s' has dtype %s: expected %s or a float",
		    st_set_file_path(&e->st, t), name, st_dtype_name(t->dtype), u4x2 ? "U8 (U4x2)" : "I8");
	snprintf(sn, sizeof sn, "%s_scale", name);
	ts = st_set_find(&e->st, sn);
	if (ts == NULL || !st_dtype_is_float(ts->dtype) || ts->nelem != (uint64_t)out || ts->shape[0] != out ||
	    ts->ndim < 1 || ts->ndim > 2)
		return masq_err_set(err, MASQ_ERR_FORMAT,
		    "%s: the %s weight '%s' needs '%s' as a float [%d, 1] (per output channel)", e->dir,
		    st_dtype_name(t->dtype), name, sn, out);
	float *sc = st_tensor_to_f32(ts);
	float *w = xmalloc(xmul((size_t)out * in, sizeof(float)));
	int8_t *lv = xmalloc(xmul((size_t)out, (size_t)in));
	int ok = 1;	/* every level within +-127, as the integer GEMM takes them */
	if (u4x2) {
		const uint8_t *b = t->data;
		for (int o = 0; o < out; o++)
			for (int i = 0; i < in; i++) {
				unsigned v = b[(size_t)o * cols + i / 2] >> (4 * (i & 1)) & 15u;
				lv[(size_t)o * in + i] = (int8_t)((int)v - 8);
				w[(size_t)o * in + i] = (float)((int)v - 8) * sc[o];
			}
	} else {
		const int8_t *q = t->data;
		for (int o = 0; o < out; o++)
			for (int i = 0; i < in; i++) {
				int8_t v = q[(size_t)o * in + i];
				ok &= v != -128;
				lv[(size_t)o * in + i] = v;
				w[(size_t)o * in + i] = (float)v * sc[o];
			}
	}
	if (ok && igemm_enabled()) {
		igemm_b_pack(&L->ib, lv, out, in);
		L->wscale = sc;
	} else {
		free(sc);
	}
	free(lv);
	*W = w;
	return 0;
}

/* The optional masquant factor tensor "P.suffix", F32 [a]. */
static int
side_factor(const dexport *e, const char *P, const char *suffix, int64_t a, const st_tensor **tp,
    masq_err *err)
{
	char name[400];
	const st_tensor *t;

	snprintf(name, sizeof name, "%s.%s", P, suffix);
	*tp = t = st_find(&e->side, name);
	if (t != NULL && (t->dtype != ST_F32 || t->ndim != 1 || t->shape[0] != a))
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: tensor '%s' must be F32 [%lld]", e->side.path,
		    name, (long long)a);
	return 0;
}

/* The masquant side of linear lin of layer l: factors and CMC, and whether it is unified. */
static int
load_masquant_lin(const dexport *e, int l, int lin, json_t *jl, dlin *d, masq_err *err)
{
	const model_config *c = &e->ref->cfg;
	char P[320];
	int out, in;

	layer_lin_shape(c, lin, &out, &in);
	model_tensor_name(e->ref, l, lin_path(lin), P, sizeof P);
	json_t *jk = json_object_get(json_object_get(jl, "linears"), lin_name(lin));
	json_t *u = json_object_get(jk, "unified");
	if (!json_is_boolean(u))
		return masq_err_set(err, MASQ_ERR_FORMAT,
		    "%s/masquant.json: layer %d has no boolean linears.%s.unified", e->dir, l, lin_name(lin));
	d->unified = json_is_true(u);
	for (int m = 0; m < MOD_COUNT; m++) {
		const st_tensor *t, *t1, *t2;
		char sfx[64];
		snprintf(sfx, sizeof sfx, "smooth.%s", modality_name(m));
		if (side_factor(e, P, sfx, in, &t, err) < 0)
			return -1;
		if (t != NULL) {
			d->s[m] = st_tensor_to_f32(t);
			for (int i = 0; i < in; i++)
				if (!(d->s[m][i] > 0.0f) || !isfinite(d->s[m][i]))
					return masq_err_set(err, MASQ_ERR_FORMAT,
					    "%s: %s.%s[%d] = %g is not a positive number", e->side.path, P, sfx, i,
					    (double)d->s[m][i]);
		}
		char n1[400], n2[400];
		snprintf(n1, sizeof n1, "%s.cmc.%s.L1", P, modality_name(m));
		snprintf(n2, sizeof n2, "%s.cmc.%s.L2", P, modality_name(m));
		t1 = st_find(&e->side, n1);
		t2 = st_find(&e->side, n2);
		if (t1 == NULL && t2 == NULL)
			continue;
		if (t1 == NULL || t2 == NULL || !st_dtype_is_float(t1->dtype) || !st_dtype_is_float(t2->dtype) ||
		    t1->ndim != 2 ||
		    t2->ndim != 2 || t1->shape[0] != in || t2->shape[1] != out || t1->shape[1] != t2->shape[0] ||
		    t1->shape[1] < 1 || t1->shape[1] > (in < out ? in : out) || m == MOD_TEXT || d->unified)
			return masq_err_set(err, MASQ_ERR_FORMAT,
			    "%s: %s.cmc.%s.L1/L2 must be floats [%d, r] and [r, %d], 1 <= r <= %d, for a "
			    "non-text modality of a per-modality linear", e->side.path, P, modality_name(m), in, out,
			    in < out ? in : out);
		d->rank[m] = (int)t1->shape[1];
		d->L1[m] = st_tensor_to_f32(t1);
		d->L2[m] = st_tensor_to_f32(t2);
	}
	return 0;
}

/* Load layer l of the export. */
static int
dlayer_load(dlayer *d, const dexport *e, int l, masq_err *err)
{
	const model *ref = e->ref;
	const model_config *c = &ref->cfg;
	layer_weights *w = &d->w;
	char name[320], sfx[96];

	memset(d, 0, sizeof *d);
	w->layer = l;
	w->hidden = c->hidden;
	w->q_dim = c->n_heads * c->head_dim;
	w->kv_dim = c->n_kv_heads * c->head_dim;
	w->inter = c->intermediate;
	d->abits = e->format == EXPORT_COMPRESSED_TENSORS ? e->abits : 16;
	model_tensor_name(ref, l, "input_layernorm.weight", name, sizeof name);
	if (load_float(e, name, c->hidden, 0, 1, &w->attn_norm, err) < 0)
		goto fail;
	model_tensor_name(ref, l, "post_attention_layernorm.weight", name, sizeof name);
	if (load_float(e, name, c->hidden, 0, 1, &w->mlp_norm, err) < 0)
		goto fail;
	if (c->qk_norm) {
		model_tensor_name(ref, l, "self_attn.q_norm.weight", name, sizeof name);
		if (load_float(e, name, c->head_dim, 0, 1, &w->q_norm, err) < 0)
			goto fail;
		model_tensor_name(ref, l, "self_attn.k_norm.weight", name, sizeof name);
		if (load_float(e, name, c->head_dim, 0, 1, &w->k_norm, err) < 0)
			goto fail;
	}
	int u4x2 = 0;
	if (e->format == EXPORT_MASQUANT) {
		/* format version 2 says each layer's container (1: I8) */
		json_t *jc = json_object_get(json_array_get(json_object_get(e->manifest, "layers"), (size_t)l),
		    "container");
		if (jc != NULL && (!json_is_string(jc) || (strcmp(json_string_value(jc), "I8") != 0 &&
		    strcmp(json_string_value(jc), "U4x2") != 0))) {
			masq_err_set(err, MASQ_ERR_FORMAT, "%s/masquant.json layers[%d]: \"container\" is not I8 or U4x2",
			    e->dir, l);
			goto fail;
		}
		u4x2 = jc != NULL && strcmp(json_string_value(jc), "U4x2") == 0;
	}
	for (int k = 0; k < LIN_COUNT; k++) {
		int out, in;
		layer_lin_shape(c, k, &out, &in);
		snprintf(sfx, sizeof sfx, "%s.weight", lin_path(k));
		model_tensor_name(ref, l, sfx, name, sizeof name);
		if (load_weight(e, name, out, in, u4x2, &w->w[k], &d->lin[k], err) < 0)
			goto fail;
		snprintf(sfx, sizeof sfx, "%s.bias", lin_path(k));
		model_tensor_name(ref, l, sfx, name, sizeof name);
		if (load_float(e, name, out, 0, 0, &w->b[k], err) < 0)
			goto fail;
		d->lin[k].unified = 1;
	}
	if (e->format == EXPORT_MASQUANT) {
		json_t *jl = json_array_get(json_object_get(e->manifest, "layers"), (size_t)l);
		char where[64];
		int lay;
		snprintf(where, sizeof where, "%s/masquant.json layers[%d]", e->dir, l);
		if (!json_is_object(jl) || jint(jl, "layer", l, l, where, &lay, err) < 0 ||
		    jint(jl, "abits", 2, 16, where, &d->abits, err) < 0)
			goto fail;
		for (int k = 0; k < LIN_COUNT; k++)
			if (load_masquant_lin(e, l, k, jl, &d->lin[k], err) < 0)
				goto fail;
	}
	return 0;
fail:
	dlayer_done(d);
	return -1;
}

/* ---- the deployed linear ------------------------------------------------------------ */

struct dctx {
	const model_config *cfg;
	const dlayer *lay;
	int n;
	int *rows[MOD_COUNT];		/* token indices of each modality */
	int nrows[MOD_COUNT];
};

/* The engine's linear override: y (n, out) for linear lin as deployed. */
static int
dlinear(void *ctx, const layer_weights *w, int lin, const float *x, int n, float *y)
{
	struct dctx *d = ctx;
	const dlin *L = &d->lay->lin[lin];
	int abits = d->lay->abits, out, in;

	layer_lin_shape(d->cfg, lin, &out, &in);
	MASQ_ASSERT(n == d->n);
	float *xs = xmalloc(xmul((size_t)n * in, sizeof(float)));
	float *xq = xmalloc(xmul((size_t)n * in, sizeof(float)));
	/* the integer GEMM where the pipeline ran one (pipe_qgemm_int) */
	int integer = L->ib.b != NULL && abits <= 8;
	if (L->unified) {
		if (integer)
			engine_qlinear_rows_int(x, in, NULL, n, L->s[MOD_TEXT], abits, &L->ib, L->wscale, w->b[lin],
			    out, 0, NULL, NULL, xs, y, masq_blas_get_threads());
		else
			engine_qlinear_rows(x, in, NULL, n, L->s[MOD_TEXT], abits, w->w[lin], w->b[lin], out, 0,
			    NULL, NULL, xs, xq, y);
	} else {
		float *yr = xmalloc(xmul((size_t)n * out, sizeof(float)));
		for (int m = 0; m < MOD_COUNT; m++) {
			int k = d->nrows[m];
			if (k == 0)
				continue;
			const float *s = L->s[m] != NULL ? L->s[m] : L->s[MOD_TEXT];
			int rank = m != MOD_TEXT ? L->rank[m] : 0;
			if (integer)
				engine_qlinear_rows_int(x, in, d->rows[m], k, s, abits, &L->ib, L->wscale, w->b[lin],
				    out, rank, L->L1[m], L->L2[m], xs, yr, masq_blas_get_threads());
			else
				engine_qlinear_rows(x, in, d->rows[m], k, s, abits, w->w[lin], w->b[lin], out, rank,
				    L->L1[m], L->L2[m], xs, xq, yr);
			for (int r = 0; r < k; r++)
				memcpy(y + (size_t)d->rows[m][r] * out, yr + (size_t)r * out,
				    (size_t)out * sizeof(float));
		}
		free(yr);
	}
	free(xs);
	free(xq);
	return 0;
}

/* ---- the run ----------------------------------------------------------------------- */

/* KL at text positions between the reference's head on h_fp and the
 * export's head on h_q; NAN when either model lacks a head. */
static double
text_kl(const dexport *e, const calib *c, const float *h_fp, const float *h_q)
{
	const model *ref = e->ref;
	const st_tensor *rn, *rh, *en, *eh;

	if (ref->norm_name == NULL || ref->lm_head_name == NULL || c->n_mod[MOD_TEXT] == 0)
		return NAN;
	rn = st_set_find(&ref->st, ref->norm_name);
	rh = st_set_find(&ref->st, ref->lm_head_name);
	en = st_set_find(&e->st, ref->norm_name);
	eh = st_set_find(&e->st, ref->lm_head_name);
	if (en == NULL || eh == NULL || !st_dtype_is_float(en->dtype) || !st_dtype_is_float(eh->dtype) ||
	    en->nelem != rn->nelem || eh->ndim != 2 || eh->shape[0] != rh->shape[0] ||
	    eh->shape[1] != rh->shape[1])
		return NAN;
	int V = (int)rh->shape[0], D = ref->cfg.hidden, k = 0;
	int *idx = xmalloc(xmul((size_t)c->n_mod[MOD_TEXT], sizeof(int)));
	for (int t = 0; t < c->n_tokens; t++)
		if (c->modality[t] == MOD_TEXT)
			idx[k++] = t;
	float *n1 = st_tensor_to_f32(rn), *W1 = st_tensor_to_f32(rh);
	float *lf = engine_head_logits(h_fp, idx, k, D, n1, ref->cfg.rms_eps, W1, V);
	free(n1);
	free(W1);
	float *n2 = st_tensor_to_f32(en), *W2 = st_tensor_to_f32(eh);
	float *lq = engine_head_logits(h_q, idx, k, D, n2, ref->cfg.rms_eps, W2, V);
	free(n2);
	free(W2);
	double kl = metrics_kl_rows(lf, lq, k, V);
	free(lf);
	free(lq);
	free(idx);
	return kl;
}

int
deploy_eval(const char *export_dir, const char *reference_dir, const char *layer_prefix, const calib *c,
    deploy_result *out,
    masq_err *err)
{
	model ref;
	dexport e;
	engine eng;
	struct dctx dc;
	double t0 = masq_now();
	int rc = -1;

	memset(out, 0, sizeof *out);
	out->kl_text = NAN;
	if (model_open_prefix(&ref, reference_dir, layer_prefix, err) < 0)
		return masq_err_prefix(err, "the reference model");
	if (c->hidden != ref.cfg.hidden) {
		masq_err_set(err, MASQ_ERR_USAGE,
		    "the calibration set's width %d is not the reference model's hidden size %d", c->hidden,
		    ref.cfg.hidden);
		model_close(&ref);
		return -1;
	}
	if (model_deepstack_check(&ref.cfg, c->n_deepstack, err) < 0 || dexport_open(&e, export_dir, &ref, err) < 0) {
		model_close(&ref);
		return -1;
	}
	const model_config *cfg = &ref.cfg;
	size_t T = (size_t)c->n_tokens, D = (size_t)cfg->hidden;
	float *h_fp = xmalloc(xmul(T * D, sizeof(float)));
	float *h_q = xmalloc(xmul(T * D, sizeof(float)));
	memcpy(h_fp, c->embeds, T * D * sizeof(float));
	memcpy(h_q, c->embeds, T * D * sizeof(float));
	engine_init(&eng, cfg);
	engine_batch b = {.n_tokens = c->n_tokens, .n_seqs = c->n_seqs, .seq_lens = c->seq_lens,
	    .pos = c->pos, .modality = c->modality};
	memset(&dc, 0, sizeof dc);
	dc.cfg = cfg;
	dc.n = c->n_tokens;
	for (int m = 0; m < MOD_COUNT; m++)
		dc.rows[m] = xmalloc(xmul(T + 1, sizeof(int)));
	for (int t = 0; t < c->n_tokens; t++)
		dc.rows[c->modality[t]][dc.nrows[c->modality[t]]++] = t;
	out->format = e.format;
	out->wbits = e.wbits;
	out->abits = e.format == EXPORT_FAKE ? 16 : e.abits;
	out->n_layers = cfg->n_layers;
	out->layers = xcalloc((size_t)cfg->n_layers, sizeof *out->layers);

	for (int l = 0; l < cfg->n_layers; l++) {
		layer_weights rw;
		dlayer dl;
		if (layer_weights_load(&rw, &ref, l, err) < 0)
			goto out;
		engine_layer_forward(&eng, &rw, &b, h_fp, NULL);
		layer_weights_done(&rw);
		if (dlayer_load(&dl, &e, l, err) < 0)
			goto out;
		dc.lay = &dl;
		engine_ops ops = {.ctx = &dc, .linear = dlinear};
		engine_layer_forward(&eng, &dl.w, &b, h_q, e.format == EXPORT_FAKE ? NULL : &ops);
		dlayer_done(&dl);
		for (size_t i = 0; i < T * D; i++)
			if (!isfinite(h_q[i])) {
				masq_err_set(err, MASQ_ERR_FORMAT,
				    "%s: layer %d of the export produced a non-finite value at token %zu",
				    export_dir, l, i / D);
				goto out;
			}
		metrics_acc a;
		metrics_acc_init(&a);
		metrics_acc_add(&a, h_fp, h_q, c->modality, c->n_tokens, cfg->hidden);
		for (int m = 0; m < STATS_ROWS; m++) {
			out->layers[l].sqnr[m] = metrics_sqnr(&a, m);
			out->layers[l].mae[m] = metrics_mae(&a, m);
		}
		/* measured as the layer's output, as the pipeline does; then the
		 * state the next layer takes (Qwen3-VL's deepstack) */
		calib_deepstack_add(c, l, h_fp);
		calib_deepstack_add(c, l, h_q);
	}
	for (int m = 0; m < STATS_ROWS; m++) {
		out->sqnr[m] = out->layers[cfg->n_layers - 1].sqnr[m];
		out->mae[m] = out->layers[cfg->n_layers - 1].mae[m];
	}
	out->kl_text = text_kl(&e, c, h_fp, h_q);
	out->seconds = masq_now() - t0;
	rc = 0;
out:
	for (int m = 0; m < MOD_COUNT; m++)
		free(dc.rows[m]);
	engine_done(&eng);
	free(h_fp);
	free(h_q);
	dexport_close(&e);
	model_close(&ref);
	if (rc < 0)
		deploy_result_done(out);
	return rc;
}

void
deploy_result_done(deploy_result *r)
{
	free(r->layers);
	memset(r, 0, sizeof *r);
}
