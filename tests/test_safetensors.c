/*
 * test_safetensors.c: the streaming writer and the mmap reader.
 *
 * Writes files with every common dtype, a 0-rank and an empty tensor and
 * metadata into $builddir/work/test_safetensors/, reads them back (shapes,
 * bytes, offsets, alignment, __metadata__), opens a sharded model
 * directory through a hand-written index, and checks the writer's and the
 * reader's error paths.  The malformed-file corpus is tests/corpus.sh.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/safetensors.h"
#include "tests/tap.h"

static char workdir[4096];

/* workdir/name in a static buffer (one at a time per slot). */
static const char *
wpath(int slot, const char *name)
{
	static char buf[4][4352];
	snprintf(buf[slot], sizeof buf[slot], "%s/%s", workdir, name);
	return buf[slot];
}

/* Write len bytes to path; 0 on success. */
static int
write_bytes(const char *path, const void *p, size_t len)
{
	FILE *fp = fopen(path, "wb");
	int ok;

	if (fp == NULL)
		return -1;
	ok = fwrite(p, 1, len, fp) == len;
	return fclose(fp) == 0 && ok ? 0 : -1;
}

/* True when path exists. */
static int
file_exists(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0;
}

/* Size of path in bytes, or -1. */
static long long
file_size(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

/* The declared tensors of the all-dtypes file, in declaration order:
 * larger elements first, so each begins at a multiple of its size (the
 * writer refuses anything else). */
static const struct {
	const char *name;
	st_dtype dt;
	int ndim;
	int64_t shape[3];
} decl[] = {
	{ "f64.vec", ST_F64, 1, { 2 } },
	{ "i64.scalar", ST_I64, 0, { 0 } },
	{ "f32.matrix", ST_F32, 2, { 2, 3 } },
	{ "i32.mat", ST_I32, 2, { 1, 3 } },
	{ "f16.vec", ST_F16, 1, { 5 } },
	{ "bf16.vec", ST_BF16, 1, { 3 } },
	{ "i8.vec", ST_I8, 1, { 7 } },
	{ "u8.empty", ST_U8, 2, { 0, 4 } },
	{ "u8.tail", ST_U8, 1, { 3 } },
};
#define NDECL ((int)(sizeof decl / sizeof decl[0]))

static const float f32v[6] = { 1.0f, -2.0f, 0.5f, 3.25f, -0.125f, 100.0f };
static const float f16v[5] = { 1.0f, 0.333f, -65504.0f, 0x1p-24f, 2049.0f };
static const float bf16v[3] = { 1.0f, 3.0e38f, -1.00390625f };
static const int8_t i8v[7] = { -128, -1, 0, 1, 2, 3, 127 };
static const int32_t i32v[3] = { -7, 0, 2147483647 };
static const int64_t i64v = -1234567890123LL;
static const float f64v[2] = { 0.25f, -8.0f };
static const uint8_t u8v[3] = { 0, 128, 255 };

/* Write the all-dtypes file with tensor data in pieces of every kind. */
static int
write_all_dtypes(const char *path, uint64_t *size, masq_err *err)
{
	st_writer *w = st_writer_new();
	int rc = -1;

	for (int i = 0; i < NDECL; i++)
		if (st_writer_add(w, decl[i].name, decl[i].dt, decl[i].ndim, decl[i].shape, err) < 0)
			goto out;
	if (st_writer_meta(w, "source", "test_safetensors", err) < 0 ||
	    st_writer_meta(w, "masq.version", "1", err) < 0)
		goto out;
	*size = st_writer_size(w);
	if (st_writer_begin(w, path, err) < 0)
		goto out;
	/* f64 converted, f32 in two pieces, f16 and bf16 converted, ints raw,
	 * i8 and the first byte of u8.tail (after the empty u8) in one piece */
	if (st_writer_write_f32(w, f64v, 2, err) < 0 ||
	    st_writer_write(w, &i64v, 8, err) < 0 ||
	    st_writer_write_f32(w, f32v, 2, err) < 0 ||
	    st_writer_write_f32(w, f32v + 2, 4, err) < 0 ||
	    st_writer_write(w, i32v, 12, err) < 0 ||
	    st_writer_write_f32(w, f16v, 5, err) < 0 ||
	    st_writer_write_f32(w, bf16v, 3, err) < 0)
		goto out;
	{
		unsigned char piece[7 + 1];
		memcpy(piece, i8v, 7);
		piece[7] = u8v[0];
		if (st_writer_write(w, piece, sizeof piece, err) < 0)
			goto out;
	}
	if (st_writer_write(w, u8v + 1, 2, err) < 0 ||
	    st_writer_write(w, u8v, 0, err) < 0)
		goto out;
	rc = st_writer_finish(w, err);
out:
	st_writer_free(w);
	return rc;
}

/* Write every dtype, read it back field by field. */
static void
test_roundtrip(void)
{
	masq_err err = {0};
	const char *path = wpath(0, "all.safetensors");
	uint64_t size = 0, hlen = 0;
	st_file f;
	int bad;

	if (!tap_ok(write_all_dtypes(path, &size, &err) == 0, "writer: all dtypes written")) {
		tap_diag("%s", err.msg);
		return;
	}
	tap_ok((long long)size == file_size(path), "st_writer_size (%llu) equals the file size (%lld)",
	    (unsigned long long)size, file_size(path));
	if (!tap_ok(st_open(&f, path, &err) == 0, "reader: file opens")) {
		tap_diag("%s", err.msg);
		return;
	}
	tap_ok(f.ntensors == NDECL, "reader: %d tensors", f.ntensors);
	tap_ok(f.data_offset % 8 == 0, "data starts 8-aligned (8 + N = %zu)", f.data_offset);
	memcpy(&hlen, f.map, 8);	/* little-endian host */
	tap_ok(hlen + 8 == f.data_offset && ((const char *)f.map)[f.data_offset - 1] != '\0',
	    "header length field matches");
	tap_ok(strncmp((const char *)f.map + 8, "{\"__metadata__\":{\"format\":\"pt\"", 30) == 0,
	    "header starts with __metadata__ and format pt");
	tap_ok(f.nmeta == 3 && strcmp(f.meta_keys[0], "format") == 0 &&
	    strcmp(f.meta_keys[1], "source") == 0 && strcmp(f.meta_keys[2], "masq.version") == 0,
	    "__metadata__ keys in order: format, source, masq.version");
	tap_streq(st_meta_get(&f, "format"), "pt", "__metadata__ format is pt");
	tap_streq(st_meta_get(&f, "source"), "test_safetensors", "__metadata__ source");
	tap_ok(st_meta_get(&f, "missing") == NULL, "absent metadata key is NULL");

	bad = 0;
	for (int i = 1; i < f.ntensors; i++)
		bad += strcmp(f.tensors[i - 1].name, f.tensors[i].name) >= 0;
	tap_ok(bad == 0, "tensors sorted by name");

	/* shapes, dtypes, contiguous offsets in declaration order */
	uint64_t off = 0;
	bad = 0;
	for (int i = 0; i < NDECL; i++) {
		const st_tensor *t = st_find(&f, decl[i].name);
		uint64_t n = 1;
		if (t == NULL) {
			tap_diag("missing %s", decl[i].name);
			bad++;
			continue;
		}
		for (int k = 0; k < decl[i].ndim; k++)
			n *= (uint64_t)decl[i].shape[k];
		bad += t->dtype != decl[i].dt || t->ndim != decl[i].ndim || t->nelem != n ||
		    t->begin != off || t->end != off + n * st_dtype_size(decl[i].dt) ||
		    t->file != 0 || (n == 0) != (t->data == NULL);
		for (int k = 0; k < decl[i].ndim; k++)
			bad += t->shape[k] != decl[i].shape[k];
		off = t->end;
	}
	tap_ok(bad == 0, "every tensor has its dtype, shape, nelem and contiguous offsets");
	tap_ok(off == f.map_size - f.data_offset, "tensors cover the data buffer exactly");
	tap_ok(st_find(&f, "nope") == NULL && st_find(&f, "") == NULL, "st_find of an absent name is NULL");

	/* contents */
	const st_tensor *t;
	float *x;
	t = st_find(&f, "f32.matrix");
	tap_ok(t && memcmp(t->data, f32v, sizeof f32v) == 0, "F32 bytes");
	x = st_tensor_to_f32(t);
	tap_ok(x && memcmp(x, f32v, sizeof f32v) == 0, "F32 to f32");
	free(x);
	t = st_find(&f, "f16.vec");
	x = t ? st_tensor_to_f32(t) : NULL;
	bad = x == NULL;
	for (int i = 0; x && i < 5; i++)
		bad += x[i] != f16_to_f32(f32_to_f16(f16v[i]));
	tap_ok(bad == 0, "F16 values (converted by the writer) read back");
	free(x);
	t = st_find(&f, "bf16.vec");
	x = t ? st_tensor_to_f32(t) : NULL;
	tap_ok(x && x[0] == 1.0f && x[1] == bf16_to_f32(0x7f62) && x[2] == -1.0f,
	    "BF16 values rounded to nearest even");
	free(x);
	t = st_find(&f, "f64.vec");
	x = t ? st_tensor_to_f32(t) : NULL;
	tap_ok(x && x[0] == 0.25f && x[1] == -8.0f, "F64 written from float32 and read back");
	free(x);
	t = st_find(&f, "i8.vec");
	tap_ok(t && memcmp(t->data, i8v, 7) == 0, "I8 bytes");
	tap_ok(st_tensor_to_f32(t) == NULL, "st_tensor_to_f32 is NULL for an integer tensor");
	t = st_find(&f, "i32.mat");
	tap_ok(t && memcmp(t->data, i32v, 12) == 0, "I32 bytes at an unaligned offset");
	t = st_find(&f, "i64.scalar");
	tap_ok(t && t->ndim == 0 && t->nelem == 1 && memcmp(t->data, &i64v, 8) == 0, "0-rank I64");
	t = st_find(&f, "u8.empty");
	tap_ok(t && t->nelem == 0 && t->data == NULL && t->begin == t->end, "empty U8 [0, 4] has no data");
	t = st_find(&f, "u8.tail");
	tap_ok(t && memcmp(t->data, u8v, 3) == 0, "U8 bytes written in two pieces");
	st_close(&f);
	st_close(&f);	/* closing twice is harmless */
	tap_ok(f.map == NULL && f.tensors == NULL, "st_close zeroes the file");

	/* the header without metadata: still has format pt */
	st_writer *w = st_writer_new();
	int64_t one = 1;
	float v = 7.0f;
	const char *p2 = wpath(1, "tiny.safetensors");
	int ok = st_writer_add(w, "x", ST_F32, 1, &one, &err) == 0 &&
	    st_writer_begin(w, p2, &err) == 0 && st_writer_write_f32(w, &v, 1, &err) == 0 &&
	    st_writer_finish(w, &err) == 0;
	st_writer_free(w);
	tap_ok(ok && st_open(&f, p2, &err) == 0 && f.nmeta == 1 &&
	    strcmp(st_meta_get(&f, "format"), "pt") == 0 && f.data_offset % 8 == 0,
	    "a file without user metadata has __metadata__ {format: pt}");
	st_close(&f);

	/* no tensors at all */
	w = st_writer_new();
	ok = st_writer_begin(w, p2, &err) == 0 && st_writer_finish(w, &err) == 0;
	st_writer_free(w);
	tap_ok(ok && st_open(&f, p2, &err) == 0 && f.ntensors == 0 && f.map_size == f.data_offset,
	    "a file with no tensors round-trips");
	st_close(&f);
}

/* Hand-built file whose header length is not a multiple of 8 (unaligned
 * data), as other writers may produce. */
static void
test_unaligned(void)
{
	masq_err err = {0};
	const char *hdr = "{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
	unsigned char buf[256];
	size_t n = strlen(hdr);
	float v[2] = { 1.5f, -3.0f }, *x;
	st_file f;

	for (int i = 0; i < 8; i++)
		buf[i] = (unsigned char)((uint64_t)n >> (8 * i));
	memcpy(buf + 8, hdr, n);
	memcpy(buf + 8 + n, v, 8);
	write_bytes(wpath(0, "unaligned.safetensors"), buf, 16 + n);
	if (!tap_ok(st_open(&f, wpath(0, "unaligned.safetensors"), &err) == 0,
	    "unaligned header (8 + N = %zu) opens", 8 + n)) {
		tap_diag("%s", err.msg);
		return;
	}
	x = st_tensor_to_f32(st_find(&f, "b"));
	tap_ok(x && x[0] == 1.5f && x[1] == -3.0f, "unaligned F32 data converts");
	free(x);
	st_close(&f);
}

/* Every refusal of the writer, and removal of partial files. */
static void
test_writer_errors(void)
{
	masq_err err = {0};
	st_writer *w = st_writer_new();
	int64_t s2[2] = { 2, 2 }, neg[1] = { -1 }, big[2] = { INT64_C(1) << 40, INT64_C(1) << 40 };
	int64_t nine[9] = { 1, 1, 1, 1, 1, 1, 1, 1, 1 };
	const char *path = wpath(0, "werr.safetensors");
	unsigned char zeros[64] = {0};
	float fv[8] = {0};

	tap_ok(st_writer_add(w, "a", ST_F32, 2, s2, &err) == 0, "writer: add a");
	tap_ok(st_writer_add(w, "a", ST_F32, 2, s2, &err) < 0, "writer: duplicate name refused");
	tap_contains(err.msg, "tensor 'a': duplicate tensor name", "duplicate message names the tensor");
	tap_ok(st_writer_add(w, "", ST_F32, 2, s2, &err) < 0, "writer: empty name refused");
	tap_ok(st_writer_add(w, "__metadata__", ST_F32, 2, s2, &err) < 0, "writer: __metadata__ refused");
	tap_ok(st_writer_add(w, "bad\xff", ST_F32, 2, s2, &err) < 0, "writer: non-UTF-8 name refused");
	tap_ok(st_writer_add(w, "d", ST_DTYPE_INVALID, 2, s2, &err) < 0 &&
	    st_writer_add(w, "d", ST_DTYPE_COUNT, 2, s2, &err) < 0, "writer: bad dtype refused");
	{
		/* alignment: after 3 bytes of U8 an F32 would sit at offset 3 */
		st_writer *w2 = st_writer_new();
		int64_t three[1] = {3}, one[1] = {1}, f4odd[1] = {3};
		tap_ok(st_writer_add(w2, "u", ST_U8, 1, three, &err) == 0 &&
		    st_writer_add(w2, "f", ST_F32, 1, one, &err) < 0, "writer: a tensor off its element size refused");
		tap_contains(err.msg, "not aligned to its 4-byte elements", "the message says why");
		tap_ok(st_writer_add(w2, "h", ST_F4, 1, f4odd, &err) < 0, "writer: an F4 tensor of half a byte refused");
		st_writer_free(w2);
	}
	tap_ok(st_writer_add(w, "n", ST_F32, 1, neg, &err) < 0, "writer: negative dim refused");
	tap_contains(err.msg, "shape[0] is negative", "negative dim message");
	tap_ok(st_writer_add(w, "o", ST_F32, 2, big, &err) < 0, "writer: byte size overflow refused");
	tap_ok(st_writer_add(w, "o", ST_U8, 9, nine, &err) < 0 &&
	    st_writer_add(w, "o", ST_U8, -1, nine, &err) < 0, "writer: ndim outside 0..8 refused");
	tap_ok(st_writer_meta(w, "format", "np", &err) < 0, "writer: metadata 'format' is reserved");
	tap_ok(st_writer_meta(w, "k", "v", &err) == 0 && st_writer_meta(w, "k", "w", &err) < 0,
	    "writer: metadata key set twice refused");
	tap_ok(st_writer_add(w, "i", ST_I32, 1, s2, &err) == 0, "writer: add i");
	tap_ok(st_writer_write(w, zeros, 4, &err) < 0, "writer: data before begin refused");
	tap_ok(st_writer_begin(w, path, &err) == 0, "writer: begin");
	tap_ok(st_writer_add(w, "late", ST_F32, 2, s2, &err) < 0, "writer: add after begin refused");
	tap_ok(st_writer_meta(w, "late", "x", &err) < 0, "writer: metadata after begin refused");
	tap_ok(st_writer_write_f32(w, fv, 5, &err) < 0, "writer: f32 piece spanning two tensors refused");
	tap_contains(err.msg, "tensor 'a': 5 values written but only 4 remain", "span message");
	tap_ok(st_writer_write(w, zeros, 2, &err) == 0, "writer: 2 raw bytes");
	tap_ok(st_writer_write_f32(w, fv, 1, &err) < 0, "writer: f32 inside an element refused");
	tap_ok(st_writer_write(w, zeros, 14, &err) == 0, "writer: rest of a");
	tap_ok(st_writer_write_f32(w, fv, 1, &err) < 0, "writer: f32 into an I32 tensor refused");
	tap_contains(err.msg, "float values written to a I32 tensor", "dtype message");
	tap_ok(st_writer_write(w, zeros, 9, &err) < 0, "writer: more bytes than declared refused");
	tap_contains(err.msg, "past the 24 data bytes declared", "too-many-bytes message");
	tap_contains(err.msg, path, "too-many-bytes message names the file");
	tap_ok(st_writer_write(w, zeros, 4, &err) == 0, "writer: 4 of 8 bytes of i");
	tap_ok(st_writer_finish(w, &err) < 0, "writer: finish with missing bytes fails");
	tap_contains(err.msg, "only 20 of the 24 declared data bytes were written (tensor 'i' is incomplete)",
	    "missing-bytes message");
	tap_ok(!file_exists(path), "writer: the partial file was removed");
	tap_ok(st_writer_write(w, zeros, 1, &err) < 0 && st_writer_finish(w, &err) < 0,
	    "writer: a failed writer refuses further work");
	st_writer_free(w);

	/* freeing a begun writer removes its partial file */
	w = st_writer_new();
	st_writer_add(w, "a", ST_F32, 2, s2, &err);
	st_writer_begin(w, path, &err);
	st_writer_write(w, zeros, 3, &err);
	st_writer_free(w);
	tap_ok(!file_exists(path), "writer: st_writer_free without finish removes the file");

	/* cannot create */
	w = st_writer_new();
	tap_ok(st_writer_begin(w, wpath(1, "no/such/dir/x.safetensors"), &err) < 0 &&
	    err.status == MASQ_ERR_IO, "writer: uncreatable path is an I/O error");
	tap_contains(err.msg, "no/such/dir/x.safetensors: cannot create", "create message names the path");
	st_writer_free(w);

	/* a full disk: /dev/full fails the flush with ENOSPC (and is not removed) */
	if (access("/dev/full", W_OK) == 0) {
		static unsigned char big1[1 << 16];
		int64_t n = sizeof big1;
		int rc = 0;
		w = st_writer_new();
		st_writer_add(w, "a", ST_U8, 1, &n, &err);
		if (st_writer_begin(w, "/dev/full", &err) == 0 &&
		    st_writer_write(w, big1, sizeof big1, &err) == 0)
			rc = st_writer_finish(w, &err);
		else
			rc = -1;
		tap_ok(rc < 0 && err.status == MASQ_ERR_IO, "writer: ENOSPC is an I/O error");
		tap_contains(err.msg, strerror(ENOSPC), "ENOSPC message");
		tap_ok(file_exists("/dev/full"), "writer: a device is never removed");
		st_writer_free(w);
	} else {
		tap_ok(1, "# SKIP no /dev/full");
	}
}

/* Write a shard holding the named F32 [2] tensors (values from base). */
static int
write_shard(const char *path, const char *const *names, int n, float base, masq_err *err)
{
	st_writer *w = st_writer_new();
	int64_t two = 2;
	int rc = -1;

	for (int i = 0; i < n; i++)
		if (st_writer_add(w, names[i], ST_F32, 1, &two, err) < 0)
			goto out;
	if (st_writer_begin(w, path, err) < 0)
		goto out;
	for (int i = 0; i < n; i++) {
		float v[2] = { base + (float)i, -(base + (float)i) };
		if (st_writer_write_f32(w, v, 2, err) < 0)
			goto out;
	}
	rc = st_writer_finish(w, err);
out:
	st_writer_free(w);
	return rc;
}

/* A two-shard directory through a hand-written index, a single file, none. */
static void
test_sharded(void)
{
	masq_err err = {0};
	const char *dir = wpath(0, "sharded");
	char p[4608];
	const char *n1[] = { "model.norm.weight", "model.layers.0.mlp.up_proj.weight" };
	const char *n2[] = { "lm_head.weight", "model.embed_tokens.weight", "z.last" };
	const char *index =
	    "{\n  \"metadata\": {\"total_size\": 40},\n  \"weight_map\": {\n"
	    "    \"lm_head.weight\": \"model-00002-of-00002.safetensors\",\n"
	    "    \"model.embed_tokens.weight\": \"model-00002-of-00002.safetensors\",\n"
	    "    \"model.layers.0.mlp.up_proj.weight\": \"model-00001-of-00002.safetensors\",\n"
	    "    \"model.norm.weight\": \"model-00001-of-00002.safetensors\",\n"
	    "    \"z.last\": \"model-00002-of-00002.safetensors\"\n  }\n}\n";
	st_set s;
	const st_tensor *t;

	masq_mkdir_p(dir, &err);
	snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
	write_shard(p, n1, 2, 10.0f, &err);
	snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
	write_shard(p, n2, 3, 20.0f, &err);
	snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
	write_bytes(p, index, strlen(index));
	if (!tap_ok(st_set_open_dir(&s, dir, &err) == 0, "sharded: opens")) {
		tap_diag("%s", err.msg);
		return;
	}
	tap_ok(s.nfiles == 2 && s.ntensors == 5, "sharded: 2 files, 5 tensors");
	int bad = 0;
	for (int i = 1; i < s.ntensors; i++)
		bad += strcmp(s.index[i - 1]->name, s.index[i]->name) >= 0;
	tap_ok(bad == 0, "sharded: index sorted by name");
	t = st_set_find(&s, "model.norm.weight");
	tap_ok(t && t->file == 0 && strstr(st_set_file_path(&s, t), "model-00001-of-00002") != NULL,
	    "sharded: norm is in shard 1");
	t = st_set_find(&s, "z.last");
	float *x = t ? st_tensor_to_f32(t) : NULL;
	tap_ok(t && t->file == 1 && strstr(st_set_file_path(&s, t), "model-00002-of-00002") != NULL &&
	    x && x[0] == 22.0f && x[1] == -22.0f, "sharded: z.last is in shard 2 with its values");
	free(x);
	tap_ok(st_set_find(&s, "absent") == NULL, "sharded: absent name is NULL");
	st_set_close(&s);

	/* a shard tensor missing from the index */
	const char *index2 =
	    "{\"weight_map\": {\"lm_head.weight\": \"model-00002-of-00002.safetensors\","
	    "\"model.embed_tokens.weight\": \"model-00002-of-00002.safetensors\","
	    "\"model.layers.0.mlp.up_proj.weight\": \"model-00001-of-00002.safetensors\","
	    "\"model.norm.weight\": \"model-00001-of-00002.safetensors\"}}";
	write_bytes(p, index2, strlen(index2));
	tap_ok(st_set_open_dir(&s, dir, &err) < 0 && err.status == MASQ_ERR_FORMAT,
	    "sharded: unlisted shard tensor refused");
	tap_contains(err.msg, "model-00002-of-00002.safetensors: tensor 'z.last': not listed in the weight_map",
	    "unlisted message names the shard and the tensor");
	tap_ok(s.files == NULL && s.index == NULL && s.dir == NULL, "sharded: failed open leaves the set zeroed");

	/* single file */
	const char *single = wpath(1, "single");
	masq_mkdir_p(single, &err);
	snprintf(p, sizeof p, "%s/model.safetensors", single);
	write_shard(p, n2, 3, 1.0f, &err);
	tap_ok(st_set_open_dir(&s, single, &err) == 0 && s.nfiles == 1 && s.ntensors == 3 &&
	    st_set_find(&s, "lm_head.weight") != NULL, "single model.safetensors opens as a set");
	st_set_close(&s);

	/* neither */
	const char *empty = wpath(2, "empty-model");
	masq_mkdir_p(empty, &err);
	tap_ok(st_set_open_dir(&s, empty, &err) < 0, "directory with no safetensors refused");
	tap_contains(err.msg, "empty-model: no model.safetensors or model.safetensors.index.json",
	    "no-safetensors message");
	tap_ok(st_set_open_dir(&s, wpath(3, "does-not-exist"), &err) < 0 && err.status == MASQ_ERR_IO,
	    "missing directory is an I/O error");
}

/* Write a safetensors file from a header text and data bytes. */
static void
write_st(const char *path, const char *hdr, const void *data, size_t ndata)
{
	size_t n = strlen(hdr);
	unsigned char *buf = malloc(8 + n + ndata);

	for (int i = 0; i < 8; i++)
		buf[i] = (unsigned char)((uint64_t)n >> (8 * i));
	memcpy(buf + 8, hdr, n);
	memcpy(buf + 8 + n, data, ndata);
	write_bytes(path, buf, 8 + n + ndata);
	free(buf);
}

/* A few reader faults checked here directly; the full corpus is corpus.sh. */
static void
test_reader_errors(void)
{
	masq_err err = {0};
	st_file f;
	const char *p = wpath(0, "bad.safetensors");

	tap_ok(st_open(&f, wpath(1, "absent.safetensors"), &err) < 0 && err.status == MASQ_ERR_IO,
	    "reader: absent file is an I/O error");
	tap_contains(err.msg, "absent.safetensors: No such file or directory", "absent message");
	tap_ok(st_open(&f, workdir, &err) < 0 && err.status == MASQ_ERR_IO, "reader: a directory is refused");

	write_bytes(p, "\x01\x02\x03", 3);
	tap_ok(st_open(&f, p, &err) < 0 && err.status == MASQ_ERR_FORMAT, "reader: 3-byte file refused");
	tap_contains(err.msg, "bad.safetensors: file is 3 bytes, too short", "short message");
	tap_ok(f.map == NULL && f.path == NULL, "reader: failed open leaves the file zeroed");

	write_st(p, "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
	    "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}     ", "\x01\x02", 2);
	tap_ok(st_open(&f, p, &err) < 0 && err.status == MASQ_ERR_FORMAT, "reader: duplicate name refused");
	tap_contains(err.msg, "bad.safetensors: duplicate tensor name 'w'", "duplicate message names the tensor");

	write_st(p, "{\"a\\nb\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,1]}}", "\x01", 1);
	tap_ok(st_open(&f, p, &err) < 0, "reader: size mismatch refused");
	tap_contains(err.msg, "tensor 'a\\x0ab': dtype/shape size mismatch: U8 [2] needs 2 bytes but "
	    "data_offsets [0, 1] span 1 bytes", "control characters in a name are escaped");

	write_st(p, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}\t\n  ", "\x01", 1);
	tap_ok(st_open(&f, p, &err) == 0 && f.ntensors == 1, "reader: whitespace after the JSON is allowed");
	st_close(&f);
}

int
main(void)
{
	masq_err err = {0};
	const char *bd = getenv("builddir");

	snprintf(workdir, sizeof workdir, "%s/work/test_safetensors", bd && *bd ? bd : ".");
	if (masq_mkdir_p(workdir, &err) < 0) {
		printf("Bail out! %s\n", err.msg);
		return 99;
	}
	test_roundtrip();
	test_unaligned();
	test_writer_errors();
	test_sharded();
	test_reader_errors();
	return tap_done();
}
