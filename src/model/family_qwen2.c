/* family_qwen2.c - Qwen2ForCausalLM (Qwen2, Qwen2.5): Llama's layer with q/k/v biases (never o),
 * head_dim = hidden / heads; a sliding window only with use_sliding_window, on the layers >=
 * max_window_layers: the original flash-attention path's and transformers >= 4.53's layer_types
 * rule (4.51's eager mask windows every layer; published Qwen2/2.5 configs have it off). */
#include "cloq_family.h"

static const cloq_config_key keys[] = {
	{"use_sliding_window", CLOQ_KEY_IMPL, "turns sliding_window on"},
	{"max_window_layers", CLOQ_KEY_IMPL, "layers below it attend fully"},
	{"layer_types", CLOQ_KEY_IMPL, "transformers >= 4.54: per layer full or sliding attention"},
	{"use_mrope", CLOQ_KEY_IMPL, "Qwen2-VL's multimodal RoPE: must be false"},
	{NULL, 0, NULL},
};

static int parse(const cJSON *root, const char *path, cloq_config *cfg, cloq_err *err)
{
	int rc = CLOQ_OK, mrope;
	CLOQ_TRY(cloq_cfg_bool(root, "use_mrope", 0, &mrope, path, err));
	CLOQ_FAIL_IF(mrope, err, CLOQ_EINPUT,
		     "%s: field 'use_mrope' = true: multimodal RoPE (Qwen2-VL) is not implemented; refusing", path);
fail:
	return rc;
}

const cloq_family cloq_family_qwen2 = {
	.arch = CLOQ_ARCH_QWEN2,
	.arch_name = "Qwen2ForCausalLM",
	.model_type = "qwen2",
	.rms_eps = 1e-6,
	.kv_heads = 32, /* Qwen2Config's num_key_value_heads */
	.qkv_bias = 1,
	.window = CLOQ_WIN_QWEN,
	.keys = keys,
	.parse = parse,
};
