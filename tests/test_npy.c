/* test_npy.c - .npy reader/writer: the reference fixture, round trips checked by numpy itself,
 * files written by numpy (v1 and v2, every accepted dtype), and must-fail inputs. The numpy cases
 * run /usr/bin/python3 and are skipped (not failed) when python3 or numpy is missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cloq_npy.h"
#include "cloq_sys.h"

static char tmpdir[256];

static int setup(void **state)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/cloq_test_npy.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[512];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static int have_numpy(void)
{
	return system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

/* Handcrafted file: version 1 or 2 header around `dict`, then ndata bytes of data. */
static void make_npy(const char *path, int version, const char *dict, const void *data, size_t ndata)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	size_t hl = strlen(dict) + 1;
	fwrite("\x93NUMPY", 1, 6, f);
	fputc(version, f);
	fputc(0, f);
	fputc((int)(hl & 0xff), f);
	fputc((int)(hl >> 8), f);
	if (version >= 2) {
		fputc(0, f);
		fputc(0, f);
	}
	fwrite(dict, 1, hl - 1, f);
	fputc('\n', f);
	if (ndata)
		fwrite(data, 1, ndata, f);
	fclose(f);
}

static void test_reference_fixture(void **state)
{
	cloq_err err;
	cloq_err_clear(&err);
	int32_t *d = NULL;
	cloq_npy_info info;
	if (cloq_npy_read_i32("fixtures/reference/public_eval_windows.npy", &d, &info, &err))
		fail_msg("%s", err.msg);
	assert_int_equal(info.dtype, CLOQ_DT_I32);
	assert_int_equal(info.ndim, 2);
	assert_int_equal(info.shape[0], 151);
	assert_int_equal(info.shape[1], 256);
	assert_int_equal(info.data_offset, 128);
	/* known from numpy: first window starts with BOS, sum of all ids */
	assert_int_equal(d[0], 1);
	assert_int_equal(d[1], 403);
	assert_int_equal(d[2], 407);
	assert_int_equal(d[3], 261);
	assert_int_equal(d[151 * 256 - 1], 284);
	long long s = 0;
	for (int i = 0; i < 151 * 256; i++)
		s += d[i];
	assert_int_equal(s, 13382007);
	cloq_free(d);
	float *f = NULL;
	assert_int_equal(cloq_npy_read_f32("fixtures/reference/public_eval_windows.npy", &f, NULL, &err), CLOQ_OK);
	assert_true(f[1] == 403.0f);
	cloq_free(f);
}

static void test_round_trip(void **state)
{
	char p[512];
	cloq_err err;
	cloq_err_clear(&err);
	int32_t iv[3 * 5];
	float fv[7];
	for (int i = 0; i < 15; i++)
		iv[i] = i * 1000003 - 7;
	for (int i = 0; i < 7; i++)
		fv[i] = (float)i / 7.0f - 0.5f;
	int64_t s2[2] = { 3, 5 }, s1[1] = { 7 };
	snprintf(p, sizeof p, "%s/i.npy", tmpdir);
	assert_int_equal(cloq_npy_write_i32(p, iv, 2, s2, &err), CLOQ_OK);
	int32_t *ri;
	cloq_npy_info info;
	assert_int_equal(cloq_npy_read_i32(p, &ri, &info, &err), CLOQ_OK);
	assert_int_equal(info.ndim, 2);
	assert_int_equal(info.shape[0], 3);
	assert_int_equal(info.shape[1], 5);
	assert_int_equal(info.data_offset % 64, 0);
	assert_memory_equal(ri, iv, sizeof iv);
	cloq_free(ri);
	snprintf(p, sizeof p, "%s/f.npy", tmpdir);
	assert_int_equal(cloq_npy_write_f32(p, fv, 1, s1, &err), CLOQ_OK);
	float *rf;
	assert_int_equal(cloq_npy_read_f32(p, &rf, &info, &err), CLOQ_OK);
	assert_int_equal(info.ndim, 1);
	assert_int_equal(info.shape[0], 7);
	assert_int_equal(info.shape[1], 1);
	assert_memory_equal(rf, fv, sizeof fv);
	cloq_free(rf);
	/* reading floats as ints is refused */
	assert_int_equal(cloq_npy_read_i32(p, &ri, NULL, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "f.npy"));
	if (!have_numpy())
		return;
	/* numpy itself accepts what we wrote, with the same values */
	char cmd[1400];
	snprintf(cmd, sizeof cmd,
		 "/usr/bin/python3 -c \"import numpy as np; a=np.load('%s/i.npy'); b=np.load('%s/f.npy');"
		 "assert a.dtype==np.int32 and a.shape==(3,5) and a.flags.c_contiguous;"
		 "assert (a.ravel()==np.arange(15)*1000003-7).all();"
		 "assert b.dtype==np.float32 and b.shape==(7,);"
		 "assert (b==(np.arange(7,dtype=np.float32)/np.float32(7)-np.float32(0.5))).all()\"",
		 tmpdir, tmpdir);
	assert_int_equal(system(cmd), 0);
}

static void test_numpy_written(void **state)
{
	if (!have_numpy()) {
		print_message("numpy not available: skipping the numpy-written files\n");
		skip();
	}
	char cmd[2000];
	snprintf(cmd, sizeof cmd,
		 "cd '%s' && /usr/bin/python3 -c \"import numpy as np\n"
		 "a=(np.arange(6*4).reshape(6,4)*37-100)\n"
		 "np.save('i8.npy', a.astype('<i8')); np.save('i4.npy', a.astype('<i4'))\n"
		 "np.save('f4.npy', (a/8).astype('<f4')); np.save('f8.npy', (a.ravel()/3).astype('<f8'))\n"
		 "np.lib.format.write_array(open('v2.npy','wb'), a.astype('<i4'), version=(2,0))\n"
		 "np.save('fort.npy', np.asfortranarray(a.astype('<i4')))\n"
		 "np.save('big.npy', a.astype('>i4'))\n"
		 "np.save('big_i8.npy', np.array([1, 2**40], dtype='<i8'))\n"
		 "np.save('three.npy', np.zeros((2,2,2), dtype='<f4'))\n"
		 "np.save('u8.npy', np.zeros(3, dtype='u1'))\n\"",
		 tmpdir);
	assert_int_equal(system(cmd), 0);
	char p[512];
	cloq_err err;
	cloq_err_clear(&err);
	cloq_npy_info info;
	const char *ints[] = { "i8.npy", "i4.npy", "v2.npy" };
	for (int k = 0; k < 3; k++) {
		int32_t *d;
		snprintf(p, sizeof p, "%s/%s", tmpdir, ints[k]);
		if (cloq_npy_read_i32(p, &d, &info, &err))
			fail_msg("%s", err.msg);
		assert_int_equal(info.shape[0], 6);
		assert_int_equal(info.shape[1], 4);
		for (int i = 0; i < 24; i++)
			assert_int_equal(d[i], i * 37 - 100);
		cloq_free(d);
	}
	float *f;
	snprintf(p, sizeof p, "%s/f4.npy", tmpdir);
	assert_int_equal(cloq_npy_read_f32(p, &f, &info, &err), CLOQ_OK);
	for (int i = 0; i < 24; i++)
		assert_true(f[i] == (float)((i * 37 - 100) / 8.0));
	cloq_free(f);
	snprintf(p, sizeof p, "%s/f8.npy", tmpdir);
	assert_int_equal(cloq_npy_read_f32(p, &f, &info, &err), CLOQ_OK);
	assert_int_equal(info.ndim, 1);
	assert_int_equal(info.shape[0], 24);
	for (int i = 0; i < 24; i++)
		assert_true(f[i] == (float)((i * 37 - 100) / 3.0));
	cloq_free(f);
	struct {
		const char *file, *want;
	} bad[] = {
		{ "fort.npy", "Fortran" },     { "big.npy", "big-endian" },
		{ "big_i8.npy", "flat index 1" }, { "three.npy", "3-dimensional" },
		{ "u8.npy", "'|u1'" },
	};
	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		int32_t *d = (int32_t *)1;
		snprintf(p, sizeof p, "%s/%s", tmpdir, bad[k].file);
		int rc = cloq_npy_read_i32(p, &d, NULL, &err);
		if (rc != CLOQ_EINPUT || !strstr(err.msg, bad[k].want) || !strstr(err.msg, bad[k].file))
			fail_msg("%s: rc %d: %s", bad[k].file, rc, err.msg);
		assert_null(d);
	}
}

static void expect_bad(const char *name, int version, const char *dict, size_t ndata,
		       const char *want)
{
	char p[512];
	snprintf(p, sizeof p, "%s/%s", tmpdir, name);
	uint8_t data[64] = { 0 };
	make_npy(p, version, dict, data, ndata);
	cloq_err err;
	cloq_err_clear(&err);
	float *f = (float *)1;
	int rc = cloq_npy_read_f32(p, &f, NULL, &err);
	if (rc != CLOQ_EINPUT || !strstr(err.msg, want) || !strstr(err.msg, name))
		fail_msg("%s: rc %d: %s", name, rc, err.msg);
	assert_null(f);
}

static void test_must_fail(void **state)
{
	const char *ok = "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }";
	/* the handcrafted file itself is fine */
	char p[512];
	snprintf(p, sizeof p, "%s/ok.npy", tmpdir);
	int32_t v[6] = { 1, 2, 3, 4, 5, 6 };
	make_npy(p, 2, ok, v, sizeof v);
	cloq_err err;
	cloq_err_clear(&err);
	int32_t *d;
	assert_int_equal(cloq_npy_read_i32(p, &d, NULL, &err), CLOQ_OK);
	assert_int_equal(d[5], 6);
	cloq_free(d);

	expect_bad("trunc.npy", 1, ok, 23, "truncated data");
	expect_bad("trailing.npy", 1, ok, 25, "unexpected bytes");
	expect_bad("fortran.npy", 1, "{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3), }", 24,
		   "Fortran");
	expect_bad("bigend.npy", 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", 24,
		   "big-endian");
	expect_bad("obj.npy", 1, "{'descr': '|O', 'fortran_order': False, 'shape': (2, 3), }", 24,
		   "not supported");
	expect_bad("noshape.npy", 1, "{'descr': '<f4', 'fortran_order': False}", 0, "malformed");
	expect_bad("garbage.npy", 1, "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}", 4,
		   "malformed");
	expect_bad("scalar.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': ()}", 4,
		   "0-dimensional");
	expect_bad("version.npy", 7, ok, 24, "version 7");
	/* bad magic */
	snprintf(p, sizeof p, "%s/magic.npy", tmpdir);
	FILE *f = fopen(p, "wb");
	fwrite("\x93NUMPX\x01\x00\x10\x00{}              ", 1, 26, f);
	fclose(f);
	assert_int_equal(cloq_npy_read_i32(p, &d, NULL, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "bad magic"));
	assert_non_null(strstr(err.msg, "magic.npy"));
	/* header length past the end of the file */
	snprintf(p, sizeof p, "%s/hdrlen.npy", tmpdir);
	f = fopen(p, "wb");
	fwrite("\x93NUMPY\x01\x00\xff\x7f{'descr'", 1, 18, f);
	fclose(f);
	assert_int_equal(cloq_npy_read_i32(p, &d, NULL, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "truncated .npy header"));
	assert_non_null(strstr(err.msg, "header length 32767 (offset 8) exceeds the file size 18"));
	assert_non_null(strstr(err.msg, "hdrlen.npy"));
	/* a dimension too large for any array: said so, with the digits and the limit */
	snprintf(p, sizeof p, "%s/bigdim.npy", tmpdir);
	{
		const char h[] = "{'descr': '<i4', 'fortran_order': False, 'shape': (99999999999999999999999, ), }";
		char buf[128] = "\x93NUMPY\x01\x00";
		size_t hl = sizeof h - 1;
		buf[8] = (char)hl;
		buf[9] = 0;
		memcpy(buf + 10, h, hl);
		f = fopen(p, "wb");
		fwrite(buf, 1, 10 + hl, f);
		fclose(f);
	}
	assert_int_equal(cloq_npy_read_i32(p, &d, NULL, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "bigdim.npy"));
	assert_non_null(strstr(err.msg, "shape[0] = 99999999999999999999999"));
	assert_non_null(strstr(err.msg, "too large (limit 9007199254740992)"));
	/* dimensions each in range whose product is not */
	snprintf(p, sizeof p, "%s/bigprod.npy", tmpdir);
	{
		const char h[] = "{'descr': '<i4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }";
		char buf[128] = "\x93NUMPY\x01\x00";
		size_t hl = sizeof h - 1;
		buf[8] = (char)hl;
		buf[9] = 0;
		memcpy(buf + 10, h, hl);
		f = fopen(p, "wb");
		fwrite(buf, 1, 10 + hl, f);
		fclose(f);
	}
	assert_int_equal(cloq_npy_read_i32(p, &d, NULL, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "bigprod.npy"));
	assert_non_null(strstr(err.msg, "too large"));
	assert_null(strstr(err.msg, "negative"));
	/* missing file */
	assert_int_equal(cloq_npy_read_i32("/nonexistent/x.npy", &d, NULL, &err), CLOQ_EINPUT);
	/* writer argument checks */
	int64_t s[1] = { -1 };
	snprintf(p, sizeof p, "%s/neg.npy", tmpdir);
	assert_int_equal(cloq_npy_write_i32(p, v, 1, s, &err), CLOQ_EINPUT);
	assert_false(cloq_file_exists(p));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reference_fixture),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_numpy_written),
		cmocka_unit_test(test_must_fail),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
