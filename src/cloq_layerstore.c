/* cloq_layerstore.c - one group's quantize + LoRA init, shards of processed layers (see .h). */
#include "cloq_layerstore.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "cloq_dtype.h"
#include "cloq_shard.h"
#include "cloq_sys.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cloq_layer_result_free(cloq_layer_result *r)
{
	cloq_qtensor_free(&r->q);
	cloq_free(r->Wq);
	cloq_free(r->A);
	cloq_free(r->B);
	cloq_free(r->Wlora);
	memset(r, 0, sizeof *r);
}

float *cloq_layer_result_propagated(cloq_layer_result *r, int propagate, float *W)
{
	if (propagate == 2 /* CLOQ_PROP_FP */)
		return W;
	if (propagate == 1 /* CLOQ_PROP_LORA */ && r->Wlora)
		return r->Wlora;
	return r->Wq;
}

/* ---- the quantizer as the solver sees it --------------------------------------------------- */
typedef struct qctx {
	const cloq_layerstore_params *p;
	cloq_quant_params qp;
	const double *H;
	const cloq_quant_hinv *hinv; /* GPTQ's factor of H^-1, shared by the group's linears */
	int out, in;
	cloq_qtensor cur, best;
	int have_best;
	double seconds;
} qctx;

static int qctx_quantize(void *ctx, const float *W, float *Wq, cloq_err *err)
{
	qctx *c = ctx;
	double t = now();
	cloq_qtensor_free(&c->cur);
	int rc = c->p->quantizer == 1 /* RTN */ ? cloq_quant_rtn(W, c->out, c->in, &c->qp, &c->cur, err)
		 : c->hinv			? cloq_quant_gptq_hinv(W, c->out, c->hinv, &c->qp, &c->cur, NULL, err)
						: cloq_quant_gptq(W, c->H, c->out, c->in, &c->qp, &c->cur, err);
	if (rc == CLOQ_OK)
		cloq_quant_dequant(&c->cur, Wq);
	c->seconds += now() - t;
	return rc;
}

static void qctx_keep(void *ctx)
{
	qctx *c = ctx;
	cloq_qtensor t = c->best;
	c->best = c->cur;
	c->cur = t;
	memset(&c->cur, 0, sizeof c->cur);
	cloq_qtensor_free(&t);
	c->have_best = 1;
}

/* A "quantizer" that always returns the same deq(Q): LoftQ(T=1) on a given Q for the report. */
typedef struct fixedq {
	const float *Wq;
	size_t n;
} fixedq;

static int fixed_quantize(void *ctx, const float *W, float *Wq, cloq_err *err)
{
	const fixedq *f = ctx;
	memcpy(Wq, f->Wq, f->n * sizeof(float));
	return CLOQ_OK;
}

static double rel_err(const double *H, double den, const float *W, const float *Wq, const float *A, const float *B,
		      double s, int out, int in, int rank, cloq_err *err, int *rc)
{
	double rel = NAN;
	int r = cloq_solver_rel_error_den(H, W, Wq, A, B, s, out, in, rank, den, &rel, err);
	if (r && !*rc)
		*rc = r;
	return rel;
}

static cloq_quant_params quant_params(const cloq_layerstore_params *p)
{
	cloq_quant_params qp = cloq_quant_default_params();
	qp.bits = p->bits;
	qp.group_size = p->group_size;
	qp.sym = p->sym;
	qp.act_order = p->act_order;
	qp.static_groups = p->act_order;
	return qp;
}

static int solve_linear(const cloq_layerstore_params *p, const double *H, const cloq_quant_hinv *hinv,
			const cloq_factor *f, const float *W, int out, int in, cloq_layer_result *res, double *quant_s,
			double *solve_s, cloq_err *err)
{
	int rc = CLOQ_OK;
	double t0 = now();
	qctx qc;
	memset(&qc, 0, sizeof qc);
	float *A2 = NULL, *B2 = NULL;
	res->out = out;
	res->in = in;
	res->rank = p->rank;
	res->rel_loftq1 = res->rel_cloq = NAN;
	qc.p = p;
	qc.qp = quant_params(p);
	qc.H = H;
	qc.hinv = hinv;
	qc.out = out;
	qc.in = in;
	cloq_quantizer_cb cb = {&qc, qctx_quantize, qctx_keep};
	cloq_lora_params lp = cloq_lora_default_params();
	lp.rank = p->rank;
	lp.scaling = p->scaling;
	lp.seed = p->seed;

	size_t wn = (size_t)out * in;
	res->Wq = cloq_malloc(wn * sizeof(float));
	res->A = cloq_calloc((size_t)p->rank * in, sizeof(float));
	res->B = cloq_calloc((size_t)out * p->rank, sizeof(float));
	CLOQ_FAIL_IF(!res->Wq || !res->A || !res->B, err, CLOQ_EIO, "out of memory for a %d x %d linear", out, in);

	switch (p->init) {
	case 0: /* CLoQ (alternating when cloq_iters > 1) */
		/* H only ranks iterates: with one iterate there is nothing to rank, and each
		 * tr(E H E^T) costs 2 out in^2 float64 flops */
		CLOQ_TRY(cloq_solver_cloq_alt(W, f, p->cloq_iters > 1 ? H : NULL, out, in, &cb, &lp, p->cloq_iters,
					      res->Wq, res->A, res->B, NULL, err));
		break;
	case 1: /* LoftQ */
		CLOQ_TRY(cloq_solver_loftq(W, out, in, &cb, &lp, p->loftq_iters, res->Wq, res->A, res->B, err));
		break;
	default: /* zero: B = 0, A as PEFT initialises it */
		CLOQ_TRY(qctx_quantize(&qc, W, res->Wq, err));
		qctx_keep(&qc);
		CLOQ_TRY(cloq_solver_zero_init(out, in, &lp, res->A, res->B, err));
		break;
	}
	if (!qc.have_best)
		qctx_keep(&qc);
	res->q = qc.best;
	memset(&qc.best, 0, sizeof qc.best);
	/* the stored deq(Q) must be exactly what the codes say */
	cloq_quant_dequant(&res->q, res->Wq);

	/* one tr(W H W^T) for the four relative errors of this linear */
	double den = cloq_solver_weight_energy(H, W, out, in);
	CLOQ_FAIL_IF(!(den >= 0), err, CLOQ_EIO, "out of memory for the error report of a %d x %d linear", out, in);
	res->rel_quant = rel_err(H, den, W, res->Wq, NULL, NULL, p->scaling, out, in, 0, err, &rc);
	res->rel_final = rel_err(H, den, W, res->Wq, res->A, res->B, p->scaling, out, in, p->rank, err, &rc);
	if (p->init == 0)
		res->rel_cloq = res->rel_final;
	if (p->baselines) {
		A2 = cloq_calloc((size_t)p->rank * in, sizeof(float));
		B2 = cloq_calloc((size_t)out * p->rank, sizeof(float));
		float *tmp = cloq_malloc(wn * sizeof(float));
		CLOQ_FAIL_IF(!A2 || !B2 || !tmp, err, CLOQ_EIO, "out of memory");
		fixedq fx = {res->Wq, wn};
		cloq_quantizer_cb fcb = {&fx, fixed_quantize, NULL};
		rc = cloq_solver_loftq(W, out, in, &fcb, &lp, 1, tmp, A2, B2, err);
		cloq_free(tmp);
		CLOQ_TRY(rc);
		res->rel_loftq1 = rel_err(H, den, W, res->Wq, A2, B2, p->scaling, out, in, p->rank, err, &rc);
		if (p->init != 0) {
			float *dW = cloq_malloc(wn * sizeof(float));
			CLOQ_FAIL_IF(!dW, err, CLOQ_EIO, "out of memory");
			for (size_t i = 0; i < wn; i++)
				dW[i] = W[i] - res->Wq[i];
			rc = cloq_solver_cloq(f, dW, out, in, &lp, A2, B2, NULL, err);
			cloq_free(dW);
			CLOQ_TRY(rc);
			res->rel_cloq = rel_err(H, den, W, res->Wq, A2, B2, p->scaling, out, in, p->rank, err, &rc);
		}
	}
	CLOQ_TRY(rc);
	if (p->propagate == 1 /* lora */) {
		res->Wlora = cloq_malloc(wn * sizeof(float));
		CLOQ_FAIL_IF(!res->Wlora, err, CLOQ_EIO, "out of memory");
		memcpy(res->Wlora, res->Wq, wn * sizeof(float));
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, in, p->rank, (float)p->scaling, res->B, p->rank,
			    res->A, in, 1.0f, res->Wlora, in);
	}
	res->lambda_rel = cloq_factor_lambda_rel(f);
	*quant_s += qc.seconds;
	*solve_s += now() - t0 - qc.seconds;
	res->seconds = now() - t0;
fail:
	cloq_qtensor_free(&qc.cur);
	cloq_qtensor_free(&qc.best);
	cloq_free(A2);
	cloq_free(B2);
	return rc;
}

int cloq_layer_solve_group(const cloq_config *cfg, const cloq_layerstore_params *p, int l, int g,
			   const cloq_gram *gram, const cloq_layer_w *w, cloq_layer_result res[CLOQ_LINEARS],
			   double *quant_s, double *solve_s, cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_factor *f = NULL;
	cloq_quant_hinv *hinv = NULL;
	rc = cloq_solver_factor(gram->H, gram->n, CLOQ_LAMBDA_REL_DEFAULT, &f, err);
	if (rc == CLOQ_OK && p->quantizer == 0 /* GPTQ */) {
		double t = now();
		cloq_quant_params qp = quant_params(p);
		rc = cloq_quant_hinv_create(gram->H, gram->n, &qp, &hinv, err);
		*quant_s += now() - t;
	}
	if (rc) {
		cloq_factor_free(f);
		return cloq_err_wrap(err, rc, "layer %d, inputs of %s", l, cloq_group_names[g]);
	}
	for (int lin = 0; lin < CLOQ_LINEARS; lin++) {
		if (cloq_linear_group(lin) != g)
			continue;
		int out, in;
		cloq_linear_shape(cfg, lin, &out, &in);
		rc = solve_linear(p, gram->H, hinv, f, w->w[lin], out, in, &res[lin], quant_s, solve_s, err);
		if (rc) {
			cloq_err_wrap(err, rc, "model.layers.%d.%s.%s", l, cloq_linear_parent[lin], cloq_linear_names[lin]);
			break;
		}
	}
	cloq_factor_free(f);
	cloq_quant_hinv_free(hinv);
	return rc;
}

/* ---- shards -------------------------------------------------------------------------------- */
static int add2(cloq_shard_writer *w, const char *name, int dtype, uint64_t d0, uint64_t d1, const void *data,
		size_t esize, cloq_err *err)
{
	uint64_t shape[2] = {d0, d1};
	return cloq_shard_add(w, name, dtype, d1 ? 2 : 1, shape, data, (size_t)(d0 * (d1 ? d1 : 1)) * esize, err);
}

int cloq_layer_write_shard(const char *path, const cloq_config *cfg, int l, const cloq_layer_w *w,
			   const cloq_layer_result res[CLOQ_LINEARS], cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_shard_writer *sw = NULL;
	char name[256];
	CLOQ_TRY(cloq_shard_writer_create(path, (uint32_t)l, &sw, err));
	snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
	CLOQ_TRY(add2(sw, name, CLOQ_SHARD_F32, cfg->hidden, 0, w->attn_norm, 4, err));
	snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
	CLOQ_TRY(add2(sw, name, CLOQ_SHARD_F32, cfg->hidden, 0, w->ffn_norm, 4, err));
	for (int lin = 0; lin < CLOQ_LINEARS; lin++) {
		const cloq_layer_result *r = &res[lin];
		char pre[160];
		snprintf(pre, sizeof pre, "model.layers.%d.%s.%s", l, cloq_linear_parent[lin], cloq_linear_names[lin]);
#define NAME(suffix) (snprintf(name, sizeof name, "%s.%s", pre, suffix), name)
		CLOQ_TRY(add2(sw, NAME("qcodes"), CLOQ_SHARD_U8, r->out, r->in, r->q.q, 1, err));
		CLOQ_TRY(add2(sw, NAME("scales"), CLOQ_SHARD_F32, r->out, r->q.ngroups, r->q.scale, 4, err));
		CLOQ_TRY(add2(sw, NAME("qzeros"), CLOQ_SHARD_I32, r->out, r->q.ngroups, r->q.zero, 4, err));
		CLOQ_TRY(add2(sw, NAME("g_idx"), CLOQ_SHARD_I32, r->in, 0, r->q.g_idx, 4, err));
		CLOQ_TRY(add2(sw, NAME("lora_A"), CLOQ_SHARD_F32, r->rank, r->in, r->A, 4, err));
		CLOQ_TRY(add2(sw, NAME("lora_B"), CLOQ_SHARD_F32, r->out, r->rank, r->B, 4, err));
		if (w->b[lin])
			CLOQ_TRY(add2(sw, NAME("bias"), CLOQ_SHARD_F32, r->out, 0, w->b[lin], 4, err));
#undef NAME
	}
	CLOQ_TRY(cloq_shard_commit(sw, err));
fail:
	cloq_shard_writer_free(sw);
	return rc;
}

static int read_f32(cloq_shard *s, const char *name, size_t n, float **dst, int required, cloq_err *err)
{
	*dst = NULL;
	size_t cnt = cloq_shard_count(s);
	size_t i;
	for (i = 0; i < cnt; i++)
		if (!strcmp(cloq_shard_name(s, i), name))
			break;
	if (i == cnt)
		return required ? cloq_err_set(err, CLOQ_EINPUT, "shard has no tensor '%s'", name) : CLOQ_OK;
	if (cloq_shard_nbytes(s, i) != n * 4)
		return cloq_err_set(err, CLOQ_EINPUT, "shard tensor '%s' has %llu bytes, expected %zu", name,
				    (unsigned long long)cloq_shard_nbytes(s, i), n * 4);
	*dst = cloq_malloc(n * 4);
	if (!*dst)
		return cloq_err_set(err, CLOQ_EIO, "out of memory");
	return cloq_shard_read(s, i, *dst, n * 4, err);
}

void cloq_stored_linear_free(cloq_stored_linear *s)
{
	cloq_qtensor_free(&s->q);
	cloq_free(s->A);
	cloq_free(s->B);
	cloq_free(s->bias);
	memset(s, 0, sizeof *s);
}

int cloq_layer_read_linear(void *shard, const cloq_config *cfg, int l, int lin, int bits, int group_size,
			   cloq_stored_linear *o, cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_shard *s = shard;
	char pre[160], name[256];
	int out, in;
	memset(o, 0, sizeof *o);
	cloq_linear_shape(cfg, lin, &out, &in);
	snprintf(pre, sizeof pre, "model.layers.%d.%s.%s", l, cloq_linear_parent[lin], cloq_linear_names[lin]);
	CLOQ_TRY(cloq_qtensor_alloc(&o->q, out, in, bits, group_size, err));
	snprintf(name, sizeof name, "%s.lora_A", pre);
	size_t cnt = cloq_shard_count(s), i;
	for (i = 0; i < cnt; i++)
		if (!strcmp(cloq_shard_name(s, i), name))
			break;
	CLOQ_FAIL_IF(i == cnt || cloq_shard_ndim(s, i) != 2, err, CLOQ_EINPUT, "shard has no 2-D tensor '%s'", name);
	o->rank = (int)cloq_shard_shape(s, i)[0];
	CLOQ_TRY(read_f32(s, name, (size_t)o->rank * in, &o->A, 1, err));
	snprintf(name, sizeof name, "%s.lora_B", pre);
	CLOQ_TRY(read_f32(s, name, (size_t)out * o->rank, &o->B, 1, err));
	snprintf(name, sizeof name, "%s.bias", pre);
	CLOQ_TRY(read_f32(s, name, (size_t)out, &o->bias, 0, err));
	snprintf(name, sizeof name, "%s.qcodes", pre);
	CLOQ_TRY(cloq_shard_read_name(s, name, o->q.q, (size_t)out * in, err));
	snprintf(name, sizeof name, "%s.scales", pre);
	CLOQ_TRY(cloq_shard_read_name(s, name, o->q.scale, (size_t)out * o->q.ngroups * 4, err));
	snprintf(name, sizeof name, "%s.qzeros", pre);
	CLOQ_TRY(cloq_shard_read_name(s, name, o->q.zero, (size_t)out * o->q.ngroups * 4, err));
	snprintf(name, sizeof name, "%s.g_idx", pre);
	CLOQ_TRY(cloq_shard_read_name(s, name, o->q.g_idx, (size_t)in * 4, err));
	/* bytes from disk are hostile even with good checksums (another tool's shard) */
	for (size_t k = 0; k < (size_t)out * in; k++)
		CLOQ_FAIL_IF(o->q.q[k] >> bits, err, CLOQ_EINPUT, "%s.qcodes: code %d at %zu exceeds %d bits", pre,
			     o->q.q[k], k, bits);
	for (int k = 0; k < in; k++)
		CLOQ_FAIL_IF(o->q.g_idx[k] < 0 || o->q.g_idx[k] >= o->q.ngroups, err, CLOQ_EINPUT,
			     "%s.g_idx: group %d at column %d is outside [0, %d)", pre, o->q.g_idx[k], k, o->q.ngroups);
	return CLOQ_OK;
fail:
	cloq_stored_linear_free(o);
	return rc;
}

int cloq_layer_load_shard(const char *path, const cloq_config *cfg, int l, int bits, int group_size, int propagate,
			  double scaling, const cloq_layer_w *orig, cloq_layer_w *w, cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_shard *s = NULL;
	char name[256];
	memset(w, 0, sizeof *w);
	CLOQ_TRY(cloq_shard_open(path, &s, err));
	snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
	CLOQ_TRY(read_f32(s, name, (size_t)cfg->hidden, &w->attn_norm, 1, err));
	snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
	CLOQ_TRY(read_f32(s, name, (size_t)cfg->hidden, &w->ffn_norm, 1, err));
	for (int lin = 0; lin < CLOQ_LINEARS; lin++) {
		int out, in;
		cloq_linear_shape(cfg, lin, &out, &in);
		size_t wn = (size_t)out * in;
		w->w[lin] = cloq_malloc(wn * sizeof(float));
		CLOQ_FAIL_IF(!w->w[lin], err, CLOQ_EIO, "out of memory");
		if (propagate == 2 /* fp */) {
			memcpy(w->w[lin], orig->w[lin], wn * sizeof(float));
			if (orig->b[lin]) {
				w->b[lin] = cloq_malloc((size_t)out * sizeof(float));
				CLOQ_FAIL_IF(!w->b[lin], err, CLOQ_EIO, "out of memory");
				memcpy(w->b[lin], orig->b[lin], (size_t)out * sizeof(float));
			}
			continue;
		}
		cloq_stored_linear sl;
		CLOQ_TRY(cloq_layer_read_linear(s, cfg, l, lin, bits, group_size, &sl, err));
		cloq_quant_dequant(&sl.q, w->w[lin]);
		if (propagate == 1 /* lora */)
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, in, sl.rank, (float)scaling, sl.B, sl.rank,
				    sl.A, in, 1.0f, w->w[lin], in);
		w->b[lin] = sl.bias;
		sl.bias = NULL;
		cloq_stored_linear_free(&sl);
	}
fail:
	if (rc) {
		cloq_layer_w_free(w);
		cloq_err_wrap(err, rc, "%s", path);
	}
	cloq_shard_close(s);
	return rc;
}

/* ---- report -------------------------------------------------------------------------------- */
static void add_num(cJSON *o, const char *k, double v)
{
	if (isfinite(v))
		cJSON_AddNumberToObject(o, k, v);
}

cJSON *cloq_layer_report_json(const cloq_config *cfg, int l, const cloq_layer_result res[CLOQ_LINEARS], double secs)
{
	cJSON *r = cJSON_CreateObject();
	cJSON_AddNumberToObject(r, "layer", l);
	cJSON_AddNumberToObject(r, "seconds", secs);
	cJSON *lins = cJSON_AddArrayToObject(r, "linears");
	for (int lin = 0; lin < CLOQ_LINEARS; lin++) {
		const cloq_layer_result *x = &res[lin];
		cJSON *e = cJSON_CreateObject();
		cJSON_AddStringToObject(e, "name", cloq_linear_names[lin]);
		cJSON_AddNumberToObject(e, "out", x->out);
		cJSON_AddNumberToObject(e, "in", x->in);
		add_num(e, "quantized", x->rel_quant);
		add_num(e, "zero", x->rel_quant);
		add_num(e, "loftq1", x->rel_loftq1);
		add_num(e, "cloq", x->rel_cloq);
		add_num(e, "final", x->rel_final);
		add_num(e, "lambda_rel", x->lambda_rel);
		add_num(e, "seconds", x->seconds);
		cJSON_AddItemToArray(lins, e);
	}
	(void)cfg;
	return r;
}

int cloq_base_write_shard(const char *path, cloq_model *m, cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_shard_writer *sw = NULL;
	void *buf = NULL;
	const cloq_st_tensor *ts[3] = {m->embed, m->norm, m->cfg.tie_embeddings ? NULL : m->head};
	CLOQ_TRY(cloq_shard_writer_create(path, CLOQ_BASE_SHARD_LAYER, &sw, err));
	for (int i = 0; i < 3; i++) {
		const cloq_st_tensor *t = ts[i];
		if (!t)
			continue;
		buf = cloq_malloc(t->nbytes);
		CLOQ_FAIL_IF(!buf, err, CLOQ_EIO, "out of memory reading '%s'", t->name);
		CLOQ_TRY(cloq_st_read_raw(m->st, t, buf, err));
		int dt = t->dtype == CLOQ_DT_F16 ? CLOQ_SHARD_F16 : t->dtype == CLOQ_DT_BF16 ? CLOQ_SHARD_BF16 : CLOQ_SHARD_F32;
		uint64_t shape[2] = {(uint64_t)t->shape[0], t->ndim > 1 ? (uint64_t)t->shape[1] : 0};
		CLOQ_TRY(cloq_shard_add(sw, t->name, dt, t->ndim, shape, buf, t->nbytes, err));
		cloq_free(buf);
		buf = NULL;
	}
	CLOQ_TRY(cloq_shard_commit(sw, err));
fail:
	cloq_free(buf);
	cloq_shard_writer_free(sw);
	return rc;
}
