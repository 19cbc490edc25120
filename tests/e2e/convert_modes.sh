#!/bin/sh
# tests/e2e/convert_modes.sh - the conversion modes beyond the defaults run to a verified job with
# the report's invariants (stories260K, 8 windows, INT2 g32 r8):
#   --init loftq    final == loftq1 on every linear (LoftQ(T=1) on the job's own Q is the init)
#   --init zero     final == quantized on every linear (B = 0)
#   --cloq-iters 3  layer 0: final <= the one-shot job's final on every linear (iterate 1 is the
#                   one-shot solution, the best iterate is kept)
#   --quantizer rtn final <= quantized everywhere; layer 0's mean quantized error above GPTQ's
#   --propagate lora|fp, --one-pass: layer 0's q/k/v (whose statistics precede any processed
#                   group) identical to the default job's; final <= quantized everywhere
#   --full-passes   statistics recomputed from each layer's input instead of resumed from the
#                   stashes: shards byte-identical to the default job's; so are the stashes kept
#                   as files (CLOQ_STASH=disk) instead of in RAM
# These exercise the solver paths where GPTQ's factor stays alive beside R (LoftQ, alternating
# CLoQ) and the shed/restore of earlier groups' deq(Q) under --propagate lora.
. tests/e2e/convert_common.inc
[ -n "$PY" ] || { echo "SKIP: needs /usr/bin/python3"; exit 77; }

job() { # job NAME OPTIONS...: convert + verify
	name=$1
	shift
	if ! run_rc 0 "$T/$name.log" "$CLOQ" convert $MODEL -o "$T/$name" $CALIB $QOPTS "$@"; then
		fail "$name: convert $*"
		return 1
	fi
	run_rc 0 "$T/$name.v" "$CLOQ" verify "$T/$name" || fail "$name: verify"
}

job default
job loftq --init loftq
job zero --init zero
job alt --cloq-iters 3
job rtn --quantizer rtn
job lora --propagate lora
job fp --propagate fp
job onepass --one-pass
job full --full-passes
for f in "$T/default/shards/"*; do
	cmp -s "$f" "$T/full/shards/$(basename "$f")" || fail "--full-passes: $(basename "$f") differs from the default job's"
done
# the default job keeps its stashes in RAM (small); as files they give the same bytes
grep -q '"stashes":[[:space:]]*"ram"' "$T/default/report.json" || fail "default job: stashes not in RAM"
CLOQ_STASH=disk job diskstash
grep -q '"stashes":[[:space:]]*"disk"' "$T/diskstash/report.json" || fail "CLOQ_STASH=disk: stashes not on disk"
for f in "$T/default/shards/"*; do
	cmp -s "$f" "$T/diskstash/shards/$(basename "$f")" || fail "stashes on disk: $(basename "$f") differs from RAM's"
done

"$PY" - "$T" <<'PYEOF' || fails=$((fails + 1))
import json, math, sys
T = sys.argv[1]
def lin(name):
    r = json.load(open("%s/%s/report.json" % (T, name)))
    return [(L["layer"], e) for L in r["layers"] for e in L["linears"]]
bad = []
rep = {n: lin(n) for n in ("default", "loftq", "zero", "alt", "rtn", "lora", "fp", "onepass")}
for n, rows in rep.items():
    for l, e in rows:
        for k in ("quantized", "final"):
            if not (isinstance(e.get(k), (int, float)) and math.isfinite(e[k]) and e[k] >= 0):
                bad.append("%s L%d %s: %s = %r" % (n, l, e["name"], k, e.get(k)))
        if n != "zero" and e["final"] > e["quantized"] + 1e-12:
            bad.append("%s L%d %s: final %.9g > quantized %.9g" % (n, l, e["name"], e["final"], e["quantized"]))
for l, e in rep["loftq"]:
    if abs(e["final"] - e["loftq1"]) > 1e-12:
        bad.append("loftq L%d %s: final %.12g != loftq1 %.12g" % (l, e["name"], e["final"], e["loftq1"]))
for l, e in rep["zero"]:
    if e["final"] != e["quantized"]:
        bad.append("zero L%d %s: final %.12g != quantized %.12g" % (l, e["name"], e["final"], e["quantized"]))
d0 = {e["name"]: e for l, e in rep["default"] if l == 0}
for l, e in rep["alt"]:
    if l == 0 and e["final"] > d0[e["name"]]["final"] * (1 + 1e-9):
        bad.append("alt L0 %s: final %.9g above one-shot %.9g" % (e["name"], e["final"], d0[e["name"]]["final"]))
m = lambda rows, k: sum(e[k] for l, e in rows if l == 0) / sum(1 for l, e in rows if l == 0)
if not m(rep["rtn"], "quantized") > m(rep["default"], "quantized"):
    bad.append("rtn: layer 0 mean quantized error %.6g not above GPTQ's %.6g" % (m(rep["rtn"], "quantized"), m(rep["default"], "quantized")))
for n in ("lora", "fp", "onepass"):
    for l, e in rep[n]:
        if l == 0 and e["name"] in ("q_proj", "k_proj", "v_proj") and e["final"] != d0[e["name"]]["final"]:
            bad.append("%s L0 %s: final %.12g differs from the default job's %.12g" % (n, e["name"], e["final"], d0[e["name"]]["final"]))
for b in bad[:20]:
    print("  " + b)
print("means of final: " + ", ".join("%s %.4f" % (n, sum(e["final"] for l, e in rows) / len(rows)) for n, rows in rep.items()))
sys.exit(1 if bad else 0)
PYEOF
[ "$fails" -eq 0 ] && ok "9 modes: verified jobs, report invariants hold, --full-passes and disk stashes byte-identical"
finish
