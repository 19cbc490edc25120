#!/bin/sh
# tests/e2e/gemma3.sh - Gemma3ForCausalLM (text) end to end, against an independent forward:
#  - a tiny random Gemma 3 (tests/tools/mkmodel --family gemma3: Gemma 2's layer without
#    soft-capping, q/k norms applied as 1 + w, a sliding window of 32 on every other layer with
#    RoPE base 1e4 and the global layers at 1e6 with linear scaling 8): `cloq ppl` on 256-token
#    windows (eight times the window) equals tests/tools/ref_llama.py's float64 forward (written
#    from transformers' modeling_gemma3, not from cloq's C) to 1e-5 relative; also bf16, untied;
#  - `cloq inspect` counts every parameter;
#  - convert (INT4 g32, rank 8), verify, export (GPTQ and fp32 dequant): read_export.py's own
#    forward over the files gives `cloq ppl OUT`;
#  - a Gemma 3 checkpoint missing one q_norm is refused (exit 2, naming it).
cd "$(dirname "$0")/../.." || exit 1
. tests/e2e/convert_common.inc
. tests/e2e/need_numpy.inc

M="$T/q3"
"$BUILD/tools/mkmodel" --out "$M" --family gemma3 --hidden 64 --intermediate 96 --layers 2 --heads 4 \
	--kv-heads 2 --head-dim 32 --vocab 512 --tied --dtype f32 --max-pos 1024 --rope-theta 1000000 --quiet || exit 1
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

"$CLOQ" ppl "$M" --tokens "$W" >"$T/p_c" 2>&1 || { cat "$T/p_c"; fail "cloq ppl on the Gemma 3 model"; }
"$PY" tests/tools/ref_llama.py --model "$M" --ppl-npy "$W" >"$T/p_r" 2>&1 || { cat "$T/p_r"; fail "ref_llama.py"; }
close "$(ppl_of "$T/p_c")" "$(ppl_of "$T/p_r")" 1e-5 "Gemma 3 forward: cloq ppl vs the float64 reference"
# bfloat16 weights, hidden 48: the embedding scale is sqrt(48) rounded to bfloat16 (6.9375)
"$BUILD/tools/mkmodel" --out "$T/q3bf" --family gemma3 --hidden 48 --intermediate 80 --layers 2 --heads 4 \
	--kv-heads 2 --head-dim 16 --vocab 512 --dtype bf16 --max-pos 1024 --rope-theta 1000000 --quiet || exit 1
"$CLOQ" ppl "$T/q3bf" --tokens "$W" >"$T/p_cb" 2>&1 || { cat "$T/p_cb"; fail "cloq ppl on the bf16 Gemma 3"; }
"$PY" tests/tools/ref_llama.py --model "$T/q3bf" --ppl-npy "$W" >"$T/p_rb" 2>&1 || { cat "$T/p_rb"; fail "ref_llama.py bf16"; }
close "$(ppl_of "$T/p_cb")" "$(ppl_of "$T/p_rb")" 1e-5 "Gemma 3 bf16, untied: cloq ppl vs the float64 reference"

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
grep -q "^parameters   $n " "$T/insp" && ok "inspect counts $n parameters (the four norms a layer included)" ||
	fail "inspect: $(grep '^parameters' "$T/insp"), the file holds $n"

QO="--calib-tokens fixtures/reference/calib_tokens_128x256.npy --nsamples 8 --bits 4 --group-size 32 --rank 8 --quiet"
if run_rc 0 "$T/log" "$CLOQ" convert "$M" -o "$T/j" $QO && run_rc 0 "$T/log" "$CLOQ" verify "$T/j" &&
	run_rc 0 "$T/log" "$CLOQ" export "$T/j" --to "$T/g" &&
	run_rc 0 "$T/log" "$CLOQ" export "$T/j" --to "$T/d" --format dequant --dtype fp32; then
	ok "Gemma 3: convert, verify, export gptq and dequant"
	"$PY" tests/tools/read_export.py check "$T/g" >"$T/chk" 2>&1 && ok "read_export.py check passes the GPTQ export" ||
		{ cat "$T/chk"; fail "read_export.py check"; }
	for k in input_layernorm post_attention_layernorm pre_feedforward_layernorm post_feedforward_layernorm self_attn.q_norm self_attn.k_norm; do
		grep -q "model.layers.1.$k.weight" "$T/g/model.safetensors" && ok "export holds $k" ||
			fail "export lacks $k"
	done
	"$CLOQ" ppl "$T/j" --tokens "$W" >"$T/p_j" 2>&1
	"$PY" tests/tools/read_export.py ppl "$T/g" --tokens "$W" >"$T/p_g" 2>&1 || { cat "$T/p_g"; fail "reader ppl gptq"; }
	"$PY" tests/tools/read_export.py ppl "$T/d" --tokens "$W" >"$T/p_d" 2>&1 || { cat "$T/p_d"; fail "reader ppl dequant"; }
	close "$(ppl_of "$T/p_g")" "$(ppl_of "$T/p_j")" 5e-4 "GPTQ export + adapter, reader's forward vs cloq ppl OUT"
	close "$(ppl_of "$T/p_d")" "$(ppl_of "$T/p_j")" 2e-6 "fp32 dequant export + adapter, reader's forward vs cloq ppl OUT"
else
	fail "Gemma 3 convert/verify/export"
fi

# a norm missing: refused, named
"$PY" - "$M" "$T/nok" <<'PYEOF' || fail "making the broken copy"
import json, os, shutil, struct, sys
src, dst = sys.argv[1:]
os.makedirs(dst)
shutil.copy(src + "/config.json", dst)
with open(src + "/model.safetensors", "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
    buf = f.read()
drop = "model.layers.1.self_attn.q_norm.weight"
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
if run_rc 2 "$T/log" "$CLOQ" convert "$T/nok" -o "$T/x" $QO && grep -q "model.layers.1.self_attn.q_norm.weight" "$T/log"; then
	ok "a Gemma 3 checkpoint without layer 1's q_norm is refused, naming it"
else
	fail "missing q_norm not refused by name"
fi
finish
