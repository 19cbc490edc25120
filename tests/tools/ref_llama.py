#!/usr/bin/python3
"""ref_llama.py - independent float64 numpy reference of Hugging Face LlamaForCausalLM.

An oracle for cloq's C forward pass and the source of the solver fixtures. numpy only (no torch,
no transformers): the safetensors file is read by hand (8-byte LE header length, JSON header, raw
F32 data) so nothing here shares code with the C reader it is meant to check.

The forward mirrors transformers' modeling_llama in float64:
  h = embed[ids]
  per layer: x = rmsnorm(h) * w_in          (x * rsqrt(mean(x^2) + eps), then * weight)
             q,k,v = x Wq^T, x Wk^T, x Wv^T ; RoPE rotate_half convention on q, k
             grouped-query causal softmax attention (q head h uses kv head h // (Hq/Hkv))
             h += attn Wo^T
             x = rmsnorm(h) * w_post ; h += down(silu(gate x) * up x)
  logits = rmsnorm(h) * w_norm @ embed^T   (tied lm_head)

Usage (run from the repository root or pass --model):
  ref_llama.py --check                      validate against fixtures/reference, exit 1 on mismatch
  ref_llama.py --logits IDS_FILE [--out F]  print logits (one row per position, %.9g) or write them
                                            to F as float32 LE (T, vocab) row-major
  ref_llama.py --ppl-npy FILE.npy           int32 [N, T] windows; prints "perplexity X"
  ref_llama.py --dump-solver-fixture DIR    write the solver fixture (see fixtures/solver/README.md)
  ref_llama.py --check-solver-fixture DIR   re-derive it another way (batched) and check identities
"""

import argparse
import json
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


def read_safetensors(path):
    """Return {name: float32 ndarray} from a safetensors file (F32 only, which is all we need)."""
    with open(path, "rb") as f:
        blob = f.read()
    (hlen,) = struct.unpack_from("<Q", blob, 0)
    header = json.loads(blob[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            raise ValueError("%s: tensor %s has dtype %s, only F32 supported"
                             % (path, name, meta["dtype"]))
        a, b = meta["data_offsets"]
        shape = tuple(meta["shape"])
        arr = np.frombuffer(blob, dtype="<f4", count=(b - a) // 4, offset=base + a)
        out[name] = arr.reshape(shape).copy()
    return out


class Llama:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        self.cfg = cfg
        self.dim = cfg["hidden_size"]
        self.n_layers = cfg["num_hidden_layers"]
        self.n_heads = cfg["num_attention_heads"]
        self.n_kv = cfg.get("num_key_value_heads", self.n_heads)
        self.head_dim = self.dim // self.n_heads
        self.eps = float(cfg["rms_norm_eps"])
        self.theta = float(cfg.get("rope_theta", 10000.0))
        self.vocab = cfg["vocab_size"]
        if cfg.get("hidden_act", "silu") != "silu":
            raise ValueError("only silu supported")
        self.w32 = read_safetensors(os.path.join(model_dir, "model.safetensors"))
        self.w = {k: v.astype(np.float64) for k, v in self.w32.items()}
        if "lm_head.weight" in self.w:
            self.lm_head = self.w["lm_head.weight"]
        else:
            self.lm_head = self.w["model.embed_tokens.weight"]
        hd = self.head_dim
        self.inv_freq = 1.0 / (self.theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))

    def rmsnorm(self, x, w):
        var = np.mean(x * x, axis=-1, keepdims=True)
        return (x / np.sqrt(var + self.eps)) * w

    def rope(self, x, T):
        # x: (B, H, T, hd). HF: emb = cat(freqs, freqs); x*cos + rotate_half(x)*sin,
        # rotate_half(x) = cat(-x[..., hd/2:], x[..., :hd/2]).
        pos = np.arange(T, dtype=np.float64)
        freqs = np.outer(pos, self.inv_freq)
        emb = np.concatenate([freqs, freqs], axis=-1)
        cos, sin = np.cos(emb), np.sin(emb)
        half = self.head_dim // 2
        rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos + rot * sin

    def forward(self, ids, hook=None):
        """ids: int array (B, T). Returns float64 logits (B, T, vocab).
        hook(layer, group, X) gets float64 X of shape (B*T, n) for groups qkv, o, gateup, down."""
        ids = np.asarray(ids)
        if ids.ndim == 1:
            ids = ids[None, :]
        B, T = ids.shape
        H, Hkv, hd = self.n_heads, self.n_kv, self.head_dim
        rep = H // Hkv
        h = self.w["model.embed_tokens.weight"][ids]  # (B, T, D)
        mask = np.triu(np.ones((T, T), dtype=bool), k=1)
        scale = 1.0 / np.sqrt(hd)
        for l in range(self.n_layers):
            p = "model.layers.%d." % l
            w = self.w
            x = self.rmsnorm(h, w[p + "input_layernorm.weight"])
            if hook:
                hook(l, "qkv", x.reshape(B * T, -1))
            q = x @ w[p + "self_attn.q_proj.weight"].T
            k = x @ w[p + "self_attn.k_proj.weight"].T
            v = x @ w[p + "self_attn.v_proj.weight"].T
            q = q.reshape(B, T, H, hd).transpose(0, 2, 1, 3)
            k = k.reshape(B, T, Hkv, hd).transpose(0, 2, 1, 3)
            v = v.reshape(B, T, Hkv, hd).transpose(0, 2, 1, 3)
            q = self.rope(q, T)
            k = self.rope(k, T)
            # repeat_kv: kv head j serves q heads j*rep .. j*rep+rep-1
            k = np.repeat(k, rep, axis=1)
            v = np.repeat(v, rep, axis=1)
            s = (q @ k.transpose(0, 1, 3, 2)) * scale
            s = np.where(mask, -np.inf, s)
            s = s - s.max(axis=-1, keepdims=True)
            e = np.exp(s)
            a = e / e.sum(axis=-1, keepdims=True)
            o = (a @ v).transpose(0, 2, 1, 3).reshape(B, T, H * hd)
            if hook:
                hook(l, "o", o.reshape(B * T, -1))
            h = h + o @ w[p + "self_attn.o_proj.weight"].T
            x = self.rmsnorm(h, w[p + "post_attention_layernorm.weight"])
            if hook:
                hook(l, "gateup", x.reshape(B * T, -1))
            g = x @ w[p + "mlp.gate_proj.weight"].T
            u = x @ w[p + "mlp.up_proj.weight"].T
            m = (g / (1.0 + np.exp(-g))) * u
            if hook:
                hook(l, "down", m.reshape(B * T, -1))
            h = h + m @ w[p + "mlp.down_proj.weight"].T
        h = self.rmsnorm(h, self.w["model.norm.weight"])
        return h @ self.lm_head.T


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


def dump_solver_fixture(model, outdir, calib_path, n_rows=32, x_rows=8, x_layers=(0, 4)):
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


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEF_MODEL)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--logits", metavar="IDS_FILE")
    ap.add_argument("--out", metavar="FILE", help="with --logits: write float32 LE instead")
    ap.add_argument("--ppl-npy", metavar="FILE")
    ap.add_argument("--dump-solver-fixture", metavar="DIR")
    ap.add_argument("--check-solver-fixture", metavar="DIR")
    ap.add_argument("--calib", default=os.path.join(REF, "calib_tokens_128x256.npy"))
    a = ap.parse_args(argv)
    if not (a.check or a.logits or a.ppl_npy or a.dump_solver_fixture
            or a.check_solver_fixture):
        ap.error("nothing to do")
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
