#!/bin/sh
# tests/bench/bench_moe.sh - the mixture-of-experts row of `make bench`: a Qwen3-MoE layer of 64
# experts (hidden 1024, width 384, top-8; 8 x 256 random calibration ids, INT4 g128 r16,
# --no-baselines) converted expert by expert, against what `cloq inspect` planned for it: peak RSS
# (from the OS) against the planned peak (with the stashes when the run kept them in RAM), wall time
# against the time model, and the seconds an expert took. ~25 s. BENCH_FULL=1 also runs the
# Qwen3-235B-A22B-geometry proof (tests/bench/proof_moe235.sh, ~15 min).
set -u
BUILD=${BUILD:-build}
PY=${PYTHON:-/usr/bin/python3}
CLOQ=$BUILD/cloq
[ -x "$CLOQ" ] && [ -x "$BUILD/tools/mkmodel" ] || { echo "bench_moe: build first (make)"; exit 1; }
[ -x /usr/bin/time ] || { echo "bench_moe: needs /usr/bin/time"; exit 1; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cloq_benchmoe.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT INT TERM
"$BUILD/tools/mkmodel" --out "$TMP/m" --family qwen3_moe --hidden 1024 --intermediate 2048 --layers 1 --heads 8 \
	--kv-heads 2 --head-dim 128 --experts 64 --topk 8 --moe-intermediate 384 --vocab 1024 --quiet || exit 1
"$PY" -c "
import numpy as np
np.save('$TMP/calib.npy', np.random.RandomState(0).randint(0, 1024, size=(8, 256)).astype(np.int32))" || exit 1
SET="--calib-tokens $TMP/calib.npy --bits 4 --group-size 128 --rank 16 --no-baselines"
# shellcheck disable=SC2086
"$CLOQ" inspect "$TMP/m" $SET >"$TMP/plan.txt" || exit 1
# shellcheck disable=SC2086
/usr/bin/time -v "$CLOQ" convert "$TMP/m" -o "$TMP/o" $SET --quiet 2>"$TMP/time.log" || { cat "$TMP/time.log"; exit 1; }
"$PY" - "$TMP/plan.txt" "$TMP/time.log" "$TMP/o/report.json" <<'PYEOF'
import json, re, sys
plan, tlog, rep = open(sys.argv[1]).read(), open(sys.argv[2]).read(), json.load(open(sys.argv[3]))
unit = {"K": 1 / 1048576, "M": 1 / 1024, "G": 1, "T": 1024}
def gib(pat):
    m = re.search(pat, plan)
    return float(m.group(1)) * unit[m.group(2)] if m else float("nan")
peak = gib(r"peak memory +([0-9.]+) ([KMGT])iB")
peak_ram = gib(r"on top of the peak \(([0-9.]+) ([KMGT])iB in all\)")
m = re.search(r"time +about ([0-9.]+) (s|min|h) here", plan)
pred = float(m.group(1)) * {"s": 1, "min": 60, "h": 3600}[m.group(2)]
kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", tlog).group(1))
wall = rep["run_seconds"]["total"]
p = peak_ram if rep["stashes"] == "ram" else peak
L = rep["layers"][0]
per = [sum(x["seconds"] for x in e["linears"]) for e in L["experts"]]
print("%-34s %10s %10s %8s" % ("mixture of experts (64 experts)", "measured", "planned", "ratio"))
print("%-34s %9.3fG %9.3fG %7.2fx" % ("peak RSS (stashes %s)" % rep["stashes"], kb / 1048576, p, p / (kb / 1048576)))
print("%-34s %9.1fs %9.1fs %7.2fx" % ("wall time", wall, pred, pred / wall))
print("%-34s %9.3fs   (linears' own solve time; %d filled: %s)" %
      ("an expert, mean", sum(per) / len(per), len(L["experts_filled"]), L["experts_filled"]))
PYEOF
rc=$?
if [ "${BENCH_FULL:-0}" = 1 ]; then
	BUILD=$BUILD sh tests/bench/proof_moe235.sh || rc=1
fi
exit $rc
