/* cloq_inputs.c - content fingerprints of a job's inputs (see cloq_inputs.h). */
#include "cloq_inputs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "cloq_sys.h"

static const char *base_name(const char *p)
{
	const char *b = strrchr(p, '/');
	return b ? b + 1 : p;
}

int cloq_inputs_file_id(const char *path, char out[CLOQ_FILE_ID_MAX], cloq_err *err)
{
	struct stat st;
	if (stat(path, &st) != 0)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: cannot stat: %s", path, strerror(errno));
	snprintf(out, CLOQ_FILE_ID_MAX, "%llu:%llu:%llu:%lld%09ld:%lld%09ld", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino, (unsigned long long)st.st_size, (long long)st.st_mtim.tv_sec,
		 st.st_mtim.tv_nsec, (long long)st.st_ctim.tv_sec, st.st_ctim.tv_nsec);
	return CLOQ_OK;
}

int cloq_inputs_files_json(const cloq_st_model *st, cJSON **out, cloq_err *err)
{
	int rc = CLOQ_OK;
	cJSON *a = cJSON_CreateArray();
	CLOQ_FAIL_IF(!a, err, CLOQ_EIO, "out of memory");
	for (size_t i = 0; i < cloq_st_nfiles(st); i++) {
		char id[CLOQ_FILE_ID_MAX];
		const char *p = cloq_st_file_path(st, i);
		CLOQ_TRY(cloq_inputs_file_id(p, id, err));
		cJSON *e = cJSON_CreateObject();
		CLOQ_FAIL_IF(!e, err, CLOQ_EIO, "out of memory");
		cJSON_AddItemToArray(a, e);
		cJSON_AddStringToObject(e, "file", base_name(p));
		cJSON_AddStringToObject(e, "id", id);
	}
	*out = a;
	return CLOQ_OK;
fail:
	cJSON_Delete(a);
	return rc;
}

static const char *recorded_id(const cJSON *recorded, const char *file)
{
	const cJSON *e;
	cJSON_ArrayForEach(e, recorded)
	{
		const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "file");
		const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
		if (cJSON_IsString(f) && cJSON_IsString(id) && !strcmp(f->valuestring, file))
			return id->valuestring;
	}
	return NULL;
}

int cloq_inputs_files_changed(const cloq_st_model *st, const cJSON *recorded, int *changed)
{
	int n = 0;
	for (size_t i = 0; i < cloq_st_nfiles(st); i++) {
		char id[CLOQ_FILE_ID_MAX];
		const char *p = cloq_st_file_path(st, i);
		const char *was = recorded_id(recorded, base_name(p));
		changed[i] = !was || cloq_inputs_file_id(p, id, NULL) != CLOQ_OK || strcmp(was, id) != 0;
		n += changed[i];
	}
	return n;
}

int cloq_inputs_check_unchanged(const cloq_st_model *st, const cJSON *at_start, cloq_err *err)
{
	for (size_t i = 0; i < cloq_st_nfiles(st); i++) {
		char id[CLOQ_FILE_ID_MAX];
		const char *p = cloq_st_file_path(st, i);
		const char *was = recorded_id(at_start, base_name(p));
		int rc = cloq_inputs_file_id(p, id, err);
		if (rc)
			return cloq_err_wrap(err, CLOQ_EINPUT, "%s changed during the run (it was there at the start)", p);
		if (!was || strcmp(was, id) != 0)
			return cloq_err_set(err, CLOQ_EINPUT,
					    "%s was modified or replaced during the run (file identity %s, now %s): stopped "
					    "before using its bytes. 'cloq resume' re-checks the tensors the finished layers "
					    "were made from and goes on if they are unchanged",
					    p, was ? was : "?", id);
	}
	return CLOQ_OK;
}

void cloq_inputs_hex(uint64_t h, char out[17])
{
	snprintf(out, 17, "%016llx", (unsigned long long)h);
}

int cloq_inputs_hash_tensor(const cloq_st_model *st, const cloq_st_tensor *t, uint64_t *h, cloq_err *err)
{
	int rc = CLOQ_OK;
	const char *path = cloq_st_file_path(st, (size_t)t->file);
	const size_t chunk = 8u << 20;
	char *buf = NULL;
	XXH3_state_t *xs = XXH3_createState();
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	CLOQ_FAIL_IF(fd < 0, err, CLOQ_EINPUT, "%s: cannot open: %s", path, strerror(errno));
	buf = cloq_malloc(chunk);
	CLOQ_FAIL_IF(!buf || !xs, err, CLOQ_EIO, "out of memory");
	XXH3_64bits_reset(xs);
	for (uint64_t off = 0; off < t->nbytes; off += chunk) {
		size_t n = t->nbytes - off < chunk ? (size_t)(t->nbytes - off) : chunk;
		CLOQ_TRY(cloq_pread_all(fd, buf, n, t->offset + off, path, err));
		XXH3_64bits_update(xs, buf, n);
	}
	*h = XXH3_64bits_digest(xs);
fail:
	if (fd >= 0)
		close(fd);
	cloq_free(buf);
	XXH3_freeState(xs);
	return rc;
}

int cloq_inputs_check(const cloq_st_model *st, const cJSON *recorded, const int *changed, const char *what,
		      int *checked, cloq_err *err)
{
	const cJSON *e;
	cJSON_ArrayForEach(e, recorded)
	{
		if (!cJSON_IsString(e))
			continue;
		const cloq_st_tensor *t = cloq_st_find(st, e->string);
		if (!t)
			return cloq_err_set(err, CLOQ_EINPUT, "tensor '%s', from which %s was made, is no longer in the model",
					    e->string, what);
		if (!changed[t->file])
			continue;
		uint64_t h;
		char hex[17];
		int rc = cloq_inputs_hash_tensor(st, t, &h, err);
		if (rc)
			return rc;
		(*checked)++;
		cloq_inputs_hex(h, hex);
		if (strcmp(hex, e->valuestring) != 0)
			return cloq_err_set(err, CLOQ_EINPUT,
					    "%s: tensor '%s' changed since this job converted %s from it (xxh3 %s, now %s): "
					    "the finished part would not match the rest. Restore the file, or --force "
					    "to start over",
					    cloq_st_file_path(st, (size_t)t->file), t->name, what, e->valuestring, hex);
	}
	return CLOQ_OK;
}
