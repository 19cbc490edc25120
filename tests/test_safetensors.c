/* test_safetensors.c - safetensors reader and writer: the real stories260K checkpoint, writer round
 * trips (single file and sharded directory), one handcrafted corrupt file per must-fail rule, and
 * fault injection (every I/O / allocation failure is clean and leaves nothing under the final name). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cloq_dtype.h"
#include "cloq_error.h"
#include "cloq_safetensors.h"
#include "cloq_sys.h"
#include "cloq_test_util.h"

static int setup(void **state) { return cloq_test_tmpdir_setup("safetensors"); }

static int teardown(void **state) { return cloq_test_tmpdir_teardown(); }

static void tpath(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", tmpdir, name);
}

/* Write a raw safetensors file: header length field `nfield` (or strlen(json) when ~0), the JSON,
 * then `ndata` bytes of data (from `data`, or a counting pattern). */
static void write_raw(const char *path, uint64_t nfield, const char *json, size_t ndata,
		      const void *data)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	uint64_t n = nfield == ~0ull ? strlen(json) : nfield;
	uint8_t len[8];
	for (int i = 0; i < 8; i++)
		len[i] = (uint8_t)(n >> (8 * i));
	fwrite(len, 1, 8, f);
	fwrite(json, 1, strlen(json), f);
	for (size_t i = 0; i < ndata; i++) {
		uint8_t b = data ? ((const uint8_t *)data)[i] : (uint8_t)(i * 7 + 1);
		fputc(b, f);
	}
	fclose(f);
}

/* Open `json`+data as a file and expect status `code` with every `want` string in the message. */
static void expect_fail(const char *name, const char *json, size_t ndata, int code,
			const char *want1, const char *want2)
{
	char path[512];
	tpath(path, sizeof path, name);
	write_raw(path, ~0ull, json, ndata, NULL);
	cloq_err err;
	cloq_err_clear(&err);
	cloq_st_model *m = (cloq_st_model *)1;
	int rc = cloq_st_open(path, &m, &err);
	if (getenv("CLOQ_TEST_VERBOSE")) /* to read the messages */
		fprintf(stderr, "%s\n", err.msg);
	if (rc != code || !strstr(err.msg, name) || (want1 && !strstr(err.msg, want1)) ||
	    (want2 && !strstr(err.msg, want2)))
		print_error("%s: rc %d, message: %s\n", name, rc, err.msg);
	assert_int_equal(rc, code);
	assert_null(m);
	assert_non_null(strstr(err.msg, name));
	if (want1)
		assert_non_null(strstr(err.msg, want1));
	if (want2)
		assert_non_null(strstr(err.msg, want2));
	/* the in-memory parser gives the same verdict */
	FILE *f = fopen(path, "rb");
	uint8_t buf[4096];
	size_t len = fread(buf, 1, sizeof buf, f);
	fclose(f);
	cloq_err err2;
	cloq_err_clear(&err2);
	assert_int_equal(cloq_st_parse_header(buf, len, len, name, &m, &err2), code);
	assert_null(m);
	unlink(path);
}

/* ---- the real checkpoint -------------------------------------------------------------------- */
static void test_stories260k(void **state)
{
	const char *paths[] = { "fixtures/stories260K/model.safetensors", "fixtures/stories260K" };
	for (int k = 0; k < 2; k++) {
		cloq_err err;
		cloq_err_clear(&err);
		cloq_st_model *m = NULL;
		if (cloq_st_open(paths[k], &m, &err) != CLOQ_OK)
			fail_msg("%s", err.msg);
		/* 5 layers x 9 tensors + embed_tokens + norm; embeddings are tied: no lm_head */
		assert_int_equal(cloq_st_count(m), 47);
		assert_int_equal(cloq_st_nfiles(m), 1);
		assert_int_equal(cloq_st_file_size(m, 0), 1045016);
		assert_int_equal(cloq_st_file_data_offset(m, 0), 8 + 4880);
		assert_int_equal(cloq_st_layer_count(m), 5);
		assert_null(cloq_st_find(m, "lm_head.weight"));
		assert_string_equal(cloq_st_meta_get(m, "format"), "pt");
		const cloq_st_tensor *t = cloq_st_find(m, "model.embed_tokens.weight");
		assert_non_null(t);
		assert_int_equal(t->dtype, CLOQ_DT_F32);
		assert_int_equal(t->ndim, 2);
		assert_int_equal(t->shape[0], 512);
		assert_int_equal(t->shape[1], 64);
		assert_int_equal(t->offset, 8 + 4880);
		t = cloq_st_find(m, "model.layers.0.self_attn.k_proj.weight");
		assert_int_equal(t->shape[0], 32); /* 4 kv heads x head_dim 8 */
		assert_int_equal(t->shape[1], 64);
		t = cloq_st_find(m, "model.norm.weight");
		assert_int_equal(t->ndim, 1);
		assert_int_equal(t->shape[0], 64);
		size_t idx[16];
		assert_int_equal(cloq_st_layer_tensors(m, 3, idx, 16), 9);
		for (int i = 0; i < 9; i++) {
			assert_non_null(strstr(cloq_st_tensor_at(m, idx[i])->name, "model.layers.3."));
			if (i)
				assert_true(cloq_st_tensor_at(m, idx[i])->offset >
					    cloq_st_tensor_at(m, idx[i - 1])->offset);
		}
		assert_int_equal(cloq_st_layer_tensors(m, 5, idx, 16), 0);
		/* file order: offsets strictly increasing and contiguous */
		for (size_t i = 1; i < cloq_st_count(m); i++)
			assert_int_equal(cloq_st_tensor_at(m, i)->offset,
					 cloq_st_tensor_at(m, i - 1)->offset +
						 cloq_st_tensor_at(m, i - 1)->nbytes);
		/* values known from an independent numpy read */
		t = cloq_st_find(m, "model.layers.4.mlp.down_proj.weight");
		assert_int_equal(t->shape[0], 64);
		assert_int_equal(t->shape[1], 172);
		assert_int_equal(cloq_st_index_of(m, t), 1 + 4 * 9 + 1); /* embed, 4 layers, layer 4 norm */
		float *w = cloq_malloc(t->nelem * sizeof(float));
		assert_int_equal(cloq_st_read_f32(m, t, w, &err), CLOQ_OK);
		assert_true(w[0] == -0.04791265f);
		double s = 0;
		for (size_t i = 0; i < t->nelem; i++)
			s += w[i];
		assert_true(fabs(s - 19.543787761240765) < 1e-9);
		float *raw = cloq_malloc(t->nbytes);
		assert_int_equal(cloq_st_read_raw(m, t, raw, &err), CLOQ_OK);
		assert_memory_equal(raw, w, t->nbytes);
		cloq_free(raw);
		cloq_free(w);
		cloq_st_close(m);
	}
}

/* ---- writer round trip ---------------------------------------------------------------------- */
static int write_sample(const char *path, cloq_err *err)
{
	cloq_st_writer *w = NULL;
	int rc = cloq_st_writer_create(path, &w, err);
	if (rc)
		return rc;
	int64_t s1[2] = { 3, 5 }, s2[1] = { 7 }, s3[3] = { 2, 0, 4 }, s4[2] = { 2, 3 };
	float a[15];
	uint16_t h[7];
	int32_t iv[6] = { -1, 2, -3, 40000, 5, 2147483647 };
	for (int i = 0; i < 15; i++)
		a[i] = (float)i * 0.25f - 1.0f;
	for (int i = 0; i < 7; i++)
		h[i] = cloq_f32_to_f16_ref((float)i / 3.0f);
	uint16_t bf = cloq_f32_to_bf16_ref(3.5f);
	if ((rc = cloq_st_writer_add(w, "w.a", CLOQ_DT_F32, 2, s1, err)) ||
	    (rc = cloq_st_writer_add(w, "w\"quoted\\name\n", CLOQ_DT_F16, 1, s2, err)) ||
	    (rc = cloq_st_writer_add(w, "empty", CLOQ_DT_F32, 3, s3, err)) ||
	    (rc = cloq_st_writer_add(w, "scalar", CLOQ_DT_BF16, 0, NULL, err)) ||
	    (rc = cloq_st_writer_add(w, "ints", CLOQ_DT_I32, 2, s4, err)) ||
	    (rc = cloq_st_writer_meta(w, "source", "unit test", err)) ||
	    (rc = cloq_st_writer_meta(w, "note", "x", err)) ||
	    (rc = cloq_st_writer_meta(w, "source", "test_safetensors", err)) ||
	    (rc = cloq_st_writer_begin(w, err)) ||
	    /* several pieces per tensor, by index and by name; "empty" is skipped */
	    (rc = cloq_st_writer_write(w, 0, a, 4 * 4, err)) ||
	    (rc = cloq_st_writer_write(w, 0, a + 4, 11 * 4, err)) ||
	    (rc = cloq_st_writer_write_named(w, "w\"quoted\\name\n", h, 3, err)) ||
	    (rc = cloq_st_writer_write(w, 1, (uint8_t *)h + 3, 11, err)) ||
	    (rc = cloq_st_writer_write(w, 3, &bf, 2, err)) ||
	    (rc = cloq_st_writer_write_named(w, "ints", iv, sizeof iv, err)) ||
	    (rc = cloq_st_writer_commit(w, err))) {
		cloq_st_writer_free(w);
		return rc;
	}
	cloq_st_writer_free(w);
	return CLOQ_OK;
}

static void test_writer_round_trip(void **state)
{
	char p1[512], p2[512];
	tpath(p1, sizeof p1, "rt1.safetensors");
	tpath(p2, sizeof p2, "rt2.safetensors");
	cloq_err err;
	cloq_err_clear(&err);
	if (write_sample(p1, &err) || write_sample(p2, &err))
		fail_msg("%s", err.msg);
	char *d1, *d2;
	size_t n1, n2;
	assert_int_equal(cloq_read_file(p1, &d1, &n1, &err), CLOQ_OK);
	assert_int_equal(cloq_read_file(p2, &d2, &n2, &err), CLOQ_OK);
	assert_int_equal(n1, n2);
	assert_memory_equal(d1, d2, n1); /* deterministic bytes */
	uint64_t hn = 0;
	for (int i = 7; i >= 0; i--)
		hn = (hn << 8) | (uint8_t)d1[i];
	assert_int_equal((8 + hn) % 8, 0);
	assert_int_equal(n1, 8 + hn + 15 * 4 + 7 * 2 + 0 + 2 + 6 * 4);
	assert_memory_equal(d1 + 8, "{\"__metadata__\":{\"format\":\"pt\",\"source\":\"test_safetensors\",\"note\":\"x\"},\"w.a\":",
			    strlen("{\"__metadata__\":{\"format\":\"pt\",\"source\":\"test_safetensors\",\"note\":\"x\"},\"w.a\":"));
	assert_true(d1[8 + hn - 1] == ' ' || d1[8 + hn - 1] == '}');
	cloq_free(d1);
	cloq_free(d2);

	cloq_st_model *m = NULL;
	if (cloq_st_open(p1, &m, &err))
		fail_msg("%s", err.msg);
	assert_int_equal(cloq_st_count(m), 5);
	assert_string_equal(cloq_st_meta_get(m, "source"), "test_safetensors");
	assert_string_equal(cloq_st_meta_get(m, "format"), "pt");
	assert_null(cloq_st_meta_get(m, "missing"));
	const cloq_st_tensor *t = cloq_st_find(m, "w.a");
	float f[15];
	assert_int_equal(cloq_st_read_f32(m, t, f, &err), CLOQ_OK);
	for (int i = 0; i < 15; i++)
		assert_true(f[i] == (float)i * 0.25f - 1.0f);
	t = cloq_st_find(m, "w\"quoted\\name\n");
	assert_non_null(t);
	assert_int_equal(t->dtype, CLOQ_DT_F16);
	assert_int_equal(cloq_st_read_f32(m, t, f, &err), CLOQ_OK);
	for (int i = 0; i < 7; i++)
		assert_true(f[i] == cloq_f16_to_f32_ref(cloq_f32_to_f16_ref((float)i / 3.0f)));
	t = cloq_st_find(m, "scalar");
	assert_int_equal(t->ndim, 0);
	assert_int_equal(t->nelem, 1);
	assert_int_equal(cloq_st_read_f32(m, t, f, &err), CLOQ_OK);
	assert_true(f[0] == 3.5f);
	t = cloq_st_find(m, "empty");
	assert_int_equal(t->nelem, 0);
	assert_int_equal(t->shape[1], 0);
	assert_int_equal(cloq_st_read_f32(m, t, f, &err), CLOQ_OK);
	t = cloq_st_find(m, "ints");
	int32_t iv[6];
	assert_int_equal(cloq_st_read_f32(m, t, f, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "ints"));
	assert_non_null(strstr(err.msg, "I32"));
	assert_int_equal(cloq_st_read_raw(m, t, iv, &err), CLOQ_OK);
	assert_int_equal(iv[3], 40000);
	assert_int_equal(iv[5], 2147483647);
	/* file order follows declaration order */
	assert_string_equal(cloq_st_tensor_at(m, 0)->name, "w.a");
	assert_string_equal(cloq_st_tensor_at(m, 4)->name, "ints");
	cloq_st_close(m);
	assert_int_equal(count_entries(tmpdir), 2); /* no temp files */
	unlink(p1);
	unlink(p2);
}

static void test_writer_misuse(void **state)
{
	char p[512];
	tpath(p, sizeof p, "misuse.safetensors");
	cloq_err err;
	cloq_err_clear(&err);
	cloq_st_writer *w = NULL;
	int64_t s[1] = { 4 }, neg[1] = { -2 };
	assert_int_equal(cloq_st_writer_create(p, &w, &err), CLOQ_OK);
	assert_int_equal(cloq_st_writer_add(w, "a", CLOQ_DT_F32, 1, s, &err), CLOQ_OK);
	assert_int_equal(cloq_st_writer_add(w, "a", CLOQ_DT_F32, 1, s, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "'a'"));
	assert_int_equal(cloq_st_writer_add(w, "n", CLOQ_DT_F32, 1, neg, &err), CLOQ_EINPUT);
	assert_int_equal(cloq_st_writer_add(w, "d", CLOQ_DT_INVALID, 1, s, &err), CLOQ_EINPUT);
	assert_int_equal(cloq_st_writer_add(w, "b", CLOQ_DT_F16, 1, s, &err), CLOQ_OK);
	float buf[8] = { 0 };
	assert_int_equal(cloq_st_writer_write(w, 0, buf, 4, &err), CLOQ_EINPUT); /* before begin */
	assert_int_equal(cloq_st_writer_begin(w, &err), CLOQ_OK);
	assert_int_equal(cloq_st_writer_add(w, "c", CLOQ_DT_F32, 1, s, &err), CLOQ_EINPUT);
	assert_int_equal(cloq_st_writer_write(w, 1, buf, 8, &err), CLOQ_EINPUT); /* out of order */
	assert_non_null(strstr(err.msg, "out of order"));
	assert_int_equal(cloq_st_writer_write(w, 0, buf, 20, &err), CLOQ_EINPUT); /* past end */
	assert_non_null(strstr(err.msg, "past its end"));
	assert_int_equal(cloq_st_writer_write(w, 0, buf, 16, &err), CLOQ_OK);
	assert_int_equal(cloq_st_writer_write(w, 0, buf, 1, &err), CLOQ_EINPUT);
	assert_int_equal(cloq_st_writer_write(w, 1, buf, 6, &err), CLOQ_OK);
	assert_int_equal(cloq_st_writer_write(w, 0, buf, 1, &err), CLOQ_EINPUT); /* going back */
	assert_int_equal(cloq_st_writer_write_named(w, "zz", buf, 1, &err), CLOQ_EINPUT);
	assert_int_equal(cloq_st_writer_commit(w, &err), CLOQ_EINPUT); /* 'b' has 6 of 8 bytes */
	assert_non_null(strstr(err.msg, "'b' incomplete"));
	assert_non_null(strstr(err.msg, "misuse.safetensors"));
	cloq_st_writer_free(w);
	assert_false(cloq_file_exists(p));
	assert_int_equal(count_entries(tmpdir), 0);
	cloq_st_writer_free(NULL);
}

/* Fail each I/O call, then each allocation, in turn: a clean error, nothing under the final name,
 * no temp file; until the run that succeeds. */
static void test_writer_faults(void **state)
{
	char p[512];
	tpath(p, sizeof p, "fault.safetensors");
	for (int kind = 0; kind < 2; kind++) {
		int ok = 0;
		for (long nth = 1; nth < 200 && !ok; nth++) {
			cloq_err err;
			cloq_err_clear(&err);
			cloq_fault_set(kind, nth);
			int rc = write_sample(p, &err);
			cloq_fault_set(kind, 0);
			if (rc == CLOQ_OK) {
				ok = 1;
				break;
			}
			assert_int_equal(rc, CLOQ_EIO);
			/* only the directory fsync comes after the rename: then the file is whole */
			if (cloq_file_exists(p)) {
				cloq_st_model *m = NULL;
				assert_int_equal(cloq_st_open(p, &m, &err), CLOQ_OK);
				cloq_st_close(m);
				unlink(p);
			}
			assert_int_equal(count_entries(tmpdir), 0);
		}
		assert_true(ok);
		unlink(p);
	}
}

static void test_open_alloc_faults(void **state)
{
	int ok = 0;
	for (long nth = 1; nth < 1000 && !ok; nth++) {
		cloq_err err;
		cloq_err_clear(&err);
		cloq_st_model *m = NULL;
		cloq_fault_set(CLOQ_FAULT_ALLOC, nth);
		int rc = cloq_st_open("fixtures/stories260K", &m, &err);
		cloq_fault_set(CLOQ_FAULT_ALLOC, 0);
		if (rc == CLOQ_OK) {
			assert_int_equal(cloq_st_count(m), 47);
			cloq_st_close(m);
			ok = 1;
		} else {
			assert_int_equal(rc, CLOQ_EIO);
			assert_null(m);
		}
	}
	assert_true(ok);
}

/* ---- must-fail files ------------------------------------------------------------------------ */
#define T4(name, dt, shape, b, e) "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static void test_must_fail_header(void **state)
{
	char path[512];
	cloq_err err;
	cloq_st_model *m = NULL;
	/* header length past the end of the file */
	tpath(path, sizeof path, "hdr_past_eof.safetensors");
	write_raw(path, 1000, "{}", 10, NULL);
	cloq_err_clear(&err);
	assert_int_equal(cloq_st_open(path, &m, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "hdr_past_eof.safetensors"));
	assert_non_null(strstr(err.msg, "header length 1000 (bytes 0-7) exceeds the file size 20"));
	/* a length of 2^62: too large, with the value and the limit, never "non-negative" */
	tpath(path, sizeof path, "hdr_2p62.safetensors");
	write_raw(path, 1ull << 62, "{}", 10, NULL);
	assert_int_equal(cloq_st_open(path, &m, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "hdr_2p62.safetensors"));
	assert_non_null(strstr(err.msg, "header length 4611686018427387904 (bytes 0-7) is too large"));
	assert_non_null(strstr(err.msg, "limit is 100000000 bytes"));
	assert_null(strstr(err.msg, "negative"));
	/* 2^64 - 1: the unsigned reading, not a negative number */
	write_raw(path, ~0ull - 1, "{}", 10, NULL);
	assert_int_equal(cloq_st_open(path, &m, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "18446744073709551614"));
	assert_non_null(strstr(err.msg, "too large"));
	/* header length over 100 MB (the file need not be that big for the check to fire) */
	tpath(path, sizeof path, "hdr_huge.safetensors");
	write_raw(path, 200000000ull, "{}", 10, NULL);
	assert_int_equal(cloq_st_open(path, &m, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "hdr_huge.safetensors"));
	assert_non_null(strstr(err.msg, "limit"));
	/* shorter than the length field */
	tpath(path, sizeof path, "tiny.safetensors");
	FILE *f = fopen(path, "wb");
	fwrite("abc", 1, 3, f);
	fclose(f);
	assert_int_equal(cloq_st_open(path, &m, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "tiny.safetensors"));
	/* missing file, directory without a model */
	assert_int_equal(cloq_st_open("/nonexistent/model.safetensors", &m, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "/nonexistent/model.safetensors"));
	char sub[512];
	tpath(sub, sizeof sub, "emptydir");
	assert_int_equal(cloq_mkdir_p(sub, &err), CLOQ_OK);
	assert_int_equal(cloq_st_open(sub, &m, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "emptydir"));
	assert_null(m);
	/* a file without tensors is valid */
	tpath(path, sizeof path, "no_tensors.safetensors");
	write_raw(path, ~0ull, "{\"__metadata__\":{\"format\":\"pt\"}}", 0, NULL);
	assert_int_equal(cloq_st_open(path, &m, &err), CLOQ_OK);
	assert_int_equal(cloq_st_count(m), 0);
	assert_null(cloq_st_find(m, "x"));
	assert_int_equal(cloq_st_layer_count(m), 0);
	cloq_st_close(m);
	/* in-memory parser with fewer bytes than the header announces */
	uint8_t b[12] = { 40, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ' };
	assert_int_equal(cloq_st_parse_header(b, 12, 100, "mem.safetensors", &m, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "truncated header"));
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'/*", tmpdir);
	assert_int_equal(system(cmd), 0);
}

static void test_must_fail_json(void **state)
{
	expect_fail("trunc_json.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],", 4, CLOQ_EINPUT,
		    "invalid JSON", NULL);
	expect_fail("bad_json.safetensors", "{\"a\": nope}", 0, CLOQ_EINPUT, "invalid JSON", "offset");
	expect_fail("not_object.safetensors", "[1,2]", 0, CLOQ_EINPUT, "'{'", NULL);
	expect_fail("trailing.safetensors", "{} x", 0, CLOQ_EINPUT, "after the JSON", NULL);
	expect_fail("entry_not_obj.safetensors", "{\"a\":3}", 0, CLOQ_EINPUT, "'a'", NULL);
	expect_fail("meta_not_str.safetensors", "{\"__metadata__\":{\"k\":1}}", 0, CLOQ_EINPUT,
		    "'k'", NULL);
	expect_fail("no_dtype.safetensors", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
		    CLOQ_EINPUT, "'a'", "dtype");
	expect_fail("bad_offsets.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}",
		    4, CLOQ_EINPUT, "'a'", "data_offsets");
}

static void test_must_fail_offsets(void **state)
{
	/* hole between a and b */
	expect_fail("hole.safetensors", "{" T4("a", "F32", "[1]", 0, 4) "," T4("b", "F32", "[1]", 8, 12) "}",
		    12, CLOQ_EINPUT, "'b'", "not contiguous");
	/* overlap */
	expect_fail("overlap.safetensors", "{" T4("a", "F32", "[2]", 0, 8) "," T4("b", "F32", "[2]", 4, 12) "}",
		    12, CLOQ_EINPUT, "'b'", "overlaps tensor 'a'");
	/* first tensor does not start at 0 */
	expect_fail("start.safetensors", "{" T4("a", "F32", "[1]", 4, 8) "}", 8, CLOQ_EINPUT, "'a'",
		    "offset");
	/* past the end of the file */
	expect_fail("past_end.safetensors", "{" T4("a", "F32", "[2]", 0, 8) "}", 4, CLOQ_EINPUT, "'a'",
		    "past the end");
	/* trailing data nobody owns */
	expect_fail("uncovered.safetensors", "{" T4("a", "F32", "[2]", 0, 8) "}", 12, CLOQ_EINPUT,
		    "not covered", "offset");
	/* end < begin */
	expect_fail("reversed.safetensors", "{" T4("a", "F32", "[0]", 8, 4) "}", 8, CLOQ_EINPUT, "'a'",
		    NULL);
	/* shape x dtype size != byte span */
	expect_fail("span.safetensors", "{" T4("a", "F32", "[3]", 0, 8) "}", 8, CLOQ_EINPUT, "'a'",
		    "span");
	expect_fail("span16.safetensors", "{" T4("w", "BF16", "[2,2]", 0, 16) "}", 16, CLOQ_EINPUT,
		    "'w'", "BF16");
}

static void test_must_fail_types_and_shapes(void **state)
{
	expect_fail("dtype.safetensors", "{" T4("a", "Q4_K", "[1]", 0, 4) "}", 4, CLOQ_EINPUT, "'a'",
		    "Q4_K");
	expect_fail("dup.safetensors", "{" T4("a", "F32", "[1]", 0, 4) "," T4("a", "F32", "[1]", 4, 8) "}",
		    8, CLOQ_EINPUT, "'a'", "duplicate");
	expect_fail("neg.safetensors", "{" T4("a", "F32", "[-1]", 0, 4) "}", 4, CLOQ_EINPUT, "'a'",
		    "shape[0]");
	expect_fail("frac.safetensors", "{" T4("a", "F32", "[1,2.5]", 0, 4) "}", 4, CLOQ_EINPUT, "'a'",
		    "shape[1]");
	expect_fail("absurd.safetensors", "{" T4("a", "F32", "[1e300]", 0, 4) "}", 4, CLOQ_EINPUT,
		    "'a'", "shape[0] = 1.0000000000000001e+300 is too large (limit 2^53 = 9007199254740992)");
	expect_fail("big_dim.safetensors", "{" T4("a", "F32", "[1,4611686018427387904]", 0, 4) "}", 4, CLOQ_EINPUT,
		    "'a'", "shape[1] = 4611686018427387904 is too large");
	expect_fail("big_off.safetensors", "{" T4("a", "F32", "[1]", 0, 4611686018427387904) "}", 4, CLOQ_EINPUT,
		    "'a'", "data_offsets[1] = 4611686018427387904 is too large (limit 2^53");
	expect_fail("neg_off.safetensors", "{" T4("a", "F32", "[1]", -4, 0) "}", 4, CLOQ_EINPUT, "'a'",
		    "not non-negative integers");
	expect_fail("overflow.safetensors",
		    "{" T4("a", "F32", "[4294967296,4294967296,4294967296]", 0, 4) "}", 4, CLOQ_EINPUT,
		    "'a'", "overflow");
	expect_fail("overflow2.safetensors", "{" T4("a", "F64", "[4294967296,4294967295]", 0, 4) "}", 4,
		    CLOQ_EINPUT, "'a'", "overflow");
	expect_fail("ndim.safetensors", "{" T4("a", "F32", "[1,1,1,1,1,1,1,1,1]", 0, 4) "}", 4,
		    CLOQ_EINPUT, "'a'", "dimensions");
	expect_fail("strshape.safetensors", "{" T4("a", "F32", "\"1\"", 0, 4) "}", 4, CLOQ_EINPUT,
		    "'a'", "shape");
}

static void test_must_fail_nonfinite(void **state)
{
	char path[512];
	tpath(path, sizeof path, "nan.safetensors");
	float a[8] = { 0, 1, 2, 3, 4, NAN, 6, INFINITY };
	uint16_t h[4] = { 0x3c00, 0x3c00, 0x3c00, 0xfc00 }; /* -Inf at 3 */
	uint16_t bf[4] = { 0x3f80, 0x7fc0, 0, 0 };           /* NaN at 1 */
	uint8_t data[8 * 4 + 8 + 8];
	memcpy(data, a, 32);
	memcpy(data + 32, h, 8);
	memcpy(data + 40, bf, 8);
	write_raw(path, ~0ull,
		  "{" T4("layer.w", "F32", "[2,4]", 0, 32) "," T4("half", "F16", "[4]", 32, 40) ","
		  T4("brain", "BF16", "[4]", 40, 48) "}",
		  sizeof data, data);
	cloq_err err;
	cloq_err_clear(&err);
	cloq_st_model *m = NULL;
	assert_int_equal(cloq_st_open(path, &m, &err), CLOQ_OK);
	float out[8];
	assert_int_equal(cloq_st_read_f32(m, cloq_st_find(m, "layer.w"), out, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "nan.safetensors"));
	assert_non_null(strstr(err.msg, "'layer.w'"));
	assert_non_null(strstr(err.msg, "NaN at flat index 5"));
	assert_int_equal(cloq_st_read_f32(m, cloq_st_find(m, "half"), out, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "'half'"));
	assert_non_null(strstr(err.msg, "Inf at flat index 3"));
	assert_int_equal(cloq_st_read_f32(m, cloq_st_find(m, "brain"), out, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "NaN at flat index 1"));
	/* the same checks on bytes already in memory */
	assert_int_equal(cloq_st_convert_f32(m, cloq_st_find(m, "half"), h, out, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "flat index 3"));
	uint8_t odd[9];
	memcpy(odd + 1, h, 6); /* first three halves, at an odd address */
	cloq_st_tensor t3 = *cloq_st_find(m, "half");
	t3.nelem = 3;
	t3.nbytes = 6;
	assert_int_equal(cloq_st_convert_f32(m, &t3, odd + 1, out, &err), CLOQ_OK);
	assert_true(out[0] == 1.0f && out[2] == 1.0f);
	cloq_st_close(m);
	/* a header parsed from memory has no file to read */
	uint8_t b[64];
	const char *js = "{" T4("x", "F32", "[1]", 0, 4) "}";
	size_t n = strlen(js);
	memset(b, 0, 8);
	b[0] = (uint8_t)n;
	memcpy(b + 8, js, n);
	assert_int_equal(cloq_st_parse_header(b, 8 + n, 8 + n + 4, "mem", &m, &err), CLOQ_OK);
	assert_int_equal(cloq_st_read_f32(m, cloq_st_tensor_at(m, 0), out, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "'x'"));
	cloq_st_close(m);
	unlink(path);
}

/* ---- sharded directories -------------------------------------------------------------------- */
static void write_shard(const char *path, int first_layer, int nlayers, int with_embed)
{
	cloq_err err;
	cloq_err_clear(&err);
	cloq_st_writer *w = NULL;
	assert_int_equal(cloq_st_writer_create(path, &w, &err), CLOQ_OK);
	int64_t s[2] = { 4, 8 };
	char name[128];
	if (with_embed)
		assert_int_equal(cloq_st_writer_add(w, "model.embed_tokens.weight", CLOQ_DT_BF16, 2, s, &err), 0);
	for (int l = first_layer; l < first_layer + nlayers; l++) {
		snprintf(name, sizeof name, "model.layers.%d.mlp.up_proj.weight", l);
		assert_int_equal(cloq_st_writer_add(w, name, CLOQ_DT_BF16, 2, s, &err), 0);
		snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
		assert_int_equal(cloq_st_writer_add(w, name, CLOQ_DT_BF16, 1, s, &err), 0);
	}
	assert_int_equal(cloq_st_writer_begin(w, &err), 0);
	uint16_t v[32];
	for (int i = 0; i < 32; i++)
		v[i] = cloq_f32_to_bf16_ref((float)(first_layer * 100 + i));
	if (with_embed)
		assert_int_equal(cloq_st_writer_write_named(w, "model.embed_tokens.weight", v, 64, &err), 0);
	for (int l = first_layer; l < first_layer + nlayers; l++) {
		snprintf(name, sizeof name, "model.layers.%d.mlp.up_proj.weight", l);
		assert_int_equal(cloq_st_writer_write_named(w, name, v, 64, &err), 0);
		snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
		assert_int_equal(cloq_st_writer_write_named(w, name, v, 8, &err), 0);
	}
	if (cloq_st_writer_commit(w, &err))
		fail_msg("%s", err.msg);
	cloq_st_writer_free(w);
}

static void write_index(const char *dir, const char *extra_entry)
{
	char path[600];
	snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
	FILE *f = fopen(path, "w");
	fprintf(f, "{\"metadata\":{\"total_size\":1},\"weight_map\":{"
		   "\"model.embed_tokens.weight\":\"model-00001-of-00002.safetensors\"");
	for (int l = 0; l < 3; l++) {
		const char *shard = l < 2 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
		fprintf(f, ",\"model.layers.%d.mlp.up_proj.weight\":\"%s\"", l, shard);
		fprintf(f, ",\"model.layers.%d.input_layernorm.weight\":\"%s\"", l, shard);
	}
	if (extra_entry)
		fprintf(f, ",%s", extra_entry);
	fprintf(f, "}}");
	fclose(f);
}

static void test_sharded(void **state)
{
	char dir[512], p[600];
	tpath(dir, sizeof dir, "sharded");
	cloq_err err;
	cloq_err_clear(&err);
	assert_int_equal(cloq_mkdir_p(dir, &err), CLOQ_OK);
	snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
	write_shard(p, 0, 2, 1);
	snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
	write_shard(p, 2, 1, 0);
	write_index(dir, NULL);
	cloq_st_model *m = NULL;
	if (cloq_st_open(dir, &m, &err))
		fail_msg("%s", err.msg);
	assert_int_equal(cloq_st_nfiles(m), 2);
	assert_int_equal(cloq_st_count(m), 7);
	assert_non_null(strstr(cloq_st_file_path(m, 1), "model-00002-of-00002.safetensors"));
	assert_int_equal(cloq_st_layer_count(m), 3);
	const cloq_st_tensor *t = cloq_st_find(m, "model.layers.2.mlp.up_proj.weight");
	assert_int_equal(t->file, 1);
	float out[32];
	assert_int_equal(cloq_st_read_f32(m, t, out, &err), CLOQ_OK);
	assert_true(out[0] == 200.0f && out[31] == 231.0f);
	size_t idx[4];
	assert_int_equal(cloq_st_layer_tensors(m, 1, idx, 4), 2);
	assert_int_equal(cloq_st_tensor_at(m, idx[0])->file, 0);
	cloq_st_close(m);

	/* index naming a shard that does not exist */
	write_index(dir, "\"extra.weight\":\"model-00003-of-00002.safetensors\"");
	assert_int_equal(cloq_st_open(dir, &m, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "model-00003-of-00002.safetensors"));
	assert_non_null(strstr(err.msg, "does not exist"));
	/* index naming a tensor that is in no shard */
	write_index(dir, "\"lm_head.weight\":\"model-00002-of-00002.safetensors\"");
	assert_int_equal(cloq_st_open(dir, &m, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "'lm_head.weight'"));
	assert_non_null(strstr(err.msg, "absent from shard"));
	assert_non_null(strstr(err.msg, "model-00002-of-00002.safetensors"));
	/* index naming the wrong shard for a tensor (a later key overrides nothing: cJSON keeps both) */
	snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
	FILE *f = fopen(p, "w");
	fprintf(f, "{\"weight_map\":{\"model.embed_tokens.weight\":\"model-00002-of-00002.safetensors\","
		   "\"model.layers.2.mlp.up_proj.weight\":\"model-00002-of-00002.safetensors\"}}");
	fclose(f);
	/* only shard 2 is named, so embed_tokens is absent from it */
	assert_int_equal(cloq_st_open(dir, &m, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "'model.embed_tokens.weight'"));
	/* path escape in a shard name */
	f = fopen(p, "w");
	fprintf(f, "{\"weight_map\":{\"a\":\"../x.safetensors\"}}");
	fclose(f);
	assert_int_equal(cloq_st_open(dir, &m, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "bad shard file name"));
	/* broken index JSON */
	f = fopen(p, "w");
	fprintf(f, "{\"weight_map\":{\"a\":");
	fclose(f);
	assert_int_equal(cloq_st_open(dir, &m, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "model.safetensors.index.json"));
	assert_null(m);
	/* duplicate tensor across two shards */
	snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
	write_shard(p, 1, 1, 0);
	write_index(dir, NULL);
	assert_int_equal(cloq_st_open(dir, &m, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "duplicate"));
	assert_non_null(strstr(err.msg, "model.layers.1."));
}

/* A writer killed half-way (SIGKILL: no cleanup runs) leaves nothing under the final name. */
static void test_writer_killed(void **state)
{
	char p[512];
	tpath(p, sizeof p, "killed.safetensors");
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		cloq_st_writer *w = NULL;
		int64_t s[1] = { 1 << 18 };
		static float buf[1 << 17];
		if (cloq_st_writer_create(p, &w, NULL) || cloq_st_writer_add(w, "big", CLOQ_DT_F32, 1, s, NULL) ||
		    cloq_st_writer_begin(w, NULL) || cloq_st_writer_write(w, 0, buf, sizeof buf, NULL))
			_exit(1);
		raise(SIGKILL);
		_exit(2);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	assert_false(cloq_file_exists(p));
	cloq_err err;
	cloq_st_model *m = NULL;
	assert_int_equal(cloq_st_open(p, &m, &err), CLOQ_EINPUT);
	/* only the dead process's temp file is there, and it is not a complete safetensors file */
	char tmp[600];
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)pid);
	assert_true(cloq_file_exists(tmp));
	assert_int_equal(count_entries(tmpdir), 1);
	assert_int_equal(cloq_st_open(tmp, &m, &err), CLOQ_EINPUT);
	unlink(tmp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stories260k),
		cmocka_unit_test(test_writer_round_trip),
		cmocka_unit_test(test_writer_misuse),
		cmocka_unit_test(test_writer_faults),
		cmocka_unit_test(test_writer_killed),
		cmocka_unit_test(test_open_alloc_faults),
		cmocka_unit_test(test_must_fail_header),
		cmocka_unit_test(test_must_fail_json),
		cmocka_unit_test(test_must_fail_offsets),
		cmocka_unit_test(test_must_fail_types_and_shapes),
		cmocka_unit_test(test_must_fail_nonfinite),
		cmocka_unit_test(test_sharded),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
