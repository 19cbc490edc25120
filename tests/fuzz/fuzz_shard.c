/* fuzz_shard.c - libFuzzer target: arbitrary bytes as a shard file. Open, read every tensor and
 * verify must return a status (never crash, leak or read out of bounds), and agree: a file that
 * opens and reads cleanly must verify clean. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cloq_shard.h"
#include "cloq_sys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd = memfd_create("fuzz_shard", 0);
	if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size))
		abort();
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	cloq_err err;
	cloq_shard *s = NULL;
	int clean = 0;
	if (cloq_shard_open(path, &s, &err) == CLOQ_OK) {
		clean = 1;
		for (size_t i = 0; i < cloq_shard_count(s); i++) {
			uint64_t nb = cloq_shard_nbytes(s, i);
			if (nb > (64u << 20)) { /* a forged size: do not chase it */
				clean = 0;
				continue;
			}
			void *buf = cloq_malloc((size_t)nb);
			if (!buf || cloq_shard_read(s, i, buf, (size_t)nb, &err) != CLOQ_OK)
				clean = 0;
			cloq_free(buf);
		}
		cloq_shard_close(s);
	}
	cloq_shard_report rep;
	int rc = cloq_shard_verify(path, &rep, &err);
	if (clean && rc != CLOQ_OK)
		abort();
	cloq_shard_report_free(&rep);
	close(fd);
	return 0;
}
