#!/bin/sh
# tests/e2e/job_readers.sh - the readers of a job (verify, ppl OUT, export) trust nothing they have
# not checked, and give one exit status and message per cause (src/job/cloq_jobcheck.h):
#  - a well-formed shard of another job (B: other calibration windows, same shapes) copied into a
#    finished job A: 4 for all three, naming the shard; the base shard damaged: 4 naming it;
#  - a shard missing: 4 naming it ("shards/layer_00003.cloqshard: missing");
#  - an unfinished job (the state a kill after layer 2 leaves: layers 3-4 not done, no shards for
#    them, no manifest): 6 for all three naming the layers and 'cloq resume'; verify prints its
#    per-shard lines first; with a bad shard too, 4 wins; resume then finishes it to A's bytes;
#  - a plain file, a missing path, a directory with no journal: 2;
#  - a truncated journal: 4 "journal.json is damaged" for the readers, and for convert and resume
#    too, saying that --force starts over (which it then does);
#  - a writer holding OUT/job.lock (flock -x, the same flock(2) cloq takes): 5 naming its pid; a
#    second reader (flock -s) does not stop a reader.
. tests/e2e/convert_common.inc
[ -n "$PY" ] || { echo "SKIP: needs python3"; exit 77; }
export OMP_NUM_THREADS=1

A=$T/A B=$T/B
if ! run_rc 0 "$T/a.log" "$CLOQ" convert $MODEL -o "$A" $CALIB $QOPTS; then
	fail "job A"
	finish
fi
# B differs from A in its calibration (4 windows instead of 8): same settings shapes, other values,
# so its shards are well-formed stand-ins for A's (--seed alone gives the same bytes at this size)
if ! run_rc 0 "$T/b.log" "$CLOQ" convert $MODEL -o "$B" --calib-tokens fixtures/reference/calib_tokens_128x256.npy \
	--nsamples 4 $QOPTS; then
	fail "job B"
	finish
fi
cmp -s "$A/shards/layer_00002.cloqshard" "$B/shards/layer_00002.cloqshard" &&
	fail "jobs A and B have the same layer 2 shard: the copied-shard checks below would prove nothing"

# 2 windows of 64 tokens: enough for ppl to read every layer, quick on one thread
"$PY" - "$T/tok.npy" <<'EOF'
import struct, sys
ids = [int(x) for x in open("fixtures/reference/ref_story1_ids64.txt").read().replace(",", " ").split()][:64]
ids = (ids * 2)[:128]
hdr = "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 64), }"
hdr += " " * (63 - (10 + len(hdr)) % 64) + "\n"
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode())
    f.write(struct.pack("<%di" % len(ids), *ids))
EOF
PPL="--tokens $T/tok.npy"

# readers WANT LABEL DIR PATTERN: verify, ppl and export of DIR each exit WANT and print a line
# matching the grep -E PATTERN (verify: in its output, ppl/export: in the error)
readers() {
	want=$1 label=$2 dir=$3 pat=$4 bad=0
	for cmd in verify ppl export; do
		case $cmd in
		verify) set -- "$CLOQ" verify "$dir" ;;
		ppl) set -- "$CLOQ" ppl "$dir" $PPL ;;
		export) set -- "$CLOQ" export "$dir" --to "$T/exp" ;;
		esac
		if ! run_rc "$want" "$T/$cmd.log" "$@"; then
			fail "$label: $cmd: exit status"
			bad=1
		elif [ -n "$pat" ] && ! grep -q -E -e "$pat" "$T/$cmd.log"; then
			fail "$label: $cmd: output does not match /$pat/: $(tail -n 2 "$T/$cmd.log")"
			bad=1
		fi
	done
	[ $bad = 0 ] && ok "$label: verify, ppl, export exit $want [$(grep -h 'error:' "$T/ppl.log" | sed "s|$T/||g")]"
}
fresh() { rm -rf "$2" && cp -r "$1" "$2"; }

readers 0 "intact job" "$A" ""
grep -q "^perplexity " "$T/ppl.log" || fail "ppl of the intact job printed no perplexity"

# ---- a shard of another job --------------------------------------------------------------------
O=$T/o
fresh "$A" "$O"
cp "$B/shards/layer_00002.cloqshard" "$O/shards/"
readers 4 "layer 2's shard from job B" "$O" \
	"shards/layer_00002.cloqshard: file hash [0-9a-f]{16} differs from the journal's [0-9a-f]{16} \(replaced\?\)"
grep -q "^BAD   shards/layer_00002.cloqshard" "$T/verify.log" || fail "verify does not print a BAD line for layer 2"
[ "$(grep -c '^ok ' "$T/verify.log")" = 5 ] || fail "verify does not pass the 5 other shards"

# the journal edited to bless B's shard (its hash from B's journal): the manifest still knows
"$PY" - "$O/journal.json" "$B/journal.json" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
a["layers"][2]["shard_xxh3"] = b["layers"][2]["shard_xxh3"]
json.dump(a, open(sys.argv[1], "w"), indent=2)
EOF
readers 4 "layer 2 from job B, the journal edited to match" "$O" \
	"shards/layer_00002.cloqshard: file hash [0-9a-f]{16} differs from the manifest's"
fresh "$A" "$O"
truncate -s 2000 "$O/shards/base.cloqshard"
readers 4 "base shard truncated" "$O" "shards/base.cloqshard"
grep -q "shards/base.cloqshard: file hash [0-9a-f]* differs from the manifest's" "$T/ppl.log" ||
	fail "ppl does not say the base shard differs from the manifest"

# ---- a missing shard ---------------------------------------------------------------------------
fresh "$A" "$O"
rm "$O/shards/layer_00003.cloqshard"
readers 4 "layer 3's shard missing" "$O" "shards/layer_00003.cloqshard: missing"
rm "$O/shards/layer_00001.cloqshard"
readers 4 "two shards missing" "$O" "shards/layer_0000[13].cloqshard: missing"
grep -q "and 1 more bad shard: 'cloq verify" "$T/ppl.log" || fail "ppl does not say a second shard is bad"

# ---- an unfinished job -------------------------------------------------------------------------
# what a convert killed while converting layer 3 leaves: base and layers 0-2 done with their
# hashes, layers 3-4 not done with no shard, finished false, no manifest
U=$T/u
fresh "$A" "$U"
"$PY" - "$U" <<'EOF'
import json, os, sys
d = sys.argv[1]
j = json.load(open(d + "/journal.json"))
for l in (3, 4):
    j["layers"][l] = {"done": False, "shard_xxh3": ""}
    os.remove(d + "/shards/layer_%05d.cloqshard" % l)
j["finished"] = False
os.remove(d + "/manifest.json")
os.remove(d + "/report.json")
with open(d + "/journal.json", "w") as f:
    json.dump(j, f, indent=2)
EOF
readers 6 "unfinished job" "$U" "job is unfinished: layers 3-4 \(of 0-4\) are not converted yet.*cloq resume"
[ "$(grep -c '^ok    shards/' "$T/verify.log")" = 4 ] && ! grep -q '^BAD' "$T/verify.log" ||
	fail "verify of the unfinished job does not pass its 4 written shards: $(cat "$T/verify.log")"
fresh "$U" "$O"
cp "$B/shards/layer_00001.cloqshard" "$O/shards/"
readers 4 "unfinished job with a shard of job B (4 wins over 6)" "$O" "shards/layer_00001.cloqshard: file hash"
if run_rc 0 "$T/r.log" "$CLOQ" resume "$U" && run_rc 0 "$T/v.log" "$CLOQ" verify "$U" &&
	cmp -s "$A/manifest.json" "$U/manifest.json"; then
	ok "the unfinished job resumes to A's bytes; verify exits 0"
else
	fail "resume of the unfinished job"
fi

# ---- not a job ---------------------------------------------------------------------------------
readers 2 "a plain file" "$A/journal.json" "not a (directory|cloq job)|Not a directory"
readers 2 "a path that does not exist" "$T/nothing" "no such|No such"
mkdir "$T/empty"
run_rc 2 "$T/e.log" "$CLOQ" verify "$T/empty" && grep -q "is not a cloq job" "$T/e.log" &&
	run_rc 2 "$T/e2.log" "$CLOQ" export "$T/empty" --to "$T/exp" && grep -q "is not a cloq job" "$T/e2.log" &&
	ok "a directory with no journal: verify and export exit 2, 'not a cloq job'" ||
	fail "a directory with no journal"
[ -e "$T/empty/job.lock" ] && fail "a reader left job.lock in a directory that is no job"

# ---- a damaged journal -------------------------------------------------------------------------
fresh "$A" "$O"
head -c 100 "$A/journal.json" >"$O/journal.json"
readers 4 "truncated journal" "$O" "journal.json is damaged"
grep -q "not a cloq job" "$T/verify.log" "$T/ppl.log" "$T/export.log" && fail "a damaged journal is called 'not a cloq job'"
for c in convert resume; do
	if [ $c = convert ]; then
		set -- "$CLOQ" convert $MODEL -o "$O" $CALIB $QOPTS
	else
		set -- "$CLOQ" resume "$O"
	fi
	if run_rc 4 "$T/c.log" "$@" && grep -q "journal.json is damaged.*--force' starts it over" "$T/c.log"; then
		ok "truncated journal: $c exits 4 [$(grep error: "$T/c.log" | sed "s|$T/||g")]"
	else
		fail "truncated journal: $c: $(tail -n 1 "$T/c.log")"
	fi
done
if run_rc 0 "$T/c.log" "$CLOQ" convert $MODEL -o "$O" $CALIB $QOPTS --force && same_output "$A" "$O" "--force"; then
	ok "truncated journal: convert --force starts over, same bytes as job A"
else
	fail "truncated journal: convert --force"
fi

# ---- a writer at work --------------------------------------------------------------------------
if command -v flock >/dev/null 2>&1; then
	# hold MODE: flock(1) holds $A/job.lock (MODE -x or -s) until $T/release appears (at most 60 s);
	# returns once the lock is held
	hold() {
		rm -f "$T/held" "$T/release"
		flock "$1" "$A/job.lock" sh -c "touch '$T/held'; n=0; while [ ! -e '$T/release' ] && [ \$n -lt 1200 ]; do sleep 0.05; n=\$((n + 1)); done" &
		hpid=$!
		n=0
		while [ ! -e "$T/held" ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n + 1)); done
	}
	release() { touch "$T/release"; wait $hpid; }
	hold -x
	readers 5 "a writer holds job.lock" "$A" "being written by another cloq process \(pid [0-9]+"
	release
	hold -s
	run_rc 0 "$T/v.log" "$CLOQ" verify "$A" && ok "another reader holding job.lock: verify exits 0" ||
		fail "verify beside another reader"
	release
	run_rc 0 "$T/v.log" "$CLOQ" verify "$A" || fail "verify once the lock holders are gone"
else
	echo "note: no flock(1): the busy-job checks are skipped"
fi
finish
