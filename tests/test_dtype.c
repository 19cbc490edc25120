/* test_dtype.c - dtype table and exact fp16/bf16 conversions, checked exhaustively over all 65536
 * 16-bit patterns against an independent double-precision decoding, at every rounding boundary,
 * and (when the compiler has it) against the compiler's own _Float16 conversion. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_dtype.h"

static uint32_t f2u(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static float u2f(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

/* Independent decoding of a binary16 pattern (IEEE 754 definition, in double). */
static double half_value(uint16_t h)
{
	int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
	double v;
	if (e == 0)
		v = ldexp(m, -24);
	else if (e == 31)
		v = m ? NAN : INFINITY;
	else
		v = ldexp(1024 + m, e - 25);
	return s ? -v : v;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd32(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 16);
}

static void test_names_and_sizes(void **state)
{
	for (int i = 0; i < CLOQ_DT_COUNT; i++) {
		const char *n = cloq_dtype_name((enum cloq_dtype)i);
		assert_int_equal(cloq_dtype_from_name(n), i);
		size_t sz = cloq_dtype_size((enum cloq_dtype)i);
		assert_true(sz == 1 || sz == 2 || sz == 4 || sz == 8);
	}
	assert_string_equal(cloq_dtype_name(CLOQ_DT_BF16), "BF16");
	assert_string_equal(cloq_dtype_name(CLOQ_DT_F32), "F32");
	assert_int_equal(cloq_dtype_size(CLOQ_DT_F16), 2);
	assert_int_equal(cloq_dtype_size(CLOQ_DT_I64), 8);
	assert_int_equal(cloq_dtype_size(CLOQ_DT_BOOL), 1);
	assert_int_equal(cloq_dtype_from_name("f32"), CLOQ_DT_INVALID);
	assert_int_equal(cloq_dtype_from_name("Q4_0"), CLOQ_DT_INVALID);
	assert_string_equal(cloq_dtype_name(CLOQ_DT_INVALID), "?");
	assert_int_equal(cloq_dtype_size(CLOQ_DT_INVALID), 0);
}

static void test_f16_known_values(void **state)
{
	assert_int_equal(cloq_f32_to_f16_ref(1.0f), 0x3c00);
	assert_int_equal(cloq_f32_to_f16_ref(-2.0f), 0xc000);
	assert_int_equal(cloq_f32_to_f16_ref(65504.0f), 0x7bff);
	assert_int_equal(cloq_f32_to_f16_ref(65519.99f), 0x7bff);
	assert_int_equal(cloq_f32_to_f16_ref(65520.0f), 0x7c00); /* tie to even = Inf */
	assert_int_equal(cloq_f32_to_f16_ref(1e10f), 0x7c00);
	assert_int_equal(cloq_f32_to_f16_ref(-INFINITY), 0xfc00);
	assert_int_equal(cloq_f32_to_f16_ref(0x1p-24f), 0x0001);
	assert_int_equal(cloq_f32_to_f16_ref(0x1p-25f), 0x0000);       /* tie to even = 0 */
	assert_int_equal(cloq_f32_to_f16_ref(0x1.8p-25f), 0x0001);
	assert_int_equal(cloq_f32_to_f16_ref(0x1.8p-24f), 0x0002);     /* 1.5 ulp: tie to even 2 */
	assert_int_equal(cloq_f32_to_f16_ref(0x1p-14f), 0x0400);
	assert_int_equal(cloq_f32_to_f16_ref(0x1.ff8p-15f), 0x03ff);   /* largest subnormal */
	assert_int_equal(cloq_f32_to_f16_ref(0x1.ffcp-15f), 0x0400);   /* tie: up into normal */
	assert_int_equal(cloq_f32_to_f16_ref(-0.0f), 0x8000);
	assert_int_equal(cloq_f32_to_f16_ref(1e-10f), 0x0000);
	assert_int_equal(cloq_f32_to_f16_ref(u2f(0x00000001)), 0x0000); /* fp32 subnormal */
	assert_int_equal(cloq_f32_to_f16_ref(1.0009765625f), 0x3c01);
	assert_int_equal(cloq_f32_to_f16_ref(1.00048828125f), 0x3c00);  /* tie to even (down) */
	assert_int_equal(cloq_f32_to_f16_ref(1.00146484375f), 0x3c02);  /* tie to even (up) */
	uint16_t n = cloq_f32_to_f16_ref(NAN);
	assert_true((n & 0x7c00) == 0x7c00 && (n & 0x3ff) != 0);
	/* a NaN whose payload lies only in the low 13 bits must not become Inf */
	n = cloq_f32_to_f16_ref(u2f(0x7f800001));
	assert_true((n & 0x7c00) == 0x7c00 && (n & 0x3ff) != 0);
	n = cloq_f32_to_f16_ref(u2f(0xff800001));
	assert_true((n & 0x8000) && (n & 0x3ff) != 0);
	assert_true(cloq_f16_to_f32_ref(0x3555) == (float)half_value(0x3555));
	assert_true(cloq_f16_to_f32_ref(0x0001) == 0x1p-24f);
}

/* Every one of the 65536 halves decodes to the IEEE value and encodes back to itself. */
static void test_f16_exhaustive_round_trip(void **state)
{
	uint16_t *all = malloc(65536 * 2), *back = malloc(65536 * 2);
	float *fast = malloc(65536 * 4);
	for (uint32_t h = 0; h < 65536; h++)
		all[h] = (uint16_t)h;
	cloq_f16_to_f32(all, fast, 65536);
	for (uint32_t h = 0; h < 65536; h++) {
		float f = cloq_f16_to_f32_ref((uint16_t)h);
		double want = half_value((uint16_t)h);
		/* the array path (F16C when present) is bit-identical to the reference */
		assert_int_equal(f2u(fast[h]), f2u(f));
		if (isnan(want)) {
			assert_true(isnan(f));
			assert_int_equal(f2u(f) >> 31, h >> 15);
			uint16_t b = cloq_f32_to_f16_ref(f);
			assert_true((b & 0x7c00) == 0x7c00 && (b & 0x3ff) != 0 && (b >> 15) == (h >> 15));
			continue;
		}
		assert_true((double)f == want);
		assert_int_equal(f2u(f) >> 31, h >> 15); /* sign of zero kept */
		assert_int_equal(cloq_f32_to_f16_ref(f), h);
	}
	cloq_f32_to_f16(fast, back, 65536);
	for (uint32_t h = 0; h < 65536; h++)
		assert_int_equal(back[h], cloq_f32_to_f16_ref(fast[h]));
	free(all);
	free(back);
	free(fast);
}

/* Between every two adjacent finite halves (and between 65504 and the Inf boundary) the midpoint
 * goes to the even one and the floats just either side of it go to the nearer one. */
static void test_f16_rounding_boundaries(void **state)
{
	enum { N = 3 * 2 * 0x7c00 };
	float *in = malloc(N * sizeof(float));
	uint16_t *want = malloc(N * 2), *got = malloc(N * 2);
	size_t k = 0;
	for (uint32_t h = 0; h < 0x7c00; h++) {
		double lo = half_value((uint16_t)h);
		double hi = h + 1 < 0x7c00 ? half_value((uint16_t)(h + 1)) : 65536.0; /* Inf boundary */
		float mid = (float)((lo + hi) / 2);
		assert_true((double)mid == (lo + hi) / 2); /* exact in fp32 */
		uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
		for (int s = 0; s < 2; s++) {
			uint16_t sg = s ? 0x8000 : 0;
			float m = s ? -mid : mid;
			in[k] = m;
			want[k++] = sg | even;
			in[k] = nextafterf(m, 0.0f);
			want[k++] = (uint16_t)(sg | h);
			in[k] = nextafterf(m, s ? -INFINITY : INFINITY);
			want[k++] = (uint16_t)(sg | (h + 1));
		}
	}
	assert_int_equal(k, N);
	for (size_t i = 0; i < k; i++)
		assert_int_equal(cloq_f32_to_f16_ref(in[i]), want[i]);
	cloq_f32_to_f16(in, got, k);
	assert_memory_equal(got, want, k * 2);
	free(in);
	free(want);
	free(got);
}

/* Random fp32 bit patterns: reference == array path == the compiler's _Float16 conversion. */
static void test_f16_random_vs_compiler(void **state)
{
	enum { N = 1 << 20 };
	float *in = malloc(N * sizeof(float));
	uint16_t *got = malloc(N * 2);
	for (size_t i = 0; i < N; i++) {
		uint32_t u = rnd32();
		if (i & 1) /* half of them in the fp16 range, where the interesting cases are */
			u = (u & 0x80000000u) | (0x33000000u + (u % 0x14800000u));
		in[i] = u2f(u);
	}
	cloq_f32_to_f16(in, got, N);
	for (size_t i = 0; i < N; i++) {
		uint16_t r = cloq_f32_to_f16_ref(in[i]);
		assert_int_equal(got[i], r);
#ifdef __FLT16_MAX__
		if (!isnan(in[i])) {
			_Float16 c = (_Float16)in[i];
			uint16_t cb;
			memcpy(&cb, &c, 2);
			assert_int_equal(cb, r);
		}
#endif
	}
	free(in);
	free(got);
}

static void test_bf16(void **state)
{
	assert_int_equal(cloq_f32_to_bf16_ref(1.0f), 0x3f80);
	assert_int_equal(cloq_f32_to_bf16_ref(1.00390625f), 0x3f80); /* tie, to even (down) */
	assert_int_equal(cloq_f32_to_bf16_ref(1.01171875f), 0x3f82); /* tie, to even (up) */
	assert_int_equal(cloq_f32_to_bf16_ref(nextafterf(1.00390625f, 2.0f)), 0x3f81);  /* just above the tie */
	assert_int_equal(cloq_f32_to_bf16_ref(u2f(0x7f7fffff)), 0x7f80); /* FLT_MAX rounds to Inf */
	assert_int_equal(cloq_f32_to_bf16_ref(-INFINITY), 0xff80);
	assert_int_equal(cloq_f32_to_bf16_ref(u2f(0x00008000)), 0x0000); /* subnormal tie to even */
	assert_int_equal(cloq_f32_to_bf16_ref(u2f(0x00018000)), 0x0002);
	uint16_t n = cloq_f32_to_bf16_ref(u2f(0x7f800001)); /* payload only in low bits */
	assert_true((n & 0x7f80) == 0x7f80 && (n & 0x7f) != 0);
	/* exhaustive: every bf16 decodes to its top-16-bit float and encodes back */
	uint16_t *all = malloc(65536 * 2), *back = malloc(65536 * 2);
	float *f = malloc(65536 * 4);
	for (uint32_t h = 0; h < 65536; h++)
		all[h] = (uint16_t)h;
	cloq_bf16_to_f32(all, f, 65536);
	cloq_f32_to_bf16(f, back, 65536);
	for (uint32_t h = 0; h < 65536; h++) {
		assert_int_equal(f2u(f[h]), h << 16);
		assert_int_equal(f2u(cloq_bf16_to_f32_ref((uint16_t)h)), h << 16);
		if (isnan(f[h]))
			assert_true(isnan(cloq_bf16_to_f32_ref(back[h])));
		else
			assert_int_equal(back[h], h);
	}
	/* random floats: result is the nearer of the two neighbours (ties even), by double arithmetic */
	for (int i = 0; i < 200000; i++) {
		float x = u2f(rnd32() % 0x7f000000u); /* hi stays finite */
		uint32_t lo = f2u(x) & 0xffff0000u, hi = lo + 0x10000u;
		double dl = (double)x - u2f(lo), dh = (double)u2f(hi) - (double)x;
		uint16_t want = (uint16_t)((dl < dh || (dl == dh && !((lo >> 16) & 1))) ? lo >> 16 : hi >> 16);
		assert_int_equal(cloq_f32_to_bf16_ref(x), want);
	}
	free(all);
	free(back);
	free(f);
}

static void test_generic_dispatch(void **state)
{
	float src[5] = { 1.5f, -2.25f, 0.0f, 1e-3f, 300.0f }, dst[5];
	uint16_t h[5];
	assert_int_equal(cloq_dtype_from_f32(CLOQ_DT_F16, src, h, 5), 0);
	assert_int_equal(cloq_dtype_to_f32(CLOQ_DT_F16, h, dst, 5), 0);
	for (int i = 0; i < 5; i++)
		assert_true(fabsf(dst[i] - src[i]) <= fabsf(src[i]) * 0x1p-11f);
	assert_int_equal(cloq_dtype_from_f32(CLOQ_DT_BF16, src, h, 5), 0);
	assert_int_equal(cloq_dtype_to_f32(CLOQ_DT_BF16, h, dst, 5), 0);
	for (int i = 0; i < 5; i++)
		assert_true(fabsf(dst[i] - src[i]) <= fabsf(src[i]) * 0x1p-8f);
	assert_int_equal(cloq_dtype_to_f32(CLOQ_DT_F32, src, dst, 5), 0);
	assert_memory_equal(src, dst, sizeof src);
	assert_int_equal(cloq_dtype_to_f32(CLOQ_DT_I32, src, dst, 5), -1);
	assert_int_equal(cloq_dtype_from_f32(CLOQ_DT_F64, src, dst, 5), -1);
	assert_int_equal(cloq_dtype_is_float(CLOQ_DT_BF16), 1);
	assert_int_equal(cloq_dtype_is_float(CLOQ_DT_F64), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names_and_sizes),
		cmocka_unit_test(test_f16_known_values),
		cmocka_unit_test(test_f16_exhaustive_round_trip),
		cmocka_unit_test(test_f16_rounding_boundaries),
		cmocka_unit_test(test_f16_random_vs_compiler),
		cmocka_unit_test(test_bf16),
		cmocka_unit_test(test_generic_dispatch),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
