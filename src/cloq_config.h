/*
 * cloq_config.h - the model's config.json: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM.
 *
 * Parsed with cJSON. Missing required fields, unknown architectures and impossible values are
 * CLOQ_EINPUT with the file and the field named. Tensor shapes are checked against the config by
 * cloq_model_open (cloq_model.h), which knows the weights.
 */
#ifndef CLOQ_CONFIG_H
#define CLOQ_CONFIG_H

#include "cloq_error.h"

enum cloq_arch { CLOQ_ARCH_LLAMA, CLOQ_ARCH_MISTRAL, CLOQ_ARCH_QWEN2 };
enum cloq_rope_type { CLOQ_ROPE_DEFAULT, CLOQ_ROPE_LINEAR, CLOQ_ROPE_LLAMA3 };

#define CLOQ_SUPPORTED_ARCHS "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM"

typedef struct cloq_config {
	enum cloq_arch arch;
	char arch_name[64];         /* as in "architectures"[0] */
	int hidden;                 /* hidden_size */
	int intermediate;           /* intermediate_size */
	int layers;                 /* num_hidden_layers */
	int heads;                  /* num_attention_heads */
	int kv_heads;               /* num_key_value_heads (default: heads) */
	int head_dim;               /* head_dim (default: hidden / heads) */
	int vocab;                  /* vocab_size */
	int max_pos;                /* max_position_embeddings */
	double rms_eps;             /* rms_norm_eps */
	double rope_theta;          /* rope_theta (default 10000) */
	enum cloq_rope_type rope_type;
	double rope_factor;         /* rope_scaling.factor */
	double rope_low_freq;       /* llama3: low_freq_factor */
	double rope_high_freq;      /* llama3: high_freq_factor */
	int rope_orig_max_pos;      /* llama3: original_max_position_embeddings */
	int tie_embeddings;         /* tie_word_embeddings (default 0; 1 when lm_head absent) */
	int qkv_bias;               /* q/k/v projections carry biases (Qwen2; Llama attention_bias) */
	int o_bias;                 /* o_proj carries a bias (Llama attention_bias) */
	int mlp_bias;               /* gate/up/down carry biases (Llama mlp_bias) */
	int bos_id, eos_id;         /* -1 when absent */
	char torch_dtype[16];       /* "float32", "bfloat16", ... or "" */
} cloq_config;

/* Parse DIR/config.json. */
int cloq_config_load(const char *dir, cloq_config *cfg, cloq_err *err);
/* Parse a JSON text; `path` only names the source in messages. */
int cloq_config_parse(const char *json, const char *path, cloq_config *cfg, cloq_err *err);

/* Parameters of one decoder layer, of the whole model (embedding and lm_head included). */
long long cloq_config_layer_params(const cloq_config *cfg);
long long cloq_config_total_params(const cloq_config *cfg);

#endif
