/* family_mistral.c - MistralForCausalLM (Mistral 7B v0.1/v0.3, ...): Llama's layer without biases;
 * MistralConfig's sliding_window (v0.1: 4096, v0.3: null) applies to every layer. */
#include "cloq_family.h"

static const cloq_config_key keys[] = {
	{NULL, 0, NULL},
};

const cloq_family cloq_family_mistral = {
	.arch = CLOQ_ARCH_MISTRAL,
	.arch_name = "MistralForCausalLM",
	.model_type = "mistral",
	.rms_eps = 1e-6,
	.kv_heads = 8, /* MistralConfig's num_key_value_heads */
	.head_dim_free = 1,
	.window = CLOQ_WIN_EVERY_LAYER,
	.keys = keys,
};
