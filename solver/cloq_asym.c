/*
 * cloq_asym.c - asymmetric calibration (cloq_solver.h): the cross statistics of the quantized and
 * the original model's inputs, and the target they give a linear.
 */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <string.h>

#include "cloq_chol.h"
#include "cloq_solver_internal.h"

void cloq_cross_add(double *C, float *work, const float *A, const float *B, int t, int n)
{
	for (int r0 = 0; r0 < t; r0 += CLOQ_GRAM_CHUNK) {
		int tb = t - r0 < CLOQ_GRAM_CHUNK ? t - r0 : CLOQ_GRAM_CHUNK;
		const float *a = A + (size_t)r0 * n, *b = B + (size_t)r0 * n;
		for (int j0 = 0; j0 < n; j0 += CLOQ_GRAM_PANEL) {
			int jb = n - j0 < CLOQ_GRAM_PANEL ? n - j0 : CLOQ_GRAM_PANEL;
			/* work (n, jb) = A^T B[:, j0:j0+jb] */
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, jb, tb, 1.0f, a, n, b + j0, n, 0.0f, work,
				    jb);
#pragma omp parallel for schedule(static) if ((long long)n * jb > 65536)
			for (int i = 0; i < n; i++) {
				double *c = C + (size_t)i * n + j0;
				const float *w = work + (size_t)i * jb;
				for (int j = 0; j < jb; j++)
					c[j] += (double)w[j];
			}
		}
	}
}

int cloq_solver_asym_target(const double *H, const double *D, int n, const float *W, int out, double lambda_rel,
			    float *Weff, cloq_err *err)
{
	int rc = CLOQ_OK;
	size_t nn, on;
	double *F = NULL, *Z = NULL, *Wd = NULL;
	CLOQ_FAIL_IF(n < 1 || out < 1 || !(lambda_rel > 0), err, CLOQ_EINPUT, "asym: bad sizes %d x %d or damping %g",
		     out, n, lambda_rel);
	nn = cloq_bytes3((size_t)n, (size_t)n, sizeof(double));
	on = cloq_bytes3((size_t)out, (size_t)n, sizeof(double));
	CLOQ_FAIL_IF(!nn || !on, err, CLOQ_EINPUT, "asym: %d x %d too large", out, n);
	F = cloq_aligned_alloc(64, nn);
	Z = cloq_aligned_alloc(64, on);
	Wd = cloq_aligned_alloc(64, on);
	CLOQ_FAIL_IF(!F || !Z || !Wd, err, CLOQ_EIO, "asym: out of memory for a %d x %d linear", out, n);
	double mean = 0.0;
	for (int i = 0; i < n; i++)
		mean += H[(size_t)i * n + i];
	mean /= n;
	if (!(mean > 0))
		mean = 1.0;
	int info = 1;
	for (double lr = lambda_rel; info != 0; lr *= 10.0) {
		CLOQ_FAIL_IF(lr > 1e6 * lambda_rel, err, CLOQ_EINPUT,
			     "asym: H + lambda I is not positive definite even at lambda = %g x mean diag", lr / 10);
		memcpy(F, H, nn);
		for (int i = 0; i < n; i++)
			F[(size_t)i * n + i] += lr * mean;
		info = cloq_d_potrf_upper(n, F, n);
	}
	for (size_t i = 0; i < (size_t)out * n; i++)
		Wd[i] = W[i];
	/* Z (out, n) = W D, then Z (H + lambda I)^-1: with Z row-major read as Z^T column-major,
	 * (H + lambda I) Y^T = Z^T is one dpotrs with out right-hand sides */
	cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, n, n, 1.0, Wd, n, D, n, 0.0, Z, n);
	info = LAPACKE_dpotrs(LAPACK_COL_MAJOR, 'U', n, out, F, n, Z, n);
	CLOQ_FAIL_IF(info != 0, err, CLOQ_EINPUT, "asym: dpotrs failed (%d)", info);
	for (size_t i = 0; i < (size_t)out * n; i++) {
		double v = Wd[i] + Z[i];
		CLOQ_FAIL_IF(!isfinite(v), err, CLOQ_EINPUT, "asym: non-finite target at row %zu, column %zu",
			     i / (size_t)n, i % (size_t)n);
		Weff[i] = (float)v;
	}
fail:
	cloq_free(F);
	cloq_free(Z);
	cloq_free(Wd);
	return rc;
}
