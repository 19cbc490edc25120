#!/usr/bin/env python3
"""phi3_from_llama.py SRC DST - rewrite a LlamaForCausalLM directory (one model.safetensors) as the
same model in Phi3ForCausalLM's layout: per layer self_attn.qkv_proj = rows [q; k; v] and
mlp.gate_up_proj = rows [gate; up], config.json relabelled (architectures, model_type), everything
else byte for byte. Phi-3's layer is Llama's with fused projections, so both directories are one
model: tests/e2e/phi3.sh checks that cloq computes the same figures for both, on real weights."""
import json, struct, sys, numpy as np, os, shutil
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
with open(src + "/model.safetensors", "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); buf = f.read()
dt = {"F32": np.float32, "F16": np.float16}
T = {}
for k, v in h.items():
    if k == "__metadata__": continue
    a, b = v["data_offsets"]
    T[k] = (v["dtype"], np.frombuffer(buf[a:b], dtype=dt[v["dtype"]] if v["dtype"] in dt else np.uint16).reshape(v["shape"]))
out = {}
L = sum(1 for k in T if k.endswith("self_attn.q_proj.weight"))
for k, v in T.items():
    if any(s in k for s in ("k_proj", "v_proj", "up_proj")) or "gate_proj" in k: continue
    if k.endswith("q_proj.weight"):
        p = k[:-len("q_proj.weight")]
        out[p + "qkv_proj.weight"] = (v[0], np.concatenate([T[p + n + "_proj.weight"][1] for n in "qkv"]))
    else:
        out[k] = v
for l in range(L):
    p = "model.layers.%d.mlp." % l
    out[p + "gate_up_proj.weight"] = (T[p + "gate_proj.weight"][0], np.concatenate([T[p + "gate_proj.weight"][1], T[p + "up_proj.weight"][1]]))
hdr, off, blobs = {}, 0, []
for k in sorted(out):
    d, a = out[k]; raw = np.ascontiguousarray(a).tobytes()
    hdr[k] = {"dtype": d, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}; blobs.append(raw); off += len(raw)
hb = json.dumps(hdr).encode(); hb += b" " * ((8 - len(hb) % 8) % 8)
open(dst + "/model.safetensors", "wb").write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))
c = json.load(open(src + "/config.json"))
c["architectures"] = ["Phi3ForCausalLM"]; c["model_type"] = "phi3"
json.dump(c, open(dst + "/config.json", "w"), indent=1)
for f in ("tokenizer.json", "tokenizer_config.json"):
    if os.path.exists(src + "/" + f): shutil.copy(src + "/" + f, dst)
