/*
 * cloq_prefetch.h - decoder layers read ahead: while layer l is being converted, layer l+1's bytes
 * arrive through the streaming reader (io_uring, O_DIRECT where the file system allows, pread
 * otherwise) into one buffer of a layer's raw bytes: layer l's bytes left it (converted to fp32)
 * when l was taken, before l+1 was started.
 *
 * Each layer's raw bytes are hashed (XXH3) on the way in; cloq_prefetch_take returns a digest
 * of the layer's tensors so the job can record what it converted without another pass.
 */
#ifndef CLOQ_PREFETCH_H
#define CLOQ_PREFETCH_H

#include <stdint.h>

#include "cloq_llama.h"
#include "cloq_model.h"

typedef struct cloq_prefetch cloq_prefetch;

int cloq_prefetch_create(cloq_model *m, cloq_prefetch **out, cloq_err *err);
void cloq_prefetch_free(cloq_prefetch *p);
/* Start reading layer l in the background (no-op when already started or l is out of range). */
int cloq_prefetch_start(cloq_prefetch *p, int l, cloq_err *err);
/* Layer l as fp32 weights (allocated; cloq_layer_w_free), waiting for its bytes if needed (and
 * starting the read if nobody did). *digest = XXH3 over the layer's tensor hashes. *wait_s = time
 * spent blocked on the disk. */
int cloq_prefetch_take(cloq_prefetch *p, int l, cloq_layer_w *w, uint64_t *digest, double *wait_s, cloq_err *err);
const char *cloq_prefetch_backend(const cloq_prefetch *p);

#endif
