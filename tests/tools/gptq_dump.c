/*
 * gptq_dump - run quant/'s GPTQ on raw files and write its codes, scales and zero points, for
 * comparison with tests/tools/ref_gptq.py (tests/e2e/gptq_reference.sh).
 *
 *   gptq_dump W.f32 H.f64 ROWS COLS BITS GS OUTPREFIX [options]
 *     --autogptq-groups   AutoGPTQ's group parameters (cloq_quant_params.autogptq_groups = 1)
 *     --fp16-scales 0|1   (default 1, cloq's default)
 *     --damp X            (default 0.01)
 *     --block N           (default 128)
 *     --ref               the plain float64 reference (cloq_quant_gptq_ref) instead of the fast path
 *   writes OUTPREFIX.q.u8 (ROWS x COLS), OUTPREFIX.scale.f32, OUTPREFIX.zero.i32 (ROWS x ngroups)
 *   and OUTPREFIX.deq.f32 (ROWS x COLS); W raw little-endian float32 row-major, H float64.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_quant.h"
#include "raw_io.h"

int main(int argc, char **argv)
{
	if (argc < 8) {
		fprintf(stderr, "usage: gptq_dump W.f32 H.f64 ROWS COLS BITS GS OUTPREFIX "
				"[--autogptq-groups] [--fp16-scales 0|1] [--damp X] [--block N] [--ref]\n");
		return 1;
	}
	int rows = atoi(argv[3]), cols = atoi(argv[4]), use_ref = 0;
	cloq_quant_params p = cloq_quant_default_params();
	p.bits = atoi(argv[5]);
	p.group_size = atoi(argv[6]);
	for (int i = 8; i < argc; i++) {
		if (!strcmp(argv[i], "--autogptq-groups"))
			p.autogptq_groups = 1;
		else if (!strcmp(argv[i], "--ref"))
			use_ref = 1;
		else if (!strcmp(argv[i], "--fp16-scales") && i + 1 < argc)
			p.fp16_scales = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--damp") && i + 1 < argc)
			p.damp = atof(argv[++i]);
		else if (!strcmp(argv[i], "--block") && i + 1 < argc)
			p.block_size = atoi(argv[++i]);
		else {
			fprintf(stderr, "gptq_dump: unknown option %s\n", argv[i]);
			return 1;
		}
	}
	if (rows < 1 || cols < 1) {
		fprintf(stderr, "gptq_dump: bad shape\n");
		return 1;
	}
	size_t rc_ = (size_t)rows * cols;
	float *W = raw_slurp("gptq_dump", argv[1], rc_ * sizeof(float));
	double *H = raw_slurp("gptq_dump", argv[2], (size_t)cols * cols * sizeof(double));
	cloq_qtensor q;
	memset(&q, 0, sizeof q);
	cloq_err err;
	memset(&err, 0, sizeof err);
	int rc = use_ref ? cloq_quant_gptq_ref(W, H, rows, cols, &p, &q, NULL, &err)
			 : cloq_quant_gptq_ex(W, H, rows, cols, &p, &q, NULL, &err);
	if (rc != CLOQ_OK) {
		fprintf(stderr, "gptq_dump: %s\n", err.msg);
		return 2;
	}
	float *deq = malloc(rc_ * sizeof(float));
	if (!deq)
		return 3;
	cloq_quant_dequant(&q, deq);
	size_t ns = (size_t)rows * q.ngroups;
	raw_spit("gptq_dump", argv[7], ".q.u8", q.q, rc_);
	raw_spit("gptq_dump", argv[7], ".scale.f32", q.scale, ns * sizeof(float));
	raw_spit("gptq_dump", argv[7], ".zero.i32", q.zero, ns * sizeof(int32_t));
	raw_spit("gptq_dump", argv[7], ".deq.f32", deq, rc_ * sizeof(float));
	cloq_qtensor_free(&q);
	free(deq);
	free(W);
	free(H);
	return 0;
}
