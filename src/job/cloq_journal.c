/* cloq_journal.c - the job journal (see cloq_journal.h). */
#include "cloq_journal.h"

#include <stdio.h>
#include <string.h>

#include "cloq_sys.h"

int cloq_journal_init(cloq_journal *j, int nlayers, cJSON *settings, cJSON *fingerprint, cloq_err *err)
{
	memset(j, 0, sizeof *j);
	j->nlayers = nlayers;
	j->layer_done = cloq_calloc((size_t)nlayers, sizeof(int));
	j->layer_hash = cloq_calloc((size_t)nlayers, sizeof *j->layer_hash);
	j->layer_report = cloq_calloc((size_t)nlayers, sizeof *j->layer_report);
	j->layer_inputs = cloq_calloc((size_t)nlayers, sizeof *j->layer_inputs);
	j->settings = settings;
	j->fingerprint = fingerprint;
	if (!j->layer_done || !j->layer_hash || !j->layer_report || !j->layer_inputs) {
		cloq_journal_free(j);
		return cloq_err_set(err, CLOQ_EIO, "out of memory");
	}
	return CLOQ_OK;
}

void cloq_journal_free(cloq_journal *j)
{
	if (j->layer_report)
		for (int l = 0; l < j->nlayers; l++)
			cJSON_Delete(j->layer_report[l]);
	if (j->layer_inputs)
		for (int l = 0; l < j->nlayers; l++)
			cJSON_Delete(j->layer_inputs[l]);
	cloq_free(j->layer_report);
	cloq_free(j->layer_inputs);
	cJSON_Delete(j->base_inputs);
	cJSON_Delete(j->input_files);
	cloq_free(j->layer_done);
	cloq_free(j->layer_hash);
	cJSON_Delete(j->settings);
	cJSON_Delete(j->fingerprint);
	memset(j, 0, sizeof *j);
}

int cloq_journal_save(const char *out_dir, const cloq_journal *j, cloq_err *err)
{
	int rc = CLOQ_OK;
	char path[4096];
	char *text = NULL;
	snprintf(path, sizeof path, "%s/journal.json", out_dir);
	cJSON *root = cJSON_CreateObject(), *layers = NULL;
	CLOQ_FAIL_IF(!root, err, CLOQ_EIO, "out of memory");
	cJSON_AddStringToObject(root, "format", "cloq-journal");
	cJSON_AddNumberToObject(root, "version", 1);
	cJSON_AddItemToObject(root, "settings", cJSON_Duplicate(j->settings, 1));
	cJSON_AddItemToObject(root, "fingerprint", cJSON_Duplicate(j->fingerprint, 1));
	layers = cJSON_AddArrayToObject(root, "layers");
	for (int l = 0; l < j->nlayers; l++) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddBoolToObject(o, "done", j->layer_done[l]);
		cJSON_AddStringToObject(o, "shard_xxh3", j->layer_hash[l]);
		if (j->layer_report[l])
			cJSON_AddItemToObject(o, "report", cJSON_Duplicate(j->layer_report[l], 1));
		if (j->layer_inputs[l])
			cJSON_AddItemToObject(o, "inputs", cJSON_Duplicate(j->layer_inputs[l], 1));
		cJSON_AddItemToArray(layers, o);
	}
	cJSON_AddBoolToObject(root, "base_done", j->base_done);
	if (j->base_inputs)
		cJSON_AddItemToObject(root, "base_inputs", cJSON_Duplicate(j->base_inputs, 1));
	if (j->input_files)
		cJSON_AddItemToObject(root, "input_files", cJSON_Duplicate(j->input_files, 1));
	cJSON_AddBoolToObject(root, "finished", j->finished);
	text = cJSON_Print(root);
	CLOQ_FAIL_IF(!text, err, CLOQ_EIO, "out of memory");
	size_t n = strlen(text);
	text[n] = '\n';
	rc = cloq_write_file_atomic(path, text, n + 1, err);
fail:
	cJSON_free(text);
	cJSON_Delete(root);
	return rc;
}

int cloq_journal_load(const char *out_dir, cloq_journal *j, cloq_err *err)
{
	int rc = CLOQ_OK;
	char path[4096];
	char *text = NULL;
	size_t n;
	cJSON *root = NULL;
	memset(j, 0, sizeof *j);
	snprintf(path, sizeof path, "%s/journal.json", out_dir);
	/* absent: no job here (CLOQ_EINPUT, from cloq_read_file); unreadable: CLOQ_EIO */
	CLOQ_TRY(cloq_read_file(path, &text, &n, err));
	/* present: whatever does not parse into a whole journal is a damaged one */
	root = cJSON_Parse(text);
	CLOQ_FAIL_IF(!root, err, CLOQ_EINTEGRITY, "%s is damaged: not valid JSON (%zu bytes; truncated?)", path, n);
	const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
	CLOQ_FAIL_IF(!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "cloq-journal"), err, CLOQ_EINTEGRITY,
		     "%s is damaged: not a cloq journal (no \"format\": \"cloq-journal\")", path);
	cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
	CLOQ_FAIL_IF(!cJSON_IsArray(layers) || !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "settings")) ||
			     !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "fingerprint")),
		     err, CLOQ_EINTEGRITY, "%s is damaged: missing 'layers', 'settings' or 'fingerprint'", path);
	const cJSON *base_done = cJSON_GetObjectItemCaseSensitive(root, "base_done");
	const cJSON *finished = cJSON_GetObjectItemCaseSensitive(root, "finished");
	CLOQ_FAIL_IF(!cJSON_IsBool(base_done) || !cJSON_IsBool(finished), err, CLOQ_EINTEGRITY,
		     "%s is damaged: missing 'base_done' or 'finished'", path);
	cJSON *settings = cJSON_DetachItemFromObjectCaseSensitive(root, "settings");
	cJSON *fp = cJSON_DetachItemFromObjectCaseSensitive(root, "fingerprint");
	CLOQ_TRY(cloq_journal_init(j, cJSON_GetArraySize(layers), settings, fp, err));
	int l = 0;
	const cJSON *o;
	cJSON_ArrayForEach(o, layers)
	{
		const cJSON *d = cJSON_GetObjectItemCaseSensitive(o, "done");
		const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "shard_xxh3");
		CLOQ_FAIL_IF(!cJSON_IsBool(d) || !cJSON_IsString(h) || (cJSON_IsTrue(d) && strlen(h->valuestring) != 16), err,
			     CLOQ_EINTEGRITY, "%s is damaged: layer %d has no 'done' flag or no shard hash", path, l);
		j->layer_done[l] = cJSON_IsTrue(d);
		snprintf(j->layer_hash[l], sizeof j->layer_hash[l], "%s", h->valuestring);
		const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "report");
		if (cJSON_IsObject(r))
			j->layer_report[l] = cJSON_Duplicate(r, 1);
		const cJSON *in = cJSON_GetObjectItemCaseSensitive(o, "inputs");
		if (cJSON_IsObject(in))
			j->layer_inputs[l] = cJSON_Duplicate(in, 1);
		l++;
	}
	j->base_done = cJSON_IsTrue(base_done);
	j->finished = cJSON_IsTrue(finished);
	/* convert clears 'finished' whenever it clears a layer's or the base's 'done' */
	for (l = 0; l < j->nlayers && j->finished; l++)
		CLOQ_FAIL_IF(!j->layer_done[l], err, CLOQ_EINTEGRITY,
			     "%s is damaged: it says the job finished, but layer %d is not done", path, l);
	CLOQ_FAIL_IF(j->finished && !j->base_done, err, CLOQ_EINTEGRITY,
		     "%s is damaged: it says the job finished, but the base shard is not written", path);
	const cJSON *bi = cJSON_GetObjectItemCaseSensitive(root, "base_inputs");
	if (cJSON_IsObject(bi))
		j->base_inputs = cJSON_Duplicate(bi, 1);
	const cJSON *inf = cJSON_GetObjectItemCaseSensitive(root, "input_files");
	if (cJSON_IsArray(inf))
		j->input_files = cJSON_Duplicate(inf, 1);
fail:
	if (rc)
		cloq_journal_free(j);
	cJSON_Delete(root);
	cloq_free(text);
	return rc;
}

int cloq_journal_load_writer(const char *out_dir, cloq_journal *j, cloq_err *err)
{
	int rc = cloq_journal_load(out_dir, j, err);
	if (rc == CLOQ_EINTEGRITY && err) {
		char why[CLOQ_ERR_MSG_MAX];
		memcpy(why, err->msg, sizeof why);
		cloq_err_set(err, rc, "%s; the job cannot be resumed: 'cloq convert MODEL_DIR -o %s [options] --force' starts it over",
			     why, out_dir);
	}
	return rc;
}

int cloq_json_diff(const cJSON *old, const cJSON *cur, char *buf, size_t cap)
{
	const cJSON *a;
	cJSON_ArrayForEach(a, cur)
	{
		const cJSON *b = cJSON_GetObjectItemCaseSensitive(old, a->string);
		if (!b || !cJSON_Compare(a, b, 1)) {
			char *sa = cJSON_PrintUnformatted(a), *sb = b ? cJSON_PrintUnformatted(b) : NULL;
			snprintf(buf, cap, "%s: %s -> %s", a->string, sb ? sb : "(absent)", sa ? sa : "?");
			cJSON_free(sa);
			cJSON_free(sb);
			return 1;
		}
	}
	cJSON_ArrayForEach(a, old)
	{
		if (!cJSON_GetObjectItemCaseSensitive(cur, a->string)) {
			snprintf(buf, cap, "%s: no longer given", a->string);
			return 1;
		}
	}
	return 0;
}
