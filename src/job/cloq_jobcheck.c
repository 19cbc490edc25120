/* cloq_jobcheck.c - a conversion job opened for reading (see cloq_jobcheck.h). */
#include "cloq_jobcheck.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <xxhash.h>

#include "cloq_sys.h"

int cloq_file_xxh3_hex(const char *path, char hex[40], cloq_err *err)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return cloq_err_set(err, errno == ENOENT ? CLOQ_EINPUT : CLOQ_EIO, "%s: cannot open: %s", path,
				    strerror(errno));
	enum { CHUNK = 1 << 20 };
	char *buf = cloq_malloc(CHUNK);
	XXH3_state_t *st = XXH3_createState();
	if (!buf || !st) {
		fclose(f);
		cloq_free(buf);
		XXH3_freeState(st);
		return cloq_err_set(err, CLOQ_EIO, "%s: out of memory", path);
	}
	XXH3_64bits_reset(st);
	size_t n;
	while ((n = fread(buf, 1, CHUNK, f)) > 0)
		XXH3_64bits_update(st, buf, n);
	int bad = ferror(f);
	fclose(f);
	snprintf(hex, 40, "%016llx", (unsigned long long)XXH3_64bits_digest(st));
	XXH3_freeState(st);
	cloq_free(buf);
	return bad ? cloq_err_set(err, CLOQ_EIO, "%s: read error", path) : CLOQ_OK;
}

int cloq_job_check_shard(const char *out, const cloq_job_shard *s, char *msg, size_t cap)
{
	char path[4096], hex[40];
	cloq_err e;
	cloq_err_clear(&e);
	snprintf(path, sizeof path, "%s/%s", out, s->rel);
	int rc = cloq_file_xxh3_hex(path, hex, &e);
	if (rc == CLOQ_EINPUT) {
		snprintf(msg, cap, "%s: missing", s->rel);
		return CLOQ_EINTEGRITY;
	}
	if (rc) {
		snprintf(msg, cap, "%s", e.msg);
		return rc;
	}
	if (s->journal[0] && strcmp(hex, s->journal) != 0) {
		snprintf(msg, cap, "%s: file hash %s differs from the journal's %s (replaced?)", s->rel, hex, s->journal);
		return CLOQ_EINTEGRITY;
	}
	if (s->manifest[0] && strcmp(hex, s->manifest) != 0) {
		snprintf(msg, cap, "%s: file hash %s differs from the manifest's %s", s->rel, hex, s->manifest);
		return CLOQ_EINTEGRITY;
	}
	msg[0] = '\0';
	return CLOQ_OK;
}

/* "3", "3-4", "1, 3-4, 7" into buf: the layers not done. Returns how many. */
static int missing_layers(const cloq_journal *j, char *buf, size_t cap)
{
	int count = 0;
	size_t len = 0;
	buf[0] = '\0';
	for (int l = 0; l < j->nlayers; l++) {
		if (j->layer_done[l])
			continue;
		int e = l;
		while (e + 1 < j->nlayers && !j->layer_done[e + 1])
			e++;
		count += e - l + 1;
		if (len + 32 < cap) {
			int w = e > l ? snprintf(buf + len, cap - len, "%s%d-%d", len ? ", " : "", l, e)
				      : snprintf(buf + len, cap - len, "%s%d", len ? ", " : "", l);
			len += (size_t)w;
		} else if (len + 5 < cap && strcmp(buf + len - 3, "...") != 0) {
			len += (size_t)snprintf(buf + len, cap - len, ", ...");
		}
		l = e;
	}
	return count;
}

int cloq_job_require_finished(const char *out, const cloq_journal *j, cloq_err *err)
{
	if (j->finished)
		return CLOQ_OK;
	char list[256];
	int n = missing_layers(j, list, sizeof list);
	char what[400];
	if (n)
		snprintf(what, sizeof what, "%s %s (of 0-%d) %s not converted yet", n == 1 ? "layer" : "layers", list,
			 j->nlayers - 1, n == 1 ? "is" : "are");
	else if (!j->base_done)
		snprintf(what, sizeof what, "shards/base.cloqshard is not written yet");
	else
		snprintf(what, sizeof what, "every shard is written, but not manifest.json");
	return cloq_err_set(err, CLOQ_EINCOMPLETE, "%s: the job is unfinished: %s; finish it with 'cloq resume %s'", out,
			    what, out);
}

void cloq_job_close_read(cloq_jobread *jr)
{
	cloq_free(jr->shards);
	cJSON_Delete(jr->manifest);
	cloq_journal_free(&jr->j);
	cloq_lock_release(&jr->lock);
	memset(jr, 0, sizeof *jr);
	jr->lock.fd = -1;
}

/* manifest.json of a finished job: present and valid JSON, else the job is damaged. */
static int load_manifest(const char *out, cJSON **man, cloq_err *err)
{
	int rc = CLOQ_OK;
	char path[4096], *text = NULL;
	size_t len;
	snprintf(path, sizeof path, "%s/manifest.json", out);
	CLOQ_FAIL_IF(!cloq_file_exists(path), err, CLOQ_EINTEGRITY, "%s: missing, but the journal says the job finished",
		     path);
	CLOQ_TRY(cloq_read_file(path, &text, &len, err));
	*man = cJSON_Parse(text);
	CLOQ_FAIL_IF(!*man || !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(*man, "shards")), err, CLOQ_EINTEGRITY,
		     "%s is damaged: not valid JSON or no 'shards' list", path);
fail:
	cloq_free(text);
	return rc;
}

int cloq_job_open_read(const char *out, const char *what, int flags, cloq_jobread *jr, cloq_err *err)
{
	int rc = CLOQ_OK;
	char path[4096];
	memset(jr, 0, sizeof *jr);
	jr->lock.fd = -1;
	struct stat st;
	if (stat(out, &st) != 0) {
		int e = errno;
		CLOQ_FAIL_IF(e == ENOENT || e == ENOTDIR, err, CLOQ_EINPUT, "%s: no such directory (not a cloq job)", out);
		CLOQ_FAIL_IF(1, err, CLOQ_EIO, "%s: cannot stat: %s", out, strerror(e));
	}
	CLOQ_FAIL_IF(!S_ISDIR(st.st_mode), err, CLOQ_EINPUT, "%s is not a directory (not a cloq job)", out);
	snprintf(path, sizeof path, "%s/journal.json", out);
	if (!cloq_file_exists(path)) {
		/* a writer that has not saved its first journal yet still makes OUT busy */
		snprintf(path, sizeof path, "%s/job.lock", out);
		if (cloq_file_exists(path))
			CLOQ_TRY(cloq_lock_take(out, 0, what, &jr->lock, err));
		CLOQ_FAIL_IF(1, err, CLOQ_EINPUT, "%s is not a cloq job (it has no journal.json)", out);
	}
	CLOQ_TRY(cloq_lock_take(out, 0, what, &jr->lock, err));
	rc = cloq_journal_load(out, &jr->j, err);
	if (rc == CLOQ_EINPUT) /* gone since the check above */
		CLOQ_FAIL_IF(1, err, CLOQ_EINPUT, "%s is not a cloq job (it has no journal.json)", out);
	CLOQ_TRY(rc);
	if (jr->j.finished)
		CLOQ_TRY(load_manifest(out, &jr->manifest, err));

	const cloq_journal *j = &jr->j;
	jr->shards = cloq_calloc((size_t)j->nlayers + 1, sizeof *jr->shards);
	CLOQ_FAIL_IF(!jr->shards, err, CLOQ_EIO, "out of memory");
	for (int l = 0; l <= j->nlayers; l++) {
		cloq_job_shard *s = &jr->shards[jr->nshards];
		if (l < j->nlayers) {
			if (!j->layer_done[l])
				continue;
			jr->layers_done++;
			s->layer = l;
			snprintf(s->rel, sizeof s->rel, "shards/layer_%05d.cloqshard", l);
			snprintf(s->journal, sizeof s->journal, "%s", j->layer_hash[l]);
		} else {
			if (!j->base_done)
				continue;
			s->layer = -1;
			snprintf(s->rel, sizeof s->rel, "shards/base.cloqshard");
		}
		const cJSON *e;
		cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(jr->manifest, "shards"))
		{
			const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "file");
			const cJSON *h = cJSON_GetObjectItemCaseSensitive(e, "xxh3");
			if (cJSON_IsString(f) && cJSON_IsString(h) && !strcmp(f->valuestring, s->rel))
				snprintf(s->manifest, sizeof s->manifest, "%s", h->valuestring);
		}
		/* a finished job's manifest lists every shard: the base shard has no other hash */
		CLOQ_FAIL_IF(jr->manifest && !s->manifest[0], err, CLOQ_EINTEGRITY, "%s: not listed in %s/manifest.json",
			     s->rel, out);
		jr->nshards++;
	}

	if (flags & CLOQ_JOB_HASHES) {
		int n = jr->nshards, first = -1, nbad = 0;
		/* threads pay only for big jobs: a few MB hash in less time than a parallel region
		 * takes to start on a busy machine */
		double total = 0;
		for (int i = 0; i < n; i++) {
			snprintf(path, sizeof path, "%s/%s", out, jr->shards[i].rel);
			if (stat(path, &st) == 0)
				total += (double)st.st_size;
		}
		int *st_rc = cloq_calloc((size_t)n + 1, sizeof *st_rc);
		char(*msg)[CLOQ_ERR_MSG_MAX] = cloq_calloc((size_t)n + 1, sizeof *msg);
		if (!st_rc || !msg) {
			cloq_free(st_rc);
			cloq_free(msg);
			CLOQ_FAIL_IF(1, err, CLOQ_EIO, "out of memory");
		}
#pragma omp parallel for schedule(dynamic, 1) if (n > 1 && total > 64.0 * (1 << 20))
		for (int i = 0; i < n; i++)
			st_rc[i] = cloq_job_check_shard(out, &jr->shards[i], msg[i], sizeof msg[i]);
		for (int i = 0; i < n; i++)
			if (st_rc[i] != CLOQ_OK) {
				nbad++;
				if (first < 0)
					first = i;
			}
		if (first >= 0) {
			if (nbad > 1)
				rc = cloq_err_set(err, st_rc[first], "%s: %s (and %d more bad shard%s: 'cloq verify %s' names them)",
						  out, msg[first], nbad - 1, nbad == 2 ? "" : "s", out);
			else
				rc = cloq_err_set(err, st_rc[first], "%s: %s", out, msg[first]);
		}
		cloq_free(st_rc);
		cloq_free(msg);
		if (rc)
			goto fail;
	}
	if (flags & CLOQ_JOB_FINISHED)
		CLOQ_TRY(cloq_job_require_finished(out, &jr->j, err));
	return CLOQ_OK;
fail:
	cloq_job_close_read(jr);
	return rc;
}
