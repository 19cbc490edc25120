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
		cmocka_unit_test(test_read_missing_and_truncated),
		cmocka_unit_test(test_mul_overflow_and_wrap),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
