/*
 * main.c - the cloq command line. Parses the sub-command, hands off to src/cli/cloq_cmd_*.c, and is
 * the only place where a cloq_status becomes a process exit code (io/cloq_error.h: 0 ok, 1 usage,
 * 2 bad input, 3 I/O failure, 4 integrity failure, 5 job in use, 6 job unfinished, 128 + signal
 * for a conversion stopped by SIGINT/SIGTERM).
 */
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <omp.h>

#include "cloq_cli.h"
#include "cloq_error.h"
#include "cloq_interrupt.h"
#include "cloq_sys.h"

extern void openblas_set_num_threads(int);

static const char usage_text[] =
	"cloq - quantize a Hugging Face LLaMA-family model to 2/3/4/8 bits with a calibrated LoRA (CLoQ)\n"
	"\n"
	"usage: cloq COMMAND [ARGS]\n"
	"\n"
	"commands:\n"
	"  inspect MODEL_DIR                    model summary and the memory plan of a conversion\n"
	"  convert MODEL_DIR -o OUT [options]   run (or continue) a conversion job\n"
	"  resume OUT                           continue an interrupted job\n"
	"  verify OUT                           re-check every checksum; exit 0 only if finished\n"
	"                                       and all hold\n"
	"  export OUT --to DIR [--format gptq|dequant|peft-only]\n"
	"                                       HF GPTQ checkpoint (or dense fp16) + DIR/adapter (PEFT);\n"
	"                                       DIR: new, empty, or this job's previous export\n"
	"  ppl MODEL_DIR|OUT --text FILE | --tokens FILE.npy [--seqlen N]\n"
	"                                       perplexity\n"
	"  tokenize MODEL_DIR [--text FILE]     print token ids, as the HF tokenizer would\n"
	"\n"
	"'cloq COMMAND --help' describes one command.\n"
	"exit status: 0 success, 1 usage, 2 bad input, 3 I/O failure, 4 integrity failure,\n"
	"  5 job in use by another cloq process, 6 job unfinished (verify/ppl/export),\n"
	"  130/143 stopped by SIGINT/SIGTERM (convert/resume: resumable)\n";

struct command {
	const char *name;
	int (*run)(int argc, char **argv, cloq_err *err);
};

static const struct command commands[] = {
	{"inspect", cloq_cmd_inspect},
	{"tokenize", cloq_cmd_tokenize},
	{"ppl", cloq_cmd_ppl},
	{"convert", cloq_cmd_convert},
	{"resume", cloq_cmd_resume},
	{"verify", cloq_cmd_verify},
	{"export", cloq_cmd_export},
};

/*
 * Idle OpenMP threads spin briefly, then sleep. libgomp (also the runtime of OpenBLAS's OpenMP
 * build) spins up to 300,000 iterations before sleeping and reads its settings once, when it is
 * loaded, before main runs; so cloq puts GOMP_SPINCOUNT=1000 in its environment and executes
 * itself again, once. Beside one busy process per core, spinning threads take the cores that a
 * descheduled thread, the read-ahead and the compression threads need (a short convert: 86.7 s
 * instead of about 9 s alone); never spinning (OMP_WAIT_POLICY=PASSIVE) costs a futex wake-up per
 * parallel region, 9% on the 7B-geometry bench job and 3x on stories260K. 1000 keeps both: see
 * docs/PERFORMANCE.md section 8. The user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT is left as it
 * is. If the re-execution fails (no /proc), cloq goes on with the runtime's default. Under
 * valgrind the re-executed process is not traced unless --trace-children=yes (or set
 * GOMP_SPINCOUNT yourself).
 */
static void short_spin(char **argv)
{
	if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT"))
		return;
	if (setenv("GOMP_SPINCOUNT", "1000", 1) != 0)
		return;
	execv("/proc/self/exe", argv);
	unsetenv("GOMP_SPINCOUNT"); /* not re-executed: the runtime keeps its default */
}

int main(int argc, char **argv)
{
	short_spin(argv);
	/* Past a file-size limit (ulimit -f), write() should fail with EFBIG and reach the clean
	 * "disk full" error path, not kill the process mid-write. */
	signal(SIGXFSZ, SIG_IGN);
	cloq_fault_from_env();
	/* Threads for every command: the CPUs this process may use, not the machine's cores (a
	 * container's quota or taskset would otherwise leave threads waiting on each other at every
	 * barrier). OMP_NUM_THREADS / OPENBLAS_NUM_THREADS still decide where set; convert sets its
	 * job's own count. */
	int ncpu = cloq_cpus_available();
	if (!getenv("OMP_NUM_THREADS"))
		omp_set_num_threads(ncpu);
	if (!getenv("OMP_NUM_THREADS") && !getenv("OPENBLAS_NUM_THREADS"))
		openblas_set_num_threads(ncpu);
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		fputs(usage_text, argc < 2 ? stderr : stdout);
		return argc < 2 ? CLOQ_EUSAGE : CLOQ_OK;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("cloq %s\n%s\n", cloq_version(), cloq_build_numerics());
		return 0;
	}
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
		if (strcmp(argv[1], commands[i].name) != 0)
			continue;
		cloq_err err;
		cloq_err_clear(&err);
		int rc = commands[i].run(argc - 1, argv + 1, &err);
		if (rc == CLOQ_EINTERRUPTED) {
			fprintf(stderr, "cloq %s: %s\n", commands[i].name, err.msg);
			return 128 + cloq_interrupt_signal();
		}
		if (rc != CLOQ_OK) {
			fprintf(stderr, "cloq %s: error: %s\n", commands[i].name,
				err.msg[0] ? err.msg : cloq_status_name(rc));
			if (rc == CLOQ_EUSAGE)
				fprintf(stderr, "try 'cloq %s --help'\n", commands[i].name);
		}
		return rc;
	}
	fprintf(stderr, "cloq: unknown command '%s'\n\n%s", argv[1], usage_text);
	return CLOQ_EUSAGE;
}
