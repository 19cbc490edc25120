/* family_phi3.c - Phi3ForCausalLM (Phi-3-mini, Phi-4): Llama's layer with the projections fused,
 * self_attn.qkv_proj = [q; k; v] and mlp.gate_up_proj = [gate; up] (each quantized and calibrated
 * as the one linear PEFT targets), no biases, head_dim = hidden / heads, its sliding_window on
 * every layer. */
#include "cloq_family.h"

#include <math.h>

static const cloq_config_key keys[] = {
	{"attention_bias", CLOQ_KEY_IMPL, "must be false: Phi-3's projections have no biases"},
	{"partial_rotary_factor", CLOQ_KEY_IMPL, "RoPE on the leading int(head_dim * f) dims of each head"},
	{"original_max_position_embeddings", CLOQ_KEY_IMPL, "longrope: its switch point and attention factor"},
	{"auto_map", CLOQ_KEY_HARMLESS, "names the remote code that transformers' built-in Phi3ForCausalLM "
					"(the same math, upstreamed from it) replaces unless trust_remote_code"},
	{"embd_pdrop", CLOQ_KEY_HARMLESS, "dropout of the embeddings, off at inference"},
	{"resid_pdrop", CLOQ_KEY_HARMLESS, "dropout of the residual branches, off at inference"},
	{NULL, 0, NULL},
};

/* partial_rotary_factor (Phi-4-mini: 0.75): RoPE rotates the first int(head_dim * f) dims of each
 * head (its frequencies over that many dims), the rest pass unrotated, as transformers >= 4.49's
 * Phi-3 attention (Phi-4-mini's card requires 4.49). longrope: its attention factor from
 * max_position_embeddings / original_max_position_embeddings (Phi3Config's default 4096). */
static int parse(const cJSON *root, const char *path, cloq_config *cfg, cloq_err *err)
{
	int rc = CLOQ_OK, omp;
	double prf;
	CLOQ_FAIL_IF(cfg->qkv_bias, err, CLOQ_EINPUT,
		     "%s: field 'attention_bias' = true: Phi3ForCausalLM's projections have no biases; refusing", path);
	CLOQ_TRY(cloq_cfg_num(root, "partial_rotary_factor", 0, 1.0, &prf, path, err));
	CLOQ_FAIL_IF(!(prf > 0 && prf <= 1), err, CLOQ_EINPUT, "%s: field 'partial_rotary_factor' = %g must be in (0, 1]",
		     path, prf);
	cfg->rotary_dim = (int)(cfg->head_dim * prf);
	CLOQ_FAIL_IF(cfg->rotary_dim < 2 || cfg->rotary_dim % 2, err, CLOQ_EINPUT,
		     "%s: field 'partial_rotary_factor' = %g gives %d rotary dims of head_dim %d; need an even number", path,
		     prf, cfg->rotary_dim, cfg->head_dim);
	CLOQ_TRY(cloq_cfg_int(root, "original_max_position_embeddings", 0, 4096, &omp, path, err));
	if (cfg->rope_type == CLOQ_ROPE_LONGROPE) {
		CLOQ_FAIL_IF(cfg->rope_nfactors != cfg->rotary_dim / 2, err, CLOQ_EINPUT,
			     "%s: rope_scaling (longrope) has %d short/long factors; the %d rotary dims need %d", path,
			     cfg->rope_nfactors, cfg->rotary_dim, cfg->rotary_dim / 2);
		CLOQ_FAIL_IF(omp < 2, err, CLOQ_EINPUT, "%s: field 'original_max_position_embeddings' = %d", path, omp);
		const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
		const cJSON *inner = cJSON_GetObjectItemCaseSensitive(rs, "original_max_position_embeddings");
		CLOQ_FAIL_IF(inner && (!cJSON_IsNumber(inner) || inner->valuedouble != omp), err, CLOQ_EINPUT,
			     "%s: rope_scaling.original_max_position_embeddings differs from the top-level %d (Phi-3 reads "
			     "the top-level one, later releases may read the other); refusing", path, omp);
		cfg->rope_orig_max_pos = omp;
		double s = (double)cfg->max_pos / omp;
		cfg->rope_attn_factor = s <= 1.0 ? 1.0 : sqrt(1.0 + log(s) / log((double)omp));
	}
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
	.rope_types = 1u << CLOQ_ROPE_LONGROPE,
	.keys = keys,
	.parse = parse,
};
