/*
 * cloq_quant_pack.c - AutoGPTQ QuantLinear packing (qweight, qzeros, scales, g_idx), v1 and v2.
 *
 * Packing follows AutoGPTQ's pack() loop literally (including the 3-bit word-crossing split);
 * unpacking reads the equivalent little-endian bit stream (value j at bit bits*j), so a round trip
 * also checks that the two descriptions agree.
 */
#include "cloq_quant_internal.h"

#include <math.h>
#include <string.h>

#include "cloq_sys.h"

int cloq_quant_gptq_packable(int rows, int cols, int bits)
{
	if (rows < 1 || cols < 1 || !(bits == 2 || bits == 3 || bits == 4 || bits == 8))
		return 0;
	return ((long long)cols * bits) % 32 == 0 && ((long long)rows * bits) % 32 == 0;
}

int cloq_quant_needs_v2(const cloq_qtensor *q)
{
	size_t n = (size_t)q->rows * (size_t)q->ngroups;
	for (size_t i = 0; i < n; i++)
		if (q->zero[i] == 0)
			return 1;
	return 0;
}

/* n values v[0..n) (n a multiple of 32 / bits, or of 32 for 3 bits) into words out[k * os]. */
static void pack_line(int bits, int n, const uint32_t *v, int32_t *out, size_t os)
{
	size_t row = 0;
	int i = 0;
	if (bits != 3) {
		int per = 32 / bits;
		while (i < n) {
			uint32_t w = 0;
			for (int j = 0; j < per; j++)
				w |= v[i + j] << (bits * j);
			out[row++ * os] = (int32_t)w;
			i += per;
		}
		return;
	}
	while (i < n) { /* AutoGPTQ: 10 values, 2 bits of the 11th | 1 bit, 10, 1 bit | 2 bits, 10 */
		uint32_t a = 0, b = 0, c = 0;
		for (int j = 0; j < 10; j++)
			a |= v[i + j] << (3 * j);
		i += 10;
		a |= v[i] << 30; /* the carried bits: unsigned shifts drop the top one */
		b |= (v[i] >> 2) & 1u;
		i++;
		for (int j = 0; j < 10; j++)
			b |= v[i + j] << (3 * j + 1);
		i += 10;
		b |= v[i] << 31;
		c |= (v[i] >> 1) & 3u;
		i++;
		for (int j = 0; j < 10; j++)
			c |= v[i + j] << (3 * j + 2);
		i += 10;
		out[row++ * os] = (int32_t)a;
		out[row++ * os] = (int32_t)b;
		out[row++ * os] = (int32_t)c;
	}
}

static uint32_t get_val(const int32_t *words, size_t os, int bits, size_t j)
{
	size_t bit = (size_t)bits * j, w = bit / 32, off = bit % 32;
	uint64_t x = (uint32_t)words[w * os];
	if (off + (size_t)bits > 32)
		x |= (uint64_t)(uint32_t)words[(w + 1) * os] << 32;
	return (uint32_t)(x >> off) & ((1u << bits) - 1u);
}

int cloq_quant_pack_gptq(const cloq_qtensor *q, int32_t *qweight, int32_t *qzeros,
			 uint16_t *scales_f16, int32_t *g_idx, cloq_err *err)
{
	return cloq_quant_pack_gptq_fmt(q, CLOQ_GPTQ_V1, qweight, qzeros, scales_f16, g_idx, err);
}

int cloq_quant_pack_gptq_fmt(const cloq_qtensor *q, int format, int32_t *qweight, int32_t *qzeros,
			     uint16_t *scales_f16, int32_t *g_idx, cloq_err *err)
{
	int rc = CLOQ_OK;
	uint32_t *line = NULL;
	CLOQ_FAIL_IF(!q || !q->q, err, CLOQ_EINPUT, "pack: no tensor");
	CLOQ_FAIL_IF(format != CLOQ_GPTQ_V1 && format != CLOQ_GPTQ_V2, err, CLOQ_EINPUT,
		     "pack: unknown format %d", format);
	int rows = q->rows, cols = q->cols, bits = q->bits, ng = q->ngroups;
	CLOQ_FAIL_IF(!cloq_quant_gptq_packable(rows, cols, bits), err, CLOQ_EINPUT,
		     "pack: (%d out, %d in) at %d bits cannot be packed (in*bits and out*bits must "
		     "be multiples of 32, bits 2/3/4/8)", rows, cols, bits);
	uint32_t maxq = (1u << bits) - 1u;
	int zoff = format == CLOQ_GPTQ_V1 ? 1 : 0;
	for (int r = 0; r < rows; r++)
		for (int g = 0; g < ng; g++) {
			int32_t z = q->zero[(size_t)r * ng + g];
			CLOQ_FAIL_IF(z < zoff || (uint32_t)z > maxq, err, CLOQ_EINPUT,
				     "pack: row %d group %d: zero point %d %s", r, g, (int)z,
				     z == 0 ? "needs GPTQ v2 (v1 stores zero - 1)" : "out of range");
			float s = q->scale[(size_t)r * ng + g];
			uint16_t h = cloq_quant_f32_to_f16(s);
			float back = cloq_quant_f16_to_f32(h);
			CLOQ_FAIL_IF(!(back > 0.0f) || isinf(back), err, CLOQ_EINPUT,
				     "pack: row %d group %d: scale %g is not a positive finite fp16",
				     r, g, (double)s);
			scales_f16[(size_t)g * rows + r] = h;
		}
	for (int j = 0; j < cols; j++) {
		CLOQ_FAIL_IF(q->g_idx[j] < 0 || q->g_idx[j] >= ng, err, CLOQ_EINPUT,
			     "pack: g_idx[%d] = %d outside [0, %d)", j, (int)q->g_idx[j], ng);
		g_idx[j] = q->g_idx[j];
	}
	line = cloq_malloc((size_t)(cols > rows ? cols : rows) * sizeof *line);
	CLOQ_FAIL_IF(!line, err, CLOQ_EIO, "pack: out of memory");
	for (int r = 0; r < rows; r++) { /* qweight (cols*bits/32, rows): one output column each */
		const uint8_t *src = q->q + (size_t)r * cols;
		for (int j = 0; j < cols; j++) {
			CLOQ_FAIL_IF(src[j] > maxq, err, CLOQ_EINPUT,
				     "pack: code %d at (%d, %d) exceeds %u", src[j], r, j, maxq);
			line[j] = src[j];
		}
		pack_line(bits, cols, line, qweight + r, (size_t)rows);
	}
	size_t zw = (size_t)rows * bits / 32;
	for (int g = 0; g < ng; g++) { /* qzeros (ng, rows*bits/32) */
		for (int r = 0; r < rows; r++)
			line[r] = (uint32_t)(q->zero[(size_t)r * ng + g] - zoff);
		pack_line(bits, rows, line, qzeros + (size_t)g * zw, 1);
	}
fail:
	cloq_free(line);
	return rc;
}

int cloq_quant_unpack_gptq(const int32_t *qweight, const int32_t *qzeros,
			   const uint16_t *scales_f16, const int32_t *g_idx, int rows, int cols,
			   int bits, int group_size, int format, cloq_qtensor *out, cloq_err *err)
{
	int rc = CLOQ_OK;
	memset(out, 0, sizeof *out);
	CLOQ_FAIL_IF(format != CLOQ_GPTQ_V1 && format != CLOQ_GPTQ_V2, err, CLOQ_EINPUT,
		     "unpack: unknown format %d", format);
	CLOQ_FAIL_IF(!cloq_quant_gptq_packable(rows, cols, bits), err, CLOQ_EINPUT,
		     "unpack: (%d out, %d in) at %d bits is not a packed GPTQ shape", rows, cols,
		     bits);
	CLOQ_TRY(cloq_qtensor_alloc(out, rows, cols, bits, group_size, err));
	int ng = out->ngroups;
	uint32_t maxq = (1u << bits) - 1u;
	int zoff = format == CLOQ_GPTQ_V1 ? 1 : 0;
	size_t zw = (size_t)rows * bits / 32;
	for (int j = 0; j < cols; j++) {
		CLOQ_FAIL_IF(g_idx[j] < 0 || g_idx[j] >= ng, err, CLOQ_EINPUT,
			     "unpack: g_idx[%d] = %d outside [0, %d)", j, (int)g_idx[j], ng);
		out->g_idx[j] = g_idx[j];
	}
	for (int g = 0; g < ng; g++)
		for (int r = 0; r < rows; r++) {
			uint32_t z = get_val(qzeros + (size_t)g * zw, 1, bits, (size_t)r) + (uint32_t)zoff;
			CLOQ_FAIL_IF(z > maxq, err, CLOQ_EINPUT,
				     "unpack: qzeros group %d column %d decodes to zero point %u > %u "
				     "(a v1 zero of 0 that underflowed?)", g, r, z, maxq);
			float s = cloq_quant_f16_to_f32(scales_f16[(size_t)g * rows + r]);
			CLOQ_FAIL_IF(!(s > 0.0f) || isinf(s), err, CLOQ_EINPUT,
				     "unpack: scales (%d, %d) = %g is not positive and finite", g, r,
				     (double)s);
			out->zero[(size_t)r * ng + g] = (int32_t)z;
			out->scale[(size_t)r * ng + g] = s;
		}
	for (int r = 0; r < rows; r++)
		for (int j = 0; j < cols; j++)
			out->q[(size_t)r * cols + j] =
				(uint8_t)get_val(qweight + r, (size_t)rows, bits, (size_t)j);
	return CLOQ_OK;
fail:
	cloq_qtensor_free(out);
	return rc;
}
