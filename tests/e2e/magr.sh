#!/bin/sh
# tests/e2e/magr.sh - `convert --magr` (MagR before GPTQ, the CLoQ paper's quantizer):
#  - refused with the NormalFloat quantizers (exit 1); with LoftQ and alternating CLoQ every
#    re-quantization of W - sBA is MagR'd;
#  - recorded in the job's settings; the same bytes twice;
#  - on stories260K at INT2 g32 (8 calibration windows), MagR + GPTQ beats GPTQ alone, and with
#    the CLoQ adapter too, in perplexity on the public windows (measured: 143.8 -> 131.3 and
#    54.0 -> 51.1; the demo's 64 windows: 156.8 -> 125.8 and 49.9 -> 42.1).
cd "$(dirname "$0")/../.." || exit 1
. tests/e2e/convert_common.inc

expect1() { # LABEL PATTERN ARGS...
	label=$1 pat=$2
	shift 2
	if run_rc 1 "$T/log" "$CLOQ" convert $MODEL -o "$T/x" $CALIB "$@" && grep -q -- "$pat" "$T/log"; then
		ok "$label"
	else
		fail "$label"
	fi
}
expect1 "--magr with nf4-bnb refused" "does not apply to --quantizer nf4-bnb" --quantizer nf4-bnb --magr
[ -e "$T/x" ] && fail "a refused convert created $T/x"

if run_rc 0 "$T/log" "$CLOQ" convert $MODEL -o "$T/m" $CALIB $QOPTS --magr --quiet &&
	run_rc 0 "$T/log" "$CLOQ" convert $MODEL -o "$T/m2" $CALIB $QOPTS --magr --quiet &&
	run_rc 0 "$T/log" "$CLOQ" convert $MODEL -o "$T/p" $CALIB $QOPTS --quiet; then
	same_output "$T/m" "$T/m2" "magr twice" && ok "--magr: the same bytes twice"
	tr -d ' \t\n' < "$T/m/journal.json" | grep -q '"magr":true' && ok "settings record magr" ||
		fail "settings lack magr"
	tr -d ' \t\n' < "$T/p/journal.json" | grep -q '"magr"' && fail "a job without --magr records it"
	W=fixtures/reference/public_eval_windows.npy
	p() { "$CLOQ" ppl "$@" --tokens $W | sed -n 's/^perplexity \([0-9.]*\).*/\1/p'; }
	mq=$(p "$T/m" --no-lora) pq=$(p "$T/p" --no-lora) mc=$(p "$T/m") pc=$(p "$T/p")
	if awk -v a="$mq" -v b="$pq" -v c="$mc" -v d="$pc" 'BEGIN { exit !(a < b && c < d) }'; then
		ok "INT2: MagR + GPTQ $mq < GPTQ $pq; with CLoQ $mc < $pc"
	else
		fail "INT2: MagR + GPTQ $mq vs GPTQ $pq, with CLoQ $mc vs $pc"
	fi
else
	fail "convert --magr"
fi
# alternating CLoQ (T=3) with MagR in each re-quantization (measured 42.35 -> 40.92)
if run_rc 0 "$T/log" "$CLOQ" convert $MODEL -o "$T/a" $CALIB $QOPTS --cloq-iters 3 --quiet &&
	run_rc 0 "$T/log" "$CLOQ" convert $MODEL -o "$T/am" $CALIB $QOPTS --cloq-iters 3 --magr --quiet; then
	pa=$(p "$T/a") pam=$(p "$T/am")
	if awk -v a="$pam" -v b="$pa" 'BEGIN { exit !(a < b) }'; then
		ok "INT2 alternating CLoQ (T=3): with MagR $pam < $pa"
	else
		fail "INT2 alternating CLoQ (T=3): with MagR $pam, without $pa"
	fi
else
	fail "convert --magr --cloq-iters 3"
fi
finish
