/*
 * cloq_family.h - what a model family is, declared once.
 *
 * Each supported architecture is one small file, src/model/family_<name>.c, holding one
 * cloq_family: its names (architecture, model_type), its transformers config class's defaults, the
 * shape of its decoder layer (biases, q/k norms, Gemma's norms, fused projections), where its
 * sliding window applies, the config.json keys its class adds to the shared ones (each implemented
 * or harmless, with the reason), and a hook for the fields only it has. cloq_config_parse reads the
 * description into a cloq_config; the forward (cloq_llama.c), the loader (cloq_model.c), the
 * planner and the exporter read only the cloq_config. Adding a family is adding a file here, its
 * line in cloq_families.c, and its tests (tests/e2e/<family>.sh, tests/tools/mkmodel.c --family).
 */
#ifndef CLOQ_FAMILY_H
#define CLOQ_FAMILY_H

#include <cjson/cJSON.h>

#include "cloq_config.h"
#include "cloq_error.h"

/* A config.json key: implemented (parsed; values cloq cannot compute are refused by name) or
 * harmless (no effect on a causal LM's forward at inference). */
enum cloq_key_kind { CLOQ_KEY_IMPL, CLOQ_KEY_HARMLESS };
typedef struct cloq_config_key {
	const char *name;
	enum cloq_key_kind kind;
	const char *why;
} cloq_config_key;

/* Which layers a sliding_window applies to. */
enum cloq_window_rule {
	CLOQ_WIN_NONE_REFUSE,     /* the class has no window: a config with one is refused when active */
	CLOQ_WIN_EVERY_LAYER,     /* Mistral, Phi-3: every layer whenever sliding_window is set */
	CLOQ_WIN_QWEN,            /* with use_sliding_window, the layers >= max_window_layers */
	CLOQ_WIN_EVEN_LAYERS,     /* Gemma 2: layers 0, 2, 4, ... (default window 4096) */
	CLOQ_WIN_PATTERN,         /* Gemma 3: all but every sliding_window_pattern-th layer (default 6) */
};

typedef struct cloq_family {
	enum cloq_arch arch;
	const char *arch_name;    /* "Phi3ForCausalLM" */
	const char *model_type;   /* "phi3" */
	/* the transformers config class's defaults */
	double rms_eps;
	int tie_embeddings;
	int kv_heads;             /* num_key_value_heads when absent: 0 = num_attention_heads, -1 = required */
	/* the decoder layer */
	int head_dim_free;        /* 1: head_dim is a key of its own; 0: it must be hidden / heads */
	int qkv_bias;             /* 1: q/k/v always have biases, o never (Qwen2); 0: attention_bias decides */
	int qk_norm;              /* per-head RMSNorm of q and k before RoPE (self_attn.q_norm / k_norm) */
	int gemma_norms;          /* Gemma: norms applied as 1 + w, four a layer, gelu-tanh MLP */
	int fused;                /* Phi-3: self_attn.qkv_proj, mlp.gate_up_proj */
	enum cloq_window_rule window;
	unsigned rope_types;      /* the rope_scaling types it computes besides default: bits 1 << cloq_rope_type */
	const cloq_config_key *keys; /* what the class adds to the shared keys; ends with {NULL} */
	const cloq_config_key *rule_keys; /* keys of a rule it shares with another family (its parser's); may be NULL */
	/* the fields only this family has, after the shared ones are parsed; may be NULL */
	int (*parse)(const cJSON *root, const char *path, cloq_config *cfg, cloq_err *err);
} cloq_family;

/* Every family, NULL-terminated (cloq_families.c). */
extern const cloq_family *const cloq_families[];
const cloq_family *cloq_family_of_arch(const char *arch_name);
const cloq_family *cloq_family_of_model_type(const char *model_type);
const cloq_family *cloq_family_of(enum cloq_arch arch);

/* config.json value readers for the families' hooks: an absent or null key gives dflt (or
 * CLOQ_EINPUT "required field" when required); a value of the wrong type is CLOQ_EINPUT naming
 * the file and the key. */
int cloq_cfg_int(const cJSON *root, const char *key, int required, int dflt, int *out, const char *path,
		 cloq_err *err);
int cloq_cfg_num(const cJSON *root, const char *key, int required, double dflt, double *out, const char *path,
		 cloq_err *err);
int cloq_cfg_bool(const cJSON *root, const char *key, int dflt, int *out, const char *path, cloq_err *err);

/* Gemma 2's and Gemma 3's shared fields (family_gemma2.c): query_pre_attn_scalar, the two
 * soft-caps (defaults cap_attn / cap_final when absent; null turns one off), hidden_activation,
 * the embedding scale sqrt(hidden) in the model's dtype. */
int cloq_gemma_parse_common(const cJSON *root, const char *path, cloq_config *cfg, double cap_attn, double cap_final,
			    cloq_err *err);

/* Mixture of experts (family_qwen2_moe.c): the sparse-layer rule and sizes Qwen2-MoE and Qwen3-MoE
 * share; cloq_moe_check the sizes every MoE family must have (1 <= top-k <= experts, widths > 0). */
int cloq_qwen_moe_parse(const cJSON *root, const char *path, cloq_config *cfg, cloq_err *err);
extern const cloq_config_key cloq_qwen_moe_keys[]; /* the keys it reads */
int cloq_moe_check(const char *path, const cloq_config *cfg, cloq_err *err);

#endif
