/*
 * cloq_expmodel.c - an exported checkpoint read back as a model: a GPTQ checkpoint unpacked
 * through quant/'s unpack path (or a dense base), plus optionally a PEFT LoRA adapter. This is how
 * `cloq ppl EXPORTDIR [--adapter DIR]` checks that an export computes what the job computed.
 */
#include "cloq_expmodel.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cblas.h>
#include <cjson/cJSON.h>

#include "cloq_quant.h"
#include "cloq_sys.h"

static int read_tensor_f32(cloq_st_model *st, const char *dir, const char *name, size_t nelem, float **dst,
			   int required, cloq_err *err)
{
	*dst = NULL;
	const cloq_st_tensor *t = cloq_st_find(st, name);
	if (!t)
		return required ? cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s' is missing", dir, name) : CLOQ_OK;
	if (t->nelem != nelem)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s' has %llu elements, expected %zu", dir, name,
				    (unsigned long long)t->nelem, nelem);
	*dst = cloq_malloc(nelem * sizeof(float));
	if (!*dst)
		return cloq_err_set(err, CLOQ_EIO, "out of memory reading '%s'", name);
	int rc = cloq_st_read_f32(st, t, *dst, err);
	if (rc) {
		cloq_free(*dst);
		*dst = NULL;
	}
	return rc;
}

static int read_raw(cloq_st_model *st, const char *dir, const char *name, enum cloq_dtype dt, size_t nelem,
		    void **dst, cloq_err *err)
{
	const cloq_st_tensor *t = cloq_st_find(st, name);
	if (!t)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s' is missing", dir, name);
	if (t->dtype != dt || t->nelem != nelem)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s' has dtype %s and %llu elements, expected %s and %zu",
				    dir, name, cloq_dtype_name(t->dtype), (unsigned long long)t->nelem, cloq_dtype_name(dt),
				    nelem);
	*dst = cloq_malloc(t->nbytes);
	if (!*dst)
		return cloq_err_set(err, CLOQ_EIO, "out of memory reading '%s'", name);
	return cloq_st_read_raw(st, t, *dst, err);
}

int cloq_expmodel_open(const char *dir, const char *adapter, cloq_expmodel **out, cloq_err *err)
{
	int rc = CLOQ_OK;
	char path[4096], *text = NULL;
	size_t len;
	cJSON *root = NULL;
	cloq_expmodel *m = cloq_calloc(1, sizeof *m);
	if (!m)
		return cloq_err_set(err, CLOQ_EIO, "out of memory");
	cloq_layer_cache_init(&m->tlm.cache);
	m->dir = cloq_strdup(dir);
	CLOQ_FAIL_IF(!m->dir, err, CLOQ_EIO, "out of memory");
	CLOQ_TRY(cloq_config_load(dir, &m->cfg, err));
	snprintf(path, sizeof path, "%s/config.json", dir);
	CLOQ_TRY(cloq_read_file(path, &text, &len, err));
	root = cJSON_Parse(text);
	CLOQ_FAIL_IF(!root, err, CLOQ_EINPUT, "%s: not valid JSON", path);
	const cJSON *qc = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
	if (cJSON_IsObject(qc)) {
		const cJSON *qm = cJSON_GetObjectItemCaseSensitive(qc, "quant_method");
		CLOQ_FAIL_IF(!cJSON_IsString(qm) || strcmp(qm->valuestring, "gptq") != 0, err, CLOQ_EINPUT,
			     "%s: quantization_config.quant_method must be \"gptq\"", path);
		const cJSON *b = cJSON_GetObjectItemCaseSensitive(qc, "bits");
		const cJSON *g = cJSON_GetObjectItemCaseSensitive(qc, "group_size");
		const cJSON *f = cJSON_GetObjectItemCaseSensitive(qc, "checkpoint_format");
		CLOQ_FAIL_IF(!cJSON_IsNumber(b) || !cJSON_IsNumber(g), err, CLOQ_EINPUT,
			     "%s: quantization_config needs bits and group_size", path);
		m->gptq = 1;
		m->bits = b->valueint;
		m->group_size = g->valueint;
		m->format = cJSON_IsString(f) && !strcmp(f->valuestring, "gptq_v2") ? CLOQ_GPTQ_V2 : CLOQ_GPTQ_V1;
		CLOQ_FAIL_IF(m->bits != 2 && m->bits != 3 && m->bits != 4 && m->bits != 8, err, CLOQ_EINPUT,
			     "%s: quantization_config.bits = %d is not supported", path, m->bits);
		if (m->group_size <= 0)
			m->group_size = -1;
	}
	CLOQ_TRY(cloq_st_open(dir, &m->st, err));
	size_t vh = (size_t)m->cfg.vocab * m->cfg.hidden;
	CLOQ_TRY(read_tensor_f32(m->st, dir, "model.embed_tokens.weight", vh, &m->embed, 1, err));
	CLOQ_TRY(read_tensor_f32(m->st, dir, "model.norm.weight", (size_t)m->cfg.hidden, &m->final_norm, 1, err));
	CLOQ_TRY(read_tensor_f32(m->st, dir, "lm_head.weight", vh, &m->head, 0, err));
	if (!m->head || m->cfg.tie_embeddings) {
		cloq_free(m->head);
		m->head = m->embed;
	}
	if (adapter) {
		cJSON_Delete(root);
		cloq_free(text);
		root = NULL;
		text = NULL;
		snprintf(path, sizeof path, "%s/adapter_config.json", adapter);
		CLOQ_TRY(cloq_read_file(path, &text, &len, err));
		root = cJSON_Parse(text);
		CLOQ_FAIL_IF(!root, err, CLOQ_EINPUT, "%s: not valid JSON", path);
		const cJSON *r = cJSON_GetObjectItemCaseSensitive(root, "r");
		const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "lora_alpha");
		const cJSON *pt = cJSON_GetObjectItemCaseSensitive(root, "peft_type");
		CLOQ_FAIL_IF(!cJSON_IsString(pt) || strcmp(pt->valuestring, "LORA") || !cJSON_IsNumber(r) || r->valueint < 1 ||
				     !cJSON_IsNumber(a),
			     err, CLOQ_EINPUT, "%s: need peft_type LORA, r and lora_alpha", path);
		m->rank = r->valueint;
		m->scaling = a->valuedouble / r->valueint;
		snprintf(path, sizeof path, "%s/adapter_model.safetensors", adapter);
		CLOQ_TRY(cloq_st_open(path, &m->adapter, err));
	}
	cJSON_Delete(root);
	cloq_free(text);
	*out = m;
	return CLOQ_OK;
fail:
	cJSON_Delete(root);
	cloq_free(text);
	cloq_expmodel_close(m);
	return rc;
}

void cloq_expmodel_close(cloq_expmodel *m)
{
	if (!m)
		return;
	if (m->head != m->embed)
		cloq_free(m->head);
	cloq_free(m->embed);
	cloq_free(m->final_norm);
	cloq_layer_cache_release(&m->tlm.cache);
	cloq_st_close(m->st);
	cloq_st_close(m->adapter);
	cloq_free(m->dir);
	cloq_free(m);
}

/* W (out, in) of the linear under prefix p: unpacked GPTQ tensors, or a dense .weight. */
static int load_linear(cloq_expmodel *m, const char *p, int out, int in, float *W, cloq_err *err)
{
	int rc = CLOQ_OK;
	char name[200];
	snprintf(name, sizeof name, "%s.qweight", p);
	if (!m->gptq || !cloq_st_find(m->st, name)) {
		snprintf(name, sizeof name, "%s.weight", p);
		float *tmp = NULL;
		rc = read_tensor_f32(m->st, m->dir, name, (size_t)out * in, &tmp, 1, err);
		if (rc == CLOQ_OK)
			memcpy(W, tmp, (size_t)out * in * sizeof(float));
		cloq_free(tmp);
		return rc;
	}
	int b = m->bits, gs = m->group_size > 0 ? m->group_size : in, ng = (in + gs - 1) / gs;
	void *qw = NULL, *qz = NULL, *sc = NULL, *gi = NULL;
	cloq_qtensor q;
	memset(&q, 0, sizeof q);
	CLOQ_FAIL_IF(!cloq_quant_gptq_packable(out, in, b), err, CLOQ_EINPUT,
		     "%s: '%s' has a shape (%d, %d) that %d-bit GPTQ cannot pack", m->dir, name, out, in, b);
	CLOQ_TRY(read_raw(m->st, m->dir, name, CLOQ_DT_I32, (size_t)in * b / 32 * out, &qw, err));
	snprintf(name, sizeof name, "%s.qzeros", p);
	CLOQ_TRY(read_raw(m->st, m->dir, name, CLOQ_DT_I32, (size_t)ng * out * b / 32, &qz, err));
	snprintf(name, sizeof name, "%s.scales", p);
	CLOQ_TRY(read_raw(m->st, m->dir, name, CLOQ_DT_F16, (size_t)ng * out, &sc, err));
	snprintf(name, sizeof name, "%s.g_idx", p);
	CLOQ_TRY(read_raw(m->st, m->dir, name, CLOQ_DT_I32, (size_t)in, &gi, err));
	rc = cloq_quant_unpack_gptq(qw, qz, sc, gi, out, in, b, gs, m->format, &q, err);
	if (rc)
		CLOQ_TRY(cloq_err_wrap(err, rc, "%s: %s", m->dir, p));
	cloq_quant_dequant(&q, W);
fail:
	cloq_qtensor_free(&q);
	cloq_free(qw);
	cloq_free(qz);
	cloq_free(sc);
	cloq_free(gi);
	return rc;
}

/* W += s B A from the adapter's tensors for the linear under prefix p, when it has them */
static int add_adapter(cloq_expmodel *m, const char *p, int out, int in, float *W, cloq_err *err)
{
	int rc = CLOQ_OK;
	char name[240];
	float *A = NULL, *B = NULL;
	if (!m->adapter)
		return CLOQ_OK;
	snprintf(name, sizeof name, "base_model.model.%s.lora_A.weight", p);
	rc = read_tensor_f32(m->adapter, "adapter", name, (size_t)m->rank * in, &A, 0, err);
	snprintf(name, sizeof name, "base_model.model.%s.lora_B.weight", p);
	if (rc == CLOQ_OK && A)
		rc = read_tensor_f32(m->adapter, "adapter", name, (size_t)out * m->rank, &B, 1, err);
	if (rc == CLOQ_OK && A && B)
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, in, m->rank, (float)m->scaling, B, m->rank, A, in,
			    1.0f, W, in);
	cloq_free(A);
	cloq_free(B);
	return rc;
}

/* one linear (+ adapter) into a new *W */
static int load_adapted(cloq_expmodel *m, const char *p, int out, int in, float **W, cloq_err *err)
{
	int rc = CLOQ_OK;
	*W = cloq_malloc((size_t)out * in * sizeof(float));
	CLOQ_FAIL_IF(!*W, err, CLOQ_EIO, "out of memory for %s", p);
	CLOQ_TRY(load_linear(m, p, out, in, *W, err));
	CLOQ_TRY(add_adapter(m, p, out, in, *W, err));
fail:
	return rc;
}

/* a sparse layer's router, experts and shared expert (+ their adapters) */
static int load_experts(cloq_expmodel *m, int l, cloq_layer_w *w, cloq_err *err)
{
	int rc = CLOQ_OK;
	const cloq_config *c = &m->cfg;
	char p[160];
	cloq_moe_router_name(c, l, p, sizeof p);
	CLOQ_TRY(read_tensor_f32(m->st, m->dir, p, (size_t)c->moe * c->hidden, &w->router, 1, err));
	if (c->moe_shared_inter) {
		cloq_moe_shared_gate_name(l, p, sizeof p);
		CLOQ_TRY(read_tensor_f32(m->st, m->dir, p, (size_t)c->hidden, &w->shared_gate, 1, err));
	}
	w->experts = cloq_calloc((size_t)3 * c->moe, sizeof *w->experts);
	CLOQ_FAIL_IF(!w->experts, err, CLOQ_EIO, "out of memory for %d experts", c->moe);
	w->n_experts = c->moe;
	for (int e = c->moe_shared_inter ? -1 : 0; e < c->moe; e++)
		for (int k = 0; k < 3; k++) {
			int out, in;
			cloq_moe_linear_prefix(c, l, e, k, p, sizeof p);
			cloq_moe_linear_shape(c, e, k, &out, &in);
			CLOQ_TRY(load_adapted(m, p, out, in, e < 0 ? &w->shared[k] : &w->experts[3 * e + k], err));
		}
fail:
	return rc;
}

int cloq_expmodel_load_layer(cloq_expmodel *m, int l, cloq_layer_w *w, cloq_err *err)
{
	int rc = CLOQ_OK;
	char name[200];
	const cloq_config *c = &m->cfg;
	memset(w, 0, sizeof *w);
	const char *nn[4];
	float **slot[4] = {&w->attn_norm, &w->ffn_norm, &w->post_attn_norm, &w->post_ffn_norm};
	cloq_norm_names(c, nn);
	for (int role = 0; role < 4; role++) {
		if (!nn[role])
			continue;
		snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, nn[role]);
		CLOQ_TRY(read_tensor_f32(m->st, m->dir, name, (size_t)c->hidden, slot[role], 1, err));
	}
	if (c->qk_norm) {
		snprintf(name, sizeof name, "model.layers.%d.self_attn.q_norm.weight", l);
		CLOQ_TRY(read_tensor_f32(m->st, m->dir, name, (size_t)c->head_dim, &w->q_norm, 1, err));
		snprintf(name, sizeof name, "model.layers.%d.self_attn.k_norm.weight", l);
		CLOQ_TRY(read_tensor_f32(m->st, m->dir, name, (size_t)c->head_dim, &w->k_norm, 1, err));
	}
	for (int lin = 0; lin < CLOQ_LINEARS; lin++) {
		int out, in;
		char p[160];
		if (!cloq_layer_has_linear(c, l, lin))
			continue;
		cloq_linear_shape(c, lin, &out, &in);
		snprintf(p, sizeof p, "model.layers.%d.%s.%s", l, cloq_linear_parent(lin), cloq_linear_name(c, lin));
		CLOQ_TRY(load_adapted(m, p, out, in, &w->w[lin], err));
		snprintf(name, sizeof name, "%s.bias", p);
		CLOQ_TRY(read_tensor_f32(m->st, m->dir, name, (size_t)out, &w->b[lin], 0, err));
	}
	if (cloq_layer_is_moe(c, l))
		CLOQ_TRY(load_experts(m, l, w, err));
	return CLOQ_OK;
fail:
	cloq_layer_w_free(w);
	return rc;
}

static int load_layer(void *src, int l, cloq_layer_w *w, cloq_err *err)
{
	return cloq_expmodel_load_layer(src, l, w, err);
}

void cloq_expmodel_lm(cloq_expmodel *m, cloq_lm *lm)
{
	cloq_table_lm_bind(&m->tlm, &m->cfg, m->embed, m->head, m->final_norm, load_layer, m, lm);
}
