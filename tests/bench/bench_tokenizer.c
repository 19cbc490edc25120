/*
 * bench_tokenizer.c - tokenizer throughput on WikiText-2 test (1.3 MB): load time, encode time
 * (best of 3), ids, MB/s, for each tokenizer found; the whole-word reference path for Mistral.
 * usage: build/bench/bench_tokenizer [TEXT]   (run from the repository root)
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cloq_sys.h"
#include "cloq_tokenizer.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void bench(const char *name, const char *dir, const char *text, size_t len, unsigned flags)
{
	cloq_err err;
	cloq_err_clear(&err);
	cloq_tokenizer *t = NULL;
	double t0 = now();
	if (cloq_tok_load(dir, &t, &err)) {
		printf("%-28s skipped: %s\n", name, err.msg);
		return;
	}
	double load = now() - t0, best = 1e30;
	size_t n = 0;
	for (int rep = 0; rep < 3; rep++) {
		int32_t *ids = NULL;
		t0 = now();
		if (cloq_tok_encode_ex(t, text, len, flags, &ids, &n, &err)) {
			printf("%-28s failed: %s\n", name, err.msg);
			break;
		}
		double dt = now() - t0;
		if (dt < best)
			best = dt;
		cloq_free(ids);
	}
	printf("%-28s load %7.3f s  encode %7.3f s  %8zu ids  %7.1f MB/s\n", name, load, best, n,
	       (double)len / best / 1e6);
	cloq_tok_free(t);
}

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "fixtures/text/wikitext2_test.raw";
	char *text = NULL;
	size_t len = 0;
	cloq_err err;
	cloq_err_clear(&err);
	if (cloq_read_file(path, &text, &len, &err)) {
		fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
		return 2;
	}
	printf("text: %s (%zu bytes)\n", path, len);
	const char *shared = getenv("CLOQ_SHARED_FIXTURES");
	char l3[512];
	snprintf(l3, sizeof l3, "%s/llama3-tokenizer", shared && *shared ? shared : "../shared/fixtures");
	bench("stories260K", "fixtures/stories260K", text, len, 0);
	bench("mistral", "fixtures/mistral-tokenizer", text, len, 0);
	bench("mistral (whole-word path)", "fixtures/mistral-tokenizer", text, len, CLOQ_TOK_ONE_PIECE);
	bench("llama3", l3, text, len, 0);
	cloq_free(text);
	return 0;
}
