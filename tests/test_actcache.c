/* test_actcache.c - activation cache: round trips (fp32 bit-exact, bf16 = rounded values),
 * every flipped byte and every truncation detected, empty cache, fault injection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>
#include <zstd.h>

#include "cloq_actcache.h"
#include "cloq_error.h"
#include "cloq_sys.h"
#include "cloq_test_util.h"

static int setup(void **state) { return cloq_test_tmpdir_setup("actcache"); }

static int teardown(void **state) { return cloq_test_tmpdir_teardown(); }

/* splitmix64 + Box-Muller: a reproducible N(0,1) source independent of libc's rand. */
static uint64_t rng_state;
static uint64_t rng_u64(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
static double rng_unit(void) { return ((rng_u64() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
static float rng_normal(void)
{
	return (float)(sqrt(-2.0 * log(rng_unit())) * cos(6.283185307179586 * rng_unit()));
}

static float from_bits(uint32_t u)
{
	float x;
	memcpy(&x, &u, 4);
	return x;
}

/* Activation-like values with the awkward cases sprinkled in: +-0, subnormals, huge, Inf. */
static void fill(float *x, size_t n, uint64_t seed)
{
	static const uint32_t special[] = { 0x00000000u, 0x80000000u, 0x00000001u, 0x807fffffu,
					    0x00400000u, 0x7f7fffffu, 0xff7fffffu, 0x7f800000u,
					    0xff800000u, 0x3f800000u, 0x00008000u, 0x00018000u };
	rng_state = seed;
	for (size_t i = 0; i < n; i++) {
		uint64_t r = rng_u64();
		if (r % 17 == 0)
			x[i] = from_bits(special[(r >> 8) % (sizeof special / sizeof special[0])]);
		else if (r % 17 == 1)
			x[i] = rng_normal() * 1e4f; /* outlier channel */
		else
			x[i] = rng_normal();
	}
}

static void path_in(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", tmpdir, name);
}

/* Write `nchunks` chunks of the given row counts from X (consecutive rows). */
static int write_cache(const char *path, const float *X, size_t cols, const int *chunk_rows,
		       int nchunks, int enc, int threads, cloq_err *err)
{
	cloq_cache_writer *w = NULL;
	int rc = cloq_cache_create(path, cols, enc, 3, &w, err);
	if (rc)
		return rc;
	if (threads)
		rc = cloq_cache_writer_set_threads(w, threads, err);
	size_t row = 0;
	for (int c = 0; c < nchunks && !rc; c++) {
		rc = cloq_cache_append(w, X + row * cols, chunk_rows[c], err);
		row += (size_t)chunk_rows[c];
	}
	if (!rc)
		rc = cloq_cache_commit(w, err);
	cloq_cache_writer_free(w);
	return rc;
}

static int sum_rows(const int *r, int n)
{
	int s = 0;
	for (int i = 0; i < n; i++)
		s += r[i];
	return s;
}

/* Read everything back both ways (random access in reverse order, sequential in odd steps) and
 * compare bitwise with `want`. */
static void check_contents(const char *path, const float *want, size_t cols, const int *chunk_rows,
			   int nchunks, int enc)
{
	cloq_err err;
	cloq_err_clear(&err);
	cloq_cache_reader *r = NULL;
	assert_int_equal(cloq_cache_open(path, &r, &err), CLOQ_OK);
	int total = sum_rows(chunk_rows, nchunks);
	assert_int_equal(cloq_cache_rows(r), total);
	assert_int_equal(cloq_cache_cols(r), cols);
	assert_int_equal(cloq_cache_encoding(r), enc);
	int nonempty = 0, maxr = 0;
	for (int c = 0; c < nchunks; c++) {
		nonempty += chunk_rows[c] > 0;
		maxr = chunk_rows[c] > maxr ? chunk_rows[c] : maxr;
	}
	assert_int_equal(cloq_cache_frames(r), nonempty);
	assert_int_equal(cloq_cache_max_frame_rows(r), maxr);
	float *buf = malloc(((size_t)total + 1) * cols * sizeof(float));
	/* random access, last frame first */
	size_t start[64];
	size_t row = 0, k = 0;
	for (int c = 0; c < nchunks; c++)
		if (chunk_rows[c] > 0) {
			start[k++] = row;
			row += (size_t)chunk_rows[c];
		}
	for (size_t f = k; f-- > 0;) {
		int got = -1;
		assert_int_equal(cloq_cache_read_frame(r, f, buf, &got, &err), CLOQ_OK);
		assert_int_equal(got, cloq_cache_frame_rows(r, f));
		assert_memory_equal(buf, want + start[f] * cols, (size_t)got * cols * sizeof(float));
	}
	/* sequential, in steps that straddle frame boundaries */
	for (int step = 1; step <= 13; step += 12) {
		cloq_cache_rewind(r);
		size_t have = 0;
		int got;
		do {
			assert_int_equal(cloq_cache_next(r, buf + have * cols, step, &got, &err), CLOQ_OK);
			have += (size_t)got;
		} while (got > 0);
		assert_int_equal(have, total);
		assert_memory_equal(buf, want, (size_t)total * cols * sizeof(float));
	}
	int got = -1;
	assert_int_equal(cloq_cache_read_frame(r, k, buf, &got, &err), CLOQ_EINPUT);
	free(buf);
	cloq_cache_close(r);
}

static void test_f32_round_trip_bit_exact(void **state)
{
	const size_t cols = 67;
	const int chunks[] = { 5, 1, 0, 40, 13 };
	int total = sum_rows(chunks, 5);
	float *X = malloc((size_t)total * cols * sizeof(float));
	fill(X, (size_t)total * cols, 1);
	char path[512];
	path_in(path, sizeof path, "f32.cache");
	cloq_err err;
	cloq_err_clear(&err);
	assert_int_equal(write_cache(path, X, cols, chunks, 5, CLOQ_CACHE_F32, 0, &err), CLOQ_OK);
	check_contents(path, X, cols, chunks, 5, CLOQ_CACHE_F32);
	assert_int_equal(count_entries(tmpdir), 1);
	unlink(path);
	free(X);
}

static unsigned char *slurp(const char *path, size_t *n)
{
	char *d = NULL;
	cloq_err err;
	assert_int_equal(cloq_read_file(path, &d, n, &err), CLOQ_OK);
	return (unsigned char *)d;
}

/* Frames encoded apart (several at once, in reverse order, for fp32, bf16 and the scratch level)
 * and appended in order give the file cloq_cache_append writes, byte for byte; a frame of other
 * settings, or not yet encoded, is refused and leaves the writer usable. */
static void test_frames_encoded_apart(void **state)
{
	const size_t cols = 300;
	const int chunks[] = { 256, 7, 256, 1, 100 };
	int total = sum_rows(chunks, 5);
	float *X = malloc((size_t)total * cols * sizeof(float));
	fill(X, (size_t)total * cols, 9);
	cloq_err err;
	cloq_err_clear(&err);
	for (int v = 0; v < 3; v++) {
		int enc = v == 1 ? CLOQ_CACHE_BF16 : CLOQ_CACHE_F32;
		char pa[512], pb[512];
		path_in(pa, sizeof pa, "append.cache");
		path_in(pb, sizeof pb, "frames.cache");
		cloq_cache_writer *wa = NULL, *wb = NULL, *wo = NULL;
		assert_int_equal(cloq_cache_create(pa, cols, enc, 1, &wa, &err), CLOQ_OK);
		assert_int_equal(cloq_cache_create(pb, cols, enc, 1, &wb, &err), CLOQ_OK);
		if (v == 2) {
			cloq_cache_writer_set_scratch(wa);
			cloq_cache_writer_set_scratch(wb);
		}
		cloq_cache_frame *f[5];
		size_t off[5], row = 0;
		for (int c = 0; c < 5; c++) {
			f[c] = cloq_cache_frame_new();
			assert_non_null(f[c]);
			off[c] = row;
			row += (size_t)chunks[c];
			assert_int_equal(cloq_cache_append(wa, X + off[c] * cols, chunks[c], &err), CLOQ_OK);
		}
		assert_int_equal(cloq_cache_append_frame(wb, f[0], &err), CLOQ_EINPUT); /* not encoded */
		int erc[5];
#pragma omp parallel for num_threads(2)
		for (int c = 4; c >= 0; c--)
			erc[c] = cloq_cache_encode(wb, f[c], X + off[c] * cols, chunks[c], NULL);
		for (int c = 0; c < 5; c++)
			assert_int_equal(erc[c], CLOQ_OK);
		/* a frame for a cache of other columns is refused */
		char po[512];
		path_in(po, sizeof po, "other.cache");
		assert_int_equal(cloq_cache_create(po, cols - 1, enc, 1, &wo, &err), CLOQ_OK);
		assert_int_equal(cloq_cache_append_frame(wo, f[0], &err), CLOQ_EINPUT);
		cloq_cache_writer_free(wo);
		for (int c = 0; c < 5; c++)
			assert_int_equal(cloq_cache_append_frame(wb, f[c], &err), CLOQ_OK);
		assert_int_equal(cloq_cache_commit(wa, &err), CLOQ_OK);
		assert_int_equal(cloq_cache_commit(wb, &err), CLOQ_OK);
		cloq_cache_writer_free(wa);
		cloq_cache_writer_free(wb);
		for (int c = 0; c < 5; c++)
			cloq_cache_frame_free(f[c]);
		size_t na = 0, nb = 0;
		unsigned char *a = slurp(pa, &na), *b = slurp(pb, &nb);
		assert_int_equal(na, nb);
		assert_memory_equal(a, b, na);
		cloq_free(a);
		cloq_free(b);
		if (enc == CLOQ_CACHE_F32)
			check_contents(pb, X, cols, chunks, 5, enc);
		unlink(pa);
		unlink(pb);
	}
	cloq_cache_frame_free(NULL);
	free(X);
}

/* Large chunks through zstd worker threads: still one frame per append, still bit-exact. */
static void test_f32_threads(void **state)
{
	const size_t cols = 1024;
	const int chunks[] = { 700, 300 };
	float *X = malloc(1000 * cols * sizeof(float));
	fill(X, 1000 * cols, 2);
	char path[512];
	path_in(path, sizeof path, "mt.cache");
	cloq_err err;
	cloq_err_clear(&err);
	assert_int_equal(write_cache(path, X, cols, chunks, 2, CLOQ_CACHE_F32, 2, &err), CLOQ_OK);
	check_contents(path, X, cols, chunks, 2, CLOQ_CACHE_F32);
	unlink(path);
	free(X);
}

static void test_bf16_rounding_known_answers(void **state)
{
	/* 1 + 2^-8 is the midpoint of 1 and 1 + 2^-7: ties go to the even mantissa (1.0);
	 * 1 + 3*2^-8 is the midpoint of 1 + 2^-7 (odd) and 1 + 2^-6 (even). */
	assert_int_equal(cloq_cache_f32_to_bf16(1.0f), 0x3f80);
	assert_int_equal(cloq_cache_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
	assert_int_equal(cloq_cache_f32_to_bf16(1.0f + 0x3p-8f), 0x3f82);
	assert_int_equal(cloq_cache_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
	assert_int_equal(cloq_cache_f32_to_bf16(-0.0f), 0x8000);
	assert_int_equal(cloq_cache_f32_to_bf16(FLT_MAX), 0x7f80);      /* rounds to +Inf */
	assert_int_equal(cloq_cache_f32_to_bf16(-FLT_MAX), 0xff80);
	assert_int_equal(cloq_cache_f32_to_bf16(from_bits(0x00008000u)), 0x0000); /* tie, even */
	assert_int_equal(cloq_cache_f32_to_bf16(from_bits(0x00018000u)), 0x0002); /* tie, even */
	assert_int_equal(cloq_cache_f32_to_bf16(from_bits(0x00000001u)), 0x0000);
	assert_true(isnan(cloq_cache_bf16_to_f32(cloq_cache_f32_to_bf16(from_bits(0x7f800001u)))));
	assert_true(cloq_cache_bf16_to_f32(0x3fc0) == 1.5f);
}

static void test_bf16_round_trip(void **state)
{
	const size_t cols = 33;
	const int chunks[] = { 9, 17, 2 };
	int total = sum_rows(chunks, 3);
	size_t n = (size_t)total * cols;
	float *X = malloc(n * sizeof(float)), *want = malloc(n * sizeof(float));
	fill(X, n, 3);
	for (size_t i = 0; i < n; i++) {
		/* independent expectation: bf16 keeps the top 16 bits after rounding; compute the
		 * rounding here in double arithmetic for finite values inside the bf16 range */
		uint32_t u;
		memcpy(&u, &X[i], 4);
		want[i] = cloq_cache_bf16_to_f32(cloq_cache_f32_to_bf16(X[i]));
		if (isfinite(X[i]) && fabsf(X[i]) < 3.0e38f && X[i] != 0.0f) {
			double lo = (double)from_bits(u & 0xffff0000u);
			double hi = (double)from_bits((u & 0xffff0000u) + 0x10000u);
			double dl = fabs((double)X[i] - lo), dh = fabs(hi - (double)X[i]);
			double expect = dl < dh ? lo : dh < dl ? hi : (((u >> 16) & 1) ? hi : lo);
			assert_true((double)want[i] == expect);
		}
	}
	char path[512];
	path_in(path, sizeof path, "bf16.cache");
	cloq_err err;
	cloq_err_clear(&err);
	assert_int_equal(write_cache(path, X, cols, chunks, 3, CLOQ_CACHE_BF16, 0, &err), CLOQ_OK);
	check_contents(path, want, cols, chunks, 3, CLOQ_CACHE_BF16);
	unlink(path);
	free(X);
	free(want);
}

static void test_empty_cache(void **state)
{
	char path[512];
	path_in(path, sizeof path, "empty.cache");
	cloq_err err;
	cloq_err_clear(&err);
	cloq_cache_writer *w = NULL;
	assert_int_equal(cloq_cache_create(path, 8, CLOQ_CACHE_BF16, 1, &w, &err), CLOQ_OK);
	assert_int_equal(cloq_cache_append(w, NULL, 0, &err), CLOQ_OK);
	assert_false(cloq_file_exists(path));
	assert_int_equal(cloq_cache_commit(w, &err), CLOQ_OK);
	assert_int_equal(cloq_cache_append(w, NULL, 0, &err), CLOQ_EINPUT); /* committed */
	cloq_cache_writer_free(w);
	cloq_cache_reader *r = NULL;
	assert_int_equal(cloq_cache_open(path, &r, &err), CLOQ_OK);
	assert_int_equal(cloq_cache_rows(r), 0);
	assert_int_equal(cloq_cache_frames(r), 0);
	assert_int_equal(cloq_cache_cols(r), 8);
	float buf[8];
	int got = -1;
	assert_int_equal(cloq_cache_next(r, buf, 1, &got, &err), CLOQ_OK);
	assert_int_equal(got, 0);
	cloq_cache_close(r);
	unlink(path);
}

static void test_bad_arguments(void **state)
{
	char path[512];
	path_in(path, sizeof path, "bad.cache");
	cloq_err err;
	cloq_err_clear(&err);
	cloq_cache_writer *w = NULL;
	assert_int_equal(cloq_cache_create(path, 0, CLOQ_CACHE_F32, 3, &w, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "bad.cache"));
	assert_int_equal(cloq_cache_create(path, 4, 7, 3, &w, &err), CLOQ_EINPUT);
	assert_int_equal(cloq_cache_create(path, 4, CLOQ_CACHE_F32, 0, &w, &err), CLOQ_EINPUT);
	assert_null(w);
	assert_int_equal(cloq_cache_create(path, 4, CLOQ_CACHE_F32, 3, &w, &err), CLOQ_OK);
	assert_int_equal(cloq_cache_append(w, NULL, 3, &err), CLOQ_EINPUT);
	assert_int_equal(cloq_cache_append(w, NULL, -1, &err), CLOQ_EINPUT);
	cloq_cache_writer_free(w); /* uncommitted: aborted */
	assert_int_equal(count_entries(tmpdir), 0);
	cloq_cache_writer_free(NULL);
	cloq_cache_close(NULL);

	/* missing file, a file that is not a cache */
	cloq_cache_reader *r = NULL;
	assert_int_equal(cloq_cache_open(path, &r, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, path));
	char junk[300];
	memset(junk, 'x', sizeof junk);
	assert_int_equal(cloq_write_file_atomic(path, junk, sizeof junk, &err), CLOQ_OK);
	assert_int_equal(cloq_cache_open(path, &r, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "not an activation cache"));
	assert_null(r);
	unlink(path);
}

static void spit(const char *path, const unsigned char *d, size_t n)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(d, 1, n, f), n);
	fclose(f);
}

/* Open and read every frame (random access and sequential): returns the first failure. */
static int read_all(const char *path, cloq_err *err)
{
	cloq_cache_reader *r = NULL;
	int rc = cloq_cache_open(path, &r, err);
	if (rc)
		return rc;
	float *buf = malloc((size_t)(cloq_cache_max_frame_rows(r) + 1) * cloq_cache_cols(r) * 4);
	for (size_t k = 0; k < cloq_cache_frames(r) && !rc; k++)
		rc = cloq_cache_read_frame(r, k, buf, NULL, err);
	int got = 1;
	while (!rc && got > 0)
		rc = cloq_cache_next(r, buf, 1, &got, err);
	free(buf);
	cloq_cache_close(r);
	return rc;
}

/* Flip one bit at every byte position of a small cache (header, frames, index): each is
 * CLOQ_EINTEGRITY naming the file; flips inside a frame name that frame. Then every truncation. */
static void corrupt_and_truncate(int enc)
{
	const size_t cols = 16;
	const int chunks[] = { 5, 3, 8 };
	float X[16 * 16];
	fill(X, 16 * 16, 4);
	char path[512], bad[512];
	path_in(path, sizeof path, "good.cache");
	path_in(bad, sizeof bad, "bad.cache");
	cloq_err err;
	cloq_err_clear(&err);
	assert_int_equal(write_cache(path, X, cols, chunks, 3, enc, 0, &err), CLOQ_OK);
	assert_int_equal(read_all(path, &err), CLOQ_OK);
	size_t n;
	unsigned char *d = slurp(path, &n);
	cloq_cache_reader *r = NULL;
	assert_int_equal(cloq_cache_open(path, &r, &err), CLOQ_OK);
	cloq_cache_close(r);
	/* frames lie between the 40-byte header and the index (48 + 40 per frame bytes) */
	size_t idx_off = n - (48 + 40 * 3);
	for (size_t pos = 0; pos < n; pos++) {
		for (int bit = 0; bit < 8; bit += 7) {
			d[pos] ^= (unsigned char)(1u << ((pos + (size_t)bit) % 8));
			spit(bad, d, n);
			d[pos] ^= (unsigned char)(1u << ((pos + (size_t)bit) % 8));
			cloq_err_clear(&err);
			int rc = read_all(bad, &err);
			if (rc != CLOQ_EINTEGRITY)
				fail_msg("flip at %zu (bit %d): rc %d, %s", pos, bit, rc, err.msg);
			assert_non_null(strstr(err.msg, "bad.cache"));
			if (pos >= 40 && pos < idx_off)
				assert_non_null(strstr(err.msg, "frame "));
		}
	}
	for (size_t len = 0; len < n; len++) {
		spit(bad, d, len);
		cloq_err_clear(&err);
		int rc = read_all(bad, &err);
		if (rc != CLOQ_EINTEGRITY)
			fail_msg("truncation to %zu bytes: rc %d, %s", len, rc, err.msg);
		assert_non_null(strstr(err.msg, "bad.cache"));
	}
	/* extended by garbage: also an integrity failure */
	unsigned char *ext = malloc(n + 5);
	memcpy(ext, d, n);
	memset(ext + n, 0, 5);
	spit(bad, ext, n + 5);
	assert_int_equal(read_all(bad, &err), CLOQ_EINTEGRITY);
	free(ext);
	cloq_free(d);
	unlink(bad);
	unlink(path);
}

static uint64_t le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* The bytes are those of docs/FORMAT.md, checked field by field from the spec alone: header,
 * index, and the frames' content = byte planes of each chunk, which plain zstd decompresses. */
static void test_layout_matches_spec(void **state)
{
	const size_t cols = 7;
	const int chunks[] = { 5, 3 };
	float X[8 * 7];
	fill(X, 8 * 7, 9);
	char path[512];
	path_in(path, sizeof path, "layout.cache");
	cloq_err err;
	cloq_err_clear(&err);
	assert_int_equal(write_cache(path, X, cols, chunks, 2, CLOQ_CACHE_F32, 0, &err), CLOQ_OK);
	size_t n;
	unsigned char *d = slurp(path, &n);
	static const unsigned char head[16] = { 0x50, 0x2a, 0x4d, 0x18, 32, 0, 0, 0,
						'C', 'L', 'O', 'Q', 'A', 'C', 'T', 'C' };
	assert_memory_equal(d, head, 16);
	assert_int_equal(le64(d + 16), 1 | (uint64_t)1 << 32); /* version 1, encoding fp32 */
	assert_int_equal(le64(d + 24), cols);
	assert_int_equal(le64(d + 32), XXH3_64bits(d, 32));
	const unsigned char *ix = d + n - (48 + 40 * 2), *ft = d + n - 40;
	assert_int_equal(le64(ix) & 0xffffffffu, 0x184D2A51u);
	assert_int_equal(le64(ix) >> 32, 40 + 40 * 2);
	assert_int_equal(le64(ft), 8);
	assert_int_equal(le64(ft + 8), 2);
	assert_int_equal(le64(ft + 16), cols);
	assert_memory_equal(ft + 24, "CLOQACTI", 8);
	assert_int_equal(le64(ft + 32), XXH3_64bits(ix, 48 + 40 * 2 - 8));
	uint64_t off1 = le64(ix + 8), cs1 = le64(ix + 16), off2 = le64(ix + 48), cs2 = le64(ix + 56);
	assert_int_equal(off1, 40);
	assert_int_equal(off2, 40 + cs1);
	assert_int_equal(off2 + cs2, n - (48 + 40 * 2));
	assert_int_equal(le64(ix + 24), 5);
	assert_int_equal(le64(ix + 64), 3);
	assert_int_equal(le64(ix + 32), XXH3_64bits(X, 5 * cols * 4));
	assert_int_equal(le64(ix + 72), XXH3_64bits(X + 5 * cols, 3 * cols * 4));
	assert_int_equal(le64(ix + 40), XXH3_64bits(d + off1, cs1));
	assert_int_equal(le64(ix + 80), XXH3_64bits(d + off2, cs2));
	unsigned char plain[8 * 7 * 4 + 16], want[8 * 7 * 4];
	size_t got = ZSTD_decompress(plain, sizeof plain, d, n);
	assert_false(ZSTD_isError(got));
	assert_int_equal(got, sizeof want);
	const unsigned char *xb = (const unsigned char *)X;
	size_t at = 0;
	for (int c = 0, row = 0; c < 2; row += chunks[c], c++) {
		size_t cnt = (size_t)chunks[c] * cols;
		for (size_t p = 0; p < 4; p++)
			for (size_t i = 0; i < cnt; i++)
				want[at++] = xb[((size_t)row * cols + i) * 4 + p];
	}
	assert_memory_equal(plain, want, sizeof want);
	if (access("/usr/bin/zstd", X_OK) == 0) {
		char cmd[1024];
		snprintf(cmd, sizeof cmd, "/usr/bin/zstd -q -t '%s'", path);
		assert_int_equal(system(cmd), 0);
	}
	cloq_free(d);
	unlink(path);
}

static void test_corruption_f32(void **state) { corrupt_and_truncate(CLOQ_CACHE_F32); }
static void test_corruption_bf16(void **state) { corrupt_and_truncate(CLOQ_CACHE_BF16); }

/* Fail the Nth I/O call for every N until the whole write succeeds: each failure is a clean
 * CLOQ_EIO naming the file, with nothing under the final name and no temp file left. */
static void test_fault_injection(void **state)
{
	const size_t cols = 300;
	const int chunks[] = { 2000, 1, 1000 }; /* first frame > 1 MiB compressed: several writes */
	float *X = malloc(3001 * cols * sizeof(float));
	rng_state = 5;
	for (size_t i = 0; i < 3001 * cols; i++)
		X[i] = (float)(rng_u64() >> 40); /* 24 random bits: hardly compressible */
	char path[512];
	path_in(path, sizeof path, "fault.cache");
	int succeeded = 0, failures = 0;
	for (long nth = 1; nth < 200 && !succeeded; nth++) {
		cloq_err err;
		cloq_err_clear(&err);
		cloq_fault_set(CLOQ_FAULT_IO, nth);
		int rc = write_cache(path, X, cols, chunks, 3, CLOQ_CACHE_F32, 0, &err);
		cloq_fault_set(CLOQ_FAULT_IO, 0);
		if (rc == CLOQ_OK) {
			succeeded = 1;
			break;
		}
		failures++;
		assert_int_equal(rc, CLOQ_EIO);
		assert_non_null(strstr(err.msg, "fault.cache"));
		if (cloq_file_exists(path)) {
			/* only the directory fsync after the rename may fail with the file in place;
			 * then it must be whole */
			assert_int_equal(read_all(path, &err), CLOQ_OK);
			unlink(path);
		}
		assert_int_equal(count_entries(tmpdir), 0);
	}
	assert_true(succeeded);
	assert_true(failures >= 5);
	check_contents(path, X, cols, chunks, 3, CLOQ_CACHE_F32);
	unlink(path);
	free(X);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_f32_round_trip_bit_exact),
		cmocka_unit_test(test_f32_threads),
		cmocka_unit_test(test_frames_encoded_apart),
		cmocka_unit_test(test_bf16_rounding_known_answers),
		cmocka_unit_test(test_bf16_round_trip),
		cmocka_unit_test(test_empty_cache),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_layout_matches_spec),
		cmocka_unit_test(test_corruption_f32),
		cmocka_unit_test(test_corruption_bf16),
		cmocka_unit_test(test_fault_injection),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
