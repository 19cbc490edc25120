#!/bin/sh
# tests/e2e/convert_resume.sh - crash safety of `cloq convert`: 20 runs killed with SIGKILL at
# moments spread over a run's duration, each resumed (`cloq resume OUT`, or the same `cloq convert`
# command again, once after a second crash) until it finishes. Every one must then verify, be
# byte-identical to an uninterrupted reference run (shards, manifest.json, calib_windows.npy;
# journal.json and report.json except timings), and leave no temp file and an empty cache/.
# Then 4 more on a synthetic model of another geometry (build/tools/mkmodel).
. tests/e2e/convert_common.inc

# Where a killed run was: its last progress line (stderr is not a tty: one line per update).
# "solve N%" is printed before a group's solve and stays the last line through the next group's
# statistics pass; "solve 100%" leads into propagation; "propagate 100%" into the shard and
# journal writes; "done" into the next layer.
# A temp file left by the killed process says more precisely which write it was in.
stage_of() {
	for f in "$2"/shards/layer_*.tmp.* "$2"/shards/base*.tmp.* "$2"/journal.json.tmp.* \
		"$2"/cache/act_00000.cloqact.tmp.* "$2"/cache/*.tmp.*; do
		if [ -e "$f" ]; then
			case "$f" in
			*/shards/layer_*) echo shard-write ;;
			*/shards/base*) echo base-shard-write ;;
			*/journal.json.*) echo journal-write ;;
			*/act_00000.*) echo embeddings-cache-write ;;
			*) echo propagate ;;
			esac
			return
		fi
	done
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

# series TAG RUNS JOB...: an uninterrupted reference run of `cloq convert JOB`, then RUNS runs
# killed at moments spread over its duration, each resumed until it finishes and compared.
killed=0 total=0
stages=""
series() {
	tag=$1 runs=$2
	shift 2
	JOB="$*"
	REF=$T/ref.$tag
	t0=$(ms)
	if ! run_rc 0 "$T/ref.log" "$CLOQ" convert $JOB -o "$REF"; then
		fail "$tag: reference run"
		return
	fi
	dur=$(($(ms) - t0))
	echo "$tag: reference run ${dur} ms"
	same_output "$REF" "$REF" "$tag reference" || fail "$tag: reference run is not clean"
	total=$((total + runs))
	i=1
	while [ $i -le $runs ]; do
		O=$T/$tag$i
		# delays from 3% to 97% of the reference run's duration, evenly spaced
		d=$((dur * (3 + (i - 1) * 94 / (runs - 1)) / 100))
		rc=$(kill_after "$d" "$T/kill$i.log" "$CLOQ" convert $JOB -o "$O")
		st=$(stage_of "$T/kill$i.log" "$O")
		[ "$rc" = 137 ] && killed=$((killed + 1))
		# the job ran faster than the reference (a loaded machine got quieter): aim the
		# remaining kills at the shorter duration
		[ "$rc" = 0 ] && [ $d -lt $dur ] && dur=$((d * 9 / 10))
		stages="$stages $st"
		note="killed after ${d} ms (exit $rc) in $st"
		# an interrupted job holds only whole, checked shards: verify passes on what it has, and
		# exits 6 (unfinished), or 0 when the kill came after the journal said finished
		if [ "$rc" = 137 ] && [ -f "$O/journal.json" ] && ! verify_partial "$O" "$T/v$i.log"; then
			fail "$tag $i: $note: cloq verify of the interrupted job failed"
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
				"$CLOQ" convert $JOB -o "$O" >"$T/res$i.log" 2>&1
			else
				how="resume"
				"$CLOQ" resume "$O" >"$T/res$i.log" 2>&1
			fi
			r=$?
			if [ $r = 0 ]; then
				done=1
			else
				echo "  $tag $i: $how exited $r:"
				tail -n 5 "$T/res$i.log" | sed 's/^/    /'
			fi
		done
		if [ $done = 0 ]; then
			fail "$tag $i: $note: could not finish the job with '$how'"
		elif same_output "$REF" "$O" "$tag $i"; then
			ok "$tag $i: $note; finished by '$how', identical to the reference"
		else
			fail "$tag $i: $note; finished by '$how' but differs from the reference (above)"
		fi
		rm -rf "$O"
		i=$((i + 1))
	done
}

series run 20 $MODEL $CALIB $QOPTS

# Targeted kills: the windows of the durable writes are short, so also kill at the moment a
# file's temp copy appears: while layer 2's activation cache, and the journal after layer 2's
# shard, are being written. (A shard's temp file lives only for a few milliseconds, too short to
# catch this way here; convert_diskfull.sh fails writes inside shards instead.)
# kill_when OUT AFTER GLOB LOG CMD...: once the file OUT/AFTER exists, SIGKILL CMD as soon as a
# path matches OUT/GLOB; prints "EXIT SEEN" (SEEN: the temp file was there).
kill_when() {
	out=$1 after=$2 glob=$3 log=$4
	shift 4
	"$@" >"$log" 2>&1 &
	pid=$!
	seen=no
	while kill -0 "$pid" 2>/dev/null; do
		if [ -e "$out/$after" ]; then
			# busy from here: the window can be a few milliseconds
			for f in $out/$glob; do
				[ -e "$f" ] && seen=yes
			done
			[ $seen = yes ] && break
		else
			sleep 0.005 # until then, leave the cores to the job
		fi
	done
	kill -9 "$pid" 2>/dev/null
	wait "$pid"
	echo "$? $seen"
}
for target in "shards/layer_00001.cloqshard cache/act_00003.cloqact.tmp.* activation-cache-write" \
	"shards/layer_00002.cloqshard journal.json.tmp.* journal-write"; do
	set -f
	set -- $target
	set +f
	O=$T/target
	r=$(kill_when "$O" "$1" "$2" "$T/kt.log" "$CLOQ" convert $MODEL $CALIB $QOPTS -o "$O")
	set -- $3 $r
	note="killed in the $1 (exit $2, temp file seen: $3)"
	if [ "$2" = 137 ] && [ -f "$O/journal.json" ] && ! verify_partial "$O" "$T/vt.log"; then
		fail "$note: cloq verify of the interrupted job failed"
	fi
	if ! run_rc 0 "$T/rt.log" "$CLOQ" resume "$O"; then
		fail "$note: resume failed"
	elif same_output "$T/ref.run" "$O" "$1"; then
		ok "$note; resumed, identical to the reference"
	else
		fail "$note; resumed but differs from the reference (above)"
	fi
	rm -rf "$O"
done

# a second geometry: bf16, untied lm_head, two input files, 2 layers
"$BUILD/tools/mkmodel" --out "$T/synth" --hidden 96 --intermediate 256 --heads 6 --kv-heads 2 --layers 2 \
	--vocab 512 --max-pos 256 --dtype bf16 --shards 2 --seed 11 --quiet || fail "mkmodel"
series synth 4 "$T/synth" $CALIB --bits 3 --group-size 32 --rank 4

# The window between the last journal save and the removal of the caches: a finished job with
# caches left over (and a dead writer's temp file) must end up clean after a resume.
O=$T/leftover
cp -r "$T/ref.run" "$O"
: >"$O/cache/act_00004.cloqact"
: >"$O/cache/act_00005.cloqact"
: >"$O/shards/layer_00001.cloqshard.tmp.999999999"
if ! run_rc 0 "$T/lo.log" "$CLOQ" resume "$O"; then
	fail "resume of a finished job with leftover caches"
elif same_output "$T/ref.run" "$O" "leftover caches"; then
	ok "leftover caches and a dead writer's temp file are removed by a resume"
else
	fail "a resume leaves leftover caches or temp files behind (above)"
fi
rm -rf "$O"

echo "where the kills landed:"
for s in $stages; do echo "$s"; done | sort | uniq -c | sed 's/^/  /'
# The test proves nothing if the kills missed: most must have interrupted a running job.
if [ $killed -lt $((total * 3 / 5)) ]; then
	fail "only $killed of $total runs were interrupted by the kill (machine much faster than the reference run?)"
else
	ok "$killed of $total runs were interrupted"
fi
finish
