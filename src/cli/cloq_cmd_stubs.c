/* Commands not built yet: they say so and exit with the usage status. Each moves to its own
 * src/cli/cloq_cmd_<name>.c when it is implemented. */
#include <string.h>

#include "cloq_cli.h"

int cloq_cli_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
			return 1;
	return 0;
}

#define NOT_YET(fn, name)                                                                       \
	int fn(int argc, char **argv, cloq_err *err)                                            \
	{                                                                                       \
		return cloq_err_set(err, CLOQ_EUSAGE, "'%s' is not available in this build yet", \
				    name);                                                      \
	}
