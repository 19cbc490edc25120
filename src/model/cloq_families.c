/* cloq_families.c - the registry of model families (cloq_family.h): one line per family file. */
#include "cloq_family.h"

#include <string.h>

extern const cloq_family cloq_family_llama, cloq_family_mistral, cloq_family_qwen2, cloq_family_qwen3,
	cloq_family_gemma2, cloq_family_gemma3, cloq_family_phi3, cloq_family_mixtral, cloq_family_qwen2_moe,
	cloq_family_qwen3_moe;

const cloq_family *const cloq_families[] = {
	&cloq_family_llama, &cloq_family_mistral, &cloq_family_qwen2, &cloq_family_qwen3,
	&cloq_family_gemma2, &cloq_family_gemma3, &cloq_family_phi3, &cloq_family_mixtral, &cloq_family_qwen2_moe,
	&cloq_family_qwen3_moe, NULL,
};

const cloq_family *cloq_family_of_arch(const char *arch_name)
{
	for (const cloq_family *const *f = cloq_families; *f; f++)
		if (!strcmp((*f)->arch_name, arch_name))
			return *f;
	return NULL;
}

const cloq_family *cloq_family_of_model_type(const char *model_type)
{
	for (const cloq_family *const *f = cloq_families; *f; f++)
		if (!strcmp((*f)->model_type, model_type))
			return *f;
	return NULL;
}

const cloq_family *cloq_family_of(enum cloq_arch arch)
{
	for (const cloq_family *const *f = cloq_families; *f; f++)
		if ((*f)->arch == arch)
			return *f;
	return NULL;
}

int cloq_moe_check(const char *path, const cloq_config *cfg, cloq_err *err)
{
	if (cfg->moe < 1 || cfg->moe_topk < 1 || cfg->moe_topk > cfg->moe || cfg->moe_inter < 1)
		return cloq_err_set(err, CLOQ_EINPUT,
				    "%s: %s with %d experts, top-%d, expert width %d: need 1 <= top-k <= experts and a "
				    "positive width", path, cfg->arch_name, cfg->moe, cfg->moe_topk, cfg->moe_inter);
	return CLOQ_OK;
}
