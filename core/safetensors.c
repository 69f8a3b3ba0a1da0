/*
 * safetensors.c: the validating mmap reader of safetensors.h, and sets of
 * shards (a directory with model.safetensors.index.json); the writer is
 * st_writer.c.
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

/* Copy s into buf (n bytes) for quoting in a message: control bytes become
 * \xNN and a long name is cut with "...".  Returns buf. */
const char *
st_name_quote(const char *s, char *buf, size_t n)
{
	size_t o = 0;

	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		if (o + 8 >= n || o >= NAME_QUOTE_MAX) {
			memcpy(buf + o, "...", 4);
			return buf;
		}
		if (*p < 0x20 || *p == 0x7f)
			o += (size_t)snprintf(buf + o, n - o, "\\x%02x", *p);
		else
			buf[o++] = (char)*p;
	}
	buf[o] = '\0';
	return buf;
}

/* Fill err with "<path>: <fault>", or "<path>: tensor '<name>': <fault>"
 * when name is not NULL; returns -1. */
int
st_fail(masq_err *err, masq_status st, const char *path, const char *name,
    const char *fmt, ...)
{
	char fault[768], q[NAME_QUOTE_MAX + 8];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(fault, sizeof fault, fmt, ap);
	va_end(ap);
	if (name != NULL)
		return masq_err_set(err, st, "%s: tensor '%s': %s", path,
		    st_name_quote(name, q, sizeof q), fault);
	return masq_err_set(err, st, "%s: %s", path, fault);
}

/* Offset of the first byte of s[0..n) that is not part of a well-formed
 * UTF-8 sequence (no overlongs, surrogates or code points past U+10FFFF),
 * or n when all of it is valid. */
size_t
st_utf8_bad_offset(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned c = s[i];
		size_t len;
		unsigned lo = 0x80, hi = 0xbf;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			len = 2;
		else if (c >= 0xe0 && c <= 0xef) {
			len = 3;
			if (c == 0xe0)
				lo = 0xa0;
			else if (c == 0xed)
				hi = 0x9f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4;
			if (c == 0xf0)
				lo = 0x90;
			else if (c == 0xf4)
				hi = 0x8f;
		} else
			return i;
		if (n - i < len)
			return i;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return i;
		for (size_t k = 2; k < len; k++)
			if (s[i + k] < 0x80 || s[i + k] > 0xbf)
				return i;
		i += len;
	}
	return n;
}

/* A duplicate key found by jansson, located again in the text: the key, the
 * nesting depth of the object holding it (1 = top level) and the last key
 * of the top-level object before it (the owner of a nested object). */
typedef struct dup_info {
	char key[256];
	char outer[256];
	int depth;
} dup_info;

/* Decode the JSON string token buf[a..b) into out (n bytes); 0 on success. */
static int
json_token_string(const char *buf, size_t a, size_t b, char *out, size_t n)
{
	json_t *s = json_loadb(buf + a, b - a, JSON_DECODE_ANY, NULL);

	if (s == NULL || !json_is_string(s)) {
		json_decref(s);
		return -1;
	}
	snprintf(out, n, "%s", json_string_value(s));
	json_decref(s);
	return 0;
}

/* jansson reports a duplicate key with the position just past the key's
 * closing quote but without the key itself; scan buf[0..pos) again to
 * recover it and where it sits.  0 on success. */
static int
dup_locate(const char *buf, size_t len, size_t pos, dup_info *d)
{
	size_t sa = 0, sb = 0;	/* last string token [sa, sb) */
	int sdepth = 0, depth = 0, instr = 0, have = 0;
	size_t oa = 0, ob = 0;	/* last key at depth 1 */
	int haveo = 0;

	if (pos > len)
		return -1;
	for (size_t i = 0; i < pos; i++) {
		char c = buf[i];
		if (instr) {
			if (c == '\\')
				i++;
			else if (c == '"') {
				instr = 0;
				sb = i + 1;
				have = 1;
			}
			continue;
		}
		switch (c) {
		case '"':
			instr = 1;
			sa = i;
			sdepth = depth;
			break;
		case '{': case '[':
			depth++;
			break;
		case '}': case ']':
			depth--;
			break;
		case ':':
			if (have && sdepth == 1) {
				oa = sa;
				ob = sb;
				haveo = 1;
			}
			break;
		default:
			break;
		}
	}
	if (instr || !have || sb != pos)
		return -1;
	if (json_token_string(buf, sa, sb, d->key, sizeof d->key) < 0)
		return -1;
	d->depth = sdepth;
	d->outer[0] = '\0';
	if (haveo && json_token_string(buf, oa, ob, d->outer, sizeof d->outer) < 0)
		return -1;
	return 0;
}

/* Parse buf[0..len) as JSON with duplicate keys rejected; on failure fill
 * dup (when the fault is a duplicate key that could be located) or leave
 * jansson's message in jerr.  Returns the value or NULL. */
static json_t *
json_parse(const char *buf, size_t len, json_error_t *jerr, dup_info *dup,
    int *isdup)
{
	json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, jerr);

	*isdup = 0;
	if (root == NULL && strncmp(jerr->text, "duplicate object key", 20) == 0) {
		/* jansson < 2.11 has no json_error_code(); its text is stable */
		memset(dup, 0, sizeof *dup);
		if (jerr->position >= 0 &&
		    dup_locate(buf, len, (size_t)jerr->position, dup) == 0)
			*isdup = 1;
	}
	return root;
}

/* Fill err for a header that failed to parse. */
static int
header_json_fail(masq_err *err, const char *path, const json_error_t *je,
    const dup_info *d, int isdup)
{
	char q[NAME_QUOTE_MAX + 8], q2[NAME_QUOTE_MAX + 8];

	if (isdup && d->depth == 1) {
		if (strcmp(d->key, "__metadata__") == 0)
			return st_fail(err, MASQ_ERR_FORMAT, path, NULL,
			    "header has two __metadata__ entries");
		return st_fail(err, MASQ_ERR_FORMAT, path, NULL,
		    "duplicate tensor name '%s' in the header",
		    st_name_quote(d->key, q, sizeof q));
	}
	if (isdup && d->depth == 2 && strcmp(d->outer, "__metadata__") == 0)
		return st_fail(err, MASQ_ERR_FORMAT, path, NULL,
		    "__metadata__: duplicate key '%s'", st_name_quote(d->key, q, sizeof q));
	if (isdup && d->depth == 2)
		return st_fail(err, MASQ_ERR_FORMAT, path, d->outer,
		    "duplicate key '%s' in its entry", st_name_quote(d->key, q2, sizeof q2));
	if (strncmp(je->text, "duplicate object key", 20) == 0)
		return st_fail(err, MASQ_ERR_FORMAT, path, NULL,
		    "duplicate key in the JSON header (line %d, column %d)",
		    je->line, je->column);
	return st_fail(err, MASQ_ERR_FORMAT, path, NULL,
	    "header is not valid JSON: %s (line %d, column %d)",
	    je->text, je->line, je->column);
}

/* Name of a JSON value's type, for messages. */
static const char *
json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a real number";
	case JSON_TRUE: case JSON_FALSE: return "a boolean";
	case JSON_NULL: return "null";
	}
	return "?";
}

/* Format shape as "[a, b, c]" into buf. */
const char *
st_shape_str(const int64_t *shape, int ndim, char *buf, size_t n)
{
	size_t o = 0;

	o += (size_t)snprintf(buf, n, "[");
	for (int i = 0; i < ndim && o < n; i++)
		o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "",
		    (long long)shape[i]);
	if (o < n)
		snprintf(buf + o, n - o, "]");
	return buf;
}

/* Validate one header entry v named name into t (name not yet set); the
 * data buffer holds data_size bytes. */
static int
entry_parse(st_tensor *t, const char *path, const char *name, json_t *v,
    uint64_t data_size, masq_err *err)
{
	json_t *dt, *sh, *off;
	char sbuf[256], q[NAME_QUOTE_MAX + 8];
	int64_t b, e;
	uint64_t nbytes;

	if (!json_is_object(v))
		return st_fail(err, MASQ_ERR_FORMAT, path, name,
		    "entry is %s, not an object", json_kind(v));
	if ((dt = json_object_get(v, "dtype")) == NULL)
		return st_fail(err, MASQ_ERR_FORMAT, path, name, "missing \"dtype\"");
	if (!json_is_string(dt))
		return st_fail(err, MASQ_ERR_FORMAT, path, name,
		    "\"dtype\" is %s, not a string", json_kind(dt));
	t->dtype = st_dtype_parse(json_string_value(dt));
	if (t->dtype == ST_DTYPE_INVALID)
		return st_fail(err, MASQ_ERR_FORMAT, path, name,
		    "unknown dtype \"%s\" (supported: F32 F16 BF16 F64 I8 U8 I16 U16 "
		    "I32 U32 I64 U64 BOOL)", st_name_quote(json_string_value(dt), q, sizeof q));

	if ((sh = json_object_get(v, "shape")) == NULL)
		return st_fail(err, MASQ_ERR_FORMAT, path, name, "missing \"shape\"");
	if (!json_is_array(sh))
		return st_fail(err, MASQ_ERR_FORMAT, path, name,
		    "\"shape\" is %s, not an array", json_kind(sh));
	if (json_array_size(sh) > ST_MAX_DIMS)
		return st_fail(err, MASQ_ERR_FORMAT, path, name,
		    "shape has %zu dimensions, more than the %d supported",
		    json_array_size(sh), ST_MAX_DIMS);
	t->ndim = (int)json_array_size(sh);
	for (int i = 0; i < t->ndim; i++) {
		json_t *d = json_array_get(sh, (size_t)i);
		if (!json_is_integer(d))
			return st_fail(err, MASQ_ERR_FORMAT, path, name,
			    "shape[%d] is %s, not an integer", i, json_kind(d));
		if (json_integer_value(d) < 0)
			return st_fail(err, MASQ_ERR_FORMAT, path, name,
			    "shape[%d] is negative (%lld)", i,
			    (long long)json_integer_value(d));
		t->shape[i] = json_integer_value(d);
	}

	if ((off = json_object_get(v, "data_offsets")) == NULL)
		return st_fail(err, MASQ_ERR_FORMAT, path, name, "missing \"data_offsets\"");
	if (!json_is_array(off) || json_array_size(off) != 2 ||
	    !json_is_integer(json_array_get(off, 0)) ||
	    !json_is_integer(json_array_get(off, 1)))
		return st_fail(err, MASQ_ERR_FORMAT, path, name,
		    "\"data_offsets\" is not a [begin, end] pair of integers");
	b = json_integer_value(json_array_get(off, 0));
	e = json_integer_value(json_array_get(off, 1));
	if (b < 0 || e < 0)
		return st_fail(err, MASQ_ERR_FORMAT, path, name,
		    "data_offsets [%lld, %lld] are negative", (long long)b, (long long)e);
	if (b > e)
		return st_fail(err, MASQ_ERR_FORMAT, path, name,
		    "data_offsets [%lld, %lld]: begin is after end", (long long)b, (long long)e);
	t->begin = (uint64_t)b;
	t->end = (uint64_t)e;

	t->nelem = 1;
	for (int i = 0; i < t->ndim; i++)
		if (__builtin_mul_overflow(t->nelem, (uint64_t)t->shape[i], &t->nelem))
			return st_fail(err, MASQ_ERR_FORMAT, path, name,
			    "shape %s: element count overflows 64 bits",
			    st_shape_str(t->shape, t->ndim, sbuf, sizeof sbuf));
	if ((nbytes = st_dtype_bytes(t->dtype, t->nelem)) == UINT64_MAX)
		return st_fail(err, MASQ_ERR_FORMAT, path, name,
		    "shape %s of %s: byte size overflows 64 bits or is not a whole number of bytes",
		    st_shape_str(t->shape, t->ndim, sbuf, sizeof sbuf), st_dtype_name(t->dtype));
	if (t->end - t->begin != nbytes)
		return st_fail(err, MASQ_ERR_FORMAT, path, name,
		    "dtype/shape size mismatch: %s %s needs %llu bytes but "
		    "data_offsets [%llu, %llu] span %llu bytes",
		    st_dtype_name(t->dtype), st_shape_str(t->shape, t->ndim, sbuf, sizeof sbuf),
		    (unsigned long long)nbytes, (unsigned long long)t->begin,
		    (unsigned long long)t->end, (unsigned long long)(t->end - t->begin));
	if (t->end > data_size)
		return st_fail(err, MASQ_ERR_FORMAT, path, name,
		    "data_offsets [%llu, %llu] run past the end of the data buffer "
		    "(%llu bytes; file truncated?)", (unsigned long long)t->begin,
		    (unsigned long long)t->end, (unsigned long long)data_size);
	return 0;
}

/* qsort order of tensors by (begin, end). */
static int
cmp_by_offset(const void *a, const void *b)
{
	const st_tensor *x = *(const st_tensor *const *)a;
	const st_tensor *y = *(const st_tensor *const *)b;

	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return 0;
}

/* qsort order of tensors by name. */
static int
cmp_by_name(const void *a, const void *b)
{
	return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* Check that the tensors tile the data buffer [0, data_size) exactly: no
 * overlap, no hole, nothing after the last one. */
static int
coverage_check(const st_file *f, uint64_t data_size, masq_err *err)
{
	const st_tensor **by = xcalloc((size_t)f->ntensors, sizeof *by);
	char q1[NAME_QUOTE_MAX + 8], q2[NAME_QUOTE_MAX + 8];
	uint64_t pos = 0;
	int rc = 0;

	for (int i = 0; i < f->ntensors; i++)
		by[i] = &f->tensors[i];
	qsort(by, (size_t)f->ntensors, sizeof *by, cmp_by_offset);
	for (int i = 0; i < f->ntensors && rc == 0; i++) {
		const st_tensor *t = by[i];
		if (t->begin < pos)
			rc = st_fail(err, MASQ_ERR_FORMAT, f->path, NULL,
			    "tensors '%s' and '%s' overlap: data_offsets [%llu, %llu] and [%llu, %llu]",
			    st_name_quote(by[i - 1]->name, q1, sizeof q1), st_name_quote(t->name, q2, sizeof q2),
			    (unsigned long long)by[i - 1]->begin, (unsigned long long)by[i - 1]->end,
			    (unsigned long long)t->begin, (unsigned long long)t->end);
		else if (t->begin > pos && i == 0)
			rc = st_fail(err, MASQ_ERR_FORMAT, f->path, NULL,
			    "bytes [0, %llu) of the data buffer belong to no tensor "
			    "(hole before '%s')", (unsigned long long)t->begin,
			    st_name_quote(t->name, q1, sizeof q1));
		else if (t->begin > pos)
			rc = st_fail(err, MASQ_ERR_FORMAT, f->path, NULL,
			    "bytes [%llu, %llu) of the data buffer belong to no tensor "
			    "(hole between '%s' and '%s')", (unsigned long long)pos,
			    (unsigned long long)t->begin, st_name_quote(by[i - 1]->name, q1, sizeof q1),
			    st_name_quote(t->name, q2, sizeof q2));
		pos = t->end;
	}
	if (rc == 0 && pos < data_size) {
		if (f->ntensors == 0)
			rc = st_fail(err, MASQ_ERR_FORMAT, f->path, NULL,
			    "the header declares no tensors but the data buffer holds %llu bytes",
			    (unsigned long long)data_size);
		else
			rc = st_fail(err, MASQ_ERR_FORMAT, f->path, NULL,
			    "bytes [%llu, %llu) of the data buffer belong to no tensor "
			    "(trailing data after the last tensor '%s')", (unsigned long long)pos,
			    (unsigned long long)data_size,
			    st_name_quote(by[f->ntensors - 1]->name, q1, sizeof q1));
	}
	free(by);
	return rc;
}

/* Parse and validate the header at f->map (already mapped, f->map_size
 * bytes, header length n); fills tensors and metadata. */
static int
header_parse(st_file *f, uint64_t n, masq_err *err)
{
	const char *hdr = (const char *)f->map + 8;
	uint64_t data_size = f->map_size - 8 - n;
	json_error_t je;
	dup_info dup;
	int isdup;
	json_t *root, *v;
	const char *key;
	size_t bad;
	int rc = -1;

	if (n == 0)
		return st_fail(err, MASQ_ERR_FORMAT, f->path, NULL,
		    "header length is 0 (no JSON header)");
	bad = st_utf8_bad_offset((const unsigned char *)hdr, (size_t)n);
	if (bad < n) {
		char ctx[32], q[NAME_QUOTE_MAX + 8];
		size_t a = bad > 24 ? bad - 24 : 0, k = 0;
		/* the text just before the fault, printable ASCII only */
		for (size_t i = a; i < bad; i++)
			ctx[k++] = (hdr[i] >= 0x20 && hdr[i] < 0x7f) ? hdr[i] : '?';
		ctx[k] = '\0';
		return st_fail(err, MASQ_ERR_FORMAT, f->path, NULL,
		    "header is not valid UTF-8: byte 0x%02x at header offset %zu "
		    "(file offset %zu), after '%s'", (unsigned char)hdr[bad], bad,
		    bad + 8, st_name_quote(ctx, q, sizeof q));
	}
	root = json_parse(hdr, (size_t)n, &je, &dup, &isdup);
	if (root == NULL)
		return header_json_fail(err, f->path, &je, &dup, isdup);
	if (!json_is_object(root)) {
		st_fail(err, MASQ_ERR_FORMAT, f->path, NULL,
		    "header is %s, not a JSON object", json_kind(root));
		goto out;
	}

	f->tensors = xcalloc(json_object_size(root), sizeof *f->tensors);
	json_object_foreach(root, key, v) {
		if (strcmp(key, "__metadata__") == 0) {
			const char *mk;
			json_t *mv;
			char q[NAME_QUOTE_MAX + 8];

			if (!json_is_object(v)) {
				st_fail(err, MASQ_ERR_FORMAT, f->path, NULL,
				    "__metadata__ is %s, not an object", json_kind(v));
				goto out;
			}
			f->meta_keys = xcalloc(json_object_size(v), sizeof *f->meta_keys);
			f->meta_values = xcalloc(json_object_size(v), sizeof *f->meta_values);
			json_object_foreach(v, mk, mv) {
				if (!json_is_string(mv)) {
					st_fail(err, MASQ_ERR_FORMAT, f->path, NULL,
					    "__metadata__ key '%s': value is %s, not a string",
					    st_name_quote(mk, q, sizeof q), json_kind(mv));
					goto out;
				}
				f->meta_keys[f->nmeta] = xstrdup(mk);
				f->meta_values[f->nmeta] = xstrdup(json_string_value(mv));
				f->nmeta++;
			}
			continue;
		}
		st_tensor *t = &f->tensors[f->ntensors];
		if (entry_parse(t, f->path, key, v, data_size, err) < 0)
			goto out;
		t->name = xstrdup(key);
		f->ntensors++;
	}
	if (coverage_check(f, data_size, err) < 0)
		goto out;
	qsort(f->tensors, (size_t)f->ntensors, sizeof *f->tensors, cmp_by_name);
	for (int i = 0; i < f->ntensors; i++) {
		st_tensor *t = &f->tensors[i];
		t->data = t->end > t->begin ?
		    (const char *)f->map + f->data_offset + t->begin : NULL;
		t->file = 0;
	}
	rc = 0;
out:
	json_decref(root);
	return rc;
}

/* Open, map and validate path into f; f is zeroed on failure. */
int
st_open(st_file *f, const char *path, masq_err *err)
{
	struct stat sb;
	unsigned char lenbuf[8];
	uint64_t n = 0;
	int fd;

	memset(f, 0, sizeof *f);
	masq_err oe = {0};
	fd = masq_open_regular(path, &oe);
	if (fd < 0) {
		*err = oe;
		return -1;
	}
	if (fstat(fd, &sb) < 0) {
		int e = errno;
		close(fd);
		return st_fail(err, MASQ_ERR_IO, path, NULL, "%s", strerror(e));
	}
	if (!S_ISREG(sb.st_mode)) {
		close(fd);
		return st_fail(err, MASQ_ERR_IO, path, NULL, "not a regular file");
	}
	if (sb.st_size < 8) {
		close(fd);
		return st_fail(err, MASQ_ERR_FORMAT, path, NULL,
		    "file is %lld bytes, too short for the 8-byte header length",
		    (long long)sb.st_size);
	}
	if ((uint64_t)sb.st_size > SIZE_MAX) {
		close(fd);
		return st_fail(err, MASQ_ERR_IO, path, NULL, "file too large to map");
	}
	f->map_size = (size_t)sb.st_size;
	f->map = mmap(NULL, f->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (f->map == MAP_FAILED) {
		int e = errno;
		close(fd);
		memset(f, 0, sizeof *f);
		return st_fail(err, MASQ_ERR_IO, path, NULL, "mmap: %s", strerror(e));
	}
	close(fd);
	f->path = xstrdup(path);

	memcpy(lenbuf, f->map, 8);
	for (int i = 7; i >= 0; i--)
		n = n << 8 | lenbuf[i];
	if (n > ST_MAX_HEADER) {
		st_fail(err, MASQ_ERR_FORMAT, path, NULL,
		    "header length %llu exceeds the limit of %u bytes (not a safetensors file?)",
		    (unsigned long long)n, ST_MAX_HEADER);
		goto fail;
	}
	if (n > f->map_size - 8) {
		st_fail(err, MASQ_ERR_FORMAT, path, NULL,
		    "header length %llu runs past the end of the file (%zu bytes)",
		    (unsigned long long)n, f->map_size);
		goto fail;
	}
	f->data_offset = 8 + (size_t)n;
	if (header_parse(f, n, err) < 0)
		goto fail;
	return 0;
fail:
	st_close(f);
	return -1;
}

/* Unmap f and free everything it holds; safe on a zeroed st_file. */
void
st_close(st_file *f)
{
	if (f->map != NULL && f->map != MAP_FAILED)
		munmap(f->map, f->map_size);
	if (f->tensors != NULL)
		for (int i = 0; i < f->ntensors; i++)
			free(f->tensors[i].name);
	free(f->tensors);
	for (int i = 0; i < f->nmeta; i++) {
		free(f->meta_keys[i]);
		free(f->meta_values[i]);
	}
	free(f->meta_keys);
	free(f->meta_values);
	free(f->path);
	memset(f, 0, sizeof *f);
}

/* bsearch key comparison: a name against a tensor. */
static int
cmp_name_tensor(const void *key, const void *elem)
{
	return strcmp(key, ((const st_tensor *)elem)->name);
}

/* The tensor called name in f, or NULL. */
const st_tensor *
st_find(const st_file *f, const char *name)
{
	if (f->ntensors == 0)
		return NULL;
	return bsearch(name, f->tensors, (size_t)f->ntensors, sizeof *f->tensors,
	    cmp_name_tensor);
}

/* Value of the __metadata__ key, or NULL. */
const char *
st_meta_get(const st_file *f, const char *key)
{
	for (int i = 0; i < f->nmeta; i++)
		if (strcmp(f->meta_keys[i], key) == 0)
			return f->meta_values[i];
	return NULL;
}

/* ---- sets of shards ----------------------------------------------------- */

/* qsort order of tensor pointers by name. */
static int
cmp_ptr_by_name(const void *a, const void *b)
{
	return strcmp((*(const st_tensor *const *)a)->name,
	    (*(const st_tensor *const *)b)->name);
}

/* bsearch: a name against a tensor pointer. */
static int
cmp_name_ptr(const void *key, const void *elem)
{
	return strcmp(key, (*(const st_tensor *const *)elem)->name);
}

/* qsort / bsearch order of C strings held by pointer. */
static int
cmp_str_ptr(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Build s->index from every tensor of s->files and check no name is held by
 * two files. */
static int
set_index_build(st_set *s, masq_err *err)
{
	size_t total = 0;
	char q[NAME_QUOTE_MAX + 8];

	for (int i = 0; i < s->nfiles; i++)
		total += (size_t)s->files[i].ntensors;
	if (total > (size_t)0x7fffffff)
		return st_fail(err, MASQ_ERR_FORMAT, s->dir, NULL, "too many tensors");
	s->index = xcalloc(total, sizeof *s->index);
	for (int i = 0; i < s->nfiles; i++)
		for (int k = 0; k < s->files[i].ntensors; k++) {
			s->files[i].tensors[k].file = i;
			s->index[s->ntensors++] = &s->files[i].tensors[k];
		}
	qsort(s->index, total, sizeof *s->index, cmp_ptr_by_name);
	for (int i = 1; i < s->ntensors; i++)
		if (strcmp(s->index[i - 1]->name, s->index[i]->name) == 0)
			return st_fail(err, MASQ_ERR_FORMAT, s->dir, NULL,
			    "tensor '%s' is stored in two shards: %s and %s",
			    st_name_quote(s->index[i]->name, q, sizeof q),
			    s->files[s->index[i - 1]->file].path, s->files[s->index[i]->file].path);
	return 0;
}

/* Open the shards named by the index file ipath into s. */
static int
set_open_index(st_set *s, const char *ipath, masq_err *err)
{
	char *text, q[NAME_QUOTE_MAX + 8], q2[NAME_QUOTE_MAX + 8];
	size_t len, nmap, nd = 0;
	json_error_t je;
	dup_info dup;
	int isdup, rc = -1;
	json_t *root, *wm, *v;
	const char *key, **names = NULL;

	if ((text = masq_read_file(ipath, ST_MAX_HEADER, &len, err)) == NULL)
		return -1;
	root = json_parse(text, len, &je, &dup, &isdup);
	if (root == NULL) {
		if (isdup && dup.depth == 2 && strcmp(dup.outer, "weight_map") == 0)
			st_fail(err, MASQ_ERR_FORMAT, ipath, NULL,
			    "weight_map lists tensor '%s' twice", st_name_quote(dup.key, q, sizeof q));
		else if (isdup)
			st_fail(err, MASQ_ERR_FORMAT, ipath, NULL, "duplicate key '%s'",
			    st_name_quote(dup.key, q, sizeof q));
		else
			st_fail(err, MASQ_ERR_FORMAT, ipath, NULL,
			    "not valid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
		free(text);
		return -1;
	}
	free(text);
	if (!json_is_object(root)) {
		st_fail(err, MASQ_ERR_FORMAT, ipath, NULL, "top level is %s, not an object",
		    json_kind(root));
		goto out;
	}
	wm = json_object_get(root, "weight_map");
	if (wm == NULL || !json_is_object(wm)) {
		st_fail(err, MASQ_ERR_FORMAT, ipath, NULL, "%s",
		    wm == NULL ? "missing \"weight_map\"" : "\"weight_map\" is not an object");
		goto out;
	}

	/* the distinct shard file names, sorted */
	nmap = json_object_size(wm);
	names = xcalloc(nmap, sizeof *names);
	json_object_foreach(wm, key, v) {
		const char *fn;
		if (!json_is_string(v)) {
			st_fail(err, MASQ_ERR_FORMAT, ipath, NULL,
			    "weight_map: tensor '%s': file name is %s, not a string",
			    st_name_quote(key, q, sizeof q), json_kind(v));
			goto out;
		}
		fn = json_string_value(v);
		if (fn[0] == '\0' || strchr(fn, '/') != NULL || strcmp(fn, ".") == 0 ||
		    strstr(fn, "..") != NULL) {
			st_fail(err, MASQ_ERR_FORMAT, ipath, NULL,
			    "weight_map: tensor '%s': shard file name '%s' is not a plain "
			    "file name in the model directory", st_name_quote(key, q, sizeof q),
			    st_name_quote(fn, q2, sizeof q2));
			goto out;
		}
		names[nd++] = fn;
	}
	qsort(names, nd, sizeof *names, cmp_str_ptr);
	{
		size_t u = 0;
		for (size_t i = 0; i < nd; i++)
			if (u == 0 || strcmp(names[u - 1], names[i]) != 0)
				names[u++] = names[i];
		nd = u;
	}

	s->files = xcalloc(nd, sizeof *s->files);
	for (size_t i = 0; i < nd; i++) {
		char *p = masq_path_join(s->dir, names[i]);
		struct stat sb;
		if (stat(p, &sb) < 0 && errno == ENOENT) {
			st_fail(err, MASQ_ERR_FORMAT, ipath, NULL,
			    "weight_map names shard '%s', which does not exist in %s",
			    st_name_quote(names[i], q, sizeof q), s->dir);
			free(p);
			goto out;
		}
		if (masq_check_within(s->dir, p, err) < 0 || st_open(&s->files[i], p, err) < 0) {
			free(p);
			goto out;
		}
		free(p);
		s->nfiles++;
	}
	if (set_index_build(s, err) < 0)
		goto out;

	/* every weight_map entry is in its shard ... */
	json_object_foreach(wm, key, v) {
		const char *fn = json_string_value(v), **np;
		const st_tensor *const *other;
		int fi;

		np = bsearch(&fn, names, nd, sizeof *names, cmp_str_ptr);
		MASQ_ASSERT(np != NULL);
		fi = (int)(np - names);
		if (st_find(&s->files[fi], key) != NULL)
			continue;
		other = s->ntensors > 0 ? bsearch(key, s->index, (size_t)s->ntensors,
		    sizeof *s->index, cmp_name_ptr) : NULL;
		if (other != NULL)
			st_fail(err, MASQ_ERR_FORMAT, ipath, NULL,
			    "weight_map puts tensor '%s' in %s, but it is stored in %s",
			    st_name_quote(key, q, sizeof q), fn, s->files[(*other)->file].path);
		else
			st_fail(err, MASQ_ERR_FORMAT, ipath, NULL,
			    "weight_map puts tensor '%s' in %s, but that shard does not contain it",
			    st_name_quote(key, q, sizeof q), fn);
		goto out;
	}
	/* ... and every shard tensor is in the weight_map */
	for (int i = 0; i < s->ntensors; i++)
		if (json_object_get(wm, s->index[i]->name) == NULL) {
			st_fail(err, MASQ_ERR_FORMAT, s->files[s->index[i]->file].path,
			    s->index[i]->name,
			    "not listed in the weight_map of model.safetensors.index.json");
			goto out;
		}
	rc = 0;
out:
	free(names);
	json_decref(root);
	return rc;
}

/* Open the safetensors of model directory dir into s; s is zeroed on
 * failure. */
int
st_set_open_dir(st_set *s, const char *dir, masq_err *err)
{
	struct stat sb;
	char *ipath, *spath;
	int rc;

	memset(s, 0, sizeof *s);
	if (stat(dir, &sb) < 0)
		return st_fail(err, MASQ_ERR_IO, dir, NULL, "%s", strerror(errno));
	if (!S_ISDIR(sb.st_mode))
		return st_fail(err, MASQ_ERR_IO, dir, NULL, "not a directory");
	s->dir = xstrdup(dir);
	ipath = masq_path_join(dir, "model.safetensors.index.json");
	spath = masq_path_join(dir, "model.safetensors");
	if (stat(ipath, &sb) == 0) {
		rc = masq_check_within(dir, ipath, err) < 0 ? -1 : set_open_index(s, ipath, err);
	} else if (stat(spath, &sb) == 0) {
		s->files = xcalloc(1, sizeof *s->files);
		rc = masq_check_within(dir, spath, err) < 0 ? -1 : st_open(&s->files[0], spath, err);
		if (rc == 0) {
			s->nfiles = 1;
			rc = set_index_build(s, err);
		}
	} else {
		rc = st_fail(err, MASQ_ERR_FORMAT, dir, NULL,
		    "no model.safetensors or model.safetensors.index.json");
	}
	free(ipath);
	free(spath);
	if (rc < 0)
		st_set_close(s);
	return rc;
}

/* Close every shard of s and free it; safe on a zeroed st_set. */
void
st_set_close(st_set *s)
{
	for (int i = 0; i < s->nfiles; i++)
		st_close(&s->files[i]);
	free(s->files);
	free(s->index);
	free(s->dir);
	memset(s, 0, sizeof *s);
}

/* The tensor called name in any shard of s, or NULL. */
const st_tensor *
st_set_find(const st_set *s, const char *name)
{
	const st_tensor *const *p;

	if (s->ntensors == 0)
		return NULL;
	p = bsearch(name, s->index, (size_t)s->ntensors, sizeof *s->index, cmp_name_ptr);
	return p != NULL ? *p : NULL;
}

/* Path of the shard holding t. */
const char *
st_set_file_path(const st_set *s, const st_tensor *t)
{
	MASQ_ASSERT(t->file >= 0 && t->file < s->nfiles);
	return s->files[t->file].path;
}

/* A new float32 array (caller frees) with t's values, or NULL when t is not
 * a float tensor. */
float *
st_tensor_to_f32(const st_tensor *t)
{
	float *x;

	if (!st_dtype_is_float(t->dtype))
		return NULL;
	x = xmalloc(xmul((size_t)t->nelem, sizeof *x));
	if (t->nelem > 0)
		st_to_f32(x, t->data, t->dtype, (size_t)t->nelem);
	return x;
}

void
st_tensor_release(const st_tensor *t)
{
	if (t == NULL || t->data == NULL || t->end <= t->begin)
		return;
	long pg = sysconf(_SC_PAGESIZE);
	if (pg <= 0)
		return;
	uintptr_t a = (uintptr_t)t->data, b = a + (uintptr_t)(t->end - t->begin);
	uintptr_t lo = (a + (uintptr_t)pg - 1) / (uintptr_t)pg * (uintptr_t)pg;
	uintptr_t hi = b / (uintptr_t)pg * (uintptr_t)pg;
	/* only whole pages: a page shared with a neighbour stays */
	if (hi > lo)
		(void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}
