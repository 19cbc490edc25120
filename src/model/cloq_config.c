/* cloq_config.c - config.json parsing (see cloq_config.h). */
#include "cloq_config.h"

#include "cloq_dtype.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cloq_sys.h"

static int get_int(const cJSON *root, const char *key, int required, int dflt, int *out,
		   const char *path, cloq_err *err)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
	if (!v || cJSON_IsNull(v)) {
		if (required)
			return cloq_err_set(err, CLOQ_EINPUT, "%s: required field '%s' is missing", path, key);
		*out = dflt;
		return CLOQ_OK;
	}
	if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
	    v->valuedouble > 1e9)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: field '%s' must be a non-negative integer", path, key);
	*out = (int)v->valuedouble;
	return CLOQ_OK;
}

static int get_num(const cJSON *root, const char *key, int required, double dflt, double *out,
		   const char *path, cloq_err *err)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
	if (!v || cJSON_IsNull(v)) {
		if (required)
			return cloq_err_set(err, CLOQ_EINPUT, "%s: required field '%s' is missing", path, key);
		*out = dflt;
		return CLOQ_OK;
	}
	if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
		return cloq_err_set(err, CLOQ_EINPUT, "%s: field '%s' must be a number", path, key);
	*out = v->valuedouble;
	return CLOQ_OK;
}

/* A boolean field: absent or null gives dflt; anything but true/false is refused. */
static int get_bool(const cJSON *root, const char *key, int dflt, int *out, const char *path, cloq_err *err)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
	if (!v || cJSON_IsNull(v)) {
		*out = dflt;
		return CLOQ_OK;
	}
	if (!cJSON_IsBool(v))
		return cloq_err_set(err, CLOQ_EINPUT, "%s: field '%s' must be true or false", path, key);
	*out = cJSON_IsTrue(v);
	return CLOQ_OK;
}

/* ---- strict accounting of config.json's keys --------------------------------------------------
 * Every top-level key is listed here, or refused. IMPL: parsed by cloq_config_parse, which
 * refuses the values it cannot compute. HARMLESS: no effect on the forward pass of a causal LM at
 * inference. `archs` is the families whose transformers config class defines the key: a key of
 * another family (Qwen2's use_sliding_window in a LlamaForCausalLM config) means the checkpoint is
 * probably not what its label says, and is refused like an unknown one. */
#define A_L (1u << CLOQ_ARCH_LLAMA)
#define A_M (1u << CLOQ_ARCH_MISTRAL)
#define A_Q (1u << CLOQ_ARCH_QWEN2)
#define A_Q3 (1u << CLOQ_ARCH_QWEN3)
#define A_G2 (1u << CLOQ_ARCH_GEMMA2)
#define A_G3 (1u << CLOQ_ARCH_GEMMA3)
#define A_P3 (1u << CLOQ_ARCH_PHI3)
#define A_G (A_G2 | A_G3)
#define A_ALL (A_L | A_M | A_Q | A_Q3 | A_G2 | A_G3 | A_P3)
enum field_kind { F_IMPL, F_HARMLESS };
static const struct field_rule {
	const char *name;
	unsigned archs;
	enum field_kind kind;
	const char *why;
} field_rules[] = {
	{"architectures", A_ALL, F_IMPL, "selects the family"},
	{"model_type", A_ALL, F_IMPL, "must name the same family as architectures"},
	{"hidden_size", A_ALL, F_IMPL, "shapes"},
	{"intermediate_size", A_ALL, F_IMPL, "shapes"},
	{"num_hidden_layers", A_ALL, F_IMPL, "shapes"},
	{"num_attention_heads", A_ALL, F_IMPL, "shapes, attention"},
	{"num_key_value_heads", A_ALL, F_IMPL, "grouped-query attention"},
	{"head_dim", A_ALL, F_IMPL, "shapes, attention (Qwen2: must equal hidden_size / heads)"},
	{"vocab_size", A_ALL, F_IMPL, "shapes"},
	{"max_position_embeddings", A_ALL, F_IMPL, "upper bound of --seqlen"},
	{"rms_norm_eps", A_ALL, F_IMPL, "RMSNorm epsilon"},
	{"rope_theta", A_ALL, F_IMPL, "RoPE base"},
	{"rope_scaling", A_ALL, F_IMPL, "default, linear, llama3; others refused"},
	{"tie_word_embeddings", A_ALL, F_IMPL, "lm_head is the embedding"},
	{"hidden_act", A_ALL, F_IMPL, "silu (swish) only"},
	{"attention_bias", A_L | A_Q3 | A_G | A_P3, F_IMPL, "q/k/v/o biases (Phi-3: must be false)"},
	{"hidden_activation", A_G, F_IMPL, "Gemma: gelu_pytorch_tanh only"},
	{"query_pre_attn_scalar", A_G, F_IMPL, "Gemma: scores scaled by its -1/2 power"},
	{"attn_logit_softcapping", A_G, F_IMPL, "Gemma: scores soft-capped, cap tanh(s / cap)"},
	{"final_logit_softcapping", A_G, F_IMPL, "Gemma: logits soft-capped"},
	{"cache_implementation", A_G, F_HARMLESS, "Gemma: the KV cache kind at generation"},
	{"rope_local_base_freq", A_G3, F_IMPL, "Gemma 3: RoPE base of the sliding layers"},
	{"sliding_window_size", A_G2, F_IMPL, "Gemma 2's release configs: an old name transformers never reads; must equal sliding_window"},
	{"sliding_window_pattern", A_G3, F_IMPL, "Gemma 3: every pattern-th layer is global"},
	{"use_bidirectional_attention", A_G3, F_IMPL, "Gemma 3 (embedding models): must be false"},
	{"mlp_bias", A_L, F_IMPL, "gate/up/down biases"},
	{"partial_rotary_factor", A_P3, F_IMPL, "Phi-3: RoPE on part of each head; only 1.0"},
	{"original_max_position_embeddings", A_P3, F_IMPL, "Phi-3: longrope's switch point (longrope refused)"},
	{"auto_map", A_P3, F_HARMLESS, "Phi-3: names the remote code that transformers' built-in Phi3ForCausalLM "
				     "(the same math, upstreamed from it) replaces unless trust_remote_code"},
	{"embd_pdrop", A_P3, F_HARMLESS, "Phi-3: dropout of the embeddings, off at inference"},
	{"resid_pdrop", A_P3, F_HARMLESS, "Phi-3: dropout of the residual branches, off at inference"},
	{"pretraining_tp", A_L, F_IMPL, "sliced matmuls, same math; refused with biases, which it drops"},
	{"attention_dropout", A_ALL, F_IMPL, "inference: must be 0"},
	{"sliding_window", A_ALL, F_IMPL, "computed per layer; on a Llama (no window there) refused when shorter than --seqlen"},
	{"use_sliding_window", A_Q | A_Q3, F_IMPL, "Qwen2/3: turns sliding_window on"},
	{"max_window_layers", A_Q | A_Q3, F_IMPL, "Qwen2/3: layers below it attend fully"},
	{"layer_types", A_Q | A_Q3 | A_G, F_IMPL, "Qwen2/3, Gemma 2 (transformers >= 4.54): per layer full or sliding attention"},
	{"use_mrope", A_Q, F_IMPL, "Qwen2-VL's multimodal RoPE: must be false"},
	{"quantization_config", A_ALL, F_IMPL, "an export of cloq's (the export reader); cloq_model_open refuses it"},
	{"bos_token_id", A_ALL, F_IMPL, "token id, used by the tokenizer side only"},
	{"eos_token_id", A_ALL, F_IMPL, "token id, used by the tokenizer side only"},
	{"torch_dtype", A_ALL, F_IMPL, "storage dtype; the safetensors dtypes are what is read"},
	{"dtype", A_ALL, F_HARMLESS, "newer name of torch_dtype; the safetensors dtypes are what is read"},
	{"pad_token_id", A_ALL, F_HARMLESS, "token id; cloq never pads"},
	{"_name_or_path", A_ALL, F_HARMLESS, "where the config was loaded from"},
	{"transformers_version", A_ALL, F_HARMLESS, "the version that wrote the file"},
	{"initializer_range", A_ALL, F_HARMLESS, "random init of untrained weights; all are loaded"},
	{"use_cache", A_ALL, F_HARMLESS, "KV cache at generation; no effect on logits"},
	{"output_attentions", A_ALL, F_HARMLESS, "what forward returns, not what it computes"},
	{"output_hidden_states", A_ALL, F_HARMLESS, "what forward returns, not what it computes"},
	{"return_dict", A_ALL, F_HARMLESS, "what forward returns, not what it computes"},
	{"tokenizer_class", A_ALL, F_HARMLESS, "names the tokenizer; cloq reads tokenizer.json"},
	{"keys_to_ignore_at_inference", A_ALL, F_HARMLESS, "outputs generation drops, not what is computed"},
	{"unsloth_version", A_ALL, F_HARMLESS, "the version of the fine-tuning tool that wrote the file"},
};
#define N_FIELD_RULES (sizeof field_rules / sizeof field_rules[0])

static const char *arch_model_type[] = {"llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3"};

/* The value of a JSON item, compact and cut short, for messages. */
static void json_short(const cJSON *v, char *buf, size_t cap)
{
	char *s = cJSON_PrintUnformatted(v);
	snprintf(buf, cap, "%s", s ? s : "?");
	if (s && strlen(s) >= cap && cap > 4)
		memcpy(buf + cap - 4, "...", 4);
	cJSON_free(s);
}

static int check_known_fields(const cJSON *root, const char *path, const cloq_config *cfg, cloq_err *err)
{
	char val[80];
	for (const cJSON *it = root->child; it; it = it->next) {
		const struct field_rule *r = NULL;
		for (size_t i = 0; i < N_FIELD_RULES && !r; i++)
			if (!strcmp(field_rules[i].name, it->string))
				r = &field_rules[i];
		json_short(it, val, sizeof val);
		if (!r)
			return cloq_err_set(err, CLOQ_EINPUT,
					    "%s: field '%s' = %s is not known to cloq; refusing rather than guessing its effect",
					    path, it->string, val);
		if (!(r->archs & (1u << cfg->arch)))
			return cloq_err_set(err, CLOQ_EINPUT,
					    "%s: field '%s' = %s is not a field of %s (transformers' %s config has no such "
					    "key): the checkpoint may be another family; refusing rather than guessing its effect",
					    path, it->string, val, cfg->arch_name, arch_model_type[cfg->arch]);
	}
	return CLOQ_OK;
}

/* sliding_window, use_sliding_window, max_window_layers, layer_types -> cfg->sliding_window (0:
 * inactive) and, where cloq computes the window, cfg->layer_sliding[] with cfg->window_attention.
 * A sliding layer's query i attends to keys j with i - window < j <= i: the window includes the
 * query itself, as transformers' eager and sdpa masks (4.44 Gemma 2, 4.51 Mistral/Qwen2/Phi-3,
 * and the layer_types masks after them) build it. Per family:
 *   Mistral, Phi-3: every layer, whenever sliding_window is set;
 *   Qwen2/3: only with use_sliding_window, and then the layers >= max_window_layers
 *            (Qwen2Config's default 28), as the original attention and layer_types have it;
 *   Gemma 2: the even layers (Gemma2Config's default window 4096); Gemma 3: parsed with its
 *            pattern in cloq_config_parse;
 *   Llama:   LlamaForCausalLM has no window; a config carrying one is probably a relabelled
 *            Mistral, so an active window is refused by cloq_config_check_seqlen.
 * layer_types, when given, is what transformers >= 4.54 reads per layer, and wins. */
static int parse_sliding_window(const cJSON *root, const char *path, cloq_config *cfg, cloq_err *err)
{
	int rc = CLOQ_OK, w = 0, use = 0, mwl = 28;
	if (cfg->arch == CLOQ_ARCH_GEMMA3) /* parsed with its pattern and local RoPE base */
		return CLOQ_OK;
	const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
	CLOQ_TRY(get_int(root, "sliding_window", 0, 0, &w, path, err));
	CLOQ_FAIL_IF(sw && !cJSON_IsNull(sw) && w <= 0, err, CLOQ_EINPUT,
		     "%s: field 'sliding_window' = %d: a window of no tokens is not a model cloq can compute", path, w);
	if (cfg->arch == CLOQ_ARCH_GEMMA2 && !sw)
		w = 4096;
	if (cfg->arch == CLOQ_ARCH_GEMMA2 && cJSON_GetObjectItemCaseSensitive(root, "sliding_window_size")) {
		int old;
		CLOQ_TRY(get_int(root, "sliding_window_size", 1, 0, &old, path, err));
		CLOQ_FAIL_IF(old != w, err, CLOQ_EINPUT,
			     "%s: field 'sliding_window_size' = %d but 'sliding_window' = %d: transformers reads only "
			     "sliding_window, so which window the checkpoint was trained with is ambiguous; refusing",
			     path, old, w);
	}
	if (cfg->arch == CLOQ_ARCH_LLAMA) { /* refused when active, never computed */
		cfg->sliding_window = w;
		return CLOQ_OK;
	}
	int qwen = cfg->arch == CLOQ_ARCH_QWEN2 || cfg->arch == CLOQ_ARCH_QWEN3;
	if (qwen) {
		CLOQ_TRY(get_bool(root, "use_sliding_window", 0, &use, path, err));
		CLOQ_TRY(get_int(root, "max_window_layers", 0, 28, &mwl, path, err));
	}
	CLOQ_FAIL_IF(cfg->layers > CLOQ_MAX_LAYERS, err, CLOQ_EINPUT, "%s: %d layers, more than cloq's %d", path,
		     cfg->layers, CLOQ_MAX_LAYERS);
	for (int l = 0; l < cfg->layers; l++)
		cfg->layer_sliding[l] = w > 0 && (qwen ? use && l >= mwl : cfg->arch == CLOQ_ARCH_GEMMA2 ? l % 2 == 0 : 1);
	const cJSON *lt = cJSON_GetObjectItemCaseSensitive(root, "layer_types");
	if (lt && !cJSON_IsNull(lt)) {
		CLOQ_FAIL_IF(!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != cfg->layers, err, CLOQ_EINPUT,
			     "%s: field 'layer_types' must be a list of %d layer types", path, cfg->layers);
		int l = 0;
		for (const cJSON *e = lt->child; e; e = e->next, l++) {
			CLOQ_FAIL_IF(!cJSON_IsString(e) || (strcmp(e->valuestring, "full_attention") &&
							   strcmp(e->valuestring, "sliding_attention")),
				     err, CLOQ_EINPUT,
				     "%s: field 'layer_types' holds %s; cloq knows full_attention and sliding_attention",
				     path, cJSON_IsString(e) ? e->valuestring : "a non-string");
			cfg->layer_sliding[l] = !strcmp(e->valuestring, "sliding_attention");
			CLOQ_FAIL_IF(cfg->layer_sliding[l] && w <= 0, err, CLOQ_EINPUT,
				     "%s: 'layer_types' has sliding_attention layers but 'sliding_window' is null", path);
		}
	}
	int any = 0;
	for (int l = 0; l < cfg->layers; l++)
		any |= cfg->layer_sliding[l];
	cfg->sliding_window = any ? w : 0;
	cfg->window_attention = any;
fail:
	return rc;
}

int cloq_config_check_seqlen(const cloq_config *cfg, int seqlen, const char *dir, cloq_err *err)
{
	if (cfg->window_attention) /* computed, not refused */
		return CLOQ_OK;
	if (cfg->sliding_window > 0 && seqlen > cfg->sliding_window)
		return cloq_err_set(err, CLOQ_EINPUT,
				    "%s/config.json: field 'sliding_window' = %d is set on a LlamaForCausalLM, whose "
				    "transformers class has no sliding window, and is shorter than the %d-token windows "
				    "(--seqlen): the checkpoint is probably a relabelled Mistral, and the two compute "
				    "different models; fix 'architectures', or use --seqlen %d or less",
				    dir, cfg->sliding_window, seqlen, cfg->sliding_window);
	return CLOQ_OK;
}

static int parse_rope_scaling(const cJSON *rs, const char *path, cloq_config *cfg, cloq_err *err)
{
	int rc = CLOQ_OK;
	if (!rs || cJSON_IsNull(rs))
		return CLOQ_OK;
	CLOQ_FAIL_IF(!cJSON_IsObject(rs), err, CLOQ_EINPUT, "%s: 'rope_scaling' must be an object or null", path);
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
	if (!cJSON_IsString(t))
		t = cJSON_GetObjectItemCaseSensitive(rs, "type");
	CLOQ_FAIL_IF(!cJSON_IsString(t), err, CLOQ_EINPUT, "%s: 'rope_scaling' has no 'rope_type'", path);
	CLOQ_TRY(get_num(rs, "factor", 0, 1.0, &cfg->rope_factor, path, err));
	if (!strcmp(t->valuestring, "default")) {
		cfg->rope_type = CLOQ_ROPE_DEFAULT;
	} else if (!strcmp(t->valuestring, "linear")) {
		cfg->rope_type = CLOQ_ROPE_LINEAR;
	} else if (!strcmp(t->valuestring, "llama3")) {
		cfg->rope_type = CLOQ_ROPE_LLAMA3;
		CLOQ_TRY(get_num(rs, "low_freq_factor", 1, 0, &cfg->rope_low_freq, path, err));
		CLOQ_TRY(get_num(rs, "high_freq_factor", 1, 0, &cfg->rope_high_freq, path, err));
		CLOQ_TRY(get_int(rs, "original_max_position_embeddings", 1, 0, &cfg->rope_orig_max_pos, path, err));
		CLOQ_FAIL_IF(cfg->rope_high_freq <= cfg->rope_low_freq || cfg->rope_orig_max_pos <= 0, err,
			     CLOQ_EINPUT, "%s: rope_scaling (llama3): need high_freq_factor > low_freq_factor "
			     "and original_max_position_embeddings > 0", path);
	} else {
		CLOQ_FAIL_IF(1, err, CLOQ_EINPUT,
			     "%s: field 'rope_scaling' has type '%s', which cloq does not implement (supported: default, "
			     "linear, llama3); refusing rather than computing a different model",
			     path, t->valuestring);
	}
	CLOQ_FAIL_IF(cfg->rope_factor <= 0, err, CLOQ_EINPUT, "%s: rope_scaling.factor must be > 0", path);
fail:
	return rc;
}

int cloq_config_parse(const char *json, const char *path, cloq_config *cfg, cloq_err *err)
{
	int rc = CLOQ_OK;
	memset(cfg, 0, sizeof *cfg);
	cJSON *root = cJSON_Parse(json);
	if (!root) {
		const char *at = cJSON_GetErrorPtr();
		long off = at ? (long)(at - json) : -1;
		return cloq_err_set(err, CLOQ_EINPUT, "%s: invalid JSON near byte offset %ld", path, off);
	}
	CLOQ_FAIL_IF(!cJSON_IsObject(root), err, CLOQ_EINPUT, "%s: top level must be a JSON object", path);

	const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
	const cJSON *a0 = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
	const char *arch = cJSON_IsString(a0) ? a0->valuestring : NULL;
	if (!arch) {
		/* Some configs carry only model_type. */
		const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
		if (cJSON_IsString(mt)) {
			if (!strcmp(mt->valuestring, "llama"))
				arch = "LlamaForCausalLM";
			else if (!strcmp(mt->valuestring, "mistral"))
				arch = "MistralForCausalLM";
			else if (!strcmp(mt->valuestring, "qwen2"))
				arch = "Qwen2ForCausalLM";
			else if (!strcmp(mt->valuestring, "qwen3"))
				arch = "Qwen3ForCausalLM";
			else if (!strcmp(mt->valuestring, "gemma2"))
				arch = "Gemma2ForCausalLM";
			else if (!strcmp(mt->valuestring, "gemma3_text"))
				arch = "Gemma3ForCausalLM";
		}
	}
	CLOQ_FAIL_IF(!arch, err, CLOQ_EINPUT, "%s: no 'architectures' (supported: %s)", path, CLOQ_SUPPORTED_ARCHS);
	if (!strcmp(arch, "LlamaForCausalLM"))
		cfg->arch = CLOQ_ARCH_LLAMA;
	else if (!strcmp(arch, "MistralForCausalLM"))
		cfg->arch = CLOQ_ARCH_MISTRAL;
	else if (!strcmp(arch, "Qwen2ForCausalLM"))
		cfg->arch = CLOQ_ARCH_QWEN2;
	else if (!strcmp(arch, "Qwen3ForCausalLM"))
		cfg->arch = CLOQ_ARCH_QWEN3;
	else if (!strcmp(arch, "Gemma2ForCausalLM"))
		cfg->arch = CLOQ_ARCH_GEMMA2;
	else if (!strcmp(arch, "Gemma3ForCausalLM"))
		cfg->arch = CLOQ_ARCH_GEMMA3;
	else if (!strcmp(arch, "Phi3ForCausalLM"))
		cfg->arch = CLOQ_ARCH_PHI3;
	else
		CLOQ_FAIL_IF(1, err, CLOQ_EINPUT, "%s: architecture '%s' is not supported (supported: %s)", path,
			     arch, CLOQ_SUPPORTED_ARCHS);
	snprintf(cfg->arch_name, sizeof cfg->arch_name, "%s", arch);
	const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(root, "model_type");
	CLOQ_FAIL_IF(mtype && !cJSON_IsString(mtype), err, CLOQ_EINPUT, "%s: field 'model_type' must be a string", path);
	CLOQ_FAIL_IF(mtype && strcmp(mtype->valuestring, arch_model_type[cfg->arch]) != 0, err, CLOQ_EINPUT,
		     "%s: field 'model_type' = \"%s\" but architectures names %s (model_type \"%s\"): the checkpoint "
		     "is probably another family relabelled; refusing rather than computing a different model",
		     path, mtype->valuestring, arch, arch_model_type[cfg->arch]);
	CLOQ_TRY(check_known_fields(root, path, cfg, err));

	CLOQ_TRY(get_int(root, "hidden_size", 1, 0, &cfg->hidden, path, err));
	CLOQ_TRY(get_int(root, "intermediate_size", 1, 0, &cfg->intermediate, path, err));
	CLOQ_TRY(get_int(root, "num_hidden_layers", 1, 0, &cfg->layers, path, err));
	CLOQ_TRY(get_int(root, "num_attention_heads", 1, 0, &cfg->heads, path, err));
	CLOQ_TRY(get_int(root, "vocab_size", 1, 0, &cfg->vocab, path, err));
	CLOQ_FAIL_IF(cfg->hidden <= 0 || cfg->intermediate <= 0 || cfg->layers <= 0 || cfg->heads <= 0 ||
		     cfg->vocab <= 0, err, CLOQ_EINPUT,
		     "%s: hidden_size, intermediate_size, num_hidden_layers, num_attention_heads and vocab_size must be > 0",
		     path);
	CLOQ_TRY(get_int(root, "num_key_value_heads", 0, cfg->heads, &cfg->kv_heads, path, err));
	CLOQ_FAIL_IF(cfg->kv_heads <= 0 || cfg->heads % cfg->kv_heads != 0, err, CLOQ_EINPUT,
		     "%s: num_attention_heads (%d) must be a multiple of num_key_value_heads (%d)", path,
		     cfg->heads, cfg->kv_heads);
	CLOQ_TRY(get_int(root, "head_dim", 0, cfg->hidden / cfg->heads, &cfg->head_dim, path, err));
	CLOQ_FAIL_IF(cfg->head_dim <= 0 || cfg->head_dim % 2 != 0, err, CLOQ_EINPUT,
		     "%s: head_dim %d must be positive and even (hidden_size %d / heads %d)", path,
		     cfg->head_dim, cfg->hidden, cfg->heads);
	CLOQ_TRY(get_int(root, "max_position_embeddings", 0, 2048, &cfg->max_pos, path, err));
	/* the config classes' defaults: Phi3Config 1e-5, the others 1e-6 */
	CLOQ_TRY(get_num(root, "rms_norm_eps", 0, cfg->arch == CLOQ_ARCH_PHI3 ? 1e-5 : 1e-6, &cfg->rms_eps, path, err));
	CLOQ_TRY(get_num(root, "rope_theta", 0, 10000.0, &cfg->rope_theta, path, err));
	CLOQ_FAIL_IF(cfg->rms_eps < 0 || cfg->rope_theta <= 0, err, CLOQ_EINPUT,
		     "%s: rms_norm_eps must be >= 0 and rope_theta > 0", path);
	cfg->rope_type = CLOQ_ROPE_DEFAULT;
	cfg->rope_factor = 1.0;
	CLOQ_TRY(parse_rope_scaling(cJSON_GetObjectItemCaseSensitive(root, "rope_scaling"), path, cfg, err));
	int gemma = cfg->arch == CLOQ_ARCH_GEMMA2 || cfg->arch == CLOQ_ARCH_GEMMA3;
	CLOQ_TRY(get_bool(root, "tie_word_embeddings", gemma, &cfg->tie_embeddings, path, err));
	int attn_bias, tp;
	CLOQ_TRY(get_bool(root, "attention_bias", 0, &attn_bias, path, err));
	cfg->qkv_bias = cfg->arch == CLOQ_ARCH_QWEN2 ? 1 : attn_bias;
	cfg->o_bias = cfg->arch == CLOQ_ARCH_QWEN2 ? 0 : attn_bias;
	cfg->qk_norm = cfg->arch == CLOQ_ARCH_QWEN3 || cfg->arch == CLOQ_ARCH_GEMMA3;
	cfg->attn_scale = 1.0 / sqrt((double)cfg->head_dim);
	cfg->embed_scale = 1.0;
	if (gemma) {
		cfg->norm_plus_one = cfg->post_norms = cfg->gelu_tanh = 1;
		double qpas;
		/* no default: transformers' changed (224, then 256), so an absent key is ambiguous */
		CLOQ_FAIL_IF(!cJSON_GetObjectItemCaseSensitive(root, "query_pre_attn_scalar"), err, CLOQ_EINPUT,
			     "%s: Gemma without 'query_pre_attn_scalar': transformers' default changed between "
			     "releases (224, 256), so the attention's scale is ambiguous; refusing", path);
		CLOQ_TRY(get_num(root, "query_pre_attn_scalar", 1, 256.0, &qpas, path, err));
		CLOQ_FAIL_IF(!(qpas > 0), err, CLOQ_EINPUT, "%s: field 'query_pre_attn_scalar' must be > 0", path);
		cfg->attn_scale = 1.0 / sqrt(qpas);
		/* null turns a cap off; absent takes Gemma2Config's default */
		const char *caps[2] = {"attn_logit_softcapping", "final_logit_softcapping"};
		double *dst[2] = {&cfg->attn_softcap, &cfg->final_softcap};
		for (int k = 0; k < 2; k++) {
			const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, caps[k]);
			if (v && cJSON_IsNull(v))
				*dst[k] = 0.0;
			else /* Gemma2Config's defaults 50 / 30; Gemma3TextConfig's none */
				CLOQ_TRY(get_num(root, caps[k], 0, cfg->arch == CLOQ_ARCH_GEMMA3 ? 0.0 : k ? 30.0 : 50.0, dst[k],
						 path, err));
			CLOQ_FAIL_IF(*dst[k] < 0, err, CLOQ_EINPUT, "%s: field '%s' must be > 0 or null", path, caps[k]);
		}
		const cJSON *ha = cJSON_GetObjectItemCaseSensitive(root, "hidden_activation");
		CLOQ_FAIL_IF(ha && (!cJSON_IsString(ha) || strcmp(ha->valuestring, "gelu_pytorch_tanh")), err, CLOQ_EINPUT,
			     "%s: field 'hidden_activation' = %s: Gemma 2's MLP is implemented with gelu_pytorch_tanh only; "
			     "refusing rather than computing a different model",
			     path, cJSON_IsString(ha) ? ha->valuestring : "(not a string)");
		/* the embedding is scaled by sqrt(hidden) as a tensor of the model's dtype */
		const cJSON *tdt = cJSON_GetObjectItemCaseSensitive(root, "torch_dtype");
		const char *td = cJSON_IsString(tdt) ? tdt->valuestring : "";
		float sq = (float)sqrt((double)cfg->hidden);
		if (!strcmp(td, "bfloat16"))
			sq = cloq_bf16_to_f32_ref(cloq_f32_to_bf16_ref(sq));
		else if (!strcmp(td, "float16"))
			sq = cloq_f16_to_f32_ref(cloq_f32_to_f16_ref(sq));
		cfg->embed_scale = sq;
	}
	if (cfg->arch == CLOQ_ARCH_GEMMA3) {
		int bidir, pattern;
		/* transformers' Gemma3Attention passes no soft-cap to its attention: a value would be
		 * ignored there and applied here */
		CLOQ_FAIL_IF(cfg->attn_softcap > 0, err, CLOQ_EINPUT,
			     "%s: field 'attn_logit_softcapping' = %g: Gemma 3's attention ignores it in transformers; "
			     "refusing rather than guessing which model is meant", path, cfg->attn_softcap);
		CLOQ_TRY(get_bool(root, "use_bidirectional_attention", 0, &bidir, path, err));
		CLOQ_FAIL_IF(bidir, err, CLOQ_EINPUT, "%s: field 'use_bidirectional_attention' = true: a bidirectional "
			     "(embedding) model, not a causal LM; refusing", path);
		CLOQ_TRY(get_num(root, "rope_local_base_freq", 0, 10000.0, &cfg->rope_local_theta, path, err));
		CLOQ_FAIL_IF(!(cfg->rope_local_theta > 0), err, CLOQ_EINPUT, "%s: field 'rope_local_base_freq' must be > 0",
			     path);
		CLOQ_TRY(get_int(root, "sliding_window_pattern", 0, 6, &pattern, path, err));
		CLOQ_FAIL_IF(cfg->layers > CLOQ_MAX_LAYERS, err, CLOQ_EINPUT, "%s: %d layers, more than cloq's %d", path,
			     cfg->layers, CLOQ_MAX_LAYERS);
		const cJSON *lt = cJSON_GetObjectItemCaseSensitive(root, "layer_types");
		for (int l = 0; l < cfg->layers; l++) /* Gemma3TextConfig: every pattern-th layer global */
			cfg->layer_sliding[l] = pattern > 0 ? (l + 1) % pattern != 0 : 0;
		if (lt && cJSON_IsArray(lt) && cJSON_GetArraySize(lt) == cfg->layers) {
			int l = 0;
			for (const cJSON *e = lt->child; e; e = e->next, l++)
				cfg->layer_sliding[l] = cJSON_IsString(e) && !strcmp(e->valuestring, "sliding_attention");
		}
		int w = 0;
		CLOQ_TRY(get_int(root, "sliding_window", 0, 4096, &w, path, err));
		CLOQ_FAIL_IF(w < 1, err, CLOQ_EINPUT, "%s: field 'sliding_window' must be >= 1", path);
		cfg->sliding_window = w;
		cfg->window_attention = 1;
	}
	CLOQ_TRY(get_bool(root, "mlp_bias", 0, &cfg->mlp_bias, path, err));
	/* pretraining_tp > 1: transformers' Llama splits each projection into tp slices and
	 * concatenates (q/k/v, gate/up) or sums (o, down) the partial products: the same matrix
	 * product, in another summation order, so cloq computes it as one matmul. But that path calls
	 * F.linear without the biases: with attention_bias or mlp_bias the checkpoint's own forward
	 * drops them, and cloq would not; refused. */
	CLOQ_TRY(get_int(root, "pretraining_tp", 0, 1, &tp, path, err));
	CLOQ_FAIL_IF(tp < 1, err, CLOQ_EINPUT, "%s: field 'pretraining_tp' = %d must be >= 1", path, tp);
	CLOQ_FAIL_IF(tp > 1 && (attn_bias || cfg->mlp_bias), err, CLOQ_EINPUT,
		     "%s: field 'pretraining_tp' = %d with attention_bias/mlp_bias: transformers' sliced forward "
		     "ignores the biases there, cloq would apply them; refusing rather than computing a different model",
		     path, tp);
	if (cfg->arch == CLOQ_ARCH_QWEN2 || cfg->arch == CLOQ_ARCH_PHI3)
		CLOQ_FAIL_IF(cfg->head_dim != cfg->hidden / cfg->heads, err, CLOQ_EINPUT,
			     "%s: field 'head_dim' = %d but %s uses hidden_size / num_attention_heads = %d "
			     "(a head_dim of its own is Qwen3's); refusing", path, cfg->head_dim, cfg->arch_name,
			     cfg->hidden / cfg->heads);
	if (cfg->arch == CLOQ_ARCH_PHI3) {
		/* Phi3Attention and Phi3MLP: one fused projection each, no biases */
		cfg->fused = 1;
		CLOQ_FAIL_IF(attn_bias, err, CLOQ_EINPUT,
			     "%s: field 'attention_bias' = true: Phi3ForCausalLM's projections have no biases; refusing",
			     path);
		double prf;
		CLOQ_TRY(get_num(root, "partial_rotary_factor", 0, 1.0, &prf, path, err));
		CLOQ_FAIL_IF(prf != 1.0, err, CLOQ_EINPUT,
			     "%s: field 'partial_rotary_factor' = %g: RoPE on part of each head (Phi-4-mini) is not "
			     "implemented; refusing rather than computing a different model", path, prf);
		int omp;
		CLOQ_TRY(get_int(root, "original_max_position_embeddings", 0, cfg->max_pos, &omp, path, err));
	}
	double drop;
	CLOQ_TRY(get_num(root, "attention_dropout", 0, 0.0, &drop, path, err));
	CLOQ_FAIL_IF(drop != 0.0, err, CLOQ_EINPUT,
		     "%s: field 'attention_dropout' = %g: cloq computes inference without dropout; only 0 is accepted",
		     path, drop);
	int mrope;
	CLOQ_TRY(get_bool(root, "use_mrope", 0, &mrope, path, err));
	CLOQ_FAIL_IF(mrope, err, CLOQ_EINPUT,
		     "%s: field 'use_mrope' = true: multimodal RoPE (Qwen2-VL) is not implemented; refusing", path);
	CLOQ_TRY(parse_sliding_window(root, path, cfg, err));
	const cJSON *qc = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
	cfg->quantized = qc && !cJSON_IsNull(qc);
	int bos, eos;
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
	CLOQ_TRY(get_int(root, "bos_token_id", 0, -1, &bos, path, err));
	if (cJSON_IsArray(e)) /* Llama 3.1 lists several; the first is the canonical one. */
		eos = cJSON_IsNumber(cJSON_GetArrayItem(e, 0)) ? (int)cJSON_GetArrayItem(e, 0)->valuedouble : -1;
	else
		CLOQ_TRY(get_int(root, "eos_token_id", 0, -1, &eos, path, err));
	cfg->bos_id = bos;
	cfg->eos_id = eos;
	const cJSON *dt = cJSON_GetObjectItemCaseSensitive(root, "torch_dtype");
	if (cJSON_IsString(dt))
		snprintf(cfg->torch_dtype, sizeof cfg->torch_dtype, "%s", dt->valuestring);
	/* transformers' ACT2FN: "silu" and "swish" are both nn.SiLU. */
	const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
	CLOQ_FAIL_IF(act && !cJSON_IsString(act), err, CLOQ_EINPUT, "%s: field 'hidden_act' must be a string", path);
	CLOQ_FAIL_IF(act && strcmp(act->valuestring, cfg->gelu_tanh ? "gelu_pytorch_tanh" : "silu") != 0 &&
			     (cfg->gelu_tanh || strcmp(act->valuestring, "swish") != 0), err,
		     CLOQ_EINPUT, "%s: field 'hidden_act' = \"%s\" is not supported (silu/swish; Gemma 2: gelu_pytorch_tanh); refusing rather "
		     "than computing a different model", path, act->valuestring);
fail:
	cJSON_Delete(root);
	return rc;
}

int cloq_config_load(const char *dir, cloq_config *cfg, cloq_err *err)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/config.json", dir);
	char *text = NULL;
	size_t n = 0;
	int rc = cloq_read_file(path, &text, &n, err);
	if (rc)
		return rc;
	rc = cloq_config_parse(text, path, cfg, err);
	cloq_free(text);
	return rc;
}

long long cloq_config_layer_params(const cloq_config *c)
{
	long long h = c->hidden, qd = (long long)c->heads * c->head_dim, kvd = (long long)c->kv_heads * c->head_dim;
	long long n = h * qd + 2 * h * kvd + qd * h + 3 * h * (long long)c->intermediate + 2 * h;
	if (c->qkv_bias)
		n += qd + 2 * kvd;
	if (c->o_bias)
		n += h;
	if (c->mlp_bias)
		n += 2LL * c->intermediate + h;
	if (c->qk_norm)
		n += 2LL * c->head_dim;
	if (c->post_norms)
		n += 2 * h;
	return n;
}

long long cloq_config_total_params(const cloq_config *c)
{
	long long emb = (long long)c->vocab * c->hidden;
	return emb * (c->tie_embeddings ? 1 : 2) + c->layers * cloq_config_layer_params(c) + c->hidden;
}
