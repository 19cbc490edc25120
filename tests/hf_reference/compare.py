#!/usr/bin/python3
"""Compare cloq's perplexity with the real Hugging Face transformers forward.

usage: /usr/bin/python3 compare.py --model DIR --tokens FILE.npy --tf 4.44|4.51
                                   [--cloq PATH] [--json] [--tol 1e-5] [--ref REF_LLAMA_PY]
                                   [--ref-tol 1e-6]

* transformers comes from the release sources extracted under tf/v4.44.2 and tf/v4.51.3
  (see README.md); the pure-Python stand-ins for huggingface_hub / safetensors / tokenizers
  live in stubs/, and stubs/torch2_shim.py adds the few torch 2.x names 4.51 imports.
* The model is loaded with the class named in config.json "architectures" (a *ForCausalLM),
  torch_dtype=float32, attn_implementation="eager", eval(), under torch.no_grad().
* Perplexity: every row of the 2-D token array is its own sequence starting at position 0;
  positions 0..T-2 predict 1..T-1; ppl = exp(mean NLL over all predictions of all rows);
  the NLL is computed in float64 from transformers' float32 logits.
* cloq's figure is parsed from `cloq ppl DIR --tokens FILE` ("perplexity X ...").
* --ref: also run the project's float64 numpy oracle (tests/tools/ref_llama.py --model DIR
  --ppl-npy FILE; same windows, same definition of ppl) and compare it with transformers to
  --ref-tol (default 1e-6). Its "min top-k routing margin" line (MoE models) is recorded too.

Exit status: 0 compared and within --tol, 1 compared and beyond --tol, 2 cloq refused
(its exit code and first stderr line are printed), 3 the transformers side failed, 4 cloq within
--tol but the --ref oracle failed or is beyond --ref-tol.
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RELEASES = {"4.44": "v4.44.2", "4.51": "v4.51.3"}


def setup_transformers(release):
    """Put stubs/ and the chosen transformers source first on sys.path and import it."""
    tag = RELEASES[release]
    src = os.path.join(HERE, "tf", tag, "src")
    if not os.path.isdir(os.path.join(src, "transformers")):
        raise SystemExit(f"missing {src}/transformers: extract it first (README.md)")
    sys.path.insert(0, src)
    sys.path.insert(0, os.path.join(HERE, "stubs"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import torch  # noqa: F401

    if release == "4.51":
        import torch2_shim

        torch2_shim.install()
    import transformers

    assert transformers.__version__ == tag[1:], (transformers.__version__, tag)
    assert os.path.dirname(transformers.__file__).startswith(src), transformers.__file__
    transformers.logging.set_verbosity_error()
    return transformers


def read_checkpoint(model_dir):
    """All tensors of the checkpoint as float32 numpy arrays, decoded here with numpy alone
    (independently of the safetensors stand-in that transformers uses)."""
    import glob
    import struct

    import numpy as np

    out = {}
    for path in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            hdr = json.loads(f.read(n))
            data = f.read()
        hdr.pop("__metadata__", None)
        for k, v in hdr.items():
            b, e = v["data_offsets"]
            raw = np.frombuffer(data[b:e], dtype={"BF16": "<u2", "F16": "<f2", "F32": "<f4"}[v["dtype"]])
            if v["dtype"] == "BF16":
                raw = (raw.astype(np.uint32) << 16).view(np.float32)
            out[k] = raw.astype(np.float32).reshape(v["shape"])
    return out


def check_loaded(model, model_dir):
    """Every checkpoint tensor must sit in the model exactly (bf16 -> f32 is exact), nothing may be
    left on the meta device, and a model without lm_head.weight must have it tied to the embedding."""
    import numpy as np
    import torch

    sd = model.state_dict()
    for k, t in sd.items():
        if t.device.type == "meta":
            raise RuntimeError(f"{k} left on the meta device")
    ck = read_checkpoint(model_dir)
    for k, arr in ck.items():
        if k not in sd:
            raise RuntimeError(f"checkpoint tensor {k} not in the model")
        if not np.array_equal(sd[k].detach().cpu().numpy(), arr):
            raise RuntimeError(f"{k} differs from the checkpoint after loading")
    if "lm_head.weight" in sd and "lm_head.weight" not in ck:
        if not torch.equal(sd["lm_head.weight"], sd["model.embed_tokens.weight"]):
            raise RuntimeError("lm_head.weight absent from the checkpoint but not tied to the embedding")
    missing = [k for k in sd if k not in ck and k != "lm_head.weight" and "rotary" not in k]
    if missing:
        raise RuntimeError(f"model tensors not in the checkpoint: {missing[:5]}")


def tf_ppl(model_dir, tokens, release):
    transformers = setup_transformers(release)
    import numpy as np
    import torch

    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    arch = cfg["architectures"][0]
    cls = getattr(transformers, arch, None)
    if cls is None:
        raise RuntimeError(f"transformers {transformers.__version__} has no {arch}")
    torch.manual_seed(0)
    model = cls.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    impl = getattr(model.config, "_attn_implementation", None)
    assert impl == "eager", impl
    assert all(p.dtype == torch.float32 for p in model.parameters())
    check_loaded(model, model_dir)
    tot, n = 0.0, 0
    with torch.no_grad():
        for row in tokens:
            ids = torch.from_numpy(np.ascontiguousarray(row, dtype=np.int64))[None]
            out = model(input_ids=ids, use_cache=False)
            logits = out.logits[0].to(torch.float64)  # float32 logits -> float64
            lp = torch.log_softmax(logits[:-1], dim=-1)
            nll = -lp.gather(1, ids[0, 1:, None]).squeeze(1)
            tot += float(nll.sum())
            n += nll.numel()
    return math.exp(tot / n), n, arch


def cloq_ppl(cloq, model_dir, tokens_file):
    p = subprocess.run([cloq, "ppl", model_dir, "--tokens", tokens_file],
                       capture_output=True, text=True)
    if p.returncode != 0:
        first = (p.stderr.strip() or p.stdout.strip()).splitlines()
        return None, p.returncode, first[0] if first else ""
    m = re.search(r"perplexity\s+([0-9.eE+-]+|inf|nan)", p.stdout)
    if not m:
        return None, -1, "could not parse: " + p.stdout.strip()[:200]
    return float(m.group(1)), 0, p.stdout.strip()


def ref_ppl(ref, model_dir, tokens_file):
    """The float64 oracle's perplexity: (ppl, min routing margin or None, error or None)."""
    p = subprocess.run(["/usr/bin/python3", ref, "--model", model_dir, "--ppl-npy", tokens_file],
                       capture_output=True, text=True)
    if p.returncode != 0:
        last = (p.stderr.strip() or p.stdout.strip()).splitlines()
        return None, None, (last[-1] if last else f"exit {p.returncode}")[:300]
    m = re.search(r"perplexity\s+([0-9.eE+-]+|inf|nan)", p.stdout)
    if not m:
        return None, None, "could not parse: " + p.stdout.strip()[:200]
    mg = re.search(r"min top-k routing margin\s+([0-9.eE+-]+)", p.stdout)
    return float(m.group(1)), float(mg.group(1)) if mg else None, None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--tf", required=True, choices=sorted(RELEASES))
    ap.add_argument("--cloq", default=os.path.join(HERE, "bin", "cloq"))
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--cloq-model", default=None,
                    help="give cloq this directory instead of --model (negative controls: a deliberately "
                         "different model must come out beyond --tol)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    ap.add_argument("--ref", default=None, help="path of ref_llama.py: compare its float64 ppl with transformers")
    ap.add_argument("--ref-tol", type=float, default=1e-6)
    a = ap.parse_args()

    import numpy as np

    toks = np.load(a.tokens)
    if toks.ndim != 2:
        raise SystemExit("--tokens must be a 2-D array of windows")
    res = {"model": a.model, "tokens": a.tokens, "release": RELEASES[a.tf][1:],
           "windows": int(toks.shape[0]), "seqlen": int(toks.shape[1])}
    try:
        ppl, n, arch = tf_ppl(a.model, toks, a.tf)
        res.update(tf_ppl=ppl, predictions=n, arch=arch)
    except Exception as e:  # report, don't hide: the row shows the failure
        res.update(tf_ppl=None, tf_error=f"{type(e).__name__}: {e}".splitlines()[0][:300])
    c, rc, msg = cloq_ppl(a.cloq, a.cloq_model or a.model, a.tokens)
    if a.cloq_model:
        res["cloq_model"] = a.cloq_model
    res.update(cloq_ppl=c, cloq_rc=rc, cloq_msg=msg)
    if a.ref:
        rp, rm, rerr = ref_ppl(a.ref, a.model, a.tokens)
        res.update(ref_ppl=rp, ref_margin=rm)
        if rerr:
            res["ref_error"] = rerr
        if rp is not None and res["tf_ppl"] is not None:
            res["ref_rel_diff"] = abs(rp - res["tf_ppl"]) / res["tf_ppl"]
    status = 0
    if res["tf_ppl"] is None:
        status = 3
    elif c is None:
        status = 2
    else:
        res["rel_diff"] = abs(c - res["tf_ppl"]) / res["tf_ppl"]
        status = 0 if res["rel_diff"] <= a.tol else 1
    if status == 0 and a.ref and not (res.get("ref_rel_diff") is not None and res["ref_rel_diff"] <= a.ref_tol):
        status = 4
    res["status"] = status
    if a.json:
        print(json.dumps(res))
    else:
        print(f"transformers {res['release']}: " +
              (f"ppl {res['tf_ppl']:.9g}  ({res['predictions']} predictions, {res['arch']})"
               if res["tf_ppl"] is not None else "FAILED " + res["tf_error"]))
        print("cloq: " + (f"ppl {c:.9g}" if c is not None else f"exit {rc}: {msg}"))
        if "rel_diff" in res:
            ok = res["rel_diff"] <= a.tol
            print(f"rel diff: {res['rel_diff']:.3e}  ({'OK' if ok else 'BEYOND'} tol {a.tol:g})")
        if a.ref:
            if res.get("ref_ppl") is None:
                print("ref_llama.py: FAILED " + res.get("ref_error", ""))
            else:
                line = f"ref_llama.py (float64): ppl {res['ref_ppl']:.9g}"
                if "ref_rel_diff" in res:
                    line += (f", rel diff to transformers {res['ref_rel_diff']:.3e} "
                             f"({'OK' if res['ref_rel_diff'] <= a.ref_tol else 'BEYOND'} tol {a.ref_tol:g})")
                if res.get("ref_margin") is not None:
                    line += f"; min top-k routing margin {res['ref_margin']:.3g}"
                print(line)
    sys.exit(status)


if __name__ == "__main__":
    main()
