#!/bin/sh
# tests/e2e/convert_diskfull.sh - `cloq convert` when a write fails: with the Nth I/O call made to
# fail (CLOQ_FAULT_IO=N, N spread over the whole job: journal, windows, model files, base shard,
# activation cache, layer shards, manifest, report) and the Nth allocation (CLOQ_FAULT_ALLOC=N),
# the job must exit 3 naming the failure (disk full, or the path), leave no temp file and nothing torn under a final name,
# and a resume without the fault must finish with output identical to an uninterrupted run.
# Then real disk-full conditions: RLIMIT_FSIZE (ulimit -f) and, when mount works, a tiny tmpfs.
. tests/e2e/convert_common.inc

REF=$T/ref
if ! run_rc 0 "$T/ref.log" "$CLOQ" convert $MODEL -o "$REF" $CALIB $QOPTS; then
	fail "reference run"
	finish
fi

# no_torn OUT LABEL [crashed]: whatever a failed run left under a final name is whole: shards,
# manifest, windows and model files are byte-identical to the reference's, the journal-done shards
# verify; unless the process was killed, no temp file is left.
no_torn() {
	out=$1 label=$2 crashed=${3:-} bad=0
	for f in $(cd "$out" 2>/dev/null && ls shards/* manifest.json calib_windows.npy model/* 2>/dev/null); do
		case "$f" in *.tmp.*) continue ;; esac
		if ! cmp -s "$REF/$f" "$out/$f"; then
			echo "  $label: $f is under its final name but differs from the reference (torn?)"
			bad=1
		fi
	done
	if [ -f "$out/journal.json" ] && ! verify_partial "$out" "$T/nt.log"; then
		echo "  $label: cloq verify of the failed job failed (above)"
		bad=1
	fi
	tmps=$(find "$out" -name '*.tmp.*' 2>/dev/null)
	if [ -n "$tmps" ] && [ -z "$crashed" ]; then
		echo "  $label: temp files left behind after a clean failure: $(echo $tmps)"
		bad=1
	fi
	return $bad
}

# finish_job OUT LABEL: resume (or, with no journal yet, re-run convert) without faults, then
# compare with the reference.
finish_job() {
	out=$1 label=$2
	if [ -f "$out/journal.json" ]; then
		run_rc 0 "$T/fin.log" "$CLOQ" resume "$out" || return 1
	else
		run_rc 0 "$T/fin.log" "$CLOQ" convert $MODEL -o "$out" $CALIB $QOPTS || return 1
	fi
	same_output "$REF" "$out" "$label"
}

# fault_case KIND N WANT_TEXT: run the job with the Nth call of KIND failing.
hit=0
fault_case() {
	kind=$1 n=$2 want=$3
	O=$T/$kind.$n
	env "CLOQ_FAULT_$kind=$n" "$CLOQ" convert $MODEL -o "$O" $CALIB $QOPTS >"$T/f.log" 2>&1
	rc=$?
	msg=$(grep 'error:' "$T/f.log" | tail -n 1 | sed "s|$T/||g")
	if [ $rc = 0 ]; then
		echo "  CLOQ_FAULT_$kind=$n: beyond the job's last call (finished)"
		rm -rf "$O"
		return
	fi
	hit=$((hit + 1))
	if [ $rc != 3 ]; then
		fail "CLOQ_FAULT_$kind=$n: exit $rc, want 3 ($(tail -n 2 "$T/f.log"))"
	elif ! grep 'error:' "$T/f.log" | grep -q -e "$want" -e "$O/" -e "$MODEL/"; then
		fail "CLOQ_FAULT_$kind=$n: message names neither '$want' nor a path in OUT or the model: $msg"
	elif ! no_torn "$O" "CLOQ_FAULT_$kind=$n"; then
		fail "CLOQ_FAULT_$kind=$n: failed run left damage ($msg)"
	elif ! finish_job "$O" "CLOQ_FAULT_$kind=$n"; then
		fail "CLOQ_FAULT_$kind=$n ($msg): resume did not give the reference output"
	else
		ok "CLOQ_FAULT_$kind=$n: exit 3 [$msg]; resumed, identical"
	fi
	rm -rf "$O"
}

# This job makes about 410 I/O calls (in order: journal, windows, model files, base shard, then
# per layer cache + shard + journal, then manifest, journal, report; the weight reads of the next
# layer interleave with them from the prefetch thread, so a given N may land on a read of the
# model instead); the list reaches into each.
for n in 1 6 20 50 56 70 200 250 397 402 407; do
	fault_case IO $n "disk full"
done
[ $hit -ge 8 ] || fail "only $hit of 11 I/O faults landed inside the job"
for n in 300 1000; do
	fault_case ALLOC $n "out of memory"
done

# ---- real disk full: RLIMIT_FSIZE ---------------------------------------------------------------
# 300 blocks (150 KiB with dash's 512-byte blocks, 300 KiB with bash's) is less than one layer's
# activation cache file (~200 KiB). With SIGXFSZ at its default action the kernel kills the
# process at the write; cloq should ignore SIGXFSZ so that write() fails with EFBIG and the job
# exits 3 with "disk full", like any other full disk.
O=$T/fsize
sh -c 'ulimit -f 300 && exec "$@"' sh "$CLOQ" convert $MODEL -o "$O" $CALIB $QOPTS >"$T/fs.log" 2>&1
rc=$?
if [ $rc = 3 ] && grep -q "disk full" "$T/fs.log"; then
	ok "ulimit -f: exit 3, disk full"
else
	fail "ulimit -f: exit $rc, want 3 with 'disk full': $(tail -n 1 "$T/fs.log")"
fi
if ! no_torn "$O" "ulimit -f" $([ $rc -gt 128 ] && echo crashed); then
	fail "ulimit -f: the failed run left damage"
elif ! finish_job "$O" "ulimit -f"; then
	fail "ulimit -f: resume did not give the reference output"
else
	ok "ulimit -f: resumed, identical"
fi
rm -rf "$O"
# the same with SIGXFSZ ignored (inherited through exec): the EFBIG path
sh -c 'trap "" XFSZ; ulimit -f 300 && exec "$@"' sh "$CLOQ" convert $MODEL -o "$O" $CALIB $QOPTS >"$T/fs.log" 2>&1
rc=$?
if [ $rc != 3 ] || ! grep -q "disk full" "$T/fs.log"; then
	fail "ulimit -f, SIGXFSZ ignored: exit $rc, want 3 with 'disk full': $(tail -n 1 "$T/fs.log")"
elif ! no_torn "$O" "ulimit -f (EFBIG)"; then
	fail "ulimit -f, SIGXFSZ ignored: the failed run left damage"
elif ! finish_job "$O" "ulimit -f (EFBIG)"; then
	fail "ulimit -f, SIGXFSZ ignored: resume did not give the reference output"
else
	ok "ulimit -f, SIGXFSZ ignored: exit 3 [$(grep 'error:' "$T/fs.log" | sed "s|$T/||g")]; resumed, identical"
fi
rm -rf "$O"

# ---- real disk full: a 500 KiB tmpfs (root only; skipped where mount is not allowed) ----------
M=$T/mnt
mkdir -p "$M"
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=500k cloq_e2e "$M" 2>/dev/null; then
	trap 'umount "$M" 2>/dev/null; rm -rf "$T"' EXIT
	O=$M/out
	# CLOQ_STASH=disk: the stashes as files (this small job would keep them in RAM), so that the
	# switch to full passes on a disk too small for them is what gets tested
	CLOQ_STASH=disk "$CLOQ" convert $MODEL -o "$O" $CALIB $QOPTS >"$T/tf.log" 2>&1
	rc=$?
	if [ $rc != 3 ] || ! grep -q "disk full" "$T/tf.log"; then
		fail "tmpfs: exit $rc, want 3 with 'disk full': $(tail -n 1 "$T/tf.log")"
	elif ! grep -q "recomputing each statistics pass" "$T/tf.log"; then
		fail "tmpfs: 500 KiB cannot hold the stashes, but the run did not switch to full passes"
	elif ! no_torn "$O" "tmpfs"; then
		fail "tmpfs: the failed run left damage"
	elif ! mount -o remount,size=16m "$M"; then
		fail "tmpfs: cannot grow it to resume"
	elif ! finish_job "$O" "tmpfs"; then
		fail "tmpfs: resume after freeing space did not give the reference output"
	else
		ok "tmpfs full: switched to full passes, exit 3 [$(grep 'error:' "$T/tf.log" | sed "s|$M/||g")]; grown, resumed with stashes, identical"
	fi
	umount "$M" || fail "tmpfs: umount"
else
	echo "skip  tmpfs part: mount not permitted here"
fi
finish
