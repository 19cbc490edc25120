/*
 * cloq_interrupt.h - a conversion stopped by SIGINT/SIGTERM stops at a durable point.
 *
 * The first SIGINT or SIGTERM only sets a flag; the job looks at it between windows of a pass,
 * between linears of a solve and between layers, abandons the step in progress (its temp files
 * are removed; nothing under a final name changes) and returns CLOQ_EINTERRUPTED, so main prints
 * how to resume and exits 128 + the signal's number. A durable write in progress (a shard, the
 * journal) is finished first, since the next check comes after it. A second signal stops the
 * process at once, as if no handler were installed: the journal still says what is done.
 */
#ifndef CLOQ_INTERRUPT_H
#define CLOQ_INTERRUPT_H

#include "cloq_error.h"

/* Install the handlers (for convert and resume). */
void cloq_interrupt_install(void);
/* The signal received, 0 when none. */
int cloq_interrupt_signal(void);
/* CLOQ_OK, or CLOQ_EINTERRUPTED with a message naming the signal and `where`. */
int cloq_interrupt_check(const char *where, cloq_err *err);

#endif
