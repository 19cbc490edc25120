#!/bin/sh
# tests/run.sh unit|all - run the cmocka unit programs (and, with "all", the end-to-end scripts).
# Exit status 77 from a program means "skipped" (liburing's convention). Ends with the line
# "N passed, N failed, N skipped" and exits non-zero if anything failed.
BUILD=${BUILD:-build}
mode=${1:-all}
pass=0; fail=0; skip=0; failed=""
run_one() {
    name=$1; shift
    start=$(date +%s.%N)
    "$@" >"$BUILD/log.$name" 2>&1
    rc=$?
    t=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}')
    if [ $rc -eq 0 ]; then pass=$((pass+1)); echo "PASS  $name (${t}s)"
    elif [ $rc -eq 77 ]; then skip=$((skip+1)); echo "SKIP  $name"
    else fail=$((fail+1)); failed="$failed $name"; echo "FAIL  $name (exit $rc, ${t}s)"; tail -n 40 "$BUILD/log.$name" | sed 's/^/      /'
    fi
}
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    case "$t" in *.o|*.d) continue;; esac
    run_one "$(basename "$t")" "$t"
done
if [ "$mode" = all ]; then
    for s in tests/e2e/*.sh; do
        [ -f "$s" ] || continue
        run_one "e2e_$(basename "$s" .sh)" env BUILD="$BUILD" sh "$s"
    done
fi
[ -n "$failed" ] && echo "failed:$failed"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
