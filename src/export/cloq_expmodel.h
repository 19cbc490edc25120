/*
 * cloq_expmodel.h - an exported checkpoint (GPTQ or dense, single file or sharded) plus an
 * optional PEFT LoRA adapter, read back as a model for `cloq ppl EXPORTDIR [--adapter DIR]`.
 * GPTQ linears go through quant/'s unpack (v1 zero-1 or gptq_v2 true zeros), then W += s B A.
 */
#ifndef CLOQ_EXPMODEL_H
#define CLOQ_EXPMODEL_H

#include "cloq_config.h"
#include "cloq_eval.h"
#include "cloq_llama.h"
#include "cloq_safetensors.h"

typedef struct cloq_expmodel {
	char *dir;
	cloq_config cfg;
	cloq_st_model *st;
	cloq_st_model *adapter;   /* NULL without --adapter */
	int gptq, bits, group_size, format;
	int rank;
	double scaling;           /* lora_alpha / r */
	float *embed, *head, *final_norm;
	cloq_table_lm tlm;        /* the cloq_lm view */
} cloq_expmodel;

int cloq_expmodel_open(const char *dir, const char *adapter_dir, cloq_expmodel **m, cloq_err *err);
void cloq_expmodel_close(cloq_expmodel *m);
int cloq_expmodel_load_layer(cloq_expmodel *m, int l, cloq_layer_w *w, cloq_err *err);
void cloq_expmodel_lm(cloq_expmodel *m, cloq_lm *lm);

#endif
