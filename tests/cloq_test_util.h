/*
 * cloq_test_util.h - what several cmocka programs share: a scratch directory per program (made
 * in the group setup, removed in the teardown) and a count of what a directory holds, for the
 * "nothing left behind" assertions. Header-only: each test program is one translation unit.
 */
#ifndef CLOQ_TEST_UTIL_H
#define CLOQ_TEST_UTIL_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>

static char tmpdir[256];

/* mkdtemp /tmp/cloq_test_<tag>.XXXXXX into tmpdir; 0 on success (cmocka group-setup style). */
static __attribute__((unused)) int cloq_test_tmpdir_setup(const char *tag)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/cloq_test_%s.XXXXXX", tag);
	return mkdtemp(tmpdir) ? 0 : -1;
}

static __attribute__((unused)) int cloq_test_tmpdir_teardown(void)
{
	char cmd[512];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Entries of dir other than dot files. */
static __attribute__((unused)) int count_entries(const char *dir)
{
	int n = 0;
	DIR *d = opendir(dir);
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

#endif
