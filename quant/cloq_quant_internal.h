/*
 * cloq_quant_internal.h - pieces shared by the quantizers of quant/ (not a public API; tests may
 * use it to check the fast paths against the plain ones).
 */
#ifndef CLOQ_QUANT_INTERNAL_H
#define CLOQ_QUANT_INTERNAL_H

#include "cloq_quant.h"

/* Validated, normalised view of cloq_quant_params for a (rows, cols) weight. */
typedef struct cloq_quant_cfg {
	int bits, maxq, gs, ngroups, sym, fp16, act_order, static_groups, block_size, v1_zeros, stale;
	double damp;
} cloq_quant_cfg;

int cloq_quant__cfg(const cloq_quant_params *p, int rows, int cols, cloq_quant_cfg *c,
		    cloq_err *err);
/* CLOQ_EINPUT naming (row, col) of the first NaN/Inf. */
int cloq_quant__check_w(const float *W, int rows, int cols, cloq_err *err);
/* H finite, diag >= 0, symmetric to a relative tolerance; CLOQ_EINPUT naming (i, j). */
int cloq_quant__check_h(const double *H, int n, cloq_err *err);

/* AutoGPTQ find_params on x[0..n) (float32 semantics), with v1_zeros' rule (cloq_quant.h). Never a
 * zero/NaN/Inf scale;
 * CLOQ_EINPUT (message names row r and group g) only when an fp16 scale would overflow. */
int cloq_quant__params(const float *x, int n, const cloq_quant_cfg *c, float *scale,
		       int32_t *zero, int r, int g, cloq_err *err);
/* q = clamp(round(w / scale) + zero, 0, maxq) */
static inline int cloq_quant__code(float w, float scale, int32_t zero, int maxq)
{
	float q = __builtin_rintf(w / scale) + (float)zero;
	if (!(q >= 0.0f)) /* also NaN: never an undefined float-to-int conversion */
		q = 0.0f;
	if (q > (float)maxq)
		q = (float)maxq;
	return (int)q;
}
static inline float cloq_quant__deq(int q, float scale, int32_t zero)
{
	return scale * (float)(q - zero);
}

/* Column order of act-order: perm[j] = original column at position j (descending diag, stable). */
int cloq_quant__perm(const double *H, int n, int act_order, int *perm, cloq_err *err);

/* The upper Cholesky factor U of H^-1 (U^T U = H^-1), row-major (n, n), strictly lower part
 * zeroed, from H (n, n) row-major SPD, in place. Fast: float32, one Cholesky of the reversed H
 * and a triangular inverse. Returns the LAPACK info (0 = success, > 0 = not positive definite). */
int cloq_quant__hinv_upper_fast(float *H, int n);
/* The left-looking GPTQ factor (cloq_quant_gptq.c): with H = R R^T (R upper, the reversed
 * H's Cholesky), for each block [bstart[b], bstart[b+1]) the diagonal block becomes
 * U_bb = R_bb^-1 (= the diagonal block of U above) and the column block above it
 * T_b = R[0:b0, b0:b1] U_bb; strictly lower part zeroed. In place, float32, row-major. */
int cloq_quant__hfactor_blocked(float *H, int n, const int *bstart, int nb);
/* GPTQ runs left-looking (the factor above) from this many columns up (8192); tests lower it. */
extern int cloq_quant__left_min_cols;
/* Same via dpotrf + dpotri + dpotrf (AutoGPTQ's route), for the reference. */
int cloq_quant__hinv_upper_ref(double *H, int n);

/* Dequantize a codebook tensor (nf_block > 0): cloq_quant_dequant's NF branch. */
void cloq_quant__nf_dequant(const cloq_qtensor *q, float *W);

/* The prox of alpha ||.||_inf on v[0..n) in place: |v_i| clipped at t with sum (|v_i| - t)_+ =
 * alpha (all 0 when ||v||_1 <= alpha). s: n doubles of scratch. */
void cloq_quant__prox_linf(float *v, int n, double alpha, double *s);

#endif /* CLOQ_QUANT_INTERNAL_H */
