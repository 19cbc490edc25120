#!/bin/sh
# tests/e2e/tokenize.sh - the `cloq tokenize` command line: ids, stdin, exit statuses, messages.
set -u
BUILD=${BUILD:-build}
CLOQ=$BUILD/cloq
tmp=$(mktemp -d /tmp/cloq_e2e_tok.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fails=0
check() { # check NAME EXPECTED GOT
    if [ "$2" != "$3" ]; then echo "FAIL $1: expected [$2] got [$3]"; fails=$((fails+1)); else echo "ok   $1"; fi
}

# golden line of fixtures/stories260K/tokenizer_golden_special.jsonl, from a file and from stdin
printf 'Hello</s>world' > "$tmp/t.txt"
check "ids from --text" "1 346 306 414 2 263 304 341" "$("$CLOQ" tokenize fixtures/stories260K --text "$tmp/t.txt")"
check "ids from stdin" "1 5713 3714 264 727" "$(printf 'Once upon a time' | "$CLOQ" tokenize fixtures/mistral-tokenizer)"
# output format: single spaces, one final newline
printf 'a' | "$CLOQ" tokenize fixtures/stories260K > "$tmp/out"
check "format" "$(printf '1 261\n' | od -c)" "$(od -c < "$tmp/out")"
# empty text: only BOS
check "empty" "1" "$("$CLOQ" tokenize fixtures/stories260K < /dev/null)"
# a model directory needs only the tokenizer files
mkdir "$tmp/m" && cp fixtures/stories260K/tokenizer.json "$tmp/m/"
check "tokenizer.json alone" "1 346 306 414 2 263 304 341" "$("$CLOQ" tokenize "$tmp/m" --text "$tmp/t.txt")"

"$CLOQ" tokenize --help > "$tmp/help"; check "help status" 0 $?
grep -q "usage: cloq tokenize MODEL_DIR" "$tmp/help"; check "help text" 0 $?
"$CLOQ" tokenize 2>/dev/null; check "no MODEL_DIR" 1 $?
"$CLOQ" tokenize fixtures/stories260K --bogus 2>/dev/null; check "unknown option" 1 $?
"$CLOQ" tokenize "$tmp/nope" --text "$tmp/t.txt" 2> "$tmp/err"; check "missing tokenizer.json" 2 $?
grep -q "$tmp/nope/tokenizer.json" "$tmp/err"; check "message names the path" 0 $?
"$CLOQ" tokenize fixtures/stories260K --text "$tmp/none.txt" 2> "$tmp/err"; check "missing text" 2 $?
grep -q "$tmp/none.txt" "$tmp/err"; check "message names the text file" 0 $?
printf 'ab\377' > "$tmp/bad.txt"
"$CLOQ" tokenize fixtures/stories260K --text "$tmp/bad.txt" 2> "$tmp/err"; check "invalid UTF-8" 2 $?
grep -q "bad.txt.*offset 2" "$tmp/err"; check "message names file and offset" 0 $?
echo '{"model":{"type":"WordPiece"}}' > "$tmp/m/tokenizer.json"
"$CLOQ" tokenize "$tmp/m" --text "$tmp/t.txt" 2> "$tmp/err"; check "unsupported model" 2 $?
grep -q "tokenizer.json: model type 'WordPiece' is not supported" "$tmp/err"; check "message names type" 0 $?
[ $fails -eq 0 ]
