/*
 * fuzz_tok_encode.c - libFuzzer target: arbitrary bytes through the stories260K and Mistral
 * tokenizers (run from the repository root). Invalid UTF-8 must be CLOQ_EINPUT, anything else
 * must encode, start with BOS, and give ids inside the vocabulary. The first byte picks the
 * tokenizer and the flags.
 */
#include <stdint.h>
#include <stdlib.h>

#include "cloq_sys.h"
#include "cloq_tokenizer.h"

static cloq_tokenizer *toks[2];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!toks[0]) {
		cloq_err err;
		if (cloq_tok_load("fixtures/stories260K", &toks[0], &err) ||
		    cloq_tok_load("fixtures/mistral-tokenizer", &toks[1], &err))
			abort();
	}
	if (size == 0)
		return 0;
	const cloq_tokenizer *t = toks[data[0] & 1];
	unsigned flags = (data[0] & 2) ? CLOQ_TOK_NO_SPECIAL : 0;
	if (data[0] & 4)
		flags |= CLOQ_TOK_ONE_PIECE;
	int32_t *ids = NULL;
	size_t n = 0;
	cloq_err err;
	int rc = cloq_tok_encode_ex(t, (const char *)data + 1, size - 1, flags, &ids, &n, &err);
	if (rc != CLOQ_OK && rc != CLOQ_EINPUT)
		abort();
	if (rc == CLOQ_OK) {
		if (!(flags & CLOQ_TOK_NO_SPECIAL) && (n == 0 || ids[0] != cloq_tok_bos_id(t)))
			abort();
		for (size_t i = 0; i < n; i++)
			if (ids[i] < 0 || (size_t)ids[i] >= cloq_tok_vocab_size(t))
				abort();
		if (size > 1 && n == ((flags & CLOQ_TOK_NO_SPECIAL) ? 0u : 1u))
			abort(); /* non-empty text always gives at least one id */
	}
	cloq_free(ids);
	return 0;
}
