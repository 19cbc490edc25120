/* test_mkmodel.c - the model generator (build/tools/mkmodel) read back through cloq_st_open:
 * HF names and shapes for plain, GQA and preset geometries, single file vs --shards 3 holding the
 * same values, byte-for-byte determinism per seed, and weight statistics. Skips (77) when the tool
 * has not been built. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cloq_safetensors.h"
#include "cloq_sys.h"

static char tmpdir[256], tool[512];

static int setup(void **state)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/cloq_test_mkmodel.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[512];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static int mk(const char *sub, const char *args)
{
	char cmd[2048];
	snprintf(cmd, sizeof cmd, "'%s' --quiet --out '%s/%s' %s", tool, tmpdir, sub, args);
	int rc = system(cmd);
	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static cloq_st_model *open_sub(const char *sub)
{
	char p[600];
	snprintf(p, sizeof p, "%s/%s", tmpdir, sub);
	cloq_err err;
	cloq_err_clear(&err);
	cloq_st_model *m = NULL;
	if (cloq_st_open(p, &m, &err))
		fail_msg("%s", err.msg);
	return m;
}

static void assert_shape(const cloq_st_model *m, const char *name, int64_t d0, int64_t d1)
{
	const cloq_st_tensor *t = cloq_st_find(m, name);
	if (!t)
		fail_msg("missing tensor %s", name);
	assert_int_equal(t->ndim, d1 ? 2 : 1);
	assert_int_equal(t->shape[0], d0);
	if (d1)
		assert_int_equal(t->shape[1], d1);
}

static void test_single_tied_f32(void **state)
{
	assert_int_equal(mk("tied", "--hidden 64 --intermediate 160 --layers 3 --heads 8 --kv-heads 4 "
				    "--vocab 300 --dtype f32 --seed 5 --tied"), 0);
	cloq_st_model *m = open_sub("tied");
	assert_int_equal(cloq_st_nfiles(m), 1);
	assert_int_equal(cloq_st_count(m), 1 + 3 * 9 + 1);
	assert_int_equal(cloq_st_layer_count(m), 3);
	assert_null(cloq_st_find(m, "lm_head.weight"));
	assert_shape(m, "model.embed_tokens.weight", 300, 64);
	assert_shape(m, "model.norm.weight", 64, 0);
	static const char *const suffix[] = { "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
					      "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
					      "mlp.down_proj", "input_layernorm", "post_attention_layernorm" };
	const int64_t shp[9][2] = { { 64, 64 }, { 32, 64 }, { 32, 64 }, { 64, 64 }, { 160, 64 },
				    { 160, 64 }, { 64, 160 }, { 64, 0 }, { 64, 0 } };
	for (int l = 0; l < 3; l++)
		for (int k = 0; k < 9; k++) {
			char name[128];
			snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, suffix[k]);
			assert_shape(m, name, shp[k][0], shp[k][1]);
			assert_int_equal(cloq_st_find(m, name)->dtype, CLOQ_DT_F32);
		}
	/* statistics: Linear std 1/sqrt(in), norms about 1 */
	cloq_err err;
	const cloq_st_tensor *t = cloq_st_find(m, "model.layers.2.mlp.down_proj.weight");
	float *w = cloq_malloc(t->nelem * sizeof(float));
	assert_int_equal(cloq_st_read_f32(m, t, w, &err), CLOQ_OK);
	double s = 0, s2 = 0;
	for (size_t i = 0; i < t->nelem; i++)
		s += w[i], s2 += (double)w[i] * w[i];
	double mean = s / t->nelem, sd = sqrt(s2 / t->nelem - mean * mean);
	assert_true(fabs(mean) < 0.01);
	assert_true(fabs(sd * sqrt(160.0) - 1.0) < 0.05);
	cloq_free(w);
	t = cloq_st_find(m, "model.layers.0.input_layernorm.weight");
	float nw[64];
	assert_int_equal(cloq_st_read_f32(m, t, nw, &err), CLOQ_OK);
	s = 0;
	for (int i = 0; i < 64; i++)
		s += nw[i];
	assert_true(fabs(s / 64 - 1.0) < 0.05);
	cloq_st_close(m);
	char cfg[600], *txt;
	size_t n;
	snprintf(cfg, sizeof cfg, "%s/tied/config.json", tmpdir);
	assert_int_equal(cloq_read_file(cfg, &txt, &n, &err), CLOQ_OK);
	assert_non_null(strstr(txt, "\"tie_word_embeddings\": true"));
	assert_non_null(strstr(txt, "\"LlamaForCausalLM\""));
	assert_non_null(strstr(txt, "\"num_key_value_heads\": 4"));
	assert_non_null(strstr(txt, "\"torch_dtype\": \"float32\""));
	cloq_free(txt);
}

/* --shards 3 holds exactly the tensors and values of the single file with the same seed. */
static void test_sharded_matches_single(void **state)
{
	const char *g = "--hidden 48 --intermediate 96 --layers 4 --heads 6 --kv-heads 2 --vocab 200 --seed 11";
	char args[512];
	snprintf(args, sizeof args, "%s --shards 3", g);
	assert_int_equal(mk("one", g), 0);
	assert_int_equal(mk("three", args), 0);
	cloq_st_model *a = open_sub("one"), *b = open_sub("three");
	assert_int_equal(cloq_st_nfiles(b), 3);
	assert_non_null(strstr(cloq_st_file_path(b, 2), "model-00003-of-00003.safetensors"));
	assert_int_equal(cloq_st_count(a), 1 + 4 * 9 + 2);
	assert_int_equal(cloq_st_count(b), cloq_st_count(a));
	assert_non_null(cloq_st_find(b, "lm_head.weight"));
	int files_seen[3] = { 0, 0, 0 };
	cloq_err err;
	for (size_t i = 0; i < cloq_st_count(a); i++) {
		const cloq_st_tensor *ta = cloq_st_tensor_at(a, i);
		const cloq_st_tensor *tb = cloq_st_find(b, ta->name);
		assert_non_null(tb);
		assert_int_equal(ta->dtype, CLOQ_DT_BF16); /* the default */
		assert_int_equal(tb->nbytes, ta->nbytes);
		files_seen[tb->file] = 1;
		uint8_t *x = cloq_malloc(ta->nbytes), *y = cloq_malloc(ta->nbytes);
		assert_int_equal(cloq_st_read_raw(a, ta, x, &err), CLOQ_OK);
		assert_int_equal(cloq_st_read_raw(b, tb, y, &err), CLOQ_OK);
		assert_memory_equal(x, y, ta->nbytes);
		cloq_free(x);
		cloq_free(y);
	}
	assert_true(files_seen[0] && files_seen[1] && files_seen[2]);
	/* shards are balanced in bytes: none is more than twice the mean */
	uint64_t tot = 0;
	for (int f = 0; f < 3; f++)
		tot += cloq_st_file_size(b, (size_t)f);
	for (int f = 0; f < 3; f++)
		assert_true(cloq_st_file_size(b, (size_t)f) < 2 * tot / 3);
	cloq_st_close(a);
	cloq_st_close(b);
}

static void test_deterministic(void **state)
{
	const char *g = "--hidden 32 --intermediate 64 --layers 1 --heads 4 --kv-heads 4 --vocab 64 --dtype f16";
	char args[512];
	snprintf(args, sizeof args, "%s --seed 3", g);
	assert_int_equal(mk("d1", args), 0);
	assert_int_equal(mk("d2", args), 0);
	snprintf(args, sizeof args, "%s --seed 4", g);
	assert_int_equal(mk("d3", args), 0);
	char p[600];
	char *f[3];
	size_t n[3];
	cloq_err err;
	const char *sub[3] = { "d1", "d2", "d3" };
	for (int i = 0; i < 3; i++) {
		snprintf(p, sizeof p, "%s/%s/model.safetensors", tmpdir, sub[i]);
		assert_int_equal(cloq_read_file(p, &f[i], &n[i], &err), CLOQ_OK);
	}
	assert_int_equal(n[0], n[1]);
	assert_memory_equal(f[0], f[1], n[0]);
	assert_int_equal(n[0], n[2]); /* same geometry, same header */
	assert_true(memcmp(f[0], f[2], n[0]) != 0);
	for (int i = 0; i < 3; i++)
		cloq_free(f[i]);
}

static void test_gqa_and_presets(void **state)
{
	assert_int_equal(mk("gqa", "--hidden 96 --intermediate 128 --layers 1 --heads 4 --kv-heads 2 "
				   "--head-dim 32 --vocab 50 --dtype f16"), 0);
	cloq_st_model *m = open_sub("gqa");
	assert_shape(m, "model.layers.0.self_attn.q_proj.weight", 128, 96);
	assert_shape(m, "model.layers.0.self_attn.k_proj.weight", 64, 96);
	assert_shape(m, "model.layers.0.self_attn.o_proj.weight", 96, 128);
	assert_int_equal(cloq_st_find(m, "model.layers.0.self_attn.o_proj.weight")->dtype, CLOQ_DT_F16);
	cloq_st_close(m);
	/* the 70B preset keeps its 64/8 heads when the widths are shrunk */
	assert_int_equal(mk("p70", "--preset llama3-70b --layers 1 --hidden 128 --intermediate 256 --vocab 300"), 0);
	m = open_sub("p70");
	assert_int_equal(cloq_st_layer_count(m), 1);
	assert_shape(m, "model.layers.0.self_attn.k_proj.weight", 16, 128); /* 8 kv x head_dim 2 */
	assert_shape(m, "lm_head.weight", 300, 128);
	cloq_st_close(m);
	char cfg[600], *txt;
	size_t n;
	cloq_err err;
	snprintf(cfg, sizeof cfg, "%s/p70/config.json", tmpdir);
	assert_int_equal(cloq_read_file(cfg, &txt, &n, &err), CLOQ_OK);
	assert_non_null(strstr(txt, "\"num_attention_heads\": 64"));
	assert_non_null(strstr(txt, "\"rope_theta\": 500000.0"));
	cloq_free(txt);
	/* usage errors */
	assert_int_equal(mk("bad1", "--dtype f8"), 1);
	assert_int_equal(mk("bad2", "--hidden 100 --heads 3"), 1);
	assert_int_equal(mk("bad3", "--preset gpt2"), 1);
	assert_int_equal(mk("bad4", "--layers 1 --shards 50"), 1);
}

int main(void)
{
	const char *b = getenv("BUILD");
	snprintf(tool, sizeof tool, "%s/tools/mkmodel", b && *b ? b : "build");
	if (access(tool, X_OK) != 0) {
		fprintf(stderr, "%s not built: skipping\n", tool);
		return 77;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_single_tied_f32),
		cmocka_unit_test(test_sharded_matches_single),
		cmocka_unit_test(test_deterministic),
		cmocka_unit_test(test_gqa_and_presets),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
