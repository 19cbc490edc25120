/*
 * test_tokenizer.c - the HF tokenizer.json encoder against independent expectations:
 *  - golden {"text","ids"} lines made by the reference JavaScript implementation of HF tokenizers
 *    (stories260K, Mistral, and Llama-3 from ../shared/fixtures or $CLOQ_SHARED_FIXTURES when
 *    present: that file is test-only and never copied into the repository);
 *  - the reference token ids of fixtures/reference (story 1, the public evaluation windows, the
 *    calibration windows), made by an independent implementation;
 *  - lossless round trips of whole files (decoded with the vocabulary read here, not through the
 *    tokenizer), the piecewise fast path against the whole-word reference path;
 *  - hand-made tokenizers whose ids are worked out by hand in the comments;
 *  - must-fail inputs, each with its status and the file named; every allocation failed in turn.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <zstd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cloq_error.h"
#include "cloq_sys.h"
#include "cloq_tokenizer.h"

static char tmpdir[256];

static int setup(void **state)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/cloq_test_tok.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[512];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- helpers --------------------------------------------------------------------------------- */

static char *slurp(const char *path, size_t *n)
{
	char *data = NULL;
	cloq_err err;
	cloq_err_clear(&err);
	int rc = cloq_read_file(path, &data, n, &err);
	if (rc)
		fail_msg("%s", err.msg);
	return data;
}

static cloq_tokenizer *load(const char *dir)
{
	cloq_tokenizer *t = NULL;
	cloq_err err;
	cloq_err_clear(&err);
	int rc = cloq_tok_load(dir, &t, &err);
	if (rc)
		fail_msg("loading %s: %s", dir, err.msg);
	return t;
}

static int32_t *enc(const cloq_tokenizer *t, const char *s, size_t len, unsigned flags, size_t *n)
{
	int32_t *ids = NULL;
	cloq_err err;
	cloq_err_clear(&err);
	int rc = cloq_tok_encode_ex(t, s, len, flags, &ids, n, &err);
	if (rc)
		fail_msg("encode: %s", err.msg);
	return ids;
}

static void print_ids(const char *what, const int32_t *v, size_t n)
{
	fprintf(stderr, "  %s (%zu):", what, n);
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, " %d", v[i]);
	fprintf(stderr, "\n");
}

static void expect_ids(const cloq_tokenizer *t, const char *text, const int32_t *want, size_t nwant)
{
	size_t n;
	int32_t *got = enc(t, text, strlen(text), 0, &n);
	if (n != nwant || memcmp(got, want, n * sizeof *got)) {
		fprintf(stderr, "mismatch for text \"%s\"\n", text);
		print_ids("expected", want, nwant);
		print_ids("got", got, n);
		cloq_free(got);
		fail();
	}
	cloq_free(got);
}

#define EXPECT(t, text, ...)                                                             \
	do {                                                                             \
		const int32_t want_[] = {__VA_ARGS__};                                   \
		expect_ids(t, text, want_, sizeof want_ / sizeof want_[0]);              \
	} while (0)

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	cloq_err err;
	cloq_err_clear(&err);
	assert_int_equal(cloq_write_file_atomic(path, text, strlen(text), &err), CLOQ_OK);
}

static void make_dir(char *out, size_t cap, const char *name)
{
	snprintf(out, cap, "%s/%s", tmpdir, name);
	cloq_err err;
	cloq_err_clear(&err);
	assert_int_equal(cloq_mkdir_p(out, &err), CLOQ_OK);
}

/* Directory of the team's shared fixtures, or NULL when this checkout has none. */
static const char *shared_dir(char *buf, size_t cap, const char *sub)
{
	const char *env = getenv("CLOQ_SHARED_FIXTURES");
	snprintf(buf, cap, "%s/%s", env && *env ? env : "../shared/fixtures", sub);
	char probe[600];
	snprintf(probe, sizeof probe, "%s/tokenizer.json", buf);
	return cloq_file_exists(probe) ? buf : NULL;
}

/* ---- goldens --------------------------------------------------------------------------------- */

/* Every line of DIR/FILE must encode to its ids exactly; the first mismatch is printed. */
static void run_golden(const char *dir, const char *file, const char *tok_dir)
{
	char path[600];
	snprintf(path, sizeof path, "%s/%s", dir, file);
	size_t size;
	char *data = slurp(path, &size);
	cloq_tokenizer *t = load(tok_dir ? tok_dir : dir);
	int lines = 0;
	for (char *line = data, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		if (!*line)
			continue;
		cJSON *o = cJSON_Parse(line);
		assert_non_null(o);
		const cJSON *text = cJSON_GetObjectItemCaseSensitive(o, "text");
		const cJSON *ids = cJSON_GetObjectItemCaseSensitive(o, "ids");
		assert_true(cJSON_IsString(text) && cJSON_IsArray(ids));
		size_t nwant = (size_t)cJSON_GetArraySize(ids), i = 0;
		int32_t *want = calloc(nwant + 1, sizeof *want);
		const cJSON *it;
		cJSON_ArrayForEach(it, ids) want[i++] = (int32_t)it->valuedouble;
		size_t n;
		int32_t *got = enc(t, text->valuestring, strlen(text->valuestring), 0, &n);
		if (n != nwant || memcmp(got, want, n * sizeof *got)) {
			fprintf(stderr, "%s line %d: mismatch for text \"%s\"\n", path, lines + 1, text->valuestring);
			print_ids("expected", want, nwant);
			print_ids("got", got, n);
			fail();
		}
		cloq_free(got);
		free(want);
		cJSON_Delete(o);
		lines++;
	}
	assert_true(lines >= 4);
	cloq_tok_free(t);
	cloq_free(data);
}

static void test_golden_stories260k(void **state)
{
	run_golden("fixtures/stories260K", "tokenizer_golden.jsonl", NULL);
	run_golden("fixtures/stories260K", "tokenizer_golden_special.jsonl", NULL);
}

static void test_golden_mistral(void **state)
{
	run_golden("fixtures/mistral-tokenizer", "tokenizer_golden.jsonl", NULL);
	run_golden("fixtures/mistral-tokenizer", "tokenizer_golden_special.jsonl", NULL);
}

static void test_golden_llama3(void **state)
{
	char dir[512];
	if (!shared_dir(dir, sizeof dir, "llama3-tokenizer")) {
		fprintf(stderr, "llama3-tokenizer not found (../shared/fixtures or $CLOQ_SHARED_FIXTURES): skipped\n");
		skip();
	}
	run_golden(dir, "tokenizer_golden.jsonl", NULL);
	run_golden(dir, "tokenizer_golden_special.jsonl", NULL);
}

/* A fixture directory keeping tokenizer.json and tokenizer_config.json zstd-compressed (large
 * vocabularies; the config only where the fixture has one): both decompressed with libzstd into
 * the test's scratch dir NAME, then its goldens (the Hugging Face JavaScript tokenizers' ids) run. */
static void golden_zst(const char *fixdir, const char *name)
{
	static const char *const files[2] = {"tokenizer.json", "tokenizer_config.json"};
	char dir[512], path[600];
	make_dir(dir, sizeof dir, name);
	for (int f = 0; f < 2; f++) {
		size_t csize;
		snprintf(path, sizeof path, "%s/%s.zst", fixdir, files[f]);
		if (f == 1 && access(path, F_OK) != 0)
			continue;
		char *comp = slurp(path, &csize);
		unsigned long long n = ZSTD_getFrameContentSize(comp, csize);
		assert_true(n != ZSTD_CONTENTSIZE_ERROR && n != ZSTD_CONTENTSIZE_UNKNOWN && n < (1ull << 30));
		char *text = malloc((size_t)n + 1);
		assert_non_null(text);
		size_t got = ZSTD_decompress(text, (size_t)n, comp, csize);
		assert_false(ZSTD_isError(got));
		assert_true(got == n);
		text[n] = '\0';
		write_file(dir, files[f], text);
		free(text);
		cloq_free(comp);
	}
	run_golden(fixdir, "tokenizer_golden.jsonl", dir);
	run_golden(fixdir, "tokenizer_golden_special.jsonl", dir);
}

/* Qwen3: byte-level BPE, 151,643 pieces + chat, think and tool-call specials. */
static void test_golden_qwen3(void **state)
{
	golden_zst("fixtures/qwen3-tokenizer", "qwen3");
}

/* Gemma 3 (262,144 pieces) and Gemma 2 (256,000): SentencePiece-style BPE with byte fallback,
 * <bos> added, turn markers. */
static void test_golden_gemma(void **state)
{
	golden_zst("fixtures/gemma3-tokenizer", "gemma3");
	golden_zst("fixtures/gemma2-tokenizer", "gemma2");
}

/* Phi-3 (Phi-3-mini, Phi-3.5-mini): Llama 2's 32,000 pieces + 11 added tokens (chat markers
 * that strip the whitespace to their right), no BOS from tokenizer.json alone. */
static void test_golden_phi3(void **state)
{
	golden_zst("fixtures/phi3-tokenizer", "phi3");
}

/* The newer merges format (["a", "b"] pairs) must give the same ids: rewrite Mistral's merges
 * into pairs and run its goldens again. */
static void test_golden_mistral_pair_merges(void **state)
{
	size_t size;
	char *data = slurp("fixtures/mistral-tokenizer/tokenizer.json", &size);
	cJSON *root = cJSON_Parse(data);
	assert_non_null(root);
	cJSON *merges = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "model"), "merges");
	cJSON *pairs = cJSON_CreateArray();
	const cJSON *it;
	int count = 0;
	cJSON_ArrayForEach(it, merges)
	{
		const char *sp = strchr(it->valuestring, ' ');
		assert_non_null(sp);
		char left[256];
		snprintf(left, sizeof left, "%.*s", (int)(sp - it->valuestring), it->valuestring);
		cJSON *pair = cJSON_CreateArray();
		cJSON_AddItemToArray(pair, cJSON_CreateString(left));
		cJSON_AddItemToArray(pair, cJSON_CreateString(sp + 1));
		cJSON_AddItemToArray(pairs, pair);
		count++;
	}
	assert_true(count > 50000);
	cJSON_ReplaceItemInObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "model"), "merges", pairs);
	char *out = cJSON_PrintUnformatted(root);
	char dir[512];
	make_dir(dir, sizeof dir, "mistral_pairs");
	write_file(dir, "tokenizer.json", out);
	free(out);
	cJSON_Delete(root);
	cloq_free(data);
	/* no tokenizer_config.json here: the template of tokenizer.json adds BOS by itself */
	run_golden("fixtures/mistral-tokenizer", "tokenizer_golden.jsonl", dir);
	run_golden("fixtures/mistral-tokenizer", "tokenizer_golden_special.jsonl", dir);
}

/* ---- whole files ----------------------------------------------------------------------------- */

/* Decode with the vocabulary read straight from tokenizer.json (independent of the encoder):
 * sentencepiece pieces with "▁" -> " " and <0xNN> -> the byte; byte-level pieces through the
 * inverse GPT-2 byte map. */
struct vocab_inv {
	char **s;
	size_t n;
};

static struct vocab_inv read_vocab(const char *dir)
{
	char path[600];
	snprintf(path, sizeof path, "%s/tokenizer.json", dir);
	size_t size;
	char *data = slurp(path, &size);
	cJSON *root = cJSON_Parse(data);
	assert_non_null(root);
	const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "model"), "vocab");
	struct vocab_inv v = {calloc(300000, sizeof(char *)), 300000};
	const cJSON *it;
	cJSON_ArrayForEach(it, vocab)
	{
		assert_true(it->valuedouble < 300000);
		v.s[(int)it->valuedouble] = strdup(it->string);
	}
	cJSON_Delete(root);
	cloq_free(data);
	return v;
}

static void free_vocab(struct vocab_inv *v)
{
	for (size_t i = 0; i < v->n; i++)
		free(v->s[i]);
	free(v->s);
}

static size_t decode_sp(const struct vocab_inv *v, const int32_t *ids, size_t n, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		const char *p = v->s[ids[i]];
		assert_non_null(p);
		unsigned b;
		if (strlen(p) == 6 && sscanf(p, "<0x%02X>", &b) == 1) {
			out[o++] = (char)b;
			continue;
		}
		for (; *p; p++) {
			if (!strncmp(p, "\xe2\x96\x81", 3)) {
				out[o++] = ' ';
				p += 2;
			} else {
				out[o++] = *p;
			}
		}
	}
	return o;
}

static size_t decode_bytelevel(const struct vocab_inv *v, const int32_t *ids, size_t n, char *out)
{
	int inv[512];
	memset(inv, -1, sizeof inv);
	int next = 256;
	for (int b = 0; b < 256; b++) {
		int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
		inv[keep ? b : next++] = b;
	}
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		const unsigned char *p = (const unsigned char *)v->s[ids[i]];
		assert_non_null(p);
		while (*p) {
			unsigned cp;
			if (*p < 0x80) {
				cp = *p++;
			} else {
				assert_true((*p & 0xE0) == 0xC0); /* the map only uses U+0021..U+0143 */
				cp = ((p[0] & 0x1Fu) << 6) | (p[1] & 0x3Fu);
				p += 2;
			}
			assert_true(cp < 512 && inv[cp] >= 0);
			out[o++] = (char)inv[cp];
		}
	}
	return o;
}

/* WikiText-2 test with Mistral: the piecewise fast path equals the whole-word reference path,
 * and the ids decode back to " " + the text (Prepend "▁", every " " -> "▁"). */
static void test_wikitext_mistral_round_trip(void **state)
{
	size_t len, n1, n2;
	char *text = slurp("fixtures/text/wikitext2_test.raw", &len);
	cloq_tokenizer *t = load("fixtures/mistral-tokenizer");
	int32_t *fast = enc(t, text, len, 0, &n1);
	int32_t *ref = enc(t, text, len, CLOQ_TOK_ONE_PIECE, &n2);
	assert_int_equal(n1, n2);
	assert_memory_equal(fast, ref, n1 * sizeof *fast);
	assert_int_equal(fast[0], cloq_tok_bos_id(t));
	assert_true(n1 > len / 6 && n1 < len / 2);
	struct vocab_inv v = read_vocab("fixtures/mistral-tokenizer");
	char *dec = malloc(len * 4 + 16);
	size_t dn = decode_sp(&v, fast + 1, n1 - 1, dec);
	assert_int_equal(dn, len + 1);
	assert_int_equal(dec[0], ' ');
	assert_memory_equal(dec + 1, text, len);
	free(dec);
	free_vocab(&v);
	cloq_free(fast);
	cloq_free(ref);
	cloq_tok_free(t);
	cloq_free(text);
}

static void test_wikitext_llama3_round_trip(void **state)
{
	char dir[512];
	if (!shared_dir(dir, sizeof dir, "llama3-tokenizer"))
		skip();
	size_t len, n;
	char *text = slurp("fixtures/text/wikitext2_test.raw", &len);
	cloq_tokenizer *t = load(dir);
	int32_t *ids = enc(t, text, len, 0, &n);
	assert_true(n > len / 6 && n < len / 2);
	struct vocab_inv v = read_vocab(dir);
	char *dec = malloc(len * 2 + 16);
	size_t dn = decode_bytelevel(&v, ids, n, dec);
	assert_int_equal(dn, len);
	assert_memory_equal(dec, text, len);
	assert_int_equal(cloq_tok_bos_id(t), 128000);
	assert_int_equal(cloq_tok_eos_id(t), 128001);
	assert_int_equal(cloq_tok_vocab_size(t), 128256);
	free(dec);
	free_vocab(&v);
	cloq_free(ids);
	cloq_tok_free(t);
	cloq_free(text);
}

/* Minimal .npy int32 reader for the reference windows. */
static int32_t *read_npy_i32(const char *path, size_t *rows, size_t *cols)
{
	size_t size;
	char *d = slurp(path, &size);
	assert_true(size > 10 && !memcmp(d, "\x93NUMPY", 6));
	size_t hl = (unsigned char)d[8] | ((size_t)(unsigned char)d[9] << 8);
	assert_non_null(strstr(d + 10, "'<i4'"));
	const char *sh = strstr(d + 10, "'shape': (");
	assert_non_null(sh);
	assert_int_equal(sscanf(sh, "'shape': (%zu, %zu)", rows, cols), 2);
	size_t bytes = *rows * *cols * 4;
	assert_int_equal(size, 10 + hl + bytes);
	int32_t *v = malloc(bytes);
	memcpy(v, d + 10 + hl, bytes);
	cloq_free(d);
	return v;
}

/* TinyStories with stories260K: the whole file encodes losslessly (and the fast path equals the
 * reference path); split into its 700 stories ("\n<|endoftext|>\n"), story 1 (0-based, the
 * rhinoceros) starts with fixtures/reference/ref_story1_ids64.txt; stories 600..699 with BOS,
 * cut to 512 and concatenated give public_eval_windows.npy; every calibration window occurs in
 * the stream of stories 0..699 with BOS. */
static void test_tinystories(void **state)
{
	size_t len, n, n2;
	char *text = slurp("fixtures/text/tinystories_public.txt", &len);
	cloq_tokenizer *t = load("fixtures/stories260K");
	assert_int_equal(cloq_tok_vocab_size(t), 512);
	assert_int_equal(cloq_tok_bos_id(t), 1);
	assert_int_equal(cloq_tok_eos_id(t), 2);

	int32_t *whole = enc(t, text, len, 0, &n);
	int32_t *ref = enc(t, text, len, CLOQ_TOK_ONE_PIECE, &n2);
	assert_int_equal(n, n2);
	assert_memory_equal(whole, ref, n * sizeof *ref);
	cloq_free(ref);
	assert_int_equal(whole[0], 1);
	for (size_t i = 1; i < n; i++)
		assert_true(whole[i] > 2 && whole[i] < 512); /* no BOS/EOS/unk inside */
	struct vocab_inv v = read_vocab("fixtures/stories260K");
	char *dec = malloc(len * 4 + 16);
	size_t dn = decode_sp(&v, whole + 1, n - 1, dec);
	assert_int_equal(dn, len + 1);
	assert_memory_equal(dec + 1, text, len);
	free(dec);
	free_vocab(&v);
	cloq_free(whole);

	/* the stories */
	const char sep[] = "\n<|endoftext|>\n";
	const char *story[800];
	size_t slen[800], ns = 0;
	for (const char *p = text, *end = text + len;;) {
		const char *q = memmem(p, (size_t)(end - p), sep, sizeof sep - 1);
		assert_true(ns < 800);
		story[ns] = p;
		slen[ns++] = (size_t)((q ? q : end) - p);
		if (!q)
			break;
		p = q + sizeof sep - 1;
	}
	assert_int_equal(ns, 700);

	size_t rsize;
	char *refs = slurp("fixtures/reference/ref_story1_ids64.txt", &rsize);
	int32_t ref64[64];
	char *p = refs;
	for (int i = 0; i < 64; i++) {
		ref64[i] = (int32_t)strtol(p, &p, 10);
		while (*p == ',' || *p == ' ' || *p == '\n')
			p++;
	}
	assert_int_equal(*p, '\0');
	cloq_free(refs);
	int32_t *s1 = enc(t, story[1], slen[1], 0, &n);
	assert_true(n >= 64);
	assert_memory_equal(s1, ref64, sizeof ref64);
	cloq_free(s1);

	int32_t *stream = malloc(sizeof(int32_t) * len), *eval = malloc(sizeof(int32_t) * len);
	size_t nstream = 0, neval = 0;
	for (size_t k = 0; k < ns; k++) {
		int32_t *ids = enc(t, story[k], slen[k], 0, &n);
		memcpy(stream + nstream, ids, n * sizeof *ids);
		nstream += n;
		if (k >= 600) {
			size_t m = n < 512 ? n : 512;
			memcpy(eval + neval, ids, m * sizeof *ids);
			neval += m;
		}
		cloq_free(ids);
	}
	size_t rows, cols;
	int32_t *win = read_npy_i32("fixtures/reference/public_eval_windows.npy", &rows, &cols);
	assert_int_equal(cols, 256);
	assert_int_equal(rows, neval / 256);
	assert_memory_equal(win, eval, rows * cols * sizeof *win);
	free(win);

	int32_t *cal = read_npy_i32("fixtures/reference/calib_tokens_128x256.npy", &rows, &cols);
	assert_int_equal(rows, 128);
	for (size_t r = 0; r < rows; r++) {
		const int32_t *w = cal + r * cols;
		int found = 0;
		for (size_t i = 0; !found && i + cols <= nstream; i++)
			found = stream[i] == w[0] && !memcmp(stream + i, w, cols * sizeof *w);
		if (!found)
			fail_msg("calibration window %zu does not occur in the token stream", r);
	}
	free(cal);
	free(stream);
	free(eval);
	cloq_tok_free(t);
	cloq_free(text);
}

/* ---- hand-made tokenizers -------------------------------------------------------------------- */

/* Sentencepiece-like, Metaspace pre-tokenizer (prepend "first", split), fused unk, and added
 * tokens exercising lstrip/rstrip, leftmost-longest and single_word. */
static const char sp_json[] =
	"{\"version\":\"1.0\",\"added_tokens\":["
	"{\"id\":0,\"content\":\"<unk>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},"
	"{\"id\":1,\"content\":\"<s>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},"
	"{\"id\":20,\"content\":\"<m>\",\"single_word\":false,\"lstrip\":true,\"rstrip\":true,\"normalized\":false,\"special\":true},"
	"{\"id\":21,\"content\":\"<mask>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},"
	"{\"id\":23,\"content\":\"zz\",\"single_word\":true,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":false}],"
	"\"normalizer\":null,"
	"\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"first\",\"split\":true},"
	"\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
	"{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1],\"tokens\":[\"<s>\"]}}},"
	"\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":false,"
	"\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"\\u2581\":3,\"a\":4,\"b\":5,\"c\":6,\"ab\":7,\"\\u2581ab\":8,\"z\":9,\"abc\":10},"
	"\"merges\":[\"a b\",\"\\u2581 ab\",\"ab c\"]}}";

static void test_handmade_metaspace(void **state)
{
	char dir[512];
	make_dir(dir, sizeof dir, "sp");
	write_file(dir, "tokenizer.json", sp_json);
	cloq_tokenizer *t = load(dir);
	/* "▁ab", "▁c": a+b (rank 0) then ▁+ab (rank 1) */
	EXPECT(t, "ab c", 1, 8, 3, 6);
	/* ▁,a,b,c -> ▁,ab,c -> (▁,ab) rank 1 beats (ab,c) rank 2 */
	EXPECT(t, "abc", 1, 8, 6);
	/* x and y have no token: one fused unk */
	EXPECT(t, "xy", 1, 3, 0);
	EXPECT(t, "xyc", 1, 3, 0, 6);
	/* the section after an added token is not at the start: no "▁" prepended ("first") */
	EXPECT(t, "ab<s>ab", 1, 8, 1, 7);
	/* lstrip / rstrip swallow the spaces around <m> */
	EXPECT(t, "a <m> b", 1, 3, 4, 20, 5);
	/* leftmost-longest: <mask> rather than <m> + "ask" */
	EXPECT(t, "<mask>", 1, 21);
	EXPECT(t, "<m>ask", 1, 20, 4, 0);
	/* single_word: "zz" only when not inside a word; "▁a▁" splits into "▁a", "▁" */
	EXPECT(t, "zz", 1, 23);
	EXPECT(t, "azz", 1, 3, 4, 9, 9);
	EXPECT(t, "a zz", 1, 3, 4, 3, 23);
	EXPECT(t, "", 1);
	size_t n;
	int32_t *ids = enc(t, "ab c", 4, CLOQ_TOK_NO_SPECIAL, &n);
	assert_int_equal(n, 3);
	assert_int_equal(ids[0], 8);
	cloq_free(ids);
	assert_int_equal(cloq_tok_vocab_size(t), 24);
	assert_int_equal(cloq_tok_bos_id(t), 1);
	assert_int_equal(cloq_tok_eos_id(t), 2); /* no config: "</s>" */

	/* invalid UTF-8 is bad input, with its offset */
	cloq_err err;
	cloq_err_clear(&err);
	ids = NULL;
	assert_int_equal(cloq_tok_encode(t, "ab\xff", 3, &ids, &n, &err), CLOQ_EINPUT);
	assert_null(ids);
	assert_non_null(strstr(err.msg, "UTF-8"));
	assert_non_null(strstr(err.msg, "offset 2"));
	assert_int_equal(cloq_tok_encode(t, "a\xed\xa0\x80", 4, &ids, &n, &err), CLOQ_EINPUT); /* surrogate */
	assert_int_equal(cloq_tok_encode(t, "\xc0\xaf", 2, &ids, &n, &err), CLOQ_EINPUT);      /* overlong */
	cloq_tok_free(t);
	/* tokenizer_config.json of a Llama tokenizer decides BOS / EOS (transformers rebuilds the
	 * post-processor of LlamaTokenizerFast); bos/eos tokens may be AddedToken objects */
	write_file(dir, "tokenizer_config.json",
		   "{\"tokenizer_class\": \"LlamaTokenizerFast\", \"add_bos_token\": false, \"add_eos_token\": true,"
		   " \"bos_token\": {\"content\": \"<s>\", \"lstrip\": false}, \"eos_token\": \"<mask>\"}");
	t = load(dir);
	EXPECT(t, "ab c", 8, 3, 6, 21);
	assert_int_equal(cloq_tok_bos_id(t), 1);
	assert_int_equal(cloq_tok_eos_id(t), 21);
	cloq_tok_free(t);
	/* any other class: the template of tokenizer.json decides */
	write_file(dir, "tokenizer_config.json",
		   "{\"tokenizer_class\": \"PreTrainedTokenizerFast\", \"add_bos_token\": false, \"add_eos_token\": true}");
	t = load(dir);
	EXPECT(t, "ab c", 1, 8, 3, 6);
	cloq_tok_free(t);
}

/* The legacy Llama-2 form: Prepend + Replace normalizer, no pre-tokenizer; byte fallback for
 * "x" only (<0x78>), unfused unk for the rest. */
static void test_handmade_sentencepiece_normalizer(void **state)
{
	char json[sizeof sp_json + 512];
	const char *a = strstr(sp_json, "\"normalizer\":null,");
	const char *b = strstr(sp_json, "\"post_processor\"");
	const char *c = strstr(sp_json, "\"fuse_unk\":true,\"byte_fallback\":false,");
	const char *d = strstr(sp_json, "\"abc\":10}");
	assert_true(a && b && c && d);
	snprintf(json, sizeof json, "%.*s%s%.*s%s%.*s%s%s", (int)(a - sp_json), sp_json,
		 "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"
		 "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]},\"pre_tokenizer\":null,",
		 (int)(c - b), b, "\"fuse_unk\":false,\"byte_fallback\":true,",
		 (int)(d - (c + strlen("\"fuse_unk\":true,\"byte_fallback\":false,"))),
		 c + strlen("\"fuse_unk\":true,\"byte_fallback\":false,"), "\"abc\":10,\"<0x78>\":11}", d + strlen("\"abc\":10}"));
	char dir[512];
	make_dir(dir, sizeof dir, "sp2");
	write_file(dir, "tokenizer.json", json);
	cloq_tokenizer *t = load(dir);
	EXPECT(t, "ab c", 1, 8, 3, 6);
	EXPECT(t, "xy", 1, 3, 11, 0);
	EXPECT(t, "yy", 1, 3, 0, 0);
	/* Prepend applies to every section, even after an added token */
	EXPECT(t, "ab<s>ab", 1, 8, 1, 8);
	/* " " -> "▁": a leading space gives "▁▁ab" = ▁, ▁ab */
	EXPECT(t, " ab", 1, 3, 8);
	cloq_tok_free(t);
}

/* Byte-level: 256 byte pieces with id = byte value, a Split regex then ByteLevel, ignore_merges. */
static char *bytelevel_json(int ignore_merges, int split, int nfc)
{
	cJSON *root = cJSON_CreateObject();
	cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
	cJSON *bos = cJSON_CreateObject();
	cJSON_AddNumberToObject(bos, "id", 300);
	cJSON_AddStringToObject(bos, "content", "<|bos|>");
	cJSON_AddBoolToObject(bos, "special", 1);
	cJSON_AddItemToArray(added, bos);
	if (nfc)
		cJSON_AddStringToObject(cJSON_AddObjectToObject(root, "normalizer"), "type", "NFC");
	else
		cJSON_AddNullToObject(root, "normalizer");
	cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
	cJSON *bl = cJSON_CreateObject();
	cJSON_AddStringToObject(bl, "type", "ByteLevel");
	if (split) {
		cJSON_AddStringToObject(pre, "type", "Sequence");
		cJSON *list = cJSON_AddArrayToObject(pre, "pretokenizers");
		cJSON *sp = cJSON_CreateObject();
		cJSON_AddStringToObject(sp, "type", "Split");
		cJSON_AddStringToObject(cJSON_AddObjectToObject(sp, "pattern"), "Regex",
					" ?\\p{L}+|\\p{N}|\\s+|[^\\s\\p{L}\\p{N}]+");
		cJSON_AddStringToObject(sp, "behavior", "Isolated");
		cJSON_AddBoolToObject(sp, "invert", 0);
		cJSON_AddItemToArray(list, sp);
		cJSON_AddBoolToObject(bl, "add_prefix_space", 0);
		cJSON_AddBoolToObject(bl, "use_regex", 0);
		cJSON_AddItemToArray(list, bl);
	} else {
		cJSON_AddBoolToObject(bl, "add_prefix_space", 1);
		cJSON_AddBoolToObject(bl, "use_regex", 1);
		cJSON_ReplaceItemInObject(root, "pre_tokenizer", bl);
	}
	cJSON *post = cJSON_AddObjectToObject(root, "post_processor");
	cJSON_AddStringToObject(post, "type", "TemplateProcessing");
	cJSON *single = cJSON_AddArrayToObject(post, "single");
	cJSON *st = cJSON_CreateObject();
	cJSON_AddStringToObject(cJSON_AddObjectToObject(st, "SpecialToken"), "id", "<|bos|>");
	cJSON_AddItemToArray(single, st);
	cJSON *sq = cJSON_CreateObject();
	cJSON_AddStringToObject(cJSON_AddObjectToObject(sq, "Sequence"), "id", "A");
	cJSON_AddItemToArray(single, sq);
	cJSON *sts = cJSON_AddObjectToObject(post, "special_tokens");
	cJSON *b = cJSON_AddObjectToObject(sts, "<|bos|>");
	int one[1] = {300};
	cJSON_AddItemToObject(b, "ids", cJSON_CreateIntArray(one, 1));
	cJSON *model = cJSON_AddObjectToObject(root, "model");
	cJSON_AddStringToObject(model, "type", "BPE");
	cJSON_AddNullToObject(model, "unk_token");
	cJSON_AddBoolToObject(model, "ignore_merges", ignore_merges);
	cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
	int next = 256;
	for (int by = 0; by < 256; by++) {
		int keep = (by >= 33 && by <= 126) || (by >= 161 && by <= 172) || (by >= 174 && by <= 255);
		int cp = keep ? by : next++;
		char u[4] = {0};
		if (cp < 0x80) {
			u[0] = (char)cp;
		} else {
			u[0] = (char)(0xC0 | (cp >> 6));
			u[1] = (char)(0x80 | (cp & 0x3F));
		}
		cJSON_AddNumberToObject(vocab, u, by);
	}
	cJSON_AddNumberToObject(vocab, "\xc4\xa0t", 256); /* "Ġt" */
	cJSON_AddNumberToObject(vocab, "he", 257);
	cJSON_AddNumberToObject(vocab, "\xc4\xa0the", 258);
	cJSON_AddNumberToObject(vocab, "xyz", 259);
	cJSON *merges = cJSON_AddArrayToObject(model, "merges");
	const char *pairs[3][2] = {{"\xc4\xa0", "t"}, {"h", "e"}, {"\xc4\xa0t", "he"}};
	for (int i = 0; i < 3; i++)
		cJSON_AddItemToArray(merges, cJSON_CreateStringArray(pairs[i], 2));
	char *s = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	return s;
}

static void test_handmade_bytelevel(void **state)
{
	char dir[512];
	make_dir(dir, sizeof dir, "bl");
	char *json = bytelevel_json(1, 1, 0);
	write_file(dir, "tokenizer.json", json);
	free(json);
	cloq_tokenizer *t = load(dir);
	/* "the": t, h+e -> [t, he]; " the" = "Ġthe" is a vocabulary entry: ignore_merges takes it */
	EXPECT(t, "the the", 300, 't', 257, 258);
	EXPECT(t, "xyz", 300, 259);
	EXPECT(t, "\xc3\xa9", 300, 0xC3, 0xA9); /* é: its two bytes */
	EXPECT(t, "a1", 300, 'a', '1');
	EXPECT(t, " \n", 300, ' ', '\n');
	EXPECT(t, "<|bos|>x", 300, 300, 'x');
	EXPECT(t, "", 300);
	assert_int_equal(cloq_tok_bos_id(t), 300);
	assert_int_equal(cloq_tok_eos_id(t), -1);
	cloq_tok_free(t);

	/* without ignore_merges "xyz" has no merge path; "Ġthe" is reached by merges anyway */
	json = bytelevel_json(0, 1, 0);
	write_file(dir, "tokenizer.json", json);
	free(json);
	t = load(dir);
	EXPECT(t, "xyz", 300, 'x', 'y', 'z');
	EXPECT(t, "the the", 300, 't', 257, 258);
	cloq_tok_free(t);

	/* ByteLevel alone: add_prefix_space, GPT-2 regex */
	json = bytelevel_json(0, 0, 0);
	write_file(dir, "tokenizer.json", json);
	free(json);
	t = load(dir);
	EXPECT(t, "the the", 300, 258, 258);
	cloq_tok_free(t);

	/* NFC normalizer (Qwen2): known compositions from Python's unicodedata */
	json = bytelevel_json(0, 1, 1);
	write_file(dir, "tokenizer.json", json);
	free(json);
	t = load(dir);
	EXPECT(t, "e\xcc\x81", 300, 0xC3, 0xA9);                     /* e + U+0301 -> U+00E9 */
	EXPECT(t, "\xe1\x84\x80\xe1\x85\xa1", 300, 0xEA, 0xB0, 0x80); /* Hangul L + V -> U+AC00 */
	EXPECT(t, "a\xcc\x82\xcc\xa3", 300, 0xE1, 0xBA, 0xAD);        /* reordered, -> U+1EAD */
	EXPECT(t, "\xe2\x84\xab", 300, 0xC3, 0x85);                   /* U+212B singleton -> U+00C5 */
	EXPECT(t, "\xe1\xb8\x8b\xcc\xa3", 300, 0xE1, 0xB8, 0x8D, 0xCC, 0x87); /* -> U+1E0D U+0307 */
	EXPECT(t, "the the", 300, 't', 257, 258);
	cloq_tok_free(t);
}

/* ---- must-fail ------------------------------------------------------------------------------- */

static void expect_load_fail(const char *name, const char *json, const char *config, int code,
			     const char *needle1, const char *needle2)
{
	char dir[512];
	make_dir(dir, sizeof dir, name);
	if (json)
		write_file(dir, "tokenizer.json", json);
	if (config)
		write_file(dir, "tokenizer_config.json", config);
	cloq_tokenizer *t = (cloq_tokenizer *)&t; /* must be reset to NULL */
	cloq_err err;
	cloq_err_clear(&err);
	assert_int_equal(cloq_tok_load(dir, &t, &err), code);
	assert_null(t);
	if (!strstr(err.msg, needle1) || (needle2 && !strstr(err.msg, needle2)))
		fail_msg("message \"%s\" lacks \"%s\" / \"%s\"", err.msg, needle1, needle2 ? needle2 : "");
	if (!strstr(err.msg, dir))
		fail_msg("message \"%s\" does not name the directory %s", err.msg, dir);
}

static void test_must_fail(void **state)
{
	cloq_tokenizer *t = NULL;
	cloq_err err;
	cloq_err_clear(&err);
	assert_int_equal(cloq_tok_load("/nonexistent/model", &t, &err), CLOQ_EINPUT);
	assert_null(t);
	assert_non_null(strstr(err.msg, "/nonexistent/model/tokenizer.json"));

	expect_load_fail("nojson", NULL, NULL, CLOQ_EINPUT, "tokenizer.json", "cannot open");
	expect_load_fail("badjson", "{\"model\": {\"type\": \"BPE\", ", NULL, CLOQ_EINPUT, "tokenizer.json",
			 "invalid JSON");
	expect_load_fail("wordpiece", "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}", NULL, CLOQ_EINPUT,
			 "tokenizer.json: model type 'WordPiece' is not supported", "supported: BPE");
	expect_load_fail("unigram", "{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}}", NULL, CLOQ_EINPUT,
			 "'Unigram'", "BPE");
	static const char model_ok[] = "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\"]}";
	char json[1024];
	snprintf(json, sizeof json, "{%s,\"pre_tokenizer\":{\"type\":\"Whitespace\"}}", model_ok);
	expect_load_fail("whitespace", json, NULL, CLOQ_EINPUT, "pre_tokenizer type 'Whitespace' is not supported",
			 "Metaspace");
	snprintf(json, sizeof json, "{%s,\"normalizer\":{\"type\":\"NFKC\"}}", model_ok);
	expect_load_fail("nfkc", json, NULL, CLOQ_EINPUT, "normalizer type 'NFKC'", "Prepend");
	snprintf(json, sizeof json, "{%s,\"post_processor\":{\"type\":\"Mystery\"}}", model_ok);
	expect_load_fail("post", json, NULL, CLOQ_EINPUT, "post_processor type 'Mystery'", "TemplateProcessing");
	snprintf(json, sizeof json,
		 "{%s,\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(a\"},\"behavior\":\"Isolated\"}}",
		 model_ok);
	expect_load_fail("badregex", json, NULL, CLOQ_EINPUT, "regex does not compile", "Split");
	expect_load_fail("badmerge", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"ab\"]}}", NULL,
			 CLOQ_EINPUT, "model.merges[0]", NULL);
	expect_load_fail("badid", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-3},\"merges\":[]}}", NULL,
			 CLOQ_EINPUT, "model.vocab[\"a\"]", NULL);
	snprintf(json, sizeof json, "{%s}", model_ok);
	expect_load_fail("badconfig", json, "{\"bos_token\": ", CLOQ_EINPUT, "tokenizer_config.json", "invalid JSON");

	/* a character with no token, no byte fallback and no unk: bad input at encode time */
	char dir[512];
	make_dir(dir, sizeof dir, "nounk");
	write_file(dir, "tokenizer.json", json);
	t = load(dir);
	size_t n;
	int32_t *ids = NULL;
	assert_int_equal(cloq_tok_encode(t, "ab", 2, &ids, &n, &err), CLOQ_OK);
	assert_int_equal(n, 1);
	assert_int_equal(ids[0], 2);
	cloq_free(ids);
	assert_int_equal(cloq_tok_encode(t, "abc", 3, &ids, &n, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "U+0063"));
	cloq_tok_free(t);
	cloq_tok_free(NULL);
}

/* Fail every allocation of a load + encode in turn: each failure is a clean CLOQ_EIO (ASan
 * checks that nothing leaks), and the run that succeeds gives the golden ids. */
static void fault_loop(const char *dir, const char *text, const int32_t *want, size_t nwant)
{
	int ok = 0;
	for (long nth = 1; nth < 100000 && !ok; nth++) {
		cloq_err err;
		cloq_err_clear(&err);
		cloq_tokenizer *t = NULL;
		int32_t *ids = NULL;
		size_t n = 0;
		cloq_fault_set(CLOQ_FAULT_ALLOC, nth);
		int rc = cloq_tok_load(dir, &t, &err);
		if (rc == CLOQ_OK)
			rc = cloq_tok_encode(t, text, strlen(text), &ids, &n, &err);
		cloq_fault_set(CLOQ_FAULT_ALLOC, 0);
		if (rc == CLOQ_OK) {
			ok = 1;
			assert_int_equal(n, nwant);
			assert_memory_equal(ids, want, n * sizeof *ids);
		} else {
			assert_int_equal(rc, CLOQ_EIO);
			assert_non_null(strstr(err.msg, "out of memory"));
			assert_null(ids);
		}
		cloq_free(ids);
		cloq_tok_free(t);
	}
	assert_true(ok);
}

static void test_alloc_faults(void **state)
{
	static const int32_t hello[] = {1, 346, 306, 414, 2, 263, 304, 341};
	fault_loop("fixtures/stories260K", "Hello</s>world", hello, 8);
	char dir[512];
	make_dir(dir, sizeof dir, "blf");
	char *json = bytelevel_json(1, 1, 0);
	write_file(dir, "tokenizer.json", json);
	free(json);
	static const int32_t the[] = {300, 't', 257, 258, 0xC3, 0xA9};
	fault_loop(dir, "the the\xc3\xa9", the, 6);
	json = bytelevel_json(1, 1, 1);
	write_file(dir, "tokenizer.json", json);
	free(json);
	static const int32_t nfc[] = {300, 't', 257, ' ', 0xC3, 0xA9};
	fault_loop(dir, "the e\xcc\x81", nfc, 6);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden_stories260k),
		cmocka_unit_test(test_golden_mistral),
		cmocka_unit_test(test_golden_llama3),
		cmocka_unit_test(test_golden_mistral_pair_merges),
		cmocka_unit_test(test_golden_qwen3),
		cmocka_unit_test(test_golden_gemma),
		cmocka_unit_test(test_golden_phi3),
		cmocka_unit_test(test_wikitext_mistral_round_trip),
		cmocka_unit_test(test_wikitext_llama3_round_trip),
		cmocka_unit_test(test_tinystories),
		cmocka_unit_test(test_handmade_metaspace),
		cmocka_unit_test(test_handmade_sentencepiece_normalizer),
		cmocka_unit_test(test_handmade_bytelevel),
		cmocka_unit_test(test_must_fail),
		cmocka_unit_test(test_alloc_faults),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
