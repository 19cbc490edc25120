/* cloq_plan.c - memory planner (see cloq_plan.h). */
#include "cloq_plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <cblas.h>
#include <string.h>

#include "cloq_llama.h"

static int64_t dtype_bytes(const cloq_config *c)
{
	if (!strcmp(c->torch_dtype, "float32"))
		return 4;
	return 2; /* bfloat16 / float16: what released checkpoints use */
}

void cloq_plan_compute(const cloq_config *c, const cloq_convert_opts *o, int nsamples, int seqlen, cloq_plan *p)
{
	int64_t lp = cloq_config_layer_params(c);
	int64_t lin = 0; /* parameters in the seven linears */
	for (int l = 0; l < CLOQ_LINEARS; l++) {
		int out, in;
		cloq_linear_shape(c, l, &out, &in);
		lin += (int64_t)out * in;
	}
	int64_t r = o->rank;
	int lora = o->propagate == CLOQ_PROP_LORA, fp = o->propagate == CLOQ_PROP_FP;
	/* the quantizer runs once per linear before R exists (one-shot CLoQ, zero init); LoftQ and
	 * alternating CLoQ quantize inside the solver, with GPTQ's factor kept beside R */
	int early = (o->init == CLOQ_INIT_CLOQ && o->cloq_iters <= 1) || o->init == CLOQ_INIT_ZERO;
	int gptq = o->quantizer == CLOQ_Q_GPTQ;
	/* Held all the time: the raw bytes of the next layer (read-ahead, one buffer), the layer's
	 * norms and biases, the LoRA factors. Then per group g (qkv, o, gateup, down), the larger of
	 *  - its statistics pass: fp32 originals of g and later groups (all with --propagate fp),
	 *    deq(Q) (+ deq(Q) + sBA for lora) and codes of earlier groups, H (f64) being summed;
	 *  - its solve: originals of g and later, codes of earlier groups (their deq(Q) is dropped
	 *    and rebuilt after), and the solver's share for width n, in the order
	 *    cloq_layer_solve_group runs: (a) GPTQ's factor made from H: H + the f32 factor;
	 *    (b) quantize: H + GPTQ's f32 factor + the group's deq(Q) and codes + GPTQ's working
	 *    copy; (c) H becomes R in place, plus R's f32 copy; (d) per linear: R, R f32, deq(Q)
	 *    and codes, dW, M = R dW^T (f32), the report's residual. */
	int64_t fixed = lp * dtype_bytes(c) + (lp - lin) * 4 + (int64_t)CLOQ_LINEARS * r * (c->hidden + c->intermediate) * 4;
	p->weights_bytes = p->solver_bytes = 0;
	int64_t best = 0, nmax = 0;
	for (int g = 0; g < CLOQ_GROUPS; g++) {
		int64_t w_orig = 0, w_prev_deq = 0, w_prev_codes = 0, grp = 0, omax = 0, n = 0;
		for (int l = 0; l < CLOQ_LINEARS; l++) {
			int out, in;
			cloq_linear_shape(c, l, &out, &in);
			int64_t sz = (int64_t)out * in;
			int lg = cloq_linear_group(l);
			if (lg >= g || fp)
				w_orig += sz * 4;
			if (lg < g) {
				w_prev_deq += sz * 4 * (lora ? 2 : 1);
				w_prev_codes += sz;
			}
			if (lg == g) {
				n = in;
				grp += sz * (4 * (lora ? 2 : 1) + 1);
				omax = out > omax ? out : omax;
			}
		}
		int64_t nn = n * n, big = n * omax;
		int64_t stats = w_orig + w_prev_deq + w_prev_codes + nn * 8 + n * 256 * 4;
		int64_t a = gptq ? nn * 12 : 0;
		int64_t b = nn * 8 + (gptq ? nn * 4 + big * 4 : 0) + (early ? grp : 0);
		/* (d): dW and M = R dW^T (f32) per linear, the report's residual with --baselines,
		 * LoftQ's / alternating CLoQ's iterates, the randomized SVD's (n, 128) panels and the
		 * blocked residual/objective scratch */
		int64_t d = nn * 12 + (gptq && !early ? nn * 4 : 0) + grp + big * 4 * 2 + (o->baselines ? big * 4 : 0) +
			    (!early ? big * 4 * 3 : 0) + n * (3 * 128 + 2 * 256) * 8 + n * 1024 * 4;
		int64_t solve = w_orig + w_prev_codes + (a > b ? (a > d ? a : d) : (b > d ? b : d));
		int64_t mine = stats > solve ? stats : solve;
		if (mine > best) {
			best = mine;
			p->weights_bytes = fixed + w_orig + w_prev_codes + (stats > solve ? w_prev_deq : 0);
			p->solver_bytes = mine - (w_orig + w_prev_codes + (stats > solve ? w_prev_deq : 0));
			nmax = n;
		}
	}
	/* block workspace, the window buffer, cache frame buffers, and the frame buffers of the
	 * resumable passes' stashes (attention output, h, the SwiGLU product: read and written) */
	p->forward_bytes = (int64_t)cloq_block_ws_bytes(c, seqlen) + (int64_t)seqlen * c->hidden * 4 * 3 +
			   (int64_t)seqlen * (c->intermediate + c->heads * c->head_dim + c->hidden) * 4 * 2;
	p->peak_bytes = p->weights_bytes + p->solver_bytes + p->forward_bytes + (64 << 20) /* libs, zstd */;
	int64_t act = (int64_t)nsamples * seqlen * c->hidden * (o->cache_bf16 ? 2 : 4);
	p->scratch_disk = 2 * act;
	if (!o->one_pass && !o->full_passes) /* the resumable passes' stashes, fp32 */
		p->scratch_disk += (int64_t)nsamples * seqlen * (c->intermediate + c->hidden) * 4;
	p->output_bytes = c->layers * (lin + lp - lin + (int64_t)CLOQ_LINEARS * r * (c->hidden + c->intermediate) * 4) +
			  (int64_t)c->vocab * c->hidden * dtype_bytes(c) * (c->tie_embeddings ? 1 : 2);
	/* arithmetic: the true-sequential passes resume where the previous one stopped, so a layer
	 * costs one forward pass of linear work and attention (--one-pass: two, statistics and
	 * propagation);
	 * per linear GPTQ ~ 2 out in^2, the CLoQ product R dW^T 2 out in^2; per group two Cholesky-
	 * class factorisations ~ in^3 */
	double tokens = (double)nsamples * seqlen;
	double attn = 4.0 * seqlen * (double)c->heads * c->head_dim; /* per token */
	double fwd = tokens * (2.0 * lin + attn);
	double per_layer = (o->one_pass ? 2.0 : o->full_passes ? 2.4 : 1.0) * fwd;
	for (int l = 0; l < CLOQ_LINEARS; l++) {
		int out, in;
		cloq_linear_shape(c, l, &out, &in);
		per_layer += 4.0 * out * (double)in * in * (o->cloq_iters > 1 ? o->cloq_iters : 1);
	}
	double hq = c->hidden, hi = c->intermediate;
	per_layer += 3 * (hq * hq * hq) + hi * hi * hi; /* qkv, o, gateup on hidden; down on intermediate */
	p->flops = per_layer * c->layers;
	if (p->solver_bytes >= p->weights_bytes && p->solver_bytes >= p->forward_bytes)
		snprintf(p->largest_item, sizeof p->largest_item, "Gram/factor matrices of width %lld", (long long)nmax);
	else if (p->weights_bytes >= p->forward_bytes)
		snprintf(p->largest_item, sizeof p->largest_item, "one layer's weights, %lld parameters", (long long)lp);
	else
		snprintf(p->largest_item, sizeof p->largest_item, "the %d-token forward workspace", seqlen);
}

double cloq_plan_measure_gflops(void)
{
	enum { N = 384 };
	float *a = malloc(sizeof(float) * N * N * 3);
	if (!a)
		return 0;
	for (int i = 0; i < N * N * 3; i++)
		a[i] = (float)(((unsigned)i * 7919u) % 1000u) / 1000.0f;
	struct timespec t0, t1;
	int reps = 0;
	double el = 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a, N, a + N * N, N, 0.0f,
			    a + 2 * N * N, N);
		reps++;
		clock_gettime(CLOCK_MONOTONIC, &t1);
		el = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
	} while (el < 0.25);
	free(a);
	return 2.0 * N * N * N * reps / el / 1e9;
}
