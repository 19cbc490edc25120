/* family_qwen2_moe.c - Qwen2MoeForCausalLM (Qwen1.5-MoE, Qwen2-57B-A14B): Qwen2's attention (q/k/v
 * biases) and, in the sparse layers, a router mlp.gate (E, hidden), experts
 * mlp.experts.e.{gate,up,down}_proj of width moe_intermediate_size, the top-k weights renormalised
 * only with norm_topk_prob, plus a shared expert mlp.shared_expert.* scaled by
 * sigmoid(mlp.shared_expert_gate (1, hidden) . x). A layer is sparse unless it is in
 * mlp_only_layers or (l + 1) % decoder_sparse_step != 0; then it has Qwen2's MLP. Also the rule
 * Qwen3-MoE shares (cloq_qwen_moe_parse). */
#include "cloq_family.h"

#include <string.h>

/* the keys cloq_qwen_moe_parse reads (and the router's training-only ones) */
const cloq_config_key cloq_qwen_moe_keys[] = {
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

static const cloq_config_key keys[] = {
	{"shared_expert_intermediate_size", CLOQ_KEY_IMPL, "the shared expert's width (required)"},
	{NULL, 0, NULL},
};

int cloq_qwen_moe_parse(const cJSON *root, const char *path, cloq_config *cfg, cloq_err *err)
{
	int rc = CLOQ_OK, step, use;
	/* which layers slide differs by release here (4.44: none, 4.51 eager: every layer, the flash
	 * path and later configs: others again), and no published MoE config turns it on */
	CLOQ_TRY(cloq_cfg_bool(root, "use_sliding_window", 0, &use, path, err));
	CLOQ_FAIL_IF(use, err, CLOQ_EINPUT,
		     "%s: field 'use_sliding_window' = true on %s: transformers releases window different layers "
		     "of this family, so the model is ambiguous; refusing", path, cfg->arch_name);
	CLOQ_TRY(cloq_cfg_int(root, "num_experts", 1, 0, &cfg->moe, path, err));
	CLOQ_TRY(cloq_cfg_int(root, "num_experts_per_tok", 1, 0, &cfg->moe_topk, path, err));
	CLOQ_TRY(cloq_cfg_int(root, "moe_intermediate_size", 1, 0, &cfg->moe_inter, path, err));
	CLOQ_TRY(cloq_cfg_bool(root, "norm_topk_prob", 0, &cfg->moe_norm_topk, path, err));
	CLOQ_TRY(cloq_cfg_int(root, "decoder_sparse_step", 0, 1, &step, path, err));
	CLOQ_FAIL_IF(step < 1, err, CLOQ_EINPUT, "%s: field 'decoder_sparse_step' = %d must be >= 1", path, step);
	for (int l = 0; l < cfg->layers; l++) /* layers <= CLOQ_MAX_LAYERS: checked with the window rule */
		cfg->layer_dense[l] = (l + 1) % step != 0;
	const cJSON *only = cJSON_GetObjectItemCaseSensitive(root, "mlp_only_layers");
	if (only && !cJSON_IsNull(only)) {
		CLOQ_FAIL_IF(!cJSON_IsArray(only), err, CLOQ_EINPUT, "%s: field 'mlp_only_layers' must be a list of layers",
			     path);
		for (const cJSON *e = only->child; e; e = e->next) {
			CLOQ_FAIL_IF(!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= cfg->layers ||
					     e->valuedouble != (int)e->valuedouble,
				     err, CLOQ_EINPUT, "%s: field 'mlp_only_layers' holds %g, not a layer of %d", path,
				     cJSON_IsNumber(e) ? e->valuedouble : -1.0, cfg->layers);
			cfg->layer_dense[(int)e->valuedouble] = 1;
		}
	}
	CLOQ_TRY(cloq_moe_check(path, cfg, err));
fail:
	return rc;
}

static int parse(const cJSON *root, const char *path, cloq_config *cfg, cloq_err *err)
{
	int rc = CLOQ_OK;
	CLOQ_TRY(cloq_qwen_moe_parse(root, path, cfg, err));
	CLOQ_TRY(cloq_cfg_int(root, "shared_expert_intermediate_size", 1, 0, &cfg->moe_shared_inter, path, err));
	CLOQ_FAIL_IF(cfg->moe_shared_inter < 1, err, CLOQ_EINPUT,
		     "%s: field 'shared_expert_intermediate_size' must be >= 1", path);
fail:
	return rc;
}

const cloq_family cloq_family_qwen2_moe = {
	.arch = CLOQ_ARCH_QWEN2_MOE,
	.arch_name = "Qwen2MoeForCausalLM",
	.model_type = "qwen2_moe",
	.rms_eps = 1e-6,
	.kv_heads = -1,
	.qkv_bias = 1,
	.window = CLOQ_WIN_QWEN,
	.rule_keys = cloq_qwen_moe_keys,
	.keys = keys,
	.parse = parse,
};
