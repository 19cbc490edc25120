/*
 * cloq_moe.c - routing a sparse layer's calibration tokens and the few-token rule (cloq_moe.h).
 */
#include "cloq_moe.h"

#include <stdlib.h>
#include <string.h>

#include "cloq_sys.h"

#define M CLOQ_MOE_MIN_ROWS

int cloq_moe_routing_init(cloq_moe_routing *r, int experts, int topk, int64_t ntok, cloq_err *err)
{
	memset(r, 0, sizeof *r);
	if (experts < 1 || topk < 1 || topk > experts || ntok < 1)
		return cloq_err_set(err, CLOQ_EUSAGE, "routing %lld tokens to top-%d of %d experts", (long long)ntok, topk,
				    experts);
	r->E = experts, r->K = topk, r->ntok = ntok;
	r->sel = cloq_malloc((size_t)ntok * topk * sizeof *r->sel);
	r->wt = cloq_malloc((size_t)ntok * topk * sizeof *r->wt);
	r->count = cloq_calloc((size_t)experts, sizeof *r->count);
	r->cand_p = cloq_malloc((size_t)experts * M * sizeof *r->cand_p);
	r->cand_t = cloq_malloc((size_t)experts * M * sizeof *r->cand_t);
	r->ncand = cloq_calloc((size_t)experts, sizeof *r->ncand);
	r->nfill = cloq_calloc((size_t)experts, sizeof *r->nfill);
	if (!r->sel || !r->wt || !r->count || !r->cand_p || !r->cand_t || !r->ncand || !r->nfill) {
		cloq_moe_routing_free(r);
		return cloq_err_set(err, CLOQ_EIO, "out of memory routing %lld tokens to %d experts", (long long)ntok,
				    experts);
	}
	return CLOQ_OK;
}

void cloq_moe_routing_free(cloq_moe_routing *r)
{
	cloq_free(r->sel);
	cloq_free(r->wt);
	cloq_free(r->count);
	cloq_free(r->cand_p);
	cloq_free(r->cand_t);
	cloq_free(r->ncand);
	cloq_free(r->nfill);
	memset(r, 0, sizeof *r);
}

/* a ranks below b: lower probability, or the same and a later token */
static int worse(float pa, int64_t ta, float pb, int64_t tb) { return pa < pb || (pa == pb && ta > tb); }

static void swap(float *p, int64_t *t, int i, int j)
{
	float fp = p[i];
	int64_t ft = t[i];
	p[i] = p[j], t[i] = t[j];
	p[j] = fp, t[j] = ft;
}

/* the heap of one expert keeps its worst candidate on top */
static void sift_down(float *p, int64_t *t, int n, int i)
{
	for (;;) {
		int a = 2 * i + 1, b = a + 1, w = i;
		if (a < n && worse(p[a], t[a], p[w], t[w]))
			w = a;
		if (b < n && worse(p[b], t[b], p[w], t[w]))
			w = b;
		if (w == i)
			return;
		swap(p, t, i, w);
		i = w;
	}
}

static void push(float *p, int64_t *t, int *n, float pv, int64_t tv)
{
	if (*n < M) { /* sift up */
		int i = (*n)++;
		p[i] = pv, t[i] = tv;
		while (i > 0) {
			int up = (i - 1) / 2;
			if (!worse(p[i], t[i], p[up], t[up]))
				break;
			swap(p, t, i, up);
			i = up;
		}
	} else if (worse(p[0], t[0], pv, tv)) {
		p[0] = pv, t[0] = tv;
		sift_down(p, t, *n, 0);
	}
}

int cloq_moe_routing_add(cloq_moe_routing *r, const float *probs, const int *sel, const float *wt, int T,
			 cloq_err *err)
{
	int E = r->E, K = r->K;
	if (T < 0 || r->added + T > r->ntok)
		return cloq_err_set(err, CLOQ_EUSAGE, "routing more than the %lld calibration tokens", (long long)r->ntok);
	for (int i = 0; i < T * K; i++) /* nothing recorded from a bad window */
		if (sel[i] < 0 || sel[i] >= E)
			return cloq_err_set(err, CLOQ_EUSAGE, "token %lld routed to expert %d of %d",
					    (long long)(r->added + i / K), sel[i], E);
	for (int t = 0; t < T; t++) {
		int64_t tok = r->added + t;
		const int *s = sel + (size_t)t * K;
		const float *p = probs + (size_t)t * E;
		for (int j = 0; j < K; j++) {
			r->sel[tok * K + j] = s[j];
			r->wt[tok * K + j] = wt[(size_t)t * K + j];
			r->count[s[j]]++;
		}
		for (int e = 0; e < E; e++) {
			int routed = 0;
			for (int j = 0; j < K; j++)
				routed |= s[j] == e;
			if (!routed)
				push(r->cand_p + (size_t)e * M, r->cand_t + (size_t)e * M, &r->ncand[e], p[e], tok);
		}
	}
	r->added += T;
	return CLOQ_OK;
}

static int by_token(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

int cloq_moe_routing_finish(cloq_moe_routing *r, cloq_err *err)
{
	if (r->added != r->ntok)
		return cloq_err_set(err, CLOQ_EUSAGE, "routing finished after %lld of %lld tokens", (long long)r->added,
				    (long long)r->ntok);
	for (int e = 0; e < r->E; e++) {
		float *p = r->cand_p + (size_t)e * M;
		int64_t *t = r->cand_t + (size_t)e * M;
		int n = r->ncand[e];
		/* pop the worst to the back: the array ends up best first */
		for (int k = n - 1; k > 0; k--) {
			swap(p, t, 0, k);
			sift_down(p, t, k, 0);
		}
		int64_t want = r->count[e] < M ? M - r->count[e] : 0;
		r->nfill[e] = want < n ? (int)want : n;
		qsort(t, (size_t)r->nfill[e], sizeof *t, by_token);
	}
	return CLOQ_OK;
}
