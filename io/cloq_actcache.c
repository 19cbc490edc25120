/* cloq_actcache.c - activation cache: zstd frames of byte-planed rows, checksummed index.
 * The byte layout is docs/FORMAT.md "Activation cache"; the contract is cloq_actcache.h. */
#include "cloq_actcache.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>
#include <zstd.h>

#include "cloq_sys.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "cloq_actcache.c assumes a little-endian host (the file format is little-endian)"
#endif

/* ---- format constants (docs/FORMAT.md) ----------------------------------------------------- */
#define SKIP_MAGIC_HEADER 0x184D2A50u /* zstd skippable frame, nibble 0: cache header */
#define SKIP_MAGIC_INDEX 0x184D2A51u  /* zstd skippable frame, nibble 1: cache index */
#define HDR_MAGIC "CLOQACTC"
#define IDX_MAGIC "CLOQACTI"
#define CACHE_VERSION 1u
#define HDR_SIZE 40u       /* whole header frame */
#define ENTRY_SIZE 40u     /* one index entry */
#define IDX_FIXED 48u      /* index frame without entries: 8 frame header + 40 footer */
#define IO_CHUNK (1u << 20)

struct frame_entry {
	uint64_t off, csize, rows, raw_hash, comp_hash;
};

enum { W_OPEN = 0, W_FAILED, W_COMMITTED };

struct cloq_cache_writer {
	cloq_atomic_file f;
	char *path;
	size_t cols;
	int enc, level, threads;
	int state, fail_rc;
	ZSTD_CCtx *cctx;
	struct frame_entry *fr;
	size_t nfr, capfr;
	uint64_t rows;
	unsigned char *planes, *natural, *out;
	size_t cap_planes, cap_natural;
};

struct cloq_cache_reader {
	int fd;
	char *path;
	size_t cols;
	int enc;
	uint64_t rows;
	struct frame_entry *fr;
	size_t nfr;
	int max_rows;
	ZSTD_DCtx *dctx;
	unsigned char *in, *planes, *natural;
	size_t cap_planes, cap_natural;
	float *cur;         /* decoded frame for cloq_cache_next */
	size_t cap_cur;     /* floats */
	size_t cur_frame;   /* frame held in cur, or SIZE_MAX */
	size_t seq_frame;   /* sequential position: frame and row within it */
	int seq_row;
};

/* A frame encoded apart from its writer (cloq_cache_encode), appended later in order. */
struct cloq_cache_frame {
	ZSTD_CCtx *cctx;
	unsigned char *planes, *natural, *out;
	size_t cap_planes, cap_natural, cap_out;
	size_t cols, csize;
	int enc, level, threads, full;
	uint64_t rows, raw_hash, comp_hash;
};

/* ---- little helpers ------------------------------------------------------------------------ */
static void put32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static size_t esize_of(int enc) { return enc == CLOQ_CACHE_BF16 ? 2 : 4; }

uint16_t cloq_cache_f32_to_bf16(float x)
{
	uint32_t u;
	memcpy(&u, &x, 4);
	if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep sign and top payload, force quiet */
		return (uint16_t)((u >> 16) | 0x40u);
	/* Round to nearest, ties to even; cannot overflow 32 bits below the NaN range, and the
	 * largest finite values correctly carry into Inf. */
	return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float cloq_cache_bf16_to_f32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float x;
	memcpy(&x, &u, 4);
	return x;
}

/* Byte planes: value i's byte p goes to planes[p*n + i]. Exponent bytes of neighbouring values
 * are alike, so grouping them hands zstd long similar runs. */
static void to_planes(unsigned char *dst, const unsigned char *src, size_t n, size_t es)
{
	if (es == 4) {
		for (size_t i = 0; i < n; i++) {
			dst[i] = src[4 * i];
			dst[n + i] = src[4 * i + 1];
			dst[2 * n + i] = src[4 * i + 2];
			dst[3 * n + i] = src[4 * i + 3];
		}
	} else {
		for (size_t i = 0; i < n; i++) {
			dst[i] = src[2 * i];
			dst[n + i] = src[2 * i + 1];
		}
	}
}

static void from_planes(unsigned char *dst, const unsigned char *src, size_t n, size_t es)
{
	if (es == 4) {
		for (size_t i = 0; i < n; i++) {
			dst[4 * i] = src[i];
			dst[4 * i + 1] = src[n + i];
			dst[4 * i + 2] = src[2 * n + i];
			dst[4 * i + 3] = src[3 * n + i];
		}
	} else {
		for (size_t i = 0; i < n; i++) {
			dst[2 * i] = src[i];
			dst[2 * i + 1] = src[n + i];
		}
	}
}

/* Grow *buf to at least n bytes (contents not kept). */
static int ensure(unsigned char **buf, size_t *cap, size_t n)
{
	if (*cap >= n && *buf)
		return 1;
	cloq_free(*buf);
	*buf = cloq_malloc(n);
	*cap = *buf ? n : 0;
	return *buf != NULL;
}

/* ---- writer -------------------------------------------------------------------------------- */
int cloq_cache_create(const char *path, size_t cols, int encoding, int zstd_level,
		      cloq_cache_writer **wp, cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_cache_writer *w = NULL;
	*wp = NULL;
	CLOQ_FAIL_IF(cols == 0 || cols > CLOQ_CACHE_MAX_COLS, err, CLOQ_EINPUT,
		     "%s: activation cache: cols %zu out of range 1..%u", path, cols, CLOQ_CACHE_MAX_COLS);
	CLOQ_FAIL_IF(encoding != CLOQ_CACHE_F32 && encoding != CLOQ_CACHE_BF16, err, CLOQ_EINPUT,
		     "%s: activation cache: unknown encoding %d", path, encoding);
	CLOQ_FAIL_IF(zstd_level < 1 || zstd_level > ZSTD_maxCLevel(), err, CLOQ_EINPUT,
		     "%s: activation cache: zstd level %d out of range 1..%d", path, zstd_level,
		     ZSTD_maxCLevel());
	w = cloq_calloc(1, sizeof *w);
	CLOQ_FAIL_IF(!w, err, CLOQ_EIO, "%s: out of memory", path);
	w->f.fd = -1;
	w->cols = cols;
	w->enc = encoding;
	w->level = zstd_level;
	w->path = cloq_strdup(path);
	w->out = cloq_malloc(IO_CHUNK);
	w->cctx = ZSTD_createCCtx();
	CLOQ_FAIL_IF(!w->path || !w->out || !w->cctx, err, CLOQ_EIO, "%s: out of memory", path);
	CLOQ_TRY(cloq_atomic_open(&w->f, path, err));

	unsigned char h[HDR_SIZE] = {0};
	put32(h, SKIP_MAGIC_HEADER);
	put32(h + 4, HDR_SIZE - 8);
	memcpy(h + 8, HDR_MAGIC, 8);
	put32(h + 16, CACHE_VERSION);
	put32(h + 20, (uint32_t)encoding);
	put64(h + 24, (uint64_t)cols);
	put64(h + 32, XXH3_64bits(h, 32));
	CLOQ_TRY(cloq_atomic_write(&w->f, h, sizeof h, err));
	*wp = w;
	return CLOQ_OK;
fail:
	cloq_cache_writer_free(w);
	return rc;
}

void cloq_cache_writer_set_scratch(cloq_cache_writer *w)
{
	w->level = -3;
	w->f.scratch = 1;
}

int cloq_cache_writer_set_threads(cloq_cache_writer *w, int n, cloq_err *err)
{
	if (n < 0 || n > 256)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: bad thread count %d", w->path, n);
	w->threads = n;
	return CLOQ_OK;
}

static int writer_usable(cloq_cache_writer *w, cloq_err *err)
{
	if (w->state == W_FAILED)
		return cloq_err_set(err, w->fail_rc, "%s: activation cache writer failed earlier", w->path);
	if (w->state == W_COMMITTED)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: activation cache already committed", w->path);
	return CLOQ_OK;
}

/* The planes of X's encoded values (the frame's content before zstd) into *planes, and the
 * XXH3-64 of the encoded values; *nbytes their size. */
static int encode_planes(const char *path, size_t cols, int enc, const float *X, int rows, unsigned char **planes,
			 size_t *cap_planes, unsigned char **natural_buf, size_t *cap_natural, size_t *nbytes,
			 uint64_t *raw_hash, cloq_err *err)
{
	int rc = CLOQ_OK;
	size_t es = esize_of(enc), n;
	CLOQ_FAIL_IF(!cloq_mul_ok((size_t)rows, cols, &n) || !cloq_mul_ok(n, es, nbytes), err, CLOQ_EINPUT,
		     "%s: append of %d rows x %zu cols overflows", path, rows, cols);
	CLOQ_FAIL_IF(!ensure(planes, cap_planes, *nbytes), err, CLOQ_EIO, "%s: out of memory for a %zu-byte frame",
		     path, *nbytes);
	const unsigned char *natural = (const unsigned char *)X;
	if (enc == CLOQ_CACHE_BF16) {
		CLOQ_FAIL_IF(!ensure(natural_buf, cap_natural, *nbytes), err, CLOQ_EIO,
			     "%s: out of memory for a %zu-byte frame", path, *nbytes);
		uint16_t *h = (uint16_t *)*natural_buf;
		for (size_t i = 0; i < n; i++)
			h[i] = cloq_cache_f32_to_bf16(X[i]);
		natural = *natural_buf;
	}
	*raw_hash = XXH3_64bits(natural, *nbytes);
	to_planes(*planes, natural, n, es);
fail:
	return rc;
}

/* Room for one more index entry. */
static int grow_frames(cloq_cache_writer *w, cloq_err *err)
{
	int rc = CLOQ_OK;
	if (w->nfr == w->capfr) {
		size_t nc = w->capfr ? 2 * w->capfr : 64;
		struct frame_entry *fr = cloq_realloc(w->fr, nc * sizeof *fr);
		CLOQ_FAIL_IF(!fr, err, CLOQ_EIO, "%s: out of memory", w->path);
		w->fr = fr;
		w->capfr = nc;
	}
fail:
	return rc;
}

/* zstd's parameters for a frame of w (level, checksum, workers, the size when known) */
static size_t frame_params(ZSTD_CCtx *c, const cloq_cache_writer *w, size_t pledged)
{
	ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters);
	size_t zr = ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, w->level);
	if (!ZSTD_isError(zr))
		zr = ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
	if (!ZSTD_isError(zr) && w->threads > 0)
		zr = ZSTD_CCtx_setParameter(c, ZSTD_c_nbWorkers, w->threads);
	if (!ZSTD_isError(zr) && pledged)
		zr = ZSTD_CCtx_setPledgedSrcSize(c, pledged);
	return zr;
}

/* Compress src (n bytes) as one frame onto the temp file, hashing the compressed bytes. */
static int compress_frame(cloq_cache_writer *w, const unsigned char *src, size_t n,
			  uint64_t *csize, uint64_t *comp_hash, cloq_err *err)
{
	ZSTD_CCtx *c = w->cctx;
	size_t zr = frame_params(c, w, n);
	if (ZSTD_isError(zr))
		return cloq_err_set(err, CLOQ_EIO, "%s: zstd setup: %s", w->path, ZSTD_getErrorName(zr));
	XXH3_state_t st;
	XXH3_64bits_reset(&st);
	ZSTD_inBuffer in = { src, n, 0 };
	uint64_t total = 0;
	for (;;) {
		ZSTD_outBuffer out = { w->out, IO_CHUNK, 0 };
		size_t left = ZSTD_compressStream2(c, &out, &in, ZSTD_e_end);
		if (ZSTD_isError(left))
			return cloq_err_set(err, CLOQ_EIO, "%s: zstd compression of frame %zu: %s",
					    w->path, w->nfr, ZSTD_getErrorName(left));
		if (out.pos) {
			int rc = cloq_atomic_write(&w->f, w->out, out.pos, err);
			if (rc)
				return rc;
			XXH3_64bits_update(&st, w->out, out.pos);
			total += out.pos;
		}
		if (left == 0)
			break;
	}
	*csize = total;
	*comp_hash = XXH3_64bits_digest(&st);
	return CLOQ_OK;
}

/* ---- frames encoded apart ----------------------------------------------------------------- */
cloq_cache_frame *cloq_cache_frame_new(void)
{
	cloq_cache_frame *f = cloq_calloc(1, sizeof *f);
	if (f && !(f->cctx = ZSTD_createCCtx())) {
		cloq_free(f);
		f = NULL;
	}
	return f;
}

void cloq_cache_frame_free(cloq_cache_frame *f)
{
	if (!f)
		return;
	ZSTD_freeCCtx(f->cctx);
	cloq_free(f->planes);
	cloq_free(f->natural);
	cloq_free(f->out);
	cloq_free(f);
}

int cloq_cache_encode(const cloq_cache_writer *w, cloq_cache_frame *f, const float *X, int rows, cloq_err *err)
{
	int rc = CLOQ_OK;
	size_t nbytes;
	f->full = 0;
	CLOQ_FAIL_IF(rows < 1 || !X, err, CLOQ_EINPUT, "%s: encode of %d rows from %p", w->path, rows, (const void *)X);
	CLOQ_TRY(encode_planes(w->path, w->cols, w->enc, X, rows, &f->planes, &f->cap_planes, &f->natural,
			       &f->cap_natural, &nbytes, &f->raw_hash, err));
	size_t bound = ZSTD_compressBound(nbytes);
	CLOQ_FAIL_IF(!ensure(&f->out, &f->cap_out, bound), err, CLOQ_EIO, "%s: out of memory for a %zu-byte frame",
		     w->path, nbytes);
	/* one call over the whole frame: the bytes compress_frame streams (test_frames_encoded_apart) */
	size_t zr = frame_params(f->cctx, w, 0);
	if (!ZSTD_isError(zr))
		zr = ZSTD_compress2(f->cctx, f->out, bound, f->planes, nbytes);
	CLOQ_FAIL_IF(ZSTD_isError(zr), err, CLOQ_EIO, "%s: zstd compression of a frame: %s", w->path,
		     ZSTD_getErrorName(zr));
	f->csize = zr;
	f->comp_hash = XXH3_64bits(f->out, zr);
	f->rows = (uint64_t)rows;
	f->cols = w->cols;
	f->enc = w->enc;
	f->level = w->level;
	f->threads = w->threads;
	f->full = 1;
fail:
	return rc;
}

int cloq_cache_append_frame(cloq_cache_writer *w, const cloq_cache_frame *f, cloq_err *err)
{
	int rc = writer_usable(w, err);
	if (rc)
		return rc;
	if (!f->full || f->cols != w->cols || f->enc != w->enc || f->level != w->level || f->threads != w->threads)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: a frame encoded for another cache (or not encoded)", w->path);
	CLOQ_TRY(grow_frames(w, err));
	struct frame_entry *e = &w->fr[w->nfr];
	e->off = w->f.off;
	e->rows = f->rows;
	e->raw_hash = f->raw_hash;
	e->csize = f->csize;
	e->comp_hash = f->comp_hash;
	CLOQ_TRY(cloq_atomic_write(&w->f, f->out, f->csize, err));
	w->nfr++;
	w->rows += f->rows;
	return CLOQ_OK;
fail:
	w->state = W_FAILED;
	w->fail_rc = rc;
	return rc;
}

int cloq_cache_append(cloq_cache_writer *w, const float *X, int rows, cloq_err *err)
{
	int rc = writer_usable(w, err);
	if (rc)
		return rc;
	if (rows < 0 || (rows > 0 && !X))
		return cloq_err_set(err, CLOQ_EINPUT, "%s: append of %d rows from %p", w->path, rows,
				    (const void *)X);
	if (rows == 0)
		return CLOQ_OK;
	size_t nbytes;
	CLOQ_TRY(grow_frames(w, err));
	struct frame_entry *e = &w->fr[w->nfr];
	e->off = w->f.off;
	e->rows = (uint64_t)rows;
	CLOQ_TRY(encode_planes(w->path, w->cols, w->enc, X, rows, &w->planes, &w->cap_planes, &w->natural,
			       &w->cap_natural, &nbytes, &e->raw_hash, err));
	CLOQ_TRY(compress_frame(w, w->planes, nbytes, &e->csize, &e->comp_hash, err));
	w->nfr++;
	w->rows += (uint64_t)rows;
	return CLOQ_OK;
fail:
	w->state = W_FAILED;
	w->fail_rc = rc;
	return rc;
}

int cloq_cache_commit(cloq_cache_writer *w, cloq_err *err)
{
	int rc = writer_usable(w, err);
	unsigned char *t = NULL;
	if (rc)
		return rc;
	size_t len = IDX_FIXED + ENTRY_SIZE * w->nfr;
	t = cloq_malloc(len);
	CLOQ_FAIL_IF(!t, err, CLOQ_EIO, "%s: out of memory", w->path);
	CLOQ_FAIL_IF(len - 8 > UINT32_MAX, err, CLOQ_EINPUT, "%s: too many frames (%zu)", w->path, w->nfr);
	put32(t, SKIP_MAGIC_INDEX);
	put32(t + 4, (uint32_t)(len - 8));
	unsigned char *p = t + 8;
	for (size_t k = 0; k < w->nfr; k++, p += ENTRY_SIZE) {
		put64(p, w->fr[k].off);
		put64(p + 8, w->fr[k].csize);
		put64(p + 16, w->fr[k].rows);
		put64(p + 24, w->fr[k].raw_hash);
		put64(p + 32, w->fr[k].comp_hash);
	}
	put64(p, w->rows);
	put64(p + 8, (uint64_t)w->nfr);
	put64(p + 16, (uint64_t)w->cols);
	memcpy(p + 24, IDX_MAGIC, 8);
	put64(p + 32, XXH3_64bits(t, len - 8));
	CLOQ_TRY(cloq_atomic_write(&w->f, t, len, err));
	cloq_free(t);
	t = NULL;
	rc = cloq_atomic_commit(&w->f, err);
	/* A failed commit has already removed the temp file; either way nothing is left to abort. */
	w->state = rc ? W_FAILED : W_COMMITTED;
	w->fail_rc = rc;
	return rc;
fail:
	cloq_free(t);
	w->state = W_FAILED;
	w->fail_rc = rc;
	return rc;
}

void cloq_cache_writer_free(cloq_cache_writer *w)
{
	if (!w)
		return;
	cloq_atomic_abort(&w->f); /* no-op after commit: the struct no longer names a temp file */
	ZSTD_freeCCtx(w->cctx);
	cloq_free(w->fr);
	cloq_free(w->planes);
	cloq_free(w->natural);
	cloq_free(w->out);
	cloq_free(w->path);
	cloq_free(w);
}

/* ---- reader -------------------------------------------------------------------------------- */
static int rd(cloq_cache_reader *r, void *buf, size_t n, uint64_t off, cloq_err *err)
{
	int rc = cloq_pread_all(r->fd, buf, n, off, r->path, err);
	if (rc == CLOQ_EINPUT) /* the file shrank under us: same as a truncated file */
		rc = cloq_err_set(err, CLOQ_EINTEGRITY, "%s: truncated: cannot read %zu bytes at offset %llu",
				  r->path, n, (unsigned long long)off);
	return rc;
}

/* Is this file meant to be a cache? One corrupted byte must not turn "damaged cache" into
 * "not a cache", so any one of three independent markers suffices. */
static int recognised(const unsigned char *head, size_t nhead, const unsigned char *tail16,
		      uint64_t size)
{
	unsigned char want[16];
	put32(want, SKIP_MAGIC_HEADER);
	put32(want + 4, HDR_SIZE - 8);
	memcpy(want + 8, HDR_MAGIC, 8);
	if (nhead < 16) /* empty, or a prefix of a header: a truncated cache */
		return memcmp(head, want, nhead) == 0;
	if (memcmp(head, want, 8) == 0 || memcmp(head + 8, want + 8, 8) == 0)
		return 1;
	return size >= HDR_SIZE + IDX_FIXED && memcmp(tail16, IDX_MAGIC, 8) == 0;
}

int cloq_cache_open(const char *path, cloq_cache_reader **rp, cloq_err *err)
{
	int rc = CLOQ_OK;
	unsigned char *t = NULL;
	cloq_cache_reader *r = NULL;
	*rp = NULL;
	r = cloq_calloc(1, sizeof *r);
	CLOQ_FAIL_IF(!r, err, CLOQ_EIO, "%s: out of memory", path);
	r->fd = -1;
	r->cur_frame = SIZE_MAX;
	r->path = cloq_strdup(path);
	CLOQ_FAIL_IF(!r->path, err, CLOQ_EIO, "%s: out of memory", path);
	r->fd = open(path, O_RDONLY | O_CLOEXEC);
	CLOQ_FAIL_IF(r->fd < 0, err, errno == ENOENT ? CLOQ_EINPUT : CLOQ_EIO,
		     "%s: cannot open activation cache: %s", path, strerror(errno));
	struct stat st;
	CLOQ_FAIL_IF(fstat(r->fd, &st) != 0, err, CLOQ_EIO, "%s: stat: %s", path, strerror(errno));
	CLOQ_FAIL_IF(!S_ISREG(st.st_mode), err, CLOQ_EINPUT, "%s: not a regular file", path);
	uint64_t size = (uint64_t)st.st_size;

	unsigned char h[HDR_SIZE] = {0}, tail[16] = {0};
	size_t nh = size < HDR_SIZE ? (size_t)size : HDR_SIZE;
	CLOQ_TRY(rd(r, h, nh, 0, err));
	if (size >= 16)
		CLOQ_TRY(rd(r, tail, 16, size - 16, err));
	CLOQ_FAIL_IF(!recognised(h, nh, tail, size), err, CLOQ_EINPUT,
		     "%s: not an activation cache file (no cloq cache header or index)", path);
	CLOQ_FAIL_IF(size < HDR_SIZE + IDX_FIXED, err, CLOQ_EINTEGRITY,
		     "%s: truncated activation cache: %llu bytes, at least %u needed", path,
		     (unsigned long long)size, HDR_SIZE + IDX_FIXED);
	CLOQ_FAIL_IF(get64(h + 32) != XXH3_64bits(h, 32), err, CLOQ_EINTEGRITY,
		     "%s: activation cache header checksum mismatch (offset 0..%u)", path, HDR_SIZE);
	CLOQ_FAIL_IF(get32(h) != SKIP_MAGIC_HEADER || get32(h + 4) != HDR_SIZE - 8 ||
		     memcmp(h + 8, HDR_MAGIC, 8) != 0, err, CLOQ_EINPUT,
		     "%s: not an activation cache file (bad magic)", path);
	CLOQ_FAIL_IF(get32(h + 16) != CACHE_VERSION, err, CLOQ_EINPUT,
		     "%s: activation cache version %u not supported (this build reads %u)", path,
		     get32(h + 16), CACHE_VERSION);
	r->enc = (int)get32(h + 20);
	CLOQ_FAIL_IF(r->enc != CLOQ_CACHE_F32 && r->enc != CLOQ_CACHE_BF16, err, CLOQ_EINPUT,
		     "%s: unknown encoding %d (offset 20)", path, r->enc);
	uint64_t cols = get64(h + 24);
	CLOQ_FAIL_IF(cols == 0 || cols > CLOQ_CACHE_MAX_COLS, err, CLOQ_EINPUT,
		     "%s: cols %llu out of range (offset 24)", path, (unsigned long long)cols);
	r->cols = (size_t)cols;

	/* The index: footer at the very end tells how many entries precede it. */
	unsigned char foot[40];
	uint64_t foot_off = size - 40;
	CLOQ_TRY(rd(r, foot, 40, foot_off, err));
	CLOQ_FAIL_IF(memcmp(foot + 24, IDX_MAGIC, 8) != 0, err, CLOQ_EINTEGRITY,
		     "%s: activation cache index footer missing at offset %llu (truncated or corrupt)",
		     path, (unsigned long long)foot_off);
	uint64_t nfr = get64(foot + 8);
	CLOQ_FAIL_IF(nfr > (size - HDR_SIZE - IDX_FIXED) / (ENTRY_SIZE + 1), err, CLOQ_EINTEGRITY,
		     "%s: index frame count %llu impossible for a %llu-byte file (offset %llu)", path,
		     (unsigned long long)nfr, (unsigned long long)size, (unsigned long long)foot_off + 8);
	size_t len = IDX_FIXED + ENTRY_SIZE * (size_t)nfr;
	uint64_t idx_off = size - len;
	t = cloq_malloc(len);
	CLOQ_FAIL_IF(!t, err, CLOQ_EIO, "%s: out of memory", path);
	CLOQ_TRY(rd(r, t, len, idx_off, err));
	CLOQ_FAIL_IF(get64(t + len - 8) != XXH3_64bits(t, len - 8), err, CLOQ_EINTEGRITY,
		     "%s: activation cache index checksum mismatch (index at offset %llu..%llu)", path,
		     (unsigned long long)idx_off, (unsigned long long)size);
	CLOQ_FAIL_IF(get32(t) != SKIP_MAGIC_INDEX || get32(t + 4) != len - 8 ||
		     get64(t + len - 24) != cols, err, CLOQ_EINTEGRITY,
		     "%s: activation cache index inconsistent with header (offset %llu)", path,
		     (unsigned long long)idx_off);
	r->nfr = (size_t)nfr;
	r->fr = cloq_calloc(r->nfr ? r->nfr : 1, sizeof *r->fr);
	CLOQ_FAIL_IF(!r->fr, err, CLOQ_EIO, "%s: out of memory", path);
	uint64_t off = HDR_SIZE, total = 0;
	size_t es = esize_of(r->enc);
	for (size_t k = 0; k < r->nfr; k++) {
		const unsigned char *p = t + 8 + ENTRY_SIZE * k;
		struct frame_entry *e = &r->fr[k];
		e->off = get64(p);
		e->csize = get64(p + 8);
		e->rows = get64(p + 16);
		e->raw_hash = get64(p + 24);
		e->comp_hash = get64(p + 32);
		size_t nb;
		CLOQ_FAIL_IF(e->off != off || e->csize == 0 || e->csize > idx_off - off ||
			     e->rows == 0 || e->rows > INT_MAX ||
			     !cloq_mul_ok((size_t)e->rows, r->cols * es, &nb), err, CLOQ_EINTEGRITY,
			     "%s: frame %zu: index entry inconsistent (offset %llu, size %llu, rows %llu)",
			     path, k, (unsigned long long)e->off, (unsigned long long)e->csize,
			     (unsigned long long)e->rows);
		off += e->csize;
		total += e->rows;
		if ((int)e->rows > r->max_rows)
			r->max_rows = (int)e->rows;
	}
	CLOQ_FAIL_IF(off != idx_off || total != get64(t + len - 40), err, CLOQ_EINTEGRITY,
		     "%s: frames end at offset %llu but the index starts at %llu (rows %llu vs %llu)",
		     path, (unsigned long long)off, (unsigned long long)idx_off,
		     (unsigned long long)total, (unsigned long long)get64(t + len - 40));
	r->rows = total;
	cloq_free(t);
	t = NULL;
	r->dctx = ZSTD_createDCtx();
	r->in = cloq_malloc(IO_CHUNK);
	CLOQ_FAIL_IF(!r->dctx || !r->in, err, CLOQ_EIO, "%s: out of memory", path);
	*rp = r;
	return CLOQ_OK;
fail:
	cloq_free(t);
	cloq_cache_close(r);
	return rc;
}

uint64_t cloq_cache_rows(const cloq_cache_reader *r) { return r->rows; }
size_t cloq_cache_cols(const cloq_cache_reader *r) { return r->cols; }
size_t cloq_cache_frames(const cloq_cache_reader *r) { return r->nfr; }
int cloq_cache_encoding(const cloq_cache_reader *r) { return r->enc; }
int cloq_cache_max_frame_rows(const cloq_cache_reader *r) { return r->max_rows; }

int cloq_cache_frame_rows(const cloq_cache_reader *r, size_t k)
{
	return k < r->nfr ? (int)r->fr[k].rows : 0;
}

/* Stream frame k's compressed bytes through zstd into r->planes (exactly `n` bytes expected),
 * hashing the compressed bytes on the way. */
static int decode_planes(cloq_cache_reader *r, size_t k, size_t n, cloq_err *err)
{
	const struct frame_entry *e = &r->fr[k];
	size_t zr = ZSTD_DCtx_reset(r->dctx, ZSTD_reset_session_only);
	if (ZSTD_isError(zr))
		return cloq_err_set(err, CLOQ_EIO, "%s: zstd reset: %s", r->path, ZSTD_getErrorName(zr));
	XXH3_state_t st;
	XXH3_64bits_reset(&st);
	ZSTD_outBuffer out = { r->planes, n, 0 };
	uint64_t done = 0;
	size_t left = 1;
	while (done < e->csize) {
		size_t chunk = e->csize - done < IO_CHUNK ? (size_t)(e->csize - done) : IO_CHUNK;
		int rc = rd(r, r->in, chunk, e->off + done, err);
		if (rc)
			return cloq_err_wrap(err, rc, "frame %zu", k);
		XXH3_64bits_update(&st, r->in, chunk);
		ZSTD_inBuffer in = { r->in, chunk, 0 };
		while (in.pos < in.size) {
			size_t ip = in.pos, op = out.pos;
			if (left == 0) /* the frame ended before its recorded size */
				return cloq_err_set(err, CLOQ_EINTEGRITY,
						    "%s: frame %zu (offset %llu): trailing bytes after the frame",
						    r->path, k, (unsigned long long)e->off);
			left = ZSTD_decompressStream(r->dctx, &out, &in);
			if (ZSTD_isError(left))
				return cloq_err_set(err, CLOQ_EINTEGRITY,
						    "%s: frame %zu (offset %llu): zstd: %s", r->path, k,
						    (unsigned long long)e->off, ZSTD_getErrorName(left));
			if (in.pos == ip && out.pos == op)
				return cloq_err_set(err, CLOQ_EINTEGRITY,
						    "%s: frame %zu (offset %llu): decodes to more than %zu bytes",
						    r->path, k, (unsigned long long)e->off, n);
		}
		done += chunk;
	}
	/* Check the compressed bytes first: it pinpoints damage even where zstd decoded happily
	 * (e.g. a frame header field such as the window size that does not change the content). */
	if (XXH3_64bits_digest(&st) != e->comp_hash)
		return cloq_err_set(err, CLOQ_EINTEGRITY,
				    "%s: frame %zu (offset %llu, %llu bytes): compressed bytes checksum mismatch",
				    r->path, k, (unsigned long long)e->off, (unsigned long long)e->csize);
	if (left != 0 || out.pos != n)
		return cloq_err_set(err, CLOQ_EINTEGRITY,
				    "%s: frame %zu (offset %llu): incomplete frame (%zu of %zu bytes decoded)",
				    r->path, k, (unsigned long long)e->off, out.pos, n);
	return CLOQ_OK;
}

int cloq_cache_read_frame(cloq_cache_reader *r, size_t k, float *dst, int *rows, cloq_err *err)
{
	int rc = CLOQ_OK;
	if (k >= r->nfr)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: frame %zu out of range (%zu frames)", r->path,
				    k, r->nfr);
	size_t es = esize_of(r->enc), n = (size_t)r->fr[k].rows * r->cols, nbytes = n * es;
	CLOQ_FAIL_IF(!ensure(&r->planes, &r->cap_planes, nbytes), err, CLOQ_EIO,
		     "%s: out of memory for frame %zu (%zu bytes)", r->path, k, nbytes);
	CLOQ_TRY(decode_planes(r, k, nbytes, err));
	unsigned char *natural = (unsigned char *)dst;
	if (r->enc == CLOQ_CACHE_BF16) {
		CLOQ_FAIL_IF(!ensure(&r->natural, &r->cap_natural, nbytes), err, CLOQ_EIO,
			     "%s: out of memory for frame %zu", r->path, k);
		natural = r->natural;
	}
	from_planes(natural, r->planes, n, es);
	CLOQ_FAIL_IF(XXH3_64bits(natural, nbytes) != r->fr[k].raw_hash, err, CLOQ_EINTEGRITY,
		     "%s: frame %zu (offset %llu): decoded values checksum mismatch", r->path, k,
		     (unsigned long long)r->fr[k].off);
	if (r->enc == CLOQ_CACHE_BF16) {
		const uint16_t *hv = (const uint16_t *)natural;
		for (size_t i = 0; i < n; i++)
			dst[i] = cloq_cache_bf16_to_f32(hv[i]);
	}
	if (rows)
		*rows = (int)r->fr[k].rows;
	return CLOQ_OK;
fail:
	return rc;
}

void cloq_cache_rewind(cloq_cache_reader *r)
{
	r->seq_frame = 0;
	r->seq_row = 0;
}

int cloq_cache_next(cloq_cache_reader *r, float *dst, int max_rows, int *got, cloq_err *err)
{
	int rc = CLOQ_OK, n = 0;
	CLOQ_FAIL_IF(max_rows < 0 || (max_rows > 0 && !dst), err, CLOQ_EINPUT,
		     "%s: bad sequential read of %d rows", r->path, max_rows);
	while (n < max_rows && r->seq_frame < r->nfr) {
		size_t k = r->seq_frame;
		if (r->cur_frame != k) {
			size_t nf = (size_t)r->fr[k].rows * r->cols;
			if (r->cap_cur < nf) {
				cloq_free(r->cur);
				r->cur = cloq_malloc(nf * sizeof(float));
				r->cap_cur = r->cur ? nf : 0;
				CLOQ_FAIL_IF(!r->cur, err, CLOQ_EIO, "%s: out of memory for frame %zu",
					     r->path, k);
			}
			r->cur_frame = SIZE_MAX;
			CLOQ_TRY(cloq_cache_read_frame(r, k, r->cur, NULL, err));
			r->cur_frame = k;
		}
		int avail = (int)r->fr[k].rows - r->seq_row;
		int take = avail < max_rows - n ? avail : max_rows - n;
		memcpy(dst + (size_t)n * r->cols, r->cur + (size_t)r->seq_row * r->cols,
		       (size_t)take * r->cols * sizeof(float));
		n += take;
		r->seq_row += take;
		if (r->seq_row == (int)r->fr[k].rows) {
			r->seq_frame++;
			r->seq_row = 0;
		}
	}
	*got = n;
	return CLOQ_OK;
fail:
	*got = 0;
	return rc;
}

void cloq_cache_close(cloq_cache_reader *r)
{
	if (!r)
		return;
	if (r->fd >= 0)
		close(r->fd);
	ZSTD_freeDCtx(r->dctx);
	cloq_free(r->fr);
	cloq_free(r->in);
	cloq_free(r->planes);
	cloq_free(r->natural);
	cloq_free(r->cur);
	cloq_free(r->path);
	cloq_free(r);
}
