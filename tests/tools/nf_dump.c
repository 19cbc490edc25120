/*
 * nf_dump - run quant/'s bitsandbytes NF4 quantizer on a raw weight file and write what it
 * computed, for comparison with tests/tools/ref_bnb_nf4.py (tests/e2e/nf4_bnb_reference.sh).
 *
 *   nf_dump W DTYPE ROWS COLS OUTPREFIX [--blocksize N] [--double-quant]
 *     W: raw little-endian ROWS x COLS values, DTYPE f32, bf16 or f16 (the weight as stored)
 *   writes OUTPREFIX.codes.u8 (one code per value), OUTPREFIX.deq.bin (the dequantized values in
 *   DTYPE), and OUTPREFIX.absmax.f32 (per block), or with --double-quant OUTPREFIX.qabsmax.u8,
 *   .absmax2.f32, .offset.f32 and .absmaxdq.f32 (the absmax rebuilt from them).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_dtype.h"
#include "cloq_quant.h"
#include "raw_io.h"

int main(int argc, char **argv)
{
	if (argc < 6) {
		fprintf(stderr, "usage: nf_dump W f32|bf16|f16 ROWS COLS OUTPREFIX [--blocksize N] [--double-quant]\n");
		return 1;
	}
	int rows = atoi(argv[3]), cols = atoi(argv[4]);
	enum cloq_dtype dt = !strcmp(argv[2], "f32") ? CLOQ_DT_F32 : !strcmp(argv[2], "bf16") ? CLOQ_DT_BF16
			     : !strcmp(argv[2], "f16") ? CLOQ_DT_F16 : CLOQ_DT_INVALID;
	cloq_nf_params p = {4, 64, 1, 0, dt};
	for (int i = 6; i < argc; i++) {
		if (!strcmp(argv[i], "--blocksize") && i + 1 < argc)
			p.block = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--double-quant"))
			p.double_quant = 1;
		else {
			fprintf(stderr, "nf_dump: unknown option %s\n", argv[i]);
			return 1;
		}
	}
	if (rows < 1 || cols < 1 || dt == CLOQ_DT_INVALID) {
		fprintf(stderr, "nf_dump: bad shape or dtype\n");
		return 1;
	}
	size_t n = (size_t)rows * cols, es = cloq_dtype_size(dt);
	void *raw = raw_slurp("nf_dump", argv[1], n * es);
	float *W = malloc(n * sizeof(float)), *deq = malloc(n * sizeof(float));
	void *deq_raw = malloc(n * es);
	if (!W || !deq || !deq_raw || cloq_dtype_to_f32(dt, raw, W, n) != 0)
		return 3;
	cloq_qtensor q;
	memset(&q, 0, sizeof q);
	cloq_err err;
	memset(&err, 0, sizeof err);
	if (cloq_quant_nf_codes(W, rows, cols, &p, &q, &err) != CLOQ_OK) {
		fprintf(stderr, "nf_dump: %s\n", err.msg);
		return 2;
	}
	cloq_quant_dequant(&q, deq);
	/* deq is already representable in dt: the conversion is exact */
	if (cloq_dtype_from_f32(dt, deq, deq_raw, n) != 0)
		return 3;
	raw_spit("nf_dump", argv[5], ".codes.u8", q.q, n);
	raw_spit("nf_dump", argv[5], ".deq.bin", deq_raw, n * es);
	if (p.double_quant) {
		raw_spit("nf_dump", argv[5], ".qabsmax.u8", q.qabsmax, q.nf_nblocks);
		raw_spit("nf_dump", argv[5], ".absmax2.f32", q.absmax2, (q.nf_nblocks + 255) / 256 * sizeof(float));
		raw_spit("nf_dump", argv[5], ".offset.f32", &q.nf_offset, sizeof(float));
		raw_spit("nf_dump", argv[5], ".absmaxdq.f32", q.absmax, q.nf_nblocks * sizeof(float));
	} else {
		raw_spit("nf_dump", argv[5], ".absmax.f32", q.absmax, q.nf_nblocks * sizeof(float));
	}
	cloq_qtensor_free(&q);
	free(W);
	free(deq);
	free(deq_raw);
	free(raw);
	return 0;
}
