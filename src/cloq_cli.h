/*
 * cloq_cli.h - the sub-commands. Each takes argv starting at the command name, returns a
 * cloq_status and leaves a message in err. Implemented in src/cloq_cmd_*.c.
 */
#ifndef CLOQ_CLI_H
#define CLOQ_CLI_H

#include "cloq_error.h"

#define CLOQ_VERSION "0.1.0"

/* The version this binary reports (CLOQ_VERSION unless built otherwise) and its numeric build:
 * compiler, optimisation flags, the BLAS library's configuration and the kernel it picked
 * (src/cloq_version.c). */
const char *cloq_version(void);
const char *cloq_build_numerics(void);

int cloq_cmd_inspect(int argc, char **argv, cloq_err *err);
int cloq_cmd_tokenize(int argc, char **argv, cloq_err *err);
int cloq_cmd_ppl(int argc, char **argv, cloq_err *err);
int cloq_cmd_convert(int argc, char **argv, cloq_err *err);
int cloq_cmd_resume(int argc, char **argv, cloq_err *err);
int cloq_cmd_verify(int argc, char **argv, cloq_err *err);
int cloq_cmd_export(int argc, char **argv, cloq_err *err);

/* True when argv holds -h or --help. */
int cloq_cli_wants_help(int argc, char **argv);

#endif
