/*
 * cloq_quant.h - weight quantizers and GPTQ packing on in-memory matrices (no files).
 *
 * Conventions used by every function below:
 *  - A weight W is in torch layout: (rows, cols) = (out_features, in_features), float32, row-major.
 *  - A Gram matrix H is (cols, cols) float64 row-major, symmetric: H = X^T X summed over the
 *    calibration tokens, X (tokens, cols). No 1/N scaling is needed (GPTQ is invariant to it).
 *  - Groups run along the input dimension (cols): group g holds columns [g*gs, (g+1)*gs), the last
 *    group may be ragged (172 = 5 x 32 + 12). With act-order the groups run along the permuted
 *    column order and g_idx says which group each (original) column belongs to.
 *  - All functions are reentrant; nothing is global. Fallible ones return an enum cloq_status and
 *    fill `err` (may be NULL). Bad input (NaN/Inf, bad shapes or parameters) is CLOQ_EINPUT with a
 *    message naming the row/column or group; out of memory is CLOQ_EIO.
 *
 * Quantizer semantics are AutoGPTQ's (quantizer.py Quantizer.find_params/quantize and
 * gptq.py GPTQ.fasterquant), reproduced in float32 like torch does:
 *   asym:  xmin = min(min(w), 0), xmax = max(max(w), 0); if xmin == xmax (== 0): xmin = -1, xmax = 1
 *          scale = (xmax - xmin) / maxq, zero = round(-xmin / scale)     (maxq = 2^bits - 1)
 *   sym:   xmax = max(|xmin|, xmax); xmin = -xmax when xmin < 0 (an all-non-negative group keeps
 *          xmin = 0, AutoGPTQ's quirk); zero = (maxq + 1) / 2
 *   q = clamp(round(w / scale) + zero, 0, maxq),  deq = scale * (q - zero)
 * round() is round-half-to-even (torch.round). With fp16_scales the scale is rounded to the nearest
 * fp16 value (ties to even) BEFORE zero and q are computed, so that scale * (q - zero) evaluated
 * with the exported fp16 scale is exactly what cloq computed. A scale below the smallest fp16
 * subnormal (2^-24) is raised to it; one above 65504 is CLOQ_EINPUT (use fp16_scales = 0).
 * Guarantees: no scale is ever 0, NaN or Inf; an all-zero group dequantizes to exactly 0.
 *
 * v1_zeros (asym only): keep every zero point in [1, maxq], the range a GPTQ v1 checkpoint can
 * store (v1 packs zero - 1 as an unsigned bits-wide field and loaders add 1 back: AutoGPTQ's
 * QuantLinear.pack does `zeros -= 1` before packing, its forward `zeros + 1` after unpacking).
 * Only a group whose rule above gives zero 0 changes: that is a group with xmin > -scale / 2, i.e.
 * (nearly) all non-negative, and xmax > 0. With zero 1 the grid is scale * (q - 1), q in [0, maxq],
 * spanning [-scale, (maxq - 1) scale]; the finest such grid that still spans [xmin, xmax] has
 *          scale = xmax / (maxq - 1), zero = 1     (fp16-rounded as above)
 * (a larger zero only shrinks the positive side; xmin >= -scale / 2 is inside the span). Like the
 * unconstrained rule it keeps xmax exactly representable; the cost is a step maxq / (maxq - 1)
 * times coarser in those groups (x1.5 at 2 bits, x1.07 at 4 bits). Every other group, and every
 * symmetric group (zero (maxq + 1) / 2), is quantized exactly as without it.
 */
#ifndef CLOQ_QUANT_H
#define CLOQ_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "cloq_error.h"

/* ---- parameters ----------------------------------------------------------------------------- */
typedef struct cloq_quant_params {
	int bits;          /* 2..8 (packing: 2, 3, 4, 8) */
	int group_size;    /* >= 1; -1 (or >= cols) = one group per row ("per channel") */
	int sym;           /* 0 asymmetric (default), 1 symmetric */
	int act_order;     /* GPTQ: process columns by descending diag(H) */
	int static_groups; /* GPTQ + act_order: group params fixed up front on the original W */
	int block_size;    /* GPTQ lazy-batch block (default 128); a performance knob only */
	double damp;       /* GPTQ: damp * mean(diag H) added to diag H (default 0.01) */
	int fp16_scales;   /* round scales to fp16 before computing codes (default 1) */
	int v1_zeros;      /* asym: every zero point in [1, maxq] so GPTQ v1 can store it (default 0) */
	int autogptq_groups; /* GPTQ, no static groups: 1 = a group that starts inside a block takes
			      * its parameters from the weights as they were when the block started
			      * (AutoGPTQ's code: find_params on the global W, which misses the in-block
			      * updates), blocks of exactly block_size; 0 (default) = from the current,
			      * fully updated weights (see cloq_quant_gptq.c) */
} cloq_quant_params;

/* bits 4, group 64, asym, no act-order, no static groups, block 128, damp 0.01, fp16_scales 1,
 * v1_zeros 0 (AutoGPTQ's quantizer exactly). */
cloq_quant_params cloq_quant_default_params(void);

/* ---- quantized tensor ----------------------------------------------------------------------- */
typedef struct cloq_qtensor {
	int rows, cols;     /* (out, in) */
	int bits;
	int group_size;     /* effective group size (cols when per channel) */
	int ngroups;        /* ceil(cols / group_size) */
	uint8_t *q;         /* (rows, cols) row-major codes in [0, 2^bits - 1], original column order */
	float *scale;       /* (rows, ngroups) row-major, > 0 and finite */
	int32_t *zero;      /* (rows, ngroups) row-major, true zero points in [0, 2^bits - 1]
			     * ([1, 2^bits - 1] with v1_zeros) */
	int32_t *g_idx;     /* (cols) group of each input column, in [0, ngroups) */
	/* NormalFloat codebook tensors (nf_block > 0, made by cloq_quant_nf_codes): scale, zero and
	 * g_idx are NULL, ngroups 0, group_size 0; element k of the row-major flattened matrix
	 * dequantizes to round(nf_dtype, nf_code[q[k]] * absmax[k / nf_block]). */
	int nf_block;       /* values per absmax block of the flattened matrix */
	int nf_dtype;       /* enum cloq_dtype the dequantized value is rounded to: F32, BF16, F16 */
	int nf_bnb;         /* 1: bitsandbytes' semantics made it, 0: LoftQ's */
	size_t nf_nblocks;  /* ceil(rows * cols / nf_block) */
	float nf_code[16];  /* the 2^bits code values, ascending */
	float *absmax;      /* (nf_nblocks) the absmax each block dequantizes with (after double quant) */
	/* double quantization of the absmax (bitsandbytes compress_statistics), else NULL / 0: */
	uint8_t *qabsmax;   /* (nf_nblocks) 8-bit dynamic-map code of absmax_raw - nf_offset */
	float *absmax2;     /* (ceil(nf_nblocks / 256)) absmax of those differences per 256 blocks */
	float nf_offset;    /* float32 mean of the raw absmax values */
} cloq_qtensor;

/* Allocate the arrays of `t` for the given shape (contents zeroed). group_size <= 0 or >= cols
 * means one group. `t` must not own buffers already (they would leak). On failure `t` is zeroed.
 * CLOQ_EINPUT for bad shapes/bits, CLOQ_EIO when out of memory. */
int cloq_qtensor_alloc(cloq_qtensor *t, int rows, int cols, int bits, int group_size, cloq_err *err);
/* Free the arrays and zero the struct; NULL and already-freed are fine. */
void cloq_qtensor_free(cloq_qtensor *t);

/* ---- RTN ------------------------------------------------------------------------------------ */
/* Round-to-nearest, groups in natural column order (act_order is ignored). `out` is allocated
 * here (pass a zeroed struct; free with cloq_qtensor_free). NaN/Inf in W -> CLOQ_EINPUT naming row
 * and column. */
int cloq_quant_rtn(const float *W, int rows, int cols, const cloq_quant_params *p,
		   cloq_qtensor *out, cloq_err *err);

/* ---- GPTQ ----------------------------------------------------------------------------------- */
typedef struct cloq_quant_gptq_info {
	double damp_used;     /* relative damping finally used (fraction of mean diag H) */
	int damp_escalations; /* times the damping was raised x10 because the Cholesky failed */
	int dead_cols;        /* columns with diag H == 0: their weights zeroed, diag set to 1 */
	double loss;          /* GPTQ's own loss, sum (w - deq)^2 / Hinv_jj^2 / 2, normalised H */
	double t_factor_s;    /* wall seconds: checks + H^-1 factor (all attempts) */
	double t_quant_s;     /* wall seconds: the column loop with its lazy-batch GEMMs */
} cloq_quant_gptq_info;

/*
 * GPTQ (AutoGPTQ fasterquant): W (rows, cols) float32, H (cols, cols) float64 symmetric with
 * diag >= 0. Dead columns (diag H == 0) get diag 1 and their weights (hence codes' deq) zeroed.
 * Damping damp * mean(diag H); if the Cholesky fails it is raised x10 up to 4 times (recorded in
 * info) before CLOQ_EINPUT. Group parameters are computed when a group is entered, from that
 * group's current (error-updated) weights. act_order permutes columns by descending diag H (ties
 * keep index order); with static_groups the groups are computed first on the original W.
 * `out` is allocated here (pass a zeroed struct). `info` may be NULL.
 * Implementation: H^-1's upper Cholesky factor via one Cholesky of the reversed H and a
 * triangular inverse (LAPACK, float64); lazy-batch updates as float32 GEMMs; rows in parallel.
 * Cost: 2/3 cols^3 (factor, float64) + rows * cols^2 (GEMMs, float32) flops. Memory besides W,
 * H and out: 8 cols^2 bytes (a float64 copy of H, shrunk in place to the float32 factor) +
 * 4 rows cols (working W) + 4 rows block_size. Llama-2-7B down_proj (4096 x 11008): ~1.2 GB,
 * Llama-3-70B down_proj (8192 x 28672): ~7.5 GB.
 */
int cloq_quant_gptq(const float *W, const double *H, int rows, int cols, const cloq_quant_params *p,
		    cloq_qtensor *out, cloq_err *err);
int cloq_quant_gptq_ex(const float *W, const double *H, int rows, int cols,
		       const cloq_quant_params *p, cloq_qtensor *out, cloq_quant_gptq_info *info,
		       cloq_err *err);
/*
 * The H factor on its own, so that linears reading the same input (q/k/v, gate/up) pay the
 * O(cols^3) factorisation once: create it from H and the parameters (damp, act_order are taken
 * from `p` here), then run cloq_quant_gptq_hinv for each W (rows, cols) with parameters whose
 * act_order matches (bits, group_size, sym, static_groups, block_size, fp16_scales may differ).
 * Results are identical to cloq_quant_gptq_ex. The handle holds 4 cols^2 + 5 cols bytes; it is
 * read-only once made (several threads may share it); free(NULL) is fine.
 */
typedef struct cloq_quant_hinv cloq_quant_hinv;
int cloq_quant_hinv_create(const double *H, int cols, const cloq_quant_params *p,
			   cloq_quant_hinv **out, cloq_err *err);
void cloq_quant_hinv_free(cloq_quant_hinv *h);
int cloq_quant_gptq_hinv(const float *W, int rows, const cloq_quant_hinv *h,
			 const cloq_quant_params *p, cloq_qtensor *out, cloq_quant_gptq_info *info,
			 cloq_err *err);

/* Plain scalar float64 reference of the same algorithm (quant/cloq_quant_ref.c): no blocking,
 * column by column with the full update, H^-1 factor by dpotrf + dpotri + dpotrf as AutoGPTQ.
 * O(rows * cols^2): for tests. Same contract as cloq_quant_gptq_ex. */
int cloq_quant_gptq_ref(const float *W, const double *H, int rows, int cols,
			const cloq_quant_params *p, cloq_qtensor *out, cloq_quant_gptq_info *info,
			cloq_err *err);

/* ---- MagR: weight magnitude reduction before quantization ------------------------------------ */
/*
 * MagR (Zhang et al., NeurIPS 2024; quant/cloq_quant_magr.c): Wout = the W' minimising
 * 1/2 tr((W' - W) Hn (W' - W)^T) + alpha sum ||W' row (or group)||_inf, Hn = H / lambda_max(H),
 * by `iters` proximal gradient steps of size 1 from W' = W. The layer's outputs on the
 * calibration data stay close while each row's (group's) largest magnitude shrinks, so the
 * quantization grid gets finer. W, Wout (rows, cols) float32 (may not alias); H (cols, cols)
 * float64 symmetric PSD. An all-zero H leaves W as it is. Memory: 4 cols^2 + 4 rows cols bytes.
 */
typedef struct cloq_magr_params {
	double alpha;   /* l_inf weight: the paper's 1e-3 per row, 1e-4 per group */
	int iters;      /* the paper's 200 per row, 150 per group */
	int group_size; /* <= 0 or >= cols: one l_inf term per row; else per group of columns */
} cloq_magr_params;
typedef struct cloq_magr_info {
	double lambda_max; /* H's largest eigenvalue (power iteration) */
	int iters;         /* steps taken */
} cloq_magr_info;
int cloq_quant_magr(const float *W, const double *H, int rows, int cols, const cloq_magr_params *p, float *Wout,
		    cloq_magr_info *info, cloq_err *err);
/* The same in two steps, for linears sharing H (and MagR inside LoftQ / alternating CLoQ): Hn =
 * H / lambda_max(H) in float32 (allocated; NULL when H is all zero: MagR then leaves W as it is),
 * then the steps; `iters` (may be NULL) gets the steps taken. Same results as cloq_quant_magr. */
int cloq_quant_magr_hn(const double *H, int cols, float **Hn, double *lambda_max, cloq_err *err);
int cloq_quant_magr_with(const float *W, const float *Hn, int rows, int cols, const cloq_magr_params *p,
			 float *Wout, int *iters, cloq_err *err);

/* ---- dequantization and error ---------------------------------------------------------------- */
/* W (rows, cols) = scale[g] * (q - zero[g]), g = g_idx[col], in float32. */
void cloq_quant_dequant(const cloq_qtensor *q, float *W);
/* Calibrated error tr(E H E^T), E = W - Wdeq, both (rows, cols) float32, H (cols, cols) float64.
 * Computed in float64 with BLAS, rows in chunks. CLOQ_EIO when out of memory. */
int cloq_quant_hloss(const float *W, const float *Wdeq, const double *H, int rows, int cols,
		     double *out, cloq_err *err);

/* ---- NormalFloat (QLoRA / LoftQ) ------------------------------------------------------------ */
/* The 2^bits NF values (bits 2, 3, 4), ascending, in [-1, 1], built as LoftQ's
 * create_normal_map(offset 0.9677083, asymmetric) / bitsandbytes' NF4: normal quantiles of a
 * float32 linspace, rounded to float32, divided by the largest. NF4 equals QLoRA's table. */
int cloq_quant_nf_table(int bits, float *table, cloq_err *err);
/* Block-absmax NF fake quantization: the matrix is flattened row-major and cut into blocks of
 * `block` values (a ragged last block is its own block, as bitsandbytes; LoftQ would refuse);
 * each value becomes table[argmin |w / absmax - table|] * absmax (first index on ties, as
 * torch.argmin). An all-zero block stays exactly 0. Wdeq (rows, cols) may alias W. */
int cloq_quant_nf(const float *W, int rows, int cols, int bits, int block, float *Wdeq,
		  cloq_err *err);

/*
 * Codebook form of the same, for jobs and exports (`out` allocated here, pass a zeroed struct;
 * cloq_quant_dequant reads it). Two semantics:
 *  - LoftQ's NFQuantizer (bnb = 0): x = w / absmax, code = first argmin |x - table|, float32
 *    deq; an all-zero block takes the code of 0. bits 2..4, any block >= 1; out_dtype F32.
 *  - bitsandbytes' CUDA kernels (bnb = 1; kQuantizeBlockwise / kDequantizeBlockwise, NF4):
 *    absmax = max |w| of the block in float32 (a ragged last block is its own block),
 *    x = w * (1.0f / absmax) (a float32 reciprocal, then a product: the kernel's arithmetic;
 *    subnormals flushed to 0 as --use_fast_math does), code = the number of bitsandbytes'
 *    decision thresholds t_i < x (dQuantizeNF4's tree of strict '>': a value on a threshold
 *    takes the lower code; the t_i are its float32 constants, 4 of which are one ulp off the
 *    rounded float64 midpoints); an all-zero block has x = 0 * Inf = NaN, code 0, deq -0 (and
 *    with double quantization -absmax, the rebuilt absmax not being 0).
 *    deq = code value * absmax in float32, rounded to out_dtype (the dtype of the weight as
 *    bitsandbytes holds it: the checkpoint's BF16/F16, or F32). bits 4; block 32..4096, a power
 *    of 2 (bitsandbytes' list). The CUDA build uses --use_fast_math, so the GPU's reciprocal may
 *    differ from the IEEE one in the last bit: a value within ~1e-7 relative of a threshold may
 *    then take the neighbouring code on the GPU (docs/FORMAT.md section 3).
 *    double_quant (compress_statistics): offset = mean of the absmax values (float32, cloq takes
 *    the correctly rounded mean), the differences absmax - offset quantized blockwise (256 per
 *    block, same reciprocal rule) to bitsandbytes' signed 8-bit dynamic map by its kernel's
 *    binary search (dQuantize: pivots 127 +- 64, 32, ..., 1, then the nearer side by float32
 *    midpoint, a tie going to the pivot); the block absmax used for dequantization is then
 *    float32(float32(map[qabsmax] * absmax2) + offset).
 * NaN/Inf in W is CLOQ_EINPUT naming row and column.
 */
typedef struct cloq_nf_params {
	int bits;         /* 2..4 (bnb: 4) */
	int block;        /* values per absmax block of the flattened matrix (default 64) */
	int bnb;          /* 1 bitsandbytes' kernel semantics, 0 LoftQ's */
	int double_quant; /* bnb only: 8-bit absmax around its mean */
	int out_dtype;    /* enum cloq_dtype: CLOQ_DT_F32 (0), CLOQ_DT_BF16 or CLOQ_DT_F16 */
} cloq_nf_params;
int cloq_quant_nf_codes(const float *W, int rows, int cols, const cloq_nf_params *p, cloq_qtensor *out,
			cloq_err *err);
/* bitsandbytes' signed 8-bit dynamic map (create_dynamic_map(signed=True, max_exponent_bits=7,
 * total_bits=8)) in float32, ascending, 256 values; built with torch's float32 linspace as x86
 * builds compute it (start + step * k in one rounding). */
void cloq_quant_nf_dynamic_map(float map[256]);
/* Check a codebook tensor read from a file: codes < 2^bits, absmax finite and >= 0, and with
 * double quantization every absmax equal to what qabsmax, absmax2 and the offset rebuild (bit for
 * bit). CLOQ_EINPUT naming the first bad position. */
int cloq_quant_nf_check(const cloq_qtensor *q, cloq_err *err);
/* Allocate a codebook tensor's arrays (contents zeroed; qabsmax/absmax2 when double_quant). */
int cloq_qtensor_alloc_nf(cloq_qtensor *t, int rows, int cols, const cloq_nf_params *p, cloq_err *err);

/* ---- GPTQ checkpoint packing ---------------------------------------------------------------- */
/*
 * AutoGPTQ QuantLinear layout (torch names), out = rows, in = cols, G = ngroups:
 *   qweight  int32 (in * bits / 32, out): codes packed along `in`, little end first
 *   qzeros   int32 (G, out * bits / 32):  zero points packed along `out`
 *   scales   fp16  (G, out)
 *   g_idx    int32 (in)
 * 2/4/8 bits put 32/bits values in one word; 3 bits put 32 values in 3 words, the 11th and 22nd
 * value split across a word boundary exactly as AutoGPTQ's pack() (value j at bit 3j of the
 * little-endian bit stream of the 3 words). Needs in*bits % 32 == 0 and out*bits % 32 == 0, else
 * CLOQ_EINPUT (such a module stays dense).
 * Format v1 (GPTQ v1, what every loader reads) stores zero - 1 and cannot hold a zero point of 0:
 * packing one is CLOQ_EINPUT naming row and group (see cloq_quant_needs_v2); v2 stores the true
 * zero. Loaders dequantize v1 as scale * (q - (qzeros + 1)).
 */
enum { CLOQ_GPTQ_V1 = 1, CLOQ_GPTQ_V2 = 2 };

/* 1 when (rows, cols, bits) can be packed, 0 otherwise. */
int cloq_quant_gptq_packable(int rows, int cols, int bits);
/* 1 when some zero point is 0 (so v1 packing is impossible), 0 otherwise. */
int cloq_quant_needs_v2(const cloq_qtensor *q);
/* Pack `q` (v1). Output arrays are caller-allocated with the shapes above. Scales are rounded to
 * fp16 (exact when quantized with fp16_scales); a scale that rounds to 0 or Inf is CLOQ_EINPUT. */
int cloq_quant_pack_gptq(const cloq_qtensor *q, int32_t *qweight, int32_t *qzeros,
			 uint16_t *scales_f16, int32_t *g_idx, cloq_err *err);
/* Same with an explicit format, CLOQ_GPTQ_V1 or CLOQ_GPTQ_V2. */
int cloq_quant_pack_gptq_fmt(const cloq_qtensor *q, int format, int32_t *qweight, int32_t *qzeros,
			     uint16_t *scales_f16, int32_t *g_idx, cloq_err *err);
/* Unpack into `out` (allocated here; pass a zeroed struct). group_size as used when quantizing
 * (ngroups = ceil(cols / group_size)). The input is treated as hostile: v1 zero points that
 * decode to 2^bits, scales that are not finite and > 0 and g_idx outside [0, ngroups) are
 * CLOQ_EINPUT naming the position. */
int cloq_quant_unpack_gptq(const int32_t *qweight, const int32_t *qzeros,
			   const uint16_t *scales_f16, const int32_t *g_idx, int rows, int cols,
			   int bits, int group_size, int format, cloq_qtensor *out, cloq_err *err);

/* ---- fp16 ----------------------------------------------------------------------------------- */
/* IEEE binary16 <-> float32, round to nearest even; NaN stays NaN, overflow gives Inf. */
uint16_t cloq_quant_f32_to_f16(float f);
float cloq_quant_f16_to_f32(uint16_t h);

#endif /* CLOQ_QUANT_H */
