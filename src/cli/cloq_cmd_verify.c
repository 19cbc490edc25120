/*
 * cloq_cmd_verify.c - `cloq verify OUT`: re-check every checksum of a job's output.
 *
 * For every shard the job says is done: the file's XXH3 against the journal (and the manifest,
 * when the job finished), then every checksum inside the shard (header table, each tensor's zstd
 * content checksum and XXH3-128, seek table). Shards are checked in parallel. Every bad shard and
 * tensor is named; the exit status is 4 if anything does not hold, else 6 if the job is unfinished.
 * The job is opened as ppl and export open it (cloq_jobcheck.h): the same status and message for
 * a job that is not one, busy, damaged, or a shard that is missing or from another job.
 */
#include <stdio.h>
#include <string.h>

#include "cloq_cli.h"
#include "cloq_jobcheck.h"
#include "cloq_shard.h"
#include "cloq_sys.h"

static const char help[] =
	"usage: cloq verify OUT\n"
	"\n"
	"Re-check every checksum of the conversion job in OUT: each shard's file hash against the journal\n"
	"and manifest, and inside each shard the header table, every tensor (zstd content checksum and\n"
	"XXH3-128) and the seek table. Names every bad shard and tensor. Of an unfinished job, checks the\n"
	"shards written so far and says which layers are still to convert.\n"
	"exit status: 0 the job is finished and every checksum holds\n"
	"             2 OUT is not a cloq job (no such directory, not a directory, no journal.json)\n"
	"             3 a file could not be read\n"
	"             4 integrity failure: a shard damaged, missing or from another job, journal.json or\n"
	"               manifest.json damaged (4 wins over 6)\n"
	"             5 a convert or resume is writing OUT (the message names its pid)\n"
	"             6 the shards written so far hold, but the job is unfinished: 'cloq resume OUT'\n";

typedef struct item {
	const cloq_job_shard *s;
	int status;           /* CLOQ_OK or an error */
	char msg[CLOQ_ERR_MSG_MAX + 256];
} item;

static void check_one(const char *out, item *it)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", out, it->s->rel);
	cloq_err err;
	cloq_err_clear(&err);
	if (!cloq_file_exists(path)) {
		it->status = CLOQ_EINTEGRITY;
		snprintf(it->msg, sizeof it->msg, "%s: missing", it->s->rel);
		return;
	}
	/* inside the shard first: a damaged tensor is named, not only the file's hash */
	cloq_shard_report rep;
	int rc = cloq_shard_verify(path, &rep, &err);
	cloq_shard_report_free(&rep);
	if (rc != CLOQ_OK) {
		it->status = CLOQ_EINTEGRITY;
		snprintf(it->msg, sizeof it->msg, "%s", err.msg);
		return;
	}
	/* the whole file's hash, against what the job recorded when it wrote it: as ppl and export */
	it->status = cloq_job_check_shard(out, it->s, it->msg, sizeof it->msg);
}

int cloq_cmd_verify(int argc, char **argv, cloq_err *err)
{
	if (cloq_cli_wants_help(argc, argv) || argc != 2) {
		fputs(help, argc != 2 ? stderr : stdout);
		return argc != 2 ? cloq_err_set(err, CLOQ_EUSAGE, "expected exactly one OUT directory") : CLOQ_OK;
	}
	const char *out = argv[1];
	if (out[0] == '-' && out[1] != '\0')
		return cloq_err_set(err, CLOQ_EUSAGE, "unknown option '%s'", out);
	int rc = CLOQ_OK;
	cloq_jobread jr;
	item *items = NULL;
	CLOQ_TRY(cloq_job_open_read(out, "cloq verify", 0, &jr, err));
	int todo = jr.nshards;
	items = cloq_calloc((size_t)todo + 1, sizeof *items);
	CLOQ_FAIL_IF(!items, err, CLOQ_EIO, "out of memory");
	for (int i = 0; i < todo; i++)
		items[i].s = &jr.shards[i];
#pragma omp parallel for schedule(dynamic, 1) if (todo > 1)
	for (int i = 0; i < todo; i++)
		check_one(out, &items[i]);
	int bad = 0, worst = CLOQ_OK;
	for (int i = 0; i < todo; i++) {
		if (items[i].status == CLOQ_OK) {
			printf("ok    %s\n", items[i].s->rel);
		} else {
			printf("BAD   %s\n      %s\n", items[i].s->rel, items[i].msg);
			bad++;
			/* an integrity failure wins over a read error */
			if (worst != CLOQ_EINTEGRITY)
				worst = items[i].status;
		}
	}
	if (bad) {
		rc = cloq_err_set(err, worst, "%d of %d shards failed verification (see above)", bad, todo);
	} else {
		printf("%s: all %d shards verified (%d of %d layers done%s)\n", out, todo, jr.layers_done, jr.j.nlayers,
		       jr.j.finished ? ", job finished" : ", job unfinished");
		/* exit 0 means finished and intact: scripts may trust it */
		rc = cloq_job_require_finished(out, &jr.j, err);
	}
fail:
	cloq_free(items);
	cloq_job_close_read(&jr);
	return rc;
}
