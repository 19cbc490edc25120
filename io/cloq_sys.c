/* cloq_sys.c - allocation and file-output seam, fault injection, durable writes. */
#include "cloq_sys.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
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
/*
 * Big buffers (weights, n x n factors, (in, out) products: >= 8 MiB) come from a pool of mmap'd,
 * 2 MiB-aligned blocks with transparent huge pages asked for, and a freed big block is kept for
 * later requests (split to their size, merged again with its neighbours when they are freed)
 * instead of going back to the kernel. Why: every such
 * buffer is filled right after allocation, and fresh memory is dear on a virtual machine. Here
 * (tests/bench, /tmp/touch-style probe) first touch of fresh 4 KiB pages runs at ~1.6 GB/s and of
 * huge pages the host has just taken back at ~0.3 GB/s, against ~20 GB/s to rewrite memory the
 * process still holds; a 7B-geometry convert allocates and frees hundreds of such buffers (the
 * same few sizes per linear), and spent ~10% of its CPU time in the kernel zeroing pages.
 *
 * The pool never holds more than the most its blocks were ever live at once: a request no
 * cached block serves first unmaps cached blocks (least recently freed first) until live +
 * cached + the new block fit under that high-water mark (or nothing is cached), so the process's
 * peak is the one it had without the pool (to 2 MiB rounding per block). CLOQ_MEM_POOL=0 in the
 * environment
 * turns it off (plain malloc; for measurements), as do AddressSanitizer builds, whose heap checks
 * must see every buffer.
 */
#define BIG_MIN ((size_t)8 << 20)
#define BIG_ALIGN ((size_t)2 << 20)
#define BIG_SLOTS 256

#if defined(__SANITIZE_ADDRESS__)
#define BIG_POOL_BUILD 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BIG_POOL_BUILD 0
#endif
#endif
#ifndef BIG_POOL_BUILD
#define BIG_POOL_BUILD 1
#endif

struct big_block {
	void *p;       /* NULL: slot unused */
	size_t size;   /* mapped bytes, a multiple of BIG_ALIGN */
	int live;      /* 0: cached */
	uint64_t freed; /* when it was cached (pool clock) */
};

static struct {
	pthread_mutex_t mu;
	struct big_block b[BIG_SLOTS];
	uint64_t clock;
	size_t live, cached, high; /* bytes in live blocks, in cached ones, most ever live */
	int on;                    /* -1: not decided yet */
} big = {PTHREAD_MUTEX_INITIALIZER, {{0}}, 0, 0, 0, 0, -1};

static int big_on(void)
{
	if (big.on < 0) {
		const char *e = getenv("CLOQ_MEM_POOL");
		big.on = BIG_POOL_BUILD && !(e && strcmp(e, "0") == 0);
	}
	return big.on;
}

/* a 2 MiB-aligned anonymous mapping of `size` bytes (a multiple of BIG_ALIGN), huge pages asked */
static void *big_map(size_t size)
{
	char *m = mmap(NULL, size + BIG_ALIGN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	uintptr_t a = ((uintptr_t)m + BIG_ALIGN - 1) & ~(uintptr_t)(BIG_ALIGN - 1);
	size_t head = a - (uintptr_t)m, tail = BIG_ALIGN - head;
	if (head)
		munmap(m, head);
	if (tail)
		munmap((char *)a + size, tail);
	(void)madvise((void *)a, size, MADV_HUGEPAGE);
	return (void *)a;
}

static struct big_block *big_slot(void)
{
	for (int i = 0; i < BIG_SLOTS; i++)
		if (!big.b[i].p)
			return &big.b[i];
	return NULL;
}

/* give back the last `n` bytes (all when n >= size) of cached block b */
static void big_trim(struct big_block *b, size_t n)
{
	if (n >= b->size) {
		munmap(b->p, b->size);
		big.cached -= b->size;
		memset(b, 0, sizeof *b);
	} else {
		munmap((char *)b->p + (b->size - n), n);
		big.cached -= n;
		b->size -= n;
	}
}

/* make b (cached) exactly `size` bytes, the rest a cached block of its own (kept whole when the
 * table has no slot for it) */
static void big_split(struct big_block *b, size_t size)
{
	struct big_block *r;
	if (b->size > size && (r = big_slot()) != NULL) {
		r->p = (char *)b->p + size;
		r->size = b->size - size;
		r->live = 0;
		r->freed = b->freed;
		b->size = size;
	}
}

/* NULL when the table is full or memory is out: the caller falls back to malloc / fails */
static void *big_alloc(size_t n, int zero)
{
	size_t size = (n + BIG_ALIGN - 1) & ~(BIG_ALIGN - 1);
	struct big_block *hit = NULL, *slot;
	void *p = NULL;
	pthread_mutex_lock(&big.mu);
	for (int i = 0; i < BIG_SLOTS; i++) {
		struct big_block *b = &big.b[i];
		if (b->p && !b->live && b->size >= size && (!hit || b->size < hit->size))
			hit = b; /* best fit */
	}
	if (hit) {
		big_split(hit, size);
		hit->live = 1;
		big.cached -= hit->size;
		big.live += hit->size;
		if (big.live > big.high)
			big.high = big.live;
		p = hit->p;
		pthread_mutex_unlock(&big.mu);
		if (zero)
			memset(p, 0, n);
		return p;
	}
	/* miss: give back cached bytes, least recently freed first, until live + cached + this one
	 * fit under the high-water mark (which this one may raise: then nothing stays cached) */
	size_t cap = big.live + size > big.high ? big.live + size : big.high;
	while (big.cached && big.live + big.cached + size > cap) {
		struct big_block *old = NULL;
		for (int i = 0; i < BIG_SLOTS; i++)
			if (big.b[i].p && !big.b[i].live && (!old || big.b[i].freed < old->freed))
				old = &big.b[i];
		big_trim(old, big.live + big.cached + size - cap);
	}
	slot = big_slot();
	if (!slot) /* table full: drop the least recently freed cached block */
		for (int i = 0; i < BIG_SLOTS; i++)
			if (!big.b[i].live && (!slot || big.b[i].freed < slot->freed))
				slot = &big.b[i];
	if (slot && slot->p)
		big_trim(slot, slot->size);
	if (slot && (p = big_map(size)) != NULL) {
		slot->p = p;
		slot->size = size;
		slot->live = 1;
		big.live += size;
		if (big.live > big.high)
			big.high = big.live;
	}
	pthread_mutex_unlock(&big.mu);
	return p; /* fresh mapping: already zero */
}

/* the slot of a pool block, or NULL; caller holds big.mu */
static struct big_block *big_find(const void *p)
{
	if (!p || ((uintptr_t)p & (BIG_ALIGN - 1)))
		return NULL;
	for (int i = 0; i < BIG_SLOTS; i++)
		if (big.b[i].p == p && big.b[i].live)
			return &big.b[i];
	return NULL;
}

/* coalesce cached block b with the cached blocks right before and after it */
static void big_merge(struct big_block *b)
{
	for (int again = 1; again;) {
		again = 0;
		for (int i = 0; i < BIG_SLOTS; i++) {
			struct big_block *o = &big.b[i];
			if (o == b || !o->p || o->live)
				continue;
			if ((char *)o->p + o->size == (char *)b->p) {
				o->size += b->size;
				o->freed = b->freed;
				memset(b, 0, sizeof *b);
				b = o;
				again = 1;
			} else if ((char *)b->p + b->size == (char *)o->p) {
				b->size += o->size;
				memset(o, 0, sizeof *o);
				again = 1;
			}
		}
	}
}

static void *alloc_any(size_t n, int zero)
{
	void *p = NULL;
	if (n >= BIG_MIN && big_on() && (p = big_alloc(n, zero)) != NULL)
		return p;
	return zero ? calloc(n ? n : 1, 1) : malloc(n ? n : 1);
}

void *cloq_malloc(size_t n)
{
	if (cloq_fault_hit(CLOQ_FAULT_ALLOC))
		return NULL;
	return alloc_any(n, 0);
}

void *cloq_calloc(size_t count, size_t size)
{
	if (cloq_fault_hit(CLOQ_FAULT_ALLOC))
		return NULL;
	if (count && size && count > SIZE_MAX / size)
		return NULL;
	return alloc_any(count * size, 1);
}

void *cloq_realloc(void *p, size_t n)
{
	if (cloq_fault_hit(CLOQ_FAULT_ALLOC))
		return NULL;
	size_t old = 0;
	if (p && big.on > 0) {
		pthread_mutex_lock(&big.mu);
		struct big_block *b = big_find(p);
		old = b ? b->size : 0;
		pthread_mutex_unlock(&big.mu);
	}
	if (!old && n < BIG_MIN)
		return realloc(p, n ? n : 1);
	void *q = alloc_any(n, 0);
	if (!q)
		return NULL;
	if (p) {
		size_t keep = old ? old : malloc_usable_size(p);
		memcpy(q, p, keep < n ? keep : n);
		cloq_free(p);
	}
	return q;
}

void *cloq_aligned_alloc(size_t align, size_t n)
{
	if (cloq_fault_hit(CLOQ_FAULT_ALLOC))
		return NULL;
	if (align < 64)
		align = 64;
	void *p = NULL;
	if (n >= BIG_MIN && align <= BIG_ALIGN && big_on() && (p = big_alloc(n, 0)) != NULL)
		return p;
	if (posix_memalign(&p, align, n ? n : 1) != 0)
		return NULL;
	return p;
}

void cloq_mem_trim(void) { (void)malloc_trim(0); }

int cloq_mem_pool_stats(size_t *live, size_t *cached, size_t *high)
{
	int on = big_on();
	pthread_mutex_lock(&big.mu);
	*live = big.live;
	*cached = big.cached;
	*high = big.high;
	pthread_mutex_unlock(&big.mu);
	return on;
}

void cloq_free(void *p)
{
	if (p && big.on > 0 && !((uintptr_t)p & (BIG_ALIGN - 1))) {
		pthread_mutex_lock(&big.mu);
		struct big_block *b = big_find(p);
		if (b) {
			b->live = 0;
			b->freed = ++big.clock;
			big.live -= b->size;
			big.cached += b->size;
			big_merge(b);
		}
		pthread_mutex_unlock(&big.mu);
		if (b)
			return;
	}
	free(p);
}

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
		return cloq_err_set(err, errno == ENOENT || errno == ENOTDIR ? CLOQ_EINPUT : CLOQ_EIO, "%s: cannot open: %s",
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

/* ---- CPUs ---------------------------------------------------------------------------------- */
/* CPUs' worth of a cgroup quota "QUOTA PERIOD" (v2 "max" = none), rounded up; 0 when none. */
static int quota_cpus(long long quota, long long period)
{
	if (quota <= 0 || period <= 0)
		return 0;
	return (int)((quota + period - 1) / period);
}

static int cgroup_quota_cpus(void)
{
	char path[1024], line[512], buf[128];
	int best = 0;
	/* v2: the process's own cgroup, then the namespace root (a container's usual view) */
	FILE *f = fopen("/proc/self/cgroup", "r");
	const char *dirs[2] = {NULL, ""};
	char own[512] = "";
	if (f) {
		while (fgets(line, sizeof line, f))
			if (!strncmp(line, "0::", 3)) {
				snprintf(own, sizeof own, "%s", line + 3);
				own[strcspn(own, "\n")] = '\0';
			}
		fclose(f);
		if (own[0] && strcmp(own, "/") != 0)
			dirs[0] = own;
	}
	for (int i = 0; i < 2; i++) {
		if (!dirs[i])
			continue;
		snprintf(path, sizeof path, "/sys/fs/cgroup%s/cpu.max", dirs[i]);
		if ((f = fopen(path, "r")) != NULL) {
			long long q = 0, p = 0;
			if (fgets(buf, sizeof buf, f) && sscanf(buf, "%lld %lld", &q, &p) == 2) {
				int n = quota_cpus(q, p);
				if (n && (!best || n < best))
					best = n;
			}
			fclose(f);
		}
	}
	/* v1 */
	long long q = 0, p = 0;
	if ((f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "r")) != NULL) {
		if (fscanf(f, "%lld", &q) != 1)
			q = 0;
		fclose(f);
	}
	if ((f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "r")) != NULL) {
		if (fscanf(f, "%lld", &p) != 1)
			p = 0;
		fclose(f);
	}
	int n = quota_cpus(q, p);
	if (n && (!best || n < best))
		best = n;
	return best;
}

int cloq_cpus_available(void)
{
	int n = 0;
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof set, &set) == 0)
		n = CPU_COUNT(&set);
	if (n <= 0)
		n = (int)sysconf(_SC_NPROCESSORS_ONLN);
	int q = cgroup_quota_cpus();
	if (q > 0 && q < n)
		n = q;
	return n < 1 ? 1 : n;
}

double cloq_mem_available(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	double kb = 0;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb * 1024.0;
}

static _Atomic int team_cap; /* 0: no cap yet */

void cloq_team_update(void)
{
	const char *e = getenv("CLOQ_TEAM");
	int n = e && *e ? atoi(e) : cloq_cpus_available();
	atomic_store(&team_cap, n < 1 ? 1 : n);
}

int cloq_team_cap(int n)
{
	int cap = atomic_load(&team_cap);
	if (cap > 0 && n > cap)
		n = cap;
	return n < 1 ? 1 : n;
}
