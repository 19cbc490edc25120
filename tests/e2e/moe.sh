#!/bin/sh
# tests/e2e/moe.sh - mixtures of experts (MixtralForCausalLM, Qwen2MoeForCausalLM with its shared
# expert and a dense layer, Qwen3MoeForCausalLM), on tiny random checkpoints made by
# tests/tools/mkmodel:
#  - `cloq ppl` equals tests/tools/ref_llama.py's float64 forward (softmax routing, top-k, the
#    weights renormalised where the family does, each expert on the rows routed to it) to 1e-5, its
#    first window's logits to 1e-4; also tied, sharded, top-1 and top-all variants;
#  - `cloq inspect` counts every parameter and says conversion is not there yet;
#  - `cloq convert` refuses a mixture of experts by name (exit 2) before writing anything, and a
#    checkpoint missing one expert's tensor is refused naming it.
cd "$(dirname "$0")/../.." || exit 1
. tests/e2e/convert_common.inc
. tests/e2e/need_numpy.inc
. tests/e2e/family_common.inc

MK="$BUILD/tools/mkmodel"
GEOM="--hidden 64 --intermediate 96 --layers 2 --heads 4 --kv-heads 2 --vocab 512 --max-pos 1024 --quiet"
"$MK" --out "$T/mx" --family mixtral --experts 4 --topk 2 $GEOM || exit 1
family_forward "$T/mx" "Mixtral, 4 experts, top-2"
"$MK" --out "$T/mxw" --family mixtral --experts 3 --topk 1 --sliding-window 16 --tied --shards 2 $GEOM || exit 1
family_forward "$T/mxw" "Mixtral, top-1, sliding window 16, tied, sharded"
"$MK" --out "$T/q2" --family qwen2_moe --experts 4 --topk 2 --moe-intermediate 32 --shared-intermediate 48 \
	--decoder-sparse-step 2 $GEOM || exit 1
family_forward "$T/q2" "Qwen2-MoE, shared expert, layer 0 dense"
"$MK" --out "$T/q3" --family qwen3_moe --experts 8 --topk 8 --moe-intermediate 32 --head-dim 32 $GEOM || exit 1
family_forward "$T/q3" "Qwen3-MoE, top-8 of 8"
"$MK" --out "$T/q3b" --family qwen3_moe --experts 6 --topk 2 --moe-intermediate 40 --head-dim 32 --dtype f32 $GEOM || exit 1
family_forward "$T/q3b" "Qwen3-MoE, 6 experts, top-2"
family_count "$T/q3b"
grep -q "^experts      6 per layer, top-2 (weights renormalised), width 40, in 2 of 2 layers" "$T/insp" &&
	ok "inspect describes the experts" || fail "inspect: $(grep '^experts' "$T/insp")"

if run_rc 2 "$T/log" "$CLOQ" convert "$T/q3b" -o "$T/x" $FQO && grep -q "Qwen3MoeForCausalLM is a mixture of experts" "$T/log"; then
	ok "convert refuses a mixture of experts by name"
else
	fail "convert of a mixture of experts not refused by name"
fi
[ -f "$T/x/journal.json" ] && fail "a journal was written for the refused MoE job"
rm -rf "$T/nok"
"$PY" - "$T/q3b" "$T/nok" <<'PYEOF' || fail "making the broken copy"
import json, os, shutil, struct, sys
src, dst = sys.argv[1:]
os.makedirs(dst)
shutil.copy(src + "/config.json", dst)
with open(src + "/model.safetensors", "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
    buf = f.read()
drop = "model.layers.1.mlp.experts.5.up_proj.weight"
out, off, nh = [], 0, {}
for k, v in sorted(((k, v) for k, v in h.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0]):
    if k == drop:
        continue
    a, b = v["data_offsets"]
    nh[k] = dict(v, data_offsets=[off, off + b - a])
    out.append(buf[a:b])
    off += b - a
hb = json.dumps(nh).encode()
hb += b" " * ((8 - (8 + len(hb)) % 8) % 8)
open(dst + "/model.safetensors", "wb").write(struct.pack("<Q", len(hb)) + hb + b"".join(out))
PYEOF
if run_rc 2 "$T/log" "$CLOQ" ppl "$T/nok" --tokens "$W" && grep -q "model.layers.1.mlp.experts.5.up_proj.weight' is missing" "$T/log"; then
	ok "a missing expert tensor is refused, naming it"
else
	fail "a missing expert tensor not refused by name"
fi
finish
