/* cloq_model.c - HF model directory: tensor checks, fp32 layer loads, row reads (see cloq_model.h). */
#include "cloq_model.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cloq_dtype.h"
#include "cloq_sys.h"

static const cloq_st_tensor *find(const cloq_model *m, const char *fmt, int l, const char *a, const char *b)
{
	char name[256];
	snprintf(name, sizeof name, fmt, l, a, b);
	return cloq_st_find(m->st, name);
}

const cloq_st_tensor *cloq_model_linear(const cloq_model *m, int l, int lin, int bias)
{
	if (!cloq_linear_present(&m->cfg, lin))
		return NULL;
	return find(m, bias ? "model.layers.%d.%s.%s.bias" : "model.layers.%d.%s.%s.weight", l,
		    cloq_linear_parent(lin), cloq_linear_name(&m->cfg, lin));
}

const cloq_st_tensor *cloq_model_norm(const cloq_model *m, int l, int role)
{
	const char *names[4];
	cloq_norm_names(&m->cfg, names);
	return role >= 0 && role < 4 && names[role] ? find(m, "model.layers.%d.%s%s.weight", l, names[role], "") : NULL;
}

const cloq_st_tensor *cloq_model_qk_norm(const cloq_model *m, int l, int k)
{
	return find(m, "model.layers.%d.self_attn.%s%s.weight", l, k ? "k_norm" : "q_norm", "");
}

/* A mixture-of-experts tensor of layer l: role 0 the router, 1..3 expert e's gate, up, down,
 * 4..6 the shared expert's gate, up, down, 7 the shared expert's gate (Qwen2-MoE). Its shape in
 * *d0, *d1. */
static void moe_name(const cloq_config *c, int l, int role, int e, char *buf, size_t cap, int64_t *d0, int64_t *d1)
{
	char pre[160];
	if (role == 0) {
		cloq_moe_router_name(c, l, buf, cap);
		*d0 = c->moe, *d1 = c->hidden;
	} else if (role <= 6) {
		int k = (role - 1) % 3, out, in;
		cloq_moe_linear_prefix(c, l, role <= 3 ? e : -1, k, pre, sizeof pre);
		snprintf(buf, cap, "%s.weight", pre);
		cloq_moe_linear_shape(c, role <= 3 ? e : -1, k, &out, &in);
		*d0 = out, *d1 = in;
	} else {
		cloq_moe_shared_gate_name(l, buf, cap);
		*d0 = 1, *d1 = c->hidden;
	}
}

static int has_bias(const cloq_config *c, int lin)
{
	if (lin <= CLOQ_LIN_V)
		return c->qkv_bias;
	if (lin == CLOQ_LIN_O)
		return c->o_bias;
	return c->mlp_bias;
}

/* The tensor must exist with exactly this shape (ndim 1 when d1 < 0). */
static int expect(const cloq_model *m, const cloq_st_tensor *t, const char *name, int64_t d0, int64_t d1,
		  cloq_err *err)
{
	if (!t)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s' is missing (config.json: %s, %d layers)", m->dir,
				    name, m->cfg.arch_name, m->cfg.layers);
	const char *file = cloq_st_file_path(m->st, (size_t)t->file);
	int ndim = d1 < 0 ? 1 : 2;
	if (t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1)) {
		char got[128] = "";
		for (int i = 0; i < t->ndim && i < 4; i++)
			snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
		if (ndim == 1)
			return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s' has shape [%s] but config.json implies [%lld]",
					    file, name, got, (long long)d0);
		return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s' has shape [%s] but config.json implies [%lld, %lld]",
				    file, name, got, (long long)d0, (long long)d1);
	}
	if (!cloq_dtype_is_float(t->dtype) || (t->dtype != CLOQ_DT_F32 && t->dtype != CLOQ_DT_F16 &&
					       t->dtype != CLOQ_DT_BF16))
		return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s' has dtype %s (supported: F32, F16, BF16)", file,
				    name, cloq_dtype_name(t->dtype));
	return CLOQ_OK;
}

/* Mark t consumed (NULL ok). */
static void consume(const cloq_model *m, unsigned char *used, const cloq_st_tensor *t)
{
	if (t)
		used[cloq_st_index_of(m->st, t)] = 1;
}

/* The names transformers' loader itself drops by design, accepted (and not read) with their shape
 * checked: RoPE's inverse frequencies, a non-persistent buffer recomputed from rope_theta and
 * head_dim (old Llama checkpoints saved it per layer; transformers removes model buffers from the
 * unexpected keys, and since v4.48 any "rotary_emb.inv_freq" key). Nothing reads the stored values. */
static int ignored_by_design(const cloq_model *m, const cloq_st_tensor *t)
{
	int l = -1, n = 0;
	if (sscanf(t->name, "model.layers.%d.self_attn.rotary_emb.inv_freq%n", &l, &n) == 1 && t->name[n] == '\0' &&
	    l >= 0 && l < m->cfg.layers)
		return t->ndim == 1 && t->shape[0] == m->cfg.head_dim / 2;
	if (!strcmp(t->name, "model.rotary_emb.inv_freq"))
		return t->ndim == 1 && t->shape[0] == m->cfg.head_dim / 2;
	return 0;
}

/* Why a tensor of another family is there, for the message. */
static const char *foreign_hint(const char *name)
{
	if (strstr(name, ".self_attn.q_norm.") || strstr(name, ".self_attn.k_norm."))
		return "q/k norms are Qwen3's";
	if (strstr(name, ".block_sparse_moe.") || strstr(name, ".mlp.experts.") || strstr(name, ".mlp.gate.weight"))
		return "experts are a mixture-of-experts model's";
	if (strstr(name, "feedforward_layernorm"))
		return "pre/post feed-forward norms are Gemma 2's";
	if (strstr(name, ".qkv_proj.") || strstr(name, ".gate_up_proj."))
		return "fused qkv_proj / gate_up_proj are Phi-3's";
	if (strstr(name, "rotary_emb.inv_freq"))
		return "its shape or layer does not match config.json";
	return "the architecture has no such weight";
}

/* Tied embeddings with a stored lm_head.weight: transformers loads it, then tie_weights() makes
 * lm_head the embedding, so the stored values are never used. Accepted only when they are the
 * embedding's (compared as fp32, in chunks of rows); otherwise the checkpoint is not one model. */
static int check_tied_head(cloq_model *m, const cloq_st_tensor *h, cloq_err *err)
{
	int rc = CLOQ_OK;
	const cloq_config *c = &m->cfg;
	int64_t rows = 256;
	float *a = cloq_malloc((size_t)rows * c->hidden * sizeof(float)), *b = cloq_malloc((size_t)rows * c->hidden * sizeof(float));
	CLOQ_FAIL_IF(!a || !b, err, CLOQ_EIO, "out of memory");
	for (int64_t r0 = 0; r0 < c->vocab; r0 += rows) {
		int64_t n = c->vocab - r0 < rows ? c->vocab - r0 : rows;
		CLOQ_TRY(cloq_model_read_rows(m, m->embed, r0, n, a, err));
		CLOQ_TRY(cloq_model_read_rows(m, h, r0, n, b, err));
		for (size_t i = 0; i < (size_t)n * c->hidden; i++)
			CLOQ_FAIL_IF(a[i] != b[i] && !(a[i] != a[i] && b[i] != b[i]), err, CLOQ_EINPUT,
				     "%s: tensor 'lm_head.weight' differs from model.embed_tokens.weight (row %lld, column %zu) "
				     "but config.json has tie_word_embeddings = true, which makes lm_head the embedding and "
				     "drops these values; refusing rather than guessing which model is meant",
				     cloq_st_file_path(m->st, (size_t)h->file), (long long)(r0 + (int64_t)(i / c->hidden)),
				     i % c->hidden);
	}
fail:
	cloq_free(a);
	cloq_free(b);
	return rc;
}

/* Every expected tensor is there with its shape; then every tensor of every file is consumed by
 * the architecture (or is on the short list above), else CLOQ_EINPUT naming the file and tensor. */
static int check_tensors(cloq_model *m, cloq_err *err)
{
	int rc = CLOQ_OK;
	const cloq_config *c = &m->cfg;
	char name[256];
	size_t nt = cloq_st_count(m->st);
	unsigned char *used = cloq_calloc(nt ? nt : 1, 1);
	CLOQ_FAIL_IF(!used, err, CLOQ_EIO, "out of memory");
	m->embed = cloq_st_find(m->st, "model.embed_tokens.weight");
	CLOQ_TRY(expect(m, m->embed, "model.embed_tokens.weight", c->vocab, c->hidden, err));
	consume(m, used, m->embed);
	m->norm = cloq_st_find(m->st, "model.norm.weight");
	CLOQ_TRY(expect(m, m->norm, "model.norm.weight", c->hidden, -1, err));
	consume(m, used, m->norm);
	const cloq_st_tensor *head = cloq_st_find(m->st, "lm_head.weight");
	/* transformers: tie_word_embeddings false and no lm_head.weight leaves lm_head randomly
	 * initialised (a warning); cloq refuses rather than tie it on its own. */
	CLOQ_FAIL_IF(!head && !c->tie_embeddings, err, CLOQ_EINPUT,
		     "%s: tensor 'lm_head.weight' is missing and config.json has tie_word_embeddings = false "
		     "(transformers would initialise lm_head at random)", m->dir);
	if (head)
		CLOQ_TRY(expect(m, head, "lm_head.weight", c->vocab, c->hidden, err));
	m->head = c->tie_embeddings ? m->embed : head;
	for (int l = 0; l < c->layers; l++) {
		const char *nn[4];
		cloq_norm_names(c, nn);
		for (int role = 0; role < 4; role++) {
			if (!nn[role])
				continue;
			snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, nn[role]);
			CLOQ_TRY(expect(m, cloq_model_norm(m, l, role), name, c->hidden, -1, err));
			consume(m, used, cloq_model_norm(m, l, role));
		}
		for (int k = 0; k < 2 && c->qk_norm; k++) {
			snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.weight", l, k ? "k_norm" : "q_norm");
			CLOQ_TRY(expect(m, cloq_model_qk_norm(m, l, k), name, c->head_dim, -1, err));
			consume(m, used, cloq_model_qk_norm(m, l, k));
		}
		if (cloq_layer_is_moe(c, l)) /* the router, every expert, Qwen2-MoE's shared expert */
			for (int role = 0; role < (c->moe_shared_inter ? 8 : 4); role++)
				for (int e = 0; e < (role >= 1 && role <= 3 ? c->moe : 1); e++) {
					int64_t d0, d1;
					moe_name(c, l, role, e, name, sizeof name, &d0, &d1);
					const cloq_st_tensor *t = cloq_st_find(m->st, name);
					CLOQ_TRY(expect(m, t, name, d0, d1, err));
					consume(m, used, t);
				}
		for (int lin = 0; lin < CLOQ_LINEARS; lin++) {
			int out, in;
			if (!cloq_linear_present(c, lin) ||
			    (cloq_layer_is_moe(c, l) && cloq_linear_group(lin) >= CLOQ_GROUP_GATEUP))
				continue;
			cloq_linear_shape(c, lin, &out, &in);
			snprintf(name, sizeof name, "model.layers.%d.%s.%s.weight", l, cloq_linear_parent(lin),
				 cloq_linear_name(c, lin));
			if (!cloq_model_linear(m, l, lin, 0) && !c->fused) {
				char fused[160];
				snprintf(fused, sizeof fused, "model.layers.%d.%s", l,
					 cloq_linear_group(lin) == CLOQ_GROUP_QKV      ? "self_attn.qkv_proj.weight"
					 : cloq_linear_group(lin) == CLOQ_GROUP_GATEUP ? "mlp.gate_up_proj.weight"
										       : "");
				const cloq_st_tensor *ft = cloq_st_find(m->st, fused);
				CLOQ_FAIL_IF(ft, err, CLOQ_EINPUT,
					     "%s: tensor '%s' is missing and '%s' (in %s) is there: fused projections are "
					     "Phi-3's, and config.json says %s; refusing rather than guessing the model",
					     m->dir, name, fused, cloq_st_file_path(m->st, (size_t)ft->file), c->arch_name);
			}
			CLOQ_TRY(expect(m, cloq_model_linear(m, l, lin, 0), name, out, in, err));
			consume(m, used, cloq_model_linear(m, l, lin, 0));
			const cloq_st_tensor *b = cloq_model_linear(m, l, lin, 1);
			snprintf(name, sizeof name, "model.layers.%d.%s.%s.bias", l, cloq_linear_parent(lin),
				 cloq_linear_name(c, lin));
			if (has_bias(c, lin))
				CLOQ_TRY(expect(m, b, name, out, -1, err));
			else
				CLOQ_FAIL_IF(b, err, CLOQ_EINPUT,
					     "%s: tensor '%s' is present but config.json declares no such bias", m->dir, name);
			if (has_bias(c, lin))
				consume(m, used, b);
		}
	}
	/* A tensor of a layer beyond num_hidden_layers means config and weights disagree. */
	int stl = cloq_st_layer_count(m->st);
	CLOQ_FAIL_IF(stl > c->layers, err, CLOQ_EINPUT,
		     "%s: the safetensors hold %d decoder layers but config.json says num_hidden_layers = %d", m->dir,
		     stl, c->layers);
	if (head && c->tie_embeddings) {
		CLOQ_TRY(check_tied_head(m, head, err));
		consume(m, used, head);
	} else {
		consume(m, used, head);
	}
	for (size_t i = 0; i < nt; i++) {
		const cloq_st_tensor *t = cloq_st_tensor_at(m->st, i);
		if (used[i] || ignored_by_design(m, t))
			continue;
		CLOQ_FAIL_IF(1, err, CLOQ_EINPUT,
			     "%s: tensor '%s' is not used by %s (%s; cloq would drop it and produce a different model)",
			     cloq_st_file_path(m->st, (size_t)t->file), t->name, c->arch_name, foreign_hint(t->name));
	}
fail:
	cloq_free(used);
	return rc;
}

int cloq_model_open(const char *dir, cloq_model **out, cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_model *m = cloq_calloc(1, sizeof *m);
	if (!m)
		return cloq_err_set(err, CLOQ_EIO, "out of memory");
	cloq_layer_cache_init(&m->cache);
	m->dir = cloq_strdup(dir);
	CLOQ_FAIL_IF(!m->dir, err, CLOQ_EIO, "out of memory");
	CLOQ_TRY(cloq_config_load(dir, &m->cfg, err));
	CLOQ_FAIL_IF(m->cfg.quantized, err, CLOQ_EINPUT,
		     "%s/config.json: field 'quantization_config' is present: the weights are already quantized "
		     "(cloq converts float checkpoints; 'cloq ppl' reads its own exports)", dir);
	CLOQ_TRY(cloq_st_open(dir, &m->st, err));
	m->nfds = cloq_st_nfiles(m->st);
	m->fds = cloq_malloc(m->nfds * sizeof(int));
	CLOQ_FAIL_IF(!m->fds, err, CLOQ_EIO, "out of memory");
	for (size_t i = 0; i < m->nfds; i++)
		m->fds[i] = -1;
	for (size_t i = 0; i < m->nfds; i++) {
		const char *p = cloq_st_file_path(m->st, i);
		m->fds[i] = open(p, O_RDONLY | O_CLOEXEC);
		CLOQ_FAIL_IF(m->fds[i] < 0, err, CLOQ_EIO, "%s: cannot open: %m", p);
	}
	CLOQ_TRY(check_tensors(m, err));
	m->final_norm = cloq_malloc((size_t)m->cfg.hidden * sizeof(float));
	CLOQ_FAIL_IF(!m->final_norm, err, CLOQ_EIO, "out of memory");
	CLOQ_TRY(cloq_st_read_f32(m->st, m->norm, m->final_norm, err));
	*out = m;
	return CLOQ_OK;
fail:
	cloq_model_close(m);
	return rc;
}


void cloq_model_close(cloq_model *m)
{
	if (!m)
		return;
	if (m->fds)
		for (size_t i = 0; i < m->nfds; i++)
			if (m->fds[i] >= 0)
				close(m->fds[i]);
	cloq_free(m->fds);
	cloq_layer_cache_release(&m->cache);
	cloq_free(m->final_norm);
	cloq_st_close(m->st);
	cloq_free(m->dir);
	cloq_free(m);
}

static int load_f32(const cloq_model *m, const cloq_st_tensor *t, float **dst, cloq_err *err)
{
	*dst = NULL;
	if (!t)
		return CLOQ_OK;
	*dst = cloq_malloc(t->nelem * sizeof(float));
	if (!*dst)
		return cloq_err_set(err, CLOQ_EIO, "out of memory loading '%s' (%llu elements)", t->name,
				    (unsigned long long)t->nelem);
	return cloq_st_read_f32(m->st, t, *dst, err);
}

int cloq_model_load_layer(const cloq_model *m, int l, cloq_layer_w *w, cloq_err *err)
{
	return cloq_model_load_layer_opt(m, l, 1, w, err);
}

int cloq_model_load_layer_opt(const cloq_model *m, int l, int experts, cloq_layer_w *w, cloq_err *err)
{
	int rc = CLOQ_OK;
	memset(w, 0, sizeof *w);
	float **slot[4] = {&w->attn_norm, &w->ffn_norm, &w->post_attn_norm, &w->post_ffn_norm};
	for (int role = 0; role < 4; role++)
		CLOQ_TRY(load_f32(m, cloq_model_norm(m, l, role), slot[role], err));
	if (m->cfg.qk_norm) {
		CLOQ_TRY(load_f32(m, cloq_model_qk_norm(m, l, 0), &w->q_norm, err));
		CLOQ_TRY(load_f32(m, cloq_model_qk_norm(m, l, 1), &w->k_norm, err));
	}
	int moe = cloq_layer_is_moe(&m->cfg, l);
	for (int i = 0; i < CLOQ_LINEARS; i++) {
		if (moe && cloq_linear_group(i) >= CLOQ_GROUP_GATEUP)
			continue;
		CLOQ_TRY(load_f32(m, cloq_model_linear(m, l, i, 0), &w->w[i], err));
		CLOQ_TRY(load_f32(m, cloq_model_linear(m, l, i, 1), &w->b[i], err));
	}
	if (moe) {
		const cloq_config *c = &m->cfg;
		char name[192];
		int64_t d0, d1;
		if (experts) {
			w->experts = cloq_calloc((size_t)3 * c->moe, sizeof *w->experts);
			CLOQ_FAIL_IF(!w->experts, err, CLOQ_EIO, "out of memory for %d experts", c->moe);
			w->n_experts = c->moe;
		}
		float **dst[8] = {&w->router, NULL, NULL, NULL, &w->shared[0], &w->shared[1], &w->shared[2], &w->shared_gate};
		for (int role = 0; role < (c->moe_shared_inter ? 8 : 4); role++)
			for (int e = 0; e < (role >= 1 && role <= 3 ? (experts ? c->moe : 0) : 1); e++) {
				moe_name(c, l, role, e, name, sizeof name, &d0, &d1);
				CLOQ_TRY(load_f32(m, cloq_st_find(m->st, name), role >= 1 && role <= 3 ? &w->experts[3 * e + role - 1]
										       : dst[role], err));
			}
	}
	return CLOQ_OK;
fail:
	cloq_layer_w_free(w);
	return rc;
}

int cloq_model_read_rows(cloq_model *m, const cloq_st_tensor *t, int64_t row0, int64_t n, float *dst, cloq_err *err)
{
	int64_t cols = t->shape[1];
	size_t es = cloq_dtype_size(t->dtype);
	size_t nb = (size_t)n * (size_t)cols * es;
	const char *path = cloq_st_file_path(m->st, (size_t)t->file);
	if (row0 < 0 || n < 0 || row0 + n > t->shape[0])
		return cloq_err_set(err, CLOQ_EUSAGE, "rows [%lld, %lld) outside tensor '%s'", (long long)row0,
				    (long long)(row0 + n), t->name);
	uint64_t off = t->offset + (uint64_t)row0 * (uint64_t)cols * es;
	int rc;
	if (t->dtype == CLOQ_DT_F32) {
		rc = cloq_pread_all(m->fds[t->file], dst, nb, off, path, err);
	} else {
		void *raw = cloq_malloc(nb);
		if (!raw)
			return cloq_err_set(err, CLOQ_EIO, "out of memory");
		rc = cloq_pread_all(m->fds[t->file], raw, nb, off, path, err);
		if (rc == CLOQ_OK)
			cloq_dtype_to_f32(t->dtype, raw, dst, (size_t)n * cols);
		cloq_free(raw);
	}
	return rc;
}

/* ---- cloq_lm over the original weights ----------------------------------------------------- */
static int lm_embed(void *ctx, const int32_t *ids, int T, float *x, cloq_err *err)
{
	cloq_model *m = ctx;
	for (int t = 0; t < T; t++) {
		int rc = cloq_model_read_rows(m, m->embed, ids[t], 1, x + (size_t)t * m->cfg.hidden, err);
		if (rc)
			return rc;
	}
	return CLOQ_OK;
}

static int load_layer(void *src, int l, cloq_layer_w *w, cloq_err *err)
{
	return cloq_model_load_layer(src, l, w, err);
}

static int lm_layer(void *ctx, int l, cloq_layer_w *w, cloq_err *err)
{
	cloq_model *m = ctx;
	return cloq_layer_cache_get(&m->cache, l, load_layer, m, w, err);
}

static int lm_head_rows(void *ctx, int row0, int nrows, float *dst, cloq_err *err)
{
	cloq_model *m = ctx;
	return cloq_model_read_rows(m, m->head, row0, nrows, dst, err);
}

void cloq_model_lm(cloq_model *m, cloq_lm *lm)
{
	lm->cfg = &m->cfg;
	lm->ctx = m;
	lm->embed = lm_embed;
	lm->layer = lm_layer;
	lm->head_rows = lm_head_rows;
	lm->final_norm = m->final_norm;
}
