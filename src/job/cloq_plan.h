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
#include "cloq_llama.h"

typedef struct cloq_plan {
	int64_t peak_bytes;        /* predicted peak resident memory */
	int64_t weights_bytes;     /* one layer fp32, original + processed copies */
	int64_t solver_bytes;      /* largest H + factor + GPTQ workspace + residuals */
	int64_t forward_bytes;     /* block workspace + window buffers */
	int64_t scratch_disk;      /* activation caches on disk (upper bound, uncompressed) */
	int64_t output_bytes;      /* the job's shards (zstd): codes at about (bits + 0.4) / 8 bytes a
	                            * weight, LoRA factors fp32, scales and zeros at half, the base
	                            * tensors as stored (within 3% on the bench jobs) */
	int64_t export_bytes;      /* `cloq export` with the job's default format (GPTQ, fp16 tensors,
	                            * fp32 adapter; nf4-bnb: the adapter alone; nf: dense fp16): exact
	                            * but for headers and the copied tokenizer files */
	int64_t stash_bytes;       /* the resumable passes' per-window states (attention output, h, and
	                            * the SwiGLU product where a layer is dense): what convert keeps in
	                            * RAM on top of peak_bytes when they fit (choose_stashes), else on
	                            * disk; 0 with --one-pass / --full-passes */
	int window_slots;          /* calibration windows forwarded at once, one a thread (1: one
	                            * window at a time, threaded GEMMs); counted in forward_bytes */
	char largest_item[96];     /* what dominates, for messages */
	double flops;              /* arithmetic of the whole conversion (forward passes, GPTQ,
	                            * factorisations, CLoQ solves), for time estimates */
	/* The time model (cloq_plan_seconds): work per stage, float64 flops counted twice (they run
	 * at about half the float32 rate). */
	double flops_forward;      /* statistics + propagation passes: the block's matmuls, attention */
	double flops_gram;         /* Gram matrices X^T X (float64): tokens x sum n^2, times 2 */
	double flops_quantize;     /* GPTQ: the H^-1 factors and the lazy-batch updates */
	double flops_solve;        /* CLoQ/LoftQ: the factor R, R dW^T, the error reports */
	double read_bytes;         /* the weights, read once */
	double cache_bytes;        /* activation cache and stashes, written and read (zstd) */
	double shard_bytes;        /* the shards, before compression */
	double windows;            /* window passes over all layers (their fixed costs) */
	int layers;
} cloq_plan;

/* Floats per token of one window slot's captured group inputs: all four groups side by side with
 * --one-pass (off[g]: group g's column offset; may be NULL), else the widest (offsets 0). */
size_t cloq_plan_capture_cols(const cloq_config *cfg, int one_pass, size_t off[CLOQ_GROUPS]);

/* Floats per token of the resumable passes' states: attention output and h, and the SwiGLU
 * product when some layer is dense (a sparse layer's experts do not stash it). */
int64_t cloq_plan_stash_cols(const cloq_config *cfg);

void cloq_plan_compute(const cloq_config *cfg, const cloq_convert_opts *o, int nsamples, int seqlen, cloq_plan *p);

/* This machine's single-precision GEMM rate (GFLOP/s) with the current thread count: the best of
 * five short 512 x 512 x 512 probes (about a third of a second in all), so that one probe slowed
 * by another process does not set the rate. */
double cloq_plan_measure_gflops(void);

/* Seconds a conversion with plan p takes at an sgemm rate of `gflops`, and its parts (may be
 * NULL): [0] forward + Gram, [1] GPTQ, [2] solve, [3] I/O, [4] fixed costs. The model's constants
 * (the share of the sgemm rate each stage reaches, I/O and per-window costs) were measured on the
 * bench jobs (docs/PERFORMANCE.md section 9). */
double cloq_plan_seconds(const cloq_plan *p, double gflops, double parts[5]);
/* The same with the machine's load: `load` >= 1 is how much slower the sgemm probe ran now than
 * the best ever recorded here (cloq_plan_peak_gflops); the I/O and fixed costs, which the
 * probe's rate does not scale, are stretched by its square root (they are partly serial). */
double cloq_plan_seconds_load(const cloq_plan *p, double gflops, double load, double parts[5]);
/* The best sgemm rate recorded on this machine for this thread count, in
 * $XDG_CACHE_HOME/cloq/sgemm-peak (else ~/.cache/cloq/sgemm-peak: lines "threads gflops date"),
 * updated when `now_gflops` beats it; `now_gflops` when there is no record and none can be kept.
 * `when` (may be NULL) gets the record's date ("now" for a new one). Never fails. */
double cloq_plan_peak_gflops(double now_gflops, int threads, char *when, size_t cap);

#endif
