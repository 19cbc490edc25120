#!/bin/sh
# tests/e2e/sliding_window.sh - sliding-window attention computed, not refused, in every family
# that has it, against tests/tools/ref_llama.py's float64 forward (written from transformers'
# masks: a sliding layer's query i sees keys j with i - W < j <= i), on 256-token windows:
#  - Mistral, sliding_window 16 on every layer; the same weights without a window give another
#    perplexity (the window is really applied), and convert -> verify -> export -> the export's
#    own forward (read_export.py) gives the job's ppl;
#  - Qwen2 (q/k/v biases) and Qwen3 with use_sliding_window and max_window_layers 1 (only layer 1
#    slides); the Qwen2 one also through convert -> export -> the export's own forward;
#  - Gemma 2 with sliding_window 24 (the even layers);
#  - 600-token windows, a window of 100 inside them, against the reference;
#  - a LlamaForCausalLM carrying a window is refused by name (its class has none).
cd "$(dirname "$0")/../.." || exit 1
. tests/e2e/convert_common.inc
. tests/e2e/need_numpy.inc
. tests/e2e/family_common.inc

MK="$BUILD/tools/mkmodel"
GEOM="--hidden 64 --intermediate 96 --layers 2 --heads 4 --kv-heads 2 --vocab 512 --max-pos 1024 --quiet"
"$MK" --out "$T/mi" --family mistral --sliding-window 16 $GEOM || exit 1
"$MK" --out "$T/mi_full" --family mistral --shards 3 $GEOM || exit 1
family_forward "$T/mi" "Mistral, window 16"
family_forward "$T/mi_full" "Mistral, no window"
a=$(ppl_of "$T/p_c")
"$CLOQ" ppl "$T/mi" --tokens "$W" >"$T/p_w" 2>&1
b=$(ppl_of "$T/p_w")
"$PY" -c "import sys; sys.exit(0 if abs($a - $b) > 1e-3 * $a else 1)" &&
	ok "the window changes the model ($a without, $b with)" || fail "window 16 and none give the same ppl ($a, $b)"
family_convert_export "$T/mi" "Mistral, window 16"

"$MK" --out "$T/q2" --family qwen2 --sliding-window 16 --max-window-layers 1 --shards 2 $GEOM || exit 1
family_forward "$T/q2" "Qwen2 (q/k/v biases), window 16 on layer 1"
rm -rf "$T/j" "$T/g" "$T/d"
family_convert_export "$T/q2" "Qwen2, window 16 on layer 1" input_layernorm post_attention_layernorm
"$MK" --out "$T/q3" --family qwen3 --sliding-window 16 --max-window-layers 1 $GEOM --head-dim 32 || exit 1
family_forward "$T/q3" "Qwen3, window 16 on layer 1"
"$MK" --out "$T/g2" --family gemma2 --sliding-window 24 $GEOM --tied || exit 1
family_forward "$T/g2" "Gemma 2, window 24 on layer 0"

# 600-token windows, a window of 100 in them: still the reference's figures
"$PY" -c "import numpy as np; np.save('$T/w600.npy', np.random.default_rng(1).integers(0, 512, (2, 600)).astype(np.int32))"
W0=$W
W="$T/w600.npy"
"$MK" --out "$T/mi100" --family mistral --sliding-window 100 $GEOM || exit 1
family_forward "$T/mi100" "Mistral, window 100, 600-token windows"
family_forward "$T/mi_full" "Mistral, no window, 600-token windows"
W=$W0

"$MK" --out "$T/ll" $GEOM || exit 1
"$PY" - "$T/ll/config.json" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["sliding_window"] = 16
json.dump(c, open(sys.argv[1], "w"))
PYEOF
if run_rc 2 "$T/log" "$CLOQ" ppl "$T/ll" --tokens "$W" && grep -q "field 'sliding_window' = 16 is set on a LlamaForCausalLM" "$T/log"; then
	ok "a Llama carrying a window is refused by name"
else
	fail "a Llama with sliding_window 16 was not refused by name"
fi
finish
