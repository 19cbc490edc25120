/*
 * cloq_shard.h - the output shard container: the tensors of one decoder layer in one file.
 *
 * A shard is a valid zstd stream that stock tools accept (`zstd -t`, `zstd -l`) and a valid
 * zstd seekable-format file:
 *
 *   [skippable frame: header + tensor table, XXH3-128 of the table]
 *   [zstd frame(s) of tensor 0] [zstd frame(s) of tensor 1] ...      content checksum on
 *   [skippable frame: seek table, zstd seekable format, checksums on]
 *
 * Each tensor is one zstd frame (a tensor above the frame limit, 1 GiB by default, is split in
 * consecutive frames because the seekable format's sizes are 32-bit). Floating-point tensors
 * (F64, F32, F16, BF16) are stored as byte planes (all first bytes, then all second bytes, ...),
 * which compresses their exponent bytes well; integer tensors are stored raw. The exact bytes
 * are specified in docs/FORMAT.md ("Shard").
 *
 * Deterministic: the same tensors added in the same order give identical bytes (fixed zstd level
 * 3, single-threaded, no timestamps), for a given libzstd version.
 *
 * Writing is atomic: tensors are compressed as they are added into an unlinked scratch file next
 * to `path` (memory stays at one tensor plus a few MB); commit writes header, tensor frames and
 * seek table to "<path>.tmp.<pid>", fsyncs, renames over `path`, fsyncs the directory.
 * Nothing appears under `path` before that, and a writer freed uncommitted leaves nothing.
 *
 * Errors: CLOQ_EINPUT bad arguments, a missing file or a file that is not a shard (messages name
 * the path), CLOQ_EIO I/O failure or out of memory, CLOQ_EINTEGRITY any checksum or size that
 * does not hold (messages name the path and the tensor, or 'header' / 'seek table').
 */
#ifndef CLOQ_SHARD_H
#define CLOQ_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "cloq_error.h"

/* Element types; the numeric codes are stored in the file (docs/FORMAT.md), the names are the
 * safetensors spellings. */
enum cloq_shard_dtype {
	CLOQ_SHARD_F64 = 1,
	CLOQ_SHARD_F32 = 2,
	CLOQ_SHARD_F16 = 3,
	CLOQ_SHARD_BF16 = 4,
	CLOQ_SHARD_I64 = 5,
	CLOQ_SHARD_I32 = 6,
	CLOQ_SHARD_I16 = 7,
	CLOQ_SHARD_I8 = 8,
	CLOQ_SHARD_U64 = 9,
	CLOQ_SHARD_U32 = 10,
	CLOQ_SHARD_U16 = 11,
	CLOQ_SHARD_U8 = 12,
	CLOQ_SHARD_BOOL = 13,
};

/* How a tensor's bytes are laid out inside its zstd frame(s). */
enum cloq_shard_encoding {
	CLOQ_SHARD_RAW = 0,    /* the tensor's bytes as given */
	CLOQ_SHARD_PLANES = 1, /* byte planes: byte p of element i at p*count + i */
};

#define CLOQ_SHARD_MAX_NDIM 8
#define CLOQ_SHARD_MAX_NAME 1024              /* bytes, without the NUL */
#define CLOQ_SHARD_FRAME_BYTES (1u << 30)     /* default and largest decompressed frame */

/* "F32", "BF16", ... or NULL for an unknown code; the code for a name or 0; bytes per element
 * (0 for an unknown code). */
const char *cloq_shard_dtype_name(int dtype);
int cloq_shard_dtype_from_name(const char *name);
size_t cloq_shard_dtype_size(int dtype);

typedef struct cloq_shard_writer cloq_shard_writer;
typedef struct cloq_shard cloq_shard;

/* ---- writer -------------------------------------------------------------------------------- */

/* Start a shard for decoder layer `layer` (any value; non-layer tensors may use e.g. UINT32_MAX).
 * Errors: CLOQ_EIO (cannot create the scratch file next to `path`, out of memory). */
int cloq_shard_writer_create(const char *path, uint32_t layer, cloq_shard_writer **w, cloq_err *err);

/* Split tensors into frames of at most `frame_bytes` decompressed bytes (1 .. 2^30; default
 * 2^30). Only for tests of the multi-frame path and for readers with small frame limits; it
 * changes the bytes written. Call before the first add. */
int cloq_shard_writer_set_frame_bytes(cloq_shard_writer *w, size_t frame_bytes, cloq_err *err);

/* Add one tensor: `data` holds `nbytes` bytes, row-major (C order) over `shape[0..ndim)`, little
 * endian; nbytes must equal prod(shape) * dtype size (ndim 0 = a scalar). It is hashed and
 * compressed at once into the scratch file; `data` is not kept. Names must be unique, 1 to
 * CLOQ_SHARD_MAX_NAME bytes. Errors: CLOQ_EINPUT (bad name, dtype, shape, size, duplicate, after
 * commit or failure), CLOQ_EIO. After CLOQ_EIO the writer is failed; free it. */
int cloq_shard_add(cloq_shard_writer *w, const char *name, int dtype, int ndim, const uint64_t *shape,
		   const void *data, size_t nbytes, cloq_err *err);

/* Write the shard durably under its final name. Errors: CLOQ_EIO, CLOQ_EINPUT (already
 * committed or failed). */
int cloq_shard_commit(cloq_shard_writer *w, cloq_err *err);

/* Free; an uncommitted shard is abandoned without leaving any file. NULL is a no-op. */
void cloq_shard_writer_free(cloq_shard_writer *w);

/* ---- reader -------------------------------------------------------------------------------- */

/* Open a shard: checks magic, version, the table's XXH3-128, every size against the file size,
 * and the seek table against the table. Tensor data is verified when read. */
int cloq_shard_open(const char *path, cloq_shard **s, cloq_err *err);

uint32_t cloq_shard_layer(const cloq_shard *s);
size_t cloq_shard_count(const cloq_shard *s);
/* Accessors for tensor i < count; the strings and arrays live as long as the handle. */
const char *cloq_shard_name(const cloq_shard *s, size_t i);
int cloq_shard_dtype(const cloq_shard *s, size_t i);
int cloq_shard_encoding(const cloq_shard *s, size_t i);
int cloq_shard_ndim(const cloq_shard *s, size_t i);
const uint64_t *cloq_shard_shape(const cloq_shard *s, size_t i);
uint64_t cloq_shard_nbytes(const cloq_shard *s, size_t i);
/* Index of the tensor called `name`, or -1. */
long cloq_shard_find(const cloq_shard *s, const char *name);

/* Decompress tensor i into dst (cap bytes, at least nbytes(i)), verifying the compressed bytes'
 * XXH3-64, zstd's content checksum of every frame, the seek table's entries for its frames, and
 * the XXH3-128 of the tensor's bytes. Memory: dst plus about 2 MB.
 * Errors: CLOQ_EINPUT (i out of range, cap too small), CLOQ_EINTEGRITY, CLOQ_EIO. */
int cloq_shard_read(cloq_shard *s, size_t i, void *dst, size_t cap, cloq_err *err);
/* Same, by name; CLOQ_EINPUT when no tensor has that name. */
int cloq_shard_read_name(cloq_shard *s, const char *name, void *dst, size_t cap, cloq_err *err);

void cloq_shard_close(cloq_shard *s);

/* ---- verification -------------------------------------------------------------------------- */
typedef struct cloq_shard_report {
	uint32_t layer;
	size_t n_tensors;   /* from the table (0 when the header is bad) */
	size_t n_bad;
	char **bad;         /* n_bad items: "header", "seek table", or a tensor name; owned */
} cloq_shard_report;

/* Re-check everything in the shard at `path` and list every bad part, not just the first:
 * returns CLOQ_OK when all holds, CLOQ_EINTEGRITY on any mismatch (err names all bad parts),
 * CLOQ_EINPUT for a missing file or one that is not a shard, CLOQ_EIO for read errors. `rep` may
 * be NULL; when given it is filled in every case and must be released with
 * cloq_shard_report_free. Memory: the largest tensor. */
int cloq_shard_verify(const char *path, cloq_shard_report *rep, cloq_err *err);
void cloq_shard_report_free(cloq_shard_report *rep);

#endif /* CLOQ_SHARD_H */
