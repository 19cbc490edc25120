#!/bin/sh
# tests/bench/run.sh - run every benchmark in $BUILD/bench, then the end-to-end comparison with the
# PyTorch baseline (tests/bench/bench_e2e.sh). `make bench` calls it.
#
#   default       short settings, under ~5 minutes on the shared 2-core box: bench_forward at
#                 seqlen 512 only, the small shapes of the quant/solver/cache/reader benches, the
#                 calibration-passes row (bench_calib.py: job (a), ~10 s; BENCH_FULL adds the
#                 7B-geometry job (b)), the contention row (bench_contention.py --quick: ppl and convert alone and beside one
#                 busy process per CPU, ~2 minutes), the mixture-of-experts row (bench_moe.sh: 64
#                 experts against their plan, ~25 s; BENCH_FULL adds the Qwen3-235B-A22B-geometry
#                 proof), and the e2e stories260K row (bench_e2e.sh --quick; the torch side is skipped when
#                 python3-torch is not installed)
#   BENCH_FULL=1  every benchmark with its own defaults (bench_forward at 512 and 2048 tokens,
#                 bench_stages on a 4096 x 4096 linear) and the
#                 full e2e (adds the Llama-2-7B-geometry 2-layer model: 30-60 minutes here)
BUILD=${BUILD:-build}
FULL=${BENCH_FULL:-0}
rc=0
for b in "$BUILD"/bench/*; do
    [ -x "$b" ] || continue
    n=$(basename "$b")
    args=
    if [ "$FULL" != 1 ]; then
        case $n in
        bench_forward) args="--seqlens 512" ;;
        bench_cache) args="--quick" ;;
        bench_quant | bench_solver) args="--shape 1024x2752" ;;
        bench_stages) args="--shape 1024x2752 --tokens 1024" ;;
        bench_reader) args="--size 0.5 --reps 1" ;;
        esac
    fi
    echo "== $n $args"
    # shellcheck disable=SC2086
    "$b" $args || rc=1
done
echo "== bench_calib.py"
if [ "$FULL" = 1 ]; then
    /usr/bin/python3 tests/bench/bench_calib.py "$BUILD" --full || rc=1
else
    /usr/bin/python3 tests/bench/bench_calib.py "$BUILD" || rc=1
fi
echo "== bench_moe.sh"
BUILD=$BUILD sh tests/bench/bench_moe.sh || rc=1
echo "== bench_contention.py"
if [ "$FULL" = 1 ]; then
    /usr/bin/python3 tests/bench/bench_contention.py "$BUILD" || rc=1
else
    /usr/bin/python3 tests/bench/bench_contention.py "$BUILD" --reps 1 --quick || rc=1
fi
echo "== bench_e2e.sh"
if [ "$FULL" = 1 ]; then
    BUILD=$BUILD sh tests/bench/bench_e2e.sh || rc=1
else
    BUILD=$BUILD sh tests/bench/bench_e2e.sh --quick || rc=1
fi
exit $rc
