"""Minimal pure-Python stand-in for the `safetensors` package (read side faithful, write side simple).

Format: 8-byte little-endian u64 header length N, N bytes of JSON header
{name: {"dtype": "BF16"|"F16"|"F32"|..., "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}},
then the raw little-endian data; offsets are relative to the byte after the header.
"""
import json
import struct

import numpy as np

__version__ = "0.4.5"


class SafetensorError(Exception):
    pass


# safetensors dtype -> (numpy storage dtype, torch dtype name); bf16 is stored as int16 and re-viewed in torch
_NP = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.int16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def read_header(path):
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise SafetensorError(f"{path}: file too short")
        (n,) = struct.unpack("<Q", raw)
        hdr = json.loads(f.read(n).decode("utf-8"))
    meta = hdr.pop("__metadata__", None)
    return n, hdr, meta


def _to_torch(arr, dtype):
    import torch
    t = torch.from_numpy(np.array(arr, copy=True))
    if dtype == "BF16":
        t = t.view(torch.bfloat16)
    return t


class _Slice:
    def __init__(self, owner, name):
        self._o, self._n = owner, name

    def get_dtype(self):
        return self._o._hdr[self._n]["dtype"]

    def get_shape(self):
        return list(self._o._hdr[self._n]["shape"])

    def __getitem__(self, idx):
        return self._o.get_tensor(self._n)[idx]


class safe_open:
    def __init__(self, filename, framework="pt", device="cpu"):
        if framework not in ("pt", "torch", "np", "numpy"):
            raise SafetensorError(f"framework {framework} not supported by this stand-in")
        self._fw = framework
        self._path = str(filename)
        n, self._hdr, self._meta = read_header(self._path)
        self._base = 8 + n
        self._mm = np.memmap(self._path, dtype=np.uint8, mode="r")

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self._mm = None
        return False

    def metadata(self):
        return self._meta

    def keys(self):
        return list(self._hdr.keys())

    def offset_keys(self):
        return sorted(self._hdr.keys(), key=lambda k: self._hdr[k]["data_offsets"][0])

    def _array(self, name):
        info = self._hdr[name]
        b, e = info["data_offsets"]
        npdt = _NP[info["dtype"]]
        buf = self._mm[self._base + b:self._base + e]
        arr = buf.view(npdt).reshape(info["shape"])
        return arr

    def get_slice(self, name):
        return _Slice(self, name)

    def get_tensor(self, name):
        arr = self._array(name)
        if self._fw in ("np", "numpy"):
            if self._hdr[name]["dtype"] == "BF16":
                return (arr.astype(np.uint32) << 16).view(np.float32)
            return np.array(arr)
        return _to_torch(arr, self._hdr[name]["dtype"])


def deserialize(buffer):
    raise NotImplementedError("safetensors stand-in: deserialize")


def serialize(*a, **k):
    raise NotImplementedError("safetensors stand-in: serialize")
