/*
 * cloq_tokenizer.h - a Hugging Face `tokenizer.json` BPE tokenizer that encodes exactly as
 * `tokenizer.encode(text)` does with the default special tokens.
 *
 * What is read
 *   DIR/tokenizer.json          required: model, normalizer, pre_tokenizer, post_processor,
 *                               added_tokens.
 *   DIR/tokenizer_config.json   optional: bos_token / eos_token (for the accessors below) and, for
 *                               tokenizer_class Llama*Tokenizer*, add_bos_token / add_eos_token
 *                               (transformers rebuilds the post-processor of LlamaTokenizerFast
 *                               from them: BOS? + text + EOS?, defaults true / false).
 *
 * Supported pipeline pieces (anything else fails to load with CLOQ_EINPUT naming the file and
 * the type, and listing the supported ones):
 *   model           BPE: merges as "a b" strings or ["a","b"] pairs, byte_fallback (<0xNN>),
 *                   unk_token + fuse_unk, ignore_merges. (Sentencepiece-style Llama-2 / Mistral
 *                   and byte-level Llama-3 / Qwen2-style files.) Not supported: dropout > 0,
 *                   continuing_subword_prefix, end_of_word_suffix; WordPiece, Unigram, WordLevel.
 *   normalizer      null, Sequence, Prepend, Replace (String or Regex pattern), Strip,
 *                   NFC (Unicode 14 tables, src/tokenizer/cloq_tok_nfc_gen.py).
 *   pre_tokenizer   null, Sequence, Split (String or Regex; Isolated, Removed, MergedWithPrevious,
 *                   MergedWithNext, Contiguous; invert), ByteLevel (add_prefix_space, use_regex),
 *                   Metaspace (replacement, prepend_scheme always/first/never or add_prefix_space,
 *                   split).
 *   post_processor  null, TemplateProcessing ("single"; one text, so "pair" is unused),
 *                   ByteLevel (adds no ids), Sequence of these,
 *                   BertProcessing / RobertaProcessing (cls + text + sep).
 *
 * Encoding, in the order of the HF library: added tokens (special or not) are found in the raw
 * text first, leftmost-longest, honouring lstrip / rstrip / single_word, and split it into
 * sections; each other section is normalized, pre-tokenized into words and each word is encoded
 * by BPE (merges applied lowest rank first, leftmost first on ties); the post-processor template
 * then adds BOS/EOS. Regexes run on PCRE2 (UTF + UCP, JIT when available).
 *
 * Differences from the HF library that are known: added tokens with normalized=true are matched
 * in the raw text, not the normalized text; `\s` in pre-tokenizer regexes follows PCRE2's Unicode
 * definition, which is White_Space (the Rust library's) plus U+180E (the JavaScript library's
 * differs from both: it has U+FEFF, and neither U+0085 nor U+180E).
 *
 * A loaded tokenizer is immutable: cloq_tok_encode may run on one handle from several threads.
 */
#ifndef CLOQ_TOKENIZER_H
#define CLOQ_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "cloq_error.h"

typedef struct cloq_tokenizer cloq_tokenizer;

/* Load DIR/tokenizer.json (+ DIR/tokenizer_config.json when present). On success *out owns the
 * tokenizer (release with cloq_tok_free). Errors: CLOQ_EINPUT for a missing or malformed file or
 * an unsupported type (the message names the file and the JSON field), CLOQ_EIO out of memory or
 * a read failure. */
int cloq_tok_load(const char *dir, cloq_tokenizer **out, cloq_err *err);

/* Encode `len` bytes of UTF-8 `text` (need not be NUL-terminated; NUL bytes are ordinary
 * characters). On success *ids is a new array of *n token ids, BOS/EOS included as the
 * post-processor adds them (never NULL, even for zero ids; the caller frees it with cloq_free).
 * On failure *ids is NULL and *n is 0.
 * Errors: CLOQ_EINPUT when the text is not valid UTF-8 (message gives the byte offset) or a
 * character has no token and the model has neither byte fallback nor unk_token; CLOQ_EIO out of
 * memory. */
int cloq_tok_encode(const cloq_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n,
		    cloq_err *err);

/* Flags for cloq_tok_encode_ex. */
enum {
	CLOQ_TOK_NO_SPECIAL = 1u << 0, /* skip the post-processor: no BOS / EOS added */
	/* Run BPE on each pre-tokenized word whole, the library's own way, instead of cutting long
	 * sentencepiece words before each "▁" (done only when the merges make it exact). The ids are
	 * the same; it is slower. For tests of that claim. */
	CLOQ_TOK_ONE_PIECE = 1u << 1,
};

/* cloq_tok_encode with flags (0 gives cloq_tok_encode). */
int cloq_tok_encode_ex(const cloq_tokenizer *t, const char *text, size_t len, unsigned flags,
		       int32_t **ids, size_t *n, cloq_err *err);

/* 1 + the largest id of the model vocabulary and the added tokens. */
size_t cloq_tok_vocab_size(const cloq_tokenizer *t);
/* Ids of tokenizer_config.json's bos_token / eos_token (or, without a config, of the first
 * special token the post-processor adds / "</s>" or "<|endoftext|>" when in the vocabulary);
 * -1 when the tokenizer has none. */
int32_t cloq_tok_bos_id(const cloq_tokenizer *t);
int32_t cloq_tok_eos_id(const cloq_tokenizer *t);

/* Release everything; cloq_tok_free(NULL) is a no-op. */
void cloq_tok_free(cloq_tokenizer *t);

#endif /* CLOQ_TOKENIZER_H */
