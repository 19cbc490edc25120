#!/usr/bin/python3
"""phi3_to_llama.py PHI3_DIR OUT_DIR: rewrite a Phi3ForCausalLM checkpoint (rope_scaling null,
partial_rotary_factor 1) as LlamaForCausalLM: self_attn.qkv_proj rows -> q_proj | k_proj | v_proj,
mlp.gate_up_proj rows -> gate_proj | up_proj; every other tensor and value unchanged (bytes copied).
Used to cross-check the Phi3 reference (Phi3 and the unfused Llama must give the same transformers
perplexity) and to give cloq the same model in a layout it already reads."""
import json
import os
import struct
import sys

src, dst = sys.argv[1:3]
os.makedirs(dst, exist_ok=True)
cfg = json.load(open(os.path.join(src, "config.json")))
assert cfg["model_type"] == "phi3" and not cfg.get("rope_scaling") and cfg.get("partial_rotary_factor", 1.0) == 1.0
H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
nkv, I = cfg.get("num_key_value_heads") or nh, cfg["intermediate_size"]
hd = H // nh
with open(os.path.join(src, "model.safetensors"), "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    hdr = json.loads(f.read(n))
    data = f.read()
meta = hdr.pop("__metadata__", None)
out, blobs, off = ({"__metadata__": meta} if meta else {}), [], 0


def put(name, dtype, shape, raw):
    global off
    out[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
    blobs.append(raw)
    off += len(raw)


for k, v in hdr.items():
    b, e = v["data_offsets"]
    raw, shape, dt = data[b:e], v["shape"], v["dtype"]
    row = len(raw) // shape[0]
    if k.endswith("self_attn.qkv_proj.weight"):
        p = k[: -len("qkv_proj.weight")]
        sizes = [("q_proj", nh * hd), ("k_proj", nkv * hd), ("v_proj", nkv * hd)]
    elif k.endswith("mlp.gate_up_proj.weight"):
        p = k[: -len("gate_up_proj.weight")]
        sizes = [("gate_proj", I), ("up_proj", I)]
    else:
        put(k, dt, shape, raw)
        continue
    assert sum(s for _, s in sizes) == shape[0], (k, shape)
    r0 = 0
    for nm, s in sizes:
        put(p + nm + ".weight", dt, [s] + shape[1:], raw[r0 * row:(r0 + s) * row])
        r0 += s
h = json.dumps(out, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(os.path.join(dst, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
lc = {k: v for k, v in cfg.items() if k not in ("original_max_position_embeddings", "partial_rotary_factor",
                                                 "resid_pdrop", "embd_pdrop", "sliding_window")}
lc.update(architectures=["LlamaForCausalLM"], model_type="llama")
json.dump(lc, open(os.path.join(dst, "config.json"), "w"), indent=2)
