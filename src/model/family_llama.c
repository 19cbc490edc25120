/* family_llama.c - LlamaForCausalLM (Llama 1/2/3/3.1/3.2): the reference layer, with optional
 * attention and MLP biases and transformers' tensor-parallel slicing switch. */
#include "cloq_family.h"

static const cloq_config_key keys[] = {
	{"attention_bias", CLOQ_KEY_IMPL, "q/k/v/o biases"},
	{"mlp_bias", CLOQ_KEY_IMPL, "gate/up/down biases"},
	{"pretraining_tp", CLOQ_KEY_IMPL, "sliced matmuls, same math; refused with biases, which it drops"},
	{NULL, 0, NULL},
};

/* pretraining_tp > 1: transformers' Llama splits each projection into tp slices and concatenates
 * (q/k/v, gate/up) or sums (o, down) the partial products: the same matrix product in another
 * summation order, so cloq computes it as one matmul. But that path calls F.linear without the
 * biases: with attention_bias or mlp_bias the checkpoint's own forward drops them, and cloq would
 * not; refused. */
static int parse(const cJSON *root, const char *path, cloq_config *cfg, cloq_err *err)
{
	int rc = CLOQ_OK, tp;
	CLOQ_TRY(cloq_cfg_bool(root, "mlp_bias", 0, &cfg->mlp_bias, path, err));
	CLOQ_TRY(cloq_cfg_int(root, "pretraining_tp", 0, 1, &tp, path, err));
	CLOQ_FAIL_IF(tp < 1, err, CLOQ_EINPUT, "%s: field 'pretraining_tp' = %d must be >= 1", path, tp);
	CLOQ_FAIL_IF(tp > 1 && (cfg->qkv_bias || cfg->mlp_bias), err, CLOQ_EINPUT,
		     "%s: field 'pretraining_tp' = %d with attention_bias/mlp_bias: transformers' sliced forward "
		     "ignores the biases there, cloq would apply them; refusing rather than computing a different model",
		     path, tp);
fail:
	return rc;
}

const cloq_family cloq_family_llama = {
	.arch = CLOQ_ARCH_LLAMA,
	.arch_name = "LlamaForCausalLM",
	.model_type = "llama",
	.rms_eps = 1e-6,
	.head_dim_free = 1,
	.window = CLOQ_WIN_NONE_REFUSE,
	.rope_types = (1u << CLOQ_ROPE_LINEAR) | (1u << CLOQ_ROPE_DYNAMIC) | (1u << CLOQ_ROPE_LLAMA3),
	.keys = keys,
	.parse = parse,
};
