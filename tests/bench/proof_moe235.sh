#!/bin/sh
# tests/bench/proof_moe235.sh - the mixture-of-experts scale proof (issue "Mixture-of-experts"):
# convert 2 layers of a synthetic model with the exact Qwen3-235B-A22B layer geometry (hidden 4096,
# 64 heads, 4 kv heads, head_dim 128, 128 experts of width 1536, top-8; vocab cut to 1024; 10 GB of
# bf16) under --mem-budget 16G, expert by expert, and compare the OS's peak RSS with the planner's
# prediction. Needs ~3 GiB RAM, ~17 GB disk in TMPDIR and ~25 min on 2 cores.
#
#   sh tests/bench/proof_moe235.sh             32 x 256 calibration tokens (random ids, seed 0)
#   NSAMPLES=64 SEQLEN=512 sh tests/bench/proof_moe235.sh
#
# Most of the time is the 256 experts' quantization and CLoQ solves (two factorisations and three
# linears each), which do not depend on the token count; the tokens set the routing pass, each
# expert's rows and the experts' output buffers. Prints the plan, the run's peak RSS and the
# difference from the planned peak (with the stashes when the run kept them in RAM).
set -u
BUILD=${BUILD:-build}
PY=${PYTHON:-/usr/bin/python3}
NSAMPLES=${NSAMPLES:-32}
SEQLEN=${SEQLEN:-256}
BUDGET=${BUDGET:-16G}
CLOQ=$(pwd)/$BUILD/cloq
MKMODEL=$(pwd)/$BUILD/tools/mkmodel
[ -x "$CLOQ" ] && [ -x "$MKMODEL" ] || { echo "proof_moe235: build first (make)"; exit 1; }
[ -x /usr/bin/time ] || { echo "proof_moe235: needs /usr/bin/time (apt-get install time)"; exit 1; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cloq_proofmoe.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT INT TERM
echo "proof_moe235: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uptime | sed 's/.*load/load/')"
"$MKMODEL" --out "$TMP/m" --family qwen3_moe --hidden 4096 --intermediate 12288 --layers 2 --heads 64 \
	--kv-heads 4 --head-dim 128 --experts 128 --topk 8 --moe-intermediate 1536 --vocab 1024 --max-pos 40960 \
	--quiet || exit 1
"$PY" -c "
import numpy as np
np.save('$TMP/calib.npy', np.random.RandomState(0).randint(0, 1024, size=($NSAMPLES, $SEQLEN)).astype(np.int32))" || exit 1
SET="--bits 4 --group-size 128 --rank 64 --no-baselines"
"$CLOQ" inspect "$TMP/m" --calib-tokens "$TMP/calib.npy" $SET --mem-budget "$BUDGET" | sed -n '/^experts/,$p'
# the planned peak in GiB (and with the stashes in RAM), whatever unit inspect prints them in
gib() { awk '{ f = $2 == "K" ? 1 / 1048576 : $2 == "M" ? 1 / 1024 : $2 == "T" ? 1024 : 1; print $1 * f }'; }
"$CLOQ" inspect "$TMP/m" --calib-tokens "$TMP/calib.npy" $SET >"$TMP/plan.txt"
plan=$(sed -n 's/.*peak memory *\([0-9.]*\) \([KMGT]\)iB.*/\1 \2/p' "$TMP/plan.txt" | gib)
plan_ram=$(sed -n 's/.*on top of the peak (\([0-9.]*\) \([KMGT]\)iB in all).*/\1 \2/p' "$TMP/plan.txt" | gib)
/usr/bin/time -v "$CLOQ" convert "$TMP/m" -o "$TMP/o" --calib-tokens "$TMP/calib.npy" $SET \
	--mem-budget "$BUDGET" --quiet 2>"$TMP/time.log"
rc=$?
grep -v "^\s*$" "$TMP/time.log" | tail -25 | grep -E "Elapsed|Maximum resident|Exit status"
kb=$(sed -n 's/.*Maximum resident set size (kbytes): *//p' "$TMP/time.log")
"$CLOQ" verify "$TMP/o" >/dev/null && echo "verify: ok" || echo "verify: FAILED"
"$PY" - "$TMP/o/report.json" "$kb" "$plan" "${plan_ram:-0}" "$BUDGET" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
kb, plan, plan_ram, budget = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
ram = r["stashes"] == "ram"
p = plan_ram if ram else plan
gib = kb / 1048576
print("peak RSS %.2f GiB (%d kB); planner %.2f GiB (stashes %s%s): prediction %+.1f%% of measured; budget %s"
      % (gib, kb, p, r["stashes"], ", counted" if ram else "", 100 * (p - gib) / gib, budget))
print("stages (s): %s" % ", ".join("%s %.1f" % (k, v) for k, v in r["run_seconds"].items()))
lay = r["layers"]
tok = [sum(e["tokens"] for e in L["experts"]) for L in lay]
fil = [L["experts_filled"] for L in lay]
print("tokens routed per layer %s; experts filled %s; mean calibrated error %s" %
      (tok, fil, r.get("mean_calibrated_rel_error")))
PYEOF
exit $rc
