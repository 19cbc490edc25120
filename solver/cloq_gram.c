/*
 * cloq_gram.c - H += X^T X, float32 panel products summed into a float64 accumulator.
 * See cloq_solver.h for the scheme and its measured error.
 */
#include <cblas.h>
#include <omp.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cloq_solver_internal.h"

/* Panel width: 128 below 2048 columns, 256 to 4096, 512 from there. With 256 a 512-wide H was two
 * panels of 1 and 2 units of work, which two threads share 2:1; at 128 its four panels pair up
 * evenly. Wide panels pack the shared rows less often. Measured on this 2-core box, warm, blocks
 * of 2048 rows, GFLOP/s as 2 t n^2 (docs/PERFORMANCE.md section 11.3): 128 vs 256 at n = 512
 * 342 / 239, 1376 395 / 359, 2048 equal; 512 vs 256 at 4096 474 / 437, 8192 505 / 454, 11008
 * 518 / 480, 28672 491 / 429, 3072 465 / 477. A function of n alone, and the panel width does not
 * change a single bit of H (OpenBLAS sums each entry over the rows in the same order whatever
 * the panel's width: checked at n = 512, 1376 and 4096). */
int cloq_gram_panel(int n)
{
	return n < 2048 ? CLOQ_GRAM_PANEL / 2 : n < 4096 ? CLOQ_GRAM_PANEL : 2 * CLOQ_GRAM_PANEL;
}

/* Panels computed at once: one a thread, at most the panel count. */
static int gram_slots(int n, int threads)
{
	int pw = cloq_gram_panel(n), panels = (n + pw - 1) / pw;
	return threads < 1 ? 1 : threads > panels ? panels : threads;
}

size_t cloq_gram_scratch_floats(int n, int threads)
{
	return (size_t)gram_slots(n, threads) * n * cloq_gram_panel(n);
}

int cloq_gram_init(cloq_gram *g, int n, cloq_err *err)
{
	int rc = CLOQ_OK;
	size_t hb, wb;

	memset(g, 0, sizeof *g);
	CLOQ_FAIL_IF(n < 1, err, CLOQ_EINPUT, "gram: width %d must be >= 1", n);
	g->slots = gram_slots(n, omp_get_max_threads());
	hb = cloq_bytes3((size_t)n, (size_t)n, sizeof(double));
	wb = cloq_bytes3(cloq_gram_scratch_floats(n, g->slots), 1, sizeof(float));
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
	const int n = g->n, pw = cloq_gram_panel(n), np = (n + pw - 1) / pw, nth = cloq_team_cap(g->slots);

#pragma omp parallel for schedule(dynamic, 1) num_threads(nth) if (nth > 1)
	for (int p = np - 1; p >= 0; p--) { /* the widest panels (most rows) first */
		int j0 = p * pw, jb = n - j0 < pw ? n - j0 : pw;
		int m = j0 + jb;
		float *C = g->work + (size_t)(nth > 1 ? omp_get_thread_num() : 0) * n * pw;
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

/* Rows of the stream wait in g->rows until a block of CLOQ_GRAM_CHUNK is complete: the blocks
 * are the same however the stream was cut into calls (windows of 256 rows, experts' gathers). */
static int gram_take(cloq_gram *g, const float *X, int t, cloq_err *err)
{
	int rc = CLOQ_OK;
	const int n = g->n;
	if (!g->rows) {
		size_t b = cloq_bytes3((size_t)CLOQ_GRAM_CHUNK, (size_t)n, sizeof(float));
		g->rows = b ? cloq_aligned_alloc(64, b) : NULL;
		CLOQ_FAIL_IF(!g->rows, err, CLOQ_EIO, "gram: out of memory for %d rows of width %d", CLOQ_GRAM_CHUNK, n);
	}
	memcpy(g->rows + (size_t)g->nrows * n, X, (size_t)t * n * sizeof(float));
	g->nrows += t;
	if (g->nrows == CLOQ_GRAM_CHUNK) {
		gram_chunk(g, g->rows, CLOQ_GRAM_CHUNK);
		g->nrows = 0;
	}
fail:
	return rc;
}

/* No NaN or Inf among x[0..n): an exponent field of all ones, tested on the bits with an OR
 * that vectorizes (an isfinite loop with an early exit does not: 1.7% of a job's cycles). */
static int all_finite(const float *x, size_t n)
{
	uint32_t bad = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t u;
		memcpy(&u, x + i, sizeof u);
		bad |= (u & 0x7f800000u) == 0x7f800000u;
	}
	return !bad;
}

/* A bad chunk is refused before anything is touched: H and the waiting rows stay as they were. */
static int check_rows(const cloq_gram *g, const float *X, int t, cloq_err *err)
{
	int rc = CLOQ_OK;
	const int n = g->n;
	CLOQ_FAIL_IF(!g->H || n < 1, err, CLOQ_EINPUT, "gram: add on an uninitialised accumulator");
	CLOQ_FAIL_IF(t < 0 || (t > 0 && !X), err, CLOQ_EINPUT, "gram: bad chunk (%d rows)", t);
	if (!all_finite(X, (size_t)t * n))
		for (size_t i = 0; i < (size_t)t * n; i++) /* the first one, for the message */
			CLOQ_FAIL_IF(!isfinite(X[i]), err, CLOQ_EINPUT,
				     "gram: non-finite activation at row %zu, column %zu of a %d-row chunk",
				     i / n, i % n, t);
fail:
	return rc;
}

static int add_rows(cloq_gram *g, const float *X, int t, cloq_err *err)
{
	int rc = CLOQ_OK;
	const int n = g->n, all = t;
	if (g->nrows > 0) { /* first complete the waiting block */
		int k = CLOQ_GRAM_CHUNK - g->nrows < t ? CLOQ_GRAM_CHUNK - g->nrows : t;
		CLOQ_TRY(gram_take(g, X, k, err));
		X += (size_t)k * n;
		t -= k;
	}
	for (; t >= CLOQ_GRAM_CHUNK; t -= CLOQ_GRAM_CHUNK, X += (size_t)CLOQ_GRAM_CHUNK * n)
		gram_chunk(g, X, CLOQ_GRAM_CHUNK); /* whole blocks straight from X */
	if (t > 0)
		CLOQ_TRY(gram_take(g, X, t, err));
	g->ntokens += all;
fail:
	return rc;
}

int cloq_gram_add(cloq_gram *g, const float *X, int t, cloq_err *err)
{
	int rc = check_rows(g, X, t, err);
	return rc ? rc : add_rows(g, X, t, err);
}

int cloq_gram_add_last(cloq_gram *g, const float *X, int t, cloq_err *err)
{
	int rc = CLOQ_OK;
	CLOQ_TRY(check_rows(g, X, t, err));
	if (g->nrows == 0 && t < CLOQ_GRAM_CHUNK) { /* nothing waits: the last block straight from X */
		if (t > 0)
			gram_chunk(g, X, t);
		g->ntokens += t;
	} else {
		CLOQ_TRY(add_rows(g, X, t, err));
	}
	cloq_gram_finish(g);
fail:
	return rc;
}

void cloq_gram_finish(cloq_gram *g)
{
	const int n = g->n;
	if (!g->H)
		return;
	if (g->nrows > 0) { /* the stream's last, partial block */
		gram_chunk(g, g->rows, g->nrows);
		g->nrows = 0;
	}
	cloq_free(g->rows); /* a later add allocates it again */
	g->rows = NULL;
	for (int i = 0; i < n; i++)
		for (int j = 0; j < i; j++)
			g->H[(size_t)i * n + j] = g->H[(size_t)j * n + i];
}

void cloq_gram_free(cloq_gram *g)
{
	cloq_free(g->H);
	cloq_free(g->work);
	cloq_free(g->rows);
	g->H = NULL;
	g->work = NULL;
	g->rows = NULL;
	g->nrows = 0;
	g->n = 0;
	g->ntokens = 0;
}
