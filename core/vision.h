/*
 * vision.h: Qwen2.5-VL's vision tower (transformers' modeling_qwen2_5_vl.py,
 * Qwen2_5_VisionTransformerPretrainedModel) on BLAS, one block of weights
 * at a time, for the calibration builder:
 *
 *   patch embedding   the Conv3d over (channel, frame pair, 14, 14) as a GEMM
 *   blocks            h += proj(attn(rope2d(qkv(rmsnorm(h)))));
 *                     h += down(silu(gate(n)) * up(n)), n = rmsnorm(h)
 *                     attention within 2-D windows of window_size pixels,
 *                     over the whole image in fullatt_block_indexes
 *   merger            rmsnorm, 2x2 patches concatenated, Linear, GELU, Linear
 *
 * The blocks run on the patches in window order, as the model does; what
 * comes out (and what a hook sees) is in the processor's patch order.
 * Every kernel has a plain twin (loops, double sums): vit_forward(..., 1).
 *
 *	vit_model v;
 *	if (vit_open(&v, "model", &err) < 0) ...
 *	float *feat;   (tokens = patches / merge^2, v.cfg.out_hidden wide)
 *	if (vit_forward(&v, 1, &pixels, &grid, &feat, 0, NULL, NULL, &err) < 0) ...
 *	vit_close(&v);
 */
#ifndef MASQ_VISION_H
#define MASQ_VISION_H

#include "core/safetensors.h"
#include "core/util.h"

#define VIT_MAX_DEPTH 256

typedef struct vit_config {
	int depth;		/* depth: 32 */
	int hidden;		/* hidden_size: 1280 */
	int inter;		/* intermediate_size: 3420 */
	int n_heads;		/* num_heads: 16 */
	int head_dim;		/* hidden / n_heads */
	int out_hidden;		/* out_hidden_size: the language model's width */
	int in_chans;		/* in_chans: 3 */
	int patch;		/* patch_size: 14 */
	int merge;		/* spatial_merge_size: 2 */
	int temporal;		/* temporal_patch_size: 2 */
	int window;		/* window_size in pixels: 112 */
	unsigned char full[VIT_MAX_DEPTH];	/* 1: block attends over the whole frame */
	float eps;		/* the blocks' and merger's RMSNorm: 1e-6 */
	double theta;		/* the 2-D rotary's base: 10000 */
} vit_config;

typedef struct vit_model {
	vit_config cfg;
	st_set st;
	char prefix[32];	/* "visual." or "model.visual." */
} vit_model;

/* Read config.json's vision_config (Qwen2.5-VL); -1 with err naming what
 * is missing or not supported (Qwen2-VL's LayerNorm tower, another act). */
int vit_config_load(vit_config *c, const char *config_path, masq_err *err);
/* Open DIR's vision tower: its config and every tensor of it, checked for
 * shape and float dtype. */
int vit_open(vit_model *v, const char *dir, masq_err *err);
void vit_close(vit_model *v);

/* Called with the hidden state of image `image` after block `block` (-1:
 * after the patch embedding), n patches x d, in the processor's order. */
typedef void (*vit_hook)(void *ctx, int image, int block, const float *h, int n, int d);

/* Run the tower on n images: pixels[i] as vl_patchify lays them out,
 * grid[i] its (t, h, w) patch counts.  out[i] gets a new array of
 * (t * h * w / merge^2, out_hidden) features in the processor's order.
 * plain: the reference twin.  A weight that is not finite or a grid that
 * does not fit is MASQ_ERR_FORMAT naming it. */
int vit_forward(const vit_model *v, int n, float *const *pixels, const int (*grid)[3], float **out, int plain,
    vit_hook hook, void *hook_ctx, masq_err *err);

/* Qwen2.5-VL's get_window_index for one image: the merge units in window
 * order into order (grid_t * grid_h/merge * grid_w/merge entries) and the
 * cumulative patch counts of its windows into cu (empty windows dropped);
 * returns how many windows. */
int vit_window_index(const vit_config *c, const int grid[3], int *order, int *cu);

#endif
