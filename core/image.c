/*
 * image.c: PNG and JPEG to RGB as Pillow converts them, Pillow's resampling
 * (libImaging/Resample.c: the filter's support widened by the downscale
 * factor, coefficients normalized to sum one then to 22-bit fixed point,
 * each pass rounded and clipped to 8 bits, the horizontal pass first), and
 * Qwen2-VL's image processor (image_processing_qwen2_vl.py).  See image.h.
 */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "core/image.h"

void
image_free(masq_image *im)
{
	free(im->rgb);
	memset(im, 0, sizeof *im);
}

static int
size_ok(const char *path, long w, long h, masq_err *err)
{
	if (w <= 0 || h <= 0)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: an image of %ld x %ld pixels", path, w, h);
	if (w * h > IMAGE_MAX_PIXELS)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: %ld x %ld pixels is more than %ld (the limit past "
		    "which Pillow refuses an image as a decompression bomb)", path, w, h, IMAGE_MAX_PIXELS);
	return 0;
}

/* ---- PNG --------------------------------------------------------------- */

struct png_ctx {
	jmp_buf jb;
	char msg[256];
};

static void
png_fail(png_structp png, png_const_charp msg)
{
	struct png_ctx *c = png_get_error_ptr(png);
	snprintf(c->msg, sizeof c->msg, "%s", msg);
	longjmp(c->jb, 1);
}

static void
png_warn(png_structp png, png_const_charp msg)
{
	(void)png;
	(void)msg;	/* ancillary chunk trouble: Pillow reads on too */
}

static int
load_png(masq_image *im, FILE *fp, const char *path, int header_only, masq_err *err)
{
	struct png_ctx c = {0};
	png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &c, png_fail, png_warn);
	png_infop info = png ? png_create_info_struct(png) : NULL;
	unsigned char *volatile rgb = NULL;
	png_bytep *volatile rows = NULL;
	if (png == NULL || info == NULL)
		fatal("out of memory (libpng)");
	if (setjmp(c.jb)) {
		png_destroy_read_struct(&png, &info, NULL);
		free(rgb);
		free(rows);
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: not a readable PNG: %s", path, c.msg);
	}
	png_init_io(png, fp);
	png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
	png_read_info(png, info);
	png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
	int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
	if (size_ok(path, (long)w, (long)h, err) < 0) {
		png_destroy_read_struct(&png, &info, NULL);
		return -1;
	}
	if (header_only) {
		png_destroy_read_struct(&png, &info, NULL);
		im->w = (int)w;
		im->h = (int)h;
		return 0;
	}
	if (depth == 16 && type == PNG_COLOR_TYPE_GRAY) {
		png_destroy_read_struct(&png, &info, NULL);
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: a 16-bit greyscale PNG: Pillow, whose pixels the "
		    "reference preprocessing uses, clips such samples to 255 instead of scaling them; convert the "
		    "image to 8 bits first", path);
	}
	/* what Pillow's convert("RGB") makes of each PNG kind */
	if (type == PNG_COLOR_TYPE_PALETTE)
		png_set_palette_to_rgb(png);	/* the palette's colours; tRNS ignored */
	if (type == PNG_COLOR_TYPE_GRAY && depth < 8)
		png_set_expand_gray_1_2_4_to_8(png);
	if (depth == 16)
		png_set_strip_16(png);		/* the high byte, as Pillow's ;16B unpackers */
	/* alpha, and the alpha a palette's tRNS expands to: dropped, not
	 * composited */
	png_set_strip_alpha(png);
	if (type == PNG_COLOR_TYPE_GRAY || type == PNG_COLOR_TYPE_GRAY_ALPHA)
		png_set_gray_to_rgb(png);
	png_set_interlace_handling(png);
	png_read_update_info(png, info);
	if (png_get_rowbytes(png, info) != (size_t)w * 3)
		png_error(png, "unexpected row layout after conversion to RGB");
	rgb = xmalloc(xmul(xmul(w, h), 3));
	rows = xmalloc(xmul(h, sizeof *rows));
	for (png_uint_32 y = 0; y < h; y++)
		rows[y] = rgb + (size_t)y * w * 3;
	png_read_image(png, rows);
	png_read_end(png, NULL);
	png_destroy_read_struct(&png, &info, NULL);
	free(rows);
	im->w = (int)w;
	im->h = (int)h;
	im->rgb = rgb;
	return 0;
}

/* ---- JPEG -------------------------------------------------------------- */

struct jpg_ctx {
	struct jpeg_error_mgr pub;
	jmp_buf jb;
	int truncated;
};

static void
jpg_fail(j_common_ptr ci)
{
	struct jpg_ctx *c = (struct jpg_ctx *)ci->err;
	longjmp(c->jb, 1);
}

static void
jpg_message(j_common_ptr ci, int level)
{
	struct jpg_ctx *c = (struct jpg_ctx *)ci->err;
	/* Pillow refuses a truncated JPEG ("image file is truncated") */
	if (level < 0 && c->pub.msg_code == JWRN_JPEG_EOF)
		c->truncated = 1;
}

static int
load_jpeg(masq_image *im, FILE *fp, const char *path, int header_only, masq_err *err)
{
	struct jpeg_decompress_struct ci;
	struct jpg_ctx c;
	unsigned char *volatile rgb = NULL;
	memset(&c, 0, sizeof c);
	ci.err = jpeg_std_error(&c.pub);
	c.pub.error_exit = jpg_fail;
	c.pub.emit_message = jpg_message;
	if (setjmp(c.jb)) {
		char msg[JMSG_LENGTH_MAX];
		c.pub.format_message((j_common_ptr)&ci, msg);
		jpeg_destroy_decompress(&ci);
		free(rgb);
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: not a readable JPEG: %s", path, msg);
	}
	jpeg_create_decompress(&ci);
	jpeg_stdio_src(&ci, fp);
	jpeg_read_header(&ci, TRUE);
	if (ci.jpeg_color_space == JCS_CMYK || ci.jpeg_color_space == JCS_YCCK) {
		jpeg_destroy_decompress(&ci);
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: a CMYK JPEG; convert it to RGB first", path);
	}
	if (size_ok(path, (long)ci.image_width, (long)ci.image_height, err) < 0) {
		jpeg_destroy_decompress(&ci);
		return -1;
	}
	if (header_only) {
		im->w = (int)ci.image_width;
		im->h = (int)ci.image_height;
		jpeg_destroy_decompress(&ci);
		return 0;
	}
	/* Pillow's decoder settings: libjpeg's defaults (islow DCT, fancy
	 * upsampling), RGB out; grey comes out replicated as convert("RGB")
	 * replicates Pillow's L */
	ci.out_color_space = JCS_RGB;
	jpeg_start_decompress(&ci);
	if (ci.output_components != 3)
		longjmp(c.jb, 1);
	size_t w = ci.output_width, h = ci.output_height;
	rgb = xmalloc(xmul(xmul(w, h), 3));
	while (ci.output_scanline < ci.output_height) {
		JSAMPROW row = rgb + (size_t)ci.output_scanline * w * 3;
		jpeg_read_scanlines(&ci, &row, 1);
	}
	if (c.truncated) {
		jpeg_destroy_decompress(&ci);
		free(rgb);
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: the JPEG data ends early (a truncated file)", path);
	}
	jpeg_finish_decompress(&ci);
	jpeg_destroy_decompress(&ci);
	im->w = (int)w;
	im->h = (int)h;
	im->rgb = rgb;
	return 0;
}

/* Decode path, or with header_only read its size alone. */
static int
image_read(masq_image *im, const char *path, int header_only, masq_err *err)
{
	memset(im, 0, sizeof *im);
	int fd = masq_open_regular(path, err);
	if (fd < 0)
		return -1;
	FILE *fp = fdopen(fd, "rb");
	if (fp == NULL)
		fatal("fdopen: %s", strerror(errno));
	unsigned char sig[8] = {0};
	size_t n = fread(sig, 1, sizeof sig, fp);
	rewind(fp);
	int rc;
	if (n == 8 && png_sig_cmp(sig, 0, 8) == 0)
		rc = load_png(im, fp, path, header_only, err);
	else if (n >= 3 && sig[0] == 0xff && sig[1] == 0xd8 && sig[2] == 0xff)
		rc = load_jpeg(im, fp, path, header_only, err);
	else
		rc = masq_err_set(err, MASQ_ERR_FORMAT, "%s: neither a PNG nor a JPEG (masq reads those two)", path);
	fclose(fp);
	return rc;
}

int
image_load(masq_image *im, const char *path, masq_err *err)
{
	return image_read(im, path, 0, err);
}

int
image_probe(const char *path, int *w, int *h, masq_err *err)
{
	masq_image im;
	if (image_read(&im, path, 1, err) < 0)
		return -1;
	*w = im.w;
	*h = im.h;
	return 0;
}

/* ---- Pillow's resampling ----------------------------------------------- */

#define PRECISION_BITS (32 - 8 - 2)

static double
f_box(double x)
{
	return x > -0.5 && x <= 0.5 ? 1.0 : 0.0;
}

static double
f_bilinear(double x)
{
	x = fabs(x);
	return x < 1.0 ? 1.0 - x : 0.0;
}

static double
f_hamming(double x)
{
	x = fabs(x);
	if (x == 0.0)
		return 1.0;
	if (x >= 1.0)
		return 0.0;
	x = x * M_PI;
	return sin(x) / x * (0.54f + 0.46f * cos(x));
}

static double
f_bicubic(double x)
{
	const double a = -0.5;
	x = fabs(x);
	if (x < 1.0)
		return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
	if (x < 2.0)
		return (((x - 5) * x + 8) * x - 4) * a;
	return 0.0;
}

static double
sinc(double x)
{
	if (x == 0.0)
		return 1.0;
	x = x * M_PI;
	return sin(x) / x;
}

static double
f_lanczos(double x)
{
	return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0;
}

static const struct { double (*fn)(double); double support; } filters[] = {
	[IMG_LANCZOS] = {f_lanczos, 3.0}, [IMG_BILINEAR] = {f_bilinear, 1.0}, [IMG_BICUBIC] = {f_bicubic, 2.0},
	[IMG_BOX] = {f_box, 0.5}, [IMG_HAMMING] = {f_hamming, 1.0},
};

/* For each output position: the first input and how many, and the fixed
 * point weights (ksize a position).  Returns ksize. */
static int
coeffs(int in_size, int out_size, int filter, int **bounds, int32_t **kk)
{
	double scale = (double)in_size / out_size, fscale = scale < 1.0 ? 1.0 : scale;
	double support = filters[filter].support * fscale;
	int ksize = (int)ceil(support) * 2 + 1;
	double *k = xmalloc(xmul(xmul((size_t)out_size, (size_t)ksize), sizeof *k));
	*bounds = xmalloc(xmul((size_t)out_size * 2, sizeof **bounds));
	*kk = xmalloc(xmul(xmul((size_t)out_size, (size_t)ksize), sizeof **kk));
	for (int xx = 0; xx < out_size; xx++) {
		double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / fscale;
		int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
		if (xmin < 0)
			xmin = 0;
		if (xmax > in_size)
			xmax = in_size;
		xmax -= xmin;
		double *kr = k + (size_t)xx * ksize;
		int x;
		for (x = 0; x < xmax; x++) {
			double v = filters[filter].fn((x + xmin - center + 0.5) * ss);
			kr[x] = v;
			ww += v;
		}
		for (x = 0; x < xmax; x++)
			if (ww != 0.0)
				kr[x] /= ww;
		for (; x < ksize; x++)
			kr[x] = 0;
		(*bounds)[xx * 2] = xmin;
		(*bounds)[xx * 2 + 1] = xmax;
	}
	for (size_t i = 0; i < (size_t)out_size * ksize; i++)
		(*kk)[i] = (int32_t)(k[i] < 0 ? -0.5 + k[i] * (1 << PRECISION_BITS) : 0.5 + k[i] * (1 << PRECISION_BITS));
	free(k);
	return ksize;
}

static unsigned char
clip8(int32_t v)
{
	v >>= PRECISION_BITS;
	return v < 0 ? 0 : v > 255 ? 255 : (unsigned char)v;
}

void
image_resize(const masq_image *in, int w, int h, int filter, masq_image *out)
{
	MASQ_ASSERT(filter >= IMG_LANCZOS && filter <= IMG_HAMMING && w > 0 && h > 0);
	out->w = w;
	out->h = h;
	out->rgb = xmalloc(xmul(xmul((size_t)w, (size_t)h), 3));
	if (w == in->w && h == in->h) {
		memcpy(out->rgb, in->rgb, (size_t)w * h * 3);
		return;
	}
	int *bh, *bv;
	int32_t *kh, *kv;
	int ksh = coeffs(in->w, w, filter, &bh, &kh), ksv = coeffs(in->h, h, filter, &bv, &kv);
	const unsigned char *src = in->rgb;
	int src_h = in->h;
	unsigned char *tmp = NULL;
	int first = 0;
	if (w != in->w) {
		/* the rows the vertical pass reads, resized across */
		first = bv[0];
		int last = bv[(h - 1) * 2] + bv[(h - 1) * 2 + 1];
		src_h = last - first;
		tmp = xmalloc(xmul(xmul((size_t)w, (size_t)src_h), 3));
		for (int y = 0; y < src_h; y++) {
			const unsigned char *row = in->rgb + (size_t)(y + first) * in->w * 3;
			unsigned char *o = tmp + (size_t)y * w * 3;
			for (int xx = 0; xx < w; xx++) {
				const int32_t *k = kh + (size_t)xx * ksh;
				int xmin = bh[xx * 2], xmax = bh[xx * 2 + 1];
				for (int c = 0; c < 3; c++) {
					int32_t ss = 1 << (PRECISION_BITS - 1);
					for (int x = 0; x < xmax; x++)
						ss += row[(size_t)(x + xmin) * 3 + c] * k[x];
					o[xx * 3 + c] = clip8(ss);
				}
			}
		}
		src = tmp;
	}
	if (h != in->h) {
		for (int yy = 0; yy < h; yy++) {
			const int32_t *k = kv + (size_t)yy * ksv;
			int ymin = bv[yy * 2] - first, ymax = bv[yy * 2 + 1];
			unsigned char *o = out->rgb + (size_t)yy * w * 3;
			for (int x = 0; x < w * 3; x++) {
				int32_t ss = 1 << (PRECISION_BITS - 1);
				for (int y = 0; y < ymax; y++)
					ss += src[(size_t)(y + ymin) * w * 3 + x] * k[y];
				o[x] = clip8(ss);
			}
		}
	} else {
		memcpy(out->rgb, src, (size_t)w * h * 3);
	}
	(void)src_h;
	free(tmp);
	free(bh);
	free(bv);
	free(kh);
	free(kv);
}

/* ---- Qwen2-VL's image processor ---------------------------------------- */

void
vl_preproc_defaults(vl_preproc *p)
{
	static const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
	static const float std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
	memset(p, 0, sizeof *p);
	p->patch = 14;
	p->temporal = 2;
	p->merge = 2;
	p->min_pixels = 56 * 56;
	p->max_pixels = 28 * 28 * 1280;
	p->resample = IMG_BICUBIC;
	p->do_resize = p->do_rescale = p->do_normalize = 1;
	p->rescale = 1.0 / 255;
	memcpy(p->mean, mean, sizeof mean);
	memcpy(p->std, std, sizeof std);
}

static int
cfg_int(json_t *o, const char *key, long lo, long hi, long *out, const char *path, masq_err *err)
{
	json_t *v = json_object_get(o, key);
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: %s must be an integer in [%ld, %ld]", path, key, lo, hi);
	*out = (long)json_integer_value(v);
	return 0;
}

static int
cfg_bool(json_t *o, const char *key, int *out, const char *path, masq_err *err)
{
	json_t *v = json_object_get(o, key);
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_boolean(v))
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: %s must be true or false", path, key);
	*out = json_is_true(v);
	return 0;
}

static int
cfg_vec3(json_t *o, const char *key, float out[3], int positive, const char *path, masq_err *err)
{
	json_t *v = json_object_get(o, key);
	if (v == NULL || json_is_null(v))
		return 0;
	if (json_is_number(v)) {	/* one value for the three channels */
		double x = json_number_value(v);
		if (!isfinite(x) || (positive && x <= 0))
			goto bad;
		out[0] = out[1] = out[2] = (float)x;
		return 0;
	}
	if (!json_is_array(v) || json_array_size(v) != 3)
		goto bad;
	for (int i = 0; i < 3; i++) {
		json_t *e = json_array_get(v, (size_t)i);
		double x = json_number_value(e);
		if (!json_is_number(e) || !isfinite(x) || (positive && x <= 0))
			goto bad;
		out[i] = (float)x;
	}
	return 0;
bad:
	return masq_err_set(err, MASQ_ERR_FORMAT, "%s: %s must be three finite numbers%s", path, key,
	    positive ? " above zero" : "");
}

int
vl_preproc_load(vl_preproc *p, const char *model_dir, masq_err *err)
{
	char *path = masq_path_join(model_dir, "preprocessor_config.json");
	int rc = -1;
	if (masq_check_within(model_dir, path, err) == 0)
		rc = vl_preproc_read(p, path, err);
	free(path);
	return rc;
}

int
vl_preproc_read(vl_preproc *p, const char *path, masq_err *err)
{
	vl_preproc_defaults(p);
	size_t len;
	int rc = -1;
	json_t *o = NULL;
	char *buf = masq_read_file(path, 1 << 20, &len, err);
	if (buf == NULL) {
		masq_err_prefix(err, "the model has no image processor");
		goto done;
	}
	json_error_t je;
	o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	if (!json_is_object(o)) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: not a JSON object (line %d: %s)", path, je.line, je.text);
		goto done;
	}
	long patch = p->patch, temporal = p->temporal, merge = p->merge, mn = p->min_pixels, mx = p->max_pixels;
	long resample = p->resample;
	json_t *size = json_object_get(o, "size");
	if (cfg_int(o, "patch_size", 1, 1024, &patch, path, err) < 0 ||
	    cfg_int(o, "temporal_patch_size", 1, 16, &temporal, path, err) < 0 ||
	    cfg_int(o, "merge_size", 1, 16, &merge, path, err) < 0 ||
	    /* newer processors write size {shortest_edge, longest_edge} */
	    (json_is_object(size) && (cfg_int(size, "shortest_edge", 1, IMAGE_MAX_PIXELS, &mn, path, err) < 0 ||
	    cfg_int(size, "longest_edge", 1, IMAGE_MAX_PIXELS, &mx, path, err) < 0)) ||
	    cfg_int(o, "min_pixels", 1, IMAGE_MAX_PIXELS, &mn, path, err) < 0 ||
	    cfg_int(o, "max_pixels", 1, IMAGE_MAX_PIXELS, &mx, path, err) < 0 ||
	    cfg_int(o, "resample", 0, 5, &resample, path, err) < 0 ||
	    cfg_bool(o, "do_resize", &p->do_resize, path, err) < 0 ||
	    cfg_bool(o, "do_rescale", &p->do_rescale, path, err) < 0 ||
	    cfg_bool(o, "do_normalize", &p->do_normalize, path, err) < 0 ||
	    cfg_vec3(o, "image_mean", p->mean, 0, path, err) < 0 ||
	    cfg_vec3(o, "image_std", p->std, 1, path, err) < 0)
		goto done;
	json_t *rf = json_object_get(o, "rescale_factor");
	if (rf != NULL && !json_is_null(rf)) {
		if (!json_is_number(rf) || !isfinite(json_number_value(rf)) || json_number_value(rf) <= 0) {
			masq_err_set(err, MASQ_ERR_FORMAT, "%s: rescale_factor must be a number above zero", path);
			goto done;
		}
		p->rescale = json_number_value(rf);
	}
	if (cfg_bool(o, "do_convert_rgb", &(int){1}, path, err) < 0)
		goto done;
	if (resample == IMG_NEAREST) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: resample 0 (NEAREST) is not supported", path);
		goto done;
	}
	if (mn > mx) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: min_pixels %ld is above max_pixels %ld", path, mn, mx);
		goto done;
	}
	p->patch = (int)patch, p->temporal = (int)temporal, p->merge = (int)merge;
	p->min_pixels = mn, p->max_pixels = mx, p->resample = (int)resample;
	rc = 0;
done:
	json_decref(o);
	free(buf);
	return rc;
}

/* Python's built-in rounding of a float: half to even, as nearbyint in the
 * default mode. */
static double
py_half_even(double x)
{
	return nearbyint(x);
}

int
vl_smart_resize(const vl_preproc *p, int h, int w, int *out_h, int *out_w, masq_err *err)
{
	double factor = (double)p->patch * p->merge;
	int lo = h < w ? h : w, hi = h < w ? w : h;
	if (lo < factor)
		return masq_err_set(err, MASQ_ERR_FORMAT, "an image of %d x %d pixels: a side below %.0f pixels, "
		    "which the processor refuses", w, h, factor);
	if ((double)hi / lo > 200)
		return masq_err_set(err, MASQ_ERR_FORMAT, "an image of %d x %d pixels: its aspect ratio %.1f is above "
		    "200, which the processor refuses", w, h, (double)hi / lo);
	double hb = py_half_even(h / factor) * factor, wb = py_half_even(w / factor) * factor;
	if (hb * wb > (double)p->max_pixels) {
		double beta = sqrt((double)h * w / (double)p->max_pixels);
		/* no floor at the factor in this version: a side can reach 0 */
		hb = floor(h / beta / factor) * factor;
		wb = floor(w / beta / factor) * factor;
	} else if (hb * wb < (double)p->min_pixels) {
		double beta = sqrt((double)p->min_pixels / ((double)h * w));
		hb = ceil(h * beta / factor) * factor;
		wb = ceil(w * beta / factor) * factor;
	}
	if (hb < factor || wb < factor || hb * wb > (double)IMAGE_MAX_PIXELS)
		return masq_err_set(err, MASQ_ERR_FORMAT, "an image of %d x %d pixels resizes to %.0f x %.0f, "
		    "outside what the processor takes", w, h, wb, hb);
	*out_h = (int)hb;
	*out_w = (int)wb;
	return 0;
}

void
vl_patchify(const vl_preproc *p, const masq_image *im, float **pixels, int grid[3])
{
	int P = p->patch, T = p->temporal, m = p->merge;
	MASQ_ASSERT(im->h % (P * m) == 0 && im->w % (P * m) == 0);
	int gh = im->h / P, gw = im->w / P;
	size_t cols = (size_t)3 * T * P * P;
	grid[0] = 1;	/* one frame, repeated to the temporal patch */
	grid[1] = gh;
	grid[2] = gw;
	float *out = xmalloc(xmul(xmul((size_t)gh * gw, cols), sizeof *out));
	/* rescale in double then float32, normalize in float32, as
	 * transformers' rescale() and normalize() compute */
	float lut[3][256];
	for (int c = 0; c < 3; c++)
		for (int v = 0; v < 256; v++) {
			float x = p->do_rescale ? (float)((double)v * p->rescale) : (float)v;
			lut[c][v] = p->do_normalize ? (x - p->mean[c]) / p->std[c] : x;
		}
	size_t row = 0;
	for (int bh = 0; bh < gh / m; bh++)
		for (int bw = 0; bw < gw / m; bw++)
			for (int mh = 0; mh < m; mh++)
				for (int mw = 0; mw < m; mw++, row++) {
					float *o = out + row * cols;
					int y0 = (bh * m + mh) * P, x0 = (bw * m + mw) * P;
					for (int c = 0; c < 3; c++)
						for (int t = 0; t < T; t++)
							for (int ph = 0; ph < P; ph++)
								for (int pw = 0; pw < P; pw++)
									*o++ = lut[c][im->rgb[((size_t)(y0 + ph) * im->w +
									    (size_t)(x0 + pw)) * 3 + (size_t)c]];
				}
	*pixels = out;
}
