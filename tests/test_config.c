/* test_config.c - strict accounting: the config.json of published checkpoints
 * (fixtures/configs) is accepted; unknown fields, values cloq cannot compute, tensors the
 * architecture does not use, and sliding windows shorter than the sequence are CLOQ_EINPUT naming
 * the field or tensor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cloq_config.h"
#include "cloq_family.h"
#include "cloq_model.h"
#include "cloq_safetensors.h"
#include "cloq_sys.h"

#define MODEL "fixtures/stories260K"
#define CONFIGS "fixtures/configs"

static char tmpdir[256];

static int setup(void **state)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/cloq_test_config.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[512];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	return system(cmd);
}

static char *slurp(const char *path)
{
	char *text = NULL;
	size_t n;
	cloq_err err;
	if (cloq_read_file(path, &text, &n, &err) != CLOQ_OK)
		fail_msg("%s: %s", path, err.msg);
	return text;
}

static void load_fixture(const char *name, cloq_config *c)
{
	char path[512];
	snprintf(path, sizeof path, CONFIGS "/%s", name);
	char *text = slurp(path);
	cloq_err err;
	cloq_err_clear(&err);
	if (cloq_config_parse(text, path, c, &err) != CLOQ_OK)
		fail_msg("%s refused: %s", path, err.msg);
	cloq_free(text);
}

/* Every supported family's published config is accepted, with the values that matter. */
static void test_published_configs(void **state)
{
	cloq_config c;
	cloq_err err;
	load_fixture("llama-2-7b.json", &c);
	assert_int_equal(c.arch, CLOQ_ARCH_LLAMA);
	assert_int_equal(c.kv_heads, 32);
	assert_int_equal(c.sliding_window, 0);
	load_fixture("llama-3.1-8b.json", &c);
	assert_int_equal(c.rope_type, CLOQ_ROPE_LLAMA3);
	assert_false(c.tie_embeddings);
	load_fixture("llama-3.2-1b.json", &c);
	assert_int_equal(c.head_dim, 64);
	assert_true(c.tie_embeddings);
	assert_int_equal(cloq_config_check_seqlen(&c, 2048, "d", &err), CLOQ_OK);
	load_fixture("mistral-7b-v0.1.json", &c);
	assert_int_equal(c.arch, CLOQ_ARCH_MISTRAL);
	assert_int_equal(c.sliding_window, 4096); /* every layer slides, computed at any --seqlen */
	assert_true(c.window_attention);
	for (int l = 0; l < c.layers; l++)
		assert_int_equal(c.layer_sliding[l], 1);
	assert_int_equal(cloq_config_check_seqlen(&c, 32768, "d", &err), CLOQ_OK);
	{ /* a window on a Llama (whose class has none): a relabelled Mistral, refused once active */
		char *l2 = slurp(CONFIGS "/llama-2-7b.json");
		cJSON *r = cJSON_Parse(l2);
		cJSON_AddItemToObject(r, "sliding_window", cJSON_CreateNumber(4096));
		char *ls = cJSON_PrintUnformatted(r);
		cJSON_Delete(r);
		assert_int_equal(cloq_config_parse(ls, "d/config.json", &c, &err), CLOQ_OK);
		assert_false(c.window_attention);
		assert_int_equal(cloq_config_check_seqlen(&c, 4096, "d", &err), CLOQ_OK);
		assert_int_equal(cloq_config_check_seqlen(&c, 4097, "d", &err), CLOQ_EINPUT);
		assert_non_null(strstr(err.msg, "d/config.json: field 'sliding_window' = 4096 is set on a LlamaForCausalLM"));
		cJSON_free(ls);
		cloq_free(l2);
	}
	load_fixture("mistral-7b-v0.3.json", &c);
	assert_int_equal(c.sliding_window, 0);
	assert_int_equal(cloq_config_check_seqlen(&c, 32768, "d", &err), CLOQ_OK);
	load_fixture("qwen2.5-0.5b.json", &c);
	assert_int_equal(c.arch, CLOQ_ARCH_QWEN2);
	assert_true(c.qkv_bias);
	assert_int_equal(c.sliding_window, 0); /* use_sliding_window false */
	assert_int_equal(cloq_config_check_seqlen(&c, 32768, "d", &err), CLOQ_OK);
	load_fixture("qwen2.5-7b.json", &c);
	assert_int_equal(c.sliding_window, 0);
	assert_false(c.tie_embeddings);
}

/* Parse `json` with key `key` set to the JSON `value` (NULL: removed); expect rc, and on failure
 * every needle in the message. */
static void variant(const char *json, const char *key, const char *value, int want, const char *n1, const char *n2)
{
	cJSON *root = cJSON_Parse(json);
	assert_non_null(root);
	cJSON_DeleteItemFromObjectCaseSensitive(root, key);
	if (value) {
		cJSON *v = cJSON_Parse(value);
		assert_non_null(v);
		cJSON_AddItemToObject(root, key, v);
	}
	char *text = cJSON_PrintUnformatted(root);
	cloq_config c;
	cloq_err err;
	cloq_err_clear(&err);
	int rc = cloq_config_parse(text, "x/config.json", &c, &err);
	if (rc != want)
		fail_msg("%s = %s: rc %d, expected %d (%s)", key, value ? value : "(removed)", rc, want, err.msg);
	if (want != CLOQ_OK) {
		if (!strstr(err.msg, "x/config.json") || (n1 && !strstr(err.msg, n1)) || (n2 && !strstr(err.msg, n2)))
			fail_msg("%s = %s: message '%s' lacks '%s' / '%s'", key, value, err.msg, n1 ? n1 : "",
				 n2 ? n2 : "");
	}
	cJSON_free(text);
	cJSON_Delete(root);
}

static void test_must_fail_fields(void **state)
{
	char *s = slurp(MODEL "/config.json");
	variant(s, "foo", "1", CLOQ_EINPUT, "field 'foo' = 1 is not known to cloq", "refusing");
	variant(s, "auto_map", "{\"AutoModel\":\"m.M\"}", CLOQ_EINPUT, "'auto_map'", "not a field of LlamaForCausalLM");
	variant(s, "hidden_act", "\"gelu\"", CLOQ_EINPUT, "'hidden_act' = \"gelu\"", NULL);
	variant(s, "hidden_act", "\"swish\"", CLOQ_OK, NULL, NULL);
	variant(s, "rope_scaling", "{\"type\":\"dynamic\",\"factor\":2.0}", CLOQ_OK, NULL, NULL); /* = default below max_pos */
	variant(s, "rope_scaling", "{\"type\":\"linear\",\"rope_type\":\"dynamic\",\"factor\":2.0}", CLOQ_EINPUT,
		"both 'type' and 'rope_type'", "differ");
	variant(s, "rope_scaling", "{\"type\":\"linear\",\"rope_type\":\"linear\",\"factor\":2.0}", CLOQ_OK, NULL, NULL);
	variant(s, "rope_scaling", "{\"rope_type\":\"dynamic\",\"factor\":2.0,\"original_max_position_embeddings\":4096}",
		CLOQ_EINPUT, "rope_scaling (dynamic) has the key 'original_max_position_embeddings'", NULL);
	{ /* 4.44's Mistral, Qwen2 and Gemma 2 ignore rope_scaling, 4.51's apply it */
		char *mi = slurp(CONFIGS "/mistral-7b-v0.1.json");
		variant(mi, "rope_scaling", "{\"rope_type\":\"linear\",\"factor\":2.0}", CLOQ_EINPUT, "type 'linear'",
			"MistralForCausalLM does not take");
		variant(mi, "rope_scaling", "{\"rope_type\":\"default\"}", CLOQ_OK, NULL, NULL);
		cloq_free(mi);
	}
	variant(s, "rope_scaling", "{\"type\":\"longrope\",\"short_factor\":[1],\"long_factor\":[1]}", CLOQ_EINPUT,
		"type 'longrope'", "LlamaForCausalLM does not take");
	variant(s, "rope_scaling", "{\"rope_type\":\"yarn\",\"factor\":2.0}", CLOQ_EINPUT, "'rope_scaling'", "yarn");
	variant(s, "rope_scaling", "{\"type\":\"linear\",\"factor\":2.0}", CLOQ_OK, NULL, NULL);
	variant(s, "attention_dropout", "0.1", CLOQ_EINPUT, "'attention_dropout' = 0.1", NULL);
	variant(s, "attention_dropout", "0.0", CLOQ_OK, NULL, NULL);
	variant(s, "model_type", "\"qwen3\"", CLOQ_EINPUT, "'model_type' = \"qwen3\"", "LlamaForCausalLM");
	variant(s, "use_sliding_window", "false", CLOQ_EINPUT, "'use_sliding_window'", "not a field of LlamaForCausalLM");
	variant(s, "max_window_layers", "28", CLOQ_EINPUT, "'max_window_layers'", "not a field of LlamaForCausalLM");
	variant(s, "tie_word_embeddings", "\"yes\"", CLOQ_EINPUT, "'tie_word_embeddings'", NULL);
	variant(s, "attention_bias", "1", CLOQ_EINPUT, "'attention_bias'", NULL);
	variant(s, "pretraining_tp", "2", CLOQ_OK, NULL, NULL);
	variant(s, "pretraining_tp", "0", CLOQ_EINPUT, "'pretraining_tp' = 0", NULL);
	variant(s, "sliding_window", "0", CLOQ_EINPUT, "'sliding_window' = 0", NULL);
	variant(s, "sliding_window", "null", CLOQ_OK, NULL, NULL);
	variant(s, "quantization_config", "{\"quant_method\":\"gptq\",\"bits\":4,\"group_size\":128}", CLOQ_OK, NULL,
		NULL);
	/* pretraining_tp > 1 with biases: transformers' sliced forward drops the biases */
	char *b = NULL;
	{
		cJSON *r = cJSON_Parse(s);
		cJSON_AddItemToObject(r, "attention_bias", cJSON_CreateTrue());
		b = cJSON_PrintUnformatted(r);
		cJSON_Delete(r);
	}
	variant(b, "pretraining_tp", "1", CLOQ_OK, NULL, NULL);
	variant(b, "pretraining_tp", "4", CLOQ_EINPUT, "'pretraining_tp' = 4", "biases");
	cJSON_free(b);
	cloq_free(s);

	/* Qwen2: use_mrope, a head_dim of its own, the sliding window only with use_sliding_window
	 * and only when some layer is at or above max_window_layers */
	char *q = slurp(CONFIGS "/qwen2.5-0.5b.json");
	variant(q, "use_mrope", "true", CLOQ_EINPUT, "'use_mrope' = true", NULL);
	variant(q, "head_dim", "128", CLOQ_EINPUT, "'head_dim' = 128", "Qwen3");
	variant(q, "head_dim", "64", CLOQ_OK, NULL, NULL);
	variant(q, "attention_bias", "false", CLOQ_EINPUT, "'attention_bias'", "not a field of Qwen2ForCausalLM");
	cJSON *r = cJSON_Parse(q);
	cJSON_ReplaceItemInObjectCaseSensitive(r, "use_sliding_window", cJSON_CreateTrue());
	cJSON_ReplaceItemInObjectCaseSensitive(r, "sliding_window", cJSON_CreateNumber(16));
	char *qs = cJSON_PrintUnformatted(r);
	cJSON_Delete(r);
	cloq_config c;
	cloq_err err;
	assert_int_equal(cloq_config_parse(qs, "q", &c, &err), CLOQ_OK);
	assert_int_equal(c.sliding_window, 0); /* max_window_layers 24 = num_hidden_layers: no layer slides */
	r = cJSON_Parse(qs);
	cJSON_ReplaceItemInObjectCaseSensitive(r, "max_window_layers", cJSON_CreateNumber(20));
	cJSON_free(qs);
	qs = cJSON_PrintUnformatted(r);
	cJSON_Delete(r);
	assert_int_equal(cloq_config_parse(qs, "q", &c, &err), CLOQ_OK);
	assert_int_equal(c.sliding_window, 16); /* layers 20..23 slide, computed */
	assert_true(c.window_attention);
	for (int l = 0; l < c.layers; l++)
		assert_int_equal(c.layer_sliding[l], l >= 20);
	assert_int_equal(cloq_config_check_seqlen(&c, 64, "dir", &err), CLOQ_OK);
	r = cJSON_Parse(qs); /* layer_types wins over max_window_layers */
	cJSON *types = cJSON_CreateArray();
	for (int l = 0; l < 24; l++)
		cJSON_AddItemToArray(types, cJSON_CreateString(l == 3 ? "sliding_attention" : "full_attention"));
	cJSON_AddItemToObject(r, "layer_types", types);
	cJSON_free(qs);
	qs = cJSON_PrintUnformatted(r);
	cJSON_Delete(r);
	assert_int_equal(cloq_config_parse(qs, "q", &c, &err), CLOQ_OK);
	for (int l = 0; l < c.layers; l++)
		assert_int_equal(c.layer_sliding[l], l == 3);
	variant(qs, "sliding_window", "null", CLOQ_EINPUT, "layer_types' sliding_attention", "'sliding_window' is null");
	variant(qs, "sliding_window", "-4", CLOQ_EINPUT, "'sliding_window' must be a non-negative integer", NULL);
	cJSON_free(qs);
	cloq_free(q);

	/* Qwen3: accepted as itself (head_dim 128 of its own, q/k norms, tied, 7,168 norm
	 * parameters: 28 layers x 2 x 128, which a Llama reading would drop), refused relabelled as
	 * Llama (with and without its model_type) */
	char *q3 = slurp(CONFIGS "/qwen3-0.6b.json");
	cloq_err_clear(&err);
	assert_int_equal(cloq_config_parse(q3, "q3", &c, &err), CLOQ_OK);
	assert_int_equal(c.arch, CLOQ_ARCH_QWEN3);
	assert_int_equal(c.head_dim, 128);
	assert_int_equal(c.qk_norm, 1);
	assert_int_equal(c.qkv_bias + c.o_bias, 0);
	assert_int_equal(c.tie_embeddings, 1);
	assert_int_equal(c.sliding_window, 0);
	/* 28 layers x 15,730,944 + the tied embedding 151936 x 1024 + the final norm = 596,049,920
	 * (the model card: 0.6B, of which 0.44B outside the embedding) */
	assert_true(cloq_config_total_params(&c) == 596049920LL);
	{
		cloq_config c2 = c;
		c2.qk_norm = 0;
		assert_true(cloq_config_total_params(&c) - cloq_config_total_params(&c2) == 7168);
	}
	variant(q3, "attention_bias", "true", CLOQ_OK, NULL, NULL);
	variant(q3, "layer_types", "[\"full_attention\"]", CLOQ_EINPUT, "list of 28 layer types", NULL);
	variant(q3, "use_mrope", "false", CLOQ_EINPUT, "not a field of Qwen3ForCausalLM", NULL);
	r = cJSON_Parse(q3);
	cJSON_ReplaceItemInObjectCaseSensitive(r, "use_sliding_window", cJSON_CreateTrue());
	cJSON_ReplaceItemInObjectCaseSensitive(r, "sliding_window", cJSON_CreateNumber(4096));
	cJSON_ReplaceItemInObjectCaseSensitive(r, "max_window_layers", cJSON_CreateNumber(14));
	qs = cJSON_PrintUnformatted(r);
	cJSON_Delete(r);
	assert_int_equal(cloq_config_parse(qs, "q3", &c, &err), CLOQ_OK);
	assert_int_equal(c.sliding_window, 4096);
	for (int l = 0; l < c.layers; l++)
		assert_int_equal(c.layer_sliding[l], l >= 14);
	assert_int_equal(cloq_config_check_seqlen(&c, 8192, "dir", &err), CLOQ_OK);
	cJSON_free(qs);
	r = cJSON_Parse(q3);
	cJSON *arch = cJSON_CreateArray();
	cJSON_AddItemToArray(arch, cJSON_CreateString("LlamaForCausalLM"));
	cJSON_ReplaceItemInObjectCaseSensitive(r, "architectures", arch);
	char *as_llama = cJSON_PrintUnformatted(r);
	cJSON_Delete(r);
	variant(as_llama, "model_type", "\"qwen3\"", CLOQ_EINPUT, "'model_type' = \"qwen3\"", NULL);
	variant(as_llama, "model_type", NULL, CLOQ_EINPUT, "not a field of LlamaForCausalLM", NULL);
	{ /* Phi-3: fused projections, every layer slides (2047 < 2048), refusals by name */
		char *p3 = slurp(CONFIGS "/phi-3-mini-4k.json");
		assert_int_equal(cloq_config_parse(p3, "p3", &c, &err), CLOQ_OK);
		assert_int_equal(c.arch, CLOQ_ARCH_PHI3);
		assert_true(c.fused && !c.qkv_bias && !c.o_bias && !c.tie_embeddings);
		assert_true(c.rms_eps == 1e-5 && c.sliding_window == 2047 && c.window_attention);
		for (int l = 0; l < c.layers; l++)
			assert_int_equal(c.layer_sliding[l], 1);
		variant(p3, "attention_bias", "true", CLOQ_EINPUT, "'attention_bias' = true", "Phi3ForCausalLM");
		assert_int_equal(c.rotary_dim, 96);
		variant(p3, "partial_rotary_factor", "0.75", CLOQ_OK, NULL, NULL);
		variant(p3, "partial_rotary_factor", "0.01", CLOQ_EINPUT, "'partial_rotary_factor' = 0.01", "even");
		variant(p3, "partial_rotary_factor", "1.5", CLOQ_EINPUT, "'partial_rotary_factor' = 1.5", NULL);
		variant(p3, "head_dim", "128", CLOQ_EINPUT, "'head_dim' = 128", "Phi3ForCausalLM");
		variant(p3, "rope_scaling", "{\"type\":\"longrope\",\"short_factor\":[1],\"long_factor\":[1]}",
			CLOQ_EINPUT, "has 1 short/long factors", "need 48");
		variant(p3, "rope_scaling", "{\"type\":\"linear\",\"factor\":2}", CLOQ_EINPUT, "type 'linear'",
			"Phi3ForCausalLM does not take");
		{ /* Phi-3.5-mini's longrope: 48 factors, original 4096 of 131072 positions */
			char lr[2048] = "{\"type\":\"longrope\",\"short_factor\":[", *e = lr + strlen(lr);
			for (int k = 0; k < 48; k++)
				e += sprintf(e, "%s%g", k ? "," : "", 1.0 + k * 0.01);
			e += sprintf(e, "],\"long_factor\":[");
			for (int k = 0; k < 48; k++)
				e += sprintf(e, "%s%g", k ? "," : "", 1.0 + k * 0.5);
			sprintf(e, "]}");
			cJSON *r3 = cJSON_Parse(p3);
			cJSON_ReplaceItemInObjectCaseSensitive(r3, "rope_scaling", cJSON_Parse(lr));
			cJSON_ReplaceItemInObjectCaseSensitive(r3, "max_position_embeddings", cJSON_CreateNumber(131072));
			char *t3 = cJSON_PrintUnformatted(r3);
			cJSON_Delete(r3);
			assert_int_equal(cloq_config_parse(t3, "p3", &c, &err), CLOQ_OK);
			assert_int_equal(c.rope_type, CLOQ_ROPE_LONGROPE);
			assert_int_equal(c.rope_orig_max_pos, 4096);
			assert_true(fabs(c.rope_attn_factor - sqrt(1.0 + log(32.0) / log(4096.0))) < 1e-15);
			assert_true(c.rope_short[47] == 1.47 && c.rope_long[1] == 1.5);
			variant(t3, "original_max_position_embeddings", "262144", CLOQ_OK, NULL, NULL);
			cJSON_free(t3);
		}
		variant(p3, "rms_norm_eps", NULL, CLOQ_OK, NULL, NULL);
		variant(p3, "use_sliding_window", "true", CLOQ_EINPUT, "not a field of Phi3ForCausalLM", NULL);
		variant(p3, "q_lora_rank", "1", CLOQ_EINPUT, "not known", NULL);
		cloq_free(p3);
	}
	{ /* Gemma 2: its math read, what it does not implement refused */
		char *g2 = slurp(CONFIGS "/gemma-2-2b.json");
		assert_int_equal(cloq_config_parse(g2, "g2", &c, &err), CLOQ_OK);
		assert_int_equal(c.arch, CLOQ_ARCH_GEMMA2);
		assert_true(c.norm_plus_one && c.post_norms && c.gelu_tanh && c.tie_embeddings);
		assert_true(c.attn_softcap == 50.0 && c.final_softcap == 30.0 && c.sliding_window == 4096);
		assert_true(c.attn_scale == 1.0 / 16.0 && c.embed_scale == (float)sqrt(2304.0));
		variant(g2, "hidden_activation", "\"gelu\"", CLOQ_EINPUT, "'hidden_activation' = gelu", NULL);
		variant(g2, "hidden_act", "\"silu\"", CLOQ_EINPUT, "'hidden_act' = \"silu\"", NULL);
		variant(g2, "use_mrope", "false", CLOQ_EINPUT, "not a field of Gemma2ForCausalLM", NULL);
		variant(g2, "attn_logit_softcapping", "null", CLOQ_OK, NULL, NULL);
		variant(g2, "query_pre_attn_scalar", NULL, CLOQ_EINPUT, "query_pre_attn_scalar", "ambiguous");
		variant(g2, "torch_dtype", "\"bfloat16\"", CLOQ_OK, NULL, NULL);
		variant(g2, "sliding_window_size", "4096", CLOQ_OK, NULL, NULL);
		variant(g2, "sliding_window_size", "2048", CLOQ_EINPUT, "'sliding_window_size' = 2048", "ambiguous");
		r = cJSON_Parse(g2);
		cJSON_ReplaceItemInObjectCaseSensitive(r, "torch_dtype", cJSON_CreateString("bfloat16"));
		cJSON_ReplaceItemInObjectCaseSensitive(r, "final_logit_softcapping", cJSON_CreateNull());
		qs = cJSON_PrintUnformatted(r);
		cJSON_Delete(r);
		assert_int_equal(cloq_config_parse(qs, "g2", &c, &err), CLOQ_OK);
		assert_true(c.final_softcap == 0.0);
		assert_true(c.embed_scale == 48.0); /* sqrt(2304) = 48 is a bfloat16 */
		assert_int_equal(cloq_config_check_seqlen(&c, 8192, "dir", &err), CLOQ_OK); /* computed */
		for (int l = 0; l < c.layers; l++)
			assert_int_equal(c.layer_sliding[l], l % 2 == 0);
		cJSON_free(qs);
		cloq_free(g2);
	}
	{ /* Gemma 3 (text): q/k norms, no caps, 5 of every 6 layers sliding (computed, not refused) */
		char *g3 = slurp(CONFIGS "/gemma-3-1b.json");
		assert_int_equal(cloq_config_parse(g3, "g3", &c, &err), CLOQ_OK);
		assert_int_equal(c.arch, CLOQ_ARCH_GEMMA3);
		assert_true(c.qk_norm && c.norm_plus_one && c.post_norms && c.window_attention);
		assert_true(c.attn_softcap == 0.0 && c.final_softcap == 0.0 && c.sliding_window == 512);
		assert_true(c.rope_local_theta == 10000.0 && c.rope_theta == 1e6);
		for (int l = 0; l < 26; l++)
			assert_int_equal(c.layer_sliding[l], (l + 1) % 6 != 0);
		assert_int_equal(cloq_config_check_seqlen(&c, 8192, "dir", &err), CLOQ_OK);
		variant(g3, "use_bidirectional_attention", "true", CLOQ_EINPUT, "bidirectional", NULL);
		variant(g3, "attn_logit_softcapping", "50.0", CLOQ_EINPUT, "ignores it", NULL);
		variant(g3, "sliding_window_pattern", "2", CLOQ_OK, NULL, NULL);
		variant(g3, "query_pre_attn_scalar", NULL, CLOQ_EINPUT, "ambiguous", NULL);
		cloq_free(g3);
	}
	cJSON_free(as_llama);
	cloq_free(q3);
}

/* ---- tensors: a copy of the fixture with tensors added or removed ------------------------ */
typedef struct extra {
	const char *name;
	int ndim;
	int64_t shape[2];
	const char *copy_of; /* fill with this tensor's values (same shape), else 0.5f */
	int poke;            /* with copy_of: add 1 to element 7 */
} extra;

static void make_dir(const char *name, const char *drop, const extra *ex, int nex, const char *config_json)
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
		if (!(drop && !strcmp(t->name, drop)))
			assert_int_equal(cloq_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, &err), CLOQ_OK);
	}
	for (int e = 0; e < nex; e++)
		assert_int_equal(cloq_st_writer_add(w, ex[e].name, CLOQ_DT_F32, ex[e].ndim, ex[e].shape, &err), CLOQ_OK);
	assert_int_equal(cloq_st_writer_begin(w, &err), CLOQ_OK);
	size_t k = 0;
	for (size_t i = 0; i < cloq_st_count(src); i++) {
		const cloq_st_tensor *t = cloq_st_tensor_at(src, i);
		if (drop && !strcmp(t->name, drop))
			continue;
		void *buf = malloc(t->nbytes);
		assert_int_equal(cloq_st_read_raw(src, t, buf, &err), CLOQ_OK);
		assert_int_equal(cloq_st_writer_write(w, k++, buf, t->nbytes, &err), CLOQ_OK);
		free(buf);
	}
	for (int e = 0; e < nex; e++) {
		size_t n = (size_t)ex[e].shape[0] * (ex[e].ndim == 2 ? (size_t)ex[e].shape[1] : 1);
		float *buf = malloc(n * sizeof(float));
		if (ex[e].copy_of) {
			const cloq_st_tensor *t = cloq_st_find(src, ex[e].copy_of);
			assert_non_null(t);
			assert_int_equal(t->nelem, n);
			assert_int_equal(cloq_st_read_f32(src, t, buf, &err), CLOQ_OK);
			if (ex[e].poke)
				buf[7] += 1.0f;
		} else {
			for (size_t i = 0; i < n; i++)
				buf[i] = 0.5f;
		}
		assert_int_equal(cloq_st_writer_write(w, k++, buf, n * sizeof(float), &err), CLOQ_OK);
		free(buf);
	}
	assert_int_equal(cloq_st_writer_commit(w, &err), CLOQ_OK);
	cloq_st_writer_free(w);
	cloq_st_close(src);
}

static void expect_open(const char *name, int want, const char *n1, const char *n2)
{
	char dir[512];
	snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
	cloq_err err;
	cloq_err_clear(&err);
	cloq_model *m = NULL;
	int rc = cloq_model_open(dir, &m, &err);
	cloq_model_close(m);
	if (rc != want)
		fail_msg("%s: rc %d, expected %d (%s)", name, rc, want, err.msg);
	if (want != CLOQ_OK && ((n1 && !strstr(err.msg, n1)) || (n2 && !strstr(err.msg, n2))))
		fail_msg("%s: message '%s' lacks '%s' / '%s'", name, err.msg, n1 ? n1 : "", n2 ? n2 : "");
}

static void test_tensor_accounting(void **state)
{
	/* Qwen3's q/k norms in a LlamaForCausalLM checkpoint */
	extra qn[] = {{"model.layers.0.self_attn.q_norm.weight", 1, {8, 0}, NULL, 0},
		      {"model.layers.0.self_attn.k_norm.weight", 1, {8, 0}, NULL, 0}};
	make_dir("qnorm", NULL, qn, 2, NULL);
	expect_open("qnorm", CLOQ_EINPUT, "/qnorm/model.safetensors: tensor 'model.layers.0.self_attn.",
		    "is not used by LlamaForCausalLM (q/k norms are Qwen3's; cloq would drop it");
	/* any other tensor */
	extra other[] = {{"model.extra_projection.weight", 2, {4, 64}, NULL, 0}};
	make_dir("extra", NULL, other, 1, NULL);
	expect_open("extra", CLOQ_EINPUT, "tensor 'model.extra_projection.weight' is not used by LlamaForCausalLM",
		    "different model");
	/* RoPE inverse frequencies: dropped by transformers by design, accepted with their shape */
	extra inv[] = {{"model.layers.0.self_attn.rotary_emb.inv_freq", 1, {4, 0}, NULL, 0},
		       {"model.layers.4.self_attn.rotary_emb.inv_freq", 1, {4, 0}, NULL, 0}};
	make_dir("invfreq", NULL, inv, 2, NULL);
	expect_open("invfreq", CLOQ_OK, NULL, NULL);
	extra inv_bad[] = {{"model.layers.0.self_attn.rotary_emb.inv_freq", 1, {5, 0}, NULL, 0}};
	make_dir("invfreq_bad", NULL, inv_bad, 1, NULL);
	expect_open("invfreq_bad", CLOQ_EINPUT, "rotary_emb.inv_freq' is not used", NULL);
	/* tied embeddings with a stored lm_head: accepted when it is the embedding, else refused */
	extra head_same[] = {{"lm_head.weight", 2, {512, 64}, "model.embed_tokens.weight", 0}};
	make_dir("head_same", NULL, head_same, 1, NULL);
	expect_open("head_same", CLOQ_OK, NULL, NULL);
	extra head_diff[] = {{"lm_head.weight", 2, {512, 64}, "model.embed_tokens.weight", 1}};
	make_dir("head_diff", NULL, head_diff, 1, NULL);
	expect_open("head_diff", CLOQ_EINPUT, "tensor 'lm_head.weight' differs from model.embed_tokens.weight (row 0, column 7)",
		    "tie_word_embeddings = true");
	/* untied: no lm_head is refused (transformers would initialise it at random) */
	char *s = slurp(MODEL "/config.json");
	cJSON *r = cJSON_Parse(s);
	cJSON_ReplaceItemInObjectCaseSensitive(r, "tie_word_embeddings", cJSON_CreateFalse());
	char *untied = cJSON_Print(r);
	cJSON_Delete(r);
	make_dir("untied_nohead", NULL, NULL, 0, untied);
	expect_open("untied_nohead", CLOQ_EINPUT, "'lm_head.weight' is missing", "tie_word_embeddings = false");
	make_dir("untied_head", NULL, head_diff, 1, untied);
	expect_open("untied_head", CLOQ_OK, NULL, NULL);
	cJSON_free(untied);
	/* an unknown config field reaches cloq_model_open too; so does quantization_config */
	r = cJSON_Parse(s);
	cJSON_AddItemToObject(r, "foo", cJSON_CreateNumber(1));
	char *foo = cJSON_Print(r);
	cJSON_Delete(r);
	make_dir("foo", NULL, NULL, 0, foo);
	expect_open("foo", CLOQ_EINPUT, "config.json: field 'foo' = 1 is not known to cloq", NULL);
	cJSON_free(foo);
	r = cJSON_Parse(s);
	cJSON_AddItemToObject(r, "quantization_config", cJSON_Parse("{\"quant_method\":\"gptq\",\"bits\":4,\"group_size\":32}"));
	char *qc = cJSON_Print(r);
	cJSON_Delete(r);
	make_dir("quantized", NULL, NULL, 0, qc);
	expect_open("quantized", CLOQ_EINPUT, "'quantization_config'", "already quantized");
	cJSON_free(qc);
	cloq_free(s);
}


/* The parameter count of each bundled published config (fixtures/configs/published_counts.txt,
 * shared with tests/e2e/inspect_configs.sh, which checks what `cloq inspect` prints) equals the
 * count the model's Hugging Face page gives: exact, tied embeddings counted once. */
static void test_published_param_counts(void **state)
{
	(void)state;
	FILE *f = fopen(CONFIGS "/published_counts.txt", "r");
	assert_non_null(f);
	char line[256], file[128];
	long long want;
	int n = 0;
	while (fgets(line, sizeof line, f)) {
		if (line[0] == '#' || sscanf(line, "%127s %lld", file, &want) != 2)
			continue;
		char path[256];
		snprintf(path, sizeof path, CONFIGS "/%s", file);
		char *text = slurp(path);
		cloq_config c;
		cloq_err err;
		cloq_err_clear(&err);
		if (cloq_config_parse(text, path, &c, &err) != CLOQ_OK)
			fail_msg("%s: %s", path, err.msg);
		if (cloq_config_total_params(&c) != want)
			fail_msg("%s: %lld parameters, published %lld", path, cloq_config_total_params(&c), want);
		cloq_free(text);
		n++;
	}
	fclose(f);
	assert_true(n >= 17);
}

/* The family table (src/model/family_*.c) is consistent: names unique and each round-trips
 * through the lookups; no family re-lists a shared key; each family's published or generated
 * config parses as that family; and a family's defaults are its transformers config class's. */
static void test_family_table(void **state)
{
	(void)state;
	int n = 0;
	for (const cloq_family *const *f = cloq_families; *f; f++, n++) {
		assert_ptr_equal(cloq_family_of_arch((*f)->arch_name), *f);
		assert_ptr_equal(cloq_family_of_model_type((*f)->model_type), *f);
		assert_ptr_equal(cloq_family_of((*f)->arch), *f);
		for (int t = 0; t < 2; t++) /* its own keys, then those of a rule it shares */
		for (const cloq_config_key *k = t ? (*f)->rule_keys : (*f)->keys; k && k->name; k++) {
			static const char *const shared[] = {"hidden_size", "sliding_window", "rope_scaling", "torch_dtype",
							     "hidden_act", "tie_word_embeddings"};
			for (size_t i = 0; i < sizeof shared / sizeof shared[0]; i++)
				if (!strcmp(k->name, shared[i]))
					fail_msg("%s re-lists the shared key %s", (*f)->arch_name, k->name);
			assert_non_null(k->why);
		}
		/* the smallest config of the family: its required keys only */
		char json[768], more[256] = "";
		for (int t = 0; t < 2; t++)
		for (const cloq_config_key *k = t ? (*f)->rule_keys : (*f)->keys; k && k->name; k++) {
			static const struct {
				const char *key, *text;
			} req[] = {{"query_pre_attn_scalar", ", \"query_pre_attn_scalar\": 16"},
				   {"num_local_experts", ", \"num_local_experts\": 4"},
				   {"num_experts", ", \"num_experts\": 4"},
				   {"num_experts_per_tok", ", \"num_experts_per_tok\": 2"},
				   {"moe_intermediate_size", ", \"moe_intermediate_size\": 32"},
				   {"shared_expert_intermediate_size", ", \"shared_expert_intermediate_size\": 48"}};
			for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
				if (!strcmp(k->name, req[i].key))
					strcat(more, req[i].text);
		}
		snprintf(json, sizeof json,
			 "{\"architectures\": [\"%s\"], \"hidden_size\": 64, \"intermediate_size\": 96, "
			 "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
			 "\"vocab_size\": 512%s}",
			 (*f)->arch_name, more);
		cloq_config c;
		cloq_err err;
		cloq_err_clear(&err);
		if (cloq_config_parse(json, "min", &c, &err) != CLOQ_OK)
			fail_msg("%s: %s", (*f)->arch_name, err.msg);
		assert_int_equal(c.arch, (*f)->arch);
		assert_true(c.rms_eps == (*f)->rms_eps);
		assert_int_equal(c.tie_embeddings, (*f)->tie_embeddings);
		assert_int_equal(c.fused, (*f)->fused);
	}
	assert_int_equal(n, 10);
	{ /* a published mixture of experts: its sizes; use_sliding_window refused (releases disagree) */
		char *mq = slurp(CONFIGS "/qwen3-30b-a3b.json");
		cloq_config c3;
		cloq_err e3;
		assert_int_equal(cloq_config_parse(mq, "mq", &c3, &e3), CLOQ_OK);
		assert_true(c3.moe == 128 && c3.moe_topk == 8 && c3.moe_inter == 768 && c3.moe_norm_topk && c3.qk_norm);
		assert_true(cloq_layer_is_moe(&c3, 0) && cloq_layer_is_moe(&c3, 47) && !c3.moe_shared_inter);
		variant(mq, "use_sliding_window", "true", CLOQ_EINPUT, "'use_sliding_window' = true", "ambiguous");
		variant(mq, "num_experts_per_tok", "129", CLOQ_EINPUT, "top-129", NULL);
		variant(mq, "mlp_only_layers", "[0, 47]", CLOQ_OK, NULL, NULL);
		variant(mq, "mlp_only_layers", "[48]", CLOQ_EINPUT, "'mlp_only_layers' holds 48", NULL);
		variant(mq, "num_experts", NULL, CLOQ_EINPUT, "required field 'num_experts'", NULL);
		cloq_free(mq);
	}
	cloq_config c;
	cloq_err err;
	/* num_key_value_heads absent: MistralConfig's 8, LlamaConfig's num_attention_heads, Gemma refused */
	assert_int_equal(cloq_config_parse("{\"architectures\": [\"MistralForCausalLM\"], \"hidden_size\": 4096, "
					   "\"intermediate_size\": 14336, \"num_hidden_layers\": 1, "
					   "\"num_attention_heads\": 32, \"vocab_size\": 32000}", "m", &c, &err), CLOQ_OK);
	assert_int_equal(c.kv_heads, 8);
	assert_int_equal(cloq_config_parse("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 4096, "
					   "\"intermediate_size\": 14336, \"num_hidden_layers\": 1, "
					   "\"num_attention_heads\": 32, \"vocab_size\": 32000}", "l", &c, &err), CLOQ_OK);
	assert_int_equal(c.kv_heads, 32);
	assert_int_equal(cloq_config_parse("{\"architectures\": [\"Gemma2ForCausalLM\"], \"hidden_size\": 64, "
					   "\"intermediate_size\": 96, \"num_hidden_layers\": 1, \"num_attention_heads\": 4, "
					   "\"vocab_size\": 512, \"query_pre_attn_scalar\": 16}", "g/config.json", &c, &err),
			 CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "g/config.json: Gemma2ForCausalLM without 'num_key_value_heads'"));
	/* Gemma 2 with its window turned off: the even layers slide in every release, so refused */
	assert_int_equal(cloq_config_parse("{\"architectures\": [\"Gemma2ForCausalLM\"], \"hidden_size\": 64, "
					   "\"intermediate_size\": 96, \"num_hidden_layers\": 1, \"num_attention_heads\": 4, "
					   "\"num_key_value_heads\": 2, \"vocab_size\": 512, \"query_pre_attn_scalar\": 16, "
					   "\"sliding_window\": null}", "g", &c, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "'sliding_window' is null"));
	/* a key of another family names that family */
	assert_int_equal(cloq_config_parse("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, "
					   "\"intermediate_size\": 96, \"num_hidden_layers\": 1, \"num_attention_heads\": 4, "
					   "\"vocab_size\": 512, \"embd_pdrop\": 0.0}", "l", &c, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "'embd_pdrop' = 0 is not a field of LlamaForCausalLM"));
	assert_non_null(strstr(err.msg, "Phi3ForCausalLM's has"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_published_configs),
		cmocka_unit_test(test_must_fail_fields),
		cmocka_unit_test(test_tensor_accounting),
		cmocka_unit_test(test_published_param_counts),
		cmocka_unit_test(test_family_table),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
