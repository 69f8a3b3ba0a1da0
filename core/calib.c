#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/calib.h"
#include "core/safetensors.h"

static const char *const mod_names[MOD_COUNT] = {"text", "vision", "audio"};

const char *
modality_name(int m)
{
	return (unsigned)m < MOD_COUNT ? mod_names[m] : "?";
}

/* Integer element i of an I32 / I64 / U8 tensor (unaligned-safe). */
static int64_t
int_at(const st_tensor *t, uint64_t i)
{
	const unsigned char *p = t->data;
	switch (t->dtype) {
	case ST_I64: { int64_t v; memcpy(&v, p + 8 * i, 8); return v; }
	case ST_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); return v; }
	case ST_U8: return p[i];
	default: return 0;
	}
}

static const st_tensor *
need(const st_file *f, const char *name, masq_err *err)
{
	const st_tensor *t = st_find(f, name);
	if (t == NULL)
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: missing tensor '%s' (a calibration set needs "
		    "inputs_embeds, modality and seq_lens; see masq-calib(5))", f->path, name);
	return t;
}

int
calib_load(calib *c, const char *path, int hidden, masq_err *err)
{
	st_file f;
	const st_tensor *te, *tm, *ts, *tp;
	int64_t T, H, S, sum = 0;

	memset(c, 0, sizeof *c);
	if (st_open(&f, path, err) < 0)
		return -1;
	if ((te = need(&f, "inputs_embeds", err)) == NULL || (tm = need(&f, "modality", err)) == NULL ||
	    (ts = need(&f, "seq_lens", err)) == NULL)
		goto fail;
	if (!st_dtype_is_float(te->dtype) || te->dtype == ST_F64) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: tensor 'inputs_embeds' has dtype %s, expected F32, BF16 or F16",
		    path, st_dtype_name(te->dtype));
		goto fail;
	}
	if (te->ndim != 2 || te->shape[0] < 1 || te->shape[1] < 1) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: tensor 'inputs_embeds' must have shape [tokens, hidden] with both > 0",
		    path);
		goto fail;
	}
	T = te->shape[0];
	H = te->shape[1];
	if (T > INT32_MAX || H > (1 << 16)) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: tensor 'inputs_embeds' shape [%lld, %lld] is too large",
		    path, (long long)T, (long long)H);
		goto fail;
	}
	if (hidden > 0 && H != hidden) {
		masq_err_set(err, MASQ_ERR_FORMAT,
		    "%s: tensor 'inputs_embeds' has width %lld but the model's hidden size is %d",
		    path, (long long)H, hidden);
		goto fail;
	}
	if (tm->dtype != ST_U8 || tm->ndim != 1 || tm->shape[0] != T) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: tensor 'modality' must be U8 [%lld] (one code per token)",
		    path, (long long)T);
		goto fail;
	}
	if ((ts->dtype != ST_I32 && ts->dtype != ST_I64) || ts->ndim != 1 || ts->shape[0] < 1 ||
	    ts->shape[0] > T) {
		masq_err_set(err, MASQ_ERR_FORMAT,
		    "%s: tensor 'seq_lens' must be I32 [sequences] with 1 to %lld sequences", path, (long long)T);
		goto fail;
	}
	S = ts->shape[0];
	for (int64_t i = 0; i < S; i++) {
		int64_t L = int_at(ts, (uint64_t)i);
		if (L < 1 || L > T) {
			masq_err_set(err, MASQ_ERR_FORMAT, "%s: tensor 'seq_lens' has length %lld for sequence %lld",
			    path, (long long)L, (long long)i);
			goto fail;
		}
		sum += L;
	}
	if (sum != T) {
		masq_err_set(err, MASQ_ERR_FORMAT,
		    "%s: tensor 'seq_lens' sums to %lld tokens but 'inputs_embeds' has %lld", path,
		    (long long)sum, (long long)T);
		goto fail;
	}
	tp = st_find(&f, "position_ids");
	if (tp != NULL) {
		int ok = (tp->dtype == ST_I64 || tp->dtype == ST_I32) &&
		    ((tp->ndim == 2 && (tp->shape[0] == 3 || tp->shape[0] == 1) && tp->shape[1] == T) ||
		     (tp->ndim == 1 && tp->shape[0] == T));
		if (!ok) {
			masq_err_set(err, MASQ_ERR_FORMAT,
			    "%s: tensor 'position_ids' must be I64 [3, %lld] or [%lld]", path,
			    (long long)T, (long long)T);
			goto fail;
		}
	}

	c->n_tokens = (int)T;
	c->hidden = (int)H;
	c->n_seqs = (int)S;
	c->modality = xmalloc((size_t)T);
	c->seq_lens = xmalloc(xmul((size_t)S, sizeof *c->seq_lens));
	c->pos = xmalloc(xmul((size_t)T * 3, sizeof *c->pos));
	for (int64_t i = 0; i < T; i++) {
		int64_t m = int_at(tm, (uint64_t)i);
		if (m >= MOD_COUNT) {
			masq_err_set(err, MASQ_ERR_FORMAT,
			    "%s: tensor 'modality' has code %lld at token %lld (expected 0 text, 1 vision, 2 audio)",
			    path, (long long)m, (long long)i);
			goto fail_free;
		}
		c->modality[i] = (uint8_t)m;
		c->n_mod[m]++;
	}
	for (int64_t i = 0; i < S; i++)
		c->seq_lens[i] = (int32_t)int_at(ts, (uint64_t)i);
	if (tp != NULL) {
		int rows = tp->ndim == 2 ? (int)tp->shape[0] : 1;
		for (int r = 0; r < 3; r++)
			for (int64_t i = 0; i < T; i++) {
				int64_t p = int_at(tp, (uint64_t)((rows == 3 ? r : 0) * T + i));
				if (p < 0 || p > ((int64_t)1 << 40)) {
					masq_err_set(err, MASQ_ERR_FORMAT,
					    "%s: tensor 'position_ids' has position %lld at row %d, token %lld",
					    path, (long long)p, rows == 3 ? r : 0, (long long)i);
					goto fail_free;
				}
				c->pos[r * T + i] = p;
			}
		c->has_pos = 1;
		c->pos_rows = rows;
	} else {
		int64_t t0 = 0;
		for (int64_t s = 0; s < S; s++) {
			for (int64_t j = 0; j < c->seq_lens[s]; j++)
				for (int r = 0; r < 3; r++)
					c->pos[r * T + t0 + j] = j;
			t0 += c->seq_lens[s];
		}
		c->pos_rows = 0;
	}
	c->embeds = st_tensor_to_f32(te);
	for (int64_t i = 0; i < T * H; i++) {
		if (!isfinite(c->embeds[i])) {
			masq_err_set(err, MASQ_ERR_FORMAT,
			    "%s: tensor 'inputs_embeds' has a non-finite value at token %lld, channel %lld",
			    path, (long long)(i / H), (long long)(i % H));
			goto fail_free;
		}
	}
	/* Qwen3-VL's deepstack features: deepstack.0, .1, ... with no gap */
	for (int i = 0; i < f.ntensors; i++) {
		const char *nm = f.tensors[i].name;
		if (strncmp(nm, "deepstack.", 10) != 0)
			continue;
		char *end;
		long k = strtol(nm + 10, &end, 10);
		/* N in its plain form: digits, no sign, no leading zero */
		int plain = nm[10] >= '0' && nm[10] <= '9' && (nm[10] != '0' || nm[11] == '\0');
		if (!plain || end == nm + 10 || *end != '\0' || k < 0 || k >= 1024) {
			masq_err_set(err, MASQ_ERR_FORMAT, "%s: tensor '%s' is not deepstack.N with N a layer number "
			    "(see masq-calib(5))", path, nm);
			goto fail_free;
		}
		if (k + 1 > c->n_deepstack)
			c->n_deepstack = (int)k + 1;
	}
	if (c->n_deepstack > 0)
		c->deepstack = xcalloc((size_t)c->n_deepstack, sizeof *c->deepstack);
	for (int k = 0; k < c->n_deepstack; k++) {
		char nm[32];
		snprintf(nm, sizeof nm, "deepstack.%d", k);
		const st_tensor *t = st_find(&f, nm);
		int64_t V = c->n_mod[MOD_VISION];
		if (t == NULL) {
			masq_err_set(err, MASQ_ERR_FORMAT, "%s: deepstack.%d is missing, though deepstack.%d is there: the "
			    "features are added after layers 0, 1, ... in turn", path, k, c->n_deepstack - 1);
			goto fail_free;
		}
		if ((t->dtype != ST_F32 && t->dtype != ST_BF16 && t->dtype != ST_F16) || t->ndim != 2 || t->shape[0] != V ||
		    t->shape[1] != H) {
			masq_err_set(err, MASQ_ERR_FORMAT, "%s: tensor '%s' must be a float [%lld, %lld] (a row per vision "
			    "token, in token order)", path, nm, (long long)V, (long long)H);
			goto fail_free;
		}
		c->deepstack[k] = st_tensor_to_f32(t);
		for (int64_t i = 0; i < V * H; i++)
			if (!isfinite(c->deepstack[k][i])) {
				masq_err_set(err, MASQ_ERR_FORMAT, "%s: tensor '%s' has a non-finite value at vision token %lld, "
				    "channel %lld", path, nm, (long long)(i / H), (long long)(i % H));
				goto fail_free;
			}
	}
	const char *s;
	if ((s = st_meta_get(&f, "calib_format")) != NULL)
		c->format = xstrdup(s);
	if ((s = st_meta_get(&f, "calib_version")) != NULL)
		c->version = xstrdup(s);
	if ((s = st_meta_get(&f, "source")) != NULL)
		c->source = xstrdup(s);
	st_close(&f);
	return 0;
fail_free:
	calib_done(c);
fail:
	st_close(&f);
	return -1;
}

void
calib_done(calib *c)
{
	for (int k = 0; c->deepstack != NULL && k < c->n_deepstack; k++)
		free(c->deepstack[k]);
	free(c->deepstack);
	free(c->embeds);
	free(c->modality);
	free(c->seq_lens);
	free(c->pos);
	free(c->format);
	free(c->version);
	free(c->source);
	memset(c, 0, sizeof *c);
}

/* A copy of a heap string, or NULL. */
static char *
calib_strdup(const char *s)
{
	if (s == NULL)
		return NULL;
	size_t n = strlen(s) + 1;
	char *d = xmalloc(n);
	memcpy(d, s, n);
	return d;
}

void
calib_slice(const calib *c, int seq_lo, int seq_hi, calib *out)
{
	MASQ_ASSERT(0 <= seq_lo && seq_lo < seq_hi && seq_hi <= c->n_seqs);
	int t0 = 0, t1;
	for (int s = 0; s < seq_lo; s++)
		t0 += c->seq_lens[s];
	t1 = t0;
	for (int s = seq_lo; s < seq_hi; s++)
		t1 += c->seq_lens[s];
	int v0 = 0, n = t1 - t0;
	for (int t = 0; t < t0; t++)
		v0 += c->modality[t] == MOD_VISION;
	size_t H = (size_t)c->hidden;

	memset(out, 0, sizeof *out);
	out->n_tokens = n;
	out->hidden = c->hidden;
	out->n_seqs = seq_hi - seq_lo;
	out->embeds = xmalloc(xmul(xmul((size_t)n, H), sizeof(float)));
	memcpy(out->embeds, c->embeds + (size_t)t0 * H, (size_t)n * H * sizeof(float));
	out->modality = xmalloc((size_t)n + 1);
	memcpy(out->modality, c->modality + t0, (size_t)n);
	out->seq_lens = xmalloc(xmul((size_t)out->n_seqs, sizeof(int32_t)));
	memcpy(out->seq_lens, c->seq_lens + seq_lo, (size_t)out->n_seqs * sizeof(int32_t));
	out->pos = xmalloc(xmul(3 * (size_t)n + 1, sizeof(int64_t)));
	for (int r = 0; r < 3; r++)
		memcpy(out->pos + (size_t)r * n, c->pos + (size_t)r * c->n_tokens + t0,
		    (size_t)n * sizeof(int64_t));
	out->has_pos = c->has_pos;
	out->pos_rows = c->pos_rows;
	for (int t = 0; t < n; t++)
		out->n_mod[out->modality[t]]++;
	out->n_deepstack = c->n_deepstack;
	if (c->n_deepstack > 0) {
		size_t nv = (size_t)out->n_mod[MOD_VISION];
		out->deepstack = xcalloc((size_t)c->n_deepstack, sizeof *out->deepstack);
		for (int k = 0; k < c->n_deepstack; k++) {
			out->deepstack[k] = xmalloc(xmul(xmul(nv + 1, H), sizeof(float)));
			memcpy(out->deepstack[k], c->deepstack[k] + (size_t)v0 * H, nv * H * sizeof(float));
		}
	}
	out->format = calib_strdup(c->format);
	out->version = calib_strdup(c->version);
	out->source = calib_strdup(c->source);
}

void
calib_deepstack_add(const calib *c, int layer, float *h)
{
	if (layer < 0 || layer >= c->n_deepstack)
		return;
	const float *f = c->deepstack[layer];
	size_t H = (size_t)c->hidden;
	for (int t = 0, r = 0; t < c->n_tokens; t++)
		if (c->modality[t] == MOD_VISION) {
			for (size_t j = 0; j < H; j++)
				h[(size_t)t * H + j] += f[(size_t)r * H + j];
			r++;
		}
}
