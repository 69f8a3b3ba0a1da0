#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "core/model.h"

static const char *const lin_names[LIN_COUNT] = {
	"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
};
static const char *const lin_paths[LIN_COUNT] = {
	"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
	"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"
};

const char *const cfg_src_names[CFG_NSRC] = {"hidden_size", "num_hidden_layers", "num_attention_heads",
	"intermediate_size", "num_key_value_heads", "head_dim", "vocab_size", "rms_norm_eps", "rope_theta", "mrope_section"};

/* Layer prefixes of the supported layouts, most common first. */
static const char *const layer_prefixes[] = {
	"model.layers.",			/* Qwen2, Llama, Qwen2.5-VL as released (and as transformers
						   < 4.52 and >= 4.52.4 save it) */
	"model.language_model.layers.",		/* Qwen2.5-VL, LLaVA as transformers 4.52.0 to 4.52.3 save them
						   (4.52.4 went back to the released names) */
	"language_model.model.layers.",		/* LLaVA (older transformers) */
	"thinker.model.layers.",		/* Qwen2.5-Omni thinker */
	NULL
};

const char *
lin_name(int lin)
{
	return (unsigned)lin < LIN_COUNT ? lin_names[lin] : "?";
}

const char *
lin_path(int lin)
{
	return (unsigned)lin < LIN_COUNT ? lin_paths[lin] : "?";
}

int
lin_parse(const char *s)
{
	for (int i = 0; i < LIN_COUNT; i++) {
		size_t n = strlen(lin_names[i]) - 5;	/* without "_proj" */
		if (strcmp(s, lin_names[i]) == 0 || strcmp(s, lin_paths[i]) == 0 ||
		    (strncmp(s, lin_names[i], n) == 0 && s[n] == '\0'))
			return i;
	}
	return -1;
}

void
layer_lin_shape(const model_config *c, int lin, int *out, int *in)
{
	int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;

	switch (lin) {
	case LIN_Q: *out = q_dim; *in = c->hidden; break;
	case LIN_K:
	case LIN_V: *out = kv_dim; *in = c->hidden; break;
	case LIN_O: *out = c->hidden; *in = q_dim; break;
	case LIN_GATE:
	case LIN_UP: *out = c->intermediate; *in = c->hidden; break;
	default: *out = c->hidden; *in = c->intermediate; break;
	}
}

/* ---- config.json ------------------------------------------------------- */

/* A key looked up in the text config first, then in its parents. */
struct cfg_scope {
	json_t *obj[3];
	const char *name[3];	/* where each is in config.json ("" for the top level) */
	int n;
};

static json_t *
cfg_get(const struct cfg_scope *sc, const char *key)
{
	for (int i = 0; i < sc->n; i++) {
		json_t *v = json_object_get(sc->obj[i], key);
		if (v != NULL && !json_is_null(v))
			return v;
	}
	return NULL;
}

/* Where key was read from, into src ("text_config.hidden_size"); untouched
 * when the key is absent. */
static void
cfg_src(const struct cfg_scope *sc, const char *key, char *src, size_t n)
{
	if (src == NULL)
		return;
	for (int i = 0; i < sc->n; i++) {
		json_t *v = json_object_get(sc->obj[i], key);
		if (v != NULL && !json_is_null(v)) {
			snprintf(src, n, "%s%s%s", sc->name[i], sc->name[i][0] ? "." : "", key);
			return;
		}
	}
}

/* Read an integer key into *out; required keys fail when absent. */
static int
cfg_int(const struct cfg_scope *sc, const char *path, const char *key, int required,
    int lo, int hi, int *out, masq_err *err)
{
	json_t *v = cfg_get(sc, key);

	if (v == NULL) {
		if (required)
			return masq_err_set(err, MASQ_ERR_FORMAT, "%s: the text config has no \"%s\"", path, key);
		return 0;
	}
	if (!json_is_integer(v))
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: \"%s\" is not an integer", path, key);
	json_int_t x = json_integer_value(v);
	if (x < lo || x > hi)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: \"%s\" = %lld is out of range [%d, %d]",
		    path, key, (long long)x, lo, hi);
	*out = (int)x;
	return 0;
}

static int
cfg_num(const struct cfg_scope *sc, const char *path, const char *key, double lo, double hi,
    double *out, masq_err *err)
{
	json_t *v = cfg_get(sc, key);

	if (v == NULL)
		return 0;
	if (!json_is_number(v))
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: \"%s\" is not a number", path, key);
	double x = json_number_value(v);
	if (!(x >= lo && x <= hi))
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: \"%s\" = %g is out of range [%g, %g]",
		    path, key, x, lo, hi);
	*out = x;
	return 0;
}

static void
copy_str(char *dst, size_t n, json_t *v)
{
	if (json_is_string(v))
		snprintf(dst, n, "%s", json_string_value(v));
}

/* The decoder families masq runs, by the model_type of the text config (or
 * of the root when the text config has none), and their config class's
 * defaults where a field is left out: transformers writes only what
 * differs from them (llava-hf/llava-1.5-7b-hf's text_config has no
 * hidden_size).  NULL defaults: every field is required. */
struct family {
	const char *type;
	int defaults;
	int hidden, layers, heads, intermediate, vocab;
	double eps, theta;
	int qwen3;		/* per-head q/k norms; head_dim defaults to 128 */
	int interleaved;	/* M-RoPE sections interleaved (Qwen3-VL), default [24, 20, 20] */
};

static const struct family families[] = {
	/* LlamaConfig (LLaVA-1.5's text model; LlavaConfig's default text config) */
	{"llama", 1, 4096, 32, 32, 11008, 32000, 1e-6, 10000.0, 0, 0},
	{"llava", 1, 4096, 32, 32, 11008, 32000, 1e-6, 10000.0, 0, 0},
	/* Qwen2Config (LLaVA-OneVision's, InternVL2.5's with Qwen2.5) */
	{"qwen2", 1, 4096, 32, 32, 22016, 151936, 1e-6, 10000.0, 0, 0},
	{"qwen2_vl", 0, 0, 0, 0, 0, 0, 1e-6, 10000.0, 0, 0},
	{"qwen2_vl_text", 0, 0, 0, 0, 0, 0, 1e-6, 10000.0, 0, 0},
	{"qwen2_5_vl", 0, 0, 0, 0, 0, 0, 1e-6, 10000.0, 0, 0},
	{"qwen2_5_vl_text", 0, 0, 0, 0, 0, 0, 1e-6, 10000.0, 0, 0},
	{"qwen2_5_omni_thinker", 0, 0, 0, 0, 0, 0, 1e-6, 10000.0, 0, 0},
	{"qwen2_5_omni_text", 0, 0, 0, 0, 0, 0, 1e-6, 10000.0, 0, 0},
	{"qwen2_5_omni", 0, 0, 0, 0, 0, 0, 1e-6, 10000.0, 0, 0},
	/* Qwen3Config; Qwen3VLTextConfig (the dense Qwen3-VL, 2B to 32B) */
	{"qwen3", 1, 4096, 32, 32, 22016, 151936, 1e-6, 10000.0, 1, 0},
	{"qwen3_vl", 1, 4096, 32, 32, 22016, 151936, 1e-6, 5000000.0, 1, 1},
	{"qwen3_vl_text", 1, 4096, 32, 32, 22016, 151936, 1e-6, 5000000.0, 1, 1},
};

static const struct family *
family_of(const char *type)
{
	for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
		if (strcmp(families[i].type, type) == 0)
			return families[i].defaults ? &families[i] : NULL;
	return NULL;
}

/* Refuse by name what masq would run wrong: the mixture-of-experts Qwen3
 * decoders and any model_type outside the supported families.  A config
 * with no model_type anywhere is taken as the Qwen2 layout it must then
 * match tensor by tensor. */
static int
check_model_type(const struct cfg_scope *sc, const char *path, masq_err *err)
{
	for (int i = 0; i < sc->n; i++) {
		const char *t = json_string_value(json_object_get(sc->obj[i], "model_type"));
		if (t != NULL && strncmp(t, "qwen3", 5) == 0 && strstr(t, "moe") != NULL)
			return masq_err_set(err, MASQ_ERR_FORMAT,
			    "%s: model_type \"%s\": mixture-of-experts decoders (Qwen3-VL-30B-A3B, 235B-A22B, Qwen3-Omni) "
			    "are not supported: masq quantizes dense decoders (Qwen3-VL 2B to 32B)", path, t);
	}
	json_t *tv = cfg_get(sc, "model_type");
	if (tv == NULL)
		return 0;
	const char *t = json_string_value(tv);
	if (t == NULL)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: \"model_type\" is not a string", path);
	for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
		if (strcmp(families[i].type, t) == 0)
			return 0;
	return masq_err_set(err, MASQ_ERR_FORMAT,
	    "%s: model_type \"%s\" is not supported (Qwen2-VL, Qwen2.5-VL and dense Qwen3-VL, the Qwen2.5-Omni "
	    "thinker, LLaVA-style models on Llama, Qwen2 or Qwen3 decoders)", path, t);
}

int
model_config_load(model_config *c, const char *path, masq_err *err)
{
	json_error_t je;
	json_t *root, *tc, *th;
	struct cfg_scope sc = {{0}, {0}, 0};
	double eps = 1e-6, theta = 10000.0;
	int rc = -1;

	memset(c, 0, sizeof *c);
	int fd = masq_open_regular(path, err);
	if (fd < 0)
		return -1;
	root = json_loadfd(fd, JSON_REJECT_DUPLICATES, &je);
	close(fd);
	if (root == NULL) {
		if (je.line < 0 || strstr(je.text, "unable to open") != NULL)
			return masq_err_set(err, MASQ_ERR_IO, "%s: cannot read: %s", path, je.text);
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: invalid JSON at line %d, column %d: %s",
		    path, je.line, je.column, je.text);
	}
	if (!json_is_object(root)) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: not a JSON object", path);
		goto out;
	}
	th = json_object_get(root, "thinker_config");
	tc = json_object_get(root, "text_config");
	json_t *lc = json_object_get(root, "llm_config");
	if (!json_is_object(tc) && json_is_object(lc)) {
		/* InternVL's remote-code checkpoints keep the decoder's config here */
		tc = lc;
		snprintf(c->text_source, sizeof c->text_source, "llm_config");
	}
	if (json_is_object(th)) {
		json_t *ttc = json_object_get(th, "text_config");
		if (json_is_object(ttc)) {
			sc.name[sc.n] = "thinker_config.text_config";
			sc.obj[sc.n++] = ttc;
			snprintf(c->text_source, sizeof c->text_source, "thinker_config.text_config");
		} else {
			snprintf(c->text_source, sizeof c->text_source, "thinker_config");
		}
		sc.name[sc.n] = "thinker_config";
		sc.obj[sc.n++] = th;
	} else if (json_is_object(tc)) {
		sc.name[sc.n] = tc == lc ? "llm_config" : "text_config";
		sc.obj[sc.n++] = tc;
		if (c->text_source[0] == '\0')
			snprintf(c->text_source, sizeof c->text_source, "text_config");
	}
	sc.name[sc.n] = "";
	sc.obj[sc.n++] = root;

	json_t *arch = json_object_get(root, "architectures");
	if (json_is_array(arch) && json_array_size(arch) > 0)
		copy_str(c->arch, sizeof c->arch, json_array_get(arch, 0));
	copy_str(c->model_type, sizeof c->model_type, cfg_get(&sc, "model_type"));
	if (check_model_type(&sc, path, err) < 0)
		goto out;
	/* a family's documented defaults where its config leaves a field out
	 * (transformers drops what equals the config class's default) */
	const struct family *fam = family_of(c->model_type);
	if (fam != NULL && fam->qwen3) {
		c->qk_norm = 1;
		c->mrope_interleaved = fam->interleaved;
	}
	if (fam != NULL) {
		c->hidden = fam->hidden;
		c->n_layers = fam->layers;
		c->n_heads = fam->heads;
		c->intermediate = fam->intermediate;
		c->vocab = fam->vocab;
		eps = fam->eps;
		theta = fam->theta;
	}
	int req = fam == NULL;
	if (cfg_int(&sc, path, "hidden_size", req, 1, 1 << 16, &c->hidden, err) < 0 ||
	    cfg_int(&sc, path, "num_hidden_layers", req, 1, 4096, &c->n_layers, err) < 0 ||
	    cfg_int(&sc, path, "num_attention_heads", req, 1, 4096, &c->n_heads, err) < 0 ||
	    cfg_int(&sc, path, "intermediate_size", req, 1, 1 << 20, &c->intermediate, err) < 0)
		goto out;
	c->n_kv_heads = c->n_heads;
	c->head_dim = fam != NULL && fam->qwen3 ? 128 : c->hidden / c->n_heads;	/* Qwen3's config classes: 128 */
	if (cfg_int(&sc, path, "num_key_value_heads", 0, 1, 4096, &c->n_kv_heads, err) < 0 ||
	    cfg_int(&sc, path, "head_dim", 0, 2, 4096, &c->head_dim, err) < 0 ||
	    cfg_int(&sc, path, "vocab_size", 0, 1, 1 << 24, &c->vocab, err) < 0 ||
	    cfg_num(&sc, path, "rms_norm_eps", 1e-30, 1.0, &eps, err) < 0 ||
	    cfg_num(&sc, path, "rope_theta", 1.0, 1e12, &theta, err) < 0)
		goto out;
	/* transformers v5 keeps RoPE in rope_parameters (theta, type, sections) */
	json_t *rp = cfg_get(&sc, "rope_parameters");
	if (rp != NULL) {
		if (!json_is_object(rp)) {
			masq_err_set(err, MASQ_ERR_FORMAT, "%s: \"rope_parameters\" is not an object", path);
			goto out;
		}
		json_t *t = json_object_get(rp, "rope_theta");
		if (t != NULL && (!json_is_number(t) || !(json_number_value(t) >= 1.0 && json_number_value(t) <= 1e12))) {
			masq_err_set(err, MASQ_ERR_FORMAT, "%s: rope_parameters.rope_theta is not a number in [1, 1e12]", path);
			goto out;
		}
		if (t != NULL)
			theta = json_number_value(t);
		if (t == NULL && cfg_get(&sc, "rope_theta") == NULL && fam != NULL && fam->interleaved) {
			/* Qwen3VLTextConfig's default theta is 5e6 in 4.57, 5e5 in v5 */
			masq_err_set(err, MASQ_ERR_FORMAT, "%s: no rope_theta beside rope_parameters, and Qwen3-VL's "
			    "default differs between transformers 4.57 (5000000) and v5 (500000): give it", path);
			goto out;
		}
	}
	if (json_is_true(cfg_get(&sc, "use_sliding_window"))) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: use_sliding_window is true: sliding-window attention is not "
		    "supported (the engine attends to the whole sequence)", path);
		goto out;
	}
	c->rms_eps = (float)eps;
	c->rope_theta = theta;
	{
		static const char *const keys[CFG_NSRC] = {"hidden_size", "num_hidden_layers", "num_attention_heads",
			"intermediate_size", "num_key_value_heads", "head_dim", "vocab_size", "rms_norm_eps", "rope_theta",
			NULL};
		for (int i = 0; i < CFG_NSRC; i++) {
			char dflt[48];
			snprintf(dflt, sizeof dflt, "the default of model_type %s", fam != NULL ? fam->type : "");
			snprintf(c->src[i], sizeof c->src[i], "%s", i == CS_KV ? "num_attention_heads (none given)" :
			    i == CS_HEAD_DIM ? (fam != NULL && fam->qwen3 ? dflt : "hidden_size / num_attention_heads") :
			    i == CS_MROPE ? (fam != NULL && fam->interleaved ? dflt : "none (plain RoPE)") :
			    fam != NULL ? dflt : "masq's default (Qwen2's)");
			if (keys[i] != NULL)
				cfg_src(&sc, keys[i], c->src[i], sizeof c->src[i]);
		}
		if (rp != NULL && json_object_get(rp, "rope_theta") != NULL) {
			char b[48] = "";
			cfg_src(&sc, "rope_parameters", b, sizeof b);
			snprintf(c->src[CS_THETA], sizeof c->src[CS_THETA], "%s.rope_theta", b);
		}
	}
	if (c->n_heads % c->n_kv_heads != 0) {
		masq_err_set(err, MASQ_ERR_FORMAT,
		    "%s: num_attention_heads (%d) is not a multiple of num_key_value_heads (%d)",
		    path, c->n_heads, c->n_kv_heads);
		goto out;
	}
	if (c->head_dim < 2 || c->head_dim % 2 != 0) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: head dimension %d is not a positive even number",
		    path, c->head_dim);
		goto out;
	}

	json_t *rs = rp != NULL ? rp : cfg_get(&sc, "rope_scaling");
	const char *rname = rp != NULL ? "rope_parameters" : "rope_scaling";
	if (rs != NULL && !json_is_object(rs)) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: \"rope_scaling\" is not an object", path);
		goto out;
	}
	if (rs != NULL) {
		/* every key that changes the arithmetic must be understood */
		static const char *const known[] = {"type", "rope_type", "mrope_section", "rope_theta",
			"mrope_interleaved"};
		const char *k;
		json_t *v;
		json_object_foreach(rs, k, v) {
			size_t i = 0;
			while (i < sizeof known / sizeof known[0] && strcmp(k, known[i]) != 0)
				i++;
			if (i == sizeof known / sizeof known[0]) {
				masq_err_set(err, MASQ_ERR_FORMAT, "%s: %s.%s is not understood (masq reads %s.type, rope_type, "
				    "mrope_section, mrope_interleaved and rope_theta; RoPE scaling is not supported)", path, rname,
				    k, rname);
				goto out;
			}
		}
		static const char *const types[] = {"type", "rope_type"};
		for (int i = 0; i < 2; i++) {
			json_t *ty = json_object_get(rs, types[i]);
			if (ty != NULL && (!json_is_string(ty) || (strcmp(json_string_value(ty), "default") != 0 &&
			    strcmp(json_string_value(ty), "mrope") != 0))) {
				masq_err_set(err, MASQ_ERR_FORMAT,
				    "%s: %s.%s %s%s%s is not supported (only default RoPE and mrope)", path, rname, types[i],
				    json_is_string(ty) ? "\"" : "", json_is_string(ty) ? json_string_value(ty) : "(not a string)",
				    json_is_string(ty) ? "\"" : "");
				goto out;
			}
		}
	}
	json_t *mi = rs ? json_object_get(rs, "mrope_interleaved") : NULL;
	if (mi != NULL && (!json_is_boolean(mi) || json_is_true(mi) != c->mrope_interleaved)) {
		/* transformers' Qwen3-VL always interleaves and Qwen2-VL's never
		 * does: a config that says otherwise is not what it runs */
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: %s.mrope_interleaved is %s, but model_type %s %s", path, rname,
		    json_is_boolean(mi) ? (json_is_true(mi) ? "true" : "false") : "not a boolean",
		    c->model_type[0] ? c->model_type : "(none)", c->mrope_interleaved ?
		    "interleaves its M-RoPE sections" : "runs them as consecutive chunks");
		goto out;
	}
	json_t *ms = rs ? json_object_get(rs, "mrope_section") : NULL;
	if (ms != NULL) {
		int sum = 0;
		if (!json_is_array(ms) || json_array_size(ms) != 3) {
			masq_err_set(err, MASQ_ERR_FORMAT,
			    "%s: %s.mrope_section is not an array of 3 integers", path, rname);
			goto out;
		}
		for (int i = 0; i < 3; i++) {
			json_t *x = json_array_get(ms, i);
			if (!json_is_integer(x) || json_integer_value(x) < 0 ||
			    json_integer_value(x) > c->head_dim) {
				masq_err_set(err, MASQ_ERR_FORMAT,
				    "%s: %s.mrope_section[%d] is not an integer in [0, %d]",
				    path, rname, i, c->head_dim);
				goto out;
			}
			c->mrope_section[i] = (int)json_integer_value(x);
			sum += c->mrope_section[i];
		}
		if (sum != c->head_dim / 2) {
			masq_err_set(err, MASQ_ERR_FORMAT,
			    "%s: %s.mrope_section [%d, %d, %d] sums to %d, expected head_dim/2 = %d",
			    path, rname, c->mrope_section[0], c->mrope_section[1], c->mrope_section[2], sum,
			    c->head_dim / 2);
			goto out;
		}
		c->mrope = 1;
		char b[48] = "";
		cfg_src(&sc, rname, b, sizeof b);
		snprintf(c->src[CS_MROPE], sizeof c->src[CS_MROPE], "%s.mrope_section", b);
	} else if (c->mrope_interleaved) {
		/* Qwen3-VL's rotary embedding defaults to [24, 20, 20] */
		static const int dflt[3] = {24, 20, 20};
		if (c->head_dim != 128) {
			masq_err_set(err, MASQ_ERR_FORMAT, "%s: no mrope_section, and Qwen3-VL's default [24, 20, 20] needs "
			    "head_dim 128, not %d", path, c->head_dim);
			goto out;
		}
		memcpy(c->mrope_section, dflt, sizeof dflt);
		c->mrope = 1;
	} else if (rs != NULL) {
		json_t *ty = json_object_get(rs, "rope_type");
		if (ty == NULL)
			ty = json_object_get(rs, "type");
		if (json_is_string(ty) && strcmp(json_string_value(ty), "default") != 0 &&
		    strcmp(json_string_value(ty), "mrope") != 0) {
			masq_err_set(err, MASQ_ERR_FORMAT,
			    "%s: rope_scaling type \"%s\" is not supported (only default RoPE and mrope)",
			    path, json_string_value(ty));
			goto out;
		}
	}
	json_t *tie = cfg_get(&sc, "tie_word_embeddings");
	c->tied_embeddings = json_is_true(tie);
	json_t *act = cfg_get(&sc, "hidden_act");
	if (act != NULL && (!json_is_string(act) || strcmp(json_string_value(act), "silu") != 0)) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: hidden_act %s%s%s is not supported (only silu)",
		    path, json_is_string(act) ? "\"" : "", json_is_string(act) ? json_string_value(act) : "(not a string)",
		    json_is_string(act) ? "\"" : "");
		goto out;
	}
	rc = 0;
out:
	json_decref(root);
	return rc;
}

/* ---- the checkpoint ------------------------------------------------------ */

void
model_tensor_name(const model *m, int layer, const char *suffix, char *buf, size_t n)
{
	snprintf(buf, n, "%s%d.%s", m->prefix, layer, suffix);
}

static int
shape_is(const st_tensor *t, int ndim, int64_t a, int64_t b)
{
	return t->ndim == ndim && t->shape[0] == a && (ndim < 2 || t->shape[1] == b);
}

static void
shape_str(const st_tensor *t, char *buf, size_t n)
{
	size_t k = 0;
	k += (size_t)snprintf(buf + k, n - k, "[");
	for (int i = 0; i < t->ndim && k < n; i++)
		k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
	if (k < n)
		snprintf(buf + k, n - k, "]");
}

/* Check tensor name exists with a float dtype and shape [a] or [a, b]. */
static int
check_tensor(const model *m, const char *name, int ndim, int64_t a, int64_t b, const char *why,
    masq_err *err)
{
	const st_tensor *t = st_set_find(&m->st, name);
	char got[128];

	if (t == NULL)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: missing tensor %s (%s)", m->dir, name, why);
	if (!st_dtype_is_float(t->dtype))
		return masq_err_set(err, MASQ_ERR_FORMAT,
		    "%s: tensor '%s' has dtype %s, expected a float type (F32, F16, BF16)",
		    st_set_file_path(&m->st, t), name, st_dtype_name(t->dtype));
	if (!shape_is(t, ndim, a, b)) {
		shape_str(t, got, sizeof got);
		if (ndim == 1)
			return masq_err_set(err, MASQ_ERR_FORMAT,
			    "%s: tensor '%s' has shape %s, expected [%lld] from config.json",
			    st_set_file_path(&m->st, t), name, got, (long long)a);
		return masq_err_set(err, MASQ_ERR_FORMAT,
		    "%s: tensor '%s' has shape %s, expected [%lld, %lld] from config.json",
		    st_set_file_path(&m->st, t), name, got, (long long)a, (long long)b);
	}
	return 0;
}

int
model_open(model *m, const char *dir, masq_err *err)
{
	return model_open_prefix(m, dir, NULL, err);
}

int
model_open_prefix(model *m, const char *dir, const char *given, masq_err *err)
{
	char name[256], why[160], *cfgpath;
	const model_config *c = &m->cfg;

	memset(m, 0, sizeof *m);
	m->dir = xstrdup(dir);
	cfgpath = masq_path_join(dir, "config.json");
	if (masq_check_within(dir, cfgpath, err) < 0 || model_config_load(&m->cfg, cfgpath, err) < 0) {
		free(cfgpath);
		free(m->dir);
		m->dir = NULL;
		return -1;
	}
	free(cfgpath);
	if (st_set_open_dir(&m->st, dir, err) < 0) {
		free(m->dir);
		m->dir = NULL;
		return -1;
	}
	if (given != NULL) {
		size_t gl = strlen(given);
		if (gl == 0 || gl + 2 > sizeof m->prefix) {
			masq_err_set(err, MASQ_ERR_USAGE, "--layer-prefix: '%s' is not a tensor prefix", given);
			goto fail;
		}
		snprintf(m->prefix, sizeof m->prefix, "%s%s", given, given[gl - 1] == '.' ? "" : ".");
		snprintf(name, sizeof name, "%s0.input_layernorm.weight", m->prefix);
		if (st_set_find(&m->st, name) == NULL) {
			masq_err_set(err, MASQ_ERR_USAGE, "--layer-prefix %s: %s has no tensor %s", given, dir, name);
			goto fail;
		}
	}
	for (int i = 0; m->prefix[0] == '\0' && layer_prefixes[i] != NULL; i++) {
		snprintf(name, sizeof name, "%s0.input_layernorm.weight", layer_prefixes[i]);
		if (st_set_find(&m->st, name) != NULL) {
			snprintf(m->prefix, sizeof m->prefix, "%s", layer_prefixes[i]);
			break;
		}
	}
	if (m->prefix[0] == '\0') {
		/* not a known prefix: the decoder is where "layers.0.input_layernorm.weight"
		 * is (Idefics3's model.text_model., MiniCPM-V's llm.model.), if it is
		 * in one place only */
		static const char tail[] = "layers.0.input_layernorm.weight";
		int found = 0;
		char other[64] = "";
		for (int i = 0; i < m->st.ntensors; i++) {
			const char *tn = m->st.index[i]->name;
			size_t n = strlen(tn), tl = strlen(tail);
			if (n < tl || strcmp(tn + n - tl, tail) != 0 || n - tl + strlen("layers.") >= sizeof m->prefix)
				continue;
			if (found++ == 0)
				snprintf(m->prefix, sizeof m->prefix, "%.*slayers.", (int)(n - tl), tn);
			else
				snprintf(other, sizeof other, "%.*slayers.", (int)(n - tl), tn);
		}
		if (found > 1) {
			masq_err_set(err, MASQ_ERR_FORMAT, "%s: decoder layers under two prefixes, %s and %s: which is the "
			    "language model is not clear (name it with --layer-prefix)", dir, m->prefix, other);
			goto fail;
		}
	}
	if (m->prefix[0] == '\0') {
		masq_err_set(err, MASQ_ERR_FORMAT,
		    "%s: no decoder layers found (no tensor named ...layers.0.input_layernorm.weight; looked first for "
		    "model.layers.0..., model.language_model.layers.0..., language_model.model.layers.0..., "
		    "thinker.model.layers.0...)", dir);
		goto fail;
	}
	model_tensor_name(m, 0, "self_attn.q_proj.bias", name, sizeof name);
	m->cfg.qkv_bias = st_set_find(&m->st, name) != NULL;

	for (int l = 0; l < c->n_layers; l++) {
		snprintf(why, sizeof why, "layer %d of %d, %s", l, c->n_layers,
		    c->arch[0] ? c->arch : "decoder");
		model_tensor_name(m, l, "input_layernorm.weight", name, sizeof name);
		if (check_tensor(m, name, 1, c->hidden, 0, why, err) < 0)
			goto fail;
		model_tensor_name(m, l, "post_attention_layernorm.weight", name, sizeof name);
		if (check_tensor(m, name, 1, c->hidden, 0, why, err) < 0)
			goto fail;
		for (int k = 0; k < LIN_COUNT; k++) {
			int out, in;
			char sfx[96];
			layer_lin_shape(c, k, &out, &in);
			snprintf(sfx, sizeof sfx, "%s.weight", lin_paths[k]);
			model_tensor_name(m, l, sfx, name, sizeof name);
			if (check_tensor(m, name, 2, out, in, why, err) < 0)
				goto fail;
			snprintf(sfx, sizeof sfx, "%s.bias", lin_paths[k]);
			model_tensor_name(m, l, sfx, name, sizeof name);
			int needed = c->qkv_bias && (k == LIN_Q || k == LIN_K || k == LIN_V);
			if ((needed || st_set_find(&m->st, name) != NULL) &&
			    check_tensor(m, name, 1, out, 0, why, err) < 0)
				goto fail;
		}
		for (int i = 0; c->qk_norm && i < 2; i++) {
			model_tensor_name(m, l, i ? "self_attn.k_norm.weight" : "self_attn.q_norm.weight", name, sizeof name);
			if (check_tensor(m, name, 1, c->head_dim, 0, why, err) < 0)
				goto fail;
		}
	}

	/* Every tensor under the layer prefix is one the engine uses: a
	 * per-layer tensor it would ignore (Qwen3's q_norm and k_norm, a
	 * layer past num_hidden_layers) means a wrong answer, so it is refused. */
	size_t pl = strlen(m->prefix);
	for (int i = 0; i < m->st.ntensors; i++) {
		const char *tn = m->st.index[i]->name, *rest;
		char *end;
		if (strncmp(tn, m->prefix, pl) != 0)
			continue;
		long l = strtol(tn + pl, &end, 10);
		int known = end != tn + pl && *end == '.' && l >= 0 && l < c->n_layers;
		rest = known ? end + 1 : "";
		/* older Llama checkpoints carry RoPE's inverse frequencies as a
		 * buffer; masq computes them from rope_theta */
		if (known && strcmp(rest, "self_attn.rotary_emb.inv_freq") == 0)
			continue;
		if (known && c->qk_norm && (strcmp(rest, "self_attn.q_norm.weight") == 0 ||
		    strcmp(rest, "self_attn.k_norm.weight") == 0))
			continue;
		if (known && strcmp(rest, "input_layernorm.weight") != 0 && strcmp(rest, "post_attention_layernorm.weight") != 0) {
			known = 0;
			for (int k = 0; k < LIN_COUNT && !known; k++) {
				size_t n = strlen(lin_paths[k]);
				known = strncmp(rest, lin_paths[k], n) == 0 &&
				    (strcmp(rest + n, ".weight") == 0 || strcmp(rest + n, ".bias") == 0);
			}
		}
		if (!known) {
			masq_err_set(err, MASQ_ERR_FORMAT, "%s: tensor '%s' is not one masq's decoder layer uses (%s); "
			    "running without it would be wrong", dir, tn, end != tn + pl && *end == '.' && l >= c->n_layers ?
			    "its layer is past num_hidden_layers" : strstr(tn, "q_norm") || strstr(tn, "k_norm") ?
			    "per-head q/k norms are Qwen3's, and the config's model_type is not a Qwen3 one" :
			    "an architecture masq does not run");
			goto fail;
		}
	}

	/* Embedding, final norm and head: optional for the decoder pass, but
	 * when present they must fit the config. */
	char root[64];
	size_t plen = strlen(m->prefix) - strlen("layers.");
	snprintf(root, sizeof root, "%.*s", (int)plen, m->prefix);
	snprintf(name, sizeof name, "%sembed_tokens.weight", root);
	if (st_set_find(&m->st, name) != NULL) {
		const st_tensor *t = st_set_find(&m->st, name);
		if (check_tensor(m, name, 2, c->vocab ? c->vocab : t->shape[0], c->hidden,
		    "embedding table", err) < 0)
			goto fail;
		m->embed_name = xstrdup(name);
	}
	snprintf(name, sizeof name, "%snorm.weight", root);
	if (st_set_find(&m->st, name) != NULL) {
		if (check_tensor(m, name, 1, c->hidden, 0, "final norm", err) < 0)
			goto fail;
		m->norm_name = xstrdup(name);
	}
	if (strncmp(m->prefix, "thinker.", 8) == 0)
		snprintf(name, sizeof name, "thinker.lm_head.weight");
	else if (strncmp(m->prefix, "language_model.", 15) == 0)
		snprintf(name, sizeof name, "language_model.lm_head.weight");
	else
		snprintf(name, sizeof name, "lm_head.weight");
	if (st_set_find(&m->st, name) != NULL) {
		const st_tensor *t = st_set_find(&m->st, name);
		if (check_tensor(m, name, 2, c->vocab ? c->vocab : t->shape[0], c->hidden,
		    "output head", err) < 0)
			goto fail;
		m->lm_head_name = xstrdup(name);
	} else if (c->tied_embeddings && m->embed_name != NULL) {
		m->lm_head_name = xstrdup(m->embed_name);
	}
	return 0;
fail:
	model_close(m);
	return -1;
}

void
model_close(model *m)
{
	if (m->dir != NULL && m->st.dir != NULL)
		st_set_close(&m->st);
	free(m->dir);
	free(m->embed_name);
	free(m->norm_name);
	free(m->lm_head_name);
	memset(m, 0, sizeof *m);
}

uint64_t
model_param_count(const model *m)
{
	uint64_t n = 0;
	for (int i = 0; i < m->st.ntensors; i++) {
		const st_tensor *t = m->st.index[i];
		if (st_dtype_is_float(t->dtype))
			n += t->nelem;
	}
	return n;
}

/* Tensor suffix of layer as float32 (NULL when absent); *bad gets -1, or
 * the index of its first value that is not finite (a corrupt checkpoint). */
static float *
load_f32(const model *m, int layer, const char *suffix, int64_t *bad)
{
	char name[256];
	const st_tensor *t;

	model_tensor_name(m, layer, suffix, name, sizeof name);
	t = st_set_find(&m->st, name);
	*bad = -1;
	if (t == NULL)
		return NULL;
	float *x = st_tensor_to_f32(t);
	st_tensor_release(t);	/* the float copy is what the layer uses */
	for (uint64_t i = 0; i < t->nelem; i++)
		if (!isfinite(x[i])) {
			*bad = (int64_t)i;
			break;
		}
	return x;
}

int
model_tensor_check_finite(const st_tensor *t, int64_t *bad, double *value)
{
	*bad = -1;
	if (!st_dtype_is_float(t->dtype))
		return 0;
	/* a block at a time, so a large tensor never exists twice */
	enum { BLOCK = 1 << 16 };
	float buf[BLOCK];
	size_t es = st_dtype_size(t->dtype);
	for (uint64_t i0 = 0; i0 < t->nelem; i0 += BLOCK) {
		uint64_t n = t->nelem - i0 < BLOCK ? t->nelem - i0 : BLOCK;
		st_to_f32(buf, (const char *)t->data + (size_t)i0 * es, t->dtype, (size_t)n);
		for (uint64_t i = 0; i < n; i++)
			if (!isfinite(buf[i])) {
				*bad = (int64_t)(i0 + i);
				*value = buf[i];
				return 1;
			}
	}
	st_tensor_release(t);	/* a scan of the whole checkpoint keeps none of it resident */
	return 0;
}

/* Which load a layer_weights is (its gen): one thread loads weights. */
static uint64_t weight_loads;

int
layer_weights_load(layer_weights *w, const model *m, int layer, masq_err *err)
{
	return layer_weights_load_parts(w, m, layer, 1, err);
}

int
layer_weights_load_parts(layer_weights *w, const model *m, int layer, int linears, masq_err *err)
{
	const model_config *c = &m->cfg;

	memset(w, 0, sizeof *w);
	if (layer < 0 || layer >= c->n_layers)
		return masq_err_set(err, MASQ_ERR_USAGE, "layer %d is out of range (the model has %d)",
		    layer, c->n_layers);
	w->gen = ++weight_loads;
	w->layer = layer;
	w->hidden = c->hidden;
	w->q_dim = c->n_heads * c->head_dim;
	w->kv_dim = c->n_kv_heads * c->head_dim;
	w->inter = c->intermediate;
	/* model_open checked presence, dtype and shape of everything here;
	 * the values are checked as they are converted */
	int64_t bad;
	char sfx[96], name[256];
	const char *what = NULL;
	w->attn_norm = load_f32(m, layer, what = "input_layernorm.weight", &bad);
	if (bad < 0)
		w->mlp_norm = load_f32(m, layer, what = "post_attention_layernorm.weight", &bad);
	for (int k = 0; k < LIN_COUNT && bad < 0; k++) {
		snprintf(sfx, sizeof sfx, "%s.weight", lin_paths[k]);
		if (linears) {
			w->w[k] = load_f32(m, layer, sfx, &bad);
			what = sfx;
			if (bad >= 0)
				break;
			MASQ_ASSERT(w->w[k] != NULL);
		}
		snprintf(sfx, sizeof sfx, "%s.bias", lin_paths[k]);
		w->b[k] = load_f32(m, layer, what = sfx, &bad);
	}
	if (bad < 0 && c->qk_norm) {
		w->q_norm = load_f32(m, layer, what = "self_attn.q_norm.weight", &bad);
		if (bad < 0)
			w->k_norm = load_f32(m, layer, what = "self_attn.k_norm.weight", &bad);
		MASQ_ASSERT(bad >= 0 || (w->q_norm != NULL && w->k_norm != NULL));
	}
	if (bad >= 0) {
		model_tensor_name(m, layer, what, name, sizeof name);
		layer_weights_done(w);
		return masq_err_set(err, MASQ_ERR_FORMAT,
		    "tensor %s: element %lld is not a finite number: the checkpoint is corrupt", name, (long long)bad);
	}
	MASQ_ASSERT(w->attn_norm != NULL && w->mlp_norm != NULL);
	return 0;
}

int
layer_weight_fetch(layer_weights *w, const model *m, int lin, masq_err *err)
{
	MASQ_ASSERT(lin >= 0 && lin < LIN_COUNT);
	if (w->w[lin] != NULL)
		return 0;
	char sfx[96], name[256];
	int64_t bad;
	snprintf(sfx, sizeof sfx, "%s.weight", lin_paths[lin]);
	float *x = load_f32(m, w->layer, sfx, &bad);
	/* model_open checked that it is there, with its dtype and shape */
	MASQ_ASSERT(x != NULL);
	if (bad >= 0) {
		free(x);
		model_tensor_name(m, w->layer, sfx, name, sizeof name);
		return masq_err_set(err, MASQ_ERR_FORMAT,
		    "tensor %s: element %lld is not a finite number: the checkpoint is corrupt", name, (long long)bad);
	}
	/* a new array, perhaps at a freed one's address: caches keyed on
	 * (gen, address) must not take it for the old one */
	w->gen = ++weight_loads;
	w->w[lin] = x;
	return 0;
}

void
layer_weights_done(layer_weights *w)
{
	free(w->attn_norm);
	free(w->mlp_norm);
	free(w->q_norm);
	free(w->k_norm);
	for (int k = 0; k < LIN_COUNT; k++) {
		free(w->w[k]);
		free(w->b[k]);
	}
	memset(w, 0, sizeof *w);
}

int
model_deepstack_check(const model_config *c, int n, masq_err *err)
{
	if (n > 0 && !c->mrope_interleaved)
		return masq_err_set(err, MASQ_ERR_USAGE, "the calibration set carries deepstack features, which only "
		    "Qwen3-VL adds; this model is %s", c->model_type[0] ? c->model_type : c->arch[0] ? c->arch : "another");
	if (n > 0 && n >= c->n_layers)
		return masq_err_set(err, MASQ_ERR_USAGE, "the calibration set has %d deepstack features for a model of "
		    "%d layers: they join after layers 0 to %d, before the last", n, c->n_layers, c->n_layers - 2);
	return 0;
}
