/* cloq_layerstore.c - one group's quantize + LoRA init, shards of processed layers (see .h). */
#include "cloq_layerstore.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cblas.h>
#include <xxhash.h>

#include "cloq_dtype.h"
#include "cloq_inputs.h"
#include "cloq_interrupt.h"
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

static int make_wlora(cloq_layer_result *r, double scaling, cloq_err *err)
{
	size_t wn = (size_t)r->out * r->in;
	r->Wlora = cloq_malloc(wn * sizeof(float));
	if (!r->Wlora)
		return cloq_err_set(err, CLOQ_EIO, "out of memory for a %d x %d linear", r->out, r->in);
	memcpy(r->Wlora, r->Wq, wn * sizeof(float));
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r->out, r->in, r->rank, (float)scaling, r->B, r->rank,
		    r->A, r->in, 1.0f, r->Wlora, r->in);
	return CLOQ_OK;
}

void cloq_layer_result_shed(cloq_layer_result *r)
{
	cloq_free(r->Wq);
	cloq_free(r->Wlora);
	r->Wq = r->Wlora = NULL;
}

int cloq_layer_result_restore(cloq_layer_result *r, int propagate, double scaling, cloq_err *err)
{
	if (!r->Wq) {
		r->Wq = cloq_malloc((size_t)r->out * r->in * sizeof(float));
		if (!r->Wq)
			return cloq_err_set(err, CLOQ_EIO, "out of memory for a %d x %d linear", r->out, r->in);
		cloq_quant_dequant(&r->q, r->Wq);
	}
	if (propagate == 1 /* CLOQ_PROP_LORA */ && !r->Wlora)
		return make_wlora(r, scaling, err);
	return CLOQ_OK;
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
	const cloq_quant_hinv *hinv; /* GPTQ's factor of H^-1, shared by the group's linears */
	const float *magr_hn;        /* --magr: H / lambda_max in float32 (NULL: H is zero, MagR a no-op) */
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
	int rc;
	float *Wm = NULL;
	if (c->p->magr) { /* MagR on what is about to be quantized (W, or LoftQ's / alternating CLoQ's
			   * W - sBA); the LoRA still fits the original W */
		int grouped = c->p->group_size > 0 && c->p->group_size < c->in;
		cloq_magr_params mp = {grouped ? 1e-4 : 1e-3, grouped ? 150 : 200, c->p->group_size};
		Wm = cloq_malloc((size_t)c->out * c->in * sizeof(float));
		rc = Wm ? cloq_quant_magr_with(W, c->magr_hn, c->out, c->in, &mp, Wm, NULL, err)
			: cloq_err_set(err, CLOQ_EIO, "out of memory for MagR of a %d x %d linear", c->out, c->in);
		if (rc) {
			cloq_free(Wm);
			c->seconds += now() - t;
			return rc;
		}
		W = Wm;
	}
	if (c->p->quantizer == 2 || c->p->quantizer == 3) { /* LoftQ's NF, bitsandbytes' NF4 */
		cloq_nf_params np = {c->p->bits, c->p->nf_block, c->p->quantizer == 3, c->p->nf_double, c->p->nf_dtype};
		rc = cloq_quant_nf_codes(W, c->out, c->in, &np, &c->cur, err);
	} else {
		rc = c->p->quantizer == 1 /* RTN */ ? cloq_quant_rtn(W, c->out, c->in, &c->qp, &c->cur, err)
		     : c->hinv ? cloq_quant_gptq_hinv(W, c->out, c->hinv, &c->qp, &c->cur, NULL, err)
			       : cloq_err_set(err, CLOQ_EINPUT, "GPTQ without its factor of H^-1");
	}
	if (rc == CLOQ_OK)
		cloq_quant_dequant(&c->cur, Wq);
	cloq_free(Wm);
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

static cloq_quant_params quant_params(const cloq_layerstore_params *p)
{
	cloq_quant_params qp = cloq_quant_default_params();
	qp.bits = p->bits;
	qp.group_size = p->group_size;
	qp.sym = p->sym;
	qp.act_order = p->act_order;
	qp.static_groups = p->act_order;
	qp.v1_zeros = p->v1_zeros;
	return qp;
}

static double cloq_frob2_f(const float *x, size_t n)
{
	double s = 0.0;
	for (size_t i = 0; i < n; i++)
		s += (double)x[i] * x[i];
	return s;
}

/* sqrt(num / den) with the conventions of cloq_solver_rel_error: 0/0 = 0, x/0 = inf */
static double rel_of(double num, double den)
{
	if (!(num > 0.0))
		return num == 0.0 ? 0.0 : NAN;
	return den > 0.0 ? sqrt(num / den) : INFINITY;
}

/* E = dW - s B A in float32 */
static void residual(const float *dW, const float *A, const float *B, double s, int out, int in, int r, float *E)
{
	memcpy(E, dW, (size_t)out * in * sizeof(float));
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, in, r, (float)-s, B, r, A, in, 1.0f, E, in);
}

/* A factor-based tr(E H E^T); NAN means out of memory */
static int fobj(const cloq_factor *f, const float *E, int out, int in, double *v, cloq_err *err)
{
	*v = cloq_solver_factor_objective(f, E, out, in);
	if (isnan(*v))
		return cloq_err_set(err, CLOQ_EIO, "out of memory for the error report of a %d x %d linear", out, in);
	return CLOQ_OK;
}

static void qctx_init(qctx *qc, const cloq_layerstore_params *p, const cloq_quant_hinv *hinv, const float *magr_hn,
		      int out, int in)
{
	memset(qc, 0, sizeof *qc);
	qc->p = p;
	qc->qp = quant_params(p);
	qc->hinv = hinv;
	qc->magr_hn = magr_hn;
	qc->out = out;
	qc->in = in;
}

/* Quantize one linear on its own (GPTQ's factor or RTN), before the CLoQ factor exists. */
static int quantize_linear(const cloq_layerstore_params *p, const cloq_quant_hinv *hinv, const float *magr_hn,
			   const float *W, int out, int in, cloq_layer_result *res, double *quant_s, cloq_err *err)
{
	int rc = CLOQ_OK;
	qctx qc;
	qctx_init(&qc, p, hinv, magr_hn, out, in);
	res->Wq = cloq_malloc((size_t)out * in * sizeof(float));
	CLOQ_FAIL_IF(!res->Wq, err, CLOQ_EIO, "out of memory for a %d x %d linear", out, in);
	CLOQ_TRY(qctx_quantize(&qc, W, res->Wq, err));
	qctx_keep(&qc);
	res->q = qc.best;
	memset(&qc.best, 0, sizeof qc.best);
fail:
	*quant_s += qc.seconds;
	cloq_qtensor_free(&qc.cur);
	cloq_qtensor_free(&qc.best);
	return rc;
}

/*
 * LoRA init and the error report of one linear. `early`: res->q and res->Wq hold its codes
 * already (quantize_linear); else the method quantizes through the callback (LoftQ,
 * alternating CLoQ), with GPTQ's shared factor `hinv`. Every calibrated error comes from the
 * factor R of H + lambda I, never from H (gone by now): tr(E H E^T) = ||R E^T||^2 - lambda ||E||^2,
 * from the CLoQ solve itself where it has it (total and residual energy of M = R dW^T) and
 * otherwise by cloq_solver_factor_objective.
 */
static int solve_linear(const cloq_layerstore_params *p, const cloq_quant_hinv *hinv, const float *magr_hn,
			const cloq_factor *f, const float *W, int out, int in, int early, cloq_layer_result *res,
			double *quant_s, double *solve_s, cloq_err *err)
{
	int rc = CLOQ_OK;
	double t0 = now(), qs0 = 0, num_q = NAN, num_f = NAN, den = NAN, v, lam = cloq_factor_lambda(f);
	qctx qc;
	qctx_init(&qc, p, hinv, magr_hn, out, in);
	float *A2 = NULL, *B2 = NULL, *dW = NULL, *E = NULL;
	cloq_solve_info info;
	memset(&info, 0, sizeof info);
	res->out = out;
	res->in = in;
	res->rank = p->rank;
	res->rel_loftq1 = res->rel_cloq = NAN;
	cloq_quantizer_cb cb = {&qc, qctx_quantize, qctx_keep};
	cloq_lora_params lp = cloq_lora_default_params();
	lp.rank = p->rank;
	lp.scaling = p->scaling;
	lp.seed = p->seed;

	size_t wn = (size_t)out * in;
	if (!early)
		res->Wq = cloq_malloc(wn * sizeof(float));
	res->A = cloq_calloc((size_t)p->rank * in, sizeof(float));
	res->B = cloq_calloc((size_t)out * p->rank, sizeof(float));
	dW = cloq_malloc(wn * sizeof(float));
	CLOQ_FAIL_IF(!res->Wq || !res->A || !res->B || !dW, err, CLOQ_EIO, "out of memory for a %d x %d linear", out,
		     in);

	if (early) {
		for (size_t i = 0; i < wn; i++)
			dW[i] = W[i] - res->Wq[i];
		if (p->init == 0) {
			CLOQ_TRY(cloq_solver_cloq(f, dW, out, in, &lp, res->A, res->B, &info, err));
			num_q = info.total_energy - lam * cloq_frob2_f(dW, wn);
			num_f = info.objective_undamped;
		} else { /* zero: B = 0, A as PEFT initialises it */
			CLOQ_TRY(cloq_solver_zero_init(out, in, &lp, res->A, res->B, err));
			CLOQ_TRY(fobj(f, dW, out, in, &num_q, err));
			num_f = num_q;
		}
	} else {
		if (p->init == 0) /* alternating CLoQ, ranked through the factor */
			CLOQ_TRY(cloq_solver_cloq_alt(W, f, NULL, out, in, &cb, &lp, p->cloq_iters, res->Wq, res->A,
						      res->B, &info, err));
		else
			CLOQ_TRY(cloq_solver_loftq(W, out, in, &cb, &lp, p->loftq_iters, res->Wq, res->A, res->B, err));
		if (!qc.have_best)
			qctx_keep(&qc);
		res->q = qc.best;
		memset(&qc.best, 0, sizeof qc.best);
		/* the stored deq(Q) must be exactly what the codes say */
		cloq_quant_dequant(&res->q, res->Wq);
		for (size_t i = 0; i < wn; i++)
			dW[i] = W[i] - res->Wq[i];
		if (p->init == 0) {
			num_q = info.total_energy - lam * cloq_frob2_f(dW, wn);
			num_f = info.objective_undamped;
		} else {
			CLOQ_TRY(fobj(f, dW, out, in, &num_q, err));
			E = cloq_malloc(wn * sizeof(float));
			CLOQ_FAIL_IF(!E, err, CLOQ_EIO, "out of memory");
			residual(dW, res->A, res->B, p->scaling, out, in, p->rank, E);
			CLOQ_TRY(fobj(f, E, out, in, &num_f, err));
		}
	}
	CLOQ_TRY(fobj(f, W, out, in, &den, err));
	num_q = num_q > 0.0 ? num_q : 0.0;
	res->rel_quant = rel_of(num_q, den);
	res->rel_final = rel_of(num_f, den);
	if (p->init == 0)
		res->rel_cloq = res->rel_final;
	if (p->baselines) {
		A2 = cloq_calloc((size_t)p->rank * in, sizeof(float));
		B2 = cloq_calloc((size_t)out * p->rank, sizeof(float));
		if (!E)
			E = cloq_malloc(wn * sizeof(float));
		CLOQ_FAIL_IF(!A2 || !B2 || !E, err, CLOQ_EIO, "out of memory");
		fixedq fx = {res->Wq, wn};
		cloq_quantizer_cb fcb = {&fx, fixed_quantize, NULL};
		CLOQ_TRY(cloq_solver_loftq(W, out, in, &fcb, &lp, 1, E, A2, B2, err));
		residual(dW, A2, B2, p->scaling, out, in, p->rank, E);
		CLOQ_TRY(fobj(f, E, out, in, &v, err));
		res->rel_loftq1 = rel_of(v, den);
		if (p->init != 0) {
			cloq_solve_info bi;
			memset(&bi, 0, sizeof bi);
			CLOQ_TRY(cloq_solver_cloq(f, dW, out, in, &lp, A2, B2, &bi, err));
			res->rel_cloq = rel_of(bi.objective_undamped, den);
		}
	}
	if (p->propagate == 1 /* lora */)
		CLOQ_TRY(make_wlora(res, p->scaling, err));
	res->lambda_rel = cloq_factor_lambda_rel(f);
fail:
	qs0 = qc.seconds;
	*quant_s += qs0;
	*solve_s += now() - t0 - qs0;
	res->seconds += now() - t0;
	cloq_qtensor_free(&qc.cur);
	cloq_qtensor_free(&qc.best);
	cloq_free(A2);
	cloq_free(B2);
	cloq_free(dW);
	cloq_free(E);
	return rc;
}

/*
 * The order keeps one group's big matrices few (70B down_proj: n = 28672, 6.1 GiB per float64
 * n x n): GPTQ's float32 factor of H^-1 is made from H (H + that factor); when the quantizer runs once per linear (one-shot CLoQ, zero init) every linear is
 * quantized now and GPTQ's factor freed; then H becomes R in place (cloq_solver_factor_inplace)
 * with a float32 copy for the products. LoftQ and alternating CLoQ quantize inside the solver,
 * so there GPTQ's factor stays until the group is done.
 */
int cloq_layer_solve_group(const cloq_config *cfg, const cloq_layerstore_params *p, int l, int g, cloq_gram *gram,
			   const cloq_layer_w *w, cloq_layer_result res[CLOQ_LINEARS], double *quant_s,
			   double *solve_s, cloq_err *err)
{
	int rc = CLOQ_OK, early = (p->init == 0 && p->cloq_iters <= 1) || p->init == 2;
	cloq_factor *f = NULL;
	cloq_quant_hinv *hinv = NULL;
	float *magr_hn = NULL; /* --magr: H / lambda_max, kept while the group's linears are quantized */
	const char *what = "inputs";
	int lin = -1;
	if (p->magr) {
		double t = now();
		rc = cloq_quant_magr_hn(gram->H, gram->n, &magr_hn, NULL, err);
		*quant_s += now() - t;
		if (rc)
			goto fail;
	}
	if (p->quantizer == 0 /* GPTQ */) {
		double t = now();
		cloq_quant_params qp = quant_params(p);
		rc = cloq_quant_hinv_create(gram->H, gram->n, &qp, &hinv, err);
		*quant_s += now() - t;
		if (rc)
			goto fail;
	}
	if (early) {
		for (lin = 0; lin < CLOQ_LINEARS; lin++) {
			if (cloq_linear_group(lin) != g || !cloq_linear_present(cfg, lin))
				continue;
			int out, in;
			cloq_linear_shape(cfg, lin, &out, &in);
			if ((rc = cloq_interrupt_check("before quantizing a linear", err)))
				goto fail;
			double t = now();
			if ((rc = quantize_linear(p, hinv, magr_hn, w->w[lin], out, in, &res[lin], quant_s, err)))
				goto fail;
			res[lin].seconds = now() - t;
		}
		lin = -1;
		cloq_quant_hinv_free(hinv);
		hinv = NULL;
	}
	{
		double t = now();
		if ((rc = cloq_solver_factor_inplace(gram->H, gram->n, CLOQ_LAMBDA_REL_DEFAULT, &f, err)))
			goto fail;
		gram->H = NULL; /* the factor owns the buffer now */
		rc = cloq_factor_make_f32(f, err);
		*solve_s += now() - t;
		if (rc)
			goto fail;
	}
	for (lin = 0; lin < CLOQ_LINEARS; lin++) {
		if (cloq_linear_group(lin) != g || !cloq_linear_present(cfg, lin))
			continue;
		int out, in;
		cloq_linear_shape(cfg, lin, &out, &in);
		if ((rc = cloq_interrupt_check("before solving a linear", err)))
			goto fail;
		if ((rc = solve_linear(p, hinv, magr_hn, f, w->w[lin], out, in, early, &res[lin], quant_s, solve_s, err)))
			goto fail;
	}
fail:
	if (rc && rc != CLOQ_EINTERRUPTED) {
		if (lin >= 0 && lin < CLOQ_LINEARS && p->names && p->names[lin])
			cloq_err_wrap(err, rc, "%s", p->names[lin]);
		else if (lin >= 0 && lin < CLOQ_LINEARS)
			cloq_err_wrap(err, rc, "model.layers.%d.%s.%s", l, cloq_linear_parent(lin), cloq_linear_name(cfg, lin));
		else
			cloq_err_wrap(err, rc, "layer %d, %s of %s", l, what, cloq_group_names[g]);
	}
	cloq_factor_free(f);
	cloq_quant_hinv_free(hinv);
	cloq_free(magr_hn);
	return rc;
}

/* ---- shards -------------------------------------------------------------------------------- */
static int add2(cloq_shard_writer *w, const char *name, int dtype, uint64_t d0, uint64_t d1, const void *data,
		size_t esize, cloq_err *err)
{
	uint64_t shape[2] = {d0, d1};
	return cloq_shard_add(w, name, dtype, d1 ? 2 : 1, shape, data, (size_t)(d0 * (d1 ? d1 : 1)) * esize, err);
}

int cloq_layer_shard_add_linear(cloq_shard_writer *sw, const char *pre, const cloq_layer_result *r, const float *bias,
				cloq_err *err)
{
	int rc = CLOQ_OK;
	char name[256];
#define NAME(suffix) (snprintf(name, sizeof name, "%s.%s", pre, suffix), name)
	CLOQ_TRY(add2(sw, NAME("qcodes"), CLOQ_SHARD_U8, r->out, r->in, r->q.q, 1, err));
	if (r->q.nf_block > 0) {
		size_t nb = r->q.nf_nblocks;
		CLOQ_TRY(add2(sw, NAME("nf_absmax"), CLOQ_SHARD_F32, nb, 0, r->q.absmax, 4, err));
		if (r->q.qabsmax) {
			CLOQ_TRY(add2(sw, NAME("nf_qabsmax"), CLOQ_SHARD_U8, nb, 0, r->q.qabsmax, 1, err));
			CLOQ_TRY(add2(sw, NAME("nf_absmax2"), CLOQ_SHARD_F32, (nb + 255) / 256, 0, r->q.absmax2, 4, err));
			CLOQ_TRY(add2(sw, NAME("nf_offset"), CLOQ_SHARD_F32, 1, 0, &r->q.nf_offset, 4, err));
		}
	} else {
		CLOQ_TRY(add2(sw, NAME("scales"), CLOQ_SHARD_F32, r->out, r->q.ngroups, r->q.scale, 4, err));
		CLOQ_TRY(add2(sw, NAME("qzeros"), CLOQ_SHARD_I32, r->out, r->q.ngroups, r->q.zero, 4, err));
		CLOQ_TRY(add2(sw, NAME("g_idx"), CLOQ_SHARD_I32, r->in, 0, r->q.g_idx, 4, err));
	}
	CLOQ_TRY(add2(sw, NAME("lora_A"), CLOQ_SHARD_F32, r->rank, r->in, r->A, 4, err));
	CLOQ_TRY(add2(sw, NAME("lora_B"), CLOQ_SHARD_F32, r->out, r->rank, r->B, 4, err));
	if (bias)
		CLOQ_TRY(add2(sw, NAME("bias"), CLOQ_SHARD_F32, r->out, 0, bias, 4, err));
#undef NAME
fail:
	return rc;
}

int cloq_layer_shard_begin(const char *path, const cloq_config *cfg, int l, const cloq_layer_w *w,
			   const cloq_layer_result res[CLOQ_LINEARS], cloq_shard_writer **out, cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_shard_writer *sw = NULL;
	char name[256];
	*out = NULL;
	CLOQ_TRY(cloq_shard_writer_create(path, (uint32_t)l, &sw, err));
	const char *nn[4];
	const float *norm[4] = {w->attn_norm, w->ffn_norm, w->post_attn_norm, w->post_ffn_norm};
	cloq_norm_names(cfg, nn);
	for (int role = 0; role < 4; role++) {
		if (!nn[role])
			continue;
		snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, nn[role]);
		CLOQ_TRY(add2(sw, name, CLOQ_SHARD_F32, cfg->hidden, 0, norm[role], 4, err));
	}
	if (cfg->qk_norm) {
		snprintf(name, sizeof name, "model.layers.%d.self_attn.q_norm.weight", l);
		CLOQ_TRY(add2(sw, name, CLOQ_SHARD_F32, cfg->head_dim, 0, w->q_norm, 4, err));
		snprintf(name, sizeof name, "model.layers.%d.self_attn.k_norm.weight", l);
		CLOQ_TRY(add2(sw, name, CLOQ_SHARD_F32, cfg->head_dim, 0, w->k_norm, 4, err));
	}
	for (int lin = 0; lin < CLOQ_LINEARS; lin++) {
		char pre[160];
		if (!cloq_layer_has_linear(cfg, l, lin))
			continue;
		snprintf(pre, sizeof pre, "model.layers.%d.%s.%s", l, cloq_linear_parent(lin), cloq_linear_name(cfg, lin));
		CLOQ_TRY(cloq_layer_shard_add_linear(sw, pre, &res[lin], w->b[lin], err));
	}
	if (cloq_layer_is_moe(cfg, l)) { /* the router (and the shared expert's gate) stay full precision */
		cloq_moe_router_name(cfg, l, name, sizeof name);
		CLOQ_TRY(add2(sw, name, CLOQ_SHARD_F32, cfg->moe, cfg->hidden, w->router, 4, err));
		if (cfg->moe_shared_inter) {
			cloq_moe_shared_gate_name(l, name, sizeof name);
			CLOQ_TRY(add2(sw, name, CLOQ_SHARD_F32, 1, cfg->hidden, w->shared_gate, 4, err));
		}
	}
	*out = sw;
	return CLOQ_OK;
fail:
	cloq_shard_writer_free(sw);
	return rc;
}

int cloq_layer_write_shard(const char *path, const cloq_config *cfg, int l, const cloq_layer_w *w,
			   const cloq_layer_result res[CLOQ_LINEARS], cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_shard_writer *sw = NULL;
	CLOQ_TRY(cloq_layer_shard_begin(path, cfg, l, w, res, &sw, err));
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

int cloq_layer_read_linear(void *shard, const cloq_config *cfg, int l, int lin, const cloq_qform *qf,
			   cloq_stored_linear *o, cloq_err *err)
{
	char pre[160];
	int out, in;
	cloq_linear_shape(cfg, lin, &out, &in);
	snprintf(pre, sizeof pre, "model.layers.%d.%s.%s", l, cloq_linear_parent(lin), cloq_linear_name(cfg, lin));
	return cloq_layer_read_linear_at(shard, pre, out, in, qf, o, err);
}

int cloq_layer_read_linear_at(cloq_shard *s, const char *pre, int out, int in, const cloq_qform *qf,
			      cloq_stored_linear *o, cloq_err *err)
{
	int bits = qf->bits, group_size = qf->group_size;
	int rc = CLOQ_OK;
	char name[256];
	memset(o, 0, sizeof *o);
	if (cloq_qform_is_nf(qf)) {
		cloq_nf_params np = {bits, qf->nf_block, qf->quantizer == 3, qf->nf_double, qf->nf_dtype};
		CLOQ_TRY(cloq_qtensor_alloc_nf(&o->q, out, in, &np, err));
	} else {
		CLOQ_TRY(cloq_qtensor_alloc(&o->q, out, in, bits, group_size, err));
	}
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
	if (o->q.nf_block > 0) {
		size_t nb = o->q.nf_nblocks;
		snprintf(name, sizeof name, "%s.nf_absmax", pre);
		CLOQ_TRY(cloq_shard_read_name(s, name, o->q.absmax, nb * 4, err));
		if (o->q.qabsmax) {
			snprintf(name, sizeof name, "%s.nf_qabsmax", pre);
			CLOQ_TRY(cloq_shard_read_name(s, name, o->q.qabsmax, nb, err));
			snprintf(name, sizeof name, "%s.nf_absmax2", pre);
			CLOQ_TRY(cloq_shard_read_name(s, name, o->q.absmax2, (nb + 255) / 256 * 4, err));
			snprintf(name, sizeof name, "%s.nf_offset", pre);
			CLOQ_TRY(cloq_shard_read_name(s, name, &o->q.nf_offset, 4, err));
		}
		/* bytes from disk are hostile even with good checksums (another tool's shard) */
		if ((rc = cloq_quant_nf_check(&o->q, err))) {
			cloq_err_wrap(err, rc, "%s", pre);
			goto fail;
		}
		return CLOQ_OK;
	}
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

int cloq_layer_load_shard(const char *path, const cloq_config *cfg, int l, const cloq_qform *qf, int propagate,
			  double scaling, const cloq_layer_w *orig, cloq_layer_w *w, cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_shard *s = NULL;
	char name[256];
	memset(w, 0, sizeof *w);
	CLOQ_TRY(cloq_shard_open(path, &s, err));
	const char *nn[4];
	float **slot[4] = {&w->attn_norm, &w->ffn_norm, &w->post_attn_norm, &w->post_ffn_norm};
	cloq_norm_names(cfg, nn);
	for (int role = 0; role < 4; role++) {
		if (!nn[role])
			continue;
		snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, nn[role]);
		CLOQ_TRY(read_f32(s, name, (size_t)cfg->hidden, slot[role], 1, err));
	}
	if (cfg->qk_norm) {
		snprintf(name, sizeof name, "model.layers.%d.self_attn.q_norm.weight", l);
		CLOQ_TRY(read_f32(s, name, (size_t)cfg->head_dim, &w->q_norm, 1, err));
		snprintf(name, sizeof name, "model.layers.%d.self_attn.k_norm.weight", l);
		CLOQ_TRY(read_f32(s, name, (size_t)cfg->head_dim, &w->k_norm, 1, err));
	}
	if (cloq_layer_is_moe(cfg, l)) { /* the router (and shared expert gate); the experts come one by one */
		cloq_moe_router_name(cfg, l, name, sizeof name);
		CLOQ_TRY(read_f32(s, name, (size_t)cfg->moe * cfg->hidden, &w->router, 1, err));
		if (cfg->moe_shared_inter) {
			cloq_moe_shared_gate_name(l, name, sizeof name);
			CLOQ_TRY(read_f32(s, name, (size_t)cfg->hidden, &w->shared_gate, 1, err));
		}
	}
	for (int lin = 0; lin < CLOQ_LINEARS; lin++) {
		int out, in;
		if (!cloq_layer_has_linear(cfg, l, lin))
			continue;
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
		CLOQ_TRY(cloq_layer_read_linear(s, cfg, l, lin, qf, &sl, err));
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

int cloq_layer_load_expert(cloq_shard *s, const cloq_config *cfg, int l, int e, int k, const cloq_qform *qf,
			   int propagate, double scaling, float **W, cloq_err *err)
{
	int rc = CLOQ_OK, out, in;
	char pre[160];
	cloq_moe_linear_shape(cfg, e, k, &out, &in);
	cloq_stored_linear sl;
	*W = NULL;
	cloq_moe_linear_prefix(cfg, l, e, k, pre, sizeof pre);
	CLOQ_TRY(cloq_layer_read_linear_at(s, pre, out, in, qf, &sl, err));
	*W = cloq_malloc((size_t)out * in * sizeof(float));
	if (!*W) {
		cloq_stored_linear_free(&sl);
		return cloq_err_set(err, CLOQ_EIO, "out of memory for %s", pre);
	}
	cloq_quant_dequant(&sl.q, *W);
	if (propagate == 1 /* lora */)
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, in, sl.rank, (float)scaling, sl.B, sl.rank, sl.A,
			    in, 1.0f, *W, in);
	cloq_stored_linear_free(&sl);
fail:
	return rc;
}

int cloq_layer_load_experts(const char *path, const cloq_config *cfg, int l, const cloq_qform *qf, int propagate,
			    double scaling, cloq_layer_w *w, cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_shard *s = NULL;
	CLOQ_TRY(cloq_shard_open(path, &s, err));
	w->experts = cloq_calloc((size_t)3 * cfg->moe, sizeof *w->experts);
	CLOQ_FAIL_IF(!w->experts, err, CLOQ_EIO, "out of memory for %d experts", cfg->moe);
	w->n_experts = cfg->moe;
	for (int e = 0; e < cfg->moe; e++)
		for (int k = 0; k < 3; k++)
			CLOQ_TRY(cloq_layer_load_expert(s, cfg, l, e, k, qf, propagate, scaling, &w->experts[3 * e + k], err));
	for (int k = 0; k < 3 && cfg->moe_shared_inter; k++)
		CLOQ_TRY(cloq_layer_load_expert(s, cfg, l, -1, k, qf, propagate, scaling, &w->shared[k], err));
fail:
	if (rc)
		cloq_err_wrap(err, rc, "%s", path);
	cloq_shard_close(s);
	return rc;
}

/* ---- report -------------------------------------------------------------------------------- */
static void add_num(cJSON *o, const char *k, double v)
{
	if (isfinite(v))
		cJSON_AddNumberToObject(o, k, v);
}

static cJSON *linear_json(const char *name, const cloq_layer_result *x);

cJSON *cloq_layer_report_json(const cloq_config *cfg, int l, const cloq_layer_result res[CLOQ_LINEARS], double secs)
{
	cJSON *r = cJSON_CreateObject();
	cJSON_AddNumberToObject(r, "layer", l);
	cJSON_AddNumberToObject(r, "seconds", secs);
	cJSON *lins = cJSON_AddArrayToObject(r, "linears");
	for (int lin = 0; lin < CLOQ_LINEARS; lin++) {
		if (cloq_layer_has_linear(cfg, l, lin))
			cJSON_AddItemToArray(lins, linear_json(cloq_linear_name(cfg, lin), &res[lin]));
	}
	return r;
}

cJSON *cloq_expert_report_json(const cloq_config *cfg, int e, int64_t tokens, int filled, const cloq_layer_result res[3])
{
	char pre[160];
	cJSON *r = cJSON_CreateObject();
	if (e >= 0)
		cJSON_AddNumberToObject(r, "expert", e);
	else
		cJSON_AddStringToObject(r, "expert", "shared");
	cJSON_AddNumberToObject(r, "tokens", (double)tokens);
	cJSON_AddNumberToObject(r, "filled", filled);
	cJSON *lins = cJSON_AddArrayToObject(r, "linears");
	for (int k = 0; k < 3; k++) { /* the linear's own name: the prefix's last component */
		cloq_moe_linear_prefix(cfg, 0, e, k, pre, sizeof pre);
		cJSON_AddItemToArray(lins, linear_json(strrchr(pre, '.') + 1, &res[k]));
	}
	return r;
}

static cJSON *linear_json(const char *name, const cloq_layer_result *x)
{
	cJSON *e = cJSON_CreateObject();
	cJSON_AddStringToObject(e, "name", name);
	cJSON_AddNumberToObject(e, "out", x->out);
	cJSON_AddNumberToObject(e, "in", x->in);
	add_num(e, "quantized", x->rel_quant);
	add_num(e, "zero", x->rel_quant);
	add_num(e, "loftq1", x->rel_loftq1);
	add_num(e, "cloq", x->rel_cloq);
	add_num(e, "final", x->rel_final);
	add_num(e, "lambda_rel", x->lambda_rel);
	add_num(e, "seconds", x->seconds);
	return e;
}

int cloq_base_write_shard(const char *path, cloq_model *m, cJSON *inputs, cloq_err *err)
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
		if (inputs) {
			char hex[17];
			cloq_inputs_hex(XXH3_64bits(buf, t->nbytes), hex);
			CLOQ_FAIL_IF(!cJSON_AddStringToObject(inputs, t->name, hex), err, CLOQ_EIO, "out of memory");
		}
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
