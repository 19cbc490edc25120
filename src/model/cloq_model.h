/*
 * cloq_model.h - a Hugging Face model directory opened for reading: config.json + safetensors
 * (single file or sharded), every tensor checked against the config before any work starts.
 *
 * Expected tensors (HF names): model.embed_tokens.weight (vocab, hidden), per layer l
 * model.layers.l.{input_layernorm,post_attention_layernorm}.weight (hidden),
 * model.layers.l.self_attn.{q,k,v,o}_proj.weight, model.layers.l.mlp.{gate,up,down}_proj.weight
 * (shapes from cloq_linear_shape), biases where the config says so, model.norm.weight (hidden),
 * lm_head.weight (vocab, hidden) unless the embeddings are tied. A missing or misshapen tensor is
 * CLOQ_EINPUT naming file and tensor.
 *
 * Strict accounting: every tensor of every safetensors file must be one of the above, or the open
 * fails with CLOQ_EINPUT naming the file and the tensor ("... is not used by LlamaForCausalLM (q/k
 * norms are Qwen3's; cloq would drop it and produce a different model)"). Accepted besides, as
 * transformers' loader drops them by design: model.layers.N.self_attn.rotary_emb.inv_freq (and
 * model.rotary_emb.inv_freq), shape [head_dim / 2], a buffer recomputed from the config; and, with
 * tie_word_embeddings true, an lm_head.weight equal to the embedding (transformers ties it over the
 * stored values; a different one is refused). lm_head.weight absent with tie_word_embeddings false
 * is refused (transformers would initialise it at random). A config.json with quantization_config
 * (an export) is refused: the weights are not float.
 */
#ifndef CLOQ_MODEL_H
#define CLOQ_MODEL_H

#include "cloq_config.h"
#include "cloq_eval.h"
#include "cloq_llama.h"
#include "cloq_safetensors.h"

typedef struct cloq_model {
	char *dir;
	cloq_config cfg;
	cloq_st_model *st;
	const cloq_st_tensor *embed, *head, *norm;   /* head == embed when tied */
	const cloq_st_tensor *lin[CLOQ_LINEARS];     /* scratch for the last looked-up layer */
	float *final_norm;                           /* (hidden) fp32 */
	/* cloq_lm support: the layer currently decoded, and fds for row reads */
	cloq_layer_cache cache;
	int *fds;                                    /* one per safetensors file, for row reads */
	size_t nfds;
} cloq_model;

int cloq_model_open(const char *dir, cloq_model **out, cloq_err *err);
void cloq_model_close(cloq_model *m);

/* The tensor of layer l, linear `lin` (weight or, with bias=1, its bias: NULL when absent). */
const cloq_st_tensor *cloq_model_linear(const cloq_model *m, int l, int lin, int bias);
/* Layer l's norm of role `role` (cloq_norm_names: 0 attention input, 1 MLP input, 2 and 3 Gemma 2's
 * output norms); NULL when absent or the family has no such norm. */
const cloq_st_tensor *cloq_model_norm(const cloq_model *m, int l, int role);
/* Qwen3's self_attn.q_norm (k = 0) or k_norm (k = 1) of layer l; NULL when absent. */
const cloq_st_tensor *cloq_model_qk_norm(const cloq_model *m, int l, int k);

/* Load layer l's weights as fp32 into *w (allocated; release with cloq_layer_w_free). NaN/Inf is
 * CLOQ_EINPUT naming the tensor and the first bad index. */
int cloq_model_load_layer(const cloq_model *m, int l, cloq_layer_w *w, cloq_err *err);
/* The same; with experts = 0 a sparse layer's experts are left out (w->experts NULL): the
 * converter streams them one at a time. */
int cloq_model_load_layer_opt(const cloq_model *m, int l, int experts, cloq_layer_w *w, cloq_err *err);

/* Rows [row0, row0+n) of a 2-D tensor as fp32 (embedding look-ups, lm_head chunks). */
int cloq_model_read_rows(cloq_model *m, const cloq_st_tensor *t, int64_t row0, int64_t n, float *dst, cloq_err *err);

/* A cloq_lm over the original weights (for ppl and as the source of conversions). */
void cloq_model_lm(cloq_model *m, cloq_lm *lm);

#endif
