/* cloq_outmodel.c - a conversion job read back as a model (see cloq_outmodel.h). */
#include "cloq_outmodel.h"

#include <stdio.h>
#include <string.h>

#include "cloq_dtype.h"
#include "cloq_convert.h"
#include "cloq_layerstore.h"
#include "cloq_shard.h"
#include "cloq_sys.h"

static int read_base_tensor(cloq_shard *s, const char *path, const char *name, size_t nelem, float **dst,
			    int required, cloq_err *err)
{
	*dst = NULL;
	size_t i, cnt = cloq_shard_count(s);
	for (i = 0; i < cnt; i++)
		if (!strcmp(cloq_shard_name(s, i), name))
			break;
	if (i == cnt)
		return required ? cloq_err_set(err, CLOQ_EINPUT, "%s: no tensor '%s'", path, name) : CLOQ_OK;
	int dt = cloq_shard_dtype(s, i);
	size_t es = dt == CLOQ_SHARD_F32 ? 4 : 2;
	if (cloq_shard_nbytes(s, i) != nelem * es || (dt != CLOQ_SHARD_F32 && dt != CLOQ_SHARD_F16 && dt != CLOQ_SHARD_BF16))
		return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s' has an unexpected size or dtype", path, name);
	float *out = cloq_malloc(nelem * sizeof(float));
	void *raw = es == 4 ? (void *)out : cloq_malloc(nelem * es);
	if (!out || !raw) {
		cloq_free(out);
		return cloq_err_set(err, CLOQ_EIO, "out of memory reading '%s'", name);
	}
	int rc = cloq_shard_read(s, i, raw, nelem * es, err);
	if (rc == CLOQ_OK && es == 2)
		cloq_dtype_to_f32(dt == CLOQ_SHARD_F16 ? CLOQ_DT_F16 : CLOQ_DT_BF16, raw, out, nelem);
	if (es == 2)
		cloq_free(raw);
	if (rc) {
		cloq_free(out);
		return rc;
	}
	*dst = out;
	return CLOQ_OK;
}

int cloq_outmodel_open(const char *out, int with_lora, const char *what, cloq_outmodel **mo, cloq_err *err)
{
	int rc = CLOQ_OK;
	char path[4096];
	cloq_shard *s = NULL;
	cloq_outmodel *m = cloq_calloc(1, sizeof *m);
	CLOQ_FAIL_IF(!m, err, CLOQ_EIO, "out of memory");
	m->job.lock.fd = -1;
	cloq_layer_cache_init(&m->tlm.cache);
	m->with_lora = with_lora;
	m->dir = cloq_strdup(out);
	CLOQ_FAIL_IF(!m->dir, err, CLOQ_EIO, "out of memory");
	CLOQ_TRY(cloq_job_open_read(out, what, CLOQ_JOB_FINISHED | CLOQ_JOB_HASHES, &m->job, err));
	const cloq_journal *j = &m->job.j;
	snprintf(path, sizeof path, "%s/model", out);
	CLOQ_TRY(cloq_config_load(path, &m->cfg, err));
	CLOQ_FAIL_IF(j->nlayers != m->cfg.layers, err, CLOQ_EINPUT, "%s: journal has %d layers, config %d", out, j->nlayers,
		     m->cfg.layers);
	const cJSON *st = j->settings;
	snprintf(path, sizeof path, "%s/journal.json", out);
	/* an impossible or missing setting: exit 2 naming it, as resume says */
	CLOQ_TRY(cloq_convert_settings_qform(st, path, &m->qf, err));
	const cJSON *bits = cJSON_GetObjectItemCaseSensitive(st, "bits");
	const cJSON *gs = cJSON_GetObjectItemCaseSensitive(st, "group_size");
	const cJSON *rank = cJSON_GetObjectItemCaseSensitive(st, "rank");
	const cJSON *alpha = cJSON_GetObjectItemCaseSensitive(st, "lora_alpha");
	m->bits = bits->valueint;
	m->group_size = gs->valueint;
	m->rank = rank->valueint;
	m->scaling = alpha->valuedouble / m->rank;
	snprintf(path, sizeof path, "%s/shards/base.cloqshard", out);
	CLOQ_TRY(cloq_shard_open(path, &s, err));
	size_t vh = (size_t)m->cfg.vocab * m->cfg.hidden;
	CLOQ_TRY(read_base_tensor(s, path, "model.embed_tokens.weight", vh, &m->embed, 1, err));
	CLOQ_TRY(read_base_tensor(s, path, "model.norm.weight", (size_t)m->cfg.hidden, &m->final_norm, 1, err));
	CLOQ_TRY(read_base_tensor(s, path, "lm_head.weight", vh, &m->head, 0, err));
	if (!m->head)
		m->head = m->embed;
	cloq_shard_close(s);
	*mo = m;
	return CLOQ_OK;
fail:
	cloq_shard_close(s);
	cloq_outmodel_close(m);
	return rc;
}

void cloq_outmodel_close(cloq_outmodel *m)
{
	if (!m)
		return;
	if (m->head != m->embed)
		cloq_free(m->head);
	cloq_free(m->embed);
	cloq_free(m->final_norm);
	cloq_layer_cache_release(&m->tlm.cache);
	cloq_job_close_read(&m->job);
	cloq_free(m->dir);
	cloq_free(m);
}

int cloq_outmodel_load_layer(const cloq_outmodel *m, int l, cloq_layer_w *w, cloq_err *err)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/shards/layer_%05d.cloqshard", m->dir, l);
	int rc = cloq_layer_load_shard(path, &m->cfg, l, &m->qf, m->with_lora ? 1 : 0, m->scaling, NULL, w, err);
	if (rc == CLOQ_OK && cloq_layer_is_moe(&m->cfg, l)) { /* the forward needs every expert */
		rc = cloq_layer_load_experts(path, &m->cfg, l, &m->qf, m->with_lora ? 1 : 0, m->scaling, w, err);
		if (rc)
			cloq_layer_w_free(w);
	}
	return rc;
}

static int load_layer(void *src, int l, cloq_layer_w *w, cloq_err *err)
{
	return cloq_outmodel_load_layer(src, l, w, err);
}

void cloq_outmodel_lm(cloq_outmodel *m, cloq_lm *lm)
{
	cloq_table_lm_bind(&m->tlm, &m->cfg, m->embed, m->head, m->final_norm, load_layer, m, lm);
}
