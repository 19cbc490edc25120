/* cloq_eval.c - logits and perplexity through a cloq_lm (see cloq_eval.h). */
#include "cloq_eval.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cblas.h>
#include <omp.h>

#include "cloq_sys.h"

#define HEAD_CHUNK 4096 /* lm_head rows per GEMM: bounds memory at HEAD_CHUNK x hidden */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Windows in parallel, each on one thread with its own workspace and single-threaded BLAS,
 * when there are enough of them to keep every thread busy (at least two per thread) and the
 * extra workspaces take at most an eighth of the memory available. A layer is then one parallel
 * region instead of dozens per window: on a machine shared with other work, a thread that loses
 * its core holds the others for one window at the end of a layer, not at every GEMM's barrier
 * (docs/PERFORMANCE.md section 8). 0 otherwise: one window at a time, threaded GEMMs. */
static int window_threads(const cloq_config *c, int n, int T)
{
	int nth = omp_get_max_threads();
	if (nth < 2 || n < 2 * nth)
		return 0;
	double extra = (double)(nth - 1) * (cloq_block_ws_bytes(c, T) + (double)T * HEAD_CHUNK * sizeof(float));
	return extra <= cloq_mem_available() / 8 ? nth : 0;
}

/* Run every layer over every window of x (n*T, hidden), layer-major so each layer is loaded once. */
static int run_layers(const cloq_lm *lm, float *x, int n, int T, int progress, cloq_err *err)
{
	int rc = CLOQ_OK;
	const cloq_config *c = lm->cfg;
	cloq_rope rope = {0};
	int nth = window_threads(c, n, T), nws = nth > 0 ? nth : 1;
	cloq_block_ws *ws[nws];
	memset(ws, 0, sizeof ws);
	CLOQ_TRY(cloq_rope_init(&rope, c, T, err));
	for (int i = 0; i < nws; i++)
		CLOQ_TRY(cloq_block_ws_create(c, T, &ws[i], err));
	for (int l = 0; l < c->layers; l++) {
		cloq_layer_w w;
		cloq_team_update(); /* the CPUs this process may use now (cloq_sys.h) */
		CLOQ_TRY(lm->layer(lm->ctx, l, &w, err));
		if (nth > 0) {
			int bad = CLOQ_OK;
			cloq_err e1;
			memset(&e1, 0, sizeof e1);
#pragma omp parallel for schedule(dynamic, 1) num_threads(cloq_team_cap(nth))
			for (int i = 0; i < n; i++) {
				cloq_err ei = {0};
				int r;
				if (bad)
					continue;
				r = cloq_block_forward(c, l, &w, &rope, ws[omp_get_thread_num()], x + (size_t)i * T * c->hidden, T,
						       NULL, NULL, -1, &ei);
				if (r) {
#pragma omp critical(cloq_eval_err)
					if (!bad) {
						bad = r;
						e1 = ei;
					}
				}
			}
			if (bad) {
				if (err)
					*err = e1;
				rc = bad;
				goto fail;
			}
		} else {
			for (int i = 0; i < n; i++)
				CLOQ_TRY(cloq_block_forward(c, l, &w, &rope, ws[0], x + (size_t)i * T * c->hidden, T, NULL, NULL,
							    -1, err));
		}
		if (progress)
			fprintf(stderr, "\r  layer %d/%d", l + 1, c->layers);
	}
	if (progress)
		fprintf(stderr, "\n");
fail:
	for (int i = 0; i < nws; i++)
		cloq_block_ws_free(ws[i]);
	cloq_rope_free(&rope);
	return rc;
}

int cloq_lm_embed(const cloq_lm *lm, const int32_t *ids, int T, float *x, cloq_err *err)
{
	int rc = lm->embed(lm->ctx, ids, T, x, err);
	float s = (float)lm->cfg->embed_scale;
	if (rc == CLOQ_OK && s > 0.0f && s != 1.0f)
		for (size_t i = 0; i < (size_t)T * lm->cfg->hidden; i++)
			x[i] *= s;
	return rc;
}

void cloq_lm_softcap(const cloq_config *cfg, float *logits, size_t n)
{
	float cap = (float)cfg->final_softcap;
	if (cap > 0.0f)
		for (size_t i = 0; i < n; i++)
			logits[i] = cap * tanhf(logits[i] / cap);
}

static int embed_all(const cloq_lm *lm, const int32_t *ids, int n, int T, float **xo, cloq_err *err)
{
	size_t cells;
	if (!cloq_mul_ok((size_t)n * T, (size_t)lm->cfg->hidden, &cells))
		return cloq_err_set(err, CLOQ_EUSAGE, "too many tokens to evaluate");
	float *x = cloq_malloc(cells * sizeof(float));
	if (!x)
		return cloq_err_set(err, CLOQ_EIO, "out of memory for %d x %d hidden states (%zu MiB)", n, T,
				    cells * sizeof(float) >> 20);
	for (int i = 0; i < n; i++) {
		int rc = cloq_lm_embed(lm, ids + (size_t)i * T, T, x + (size_t)i * T * lm->cfg->hidden, err);
		if (rc) {
			cloq_free(x);
			return rc;
		}
	}
	*xo = x;
	return CLOQ_OK;
}

int cloq_eval_ppl(const cloq_lm *lm, const cloq_windows *w, cloq_eval_result *res, int progress, cloq_err *err)
{
	int rc = CLOQ_OK;
	const cloq_config *c = lm->cfg;
	int n = w->n, T = w->seqlen, D = c->hidden, V = c->vocab;
	size_t rows = (size_t)n * T;
	float *x = NULL, *head = NULL, *logits = NULL;
	double *mx = NULL, *sum = NULL, *tgt = NULL;
	double t0 = now();
	memset(res, 0, sizeof *res);
	CLOQ_FAIL_IF(T < 2, err, CLOQ_EUSAGE, "perplexity needs windows of at least 2 tokens (got %d)", T);
	CLOQ_TRY(embed_all(lm, w->ids, n, T, &x, err));
	CLOQ_TRY(run_layers(lm, x, n, T, progress, err));
	for (size_t r = 0; r < rows; r++)
		cloq_rmsnorm_cfg(c, x + r * D, lm->final_norm, x + r * D, 1, D);

	int chunk = V < HEAD_CHUNK ? V : HEAD_CHUNK;
	int nth = window_threads(c, n, T), nlog = nth > 0 ? nth : 1;
	head = cloq_malloc((size_t)chunk * D * sizeof(float));
	logits = cloq_malloc((size_t)nlog * T * chunk * sizeof(float));
	mx = cloq_malloc(rows * sizeof(double));
	sum = cloq_calloc(rows, sizeof(double));
	tgt = cloq_malloc(rows * sizeof(double));
	CLOQ_FAIL_IF(!head || !logits || !mx || !sum || !tgt, err, CLOQ_EIO, "out of memory for the lm_head pass");
	for (size_t r = 0; r < rows; r++)
		mx[r] = -INFINITY;
	/* Online log-sum-exp over vocab chunks: lm_head is read once whatever the number of windows.
	 * Each window's rows are its own: windows in parallel (window_threads) give the same sums. */
	for (int v0 = 0; v0 < V; v0 += chunk) {
		int nv = V - v0 < chunk ? V - v0 : chunk;
		CLOQ_TRY(lm->head_rows(lm->ctx, v0, nv, head, err));
#pragma omp parallel for schedule(dynamic, 1) num_threads(cloq_team_cap(nlog)) if (nth > 0)
		for (int i = 0; i < n; i++) {
			float *lg = logits + (size_t)(nth > 0 ? omp_get_thread_num() : 0) * T * chunk;
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, nv, D, 1.0f, x + (size_t)i * T * D, D, head,
				    D, 0.0f, lg, nv);
			cloq_lm_softcap(c, lg, (size_t)T * nv);
#pragma omp parallel for schedule(static) if (nth == 0 && (size_t)T * nv > (1u << 20))
			for (int t = 0; t < T - 1; t++) {
				size_t r = (size_t)i * T + t;
				const float *lr = lg + (size_t)t * nv;
				double m = mx[r];
				for (int j = 0; j < nv; j++)
					m = lr[j] > m ? lr[j] : m;
				double s = sum[r] * exp(mx[r] - m);
				for (int j = 0; j < nv; j++)
					s += exp((double)lr[j] - m);
				mx[r] = m;
				sum[r] = s;
				int target = w->ids[r + 1];
				if (target >= v0 && target < v0 + nv)
					tgt[r] = lr[target - v0];
			}
		}
	}
	double nll = 0;
	for (int i = 0; i < n; i++)
		for (int t = 0; t < T - 1; t++) {
			size_t r = (size_t)i * T + t;
			nll += mx[r] + log(sum[r]) - tgt[r];
		}
	res->nll_sum = nll;
	res->count = (long long)n * (T - 1);
	res->ppl = exp(nll / res->count);
	res->seconds = now() - t0;
fail:
	cloq_free(x);
	cloq_free(head);
	cloq_free(logits);
	cloq_free(mx);
	cloq_free(sum);
	cloq_free(tgt);
	return rc;
}

int cloq_eval_logits(const cloq_lm *lm, const int32_t *ids, int T, float *logits, cloq_err *err)
{
	int rc = CLOQ_OK;
	const cloq_config *c = lm->cfg;
	int D = c->hidden, V = c->vocab;
	float *x = NULL, *head = NULL;
	CLOQ_TRY(embed_all(lm, ids, 1, T, &x, err));
	CLOQ_TRY(run_layers(lm, x, 1, T, 0, err));
	cloq_rmsnorm_cfg(c, x, lm->final_norm, x, T, D);
	int chunk = V < HEAD_CHUNK ? V : HEAD_CHUNK;
	head = cloq_malloc((size_t)chunk * D * sizeof(float));
	CLOQ_FAIL_IF(!head, err, CLOQ_EIO, "out of memory for lm_head rows");
	for (int v0 = 0; v0 < V; v0 += chunk) {
		int nv = V - v0 < chunk ? V - v0 : chunk;
		CLOQ_TRY(lm->head_rows(lm->ctx, v0, nv, head, err));
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, nv, D, 1.0f, x, D, head, D, 0.0f, logits + v0, V);
	}
	cloq_lm_softcap(c, logits, (size_t)T * V);
fail:
	cloq_free(x);
	cloq_free(head);
	return rc;
}

/* ---- shared cloq_lm plumbing ---------------------------------------------------------------- */
void cloq_layer_cache_init(cloq_layer_cache *c)
{
	memset(c, 0, sizeof *c);
	c->loaded = -1;
}

void cloq_layer_cache_release(cloq_layer_cache *c)
{
	cloq_layer_w_free(&c->lw);
	c->loaded = -1;
}

int cloq_layer_cache_get(cloq_layer_cache *c, int l, cloq_layer_loader load, void *src, cloq_layer_w *w, cloq_err *err)
{
	if (c->loaded != l) {
		cloq_layer_cache_release(c);
		int rc = load(src, l, &c->lw, err);
		if (rc)
			return rc;
		c->loaded = l;
	}
	*w = c->lw;
	return CLOQ_OK;
}

static int table_embed(void *ctx, const int32_t *ids, int T, float *x, cloq_err *err)
{
	const cloq_table_lm *t = ctx;
	size_t D = (size_t)t->cfg->hidden;
	for (int i = 0; i < T; i++)
		memcpy(x + (size_t)i * D, t->embed + (size_t)ids[i] * D, D * sizeof(float));
	return CLOQ_OK;
}

static int table_layer(void *ctx, int l, cloq_layer_w *w, cloq_err *err)
{
	cloq_table_lm *t = ctx;
	return cloq_layer_cache_get(&t->cache, l, t->load, t->src, w, err);
}

static int table_head_rows(void *ctx, int row0, int nrows, float *dst, cloq_err *err)
{
	const cloq_table_lm *t = ctx;
	size_t D = (size_t)t->cfg->hidden;
	memcpy(dst, t->head + (size_t)row0 * D, (size_t)nrows * D * sizeof(float));
	return CLOQ_OK;
}

void cloq_table_lm_bind(cloq_table_lm *t, const cloq_config *cfg, const float *embed, const float *head,
			const float *final_norm, cloq_layer_loader load, void *src, cloq_lm *lm)
{
	t->cfg = cfg;
	t->embed = embed;
	t->head = head;
	t->final_norm = final_norm;
	t->load = load;
	t->src = src;
	lm->cfg = t->cfg;
	lm->ctx = t;
	lm->embed = table_embed;
	lm->layer = table_layer;
	lm->head_rows = table_head_rows;
	lm->final_norm = t->final_norm;
}
