/*
 * cloq_solver.h - the linear algebra of cloq: Gram accumulation, the CLoQ closed form, LoftQ,
 * alternating CLoQ, exact and randomized truncated SVD. CPU backend: OpenBLAS cblas + LAPACKE.
 *
 * Conventions (read once, they hold for every function below)
 * ----------------------------------------------------------
 *  - Weights are torch layout: W, deq(Q), dW, E are (out, in) row-major float32.
 *  - Calibration inputs X are (tokens, in) row-major float32; H = X^T X is (in, in) row-major
 *    float64, full symmetric (both triangles), as cloq_gram_finish leaves it.
 *  - LoRA factors are PEFT layout: A = lora_A (r, in) row-major, B = lora_B (out, r) row-major,
 *    and the adapter adds s * B * A to the weight, s = lora_alpha / r (CLoQ uses s = 1).
 *  - "The objective" of a layer is ||X (dW - s B A)^T||_F^2 = tr(E H E^T), E = dW - s B A.
 *  - This module includes nothing from quant/: quantizers reach it as a cloq_quantizer_cb.
 *  - No function prints; every fallible one returns an enum cloq_status and fills `err`
 *    (may be NULL). Non-finite inputs are CLOQ_EINPUT, never NaN outputs; out of memory is
 *    CLOQ_EIO.
 *
 * The method (CLoQ, Deng et al., arXiv 2501.18475)
 * ------------------------------------------------
 *    R^T R = H + lambda I                     (Cholesky, R upper; lambda = lambda_rel * mean diag H)
 *    M     = R dW^T                           (in, out)
 *    M_r   = U_r S_r V_r^T                    (top-r truncated SVD)
 *    s B A = (R^-1 M_r)^T = V_r S_r U_r^T R^-T
 * Balanced split (default): B = V_r S_r^1/2 / sqrt(s), A = S_r^1/2 U_r^T R^-T / sqrt(s).
 * "All in B" split:         B = V_r S_r / s,           A = U_r^T R^-T.
 * At the optimum the damped objective tr(E (H + lambda I) E^T) = ||R E^T||_F^2 equals the tail
 * energy sum_{i>r} sigma_i(M)^2 exactly (Eckart-Young); the undamped objective tr(E H E^T) is
 * that minus lambda ||E||_F^2. Any square root of H + lambda I gives the same product s B A
 * (cloq_solver_factor_eig is the eigendecomposition root, for checks and benchmarks); in fact
 * the same A and B up to signs, since R' = Q R makes U' = Q U and U'^T R'^-T = U^T R^-T.
 * A factor is read-only once made: several solves may share it, also from several threads.
 */
#ifndef CLOQ_SOLVER_H
#define CLOQ_SOLVER_H

#include <stdint.h>

#include "cloq_error.h"

/* ================================================================================================
 * Gram accumulation: H += X^T X over calibration chunks.
 *
 * Scheme: the rows of the stream (every call's X, in order) form blocks of CLOQ_GRAM_CHUNK
 * tokens, whatever the calls' sizes: a block is taken straight from X when a call holds it whole,
 * and otherwise gathered in a row buffer (CLOQ_GRAM_CHUNK x n floats, allocated at the first
 * partial block) until it is complete; cloq_gram_finish takes the last, partial block. So H is a
 * function of the stream alone: 64 windows of 256 rows give the bytes of one call of 16384 rows.
 * The product of a block is formed in float32 by sgemm, one column panel of the upper triangle at
 * a time (cloq_gram_panel(n) columns, so the float32 scratch is n x that a thread instead of n^2),
 * and added into the float64 accumulator. So float32 only ever sums CLOQ_GRAM_CHUNK
 * products; the sum over blocks (262144 tokens for a 128 x 2048 calibration) is float64. sgemm is
 * ~2x dsyrk's speed here and needs no float64 copy of X. Blocks of 2048 rather than one a call
 * (a 256-token window) read and write the float64 H (n^2 / 2 doubles) 8x less often: that
 * traffic, not the arithmetic, was half the Gram time of short windows (docs/PERFORMANCE.md).
 * Measured error (tests/test_solver.c, test_gram_accuracy, against a float64 dsyrk of the same
 * float32 X; n = 384, 12288 tokens of LLM-like activations with outlier channels x20):
 * relative Frobenius error ||H - H_ref||_F / ||H_ref||_F = 6.2e-8, max |H_ij - Href_ij| /
 * sqrt(H_ii H_jj) = 1.9e-7; asserted < 1e-6 and < 1e-5; calls of 1, 0, 999, 3, 3997, 4999 and
 * 2289 rows give the one-shot bytes (test_gram_stream_blocks: windows, add_last, adds after a
 * finish). On the real stories260K activations (fixtures/solver X vs
 * HX) the relative Frobenius error is asserted < 1e-6 as well. Errors this size are far below the
 * lambda = 1e-4 * mean diag damping that the solver adds anyway; a float64 dsyrk would cost 2x
 * the time and a float64 copy of every chunk.
 * Speed (bench_solver, this 2-core box): ~25-40 Gflop/s, i.e. ~350 tokens/s at n = 11008.
 * ============================================================================================= */
#define CLOQ_GRAM_CHUNK 2048
#define CLOQ_GRAM_PANEL 256 /* the panel width at 2048 <= n < 4096; half below, twice from 4096 */

/* The panel width for an H of width n, and the float32 scratch of its panels with `threads`
 * threads (one panel a thread, at most the panel count): what cloq_gram_init allocates. */
int cloq_gram_panel(int n);
size_t cloq_gram_scratch_floats(int n, int threads);

typedef struct cloq_gram {
	int n;              /* width of X (in features) */
	long long ntokens;  /* rows accumulated so far */
	double *H;          /* (n, n) row-major; upper triangle while accumulating, full symmetric
	                     * after cloq_gram_finish. Owned; freed by cloq_gram_free. */
	float *work;        /* private scratch: slots x (n, cloq_gram_panel(n)) */
	int slots;          /* panels computed at once, one a thread (the thread count at init,
	                     * at most the number of panels) */
	float *rows;        /* the waiting rows of an incomplete block: (CLOQ_GRAM_CHUNK, n), or NULL */
	int nrows;          /* how many wait there (0 <= nrows < CLOQ_GRAM_CHUNK) */
} cloq_gram;

/* Zeroed H of (n, n). n >= 1. CLOQ_EINPUT for n < 1 or too large, CLOQ_EIO out of memory. */
int cloq_gram_init(cloq_gram *g, int n, cloq_err *err);
/* H += X^T X, X (t, n) row-major float32, t >= 0 (rows of an incomplete block wait in the row
 * buffer until a later call or cloq_gram_finish completes it). A non-finite X entry is CLOQ_EINPUT
 * (message gives row and column) and leaves H and the waiting rows unchanged. May be called after
 * cloq_gram_finish (the upper triangle stays the accumulator; call finish again). The column panels are the work items of one
 * parallel region, each computed by one thread with a single-threaded sgemm (largest first): one
 * region per call, not two per panel, so a thread that loses its core delays one panel. */
int cloq_gram_add(cloq_gram *g, const float *X, int t, cloq_err *err);
/* C (n, n) float64 row-major += A^T B, A and B (t, n) row-major float32, as cloq_gram_add sums
 * float32 panel products into float64; work: (n, CLOQ_GRAM_PANEL) floats. Asymmetric calibration
 * accumulates D = (Xo - Xq)^T Xq with it (cloq_asym.c). */
void cloq_cross_add(double *C, float *work, const float *A, const float *B, int t, int n);

/*
 * The asymmetric target of one linear (--asym-calib). The layer's inputs Xq are the quantized
 * model's, Xo the original model's; the linear should compute from Xq what the original computes
 * from Xo. The minimiser over M of ||Xq M^T - Xo W^T||^2 + lambda ||M - W||^2 is
 *   Weff = W + (W D) (H + lambda I)^-1,  H = Xq^T Xq,  D = (Xo - Xq)^T Xq,
 * lambda = lambda_rel x mean diag H (times 10 until the Cholesky succeeds): the quantizer and the
 * CLoQ solve then fit Weff in the metric H, which is the same objective up to a constant. Weff = W
 * exactly when Xo = Xq. H full symmetric, D (n, n) row-major float64; W, Weff (out, n) float32
 * row-major, may alias. CLOQ_EINPUT on bad sizes or a non-finite result, CLOQ_EIO out of memory.
 */
int cloq_solver_asym_target(const double *H, const double *D, int n, const float *W, int out, double lambda_rel,
			    float *Weff, cloq_err *err);
#define CLOQ_ASYM_LAMBDA_REL 0.01 /* GPTQ's damping */

/* cloq_gram_add of the stream's last t rows, then cloq_gram_finish: the same H, but when no rows
 * wait a partial last block is taken straight from X, without the row buffer (the expert Grams,
 * whose rows come in whole blocks and one last partial one). */
int cloq_gram_add_last(cloq_gram *g, const float *X, int t, cloq_err *err);
/* Take the waiting rows (the last block), then mirror the upper triangle into the lower: H becomes
 * full symmetric. */
void cloq_gram_finish(cloq_gram *g);
/* Free H and the scratch; safe on a zeroed or already freed struct. */
void cloq_gram_free(cloq_gram *g);

/* ================================================================================================
 * Factor of H + lambda I, shared by the layers that see the same input ({q,k,v}, {gate,up}).
 * ============================================================================================= */
typedef struct cloq_factor cloq_factor;

enum cloq_factor_kind {
	CLOQ_FACTOR_CHOLESKY = 0, /* R upper triangular, R^T R = H + lambda I */
	CLOQ_FACTOR_EIG = 1,      /* R = (Lambda + lambda I)^1/2 V^T from dsyevd; eigenvalues
	                           * below 0 (rounding) are clamped to 0 */
};

#define CLOQ_LAMBDA_REL_DEFAULT 1e-4
#define CLOQ_LAMBDA_REL_MAX 1e-1

/*
 * Cholesky of H + lambda I, H (n, n) row-major full symmetric float64, lambda = lambda_rel * mean
 * diag H (lambda_rel >= 0; pass CLOQ_LAMBDA_REL_DEFAULT for the paper's 1e-4).
 * When the Cholesky fails (H numerically singular beyond the damping), lambda_rel is multiplied
 * by 10 (from 0, first 1e-6) and retried up to CLOQ_LAMBDA_REL_MAX; the value used is recorded
 * (cloq_factor_lambda_rel, cloq_factor_escalations). Dead channels (zero rows/columns of H) are
 * fine: the damping makes them positive. An all-zero H (no calibration signal) gets lambda = 1:
 * R = I and the CLoQ solution becomes the plain SVD of dW (LoftQ's step).
 * Errors: CLOQ_EINPUT for n < 1, lambda_rel < 0 or non-finite, a non-finite H entry, a negative
 * diagonal entry (not a Gram matrix), or a Cholesky that fails even at CLOQ_LAMBDA_REL_MAX;
 * CLOQ_EIO out of memory. *out is a new handle (free with cloq_factor_free) or NULL on error.
 * H is copied; the caller keeps it.
 */
int cloq_solver_factor(const double *H, int n, double lambda_rel, cloq_factor **out,
		       cloq_err *err);
/*
 * The same, computed in the caller's buffer: H (n, n) row-major full symmetric becomes R and
 * belongs to the factor from then on (cloq_factor_free frees it), so a group never holds H and R
 * at once. A failed Cholesky attempt is undone from H's untouched mirror triangle before the
 * damping escalates. On error H is still the caller's and still H (its diagonal restored), except
 * after a dpotrf argument error (a bug, not an input).
 */
int cloq_solver_factor_inplace(double *H, int n, double lambda_rel, cloq_factor **out,
			       cloq_err *err);
/* Give a Cholesky factor a float32 copy of R (n^2 floats): the products with R that only need
 * float32 (the randomized path's M = R dW^T, cloq_solver_factor_objective) then stop converting
 * R per call. A no-op for eigen factors or when the copy exists. Not thread-safe against
 * concurrent users of f; call it before sharing the factor. CLOQ_EIO out of memory. */
int cloq_factor_make_f32(cloq_factor *f, cloq_err *err);
/* The same, with the eigendecomposition root (20-40x slower than Cholesky here: for checks and
 * the benchmark's baseline). Never needs escalation when lambda > 0. */
int cloq_solver_factor_eig(const double *H, int n, double lambda_rel, cloq_factor **out,
			   cloq_err *err);
int cloq_factor_n(const cloq_factor *f);
int cloq_factor_kind(const cloq_factor *f);
double cloq_factor_lambda(const cloq_factor *f);      /* absolute lambda used */
double cloq_factor_lambda_rel(const cloq_factor *f);  /* lambda / mean diag H (after escalation) */
double cloq_factor_mean_diag(const cloq_factor *f);
int cloq_factor_escalations(const cloq_factor *f);    /* times lambda was multiplied by 10 */
void cloq_factor_free(cloq_factor *f);                /* NULL ok */

/* ================================================================================================
 * Parameters and results
 * ============================================================================================= */
enum cloq_split { CLOQ_SPLIT_BALANCED = 0, CLOQ_SPLIT_B = 1 };
enum cloq_svd_method { CLOQ_SVD_AUTO = 0, CLOQ_SVD_EXACT = 1, CLOQ_SVD_RANDOMIZED = 2 };

typedef struct cloq_lora_params {
	int rank;          /* r >= 1. If r > min(out, in) the extra rows of A and columns of B are 0 */
	double scaling;    /* s = lora_alpha / r > 0 */
	int split;         /* enum cloq_split */
	int svd;           /* enum cloq_svd_method */
	int oversample;    /* randomized SVD: sketch width r + oversample */
	int power_iters;   /* randomized SVD: subspace (power) iterations */
	uint64_t seed;     /* Gaussian sketch and zero-init A; same seed -> same output */
} cloq_lora_params;

/*
 * rank 64, scaling 1, balanced, AUTO, oversample 64, power_iters 4, seed 0.
 * Why 64 and 4: M = R dW^T has a spectrum that decays slowly around index r (it follows H's
 * power-law spectrum over a flat quantization-noise floor), so HMT's textbook p = 5-20 converges
 * slowly: the error shrinks like (sigma_{r+p+1}/sigma_r)^(2q+1). Measured relative excess of the
 * objective over the exact SVD (bench_solver --sweep, 7B down_proj shape at 1/4 scale, rank 64):
 *   (p, q) = (16, 4) 1.2e-3, (32, 4) 2.1e-4, (16, 6) 2.1e-4, (64, 4) 6.8e-6, (64, 6) 8.6e-8.
 * (64, 4) costs 2q + 2 = 10 products of M with a 128-wide block: ~1/4 of forming M at the 7B
 * down_proj shape, and meets the 1e-3 target with two orders of margin. AUTO takes the randomized
 * path when min(out, in) > 4 * (rank + oversample) (below that an exact SVD costs about the same).
 */
cloq_lora_params cloq_lora_default_params(void);

typedef struct cloq_solve_info {
	double objective;           /* damped: tr(E (H + lambda I) E^T) = ||R E^T||_F^2 with the
	                             * float64 factors (before rounding to float32 A, B), evaluated
	                             * as ||M - U_r S_r V_r^T||_F^2 (randomized: from the float32 M,
	                             * summed in float64; measured within 3e-8 of the exact value) */
	double objective_undamped;  /* tr(E H E^T) = objective - lambda ||E||_F^2 (or computed from H
	                             * directly where the function has H: cloq_solver_cloq_alt) */
	double tail_energy;         /* sum_{i>r} sigma_i(R dW^T)^2: exact SVD sums the tail singular
	                             * values; randomized reports ||M||_F^2 - sum_{i<=r} sigma_i^2 */
	double total_energy;        /* ||R dW^T||_F^2 */
	double lambda;              /* absolute damping of the factor */
	double *sigma;              /* in: NULL or an array of >= rank doubles; out: the top
	                             * singular values of R dW^T, descending (0 beyond min(out,in)) */
	int rank_used;              /* min(rank, out, in) */
	int method;                 /* CLOQ_SVD_EXACT or CLOQ_SVD_RANDOMIZED: what ran */
	int best_iter;              /* alternating solvers: 1-based iterate returned; else 1 */
	double seconds;             /* wall time of the call */
} cloq_solve_info;

/* ================================================================================================
 * Solvers
 * ============================================================================================= */

/*
 * One-shot CLoQ. f factors H + lambda I of width in; dW = W - deq(Q) (out, in) row-major;
 * outputs A (rank, in), B (out, rank) row-major with s B A the minimiser of the damped objective
 * over rank-r matrices.
 * Two paths, picked by p->svd (AUTO: randomized when min(out, in) > 4 * (rank + oversample)):
 *  - EXACT, all float64: M = R dW^T by trmm, dgesdd of M. The optimum to rounding: the tests
 *    check objective == tail energy to 1e-6 with it.
 *  - RANDOMIZED, the fast path: M32 = R dW^T by a float32 trmm (half the time of the float64
 *    one, the dominant cost next to the Cholesky), the top-(r + oversample) range of M32 by
 *    float32 power iterations (Halko-Martinsson-Tropp), then in float64 the projection
 *    (R^T Q)^T dW^T (which never needs M in float64) and its small SVD. Only the subspace sees
 *    float32, and the objective's excess is second order in the subspace error: measured excess
 *    over EXACT 7e-6 (bench_solver, default oversample/power) and < 1e-12 on the tests' spectra.
 * Singular vectors get a fixed sign (largest-magnitude entry of each left vector positive), the
 * sketch is seeded by p->seed: the output is deterministic for given inputs and thread count.
 * info may be NULL (the objectives are then not computed, saving an (in, out) x rank product).
 * Work memory: EXACT about 4 (in x out) float64; RANDOMIZED about 2 (in x out) float64 +
 * (in x out) + (in x in) float32. A and B may not alias dW.
 * Errors: CLOQ_EINPUT for bad sizes/params, f->n != in, non-finite dW or a non-finite result;
 * CLOQ_EIO out of memory or a LAPACK failure to converge. On error A and B are zeroed (unless
 * the error is that their sizes are inconsistent).
 */
int cloq_solver_cloq(const cloq_factor *f, const float *dW, int out, int in,
		     const cloq_lora_params *p, float *A, float *B, cloq_solve_info *info,
		     cloq_err *err);

/* QLoRA-style zero init, PEFT's default: B = 0, A ~ U(-1/sqrt(in), 1/sqrt(in)) i.i.d., which is
 * PEFT's nn.init.kaiming_uniform_(lora_A, a=sqrt(5)) (gain sqrt(1/3), bound gain*sqrt(3/in)),
 * drawn from the seeded generator of p->seed (not torch's stream). */
int cloq_solver_zero_init(int out, int in, const cloq_lora_params *p, float *A, float *B,
			  cloq_err *err);

/*
 * The quantizer, as a callback (quant/ implements it; solver/ never includes quant/).
 * quantize: Wq (out, in) = deq(quantize(W)) for a target W (out, in); returns a cloq_status.
 * keep: optional (NULL ok); called right after a quantize call whose result the solver keeps
 * (the best iterate so far): the quantizer stores that call's codes/scales/zeros.
 */
typedef struct cloq_quantizer_cb {
	void *ctx;
	int (*quantize)(void *ctx, const float *W, float *Wq, cloq_err *err);
	void (*keep)(void *ctx);
} cloq_quantizer_cb;

/*
 * LoftQ (Li et al. 2023, PEFT's loftq_init): starting from B A = 0 (PEFT's first quantize is of W
 * itself), `iters` >= 1 times { Wq = quantize(W - s B A); B, A = top-r SVD of W - Wq, balanced }.
 * Uncalibrated: plain SVD of the weight residual (p->svd picks exact/randomized as for CLoQ). The
 * last iterate is returned (as PEFT does); keep() is called after its quantize.
 * Difference from PEFT: PEFT ignores lora_alpha here (it stores L, R with L R ~ residual, correct
 * only for s = 1); this function divides by s so that s B A is the residual's approximation.
 * W, Wq (out, in); A (rank, in); B (out, rank). Errors: as cloq_solver_cloq, plus the callback's.
 */
int cloq_solver_loftq(const float *W, int out, int in, const cloq_quantizer_cb *qcb,
		      const cloq_lora_params *p, int iters, float *Wq, float *A, float *B,
		      cloq_err *err);

/*
 * Alternating CLoQ (beyond the paper): for t = 1..iters { Wq_t = quantize(W - s B A) (t = 1:
 * quantize(W)); A, B = CLoQ(f, W - Wq_t) } and return the iterate with the lowest calibrated
 * objective tr(E H E^T), E = W - Wq_t - s B_t A_t (H may be NULL: then the iterates are ranked by
 * objective_undamped as the factor gives it, ||R E^T||^2 - lambda ||E||^2, without H). keep() is called each time a new best appears; Wq, A, B receive the
 * best iterate. iters = 1 is exactly cloq_solver_cloq on dW = W - quantize(W).
 * info (may be NULL) describes the returned iterate (best_iter says which).
 */
int cloq_solver_cloq_alt(const float *W, const cloq_factor *f, const double *H, int out, int in,
			 const cloq_quantizer_cb *qcb, const cloq_lora_params *p, int iters,
			 float *Wq, float *A, float *B, cloq_solve_info *info, cloq_err *err);

/* ================================================================================================
 * Objectives
 * ============================================================================================= */

/* tr(E H E^T) for E (out, in) float32 row-major, H (in, in) float64 full symmetric, by one dgemm
 * per block of 256 rows of E (float64 throughout). Returns NAN only when out of memory or on
 * bad sizes (and propagates non-finite inputs: check them upstream). */
double cloq_solver_objective(const double *H, const float *E, int out, int in);

/*
 * Relative calibrated error ||X (W - Wq - s B A)^T||_F / ||X W^T||_F from H alone:
 * sqrt(tr(E H E^T) / tr(W H W^T)). A and B may both be NULL (no adapter). 0/0 is 0; x/0 is
 * +inf. Errors: CLOQ_EINPUT bad sizes, CLOQ_EIO out of memory.
 */
int cloq_solver_rel_error(const double *H, const float *W, const float *Wq, const float *A,
			  const float *B, double scaling, int out, int in, int rank, double *rel,
			  cloq_err *err);
/* The same with the denominator tr(W H W^T) given (den >= 0; a negative den computes it): a
 * report compares several corrections of one W, and each tr(. H .) costs 2 out in^2 flops. */
int cloq_solver_rel_error_den(const double *H, const float *W, const float *Wq, const float *A,
			      const float *B, double scaling, int out, int in, int rank, double den,
			      double *rel, cloq_err *err);
/* tr(W H W^T) in float64, as the relative errors use it; NAN when out of memory. */
double cloq_solver_weight_energy(const double *H, const float *W, int out, int in);

/*
 * tr(E H E^T) through the factor, without H: ||R E^T||_F^2 - lambda ||E||_F^2 (clamped at 0),
 * E (out, in) float32 row-major. With the factor's float32 copy (cloq_factor_make_f32) the product
 * is a float32 trmm over 1024 rows of E at a time, summed in float64: out in^2 flops, a quarter
 * of a float64 tr(E H E^T) and at twice the rate; relative error ~1e-6 (tests/test_solver.c).
 * Without it, float64. An all-zero H (lambda = 1, R = I) gives exactly 0. NAN on bad sizes or out
 * of memory.
 */
double cloq_solver_factor_objective(const cloq_factor *f, const float *E, int out, int in);

/* ================================================================================================
 * Truncated SVD (exposed for tests and the benchmark)
 * ============================================================================================= */

/*
 * Top-k SVD of M (m, n) COLUMN-major float64 (ld = m): U (m, k) column-major, S (k) descending,
 * V (n, k) column-major, k <= min(m, n). method EXACT (dgesdd) or RANDOMIZED (Halko-Martinsson-
 * Tropp: seeded Gaussian sketch of width k + oversample, power_iters subspace iterations each
 * re-orthonormalised by QR, SVD of the small projection; falls back to EXACT when the sketch is
 * not narrower than min(m, n)). Signs fixed as in cloq_solver_cloq. M is not modified.
 * *tail (may be NULL) gets sum_{i>k} sigma_i^2 (EXACT) or ||M||_F^2 - sum_{i<=k} sigma_i^2.
 * *used (may be NULL) gets the method that ran. All float64 (cloq_solver_cloq's randomized path
 * uses its float32 variant on M = R dW^T instead). Errors: CLOQ_EINPUT bad sizes or parameters,
 * CLOQ_EIO out of memory or no LAPACK convergence.
 */
int cloq_solver_svd_topk(const double *M, int m, int n, int k, int method, int oversample,
			 int power_iters, uint64_t seed, double *U, double *S, double *V,
			 double *tail, int *used, cloq_err *err);

#endif /* CLOQ_SOLVER_H */
