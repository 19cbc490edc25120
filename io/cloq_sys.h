/*
 * cloq_sys.h - the seam through which all memory allocation and file output of cloq goes.
 *
 * Two reasons for one seam (SQLite's test_malloc.c is the model):
 *  - fault injection: a test can make the Nth allocation or the Nth I/O call fail and assert a
 *    clean error, no leak, and nothing left under a final file name;
 *  - durable writes in one place: cloq_atomic_* writes to "<path>.tmp.<pid>", fsyncs, renames over
 *    the final name and fsyncs the directory (Redis rdbSave), so a crash never leaves a torn or
 *    valid-looking partial file under the final name.
 *
 * Allocation failures return NULL (callers report CLOQ_EIO "out of memory"). I/O helpers return
 * a cloq_status and fill `err` with the path and errno text; ENOSPC/EDQUOT/EFBIG read "disk full".
 */
#ifndef CLOQ_SYS_H
#define CLOQ_SYS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cloq_error.h"

/* ---- allocation ---------------------------------------------------------------------------- */
void *cloq_malloc(size_t n);
void *cloq_calloc(size_t count, size_t size);
void *cloq_realloc(void *p, size_t n);
/* 64-byte aligned (or `align` when larger, power of two); release with cloq_free. */
void *cloq_aligned_alloc(size_t align, size_t n);
void cloq_free(void *p); /* cloq_free(NULL) is a no-op */
/* The big-buffer pool (cloq_sys.c): bytes in blocks handed out, kept for reuse, and the most ever
 * handed out at once. Returns 0 when the pool is off (CLOQ_MEM_POOL=0, AddressSanitizer). */
int cloq_mem_pool_stats(size_t *live, size_t *cached, size_t *high);
/* Give the C heap's free pages back to the kernel (glibc malloc_trim). A loop that allocates and
 * frees the same medium buffers (128 KiB .. 8 MiB: above glibc's first mmap threshold, below the
 * pool's) between long-lived small allocations fragments the heap, and its resident size creeps
 * up by megabytes an iteration; the expert loop calls this once an expert. */
void cloq_mem_trim(void);
char *cloq_strdup(const char *s);

/* Overflow-checked a*b; returns 0 on overflow (and leaves *out untouched), 1 otherwise. */
static inline int cloq_mul_ok(size_t a, size_t b, size_t *out)
{
	size_t r;
	if (__builtin_mul_overflow(a, b, &r))
		return 0;
	*out = r;
	return 1;
}

/* ---- fault injection ----------------------------------------------------------------------- */
enum cloq_fault_kind { CLOQ_FAULT_ALLOC = 0, CLOQ_FAULT_IO = 1, CLOQ_FAULT_KINDS };
/* Make the nth call (1-based, counted from now) of this kind fail; 0 disables. */
void cloq_fault_set(int kind, long nth);
/* Calls of this kind seen since the last cloq_fault_set. */
long cloq_fault_count(int kind);
/* Read CLOQ_FAULT_ALLOC / CLOQ_FAULT_IO from the environment (used by end-to-end tests). */
void cloq_fault_from_env(void);
/* Returns 1 (and counts) when the current call of `kind` must fail. For the seam's own use and
 * for I/O paths outside this file (e.g. io_uring submission) that want to take part. */
int cloq_fault_hit(int kind);

/* ---- file I/O ------------------------------------------------------------------------------ */
/* Read a whole file into a NUL-terminated buffer (size excludes the NUL). */
int cloq_read_file(const char *path, char **data, size_t *size, cloq_err *err);
/* Full pwrite/pread with EINTR and short-transfer handling. pread reports a short file as
 * CLOQ_EINPUT ("truncated"). */
int cloq_pwrite_all(int fd, const void *buf, size_t n, uint64_t off, const char *path, cloq_err *err);
int cloq_pread_all(int fd, void *buf, size_t n, uint64_t off, const char *path, cloq_err *err);
int cloq_fsync_dir(const char *dir, cloq_err *err);
int cloq_mkdir_p(const char *path, cloq_err *err);
int cloq_file_exists(const char *path);

/* ---- CPUs ---------------------------------------------------------------------------------- */
/* The CPUs this process may use: its affinity mask (taskset, cpuset), capped by a cgroup CPU
 * quota (v2 cpu.max, v1 cpu.cfs_quota_us / cpu.cfs_period_us, rounded up), at least 1. This,
 * not the machine's core count, is the default thread count: more threads than CPUs only wait
 * for each other at every barrier. */
int cloq_cpus_available(void);

/* The team cap of cloq's own parallel regions: the ones whose work is cut into items by size
 * alone (attention items, window slots, Gram panels, residual blocks), so that their sums do not
 * depend on how many threads run them. cloq_team_update() sets the cap to the CPUs this process
 * may use now (cloq_cpus_available: an affinity mask or a cgroup quota can change while a job
 * runs), or to CLOQ_TEAM from the environment when that is set (tests: the bytes must not
 * change); convert and ppl call it at each layer. OpenBLAS's own threads stay the job's count:
 * its sums depend on it. cloq_team_cap(n) = min(n, the cap), at least 1; no cap before the first
 * update. */
void cloq_team_update(void);
int cloq_team_cap(int n);

/* MemAvailable of /proc/meminfo in bytes (what can be allocated without swapping), 0 when
 * unknown. */
double cloq_mem_available(void);

/* Durable, atomic creation of one file. */
typedef struct cloq_atomic_file {
	int fd;
	uint64_t off;       /* bytes written so far */
	char *path;         /* final name */
	char *tmp;          /* temporary name in the same directory */
	int scratch;        /* set after open: commit renames without fsync (files a crash may
	                     * lose because nothing depends on them surviving one) */
} cloq_atomic_file;

int cloq_atomic_open(cloq_atomic_file *f, const char *path, cloq_err *err);
int cloq_atomic_write(cloq_atomic_file *f, const void *buf, size_t n, cloq_err *err);
/* fsync, close, rename over the final name, fsync the directory. On failure the temp file is
 * removed and the final name is untouched. */
int cloq_atomic_commit(cloq_atomic_file *f, cloq_err *err);
/* Close and unlink the temp file; safe on a zeroed or already committed struct. */
void cloq_atomic_abort(cloq_atomic_file *f);
/* Convenience: write `n` bytes to `path` atomically. */
int cloq_write_file_atomic(const char *path, const void *buf, size_t n, cloq_err *err);

#endif /* CLOQ_SYS_H */
