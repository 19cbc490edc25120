#!/bin/sh
# tests/e2e/qwen3.sh - Qwen3ForCausalLM end to end, against an independent forward:
#  - a tiny random Qwen3 (tests/tools/mkmodel --family qwen3: head_dim 32 != hidden / heads = 16,
#    GQA, q/k norms, tied): `cloq ppl` equals tests/tools/ref_llama.py's float64 forward (written
#    from transformers' modeling_qwen3, not from cloq's C) to 1e-5 relative;
#  - `cloq inspect` counts every parameter (q/k norms included);
#  - convert (INT4 g32, rank 8), verify, export (GPTQ and fp32 dequant): tests/tools/read_export.py
#    validates the files (q_norm/k_norm present, shapes) and its own forward over them gives
#    `cloq ppl OUT` (GPTQ: 5e-4 relative, fp16 tensors; fp32 dequant: 2e-6);
#  - a Qwen3 checkpoint missing one k_norm is refused (exit 2, naming it).
cd "$(dirname "$0")/../.." || exit 1
. tests/e2e/convert_common.inc
. tests/e2e/need_numpy.inc

M="$T/q3"
"$BUILD/tools/mkmodel" --out "$M" --family qwen3 --hidden 64 --intermediate 96 --layers 2 --heads 4 \
	--kv-heads 2 --head-dim 32 --vocab 512 --tied --dtype f32 --max-pos 1024 --quiet || exit 1
"$PY" -c "import numpy as np; np.save('$T/w16.npy', np.load('fixtures/reference/public_eval_windows.npy')[:16])"
W="$T/w16.npy"
ppl_of() { sed -n 's/^perplexity \([0-9.eE+-]*\).*/\1/p' "$1" | head -n 1; }
# close A B RELTOL LABEL
close() {
	if "$PY" -c "import sys; a, b = float('$1' or 'nan'), float('$2' or 'nan'); sys.exit(0 if abs(a - b) <= $3 * abs(b) else 1)"; then
		ok "$4: $1 == $2 (rel tol $3)"
	else
		fail "$4: $1 != $2 (rel tol $3)"
	fi
}

"$CLOQ" ppl "$M" --tokens "$W" >"$T/p_c" 2>&1 || { cat "$T/p_c"; fail "cloq ppl on the Qwen3 model"; }
"$PY" tests/tools/ref_llama.py --model "$M" --ppl-npy "$W" >"$T/p_r" 2>&1 || { cat "$T/p_r"; fail "ref_llama.py"; }
close "$(ppl_of "$T/p_c")" "$(ppl_of "$T/p_r")" 1e-5 "Qwen3 forward: cloq ppl vs the float64 reference"

n=$("$PY" - "$M" <<'PYEOF'
import json, struct, sys
with open(sys.argv[1] + "/model.safetensors", "rb") as f:
    h = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
tot = 0
for k, v in h.items():
    if k != "__metadata__":
        n = 1
        for d in v["shape"]:
            n *= d
        tot += n
print("{:,}".format(tot))
PYEOF
)
"$CLOQ" inspect "$M" >"$T/insp" 2>&1
grep -q "^parameters   $n " "$T/insp" && ok "inspect counts $n parameters (q/k norms included)" ||
	fail "inspect: $(grep '^parameters' "$T/insp"), the file holds $n"

QO="--calib-tokens fixtures/reference/calib_tokens_128x256.npy --nsamples 8 --bits 4 --group-size 32 --rank 8 --quiet"
if run_rc 0 "$T/log" "$CLOQ" convert "$M" -o "$T/j" $QO && run_rc 0 "$T/log" "$CLOQ" verify "$T/j" &&
	run_rc 0 "$T/log" "$CLOQ" export "$T/j" --to "$T/g" &&
	run_rc 0 "$T/log" "$CLOQ" export "$T/j" --to "$T/d" --format dequant --dtype fp32; then
	ok "Qwen3: convert, verify, export gptq and dequant"
	"$PY" tests/tools/read_export.py check "$T/g" >"$T/chk" 2>&1 && ok "read_export.py check passes the GPTQ export" ||
		{ cat "$T/chk"; fail "read_export.py check"; }
	for k in q_norm k_norm; do
		grep -q "model.layers.1.self_attn.$k.weight" "$T/g/model.safetensors" && ok "export holds self_attn.$k" ||
			fail "export lacks self_attn.$k"
	done
	"$CLOQ" ppl "$T/j" --tokens "$W" >"$T/p_j" 2>&1
	"$PY" tests/tools/read_export.py ppl "$T/g" --tokens "$W" >"$T/p_g" 2>&1 || { cat "$T/p_g"; fail "reader ppl gptq"; }
	"$PY" tests/tools/read_export.py ppl "$T/d" --tokens "$W" >"$T/p_d" 2>&1 || { cat "$T/p_d"; fail "reader ppl dequant"; }
	close "$(ppl_of "$T/p_g")" "$(ppl_of "$T/p_j")" 5e-4 "GPTQ export + adapter, reader's forward vs cloq ppl OUT"
	close "$(ppl_of "$T/p_d")" "$(ppl_of "$T/p_j")" 2e-6 "fp32 dequant export + adapter, reader's forward vs cloq ppl OUT"
else
	fail "Qwen3 convert/verify/export"
fi

# a k_norm missing: refused, named
"$PY" - "$M" "$T/nok" <<'PYEOF' || fail "making the broken copy"
import json, os, shutil, struct, sys
src, dst = sys.argv[1:]
os.makedirs(dst)
shutil.copy(src + "/config.json", dst)
with open(src + "/model.safetensors", "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
    buf = f.read()
drop = "model.layers.1.self_attn.k_norm.weight"
meta = h.pop("__metadata__", None)
out, off, nh = [], 0, ({} if meta is None else {"__metadata__": meta})
for k, v in sorted(h.items(), key=lambda kv: kv[1]["data_offsets"][0]):
    if k == drop:
        continue
    a, b = v["data_offsets"]
    nh[k] = dict(v, data_offsets=[off, off + b - a])
    out.append(buf[a:b])
    off += b - a
hb = json.dumps(nh).encode()
hb += b" " * ((8 - (8 + len(hb)) % 8) % 8)
with open(dst + "/model.safetensors", "wb") as g:
    g.write(struct.pack("<Q", len(hb)) + hb + b"".join(out))
PYEOF
if run_rc 2 "$T/log" "$CLOQ" convert "$T/nok" -o "$T/x" $QO && grep -q "model.layers.1.self_attn.k_norm.weight" "$T/log"; then
	ok "a Qwen3 checkpoint without layer 1's k_norm is refused, naming it"
else
	fail "missing k_norm not refused by name"
fi
finish
