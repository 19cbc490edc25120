#!/bin/sh
# tests/e2e/inspect_configs.sh - `cloq inspect` on the config.json of each published checkpoint in
# fixtures/configs (Llama 2/3.1/3.2 up to 70B, Mistral v0.1/v0.3, Qwen2.5 up to 72B, Qwen3 up to
# 32B, Gemma 2 2B/9B, Gemma 3 1B, Phi-3-mini, Phi-4, Mixtral 8x7B/8x22B, Qwen3-30B-A3B/235B-A22B),
# alone in a directory as a user would point it at a download in progress: it prints the published
# parameter count exactly (fixtures/configs/published_counts.txt) and a conversion plan with peak
# memory and time (for a mixture of experts: its experts, and that conversion is not there yet).
cd "$(dirname "$0")/../.." || exit 1
. tests/e2e/convert_common.inc

while read -r f n; do
	case "$f" in '#'* | '') continue ;; esac
	d="$T/${f%.json}"
	mkdir -p "$d"
	cp "fixtures/configs/$f" "$d/config.json"
	if ! "$CLOQ" inspect "$d" >"$T/out" 2>&1; then
		cat "$T/out"
		fail "$f: cloq inspect failed"
		continue
	fi
	shown=$(sed -n 's/^architecture .*, \([0-9,]*\) parameters$/\1/p' "$T/out" | tr -d ,)
	[ "$shown" = "$n" ] && ok "$f: $n parameters" || fail "$f: inspect prints '$shown', published $n"
	if grep -q "^experts " "$T/out"; then # a mixture of experts: no conversion plan yet, said so
		grep -q "^conversion plan: none; a mixture of experts" "$T/out" || fail "$f: MoE without its note"
	else
		grep -q "^    peak memory " "$T/out" && grep -q "^    time " "$T/out" || fail "$f: no memory plan or time"
	fi
done <fixtures/configs/published_counts.txt
finish
