/*
 * cloq_convert_moe.c - the conversion job's sparse layers (a mixture of experts; cloq_job.h).
 *
 * A sparse layer (docs/DESIGN.md, "Mixtures of experts"): its attention is calibrated as a dense
 * layer's (cloq_convert.c); then one pass routes every calibration token (cloq_moe.h) and stashes
 * h, and the experts are calibrated one at a time, each streamed from the checkpoint, on the rows
 * routed to it (true-sequential inside the expert: gate/up from its rows, down from its own
 * quantized gate/up outputs). Each finished expert adds its output, times the routing weight, to
 * its tokens' sum, and its codes and factors go straight to the shard; the next cache is h + that
 * sum. A finished layer replays the same way, its experts dequantized from the shard one by one,
 * so a resumed job gets the same bytes.
 */
#include "cloq_job.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <xxhash.h>

#include "cloq_inputs.h"
#include "cloq_interrupt.h"
#include "cloq_sys.h"

void cloq_moe_stage_free(moe_stage *S)
{
	cloq_reader_free(S->rd); /* finishes a read in flight first */
	cloq_free(S->rbuf[0]);
	cloq_free(S->rbuf[1]);
	cloq_moe_routing_free(&S->rt);
	cloq_free(S->out);
	cloq_free(S->rows);
	cloq_free(S->rtok);
	cloq_free(S->rwt);
	cloq_free(S->off);
	cloq_free(S->g);
	cloq_free(S->u);
	cloq_free(S->y);
	cloq_free(S->xn);
	cloq_free(S->hash);
	cJSON_Delete(S->report);
	cloq_shard_writer_free(S->sw);
	cloq_shard_close(S->in);
	memset(S, 0, sizeof *S);
}

/* With S->inputs (calibrating): tensor `name`'s XXH3 h goes to the layer's input record and to the
 * list its digest is made of. */
static int moe_record(moe_stage *S, const char *name, uint64_t h, cloq_err *err)
{
	int rc = CLOQ_OK;
	char hex[17];
	if (!S->inputs)
		return CLOQ_OK;
	if (S->nhash == S->hcap) {
		int nc = S->hcap ? 2 * S->hcap : 64;
		uint64_t *nh = cloq_realloc(S->hash, (size_t)nc * sizeof *nh);
		CLOQ_FAIL_IF(!nh, err, CLOQ_EIO, "out of memory");
		S->hash = nh, S->hcap = nc;
	}
	S->hash[S->nhash++] = h;
	cloq_inputs_hex(h, hex);
	CLOQ_FAIL_IF(!cJSON_AddStringToObject(S->inputs, name, hex), err, CLOQ_EIO, "out of memory");
fail:
	return rc;
}

/* Tensor t as float32; with S->inputs its raw bytes' XXH3 is recorded (what the layer was made
 * from). NULL t: *dst = NULL. */
static int moe_load(moe_stage *S, const cloq_st_tensor *t, float **dst, cloq_err *err)
{
	int rc = CLOQ_OK;
	const cloq_st_model *st = S->J->m->st;
	void *raw = NULL;
	*dst = NULL;
	if (!t)
		return CLOQ_OK;
	double t0 = cloq_job_now();
	raw = cloq_malloc(t->nbytes ? t->nbytes : 1);
	*dst = cloq_malloc((size_t)t->nelem * sizeof(float));
	CLOQ_FAIL_IF(!raw || !*dst, err, CLOQ_EIO, "out of memory loading '%s'", t->name);
	CLOQ_TRY(cloq_st_read_raw(st, t, raw, err));
	CLOQ_TRY(moe_record(S, t->name, XXH3_64bits(raw, t->nbytes), err));
	CLOQ_TRY(cloq_st_convert_f32(st, t, raw, *dst, err));
	S->J->stage_s[ST_READ] += cloq_job_now() - t0;
fail:
	cloq_free(raw);
	if (rc) {
		cloq_free(*dst);
		*dst = NULL;
	}
	return rc;
}

/* A sparse layer's own tensors (norms, attention, router, shared expert gate); the experts come
 * later, one at a time. */
int cloq_moe_load_layer(moe_stage *S, int l, cloq_layer_w *w, cloq_err *err)
{
	int rc = CLOQ_OK;
	const cloq_model *m = S->J->m;
	const cloq_config *c = &m->cfg;
	char name[192];
	memset(w, 0, sizeof *w);
	float **slot[4] = {&w->attn_norm, &w->ffn_norm, &w->post_attn_norm, &w->post_ffn_norm};
	for (int role = 0; role < 4; role++)
		CLOQ_TRY(moe_load(S, cloq_model_norm(m, l, role), slot[role], err));
	if (c->qk_norm) {
		CLOQ_TRY(moe_load(S, cloq_model_qk_norm(m, l, 0), &w->q_norm, err));
		CLOQ_TRY(moe_load(S, cloq_model_qk_norm(m, l, 1), &w->k_norm, err));
	}
	for (int lin = 0; lin < CLOQ_LINEARS; lin++)
		if (cloq_layer_has_linear(c, l, lin)) {
			CLOQ_TRY(moe_load(S, cloq_model_linear(m, l, lin, 0), &w->w[lin], err));
			CLOQ_TRY(moe_load(S, cloq_model_linear(m, l, lin, 1), &w->b[lin], err));
		}
	cloq_moe_router_name(c, l, name, sizeof name);
	CLOQ_TRY(moe_load(S, cloq_st_find(m->st, name), &w->router, err));
	if (c->moe_shared_inter) {
		cloq_moe_shared_gate_name(l, name, sizeof name);
		CLOQ_TRY(moe_load(S, cloq_st_find(m->st, name), &w->shared_gate, err));
	}
	CLOQ_FAIL_IF(!w->router || (c->moe_shared_inter && !w->shared_gate), err, CLOQ_EINPUT,
		     "%s: layer %d's router is missing", m->dir, l);
	return CLOQ_OK;
fail:
	cloq_layer_w_free(w);
	return rc;
}

/* the checkpoint tensor of expert e's linear k (e = experts: the shared expert) */
static const cloq_st_tensor *moe_expert_tensor(const moe_stage *S, int e, int k, char *name, size_t cap)
{
	const cloq_config *c = S->J->cfg;
	char pre[160];
	cloq_moe_linear_prefix(c, S->l, e < c->moe ? e : -1, k, pre, sizeof pre);
	snprintf(name, cap, "%s.weight", pre);
	return cloq_st_find(S->J->m->st, name);
}

/* Plan expert e's three tensors into buf (NULL: only *needed), one request each. */
static int moe_expert_plan(moe_stage *S, int e, void *buf, cloq_reader_req reqs[3], size_t *needed, cloq_err *err)
{
	int rc = CLOQ_OK;
	const cloq_st_model *st = S->J->m->st;
	char name[192];
	size_t idx[3];
	for (int k = 0; k < 3; k++) {
		const cloq_st_tensor *t = moe_expert_tensor(S, e, k, name, sizeof name);
		CLOQ_FAIL_IF(!t, err, CLOQ_EINPUT, "%s: tensor '%s' is missing", S->J->m->dir, name);
		idx[k] = cloq_st_index_of(st, t);
	}
	CLOQ_TRY(cloq_st_plan(st, idx, 3, buf, buf ? S->rcap : 0, reqs, needed, err));
fail:
	return rc;
}

/* Start reading expert e's three tensors into a free buffer (no-op past the last expert). */
static int moe_fetch_start(moe_stage *S, int e, cloq_err *err)
{
	int rc = CLOQ_OK;
	const cloq_config *c = S->J->cfg;
	const cloq_st_model *st = S->J->m->st;
	size_t needed = 0;
	if (e >= c->moe + (c->moe_shared_inter > 0) || S->rexp[0] == e || S->rexp[1] == e)
		return CLOQ_OK;
	if (!S->rd) { /* buffered reads, one expert a batch; the buffers fit the largest expert */
		size_t nf = cloq_st_nfiles(st);
		const char **paths = cloq_malloc(nf * sizeof *paths);
		CLOQ_FAIL_IF(!paths, err, CLOQ_EIO, "out of memory");
		for (size_t i = 0; i < nf; i++)
			paths[i] = cloq_st_file_path(st, i);
		rc = cloq_reader_create(paths, nf, NULL, &S->rd, err);
		cloq_free(paths);
		CLOQ_TRY(rc);
		for (int x = 0; x < 1 + (c->moe_shared_inter > 0); x++) { /* a routed expert; the shared one */
			CLOQ_TRY(moe_expert_plan(S, x ? c->moe : 0, NULL, S->rq[0], &needed, err));
			S->rcap = needed > S->rcap ? needed : S->rcap;
		}
		for (int b = 0; b < 2; b++) {
			S->rbuf[b] = cloq_aligned_alloc(CLOQ_PLAN_ALIGN, S->rcap);
			CLOQ_FAIL_IF(!S->rbuf[b], err, CLOQ_EIO, "out of memory for an expert's read buffer (%zu MiB)",
				     S->rcap >> 20);
		}
	}
	if (S->rflight >= 0) { /* the reader runs one batch at a time */
		int b = S->rflight;
		S->rflight = -1;
		if ((rc = cloq_reader_wait(S->rd, err))) {
			S->rexp[b] = -1;
			goto fail;
		}
	}
	int b = S->rexp[0] < 0 ? 0 : S->rexp[1] < 0 ? 1 : -1;
	CLOQ_FAIL_IF(b < 0, err, CLOQ_EUSAGE, "both expert buffers are taken");
	CLOQ_TRY(moe_expert_plan(S, e, S->rbuf[b], S->rq[b], &needed, err));
	CLOQ_TRY(cloq_reader_start(S->rd, S->rq[b], 3, err));
	S->rexp[b] = e;
	S->rflight = b;
fail:
	return rc;
}

/* Expert e's three weights as float32 (W[k] allocated), from the read-ahead (recorded in the
 * layer's inputs when calibrating); then the next expert's read starts. */
static int moe_fetch_take(moe_stage *S, int e, float *W[3], cloq_err *err)
{
	int rc = CLOQ_OK;
	const cloq_st_model *st = S->J->m->st;
	double t0 = cloq_job_now();
	char name[192];
	if (S->rexp[0] != e && S->rexp[1] != e)
		CLOQ_TRY(moe_fetch_start(S, e, err));
	int b = S->rexp[0] == e ? 0 : 1;
	if (S->rflight == b) {
		S->rflight = -1;
		rc = cloq_reader_wait(S->rd, err);
		S->J->io_wait_s += cloq_job_now() - t0;
		if (rc) {
			S->rexp[b] = -1;
			goto fail;
		}
	}
	for (int k = 0; k < 3; k++) {
		const cloq_st_tensor *t = moe_expert_tensor(S, e, k, name, sizeof name);
		const cloq_reader_req *q = &S->rq[b][k];
		CLOQ_FAIL_IF(q->got != t->nbytes, err, CLOQ_EIO, "%s: read %zu of the %llu bytes of '%s'",
			     cloq_st_file_path(st, (size_t)t->file), q->got, (unsigned long long)t->nbytes, name);
		CLOQ_TRY(moe_record(S, name, q->xxh3, err));
		W[k] = cloq_malloc((size_t)t->nelem * sizeof(float));
		CLOQ_FAIL_IF(!W[k], err, CLOQ_EIO, "out of memory loading '%s'", name);
		CLOQ_TRY(cloq_st_convert_f32(st, t, q->dst, W[k], err));
	}
	S->rexp[b] = -1;
	S->J->stage_s[ST_READ] += cloq_job_now() - t0;
	CLOQ_TRY(moe_fetch_start(S, e + 1, err)); /* the next expert arrives while this one computes */
fail:
	return rc;
}

/* expert e's rows in the gather (the shared expert, e = experts: every token), and its routed ones */
static int64_t moe_rows(const moe_stage *S, int e) { return e < S->rt.E ? cloq_moe_rows(&S->rt, e) : S->ntok; }
static int64_t moe_routed(const moe_stage *S, int e) { return e < S->rt.E ? S->rt.count[e] : S->ntok; }

/* h of window i (the routing pass's stash) into dst */
static int moe_read_h(moe_stage *S, cloq_cache_reader *r, int i, float *dst, const char *path, cloq_err *err)
{
	job *J = S->J;
	size_t n = (size_t)J->win.seqlen * J->cfg->hidden;
	if (r)
		return cloq_job_read_checked(J, r, i, dst, path, err);
	memcpy(dst, J->stash_mem[CLOQ_STATE_H - CLOQ_STATE_ATT] + (size_t)i * n, n * sizeof(float));
	return CLOQ_OK;
}

static int moe_open_h(moe_stage *S, cloq_cache_reader **r, char *path, size_t cap, cloq_err *err)
{
	*r = NULL;
	cloq_job_stash_path(S->J, CLOQ_STATE_H, path, cap);
	return S->J->stash_ram ? CLOQ_OK : cloq_job_open_checked(S->J, path, (size_t)S->J->cfg->hidden, r, err);
}

/* The rows of experts [e0, e1) into S->rows from xn = post_attention_layernorm(h): each expert's
 * routed tokens (with their weights), then its fill tokens, both ascending (cloq_moe.h). e0 ==
 * experts is the shared expert: every token. */
static int moe_gather(moe_stage *S, int e0, int e1, cloq_err *err)
{
	int rc = CLOQ_OK;
	job *J = S->J;
	const cloq_config *c = J->cfg;
	const cloq_moe_routing *rt = &S->rt;
	int D = c->hidden, T = J->win.seqlen, K = rt->K, E = rt->E, n = e1 - e0;
	char path[4096];
	cloq_cache_reader *r = NULL;
	int64_t *pr = cloq_malloc((size_t)n * sizeof *pr), *pf = cloq_malloc((size_t)n * sizeof *pf);
	int *fc = cloq_calloc((size_t)n, sizeof *fc);
	CLOQ_FAIL_IF(!pr || !pf || !fc, err, CLOQ_EIO, "out of memory");
	for (int e = e0; e < e1; e++) {
		pr[e - e0] = S->off[e];
		pf[e - e0] = S->off[e] + moe_routed(S, e);
	}
	CLOQ_TRY(moe_open_h(S, &r, path, sizeof path, err));
	for (int i = 0; i < J->win.n; i++) {
		CLOQ_TRY(moe_read_h(S, r, i, J->xbuf, path, err));
		cloq_rmsnorm_cfg(c, J->xbuf, S->w->ffn_norm, S->xn, T, D);
		for (int t = 0; t < T; t++) {
			int64_t tok = (int64_t)i * T + t;
			const float *x = S->xn + (size_t)t * D;
			if (e0 == E) { /* the shared expert */
				memcpy(S->rows + (size_t)pr[0] * D, x, (size_t)D * sizeof(float));
				S->rtok[pr[0]++] = tok;
				continue;
			}
			for (int j = 0; j < K; j++) {
				int e = rt->sel[tok * K + j];
				if (e < e0 || e >= e1)
					continue;
				int64_t at = pr[e - e0]++;
				memcpy(S->rows + (size_t)at * D, x, (size_t)D * sizeof(float));
				S->rtok[at] = tok;
				S->rwt[at] = rt->wt[tok * K + j];
			}
			for (int e = e0; e < e1; e++) {
				int k = fc[e - e0];
				if (k < rt->nfill[e] && rt->cand_t[(size_t)e * CLOQ_MOE_MIN_ROWS + k] == tok) {
					memcpy(S->rows + (size_t)pf[e - e0]++ * D, x, (size_t)D * sizeof(float));
					fc[e - e0]++;
				}
			}
		}
	}
fail:
	cloq_cache_close(r);
	cloq_free(pr);
	cloq_free(pf);
	cloq_free(fc);
	return rc;
}

/* Each routed row's token gets weight * expert(row) added (the shared expert: sigmoid of its gate's
 * logit), over rows [r0, r0 + n) of the gather, in blocks of MOE_RB rows. */
static void moe_expert_out(moe_stage *S, int width, float *const W[3], const float *shared_gate, int64_t r0, int64_t n)
{
	const cloq_config *c = S->J->cfg;
	int D = c->hidden;
	double t0 = cloq_job_now();
	for (int64_t b = 0; b < n; b += MOE_RB) {
		int nb = n - b < MOE_RB ? (int)(n - b) : MOE_RB;
		const float *X = S->rows + (size_t)(r0 + b) * D;
		cloq_linear_fwd(X, W[0], NULL, S->g, nb, D, width);
		cloq_linear_fwd(X, W[1], NULL, S->u, nb, D, width);
		cloq_act_mul(c, S->g, S->u, (size_t)nb * width);
		cloq_linear_fwd(S->g, W[2], NULL, S->y, nb, width, D);
		if (shared_gate)
			cloq_linear_fwd(X, shared_gate, NULL, S->rwt + r0 + b, nb, D, 1);
		for (int i = 0; i < nb; i++) {
			int64_t row = r0 + b + i;
			float wgt = shared_gate ? 1.0f / (1.0f + expf(-S->rwt[row])) : S->rwt[row];
			float *dst = S->out + (size_t)S->rtok[row] * D;
			const float *src = S->y + (size_t)i * D;
			for (int d = 0; d < D; d++)
				dst[d] += wgt * src[d];
		}
	}
	S->J->stage_s[ST_PROP] += cloq_job_now() - t0;
}

_Static_assert(MOE_RB == CLOQ_GRAM_CHUNK, "an expert's row blocks are the Gram's blocks");

/* Gram matrix of n rows of X (width cols), in blocks of MOE_RB rows (the last one without the
 * Gram's row buffer) */
static int moe_gram(cloq_gram *G, const float *X, int64_t n, int cols, cloq_err *err)
{
	int rc = CLOQ_OK;
	CLOQ_TRY(cloq_gram_init(G, cols, err));
	int64_t b = 0;
	for (; n - b > MOE_RB; b += MOE_RB)
		CLOQ_TRY(cloq_gram_add(G, X + (size_t)b * cols, MOE_RB, err));
	CLOQ_TRY(cloq_gram_add_last(G, X + (size_t)b * cols, (int)(n - b), err));
fail:
	return rc;
}

/* Expert e (e = experts: the shared one) of the gather's rows [r0, r0 + rows): calibrated and
 * solved as a dense MLP of its width (calibration), or its stored weights (replay); then its
 * output added to its routed tokens. */
static int moe_expert(moe_stage *S, int e, cloq_err *err)
{
	int rc = CLOQ_OK;
	job *J = S->J;
	const cloq_config *c = J->cfg;
	int l = S->l, E = S->rt.E, ee = e < E ? e : -1, D = c->hidden;
	int width = e < E ? c->moe_inter : c->moe_shared_inter;
	int64_t r0 = S->off[e], n = moe_rows(S, e), nr = moe_routed(S, e);
	static const int lin_of[3] = {CLOQ_LIN_GATE, CLOQ_LIN_UP, CLOQ_LIN_DOWN};
	char names[3][160];
	float *W[3] = {0}, *P[3] = {0};
	cloq_layer_result er[CLOQ_LINEARS];
	cloq_gram G;
	memset(er, 0, sizeof er);
	memset(&G, 0, sizeof G);
	for (int k = 0; k < 3; k++)
		cloq_moe_linear_prefix(c, l, ee, k, names[k], sizeof names[k]);
	if (S->sw || J->sp.propagate == CLOQ_PROP_FP) { /* the originals, streamed from the checkpoint */
		CLOQ_TRY(moe_fetch_take(S, e, W, err));
	} else { /* replay: deq(Q) (+ s B A) from the shard */
		cloq_qform qf = {J->sp.bits, J->sp.group_size, J->sp.quantizer, J->sp.nf_block, J->sp.nf_double, J->sp.nf_dtype};
		double t0 = cloq_job_now();
		for (int k = 0; k < 3; k++)
			CLOQ_TRY(cloq_layer_load_expert(S->in, c, l, ee, k, &qf, J->sp.propagate, J->sp.scaling, &W[k], err));
		J->stage_s[ST_READ] += cloq_job_now() - t0;
	}
	for (int k = 0; k < 3; k++)
		P[k] = W[k];
	if (S->sw) {
		cloq_config V = *c; /* the expert as a dense MLP of its width */
		V.intermediate = width, V.fused = 0, V.mlp_bias = 0, V.moe = 0;
		cloq_layer_w ew;
		memset(&ew, 0, sizeof ew);
		const char *nm[CLOQ_LINEARS] = {0};
		for (int k = 0; k < 3; k++) {
			ew.w[lin_of[k]] = W[k];
			nm[lin_of[k]] = names[k];
		}
		cloq_layerstore_params p = J->sp;
		p.names = nm;
		const float *X = S->rows + (size_t)r0 * D;
		double t0 = cloq_job_now();
		CLOQ_TRY(moe_gram(&G, X, n, D, err));
		J->stage_s[ST_STATS] += cloq_job_now() - t0;
		CLOQ_TRY(cloq_layer_solve_group(&V, &p, l, CLOQ_GROUP_GATEUP, &G, &ew, er, &J->stage_s[ST_QUANT],
						&J->stage_s[ST_SOLVE], err));
		cloq_gram_free(&G);
		for (int k = 0; k < 2; k++)
			P[k] = cloq_layer_result_propagated(&er[lin_of[k]], J->sp.propagate, W[k]);
		/* down_proj's input: the expert's own (quantized) gate and up on the same rows */
		t0 = cloq_job_now();
		CLOQ_TRY(cloq_gram_init(&G, width, err));
		for (int64_t b = 0; b < n; b += MOE_RB) {
			int nb = n - b < MOE_RB ? (int)(n - b) : MOE_RB;
			cloq_linear_fwd(X + (size_t)b * D, P[0], NULL, S->g, nb, D, width);
			cloq_linear_fwd(X + (size_t)b * D, P[1], NULL, S->u, nb, D, width);
			cloq_act_mul(c, S->g, S->u, (size_t)nb * width);
			CLOQ_TRY(b + nb < n ? cloq_gram_add(&G, S->g, nb, err) : cloq_gram_add_last(&G, S->g, nb, err));
		}
		if (n == 0)
			cloq_gram_finish(&G);
		J->stage_s[ST_STATS] += cloq_job_now() - t0;
		CLOQ_TRY(cloq_layer_solve_group(&V, &p, l, CLOQ_GROUP_DOWN, &G, &ew, er, &J->stage_s[ST_QUANT],
						&J->stage_s[ST_SOLVE], err));
		P[2] = cloq_layer_result_propagated(&er[CLOQ_LIN_DOWN], J->sp.propagate, W[2]);
	}
	moe_expert_out(S, width, P, e < E ? NULL : S->w->shared_gate, r0, nr);
	if (S->sw) {
		double t0 = cloq_job_now();
		cloq_layer_result three[3];
		for (int k = 0; k < 3; k++) {
			CLOQ_TRY(cloq_layer_shard_add_linear(S->sw, names[k], &er[lin_of[k]], NULL, err));
			three[k] = er[lin_of[k]];
			S->sum_quant += er[lin_of[k]].rel_quant;
			S->sum_final += er[lin_of[k]].rel_final;
			S->nlin++;
		}
		J->stage_s[ST_WRITE] += cloq_job_now() - t0;
		cJSON_AddItemToArray(S->report, cloq_expert_report_json(c, ee, nr, (int)(n - nr), three));
	}
fail:
	cloq_gram_free(&G);
	for (int k = 0; k < 3; k++) {
		cloq_layer_result_free(&er[lin_of[k]]);
		cloq_free(W[k]);
	}
	if (rc && rc != CLOQ_EINTERRUPTED && e < E)
		cloq_err_wrap(err, rc, "layer %d, expert %d (%lld tokens routed to it)", l, e, (long long)nr);
	return rc;
}

/*
 * The experts of sparse layer l after its attention: the routing pass (from state `start`, with
 * weights w: the attention as it propagates, the norms, the router), every expert chunk by chunk
 * (a chunk: consecutive experts whose rows fit the gather, which holds as many rows as there are
 * tokens), the shared expert, then cache[l+1] = h + the experts' sum.
 */
int cloq_moe_run(moe_stage *S, const cloq_layer_w *w, int start, cloq_err *err)
{
	int rc = CLOQ_OK;
	job *J = S->J;
	const cloq_config *c = J->cfg;
	int l = S->l, E = c->moe, K = c->moe_topk, D = c->hidden, T = J->win.seqlen;
	char path[4096], npath[4096];
	cloq_cache_reader *r = NULL;
	cloq_cache_writer *next = NULL;
	gram_hook gh;
	memset(&gh, 0, sizeof gh);
	S->w = w;
	S->rexp[0] = S->rexp[1] = S->rflight = -1;
	S->ntok = (int64_t)J->win.n * T;
	S->cap = S->ntok > CLOQ_MOE_MIN_ROWS ? S->ntok : CLOQ_MOE_MIN_ROWS;
	CLOQ_TRY(cloq_moe_routing_init(&S->rt, E, K, S->ntok, err));
	gh.J = J;
	gh.route = &S->rt;
	gh.router = w->router;
	gh.probs = cloq_malloc((size_t)T * E * sizeof(float));
	gh.wt = cloq_malloc((size_t)T * K * sizeof(float));
	gh.sel = cloq_malloc((size_t)T * K * sizeof(int));
	CLOQ_FAIL_IF(!gh.probs || !gh.wt || !gh.sel, err, CLOQ_EIO, "out of memory routing %d tokens", T);
	double t0 = cloq_job_now();
	CLOQ_TRY(cloq_job_pass(J, l, w, &gh, start, CLOQ_GROUP_GATEUP, 1, NULL, "routing", err));
	CLOQ_TRY(cloq_moe_routing_finish(&S->rt, err));
	J->stage_s[ST_STATS] += cloq_job_now() - t0;

	int wide = c->moe_inter > c->moe_shared_inter ? c->moe_inter : c->moe_shared_inter;
	S->out = cloq_calloc((size_t)S->ntok * D, sizeof(float));
	S->rows = cloq_malloc((size_t)S->cap * D * sizeof(float));
	S->rtok = cloq_malloc((size_t)S->cap * sizeof *S->rtok);
	S->rwt = cloq_malloc((size_t)S->cap * sizeof *S->rwt);
	S->off = cloq_malloc((size_t)(E + 2) * sizeof *S->off);
	S->g = cloq_malloc((size_t)MOE_RB * wide * sizeof(float));
	S->u = cloq_malloc((size_t)MOE_RB * wide * sizeof(float));
	S->y = cloq_malloc((size_t)MOE_RB * D * sizeof(float));
	S->xn = cloq_malloc((size_t)T * D * sizeof(float));
	CLOQ_FAIL_IF(!S->out || !S->rows || !S->rtok || !S->rwt || !S->off || !S->g || !S->u || !S->y || !S->xn, err,
		     CLOQ_EIO, "out of memory for the experts of layer %d (%lld tokens of %d floats, twice)", l,
		     (long long)S->ntok, D);
	double t_exp = cloq_job_now(), routed = 0; /* the progress line's rate: routed tokens a second */
	for (int e0 = 0, e1; e0 < E + (c->moe_shared_inter > 0); e0 = e1) {
		int64_t tot = moe_rows(S, e0);
		e1 = e0 + 1;
		if (e0 < E)
			while (e1 < E && tot + moe_rows(S, e1) <= S->cap)
				tot += moe_rows(S, e1++);
		S->off[e0] = 0;
		for (int e = e0; e < e1; e++)
			S->off[e + 1] = S->off[e] + moe_rows(S, e);
		t0 = cloq_job_now();
		CLOQ_TRY(moe_gather(S, e0, e1, err));
		J->stage_s[ST_READ] += cloq_job_now() - t0;
		for (int e = e0; e < e1; e++) {
			CLOQ_TRY(cloq_interrupt_check("between experts", err));
			CLOQ_TRY(moe_expert(S, e, err));
			cloq_mem_trim(); /* each expert's medium buffers would otherwise creep (cloq_sys.h) */
			routed += (double)moe_routed(S, e);
			cloq_job_progress(J, l, "experts", (e + 1.0) / (E + (c->moe_shared_inter > 0)), routed / (cloq_job_now() - t_exp + 1e-9));
		}
	}
	/* cache[l+1] = h + the experts' sum, window by window */
	t0 = cloq_job_now();
	cloq_job_cache_path(J, l + 1, npath, sizeof npath);
	CLOQ_TRY(cloq_cache_create(npath, (size_t)D, J->o.cache_bf16 ? CLOQ_CACHE_BF16 : CLOQ_CACHE_F32, 1, &next, err));
	CLOQ_TRY(moe_open_h(S, &r, path, sizeof path, err));
	for (int i = 0; i < J->win.n; i++) {
		CLOQ_TRY(moe_read_h(S, r, i, J->xbuf, path, err));
		const float *mo = S->out + (size_t)i * T * D;
		for (size_t k = 0; k < (size_t)T * D; k++)
			J->xbuf[k] = J->xbuf[k] + mo[k];
		CLOQ_TRY(cloq_cache_append(next, J->xbuf, T, err));
	}
	CLOQ_TRY(cloq_cache_commit(next, err));
	J->stage_s[ST_PROP] += cloq_job_now() - t0;
fail:
	cloq_cache_close(r);
	cloq_cache_writer_free(next);
	cloq_free(gh.probs);
	cloq_free(gh.wt);
	cloq_free(gh.sel);
	return rc;
}

