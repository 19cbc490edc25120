#!/bin/sh
# tests/e2e/nf4_bnb_reference.sh - pin quant/'s bitsandbytes NF4 quantizer against
# tests/tools/ref_bnb_nf4.py, an independent numpy model of bitsandbytes' CUDA kernels written from
# their source (not from cloq's C code).
#
# Cases, each with and without double quantization, every file compared bit for bit (codes,
# absmax, or the 8-bit absmax codes, absmax2, offset and rebuilt absmax, and the dequantized
# weights in the weight's dtype): the 35 linears of fixtures/stories260K (float32, block 64, and
# block 32 for layer 0), and a random 4096 x 4096 bfloat16 matrix with zero blocks and outliers
# (block 64; 262,144 blocks, 1,024 absmax2 blocks). Both sides model the GPU's fast-math
# reciprocal by the IEEE one; ref_bnb_nf4.py reports how many codes sit within one ulp of a
# decision threshold (where the GPU could differ). Exit 77 (skip) when python3 with numpy is
# missing.
cd "$(dirname "$0")/../.." || exit 1
. tests/e2e/need_numpy.inc
BUILD=${BUILD:-build}
DUMP="$BUILD/tools/nf_dump"
REF=tests/tools/ref_bnb_nf4.py
[ -x "$DUMP" ] || { echo "missing $DUMP (make tools)"; exit 1; }
T="$BUILD/nf4_bnb_reference.tmp"
rm -rf "$T" && mkdir -p "$T" || exit 1
trap 'rm -rf "$T"' EXIT
fails=0

# case NAME W DTYPE ROWS COLS [--blocksize N] [--double-quant]
case_() {
    name=$1 w=$2 dt=$3 rows=$4 cols=$5
    shift 5
    if ! "$DUMP" "$w" "$dt" "$rows" "$cols" "$T/c" "$@"; then
        echo "FAIL $name: nf_dump failed"; fails=$((fails + 1)); return
    fi
    out=$("$PY" "$REF" --W "$w" --dtype "$dt" --n $((rows * cols)) "$@" --out "$T/r" --against "$T/c")
    rc=$?
    if [ $rc -eq 0 ]; then
        echo "ok   $name: $(echo "$out" | tail -n 1)"
    else
        echo "FAIL $name:"; echo "$out" | sed 's/^/    /'; fails=$((fails + 1))
    fi
    rm -f "$T"/c.* "$T"/r.*
}

# the stories260K linears as raw float32 files NAME.f32, and their shapes
"$PY" - "$T" <<'PYEOF' > "$T/list" || exit 1
import json, struct, sys
t = sys.argv[1]
with open("fixtures/stories260K/model.safetensors", "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    hdr = json.loads(f.read(n))
    base = 8 + n
    for name, v in sorted(hdr.items()):
        if not name.endswith("_proj.weight") or v["dtype"] != "F32":
            continue
        a, b = v["data_offsets"]
        f.seek(base + a)
        with open("%s/%s.f32" % (t, name), "wb") as g:
            g.write(f.read(b - a))
        print(name, v["shape"][0], v["shape"][1])
PYEOF
[ "$(wc -l < "$T/list")" -eq 35 ] || { echo "FAIL: expected 35 linears in stories260K"; exit 1; }
while read -r lin lrows lcols; do # (case_ sets name, rows, cols: sh has no locals)
    case_ "$lin" "$T/$lin.f32" f32 "$lrows" "$lcols"
    case_ "$lin (double quant)" "$T/$lin.f32" f32 "$lrows" "$lcols" --double-quant
    case "$lin" in model.layers.0.*)
        case_ "$lin (block 32)" "$T/$lin.f32" f32 "$lrows" "$lcols" --blocksize 32 --double-quant;;
    esac
done < "$T/list"

"$PY" "$REF" --random 16777216 --seed 7 --dtype bf16 --out-w "$T/rand.bf16" || exit 1
case_ "random 4096 x 4096 bf16" "$T/rand.bf16" bf16 4096 4096
case_ "random 4096 x 4096 bf16 (double quant)" "$T/rand.bf16" bf16 4096 4096 --double-quant

[ $fails -eq 0 ] || { echo "$fails case(s) differ from the reference"; exit 1; }
echo "all cases equal the reference"
