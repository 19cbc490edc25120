#!/usr/bin/env python3
"""ref_gptq.py - AutoGPTQ's GPTQ.fasterquant in plain numpy float64, an independent reference.

Written from the semantics of AutoGPTQ's auto_gptq/quantization/gptq.py (fasterquant) and
quantizer.py (Quantizer.find_params / quantize), not from cloq's C code:

  - H is used as given (cloq's fixtures hold X^T X; AutoGPTQ accumulates 2/nsamples X^T X, a
    positive factor GPTQ is invariant to, since the damping is relative to mean(diag H)).
  - dead columns: diag(H) == 0 -> H[i, i] = 1 and W[:, i] = 0 (off-diagonals are left as they are).
  - damp = percdamp * mean(diag(H)) (after the dead-column fix) added to the diagonal.
  - U = chol(H^-1, upper) via cholesky -> inverse -> cholesky (float64 here, float32 in AutoGPTQ).
  - blocks of `block` columns [i1, i2); inside a block W1 (a copy) is updated column by column;
    the columns after the block get W[:, i2:] -= Err1 @ U[i1:i2, i2:] once the block is done.
  - group parameters (static_groups off, act_order off): at column i with i % gs == 0, find_params
    on W[:, i:i+gs] of the *global* W, i.e. the weights as they were at the start of the current
    block: the in-block updates of the columns before i (held in W1) are NOT seen. That is
    AutoGPTQ's (and the original GPTQ repository's) code; --groups current instead takes them from
    the fully updated weights (W1 and, past the block, W), which is what cloq does by default.
  - asymmetric min-max quantizer: xmin = min(min w, 0), xmax = max(max w, 0); both 0 -> -1, +1;
    scale = (xmax - xmin) / maxq, zero = round(-xmin / scale), q = clamp(round(w / scale) + zero,
    0, maxq), deq = scale (q - zero); round half to even (torch.round); maxq = 2^bits - 1.
    --fp16-scales rounds scale to fp16 before zero and q (cloq's default; AutoGPTQ does not).
    --f32-quantizer evaluates scale, zero, q in float32 as torch would on a float32 W.

Usage:
  ref_gptq.py --W W.f32 --H H.f64 --rows R --cols C --bits B --gs G [--damp 0.01] [--block 128]
              [--groups autogptq|current] [--fp16-scales] [--f32-quantizer] --out PREFIX
      writes PREFIX.q.u8 (R x C codes), PREFIX.scale.f64 and PREFIX.zero.i32 (R x ngroups),
      PREFIX.deq.f64 (R x C) and prints tr(E H E^T) / tr(W H W^T) (rel. calibrated error^2);
      with --against CPREFIX compares with tests/tools/gptq_dump's output (see compare()),
      exit status 1 when they differ beyond rounding ties
  ref_gptq.py --random SEED --rows R --cols C --ntok N --out DIR
      writes a random case DIR/W.f32 (R x C) and DIR/H.f64 (X^T X of a correlated X, N x C,
      with column 3 of X zero so that H has a dead column)
"""
import argparse
import os
import sys

import numpy as np


def fp16_round(x):
    return np.asarray(x, dtype=np.float64).astype(np.float16).astype(np.float64)


def find_params(x, maxq, fp16, f32):
    """x (rows, m): per-row scale and zero of AutoGPTQ's asymmetric Quantizer."""
    dt = np.float32 if f32 else np.float64
    x = x.astype(dt)
    xmin = np.minimum(x.min(axis=1), dt(0))
    xmax = np.maximum(x.max(axis=1), dt(0))
    both0 = (xmin == 0) & (xmax == 0)
    xmin = np.where(both0, dt(-1), xmin)
    xmax = np.where(both0, dt(1), xmax)
    scale = ((xmax - xmin) / dt(maxq)).astype(dt)
    # how near the fp16 rounding of the scale was to a tie, relative to the scale (inf without fp16)
    step = np.spacing(scale.astype(np.float16)).astype(np.float64)
    fmargin = tie_margin(scale / step) * step / scale if fp16 else np.full(scale.shape, np.inf)
    if fp16:
        scale = fp16_round(scale).astype(dt)
        scale = np.where(scale == 0, dt(2.0 ** -24), scale)
    zero = np.round(-xmin / scale)  # numpy rounds half to even, as torch.round
    zero = np.clip(zero, 0, maxq)  # only matters with an fp16 scale rounded at the edge
    return scale, zero.astype(dt), fmargin


def quantize(w, scale, zero, maxq, f32):
    dt = np.float32 if f32 else np.float64
    w = w.astype(dt)
    q = np.clip(np.round(w / scale) + zero, 0, maxq)
    return q.astype(np.int64), (scale * (q - zero)).astype(np.float64)


def tie_margin(x):
    """distance of x to the nearest rounding boundary k + 1/2 (0 = an exact tie)"""
    x = np.asarray(x, dtype=np.float64)
    return np.abs(np.abs(x - np.floor(x)) - 0.5)


def fasterquant(W, H, bits, gs, damp=0.01, block=128, groups="autogptq", fp16=False, f32=False,
                tie_tol=1e-4, scale_tie_tol=1e-6):
    """Returns codes, scales, zeros, deq and `margin` (rows, cols): how near the code at each
    column, and at a group's first column its zero point and fp16 scale, came to a rounding tie,
    in units of the tolerances (tie_tol quantization steps, scale_tie_tol relative to the scale):
    <= 1 means float32 arithmetic may legitimately round it the other way."""
    W = np.array(W, dtype=np.float64)
    H = np.array(H, dtype=np.float64)
    rows, cols = W.shape
    maxq = 2 ** bits - 1
    if gs <= 0 or gs > cols:
        gs = cols
    ng = (cols + gs - 1) // gs
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H[np.diag_indices(cols)] += damp * np.mean(np.diag(H))
    L = np.linalg.cholesky(H)
    Linv = np.linalg.inv(L)
    Hinv = Linv.T @ Linv
    U = np.linalg.cholesky(Hinv).T  # upper: Hinv = U^T U
    Q = np.zeros((rows, cols), dtype=np.int64)
    D = np.zeros((rows, cols))
    margin = np.full((rows, cols), np.inf)  # how near each code (and group zero) was to a tie
    scale = np.zeros((rows, ng))
    zero = np.zeros((rows, ng), dtype=np.int64)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1 = W[:, i1:i2].copy()
        Err1 = np.zeros((rows, i2 - i1))
        for i in range(i1, i2):
            if i % gs == 0:
                if groups == "autogptq":
                    src = W[:, i:i + gs]  # global W: as at the start of this block
                else:
                    # fully updated: the block's columns from W1, later ones with the
                    # updates of this block's columns done so far applied
                    later = W[:, i2:i + gs] - Err1[:, :i - i1] @ U[i1:i, i2:i + gs]
                    src = np.concatenate([W1[:, i - i1:], later], axis=1)[:, :gs]
                s, z, fmargin = find_params(src, maxq, fp16, f32)
                scale[:, i // gs] = s
                zero[:, i // gs] = z.astype(np.int64)
                xmin = np.minimum(src.min(axis=1), 0)
                margin[:, i] = np.minimum(np.where(xmin < 0, tie_margin(-xmin / s), np.inf) / tie_tol,
                                          fmargin / scale_tie_tol)
            g = i // gs
            s = scale[:, g]
            z = zero[:, g].astype(np.float64)
            if f32:
                s = s.astype(np.float32)
                z = z.astype(np.float32)
            w = W1[:, i - i1]
            q, dq = quantize(w, s, z, maxq, f32)
            margin[:, i] = np.minimum(margin[:, i], tie_margin(w / s) / tie_tol)
            Q[:, i] = q
            D[:, i] = dq
            d = U[i, i]
            err = (w - dq) / d
            W1[:, i - i1:] -= np.outer(err, U[i, i:i2])
            Err1[:, i - i1] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return Q, scale, zero, D, margin


def rel_err2(W, D, H):
    E = W - D
    return np.trace(E @ H @ E.T) / np.trace(W @ H @ W.T)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--W")
    ap.add_argument("--H")
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--cols", type=int, required=True)
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--gs", type=int, default=32)
    ap.add_argument("--damp", type=float, default=0.01)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--groups", choices=["autogptq", "current"], default="autogptq")
    ap.add_argument("--fp16-scales", action="store_true")
    ap.add_argument("--f32-quantizer", action="store_true")
    ap.add_argument("--random", type=int)
    ap.add_argument("--ntok", type=int, default=512)
    ap.add_argument("--out", required=True)
    ap.add_argument("--against", help="cloq's dump prefix (gptq_dump) to compare with")
    ap.add_argument("--tie-tol", type=float, default=1e-4)
    ap.add_argument("--scale-tie-tol", type=float, default=1e-6)
    a = ap.parse_args()
    if a.random is not None:
        rng = np.random.RandomState(a.random)
        os.makedirs(a.out, exist_ok=True)
        mix = rng.randn(a.cols, a.cols) / np.sqrt(a.cols) + np.eye(a.cols)
        X = (rng.randn(a.ntok, a.cols) * np.exp(rng.randn(a.cols))) @ mix
        X[:, min(3, a.cols - 1)] = 0.0
        X = X.astype(np.float32)
        Xd = X.astype(np.float64)
        (Xd.T @ Xd).astype("<f8").tofile(os.path.join(a.out, "H.f64"))
        W = (rng.randn(a.rows, a.cols) * 0.1 * np.exp(0.5 * rng.randn(a.rows, 1))).astype("<f4")
        W.tofile(os.path.join(a.out, "W.f32"))
        return 0
    W = np.fromfile(a.W, dtype="<f4").reshape(a.rows, a.cols)
    H = np.fromfile(a.H, dtype="<f8").reshape(a.cols, a.cols)
    Q, scale, zero, D, margin = fasterquant(W, H, a.bits, a.gs, a.damp, a.block, a.groups, a.fp16_scales,
                                            a.f32_quantizer, a.tie_tol, a.scale_tie_tol)
    Q.astype(np.uint8).tofile(a.out + ".q.u8")
    scale.astype("<f8").tofile(a.out + ".scale.f64")
    zero.astype("<i4").tofile(a.out + ".zero.i32")
    D.astype("<f8").tofile(a.out + ".deq.f64")
    print("rel_err2 %.9g" % rel_err2(W.astype(np.float64), D, H))
    if a.against:
        return compare(a, Q, scale, zero, margin)
    return 0


def compare(a, Q, scale, zero, margin):
    """Compare with cloq's dump (tests/tools/gptq_dump): codes and zero points exactly, scales to
    a relative 1e-4 (float32 vs float64 updates). The only difference allowed: a row whose first
    difference, in processing order, sits at a code (or a group's zero point) that the float64
    reference found within --tie-tol steps of a rounding tie; float32 arithmetic may round it the
    other way, and the row's later columns then legitimately diverge (with fp16 scales, a scale
    within --scale-tie-tol, relative, of an fp16 rounding tie counts as a tie too). At most 2% of
    the rows, or one row, so excused. Margins are printed in units of those tolerances."""
    rows, cols = Q.shape
    ng = scale.shape[1]
    gs = a.gs if 0 < a.gs < cols else cols
    cq = np.fromfile(a.against + ".q.u8", dtype=np.uint8).reshape(rows, cols).astype(np.int64)
    cs = np.fromfile(a.against + ".scale.f32", dtype="<f4").reshape(rows, ng).astype(np.float64)
    cz = np.fromfile(a.against + ".zero.i32", dtype="<i4").reshape(rows, ng).astype(np.int64)
    # per column: does anything of (code, and at a group start: scale, zero) differ
    bad = Q != cq
    gstart = np.arange(0, cols, gs)
    bad[:, gstart] |= (np.abs(cs - scale) > 1e-4 * scale) | (cz != zero)
    excused, fail = 0, 0
    for r in range(rows):
        js = np.nonzero(bad[r])[0]
        if js.size == 0:
            continue
        j = js[0]
        if margin[r, j] <= 1.0:
            excused += 1
            print("row %d: first difference at column %d, a rounding tie (margin %.2e): excused"
                  % (r, j, margin[r, j]))
        else:
            fail += 1
            g = j // gs
            print("row %d: first difference at column %d (margin %.2e): code ref %d cloq %d, "
                  "group %d scale ref %.9g cloq %.9g zero ref %d cloq %d"
                  % (r, j, margin[r, j], Q[r, j], cq[r, j], g, scale[r, g], cs[r, g],
                     zero[r, g], cz[r, g]))
    print("compare: %d rows, %d differ from a tie (excused), %d differ otherwise, %d codes differ"
          % (rows, excused, fail, int((Q != cq).sum())))
    return 0 if fail == 0 and excused <= max(1, 0.02 * rows) else 1


if __name__ == "__main__":
    sys.exit(main())
