/* family_qwen3.c - Qwen3ForCausalLM: per-head RMSNorm of q and k (self_attn.q_norm / k_norm) before
 * RoPE, a head_dim of its own, attention_bias; sliding windows as Qwen2's. */
#include "cloq_family.h"

static const cloq_config_key keys[] = {
	{"attention_bias", CLOQ_KEY_IMPL, "q/k/v/o biases"},
	{"use_sliding_window", CLOQ_KEY_IMPL, "turns sliding_window on"},
	{"max_window_layers", CLOQ_KEY_IMPL, "layers below it attend fully"},
	{"layer_types", CLOQ_KEY_IMPL, "transformers >= 4.54: per layer full or sliding attention"},
	{NULL, 0, NULL},
};

const cloq_family cloq_family_qwen3 = {
	.arch = CLOQ_ARCH_QWEN3,
	.arch_name = "Qwen3ForCausalLM",
	.model_type = "qwen3",
	.rms_eps = 1e-6,
	.kv_heads = 32, /* Qwen3Config's num_key_value_heads */
	.head_dim_free = 1,
	.qk_norm = 1,
	.window = CLOQ_WIN_QWEN,
	.rope_types = (1u << CLOQ_ROPE_LINEAR) | (1u << CLOQ_ROPE_DYNAMIC) | (1u << CLOQ_ROPE_LLAMA3),
	.keys = keys,
};
