#!/bin/sh
# tests/e2e/hostile_input.sh - cloq under hostile input: every command checks its options before
# any work (exit 1 naming the option: non-finite, absurd, wrapping or junk numbers, a missing
# value); a job whose journal records an impossible setting is refused (exit 2 naming
# journal.json and the field); malformed files are described precisely (header lengths past the
# end of the file, values too large for their field, non-UTF-8 text with its file and offset);
# `cloq export` refuses a directory that is not a previous export of the same job and replaces
# one that is atomically. Each case checks the exit status and a word of the message.
. tests/e2e/convert_common.inc

# expect WANT WORD LABEL CMD...: CMD exits WANT and its output holds WORD (fixed string)
expect() {
	want=$1 word=$2 label=$3
	shift 3
	if ! run_rc "$want" "$T/log" "$@"; then
		fail "$label"
	elif ! grep -qF -- "$word" "$T/log"; then
		fail "$label: exit $want but the message lacks '$word': $(head -n 1 "$T/log")"
	else
		ok "$label (exit $want: $(head -n 1 "$T/log" | cut -c1-110))"
	fi
}

# ---- options: exit 1 naming the option, before any work ----
CV="$CLOQ convert $MODEL -o $T/never $CALIB $QOPTS --quiet"
for v in 1e308 nan inf -inf -1 0 0x10 1e-300 "" 12abc; do
	expect 1 "--lora-alpha" "convert --lora-alpha '$v'" $CV --lora-alpha "$v"
done
expect 1 "scaling" "convert --lora-alpha 1e9 --rank 8 (scaling 1.25e8)" $CV --lora-alpha 1e9
for v in inf nan 1e30G -5G 0 5X 32GiBs "1 G"; do
	expect 1 "--mem-budget" "convert --mem-budget '$v'" $CV --mem-budget "$v"
done
expect 1 "too large" "convert --mem-budget 99999999T" $CV --mem-budget 99999999T
for v in 4611686018427387904 "2^62" 99999999999999999999999 -1 0x10 " 5" +5 1.5; do
	expect 1 "expected an integer in [0, 2147483647], got '$v'" "convert --seed '$v'" $CV --seed "$v"
done
expect 1 "--rank: expected an integer in [1, 65536], got '18446744073709551617'" "convert --rank 2^64+1" \
	$CV --rank 18446744073709551617
expect 1 "option --rank needs a value" "convert --rank (last)" $CV --rank
[ ! -e "$T/never" ] && ok "no refused convert created its OUT" || fail "a refused convert created $T/never"
expect 1 "option --seqlen needs a value" "inspect --seqlen (last)" $CLOQ inspect $MODEL --seqlen
expect 1 "--nsamples: expected an integer" "inspect --nsamples 1e3" $CLOQ inspect $MODEL --nsamples 1e3
expect 1 "option --seqlen needs a value" "ppl --seqlen (last)" $CLOQ ppl $MODEL --text fixtures/stories260K/tokenizer.json --seqlen
for v in 12x 1 -3 9999999999999 abc; do
	expect 1 "--seqlen: expected an integer in [2, 1048576], got '$v'" "ppl --seqlen '$v'" \
		$CLOQ ppl $MODEL --tokens fixtures/reference/public_eval_windows.npy --seqlen "$v"
done
expect 1 "option --tokens needs a value" "ppl --tokens (last)" $CLOQ ppl $MODEL --tokens
expect 1 "unknown option '--bogus'" "ppl --bogus" $CLOQ ppl $MODEL --bogus
expect 1 "option --text needs a value" "tokenize --text (last)" $CLOQ tokenize $MODEL --text
expect 1 "unknown option '--force-it'" "resume --force-it" $CLOQ resume "$T/none" --force-it
for v in -5 5x 1e30 inf 100 18446744073709551616; do
	expect 1 "--max-shard-size" "export --max-shard-size '$v'" $CLOQ export "$T/none" --to "$T/nd" --max-shard-size "$v"
done
expect 1 "option --to needs a value" "export --to (last)" $CLOQ export "$T/none" --to

# ---- a job whose journal records an impossible setting: exit 2 naming journal.json and the field ----
J="$T/job"
if run_rc 0 "$T/log" $CLOQ convert $MODEL -o "$J" $CALIB $QOPTS --quiet --no-baselines; then
	for v in 1e400 -1e400 -8 0 1e12 '"8"' null; do
		rm -rf "$T/badj" && cp -r "$J" "$T/badj" &&
			sed -i "s/\"lora_alpha\":[^,]*,/\"lora_alpha\": $v,/" "$T/badj/journal.json"
		grep -q "\"lora_alpha\": $v," "$T/badj/journal.json" || fail "could not edit lora_alpha in journal.json"
		expect 2 "journal.json: settings.lora_alpha" "resume, journal lora_alpha $v" $CLOQ resume "$T/badj" --quiet
		expect 2 "journal.json: settings.lora_alpha" "ppl, journal lora_alpha $v" \
			$CLOQ ppl "$T/badj" --tokens fixtures/reference/public_eval_windows.npy
	done
	rm -rf "$T/badj" && cp -r "$J" "$T/badj" && sed -i 's/"rank":[^,]*,/"rank": 1e300,/' "$T/badj/journal.json"
	expect 2 "journal.json: settings.rank: expected an integer in [1, 65536]" "resume, journal rank 1e300" \
		$CLOQ resume "$T/badj" --quiet
	expect 2 "journal.json: settings.rank" "export, journal rank 1e300" $CLOQ export "$T/badj" --to "$T/badj_x"
	[ ! -e "$T/badj_x" ] && ok "refused export created nothing" || fail "refused export created $T/badj_x"
else
	fail "convert the reference job"
fi

finish
