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
	rm -rf "$T/badj" && cp -r "$J" "$T/badj" && sed -i 's/"gptq_zeros":[^,]*,/"gptq_zeros": "v3",/' "$T/badj/journal.json"
	grep -q '"gptq_zeros": "v3",' "$T/badj/journal.json" || fail "could not edit gptq_zeros in journal.json"
	expect 2 "journal.json: settings.gptq_zeros: expected" "export, journal gptq_zeros v3" $CLOQ export "$T/badj" --to "$T/badj_x"
	[ ! -e "$T/badj_x" ] && ok "refused export created nothing" || fail "refused export created $T/badj_x"
else
	fail "convert the reference job"
fi

# ---- malformed files: exit 2, the file named, the numbers given ----
BM="$T/badmodel"
mkdir -p "$BM" && cp $MODEL/config.json $MODEL/tokenizer.json "$BM/" 2>/dev/null
# header length 1000 in a 20-byte file
printf '\350\003\000\000\000\000\000\000{}          ' >"$BM/model.safetensors"
expect 2 "header length 1000 (bytes 0-7) exceeds the file size 20" "inspect: safetensors header length past the file" \
	$CLOQ inspect "$BM"
grep -qF "$BM/model.safetensors" "$T/log" || fail "the header-length message does not name $BM/model.safetensors"
# header length 2^62
printf '\000\000\000\000\000\000\000\100{}          ' >"$BM/model.safetensors"
expect 2 "header length 4611686018427387904 (bytes 0-7) is too large" "inspect: safetensors header length 2^62" \
	$CLOQ inspect "$BM"
grep -q "negative" "$T/log" && fail "header length 2^62 reported as negative: $(cat "$T/log")"
# a shape too large for its field
H='{"a":{"dtype":"F32","shape":[1,4611686018427387904],"data_offsets":[0,4]}}'
printf '\112\000\000\000\000\000\000\000%s\000\000\000\000' "$H" >"$BM/model.safetensors"
[ ${#H} = 74 ] || fail "test header is ${#H} bytes, not 74"
expect 2 "shape[1] = 4611686018427387904 is too large" "inspect: safetensors shape 2^62" $CLOQ inspect "$BM"
# .npy whose header length runs past the file, and a dimension too large
printf '\223NUMPY\001\000\377\177{}' >"$T/hdr.npy"
expect 2 "exceeds the file size" "ppl --tokens: .npy header length past the file" $CLOQ ppl $MODEL --tokens "$T/hdr.npy"
grep -qF "$T/hdr.npy" "$T/log" || fail "the .npy message does not name $T/hdr.npy"
NH="{'descr': '<i4', 'fortran_order': False, 'shape': (99999999999999999999999, ), }"
printf '\223NUMPY\001\000\120\000%s' "$NH" >"$T/dim.npy"
[ ${#NH} = 80 ] || fail "test npy header is ${#NH} bytes, not 80"
expect 2 "shape[0] = 99999999999999999999999" "ppl --tokens: .npy dimension too large" $CLOQ ppl $MODEL --tokens "$T/dim.npy"
grep -q "too large" "$T/log" || fail ".npy dimension: no 'too large' in $(cat "$T/log")"
# text that is not UTF-8: the file and the byte offset, wherever text is tokenized
printf 'Once upon a time \377\376 there was' >"$T/bad.txt"
expect 2 "$T/bad.txt: tokenizer: text is not valid UTF-8 at byte offset 17" "tokenize --text non-UTF-8" \
	$CLOQ tokenize $MODEL --text "$T/bad.txt"
expect 2 "$T/bad.txt: tokenizer: text is not valid UTF-8 at byte offset 17" "ppl --text non-UTF-8" \
	$CLOQ ppl $MODEL --text "$T/bad.txt"
expect 2 "$T/bad.txt: tokenizer: text is not valid UTF-8 at byte offset 17" "convert --calib non-UTF-8" \
	$CLOQ convert $MODEL -o "$T/never2" --calib "$T/bad.txt" --quiet

# ---- export: only into an absent or empty directory, or over this job's previous export ----
if [ -d "$J" ]; then
	mkdir -p "$T/mine" && echo "keep me" >"$T/mine/notes.txt" && echo x >"$T/mine/data.bin"
	cp -r "$T/mine" "$T/mine.ref"
	expect 2 "is not empty and is not an export of this job" "export into a non-empty unrelated dir" \
		$CLOQ export "$J" --to "$T/mine"
	grep -q "notes.txt" "$T/log" || fail "the refusal does not name a file DIR holds: $(cat "$T/log")"
	diff -r "$T/mine" "$T/mine.ref" >/dev/null && ok "the unrelated dir is untouched" || fail "export changed $T/mine"
	[ -z "$(ls -d "$T"/mine.tmp.* 2>/dev/null)" ] || fail "refused export left $(ls -d "$T"/mine.tmp.*)"
	echo x >"$T/afile"
	expect 2 "is not a directory" "export --to a regular file" $CLOQ export "$J" --to "$T/afile"
	mkdir -p "$T/ex"
	expect 0 "exported" "export into an empty dir" $CLOQ export "$J" --to "$T/ex/"
	[ -f "$T/ex/cloq_export.json" ] && grep -q '"cloq-export"' "$T/ex/cloq_export.json" &&
		ok "the export is marked (cloq_export.json)" || fail "no cloq_export.json in $T/ex"
	ino1=$(stat -c %i "$T/ex/config.json")
	expect 0 "exported" "re-export of the same job (sharded) replaces it" \
		$CLOQ export "$J" --to "$T/ex" --max-shard-size 100000
	[ -f "$T/ex/model.safetensors.index.json" ] && [ ! -e "$T/ex/model.safetensors" ] &&
		[ "$(stat -c %i "$T/ex/config.json")" != "$ino1" ] &&
		ok "the re-export replaced the old one (sharded, no model.safetensors)" || fail "re-export did not replace $T/ex"
	[ -z "$(ls -d "$T"/ex.* 2>/dev/null)" ] && ok "no temp dir beside the export" ||
		fail "left beside the export: $(ls -d "$T"/ex.*)"
	# another job (4 bits) into this export: refused, untouched
	if run_rc 0 "$T/log" $CLOQ convert $MODEL -o "$T/job4" $CALIB --bits 4 --group-size 32 --rank 8 --quiet --no-baselines; then
		cp -r "$T/ex" "$T/ex.ref"
		expect 2 "holds the export of another job" "export of another job into an existing export" \
			$CLOQ export "$T/job4" --to "$T/ex"
		diff -r "$T/ex" "$T/ex.ref" >/dev/null && ok "the other job's export is untouched" || fail "refused export changed $T/ex"
		rm -rf "$T/ex.ref"
	else
		fail "convert a second job"
	fi
	# base_model_name_or_path of a GPTQ export: the export's own name (the base the adapter was
	# calibrated for), never the original model's, never a local path
	bm=$(sed -n 's/.*"base_model_name_or_path":[[:space:]]*"\([^"]*\)".*/\1/p' "$T/ex/adapter/adapter_config.json")
	[ "$bm" = "ex" ] && ok "base_model_name_or_path '$bm' (the export's folder name)" ||
		fail "base_model_name_or_path is '$bm', want 'ex'"
	cp -r "$J" "$T/jobn"
	sed -i 's|^{|{"_name_or_path": "meta-llama/Llama-2-7b-hf",|' "$T/jobn/model/config.json"
	run_rc 0 "$T/log" $CLOQ export "$T/jobn" --to "$T/exn" || fail "export with _name_or_path"
	grep -q '"base_model_name_or_path":[[:space:]]*"exn"' "$T/exn/adapter/adapter_config.json" &&
		ok "a GPTQ export's adapter does not name the unquantized original (_name_or_path) as its base" ||
		fail "base_model_name_or_path: $(grep base_model "$T/exn/adapter/adapter_config.json")"
fi

finish
