/*
 * cloq_quant_magr.c - MagR weight magnitude reduction before quantization (see cloq_quant.h).
 *
 * Zhang, Wang, Deng, Li, Yang, Yin, "MagR: Weight Magnitude Reduction for Enhancing Post-Training
 * Quantization", NeurIPS 2024: replace W by the W' that keeps the layer's outputs on the
 * calibration data while making each row's (or each group's) largest magnitude small,
 *     min_W'  1/2 tr((W' - W) Hn (W' - W)^T) + alpha sum_rows ||W'_row||_inf,  Hn = H / lambda_max(H),
 * by proximal gradient descent with step 1 (Hn's largest eigenvalue is 1):
 *     W' <- prox_{alpha ||.||_inf}(W' - (W' - W) Hn), row by row (or group by group).
 * The prox of alpha ||.||_inf clips |v| at the level t >= 0 where sum_i (|v_i| - t)_+ = alpha (0
 * when ||v||_1 <= alpha): the Moreau complement of the projection onto the l1 ball of radius
 * alpha. Written from the paper's formulation; its defaults: alpha 1e-3 and 200 iterations per
 * row, 1e-4 and 150 iterations per group.
 */
#include "cloq_quant_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <omp.h>

#include "cloq_sys.h"

static int cmp_desc(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? 1 : x > y ? -1 : 0;
}

/* v[0..n): clip each |v_i| at t, sum_i (|v_i| - t)_+ = alpha; s (n doubles) is scratch. */
void cloq_quant__prox_linf(float *v, int n, double alpha, double *s)
{
	double l1 = 0.0;
	for (int i = 0; i < n; i++) {
		s[i] = fabs((double)v[i]);
		l1 += s[i];
	}
	if (l1 <= alpha) {
		for (int i = 0; i < n; i++)
			v[i] = 0.0f;
		return;
	}
	qsort(s, (size_t)n, sizeof *s, cmp_desc);
	/* with the k largest above t: t = (sum of those k - alpha) / k, the largest k with s[k-1] > t */
	double cum = 0.0, t = 0.0;
	for (int k = 1; k <= n; k++) {
		cum += s[k - 1];
		double tk = (cum - alpha) / k;
		if (s[k - 1] > tk)
			t = tk;
		else
			break;
	}
	float tf = (float)t;
	for (int i = 0; i < n; i++)
		if (fabsf(v[i]) > tf)
			v[i] = v[i] > 0 ? tf : -tf;
}

/* lambda_max of symmetric positive semidefinite H by power iteration (float64) */
static double lambda_max(const double *H, int n, double *x, double *y)
{
	for (int i = 0; i < n; i++)
		x[i] = 1.0 / sqrt((double)n);
	double lam = 0.0;
	for (int it = 0; it < 500; it++) {
		cblas_dsymv(CblasRowMajor, CblasUpper, n, 1.0, H, n, x, 1, 0.0, y, 1);
		double nrm = cblas_dnrm2(n, y, 1);
		if (!(nrm > 0.0))
			return 0.0;
		for (int i = 0; i < n; i++)
			x[i] = y[i] / nrm;
		if (fabs(nrm - lam) <= 1e-12 * nrm) {
			lam = nrm;
			break;
		}
		lam = nrm;
	}
	return lam;
}

int cloq_quant_magr_hn(const double *H, int cols, float **Hn, double *lam_out, cloq_err *err)
{
	int rc = CLOQ_OK;
	size_t N = (size_t)cols;
	double *x = NULL, *y = NULL;
	*Hn = NULL;
	CLOQ_TRY(cloq_quant__check_h(H, cols, err));
	x = cloq_malloc(N * sizeof *x);
	y = cloq_malloc(N * sizeof *y);
	CLOQ_FAIL_IF(!x || !y, err, CLOQ_EIO, "magr: out of memory for a width-%d Gram matrix", cols);
	double lam = lambda_max(H, cols, x, y);
	if (lam_out)
		*lam_out = lam;
	if (lam > 0.0) {
		*Hn = cloq_malloc(N * N * sizeof **Hn);
		CLOQ_FAIL_IF(!*Hn, err, CLOQ_EIO, "magr: out of memory for a width-%d Gram matrix", cols);
		for (size_t i = 0; i < N * N; i++)
			(*Hn)[i] = (float)(H[i] / lam);
	}
fail:
	cloq_free(x);
	cloq_free(y);
	return rc;
}

int cloq_quant_magr_with(const float *W, const float *Hn, int rows, int cols, const cloq_magr_params *p,
			 float *Wout, int *iters, cloq_err *err)
{
	int rc = CLOQ_OK;
	size_t R = (size_t)rows, N = (size_t)cols;
	float *D = NULL;
	double *scratch = NULL;
	int nth = omp_get_max_threads();
	CLOQ_FAIL_IF(rows < 1 || cols < 1, err, CLOQ_EINPUT, "magr: bad shape (%d, %d)", rows, cols);
	CLOQ_FAIL_IF(!(p->alpha > 0) || p->iters < 1, err, CLOQ_EINPUT, "magr: alpha %g and iterations %d must be > 0",
		     p->alpha, p->iters);
	CLOQ_TRY(cloq_quant__check_w(W, rows, cols, err));
	memcpy(Wout, W, R * N * sizeof *Wout);
	if (iters)
		*iters = 0;
	if (!Hn) /* no calibration signal: nothing to keep, nothing to change */
		return CLOQ_OK;
	int gs = (p->group_size <= 0 || p->group_size >= cols) ? cols : p->group_size;
	D = cloq_malloc(R * N * sizeof *D);
	scratch = cloq_malloc((size_t)nth * (size_t)gs * sizeof *scratch);
	CLOQ_FAIL_IF(!D || !scratch, err, CLOQ_EIO, "magr: out of memory for a (%d, %d) weight", rows, cols);
	for (int it = 0; it < p->iters; it++) {
		for (size_t i = 0; i < R * N; i++)
			D[i] = Wout[i] - W[i];
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, cols, cols, -1.0f, D, cols, Hn, cols, 1.0f,
			    Wout, cols);
#pragma omp parallel for schedule(dynamic, 8) num_threads(nth)
		for (size_t r = 0; r < R; r++) {
			double *s = scratch + (size_t)omp_get_thread_num() * (size_t)gs;
			for (int j0 = 0; j0 < cols; j0 += gs)
				cloq_quant__prox_linf(Wout + r * N + j0, cols - j0 < gs ? cols - j0 : gs, p->alpha, s);
		}
		if (iters)
			*iters = it + 1;
	}
fail:
	cloq_free(D);
	cloq_free(scratch);
	return rc;
}

int cloq_quant_magr(const float *W, const double *H, int rows, int cols, const cloq_magr_params *p, float *Wout,
		    cloq_magr_info *info, cloq_err *err)
{
	float *Hn = NULL;
	double lam = 0.0;
	int it = 0, rc = CLOQ_OK;
	if (rows < 1 || cols < 1 || !(p->alpha > 0) || p->iters < 1)
		rc = cloq_err_set(err, CLOQ_EINPUT, "magr: bad shape (%d, %d) or alpha %g / iterations %d", rows, cols,
				  p->alpha, p->iters);
	if (rc == CLOQ_OK)
		rc = cloq_quant__check_w(W, rows, cols, err);
	if (rc == CLOQ_OK)
		rc = cloq_quant_magr_hn(H, cols, &Hn, &lam, err);
	if (rc == CLOQ_OK)
		rc = cloq_quant_magr_with(W, Hn, rows, cols, p, Wout, &it, err);
	if (info) {
		info->lambda_max = lam;
		info->iters = it;
	}
	cloq_free(Hn);
	return rc;
}
