/* test_model.c - config parsing, tensor checks against the config, and the forward pass against
 * the independent float64 reference (fixtures/reference). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_calib.h"
#include "cloq_config.h"
#include "cloq_eval.h"
#include "cloq_llama.h"
#include "cloq_model.h"
#include "cloq_npy.h"
#include "cloq_safetensors.h"
#include "cloq_sys.h"

#define MODEL "fixtures/stories260K"

static void test_config_stories(void **state)
{
	cloq_config c;
	cloq_err err;
	cloq_err_clear(&err);
	assert_int_equal(cloq_config_load(MODEL, &c, &err), CLOQ_OK);
	assert_int_equal(c.hidden, 64);
	assert_int_equal(c.intermediate, 172);
	assert_int_equal(c.layers, 5);
	assert_int_equal(c.heads, 8);
	assert_int_equal(c.kv_heads, 4);
	assert_int_equal(c.head_dim, 8);
	assert_int_equal(c.vocab, 512);
	assert_true(c.tie_embeddings);
	assert_int_equal(cloq_config_total_params(&c), 260032);
}

static void expect_config_error(const char *json, const char *needle)
{
	cloq_config c;
	cloq_err err;
	cloq_err_clear(&err);
	assert_int_equal(cloq_config_parse(json, "x/config.json", &c, &err), CLOQ_EINPUT);
	if (!strstr(err.msg, needle))
		fail_msg("message '%s' lacks '%s'", err.msg, needle);
	assert_non_null(strstr(err.msg, "x/config.json"));
}

static void test_config_bad(void **state)
{
	expect_config_error("{\"architectures\":[\"GPT2LMHeadModel\"]}", "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM");
	expect_config_error("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64}", "intermediate_size");
	expect_config_error("{\"architectures\":[\"LlamaForCausalLM\"", "invalid JSON");
	expect_config_error("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":8,"
			    "\"num_hidden_layers\":1,\"num_attention_heads\":8,\"num_key_value_heads\":3,\"vocab_size\":9}",
			    "multiple of num_key_value_heads");
	expect_config_error("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":8,"
			    "\"num_hidden_layers\":1,\"num_attention_heads\":8,\"vocab_size\":9,"
			    "\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":2}}",
			    "yarn");
}

static void test_config_llama3_qwen2(void **state)
{
	cloq_config c;
	cloq_err err;
	const char *l3 = "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":8192,\"intermediate_size\":28672,"
			 "\"num_hidden_layers\":80,\"num_attention_heads\":64,\"num_key_value_heads\":8,\"vocab_size\":128256,"
			 "\"rope_theta\":500000.0,\"rope_scaling\":{\"factor\":8.0,\"low_freq_factor\":1.0,"
			 "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"},"
			 "\"max_position_embeddings\":131072,\"eos_token_id\":[128001,128008,128009],\"torch_dtype\":\"bfloat16\"}";
	assert_int_equal(cloq_config_parse(l3, "l3", &c, &err), CLOQ_OK);
	assert_int_equal(c.rope_type, CLOQ_ROPE_LLAMA3);
	assert_int_equal(c.head_dim, 128);
	assert_int_equal(c.eos_id, 128001);
	/* Llama-3-70B: 70.55 B parameters (published figure 70.6 B) */
	assert_true(llabs(cloq_config_total_params(&c) - 70553706496LL) < 1000000LL);
	const char *q2 = "{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":896,\"intermediate_size\":4864,"
			 "\"num_hidden_layers\":24,\"num_attention_heads\":14,\"num_key_value_heads\":2,\"vocab_size\":151936,"
			 "\"tie_word_embeddings\":true}";
	assert_int_equal(cloq_config_parse(q2, "q2", &c, &err), CLOQ_OK);
	assert_true(c.qkv_bias);
	assert_false(c.o_bias);
	/* Qwen2-0.5B: 494 M parameters */
	assert_true(llabs(cloq_config_total_params(&c) - 494032768LL) < 100000LL);
}

/* The logits of the reference 64-token story prefix, against the float64 reference. */
static void test_logits_match_reference(void **state)
{
	cloq_err err;
	cloq_err_clear(&err);
	cloq_model *m = NULL;
	assert_int_equal(cloq_model_open(MODEL, &m, &err), CLOQ_OK);
	int32_t ids[64];
	FILE *f = fopen("fixtures/reference/ref_story1_ids64.txt", "r");
	assert_non_null(f);
	for (int i = 0; i < 64; i++)
		assert_int_equal(fscanf(f, "%d,", &ids[i]), 1);
	fclose(f);
	float *ref = malloc(64 * 512 * sizeof(float)), *got = malloc(64 * 512 * sizeof(float));
	f = fopen("fixtures/reference/ref_story1_logits64.f32", "rb");
	assert_int_equal(fread(ref, sizeof(float), 64 * 512, f), 64 * 512);
	fclose(f);
	cloq_lm lm;
	cloq_model_lm(m, &lm);
	assert_int_equal(cloq_eval_logits(&lm, ids, 64, got, &err), CLOQ_OK);
	double maxd = 0;
	for (int i = 0; i < 64 * 512; i++)
		maxd = fmax(maxd, fabs((double)got[i] - ref[i]));
	printf("max |logit - reference| = %.3g\n", maxd);
	assert_true(maxd <= 1e-4);
	free(ref);
	free(got);
	cloq_model_close(m);
}

/* Resumed passes (cloq_block_forward_from): stopping after each group, keeping the state, and
 * resuming from it reproduces the full pass bit for bit; the hooks see the same inputs. */
typedef struct hook_sums {
	double s[CLOQ_GROUPS];
	int calls[CLOQ_GROUPS];
} hook_sums;

static int sum_hook(void *ctx, int group, const float *X, int t, int n, cloq_err *err)
{
	hook_sums *h = ctx;
	for (size_t i = 0; i < (size_t)t * n; i++)
		h->s[group] += (double)X[i] * (1.0 + (double)(i % 7));
	h->calls[group]++;
	return CLOQ_OK;
}

static void test_resumed_passes(void **state)
{
	cloq_err err;
	cloq_err_clear(&err);
	cloq_model *m = NULL;
	assert_int_equal(cloq_model_open(MODEL, &m, &err), CLOQ_OK);
	const cloq_config *c = &m->cfg;
	const int T = 48;
	cloq_layer_w w;
	cloq_rope rope;
	cloq_block_ws *ws = NULL;
	assert_int_equal(cloq_model_load_layer(m, 1, &w, &err), CLOQ_OK);
	assert_int_equal(cloq_rope_init(&rope, c, T, &err), CLOQ_OK);
	assert_int_equal(cloq_block_ws_create(c, T, &ws, &err), CLOQ_OK);
	size_t D = (size_t)c->hidden, qd = (size_t)c->heads * c->head_dim, NI = (size_t)c->intermediate;
	float *x0 = malloc(T * D * 4), *full = malloc(T * D * 4), *x = malloc(T * D * 4);
	float *att = malloc(T * qd * 4), *h = malloc(T * D * 4), *act = malloc(T * NI * 4);
	for (size_t i = 0; i < T * D; i++)
		x0[i] = (float)sin(0.37 * (double)i) * (i % 5 == 0 ? 3.0f : 0.5f);
	hook_sums ref, res;
	memset(&ref, 0, sizeof ref);
	memset(&res, 0, sizeof res);
	memcpy(full, x0, T * D * 4);
	assert_int_equal(cloq_block_forward(c, 0, &w, &rope, ws, full, T, sum_hook, &ref, -1, &err), CLOQ_OK);
	/* the true-sequential sequence: O from the input, GATEUP from ATT, DOWN from H, the rest
	 * from ACT; each hook counted once where it is collected */
	memcpy(x, x0, T * D * 4);
	assert_int_equal(cloq_block_forward_from(c, 0, &w, &rope, ws, x, T, CLOQ_STATE_INPUT, sum_hook, &res,
						 CLOQ_GROUP_O, &err), CLOQ_OK);
	assert_memory_equal(x, x0, T * D * 4); /* a stopped pass leaves x alone */
	memcpy(att, cloq_block_ws_state(ws, CLOQ_STATE_ATT), T * qd * 4);
	memset(cloq_block_ws_state(ws, CLOQ_STATE_ATT), 0x7f, T * qd * 4); /* clobber the workspace */
	memcpy(cloq_block_ws_state(ws, CLOQ_STATE_ATT), att, T * qd * 4);
	assert_int_equal(cloq_block_forward_from(c, 0, &w, &rope, ws, x, T, CLOQ_STATE_ATT, NULL, NULL, CLOQ_GROUP_GATEUP,
						 &err), CLOQ_OK);
	memcpy(h, cloq_block_ws_state(ws, CLOQ_STATE_H), T * D * 4);
	memset(cloq_block_ws_state(ws, CLOQ_STATE_H), 0, T * D * 4);
	memcpy(cloq_block_ws_state(ws, CLOQ_STATE_H), h, T * D * 4);
	assert_int_equal(cloq_block_forward_from(c, 0, &w, &rope, ws, x, T, CLOQ_STATE_H, NULL, NULL, CLOQ_GROUP_DOWN,
						 &err), CLOQ_OK);
	memcpy(act, cloq_block_ws_state(ws, CLOQ_STATE_ACT), T * NI * 4);
	memset(cloq_block_ws_state(ws, CLOQ_STATE_ACT), 0, T * NI * 4);
	memset(cloq_block_ws_state(ws, CLOQ_STATE_H), 0, T * D * 4);
	memcpy(cloq_block_ws_state(ws, CLOQ_STATE_ACT), act, T * NI * 4);
	memcpy(cloq_block_ws_state(ws, CLOQ_STATE_H), h, T * D * 4);
	memset(x, 0, T * D * 4); /* resuming from ACT needs only h and act */
	assert_int_equal(cloq_block_forward_from(c, 0, &w, &rope, ws, x, T, CLOQ_STATE_ACT, sum_hook, &res, -1, &err),
			 CLOQ_OK);
	assert_memory_equal(x, full, T * D * 4);
	assert_true(res.s[CLOQ_GROUP_O] == ref.s[CLOQ_GROUP_O]);
	assert_true(res.s[CLOQ_GROUP_DOWN] == ref.s[CLOQ_GROUP_DOWN]);
	assert_int_equal(res.calls[CLOQ_GROUP_GATEUP], 0);
	/* a pass cannot stop before the state it starts from */
	assert_int_equal(cloq_block_forward_from(c, 0, &w, &rope, ws, x, T, CLOQ_STATE_H, NULL, NULL, CLOQ_GROUP_O, &err),
			 CLOQ_EUSAGE);
	assert_int_equal(cloq_block_forward_from(c, 0, &w, &rope, ws, x, T, 7, NULL, NULL, -1, &err), CLOQ_EUSAGE);
	free(x0);
	free(full);
	free(x);
	free(att);
	free(h);
	free(act);
	cloq_block_ws_free(ws);
	cloq_rope_free(&rope);
	cloq_layer_w_free(&w);
	cloq_model_close(m);
}

static void test_ppl_reference(void **state)
{
	cloq_err err;
	cloq_err_clear(&err);
	cloq_model *m = NULL;
	assert_int_equal(cloq_model_open(MODEL, &m, &err), CLOQ_OK);
	cloq_windows w = {0};
	int32_t *ids;
	cloq_npy_info info;
	assert_int_equal(cloq_npy_read_i32("fixtures/reference/public_eval_windows.npy", &ids, &info, &err), CLOQ_OK);
	w.ids = ids;
	w.n = (int)info.shape[0];
	w.seqlen = (int)info.shape[1];
	cloq_lm lm;
	cloq_model_lm(m, &lm);
	cloq_eval_result res;
	assert_int_equal(cloq_eval_ppl(&lm, &w, &res, 0, &err), CLOQ_OK);
	printf("perplexity %.6f (reference 5.340249)\n", res.ppl);
	assert_int_equal(res.count, 151 * 255);
	assert_true(fabs(res.ppl - 5.340249) < 5e-4);
	cloq_windows_free(&w);
	cloq_model_close(m);
}

/* ---- must-fail model directories, made by rewriting the fixture ---------------------------- */
static char tmpdir[256];

static int setup(void **state)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/cloq_test_model.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[512];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	return system(cmd);
}

/* Copy the fixture into tmpdir/name, dropping tensor `drop`, reshaping `reshape` to 1-D, and
 * poisoning `nan_in` with a NaN at flat index 5. */
static void make_variant(const char *name, const char *drop, const char *nan_in, const char *config_json)
{
	char dir[512], path[600], cmd[1200];
	snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
	snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp %s/config.json '%s/'", dir, MODEL, dir);
	assert_int_equal(system(cmd), 0);
	if (config_json) {
		snprintf(path, sizeof path, "%s/config.json", dir);
		FILE *f = fopen(path, "w");
		fputs(config_json, f);
		fclose(f);
	}
	cloq_err err;
	cloq_st_model *src = NULL;
	assert_int_equal(cloq_st_open(MODEL "/model.safetensors", &src, &err), CLOQ_OK);
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	cloq_st_writer *w = NULL;
	assert_int_equal(cloq_st_writer_create(path, &w, &err), CLOQ_OK);
	for (size_t i = 0; i < cloq_st_count(src); i++) {
		const cloq_st_tensor *t = cloq_st_tensor_at(src, i);
		if (drop && !strcmp(t->name, drop))
			continue;
		assert_int_equal(cloq_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, &err), CLOQ_OK);
	}
	assert_int_equal(cloq_st_writer_begin(w, &err), CLOQ_OK);
	size_t k = 0;
	for (size_t i = 0; i < cloq_st_count(src); i++) {
		const cloq_st_tensor *t = cloq_st_tensor_at(src, i);
		if (drop && !strcmp(t->name, drop))
			continue;
		float *buf = malloc(t->nbytes);
		assert_int_equal(cloq_st_read_raw(src, t, buf, &err), CLOQ_OK);
		if (nan_in && !strcmp(t->name, nan_in))
			buf[5] = NAN;
		assert_int_equal(cloq_st_writer_write(w, k++, buf, t->nbytes, &err), CLOQ_OK);
		free(buf);
	}
	assert_int_equal(cloq_st_writer_commit(w, &err), CLOQ_OK);
	cloq_st_writer_free(w);
	cloq_st_close(src);
}

static void expect_open_fails(const char *name, const char *needle1, const char *needle2)
{
	char dir[512];
	snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
	cloq_err err;
	cloq_err_clear(&err);
	cloq_model *m = NULL;
	int rc = cloq_model_open(dir, &m, &err);
	if (rc == CLOQ_OK) {
		/* NaN is found when the layer is read */
		cloq_layer_w lw;
		rc = cloq_model_load_layer(m, 2, &lw, &err);
		cloq_model_close(m);
	}
	assert_int_equal(rc, CLOQ_EINPUT);
	if (!strstr(err.msg, needle1) || (needle2 && !strstr(err.msg, needle2)))
		fail_msg("message '%s' lacks '%s' / '%s'", err.msg, needle1, needle2 ? needle2 : "");
}

static void test_missing_tensor(void **state)
{
	make_variant("missing", "model.layers.3.mlp.up_proj.weight", NULL, NULL);
	expect_open_fails("missing", "model.layers.3.mlp.up_proj.weight", "missing");
}

static void test_config_disagrees(void **state)
{
	make_variant("badcfg", NULL, NULL,
		     "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":160,"
		     "\"num_hidden_layers\":5,\"num_attention_heads\":8,\"num_key_value_heads\":4,\"vocab_size\":512,"
		     "\"tie_word_embeddings\":true}");
	expect_open_fails("badcfg", "gate_proj.weight", "[172, 64]");
	make_variant("fewlayers", NULL, NULL,
		     "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":172,"
		     "\"num_hidden_layers\":4,\"num_attention_heads\":8,\"num_key_value_heads\":4,\"vocab_size\":512,"
		     "\"tie_word_embeddings\":true}");
	expect_open_fails("fewlayers", "5 decoder layers", "num_hidden_layers = 4");
}

static void test_nan_weight(void **state)
{
	make_variant("nan", NULL, "model.layers.2.self_attn.k_proj.weight", NULL);
	expect_open_fails("nan", "model.layers.2.self_attn.k_proj.weight", "5");
}

static void test_windows(void **state)
{
	int32_t stream[100];
	for (int i = 0; i < 100; i++)
		stream[i] = i;
	cloq_windows a, b;
	cloq_err err;
	assert_int_equal(cloq_calib_draw(stream, 100, 8, 10, 7, "s", &a, &err), CLOQ_OK);
	assert_int_equal(cloq_calib_draw(stream, 100, 8, 10, 7, "s", &b, &err), CLOQ_OK);
	assert_memory_equal(a.ids, b.ids, 80 * sizeof(int32_t));
	for (int i = 0; i < 8; i++)
		for (int t = 1; t < 10; t++)
			assert_int_equal(a.ids[i * 10 + t], a.ids[i * 10] + t); /* contiguous windows */
	cloq_windows_free(&b);
	assert_int_equal(cloq_calib_draw(stream, 100, 8, 10, 8, "s", &b, &err), CLOQ_OK);
	assert_memory_not_equal(a.ids, b.ids, 80 * sizeof(int32_t)); /* the seed matters */
	cloq_windows_free(&b);
	assert_int_equal(cloq_windows_check(&a, 50, 512, "s", &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "outside the vocabulary"));
	assert_int_equal(cloq_windows_check(&a, 100, 5, "s", &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "max_position_embeddings"));
	cloq_windows_free(&a);
	assert_int_equal(cloq_calib_draw(stream, 9, 8, 10, 7, "calib.txt", &a, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "only 9 tokens found"));
	assert_non_null(strstr(err.msg, "needs 10"));
	assert_int_equal(cloq_calib_cut(stream, 95, 10, "t", &a, &err), CLOQ_OK);
	assert_int_equal(a.n, 9);
	assert_int_equal(a.ids[89], 89);
	cloq_windows_free(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_stories),
		cmocka_unit_test(test_config_bad),
		cmocka_unit_test(test_config_llama3_qwen2),
		cmocka_unit_test(test_logits_match_reference),
		cmocka_unit_test(test_resumed_passes),
		cmocka_unit_test(test_ppl_reference),
		cmocka_unit_test(test_missing_tensor),
		cmocka_unit_test(test_config_disagrees),
		cmocka_unit_test(test_nan_weight),
		cmocka_unit_test(test_windows),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
