#!/usr/bin/env python3
"""tests/tools/moe_routing.py - checks of the expert-by-expert conversion of a mixture of experts
(tests/e2e/moe.sh).

  moe_routing.py counts MODEL JOB   report.json of JOB (converted with --propagate fp, so every
      sparse layer sees the original model's input) against the float64 reference forward of MODEL
      (ref_llama.py) on JOB's calibration windows: the tokens routed to each expert, the rows the
      few-token rule added (below moe_min_rows: min(moe_min_rows - tokens, the tokens not routed to
      it)), experts_filled, the shared expert seeing every token, finite errors, final <= quantized.
  moe_routing.py names MODEL EXPORT  the export's tensors against the original checkpoint's modules:
      the same modules; every linear but the router (and Qwen2-MoE's shared_expert_gate) packed as
      GPTQ and listed in modules_in_block_to_quantize, the router in modules_not_converted; the
      adapter holds lora_A/lora_B for exactly the packed linears, each matched by target_modules the
      way PEFT matches (the name's last component), and no other linear of the model is matched.
  moe_routing.py starve SRC DST     a copy of the Qwen3-MoE checkpoint SRC whose layer-0 router
      starves experts: embedding column 0 is a large constant, so the experts' input has a large
      positive first coordinate, and the last expert's router row is -4 there and 0 elsewhere.
"""
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_llama as R  # noqa: E402


def counts(model_dir, job):
    m = R.Llama(model_dir)
    ids = np.load(job + "/calib_windows.npy")
    seen, orig = {}, m.moe_block

    def blk(X, l):
        pre = "model.layers.%d.%s" % (l, m.moe_prefix)
        sel, _, _ = R.moe_route(X @ m.w[pre + "gate.weight"].T, m.top_k, m.norm_topk)
        c = seen.setdefault(l, np.zeros(m.n_experts, dtype=np.int64))
        np.add.at(c, sel.ravel(), 1)
        return orig(X, l)

    m.moe_block = blk
    for i in range(ids.shape[0]):
        m.forward(ids[i:i + 1])
    rep = json.load(open(job + "/report.json"))
    ntok, bad = ids.size, []
    for L in rep["layers"]:
        l = L["layer"]
        if l not in seen:
            if "experts" in L:
                bad.append("layer %d: dense in the reference, experts in report.json" % l)
            continue
        got = [e["tokens"] for e in L["experts"] if e["expert"] != "shared"]
        if got != seen[l].tolist():
            bad.append("layer %d: tokens per expert %s, the reference routes %s" % (l, got, seen[l].tolist()))
        filled = []
        for e in L["experts"]:
            n, shared = e["tokens"], e["expert"] == "shared"
            fill = 0 if shared else min(max(0, L["moe_min_rows"] - n), ntok - n)
            if shared and n != ntok:
                bad.append("layer %d: the shared expert saw %d tokens of %d" % (l, n, ntok))
            if e["filled"] != fill:
                bad.append("layer %d expert %s: %d rows filled, the rule says %d" % (l, e["expert"], e["filled"], fill))
            if fill:
                filled.append(e["expert"])
            for x in e["linears"]:
                q, f = x.get("quantized", float("nan")), x.get("final", float("nan"))
                if not (np.isfinite(q) and np.isfinite(f) and 0 <= f <= q < 1):
                    bad.append("layer %d expert %s %s: errors %s -> %s" % (l, e["expert"], x["name"], q, f))
        if L["experts_filled"] != filled:
            bad.append("layer %d: experts_filled %s, expected %s" % (l, L["experts_filled"], filled))
    for b in bad:
        print(b)
    print("tokens per expert %s; smallest route margin %.3g" %
          ({l: c.tolist() for l, c in seen.items()}, m.min_route_margin or 0))
    return 1 if bad else 0


def st_names(path):
    import struct
    with open(path, "rb") as f:
        h = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    return {k: v for k, v in h.items() if k != "__metadata__"}


def names(model_dir, exp):
    orig = st_names(model_dir + "/model.safetensors")
    mods = {k.rsplit(".", 1)[0] for k in orig}
    linears = {k.rsplit(".", 1)[0] for k, v in orig.items() if k.endswith(".weight") and len(v["shape"]) == 2}
    linears -= {"model.embed_tokens", "lm_head"}
    full = {m for m in linears if m.endswith(".gate") or m.endswith("shared_expert_gate")}
    got = st_names(exp + "/model.safetensors")
    gmods = {k.rsplit(".", 1)[0] for k in got}
    packed = {k[:-len(".qweight")] for k in got if k.endswith(".qweight")}
    qc = json.load(open(exp + "/quantize_config.json"))
    acfg = json.load(open(exp + "/adapter/adapter_config.json"))
    ad = {k[len("base_model.model."):].rsplit(".lora_", 1)[0] for k in st_names(exp + "/adapter/adapter_model.safetensors")}
    targets = set(acfg["target_modules"])
    matched = {m for m in linears if m.rsplit(".", 1)[1] in targets}
    inblock = set(qc["modules_in_block_to_quantize"][0])
    bad = []
    if gmods != mods:
        bad.append("modules: export has %s more, %s fewer" % (sorted(gmods - mods)[:4], sorted(mods - gmods)[:4]))
    if packed != linears - full:
        bad.append("packed: %s more, %s fewer" % (sorted(packed - (linears - full))[:4], sorted((linears - full) - packed)[:4]))
    if {m.split(".", 3)[3] for m in packed} != inblock:
        bad.append("modules_in_block_to_quantize differs from the packed linears")
    if not {m.split(".", 3)[3] for m in full} <= set(qc["modules_not_converted"]):
        bad.append("the router is not in modules_not_converted: %s" % qc["modules_not_converted"])
    if ad != packed or matched != packed:
        bad.append("adapter: %d linears, targets match %d, packed %d" % (len(ad), len(matched), len(packed)))
    for b in bad:
        print(b)
    print("%d modules, %d packed, %d adapted, %d full precision" % (len(mods), len(packed), len(ad), len(full)))
    return 1 if bad else 0


def starve(src, dst):
    os.makedirs(dst, exist_ok=True)
    shutil.copy(src + "/config.json", dst)
    w = R.read_safetensors(src + "/model.safetensors")
    w["model.embed_tokens.weight"][:, 0] = 8.0
    r = w["model.layers.0.mlp.gate.weight"]
    r[-1, :] = 0.0
    r[-1, 0] = -4.0
    R.write_safetensors(dst + "/model.safetensors", w)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "counts":
        sys.exit(counts(sys.argv[2], sys.argv[3]))
    if len(sys.argv) == 4 and sys.argv[1] == "names":
        sys.exit(names(sys.argv[2], sys.argv[3]))
    if len(sys.argv) == 4 and sys.argv[1] == "starve":
        sys.exit(starve(sys.argv[2], sys.argv[3]))
    sys.exit(__doc__)
