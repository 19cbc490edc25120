#!/bin/sh
# tests/bench/proof_70b.sh - the 70B-width scale proof (issue 7): convert 2 layers of a synthetic
# model with exact Llama-3-70B layer geometry (hidden 8192, intermediate 28672, 64 heads, 8 kv
# heads; vocab cut to 1024) under --mem-budget 20G, and compare the OS's peak RSS with the
# planner's prediction. Needs ~17 GiB RAM, ~8 GB disk in TMPDIR and ~25 min on 2 cores.
#
#   sh tests/bench/proof_70b.sh            4 x 256 calibration tokens (random ids, seed 0)
#   NSAMPLES=8 SEQLEN=512 sh tests/bench/proof_70b.sh
#
# The calibration is small on purpose: the solver's work (two factorisations of a 28672 x 28672
# matrix, GPTQ and CLoQ on the 8192 x 28672 down_proj) does not depend on it and takes most of
# the time; the forward passes grow with it. Prints the plan, the run's peak RSS, the difference.
set -u
BUILD=${BUILD:-build}
PY=${PYTHON:-/usr/bin/python3}
NSAMPLES=${NSAMPLES:-4}
SEQLEN=${SEQLEN:-256}
BUDGET=${BUDGET:-20G}
CLOQ=$(pwd)/$BUILD/cloq
MKMODEL=$(pwd)/$BUILD/tools/mkmodel
[ -x "$CLOQ" ] && [ -x "$MKMODEL" ] || { echo "proof_70b: build first (make)"; exit 1; }
[ -x /usr/bin/time ] || { echo "proof_70b: needs /usr/bin/time (apt-get install time)"; exit 1; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cloq_proof70b.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT INT TERM
echo "proof_70b: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uptime | sed 's/.*load/load/')"
"$MKMODEL" --preset llama3-70b --layers 2 --vocab 1024 --out "$TMP/m" || exit 1
"$PY" -c "
import numpy as np
np.save('$TMP/calib.npy', np.random.RandomState(0).randint(0, 1024, size=($NSAMPLES, $SEQLEN)).astype(np.int32))" || exit 1
SET="--bits 4 --group-size 128 --rank 64 --no-baselines"
"$CLOQ" inspect "$TMP/m" --nsamples "$NSAMPLES" --seqlen "$SEQLEN" $SET --mem-budget "$BUDGET" | sed -n '/conversion plan/,$p'
# the planned peak in GiB, whatever unit inspect prints it in
plan=$("$CLOQ" inspect "$TMP/m" --nsamples "$NSAMPLES" --seqlen "$SEQLEN" $SET |
	sed -n 's/.*peak memory *\([0-9.]*\) \([KMGT]\)iB.*/\1 \2/p' |
	awk '{ f = $2 == "K" ? 1 / 1048576 : $2 == "M" ? 1 / 1024 : $2 == "T" ? 1024 : 1; print $1 * f }')
/usr/bin/time -v "$CLOQ" convert "$TMP/m" -o "$TMP/o" --calib-tokens "$TMP/calib.npy" $SET \
    --mem-budget "$BUDGET" --quiet 2> "$TMP/time.log"
rc=$?
cat "$TMP/time.log" | grep -v "^\s*$" | tail -25 | grep -E "Elapsed|Maximum resident|Exit status"
kb=$(sed -n 's/.*Maximum resident set size (kbytes): *//p' "$TMP/time.log")
"$CLOQ" verify "$TMP/o" > /dev/null && echo "verify: ok" || echo "verify: FAILED"
"$PY" -c "
kb = $kb; plan = $plan
gib = kb / 1048576
print('peak RSS %.2f GiB (%d kB), planner %.2f GiB: prediction %+.1f%% of measured; budget $BUDGET' % (gib, kb, plan, 100 * (plan - gib) / gib))"
exit $rc
