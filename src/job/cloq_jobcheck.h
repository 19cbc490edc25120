/*
 * cloq_jobcheck.h - a conversion job opened for reading: the one door of verify, ppl OUT and
 * export, so that the three give the same exit status and message for the same fault.
 *
 * cloq_job_open_read, in order:
 *   OUT missing or not a directory, or without journal.json   CLOQ_EINPUT   "OUT is not a cloq job"
 *   a writer (convert, resume) holds OUT/job.lock             CLOQ_EBUSY    names the writer's pid
 *   journal.json present but truncated / not a journal        CLOQ_EINTEGRITY "OUT/journal.json is damaged"
 *   finished, and manifest.json missing or damaged            CLOQ_EINTEGRITY
 *   (CLOQ_JOB_HASHES) a shard the journal says is written is missing, or its file XXH3 differs
 *   from the journal's (layers) or the manifest's (all, base included)   CLOQ_EINTEGRITY,
 *   "shards/layer_00003.cloqshard: missing" as verify prints it
 *   (CLOQ_JOB_FINISHED) the job is not finished               CLOQ_EINCOMPLETE, naming the layers
 *                                                             still to convert and 'cloq resume OUT'
 * An integrity failure wins over an unfinished job, as in verify. The reader's shared lock is
 * held until cloq_job_close_read, so no writer can replace a shard under a reader after the check.
 */
#ifndef CLOQ_JOBCHECK_H
#define CLOQ_JOBCHECK_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "cloq_error.h"
#include "cloq_journal.h"
#include "cloq_lock.h"

typedef struct cloq_job_shard {
	char rel[64];      /* "shards/layer_00003.cloqshard" or "shards/base.cloqshard" */
	int layer;         /* -1 for the base shard */
	char journal[40];  /* file XXH3 the journal recorded, hex; "" for the base shard */
	char manifest[40]; /* file XXH3 manifest.json lists; "" when the job is not finished */
} cloq_job_shard;

typedef struct cloq_jobread {
	cloq_lock lock;
	cloq_journal j;
	cJSON *manifest;        /* manifest.json, parsed; NULL unless the journal says finished */
	int nshards;
	cloq_job_shard *shards; /* what the journal says is written: the done layers, then base */
	int layers_done;
} cloq_jobread;

enum {
	CLOQ_JOB_FINISHED = 1, /* an unfinished job is CLOQ_EINCOMPLETE */
	CLOQ_JOB_HASHES = 2,   /* check every listed shard's file XXH3 (streamed, in parallel) */
};

/* Open OUT for reading (see above). `what` names the command ("cloq ppl"). On failure jr is
 * left closed; on success close it with cloq_job_close_read. */
int cloq_job_open_read(const char *out, const char *what, int flags, cloq_jobread *jr, cloq_err *err);
void cloq_job_close_read(cloq_jobread *jr);

/* One shard's file against the hashes the job recorded. CLOQ_OK, or CLOQ_EINTEGRITY (missing,
 * hash differs) / CLOQ_EIO (cannot read) with the message in msg ("shards/...: missing"). The
 * message is verify's per-shard line and ppl's and export's error alike. */
int cloq_job_check_shard(const char *out, const cloq_job_shard *s, char *msg, size_t cap);

/* XXH3_64bits of a whole file, streamed; hex (16 digits + NUL) into hex. ENOENT is CLOQ_EINPUT. */
int cloq_file_xxh3_hex(const char *path, char hex[40], cloq_err *err);

/* CLOQ_EINCOMPLETE with "OUT: the job is unfinished: layers 3-4 of 0-4 are not converted yet;
 * finish it with 'cloq resume OUT'"; CLOQ_OK when j says finished. */
int cloq_job_require_finished(const char *out, const cloq_journal *j, cloq_err *err);

#endif
