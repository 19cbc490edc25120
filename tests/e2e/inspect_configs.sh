#!/bin/sh
# tests/e2e/inspect_configs.sh - `cloq inspect` on the config.json of each published checkpoint in
# fixtures/configs (Llama 2/3.1/3.2 up to 70B, Mistral v0.1/v0.3, Qwen2.5 up to 72B, Qwen3 up to
# 32B, Gemma 2 2B/9B, Gemma 3 1B, Phi-3-mini, Phi-4, Mixtral 8x7B/8x22B, Qwen3-30B-A3B/235B-A22B),
# alone in a directory as a user would point it at a download in progress: it prints the published
# parameter count exactly (fixtures/configs/published_counts.txt) and a conversion plan with peak
# memory, time and whether 16 and 32 GiB are enough. The mixtures of experts (converted expert by
# expert, at most one expert's weights at a time) must fit 32 GiB with the default calibration (128 x
# 2048 tokens); Qwen3-30B-A3B and Qwen3-235B-A22B also 16 GiB.
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
	grep -q "^    peak memory " "$T/out" && grep -q "^    time " "$T/out" && grep -q "^    fits  " "$T/out" ||
		fail "$f: no memory plan, time or fit"
	if grep -q "^experts " "$T/out"; then
		grep -q "^    fits .*32 GiB: yes" "$T/out" || fail "$f: the expert-by-expert plan does not fit 32 GiB: $(grep '^    peak' "$T/out")"
		case "$f" in qwen3-*)
			grep -q "^    fits .*16 GiB: yes" "$T/out" || fail "$f: does not fit 16 GiB: $(grep '^    peak' "$T/out")" ;;
		esac
	fi
done <fixtures/configs/published_counts.txt
finish
