/* cloq_cmd_convert.c - `cloq convert` and `cloq resume`. */
#include <stdio.h>
#include <string.h>

#include "cloq_cli.h"
#include "cloq_convert.h"
#include "cloq_interrupt.h"

int cloq_cmd_convert(int argc, char **argv, cloq_err *err)
{
	if (cloq_cli_wants_help(argc, argv)) {
		fputs(cloq_convert_help, stdout);
		return CLOQ_OK;
	}
	cloq_convert_opts o;
	int rc = cloq_convert_parse_args(argc, argv, &o, err);
	if (rc)
		return rc;
	cloq_interrupt_install();
	return cloq_convert_run(&o, err);
}

static const char resume_help[] =
	"usage: cloq resume OUT [--force] [--quiet]\n"
	"\n"
	"Continue the conversion job in OUT with the settings its journal recorded: finished layers whose\n"
	"shards still check out are kept, a damaged one is redone, and the output is byte-identical to an\n"
	"uninterrupted run. Same as re-running the original 'cloq convert' command.\n";

int cloq_cmd_resume(int argc, char **argv, cloq_err *err)
{
	if (cloq_cli_wants_help(argc, argv)) {
		fputs(resume_help, stdout);
		return CLOQ_OK;
	}
	const char *out = NULL;
	int force = 0, quiet = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--force"))
			force = 1;
		else if (!strcmp(argv[i], "--quiet") || !strcmp(argv[i], "-q"))
			quiet = 1;
		else if (argv[i][0] == '-' && argv[i][1] != '\0')
			return cloq_err_set(err, CLOQ_EUSAGE, "unknown option '%s'", argv[i]);
		else if (!out)
			out = argv[i];
		else
			return cloq_err_set(err, CLOQ_EUSAGE, "unexpected argument '%s'", argv[i]);
	}
	if (!out)
		return cloq_err_set(err, CLOQ_EUSAGE, "missing OUT");
	cloq_interrupt_install();
	return cloq_convert_resume(out, force, quiet, err);
}
