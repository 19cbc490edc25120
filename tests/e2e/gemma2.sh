#!/bin/sh
# tests/e2e/gemma2.sh - Gemma2ForCausalLM end to end, against an independent forward:
#  - a tiny random Gemma 2 (tests/tools/mkmodel --family gemma2: head_dim 32 != hidden / heads,
#    GQA, four norms a layer applied as 1 + w, gelu-tanh, query_pre_attn_scalar 24, attention and
#    final-logit soft-capping 50 / 30, embeddings times sqrt(hidden), tied): `cloq ppl` equals
#    tests/tools/ref_llama.py's float64 forward (written from transformers' modeling_gemma2, not
#    from cloq's C) to 1e-5 relative;
#  - `cloq inspect` counts every parameter;
#  - convert (INT4 g32, rank 8), verify, export (GPTQ and fp32 dequant): tests/tools/read_export.py
#    validates the files (the four norms) and its own forward over them gives `cloq ppl OUT`
#    (GPTQ: 5e-4 relative, fp16 tensors; fp32 dequant: 2e-6);
#  - a Gemma 2 checkpoint missing one norm is refused (exit 2, naming it).
cd "$(dirname "$0")/../.." || exit 1
. tests/e2e/convert_common.inc
. tests/e2e/need_numpy.inc
. tests/e2e/family_common.inc

M="$T/m"
"$BUILD/tools/mkmodel" --out "$M" --family gemma2 --hidden 64 --intermediate 96 --layers 2 --heads 4 \
	--kv-heads 2 --head-dim 32 --vocab 512 --tied --dtype f32 --max-pos 1024 --quiet || exit 1
family_forward "$M" "Gemma 2 forward"
# bfloat16 weights, untied, two shards with an index, hidden 48: the embedding scale is sqrt(48)
# rounded to bfloat16 (6.9375)
"$BUILD/tools/mkmodel" --out "$T/bf" --family gemma2 --hidden 48 --intermediate 80 --layers 2 --heads 4 \
	--kv-heads 2 --head-dim 16 --vocab 512 --dtype bf16 --max-pos 1024 --shards 2 --quiet || exit 1
family_forward "$T/bf" "Gemma 2 bf16, untied"
family_count "$M"
family_convert_export "$M" "Gemma 2" input_layernorm post_attention_layernorm pre_feedforward_layernorm post_feedforward_layernorm
family_missing "$M" "model.layers.1.pre_feedforward_layernorm.weight" "a Gemma 2 checkpoint"
finish
