/*
 * cloq_svd.c - truncated SVD: exact (LAPACK dgesdd) and randomized (Halko, Martinsson, Tropp,
 * "Finding structure with randomness", SIAM Review 2011, algorithms 4.4 + 5.1).
 * Matrices here are column-major, as LAPACK wants them.
 */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <string.h>

#include "cloq_solver_internal.h"

/* Flip singular pairs so that each left vector's largest-magnitude entry (the first such) is
 * positive: SVD is unique only up to these signs, and fixing them makes exact and randomized
 * results comparable and every run reproducible. */
void cloq_svd_fix_signs(double *U, int m, double *V, int n, int k)
{
	for (int j = 0; j < k; j++) {
		double *u = U + (size_t)j * m, best = 0.0;
		int at = 0;
		for (int i = 0; i < m; i++)
			if (fabs(u[i]) > best) {
				best = fabs(u[i]);
				at = i;
			}
		if (u[at] < 0.0) {
			cblas_dscal(m, -1.0, u, 1);
			cblas_dscal(n, -1.0, V + (size_t)j * n, 1);
		}
	}
}

static double frob2(const double *x, size_t n)
{
	double s = 0.0;
	for (size_t i = 0; i < n; i++)
		s += x[i] * x[i];
	return s;
}

static int svd_exact(const double *M, int m, int n, int k, double *U, double *S, double *V,
		     double *tail, cloq_err *err)
{
	int rc = CLOQ_OK, mn = m < n ? m : n, info;
	double *A = NULL, *Uf = NULL, *VT = NULL, *s = NULL;
	size_t ab = cloq_bytes3(m, n, sizeof(double)), ub = cloq_bytes3(m, mn, sizeof(double));
	size_t vb = cloq_bytes3(mn, n, sizeof(double));

	CLOQ_FAIL_IF(!ab || !ub || !vb, err, CLOQ_EINPUT, "svd: %d x %d too large", m, n);
	A = cloq_aligned_alloc(64, ab);
	Uf = cloq_aligned_alloc(64, ub);
	VT = cloq_aligned_alloc(64, vb);
	s = cloq_malloc((size_t)mn * sizeof(double));
	CLOQ_FAIL_IF(!A || !Uf || !VT || !s, err, CLOQ_EIO, "svd: out of memory (%d x %d)", m, n);
	memcpy(A, M, (size_t)m * n * sizeof(double));
	info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'S', m, n, A, m, s, Uf, m, VT, mn);
	CLOQ_FAIL_IF(info != 0, err, CLOQ_EIO, "svd: dgesdd failed (info %d) on %d x %d", info, m,
		     n);
	memcpy(U, Uf, (size_t)m * k * sizeof(double));
	for (int j = 0; j < k; j++) {
		S[j] = s[j];
		for (int i = 0; i < n; i++)
			V[(size_t)j * n + i] = VT[j + (size_t)i * mn];
	}
	if (tail) {
		/* sum the small ones first: less rounding than ||M||^2 - top */
		double t = 0.0;
		for (int j = mn - 1; j >= k; j--)
			t += s[j] * s[j];
		*tail = t;
	}
fail:
	cloq_free(s);
	cloq_free(VT);
	cloq_free(Uf);
	cloq_free(A);
	return rc;
}

/* Q <- orthonormal basis of the columns of Y (m, l), m >= l, in place (Householder QR). */
static int orthonormalize(double *Y, int m, int l, double *tau, cloq_err *err)
{
	int nth = cloq_blas_serial_begin();
	int info = LAPACKE_dgeqrf(LAPACK_COL_MAJOR, m, l, Y, m, tau);
	if (info == 0)
		info = LAPACKE_dorgqr(LAPACK_COL_MAJOR, m, l, l, Y, m, tau);
	cloq_blas_serial_end(nth);
	if (info != 0)
		return cloq_err_set(err, CLOQ_EIO, "svd: QR failed (info %d) on %d x %d", info, m,
				    l);
	return CLOQ_OK;
}

static int svd_randomized(const double *M, int m, int n, int k, int l, int q, uint64_t seed,
			  double *U, double *S, double *V, double *tail, cloq_err *err)
{
	int rc = CLOQ_OK, info;
	double *Om = NULL, *Y = NULL, *Z = NULL, *Bs = NULL, *Ub = NULL, *VT = NULL, *s = NULL;
	double *tau = NULL;
	cloq_rng rng;

	Om = cloq_aligned_alloc(64, (size_t)n * l * sizeof(double));
	Y = cloq_aligned_alloc(64, (size_t)m * l * sizeof(double));
	Z = cloq_aligned_alloc(64, (size_t)n * l * sizeof(double));
	Bs = cloq_aligned_alloc(64, (size_t)l * n * sizeof(double));
	Ub = cloq_aligned_alloc(64, (size_t)l * l * sizeof(double));
	VT = cloq_aligned_alloc(64, (size_t)l * n * sizeof(double));
	s = cloq_malloc((size_t)l * sizeof(double));
	tau = cloq_malloc((size_t)l * sizeof(double));
	CLOQ_FAIL_IF(!Om || !Y || !Z || !Bs || !Ub || !VT || !s || !tau, err, CLOQ_EIO,
		     "svd: out of memory (randomized, %d x %d, sketch %d)", m, n, l);

	cloq_rng_seed(&rng, seed);
	cloq_rng_gauss(&rng, Om, (size_t)n * l);
	/* Y = M Omega; Q = orth(Y) */
	cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, m, l, n, 1.0, M, m, Om, n, 0.0, Y,
		    m);
	CLOQ_TRY(orthonormalize(Y, m, l, tau, err));
	for (int it = 0; it < q; it++) {
		/* Z = orth(M^T Q); Q = orth(M Z): re-orthonormalising each half-step keeps the small
		 * singular directions from drowning in rounding (HMT algorithm 4.4). */
		cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, n, l, m, 1.0, M, m, Y, m, 0.0,
			    Z, n);
		CLOQ_TRY(orthonormalize(Z, n, l, tau, err));
		cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, m, l, n, 1.0, M, m, Z, n,
			    0.0, Y, m);
		CLOQ_TRY(orthonormalize(Y, m, l, tau, err));
	}
	/* Bs (l, n) = Q^T M; its SVD Ub S VT; U = Q Ub */
	cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, l, n, m, 1.0, Y, m, M, m, 0.0, Bs, l);
	{
		int nth = cloq_blas_serial_begin();
		info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'S', l, n, Bs, l, s, Ub, l, VT, l);
		cloq_blas_serial_end(nth);
	}
	CLOQ_FAIL_IF(info != 0, err, CLOQ_EIO, "svd: dgesdd failed (info %d) on the %d x %d "
		     "projection", info, l, n);
	cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, m, k, l, 1.0, Y, m, Ub, l, 0.0, U,
		    m);
	for (int j = 0; j < k; j++) {
		S[j] = s[j];
		for (int i = 0; i < n; i++)
			V[(size_t)j * n + i] = VT[j + (size_t)i * l];
	}
	if (tail) {
		double top = 0.0, tot = frob2(M, (size_t)m * n);
		for (int j = 0; j < k; j++)
			top += s[j] * s[j];
		*tail = tot - top > 0.0 ? tot - top : 0.0;
	}
fail:
	cloq_free(tau);
	cloq_free(s);
	cloq_free(VT);
	cloq_free(Ub);
	cloq_free(Bs);
	cloq_free(Z);
	cloq_free(Y);
	cloq_free(Om);
	return rc;
}

int cloq_solver_svd_topk(const double *M, int m, int n, int k, int method, int oversample,
			 int power_iters, uint64_t seed, double *U, double *S, double *V,
			 double *tail, int *used, cloq_err *err)
{
	int rc = CLOQ_OK, mn = m < n ? m : n, l;

	CLOQ_FAIL_IF(m < 1 || n < 1 || k < 1 || k > mn, err, CLOQ_EINPUT,
		     "svd: bad sizes (%d x %d, rank %d)", m, n, k);
	CLOQ_FAIL_IF(method < CLOQ_SVD_AUTO || method > CLOQ_SVD_RANDOMIZED || oversample < 0 ||
		     power_iters < 0, err, CLOQ_EINPUT,
		     "svd: bad method %d / oversample %d / power iterations %d", method,
		     oversample, power_iters);
	l = k + oversample;
	if (method == CLOQ_SVD_AUTO)
		method = (long long)mn > 4LL * l ? CLOQ_SVD_RANDOMIZED : CLOQ_SVD_EXACT;
	if (method == CLOQ_SVD_RANDOMIZED && l >= mn)
		method = CLOQ_SVD_EXACT; /* the sketch would be the whole space */
	if (method == CLOQ_SVD_EXACT)
		CLOQ_TRY(svd_exact(M, m, n, k, U, S, V, tail, err));
	else
		CLOQ_TRY(svd_randomized(M, m, n, k, l, power_iters, seed, U, S, V, tail, err));
	cloq_svd_fix_signs(U, m, V, n, k);
	if (used)
		*used = method;
fail:
	return rc;
}

/* ================================================================================================
 * Float32 range finder: the fast path's power iterations. Only the subspace is taken from
 * float32 (its error enters the objective squared); the projection and the small SVD that give
 * the singular values and vectors are done in float64 by the caller.
 * ============================================================================================= */
static int orthonormalize_f32(float *Y, int m, int l, float *tau, cloq_err *err)
{
	int nth = cloq_blas_serial_begin();
	int info = LAPACKE_sgeqrf(LAPACK_COL_MAJOR, m, l, Y, m, tau);
	if (info == 0)
		info = LAPACKE_sorgqr(LAPACK_COL_MAJOR, m, l, l, Y, m, tau);
	cloq_blas_serial_end(nth);
	if (info != 0)
		return cloq_err_set(err, CLOQ_EIO, "svd: QR failed (info %d) on %d x %d", info, m,
				    l);
	return CLOQ_OK;
}

int cloq_svd_range_f32(const float *M, int m, int n, int l, int q, uint64_t seed, double *Q,
		       cloq_err *err)
{
	int rc = CLOQ_OK;
	float *Om = NULL, *Y = NULL, *Z = NULL, *tau = NULL;
	double *g = NULL, *taud = NULL;
	cloq_rng rng;

	CLOQ_FAIL_IF(l < 1 || l > m || l > n, err, CLOQ_EINPUT,
		     "svd: sketch width %d does not fit %d x %d", l, m, n);
	Om = cloq_aligned_alloc(64, (size_t)n * l * sizeof(float));
	Y = cloq_aligned_alloc(64, (size_t)m * l * sizeof(float));
	Z = cloq_aligned_alloc(64, (size_t)n * l * sizeof(float));
	tau = cloq_malloc((size_t)l * sizeof(float));
	g = cloq_malloc((size_t)n * l * sizeof(double));
	taud = cloq_malloc((size_t)l * sizeof(double));
	CLOQ_FAIL_IF(!Om || !Y || !Z || !tau || !g || !taud, err, CLOQ_EIO,
		     "svd: out of memory (randomized, %d x %d, sketch %d)", m, n, l);
	cloq_rng_seed(&rng, seed);
	cloq_rng_gauss(&rng, g, (size_t)n * l);
	for (size_t i = 0; i < (size_t)n * l; i++)
		Om[i] = (float)g[i];
	cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, m, l, n, 1.0f, M, m, Om, n, 0.0f, Y,
		    m);
	CLOQ_TRY(orthonormalize_f32(Y, m, l, tau, err));
	for (int it = 0; it < q; it++) {
		cblas_sgemm(CblasColMajor, CblasTrans, CblasNoTrans, n, l, m, 1.0f, M, m, Y, m, 0.0f,
			    Z, n);
		CLOQ_TRY(orthonormalize_f32(Z, n, l, tau, err));
		cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, m, l, n, 1.0f, M, m, Z, n,
			    0.0f, Y, m);
		CLOQ_TRY(orthonormalize_f32(Y, m, l, tau, err));
	}
	/* float32 QR leaves ~1e-7 loss of orthogonality: redo it in float64, so Q^T Q = I to
	 * rounding and the caller's projection identities hold */
	for (size_t i = 0; i < (size_t)m * l; i++)
		Q[i] = Y[i];
	CLOQ_TRY(orthonormalize(Q, m, l, taud, err));
fail:
	cloq_free(taud);
	cloq_free(g);
	cloq_free(tau);
	cloq_free(Z);
	cloq_free(Y);
	cloq_free(Om);
	return rc;
}
