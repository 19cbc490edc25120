#!/usr/bin/python3
"""Write tiny random Hugging Face checkpoints that the project's mkmodel does not make:
MistralForCausalLM, Qwen2ForCausalLM (q/k/v biases) and Phi3ForCausalLM (fused qkv_proj and
gate_up_proj).  numpy only; the safetensors file is written by hand:
  8-byte little-endian header length N | N bytes of JSON {name: {dtype, shape, data_offsets}, __metadata__}
  | raw little-endian tensor data (offsets relative to the end of the header).

usage: gen_hf.py --family mistral|qwen2|phi3 --out DIR [--seed N] [--layers N] [--tied] [--head-dim N]
                 [--sliding-window N|null] [--use-sliding-window] [--max-window-layers N]
                 [--dtype bf16|f32] [--shards N]
Defaults: hidden 64, intermediate 172, 8 heads, 4 kv heads (head_dim 8), vocab 512, 2 layers,
max_position_embeddings 512, rope_theta 10000, rms_norm_eps 1e-5, bf16.
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


def build(a):
    rng = np.random.default_rng(a.seed)
    H, I, L, nh, nkv, V = a.hidden, a.intermediate, a.layers, a.heads, a.kv_heads, a.vocab
    hd = a.head_dim or H // nh

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
            if a.family == "qwen2":
                t += [(p + "self_attn.q_proj.bias", (0.5 * rng.standard_normal(nh * hd)).astype(np.float32)),
                      (p + "self_attn.k_proj.bias", (0.5 * rng.standard_normal(nkv * hd)).astype(np.float32)),
                      (p + "self_attn.v_proj.bias", (0.5 * rng.standard_normal(nkv * hd)).astype(np.float32))]
        t.append((p + "self_attn.o_proj.weight", lin(H, nh * hd)))
        t.append((p + "post_attention_layernorm.weight", norm(H)))
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
    arch = {"mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM", "phi3": "Phi3ForCausalLM"}[a.family]
    c = {"architectures": [arch], "model_type": a.family,
         "hidden_size": a.hidden, "intermediate_size": a.intermediate, "num_hidden_layers": a.layers,
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
    return c


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", required=True, choices=["mistral", "qwen2", "phi3"])
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
    ap.add_argument("--use-sliding-window", action="store_true", help="qwen2 only")
    ap.add_argument("--max-window-layers", type=int, default=None, help="qwen2 only (default: --layers)")
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    ap.add_argument("--shards", type=int, default=1)
    a = ap.parse_args()
    if a.family == "phi3" and a.head_dim and a.head_dim != a.hidden // a.heads:
        ap.error("phi3 has no head_dim setting")
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
