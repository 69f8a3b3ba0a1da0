/*
 * export_internal.h: what the files of the exports share: the job an
 * export runs (plans, output tensors, shards, side files), the cache of one
 * layer's computed tensors, and the format table, one entry per format
 * (export_fake.c, export_ct.c, export_masquant.c) with the hooks where the
 * formats differ.  Only core/export*.c include it.
 */
#ifndef MASQ_EXPORT_INTERNAL_H
#define MASQ_EXPORT_INTERNAL_H

#include <stdint.h>

#include <jansson.h>

#include "core/export.h"
#include "core/model.h"
#include "core/qplan.h"
#include "core/safetensors.h"

#define EXPORT_DEFAULT_SHARD (4ull << 30)

/* What an output tensor is made of. */
enum okind {
	OK_COPY,	/* the input tensor, byte for byte */
	OK_WEIGHT,	/* a decoder linear's weight (dequantized or levels) */
	OK_SCALE,	/* its weight_scale */
	OK_NORM,	/* a folded RMSNorm weight (compressed-tensors) */
	OK_SMOOTH,	/* masquant.safetensors: a factor */
	OK_L1, OK_L2,	/* masquant.safetensors: CMC factors */
	OK_PACKED,	/* compressed-tensors pack-quantized: weight_packed, I32 words */
	OK_ZP,		/* its weight_zero_point, packed along the output dimension */
	OK_WSHAPE	/* its weight_shape, I64 [2] */
};

typedef struct otensor {
	char *name;
	st_dtype dtype;
	int ndim;
	int64_t shape[ST_MAX_DIMS];
	uint64_t nbytes;
	int kind;		/* enum okind */
	const st_tensor *src;	/* OK_COPY: the source; OK_WEIGHT, OK_NORM: the tensor replaced */
	int layer, lin, mod;	/* OK_NORM: lin 0 input_layernorm, 1 post_attention_layernorm */
	int shard;
	int seq;		/* its place before export_align */
} otensor;

/* What the planning pass keeps of one layer's plan. */
typedef struct lsum {
	int method, wbits, abits, wgroup;
	int smoothed[LIN_COUNT];		/* the stored weight carries a factor */
	int permod[LIN_COUNT];			/* tokens use their own modality's factor (mas-cmc) */
	int rank[LIN_COUNT][MOD_COUNT];		/* CMC ranks */
	int cmc_dtype[LIN_COUNT][MOD_COUNT];	/* masquant: how L1, L2 are stored (cmc_stored_dtype) */
} lsum;

typedef struct xjob {
	const model *m;
	export_plan_fn plan_fn;
	void *ctx;
	int format;
	const struct export_format_ops *fmt;
	uint64_t shard_bytes;
	const char *provenance;
	int cmc_dtype;		/* masquant: L1 and L2 */
	int cmc_wide;		/* of those, kept in F32 (beyond F16's range) */
	lsum *ls;		/* (n_layers) */
	otensor *t;		/* (nt) the model's tensors, in writing order */
	int nt, tcap;
	int nshards;
	char **shard_file;	/* (nshards) */
	uint64_t *shard_size;	/* (nshards) file sizes, headers included */
	otensor *side;		/* (nside) masquant.safetensors, in writing order */
	int nside, sidecap;
	uint64_t side_size;
	char **copies;		/* (ncopies) input files copied verbatim */
	uint64_t *copy_size;
	int ncopies;
	char *config_text;	/* amended config.json, or NULL when copied */
	char *index_text;	/* model.safetensors.index.json, or NULL */
	char *manifest_text;	/* masquant.json, or NULL */
	char *prov_text;	/* masq-provenance.json */
	export_report rep;
} xjob;

/* One layer's computed tensors. */
typedef struct lcache {
	int layer;		/* -1: none */
	float *w[LIN_COUNT];	/* fake: (out, in) dequantized, original space */
	int8_t *q[LIN_COUNT];	/* (out, in) levels */
	float *scale[LIN_COUNT];	/* (out) or (out, groups) */
	unsigned char *packed[LIN_COUNT];	/* pack-quantized: (out, in / per word) I32 words, little-endian */
	unsigned char *zp[LIN_COUNT];	/* pack-quantized asymmetric: (ceil(out / per word), groups) words */
	float *norm[2];		/* compressed-tensors: (hidden) folded norms */
} lcache;

/* How many layers of each kind a job exports (what the formats drop). */
typedef struct export_counts {
	int mas, cmc, cmc_rank, act;	/* layers with mas, mas-cmc, a CMC rank, activation quantization */
	int layers;
} export_counts;

/* A format: where the formats differ, hooks the common passes call. */
typedef struct export_format_ops {
	const char *name;	/* as --format takes it */
	const char *describe;	/* what it is and who loads it, one sentence */
	const char *drops;	/* what it cannot express, in general */
	/* the format's demands on layer l's summary s: usage errors */
	int (*check)(const xjob *j, int l, const lsum *s, masq_err *err);
	/* the output tensors input tensor t becomes: t is linear lin (>= 0)
	 * or norm nm (>= 0) of decoder layer l, or neither (l -1) */
	void (*plan_tensor)(xjob *j, const st_tensor *t, int l, int lin, int nm);
	/* the files beside the weights (config.json, side files); may be NULL */
	int (*plan_files)(xjob *j, masq_err *err);
	/* what this job drops, into j->rep.dropped */
	void (*dropped)(xjob *j, const export_counts *n);
	/* linear k of layer l in c: Ws = W diag(s) (owned, s the stored
	 * factor, or the folded one), q its plan; an error (a value the
	 * format cannot hold) stops the export */
	int (*linear)(xjob *j, lcache *c, const qplan_layer *q, int k, float *Ws, const float *s, int out, int in,
	    masq_err *err);
	/* before the linears of a layer (compressed-tensors folds the
	 * factors into the norms): the factor each group's linears carry
	 * instead of their own, or NULL; may be NULL */
	void (*layer_begin)(xjob *j, lcache *c, const qplan_layer *q, const layer_weights *w, float *s_fold[2]);
	/* the side files after the shards; may be NULL */
	int (*write_files)(xjob *j, const char *dir, masq_err *err);
	int side_files;		/* how many files write_files writes */
} export_format_ops;

extern const export_format_ops export_fake_ops, export_ct_ops, export_masquant_ops;

/* ---- shared by the formats (export.c) ---- */
otensor *otensor_push(otensor **v, int *n, int *cap, const char *name, st_dtype dt, int ndim,
    const int64_t *shape, int kind);
/* The factor the stored weight of linear lin carries, or NULL for 1. */
const float *export_stored_factor(const qplan_layer *q, int lin);
/* Tokens of linear lin use their own modality's factor (mas-cmc). */
int export_per_modality(const qplan_layer *q, int lin);
/* Fetch layer l's plan through the callback and check it fits the model. */
int export_plan_get(xjob *j, int l, qplan_layer *q, masq_err *err);
/* Layer and linear (or norm) of a decoder tensor name, else -1. */
int export_decoder_tensor(const model *m, const char *name, int *layer, int *lin, int *norm);
/* A JSON document as text with a final newline (a new string). */
char *export_json_text(json_t *doc);
/* Order v (n) so that every tensor of a shard lands at a multiple of its
 * element size, keeping v's order where it can. */
void export_align(otensor *v, int n);
/* j->config_text: the input's config.json with qc (taken) as its
 * quantization_config. */
int export_config_amend(xjob *j, json_t *qc, masq_err *err);
/* A writer with the tensors of list v whose shard is `shard` (-1: all) declared. */
st_writer *export_declare(const otensor *v, int n, int shard, masq_err *err);
/* x (n) rounded to dtype dt's precision (F16, BF16; others unchanged). */
void export_round_to_dtype(float *x, size_t n, st_dtype dt);
/* Write text to dir/name, fsync'd. */
int export_write_text(const char *dir, const char *name, const char *text, size_t n, masq_err *err);
/* The decoder linear's weight as levels and scales: the tensors
 * compressed-tensors W8A8 and masquant write for input t; levels one per
 * byte (I8 [out, in]) or, u4x2, two per byte (U8 [out, ceil(in / 2)]). */
void export_plan_levels(xjob *j, const st_tensor *t, int l, int lin, int u4x2);

#endif
