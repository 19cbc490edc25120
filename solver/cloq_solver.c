/*
 * cloq_solver.c - factor of H + lambda I, the CLoQ closed form, LoftQ, alternating CLoQ,
 * objectives. The maths is in cloq_solver.h.
 *
 * Layout trick used throughout: a row-major (out, in) buffer IS the column-major (in, out)
 * matrix dW^T, so M = R dW^T is a column-major trmm on a plain float64 copy of dW, and a
 * column-major (in, r) matrix is the row-major (r, in) lora_A.
 */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <string.h>

#include "cloq_chol.h"
#include "cloq_solver_internal.h"

struct cloq_factor {
	int n;
	int kind;          /* enum cloq_factor_kind */
	int escalations;
	double lambda;     /* absolute damping used */
	double lambda_rel; /* lambda / mean diag (the requested value when mean diag is 0) */
	double mean_diag;
	double *R;         /* CHOLESKY: R (n, n) column-major, upper (strict lower part zero);
	                    * EIG: eigenvectors V (n, n) column-major */
	double *d;         /* EIG: sqrt(max(eigenvalue, 0) + lambda), (n) */
	float *R32;        /* CHOLESKY, optional (cloq_factor_make_f32): R in float32, same layout */
};

/* ================================================================================================
 * Factor
 * ============================================================================================= */

static int check_gram(const double *H, int n, double lambda_rel, double *mean_diag,
		      cloq_err *err)
{
	int rc = CLOQ_OK;
	double tr = 0.0;

	CLOQ_FAIL_IF(n < 1 || !H, err, CLOQ_EINPUT, "factor: bad Gram matrix (n = %d)", n);
	CLOQ_FAIL_IF(!cloq_bytes3((size_t)n, (size_t)n, sizeof(double)), err, CLOQ_EINPUT,
		     "factor: n = %d too large", n);
	CLOQ_FAIL_IF(!(lambda_rel >= 0.0) || !isfinite(lambda_rel), err, CLOQ_EINPUT,
		     "factor: lambda_rel %g must be finite and >= 0", lambda_rel);
	for (size_t i = 0; i < (size_t)n * n; i++)
		CLOQ_FAIL_IF(!isfinite(H[i]), err, CLOQ_EINPUT,
			     "factor: non-finite Gram entry H[%zu][%zu] (n = %d)", i / n, i % n, n);
	for (int i = 0; i < n; i++) {
		double h = H[(size_t)i * n + i];
		CLOQ_FAIL_IF(h < 0.0, err, CLOQ_EINPUT,
			     "factor: negative diagonal H[%d][%d] = %g: not a Gram matrix", i, i,
			     h);
		tr += h;
	}
	*mean_diag = tr / n;
fail:
	return rc;
}

static double next_lambda_rel(double rel)
{
	return rel > 0.0 ? rel * 10.0 : 1e-6;
}

static cloq_factor *factor_new(int n, int kind, cloq_err *err)
{
	cloq_factor *f = cloq_calloc(1, sizeof *f);
	if (f) {
		f->R = cloq_aligned_alloc(64, (size_t)n * n * sizeof(double));
		if (kind == CLOQ_FACTOR_EIG)
			f->d = cloq_malloc((size_t)n * sizeof(double));
	}
	if (!f || !f->R || (kind == CLOQ_FACTOR_EIG && !f->d)) {
		cloq_factor_free(f);
		cloq_err_set(err, CLOQ_EIO, "factor: out of memory for a %d x %d factor", n, n);
		return NULL;
	}
	f->n = n;
	f->kind = kind;
	return f;
}

int cloq_solver_factor(const double *H, int n, double lambda_rel, cloq_factor **out,
		       cloq_err *err)
{
	int rc = CLOQ_OK;
	double *R = NULL;

	if (out)
		*out = NULL;
	CLOQ_FAIL_IF(!out, err, CLOQ_EINPUT, "factor: NULL output");
	/* the in-place factor checks the values; the copy needs only a sane size */
	CLOQ_FAIL_IF(n < 1 || !H || !cloq_bytes3((size_t)n, (size_t)n, sizeof(double)), err, CLOQ_EINPUT,
		     "factor: bad Gram matrix (n = %d)", n);
	R = cloq_aligned_alloc(64, (size_t)n * n * sizeof(double));
	CLOQ_FAIL_IF(!R, err, CLOQ_EIO, "factor: out of memory for a %d x %d factor", n, n);
	memcpy(R, H, (size_t)n * n * sizeof(double));
	CLOQ_TRY(cloq_solver_factor_inplace(R, n, lambda_rel, out, err));
	return CLOQ_OK; /* the factor owns R */
fail:
	cloq_free(R);
	return rc;
}

/* Cholesky in the caller's buffer. dpotrf (column-major 'U') reads and writes only the entries
 * H[j n + i], i <= j; the mirror triangle keeps H, so a failed attempt is undone from it and
 * from the saved diagonal before the damping escalates. */
int cloq_solver_factor_inplace(double *H, int n, double lambda_rel, cloq_factor **out,
			       cloq_err *err)
{
	int rc = CLOQ_OK, info = 1;
	double md = 0.0, rel = lambda_rel, *d0 = NULL;
	cloq_factor *f = NULL;

	if (out)
		*out = NULL;
	CLOQ_FAIL_IF(!out, err, CLOQ_EINPUT, "factor: NULL output");
	CLOQ_TRY(check_gram(H, n, lambda_rel, &md, err));
	f = cloq_calloc(1, sizeof *f);
	d0 = cloq_malloc((size_t)n * sizeof(double));
	CLOQ_FAIL_IF(!f || !d0, err, CLOQ_EIO, "factor: out of memory (n = %d)", n);
	f->n = n;
	f->kind = CLOQ_FACTOR_CHOLESKY;
	f->mean_diag = md;
	for (int i = 0; i < n; i++)
		d0[i] = H[(size_t)i * n + i];
	for (;;) {
		double lam = md > 0.0 ? rel * md : 1.0;
		for (int i = 0; i < n; i++)
			H[(size_t)i * n + i] = d0[i] + lam;
		info = cloq_d_potrf_upper(n, H, n);
		CLOQ_FAIL_IF(info < 0, err, CLOQ_EIO, "factor: dpotrf argument error %d", info);
		if (info == 0) {
			f->lambda = lam;
			f->lambda_rel = rel;
			break;
		}
		for (size_t j = 0; j < (size_t)n; j++)
			for (size_t i = 0; i < j; i++)
				H[j * n + i] = H[i * n + j];
		for (int i = 0; i < n; i++)
			H[(size_t)i * n + i] = d0[i];
		rel = next_lambda_rel(rel);
		CLOQ_FAIL_IF(rel > CLOQ_LAMBDA_REL_MAX * (1.0 + 1e-9), err, CLOQ_EINPUT,
			     "factor: H + lambda I (n = %d) not positive definite even at lambda = "
			     "%g * mean diag (pivot %d)", n, CLOQ_LAMBDA_REL_MAX, info);
		f->escalations++;
	}
	for (int j = 0; j < n; j++)
		memset(H + (size_t)j * n + j + 1, 0, (size_t)(n - j - 1) * sizeof(double));
	f->R = H;
	cloq_free(d0);
	*out = f;
	return CLOQ_OK;
fail:
	cloq_free(d0);
	cloq_free(f);
	return rc;
}

int cloq_factor_make_f32(cloq_factor *f, cloq_err *err)
{
	size_t n;
	if (!f || f->kind != CLOQ_FACTOR_CHOLESKY || f->R32)
		return CLOQ_OK;
	n = (size_t)f->n;
	f->R32 = cloq_aligned_alloc(64, n * n * sizeof(float));
	if (!f->R32)
		return cloq_err_set(err, CLOQ_EIO, "factor: out of memory for the float32 copy (%zu x %zu)", n, n);
	for (size_t i = 0; i < n * n; i++)
		f->R32[i] = (float)f->R[i];
	return CLOQ_OK;
}

int cloq_solver_factor_eig(const double *H, int n, double lambda_rel, cloq_factor **out,
			   cloq_err *err)
{
	int rc = CLOQ_OK, info;
	double md = 0.0, rel = lambda_rel, wmax = 0.0, wmin;
	cloq_factor *f = NULL;

	if (out)
		*out = NULL;
	CLOQ_FAIL_IF(!out, err, CLOQ_EINPUT, "factor: NULL output");
	CLOQ_TRY(check_gram(H, n, lambda_rel, &md, err));
	f = factor_new(n, CLOQ_FACTOR_EIG, err);
	CLOQ_FAIL_IF(!f, err, CLOQ_EIO, "factor: out of memory for a %d x %d factor", n, n);
	f->mean_diag = md;
	memcpy(f->R, H, (size_t)n * n * sizeof(double));
	info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'U', n, f->R, n, f->d);
	CLOQ_FAIL_IF(info != 0, err, CLOQ_EIO, "factor: dsyevd failed (info %d, n = %d)", info,
		     n);
	for (int i = 0; i < n; i++) {
		if (f->d[i] < 0.0)
			f->d[i] = 0.0; /* rounding: a Gram matrix has no negative eigenvalue */
		if (f->d[i] > wmax)
			wmax = f->d[i];
	}
	wmin = f->d[0];
	/* Same escalation rule as Cholesky: only lambda = 0 on a singular H needs it. */
	while (md > 0.0 && rel * md + wmin <= 1e-14 * wmax) {
		rel = next_lambda_rel(rel);
		f->escalations++;
	}
	f->lambda_rel = rel;
	f->lambda = md > 0.0 ? rel * md : 1.0;
	for (int i = 0; i < n; i++)
		f->d[i] = sqrt(f->d[i] + f->lambda);
	*out = f;
	return CLOQ_OK;
fail:
	cloq_factor_free(f);
	return rc;
}

int cloq_factor_n(const cloq_factor *f) { return f->n; }
int cloq_factor_kind(const cloq_factor *f) { return f->kind; }
double cloq_factor_lambda(const cloq_factor *f) { return f->lambda; }
double cloq_factor_lambda_rel(const cloq_factor *f) { return f->lambda_rel; }
double cloq_factor_mean_diag(const cloq_factor *f) { return f->mean_diag; }
int cloq_factor_escalations(const cloq_factor *f) { return f->escalations; }

void cloq_factor_free(cloq_factor *f)
{
	if (!f)
		return;
	cloq_free(f->R);
	cloq_free(f->R32);
	cloq_free(f->d);
	cloq_free(f);
}

/* X (n, k) column-major <- R X. f == NULL is R = I (LoftQ's uncalibrated SVD). tmp: (n, k). */
static void apply_R(const cloq_factor *f, double *X, int k, double *tmp)
{
	int n;
	if (!f)
		return;
	n = f->n;
	if (f->kind == CLOQ_FACTOR_CHOLESKY) {
		cblas_dtrmm(CblasColMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, n, k,
			    1.0, f->R, n, X, n);
		return;
	}
	/* R = D V^T */
	cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, n, k, n, 1.0, f->R, n, X, n, 0.0,
		    tmp, n);
	for (int j = 0; j < k; j++)
		for (int i = 0; i < n; i++)
			X[(size_t)j * n + i] = f->d[i] * tmp[(size_t)j * n + i];
}

/* X (n, k) column-major <- R^-1 X. tmp: (n, k). */
static void solve_R(const cloq_factor *f, double *X, int k, double *tmp)
{
	int n;
	if (!f)
		return;
	n = f->n;
	if (f->kind == CLOQ_FACTOR_CHOLESKY) {
		cblas_dtrsm(CblasColMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, n, k,
			    1.0, f->R, n, X, n);
		return;
	}
	/* R^-1 = V D^-1 */
	for (int j = 0; j < k; j++)
		for (int i = 0; i < n; i++)
			tmp[(size_t)j * n + i] = X[(size_t)j * n + i] / f->d[i];
	cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, k, n, 1.0, f->R, n, tmp, n, 0.0,
		    X, n);
}

/* ================================================================================================
 * CLoQ
 * ============================================================================================= */

cloq_lora_params cloq_lora_default_params(void)
{
	cloq_lora_params p = {
		.rank = 64,
		.scaling = 1.0,
		.split = CLOQ_SPLIT_BALANCED,
		.svd = CLOQ_SVD_AUTO,
		.oversample = 64,
		.power_iters = 4,
		.seed = 0,
	};
	return p;
}

static int check_params(const cloq_lora_params *p, int out, int in, cloq_err *err)
{
	int rc = CLOQ_OK;
	CLOQ_FAIL_IF(!p, err, CLOQ_EINPUT, "lora: NULL parameters");
	CLOQ_FAIL_IF(out < 1 || in < 1 || !cloq_bytes3((size_t)out, (size_t)in, sizeof(double)),
		     err, CLOQ_EINPUT, "lora: bad weight shape (%d, %d)", out, in);
	CLOQ_FAIL_IF(p->rank < 1 || !cloq_bytes3((size_t)p->rank,
						   (size_t)(out > in ? out : in), sizeof(double)),
		     err, CLOQ_EINPUT, "lora: bad rank %d", p->rank);
	CLOQ_FAIL_IF(!(p->scaling > 0.0) || !isfinite(p->scaling), err, CLOQ_EINPUT,
		     "lora: scaling %g must be finite and > 0", p->scaling);
	CLOQ_FAIL_IF(p->split != CLOQ_SPLIT_BALANCED && p->split != CLOQ_SPLIT_B, err,
		     CLOQ_EINPUT, "lora: bad split %d", p->split);
	CLOQ_FAIL_IF(p->svd < CLOQ_SVD_AUTO || p->svd > CLOQ_SVD_RANDOMIZED || p->oversample < 0 ||
		     p->power_iters < 0, err, CLOQ_EINPUT,
		     "lora: bad svd method %d / oversample %d / power iterations %d", p->svd,
		     p->oversample, p->power_iters);
fail:
	return rc;
}

static int check_finite_f(const float *x, int out, int in, const char *what, cloq_err *err)
{
	for (size_t i = 0; i < (size_t)out * in; i++)
		if (!isfinite(x[i]))
			return cloq_err_set(err, CLOQ_EINPUT,
					    "%s: non-finite entry at [%zu][%zu] of (%d, %d)", what,
					    i / in, i % in, out, in);
	return CLOQ_OK;
}

static double frob2(const double *x, size_t n)
{
	double s = 0.0;
	for (size_t i = 0; i < n; i++)
		s += x[i] * x[i];
	return s;
}

#define BLK_COLS 256 /* columns of (in, out) products handled at a time: bounded float64 scratch */

/*
 * The fast path's truncated SVD of M = R dW^T, all its big products in float32: M32 = R dW^T by
 * one float32 trmm (with the factor's own float32 copy when it has one), the range Q of M32 by
 * float32 power iterations (orthonormalised in float64 at the end), the projection Q^T M32 by one
 * sgemm, and the small SVD of that l x out projection in float64. The SVD is exact for M32, which
 * differs from M by float32 rounding (amplified by R's conditioning): the objective excess that
 * causes is second order in it (the best rank-k fit is stationary). Measured with
 * bench_solver: 6.8e-6 -> 6.8e-6 (1024 x 2752) and 4.6e-6 -> 5.6e-6 (1368 x 3672) against the
 * float64 projection (R^T Q)^T dW^T it replaced, which cost an (in, in) x l and an l x in x out
 * float64 product.
 * total gets ||M32||_F^2 accumulated in float64; *M32_out (NULL: freed here) receives M32.
 */
static int rsvd_factored(const cloq_factor *f, const float *dW, int in, int out, int k,
			 const cloq_lora_params *p, double *U, double *S, double *V, double *total,
			 float **M32_out, cloq_err *err)
{
	int rc = CLOQ_OK, l = k + p->oversample, info;
	float *M32 = NULL, *R32 = NULL, *Q32 = NULL, *B32 = NULL;
	double *Q = NULL, *Bs = NULL, *Ub = NULL, *VT = NULL, *s = NULL;
	double *Mt = NULL, acc = 0.0;

	M32 = cloq_aligned_alloc(64, (size_t)in * out * sizeof(float));
	Q = cloq_aligned_alloc(64, (size_t)in * l * sizeof(double));
	Q32 = cloq_aligned_alloc(64, (size_t)in * l * sizeof(float));
	B32 = cloq_aligned_alloc(64, (size_t)l * out * sizeof(float));
	Bs = cloq_aligned_alloc(64, (size_t)l * out * sizeof(double));
	Ub = cloq_aligned_alloc(64, (size_t)l * l * sizeof(double));
	VT = cloq_aligned_alloc(64, (size_t)l * out * sizeof(double));
	s = cloq_malloc((size_t)l * sizeof(double));
	CLOQ_FAIL_IF(!M32 || !Q || !Q32 || !B32 || !Bs || !Ub || !VT || !s, err, CLOQ_EIO,
		     "cloq: out of memory (randomized, %d x %d, sketch %d)", out, in, l);
	memcpy(M32, dW, (size_t)in * out * sizeof(float)); /* = dW^T column-major */
	if (f && f->kind == CLOQ_FACTOR_CHOLESKY) {
		const float *r32 = f->R32;
		if (!r32) {
			R32 = cloq_aligned_alloc(64, (size_t)in * in * sizeof(float));
			CLOQ_FAIL_IF(!R32, err, CLOQ_EIO,
				     "cloq: out of memory (%d x %d factor copy)", in, in);
			for (size_t i = 0; i < (size_t)in * in; i++)
				R32[i] = (float)f->R[i];
			r32 = R32;
		}
		cblas_strmm(CblasColMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, in,
			    out, 1.0f, r32, in, M32, in);
		cloq_free(R32);
		R32 = NULL;
	} else if (f) {
		/* the eigen root has no triangular structure to exploit: float64 product */
		Mt = cloq_aligned_alloc(64, (size_t)in * out * sizeof(double) * 2);
		CLOQ_FAIL_IF(!Mt, err, CLOQ_EIO, "cloq: out of memory (%d x %d)", out, in);
		for (size_t i = 0; i < (size_t)in * out; i++)
			Mt[i] = dW[i];
		apply_R(f, Mt, out, Mt + (size_t)in * out);
		for (size_t i = 0; i < (size_t)in * out; i++)
			M32[i] = (float)Mt[i];
		cloq_free(Mt);
		Mt = NULL;
	}
	for (size_t i = 0; i < (size_t)in * out; i++)
		acc += (double)M32[i] * M32[i];
	*total = acc;
	CLOQ_TRY(cloq_svd_range_f32(M32, in, out, l, p->power_iters, p->seed, Q, err));
	for (size_t i = 0; i < (size_t)in * l; i++)
		Q32[i] = (float)Q[i];
	cblas_sgemm(CblasColMajor, CblasTrans, CblasNoTrans, l, out, in, 1.0f, Q32, in, M32, in,
		    0.0f, B32, l);
	for (size_t i = 0; i < (size_t)l * out; i++)
		Bs[i] = B32[i];
	{
		int nth = cloq_blas_serial_begin(); /* the l x out projection: small (cloq_solver_internal.h) */
		info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'S', l, out, Bs, l, s, Ub, l, VT, l);
		cloq_blas_serial_end(nth);
	}
	CLOQ_FAIL_IF(info != 0, err, CLOQ_EIO, "cloq: dgesdd failed (info %d) on the %d x %d "
		     "projection", info, l, out);
	cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, in, k, l, 1.0, Q, in, Ub, l, 0.0, U,
		    in);
	for (int j = 0; j < k; j++) {
		S[j] = s[j];
		for (int o = 0; o < out; o++)
			V[(size_t)j * out + o] = VT[j + (size_t)o * l];
	}
	cloq_svd_fix_signs(U, in, V, out, k);
	if (M32_out) {
		*M32_out = M32;
		M32 = NULL;
	}
fail:
	cloq_free(Mt);
	cloq_free(R32);
	cloq_free(s);
	cloq_free(VT);
	cloq_free(Ub);
	cloq_free(Bs);
	cloq_free(B32);
	cloq_free(Q32);
	cloq_free(Q);
	cloq_free(M32);
	return rc;
}

/* sum over columns of ||X - s Uc Z^T||_F^2, X (in, out) column-major given as float64 (Xd) or
 * float32 (Xf), Uc (in, k), Z (out, k) column-major; BLK_COLS columns at a time in blk. */
static double resid2(const double *Xd, const float *Xf, const double *Uc, const double *Z,
		     double s, int in, int out, int k, double *blk)
{
	double acc = 0.0;
	for (int o0 = 0; o0 < out; o0 += BLK_COLS) {
		int b = out - o0 < BLK_COLS ? out - o0 : BLK_COLS;
		size_t nb = (size_t)in * b, off = (size_t)o0 * in;
		for (size_t i = 0; i < nb; i++)
			blk[i] = Xd ? Xd[off + i] : (double)Xf[off + i];
		cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, in, b, k, -s, Uc, in, Z + o0,
			    out, 1.0, blk, in);
		acc += frob2(blk, nb);
	}
	return acc;
}

/* The same for a float32 X with the product in float32 (Uc32 (in, k), Z32 (out, k) column-major,
 * blk32 (in, 2 BLK_COLS) floats): the randomized path's residuals, whose X is float32 anyway. Each
 * entry of the residual carries ~1e-7 of the fit's size; its square is summed in float64. The
 * column blocks are the items of one parallel region (single-threaded sgemm each, one region
 * instead of two a block: cloq_chol.c says why), summed in block order: the same sum whatever
 * the thread count. */
static double resid2_f32(const float *X, const float *Uc32, const float *Z32, double s, int in,
			 int out, int k, float *blk32)
{
	int nblk = (out + BLK_COLS - 1) / BLK_COLS, nth = cloq_team_cap(omp_get_max_threads());
	nth = nth > nblk ? nblk : nth < 1 ? 1 : nth;
	double *part = cloq_malloc((size_t)nblk * sizeof *part);
	float *scratch = nth > 2 ? cloq_malloc((size_t)nth * in * BLK_COLS * sizeof(float)) : NULL;
	if (!scratch) { /* blk32 holds two blocks */
		nth = nth > 2 ? 2 : nth;
		scratch = blk32;
	}
	if (!part) /* no room for the partial sums: one block at a time, in order */
		nth = 1;
	double acc = 0.0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nth) if (nth > 1)
	for (int j = 0; j < nblk; j++) {
		int o0 = j * BLK_COLS, b = out - o0 < BLK_COLS ? out - o0 : BLK_COLS;
		size_t nb = (size_t)in * b, off = (size_t)o0 * in;
		float *w = scratch + (size_t)(nth > 1 ? omp_get_thread_num() : 0) * in * BLK_COLS;
		memcpy(w, X + off, nb * sizeof *w);
		cblas_sgemm(CblasColMajor, CblasNoTrans, CblasTrans, in, b, k, (float)-s, Uc32, in, Z32 + o0, out, 1.0f,
			    w, in);
		double a = 0.0;
		for (size_t i = 0; i < nb; i++)
			a += (double)w[i] * w[i];
		if (part)
			part[j] = a;
		else
			acc += a;
	}
	for (int j = 0; part && j < nblk; j++)
		acc += part[j];
	if (scratch != blk32)
		cloq_free(scratch);
	cloq_free(part);
	return acc;
}

/*
 * The closed form for dW (out, in) against factor f (NULL: R = I). Fills A (rank, in) and
 * B (out, rank); info (may be NULL) gets the objectives. Beyond dW, A and B, the randomized
 * path holds one float32 (in, out) matrix and (in x BLK_COLS) float64 scratch; the exact path
 * (small matrices) holds M in float64.
 */
static int solve_core(const cloq_factor *f, const float *dW, int out, int in,
		      const cloq_lora_params *p, float *A, float *B, cloq_solve_info *info,
		      cloq_err *err)
{
	int rc = CLOQ_OK, r, k, used = 0, sane = 0;
	double *M = NULL, *U = NULL, *V = NULL, *S = NULL, *Y = NULL, *tmp = NULL, *blk = NULL;
	double t0 = cloq_now(), tail = 0.0, total = 0.0, s, cy, cz;
	float *M32 = NULL, *f32 = NULL;
	size_t mb = (size_t)in * out * sizeof(double); /* checked by check_params */

	CLOQ_TRY(check_params(p, out, in, err));
	CLOQ_FAIL_IF(!dW || !A || !B, err, CLOQ_EINPUT, "cloq: NULL matrix argument");
	CLOQ_FAIL_IF(f && f->n != in, err, CLOQ_EINPUT,
		     "cloq: factor is %d wide but the weight has %d inputs", f->n, in);
	sane = 1; /* shapes and buffers agree: A and B may be written */
	CLOQ_TRY(check_finite_f(dW, out, in, "cloq: dW", err));
	r = p->rank;
	k = r < in ? r : in;
	k = k < out ? k : out;
	s = p->scaling;

	/* method: as cloq_solver_svd_topk decides */
	{
		int mn = in < out ? in : out, l = k + p->oversample;
		used = p->svd;
		if (used == CLOQ_SVD_AUTO)
			used = (long long)mn > 4LL * l ? CLOQ_SVD_RANDOMIZED : CLOQ_SVD_EXACT;
		if (used == CLOQ_SVD_RANDOMIZED && l >= mn)
			used = CLOQ_SVD_EXACT;
	}
	U = cloq_aligned_alloc(64, (size_t)in * k * sizeof(double));
	V = cloq_aligned_alloc(64, (size_t)out * k * sizeof(double));
	Y = cloq_aligned_alloc(64, (size_t)in * k * sizeof(double));
	S = cloq_malloc((size_t)k * sizeof(double));
	tmp = cloq_aligned_alloc(64, f && f->kind == CLOQ_FACTOR_EIG && used == CLOQ_SVD_EXACT
					 ? mb : (size_t)in * k * sizeof(double));
	if (used == CLOQ_SVD_EXACT)
		M = cloq_aligned_alloc(64, mb);
	CLOQ_FAIL_IF(!U || !V || !Y || !S || !tmp || (used == CLOQ_SVD_EXACT && !M), err,
		     CLOQ_EIO, "cloq: out of memory (%d x %d, rank %d)", out, in, r);

	if (used == CLOQ_SVD_EXACT) {
		/* M (in, out) column-major = R dW^T in float64 */
		for (size_t i = 0; i < (size_t)in * out; i++)
			M[i] = dW[i];
		apply_R(f, M, out, tmp);
		CLOQ_TRY(cloq_solver_svd_topk(M, in, out, k, CLOQ_SVD_EXACT, 0, 0, 0, U, S, V,
					      &tail, NULL, err));
		total = frob2(M, (size_t)in * out);
	} else {
		double top = 0.0;
		CLOQ_TRY(rsvd_factored(f, dW, in, out, k, p, U, S, V, &total,
				       info ? &M32 : NULL, err));
		for (int j = 0; j < k; j++)
			top += S[j] * S[j];
		/* U S V^T is the truncation of Q Q^T M, so ||M - U S V^T||^2 = ||M||^2 - top */
		tail = total - top > 0.0 ? total - top : 0.0;
	}

	/* Y = R^-1 U S^a, Z = V S^b with a + b = 1: (a, b) = (1/2, 1/2) balanced, (0, 1) all in
	 * B; then s B A = s (Z cz)(Y cy)^T with cy cz = 1/s. */
	cy = p->split == CLOQ_SPLIT_BALANCED ? 1.0 / sqrt(s) : 1.0;
	cz = p->split == CLOQ_SPLIT_BALANCED ? 1.0 / sqrt(s) : 1.0 / s;
	for (int j = 0; j < k; j++) {
		double a = p->split == CLOQ_SPLIT_BALANCED ? sqrt(S[j]) : 1.0;
		double b = p->split == CLOQ_SPLIT_BALANCED ? sqrt(S[j]) : S[j];
		for (int i = 0; i < in; i++)
			Y[(size_t)j * in + i] = U[(size_t)j * in + i] * a * cy;
		for (int o = 0; o < out; o++)
			V[(size_t)j * out + o] *= b * cz; /* V becomes Z */
	}
	solve_R(f, Y, k, tmp);

	/* A (r, in) row-major = Y (in, k) column-major, rows >= k zero; B (out, r) from Z. */
	for (size_t i = 0; i < (size_t)in * k; i++)
		A[i] = (float)Y[i];
	memset(A + (size_t)in * k, 0, (size_t)in * (r - k) * sizeof(float));
	for (int o = 0; o < out; o++)
		for (int j = 0; j < r; j++)
			B[(size_t)o * r + j] = j < k ? (float)V[(size_t)j * out + o] : 0.0f;
	for (size_t i = 0; i < (size_t)in * r; i++)
		CLOQ_FAIL_IF(!isfinite(A[i]), err, CLOQ_EINPUT,
			     "cloq: result not finite (dW or H too large for float32?)");
	for (size_t i = 0; i < (size_t)out * r; i++)
		CLOQ_FAIL_IF(!isfinite(B[i]), err, CLOQ_EINPUT,
			     "cloq: result not finite (dW or H too large for float32?)");

	if (info) {
		double lam = f ? f->lambda : 0.0, damped, e2;
		blk = cloq_aligned_alloc(64, (size_t)in * (out < BLK_COLS ? out : BLK_COLS) * sizeof(double));
		CLOQ_FAIL_IF(!blk, err, CLOQ_EIO, "cloq: out of memory (%d x %d)", out, in);
		if (M32) { /* randomized: float32 copies of the fit's factors */
			f32 = cloq_aligned_alloc(64, ((size_t)in * k * 2 + (size_t)out * k) *
							 sizeof(float));
			CLOQ_FAIL_IF(!f32, err, CLOQ_EIO, "cloq: out of memory (%d x %d)", out, in);
		}
		info->total_energy = total;
		/* damped objective ||R E^T||^2 = ||M - U S V^T||^2 (R Y = U S^a cy): evaluated, not
		 * assumed. The randomized path has M only in float32: the residual is formed in
		 * float32 (entries carry ~1e-7 of the fit) and its squares summed in float64, so
		 * the error scales with the residual, not with ||M|| as ||M||^2 - sum sigma^2
		 * would. */
		for (int j = 0; j < k; j++) {
			double a = p->split == CLOQ_SPLIT_BALANCED ? sqrt(S[j]) : 1.0;
			for (int i = 0; i < in; i++)
				U[(size_t)j * in + i] *= a * cy;
		}
		if (M32) {
			float *U32 = f32, *Y32 = f32 + (size_t)in * k, *Z32 = Y32 + (size_t)in * k;
			for (size_t i = 0; i < (size_t)in * k; i++) {
				U32[i] = (float)U[i];
				Y32[i] = (float)Y[i];
			}
			for (size_t i = 0; i < (size_t)out * k; i++)
				Z32[i] = (float)V[i];
			damped = resid2_f32(M32, U32, Z32, s, in, out, k, (float *)(void *)blk);
			/* E^T = dW^T - s Y Z^T */
			e2 = resid2_f32(dW, Y32, Z32, s, in, out, k, (float *)(void *)blk);
		} else {
			damped = resid2(M, NULL, U, V, s, in, out, k, blk);
			e2 = resid2(NULL, dW, Y, V, s, in, out, k, blk);
		}
		info->objective = damped;
		info->objective_undamped = damped - lam * e2 > 0.0 ? damped - lam * e2 : 0.0;
		info->tail_energy = tail;
		info->lambda = lam;
		if (info->sigma)
			for (int j = 0; j < r; j++)
				info->sigma[j] = j < k ? S[j] : 0.0;
		info->rank_used = k;
		info->method = used;
		info->best_iter = 1;
		info->seconds = cloq_now() - t0;
	}
fail:
	/* documented: on error A and B are zeroed, when their sizes are sane */
	if (rc != CLOQ_OK && sane) {
		memset(A, 0, (size_t)p->rank * in * sizeof(float));
		memset(B, 0, (size_t)out * p->rank * sizeof(float));
	}
	cloq_free(M32);
	cloq_free(f32);
	cloq_free(blk);
	cloq_free(tmp);
	cloq_free(S);
	cloq_free(Y);
	cloq_free(V);
	cloq_free(U);
	cloq_free(M);
	return rc;
}

int cloq_solver_cloq(const cloq_factor *f, const float *dW, int out, int in,
		     const cloq_lora_params *p, float *A, float *B, cloq_solve_info *info,
		     cloq_err *err)
{
	if (!f)
		return cloq_err_set(err, CLOQ_EINPUT, "cloq: NULL factor");
	return solve_core(f, dW, out, in, p, A, B, info, err);
}

int cloq_solver_zero_init(int out, int in, const cloq_lora_params *p, float *A, float *B,
			  cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_rng rng;
	double bound;

	CLOQ_TRY(check_params(p, out, in, err));
	CLOQ_FAIL_IF(!A || !B, err, CLOQ_EINPUT, "zero init: NULL matrix argument");
	bound = 1.0 / sqrt((double)in);
	cloq_rng_seed(&rng, p->seed);
	for (size_t i = 0; i < (size_t)p->rank * in; i++)
		A[i] = (float)(bound * (2.0 * cloq_rng_uniform(&rng) - 1.0));
	memset(B, 0, (size_t)out * p->rank * sizeof(float));
fail:
	return rc;
}

/* ================================================================================================
 * Objectives
 * ============================================================================================= */

#define OBJ_ROWS 256

/* tr(E H E^T) over row blocks of E (out, in) float64; work: (OBJ_ROWS, in). */
static double objective_d(const double *H, const double *E, int out, int in, double *work)
{
	double acc = 0.0;
	for (int o0 = 0; o0 < out; o0 += OBJ_ROWS) {
		int ob = out - o0 < OBJ_ROWS ? out - o0 : OBJ_ROWS;
		const double *e = E + (size_t)o0 * in;
		cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ob, in, in, 1.0, e, in, H,
			    in, 0.0, work, in);
		for (size_t i = 0; i < (size_t)ob * in; i++)
			acc += work[i] * e[i];
	}
	return acc;
}

double cloq_solver_objective(const double *H, const float *E, int out, int in)
{
	double *Ed = NULL, *work = NULL, r = NAN;
	int ob = out < OBJ_ROWS ? out : OBJ_ROWS;

	if (!H || !E || out < 1 || in < 1 || !cloq_bytes3((size_t)OBJ_ROWS, (size_t)in, 8))
		return NAN;
	Ed = cloq_malloc((size_t)ob * in * sizeof(double));
	work = cloq_malloc((size_t)ob * in * sizeof(double));
	if (Ed && work) {
		r = 0.0;
		for (int o0 = 0; o0 < out; o0 += ob) {
			int b = out - o0 < ob ? out - o0 : ob;
			for (size_t i = 0; i < (size_t)b * in; i++)
				Ed[i] = E[(size_t)o0 * in + i];
			r += objective_d(H, Ed, b, in, work);
		}
	}
	cloq_free(work);
	cloq_free(Ed);
	return r;
}

/* L (out, in) row-major float64 = s B A from float32 factors. */
static void lora_product(const float *A, const float *B, double s, int out, int in, int r,
			 double *L, double *Ad, double *Bd)
{
	for (size_t i = 0; i < (size_t)r * in; i++)
		Ad[i] = A[i];
	for (size_t i = 0; i < (size_t)out * r; i++)
		Bd[i] = B[i];
	cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, in, r, s, Bd, r, Ad, in, 0.0,
		    L, in);
}

int cloq_solver_rel_error(const double *H, const float *W, const float *Wq, const float *A,
			  const float *B, double scaling, int out, int in, int rank, double *rel,
			  cloq_err *err)
{
	return cloq_solver_rel_error_den(H, W, Wq, A, B, scaling, out, in, rank, -1.0, rel, err);
}

double cloq_solver_weight_energy(const double *H, const float *W, int out, int in)
{
	double *E = cloq_malloc((size_t)out * in * sizeof(double));
	double *work = cloq_malloc((size_t)(out < OBJ_ROWS ? out : OBJ_ROWS) * in * sizeof(double));
	double den = NAN;
	if (E && work) {
		for (size_t i = 0; i < (size_t)out * in; i++)
			E[i] = W[i];
		den = objective_d(H, E, out, in, work);
	}
	cloq_free(work);
	cloq_free(E);
	return den;
}

int cloq_solver_rel_error_den(const double *H, const float *W, const float *Wq, const float *A,
			      const float *B, double scaling, int out, int in, int rank, double den_in,
			      double *rel, cloq_err *err)
{
	int rc = CLOQ_OK, lora = A && B;
	double *E = NULL, *Ad = NULL, *Bd = NULL, *work = NULL, num, den;
	size_t eb = cloq_bytes3((size_t)out > 0 ? out : 0, (size_t)in > 0 ? in : 0, 8);

	CLOQ_FAIL_IF(!H || !W || !Wq || !rel || out < 1 || in < 1 || !eb ||
		     (lora && (rank < 1 || !cloq_bytes3(rank, out > in ? out : in, 8))),
		     err, CLOQ_EINPUT, "rel error: bad arguments (%d x %d, rank %d)", out, in,
		     rank);
	E = cloq_malloc(eb);
	work = cloq_malloc((size_t)(out < OBJ_ROWS ? out : OBJ_ROWS) * in * sizeof(double));
	if (lora) {
		Ad = cloq_malloc((size_t)rank * in * sizeof(double));
		Bd = cloq_malloc((size_t)out * rank * sizeof(double));
	}
	CLOQ_FAIL_IF(!E || !work || (lora && (!Ad || !Bd)), err, CLOQ_EIO,
		     "rel error: out of memory (%d x %d)", out, in);
	if (den_in >= 0.0) {
		den = den_in;
	} else {
		for (size_t i = 0; i < (size_t)out * in; i++)
			E[i] = W[i];
		den = objective_d(H, E, out, in, work);
	}
	if (lora)
		lora_product(A, B, scaling, out, in, rank, E, Ad, Bd);
	else
		memset(E, 0, eb);
	for (size_t i = 0; i < (size_t)out * in; i++)
		E[i] = ((double)W[i] - (double)Wq[i]) - E[i];
	num = objective_d(H, E, out, in, work);
	CLOQ_FAIL_IF(!isfinite(num) || !isfinite(den), err, CLOQ_EINPUT,
		     "rel error: non-finite objective (non-finite input?)");
	num = num > 0.0 ? num : 0.0;
	*rel = num == 0.0 ? 0.0 : den > 0.0 ? sqrt(num / den) : INFINITY;
fail:
	cloq_free(Bd);
	cloq_free(Ad);
	cloq_free(work);
	cloq_free(E);
	return rc;
}

/* ================================================================================================
 * Alternating methods (the quantizer is a callback)
 * ============================================================================================= */

static int call_quantizer(const cloq_quantizer_cb *qcb, const float *target, float *Wq, int out,
			  int in, int iter, cloq_err *err)
{
	int rc = qcb->quantize(qcb->ctx, target, Wq, err);
	if (rc != CLOQ_OK)
		return cloq_err_wrap(err, rc, "quantizer callback (iteration %d)", iter);
	return check_finite_f(Wq, out, in, "quantizer callback output", err);
}

/* Ad (r, in), Bd (out, r) float64 copies of the float32 factors, for lora_rows. */
static void lora_d(const float *A, const float *B, int out, int in, int r, double *Ad, double *Bd)
{
	for (size_t i = 0; i < (size_t)r * in; i++)
		Ad[i] = A[i];
	for (size_t i = 0; i < (size_t)out * r; i++)
		Bd[i] = B[i];
}

/* L (b, in) row-major float64 = rows o0 .. o0 + b of s B A. */
static void lora_rows(const double *Ad, const double *Bd, double s, int o0, int b, int in, int r,
		      double *L)
{
	cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, in, r, s, Bd + (size_t)o0 * r, r,
		    Ad, in, 0.0, L, in);
}

/* target = W - s B A in float32, OBJ_ROWS rows at a time (L: (OBJ_ROWS, in) scratch). */
static void lora_target(const float *W, const float *A, const float *B, double s, int out,
			int in, int r, double *Ad, double *Bd, double *L, float *target)
{
	lora_d(A, B, out, in, r, Ad, Bd);
	for (int o0 = 0; o0 < out; o0 += OBJ_ROWS) {
		int b = out - o0 < OBJ_ROWS ? out - o0 : OBJ_ROWS;
		size_t off = (size_t)o0 * in;
		lora_rows(Ad, Bd, s, o0, b, in, r, L);
		for (size_t i = 0; i < (size_t)b * in; i++)
			target[off + i] = (float)((double)W[off + i] - L[i]);
	}
}

int cloq_solver_loftq(const float *W, int out, int in, const cloq_quantizer_cb *qcb,
		      const cloq_lora_params *p, int iters, float *Wq, float *A, float *B,
		      cloq_err *err)
{
	int rc = CLOQ_OK;
	float *target = NULL, *res = NULL;
	double *L = NULL, *Ad = NULL, *Bd = NULL;

	CLOQ_TRY(check_params(p, out, in, err));
	CLOQ_FAIL_IF(!W || !Wq || !A || !B || !qcb || !qcb->quantize || iters < 1, err,
		     CLOQ_EINPUT, "loftq: bad arguments (iterations %d)", iters);
	CLOQ_TRY(check_finite_f(W, out, in, "loftq: W", err));
	res = cloq_malloc((size_t)out * in * sizeof(float));
	if (iters > 1) {
		target = cloq_malloc((size_t)out * in * sizeof(float));
		L = cloq_malloc((size_t)(out < OBJ_ROWS ? out : OBJ_ROWS) * in * sizeof(double));
		Ad = cloq_malloc((size_t)p->rank * in * sizeof(double));
		Bd = cloq_malloc((size_t)out * p->rank * sizeof(double));
	}
	CLOQ_FAIL_IF(!res || (iters > 1 && (!target || !L || !Ad || !Bd)), err, CLOQ_EIO,
		     "loftq: out of memory (%d x %d)", out, in);
	for (int t = 1; t <= iters; t++) {
		/* PEFT: B A = 0 at the start, so the first target is W itself */
		CLOQ_TRY(call_quantizer(qcb, t == 1 ? W : target, Wq, out, in, t, err));
		if (t == iters && qcb->keep)
			qcb->keep(qcb->ctx);
		for (size_t i = 0; i < (size_t)out * in; i++)
			res[i] = W[i] - Wq[i];
		CLOQ_TRY(solve_core(NULL, res, out, in, p, A, B, NULL, err));
		if (t < iters)
			lora_target(W, A, B, p->scaling, out, in, p->rank, Ad, Bd, L, target);
	}
fail:
	cloq_free(Bd);
	cloq_free(Ad);
	cloq_free(L);
	cloq_free(res);
	cloq_free(target);
	return rc;
}

int cloq_solver_cloq_alt(const float *W, const cloq_factor *f, const double *H, int out, int in,
			 const cloq_quantizer_cb *qcb, const cloq_lora_params *p, int iters,
			 float *Wq, float *A, float *B, cloq_solve_info *info, cloq_err *err)
{
	int rc = CLOQ_OK, r;
	float *target = NULL, *wq = NULL, *dw = NULL, *a = NULL, *b = NULL;
	double *L = NULL, *Ad = NULL, *Bd = NULL, *work = NULL, *sig = NULL;
	double best = INFINITY, t0 = cloq_now();
	size_t wn = (size_t)out * in;
	cloq_solve_info it, kept;

	memset(&kept, 0, sizeof kept);
	CLOQ_TRY(check_params(p, out, in, err));
	CLOQ_FAIL_IF(!W || !f || !Wq || !A || !B || !qcb || !qcb->quantize || iters < 1, err,
		     CLOQ_EINPUT, "cloq alt: bad arguments (iterations %d)", iters);
	CLOQ_FAIL_IF(f->n != in, err, CLOQ_EINPUT,
		     "cloq alt: factor is %d wide but the weight has %d inputs", f->n, in);
	CLOQ_TRY(check_finite_f(W, out, in, "cloq alt: W", err));
	r = p->rank;
	dw = cloq_malloc(wn * sizeof(float));
	sig = cloq_malloc((size_t)r * sizeof(double));
	if (iters > 1) {
		/* the iterates live apart from the best one; one iterate is written in place */
		target = cloq_malloc(wn * sizeof(float));
		wq = cloq_malloc(wn * sizeof(float));
		a = cloq_malloc((size_t)r * in * sizeof(float));
		b = cloq_malloc((size_t)out * r * sizeof(float));
		L = cloq_malloc((size_t)(out < OBJ_ROWS ? out : OBJ_ROWS) * in * sizeof(double));
		work = cloq_malloc((size_t)(out < OBJ_ROWS ? out : OBJ_ROWS) * in * sizeof(double));
		Ad = cloq_malloc((size_t)r * in * sizeof(double));
		Bd = cloq_malloc((size_t)out * r * sizeof(double));
	}
	CLOQ_FAIL_IF(!dw || !sig || (iters > 1 && (!target || !wq || !a || !b || !L || !work ||
						   !Ad || !Bd)),
		     err, CLOQ_EIO, "cloq alt: out of memory (%d x %d)", out, in);
	for (int t = 1; t <= iters; t++) {
		float *wq_t = iters > 1 ? wq : Wq, *a_t = iters > 1 ? a : A, *b_t = iters > 1 ? b : B;
		double obj;
		memset(&it, 0, sizeof it);
		it.sigma = sig;
		CLOQ_TRY(call_quantizer(qcb, t == 1 ? W : target, wq_t, out, in, t, err));
		for (size_t i = 0; i < wn; i++)
			dw[i] = W[i] - wq_t[i];
		CLOQ_TRY(solve_core(f, dw, out, in, p, a_t, b_t, &it, err));
		obj = it.objective_undamped;
		if (H && iters > 1) {
			/* rank the iterates by what is actually stored: float32 Wq, A, B */
			lora_d(a_t, b_t, out, in, r, Ad, Bd);
			obj = 0.0;
			for (int o0 = 0; o0 < out; o0 += OBJ_ROWS) {
				int bb = out - o0 < OBJ_ROWS ? out - o0 : OBJ_ROWS;
				size_t off = (size_t)o0 * in;
				lora_rows(Ad, Bd, p->scaling, o0, bb, in, r, L);
				for (size_t i = 0; i < (size_t)bb * in; i++)
					L[i] = (double)dw[off + i] - L[i];
				obj += objective_d(H, L, bb, in, work);
			}
			it.objective_undamped = obj;
		}
		CLOQ_FAIL_IF(!isfinite(obj), err, CLOQ_EINPUT,
			     "cloq alt: non-finite objective at iteration %d", t);
		if (t == 1 || obj < best) {
			best = obj;
			if (iters > 1) {
				memcpy(Wq, wq_t, wn * sizeof(float));
				memcpy(A, a_t, (size_t)r * in * sizeof(float));
				memcpy(B, b_t, (size_t)out * r * sizeof(float));
			}
			kept = it;
			kept.best_iter = t;
			if (info && info->sigma)
				memcpy(info->sigma, sig, (size_t)r * sizeof(double));
			if (qcb->keep)
				qcb->keep(qcb->ctx);
		}
		if (t < iters)
			lora_target(W, a_t, b_t, p->scaling, out, in, r, Ad, Bd, L, target);
	}
	if (info) {
		kept.sigma = info->sigma;
		*info = kept;
		info->seconds = cloq_now() - t0;
	}
fail:
	cloq_free(sig);
	cloq_free(work);
	cloq_free(Bd);
	cloq_free(Ad);
	cloq_free(L);
	cloq_free(b);
	cloq_free(a);
	cloq_free(dw);
	cloq_free(wq);
	cloq_free(target);
	return rc;
}

/* ================================================================================================
 * Objectives through the factor
 * ============================================================================================= */

#define FOBJ_COLS 1024

double cloq_solver_factor_objective(const cloq_factor *f, const float *E, int out, int in)
{
	double acc = 0.0, e2 = 0.0, num;
	size_t cols = (size_t)(out < FOBJ_COLS ? out : FOBJ_COLS);
	float *X = NULL;
	double *Xd = NULL, *tmp = NULL;

	if (!f || !E || out < 1 || in < 1 || f->n != in || !cloq_bytes3(in, cols, 8))
		return NAN;
	if (f->R32) {
		X = cloq_aligned_alloc(64, (size_t)in * cols * sizeof(float));
		if (!X)
			return NAN;
	} else {
		Xd = cloq_aligned_alloc(64, (size_t)in * cols * sizeof(double));
		tmp = cloq_aligned_alloc(64, (size_t)in * cols * sizeof(double));
		if (!Xd || !tmp) {
			cloq_free(Xd);
			cloq_free(tmp);
			return NAN;
		}
	}
	/* rows o0 .. o0 + b of E (row-major) are the columns of E^T (column-major, ld in) */
	for (int o0 = 0; o0 < out; o0 += (int)cols) {
		int b = out - o0 < (int)cols ? out - o0 : (int)cols;
		size_t nb = (size_t)in * b;
		const float *e = E + (size_t)o0 * in;
		for (size_t i = 0; i < nb; i++)
			e2 += (double)e[i] * e[i];
		if (X) {
			memcpy(X, e, nb * sizeof(float));
			cblas_strmm(CblasColMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit,
				    in, b, 1.0f, f->R32, in, X, in);
			for (size_t i = 0; i < nb; i++)
				acc += (double)X[i] * X[i];
		} else {
			for (size_t i = 0; i < nb; i++)
				Xd[i] = e[i];
			apply_R(f, Xd, b, tmp);
			acc += frob2(Xd, nb);
		}
	}
	cloq_free(X);
	cloq_free(Xd);
	cloq_free(tmp);
	num = acc - f->lambda * e2;
	return num > 0.0 ? num : 0.0;
}
