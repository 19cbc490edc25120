/* cloq_plan.c - memory planner (see cloq_plan.h). */
#include "cloq_plan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#include <string.h>

#include "cloq_llama.h"
#include "cloq_solver.h"
#include "cloq_sys.h"

static int64_t dtype_bytes(const cloq_config *c)
{
	if (!strcmp(c->torch_dtype, "float32"))
		return 4;
	return 2; /* bfloat16 / float16: what released checkpoints use */
}

size_t cloq_plan_capture_cols(const cloq_config *c, int one_pass, size_t off[CLOQ_GROUPS])
{
	size_t capw = 0;
	for (int g = 0; g < CLOQ_GROUPS; g++) {
		size_t w = cloq_group_cols(c, g);
		if (off)
			off[g] = one_pass ? capw : 0;
		capw = one_pass ? capw + w : (w > capw ? w : capw);
	}
	return capw;
}

/* The process before any of the job's buffers: code, libraries (OpenBLAS's and OpenMP's thread
 * buffers, zstd's contexts), the tokenizer and the journal. stories260K's whole job peaks at 20.5
 * MiB with its stashes on disk; job (a) of docs/PERFORMANCE.md section 11 at 114 MiB (on disk) and
 * 274 MiB (in RAM) against 122 and 272 planned with this figure (it was 64 MiB: +28% on disk). */
#define PLAN_BASE_BYTES ((int64_t)40 << 20)

static void plan_dense(const cloq_config *c, const cloq_convert_opts *o, int nsamples, int seqlen, cloq_plan *p)
{
	int64_t lp = cloq_config_layer_params(c);
	int64_t lin = 0; /* parameters in the linears */
	for (int l = 0; l < CLOQ_LINEARS; l++) {
		int out, in;
		if (!cloq_linear_present(c, l))
			continue;
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
	int64_t fixed = lp * dtype_bytes(c) + (lp - lin) * 4 + (int64_t)cloq_linear_count(c) * r * (c->hidden + c->intermediate) * 4;
	p->weights_bytes = p->solver_bytes = 0;
	int64_t best = 0, nmax = 0;
	int gth = o->threads > 0 ? o->threads : cloq_cpus_available(); /* the Gram's panels, one a thread */
	for (int g = 0; g < CLOQ_GROUPS; g++) {
		int64_t w_orig = 0, w_prev_deq = 0, w_prev_codes = 0, grp = 0, omax = 0, n = 0;
		for (int l = 0; l < CLOQ_LINEARS; l++) {
			int out, in;
			if (!cloq_linear_present(c, l))
				continue;
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
		/* H, its panel scratch, and the rows of an incomplete 2048-row block when windows
		 * are not whole blocks (cloq_solver.h) */
		int64_t stats = w_orig + w_prev_deq + w_prev_codes + nn * 8 + (int64_t)cloq_gram_scratch_floats((int)n, gth) * 4 +
				(seqlen % CLOQ_GRAM_CHUNK ? n * CLOQ_GRAM_CHUNK * 4 : 0);
		int64_t a = gptq ? nn * 12 : 0;
		int64_t b = nn * 8 + (gptq ? nn * 4 + big * 4 : 0) + (early ? grp : 0);
		/* (d): dW and M = R dW^T (f32) per linear, the report's residual with --baselines,
		 * LoftQ's / alternating CLoQ's iterates, the randomized SVD's (n, 128) panels and the
		 * blocked residual/objective scratch */
		int64_t d = nn * 12 + (gptq && !early ? nn * 4 : 0) + grp + big * 4 * 2 + (o->baselines ? big * 4 : 0) +
			    (!early ? big * 4 * 3 : 0) + n * (3 * 128 + 2 * 256) * 8 + n * 1024 * 4;
		int64_t solve = w_orig + w_prev_codes + (a > b ? (a > d ? a : d) : (b > d ? b : d)) +
				(o->magr ? nn * 4 + big * 4 * 2 : 0) + /* --magr: H / lambda_max, W', its step */
				(o->asym ? nn * 8 * 2 : 0);          /* --asym-calib: D, and its solve's H + lambda I */
		if (o->asym) /* D is summed beside H */
			stats += nn * 8;
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
	if (o->asym) { /* the original layer's copy, its forward, the paired window buffers */
		p->weights_bytes += lin * 4;
		p->forward_bytes += (int64_t)cloq_block_ws_bytes(c, seqlen) +
				    (int64_t)seqlen * (c->hidden + 2 * (c->intermediate > c->hidden ? c->intermediate : c->hidden)) * 4;
	}
	p->peak_bytes = p->weights_bytes + p->solver_bytes + p->forward_bytes + PLAN_BASE_BYTES;
	/* Window slots: with two windows or more a thread, each thread forwards its own window with
	 * single-threaded GEMMs and the group inputs wait for their Gram update in window order; a
	 * workspace, a window buffer and the captured inputs a slot, and its cache I/O: a reader of
	 * cache[l] (a frame's planes) and its cache[l+1] frame (planes and zstd output), in place of
	 * the one reader's and the writer's planes counted above. Taken when that costs at most a
	 * quarter of the plan (or 256 MiB) and fits --mem-budget. The forward's sums, so the bytes,
	 * depend on it: a job records its choice (o->window_slots, then forced here). */
	{
		int th = o->threads > 0 ? o->threads : cloq_cpus_available();
		int64_t capw = (int64_t)cloq_plan_capture_cols(c, o->one_pass, NULL);
		int64_t per = (int64_t)cloq_block_ws_bytes(c, seqlen) + (int64_t)seqlen * c->hidden * 4;
		int64_t frame = (int64_t)seqlen * c->hidden * 4;
		int64_t extra = (int64_t)(th - 1) * per + (int64_t)th * seqlen * capw * 4 + th * 3 * frame - 2 * frame;
		int64_t allow = p->peak_bytes / 4 > ((int64_t)256 << 20) ? p->peak_bytes / 4 : ((int64_t)256 << 20);
		p->window_slots = 1;
		if (o->window_slots > 1 ||
		    (o->window_slots <= 0 && th >= 2 && nsamples >= 2 * th && extra <= allow &&
		     (o->mem_budget <= 0 || p->peak_bytes + extra <= o->mem_budget))) {
			th = o->window_slots > 1 ? o->window_slots : th;
			extra = (int64_t)(th - 1) * per + (int64_t)th * seqlen * capw * 4 + th * 3 * frame - 2 * frame;
			p->window_slots = th;
			p->forward_bytes += extra;
			p->peak_bytes += extra;
		}
	}
	int64_t act = (int64_t)nsamples * seqlen * c->hidden * (o->cache_bf16 ? 2 : 4);
	p->scratch_disk = 2 * act;
	if (!o->one_pass && !o->full_passes) /* the resumable passes' stashes, fp32 */
		p->scratch_disk += (int64_t)nsamples * seqlen * (c->intermediate + c->hidden) * 4;
	if (o->asym) /* the original stream's two caches and its four group inputs */
		p->scratch_disk += 2 * act + (int64_t)nsamples * seqlen *
						     (2 * c->hidden + (int64_t)c->heads * c->head_dim + c->intermediate) * 4;
	{
		int nf = o->quantizer == CLOQ_Q_NF || o->quantizer == CLOQ_Q_NF4_BNB;
		int gs = nf ? o->nf_block : o->group_size, bits = o->bits;
		double lorab = 0.0, codes = 0.0, params = 0.0, packed = 0.0;
		for (int l = 0; l < CLOQ_LINEARS; l++) {
			int out, in;
			if (!cloq_linear_present(c, l))
				continue;
			cloq_linear_shape(c, l, &out, &in);
			double ng = nf ? 0.0 : (double)((in + gs - 1) / gs);
			lorab += (double)r * (in + out) * 4.0;
			codes += (double)out * in * (bits + 0.4) / 8.0 + (nf ? (double)out * in / gs * 4.0 : ng * out * 4.0);
			params += (double)out * in;
			/* GPTQ: qweight, qzeros, fp16 scales, g_idx; a shape it cannot pack stays fp16 */
			if (!nf && (int64_t)in * bits % 32 == 0 && (int64_t)out * bits % 32 == 0)
				packed += (double)in * out * bits / 8.0 + ng * out * bits / 8.0 + ng * out * 2.0 + in * 4.0;
			else
				packed += (double)out * in * 2.0;
		}
		double other = (double)lp - params; /* norms and biases */
		double emb = (double)c->vocab * c->hidden * (c->tie_embeddings ? 1 : 2);
		p->output_bytes = (int64_t)(c->layers * (codes + lorab + other * 4.0) + emb * dtype_bytes(c));
		p->export_bytes = (int64_t)(c->layers * (packed + lorab + other * 2.0) + emb * 2.0);
		if (o->quantizer == CLOQ_Q_NF4_BNB) /* --format peft-only: the adapter alone */
			p->export_bytes = (int64_t)(c->layers * lorab);
		else if (nf) /* --format dequant, fp16 */
			p->export_bytes = (int64_t)(c->layers * (params * 2.0 + lorab + other * 2.0) + emb * 2.0);
		/* safetensors headers, about 130 bytes of JSON a tensor, and the small JSON files */
		double nlin = cloq_linear_count(c);
		double ntensors = c->layers * nlin * 2.0 +
				  (o->quantizer == CLOQ_Q_NF4_BNB ? 0.0 : c->layers * (nlin * 4.0 + 4.0) + 3.0);
		p->export_bytes += (int64_t)(ntensors * 130.0 + 4096.0);
	}
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
		if (!cloq_linear_present(c, l))
			continue;
		cloq_linear_shape(c, l, &out, &in);
		per_layer += 4.0 * out * (double)in * in * (o->cloq_iters > 1 ? o->cloq_iters : 1);
	}
	double hq = c->hidden, hi = c->intermediate;
	per_layer += 3 * (hq * hq * hq) + hi * hi * hi; /* qkv, o, gateup on hidden; down on intermediate */
	p->flops = per_layer * c->layers;

	/* The time model's work, per layer then times the layers. GPTQ and the solve run per linear
	 * on (out, in) matrices with an (in, in) factor; how much of the sgemm rate they reach grows
	 * with in (blocks of 128 columns, the per-column GPTQ loop, the randomized SVD's panels): each
	 * linear's flops are divided by g(in) = in / (in + 8192), measured at in = 64, 1024, 2752,
	 * 4096 and 11008 (docs/PERFORMANCE.md section 9). */
	double S = 0.0; /* sum over linears of out * in^2 / g(in) */
	for (int l = 0; l < CLOQ_LINEARS; l++) {
		int out, in;
		if (!cloq_linear_present(c, l))
			continue;
		cloq_linear_shape(c, l, &out, &in);
		S += (double)out * in * in * (in + 8192.0) / in;
	}
	double qd = (double)c->heads * c->head_dim;
	double gram_n2 = 2 * hq * hq + qd * qd + hi * hi; /* qkv and gateup read hidden, o heads*hd, down inter */
	/* per group a factorisation of its (n, n) matrix, 2/3 n^3 (float32 for GPTQ's; float64,
	 * counted twice, for the solve's Cholesky at n^3 / 3), also over g(n) */
	double fac_n3 = 0.0;
	const double gn[4] = {hq, qd, hq, hi};
	for (int g = 0; g < 4; g++)
		fac_n3 += 2.0 / 3.0 * gn[g] * gn[g] * gn[g] * (gn[g] + 8192.0) / gn[g];
	double passes = o->one_pass ? 2.0 : o->full_passes ? 2.4 : 1.0;
	int quant_iters = o->init == CLOQ_INIT_LOFTQ ? o->loftq_iters : o->cloq_iters > 1 ? o->cloq_iters : 1;
	p->layers = c->layers;
	p->flops_forward = c->layers * passes * tokens * (2.0 * lin + attn / 2.0); /* causal: half the scores */
	p->flops_gram = c->layers * 2.0 * tokens * gram_n2;
	/* GPTQ: the lazy-batch updates ~ out in^2 per linear, and the factor of H^-1 per group */
	p->flops_quantize = (gptq ? c->layers * (S * quant_iters + fac_n3) : 0.0) +
			    (o->magr ? c->layers * 2.0 * S * (o->group_size < c->hidden ? 150 : 200) * quant_iters : 0.0);
	p->flops_solve = c->layers * ((4.0 + (o->baselines ? 4.0 : 0.0)) * S * (o->cloq_iters > 1 ? o->cloq_iters : 1) +
				      fac_n3);
	/* bytes: the layer's weights read; the activation cache written and read (fp32 or bf16) and,
	 * with resumable passes, the stashes; the shards (codes 1 byte a weight, LoRA fp32) */
	double actb = tokens * c->hidden * (o->cache_bf16 ? 2.0 : 4.0);
	double stash = (o->one_pass || o->full_passes) ? 0.0 : tokens * (c->intermediate + c->hidden + qd) * 4.0 * 2.0;
	p->read_bytes = c->layers * (double)lp * dtype_bytes(c);
	p->cache_bytes = c->layers * (2.0 * actb + stash);
	p->shard_bytes = c->layers * ((double)lin + (double)r * 4.0 * (7.0 * c->hidden + 2.0 * qd + 3.0 * c->intermediate));
	p->windows = (double)c->layers * nsamples / p->window_slots; /* window slots run at once */
	if (p->solver_bytes >= p->weights_bytes && p->solver_bytes >= p->forward_bytes)
		snprintf(p->largest_item, sizeof p->largest_item, "Gram/factor matrices of width %lld", (long long)nmax);
	else if (p->weights_bytes >= p->forward_bytes)
		snprintf(p->largest_item, sizeof p->largest_item, "one layer's weights, %lld parameters", (long long)lp);
	else
		snprintf(p->largest_item, sizeof p->largest_item, "the %d-token forward workspace", seqlen);
}

/* The per-layer work and sizes of plan p, times f, added to acc (the time model's and the output's
 * fields; memory is not additive). f = -p->layers subtracts p's. */
static void plan_add(cloq_plan *acc, const cloq_plan *p, double f)
{
	double per = f / p->layers;
	acc->flops += per * p->flops;
	acc->flops_forward += per * p->flops_forward;
	acc->flops_gram += per * p->flops_gram;
	acc->flops_quantize += per * p->flops_quantize;
	acc->flops_solve += per * p->flops_solve;
	acc->read_bytes += per * p->read_bytes;
	acc->cache_bytes += per * p->cache_bytes;
	acc->shard_bytes += per * p->shard_bytes;
	acc->windows += per * p->windows;
	acc->output_bytes += (int64_t)(per * p->output_bytes);
	acc->export_bytes += (int64_t)(per * p->export_bytes);
}

/*
 * A mixture of experts, as the converter runs it (src/job/cloq_convert.c, "mixture of experts"): a
 * sparse layer is its attention plus one expert at a time, planned as a dense layer whose MLP has
 * the expert's width (the shared expert's, when wider); on top, the expert stage's buffers: the
 * experts' output sum and the gathered rows (each as many rows as there are calibration tokens,
 * hidden wide), the routing, and the forward workspace's wider MLP and router scratch. The work:
 * a view with an MLP of width 1 is the attention alone; each expert adds (view of its width -
 * attention) once per expert for quantize, solve and output, and top-k times for the forward and
 * Gram passes (every token reaches k experts; twice the forward: down's statistics and the output).
 * Dense layers (Qwen2-MoE's mlp_only_layers) are planned as the dense model's.
 */
static void plan_moe(const cloq_config *c, const cloq_convert_opts *o, int nsamples, int seqlen, cloq_plan *p)
{
	cloq_config v = *c, a = *c, s = *c, d = *c;
	cloq_plan pv, pa, ps, pd;
	int E = c->moe, K = c->moe_topk, sparse = cloq_config_sparse_layers(c);
	v.moe = a.moe = s.moe = d.moe = 0;
	v.fused = a.fused = s.fused = 0;
	v.mlp_bias = a.mlp_bias = s.mlp_bias = 0;
	v.intermediate = c->moe_inter > c->moe_shared_inter ? c->moe_inter : c->moe_shared_inter;
	a.intermediate = 1;
	s.intermediate = c->moe_shared_inter ? c->moe_shared_inter : 1;
	plan_dense(&v, o, nsamples, seqlen, &pv);
	plan_dense(&a, o, nsamples, seqlen, &pa);
	plan_dense(&s, o, nsamples, seqlen, &ps);
	plan_dense(&d, o, nsamples, seqlen, &pd);
	if (c->moe_shared_inter && c->moe_shared_inter < c->moe_inter) /* pv: the widest; the expert's own */
		v.intermediate = c->moe_inter;
	cloq_plan pe;
	plan_dense(&v, o, nsamples, seqlen, &pe); /* attention + one routed expert */

	*p = pv; /* the work fields are summed below, memory set after */
	p->flops = p->flops_forward = p->flops_gram = p->flops_quantize = p->flops_solve = 0;
	p->read_bytes = p->cache_bytes = p->shard_bytes = p->windows = 0;
	p->output_bytes = p->export_bytes = 0;
	p->layers = c->layers;
	double ks = sparse;
	plan_add(p, &pa, ks); /* the sparse layers' attention */
	cloq_plan ex = pe; /* one expert = its view - the attention, in each field */
	plan_add(&ex, &pa, -pa.layers);
	ex.windows = 0;
	cloq_plan pass = ex, once = ex; /* per-token work (k experts a token, forward twice) and per-expert work */
	pass.flops_quantize = pass.flops_solve = pass.read_bytes = pass.shard_bytes = 0;
	pass.output_bytes = pass.export_bytes = 0;
	pass.cache_bytes = 0;
	pass.flops = pass.flops_forward + pass.flops_gram;
	pass.flops_forward *= 2.0;
	once.flops_forward = once.flops_gram = once.cache_bytes = 0; /* the base: counted by pa and pd */
	once.flops = once.flops_quantize + once.flops_solve;
	/* An expert's linears are narrow (out 768-2048 against the 4096-28672 the stage efficiencies
	 * were fitted on), and its gather, act and output GEMMs add to the forward: measured on the
	 * Qwen3-235B-A22B layer geometry (docs/PERFORMANCE.md section 14), GPTQ ran at 1/1.6, the solve
	 * at 1/1.3 and the passes at 1/1.25 of what the dense model gives for the same flops. */
	pass.flops_forward *= 1.25, pass.flops_gram *= 1.25;
	once.flops_quantize *= 1.6, once.flops_solve *= 1.3;
	plan_add(p, &pass, ks * K);
	plan_add(p, &once, ks * E);
	if (c->moe_shared_inter) { /* the shared expert: every token, once */
		cloq_plan sh = ps;
		plan_add(&sh, &pa, -pa.layers);
		sh.windows = 0;
		plan_add(p, &sh, ks);
	}
	plan_add(p, &pd, c->layers - ks); /* dense layers */

	/* Memory: a sparse layer has two phases that never overlap. The attention's: a dense layer with a
	 * 1-wide MLP (pa), without its read-ahead buffer (a sparse layer is not read ahead; its
	 * experts are). The experts': one expert's weights and solves, as a dense layer of the expert's
	 * width whose attention is 1 wide (px: its qkv group is no larger than gate/up's), its raw
	 * bytes twice (the expert being converted, the next one being read), the stage's buffers (the
	 * experts' output sum and the gather, each a row of hidden floats a token; the routing), and
	 * the forward workspace, which lives through both (the real one: the router's scratch and the
	 * widest MLP). */
	int64_t tok = (int64_t)nsamples * seqlen, cap = tok > 128 ? tok : 128;
	int64_t wide = c->moe_inter > c->moe_shared_inter ? c->moe_inter : c->moe_shared_inter;
	int64_t stage = tok * c->hidden * 4 + cap * c->hidden * 4 + cap * 12 + tok * K * 8 + (int64_t)E * 128 * 12 +
			(int64_t)seqlen * (E + 2 * K) * 4 + 2048 * (2 * wide + c->hidden) * 4 + (int64_t)seqlen * c->hidden * 4 +
			(int64_t)E * c->hidden * 4;
	cloq_config x = v;
	cloq_plan px;
	x.intermediate = (int)wide;
	x.heads = x.kv_heads = 1, x.head_dim = 1, x.qk_norm = 0, x.qkv_bias = x.o_bias = 0;
	plan_dense(&x, o, nsamples, seqlen, &px);
	int64_t db = !strcmp(c->torch_dtype, "float32") ? 4 : 2;
	int64_t ws = ((int64_t)cloq_block_ws_bytes(c, seqlen) - (int64_t)cloq_block_ws_bytes(&a, seqlen)) * pa.window_slots;
	int64_t att = pa.peak_bytes + ws - cloq_config_layer_params(&a) * db;
	int64_t raw = 3 * (int64_t)c->hidden * wide * db;
	int64_t expw = px.weights_bytes - cloq_config_layer_params(&x) * db + 2 * raw;
	int64_t exp_peak = expw + px.solver_bytes + pa.forward_bytes + ws + stage + PLAN_BASE_BYTES;
	p->window_slots = pa.window_slots;
	if (exp_peak > att) {
		p->weights_bytes = expw, p->solver_bytes = px.solver_bytes, p->forward_bytes = pa.forward_bytes + ws + stage;
		p->peak_bytes = exp_peak;
		if (stage > p->solver_bytes && stage > p->weights_bytes)
			snprintf(p->largest_item, sizeof p->largest_item, "the experts' rows and outputs, %lld tokens of %d",
				 (long long)tok, c->hidden);
		else
			snprintf(p->largest_item, sizeof p->largest_item, "one expert's solve (width %lld)", (long long)wide);
	} else {
		p->weights_bytes = pa.weights_bytes - cloq_config_layer_params(&a) * db;
		p->solver_bytes = pa.solver_bytes, p->forward_bytes = pa.forward_bytes + ws;
		p->peak_bytes = att;
		snprintf(p->largest_item, sizeof p->largest_item, "%s", pa.largest_item);
	}
	if (c->layers > sparse && pd.peak_bytes > p->peak_bytes) { /* a dense layer may be the peak */
		int64_t keep_out = p->output_bytes, keep_exp = p->export_bytes;
		double f[9] = {p->flops, p->flops_forward, p->flops_gram, p->flops_quantize, p->flops_solve,
			       p->read_bytes, p->cache_bytes, p->shard_bytes, p->windows};
		*p = pd;
		p->flops = f[0], p->flops_forward = f[1], p->flops_gram = f[2], p->flops_quantize = f[3];
		p->flops_solve = f[4], p->read_bytes = f[5], p->cache_bytes = f[6], p->shard_bytes = f[7], p->windows = f[8];
		p->output_bytes = keep_out, p->export_bytes = keep_exp;
	}
}

int64_t cloq_plan_stash_cols(const cloq_config *c)
{
	int dense = cloq_config_sparse_layers(c) < c->layers;
	return (int64_t)c->heads * c->head_dim + c->hidden + (dense ? c->intermediate : 0);
}

void cloq_plan_compute(const cloq_config *c, const cloq_convert_opts *o, int nsamples, int seqlen, cloq_plan *p)
{
	if (c->moe)
		plan_moe(c, o, nsamples, seqlen, p);
	else
		plan_dense(c, o, nsamples, seqlen, p);
	p->stash_bytes = o->one_pass || o->full_passes ? 0 : (int64_t)nsamples * seqlen * cloq_plan_stash_cols(c) * 4;
}

double cloq_plan_measure_gflops(void)
{
	enum { N = 512 };
	float *a = malloc(sizeof(float) * N * N * 3);
	if (!a)
		return 0;
	for (int i = 0; i < N * N * 3; i++)
		a[i] = (float)(((unsigned)i * 7919u) % 1000u) / 1000.0f;
	double best = 0.0;
	for (int probe = 0; probe < 5; probe++) {
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
		} while (el < 0.06);
		double g = 2.0 * N * N * N * reps / el / 1e9;
		best = g > best ? g : best;
	}
	free(a);
	return best;
}

/* Measured on the bench jobs (docs/PERFORMANCE.md section 9): the share of the probe's sgemm rate
 * each kind of work reaches, the I/O rate (zstd, hashing, page cache), and the fixed costs of a
 * window pass and of a layer (cache frames, stashes, shard commit and journal fsyncs). */
#define EFF_FORWARD 1.2 /* large GEMMs run faster than the 512^3 probe */
#define EFF_QUANTIZE 1.75 /* over the g(n)-weighted flops */
#define EFF_SOLVE 2.72
#define READ_BYTES_PER_S 600e6
#define CACHE_BYTES_PER_S 1e9
#define SHARD_BYTES_PER_S 100e6
#define WINDOW_S 0.003
#define LAYER_S 0.005
#define START_S 0.03

double cloq_plan_seconds(const cloq_plan *p, double gflops, double parts[5])
{
	return cloq_plan_seconds_load(p, gflops, 1.0, parts);
}

double cloq_plan_seconds_load(const cloq_plan *p, double gflops, double load, double parts[5])
{
	double r = gflops * 1e9, t[5];
	/* I/O and the fixed costs are partly serial: another process slows them by less than it
	 * slows the parallel GEMMs; the square root of the GEMM slowdown fits the bench jobs */
	load = sqrt(load > 1.0 ? load : 1.0);
	t[0] = (p->flops_forward + p->flops_gram) / (r * EFF_FORWARD);
	t[1] = p->flops_quantize / (r * EFF_QUANTIZE);
	t[2] = p->flops_solve / (r * EFF_SOLVE);
	t[3] = load * (p->read_bytes / READ_BYTES_PER_S + p->cache_bytes / CACHE_BYTES_PER_S +
		       p->shard_bytes / SHARD_BYTES_PER_S);
	t[4] = load * (START_S + p->windows * WINDOW_S + p->layers * LAYER_S);
	double s = 0.0;
	for (int i = 0; i < 5; i++) {
		s += t[i];
		if (parts)
			parts[i] = t[i];
	}
	return s;
}

double cloq_plan_peak_gflops(double now_gflops, int threads, char *when, size_t cap)
{
	char dir[4096], path[4200], line[256], tmp[4300], today[32];
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	double best = 0.0;
	char best_when[32] = "";
	if (when && cap)
		snprintf(when, cap, "now");
	if (xdg && *xdg)
		snprintf(dir, sizeof dir, "%s/cloq", xdg);
	else if (home && *home)
		snprintf(dir, sizeof dir, "%s/.cache/cloq", home);
	else
		return now_gflops;
	snprintf(path, sizeof path, "%s/sgemm-peak", dir);
	/* every line but this thread count's is kept as it is */
	char *keep = calloc(1, 65536);
	size_t kept = 0;
	FILE *f = fopen(path, "r");
	if (f) {
		while (fgets(line, sizeof line, f)) {
			int th;
			double g;
			char d[32];
			if (sscanf(line, "%d %lf %31s", &th, &g, d) == 3 && th == threads && g > 0 && g < 1e7) {
				if (g > best) {
					best = g;
					snprintf(best_when, sizeof best_when, "%s", d);
				}
			} else if (keep && kept + strlen(line) < 65535) {
				memcpy(keep + kept, line, strlen(line));
				kept += strlen(line);
			}
		}
		fclose(f);
	}
	if (best >= now_gflops) {
		if (when && cap)
			snprintf(when, cap, "%s", best_when);
		free(keep);
		return best;
	}
	/* a new record: rewrite the file atomically (a failure only loses the record) */
	time_t t = time(NULL);
	struct tm tmv;
	gmtime_r(&t, &tmv);
	strftime(today, sizeof today, "%Y-%m-%d", &tmv);
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
	if (cloq_mkdir_p(dir, NULL) == CLOQ_OK && (f = fopen(tmp, "w"))) {
		int ok = (!keep || fwrite(keep, 1, kept, f) == kept) && fprintf(f, "%d %.1f %s\n", threads, now_gflops, today) > 0;
		ok &= fclose(f) == 0;
		if (!ok || rename(tmp, path) != 0)
			unlink(tmp);
	}
	free(keep);
	return now_gflops;
}
