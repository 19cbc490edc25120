/* cloq_calib.c - calibration and evaluation windows (see cloq_calib.h). */
#include "cloq_calib.h"

#include <string.h>

#include "cloq_sys.h"

void cloq_windows_free(cloq_windows *w)
{
	if (!w)
		return;
	cloq_free(w->ids);
	memset(w, 0, sizeof *w);
}

static int windows_alloc(cloq_windows *w, int n, int seqlen, cloq_err *err)
{
	size_t cells;
	memset(w, 0, sizeof *w);
	if (n <= 0 || seqlen <= 0 || !cloq_mul_ok((size_t)n, (size_t)seqlen, &cells))
		return cloq_err_set(err, CLOQ_EUSAGE, "need a positive number of windows and window length (got %d x %d)",
				    n, seqlen);
	w->ids = cloq_malloc(cells * sizeof(int32_t));
	if (!w->ids)
		return cloq_err_set(err, CLOQ_EIO, "out of memory for %d x %d token windows", n, seqlen);
	w->n = n;
	w->seqlen = seqlen;
	return CLOQ_OK;
}

/* Uniform integer in [0, bound) without modulo bias. */
static uint64_t uniform(uint64_t *state, uint64_t bound)
{
	uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
	uint64_t r;
	do
		r = cloq_splitmix64(state);
	while (r >= limit);
	return r % bound;
}

int cloq_calib_draw(const int32_t *stream, size_t len, int n, int seqlen, uint64_t seed, const char *what,
		    cloq_windows *w, cloq_err *err)
{
	if (seqlen > 0 && len < (size_t)seqlen)
		return cloq_err_set(err, CLOQ_EINPUT,
				    "%s: only %zu tokens found, but one window needs %d (--seqlen): give more text or a shorter --seqlen",
				    what, len, seqlen);
	int rc = windows_alloc(w, n, seqlen, err);
	if (rc)
		return rc;
	uint64_t state = seed;
	uint64_t starts = len - (size_t)seqlen + 1;
	for (int i = 0; i < n; i++) {
		uint64_t s = uniform(&state, starts);
		memcpy(w->ids + (size_t)i * seqlen, stream + s, (size_t)seqlen * sizeof(int32_t));
	}
	return CLOQ_OK;
}

int cloq_calib_cut(const int32_t *stream, size_t len, int seqlen, const char *what, cloq_windows *w, cloq_err *err)
{
	if (seqlen <= 0)
		return cloq_err_set(err, CLOQ_EUSAGE, "window length must be positive (got %d)", seqlen);
	size_t n = len / (size_t)seqlen;
	if (n == 0)
		return cloq_err_set(err, CLOQ_EINPUT,
				    "%s: only %zu tokens found, but one window needs %d (--seqlen)", what, len, seqlen);
	if (n > (size_t)1 << 30)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: too many windows (%zu)", what, n);
	int rc = windows_alloc(w, (int)n, seqlen, err);
	if (rc)
		return rc;
	memcpy(w->ids, stream, n * (size_t)seqlen * sizeof(int32_t));
	return CLOQ_OK;
}

int cloq_windows_check(const cloq_windows *w, int vocab, int max_pos, const char *what, cloq_err *err)
{
	if (w->seqlen > max_pos)
		return cloq_err_set(err, CLOQ_EINPUT,
				    "%s: window length %d exceeds the model's max_position_embeddings %d", what,
				    w->seqlen, max_pos);
	for (size_t i = 0; i < (size_t)w->n * w->seqlen; i++) {
		if (w->ids[i] < 0 || w->ids[i] >= vocab)
			return cloq_err_set(err, CLOQ_EINPUT,
					    "%s: token id %d at window %zu, position %zu is outside the vocabulary [0, %d)",
					    what, w->ids[i], i / w->seqlen, i % w->seqlen, vocab);
	}
	return CLOQ_OK;
}
