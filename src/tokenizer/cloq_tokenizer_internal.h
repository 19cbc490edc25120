/*
 * cloq_tokenizer_internal.h - pieces of the tokenizer module shared between its files; not part
 * of the public interface (cloq_tokenizer.h is).
 */
#ifndef CLOQ_TOKENIZER_INTERNAL_H
#define CLOQ_TOKENIZER_INTERNAL_H

#include <stddef.h>

/* Unicode Normalization Form C of the valid UTF-8 s[0, len): the result goes to *out (grown with
 * cloq_realloc; *cap is its capacity), its length to *outlen, and it is NUL-terminated. Returns
 * 0, or -1 when out of memory (then *out stays owned by the caller, contents unspecified).
 * Data: src/tokenizer/cloq_tok_nfc_tables.h (generated, Unicode version CLOQ_NFC_UNICODE_VERSION). */
int cloq_tok_nfc(const char *s, size_t len, char **out, size_t *cap, size_t *outlen);

#endif
