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
 *  EXPORT_COMPRESSED_TENSORS  W8A8 int8 as vLLM loads it: per quantized
 *      linear P, "P.weight" I8 [out, in] and "P.weight_scale" F32 [out, 1]
 *      (symmetric per channel, dynamic per-token activations: no
 *      input_scale, no zero points); the factor of q,k,v is folded into
 *      input_layernorm (norm weight divided by s, the columns of q,k,v
 *      multiplied), gate,up's into post_attention_layernorm; o_proj and
 *      down_proj are quantized unsmoothed.  Only a unified factor can fold:
 *      for mas/mas-cmc the text factor of q (and of up) is used and the
 *      other modalities' factors, o_proj's factor and the compensation are
 *      dropped, which the report says.  Requires wbits 8.  config.json gains
 *      quantization_config (quant_method compressed-tensors, format
 *      int-quantized, one config group targeting Linear, ignore: lm_head and
 *      the vision/audio towers).
 *  EXPORT_MASQUANT  weights quantized with the base (text) factor: "P.weight"
 *      I8 [out, in] levels (W4 and below in the int8 container) and
 *      "P.weight_scale" F32 [out, 1]; plus masquant.safetensors with
 *      "P.smooth.{text,vision,audio}" F32 [in] and "P.cmc.{vision,audio}.{L1,L2}"
 *      F32 [in, r] and [r, out], and masquant.json (bits, method per layer,
 *      rank per linear and modality, base modality).  masquant.safetensors is
 *      not listed in the index, so strict loaders never see it.
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

/* The bytes of one element of the compensation factors (L1, L2) as the
 * masquant export stores them: what a rank costs on disk. */
int export_cmc_elem_bytes(void);
const char *export_cmc_dtype_name(void);

/* Fill *plan for layer l (the export calls qplan_layer_done on it). */
typedef int (*export_plan_fn)(void *ctx, int layer, qplan_layer *plan, masq_err *err);

typedef struct export_opts {
	int format;
	uint64_t shard_bytes;	/* default 4 GiB when 0 */
	const char *provenance;	/* JSON text written to masq-provenance.json */
} export_opts;

typedef struct export_report {
	int files;		/* files written */
	uint64_t bytes;		/* bytes written */
	int tensors;
	/* what the plan weighs, known before writing: the tensor data of the
	 * export's safetensors (shards and side file), of its compensation
	 * factors (L1/L2) among them, and of the source checkpoint */
	uint64_t planned_bytes, cmc_bytes, source_bytes;
	char dropped[1024];	/* what the format could not express, one sentence; "" if nothing */
} export_report;

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
