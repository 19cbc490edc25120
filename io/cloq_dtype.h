/*
 * cloq_dtype.h - element types of tensors on disk, and exact conversions between fp32 and the
 * two 16-bit float formats.
 *
 * The names are the safetensors dtype strings ("F32", "BF16", ...). Sizes are in bytes per element.
 * All multi-byte values on disk are little-endian; cloq only runs on little-endian hosts.
 *
 * Conversions:
 *  - fp16 (IEEE 754 binary16: 1 sign, 5 exponent, 10 mantissa bits) <-> fp32,
 *  - bf16 (the top 16 bits of a binary32)                             <-> fp32,
 * fp32 -> 16 bit rounds to nearest, ties to even; overflow gives +-Inf; subnormal halves are
 * produced and read exactly; NaN stays NaN (quiet, sign kept, payload truncated but never turned
 * into Inf). 16 bit -> fp32 is exact. The *_ref functions are the scalar reference (one value at
 * a time, no intrinsics); the array functions may use F16C when the CPU has it and give
 * bit-identical results (tests/test_dtype.c checks all 65536 halves and rounding boundaries).
 */
#ifndef CLOQ_DTYPE_H
#define CLOQ_DTYPE_H

#include <stddef.h>
#include <stdint.h>

enum cloq_dtype {
	CLOQ_DT_F32 = 0,
	CLOQ_DT_F16,
	CLOQ_DT_BF16,
	CLOQ_DT_F64,
	CLOQ_DT_I64,
	CLOQ_DT_I32,
	CLOQ_DT_I16,
	CLOQ_DT_I8,
	CLOQ_DT_U8,
	CLOQ_DT_BOOL,
	CLOQ_DT_U16,
	CLOQ_DT_U32,
	CLOQ_DT_U64,
	CLOQ_DT_F8_E4M3,
	CLOQ_DT_F8_E5M2,
	CLOQ_DT_COUNT,
	CLOQ_DT_INVALID = -1,
};

/* Safetensors name of a dtype ("F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8",
 * "BOOL", "U16", "U32", "U64", "F8_E4M3", "F8_E5M2"); "?" for an invalid value. */
const char *cloq_dtype_name(enum cloq_dtype dt);
/* Inverse of cloq_dtype_name (exact, case-sensitive); CLOQ_DT_INVALID when unknown. */
enum cloq_dtype cloq_dtype_from_name(const char *name);
/* Bytes per element (1, 2, 4 or 8); 0 for an invalid value. */
size_t cloq_dtype_size(enum cloq_dtype dt);
/* 1 for F32, F16 and BF16: the dtypes cloq reads as weights (converted to fp32). */
int cloq_dtype_is_float(enum cloq_dtype dt);

/* ---- scalar reference conversions (bit patterns in uint16_t) -------------------------------- */
float cloq_f16_to_f32_ref(uint16_t h);
uint16_t cloq_f32_to_f16_ref(float f);
float cloq_bf16_to_f32_ref(uint16_t h);
uint16_t cloq_f32_to_bf16_ref(float f);

/* ---- array conversions, n elements; src and dst must not overlap ---------------------------- */
void cloq_f16_to_f32(const uint16_t *src, float *dst, size_t n);
void cloq_f32_to_f16(const float *src, uint16_t *dst, size_t n);
void cloq_bf16_to_f32(const uint16_t *src, float *dst, size_t n);
void cloq_f32_to_bf16(const float *src, uint16_t *dst, size_t n);

/* Convert n elements of F32, F16 or BF16 (raw little-endian bytes at src) to fp32 in dst.
 * dt == CLOQ_DT_F32 is a copy (memmove-safe). Returns 0, or -1 when dt is not one of these three. */
int cloq_dtype_to_f32(enum cloq_dtype dt, const void *src, float *dst, size_t n);
/* Convert n fp32 values to dt (F32, F16 or BF16) at dst. Returns 0 or -1 as above. */
int cloq_dtype_from_f32(enum cloq_dtype dt, const float *src, void *dst, size_t n);

#endif /* CLOQ_DTYPE_H */
