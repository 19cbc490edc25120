/*
 * cloq_llama.h - the LLaMA decoder block forward pass (HF LlamaForCausalLM conventions), fp32 on
 * OpenBLAS GEMMs, one window (sequence) at a time so memory is bounded by the window.
 *
 * Conventions: activations x are (T, hidden) row-major, one row per token; weights are torch
 * layout (out, in) row-major, so a linear layer is y = x W^T (+ b). RoPE follows HF's rotate_half
 * layout (pairs i and i + head_dim/2), positions start at 0 in every window.
 *
 * A hook receives the input of each linear group as it is formed: that is how Gram matrices are
 * collected without keeping activations. Groups sharing an input share one call:
 *   QKV    input_layernorm(x)                    (T, hidden)        -> q_proj, k_proj, v_proj
 *   O      attention output, before o_proj        (T, heads*head_dim) -> o_proj
 *   GATEUP post_attention_layernorm(h)            (T, hidden)        -> gate_proj, up_proj
 *   DOWN   silu(gate) * up                        (T, intermediate)  -> down_proj
 */
#ifndef CLOQ_LLAMA_H
#define CLOQ_LLAMA_H

#include <stddef.h>

#include "cloq_config.h"
#include "cloq_error.h"

enum cloq_group { CLOQ_GROUP_QKV, CLOQ_GROUP_O, CLOQ_GROUP_GATEUP, CLOQ_GROUP_DOWN, CLOQ_GROUPS };

/*
 * The seven linear slots of a block, in a fixed order used everywhere (shards, reports, exports).
 * A family with fused projections (Phi-3: cfg->fused) has four linears: the Q slot holds
 * self_attn.qkv_proj (rows [q; k; v]) and the GATE slot mlp.gate_up_proj (rows [gate; up]); the
 * K, V and UP slots are absent (cloq_linear_present 0: NULL weights, skipped by every loop). A
 * fused linear is quantized, calibrated and given its LoRA as the one matrix the checkpoint and
 * PEFT know; the forward reads q, k and v (gate, up) as row slices of it.
 */
enum cloq_linear { CLOQ_LIN_Q, CLOQ_LIN_K, CLOQ_LIN_V, CLOQ_LIN_O, CLOQ_LIN_GATE, CLOQ_LIN_UP, CLOQ_LIN_DOWN,
		   CLOQ_LINEARS };

extern const char *const cloq_group_names[CLOQ_GROUPS]; /* "qkv", "o", "gateup", "down" */
int cloq_linear_group(int lin);
/* The width of group g's input (its Gram matrix's side): hidden, heads * head_dim for o_proj's,
 * intermediate for down_proj's. */
size_t cloq_group_cols(const cloq_config *cfg, int g);
/* 1 when slot lin is a linear of cfg's family (0: merged into a fused neighbour). */
int cloq_linear_present(const cloq_config *cfg, int lin);
/* 1 when layer l holds slot lin as its own linear: present, and not the MLP of a sparse layer
 * (whose linears are its experts'). */
int cloq_layer_has_linear(const cloq_config *cfg, int l, int lin);
/* HF prefix of expert e's linear k (0 gate, 1 up, 2 down) in layer l, e = -1 for Qwen2-MoE's
 * shared expert: model.layers.l.mlp.experts.e.gate_proj, Mixtral's
 * model.layers.l.block_sparse_moe.experts.e.w1 (w3 up, w2 down), model.layers.l.mlp.shared_expert.
 * gate_proj. The router's tensor: model.layers.l.(mlp|block_sparse_moe).gate.weight. */
void cloq_moe_linear_prefix(const cloq_config *cfg, int l, int e, int k, char *buf, size_t cap);
void cloq_moe_router_name(const cloq_config *cfg, int l, char *buf, size_t cap);
/* Qwen2-MoE's model.layers.l.mlp.shared_expert_gate.weight (1, hidden). */
void cloq_moe_shared_gate_name(int l, char *buf, size_t cap);
/* (out, in) of expert e's linear k (e = -1: the shared expert): gate and up (width, hidden), down
 * (hidden, width). */
void cloq_moe_linear_shape(const cloq_config *cfg, int e, int k, int *out, int *in);
/* The linears present per layer (7, or 4 with fused projections). */
int cloq_linear_count(const cloq_config *cfg);
/* "q_proj", ... ("qkv_proj", "gate_up_proj" when fused) and "self_attn" or "mlp". */
const char *cloq_linear_name(const cloq_config *cfg, int lin);
const char *cloq_linear_parent(int lin);
/* (out, in) of a linear under cfg (a fused one's out is its slices' sum). */
void cloq_linear_shape(const cloq_config *cfg, int lin, int *out, int *in);

/* One decoder layer's weights in fp32. Pointers are owned by whoever filled the struct. */
typedef struct cloq_layer_w {
	float *attn_norm;         /* (hidden) */
	float *ffn_norm;          /* (hidden) */
	float *w[CLOQ_LINEARS];   /* torch (out, in) per cloq_linear_shape */
	float *b[CLOQ_LINEARS];   /* (out) or NULL */
	float *q_norm, *k_norm;   /* (head_dim) Qwen3's per-head RMSNorm of q and k (cfg->qk_norm), else NULL */
	float *post_attn_norm;    /* (hidden) Gemma 2's norms of the attention and MLP outputs */
	float *post_ffn_norm;     /*   (cfg->post_norms), else NULL */
	/* a mixture-of-experts layer (cloq_layer_is_moe), else NULL / 0 */
	int n_experts;
	float *router;            /* (experts, hidden) */
	float **experts;          /* 3 per expert: gate (inter, hidden), up (inter, hidden), down (hidden, inter) */
	float *shared[3];         /* Qwen2-MoE's shared expert, gate / up / down */
	float *shared_gate;       /* (1, hidden) */
} cloq_layer_w;

/* Free every array of w (weights allocated one by one with cloq_malloc) and zero it. */
void cloq_layer_w_free(cloq_layer_w *w);

/* Precomputed RoPE tables for positions 0..max_t-1. */
typedef struct cloq_rope {
	int max_t, half;          /* half = rotary_dim / 2 (head_dim / 2 unless partial_rotary_factor) */
	float *cos, *sin;         /* (max_t, half) */
	float *cos_l, *sin_l;     /* Gemma 3's sliding layers (rope_local_theta, unscaled), else NULL */
	float *cos_long, *sin_long; /* longrope's long factors, for windows of >= long_from tokens */
	int long_from;
} cloq_rope;

int cloq_rope_init(cloq_rope *r, const cloq_config *cfg, int max_t, cloq_err *err);
void cloq_rope_free(cloq_rope *r);

/* Scratch for one window of up to max_t tokens; reused across calls and layers. */
typedef struct cloq_block_ws cloq_block_ws;
int cloq_block_ws_create(const cloq_config *cfg, int max_t, cloq_block_ws **out, cloq_err *err);
void cloq_block_ws_free(cloq_block_ws *ws);
/* Bytes a workspace for max_t tokens needs (for the memory planner). */
size_t cloq_block_ws_bytes(const cloq_config *cfg, int max_t);

/* Called with the input of a linear group: X (t, n) row-major, valid only during the call. */
typedef int (*cloq_block_hook)(void *ctx, int group, const float *X, int t, int n, cloq_err *err);

/*
 * Run one decoder block on one window: x (T, hidden) is updated in place to the block's output.
 * `hook` (may be NULL) sees each group's input. With stop_after = g (0..3) the pass ends right
 * after the hook of group g and x is left unchanged; stop_after = -1 runs the whole block.
 */
int cloq_block_forward(const cloq_config *cfg, int layer, const cloq_layer_w *w, const cloq_rope *rope,
		       cloq_block_ws *ws, float *x, int T, cloq_block_hook hook, void *hook_ctx, int stop_after,
		       cloq_err *err);

/*
 * Resumable passes. A block pass forms, in order, the inputs of the four groups; the states below
 * are what a later pass needs to resume where an earlier one stopped, instead of recomputing the
 * block from its input (true-sequential statistics then cost about one forward pass per layer):
 *   CLOQ_STATE_INPUT  x                                     (where cloq_block_forward starts)
 *   CLOQ_STATE_ATT    attention output, (T, heads*head_dim)  formed right before the O hook;
 *                     resuming from it also needs x (the residual)
 *   CLOQ_STATE_H      h = x + o_proj(att), (T, hidden)       right before post_attention_layernorm
 *   CLOQ_STATE_ACT    silu(gate) * up, (T, intermediate)     right before the DOWN hook; also
 *                     needs h
 * cloq_block_ws_state gives the workspace buffer of a state: after a pass that got past the point
 * where the state is formed it holds the state (until the next call); before a resumed pass the
 * caller fills it (ACT: and the H buffer). A pass from state S runs the full pass's code from
 * that point (the hook right after S fires again), with the same arithmetic bit for bit.
 */
enum cloq_block_state { CLOQ_STATE_INPUT, CLOQ_STATE_ATT, CLOQ_STATE_H, CLOQ_STATE_ACT };
float *cloq_block_ws_state(cloq_block_ws *ws, int state);
/* cloq_block_forward from `start`: x is read for INPUT and ATT and written when the pass runs to
 * the end. stop_after must be -1 or a group at or after the state's (ATT >= O, H >= GATEUP, ACT >=
 * DOWN): CLOQ_EUSAGE otherwise. */
int cloq_block_forward_from(const cloq_config *cfg, int layer, const cloq_layer_w *w, const cloq_rope *rope,
			    cloq_block_ws *ws, float *x, int T, int start, cloq_block_hook hook, void *hook_ctx,
			    int stop_after, cloq_err *err);

/* y = rmsnorm(x) * weight, row by row: x, y (T, n); y may equal x. */
void cloq_rmsnorm(const float *x, const float *weight, float *y, int T, int n, double eps);
/* The same for a config: Gemma's norms apply 1 + weight (cfg->norm_plus_one). */
void cloq_rmsnorm_cfg(const cloq_config *cfg, const float *x, const float *weight, float *y, int T, int n);
/* HF names of a layer's norms by role: [0] the attention's input (attn_norm), [1] the MLP's input
 * (ffn_norm), [2] the attention output's (post_attn_norm), [3] the MLP output's (post_ffn_norm);
 * NULL where the family has none. Llama: input_layernorm, post_attention_layernorm; Gemma 2:
 * input_layernorm, pre_feedforward_layernorm, post_attention_layernorm, post_feedforward_layernorm. */
void cloq_norm_names(const cloq_config *cfg, const char *names[4]);

/* g = act(g) * u elementwise over n values: silu, or Gemma's gelu_pytorch_tanh (cfg->gelu_tanh). */
void cloq_act_mul(const cloq_config *cfg, float *g, const float *u, size_t n);

/*
 * Mixture-of-experts routing of T tokens, as transformers' sparse MoE blocks: probs (T, experts)
 * = softmax(xn router^T) per token in float; sel (T, topk) the topk most probable experts, most
 * probable first (ties: the lower index); wt (T, topk) their probabilities, renormalised to sum 1
 * with cfg->moe_norm_topk. The forward and the converter's per-expert calibration share it.
 * A pass over a sparse layer may stop at CLOQ_GROUP_GATEUP: its hook then sees the experts'
 * common input xn = post_attention_layernorm(h), and the H state holds h.
 */
void cloq_moe_route(const cloq_config *cfg, const float *router, const float *xn, int T, float *probs, int *sel,
		    float *wt);

/* y (T, out) = x (T, in) W^T + b, W (out, in). */
void cloq_linear_fwd(const float *x, const float *W, const float *b, float *y, int T, int in, int out);

#endif
