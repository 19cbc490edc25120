#!/bin/sh
# tests/e2e/convert_resume.sh - crash safety of `cloq convert`: 20 runs killed with SIGKILL at
# moments spread over a run's duration, each resumed (`cloq resume OUT`, or the same `cloq convert`
# command again, once after a second crash) until it finishes. Every one must then verify, be
# byte-identical to an uninterrupted reference run (shards, manifest.json, calib_windows.npy;
# journal.json and report.json except timings), and leave no temp file and an empty cache/.
. tests/e2e/convert_common.inc

REF=$T/ref
t0=$(ms)
if ! run_rc 0 "$T/ref.log" "$CLOQ" convert $MODEL -o "$REF" $CALIB $QOPTS; then
	fail "reference run"
	finish
fi
dur=$(($(ms) - t0))
echo "reference run: ${dur} ms"
same_output "$REF" "$REF" "reference" || fail "reference run is not clean"

# Where a killed run was: its last progress line (stderr is not a tty: one line per update).
# "solve N%" is printed before a group's solve and stays the last line through the next group's
# statistics pass; "solve 100%" leads into propagation; "propagate 100%" into the shard and
# journal writes; "done" into the next layer.
stage_of() {
	last=$(grep -E '^(layer|cloq)' "$1" | tail -n 1)
	case "$last" in
	"") echo startup ;;
	*finished*) echo finished ;;
	*"done in"*) echo between-layers ;;
	*propagate*100.0%*) echo shard+journal-write ;;
	*propagate*) echo propagate ;;
	*solve*100.0%*) echo propagate ;;
	*solve*) echo stats+solve ;;
	*stats*) echo stats ;;
	*resuming*) echo startup ;;
	*) echo other ;;
	esac
}

# kill_after MS LOG CMD...: start CMD, SIGKILL it after MS milliseconds; prints its exit status.
kill_after() {
	d=$1 log=$2
	shift 2
	"$@" >"$log" 2>&1 &
	pid=$!
	sleep "$(awk -v d="$d" 'BEGIN { printf "%.3f", d / 1000 }')"
	kill -9 "$pid" 2>/dev/null
	wait "$pid"
	echo $?
}

killed=0
stages=""
i=1
while [ $i -le 20 ]; do
	O=$T/run$i
	# delays from 3% to 97% of the reference run's duration, evenly spaced
	d=$((dur * (3 + (i - 1) * 94 / 19) / 100))
	rc=$(kill_after "$d" "$T/kill$i.log" "$CLOQ" convert $MODEL -o "$O" $CALIB $QOPTS)
	st=$(stage_of "$T/kill$i.log")
	[ "$rc" = 137 ] && killed=$((killed + 1))
	stages="$stages $st"
	note="killed after ${d} ms (exit $rc) in $st"
	# an interrupted job holds only whole, checked shards: verify passes on what it has
	if [ "$rc" = 137 ] && [ -f "$O/journal.json" ] && ! run_rc 0 "$T/v$i.log" "$CLOQ" verify "$O"; then
		fail "run $i: $note: cloq verify of the interrupted job failed"
	fi
	if [ $((i % 5)) = 3 ] && [ -f "$O/journal.json" ]; then
		# a second crash, during the resume
		rc2=$(kill_after $((d / 2 + 50)) "$T/kill${i}b.log" "$CLOQ" resume "$O")
		note="$note; resume killed after $((d / 2 + 50)) ms (exit $rc2)"
	fi
	tries=0 done=0
	while [ $tries -lt 3 ] && [ $done = 0 ]; do
		tries=$((tries + 1))
		if [ $((i % 4)) = 0 ] || [ ! -f "$O/journal.json" ]; then
			how="convert again"
			"$CLOQ" convert $MODEL -o "$O" $CALIB $QOPTS >"$T/res$i.log" 2>&1
		else
			how="resume"
			"$CLOQ" resume "$O" >"$T/res$i.log" 2>&1
		fi
		r=$?
		if [ $r = 0 ]; then
			done=1
		else
			echo "  run $i: $how exited $r:"
			tail -n 5 "$T/res$i.log" | sed 's/^/    /'
		fi
	done
	if [ $done = 0 ]; then
		fail "run $i: $note: could not finish the job with '$how'"
	elif same_output "$REF" "$O" "run $i"; then
		ok "run $i: $note; finished by '$how', identical to the reference"
	else
		fail "run $i: $note; finished by '$how' but differs from the reference (above)"
	fi
	rm -rf "$O"
	i=$((i + 1))
done

echo "where the kills landed:"
for s in $stages; do echo "$s"; done | sort | uniq -c | sed 's/^/  /'
# The test proves nothing if the kills missed: most must have interrupted a running job.
if [ $killed -lt 12 ]; then
	fail "only $killed of 20 runs were interrupted by the kill (machine much faster than the reference run?)"
else
	ok "$killed of 20 runs were interrupted"
fi
finish
