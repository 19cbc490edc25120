/* bench_cache.c - activation cache: compression ratio and write/read MB/s, fp32 and bf16.
 *
 * Without a model at hand it synthesises residual-stream-like hidden states: per channel a
 * N(0, s_c^2) value with s_c log-uniform in [0.3, 3], per token a scale in [0.7, 1.3], and a few
 * "massive activation" channels whose values sit around +-50..500 with little variation (as seen
 * in LLaMA residual streams). `--real FILE` reads rows from a raw little-endian float32 file of
 * (rows, cols) instead (the lead's run on real activations).
 *
 * MB/s are counted in float32 input bytes (rows x cols x 4) for every mode, so that modes compare
 * directly; reads come from the page cache, so they measure decoding, not the disk.
 *
 * usage: bench_cache [--cols N] [--rows N (per chunk)] [--chunks N] [--dir D] [--real FILE] [--quick]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "cloq_actcache.h"
#include "cloq_error.h"

static uint64_t rng_state = 42;
static uint64_t rng_u64(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
static double rng_unit(void) { return ((rng_u64() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

static void synth(float *X, size_t rows, size_t cols)
{
	float *scale = malloc(cols * sizeof(float)), *outl = calloc(cols, sizeof(float));
	for (size_t c = 0; c < cols; c++)
		scale[c] = (float)(0.3 * pow(10.0, rng_unit()));
	for (int k = 0; k < 6 && (size_t)k < cols; k++) {
		size_t c = (size_t)(rng_u64() % cols);
		outl[c] = (float)((rng_unit() < 0.5 ? -1 : 1) * (50.0 + 450.0 * rng_unit()));
	}
	for (size_t r = 0; r < rows; r++) {
		float tok = (float)(0.7 + 0.6 * rng_unit());
		for (size_t c = 0; c < cols; c += 2) {
			double u = sqrt(-2.0 * log(rng_unit())), v = 6.283185307179586 * rng_unit();
			X[r * cols + c] = (float)(u * cos(v)) * scale[c] * tok;
			if (c + 1 < cols)
				X[r * cols + c + 1] = (float)(u * sin(v)) * scale[c + 1] * tok;
		}
		for (size_t c = 0; c < cols; c++)
			if (outl[c] != 0.0f)
				X[r * cols + c] = outl[c] * (float)(0.9 + 0.2 * rng_unit());
	}
	free(scale);
	free(outl);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

struct result {
	double ratio, bpv, wmbs, rmbs;
};

static int run(const char *path, const float *X, size_t rows, size_t cols, int chunks, int enc,
	       int level, int threads, struct result *res)
{
	cloq_err err;
	cloq_err_clear(&err);
	cloq_cache_writer *w = NULL;
	double t0 = now();
	int rc = cloq_cache_create(path, cols, enc, level, &w, &err);
	if (!rc)
		rc = cloq_cache_writer_set_threads(w, threads, &err);
	for (int k = 0; k < chunks && !rc; k++)
		rc = cloq_cache_append(w, X, (int)rows, &err); /* same window each time: cheap input */
	if (!rc)
		rc = cloq_cache_commit(w, &err);
	cloq_cache_writer_free(w);
	double t1 = now();
	if (rc) {
		fprintf(stderr, "bench_cache: %s\n", err.msg);
		return rc;
	}
	struct stat st;
	stat(path, &st);
	cloq_cache_reader *r = NULL;
	float *buf = malloc(rows * cols * sizeof(float));
	double t2 = now();
	rc = cloq_cache_open(path, &r, &err);
	int got = 1;
	while (!rc && got > 0)
		rc = cloq_cache_next(r, buf, (int)rows, &got, &err);
	cloq_cache_close(r);
	double t3 = now();
	free(buf);
	unlink(path);
	if (rc) {
		fprintf(stderr, "bench_cache: %s\n", err.msg);
		return rc;
	}
	double in = (double)rows * (double)cols * 4.0 * chunks;
	res->ratio = in / (double)st.st_size;
	res->bpv = (double)st.st_size / (in / 4.0);
	res->wmbs = in / 1e6 / (t1 - t0);
	res->rmbs = in / 1e6 / (t3 - t2);
	return 0;
}

/* zstd on the same bytes without byte planes, for comparison (one chunk, in memory). */
static double plain_ratio(const float *X, size_t n, int enc, int level)
{
	size_t nb = n * (enc == CLOQ_CACHE_BF16 ? 2 : 4);
	unsigned char *src = malloc(nb);
	if (enc == CLOQ_CACHE_BF16) {
		uint16_t *h = (uint16_t *)src;
		for (size_t i = 0; i < n; i++)
			h[i] = cloq_cache_f32_to_bf16(X[i]);
	} else {
		memcpy(src, X, nb);
	}
	size_t cap = ZSTD_compressBound(nb);
	void *dst = malloc(cap);
	size_t z = ZSTD_compress(dst, cap, src, nb, level);
	free(src);
	free(dst);
	return ZSTD_isError(z) ? 0.0 : (double)n * 4.0 / (double)z;
}

int main(int argc, char **argv)
{
	size_t cols = 4096, rows = 2048;
	int chunks = 4;
	const char *dir = "/tmp", *real = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--cols") && i + 1 < argc)
			cols = (size_t)atol(argv[++i]);
		else if (!strcmp(argv[i], "--rows") && i + 1 < argc)
			rows = (size_t)atol(argv[++i]);
		else if (!strcmp(argv[i], "--chunks") && i + 1 < argc)
			chunks = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
			dir = argv[++i];
		else if (!strcmp(argv[i], "--real") && i + 1 < argc)
			real = argv[++i];
		else if (!strcmp(argv[i], "--quick")) {
			rows = 512;
			chunks = 2;
		} else {
			fprintf(stderr, "usage: %s [--cols N] [--rows N] [--chunks N] [--dir D] "
					"[--real FILE.f32 (rows, cols) float32] [--quick]\n", argv[0]);
			return 1;
		}
	}
	if (cols == 0 || rows == 0 || chunks <= 0) {
		fprintf(stderr, "bench_cache: cols, rows and chunks must be positive\n");
		return 1;
	}
	float *X = malloc(rows * cols * sizeof(float));
	if (!X) {
		fprintf(stderr, "bench_cache: out of memory\n");
		return 3;
	}
	const char *source = "synthetic residual stream";
	if (real) {
		FILE *f = fopen(real, "rb");
		size_t got = f ? fread(X, sizeof(float), rows * cols, f) : 0;
		if (f)
			fclose(f);
		if (got != rows * cols) {
			fprintf(stderr, "bench_cache: %s: need %zu x %zu float32 values\n", real, rows, cols);
			return 2;
		}
		source = real;
	} else {
		synth(X, rows, cols);
	}
	char path[4096];
	snprintf(path, sizeof path, "%s/bench_cache.%ld.cache", dir, (long)getpid());
	printf("activation cache: %s, %d chunks of %zu rows x %zu cols (%.0f MB fp32)\n", source,
	       chunks, rows, cols, (double)rows * (double)cols * 4.0 * chunks / 1e6);
	printf("| encoding | level | threads | bytes/value | ratio vs fp32 | no-planes ratio | write MB/s | read MB/s |\n");
	printf("|----------|-------|---------|-------------|---------------|-----------------|------------|-----------|\n");
	static const struct { int enc, level, threads; } cfg[] = {
		{ CLOQ_CACHE_F32, 1, 0 }, { CLOQ_CACHE_F32, 3, 0 }, { CLOQ_CACHE_F32, 3, 2 },
		{ CLOQ_CACHE_BF16, 1, 0 }, { CLOQ_CACHE_BF16, 3, 0 }, { CLOQ_CACHE_BF16, 3, 2 },
	};
	for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
		struct result r;
		if (run(path, X, rows, cols, chunks, cfg[i].enc, cfg[i].level, cfg[i].threads, &r))
			return 3;
		printf("| %-8s | %5d | %7d | %11.3f | %13.2f | %15.2f | %10.0f | %9.0f |\n",
		       cfg[i].enc == CLOQ_CACHE_F32 ? "fp32" : "bf16", cfg[i].level, cfg[i].threads, r.bpv,
		       r.ratio, plain_ratio(X, rows * cols, cfg[i].enc, cfg[i].level), r.wmbs, r.rmbs);
		fflush(stdout);
	}
	free(X);
	return 0;
}
