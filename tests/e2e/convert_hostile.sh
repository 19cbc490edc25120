#!/bin/sh
# tests/e2e/convert_hostile.sh - what users of an unattended tool do to a running job, and what
# cloq must do about it (io/cloq_lock.h, src/job/cloq_inputs.h, src/job/cloq_interrupt.h):
#  - two converts started together on one OUT (20 trials): exactly one runs, the other exits 5
#    naming the pid; the winner's output is the reference's, byte for byte;
#  - resume / convert --force while a run is active: exit 5, the running job unharmed;
#  - a weight byte flipped between runs in a layer already converted: resume exits 2 naming the
#    tensor; flipped back: resume finishes identical to the reference; flipped in a layer not yet
#    converted: the job goes on, and its output equals a fresh conversion of the edited model;
#  - the model file replaced (same bytes, new inode) or edited during a run: exit 2 before its
#    bytes are used; resume re-checks the finished layers' tensors and finishes identically;
#  - a job started by one build of cloq and resumed by another (build/tools/cloq-other-version):
#    exit 2 naming both versions; the same build resumes it exactly; --force starts over;
#  - SIGTERM at 10 moments spread over a run: exit 143 with "cloq resume" in the message (or 0
#    when it came after the end), no temp file left, resume identical; SIGINT: 130; a second
#    signal stops at once.
. tests/e2e/convert_common.inc

# the model is a copy, edited in place below
M=$T/model
cp -r "$MODEL" "$M"
REF=$T/ref
JOB="$M $CALIB $QOPTS"
t0=$(ms)
run_rc 0 "$T/ref.log" "$CLOQ" convert $JOB -o "$REF" || { fail "reference run"; finish; }
dur=$(($(ms) - t0))
echo "reference run: ${dur} ms"

# ---- one writer per job ------------------------------------------------------------------------
one=0 both=0 other=0
i=1
while [ $i -le 20 ]; do
	O=$T/race$i
	"$CLOQ" convert $JOB -o "$O" >"$T/a.log" 2>&1 &
	pa=$!
	"$CLOQ" convert $JOB -o "$O" >"$T/b.log" 2>&1 &
	pb=$!
	wait $pa
	ra=$?
	wait $pb
	rb=$?
	case "$ra.$rb" in
	0.5 | 5.0)
		[ $ra = 5 ] && l=$T/a.log || l=$T/b.log
		if grep -q "being written by another cloq process (pid [0-9]*" "$l"; then
			one=$((one + 1))
		else
			fail "race $i: the refusal does not name the pid: $(tail -n 1 "$l")"
		fi
		same_output "$REF" "$O" "race $i" || fail "race $i: the winner's output differs from the reference"
		;;
	0.0) both=$((both + 1)) ;; # the second started after the first had finished: no race
	*)
		other=$((other + 1))
		fail "race $i: exits $ra and $rb"
		tail -n 3 "$T/a.log" "$T/b.log" | sed 's/^/    /'
		;;
	esac
	rm -rf "$O"
	i=$((i + 1))
done
echo "two converts at once, 20 trials: $one with one refused (exit 5), $both sequential, $other other"
[ $one -ge 15 ] && ok "two converts on one OUT: exactly one runs ($one of 20 raced)" ||
	fail "only $one of 20 trials raced: the test did not exercise the lock"

# resume and --force against a running job
O=$T/busy
"$CLOQ" convert $JOB -o "$O" >"$T/busy.log" 2>&1 &
pb=$!
n=0
while [ ! -f "$O/journal.json" ] && [ $n -lt 2000 ]; do sleep 0.005; n=$((n + 1)); done
if kill -0 $pb 2>/dev/null; then
	run_rc 5 "$T/r.log" "$CLOQ" resume "$O" && grep -q "pid $pb" "$T/r.log" &&
		ok "resume of a running job: exit 5 naming pid $pb" || fail "resume of a running job (above)"
	run_rc 5 "$T/f.log" "$CLOQ" convert $JOB -o "$O" --force &&
		ok "convert --force on a running job: exit 5" || fail "convert --force on a running job"
	run_rc 5 "$T/v.log" "$CLOQ" verify "$O" && ok "verify of a running job: exit 5" ||
		fail "verify of a running job"
else
	echo "  (the job finished before the checks could run: skipped)"
fi
wait $pb || fail "the running job failed after the refused attempts: $(tail -n 2 "$T/busy.log")"
same_output "$REF" "$O" "busy" && ok "the running job finished unharmed, identical to the reference" ||
	fail "the running job's output differs after the refused attempts"
rm -rf "$O"

# ---- content fingerprints ----------------------------------------------------------------------
# flip_byte FILE TENSOR: xor one byte in the middle of a tensor's data
flip_byte() {
	"$PY" - "$1" "$2" <<'EOF'
import json, struct, sys
p, name = sys.argv[1], sys.argv[2]
with open(p, "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
    a, b = h[name]["data_offsets"]
    off = 8 + n + (a + b) // 2
    f.seek(off); c = f.read(1); f.seek(off); f.write(bytes([c[0] ^ 0x10]))
EOF
}
# stop_after_layer OUT N LOG: run the job on $M, SIGKILL it once layer N's shard exists
stop_after_layer() {
	"$CLOQ" convert $M $CALIB $QOPTS -o "$1" >"$3" 2>&1 &
	p=$!
	while kill -0 $p 2>/dev/null && [ ! -f "$1/shards/layer_0000$2.cloqshard" ]; do sleep 0.002; done
	kill -9 $p 2>/dev/null
	wait $p
}
if [ -n "$PY" ]; then
	O=$T/edit
	stop_after_layer "$O" 1 "$T/e1.log"
	grep -q '"done":[[:space:]]*true' "$O/journal.json" || echo "  (no layer was done when the run was stopped)"
	flip_byte "$M/model.safetensors" model.layers.0.mlp.down_proj.weight
	if run_rc 2 "$T/e2.log" "$CLOQ" resume "$O" && grep -q "model.layers.0.mlp.down_proj.weight" "$T/e2.log"; then
		ok "a byte flipped in layer 0 between runs: resume refused, naming the tensor"
	else
		fail "a byte flipped in a converted layer was not refused with its name"
	fi
	flip_byte "$M/model.safetensors" model.layers.0.mlp.down_proj.weight # back
	if run_rc 0 "$T/e3.log" "$CLOQ" resume "$O" && same_output "$REF" "$O" "restored"; then
		ok "the byte restored (new mtime, same content): resume finishes identical to the reference"
	else
		fail "restored model: resume failed or differs"
	fi
	rm -rf "$O"

	# a layer not converted yet may change: the output is the conversion of the edited model
	stop_after_layer "$O" 0 "$T/e4.log"
	flip_byte "$M/model.safetensors" model.layers.4.self_attn.q_proj.weight
	run_rc 0 "$T/e5.log" "$CLOQ" resume "$O" || fail "resume after an edit of an unconverted layer"
	run_rc 0 "$T/e6.log" "$CLOQ" convert $M $CALIB $QOPTS -o "$T/fresh" || fail "fresh run on the edited model"
	if same_output "$T/fresh" "$O" "edited later layer" && ! cmp -s "$REF/shards/layer_00004.cloqshard" "$O/shards/layer_00004.cloqshard"; then
		ok "an edit of a layer not yet converted: the job equals a fresh conversion of the edited model"
	else
		fail "edit of an unconverted layer: output is not the edited model's conversion"
	fi
	flip_byte "$M/model.safetensors" model.layers.4.self_attn.q_proj.weight # back
	rm -rf "$O" "$T/fresh"
else
	echo "  (no python3: byte-flip checks skipped)"
fi

# the model file replaced during a run (same bytes, another inode): stopped before use
O=$T/replaced
"$CLOQ" convert $M $CALIB $QOPTS -o "$O" >"$T/rp.log" 2>&1 &
p=$!
while kill -0 $p 2>/dev/null && [ ! -f "$O/shards/layer_00000.cloqshard" ]; do sleep 0.002; done
cp "$M/model.safetensors" "$M/new.tmp" && mv "$M/new.tmp" "$M/model.safetensors"
wait $p
rc=$?
if [ $rc = 2 ] && grep -q "modified or replaced during the run" "$T/rp.log"; then
	ok "model file replaced during the run: exit 2 before its bytes were used"
elif [ $rc = 0 ]; then
	echo "  (the run finished before the file was replaced: not exercised)"
else
	fail "model file replaced during the run: exit $rc: $(tail -n 1 "$T/rp.log")"
fi
if run_rc 0 "$T/rp2.log" "$CLOQ" resume "$O" && same_output "$REF" "$O" "replaced"; then
	ok "resume after the replacement: the finished layers re-checked, identical to the reference"
else
	fail "resume after the model file was replaced"
fi
rm -rf "$O"

# ---- a job is made by one build ----------------------------------------------------------------
OTHER=$BUILD/tools/cloq-other-version
if [ -x "$OTHER" ]; then
	O=$T/version
	stop_after_layer "$O" 1 "$T/ver.log"
	if run_rc 2 "$T/ver2.log" "$OTHER" resume "$O" && grep -q "another build of cloq" "$T/ver2.log" &&
		grep -q "cloq 0.0.0-other-build" "$T/ver2.log" && grep -q "cloq $("$CLOQ" --version | head -n 1 | cut -d' ' -f2)" "$T/ver2.log"; then
		ok "resume by another version: refused (exit 2) naming both versions"
	else
		fail "resume by another version was not refused with both versions named"
	fi
	if run_rc 0 "$T/ver3.log" "$CLOQ" resume "$O" && same_output "$REF" "$O" "same build"; then
		ok "the same build resumes it, identical to the reference"
	else
		fail "the same build could not resume after the refused attempt"
	fi
	run_rc 0 "$T/ver4.log" "$OTHER" convert $JOB -o "$O" --force && grep -q "cloq 0.0.0-other-build" "$O/journal.json" &&
		ok "--force with another version starts over" || fail "--force with another version"
	rm -rf "$O"
else
	fail "$OTHER not built"
fi

# ---- signals -----------------------------------------------------------------------------------
# term_at LINES SIG OUT LOG: run the job, send SIG once its log has LINES progress lines (so the
# moment is a point of the job's progress, whatever the machine's load); prints the exit status
term_at() {
	: >"$4"
	"$CLOQ" convert $JOB -o "$3" >>"$4" 2>&1 &
	p=$!
	while kill -0 $p 2>/dev/null && [ "$(wc -l <"$4")" -lt "$1" ]; do sleep 0.003; done
	kill -"$2" $p 2>/dev/null
	wait $p
	echo $?
}
lines=$(wc -l <"$T/ref.log")
clean=0
i=1
while [ $i -le 10 ]; do
	O=$T/sig$i
	d=$((1 + lines * (3 + (i - 1) * 90 / 9) / 100))
	rc=$(term_at $d TERM "$O" "$T/s$i.log")
	note="SIGTERM at progress line $d of $lines: exit $rc"
	if [ "$rc" = 143 ]; then
		if grep -q "stopped by SIGTERM" "$T/s$i.log" && grep -q "cloq resume $O" "$T/s$i.log"; then
			clean=$((clean + 1))
		else
			fail "$note without the message: $(tail -n 1 "$T/s$i.log")"
		fi
		tmps=$(find "$O" -name '*.tmp.*')
		[ -z "$tmps" ] || fail "$note: temp files left: $tmps"
		if [ -f "$O/journal.json" ]; then
			"$CLOQ" verify "$O" >"$T/sv.log" 2>&1
			v=$?
			# a stopped job holds only whole shards: verify says unfinished (6), never bad (4)
			[ $v = 6 ] || [ $v = 0 ] || fail "$note: verify of the stopped job exits $v: $(tail -n 2 "$T/sv.log")"
		fi
	elif [ "$rc" != 0 ]; then
		fail "$note: $(tail -n 1 "$T/s$i.log")"
	fi
	if [ -f "$O/journal.json" ]; then
		run_rc 0 "$T/sr.log" "$CLOQ" resume "$O" || fail "$note: resume"
	else
		run_rc 0 "$T/sr.log" "$CLOQ" convert $JOB -o "$O" || fail "$note: convert again"
	fi
	same_output "$REF" "$O" "sigterm $i" && ok "$note; resumed identical to the reference" ||
		fail "$note; resumed output differs"
	rm -rf "$O"
	i=$((i + 1))
done
[ $clean -ge 8 ] && ok "$clean of 10 SIGTERMs stopped a running job cleanly (exit 143)" ||
	fail "only $clean of 10 SIGTERMs hit a running job"

O=$T/sigint
rc=$(term_at $((lines / 2)) INT "$O" "$T/si.log")
[ "$rc" = 130 ] && grep -q "stopped by SIGINT" "$T/si.log" && ok "SIGINT: exit 130 with the resume hint" ||
	{ [ "$rc" = 0 ] && echo "  (finished before SIGINT)" || fail "SIGINT: exit $rc: $(tail -n 1 "$T/si.log")"; }
rm -rf "$O"

# a second signal stops at once (no message); the job still resumes exactly
O=$T/sig2
"$CLOQ" convert $JOB -o "$O" >"$T/s2.log" 2>&1 &
p=$!
while kill -0 $p 2>/dev/null && [ ! -f "$O/journal.json" ]; do sleep 0.002; done
kill -TERM $p 2>/dev/null
kill -TERM $p 2>/dev/null
wait $p
rc=$?
case $rc in 0 | 143) ok "two SIGTERMs: exit $rc" ;; *) fail "two SIGTERMs: exit $rc" ;; esac
if [ -f "$O/journal.json" ]; then run_rc 0 "$T/s2r.log" "$CLOQ" resume "$O"; else run_rc 0 "$T/s2r.log" "$CLOQ" convert $JOB -o "$O"; fi
same_output "$REF" "$O" "two signals" && ok "after two signals: resumed identical" || fail "after two signals"

finish
