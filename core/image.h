/*
 * image.h: images for the calibration builder, decoded and resized the way
 * the Hugging Face image processors' Pillow path does it, so that masq's
 * pixels are the reference's pixels:
 *
 *   - PNG (libpng) and JPEG (libjpeg-turbo), decoded to 8-bit RGB as
 *     Pillow's Image.convert("RGB") gives them: alpha dropped (not
 *     composited), grey replicated, palettes looked up, 16-bit samples cut
 *     to their high byte, no gamma, no EXIF rotation;
 *   - Image.resize with Pillow's filters (BICUBIC for Qwen2-VL), its
 *     fixed-point coefficients and its 8-bit rounding between the
 *     horizontal and the vertical pass, to the bit;
 *   - Qwen2-VL's image processor: smart_resize, rescale, normalize and the
 *     patch layout its vision tower reads.
 *
 *	masq_image im, r;
 *	if (image_load(&im, "cat.jpg", &err) < 0) ...
 *	vl_preproc pp;  vl_preproc_defaults(&pp);   (or vl_preproc_load)
 *	int h, w;
 *	if (vl_smart_resize(&pp, im.h, im.w, &h, &w, &err) < 0) ...
 *	image_resize(&im, w, h, pp.resample, &r);
 *	float *px; int grid[3];
 *	vl_patchify(&pp, &r, &px, grid);
 */
#ifndef MASQ_IMAGE_H
#define MASQ_IMAGE_H

#include <stdint.h>

#include "core/util.h"

typedef struct masq_image {
	int w, h;
	unsigned char *rgb;	/* (h, w, 3) */
} masq_image;

/* Pillow's limit before it calls an image a decompression bomb. */
#define IMAGE_MAX_PIXELS 178956970L

/* Decode a PNG or a JPEG (told apart by their signatures) to 8-bit RGB.
 * Refused by name: other formats, truncated or corrupt files, CMYK JPEGs,
 * 16-bit grey PNGs (Pillow clips those to 255 rather than scaling them),
 * images above IMAGE_MAX_PIXELS. */
int image_load(masq_image *im, const char *path, masq_err *err);
void image_free(masq_image *im);
/* The size of a PNG or JPEG from its header (libpng's and libjpeg's
 * header reads, nothing decoded), with image_load's limits. */
int image_probe(const char *path, int *w, int *h, masq_err *err);

/* Pillow's filters, by the numbers Pillow gives them. */
enum { IMG_NEAREST = 0, IMG_LANCZOS = 1, IMG_BILINEAR = 2, IMG_BICUBIC = 3, IMG_BOX = 4, IMG_HAMMING = 5 };
/* Pillow's Image.resize((w, h), filter) of an RGB image, bit for bit
 * (filters 1 to 5; NEAREST is another algorithm and is not offered). */
void image_resize(const masq_image *in, int w, int h, int filter, masq_image *out);

/* Qwen2-VL's image processor settings (preprocessor_config.json). */
typedef struct vl_preproc {
	int patch;		/* patch_size: 14 */
	int temporal;		/* temporal_patch_size: 2 */
	int merge;		/* merge_size: 2 */
	long min_pixels, max_pixels;	/* 56*56, 28*28*1280 */
	int resample;		/* 3: BICUBIC */
	int do_resize, do_rescale, do_normalize;
	double rescale;		/* rescale_factor: 1/255 */
	float mean[3], std[3];	/* image_mean, image_std */
} vl_preproc;

/* The processor class's defaults. */
void vl_preproc_defaults(vl_preproc *p);
/* DIR/preprocessor_config.json over the defaults; a missing file is an
 * error (the model has no image processor), a bad value is named. */
int vl_preproc_load(vl_preproc *p, const char *model_dir, masq_err *err);
/* The same from a preprocessor_config.json anywhere. */
int vl_preproc_read(vl_preproc *p, const char *path, masq_err *err);
/* Qwen2-VL's smart_resize as transformers 4.49 to 4.52 have it (the
 * reference's): both sides multiples of patch * merge, the area within
 * [min_pixels, max_pixels], the aspect ratio kept; refused (naming the
 * size) with a side below the factor, past an aspect of 200, or when the
 * shrinking takes a side to 0. */
int vl_smart_resize(const vl_preproc *p, int h, int w, int *out_h, int *out_w, masq_err *err);
/* Rescale, normalize and lay out one resized image as the processor does:
 * *pixels a new (grid_t * grid_h * grid_w, 3 * temporal * patch * patch)
 * float32 array, grid the (t, h, w) patch counts. */
void vl_patchify(const vl_preproc *p, const masq_image *im, float **pixels, int grid[3]);

#endif
