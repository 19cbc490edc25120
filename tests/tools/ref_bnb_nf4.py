#!/usr/bin/python3
"""ref_bnb_nf4.py - bitsandbytes' NF4 4-bit quantization (and its double quantization of the
absmax) re-derived in numpy float32, an independent reference for cloq's C implementation.

Written from the semantics of bitsandbytes (bitsandbytes-foundation/bitsandbytes, main,
csrc/kernels.cu, csrc/ops.cu, CMakeLists.txt, bitsandbytes/functional.py and
bitsandbytes/backends/cuda/ops.py), i.e. what the CUDA build computes; not from cloq's C code.

What is modelled (GPU float32 arithmetic, reproduced op by op in numpy float32):

  4-bit (functional.quantize_4bit -> cuda kQuantizeBlockwise / kQuantizeBlockwiseSmall, NF4):
  - blocks of `blocksize` (default 64) consecutive elements of the flattened tensor; the last block
    may be short (ragged).
  - absmax[b] = max over the block of fabsf((float)x), float32, stored as float32 (absmax tensor).
  - inv = 1.0f / absmax[b] (a float reciprocal, not a division of each element), then each element
    is normalised as (float)x * inv (a float32 product) and mapped by a fixed decision tree with
    strict '>' comparisons against 15 float32 thresholds (the midpoints of adjacent NF4 values):
    code = number of thresholds t with x*inv > t; a value exactly on a threshold takes the lower
    code; NaN takes code 0.  The threshold literals (decimal prints of doubles that are exact
    float32 midpoints) are rounded straight to float32; four of them (k = 0, 8, 12, 14) would
    round the other way through double (--thr-literal double), which changes the code of one
    float32 product value per threshold.
  - bitsandbytes is built with nvcc --use_fast_math (-ftz=true, -prec-div=false): 1.0f/x becomes
    rcp.approx.ftz.f32 (about 1 ulp, not always correctly rounded) and subnormal float32 inputs and
    results of the kernels' float ops are flushed to zero.  This script uses the correctly rounded
    float32 reciprocal (--recip rn); codes that would change under a +-1 ulp reciprocal are counted
    as "rcp-fragile" (rare: a product within ~1 ulp of a threshold).  --recip rz|ru use the
    directed roundings instead.  Flush-to-zero is applied to the fast-math ops (abs/max, rcp, mul).
  - all-zero block: absmax = 0, inv = +inf, 0 * inf = NaN, so every element gets code 0 (NF4 -1.0)
    and dequantizes to -1.0 * 0 = -0.0 (sign bit set).  The same holds for a block whose largest
    magnitude is subnormal (flushed to 0).  With double quant such a block still gets codes 0,
    so it dequantizes to -absmaxdq (a small nonzero value, absmaxdq ~ 0 but not 0).
  - packing: two codes per byte, the even element (index 2j) in the HIGH nibble, the odd one
    (2j+1) in the low nibble; ceil(N/2) bytes.  For odd N the last byte's low nibble is the code of
    a zero pad element normalised by the last block's inv: 7 (0x?7) normally, 0 if that block's
    absmax is 0.
  4-bit dequant (functional.dequantize_4bit -> kDequantizeBlockwise, NF4):
  - out = NF4[code] * absmax[b] (float32 product, ftz), converted to the quantized tensor's dtype
    (QuantState.dtype = A.dtype): float32 as is, fp16 / bf16 round-to-nearest-even.
  double quant (quantize_4bit(compress_statistics=True)):
  - offset = absmax.mean() (a float32 torch reduction on the GPU: float32 accumulation in torch's
    tree order, then times float(1/n); not bit-reproducible here, see --offset-mode).
  - d = absmax - offset (float32), quantized by quantize_blockwise(d, blocksize=256) with the
    default code create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): 256-element
    blocks, absmax2 = max|d| per block, inv2 = 1.0f/absmax2, y = d * inv2, and the kernel's
    dQuantize<0>: a 7-step binary search over the sorted 256-entry map from index 127, then the
    nearer of the bracketing entries by float32 midpoints (upper+val)*0.5f / (lower+val)*0.5f,
    strict comparisons: an exact midpoint tie goes to the search's final pivot, which is always an
    even index.
  - dequant: absmaxdq = (dynmap[q] * absmax2[b//256]) + offset (float32; product in bnb's kernel,
    the add is a torch op), then the 4-bit dequant above uses absmaxdq.
  - dynamic map: per exponent i = 0..6, linspace(0.1, 1, 2**i + 1) in float32 (torch's CPU kernel:
    step = (1f - 0.1f) / (steps-1), first half start + step*k, second half end - step*(steps-1-k)),
    means of neighbours (b[k] + b[k+1]) / 2 in float32, times float32(10**(i-6)); both signs;
    plus 0 and 1.0; sorted.  The start+step*k of an x86 torch build is contracted to an FMA
    (matches published dumps of the table); --dynmap plain gives the unfused variant (differs in 42
    entries by 1 ulp).

Usage:
  ref_bnb_nf4.py --W FILE --dtype f32|bf16|f16 --n N [--blocksize 64] [--double-quant]
                 [--offset-mode exact|f32seq] [--offset-file F] [--recip rn|rz|ru]
                 [--dynmap fma|plain] [--thr-literal direct|double]
                 --out PREFIX [--against PREFIX2]
  ref_bnb_nf4.py --random N --seed S [--dtype bf16] [--blocksize 64] --out-w FILE
  ref_bnb_nf4.py --selftest
W is raw little-endian, flattened, float32 or uint16 bit patterns (bf16 / f16), N values.
Writes (raw little-endian):
  PREFIX.codes.u8    N NF4 code indices 0..15
  PREFIX.packed.u8   ceil(N/2) bytes, bitsandbytes' layout (even element in the high nibble)
  PREFIX.absmax.f32  nblocks float32 absmax (before double quant)
  with --double-quant: PREFIX.qabsmax.u8 (nblocks), PREFIX.absmax2.f32 (ceil(nblocks/256)),
  PREFIX.offset.f32 (1), PREFIX.absmaxdq.f32 (nblocks, the absmax dequantize_4bit uses)
  PREFIX.deq.bin     N dequantize_4bit outputs in the input dtype (float32 or uint16 bits)
--against PREFIX2 compares each of these that exists under PREFIX2 bit for bit, one line per file
(mismatch count, how many sit at rcp-fragile positions, first mismatch with both values), and
exits 1 on any mismatch (0 otherwise); the last line is a one-line summary.
--random writes N normal values * 0.02 with ~1 in 50 blocks set to exact zeros and ~1 in 2000
elements replaced by outliers of magnitude 0.2..2, in --dtype (bf16 by default, RNE from float32).
"""
import argparse
import math
import os
import sys

import numpy as np

F32 = np.float32
FLT_MIN = F32(2.0 ** -126)
FLT_MAX = np.finfo(np.float32).max

# NF4 value table (bitsandbytes csrc/kernels.cu nf4_dequantization_lut, identical to
# functional.get_4bit_type('nf4')), as float literals rounded to float32.
NF4_DEC = [
    "-1.0", "-0.6961928009986877", "-0.5250730514526367", "-0.39491748809814453",
    "-0.28444138169288635", "-0.18477343022823334", "-0.09105003625154495", "0.0",
    "0.07958029955625534", "0.16093020141124725", "0.24611230194568634", "0.33791524171829224",
    "0.44070982933044434", "0.5626170039176941", "0.7229568362236023", "1.0",
]
# decision-tree thresholds of dQuantizeNF4 (kernels.cu), sorted ascending; THR[k] separates
# code k (x <= THR[k]) from code k+1 (x > THR[k]).
THR_DEC = [
    "-0.8480964004993439", "-0.6106329262256622", "-0.4599952697753906", "-0.33967943489551544",
    "-0.23460740596055984", "-0.13791173323988914", "-0.045525018125772476", "0.03979014977812767",
    "0.1202552504837513", "0.2035212516784668", "0.2920137718319893", "0.3893125355243683",
    "0.5016634166240692", "0.6427869200706482", "0.8614784181118011",
]


def _dec_to_f32(s):
    """decimal string -> float32 rounded once, correctly (what strtof / a compiler does with a
    float literal carrying the f suffix), rather than through double."""
    from fractions import Fraction
    v = Fraction(s)
    f = F32(float(v))
    cands = [f, np.nextafter(f, F32(np.inf)), np.nextafter(f, F32(-np.inf))]
    return min(cands, key=lambda c: (abs(Fraction(float(c)) - v),
                                     int(np.array(c, dtype=F32).view(np.uint32)) & 1))


NF4 = np.array([_dec_to_f32(s) for s in NF4_DEC], dtype=F32)
# The threshold literals print doubles that are exact midpoints of two float32 values; four of
# them (k = 0, 8, 12, 14) round differently when the decimal goes straight to float32 (THR, the
# default: how a compiler reads a float literal) and when it goes through double first
# (THR_VIA_DOUBLE, --thr-literal double).  Only a product exactly equal to one float32 value per
# such threshold is affected.
THR = np.array([_dec_to_f32(s) for s in THR_DEC], dtype=F32)
THR_VIA_DOUBLE = np.array([float(s) for s in THR_DEC], dtype=F32)

DQ_BLOCKSIZE = 256  # nested blocksize used by quantize_4bit(compress_statistics=True)
VALID_BS = (32, 64, 128, 256, 512, 1024, 2048, 4096)


# ---------------------------------------------------------------------------------------------
# float32 helpers (GPU fast-math semantics)

def ftz(a):
    """flush float32 subnormals to a zero of the same sign (nvcc -ftz=true)."""
    a = np.asarray(a, dtype=F32)
    with np.errstate(invalid="ignore"):
        sub = np.abs(a) < FLT_MIN
    if not sub.any():
        return a
    return np.where(sub, np.copysign(F32(0), a), a).astype(F32)


def fmul(a, b):
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        return ftz(np.multiply(ftz(a), ftz(b), dtype=F32))


def rcp(a, mode="rn"):
    """1.0f / a: rn = correctly rounded (numpy IEEE division), rz / ru = directed roundings
    (one ulp towards zero / away from zero when inexact)."""
    a = ftz(a)
    with np.errstate(divide="ignore", over="ignore", under="ignore", invalid="ignore"):
        r = np.divide(F32(1), a, dtype=F32)
        if mode != "rn":
            exact = np.divide(1.0, a.astype(np.float64))
            fin = np.isfinite(r) & (r != 0)
            if mode == "rz":
                fix = fin & (np.abs(r.astype(np.float64)) > np.abs(exact))
                r = np.where(fix, np.nextafter(r, F32(0)), r).astype(F32)
            elif mode == "ru":
                fix = fin & (np.abs(r.astype(np.float64)) < np.abs(exact))
                r = np.where(fix, np.nextafter(r, np.copysign(F32(np.inf), r)), r).astype(F32)
            else:
                raise ValueError(mode)
    return ftz(r)


def f32_to_bf16_bits(x):
    """round-to-nearest-even float32 -> bf16 bit patterns; NaN -> 0x7FFF (CUDA's canonical)."""
    x = np.ascontiguousarray(x, dtype=F32)
    u = x.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FFF), r).astype(np.uint16)


def f32_to_f16_bits(x):
    x = np.asarray(x, dtype=F32)
    with np.errstate(over="ignore", invalid="ignore"):
        h = x.astype(np.float16).view(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FFF), h).astype(np.uint16)


def load_w(path, dtype, n):
    esz = 4 if dtype == "f32" else 2
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size != n * esz:
        raise SystemExit(f"ref_bnb_nf4: {path} has {raw.size} bytes, expected {n * esz} "
                         f"({n} x {dtype})")
    if dtype == "f32":
        return raw.view("<f4").astype(F32)
    bits = raw.view("<u2").astype(np.uint16)
    if dtype == "bf16":
        return (bits.astype(np.uint32) << 16).view(F32)
    return bits.view(np.float16).astype(F32)


def to_dtype_bits(x, dtype):
    if dtype == "f32":
        return np.ascontiguousarray(x, dtype=F32).view(np.uint32)
    if dtype == "bf16":
        return f32_to_bf16_bits(x)
    return f32_to_f16_bits(x)


# ---------------------------------------------------------------------------------------------
# building blocks

def block_absmax(x, bs):
    """per-block max of fabsf(x) as the kernels compute it: subnormals flushed, NaN ignored
    (fmaxf from -FLT_MAX), a ragged last block also sees its zero padding."""
    n = x.size
    nb = -(-n // bs)
    a = ftz(np.abs(x))
    pad = nb * bs - n
    if pad:
        a = np.concatenate([a, np.zeros(pad, dtype=F32)])  # zero padding (T)0 of the loader
    a = a.reshape(nb, bs)
    m = np.fmax.reduce(a, axis=1, initial=-FLT_MAX).astype(F32)
    return ftz(m)


def nf4_tree(p, thr=None):
    """dQuantizeNF4's decision tree (kernels.cu), written as nested selections."""
    p = np.asarray(p, dtype=F32)
    T = THR if thr is None else thr
    with np.errstate(invalid="ignore"):
        g = lambda k: p > T[k]
        hi = np.where(g(11),
                      np.where(g(13), np.where(g(14), 15, 14), np.where(g(12), 13, 12)),
                      np.where(g(9), np.where(g(10), 11, 10), np.where(g(8), 9, 8)))
        lo = np.where(g(3),
                      np.where(g(5), np.where(g(6), 7, 6), np.where(g(4), 5, 4)),
                      np.where(g(1), np.where(g(2), 3, 2), np.where(g(0), 1, 0)))
        return np.where(g(7), hi, lo).astype(np.uint8)


def nf4_codes(x, absmax, bs, recip="rn", delta=0, thr=None):
    """codes of x (float32) for the given per-block absmax; delta = +-1 moves the reciprocal by
    one ulp (used to find rcp-fragile elements)."""
    n = x.size
    r = rcp(absmax, recip)
    if delta:
        r = ftz(np.nextafter(r, F32(np.inf) if delta > 0 else F32(-np.inf)).astype(F32))
        # keep inf / 0 as they are (a reciprocal of 0 is inf whatever the rounding)
        base = rcp(absmax, recip)
        r = np.where(np.isfinite(base) & (base != 0), r, base).astype(F32)
    rb = np.repeat(r, bs)[:n]
    return nf4_tree(fmul(x, rb), thr), r


def pack_codes(codes, r_last, thr=None):
    n = codes.size
    c = codes
    if n % 2:
        padcode = nf4_tree(fmul(np.array([0.0], dtype=F32), np.array([r_last], dtype=F32)), thr)
        c = np.concatenate([codes, padcode])
    c = c.reshape(-1, 2)
    return ((c[:, 0] << 4) | c[:, 1]).astype(np.uint8)


def linspace_f32(start, end, steps, fused):
    """torch.linspace(start, end, steps, dtype=float32) as torch's CPU kernel computes it."""
    s, e = F32(start), F32(end)
    if steps == 1:
        return np.array([s], dtype=F32)
    step = F32(F32(e - s) / F32(steps - 1))
    half = steps // 2
    out = np.empty(steps, dtype=F32)
    for k in range(steps):
        if k < half:
            if fused:  # step*k is exact in float64, as is the sum: one rounding, an FMA
                out[k] = F32(float(s) + float(step) * k)
            else:
                out[k] = F32(s + F32(step * F32(k)))
        else:
            j = steps - k - 1
            if fused:
                out[k] = F32(float(e) - float(step) * j)
            else:
                out[k] = F32(e - F32(step * F32(j)))
    return out


def dynamic_map(fused=True, signed=True, max_exponent_bits=7, total_bits=8):
    """functional.create_dynamic_map (defaults: signed, 7 exponent bits, 8 bits) in float32."""
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        items = (2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed
                 else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        b = linspace_f32(0.1, 1.0, items, fused)
        means = ((b[:-1] + b[1:]).astype(F32) / F32(2.0)).astype(F32)
        scale = F32(10 ** (-(max_exponent_bits - 1) + i))
        data += list((scale * means).astype(F32))
        if signed:
            data += list((F32(-scale) * means).astype(F32))
    if additional_items > 0:
        b = linspace_f32(0.1, 1.0, additional_items + 1, fused)
        means = ((b[:-1] + b[1:]).astype(F32) / F32(2.0)).astype(F32)
        scale = F32(10 ** (-(max_exponent_bits - 1) + i))
        data += list((scale * means).astype(F32))
        if signed:
            data += list((F32(-scale) * means).astype(F32))
    data.append(F32(0))
    data.append(F32(1.0))
    assert len(data) == 2 ** total_bits
    data += [F32(0)] * (256 - len(data))
    return np.sort(np.array(data, dtype=F32))


def dquantize8(y, code):
    """kernels.cu dQuantize<0> (not stochastic), vectorised."""
    y = np.asarray(y, dtype=F32)
    n = y.size
    pivot = np.full(n, 127, dtype=np.int64)
    upper_p = np.full(n, 255, dtype=np.int64)
    lower_p = np.zeros(n, dtype=np.int64)
    lower = np.full(n, F32(-1.0), dtype=F32)
    upper = np.full(n, F32(1.0), dtype=F32)
    val = code[pivot]
    i = 64
    with np.errstate(invalid="ignore"):
        while i > 0:
            gt = y > val
            lower_p = np.where(gt, pivot, lower_p)
            lower = np.where(gt, val, lower).astype(F32)
            upper_p = np.where(gt, upper_p, pivot)
            upper = np.where(gt, upper, val).astype(F32)
            pivot = np.where(gt, pivot + i, pivot - i)
            val = code[pivot]
            i >>= 1
        upper = np.where(upper_p == 255, code[255], upper).astype(F32)
        lower = np.where(lower_p == 0, code[0], lower).astype(F32)
        gt = y > val
        mid_up = ftz(ftz(upper + val) * F32(0.5))
        mid_lo = ftz(ftz(lower + val) * F32(0.5))
        q = np.where(gt,
                     np.where(y > mid_up, upper_p, pivot),
                     np.where(y < mid_lo, lower_p, pivot))
    return q.astype(np.uint8)


def mean_offset(absmax, mode):
    n = absmax.size
    if mode == "exact":
        return F32(math.fsum(float(v) for v in absmax) / n)
    if mode == "f32seq":
        s = F32(0)
        for v in absmax:
            s = F32(s + v)
        factor = F32(F32(1.0) / F32(n))
        return F32(s * factor)
    raise ValueError(mode)


# ---------------------------------------------------------------------------------------------

def reference(x, dtype, bs=64, double_quant=False, offset_mode="exact", offset_value=None,
              recip="rn", dynmap="fma", thr_literal="direct"):
    """returns a dict of arrays keyed by file suffix, plus a few diagnostics."""
    if bs not in VALID_BS:
        raise SystemExit(f"ref_bnb_nf4: blocksize {bs} not one of {VALID_BS}")
    x = np.asarray(x, dtype=F32)
    n = x.size
    absmax = block_absmax(x, bs)
    thr, thr_alt = (THR, THR_VIA_DOUBLE) if thr_literal == "direct" else (THR_VIA_DOUBLE, THR)
    codes, r = nf4_codes(x, absmax, bs, recip, 0, thr)
    c_up, _ = nf4_codes(x, absmax, bs, recip, +1, thr)
    c_dn, _ = nf4_codes(x, absmax, bs, recip, -1, thr)
    c_alt, _ = nf4_codes(x, absmax, bs, recip, 0, thr_alt)
    # positions whose code depends on the GPU's approximate reciprocal or on how the threshold
    # literals are rounded
    fragile = (c_up != codes) | (c_dn != codes) | (c_alt != codes)
    out = {
        "codes.u8": codes,
        "packed.u8": pack_codes(codes, r[-1], thr),
        "absmax.f32": absmax,
    }
    diag = {"fragile": fragile, "fragile8": None}
    scale = absmax
    if double_quant:
        code8 = dynamic_map(fused=(dynmap == "fma"))
        offset = F32(offset_value) if offset_value is not None else mean_offset(absmax, offset_mode)
        d = (absmax - offset).astype(F32)
        absmax2 = block_absmax(d, DQ_BLOCKSIZE)
        r2 = rcp(absmax2, recip)
        nb = absmax.size
        rb2 = np.repeat(r2, DQ_BLOCKSIZE)[:nb]
        q = dquantize8(fmul(d, rb2), code8)
        fr8 = np.zeros(nb, dtype=bool)
        for dl in (+1, -1):
            rr = ftz(np.nextafter(r2, F32(np.inf) if dl > 0 else F32(-np.inf)).astype(F32))
            rr = np.where(np.isfinite(r2) & (r2 != 0), rr, r2).astype(F32)
            fr8 |= dquantize8(fmul(d, np.repeat(rr, DQ_BLOCKSIZE)[:nb]), code8) != q
        diag["fragile8"] = fr8
        dq = fmul(code8[q], np.repeat(absmax2, DQ_BLOCKSIZE)[:nb])
        absmaxdq = (dq + offset).astype(F32)
        out.update({
            "qabsmax.u8": q,
            "absmax2.f32": absmax2,
            "offset.f32": np.array([offset], dtype=F32),
            "absmaxdq.f32": absmaxdq,
        })
        scale = absmaxdq
    deq = fmul(NF4[codes], np.repeat(scale, bs)[:n])
    out["deq.bin"] = to_dtype_bits(deq, dtype)
    return out, diag


FILES = ["codes.u8", "packed.u8", "absmax.f32", "qabsmax.u8", "absmax2.f32", "offset.f32",
         "absmaxdq.f32", "deq.bin"]


def write_outputs(prefix, out):
    for suffix in FILES:
        if suffix in out:
            a = out[suffix]
            if a.dtype == F32:
                a = a.astype("<f4")
            elif a.dtype == np.uint16:
                a = a.astype("<u2")
            elif a.dtype == np.uint32:
                a = a.astype("<u4")
            a.tofile(f"{prefix}.{suffix}")


def _fmt(v, kind):
    if kind == "f32":
        return f"{np.uint32(v).view(F32)!r}(0x{int(v):08x})"
    if kind == "u16":
        return f"0x{int(v):04x}"
    return str(int(v))


def compare(out, diag, prefix2, dtype):
    nfiles = nbad = 0
    frag = diag["fragile"]
    for suffix in FILES:
        path = f"{prefix2}.{suffix}"
        if not os.path.exists(path):
            continue
        nfiles += 1
        if suffix not in out:
            print(f"{suffix}: present under {prefix2} but not produced by the reference "
                  f"(missing --double-quant?)")
            nbad += 1
            continue
        ref = out[suffix]
        if suffix.endswith(".u8"):
            kind, got = "u8", np.fromfile(path, dtype=np.uint8)
            refv = ref.astype(np.uint8)
        elif suffix.endswith(".f32") or (suffix == "deq.bin" and dtype == "f32"):
            kind, got = "f32", np.fromfile(path, dtype="<u4")
            refv = np.ascontiguousarray(ref).view(np.uint32) if ref.dtype == F32 else ref
        else:
            kind, got = "u16", np.fromfile(path, dtype="<u2")
            refv = ref
        if got.size != refv.size:
            print(f"{suffix}: size mismatch: {got.size} elements, reference has {refv.size}")
            nbad += 1
            continue
        bad = np.nonzero(got != refv)[0]
        extra = ""
        if bad.size and suffix in ("codes.u8", "deq.bin"):
            extra = f" ({int(frag[bad].sum())} at rcp-fragile positions)"
        elif bad.size and suffix == "packed.u8":
            fb = frag[np.minimum(2 * bad, frag.size - 1)] | frag[np.minimum(2 * bad + 1, frag.size - 1)]
            extra = f" ({int(fb.sum())} at rcp-fragile positions)"
        elif bad.size and suffix == "qabsmax.u8" and diag["fragile8"] is not None:
            extra = f" ({int(diag['fragile8'][bad].sum())} at rcp-fragile positions)"
        if bad.size:
            i = int(bad[0])
            ulp = ""
            if kind == "f32":
                a, b = int(refv[i]), int(got[i])
                if (a >> 31) == (b >> 31):
                    ulp = f", {abs(a - b)} ulp"
            print(f"{suffix}: {bad.size} mismatches of {refv.size}{extra}; first at {i}: "
                  f"ref {_fmt(refv[i], kind)} got {_fmt(got[i], kind)}{ulp}")
            nbad += 1
        else:
            print(f"{suffix}: 0 mismatches of {refv.size}")
    if nfiles == 0:
        print(f"ref_bnb_nf4: FAIL: no output files found under {prefix2}")
        return 1
    status = "OK" if nbad == 0 else "FAIL"
    print(f"ref_bnb_nf4: {status}: {nfiles} files compared, {nbad} with mismatches")
    return 0 if nbad == 0 else 1


def make_random(n, seed, dtype, bs):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(n).astype(F32) * F32(0.02)).astype(F32)
    nb = -(-n // bs)
    nzero = max(1, nb // 50)
    for b in rng.choice(nb, size=min(nzero, nb), replace=False):
        w[b * bs:(b + 1) * bs] = 0
    nout = max(1, n // 2000)
    idx = rng.choice(n, size=min(nout, n), replace=False)
    w[idx] = (rng.choice([-1.0, 1.0], size=idx.size) * rng.uniform(0.2, 2.0, size=idx.size)).astype(F32)
    return to_dtype_bits(w, dtype)


# ---------------------------------------------------------------------------------------------
# self test

def selftest():
    passed = failed = 0

    def check(name, cond):
        nonlocal passed, failed
        if cond:
            passed += 1
        else:
            failed += 1
            print(f"selftest FAIL: {name}")

    # literals rounded once, and thresholds are the midpoints of the table
    check("nf4 literals", all(_dec_to_f32(s) == v for s, v in zip(NF4_DEC, NF4)))
    check("thr literals", all(_dec_to_f32(s) == v for s, v in zip(THR_DEC, THR)))
    mids = [(float(NF4_DEC[k]) + float(NF4_DEC[k + 1])) / 2 for k in range(15)]
    check("thr are midpoints", all(abs(m - float(t)) < 1e-7 for m, t in zip(mids, THR)))
    # tree == count of thresholds passed
    probe = np.concatenate([THR, np.nextafter(THR, F32(np.inf)), np.nextafter(THR, F32(-np.inf)),
                            NF4, np.linspace(-1.2, 1.2, 20001, dtype=F32)]).astype(F32)
    cnt = (probe[:, None] > THR[None, :]).sum(axis=1)
    check("tree == count", np.array_equal(nf4_tree(probe), cnt.astype(np.uint8)))
    check("nan -> 0", nf4_tree(np.array([np.nan], dtype=F32))[0] == 0)

    # block 0: the 16 code points (absmax 1.0 -> inv exactly 1) x4
    # block 1: thresholds exactly (-> lower code) and one ulp above (-> upper code), plus 1.0
    # block 2: all zero; block 3: scaled by 2 (absmax 2 -> inv 0.5, exact)
    b0 = np.tile(NF4, 4)
    b1 = np.concatenate([THR, np.nextafter(THR, F32(np.inf)), [F32(1.0)] * 34]).astype(F32)
    b2 = np.zeros(64, dtype=F32)
    b3 = (np.tile(NF4, 4) * F32(2)).astype(F32)
    x = np.concatenate([b0, b1, b2, b3]).astype(F32)
    out, diag = reference(x, "f32", 64)
    c = out["codes.u8"]
    check("code points", np.array_equal(c[:64], np.tile(np.arange(16), 4)))
    check("at threshold -> lower", np.array_equal(c[64:79], np.arange(15)))
    check("1 ulp above -> upper", np.array_equal(c[79:94], np.arange(1, 16)))
    check("zero block codes 0", np.all(c[128:192] == 0))
    check("scaled block", np.array_equal(c[192:256], np.tile(np.arange(16), 4)))
    check("absmax", np.array_equal(out["absmax.f32"], np.array([1, 1, 0, 2], dtype=F32)))
    deq = out["deq.bin"].view(F32)
    check("zero block deq is -0.0", np.all(out["deq.bin"][128:192] == 0x80000000))
    check("deq code points", np.array_equal(deq[:64], np.tile(NF4, 4)))
    check("deq scaled", np.array_equal(deq[192:256], (np.tile(NF4, 4) * F32(2)).astype(F32)))
    check("packed hi=even", out["packed.u8"][0] == 0x01 and out["packed.u8"][7] == 0xEF)
    check("zero block packed", np.all(out["packed.u8"][64:96] == 0))
    check("fragile only at thresholds", not diag["fragile"][:64].any()
          and not diag["fragile"][94:].any() and diag["fragile"][64:79].all())

    # exact threshold product via a non-trivial reciprocal: absmax a, x = t * a such that
    # fl(x * fl(1/a)) lands on t -> lower code; the neighbour above lands above
    a = F32(0.0173)
    ra = rcp(np.array([a], dtype=F32))[0]
    for k in (3, 9, 14):
        t = THR[k]
        xs = np.array([t / ra], dtype=F32)  # candidate, then search nearby for an exact hit
        hit = None
        for off in range(-4, 5):
            cand = xs[0]
            for _ in range(abs(off)):
                cand = np.nextafter(cand, F32(np.inf) if off > 0 else F32(-np.inf))
            if F32(cand * ra) == t:
                hit = cand
                break
        check(f"found a product on threshold {k}", hit is not None)
        if hit is not None:
            blk = np.full(64, F32(0.001), dtype=F32)
            blk[0] = a
            blk[1] = hit
            o, _ = reference(blk, "f32", 64)
            check(f"product on threshold {k}", o["codes.u8"][1] == k)

    # the four thresholds whose literal rounds differently through double
    amb = [k for k in range(15) if THR[k] != THR_VIA_DOUBLE[k]]
    check("ambiguous thresholds", amb == [0, 8, 12, 14])
    # the larger of the two roundings is the one float32 product they classify differently
    xa = np.concatenate([np.maximum(THR, THR_VIA_DOUBLE)[amb], [F32(1.0)]]).astype(F32)
    oa, da = reference(xa, "f32", 64)
    ob2, _ = reference(xa, "f32", 64, thr_literal="double")
    check("direct literal", list(oa["codes.u8"][:4]) == [1, 8, 13, 15])
    check("via-double literal", list(ob2["codes.u8"][:4]) == [0, 9, 12, 14])
    check("ambiguous are fragile", bool(da["fragile"][:4].all()) and not da["fragile"][4])

    # ragged last block and odd N: pad nibble is 7, or 0 for an all-zero last block
    x5 = np.array([0.5, -0.25, 0.1, 1.0, -1.0], dtype=F32)
    o5, _ = reference(x5, "f32", 64)
    check("odd N packed size", o5["packed.u8"].size == 3)
    check("odd N pad nibble 7", (o5["packed.u8"][2] & 0x0F) == 7)
    check("odd N last hi", (o5["packed.u8"][2] >> 4) == o5["codes.u8"][4])
    x6 = np.concatenate([np.full(64, 0.3, dtype=F32), np.zeros(3, dtype=F32)])
    o6, _ = reference(x6, "f32", 64)
    check("zero ragged block pad nibble 0", o6["packed.u8"][-1] == 0x00)
    check("ragged absmax", np.array_equal(o6["absmax.f32"], np.array([0.3, 0], dtype=F32)))
    # subnormal-only block flushes to absmax 0
    x7 = np.full(64, F32(1e-39), dtype=F32)
    o7, _ = reference(x7, "f32", 64)
    check("subnormal block ftz", o7["absmax.f32"][0] == 0 and np.all(o7["codes.u8"] == 0))

    # bf16 / f16 output rounding
    check("bf16 rne", np.array_equal(
        f32_to_bf16_bits(np.array([1.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20],
                                  dtype=F32)),
        np.array([0x3F80, 0x3F80, 0x3F82, 0x3F81], dtype=np.uint16)))
    xb = np.array([0.3, -0.7, 0.01, 0.05], dtype=F32)
    ob, _ = reference(xb, "bf16", 64)
    exp_deq = fmul(NF4[ob["codes.u8"]], np.repeat(ob["absmax.f32"], 64)[:4])
    check("bf16 deq", np.array_equal(ob["deq.bin"], f32_to_bf16_bits(exp_deq)))
    oh, _ = reference(xb, "f16", 64)
    check("f16 deq", np.array_equal(oh["deq.bin"], exp_deq.astype(np.float16).view(np.uint16)))

    # dynamic map: size, order, symmetry, values of a published dump of the torch table
    dm = dynamic_map()
    check("dynmap size/sorted", dm.size == 256 and np.all(np.diff(dm) >= 0))
    check("dynmap ends", dm[0] == F32(-0.992968738079071) and dm[127] == 0 and dm[255] == 1)
    check("dynmap symmetric", np.array_equal(dm[:127], -dm[128:255][::-1]))
    known = {128: 5.500000384017767e-07, 137: 0.0003812500217463821, 162: 0.019843751564621925,
             182: 0.07609374821186066, 236: 0.7398437261581421, 234: 0.7117187976837158,
             208: 0.3460937440395355, 254: 0.992968738079071}
    check("dynmap fma values", all(dm[k] == F32(v) for k, v in known.items()))
    check("dynmap plain differs", int((dynamic_map(fused=False) != dm).sum()) == 42)

    # 8-bit search: exact entries map to themselves, midpoints tie to the even index
    check("dq8 exact", np.array_equal(dquantize8(dm, dm), np.arange(256)))
    mid = ((dm[:-1] + dm[1:]) * F32(0.5)).astype(F32)
    qm = dquantize8(mid, dm).astype(int)
    lo_i = np.arange(255)
    even = np.where(lo_i % 2 == 0, lo_i, lo_i + 1)
    ok = (qm == even) | (dm[lo_i] == dm[lo_i + 1])
    check("dq8 ties to even index", bool(np.all(ok)))
    check("dq8 -1 and 1", list(dquantize8(np.array([-1.0, 1.0], dtype=F32), dm)) == [0, 255])
    ys = np.linspace(-1, 1, 40001, dtype=F32)
    q = dquantize8(ys, dm)
    dist = np.abs(dm[q].astype(np.float64) - ys)
    best = np.min(np.abs(dm[None, :].astype(np.float64) - ys[:, None]), axis=1)
    # nearest entry, up to the float32 rounding of the midpoint itself
    check("dq8 nearest", bool(np.all(dist <= best + 1e-7)))

    # double quant round trip pieces
    rng = np.random.default_rng(1)
    xd = (rng.standard_normal(64 * 600).astype(F32) * F32(0.02)).astype(F32)
    xd[64 * 5:64 * 6] = 0
    od, dd = reference(xd, "f32", 64, double_quant=True)
    am, amdq = od["absmax.f32"], od["absmaxdq.f32"]
    off = od["offset.f32"][0]
    check("dq sizes", od["qabsmax.u8"].size == 600 and od["absmax2.f32"].size == 3)
    exact_mean = float(np.mean(am.astype(np.float64)))
    check("dq offset", abs(float(off) - exact_mean) <= float(np.spacing(F32(exact_mean))) / 2)
    a2 = od["absmax2.f32"]
    check("dq absmax2", np.array_equal(a2, np.array(
        [np.max(np.abs(am[i:i + 256] - off)) for i in range(0, 600, 256)], dtype=F32)))
    check("dq rel err", float(np.max(np.abs(amdq - am) / np.repeat(a2, 256)[:600])) < 0.03)
    check("dq deq uses absmaxdq", np.array_equal(
        od["deq.bin"].view(F32), fmul(NF4[od["codes.u8"]], np.repeat(amdq, 64))))

    # --against on itself and on a mutated copy
    import tempfile
    with tempfile.TemporaryDirectory() as td:
        p = os.path.join(td, "t")
        write_outputs(p, od)
        import contextlib
        import io
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc0 = compare(od, dd, p, "f32")
        check("against self", rc0 == 0)
        cb = np.fromfile(p + ".codes.u8", dtype=np.uint8)
        cb[10] ^= 1
        cb.tofile(p + ".codes.u8")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc1 = compare(od, dd, p, "f32")
        check("against mutated", rc1 == 1 and "codes.u8: 1 mismatches" in buf.getvalue())

    print(f"selftest: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--W")
    ap.add_argument("--dtype", choices=["f32", "bf16", "f16"], default=None)
    ap.add_argument("--n", type=int)
    ap.add_argument("--blocksize", type=int, default=64)
    ap.add_argument("--double-quant", action="store_true")
    ap.add_argument("--offset-mode", choices=["exact", "f32seq"], default="exact",
                    help="exact: mean correctly rounded to float32 (default); f32seq: sequential "
                         "float32 sum times float(1/n)")
    ap.add_argument("--offset-file", help="take the offset (1 float32) from this file instead")
    ap.add_argument("--recip", choices=["rn", "rz", "ru"], default="rn")
    ap.add_argument("--dynmap", choices=["fma", "plain"], default="fma")
    ap.add_argument("--thr-literal", choices=["direct", "double"], default="direct",
                    help="round the NF4 threshold literals straight to float32 (default) or "
                         "through double")
    ap.add_argument("--out")
    ap.add_argument("--against")
    ap.add_argument("--random", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-w")
    ap.add_argument("--selftest", action="store_true")
    args = ap.parse_args(argv)

    if args.selftest:
        return selftest()
    if args.random is not None:
        if not args.out_w:
            ap.error("--random needs --out-w")
        bits = make_random(args.random, args.seed, args.dtype or "bf16", args.blocksize)
        (bits.astype("<u4") if bits.dtype == np.uint32 else bits.astype("<u2")).tofile(args.out_w)
        return 0
    if not (args.W and args.n is not None and args.out and args.dtype):
        ap.error("need --W, --dtype, --n and --out (or --random / --selftest)")
    x = load_w(args.W, args.dtype, args.n)
    offset_value = None
    if args.offset_file:
        offset_value = np.fromfile(args.offset_file, dtype="<f4")[0]
    out, diag = reference(x, args.dtype, args.blocksize, args.double_quant, args.offset_mode,
                          offset_value, args.recip, args.dynmap, args.thr_literal)
    write_outputs(args.out, out)
    nfr = int(diag["fragile"].sum())
    if nfr:
        print(f"note: {nfr} of {args.n} codes would change under a +-1 ulp reciprocal "
              f"(rcp.approx on the GPU) or the other threshold-literal rounding")
    if diag["fragile8"] is not None and diag["fragile8"].any():
        print(f"note: {int(diag['fragile8'].sum())} qabsmax codes are rcp-fragile")
    if args.against:
        return compare(out, diag, args.against, args.dtype)
    print(f"ref_bnb_nf4: wrote {args.out}.* (n={args.n}, blocksize={args.blocksize}, "
          f"double_quant={args.double_quant})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
