#!/usr/bin/python3
"""torch_pipeline.py - the GPTQ + CLoQ conversion written the way the published PyTorch code does
it, as the baseline for cloq's speed and results (tests/bench/bench_e2e.sh). NOT a CI dependency:
it needs Debian's python3-torch (apt-get install python3-torch), only for `make bench`.

What it does, per decoder layer, true-sequential as AutoGPTQ (true_sequential=True):
  inputs of layer 0 = embeddings of the calibration windows (the .npy that cloq saved:
  OUT/calib_windows.npy), one window at a time (AutoGPTQ's batch size 1);
  for each group [q,k,v], [o], [gate,up], [down]:
      H = running AutoGPTQ Gram of the group's input (float32, H *= n/(n+1); x *= sqrt(2/(n+1));
          H += x^T x), collected by running the WHOLE layer on every window (AutoGPTQ's
          add_batch hooks; the forward is not cut short after the group)
      per linear: Q = GPTQ fasterquant (block 128, damp 0.01 * mean diag, asymmetric groups,
          AutoGPTQ's Quantizer; torch.linalg.cholesky / cholesky_inverse / cholesky(upper))
          A, B = CLoQ closed form: R^T R = H + lambda I (lambda = 1e-4 mean diag H, float64),
          M = R dW^T, U S V^T = torch.linalg.svd(M) (full SVD, float32 by default), rank r,
          balanced split, s = 1
      the layer's weights of this group become deq(Q) (what feeds the next groups)
  outputs = layer(inputs) with every linear deq(Q) -> inputs of layer l+1.
Reported: per linear the calibrated relative errors ||X (W - Q - sBA)^T|| / ||X W^T|| from H
(trace of E H E^T, the product in float32, summed in float64; "quantized" with B = 0 and "final"), and wall seconds per stage
(read, statistics, quantize, solve, propagate, report = the error evaluation).

Differences from cloq that are deliberate (they are what the published code does): no fp16
rounding of scales before computing codes (AutoGPTQ rounds them only when packing); the SVD is
a full torch.linalg.svd, not cloq's randomized one; H is float32 (cloq: float64).

usage: torch_pipeline.py MODEL_DIR --windows OUT/calib_windows.npy [--bits 4] [--group-size 128]
       [--rank 64] [--threads N] [--layers N] [--svd-dtype float32|float64] [--json FILE]
exit 77 when torch is not installed (the caller skips the comparison).
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np

try:
    import torch
except ImportError:
    sys.stderr.write("torch_pipeline.py: python3-torch is not installed (apt-get install python3-torch); skipping\n")
    sys.exit(77)

LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PARENT = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
          "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
GROUPS = [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]]


# ---- safetensors, read with numpy (no safetensors package) -------------------------------------
class SafeTensors:
    def __init__(self, model_dir):
        self.where = {}
        idx = os.path.join(model_dir, "model.safetensors.index.json")
        files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
        for fn in files:
            path = os.path.join(model_dir, fn)
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                hdr = json.loads(f.read(n))
            for name, d in hdr.items():
                if name != "__metadata__":
                    self.where[name] = (path, 8 + n + d["data_offsets"][0], d["dtype"], d["shape"])

    def has(self, name):
        return name in self.where

    def get(self, name):
        path, off, dt, shape = self.where[name]
        count = int(np.prod(shape)) if shape else 1
        np_dt = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}[dt]
        a = np.fromfile(path, dtype=np_dt, count=count, offset=off)
        if dt == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        return torch.from_numpy(a.astype(np.float32, copy=False).reshape(shape))


# ---- the model ---------------------------------------------------------------------------------
def rmsnorm(x, w, eps):
    v = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(v + eps))


def rope_tables(cfg, T):
    hd = cfg["head_dim"]
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    emb = torch.cat([ang, ang], dim=-1)
    return emb.cos().float(), emb.sin().float()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def block(cfg, W, x, cos, sin, mask, hook=None):
    """HF LlamaDecoderLayer on one window x (T, hidden); hook(name, input) sees every linear's input."""
    T = x.shape[0]
    H, KV, hd = cfg["heads"], cfg["kv_heads"], cfg["head_dim"]

    def lin(name, inp):
        if hook is not None:
            hook(name, inp)
        y = inp @ W[name].t()
        b = W.get(name + ".bias")
        return y + b if b is not None else y

    h = rmsnorm(x, W["input_layernorm"], cfg["eps"])
    q = lin("q_proj", h).view(T, H, hd).transpose(0, 1)
    k = lin("k_proj", h).view(T, KV, hd).transpose(0, 1)
    v = lin("v_proj", h).view(T, KV, hd).transpose(0, 1)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    if KV != H:
        k = k.repeat_interleave(H // KV, dim=0)
        v = v.repeat_interleave(H // KV, dim=0)
    s = (q @ k.transpose(1, 2)) / math.sqrt(hd)
    p = torch.softmax(s + mask, dim=-1)
    a = (p @ v).transpose(0, 1).reshape(T, H * hd)
    x = x + lin("o_proj", a)
    h = rmsnorm(x, W["post_attention_layernorm"], cfg["eps"])
    g = lin("gate_proj", h)
    u = lin("up_proj", h)
    return x + lin("down_proj", torch.nn.functional.silu(g) * u)


# ---- GPTQ: AutoGPTQ's Quantizer and fasterquant ------------------------------------------------
class Quantizer:
    def __init__(self, bits):
        self.maxq = torch.tensor(2 ** bits - 1, dtype=torch.float32)

    def find_params(self, x):
        zeros = torch.zeros(x.shape[0])
        xmin = torch.minimum(x.min(1)[0], zeros)
        xmax = torch.maximum(x.max(1)[0], zeros)
        tmp = (xmin == 0) & (xmax == 0)
        xmin[tmp] = -1
        xmax[tmp] = +1
        self.scale = ((xmax - xmin) / self.maxq).unsqueeze(1)
        self.zero = torch.round(-xmin.unsqueeze(1) / self.scale)

    def quantize(self, x):
        q = torch.clamp(torch.round(x / self.scale) + self.zero, 0, self.maxq)
        return self.scale * (q - self.zero)


def fasterquant(W, H, bits, groupsize, blocksize=128, percdamp=0.01):
    W = W.clone().float()
    H = H.clone()
    columns = W.shape[1]
    quantizer = Quantizer(bits)
    quantizer.find_params(W)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    Q = torch.zeros_like(W)
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    H = torch.linalg.cholesky(H, upper=True)
    Hinv = H
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if groupsize != -1 and (i1 + i) % groupsize == 0:
                quantizer.find_params(W[:, (i1 + i):(i1 + i + groupsize)])
            q = quantizer.quantize(w.unsqueeze(1)).flatten()
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return Q


# ---- CLoQ closed form --------------------------------------------------------------------------
def cloq_init(dW, H, rank, svd_dtype, lam_rel=1e-4):
    H64 = H.double()
    lam = lam_rel * torch.diag(H64).mean()
    L = torch.linalg.cholesky(H64 + lam * torch.eye(H64.shape[0], dtype=torch.float64))
    R = L.t()                                   # R^T R = H + lambda I
    M = R @ dW.double().t()                     # (in, out)
    U, S, Vh = torch.linalg.svd(M.to(svd_dtype), full_matrices=False)
    U, S, Vh = U[:, :rank].double(), S[:rank].double(), Vh[:rank].double()
    sq = S.sqrt()
    B = Vh.t() * sq                             # (out, r)
    # A = S^1/2 U^T R^-T  <=>  A^T = R^-1 U S^1/2
    At = torch.linalg.solve_triangular(R, U * sq, upper=True)
    return At.t().float().contiguous(), B.float().contiguous()


def trace_EHE(E, H):
    # E H in float32 (an out x in x in product: float64 would triple the cost), summed in float64
    return float(((E @ H) * E).double().sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--windows", required=True)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--layers", type=int, default=0, help="only the first N layers (0 = all)")
    ap.add_argument("--svd-dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--json", help="write the per-linear errors and stage times here")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_grad_enabled(False)
    svd_dtype = getattr(torch, a.svd_dtype)
    t_start = time.time()
    st = {k: 0.0 for k in ["read", "statistics", "quantize", "solve", "propagate", "report"]}

    t = time.time()
    c = json.load(open(os.path.join(a.model_dir, "config.json")))
    cfg = {"hidden": c["hidden_size"], "heads": c["num_attention_heads"],
           "kv_heads": c.get("num_key_value_heads", c["num_attention_heads"]),
           "eps": c.get("rms_norm_eps", 1e-6), "rope_theta": c.get("rope_theta", 10000.0),
           "layers": c["num_hidden_layers"]}
    cfg["head_dim"] = c.get("head_dim") or cfg["hidden"] // cfg["heads"]
    if c.get("rope_scaling"):
        sys.exit("torch_pipeline.py: rope_scaling is not supported by this baseline")
    sf = SafeTensors(a.model_dir)
    win = torch.from_numpy(np.load(a.windows).astype(np.int64))
    n, T = win.shape
    emb = sf.get("model.embed_tokens.weight")
    xs = [emb[win[i]].clone() for i in range(n)]
    del emb
    cos, sin = rope_tables(cfg, T)
    mask = torch.full((T, T), float("-inf")).triu(1)
    st["read"] += time.time() - t
    L = a.layers or cfg["layers"]
    layers = []
    for l in range(L):
        tl = time.time()
        t = time.time()
        pre = "model.layers.%d." % l
        W = {"input_layernorm": sf.get(pre + "input_layernorm.weight"),
             "post_attention_layernorm": sf.get(pre + "post_attention_layernorm.weight")}
        for name in LINEARS:
            W[name] = sf.get(pre + PARENT[name] + "." + name + ".weight").contiguous()
            if sf.has(pre + PARENT[name] + "." + name + ".bias"):
                W[name + ".bias"] = sf.get(pre + PARENT[name] + "." + name + ".bias")
        st["read"] += time.time() - t
        res = {}
        for group in GROUPS:
            t = time.time()
            width = W[group[0]].shape[1]
            Hs = {"H": torch.zeros(width, width), "n": 0}

            def hook(name, inp, group=group, Hs=Hs):
                if name != group[0]:
                    return
                tmp = 1
                Hs["H"] *= Hs["n"] / (Hs["n"] + tmp)
                Hs["n"] += tmp
                x = math.sqrt(2 / Hs["n"]) * inp.float()
                Hs["H"] += x.t() @ x

            for i in range(n):
                block(cfg, W, xs[i], cos, sin, mask, hook)
            H = Hs["H"]
            st["statistics"] += time.time() - t
            Qs = {}
            for name in group:
                Wo = W[name]
                t = time.time()
                Q = fasterquant(Wo, H, a.bits, a.group_size)
                Qs[name] = Q
                st["quantize"] += time.time() - t
                t = time.time()
                A, B = cloq_init(Wo - Q, H, a.rank, svd_dtype)
                st["solve"] += time.time() - t
                t = time.time()
                den = trace_EHE(Wo, H)
                e_q = trace_EHE(Wo - Q, H)
                e_f = trace_EHE(Wo - Q - B @ A, H)
                res[name] = {"quantized": math.sqrt(e_q / den), "final": math.sqrt(e_f / den)}
                st["report"] += time.time() - t
            for name in group:          # later groups and the propagation see deq(Q), as AutoGPTQ
                W[name] = Qs[name]
            del H
        t = time.time()
        for i in range(n):
            xs[i] = block(cfg, W, xs[i], cos, sin, mask)
        st["propagate"] += time.time() - t
        layers.append({"layer": l, "linears": res, "seconds": time.time() - tl})
        if not a.quiet:
            mq = sum(r["quantized"] for r in res.values()) / len(res)
            mf = sum(r["final"] for r in res.values()) / len(res)
            sys.stderr.write("torch: layer %d/%d done in %.1fs: mean calibrated error %.4f quantized -> %.4f with CLoQ\n"
                             % (l + 1, L, time.time() - tl, mq, mf))
    st["total"] = time.time() - t_start
    out = {"tool": "torch_pipeline.py (torch %s)" % torch.__version__, "threads": a.threads,
           "windows": int(n), "seqlen": int(T), "bits": a.bits, "group_size": a.group_size, "rank": a.rank,
           "svd_dtype": a.svd_dtype, "layers": layers, "run_seconds": st}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    print("| stage | seconds |")
    print("|---|---|")
    for k, v in st.items():
        print("| %s | %.1f |" % (k, v))


if __name__ == "__main__":
    main()
