/*
 * fuzz_tok_load.c - libFuzzer target: arbitrary bytes as tokenizer.json. Loading must succeed
 * or fail with CLOQ_EINPUT (never crash, never another status); a loaded tokenizer must encode
 * a fixed text or reject it with CLOQ_EINPUT.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cloq_sys.h"
#include "cloq_tokenizer.h"

static char dir[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!dir[0]) {
		snprintf(dir, sizeof dir, "/tmp/cloq_fuzz_tok.%d", (int)getpid());
		cloq_err err;
		if (cloq_mkdir_p(dir, &err))
			abort();
	}
	char path[128];
	snprintf(path, sizeof path, "%s/tokenizer.json", dir);
	FILE *f = fopen(path, "wb");
	if (!f)
		abort();
	fwrite(data, 1, size, f);
	fclose(f);
	cloq_tokenizer *t = NULL;
	cloq_err err;
	int rc = cloq_tok_load(dir, &t, &err);
	if (rc != CLOQ_OK && rc != CLOQ_EINPUT)
		abort();
	if (rc == CLOQ_OK) {
		static const char text[] = "Hello, world!  <s> caf\xc3\xa9 \xe4\xb8\xad 123\n";
		int32_t *ids = NULL;
		size_t n;
		rc = cloq_tok_encode(t, text, sizeof text - 1, &ids, &n, &err);
		if (rc != CLOQ_OK && rc != CLOQ_EINPUT)
			abort();
		cloq_free(ids);
		cloq_tok_free(t);
	}
	return 0;
}
