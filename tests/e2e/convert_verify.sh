#!/bin/sh
# tests/e2e/convert_verify.sh - `cloq verify` finds damage and `cloq resume` repairs exactly it.
# After a finished job: one byte flipped inside a tensor of layer 1's shard, layer 3's shard
# truncated, layer 4's deleted. verify must exit 4 and name each bad shard (and the tensor for the
# flip); resume must redo exactly those layers (and say so), keep the other shards untouched, and
# give the reference bytes again; verify then exits 0. Then the same for the base shard.
. tests/e2e/convert_common.inc

REF=$T/ref
O=$T/out
if ! run_rc 0 "$T/ref.log" "$CLOQ" convert $MODEL -o "$REF" $CALIB $QOPTS; then
	fail "reference run"
	finish
fi
cp -r "$REF" "$O"
run_rc 0 "$T/v.log" "$CLOQ" verify "$O" || fail "verify of an intact job"

# flip_in_tensor SHARD INDEX: flip one byte in the middle of tensor INDEX's compressed frames,
# located from the shard header (docs/FORMAT.md 2.1, 2.2); prints the tensor's name.
flip_in_tensor() {
	"$PY" - "$1" "$2" <<'EOF'
import struct, sys
path, want = sys.argv[1], int(sys.argv[2])
b = bytearray(open(path, "rb").read())
H = struct.unpack_from("<I", b, 4)[0]
assert b[8:16] == b"CLOQSHRD"
n = struct.unpack_from("<I", b, 24)[0]
p, start = 32, 8 + H
for i in range(n):
    L = struct.unpack_from("<H", b, p)[0]
    name = b[p + 2:p + 2 + L].decode()
    ndim = b[p + 2 + L + 2]
    q = p + 2 + L + 8 + 8 * ndim
    csize = struct.unpack_from("<Q", b, q + 8)[0]
    if i == want:
        b[start + csize // 2] ^= 0x5A
        open(path, "wb").write(b)
        print(name)
        sys.exit(0)
    start += csize
    p = q + 40
sys.exit("no tensor %d" % want)
EOF
}

inode() { stat -c %i "$1"; }
S=$O/shards
if [ -n "$PY" ]; then
	tensor=$(flip_in_tensor "$S/layer_00001.cloqshard" 3) || fail "could not flip a byte in layer 1's shard"
else
	# without python: a byte in the middle of the file, which is inside some tensor's frames
	sz=$(stat -c %s "$S/layer_00001.cloqshard")
	printf '\132' | dd of="$S/layer_00001.cloqshard" bs=1 seek=$((sz / 2)) conv=notrunc 2>/dev/null
	tensor=
fi
truncate -s $(($(stat -c %s "$S/layer_00003.cloqshard") - 100)) "$S/layer_00003.cloqshard"
rm "$S/layer_00004.cloqshard"
ino0=$(inode "$S/layer_00000.cloqshard")
ino2=$(inode "$S/layer_00002.cloqshard")
inob=$(inode "$S/base.cloqshard")

"$CLOQ" verify "$O" >"$T/v.log" 2>&1
rc=$?
[ $rc = 4 ] || fail "verify of the damaged job exited $rc, want 4"
for l in 1 3 4; do
	grep -q "^BAD   shards/layer_0000$l.cloqshard" "$T/v.log" || fail "verify does not name layer $l's shard"
done
for l in 0 2; do
	grep -q "^ok    shards/layer_0000$l.cloqshard" "$T/v.log" || fail "verify does not pass layer $l's shard"
done
grep -q "^ok    shards/base.cloqshard" "$T/v.log" || fail "verify does not pass the base shard"
if [ -n "$tensor" ]; then
	grep -A1 "^BAD   shards/layer_00001" "$T/v.log" | grep -q -F "$tensor" ||
		fail "verify does not name the damaged tensor $tensor"
fi
grep -A1 "^BAD   shards/layer_00004" "$T/v.log" | grep -q "missing" || fail "verify does not say layer 4's shard is missing"
[ $fails = 0 ] && ok "verify: exit 4, names layers 1 (tensor ${tensor:-?}), 3 (truncated), 4 (missing)"
sed 's/^/    /' "$T/v.log"

"$CLOQ" resume "$O" >"$T/r.log" 2>&1
rc=$?
[ $rc = 0 ] || { fail "resume of the damaged job exited $rc"; tail -n 5 "$T/r.log"; }
redo=$(sed -n "s/^cloq: layer \([0-9]*\)'s shard does not match the journal: redoing it$/\1/p" "$T/r.log" | tr '\n' ' ')
[ "$redo" = "1 3 4 " ] || fail "resume says it redoes layers [$redo], want [1 3 4 ]"
# process_layer prints "layer N/L done in"; layers replayed from their shards print nothing
did=$(sed -n 's/^layer \([0-9]*\)\/5 done in.*/\1/p' "$T/r.log" | tr '\n' ' ')
[ "$did" = "2 4 5 " ] || fail "resume recomputed layers (1-based) [$did], want [2 4 5 ]"
[ "$(inode "$S/layer_00000.cloqshard")" = "$ino0" ] || fail "resume rewrote the intact layer 0 shard"
[ "$(inode "$S/layer_00002.cloqshard")" = "$ino2" ] || fail "resume rewrote the intact layer 2 shard"
[ "$(inode "$S/base.cloqshard")" = "$inob" ] || fail "resume rewrote the intact base shard"
if same_output "$REF" "$O" "after resume"; then
	ok "resume redid layers 1, 3, 4 only; output identical to the reference; verify exits 0"
else
	fail "after resume the output differs from the reference"
fi

# the base shard (embeddings, norm, lm_head): damaged after the job finished
truncate -s 1000 "$S/base.cloqshard"
"$CLOQ" verify "$O" >"$T/v.log" 2>&1
rc=$?
if [ $rc = 4 ] && grep -q "^BAD   shards/base.cloqshard" "$T/v.log"; then
	ok "verify: exit 4, names the truncated base shard"
else
	fail "verify of a truncated base shard exited $rc: $(grep -A1 base "$T/v.log")"
fi
"$CLOQ" resume "$O" >"$T/r.log" 2>&1
rc=$?
[ $rc = 0 ] || { fail "resume after damaging the base shard exited $rc"; tail -n 5 "$T/r.log"; }
grep -q "base shard is damaged or missing: rewriting it" "$T/r.log" || fail "resume does not say it rewrites the base shard"
grep -q "redoing it" "$T/r.log" && fail "resume redid a layer when only the base shard was damaged"
if same_output "$REF" "$O" "after resume (base)"; then
	ok "resume rewrote the base shard; output identical to the reference"
else
	fail "resume after damaging the base shard did not repair it"
fi
finish
