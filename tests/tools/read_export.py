#!/usr/bin/python3
"""read_export.py - an independent reader of `cloq export` output, written from the published formats.

numpy only; nothing here shares code with cloq's C writer (src/export/cloq_export.c, quant/cloq_quant_pack.c)
or its C readers. It reads what a loader would read and checks the published rules strictly:

safetensors (huggingface/safetensors README, "Format"):
  8-byte little-endian u64 N; N bytes of UTF-8 JSON beginning with '{'; then the byte buffer.
  Header entries {"dtype", "shape", "data_offsets": [BEGIN, END]} relative to the buffer; the
  entries are contiguous (sorted by offset: each BEGIN is the previous END, the first is 0, the last
  END is the buffer length: no holes, no overlaps), END - BEGIN = prod(shape) * dtype size; no
  duplicate keys; "__metadata__" is a str->str map. cloq additionally promises: the header is padded
  with spaces (0x20) so that 8 + N is a multiple of 8 (at most 7 pad bytes), and
  "__metadata__" == {"format": "pt"}.
sharded (transformers' save_pretrained): model.safetensors.index.json =
  {"metadata": {"total_size": sum of tensor bytes}, "weight_map": {tensor: file}}; every file named
  exists; every tensor lies in exactly one file, the one the map names; files are
  STEM-0000i-of-0000N.safetensors. A directory holding both model.safetensors and the index is
  rejected: transformers would load model.safetensors and silently ignore the index.
GPTQ (AutoGPTQ / GPTQModel / transformers' GPTQ integration):
  config.json quantization_config {quant_method "gptq", bits, group_size, desc_act, sym,
  checkpoint_format "gptq" | "gptq_v2", modules_in_block_to_quantize}; quantize_config.json (what
  AutoGPTQ reads) agrees with it. Per quantized linear P:
    P.qweight int32 (in*bits/32, out): codes packed along the input dimension, 32/bits per word,
              lowest bits first; 3 bits: 32 codes in 3 words, codes 10 and 21 crossing word
              boundaries (AutoGPTQ QuantLinear.pack). Unpacked here the way AutoGPTQ's torch
              forward does (shift tables + the two fix-ups), not as a bit stream.
    P.qzeros  int32 (ngroups, out*bits/32): same packing along out; v1 ("gptq") stores zero - 1 and
              loaders decode (stored + 1) & (2^bits - 1); v2 ("gptq_v2") stores the zero itself.
    P.scales  float16 (ngroups, out);  P.g_idx int32 (in), each in [0, ngroups); with
              desc_act false, g_idx[i] must be i // group_size (exllama/marlin kernels assume it).
    W[o, i] = scales[g_idx[i], o] * (q[i, o] - zero[g_idx[i], o])   evaluated in float32.
  A linear not listed in modules_in_block_to_quantize must carry a dense P.weight (out, in).
  The linears of a decoder layer, by config.json's architecture (Geometry.linears):
    most families:  self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj
    Phi3ForCausalLM: self_attn.qkv_proj ((H + 2 KV) * head_dim, D; rows [q; k; v]),
                     self_attn.o_proj, mlp.gate_up_proj (2 I, D; rows [gate; up]), mlp.down_proj
  modules_in_block_to_quantize may name only those. Biases (P.bias (out,), float16 when P is
  quantized, else torch_dtype): Llama attention_bias -> q/k/v/o, mlp_bias -> gate/up/down; Qwen3,
  Gemma2/3 attention_bias -> q/k/v/o; Qwen2 q/k/v always (no o, no MLP; attention_bias false or
  mlp_bias true refused); Mistral, Phi3 none (Phi3 attention_bias/mlp_bias true refused).
  head_dim: Qwen2, Phi3 hidden / heads (a config head_dim must equal it).
PEFT LoRA adapter (peft LoraConfig / save_pretrained):
  adapter_config.json {peft_type "LORA", task_type "CAUSAL_LM", r, lora_alpha, target_modules,
  lora_dropout, bias "none"}; adapter_model.safetensors holds exactly
  base_model.model.<module>.lora_A.weight (r, in) and .lora_B.weight (out, r) for every module whose
  name matches a target (equal or ending in "." + target); effective W + (lora_alpha / r) B @ A.
  The modules are the architecture's decoder linears (Phi3: qkv_proj, o_proj, gate_up_proj,
  down_proj with the fused shapes); every target must match one of them.

Usage:
  read_export.py selftest                   packing known answers (AutoGPTQ's pack loop, by hand)
  read_export.py check DIR                  validate everything; print a summary
  read_export.py compare GPTQ_DIR DENSE_DIR GPTQ dequantized == the fp32 dense export, bitwise
  read_export.py same DIR_A DIR_B           the same tensors (bytes) and configs (e.g. sharded vs not)
  read_export.py ppl DIR --tokens F.npy [--no-lora] [--rows N] [--v1-only]   prints "perplexity X"
                                            --v1-only: read qzeros as a loader that knows only GPTQ
                                            v1 does (AutoGPTQ's kernels; transformers <= 4.48 with
                                            auto-gptq, whose GPTQConfig drops checkpoint_format):
                                            zero = (stored field) + 1 whatever checkpoint_format says,
                                            no check (AutoGPTQ QuantLinear.forward: mask, then + 1)
  read_export.py qlora-ppl MODEL_DIR ADAPTER_DIR --tokens F.npy [--double-quant] [--rows N]
                                            what a QLoRA user's GPU computes: the original checkpoint
                                            with every decoder linear (the architecture's: Phi3's
                                            fused ones whole) replaced by bitsandbytes' NF4
                                            (block 64) as tests/tools/ref_bnb_nf4.py models it, in
                                            the weight's own dtype, plus the PEFT adapter in
                                            ADAPTER_DIR (a 'cloq export --format peft-only')
  read_export.py loadable DIR...            exit 0 when each DIR has no config.json (nothing a
                                            loader would take) or everything the config needs is
                                            valid (same for adapter/); exit 1 when one has a
                                            config.json but bad files
Any violation: a message naming the file and tensor on stderr, exit 1.
"""

import json
import os
import re
import struct
import sys

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

try:
    import numpy as np  # noqa: E402
except ImportError:  # the e2e script skips (77) before getting here; be explicit anyway
    sys.stderr.write("read_export.py: numpy not available\n")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))


class FormatError(Exception):
    pass


def fail(msg):
    raise FormatError(msg)


# ---- safetensors ---------------------------------------------------------------------------------
# name -> (bytes per element, numpy dtype or None when numpy has no such type)
ST_DTYPES = {
    "BOOL": (1, "|b1"), "U8": (1, "|u1"), "I8": (1, "|i1"), "F8_E5M2": (1, None),
    "F8_E4M3": (1, None), "I16": (2, "<i2"), "U16": (2, "<u2"), "F16": (2, "<f2"),
    "BF16": (2, None), "I32": (4, "<i4"), "U32": (4, "<u4"), "F32": (4, "<f4"),
    "F64": (8, "<f8"), "I64": (8, "<i8"), "U64": (8, "<u8"),
}
MAX_HEADER = 100 * 1000 * 1000  # the reference implementation's limit


def _no_dup(path):
    def hook(pairs):
        d = {}
        for k, v in pairs:
            if k in d:
                fail("%s: duplicate JSON key %r" % (path, k))
            d[k] = v
        return d
    return hook


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


class Tensor:
    """One tensor of a safetensors file: dtype name, shape, raw little-endian bytes."""

    def __init__(self, file, name, dtype, shape, raw):
        self.file, self.name, self.dtype, self.shape, self.raw = file, name, dtype, tuple(shape), raw

    def array(self):
        """The values: integer types as they are, F16 as float16, BF16 widened to float32."""
        if self.dtype == "BF16":
            u = np.frombuffer(self.raw, dtype="<u2").astype(np.uint32) << 16
            return u.view(np.float32).reshape(self.shape)
        npdt = ST_DTYPES[self.dtype][1]
        if npdt is None:
            fail("%s: tensor %s: dtype %s not supported by this reader" % (self.file, self.name, self.dtype))
        return np.frombuffer(self.raw, dtype=npdt).reshape(self.shape)

    def f32(self):
        if self.dtype not in ("F16", "BF16", "F32"):
            fail("%s: tensor %s: dtype %s, expected a float type" % (self.file, self.name, self.dtype))
        return self.array().astype(np.float32)


def read_safetensors(path):
    """Read and validate one file. Returns {name: Tensor} in header order."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        fail("%s: %d bytes, shorter than the 8-byte header length" % (path, len(blob)))
    (n,) = struct.unpack_from("<Q", blob, 0)
    if n > MAX_HEADER:
        fail("%s: header length %d exceeds %d" % (path, n, MAX_HEADER))
    if 8 + n > len(blob):
        fail("%s: header length %d runs past the end of the file (%d bytes)" % (path, n, len(blob)))
    if (8 + n) % 8:
        fail("%s: 8 + header length %d is not a multiple of 8 (cloq pads the header)" % (path, n))
    try:
        text = blob[8:8 + n].decode("utf-8")
    except UnicodeDecodeError as e:
        fail("%s: header is not UTF-8 (byte %d)" % (path, 8 + e.start))
    if not text.startswith("{"):
        fail("%s: header does not begin with '{'" % path)
    body = text.rstrip(" ")
    if not body.endswith("}"):
        fail("%s: header: only spaces may follow the JSON object" % path)
    if len(text) - len(body) > 7:
        fail("%s: header padded with %d spaces, more than 8-byte alignment needs"
             % (path, len(text) - len(body)))
    try:
        hdr = json.loads(body, object_pairs_hook=_no_dup(path))
    except ValueError as e:
        fail("%s: header is not valid JSON: %s" % (path, e))
    if not isinstance(hdr, dict):
        fail("%s: header is not a JSON object" % path)
    meta = hdr.pop("__metadata__", None)
    if meta is None:
        fail("%s: no \"__metadata__\"" % path)
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        fail("%s: \"__metadata__\" is not a string-to-string map" % path)
    if meta.get("format") != "pt":
        fail("%s: \"__metadata__\" format is %r, want \"pt\"" % (path, meta.get("format")))
    base = 8 + n
    buflen = len(blob) - base
    spans = []
    out = {}
    for name, info in hdr.items():
        where = "%s: tensor %s" % (path, name)
        if not name:
            fail("%s: empty tensor name" % path)
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            fail("%s: entry must have exactly dtype, shape, data_offsets" % where)
        dt, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dt not in ST_DTYPES:
            fail("%s: unknown dtype %r" % (where, dt))
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            fail("%s: shape %r is not a list of non-negative integers" % (where, shape))
        if not isinstance(offs, list) or len(offs) != 2 or not all(_is_int(o) for o in offs):
            fail("%s: data_offsets %r is not [BEGIN, END]" % (where, offs))
        b, e = offs
        if not 0 <= b <= e <= buflen:
            fail("%s: data_offsets [%d, %d] outside the %d-byte buffer" % (where, b, e, buflen))
        nel = 1
        for d in shape:
            nel *= d
        if nel * ST_DTYPES[dt][0] != e - b:
            fail("%s: %s x %r = %d bytes but data_offsets span %d" % (where, dt, shape, nel * ST_DTYPES[dt][0], e - b))
        spans.append((b, e, name))
        out[name] = Tensor(path, name, dt, shape, blob[base + b:base + e])
    pos = 0
    for b, e, name in sorted(spans):
        if b != pos:
            fail("%s: tensor %s begins at buffer byte %d, expected %d (%s)"
                 % (path, name, b, pos, "hole" if b > pos else "overlap"))
        pos = e
    if pos != buflen:
        fail("%s: tensors cover %d bytes of a %d-byte buffer (trailing bytes at file offset %d)"
             % (path, pos, buflen, base + pos))
    return out


def read_weights(d, single, index):
    """Tensors of a directory: `single` or the sharded set named by `index`. Returns
    ({name: Tensor}, [files]). Applies the loader's precedence and the index rules."""
    sp, ip = os.path.join(d, single), os.path.join(d, index)
    stem = single[:-len(".safetensors")]
    pat = re.compile(r"^%s-(\d{5})-of-(\d{5})\.safetensors$" % re.escape(stem))
    strays = sorted(f for f in os.listdir(d) if pat.match(f))
    if os.path.exists(sp):
        if os.path.exists(ip):
            fail("%s: both %s and %s: a loader takes %s and ignores the index" % (d, single, index, single))
        if strays:
            fail("%s: shard files %s next to %s" % (d, strays, single))
        return read_safetensors(sp), [single]
    if not os.path.exists(ip):
        fail("%s: neither %s nor %s" % (d, single, index))
    with open(ip, "rb") as f:
        try:
            idx = json.loads(f.read().decode("utf-8"), object_pairs_hook=_no_dup(ip))
        except ValueError as e:
            fail("%s: not valid JSON: %s" % (ip, e))
    if not isinstance(idx, dict) or not isinstance(idx.get("weight_map"), dict):
        fail("%s: no \"weight_map\" object" % ip)
    md = idx.get("metadata")
    if not isinstance(md, dict) or not _is_int(md.get("total_size")):
        fail("%s: \"metadata\".\"total_size\" missing or not an integer" % ip)
    wm = idx["weight_map"]
    files = sorted(set(wm.values()))
    for fn in files:
        if not isinstance(fn, str) or "/" in fn or fn in (".", ".."):
            fail("%s: weight_map names %r, not a file in the directory" % (ip, fn))
        m = pat.match(fn)
        if not m or int(m.group(2)) != len(files):
            fail("%s: file name %s is not %s-0000i-of-%05d.safetensors" % (ip, fn, stem, len(files)))
        if not os.path.isfile(os.path.join(d, fn)):
            fail("%s: weight_map names %s, which does not exist" % (ip, fn))
    if sorted(int(pat.match(fn).group(1)) for fn in files) != list(range(1, len(files) + 1)):
        fail("%s: shard numbers are not 1..%d" % (ip, len(files)))
    if strays != files:
        fail("%s: shard files on disk %s are not the ones the index names %s" % (d, strays, files))
    out = {}
    total = 0
    for fn in files:
        for name, t in read_safetensors(os.path.join(d, fn)).items():
            if name in out:
                fail("%s: tensor %s is also in %s" % (fn, name, out[name].file))
            if wm.get(name) != fn:
                fail("%s: tensor %s is in %s but weight_map says %r" % (ip, name, fn, wm.get(name)))
            out[name] = t
            total += len(t.raw)
    for name in wm:
        if name not in out:
            fail("%s: weight_map names tensor %s, not in %s" % (ip, name, wm[name]))
    if md["total_size"] != total:
        fail("%s: metadata.total_size %d != %d bytes of tensors" % (ip, md["total_size"], total))
    return out, [index] + files


def read_json(path):
    with open(path, "rb") as f:
        try:
            return json.loads(f.read().decode("utf-8"), object_pairs_hook=_no_dup(path))
        except ValueError as e:
            fail("%s: not valid JSON: %s" % (path, e))


# ---- GPTQ packing --------------------------------------------------------------------------------
# AutoGPTQ qlinear (cuda_old / exllama torch fallback) shift tables for 3 bits: word 0 holds codes
# 0..9 and the low 2 bits of code 10; word 1 the top bit of code 10, codes 11..20, the low bit of
# code 21; word 2 the top 2 bits of code 21 and codes 22..31.
WF3 = np.array([[0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 0],
                [0, 1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31],
                [0, 2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 0]], dtype=np.int64)


def unpack_rows(packed, bits):
    """int32 words (R, C) packed along axis 0 -> codes (R * 32 / bits, C) int64."""
    w = np.asarray(packed).astype(np.int64) & 0xFFFFFFFF
    R, C = w.shape
    mask = (1 << bits) - 1
    if bits in (2, 4, 8):
        wf = np.arange(0, 32, bits, dtype=np.int64)
        v = (w[:, None, :] >> wf[None, :, None]) & mask
        return v.reshape(R * (32 // bits), C)
    if bits != 3:
        fail("unpack: %d bits has no GPTQ packing" % bits)
    if R % 3:
        fail("unpack: 3-bit rows %d not a multiple of 3" % R)
    w = w.reshape(R // 3, 3, 1, C)
    v = (w >> WF3[None, :, :, None]) & 7  # (R/3, 3, 12, C)
    v[:, 0, 10] = (v[:, 0, 10] & 0x3) | ((v[:, 1, 0] << 2) & 0x4)
    v[:, 1, 11] = (v[:, 1, 11] & 0x1) | ((v[:, 2, 0] << 1) & 0x6)
    v &= 7
    v = np.concatenate([v[:, 0, :11], v[:, 1, 1:12], v[:, 2, 1:11]], axis=1)  # (R/3, 32, C)
    return v.reshape(R // 3 * 32, C)


def autogptq_pack_rows(vals, bits):
    """AutoGPTQ QuantLinear.pack's loop, transcribed (uint32 arithmetic): codes (N, C) -> words."""
    vals = np.asarray(vals).astype(np.uint64)
    N, C = vals.shape
    q = np.zeros((N * bits // 32, C), dtype=np.uint64)
    i = row = 0
    M = np.uint64(0xFFFFFFFF)

    def sh(x, s):
        return (x << np.uint64(s)) & M

    if bits in (2, 4, 8):
        while row < q.shape[0]:
            for j in range(i, i + 32 // bits):
                q[row] |= sh(vals[j], bits * (j - i))
            i += 32 // bits
            row += 1
    else:
        while row < q.shape[0]:
            for j in range(i, i + 10):
                q[row] |= sh(vals[j], 3 * (j - i))
            i += 10
            q[row] |= sh(vals[i], 30)
            row += 1
            q[row] |= (vals[i] >> np.uint64(2)) & np.uint64(1)
            i += 1
            for j in range(i, i + 10):
                q[row] |= sh(vals[j], 3 * (j - i) + 1)
            i += 10
            q[row] |= sh(vals[i], 31)
            row += 1
            q[row] |= (vals[i] >> np.uint64(1)) & np.uint64(0x3)
            i += 1
            for j in range(i, i + 10):
                q[row] |= sh(vals[j], 3 * (j - i) + 2)
            i += 10
            row += 1
    return q.astype(np.uint32).view(np.int32)


def selftest():
    bad = []

    def col(vals):
        return np.array(vals, dtype=np.int64)[:, None]

    # hand-worked words
    cases = [
        (4, list(range(1, 9)), [0x87654321]),
        (2, [1, 2, 3, 0] + [0] * 11 + [3], [0xC0000039]),
        (8, [0x11, 0x22, 0x33, 0xFF], [0xFF332211]),
        # 3 bits: codes 0..9 = 1, code 10 = 7 (bits 30-31 of word 0, bit 0 of word 1),
        # code 21 = 6 (bit 31 of word 1 = 0, bits 0-1 of word 2 = 3), code 31 = 5 (bits 29-31)
        (3, [1] * 10 + [7] + [0] * 10 + [6] + [0] * 9 + [5], [0xC9249249, 0x00000001, 0xA0000003]),
    ]
    for bits, vals, words in cases:
        want = np.array(words, dtype=np.uint32).view(np.int32)[:, None]
        got_w = autogptq_pack_rows(col(vals), bits)
        if not np.array_equal(got_w, want):
            bad.append("pack %d bits: %s != %s" % (bits, [hex(x) for x in got_w[:, 0].view(np.uint32)], words))
        got_v = unpack_rows(want, bits)
        if not np.array_equal(got_v[:, 0], np.array(vals)):
            bad.append("unpack %d bits: %s != %s" % (bits, got_v[:, 0].tolist(), vals))
    rng = np.random.RandomState(0)
    for bits in (2, 3, 4, 8):
        v = rng.randint(0, 1 << bits, size=(96, 5))
        if not np.array_equal(unpack_rows(autogptq_pack_rows(v, bits), bits), v):
            bad.append("round trip %d bits" % bits)
    # v1 zero decoding: stored zero - 1, masked
    if not np.array_equal(((np.array([0, 2, 14]) + 1) & 15), [1, 3, 15]):
        bad.append("v1 zero decode")
    for b in bad:
        print("FAIL " + b)
    print("selftest %s" % ("FAIL" if bad else "ok"))
    return 1 if bad else 0


# ---- model geometry ------------------------------------------------------------------------------
# a decoder layer's linears: LINEARS for every family but Phi3 (PHI3_LINEARS: fused q/k/v, gate/up)
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
PHI3_LINEARS = ["self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"]
TORCH_DTYPE = {"float16": "F16", "bfloat16": "BF16", "float32": "F32"}


# architectures[0] -> the model_type transformers' Auto classes build it from
ARCH_MODEL_TYPE = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
                   "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3",
                   "Phi3ForCausalLM": "phi3",
                   "Gemma2ForCausalLM": "gemma2", "Gemma3ForCausalLM": "gemma3_text"}


class Geometry:
    def __init__(self, cfg, path):
        archs = cfg.get("architectures")
        mt = cfg.get("model_type")
        if archs is not None and (not isinstance(archs, list) or len(archs) != 1 or not isinstance(archs[0], str)):
            fail("%s: architectures %r is not a one-element list of names" % (path, archs))
        self.arch = archs[0] if archs else {v: k for k, v in ARCH_MODEL_TYPE.items()}.get(mt)
        if self.arch in ARCH_MODEL_TYPE and mt is not None and mt != ARCH_MODEL_TYPE[self.arch]:
            fail("%s: model_type %r but architectures %s (model_type %r): a loader builds the "
                 "model_type's class" % (path, mt, self.arch, ARCH_MODEL_TYPE[self.arch]))
        qwen3 = self.arch == "Qwen3ForCausalLM"
        qwen2 = self.arch == "Qwen2ForCausalLM"
        phi3 = self.arch == "Phi3ForCausalLM"
        gemma3 = self.arch == "Gemma3ForCausalLM"
        # Phi3Attention/Phi3MLP: fused qkv_proj and gate_up_proj
        self.linears = PHI3_LINEARS if phi3 else LINEARS
        # Qwen3, Gemma3: per-head q_norm/k_norm (head_dim,) (Qwen3Attention, Gemma3Attention)
        self.qk_norm = qwen3 or gemma3
        gemma2 = self.arch == "Gemma2ForCausalLM"
        # Gemma2, Gemma3: pre/post feed-forward norms (D,) besides input/post_attention
        # (Gemma2DecoderLayer, Gemma3DecoderLayer)
        self.ff_norms = gemma2 or gemma3
        gemma = gemma2 or gemma3
        try:
            self.D = cfg["hidden_size"]
            self.I = cfg["intermediate_size"]
            self.L = cfg["num_hidden_layers"]
            self.H = cfg["num_attention_heads"]
            # Qwen3Config defaults: num_key_value_heads 32, head_dim 128 (not hidden/heads);
            # Qwen2Config: num_key_value_heads 32; Phi3Config: num_key_value_heads = heads
            self.Hkv = cfg.get("num_key_value_heads", 32 if (qwen3 or qwen2) else None) or self.H
            if qwen2 or phi3:  # Qwen2Attention/Phi3Attention: hidden // heads (a key must agree)
                self.hd = self.D // self.H if _is_int(self.D) and _is_int(self.H) and self.H > 0 else None
                if self.hd is None or self.hd * self.H != self.D:
                    fail("%s: hidden_size %r is not a multiple of num_attention_heads %r" % (path, self.D, self.H))
                if "head_dim" in cfg and cfg["head_dim"] != self.hd:
                    fail("%s: head_dim %r != hidden_size / num_attention_heads = %d (%s)"
                         % (path, cfg["head_dim"], self.hd, self.arch))
            else:
                # Gemma2Config / Gemma3TextConfig: head_dim 256; num_key_value_heads: ref_llama requires it
                self.hd = cfg.get("head_dim", 128 if qwen3 else 256 if gemma else None) or self.D // self.H
            self.V = cfg["vocab_size"]
        except KeyError as e:
            fail("%s: missing %s" % (path, e))
        self.tied = bool(cfg.get("tie_word_embeddings", gemma))  # Gemma2Config/Gemma3TextConfig: True
        mistral = self.arch == "MistralForCausalLM"
        # the linears with a .bias
        if qwen2:  # Qwen2Attention: q/k/v bias=True, o_proj bias=False; Qwen2MLP: none
            if cfg.get("attention_bias", True) is not True or cfg.get("mlp_bias", False) is not False:
                fail("%s: attention_bias %r / mlp_bias %r: Qwen2 has q/k/v biases and nothing else "
                     "whatever the config says (ambiguous)" % (path, cfg.get("attention_bias"), cfg.get("mlp_bias")))
            self.biased = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}
        elif phi3:  # Phi3Attention/Phi3MLP: bias=False everywhere
            for k in ("attention_bias", "mlp_bias"):
                if cfg.get(k, False) is not False:
                    fail("%s: %s %r: Phi3's linears have no biases (ambiguous)" % (path, k, cfg[k]))
            self.biased = set()
        else:
            # MistralAttention/MistralMLP, Qwen3MLP, Gemma2MLP/Gemma3MLP have no bias whatever the config says
            attn_bias = bool(cfg.get("attention_bias", False)) and not mistral
            mlp_bias = bool(cfg.get("mlp_bias", False)) and not (qwen3 or mistral or gemma)
            self.biased = {lin for lin in self.linears if (attn_bias if lin.startswith("self_attn") else mlp_bias)}

    def shape(self, lin):
        """(out, in) of a linear."""
        q, kv = self.H * self.hd, self.Hkv * self.hd
        return {"self_attn.q_proj": (q, self.D), "self_attn.k_proj": (kv, self.D),
                "self_attn.v_proj": (kv, self.D), "self_attn.o_proj": (self.D, q),
                "mlp.gate_proj": (self.I, self.D), "mlp.up_proj": (self.I, self.D),
                "mlp.down_proj": (self.D, self.I),
                "self_attn.qkv_proj": (q + 2 * kv, self.D), "mlp.gate_up_proj": (2 * self.I, self.D)}[lin]

    def has_bias(self, lin):
        return lin in self.biased


def expect(t, name, dtypes, shape, where):
    x = t.get(name)
    if x is None:
        fail("%s: tensor %s missing" % (where, name))
    if x.dtype not in dtypes:
        fail("%s: tensor %s has dtype %s, want %s" % (x.file, name, x.dtype, "/".join(dtypes)))
    if x.shape != tuple(shape):
        fail("%s: tensor %s has shape %s, want %s" % (x.file, name, list(x.shape), list(shape)))
    return x


class Base:
    """A base model directory read as a loader would: weights (float32; quantized linears
    dequantized), the raw tensors, and what was found."""

    def __init__(self, d, v1_only=False):
        self.dir = d
        self.v1_only = v1_only
        cp = os.path.join(d, "config.json")
        self.cfg = read_json(cp)
        g = self.geom = Geometry(self.cfg, cp)
        self.tensors, self.files = read_weights(d, "model.safetensors", "model.safetensors.index.json")
        t = self.tensors
        fdt = TORCH_DTYPE.get(self.cfg.get("torch_dtype"))
        if fdt is None:
            fail("%s: torch_dtype %r is not float16/bfloat16/float32" % (cp, self.cfg.get("torch_dtype")))
        self.fdt = fdt
        qc = self.cfg.get("quantization_config")
        self.quant = set()
        self.zero_hist = {}
        self.fmt = None
        if qc is not None:
            self._read_qc(qc, cp)
        used = set()
        self.w = {}

        def dense(name, shape):
            x = expect(t, name, [fdt], shape, d)
            used.add(name)
            self.w[name] = x.f32()

        dense("model.embed_tokens.weight", (g.V, g.D))
        dense("model.norm.weight", (g.D,))
        if not g.tied:
            dense("lm_head.weight", (g.V, g.D))
        for l in range(g.L):
            p = "model.layers.%d." % l
            dense(p + "input_layernorm.weight", (g.D,))
            dense(p + "post_attention_layernorm.weight", (g.D,))
            if g.qk_norm:  # Qwen3 and Gemma3 only; anywhere else they are unexpected tensors below
                dense(p + "self_attn.q_norm.weight", (g.hd,))
                dense(p + "self_attn.k_norm.weight", (g.hd,))
            if g.ff_norms:  # Gemma2 and Gemma3 only; likewise
                dense(p + "pre_feedforward_layernorm.weight", (g.D,))
                dense(p + "post_feedforward_layernorm.weight", (g.D,))
            for lin in g.linears:
                o, i = g.shape(lin)
                P = p + lin
                if lin in self.quant:
                    if P + ".weight" in t:
                        fail("%s: quantized module %s also has a dense .weight" % (d, P))
                    self.w[P + ".weight"] = self._dequant(P, o, i, used)
                else:
                    for k in ("qweight", "qzeros", "scales", "g_idx"):
                        if "%s.%s" % (P, k) in t:
                            fail("%s: %s.%s present but %s is not in modules_in_block_to_quantize" % (d, P, k, lin))
                    dense(P + ".weight", (o, i))
                if g.has_bias(lin):
                    bdt = ["F16"] if lin in self.quant else [fdt]
                    expect(t, P + ".bias", bdt, (o,), d)
                    used.add(P + ".bias")
                    self.w[P + ".bias"] = t[P + ".bias"].f32()
        extra = sorted(set(t) - used)
        if extra:
            fail("%s: unexpected tensors %s (in %s)" % (d, extra[:5], t[extra[0]].file))

    def _read_qc(self, qc, cp):
        if not isinstance(qc, dict):
            fail("%s: quantization_config is not an object" % cp)
        if qc.get("quant_method") != "gptq":
            fail("%s: quantization_config.quant_method %r, want \"gptq\"" % (cp, qc.get("quant_method")))
        bits, gs = qc.get("bits"), qc.get("group_size")
        if bits not in (2, 3, 4, 8) or not _is_int(bits):
            fail("%s: quantization_config.bits %r not in 2/3/4/8" % (cp, bits))
        if not _is_int(gs) or not (gs == -1 or gs > 0):
            fail("%s: quantization_config.group_size %r" % (cp, gs))
        for k in ("desc_act", "sym"):
            if not isinstance(qc.get(k), bool):
                fail("%s: quantization_config.%s %r is not a boolean" % (cp, k, qc.get(k)))
        fmt = qc.get("checkpoint_format", "gptq")
        if fmt not in ("gptq", "gptq_v2"):
            fail("%s: quantization_config.checkpoint_format %r, want gptq or gptq_v2" % (cp, fmt))
        blk = qc.get("modules_in_block_to_quantize")
        if not isinstance(blk, list) or not all(isinstance(b, list) and all(isinstance(s, str) for s in b) for b in blk):
            fail("%s: modules_in_block_to_quantize is not a list of lists of names" % cp)
        flat = [s for b in blk for s in b]
        for s in flat:
            if s not in self.geom.linears:
                fail("%s: modules_in_block_to_quantize names %r, not a decoder-layer linear of %s (%s)"
                     % (cp, s, self.geom.arch, " ".join(self.geom.linears)))
        if len(set(flat)) != len(flat):
            fail("%s: modules_in_block_to_quantize lists a module twice" % cp)
        qp = os.path.join(self.dir, "quantize_config.json")
        if not os.path.exists(qp):
            fail("%s: missing (AutoGPTQ reads it)" % qp)
        qf = read_json(qp)
        for k in ("bits", "group_size", "desc_act", "sym"):
            if k not in qf:
                fail("%s: no %s" % (qp, k))
        for k, v in qf.items():
            if k in qc and qc[k] != v:
                fail("%s: %s = %r but config.json says %r" % (qp, k, v, qc[k]))
        if qf.get("checkpoint_format", "gptq") != fmt:
            fail("%s: checkpoint_format %r but config.json says %r" % (qp, qf.get("checkpoint_format"), fmt))
        self.bits, self.gs, self.desc_act, self.sym, self.fmt = bits, gs, qc["desc_act"], qc["sym"], fmt
        self.quant = set(flat)

    def _dequant(self, P, out, inp, used):
        bits, d, t = self.bits, self.dir, self.tensors
        if (inp * bits) % 32 or (out * bits) % 32:
            fail("%s: %s (%d out, %d in) cannot be packed at %d bits but is listed as quantized" % (d, P, out, inp, bits))
        gs = self.gs if self.gs > 0 else inp
        ng = -(-inp // gs)
        qw = expect(t, P + ".qweight", ["I32"], (inp * bits // 32, out), d)
        qz = expect(t, P + ".qzeros", ["I32"], (ng, out * bits // 32), d)
        sc = expect(t, P + ".scales", ["F16"], (ng, out), d)
        gi = expect(t, P + ".g_idx", ["I32"], (inp,), d)
        used.update(P + k for k in (".qweight", ".qzeros", ".scales", ".g_idx"))
        q = unpack_rows(qw.array(), bits)                 # (in, out)
        zs = unpack_rows(qz.array().T, bits).T            # (ng, out) as stored
        mask = (1 << bits) - 1
        if self.v1_only:  # a v1-only loader: every field + 1, checkpoint_format ignored
            z = zs + 1
        elif self.fmt == "gptq":
            if np.any(zs == mask):
                k = np.argwhere(zs == mask)[0]
                fail("%s: %s.qzeros group %d column %d stores %d: a v1 zero point of 0 wrapped around "
                     "(v1 cannot hold 0; AutoGPTQ's packer would corrupt the neighbours)" % (qz.file, P, k[0], k[1], mask))
            z = (zs + 1) & mask
        else:
            z = zs
        s = sc.array()
        if not np.all(np.isfinite(s)) or not np.all(s > 0):
            fail("%s: %s.scales has a non-positive or non-finite value" % (sc.file, P))
        g = gi.array().astype(np.int64)
        if g.min() < 0 or g.max() >= ng:
            fail("%s: %s.g_idx values outside [0, %d)" % (gi.file, P, ng))
        if not self.desc_act and not np.array_equal(g, np.arange(inp) // gs):
            fail("%s: %s.g_idx is not i // group_size but desc_act is false" % (gi.file, P))
        for v, c in zip(*np.unique(z, return_counts=True)):
            self.zero_hist[int(v)] = self.zero_hist.get(int(v), 0) + int(c)
        # (in, out): scales and zeros gathered per input row by g_idx; one float32 multiply
        W = s.astype(np.float32)[g, :] * (q - z[g, :]).astype(np.float32)
        return np.ascontiguousarray(W.T)


# Every field of peft's LoraConfig (with PeftConfig's) up to 0.13. PEFT builds the config with
# LoraConfig(**json): before huggingface/peft#2038 any other key is a TypeError ("got an unexpected
# keyword argument"), after it a warning; either way it is not the published format.
LORA_FIELDS = {
    "peft_type", "auto_mapping", "base_model_name_or_path", "revision", "task_type", "inference_mode",
    "r", "target_modules", "lora_alpha", "lora_dropout", "fan_in_fan_out", "bias", "use_rslora",
    "modules_to_save", "init_lora_weights", "layers_to_transform", "layers_pattern", "rank_pattern",
    "alpha_pattern", "megatron_config", "megatron_core", "loftq_config", "use_dora",
    "layer_replication", "runtime_config", "exclude_modules", "lora_bias", "eva_config",
}


class Adapter:
    def __init__(self, d, geom):
        self.dir = d
        cp = os.path.join(d, "adapter_config.json")
        c = self.cfg = read_json(cp)
        unknown = sorted(set(c) - LORA_FIELDS)
        if unknown:
            fail("%s: %s not LoraConfig fields (older PEFT raises TypeError on them)" % (cp, unknown))
        want = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "bias": "none"}
        for k, v in want.items():
            if c.get(k) != v:
                fail("%s: %s = %r, want %r" % (cp, k, c.get(k), v))
        r, alpha, drop = c.get("r"), c.get("lora_alpha"), c.get("lora_dropout")
        if not _is_int(r) or r < 1:
            fail("%s: r = %r is not a positive integer" % (cp, r))
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            fail("%s: lora_alpha = %r is not a positive number" % (cp, alpha))
        if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 <= drop < 1:
            fail("%s: lora_dropout = %r" % (cp, drop))
        for k in ("fan_in_fan_out", "use_rslora", "use_dora"):
            if c.get(k, False) is not False:
                fail("%s: %s = %r; this reader (and cloq) assume false" % (cp, k, c.get(k)))
        for k in ("modules_to_save", "layers_to_transform", "rank_pattern", "alpha_pattern"):
            if c.get(k):
                fail("%s: %s = %r is not supported here" % (cp, k, c.get(k)))
        tm = c.get("target_modules")
        if not isinstance(tm, list) or not tm or not all(isinstance(s, str) for s in tm):
            fail("%s: target_modules %r is not a list of names" % (cp, tm))
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.tensors, self.files = read_weights(d, "adapter_model.safetensors", "adapter_model.safetensors.index.json")
        t = self.tensors
        self.A, self.B = {}, {}
        used = set()
        matched = set()
        if geom is not None:
            mods = [("model.layers.%d.%s" % (l, lin), geom.shape(lin)) for l in range(geom.L) for lin in geom.linears]
        else:  # no base config (an interrupted export): the modules the tensor names say, shapes unknown
            pat = re.compile(r"^base_model\.model\.(model\.layers\.\d+\.(self_attn|mlp)\.[a-z_]+)\.lora_[AB]\.weight$")
            mods = sorted({(m.group(1), None) for m in map(pat.match, t) if m})
        for full, shape in mods:
            hit = [s for s in tm if full == s or full.endswith("." + s)]
            if not hit:
                continue
            matched.update(hit)
            ka = "base_model.model.%s.lora_A.weight" % full
            kb = "base_model.model.%s.lora_B.weight" % full
            o, i = shape if shape else (t[kb].shape[0] if kb in t else -1, t[ka].shape[1] if ka in t else -1)
            a = expect(t, ka, ["F32", "BF16", "F16"], (r, i), d)
            b = expect(t, kb, ["F32", "BF16", "F16"], (o, r), d)
            used.update((ka, kb))
            self.A[full], self.B[full] = a.f32(), b.f32()
        if set(tm) - matched:
            fail("%s: target_modules %s match no module" % (cp, sorted(set(tm) - matched)))
        extra = sorted(set(t) - used)
        if extra:
            fail("%s: unexpected tensors %s" % (d, extra[:5]))


def load(d, adapter=True, v1_only=False):
    b = Base(d, v1_only)
    a = None
    if adapter:
        ad = os.path.join(d, "adapter")
        if not os.path.exists(os.path.join(ad, "adapter_config.json")):
            fail("%s: no adapter/adapter_config.json" % d)
        a = Adapter(ad, b.geom)
    return b, a


def check_tmp(d):
    left = []
    for root, _, files in os.walk(d):
        left += [os.path.join(root, f) for f in files if ".tmp." in f]
    return left


def summary(b, a):
    g = b.geom
    print("files: %s" % " ".join(b.files))
    print("tensors: %d base, %d adapter" % (len(b.tensors), len(a.tensors) if a else 0))
    if b.fmt:
        print("checkpoint_format %s" % b.fmt)
        print("bits %d group_size %d desc_act %s sym %s" % (b.bits, b.gs, b.desc_act, b.sym))
        q = [lin for lin in g.linears if lin in b.quant]
        dn = [lin for lin in g.linears if lin not in b.quant]
        print("quantized linears: %d (%s)" % (len(q) * g.L, " ".join(q)))
        print("dense linears: %d (%s)" % (len(dn) * g.L, " ".join(dn)))
        zs = sorted(b.zero_hist)
        print("zero points: min %d max %d, %d groups with zero 0" % (zs[0], zs[-1], b.zero_hist.get(0, 0)))
    else:
        print("dense %s" % b.fdt)
    if a:
        print("adapter: r %d lora_alpha %g scaling %g, %d modules" % (a.r, a.alpha, a.scaling, len(a.A)))


# ---- comparisons ---------------------------------------------------------------------------------
def compare(gdir, ddir):
    """GPTQ export vs the dense fp32 export of the same job."""
    gb, ga = load(gdir)
    db, da = load(ddir)
    if gb.fmt is None:
        fail("%s: not a GPTQ checkpoint" % gdir)
    if db.fmt is not None or db.fdt != "F32":
        fail("%s: not a dense float32 export" % ddir)
    for k in set(gb.cfg) | set(db.cfg):
        if k in ("torch_dtype", "quantization_config"):
            continue
        if gb.cfg.get(k) != db.cfg.get(k):
            fail("config.json differs at %s: %r vs %r" % (k, gb.cfg.get(k), db.cfg.get(k)))
    if set(gb.w) != set(db.w):
        fail("weights differ in names: %s" % sorted(set(gb.w) ^ set(db.w))[:5])
    nq = nd = 0
    for name in sorted(db.w):
        x, y = gb.w[name], db.w[name]
        quantized = name.endswith(".weight") and name.split(".", 3)[-1][:-len(".weight")] in gb.quant
        if quantized:
            if not np.array_equal(x.view(np.uint32), y.view(np.uint32)):
                k = np.argwhere(x.view(np.uint32) != y.view(np.uint32))[0]
                fail("%s: GPTQ dequantized %r != dense export %r at %s" % (name, float(x[tuple(k)]), float(y[tuple(k)]), k.tolist()))
            nq += 1
        else:
            raw = gb.tensors[name]
            if raw.dtype == "F16":
                want = y.astype(np.float16).view(np.uint16)
                got = np.frombuffer(raw.raw, dtype="<u2").reshape(raw.shape)
            elif raw.dtype == "BF16":  # round to nearest even on the top 16 bits
                u = y.view(np.uint32).astype(np.uint64)
                want = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
                got = np.frombuffer(raw.raw, dtype="<u2").reshape(raw.shape)
            else:
                want, got = y.view(np.uint32), x.view(np.uint32)
            if not np.array_equal(got, want):
                k = np.argwhere(got != want)[0]
                fail("%s: %s value %r is not the %s rounding of the dense export's %r" % (
                    name, raw.dtype, float(x[tuple(k)]), raw.dtype, float(y[tuple(k)])))
            nd += 1
    same_adapter(ga, da)
    print("compare ok: %d quantized linears bitwise equal, %d dense tensors equal to %s rounding, "
          "adapter identical (%d tensors)" % (nq, nd, gb.fdt, len(ga.tensors)))


def same_adapter(x, y):
    if x.cfg.get("r") != y.cfg.get("r") or x.cfg.get("lora_alpha") != y.cfg.get("lora_alpha") or \
       x.cfg.get("target_modules") != y.cfg.get("target_modules"):
        fail("adapter configs differ: %s vs %s" % (x.dir, y.dir))
    if set(x.tensors) != set(y.tensors):
        fail("adapters differ in tensor names")
    for k in x.tensors:
        a, b = x.tensors[k], y.tensors[k]
        if a.dtype != b.dtype or a.shape != b.shape or a.raw != b.raw:
            fail("adapter tensor %s differs between %s and %s" % (k, x.dir, y.dir))


def same(d1, d2):
    b1, a1 = load(d1)
    b2, a2 = load(d2)
    for f in ("config.json", "quantize_config.json"):
        p1, p2 = os.path.join(d1, f), os.path.join(d2, f)
        if os.path.exists(p1) != os.path.exists(p2) or (os.path.exists(p1) and read_json(p1) != read_json(p2)):
            fail("%s differs between %s and %s" % (f, d1, d2))
    if set(b1.tensors) != set(b2.tensors):
        fail("tensor names differ: %s" % sorted(set(b1.tensors) ^ set(b2.tensors))[:5])
    for k in b1.tensors:
        x, y = b1.tensors[k], b2.tensors[k]
        if x.dtype != y.dtype or x.shape != y.shape or x.raw != y.raw:
            fail("tensor %s differs (%s vs %s)" % (k, x.file, y.file))
    same_adapter(a1, a2)
    print("same ok: %d tensors in %d vs %d files" % (len(b1.tensors), len(b1.files), len(b2.files)))


# ---- forward -------------------------------------------------------------------------------------
def ref_model(b, a):
    """ref_llama.Llama over the loaded weights (float64), adapter merged: W + (alpha / r) B @ A.
    ref_llama reads the architecture, head_dim, biases and q/k norms from the config and refuses a
    tensor it would not use. The embedding's stored dtype goes along: Gemma2 and Gemma3 round their
    sqrt(hidden) normalizer to it."""
    sys.path.insert(0, HERE)
    import ref_llama
    w = {k: v.astype(np.float64) for k, v in b.w.items()}
    if a is not None:
        for full in a.A:
            w[full + ".weight"] = w[full + ".weight"] + a.scaling * (
                a.B[full].astype(np.float64) @ a.A[full].astype(np.float64))
    try:
        m = ref_llama.Llama.from_weights(b.cfg, w, embed_dtype=b.tensors["model.embed_tokens.weight"].dtype)
    except ValueError as e:
        fail("%s: ref_llama: %s" % (b.dir, e))
    return m, ref_llama


def qlora(model_dir, adapter_dir, double_quant):
    """The original checkpoint as bitsandbytes loads it (load_in_4bit, nf4), and the adapter."""
    sys.path.insert(0, HERE)
    import ref_bnb_nf4 as nf
    b = Base(model_dir)
    for l in range(b.geom.L):
        for lin in b.geom.linears:  # Phi3: the fused qkv_proj / gate_up_proj, each one Linear4bit
            name = "model.layers.%d.%s.weight" % (l, lin)
            t = b.tensors[name]
            dt = {"F32": "f32", "BF16": "bf16", "F16": "f16"}[t.dtype]
            out, _ = nf.reference(b.w[name].reshape(-1), dt, 64, double_quant)
            bits = out["deq.bin"]
            if dt == "f32":
                deq = bits.view(np.float32)
            elif dt == "bf16":
                deq = (bits.astype(np.uint32) << 16).view(np.float32)
            else:
                deq = bits.view(np.float16).astype(np.float32)
            b.w[name] = deq.reshape(t.shape)
    return b, Adapter(adapter_dir, b.geom)


def loadable(d):
    """The state a loader would see in an export directory, possibly interrupted."""
    ok = True
    if os.path.exists(os.path.join(d, "config.json")):
        try:
            Base(d)
            print("base: complete")
        except OSError as e:
            print("base: config.json present but %s: %s" % (e.filename, e.strerror))
            ok = False
        except FormatError as e:
            print("base: config.json present but %s" % e)
            ok = False
    else:
        print("base: absent (no config.json)")
    ad = os.path.join(d, "adapter")
    if os.path.exists(os.path.join(ad, "adapter_config.json")):
        try:
            geom = Geometry(read_json(os.path.join(d, "config.json")), d) if \
                os.path.exists(os.path.join(d, "config.json")) else None
            Adapter(ad, geom)  # geom None: without the base config, shapes only against r
            print("adapter: complete")
        except OSError as e:
            print("adapter: adapter_config.json present but %s: %s" % (e.filename, e.strerror))
            ok = False
        except FormatError as e:
            print("adapter: adapter_config.json present but %s" % e)
            ok = False
    else:
        print("adapter: absent (no adapter_config.json)")
    return ok


def eval_args(cmd, args, flags):
    """--tokens F (required), --rows N and the boolean `flags` of a perplexity command; None
    (after a message) on a bad argument."""
    opt = dict(flags, tokens=None, rows=0)
    i = 0
    while i < len(args):
        if args[i] in ("--tokens", "--rows") and i + 1 < len(args):
            opt[args[i][2:]] = args[i + 1] if args[i] == "--tokens" else int(args[i + 1])
            i += 2
        elif args[i] in flags:
            opt[args[i]] = True
            i += 1
        else:
            sys.stderr.write("%s: unexpected %s\n" % (cmd, args[i]))
            return None
    if not opt["tokens"]:
        sys.stderr.write("%s: need --tokens\n" % cmd)
        return None
    return opt


def print_ppl(b, a, opt):
    m, ref = ref_model(b, a)
    win = np.load(opt["tokens"])
    if opt["rows"]:
        win = win[:opt["rows"]]
    print("perplexity %.6f" % ref.perplexity(m, win))
    return 0


def main(argv):
    if not argv:
        sys.stderr.write(__doc__)
        return 2
    cmd, args = argv[0], argv[1:]
    try:
        if cmd == "selftest":
            return selftest()
        if cmd == "check" and len(args) == 1:
            b, a = load(args[0])
            summary(b, a)
            left = check_tmp(args[0])
            if left:
                fail("temporary files left: %s" % left)
            print("check ok")
            return 0
        if cmd == "compare" and len(args) == 2:
            compare(args[0], args[1])
            return 0
        if cmd == "same" and len(args) == 2:
            same(args[0], args[1])
            return 0
        if cmd == "loadable" and args:
            bad = 0
            for d in args:
                print("%s:" % d)
                bad += not loadable(d)
            return 1 if bad else 0
        if cmd == "qlora-ppl" and len(args) >= 2:
            opt = eval_args("qlora-ppl", args[2:], {"--double-quant": False})
            if opt is None:
                return 2
            b, a = qlora(args[0], args[1], opt["--double-quant"])
            return print_ppl(b, a, opt)
        if cmd == "ppl" and args:
            opt = eval_args("ppl", args[1:], {"--no-lora": False, "--v1-only": False})
            if opt is None:
                return 2
            b, a = load(args[0], adapter=not opt["--no-lora"], v1_only=opt["--v1-only"])
            return print_ppl(b, a, opt)
    except FormatError as e:
        sys.stderr.write("read_export.py: %s\n" % e)
        return 1
    except OSError as e:  # a file the format needs is missing or unreadable
        sys.stderr.write("read_export.py: %s: %s\n" % (e.filename, e.strerror))
        return 1
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
