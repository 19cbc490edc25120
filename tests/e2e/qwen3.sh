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
. tests/e2e/family_common.inc

M="$T/m"
"$BUILD/tools/mkmodel" --out "$M" --family qwen3 --hidden 64 --intermediate 96 --layers 2 --heads 4 \
	--kv-heads 2 --head-dim 32 --vocab 512 --tied --dtype f32 --max-pos 1024 --quiet || exit 1
family_forward "$M" "Qwen3 forward"
# bfloat16, untied, two shards with an index
"$BUILD/tools/mkmodel" --out "$T/bf" --family qwen3 --hidden 64 --intermediate 96 --layers 2 --heads 4 \
	--kv-heads 2 --head-dim 32 --vocab 512 --dtype bf16 --max-pos 1024 --shards 2 --quiet || exit 1
family_forward "$T/bf" "Qwen3 bf16, untied, sharded"
family_count "$M"
family_convert_export "$M" "Qwen3" self_attn.q_norm self_attn.k_norm
family_missing "$M" "model.layers.1.self_attn.k_norm.weight" "a Qwen3 checkpoint"
finish
