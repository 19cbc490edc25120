/*
 * cloq_outmodel.h - a finished (or partly finished) conversion job read back as a model:
 * embeddings, final norm and lm_head from shards/base.cloqshard, each layer from its shard as
 * deq(Q) + s B A (or deq(Q) alone). Used by `cloq ppl OUT` and by export.
 */
#ifndef CLOQ_OUTMODEL_H
#define CLOQ_OUTMODEL_H

#include "cloq_config.h"
#include "cloq_eval.h"
#include "cloq_jobcheck.h"
#include "cloq_layerstore.h"
#include "cloq_llama.h"

typedef struct cloq_outmodel {
	char *dir;
	cloq_jobread job;         /* the reader's lock (held while open), journal, manifest */
	cloq_config cfg;
	int bits, group_size, rank;
	cloq_qform qf;            /* how the codes are stored (NormalFloat jobs: codebooks) */
	double scaling;           /* lora_alpha / rank */
	int with_lora;
	float *embed;             /* (vocab, hidden) */
	float *head;              /* (vocab, hidden); == embed when tied */
	float *final_norm;        /* (hidden) */
	cloq_table_lm tlm;        /* the cloq_lm view */
} cloq_outmodel;

/* Open OUT as cloq_job_open_read does with CLOQ_JOB_FINISHED | CLOQ_JOB_HASHES (`what` names the
 * command): not a job 2, busy 5, a shard missing or not the job's own 4, unfinished 6. Every
 * shard's file hash is checked here, once; the shards are then read without another check (the
 * reader's lock keeps writers out until cloq_outmodel_close). with_lora = 0 scores deq(Q) alone. */
int cloq_outmodel_open(const char *out, int with_lora, const char *what, cloq_outmodel **m, cloq_err *err);
void cloq_outmodel_close(cloq_outmodel *m);
/* Layer l's fp32 weights as the converted model computes them. */
int cloq_outmodel_load_layer(const cloq_outmodel *m, int l, cloq_layer_w *w, cloq_err *err);
void cloq_outmodel_lm(cloq_outmodel *m, cloq_lm *lm);

#endif
