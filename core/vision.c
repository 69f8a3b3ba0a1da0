/*
 * vision.c: Qwen2.5-VL's vision tower (see vision.h).  Weights are read
 * and converted one block at a time and the pages of the mapping dropped
 * after, so the resident weights are one block's, whatever the tower.
 * All images given to vit_forward go through block b before block b + 1.
 */
#include "config.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/blas.h"
#include "core/model.h"
#include "core/vision.h"

/* ---- configuration ----------------------------------------------------- */

static int
vget_int(json_t *o, const char *key, const char *alt, long lo, long hi, int *out, int required, const char *path,
    masq_err *err)
{
	json_t *v = json_object_get(o, key);
	if ((v == NULL || json_is_null(v)) && alt != NULL)
		v = json_object_get(o, alt);
	if (v == NULL || json_is_null(v)) {
		if (required)
			return masq_err_set(err, MASQ_ERR_FORMAT, "%s: vision_config.%s is missing", path, key);
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: vision_config.%s must be an integer in [%ld, %ld]", path,
		    key, lo, hi);
	*out = (int)json_integer_value(v);
	return 0;
}

int
vit_config_load(vit_config *c, const char *path, masq_err *err)
{
	size_t len;
	char *buf = masq_read_file(path, 16u << 20, &len, err);
	if (buf == NULL)
		return -1;
	json_error_t je;
	json_t *root = json_loadb(buf, len, 0, &je);
	free(buf);
	int rc = -1;
	memset(c, 0, sizeof *c);
	c->eps = 1e-6f;
	c->theta = 10000.0;
	c->in_chans = 3;
	c->temporal = 2;
	json_t *vc = json_object_get(root, "vision_config");
	if (root == NULL) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: not JSON (line %d: %s)", path, je.line, je.text);
		goto done;
	}
	if (!json_is_object(vc)) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: no vision_config: the model has no vision tower", path);
		goto done;
	}
	const char *mt = json_string_value(json_object_get(root, "model_type"));
	if (mt != NULL && strcmp(mt, "qwen2_vl") == 0) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: Qwen2-VL's vision tower (LayerNorm blocks, no windows) is not "
		    "supported; masq runs Qwen2.5-VL's", path);
		goto done;
	}
	if (json_object_get(vc, "window_size") == NULL || json_object_get(vc, "fullatt_block_indexes") == NULL) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: vision_config has no window_size or fullatt_block_indexes: not "
		    "Qwen2.5-VL's vision tower, the one masq runs", path);
		goto done;
	}
	const char *act = json_string_value(json_object_get(vc, "hidden_act"));
	if (act != NULL && strcmp(act, "silu") != 0) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: vision_config.hidden_act '%s' is not supported (silu)", path, act);
		goto done;
	}
	if (vget_int(vc, "depth", NULL, 1, VIT_MAX_DEPTH, &c->depth, 1, path, err) < 0 ||
	    vget_int(vc, "hidden_size", "embed_dim", 1, 1 << 16, &c->hidden, 1, path, err) < 0 ||
	    vget_int(vc, "intermediate_size", NULL, 1, 1 << 18, &c->inter, 1, path, err) < 0 ||
	    vget_int(vc, "num_heads", NULL, 1, 1024, &c->n_heads, 1, path, err) < 0 ||
	    vget_int(vc, "out_hidden_size", NULL, 1, 1 << 17, &c->out_hidden, 1, path, err) < 0 ||
	    vget_int(vc, "in_chans", "in_channels", 1, 16, &c->in_chans, 0, path, err) < 0 ||
	    vget_int(vc, "patch_size", NULL, 1, 1024, &c->patch, 1, path, err) < 0 ||
	    vget_int(vc, "spatial_merge_size", NULL, 1, 16, &c->merge, 1, path, err) < 0 ||
	    vget_int(vc, "temporal_patch_size", NULL, 1, 16, &c->temporal, 0, path, err) < 0 ||
	    vget_int(vc, "window_size", NULL, 1, 1 << 16, &c->window, 1, path, err) < 0)
		goto done;
	if (c->hidden % c->n_heads != 0 || (c->hidden / c->n_heads) % 4 != 0) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: vision_config: hidden_size %d over %d heads is not a head width "
		    "that divides by 4 (the 2-D rotary halves it twice)", path, c->hidden, c->n_heads);
		goto done;
	}
	c->head_dim = c->hidden / c->n_heads;
	if (c->window % (c->patch * c->merge) != 0) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: vision_config.window_size %d is not a multiple of patch_size x "
		    "spatial_merge_size (%d)", path, c->window, c->patch * c->merge);
		goto done;
	}
	json_t *fa = json_object_get(vc, "fullatt_block_indexes");
	if (!json_is_array(fa)) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: vision_config.fullatt_block_indexes is not a list", path);
		goto done;
	}
	for (size_t i = 0; i < json_array_size(fa); i++) {
		json_t *e = json_array_get(fa, i);
		if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) >= c->depth) {
			masq_err_set(err, MASQ_ERR_FORMAT, "%s: vision_config.fullatt_block_indexes[%zu] is not a block "
			    "index below depth %d", path, i, c->depth);
			goto done;
		}
		c->full[json_integer_value(e)] = 1;
	}
	rc = 0;
done:
	json_decref(root);
	return rc;
}

/* ---- tensors ----------------------------------------------------------- */

static const st_tensor *
vt_find(const vit_model *v, const char *suffix, char *name, size_t n)
{
	snprintf(name, n, "%s%s", v->prefix, suffix);
	return st_set_find(&v->st, name);
}

static int
vt_check(const vit_model *v, const char *suffix, int ndim, const int64_t *shape, masq_err *err)
{
	char name[160];
	const st_tensor *t = vt_find(v, suffix, name, sizeof name);
	if (t == NULL)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: the vision tower has no tensor %s", v->st.dir ? v->st.dir : "",
		    name);
	if (!st_dtype_is_float(t->dtype) || t->ndim != ndim)
		goto bad;
	for (int i = 0; i < ndim; i++)
		if (t->shape[i] != shape[i])
			goto bad;
	return 0;
bad:;
	char want[96] = "", *p = want;
	for (int i = 0; i < ndim; i++)
		p += snprintf(p, (size_t)(want + sizeof want - p), i ? ", %lld" : "%lld", (long long)shape[i]);
	return masq_err_set(err, MASQ_ERR_FORMAT, "%s: %s is %s of %d dimensions; the config makes it a float "
	    "tensor of (%s)", v->st.dir ? v->st.dir : "", name, st_dtype_name(t->dtype), t->ndim, want);
}

/* float32 copy of a checked tensor, its pages released after */
static float *
vt_load(const vit_model *v, const char *suffix, masq_err *err)
{
	char name[160];
	const st_tensor *t = vt_find(v, suffix, name, sizeof name);
	int64_t bad;
	double val;
	MASQ_ASSERT(t != NULL);
	if (model_tensor_check_finite(t, &bad, &val)) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: element %lld of %s is %g, not a finite number", v->st.dir,
		    (long long)bad, name, val);
		return NULL;
	}
	float *x = st_tensor_to_f32(t);
	st_tensor_release(t);
	return x;
}

int
vit_open(vit_model *v, const char *dir, masq_err *err)
{
	memset(v, 0, sizeof *v);
	char *cfg = masq_path_join(dir, "config.json");
	int rc = vit_config_load(&v->cfg, cfg, err);
	free(cfg);
	if (rc < 0)
		return -1;
	if (st_set_open_dir(&v->st, dir, err) < 0)
		return -1;
	const vit_config *c = &v->cfg;
	snprintf(v->prefix, sizeof v->prefix, "visual.");
	if (st_set_find(&v->st, "visual.patch_embed.proj.weight") == NULL)
		snprintf(v->prefix, sizeof v->prefix, "model.visual.");
	int64_t D = c->hidden, In = c->inter, Dm = (int64_t)c->hidden * c->merge * c->merge;
	if (vt_check(v, "patch_embed.proj.weight", 5,
	    (const int64_t[]){D, c->in_chans, c->temporal, c->patch, c->patch}, err) < 0)
		goto fail;
	for (int b = 0; b < c->depth; b++) {
		static const char *const names[] = {"norm1.weight", "norm2.weight", "attn.qkv.weight", "attn.qkv.bias",
			"attn.proj.weight", "attn.proj.bias", "mlp.gate_proj.weight", "mlp.gate_proj.bias",
			"mlp.up_proj.weight", "mlp.up_proj.bias", "mlp.down_proj.weight", "mlp.down_proj.bias"};
		const int64_t shapes[][2] = {{D, 0}, {D, 0}, {3 * D, D}, {3 * D, 0}, {D, D}, {D, 0}, {In, D}, {In, 0},
			{In, D}, {In, 0}, {D, In}, {D, 0}};
		for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
			char s[96];
			snprintf(s, sizeof s, "blocks.%d.%s", b, names[k]);
			if (vt_check(v, s, shapes[k][1] ? 2 : 1, shapes[k], err) < 0)
				goto fail;
		}
	}
	if (vt_check(v, "merger.ln_q.weight", 1, (const int64_t[]){D}, err) < 0 ||
	    vt_check(v, "merger.mlp.0.weight", 2, (const int64_t[]){Dm, Dm}, err) < 0 ||
	    vt_check(v, "merger.mlp.0.bias", 1, (const int64_t[]){Dm}, err) < 0 ||
	    vt_check(v, "merger.mlp.2.weight", 2, (const int64_t[]){c->out_hidden, Dm}, err) < 0 ||
	    vt_check(v, "merger.mlp.2.bias", 1, (const int64_t[]){c->out_hidden}, err) < 0)
		goto fail;
	return 0;
fail:
	st_set_close(&v->st);
	return -1;
}

void
vit_close(vit_model *v)
{
	st_set_close(&v->st);
	memset(v, 0, sizeof *v);
}

/* ---- geometry ---------------------------------------------------------- */

int
vit_window_index(const vit_config *c, const int grid[3], int *order, int *cu)
{
	int m = c->merge, ws = c->window / m / c->patch;
	int lh = grid[1] / m, lw = grid[2] / m;
	/* the model pads the unit grid to whole windows (a full extra window
	 * when it divides), then drops what the padding left empty */
	int ph = ws - lh % ws, pw = ws - lw % ws;
	int nwh = (lh + ph) / ws, nww = (lw + pw) / ws;
	int k = 0, nwin = 0;
	cu[0] = 0;
	for (int t = 0; t < grid[0]; t++)
		for (int wh = 0; wh < nwh; wh++)
			for (int ww = 0; ww < nww; ww++) {
				int count = 0;
				for (int y = wh * ws; y < wh * ws + ws; y++)
					for (int x = ww * ws; x < ww * ws + ws; x++)
						if (y < lh && x < lw) {
							order[k++] = (t * lh + y) * lw + x;
							count++;
						}
				if (count > 0) {
					cu[nwin + 1] = cu[nwin] + count * m * m;
					nwin++;
				}
			}
	return nwin;
}

/* ---- kernels: fast and plain ------------------------------------------- */

#define VIT_QBLOCK 1024	/* attention queries a pass of the fast path */

/* y (n, out) = x (n, in) W^T (W: out, in) + b */
static void
linear(const float *x, int n, int in, const float *w, const float *b, int out, float *y, int plain)
{
	if (plain) {
		for (int i = 0; i < n; i++)
			for (int o = 0; o < out; o++) {
				double s = b ? b[o] : 0.0;
				for (int k = 0; k < in; k++)
					s += (double)x[(size_t)i * in + k] * w[(size_t)o * in + k];
				y[(size_t)i * out + o] = (float)s;
			}
		return;
	}
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
	if (b != NULL)
		for (int i = 0; i < n; i++)
			for (int o = 0; o < out; o++)
				y[(size_t)i * out + o] += b[o];
}

/* Qwen2RMSNorm: x / sqrt(mean(x^2) + eps) * w, per row */
static void
rmsnorm(const float *x, int n, int d, const float *w, float eps, float *y, int plain)
{
	for (int i = 0; i < n; i++) {
		const float *r = x + (size_t)i * d;
		double ss = 0;
		float sf = 0;
		if (plain) {
			for (int k = 0; k < d; k++)
				ss += (double)r[k] * r[k];
		} else {
			for (int k = 0; k < d; k++)
				sf += r[k] * r[k];
			ss = sf;
		}
		float inv = (float)(1.0 / sqrt(ss / d + eps));
		for (int k = 0; k < d; k++)
			y[(size_t)i * d + k] = r[k] * inv * w[k];
	}
}

static float
silu(float x)
{
	return x / (1.0f + expf(-x));
}

/* q or k of one patch, head_dim wide, rotated: x cos + rotate_half(x) sin */
static void
rope_row(float *x, const float *cs, const float *sn, int hd)
{
	int h2 = hd / 2;
	for (int k = 0; k < h2; k++) {
		float a = x[k], b = x[k + h2];
		x[k] = a * cs[k] - b * sn[k];
		x[k + h2] = b * cs[k + h2] + a * sn[k + h2];
	}
}

/* attention of one segment [s0, s1) over all heads; qkv (N, 3D), o (N, D) */
static void
attend(const vit_config *c, const float *qkv, int s0, int s1, float *o, float *scores, int plain)
{
	int D = c->hidden, hd = c->head_dim, S = s1 - s0, ld = 3 * D;
	float scale = 1.0f / sqrtf((float)hd);
	for (int h = 0; h < c->n_heads; h++) {
		const float *Q = qkv + (size_t)s0 * ld + (size_t)h * hd;
		const float *K = Q + D, *V = Q + 2 * D;
		float *O = o + (size_t)s0 * D + (size_t)h * hd;
		if (plain) {
			for (int i = 0; i < S; i++) {
				double mx = -INFINITY;
				for (int j = 0; j < S; j++) {
					double s = 0;
					for (int k = 0; k < hd; k++)
						s += (double)Q[(size_t)i * ld + k] * K[(size_t)j * ld + k];
					scores[j] = (float)(s * scale);
					if (scores[j] > mx)
						mx = scores[j];
				}
				double sum = 0;
				for (int j = 0; j < S; j++)
					sum += exp(scores[j] - mx);
				for (int k = 0; k < hd; k++) {
					double a = 0;
					for (int j = 0; j < S; j++)
						a += exp(scores[j] - mx) / sum * V[(size_t)j * ld + k];
					O[(size_t)i * D + k] = (float)a;
				}
			}
			continue;
		}
		/* VIT_QBLOCK queries at a time: the scores of a whole large image
		 * (16k patches at Qwen's max_pixels) would take a gigabyte */
		for (int i0 = 0; i0 < S; i0 += VIT_QBLOCK) {
			int nq = S - i0 < VIT_QBLOCK ? S - i0 : VIT_QBLOCK;
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, S, hd, scale, Q + (size_t)i0 * ld, ld, K, ld,
			    0.0f, scores, S);
			for (int i = 0; i < nq; i++) {
				float *r = scores + (size_t)i * S, mx = r[0], sum = 0;
				for (int j = 1; j < S; j++)
					mx = r[j] > mx ? r[j] : mx;
				for (int j = 0; j < S; j++) {
					r[j] = expf(r[j] - mx);
					sum += r[j];
				}
				float inv = 1.0f / sum;
				for (int j = 0; j < S; j++)
					r[j] *= inv;
			}
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, S, 1.0f, scores, S, V, ld, 0.0f,
			    O + (size_t)i0 * D, D);
		}
	}
}

/* ---- the tower --------------------------------------------------------- */

typedef struct vimg {
	int n, units, nwin;	/* patches, merge units, windows */
	float *h;		/* (n, D): in window order */
	float *cs, *sn;		/* (n, head_dim): the rotary's cos and sin, window order */
	int *order;		/* (units): window position -> unit */
	int *cu;		/* (nwin + 1) window bounds, in patches */
	int frames;		/* grid t: full attention is per frame */
} vimg;

typedef struct vblock {
	float *n1, *n2, *qkv_w, *qkv_b, *proj_w, *proj_b, *gate_w, *gate_b, *up_w, *up_b, *down_w, *down_b;
} vblock;

static void
vblock_free(vblock *b)
{
	float **p = (float **)b;
	for (size_t i = 0; i < sizeof *b / sizeof(float *); i++)
		free(p[i]);
	memset(b, 0, sizeof *b);
}

static int
vblock_load(const vit_model *v, int bi, vblock *b, masq_err *err)
{
	static const char *const names[] = {"norm1.weight", "norm2.weight", "attn.qkv.weight", "attn.qkv.bias",
		"attn.proj.weight", "attn.proj.bias", "mlp.gate_proj.weight", "mlp.gate_proj.bias",
		"mlp.up_proj.weight", "mlp.up_proj.bias", "mlp.down_proj.weight", "mlp.down_proj.bias"};
	float **p = (float **)b;
	memset(b, 0, sizeof *b);
	for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
		char s[96];
		snprintf(s, sizeof s, "blocks.%d.%s", bi, names[k]);
		if ((p[k] = vt_load(v, s, err)) == NULL) {
			vblock_free(b);
			return -1;
		}
	}
	return 0;
}

static void
report(const vit_config *c, const vimg *im, int image, int block, vit_hook hook, void *ctx)
{
	int D = c->hidden, mm = c->merge * c->merge;
	float *o = xmalloc(xmul((size_t)im->n * D, sizeof *o));
	for (int j = 0; j < im->units; j++)
		memcpy(o + (size_t)im->order[j] * mm * D, im->h + (size_t)j * mm * D, (size_t)mm * D * sizeof *o);
	hook(ctx, image, block, o, im->n, D);
	free(o);
}

static void
block_run(const vit_config *c, const vblock *b, int bi, vimg *im, int plain)
{
	int n = im->n, D = c->hidden, In = c->inter, hd = c->head_dim;
	float *x = xmalloc(xmul((size_t)n * D, sizeof *x));
	float *qkv = xmalloc(xmul((size_t)n * 3 * D, sizeof *qkv));
	float *att = xmalloc(xmul((size_t)n * D, sizeof *att));
	rmsnorm(im->h, n, D, b->n1, c->eps, x, plain);
	linear(x, n, D, b->qkv_w, b->qkv_b, 3 * D, qkv, plain);
	for (int i = 0; i < n; i++)
		for (int h = 0; h < c->n_heads; h++)
			for (int part = 0; part < 2; part++)	/* q and k */
				rope_row(qkv + (size_t)i * 3 * D + (size_t)part * D + (size_t)h * hd,
				    im->cs + (size_t)i * hd, im->sn + (size_t)i * hd, hd);
	/* the segments: each window, or each frame whole */
	int maxs = 0;
	int nseg = c->full[bi] ? im->frames : im->nwin;
	for (int s = 0; s < nseg; s++) {
		int len = c->full[bi] ? n / im->frames : im->cu[s + 1] - im->cu[s];
		maxs = len > maxs ? len : maxs;
	}
	size_t rows = plain ? 1 : (size_t)(maxs < VIT_QBLOCK ? maxs : VIT_QBLOCK);
	float *scores = xmalloc(xmul(xmul((size_t)maxs, rows), sizeof *scores));
	for (int s = 0; s < nseg; s++) {
		int s0 = c->full[bi] ? s * (n / im->frames) : im->cu[s];
		int s1 = c->full[bi] ? (s + 1) * (n / im->frames) : im->cu[s + 1];
		attend(c, qkv, s0, s1, att, scores, plain);
	}
	free(scores);
	linear(att, n, D, b->proj_w, b->proj_b, D, x, plain);
	for (size_t i = 0; i < (size_t)n * D; i++)
		im->h[i] += x[i];
	free(qkv);
	free(att);
	/* MLP */
	float *g = xmalloc(xmul((size_t)n * In, sizeof *g)), *u = xmalloc(xmul((size_t)n * In, sizeof *u));
	rmsnorm(im->h, n, D, b->n2, c->eps, x, plain);
	linear(x, n, D, b->gate_w, b->gate_b, In, g, plain);
	linear(x, n, D, b->up_w, b->up_b, In, u, plain);
	for (size_t i = 0; i < (size_t)n * In; i++)
		g[i] = silu(g[i]) * u[i];
	linear(g, n, In, b->down_w, b->down_b, D, x, plain);
	for (size_t i = 0; i < (size_t)n * D; i++)
		im->h[i] += x[i];
	free(g);
	free(u);
	free(x);
}

/* the 2-D rotary of each patch, window order: frequencies of its row,
 * then of its column, each head_dim / 4 wide, the pair repeated */
static void
rotary(const vit_config *c, const int grid[3], vimg *im)
{
	int hd = c->head_dim, q = hd / 4, m = c->merge, mm = m * m;
	int lh = grid[1] / m, lw = grid[2] / m;
	float *inv = xmalloc(xmul((size_t)q, sizeof *inv));
	/* as torch computes it, in float32: 1 / theta^(2i / (hd / 2)) */
	for (int i = 0; i < q; i++)
		inv[i] = 1.0f / powf((float)c->theta, (float)(2 * i) / (float)(hd / 2));
	im->cs = xmalloc(xmul((size_t)im->n * hd, sizeof *im->cs));
	im->sn = xmalloc(xmul((size_t)im->n * hd, sizeof *im->sn));
	for (int j = 0; j < im->units; j++) {
		int u = im->order[j] % (lh * lw), uy = u / lw, ux = u % lw;
		for (int r = 0; r < mm; r++) {
			int py = uy * m + r / m, px = ux * m + r % m;
			float *cs = im->cs + ((size_t)j * mm + r) * hd, *sn = im->sn + ((size_t)j * mm + r) * hd;
			for (int i = 0; i < q; i++) {
				float fy = (float)py * inv[i], fx = (float)px * inv[i];
				cs[i] = cs[i + 2 * q] = cosf(fy);
				sn[i] = sn[i + 2 * q] = sinf(fy);
				cs[i + q] = cs[i + 3 * q] = cosf(fx);
				sn[i + q] = sn[i + 3 * q] = sinf(fx);
			}
		}
	}
	free(inv);
}

static float
gelu(float x)
{
	return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
}

int
vit_forward(const vit_model *v, int n, float *const *pixels, const int (*grid)[3], float **out, int plain,
    vit_hook hook, void *hook_ctx, masq_err *err)
{
	const vit_config *c = &v->cfg;
	int D = c->hidden, m = c->merge, mm = m * m, K = c->in_chans * c->temporal * c->patch * c->patch;
	int rc = -1;
	vimg *im = xcalloc((size_t)(n ? n : 1), sizeof *im);
	float *pe = NULL;
	for (int i = 0; i < n; i++)
		out[i] = NULL;
	for (int i = 0; i < n; i++) {
		const int *g = grid[i];
		if (g[0] < 1 || g[1] < m || g[2] < m || g[1] % m || g[2] % m || (long)g[0] * g[1] * g[2] > (1L << 26)) {
			masq_err_set(err, MASQ_ERR_FORMAT, "image %d: a patch grid of (%d, %d, %d) does not fit the tower "
			    "(merge %d)", i, g[0], g[1], g[2], m);
			goto done;
		}
		vimg *s = &im[i];
		s->frames = g[0];
		s->n = g[0] * g[1] * g[2];
		s->units = s->n / mm;
		int ws = c->window / m / c->patch;
		size_t maxwin = (size_t)g[0] * (size_t)(g[1] / m / ws + 1) * (size_t)(g[2] / m / ws + 1) + 1;
		s->order = xmalloc(xmul((size_t)s->units, sizeof *s->order));
		s->cu = xmalloc(xmul(maxwin, sizeof *s->cu));
		s->nwin = vit_window_index(c, g, s->order, s->cu);
		rotary(c, g, s);
	}
	/* patch embedding: the Conv3d's weight, flattened, is a linear */
	if ((pe = vt_load(v, "patch_embed.proj.weight", err)) == NULL)
		goto done;
	for (int i = 0; i < n; i++) {
		vimg *s = &im[i];
		float *h = xmalloc(xmul((size_t)s->n * D, sizeof *h));
		linear(pixels[i], s->n, K, pe, NULL, D, h, plain);
		s->h = xmalloc(xmul((size_t)s->n * D, sizeof *s->h));
		for (int j = 0; j < s->units; j++)
			memcpy(s->h + (size_t)j * mm * D, h + (size_t)s->order[j] * mm * D, (size_t)mm * D * sizeof *h);
		free(h);
		if (hook != NULL)
			report(c, s, i, -1, hook, hook_ctx);
	}
	free(pe);
	pe = NULL;
	for (int b = 0; b < c->depth; b++) {
		vblock w;
		if (vblock_load(v, b, &w, err) < 0)
			goto done;
		for (int i = 0; i < n; i++) {
			block_run(c, &w, b, &im[i], plain);
			if (hook != NULL)
				report(c, &im[i], i, b, hook, hook_ctx);
		}
		vblock_free(&w);
	}
	/* merger */
	float *lnq = vt_load(v, "merger.ln_q.weight", err), *w0 = NULL, *b0 = NULL, *w2 = NULL, *b2 = NULL;
	if (lnq == NULL || (w0 = vt_load(v, "merger.mlp.0.weight", err)) == NULL ||
	    (b0 = vt_load(v, "merger.mlp.0.bias", err)) == NULL || (w2 = vt_load(v, "merger.mlp.2.weight", err)) == NULL ||
	    (b2 = vt_load(v, "merger.mlp.2.bias", err)) == NULL) {
		free(lnq);
		free(w0);
		free(b0);
		free(w2);
		goto done;
	}
	for (int i = 0; i < n; i++) {
		vimg *s = &im[i];
		int U = s->units, Dm = D * mm;
		float *x = xmalloc(xmul((size_t)s->n * D, sizeof *x)), *y = xmalloc(xmul((size_t)U * Dm, sizeof *y));
		float *z = xmalloc(xmul((size_t)U * c->out_hidden, sizeof *z));
		rmsnorm(s->h, s->n, D, lnq, c->eps, x, plain);	/* (n, D) is (U, D m^2) */
		linear(x, U, Dm, w0, b0, Dm, y, plain);
		for (size_t k = 0; k < (size_t)U * Dm; k++)
			y[k] = gelu(y[k]);
		linear(y, U, Dm, w2, b2, c->out_hidden, z, plain);
		out[i] = xmalloc(xmul((size_t)U * c->out_hidden, sizeof *out[i]));
		for (int j = 0; j < U; j++)
			memcpy(out[i] + (size_t)s->order[j] * c->out_hidden, z + (size_t)j * c->out_hidden,
			    (size_t)c->out_hidden * sizeof *z);
		free(x);
		free(y);
		free(z);
	}
	free(lnq);
	free(w0);
	free(b0);
	free(w2);
	free(b2);
	rc = 0;
done:
	free(pe);
	for (int i = 0; i < n; i++) {
		free(im[i].h);
		free(im[i].cs);
		free(im[i].sn);
		free(im[i].order);
		free(im[i].cu);
		if (rc < 0) {
			free(out[i]);
			out[i] = NULL;
		}
	}
	free(im);
	return rc;
}
