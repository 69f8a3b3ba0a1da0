/*
 * bench_vision.c: the vision tower's throughput (core/vision.c), images
 * per second over the images of a pixels file, the weights read from the
 * checkpoint one block at a time as masq calib reads them.
 *
 *	bench_vision MODEL_DIR PIXELS.safetensors [--threads N] [--repeat N]
 *
 * PIXELS holds image.{i}.pixel_values and image.{i}.grid_thw (as
 * bench/vision_torch.py writes them, which times PyTorch on the same
 * tower and pixels).  Prints "vision: images=N patches=N seconds=S
 * images_per_s=R" for scripts.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/engine.h"
#include "core/safetensors.h"
#include "core/vision.h"

int
main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: bench_vision MODEL_DIR PIXELS [--threads N] [--repeat N]\n");
		return 2;
	}
	int threads = 0, repeat = 1;
	for (int i = 3; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--threads") == 0)
			threads = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--repeat") == 0)
			repeat = atoi(argv[i + 1]);
	}
	if (threads > 0)
		masq_blas_set_threads(threads);
	masq_err err = {0};
	vit_model v;
	st_file f;
	if (vit_open(&v, argv[1], &err) < 0 || st_open(&f, argv[2], &err) < 0) {
		fprintf(stderr, "bench_vision: %s\n", err.msg);
		return 2;
	}
	int n = 0;
	char name[96];
	while (snprintf(name, sizeof name, "image.%d.pixel_values", n), st_find(&f, name) != NULL)
		n++;
	float **px = xcalloc((size_t)n + 1, sizeof *px), **out = xcalloc((size_t)n + 1, sizeof *out);
	int (*grid)[3] = xcalloc((size_t)n + 1, sizeof *grid);
	long patches = 0;
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof name, "image.%d.pixel_values", i);
		px[i] = st_tensor_to_f32(st_find(&f, name));
		snprintf(name, sizeof name, "image.%d.grid_thw", i);
		const st_tensor *g = st_find(&f, name);
		for (int k = 0; k < 3; k++) {
			int64_t x;
			memcpy(&x, (const char *)g->data + 8 * k, 8);
			grid[i][k] = (int)x;
		}
		patches += (long)grid[i][0] * grid[i][1] * grid[i][2];
	}
	double best = 1e30;
	for (int r = 0; r < repeat; r++) {
		double t0 = masq_now();
		if (vit_forward(&v, n, px, (const int (*)[3])grid, out, 0, NULL, NULL, &err) < 0) {
			fprintf(stderr, "bench_vision: %s\n", err.msg);
			return 2;
		}
		double dt = masq_now() - t0;
		best = dt < best ? dt : best;
		for (int i = 0; i < n; i++)
			free(out[i]);
	}
	printf("vision: images=%d patches=%ld seconds=%.3f images_per_s=%.3f\n", n, patches, best, n / best);
	for (int i = 0; i < n; i++)
		free(px[i]);
	free(px);
	free(out);
	free(grid);
	st_close(&f);
	vit_close(&v);
	return 0;
}
