#!/bin/sh
# tests/e2e/phi3.sh - Phi3ForCausalLM (Phi-3, Phi-4): fused self_attn.qkv_proj and mlp.gate_up_proj.
#  - stories260K rewritten in Phi-3's layout (tests/tools/phi3_from_llama.py: the same model, real
#    weights) gives exactly the Llama directory's perplexity, and its GPTQ codes are the same
#    (GPTQ quantizes rows independently, so [q; k; v] as one matrix is q, k, v one by one);
#  - a converted Phi-3 job has four linears a layer, each one calibrated problem (report.json), and
#    its adapter targets qkv_proj / gate_up_proj with the fused shapes PEFT builds for them;
#  - a tiny random Phi-3 (mkmodel --family phi3), with and without a sliding window of 16:
#    `cloq ppl` equals tests/tools/ref_llama.py's float64 forward (1e-5); inspect counts every
#    parameter; convert -> verify -> export (GPTQ, fp32 dequant) -> the export's own forward
#    (read_export.py) gives the job's ppl;
#  - refused by name: a Phi-3 checkpoint labelled LlamaForCausalLM (its qkv_proj), one without a
#    gate_up_proj, longrope factors of the wrong length or with an attention_factor, yarn;
#  - Phi-4-mini's partial_rotary_factor and Phi-3.5's longrope (short and long factors) against
#    the independent forward.
cd "$(dirname "$0")/../.." || exit 1
. tests/e2e/convert_common.inc
. tests/e2e/need_numpy.inc
. tests/e2e/family_common.inc

# (a) real weights: stories260K as Phi-3
"$PY" tests/tools/phi3_from_llama.py "$MODEL" "$T/s3" || exit 1
"$CLOQ" ppl "$MODEL" --tokens "$W" >"$T/pl" 2>&1
"$CLOQ" ppl "$T/s3" --tokens "$W" >"$T/pp" 2>&1
a=$(ppl_of "$T/pl") b=$(ppl_of "$T/pp")
[ -n "$a" ] && [ "$a" = "$b" ] && ok "stories260K as Phi-3: the same perplexity ($a)" || fail "Llama $a vs Phi-3 $b"
ZO="--calib-tokens fixtures/reference/calib_tokens_128x256.npy --nsamples 16 --bits 3 --group-size 32 --rank 8 --quiet"
if run_rc 0 "$T/log" "$CLOQ" convert "$MODEL" -o "$T/jl" $ZO --init zero &&
	run_rc 0 "$T/log" "$CLOQ" convert "$T/s3" -o "$T/jp" $ZO --init zero; then
	"$CLOQ" ppl "$T/jl" --tokens "$W" --no-lora >"$T/ql" 2>&1
	"$CLOQ" ppl "$T/jp" --tokens "$W" --no-lora >"$T/qp" 2>&1
	close "$(ppl_of "$T/qp")" "$(ppl_of "$T/ql")" 1e-6 "GPTQ of the fused linears = GPTQ of their slices"
else
	fail "convert stories260K, Llama and Phi-3 layouts"
fi
if run_rc 0 "$T/log" "$CLOQ" convert "$T/s3" -o "$T/jc" $ZO; then
	"$PY" - "$T/jc/report.json" <<'PYEOF' && ok "report.json: qkv_proj, o_proj, gate_up_proj, down_proj, one problem each" || fail "report.json linears"
import json, sys
r = json.load(open(sys.argv[1]))
for L in r["layers"]:
    names = [(x["name"], x["out"], x["in"]) for x in L["linears"]]
    assert names == [("qkv_proj", 128, 64), ("o_proj", 64, 64), ("gate_up_proj", 344, 64), ("down_proj", 64, 172)], names
PYEOF
	if run_rc 0 "$T/log" "$CLOQ" export "$T/jc" --to "$T/jce"; then
		"$PY" - "$T/jce/adapter" <<'PYEOF' && ok "adapter: qkv_proj lora_B (128, 8), gate_up_proj lora_B (344, 8)" || fail "adapter layout"
import json, struct, sys
d = sys.argv[1]
c = json.load(open(d + "/adapter_config.json"))
assert c["target_modules"] == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"], c["target_modules"]
f = open(d + "/adapter_model.safetensors", "rb")
h = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
p = "base_model.model.model.layers.0."
assert h[p + "self_attn.qkv_proj.lora_B.weight"]["shape"] == [128, 8]
assert h[p + "self_attn.qkv_proj.lora_A.weight"]["shape"] == [8, 64]
assert h[p + "mlp.gate_up_proj.lora_B.weight"]["shape"] == [344, 8]
assert not any("q_proj" in k and "qkv" not in k for k in h), "a q_proj slice in the adapter"
PYEOF
		"$CLOQ" ppl "$T/jc" --tokens "$W" >"$T/pj" 2>&1
		"$CLOQ" ppl "$T/jce" --adapter "$T/jce/adapter" --tokens "$W" >"$T/pe" 2>&1
		close "$(ppl_of "$T/pe")" "$(ppl_of "$T/pj")" 5e-4 "GPTQ export + adapter (cloq ppl) vs the job"
	else
		fail "export of the Phi-3 job"
	fi
else
	fail "convert stories260K as Phi-3 (CLoQ)"
fi

# (b) a tiny random Phi-3 against the independent forward and through export
GEOM="--hidden 64 --intermediate 96 --layers 2 --heads 4 --kv-heads 2 --vocab 512 --max-pos 1024 --quiet"
"$BUILD/tools/mkmodel" --out "$T/m" --family phi3 $GEOM || exit 1
"$BUILD/tools/mkmodel" --out "$T/mw" --family phi3 --sliding-window 16 --dtype f32 --tied --shards 2 $GEOM || exit 1
family_forward "$T/m" "Phi-3 forward"
family_forward "$T/mw" "Phi-3, sliding window 16, tied, sharded"
family_count "$T/m"
family_convert_export "$T/m" "Phi-3" input_layernorm post_attention_layernorm
family_missing "$T/m" "model.layers.1.mlp.gate_up_proj.weight" "a Phi-3 checkpoint"

# (c) refusals
relabel() { # DIR KEY JSON-VALUE...: a copy of $T/m with config keys set
	rm -rf "$1"
	cp -r "$T/m" "$1"
	d=$1
	shift
	"$PY" - "$d/config.json" "$@" <<'PYEOF'
import json, sys
p, kv = sys.argv[1], sys.argv[2:]
c = json.load(open(p))
for k, v in zip(kv[::2], kv[1::2]):
    if v == "DELETE":
        c.pop(k, None)
    else:
        c[k] = json.loads(v)
json.dump(c, open(p, "w"))
PYEOF
}
expect_refusal() { # LABEL REGEX DIR
	if run_rc 2 "$T/log" "$CLOQ" convert "$3" -o "$T/x_$(basename "$3")" $FQO && grep -q "$2" "$T/log"; then
		ok "$1: refused, naming it"
	else
		fail "$1: not refused by name"
	fi
	[ -f "$T/x_$(basename "$3")/journal.json" ] && fail "$1: a journal was written"
}
relabel "$T/asl" architectures '["LlamaForCausalLM"]' model_type '"llama"'
expect_refusal "Phi-3 labelled LlamaForCausalLM" "field 'embd_pdrop' = 0 is not a field of LlamaForCausalLM" "$T/asl"
relabel "$T/asl2" architectures '["LlamaForCausalLM"]' model_type '"llama"' embd_pdrop DELETE resid_pdrop DELETE
expect_refusal "Phi-3 labelled LlamaForCausalLM, Phi-3's keys removed" "self_attn.qkv_proj.weight.*Phi-3" "$T/asl2"
relabel "$T/lr1" rope_scaling '{"type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}'
expect_refusal "longrope with 1 factor for 8 rotary pairs" "has 1 short/long factors; the 16 rotary dims need 8" "$T/lr1"
relabel "$T/lra" rope_scaling '{"type": "longrope", "short_factor": [1,1,1,1,1,1,1,1], "long_factor": [1,1,1,1,1,1,1,1], "attention_factor": 1.2}'
expect_refusal "longrope with attention_factor" "with 'attention_factor'" "$T/lra"
relabel "$T/yarn" rope_scaling '{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}'
expect_refusal "rope_scaling yarn" "type 'yarn'.*releases compute different models" "$T/yarn"

# (d) Phi-4-mini's partial rotary and Phi-3.5's longrope, against the independent forward:
# RoPE on the first 12 (or 8) of 16 dims of each head; longrope's short factors on windows of at
# most original_max_position_embeddings (64) tokens and its long factors beyond, cos and sin times
# sqrt(1 + ln(1024 / 64) / ln 64)
relabel "$T/prf" partial_rotary_factor 0.75
family_forward "$T/prf" "Phi-3, partial_rotary_factor 0.75"
LR='{"type": "longrope", "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.1, 3.8], "long_factor": [1.0, 1.5, 2.5, 4.0, 6.0, 8.5, 11.5, 15.0]}'
relabel "$T/lr" rope_scaling "$LR" original_max_position_embeddings 64
family_forward "$T/lr" "Phi-3, longrope, 256-token windows (long factors)"
"$PY" -c "import numpy as np; np.save('$T/w32.npy', np.load('$W')[:, :32])"
W0=$W
W="$T/w32.npy"
family_forward "$T/lr" "Phi-3, longrope, 32-token windows (short factors)"
W=$W0
relabel "$T/lrp" rope_scaling '{"type": "longrope", "short_factor": [1.0, 1.2, 1.5, 2.0], "long_factor": [1.0, 2.0, 4.0, 8.0]}' \
	original_max_position_embeddings 64 partial_rotary_factor 0.5
family_forward "$T/lrp" "Phi-3, longrope with partial_rotary_factor 0.5"
finish
