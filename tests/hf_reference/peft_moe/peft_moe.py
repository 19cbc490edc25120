#!/usr/bin/python3
"""Independent check of cloq's mixture-of-experts export against the real transformers + PEFT.

usage: /usr/bin/python3 peft_moe.py --export E/x --job J/x --tokens FILE.npy --tf 4.44|4.51
                                    [--gptq G/x] [--orig M/x] [--cloq PATH] [--tol 1e-5] [--json]

The dense float32 export E/x (`cloq export J/x --to E/x --format dequant --dtype fp32`) is loaded
with the *ForCausalLM class its config.json names (float32, eager attention, eval, no_grad), then
`peft.PeftModel.from_pretrained(model, E/x/adapter)`. Checked:

  load    every tensor of E/x/model.safetensors (decoded here with numpy, not with the safetensors
          stand-in transformers uses) sits in the model bit for bit; nothing left on meta.
  target  the set of modules PEFT wrapped in a LoRA layer == the set of modules the adapter file has
          lora_A/lora_B tensors for == the set expected from config.json (every attention
          projection; every expert linear; Qwen2-MoE's shared expert; the dense MLP of a dense
          layer); the routers (block_sparse_moe.gate / mlp.gate) and shared_expert_gate stay plain
          nn.Linear, and no other nn.Linear but those and lm_head is left unwrapped.
  weights every lora_A/lora_B tensor of the file equals the one in the PeftModel bit for bit; no
          LoRA parameter of the PeftModel is missing from the file (PEFT 0.13 does not warn about
          that: a missing lora_B would silently stay 0), no file key unused (load_state_dict's
          missing/unexpected keys recorded from the real call).
  scaling every LoRA layer's scaling == lora_alpha / r from adapter_config.json, r as in the file,
          dropout 0 (Identity), no DoRA / rsLoRA.
  ppl     each row of FILE its own sequence from position 0; positions 0..T-2 predict 1..T-1;
          NLL in float64 from transformers' float32 logits; ppl = exp(mean NLL).
          tf+peft vs `cloq ppl E/x --adapter E/x/adapter` and vs `cloq ppl J/x`;
          tf base (E/x, no adapter) vs `cloq ppl J/x --no-lora` and vs `cloq ppl E/x`.
  extra   PEFT's disable_adapter() gives the base figure; merge_and_unload() gives the tf+peft
          figure; a negative control (every LoRA scaling doubled in the PeftModel) must move the
          figure beyond --tol from cloq's.
  orig    (with --orig M/x, informative) transformers' figure for the original model, and the mean
          KL(original || model) per prediction of the base alone and of base + LoRA.
  gptq    (with --gptq G/x, informative) the GPTQ v1 export's qweight/qzeros/scales/g_idx unpacked
          here with the AutoGPTQ v1 rule w = scale * (q - (z + 1)) against E/x's dense weights, the
          module lists of quantize_config.json against the checkpoint, and `cloq ppl G/x --adapter`.

Exit status 0 if every check passes and every compared figure is within --tol, 1 otherwise.
"""
import argparse
import contextlib
import json
import logging
import math
import os
import re
import struct
import subprocess
import sys
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
HFREF = os.path.dirname(HERE)  # tests/hf_reference (its stubs/ are used read-only)
RELEASES = {"4.44": "v4.44.2", "4.51": "v4.51.3"}
ROUTERS = ("block_sparse_moe.gate", "mlp.gate", "mlp.shared_expert_gate")


# ---------------------------------------------------------------------------------------------
def setup(release, tfroot, peftsrc, stubs2):
    tag = RELEASES[release]
    src = os.path.join(tfroot, tag, "src")
    if not os.path.isdir(os.path.join(src, "transformers")):
        raise SystemExit(f"missing {src}/transformers (see README.md)")
    if not os.path.isdir(os.path.join(peftsrc, "peft")):
        raise SystemExit(f"missing {peftsrc}/peft (see README.md)")
    for p in (src, os.path.join(HFREF, "stubs"), stubs2, peftsrc):
        sys.path.insert(0, p)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import torch  # noqa: F401

    if release == "4.51":
        import torch2_shim

        torch2_shim.install()
    import transformers
    import peft

    assert transformers.__version__ == tag[1:], (transformers.__version__, tag)
    assert os.path.dirname(transformers.__file__).startswith(src), transformers.__file__
    assert os.path.dirname(peft.__file__).startswith(peftsrc), peft.__file__
    assert not transformers.utils.is_accelerate_available(), "accelerate stand-in must stay invisible"
    return transformers, peft


class _Rec(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.msgs = []

    def emit(self, r):
        self.msgs.append(f"{r.name}: {r.getMessage()}"[:300])


@contextlib.contextmanager
def record_warnings(sink):
    h = _Rec()
    loggers = [logging.getLogger(n) for n in ("transformers", "peft", "")]
    for lg in loggers:
        lg.addHandler(h)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for lg in loggers:
                lg.removeHandler(h)
            sink.extend(h.msgs)
            sink.extend(f"warning {x.category.__name__}: {x.message}"[:300] for x in w)


# ---- safetensors read with numpy alone (bits preserved) ---------------------------------------
def read_st(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        hdr = json.loads(f.read(n))
        data = f.read()
    meta = hdr.pop("__metadata__", None)
    dt = {"BF16": "<u2", "F16": "<f2", "F32": "<f4", "I32": "<i4", "I64": "<i8"}
    out = {}
    for k, v in hdr.items():
        b, e = v["data_offsets"]
        raw = np.frombuffer(data[b:e], dtype=dt[v["dtype"]]).reshape(v["shape"])
        if v["dtype"] == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        out[k] = raw
    return out, meta, {k: v["dtype"] for k, v in hdr.items()}


def read_model(model_dir):
    idx = os.path.join(model_dir, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    out = {}
    for f in files:
        out.update(read_st(os.path.join(model_dir, f))[0])
    return out


def same_bits(a, b):
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


# ---- what the adapter should cover, from config.json alone -------------------------------------
def expected_targets(cfg):
    mt = cfg["model_type"]
    L = cfg["num_hidden_layers"]
    out = set()
    for i in range(L):
        p = f"model.layers.{i}."
        out |= {p + f"self_attn.{n}_proj" for n in "qkvo"}
        if mt == "mixtral":
            for e in range(cfg["num_local_experts"]):
                out |= {p + f"block_sparse_moe.experts.{e}.{w}" for w in ("w1", "w2", "w3")}
            continue
        # Qwen2MoeDecoderLayer / Qwen3MoeDecoderLayer rule
        sparse = (i not in cfg.get("mlp_only_layers", [])) and cfg["num_experts"] > 0 and \
            (i + 1) % cfg.get("decoder_sparse_step", 1) == 0
        mlps = [f"experts.{e}" for e in range(cfg["num_experts"])] if sparse else [""]
        if sparse and mt == "qwen2_moe":
            mlps.append("shared_expert")
        for m in mlps:
            base = p + "mlp." + (m + "." if m else "")
            out |= {base + w for w in ("gate_proj", "up_proj", "down_proj")}
    return out


# ---- perplexity ---------------------------------------------------------------------------------
def tf_ppl(model, tokens, ref=None, keep=False):
    """ppl, predictions; with keep=True also every row's float64 log-probabilities; with ref (such
    a list from another model) also the mean KL(ref || model) per prediction (informative)."""
    import torch

    tot, n, kl, kept = 0.0, 0, 0.0, []
    with torch.no_grad():
        for i, row in enumerate(tokens):
            ids = torch.from_numpy(np.ascontiguousarray(row, dtype=np.int64))[None]
            logits = model(input_ids=ids, use_cache=False).logits[0]
            assert logits.dtype == torch.float32
            lp = torch.log_softmax(logits.to(torch.float64)[:-1], dim=-1)
            nll = -lp.gather(1, ids[0, 1:, None]).squeeze(1)
            tot += float(nll.sum())
            n += nll.numel()
            if keep:
                kept.append(lp)
            if ref is not None:
                kl += float((ref[i].exp() * (ref[i] - lp)).sum())
    out = (math.exp(tot / n), n)
    if keep:
        out += (kept,)
    if ref is not None:
        out += (kl / n,)
    return out


def cloq_ppl(cloq, args):
    p = subprocess.run([cloq, "ppl"] + args, capture_output=True, text=True)
    m = re.search(r"perplexity\s+([0-9.eE+-]+|inf|nan)", p.stdout)
    if p.returncode != 0 or not m:
        first = (p.stderr.strip() or p.stdout.strip()).splitlines()
        return None, f"exit {p.returncode}: {first[0] if first else ''}"
    return float(m.group(1)), None


def rel(a, b):
    return abs(a - b) / abs(b) if a is not None and b is not None else None


# ---- GPTQ export inspection (informative) -------------------------------------------------------
def inspect_gptq(gdir, edir, bits):
    res = {"problems": []}
    P = res["problems"]
    qc = json.load(open(os.path.join(gdir, "quantize_config.json")))
    cfg = json.load(open(os.path.join(gdir, "config.json")))
    res["quantize_config"] = {k: qc[k] for k in qc if k not in ("modules_in_block_to_quantize",)}
    if cfg.get("quantization_config") != qc:
        P.append("config.json quantization_config != quantize_config.json")
    G = read_model(gdir)
    E = read_model(edir)
    qlin = sorted(k[: -len(".qweight")] for k in G if k.endswith(".qweight"))
    res["packed_linears"] = len(qlin)
    # every packed linear must be listed (by suffix, as optimum's convert_model matches) and no router
    listed = [m for grp in qc.get("modules_in_block_to_quantize", []) for m in grp]
    for name in qlin:
        if not any(name.endswith("." + m) for m in listed):
            P.append(f"{name} packed but not in modules_in_block_to_quantize")
        if any(name.endswith("." + r) for r in ROUTERS):
            P.append(f"router {name} packed")
    for k in G:
        if any(k.endswith("." + r + ".weight") for r in ROUTERS) and G[k].dtype.kind != "f":
            P.append(f"{k} not dense")
    for r in ROUTERS:
        for k in G:
            if k.endswith("." + r + ".weight") and not any(r.endswith(m) or m.endswith(r) for m in qc.get("modules_not_converted", [])):
                P.append(f"{k} dense but not in modules_not_converted")
    # unpack AutoGPTQ v1 and compare with the dense fp32 export
    maxrel = 0.0
    per = 32 // bits
    for name in qlin:
        qw, qz, sc, gi = (G[name + s] for s in (".qweight", ".qzeros", ".scales", ".g_idx"))
        out = sc.shape[1]
        inn = qw.shape[0] * per
        if gi.shape != (inn,):
            P.append(f"{name}: g_idx shape {gi.shape} != ({inn},)")
            continue
        sh = np.arange(per, dtype=np.uint32) * bits
        q = ((qw.view(np.uint32)[:, None, :] >> sh[None, :, None]) & ((1 << bits) - 1)).reshape(inn, out)
        z = ((qz.view(np.uint32)[:, :, None] >> sh[None, None, :]) & ((1 << bits) - 1)).reshape(qz.shape[0], -1)[:, :out]
        z = z.astype(np.float32) + 1.0  # v1 stores zero - 1
        w = (sc[gi].astype(np.float32) * (q.astype(np.float32) - z[gi])).T  # (out, in)
        ref = E[name + ".weight"]
        if w.shape != ref.shape:
            P.append(f"{name}: unpacked shape {w.shape} != dense {ref.shape}")
            continue
        d = float(np.max(np.abs(w - ref)) / max(float(np.max(np.abs(ref))), 1e-30))
        maxrel = max(maxrel, d)
        exp_groups = math.ceil(inn / qc["group_size"]) if qc["group_size"] > 0 else 1
        if sc.shape[0] != exp_groups or not np.array_equal(gi, np.arange(inn) // qc["group_size"]):
            P.append(f"{name}: groups {sc.shape[0]} (expected {exp_groups}) or g_idx not i // group_size")
    res["max_unpack_rel_diff_vs_dequant"] = maxrel  # fp16 scales vs fp32 deq(Q): ~1e-3 expected
    # non-packed tensors: same set as the dense export minus the packed weights
    dense_e = set(E) - {n + ".weight" for n in qlin}
    dense_g = {k for k in G if not k.endswith((".qweight", ".qzeros", ".scales", ".g_idx"))}
    if dense_e != dense_g:
        P.append(f"dense tensors differ: only in dequant {sorted(dense_e - dense_g)[:4]}, only in gptq {sorted(dense_g - dense_e)[:4]}")
    return res


# ---------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", required=True)
    ap.add_argument("--job", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--tf", required=True, choices=sorted(RELEASES))
    ap.add_argument("--gptq", default=None)
    ap.add_argument("--orig", default=None, help="the original model dir (informative: its tf ppl)")
    ap.add_argument("--cloq", default="/tmp/peftcheck/bin/cloq")
    ap.add_argument("--tfroot", default="/tmp/peftcheck/tf")
    ap.add_argument("--peft-src", default="/tmp/peftcheck/peft/v0.13.2/src")
    ap.add_argument("--stubs2", default="/tmp/peftcheck/stubs2")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    transformers, peft = setup(a.tf, a.tfroot, a.peft_src, a.stubs2)
    import torch

    E, ADP = a.export, os.path.join(a.export, "adapter")
    toks = np.load(a.tokens)
    assert toks.ndim == 2
    cfg = json.load(open(os.path.join(E, "config.json")))
    acfg = json.load(open(os.path.join(ADP, "adapter_config.json")))
    res = {"export": E, "job": a.job, "tokens": a.tokens, "release": transformers.__version__,
           "peft": peft.__version__, "arch": cfg["architectures"][0], "windows": int(toks.shape[0]),
           "seqlen": int(toks.shape[1]), "problems": [], "log": []}
    P = res["problems"]

    # ---- base model ----
    cls = getattr(transformers, res["arch"])
    torch.manual_seed(0)
    with record_warnings(res["log"]):
        model = cls.from_pretrained(E, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    assert model.config._attn_implementation == "eager"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ck = read_model(E)
    sd = model.state_dict()
    for k, t in sd.items():
        if t.device.type == "meta":
            P.append(f"{k} on meta")
    for k, arr in ck.items():
        if k not in sd or not same_bits(sd[k].numpy(), arr):
            P.append(f"checkpoint tensor {k} not loaded bit for bit")
    extra = [k for k in sd if k not in ck and "rotary" not in k and not (k == "lm_head.weight" and cfg.get("tie_word_embeddings"))]
    if extra:
        P.append(f"model tensors not in checkpoint: {extra[:4]}")
    linears_before = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}

    res["tf_base"], res["predictions"] = tf_ppl(model, toks)
    if a.orig:  # informative: where the original (unquantized) model stands
        with record_warnings(res["log"]):
            om = cls.from_pretrained(a.orig, torch_dtype=torch.float32, attn_implementation="eager").eval()
        res["tf_original"], _, orig_lp = tf_ppl(om, toks, keep=True)
        del om
        _, _, res["kl_orig_base"] = tf_ppl(model, toks, ref=orig_lp)

    # ---- PEFT ----
    from peft.tuners.lora import LoraLayer
    import peft.peft_model as pm

    loads = []
    orig_set = pm.set_peft_model_state_dict

    def spy(*args, **kw):  # records the real load_state_dict result (PEFT 0.13 does not report it)
        r = orig_set(*args, **kw)
        loads.append(r)
        return r

    pm.set_peft_model_state_dict = spy
    with record_warnings(res["log"]):
        pmodel = peft.PeftModel.from_pretrained(model, ADP)
    pm.set_peft_model_state_dict = orig_set
    pmodel.eval()

    afile, ameta, adtypes = read_st(os.path.join(ADP, "adapter_model.safetensors"))
    res["adapter_dtypes"] = sorted(set(adtypes.values()))
    pre = "base_model.model."
    file_mods = set()
    for k in afile:
        m = re.fullmatch(re.escape(pre) + r"(.+)\.lora_([AB])\.weight", k)
        if not m:
            P.append(f"adapter key {k} not of the form base_model.model.<module>.lora_A|B.weight")
            continue
        file_mods.add(m.group(1))
    for mod in file_mods:
        for ab in "AB":
            if f"{pre}{mod}.lora_{ab}.weight" not in afile:
                P.append(f"{mod}: lora_{ab} missing from the file")
    wrapped = {n[len(pre):]: m for n, m in pmodel.named_modules() if isinstance(m, LoraLayer)}
    expect = expected_targets(cfg)
    res["n_targets"] = {"file": len(file_mods), "peft": len(wrapped), "expected": len(expect)}
    for what, s in (("PEFT wrapped", set(wrapped)), ("expected from config", expect)):
        if s != file_mods:
            P.append(f"{what} != adapter file: extra {sorted(s - file_mods)[:6]}, missing {sorted(file_mods - s)[:6]}")
    wrongly = sorted(n for n in wrapped if any(n.endswith("." + r) for r in ROUTERS))
    if wrongly:
        P.append(f"routers wrapped: {wrongly}")
    plain = sorted(linears_before - set(wrapped))
    res["unwrapped_linears"] = sorted({re.sub(r"layers\.\d+\.", "layers.*.", n) for n in plain})
    for n in plain:
        if n != "lm_head" and not any(n.endswith("." + r) for r in ROUTERS):
            P.append(f"nn.Linear {n} left without LoRA")
    routers = [n for n in plain if any(n.endswith("." + r) for r in ROUTERS)]
    res["routers_plain"] = len(routers)
    # scaling / r / dropout
    r, alpha = acfg["r"], acfg["lora_alpha"]
    res["scaling_expected"] = alpha / r
    scal = set()
    for n, m in wrapped.items():
        scal.add(m.scaling["default"])
        if m.r["default"] != r or m.scaling["default"] != alpha / r:
            P.append(f"{n}: r {m.r['default']} scaling {m.scaling['default']} != {r}, {alpha}/{r}")
        if not isinstance(m.lora_dropout["default"], torch.nn.Identity):
            P.append(f"{n}: dropout {m.lora_dropout['default']}")
        if m.use_dora.get("default"):
            P.append(f"{n}: DoRA on")
        if afile.get(f"{pre}{n}.lora_A.weight") is not None and afile[f"{pre}{n}.lora_A.weight"].shape[0] != r:
            P.append(f"{n}: lora_A rows != r")
    res["scaling_seen"] = sorted(scal)
    # adapter_config.json as a loader reads it (notes, not failures)
    res["adapter_config"] = acfg
    notes = res.setdefault("notes", [])
    bm = acfg.get("base_model_name_or_path")
    cands = [bm] if bm and os.path.isabs(bm) else [os.path.join(os.getcwd(), bm or ""), os.path.join(ADP, bm or "")]
    if not any(os.path.isdir(c) and os.path.samefile(c, E) for c in cands):
        notes.append(f"adapter_config.json base_model_name_or_path {bm!r} does not name this export "
                     f"(AutoPeftModelForCausalLM would load {bm!r} relative to the cwd, or from the hub)")
    if acfg.get("task_type") != "CAUSAL_LM":
        P.append(f"task_type {acfg.get('task_type')}")
    # weights bit for bit, and nothing left unloaded
    psd = pmodel.state_dict()
    lora_keys = {k for k in psd if ".lora_" in k}
    used = set()
    for k, arr in afile.items():
        pk = k.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")
        used.add(pk)
        if pk not in psd:
            P.append(f"file key {k} has no PeftModel parameter")
        elif not same_bits(psd[pk].numpy(), arr):
            P.append(f"{k} differs in the PeftModel")
    if lora_keys - used:
        P.append(f"PeftModel LoRA parameters not in the file (left at init): {sorted(lora_keys - used)[:4]}")
    if len(loads) != 1:
        P.append(f"set_peft_model_state_dict called {len(loads)} times")
    else:
        lr = loads[0]
        res["load_missing_lora"] = [k for k in lr.missing_keys if ".lora_" in k]
        res["load_unexpected"] = list(lr.unexpected_keys)
        if res["load_missing_lora"] or res["load_unexpected"]:
            P.append(f"load_state_dict: missing {res['load_missing_lora'][:4]} unexpected {res['load_unexpected'][:4]}")
    # the base weights must be untouched by PEFT
    for n, m in wrapped.items():
        if not same_bits(m.base_layer.weight.detach().numpy(), ck[n + ".weight"]):
            P.append(f"{n}: base weight changed")

    res["tf_peft"], _ = tf_ppl(pmodel, toks)
    if a.orig:
        _, _, res["kl_orig_peft"] = tf_ppl(pmodel, toks, ref=orig_lp)
    with pmodel.disable_adapter():
        res["tf_peft_disabled"], _ = tf_ppl(pmodel, toks)
    if res["tf_peft_disabled"] != res["tf_base"]:
        P.append(f"disable_adapter() ppl {res['tf_peft_disabled']} != base {res['tf_base']}")

    # ---- cloq ----
    T = a.tokens
    res["cloq_export_adapter"], e1 = cloq_ppl(a.cloq, [E, "--adapter", ADP, "--tokens", T])
    res["cloq_job"], e2 = cloq_ppl(a.cloq, [a.job, "--tokens", T])
    res["cloq_job_nolora"], e3 = cloq_ppl(a.cloq, [a.job, "--no-lora", "--tokens", T])
    res["cloq_export_base"], e4 = cloq_ppl(a.cloq, [E, "--tokens", T])
    for e in (e1, e2, e3, e4):
        if e:
            P.append("cloq ppl: " + e)
    res["rel"] = {
        "export+adapter": rel(res["cloq_export_adapter"], res["tf_peft"]),
        "job": rel(res["cloq_job"], res["tf_peft"]),
        "job --no-lora": rel(res["cloq_job_nolora"], res["tf_base"]),
        "export base": rel(res["cloq_export_base"], res["tf_base"]),
    }
    for k, v in res["rel"].items():
        if v is None or v > a.tol:
            P.append(f"{k}: rel diff {v} beyond {a.tol}")
    res["lora_effect"] = rel(res["tf_peft"], res["tf_base"])

    # ---- negative control: every LoRA scaling doubled must be seen ----
    for m in wrapped.values():
        m.scaling["default"] *= 2
    res["neg_scaling_x2"], _ = tf_ppl(pmodel, toks)
    for m in wrapped.values():
        m.scaling["default"] /= 2
    res["neg_rel"] = rel(res["cloq_export_adapter"], res["neg_scaling_x2"])
    if res["neg_rel"] is None or res["neg_rel"] <= a.tol:
        P.append(f"negative control not detected (rel {res['neg_rel']})")

    # ---- merge_and_unload ----
    merged = pmodel.merge_and_unload()
    res["tf_merged"], _ = tf_ppl(merged, toks)
    res["rel"]["merged vs peft"] = rel(res["tf_merged"], res["tf_peft"])
    if res["rel"]["merged vs peft"] > a.tol:
        P.append("merge_and_unload ppl beyond tol")

    # ---- GPTQ export (informative) ----
    if a.gptq:
        g = inspect_gptq(a.gptq, E, json.load(open(os.path.join(a.gptq, "quantize_config.json")))["bits"])
        g["cloq_gptq_adapter"], ge = cloq_ppl(a.cloq, [a.gptq, "--adapter", os.path.join(a.gptq, "adapter"), "--tokens", T])
        g["rel_vs_tf_peft"] = rel(g["cloq_gptq_adapter"], res["tf_peft"])
        ga = json.load(open(os.path.join(a.gptq, "adapter", "adapter_config.json")))
        if ga != acfg:
            g["problems"].append("GPTQ export's adapter_config.json differs from the dequant export's")
        gad = read_st(os.path.join(a.gptq, "adapter", "adapter_model.safetensors"))[0]
        if set(gad) != set(afile) or not all(same_bits(gad[k], afile[k]) for k in afile):
            g["problems"].append("GPTQ export's adapter tensors differ from the dequant export's")
        if ge:
            g["problems"].append("cloq ppl G: " + ge)
        res["gptq"] = g

    # log lines worth a look (PEFT/transformers warnings on load)
    res["status"] = 0 if not P else 1
    if a.json:
        print(json.dumps(res))
    else:
        print(json.dumps(res, indent=1))
    sys.exit(res["status"])


if __name__ == "__main__":
    main()
