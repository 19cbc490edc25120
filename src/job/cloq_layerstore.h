/*
 * cloq_layerstore.h - what the pipeline does to one linear group of a layer (quantize + LoRA
 * init + error report) and how a processed layer is stored in, and read back from, its shard.
 *
 * Shard contents of layer l (names are HF prefixes P = model.layers.l.(self_attn|mlp).X_proj):
 *   P.qcodes  U8  (out, in)       quantization codes, original column order
 *   P.scales  F32 (out, ngroups)  fp16-representable scales
 *   P.qzeros  I32 (out, ngroups)  true zero points
 *   P.g_idx   I32 (in)            group of each input column
 * or, for the NormalFloat quantizers (nf, nf4-bnb), instead of scales/qzeros/g_idx:
 *   P.nf_absmax  F32 (nblocks)    absmax each block of the flattened weight dequantizes with
 *   P.nf_qabsmax U8 (nblocks), P.nf_absmax2 F32 (ceil(nblocks / 256)), P.nf_offset F32 (1)
 *                                 only with double quantization (cloq_quant.h)
 *   P.lora_A  F32 (r, in)         already divided so that s * B A is the correction
 *   P.lora_B  F32 (out, r)
 *   P.bias    F32 (out)           only when the model has one
 *   the layer's norms F32 (hidden) under their HF names (cloq_norm_names: input_layernorm and
 *   post_attention_layernorm; Gemma 2/3 also pre_/post_feedforward_layernorm), and
 *   model.layers.l.self_attn.q_norm / k_norm F32 (head_dim) for Qwen3 and Gemma 3
 * The base shard (layer index 0xFFFFFFFF) holds model.embed_tokens.weight, model.norm.weight and
 * lm_head.weight (when not tied) in their original dtypes.
 */
#ifndef CLOQ_LAYERSTORE_H
#define CLOQ_LAYERSTORE_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "cloq_config.h"
#include "cloq_llama.h"
#include "cloq_model.h"
#include "cloq_quant.h"
#include "cloq_shard.h"
#include "cloq_solver.h"

#define CLOQ_BASE_SHARD_LAYER 0xFFFFFFFFu

/* How a job's codes are stored and dequantized (its settings; cloq_convert_settings_qform). */
typedef struct cloq_qform {
	int bits, group_size;
	int quantizer;           /* enum cloq_quantizer_kind: nf (2) and nf4-bnb (3) store codebooks */
	int nf_block, nf_double, nf_dtype; /* NF: block, 8-bit absmax, enum cloq_dtype of deq */
} cloq_qform;

static inline int cloq_qform_is_nf(const cloq_qform *f) { return f->quantizer == 2 || f->quantizer == 3; }

typedef struct cloq_layerstore_params {
	int bits, group_size, quantizer, sym, act_order;
	int nf_block, nf_double, nf_dtype; /* NF quantizers (cloq_qform) */
	int magr;                /* MagR on each linear before it is quantized (early path only) */
	int v1_zeros;            /* asym zero points in [1, maxq] (cloq_quant_params.v1_zeros) */
	int init, rank, cloq_iters, loftq_iters, propagate, baselines;
	double scaling;          /* s = lora_alpha / r */
	const char *const *names;/* full HF names of the 7 slots for messages (an expert's), else NULL */
	uint64_t seed;
} cloq_layerstore_params;

typedef struct cloq_layer_result {
	int out, in, rank;
	cloq_qtensor q;
	float *Wq;               /* (out, in) deq(Q) */
	float *A;                /* (rank, in) */
	float *B;                /* (out, rank) */
	float *Wlora;            /* (out, in) deq(Q) + s B A, only for --propagate lora */
	/* calibrated relative errors ||X (W - deq(Q) - sBA)^T||_F / ||X W^T||_F from H */
	double rel_quant;        /* B = 0 (quantized alone; also the zero init's error) */
	double rel_loftq1;       /* LoftQ(T=1) on the same Q (baselines), else NAN */
	double rel_cloq;         /* CLoQ closed form on the same Q (baselines or init cloq), else NAN */
	double rel_final;        /* what was stored */
	double lambda_rel;       /* damping used by the factor */
	double seconds;
} cloq_layer_result;

void cloq_layer_result_free(cloq_layer_result *r);
/* The weight that feeds later computation under --propagate. */
/* Free deq(Q) and deq(Q) + s B A of a solved linear (codes and factors stay), and rebuild them
 * bit for bit: the pipeline drops them while a later group of the layer is solved. */
void cloq_layer_result_shed(cloq_layer_result *r);
int cloq_layer_result_restore(cloq_layer_result *r, int propagate, double scaling, cloq_err *err);
float *cloq_layer_result_propagated(cloq_layer_result *r, int propagate, float *W);

/* Quantize and initialise the linears of group g of layer l from its Gram matrix. Consumes the
 * Gram matrix: gram->H becomes the CLoQ factor in place and is NULL once that happened (on an
 * earlier error it is still there; cloq_gram_free is safe either way). */
int cloq_layer_solve_group(const cloq_config *cfg, const cloq_layerstore_params *p, int l, int g,
			   cloq_gram *gram, const cloq_layer_w *w, cloq_layer_result res[CLOQ_LINEARS],
			   double *quant_s, double *solve_s, cloq_err *err);

/* The shard of layer l, begun: its norms, its own linears (cloq_layer_has_linear) and, for a
 * sparse layer, the router (and Qwen2-MoE's shared_expert_gate) in float32, as the forward uses
 * them. A sparse layer's experts follow one by one (cloq_layer_shard_add_linear under
 * cloq_moe_linear_prefix's names), so a layer never holds all their codes; cloq_shard_commit
 * ends it. */
int cloq_layer_shard_begin(const char *path, const cloq_config *cfg, int l, const cloq_layer_w *w,
			   const cloq_layer_result res[CLOQ_LINEARS], cloq_shard_writer **sw, cloq_err *err);
/* One linear's tensors (the list at the top) under prefix pre; bias may be NULL. */
int cloq_layer_shard_add_linear(cloq_shard_writer *sw, const char *pre, const cloq_layer_result *r, const float *bias,
				cloq_err *err);
int cloq_layer_write_shard(const char *path, const cloq_config *cfg, int l, const cloq_layer_w *w,
			   const cloq_layer_result res[CLOQ_LINEARS], cloq_err *err);

/* Rebuild the propagation weights of layer l from its shard: deq(Q) (+ s B A for lora; the
 * original weights `orig` for fp). Norms and biases come from the shard. */
int cloq_layer_load_shard(const char *path, const cloq_config *cfg, int l, const cloq_qform *qf, int propagate,
			  double scaling, const cloq_layer_w *orig, cloq_layer_w *w, cloq_err *err);

/* Everything one linear holds in a shard. Arrays allocated; free with cloq_stored_linear_free. */
typedef struct cloq_stored_linear {
	cloq_qtensor q;
	float *A, *B, *bias;
	int rank;
} cloq_stored_linear;
int cloq_layer_read_linear(void *shard /* cloq_shard* */, const cloq_config *cfg, int l, int lin,
			   const cloq_qform *qf, cloq_stored_linear *out, cloq_err *err);
/* The same for the linear stored under prefix pre with shape (out, in). */
int cloq_layer_read_linear_at(cloq_shard *shard, const char *pre, int out, int in, const cloq_qform *qf,
			      cloq_stored_linear *o, cloq_err *err);
void cloq_stored_linear_free(cloq_stored_linear *s);
/* Expert e's linear k (0 gate, 1 up, 2 down; e = -1 the shared expert) of sparse layer l as a
 * propagation weight: deq(Q), + s B A for lora (propagate 1). *W allocated. (cloq_layer_load_shard
 * reads a sparse layer's router and attention; its experts come through here, one at a time.) */
int cloq_layer_load_expert(cloq_shard *shard, const cloq_config *cfg, int l, int e, int k, const cloq_qform *qf,
			   int propagate, double scaling, float **W, cloq_err *err);

/* Every expert of sparse layer l from the shard at path into w->experts (and w->shared), as
 * cloq_layer_load_expert gives them: what `cloq ppl OUT` needs beside cloq_layer_load_shard. */
int cloq_layer_load_experts(const char *path, const cloq_config *cfg, int l, const cloq_qform *qf, int propagate,
			    double scaling, cloq_layer_w *w, cloq_err *err);
/* Report entry of expert e (-1: "shared") of a sparse layer: routed tokens, rows added by the
 * few-token rule (cloq_moe.h), and its three linears as cloq_layer_report_json's. */
cJSON *cloq_expert_report_json(const cloq_config *cfg, int e, int64_t tokens, int filled, const cloq_layer_result res[3]);
cJSON *cloq_layer_report_json(const cloq_config *cfg, int l, const cloq_layer_result res[CLOQ_LINEARS], double secs);

/* The base shard (embeddings, final norm, untied lm_head) in their stored dtype. The XXH3 of each
 * tensor's bytes goes to inputs ({"tensor name": "xxh3 hex"}) when it is non-NULL. */
int cloq_base_write_shard(const char *path, cloq_model *m, cJSON *inputs, cloq_err *err);

#endif
