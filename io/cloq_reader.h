/*
 * cloq_reader.h - streaming reader: "read layer l+1 while layer l computes".
 *
 * A reader owns read-only descriptors of a list of files and one background thread. A batch of
 * requests {file, offset, length, dst} is started with cloq_reader_start(), which returns at once;
 * the thread reads the bytes into the callers' buffers, in chunks of params.chunk_bytes with at
 * most params.queue_depth chunks in flight (io_uring), or one pread at a time when io_uring cannot
 * be set up (containers often forbid it: the reader then prints once per process to stderr
 * "cloq: io_uring unavailable (<reason>), using pread") or when params.force_pread is set.
 * cloq_reader_wait() blocks until the whole batch is in memory and reports its first error:
 *   - a request reaching past the end of its file: CLOQ_EINPUT "path: short read: file ends at
 *     offset X, request wanted [A, B)";
 *   - a read error (EIO, ...): CLOQ_EIO naming the file and offset;
 *   - out of memory: CLOQ_EIO.
 * Short reads are resubmitted for the remainder. After an error the batch's buffers hold
 * unspecified bytes, but no read is still in flight when wait returns.
 *
 * While reading, the thread computes XXH3-64 (seed 0, the same value as XXH3_64bits() over the
 * request's bytes) of each request into req->xxh3, so the pipeline can fingerprint its inputs
 * without another pass over memory.
 *
 * Threading: one batch at a time per reader; start/wait/stats from one thread (the caller's).
 * The request array and the dst buffers must stay valid and untouched until wait returns.
 *
 * Typical use in the pipeline (two buffers, prefetch; see tests/test_reader.c):
 *     paths[i] = cloq_st_file_path(m, i);  cloq_reader_create(paths, nfiles, &params, &r, err);
 *     cloq_st_layer_span_plan(m, 0, 4096, buf[0], size, &plan[0], err);  start(plan[0].req...)
 *     for l: wait; plan + start layer l+1 into buf[!cur]; for each tensor t of layer l:
 *            cloq_st_convert_f32(m, t, cloq_st_span_data(&plan[cur], t), w, err); compute
 * Span plans with params.direct = 1 read at device speed without filling the page cache (a 70B
 * model would otherwise push 140 GB through it); measured on this project's dev VM the steady I/O
 * wait share fell from ~34% (per-tensor buffered) to ~3% (span + O_DIRECT) at equal compute.
 * Per-tensor plans (cloq_st_layer_plan) work on any file system and give one hash per tensor.
 */
#ifndef CLOQ_READER_H
#define CLOQ_READER_H

#include <stddef.h>
#include <stdint.h>

#include "cloq_error.h"
#include "cloq_safetensors.h"

typedef struct cloq_reader cloq_reader;

typedef struct cloq_reader_req {
	int file;          /* index into the reader's file list */
	uint64_t offset;   /* absolute byte offset in that file */
	size_t length;     /* bytes to read (0 is fine: xxh3 is then the hash of nothing) */
	void *dst;         /* length bytes, owned by the caller */
	size_t tag;        /* free for the caller; the planners put the tensor index here */
	int eof_ok;        /* 1: the file may end inside [offset, offset+length): reading stops
			    * there (no error) and the bytes of dst past EOF are left untouched */
	uint64_t xxh3;     /* out: XXH3-64 of the bytes read, valid after a successful wait */
	size_t got;        /* out: bytes read (== length unless eof_ok and the file ended) */
} cloq_reader_req;

typedef struct cloq_reader_params {
	unsigned queue_depth; /* chunks in flight with io_uring (default 32) */
	size_t chunk_bytes;   /* bytes per read call (default 1 MiB) */
	int force_pread;      /* 1: do not try io_uring */
	int direct;           /* 1: open with O_DIRECT (falls back to buffered where the file system
				 * refuses it; see stats.direct). Every offset, length and dst must
				 * then be aligned to the device's logical block (4096 is safe; span
				 * plans are); the reader does not check. */
	int willneed;         /* 1 (default): before a buffered batch, posix_fadvise(WILLNEED) each
				 * request's range so the kernel reads ahead in large I/Os */
} cloq_reader_params;

typedef struct cloq_reader_stats {
	uint64_t bytes_read;   /* total over all batches */
	uint64_t requests;
	double busy_seconds;   /* wall time the background thread spent on batches */
	double wait_seconds;   /* wall time callers spent blocked in cloq_reader_wait */
	const char *backend;   /* "io_uring" or "pread" */
	int direct;            /* files are open with O_DIRECT (params.direct and the file system
				* supports it; otherwise the reader silently reads buffered) */
} cloq_reader_stats;

cloq_reader_params cloq_reader_default_params(void);

/* Open nfiles paths (read-only) and start the thread. params may be NULL (defaults).
 * Errors: CLOQ_EINPUT for a missing file, CLOQ_EIO otherwise. */
int cloq_reader_create(const char *const *paths, size_t nfiles, const cloq_reader_params *params,
		       cloq_reader **out, cloq_err *err);
/* Finish any batch in flight (discarding its errors) and release everything. NULL ok. */
void cloq_reader_free(cloq_reader *r);

/* Begin reading n requests in the background. CLOQ_EINPUT (nothing started) when a batch is still
 * in flight or a request names a bad file index or has a NULL dst with a non-zero length. */
int cloq_reader_start(cloq_reader *r, cloq_reader_req *reqs, size_t n, cloq_err *err);
/* Block until the batch is complete; its status (see above). CLOQ_EINPUT when none was started. */
int cloq_reader_wait(cloq_reader *r, cloq_err *err);

void cloq_reader_get_stats(const cloq_reader *r, cloq_reader_stats *s);
const char *cloq_reader_backend(const cloq_reader *r); /* "io_uring" or "pread" */

/* ---- planning reads of safetensors tensors --------------------------------------------------- */
#define CLOQ_PLAN_ALIGN 64 /* each tensor's bytes start at a multiple of this in the buffer */

/* Lay out the raw bytes of tensors idx[0..n) of m (indices for cloq_st_tensor_at) one after the
 * other in buf, each at a CLOQ_PLAN_ALIGN boundary, and fill reqs[0..n) (file = the model's file
 * index, tag = the tensor index) for a reader created on the model's file paths (see
 * cloq_st_file_path). *needed gets the buffer size required; with buf == NULL only that is
 * computed. buf must be CLOQ_PLAN_ALIGN-aligned; buf_size < *needed is CLOQ_EINPUT.
 * Raw bytes: convert after wait with cloq_st_convert_f32. */
int cloq_st_plan(const cloq_st_model *m, const size_t *idx, size_t n, void *buf, size_t buf_size,
		 cloq_reader_req *reqs, size_t *needed, cloq_err *err);
/* The same for all tensors named "model.layers.<layer>.*" (cloq_st_layer_tensors order). reqs has
 * room for cap requests; *nreq gets the number of tensors (CLOQ_EINPUT when it exceeds cap, or
 * when the layer has no tensors). */
int cloq_st_layer_plan(const cloq_st_model *m, int layer, void *buf, size_t buf_size,
		       cloq_reader_req *reqs, size_t cap, size_t *nreq, size_t *needed,
		       cloq_err *err);

/* O_DIRECT-friendly plan of a layer: instead of one request per tensor, one request per file the
 * layer lives in, covering the layer's bytes in that file rounded out to `align` (a power of two;
 * 4096 for O_DIRECT) and flagged eof_ok (the rounding may pass the end of the file). Reading whole
 * aligned spans lets a reader created with params.direct = 1 bypass the page cache at full device
 * speed (see tests/bench/bench_reader.c); tensors are then found inside the spans with
 * cloq_st_span_data. Any bytes between the layer's tensors in a file are read too (in Hugging Face
 * files a layer's tensors are adjacent). */
#define CLOQ_SPAN_MAX 8 /* files one layer may be spread over */

typedef struct cloq_st_span_plan {
	cloq_reader_req req[CLOQ_SPAN_MAX]; /* pass req, nreq to cloq_reader_start */
	size_t nreq;
	size_t needed;                      /* buffer bytes the plan needs */
} cloq_st_span_plan;

/* Plan layer `layer` into buf (align-aligned, buf_size bytes); buf == NULL computes plan->needed
 * only. CLOQ_EINPUT when the layer has no tensors, spans more than CLOQ_SPAN_MAX files, align is
 * not a power of two >= CLOQ_PLAN_ALIGN, or buf is too small or misaligned. */
int cloq_st_layer_span_plan(const cloq_st_model *m, int layer, size_t align, void *buf,
			    size_t buf_size, cloq_st_span_plan *plan, cloq_err *err);
/* Where tensor t's raw bytes are in the plan's buffer (after a successful wait); NULL when t is
 * not inside the plan's spans. Not aligned beyond what t->offset - span offset gives: convert
 * with cloq_st_convert_f32, which accepts any address. */
const void *cloq_st_span_data(const cloq_st_span_plan *plan, const cloq_st_tensor *t);

#endif /* CLOQ_READER_H */
