/*
 * cloq_prefetch.h - decoder layers read ahead: while layer l is being converted, layer l+1's bytes
 * arrive through the streaming reader (io_uring, O_DIRECT where the file system allows, pread
 * otherwise) into one buffer of a layer's raw bytes: layer l's bytes left it (converted to fp32)
 * when l was taken, before l+1 was started.
 *
 * Each tensor's raw bytes are hashed (XXH3) before conversion; cloq_prefetch_take returns them
 * by name, and a digest of them all, so the job records what it converted without another pass.
 */
#ifndef CLOQ_PREFETCH_H
#define CLOQ_PREFETCH_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "cloq_llama.h"
#include "cloq_model.h"

typedef struct cloq_prefetch cloq_prefetch;

int cloq_prefetch_create(cloq_model *m, cloq_prefetch **out, cloq_err *err);
void cloq_prefetch_free(cloq_prefetch *p);
/* Start reading layer l in the background (no-op when already started, l is out of range, or l is
 * a sparse layer: the converter streams those expert by expert, and take refuses them). */
int cloq_prefetch_start(cloq_prefetch *p, int l, cloq_err *err);
/* Layer l as fp32 weights (allocated; cloq_layer_w_free), waiting for its bytes if needed (and
 * starting the read if nobody did). *digest = XXH3 over the layer's tensor hashes; *inputs (if
 * non-NULL) = a new object {"tensor name": "xxh3 hex"} of the bytes read. *wait_s = time spent
 * blocked on the disk. */
int cloq_prefetch_take(cloq_prefetch *p, int l, cloq_layer_w *w, uint64_t *digest, cJSON **inputs, double *wait_s,
		       cloq_err *err);
const char *cloq_prefetch_backend(const cloq_prefetch *p);

#endif
