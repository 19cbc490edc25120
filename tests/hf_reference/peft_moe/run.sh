#!/bin/bash
# cloq MoE export vs real transformers + PEFT. Not part of `make test`. See README.md.
#   ./run.sh            models, conversions and exports under $WORK (default /tmp/peftcheck/work),
#                       results in $WORK/out/results.jsonl, table on stdout (RESULTS.txt is a copy)
# Needs (README.md "Setup"): $BIN/cloq and $BIN/mkmodel (copies of build/cloq, build/tools/mkmodel),
# transformers v4.44.2 / v4.51.3 sources under $TF, peft v0.13.2 (and optionally v0.15.2, v0.17.1)
# under $PEFTROOT/<tag>/src, the accelerate stand-in under $STUBS2 (make_stubs2.sh writes it).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=${ROOT:-/tmp/peftcheck}
BIN=${BIN:-$ROOT/bin}
WORK=${WORK:-$ROOT/work}
TF=${TF:-$ROOT/tf}
PEFTROOT=${PEFTROOT:-$ROOT/peft}            # $PEFTROOT/<tag>/src/peft
PEFT=$PEFTROOT/v0.13.2/src
PEFT_EXTRA=${PEFT_EXTRA:-"v0.15.2 v0.17.1"}   # also run the three default cases with these, if present
STUBS2=${STUBS2:-$ROOT/stubs2}
PY=/usr/bin/python3
CALIB=${CALIB:-/work/main/fixtures/reference/calib_tokens_128x256.npy}
EVAL=${EVAL:-/work/main/fixtures/reference/public_eval_windows.npy}

for f in "$BIN/cloq" "$BIN/mkmodel" "$TF/v4.44.2/src/transformers" "$TF/v4.51.3/src/transformers" \
         "$PEFT/peft" "$STUBS2/accelerate"; do
  [ -e "$f" ] || { echo "missing $f (README.md, Setup)" >&2; exit 2; }
done
md5sum "$BIN/cloq" "$BIN/mkmodel"

set -e
rm -rf "$WORK"; mkdir -p "$WORK/M" "$WORK/J" "$WORK/E" "$WORK/G" "$WORK/out"
cd "$WORK"
$PY -c "import numpy as np; a=np.load('$EVAL'); np.save('eval16.npy', np.ascontiguousarray(a[:16]))"

GEOM="--hidden 64 --intermediate 96 --layers 2 --heads 4 --kv-heads 2 --vocab 512 --max-pos 1024 --quiet"
"$BIN/mkmodel" --out M/mx --family mixtral --experts 4 --topk 2 $GEOM
"$BIN/mkmodel" --out M/q2 --family qwen2_moe --experts 4 --topk 2 --moe-intermediate 32 --shared-intermediate 48 --decoder-sparse-step 2 $GEOM
"$BIN/mkmodel" --out M/q3 --family qwen3_moe --experts 6 --topk 2 --moe-intermediate 40 --head-dim 32 $GEOM

CONV="--calib-tokens $CALIB --nsamples 8 --bits 4 --group-size 32 --rank 8 --quiet"
for m in mx q2 q3; do
  "$BIN/cloq" convert M/$m -o J/$m $CONV
  "$BIN/cloq" convert M/$m -o J/$m-a16 $CONV --lora-alpha 16     # scaling 2: alpha/r must be applied
done
for j in mx q2 q3 mx-a16 q2-a16 q3-a16; do
  "$BIN/cloq" export J/$j --to E/$j --format dequant --dtype fp32
  "$BIN/cloq" export J/$j --to G/$j
done
set +e

status=0
: > out/results.jsonl
CASES="mx/4.44/v0.13.2 mx/4.51/v0.13.2 q2/4.44/v0.13.2 q2/4.51/v0.13.2 q3/4.51/v0.13.2"
CASES="$CASES mx-a16/4.44/v0.13.2 q2-a16/4.44/v0.13.2 q3-a16/4.51/v0.13.2"
for t in $PEFT_EXTRA; do
  if [ -d "$PEFTROOT/$t/src/peft" ]; then CASES="$CASES mx/4.44/$t q2/4.44/$t q3/4.51/$t"
  else echo "skipping peft $t: $PEFTROOT/$t/src/peft missing" >&2; fi
done
for c in $CASES; do
  IFS=/ read -r m rel tag <<< "$c"
  $PY "$HERE/peft_moe.py" --export E/$m --job J/$m --gptq G/$m --orig M/${m%-a16} --tokens eval16.npy \
      --tf $rel --cloq "$BIN/cloq" --tfroot "$TF" --peft-src "$PEFTROOT/$tag/src" --stubs2 "$STUBS2" --json \
      > out/case.json 2> out/case-$m-$rel-$tag.stderr
  rc=$?
  [ $rc -eq 0 ] || status=1
  $PY -c "import json,sys; r=json.load(open('out/case.json')); r['case']='$m'; print(json.dumps(r))" >> out/results.jsonl \
    || { echo "case $c: no result (exit $rc), see out/case-$m-$rel-$tag.stderr" >&2; status=1; }
done
$PY "$HERE/table.py" out/results.jsonl | tee out/table.txt || status=1
exit $status
