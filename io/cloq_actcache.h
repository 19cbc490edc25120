/*
 * cloq_actcache.h - the activation cache: hidden states of all calibration windows at one layer
 * boundary, streamed to disk and back so that memory stays at one chunk of rows.
 *
 * A cache file holds `rows` x `cols` float values (row = one token's hidden vector), written as a
 * sequence of appended chunks. Each chunk becomes one zstd frame (content checksum on) whose
 * content is the chunk's encoded values split into byte planes; an index at the end of the file
 * records every frame's offset, sizes, row count and two XXH3-64 hashes, so a reader can seek to
 * frame k. The byte layout is specified in docs/FORMAT.md ("Activation cache").
 *
 * Encodings:
 *   CLOQ_CACHE_F32   bit-exact round trip of every float (NaN payloads included);
 *   CLOQ_CACHE_BF16  each value rounded to bfloat16, round-to-nearest-even (NaN stays NaN,
 *                    values beyond the bf16 range round to +-Inf), widened back to float on read.
 *
 * Writing is atomic (cloq_atomic_*): nothing appears under the final name before
 * cloq_cache_commit succeeds, and a writer freed without commit leaves nothing behind.
 *
 * Reading verifies every checksum: the header's and the index's XXH3-64 at open, each frame's
 * compressed-bytes XXH3-64, zstd's content checksum and the XXH3-64 of the decoded values when
 * the frame is read. Any mismatch, and any truncated or extended file, is CLOQ_EINTEGRITY with a
 * message naming the file and the frame index / byte offset. A file that is not a cache at all
 * (neither its header nor its index is recognisable) is CLOQ_EINPUT; a missing file is
 * CLOQ_EINPUT, other open/read failures CLOQ_EIO.
 *
 * Threads: a writer or reader handle is used by one thread at a time; distinct handles are
 * independent. Compression can use zstd worker threads (cloq_cache_writer_set_threads).
 */
#ifndef CLOQ_ACTCACHE_H
#define CLOQ_ACTCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "cloq_error.h"

enum cloq_cache_encoding {
	CLOQ_CACHE_F32 = 1,  /* 4 bytes per value, bit-exact */
	CLOQ_CACHE_BF16 = 2, /* 2 bytes per value, rounded to nearest even */
};

/* Largest accepted `cols`: keeps a row's byte size far from any overflow. */
#define CLOQ_CACHE_MAX_COLS (1u << 24)

typedef struct cloq_cache_writer cloq_cache_writer;
typedef struct cloq_cache_reader cloq_cache_reader;

/* ---- writer -------------------------------------------------------------------------------- */

/* Start a cache file at `path` with rows of `cols` floats (1 <= cols <= CLOQ_CACHE_MAX_COLS),
 * stored with `encoding`, compressed at zstd level `zstd_level` (1..ZSTD_maxCLevel(); 1 is fastest
 * and, on activations, compresses as well as 3: see tests/bench/bench_cache.c). On success *w owns a temp file next to `path`.
 * Errors: CLOQ_EINPUT (bad cols/encoding/level), CLOQ_EIO (cannot create, out of memory). */
int cloq_cache_create(const char *path, size_t cols, int encoding, int zstd_level,
		      cloq_cache_writer **w, cloq_err *err);

/* Use `n` zstd worker threads for the following appends (0 = compress in the calling thread,
 * the default). Worth it for chunks of several MB; see tests/bench/bench_cache.c. */
int cloq_cache_writer_set_threads(cloq_cache_writer *w, int n, cloq_err *err);

/* Append `rows` rows: X is (rows, cols) row-major floats, read only during the call. One zstd
 * frame per call; rows == 0 appends nothing. Memory used: about rows*cols*(1 + bytes per value)
 * bytes plus zstd's working set.
 * Errors: CLOQ_EINPUT (rows < 0, X NULL with rows > 0, writer already failed or committed),
 * CLOQ_EIO (write failure, disk full, out of memory). After an error the writer is failed:
 * further appends and commit return the same status; free it to remove the temp file. */
int cloq_cache_append(cloq_cache_writer *w, const float *X, int rows, cloq_err *err);

/* Frames encoded apart: cloq_cache_encode turns X (rows >= 1, the writer's cols) into one frame
 * exactly as cloq_cache_append would (the same bytes in the file), reading only w's settings, so
 * several threads may encode for one writer at once, each into its own frame object; the frames
 * then go into the file in the caller's order with cloq_cache_append_frame (one thread at a time,
 * as every writer call). A frame holds about rows*cols*(2 + bytes per value) bytes.
 * cloq_cache_frame_new: NULL when out of memory. append_frame: CLOQ_EINPUT for a frame not
 * encoded for this writer's settings (the writer stays usable); write errors as cloq_cache_append. */
typedef struct cloq_cache_frame cloq_cache_frame;
cloq_cache_frame *cloq_cache_frame_new(void);
int cloq_cache_encode(const cloq_cache_writer *w, cloq_cache_frame *f, const float *X, int rows, cloq_err *err);
int cloq_cache_append_frame(cloq_cache_writer *w, const cloq_cache_frame *f, cloq_err *err);
void cloq_cache_frame_free(cloq_cache_frame *f); /* NULL is a no-op */

/* Write the index trailer (total rows, frame count, every frame's offset and hashes), fsync,
 * rename over `path`, fsync the directory. An empty cache (no rows) is valid.
 * Errors: CLOQ_EIO; CLOQ_EINPUT when the writer failed earlier or was committed already. */
int cloq_cache_commit(cloq_cache_writer *w, cloq_err *err);

/* Scratch mode, before the first append: zstd's fast level -3 (fp32 activations compress by
 * ~1.08x at any level; this one runs at several times level 1's speed) and a commit without
 * fsync, for caches that a crash may lose (the pipeline's per-layer stashes). */
void cloq_cache_writer_set_scratch(cloq_cache_writer *w);

/* Free the writer; an uncommitted file is aborted (temp removed, nothing under `path`).
 * NULL is a no-op. */
void cloq_cache_writer_free(cloq_cache_writer *w);

/* ---- reader -------------------------------------------------------------------------------- */

/* Open and check the header and index (both checksummed, offsets consistent with the file size).
 * Frame contents are verified when read. Errors: see the top of this header. */
int cloq_cache_open(const char *path, cloq_cache_reader **r, cloq_err *err);

uint64_t cloq_cache_rows(const cloq_cache_reader *r);   /* total rows */
size_t cloq_cache_cols(const cloq_cache_reader *r);
size_t cloq_cache_frames(const cloq_cache_reader *r);   /* number of frames (appends) */
int cloq_cache_encoding(const cloq_cache_reader *r);    /* enum cloq_cache_encoding */
/* Rows in frame k (0 when k is out of range) and the largest frame's row count, for sizing dst. */
int cloq_cache_frame_rows(const cloq_cache_reader *r, size_t k);
int cloq_cache_max_frame_rows(const cloq_cache_reader *r);

/* Random access: decode frame k into dst, (frame_rows(k), cols) row-major floats; dst must hold
 * that many. *rows receives the frame's row count. Does not move the sequential position.
 * Errors: CLOQ_EINPUT (k out of range), CLOQ_EINTEGRITY (any checksum, truncation), CLOQ_EIO. */
int cloq_cache_read_frame(cloq_cache_reader *r, size_t k, float *dst, int *rows, cloq_err *err);

/* Sequential read: copy up to max_rows of the next rows into dst, (max_rows, cols) row-major,
 * crossing frame boundaries as needed; *got receives the count, 0 at the end of the cache.
 * Holds one decoded frame in the reader between calls. */
int cloq_cache_next(cloq_cache_reader *r, float *dst, int max_rows, int *got, cloq_err *err);
/* Restart sequential reading at row 0. */
void cloq_cache_rewind(cloq_cache_reader *r);

/* Close and free; NULL is a no-op. */
void cloq_cache_close(cloq_cache_reader *r);

/* The bf16 rounding the cache applies (round to nearest even; NaN kept, quiet), and the widening
 * back; exposed so tests and callers can state exact expectations. */
uint16_t cloq_cache_f32_to_bf16(float x);
float cloq_cache_bf16_to_f32(uint16_t h);

#endif /* CLOQ_ACTCACHE_H */
