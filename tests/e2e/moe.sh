#!/bin/sh
# tests/e2e/moe.sh - mixtures of experts (MixtralForCausalLM, Qwen2MoeForCausalLM with its shared
# expert and a dense layer, Qwen3MoeForCausalLM), on tiny random checkpoints made by
# tests/tools/mkmodel:
#  - `cloq ppl` equals tests/tools/ref_llama.py's float64 forward (softmax routing, top-k, the
#    weights renormalised where the family does, each expert on the rows routed to it) to 1e-5, its
#    first window's logits to 1e-4; also tied, sharded, top-1 and top-all variants;
#  - `cloq inspect` counts every parameter and plans the expert-by-expert conversion;
#  - `cloq convert`, expert by expert (docs/DESIGN.md "Mixtures of experts"), on all three families:
#    with --propagate fp each sparse layer sees the original model's input, so the tokens report.json
#    gives each expert must be the float64 reference forward's routing, and the few-token rule's
#    fills follow from them (tests/tools/moe_routing.py); `cloq verify` is clean and `cloq ppl OUT`
#    reads the job; its GPTQ export + PEFT adapter has the checkpoint's module names (router dense,
#    in modules_not_converted; every expert linear targeted) and `cloq ppl` of it equals the job's; a checkpoint whose router starves experts converts with finite errors, the
#    starved experts named in experts_filled; runs killed at moments spread over the job, resumed,
#    give the reference's bytes; --one-pass and --asym-calib are refused by name; a checkpoint
#    missing one expert's tensor is refused naming it.
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
grep -q "^    peak memory .*experts' rows" "$T/insp" && ok "inspect plans the expert stage" ||
	fail "inspect: $(grep '^    peak memory' "$T/insp")"

# expert-by-expert conversion, checked against the reference routing
for m in mx q2 q3b; do
	rm -rf "$T/fp_$m"
	if run_rc 0 "$T/log" "$CLOQ" convert "$T/$m" -o "$T/fp_$m" $FQO --propagate fp &&
		run_rc 0 "$T/log" "$CLOQ" verify "$T/fp_$m"; then
		ok "$m: converted expert by expert (--propagate fp) and verified"
	else
		fail "$m: convert --propagate fp / verify"
		continue
	fi
	if "$PY" tests/tools/moe_routing.py counts "$T/$m" "$T/fp_$m" >"$T/cnt" 2>&1; then
		ok "$m: tokens per expert equal the reference routing; fills as the few-token rule says ($(tail -n 1 "$T/cnt"))"
	else
		cat "$T/cnt"
		fail "$m: report.json's experts disagree with the reference routing"
	fi
done
# the default propagation (deq(Q) + LoRA of every expert feeds the next layer), and ppl of the job
for m in q2 mx q3b; do
	rm -rf "$T/j_$m"
	if run_rc 0 "$T/log" "$CLOQ" convert "$T/$m" -o "$T/j_$m" $FQO && run_rc 0 "$T/log" "$CLOQ" verify "$T/j_$m" &&
		run_rc 0 "$T/pj" "$CLOQ" ppl "$T/j_$m" --tokens "$W" && run_rc 0 "$T/po" "$CLOQ" ppl "$T/$m" --tokens "$W"; then
		a=$(ppl_of "$T/pj") b=$(ppl_of "$T/po")
		"$PY" -c "import math, sys; a, b = $a, $b; sys.exit(0 if math.isfinite(a) and abs(a - b) < 0.05 * b else 1)" &&
			ok "$m: job converted, verified, its ppl $a near the original's $b" || fail "$m: job ppl $a, original $b"
	else
		fail "$m: convert / verify / ppl of the job"
		continue
	fi
	# the export: GPTQ experts under the checkpoint's names, the router dense, the adapter on every
	# expert linear; read back (unpacked GPTQ + PEFT adapter) it computes what the job computes
	E="$T/exports/$m" # a parent that does not exist yet: made, as convert -o makes OUT's
	rm -rf "$T/exports"
	if run_rc 0 "$T/log" "$CLOQ" export "$T/j_$m" --to "$E" --dtype fp32 &&
		run_rc 0 "$T/pe" "$CLOQ" ppl "$E" --adapter "$E/adapter" --tokens "$W"; then
		close "$(ppl_of "$T/pe")" "$(ppl_of "$T/pj")" 1e-6 "$m: ppl of the GPTQ export + adapter vs the job's"
		"$PY" tests/tools/moe_routing.py names "$T/$m" "$E" >"$T/nm" 2>&1 &&
			ok "$m: export and adapter name every module as the checkpoint does ($(tail -n 1 "$T/nm"))" ||
			{ cat "$T/nm"; fail "$m: the export's names"; }
	else
		fail "$m: export / ppl of the export"
	fi
done
# the routing pass's h stash in RAM, on disk, or no stashes at all (--full-passes), and one thread
# against two window slots' worth: the same shards
for how in "CLOQ_STASH=disk" "--full-passes"; do
	rm -rf "$T/v_q2"
	case "$how" in
	CLOQ_STASH=*) CLOQ_STASH=disk run_rc 0 "$T/log" "$CLOQ" convert "$T/q2" -o "$T/v_q2" $FQO ;;
	*) run_rc 0 "$T/log" "$CLOQ" convert "$T/q2" -o "$T/v_q2" $FQO $how ;;
	esac
	if [ $? = 0 ] && cmp -s "$T/j_q2/shards/layer_00001.cloqshard" "$T/v_q2/shards/layer_00001.cloqshard" &&
		cmp -s "$T/j_q2/manifest.json" "$T/v_q2/manifest.json"; then
		ok "q2 with $how: the same shards as with the stashes in RAM"
	else
		fail "q2 with $how: shards differ from the default run's"
	fi
done
# other quantizers and options through the expert loop: convert, verify, ppl of the job, export
for opts in "--quantizer rtn --group-size 32" "--quantizer nf" "--init loftq --group-size 32" \
	"--act-order --magr --group-size 32" "--cache-dtype bf16 --propagate lora --group-size 32"; do
	rm -rf "$T/o_v" "$T/e_v"
	fmt=
	case "$opts" in *"quantizer nf"*) fmt="--format dequant" ;; esac
	if run_rc 0 "$T/log" "$CLOQ" convert "$T/mx" -o "$T/o_v" --calib-tokens fixtures/reference/calib_tokens_128x256.npy \
		--nsamples 8 --bits 4 --rank 8 --quiet $opts && run_rc 0 "$T/log" "$CLOQ" verify "$T/o_v" &&
		run_rc 0 "$T/pv" "$CLOQ" ppl "$T/o_v" --tokens "$W" && run_rc 0 "$T/log" "$CLOQ" export "$T/o_v" --to "$T/e_v" $fmt &&
		run_rc 0 "$T/pe" "$CLOQ" ppl "$T/e_v" --adapter "$T/e_v/adapter" --tokens "$W"; then
		close "$(ppl_of "$T/pe")" "$(ppl_of "$T/pv")" 1e-4 "mx $opts: export + adapter vs the job"
	else
		fail "mx $opts: convert / verify / ppl / export"
	fi
done

# experts that no calibration token reaches
"$PY" tests/tools/moe_routing.py starve "$T/q3b" "$T/st" || fail "making the starving checkpoint"
rm -rf "$T/fp_st"
if run_rc 0 "$T/log" "$CLOQ" convert "$T/st" -o "$T/fp_st" $FQO --propagate fp && "$CLOQ" verify "$T/fp_st" >/dev/null 2>&1 &&
	"$PY" tests/tools/moe_routing.py counts "$T/st" "$T/fp_st" >"$T/cnt" 2>&1 &&
	"$PY" - "$T/fp_st/report.json" <<'PYEOF'
import json, sys
L = json.load(open(sys.argv[1]))["layers"][0]
starved = [e["expert"] for e in L["experts"] if e["tokens"] == 0]
sys.exit(0 if 5 in starved and all(e in L["experts_filled"] for e in starved) else 1)
PYEOF
then
	ok "experts no token reaches: finite, filled and named in report.json ($(tail -n 1 "$T/cnt"))"
else
	cat "$T/cnt"
	fail "starved experts"
fi
for opt in --one-pass --asym-calib; do
	if run_rc 1 "$T/log" "$CLOQ" convert "$T/q3b" -o "$T/x" $FQO $opt && grep -q "mixture of experts.*$opt" "$T/log" &&
		[ ! -f "$T/x/journal.json" ]; then
		ok "$opt is refused for a mixture of experts, by name, before any work"
	else
		fail "$opt on a mixture of experts: $(tail -n 1 "$T/log")"
	fi
done
NFO="--calib-tokens fixtures/reference/calib_tokens_128x256.npy --nsamples 8 --bits 4 --rank 8 --quiet --quantizer nf4-bnb"
if run_rc 1 "$T/log" "$CLOQ" convert "$T/mx" -o "$T/x" $NFO && grep -q "mixture of experts.*bitsandbytes.*router" "$T/log" &&
	[ ! -f "$T/x/journal.json" ]; then
	ok "--quantizer nf4-bnb is refused for a mixture of experts (bitsandbytes would quantize the router)"
else
	fail "nf4-bnb on a mixture of experts: $(tail -n 1 "$T/log")"
fi

# kill at moments spread over a job (mid-expert included), resume: the reference's bytes
JOB="$T/q3b --calib-tokens fixtures/reference/calib_tokens_128x256.npy --nsamples 32 --bits 4 --group-size 32 --rank 8"
rm -rf "$T/kref"
t0=$(ms)
run_rc 0 "$T/log" "$CLOQ" convert $JOB -o "$T/kref" || fail "the reference run"
dur=$(($(ms) - t0))
i=1
while [ $i -le 6 ]; do
	O="$T/k$i"
	rm -rf "$O"
	d=$((dur * (10 + (i - 1) * 16) / 100))
	"$CLOQ" convert $JOB -o "$O" >"$T/kl" 2>&1 &
	pid=$!
	sleep "$(awk -v d="$d" 'BEGIN { printf "%.3f", d / 1000 }')"
	kill -9 $pid 2>/dev/null
	{ wait $pid; } 2>/dev/null
	rc=$?
	where=$(grep -E '^layer' "$T/kl" | tail -n 1 | cut -c1-40)
	if [ -f "$O/journal.json" ]; then "$CLOQ" resume "$O" >"$T/rl" 2>&1; else "$CLOQ" convert $JOB -o "$O" >"$T/rl" 2>&1; fi
	if same_output "$T/kref" "$O" "kill $i"; then
		ok "killed after $d ms (exit $rc, at '$where'), resumed: identical to the reference"
	else
		fail "killed after $d ms (exit $rc, at '$where'): the resumed job differs"
	fi
	rm -rf "$O"
	i=$((i + 1))
done

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
if run_rc 2 "$T/log" "$CLOQ" convert "$T/nok" -o "$T/xnok" $FQO && grep -q "model.layers.1.mlp.experts.5.up_proj.weight' is missing" "$T/log" &&
	[ ! -f "$T/xnok/journal.json" ]; then
	ok "convert refuses the checkpoint missing an expert tensor, naming it, before any work"
else
	fail "convert of a checkpoint missing an expert tensor: $(tail -n 1 "$T/log")"
fi
finish
