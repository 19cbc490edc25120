/*
 * cloq_plan.h - the memory planner shared by `cloq inspect` and `cloq convert --mem-budget`.
 *
 * Peak memory of a conversion is set by one layer, never by the depth: the layer's fp32 weights
 * and their processed copies, the largest Gram matrix with its factor and GPTQ's inverse, one
 * window's forward workspace and the cache frame buffers. Disk scratch is two activation caches
 * (the input of the current layer and of the next one).
 */
#ifndef CLOQ_PLAN_H
#define CLOQ_PLAN_H

#include <stdint.h>

#include "cloq_config.h"
#include "cloq_convert.h"

typedef struct cloq_plan {
	int64_t peak_bytes;        /* predicted peak resident memory */
	int64_t weights_bytes;     /* one layer fp32, original + processed copies */
	int64_t solver_bytes;      /* largest H + factor + GPTQ workspace + residuals */
	int64_t forward_bytes;     /* block workspace + window buffers */
	int64_t scratch_disk;      /* activation caches on disk (upper bound, uncompressed) */
	int64_t output_bytes;      /* shards, approx. (codes compress; LoRA factors fp32) */
	char largest_item[96];     /* what dominates, for messages */
	double flops;              /* arithmetic of the whole conversion (forward passes, GPTQ,
	                            * factorisations, CLoQ solves), for time estimates */
} cloq_plan;

void cloq_plan_compute(const cloq_config *cfg, const cloq_convert_opts *o, int nsamples, int seqlen, cloq_plan *p);

/* This machine's single-precision GEMM rate (GFLOP/s), measured in about a quarter second. */
double cloq_plan_measure_gflops(void);

#endif
