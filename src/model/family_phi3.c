/* family_phi3.c - Phi3ForCausalLM (Phi-3-mini, Phi-4): Llama's layer with the projections fused,
 * self_attn.qkv_proj = [q; k; v] and mlp.gate_up_proj = [gate; up] (each quantized and calibrated
 * as the one linear PEFT targets), no biases, head_dim = hidden / heads, its sliding_window on
 * every layer. */
#include "cloq_family.h"

static const cloq_config_key keys[] = {
	{"attention_bias", CLOQ_KEY_IMPL, "must be false: Phi-3's projections have no biases"},
	{"partial_rotary_factor", CLOQ_KEY_IMPL, "RoPE on part of each head; only 1.0"},
	{"original_max_position_embeddings", CLOQ_KEY_IMPL, "longrope's switch point (longrope refused)"},
	{"auto_map", CLOQ_KEY_HARMLESS, "names the remote code that transformers' built-in Phi3ForCausalLM "
					"(the same math, upstreamed from it) replaces unless trust_remote_code"},
	{"embd_pdrop", CLOQ_KEY_HARMLESS, "dropout of the embeddings, off at inference"},
	{"resid_pdrop", CLOQ_KEY_HARMLESS, "dropout of the residual branches, off at inference"},
	{NULL, 0, NULL},
};

static int parse(const cJSON *root, const char *path, cloq_config *cfg, cloq_err *err)
{
	int rc = CLOQ_OK, omp;
	double prf;
	CLOQ_FAIL_IF(cfg->qkv_bias, err, CLOQ_EINPUT,
		     "%s: field 'attention_bias' = true: Phi3ForCausalLM's projections have no biases; refusing", path);
	CLOQ_TRY(cloq_cfg_num(root, "partial_rotary_factor", 0, 1.0, &prf, path, err));
	CLOQ_FAIL_IF(prf != 1.0, err, CLOQ_EINPUT,
		     "%s: field 'partial_rotary_factor' = %g: RoPE on part of each head (Phi-4-mini) is not "
		     "implemented; refusing rather than computing a different model", path, prf);
	CLOQ_TRY(cloq_cfg_int(root, "original_max_position_embeddings", 0, cfg->max_pos, &omp, path, err));
fail:
	return rc;
}

const cloq_family cloq_family_phi3 = {
	.arch = CLOQ_ARCH_PHI3,
	.arch_name = "Phi3ForCausalLM",
	.model_type = "phi3",
	.rms_eps = 1e-5, /* Phi3Config's */
	.fused = 1,
	.window = CLOQ_WIN_EVERY_LAYER,
	.keys = keys,
	.parse = parse,
};
