/*
 * qplan.h: what quantizing one layer decided, enough to export it or run it
 * with deployment semantics without the calibration data: per linear, the
 * smoothing factor of each modality and the CMC factors.  The quantized
 * weights themselves are not kept: Q(W diag(s)) is recomputed from the
 * checkpoint's weights, deterministically, when needed.
 *
 * Deployment semantics (MASQuant, core/cmc.h): a token of modality m through
 * linear P gives
 *     y = Q_a(x / s_m) Q(W diag(s_base))^T + b  [+ (x / s_m) L1_m L2_m]
 * where s_base is the text factor for mas-cmc, m's own factor for mas (one
 * weight per modality), the shared factor for sq, and 1 for rtn and for
 * down_proj.  An absent factor (NULL) means 1.
 *
 * On disk (sessions, the masquant export) a plan is a safetensors file with
 * tensors "<lin>.smooth.<modality>" F32 [in] and "<lin>.cmc.<modality>.L1"
 * F32 [in, r], "<lin>.cmc.<modality>.L2" F32 [r, out], lin being q_proj ...
 * down_proj, and __metadata__ layer, method, wbits, abits, wgroup.
 */
#ifndef MASQ_QPLAN_H
#define MASQ_QPLAN_H

#include "core/calib.h"
#include "core/model.h"
#include "core/util.h"

typedef struct qplan_linear {
	int in, out;
	float *smooth[MOD_COUNT];	/* (in) or NULL for 1; owned (entries may be equal copies) */
	int base;			/* modality whose factor the stored weight carries (-1: none) */
	int rank[MOD_COUNT];		/* CMC rank per modality, 0 for none */
	float *L1[MOD_COUNT];		/* (in, rank) or NULL */
	float *L2[MOD_COUNT];		/* (rank, out) or NULL */
} qplan_linear;

typedef struct qplan_layer {
	int layer;
	int method;			/* enum method (core/smooth.h) */
	int wbits, abits, wgroup;
	qplan_linear lin[LIN_COUNT];
} qplan_layer;

void qplan_layer_init(qplan_layer *q, const model_config *c, int layer);
void qplan_layer_done(qplan_layer *q);
/* Write q to path as a safetensors file (see above). */
int qplan_write(const qplan_layer *q, const char *path, masq_err *err);
/* Read a plan written by qplan_write, checking its shapes against c. */
int qplan_read(qplan_layer *q, const model_config *c, const char *path, masq_err *err);

/* How far plan b is from plan a, for a replay in another numeric
 * environment.  What must be equal (layer, method, bits, group, each
 * linear's base modality, which factors exist, every CMC rank) is checked
 * first: -1 with what naming the first difference.  Otherwise 0 with
 * *fac the largest element-wise relative difference of the smoothing
 * factors and *cmc the largest relative (Frobenius) difference of a
 * compensation L1 L2 (the product: the factors themselves are defined up
 * to sign and rotation), fac_at and cmc_at naming where. */
int qplan_compare(const qplan_layer *a, const qplan_layer *b, double *fac, char *fac_at, double *cmc,
    char *cmc_at, size_t n_at, char *what, size_t n_what);

#endif
