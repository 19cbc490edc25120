/* cloq_dtype.c - dtype table and fp16/bf16 conversions (see cloq_dtype.h). */
#include "cloq_dtype.h"

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#include <stdatomic.h>
#define CLOQ_HAVE_X86 1
#endif

static const struct {
	const char *name;
	size_t size;
} dtype_table[CLOQ_DT_COUNT] = {
	[CLOQ_DT_F32] = { "F32", 4 },   [CLOQ_DT_F16] = { "F16", 2 },
	[CLOQ_DT_BF16] = { "BF16", 2 }, [CLOQ_DT_F64] = { "F64", 8 },
	[CLOQ_DT_I64] = { "I64", 8 },   [CLOQ_DT_I32] = { "I32", 4 },
	[CLOQ_DT_I16] = { "I16", 2 },   [CLOQ_DT_I8] = { "I8", 1 },
	[CLOQ_DT_U8] = { "U8", 1 },     [CLOQ_DT_BOOL] = { "BOOL", 1 },
	[CLOQ_DT_U16] = { "U16", 2 },   [CLOQ_DT_U32] = { "U32", 4 },
	[CLOQ_DT_U64] = { "U64", 8 },   [CLOQ_DT_F8_E4M3] = { "F8_E4M3", 1 },
	[CLOQ_DT_F8_E5M2] = { "F8_E5M2", 1 },
};

const char *cloq_dtype_name(enum cloq_dtype dt)
{
	if ((int)dt < 0 || dt >= CLOQ_DT_COUNT)
		return "?";
	return dtype_table[dt].name;
}

enum cloq_dtype cloq_dtype_from_name(const char *name)
{
	for (int i = 0; i < CLOQ_DT_COUNT; i++)
		if (strcmp(dtype_table[i].name, name) == 0)
			return (enum cloq_dtype)i;
	return CLOQ_DT_INVALID;
}

size_t cloq_dtype_size(enum cloq_dtype dt)
{
	if ((int)dt < 0 || dt >= CLOQ_DT_COUNT)
		return 0;
	return dtype_table[dt].size;
}

int cloq_dtype_is_float(enum cloq_dtype dt)
{
	return dt == CLOQ_DT_F32 || dt == CLOQ_DT_F16 || dt == CLOQ_DT_BF16;
}

/* ---- scalar reference ----------------------------------------------------------------------- */
static inline uint32_t f2u(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static inline float u2f(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

float cloq_f16_to_f32_ref(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
	if (exp == 0) {
		/* zero or subnormal: mant * 2^-24, exact in fp32 */
		float v = (float)mant * 0x1p-24f;
		return u2f(f2u(v) | sign);
	}
	if (exp == 31) /* Inf, or NaN made quiet (what F16C's vcvtph2ps does too) */
		return u2f(sign | 0x7f800000u | (mant << 13) | (mant ? 0x400000u : 0));
	return u2f(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t cloq_f32_to_f16_ref(float f)
{
	uint32_t u = f2u(f);
	uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
	uint32_t a = u & 0x7fffffffu;
	if (a >= 0x7f800000u) {
		if (a == 0x7f800000u)
			return sign | 0x7c00;
		/* NaN: keep the top payload bits, force the quiet bit so it can never read as Inf */
		return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff));
	}
	/* 65520 is the midpoint between 65504 (max half, odd mantissa) and 2^16: ties go to the even
	 * neighbour, which is Inf. */
	if (a >= 0x477ff000u)
		return sign | 0x7c00;
	if (a < 0x38800000u) { /* below the smallest normal half 2^-14: subnormal or zero */
		uint32_t e = a >> 23;
		if (e < 102) /* below 2^-25 = half the smallest subnormal: rounds to zero */
			return sign;
		uint32_t mant = (a & 0x7fffffu) | 0x800000u;
		uint32_t shift = 126 - e; /* value in units of 2^-24 is mant >> shift, 14 <= shift <= 24 */
		uint32_t r = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
		if (rem > half || (rem == half && (r & 1)))
			r++;
		return (uint16_t)(sign | r); /* r == 0x400 is the smallest normal: correct encoding */
	}
	uint32_t r = (a - 0x38000000u) >> 13, rem = a & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (r & 1)))
		r++; /* a carry into the exponent is the correct next binade */
	return (uint16_t)(sign | r);
}

float cloq_bf16_to_f32_ref(uint16_t h)
{
	return u2f((uint32_t)h << 16);
}

uint16_t cloq_f32_to_bf16_ref(float f)
{
	uint32_t u = f2u(f);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 0x40); /* quiet NaN; truncating could give Inf */
	u += 0x7fffu + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

/* ---- arrays --------------------------------------------------------------------------------- */
#ifdef CLOQ_HAVE_X86
__attribute__((target("avx,f16c"))) static void f16_to_f32_f16c(const uint16_t *src, float *dst,
								 size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		__m128i h = _mm_loadu_si128((const __m128i *)(src + i));
		_mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
	}
	for (; i < n; i++)
		dst[i] = cloq_f16_to_f32_ref(src[i]);
}

__attribute__((target("avx,f16c"))) static void f32_to_f16_f16c(const float *src, uint16_t *dst,
								 size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 f = _mm256_loadu_ps(src + i);
		_mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT));
	}
	for (; i < n; i++)
		dst[i] = cloq_f32_to_f16_ref(src[i]);
}

/* AVX + F16C usable: CPU flags and OS-enabled YMM state. cpuid traps to the hypervisor in VMs, so
 * the answer is cached; the cache is write-once and idempotent (racing writers store the same). */
static int have_f16c(void)
{
	static _Atomic int cached = -1;
	int v = atomic_load_explicit(&cached, memory_order_relaxed);
	if (v >= 0)
		return v;
	unsigned a, b, c, d;
	v = 0;
	if (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_OSXSAVE) && (c & bit_AVX) && (c & bit_F16C)) {
		unsigned lo, hi;
		__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
		v = (lo & 6) == 6; /* XMM and YMM state saved by the OS */
	}
	atomic_store_explicit(&cached, v, memory_order_relaxed);
	return v;
}
#endif

void cloq_f16_to_f32(const uint16_t *src, float *dst, size_t n)
{
#ifdef CLOQ_HAVE_X86
	if (have_f16c()) {
		f16_to_f32_f16c(src, dst, n);
		return;
	}
#endif
	for (size_t i = 0; i < n; i++)
		dst[i] = cloq_f16_to_f32_ref(src[i]);
}

void cloq_f32_to_f16(const float *src, uint16_t *dst, size_t n)
{
#ifdef CLOQ_HAVE_X86
	if (have_f16c()) {
		f32_to_f16_f16c(src, dst, n);
		return;
	}
#endif
	for (size_t i = 0; i < n; i++)
		dst[i] = cloq_f32_to_f16_ref(src[i]);
}

void cloq_bf16_to_f32(const uint16_t *src, float *dst, size_t n)
{
	/* A plain loop; gcc vectorises the shift. */
	for (size_t i = 0; i < n; i++) {
		uint32_t u = (uint32_t)src[i] << 16;
		memcpy(dst + i, &u, 4);
	}
}

void cloq_f32_to_bf16(const float *src, uint16_t *dst, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = cloq_f32_to_bf16_ref(src[i]);
}

int cloq_dtype_to_f32(enum cloq_dtype dt, const void *src, float *dst, size_t n)
{
	switch (dt) {
	case CLOQ_DT_F32:
		memmove(dst, src, n * sizeof(float));
		return 0;
	case CLOQ_DT_F16:
		cloq_f16_to_f32(src, dst, n);
		return 0;
	case CLOQ_DT_BF16:
		cloq_bf16_to_f32(src, dst, n);
		return 0;
	default:
		return -1;
	}
}

int cloq_dtype_from_f32(enum cloq_dtype dt, const float *src, void *dst, size_t n)
{
	switch (dt) {
	case CLOQ_DT_F32:
		memmove(dst, src, n * sizeof(float));
		return 0;
	case CLOQ_DT_F16:
		cloq_f32_to_f16(src, dst, n);
		return 0;
	case CLOQ_DT_BF16:
		cloq_f32_to_bf16(src, dst, n);
		return 0;
	default:
		return -1;
	}
}
