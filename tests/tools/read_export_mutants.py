#!/usr/bin/python3
"""read_export_mutants.py - show that read_export.py's checks can fail: each mutant is a valid
export with one rule broken (a copy, edited by hand here), and the reader must reject it with a
message naming the problem.

Usage: read_export_mutants.py GPTQ_DIR DENSE_DIR SHARDED_DIR GPTQ3_DIR DENSE3_DIR WORKDIR
  GPTQ_DIR/DENSE_DIR: the INT2 (gptq_v2) export and its fp32 dequant export; SHARDED_DIR the same
  job sharded; GPTQ3_DIR/DENSE3_DIR a 3-bit export whose every linear is packed, and its dequant.
Prints one line per mutant; exit 1 when any mutant is accepted or rejected for another reason.
"""

import json
import os
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import numpy as np  # noqa: E402
import read_export as rx  # noqa: E402


def st_load(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack_from("<Q", blob, 0)
    hdr = json.loads(blob[8:8 + n].decode().rstrip(" "))
    return hdr, bytearray(blob[8 + n:])


def st_save(path, hdr, buf, pad=True, text=None):
    t = (text if text is not None else json.dumps(hdr, separators=(",", ":"))).encode()
    if pad:
        t += b" " * ((8 - (8 + len(t)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(t)) + t + bytes(buf))


def edit_tensor(path, name, fn):
    """fn(ndarray view of the tensor's raw bytes as its dtype) edits in place."""
    hdr, buf = st_load(path)
    a, b = hdr[name]["data_offsets"]
    dt = {"I32": "<i4", "F16": "<u2", "F32": "<u4", "BF16": "<u2"}[hdr[name]["dtype"]]
    v = np.frombuffer(buf, dtype=dt, count=(b - a) // np.dtype(dt).itemsize, offset=a).copy()
    fn(v.reshape(hdr[name]["shape"]))
    buf[a:b] = v.tobytes()
    st_save(path, hdr, buf)


def edit_json(path, fn):
    with open(path) as f:
        j = json.load(f)
    fn(j)
    with open(path, "w") as f:
        json.dump(j, f, indent=1)


def main(argv):
    g2, d2, gsh, g3, d3, work = argv
    Q = "model.layers.0.self_attn.q_proj"
    MS = "model.safetensors"
    results = []

    def mutant(what, src, edit, expect, dense=None):
        m = os.path.join(work, "mutant")
        shutil.rmtree(m, ignore_errors=True)
        shutil.copytree(src, m)
        edit(m)
        try:
            if dense:
                rx.compare(m, dense)
            else:
                rx.load(m)
            results.append((what, False, "accepted"))
        except rx.FormatError as e:
            results.append((what, expect in str(e), str(e)))
        shutil.rmtree(m, ignore_errors=True)

    def header_text(m, fn):
        p = os.path.join(m, MS)
        hdr, buf = st_load(p)
        st_save(p, hdr, buf, text=fn(json.dumps(hdr, separators=(",", ":"))))

    # ---- safetensors rules
    def unpadded(m):
        p = os.path.join(m, MS)
        hdr, buf = st_load(p)
        t = json.dumps(hdr, separators=(",", ":"))
        t += " " * ((8 - (8 + len(t)) % 8) % 8 + 1)  # one space past alignment
        st_save(p, hdr, buf, pad=False, text=t)
    mutant("header not 8-aligned", g2, unpadded, "not a multiple of 8")
    mutant("no __metadata__", g2, lambda m: header_text(m, lambda t: t.replace('"__metadata__":{"format":"pt"},', '')),
           "no \"__metadata__\"")
    mutant("__metadata__ format tf", g2, lambda m: header_text(m, lambda t: t.replace('"pt"', '"tf"')), "want \"pt\"")
    mutant("duplicate key", g2, lambda m: header_text(
        m, lambda t: t.replace('{"__metadata__":{"format":"pt"}', '{"__metadata__":{"format":"pt"},"__metadata__":{"format":"pt"}')),
        "duplicate JSON key")

    def trailing(m):
        p = os.path.join(m, MS)
        hdr, buf = st_load(p)
        st_save(p, hdr, buf + bytearray(8))
    mutant("trailing bytes", g2, trailing, "tensors cover")

    def overlap(m):
        p = os.path.join(m, MS)
        hdr, buf = st_load(p)
        a, b = hdr[Q + ".g_idx"]["data_offsets"]  # 4 bytes into the tensor before it
        hdr[Q + ".g_idx"]["data_offsets"] = [a - 4, b - 4]
        st_save(p, hdr, buf)
    mutant("overlapping tensors", g2, overlap, "overlap")

    def badshape(m):
        p = os.path.join(m, MS)
        hdr, buf = st_load(p)
        hdr[Q + ".scales"]["shape"] = [1, 64]
        st_save(p, hdr, buf)
    mutant("dtype x shape != span", g2, badshape, "data_offsets span")

    def baddtype(m):
        p = os.path.join(m, MS)
        hdr, buf = st_load(p)
        hdr[Q + ".qweight"]["dtype"] = "U32"
        st_save(p, hdr, buf)
    mutant("qweight as U32", g2, baddtype, "has dtype U32")

    # ---- sharded index rules
    idx = "model.safetensors.index.json"
    mutant("total_size off by one", gsh, lambda m: edit_json(os.path.join(m, idx), lambda j: j["metadata"].update(
        total_size=j["metadata"]["total_size"] + 1)), "total_size")
    mutant("weight_map names another file", gsh, lambda m: edit_json(os.path.join(m, idx), lambda j: j["weight_map"].update(
        {"model.norm.weight": "model-00001-of-00005.safetensors"})), "weight_map says")
    mutant("shard file missing", gsh, lambda m: os.remove(os.path.join(m, "model-00003-of-00005.safetensors")),
           "does not exist")
    mutant("stale model.safetensors beside the index", gsh, lambda m: shutil.copy(os.path.join(g2, MS), m),
           "ignores the index")
    mutant("weight_map lists a tensor that is nowhere", gsh, lambda m: edit_json(os.path.join(m, idx), lambda j: j["weight_map"].update(
        {"model.extra.weight": "model-00001-of-00005.safetensors"})), "not in")

    # ---- GPTQ
    def fmt_v1(m):
        for f in ("config.json", "quantize_config.json"):
            edit_json(os.path.join(m, f), lambda j: (j.get("quantization_config", j)).update(checkpoint_format="gptq"))
    mutant("gptq_v2 checkpoint labelled v1", g2, fmt_v1, "v1 zero point of 0 wrapped")
    mutant("quantize_config.json bits disagree", g2, lambda m: edit_json(os.path.join(m, "quantize_config.json"),
                                                                         lambda j: j.update(bits=4)), "bits")
    mutant("modules_in_block_to_quantize lists a dense module", g2, lambda m: [edit_json(
        os.path.join(m, f), lambda j: j.get("quantization_config", j)["modules_in_block_to_quantize"][0].append("mlp.up_proj"))
        for f in ("config.json", "quantize_config.json")], "also has a dense .weight")
    mutant("quantized module missing from the list", g2, lambda m: [edit_json(
        os.path.join(m, f), lambda j: j.get("quantization_config", j)["modules_in_block_to_quantize"][0].remove("self_attn.o_proj"))
        for f in ("config.json", "quantize_config.json")], "not in modules_in_block_to_quantize")

    def flip(name, fn):
        return lambda m: edit_tensor(os.path.join(m, MS), name, fn)

    def xor_word(v):
        v[0, 0] ^= 1
    mutant("one qweight bit", g2, flip(Q + ".qweight", xor_word), "GPTQ dequantized", dense=d2)
    mutant("one qzeros bit", g2, flip("model.layers.2.self_attn.o_proj.qzeros", xor_word), "GPTQ dequantized", dense=d2)

    def ulp(v):
        v.reshape(-1)[5] += 1
    mutant("one scale ulp", g2, flip(Q + ".scales", ulp), "GPTQ dequantized", dense=d2)
    mutant("g_idx not i // group_size", g2, flip(Q + ".g_idx", lambda v: v.__setitem__(0, 1)), "g_idx is not i // group_size")
    mutant("dense fallback ulp", g2, flip("model.layers.1.mlp.down_proj.weight", ulp), "rounding", dense=d2)
    mutant("embedding ulp", g2, flip("model.embed_tokens.weight", ulp), "rounding", dense=d2)

    def swap3(v):  # 3 bits: the three words of one 32-code block in the wrong order
        v[[0, 1, 2], 3] = v[[1, 2, 0], 3]
    mutant("3-bit word order", g3, flip("model.layers.1.mlp.down_proj.qweight", swap3), "GPTQ dequantized", dense=d3)

    def as4bit(m):  # a 3-bit checkpoint claimed as ... bits 4: shapes no longer fit
        for f in ("config.json", "quantize_config.json"):
            edit_json(os.path.join(m, f), lambda j: j.get("quantization_config", j).update(bits=4))
    mutant("3-bit checkpoint labelled 4-bit", g3, as4bit, "has shape")

    # ---- adapter
    A = os.path.join("adapter", "adapter_model.safetensors")

    def extra_key(m):
        p = os.path.join(m, A)
        hdr, buf = st_load(p)
        k = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
        hdr["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"] = dict(hdr[k])
        hdr[k] = dict(hdr[k])
        a, b = hdr[k]["data_offsets"]
        n = len(buf)
        hdr[k]["data_offsets"] = [n, n + b - a]
        st_save(p, hdr, buf + buf[a:b])
    mutant("adapter: extra tensor", g2, extra_key, "unexpected tensors")
    mutant("adapter: r 4", g2, lambda m: edit_json(os.path.join(m, "adapter", "adapter_config.json"),
                                                   lambda j: j.update(r=4)), "has shape")
    mutant("adapter: a key LoraConfig lacks", g2, lambda m: edit_json(os.path.join(m, "adapter", "adapter_config.json"),
                                                                      lambda j: j.update(cloq_init="cloq")), "not LoraConfig fields")
    mutant("adapter: bias all", g2, lambda m: edit_json(os.path.join(m, "adapter", "adapter_config.json"),
                                                        lambda j: j.update(bias="all")), "bias")
    mutant("adapter: target q_proj only", g2, lambda m: edit_json(os.path.join(m, "adapter", "adapter_config.json"),
                                                                  lambda j: j.update(target_modules=["q_proj"])),
           "unexpected tensors")
    mutant("adapter: lora_B value", g2, lambda m: edit_tensor(
        os.path.join(m, A), "base_model.model.model.layers.4.mlp.down_proj.lora_B.weight", ulp), "differs", dense=d2)

    bad = 0
    for what, good, msg in results:
        print("%s mutant %-45s %s" % ("ok  " if good else "FAIL", what, msg[:160]))
        bad += not good
    print("%d mutants, %d rejected as expected" % (len(results), len(results) - bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
