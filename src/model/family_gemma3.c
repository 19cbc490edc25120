/* family_gemma3.c - Gemma3ForCausalLM (the text model, e.g. Gemma-3-1B): Gemma 2's layer without
 * soft-capping, q/k norms (1 + w), sliding-window attention on every layer but each
 * sliding_window_pattern-th, those local layers with a RoPE base of their own
 * (rope_local_base_freq, unscaled). */
#include "cloq_family.h"

static const cloq_config_key keys[] = {
	{"attention_bias", CLOQ_KEY_IMPL, "q/k/v/o biases"},
	{"hidden_activation", CLOQ_KEY_IMPL, "gelu_pytorch_tanh only"},
	{"query_pre_attn_scalar", CLOQ_KEY_IMPL, "scores scaled by its -1/2 power"},
	{"attn_logit_softcapping", CLOQ_KEY_IMPL, "must be null: Gemma 3's attention ignores it"},
	{"final_logit_softcapping", CLOQ_KEY_IMPL, "logits soft-capped"},
	{"cache_implementation", CLOQ_KEY_HARMLESS, "the KV cache kind at generation"},
	{"layer_types", CLOQ_KEY_IMPL, "transformers >= 4.53: per layer full or sliding attention"},
	{"rope_local_base_freq", CLOQ_KEY_IMPL, "RoPE base of the sliding layers"},
	{"sliding_window_pattern", CLOQ_KEY_IMPL, "every pattern-th layer is global"},
	{"use_bidirectional_attention", CLOQ_KEY_IMPL, "embedding models: must be false"},
	{NULL, 0, NULL},
};

static int parse(const cJSON *root, const char *path, cloq_config *cfg, cloq_err *err)
{
	int rc = CLOQ_OK, bidir;
	CLOQ_TRY(cloq_gemma_parse_common(root, path, cfg, 0.0, 0.0, err)); /* Gemma3TextConfig: no caps */
	/* transformers' Gemma3Attention passes no soft-cap to its attention: a value would be ignored
	 * there and applied here */
	CLOQ_FAIL_IF(cfg->attn_softcap > 0, err, CLOQ_EINPUT,
		     "%s: field 'attn_logit_softcapping' = %g: Gemma 3's attention ignores it in transformers; "
		     "refusing rather than guessing which model is meant", path, cfg->attn_softcap);
	CLOQ_TRY(cloq_cfg_bool(root, "use_bidirectional_attention", 0, &bidir, path, err));
	CLOQ_FAIL_IF(bidir, err, CLOQ_EINPUT, "%s: field 'use_bidirectional_attention' = true: a bidirectional "
		     "(embedding) model, not a causal LM; refusing", path);
	CLOQ_TRY(cloq_cfg_num(root, "rope_local_base_freq", 0, 10000.0, &cfg->rope_local_theta, path, err));
	CLOQ_FAIL_IF(!(cfg->rope_local_theta > 0), err, CLOQ_EINPUT, "%s: field 'rope_local_base_freq' must be > 0",
		     path);
fail:
	return rc;
}

const cloq_family cloq_family_gemma3 = {
	.arch = CLOQ_ARCH_GEMMA3,
	.arch_name = "Gemma3ForCausalLM",
	.model_type = "gemma3_text",
	.rms_eps = 1e-6,
	.tie_embeddings = 1,
	.kv_heads = -1, /* Gemma3TextConfig's 4 is no real checkpoint's */
	.head_dim_free = 1,
	.qk_norm = 1,
	.gemma_norms = 1,
	.window = CLOQ_WIN_PATTERN,
	.rope_types = (1u << CLOQ_ROPE_LINEAR) | (1u << CLOQ_ROPE_DYNAMIC) | (1u << CLOQ_ROPE_LLAMA3),
	.keys = keys,
	.parse = parse,
};
