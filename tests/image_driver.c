/*
 * image_driver.c: core/image.c from the command line, for tests/images.sh:
 *
 *	image_driver --config preprocessor_config.json --out OUT.safetensors
 *	    [--min-pixels N] [--max-pixels N] IMAGE ...
 *
 * writes, for each image i, image.{i}.resized (U8, (H, W, 3)),
 * image.{i}.pixel_values (F32, (patches, 3 T P P)) and image.{i}.grid_thw
 * (I64, (3)), the layout tests/ref_imageproc.py writes from transformers'
 * processor.  A refused image prints its message and exits 2.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/image.h"
#include "core/safetensors.h"

int
main(int argc, char **argv)
{
	const char *config = NULL, *out = NULL;
	long mn = -1, mx = -1;
	int i = 1;
	for (; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
		if (i + 1 >= argc)
			break;
		if (strcmp(argv[i], "--config") == 0)
			config = argv[i + 1];
		else if (strcmp(argv[i], "--out") == 0)
			out = argv[i + 1];
		else if (strcmp(argv[i], "--min-pixels") == 0)
			mn = atol(argv[i + 1]);
		else if (strcmp(argv[i], "--max-pixels") == 0)
			mx = atol(argv[i + 1]);
		else
			break;
	}
	if (config == NULL || out == NULL || i >= argc) {
		fprintf(stderr, "usage: image_driver --config FILE --out FILE [--min-pixels N] [--max-pixels N] IMAGE...\n");
		return 2;
	}
	masq_err err = {0};
	vl_preproc pp;
	if (vl_preproc_read(&pp, config, &err) < 0) {
		fprintf(stderr, "image_driver: %s\n", err.msg);
		return 2;
	}
	if (mn > 0)
		pp.min_pixels = mn;
	if (mx > 0)
		pp.max_pixels = mx;
	int n = argc - i;
	masq_image *res = xcalloc((size_t)n, sizeof *res);
	float **px = xcalloc((size_t)n, sizeof *px);
	int (*grid)[3] = xcalloc((size_t)n, sizeof *grid);
	st_writer *w = st_writer_new();
	int rc = 2;
	for (int k = 0; k < n; k++) {
		masq_image im;
		int h, wd;
		if (image_load(&im, argv[i + k], &err) < 0)
			goto fail;
		if (vl_smart_resize(&pp, im.h, im.w, &h, &wd, &err) < 0) {
			image_free(&im);
			goto fail;
		}
		if (pp.do_resize)
			image_resize(&im, wd, h, pp.resample, &res[k]);
		else
			res[k] = im, im.rgb = NULL;
		image_free(&im);
		vl_patchify(&pp, &res[k], &px[k], grid[k]);
		char name[64];
		int64_t s3[3] = {res[k].h, res[k].w, 3};
		int64_t s2[2] = {(int64_t)grid[k][0] * grid[k][1] * grid[k][2], 3L * pp.temporal * pp.patch * pp.patch};
		int64_t s1[1] = {3};
		snprintf(name, sizeof name, "image.%d.resized", k);
		st_writer_add(w, name, ST_U8, 3, s3, &err);
		snprintf(name, sizeof name, "image.%d.pixel_values", k);
		st_writer_add(w, name, ST_F32, 2, s2, &err);
		snprintf(name, sizeof name, "image.%d.grid_thw", k);
		st_writer_add(w, name, ST_I64, 1, s1, &err);
	}
	if (st_writer_begin(w, out, &err) < 0)
		goto fail;
	for (int k = 0; k < n; k++) {
		int64_t g[3] = {grid[k][0], grid[k][1], grid[k][2]};
		size_t np = (size_t)g[0] * g[1] * g[2] * 3 * pp.temporal * pp.patch * pp.patch;
		if (st_writer_write(w, res[k].rgb, (size_t)res[k].w * res[k].h * 3, &err) < 0 ||
		    st_writer_write(w, px[k], np * sizeof(float), &err) < 0 ||
		    st_writer_write(w, g, sizeof g, &err) < 0)
			goto fail;
	}
	if (st_writer_finish(w, &err) < 0)
		goto fail;
	rc = 0;
fail:
	if (rc != 0)
		fprintf(stderr, "image_driver: %s\n", err.msg);
	for (int k = 0; k < n; k++) {
		image_free(&res[k]);
		free(px[k]);
	}
	st_writer_free(w);
	free(res);
	free(px);
	free(grid);
	return rc;
}
