#!/bin/sh
# tests/e2e/export_formats.sh - `cloq export` checked against the PUBLISHED formats by an independent
# numpy reader (tests/tools/read_export.py: safetensors spec, HF sharded index, AutoGPTQ packing
# v1/v2 incl. 3 bits, PEFT LoRA), not against cloq's own writer:
#  - stories260K at INT2 with --gptq-zeros v2 (zero points of 0 occur: the export must say gptq_v2),
#    INT4 act-order with
#    lora_alpha 2r (g_idx and the adapter scaling), INT4 sym group 128, INT3 and INT8 (other packings; at 8 bits the
#    172-wide MLP packs too), and a synthetic model whose every linear packs at 3 bits;
#  - for each: the reader's GPTQ dequantization == the fp32 dequant export BITWISE for every
#    quantized linear, dense tensors == its fp16 (or bf16) rounding, adapters identical;
#  - a sharded export (5 files) reads back identical to the single-file one;
#  - 31 mutants (one rule broken each, tests/tools/read_export_mutants.py) are all rejected;
#  - perplexity of reader-built model (ref_llama.py forward) == `cloq ppl`, with and without LoRA;
#  - GPTQ v1 for every loader: an INT2 job with the default --gptq-zeros v1 exports checkpoint_format
#    gptq with no zero of 0, and a loader that knows only v1 (the reader's --v1-only: zero = field
#    + 1 always) gets `cloq ppl`'s perplexity from it, while from the v2 file it gets a very
#    different one; a v1 job whose journal is edited to hide a zero of 0 is refused (exit 4);
#  - exports interrupted (CLOQ_FAULT_IO=N, kill -9), also over a previous export of the same job,
#    never leave a directory a loader would accept with wrong contents: a failed export leaves DIR
#    as it was (absent, or the previous export byte for byte) and no temp sibling; no *.tmp.*
#    after a clean export; an export of another job into an existing export is refused.
# Exit 77 (skip) when python3 with numpy is missing.
set -u
cd "$(dirname "$0")/../.." || exit 1
. tests/e2e/need_numpy.inc
BUILD=${BUILD:-build}
CLOQ=${CLOQ:-./cloq}
MKMODEL=${MKMODEL:-$BUILD/tools/mkmodel}
R="$PY tests/tools/read_export.py"
# one thread each: on a shared 2-core machine OpenMP barriers only spin
export OMP_NUM_THREADS=1
T=$(mktemp -d "${TMPDIR:-/tmp}/cloq_export_formats.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
nfail=0
fail() { echo "FAIL: $*"; nfail=$((nfail + 1)); }
START=$(date +%s)
ok() { echo "ok ($(($(date +%s) - START))s): $*"; }
run() { # run CMD...; prints its output on failure
	"$@" >"$T/out" 2>&1 || { cat "$T/out"; return 1; }
}

$R selftest || fail "reader selftest"

CAL="--calib-tokens fixtures/reference/calib_tokens_128x256.npy --nsamples 4 --threads 1 --quiet --no-baselines --rank 8"
convert() { # convert MODEL OUT ARGS...
	m=$1 o=$2
	shift 2
	run $CLOQ convert "$m" -o "$o" $CAL "$@" || { fail "convert $o $*"; return 1; }
}
# export_pair OUT NAME: GPTQ + fp32 dequant exports, reader check + bitwise compare
export_pair() {
	o=$1 n=$2
	run $CLOQ export "$o" --to "$T/g_$n" || { fail "$n: export gptq"; return 1; }
	cp "$T/out" "$T/stdout_$n"
	run $CLOQ export "$o" --to "$T/d_$n" --format dequant --dtype fp32 || { fail "$n: export dequant"; return 1; }
	$R check "$T/g_$n" >"$T/check_$n" 2>&1 || { cat "$T/check_$n"; fail "$n: gptq export rejected by the reader"; return 1; }
	$R check "$T/d_$n" >"$T/out" 2>&1 || { cat "$T/out"; fail "$n: dequant export rejected by the reader"; return 1; }
	$R compare "$T/g_$n" "$T/d_$n" >"$T/out" 2>&1 || { cat "$T/out"; fail "$n: gptq vs dequant"; return 1; }
	ok "$n: $(grep checkpoint_format "$T/check_$n"); $(cat "$T/out")"
}
expect_line() { # expect_line NAME PATTERN: the reader's summary of NAME has a line matching
	grep -qE "$2" "$T/check_$1" || { cat "$T/check_$1"; fail "$1: summary lacks /$2/"; }
}

S=fixtures/stories260K
# INT2, zero 0 allowed: asymmetric groups hit zero point 0 -> gptq_v2
convert $S "$T/o2" --bits 2 --group-size 32 --gptq-zeros v2 &&
	export_pair "$T/o2" int2 && {
	expect_line int2 "^checkpoint_format gptq_v2$"
	grep -q "gptq_v2, zero points of 0 present" "$T/stdout_int2" || fail "int2: export did not say gptq_v2"
	grep -q "GPTQModel" "$T/stdout_int2" && grep -q "transformers >= 4.49" "$T/stdout_int2" &&
		grep -q "AutoGPTQ" "$T/stdout_int2" || fail "int2: export did not say which loaders read gptq_v2"
	expect_line int2 "^zero points: min 0 .*, [1-9][0-9]* groups with zero 0$"
	expect_line int2 "^quantized linears: 20 \(self_attn.q_proj self_attn.k_proj self_attn.v_proj self_attn.o_proj\)$"
	expect_line int2 "^dense linears: 15 \(mlp.gate_proj mlp.up_proj mlp.down_proj\)$"
}
# INT4 act-order (desc_act true, g_idx read as written), lora_alpha 16 = 2 r
convert $S "$T/o4" --bits 4 --group-size 32 --act-order --lora-alpha 16 &&
	export_pair "$T/o4" int4 && {
	expect_line int4 "^checkpoint_format gptq$"
	expect_line int4 "^bits 4 group_size 32 desc_act True sym False$"
	expect_line int4 "^adapter: r 8 lora_alpha 16 scaling 2, 35 modules$"
}
# INT4 symmetric, group 128 > 64 inputs (one group per row for q/k/v/o)
convert $S "$T/o4s" --bits 4 --group-size 128 --sym &&
	export_pair "$T/o4s" int4sym && {
	expect_line int4sym "^bits 4 group_size 128 desc_act False sym True$"
	expect_line int4sym "^zero points: min 8 max 8, 0 groups"
}
convert $S "$T/o3" --bits 3 --group-size 32 &&
	export_pair "$T/o3" int3 && expect_line int3 "^quantized linears: 20 "
# INT8: 172 * 8 is a multiple of 32, so the MLP packs too
convert $S "$T/o8" --bits 8 --group-size 32 &&
	export_pair "$T/o8" int8 && expect_line int8 "^quantized linears: 35 "
# a model whose every linear packs at 3 bits (untied lm_head too)
if run "$MKMODEL" --out "$T/syn" --hidden 64 --intermediate 128 --layers 2 --heads 4 --kv-heads 2 \
	--vocab 512 --dtype f32 --seed 3 --quiet; then
	convert "$T/syn" "$T/os3" --bits 3 --group-size 32 &&
		export_pair "$T/os3" syn3 && {
		expect_line syn3 "^quantized linears: 14 \(self_attn.q_proj self_attn.k_proj self_attn.v_proj self_attn.o_proj mlp.gate_proj mlp.up_proj mlp.down_proj\)$"
		expect_line syn3 "^dense linears: 0 "
	}
else
	fail "mkmodel"
fi

# bf16 base + bf16 adapter against the dequant export with the same adapter dtype
if [ -d "$T/o2" ]; then
	run $CLOQ export "$T/o2" --to "$T/g_bf" --dtype bf16 --adapter-dtype bf16 &&
		run $CLOQ export "$T/o2" --to "$T/d_bf" --format dequant --dtype fp32 --adapter-dtype bf16 &&
		$R compare "$T/g_bf" "$T/d_bf" >"$T/out" 2>&1 && ok "bf16: $(cat "$T/out")" ||
		{ cat "$T/out"; fail "bf16 export"; }
	# sharded: 100 kB per file -> 5 files; same tensors and configs as the single file
	run $CLOQ export "$T/o2" --to "$T/g_sh" --max-shard-size 100000 || fail "sharded export"
	n=$(ls "$T/g_sh" | grep -c '^model-0000[0-9]-of-0000[0-9]\.safetensors$')
	[ "$n" -ge 3 ] || fail "sharded export wrote $n shard files, want 3 or more"
	$R same "$T/g_int2" "$T/g_sh" >"$T/out" 2>&1 && ok "sharded ($n files): $(cat "$T/out")" ||
		{ cat "$T/out"; fail "sharded export differs"; }
	run $CLOQ export "$T/o2" --to "$T/d_sh" --format dequant --dtype fp32 --max-shard-size 100000 &&
		$R compare "$T/g_sh" "$T/d_sh" >"$T/out" 2>&1 && ok "sharded dequant: $(cat "$T/out")" ||
		{ cat "$T/out"; fail "sharded gptq vs sharded dequant"; }
fi

# ---- the reader's checks can fail: 31 hand-made mutants of valid exports, each rejected ----
if [ -d "$T/g_sh" ] && [ -d "$T/g_syn3" ]; then
	mkdir -p "$T/mut"
	$PY tests/tools/read_export_mutants.py "$T/g_int2" "$T/d_int2" "$T/g_sh" "$T/g_syn3" "$T/d_syn3" "$T/mut" \
		>"$T/out" 2>&1 && ok "$(tail -n 1 "$T/out")" || { cat "$T/out"; fail "reader mutants"; }
fi

# ---- perplexity: the reader's own forward over the exported files vs cloq ppl ----
W40="$T/w40.npy"
"$PY" -c "import numpy as np, sys; np.save(sys.argv[2], np.load(sys.argv[1])[:40])" \
	fixtures/reference/public_eval_windows.npy "$W40" || fail "windows"
ppl_of() { sed -n 's/^perplexity \([0-9.eE+-]*\).*/\1/p' "$1" | head -n 1; }
# ppl_cmp WHAT A B RELTOL
ppl_cmp() {
	if "$PY" -c "import sys; a, b, t = map(float, sys.argv[1:4]); sys.exit(0 if abs(a - b) <= t * abs(b) else 1)" "$2" "$3" "$4"; then
		ok "$1: reader $2, cloq ppl $3 (rel tol $4)"
	else
		fail "$1: reader perplexity $2 != cloq ppl $3 (rel tol $4)"
	fi
}
if [ -d "$T/g_int2" ]; then
	$CLOQ ppl "$T/o2" --tokens "$W40" >"$T/p_c" 2>&1 || { cat "$T/p_c"; fail "cloq ppl"; }
	$CLOQ ppl "$T/o2" --tokens "$W40" --no-lora >"$T/p_cn" 2>&1 || { cat "$T/p_cn"; fail "cloq ppl --no-lora"; }
	$R ppl "$T/g_int2" --tokens "$W40" >"$T/p_g" 2>&1 || { cat "$T/p_g"; fail "reader ppl gptq"; }
	$R ppl "$T/g_int2" --tokens "$W40" --no-lora >"$T/p_gn" 2>&1 || { cat "$T/p_gn"; fail "reader ppl gptq --no-lora"; }
	$R ppl "$T/d_int2" --tokens "$W40" >"$T/p_d" 2>&1 || { cat "$T/p_d"; fail "reader ppl dequant"; }
	# The GPTQ checkpoint holds the embedding, norms and the (unpackable) MLP in fp16, cloq ppl
	# their fp32 originals: that moves the figure by ~2e-4 relative, inside 4 significant digits.
	ppl_cmp "INT2 GPTQ + LoRA" "$(ppl_of "$T/p_g")" "$(ppl_of "$T/p_c")" 5e-4
	ppl_cmp "INT2 GPTQ, no LoRA" "$(ppl_of "$T/p_gn")" "$(ppl_of "$T/p_cn")" 5e-4
	# The fp32 dequant export holds exactly cloq's weights: float64 reference vs cloq's forward.
	ppl_cmp "INT2 fp32 dequant + LoRA" "$(ppl_of "$T/p_d")" "$(ppl_of "$T/p_c")" 2e-6
fi

# ---- GPTQ v1 for loaders that know only v1 ----
# The default --gptq-zeros v1 keeps every zero point in [1, 2^bits - 1]: the export is v1. With
# --dtype fp32 the file holds exactly cloq's weights, so a v1-only reader (zero = field + 1, as
# AutoGPTQ's kernels) must give cloq ppl's figure; the v2 file (o2) read the same way is wrong.
if convert $S "$T/o2v1" --bits 2 --group-size 32 && run $CLOQ export "$T/o2v1" --to "$T/g_v1" --dtype fp32; then
	cp "$T/out" "$T/stdout_v1"
	$R check "$T/g_v1" >"$T/check_v1" 2>&1 || { cat "$T/check_v1"; fail "v1: export rejected by the reader"; }
	expect_line v1 "^checkpoint_format gptq$"
	expect_line v1 "^zero points: min [1-9][0-9]* max [0-9]+, 0 groups with zero 0$"
	grep -q "(GPTQ v1" "$T/stdout_v1" && ! grep -q "gptq_v2" "$T/stdout_v1" || { cat "$T/stdout_v1"; fail "v1: export message"; }
	grep -q '"gptq_zeros":[[:space:]]*"v1"' "$T/o2v1/journal.json" || fail "v1: journal lacks gptq_zeros v1"
	$CLOQ ppl "$T/o2v1" --tokens "$W40" >"$T/p_v1c" 2>&1 || { cat "$T/p_v1c"; fail "cloq ppl v1 job"; }
	$R ppl "$T/g_v1" --tokens "$W40" --v1-only >"$T/p_v1r" 2>&1 || { cat "$T/p_v1r"; fail "reader ppl --v1-only"; }
	ppl_cmp "INT2 v1 file read by a v1-only loader" "$(ppl_of "$T/p_v1r")" "$(ppl_of "$T/p_v1c")" 1e-6
	if [ -d "$T/g_int2" ]; then
		$R ppl "$T/g_int2" --tokens "$W40" --v1-only >"$T/p_v2r" 2>&1 || { cat "$T/p_v2r"; fail "reader ppl v2 --v1-only"; }
		a=$(ppl_of "$T/p_v2r") b=$(ppl_of "$T/p_c")
		if "$PY" -c "import sys; a, b = map(float, sys.argv[1:3]); sys.exit(0 if a > 2 * b else 1)" "$a" "$b"; then
			ok "INT2 gptq_v2 file read by a v1-only loader: perplexity $a, cloq ppl $b (misread, as expected)"
		else
			fail "INT2 gptq_v2 file read by a v1-only loader: perplexity $a, want far above cloq ppl $b"
		fi
	fi
	# a v1 job that holds a zero of 0 (its journal edited to claim v1) is refused, naming the linear
	if [ -d "$T/o2" ]; then
		cp -r "$T/o2" "$T/o2lie"
		"$PY" -c "import json, sys; p = sys.argv[1]; j = json.load(open(p)); j['settings']['gptq_zeros'] = 'v1'; json.dump(j, open(p, 'w'), indent=1)" \
			"$T/o2lie/journal.json" || fail "edit journal"
		$CLOQ export "$T/o2lie" --to "$T/g_lie" >"$T/out" 2>&1
		rc=$?
		if [ $rc = 4 ] && grep -q "model\.layers\.[0-9]*\.self_attn\.[a-z]_proj: zero point 0 at row" "$T/out" && [ ! -e "$T/g_lie" ]; then
			ok "v1 job with a zero of 0 refused: $(cat "$T/out")"
		else
			cat "$T/out"
			fail "v1 job with a zero of 0: export exit $rc, want 4 naming the linear and no DIR"
		fi
	fi
fi

# ---- interrupted exports ----
# Every directory left behind must be one a loader refuses (no config.json) or a complete, valid
# export (the reader checks them all in one run at the end). A "previous" directory first holds a
# complete export of the same job in the other layout (sharded), which the interrupted INT2
# export replaces; a failed export must leave it byte for byte.
if [ -d "$T/o2" ] && [ -d "$T/o4" ]; then
	# how many I/O calls a clean export makes (CLOQ_FAULT_IO beyond that succeeds)
	n=1
	while [ $n -lt 4096 ] && ! CLOQ_FAULT_IO=$n $CLOQ export "$T/o2" --to "$T/probe" >/dev/null 2>&1; do
		rm -rf "$T/probe"
		n=$((n * 2))
	done
	rm -rf "$T/probe"
	lo=$((n / 2)) hi=$n
	while [ $((hi - lo)) -gt 1 ]; do
		mid=$(((lo + hi) / 2))
		if CLOQ_FAULT_IO=$mid $CLOQ export "$T/o2" --to "$T/probe" >/dev/null 2>&1; then hi=$mid; else lo=$mid; fi
		rm -rf "$T/probe"
	done
	ncalls=$lo
	[ -z "$(find "$T/g_int2" "$T/d_int2" "$T/g_sh" -name '*.tmp.*')" ] || fail "temporary files after a clean export"
	run $CLOQ export "$T/o2" --to "$T/prev" --max-shard-size 100000 || fail "export o2 sharded"
	mkdir -p "$T/left"
	# every one of the last 25 calls (adapter tail, small files, config.json), every 25th before
	tried=0
	N=1
	while [ $N -le "$ncalls" ]; do
		for fresh in 1 0; do
			d="$T/left/fault_${N}_$fresh"
			[ $fresh = 1 ] || cp -r "$T/prev" "$d"
			if CLOQ_FAULT_IO=$N $CLOQ export "$T/o2" --to "$d" >"$T/out" 2>&1; then
				fail "CLOQ_FAULT_IO=$N: export succeeded"
			fi
			[ ! -e "$d" ] || [ -z "$(find "$d" -name '*.tmp.*')" ] ||
				fail "CLOQ_FAULT_IO=$N: temporary files left: $(find "$d" -name '*.tmp.*')"
			[ -z "$(ls -d "$d".tmp.* "$d".old.* 2>/dev/null)" ] ||
				fail "CLOQ_FAULT_IO=$N: temporary directories left: $(ls -d "$d".tmp.* "$d".old.* 2>/dev/null)"
			# DIR as it was, or (a fault after the swap: the directory fsync) the whole new export
			# (whose adapter names DIR as its base: that line differs from g_int2's)
			if [ -e "$d" ] && ! diff -r -I '"base_model_name_or_path"' "$T/g_int2" "$d" >/dev/null; then
				if [ $fresh = 1 ]; then
					fail "CLOQ_FAULT_IO=$N: a failed export into a new directory left a partial $d"
				elif ! diff -r "$T/prev" "$d" >/dev/null; then
					fail "CLOQ_FAULT_IO=$N: a failed export changed the previous export in $d"
				fi
			fi
			tried=$((tried + 1))
		done
		if [ $N -ge $((ncalls - 25)) ]; then N=$((N + 1)); else N=$((N + 25)); fi
	done
	# kill -9 at a few delays; a sharded export of ~100 files (about 0.2 s) gives it time
	for delay in 0.005 0.02 0.05 0.1 0.15; do
		for fresh in 1 0; do
			d="$T/left/kill_${delay}_$fresh"
			[ $fresh = 1 ] || cp -r "$T/prev" "$d"
			$CLOQ export "$T/o2" --to "$d" --max-shard-size 1024 >/dev/null 2>&1 &
			pid=$!
			sleep $delay
			kill -9 $pid 2>/dev/null
			wait $pid 2>/dev/null
		done
	done
	# a killed export leaves at most its temp sibling DIR.tmp.PID (not a directory a loader is
	# pointed at); the reader checks the export directories themselves
	$R loadable $(ls -d "$T"/left/* | grep -v '\.tmp\.') >"$T/out" 2>&1 &&
		ok "interrupted: $tried exports failed by CLOQ_FAULT_IO (of $ncalls I/O calls), 10 killed: $(grep -A1 '/kill_' "$T/out" | grep -c 'base: complete') of the killed and $(grep -A1 '/fault_' "$T/out" | grep -c 'base: complete') of the failed left a complete export, the rest no config.json" ||
		{ grep -B1 -A1 "present but" "$T/out" | head -n 30; fail "an interrupted export left a config.json a loader would take, with bad files"; }
	# the next export into a directory removes the temp siblings that killed exports left there
	for delay in 0.005 0.02 0.05 0.1 0.15; do
		for fresh in 1 0; do
			run $CLOQ export "$T/o2" --to "$T/left/kill_${delay}_$fresh" || fail "export over kill_${delay}_$fresh"
		done
	done
	left=$(ls -d "$T"/left/*.tmp.* "$T"/left/*.old.* 2>/dev/null)
	[ -z "$left" ] && ok "temp siblings of killed exports removed by the next export" ||
		fail "temp siblings of killed exports left: $left"
	# a completed re-export of the same job over a previous one in the other layout reads back as
	# the new one, and leaves no temp sibling
	cp -r "$T/g_int2" "$T/re1" && run $CLOQ export "$T/o2" --to "$T/re1" --max-shard-size 100000 &&
		$R same "$T/re1" "$T/g_sh" >"$T/out" 2>&1 && ok "sharded over single: $(cat "$T/out")" ||
		{ cat "$T/out"; fail "re-export sharded over single"; }
	run $CLOQ export "$T/o2" --to "$T/re2" --max-shard-size 100000 && run $CLOQ export "$T/o2" --to "$T/re2" &&
		$R same "$T/re2" "$T/g_int2" >"$T/out" 2>&1 && ok "single over sharded: $(cat "$T/out")" ||
		{ cat "$T/out"; fail "re-export single over sharded"; }
	[ -z "$(ls -d "$T"/re1.* "$T"/re2.* 2>/dev/null)" ] || fail "temp siblings after re-exports: $(ls -d "$T"/re?.*)"
	# another job's export over this one is refused and changes nothing
	cp -r "$T/re2" "$T/re2.copy"
	if $CLOQ export "$T/o4" --to "$T/re2" >"$T/out" 2>&1; then
		fail "export of another job over an existing export succeeded"
	elif [ $? != 2 ] || ! grep -q "another job" "$T/out"; then
		cat "$T/out"; fail "export of another job: want exit 2 saying 'another job'"
	else
		diff -r "$T/re2" "$T/re2.copy" >/dev/null && ok "another job's export refused: $(cat "$T/out")" ||
			fail "a refused export changed $T/re2"
	fi
fi

[ $nfail -eq 0 ] || { echo "$nfail check(s) failed"; exit 1; }
echo "export formats ok"
