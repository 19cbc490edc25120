/*
 * cloq_cmd_verify.c - `cloq verify OUT`: re-check every checksum of a job's output.
 *
 * For every shard the job says is done: the file's XXH3 against the journal (and the manifest,
 * when the job finished), then every checksum inside the shard (header table, each tensor's zstd
 * content checksum and XXH3-128, seek table). Shards are checked in parallel. Every bad shard and
 * tensor is named; the exit status is 4 if anything does not hold.
 */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <xxhash.h>

#include "cloq_cli.h"
#include "cloq_journal.h"
#include "cloq_shard.h"
#include "cloq_sys.h"

static const char help[] =
	"usage: cloq verify OUT\n"
	"\n"
	"Re-check every checksum of the conversion job in OUT: each shard's file hash against the journal\n"
	"and manifest, and inside each shard the header table, every tensor (zstd content checksum and\n"
	"XXH3-128) and the seek table. Names every bad shard and tensor.\n"
	"exit status: 0 all hold, 4 integrity failure, 2 OUT is not a cloq job\n";

typedef struct item {
	char rel[64];
	char want[40];        /* expected file XXH3 (journal) */
	char manifest[40];    /* from the manifest, "" when absent */
	int status;           /* CLOQ_OK or an error */
	char msg[CLOQ_ERR_MSG_MAX + 256];
} item;

static void check_one(const char *out, item *it)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", out, it->rel);
	cloq_err err;
	cloq_err_clear(&err);
	if (!cloq_file_exists(path)) {
		it->status = CLOQ_EINTEGRITY;
		snprintf(it->msg, sizeof it->msg, "%s: missing", it->rel);
		return;
	}
	cloq_shard_report rep;
	int rc = cloq_shard_verify(path, &rep, &err);
	if (rc != CLOQ_OK) {
		it->status = CLOQ_EINTEGRITY;
		snprintf(it->msg, sizeof it->msg, "%s", err.msg);
		cloq_shard_report_free(&rep);
		return;
	}
	cloq_shard_report_free(&rep);
	/* the whole file's hash, against what the job recorded when it wrote it */
	FILE *f = fopen(path, "rb");
	XXH3_state_t *st = XXH3_createState();
	XXH3_64bits_reset(st);
	char buf[1 << 16];
	size_t n;
	while (f && (n = fread(buf, 1, sizeof buf, f)) > 0)
		XXH3_64bits_update(st, buf, n);
	if (f)
		fclose(f);
	char hex[40];
	snprintf(hex, sizeof hex, "%016llx", (unsigned long long)XXH3_64bits_digest(st));
	XXH3_freeState(st);
	if (it->want[0] && strcmp(hex, it->want) != 0) {
		it->status = CLOQ_EINTEGRITY;
		snprintf(it->msg, sizeof it->msg, "%s: file hash %s differs from the journal's %s (replaced?)", it->rel, hex,
			 it->want);
	} else if (it->manifest[0] && strcmp(hex, it->manifest) != 0) {
		it->status = CLOQ_EINTEGRITY;
		snprintf(it->msg, sizeof it->msg, "%s: file hash %s differs from the manifest's %s", it->rel, hex, it->manifest);
	}
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
	cloq_journal j;
	cJSON *man = NULL;
	item *items = NULL;
	char path[4096];
	char *text = NULL;
	size_t len;
	memset(&j, 0, sizeof j);
	rc = cloq_journal_load(out, &j, err);
	if (rc)
		return cloq_err_wrap(err, CLOQ_EINPUT, "%s is not a cloq job", out);
	snprintf(path, sizeof path, "%s/manifest.json", out);
	if (j.finished) {
		CLOQ_FAIL_IF(!cloq_file_exists(path), err, CLOQ_EINTEGRITY, "%s: missing, but the journal says the job finished",
			     path);
		CLOQ_TRY(cloq_read_file(path, &text, &len, err));
		man = cJSON_Parse(text);
		CLOQ_FAIL_IF(!man, err, CLOQ_EINTEGRITY, "%s: not valid JSON", path);
	}
	int n = j.nlayers + 1, todo = 0;
	items = cloq_calloc((size_t)n, sizeof *items);
	CLOQ_FAIL_IF(!items, err, CLOQ_EIO, "out of memory");
	for (int l = 0; l < n; l++) {
		item *it = &items[todo];
		if (l < j.nlayers) {
			if (!j.layer_done[l])
				continue;
			snprintf(it->rel, sizeof it->rel, "shards/layer_%05d.cloqshard", l);
			snprintf(it->want, sizeof it->want, "%s", j.layer_hash[l]);
		} else {
			if (!j.base_done)
				continue;
			snprintf(it->rel, sizeof it->rel, "shards/base.cloqshard");
		}
		const cJSON *e;
		cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(man, "shards"))
		{
			const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "file");
			const cJSON *h = cJSON_GetObjectItemCaseSensitive(e, "xxh3");
			if (cJSON_IsString(f) && cJSON_IsString(h) && !strcmp(f->valuestring, it->rel))
				snprintf(it->manifest, sizeof it->manifest, "%s", h->valuestring);
		}
		todo++;
	}
#pragma omp parallel for schedule(dynamic, 1) if (todo > 1)
	for (int i = 0; i < todo; i++)
		check_one(out, &items[i]);
	int bad = 0;
	for (int i = 0; i < todo; i++) {
		if (items[i].status == CLOQ_OK) {
			printf("ok    %s\n", items[i].rel);
		} else {
			printf("BAD   %s\n      %s\n", items[i].rel, items[i].msg);
			bad++;
		}
	}
	int done = 0;
	for (int l = 0; l < j.nlayers; l++)
		done += j.layer_done[l];
	if (bad) {
		rc = cloq_err_set(err, CLOQ_EINTEGRITY, "%d of %d shards failed verification (see above)", bad, todo);
	} else {
		printf("%s: all %d shards verified (%d of %d layers done%s)\n", out, todo, done, j.nlayers,
		       j.finished ? ", job finished" : ", job unfinished");
	}
fail:
	cloq_free(items);
	cloq_free(text);
	cJSON_Delete(man);
	cloq_journal_free(&j);
	return rc;
}
