#!/usr/bin/python3
"""bench_calib.py - the calibration passes against the flop limit (issue "Calibration at the flop
limit", item 1): for each job, each stage's wall time from report.json, the arithmetic of the
calibration work (one forward pass of the layers over the calibration tokens plus the Gram
matrices: report.json "work", from the time model in src/job/cloq_plan.c) and its efficiency against
the sgemm rate probed in the same run (`cloq inspect`: the best of five 512^3 probes).

  bench_calib.py BUILD_DIR [--full]
    (a) synthetic Llama, hidden 512, intermediate 1376, 4 layers, 64 x 256 random windows, INT2 g32 r8
    (b) with --full: Llama-2-7B geometry, 2 layers, 16 x 2048 random windows, INT4 g128 r64
  Both with --threads 2 --no-baselines. Needs numpy.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np


def job(cloq, mk, tmp, name, geom, nwin, seqlen, qopts):
    m = os.path.join(tmp, name)
    subprocess.run([mk, "--out", m, "--quiet"] + geom, check=True)
    w = os.path.join(tmp, name + ".npy")
    vocab = int(geom[geom.index("--vocab") + 1])
    np.save(w, np.random.default_rng(0).integers(0, vocab, size=(nwin, seqlen)).astype(np.int32))
    ins = subprocess.run([cloq, "inspect", m, "--calib-tokens", w, "--threads", "2"] + qopts,
                         capture_output=True, text=True).stdout
    g = re.search(r"at the (\d+) GFLOP/s sgemm rate", ins)
    peak = float(g.group(1)) if g else float("nan")
    out = os.path.join(tmp, name + ".out")
    t0 = time.monotonic()
    subprocess.run([cloq, "convert", m, "-o", out, "--calib-tokens", w, "--threads", "2", "--no-baselines",
                    "--quiet"] + qopts, check=True)
    wall = time.monotonic() - t0
    with open(os.path.join(out, "report.json")) as f:
        r = json.load(f)
    shutil.rmtree(out, ignore_errors=True)
    return peak, wall, r


def method_flops(g, rank):
    """The quantize and solve stages' own arithmetic at the bench's settings (GPTQ, one-shot CLoQ,
    randomized SVD, no baselines), from the layer geometry in report.json, counted as the code
    runs it: per linear GPTQ's column updates out*in^2, CLoQ's M = R dW^T and the error
    denominator R W^T (two triangular products, out*in^2 each), the randomized SVD's sketch, 4
    power iterations and projection 20*in*out*l (l = rank + 64); per group GPTQ's factor of H^-1
    (Cholesky + inverse, 2/3 n^3) and the solve's Cholesky (1/3 n^3). g: hidden, intermediate,
    layers, q width, kv width."""
    h, inter, layers, qd, kvd = g
    lin = [(qd, h), (kvd, h), (kvd, h), (h, qd), (inter, h), (inter, h), (h, inter)]
    l = rank + 64
    per = sum(3.0 * o * i * i + 20.0 * i * o * l for o, i in lin)
    per += sum(float(n) ** 3 for n in (h, qd, h, inter))
    return layers * per


def show(name, geom, rank, peak, wall, r):
    st, wk = r["run_seconds"], r["work"]
    calib = wk["forward_flops"] + wk["gram_flops"]
    limit = calib / (peak * 1e9)
    cs = st["statistics"] + st["propagate"]
    print("%s: sgemm %.0f GFLOP/s (probed now); calibration work %.3g flop (forward %.3g + Gram %.3g), "
          "%.2f s at that rate" % (name, peak, calib, wk["forward_flops"], wk["gram_flops"], limit))
    print("  %-12s %9s" % ("stage", "seconds"))
    for k in ("read", "statistics", "quantize", "solve", "propagate", "write", "total"):
        print("  %-12s %9.2f" % (k, st[k]))
    print("  statistics + propagate %.2f s: %.0f%% of the flop limit; end to end (%.2f s wall) %.0f%%"
          % (cs, 100 * limit / cs, wall, 100 * limit / wall))
    mf = method_flops(geom, rank)
    print("  quantize + solve arithmetic %.3g flop (%.2f s at that rate): end to end cannot pass %.0f%% of "
          "the calibration limit; against all the arithmetic it is at %.0f%%"
          % (mf, mf / (peak * 1e9), 100 * calib / (calib + mf), 100 * (calib + mf) / (peak * 1e9) / wall))


def main(argv):
    build = argv[1] if len(argv) > 1 else "build"
    full = "--full" in argv
    cloq = os.path.abspath(os.path.join(build, "cloq"))
    mk = os.path.abspath(os.path.join(build, "tools", "mkmodel"))
    tmp = tempfile.mkdtemp(prefix="cloq_bench_calib.")
    try:
        a = job(cloq, mk, tmp, "a", ["--hidden", "512", "--intermediate", "1376", "--layers", "4", "--heads", "8",
                                     "--kv-heads", "8", "--vocab", "4096"], 64, 256,
                ["--bits", "2", "--group-size", "32", "--rank", "8"])
        show("(a) hidden 512, 4 layers, 64 x 256, INT2 g32 r8", (512, 1376, 4, 512, 512), 8, *a)
        if full:
            b = job(cloq, mk, tmp, "b", ["--preset", "llama2-7b", "--layers", "2", "--vocab", "4096"], 16, 2048,
                    ["--bits", "4", "--group-size", "128", "--rank", "64"])
            show("(b) Llama-2-7B geometry, 2 layers, 16 x 2048, INT4 g128 r64", (4096, 11008, 2, 4096, 4096), 64, *b)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
