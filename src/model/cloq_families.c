/* cloq_families.c - the registry of model families (cloq_family.h): one line per family file. */
#include "cloq_family.h"

#include <string.h>

extern const cloq_family cloq_family_llama, cloq_family_mistral, cloq_family_qwen2, cloq_family_qwen3,
	cloq_family_gemma2, cloq_family_gemma3, cloq_family_phi3;

const cloq_family *const cloq_families[] = {
	&cloq_family_llama, &cloq_family_mistral, &cloq_family_qwen2, &cloq_family_qwen3,
	&cloq_family_gemma2, &cloq_family_gemma3, &cloq_family_phi3, NULL,
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
