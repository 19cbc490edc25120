/*
 * cloq_moe.h - a sparse layer's calibration tokens, routed: which expert sees which rows.
 *
 * A mixture-of-experts layer is calibrated expert by expert (docs/DESIGN.md, "Mixtures of
 * experts"). Its routing is computed once per layer, on the experts' common input xn (after the
 * layer's attention has been quantized), with the forward's own rule (cloq_moe_route): for every
 * calibration token the top-k experts and their weights.
 *
 * Expert e is calibrated on the rows routed to it. An expert that few tokens reach would get an
 * H of tiny rank (no token: H = 0, and no factor at all), so the few-token rule fills it up:
 * an expert routed fewer than CLOQ_MOE_MIN_ROWS tokens is calibrated on its routed tokens plus
 * the (CLOQ_MOE_MIN_ROWS - routed) tokens that the router gave it the highest probability among
 * those not routed to it (ties: the earlier token). They shape its Gram matrices only; its output
 * still goes to its routed tokens alone, as in the model. report.json names every expert the rule
 * filled, with how many rows.
 *
 * Rows of expert e, in the order its Gram matrices sum them: first its routed tokens, ascending,
 * then its fill tokens, ascending. Tokens are numbered window by window (window i, position t:
 * i * seqlen + t).
 */
#ifndef CLOQ_MOE_H
#define CLOQ_MOE_H

#include <stdint.h>

#include "cloq_config.h"
#include "cloq_error.h"

#define CLOQ_MOE_MIN_ROWS 128 /* rows below which the few-token rule fills an expert up */

typedef struct cloq_moe_routing {
	int E, K;
	int64_t ntok, added;   /* tokens in all, routed so far */
	int32_t *sel;          /* (ntok, K) experts of each token, most probable first */
	float *wt;             /* (ntok, K) their weights */
	int64_t *count;        /* (E) tokens routed to each expert */
	/* per expert, the best CLOQ_MOE_MIN_ROWS tokens not routed to it: a heap (worst on top)
	 * while routing, sorted by token once cloq_moe_routing_finish chose the fill */
	float *cand_p;         /* (E, CLOQ_MOE_MIN_ROWS) */
	int64_t *cand_t;
	int *ncand;            /* (E) candidates kept */
	int *nfill;            /* (E) fill rows chosen (after finish): the first nfill of cand_t */
} cloq_moe_routing;

int cloq_moe_routing_init(cloq_moe_routing *r, int experts, int topk, int64_t ntok, cloq_err *err);
void cloq_moe_routing_free(cloq_moe_routing *r);
/* Record the routing of the next T tokens: probs (T, E) the router's probabilities, sel and wt as
 * cloq_moe_route gives them. CLOQ_EUSAGE past ntok tokens. */
int cloq_moe_routing_add(cloq_moe_routing *r, const float *probs, const int *sel, const float *wt, int T,
			 cloq_err *err);
/* All tokens routed: choose each expert's fill rows (the few-token rule). CLOQ_EUSAGE when fewer
 * than ntok tokens were added. */
int cloq_moe_routing_finish(cloq_moe_routing *r, cloq_err *err);
/* Rows expert e is calibrated on: routed + fill. */
static inline int64_t cloq_moe_rows(const cloq_moe_routing *r, int e) { return r->count[e] + r->nfill[e]; }

#endif
