/*
 * deploy.h: running an exported model with deployment semantics, layer by
 * layer, against the full-precision model it came from.
 *
 * The export directory is read as written by export.h, whatever its
 * format (recognised from its files):
 *   masquant            masquant.json (format version 1 or 2: I8 or U4x2
 *                       levels, L1/L2 in any float dtype) + masquant.safetensors beside the
 *                       shards: a token of modality m through linear P gives
 *                       y = Q_a(x / s_m) (P.weight * P.weight_scale)^T + b
 *                           [+ (x / s_m) L1_m L2_m]
 *                       with s_m = P.smooth.m, the activation bits of the
 *                       layer's manifest entry, the low-rank branch on the
 *                       unquantized x / s_m.  This is MASQuant's inference
 *                       and, product for product, the pipeline's quantized
 *                       linear (core/pipeline.c), so on the calibration set
 *                       that made the plans the numbers equal what the
 *                       pipeline measured for mas-cmc, sq and rtn;
 *   compressed-tensors  config.json's quantization_config: W8 int8 per
 *                       channel (weight * weight_scale) with activations
 *                       quantized per token at the configured bits (none
 *                       when input_activations is null), or pack-quantized
 *                       W4/W8 weights ((value - zero point) * scale, per
 *                       group or channel; symmetric: zero 2^(bits-1)) with
 *                       none, factors already in the norms, as vLLM runs it;
 *   anything else       a dense checkpoint (e.g. the fake export): the
 *                       plain float forward.
 * The FP reference runs in lockstep on its own hidden state; the measure
 * is the per-modality SQNR and MAE of each layer's output (core/metrics.h),
 * the summary that of the last layer, plus the KL of next-token
 * distributions at text positions when the models have a head.
 *
 *	calib c;  calib_load(&c, "calib.safetensors", 0, &err);
 *	deploy_result r;
 *	if (deploy_eval("out/masquant", "demo/model", NULL, &c, &r, &err) < 0) ...
 *	printf("%.2f dB\n", r.sqnr[MOD_VISION]);
 *	deploy_result_done(&r);
 *
 * Memory: one layer of each model plus two hidden states of the
 * calibration set.
 */
#ifndef MASQ_DEPLOY_H
#define MASQ_DEPLOY_H

#include "core/calib.h"
#include "core/stats.h"
#include "core/util.h"

typedef struct deploy_layer_result {
	double sqnr[STATS_ROWS];	/* layer output vs the FP layer output, dB; [STATS_ALL] all tokens */
	double mae[STATS_ROWS];
} deploy_layer_result;

typedef struct deploy_result {
	int format;		/* enum export_format; EXPORT_FAKE for any dense checkpoint */
	int n_layers;
	int wbits, abits;	/* as the export declares them (0: not declared) */
	deploy_layer_result *layers;	/* (n_layers), owned */
	double sqnr[STATS_ROWS];	/* of the last layer's output */
	double mae[STATS_ROWS];
	double kl_text;		/* mean KL at text positions; NAN without a head */
	double seconds;
} deploy_result;

/* Run export_dir and reference_dir on c and compare (see above). */
/* layer_prefix: the reference's decoder prefix (model_open_prefix), or NULL. */
int deploy_eval(const char *export_dir, const char *reference_dir, const char *layer_prefix, const calib *c,
    deploy_result *out, masq_err *err);
void deploy_result_done(deploy_result *r);

#endif
