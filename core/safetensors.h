/*
 * safetensors.h: read safetensors files over mmap, and write them streaming.
 *
 * Reading validates the whole header before any tensor is handed out: the
 * header length against the file size, UTF-8 and JSON, every entry's dtype,
 * shape (no overflow), data_offsets (in range, matching dtype x shape), no
 * duplicate names, no overlaps and no holes in the data buffer.  Any fault
 * is a MASQ_ERR_FORMAT message naming the file, the tensor and the fault.
 * Tensors are views into the mapping, valid until st_close().
 *
 *	st_file f;
 *	if (st_open(&f, "model.safetensors", &err) < 0) ...
 *	const st_tensor *t = st_find(&f, "model.norm.weight");
 *	st_close(&f);
 *
 * A sharded model ("model.safetensors.index.json" + shards) or a single
 * "model.safetensors" in a directory opens as an st_set.
 *
 * Writing is streaming: declare every tensor (name, dtype, shape) first,
 * then st_writer_begin() writes the header with all offsets (8-byte aligned
 * data, __metadata__ {"format":"pt"} plus any st_writer_meta() pairs), then
 * tensor bytes are appended in declaration order, in as many pieces as the
 * caller likes; st_writer_finish() checks every byte arrived, flushes,
 * fsyncs and closes.  Memory stays bounded by the caller's pieces.
 */
#ifndef MASQ_SAFETENSORS_H
#define MASQ_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/util.h"

#define ST_MAX_DIMS 8
/* Largest header accepted (the reference reader's limit). */
#define ST_MAX_HEADER (100u << 20)

typedef struct st_tensor {
	char *name;
	st_dtype dtype;
	int ndim;
	int64_t shape[ST_MAX_DIMS];
	uint64_t nelem;		/* product of shape (1 for a 0-rank tensor) */
	uint64_t begin, end;	/* byte offsets into the data buffer, end exclusive */
	const void *data;	/* view into the mapping; NULL when nbytes == 0 */
	int file;		/* index of the owning file within an st_set */
} st_tensor;

typedef struct st_file {
	char *path;
	void *map;
	size_t map_size;
	size_t data_offset;	/* 8 + header length */
	int ntensors;
	st_tensor *tensors;	/* sorted by name */
	int nmeta;
	char **meta_keys;	/* __metadata__ pairs, in header order */
	char **meta_values;
} st_file;

/* Open and validate path.  On failure f is left closed and err names the
 * file, the tensor (when one is at fault) and the fault. */
int st_open(st_file *f, const char *path, masq_err *err);
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);
/* Value of a __metadata__ key, or NULL. */
const char *st_meta_get(const st_file *f, const char *key);

/* Every tensor of a model directory, across shards. */
typedef struct st_set {
	char *dir;
	int nfiles;
	st_file *files;
	int ntensors;
	const st_tensor **index;	/* all tensors of all files, sorted by name */
} st_set;

/* Open DIR/model.safetensors.index.json and its shards, or else
 * DIR/model.safetensors.  Checks that the index's weight_map names exactly
 * the tensors the shards hold and that no name appears in two shards. */
int st_set_open_dir(st_set *s, const char *dir, masq_err *err);
void st_set_close(st_set *s);
const st_tensor *st_set_find(const st_set *s, const char *name);
/* Path of the file that holds t. */
const char *st_set_file_path(const st_set *s, const st_tensor *t);

/* Convert a float tensor (F32/F16/BF16/F64) to a new float32 array. */
float *st_tensor_to_f32(const st_tensor *t);
/* Drop the mapped pages that hold only t's bytes from this process's
 * memory (madvise MADV_DONTNEED on a read-only private mapping: the next
 * read brings them back from the file).  Called once a tensor is converted,
 * so that streaming a model layer by layer never keeps more than a layer of
 * the file resident, whatever the model's size. */
void st_tensor_release(const st_tensor *t);

typedef struct st_writer st_writer;

st_writer *st_writer_new(void);
void st_writer_free(st_writer *w);
/* Declare a tensor.  Fails on a duplicate name, bad dtype or shape. */
int st_writer_add(st_writer *w, const char *name, st_dtype dt, int ndim,
    const int64_t *shape, masq_err *err);
/* Add a __metadata__ pair besides "format": "pt". */
int st_writer_meta(st_writer *w, const char *key, const char *value, masq_err *err);
/* Total bytes the file will take once written (header + data). */
uint64_t st_writer_size(const st_writer *w);
/* Create path and write the header.  No tensor may be added afterwards. */
int st_writer_begin(st_writer *w, const char *path, masq_err *err);
/* Append n bytes of tensor data, in declaration order; a piece may span
 * tensors. Fails when more bytes arrive than were declared. */
int st_writer_write(st_writer *w, const void *data, size_t n, masq_err *err);
/* Append n float32 values converted to the current tensor's float dtype;
 * the piece must not span two tensors. */
int st_writer_write_f32(st_writer *w, const float *x, size_t n, masq_err *err);
/* Check every declared byte was written, fsync and close. */
int st_writer_finish(st_writer *w, masq_err *err);

#endif
