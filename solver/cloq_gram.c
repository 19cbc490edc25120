/*
 * cloq_gram.c - H += X^T X, float32 panel products summed into a float64 accumulator.
 * See cloq_solver.h for the scheme and its measured error.
 */
#include <cblas.h>
#include <omp.h>
#include <math.h>
#include <string.h>

#include "cloq_solver_internal.h"

int cloq_gram_init(cloq_gram *g, int n, cloq_err *err)
{
	int rc = CLOQ_OK;
	size_t hb, wb;

	memset(g, 0, sizeof *g);
	CLOQ_FAIL_IF(n < 1, err, CLOQ_EINPUT, "gram: width %d must be >= 1", n);
	int panels = (n + CLOQ_GRAM_PANEL - 1) / CLOQ_GRAM_PANEL;
	g->slots = omp_get_max_threads();
	g->slots = g->slots < 1 ? 1 : g->slots > panels ? panels : g->slots;
	hb = cloq_bytes3((size_t)n, (size_t)n, sizeof(double));
	wb = cloq_bytes3((size_t)n * g->slots, CLOQ_GRAM_PANEL, sizeof(float));
	CLOQ_FAIL_IF(!hb || !wb, err, CLOQ_EINPUT, "gram: width %d too large", n);
	g->H = cloq_aligned_alloc(64, hb);
	g->work = cloq_aligned_alloc(64, wb);
	CLOQ_FAIL_IF(!g->H || !g->work, err, CLOQ_EIO,
		     "gram: out of memory for a %d x %d Gram matrix", n, n);
	memset(g->H, 0, hb);
	g->n = n;
	return CLOQ_OK;
fail:
	cloq_gram_free(g);
	return rc;
}

/* One sub-chunk of t <= CLOQ_GRAM_CHUNK rows. Panel j0..j0+jb of the upper triangle needs rows
 * 0..j0+jb of X^T X restricted to those columns: C (m, jb) = X[:, 0:m]^T X[:, j0:j0+jb]. */
static void gram_chunk(cloq_gram *g, const float *X, int t)
{
	const int n = g->n, np = (n + CLOQ_GRAM_PANEL - 1) / CLOQ_GRAM_PANEL, nth = cloq_team_cap(g->slots);

#pragma omp parallel for schedule(dynamic, 1) num_threads(nth) if (nth > 1)
	for (int p = np - 1; p >= 0; p--) { /* the widest panels (most rows) first */
		int j0 = p * CLOQ_GRAM_PANEL, jb = n - j0 < CLOQ_GRAM_PANEL ? n - j0 : CLOQ_GRAM_PANEL;
		int m = j0 + jb;
		float *C = g->work + (size_t)(nth > 1 ? omp_get_thread_num() : 0) * n * CLOQ_GRAM_PANEL;
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, jb, t, 1.0f, X, n, X + j0, n, 0.0f, C, jb);
		for (int i = 0; i < m; i++) {
			double *h = g->H + (size_t)i * n + j0;
			const float *c = C + (size_t)i * jb;
			/* only the upper triangle: column j0 + j >= row i */
			for (int j = i > j0 ? i - j0 : 0; j < jb; j++)
				h[j] += (double)c[j];
		}
	}
}

int cloq_gram_add(cloq_gram *g, const float *X, int t, cloq_err *err)
{
	int rc = CLOQ_OK;
	const int n = g->n;

	CLOQ_FAIL_IF(!g->H || n < 1, err, CLOQ_EINPUT, "gram: add on an uninitialised accumulator");
	CLOQ_FAIL_IF(t < 0 || (t > 0 && !X), err, CLOQ_EINPUT, "gram: bad chunk (%d rows)", t);
	/* Reject before touching H, so a bad chunk leaves the accumulator as it was. */
	for (size_t i = 0; i < (size_t)t * n; i++)
		CLOQ_FAIL_IF(!isfinite(X[i]), err, CLOQ_EINPUT,
			     "gram: non-finite activation at row %zu, column %zu of a %d-row chunk",
			     i / n, i % n, t);
	for (int r0 = 0; r0 < t; r0 += CLOQ_GRAM_CHUNK) {
		int tb = t - r0 < CLOQ_GRAM_CHUNK ? t - r0 : CLOQ_GRAM_CHUNK;
		gram_chunk(g, X + (size_t)r0 * n, tb);
	}
	g->ntokens += t;
fail:
	return rc;
}

void cloq_gram_finish(cloq_gram *g)
{
	const int n = g->n;
	if (!g->H)
		return;
	for (int i = 0; i < n; i++)
		for (int j = 0; j < i; j++)
			g->H[(size_t)i * n + j] = g->H[(size_t)j * n + i];
}

void cloq_gram_free(cloq_gram *g)
{
	cloq_free(g->H);
	cloq_free(g->work);
	g->H = NULL;
	g->work = NULL;
	g->n = 0;
	g->ntokens = 0;
}
