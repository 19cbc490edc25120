#!/usr/bin/python3
"""Write tiny random Hugging Face checkpoints, independently of the project's mkmodel:
MistralForCausalLM, Qwen2ForCausalLM (q/k/v biases), Phi3ForCausalLM (fused qkv_proj and
gate_up_proj) and the mixtures of experts MixtralForCausalLM, Qwen2MoeForCausalLM (shared expert)
and Qwen3MoeForCausalLM.  numpy only; the safetensors file is written by hand:
  8-byte little-endian header length N | N bytes of JSON {name: {dtype, shape, data_offsets}, __metadata__}
  | raw little-endian tensor data (offsets relative to the end of the header).

usage: gen_hf.py --family mistral|qwen2|phi3|mixtral|qwen2_moe|qwen3_moe --out DIR [--seed N]
                 [--layers N] [--tied] [--head-dim N] [--heads N] [--kv-heads N]
                 [--sliding-window N|null] [--use-sliding-window] [--max-window-layers N]
                 [--dtype bf16|f32] [--shards N]
                 MoE: [--experts E] [--topk K] [--moe-intermediate N] [--shared-intermediate N]
                      [--decoder-sparse-step S] [--mlp-only-layers 0,2] [--norm-topk-prob]
Defaults: hidden 64, intermediate 172, 8 heads, 4 kv heads (head_dim 8), vocab 512, 2 layers,
max_position_embeddings 512, rope_theta 10000, rms_norm_eps 1e-5, bf16; MoE: 4 experts, top-2,
expert width 48, shared expert 64 (qwen2_moe), every layer sparse, norm_topk_prob false.
MoE layouts (transformers' modeling_mixtral / modeling_qwen2_moe / modeling_qwen3_moe):
  mixtral    every layer: block_sparse_moe.gate (E, hidden), block_sparse_moe.experts.e.{w1,w3}
             (I, hidden) = gate/up and .w2 (hidden, I) = down, I = intermediate_size (set from
             --moe-intermediate); attention as Mistral
  qwen2_moe  layer i sparse iff i not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0:
             mlp.gate, mlp.experts.e.{gate,up,down}_proj (moe_intermediate_size),
             mlp.shared_expert.{gate,up,down}_proj (shared_expert_intermediate_size),
             mlp.shared_expert_gate (1, hidden); otherwise a dense mlp.{gate,up,down}_proj
             (intermediate_size); attention as Qwen2 (q/k/v biases)
  qwen3_moe  the same rule and names without the shared expert; attention as Qwen3 (q_norm/k_norm
             over head_dim, head_dim written to config.json)
"""
import argparse
import json
import os
import struct

import numpy as np


def to_bf16_bits(x):
    """float32 -> bf16 bit patterns (uint16), round to nearest even (no NaNs are produced here)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    r = ((u >> 16) & 1) + 0x7FFF
    return ((u + r) >> 16).astype(np.uint16)


def write_safetensors(path, tensors, dtype):
    hdr, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, arr in tensors:
        if dtype == "bf16":
            raw, dt = to_bf16_bits(arr).tobytes(), "BF16"
        else:
            raw, dt = np.ascontiguousarray(arr, dtype="<f4").tobytes(), "F32"
        hdr[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)  # pad the header to 8 bytes, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


MOE = ("mixtral", "qwen2_moe", "qwen3_moe")


def sparse_layers(a):
    """Which layers carry the routed block (Mixtral: all; Qwen MoE: the decoder_sparse_step rule)."""
    if a.family == "mixtral":
        return [True] * a.layers
    return [i not in a.mlp_only_layers and a.experts > 0 and (i + 1) % a.decoder_sparse_step == 0
            for i in range(a.layers)]


def build(a):
    rng = np.random.default_rng(a.seed)
    H, I, L, nh, nkv, V = a.hidden, a.intermediate, a.layers, a.heads, a.kv_heads, a.vocab
    hd = a.head_dim or H // nh
    sparse = sparse_layers(a) if a.family in MOE else [False] * L

    def lin(out_f, in_f, gain=1.0):
        return (rng.standard_normal((out_f, in_f)) * gain / np.sqrt(in_f)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    # tied: the embedding is also the output matrix, so keep it small enough for sane logits
    emb_std = 0.25 if a.tied else 1.0
    t = [("model.embed_tokens.weight", (emb_std * rng.standard_normal((V, H))).astype(np.float32))]
    for i in range(L):
        p = f"model.layers.{i}."
        t.append((p + "input_layernorm.weight", norm(H)))
        q, k, v = lin(nh * hd, H, 2.0), lin(nkv * hd, H, 2.0), lin(nkv * hd, H)
        if a.family == "phi3":
            t.append((p + "self_attn.qkv_proj.weight", np.concatenate([q, k, v], 0)))
        else:
            t += [(p + "self_attn.q_proj.weight", q), (p + "self_attn.k_proj.weight", k),
                  (p + "self_attn.v_proj.weight", v)]
            if a.family in ("qwen2", "qwen2_moe"):
                t += [(p + "self_attn.q_proj.bias", (0.5 * rng.standard_normal(nh * hd)).astype(np.float32)),
                      (p + "self_attn.k_proj.bias", (0.5 * rng.standard_normal(nkv * hd)).astype(np.float32)),
                      (p + "self_attn.v_proj.bias", (0.5 * rng.standard_normal(nkv * hd)).astype(np.float32))]
        if a.family == "qwen3_moe":  # per-head RMSNorm weights over head_dim, before RoPE
            t += [(p + "self_attn.q_norm.weight", norm(hd)), (p + "self_attn.k_norm.weight", norm(hd))]
        t.append((p + "self_attn.o_proj.weight", lin(H, nh * hd)))
        t.append((p + "post_attention_layernorm.weight", norm(H)))
        if sparse[i]:
            E, Im = a.experts, a.moe_intermediate
            pre = p + ("block_sparse_moe." if a.family == "mixtral" else "mlp.")
            names = ("w1", "w3", "w2") if a.family == "mixtral" else ("gate_proj", "up_proj", "down_proj")
            t.append((pre + "gate.weight", lin(E, H, a.router_gain)))
            for e in range(E):
                q = pre + f"experts.{e}."
                t += [(q + names[0] + ".weight", lin(Im, H)), (q + names[1] + ".weight", lin(Im, H)),
                      (q + names[2] + ".weight", lin(H, Im))]
            if a.family == "qwen2_moe":
                Is = a.shared_intermediate
                t += [(pre + "shared_expert.gate_proj.weight", lin(Is, H)),
                      (pre + "shared_expert.up_proj.weight", lin(Is, H)),
                      (pre + "shared_expert.down_proj.weight", lin(H, Is)),
                      (pre + "shared_expert_gate.weight", lin(1, H, 2.0))]
            continue
        g, u = lin(I, H), lin(I, H)
        if a.family == "phi3":
            t.append((p + "mlp.gate_up_proj.weight", np.concatenate([g, u], 0)))
        else:
            t += [(p + "mlp.gate_proj.weight", g), (p + "mlp.up_proj.weight", u)]
        t.append((p + "mlp.down_proj.weight", lin(H, I)))
    t.append(("model.norm.weight", norm(H)))
    if not a.tied:
        t.append(("lm_head.weight", lin(V, H, 1.5)))
    return t


def config(a):
    arch = {"mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM", "phi3": "Phi3ForCausalLM",
            "mixtral": "MixtralForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM",
            "qwen3_moe": "Qwen3MoeForCausalLM"}[a.family]
    c = {"architectures": [arch], "model_type": a.family,
         "hidden_size": a.hidden,
         "intermediate_size": a.moe_intermediate if a.family == "mixtral" else a.intermediate,
         "num_hidden_layers": a.layers,
         "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads, "vocab_size": a.vocab,
         "max_position_embeddings": a.max_pos, "rms_norm_eps": 1e-5, "rope_theta": a.rope_theta,
         "hidden_act": "silu", "tie_word_embeddings": bool(a.tied), "bos_token_id": 1, "eos_token_id": 2,
         "initializer_range": 0.02, "attention_dropout": 0.0, "use_cache": True,
         "torch_dtype": "bfloat16" if a.dtype == "bf16" else "float32"}
    if a.head_dim:
        c["head_dim"] = a.head_dim
    if a.family == "mistral":
        c["head_dim"] = a.head_dim or a.hidden // a.heads
        c["sliding_window"] = a.sliding_window
    elif a.family == "qwen2":
        c["use_sliding_window"] = bool(a.use_sliding_window)
        c["sliding_window"] = a.sliding_window
        c["max_window_layers"] = a.max_window_layers if a.max_window_layers is not None else a.layers
        c["rope_scaling"] = None
    elif a.family == "phi3":
        c.update(rope_scaling=None, sliding_window=a.sliding_window, original_max_position_embeddings=a.max_pos,
                 resid_pdrop=0.0, embd_pdrop=0.0, pad_token_id=0, partial_rotary_factor=1.0)
    elif a.family == "mixtral":  # MixtralConfig keys, as Mixtral-8x7B's config.json has them
        c.update(sliding_window=a.sliding_window, num_local_experts=a.experts, num_experts_per_tok=a.topk,
                 output_router_logits=False, router_aux_loss_coef=0.02)
    elif a.family in ("qwen2_moe", "qwen3_moe"):  # Qwen1.5-MoE / Qwen3-30B-A3B style config.json
        c.update(use_sliding_window=bool(a.use_sliding_window), sliding_window=a.sliding_window,
                 max_window_layers=a.max_window_layers if a.max_window_layers is not None else a.layers,
                 rope_scaling=None, num_experts=a.experts, num_experts_per_tok=a.topk,
                 moe_intermediate_size=a.moe_intermediate, decoder_sparse_step=a.decoder_sparse_step,
                 mlp_only_layers=a.mlp_only_layers, norm_topk_prob=bool(a.norm_topk_prob),
                 output_router_logits=False, router_aux_loss_coef=0.001)
        if a.family == "qwen2_moe":
            c["shared_expert_intermediate_size"] = a.shared_intermediate
        else:
            c.update(head_dim=a.head_dim or a.hidden // a.heads, attention_bias=False)
    return c


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", required=True, choices=["mistral", "qwen2", "phi3", *MOE])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--intermediate", type=int, default=172)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=None, help="default hidden/heads (phi3: always)")
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--max-pos", type=int, default=512)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--tied", action="store_true")
    ap.add_argument("--sliding-window", default="null", help="an integer or null")
    ap.add_argument("--use-sliding-window", action="store_true", help="qwen2, qwen2_moe, qwen3_moe")
    ap.add_argument("--max-window-layers", type=int, default=None, help="qwen2, qwen2_moe, qwen3_moe (default: --layers)")
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--experts", type=int, default=4, help="MoE: routed experts per sparse layer")
    ap.add_argument("--topk", type=int, default=2, help="MoE: num_experts_per_tok")
    ap.add_argument("--moe-intermediate", type=int, default=48, help="MoE: expert width (mixtral: intermediate_size)")
    ap.add_argument("--shared-intermediate", type=int, default=64, help="qwen2_moe: shared expert width")
    ap.add_argument("--decoder-sparse-step", type=int, default=1, help="qwen2_moe/qwen3_moe")
    ap.add_argument("--mlp-only-layers", default="", help="qwen2_moe/qwen3_moe: comma-separated dense layers")
    ap.add_argument("--norm-topk-prob", action="store_true", help="qwen2_moe/qwen3_moe: renormalise the top-k")
    ap.add_argument("--router-gain", type=float, default=1.5, help="MoE: router weight scale")
    a = ap.parse_args()
    a.mlp_only_layers = [int(x) for x in a.mlp_only_layers.split(",") if x.strip()]
    if a.family in ("phi3", "mixtral", "qwen2_moe") and a.head_dim and a.head_dim != a.hidden // a.heads:
        ap.error(f"{a.family}: head_dim must be hidden/heads (transformers 4.44 ignores the key)")
    a.sliding_window = None if a.sliding_window in ("null", "none", "None") else int(a.sliding_window)

    os.makedirs(a.out, exist_ok=True)
    for f in os.listdir(a.out):
        if f.endswith(".safetensors") or f.endswith(".index.json") or f == "config.json":
            os.remove(os.path.join(a.out, f))
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config(a), f, indent=2)
        f.write("\n")
    tensors = build(a)
    if a.shards <= 1:
        write_safetensors(os.path.join(a.out, "model.safetensors"), tensors, a.dtype)
    else:
        per = -(-len(tensors) // a.shards)
        wmap, total = {}, 0
        for s in range(a.shards):
            part = tensors[s * per:(s + 1) * per]
            name = f"model-{s + 1:05d}-of-{a.shards:05d}.safetensors"
            write_safetensors(os.path.join(a.out, name), part, a.dtype)
            for k, arr in part:
                wmap[k] = name
                total += arr.size * (2 if a.dtype == "bf16" else 4)
        with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": wmap}, f, indent=2)
    print(f"{a.out}: {config(a)['architectures'][0]}, {len(tensors)} tensors, {a.dtype}")


if __name__ == "__main__":
    main()
