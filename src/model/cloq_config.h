/*
 * cloq_config.h - the model's config.json, read into one cloq_config: the numbers and switches the
 * generic forward, loader, planner and exporter compute from.
 *
 * What each family means is declared in its own file (src/model/family_*.c, cloq_family.h):
 * defaults of its transformers config class, the shape of its layer, where its sliding window
 * applies, the keys its class adds and a hook for its own fields. cloq_config_parse finds the family
 * from "architectures" (or model_type), then reads the shared keys and the family's. Missing required
 * fields, unknown architectures and impossible values are CLOQ_EINPUT with the file and the field
 * named. Tensor shapes are checked against the config by cloq_model_open (cloq_model.h).
 *
 * Strict accounting: every top-level key of config.json is on the shared list (cloq_config.c) or
 * the family's, each entry implemented (parsed, and any value cloq cannot compute refused by name:
 * hidden_act other than silu/swish, rope_scaling yarn (and longrope outside Phi-3), nonzero
 * attention_dropout, pretraining_tp > 1 together with biases, a model_type that is not the
 * architecture's, ...) or harmless (ids, versions, use_cache, ...). Any other key, or a key of
 * another family (use_sliding_window on a Llama), is CLOQ_EINPUT:
 * "config.json: field 'foo' = 1 is not known to cloq; refusing rather than guessing its effect".
 * Sliding windows are computed per layer (cfg->layer_sliding) for every family that has them; a
 * window on a LlamaForCausalLM (whose class has none) shorter than --seqlen is refused by
 * cloq_config_check_seqlen.
 */
#ifndef CLOQ_CONFIG_H
#define CLOQ_CONFIG_H

#include "cloq_error.h"

enum cloq_arch {
	CLOQ_ARCH_LLAMA,
	CLOQ_ARCH_MISTRAL,
	CLOQ_ARCH_QWEN2,
	CLOQ_ARCH_QWEN3,
	CLOQ_ARCH_GEMMA2,
	CLOQ_ARCH_GEMMA3,
	CLOQ_ARCH_PHI3,
	CLOQ_ARCH_MIXTRAL,
	CLOQ_ARCH_QWEN2_MOE,
	CLOQ_ARCH_QWEN3_MOE
};

#define CLOQ_MAX_LAYERS 1024
enum cloq_rope_type { CLOQ_ROPE_DEFAULT, CLOQ_ROPE_LINEAR, CLOQ_ROPE_LLAMA3, CLOQ_ROPE_DYNAMIC, CLOQ_ROPE_LONGROPE };
#define CLOQ_MAX_ROPE_PAIRS 512 /* rotary_dim / 2 at most */


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
	int rope_orig_max_pos;      /* llama3, longrope: original_max_position_embeddings */
	int rotary_dim;             /* the leading dims of each head that RoPE rotates: head_dim, or
	                             * int(head_dim * partial_rotary_factor) (Phi-4-mini) */
	double rope_attn_factor;    /* cos and sin scaled by it (longrope); 1 */
	int rope_nfactors;          /* longrope: rotary_dim / 2 entries of short_factor, long_factor */
	double rope_short[CLOQ_MAX_ROPE_PAIRS], rope_long[CLOQ_MAX_ROPE_PAIRS];
	int tie_embeddings;         /* tie_word_embeddings (default 0; 1 when lm_head absent) */
	int qkv_bias;               /* q/k/v projections carry biases (Qwen2; Llama attention_bias) */
	/* Gemma 2 (0 / 1.0 / none elsewhere): */
	int norm_plus_one;          /* RMSNorm weights stored as w, applied as 1 + w (every norm) */
	int post_norms;             /* post_attention_layernorm normalises the attention output and
	                             * post_feedforward_layernorm the MLP's, each before its residual;
	                             * pre_feedforward_layernorm is the MLP's input norm */
	int gelu_tanh;              /* MLP activation gelu (tanh approximation) instead of silu */
	double attn_scale;          /* score scale: query_pre_attn_scalar^-1/2 (else head_dim^-1/2) */
	double attn_softcap;        /* scores -> cap tanh(scores / cap) before the softmax; 0 none */
	double final_softcap;       /* logits -> cap tanh(logits / cap); 0 none */
	double embed_scale;         /* embeddings times this: sqrt(hidden) in the model's dtype; 1 */
	int qk_norm;                /* Qwen3: RMSNorm over head_dim of each q and k head before RoPE,
	                             * weights self_attn.q_norm / k_norm (head_dim) */
	int o_bias;                 /* o_proj carries a bias (Llama attention_bias) */
	int fused;                  /* Phi-3: the checkpoint holds self_attn.qkv_proj = [q; k; v] and
	                             * mlp.gate_up_proj = [gate; up], each quantized and given a LoRA
	                             * as the one linear it is (cloq_linear_present) */
	int mlp_bias;               /* gate/up/down carry biases (Llama mlp_bias) */
	int bos_id, eos_id;         /* -1 when absent */
	char torch_dtype[16];       /* "float32", "bfloat16", ... or "" */
	int sliding_window;         /* active sliding-attention window in tokens; 0 = none/inactive */
	/* 1: the sliding layers are computed (keys j with i - window < j <= i); Gemma 3's with a RoPE
	 * base of their own. 0 with a window: a Llama's, refused when shorter than --seqlen */
	int window_attention;
	double rope_local_theta;    /* Gemma 3: RoPE base of the sliding layers (rope_local_base_freq), unscaled */
	unsigned char layer_sliding[CLOQ_MAX_LAYERS]; /* 1: layer l is a sliding-window layer */
	int quantized;              /* quantization_config present (an export; cloq_model_open refuses it) */
	/* Mixture of experts (Mixtral, Qwen2-MoE, Qwen3-MoE; 0 elsewhere). A sparse layer's MLP is a
	 * router (E, hidden) and E experts of width moe_inter; each token goes to the moe_topk experts
	 * of highest softmax probability, weighted by those probabilities (renormalised to sum 1 when
	 * moe_norm_topk), plus Qwen2-MoE's shared expert scaled by sigmoid(its gate). A dense layer
	 * (layer_dense) has the family's plain MLP of intermediate_size. */
	int moe;                    /* experts per sparse layer */
	int moe_topk;
	int moe_inter;
	int moe_norm_topk;
	int moe_shared_inter;       /* Qwen2-MoE's shared expert width, 0: none */
	int moe_mixtral_names;      /* block_sparse_moe.gate, experts.E.w1/w3/w2; else mlp.gate, mlp.experts.E.*_proj */
	unsigned char layer_dense[CLOQ_MAX_LAYERS];
} cloq_config;

/* Parse DIR/config.json. */
int cloq_config_load(const char *dir, cloq_config *cfg, cloq_err *err);
/* Parse a JSON text; `path` only names the source in messages. */
int cloq_config_parse(const char *json, const char *path, cloq_config *cfg, cloq_err *err);

/* CLOQ_EINPUT when sequences of `seqlen` tokens would be computed differently from the
 * checkpoint's own attention: a LlamaForCausalLM config with a sliding window shorter than seqlen
 * (probably a relabelled Mistral). `dir` is the directory of the config.json, named in the message. */
int cloq_config_check_seqlen(const cloq_config *cfg, int seqlen, const char *dir, cloq_err *err);

/* Parameters of one decoder layer (layer 0's; cloq_config_layer_params_at for layer l, which
 * differ in a mixture of experts with dense layers), of the whole model (embedding and lm_head
 * included). */
long long cloq_config_layer_params(const cloq_config *cfg);
long long cloq_config_layer_params_at(const cloq_config *cfg, int l);
/* 1 when layer l's MLP is a mixture of experts. */
int cloq_layer_is_moe(const cloq_config *cfg, int l);
/* How many of cfg's layers are mixtures of experts (0 for a dense model). */
int cloq_config_sparse_layers(const cloq_config *cfg);
long long cloq_config_total_params(const cloq_config *cfg);

#endif
