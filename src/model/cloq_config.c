/* cloq_config.c - config.json parsing (see cloq_config.h). */
#include "cloq_config.h"
#include "cloq_family.h"

#include "cloq_dtype.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cloq_sys.h"

int cloq_cfg_int(const cJSON *root, const char *key, int required, int dflt, int *out, const char *path,
		 cloq_err *err)
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

int cloq_cfg_num(const cJSON *root, const char *key, int required, double dflt, double *out, const char *path,
		 cloq_err *err)
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
int cloq_cfg_bool(const cJSON *root, const char *key, int dflt, int *out, const char *path, cloq_err *err)
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
 * Every top-level key is on one list, or refused: the keys every family's config class has (here),
 * and the ones each family's class adds (its cloq_family.keys, src/model/family_*.c). IMPL: parsed,
 * and the values cloq cannot compute refused by name. HARMLESS: no effect on the forward pass of a
 * causal LM at inference. A key of another family (Qwen2's use_sliding_window in a
 * LlamaForCausalLM config) means the checkpoint is probably not what its label says, and is
 * refused like an unknown one. */
static const cloq_config_key shared_keys[] = {
	{"architectures", CLOQ_KEY_IMPL, "selects the family"},
	{"model_type", CLOQ_KEY_IMPL, "must name the same family as architectures"},
	{"hidden_size", CLOQ_KEY_IMPL, "shapes"},
	{"intermediate_size", CLOQ_KEY_IMPL, "shapes"},
	{"num_hidden_layers", CLOQ_KEY_IMPL, "shapes"},
	{"num_attention_heads", CLOQ_KEY_IMPL, "shapes, attention"},
	{"num_key_value_heads", CLOQ_KEY_IMPL, "grouped-query attention"},
	{"head_dim", CLOQ_KEY_IMPL, "shapes, attention (Qwen2, Phi-3: must equal hidden_size / heads)"},
	{"vocab_size", CLOQ_KEY_IMPL, "shapes"},
	{"max_position_embeddings", CLOQ_KEY_IMPL, "upper bound of --seqlen"},
	{"rms_norm_eps", CLOQ_KEY_IMPL, "RMSNorm epsilon"},
	{"rope_theta", CLOQ_KEY_IMPL, "RoPE base"},
	{"rope_scaling", CLOQ_KEY_IMPL, "default, linear, llama3; others refused"},
	{"tie_word_embeddings", CLOQ_KEY_IMPL, "lm_head is the embedding"},
	{"hidden_act", CLOQ_KEY_IMPL, "silu (swish); Gemma: gelu_pytorch_tanh"},
	{"attention_dropout", CLOQ_KEY_IMPL, "inference: must be 0"},
	{"sliding_window", CLOQ_KEY_IMPL, "computed per layer (the family's rule); on a Llama (no window there) "
					  "refused when shorter than --seqlen"},
	{"quantization_config", CLOQ_KEY_IMPL, "an export of cloq's (the export reader); cloq_model_open refuses it"},
	{"bos_token_id", CLOQ_KEY_IMPL, "token id, used by the tokenizer side only"},
	{"eos_token_id", CLOQ_KEY_IMPL, "token id, used by the tokenizer side only"},
	{"torch_dtype", CLOQ_KEY_IMPL, "storage dtype; the safetensors dtypes are what is read"},
	{"dtype", CLOQ_KEY_HARMLESS, "newer name of torch_dtype; the safetensors dtypes are what is read"},
	{"pad_token_id", CLOQ_KEY_HARMLESS, "token id; cloq never pads"},
	{"_name_or_path", CLOQ_KEY_HARMLESS, "where the config was loaded from"},
	{"transformers_version", CLOQ_KEY_HARMLESS, "the version that wrote the file"},
	{"initializer_range", CLOQ_KEY_HARMLESS, "random init of untrained weights; all are loaded"},
	{"use_cache", CLOQ_KEY_HARMLESS, "KV cache at generation; no effect on logits"},
	{"output_attentions", CLOQ_KEY_HARMLESS, "what forward returns, not what it computes"},
	{"output_hidden_states", CLOQ_KEY_HARMLESS, "what forward returns, not what it computes"},
	{"return_dict", CLOQ_KEY_HARMLESS, "what forward returns, not what it computes"},
	{"tokenizer_class", CLOQ_KEY_HARMLESS, "names the tokenizer; cloq reads tokenizer.json"},
	{"keys_to_ignore_at_inference", CLOQ_KEY_HARMLESS, "outputs generation drops, not what is computed"},
	{"unsloth_version", CLOQ_KEY_HARMLESS, "the version of the fine-tuning tool that wrote the file"},
	{NULL, 0, NULL},
};

static const cloq_config_key *find_key(const cloq_config_key *list, const char *name)
{
	for (; list && list->name; list++)
		if (!strcmp(list->name, name))
			return list;
	return NULL;
}

static int family_has_key(const cloq_family *f, const char *name)
{
	return find_key(f->keys, name) != NULL || find_key(f->rule_keys, name) != NULL;
}

/* The value of a JSON item, compact and cut short, for messages. */
static void json_short(const cJSON *v, char *buf, size_t cap)
{
	char *s = cJSON_PrintUnformatted(v);
	snprintf(buf, cap, "%s", s ? s : "?");
	if (s && strlen(s) >= cap && cap > 4)
		memcpy(buf + cap - 4, "...", 4);
	cJSON_free(s);
}

static int check_known_fields(const cJSON *root, const char *path, const cloq_family *fam, cloq_err *err)
{
	char val[80];
	for (const cJSON *it = root->child; it; it = it->next) {
		if (find_key(shared_keys, it->string) || family_has_key(fam, it->string))
			continue;
		json_short(it, val, sizeof val);
		const cloq_family *other = NULL;
		for (const cloq_family *const *f = cloq_families; *f && !other; f++)
			if (family_has_key(*f, it->string))
				other = *f;
		if (!other)
			return cloq_err_set(err, CLOQ_EINPUT,
					    "%s: field '%s' = %s is not known to cloq; refusing rather than guessing its effect",
					    path, it->string, val);
		return cloq_err_set(err, CLOQ_EINPUT,
				    "%s: field '%s' = %s is not a field of %s (transformers' %s config has no such "
				    "key; %s's has): the checkpoint may be another family; refusing rather than guessing "
				    "its effect",
				    path, it->string, val, fam->arch_name, fam->model_type, other->arch_name);
	}
	return CLOQ_OK;
}

/* sliding_window, use_sliding_window, max_window_layers, sliding_window_pattern, layer_types ->
 * cfg->sliding_window (0: inactive) and, where cloq computes the window, cfg->layer_sliding[] with
 * cfg->window_attention. A sliding layer's query i attends to keys j with i - window < j <= i: the
 * window includes the query itself, as transformers' eager and sdpa masks (4.44 Gemma 2, 4.51
 * Mistral/Qwen2/Phi-3, and the layer_types masks after them) build it. Which layers slide is the
 * family's rule (cloq_family.window):
 *   EVERY_LAYER (Mistral, Phi-3): every layer whenever sliding_window is set;
 *   QWEN (Qwen2/3): only with use_sliding_window, the layers >= max_window_layers (default 28),
 *     as the original attention and layer_types have it;
 *   EVEN_LAYERS (Gemma 2): the even layers, window 4096 when absent;
 *   PATTERN (Gemma 3): all but every sliding_window_pattern-th layer (default 6), window 4096
 *     when absent;
 *   NONE_REFUSE (Llama): LlamaForCausalLM has no window; a config carrying one is probably a
 *     relabelled Mistral, so an active window is refused by cloq_config_check_seqlen.
 * layer_types, when given, is what transformers >= 4.53 reads per layer, and wins. A sliding
 * layer without a window (sliding_window null) is refused, as transformers fails there too. */
static int parse_sliding_window(const cJSON *root, const char *path, const cloq_family *fam, cloq_config *cfg,
				cloq_err *err)
{
	int rc = CLOQ_OK, w = 0, use = 0, mwl = 28, pattern = 6;
	const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
	int gemma_rule = fam->window == CLOQ_WIN_EVEN_LAYERS || fam->window == CLOQ_WIN_PATTERN;
	CLOQ_TRY(cloq_cfg_int(root, "sliding_window", 0, gemma_rule && !sw ? 4096 : 0, &w, path, err));
	CLOQ_FAIL_IF(sw && !cJSON_IsNull(sw) && w <= 0, err, CLOQ_EINPUT,
		     "%s: field 'sliding_window' = %d: a window of no tokens is not a model cloq can compute", path, w);
	if (fam->window == CLOQ_WIN_NONE_REFUSE) { /* refused when active, never computed */
		cfg->sliding_window = w;
		return CLOQ_OK;
	}
	if (fam->window == CLOQ_WIN_QWEN) {
		CLOQ_TRY(cloq_cfg_bool(root, "use_sliding_window", 0, &use, path, err));
		CLOQ_TRY(cloq_cfg_int(root, "max_window_layers", 0, 28, &mwl, path, err));
	}
	if (fam->window == CLOQ_WIN_PATTERN)
		CLOQ_TRY(cloq_cfg_int(root, "sliding_window_pattern", 0, 6, &pattern, path, err));
	CLOQ_FAIL_IF(cfg->layers > CLOQ_MAX_LAYERS, err, CLOQ_EINPUT, "%s: %d layers, more than cloq's %d", path,
		     cfg->layers, CLOQ_MAX_LAYERS);
	for (int l = 0; l < cfg->layers; l++) {
		int slides = 0;
		switch (fam->window) {
		case CLOQ_WIN_EVERY_LAYER: slides = w > 0; break;
		case CLOQ_WIN_QWEN: slides = w > 0 && use && l >= mwl; break;
		case CLOQ_WIN_EVEN_LAYERS: slides = l % 2 == 0; break;
		case CLOQ_WIN_PATTERN: slides = pattern > 0 && (l + 1) % pattern != 0; break;
		default: break;
		}
		cfg->layer_sliding[l] = (unsigned char)slides;
	}
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
		}
	}
	int any = 0;
	for (int l = 0; l < cfg->layers; l++)
		any |= cfg->layer_sliding[l];
	CLOQ_FAIL_IF(any && w <= 0, err, CLOQ_EINPUT,
		     "%s: %s has sliding-window layers (%s) but 'sliding_window' is null; refusing", path,
		     fam->arch_name, lt && !cJSON_IsNull(lt) ? "layer_types' sliding_attention" : "the family's rule");
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

/* longrope's short_factor / long_factor: lists of positive numbers, their length checked against
 * rotary_dim / 2 by the family (it knows partial_rotary_factor) */
static int rope_factor_list(const cJSON *rs, const char *key, double *dst, int *n, const char *path, cloq_err *err)
{
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(rs, key);
	if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) < 1 || cJSON_GetArraySize(a) > CLOQ_MAX_ROPE_PAIRS)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: rope_scaling (longrope) needs '%s', a list of 1..%d numbers", path,
				    key, CLOQ_MAX_ROPE_PAIRS);
	int i = 0;
	for (const cJSON *e = a->child; e; e = e->next, i++) {
		if (!cJSON_IsNumber(e) || !(e->valuedouble > 0) || !isfinite(e->valuedouble))
			return cloq_err_set(err, CLOQ_EINPUT, "%s: rope_scaling.%s[%d] must be a positive number", path, key, i);
		dst[i] = e->valuedouble;
	}
	*n = i;
	return CLOQ_OK;
}

/*
 * rope_scaling, by type (transformers' modeling_rope_utils, 4.44 and 4.51 alike):
 *   default, linear (inv_freq / factor), llama3 (Llama 3.1's smooth ramp): computed;
 *   dynamic: NTK scaling that grows the base only past max_position_embeddings; --seqlen is at
 *     most max_position_embeddings, so every window computes the unscaled frequencies: computed;
 *   longrope / su (Phi-3 128k, Phi-3.5): inv_freq / short_factor on windows of at most
 *     original_max_position_embeddings tokens, / long_factor beyond, cos and sin times
 *     sqrt(1 + ln(s) / ln(original)) with s = max_position_embeddings / original (1 when s <= 1):
 *     computed for Phi-3 (finished by its family hook, which knows original_max_position_embeddings
 *     and partial_rotary_factor); an explicit attention_factor is refused (4.51 applies it, 4.44's
 *     Phi-3 ignores it), and factor is unused (both take s);
 *   yarn: refused. The releases disagree for the configs in use (Qwen2.5 / Qwen3 put
 *     original_max_position_embeddings in rope_scaling: 4.51 then replaces factor by
 *     max_position_embeddings / original, 4.44 keeps factor), and mscale is read by 4.51 only.
 */
static int parse_rope_scaling(const cJSON *rs, const char *path, const cloq_family *fam, cloq_config *cfg,
			      cloq_err *err)
{
	int rc = CLOQ_OK;
	if (!rs || cJSON_IsNull(rs))
		return CLOQ_OK;
	CLOQ_FAIL_IF(!cJSON_IsObject(rs), err, CLOQ_EINPUT, "%s: 'rope_scaling' must be an object or null", path);
	/* transformers' configs copy "type" (the older spelling) over "rope_type": both present and
	 * different is a file two readers may take either way, refused */
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(rs, "type"), *rt = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
	CLOQ_FAIL_IF(t && rt && (!cJSON_IsString(t) || !cJSON_IsString(rt) || strcmp(t->valuestring, rt->valuestring)),
		     err, CLOQ_EINPUT, "%s: 'rope_scaling' has both 'type' and 'rope_type', and they differ; refusing", path);
	if (!t)
		t = rt;
	CLOQ_FAIL_IF(!cJSON_IsString(t), err, CLOQ_EINPUT, "%s: 'rope_scaling' has no 'rope_type'", path);
	const char *type = t->valuestring;
	/* every key of rope_scaling is one its type reads (or, for longrope, one that has no effect) */
	static const struct {
		const char *type, *keys;
	} allowed[] = {
		{"default", " type rope_type "},
		{"linear", " type rope_type factor "},
		{"dynamic", " type rope_type factor "},
		{"llama3", " type rope_type factor low_freq_factor high_freq_factor original_max_position_embeddings "},
		{"longrope", " type rope_type short_factor long_factor factor original_max_position_embeddings "
			     "attention_factor "},
		{"su", " type rope_type short_factor long_factor factor original_max_position_embeddings attention_factor "},
	};
	for (size_t k = 0; k < sizeof allowed / sizeof allowed[0]; k++) {
		if (strcmp(type, allowed[k].type))
			continue;
		for (const cJSON *it = rs->child; it; it = it->next) {
			char key[128];
			snprintf(key, sizeof key, " %s ", it->string);
			CLOQ_FAIL_IF(!strstr(allowed[k].keys, key), err, CLOQ_EINPUT,
				     "%s: rope_scaling (%s) has the key '%s', which cloq does not know for this type; "
				     "refusing rather than guessing its effect", path, type, it->string);
		}
	}
	int longrope = !strcmp(type, "longrope") || !strcmp(type, "su");
	if (!longrope)
		CLOQ_TRY(cloq_cfg_num(rs, "factor", 0, 1.0, &cfg->rope_factor, path, err));
	if (!strcmp(type, "default")) {
		cfg->rope_type = CLOQ_ROPE_DEFAULT;
	} else if (!strcmp(type, "linear")) {
		cfg->rope_type = CLOQ_ROPE_LINEAR;
	} else if (!strcmp(type, "dynamic")) {
		cfg->rope_type = CLOQ_ROPE_DYNAMIC;
	} else if (!strcmp(type, "llama3")) {
		cfg->rope_type = CLOQ_ROPE_LLAMA3;
		CLOQ_TRY(cloq_cfg_num(rs, "low_freq_factor", 1, 0, &cfg->rope_low_freq, path, err));
		CLOQ_TRY(cloq_cfg_num(rs, "high_freq_factor", 1, 0, &cfg->rope_high_freq, path, err));
		CLOQ_TRY(cloq_cfg_int(rs, "original_max_position_embeddings", 1, 0, &cfg->rope_orig_max_pos, path, err));
		CLOQ_FAIL_IF(cfg->rope_high_freq <= cfg->rope_low_freq || cfg->rope_orig_max_pos <= 0, err,
			     CLOQ_EINPUT, "%s: rope_scaling (llama3): need high_freq_factor > low_freq_factor "
			     "and original_max_position_embeddings > 0", path);
	} else if (longrope) {
		int ns = 0, nl = 0;
		cfg->rope_type = CLOQ_ROPE_LONGROPE;
		CLOQ_TRY(rope_factor_list(rs, "short_factor", cfg->rope_short, &ns, path, err));
		CLOQ_TRY(rope_factor_list(rs, "long_factor", cfg->rope_long, &nl, path, err));
		CLOQ_FAIL_IF(ns != nl, err, CLOQ_EINPUT, "%s: rope_scaling (longrope): short_factor has %d entries, "
			     "long_factor %d", path, ns, nl);
		cfg->rope_nfactors = ns;
		CLOQ_FAIL_IF(cJSON_GetObjectItemCaseSensitive(rs, "attention_factor"), err, CLOQ_EINPUT,
			     "%s: rope_scaling (longrope) with 'attention_factor': transformers 4.51 applies it, 4.44's "
			     "Phi-3 ignores it, so the model is ambiguous; refusing", path);
	} else if (!strcmp(type, "yarn")) {
		CLOQ_FAIL_IF(1, err, CLOQ_EINPUT,
			     "%s: field 'rope_scaling' has type 'yarn', which cloq does not implement: transformers "
			     "releases compute different models from the configs that use it (4.51 replaces 'factor' by "
			     "max_position_embeddings / original_max_position_embeddings, 4.44 keeps it); refusing rather "
			     "than picking one", path);
	} else {
		CLOQ_FAIL_IF(1, err, CLOQ_EINPUT,
			     "%s: field 'rope_scaling' has type '%s', which cloq does not implement (supported: default, "
			     "linear, dynamic, llama3; longrope on Phi-3); refusing rather than computing a different model",
			     path, type);
	}
	/* a type the family's class does not take: transformers 4.44's Mistral, Qwen2 and Gemma 2 have
	 * no rope_scaling at all (the key is ignored) while 4.51's apply it; 4.44's Phi-3 knows only
	 * longrope; Llama's takes every type but longrope (4.51 only, with other keys) */
	CLOQ_FAIL_IF(cfg->rope_type != CLOQ_ROPE_DEFAULT && !(fam->rope_types & (1u << cfg->rope_type)), err, CLOQ_EINPUT,
		     "%s: field 'rope_scaling' has type '%s', which %s does not take in every transformers release "
		     "(4.44's class ignores or rejects it, 4.51's applies it); refusing rather than picking one",
		     path, type, fam->arch_name);
	CLOQ_FAIL_IF(cfg->rope_factor <= 0, err, CLOQ_EINPUT, "%s: rope_scaling.factor must be > 0", path);
fail:
	return rc;
}

/* "LlamaForCausalLM, MistralForCausalLM, ...": the registry's architectures, for messages */
static const char *supported(char *buf, size_t cap)
{
	size_t n = 0;
	buf[0] = '\0';
	for (const cloq_family *const *f = cloq_families; *f && n < cap; f++)
		n += (size_t)snprintf(buf + n, cap - n, "%s%s", f == cloq_families ? "" : ", ", (*f)->arch_name);
	return buf;
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

	/* the family: architectures[0], or (some configs carry only that) model_type */
	const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
	const cJSON *a0 = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
	const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(root, "model_type");
	CLOQ_FAIL_IF(mtype && !cJSON_IsString(mtype), err, CLOQ_EINPUT, "%s: field 'model_type' must be a string", path);
	const cloq_family *fam = NULL;
	char names[512];
	if (cJSON_IsString(a0)) {
		fam = cloq_family_of_arch(a0->valuestring);
		CLOQ_FAIL_IF(!fam, err, CLOQ_EINPUT, "%s: architecture '%s' is not supported (supported: %s)", path,
			     a0->valuestring, supported(names, sizeof names));
	} else if (mtype) {
		fam = cloq_family_of_model_type(mtype->valuestring);
	}
	CLOQ_FAIL_IF(!fam, err, CLOQ_EINPUT, "%s: no 'architectures' (supported: %s)", path,
		     supported(names, sizeof names));
	cfg->arch = fam->arch;
	snprintf(cfg->arch_name, sizeof cfg->arch_name, "%s", fam->arch_name);
	CLOQ_FAIL_IF(mtype && strcmp(mtype->valuestring, fam->model_type) != 0, err, CLOQ_EINPUT,
		     "%s: field 'model_type' = \"%s\" but architectures names %s (model_type \"%s\"): the checkpoint "
		     "is probably another family relabelled; refusing rather than computing a different model",
		     path, mtype->valuestring, fam->arch_name, fam->model_type);
	CLOQ_TRY(check_known_fields(root, path, fam, err));

	/* shapes and the shared math */
	CLOQ_TRY(cloq_cfg_int(root, "hidden_size", 1, 0, &cfg->hidden, path, err));
	CLOQ_TRY(cloq_cfg_int(root, "intermediate_size", 1, 0, &cfg->intermediate, path, err));
	CLOQ_TRY(cloq_cfg_int(root, "num_hidden_layers", 1, 0, &cfg->layers, path, err));
	CLOQ_TRY(cloq_cfg_int(root, "num_attention_heads", 1, 0, &cfg->heads, path, err));
	CLOQ_TRY(cloq_cfg_int(root, "vocab_size", 1, 0, &cfg->vocab, path, err));
	CLOQ_FAIL_IF(cfg->hidden <= 0 || cfg->intermediate <= 0 || cfg->layers <= 0 || cfg->heads <= 0 ||
		     cfg->vocab <= 0, err, CLOQ_EINPUT,
		     "%s: hidden_size, intermediate_size, num_hidden_layers, num_attention_heads and vocab_size must be > 0",
		     path);
	CLOQ_FAIL_IF(fam->kv_heads < 0 && !cJSON_GetObjectItemCaseSensitive(root, "num_key_value_heads"), err,
		     CLOQ_EINPUT, "%s: %s without 'num_key_value_heads': its config class's default is no real "
		     "checkpoint's (and changed between releases); refusing", path, fam->arch_name);
	CLOQ_TRY(cloq_cfg_int(root, "num_key_value_heads", 0, fam->kv_heads > 0 ? fam->kv_heads : cfg->heads,
			      &cfg->kv_heads, path, err));
	CLOQ_FAIL_IF(cfg->kv_heads <= 0 || cfg->heads % cfg->kv_heads != 0, err, CLOQ_EINPUT,
		     "%s: num_attention_heads (%d) must be a multiple of num_key_value_heads (%d)", path,
		     cfg->heads, cfg->kv_heads);
	CLOQ_TRY(cloq_cfg_int(root, "head_dim", 0, cfg->hidden / cfg->heads, &cfg->head_dim, path, err));
	CLOQ_FAIL_IF(cfg->head_dim <= 0 || cfg->head_dim % 2 != 0, err, CLOQ_EINPUT,
		     "%s: head_dim %d must be positive and even (hidden_size %d / heads %d)", path,
		     cfg->head_dim, cfg->hidden, cfg->heads);
	CLOQ_FAIL_IF(!fam->head_dim_free && cfg->head_dim != cfg->hidden / cfg->heads, err, CLOQ_EINPUT,
		     "%s: field 'head_dim' = %d but %s uses hidden_size / num_attention_heads = %d "
		     "(a head_dim of its own is Qwen3's); refusing", path, cfg->head_dim, fam->arch_name,
		     cfg->hidden / cfg->heads);
	CLOQ_TRY(cloq_cfg_int(root, "max_position_embeddings", 0, 2048, &cfg->max_pos, path, err));
	CLOQ_TRY(cloq_cfg_num(root, "rms_norm_eps", 0, fam->rms_eps, &cfg->rms_eps, path, err));
	CLOQ_TRY(cloq_cfg_num(root, "rope_theta", 0, 10000.0, &cfg->rope_theta, path, err));
	CLOQ_FAIL_IF(cfg->rms_eps < 0 || cfg->rope_theta <= 0, err, CLOQ_EINPUT,
		     "%s: rms_norm_eps must be >= 0 and rope_theta > 0", path);
	cfg->rope_type = CLOQ_ROPE_DEFAULT;
	cfg->rope_factor = 1.0;
	cfg->rope_attn_factor = 1.0;
	cfg->rotary_dim = cfg->head_dim;
	CLOQ_TRY(parse_rope_scaling(cJSON_GetObjectItemCaseSensitive(root, "rope_scaling"), path, fam, cfg, err));
	CLOQ_TRY(cloq_cfg_bool(root, "tie_word_embeddings", fam->tie_embeddings, &cfg->tie_embeddings, path, err));
	double drop;
	CLOQ_TRY(cloq_cfg_num(root, "attention_dropout", 0, 0.0, &drop, path, err));
	CLOQ_FAIL_IF(drop != 0.0, err, CLOQ_EINPUT,
		     "%s: field 'attention_dropout' = %g: cloq computes inference without dropout; only 0 is accepted",
		     path, drop);

	/* the layer as the family declares it */
	int attn_bias = 0;
	if (family_has_key(fam, "attention_bias"))
		CLOQ_TRY(cloq_cfg_bool(root, "attention_bias", 0, &attn_bias, path, err));
	cfg->qkv_bias = fam->qkv_bias ? 1 : attn_bias;
	cfg->o_bias = fam->qkv_bias ? 0 : attn_bias;
	cfg->qk_norm = fam->qk_norm;
	cfg->norm_plus_one = cfg->post_norms = cfg->gelu_tanh = fam->gemma_norms;
	cfg->fused = fam->fused;
	cfg->attn_scale = 1.0 / sqrt((double)cfg->head_dim);
	cfg->embed_scale = 1.0;
	CLOQ_TRY(parse_sliding_window(root, path, fam, cfg, err));
	if (fam->parse)
		CLOQ_TRY(fam->parse(root, path, cfg, err));

	const cJSON *qc = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
	cfg->quantized = qc && !cJSON_IsNull(qc);
	int bos, eos;
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
	CLOQ_TRY(cloq_cfg_int(root, "bos_token_id", 0, -1, &bos, path, err));
	if (cJSON_IsArray(e)) /* Llama 3.1 lists several; the first is the canonical one. */
		eos = cJSON_IsNumber(cJSON_GetArrayItem(e, 0)) ? (int)cJSON_GetArrayItem(e, 0)->valuedouble : -1;
	else
		CLOQ_TRY(cloq_cfg_int(root, "eos_token_id", 0, -1, &eos, path, err));
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
		     CLOQ_EINPUT, "%s: field 'hidden_act' = \"%s\" is not supported (silu/swish; Gemma: gelu_pytorch_tanh); refusing rather "
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

int cloq_layer_is_moe(const cloq_config *c, int l)
{
	return c->moe > 0 && l >= 0 && l < CLOQ_MAX_LAYERS && !c->layer_dense[l];
}

int cloq_config_sparse_layers(const cloq_config *c)
{
	int n = 0;
	for (int l = 0; l < c->layers; l++)
		n += cloq_layer_is_moe(c, l);
	return n;
}

long long cloq_config_layer_params_at(const cloq_config *c, int l)
{
	long long h = c->hidden, qd = (long long)c->heads * c->head_dim, kvd = (long long)c->kv_heads * c->head_dim;
	long long n = h * qd + 2 * h * kvd + qd * h + 2 * h;
	if (cloq_layer_is_moe(c, l)) {
		n += (long long)c->moe * h + (long long)c->moe * 3 * h * c->moe_inter;
		if (c->moe_shared_inter)
			n += 3 * h * (long long)c->moe_shared_inter + h;
	} else {
		n += 3 * h * (long long)c->intermediate;
		if (c->mlp_bias)
			n += 2LL * c->intermediate + h;
	}
	if (c->qkv_bias)
		n += qd + 2 * kvd;
	if (c->o_bias)
		n += h;
	if (c->qk_norm)
		n += 2LL * c->head_dim;
	if (c->post_norms)
		n += 2 * h;
	return n;
}

long long cloq_config_layer_params(const cloq_config *c)
{
	return cloq_config_layer_params_at(c, 0);
}

long long cloq_config_total_params(const cloq_config *c)
{
	long long emb = (long long)c->vocab * c->hidden, n = emb * (c->tie_embeddings ? 1 : 2) + c->hidden;
	for (int l = 0; l < c->layers; l++)
		n += cloq_config_layer_params_at(c, l);
	return n;
}
