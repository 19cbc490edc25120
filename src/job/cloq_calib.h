/*
 * cloq_calib.h - token windows: calibration sets and perplexity windows.
 *
 * A window set is (n, seqlen) int32 token ids, row-major, one window per row. Calibration
 * windows are drawn GPTQ-style: n random starts, uniform over [0, len - seqlen], from the
 * token stream of the calibration text, with cloq's own deterministic generator (splitmix64
 * seeded by --seed; not Python's Mersenne Twister, so the draws differ from GPTQ's scripts, and
 * the windows used are saved in the job's output for exactly that reason).
 */
#ifndef CLOQ_CALIB_H
#define CLOQ_CALIB_H

#include <stddef.h>
#include <stdint.h>

#include "cloq_error.h"

typedef struct cloq_windows {
	int n, seqlen;
	int32_t *ids; /* (n, seqlen) */
} cloq_windows;

void cloq_windows_free(cloq_windows *w);

/* Draw n random windows of seqlen from stream[0..len). `what` names the source in messages.
 * Fewer than seqlen tokens: CLOQ_EINPUT saying how many were found and needed. */
int cloq_calib_draw(const int32_t *stream, size_t len, int n, int seqlen, uint64_t seed, const char *what,
		    cloq_windows *w, cloq_err *err);

/* Cut stream into consecutive non-overlapping windows of seqlen, dropping the tail. */
int cloq_calib_cut(const int32_t *stream, size_t len, int seqlen, const char *what, cloq_windows *w, cloq_err *err);

/* Every id in [0, vocab) and seqlen <= max_pos; names the window and position of the first bad id. */
int cloq_windows_check(const cloq_windows *w, int vocab, int max_pos, const char *what, cloq_err *err);

/* Tokenize a text file with the tokenizer in tok_dir (one text, as tokenizer.encode does). */
int cloq_calib_tokenize_file(const char *tok_dir, const char *text_path, int32_t **ids, size_t *n, cloq_err *err);

/* Windows from a .npy of int32/int64 ids: 2-D = these exact windows (the first `n` rows when n > 0;
 * seqlen must match when > 0), 1-D = a stream to draw n windows of seqlen from (seed). */
int cloq_calib_from_npy(const char *path, int n, int seqlen, uint64_t seed, cloq_windows *w, cloq_err *err);

/* Write the windows as an int32 .npy, atomically. */
int cloq_windows_save(const cloq_windows *w, const char *path, cloq_err *err);

/* splitmix64: the generator behind every random draw in cloq (windows, sketches, inits). */
static inline uint64_t cloq_splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

#endif
