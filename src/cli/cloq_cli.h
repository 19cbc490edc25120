/*
 * cloq_cli.h - the sub-commands. Each takes argv starting at the command name, returns a
 * cloq_status and leaves a message in err. Implemented in src/cli/cloq_cmd_*.c.
 */
#ifndef CLOQ_CLI_H
#define CLOQ_CLI_H

#include <stdint.h>

#include "cloq_error.h"

#define CLOQ_VERSION "0.4.0" /* 0.4.0: the Gram matrices in 2048-row blocks of the token stream, not one a window (other sums); 0.3.0: attention in row blocks, calibration windows in parallel (other sums); 0.2.0: v1 zero points by default, strict inputs, job locks */

/* The version this binary reports (CLOQ_VERSION unless built otherwise) and its numeric build:
 * compiler, optimisation flags, the BLAS library's configuration and the kernel it picked
 * (src/cli/cloq_version.c). */
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

/*
 * Option values, shared by every command (src/cli/cloq_cli_args.c). Each checks the whole text and
 * its range before anything runs, and on failure returns CLOQ_EUSAGE with a message naming the
 * option. Numbers are decimal only: no leading blanks or '+', no hex ("0x10"), no "inf"/"nan".
 */
/* argv[*i] is an option that takes a value: set *v to argv[*i + 1] and step *i past it, or fail
 * with "option X needs a value" when there is none. */
int cloq_cli_value(int argc, char **argv, int *i, const char **v, cloq_err *err);
/* An integer in [lo, hi]; anything else (junk, overflow) says "OPT: expected an integer in
 * [lo, hi], got 'V'". */
int cloq_cli_int(const char *opt, const char *v, long long lo, long long hi, long long *out, cloq_err *err);
/* A finite number (decimal, optional fraction and exponent) in [lo, hi]. */
int cloq_cli_double(const char *opt, const char *v, double lo, double hi, double *out, cloq_err *err);
/* A byte count: digits with an optional fraction, then an optional K, M, G or T (powers of 1024),
 * optionally followed by "i", "B" or "iB" ("32G", "1.5GiB", "4096"); in [lo, hi] bytes. */
int cloq_cli_size(const char *opt, const char *v, uint64_t lo, uint64_t hi, uint64_t *out, cloq_err *err);

/* The range of --lora-alpha's scaling alpha / rank, checked on the command line and in a job's
 * journal: outside it the LoRA correction s B A is numerically meaningless. */
#define CLOQ_SCALING_MIN 1e-6
#define CLOQ_SCALING_MAX 1e6

#endif
