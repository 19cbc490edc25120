#!/bin/sh
# tests/e2e/ref_forward.sh - keep the numpy reference forward (tests/tools/ref_llama.py) honest:
# its logits, cross-entropy and perplexity must match fixtures/reference, and the committed
# solver fixture must be re-derivable from it. Exit 77 (skip) when python3 or numpy is missing.
cd "$(dirname "$0")/../.." || exit 1
. tests/e2e/need_numpy.inc
BUILD=${BUILD:-build}
mkdir -p "$BUILD" || exit 1
lg="$BUILD/ref_forward_logits.f32"
rm -f "$lg"
# One process (the model is loaded once): the self-check, the solver fixture re-derivation, and
# the --ppl-npy / --logits entry points other tests use.
out=$("$PY" tests/tools/ref_llama.py --check --check-solver-fixture fixtures/solver \
    --ppl-npy fixtures/reference/public_eval_windows.npy \
    --logits fixtures/reference/ref_story1_ids64.txt --out "$lg")
rc=$?
echo "$out"
[ $rc -eq 0 ] || exit 1
echo "$out" | grep -qx "perplexity 5.340249" || { echo "--ppl-npy did not print perplexity 5.340249"; exit 1; }
# the Qwen3 path and the refusals, against scalar loops (tests/tools/ref_llama.py --selftest)
"$PY" tests/tools/ref_llama.py --selftest || exit 1
"$PY" - "$lg" <<'PYEOF' || exit 1
import sys, numpy as np
got = np.fromfile(sys.argv[1], dtype="<f4")
ref = np.fromfile("fixtures/reference/ref_story1_logits64.f32", dtype="<f4")
d = float(np.max(np.abs(got - ref))) if got.shape == ref.shape else float("inf")
print("--logits --out max abs diff %.3e" % d)
sys.exit(0 if d <= 1e-4 else 1)
PYEOF
echo "ok"
