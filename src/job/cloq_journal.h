/*
 * cloq_journal.h - the job journal (OUT/journal.json): what a job is (settings + input
 * fingerprint) and how far it got (per-layer state). Rewritten whole and atomically (temp + fsync +
 * rename + dir fsync) after every state change, so a kill at any moment leaves either the old or
 * the new journal, never a torn one.
 */
#ifndef CLOQ_JOURNAL_H
#define CLOQ_JOURNAL_H

#include <cjson/cJSON.h>

#include "cloq_error.h"

typedef struct cloq_journal {
	cJSON *settings;      /* owned: every setting that changes output bytes */
	cJSON *fingerprint;   /* owned: config/safetensors/calibration hashes, tool version */
	int nlayers;
	int *layer_done;      /* (nlayers) */
	char (*layer_hash)[40]; /* (nlayers) XXH3 of the layer's shard file, hex */
	cJSON **layer_report; /* (nlayers) owned, NULL until the layer is done: errors, timings */
	cJSON **layer_inputs; /* (nlayers) owned, NULL until done: {"tensor": "xxh3 hex"} of the model
	                       * bytes the layer was made from (src/job/cloq_inputs.h) */
	cJSON *base_inputs;   /* owned, NULL until base_done: the same for the base shard's tensors */
	cJSON *input_files;   /* owned, may be NULL: identities of the safetensors files, as last seen */
	int base_done;
	int finished;
} cloq_journal;

int cloq_journal_init(cloq_journal *j, int nlayers, cJSON *settings, cJSON *fingerprint, cloq_err *err);
/* Read OUT/journal.json. CLOQ_EINPUT when absent (no job there: callers say "not a cloq job"),
 * CLOQ_EIO when it cannot be read, CLOQ_EINTEGRITY ("OUT/journal.json is damaged: ...") when it is
 * there but is not a whole journal: truncated, not JSON, not a cloq journal, a field missing, or
 * 'finished' with a layer not done. On failure j is left empty (cloq_journal_free is harmless). */
int cloq_journal_load(const char *out_dir, cloq_journal *j, cloq_err *err);
/* The same for the commands that write a job (convert, resume): a damaged journal's message also
 * says that 'cloq convert ... --force' starts the job over. */
int cloq_journal_load_writer(const char *out_dir, cloq_journal *j, cloq_err *err);
int cloq_journal_save(const char *out_dir, const cloq_journal *j, cloq_err *err);
void cloq_journal_free(cloq_journal *j);

/* Describe the first difference between two JSON objects ("bits: 2 -> 4"); 0 when equal. */
int cloq_json_diff(const cJSON *old, const cJSON *cur, char *buf, size_t cap);

#endif
