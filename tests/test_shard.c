/* test_shard.c - shard container: round trips over dtypes and shapes (empty, scalar, ~64 MB),
 * stock `zstd -t`, determinism, the seek table parsed independently, every flipped byte and every
 * truncation found and attributed, missing / foreign files, fault injection. */
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
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "cloq_error.h"
#include "cloq_shard.h"
#include "cloq_sys.h"
#include "cloq_test_util.h"

static int setup(void **state) { return cloq_test_tmpdir_setup("shard"); }

static int teardown(void **state) { return cloq_test_tmpdir_teardown(); }

static uint64_t rng_state;
static uint64_t rng_u64(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Roughly normal floats (sum of four uniforms), cheap enough for 64 MB. */
static void fill_f32(float *x, size_t n, uint64_t seed)
{
	rng_state = seed;
	for (size_t i = 0; i < n; i++) {
		uint64_t r = rng_u64();
		float s = (float)(r & 0xffff) + (float)((r >> 16) & 0xffff) + (float)((r >> 32) & 0xffff) +
			  (float)(r >> 48);
		x[i] = (s - 131070.0f) * (1.0f / 37837.0f);
	}
}

static void fill_bytes(void *p, size_t n, uint64_t seed)
{
	rng_state = seed;
	unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		b[i] = (unsigned char)(rng_u64() >> 56);
}

static void path_in(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", tmpdir, name);
}

/* ---- a small set of tensors used by several tests ------------------------------------------- */
struct spec {
	const char *name;
	int dtype, ndim;
	uint64_t shape[3];
	void *data;
	size_t nbytes;
};

static struct spec small[6];
static float a_f32[4 * 6];
static uint16_t b_bf16[7];
static int32_t q_i32[3 * 5];
static uint8_t u_u8[11];
static double s_f64[1];

static void init_small(void)
{
	fill_f32(a_f32, 24, 11);
	fill_bytes(b_bf16, sizeof b_bf16, 12);
	fill_bytes(q_i32, sizeof q_i32, 13);
	fill_bytes(u_u8, sizeof u_u8, 14);
	s_f64[0] = -3.25;
	struct spec s[6] = {
		{ "model.layers.3.self_attn.q_proj.lora_A", CLOQ_SHARD_F32, 2, { 4, 6 }, a_f32, sizeof a_f32 },
		{ "norm", CLOQ_SHARD_BF16, 1, { 7 }, b_bf16, sizeof b_bf16 },
		{ "qweight", CLOQ_SHARD_I32, 2, { 3, 5 }, q_i32, sizeof q_i32 },
		{ "empty", CLOQ_SHARD_F16, 2, { 0, 4 }, NULL, 0 },
		{ "bytes", CLOQ_SHARD_U8, 1, { 11 }, u_u8, sizeof u_u8 },
		{ "scalar", CLOQ_SHARD_F64, 0, { 0 }, s_f64, sizeof s_f64 },
	};
	memcpy(small, s, sizeof s);
}

static int write_shard(const char *path, uint32_t layer, const struct spec *t, int n,
		       size_t frame_bytes, cloq_err *err)
{
	cloq_shard_writer *w = NULL;
	int rc = cloq_shard_writer_create(path, layer, &w, err);
	if (rc)
		return rc;
	if (frame_bytes)
		rc = cloq_shard_writer_set_frame_bytes(w, frame_bytes, err);
	for (int i = 0; i < n && !rc; i++)
		rc = cloq_shard_add(w, t[i].name, t[i].dtype, t[i].ndim, t[i].shape, t[i].data,
				    t[i].nbytes, err);
	if (!rc)
		rc = cloq_shard_commit(w, err);
	cloq_shard_writer_free(w);
	return rc;
}

static void check_shard(const char *path, uint32_t layer, const struct spec *t, int n)
{
	cloq_err err;
	cloq_err_clear(&err);
	cloq_shard *s = NULL;
	assert_int_equal(cloq_shard_open(path, &s, &err), CLOQ_OK);
	assert_int_equal(cloq_shard_layer(s), layer);
	assert_int_equal(cloq_shard_count(s), n);
	for (int i = 0; i < n; i++) {
		assert_string_equal(cloq_shard_name(s, i), t[i].name);
		assert_int_equal(cloq_shard_dtype(s, i), t[i].dtype);
		assert_int_equal(cloq_shard_ndim(s, i), t[i].ndim);
		for (int d = 0; d < t[i].ndim; d++)
			assert_int_equal(cloq_shard_shape(s, i)[d], t[i].shape[d]);
		assert_int_equal(cloq_shard_nbytes(s, i), t[i].nbytes);
		int is_float = t[i].dtype == CLOQ_SHARD_F32 || t[i].dtype == CLOQ_SHARD_F16 ||
			       t[i].dtype == CLOQ_SHARD_BF16 || t[i].dtype == CLOQ_SHARD_F64;
		assert_int_equal(cloq_shard_encoding(s, i), is_float ? CLOQ_SHARD_PLANES : CLOQ_SHARD_RAW);
		unsigned char *buf = malloc(t[i].nbytes + 1);
		if (t[i].nbytes)
			assert_int_equal(cloq_shard_read(s, i, buf, t[i].nbytes - 1, &err), CLOQ_EINPUT);
		assert_int_equal(cloq_shard_read(s, i, buf, t[i].nbytes, &err), CLOQ_OK);
		if (t[i].nbytes)
			assert_memory_equal(buf, t[i].data, t[i].nbytes);
		memset(buf, 0, t[i].nbytes);
		assert_int_equal(cloq_shard_read_name(s, t[i].name, buf, t[i].nbytes, &err), CLOQ_OK);
		if (t[i].nbytes)
			assert_memory_equal(buf, t[i].data, t[i].nbytes);
		free(buf);
	}
	assert_int_equal(cloq_shard_find(s, "no such tensor"), -1);
	assert_int_equal(cloq_shard_read_name(s, "no such tensor", NULL, 0, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "no such tensor"));
	assert_int_equal(cloq_shard_read(s, (size_t)n, NULL, 0, &err), CLOQ_EINPUT);
	cloq_shard_close(s);
	cloq_shard_report rep;
	assert_int_equal(cloq_shard_verify(path, &rep, &err), CLOQ_OK);
	assert_int_equal(rep.n_bad, 0);
	assert_int_equal(rep.n_tensors, n);
	assert_int_equal(rep.layer, layer);
	cloq_shard_report_free(&rep);
}

/* Stock zstd accepts the whole file (header and seek table are skippable frames). */
static void zstd_t(const char *path)
{
	if (access("/usr/bin/zstd", X_OK) != 0)
		return; /* the CLI is optional; the format checks below do not depend on it */
	char cmd[1024];
	snprintf(cmd, sizeof cmd, "/usr/bin/zstd -q -t '%s'", path);
	assert_int_equal(system(cmd), 0);
}

static unsigned char *slurp(const char *path, size_t *n)
{
	char *d = NULL;
	cloq_err err;
	assert_int_equal(cloq_read_file(path, &d, n, &err), CLOQ_OK);
	return (unsigned char *)d;
}

static void spit(const char *path, const void *d, size_t n)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(d, 1, n, f), n);
	fclose(f);
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Parse the seek table from the published format alone; return the number of entries and fill
 * the frame start offsets (off[n] = start of the seek table). */
static size_t parse_seek(const unsigned char *d, size_t n, uint64_t *off, size_t cap)
{
	assert_true(n >= 17);
	assert_int_equal(le32(d + n - 4), 0x8F92EAB1u);
	assert_int_equal(d[n - 5], 0x80); /* checksums present, reserved bits clear */
	size_t nf = le32(d + n - 9);
	size_t slen = 8 + 12 * nf + 9;
	assert_true(nf + 1 <= cap && slen <= n);
	const unsigned char *st = d + n - slen;
	assert_int_equal(le32(st), 0x184D2A5Eu);
	assert_int_equal(le32(st + 4), slen - 8);
	uint64_t o = 0;
	for (size_t k = 0; k < nf; k++) {
		off[k] = o;
		o += le32(st + 8 + 12 * k);
	}
	off[nf] = o;
	assert_int_equal(o, n - slen); /* frames tile the file from offset 0 up to the table */
	/* entry 0 is the header's skippable frame: no decompressed bytes */
	assert_int_equal(le32(d), 0x184D2A50u);
	assert_int_equal(le32(st + 8), 8 + le32(d + 4));
	assert_int_equal(le32(st + 12), 0);
	assert_int_equal(le32(st + 16), (uint32_t)XXH64(NULL, 0, 0));
	/* each other entry's checksum equals the checksum zstd stored at the end of that frame */
	for (size_t k = 1; k < nf; k++) {
		assert_int_equal(le32(st + 8 + 12 * k + 8), le32(d + off[k + 1] - 4));
		assert_int_equal(ZSTD_findFrameCompressedSize(d + off[k], off[k + 1] - off[k]),
				 off[k + 1] - off[k]);
		assert_int_equal(ZSTD_getFrameContentSize(d + off[k], off[k + 1] - off[k]),
				 le32(st + 8 + 12 * k + 4));
	}
	return nf;
}

/* ---- tests ---------------------------------------------------------------------------------- */
static void test_dtype_names(void **state)
{
	assert_string_equal(cloq_shard_dtype_name(CLOQ_SHARD_BF16), "BF16");
	assert_int_equal(cloq_shard_dtype_from_name("I32"), CLOQ_SHARD_I32);
	assert_int_equal(cloq_shard_dtype_from_name("Q4"), 0);
	assert_int_equal(cloq_shard_dtype_size(CLOQ_SHARD_F64), 8);
	assert_int_equal(cloq_shard_dtype_size(CLOQ_SHARD_U8), 1);
	assert_null(cloq_shard_dtype_name(99));
}

static void test_round_trip_small(void **state)
{
	init_small();
	char path[512];
	path_in(path, sizeof path, "layer3.shard");
	cloq_err err;
	cloq_err_clear(&err);
	assert_int_equal(write_shard(path, 3, small, 6, 0, &err), CLOQ_OK);
	assert_int_equal(count_entries(tmpdir), 1); /* no scratch or temp file left */
	check_shard(path, 3, small, 6);
	zstd_t(path);
	size_t n;
	unsigned char *d = slurp(path, &n);
	uint64_t off[16];
	assert_int_equal(parse_seek(d, n, off, 16), 7); /* header + one frame per tensor */
	/* a plain decompression yields the stored tensor streams back to back: the U8 tensor is
	 * raw, so its bytes appear as they were given */
	size_t cap = 4096, got;
	unsigned char *plain = malloc(cap);
	got = ZSTD_decompress(plain, cap, d, n);
	assert_false(ZSTD_isError(got));
	size_t total = 0;
	for (int i = 0; i < 6; i++)
		total += small[i].nbytes;
	assert_int_equal(got, total);
	assert_memory_equal(plain + sizeof a_f32 + sizeof b_bf16 + sizeof q_i32, u_u8, sizeof u_u8);
	assert_memory_equal(plain + sizeof a_f32 + sizeof b_bf16, q_i32, sizeof q_i32);
	/* the F32 tensor is byte planes: plane 3 (sign+exponent bytes) first value */
	assert_int_equal(plain[3 * 24], ((unsigned char *)a_f32)[3]);
	free(plain);
	cloq_free(d);
	unlink(path);
}

static void test_large_tensor_and_frames(void **state)
{
	const size_t nf = 16u << 20; /* 64 MB of F32 */
	float *big = malloc(nf * sizeof(float));
	fill_f32(big, nf, 21);
	int32_t *ints = malloc(3000 * sizeof(int32_t));
	fill_bytes(ints, 3000 * sizeof(int32_t), 22);
	struct spec t[2] = {
		{ "big", CLOQ_SHARD_F32, 2, { 4096, 4096 }, big, nf * sizeof(float) },
		{ "ints", CLOQ_SHARD_I32, 1, { 3000 }, ints, 3000 * sizeof(int32_t) },
	};
	char path[512];
	path_in(path, sizeof path, "big.shard");
	cloq_err err;
	cloq_err_clear(&err);
	assert_int_equal(write_shard(path, 0, t, 2, 0, &err), CLOQ_OK);
	check_shard(path, 0, t, 2);
	zstd_t(path);
	unlink(path);

	/* Tensors split into several frames (small frame limit): same data back, the seek table
	 * lists every frame, stock zstd still accepts it. */
	t[0].shape[0] = 16;
	t[0].nbytes = 16 * 4096 * sizeof(float);
	assert_int_equal(write_shard(path, 1, t, 2, 10000, &err), CLOQ_OK);
	check_shard(path, 1, t, 2);
	zstd_t(path);
	size_t n;
	unsigned char *d = slurp(path, &n);
	uint64_t off[128];
	size_t want = 1 + (t[0].nbytes + 9999) / 10000 + (t[1].nbytes + 9999) / 10000;
	assert_int_equal(parse_seek(d, n, off, 128), want);
	cloq_free(d);
	unlink(path);
	free(big);
	free(ints);
}

static void test_deterministic(void **state)
{
	init_small();
	char p1[512], p2[512];
	path_in(p1, sizeof p1, "one.shard");
	path_in(p2, sizeof p2, "two.shard");
	cloq_err err;
	cloq_err_clear(&err);
	assert_int_equal(write_shard(p1, 7, small, 6, 0, &err), CLOQ_OK);
	assert_int_equal(write_shard(p2, 7, small, 6, 0, &err), CLOQ_OK);
	size_t n1, n2;
	unsigned char *d1 = slurp(p1, &n1), *d2 = slurp(p2, &n2);
	assert_int_equal(n1, n2);
	assert_memory_equal(d1, d2, n1);
	cloq_free(d2);
	/* a different layer index changes the header, nothing else */
	assert_int_equal(write_shard(p2, 8, small, 6, 0, &err), CLOQ_OK);
	d2 = slurp(p2, &n2);
	assert_int_equal(n1, n2);
	assert_memory_not_equal(d1, d2, n1);
	size_t hl = 8 + le32(d1 + 4);
	assert_memory_equal(d1 + hl, d2 + hl, n1 - hl - (8 + 12 * 7 + 9));
	cloq_free(d1);
	cloq_free(d2);
	unlink(p1);
	unlink(p2);
}

static void test_bad_adds(void **state)
{
	init_small();
	char path[512];
	path_in(path, sizeof path, "bad.shard");
	cloq_err err;
	cloq_err_clear(&err);
	cloq_shard_writer *w = NULL;
	assert_int_equal(cloq_shard_writer_create(path, 0, &w, &err), CLOQ_OK);
	uint64_t shp[2] = { 4, 6 };
	assert_int_equal(cloq_shard_add(w, "a", CLOQ_SHARD_F32, 2, shp, a_f32, sizeof a_f32 - 4, &err),
			 CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "'a'"));
	assert_int_equal(cloq_shard_add(w, "a", 0, 2, shp, a_f32, sizeof a_f32, &err), CLOQ_EINPUT);
	assert_int_equal(cloq_shard_add(w, "", CLOQ_SHARD_F32, 2, shp, a_f32, sizeof a_f32, &err),
			 CLOQ_EINPUT);
	assert_int_equal(cloq_shard_add(w, "a", CLOQ_SHARD_F32, 9, shp, a_f32, sizeof a_f32, &err),
			 CLOQ_EINPUT);
	uint64_t huge[2] = { UINT64_MAX / 2, 4 };
	assert_int_equal(cloq_shard_add(w, "h", CLOQ_SHARD_F32, 2, huge, a_f32, 16, &err), CLOQ_EINPUT);
	/* rejected adds leave the writer usable */
	assert_int_equal(cloq_shard_add(w, "a", CLOQ_SHARD_F32, 2, shp, a_f32, sizeof a_f32, &err), CLOQ_OK);
	assert_int_equal(cloq_shard_add(w, "a", CLOQ_SHARD_F32, 2, shp, a_f32, sizeof a_f32, &err),
			 CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "twice"));
	assert_int_equal(cloq_shard_writer_set_frame_bytes(w, 100, &err), CLOQ_EINPUT); /* after add */
	assert_false(cloq_file_exists(path));
	assert_int_equal(cloq_shard_commit(w, &err), CLOQ_OK);
	assert_int_equal(cloq_shard_add(w, "b", CLOQ_SHARD_U8, 1, shp, u_u8, 4, &err), CLOQ_EINPUT);
	assert_int_equal(cloq_shard_commit(w, &err), CLOQ_EINPUT);
	cloq_shard_writer_free(w);
	assert_int_equal(count_entries(tmpdir), 1);
	unlink(path);
	/* abandoned writer: nothing left */
	assert_int_equal(cloq_shard_writer_create(path, 0, &w, &err), CLOQ_OK);
	assert_int_equal(cloq_shard_add(w, "a", CLOQ_SHARD_F32, 2, shp, a_f32, sizeof a_f32, &err), CLOQ_OK);
	cloq_shard_writer_free(w);
	assert_int_equal(count_entries(tmpdir), 0);
	cloq_shard_writer_free(NULL);
	cloq_shard_close(NULL);
	cloq_shard_report_free(NULL);
}

static int has_bad(const cloq_shard_report *rep, const char *what)
{
	for (size_t i = 0; i < rep->n_bad; i++)
		if (strcmp(rep->bad[i], what) == 0)
			return 1;
	return 0;
}

/* Open and read every tensor; returns the first failure. */
static int read_all(const char *path, cloq_err *err)
{
	cloq_shard *s = NULL;
	int rc = cloq_shard_open(path, &s, err);
	if (rc)
		return rc;
	unsigned char buf[256];
	for (size_t i = 0; i < cloq_shard_count(s) && !rc; i++)
		rc = cloq_shard_read(s, i, buf, sizeof buf, err);
	cloq_shard_close(s);
	return rc;
}

/* Flip one bit in every byte: verify reports exactly the part that holds the byte (header, the
 * tensor whose frame it is, or the seek table), and open+read fails with CLOQ_EINTEGRITY. */
static void test_every_flip_attributed(void **state)
{
	init_small();
	char path[512], bad[512];
	path_in(path, sizeof path, "good.shard");
	path_in(bad, sizeof bad, "flipped.shard");
	cloq_err err;
	cloq_err_clear(&err);
	assert_int_equal(write_shard(path, 3, small, 6, 0, &err), CLOQ_OK);
	size_t n;
	unsigned char *d = slurp(path, &n);
	uint64_t off[16];
	size_t nf = parse_seek(d, n, off, 16);
	assert_int_equal(nf, 7);
	for (size_t pos = 0; pos < n; pos++) {
		const char *want = "seek table";
		if (pos < off[1])
			want = "header";
		for (size_t k = 1; k < nf; k++)
			if (pos >= off[k] && pos < off[k + 1])
				want = small[k - 1].name;
		for (int bit = 0; bit < 8; bit += 5) {
			unsigned char mask = (unsigned char)(1u << ((pos + (size_t)bit) % 8));
			d[pos] ^= mask;
			spit(bad, d, n);
			d[pos] ^= mask;
			cloq_shard_report rep;
			cloq_err_clear(&err);
			int rc = cloq_shard_verify(bad, &rep, &err);
			if (rc != CLOQ_EINTEGRITY || rep.n_bad != 1 || strcmp(rep.bad[0], want) != 0)
				fail_msg("flip at %zu: rc %d, %zu bad (%s), want '%s': %s", pos, rc, rep.n_bad,
					 rep.n_bad ? rep.bad[0] : "-", want, err.msg);
			assert_non_null(strstr(err.msg, "flipped.shard"));
			assert_non_null(strstr(err.msg, want));
			cloq_shard_report_free(&rep);
			cloq_err_clear(&err);
			assert_int_equal(read_all(bad, &err), CLOQ_EINTEGRITY);
			assert_non_null(strstr(err.msg, "flipped.shard"));
		}
	}
	/* two damaged tensors: both listed */
	d[off[1] + 5] ^= 0x10;
	d[off[3] + 6] ^= 0x01;
	spit(bad, d, n);
	cloq_shard_report rep;
	assert_int_equal(cloq_shard_verify(bad, &rep, &err), CLOQ_EINTEGRITY);
	assert_int_equal(rep.n_bad, 2);
	assert_true(has_bad(&rep, small[0].name));
	assert_true(has_bad(&rep, small[2].name));
	assert_non_null(strstr(err.msg, small[0].name));
	assert_non_null(strstr(err.msg, small[2].name));
	cloq_shard_report_free(&rep);
	cloq_free(d);
	unlink(bad);
	unlink(path);
}

static void test_truncated_and_foreign(void **state)
{
	init_small();
	char path[512], bad[512];
	path_in(path, sizeof path, "good.shard");
	path_in(bad, sizeof bad, "cut.shard");
	cloq_err err;
	cloq_err_clear(&err);
	assert_int_equal(write_shard(path, 3, small, 6, 0, &err), CLOQ_OK);
	size_t n;
	unsigned char *d = slurp(path, &n);
	uint64_t off[16];
	parse_seek(d, n, off, 16);
	for (size_t len = 0; len < n; len++) {
		spit(bad, d, len);
		cloq_shard_report rep;
		cloq_err_clear(&err);
		int rc = cloq_shard_verify(bad, &rep, &err);
		if (rc != CLOQ_EINTEGRITY)
			fail_msg("truncated to %zu: rc %d: %s", len, rc, err.msg);
		assert_non_null(strstr(err.msg, "cut.shard"));
		if (len >= off[1]) {
			/* header intact: the seek table is missing, and every tensor not wholly
			 * inside the file is named */
			assert_true(has_bad(&rep, "seek table"));
			for (size_t k = 1; k < 7; k++)
				assert_int_equal(has_bad(&rep, small[k - 1].name), off[k + 1] > len);
		} else {
			assert_true(has_bad(&rep, "header"));
		}
		cloq_shard_report_free(&rep);
		cloq_shard *s = NULL;
		assert_int_equal(cloq_shard_open(bad, &s, &err), CLOQ_EINTEGRITY);
		assert_null(s);
	}
	/* appended garbage: the seek table is no longer at the end */
	unsigned char *ext = malloc(n + 3);
	memcpy(ext, d, n);
	memset(ext + n, 0xab, 3);
	spit(bad, ext, n + 3);
	cloq_shard_report rep;
	assert_int_equal(cloq_shard_verify(bad, &rep, &err), CLOQ_EINTEGRITY);
	assert_true(has_bad(&rep, "seek table"));
	cloq_shard_report_free(&rep);
	free(ext);

	/* a deleted shard: CLOQ_EINPUT with the path */
	unlink(bad);
	assert_int_equal(cloq_shard_verify(bad, &rep, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, bad));
	assert_int_equal(rep.n_bad, 0);
	cloq_shard_report_free(&rep);
	cloq_shard *s = NULL;
	assert_int_equal(cloq_shard_open(bad, &s, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, bad));

	/* not a shard: text, and a perfectly good plain zstd file */
	const char *text = "this is not a shard, just some text that is long enough to look at";
	spit(bad, text, strlen(text));
	assert_int_equal(cloq_shard_verify(bad, NULL, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "not a cloq shard"));
	unsigned char z[256];
	size_t zn = ZSTD_compress(z, sizeof z, text, strlen(text), 3);
	assert_false(ZSTD_isError(zn));
	spit(bad, z, zn);
	assert_int_equal(cloq_shard_open(bad, &s, &err), CLOQ_EINPUT);
	assert_int_equal(cloq_shard_verify(bad, NULL, &err), CLOQ_EINPUT);
	/* a directory is not a shard either */
	assert_int_equal(cloq_shard_verify(tmpdir, NULL, &err), CLOQ_EINPUT);
	cloq_free(d);
	unlink(bad);
	unlink(path);
}

/* Fail the Nth I/O call for every N until the write succeeds: each failure is a clean
 * CLOQ_EIO naming the shard, and the directory stays empty (no scratch, temp or final file). */
static void test_fault_injection(void **state)
{
	init_small();
	const size_t nb = 600000;
	unsigned char *noise = malloc(nb); /* incompressible: its frame takes several writes */
	fill_bytes(noise, nb, 31);
	struct spec t[3] = { small[0], { "noise", CLOQ_SHARD_U8, 1, { nb }, noise, nb }, small[2] };
	char path[512];
	path_in(path, sizeof path, "fault.shard");
	int succeeded = 0, failures = 0;
	for (long nth = 1; nth < 200 && !succeeded; nth++) {
		cloq_err err;
		cloq_err_clear(&err);
		cloq_fault_set(CLOQ_FAULT_IO, nth);
		int rc = write_shard(path, 2, t, 3, 0, &err);
		cloq_fault_set(CLOQ_FAULT_IO, 0);
		if (rc == CLOQ_OK) {
			succeeded = 1;
			break;
		}
		failures++;
		assert_int_equal(rc, CLOQ_EIO);
		assert_non_null(strstr(err.msg, "fault.shard"));
		if (cloq_file_exists(path)) {
			/* only the directory fsync after the rename may fail with the file in place */
			assert_int_equal(cloq_shard_verify(path, NULL, &err), CLOQ_OK);
			unlink(path);
		}
		assert_int_equal(count_entries(tmpdir), 0);
	}
	assert_true(succeeded);
	assert_true(failures >= 6);
	check_shard(path, 2, t, 3);
	unlink(path);
	free(noise);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dtype_names),
		cmocka_unit_test(test_round_trip_small),
		cmocka_unit_test(test_large_tensor_and_frames),
		cmocka_unit_test(test_deterministic),
		cmocka_unit_test(test_bad_adds),
		cmocka_unit_test(test_every_flip_attributed),
		cmocka_unit_test(test_truncated_and_foreign),
		cmocka_unit_test(test_fault_injection),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
