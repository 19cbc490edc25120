/* cloq_cmd_ppl.c - `cloq ppl`: perplexity of an HF model directory or a converted job. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cloq_calib.h"
#include "cloq_cli.h"
#include "cloq_eval.h"
#include "cloq_expmodel.h"
#include "cloq_model.h"
#include "cloq_npy.h"
#include "cloq_outmodel.h"
#include "cloq_sys.h"

static const char help[] =
	"usage: cloq ppl MODEL_DIR|OUT|EXPORT_DIR (--text FILE | --tokens FILE.npy) [--seqlen N]\n"
	"                [--no-lora] [--adapter DIR] [--logits-out FILE]\n"
	"\n"
	"Perplexity of a Hugging Face model directory, of a converted job OUT (deq(Q) + s B A; with\n"
	"--no-lora deq(Q) alone), or of an exported checkpoint (GPTQ, unpacked by cloq, or dense) with\n"
	"an optional PEFT LoRA adapter (--adapter DIR, e.g. EXPORT_DIR/adapter).\n"
	"  --tokens FILE.npy  int32/int64 ids. 2-D: each row is one window. 1-D: cut into windows.\n"
	"  --text FILE        tokenize the whole file with the model's tokenizer (one text, with BOS as\n"
	"                     tokenizer.encode adds it), cut non-overlapping windows of --seqlen tokens,\n"
	"                     drop the tail.\n"
	"  --seqlen N         window length for --text and 1-D --tokens (default: 2048, at most\n"
	"                     max_position_embeddings)\n"
	"  --logits-out FILE  also write the first window's logits, float32 little-endian (T, vocab)\n"
	"                     row-major, after any final soft-capping (to compare with another forward)\n"
	"Every window is scored as its own sequence: positions 0..T-2 predict 1..T-1, and the figure is\n"
	"exp(mean negative log-likelihood) over all predictions of all windows.\n"
	"A job OUT is checked before it is read, as 'cloq verify' checks it: every shard's file hash\n"
	"against the journal and manifest (not the checksums inside each shard: that is verify's work).\n"
	"exit status: 0 ok, 1 usage, 2 bad input (a model, tokens or text that is not right),\n"
	"  3 I/O failure, 4 integrity failure (a shard of OUT damaged, missing or from another job, OUT's\n"
	"  journal.json damaged), 5 a convert or resume is writing OUT, 6 the job OUT is unfinished\n";

int cloq_cmd_ppl(int argc, char **argv, cloq_err *err)
{
	int rc = CLOQ_OK;
	const char *dir = NULL, *text = NULL, *tokens = NULL, *adapter = NULL, *logits_out = NULL;
	float *logits = NULL;
	cloq_expmodel *em = NULL;
	int seqlen = 0, no_lora = 0;
	cloq_model *m = NULL;
	cloq_outmodel *om = NULL;
	cloq_windows w = {0};
	int32_t *ids = NULL;
	size_t nids = 0;
	if (cloq_cli_wants_help(argc, argv)) {
		fputs(help, stdout);
		return CLOQ_OK;
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--text")) {
			CLOQ_TRY(cloq_cli_value(argc, argv, &i, &text, err));
		} else if (!strcmp(a, "--tokens")) {
			CLOQ_TRY(cloq_cli_value(argc, argv, &i, &tokens, err));
		} else if (!strcmp(a, "--seqlen")) {
			const char *v;
			long long x;
			CLOQ_TRY(cloq_cli_value(argc, argv, &i, &v, err));
			CLOQ_TRY(cloq_cli_int(a, v, 2, 1 << 20, &x, err));
			seqlen = (int)x;
		} else if (!strcmp(a, "--adapter")) {
			CLOQ_TRY(cloq_cli_value(argc, argv, &i, &adapter, err));
		} else if (!strcmp(a, "--logits-out")) {
			CLOQ_TRY(cloq_cli_value(argc, argv, &i, &logits_out, err));
		} else if (!strcmp(a, "--no-lora")) {
			no_lora = 1;
		} else if (a[0] == '-' && a[1] != '\0') {
			CLOQ_FAIL_IF(1, err, CLOQ_EUSAGE, "unknown option '%s'", a);
		} else {
			CLOQ_FAIL_IF(dir != NULL, err, CLOQ_EUSAGE, "unexpected argument '%s'", a);
			dir = a;
		}
	}
	CLOQ_FAIL_IF(!dir || (!text == !tokens), err, CLOQ_EUSAGE,
		     "need MODEL_DIR|OUT and exactly one of --text FILE, --tokens FILE.npy");

	cloq_lm lm;
	char probe[4096];
	snprintf(probe, sizeof probe, "%s/journal.json", dir);
	int is_job = cloq_file_exists(probe);
	const char *tok_dir = dir;
	char tokbuf[4096];
	if (is_job) {
		CLOQ_TRY(cloq_outmodel_open(dir, !no_lora, "cloq ppl", &om, err));
		cloq_outmodel_lm(om, &lm);
		snprintf(tokbuf, sizeof tokbuf, "%s/model", dir);
		tok_dir = tokbuf;
	} else {
		/* an export (quantization_config present) or an adapter to apply: the export reader */
		char *cj = NULL;
		size_t cl;
		snprintf(probe, sizeof probe, "%s/config.json", dir);
		int quantized = cloq_read_file(probe, &cj, &cl, NULL) == CLOQ_OK && strstr(cj, "\"quantization_config\"");
		cloq_free(cj);
		if (quantized || adapter) {
			CLOQ_TRY(cloq_expmodel_open(dir, adapter, &em, err));
			cloq_expmodel_lm(em, &lm);
		} else {
			CLOQ_TRY(cloq_model_open(dir, &m, err));
			cloq_model_lm(m, &lm);
		}
	}
	const cloq_config *cfg = lm.cfg;
	int T = seqlen ? seqlen : (cfg->max_pos < 2048 ? cfg->max_pos : 2048);
	if (tokens) {
		/* 2-D: rows are windows; 1-D: cut into consecutive windows of T */
		cloq_npy_info info;
		CLOQ_TRY(cloq_npy_read_i32(tokens, &ids, &info, err));
		nids = (size_t)info.nelem;
		if (info.ndim == 2)
			T = (int)info.shape[1];
		CLOQ_TRY(cloq_calib_cut(ids, nids, T, tokens, &w, err));
	} else {
		CLOQ_TRY(cloq_calib_tokenize_file(tok_dir, text, &ids, &nids, err));
		CLOQ_TRY(cloq_calib_cut(ids, nids, T, text, &w, err));
	}
	CLOQ_TRY(cloq_windows_check(&w, cfg->vocab, cfg->max_pos, tokens ? tokens : text, err));
	CLOQ_TRY(cloq_config_check_seqlen(cfg, w.seqlen, tok_dir, err));
	cloq_eval_result res;
	CLOQ_TRY(cloq_eval_ppl(&lm, &w, &res, isatty(2), err));
	printf("perplexity %.6f  (%lld predictions in %d windows of %d tokens, mean NLL %.6f, %.1fs)\n", res.ppl,
	       res.count, w.n, w.seqlen, res.nll_sum / res.count, res.seconds);
	if (logits_out) {
		size_t n;
		CLOQ_FAIL_IF(!cloq_mul_ok((size_t)w.seqlen, (size_t)cfg->vocab, &n) || !(logits = cloq_malloc(n * sizeof(float))),
			     err, CLOQ_EIO, "out of memory for the logits of a %d-token window", w.seqlen);
		CLOQ_TRY(cloq_eval_logits(&lm, w.ids, w.seqlen, logits, err));
		CLOQ_TRY(cloq_write_file_atomic(logits_out, logits, n * sizeof(float), err));
	}
fail:
	cloq_free(logits);
	cloq_windows_free(&w);
	cloq_free(ids);
	cloq_model_close(m);
	cloq_outmodel_close(om);
	cloq_expmodel_close(em);
	return rc;
}
