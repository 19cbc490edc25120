#!/bin/sh
# make demo: convert the bundled stories260K model at INT2 and INT4 with the bundled calibration
# text, verify, export, and print perplexities on the bundled evaluation windows.
#
# Calibration: fixtures/text/tinystories_calib.txt (TinyStories 0..599); evaluation:
# fixtures/reference/public_eval_windows.npy (stories 600..699, 151 windows of 256 tokens), so the
# two never overlap. Group 32, rank 8: the model is 64 wide, so rank 64 would be full rank.
set -eu
CLOQ=${CLOQ:-./cloq}
OUT=${DEMO_OUT:-demo-out}
CALIB=fixtures/text/tinystories_calib.txt
EVAL=fixtures/reference/public_eval_windows.npy
COMMON="--calib $CALIB --nsamples ${DEMO_NSAMPLES:-64} --seqlen 256 --group-size 32 --rank 8 --quiet"
rm -rf "$OUT"
mkdir -p "$OUT"
start=$(date +%s)

ppl() { $CLOQ ppl "$@" --tokens $EVAL | sed -n 's/^perplexity \([0-9.]*\).*/\1/p'; }

echo "cloq demo: stories260K (260K parameters), calibration $CALIB, evaluation $EVAL"
orig=$(ppl fixtures/stories260K)
for b in 2 4; do
    # Three jobs per width, two at a time (each single-threaded: this model is too small to share).
    $CLOQ convert fixtures/stories260K -o "$OUT/int$b-cloq" --bits $b $COMMON --threads 1 &
    p1=$!
    $CLOQ convert fixtures/stories260K -o "$OUT/int$b-loftq" --bits $b $COMMON --threads 1 --init loftq --loftq-iters 1 &
    p2=$!
    wait $p1
    wait $p2
    $CLOQ convert fixtures/stories260K -o "$OUT/int$b-altcloq" --bits $b $COMMON --threads 2 --cloq-iters 5
    # the recommended init: alternating CLoQ with asymmetric calibration, the next layer fed through
    # Q + LoRA (docs/PERFORMANCE.md section 13: under 2x one-shot CLoQ's time here)
    $CLOQ convert fixtures/stories260K -o "$OUT/int$b-asym" --bits $b $COMMON --threads 2 --cloq-iters 5 \
        --asym-calib --propagate lora
    $CLOQ verify "$OUT/int$b-cloq" >/dev/null
    $CLOQ export "$OUT/int$b-cloq" --to "$OUT/int$b-cloq-export" >/dev/null
    eval "q$b=\$(ppl $OUT/int$b-cloq --no-lora)"
    eval "c$b=\$(ppl $OUT/int$b-cloq)"
    eval "l$b=\$(ppl $OUT/int$b-loftq)"
    eval "a$b=\$(ppl $OUT/int$b-altcloq)"
    eval "s$b=\$(ppl $OUT/int$b-asym)"
done
# the QLoRA base: bitsandbytes NF4 of the original checkpoint (what load_in_4bit, nf4, double
# quantization computes), with a CLoQ or LoftQ adapter; export: the adapter alone
NF4="--quantizer nf4-bnb --bnb-double-quant --calib $CALIB --nsamples ${DEMO_NSAMPLES:-64} --seqlen 256 --rank 8 --quiet"
$CLOQ convert fixtures/stories260K -o "$OUT/nf4-cloq" $NF4 --threads 1 &
p1=$!
$CLOQ convert fixtures/stories260K -o "$OUT/nf4-loftq" $NF4 --threads 1 --init loftq &
p2=$!
wait $p1
wait $p2
$CLOQ verify "$OUT/nf4-cloq" >/dev/null
$CLOQ export "$OUT/nf4-cloq" --to "$OUT/nf4-cloq-adapter" >/dev/null
nq=$(ppl "$OUT/nf4-cloq" --no-lora)
nc=$(ppl "$OUT/nf4-cloq")
nl=$(ppl "$OUT/nf4-loftq")
echo
echo "perplexity on $EVAL (lower is better)"
printf '%-40s %10s %10s\n' "model" "INT2 g32" "INT4 g32"
printf '%-40s %10s %10s\n' "original (fp32)" "$orig" "$orig"
printf '%-40s %10s %10s\n' "GPTQ alone" "$q2" "$q4"
printf '%-40s %10s %10s\n' "GPTQ + LoftQ (T=1), rank 8" "$l2" "$l4"
printf '%-40s %10s %10s\n' "GPTQ + CLoQ, rank 8" "$c2" "$c4"
printf '%-40s %10s %10s\n' "GPTQ + alternating CLoQ (T=5), rank 8" "$a2" "$a4"
printf '%-40s %10s %10s\n' "  + asymmetric, via LoRA (recommended)" "$s2" "$s4"
echo
printf '%-40s %10s\n' "QLoRA base: bitsandbytes NF4, dq" "NF4 b64"
printf '%-40s %10s\n' "NF4 alone (QLoRA's usual start, B = 0)" "$nq"
printf '%-40s %10s\n' "NF4 + LoftQ (T=1), rank 8" "$nl"
printf '%-40s %10s\n' "NF4 + CLoQ, rank 8" "$nc"
echo
echo "the NF4 + CLoQ adapter for the stock checkpoint (QLoRA load lines in its README.md): $OUT/nf4-cloq-adapter"
echo "jobs, reports (report.json) and the INT2/INT4 GPTQ + PEFT exports are in $OUT/ ($(( $(date +%s) - start )) s)"
