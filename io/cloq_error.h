/*
 * cloq_error.h - the one error channel of cloq.
 *
 * Every fallible function returns an int from enum cloq_status (0 = success) and, when given a
 * non-NULL `cloq_err *`, leaves a human-readable message there naming the file, the tensor and the
 * byte offset where that makes sense. Library code never calls exit(); only src/cli/main.c turns a
 * status into the process exit code, which is the status value itself (see DESIGN.md):
 *
 *   0 CLOQ_OK         success
 *   1 CLOQ_EUSAGE     bad command line
 *   2 CLOQ_EINPUT     bad input: malformed or inconsistent file, tensor, config, token ids
 *   3 CLOQ_EIO        I/O or resource failure: disk full, permissions, out of memory
 *   4 CLOQ_EINTEGRITY a checksum does not hold (verify, cache, shard), a shard that does not
 *                     belong to the job, a damaged journal
 *   5 CLOQ_EBUSY      the job directory is held by another cloq process (a writer, or readers
 *                     when a writer wants it); the message names the pid and its start time
 *   6 CLOQ_EINCOMPLETE the job is not finished: verify/ppl/export of an unfinished job
 * 130/143 CLOQ_EINTERRUPTED  stopped by SIGINT/SIGTERM at a durable point: resumable. main
 *                     exits 128 + the signal's number, as a shell reports a killed process.
 *
 * The header is a leaf: io/, quant/, solver/ and src/ all include it.
 */
#ifndef CLOQ_ERROR_H
#define CLOQ_ERROR_H

#include <stdarg.h>

enum cloq_status {
	CLOQ_OK = 0,
	CLOQ_EUSAGE = 1,
	CLOQ_EINPUT = 2,
	CLOQ_EIO = 3,
	CLOQ_EINTEGRITY = 4,
	CLOQ_EBUSY = 5,
	CLOQ_EINCOMPLETE = 6,
	CLOQ_EINTERRUPTED = 130,
};

#define CLOQ_ERR_MSG_MAX 1024

typedef struct cloq_err {
	int code;                    /* last status set, CLOQ_OK when clear */
	char msg[CLOQ_ERR_MSG_MAX];  /* "file: tensor 'x': what is wrong (offset N)" */
} cloq_err;

/* Record `code` and a printf-style message in `e` (if non-NULL). Returns `code` so callers can
 * write `return cloq_err_set(e, CLOQ_EINPUT, "...")`. A message already set is replaced. */
int cloq_err_set(cloq_err *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Prefix the existing message with more context ("while reading layer 3: ..."). Returns e->code
 * (or `code` when e is NULL). */
int cloq_err_wrap(cloq_err *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

void cloq_err_clear(cloq_err *e);

/* Short stable name of a status: "ok", "usage", "bad input", "I/O failure", "integrity failure". */
const char *cloq_status_name(int code);

/*
 * Error macros. The enclosing function declares `int rc = CLOQ_OK;` and has one `fail:` label
 * that frees in reverse order and returns rc.
 */
#define CLOQ_TRY(expr)                                                   \
	do {                                                             \
		int cloq_rc_ = (expr);                                   \
		if (cloq_rc_ != CLOQ_OK) {                               \
			rc = cloq_rc_;                                   \
			goto fail;                                       \
		}                                                        \
	} while (0)

#define CLOQ_FAIL_IF(cond, err, code, ...)                               \
	do {                                                             \
		if (cond) {                                              \
			rc = cloq_err_set((err), (code), __VA_ARGS__);   \
			goto fail;                                       \
		}                                                        \
	} while (0)

#endif /* CLOQ_ERROR_H */
