/* test_sys.c - the allocation/I-O seam: durable atomic writes and fault injection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cloq_error.h"
#include "cloq_sys.h"
#include "cloq_test_util.h"

static int setup(void **state) { return cloq_test_tmpdir_setup("sys"); }

static int teardown(void **state) { return cloq_test_tmpdir_teardown(); }

static void test_atomic_round_trip(void **state)
{
	char path[512];
	snprintf(path, sizeof path, "%s/a.bin", tmpdir);
	cloq_err err;
	cloq_err_clear(&err);
	const char msg[] = "hello, durable world";
	assert_int_equal(cloq_write_file_atomic(path, msg, sizeof msg, &err), CLOQ_OK);
	char *data = NULL;
	size_t n = 0;
	assert_int_equal(cloq_read_file(path, &data, &n, &err), CLOQ_OK);
	assert_int_equal(n, sizeof msg);
	assert_memory_equal(data, msg, sizeof msg);
	cloq_free(data);
	assert_int_equal(count_entries(tmpdir), 1); /* no temp file left */
	unlink(path);
}

/* Fail every I/O call in turn: each failure is a clean CLOQ_EIO and leaves nothing behind;
 * the final name exists only after the run that succeeds. */
static void test_atomic_fault_every_io(void **state)
{
	char path[512];
	snprintf(path, sizeof path, "%s/b.bin", tmpdir);
	char buf[4096];
	memset(buf, 7, sizeof buf);
	int succeeded = 0;
	for (long nth = 1; nth < 50 && !succeeded; nth++) {
		cloq_err err;
		cloq_err_clear(&err);
		cloq_fault_set(CLOQ_FAULT_IO, nth);
		int rc = cloq_write_file_atomic(path, buf, sizeof buf, &err);
		cloq_fault_set(CLOQ_FAULT_IO, 0);
		if (rc == CLOQ_OK) {
			succeeded = 1;
			break;
		}
		assert_int_equal(rc, CLOQ_EIO);
		assert_non_null(strstr(err.msg, "b.bin"));
		/* Only the last step (fsync of the directory) may fail after the rename: then the
		 * file under the final name must be whole. Never a temp file left behind. */
		if (cloq_file_exists(path)) {
			char *data = NULL;
			size_t n = 0;
			assert_int_equal(cloq_read_file(path, &data, &n, &err), CLOQ_OK);
			assert_int_equal(n, sizeof buf);
			assert_memory_equal(data, buf, n);
			cloq_free(data);
			unlink(path);
		}
		assert_int_equal(count_entries(tmpdir), 0);
	}
	assert_true(succeeded);
	assert_true(cloq_file_exists(path));
	unlink(path);
}

static void test_alloc_fault(void **state)
{
	cloq_fault_set(CLOQ_FAULT_ALLOC, 2);
	void *a = cloq_malloc(16), *b = cloq_malloc(16), *c = cloq_malloc(16);
	cloq_fault_set(CLOQ_FAULT_ALLOC, 0);
	assert_non_null(a);
	assert_null(b);
	assert_non_null(c);
	cloq_free(a);
	cloq_free(c);
	cloq_free(NULL);
}

/* The big-buffer pool: reuse, split, merge, zeroing, realloc, and its bound: never more held
 * (live + cached) than the most ever live at once. */
static void test_big_pool(void **state)
{
	const size_t MB = (size_t)1 << 20;
	size_t live, cached, high;
	if (!cloq_mem_pool_stats(&live, &cached, &high)) { /* sanitizer build: plain malloc */
		void *p = cloq_calloc(1, 64 * MB);
		assert_non_null(p);
		assert_int_equal(((unsigned char *)p)[64 * MB - 1], 0);
		cloq_free(p);
		skip();
	}
	assert_true(live == 0 && cached == 0);
	unsigned char *a = cloq_malloc(64 * MB);
	assert_non_null(a);
	assert_int_equal((uintptr_t)a % (2 * MB), 0);
	memset(a, 0xab, 64 * MB);
	cloq_free(a);
	cloq_mem_pool_stats(&live, &cached, &high);
	assert_true(live == 0 && cached == 64 * MB && high == 64 * MB);
	/* a smaller request is carved from the cached block, and calloc zeroes what it reuses */
	unsigned char *b = cloq_calloc(10, 4 * MB);
	assert_ptr_equal(b, a);
	for (size_t i = 0; i < 40 * MB; i += 4096)
		assert_int_equal(b[i], 0);
	assert_int_equal(b[40 * MB - 1], 0);
	unsigned char *c = cloq_malloc(24 * MB);
	assert_ptr_equal(c, a + 40 * MB); /* the remainder */
	cloq_mem_pool_stats(&live, &cached, &high);
	assert_true(live == 64 * MB && cached == 0 && high == 64 * MB);
	cloq_free(c);
	cloq_free(b);
	/* freed neighbours merge: the whole block serves a 64 MB request again */
	unsigned char *d = cloq_malloc(64 * MB);
	assert_ptr_equal(d, a);
	cloq_free(d);
	/* a request nothing cached fits: cached bytes go back so that live + cached stays under the
	 * high-water mark, which the new block raises to 100 MB */
	unsigned char *e = cloq_malloc(100 * MB);
	assert_non_null(e);
	cloq_mem_pool_stats(&live, &cached, &high);
	assert_true(live == 100 * MB && cached == 0 && high == 100 * MB);
	/* realloc keeps the contents, within the pool and across its threshold */
	for (size_t i = 0; i < 100 * MB; i += 4096)
		e[i] = (unsigned char)(i / 4096);
	unsigned char *f = cloq_realloc(e, 120 * MB);
	assert_non_null(f);
	for (size_t i = 0; i < 100 * MB; i += 4096)
		assert_int_equal(f[i], (unsigned char)(i / 4096));
	for (size_t i = 0; i < 1000; i++)
		f[i] = (unsigned char)(i * 7 + 1);
	unsigned char *g = cloq_realloc(f, 1000); /* pool -> malloc */
	assert_non_null(g);
	for (size_t i = 0; i < 1000; i++)
		assert_int_equal(g[i], (unsigned char)(i * 7 + 1));
	unsigned char *h = cloq_realloc(g, 16 * MB); /* malloc -> pool */
	assert_non_null(h);
	assert_int_equal((uintptr_t)h % (2 * MB), 0);
	for (size_t i = 0; i < 1000; i++)
		assert_int_equal(h[i], (unsigned char)(i * 7 + 1));
	cloq_free(h);
	/* random traffic: blocks never overlap, and live + cached <= high all along */
	enum { NB = 12 };
	unsigned char *blk[NB] = {0};
	size_t sz[NB] = {0};
	uint64_t x = 12345;
	for (int it = 0; it < 400; it++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		int k = (int)((x >> 33) % NB);
		if (blk[k]) {
			assert_int_equal(blk[k][0], (unsigned char)k);
			assert_int_equal(blk[k][sz[k] - 1], (unsigned char)k);
			cloq_free(blk[k]);
			blk[k] = NULL;
		} else {
			sz[k] = (8 + (size_t)((x >> 17) % 56)) * MB + (size_t)((x >> 7) % 4096);
			blk[k] = (x >> 40) & 1 ? cloq_calloc(1, sz[k]) : cloq_malloc(sz[k]);
			assert_non_null(blk[k]);
			blk[k][0] = blk[k][sz[k] - 1] = (unsigned char)k;
		}
		cloq_mem_pool_stats(&live, &cached, &high);
		assert_true(live + cached <= high);
	}
	for (int k = 0; k < NB; k++) {
		if (blk[k]) {
			assert_int_equal(blk[k][0], (unsigned char)k);
			assert_int_equal(blk[k][sz[k] - 1], (unsigned char)k);
		}
		cloq_free(blk[k]);
	}
	cloq_mem_pool_stats(&live, &cached, &high);
	assert_int_equal(live, 0);
}

static void test_read_missing_and_truncated(void **state)
{
	cloq_err err;
	cloq_err_clear(&err);
	char *data;
	size_t n;
	assert_int_equal(cloq_read_file("/nonexistent/x", &data, &n, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "/nonexistent/x"));
	char path[512];
	snprintf(path, sizeof path, "%s/c.bin", tmpdir);
	assert_int_equal(cloq_write_file_atomic(path, "abc", 3, &err), CLOQ_OK);
	FILE *f = fopen(path, "rb");
	char buf[8];
	assert_int_equal(cloq_pread_all(fileno(f), buf, 8, 0, path, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "truncated"));
	fclose(f);
	unlink(path);
}

static void test_mul_overflow_and_wrap(void **state)
{
	size_t out = 0;
	assert_true(cloq_mul_ok(1u << 20, 1u << 20, &out));
	assert_int_equal(out, (size_t)1 << 40);
	assert_false(cloq_mul_ok(SIZE_MAX / 2, 3, &out));
	cloq_err err;
	cloq_err_clear(&err);
	cloq_err_set(&err, CLOQ_EINPUT, "tensor '%s' bad", "w");
	cloq_err_wrap(&err, CLOQ_EIO, "%s", "model.safetensors");
	assert_int_equal(err.code, CLOQ_EINPUT);
	assert_string_equal(err.msg, "model.safetensors: tensor 'w' bad");
	assert_string_equal(cloq_status_name(CLOQ_EINTEGRITY), "integrity failure");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_atomic_round_trip),
		cmocka_unit_test(test_atomic_fault_every_io),
		cmocka_unit_test(test_alloc_fault),
		cmocka_unit_test(test_big_pool),
		cmocka_unit_test(test_read_missing_and_truncated),
		cmocka_unit_test(test_mul_overflow_and_wrap),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
