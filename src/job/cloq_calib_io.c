/* cloq_calib_io.c - windows from files: tokenized text and .npy ids (see cloq_calib.h). */
#include <stdio.h>
#include <string.h>

#include "cloq_calib.h"
#include "cloq_npy.h"
#include "cloq_sys.h"
#include "cloq_tokenizer.h"

int cloq_calib_tokenize_file(const char *tok_dir, const char *text_path, int32_t **ids, size_t *n, cloq_err *err)
{
	int rc = CLOQ_OK;
	char *text = NULL;
	size_t len = 0;
	cloq_tokenizer *tok = NULL;
	*ids = NULL;
	*n = 0;
	CLOQ_TRY(cloq_read_file(text_path, &text, &len, err));
	CLOQ_FAIL_IF(len == 0, err, CLOQ_EINPUT, "%s: the text file is empty", text_path);
	CLOQ_TRY(cloq_tok_load(tok_dir, &tok, err));
	rc = cloq_tok_encode(tok, text, len, ids, n, err);
	if (rc) /* "FILE: tokenizer: text is not valid UTF-8 at byte offset N" */
		cloq_err_wrap(err, rc, "%s", text_path);
fail:
	cloq_tok_free(tok);
	cloq_free(text);
	return rc;
}

int cloq_calib_from_npy(const char *path, int n, int seqlen, uint64_t seed, cloq_windows *w, cloq_err *err)
{
	int rc = CLOQ_OK;
	int32_t *data = NULL;
	cloq_npy_info info;
	memset(w, 0, sizeof *w);
	CLOQ_TRY(cloq_npy_read_i32(path, &data, &info, err));
	if (info.ndim == 1) {
		CLOQ_TRY(cloq_calib_draw(data, (size_t)info.shape[0], n > 0 ? n : 128, seqlen > 0 ? seqlen : 2048, seed,
					 path, w, err));
	} else {
		CLOQ_FAIL_IF(info.shape[0] < 1 || info.shape[1] < 2, err, CLOQ_EINPUT,
			     "%s: windows file has shape [%lld, %lld]; need at least one window of 2 tokens", path,
			     (long long)info.shape[0], (long long)info.shape[1]);
		CLOQ_FAIL_IF(seqlen > 0 && seqlen != info.shape[1], err, CLOQ_EINPUT,
			     "%s: windows have %lld tokens but --seqlen is %d", path, (long long)info.shape[1], seqlen);
		CLOQ_FAIL_IF(n > info.shape[0], err, CLOQ_EINPUT, "%s: holds %lld windows, %d requested (--nsamples)",
			     path, (long long)info.shape[0], n);
		CLOQ_FAIL_IF(info.shape[1] > (1 << 24) || info.shape[0] > (1 << 24), err, CLOQ_EINPUT,
			     "%s: windows file too large", path);
		w->n = n > 0 ? n : (int)info.shape[0];
		w->seqlen = (int)info.shape[1];
		w->ids = data;
		data = NULL;
	}
fail:
	cloq_free(data);
	return rc;
}

int cloq_windows_save(const cloq_windows *w, const char *path, cloq_err *err)
{
	int64_t shape[2] = {w->n, w->seqlen};
	return cloq_npy_write_i32(path, w->ids, 2, shape, err);
}
