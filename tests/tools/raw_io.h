/* tests/tools/raw_io.h - whole raw files in and out, for the dump tools (errors exit: 2 on a
 * short or missing input, 3 when an output cannot be written). */
#ifndef CLOQ_TESTS_RAW_IO_H
#define CLOQ_TESTS_RAW_IO_H

#include <stdio.h>
#include <stdlib.h>

/* n bytes of `path` (exactly), malloc'd */
static void *raw_slurp(const char *tool, const char *path, size_t n)
{
	FILE *f = fopen(path, "rb");
	void *p = malloc(n ? n : 1);
	if (!f || !p || fread(p, 1, n, f) != n) {
		fprintf(stderr, "%s: cannot read %zu bytes from %s\n", tool, n, path);
		exit(2);
	}
	fclose(f);
	return p;
}

/* write n bytes to PREFIX EXT */
static void raw_spit(const char *tool, const char *prefix, const char *ext, const void *p, size_t n)
{
	char path[4096];
	snprintf(path, sizeof path, "%s%s", prefix, ext);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
		fprintf(stderr, "%s: cannot write %s\n", tool, path);
		exit(3);
	}
}

#endif
