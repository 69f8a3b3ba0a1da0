/*
 * vision_driver.c: core/vision.c from the command line, for tests/vision.sh:
 *
 *	vision_driver MODEL_DIR PIXELS.safetensors OUT.safetensors [--blocks] [--plain]
 *
 * reads image.{i}.pixel_values and image.{i}.grid_thw (as tests/image_driver
 * and tests/ref_imageproc.py write them), runs the tower (--plain: the
 * reference twin) and writes image.{i}.merged and, with --blocks,
 * image.{i}.patch_embed and image.{i}.block.{b}, in the processor's patch
 * order: the layout tests/ref_vision.py writes.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/safetensors.h"
#include "core/vision.h"

typedef struct keep {
	int n_img, depth, d;
	float **h;	/* [n_img * (depth + 1)] */
	int *np;
} keep;

static void
hook(void *ctx, int image, int block, const float *h, int n, int d)
{
	keep *k = ctx;
	size_t at = (size_t)image * (k->depth + 1) + (size_t)(block + 1);
	k->h[at] = xmalloc(xmul((size_t)n * d, sizeof(float)));
	memcpy(k->h[at], h, (size_t)n * d * sizeof(float));
	k->np[image] = n;
	k->d = d;
}

int
main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: vision_driver MODEL_DIR PIXELS OUT [--blocks] [--plain]\n");
		return 2;
	}
	int blocks = 0, plain = 0;
	for (int i = 4; i < argc; i++) {
		blocks |= strcmp(argv[i], "--blocks") == 0;
		plain |= strcmp(argv[i], "--plain") == 0;
	}
	masq_err err = {0};
	vit_model v;
	st_file f;
	if (vit_open(&v, argv[1], &err) < 0 || st_open(&f, argv[2], &err) < 0) {
		fprintf(stderr, "vision_driver: %s\n", err.msg);
		return 2;
	}
	int n = 0;
	char name[96];
	for (;; n++) {
		snprintf(name, sizeof name, "image.%d.pixel_values", n);
		if (st_find(&f, name) == NULL)
			break;
	}
	float **px = xcalloc((size_t)n + 1, sizeof *px), **out = xcalloc((size_t)n + 1, sizeof *out);
	int (*grid)[3] = xcalloc((size_t)n + 1, sizeof *grid);
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof name, "image.%d.pixel_values", i);
		px[i] = st_tensor_to_f32(st_find(&f, name));
		snprintf(name, sizeof name, "image.%d.grid_thw", i);
		const st_tensor *g = st_find(&f, name);
		if (g == NULL || g->dtype != ST_I64 || g->nelem != 3) {
			fprintf(stderr, "vision_driver: %s is not I64 (3)\n", name);
			return 2;
		}
		for (int k = 0; k < 3; k++) {
			int64_t x;
			memcpy(&x, (const char *)g->data + 8 * k, 8);
			grid[i][k] = (int)x;
		}
	}
	keep k = {n, v.cfg.depth, 0, xcalloc((size_t)n * (v.cfg.depth + 1) + 1, sizeof(float *)),
		xcalloc((size_t)n + 1, sizeof(int))};
	if (vit_forward(&v, n, px, (const int (*)[3])grid, out, plain, blocks ? hook : NULL, &k, &err) < 0) {
		fprintf(stderr, "vision_driver: %s\n", err.msg);
		return 2;
	}
	st_writer *w = st_writer_new();
	int mm = v.cfg.merge * v.cfg.merge;
	for (int i = 0; i < n; i++) {
		int np = grid[i][0] * grid[i][1] * grid[i][2];
		snprintf(name, sizeof name, "image.%d.merged", i);
		st_writer_add(w, name, ST_F32, 2, (const int64_t[]){np / mm, v.cfg.out_hidden}, &err);
		for (int b = -1; blocks && b < v.cfg.depth; b++) {
			if (b < 0)
				snprintf(name, sizeof name, "image.%d.patch_embed", i);
			else
				snprintf(name, sizeof name, "image.%d.block.%d", i, b);
			st_writer_add(w, name, ST_F32, 2, (const int64_t[]){np, v.cfg.hidden}, &err);
		}
	}
	if (st_writer_begin(w, argv[3], &err) < 0) {
		fprintf(stderr, "vision_driver: %s\n", err.msg);
		return 2;
	}
	for (int i = 0; i < n; i++) {
		int np = grid[i][0] * grid[i][1] * grid[i][2];
		st_writer_write(w, out[i], (size_t)(np / mm) * v.cfg.out_hidden * sizeof(float), &err);
		for (int b = -1; blocks && b < v.cfg.depth; b++)
			st_writer_write(w, k.h[(size_t)i * (v.cfg.depth + 1) + (size_t)(b + 1)],
			    (size_t)np * v.cfg.hidden * sizeof(float), &err);
	}
	int rc = st_writer_finish(w, &err) < 0 ? 2 : 0;
	if (rc)
		fprintf(stderr, "vision_driver: %s\n", err.msg);
	st_writer_free(w);
	for (int i = 0; i < n; i++) {
		free(px[i]);
		free(out[i]);
	}
	for (size_t i = 0; i < (size_t)n * (v.cfg.depth + 1); i++)
		free(k.h[i]);
	free(k.h);
	free(k.np);
	free(px);
	free(out);
	free(grid);
	st_close(&f);
	vit_close(&v);
	return rc;
}
