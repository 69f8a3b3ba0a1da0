/*
 * model.h: a Hugging Face decoder checkpoint (Qwen2 / Llama family, as the
 * text backbone of Qwen2.5-VL, Qwen2.5-Omni's thinker, or LLaVA-style
 * models; Qwen3 and Qwen3-VL's dense decoder, with per-head q/k norms and
 * interleaved M-RoPE), opened over mmap and read one decoder layer at a
 * time.
 *
 *	model m;
 *	if (model_open(&m, "demo/model", &err) < 0) ...
 *	layer_weights w;
 *	for (int l = 0; l < m.cfg.n_layers; l++) {
 *		if (layer_weights_load(&w, &m, l, &err) < 0) ...
 *		... engine_layer_forward(&eng, &w, ...);
 *		layer_weights_done(&w);
 *	}
 *	model_close(&m);
 */
#ifndef MASQ_MODEL_H
#define MASQ_MODEL_H

#include "core/safetensors.h"
#include "core/util.h"

/* The seven linears of a decoder layer, in forward order. */
enum lin_id { LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN, LIN_COUNT };
/* "q_proj", "k_proj", ... */
const char *lin_name(int lin);
/* "self_attn.q_proj", "mlp.down_proj", ... (the module path inside a layer) */
const char *lin_path(int lin);
/* Parse "q", "q_proj" or "self_attn.q_proj"; -1 when unknown. */
int lin_parse(const char *s);

/* The config fields whose source model_config records (model_config.src). */
enum cfg_src_id { CS_HIDDEN, CS_LAYERS, CS_HEADS, CS_INTER, CS_KV, CS_HEAD_DIM, CS_VOCAB, CS_EPS, CS_THETA, CS_MROPE,
	CFG_NSRC };
extern const char *const cfg_src_names[CFG_NSRC];

typedef struct model_config {
	char arch[96];		/* architectures[0], e.g. Qwen2_5_VLForConditionalGeneration */
	char model_type[64];	/* of the text config, e.g. qwen2_5_vl_text / qwen2 / llama */
	char text_source[32];	/* where the text config was found: "", "text_config", "thinker_config.text_config" */
	int hidden;		/* hidden_size */
	int n_layers;		/* num_hidden_layers */
	int n_heads;		/* num_attention_heads */
	int n_kv_heads;		/* num_key_value_heads */
	int head_dim;		/* head_dim, or hidden / n_heads */
	int intermediate;	/* intermediate_size */
	int vocab;		/* vocab_size (0 if absent) */
	float rms_eps;		/* rms_norm_eps */
	double rope_theta;	/* rope_theta */
	int mrope;		/* 1 when rope_scaling carries mrope_section */
	int mrope_section[3];	/* t, h, w frequency counts; sum == head_dim / 2 */
	int mrope_interleaved;	/* Qwen3-VL: frequency i takes row h when i % 3 == 1 and
				   i < 3 * section[1], w when i % 3 == 2 and i < 3 * section[2],
				   else t; otherwise (Qwen2-VL) consecutive chunks t, h, w */
	int qk_norm;		/* Qwen3: RMSNorm of each head of q and k (head_dim weights,
				   rms_eps) after the projection, before RoPE */
	int qkv_bias;		/* q/k/v have biases (from the tensors present) */
	int tied_embeddings;	/* tie_word_embeddings */
	/* where each value came from: "text_config.hidden_size",
	 * "text_config.rope_parameters.rope_theta", "the family's default" */
	char src[CFG_NSRC][64];
} model_config;

/* Parse config.json at path (top level, text_config or
 * thinker_config.text_config) and check the numbers are consistent. */
int model_config_load(model_config *c, const char *path, masq_err *err);

typedef struct model {
	char *dir;
	model_config cfg;
	st_set st;
	char prefix[64];	/* layer prefix, e.g. "model.language_model.layers." */
	char *embed_name;	/* embedding table tensor name, or NULL */
	char *norm_name;	/* final norm tensor name, or NULL */
	char *lm_head_name;	/* lm_head tensor name (the embedding when tied), or NULL */
} model;

/* Open DIR: config.json and the safetensors (sharded or not).  Checks that
 * every layer has every tensor of the declared architecture with a float
 * dtype and the shape the config implies. */
int model_open(model *m, const char *dir, masq_err *err);
/* The same with the decoder layers' prefix given ("model.text_model.layers.";
 * a trailing '.' is added when missing), or found as model_open does (NULL). */
int model_open_prefix(model *m, const char *dir, const char *prefix, masq_err *err);
void model_close(model *m);
/* Full tensor name of a layer tensor: prefix + N + "." + suffix. */
void model_tensor_name(const model *m, int layer, const char *suffix, char *buf, size_t n);
/* Number of parameters in the decoder layers, embeddings and head. */
uint64_t model_param_count(const model *m);

/* One decoder layer's weights in float32, owned, HF layout [out, in]. */
typedef struct layer_weights {
	int layer;
	uint64_t gen;		/* which load this is (a process-wide count): caches key on it */
	int hidden, q_dim, kv_dim, inter;	/* q_dim = n_heads*head_dim, kv_dim = n_kv*head_dim */
	float *attn_norm;	/* (hidden) input_layernorm */
	float *w[LIN_COUNT];	/* q (q_dim, hidden), k,v (kv_dim, hidden), o (hidden, q_dim),
				   gate, up (inter, hidden), down (hidden, inter) */
	float *b[LIN_COUNT];	/* biases (out) or NULL; q, k, v only in this family */
	float *mlp_norm;	/* (hidden) post_attention_layernorm */
	float *q_norm, *k_norm;	/* (head_dim) self_attn.q_norm, k_norm (cfg.qk_norm), else NULL */
} layer_weights;

/* 1 when float tensor t holds a value that is not finite: its index into
 * *bad and the value into *value (else *bad = -1, 0). */
int model_tensor_check_finite(const st_tensor *t, int64_t *bad, double *value);
/* Load (and convert to float32) layer `layer` of m; a value that is not
 * finite is MASQ_ERR_FORMAT naming the tensor and the element. */
int layer_weights_load(layer_weights *w, const model *m, int layer, masq_err *err);
/* The same; linears 0 leaves every w[k] NULL (the norms and biases are
 * loaded) for layer_weight_fetch to load one linear at a time. */
int layer_weights_load_parts(layer_weights *w, const model *m, int layer, int linears, masq_err *err);
/* Load linear lin's weight into w->w[lin] when it is NULL (freed, or left
 * out by layer_weights_load_parts); 0, or -1 with a message when the
 * checkpoint's values are not finite.  Changes w->gen. */
int layer_weight_fetch(layer_weights *w, const model *m, int lin, masq_err *err);
void layer_weights_done(layer_weights *w);
/* A calibration set with n deepstack features fits the model: only
 * Qwen3-VL takes them, after layers 0 .. n-1, before the last. */
int model_deepstack_check(const model_config *c, int n, masq_err *err);
/* Output and input size of linear lin. */
void layer_lin_shape(const model_config *c, int lin, int *out, int *in);

#endif
