/* cloq_interrupt.c - see cloq_interrupt.h. */
#include "cloq_interrupt.h"

#include <signal.h>
#include <string.h>

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
	if (got_signal) {
		/* the second one: stop now */
		signal(sig, SIG_DFL);
		raise(sig);
		return;
	}
	got_signal = sig;
}

void cloq_interrupt_install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART; /* reads and writes in progress complete */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

int cloq_interrupt_signal(void)
{
	return got_signal;
}

int cloq_interrupt_check(const char *where, cloq_err *err)
{
	int sig = got_signal;
	if (!sig)
		return CLOQ_OK;
	return cloq_err_set(err, CLOQ_EINTERRUPTED, "stopped by %s (%s)", sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal",
			    where);
}
