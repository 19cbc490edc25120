#!/bin/sh
# tests/e2e/convert_settings.sh - a job directory belongs to one set of settings and inputs:
# re-running convert with another --bits (or --rank) or after the model changed refuses with
# exit 2 naming what changed; --force starts over and gives the same bytes as a fresh run. A
# garbage journal is a damaged one: exit 4 saying so (and, for convert and resume, that --force
# starts over); a directory with no journal is no job (exit 2). Bad inputs exit 2 with a message saying what is wrong;
# an unknown option exits 1.
. tests/e2e/convert_common.inc

# a private copy of the model, so that its config.json can be changed below
cp -r "$MODEL" "$T/model"
MODEL=$T/model
O=$T/job

if ! run_rc 0 "$T/first.log" "$CLOQ" convert $MODEL -o "$O" $CALIB $QOPTS; then
	fail "first run"
	finish
fi
cp "$O/shards/layer_00002.cloqshard" "$T/l2.bits2"

# ---- settings and inputs ------------------------------------------------------------------------
expect 2 "other --bits" "other settings.*bits: 2 -> 3" "$CLOQ" convert $MODEL -o "$O" $CALIB --bits 3 --group-size 32 --rank 8
expect 2 "other --rank" "other settings.*rank: 8 -> 4" "$CLOQ" convert $MODEL -o "$O" $CALIB --bits 2 --group-size 32 --rank 4
expect 2 "other --gptq-zeros" "other settings.*gptq_zeros.*v1.*v2" "$CLOQ" convert $MODEL -o "$O" $CALIB $QOPTS --gptq-zeros v2
expect 1 "--gptq-zeros junk" "--gptq-zeros: expected v1 or v2, got 'v3'" "$CLOQ" convert $MODEL -o "$O" $CALIB $QOPTS --gptq-zeros v3
cmp -s "$O/shards/layer_00002.cloqshard" "$T/l2.bits2" || fail "a refused run changed the job's shards"
run_rc 0 "$T/v.log" "$CLOQ" verify "$O" || fail "the job does not verify after the refused runs"

expect 0 "other --bits with --force" "starting over.*bits: 2 -> 3" \
	"$CLOQ" convert $MODEL -o "$O" $CALIB --bits 3 --group-size 32 --rank 8 --force
run_rc 0 "$T/fresh.log" "$CLOQ" convert $MODEL -o "$T/fresh3" $CALIB --bits 3 --group-size 32 --rank 8 ||
	fail "fresh --bits 3 run"
if same_output "$T/fresh3" "$O" "--force"; then
	ok "--force: the restarted job is identical to a fresh --bits 3 run"
else
	fail "--force: the restarted job differs from a fresh --bits 3 run"
fi
# the same command again: nothing to do, nothing changes
expect 0 "same command on a finished job" "finished" "$CLOQ" convert $MODEL -o "$O" $CALIB --bits 3 --group-size 32 --rank 8
same_output "$T/fresh3" "$O" "re-run" || fail "re-running a finished job changed it"

# the model's config.json changed (same meaning, other bytes): the inputs differ
printf '\n' >>"$MODEL/config.json"
expect 2 "changed config.json" "other inputs.*config" "$CLOQ" convert $MODEL -o "$O" $CALIB --bits 3 --group-size 32 --rank 8
expect 2 "resume after config.json changed" "other inputs.*config" "$CLOQ" resume "$O"

# ---- garbage journal ----------------------------------------------------------------------------
mkdir -p "$T/bad"
printf 'garbage{' >"$T/bad/journal.json"
expect 4 "garbage journal: convert" "bad/journal.json is damaged: not valid JSON.*--force' starts it over" \
	"$CLOQ" convert $MODEL -o "$T/bad" $CALIB $QOPTS
expect 4 "garbage journal: resume" "bad/journal.json is damaged: not valid JSON.*--force' starts it over" "$CLOQ" resume "$T/bad"
expect 4 "garbage journal: verify" "bad/journal.json is damaged: not valid JSON" "$CLOQ" verify "$T/bad"
printf '{"format": "cloq-journal", "version": 1}' >"$T/bad/journal.json"
expect 4 "journal without settings" "bad/journal.json is damaged.*(settings|layers)" "$CLOQ" resume "$T/bad"
expect 0 "garbage journal: convert --force starts over" "" "$CLOQ" convert $MODEL -o "$T/bad" $CALIB $QOPTS --force
expect 0 "garbage journal: --force result verifies" "" "$CLOQ" verify "$T/bad"
expect 2 "resume of a directory with no job" "nojob/journal.json" "$CLOQ" resume "$T/nojob"

# ---- bad inputs: exit 2, nothing created --------------------------------------------------------
printf 'Once upon a time there was a cat.\n' >"$T/short.txt"
expect 2 "calibration text shorter than a window" "short.txt.*[0-9]+ tokens.*needs 128" \
	"$CLOQ" convert $MODEL -o "$T/o1" --calib "$T/short.txt" --nsamples 4 --seqlen 128 $QOPTS
[ -e "$T/o1" ] && fail "a refused run created its OUT"
if [ -n "$PY" ]; then
	# int32 (4, 64) windows of id 1 but one id 512 (= vocab) at window 2, position 17
	"$PY" - "$T/badids.npy" <<'EOF'
import struct, sys
hdr = "{'descr': '<i4', 'fortran_order': False, 'shape': (4, 64), }"
hdr += " " * (63 - (10 + len(hdr)) % 64) + "\n"
ids = [1] * 256
ids[2 * 64 + 17] = 512
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode())
    f.write(struct.pack("<256i", *ids))
EOF
	expect 2 "token id >= vocab" "badids.npy.*512.*window 2.*position 17" \
		"$CLOQ" convert $MODEL -o "$T/o2" --calib-tokens "$T/badids.npy" $QOPTS
fi
expect 2 "--seqlen > max_position_embeddings" "1024.*max_position_embeddings.*512" \
	"$CLOQ" convert $MODEL -o "$T/o3" --calib fixtures/text/tinystories_public.txt --seqlen 1024 $QOPTS
expect 2 "missing model dir" "nomodel/config.json" "$CLOQ" convert "$T/nomodel" -o "$T/o4" $CALIB $QOPTS
expect 2 "missing calibration file" "nocalib.txt" "$CLOQ" convert $MODEL -o "$T/o5" --calib "$T/nocalib.txt" $QOPTS
expect 1 "unknown option" "unknown option '--frobnicate'" "$CLOQ" convert $MODEL -o "$T/o6" $CALIB --frobnicate
expect 1 "--bits 5" "bits" "$CLOQ" convert $MODEL -o "$T/o7" $CALIB --bits 5
expect 1 "no -o" "-o|OUT" "$CLOQ" convert $MODEL $CALIB
# the default thread count is the CPUs the process may use (its affinity mask), not the cores
if command -v taskset >/dev/null 2>&1; then
	if taskset -c 0 "$CLOQ" convert $MODEL -o "$T/t1" $CALIB $QOPTS --quiet >"$T/t1.log" 2>&1 &&
		grep -Eq '"threads":[[:space:]]*1([^0-9]|$)' "$T/t1/journal.json"; then
		ok "under taskset -c 0 a job records threads 1"
	else
		fail "under taskset -c 0 the job did not default to 1 thread: $(grep threads "$T/t1/journal.json")"
	fi
fi
for o in o2 o3 o4 o5 o6 o7; do
	[ -e "$T/$o" ] && fail "a refused run created $o"
done
finish
