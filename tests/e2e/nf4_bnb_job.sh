#!/bin/sh
# tests/e2e/nf4_bnb_job.sh - a CLoQ adapter for the stock bitsandbytes NF4 base, end to end:
#  - options that mean nothing for NormalFloat are refused, not ignored (exit 1);
#  - `convert --quantizer nf4-bnb` (with and without --bnb-double-quant): same bytes twice, and
#    after a kill -9 + resume; `verify` passes; the settings record the block and the dtype;
#  - `export` writes only the adapter (default --format peft-only for these jobs) with README.md
#    holding the QLoRA load lines; --format gptq is refused (exit 2), peft-only of a GPTQ job too;
#  - the perplexity a QLoRA user gets (tests/tools/read_export.py qlora-ppl: the ORIGINAL
#    checkpoint through ref_bnb_nf4.py's independent NF4 + the exported adapter, float64 forward)
#    equals `cloq ppl OUT` (1e-6 relative);
#  - on public windows, NF4 + CLoQ beats NF4 + LoftQ(T=1) and NF4 + zero;
#  - LoftQ's NF2 (--quantizer nf --bits 2) converts and exports (dequant);
#  - a bf16 checkpoint records nf_dtype BF16; one with mixed linear dtypes is refused (exit 2).
cd "$(dirname "$0")/../.." || exit 1
. tests/e2e/convert_common.inc

NF="--calib-tokens fixtures/reference/calib_tokens_128x256.npy --nsamples 8 --rank 8 --quiet"
expect() { # WANT LABEL PATTERN CMD...
	want=$1 label=$2 pat=$3
	shift 3
	if run_rc "$want" "$T/log" "$@" && grep -q -- "$pat" "$T/log"; then
		ok "$label"
	else
		fail "$label (want exit $want and '$pat')"
		tail -n 3 "$T/log" | sed 's/^/    /'
	fi
}

# ---- refusals ----
for o in "--group-size 32" "--sym" "--act-order" "--gptq-zeros v2"; do
	expect 1 "nf4-bnb refuses $o" "does not apply to --quantizer nf4-bnb" \
		"$CLOQ" convert $MODEL -o "$T/x" $NF --quantizer nf4-bnb $o
done
expect 1 "nf4-bnb is 4-bit" "is 4-bit" "$CLOQ" convert $MODEL -o "$T/x" $NF --quantizer nf4-bnb --bits 3
expect 1 "--bnb-double-quant needs nf4-bnb" "nf or nf4-bnb only" "$CLOQ" convert $MODEL -o "$T/x" $NF --bnb-double-quant
expect 1 "--bnb-double-quant is not LoftQ's" "bitsandbytes'" \
	"$CLOQ" convert $MODEL -o "$T/x" $NF --quantizer nf --bnb-double-quant
expect 1 "--bnb-blocksize 48 refused" "32, 64, 128" "$CLOQ" convert $MODEL -o "$T/x" $NF --quantizer nf4-bnb --bnb-blocksize 48
[ -e "$T/x" ] && fail "a refused convert created $T/x"

# ---- convert, determinism, resume ----
if run_rc 0 "$T/log" "$CLOQ" convert $MODEL -o "$T/dq" $NF --quantizer nf4-bnb --bnb-double-quant &&
	run_rc 0 "$T/log" "$CLOQ" convert $MODEL -o "$T/dq2" $NF --quantizer nf4-bnb --bnb-double-quant; then
	same_output "$T/dq" "$T/dq2" "nf4-bnb twice" && ok "nf4-bnb + double quant: same bytes twice, verify passes"
else
	fail "convert nf4-bnb"
fi
s=$(tr -d ' \t\n' < "$T/dq/journal.json")
case "$s" in *'"quantizer":"nf4-bnb","nf_block":64,"nf_dtype":"F32","bnb_double_quant":true'*)
	ok "journal settings record quantizer, block, dtype, double quant";;
*) fail "journal settings lack the NF fields";;
esac
"$CLOQ" convert $MODEL -o "$T/dqk" $NF --quantizer nf4-bnb --bnb-double-quant --nsamples 32 >/dev/null 2>&1 &
pid=$!
sleep 0.4
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
"$CLOQ" convert $MODEL -o "$T/dqref" $NF --quantizer nf4-bnb --bnb-double-quant --nsamples 32 >/dev/null 2>&1
if run_rc 0 "$T/log" "$CLOQ" resume "$T/dqk"; then
	same_output "$T/dqref" "$T/dqk" "killed and resumed" && ok "nf4-bnb killed (-9) and resumed: the same bytes"
else
	fail "resume after kill -9"
fi

# ---- export ----
expect 2 "export --format gptq of an nf4-bnb job is refused" "peft-only or --format dequant" \
	"$CLOQ" export "$T/dq" --to "$T/g" --format gptq
[ -e "$T/g" ] && fail "a refused export created $T/g"
"$CLOQ" convert $MODEL -o "$T/gq" $NF --bits 4 >/dev/null 2>&1 || fail "convert gptq"
expect 2 "export --format peft-only of a GPTQ job is refused" "needs a job made with --quantizer nf4-bnb" \
	"$CLOQ" export "$T/gq" --to "$T/g" --format peft-only
expect 0 "export of an nf4-bnb job: the adapter alone" "README.md has the load lines" \
	"$CLOQ" export "$T/dq" --to "$T/e"
got=$(cd "$T/e" && ls | tr '\n' ' ')
[ "$got" = "README.md adapter_config.json adapter_model.safetensors cloq_export.json " ] &&
	ok "peft-only export holds only the adapter, README and marker" || fail "peft-only export holds: $got"
grep -q 'bnb_4bit_use_double_quant=True' "$T/e/README.md" && grep -q 'torch_dtype=torch.float32' "$T/e/README.md" &&
	grep -q 'bnb_4bit_quant_type="nf4"' "$T/e/README.md" && ok "README: the QLoRA load lines match the job" ||
	fail "README.md load lines"
ac=$(tr -d ' \t\n' < "$T/e/adapter_config.json")
case "$ac" in *'"base_model_name_or_path":"stories260K"'*'"target_modules":["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"]'*)
	ok "adapter_config: base name (no path), target modules";;
*) fail "adapter_config.json: $ac";;
esac
case "$ac" in *'"r":8,"lora_alpha":8'*'"task_type"'*|*'"task_type":"CAUSAL_LM","r":8,"lora_alpha":8'*) ok "adapter_config: r, alpha, task type";;
*) fail "adapter_config.json r/alpha/task_type: $ac";;
esac
case "$ac" in *'"/'*) fail "adapter_config.json holds an absolute path";; esac
# the base of a peft-only adapter is the original checkpoint: config.json's _name_or_path when it
# is a name, never an absolute path
cp -r "$T/dq" "$T/dqn"
sed -i 's|^{|{"_name_or_path": "meta-llama/Llama-2-7b-hf",|' "$T/dqn/model/config.json"
"$CLOQ" export "$T/dqn" --to "$T/en" >/dev/null 2>&1 &&
	grep -q '"base_model_name_or_path":[[:space:]]*"meta-llama/Llama-2-7b-hf"' "$T/en/adapter_config.json" &&
	ok "peft-only: base_model_name_or_path from config.json's _name_or_path" ||
	fail "peft-only base_model_name_or_path ignores _name_or_path: $(grep base_model "$T/en/adapter_config.json")"
sed -i 's|"_name_or_path": "meta-llama/Llama-2-7b-hf"|"_name_or_path": "/home/me/models/secret"|' "$T/dqn/model/config.json"
"$CLOQ" export "$T/dqn" --to "$T/en2" >/dev/null 2>&1 &&
	grep -q '"base_model_name_or_path":[[:space:]]*"stories260K"' "$T/en2/adapter_config.json" &&
	ok "peft-only: an absolute _name_or_path is not used" ||
	fail "peft-only base_model_name_or_path: $(grep base_model "$T/en2/adapter_config.json")"

# ---- perplexity: what a QLoRA user gets == cloq ppl; CLoQ beats LoftQ(1) and zero ----
ppl_of() { sed -n 's/^perplexity \([0-9.eE+-]*\).*/\1/p' "$1" | head -n 1; }
if [ -n "$PY" ] && "$PY" -c 'import numpy' 2>/dev/null; then
	"$PY" -c "import numpy as np; np.save('$T/w40.npy', np.load('fixtures/reference/public_eval_windows.npy')[:40])"
	"$CLOQ" ppl "$T/dq" --tokens "$T/w40.npy" >"$T/p_c" 2>&1 || fail "cloq ppl"
	"$PY" tests/tools/read_export.py qlora-ppl $MODEL "$T/e" --double-quant --tokens "$T/w40.npy" >"$T/p_r" 2>&1 ||
		{ cat "$T/p_r"; fail "qlora-ppl"; }
	c=$(ppl_of "$T/p_c") r=$(ppl_of "$T/p_r")
	if "$PY" -c "import sys; sys.exit(0 if abs($c - $r) <= 1e-6 * $r else 1)"; then
		ok "stock checkpoint + bitsandbytes NF4 (reference) + exported adapter: perplexity $r == cloq ppl $c"
	else
		fail "QLoRA perplexity $r != cloq ppl $c"
	fi
else
	echo "skip: python3 with numpy not found (QLoRA perplexity check)"
fi
for init in loftq zero; do
	"$CLOQ" convert $MODEL -o "$T/i_$init" $NF --quantizer nf4-bnb --bnb-double-quant --init $init >/dev/null 2>&1 ||
		fail "convert --init $init"
done
W=fixtures/reference/public_eval_windows.npy
pc=$("$CLOQ" ppl "$T/dq" --tokens $W | sed -n 's/^perplexity \([0-9.]*\).*/\1/p')
pl=$("$CLOQ" ppl "$T/i_loftq" --tokens $W | sed -n 's/^perplexity \([0-9.]*\).*/\1/p')
pz=$("$CLOQ" ppl "$T/i_zero" --tokens $W | sed -n 's/^perplexity \([0-9.]*\).*/\1/p')
if awk -v c="$pc" -v l="$pl" -v z="$pz" 'BEGIN { exit !(c < l && c < z) }'; then
	ok "NF4 + CLoQ $pc < NF4 + LoftQ(1) $pl, NF4 + zero $pz"
else
	fail "NF4 + CLoQ $pc is not below LoftQ(1) $pl and zero $pz"
fi

# ---- LoftQ's NF2 through convert ----
if run_rc 0 "$T/log" "$CLOQ" convert $MODEL -o "$T/nf2" $NF --quantizer nf --bits 2 &&
	run_rc 0 "$T/log" "$CLOQ" export "$T/nf2" --to "$T/nf2e" && [ -f "$T/nf2e/model.safetensors" ]; then
	ok "LoftQ NF2 converts; its export is dequant by default"
else
	fail "NF2 convert/export"
fi

# ---- dtypes: bf16 recorded, mixed refused ----
if [ -n "$PY" ]; then
	"$PY" - "$MODEL" "$T/bf" "$T/mixed" <<'PYEOF' || fail "making bf16 checkpoints"
import json, os, shutil, struct, sys
src, bf, mixed = sys.argv[1:]
def conv(dst, which):
    os.makedirs(dst)
    for f in os.listdir(src):
        if f != "model.safetensors":
            shutil.copy(os.path.join(src, f), dst)
    with open(os.path.join(src, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        buf = f.read()
    meta = hdr.pop("__metadata__", None)
    out, off, newh = [], 0, {} if meta is None else {"__metadata__": meta}
    for k, v in sorted(hdr.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        a, b = v["data_offsets"]
        data = buf[a:b]
        if which(k):
            vals = struct.unpack("<%dI" % ((b - a) // 4), data)
            data = struct.pack("<%dH" % len(vals), *[((x + 0x7FFF + ((x >> 16) & 1)) >> 16) & 0xFFFF for x in vals])
            v = dict(v, dtype="BF16")
        newh[k] = dict(v, data_offsets=[off, off + len(data)])
        out.append(data)
        off += len(data)
    h = json.dumps(newh).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(os.path.join(dst, "model.safetensors"), "wb") as g:
        g.write(struct.pack("<Q", len(h)) + h + b"".join(out))
conv(bf, lambda k: k.endswith("_proj.weight"))
conv(mixed, lambda k: k.endswith("q_proj.weight") and ".1." in k)
PYEOF
	if run_rc 0 "$T/log" "$CLOQ" convert "$T/bf" -o "$T/bfo" $NF --quantizer nf4-bnb &&
		tr -d ' \t\n' < "$T/bfo/journal.json" | grep -q '"nf_dtype":"BF16"'; then
		ok "bf16 linears: nf_dtype BF16 recorded"
	else
		fail "bf16 checkpoint"
	fi
	expect 2 "mixed linear dtypes refused, naming a tensor" "model.layers.1.self_attn.q_proj.weight' is BF16" \
		"$CLOQ" convert "$T/mixed" -o "$T/mo" $NF --quantizer nf4-bnb
fi
finish
