/* cloq_plan.c - memory planner (see cloq_plan.h). */
#include "cloq_plan.h"

#include <stdio.h>

#include "cloq_llama.h"

void cloq_plan_compute(const cloq_config *c, const cloq_convert_opts *o, int nsamples, int seqlen, cloq_plan *p)
{
	int64_t lp = cloq_config_layer_params(c);
	int64_t nmax = c->intermediate > c->hidden ? c->intermediate : c->hidden;
	int64_t qd = (int64_t)c->heads * c->head_dim;
	if (qd > nmax)
		nmax = qd;
	/* the largest single linear (down_proj or gate/up) */
	int64_t maxlin = (int64_t)c->hidden * c->intermediate;
	int64_t r = o->rank;
	/* weights: original fp32 + deq(Q) per linear (+ W + sBA for lora) + codes + LoRA factors */
	p->weights_bytes = lp * 4 * (o->propagate == CLOQ_PROP_LORA ? 3 : 2) + lp +
			   (int64_t)CLOQ_LINEARS * r * (c->hidden + c->intermediate) * 4;
	/* solver: Gram H (f64) + factor R (f64) + GPTQ's H^-1 copy (f64) + M = R dW^T (f64) + a few
	 * (out, in) float residuals of the largest linear */
	p->solver_bytes = nmax * nmax * 8 * 3 + maxlin * 8 + maxlin * 4 * 3;
	p->forward_bytes = (int64_t)cloq_block_ws_bytes(c, seqlen) + (int64_t)seqlen * c->hidden * 4 * 3;
	p->peak_bytes = p->weights_bytes + p->solver_bytes + p->forward_bytes + (64 << 20) /* libs, zstd */;
	int64_t act = (int64_t)nsamples * seqlen * c->hidden * (o->cache_bf16 ? 2 : 4);
	p->scratch_disk = 2 * act;
	p->output_bytes = c->layers * (lp * o->bits / 8 + (int64_t)CLOQ_LINEARS * r * (c->hidden + c->intermediate) * 4) +
			  (int64_t)c->vocab * c->hidden * 2 * (c->tie_embeddings ? 1 : 2);
	if (p->solver_bytes >= p->weights_bytes && p->solver_bytes >= p->forward_bytes)
		snprintf(p->largest_item, sizeof p->largest_item, "Gram/factor matrices of width %lld", (long long)nmax);
	else if (p->weights_bytes >= p->forward_bytes)
		snprintf(p->largest_item, sizeof p->largest_item, "one layer's weights, %lld parameters", (long long)lp);
	else
		snprintf(p->largest_item, sizeof p->largest_item, "the %d-token forward workspace", seqlen);
}
