/* family_qwen3_moe.c - Qwen3MoeForCausalLM (Qwen3-30B-A3B, Qwen3-235B-A22B): Qwen3's attention (q/k
 * norms, head_dim of its own) and Qwen2-MoE's sparse layers without the shared expert. */
#include "cloq_family.h"

static const cloq_config_key keys[] = {
	{"attention_bias", CLOQ_KEY_IMPL, "q/k/v/o biases"},
	{"use_sliding_window", CLOQ_KEY_IMPL, "turns sliding_window on"},
	{"max_window_layers", CLOQ_KEY_IMPL, "layers below it attend fully"},
	{"layer_types", CLOQ_KEY_IMPL, "transformers >= 4.54: per layer full or sliding attention"},
	{"num_experts", CLOQ_KEY_IMPL, "experts per sparse layer (required)"},
	{"num_experts_per_tok", CLOQ_KEY_IMPL, "the top-k experts each token goes to (required)"},
	{"moe_intermediate_size", CLOQ_KEY_IMPL, "expert width (required)"},
	{"norm_topk_prob", CLOQ_KEY_IMPL, "renormalise the top-k weights (default false)"},
	{"decoder_sparse_step", CLOQ_KEY_IMPL, "layer l is sparse when (l + 1) % step == 0 (default 1)"},
	{"mlp_only_layers", CLOQ_KEY_IMPL, "layers with a dense MLP"},
	{"router_aux_loss_coef", CLOQ_KEY_HARMLESS, "the load-balancing loss's weight, training only"},
	{"output_router_logits", CLOQ_KEY_HARMLESS, "what forward returns, not what it computes"},
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
	.parse = cloq_qwen_moe_parse,
};
