/*
 * cloq_lock.h - one writer per job directory, readers that know when a writer is there.
 *
 * A job directory OUT holds a file OUT/job.lock. A process that writes the job (convert, resume,
 * --force) holds an exclusive flock(2) on it for its whole life; readers (verify, ppl, export)
 * hold a shared one while they read. The kernel releases a lock when its holder dies, so there is
 * never a stale lock to clean up, and the file's content is only a note for people: the writer
 * writes its pid, start time and command line there after taking the lock.
 *
 * Nothing waits: a lock that cannot be had at once is CLOQ_EBUSY with a message naming the holding
 * process (pid, start time, command; read from /proc/locks and /proc/PID, so it holds for readers
 * too, who write no note).
 *
 * Readers of a directory that cannot hold the lock file (read-only media) read without a lock: no
 * writer can be at work there either.
 */
#ifndef CLOQ_LOCK_H
#define CLOQ_LOCK_H

#include "cloq_error.h"

typedef struct cloq_lock {
	int fd; /* -1 when not held */
} cloq_lock;

#define CLOQ_LOCK_INIT {-1}

/* Take OUT/job.lock. `exclusive`: the writer's lock (creates the file); otherwise a reader's.
 * `what` names the command for the note and the messages ("cloq convert"). Returns CLOQ_OK,
 * CLOQ_EBUSY (held by another process: the message names it), or CLOQ_EIO. */
int cloq_lock_take(const char *dir, int exclusive, const char *what, cloq_lock *lk, cloq_err *err);

/* Release (close); safe on a lock never taken. */
void cloq_lock_release(cloq_lock *lk);

#endif /* CLOQ_LOCK_H */
