/* cloq_reader.c - background reader on io_uring with a pread fallback (see cloq_reader.h).
 *
 * One batch is cut into chunks of at most chunk_bytes, numbered in request order. The thread keeps
 * up to queue_depth chunks in flight (liburing examples/io_uring-cp.c is the model: bounded depth,
 * short reads resubmitted for the remainder). Chunks complete out of order, but XXH3 must see each
 * request's bytes in order, so a hashing cursor walks the chunk list and consumes every chunk that
 * is complete, stopping at the first that is not: one streaming state suffices, and each byte is
 * hashed while it is still in cache. */
#include "cloq_reader.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "cloq_sys.h"

enum { BACKEND_PREAD, BACKEND_URING };

struct chunk {
	size_t req;      /* request index */
	uint64_t off;    /* offset inside the request */
	uint32_t len;
	uint32_t done;   /* bytes already read (short reads) */
	int complete;
	int last;        /* last chunk of its request */
};

struct cloq_reader {
	int *fds;
	char **paths;
	size_t nfiles;
	cloq_reader_params p;
	int backend;
	int have_ring; /* ring initialised (to exit at free) */
	struct io_uring ring;

	pthread_t thread;
	int thread_started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int quit;
	int pending;   /* a batch is waiting for the thread */
	int finished;  /* the thread finished the batch */
	int in_flight; /* started and not yet waited for */

	/* the batch (owned by the caller) */
	cloq_reader_req *reqs;
	size_t nreq;
	int rc;
	cloq_err err;

	/* hashing cursor */
	struct chunk *chunks;
	size_t nchunks;
	size_t hash_chunk;
	size_t hash_req;
	XXH3_state_t *xs;

	uint64_t batch_bytes; /* thread-private until the batch ends */

	/* stats (under mu) */
	uint64_t bytes_read, requests;
	double busy_s, wait_s;
};

/* The one documented message library code prints: once per process, so a job that creates many
 * readers in a container without io_uring says it once. */
static atomic_int uring_notice_done;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

cloq_reader_params cloq_reader_default_params(void)
{
	cloq_reader_params p = { .queue_depth = 32, .chunk_bytes = (size_t)1 << 20, .force_pread = 0,
				 .direct = 0, .willneed = 1 };
	return p;
}

const char *cloq_reader_backend(const cloq_reader *r)
{
	return r->backend == BACKEND_URING ? "io_uring" : "pread";
}

void cloq_reader_get_stats(const cloq_reader *r, cloq_reader_stats *s)
{
	pthread_mutex_lock((pthread_mutex_t *)&r->mu);
	s->bytes_read = r->bytes_read;
	s->requests = r->requests;
	s->busy_seconds = r->busy_s;
	s->wait_seconds = r->wait_s;
	pthread_mutex_unlock((pthread_mutex_t *)&r->mu);
	s->backend = cloq_reader_backend(r);
	s->direct = r->p.direct;
}

/* ---- batch processing (background thread) --------------------------------------------------- */
static int batch_fail(cloq_reader *r, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Keep the first error of a batch. */
static int batch_fail(cloq_reader *r, int code, const char *fmt, ...)
{
	if (r->rc == CLOQ_OK) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(r->err.msg, sizeof r->err.msg, fmt, ap);
		va_end(ap);
		r->err.code = code;
		r->rc = code;
	}
	return r->rc;
}

static void advance_hash(cloq_reader *r)
{
	while (r->hash_req < r->nreq) {
		cloq_reader_req *q = &r->reqs[r->hash_req];
		if (q->length == 0) {
			q->xxh3 = XXH3_64bits(NULL, 0);
			r->hash_req++;
			continue;
		}
		if (r->hash_chunk >= r->nchunks || !r->chunks[r->hash_chunk].complete)
			return;
		struct chunk *c = &r->chunks[r->hash_chunk];
		if (c->off == 0)
			XXH3_64bits_reset(r->xs);
		XXH3_64bits_update(r->xs, (const char *)q->dst + c->off, c->len);
		q->got += c->len;
		if (c->last) {
			q->xxh3 = XXH3_64bits_digest(r->xs);
			r->hash_req++;
		}
		r->hash_chunk++;
	}
}

/* Account for `res` bytes (or -errno) returned for chunk c. Returns 1 when the chunk needs another
 * read for its remainder, 0 when it is complete or failed. */
static int chunk_result(cloq_reader *r, struct chunk *c, long res)
{
	cloq_reader_req *q = &r->reqs[c->req];
	uint64_t at = q->offset + c->off + c->done;
	if (res == -EINTR || res == -EAGAIN)
		return 1;
	if (res < 0) {
		int e = (int)-res;
		batch_fail(r, CLOQ_EIO, "%s: read failed at offset %llu: %s", r->paths[q->file],
			   (unsigned long long)at, strerror(e));
		return 0;
	}
	if (res > 0) {
		c->done += (uint32_t)res;
		r->batch_bytes += (uint64_t)res;
		if (c->done == c->len) {
			c->complete = 1;
			return 0;
		}
		/* A short read: resubmit the remainder, unless the file ends here (checked now,
		 * because under O_DIRECT a read of the unaligned remainder would fail with EINVAL
		 * instead of returning 0). */
		struct stat st;
		at = q->offset + c->off + c->done;
		if (fstat(r->fds[q->file], &st) != 0 || (uint64_t)st.st_size > at)
			return 1;
	}
	/* end of file */
	if (q->eof_ok) {
		c->len = c->done; /* hash and count only what exists */
		c->complete = 1;
		return 0;
	}
	/* chunks complete out of order, so `at` need not be where the file ends: say both */
	struct stat st;
	unsigned long long end = fstat(r->fds[q->file], &st) == 0 ? (unsigned long long)st.st_size : at;
	batch_fail(r, CLOQ_EINPUT,
		   "%s: short read: file ends at offset %llu, request wanted [%llu, %llu) (nothing at %llu)",
		   r->paths[q->file], end, (unsigned long long)q->offset,
		   (unsigned long long)(q->offset + q->length), (unsigned long long)at);
	return 0;
}

static int build_chunks(cloq_reader *r)
{
	size_t total = 0, cb = r->p.chunk_bytes;
	for (size_t i = 0; i < r->nreq; i++)
		total += (r->reqs[i].length + cb - 1) / cb;
	r->chunks = cloq_calloc(total ? total : 1, sizeof *r->chunks);
	if (!r->chunks)
		return batch_fail(r, CLOQ_EIO, "reader: out of memory for %zu chunks", total);
	size_t k = 0;
	for (size_t i = 0; i < r->nreq; i++) {
		for (uint64_t off = 0; off < r->reqs[i].length; off += cb) {
			struct chunk *c = &r->chunks[k++];
			c->req = i;
			c->off = off;
			c->len = (uint32_t)(r->reqs[i].length - off < cb ? r->reqs[i].length - off : cb);
			c->last = off + c->len == r->reqs[i].length;
		}
	}
	r->nchunks = k;
	r->hash_chunk = r->hash_req = 0;
	return CLOQ_OK;
}

static void run_pread(cloq_reader *r)
{
	for (size_t k = 0; k < r->nchunks && r->rc == CLOQ_OK; k++) {
		struct chunk *c = &r->chunks[k];
		const cloq_reader_req *q = &r->reqs[c->req];
		int again = 1;
		while (again && r->rc == CLOQ_OK) {
			long res;
			if (cloq_fault_hit(CLOQ_FAULT_IO)) {
				res = -EIO;
			} else {
				res = pread(r->fds[q->file], (char *)q->dst + c->off + c->done, c->len - c->done,
					    (off_t)(q->offset + c->off + c->done));
				if (res < 0)
					res = -errno;
			}
			again = chunk_result(r, c, res);
		}
		advance_hash(r);
	}
}

static void prep_chunk(cloq_reader *r, struct io_uring_sqe *sqe, size_t k)
{
	struct chunk *c = &r->chunks[k];
	const cloq_reader_req *q = &r->reqs[c->req];
	io_uring_prep_read(sqe, r->fds[q->file], (char *)q->dst + c->off + c->done, c->len - c->done,
			   q->offset + c->off + c->done);
	io_uring_sqe_set_data64(sqe, (uint64_t)k);
}

static void run_uring(cloq_reader *r)
{
	size_t next = 0;     /* next chunk never submitted */
	unsigned inflight = 0;
	size_t *redo = NULL; /* chunks that need their remainder resubmitted */
	size_t nredo = 0;
	redo = cloq_malloc(r->p.queue_depth * sizeof *redo);
	if (!redo) {
		batch_fail(r, CLOQ_EIO, "reader: out of memory");
		return;
	}
	for (;;) {
		/* fill the queue: remainders first, then new chunks; nothing new after an error */
		while (r->rc == CLOQ_OK && inflight < r->p.queue_depth && (nredo || next < r->nchunks)) {
			size_t k = nredo ? redo[--nredo] : next++;
			if (cloq_fault_hit(CLOQ_FAULT_IO)) {
				chunk_result(r, &r->chunks[k], -EIO);
				break;
			}
			/* the ring has queue_depth entries and at most queue_depth are in flight */
			struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
			prep_chunk(r, sqe, k);
			inflight++;
		}
		if (inflight == 0)
			break;
		/* submit what is queued and wait for one completion, in one system call */
		int s = io_uring_submit_and_wait(&r->ring, 1);
		if (s < 0 && s != -EINTR && s != -EAGAIN && s != -EBUSY) {
			/* Cannot happen with a working ring. Earlier reads may still land in the
			 * caller's buffers; never use this ring again. */
			batch_fail(r, CLOQ_EIO, "%s: io_uring submit failed: %s", r->paths[0], strerror(-s));
			r->backend = BACKEND_PREAD;
			break;
		}
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		io_uring_for_each_cqe(&r->ring, head, cqe)
		{
			size_t k = (size_t)io_uring_cqe_get_data64(cqe);
			seen++;
			inflight--;
			if (chunk_result(r, &r->chunks[k], cqe->res) && r->rc == CLOQ_OK)
				redo[nredo++] = k; /* inflight dropped by one, so there is room */
		}
		io_uring_cq_advance(&r->ring, seen);
		if (r->rc == CLOQ_OK)
			advance_hash(r);
	}
	cloq_free(redo);
}

/* Buffered reads: many chunks in flight at scattered offsets defeat the kernel's per-file
 * readahead (each read then fills the page cache a few pages at a time, measured at a third of
 * sequential bandwidth on ext4/virtio). Announcing every request's range first lets the kernel
 * start large readahead I/O for all of it; the reads then mostly find their pages arriving.
 * Adjacent requests of one file are merged into one hint. */
static void hint_willneed(cloq_reader *r)
{
	size_t i = 0;
	while (i < r->nreq) {
		int f = r->reqs[i].file;
		uint64_t lo = r->reqs[i].offset, hi = lo + r->reqs[i].length;
		size_t j = i + 1;
		while (j < r->nreq && r->reqs[j].file == f && r->reqs[j].offset <= hi + 4096 &&
		       r->reqs[j].offset + r->reqs[j].length >= lo) {
			uint64_t e = r->reqs[j].offset + r->reqs[j].length;
			if (e > hi)
				hi = e;
			j++;
		}
		if (hi > lo)
			posix_fadvise(r->fds[f], (off_t)lo, (off_t)(hi - lo), POSIX_FADV_WILLNEED);
		i = j;
	}
}

static void *reader_thread(void *arg)
{
	cloq_reader *r = arg;
	pthread_mutex_lock(&r->mu);
	for (;;) {
		while (!r->quit && !r->pending)
			pthread_cond_wait(&r->cv, &r->mu);
		if (r->quit && !r->pending)
			break;
		pthread_mutex_unlock(&r->mu);

		double t0 = now_s();
		r->batch_bytes = 0;
		if (!r->p.direct && r->p.willneed)
			hint_willneed(r);
		if (build_chunks(r) == CLOQ_OK) {
			if (r->backend == BACKEND_URING)
				run_uring(r);
			else
				run_pread(r);
			if (r->rc == CLOQ_OK)
				advance_hash(r); /* zero-length requests at the end */
		}
		cloq_free(r->chunks);
		r->chunks = NULL;
		double t1 = now_s();

		pthread_mutex_lock(&r->mu);
		r->bytes_read += r->batch_bytes;
		r->busy_s += t1 - t0;
		r->requests += r->nreq;
		r->pending = 0;
		r->finished = 1;
		pthread_cond_broadcast(&r->cv);
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

/* ---- public API ----------------------------------------------------------------------------- */
int cloq_reader_create(const char *const *paths, size_t nfiles, const cloq_reader_params *params,
		       cloq_reader **out, cloq_err *err)
{
	int rc = CLOQ_OK;
	*out = NULL;
	cloq_reader *r = cloq_calloc(1, sizeof *r);
	CLOQ_FAIL_IF(!r, err, CLOQ_EIO, "reader: out of memory");
	r->p = params ? *params : cloq_reader_default_params();
	if (r->p.queue_depth == 0)
		r->p.queue_depth = 32;
	if (r->p.queue_depth > 4096)
		r->p.queue_depth = 4096;
	if (r->p.chunk_bytes == 0)
		r->p.chunk_bytes = (size_t)1 << 20;
	if (r->p.chunk_bytes > ((size_t)1 << 30))
		r->p.chunk_bytes = (size_t)1 << 30; /* chunk lengths are 32-bit */
	r->fds = cloq_malloc((nfiles ? nfiles : 1) * sizeof *r->fds);
	r->paths = cloq_calloc(nfiles ? nfiles : 1, sizeof *r->paths);
	CLOQ_FAIL_IF(!r->fds || !r->paths, err, CLOQ_EIO, "reader: out of memory");
	for (size_t i = 0; i < nfiles; i++)
		r->fds[i] = -1;
	r->nfiles = nfiles;
	for (size_t i = 0; i < nfiles; i++) {
		r->paths[i] = cloq_strdup(paths[i]);
		CLOQ_FAIL_IF(!r->paths[i], err, CLOQ_EIO, "reader: out of memory");
		r->fds[i] = open(paths[i], O_RDONLY | O_CLOEXEC | (r->p.direct ? O_DIRECT : 0));
		if (r->fds[i] < 0 && errno == EINVAL && r->p.direct) {
			/* the file system has no O_DIRECT (tmpfs, ...): aligned requests read fine
			 * through the page cache, so fall back for every file */
			for (size_t j = 0; j < i; j++) {
				close(r->fds[j]);
				r->fds[j] = open(paths[j], O_RDONLY | O_CLOEXEC);
				CLOQ_FAIL_IF(r->fds[j] < 0, err, CLOQ_EIO, "%s: cannot open: %s", paths[j],
					     strerror(errno));
			}
			r->p.direct = 0;
			r->fds[i] = open(paths[i], O_RDONLY | O_CLOEXEC);
		}
		CLOQ_FAIL_IF(r->fds[i] < 0, err, errno == ENOENT ? CLOQ_EINPUT : CLOQ_EIO,
			     "%s: cannot open%s: %s", paths[i], r->p.direct ? " with O_DIRECT" : "",
			     strerror(errno));
	}
	r->xs = XXH3_createState();
	CLOQ_FAIL_IF(!r->xs, err, CLOQ_EIO, "reader: out of memory");

	r->backend = BACKEND_PREAD;
	if (!r->p.force_pread) {
		int q = io_uring_queue_init(r->p.queue_depth, &r->ring, 0);
		const char *why = NULL;
		char buf[128];
		if (q < 0) {
			snprintf(buf, sizeof buf, "io_uring_queue_init: %s", strerror(-q));
			why = buf;
		} else {
			struct io_uring_probe *probe = io_uring_get_probe_ring(&r->ring);
			if (!probe || !io_uring_opcode_supported(probe, IORING_OP_READ))
				why = "kernel lacks IORING_OP_READ";
			if (probe)
				io_uring_free_probe(probe);
			if (why) {
				io_uring_queue_exit(&r->ring);
			} else {
				r->backend = BACKEND_URING;
				r->have_ring = 1;
			}
		}
		if (why && atomic_exchange(&uring_notice_done, 1) == 0)
			fprintf(stderr, "cloq: io_uring unavailable (%s), using pread\n", why);
	}

	CLOQ_FAIL_IF(pthread_mutex_init(&r->mu, NULL) != 0, err, CLOQ_EIO, "reader: mutex init failed");
	if (pthread_cond_init(&r->cv, NULL) != 0) {
		pthread_mutex_destroy(&r->mu);
		CLOQ_FAIL_IF(1, err, CLOQ_EIO, "reader: condvar init failed");
	}
	if (pthread_create(&r->thread, NULL, reader_thread, r) != 0) {
		pthread_cond_destroy(&r->cv);
		pthread_mutex_destroy(&r->mu);
		CLOQ_FAIL_IF(1, err, CLOQ_EIO, "reader: cannot start the reading thread");
	}
	r->thread_started = 1;
	*out = r;
	return CLOQ_OK;
fail:
	cloq_reader_free(r);
	return rc;
}

void cloq_reader_free(cloq_reader *r)
{
	if (!r)
		return;
	if (r->thread_started) {
		if (r->in_flight)
			cloq_reader_wait(r, NULL);
		pthread_mutex_lock(&r->mu);
		r->quit = 1;
		pthread_cond_broadcast(&r->cv);
		pthread_mutex_unlock(&r->mu);
		pthread_join(r->thread, NULL);
		pthread_cond_destroy(&r->cv);
		pthread_mutex_destroy(&r->mu);
	}
	if (r->have_ring)
		io_uring_queue_exit(&r->ring);
	if (r->fds)
		for (size_t i = 0; i < r->nfiles; i++)
			if (r->fds[i] >= 0)
				close(r->fds[i]);
	if (r->paths)
		for (size_t i = 0; i < r->nfiles; i++)
			cloq_free(r->paths[i]);
	cloq_free(r->fds);
	cloq_free(r->paths);
	if (r->xs)
		XXH3_freeState(r->xs);
	cloq_free(r);
}

int cloq_reader_start(cloq_reader *r, cloq_reader_req *reqs, size_t n, cloq_err *err)
{
	if (r->in_flight)
		return cloq_err_set(err, CLOQ_EINPUT, "reader: a batch is still in flight (call wait first)");
	for (size_t i = 0; i < n; i++) {
		reqs[i].got = 0;
		if (reqs[i].file < 0 || (size_t)reqs[i].file >= r->nfiles)
			return cloq_err_set(err, CLOQ_EINPUT, "reader: request %zu names file %d of %zu", i,
					    reqs[i].file, r->nfiles);
		if (!reqs[i].dst && reqs[i].length)
			return cloq_err_set(err, CLOQ_EINPUT, "reader: request %zu has no buffer", i);
	}
	pthread_mutex_lock(&r->mu);
	r->reqs = reqs;
	r->nreq = n;
	r->rc = CLOQ_OK;
	cloq_err_clear(&r->err);
	r->finished = 0;
	r->pending = 1;
	r->in_flight = 1;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	return CLOQ_OK;
}

int cloq_reader_wait(cloq_reader *r, cloq_err *err)
{
	if (!r->in_flight)
		return cloq_err_set(err, CLOQ_EINPUT, "reader: wait without a batch in flight");
	double t0 = now_s();
	pthread_mutex_lock(&r->mu);
	while (!r->finished)
		pthread_cond_wait(&r->cv, &r->mu);
	r->wait_s += now_s() - t0;
	r->in_flight = 0;
	r->finished = 0;
	int rc = r->rc;
	if (rc && err)
		*err = r->err;
	pthread_mutex_unlock(&r->mu);
	return rc;
}

/* ---- planning ------------------------------------------------------------------------------- */
int cloq_st_plan(const cloq_st_model *m, const size_t *idx, size_t n, void *buf, size_t buf_size,
		 cloq_reader_req *reqs, size_t *needed, cloq_err *err)
{
	uint64_t pos = 0;
	for (size_t i = 0; i < n; i++) {
		const cloq_st_tensor *t = cloq_st_tensor_at(m, idx[i]);
		if (!t)
			return cloq_err_set(err, CLOQ_EINPUT, "plan: tensor index %zu out of range", idx[i]);
		pos = (pos + CLOQ_PLAN_ALIGN - 1) / CLOQ_PLAN_ALIGN * CLOQ_PLAN_ALIGN;
		if (buf) {
			if ((uintptr_t)buf % CLOQ_PLAN_ALIGN)
				return cloq_err_set(err, CLOQ_EINPUT, "plan: buffer not %d-byte aligned",
						    CLOQ_PLAN_ALIGN);
			if (pos + t->nbytes > buf_size)
				return cloq_err_set(err, CLOQ_EINPUT,
						    "plan: tensor '%s' does not fit the %zu-byte buffer", t->name,
						    buf_size);
			reqs[i].file = t->file;
			reqs[i].offset = t->offset;
			reqs[i].length = (size_t)t->nbytes;
			reqs[i].dst = (char *)buf + pos;
			reqs[i].tag = idx[i];
			reqs[i].xxh3 = 0;
		}
		pos += t->nbytes;
	}
	if (pos > SIZE_MAX)
		return cloq_err_set(err, CLOQ_EINPUT, "plan: %llu bytes do not fit in memory",
				    (unsigned long long)pos);
	*needed = (size_t)pos;
	return CLOQ_OK;
}

int cloq_st_layer_plan(const cloq_st_model *m, int layer, void *buf, size_t buf_size,
		       cloq_reader_req *reqs, size_t cap, size_t *nreq, size_t *needed,
		       cloq_err *err)
{
	size_t n = cloq_st_layer_tensors(m, layer, NULL, 0);
	*nreq = n;
	if (n == 0)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: no tensors named model.layers.%d.*",
				    cloq_st_file_path(m, 0), layer);
	if (buf && n > cap)
		return cloq_err_set(err, CLOQ_EINPUT, "plan: layer %d has %zu tensors, room for %zu",
				    layer, n, cap);
	size_t *idx = cloq_malloc(n * sizeof *idx);
	if (!idx)
		return cloq_err_set(err, CLOQ_EIO, "plan: out of memory");
	cloq_st_layer_tensors(m, layer, idx, n);
	int rc = cloq_st_plan(m, idx, n, buf, buf_size, reqs, needed, err);
	cloq_free(idx);
	return rc;
}

int cloq_st_layer_span_plan(const cloq_st_model *m, int layer, size_t align, void *buf,
			    size_t buf_size, cloq_st_span_plan *plan, cloq_err *err)
{
	memset(plan, 0, sizeof *plan);
	if (align < CLOQ_PLAN_ALIGN || (align & (align - 1)))
		return cloq_err_set(err, CLOQ_EINPUT, "span plan: alignment %zu is not a power of two >= %d",
				    align, CLOQ_PLAN_ALIGN);
	if (buf && (uintptr_t)buf % align)
		return cloq_err_set(err, CLOQ_EINPUT, "span plan: buffer not %zu-byte aligned", align);
	size_t n = cloq_st_layer_tensors(m, layer, NULL, 0);
	if (n == 0)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: no tensors named model.layers.%d.*",
				    cloq_st_file_path(m, 0), layer);
	size_t *idx = cloq_malloc(n * sizeof *idx);
	if (!idx)
		return cloq_err_set(err, CLOQ_EIO, "span plan: out of memory");
	cloq_st_layer_tensors(m, layer, idx, n);
	int rc = CLOQ_OK;
	uint64_t pos = 0;
	/* the tensors come in file order, so each file's tensors are one run */
	for (size_t i = 0; i < n;) {
		const cloq_st_tensor *a = cloq_st_tensor_at(m, idx[i]);
		uint64_t lo = a->offset, hi = a->offset + a->nbytes;
		size_t j = i + 1;
		for (; j < n && cloq_st_tensor_at(m, idx[j])->file == a->file; j++) {
			const cloq_st_tensor *t = cloq_st_tensor_at(m, idx[j]);
			if (t->offset + t->nbytes > hi)
				hi = t->offset + t->nbytes;
		}
		if (plan->nreq == CLOQ_SPAN_MAX) {
			rc = cloq_err_set(err, CLOQ_EINPUT, "layer %d spans more than %d files", layer,
					  CLOQ_SPAN_MAX);
			break;
		}
		lo = lo / align * align;
		hi = (hi + align - 1) / align * align;
		cloq_reader_req *q = &plan->req[plan->nreq++];
		q->file = a->file;
		q->offset = lo;
		q->length = (size_t)(hi - lo);
		q->eof_ok = hi > cloq_st_file_size(m, (size_t)a->file);
		q->tag = idx[i];
		pos = (pos + align - 1) / align * align;
		q->dst = buf ? (char *)buf + pos : NULL;
		pos += hi - lo;
		i = j;
	}
	cloq_free(idx);
	if (rc)
		return rc;
	plan->needed = (size_t)pos;
	if (buf && pos > buf_size)
		return cloq_err_set(err, CLOQ_EINPUT, "span plan: layer %d needs %llu bytes, buffer has %zu",
				    layer, (unsigned long long)pos, buf_size);
	return CLOQ_OK;
}

const void *cloq_st_span_data(const cloq_st_span_plan *plan, const cloq_st_tensor *t)
{
	for (size_t i = 0; i < plan->nreq; i++) {
		const cloq_reader_req *q = &plan->req[i];
		if (q->file == t->file && q->dst && t->offset >= q->offset &&
		    t->offset + t->nbytes <= q->offset + q->length)
			return (const char *)q->dst + (t->offset - q->offset);
	}
	return NULL;
}
