#!/bin/sh
# tests/e2e/convert_report.sh - what report.json claims, and determinism.
# stories260K at INT2, INT3, INT4 (group 32, rank 8, calibration text tokenized by the model's own
# tokenizer): for EVERY linear the CLoQ-initialised error ("final") is no worse than the
# zero-initialised LoRA ("zero", i.e. Q alone) nor LoftQ's one-step SVD init ("loftq1"), since
# CLoQ minimises exactly this calibrated objective; the mean quantization error falls with more
# bits. Two identical runs into different OUT dirs give identical bytes, for stories260K and for a
# synthetic model of another geometry (bf16, untied lm_head, 2 safetensors shards, head_dim 16);
# a job keeps its thread count across a resume.
. tests/e2e/convert_common.inc
[ -n "$PY" ] || { echo "SKIP: /usr/bin/python3 is needed to read report.json"; exit 77; }

TEXT="--calib fixtures/text/tinystories_public.txt --nsamples 8 --seqlen 128"

# check_report REPORT BITS LAYERS: the per-linear claims; prints the mean errors.
check_report() {
	"$PY" - "$@" <<'EOF'
import json, math, sys
path, bits, layers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = json.load(open(path))
bad = []
if r.get("finished") is not True: bad.append("finished is not true")
if r["settings"]["bits"] != bits: bad.append("settings.bits = %r" % r["settings"]["bits"])
if [l["layer"] for l in r["layers"]] != list(range(layers)): bad.append("layers %r" % [l["layer"] for l in r["layers"]])
names = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
n = 0
for l in r["layers"]:
    if [e["name"] for e in l["linears"]] != names: bad.append("layer %d linears %r" % (l["layer"], [e["name"] for e in l["linears"]]))
    for e in l["linears"]:
        n += 1
        where = "layer %d %s" % (l["layer"], e["name"])
        v = {k: e.get(k) for k in ("quantized", "zero", "loftq1", "cloq", "final")}
        if not all(isinstance(x, (int, float)) and math.isfinite(x) and x >= 0 for x in v.values()):
            bad.append("%s: non-finite or missing errors %r" % (where, v)); continue
        if v["final"] > v["zero"] + 1e-9: bad.append("%s: final %.9g > zero %.9g" % (where, v["final"], v["zero"]))
        if v["final"] > v["loftq1"] + 1e-9: bad.append("%s: final %.9g > loftq1 %.9g" % (where, v["final"], v["loftq1"]))
        if not 0 < v["quantized"] < 1.5: bad.append("%s: quantized error %.9g implausible" % (where, v["quantized"]))
m = r["mean_calibrated_rel_error"]
if m.get("linears") != n or n != 7 * layers: bad.append("mean over %r linears, %d listed" % (m.get("linears"), n))
for b in bad: print("    " + b)
print("%.6f %.6f %.6f" % (m["quantized"], m["loftq1"], m["final"]))
sys.exit(1 if bad else 0)
EOF
}

prev=
for bits in 2 3 4; do
	O=$T/int$bits
	if ! run_rc 0 "$T/c.log" "$CLOQ" convert $MODEL -o "$O" $TEXT --bits $bits --group-size 32 --rank 8; then
		fail "INT$bits run"
		continue
	fi
	if means=$(check_report "$O/report.json" $bits 5); then
		set -- $means
		ok "INT$bits: final <= zero and <= loftq1 for all 35 linears; mean error quantized $1, loftq1 $2, cloq $3"
		if [ -n "$prev" ] && ! awk -v a="$prev" -v b="$1" 'BEGIN { exit !(b < a) }'; then
			fail "INT$bits: mean quantization error $1 is not below INT$((bits - 1))'s $prev"
		fi
		prev=$1
	else
		echo "$means" | sed '$d'
		fail "INT$bits: report.json claims do not hold (above)"
	fi
done

# determinism: the INT4 job again, into another directory
if run_rc 0 "$T/c.log" "$CLOQ" convert $MODEL -o "$T/int4b" $TEXT --bits 4 --group-size 32 --rank 8 &&
	same_output "$T/int4" "$T/int4b" "INT4 again"; then
	ok "stories260K INT4: a second run into another OUT is byte-identical"
else
	fail "stories260K INT4: a second run differs"
fi

# a second geometry: synthetic, bf16, untied lm_head, 2 input shards, 2 layers
G=$T/synth
"$BUILD/tools/mkmodel" --out "$G" --hidden 96 --intermediate 256 --heads 6 --kv-heads 2 --layers 2 \
	--vocab 512 --max-pos 256 --dtype bf16 --shards 2 --seed 11 --quiet || fail "mkmodel"
SOPTS="$CALIB --bits 3 --group-size 32 --rank 4 --lora-alpha 8"
if run_rc 0 "$T/s1.log" "$CLOQ" convert "$G" -o "$T/s1" $SOPTS &&
	run_rc 0 "$T/s2.log" "$CLOQ" convert "$G" -o "$T/s2" $SOPTS &&
	same_output "$T/s1" "$T/s2" "synthetic again"; then
	ok "synthetic 96/256 model: two runs byte-identical"
	if means=$(check_report "$T/s1/report.json" 3 2); then
		ok "synthetic: final <= zero and <= loftq1 for all 14 linears ($means)"
	else
		echo "$means" | sed '$d'
		fail "synthetic: report.json claims do not hold (above)"
	fi
else
	fail "synthetic model: runs failed or differ"
fi

# OpenBLAS's sums depend on its thread count, so the job records --threads and a resume (or the
# same convert command without --threads) reuses it: a --threads 1 job stopped half-way (the
# 200th I/O call fails) and resumed on all cores' default must give the --threads 1 bytes.
T1="$TEXT --bits 4 --group-size 32 --rank 8"
if run_rc 0 "$T/t1.log" "$CLOQ" convert $MODEL -o "$T/t1ref" $T1 --threads 1 &&
	run_rc 3 "$T/t1.log" env CLOQ_FAULT_IO=200 "$CLOQ" convert $MODEL -o "$T/t1" $T1 --threads 1; then
	if ! run_rc 0 "$T/t1r.log" "$CLOQ" resume "$T/t1"; then
		fail "--threads 1 job: resume"
	elif same_output "$T/t1ref" "$T/t1" "--threads 1 resumed"; then
		ok "a --threads 1 job resumed by 'cloq resume' gives the --threads 1 bytes"
	else
		fail "a --threads 1 job resumed by 'cloq resume' differs from an uninterrupted --threads 1 run"
	fi
	rm -rf "$T/t1"
	run_rc 3 "$T/t1.log" env CLOQ_FAULT_IO=200 "$CLOQ" convert $MODEL -o "$T/t1" $T1 --threads 1
	if ! run_rc 0 "$T/t1r.log" "$CLOQ" convert $MODEL -o "$T/t1" $T1; then
		fail "--threads 1 job: the same convert command without --threads"
	elif same_output "$T/t1ref" "$T/t1" "--threads 1 continued"; then
		ok "a --threads 1 job continued by convert without --threads gives the --threads 1 bytes"
	else
		fail "a --threads 1 job continued without --threads differs from an uninterrupted --threads 1 run"
	fi
	if run_rc 2 "$T/t2.log" "$CLOQ" convert $MODEL -o "$T/t1" $T1 --threads 2 && grep -q "threads: 1 -> 2" "$T/t2.log"; then
		ok "an explicit other --threads is refused as a changed setting"
	else
		fail "convert with --threads 2 into a --threads 1 job: $(tail -n 1 "$T/t2.log")"
	fi
else
	fail "--threads 1 runs (the second must fail at its 200th I/O call with exit 3)"
fi

# Calibration windows forwarded at once (window_slots, cloq_plan.h): the thread count when there
# are at least two windows a thread, else one; recorded in the job, since the forward's sums
# depend on it. --threads 2 with 8 windows: 2; with 3 windows: 1; --threads 1: 1.
slots() { sed -n 's/.*"window_slots":[[:space:]]*\([0-9]*\).*/\1/p' "$1/journal.json"; }
if run_rc 0 "$T/w2.log" "$CLOQ" convert $MODEL -o "$T/w2" $T1 --threads 2 &&
	run_rc 0 "$T/w3.log" "$CLOQ" convert $MODEL -o "$T/w3" $T1 --threads 2 --nsamples 3; then
	if [ "$(slots "$T/w2")" = 2 ] && [ "$(slots "$T/w3")" = 1 ] && [ "$(slots "$T/t1ref")" = 1 ]; then
		ok "window_slots recorded: 2 for 8 windows on 2 threads, 1 for 3 windows, 1 on 1 thread"
	else
		fail "window_slots: $(slots "$T/w2") / $(slots "$T/w3") / $(slots "$T/t1ref"), expected 2 / 1 / 1"
	fi
else
	fail "--threads 2 runs for window_slots: $(tail -n 1 "$T/w2.log" "$T/w3.log")"
fi

# The same job beside one busy process per CPU: the threads take windows, attention items and
# Gram panels in another order, the bytes must not change (the cut into work items depends on
# the sizes alone), and neither may cloq ppl's figure.
busy=""
for _ in 1 2; do
	sh -c 'while :; do :; done' &
	busy="$busy $!"
done
if run_rc 0 "$T/w2b.log" "$CLOQ" convert $MODEL -o "$T/w2b" $T1 --threads 2 &&
	same_output "$T/w2" "$T/w2b" "beside busy processes"; then
	ok "a --threads 2 job beside two busy processes gives the same bytes as alone"
else
	fail "a --threads 2 job beside two busy processes differs from the same job alone"
fi
# cloq's own regions follow the CPUs the process may use (cloq_team_update; CLOQ_TEAM stands in
# for a shrunken affinity mask): one thread running both window slots, all attention items and
# Gram panels must give the same bytes.
if run_rc 0 "$T/w2t.log" env CLOQ_TEAM=1 "$CLOQ" convert $MODEL -o "$T/w2t" $T1 --threads 2 &&
	same_output "$T/w2" "$T/w2t" "team of one"; then
	ok "a --threads 2 job whose own regions run on one thread (CLOQ_TEAM=1) gives the same bytes"
else
	fail "a --threads 2 job with CLOQ_TEAM=1 differs from the same job on two threads"
fi
ppl_busy=$("$CLOQ" ppl "$T/w2" --text fixtures/text/tinystories_public.txt 2>&1 | grep '^perplexity' | cut -d'(' -f1)
kill $busy 2>/dev/null
wait 2>/dev/null
ppl_alone=$("$CLOQ" ppl "$T/w2" --text fixtures/text/tinystories_public.txt 2>&1 | grep '^perplexity' | cut -d'(' -f1)
if [ -n "$ppl_alone" ] && [ "$ppl_alone" = "$ppl_busy" ]; then
	ok "cloq ppl beside busy processes prints the same figure as alone ($ppl_alone)"
else
	fail "cloq ppl: '$ppl_busy' beside busy processes, '$ppl_alone' alone"
fi
finish
