#!/usr/bin/python3
"""ref_llama.py - independent float64 numpy reference of Hugging Face LlamaForCausalLM,
MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Phi3ForCausalLM, Gemma2ForCausalLM,
Gemma3ForCausalLM (text-only) and the mixture-of-experts MixtralForCausalLM, Qwen2MoeForCausalLM
and Qwen3MoeForCausalLM.

An oracle for cloq's C forward pass and the source of the solver fixtures. numpy only (no torch,
no transformers): the safetensors file is read by hand (8-byte LE header length, JSON header, raw
F32/BF16/F16 data; model.safetensors, else the shards model.safetensors.index.json names) so
nothing here shares code with the C reader it is meant to check.

The forward mirrors transformers' modeling_llama / modeling_mistral / modeling_qwen2 /
modeling_qwen3 / modeling_phi3 in float64:
  h = embed[ids]
  per layer: x = rmsnorm(h) * w_in          (x * rsqrt(mean(x^2) + eps), then * weight)
             q,k,v = x Wq^T (+bq), x Wk^T (+bk), x Wv^T (+bv), viewed (T, heads, head_dim)
             Qwen3 only: q = rmsnorm(q) * q_norm, k = rmsnorm(k) * k_norm, per head over
               head_dim (weights (head_dim,), same eps), BEFORE RoPE; v is not normed
             RoPE rotate_half convention on q, k (inv_freq over head_dim; Phi3 partial rotary,
               Phi3 longrope and Llama dynamic: "RoPE variants" below)
             grouped-query causal softmax attention, scale head_dim^-0.5 (q head h uses kv head
               h // (Hq/Hkv))
             h += attn Wo^T (+bo)                (attn is heads*head_dim wide)
             x = rmsnorm(h) * w_post ; h += down(silu(gate x) * up x)   (+ mlp biases, Llama)
  logits = rmsnorm(h) * w_norm @ lm_head^T  (lm_head = embed when tie_word_embeddings)

Qwen2ForCausalLM (model_type "qwen2"; modeling_qwen2 / Qwen2Config, 4.44-4.51) is that layer with
  q/k/v biases ALWAYS (self_attn.{q,k,v}_proj.bias, (out,); Qwen2Attention builds them with
  bias=True whatever the config says; no o_proj bias, no MLP bias), no q/k norms, head_dim =
  hidden_size / num_attention_heads (4.44 computes it; later releases read a config head_dim:
  one present must equal it). Qwen2Config defaults: num_key_value_heads 32, rms_norm_eps 1e-6,
  rope_theta 10000, tie_word_embeddings false, use_sliding_window false, sliding_window 4096,
  max_window_layers 28. Refused: hidden_size not a multiple of the heads (transformers raises),
  a head_dim key != hidden/heads, attention_bias false (the class has biases whatever it says:
  ambiguous), mlp_bias true. Windows: as Qwen3 (below).

Phi3ForCausalLM (model_type "phi3"; modeling_phi3 / Phi3Config, 4.44-4.51) is Llama's layer with
  fused projections and no biases:
    qkv = x Wqkv^T, Wqkv = self_attn.qkv_proj.weight ((H + 2 Hkv) * hd, D), rows [q; k; v]:
      q = qkv[:, :H hd], k = qkv[:, H hd:(H + Hkv) hd], v = qkv[:, (H + Hkv) hd:]
    gu = x Wgu^T, Wgu = mlp.gate_up_proj.weight (2 I, D): gate = gu[:, :I], up = gu[:, I:]
      (Phi3MLP: gate, up = chunk(2)); mlp = down(up * silu(gate))
  self_attn.o_proj, mlp.down_proj, input_layernorm / post_attention_layernorm / model.norm (RMSNorm
  x * rsqrt(mean(x^2) + eps) * w, as Llama's). head_dim = hidden / heads (a config head_dim must
  equal it). Phi3Config defaults: num_key_value_heads = heads, rms_norm_eps 1e-5, rope_theta 10000,
  tie_word_embeddings false, hidden_act silu, sliding_window null (none). embd_pdrop, resid_pdrop,
  attention_dropout are dropout (nothing at inference): accepted. partial_rotary_factor and
  rope_scaling longrope (with max_position_embeddings / original_max_position_embeddings): "RoPE
  variants" below. Refused: rope_scaling other than null/default/longrope/su (yarn named),
  attention_bias true, mlp_bias true, a head_dim key != hidden/heads, hidden_size not a multiple of
  the heads, and every config key not in PHI3_KEYS_USED / PHI3_KEYS_IGNORED. Tensors: a
  q_proj/k_proj/v_proj/gate_proj/up_proj under Phi3 is refused (unused), as is a fused one under
  any other family.

Gemma2ForCausalLM (modeling_gemma2, eager attention) differs:
  h = embed[ids] * normalizer, normalizer = sqrt(hidden_size) rounded to the stored embedding dtype
    (torch.tensor(hidden**0.5, dtype=hidden_states.dtype): F32 -> float32, BF16 -> bfloat16 (3072:
    55.5), F16 -> float16), then float64; every norm (Gemma2RMSNorm) is rmsnorm(x) * (1 + w)
  per layer: h += post_attention_layernorm(attn(input_layernorm(h)))
             h += post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)))
  attn: scores = (q k^T) * query_pre_attn_scalar^-0.5, then c * tanh(scores / c) with
    c = attn_logit_softcapping (skipped when null), then the causal mask and softmax; q/k/v/o biases
    under attention_bias; no q/k norms
  mlp: down(gelu_tanh(gate x) * up x), gelu_tanh(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))
  logits = c * tanh(logits / c), c = final_logit_softcapping (skipped when null)
  Gemma2Config defaults: head_dim 256, tie_word_embeddings true, attn/final soft caps 50/30,
  sliding_window 4096, hidden_activation gelu_pytorch_tanh (the only one accepted; a hidden_act that
  differs from it is refused: transformers ignores it, other loaders read it). Required (their
  defaults changed between releases): num_key_value_heads, query_pre_attn_scalar. Refused:
  use_bidirectional_attention, hidden_size not a multiple of num_attention_heads (transformers
  refuses it too). Weights: the embedding dtype is read from the file; from_weights takes it as
  embed_dtype (float32/float16 arrays imply F32/F16; other arrays need it).

Gemma3ForCausalLM (model_type "gemma3_text"; modeling_gemma3 / configuration_gemma3
Gemma3TextConfig, eager attention) is Gemma2 (same normalizer rounding: embed_scale
torch.tensor(hidden**0.5).to(weight dtype); same four 1 + w norms, gelu_tanh MLP,
query_pre_attn_scalar^-0.5 scaling) plus:
  q_norm / k_norm (Gemma3RMSNorm over head_dim, 1 + w, same eps; tensors
    model.layers.L.self_attn.{q,k}_norm.weight, (head_dim,)) on q and k per head after the
    projections and BEFORE RoPE; v is not normed
  per layer a type: layer_types when given (4.53+), else layer i is "sliding_attention" iff
    (i + 1) % sliding_window_pattern != 0 (default 6: layers 5, 11, ... full; 4.50-4.52 use only
    this rule). Both given: they must agree. _sliding_window_pattern (what 4.53+ saves) likewise.
  sliding layers: query i sees key j iff i - W < j <= i (W = sliding_window, default 4096: the
    window counts the query itself; masking_utils sliding_window_overlay kv_idx > q_idx - W AND
    causal; 4.50: tril(ones, diagonal=-W) masked). COMPUTED here, any T. Full layers: causal.
  RoPE per type: full layers rope_theta (default 1e6) with rope_scaling (null/default, or
    {"rope_type": "linear", "factor": f}: inv_freq / f); sliding layers rope_local_base_freq
    (default 1e4), never scaled. 5.x's rope_parameters {full_attention: {...}, sliding_attention:
    {...}} is read the same way (not together with rope_scaling; thetas must agree).
  soft caps: final_logit_softcapping applied when not null (default null); attn_logit_softcapping
    must be null (Gemma3Attention passes no softcap: transformers ignores it, others may not).
  Required: num_key_value_heads, query_pre_attn_scalar. Defaults: head_dim 256, tie true.
  Refused: rope types other than default/linear, use_bidirectional_attention, sliding_window null
  with a sliding layer, and every config key not in GEMMA3_KEYS_USED / GEMMA3_KEYS_IGNORED.

Mixture of experts (modeling_mixtral / modeling_qwen2_moe, transformers 4.44 and 4.51;
modeling_qwen3_moe, 4.51). The attention is the dense sibling's (Mixtral: Mistral's, no biases;
Qwen2-MoE: Qwen2's, q/k/v biases; Qwen3-MoE: Qwen3's, q/k norms before RoPE, attention_bias ->
q/k/v/o biases); the MLP of a "sparse" layer is replaced by a routed block. For the MLP input x
(post_attention_layernorm(h), one row per token):
  probs = softmax(x Wr^T) over the E experts (Wr = the router, (E, hidden), no bias; transformers:
          float32 softmax of the float32 logits, here float64)
  sel   = the k most probable experts (k = num_experts_per_tok). Ties go to the LOWER expert index
          (a stable sort; torch.topk does not document its order; random weights have no ties)
  wts   = probs[sel], divided by their sum when renormalised (Mixtral: always; Qwen2-MoE/Qwen3-MoE:
          only under norm_topk_prob), so with renormalisation wts = softmax over the selected logits
  moe(x) = sum over sel of wts_e * expert_e(x),   expert_e(x) = down_e(silu(gate_e x) * up_e x)
  Qwen2-MoE adds a shared expert, always on:  + sigmoid(x . Wsg) * shared(x), with Wsg =
          mlp.shared_expert_gate.weight (1, hidden) and shared(x) a SwiGLU MLP of width
          shared_expert_intermediate_size
Every selected expert is computed on the token (no capacity, no dropped tokens: what the
transformers loop over experts does). The float32 rounding of transformers' probabilities is not
mirrored: a token whose k-th and (k+1)-th probabilities are within ~1e-7 may route differently
there (model.min_route_margin, the smallest such gap seen, tells; --ppl-npy prints it).
  MixtralForCausalLM (model_type "mixtral"; MixtralConfig): every layer sparse; tensors
    model.layers.L.block_sparse_moe.gate.weight (E, hidden), block_sparse_moe.experts.e.w1.weight
    (I, hidden) = gate, .w3.weight (I, hidden) = up, .w2.weight (hidden, I) = down, I =
    intermediate_size; E = num_local_experts. MixtralConfig defaults: num_local_experts 8,
    num_experts_per_tok 2, intermediate_size 14336, num_key_value_heads 8 (null: the heads),
    rms_norm_eps 1e-5 (not Mistral's 1e-6), rope_theta 1e6 (not 1e4), sliding_window null (not
    Mistral's 4096), tie_word_embeddings false; router_aux_loss_coef 0.001, output_router_logits
    false, router_jitter_noise 0.0 (training only: the jitter multiplies the input only under
    self.training; accepted unread). head_dim = hidden / heads (4.44 always; 4.51 reads a head_dim
    key: one present must equal it). sliding_window: every layer, computed (i - W < j <= i), as
    4.51's eager mask does; 4.44's eager Mixtral ignores it (its causal mask is Llama's).
  Qwen2MoeForCausalLM (model_type "qwen2_moe"; Qwen2MoeConfig): layer i is sparse iff i is not in
    mlp_only_layers and num_experts > 0 and (i + 1) % decoder_sparse_step == 0, else a dense Qwen2
    MLP (mlp.gate_proj/up_proj/down_proj, intermediate_size). Sparse tensors: mlp.gate.weight (E,
    hidden), mlp.experts.e.{gate,up,down}_proj.weight (moe_intermediate_size),
    mlp.shared_expert.{gate,up,down}_proj.weight (shared_expert_intermediate_size),
    mlp.shared_expert_gate.weight (1, hidden). Qwen2MoeConfig defaults (4.44 = 4.51): num_experts 60,
    num_experts_per_tok 4, norm_topk_prob false, decoder_sparse_step 1, mlp_only_layers [] (null:
    []), moe_intermediate_size 1408, shared_expert_intermediate_size 5632, intermediate_size 5632,
    num_key_value_heads 16 (not Qwen2's 32), rms_norm_eps 1e-6, rope_theta 1e4, tie false,
    use_sliding_window false, sliding_window 4096, max_window_layers 28, router_aux_loss_coef 0.001,
    output_router_logits false; 4.51 adds qkv_bias true (false drops the q/k/v biases there, 4.44
    always has them: refused). head_dim = hidden / heads in both releases (a head_dim key must
    equal it). num_experts 0 makes every layer dense.
  Qwen3MoeForCausalLM (model_type "qwen3_moe"; Qwen3MoeConfig, 4.51): the sparse rule and routing
    of Qwen2-MoE, no shared expert; tensors mlp.gate.weight, mlp.experts.e.{gate,up,down}_proj.
    Qwen3MoeConfig defaults: num_experts 128, num_experts_per_tok 8, norm_topk_prob false,
    decoder_sparse_step 1, mlp_only_layers [], moe_intermediate_size 768, intermediate_size 6144,
    num_key_value_heads 4, rms_norm_eps 1e-6, rope_theta 1e4, attention_bias false, tie false,
    use_sliding_window false, sliding_window 4096, max_window_layers 28, router_aux_loss_coef 0.001.
    head_dim: the key, else hidden / heads (Qwen3MoeConfig has no head_dim parameter and
    Qwen3MoeAttention falls back to the quotient; NOT Qwen3's 128).
  The MoE configs are read strictly (MOE_KEYS_USED / MOE_KEYS_IGNORED): any other key is refused by
  name. Also refused: num_experts_per_tok > the experts (torch.topk raises), decoder_sparse_step < 1,
  mlp_only_layers entries that are not layer indices, use_sliding_window true on Qwen2-MoE/Qwen3-MoE
  (4.44's eager Qwen2-MoE ignores it, 4.51's eager mask applies sliding_window to EVERY layer, the
  4.51 flash path only to layers >= max_window_layers, 5.x's Qwen2MoeConfig layer_types default to
  the even layers < max_window_layers: ambiguous; false makes every config class null the window),
  layer_types naming a sliding layer there, rope_scaling other than default (Mixtral,
  Qwen2-MoE: 4.44's classes ignore it, 4.51's apply it; Qwen3-MoE as Qwen3), attention_bias or
  mlp_bias true on Mixtral (no biases, whatever the key says), attention_bias false or mlp_bias true
  on Qwen2-MoE, and the tensors of a layout the layer does not have (a dense mlp.*_proj on a sparse
  layer, a router on a dense one, an expert index >= E, a shared expert outside Qwen2-MoE). The
  solver fixture refuses MoE models; the forward hook reports "gateup" (the block's input) on a
  sparse layer and no "down".

Which model: config.json "architectures"[0] (one of ARCHS; without "architectures", the one of
"model_type"), and "model_type", when present, must be that architecture's (transformers' Auto
classes go by model_type). Missing config keys take the defaults of transformers' config class
(LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config, Phi3Config; the MoE ones above):
  head_dim                Llama/Mistral/Qwen3-MoE: hidden/heads; Qwen3: 128 (not hidden/heads);
                          Qwen2/Phi3/Mixtral/Qwen2-MoE: hidden/heads, always
  num_key_value_heads     Llama, Phi3: heads; Mistral, Mixtral: 8; Qwen2, Qwen3: 32; Qwen2-MoE:
                          16; Qwen3-MoE: 4
  rms_norm_eps 1e-6 (Phi3, Mixtral: 1e-5), rope_theta 10000 (Mixtral: 1e6), tie_word_embeddings
  false
  biases                  Llama: attention_bias -> q/k/v/o .bias, mlp_bias -> gate/up/down .bias;
                          Qwen3, Qwen3-MoE: attention_bias -> q/k/v/o .bias, the MLP never has one;
                          Qwen2, Qwen2-MoE: q/k/v .bias always, nothing else; Mistral, Phi3,
                          Mixtral: none
Refused (ValueError naming the key or tensor): other architectures, rope_scaling other than
default (but the RoPE variants below), partial_rotary_factor != 1 (but Phi3's), hidden_act other
than silu/swish, and any tensor the model
does not use (the only ones accepted unread are what transformers' loader drops: the
rotary_emb.inv_freq buffers, and under tie_word_embeddings an lm_head.weight equal to the
embedding); a missing or misshapen tensor too; an untied model without lm_head.weight.

RoPE variants (all but Gemma3, whose per-layer-type RoPE is above; rope_scaling's type from
"rope_type", else "type"; both given must agree; rope_parameters: default only):
  Phi3 partial_rotary_factor f (0 < f <= 1, default 1; Phi-4-mini 0.75): transformers >= 4.49
    semantics (Phi3Config / _compute_*_parameters, apply_rotary_pos_emb); 4.44's Phi3 ignores the
    key. rotary dims r = int(head_dim * f) (even, >= 2, else refused); the first r dims of each
    q/k head are rotated, pairing i with i + r/2 (rotate_half over them), dims r.. pass unrotated;
    inv(i) = theta^(-2i/r), i < r/2. Any other family: f != 1 refused.
  Phi3 rope_scaling longrope ("su" is Phi3Config's old name for it; transformers 4.44 and 4.51
    Phi3Config also want "type", not "rope_type", and exactly three keys): short_factor and
    long_factor, lists of r/2 positive numbers. Over T tokens (positions 0..T-1, each forward on its
    own), ext = short_factor if T <= original_max_position_embeddings else long_factor (top-level
    Phi3Config keys, both defaults 4096), inv(i) = 1 / (ext(i) theta^(2i/r)), and cos and sin are
    multiplied by the attention factor sqrt(1 + ln(s) / ln(original)), s = max_position_embeddings /
    original_max_position_embeddings (1 when s <= 1): _compute_longrope_parameters +
    longrope_frequency_update (4.51), Phi3LongRoPEScaledRotaryEmbedding (4.44). So on the rotary
    dims q.k is scaled by the factor squared. rope_scaling "factor" is accepted unused (4.51
    overrides it with s); a nested original_max_position_embeddings must equal the top-level one.
    Refused: "attention_factor" (4.51 uses it in place of the formula, 4.44 ignores it), "yarn"
    (Phi3Config renames it longrope, the old remote code applied YaRN's factor: ambiguous), other
    keys, factor lists of another length (e.g. head_dim/2 under f < 1, what 4.44 validates).
  Llama rope_scaling dynamic {"factor": F} (LlamaConfig max_position_embeddings, default 2048):
    transformers computes the base theta ((F T / max) - (F - 1))^(r/(r-2)) only for T > max, so
    for T <= max it IS unscaled RoPE; a forward over T > max is refused (not implemented). Keys
    other than type/rope_type/factor refused.
  Refused everywhere: yarn; linear/dynamic/llama3 on Mistral, Qwen2, Gemma2 (transformers 4.44's
    classes ignore rope_scaling, 4.51's apply it: ambiguous); anything but default on Qwen3, on
    Phi3 (but longrope/su), on Llama (but dynamic).

Sliding windows are computed per layer (window_mask): query i sees key j iff i - W < j <= i
(masking_utils' sliding_window_overlay AND causal_mask_function; the eager masks of 4.44 Gemma2 and
4.51 Mistral):
  Mistral: sliding_window (default 4096; null = none) on every layer.
  Phi3: sliding_window (default null = none) on every layer.
  Gemma2: sliding_window (default 4096; null refused) on layer_types' sliding_attention layers
    (default: the even layers, what transformers <= 4.5x always slides); a forward over T tokens
    raises when layer_types differs from the even layers and T > W (the releases disagree).
  Qwen2, Qwen3 (Qwen2Config, Qwen3Config): W = sliding_window if use_sliding_window else None;
    layer_types (if absent)
    = "sliding_attention" for layer i >= max_window_layers when W is set, else "full_attention";
    a sliding layer with W None is an error in transformers too (create_sliding_window_causal_mask).
    A forward raises when use_sliding_window is false and the raw "sliding_window" < T:
    transformers before masking_utils (4.51 era) applied it to every layer there.

Usage (run from the repository root or pass --model):
  ref_llama.py --check                      validate against fixtures/reference, exit 1 on mismatch
  ref_llama.py --logits IDS_FILE [--out F]  print logits (one row per position, %.9g) or write them
                                            to F as float32 LE (T, vocab) row-major
  ref_llama.py --ppl-npy FILE.npy           int32 [N, T] windows; prints "perplexity X"
  ref_llama.py --dump-solver-fixture DIR    write the solver fixture (see fixtures/solver/README.md)
  ref_llama.py --check-solver-fixture DIR   re-derive it another way (batched) and check identities
  ref_llama.py --selftest                   the Qwen3, Gemma2 and Gemma3 paths on tiny random
                                            checkpoints written to a temp dir: one position's
                                            attention output (Qwen3) / a one-layer model's logits
                                            (Gemma2) / a two-layer model's logits, sliding layer
                                            with T > window and full layer with linear RoPE
                                            (Gemma3; both with mutation checks) by scalar loops,
                                            strictness and sliding-window refusals; Phi3 == Llama
                                            on the same weights unfused, Qwen2 == Llama with q/k/v
                                            biases (1e-12; fusion order / bias mutations caught),
                                            window masks (i - W < j <= i) and windowed attention
                                            by scalar loops (Mistral), Phi3/Qwen2 strictness;
                                            RoPE variants: Phi3 attention with partial rotary
                                            (f 0.75) and longrope (short and long, attention
                                            factor) by scalar loops with mutation checks, f 1 and
                                            unit-factor longrope (max == original) == plain, the
                                            attention factor formula, the short/long switch at
                                            T = original + 1, Llama dynamic == default up to
                                            max_position_embeddings (refused past it), refusals;
                                            MoE: Mixtral/Qwen3-MoE with E identical experts ==
                                            Mistral/Qwen3 dense (any routing), Qwen2-MoE likewise
                                            with the shared expert gated off (gate weights -50 on a
                                            positive input), at sigmoid 1/2 (gate 0) and 1 (+50);
                                            top-k = E == the softmax-weighted sum; one block by
                                            scalar loops (top-1/2, E 2/4, norm on/off, shared
                                            gate) with mutation checks; ties to the lower index;
                                            the sparse-layer rule; config defaults; key and
                                            tensor strictness (missing/extra expert, dense MLP on
                                            a sparse layer, shared expert outside Qwen2-MoE)
"""

import argparse
import json
import math
import os
import struct
import sys

# Small matrices: BLAS threads only spin on the shared CPU. Must be set before numpy loads BLAS.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
DEF_MODEL = os.path.join(ROOT, "fixtures", "stories260K")
REF = os.path.join(ROOT, "fixtures", "reference")

# Known answers from fixtures/README.md (produced by a separate torch/numpy implementation).
REF_CE64 = 1.415631
REF_PPL = 5.340249
LOGIT_TOL = 1e-4


def read_safetensors(path, dtypes=None):
    """Return {name: float32 ndarray} from a safetensors file (F32, BF16 and F16 widened exactly);
    dtypes, when given, gets {name: stored dtype name}."""
    with open(path, "rb") as f:
        blob = f.read()
    (hlen,) = struct.unpack_from("<Q", blob, 0)
    header = json.loads(blob[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        shape = tuple(meta["shape"])
        dt = meta["dtype"]
        if dt == "F32":
            arr = np.frombuffer(blob, dtype="<f4", count=(b - a) // 4, offset=base + a)
        elif dt == "BF16":
            u = np.frombuffer(blob, dtype="<u2", count=(b - a) // 2, offset=base + a)
            arr = (u.astype(np.uint32) << 16).view(np.float32)
        elif dt == "F16":
            arr = np.frombuffer(blob, dtype="<f2", count=(b - a) // 2, offset=base + a).astype(np.float32)
        else:
            raise ValueError("%s: tensor %s has dtype %s, only F32/BF16/F16 supported" % (path, name, dt))
        if dtypes is not None:
            dtypes[name] = dt
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError("%s: tensor %s: %d values for shape %s" % (path, name, arr.size, list(shape)))
        out[name] = arr.reshape(shape).copy()
    return out


def read_weights(model_dir, dtypes=None):
    """model.safetensors, or (transformers' precedence) the shards of model.safetensors.index.json.
    dtypes, when given, gets {name: stored dtype name}."""
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(single):
        return read_safetensors(single, dtypes)
    ip = os.path.join(model_dir, "model.safetensors.index.json")
    with open(ip) as f:
        wm = json.load(f)["weight_map"]
    out = {}
    for fn in sorted(set(wm.values())):
        for name, arr in read_safetensors(os.path.join(model_dir, fn), dtypes).items():
            if name in out:
                raise ValueError("%s: tensor %s also in another shard" % (fn, name))
            if wm.get(name) != fn:
                raise ValueError("%s: tensor %s is in %s but weight_map says %r" % (ip, name, fn, wm.get(name)))
            out[name] = arr
    missing = sorted(set(wm) - set(out))
    if missing:
        raise ValueError("%s: weight_map names %s, not in the shards" % (ip, missing[:5]))
    return out


# architecture -> model_type; the per-family defaults of transformers' config classes
ARCHS = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2",
         "Qwen3ForCausalLM": "qwen3", "Phi3ForCausalLM": "phi3", "Gemma2ForCausalLM": "gemma2",
         "Gemma3ForCausalLM": "gemma3_text", "MixtralForCausalLM": "mixtral",
         "Qwen2MoeForCausalLM": "qwen2_moe", "Qwen3MoeForCausalLM": "qwen3_moe"}
# None: num_attention_heads; Gemma2/Gemma3: required (Gemma2Config's default changed between
# releases; Gemma3TextConfig's 4 is a 4B-ish guess no real checkpoint should rely on)
DEFAULT_KV = {"llama": None, "mistral": 8, "qwen2": 32, "qwen3": 32, "phi3": None,
              "gemma2": "required", "gemma3_text": "required", "mixtral": 8, "qwen2_moe": 16,
              "qwen3_moe": 4}
# the decoder-layer linears of a family (Llama.linears); Phi3 fuses q/k/v and gate/up
UNFUSED_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                   "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
PHI3_LINEARS = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")
GEMMA_NAME = {"gemma2": "Gemma2", "gemma3_text": "Gemma3"}
# Gemma3TextConfig: every config.json key this reference reads, or knows it may ignore (they do not
# change the forward: token ids, cache/generation settings, dropout at inference, metadata). Any
# other key is refused by name: Gemma3 is read strictly, an unknown key might change the model.
GEMMA3_KEYS_USED = {
    "architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size",
    "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
    "hidden_activation", "hidden_act", "rms_norm_eps", "tie_word_embeddings", "attention_bias",
    "query_pre_attn_scalar", "sliding_window", "sliding_window_pattern", "_sliding_window_pattern",
    "layer_types", "rope_theta", "rope_local_base_freq", "rope_scaling", "rope_parameters",
    "attn_logit_softcapping", "final_logit_softcapping", "use_bidirectional_attention"}
GEMMA3_KEYS_IGNORED = {
    "max_position_embeddings", "initializer_range", "use_cache", "pad_token_id", "bos_token_id",
    "eos_token_id", "attention_dropout", "cache_implementation", "torch_dtype", "dtype",
    "transformers_version", "_name_or_path", "output_attentions",
    "output_hidden_states", "return_dict", "use_return_dict", "is_decoder", "is_encoder_decoder",
    "tie_encoder_decoder", "add_cross_attention", "tokenizer_class", "id2label", "label2id",
    "problem_type", "torchscript", "chunk_size_feed_forward", "pruned_heads", "finetuning_task",
    "prefix", "sep_token_id", "decoder_start_token_id", "task_specific_params", "quantization_config"}
# Phi3Config: likewise strict. Read: the keys below (max_position_embeddings and
# original_max_position_embeddings only under longrope); ignored: the generic ones Gemma3 ignores
# plus Phi3's dropouts (embd_pdrop, resid_pdrop: nothing at inference) and auto_map (remote-code
# class names: the in-library Phi3ForCausalLM is what transformers builds for model_type phi3
# without trust_remote_code).
PHI3_KEYS_USED = {
    "architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size",
    "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act",
    "rms_norm_eps", "tie_word_embeddings", "attention_bias", "mlp_bias", "rope_theta", "rope_scaling",
    "rope_parameters", "partial_rotary_factor", "sliding_window", "max_position_embeddings",
    "original_max_position_embeddings"}
PHI3_KEYS_IGNORED = GEMMA3_KEYS_IGNORED - {"cache_implementation", "max_position_embeddings"} | {
    "embd_pdrop", "resid_pdrop", "auto_map"}
LAYER_TYPES = ("full_attention", "sliding_attention")
# Mixture of experts: MixtralConfig, Qwen2MoeConfig (4.44 = 4.51 but qkv_bias, 4.51 only),
# Qwen3MoeConfig (4.51). The defaults the reference applies to a missing key (see the docstring).
MOE_FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe")
MOE_NAME = {"mixtral": "Mixtral", "qwen2_moe": "Qwen2-MoE", "qwen3_moe": "Qwen3-MoE"}
MOE_DEFAULTS = {
    "mixtral": {"intermediate_size": 14336, "num_local_experts": 8, "num_experts_per_tok": 2},
    "qwen2_moe": {"intermediate_size": 5632, "num_experts": 60, "num_experts_per_tok": 4,
                  "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
                  "decoder_sparse_step": 1, "norm_topk_prob": False},
    "qwen3_moe": {"intermediate_size": 6144, "num_experts": 128, "num_experts_per_tok": 8,
                  "moe_intermediate_size": 768, "decoder_sparse_step": 1, "norm_topk_prob": False}}
# strict, as Phi3 and Gemma3: the keys read (or checked) and the keys known not to change the
# forward (GEMMA3_KEYS_IGNORED's generic ones plus the routers' training-only knobs: the auxiliary
# load-balancing loss, returning router logits, Mixtral's input jitter under self.training)
_MOE_KEYS_BASE = {
    "architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size",
    "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act",
    "rms_norm_eps", "tie_word_embeddings", "rope_theta", "rope_scaling", "rope_parameters",
    "attention_bias", "mlp_bias", "num_experts_per_tok"}
_QWEN_MOE_KEYS = {"num_experts", "moe_intermediate_size", "norm_topk_prob", "decoder_sparse_step",
                  "mlp_only_layers", "use_sliding_window", "sliding_window", "max_window_layers",
                  "layer_types"}
MOE_KEYS_USED = {
    "mixtral": _MOE_KEYS_BASE | {"num_local_experts", "sliding_window"},
    "qwen2_moe": _MOE_KEYS_BASE | _QWEN_MOE_KEYS | {"shared_expert_intermediate_size", "qkv_bias"},
    "qwen3_moe": _MOE_KEYS_BASE | _QWEN_MOE_KEYS}
MOE_KEYS_IGNORED = GEMMA3_KEYS_IGNORED - {"cache_implementation"} | {
    "router_aux_loss_coef", "output_router_logits", "router_jitter_noise"}
# stored embedding dtype -> the rounding of Gemma2's sqrt(hidden_size) normalizer
EMBED_DTYPES = ("F32", "BF16", "F16")


def round_bf16(x):
    """float -> the nearest bfloat16 (ties to even), via float32 as torch's scalar cast does."""
    u = int(np.array(x, dtype=np.float32).view(np.uint32))
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return float(np.array(u, dtype=np.uint32).view(np.float32))


def gemma_normalizer(hidden, embed_dtype):
    """Gemma2Model: torch.tensor(hidden_size ** 0.5, dtype=hidden_states.dtype), i.e. sqrt(hidden)
    rounded to the dtype the model runs in (here: the stored embedding's)."""
    r = float(hidden) ** 0.5
    if embed_dtype == "F32":
        return float(np.float32(r))
    if embed_dtype == "BF16":
        return round_bf16(r)
    if embed_dtype == "F16":
        return float(np.float16(np.float32(r)))
    raise ValueError("embedding dtype %r: want one of %s" % (embed_dtype, EMBED_DTYPES))


def _num(cfg, key, default=None, allow_none=False):
    """A positive number (int or float, not bool) from config.json."""
    v = cfg.get(key, default)
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or v != v or v == float("inf"):
        raise ValueError("config.json: %s = %r is not a positive number" % (key, v))
    return float(v)


def _int(cfg, key, default=None, allow_none=False):
    v = cfg.get(key, default)
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError("config.json: %s = %r is not a positive integer" % (key, v))
    return v


class Llama:
    """The model of a checkpoint directory (config.json + safetensors); despite the name, any of
    ARCHS. Llama.from_weights(cfg, weights) builds one from a config dict and {name: array}."""

    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        dtypes = {}
        w = read_weights(model_dir, dtypes)
        self._setup(cfg, w, dtypes.get("model.embed_tokens.weight"))

    @classmethod
    def from_weights(cls, cfg, weights, embed_dtype=None):
        """embed_dtype: the stored dtype of model.embed_tokens.weight ("F32", "BF16", "F16"); only
        Gemma2 uses it (its normalizer's rounding). None: float32/float16 arrays give F32/F16; any
        other array dtype is refused for Gemma2."""
        m = cls.__new__(cls)
        m._setup(cfg, weights, embed_dtype)
        return m

    def _setup(self, cfg, weights, embed_dtype=None):
        self.cfg = cfg
        archs = cfg.get("architectures")
        mt = cfg.get("model_type")
        if archs is None:
            by_mt = {v: k for k, v in ARCHS.items()}
            if mt not in by_mt:
                raise ValueError("config.json: no architectures and model_type %r is not one of %s"
                                 % (mt, sorted(by_mt)))
            archs = [by_mt[mt]]
        if not isinstance(archs, list) or len(archs) != 1:
            raise ValueError("config.json: architectures %r is not a one-element list" % (archs,))
        self.arch = archs[0]
        if self.arch not in ARCHS:
            raise ValueError("config.json: architecture %r not supported (only %s)"
                             % (self.arch, ", ".join(sorted(ARCHS))))
        fam = self.family = ARCHS[self.arch]
        if mt is not None and mt != fam:
            raise ValueError("config.json: model_type %r but architecture %s (model_type %r): "
                             "transformers would build the model_type's class" % (mt, self.arch, fam))
        if fam == "gemma3_text":
            unknown = sorted(set(cfg) - GEMMA3_KEYS_USED - GEMMA3_KEYS_IGNORED)
            if unknown:
                raise ValueError("config.json: key(s) %s not known to this Gemma3 reference "
                                 "(Gemma3TextConfig): refused rather than ignored" % ", ".join(unknown))
        if fam == "phi3":
            unknown = sorted(set(cfg) - PHI3_KEYS_USED - PHI3_KEYS_IGNORED)
            if unknown:
                raise ValueError("config.json: key(s) %s not known to this Phi3 reference "
                                 "(Phi3Config): refused rather than ignored" % ", ".join(unknown))
        self.moe = fam in MOE_FAMILIES
        if self.moe:
            unknown = sorted(set(cfg) - MOE_KEYS_USED[fam] - MOE_KEYS_IGNORED)
            if unknown:
                raise ValueError("config.json: key(s) %s not known to this %s reference (%s): refused "
                                 "rather than ignored" % (", ".join(unknown), MOE_NAME[fam], self.arch))
        self.dim = _int(cfg, "hidden_size")
        # MoE: the dense layers' width (Mixtral: the experts'); the config class's default if absent
        self.inter = _int(cfg, "intermediate_size", MOE_DEFAULTS[fam]["intermediate_size"] if self.moe else None)
        self.n_layers = _int(cfg, "num_hidden_layers")
        self.n_heads = _int(cfg, "num_attention_heads")
        if DEFAULT_KV[fam] == "required" and "num_key_value_heads" not in cfg:
            raise ValueError("config.json: %s without num_key_value_heads: %s" % (GEMMA_NAME[fam], {
                "gemma2": "Gemma2Config's default differs between transformers releases",
                "gemma3_text": "Gemma3TextConfig's default 4 fits no released 1B/270M model"}[fam]))
        self.n_kv = _int(cfg, "num_key_value_heads", DEFAULT_KV[fam], allow_none=True) or self.n_heads
        if fam == "qwen3":
            self.head_dim = _int(cfg, "head_dim", 128)
        elif fam == "gemma3_text":  # Gemma3TextConfig: head_dim 256
            self.head_dim = _int(cfg, "head_dim", 256)
        elif fam == "gemma2":
            self.head_dim = _int(cfg, "head_dim", 256)
            if self.dim % self.n_heads:  # Gemma2Attention / Gemma2Config validation raise too
                raise ValueError("config.json: hidden_size %d is not a multiple of num_attention_heads "
                                 "%d (transformers' Gemma2 refuses it)" % (self.dim, self.n_heads))
        elif fam in ("qwen2", "phi3", "mixtral", "qwen2_moe"):
            # Qwen2Attention / Phi3Attention / MixtralAttention (4.44): head_dim = hidden_size //
            # num_heads, and a hidden size that is not a multiple raises; later releases read a
            # config head_dim when present (getattr(config, "head_dim", hidden // heads); Mixtral
            # 4.51, MixtralConfig head_dim); Qwen2MoeAttention (4.44, 4.51) always takes the
            # quotient but other loaders read the key: one given must agree
            if self.dim % self.n_heads:
                raise ValueError("config.json: hidden_size %d is not a multiple of num_attention_heads "
                                 "%d (transformers' %s refuses it)" % (self.dim, self.n_heads, self.arch))
            self.head_dim = self.dim // self.n_heads
            if "head_dim" in cfg and (isinstance(cfg["head_dim"], bool) or cfg["head_dim"] != self.head_dim):
                raise ValueError("config.json: head_dim %r != hidden_size / num_attention_heads = %d: %s "
                                 "%s (ambiguous)" % (cfg["head_dim"], self.head_dim, self.arch, {
                                     "qwen2_moe": "transformers uses the quotient, other loaders the key"}.get(
                                     fam, "4.44 uses the quotient, later releases the key")))
        elif fam == "qwen3_moe":
            # Qwen3MoeConfig (4.51, 4.52) has no head_dim parameter: Qwen3MoeAttention takes
            # getattr(config, "head_dim", hidden // heads), a config.json key or the quotient
            if "head_dim" not in cfg and self.dim % self.n_heads:
                raise ValueError("config.json: Qwen3-MoE without head_dim and hidden_size %d not a "
                                 "multiple of num_attention_heads %d" % (self.dim, self.n_heads))
            self.head_dim = _int(cfg, "head_dim", self.dim // self.n_heads)
        else:
            self.head_dim = _int(cfg, "head_dim", None, allow_none=True) or self.dim // self.n_heads
        if self.n_heads % self.n_kv or self.head_dim % 2:
            raise ValueError("config.json: %d heads, %d kv heads, head_dim %d"
                             % (self.n_heads, self.n_kv, self.head_dim))
        self.vocab = _int(cfg, "vocab_size")
        # Phi3Config, MixtralConfig: 1e-5
        self.eps = float(cfg.get("rms_norm_eps", 1e-5 if fam in ("phi3", "mixtral") else 1e-6))
        self.gemma = fam in ("gemma2", "gemma3_text")  # Gemma2 and Gemma3: 1 + w norms, sandwich
        self.gemma3 = fam == "gemma3_text"
        if self.gemma:
            self._gemma_setup(cfg, weights, embed_dtype)
        elif cfg.get("hidden_act", "silu") not in ("silu", "swish"):  # ACT2FN: both nn.SiLU
            raise ValueError("config.json: hidden_act %r, only silu supported" % cfg.get("hidden_act"))
        self.qk_norm = fam in ("qwen3", "gemma3_text", "qwen3_moe")
        # Phi3: fused self_attn.qkv_proj ([q; k; v] rows) and mlp.gate_up_proj ([gate; up] rows)
        self.fused = fam == "phi3"
        self.linears = PHI3_LINEARS if self.fused else UNFUSED_LINEARS
        # which linears carry a .bias
        if fam == "mixtral":
            # MixtralAttention, MixtralBlockSparseTop2MLP, the router: bias=False; MixtralConfig has
            # neither key: a config saying true is ambiguous
            for key in ("attention_bias", "mlp_bias"):
                if cfg.get(key, False) is not False:
                    raise ValueError("config.json: %s %r: Mixtral's linears have no biases (transformers "
                                     "ignores the key; ambiguous)" % (key, cfg[key]))
            self.biased = set()
        elif fam in ("qwen2", "qwen2_moe"):
            # Qwen2Attention / Qwen2MoeAttention: q/k/v nn.Linear(bias=True), o_proj bias=False; the
            # MLPs, experts and router: no bias. Neither config has these keys: a config saying
            # otherwise is ambiguous. Qwen2MoeConfig 4.51: qkv_bias (default true)
            if fam == "qwen2_moe" and cfg.get("qkv_bias", True) is not True:
                raise ValueError("config.json: qkv_bias %r: transformers 4.51 then drops the q/k/v biases, "
                                 "4.44 always has them (ambiguous)" % (cfg["qkv_bias"],))
            if cfg.get("attention_bias", True) is not True:
                raise ValueError("config.json: attention_bias %r but Qwen2's q/k/v projections always "
                                 "have biases (transformers ignores the key; ambiguous)" % (cfg["attention_bias"],))
            if cfg.get("mlp_bias", False) is not False:
                raise ValueError("config.json: mlp_bias %r but Qwen2MLP has no biases (transformers "
                                 "ignores the key; ambiguous)" % (cfg["mlp_bias"],))
            self.biased = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}
        elif fam == "phi3":
            # Phi3Attention: qkv_proj and o_proj bias=False; Phi3MLP: bias=False
            for key in ("attention_bias", "mlp_bias"):
                if cfg.get(key, False) is not False:
                    raise ValueError("config.json: %s %r: Phi3's linears have no biases (transformers "
                                     "ignores the key; ambiguous)" % (key, cfg[key]))
            self.biased = set()
        else:
            attn_bias = fam != "mistral" and bool(cfg.get("attention_bias", False))
            mlp_bias = fam == "llama" and bool(cfg.get("mlp_bias", False))
            self.biased = {m for m in self.linears if (attn_bias if m.startswith("self_attn") else mlp_bias)}
        self.tied = bool(cfg.get("tie_word_embeddings", self.gemma))  # Gemma2/Gemma3 configs: True
        # which layers are sparse (MoE) and how they route; all dense outside MOE_FAMILIES
        self.sparse = [False] * self.n_layers
        if self.moe:
            self._moe_setup(cfg)
        # per layer: the sliding window (None: full causal) and RoPE's inverse frequencies
        self.windows = [None] * self.n_layers
        hd = self.head_dim
        self.rope_type, self.rotary_dim = "default", hd
        if not self.gemma3:
            self._rope_setup(cfg)
        self._windows(cfg)
        if self.gemma3:  # per layer type (after _windows: it needs layer_types)
            self.rope_by_type = self._gemma3_rope(cfg)
            self.layer_inv_freq = [self.rope_by_type[t][2] for t in self.layer_types]
            self.theta = self.rope_by_type["full_attention"][0]
        else:  # longrope: the short-factor table (rope_tables picks per T)
            self.inv_freq = self.inv_freq_for(self.short_factor if self.rope_type == "longrope" else None)
            self.layer_inv_freq = [self.inv_freq] * self.n_layers
        self._take_weights(weights)

    def _moe_setup(self, cfg):
        """The routed MLP of MixtralForCausalLM / Qwen2MoeForCausalLM / Qwen3MoeForCausalLM (the
        docstring's "Mixture of experts"): self.sparse (per layer), n_experts, top_k, norm_topk,
        moe_inter (expert width), shared_inter (Qwen2-MoE's shared expert; else None),
        moe_prefix and expert_names (gate, up, down)."""
        fam, L, d = self.family, self.n_layers, MOE_DEFAULTS[self.family]
        name = MOE_NAME[fam]
        if fam == "mixtral":
            # MixtralDecoderLayer: block_sparse_moe on every layer; the experts are
            # MixtralBlockSparseTop2MLP(intermediate_size): w2(silu(w1 x) * w3 x); always renormalised
            self.n_experts = _int(cfg, "num_local_experts", d["num_local_experts"])
            self.sparse = [True] * L
            self.norm_topk = True
            self.moe_inter, self.shared_inter = self.inter, None
            self.moe_prefix, self.expert_names = "block_sparse_moe.", ("w1", "w3", "w2")
        else:
            E = cfg.get("num_experts", d["num_experts"])
            if isinstance(E, bool) or not isinstance(E, int) or E < 0:
                raise ValueError("config.json: num_experts %r is not a non-negative integer" % (E,))
            self.n_experts = E
            step = _int(cfg, "decoder_sparse_step", d["decoder_sparse_step"])
            mol = cfg.get("mlp_only_layers")
            mol = [] if mol is None else mol  # Qwen2MoeConfig / Qwen3MoeConfig: None -> []
            if not isinstance(mol, list) or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < L
                                                for i in mol):
                raise ValueError("config.json: mlp_only_layers %r: want a list of layer indices in [0, %d) "
                                 "(transformers only tests membership; refused as a likely mistake)" % (mol, L))
            # Qwen2MoeDecoderLayer / Qwen3MoeDecoderLayer
            self.sparse = [i not in mol and E > 0 and (i + 1) % step == 0 for i in range(L)]
            norm = cfg.get("norm_topk_prob", d["norm_topk_prob"])
            if not isinstance(norm, bool):
                raise ValueError("config.json: norm_topk_prob %r is not a boolean" % (norm,))
            self.norm_topk = norm
            self.moe_inter = _int(cfg, "moe_intermediate_size", d["moe_intermediate_size"])
            self.shared_inter = None
            if fam == "qwen2_moe":  # Qwen2MoeSparseMoeBlock: shared_expert + shared_expert_gate, always
                self.shared_inter = _int(cfg, "shared_expert_intermediate_size",
                                         d["shared_expert_intermediate_size"])
            self.moe_prefix, self.expert_names = "mlp.", ("gate_proj", "up_proj", "down_proj")
        self.top_k = _int(cfg, "num_experts_per_tok", d["num_experts_per_tok"])
        if any(self.sparse) and self.top_k > self.n_experts:
            raise ValueError("config.json: num_experts_per_tok %d > %d experts (torch.topk raises)"
                             % (self.top_k, self.n_experts))
        # the smallest gap between the k-th and (k+1)-th routing probability seen by a forward
        # (float32 rounding in transformers could swap experts closer than ~1e-7); None: none yet
        self.min_route_margin = None
        self.moe_name = name

    def moe_block(self, X, l):
        """The routed MLP of layer l on X (N, hidden) float64 -> (N, hidden)."""
        w = self.w
        pre = "model.layers.%d.%s" % (l, self.moe_prefix)
        logits = X @ w[pre + "gate.weight"].T
        sel, wts, margin = moe_route(logits, self.top_k, self.norm_topk)
        if margin is not None and (self.min_route_margin is None or margin < self.min_route_margin):
            self.min_route_margin = margin
        out = np.zeros_like(X)
        for e in range(self.n_experts):
            rows, slot = np.nonzero(sel == e)  # each token picks an expert at most once
            if rows.size:
                out[rows] += wts[rows, slot, None] * self.swiglu(X[rows], pre + "experts.%d." % e,
                                                                  self.expert_names)
        if self.shared_inter is not None:
            g = X @ w[pre + "shared_expert_gate.weight"].T  # (N, 1)
            sig = np.exp(-np.logaddexp(0.0, -g))  # sigmoid, no overflow at large |g|
            out += sig * self.swiglu(X, pre + "shared_expert.", ("gate_proj", "up_proj", "down_proj"))
        return out

    def swiglu(self, X, p, names):
        """down(silu(gate X) * up X) with the weights p + names[i] + ".weight"."""
        g = X @ self.w[p + names[0] + ".weight"].T
        u = X @ self.w[p + names[1] + ".weight"].T
        return ((g / (1.0 + np.exp(-g))) * u) @ self.w[p + names[2] + ".weight"].T

    def _gemma_setup(self, cfg, weights, embed_dtype):
        """Gemma2ForCausalLM's / Gemma3ForCausalLM's extras (modeling_gemma2 / configuration_gemma2,
        modeling_gemma3 / configuration_gemma3 Gemma3TextConfig)."""
        name = GEMMA_NAME[self.family]
        # Gemma2MLP (Gemma3MLP): ACT2FN[config.hidden_activation]; hidden_act is not read by
        # transformers, but Google's configs carry both and other loaders (vLLM) read hidden_act
        act = cfg.get("hidden_activation", "gelu_pytorch_tanh")
        if act != "gelu_pytorch_tanh":
            raise ValueError("config.json: hidden_activation %r, only gelu_pytorch_tanh supported" % (act,))
        if "hidden_act" in cfg and cfg["hidden_act"] != act:
            raise ValueError("config.json: hidden_act %r != hidden_activation %r (transformers' %s "
                             "reads only hidden_activation; ambiguous)" % (cfg["hidden_act"], act, name))
        # Gemma2Attention / Gemma3Attention: scaling = query_pre_attn_scalar ** -0.5; Gemma2Config's
        # default went from 224 to 256 between releases, Gemma3TextConfig's 256 is not every
        # model's (27B: 168): it must be given
        if "query_pre_attn_scalar" not in cfg:
            raise ValueError("config.json: %s without query_pre_attn_scalar: the config class's "
                             "default is not every model's" % name)
        self.scaling = _num(cfg, "query_pre_attn_scalar") ** -0.5
        if self.family == "gemma3_text":
            # Gemma3TextConfig: both default None. Gemma3ForCausalLM applies final_logit_softcapping;
            # Gemma3Attention passes no softcap to its attention function, so a non-null
            # attn_logit_softcapping is silently ignored by transformers (others may apply it)
            if cfg.get("attn_logit_softcapping") is not None:
                raise ValueError("config.json: Gemma3 attn_logit_softcapping %r: transformers' "
                                 "Gemma3Attention ignores it, other loaders may not (ambiguous); "
                                 "want null" % (cfg["attn_logit_softcapping"],))
            self.attn_cap = None
            self.final_cap = _num(cfg, "final_logit_softcapping", None, allow_none=True)
        else:
            self.attn_cap = _num(cfg, "attn_logit_softcapping", 50.0, allow_none=True)
            self.final_cap = _num(cfg, "final_logit_softcapping", 30.0, allow_none=True)
        if cfg.get("use_bidirectional_attention"):
            raise ValueError("config.json: use_bidirectional_attention %r not supported (causal only)"
                             % (cfg["use_bidirectional_attention"],))
        if embed_dtype is None:
            e = weights.get("model.embed_tokens.weight")
            embed_dtype = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}.get(
                getattr(e, "dtype", None))
            if embed_dtype is None:
                raise ValueError("%s: the embedding's stored dtype is unknown (array dtype %s): pass "
                                 "embed_dtype (F32, BF16 or F16), it rounds the sqrt(hidden) normalizer"
                                 % (name, getattr(e, "dtype", None)))
        self.embed_dtype = embed_dtype
        self.normalizer = gemma_normalizer(self.dim, embed_dtype)

    def _rope_setup(self, cfg):
        """RoPE of every family but Gemma3 (that one: _gemma3_rope). Sets self.theta,
        self.rotary_dim, self.rope_type ("default"; "longrope", Phi3 only; "dynamic", Llama only)
        and the type's parameters. Semantics and refusals: the module docstring, "RoPE variants"."""
        fam, hd = self.family, self.head_dim
        theta = cfg.get("rope_theta")
        self.rope_type, scaling = "default", None
        for key in ("rope_scaling", "rope_parameters"):
            d = cfg.get(key)
            if d is None:
                continue
            if not isinstance(d, dict):
                raise ValueError("config.json: %s %r not supported" % (key, d))
            if "rope_type" in d and "type" in d and d["type"] != d["rope_type"]:
                raise ValueError("config.json: %s type %r != rope_type %r" % (key, d["type"], d["rope_type"]))
            t = d.get("rope_type", d.get("type", "default"))
            if t != "default":
                if key != "rope_scaling":
                    raise ValueError("config.json: %s type %r not supported (default only there)" % (key, t))
                if fam == "phi3" and t in ("longrope", "su"):  # "su": Phi3Config's old name for it
                    self.rope_type, scaling = "longrope", d
                elif fam == "llama" and t == "dynamic":
                    self.rope_type, scaling = "dynamic", d
                elif t == "yarn":
                    raise ValueError("config.json: rope_scaling type 'yarn' not supported%s" % (
                        " (Phi3Config renames it to longrope, the old remote Phi3 code applied YaRN's "
                        "attention factor: ambiguous)" if fam == "phi3" else " (YaRN is not implemented)"))
                elif fam in ("mistral", "qwen2", "gemma2", "mixtral", "qwen2_moe"):
                    raise ValueError("config.json: rope_scaling type %r on %s: transformers 4.44's class "
                                     "ignores rope_scaling, 4.51's applies it (ambiguous); default only"
                                     % (t, self.arch))
                else:
                    raise ValueError("config.json: rope_scaling type %r not supported for %s (%s)" % (
                        t, self.arch, {"phi3": "default or longrope", "llama": "default or dynamic"}.get(
                            fam, "default RoPE only")))
            if "rope_theta" in d:
                if theta is not None and float(theta) != float(d["rope_theta"]):
                    raise ValueError("config.json: rope_theta %r != %s.rope_theta %r"
                                     % (theta, key, d["rope_theta"]))
                theta = d["rope_theta"]
            if "partial_rotary_factor" in d and d["partial_rotary_factor"] != 1.0:
                raise ValueError("config.json: %s.partial_rotary_factor not supported" % key)
        # MixtralConfig: rope_theta 1e6; every other config class here: 1e4
        self.theta = float((1000000.0 if fam == "mixtral" else 10000.0) if theta is None else theta)
        # partial_rotary_factor (Phi3, transformers >= 4.49 semantics; 4.44's Phi3 ignores the key)
        f = cfg.get("partial_rotary_factor", 1.0)
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f <= 1.0:
            raise ValueError("config.json: partial_rotary_factor %r is not a number in (0, 1]" % (f,))
        if fam != "phi3" and f != 1.0:
            raise ValueError("config.json: partial_rotary_factor %r not supported for %s (Phi3 only)"
                             % (f, self.arch))
        rd = self.rotary_dim = int(hd * f)  # Phi3Config / _compute_*_parameters: int(head_dim * f)
        if rd < 2 or rd % 2:
            raise ValueError("config.json: rotary dims int(head_dim %d * partial_rotary_factor %r) = %d: want "
                             "an even number >= 2" % (hd, f, rd))
        if self.rope_type == "longrope":
            d = scaling
            if "attention_factor" in d:
                raise ValueError("config.json: rope_scaling.attention_factor: transformers 4.51 uses it in "
                                 "place of sqrt(1 + ln s / ln original), 4.44 ignores it (releases disagree)")
            extra = sorted(set(d) - {"type", "rope_type", "short_factor", "long_factor", "factor",
                                     "original_max_position_embeddings"})
            if extra:
                raise ValueError("config.json: rope_scaling (longrope) keys %s not supported" % extra)
            if "factor" in d:  # unused: Phi3 takes the scale from max / original max positions
                _num(d, "factor")
            self.max_pos = _int(cfg, "max_position_embeddings", 4096)  # Phi3Config defaults
            self.orig_max = _int(cfg, "original_max_position_embeddings", 4096)
            if "original_max_position_embeddings" in d and d["original_max_position_embeddings"] != self.orig_max:
                raise ValueError("config.json: rope_scaling.original_max_position_embeddings %r != the "
                                 "top-level %d (transformers <= 4.51 reads the top-level key: ambiguous)"
                                 % (d["original_max_position_embeddings"], self.orig_max))
            for name in ("short_factor", "long_factor"):
                v = d.get(name)
                if not isinstance(v, list) or len(v) != rd // 2 or any(
                        isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 < x < float("inf")
                        for x in v):
                    raise ValueError("config.json: rope_scaling.%s %s: want a list of %d (rotary dims / 2) "
                                     "positive numbers" % (name, repr(v) if not isinstance(v, list) or len(v) < 8
                                                           else "[%d values]" % len(v), rd // 2))
                setattr(self, name, np.array(v, dtype=np.float64))
            s = self.max_pos / self.orig_max
            if s <= 1.0:
                self.attn_factor = 1.0
            elif self.orig_max < 2:
                raise ValueError("config.json: original_max_position_embeddings %d: ln(it) = 0 divides "
                                 "the attention factor" % self.orig_max)
            else:
                self.attn_factor = float(np.sqrt(1.0 + np.log(s) / np.log(self.orig_max)))
        elif self.rope_type == "dynamic":
            extra = sorted(set(scaling) - {"type", "rope_type", "factor"})
            if extra:
                raise ValueError("config.json: rope_scaling (dynamic) keys %s not supported (transformers "
                                 "<= 4.51 grows the base past max_position_embeddings, whatever they say)"
                                 % extra)
            self.dyn_factor = _num(scaling, "factor")
            self.max_pos = _int(cfg, "max_position_embeddings", 2048)  # LlamaConfig's default

    def inv_freq_for(self, ext=None):
        """theta^(-2i/rotary_dim), i < rotary_dim/2, divided by ext (longrope's factors) when given."""
        rd = self.rotary_dim
        base = self.theta ** (np.arange(0, rd, 2, dtype=np.float64) / rd)
        return 1.0 / (base if ext is None else ext * base)

    def rope_tables(self, T):
        """Per layer (inv_freq, cos/sin multiplier) for a forward over T tokens (positions 0..T-1).
        longrope: short factors when T <= original_max_position_embeddings, else long ones, and the
        attention factor; dynamic: the unscaled table while T <= max_position_embeddings (refused
        beyond: transformers grows the base there)."""
        if self.rope_type == "longrope":
            inv = self.inv_freq_for(self.long_factor if T > self.orig_max else self.short_factor)
            return [(inv, self.attn_factor)] * self.n_layers
        if self.rope_type == "dynamic" and T > self.max_pos:
            raise ValueError("%d tokens > max_position_embeddings %d with dynamic NTK RoPE: transformers "
                             "grows the base there, not implemented" % (T, self.max_pos))
        return [(inv, 1.0) for inv in self.layer_inv_freq]

    def _gemma3_rope(self, cfg):
        """{layer type: (theta, linear factor, inv_freq)} as Gemma3RotaryEmbedding builds them.
        transformers 4.50-4.5x: full layers use rope_theta (default 1e6) with rope_scaling, sliding
        layers a copy of the config with rope_theta = rope_local_base_freq (default 1e4) and
        rope_scaling {"rope_type": "default"}. 5.x: rope_parameters {full_attention: rope_scaling +
        rope_theta, sliding_attention: {"rope_type": "default", rope_theta: rope_local_base_freq}}.
        Linear (_compute_linear_scaling_rope_parameters): the default inv_freq / factor."""
        hd = self.head_dim

        def parse(d, where):
            if not isinstance(d, dict):
                raise ValueError("config.json: %s %r is not a dict" % (where, d))
            extra = sorted(set(d) - {"rope_type", "type", "factor", "rope_theta"})
            if extra:
                raise ValueError("config.json: %s keys %s not supported (default or linear RoPE only)"
                                 % (where, extra))
            t = d.get("rope_type", d.get("type", "default"))
            if "rope_type" in d and "type" in d and d["type"] != d["rope_type"]:
                raise ValueError("config.json: %s type %r != rope_type %r"
                                 % (where, d["type"], d["rope_type"]))
            if t == "linear":
                f = _num(d, "factor")
            elif t == "default":
                if "factor" in d:
                    raise ValueError("config.json: %s has a factor but rope_type default" % where)
                f = 1.0
            else:
                raise ValueError("config.json: %s type %r not supported (default or linear only)"
                                 % (where, t))
            th = _num(d, "rope_theta") if "rope_theta" in d else None
            return f, th

        flat = {"full_attention": ("rope_theta", 1000000.0),
                "sliding_attention": ("rope_local_base_freq", 10000.0)}
        out = {}
        rp = cfg.get("rope_parameters")
        rs = cfg.get("rope_scaling")
        if rp is not None:
            if rs is not None:
                raise ValueError("config.json: both rope_parameters and rope_scaling: give one")
            if not isinstance(rp, dict) or set(rp) != set(LAYER_TYPES):
                raise ValueError("config.json: rope_parameters %r: want a dict keyed by exactly %s"
                                 % (rp, LAYER_TYPES))
        for t in LAYER_TYPES:
            key, default = flat[t]
            theta = _num(cfg, key, default)
            if rp is not None:
                f, th = parse(rp[t], "rope_parameters.%s" % t)
            elif t == "full_attention" and rs is not None:
                f, th = parse(rs, "rope_scaling")
            else:
                f, th = 1.0, None
            if th is not None:
                if key in cfg and th != theta:
                    raise ValueError("config.json: %s %r != %s rope_theta %r" % (key, cfg[key], t, th))
                theta = th
            inv = 1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)) / f
            out[t] = (theta, f, inv)
        return out

    def _windows(self, cfg):
        """self.max_len: the longest T with no key hidden by a window (None: no limit)."""
        self.max_len, self.window_why = None, ""
        L = self.n_layers

        def limit(w, why):
            if self.max_len is None or w < self.max_len:
                self.max_len, self.window_why = w, why

        if self.family == "gemma3_text":
            # computed, not refused: Gemma3TextConfig (4.53+): layer_types, default from
            # sliding_window_pattern P (default 6): layer i slides iff (i + 1) % P != 0 (the last of
            # every P layers is full); transformers 4.50-4.52: Gemma3Attention.is_sliding =
            # bool((layer_idx + 1) % config.sliding_window_pattern), no layer_types. A config giving
            # both must agree. Query i sees key j iff i - W < j <= i on sliding layers.
            pats = {k: cfg[k] for k in ("sliding_window_pattern", "_sliding_window_pattern") if k in cfg}
            for k, v in pats.items():
                _int(cfg, k)
            if len(set(pats.values())) > 1:
                raise ValueError("config.json: sliding_window_pattern %r != _sliding_window_pattern %r"
                                 % (pats["sliding_window_pattern"], pats["_sliding_window_pattern"]))
            P = next(iter(pats.values()), 6)
            by_pat = ["sliding_attention" if (i + 1) % P else "full_attention" for i in range(L)]
            lt = cfg.get("layer_types")
            if lt is None:
                lt = by_pat
            if not isinstance(lt, list) or len(lt) != L or any(t not in LAYER_TYPES for t in lt):
                raise ValueError("config.json: layer_types %r is not %d of %s" % (lt, L, LAYER_TYPES))
            if pats and lt != by_pat:
                raise ValueError("config.json: layer_types %r disagrees with sliding_window_pattern %d "
                                 "(%r): transformers before 4.53 reads only the pattern" % (lt, P, by_pat))
            self.layer_types = lt
            sl = [i for i, t in enumerate(lt) if t == "sliding_attention"]
            w = _int(cfg, "sliding_window", 4096, allow_none=True)
            if sl and w is None:
                raise ValueError("config.json: Gemma3 sliding_window null but layers %s are "
                                 "sliding_attention" % sl)
            self.windows = [w if t == "sliding_attention" else None for t in lt]
        elif self.family == "gemma2":
            # transformers 4.42-4.5x: Gemma2Attention.sliding_window = config.sliding_window if not
            # layer_idx % 2 (even layers slide); later releases: layer_types, default
            # "sliding_attention" for even i. Computed on those layers; a layer_types that differs
            # from the even layers is refused past W (the releases disagree there).
            w = _int(cfg, "sliding_window", 4096, allow_none=True)
            even = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(L)]
            lt = cfg.get("layer_types")
            if lt is None:
                lt = even
            if not isinstance(lt, list) or len(lt) != L or any(t not in LAYER_TYPES for t in lt):
                raise ValueError("config.json: layer_types %r is not %d of %s" % (lt, L, LAYER_TYPES))
            self.layer_types = lt
            if w is None:
                raise ValueError("config.json: Gemma2 sliding_window null: the even layers slide "
                                 "(always, in transformers before layer_types) and the window is unset")
            self.windows = [w if t == "sliding_attention" else None for t in lt]
            if lt != even:
                limit(w, "Gemma2 layer_types %r differ from the even layers that transformers before "
                      "4.54 slides" % lt)
        elif self.family in ("mistral", "phi3", "mixtral"):
            # MistralConfig sliding_window (default 4096; null = none), Phi3Config and MixtralConfig
            # sliding_window (default null = none): every layer, computed (Mixtral: 4.51's eager
            # mask; 4.44's eager Mixtral uses Llama's causal mask and ignores it)
            w = _int(cfg, "sliding_window", 4096 if self.family == "mistral" else None, allow_none=True)
            self.windows = [w] * L
        elif self.family in ("qwen2_moe", "qwen3_moe"):
            # Qwen2MoeConfig / Qwen3MoeConfig: sliding_window = sliding_window if use_sliding_window
            # else None (5.x Qwen2MoeConfig: 0), so with use_sliding_window false no release windows
            # anything. True is refused: 4.44's eager Qwen2-MoE ignores the window, 4.51's eager mask
            # applies it to every layer, the flash path to layers >= max_window_layers, 5.x's
            # Qwen2MoeConfig layer_types default slides the even layers i < max_window_layers
            name = MOE_NAME[self.family]
            use = cfg.get("use_sliding_window", False)
            if not isinstance(use, bool):
                raise ValueError("config.json: use_sliding_window %r is not a boolean" % (use,))
            _int(cfg, "sliding_window", 4096, allow_none=True)
            mwl = cfg.get("max_window_layers", 28)
            if isinstance(mwl, bool) or not isinstance(mwl, int):
                raise ValueError("config.json: max_window_layers %r is not an integer" % (mwl,))
            if use:
                raise ValueError("config.json: %s use_sliding_window true not supported: %s4.51's eager mask "
                                 "applies sliding_window to every layer, its flash path only to layers >= "
                                 "max_window_layers%s (ambiguous)" % (name, {
                                     "qwen2_moe": "transformers 4.44's eager attention ignores it, "}.get(
                                     self.family, "transformers "), {
                                     "qwen2_moe": ", 5.x's layer_types default to the even layers < "
                                     "max_window_layers"}.get(self.family, "")))
            lt = cfg.get("layer_types")
            if lt is not None and (not isinstance(lt, list) or lt != ["full_attention"] * L):
                raise ValueError("config.json: %s layer_types %r: want null or %d x full_attention (no "
                                 "sliding layers: use_sliding_window is false)" % (name, lt, L))
            self.layer_types = ["full_attention"] * L
        elif self.family in ("qwen2", "qwen3"):
            # Qwen2Config and Qwen3Config: the same keys, the same defaults, the same rule
            name = {"qwen2": "Qwen2", "qwen3": "Qwen3"}[self.family]
            raw = _int(cfg, "sliding_window", 4096, allow_none=True)
            use = cfg.get("use_sliding_window", False)
            if not isinstance(use, bool):
                raise ValueError("config.json: use_sliding_window %r is not a boolean" % (use,))
            w = raw if use else None
            mwl = cfg.get("max_window_layers", 28)
            if isinstance(mwl, bool) or not isinstance(mwl, int):
                raise ValueError("config.json: max_window_layers %r is not an integer" % (mwl,))
            lt = cfg.get("layer_types")
            if lt is None:
                lt = ["sliding_attention" if w is not None and i >= mwl else "full_attention"
                      for i in range(L)]
            if not isinstance(lt, list) or len(lt) != L or any(t not in LAYER_TYPES for t in lt):
                raise ValueError("config.json: layer_types %r is not %d of %s" % (lt, L, LAYER_TYPES))
            self.layer_types = lt
            sl = [i for i, t in enumerate(lt) if t == "sliding_attention"]
            if sl and w is None:
                raise ValueError("config.json: layers %s are sliding_attention but the window is "
                                 "unset (sliding_window %r, use_sliding_window %r); transformers "
                                 "raises too" % (sl, raw, use))
            # computed on the sliding layers (layer_types' semantics, transformers >= 4.53, and
            # the per-layer flash path before it)
            self.windows = [w if t == "sliding_attention" else None for t in lt]
            if raw is not None and not use:
                limit(raw, "%s config sliding_window %d with use_sliding_window false: "
                      "transformers before masking_utils applied it to every layer" % (name, raw))

    def _take_weights(self, weights):
        D, H, Hkv, hd, I, V = self.dim, self.n_heads, self.n_kv, self.head_dim, self.inter, self.vocab
        want = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,)}
        if not self.tied:
            want["lm_head.weight"] = (V, D)
        shapes = {"self_attn.q_proj": (H * hd, D), "self_attn.k_proj": (Hkv * hd, D),
                  "self_attn.v_proj": (Hkv * hd, D), "self_attn.o_proj": (D, H * hd),
                  "mlp.gate_proj": (I, D), "mlp.up_proj": (I, D), "mlp.down_proj": (D, I),
                  "self_attn.qkv_proj": ((H + 2 * Hkv) * hd, D), "mlp.gate_up_proj": (2 * I, D)}
        lin = {m: shapes[m] for m in self.linears}
        for l in range(self.n_layers):
            p = "model.layers.%d." % l
            want[p + "input_layernorm.weight"] = (D,)
            want[p + "post_attention_layernorm.weight"] = (D,)
            if self.gemma:  # Gemma2DecoderLayer (Gemma3DecoderLayer): sandwich norms around the MLP too
                want[p + "pre_feedforward_layernorm.weight"] = (D,)
                want[p + "post_feedforward_layernorm.weight"] = (D,)
            for m, shape in lin.items():
                if self.sparse[l] and m.startswith("mlp."):  # a sparse layer has no dense MLP
                    continue
                want[p + m + ".weight"] = shape
                if m in self.biased:
                    want[p + m + ".bias"] = shape[:1]
            if self.sparse[l]:  # the router, E experts, Qwen2-MoE's shared expert and its gate
                pre, Im = p + self.moe_prefix, self.moe_inter
                want[pre + "gate.weight"] = (self.n_experts, D)
                g, u, dn = self.expert_names
                for e in range(self.n_experts):
                    q = pre + "experts.%d." % e
                    want[q + g + ".weight"] = (Im, D)
                    want[q + u + ".weight"] = (Im, D)
                    want[q + dn + ".weight"] = (D, Im)
                if self.shared_inter is not None:
                    Is = self.shared_inter
                    want[pre + "shared_expert.gate_proj.weight"] = (Is, D)
                    want[pre + "shared_expert.up_proj.weight"] = (Is, D)
                    want[pre + "shared_expert.down_proj.weight"] = (D, Is)
                    want[pre + "shared_expert_gate.weight"] = (1, D)
            if self.qk_norm:
                want[p + "self_attn.q_norm.weight"] = (hd,)
                want[p + "self_attn.k_norm.weight"] = (hd,)
        # accepted unread, as transformers' loader drops them: RoPE's non-persistent inv_freq
        # buffers, and under tie_word_embeddings an lm_head.weight equal to the embedding
        ignore = {"model.rotary_emb.inv_freq": (self.rotary_dim // 2,)}
        for l in range(self.n_layers):
            ignore["model.layers.%d.self_attn.rotary_emb.inv_freq" % l] = (self.rotary_dim // 2,)
        if self.gemma3:  # Gemma3RotaryEmbedding's per-type buffers (5.x), rotary_emb_local (4.50)
            ignore["model.rotary_emb_local.inv_freq"] = (hd // 2,)
            for t in LAYER_TYPES:
                ignore["model.rotary_emb.%s_inv_freq" % t] = (hd // 2,)
                ignore["model.rotary_emb.%s_original_inv_freq" % t] = (hd // 2,)
        if self.tied:
            ignore["lm_head.weight"] = (V, D)
        for name in sorted(weights):
            if name not in want and name not in ignore:
                hint = self._moe_hint(name)
                if hint:
                    pass
                elif name.endswith(("q_norm.weight", "k_norm.weight")):
                    hint = " (q/k norms are Qwen3's and Gemma3's; architecture is %s)" % self.arch
                elif name.endswith(("pre_feedforward_layernorm.weight", "post_feedforward_layernorm.weight")):
                    hint = " (feed-forward norms are Gemma2's and Gemma3's; architecture is %s)" % self.arch
                elif name.endswith((".qkv_proj.weight", ".gate_up_proj.weight")):
                    hint = " (fused projections are Phi3's; architecture is %s)" % self.arch
                elif self.fused and name.endswith(tuple("%s.weight" % m for m in UNFUSED_LINEARS)):
                    hint = " (Phi3 fuses q/k/v into self_attn.qkv_proj and gate/up into mlp.gate_up_proj)"
                elif name.endswith(".bias"):
                    hint = " (config.json attention_bias %r, mlp_bias %r; %s)" % (
                        self.cfg.get("attention_bias"), self.cfg.get("mlp_bias"), self.arch)
                    if self.family == "qwen2":
                        hint = " (Qwen2 has q/k/v biases only)"
                raise ValueError("tensor %s %s is not used by %s%s"
                                 % (name, list(np.shape(weights[name])), self.arch, hint))
            shape = want.get(name, ignore.get(name))
            if tuple(np.shape(weights[name])) != shape:
                raise ValueError("tensor %s has shape %s, want %s"
                                 % (name, list(np.shape(weights[name])), list(shape)))
        missing = sorted(set(want) - set(weights))
        if missing:
            raise ValueError("tensors missing: %s%s" % (", ".join(missing[:5]),
                             " ... (%d)" % len(missing) if len(missing) > 5 else ""))
        if self.tied and "lm_head.weight" in weights and not np.array_equal(
                weights["lm_head.weight"], weights["model.embed_tokens.weight"]):
            raise ValueError("tensor lm_head.weight differs from model.embed_tokens.weight but "
                             "tie_word_embeddings is true (transformers would use the embedding)")
        # w32: the weights as given (float32 when read from a directory), for the solver fixture
        self.w32 = {k: weights[k] for k in want}
        self.w = {k: np.asarray(v, dtype=np.float64) for k, v in self.w32.items()}
        self.lm_head = self.w["model.embed_tokens.weight"] if self.tied else self.w["lm_head.weight"]

    def _moe_hint(self, name):
        """Why an unused tensor is unused, when it is about a (dense or routed) MLP; else ""."""
        parts = name.split(".")
        if len(parts) < 4 or parts[:2] != ["model", "layers"] or not parts[2].isdigit():
            return ""
        l, rest = int(parts[2]), ".".join(parts[3:])
        routed = rest.startswith(("block_sparse_moe.", "mlp.gate.", "mlp.experts.", "mlp.shared_expert"))
        dense = rest.startswith(("mlp.gate_proj.", "mlp.up_proj.", "mlp.down_proj."))
        if not self.moe:
            return (" (routed experts are Mixtral's, Qwen2-MoE's and Qwen3-MoE's; architecture is %s)"
                    % self.arch) if routed else ""
        if l >= self.n_layers or not (routed or dense):
            return ""
        if not self.sparse[l]:
            return (" (layer %d is dense under %s: mlp.gate_proj/up_proj/down_proj; sparse iff not in "
                    "mlp_only_layers %r, num_experts %d > 0 and (layer + 1) %% decoder_sparse_step %r == 0)"
                    % (l, self.arch, self.cfg.get("mlp_only_layers"), self.n_experts,
                       self.cfg.get("decoder_sparse_step", 1))) if routed else ""
        return (" (layer %d of %s is sparse: %sgate.weight, %sexperts.0..%d.{%s}.weight%s)"
                % (l, self.arch, self.moe_prefix, self.moe_prefix, self.n_experts - 1,
                   ",".join(self.expert_names),
                   ", mlp.shared_expert.{gate,up,down}_proj.weight, mlp.shared_expert_gate.weight"
                   if self.shared_inter is not None else ""))

    def rmsnorm(self, x, w):
        var = np.mean(x * x, axis=-1, keepdims=True)
        if self.gemma:  # Gemma2RMSNorm/Gemma3RMSNorm: x.float() * rsqrt(mean(x^2) + eps) * (1 + w.float())
            return (x / np.sqrt(var + self.eps)) * (1.0 + w)
        return (x / np.sqrt(var + self.eps)) * w

    def rope(self, x, T, inv_freq=None, mscale=1.0):
        # x: (B, H, T, hd). HF: emb = cat(freqs, freqs); x*cos + rotate_half(x)*sin,
        # rotate_half(x) = cat(-x[..., r/2:r], x[..., :r/2]) over the first r = 2 len(inv_freq) dims
        # (r = head_dim but for Phi3's partial_rotary_factor; the rest pass unrotated, 4.49+
        # apply_rotary_pos_emb); cos and sin times mscale (longrope's attention factor).
        # inv_freq: the layer's (Gemma3: per type)
        inv = self.inv_freq if inv_freq is None else inv_freq
        pos = np.arange(T, dtype=np.float64)
        freqs = np.outer(pos, inv)
        emb = np.concatenate([freqs, freqs], axis=-1)
        cos, sin = np.cos(emb) * mscale, np.sin(emb) * mscale
        r = 2 * len(inv)
        half = r // 2
        xr = x[..., :r]
        rot = np.concatenate([-xr[..., half:], xr[..., :half]], axis=-1)
        return np.concatenate([xr * cos + rot * sin, x[..., r:]], axis=-1)

    def linear(self, x, name):
        y = x @ self.w[name + ".weight"].T
        b = self.w.get(name + ".bias")
        return y if b is None else y + b

    def forward(self, ids, hook=None):
        """ids: int array (B, T). Returns float64 logits (B, T, vocab).
        hook(layer, group, X) gets float64 X of shape (B*T, n) for groups qkv, o, gateup, down."""
        ids = np.asarray(ids)
        if ids.ndim == 1:
            ids = ids[None, :]
        B, T = ids.shape
        if self.max_len is not None and T > self.max_len:
            raise ValueError("%d tokens but %s: a key would fall outside the window, and the "
                             "transformers releases disagree on whether it does" % (T, self.window_why))
        H, Hkv, hd = self.n_heads, self.n_kv, self.head_dim
        rep = H // Hkv
        h = self.w["model.embed_tokens.weight"][ids]  # (B, T, D)
        gemma = self.gemma
        if gemma:
            h = h * self.normalizer
        # True = hidden: causal (j > i), and on a sliding layer of window W also j <= i - W
        # (masking_utils: sliding_window_overlay kv_idx > q_idx - W AND causal kv_idx <= q_idx;
        # Gemma3 4.50: torch.tril(ones, diagonal=-W) masked)
        masks = {W: window_mask(T, W) for W in set(self.windows)}
        ropes = self.rope_tables(T)
        I = self.inter
        scale = self.scaling if gemma else 1.0 / np.sqrt(hd)
        for l in range(self.n_layers):
            p = "model.layers.%d." % l
            w = self.w
            x = self.rmsnorm(h, w[p + "input_layernorm.weight"])
            if hook:
                hook(l, "qkv", x.reshape(B * T, -1))
            if self.fused:  # Phi3Attention: qkv rows [q (H hd); k (Hkv hd); v (Hkv hd)]
                qkv = self.linear(x, p + "self_attn.qkv_proj")
                q, k, v = qkv[..., :H * hd], qkv[..., H * hd:(H + Hkv) * hd], qkv[..., (H + Hkv) * hd:]
            else:
                q = self.linear(x, p + "self_attn.q_proj")
                k = self.linear(x, p + "self_attn.k_proj")
                v = self.linear(x, p + "self_attn.v_proj")
            q = q.reshape(B, T, H, hd)
            k = k.reshape(B, T, Hkv, hd)
            if self.qk_norm:  # Qwen3, Gemma3 (1 + w): per-head RMSNorm over head_dim, before RoPE
                q = self.rmsnorm(q, w[p + "self_attn.q_norm.weight"])
                k = self.rmsnorm(k, w[p + "self_attn.k_norm.weight"])
            q = q.transpose(0, 2, 1, 3)
            k = k.transpose(0, 2, 1, 3)
            v = v.reshape(B, T, Hkv, hd).transpose(0, 2, 1, 3)
            q = self.rope(q, T, *ropes[l])
            k = self.rope(k, T, *ropes[l])
            # repeat_kv: kv head j serves q heads j*rep .. j*rep+rep-1
            k = np.repeat(k, rep, axis=1)
            v = np.repeat(v, rep, axis=1)
            s = (q @ k.transpose(0, 1, 3, 2)) * scale
            if gemma and self.attn_cap is not None:  # eager_attention_forward: after scaling, before mask
                s = self.attn_cap * np.tanh(s / self.attn_cap)
            s = np.where(masks[self.windows[l]], -np.inf, s)
            s = s - s.max(axis=-1, keepdims=True)
            e = np.exp(s)
            a = e / e.sum(axis=-1, keepdims=True)
            o = (a @ v).transpose(0, 2, 1, 3).reshape(B, T, H * hd)
            if hook:
                hook(l, "o", o.reshape(B * T, -1))
            a = self.linear(o, p + "self_attn.o_proj")
            if gemma:  # Gemma2DecoderLayer: norm the branch, add, norm again before the MLP
                h = h + self.rmsnorm(a, w[p + "post_attention_layernorm.weight"])
                x = self.rmsnorm(h, w[p + "pre_feedforward_layernorm.weight"])
            else:
                h = h + a
                x = self.rmsnorm(h, w[p + "post_attention_layernorm.weight"])
            if hook:
                hook(l, "gateup", x.reshape(B * T, -1))
            if self.sparse[l]:  # routed experts (MoE): per token, on the flattened rows
                h = h + self.moe_block(x.reshape(B * T, -1), l).reshape(B, T, -1)
                continue
            if self.fused:  # Phi3MLP: gate, up = gate_up_proj(x).chunk(2, dim=-1)
                gu = self.linear(x, p + "mlp.gate_up_proj")
                g, u = gu[..., :I], gu[..., I:]
            else:
                g = self.linear(x, p + "mlp.gate_proj")
                u = self.linear(x, p + "mlp.up_proj")
            if gemma:  # gelu_pytorch_tanh
                m = 0.5 * g * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (g + 0.044715 * g ** 3))) * u
            else:
                m = (g / (1.0 + np.exp(-g))) * u
            if hook:
                hook(l, "down", m.reshape(B * T, -1))
            d = self.linear(m, p + "mlp.down_proj")
            if gemma:
                d = self.rmsnorm(d, w[p + "post_feedforward_layernorm.weight"])
            h = h + d
        h = self.rmsnorm(h, self.w["model.norm.weight"])
        logits = h @ self.lm_head.T
        if gemma and self.final_cap is not None:  # Gemma2/Gemma3ForCausalLM: final_logit_softcapping
            logits = self.final_cap * np.tanh(logits / self.final_cap)
        return logits


def window_mask(T, W):
    """(T, T) bool, True = hidden: causal (key j > query i), and with a window W (not None) also
    j <= i - W, so query i sees key j iff i - W < j <= i (masking_utils: sliding_window_overlay
    kv_idx > q_idx - W AND causal kv_idx <= q_idx; 4.4x eager: tril(ones, diagonal=-W) masked)."""
    m = np.triu(np.ones((T, T), dtype=bool), k=1)
    if W is not None:
        m |= np.tril(np.ones((T, T), dtype=bool), k=-W)
    return m


def moe_route(logits, k, renorm):
    """Router logits (N, E) -> (sel (N, k) expert indices, most probable first; wts (N, k); margin).
    probs = softmax(logits); sel = the k most probable, ties to the lower index (a stable sort);
    wts = probs[sel], over their sum when renorm. margin: min over tokens of probs' k-th minus
    (k+1)-th largest (None when k == E: nothing was left out)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    order = np.argsort(-p, axis=-1, kind="stable")
    sel = order[:, :k]
    wts = np.take_along_axis(p, sel, axis=-1)
    if renorm:
        wts = wts / wts.sum(axis=-1, keepdims=True)
    margin = None
    if k < p.shape[1] and p.shape[0]:
        ps = np.take_along_axis(p, order[:, k - 1:k + 1], axis=-1)
        margin = float(np.min(ps[:, 0] - ps[:, 1]))
    return sel, wts, margin


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def token_nll(model, ids):
    """ids (B, T): NLL of tokens 1..T-1 given the prefix, shape (B, T-1)."""
    ids = np.asarray(ids)
    if ids.ndim == 1:
        ids = ids[None, :]
    lp = log_softmax(model.forward(ids))
    B, T = ids.shape
    tgt = ids[:, 1:]
    return -np.take_along_axis(lp[:, :-1, :], tgt[..., None], axis=-1)[..., 0]


def perplexity(model, windows, batch=16):
    tot, n = 0.0, 0
    for i in range(0, windows.shape[0], batch):
        nll = token_nll(model, windows[i:i + batch])
        tot += float(nll.sum())
        n += nll.size
    return float(np.exp(tot / n))


def read_ids(path):
    with open(path) as f:
        txt = f.read().replace(",", " ").split()
    return np.array([int(t) for t in txt], dtype=np.int64)


# ---- AutoGPTQ-semantics RTN (for the orientation numbers in the solver fixture) ----------------
def rtn_autogptq(W, bits, group):
    """Fake-quantize W (out, in) float32 per group of `group` input columns, asymmetric, exactly as
    AutoGPTQ's Quantizer.find_params/quantize (sym=False, perchannel) applied per group slice
    W[:, g:g+group] (the last group may be ragged). Arithmetic in float32 like torch."""
    W = np.asarray(W, dtype=np.float32)
    maxq = np.float32(2 ** bits - 1)
    out = np.empty_like(W)
    for g0 in range(0, W.shape[1], group):
        x = W[:, g0:g0 + group]
        xmin = np.minimum(x.min(axis=1), np.float32(0))
        xmax = np.maximum(x.max(axis=1), np.float32(0))
        both0 = (xmin == 0) & (xmax == 0)
        xmin = np.where(both0, np.float32(-1), xmin).astype(np.float32)
        xmax = np.where(both0, np.float32(1), xmax).astype(np.float32)
        scale = ((xmax - xmin) / maxq).astype(np.float32)
        zero = np.round(-xmin / scale).astype(np.float32)  # round half to even, as torch.round
        s, z = scale[:, None], zero[:, None]
        q = np.clip(np.round(x / s) + z, np.float32(0), maxq).astype(np.float32)
        out[:, g0:g0 + group] = (s * (q - z)).astype(np.float32)
    return out


def rel_calib_err(W, Q, H):
    """||X (W-Q)^T||_F / ||X W^T||_F computed as sqrt(tr(E H E^T) / tr(W H W^T)), H = X^T X."""
    W = W.astype(np.float64)
    E = W - Q.astype(np.float64)
    num = np.einsum("ij,jk,ik->", E, H, E)
    den = np.einsum("ij,jk,ik->", W, H, W)
    return float(np.sqrt(num / den))


GROUPS = [("qkv", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
          ("o", ["self_attn.o_proj"]),
          ("gateup", ["mlp.gate_proj", "mlp.up_proj"]),
          ("down", ["mlp.down_proj"])]


def _unfused_only(model):
    if model.moe:
        raise ValueError("solver fixture: %s is a mixture of experts; the fixture names dense "
                         "q/k/v/gate/up/down linears" % model.arch)
    if model.fused:
        raise ValueError("solver fixture: %s has fused linears; the fixture names q/k/v/gate/up"
                         % model.arch)


def dump_solver_fixture(model, outdir, calib_path, n_rows=32, x_rows=8, x_layers=(0, 4)):
    _unfused_only(model)
    calib = np.load(calib_path)
    ids = calib[:n_rows]
    T = ids.shape[1]
    n_tok = n_rows * T
    n_xtok = x_rows * T
    os.makedirs(outdir, exist_ok=True)
    Hs = {}
    Hx = {}
    Xs = {}

    def hook(l, grp, X):
        X32 = X.astype(np.float32)
        X64 = X32.astype(np.float64)
        Hs[(l, grp)] = Hs.get((l, grp), 0) + X64.T @ X64
        if l in x_layers:
            Xs.setdefault((l, grp), []).append(X32)

    # One row at a time: then the first x_rows*T rows of the concatenated X are rows 0..x_rows-1.
    for r in range(n_rows):
        model.forward(ids[r:r + 1], hook=hook)
    for key, parts in Xs.items():
        X = np.concatenate(parts, axis=0)
        Xs[key] = X[:n_xtok]
        X64 = Xs[key].astype(np.float64)
        Hx[key] = X64.T @ X64

    manifest = []

    def put(name, arr, dtype, ntok):
        arr = np.ascontiguousarray(arr.astype(dtype))
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(arr.tobytes())
        manifest.append("%s %d %d %s %d" % (name, arr.shape[0], arr.shape[1],
                                            "f32" if dtype == "<f4" else "f64", ntok))

    rtn = []
    for l in range(model.n_layers):
        for grp, mods in GROUPS:
            for m in mods:
                short = m.split(".")[1]
                W = model.w32["model.layers.%d.%s.weight" % (l, m)]
                put("L%d.%s.W.f32" % (l, short), W, "<f4", 0)
                Q = rtn_autogptq(W, 2, 32)
                rtn.append(("L%d.%s" % (l, short), rel_calib_err(W, Q, Hs[(l, grp)])))
            put("L%d.%s.H.f64" % (l, grp), Hs[(l, grp)], "<f8", n_tok)
            if l in x_layers:
                put("L%d.%s.X.f32" % (l, grp), Xs[(l, grp)], "<f4", n_xtok)
                put("L%d.%s.HX.f64" % (l, grp), Hx[(l, grp)], "<f8", n_xtok)
    with open(os.path.join(outdir, "manifest.txt"), "w") as f:
        for line in manifest:
            f.write(line + "\n")
    with open(os.path.join(outdir, "rtn_int2_g32_relerr.txt"), "w") as f:
        for name, v in rtn:
            f.write("%s %.8f\n" % (name, v))
    return rtn


def rtn_selftest():
    """Hand-worked AutoGPTQ INT2 cases; returns a list of failure strings."""
    bad = []
    # xmin=-1, xmax=1: scale=2/3, zero=round(1.5)=2 (half to even); q=[0,1,2,3(clamped from 4)]
    got = rtn_autogptq(np.array([[-1.0, -0.5, 0.2, 1.0]], np.float32), 2, 4)[0]
    want = np.float32(2.0 / 3.0) * np.array([-2, -1, 0, 1], np.float32)
    if not np.allclose(got, want, rtol=0, atol=1e-7):
        bad.append("rtn case1 %r != %r" % (got, want))
    # all positive: xmin forced to 0, zero=0, scale=xmax/3; all-zero group: scale 2/3, zero 2 -> 0
    got = rtn_autogptq(np.array([[0.3, 0.6, 0.0, 0.0]], np.float32), 2, 2)[0]
    want = np.array([np.float32(0.2) * 2, np.float32(0.2) * 3, 0, 0], np.float32)
    if not np.allclose(got, want, rtol=0, atol=1e-7):
        bad.append("rtn case2 %r != %r" % (got, want))
    # ragged last group (5 columns, group 2 -> 2+2+1) must equal quantizing the pieces separately
    w = np.array([[0.1, -0.4, 0.9, 0.25, -0.7]], np.float32)
    got = rtn_autogptq(w, 2, 2)
    want = np.concatenate([rtn_autogptq(w[:, :2], 2, 2), rtn_autogptq(w[:, 2:4], 2, 2),
                           rtn_autogptq(w[:, 4:], 2, 2)], axis=1)
    if not np.array_equal(got, want):
        bad.append("rtn ragged %r != %r" % (got, want))
    return bad


def check_solver_fixture(model, d, calib_path):
    """Re-derive the solver fixture by a different route (batched forward, all rows at once) and
    check every file plus the identities the C tests rely on. Returns a list of failure strings."""
    _unfused_only(model)
    bad = []
    rows = {}
    with open(os.path.join(d, "manifest.txt")) as f:
        for line in f:
            if not line.strip():
                continue
            name, r, c, dt, nt = line.split()
            r, c, nt = int(r), int(c), int(nt)
            path = os.path.join(d, name)
            esz = 4 if dt == "f32" else 8
            if os.path.getsize(path) != r * c * esz:
                bad.append("%s: size %d != %d" % (name, os.path.getsize(path), r * c * esz))
                continue
            rows[name] = (np.fromfile(path, dtype="<f4" if dt == "f32" else "<f8").reshape(r, c), nt)
    calib = np.load(calib_path)
    ntok = rows["L0.qkv.H.f64"][1]
    nrow = ntok // calib.shape[1]
    Hs = {}

    def hook(l, grp, X):
        X64 = X.astype(np.float32).astype(np.float64)
        Hs[(l, grp)] = X64.T @ X64
        if "L%d.%s.X.f32" % (l, grp) in rows:
            Xf, nt = rows["L%d.%s.X.f32" % (l, grp)]
            if not np.array_equal(X.astype(np.float32)[:nt], Xf):
                dx = np.max(np.abs(X[:nt] - Xf))
                if dx > 1e-6:
                    bad.append("L%d.%s.X.f32 differs by %.3g" % (l, grp, dx))
    model.forward(calib[:nrow], hook=hook)
    rng = np.random.RandomState(1)
    for l in range(model.n_layers):
        for grp, mods in GROUPS:
            H = rows["L%d.%s.H.f64" % (l, grp)][0]
            if not np.allclose(H, H.T, rtol=0, atol=0):
                bad.append("L%d.%s.H not symmetric" % (l, grp))
            rel = np.max(np.abs(H - Hs[(l, grp)])) / np.max(np.abs(H))
            if rel > 1e-9:
                bad.append("L%d.%s.H differs from batched recompute by %.3g rel" % (l, grp, rel))
            if np.min(np.linalg.eigvalsh(H)) < -1e-9 * np.max(np.abs(H)):
                bad.append("L%d.%s.H not PSD" % (l, grp))
            for m in mods:
                short = m.split(".")[1]
                W = rows["L%d.%s.W.f32" % (l, short)][0]
                if not np.array_equal(W, model.w32["model.layers.%d.%s.weight" % (l, m)]):
                    bad.append("L%d.%s.W.f32 != safetensors" % (l, short))
                if W.shape[1] != H.shape[0]:
                    bad.append("L%d.%s: W cols %d != H n %d" % (l, short, W.shape[1], H.shape[0]))
            key = "L%d.%s.X.f32" % (l, grp)
            if key in rows:
                X = rows[key][0].astype(np.float64)
                HX = rows["L%d.%s.HX.f64" % (l, grp)][0]
                if np.max(np.abs(HX - X.T @ X)) > 1e-9 * np.max(np.abs(HX)):
                    bad.append("L%d.%s.HX != X^T X" % (l, grp))
                E = rng.standard_normal((5, X.shape[1]))
                lhs = np.sum((X @ E.T) ** 2)
                rhs = np.trace(E @ HX @ E.T)
                if abs(lhs - rhs) > 1e-10 * abs(lhs):
                    bad.append("L%d.%s: ||X E^T||^2 %.17g != tr(E HX E^T) %.17g" % (l, grp, lhs, rhs))
    with open(os.path.join(d, "rtn_int2_g32_relerr.txt")) as f:
        for line in f:
            name, v = line.split()
            l, short = int(name.split(".")[0][1:]), name.split(".")[1]
            grp = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "o_proj": "o",
                   "gate_proj": "gateup", "up_proj": "gateup", "down_proj": "down"}[short]
            W = rows["L%d.%s.W.f32" % (l, short)][0]
            e = rel_calib_err(W, rtn_autogptq(W, 2, 32), rows["L%d.%s.H.f64" % (l, grp)][0])
            if abs(e - float(v)) > 1e-7:
                bad.append("%s rtn relerr %.8f != file %s" % (name, e, v))
    bad += rtn_selftest()
    return bad


# ---- self-test of the Qwen3 path (no fixtures; a tiny random checkpoint) ------------------------
def write_safetensors(path, tensors):
    """{name: array} -> a float32 safetensors file (8-byte LE length, JSON header, raw data)."""
    hdr, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        hdr[name] = {"dtype": "F32", "shape": list(np.shape(arr)), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(hdr).encode("utf-8")
    h += b" " * (-(8 + len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def tiny_qwen3(seed=0, attention_bias=False, **over):
    """config dict and float32 weights of a small random Qwen3ForCausalLM (head_dim 32 != 64/4)."""
    cfg = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 64,
           "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 256, "rms_norm_eps": 1e-6,
           "rope_theta": 1000000.0, "rope_scaling": None, "hidden_act": "silu",
           "attention_bias": attention_bias, "tie_word_embeddings": True, "use_sliding_window": False,
           "sliding_window": None, "max_window_layers": 2, "torch_dtype": "float32"}
    cfg.update(over)
    rng = np.random.RandomState(seed)
    D, I, hd, H, Hkv, V = 64, 96, cfg["head_dim"], 4, 2, 256
    w = {"model.embed_tokens.weight": rng.standard_normal((V, D)),
         "model.norm.weight": 1 + 0.1 * rng.standard_normal(D)}
    shapes = {"self_attn.q_proj": (H * hd, D), "self_attn.k_proj": (Hkv * hd, D),
              "self_attn.v_proj": (Hkv * hd, D), "self_attn.o_proj": (D, H * hd),
              "mlp.gate_proj": (I, D), "mlp.up_proj": (I, D), "mlp.down_proj": (D, I)}
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        w[p + "input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(D)
        w[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(D)
        # far from uniform: a norm weight of ones commutes with the RoPE rotation
        w[p + "self_attn.q_norm.weight"] = 0.2 + 1.6 * rng.rand(hd)
        w[p + "self_attn.k_norm.weight"] = 0.2 + 1.6 * rng.rand(hd)
        for m, s in shapes.items():
            w[p + m + ".weight"] = rng.standard_normal(s) / np.sqrt(s[1])
            if attention_bias and m.startswith("self_attn"):
                w[p + m + ".bias"] = 0.3 * rng.standard_normal(s[0])
    return cfg, {k: v.astype(np.float32) for k, v in w.items()}


def tiny_gemma2(seed=0, attention_bias=False, **over):
    """config dict and float32 weights of a small random Gemma2ForCausalLM: hidden 48 (sqrt(48) is
    not a float32, so the normalizer's rounding shows), head_dim 32 != 48/4, query_pre_attn_scalar
    24 != head_dim, soft caps small enough to bite. Norm weights are offsets from one (1 + w)."""
    cfg = {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "hidden_size": 48,
           "intermediate_size": 80, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 256, "rms_norm_eps": 1e-6,
           "rope_theta": 10000.0, "hidden_activation": "gelu_pytorch_tanh",
           "hidden_act": "gelu_pytorch_tanh", "query_pre_attn_scalar": 24,
           "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0, "sliding_window": 4096,
           "attention_bias": attention_bias, "tie_word_embeddings": True, "torch_dtype": "float32"}
    cfg.update(over)
    rng = np.random.RandomState(seed)
    D, I, hd, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"], cfg["vocab_size"]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    w = {"model.embed_tokens.weight": 0.3 * rng.standard_normal((V, D)),
         "model.norm.weight": 0.3 * rng.standard_normal(D)}
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = 0.3 * rng.standard_normal((V, D))
    shapes = {"self_attn.q_proj": (H * hd, D), "self_attn.k_proj": (Hkv * hd, D),
              "self_attn.v_proj": (Hkv * hd, D), "self_attn.o_proj": (D, H * hd),
              "mlp.gate_proj": (I, D), "mlp.up_proj": (I, D), "mlp.down_proj": (D, I)}
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm"):
            w[p + n + ".weight"] = 0.5 * rng.standard_normal(D)
        for m, s in shapes.items():
            w[p + m + ".weight"] = 2.0 * rng.standard_normal(s) / np.sqrt(s[1])
            if attention_bias and m.startswith("self_attn"):
                w[p + m + ".bias"] = 0.3 * rng.standard_normal(s[0])
    return cfg, {k: v.astype(np.float32) for k, v in w.items()}


def _attn_by_hand(m, ids, t, norm_first=True, qk_norm=True, window=None):
    """Layer 0's attention output (before o_proj) at position t, by scalar loops (math only);
    window W: only keys s with t - W < s <= t."""
    import math
    w = {k: v.tolist() for k, v in m.w.items() if k.startswith("model.layers.0.") or "embed" in k}
    p = "model.layers.0.self_attn."
    H, Hkv, hd, eps = m.n_heads, m.n_kv, m.head_dim, m.eps
    half = hd // 2

    def rms(v, g):
        r = 1.0 / math.sqrt(sum(a * a for a in v) / len(v) + eps)
        return [a * r * b for a, b in zip(v, g)]

    def lin(name, x):
        W, b = w[name + ".weight"], w.get(name + ".bias")
        return [sum(wr[j] * x[j] for j in range(len(x))) + (b[i] if b else 0.0) for i, wr in enumerate(W)]

    def rope(v, pos):
        out = list(v)
        for i in range(half):
            f = pos * m.theta ** (-2.0 * i / hd)
            c, s = math.cos(f), math.sin(f)
            out[i] = v[i] * c - v[i + half] * s
            out[i + half] = v[i + half] * c + v[i] * s
        return out

    def prep(v, g, pos):
        if not qk_norm:
            return rope(v, pos)
        return rope(rms(v, g), pos) if norm_first else rms(rope(v, pos), g)

    xs = [rms(w["model.embed_tokens.weight"][ids[s]], w["model.layers.0.input_layernorm.weight"])
          for s in range(t + 1)]
    qs = [lin(p + "q_proj", x) for x in xs]
    ks = [lin(p + "k_proj", x) for x in xs]
    vs = [lin(p + "v_proj", x) for x in xs]
    lo = 0 if window is None else max(0, t - window + 1)
    out = []
    for h in range(H):
        j = h // (H // Hkv)
        q = prep(qs[t][h * hd:(h + 1) * hd], w.get(p + "q_norm.weight"), t)
        sc = []
        for s in range(lo, t + 1):
            k = prep(ks[s][j * hd:(j + 1) * hd], w.get(p + "k_norm.weight"), s)
            sc.append(sum(a * b for a, b in zip(q, k)) / math.sqrt(hd))
        mx = max(sc)
        e = [math.exp(z - mx) for z in sc]
        pr = [z / sum(e) for z in e]
        out += [sum(pr[s - lo] * vs[s][j * hd + i] for s in range(lo, t + 1)) for i in range(hd)]
    return np.array(out)


def _gemma2_by_hand(m, ids, t, offset=1.0, post_norms=True, attn_cap=True, final_cap=True,
                    normalizer=None, gelu_tanh=True):
    """All logits at position t of a ONE-layer Gemma2 model, by scalar loops (math only). The flags
    break one rule each, for the blindness checks: norm weight w instead of 1 + w (offset 0), no
    post-attention/post-feed-forward norms, no soft caps, another normalizer, exact-erf GELU."""
    import math
    assert m.n_layers == 1
    w = {k: v.tolist() for k, v in m.w.items()}
    p = "model.layers.0."
    H, Hkv, hd, eps, D = m.n_heads, m.n_kv, m.head_dim, m.eps, m.dim
    half = hd // 2
    nz = math.sqrt(D) if normalizer == "exact" else (
        struct.unpack("<f", struct.pack("<f", math.sqrt(D)))[0] if normalizer is None else normalizer)

    def rms(v, g):
        r = 1.0 / math.sqrt(sum(a * a for a in v) / len(v) + eps)
        return [a * r * (offset + b) for a, b in zip(v, g)]

    def lin(name, x):
        W, b = w[name + ".weight"], w.get(name + ".bias")
        return [sum(wr[j] * x[j] for j in range(len(x))) + (b[i] if b else 0.0) for i, wr in enumerate(W)]

    def rope(v, pos):
        out = list(v)
        for i in range(half):
            f = pos * m.theta ** (-2.0 * i / hd)
            c, s_ = math.cos(f), math.sin(f)
            out[i] = v[i] * c - v[i + half] * s_
            out[i + half] = v[i + half] * c + v[i] * s_
        return out

    def gelu(z):
        if gelu_tanh:
            return 0.5 * z * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3)))
        return 0.5 * z * (1.0 + math.erf(z / math.sqrt(2.0)))

    cap_a = m.cfg.get("attn_logit_softcapping", 50.0) if attn_cap else None
    cap_f = m.cfg.get("final_logit_softcapping", 30.0) if final_cap else None
    hs = [[a * nz for a in w["model.embed_tokens.weight"][ids[s_]]] for s_ in range(t + 1)]
    xs = [rms(hv, w[p + "input_layernorm.weight"]) for hv in hs]
    ks = [lin(p + "self_attn.k_proj", x) for x in xs]
    vs = [lin(p + "self_attn.v_proj", x) for x in xs]
    qt = lin(p + "self_attn.q_proj", xs[t])
    o = []
    for h in range(H):
        j = h // (H // Hkv)
        q = rope(qt[h * hd:(h + 1) * hd], t)
        sc = []
        for s_ in range(t + 1):
            k = rope(ks[s_][j * hd:(j + 1) * hd], s_)
            z = sum(a * b for a, b in zip(q, k)) / math.sqrt(m.cfg["query_pre_attn_scalar"])
            sc.append(cap_a * math.tanh(z / cap_a) if cap_a else z)
        mx = max(sc)
        e = [math.exp(z - mx) for z in sc]
        o += [sum(e[s_] / sum(e) * vs[s_][j * hd + i] for s_ in range(t + 1)) for i in range(hd)]
    a = lin(p + "self_attn.o_proj", o)
    if post_norms:
        a = rms(a, w[p + "post_attention_layernorm.weight"])
    h1 = [x + y for x, y in zip(hs[t], a)]
    x = rms(h1, w[p + "pre_feedforward_layernorm.weight"])
    mm = [gelu(g) * u for g, u in zip(lin(p + "mlp.gate_proj", x), lin(p + "mlp.up_proj", x))]
    d = lin(p + "mlp.down_proj", mm)
    if post_norms:
        d = rms(d, w[p + "post_feedforward_layernorm.weight"])
    hf = rms([x + y for x, y in zip(h1, d)], w["model.norm.weight"])
    lm = w["model.embed_tokens.weight"] if m.tied else w["lm_head.weight"]
    lg = [sum(a * b for a, b in zip(row, hf)) for row in lm]
    return np.array([cap_f * math.tanh(z / cap_f) if cap_f else z for z in lg])


def gemma2_selftest(expect_raise):
    """The Gemma2 path: a one-layer model against scalar loops, mutation-sensitive; strictness."""
    import tempfile
    bad = []
    ids = np.array([3, 17, 200, 45, 9], dtype=np.int64)
    T = len(ids)
    G = Llama.from_weights
    for bias, tied in ((False, True), (True, False)):
        cfg, w = tiny_gemma2(attention_bias=bias, num_hidden_layers=1, tie_word_embeddings=tied)
        with tempfile.TemporaryDirectory() as d:  # through the directory reader too
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(cfg, f)
            write_safetensors(os.path.join(d, "model.safetensors"), w)
            m = Llama(d)
        if m.arch != "Gemma2ForCausalLM" or m.embed_dtype != "F32" or m.tied != tied:
            bad.append("gemma2: arch %s embed_dtype %s tied %s" % (m.arch, m.embed_dtype, m.tied))
        lg = m.forward(ids)[0]
        for t in (0, T - 1):
            diff = float(np.max(np.abs(lg[t] - _gemma2_by_hand(m, ids, t))))
            if diff > 1e-12:
                bad.append("gemma2 bias=%s tied=%s: logits at %d differ from scalar loops by %.3g"
                           % (bias, tied, t, diff))
        for kw in ({"offset": 0.0}, {"post_norms": False}, {"attn_cap": False}, {"final_cap": False},
                   {"normalizer": "exact"}, {"normalizer": 1.0}, {"gelu_tanh": False}):
            alt = float(np.max(np.abs(lg[T - 1] - _gemma2_by_hand(m, ids, T - 1, **kw))))
            if alt < 1e-9:
                bad.append("gemma2: %r gives the same logits (%.3g): check is blind" % (kw, alt))
        if float(np.max(np.abs(m.forward(np.stack([ids, ids[::-1]]))[0] - m.forward(ids)))) > 1e-12:
            bad.append("gemma2: batch row 0 != single forward")
    # the normalizer follows the stored embedding dtype (transformers' comment: sqrt(3072) -> 55.5)
    if gemma_normalizer(3072, "BF16") != 55.5 or gemma_normalizer(48, "BF16") != 6.9375 or \
            gemma_normalizer(48, "F32") != struct.unpack("<f", struct.pack("<f", 48 ** 0.5))[0] or \
            gemma_normalizer(48, "F16") != 6.9296875 or gemma_normalizer(2304, "BF16") != 48.0:
        bad.append("gemma_normalizer roundings")
    cfg, w = tiny_gemma2()
    mb = G(cfg, w, embed_dtype="BF16")
    if mb.normalizer != 6.9375:
        bad.append("gemma2 BF16 normalizer %r" % mb.normalizer)
    w64 = {k: v.astype(np.float64) for k, v in w.items()}
    expect_raise("gemma2 float64 weights, no embed_dtype", lambda: G(cfg, w64), "embed_dtype")
    if G(cfg, w64, embed_dtype="F32").normalizer != G(cfg, w).normalizer:
        bad.append("gemma2 embed_dtype F32 != float32 arrays")
    # two layers: the layer stacking, defaults (caps 50/30, tied)
    cfg2 = {k: v for k, v in cfg.items() if k not in ("attn_logit_softcapping", "final_logit_softcapping",
                                                     "tie_word_embeddings", "head_dim")}
    m2 = G(dict(cfg2, head_dim=32), w)
    if (m2.attn_cap, m2.final_cap, m2.tied) != (50.0, 30.0, True) or m2.layer_types != \
            ["sliding_attention", "full_attention"]:
        bad.append("gemma2 defaults: caps %r %r tied %r layer_types %r" % (m2.attn_cap, m2.final_cap,
                                                                          m2.tied, m2.layer_types))
    expect_raise("gemma2 head_dim default 256", lambda: G(cfg2, w), "want [512, 48]")
    # strictness
    w2 = dict(w)
    del w2["model.layers.1.pre_feedforward_layernorm.weight"]
    expect_raise("missing pre_feedforward_layernorm", lambda: G(cfg, w2),
                 "model.layers.1.pre_feedforward_layernorm.weight")
    w2 = dict(w, **{"model.layers.0.self_attn.q_norm.weight": np.zeros(32, np.float32)})
    expect_raise("q_norm under gemma2", lambda: G(cfg, w2), "model.layers.0.self_attn.q_norm.weight")
    w2 = dict(w, **{"model.layers.0.mlp.gate_proj.bias": np.zeros(80, np.float32)})
    expect_raise("mlp bias in gemma2", lambda: G(dict(cfg, attention_bias=True, mlp_bias=True), w2),
                 "model.layers.0.mlp.gate_proj.bias")
    expect_raise("gemma2 untied without lm_head", lambda: G(dict(cfg, tie_word_embeddings=False), w),
                 "lm_head.weight")
    for key in ("query_pre_attn_scalar", "num_key_value_heads"):
        expect_raise("gemma2 without " + key, lambda: G({k: v for k, v in cfg.items() if k != key}, w), key)
    expect_raise("hidden_activation gelu", lambda: G(dict(cfg, hidden_activation="gelu"), w), "gelu")
    expect_raise("hidden_act != hidden_activation", lambda: G(dict(cfg, hidden_act="silu"), w), "hidden_act")
    G({k: v for k, v in cfg.items() if k != "hidden_act"}, w)
    expect_raise("bidirectional", lambda: G(dict(cfg, use_bidirectional_attention=True), w),
                 "use_bidirectional_attention")
    expect_raise("hidden % heads", lambda: G(dict(cfg, num_attention_heads=5, num_key_value_heads=5), w),
                 "multiple")
    expect_raise("bad softcap", lambda: G(dict(cfg, attn_logit_softcapping=0), w), "attn_logit_softcapping")
    for t in ("linear", "dynamic", "llama3"):
        expect_raise("gemma2 rope " + t, lambda: G(dict(cfg, rope_scaling={"rope_type": t, "factor": 2.0}), w),
                     "ambiguous")
    lw = {k: v for k, v in w.items() if "feedforward" not in k}
    lcfg = dict(cfg, architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu")
    expect_raise("gemma2 labelled llama", lambda: G(dict(cfg, architectures=["LlamaForCausalLM"]), w),
                 "model_type")
    expect_raise("ff norms under llama", lambda: G(lcfg, w), "feed-forward norms are Gemma2's")
    G(lcfg, lw)
    # sliding windows: the even layers slide, computed; a layer_types other than the even layers
    # is refused past the window (the releases disagree)
    ms = G(dict(cfg, sliding_window=4), w)
    lw, lf = ms.forward(ids)[0], G(dict(cfg, sliding_window=5), w).forward(ids)[0]
    if ms.windows != [4, None] or float(np.max(np.abs(lw[:4] - lf[:4]))) > 1e-12 or \
            float(np.max(np.abs(lw[4:] - lf[4:]))) < 1e-9:
        bad.append("gemma2 window 4 vs 5 over T 5: windows %r, rows 0-3 must agree, row 4 differ"
                   % (ms.windows,))
    mf = G(dict(cfg, sliding_window=4, layer_types=["full_attention", "full_attention"]), w)
    mf.forward(ids[:4])
    expect_raise("gemma2 window, layer_types all full", lambda: mf.forward(ids), "differ from the even layers")
    mo = G(dict(cfg, sliding_window=4, layer_types=["full_attention", "sliding_attention"]), w)
    expect_raise("gemma2 odd sliding layer_types", lambda: mo.forward(ids), "differ from the even layers")
    expect_raise("gemma2 sliding_window null", lambda: G(dict(cfg, sliding_window=None), w), "null")
    expect_raise("gemma2 layer_types length", lambda: G(dict(cfg, layer_types=["full_attention"]), w),
                 "layer_types")
    return bad


def tiny_gemma3(seed=0, attention_bias=False, **over):
    """config dict and float32 weights of a small random Gemma3ForCausalLM: two layers by
    sliding_window_pattern 2 (layer 0 sliding, window 3; layer 1 full, linear RoPE factor 4), small
    RoPE bases (1000 global, 50 local) so that swapping them shows, hidden 48, head_dim 32,
    query_pre_attn_scalar 24, final soft cap 3. Norm weights (incl. q/k norms) are offsets from one."""
    cfg = {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": 48,
           "intermediate_size": 80, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 256, "rms_norm_eps": 1e-6,
           "rope_theta": 1000.0, "rope_local_base_freq": 50.0,
           "rope_scaling": {"rope_type": "linear", "factor": 4.0},
           "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh",
           "query_pre_attn_scalar": 24, "attn_logit_softcapping": None, "final_logit_softcapping": 3.0,
           "sliding_window": 3, "sliding_window_pattern": 2, "attention_bias": attention_bias,
           "tie_word_embeddings": True, "torch_dtype": "float32", "cache_implementation": "hybrid",
           "max_position_embeddings": 32768, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0}
    cfg.update(over)
    rng = np.random.RandomState(seed)
    D, I, hd, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"], cfg["vocab_size"]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    w = {"model.embed_tokens.weight": 0.3 * rng.standard_normal((V, D)),
         "model.norm.weight": 0.3 * rng.standard_normal(D)}
    if not cfg.get("tie_word_embeddings", True):
        w["lm_head.weight"] = 0.3 * rng.standard_normal((V, D))
    shapes = {"self_attn.q_proj": (H * hd, D), "self_attn.k_proj": (Hkv * hd, D),
              "self_attn.v_proj": (Hkv * hd, D), "self_attn.o_proj": (D, H * hd),
              "mlp.gate_proj": (I, D), "mlp.up_proj": (I, D), "mlp.down_proj": (D, I)}
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm"):
            w[p + n + ".weight"] = 0.5 * rng.standard_normal(D)
        # 1 + w far from uniform: a uniform q/k norm weight commutes with the RoPE rotation
        w[p + "self_attn.q_norm.weight"] = 0.8 * rng.standard_normal(hd)
        w[p + "self_attn.k_norm.weight"] = 0.8 * rng.standard_normal(hd)
        for m, sh in shapes.items():
            w[p + m + ".weight"] = 2.0 * rng.standard_normal(sh) / np.sqrt(sh[1])
            if attention_bias and m.startswith("self_attn"):
                w[p + m + ".bias"] = 0.3 * rng.standard_normal(sh[0])
    return cfg, {k: v.astype(np.float32) for k, v in w.items()}


def _gemma3_by_hand(m, ids, types=None, offset=1.0, qk_norm=True, qk_norm_after_rope=False,
                    window_delta=0, no_window=False, local_theta_global=False, no_linear=False,
                    linear_on_sliding=False, final_cap=True, normalizer=None, pattern_rule="i+1"):
    """All logits (T, vocab) of a Gemma3 model, by scalar loops (math only), reading the config
    itself: layer types from cfg layer_types, else the (i + 1) % sliding_window_pattern rule (default
    6); window, RoPE bases and linear factor from the config's keys. The flags break one rule each,
    for the blindness checks."""
    import math
    cfg = m.cfg
    w = {k: v.tolist() for k, v in m.w.items()}
    L, H, Hkv, hd, eps, D = m.n_layers, m.n_heads, m.n_kv, m.head_dim, m.eps, m.dim
    half = hd // 2
    T = len(ids)
    if types is None:
        types = cfg.get("layer_types")
    if types is None:
        P = cfg.get("sliding_window_pattern", 6)
        if pattern_rule == "i+1":
            types = ["sliding_attention" if (i + 1) % P else "full_attention" for i in range(L)]
        else:  # the off-by-one rule: i % P
            types = ["sliding_attention" if i % P else "full_attention" for i in range(L)]
    W = cfg.get("sliding_window", 4096) + window_delta
    g_theta = cfg.get("rope_theta", 1000000.0)
    l_theta = g_theta if local_theta_global else cfg.get("rope_local_base_freq", 10000.0)
    rs = cfg.get("rope_scaling") or {}
    fac = 1.0 if no_linear or rs.get("rope_type", rs.get("type")) != "linear" else float(rs["factor"])
    nz = math.sqrt(D) if normalizer == "exact" else (
        struct.unpack("<f", struct.pack("<f", math.sqrt(D)))[0] if normalizer is None else normalizer)

    def rms(v, g):
        r = 1.0 / math.sqrt(sum(a * a for a in v) / len(v) + eps)
        return [a * r * (offset + b) for a, b in zip(v, g)]

    def lin(name, x):
        Wt, b = w[name + ".weight"], w.get(name + ".bias")
        return [sum(wr[j] * x[j] for j in range(len(x))) + (b[i] if b else 0.0) for i, wr in enumerate(Wt)]

    def rope(v, pos, theta, f):
        out = list(v)
        for i in range(half):
            a = pos * theta ** (-2.0 * i / hd) / f
            c, s_ = math.cos(a), math.sin(a)
            out[i] = v[i] * c - v[i + half] * s_
            out[i + half] = v[i + half] * c + v[i] * s_
        return out

    def gelu(z):
        return 0.5 * z * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3)))

    def prep(v, g, pos, theta, f):
        if not qk_norm:
            return rope(v, pos, theta, f)
        return rms(rope(v, pos, theta, f), g) if qk_norm_after_rope else rope(rms(v, g), pos, theta, f)

    hs = [[a * nz for a in w["model.embed_tokens.weight"][t]] for t in ids]
    for l in range(L):
        p = "model.layers.%d." % l
        sliding = types[l] == "sliding_attention"
        theta = l_theta if sliding else g_theta
        f = (fac if linear_on_sliding else 1.0) if sliding else fac
        xs = [rms(hv, w[p + "input_layernorm.weight"]) for hv in hs]
        qs = [lin(p + "self_attn.q_proj", x) for x in xs]
        ks = [lin(p + "self_attn.k_proj", x) for x in xs]
        vs = [lin(p + "self_attn.v_proj", x) for x in xs]
        qn, kn = w.get(p + "self_attn.q_norm.weight"), w.get(p + "self_attn.k_norm.weight")
        kr = [[prep(ks[s_][j * hd:(j + 1) * hd], kn, s_, theta, f) for j in range(Hkv)] for s_ in range(T)]
        new = []
        for t in range(T):
            lo = 0 if (not sliding or no_window) else max(0, t - W + 1)  # keys j: t - W < j <= t
            o = []
            for h in range(H):
                j = h // (H // Hkv)
                q = prep(qs[t][h * hd:(h + 1) * hd], qn, t, theta, f)
                sc = [sum(a * b for a, b in zip(q, kr[s_][j])) / math.sqrt(cfg["query_pre_attn_scalar"])
                      for s_ in range(lo, t + 1)]
                mx = max(sc)
                e = [math.exp(z - mx) for z in sc]
                o += [sum(e[s_ - lo] / sum(e) * vs[s_][j * hd + i] for s_ in range(lo, t + 1))
                      for i in range(hd)]
            a = rms(lin(p + "self_attn.o_proj", o), w[p + "post_attention_layernorm.weight"])
            h1 = [x + y for x, y in zip(hs[t], a)]
            x = rms(h1, w[p + "pre_feedforward_layernorm.weight"])
            mm = [gelu(g) * u for g, u in zip(lin(p + "mlp.gate_proj", x), lin(p + "mlp.up_proj", x))]
            d = rms(lin(p + "mlp.down_proj", mm), w[p + "post_feedforward_layernorm.weight"])
            new.append([x + y for x, y in zip(h1, d)])
        hs = new
    lm = w["model.embed_tokens.weight"] if m.tied else w["lm_head.weight"]
    cap = cfg.get("final_logit_softcapping") if final_cap else None
    out = []
    for hv in hs:
        hf = rms(hv, w["model.norm.weight"])
        lg = [sum(a * b for a, b in zip(row, hf)) for row in lm]
        out.append([cap * math.tanh(z / cap) if cap else z for z in lg])
    return np.array(out)


def gemma3_selftest(expect_raise):
    """The Gemma3 path: a two-layer model (sliding layer with T > window, full layer with linear
    RoPE) against scalar loops, mutation-sensitive; layer-type rules; strictness."""
    import tempfile
    bad = []
    ids = np.array([3, 17, 200, 45, 9, 120, 77], dtype=np.int64)  # T 7 > window 3
    G = Llama.from_weights

    def diff(a, b):
        return float(np.max(np.abs(a - b)))

    for bias, tied in ((False, True), (True, False)):
        cfg, w = tiny_gemma3(attention_bias=bias, tie_word_embeddings=tied)
        with tempfile.TemporaryDirectory() as d:  # through the directory reader too
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(cfg, f)
            write_safetensors(os.path.join(d, "model.safetensors"), w)
            m = Llama(d)
        if m.arch != "Gemma3ForCausalLM" or m.tied != tied or m.layer_types != \
                ["sliding_attention", "full_attention"] or m.windows != [3, None]:
            bad.append("gemma3: arch %s tied %s layer_types %r windows %r"
                       % (m.arch, m.tied, m.layer_types, m.windows))
        lg = m.forward(ids)[0]
        hand = _gemma3_by_hand(m, ids)
        if diff(lg, hand) > 1e-12:
            bad.append("gemma3 bias=%s tied=%s: logits differ from scalar loops by %.3g"
                       % (bias, tied, diff(lg, hand)))
        for kw in ({"offset": 0.0}, {"qk_norm": False}, {"qk_norm_after_rope": True},
                   {"window_delta": 1}, {"window_delta": -1}, {"no_window": True},
                   {"local_theta_global": True}, {"no_linear": True}, {"linear_on_sliding": True},
                   {"final_cap": False}, {"normalizer": "exact"}, {"pattern_rule": "i"}):
            alt = diff(lg, _gemma3_by_hand(m, ids, **kw))
            if alt < 1e-9:
                bad.append("gemma3: %r gives the same logits (%.3g): check is blind" % (kw, alt))
        if diff(m.forward(np.stack([ids, ids[::-1]]))[0], m.forward(ids)[0]) > 1e-12:
            bad.append("gemma3: batch row 0 != single forward")
        # the window only hides keys from position W on: the first W rows equal full attention's
        mfull = G(dict(cfg, sliding_window=len(ids)), w)
        lf = mfull.forward(ids)[0]
        if diff(lf[:3], lg[:3]) > 1e-12 or diff(lf[3:], lg[3:]) < 1e-6:
            bad.append("gemma3: window 3 vs 7: rows 0-2 differ %.3g, rows 3+ differ %.3g"
                       % (diff(lf[:3], lg[:3]), diff(lf[3:], lg[3:])))
    cfg, w = tiny_gemma3()
    # explicit layer_types (5.x) take the place of the pattern; the opposite assignment too
    lt = ["full_attention", "sliding_attention"]
    c2 = {k: v for k, v in cfg.items() if k != "sliding_window_pattern"}
    ml = G(dict(c2, layer_types=lt), w)
    if ml.windows != [None, 3] or diff(ml.forward(ids)[0], _gemma3_by_hand(ml, ids, types=lt)) > 1e-12:
        bad.append("gemma3 layer_types %r: windows %r or logits" % (lt, ml.windows))
    G(dict(cfg, layer_types=["sliding_attention", "full_attention"]), w)  # agrees with the pattern
    expect_raise("layer_types vs pattern", lambda: G(dict(cfg, layer_types=lt), w), "sliding_window_pattern")
    expect_raise("two patterns", lambda: G(dict(cfg, _sliding_window_pattern=6), w),
                 "_sliding_window_pattern")
    # rope_parameters (5.x layout) == the flat keys
    rp = {"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1000.0},
          "sliding_attention": {"rope_type": "default", "rope_theta": 50.0}}
    c3 = {k: v for k, v in cfg.items() if k not in ("rope_scaling", "rope_theta", "rope_local_base_freq")}
    if diff(G(dict(c3, rope_parameters=rp), w).forward(ids), G(cfg, w).forward(ids)) > 1e-12:
        bad.append("gemma3 rope_parameters != rope_scaling + rope_theta + rope_local_base_freq")
    expect_raise("rope_parameters theta != rope_theta",
                 lambda: G(dict(c3, rope_parameters=rp, rope_theta=2000.0), w), "rope_theta")
    expect_raise("rope_parameters and rope_scaling", lambda: G(dict(cfg, rope_parameters=rp), w), "give one")
    # defaults: Gemma3TextConfig (rope_theta 1e6, local 1e4, window 4096, pattern 6, no caps, tied)
    dk = ("rope_theta", "rope_local_base_freq", "rope_scaling", "sliding_window", "sliding_window_pattern",
          "final_logit_softcapping", "attn_logit_softcapping", "tie_word_embeddings", "head_dim")
    cd = dict({k: v for k, v in cfg.items() if k not in dk}, head_dim=32, num_hidden_layers=7)
    cfg7, w7 = tiny_gemma3(num_hidden_layers=7)
    md = G(cd, w7)
    want_lt = ["sliding_attention"] * 5 + ["full_attention", "sliding_attention"]
    if (md.rope_by_type["full_attention"][:2], md.rope_by_type["sliding_attention"][:2], md.windows[0],
            md.final_cap, md.attn_cap, md.tied, md.layer_types) != \
            ((1e6, 1.0), (1e4, 1.0), 4096, None, None, True, want_lt):
        bad.append("gemma3 defaults: %r %r %r" % (md.rope_by_type["full_attention"][:2], md.layer_types,
                                                  (md.windows, md.final_cap, md.tied)))
    if diff(md.forward(ids)[0], _gemma3_by_hand(md, ids)) > 1e-12:
        bad.append("gemma3 7 layers, defaults: logits differ from scalar loops")
    expect_raise("gemma3 head_dim default 256",
                 lambda: G({k: v for k, v in cfg.items() if k != "head_dim"}, w), "want [256]")
    if gemma_normalizer(1152, "BF16") != 34.0 or gemma_normalizer(640, "BF16") != 25.25:
        bad.append("gemma_normalizer 1152/640 BF16: %r %r" % (gemma_normalizer(1152, "BF16"),
                                                              gemma_normalizer(640, "BF16")))
    # strictness
    for key in ("query_pre_attn_scalar", "num_key_value_heads"):
        expect_raise("gemma3 without " + key, lambda: G({k: v for k, v in cfg.items() if k != key}, w), key)
    expect_raise("unknown key", lambda: G(dict(cfg, foo_scale=2.0), w), "foo_scale")
    expect_raise("attn softcap", lambda: G(dict(cfg, attn_logit_softcapping=50.0), w),
                 "attn_logit_softcapping")
    expect_raise("rope yarn", lambda: G(dict(cfg, rope_scaling={"rope_type": "yarn", "factor": 8.0}), w),
                 "yarn")
    expect_raise("rope linear extra key", lambda: G(dict(cfg, rope_scaling={
        "rope_type": "linear", "factor": 8.0, "original_max_position_embeddings": 8192}), w),
        "original_max_position_embeddings")
    expect_raise("rope linear no factor", lambda: G(dict(cfg, rope_scaling={"rope_type": "linear"}), w), "factor")
    expect_raise("gemma3 window null", lambda: G(dict(cfg, sliding_window=None), w), "sliding_window null")
    G(dict(cfg, sliding_window=None, sliding_window_pattern=1), w)  # no sliding layer: fine
    expect_raise("gemma3 bidirectional", lambda: G(dict(cfg, use_bidirectional_attention=True), w),
                 "use_bidirectional_attention")
    expect_raise("gemma3 hidden_activation", lambda: G(dict(cfg, hidden_activation="gelu"), w), "gelu")
    expect_raise("gemma3 hidden_act", lambda: G(dict(cfg, hidden_act="silu"), w), "hidden_act")
    expect_raise("gemma3 model_type gemma3", lambda: G(dict(cfg, model_type="gemma3"), w), "model_type")
    g2 = {k: v for k, v in cfg.items() if not k.startswith(("rope_", "sliding_window_"))}
    expect_raise("gemma3 as gemma2", lambda: G(dict(g2, architectures=["Gemma2ForCausalLM"],
                                                    model_type="gemma2"), w), "q/k norms are Qwen3's and Gemma3's")
    for n in ("self_attn.q_norm.weight", "pre_feedforward_layernorm.weight"):
        w2 = dict(w)
        del w2["model.layers.1." + n]
        expect_raise("gemma3 missing " + n, lambda: G(cfg, w2), "model.layers.1." + n)
    w2 = dict(w, **{"model.layers.0.mlp.up_proj.bias": np.zeros(80, np.float32)})
    expect_raise("gemma3 mlp bias", lambda: G(dict(cfg, attention_bias=True), w2), "mlp.up_proj.bias")
    G(cfg, dict(w, **{"model.rotary_emb.full_attention_inv_freq": np.zeros(16, np.float32),
                      "model.rotary_emb_local.inv_freq": np.zeros(16, np.float32)}))
    return bad


def tiny_llama(seed=0, attention_bias=False, **over):
    """config dict and float32 weights of a small random LlamaForCausalLM: hidden 64, 4 heads of 16,
    2 kv heads, intermediate 96, two layers, untied; attention_bias: q/k/v/o biases."""
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
           "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "vocab_size": 256, "rms_norm_eps": 1e-5, "rope_theta": 500.0,
           "hidden_act": "silu", "attention_bias": attention_bias, "tie_word_embeddings": False,
           "torch_dtype": "float32"}
    cfg.update(over)
    rng = np.random.RandomState(seed)
    D, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = D // H
    w = {"model.embed_tokens.weight": rng.standard_normal((V, D)),
         "model.norm.weight": 1 + 0.1 * rng.standard_normal(D),
         "lm_head.weight": rng.standard_normal((V, D)) / np.sqrt(D)}
    shapes = {"self_attn.q_proj": (H * hd, D), "self_attn.k_proj": (Hkv * hd, D),
              "self_attn.v_proj": (Hkv * hd, D), "self_attn.o_proj": (D, H * hd),
              "mlp.gate_proj": (I, D), "mlp.up_proj": (I, D), "mlp.down_proj": (D, I)}
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        w[p + "input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(D)
        w[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(D)
        for m, sh in shapes.items():
            w[p + m + ".weight"] = 1.5 * rng.standard_normal(sh) / np.sqrt(sh[1])
            if attention_bias and m.startswith("self_attn"):
                w[p + m + ".bias"] = 0.5 * rng.standard_normal(sh[0])
    return cfg, {k: v.astype(np.float32) for k, v in w.items()}


def fuse_phi3(weights, order="qkv", gate_first=True):
    """Llama weights -> Phi3's names: qkv_proj rows [q; k; v], gate_up_proj rows [gate; up] (order
    and gate_first break the layout, for the blindness checks)."""
    out = {}
    for k, v in weights.items():
        if k.endswith(("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                       "mlp.gate_proj.weight", "mlp.up_proj.weight")):
            continue
        out[k] = v
        if k.endswith("self_attn.o_proj.weight"):
            p = k[:-len("o_proj.weight")]
            out[p + "qkv_proj.weight"] = np.concatenate([weights[p + c + "_proj.weight"] for c in order])
        if k.endswith("mlp.down_proj.weight"):
            p = k[:-len("down_proj.weight")]
            gu = [weights[p + "gate_proj.weight"], weights[p + "up_proj.weight"]]
            out[p + "gate_up_proj.weight"] = np.concatenate(gu if gate_first else gu[::-1])
    return out


def phi3_config(llama_cfg, **over):
    """The Phi3Config of tiny_llama's geometry, as a Phi-3 checkpoint writes it."""
    cfg = {k: v for k, v in llama_cfg.items() if k not in ("attention_bias", "mlp_bias", "head_dim")}
    cfg.update({"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "embd_pdrop": 0.0,
                "resid_pdrop": 0.0, "attention_dropout": 0.0, "original_max_position_embeddings": 4096,
                "max_position_embeddings": 4096, "rope_scaling": None, "sliding_window": None,
                "initializer_range": 0.02, "use_cache": True, "bos_token_id": 1, "eos_token_id": 32000,
                "pad_token_id": 32000, "transformers_version": "4.44.2"})
    cfg.update(over)
    return cfg


def qwen2_config(llama_cfg, **over):
    cfg = {k: v for k, v in llama_cfg.items() if k not in ("attention_bias", "mlp_bias")}
    cfg.update({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "use_sliding_window": False,
                "sliding_window": 4096, "max_window_layers": 28, "rope_scaling": None})
    cfg.update(over)
    return cfg


def phi3_qwen2_selftest(expect_raise):
    """Phi3 == Llama on the same weights unfused and Qwen2 == Llama with q/k/v biases (identical
    math, 1e-12), fusion layouts mutation-checked; window masks and windowed attention by scalar
    loops (Mistral, Phi3, Qwen2); defaults and strictness of Phi3 and Qwen2."""
    import tempfile
    bad = []
    M = Llama.from_weights
    rng = np.random.RandomState(5)
    ids = rng.randint(0, 256, size=40)  # T 40

    def diff(a, b):
        return float(np.max(np.abs(a - b)))

    # masks: query i sees key j iff i - W < j <= i
    for Tm, Wm in ((9, None), (9, 1), (9, 3), (9, 9), (9, 20), (64, 16)):
        want = np.array([[not ((Wm is None or i - Wm < j) and j <= i) for j in range(Tm)] for i in range(Tm)])
        if not np.array_equal(window_mask(Tm, Wm), want):
            bad.append("window_mask(%d, %r) is not i - W < j <= i" % (Tm, Wm))
    lcfg, lw = tiny_llama()
    ml = M(lcfg, lw)
    ll = ml.forward(ids)[0]
    # Phi3 == Llama, through the directory reader
    pcfg, pw = phi3_config(lcfg), fuse_phi3(lw)
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(pcfg, f)
        write_safetensors(os.path.join(d, "model.safetensors"), pw)
        mp = Llama(d)
    if (mp.arch, mp.fused, mp.head_dim, mp.linears, mp.biased) != \
            ("Phi3ForCausalLM", True, 16, PHI3_LINEARS, set()):
        bad.append("phi3: arch %s fused %s head_dim %d linears %r" % (mp.arch, mp.fused, mp.head_dim, mp.linears))
    lp = mp.forward(ids)[0]
    if diff(lp, ll) > 1e-12:
        bad.append("phi3 != llama on the same weights by %.3g" % diff(lp, ll))
    if diff(mp.forward(np.stack([ids, ids[::-1]]))[1], ml.forward(ids[::-1])[0]) > 1e-12:
        bad.append("phi3 batch row 1 != llama")
    # the hooks see the same activations (the solver's groups)
    hp, hl = {}, {}
    mp.forward(ids[:8], hook=lambda l, g, X: hp.setdefault((l, g), X))
    ml.forward(ids[:8], hook=lambda l, g, X: hl.setdefault((l, g), X))
    if sorted(hp) != sorted(hl) or max(diff(hp[k], hl[k]) for k in hl) > 1e-12:
        bad.append("phi3 hooks differ from llama's")
    for kw in ({"order": "qvk"}, {"order": "kqv"}, {"gate_first": False}):
        if kw.get("order") == "kqv":  # k/q sizes differ: same shape only when H == Hkv
            c2, w2 = tiny_llama(num_key_value_heads=4)
            alt = diff(M(phi3_config(c2), fuse_phi3(w2, **kw)).forward(ids)[0], M(c2, w2).forward(ids)[0])
        else:
            alt = diff(M(pcfg, fuse_phi3(lw, **kw)).forward(ids)[0], ll)
        if alt < 1e-6:
            bad.append("phi3 with fused layout %r == llama (%.3g): check is blind" % (kw, alt))
    # defaults: Phi3Config rms_norm_eps 1e-5, rope_theta 1e4, untied, kv = heads, no window
    dk = ("rms_norm_eps", "rope_theta", "tie_word_embeddings", "num_key_value_heads", "sliding_window",
          "rope_scaling", "hidden_act")
    c2, w2 = tiny_llama(num_key_value_heads=4, rope_theta=10000.0)
    md = M({k: v for k, v in phi3_config(c2).items() if k not in dk}, fuse_phi3(w2))
    if (md.eps, md.theta, md.tied, md.n_kv, md.windows) != (1e-5, 10000.0, False, 4, [None, None]) or \
            diff(md.forward(ids)[0], M(c2, w2).forward(ids)[0]) > 1e-12:
        bad.append("phi3 defaults: eps %r theta %r tied %r kv %r windows %r"
                   % (md.eps, md.theta, md.tied, md.n_kv, md.windows))
    # Qwen2 == Llama: zero biases == no biases; random q/k/v biases == Llama's with a zero o bias
    z = dict(lw)
    for l in range(2):
        for c, n in (("q", 64), ("k", 32), ("v", 32)):
            z["model.layers.%d.self_attn.%s_proj.bias" % (l, c)] = np.zeros(n, np.float32)
    qcfg = qwen2_config(lcfg)
    mq = M(qcfg, z)
    if (mq.arch, mq.head_dim, mq.biased, mq.windows) != \
            ("Qwen2ForCausalLM", 16, {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}, [None, None]):
        bad.append("qwen2: arch %s head_dim %d biased %r windows %r" % (mq.arch, mq.head_dim, mq.biased, mq.windows))
    if diff(mq.forward(ids)[0], ll) > 1e-12:
        bad.append("qwen2 with zero biases != llama by %.3g" % diff(mq.forward(ids)[0], ll))
    bcfg, bw = tiny_llama(attention_bias=True)
    qb = {k: v for k, v in bw.items() if not k.endswith("o_proj.bias")}
    lb = dict(bw, **{k: np.zeros_like(v) for k, v in bw.items() if k.endswith("o_proj.bias")})
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(qwen2_config(bcfg), f)
        write_safetensors(os.path.join(d, "model.safetensors"), qb)
        mqb = Llama(d)
    lq, llb = mqb.forward(ids)[0], M(bcfg, lb).forward(ids)[0]
    if diff(lq, llb) > 1e-12:
        bad.append("qwen2 with q/k/v biases != llama with them (o bias 0) by %.3g" % diff(lq, llb))
    if diff(lq, M(bcfg, dict(bw)).forward(ids)[0]) < 1e-6 or diff(lq, ll) < 1e-6:
        bad.append("qwen2: the o bias / the q/k/v biases change nothing: check is blind")
    # scalar-loop attention with a window (Mistral, window 3, T 7): the window and its width show
    mcfg = dict(lcfg, architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=3)
    mcfg.pop("attention_bias")
    mm = M(mcfg, lw)
    o = {}
    mm.forward(ids[:7], hook=lambda l, g, X: o.setdefault((l, g), X))
    for t in (2, 6):
        if diff(o[(0, "o")][t], _attn_by_hand(mm, ids[:7], t, qk_norm=False, window=3)) > 1e-12:
            bad.append("mistral window 3: attention at %d differs from scalar loops" % t)
    for wd in (2, 4, None):
        if diff(o[(0, "o")][6], _attn_by_hand(mm, ids[:7], 6, qk_norm=False, window=wd)) < 1e-9:
            bad.append("mistral window 3: window %r gives the same attention: check is blind" % (wd,))
    # windows on 64 tokens, W 16: Phi3 == Mistral on the same weights; rows < W == no window, the rest differ
    ids64 = np.random.RandomState(7).randint(0, 256, size=64)
    l_none = ml.forward(ids64)[0]
    l_phi = M(phi3_config(lcfg, sliding_window=16), pw).forward(ids64)[0]
    l_mis = M(dict(mcfg, sliding_window=16), lw).forward(ids64)[0]
    if diff(l_phi, l_mis) > 1e-12 or diff(l_phi[:16], l_none[:16]) > 1e-12 or \
            np.min(np.max(np.abs(l_phi[16:] - l_none[16:]), axis=-1)) < 1e-9:
        bad.append("phi3 window 16 over 64: == mistral %.3g, rows < 16 == none %.3g, rows >= 16 differ %.3g"
                   % (diff(l_phi, l_mis), diff(l_phi[:16], l_none[:16]),
                      np.min(np.max(np.abs(l_phi[16:] - l_none[16:]), axis=-1))))
    # Qwen2: use_sliding_window with max_window_layers 1: layer 1 slides
    q2 = M(qwen2_config(lcfg, use_sliding_window=True, sliding_window=16, max_window_layers=1), z)
    q2n = M(qwen2_config(lcfg, use_sliding_window=True, sliding_window=16, max_window_layers=2), z)
    l_q2 = q2.forward(ids64)[0]
    if q2.windows != [None, 16] or q2n.windows != [None, None] or \
            diff(l_q2[:16], l_none[:16]) > 1e-12 or diff(l_q2[16:], l_none[16:]) < 1e-9:
        bad.append("qwen2 window 16 on layer 1: windows %r / %r" % (q2.windows, q2n.windows))
    lt = ["sliding_attention", "full_attention"]
    if M(qwen2_config(lcfg, use_sliding_window=True, sliding_window=16, layer_types=lt), z).windows != [16, None]:
        bad.append("qwen2 layer_types")
    M(qwen2_config(lcfg, sliding_window=40), z).forward(ids)  # use false, raw 40 >= T 40: fine
    expect_raise("qwen2 raw window, use false",
                 lambda: M(qwen2_config(lcfg, sliding_window=16), z).forward(ids), "every layer")
    M(qwen2_config(lcfg, sliding_window=None), z).forward(ids)
    expect_raise("qwen2 sliding layer_types without a window",
                 lambda: M(qwen2_config(lcfg, layer_types=lt), z), "unset")
    # Qwen2 defaults: kv 32 (4 heads: refused), eps 1e-6, theta 1e4, untied
    dq = {k: v for k, v in qcfg.items() if k not in ("rms_norm_eps", "rope_theta", "tie_word_embeddings")}
    mdq = M(dq, z)
    if (mdq.eps, mdq.theta, mdq.tied) != (1e-6, 10000.0, False):
        bad.append("qwen2 defaults: eps %r theta %r tied %r" % (mdq.eps, mdq.theta, mdq.tied))
    expect_raise("qwen2 kv default 32", lambda: M({k: v for k, v in qcfg.items() if k != "num_key_value_heads"}, z),
                 "32 kv heads")
    # Qwen2 strictness
    w2 = dict(z)
    del w2["model.layers.1.self_attn.k_proj.bias"]
    expect_raise("qwen2 missing k bias", lambda: M(qcfg, w2), "model.layers.1.self_attn.k_proj.bias")
    w2 = dict(z, **{"model.layers.0.self_attn.o_proj.bias": np.zeros(64, np.float32)})
    expect_raise("qwen2 o bias", lambda: M(qcfg, w2), "model.layers.0.self_attn.o_proj.bias")
    w2 = dict(z, **{"model.layers.0.self_attn.v_proj.bias": np.zeros(64, np.float32)})
    expect_raise("qwen2 misshapen v bias", lambda: M(qcfg, w2), "model.layers.0.self_attn.v_proj.bias")
    w2 = dict(z, **{"model.layers.0.mlp.up_proj.bias": np.zeros(96, np.float32)})
    expect_raise("qwen2 mlp bias tensor", lambda: M(qcfg, w2), "model.layers.0.mlp.up_proj.bias")
    expect_raise("qwen2 without biases", lambda: M(qcfg, lw), "model.layers.0.self_attn.q_proj.bias")
    expect_raise("qwen2 attention_bias false", lambda: M(dict(qcfg, attention_bias=False), z), "attention_bias")
    M(dict(qcfg, attention_bias=True), z)
    expect_raise("qwen2 mlp_bias", lambda: M(dict(qcfg, mlp_bias=True), z), "mlp_bias")
    expect_raise("qwen2 head_dim", lambda: M(dict(qcfg, head_dim=32), z), "head_dim")
    M(dict(qcfg, head_dim=16), z)
    expect_raise("qwen2 hidden % heads", lambda: M(dict(qcfg, num_attention_heads=6, num_key_value_heads=6), z),
                 "multiple")
    expect_raise("qwen2 rope yarn", lambda: M(dict(qcfg, rope_scaling={"type": "yarn", "factor": 4.0}), z), "yarn")
    expect_raise("qwen2 labelled qwen3", lambda: M(dict(qcfg, model_type="qwen3"), z), "model_type")
    expect_raise("qwen2 fused", lambda: M(qcfg, dict(z, **{k: v for k, v in pw.items() if "qkv" in k})),
                 "fused projections are Phi3's")
    # Phi3 strictness
    for n, needle in (("self_attn.qkv_proj.weight", "model.layers.1.self_attn.qkv_proj.weight"),
                      ("mlp.gate_up_proj.weight", "model.layers.1.mlp.gate_up_proj.weight")):
        w2 = dict(pw)
        del w2["model.layers.1." + n]
        expect_raise("phi3 missing " + n, lambda: M(pcfg, w2), needle)
        w2 = dict(pw, **{"model.layers.1." + n: pw["model.layers.1." + n][:-1]})
        expect_raise("phi3 misshapen " + n, lambda: M(pcfg, w2), needle)
    expect_raise("phi3 unfused q_proj", lambda: M(pcfg, dict(pw, **{
        "model.layers.0.self_attn.q_proj.weight": lw["model.layers.0.self_attn.q_proj.weight"]})), "Phi3 fuses")
    expect_raise("phi3 weights under llama", lambda: M(lcfg, pw), "fused projections are Phi3's")
    expect_raise("phi3 unfused weights", lambda: M(pcfg, lw), "Phi3 fuses")
    expect_raise("phi3 qkv bias", lambda: M(pcfg, dict(pw, **{
        "model.layers.0.self_attn.qkv_proj.bias": np.zeros(128, np.float32)})), "qkv_proj.bias")
    expect_raise("phi3 untied without lm_head",
                 lambda: M(pcfg, {k: v for k, v in pw.items() if k != "lm_head.weight"}), "lm_head.weight")
    expect_raise("phi3 attention_bias", lambda: M(dict(pcfg, attention_bias=True), pw), "attention_bias")
    M(dict(pcfg, attention_bias=False), pw)
    expect_raise("phi3 mlp_bias", lambda: M(dict(pcfg, mlp_bias=True), pw), "mlp_bias")
    expect_raise("phi3 head_dim", lambda: M(dict(pcfg, head_dim=32), pw), "head_dim")
    M(dict(pcfg, head_dim=16), pw)
    expect_raise("phi3 rope yarn", lambda: M(dict(pcfg, rope_scaling={
        "type": "yarn", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8}), pw), "yarn")
    if diff(M(dict(pcfg, rope_scaling={"rope_type": "default"}), pw).forward(ids[:9])[0], lp[:9]) > 1e-12:
        bad.append("phi3 rope_scaling default != null")
    expect_raise("phi3 unknown key", lambda: M(dict(pcfg, foo_scale=2.0), pw), "foo_scale")
    expect_raise("phi3 hidden_act", lambda: M(dict(pcfg, hidden_act="gelu_new"), pw), "gelu_new")
    expect_raise("phi3 labelled llama", lambda: M(dict(pcfg, model_type="llama"), pw), "model_type")
    expect_raise("phi3 hidden % heads", lambda: M(dict(pcfg, num_attention_heads=6, num_key_value_heads=6), pw),
                 "multiple")
    expect_raise("phi3 window 0", lambda: M(dict(pcfg, sliding_window=0), pw), "sliding_window")
    M(dict(pcfg, auto_map={"AutoConfig": "configuration_phi3.Phi3Config"}, embd_pdrop=0.1, resid_pdrop=0.1,
           attention_dropout=0.1, original_max_position_embeddings=4096), pw)
    M(pcfg, dict(pw, **{"model.layers.0.self_attn.rotary_emb.inv_freq": np.zeros(8, np.float32)}))
    expect_raise("phi3 solver fixture", lambda: dump_solver_fixture(mp, "/nonexistent", "/nonexistent"),
                 "fused")
    return bad


def _phi3_attn_by_hand(m, ids, t, rot="first", pair="rotary", inv_over="rotary", att=True, ext="auto"):
    """Layer 0's attention output (before o_proj) at position t of a Phi3 model over the whole
    sequence ids (longrope picks its factors by len(ids)), by scalar loops (math only), reading the
    config itself: rotary dims int(head_dim * partial_rotary_factor), rope_scaling longrope/su
    short/long factors, original_max_position_embeddings / max_position_embeddings (Phi3Config
    defaults 4096) and the attention factor. The flags break one rule each, for the blindness
    checks: rot "last" rotates the last dims, pair "head" pairs i with i + head_dim/2, inv_over
    "head" spreads the frequencies over head_dim, att False drops the attention factor, ext
    "short"/"long"/"none" forces a factor list (or none)."""
    import math
    cfg = m.cfg
    w = {k: v.tolist() for k, v in m.w.items() if k.startswith("model.layers.0.") or "embed" in k}
    p = "model.layers.0."
    H, Hkv, eps = m.n_heads, m.n_kv, m.eps
    hd = cfg["hidden_size"] // cfg["num_attention_heads"]
    rd = int(hd * cfg.get("partial_rotary_factor", 1.0))
    theta = cfg.get("rope_theta", 10000.0)
    T = len(ids)
    rs = cfg.get("rope_scaling") or {}
    orig = cfg.get("original_max_position_embeddings", 4096)
    mp = cfg.get("max_position_embeddings", 4096)
    fac = [1.0] * (rd // 2)
    af = 1.0
    if rs.get("type", rs.get("rope_type")) in ("longrope", "su"):
        fac = rs["long_factor"] if T > orig else rs["short_factor"]
        if mp / orig > 1:
            af = math.sqrt(1 + math.log(mp / orig) / math.log(orig))
        if ext == "short":
            fac = rs["short_factor"]
        elif ext == "long":
            fac = rs["long_factor"]
    if ext == "none":
        fac = [1.0] * (rd // 2)
    if not att:
        af = 1.0
    off = hd - rd if rot == "last" else 0
    step = hd // 2 if pair == "head" else rd // 2
    span = hd if inv_over == "head" else rd

    def rms(v, g):
        r = 1.0 / math.sqrt(sum(a * a for a in v) / len(v) + eps)
        return [a * r * b for a, b in zip(v, g)]

    def rope(v, pos):
        out = list(v)
        for i in range(rd // 2):
            a = pos / (fac[i] * theta ** (2.0 * i / span))
            c, s_ = math.cos(a) * af, math.sin(a) * af
            i0, i1 = off + i, off + i + step
            out[i0] = v[i0] * c - v[i1] * s_
            out[i1] = v[i1] * c + v[i0] * s_
        return out

    Wqkv = w[p + "self_attn.qkv_proj.weight"]
    xs = [rms(w["model.embed_tokens.weight"][ids[s_]], w[p + "input_layernorm.weight"]) for s_ in range(t + 1)]
    qkv = [[sum(a * b for a, b in zip(row, x)) for row in Wqkv] for x in xs]
    out = []
    for h in range(H):
        j = h // (H // Hkv)
        q = rope(qkv[t][h * hd:(h + 1) * hd], t)
        sc, vs = [], []
        for s_ in range(t + 1):
            k = rope(qkv[s_][(H + j) * hd:(H + j + 1) * hd], s_)
            sc.append(sum(a * b for a, b in zip(q, k)) / math.sqrt(hd))
            vs.append(qkv[s_][(H + Hkv + j) * hd:(H + Hkv + j + 1) * hd])
        mx = max(sc)
        e = [math.exp(z - mx) for z in sc]
        out += [sum(e[s_] / sum(e) * vs[s_][i] for s_ in range(t + 1)) for i in range(hd)]
    return np.array(out)


def rope_selftest(expect_raise):
    """RoPE variants: Phi3 partial_rotary_factor and longrope (attention against scalar loops, with
    mutation checks; identities with plain RoPE; the attention factor; the short/long switch at
    T = original + 1), Llama dynamic (== default up to max_position_embeddings, refused past it),
    and the refusals (yarn, attention_factor, rope_scaling on Mistral/Qwen2/Gemma2, ...)."""
    import math
    bad = []
    M = Llama.from_weights
    ids = np.random.RandomState(11).randint(0, 256, size=40)  # T 40

    def diff(a, b):
        return float(np.max(np.abs(a - b)))

    lcfg, lw = tiny_llama()  # head_dim 16, rope_theta 500
    ll = M(lcfg, lw).forward(ids)[0]
    pcfg, pw = phi3_config(lcfg), fuse_phi3(lw)
    # partial rotary: f = 1 is the plain model; f = 0.75 (12 of 16 dims) against scalar loops
    if diff(M(dict(pcfg, partial_rotary_factor=1.0), pw).forward(ids)[0], ll) > 1e-12:
        bad.append("phi3 partial_rotary_factor 1.0 != plain")
    mpart = M(dict(pcfg, partial_rotary_factor=0.75), pw)
    if mpart.rotary_dim != 12 or len(mpart.inv_freq) != 6 or \
            diff(mpart.inv_freq, 500.0 ** (-np.arange(0, 12, 2) / 12.0)) > 1e-15:
        bad.append("phi3 f 0.75: rotary_dim %d inv_freq %r" % (mpart.rotary_dim, mpart.inv_freq))
    if diff(mpart.forward(ids)[0], ll) < 1e-6:
        bad.append("phi3 f 0.75 == plain: partial rotary did nothing")
    # longrope: non-trivial factors; original 16 < T 40 < max 64 (long), attention factor sqrt(1.5)
    sf = [1.0 + 0.25 * i for i in range(6)]
    lf = [2.0 + 1.5 * i * i for i in range(6)]
    lr = {"type": "longrope", "short_factor": sf, "long_factor": lf}
    lcf = dict(pcfg, partial_rotary_factor=0.75, rope_scaling=lr, original_max_position_embeddings=16,
               max_position_embeddings=64)
    mlr = M(lcf, pw)
    if abs(mlr.attn_factor - math.sqrt(1.5)) > 1e-15 or mlr.rope_type != "longrope":
        bad.append("phi3 longrope: attention factor %r type %r" % (mlr.attn_factor, mlr.rope_type))
    hooks = []
    for m_, n_ in ((mpart, 40), (mlr, 40), (mlr, 12)):
        o = {}
        m_.forward(ids[:n_], hook=lambda l, g, X: o.setdefault((l, g), X))
        hooks.append(o[(0, "o")])
        for t in (3, n_ - 1):
            d_ = diff(o[(0, "o")][t], _phi3_attn_by_hand(m_, ids[:n_], t))
            if d_ > 1e-12:
                bad.append("phi3 %s T %d: attention at %d differs from scalar loops by %.3g"
                           % (m_.rope_type, n_, t, d_))
    for i_, (m_, n_, kws) in enumerate((
            (mpart, 40, ({"rot": "last"}, {"pair": "head"}, {"inv_over": "head"})),
            (mlr, 40, ({"rot": "last"}, {"pair": "head"}, {"inv_over": "head"}, {"att": False},
                       {"ext": "short"}, {"ext": "none"})),
            (mlr, 12, ({"att": False}, {"ext": "long"}, {"ext": "none"})))):
        for kw in kws:
            alt = diff(hooks[i_][n_ - 1], _phi3_attn_by_hand(m_, ids[:n_], n_ - 1, **kw))
            if alt < 1e-6:
                bad.append("phi3 %s T %d: %r gives the same attention (%.3g): check is blind"
                           % (m_.rope_type, n_, kw, alt))
    # longrope with all factors 1 and max == original (no attention factor) is plain RoPE, short or long
    ones = {"type": "longrope", "short_factor": [1.0] * 8, "long_factor": [1.0] * 8}
    m1 = M(dict(pcfg, rope_scaling=ones, original_max_position_embeddings=16, max_position_embeddings=16), pw)
    if m1.attn_factor != 1.0 or diff(m1.forward(ids)[0], ll) > 1e-12 or \
            diff(m1.forward(ids[:12])[0], M(lcfg, lw).forward(ids[:12])[0]) > 1e-12:
        bad.append("phi3 longrope with unit factors, max == original != plain")
    # ... and partial too: == f 0.75 without scaling
    m1p = M(dict(pcfg, partial_rotary_factor=0.75, rope_scaling=dict(ones, short_factor=[1.0] * 6,
            long_factor=[1.0] * 6), original_max_position_embeddings=16, max_position_embeddings=8), pw)
    if m1p.attn_factor != 1.0 or diff(m1p.forward(ids)[0], mpart.forward(ids)[0]) > 1e-12:
        bad.append("phi3 longrope unit factors, max < original, f 0.75 != f 0.75 plain")
    # the attention factor: sqrt(1 + ln(max / original) / ln(original)), 1 when max <= original
    for mp, orig, want in ((1024, 64, math.sqrt(5.0 / 3.0)), (131072, 4096, math.sqrt(1 + 5.0 / 12.0)),
                           (4096, 4096, 1.0), (2048, 4096, 1.0), (1024, 256, math.sqrt(1.25))):
        got = M(dict(pcfg, rope_scaling=ones, original_max_position_embeddings=orig,
                     max_position_embeddings=mp), pw).attn_factor
        if abs(got - want) > 1e-15:
            bad.append("phi3 attention factor max %d original %d: %r, want %r" % (mp, orig, got, want))
    dflt = {k: v for k, v in pcfg.items() if k not in ("original_max_position_embeddings", "max_position_embeddings")}
    md = M(dict(dflt, rope_scaling=ones), pw)
    if (md.orig_max, md.max_pos, md.attn_factor) != (4096, 4096, 1.0):
        bad.append("phi3 longrope defaults: original %r max %r factor %r" % (md.orig_max, md.max_pos, md.attn_factor))
    # the switch: T <= original 8 uses short factors, T = 9 long ones
    sw = dict(pcfg, original_max_position_embeddings=8, max_position_embeddings=64)
    sfa, lfa = [1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0], [4.0, 6.0, 9.0, 14.0, 22.0, 35.0, 56.0, 90.0]
    A = M(dict(sw, rope_scaling={"type": "longrope", "short_factor": sfa, "long_factor": lfa}), pw)
    S = M(dict(sw, rope_scaling={"type": "longrope", "short_factor": sfa, "long_factor": sfa}), pw)
    L_ = M(dict(sw, rope_scaling={"type": "longrope", "short_factor": lfa, "long_factor": lfa}), pw)
    if diff(A.forward(ids[:8])[0], S.forward(ids[:8])[0]) > 1e-12 or \
            diff(A.forward(ids[:9])[0], L_.forward(ids[:9])[0]) > 1e-12 or \
            diff(S.forward(ids[:9])[0], L_.forward(ids[:9])[0]) < 1e-6 or \
            diff(A.forward(ids[:8])[0], A.forward(ids[:9])[0][:8]) < 1e-6:
        bad.append("phi3 longrope switch: T 8 must use short factors, T 9 long ones")
    # spellings: rope_type, su, both keys agreeing, an unused factor, an equal nested original
    ref = mlr.forward(ids)[0]
    for rs_ in ({"rope_type": "longrope", "short_factor": sf, "long_factor": lf},
                {"type": "su", "short_factor": sf, "long_factor": lf},
                dict(lr, rope_type="longrope"), dict(lr, factor=4.0),
                dict(lr, original_max_position_embeddings=16)):
        if diff(M(dict(lcf, rope_scaling=rs_), pw).forward(ids)[0], ref) > 1e-12:
            bad.append("phi3 longrope spelling %r differs" % sorted(rs_))
    # integers count as numbers
    if diff(M(dict(lcf, rope_scaling=dict(lr, short_factor=[1, 1, 2, 2, 3, 3])), pw).forward(ids[:12])[0],
            M(dict(lcf, rope_scaling=dict(lr, short_factor=[1.0, 1.0, 2.0, 2.0, 3.0, 3.0])), pw).forward(
                ids[:12])[0]) > 1e-12:
        bad.append("phi3 longrope integer factors")
    # refusals (Phi3)
    for what, c_, needle in (
            ("yarn", dict(lcf, rope_scaling=dict(lr, type="yarn")), "yarn"),
            ("attention_factor", dict(lcf, rope_scaling=dict(lr, attention_factor=1.0)), "attention_factor"),
            ("unknown longrope key", dict(lcf, rope_scaling=dict(lr, beta_fast=32)), "beta_fast"),
            ("short length head_dim/2", dict(lcf, rope_scaling=dict(lr, short_factor=[1.0] * 8)), "short_factor"),
            ("long length", dict(lcf, rope_scaling=dict(lr, long_factor=lf[:5])), "long_factor"),
            ("zero factor", dict(lcf, rope_scaling=dict(lr, long_factor=[0.0] + lf[1:])), "long_factor"),
            ("bool factor", dict(lcf, rope_scaling=dict(lr, short_factor=[True] + sf[1:])), "short_factor"),
            ("missing long", dict(lcf, rope_scaling={"type": "longrope", "short_factor": sf}), "long_factor"),
            ("type != rope_type", dict(lcf, rope_scaling=dict(lr, rope_type="su")), "rope_type"),
            ("nested original differs", dict(lcf, rope_scaling=dict(lr, original_max_position_embeddings=32)),
             "original_max_position_embeddings"),
            ("factor 0", dict(lcf, rope_scaling=dict(lr, factor=0)), "factor"),
            ("original 0", dict(lcf, original_max_position_embeddings=0), "original_max_position_embeddings"),
            ("linear", dict(pcfg, rope_scaling={"type": "linear", "factor": 2.0}), "linear"),
            ("dynamic", dict(pcfg, rope_scaling={"type": "dynamic", "factor": 2.0}), "dynamic"),
            ("longrope in rope_parameters", dict(pcfg, rope_parameters=lr), "rope_parameters"),
            ("partial 0", dict(pcfg, partial_rotary_factor=0.0), "partial_rotary_factor"),
            ("partial 1.5", dict(pcfg, partial_rotary_factor=1.5), "partial_rotary_factor"),
            ("partial null", dict(pcfg, partial_rotary_factor=None), "partial_rotary_factor"),
            ("partial odd dims", dict(pcfg, partial_rotary_factor=0.5625), "= 9"),
            ("partial 1 dim", dict(pcfg, partial_rotary_factor=0.0625), "= 1"),
            ("partial in rope_scaling", dict(pcfg, rope_scaling={"rope_type": "default",
                                                                 "partial_rotary_factor": 0.5}), "partial")):
        expect_raise("phi3 rope: " + what, lambda: M(c_, pw), needle)
    # f 0.5 (8 dims), unit factors of length 4 accepted; 0.6 -> int(9.6) = 9 refused above as odd
    M(dict(pcfg, partial_rotary_factor=0.5, rope_scaling={"type": "longrope", "short_factor": [1.0] * 4,
                                                          "long_factor": [1.0] * 4}), pw)
    # Llama dynamic: == default for T <= max_position_embeddings; refused beyond
    for rs_ in ({"rope_type": "dynamic", "factor": 4.0}, {"type": "dynamic", "factor": 2.0}):
        mdy = M(dict(lcfg, rope_scaling=rs_, max_position_embeddings=40), lw)
        if diff(mdy.forward(ids)[0], ll) > 1e-12:
            bad.append("llama dynamic %r at T == max != default" % rs_)
        expect_raise("llama dynamic T > max", lambda: mdy.forward(np.append(ids, 5)), "max_position_embeddings 40")
    mdd = M(dict(lcfg, rope_scaling={"rope_type": "dynamic", "factor": 4.0}), lw)  # LlamaConfig: 2048
    if mdd.max_pos != 2048 or diff(mdd.forward(ids)[0], ll) > 1e-12:
        bad.append("llama dynamic, default max_position_embeddings %r" % mdd.max_pos)
    for what, rs_, needle in (
            ("no factor", {"rope_type": "dynamic"}, "factor"),
            ("nested original", {"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 64},
             "original_max_position_embeddings"),
            ("yarn", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}, "yarn"),
            ("longrope", lr, "longrope"), ("linear", {"rope_type": "linear", "factor": 2.0}, "linear")):
        expect_raise("llama rope: " + what, lambda: M(dict(lcfg, rope_scaling=rs_), lw), needle)
    expect_raise("llama partial_rotary_factor", lambda: M(dict(lcfg, partial_rotary_factor=0.5), lw),
                 "partial_rotary_factor")
    expect_raise("llama dynamic in rope_parameters",
                 lambda: M(dict(lcfg, rope_parameters={"rope_type": "dynamic", "factor": 2.0}), lw), "rope_parameters")
    # Mistral, Qwen2 (and Gemma2, in gemma2_selftest): any rope_scaling type but default is refused
    mcfg = {k: v for k, v in dict(lcfg, architectures=["MistralForCausalLM"], model_type="mistral").items()
            if k != "attention_bias"}
    z = dict(lw)
    for l in range(2):
        for c, n in (("q", 64), ("k", 32), ("v", 32)):
            z["model.layers.%d.self_attn.%s_proj.bias" % (l, c)] = np.zeros(n, np.float32)
    qcfg = qwen2_config(lcfg)
    for fam_, c_, w_ in (("mistral", mcfg, lw), ("qwen2", qcfg, z)):
        for t in ("linear", "dynamic", "llama3"):
            rs_ = {"rope_type": t, "factor": 2.0}
            expect_raise("%s rope %s" % (fam_, t), lambda: M(dict(c_, rope_scaling=rs_), w_), "ambiguous")
        expect_raise("%s rope yarn" % fam_, lambda: M(dict(c_, rope_scaling={"type": "yarn", "factor": 2.0}), w_),
                     "yarn")
        if diff(M(dict(c_, rope_scaling={"type": "default"}), w_).forward(ids)[0], ll) > 1e-12:
            bad.append("%s rope_scaling default != llama" % fam_)
    return bad


# ---- mixture of experts: tiny models, dense equivalences, scalar loops, strictness ---------------
def tiny_moe(family, seed=0, **over):
    """config dict and float32 weights of a small random MoE model: hidden 64, 4 heads of 16, 2 kv
    heads, vocab 256, two layers, 4 experts of width 24, top-2, untied; Qwen2-MoE: a shared expert of
    width 40 and dense layers of width 56 (where the config makes a layer dense). `over` edits the
    config before the weights are drawn (so its geometry is the model's)."""
    cfg = {"vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 500.0, "hidden_act": "silu",
           "tie_word_embeddings": False, "num_experts_per_tok": 2, "torch_dtype": "float32"}
    if family == "mixtral":
        cfg.update(architectures=["MixtralForCausalLM"], model_type="mixtral", intermediate_size=24,
                   num_local_experts=4, sliding_window=None, router_aux_loss_coef=0.02,
                   output_router_logits=False)
    else:
        cfg.update(intermediate_size=56, num_experts=4, moe_intermediate_size=24, norm_topk_prob=False,
                   decoder_sparse_step=1, mlp_only_layers=[], use_sliding_window=False,
                   sliding_window=None, max_window_layers=28, router_aux_loss_coef=0.001)
        if family == "qwen2_moe":
            cfg.update(architectures=["Qwen2MoeForCausalLM"], model_type="qwen2_moe",
                       shared_expert_intermediate_size=40)
        else:
            cfg.update(architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe", head_dim=16,
                       attention_bias=False)
    cfg.update(over)
    rng = np.random.RandomState(seed)
    D, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim", D // H)
    E = cfg.get("num_local_experts", cfg.get("num_experts"))
    if family == "mixtral":
        sparse, Im, names, pre = [True] * L, cfg["intermediate_size"], ("w1", "w3", "w2"), "block_sparse_moe."
    else:  # written out here again (not Llama._moe_setup's): layer i sparse iff ...
        step, mol = cfg["decoder_sparse_step"], cfg["mlp_only_layers"] or []
        sparse = [i not in mol and E > 0 and (i + 1) % step == 0 for i in range(L)]
        Im, names, pre = cfg["moe_intermediate_size"], ("gate_proj", "up_proj", "down_proj"), "mlp."

    def lin(o, i, gain=1.5):
        return gain * rng.standard_normal((o, i)) / np.sqrt(i)

    w = {"model.embed_tokens.weight": rng.standard_normal((V, D)),
         "model.norm.weight": 1 + 0.1 * rng.standard_normal(D)}
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = lin(V, D, 1.0)
    for l in range(L):
        p = "model.layers.%d." % l
        w[p + "input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(D)
        w[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(D)
        w[p + "self_attn.q_proj.weight"] = lin(H * hd, D)
        w[p + "self_attn.k_proj.weight"] = lin(Hkv * hd, D)
        w[p + "self_attn.v_proj.weight"] = lin(Hkv * hd, D)
        w[p + "self_attn.o_proj.weight"] = lin(D, H * hd)
        if family == "qwen2_moe":
            for m, n in (("q_proj", H * hd), ("k_proj", Hkv * hd), ("v_proj", Hkv * hd)):
                w[p + "self_attn.%s.bias" % m] = 0.5 * rng.standard_normal(n)
        if family == "qwen3_moe":
            w[p + "self_attn.q_norm.weight"] = 0.2 + 1.6 * rng.rand(hd)
            w[p + "self_attn.k_norm.weight"] = 0.2 + 1.6 * rng.rand(hd)
        if not sparse[l]:
            I = cfg["intermediate_size"]
            w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"] = lin(I, D), lin(I, D)
            w[p + "mlp.down_proj.weight"] = lin(D, I)
            continue
        w[p + pre + "gate.weight"] = lin(E, D, 3.0)  # a router with some conviction
        for e in range(E):
            q = p + pre + "experts.%d." % e
            w[q + names[0] + ".weight"], w[q + names[1] + ".weight"] = lin(Im, D), lin(Im, D)
            w[q + names[2] + ".weight"] = lin(D, Im)
        if family == "qwen2_moe":
            Is = cfg["shared_expert_intermediate_size"]
            q = p + "mlp.shared_expert."
            w[q + "gate_proj.weight"], w[q + "up_proj.weight"] = lin(Is, D), lin(Is, D)
            w[q + "down_proj.weight"] = lin(D, Is)
            w[p + "mlp.shared_expert_gate.weight"] = lin(1, D, 2.0)
    return cfg, {k: np.asarray(v, dtype=np.float32) for k, v in w.items()}


def same_experts(cfg, w, src=0):
    """w with every expert of every sparse layer a copy of expert src."""
    out = dict(w)
    for k in w:
        if ".experts.%d." % src in k:
            head, _, tail = k.partition(".experts.%d." % src)
            for e in range(cfg.get("num_local_experts", cfg.get("num_experts"))):
                out["%s.experts.%d.%s" % (head, e, tail)] = w[k]
    return out


def moe_as_dense(family, cfg, w, down_scale=1.0):
    """The dense sibling (Mistral / Qwen2 / Qwen3) whose MLP on each sparse layer is expert 0
    (down_proj times down_scale): equal to the MoE model when all experts are identical and the
    routed weights sum to one (and Qwen2-MoE's shared expert is off, or folded into down_scale)."""
    dense_arch = {"mixtral": ("MistralForCausalLM", "mistral"), "qwen2_moe": ("Qwen2ForCausalLM", "qwen2"),
                  "qwen3_moe": ("Qwen3ForCausalLM", "qwen3")}[family]
    keep = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "rms_norm_eps", "rope_theta", "hidden_act", "tie_word_embeddings", "head_dim", "attention_bias"}
    dc = {k: v for k, v in cfg.items() if k in keep}
    dc.update(architectures=[dense_arch[0]], model_type=dense_arch[1], sliding_window=cfg.get("sliding_window"))
    names = ("w1", "w3", "w2") if family == "mixtral" else ("gate_proj", "up_proj", "down_proj")
    pre = "block_sparse_moe." if family == "mixtral" else "mlp."
    dw = {}
    for k, v in w.items():
        if ".experts.0." in k:
            l = k.split(".")[2]
            for n, dn in zip(names, ("gate_proj", "up_proj", "down_proj")):
                if k.endswith(".experts.0.%s.weight" % n):
                    dw["model.layers.%s.mlp.%s.weight" % (l, dn)] = np.asarray(v, np.float64) * (
                        down_scale if dn == "down_proj" else 1.0)
        elif not any(t in k for t in (pre + "gate.weight", ".experts.", ".shared_expert")):
            dw[k] = v
    widths = {dw[k].shape[0] for k in dw if k.endswith("mlp.gate_proj.weight")}
    if len(widths) != 1:
        raise ValueError("moe_as_dense: dense layers of widths %s" % sorted(widths))
    dc["intermediate_size"] = widths.pop()
    return dc, dw


def _moe_block_by_hand(m, l, x, renorm=None, shared_gate=True):
    """Layer l's MoE block on one token x (hidden,) by scalar loops: softmax, pick the top k by
    repeated argmax (lowest index on ties), weights, SwiGLU experts, Qwen2-MoE's gated shared expert.
    renorm: None = the model's rule; True/False force it (mutation checks)."""
    w = m.w
    pre = "model.layers.%d.%s" % (l, m.moe_prefix)
    D, E = len(x), m.n_experts

    def mv(W, v):
        return [sum(W[r][c] * v[c] for c in range(len(v))) for r in range(len(W))]

    def silu(z):
        return z / (1.0 + math.exp(-z))

    def expert(p, names):
        g, u = mv(w[p + names[0] + ".weight"], x), mv(w[p + names[1] + ".weight"], x)
        return mv(w[p + names[2] + ".weight"], [silu(a) * b for a, b in zip(g, u)])

    logits = mv(w[pre + "gate.weight"], x)
    mx = max(logits)
    ex = [math.exp(z - mx) for z in logits]
    probs = [v / sum(ex) for v in ex]
    chosen = []
    for _ in range(m.top_k):
        best = None
        for e in range(E):
            if e not in chosen and (best is None or probs[e] > probs[best]):
                best = e
        chosen.append(best)
    wts = [probs[e] for e in chosen]
    if (m.norm_topk if renorm is None else renorm):
        tot = sum(wts)
        wts = [v / tot for v in wts]
    out = [0.0] * D
    for e, a in zip(chosen, wts):
        y = expert(pre + "experts.%d." % e, m.expert_names)
        out = [o + a * v for o, v in zip(out, y)]
    if m.shared_inter is not None and shared_gate is not None:
        y = expert(pre + "shared_expert.", ("gate_proj", "up_proj", "down_proj"))
        gl = sum(a * b for a, b in zip(w[pre + "shared_expert_gate.weight"][0], x))
        s = 1.0 / (1.0 + math.exp(-gl)) if shared_gate else 1.0
        out = [o + s * v for o, v in zip(out, y)]
    return np.array(out)


def moe_selftest(expect_raise):
    """Mixtral / Qwen2-MoE / Qwen3-MoE: see the module docstring's --selftest."""
    import tempfile
    bad = []
    M = Llama.from_weights
    rng = np.random.RandomState(9)
    ids = rng.randint(0, 256, size=24)

    def diff(a, b):
        return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))

    # routing: ties to the lower index, renormalisation, the margin
    sel, wts, mg = moe_route(np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 5.0, 5.0]]), 2, True)
    if sel.tolist() != [[1, 2], [0, 1], [2, 3]] or diff(wts, 0.5) > 1e-15 or mg != 0.0:
        bad.append("moe_route ties: sel %r wts %r margin %r" % (sel.tolist(), wts.tolist(), mg))
    sel, wts, mg = moe_route(np.array([[0.0, np.log(3.0), np.log(2.0)]]), 1, False)
    if sel.tolist() != [[1]] or abs(wts[0, 0] - 0.5) > 1e-15 or abs(mg - (0.5 - 1 / 3)) > 1e-15:
        bad.append("moe_route top-1: sel %r wts %r margin %r" % (sel.tolist(), wts.tolist(), mg))
    sel, wts, mg = moe_route(np.array([[0.0, np.log(3.0), np.log(2.0)]]), 3, False)
    if sel.tolist() != [[1, 2, 0]] or diff(wts, [[0.5, 1 / 3, 1 / 6]]) > 1e-15 or mg is not None:
        bad.append("moe_route top-3: sel %r wts %r" % (sel.tolist(), wts.tolist()))

    for fam in MOE_FAMILIES:
        cfg, w = tiny_moe(fam)
        m = M(cfg, w)
        L = m.n_layers
        # through the directory reader, batched == single
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(cfg, f)
            write_safetensors(os.path.join(d, "model.safetensors"), w)
            md = Llama(d)
        lg = md.forward(ids)[0]
        if (md.arch, md.moe, md.sparse, md.n_experts, md.top_k) != (cfg["architectures"][0], True, [True] * L, 4, 2) \
                or not np.all(np.isfinite(lg)):
            bad.append("%s: arch %s moe %s sparse %r E %d k %d" % (fam, md.arch, md.moe, md.sparse, md.n_experts, md.top_k))
        if diff(md.forward(np.stack([ids[::-1], ids]))[1], lg) > 1e-12:
            bad.append("%s: batch row 1 != single forward" % fam)
        if md.min_route_margin is None or not 0 < md.min_route_margin < 1:
            bad.append("%s: min_route_margin %r" % (fam, md.min_route_margin))
        # one block by scalar loops, each layer, a few tokens, with mutations that must show
        X = rng.standard_normal((3, 64))
        for l in range(L):
            got = m.moe_block(X, l)
            for t in range(3):
                want = _moe_block_by_hand(m, l, list(X[t]))
                if diff(got[t], want) > 1e-12:
                    bad.append("%s layer %d token %d: block differs from scalar loops by %.3g"
                               % (fam, l, t, diff(got[t], want)))
        muts = [{"renorm": not m.norm_topk}] + ([{"shared_gate": False}, {"shared_gate": None}]
                                                if fam == "qwen2_moe" else [])
        for kw in muts:
            if diff(m.moe_block(X[:1], 0)[0], _moe_block_by_hand(m, 0, list(X[0]), **kw)) < 1e-3:
                bad.append("%s: scalar loops with %r agree: the check is blind" % (fam, kw))
        # top-1 of 2 experts, and norm_topk_prob true (Qwen) / false by scalar loops
        over = {"num_local_experts" if fam == "mixtral" else "num_experts": 2, "num_experts_per_tok": 1}
        for extra in ([{}] if fam == "mixtral" else [{}, {"norm_topk_prob": True}]):
            c1, w1 = tiny_moe(fam, seed=3, **dict(over, **extra))
            m1 = M(c1, w1)
            got = m1.moe_block(X, 1)
            for t in range(3):
                if diff(got[t], _moe_block_by_hand(m1, 1, list(X[t]))) > 1e-12:
                    bad.append("%s top-1 of 2 %r: token %d differs from scalar loops" % (fam, extra, t))
        # identical experts: any routing, weights summing to one -> the dense sibling
        renorm = {} if fam == "mixtral" else {"norm_topk_prob": True}
        for k in (1, 2, 3):
            ck, wk = tiny_moe(fam, seed=4, num_experts_per_tok=k, **renorm)
            ws = same_experts(ck, wk)
            if fam == "qwen2_moe":  # the shared expert off: its down_proj zero
                ws = {n: (np.zeros_like(v) if n.endswith("shared_expert.down_proj.weight") else v)
                      for n, v in ws.items()}
            dc, dw = moe_as_dense(fam, ck, ws)
            dd = diff(M(ck, ws).forward(ids), M(dc, dw).forward(ids))
            if dd > 1e-12:
                bad.append("%s k=%d: identical experts differ from %s dense by %.3g" % (fam, k, dc["model_type"], dd))
            if k == 2 and diff(M(ck, wk).forward(ids), M(dc, dw).forward(ids)) < 1e-3:
                bad.append("%s: random experts == dense: the equivalence check is blind" % fam)
        # top-k = E: the softmax-weighted sum of every expert (renormalised or not: same)
        for extra in ([{}] if fam == "mixtral" else [{"norm_topk_prob": False}, {"norm_topk_prob": True}]):
            ce, we = tiny_moe(fam, seed=5, num_experts_per_tok=4, **extra)
            me = M(ce, we)
            got = me.moe_block(X, 0)
            pre = "model.layers.0." + me.moe_prefix
            lo = X @ me.w[pre + "gate.weight"].T
            pr = np.exp(lo - lo.max(axis=1, keepdims=True))
            pr /= pr.sum(axis=1, keepdims=True)
            want = sum(pr[:, e:e + 1] * me.swiglu(X, pre + "experts.%d." % e, me.expert_names) for e in range(4))
            if fam == "qwen2_moe":
                g = X @ me.w[pre + "shared_expert_gate.weight"].T
                want = want + me.swiglu(X, pre + "shared_expert.", ("gate_proj", "up_proj", "down_proj")) / (1 + np.exp(-g))
            if diff(got, want) > 1e-12:
                bad.append("%s top-k = E %r: differs from the softmax-weighted sum by %.3g" % (fam, extra, diff(got, want)))
    # Qwen2-MoE's shared-expert gate: -50s on an all-positive input -> sigmoid 0 (no shared
    # contribution); 0 -> 1/2; +50s -> 1. One layer, identical experts (renormalised) and the shared
    # expert equal to them (same width): 1, 1.5 and 2 times the dense MLP
    cq, wq = tiny_moe("qwen2_moe", seed=6, num_hidden_layers=1, norm_topk_prob=True,
                      shared_expert_intermediate_size=24)
    wq = same_experts(cq, wq)
    wq["model.embed_tokens.weight"] = (3.0 + 0.1 * rng.standard_normal((256, 64))).astype(np.float32)
    wq["model.layers.0.self_attn.o_proj.weight"] *= np.float32(0.01)
    for n in ("gate_proj", "up_proj", "down_proj"):
        wq["model.layers.0.mlp.shared_expert.%s.weight" % n] = wq["model.layers.0.mlp.experts.0.%s.weight" % n]
    seen = {}
    for gate, scale in ((-50.0, 1.0), (0.0, 1.5), (50.0, 2.0)):
        wg = dict(wq, **{"model.layers.0.mlp.shared_expert_gate.weight": np.full((1, 64), gate, np.float32)})
        mg_ = M(cq, wg)
        lg = mg_.forward(ids, hook=lambda l, g, X: seen.setdefault(g, X))
        dc, dw = moe_as_dense("qwen2_moe", cq, wg, down_scale=scale)
        dd = diff(lg, M(dc, dw).forward(ids))
        if dd > 1e-10:
            bad.append("qwen2_moe shared gate %g: differs from dense x %g by %.3g" % (gate, scale, dd))
    if not np.min(seen["gateup"]) > 0:
        bad.append("qwen2_moe shared gate check: the MLP input is not all positive (min %.3g)" % np.min(seen["gateup"]))
    # the sparse-layer rule, the tensors it wants, and num_experts 0
    for over, want in (({"num_hidden_layers": 4, "decoder_sparse_step": 2}, [False, True, False, True]),
                       ({"num_hidden_layers": 4, "mlp_only_layers": [1]}, [True, False, True, True]),
                       ({"num_hidden_layers": 3, "decoder_sparse_step": 3, "mlp_only_layers": [2]}, [False] * 3),
                       ({"num_hidden_layers": 3, "num_experts": 0}, [False] * 3),
                       ({"num_hidden_layers": 3, "decoder_sparse_step": 2, "mlp_only_layers": None},
                        [False, True, False])):
        for fam in ("qwen2_moe", "qwen3_moe"):
            c, w = tiny_moe(fam, seed=7, **over)
            try:
                got = M(c, w).sparse
            except ValueError as e:
                got = str(e)
            if got != want:
                bad.append("%s %r: sparse layers %r, want %r" % (fam, over, got, want))
    c, w = tiny_moe("qwen2_moe", seed=7, num_hidden_layers=3, decoder_sparse_step=2)
    md = M(c, w)
    if diff(md.forward(ids), M(c, dict(w)).forward(ids)) != 0.0 or md.moe_inter != 24 or md.inter != 56:
        bad.append("qwen2_moe mixed layers: widths %d/%d" % (md.moe_inter, md.inter))
    # defaults (the config classes'): a value equal to the default may be dropped; tensors name others
    cm, wm = tiny_moe("mixtral", rms_norm_eps=1e-5, rope_theta=1e6)
    ref = M(cm, wm)
    drop = {k: v for k, v in cm.items() if k not in ("rms_norm_eps", "rope_theta", "num_experts_per_tok",
                                                     "sliding_window")}
    md = M(drop, wm)
    if (md.eps, md.theta, md.top_k, md.windows, md.tied) != (1e-5, 1e6, 2, [None, None], False) or \
            diff(md.forward(ids), ref.forward(ids)) != 0.0:
        bad.append("mixtral defaults: eps %r theta %r k %r windows %r" % (md.eps, md.theta, md.top_k, md.windows))
    Mx = lambda c, w=wm: M(c, w)  # noqa: E731
    expect_raise("mixtral kv default 8", lambda: Mx({k: v for k, v in cm.items() if k != "num_key_value_heads"}),
                 "4 heads, 8 kv heads")
    expect_raise("mixtral experts default 8", lambda: Mx({k: v for k, v in cm.items() if k != "num_local_experts"}),
                 "want [8, 64]")
    expect_raise("mixtral width default 14336", lambda: Mx({k: v for k, v in cm.items() if k != "intermediate_size"}),
                 "want [14336, 64]")
    c2, w2 = tiny_moe("qwen2_moe")
    md = M({k: v for k, v in c2.items() if k not in ("norm_topk_prob", "decoder_sparse_step", "mlp_only_layers",
                                                     "num_experts_per_tok", "sliding_window",
                                                     "max_window_layers")}, w2)
    if (md.norm_topk, md.top_k, md.sparse, md.eps) != (False, 4, [True, True], 1e-5):
        bad.append("qwen2_moe defaults: norm %r k %r sparse %r" % (md.norm_topk, md.top_k, md.sparse))
    Q2 = lambda drop: M({k: v for k, v in c2.items() if k != drop}, w2)  # noqa: E731
    expect_raise("qwen2_moe kv default 16", lambda: Q2("num_key_value_heads"), "4 heads, 16 kv heads")
    expect_raise("qwen2_moe experts default 60", lambda: Q2("num_experts"), "want [60, 64]")
    expect_raise("qwen2_moe moe width 1408", lambda: Q2("moe_intermediate_size"), "want [64, 1408]")
    expect_raise("qwen2_moe shared width 5632", lambda: Q2("shared_expert_intermediate_size"), "want [64, 5632]")
    c3, w3 = tiny_moe("qwen3_moe")
    md = M({k: v for k, v in c3.items() if k not in ("norm_topk_prob", "decoder_sparse_step", "head_dim",
                                                     "attention_bias")}, w3)
    if (md.norm_topk, md.head_dim, md.sparse, md.biased) != (False, 16, [True, True], set()):
        bad.append("qwen3_moe defaults: norm %r head_dim %r" % (md.norm_topk, md.head_dim))
    Q3 = lambda drop, c=c3, w=w3: M({k: v for k, v in c.items() if k != drop}, w)  # noqa: E731
    expect_raise("qwen3_moe kv default 4", lambda: Q3("num_key_value_heads"), "want [64, 64]")
    expect_raise("qwen3_moe experts default 128", lambda: Q3("num_experts"), "want [128, 64]")
    expect_raise("qwen3_moe moe width 768", lambda: Q3("moe_intermediate_size"), "want [64, 768]")
    expect_raise("qwen3_moe top-k default 8", lambda: Q3("num_experts_per_tok"), "num_experts_per_tok 8 > 4")
    c3b, w3b = tiny_moe("qwen3_moe", head_dim=32)
    expect_raise("qwen3_moe head_dim default hidden/heads", lambda: Q3("head_dim", c3b, w3b), "want [16]")
    # qwen3_moe attention_bias: q/k/v/o biases
    cb, wb = tiny_moe("qwen3_moe", attention_bias=True)
    expect_raise("qwen3_moe attention_bias without biases", lambda: M(cb, wb), "q_proj.bias")
    # the published configs' keys are all known (geometry shrunk to tiny_moe's)
    pub = os.path.join(ROOT, "fixtures", "configs")
    qwen15 = {"architectures": ["Qwen2MoeForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
              "eos_token_id": 151643, "decoder_sparse_step": 1, "hidden_act": "silu", "hidden_size": 2048,
              "initializer_range": 0.02, "intermediate_size": 5632, "max_position_embeddings": 8192,
              "max_window_layers": 21, "model_type": "qwen2_moe", "moe_intermediate_size": 1408,
              "norm_topk_prob": False, "num_attention_heads": 16, "num_experts": 60,
              "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_key_value_heads": 16,
              "output_router_logits": False, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
              "router_aux_loss_coef": 0.001, "shared_expert_intermediate_size": 5632,
              "sliding_window": 32768, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
              "transformers_version": "4.40.0.dev0", "use_cache": True, "use_sliding_window": False,
              "vocab_size": 151936}  # Qwen1.5-MoE-A2.7B's config.json (its keys and values)
    pubs = [("Qwen1.5-MoE-A2.7B", qwen15)]
    for fn in ("mixtral-8x7b.json", "mixtral-8x22b.json", "qwen3-30b-a3b.json", "qwen3-235b-a22b.json"):
        if os.path.exists(os.path.join(pub, fn)):
            with open(os.path.join(pub, fn)) as f:
                pubs.append((fn, json.load(f)))
    for name, pc in pubs:
        fam = ARCHS[pc["architectures"][0]]
        tc, tw = tiny_moe(fam)
        c = dict(pc, **{k: tc[k] for k in tc if k in ("vocab_size", "hidden_size", "intermediate_size",
                                                      "num_hidden_layers", "num_attention_heads",
                                                      "num_key_value_heads", "num_local_experts",
                                                      "num_experts", "moe_intermediate_size",
                                                      "shared_expert_intermediate_size", "head_dim",
                                                      "num_experts_per_tok")})
        try:
            M(c, tw).forward(ids[:4])
        except ValueError as e:
            bad.append("published %s (shrunk) refused: %s" % (name, e))
    # strictness: config keys
    for fam in MOE_FAMILIES:
        c, w = tiny_moe(fam)
        expect_raise("%s unknown key" % fam, lambda: M(dict(c, moe_layer_freq=1), w), "moe_layer_freq")
        expect_raise("%s rope linear" % fam,
                     lambda: M(dict(c, rope_scaling={"rope_type": "linear", "factor": 2.0}), w), "linear")
        expect_raise("%s top-k > E" % fam, lambda: M(dict(c, num_experts_per_tok=5), w), "num_experts_per_tok 5 > 4")
        expect_raise("%s labelled mistral" % fam, lambda: M(dict(c, model_type="mistral"), w), "model_type")
        if fam == "mixtral":
            expect_raise("mixtral norm_topk_prob", lambda: M(dict(c, norm_topk_prob=False), w), "norm_topk_prob")
            expect_raise("mixtral head_dim", lambda: M(dict(c, head_dim=32), w), "head_dim 32")
            expect_raise("mixtral attention_bias", lambda: M(dict(c, attention_bias=True), w), "attention_bias")
            M(dict(c, head_dim=16, attention_bias=False, router_jitter_noise=0.1), w)
            continue
        expect_raise("%s use_sliding_window" % fam,
                     lambda: M(dict(c, use_sliding_window=True, sliding_window=8), w), "use_sliding_window")
        expect_raise("%s sliding layer_types" % fam,
                     lambda: M(dict(c, layer_types=["sliding_attention", "full_attention"]), w), "layer_types")
        M(dict(c, layer_types=["full_attention"] * 2, sliding_window=4), w).forward(ids)  # null'd window
        expect_raise("%s mlp_only_layers out of range" % fam, lambda: M(dict(c, mlp_only_layers=[2]), w),
                     "mlp_only_layers")
        expect_raise("%s decoder_sparse_step 0" % fam, lambda: M(dict(c, decoder_sparse_step=0), w),
                     "decoder_sparse_step")
        expect_raise("%s norm_topk_prob 1" % fam, lambda: M(dict(c, norm_topk_prob=1), w), "norm_topk_prob")
        expect_raise("%s num_experts -1" % fam, lambda: M(dict(c, num_experts=-1), w), "num_experts")
        if fam == "qwen2_moe":
            expect_raise("qwen2_moe qkv_bias false", lambda: M(dict(c, qkv_bias=False), w), "qkv_bias")
            expect_raise("qwen2_moe attention_bias false", lambda: M(dict(c, attention_bias=False), w),
                         "attention_bias")
            expect_raise("qwen2_moe head_dim", lambda: M(dict(c, head_dim=32), w), "head_dim 32")
            M(dict(c, qkv_bias=True), w)
        else:
            expect_raise("qwen3_moe shared_expert_intermediate_size",
                         lambda: M(dict(c, shared_expert_intermediate_size=40), w), "shared_expert_intermediate_size")
    # strictness: tensors
    cm, wm = tiny_moe("mixtral")
    e3 = "model.layers.1.block_sparse_moe.experts.3.w2.weight"
    expect_raise("mixtral missing expert tensor", lambda: M(cm, {k: v for k, v in wm.items() if k != e3}), e3)
    expect_raise("mixtral missing router", lambda: M(cm, {k: v for k, v in wm.items()
                                                           if k != "model.layers.0.block_sparse_moe.gate.weight"}),
                 "block_sparse_moe.gate.weight")
    extra = "model.layers.0.block_sparse_moe.experts.4.w1.weight"
    expect_raise("mixtral extra expert", lambda: M(cm, dict(wm, **{extra: wm[extra.replace(".4.", ".0.")]})),
                 "experts.0..3")
    expect_raise("mixtral 5 experts of 4", lambda: M(dict(cm, num_local_experts=5), wm), "want [5, 64]")
    expect_raise("mixtral dense mlp", lambda: M(cm, dict(wm, **{"model.layers.0.mlp.gate_proj.weight":
                                                             np.zeros((24, 64), np.float32)})), "is sparse")
    expect_raise("mixtral w1/w3 swapped shape", lambda: M(cm, dict(wm, **{
        "model.layers.0.block_sparse_moe.experts.0.w2.weight": np.zeros((24, 64), np.float32)})), "want [64, 24]")
    c2, w2 = tiny_moe("qwen2_moe", num_hidden_layers=3, decoder_sparse_step=2)
    expect_raise("qwen2_moe router on a dense layer", lambda: M(c2, dict(w2, **{
        "model.layers.0.mlp.gate.weight": np.zeros((4, 64), np.float32)})), "layer 0 is dense")
    expect_raise("qwen2_moe missing shared gate", lambda: M(c2, {
        k: v for k, v in w2.items() if k != "model.layers.1.mlp.shared_expert_gate.weight"}), "shared_expert_gate")
    expect_raise("qwen2_moe missing dense layer", lambda: M(c2, {
        k: v for k, v in w2.items() if k != "model.layers.2.mlp.up_proj.weight"}), "model.layers.2.mlp.up_proj.weight")
    expect_raise("qwen2_moe as mixtral", lambda: M(dict(cm), dict(wm, **{
        "model.layers.0.mlp.experts.0.gate_proj.weight": np.zeros((24, 64), np.float32)})), "is sparse")
    c3, w3 = tiny_moe("qwen3_moe")
    expect_raise("qwen3_moe shared expert tensor", lambda: M(c3, dict(w3, **{
        "model.layers.0.mlp.shared_expert_gate.weight": np.zeros((1, 64), np.float32)})), "shared_expert_gate")
    expect_raise("qwen3_moe missing expert", lambda: M(c3, {
        k: v for k, v in w3.items() if k != "model.layers.0.mlp.experts.2.up_proj.weight"}), "experts.2.up_proj")
    lcfg, lw = tiny_llama()
    expect_raise("experts under llama", lambda: M(lcfg, dict(lw, **{
        "model.layers.0.mlp.experts.0.gate_proj.weight": np.zeros((96, 64), np.float32)})), "routed experts")
    # the solver fixture refuses a mixture of experts
    try:
        _unfused_only(M(cm, wm))
        bad.append("solver fixture accepted a MoE model")
    except ValueError:
        pass
    # windows: Mixtral on every layer (computed), like Mistral on the same dense weights
    cs, ws = tiny_moe("mixtral", seed=8, sliding_window=4, num_local_experts=1, num_experts_per_tok=1)
    dc, dw = moe_as_dense("mixtral", cs, ws)
    mm = M(cs, ws)
    if mm.windows != [4, 4] or diff(mm.forward(ids), M(dc, dw).forward(ids)) > 1e-12 or \
            diff(mm.forward(ids), M(dict(cs, sliding_window=None), ws).forward(ids)) < 1e-6:
        bad.append("mixtral sliding window 4: windows %r, must equal Mistral's and differ from none" % (mm.windows,))
    return bad


def selftest():
    """Returns a list of failure strings."""
    import tempfile
    bad = []

    def expect_raise(what, fn, needle):
        try:
            fn()
        except ValueError as e:
            if needle not in str(e):
                bad.append("%s: raised %r, want it to mention %r" % (what, str(e), needle))
            return
        bad.append("%s: did not raise" % what)

    ids = np.array([3, 17, 200, 45, 9], dtype=np.int64)
    T = len(ids)
    with tempfile.TemporaryDirectory() as d:
        for bias in (False, True):
            cfg, w = tiny_qwen3(attention_bias=bias)
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(cfg, f)
            write_safetensors(os.path.join(d, "model.safetensors"), w)
            m = Llama(d)
            got = {}
            lg = m.forward(ids, hook=lambda l, g, X: got.setdefault((l, g), X))
            if m.arch != "Qwen3ForCausalLM" or m.head_dim != 32 or lg.shape != (1, T, 256) or \
                    not np.all(np.isfinite(lg)):
                bad.append("qwen3 bias=%s: arch %s head_dim %d logits %s" % (bias, m.arch, m.head_dim, lg.shape))
            o = got[(0, "o")]
            for t in (0, T - 1):
                want = _attn_by_hand(m, ids, t)
                diff = float(np.max(np.abs(o[t] - want)))
                if diff > 1e-12:
                    bad.append("qwen3 bias=%s: layer 0 attention at %d differs from scalar loops by %.3g"
                               % (bias, t, diff))
            # the hand check must see the order and the norm: swapped or dropped, it differs
            for kw in ({"norm_first": False}, {"qk_norm": False}):
                alt = float(np.max(np.abs(o[T - 1] - _attn_by_hand(m, ids, T - 1, **kw))))
                if alt < 1e-3:
                    bad.append("qwen3 bias=%s: %r gives the same attention (%.3g): check is blind" % (bias, kw, alt))
            # batched rows == single rows
            lg2 = m.forward(np.stack([ids, ids[::-1]]))
            if float(np.max(np.abs(lg2[0] - lg[0]))) > 1e-12:
                bad.append("qwen3: batch row 0 != single forward")

    cfg, w = tiny_qwen3()
    Q = Llama.from_weights
    # strictness
    w2 = dict(w)
    del w2["model.layers.1.self_attn.k_norm.weight"]
    expect_raise("missing k_norm", lambda: Q(cfg, w2), "model.layers.1.self_attn.k_norm.weight")
    w2 = dict(w, **{"model.layers.0.self_attn.q_proj.bias": np.zeros(128, np.float32)})
    expect_raise("bias without attention_bias", lambda: Q(cfg, w2), "model.layers.0.self_attn.q_proj.bias")
    w2 = dict(w, **{"model.layers.0.mlp.up_proj.bias": np.zeros(96, np.float32)})
    expect_raise("mlp bias in qwen3", lambda: Q(dict(cfg, attention_bias=True, mlp_bias=True), w2),
                 "model.layers.0.mlp.up_proj.bias")
    w2 = dict(w, **{"lm_head.weight": w["model.embed_tokens.weight"] + 1})
    expect_raise("tied lm_head != embed", lambda: Q(cfg, w2), "lm_head.weight")
    Q(cfg, dict(w, **{"lm_head.weight": w["model.embed_tokens.weight"].copy(),
                      "model.rotary_emb.inv_freq": np.zeros(16, np.float32)}))
    expect_raise("untied without lm_head", lambda: Q(dict(cfg, tie_word_embeddings=False), w),
                 "lm_head.weight")
    expect_raise("head_dim default 128", lambda: Q({k: v for k, v in cfg.items() if k != "head_dim"}, w),
                 "want [128]")
    expect_raise("qwen3 labelled llama", lambda: Q(dict(cfg, architectures=["LlamaForCausalLM"]), w),
                 "model_type")
    lcfg = dict(cfg, architectures=["LlamaForCausalLM"], model_type="llama")
    expect_raise("q_norm under llama", lambda: Q(lcfg, w), "q/k norms are Qwen3's")
    expect_raise("qwen3 weights under qwen2", lambda: Q(dict({k: v for k, v in cfg.items() if k != "attention_bias"},
                                                            architectures=["Qwen2ForCausalLM"],
                                                            model_type="qwen2", head_dim=16), w),
                 "q/k norms are Qwen3's")
    expect_raise("rope llama3", lambda: Q(dict(cfg, rope_scaling={"rope_type": "llama3", "factor": 8.0}), w),
                 "llama3")
    # Llama with a config head_dim != hidden/heads: same model minus the q/k norms
    qk = [k for k in w if k.endswith(("self_attn.q_norm.weight", "self_attn.k_norm.weight"))]
    lw = {k: v for k, v in w.items() if k not in qk}
    ml = Q(lcfg, lw)
    mq = Q(dict(cfg), dict(w, **{k: np.ones(32, np.float32) for k in qk}))
    if ml.head_dim != 32:
        bad.append("llama head_dim from config: %d" % ml.head_dim)
    lo = {}
    ml.forward(ids, hook=lambda l, g, X: lo.setdefault((l, g), X))
    want = _attn_by_hand(ml, ids, T - 1, qk_norm=False)
    if float(np.max(np.abs(lo[(0, "o")][T - 1] - want))) > 1e-12:
        bad.append("llama head_dim 32: attention differs from scalar loops")
    if float(np.max(np.abs(ml.forward(ids) - mq.forward(ids)))) < 1e-3:
        bad.append("qwen3 with unit q/k norm weights == llama: the per-head norm did nothing")
    # sliding windows
    s = dict(cfg, use_sliding_window=True, sliding_window=4, max_window_layers=1)
    ms = Q(s, w)
    if ms.layer_types != ["full_attention", "sliding_attention"] or ms.windows != [None, 4]:
        bad.append("layer_types %r windows %r" % (ms.layer_types, ms.windows))
    # computed: over T 5, window 4 on layer 1 hides key 0 from query 4 only
    yw, yf = ms.forward(ids)[0], Q(dict(s, max_window_layers=2), w).forward(ids)[0]
    if float(np.max(np.abs(yw[:4] - yf[:4]))) > 1e-12 or float(np.max(np.abs(yw[4:] - yf[4:]))) < 1e-9:
        bad.append("qwen3 window 4 on layer 1 over T 5: rows 0-3 must agree with no window, row 4 differ")
    expect_raise("raw sliding_window, use false", lambda: Q(dict(s, use_sliding_window=False), w).forward(ids),
                 "every layer")
    expect_raise("no window but sliding layer_types",
                 lambda: Q(dict(cfg, layer_types=["sliding_attention", "full_attention"]), w), "unset")
    Q(dict(cfg, sliding_window=None), w).forward(ids)
    mc = dict(lcfg, architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=4)
    for k in ("attention_bias", "use_sliding_window", "max_window_layers"):
        mc.pop(k)
    mm = Q(mc, lw)
    yw, yf = mm.forward(ids)[0], Q(dict(mc, sliding_window=None), lw).forward(ids)[0]
    if mm.windows != [4, 4] or float(np.max(np.abs(yw[:4] - yf[:4]))) > 1e-12 or \
            float(np.max(np.abs(yw[4:] - yf[4:]))) < 1e-9:
        bad.append("mistral window 4 over T 5: windows %r, rows 0-3 must agree with none, row 4 differ"
                   % (mm.windows,))
    bad += gemma2_selftest(expect_raise)
    bad += gemma3_selftest(expect_raise)
    bad += phi3_qwen2_selftest(expect_raise)
    bad += rope_selftest(expect_raise)
    bad += moe_selftest(expect_raise)
    return bad


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEF_MODEL)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--logits", metavar="IDS_FILE")
    ap.add_argument("--out", metavar="FILE", help="with --logits: write float32 LE instead")
    ap.add_argument("--ppl-npy", metavar="FILE")
    ap.add_argument("--dump-solver-fixture", metavar="DIR")
    ap.add_argument("--check-solver-fixture", metavar="DIR")
    ap.add_argument("--selftest", action="store_true")
    ap.add_argument("--calib", default=os.path.join(REF, "calib_tokens_128x256.npy"))
    a = ap.parse_args(argv)
    if not (a.check or a.logits or a.ppl_npy or a.dump_solver_fixture
            or a.check_solver_fixture or a.selftest):
        ap.error("nothing to do")
    if a.selftest:
        bad = selftest()
        for b in bad:
            print("FAIL " + b)
        print("selftest: %s" % ("FAIL" if bad else "ok"))
        if bad or not (a.check or a.logits or a.ppl_npy or a.dump_solver_fixture
                       or a.check_solver_fixture):
            return 1 if bad else 0
    model = Llama(a.model)
    rc = 0
    ppl_cache = {}
    if a.logits:
        lg = model.forward(read_ids(a.logits))[0]
        if a.out:
            with open(a.out, "wb") as f:
                f.write(lg.astype("<f4").tobytes())
        else:
            for row in lg:
                sys.stdout.write(" ".join("%.9g" % v for v in row) + "\n")
    if a.ppl_npy:
        ppl_cache[os.path.realpath(a.ppl_npy)] = perplexity(model, np.load(a.ppl_npy))
        print("perplexity %.6f" % ppl_cache[os.path.realpath(a.ppl_npy)])
        if model.moe and model.min_route_margin is not None:
            print("min top-k routing margin %.3g (probability gap between the k-th and next expert)"
                  % model.min_route_margin)
    if a.check:
        ids = read_ids(os.path.join(REF, "ref_story1_ids64.txt"))
        ref = np.fromfile(os.path.join(REF, "ref_story1_logits64.f32"), dtype="<f4")
        ref = ref.reshape(len(ids), model.vocab)
        lg = model.forward(ids)[0]
        diff = float(np.max(np.abs(lg - ref)))
        ce = float(token_nll(model, ids).mean())
        wpath = os.path.realpath(os.path.join(REF, "public_eval_windows.npy"))
        ppl = ppl_cache.get(wpath)
        if ppl is None:
            ppl = perplexity(model, np.load(wpath))
        ok_l = diff <= LOGIT_TOL
        ok_c = abs(ce - REF_CE64) <= 5e-6
        ok_p = abs(ppl - REF_PPL) <= 5e-6
        print("logits max abs diff %.3e (tol %.0e) %s" % (diff, LOGIT_TOL, "ok" if ok_l else "FAIL"))
        print("mean ce %.7f (ref %.6f) %s" % (ce, REF_CE64, "ok" if ok_c else "FAIL"))
        print("perplexity %.7f (ref %.6f) %s" % (ppl, REF_PPL, "ok" if ok_p else "FAIL"))
        if not (ok_l and ok_c and ok_p):
            rc = 1
    if a.dump_solver_fixture:
        rtn = dump_solver_fixture(model, a.dump_solver_fixture, a.calib)
        for name, v in rtn:
            print("%s %.6f" % (name, v))
        print("mean %.6f" % (sum(v for _, v in rtn) / len(rtn)))
    if a.check_solver_fixture:
        bad = check_solver_fixture(model, a.check_solver_fixture, a.calib)
        for b in bad:
            print("FAIL " + b)
        print("solver fixture %s: %s" % (a.check_solver_fixture, "FAIL" if bad else "ok"))
        if bad:
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
