#!/bin/sh
# tests/e2e/asym_calib.sh - convert --asym-calib (asymmetric calibration: each linear fitted to what
# the original layer computes from the original model's inputs, through a second activation stream):
#  - the job is recorded (settings.asym_calib), verifies, and reads back;
#  - layer 0's q/k/v see the same inputs on both streams (the embeddings), so their target is W
#    itself: their calibrated errors equal a plain job's exactly; later layers' differ;
#  - at INT2 the quantizer alone already lands much closer to the original (ppl --no-lora below the
#    plain job's), the claim docs/PERFORMANCE.md section 13 measures;
#  - a job killed after its first layer and resumed gives the same bytes as one run straight, and
#    both caches (cache/act_*, cache/fp_*) are gone when it finishes;
#  - on a disk too small for the original stream (a 1 MiB tmpfs, where root may mount one) the job
#    is refused up front with exit 3 naming the room it needs, and resumes once there is room;
#  - --asym-calib with --propagate fp or --one-pass is a usage error (exit 1).
cd "$(dirname "$0")/../.." || exit 1
. tests/e2e/convert_common.inc
. tests/e2e/need_numpy.inc

AO="--calib-tokens fixtures/reference/calib_tokens_128x256.npy --nsamples 16 --bits 2 --group-size 32 --rank 8 --lora-alpha 8 --quiet"
EV=fixtures/reference/public_eval_windows.npy
run_rc 0 "$T/log" "$CLOQ" convert "$MODEL" -o "$T/plain" $AO || fail "plain convert"
run_rc 0 "$T/log" "$CLOQ" convert "$MODEL" -o "$T/asym" $AO --asym-calib || fail "asym convert"
run_rc 0 "$T/log" "$CLOQ" verify "$T/asym" && ok "the asymmetric job verifies" || fail "verify"
grep -q '"asym_calib":[[:space:]]*true' "$T/asym/journal.json" && ok "settings.asym_calib recorded" ||
	fail "settings.asym_calib not in the journal"
ls "$T/asym/cache" 2>/dev/null | grep -q . && fail "caches left in $T/asym/cache: $(ls "$T/asym/cache")"
"$PY" - "$T/plain/report.json" "$T/asym/report.json" <<'PYEOF' && ok "layer 0 q/k/v identical to the plain job's, later layers not" || fail "report comparison"
import json, sys
a, b = (json.load(open(p))["layers"] for p in sys.argv[1:])
key = lambda L, i: (L[i]["quantized"], L[i]["final"])
for i in range(3):
    assert key(a[0]["linears"], i) == key(b[0]["linears"], i), (i, key(a[0]["linears"], i), key(b[0]["linears"], i))
assert any(key(a[l]["linears"], i) != key(b[l]["linears"], i) for l in range(1, len(a)) for i in range(7))
PYEOF
q0=$("$CLOQ" ppl "$T/plain" --tokens "$EV" --no-lora | awk '{print $2}')
q1=$("$CLOQ" ppl "$T/asym" --tokens "$EV" --no-lora | awk '{print $2}')
"$PY" -c "import sys; sys.exit(0 if float('$q1') < 0.8 * float('$q0') else 1)" &&
	ok "INT2 quantizer alone: ppl $q1 with --asym-calib, $q0 without" || fail "asym GPTQ $q1 vs plain $q0"

# killed after the first layer, resumed: the same bytes
"$CLOQ" convert "$MODEL" -o "$T/kill" $AO --asym-calib >"$T/klog" 2>&1 &
pid=$!
i=0
while [ $i -lt 600 ] && ! grep -q '"done":[[:space:]]*true' "$T/kill/journal.json" 2>/dev/null; do
	sleep 0.01
	i=$((i + 1))
done
kill -9 "$pid" 2>/dev/null
wait "$pid"
if run_rc 0 "$T/log" "$CLOQ" resume "$T/kill"; then
	same_output "$T/asym" "$T/kill" "killed after layer 1 and resumed" && ok "resumed asymmetric job: same bytes" ||
		fail "resumed asymmetric job differs"
else
	fail "resume of the killed asymmetric job"
fi

# a disk too small for the original stream: refused up front (exit 3), resumable once there is room
M=$T/mnt
mkdir -p "$M"
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=1m cloq_asym "$M" 2>/dev/null; then
	trap 'umount "$M" 2>/dev/null; rm -rf "$T"' EXIT
	if run_rc 3 "$T/log" "$CLOQ" convert "$MODEL" -o "$M/o" $AO --asym-calib &&
		grep -q "asym-calib keeps the original model's activations there too" "$T/log"; then
		ok "--asym-calib on a 1 MiB disk: refused up front, naming the room it needs"
		if mount -o remount,size=64m "$M" && run_rc 0 "$T/log" "$CLOQ" resume "$M/o"; then
			same_output "$T/asym" "$M/o" "resumed with room" && ok "resumed with room: the same bytes" ||
				fail "resumed with room: differs"
		else
			fail "resume after growing the disk"
		fi
	else
		fail "--asym-calib on a 1 MiB disk: not refused with exit 3 naming the room"
	fi
	umount "$M" 2>/dev/null
else
	echo "skip: tmpfs (needs root and mount)"
fi

if run_rc 1 "$T/log" "$CLOQ" convert "$MODEL" -o "$T/u1" $AO --asym-calib --propagate fp && grep -q "asym-calib with --propagate fp" "$T/log"; then
	ok "--asym-calib --propagate fp: usage error"
else
	fail "--asym-calib --propagate fp not refused"
fi
if run_rc 1 "$T/log" "$CLOQ" convert "$MODEL" -o "$T/u2" $AO --asym-calib --one-pass; then
	ok "--asym-calib --one-pass: usage error"
else
	fail "--asym-calib --one-pass not refused"
fi
finish
