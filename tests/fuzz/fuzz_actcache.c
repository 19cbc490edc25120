/* fuzz_actcache.c - libFuzzer target: arbitrary bytes as an activation cache file. Open and read
 * every frame (random access and sequential) must return a status, never crash or leak. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cloq_actcache.h"
#include "cloq_sys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd = memfd_create("fuzz_actcache", 0);
	if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size))
		abort();
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	cloq_err err;
	cloq_cache_reader *r = NULL;
	if (cloq_cache_open(path, &r, &err) == CLOQ_OK) {
		size_t n;
		/* a forged row count could ask for gigabytes: only chase modest frames */
		if (cloq_mul_ok((size_t)cloq_cache_max_frame_rows(r), cloq_cache_cols(r), &n) &&
		    n <= (16u << 20)) {
			float *buf = cloq_malloc((n ? n : 1) * sizeof(float));
			for (size_t k = 0; buf && k < cloq_cache_frames(r); k++)
				if (cloq_cache_read_frame(r, k, buf, NULL, &err) != CLOQ_OK)
					break;
			int got = 1;
			while (buf && got > 0 && cloq_cache_next(r, buf, 3, &got, &err) == CLOQ_OK)
				;
			cloq_free(buf);
		}
		cloq_cache_close(r);
	}
	close(fd);
	return 0;
}
