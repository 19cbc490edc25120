/* cloq_config.c - config.json parsing (see cloq_config.h). */
#include "cloq_config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cloq_sys.h"

static int get_int(const cJSON *root, const char *key, int required, int dflt, int *out,
		   const char *path, cloq_err *err)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
	if (!v || cJSON_IsNull(v)) {
		if (required)
			return cloq_err_set(err, CLOQ_EINPUT, "%s: required field '%s' is missing", path, key);
		*out = dflt;
		return CLOQ_OK;
	}
	if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
	    v->valuedouble > 1e9)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: field '%s' must be a non-negative integer", path, key);
	*out = (int)v->valuedouble;
	return CLOQ_OK;
}

static int get_num(const cJSON *root, const char *key, int required, double dflt, double *out,
		   const char *path, cloq_err *err)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
	if (!v || cJSON_IsNull(v)) {
		if (required)
			return cloq_err_set(err, CLOQ_EINPUT, "%s: required field '%s' is missing", path, key);
		*out = dflt;
		return CLOQ_OK;
	}
	if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
		return cloq_err_set(err, CLOQ_EINPUT, "%s: field '%s' must be a number", path, key);
	*out = v->valuedouble;
	return CLOQ_OK;
}

static int get_bool(const cJSON *root, const char *key, int dflt)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
	if (cJSON_IsBool(v))
		return cJSON_IsTrue(v);
	return dflt;
}

static int parse_rope_scaling(const cJSON *rs, const char *path, cloq_config *cfg, cloq_err *err)
{
	int rc = CLOQ_OK;
	if (!rs || cJSON_IsNull(rs))
		return CLOQ_OK;
	CLOQ_FAIL_IF(!cJSON_IsObject(rs), err, CLOQ_EINPUT, "%s: 'rope_scaling' must be an object or null", path);
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
	if (!cJSON_IsString(t))
		t = cJSON_GetObjectItemCaseSensitive(rs, "type");
	CLOQ_FAIL_IF(!cJSON_IsString(t), err, CLOQ_EINPUT, "%s: 'rope_scaling' has no 'rope_type'", path);
	CLOQ_TRY(get_num(rs, "factor", 0, 1.0, &cfg->rope_factor, path, err));
	if (!strcmp(t->valuestring, "default")) {
		cfg->rope_type = CLOQ_ROPE_DEFAULT;
	} else if (!strcmp(t->valuestring, "linear")) {
		cfg->rope_type = CLOQ_ROPE_LINEAR;
	} else if (!strcmp(t->valuestring, "llama3")) {
		cfg->rope_type = CLOQ_ROPE_LLAMA3;
		CLOQ_TRY(get_num(rs, "low_freq_factor", 1, 0, &cfg->rope_low_freq, path, err));
		CLOQ_TRY(get_num(rs, "high_freq_factor", 1, 0, &cfg->rope_high_freq, path, err));
		CLOQ_TRY(get_int(rs, "original_max_position_embeddings", 1, 0, &cfg->rope_orig_max_pos, path, err));
		CLOQ_FAIL_IF(cfg->rope_high_freq <= cfg->rope_low_freq || cfg->rope_orig_max_pos <= 0, err,
			     CLOQ_EINPUT, "%s: rope_scaling (llama3): need high_freq_factor > low_freq_factor "
			     "and original_max_position_embeddings > 0", path);
	} else {
		CLOQ_FAIL_IF(1, err, CLOQ_EINPUT,
			     "%s: rope_scaling type '%s' is not supported (supported: default, linear, llama3)",
			     path, t->valuestring);
	}
	CLOQ_FAIL_IF(cfg->rope_factor <= 0, err, CLOQ_EINPUT, "%s: rope_scaling.factor must be > 0", path);
fail:
	return rc;
}

int cloq_config_parse(const char *json, const char *path, cloq_config *cfg, cloq_err *err)
{
	int rc = CLOQ_OK;
	memset(cfg, 0, sizeof *cfg);
	cJSON *root = cJSON_Parse(json);
	if (!root) {
		const char *at = cJSON_GetErrorPtr();
		long off = at ? (long)(at - json) : -1;
		return cloq_err_set(err, CLOQ_EINPUT, "%s: invalid JSON near byte offset %ld", path, off);
	}
	CLOQ_FAIL_IF(!cJSON_IsObject(root), err, CLOQ_EINPUT, "%s: top level must be a JSON object", path);

	const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
	const cJSON *a0 = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
	const char *arch = cJSON_IsString(a0) ? a0->valuestring : NULL;
	if (!arch) {
		/* Some configs carry only model_type. */
		const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
		if (cJSON_IsString(mt)) {
			if (!strcmp(mt->valuestring, "llama"))
				arch = "LlamaForCausalLM";
			else if (!strcmp(mt->valuestring, "mistral"))
				arch = "MistralForCausalLM";
			else if (!strcmp(mt->valuestring, "qwen2"))
				arch = "Qwen2ForCausalLM";
		}
	}
	CLOQ_FAIL_IF(!arch, err, CLOQ_EINPUT, "%s: no 'architectures' (supported: %s)", path, CLOQ_SUPPORTED_ARCHS);
	if (!strcmp(arch, "LlamaForCausalLM"))
		cfg->arch = CLOQ_ARCH_LLAMA;
	else if (!strcmp(arch, "MistralForCausalLM"))
		cfg->arch = CLOQ_ARCH_MISTRAL;
	else if (!strcmp(arch, "Qwen2ForCausalLM"))
		cfg->arch = CLOQ_ARCH_QWEN2;
	else
		CLOQ_FAIL_IF(1, err, CLOQ_EINPUT, "%s: architecture '%s' is not supported (supported: %s)", path,
			     arch, CLOQ_SUPPORTED_ARCHS);
	snprintf(cfg->arch_name, sizeof cfg->arch_name, "%s", arch);

	CLOQ_TRY(get_int(root, "hidden_size", 1, 0, &cfg->hidden, path, err));
	CLOQ_TRY(get_int(root, "intermediate_size", 1, 0, &cfg->intermediate, path, err));
	CLOQ_TRY(get_int(root, "num_hidden_layers", 1, 0, &cfg->layers, path, err));
	CLOQ_TRY(get_int(root, "num_attention_heads", 1, 0, &cfg->heads, path, err));
	CLOQ_TRY(get_int(root, "vocab_size", 1, 0, &cfg->vocab, path, err));
	CLOQ_FAIL_IF(cfg->hidden <= 0 || cfg->intermediate <= 0 || cfg->layers <= 0 || cfg->heads <= 0 ||
		     cfg->vocab <= 0, err, CLOQ_EINPUT,
		     "%s: hidden_size, intermediate_size, num_hidden_layers, num_attention_heads and vocab_size must be > 0",
		     path);
	CLOQ_TRY(get_int(root, "num_key_value_heads", 0, cfg->heads, &cfg->kv_heads, path, err));
	CLOQ_FAIL_IF(cfg->kv_heads <= 0 || cfg->heads % cfg->kv_heads != 0, err, CLOQ_EINPUT,
		     "%s: num_attention_heads (%d) must be a multiple of num_key_value_heads (%d)", path,
		     cfg->heads, cfg->kv_heads);
	CLOQ_TRY(get_int(root, "head_dim", 0, cfg->hidden / cfg->heads, &cfg->head_dim, path, err));
	CLOQ_FAIL_IF(cfg->head_dim <= 0 || cfg->head_dim % 2 != 0, err, CLOQ_EINPUT,
		     "%s: head_dim %d must be positive and even (hidden_size %d / heads %d)", path,
		     cfg->head_dim, cfg->hidden, cfg->heads);
	CLOQ_TRY(get_int(root, "max_position_embeddings", 0, 2048, &cfg->max_pos, path, err));
	CLOQ_TRY(get_num(root, "rms_norm_eps", 0, 1e-6, &cfg->rms_eps, path, err));
	CLOQ_TRY(get_num(root, "rope_theta", 0, 10000.0, &cfg->rope_theta, path, err));
	CLOQ_FAIL_IF(cfg->rms_eps < 0 || cfg->rope_theta <= 0, err, CLOQ_EINPUT,
		     "%s: rms_norm_eps must be >= 0 and rope_theta > 0", path);
	cfg->rope_type = CLOQ_ROPE_DEFAULT;
	cfg->rope_factor = 1.0;
	CLOQ_TRY(parse_rope_scaling(cJSON_GetObjectItemCaseSensitive(root, "rope_scaling"), path, cfg, err));
	cfg->tie_embeddings = get_bool(root, "tie_word_embeddings", cfg->arch == CLOQ_ARCH_QWEN2 ? 0 : 0);
	int attn_bias = get_bool(root, "attention_bias", 0);
	cfg->qkv_bias = cfg->arch == CLOQ_ARCH_QWEN2 ? 1 : attn_bias;
	cfg->o_bias = cfg->arch == CLOQ_ARCH_QWEN2 ? 0 : attn_bias;
	cfg->mlp_bias = get_bool(root, "mlp_bias", 0);
	int bos, eos;
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
	CLOQ_TRY(get_int(root, "bos_token_id", 0, -1, &bos, path, err));
	if (cJSON_IsArray(e)) /* Llama 3.1 lists several; the first is the canonical one. */
		eos = cJSON_IsNumber(cJSON_GetArrayItem(e, 0)) ? (int)cJSON_GetArrayItem(e, 0)->valuedouble : -1;
	else
		CLOQ_TRY(get_int(root, "eos_token_id", 0, -1, &eos, path, err));
	cfg->bos_id = bos;
	cfg->eos_id = eos;
	const cJSON *dt = cJSON_GetObjectItemCaseSensitive(root, "torch_dtype");
	if (cJSON_IsString(dt))
		snprintf(cfg->torch_dtype, sizeof cfg->torch_dtype, "%s", dt->valuestring);
	const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
	CLOQ_FAIL_IF(cJSON_IsString(act) && strcmp(act->valuestring, "silu") != 0, err, CLOQ_EINPUT,
		     "%s: hidden_act '%s' is not supported (only silu)", path, act->valuestring);
fail:
	cJSON_Delete(root);
	return rc;
}

int cloq_config_load(const char *dir, cloq_config *cfg, cloq_err *err)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/config.json", dir);
	char *text = NULL;
	size_t n = 0;
	int rc = cloq_read_file(path, &text, &n, err);
	if (rc)
		return rc;
	rc = cloq_config_parse(text, path, cfg, err);
	cloq_free(text);
	return rc;
}

long long cloq_config_layer_params(const cloq_config *c)
{
	long long h = c->hidden, qd = (long long)c->heads * c->head_dim, kvd = (long long)c->kv_heads * c->head_dim;
	long long n = h * qd + 2 * h * kvd + qd * h + 3 * h * (long long)c->intermediate + 2 * h;
	if (c->qkv_bias)
		n += qd + 2 * kvd;
	if (c->o_bias)
		n += h;
	if (c->mlp_bias)
		n += 2LL * c->intermediate + h;
	return n;
}

long long cloq_config_total_params(const cloq_config *c)
{
	long long emb = (long long)c->vocab * c->hidden;
	return emb * (c->tie_embeddings ? 1 : 2) + c->layers * cloq_config_layer_params(c) + c->hidden;
}
