/* family_gemma2.c - Gemma2ForCausalLM: four norms a layer stored around 0 and applied as 1 + w (the
 * attention and MLP outputs normalised before their residuals), gelu-tanh MLP, scores scaled by
 * query_pre_attn_scalar^-1/2 and soft-capped, final logits soft-capped, embeddings times
 * sqrt(hidden) in the model's dtype, a sliding window (4096) on the even layers. Also the fields
 * Gemma 3 shares (cloq_gemma_parse_common). */
#include "cloq_family.h"

#include <math.h>
#include <string.h>

#include "cloq_dtype.h"

static const cloq_config_key keys[] = {
	{"attention_bias", CLOQ_KEY_IMPL, "q/k/v/o biases"},
	{"hidden_activation", CLOQ_KEY_IMPL, "gelu_pytorch_tanh only"},
	{"query_pre_attn_scalar", CLOQ_KEY_IMPL, "scores scaled by its -1/2 power"},
	{"attn_logit_softcapping", CLOQ_KEY_IMPL, "scores soft-capped, cap tanh(s / cap)"},
	{"final_logit_softcapping", CLOQ_KEY_IMPL, "logits soft-capped"},
	{"cache_implementation", CLOQ_KEY_HARMLESS, "the KV cache kind at generation"},
	{"layer_types", CLOQ_KEY_IMPL, "transformers >= 4.54: per layer full or sliding attention"},
	{"sliding_window_size", CLOQ_KEY_IMPL, "the release configs' old name transformers never reads; "
					       "must equal sliding_window"},
	{NULL, 0, NULL},
};

int cloq_gemma_parse_common(const cJSON *root, const char *path, cloq_config *cfg, double cap_attn, double cap_final,
			    cloq_err *err)
{
	int rc = CLOQ_OK;
	double qpas;
	/* no default: transformers' changed (224, then 256), so an absent key is ambiguous */
	CLOQ_FAIL_IF(!cJSON_GetObjectItemCaseSensitive(root, "query_pre_attn_scalar"), err, CLOQ_EINPUT,
		     "%s: Gemma without 'query_pre_attn_scalar': transformers' default changed between "
		     "releases (224, 256), so the attention's scale is ambiguous; refusing", path);
	CLOQ_TRY(cloq_cfg_num(root, "query_pre_attn_scalar", 1, 256.0, &qpas, path, err));
	CLOQ_FAIL_IF(!(qpas > 0), err, CLOQ_EINPUT, "%s: field 'query_pre_attn_scalar' must be > 0", path);
	cfg->attn_scale = 1.0 / sqrt(qpas);
	/* null turns a cap off; absent takes the config class's default */
	const char *caps[2] = {"attn_logit_softcapping", "final_logit_softcapping"};
	double *dst[2] = {&cfg->attn_softcap, &cfg->final_softcap}, dflt[2] = {cap_attn, cap_final};
	for (int k = 0; k < 2; k++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, caps[k]);
		if (v && cJSON_IsNull(v))
			*dst[k] = 0.0;
		else
			CLOQ_TRY(cloq_cfg_num(root, caps[k], 0, dflt[k], dst[k], path, err));
		CLOQ_FAIL_IF(*dst[k] < 0, err, CLOQ_EINPUT, "%s: field '%s' must be > 0 or null", path, caps[k]);
	}
	const cJSON *ha = cJSON_GetObjectItemCaseSensitive(root, "hidden_activation");
	CLOQ_FAIL_IF(ha && (!cJSON_IsString(ha) || strcmp(ha->valuestring, "gelu_pytorch_tanh")), err, CLOQ_EINPUT,
		     "%s: field 'hidden_activation' = %s: Gemma's MLP is implemented with gelu_pytorch_tanh only; "
		     "refusing rather than computing a different model",
		     path, cJSON_IsString(ha) ? ha->valuestring : "(not a string)");
	/* the embedding is scaled by sqrt(hidden) as a tensor of the model's dtype */
	const cJSON *tdt = cJSON_GetObjectItemCaseSensitive(root, "torch_dtype");
	const char *td = cJSON_IsString(tdt) ? tdt->valuestring : "";
	float sq = (float)sqrt((double)cfg->hidden);
	if (!strcmp(td, "bfloat16"))
		sq = cloq_bf16_to_f32_ref(cloq_f32_to_bf16_ref(sq));
	else if (!strcmp(td, "float16"))
		sq = cloq_f16_to_f32_ref(cloq_f32_to_f16_ref(sq));
	cfg->embed_scale = sq;
fail:
	return rc;
}

static int parse(const cJSON *root, const char *path, cloq_config *cfg, cloq_err *err)
{
	int rc = CLOQ_OK;
	CLOQ_TRY(cloq_gemma_parse_common(root, path, cfg, 50.0, 30.0, err)); /* Gemma2Config's caps */
	if (cJSON_GetObjectItemCaseSensitive(root, "sliding_window_size")) {
		int old, w;
		CLOQ_TRY(cloq_cfg_int(root, "sliding_window_size", 1, 0, &old, path, err));
		CLOQ_TRY(cloq_cfg_int(root, "sliding_window", 0, 4096, &w, path, err));
		CLOQ_FAIL_IF(old != w, err, CLOQ_EINPUT,
			     "%s: field 'sliding_window_size' = %d but 'sliding_window' = %d: transformers reads only "
			     "sliding_window, so which window the checkpoint was trained with is ambiguous; refusing",
			     path, old, w);
	}
fail:
	return rc;
}

const cloq_family cloq_family_gemma2 = {
	.arch = CLOQ_ARCH_GEMMA2,
	.arch_name = "Gemma2ForCausalLM",
	.model_type = "gemma2",
	.rms_eps = 1e-6,
	.tie_embeddings = 1,
	.kv_heads = -1, /* Gemma2Config's default changed between releases */
	.head_dim_free = 1,
	.gemma_norms = 1,
	.window = CLOQ_WIN_EVEN_LAYERS,
	.keys = keys,
	.parse = parse,
};
