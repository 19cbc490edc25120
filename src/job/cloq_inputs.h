/*
 * cloq_inputs.h - what a conversion job consumed from the model, pinned by content.
 *
 * A job's output is the conversion of the model as it is when the job finishes, exactly: every
 * tensor a finished layer (or the base shard) was made from is recorded in the journal with the
 * XXH3-64 of its bytes, hashed as it was read for the conversion (no extra pass), and each
 * safetensors file's identity (device, inode, size, mtime and ctime in ns) is recorded too.
 *
 * - Between runs: a file whose identity is unchanged has unchanged bytes (ctime moves on every
 *   write and cannot be set by a process). For a file whose identity changed, the tensors the
 *   finished work came from are hashed again and compared: a difference refuses the resume naming
 *   the file and the tensor; equal hashes (a copied or touched file) let the job go on, since the
 *   layers not yet converted will be read from the file as it is now.
 * - During a run: after a layer's bytes have been read and before they are used, every file's
 *   identity is compared with the one at the start of the run; an edited or replaced file stops
 *   the run (CLOQ_EINPUT, resumable) before its bytes go into the output.
 */
#ifndef CLOQ_INPUTS_H
#define CLOQ_INPUTS_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "cloq_error.h"
#include "cloq_safetensors.h"

#define CLOQ_FILE_ID_MAX 128

/* "dev:ino:size:mtime_ns:ctime_ns" of a file (stat follows symlinks, as reading does). */
int cloq_inputs_file_id(const char *path, char out[CLOQ_FILE_ID_MAX], cloq_err *err);

/* The identities of all of st's files: [{"file": basename, "id": "..."}] (new object). */
int cloq_inputs_files_json(const cloq_st_model *st, cJSON **out, cloq_err *err);

/* Compare the files now with `recorded` (from cloq_inputs_files_json). changed[i] (one per file of
 * st) is set for a file whose identity differs or is not recorded. Returns how many changed. */
int cloq_inputs_files_changed(const cloq_st_model *st, const cJSON *recorded, int *changed);

/* During a run: CLOQ_EINPUT naming the first file whose identity differs from `at_start`. */
int cloq_inputs_check_unchanged(const cloq_st_model *st, const cJSON *at_start, cloq_err *err);

/* XXH3-64 of a tensor's bytes as "%016llx" (the form the journal keeps). */
void cloq_inputs_hex(uint64_t h, char out[17]);

/* Hash a tensor's bytes from its file, streamed (the resume check; no buffer of tensor size). */
int cloq_inputs_hash_tensor(const cloq_st_model *st, const cloq_st_tensor *t, uint64_t *h, cloq_err *err);

/* Check `recorded` ({"tensor name": "xxh3 hex"}) against the files: tensors in files with
 * changed[file] set are hashed again. `what` says what was made from them ("layer 3"). A tensor
 * that is gone or whose bytes differ is CLOQ_EINPUT naming the file and the tensor. *checked
 * counts the tensors hashed. */
int cloq_inputs_check(const cloq_st_model *st, const cJSON *recorded, const int *changed, const char *what,
		      int *checked, cloq_err *err);

#endif
