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
	int rc = CLOQ_OK, info = 1;
	double md = 0.0, rel = lambda_rel;
	cloq_factor *f = NULL;

	if (out)
		*out = NULL;
	CLOQ_FAIL_IF(!out, err, CLOQ_EINPUT, "factor: NULL output");
	CLOQ_TRY(check_gram(H, n, lambda_rel, &md, err));
	f = factor_new(n, CLOQ_FACTOR_CHOLESKY, err);
	CLOQ_FAIL_IF(!f, err, CLOQ_EIO, "factor: out of memory for a %d x %d factor", n, n);
	f->mean_diag = md;
	for (;;) {
		double lam = md > 0.0 ? rel * md : 1.0;
		memcpy(f->R, H, (size_t)n * n * sizeof(double));
		for (int i = 0; i < n; i++)
			f->R[(size_t)i * n + i] += lam;
		info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', n, f->R, n);
		CLOQ_FAIL_IF(info < 0, err, CLOQ_EIO, "factor: dpotrf argument error %d", info);
		if (info == 0) {
			f->lambda = lam;
			f->lambda_rel = rel;
			break;
		}
		rel = next_lambda_rel(rel);
		CLOQ_FAIL_IF(rel > CLOQ_LAMBDA_REL_MAX * (1.0 + 1e-9), err, CLOQ_EINPUT,
			     "factor: H + lambda I (n = %d) not positive definite even at lambda = "
			     "%g * mean diag (pivot %d)", n, CLOQ_LAMBDA_REL_MAX, info);
		f->escalations++;
	}
	/* dpotrf leaves the strict lower part as it was (H): clear it so R is R. */
	for (int j = 0; j < n; j++)
		memset(f->R + (size_t)j * n + j + 1, 0, (size_t)(n - j - 1) * sizeof(double));
	*out = f;
	return CLOQ_OK;
fail:
	cloq_factor_free(f);
	return rc;
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

/* X (n, k) column-major <- R^T X. tmp: (n, k). */
static void apply_RT(const cloq_factor *f, double *X, int k, double *tmp)
{
	int n;
	if (!f)
		return;
	n = f->n;
	if (f->kind == CLOQ_FACTOR_CHOLESKY) {
		cblas_dtrmm(CblasColMajor, CblasLeft, CblasUpper, CblasTrans, CblasNonUnit, n, k,
			    1.0, f->R, n, X, n);
		return;
	}
	/* R^T = V D */
	for (int j = 0; j < k; j++)
		for (int i = 0; i < n; i++)
			tmp[(size_t)j * n + i] = f->d[i] * X[(size_t)j * n + i];
	cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, k, n, 1.0, f->R, n, tmp, n, 0.0,
		    X, n);
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

/*
 * The fast path's truncated SVD of M = R dW^T without M in float64: M32 = R dW^T by one float32
 * trmm (2x the speed of float64), the range Q of M32 by float32 power iterations, then in
 * float64 the projection Q^T M = (R^T Q)^T dW^T (an (in, in) x l product and an l x in x out one,
 * both small next to forming M) and its SVD. So only the subspace carries float32 error, and
 * the objective excess it causes is second order in it. Wd: dW^T (in, out) column-major float64.
 * total gets ||M32||_F^2 accumulated in float64; *M32_out (NULL: freed here) receives M32.
 */
static int rsvd_factored(const cloq_factor *f, const float *dW, const double *Wd, int in,
			 int out, int k, const cloq_lora_params *p, double *U, double *S,
			 double *V, double *total, float **M32_out, cloq_err *err)
{
	int rc = CLOQ_OK, l = k + p->oversample, info;
	float *M32 = NULL, *R32 = NULL;
	double *Q = NULL, *P = NULL, *Bs = NULL, *Ub = NULL, *VT = NULL, *s = NULL, *tmp = NULL;
	double *Mt = NULL, acc = 0.0;

	M32 = cloq_aligned_alloc(64, (size_t)in * out * sizeof(float));
	Q = cloq_aligned_alloc(64, (size_t)in * l * sizeof(double));
	P = cloq_aligned_alloc(64, (size_t)in * l * sizeof(double));
	tmp = cloq_aligned_alloc(64, (size_t)in * l * sizeof(double));
	Bs = cloq_aligned_alloc(64, (size_t)l * out * sizeof(double));
	Ub = cloq_aligned_alloc(64, (size_t)l * l * sizeof(double));
	VT = cloq_aligned_alloc(64, (size_t)l * out * sizeof(double));
	s = cloq_malloc((size_t)l * sizeof(double));
	CLOQ_FAIL_IF(!M32 || !Q || !P || !tmp || !Bs || !Ub || !VT || !s, err, CLOQ_EIO,
		     "cloq: out of memory (randomized, %d x %d, sketch %d)", out, in, l);
	memcpy(M32, dW, (size_t)in * out * sizeof(float)); /* = dW^T column-major */
	if (f && f->kind == CLOQ_FACTOR_CHOLESKY) {
		R32 = cloq_aligned_alloc(64, (size_t)in * in * sizeof(float));
		CLOQ_FAIL_IF(!R32, err, CLOQ_EIO, "cloq: out of memory (%d x %d factor copy)", in,
			     in);
		for (size_t i = 0; i < (size_t)in * in; i++)
			R32[i] = (float)f->R[i];
		cblas_strmm(CblasColMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, in,
			    out, 1.0f, R32, in, M32, in);
		cloq_free(R32);
		R32 = NULL;
	} else if (f) {
		/* the eigen root has no triangular structure to exploit: float64 product */
		Mt = cloq_aligned_alloc(64, (size_t)in * out * sizeof(double) * 2);
		CLOQ_FAIL_IF(!Mt, err, CLOQ_EIO, "cloq: out of memory (%d x %d)", out, in);
		memcpy(Mt, Wd, (size_t)in * out * sizeof(double));
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
	if (M32_out) {
		*M32_out = M32;
	} else {
		cloq_free(M32);
	}
	M32 = NULL;
	memcpy(P, Q, (size_t)in * l * sizeof(double));
	apply_RT(f, P, l, tmp);
	cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, l, out, in, 1.0, P, in, Wd, in, 0.0,
		    Bs, l);
	info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'S', l, out, Bs, l, s, Ub, l, VT, l);
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
fail:
	cloq_free(Mt);
	cloq_free(R32);
	cloq_free(s);
	cloq_free(VT);
	cloq_free(Ub);
	cloq_free(Bs);
	cloq_free(tmp);
	cloq_free(P);
	cloq_free(Q);
	cloq_free(M32);
	return rc;
}

/*
 * The closed form for dW (out, in) against factor f (NULL: R = I). Fills A (rank, in) and
 * B (out, rank); info (may be NULL) gets the objectives.
 */
static int solve_core(const cloq_factor *f, const float *dW, int out, int in,
		      const cloq_lora_params *p, float *A, float *B, cloq_solve_info *info,
		      cloq_err *err)
{
	int rc = CLOQ_OK, r, k, used = 0, sane = 0;
	double *M = NULL, *T = NULL, *U = NULL, *V = NULL, *S = NULL, *Y = NULL, *tmp = NULL;
	double t0 = cloq_now(), tail = 0.0, total = 0.0, s, cy, cz;
	float *M32 = NULL;
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

	M = cloq_aligned_alloc(64, mb);
	U = cloq_aligned_alloc(64, (size_t)in * k * sizeof(double));
	V = cloq_aligned_alloc(64, (size_t)out * k * sizeof(double));
	Y = cloq_aligned_alloc(64, (size_t)in * k * sizeof(double));
	S = cloq_malloc((size_t)k * sizeof(double));
	tmp = cloq_aligned_alloc(64, f && f->kind == CLOQ_FACTOR_EIG ? mb
					 : (size_t)in * k * sizeof(double));
	CLOQ_FAIL_IF(!M || !U || !V || !Y || !S || !tmp, err, CLOQ_EIO,
		     "cloq: out of memory (%d x %d, rank %d)", out, in, r);

	/* method: as cloq_solver_svd_topk decides */
	{
		int mn = in < out ? in : out, l = k + p->oversample;
		used = p->svd;
		if (used == CLOQ_SVD_AUTO)
			used = (long long)mn > 4LL * l ? CLOQ_SVD_RANDOMIZED : CLOQ_SVD_EXACT;
		if (used == CLOQ_SVD_RANDOMIZED && l >= mn)
			used = CLOQ_SVD_EXACT;
	}
	/* M (in, out) column-major = dW^T in float64 */
	for (size_t i = 0; i < (size_t)in * out; i++)
		M[i] = dW[i];
	if (used == CLOQ_SVD_EXACT) {
		apply_R(f, M, out, tmp); /* M = R dW^T */
		CLOQ_TRY(cloq_solver_svd_topk(M, in, out, k, CLOQ_SVD_EXACT, 0, 0, 0, U, S, V,
					      &tail, NULL, err));
		total = frob2(M, (size_t)in * out);
	} else {
		double top = 0.0;
		CLOQ_TRY(rsvd_factored(f, dW, M, in, out, k, p, U, S, V, &total,
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
		T = cloq_aligned_alloc(64, mb);
		CLOQ_FAIL_IF(!T, err, CLOQ_EIO, "cloq: out of memory (%d x %d)", out, in);
		info->total_energy = total;
		/* damped objective ||R E^T||^2 = ||M - U S V^T||^2 (R Y = U S^a cy): evaluated, not
		 * assumed. The randomized path has M only in float32: the residual is summed in
		 * float64 from it, so its error scales with sqrt(tail), not with ||M|| as
		 * ||M||^2 - sum sigma^2 would. */
		if (used != CLOQ_SVD_EXACT)
			for (size_t i = 0; i < (size_t)in * out; i++)
				M[i] = M32[i];
		for (int j = 0; j < k; j++) {
			double a = p->split == CLOQ_SPLIT_BALANCED ? sqrt(S[j]) : 1.0;
			for (int i = 0; i < in; i++)
				U[(size_t)j * in + i] *= a * cy;
		}
		cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, in, out, k, -s, U, in, V, out,
			    1.0, M, in);
		damped = frob2(M, (size_t)in * out);
		/* E^T = dW^T - s Y Z^T */
		for (size_t i = 0; i < (size_t)in * out; i++)
			T[i] = dW[i];
		cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, in, out, k, -s, Y, in, V, out,
			    1.0, T, in);
		e2 = frob2(T, (size_t)in * out);
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
	cloq_free(T);
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
	target = cloq_malloc((size_t)out * in * sizeof(float));
	res = cloq_malloc((size_t)out * in * sizeof(float));
	L = cloq_malloc((size_t)out * in * sizeof(double));
	Ad = cloq_malloc((size_t)p->rank * in * sizeof(double));
	Bd = cloq_malloc((size_t)out * p->rank * sizeof(double));
	CLOQ_FAIL_IF(!target || !res || !L || !Ad || !Bd, err, CLOQ_EIO,
		     "loftq: out of memory (%d x %d)", out, in);
	memcpy(target, W, (size_t)out * in * sizeof(float)); /* PEFT: B A = 0 at the start */
	for (int t = 1; t <= iters; t++) {
		CLOQ_TRY(call_quantizer(qcb, target, Wq, out, in, t, err));
		if (t == iters && qcb->keep)
			qcb->keep(qcb->ctx);
		for (size_t i = 0; i < (size_t)out * in; i++)
			res[i] = W[i] - Wq[i];
		CLOQ_TRY(solve_core(NULL, res, out, in, p, A, B, NULL, err));
		if (t < iters) {
			lora_product(A, B, p->scaling, out, in, p->rank, L, Ad, Bd);
			for (size_t i = 0; i < (size_t)out * in; i++)
				target[i] = (float)((double)W[i] - L[i]);
		}
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
	double *L = NULL, *E = NULL, *Ad = NULL, *Bd = NULL, *work = NULL, *sig = NULL;
	double best = INFINITY, t0 = cloq_now();
	cloq_solve_info it, kept;

	memset(&kept, 0, sizeof kept);
	CLOQ_TRY(check_params(p, out, in, err));
	CLOQ_FAIL_IF(!W || !f || !Wq || !A || !B || !qcb || !qcb->quantize || iters < 1, err,
		     CLOQ_EINPUT, "cloq alt: bad arguments (iterations %d)", iters);
	CLOQ_FAIL_IF(f->n != in, err, CLOQ_EINPUT,
		     "cloq alt: factor is %d wide but the weight has %d inputs", f->n, in);
	CLOQ_TRY(check_finite_f(W, out, in, "cloq alt: W", err));
	r = p->rank;
	target = cloq_malloc((size_t)out * in * sizeof(float));
	wq = cloq_malloc((size_t)out * in * sizeof(float));
	dw = cloq_malloc((size_t)out * in * sizeof(float));
	a = cloq_malloc((size_t)r * in * sizeof(float));
	b = cloq_malloc((size_t)out * r * sizeof(float));
	L = cloq_malloc((size_t)out * in * sizeof(double));
	E = cloq_malloc((size_t)out * in * sizeof(double));
	Ad = cloq_malloc((size_t)r * in * sizeof(double));
	Bd = cloq_malloc((size_t)out * r * sizeof(double));
	work = cloq_malloc((size_t)(out < OBJ_ROWS ? out : OBJ_ROWS) * in * sizeof(double));
	sig = cloq_malloc((size_t)r * sizeof(double));
	CLOQ_FAIL_IF(!target || !wq || !dw || !a || !b || !L || !E || !Ad || !Bd || !work || !sig,
		     err, CLOQ_EIO, "cloq alt: out of memory (%d x %d)", out, in);
	memcpy(target, W, (size_t)out * in * sizeof(float));
	for (int t = 1; t <= iters; t++) {
		double obj;
		memset(&it, 0, sizeof it);
		it.sigma = sig;
		CLOQ_TRY(call_quantizer(qcb, target, wq, out, in, t, err));
		for (size_t i = 0; i < (size_t)out * in; i++)
			dw[i] = W[i] - wq[i];
		CLOQ_TRY(solve_core(f, dw, out, in, p, a, b, &it, err));
		/* rank the iterates by what is actually stored: float32 Wq, A, B */
		lora_product(a, b, p->scaling, out, in, r, L, Ad, Bd);
		if (H) {
			for (size_t i = 0; i < (size_t)out * in; i++)
				E[i] = (double)dw[i] - L[i];
			obj = objective_d(H, E, out, in, work);
			it.objective_undamped = obj;
		} else {
			obj = it.objective;
		}
		CLOQ_FAIL_IF(!isfinite(obj), err, CLOQ_EINPUT,
			     "cloq alt: non-finite objective at iteration %d", t);
		if (t == 1 || obj < best) {
			best = obj;
			memcpy(Wq, wq, (size_t)out * in * sizeof(float));
			memcpy(A, a, (size_t)r * in * sizeof(float));
			memcpy(B, b, (size_t)out * r * sizeof(float));
			kept = it;
			kept.best_iter = t;
			if (info && info->sigma)
				memcpy(info->sigma, sig, (size_t)r * sizeof(double));
			if (qcb->keep)
				qcb->keep(qcb->ctx);
		}
		if (t < iters)
			for (size_t i = 0; i < (size_t)out * in; i++)
				target[i] = (float)((double)W[i] - L[i]);
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
	cloq_free(E);
	cloq_free(L);
	cloq_free(b);
	cloq_free(a);
	cloq_free(dw);
	cloq_free(wq);
	cloq_free(target);
	return rc;
}
