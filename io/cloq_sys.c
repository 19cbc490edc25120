/* cloq_sys.c - allocation and file-output seam, fault injection, durable writes. */
#include "cloq_sys.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- fault injection ----------------------------------------------------------------------- */
static _Atomic long fault_nth[CLOQ_FAULT_KINDS];
static _Atomic long fault_seen[CLOQ_FAULT_KINDS];

void cloq_fault_set(int kind, long nth)
{
	atomic_store(&fault_seen[kind], 0);
	atomic_store(&fault_nth[kind], nth);
}

long cloq_fault_count(int kind) { return atomic_load(&fault_seen[kind]); }

int cloq_fault_hit(int kind)
{
	long nth = atomic_load(&fault_nth[kind]);
	long seen = atomic_fetch_add(&fault_seen[kind], 1) + 1;
	return nth > 0 && seen == nth;
}

void cloq_fault_from_env(void)
{
	const char *a = getenv("CLOQ_FAULT_ALLOC"), *io = getenv("CLOQ_FAULT_IO");
	if (a && *a)
		cloq_fault_set(CLOQ_FAULT_ALLOC, atol(a));
	if (io && *io)
		cloq_fault_set(CLOQ_FAULT_IO, atol(io));
}

/* ---- allocation ---------------------------------------------------------------------------- */
/* Big buffers (weights, n x n factors, products) are touched once right after allocation, in
 * fresh pages from the kernel: with 4 KiB pages that is one fault per page, and on this kind of
 * virtual machine a fault costs ~15 us: 0.8 s to fill a 180 MB down_proj difference. Asking for
 * transparent huge pages on the 2 MiB-aligned interior makes it one fault per 2 MiB. Only a hint
 * (THP may be off, "madvise" is Debian's default); the memory is the same either way. */
#define HUGE_HINT_MIN ((size_t)8 << 20)
#define HUGE_PAGE ((uintptr_t)2 << 20)

static void *huge_hint(void *p, size_t n)
{
	if (p && n >= HUGE_HINT_MIN) {
		uintptr_t a = ((uintptr_t)p + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
		uintptr_t b = ((uintptr_t)p + n) & ~(HUGE_PAGE - 1);
		if (b > a)
			(void)madvise((void *)a, b - a, MADV_HUGEPAGE);
	}
	return p;
}

void *cloq_malloc(size_t n)
{
	if (cloq_fault_hit(CLOQ_FAULT_ALLOC))
		return NULL;
	return huge_hint(malloc(n ? n : 1), n);
}

void *cloq_calloc(size_t count, size_t size)
{
	if (cloq_fault_hit(CLOQ_FAULT_ALLOC))
		return NULL;
	size_t n = count && size && count <= SIZE_MAX / size ? count * size : 0;
	return huge_hint(calloc(count ? count : 1, size ? size : 1), n);
}

void *cloq_realloc(void *p, size_t n)
{
	if (cloq_fault_hit(CLOQ_FAULT_ALLOC))
		return NULL;
	return realloc(p, n ? n : 1);
}

void *cloq_aligned_alloc(size_t align, size_t n)
{
	if (cloq_fault_hit(CLOQ_FAULT_ALLOC))
		return NULL;
	if (align < 64)
		align = 64;
	void *p = NULL;
	if (posix_memalign(&p, align, n ? n : 1) != 0)
		return NULL;
	return huge_hint(p, n);
}

void cloq_free(void *p) { free(p); }

char *cloq_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = cloq_malloc(n);
	if (d)
		memcpy(d, s, n);
	return d;
}

/* ---- file I/O ------------------------------------------------------------------------------ */
static int io_error(cloq_err *err, int e, const char *what, const char *path)
{
	if (e == ENOSPC || e == EDQUOT || e == EFBIG)
		return cloq_err_set(err, CLOQ_EIO, "%s: %s failed: disk full (%s)", path, what, strerror(e));
	return cloq_err_set(err, CLOQ_EIO, "%s: %s failed: %s", path, what, strerror(e));
}

int cloq_read_file(const char *path, char **data, size_t *size, cloq_err *err)
{
	int rc = CLOQ_OK;
	char *buf = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cloq_err_set(err, errno == ENOENT ? CLOQ_EINPUT : CLOQ_EIO, "%s: cannot open: %s",
				    path, strerror(errno));
	struct stat st;
	CLOQ_FAIL_IF(fstat(fd, &st) != 0, err, CLOQ_EIO, "%s: stat failed: %s", path, strerror(errno));
	CLOQ_FAIL_IF(!S_ISREG(st.st_mode), err, CLOQ_EINPUT, "%s: not a regular file", path);
	buf = cloq_malloc((size_t)st.st_size + 1);
	CLOQ_FAIL_IF(!buf, err, CLOQ_EIO, "%s: out of memory reading %lld bytes", path, (long long)st.st_size);
	CLOQ_TRY(cloq_pread_all(fd, buf, (size_t)st.st_size, 0, path, err));
	buf[st.st_size] = '\0';
	*data = buf;
	*size = (size_t)st.st_size;
	close(fd);
	return CLOQ_OK;
fail:
	cloq_free(buf);
	close(fd);
	return rc;
}

int cloq_pwrite_all(int fd, const void *buf, size_t n, uint64_t off, const char *path, cloq_err *err)
{
	const char *p = buf;
	while (n > 0) {
		if (cloq_fault_hit(CLOQ_FAULT_IO))
			return io_error(err, ENOSPC, "write (injected fault)", path);
		size_t chunk = n > (1u << 30) ? (1u << 30) : n;
		ssize_t w = pwrite(fd, p, chunk, (off_t)off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return io_error(err, errno, "write", path);
		}
		if (w == 0)
			return io_error(err, ENOSPC, "write", path);
		p += w;
		off += (uint64_t)w;
		n -= (size_t)w;
	}
	return CLOQ_OK;
}

int cloq_pread_all(int fd, void *buf, size_t n, uint64_t off, const char *path, cloq_err *err)
{
	char *p = buf;
	uint64_t start = off;
	while (n > 0) {
		size_t chunk = n > (1u << 30) ? (1u << 30) : n;
		ssize_t r = pread(fd, p, chunk, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return io_error(err, errno, "read", path);
		}
		if (r == 0)
			return cloq_err_set(err, CLOQ_EINPUT,
					    "%s: truncated: wanted %zu more bytes at offset %llu (read started at %llu)",
					    path, n, (unsigned long long)off, (unsigned long long)start);
		p += r;
		off += (uint64_t)r;
		n -= (size_t)r;
	}
	return CLOQ_OK;
}

int cloq_fsync_dir(const char *dir, cloq_err *err)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return io_error(err, errno, "open directory", dir);
	int rc = CLOQ_OK;
	if (cloq_fault_hit(CLOQ_FAULT_IO))
		rc = io_error(err, EIO, "fsync directory (injected fault)", dir);
	else if (fsync(fd) != 0 && errno != EINVAL)
		rc = io_error(err, errno, "fsync directory", dir);
	close(fd);
	return rc;
}

int cloq_mkdir_p(const char *path, cloq_err *err)
{
	char buf[4096];
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof buf)
		return cloq_err_set(err, CLOQ_EUSAGE, "bad directory path '%s'", path);
	memcpy(buf, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] == '/' || buf[i] == '\0') {
			char c = buf[i];
			buf[i] = '\0';
			if (mkdir(buf, 0777) != 0 && errno != EEXIST)
				return io_error(err, errno, "mkdir", buf);
			buf[i] = c;
		}
	}
	return CLOQ_OK;
}

int cloq_file_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

/* ---- atomic files -------------------------------------------------------------------------- */
int cloq_atomic_open(cloq_atomic_file *f, const char *path, cloq_err *err)
{
	memset(f, 0, sizeof *f);
	f->fd = -1;
	f->path = cloq_strdup(path);
	size_t n = strlen(path) + 32;
	f->tmp = cloq_malloc(n);
	if (!f->path || !f->tmp) {
		cloq_atomic_abort(f);
		return cloq_err_set(err, CLOQ_EIO, "%s: out of memory", path);
	}
	snprintf(f->tmp, n, "%s.tmp.%ld", path, (long)getpid());
	if (cloq_fault_hit(CLOQ_FAULT_IO)) {
		cloq_atomic_abort(f);
		return io_error(err, EACCES, "create (injected fault)", path);
	}
	f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (f->fd < 0) {
		int rc = io_error(err, errno, "create", f->tmp);
		cloq_atomic_abort(f);
		return rc;
	}
	return CLOQ_OK;
}

int cloq_atomic_write(cloq_atomic_file *f, const void *buf, size_t n, cloq_err *err)
{
	int rc = cloq_pwrite_all(f->fd, buf, n, f->off, f->tmp, err);
	if (rc == CLOQ_OK)
		f->off += n;
	return rc;
}

int cloq_atomic_commit(cloq_atomic_file *f, cloq_err *err)
{
	int rc = CLOQ_OK;
	if (cloq_fault_hit(CLOQ_FAULT_IO)) {
		rc = io_error(err, EIO, "fsync (injected fault)", f->tmp);
		goto fail;
	}
	if (!f->scratch && fsync(f->fd) != 0) {
		rc = io_error(err, errno, "fsync", f->tmp);
		goto fail;
	}
	if (close(f->fd) != 0) {
		f->fd = -1;
		rc = io_error(err, errno, "close", f->tmp);
		goto fail;
	}
	f->fd = -1;
	if (rename(f->tmp, f->path) != 0) {
		rc = io_error(err, errno, "rename into place", f->path);
		goto fail;
	}
	if (!f->scratch) {
		char *d = cloq_strdup(f->path);
		if (!d) {
			rc = cloq_err_set(err, CLOQ_EIO, "%s: out of memory", f->path);
		} else {
			/* The file is complete under its final name by now; only its directory entry's
			 * durability is in doubt, so say which file. */
			rc = cloq_fsync_dir(dirname(d), err);
			if (rc)
				cloq_err_wrap(err, rc, "%s", f->path);
			cloq_free(d);
		}
	}
	cloq_free(f->tmp);
	f->tmp = NULL;
	cloq_free(f->path);
	f->path = NULL;
	return rc;
fail:
	cloq_atomic_abort(f);
	return rc;
}

void cloq_atomic_abort(cloq_atomic_file *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
	if (f->tmp)
		unlink(f->tmp);
	cloq_free(f->tmp);
	cloq_free(f->path);
	f->tmp = f->path = NULL;
}

int cloq_write_file_atomic(const char *path, const void *buf, size_t n, cloq_err *err)
{
	cloq_atomic_file f;
	int rc = cloq_atomic_open(&f, path, err);
	if (rc)
		return rc;
	rc = cloq_atomic_write(&f, buf, n, err);
	if (rc) {
		cloq_atomic_abort(&f);
		return rc;
	}
	return cloq_atomic_commit(&f, err);
}
