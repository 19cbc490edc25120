/* family_qwen3_moe.c - Qwen3MoeForCausalLM (Qwen3-30B-A3B, Qwen3-235B-A22B): Qwen3's attention (q/k
 * norms, head_dim of its own) and Qwen2-MoE's sparse layers without the shared expert. */
#include "cloq_family.h"

static const cloq_config_key keys[] = {
	{"attention_bias", CLOQ_KEY_IMPL, "q/k/v/o biases"},
	{NULL, 0, NULL},
};

const cloq_family cloq_family_qwen3_moe = {
	.arch = CLOQ_ARCH_QWEN3_MOE,
	.arch_name = "Qwen3MoeForCausalLM",
	.model_type = "qwen3_moe",
	.rms_eps = 1e-6,
	.kv_heads = -1,
	.head_dim_free = 1,
	.qk_norm = 1,
	.window = CLOQ_WIN_QWEN,
	.rope_types = (1u << CLOQ_ROPE_LINEAR) | (1u << CLOQ_ROPE_DYNAMIC) | (1u << CLOQ_ROPE_LLAMA3),
	.keys = keys,
	.rule_keys = cloq_qwen_moe_keys,
	.parse = cloq_qwen_moe_parse,
};
