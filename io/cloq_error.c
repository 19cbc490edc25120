/* cloq_error.c - see cloq_error.h */
#include "cloq_error.h"

#include <stdio.h>
#include <string.h>

int cloq_err_set(cloq_err *e, int code, const char *fmt, ...)
{
	if (e) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(e->msg, sizeof e->msg, fmt, ap);
		va_end(ap);
		e->code = code;
	}
	return code;
}

int cloq_err_wrap(cloq_err *e, int code, const char *fmt, ...)
{
	if (!e)
		return code;
	char prefix[CLOQ_ERR_MSG_MAX], old[CLOQ_ERR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof prefix, fmt, ap);
	va_end(ap);
	memcpy(old, e->msg, sizeof old);
	/* Truncation is fine here: the message is for people, and it stays NUL-terminated. */
	size_t n = strlen(prefix);
	memcpy(e->msg, prefix, n + 1);
	if (old[0] && n + 2 < sizeof e->msg) {
		memcpy(e->msg + n, ": ", 3);
		size_t room = sizeof e->msg - n - 3;
		strncat(e->msg + n + 2, old, room);
	}
	if (e->code == CLOQ_OK)
		e->code = code;
	return e->code;
}

void cloq_err_clear(cloq_err *e)
{
	if (e) {
		e->code = CLOQ_OK;
		e->msg[0] = '\0';
	}
}

const char *cloq_status_name(int code)
{
	switch (code) {
	case CLOQ_OK: return "ok";
	case CLOQ_EUSAGE: return "usage";
	case CLOQ_EINPUT: return "bad input";
	case CLOQ_EIO: return "I/O failure";
	case CLOQ_EINTEGRITY: return "integrity failure";
	case CLOQ_EBUSY: return "job in use";
	case CLOQ_EINCOMPLETE: return "job unfinished";
	case CLOQ_EINTERRUPTED: return "interrupted";
	}
	return "unknown status";
}
