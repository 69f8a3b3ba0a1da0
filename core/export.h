/*
 * export.h: writing a quantized model, shard by shard, where something can
 * load it.
 *
 * Inputs: the FP checkpoint (model.h), one quantization plan per decoder
 * layer (qplan.h; fetched through a callback, so only one layer is in memory
 * at a time), a format and a provenance JSON text.  Everything is written
 * into a temporary directory beside the target (".<name>.tmp-<pid>") and
 * renamed into place only when complete; an existing target is refused.
 * Non-weight files of the input model (every file that is not *.safetensors
 * or the index, e.g. tokenizer, processor and generation configs) are copied;
 * config.json is copied or amended; "masq-provenance.json" holds the
 * provenance text.  Shards roll over at shard_bytes.
 *
 * Formats:
 *  EXPORT_FAKE  the input's own layout and dtypes, each decoder linear
 *      replaced by its dequantized weight in the original space,
 *      Q(W diag(s)) diag(s)^-1, s the factor the stored weight carries (the
 *      text factor for mas/mas-cmc, the shared one for sq, 1 for rtn and
 *      down_proj).  Any framework runs it (weights only: no activation
 *      quantization, no per-modality path).
 *  EXPORT_COMPRESSED_TENSORS  what vLLM serves from integer weights, by
 *      the plans' bits (one scheme for every layer).  W8A8: "int-quantized",
 *      per quantized linear P "P.weight" I8 [out, in] and "P.weight_scale"
 *      F32 [out, 1] (symmetric per channel, dynamic per-token activations: no
 *      input_scale, no zero points).  W4A16 and W8A16: "pack-quantized",
 *      "P.weight_packed" I32 [out, in * bits / 32] (the values plus
 *      2^(bits-1), the first input in the low bits of each word),
 *      "P.weight_scale" in the checkpoint's dtype [out, in / group] or
 *      [out, 1], "P.weight_zero_point" I32 packed along the outputs (masq's
 *      asymmetric groups; 4 bits and groups of 32, 64, 128 only, as vLLM's
 *      Marlin kernels take), "P.weight_shape" I64 [2]; a group whose zero
 *      point falls outside the levels stops the export.  Either way the
 *      factor of q,k,v is folded into input_layernorm (norm weight divided
 *      by s, the columns of q,k,v multiplied), gate,up's into
 *      post_attention_layernorm; o_proj and down_proj are quantized
 *      unsmoothed.  Only a unified factor can fold: for mas/mas-cmc the text
 *      factor of q (and of up) is used and the other modalities' factors,
 *      o_proj's factor and the compensation are dropped, which the report
 *      says.  config.json gains quantization_config (quant_method
 *      compressed-tensors, the format, one config group targeting Linear,
 *      ignore by pattern: the head, the vision/audio towers, Omni's talker
 *      and codec).
 *  EXPORT_MASQUANT  weights quantized with the base (text) factor: "P.weight"
 *      I8 [out, in] levels (5 to 8 bits) or U8 [out, ceil(in / 2)], two
 *      4-bit levels per byte (4 bits and fewer), and "P.weight_scale" F32
 *      [out, 1]; plus masquant.safetensors with "P.smooth.{text,vision,audio}"
 *      F32 [in] and "P.cmc.{vision,audio}.{L1,L2}" [in, r] and [r, out] in
 *      export_opts.cmc_dtype (cmc_stored_dtype), and masquant.json (bits,
 *      container and method per layer, rank per linear and modality, base
 *      modality); config.json gains quantization_config naming quant_method
 *      "masquant", so other loaders refuse it.  masquant.safetensors is not
 *      listed in the index, so strict loaders never see it.
 *
 * Every export's report weighs it against the source, part by part
 * (enum export_part).
 */
#ifndef MASQ_EXPORT_H
#define MASQ_EXPORT_H

#include <stdint.h>

#include "core/model.h"
#include "core/qplan.h"
#include "core/util.h"

enum export_format { EXPORT_FAKE, EXPORT_COMPRESSED_TENSORS, EXPORT_MASQUANT, EXPORT_FORMAT_COUNT };
/* "fake", "compressed-tensors", "masquant" */
const char *export_format_name(int f);
int export_format_parse(const char *s);
/* What format f is and who loads it, one sentence; what it cannot express. */
const char *export_format_describe(int f);
const char *export_format_drops(int f);

/* The dtypes the masquant export stores the compensation factors (L1, L2)
 * in: F32, F16 (a tensor beyond F16's range stays F32) or BF16. */
int export_cmc_dtype_ok(int dtype);

/* Fill *plan for layer l (the export calls qplan_layer_done on it). */
typedef int (*export_plan_fn)(void *ctx, int layer, qplan_layer *plan, masq_err *err);

typedef struct export_opts {
	int format;
	uint64_t shard_bytes;	/* default 4 GiB when 0 */
	const char *provenance;	/* JSON text written to masq-provenance.json */
	int cmc_dtype;		/* masquant: st_dtype of L1 and L2, F32 (0), F16 or BF16 */
} export_opts;

/* What an export's bytes hold: decoder weights (levels, packed words or
 * dequantized floats), their scales and zero points (and weight_shape),
 * smoothing factors (masquant.safetensors and the folded norms are not:
 * norms count as other), the CMC low-rank matrices, everything else. */
enum export_part { EXPORT_PART_WEIGHTS, EXPORT_PART_SCALES, EXPORT_PART_FACTORS, EXPORT_PART_LOWRANK,
	EXPORT_PART_OTHER, EXPORT_PART_COUNT };
/* "weights", "scales", "factors", "low_rank", "other" */
const char *export_part_name(int p);

typedef struct export_report {
	int files;		/* files written */
	uint64_t bytes;		/* bytes written */
	int tensors;
	/* what the plan weighs, known before writing: the tensor data of the
	 * export's safetensors (shards and side file), of its compensation
	 * factors (L1/L2) among them, and of the source checkpoint */
	uint64_t planned_bytes, cmc_bytes, source_bytes;
	/* planned_bytes by what they hold (enum export_part) */
	uint64_t part_bytes[EXPORT_PART_COUNT];
	uint64_t source_weight_bytes;	/* the source's decoder linears among source_bytes */
	char dropped[1024];	/* what the format could not express, one sentence; "" if nothing */
} export_report;

/* The sizes of r in one line: the tensors against the source checkpoint,
 * then by part ("2.77 MB of tensors, 0.40x the checkpoint's 6.89 MB:
 * weights 1.44 MB (0.25x its 5.77 MB of decoder linears), scales ...").
 * Returns buf. */
char *export_report_sizes(const export_report *r, char *buf, size_t n);

/* Write m quantized by the plans to out_dir.  Exit statuses: usage errors
 * (existing out_dir, wrong bits for the format), I/O errors (a full disk:
 * the temporary directory is removed, out_dir never appears). */
int export_write(const model *m, export_plan_fn plan_fn, void *ctx, const export_opts *o,
    const char *out_dir, export_report *rep, masq_err *err);

/* What export_write would write, without writing: the tensors (name, dtype,
 * shape) as a JSON array text (a new string) and the report. */
char *export_preview(const model *m, export_plan_fn plan_fn, void *ctx, const export_opts *o,
    export_report *rep, masq_err *err);

#endif
