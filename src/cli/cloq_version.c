/*
 * cloq_version.c - which cloq, built how, on which BLAS: what a job's bytes depend on besides its
 * settings and inputs. The journal's fingerprint records cloq_build_numerics(), so a job started
 * by one build and resumed by another (whose GPTQ, solver or BLAS could round differently) is
 * refused instead of mixing layers made by both.
 *
 * This file alone carries the version and the build flags (the Makefile passes them to it only),
 * so a test can link a second binary that differs in nothing but its version.
 */
#include "cloq_cli.h"

#include <stdio.h>

#include <cblas.h>

#ifndef CLOQ_VERSION_STRING
#define CLOQ_VERSION_STRING CLOQ_VERSION
#endif
#ifndef CLOQ_BUILD_FLAGS
#define CLOQ_BUILD_FLAGS "?"
#endif

const char *cloq_version(void)
{
	return CLOQ_VERSION_STRING;
}

const char *cloq_build_numerics(void)
{
	static char buf[512];
	if (!buf[0]) {
		const char *cfg = openblas_get_config(), *core = openblas_get_corename();
		snprintf(buf, sizeof buf, "cc %s, %s; %s (core %s)", __VERSION__, CLOQ_BUILD_FLAGS, cfg ? cfg : "BLAS ?",
			 core ? core : "?");
	}
	return buf;
}
