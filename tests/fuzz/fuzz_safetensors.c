/*
 * fuzz_safetensors - libFuzzer target for cloq_st_parse_header, the parser every safetensors byte
 * from disk goes through. The input is a whole file (header length, JSON, data). A parse may fail
 * with CLOQ_EINPUT; it must never crash, leak, read out of bounds, or accept a header that breaks
 * the invariants the reader relies on (checked below: a violation aborts, which libFuzzer reports).
 * `make fuzz` builds this with clang -fsanitize=fuzzer,address,undefined and runs it for
 * FUZZ_SECONDS from the seeds in tests/fuzz/corpus/fuzz_safetensors/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_error.h"
#include "cloq_safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cloq_st_model *m = NULL;
	cloq_err err;
	cloq_err_clear(&err);
	int rc = cloq_st_parse_header(data, size, size, "fuzz.safetensors", &m, &err);
	if (rc != CLOQ_OK) {
		if (rc != CLOQ_EINPUT && rc != CLOQ_EIO)
			abort();
		if (m || err.code != rc || !err.msg[0])
			abort();
		return 0;
	}
	/* accepted: the tensors tile [data_offset, size) exactly, in file order */
	uint64_t pos = cloq_st_file_data_offset(m, 0);
	if (pos < 8 || pos > size)
		abort();
	size_t n = cloq_st_count(m);
	for (size_t i = 0; i < n; i++) {
		const cloq_st_tensor *t = cloq_st_tensor_at(m, i);
		if (t->offset != pos || t->file != 0 || t->ndim < 0 || t->ndim > CLOQ_ST_MAX_DIMS)
			abort();
		uint64_t ne = 1;
		for (int d = 0; d < t->ndim; d++) {
			if (t->shape[d] < 0)
				abort();
			ne *= (uint64_t)t->shape[d];
		}
		if (ne != t->nelem || t->nelem * cloq_dtype_size(t->dtype) != t->nbytes)
			abort();
		pos += t->nbytes;
		if (cloq_st_find(m, t->name) != t || cloq_st_index_of(m, t) != i)
			abort();
	}
	if (pos != size)
		abort();
	size_t idx[4];
	size_t nl = cloq_st_layer_tensors(m, 0, idx, 4);
	for (size_t i = 0; i < nl && i < 4; i++)
		if (strncmp(cloq_st_tensor_at(m, idx[i])->name, "model.layers.0.", 15) != 0)
			abort();
	(void)cloq_st_layer_count(m);
	(void)cloq_st_meta_get(m, "format");
	cloq_st_close(m);
	return 0;
}
