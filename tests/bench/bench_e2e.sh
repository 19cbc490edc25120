#!/bin/sh
# tests/bench/bench_e2e.sh - cloq convert against the PyTorch baseline (tests/bench/torch_pipeline.py),
# same machine, same run, same thread count, same calibration windows (cloq's OUT/calib_windows.npy).
#
#   sh tests/bench/bench_e2e.sh            stories260K (real model, fast sanity row) + the
#                                          Llama-2-7B-geometry model with 2 layers (slow: ~30-60 min
#                                          on the shared 2-core box)
#   sh tests/bench/bench_e2e.sh --quick    the stories260K row only (~1-8 min, mostly torch)
#
# Settings (environment): PYTHON (default /usr/bin/python3, needs numpy; torch optional), THREADS (default: all cores), NSAMPLES x SEQLEN windows for the 7B model
# (default 4 x 512), LAYERS (default 2), BITS 4, GS 128, RANK 64 for the 7B model; the stories row
# uses the first NSTORIES (default 32) of fixtures/reference/calib_tokens_128x256.npy (256 tokens
# each), 4 bits, group 32, rank 8 (the demo's quantization).
# cloq runs with --no-baselines (the baseline computes no LoftQ comparison either).
# The 7B model is random (build/tools/mkmodel --preset llama2-7b --layers 2 --vocab 4096, bf16) and
# its windows are uniform random ids (seed 0): timings are what matter there; errors are compared.
# Everything goes under a mktemp -d in TMPDIR (default /tmp) and is deleted at the end.
# Prints: the machine (sgemm is in bench_forward), disk bandwidth (dd), per model: wall time of each
# side and their ratio, cloq's stage breakdown (report.json), the I/O it did (/proc/PID/io), the
# baseline's stage breakdown, and the per-layer mean calibrated errors of both (target: within 1%).
# Exit 0 also when torch is missing (the comparison is then skipped, said so).
set -u
BUILD=${BUILD:-build}
PY=${PYTHON:-/usr/bin/python3}
THREADS=${THREADS:-$(nproc)}
NSAMPLES=${NSAMPLES:-4}
SEQLEN=${SEQLEN:-512}
LAYERS=${LAYERS:-2}
BITS=${BITS:-4}
GS=${GS:-128}
RANK=${RANK:-64}
NSTORIES=${NSTORIES:-32}
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
HERE=$(cd "$(dirname "$0")" && pwd)
CLOQ=$(pwd)/$BUILD/cloq
MKMODEL=$(pwd)/$BUILD/tools/mkmodel
[ -x "$CLOQ" ] || { echo "bench_e2e: $CLOQ not built (make)"; exit 1; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cloq_bench_e2e.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT INT TERM

load() { cut -d' ' -f1 /proc/loadavg; }
now() { date +%s.%N; }

HAVE_TORCH=1
$PY -c 'import torch' 2>/dev/null || HAVE_TORCH=0

echo "bench_e2e: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, threads $THREADS, $(uptime | sed 's/.*load/load/')"
# disk: 512 MB sequential write (fdatasync) and O_DIRECT read of the same file, in TMPDIR
w=$(dd if=/dev/zero of="$TMP/dd" bs=1M count=512 conv=fdatasync 2>&1 | tail -1 | sed 's/.*, //')
r=$(dd if="$TMP/dd" of=/dev/null bs=1M iflag=direct 2>&1 | tail -1 | sed 's/.*, //')
rm -f "$TMP/dd"
echo "disk ($TMP): write $w (dd 512 MB, fdatasync), read $r (O_DIRECT), load $(load)"
[ $HAVE_TORCH = 1 ] || echo "bench_e2e: python3-torch not installed: the PyTorch side is skipped (apt-get install python3-torch)"

# run NAME MODEL WINDOWS_ARGS... : one cloq convert, then the baseline on its windows
pair() {
    name=$1 model=$2 bits=$3 gs=$4 rank=$5 ; shift 5
    out="$TMP/out_$name"
    echo
    echo "== $name: $bits bits, group $gs, rank $rank, threads $THREADS"
    l0=$(load); t0=$(now)
    # the shell's /proc/self/io, read after cloq has been reaped, holds cloq's I/O counters
    sh -c '"$@" >/dev/null 2>"$0.log"; rc=$?; cat /proc/$$/io > "$0.io"; exit $rc' "$out" \
        "$CLOQ" convert "$model" -o "$out" "$@" --bits "$bits" --group-size "$gs" --rank "$rank" \
        --threads "$THREADS" --no-baselines --quiet || { echo "cloq convert failed:"; cat "$out.log"; return 1; }
    t1=$(now); l1=$(load)
    echo "cloq $t0 $t1 $l0 $l1" > "$TMP/$name.times"
    if [ $HAVE_TORCH = 1 ]; then
        l0=$(load); t0=$(now)
        $PY "$HERE/torch_pipeline.py" "$model" --windows "$out/calib_windows.npy" --bits "$bits" \
            --group-size "$gs" --rank "$rank" --threads "$THREADS" --json "$TMP/$name.torch.json" --quiet \
            >/dev/null || { echo "torch_pipeline.py failed"; return 1; }
        t1=$(now); l1=$(load)
        echo "torch $t0 $t1 $l0 $l1" >> "$TMP/$name.times"
    fi
    $PY "$HERE/e2e_report.py" "$name" "$out/report.json" "$out.io" "$TMP/$name.times" "$TMP/$name.torch.json" "$out"
}

rc=0
pair stories260K fixtures/stories260K 4 32 8 --calib-tokens fixtures/reference/calib_tokens_128x256.npy --nsamples "$NSTORIES" || rc=1

if [ $QUICK = 0 ]; then
    "$MKMODEL" --preset llama2-7b --layers "$LAYERS" --vocab 4096 --out "$TMP/llama2-7b-geom" --quiet || exit 1
    $PY -c "import numpy as np; np.save('$TMP/windows.npy', np.random.default_rng(0).integers(0, 4096, size=($NSAMPLES, $SEQLEN), dtype=np.int32))"
    echo
    echo "llama2-7b geometry, $LAYERS layers, vocab 4096, bf16 ($(du -sh "$TMP/llama2-7b-geom" | cut -f1)), calibration $NSAMPLES x $SEQLEN random ids"
    pair llama2-7b-geom "$TMP/llama2-7b-geom" "$BITS" "$GS" "$RANK" --calib-tokens "$TMP/windows.npy" || rc=1
fi
exit $rc
