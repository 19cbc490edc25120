/* cloq_shard.c - per-layer shard container: header skippable frame with a hashed tensor table,
 * one zstd frame per tensor, zstd seekable-format seek table. Byte layout: docs/FORMAT.md "Shard";
 * contract: cloq_shard.h. */
#include "cloq_shard.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>
#include <zstd.h>

#include "cloq_sys.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "cloq_shard.c assumes a little-endian host (the file format is little-endian)"
#endif

/* ---- format constants (docs/FORMAT.md) ----------------------------------------------------- */
#define SKIP_MAGIC_HEADER 0x184D2A50u  /* zstd skippable frame, nibble 0: shard header */
#define SKIP_MAGIC_SEEK 0x184D2A5Eu    /* zstd seekable format: seek table frame */
#define SEEKABLE_MAGIC 0x8F92EAB1u     /* last 4 bytes of a seekable file */
#define SEEK_DESC_CHECKSUM 0x80u       /* Seek_Table_Descriptor: Checksum_Flag */
#define SHARD_MAGIC "CLOQSHRD"
#define SHARD_VERSION 1u
#define SHARD_LEVEL 3                  /* fixed: part of the determinism contract */
#define TABLE_FIXED 24u                /* magic, version, layer, count, frame_bytes */
#define HEADER_MAX (64u << 20)         /* sanity bound on the header frame's content */
#define IO_CHUNK (1u << 20)
#define COPY_CHUNK (4u << 20)

struct tensor {
	char *name;
	int dtype, enc, ndim;
	uint64_t shape[CLOQ_SHARD_MAX_NDIM];
	uint64_t nbytes, csize, comp_hash;
	unsigned char raw_hash[16]; /* XXH128 canonical (big-endian) */
	uint32_t nframes;
	uint64_t off;               /* reader: file offset of the first frame */
	size_t first;               /* reader: index of the first frame in the seek table */
};

struct seek_entry {
	uint32_t csize, dsize, cksum;
};

static const struct {
	const char *name;
	unsigned size, is_float;
} dtypes[] = {
	[CLOQ_SHARD_F64] = { "F64", 8, 1 },  [CLOQ_SHARD_F32] = { "F32", 4, 1 },
	[CLOQ_SHARD_F16] = { "F16", 2, 1 },  [CLOQ_SHARD_BF16] = { "BF16", 2, 1 },
	[CLOQ_SHARD_I64] = { "I64", 8, 0 },  [CLOQ_SHARD_I32] = { "I32", 4, 0 },
	[CLOQ_SHARD_I16] = { "I16", 2, 0 },  [CLOQ_SHARD_I8] = { "I8", 1, 0 },
	[CLOQ_SHARD_U64] = { "U64", 8, 0 },  [CLOQ_SHARD_U32] = { "U32", 4, 0 },
	[CLOQ_SHARD_U16] = { "U16", 2, 0 },  [CLOQ_SHARD_U8] = { "U8", 1, 0 },
	[CLOQ_SHARD_BOOL] = { "BOOL", 1, 0 },
};
#define NDTYPES ((int)(sizeof dtypes / sizeof dtypes[0]))

const char *cloq_shard_dtype_name(int dtype)
{
	return dtype > 0 && dtype < NDTYPES ? dtypes[dtype].name : NULL;
}

size_t cloq_shard_dtype_size(int dtype)
{
	return dtype > 0 && dtype < NDTYPES ? dtypes[dtype].size : 0;
}

int cloq_shard_dtype_from_name(const char *name)
{
	for (int d = 1; d < NDTYPES; d++)
		if (strcmp(dtypes[d].name, name) == 0)
			return d;
	return 0;
}

static void put16(unsigned char *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static uint16_t get16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t get32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static uint32_t frames_of(uint64_t nbytes, uint64_t fb)
{
	return nbytes == 0 ? 1 : (uint32_t)((nbytes + fb - 1) / fb);
}

static uint32_t frame_dsize(uint64_t nbytes, uint64_t fb, uint32_t f)
{
	uint64_t start = (uint64_t)f * fb;
	return (uint32_t)(nbytes - start < fb ? nbytes - start : fb);
}

/* The seek table's checksum of an empty frame (the header's skippable frame). */
static uint32_t empty_cksum(void) { return (uint32_t)XXH64(NULL, 0, 0); }

/* Bytes of one table entry. */
static size_t entry_size(size_t name_len, int ndim) { return 2 + name_len + 8 + 8 * (size_t)ndim + 40; }

/* Element count and the plane mapping: planar byte j holds byte (j / n) of element (j % n). */
struct planes_pos {
	uint64_t n, p, e;
};

/* ---- writer -------------------------------------------------------------------------------- */
enum { W_OPEN = 0, W_FAILED, W_COMMITTED };

struct cloq_shard_writer {
	char *path;
	uint32_t layer;
	uint64_t frame_bytes;
	int scratch;              /* unlinked scratch file holding the tensor frames */
	uint64_t scratch_off;
	cloq_atomic_file f;
	int state, fail_rc;
	ZSTD_CCtx *cctx;
	struct tensor *t;
	size_t nt, capt;
	struct seek_entry *se;    /* tensor frames only; the header entry is implicit */
	size_t nse, capse;
	unsigned char *gather, *out;
};

int cloq_shard_writer_create(const char *path, uint32_t layer, cloq_shard_writer **wp, cloq_err *err)
{
	int rc = CLOQ_OK;
	char *scratch = NULL;
	cloq_shard_writer *w = cloq_calloc(1, sizeof *w);
	*wp = NULL;
	CLOQ_FAIL_IF(!w, err, CLOQ_EIO, "%s: out of memory", path);
	w->scratch = -1;
	w->f.fd = -1;
	w->layer = layer;
	w->frame_bytes = CLOQ_SHARD_FRAME_BYTES;
	w->path = cloq_strdup(path);
	w->gather = cloq_malloc(IO_CHUNK);
	w->out = cloq_malloc(IO_CHUNK);
	w->cctx = ZSTD_createCCtx();
	size_t n = strlen(path) + 48;
	scratch = cloq_malloc(n);
	CLOQ_FAIL_IF(!w->path || !w->gather || !w->out || !w->cctx || !scratch, err, CLOQ_EIO,
		     "%s: out of memory", path);
	size_t zr = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, SHARD_LEVEL);
	if (!ZSTD_isError(zr))
		zr = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_checksumFlag, 1);
	if (!ZSTD_isError(zr)) /* explicit: multithreaded frames would differ from these bytes */
		zr = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_nbWorkers, 0);
	CLOQ_FAIL_IF(ZSTD_isError(zr), err, CLOQ_EIO, "%s: zstd setup: %s", path, ZSTD_getErrorName(zr));
	/* The header (with every tensor's hashes) must come first, so the frames wait in a scratch
	 * file, unlinked at once so that no crash can leave it behind. */
	snprintf(scratch, n, "%s.data.tmp.%ld", path, (long)getpid());
	CLOQ_FAIL_IF(cloq_fault_hit(CLOQ_FAULT_IO), err, CLOQ_EIO,
		     "%s: create scratch file failed (injected fault)", path);
	w->scratch = open(scratch, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CLOQ_FAIL_IF(w->scratch < 0, err, CLOQ_EIO, "%s: create scratch file %s failed: %s", path,
		     scratch, strerror(errno));
	unlink(scratch);
	cloq_free(scratch);
	*wp = w;
	return CLOQ_OK;
fail:
	cloq_free(scratch);
	cloq_shard_writer_free(w);
	return rc;
}

int cloq_shard_writer_set_frame_bytes(cloq_shard_writer *w, size_t frame_bytes, cloq_err *err)
{
	if (frame_bytes < 1 || frame_bytes > CLOQ_SHARD_FRAME_BYTES || w->nt > 0)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: frame size %zu not in 1..%u or set after add",
				    w->path, frame_bytes, CLOQ_SHARD_FRAME_BYTES);
	w->frame_bytes = frame_bytes;
	return CLOQ_OK;
}

static int writer_usable(cloq_shard_writer *w, cloq_err *err)
{
	if (w->state == W_FAILED)
		return cloq_err_set(err, w->fail_rc, "%s: shard writer failed earlier", w->path);
	if (w->state == W_COMMITTED)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: shard already committed", w->path);
	return CLOQ_OK;
}

/* Copy planar bytes [pos, pos + m) of the tensor `src` (n elements of es bytes) into dst. */
static void gather_planes(unsigned char *dst, const unsigned char *src, uint64_t n, size_t es,
			  uint64_t pos, size_t m)
{
	if (m == 0) /* an empty tensor has n == 0 */
		return;
	uint64_t p = pos / n, e = pos % n;
	for (size_t j = 0; j < m; j++) {
		dst[j] = src[e * es + p];
		if (++e == n) {
			e = 0;
			p++;
		}
	}
}

/* Flush what zstd produced into the scratch file. */
static int emit(cloq_shard_writer *w, ZSTD_outBuffer *out, XXH3_state_t *comp, uint32_t *csize,
		cloq_err *err)
{
	if (!out->pos)
		return CLOQ_OK;
	int rc = cloq_pwrite_all(w->scratch, out->dst, out->pos, w->scratch_off, w->path, err);
	if (rc)
		return rc;
	XXH3_64bits_update(comp, out->dst, out->pos);
	w->scratch_off += out->pos;
	*csize += (uint32_t)out->pos;
	out->pos = 0;
	return CLOQ_OK;
}

/* Compress tensor bytes (as stored: raw or planes) into nframes frames in the scratch file. */
static int compress_tensor(cloq_shard_writer *w, struct tensor *t, const unsigned char *data,
			   cloq_err *err)
{
	size_t es = dtypes[t->dtype].size;
	uint64_t n = es ? t->nbytes / es : 0;
	XXH3_state_t comp;
	XXH3_64bits_reset(&comp);
	uint64_t csize = 0;
	for (uint32_t f = 0; f < t->nframes; f++) {
		struct seek_entry *se = &w->se[w->nse];
		uint64_t start = (uint64_t)f * w->frame_bytes;
		uint32_t len = frame_dsize(t->nbytes, w->frame_bytes, f);
		se->csize = 0;
		se->dsize = len;
		size_t zr = ZSTD_CCtx_reset(w->cctx, ZSTD_reset_session_only);
		if (!ZSTD_isError(zr))
			zr = ZSTD_CCtx_setPledgedSrcSize(w->cctx, len);
		if (ZSTD_isError(zr))
			return cloq_err_set(err, CLOQ_EIO, "%s: tensor '%s': zstd: %s", w->path, t->name,
					    ZSTD_getErrorName(zr));
		XXH64_state_t fh;
		XXH64_reset(&fh, 0);
		uint64_t done = 0;
		do {
			size_t m = len - done < IO_CHUNK ? (size_t)(len - done) : IO_CHUNK;
			const unsigned char *src;
			if (t->enc == CLOQ_SHARD_PLANES) {
				gather_planes(w->gather, data, n, es, start + done, m);
				src = w->gather;
			} else {
				src = m ? data + start + done : w->gather; /* never NULL for zstd */
			}
			XXH64_update(&fh, src, m);
			done += m;
			ZSTD_EndDirective mode = done == len ? ZSTD_e_end : ZSTD_e_continue;
			ZSTD_inBuffer in = { src, m, 0 };
			for (;;) {
				ZSTD_outBuffer out = { w->out, IO_CHUNK, 0 };
				size_t left = ZSTD_compressStream2(w->cctx, &out, &in, mode);
				if (ZSTD_isError(left))
					return cloq_err_set(err, CLOQ_EIO, "%s: tensor '%s': zstd: %s",
							    w->path, t->name, ZSTD_getErrorName(left));
				int rc = emit(w, &out, &comp, &se->csize, err);
				if (rc)
					return rc;
				if (mode == ZSTD_e_end ? left == 0 : in.pos == in.size)
					break;
			}
		} while (done < len);
		se->cksum = (uint32_t)XXH64_digest(&fh);
		csize += se->csize;
		w->nse++;
	}
	t->csize = csize;
	t->comp_hash = XXH3_64bits_digest(&comp);
	return CLOQ_OK;
}

int cloq_shard_add(cloq_shard_writer *w, const char *name, int dtype, int ndim, const uint64_t *shape,
		   const void *data, size_t nbytes, cloq_err *err)
{
	int rc = writer_usable(w, err);
	if (rc)
		return rc;
	size_t nl = name ? strlen(name) : 0;
	if (nl == 0 || nl > CLOQ_SHARD_MAX_NAME)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor name of %zu bytes (1..%d allowed)",
				    w->path, nl, CLOQ_SHARD_MAX_NAME);
	if (!cloq_shard_dtype_name(dtype))
		return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s': unknown dtype %d", w->path, name, dtype);
	if (ndim < 0 || ndim > CLOQ_SHARD_MAX_NDIM || (ndim > 0 && !shape))
		return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s': bad ndim %d", w->path, name, ndim);
	size_t count = 1, want = 0;
	for (int d = 0; d < ndim; d++)
		if (shape[d] > SIZE_MAX || !cloq_mul_ok(count, (size_t)shape[d], &count))
			return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s': shape overflows", w->path, name);
	if (!cloq_mul_ok(count, dtypes[dtype].size, &want) || want != nbytes)
		return cloq_err_set(err, CLOQ_EINPUT,
				    "%s: tensor '%s': %zu bytes given, shape x %s needs %zu", w->path,
				    name, nbytes, dtypes[dtype].name, want);
	if (nbytes > 0 && !data)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s': no data", w->path, name);
	for (size_t i = 0; i < w->nt; i++)
		if (strcmp(w->t[i].name, name) == 0)
			return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s' added twice", w->path, name);

	uint32_t nframes = frames_of(nbytes, w->frame_bytes);
	if (w->nt == w->capt) {
		size_t nc = w->capt ? 2 * w->capt : 32;
		struct tensor *t = cloq_realloc(w->t, nc * sizeof *t);
		CLOQ_FAIL_IF(!t, err, CLOQ_EIO, "%s: out of memory", w->path);
		w->t = t;
		w->capt = nc;
	}
	if (w->nse + nframes > w->capse) {
		size_t nc = (w->capse ? 2 * w->capse : 64) + nframes;
		struct seek_entry *se = cloq_realloc(w->se, nc * sizeof *se);
		CLOQ_FAIL_IF(!se, err, CLOQ_EIO, "%s: out of memory", w->path);
		w->se = se;
		w->capse = nc;
	}
	struct tensor *t = &w->t[w->nt];
	memset(t, 0, sizeof *t);
	t->name = cloq_strdup(name);
	CLOQ_FAIL_IF(!t->name, err, CLOQ_EIO, "%s: out of memory", w->path);
	t->dtype = dtype;
	t->enc = dtypes[dtype].is_float && dtypes[dtype].size > 1 ? CLOQ_SHARD_PLANES : CLOQ_SHARD_RAW;
	t->ndim = ndim;
	for (int d = 0; d < ndim; d++)
		t->shape[d] = shape[d];
	t->nbytes = nbytes;
	t->nframes = nframes;
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits(data ? data : "", nbytes));
	memcpy(t->raw_hash, c.digest, 16);
	rc = compress_tensor(w, t, data, err);
	if (rc) {
		cloq_free(t->name);
		goto fail;
	}
	w->nt++;
	return CLOQ_OK;
fail:
	/* A half-written tensor cannot be taken back out of the scratch file. */
	w->state = W_FAILED;
	w->fail_rc = rc;
	return rc;
}

static unsigned char *build_header(cloq_shard_writer *w, size_t *len)
{
	size_t content = TABLE_FIXED + 16;
	for (size_t i = 0; i < w->nt; i++)
		content += entry_size(strlen(w->t[i].name), w->t[i].ndim);
	if (content > HEADER_MAX)
		return NULL;
	unsigned char *h = cloq_malloc(8 + content), *p = h + 8;
	if (!h)
		return NULL;
	put32(h, SKIP_MAGIC_HEADER);
	put32(h + 4, (uint32_t)content);
	memcpy(p, SHARD_MAGIC, 8);
	put32(p + 8, SHARD_VERSION);
	put32(p + 12, w->layer);
	put32(p + 16, (uint32_t)w->nt);
	put32(p + 20, (uint32_t)w->frame_bytes);
	p += TABLE_FIXED;
	for (size_t i = 0; i < w->nt; i++) {
		const struct tensor *t = &w->t[i];
		size_t nl = strlen(t->name);
		put16(p, (uint16_t)nl);
		memcpy(p + 2, t->name, nl);
		p += 2 + nl;
		p[0] = (unsigned char)t->dtype;
		p[1] = (unsigned char)t->enc;
		p[2] = (unsigned char)t->ndim;
		p[3] = 0;
		put32(p + 4, t->nframes);
		p += 8;
		for (int d = 0; d < t->ndim; d++, p += 8)
			put64(p, t->shape[d]);
		put64(p, t->nbytes);
		put64(p + 8, t->csize);
		put64(p + 16, t->comp_hash);
		memcpy(p + 24, t->raw_hash, 16);
		p += 40;
	}
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits(h + 8, content - 16));
	memcpy(p, c.digest, 16);
	*len = 8 + content;
	return h;
}

int cloq_shard_commit(cloq_shard_writer *w, cloq_err *err)
{
	int rc = writer_usable(w, err);
	unsigned char *h = NULL, *buf = NULL, *seek = NULL;
	if (rc)
		return rc;
	size_t hlen = 0;
	h = build_header(w, &hlen);
	CLOQ_FAIL_IF(!h, err, CLOQ_EIO, "%s: out of memory (or a tensor table over %u bytes)",
		     w->path, HEADER_MAX);
	buf = cloq_malloc(COPY_CHUNK);
	size_t nent = 1 + w->nse, slen = 8 + 12 * nent + 9;
	seek = cloq_malloc(slen);
	CLOQ_FAIL_IF(!buf || !seek, err, CLOQ_EIO, "%s: out of memory", w->path);
	put32(seek, SKIP_MAGIC_SEEK);
	put32(seek + 4, (uint32_t)(slen - 8));
	put32(seek + 8, (uint32_t)hlen);
	put32(seek + 12, 0);
	put32(seek + 16, empty_cksum());
	for (size_t k = 0; k < w->nse; k++) {
		unsigned char *p = seek + 8 + 12 * (k + 1);
		put32(p, w->se[k].csize);
		put32(p + 4, w->se[k].dsize);
		put32(p + 8, w->se[k].cksum);
	}
	put32(seek + slen - 9, (uint32_t)nent);
	seek[slen - 5] = SEEK_DESC_CHECKSUM;
	put32(seek + slen - 4, SEEKABLE_MAGIC);

	CLOQ_TRY(cloq_atomic_open(&w->f, w->path, err));
	CLOQ_TRY(cloq_atomic_write(&w->f, h, hlen, err));
	for (uint64_t off = 0; off < w->scratch_off;) {
		size_t m = w->scratch_off - off < COPY_CHUNK ? (size_t)(w->scratch_off - off) : COPY_CHUNK;
		CLOQ_TRY(cloq_pread_all(w->scratch, buf, m, off, w->path, err));
		CLOQ_TRY(cloq_atomic_write(&w->f, buf, m, err));
		off += m;
	}
	CLOQ_TRY(cloq_atomic_write(&w->f, seek, slen, err));
	rc = cloq_atomic_commit(&w->f, err);
	w->state = rc ? W_FAILED : W_COMMITTED;
	w->fail_rc = rc;
	cloq_free(h);
	cloq_free(buf);
	cloq_free(seek);
	return rc;
fail:
	cloq_atomic_abort(&w->f);
	w->state = W_FAILED;
	w->fail_rc = rc;
	cloq_free(h);
	cloq_free(buf);
	cloq_free(seek);
	return rc;
}

void cloq_shard_writer_free(cloq_shard_writer *w)
{
	if (!w)
		return;
	cloq_atomic_abort(&w->f);
	if (w->scratch >= 0)
		close(w->scratch);
	for (size_t i = 0; i < w->nt; i++)
		cloq_free(w->t[i].name);
	cloq_free(w->t);
	cloq_free(w->se);
	ZSTD_freeCCtx(w->cctx);
	cloq_free(w->gather);
	cloq_free(w->out);
	cloq_free(w->path);
	cloq_free(w);
}

/* ---- reader -------------------------------------------------------------------------------- */
struct cloq_shard {
	int fd;
	char *path;
	uint64_t size;
	uint32_t layer;
	uint64_t frame_bytes;
	struct tensor *t;
	size_t nt;
	uint64_t hdr_len;        /* the header frame, magic and size included */
	uint64_t data_end;       /* end of the last tensor frame = where the seek table starts */
	struct seek_entry *se;   /* expected entries, header first; csize/cksum from the file */
	size_t nse;
	int seek_ok;             /* seek table present and consistent with the table */
	ZSTD_DCtx *dctx;
	unsigned char *in, *out;
};

void cloq_shard_close(cloq_shard *s)
{
	if (!s)
		return;
	if (s->fd >= 0)
		close(s->fd);
	for (size_t i = 0; i < s->nt; i++)
		cloq_free(s->t[i].name);
	cloq_free(s->t);
	cloq_free(s->se);
	ZSTD_freeDCtx(s->dctx);
	cloq_free(s->in);
	cloq_free(s->out);
	cloq_free(s->path);
	cloq_free(s);
}

static int rd(cloq_shard *s, void *buf, size_t n, uint64_t off, const char *what, cloq_err *err)
{
	int rc = cloq_pread_all(s->fd, buf, n, off, s->path, err);
	if (rc == CLOQ_EINPUT) /* sizes were checked against fstat: the file shrank meanwhile */
		rc = cloq_err_set(err, CLOQ_EINTEGRITY, "%s: %s: truncated at offset %llu", s->path,
				  what, (unsigned long long)off);
	return rc;
}

/* A single damaged byte must not turn "damaged shard" into "not a shard": either the content
 * magic, or both zstd magics at the two ends, identify the file. */
static int recognised(const unsigned char *head, size_t nhead, uint32_t tail_magic, uint64_t size)
{
	unsigned char want[16];
	put32(want, SKIP_MAGIC_HEADER);
	memcpy(want + 8, SHARD_MAGIC, 8);
	if (nhead < 16) /* empty or a prefix of a header: a truncated shard (size bytes 4..7 free) */
		return memcmp(head, want, nhead < 4 ? nhead : 4) == 0 &&
		       (nhead <= 8 || memcmp(head + 8, want + 8, nhead - 8) == 0);
	if (memcmp(head + 8, SHARD_MAGIC, 8) == 0)
		return 1;
	return get32(head) == SKIP_MAGIC_HEADER && tail_magic == SEEKABLE_MAGIC;
}

/* Read and check the header frame; fill s->t, s->hdr_len, s->data_end and the expected seek
 * entries. Header damage is CLOQ_EINTEGRITY with "header" in the message. */
static int load_header(cloq_shard *s, cloq_err *err)
{
	int rc = CLOQ_OK;
	unsigned char *h = NULL;
	const char *path = s->path;
	unsigned char head[16] = {0}, tail[4] = {0};
	size_t nhead = s->size < 16 ? (size_t)s->size : 16;
	CLOQ_TRY(rd(s, head, nhead, 0, "header", err));
	if (s->size >= 4)
		CLOQ_TRY(rd(s, tail, 4, s->size - 4, "end", err));
	CLOQ_FAIL_IF(!recognised(head, nhead, get32(tail), s->size), err, CLOQ_EINPUT,
		     "%s: not a cloq shard (no shard header or seek table)", path);
	CLOQ_FAIL_IF(s->size < 8 + TABLE_FIXED + 16, err, CLOQ_EINTEGRITY,
		     "%s: header: truncated shard (%llu bytes)", path, (unsigned long long)s->size);
	uint64_t content = get32(head + 4);
	CLOQ_FAIL_IF(content < TABLE_FIXED + 16 || content > HEADER_MAX || 8 + content > s->size, err,
		     CLOQ_EINTEGRITY, "%s: header: frame size %llu impossible in a %llu-byte file (offset 4)",
		     path, (unsigned long long)content, (unsigned long long)s->size);
	h = cloq_malloc((size_t)content);
	CLOQ_FAIL_IF(!h, err, CLOQ_EIO, "%s: out of memory", path);
	CLOQ_TRY(rd(s, h, (size_t)content, 8, "header", err));
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits(h, (size_t)content - 16));
	CLOQ_FAIL_IF(memcmp(c.digest, h + content - 16, 16) != 0, err, CLOQ_EINTEGRITY,
		     "%s: header: table checksum mismatch (offset 8..%llu)", path,
		     (unsigned long long)(8 + content));
	/* Recognised above, so a wrong magic here is damage, not a foreign file. */
	CLOQ_FAIL_IF(get32(head) != SKIP_MAGIC_HEADER || memcmp(h, SHARD_MAGIC, 8) != 0, err,
		     CLOQ_EINTEGRITY, "%s: header: bad magic (offset 0)", path);
	CLOQ_FAIL_IF(get32(h + 8) != SHARD_VERSION, err, CLOQ_EINPUT,
		     "%s: shard format version %u not supported (this build reads %u)", path,
		     get32(h + 8), SHARD_VERSION);
	s->layer = get32(h + 12);
	uint32_t nt = get32(h + 16);
	s->frame_bytes = get32(h + 20);
	CLOQ_FAIL_IF(s->frame_bytes < 1 || s->frame_bytes > CLOQ_SHARD_FRAME_BYTES ||
		     nt > content / entry_size(1, 0), err, CLOQ_EINPUT,
		     "%s: header: frame size %llu or tensor count %u out of range", path,
		     (unsigned long long)s->frame_bytes, nt);
	s->t = cloq_calloc(nt ? nt : 1, sizeof *s->t);
	CLOQ_FAIL_IF(!s->t, err, CLOQ_EIO, "%s: out of memory", path);
	/* Everything below was covered by the checksum: inconsistencies are a writer's bug or a
	 * forged file, not disk damage, hence CLOQ_EINPUT. */
	const unsigned char *p = h + TABLE_FIXED, *end = h + content - 16;
	uint64_t off = 8 + content, nframes = 0;
	for (uint32_t i = 0; i < nt; i++) {
		struct tensor *t = &s->t[i];
		uint64_t at = 8 + (uint64_t)(p - h);
		CLOQ_FAIL_IF(end - p < 2, err, CLOQ_EINPUT, "%s: header: entry %u cut short (offset %llu)",
			     path, i, (unsigned long long)at);
		size_t nl = get16(p);
		CLOQ_FAIL_IF(nl == 0 || nl > CLOQ_SHARD_MAX_NAME || (size_t)(end - p) < 2 + nl + 8, err,
			     CLOQ_EINPUT, "%s: header: entry %u: bad name length %zu (offset %llu)", path,
			     i, nl, (unsigned long long)at);
		CLOQ_FAIL_IF(memchr(p + 2, 0, nl) != NULL, err, CLOQ_EINPUT,
			     "%s: header: entry %u: NUL in name (offset %llu)", path, i,
			     (unsigned long long)at);
		t->name = cloq_malloc(nl + 1);
		CLOQ_FAIL_IF(!t->name, err, CLOQ_EIO, "%s: out of memory", path);
		s->nt = i + 1;
		memcpy(t->name, p + 2, nl);
		t->name[nl] = '\0';
		p += 2 + nl;
		t->dtype = p[0];
		t->enc = p[1];
		t->ndim = p[2];
		t->nframes = get32(p + 4);
		CLOQ_FAIL_IF(!cloq_shard_dtype_name(t->dtype) || t->ndim > CLOQ_SHARD_MAX_NDIM ||
			     p[3] != 0 || (t->enc != CLOQ_SHARD_RAW && t->enc != CLOQ_SHARD_PLANES) ||
			     (t->enc == CLOQ_SHARD_PLANES && dtypes[t->dtype].size < 2) ||
			     (size_t)(end - p) < entry_size(0, t->ndim) - 2, err, CLOQ_EINPUT,
			     "%s: header: tensor '%s': bad dtype %d / encoding %d / ndim %d", path,
			     t->name, t->dtype, t->enc, t->ndim);
		p += 8;
		size_t count = 1, want = 0;
		int ok = 1;
		for (int d = 0; d < t->ndim; d++, p += 8) {
			t->shape[d] = get64(p);
			ok = ok && t->shape[d] <= SIZE_MAX && cloq_mul_ok(count, (size_t)t->shape[d], &count);
		}
		t->nbytes = get64(p);
		t->csize = get64(p + 8);
		t->comp_hash = get64(p + 16);
		memcpy(t->raw_hash, p + 24, 16);
		p += 40;
		ok = ok && cloq_mul_ok(count, dtypes[t->dtype].size, &want) && want == t->nbytes;
		CLOQ_FAIL_IF(!ok, err, CLOQ_EINPUT, "%s: header: tensor '%s': shape does not match %llu bytes",
			     path, t->name, (unsigned long long)t->nbytes);
		CLOQ_FAIL_IF(t->nframes != frames_of(t->nbytes, s->frame_bytes) ||
			     t->csize < t->nframes || t->csize > s->size, err, CLOQ_EINPUT,
			     "%s: header: tensor '%s': %u frames / %llu compressed bytes impossible",
			     path, t->name, t->nframes, (unsigned long long)t->csize);
		for (uint32_t j = 0; j < i; j++)
			CLOQ_FAIL_IF(strcmp(s->t[j].name, t->name) == 0, err, CLOQ_EINPUT,
				     "%s: header: tensor '%s' listed twice", path, t->name);
		t->off = off;
		t->first = 1 + nframes;
		off += t->csize;
		nframes += t->nframes;
	}
	CLOQ_FAIL_IF(p != end, err, CLOQ_EINPUT, "%s: header: %lld stray bytes after the table", path,
		     (long long)(end - p));
	s->hdr_len = 8 + content;
	s->data_end = off;
	s->nse = (size_t)(1 + nframes);
	s->se = cloq_calloc(s->nse, sizeof *s->se);
	CLOQ_FAIL_IF(!s->se, err, CLOQ_EIO, "%s: out of memory", path);
	s->se[0].csize = (uint32_t)s->hdr_len;
	s->se[0].cksum = empty_cksum();
	for (size_t i = 0; i < s->nt; i++)
		for (uint32_t f = 0; f < s->t[i].nframes; f++)
			s->se[s->t[i].first + f].dsize = frame_dsize(s->t[i].nbytes, s->frame_bytes, f);
	cloq_free(h);
	return CLOQ_OK;
fail:
	cloq_free(h);
	return rc;
}

/* Check the seek table against the table; keep its per-frame compressed sizes and checksums in
 * s->se for comparison while decoding. Sets s->seek_ok. Returns CLOQ_EINTEGRITY (message names
 * the seek table) or CLOQ_EIO. */
static int load_seek_table(cloq_shard *s, cloq_err *err)
{
	int rc = CLOQ_OK;
	unsigned char *b = NULL;
	s->seek_ok = 0;
	uint64_t slen = 8 + 12 * (uint64_t)s->nse + 9;
	CLOQ_FAIL_IF(s->data_end + slen != s->size, err, CLOQ_EINTEGRITY,
		     "%s: seek table: file is %llu bytes, the table implies %llu (truncated or extended)",
		     s->path, (unsigned long long)s->size, (unsigned long long)(s->data_end + slen));
	b = cloq_malloc((size_t)slen);
	CLOQ_FAIL_IF(!b, err, CLOQ_EIO, "%s: out of memory", s->path);
	CLOQ_TRY(rd(s, b, (size_t)slen, s->data_end, "seek table", err));
	CLOQ_FAIL_IF(get32(b) != SKIP_MAGIC_SEEK || get32(b + 4) != slen - 8 ||
		     get32(b + slen - 9) != s->nse || b[slen - 5] != SEEK_DESC_CHECKSUM ||
		     get32(b + slen - 4) != SEEKABLE_MAGIC, err, CLOQ_EINTEGRITY,
		     "%s: seek table: bad frame header or footer (offset %llu)", s->path,
		     (unsigned long long)s->data_end);
	const unsigned char *e = b + 8;
	CLOQ_FAIL_IF(get32(e) != s->se[0].csize || get32(e + 4) != 0 || get32(e + 8) != s->se[0].cksum,
		     err, CLOQ_EINTEGRITY, "%s: seek table: entry 0 (header) disagrees (offset %llu)",
		     s->path, (unsigned long long)s->data_end + 8);
	for (size_t i = 0; i < s->nt; i++) {
		const struct tensor *t = &s->t[i];
		uint64_t sum = 0;
		for (uint32_t f = 0; f < t->nframes; f++) {
			size_t k = t->first + f;
			const unsigned char *q = e + 12 * k;
			s->se[k].csize = get32(q);
			s->se[k].cksum = get32(q + 8);
			sum += s->se[k].csize;
			CLOQ_FAIL_IF(get32(q + 4) != s->se[k].dsize || s->se[k].csize == 0, err,
				     CLOQ_EINTEGRITY,
				     "%s: seek table: entry %zu (tensor '%s' frame %u) disagrees (offset %llu)",
				     s->path, k, t->name, f,
				     (unsigned long long)(s->data_end + 8 + 12 * k));
		}
		CLOQ_FAIL_IF(sum != t->csize, err, CLOQ_EINTEGRITY,
			     "%s: seek table: frames of tensor '%s' sum to %llu bytes, table says %llu",
			     s->path, t->name, (unsigned long long)sum, (unsigned long long)t->csize);
	}
	s->seek_ok = 1;
	cloq_free(b);
	return CLOQ_OK;
fail:
	cloq_free(b);
	return rc;
}

static int shard_open_fd(const char *path, cloq_shard **sp, cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_shard *s = cloq_calloc(1, sizeof *s);
	*sp = NULL;
	CLOQ_FAIL_IF(!s, err, CLOQ_EIO, "%s: out of memory", path);
	s->fd = -1;
	s->path = cloq_strdup(path);
	s->dctx = ZSTD_createDCtx();
	s->in = cloq_malloc(IO_CHUNK);
	s->out = cloq_malloc(IO_CHUNK);
	CLOQ_FAIL_IF(!s->path || !s->dctx || !s->in || !s->out, err, CLOQ_EIO, "%s: out of memory", path);
	s->fd = open(path, O_RDONLY | O_CLOEXEC);
	CLOQ_FAIL_IF(s->fd < 0, err, errno == ENOENT ? CLOQ_EINPUT : CLOQ_EIO,
		     "%s: cannot open shard: %s", path, strerror(errno));
	struct stat st;
	CLOQ_FAIL_IF(fstat(s->fd, &st) != 0, err, CLOQ_EIO, "%s: stat: %s", path, strerror(errno));
	CLOQ_FAIL_IF(!S_ISREG(st.st_mode), err, CLOQ_EINPUT, "%s: not a regular file", path);
	s->size = (uint64_t)st.st_size;
	*sp = s;
	return CLOQ_OK;
fail:
	cloq_shard_close(s);
	return rc;
}

int cloq_shard_open(const char *path, cloq_shard **sp, cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_shard *s = NULL;
	*sp = NULL;
	CLOQ_TRY(shard_open_fd(path, &s, err));
	CLOQ_TRY(load_header(s, err));
	CLOQ_TRY(load_seek_table(s, err));
	*sp = s;
	return CLOQ_OK;
fail:
	cloq_shard_close(s);
	return rc;
}

uint32_t cloq_shard_layer(const cloq_shard *s) { return s->layer; }
size_t cloq_shard_count(const cloq_shard *s) { return s->nt; }
const char *cloq_shard_name(const cloq_shard *s, size_t i) { return i < s->nt ? s->t[i].name : NULL; }
int cloq_shard_dtype(const cloq_shard *s, size_t i) { return i < s->nt ? s->t[i].dtype : 0; }
int cloq_shard_encoding(const cloq_shard *s, size_t i) { return i < s->nt ? s->t[i].enc : -1; }
int cloq_shard_ndim(const cloq_shard *s, size_t i) { return i < s->nt ? s->t[i].ndim : -1; }
const uint64_t *cloq_shard_shape(const cloq_shard *s, size_t i) { return i < s->nt ? s->t[i].shape : NULL; }
uint64_t cloq_shard_nbytes(const cloq_shard *s, size_t i) { return i < s->nt ? s->t[i].nbytes : 0; }

long cloq_shard_find(const cloq_shard *s, const char *name)
{
	for (size_t i = 0; i < s->nt; i++)
		if (strcmp(s->t[i].name, name) == 0)
			return (long)i;
	return -1;
}

/* Decode tensor i into dst (nbytes). Damage to the tensor is CLOQ_EINTEGRITY naming it; a seek
 * table entry that disagrees with the frames as decoded sets *seek_bad (checked only when the
 * seek table was loaded) without failing. */
static int decode_tensor(cloq_shard *s, size_t i, unsigned char *dst, int *seek_bad, cloq_err *err)
{
	const struct tensor *t = &s->t[i];
	const char *nm = t->name;
	unsigned long long off0 = (unsigned long long)t->off;
	if (t->off > s->size || t->csize > s->size - t->off)
		return cloq_err_set(err, CLOQ_EINTEGRITY,
				    "%s: tensor '%s': frames at offset %llu..%llu extend past the end "
				    "of the %llu-byte file (truncated)", s->path, nm, off0,
				    (unsigned long long)(t->off + t->csize), (unsigned long long)s->size);
	size_t zr = ZSTD_DCtx_reset(s->dctx, ZSTD_reset_session_only);
	if (ZSTD_isError(zr))
		return cloq_err_set(err, CLOQ_EIO, "%s: zstd reset: %s", s->path, ZSTD_getErrorName(zr));
	size_t es = dtypes[t->dtype].size;
	uint64_t n = es ? t->nbytes / es : 0, pl_p = 0, pl_e = 0;
	XXH3_state_t comp;
	XXH3_64bits_reset(&comp);
	XXH64_state_t fh;
	XXH64_reset(&fh, 0);
	uint32_t f = 0;
	uint64_t f_out = 0, f_start = 0, total_out = 0, fed = 0;
	uint64_t f_want = frame_dsize(t->nbytes, s->frame_bytes, 0);
	while (fed < t->csize) {
		size_t chunk = t->csize - fed < IO_CHUNK ? (size_t)(t->csize - fed) : IO_CHUNK;
		int rc = rd(s, s->in, chunk, t->off + fed, "tensor data", err);
		if (rc)
			return cloq_err_wrap(err, rc, "tensor '%s'", nm);
		XXH3_64bits_update(&comp, s->in, chunk);
		ZSTD_inBuffer in = { s->in, chunk, 0 };
		while (in.pos < in.size) {
			if (f >= t->nframes)
				return cloq_err_set(err, CLOQ_EINTEGRITY,
						    "%s: tensor '%s': data after its last frame (offset %llu)",
						    s->path, nm, (unsigned long long)(t->off + fed + in.pos));
			uint64_t room = f_want - f_out;
			ZSTD_outBuffer out;
			if (t->enc == CLOQ_SHARD_RAW && room > 0)
				out = (ZSTD_outBuffer){ dst + total_out, (size_t)room, 0 };
			else
				out = (ZSTD_outBuffer){ s->out, room < IO_CHUNK ? (size_t)room : IO_CHUNK, 0 };
			size_t ip = in.pos;
			size_t left = ZSTD_decompressStream(s->dctx, &out, &in);
			if (ZSTD_isError(left))
				return cloq_err_set(err, CLOQ_EINTEGRITY,
						    "%s: tensor '%s': frame %u (tensor at offset %llu): zstd: %s",
						    s->path, nm, f, off0, ZSTD_getErrorName(left));
			if (out.pos) {
				XXH64_update(&fh, out.dst, out.pos);
				if (t->enc == CLOQ_SHARD_PLANES) {
					const unsigned char *o = out.dst;
					for (size_t j = 0; j < out.pos; j++) {
						dst[pl_e * es + pl_p] = o[j];
						if (++pl_e == n) {
							pl_e = 0;
							pl_p++;
						}
					}
				}
				f_out += out.pos;
				total_out += out.pos;
			}
			if (left == 0) {
				if (f_out != f_want)
					return cloq_err_set(err, CLOQ_EINTEGRITY,
							    "%s: tensor '%s': frame %u holds %llu bytes, %llu expected",
							    s->path, nm, f, (unsigned long long)f_out,
							    (unsigned long long)f_want);
				uint64_t end = fed + in.pos;
				const struct seek_entry *se = &s->se[t->first + f];
				if (s->seek_ok && (se->csize != end - f_start ||
						   se->cksum != (uint32_t)XXH64_digest(&fh)))
					*seek_bad = 1;
				XXH64_reset(&fh, 0);
				f_start = end;
				f++;
				f_out = 0;
				f_want = f < t->nframes ? frame_dsize(t->nbytes, s->frame_bytes, f) : 0;
			} else if (in.pos == ip && out.pos == 0) {
				return cloq_err_set(err, CLOQ_EINTEGRITY,
						    "%s: tensor '%s': frame %u decodes to more than %llu bytes",
						    s->path, nm, f, (unsigned long long)f_want);
			}
		}
		fed += chunk;
	}
	if (XXH3_64bits_digest(&comp) != t->comp_hash)
		return cloq_err_set(err, CLOQ_EINTEGRITY,
				    "%s: tensor '%s': compressed bytes checksum mismatch (offset %llu, %llu bytes)",
				    s->path, nm, off0, (unsigned long long)t->csize);
	if (f != t->nframes)
		return cloq_err_set(err, CLOQ_EINTEGRITY,
				    "%s: tensor '%s': only %u of %u frames complete (offset %llu)", s->path,
				    nm, f, t->nframes, off0);
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits(t->nbytes ? (const void *)dst : "", (size_t)t->nbytes));
	if (memcmp(c.digest, t->raw_hash, 16) != 0)
		return cloq_err_set(err, CLOQ_EINTEGRITY, "%s: tensor '%s': XXH3-128 of the data does not match",
				    s->path, nm);
	return CLOQ_OK;
}

int cloq_shard_read(cloq_shard *s, size_t i, void *dst, size_t cap, cloq_err *err)
{
	if (i >= s->nt)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor index %zu out of range (%zu tensors)",
				    s->path, i, s->nt);
	if (cap < s->t[i].nbytes || (s->t[i].nbytes && !dst))
		return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s': %llu bytes do not fit in %zu",
				    s->path, s->t[i].name, (unsigned long long)s->t[i].nbytes, cap);
	int seek_bad = 0;
	int rc = decode_tensor(s, i, dst, &seek_bad, err);
	if (rc == CLOQ_OK && seek_bad)
		rc = cloq_err_set(err, CLOQ_EINTEGRITY,
				  "%s: seek table: entries for tensor '%s' disagree with its frames", s->path,
				  s->t[i].name);
	return rc;
}

int cloq_shard_read_name(cloq_shard *s, const char *name, void *dst, size_t cap, cloq_err *err)
{
	long i = cloq_shard_find(s, name);
	if (i < 0)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: no tensor '%s'", s->path, name);
	return cloq_shard_read(s, (size_t)i, dst, cap, err);
}

/* ---- verification -------------------------------------------------------------------------- */
static int report_add(cloq_shard_report *rep, const char *what)
{
	char **b = cloq_realloc(rep->bad, (rep->n_bad + 1) * sizeof *b);
	if (!b)
		return 0;
	rep->bad = b;
	b[rep->n_bad] = cloq_strdup(what);
	if (!b[rep->n_bad])
		return 0;
	rep->n_bad++;
	return 1;
}

void cloq_shard_report_free(cloq_shard_report *rep)
{
	if (!rep)
		return;
	for (size_t i = 0; i < rep->n_bad; i++)
		cloq_free(rep->bad[i]);
	cloq_free(rep->bad);
	memset(rep, 0, sizeof *rep);
}

int cloq_shard_verify(const char *path, cloq_shard_report *out, cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_shard *s = NULL;
	unsigned char *buf = NULL;
	cloq_shard_report rep = {0};
	cloq_err sub;
	cloq_err_clear(&sub);
	char first[CLOQ_ERR_MSG_MAX] = "";

	CLOQ_TRY(shard_open_fd(path, &s, err));
	rc = load_header(s, &sub);
	if (rc == CLOQ_EINTEGRITY) {
		CLOQ_FAIL_IF(!report_add(&rep, "header"), err, CLOQ_EIO, "%s: out of memory", path);
		rc = cloq_err_set(err, CLOQ_EINTEGRITY, "%s: integrity failure in: header (%s)", path,
				  sub.msg);
		goto fail;
	}
	if (rc) {
		if (err)
			*err = sub;
		goto fail;
	}
	rep.layer = s->layer;
	rep.n_tensors = s->nt;
	rc = load_seek_table(s, &sub);
	if (rc == CLOQ_EIO) {
		if (err)
			*err = sub;
		goto fail;
	}
	if (rc)
		snprintf(first, sizeof first, "%s", sub.msg);
	uint64_t maxb = 0;
	for (size_t i = 0; i < s->nt; i++)
		maxb = s->t[i].nbytes > maxb ? s->t[i].nbytes : maxb;
	CLOQ_FAIL_IF(maxb > SIZE_MAX, err, CLOQ_EIO, "%s: tensor too large for memory", path);
	buf = cloq_malloc((size_t)maxb);
	CLOQ_FAIL_IF(!buf, err, CLOQ_EIO, "%s: out of memory for a %llu-byte tensor", path,
		     (unsigned long long)maxb);
	int seek_bad = !s->seek_ok;
	for (size_t i = 0; i < s->nt; i++) {
		int sb = 0;
		cloq_err_clear(&sub);
		rc = decode_tensor(s, i, buf, &sb, &sub);
		if (rc == CLOQ_EIO) {
			if (err)
				*err = sub;
			goto fail;
		}
		if (rc) {
			CLOQ_FAIL_IF(!report_add(&rep, s->t[i].name), err, CLOQ_EIO, "%s: out of memory", path);
			if (!first[0])
				snprintf(first, sizeof first, "%s", sub.msg);
		} else if (sb) {
			seek_bad = 1;
		}
	}
	if (seek_bad)
		CLOQ_FAIL_IF(!report_add(&rep, "seek table"), err, CLOQ_EIO, "%s: out of memory", path);
	rc = CLOQ_OK;
	if (rep.n_bad) {
		char list[CLOQ_ERR_MSG_MAX / 2] = "";
		size_t used = 0;
		for (size_t i = 0; i < rep.n_bad && used + 1 < sizeof list; i++) {
			int special = strcmp(rep.bad[i], "seek table") == 0;
			int k = snprintf(list + used, sizeof list - used, special ? "%s%s" : "%stensor '%s'",
					 i ? ", " : "", rep.bad[i]);
			used += k > 0 ? (size_t)k : 0;
		}
		rc = cloq_err_set(err, CLOQ_EINTEGRITY, "%s: integrity failure in %zu part(s): %s; first: %s",
				  path, rep.n_bad, list, first[0] ? first : "seek table disagrees with frames");
	}
fail:
	cloq_free(buf);
	cloq_shard_close(s);
	if (out)
		*out = rep;
	else
		cloq_shard_report_free(&rep);
	return rc;
}
