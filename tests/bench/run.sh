#!/bin/sh
# tests/bench/run.sh - run every benchmark in $BUILD/bench with its default (short) settings.
BUILD=${BUILD:-build}
rc=0
for b in "$BUILD"/bench/*; do
    [ -x "$b" ] || continue
    echo "== $(basename "$b")"
    "$b" || rc=1
done
exit $rc
