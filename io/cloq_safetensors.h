/*
 * cloq_safetensors.h - read and write the safetensors format, single file or sharded model dir.
 *
 * ---- The format (https://github.com/huggingface/safetensors), byte by byte ----
 *   [0, 8)        N: uint64 little-endian, the length of the JSON header
 *   [8, 8+N)      JSON object, UTF-8, possibly padded with trailing spaces:
 *                   { "__metadata__": { "format": "pt", ...string: string... },   (optional)
 *                     "<tensor name>": { "dtype": "BF16", "shape": [4096, 11008],
 *                                        "data_offsets": [begin, end] }, ... }
 *   [8+N, EOF)    the data buffer; a tensor's bytes are [8+N+begin, 8+N+end), row-major (C order),
 *                 little-endian. Offsets are relative to the byte after the header.
 * cloq enforces the spec strictly, since every byte from disk is hostile:
 *   N <= CLOQ_ST_MAX_HEADER (100 MB) and 8+N <= file size; valid JSON whose root is an object and
 *   that is followed only by whitespace; every entry has a known dtype, a shape of at most
 *   CLOQ_ST_MAX_DIMS non-negative integer dims whose product does not overflow, and
 *   end - begin == product(shape) * dtype size; names are unique; sorted by offset the tensors
 *   cover the data buffer exactly (first begin 0, each begin == previous end, last end == EOF):
 *   no holes, no overlaps, nothing past the end.
 * Every violation is CLOQ_EINPUT with a message naming the file, the tensor and the offset.
 *
 * ---- Models ----
 * cloq_st_open() takes a .safetensors file, or a Hugging Face model directory that holds
 * model.safetensors (preferred when both exist) or model.safetensors.index.json plus the shards its
 * "weight_map" names ({"weight_map": {"tensor name": "model-00001-of-00003.safetensors", ...}}).
 * Every shard named in the index must exist, and every tensor must be in the shard the index names.
 * The model keeps one open descriptor per file and reads with pread (thread-safe: concurrent
 * reads of different tensors from several threads are fine).
 *
 * Tensors are listed in file order (file index, then offset), which is the order to read them in.
 *
 * ---- Writer ----
 * Streaming: declare every tensor (name, dtype, shape), begin (writes the header), then write each
 * tensor's bytes in declaration order in as many pieces as convenient, then commit (fsync + atomic
 * rename). A 5 GB shard never needs to sit in memory. The header is deterministic for the same
 * declarations: "__metadata__" first ({"format":"pt"} always, then the caller's keys in the order
 * given), tensors in declaration order with contiguous offsets, no whitespace, padded with spaces
 * so that the data starts at a multiple of 8.
 */
#ifndef CLOQ_SAFETENSORS_H
#define CLOQ_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "cloq_dtype.h"
#include "cloq_error.h"

#define CLOQ_ST_MAX_HEADER (100u * 1000u * 1000u) /* bytes of JSON header accepted */
#define CLOQ_ST_MAX_DIMS 8

/* One tensor of an opened model. Owned by the model; valid until cloq_st_close. */
typedef struct cloq_st_tensor {
	const char *name;          /* "model.layers.0.self_attn.q_proj.weight" */
	enum cloq_dtype dtype;
	int ndim;                  /* 0..CLOQ_ST_MAX_DIMS; 0 is a scalar (one element) */
	int64_t shape[CLOQ_ST_MAX_DIMS]; /* torch order: a Linear weight is (out, in) row-major */
	uint64_t nelem;            /* product of shape (1 for a scalar) */
	int file;                  /* index into the model's file list */
	uint64_t offset;           /* absolute byte offset of the first byte in that file */
	uint64_t nbytes;           /* nelem * dtype size */
} cloq_st_tensor;

typedef struct cloq_st_model cloq_st_model;

/* ---- reading ------------------------------------------------------------------------------- */

/* Open a .safetensors file or a model directory (see above). On success *out owns open file
 * descriptors; release with cloq_st_close. Errors: CLOQ_EINPUT for a missing or malformed file
 * (message: "path: tensor 'x': what (offset N)"), CLOQ_EIO for read failures / out of memory. */
int cloq_st_open(const char *path_or_dir, cloq_st_model **out, cloq_err *err);
void cloq_st_close(cloq_st_model *m); /* NULL ok */

/* Parse the first `len` bytes of a safetensors file held in memory: buf[0..8) is the header
 * length N and buf[8..8+N) the JSON; len must be >= 8+N (the data need not be there). file_size
 * is the size of the whole file, used to check the offsets; `filename` is used in messages only.
 * On success *out is a model of one file without an open descriptor (reads fail with CLOQ_EINPUT);
 * cloq_st_open uses this same parser. Never reads past buf[len). */
int cloq_st_parse_header(const uint8_t *buf, size_t len, uint64_t file_size, const char *filename,
			 cloq_st_model **out, cloq_err *err);

size_t cloq_st_count(const cloq_st_model *m);
/* i < cloq_st_count(m), in file order. */
const cloq_st_tensor *cloq_st_tensor_at(const cloq_st_model *m, size_t i);
/* Exact name lookup (binary search); NULL when absent. */
const cloq_st_tensor *cloq_st_find(const cloq_st_model *m, const char *name);
/* Position of t in the file-order table (for cloq_st_tensor_at). */
size_t cloq_st_index_of(const cloq_st_model *m, const cloq_st_tensor *t);

size_t cloq_st_nfiles(const cloq_st_model *m);
const char *cloq_st_file_path(const cloq_st_model *m, size_t file); /* as opened, e.g. "dir/model-00001-of-00002.safetensors" */
uint64_t cloq_st_file_size(const cloq_st_model *m, size_t file);
/* Offset of the data buffer (8 + N) in a file. */
uint64_t cloq_st_file_data_offset(const cloq_st_model *m, size_t file);

/* Value of a "__metadata__" key of the first file (for an index: its file's), NULL when absent. */
const char *cloq_st_meta_get(const cloq_st_model *m, const char *key);

/* Tensors named "model.layers.<layer>.*": writes up to `cap` indices (for cloq_st_tensor_at) to
 * idx, in file order, and returns how many there are in all (call with cap 0 to count). */
size_t cloq_st_layer_tensors(const cloq_st_model *m, int layer, size_t *idx, size_t cap);
/* 1 + the largest N of any "model.layers.N." name; 0 when there are none. */
int cloq_st_layer_count(const cloq_st_model *m);

/* Read a F32, F16 or BF16 tensor into dst (t->nelem floats), converting to fp32. Other dtypes:
 * CLOQ_EINPUT (use cloq_st_read_raw). A NaN or Inf is CLOQ_EINPUT naming the tensor and the
 * first flat (row-major) index. Memory use beyond dst is a bounded conversion buffer. */
int cloq_st_read_f32(const cloq_st_model *m, const cloq_st_tensor *t, float *dst, cloq_err *err);
/* Read the tensor's t->nbytes raw bytes into dst. */
int cloq_st_read_raw(const cloq_st_model *m, const cloq_st_tensor *t, void *dst, cloq_err *err);
/* Convert raw bytes of t already in memory (e.g. from cloq_reader) to fp32 with the same checks as
 * cloq_st_read_f32. raw and dst may be the same buffer only for F32. */
int cloq_st_convert_f32(const cloq_st_model *m, const cloq_st_tensor *t, const void *raw,
			float *dst, cloq_err *err);

/* ---- writing ------------------------------------------------------------------------------- */
typedef struct cloq_st_writer cloq_st_writer;

/* Start a new file at path (written to a temp name in the same directory until commit). */
int cloq_st_writer_create(const char *path, cloq_st_writer **out, cloq_err *err);
/* Declare the next tensor. shape has ndim entries (0 <= ndim <= CLOQ_ST_MAX_DIMS), each >= 0.
 * CLOQ_EINPUT for a duplicate name, a bad shape or dtype, or a call after begin. */
int cloq_st_writer_add(cloq_st_writer *w, const char *name, enum cloq_dtype dtype, int ndim,
		       const int64_t *shape, cloq_err *err);
/* Add a "__metadata__" string pair ("format" is always "pt" unless set here). A key set twice
 * keeps the last value. Before begin only. */
int cloq_st_writer_meta(cloq_st_writer *w, const char *key, const char *value, cloq_err *err);
/* Write the header. After this only writes and commit. */
int cloq_st_writer_begin(cloq_st_writer *w, cloq_err *err);
/* Append nbytes of tensor `index` (declaration order, 0-based). Tensors are written in order:
 * index must be the tensor being written or, when that one is complete, the next one (empty
 * tensors may be skipped). Writing past a tensor's end or out of order is CLOQ_EINPUT. */
int cloq_st_writer_write(cloq_st_writer *w, size_t index, const void *data, size_t nbytes,
			 cloq_err *err);
/* Same, by name. */
int cloq_st_writer_write_named(cloq_st_writer *w, const char *name, const void *data,
			       size_t nbytes, cloq_err *err);
/* Check every byte was written (CLOQ_EINPUT naming the first short tensor otherwise), fsync,
 * rename into place, fsync the directory. After a failed commit only free is valid. */
int cloq_st_writer_commit(cloq_st_writer *w, cloq_err *err);
/* Release; an uncommitted file is abandoned: temp removed, final name untouched. NULL ok. */
void cloq_st_writer_free(cloq_st_writer *w);

#endif /* CLOQ_SAFETENSORS_H */
