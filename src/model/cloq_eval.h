/*
 * cloq_eval.h - whole-model evaluation: logits and perplexity, layer by layer.
 *
 * The model is reached through a cloq_lm: callbacks that hand out the embedding rows, one layer's
 * fp32 weights at a time, and lm_head rows in chunks. So the same code scores an HF model
 * directory, a converted job (deq(Q) + sBA) or an exported GPTQ checkpoint, and only one layer's
 * weights and one vocab chunk of lm_head are in memory at once.
 *
 * Perplexity: every window is one sequence; positions 0..T-2 predict 1..T-1; the figure is
 * exp(mean NLL) over all predictions of all windows. NLL is accumulated in float64.
 */
#ifndef CLOQ_EVAL_H
#define CLOQ_EVAL_H

#include <stdint.h>

#include "cloq_calib.h"
#include "cloq_config.h"
#include "cloq_llama.h"

typedef struct cloq_lm {
	const cloq_config *cfg;
	void *ctx;
	/* x (T, hidden) = embedding rows of ids[0..T). */
	int (*embed)(void *ctx, const int32_t *ids, int T, float *x, cloq_err *err);
	/* Fill *w with layer l's fp32 weights; they stay valid until the next call or release. */
	int (*layer)(void *ctx, int l, cloq_layer_w *w, cloq_err *err);
	/* dst (nrows, hidden) = lm_head rows [row0, row0 + nrows). */
	int (*head_rows)(void *ctx, int row0, int nrows, float *dst, cloq_err *err);
	const float *final_norm; /* (hidden) */
} cloq_lm;

/* One decoded layer kept between calls (evaluation asks for layer l once per window). */
typedef struct cloq_layer_cache {
	int loaded;          /* -1: none */
	cloq_layer_w lw;
} cloq_layer_cache;

typedef int (*cloq_layer_loader)(void *src, int l, cloq_layer_w *w, cloq_err *err);

void cloq_layer_cache_init(cloq_layer_cache *c);
void cloq_layer_cache_release(cloq_layer_cache *c);
/* *w = layer l, loading it with `load` unless it is the one already held. */
int cloq_layer_cache_get(cloq_layer_cache *c, int l, cloq_layer_loader load, void *src, cloq_layer_w *w, cloq_err *err);

/* A cloq_lm over in-memory tables and a layer loader: what a converted job and an exported
 * checkpoint both are once read. The struct must outlive the cloq_lm filled from it. */
typedef struct cloq_table_lm {
	const cloq_config *cfg;
	const float *embed;       /* (vocab, hidden) */
	const float *head;        /* (vocab, hidden), may equal embed */
	const float *final_norm;  /* (hidden) */
	cloq_layer_loader load;
	void *src;
	cloq_layer_cache cache;
} cloq_table_lm;

/* Fill t (its cache must have been initialised) and the cloq_lm view of it. */
void cloq_table_lm_bind(cloq_table_lm *t, const cloq_config *cfg, const float *embed, const float *head,
			const float *final_norm, cloq_layer_loader load, void *src, cloq_lm *lm);

typedef struct cloq_eval_result {
	double nll_sum;      /* sum of -log p(target) */
	long long count;     /* number of predictions */
	double ppl;          /* exp(nll_sum / count) */
	double seconds;
} cloq_eval_result;

/* Score all windows. `progress` (may be NULL) is printed to stderr as layers advance. */
/* lm->embed, then the family's embedding scale (Gemma 2: sqrt(hidden) in the model's dtype). */
int cloq_lm_embed(const cloq_lm *lm, const int32_t *ids, int T, float *x, cloq_err *err);
/* The family's final logit soft-capping (Gemma 2) on n logits, in place; nothing elsewhere. */
void cloq_lm_softcap(const cloq_config *cfg, float *logits, size_t n);

int cloq_eval_ppl(const cloq_lm *lm, const cloq_windows *w, cloq_eval_result *res, int progress, cloq_err *err);

/* Logits of one sequence: logits (T, vocab) row-major. */
int cloq_eval_logits(const cloq_lm *lm, const int32_t *ids, int T, float *logits, cloq_err *err);

#endif
