#!/bin/sh
# End-to-end checks of the command line: help, exit codes, inspect's figures on the bundled model.
set -u
CLOQ=${CLOQ:-./cloq}
fail() { echo "FAIL: $*"; exit 1; }
expect_rc() { want=$1; shift; "$@" >/tmp/cloq_cli.out 2>&1; got=$?; [ "$got" = "$want" ] || { cat /tmp/cloq_cli.out; fail "'$*' exited $got, want $want"; }; }

expect_rc 0 $CLOQ --help
expect_rc 1 $CLOQ
expect_rc 1 $CLOQ frobnicate
expect_rc 0 $CLOQ inspect --help
expect_rc 1 $CLOQ inspect

out=$($CLOQ inspect fixtures/stories260K) || fail "inspect failed"
echo "$out" | grep -q "LlamaForCausalLM" || fail "inspect: architecture"
echo "$out" | grep -q "260,032" || fail "inspect: parameter count"
echo "$out" | grep -q "5 decoder layers" || fail "inspect: layers"
echo "$out" | grep -q "8 query heads, 4 key-value heads" || fail "inspect: heads"
echo "$out" | grep -q "tied embeddings" || fail "inspect: tied"
echo "$out" | grep -q "peak memory" || fail "inspect: plan"

# bad input: exit 2 and the file named
expect_rc 2 $CLOQ inspect /nonexistent-model
grep -q "/nonexistent-model/config.json" /tmp/cloq_cli.out || fail "inspect: missing dir not named"
d=$(mktemp -d)
cp fixtures/stories260K/config.json "$d/"
printf 'garbage' > "$d/model.safetensors"
expect_rc 2 $CLOQ inspect "$d"
grep -q "model.safetensors" /tmp/cloq_cli.out || fail "inspect: bad safetensors not named"
rm -rf "$d"
echo "cli ok"
