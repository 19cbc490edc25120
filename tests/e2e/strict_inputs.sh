#!/bin/sh
# tests/e2e/strict_inputs.sh - strict accounting of the inputs: a tensor the architecture does not
# use (any extra one, Qwen3's q_norm), a config.json field cloq does not know, or an active sliding
# window shorter than --seqlen stop `cloq convert` (and `cloq inspect`) with exit 2 naming the
# tensor or field, before OUT gets a journal; a sliding window longer than --seqlen converts.
. tests/e2e/convert_common.inc
[ -n "$PY" ] || { echo "SKIP: python3 needed to rewrite the safetensors"; exit 77; }


# add_tensor DIR NAME N: append an F32 tensor [N] (values 0.5) to DIR/model.safetensors
add_tensor() {
	"$PY" - "$1/model.safetensors" "$2" "$3" <<'PYEOF'
import json, struct, sys
import numpy as np
path, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
raw = open(path, "rb").read()
hlen = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + hlen])
data = raw[8 + hlen:]
extra = np.full(n, 0.5, dtype="<f4").tobytes()
header[name] = {"dtype": "F32", "shape": [n], "data_offsets": [len(data), len(data) + len(extra)]}
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
open(path, "wb").write(struct.pack("<Q", len(h)) + h + data + extra)
PYEOF
}

# set_field DIR KEY JSON: set config.json's KEY to the JSON value
set_field() {
	"$PY" - "$1/config.json" "$2" "$3" <<'PYEOF'
import json, sys
path, key, value = sys.argv[1:4]
c = json.load(open(path))
c[key] = json.loads(value)
json.dump(c, open(path, "w"), indent=2)
PYEOF
}

# copy NAME: a private copy of the fixture at $T/NAME
copy() { rm -rf "$T/$1"; cp -r "$MODEL" "$T/$1"; }

no_journal() { [ ! -e "$1/journal.json" ] || fail "$2: a refused run left $1/journal.json"; }

# (a) an extra tensor
copy extra
add_tensor "$T/extra" model.layers.1.mlp.extra_scale.weight 64
expect 2 "extra tensor" "extra/model.safetensors: tensor 'model.layers.1.mlp.extra_scale.weight' is not used by LlamaForCausalLM" \
	"$CLOQ" convert "$T/extra" -o "$T/o_extra" $CALIB $QOPTS
no_journal "$T/o_extra" "extra tensor"
expect 2 "extra tensor (inspect)" "tensor 'model.layers.1.mlp.extra_scale.weight' is not used" "$CLOQ" inspect "$T/extra"

# (b) Qwen3's q_norm
copy qnorm
add_tensor "$T/qnorm" model.layers.0.self_attn.q_norm.weight 8
expect 2 "q_norm tensor" "tensor 'model.layers.0.self_attn.q_norm.weight' is not used by LlamaForCausalLM \(q/k norms are Qwen3's" \
	"$CLOQ" convert "$T/qnorm" -o "$T/o_qnorm" $CALIB $QOPTS
no_journal "$T/o_qnorm" "q_norm tensor"
expect 2 "q_norm tensor (ppl)" "q_norm.weight' is not used" "$CLOQ" ppl "$T/qnorm" --tokens fixtures/reference/public_eval_windows.npy

# RoPE inverse frequencies of an old Llama checkpoint: dropped by transformers by design, accepted
copy invfreq
add_tensor "$T/invfreq" model.layers.0.self_attn.rotary_emb.inv_freq 4
expect 0 "rotary_emb.inv_freq accepted (inspect)" "architecture" "$CLOQ" inspect "$T/invfreq"

# (c) an unknown config field
copy foo
set_field "$T/foo" foo 1
expect 2 "unknown field" "config.json: field 'foo' = 1 is not known to cloq" \
	"$CLOQ" convert "$T/foo" -o "$T/o_foo" $CALIB $QOPTS
no_journal "$T/o_foo" "unknown field"
expect 2 "unknown field (inspect)" "field 'foo' = 1 is not known" "$CLOQ" inspect "$T/foo"

# (d) a sliding window shorter than --seqlen is refused at convert and ppl time; a longer one converts
copy sw16
set_field "$T/sw16" sliding_window 16
SHORT="--calib fixtures/text/tinystories_calib.txt --nsamples 4 --seqlen 64"
expect 2 "sliding_window 16, --seqlen 64" "field 'sliding_window' = 16 .*64-token windows" \
	"$CLOQ" convert "$T/sw16" -o "$T/o_sw16" $SHORT $QOPTS
no_journal "$T/o_sw16" "sliding window"
expect 2 "sliding_window 16 (ppl)" "field 'sliding_window' = 16" \
	"$CLOQ" ppl "$T/sw16" --text fixtures/text/tinystories_public.txt --seqlen 64
copy sw4096
set_field "$T/sw4096" sliding_window 4096
expect 0 "sliding_window 4096, --seqlen 64" "" "$CLOQ" convert "$T/sw4096" -o "$T/o_sw4096" $SHORT $QOPTS
[ -f "$T/o_sw4096/journal.json" ] || fail "sliding_window 4096: no journal"

finish
