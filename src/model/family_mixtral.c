/* family_mixtral.c - MixtralForCausalLM (Mixtral 8x7B, 8x22B): Mistral's attention (its sliding
 * window on every layer) and, in every layer, a mixture of experts: router
 * block_sparse_moe.gate (E, hidden), experts block_sparse_moe.experts.e.w1 (gate), w3 (up), w2
 * (down) of width intermediate_size; each token's top-k experts by softmax probability, the
 * probabilities renormalised to sum 1. */
#include "cloq_family.h"

static const cloq_config_key keys[] = {
	{"num_local_experts", CLOQ_KEY_IMPL, "experts per layer (required: no default is assumed)"},
	{"num_experts_per_tok", CLOQ_KEY_IMPL, "the top-k experts each token goes to (required)"},
	{"router_aux_loss_coef", CLOQ_KEY_HARMLESS, "the load-balancing loss's weight, training only"},
	{"output_router_logits", CLOQ_KEY_HARMLESS, "what forward returns, not what it computes"},
	{"router_jitter_noise", CLOQ_KEY_HARMLESS, "noise on the router's input, training only"},
	{NULL, 0, NULL},
};

static int parse(const cJSON *root, const char *path, cloq_config *cfg, cloq_err *err)
{
	int rc = CLOQ_OK;
	CLOQ_TRY(cloq_cfg_int(root, "num_local_experts", 1, 0, &cfg->moe, path, err));
	CLOQ_TRY(cloq_cfg_int(root, "num_experts_per_tok", 1, 0, &cfg->moe_topk, path, err));
	cfg->moe_inter = cfg->intermediate;
	cfg->moe_norm_topk = 1;
	cfg->moe_mixtral_names = 1;
	CLOQ_TRY(cloq_moe_check(path, cfg, err));
fail:
	return rc;
}

const cloq_family cloq_family_mixtral = {
	.arch = CLOQ_ARCH_MIXTRAL,
	.arch_name = "MixtralForCausalLM",
	.model_type = "mixtral",
	.rms_eps = 1e-5, /* MixtralConfig's */
	.kv_heads = -1,
	.head_dim_free = 1,
	.window = CLOQ_WIN_EVERY_LAYER,
	.keys = keys,
	.parse = parse,
};
