/*
 * st_writer.c: the streaming safetensors writer of safetensors.h: tensors
 * declared first, the header written with every offset, the data streamed
 * in declaration order (optionally converted from f32).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/safetensors.h"
#include "core/st_internal.h"

/* ---- streaming writer --------------------------------------------------- */

/* Elements converted per step by st_writer_write_f32. */
#define WRITER_CHUNK 4096

typedef struct wtensor {
	char *name;
	st_dtype dtype;
	int ndim;
	int64_t shape[ST_MAX_DIMS];
	uint64_t begin, end;	/* offsets into the data buffer */
} wtensor;

enum { W_DECLARING, W_WRITING, W_DONE, W_FAILED };

struct st_writer {
	int state;
	int ntensors, cap;
	wtensor *t;		/* (ntensors) in declaration order */
	int nmeta, metacap;
	char **meta_keys;	/* (nmeta) user pairs, after "format" */
	char **meta_values;
	uint64_t data_size;	/* sum of declared tensor bytes */
	uint64_t written;	/* data bytes appended so far */
	int cur;		/* first tensor with end > written */
	char *path;
	FILE *fp;
	int regular;		/* path is a regular file we may remove */
	unsigned char buf[WRITER_CHUNK * 8];	/* conversion buffer */
};

/* A new, empty writer. */
st_writer *
st_writer_new(void)
{
	st_writer *w = xcalloc(1, sizeof *w);
	w->state = W_DECLARING;
	return w;
}

/* Close and remove a partially written file. */
static void
writer_abandon(st_writer *w)
{
	if (w->fp != NULL) {
		fclose(w->fp);
		w->fp = NULL;
		if (w->regular)
			unlink(w->path);
	}
	w->state = W_FAILED;
}

/* Free w; a file begun but not finished is closed and removed. */
void
st_writer_free(st_writer *w)
{
	if (w == NULL)
		return;
	writer_abandon(w);
	for (int i = 0; i < w->ntensors; i++)
		free(w->t[i].name);
	free(w->t);
	for (int i = 0; i < w->nmeta; i++) {
		free(w->meta_keys[i]);
		free(w->meta_values[i]);
	}
	free(w->meta_keys);
	free(w->meta_values);
	free(w->path);
	free(w);
}

/* Where a writer message starts: the path once known. */
static const char *
writer_where(const st_writer *w)
{
	return w->path != NULL ? w->path : "safetensors writer";
}

/* Declare a tensor of dtype dt and shape[ndim]; its data follows the
 * previously declared ones. */
int
st_writer_add(st_writer *w, const char *name, st_dtype dt, int ndim,
    const int64_t *shape, masq_err *err)
{
	const char *where = writer_where(w);
	uint64_t nelem = 1, nbytes, end;
	char sbuf[256];
	wtensor *t;

	if (w->state != W_DECLARING)
		return st_fail(err, MASQ_ERR_INTERNAL, where, name,
		    "declared after the header was written");
	if (name == NULL || name[0] == '\0')
		return st_fail(err, MASQ_ERR_INTERNAL, where, NULL, "empty tensor name");
	if (st_utf8_bad_offset((const unsigned char *)name, strlen(name)) != strlen(name))
		return st_fail(err, MASQ_ERR_INTERNAL, where, name, "name is not valid UTF-8");
	if (strcmp(name, "__metadata__") == 0)
		return st_fail(err, MASQ_ERR_INTERNAL, where, name, "reserved name");
	for (int i = 0; i < w->ntensors; i++)
		if (strcmp(w->t[i].name, name) == 0)
			return st_fail(err, MASQ_ERR_INTERNAL, where, name,
			    "duplicate tensor name (declared twice)");
	if ((unsigned)dt >= ST_DTYPE_COUNT)
		return st_fail(err, MASQ_ERR_INTERNAL, where, name, "invalid dtype %d", (int)dt);
	if (ndim < 0 || ndim > ST_MAX_DIMS)
		return st_fail(err, MASQ_ERR_INTERNAL, where, name,
		    "%d dimensions (0 to %d supported)", ndim, ST_MAX_DIMS);
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0)
			return st_fail(err, MASQ_ERR_INTERNAL, where, name,
			    "shape[%d] is negative (%lld)", i, (long long)shape[i]);
		if (__builtin_mul_overflow(nelem, (uint64_t)shape[i], &nelem))
			return st_fail(err, MASQ_ERR_INTERNAL, where, name,
			    "shape %s: element count overflows 64 bits",
			    st_shape_str(shape, ndim, sbuf, sizeof sbuf));
	}
	if ((nbytes = st_dtype_bytes(dt, nelem)) == UINT64_MAX ||
	    __builtin_add_overflow(w->data_size, nbytes, &end) || end > INT64_MAX)
		return st_fail(err, MASQ_ERR_INTERNAL, where, name,
		    "shape %s of %s: data size overflows or is not whole bytes",
		    st_shape_str(shape, ndim, sbuf, sizeof sbuf), st_dtype_name(dt));
	/* every tensor at a multiple of its element size, as the official
	 * writer lays files out (the data starts 8-aligned): readers may map
	 * tensors in place */
	size_t es = st_dtype_size(dt);
	if (es > 1 && w->data_size % es != 0)
		return st_fail(err, MASQ_ERR_INTERNAL, where, name,
		    "a %s tensor at data offset %llu is not aligned to its %zu-byte elements "
		    "(declare larger elements first)", st_dtype_name(dt), (unsigned long long)w->data_size, es);
	if (w->ntensors == w->cap) {
		w->cap = w->cap ? 2 * w->cap : 16;
		w->t = xrealloc(w->t, xmul((size_t)w->cap, sizeof *w->t));
	}
	t = &w->t[w->ntensors++];
	memset(t, 0, sizeof *t);
	t->name = xstrdup(name);
	t->dtype = dt;
	t->ndim = ndim;
	for (int i = 0; i < ndim; i++)
		t->shape[i] = shape[i];
	t->begin = w->data_size;
	t->end = end;
	w->data_size = end;
	return 0;
}

/* Add a __metadata__ pair key: value. */
int
st_writer_meta(st_writer *w, const char *key, const char *value, masq_err *err)
{
	const char *where = writer_where(w);

	if (w->state != W_DECLARING)
		return st_fail(err, MASQ_ERR_INTERNAL, where, NULL,
		    "__metadata__ key '%s' added after the header was written", key);
	if (st_utf8_bad_offset((const unsigned char *)key, strlen(key)) != strlen(key) ||
	    st_utf8_bad_offset((const unsigned char *)value, strlen(value)) != strlen(value))
		return st_fail(err, MASQ_ERR_INTERNAL, where, NULL,
		    "__metadata__ key or value is not valid UTF-8");
	if (strcmp(key, "format") == 0)
		return st_fail(err, MASQ_ERR_INTERNAL, where, NULL,
		    "__metadata__ key 'format' is reserved (always \"pt\")");
	for (int i = 0; i < w->nmeta; i++)
		if (strcmp(w->meta_keys[i], key) == 0)
			return st_fail(err, MASQ_ERR_INTERNAL, where, NULL,
			    "__metadata__ key '%s' set twice", key);
	if (w->nmeta == w->metacap) {
		w->metacap = w->metacap ? 2 * w->metacap : 8;
		w->meta_keys = xrealloc(w->meta_keys, xmul((size_t)w->metacap, sizeof(char *)));
		w->meta_values = xrealloc(w->meta_values, xmul((size_t)w->metacap, sizeof(char *)));
	}
	w->meta_keys[w->nmeta] = xstrdup(key);
	w->meta_values[w->nmeta] = xstrdup(value);
	w->nmeta++;
	return 0;
}

/* The header JSON for w, padded with spaces so 8 + *len is a multiple of 8;
 * caller frees. */
static char *
writer_header(const st_writer *w, size_t *len)
{
	json_t *root = json_object(), *meta = json_object();
	char *s, *out;
	size_t n, pad;

	if (root == NULL || meta == NULL)
		fatal("out of memory building a safetensors header");
	/* inputs were checked to be valid UTF-8, so a failed set is memory */
	if (json_object_set_new(meta, "format", json_string("pt")) < 0)
		fatal("out of memory building a safetensors header");
	for (int i = 0; i < w->nmeta; i++)
		if (json_object_set_new(meta, w->meta_keys[i], json_string(w->meta_values[i])) < 0)
			fatal("out of memory building a safetensors header");
	json_object_set_new(root, "__metadata__", meta);
	for (int i = 0; i < w->ntensors; i++) {
		const wtensor *t = &w->t[i];
		json_t *e = json_object(), *sh = json_array(), *off = json_array();
		if (e == NULL || sh == NULL || off == NULL)
			fatal("out of memory building a safetensors header");
		for (int k = 0; k < t->ndim; k++)
			json_array_append_new(sh, json_integer(t->shape[k]));
		json_array_append_new(off, json_integer((json_int_t)t->begin));
		json_array_append_new(off, json_integer((json_int_t)t->end));
		json_object_set_new(e, "dtype", json_string(st_dtype_name(t->dtype)));
		json_object_set_new(e, "shape", sh);
		json_object_set_new(e, "data_offsets", off);
		if (json_object_set_new(root, t->name, e) < 0)
			fatal("out of memory building a safetensors header");
	}
	s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (s == NULL)
		fatal("out of memory building a safetensors header");
	n = strlen(s);
	pad = (8 - (8 + n) % 8) % 8;
	out = xmalloc(n + pad + 1);
	memcpy(out, s, n);
	memset(out + n, ' ', pad);
	out[n + pad] = '\0';
	free(s);
	*len = n + pad;
	return out;
}

/* Total size of the file w describes, header included. */
uint64_t
st_writer_size(const st_writer *w)
{
	size_t n;
	char *h = writer_header(w, &n);

	free(h);
	return 8 + (uint64_t)n + w->data_size;
}

/* fwrite n bytes to w's file; on failure abandon the file and fill err. */
static int
writer_put(st_writer *w, const void *p, size_t n, masq_err *err)
{
	if (n > 0 && fwrite(p, 1, n, w->fp) != n) {
		int e = errno;
		writer_abandon(w);
		return st_fail(err, MASQ_ERR_IO, w->path, NULL, "write error: %s",
		    strerror(e ? e : EIO));
	}
	return 0;
}

/* Create path and write the header. */
int
st_writer_begin(st_writer *w, const char *path, masq_err *err)
{
	unsigned char lenbuf[8];
	struct stat sb;
	size_t n;
	char *h;

	if (w->state != W_DECLARING)
		return st_fail(err, MASQ_ERR_INTERNAL, path, NULL, "writer already begun");
	w->path = xstrdup(path);
	h = writer_header(w, &n);
	if (n > ST_MAX_HEADER) {
		free(h);
		w->state = W_FAILED;
		return st_fail(err, MASQ_ERR_INTERNAL, path, NULL,
		    "header of %zu bytes exceeds the %u-byte limit", n, ST_MAX_HEADER);
	}
	errno = 0;
	if ((w->fp = fopen(path, "wb")) == NULL) {
		free(h);
		w->state = W_FAILED;
		return st_fail(err, MASQ_ERR_IO, path, NULL, "cannot create: %s", strerror(errno));
	}
	w->regular = fstat(fileno(w->fp), &sb) == 0 && S_ISREG(sb.st_mode);
	w->state = W_WRITING;
	for (int i = 0; i < 8; i++)
		lenbuf[i] = (unsigned char)((uint64_t)n >> (8 * i));
	errno = 0;
	if (writer_put(w, lenbuf, 8, err) < 0 || writer_put(w, h, n, err) < 0) {
		free(h);
		return -1;
	}
	free(h);
	return 0;
}

/* Check that w accepts data now; fills err otherwise. */
static int
writer_writing(st_writer *w, masq_err *err)
{
	if (w->state == W_WRITING)
		return 0;
	if (w->state == W_DECLARING)
		return st_fail(err, MASQ_ERR_INTERNAL, writer_where(w), NULL,
		    "data written before st_writer_begin");
	if (w->state == W_DONE)
		return st_fail(err, MASQ_ERR_INTERNAL, writer_where(w), NULL,
		    "data written after st_writer_finish");
	return st_fail(err, MASQ_ERR_IO, writer_where(w), NULL,
	    "not written: an earlier write failed");
}

/* Append n raw data bytes. */
int
st_writer_write(st_writer *w, const void *data, size_t n, masq_err *err)
{
	if (writer_writing(w, err) < 0)
		return -1;
	if (n > w->data_size - w->written)
		return st_fail(err, MASQ_ERR_INTERNAL, w->path, NULL,
		    "%zu bytes written at data offset %llu, past the %llu data bytes declared",
		    n, (unsigned long long)w->written, (unsigned long long)w->data_size);
	errno = 0;
	if (writer_put(w, data, n, err) < 0)
		return -1;
	w->written += n;
	return 0;
}

/* Convert n float32 at x to dt at dst (F32, F16, BF16 or F64). */
static void
writer_convert(void *dst, const float *x, st_dtype dt, size_t n)
{
	if (dt == ST_F64) {
		for (size_t i = 0; i < n; i++) {
			double d = x[i];
			memcpy((char *)dst + 8 * i, &d, 8);
		}
		return;
	}
	if (st_from_f32(dst, x, dt, n) < 0)
		MASQ_ASSERT(!"st_from_f32 rejected a float dtype");
}

/* Append n float32 values converted to the current tensor's dtype. */
int
st_writer_write_f32(st_writer *w, const float *x, size_t n, masq_err *err)
{
	const wtensor *t;
	size_t es;
	uint64_t left;

	if (writer_writing(w, err) < 0)
		return -1;
	if (n == 0)
		return 0;
	while (w->cur < w->ntensors && w->t[w->cur].end <= w->written)
		w->cur++;
	if (w->cur == w->ntensors)
		return st_fail(err, MASQ_ERR_INTERNAL, w->path, NULL,
		    "%zu values written after the last tensor", n);
	t = &w->t[w->cur];
	if (!st_dtype_is_float(t->dtype))
		return st_fail(err, MASQ_ERR_INTERNAL, w->path, t->name,
		    "float values written to a %s tensor", st_dtype_name(t->dtype));
	es = st_dtype_size(t->dtype);
	if ((w->written - t->begin) % es != 0)
		return st_fail(err, MASQ_ERR_INTERNAL, w->path, t->name,
		    "float values written at byte %llu, inside an element",
		    (unsigned long long)(w->written - t->begin));
	left = (t->end - w->written) / es;
	if (n > left)
		return st_fail(err, MASQ_ERR_INTERNAL, w->path, t->name,
		    "%zu values written but only %llu remain in the tensor", n,
		    (unsigned long long)left);
	for (size_t i = 0; i < n; i += WRITER_CHUNK) {
		size_t k = n - i < WRITER_CHUNK ? n - i : WRITER_CHUNK;
		writer_convert(w->buf, x + i, t->dtype, k);
		errno = 0;
		if (writer_put(w, w->buf, k * es, err) < 0)
			return -1;
		w->written += k * es;
	}
	return 0;
}

/* Check all declared bytes arrived, then flush, fsync and close; on any
 * failure the file is removed. */
int
st_writer_finish(st_writer *w, masq_err *err)
{
	int e;

	if (writer_writing(w, err) < 0)
		return -1;
	if (w->written < w->data_size) {
		const char *name = NULL;
		char q[NAME_QUOTE_MAX + 8];
		for (int i = 0; i < w->ntensors; i++)
			if (w->t[i].end > w->written) {
				name = w->t[i].name;
				break;
			}
		writer_abandon(w);
		return st_fail(err, MASQ_ERR_INTERNAL, w->path, NULL,
		    "only %llu of the %llu declared data bytes were written "
		    "(tensor '%s' is incomplete); file removed",
		    (unsigned long long)w->written, (unsigned long long)w->data_size,
		    st_name_quote(name, q, sizeof q));
	}
	errno = 0;
	if (fflush(w->fp) != 0 || fsync(fileno(w->fp)) != 0) {
		e = errno;
		/* a device such as /dev/full may refuse fsync: only files matter */
		if (!(e == EINVAL && !w->regular)) {
			writer_abandon(w);
			return st_fail(err, MASQ_ERR_IO, w->path, NULL, "write error: %s",
			    strerror(e ? e : EIO));
		}
	}
	e = fclose(w->fp) != 0 ? errno : 0;
	w->fp = NULL;
	if (e != 0) {
		if (w->regular)
			unlink(w->path);
		w->state = W_FAILED;
		return st_fail(err, MASQ_ERR_IO, w->path, NULL, "close: %s", strerror(e));
	}
	w->state = W_DONE;
	return 0;
}
