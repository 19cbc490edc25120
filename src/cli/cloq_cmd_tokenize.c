/*
 * cloq_cmd_tokenize.c - `cloq tokenize MODEL_DIR [--text FILE]`: print the token ids of a text
 * (stdin without --text) as the Hugging Face tokenizer would, separated by single spaces, with
 * a final newline.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cloq_cli.h"
#include "cloq_sys.h"
#include "cloq_tokenizer.h"

static const char help_text[] =
	"usage: cloq tokenize MODEL_DIR [--text FILE]\n"
	"\n"
	"Print the token ids of FILE (standard input without --text) as tokenizer.encode(text) of\n"
	"the Hugging Face tokenizer in MODEL_DIR would: BOS/EOS as its post-processor adds them,\n"
	"special tokens written in the text recognised. Ids are separated by single spaces and\n"
	"followed by a newline. MODEL_DIR needs tokenizer.json (and tokenizer_config.json when the\n"
	"model has one); no weights are read.\n"
	"\n"
	"exit status: 0 success, 1 usage, 2 bad input (missing or malformed tokenizer, text not\n"
	"UTF-8), 3 I/O failure\n";

/* Read all of standard input. */
static int read_stdin(char **data, size_t *size, cloq_err *err)
{
	size_t cap = 1 << 16, n = 0;
	char *buf = cloq_malloc(cap);
	if (!buf)
		return cloq_err_set(err, CLOQ_EIO, "out of memory reading standard input");
	for (;;) {
		if (n == cap) {
			char *nb = cap <= SIZE_MAX / 2 ? cloq_realloc(buf, cap * 2) : NULL;
			if (!nb) {
				cloq_free(buf);
				return cloq_err_set(err, CLOQ_EIO, "out of memory reading standard input");
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t r = read(STDIN_FILENO, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			cloq_free(buf);
			return cloq_err_set(err, CLOQ_EIO, "standard input: read failed: %s", strerror(errno));
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	*data = buf;
	*size = n;
	return CLOQ_OK;
}

int cloq_cmd_tokenize(int argc, char **argv, cloq_err *err)
{
	int rc = CLOQ_OK;
	const char *dir = NULL, *text_path = NULL;
	char *text = NULL;
	size_t len = 0, n = 0;
	int32_t *ids = NULL;
	cloq_tokenizer *tok = NULL;

	if (cloq_cli_wants_help(argc, argv)) {
		fputs(help_text, stdout);
		return CLOQ_OK;
	}
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--text")) {
			CLOQ_TRY(cloq_cli_value(argc, argv, &i, &text_path, err));
		} else if (!strncmp(argv[i], "--text=", 7)) {
			text_path = argv[i] + 7;
		} else if (argv[i][0] == '-' && argv[i][1] != '\0') {
			CLOQ_FAIL_IF(1, err, CLOQ_EUSAGE, "unknown option '%s'", argv[i]);
		} else {
			CLOQ_FAIL_IF(dir != NULL, err, CLOQ_EUSAGE, "unexpected argument '%s'", argv[i]);
			dir = argv[i];
		}
	}
	CLOQ_FAIL_IF(!dir, err, CLOQ_EUSAGE, "MODEL_DIR is required");

	CLOQ_TRY(cloq_tok_load(dir, &tok, err));
	if (text_path)
		CLOQ_TRY(cloq_read_file(text_path, &text, &len, err));
	else
		CLOQ_TRY(read_stdin(&text, &len, err));
	rc = cloq_tok_encode(tok, text, len, &ids, &n, err);
	if (rc) {
		cloq_err_wrap(err, rc, "%s", text_path ? text_path : "standard input");
		goto fail;
	}

	for (size_t i = 0; i < n; i++)
		if (printf(i ? " %d" : "%d", (int)ids[i]) < 0)
			break;
	putchar('\n');
	CLOQ_FAIL_IF(fflush(stdout) != 0 || ferror(stdout), err, CLOQ_EIO, "standard output: write failed: %s",
		     strerror(errno));
fail:
	cloq_free(ids);
	cloq_free(text);
	cloq_tok_free(tok);
	return rc;
}
