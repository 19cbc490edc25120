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
. tests/e2e/family_common.inc

M="$T/m"
"$BUILD/tools/mkmodel" --out "$M" --family gemma3 --hidden 64 --intermediate 96 --layers 2 --heads 4 \
	--kv-heads 2 --head-dim 32 --vocab 512 --tied --dtype f32 --max-pos 1024 --rope-theta 1000000 --quiet || exit 1
family_forward "$M" "Gemma 3 forward"
# bfloat16 weights, untied, two shards with an index, hidden 48: the embedding scale is sqrt(48)
# rounded to bfloat16 (6.9375)
"$BUILD/tools/mkmodel" --out "$T/bf" --family gemma3 --hidden 48 --intermediate 80 --layers 2 --heads 4 \
	--kv-heads 2 --head-dim 16 --vocab 512 --dtype bf16 --max-pos 1024 --rope-theta 1000000 --shards 2 --quiet || exit 1
family_forward "$T/bf" "Gemma 3 bf16, untied"
family_count "$M"
family_convert_export "$M" "Gemma 3" input_layernorm post_attention_layernorm pre_feedforward_layernorm post_feedforward_layernorm self_attn.q_norm self_attn.k_norm
family_missing "$M" "model.layers.1.self_attn.q_norm.weight" "a Gemma 3 checkpoint"
finish
