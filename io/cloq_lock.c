/* cloq_lock.c - see cloq_lock.h. */
#include "cloq_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Wall-clock start time of a process, from its start in ticks after boot (/proc/PID/stat field
 * 22) and the boot time (/proc/stat btime). 0 when unknown. */
static time_t proc_start(long pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%ld/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
	if (!p)
		return 0;
	unsigned long long ticks = 0;
	/* after ")": state(3) ppid(4) ... starttime is field 22, the 20th after the name */
	int field = 2;
	for (char *t = strtok(p + 1, " "); t; t = strtok(NULL, " "))
		if (++field == 22) {
			ticks = strtoull(t, NULL, 10);
			break;
		}
	f = fopen("/proc/stat", "r");
	if (!f)
		return 0;
	unsigned long long btime = 0;
	while (fgets(buf, sizeof buf, f))
		if (sscanf(buf, "btime %llu", &btime) == 1)
			break;
	fclose(f);
	long hz = sysconf(_SC_CLK_TCK);
	return btime && hz > 0 ? (time_t)(btime + ticks / (unsigned long long)hz) : 0;
}

/* "pid 1234 (cloq convert m -o out), started 2026-12-07 10:11:12 UTC" */
static void describe_pid(long pid, char *out, size_t cap)
{
	char path[64], cmd[256] = "";
	snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
	FILE *f = fopen(path, "r");
	if (f) {
		size_t n = fread(cmd, 1, sizeof cmd - 1, f);
		fclose(f);
		cmd[n] = '\0';
		for (size_t i = 0; i + 1 < n; i++)
			if (cmd[i] == '\0')
				cmd[i] = ' ';
	}
	char when[64] = "";
	time_t t = proc_start(pid);
	struct tm tm;
	if (t && gmtime_r(&t, &tm))
		strftime(when, sizeof when, ", started %Y-%m-%d %H:%M:%S UTC", &tm);
	snprintf(out, cap, "pid %ld%s%s%s%s", pid, cmd[0] ? " (" : "", cmd, cmd[0] ? ")" : "", when);
}

/* The processes holding a flock on the file open as fd (other than us), from /proc/locks:
 * "1: FLOCK  ADVISORY  WRITE 1234 08:01:56789 0 EOF". Writes "pid ... ; pid ..." to out and returns
 * how many; `writer` is set when one of them holds it exclusively. */
static int holders(int fd, char *out, size_t cap, int *writer)
{
	struct stat st;
	*writer = 0;
	out[0] = '\0';
	if (fstat(fd, &st) != 0)
		return 0;
	FILE *f = fopen("/proc/locks", "r");
	if (!f)
		return 0;
	char line[512];
	int n = 0;
	long self = (long)getpid();
	while (fgets(line, sizeof line, f)) {
		char kind[16], adv[16], mode[16], dev[64];
		long pid;
		unsigned long long ino;
		if (strstr(line, "->")) /* a waiter, not a holder */
			continue;
		if (sscanf(line, "%*[^:]: %15s %15s %15s %ld %63s", kind, adv, mode, &pid, dev) != 5)
			continue;
		char *c = strrchr(dev, ':');
		if (!c || strcmp(kind, "FLOCK") != 0)
			continue;
		ino = strtoull(c + 1, NULL, 10);
		if (ino != (unsigned long long)st.st_ino || pid == self)
			continue;
		if (!strcmp(mode, "WRITE"))
			*writer = 1;
		size_t len = strlen(out);
		if (n < 4 && len + 8 < cap) {
			if (n)
				snprintf(out + len, cap - len, "; ");
			len = strlen(out);
			describe_pid(pid, out + len, cap - len);
		}
		n++;
	}
	fclose(f);
	return n;
}

int cloq_lock_take(const char *dir, int exclusive, const char *what, cloq_lock *lk, cloq_err *err)
{
	char path[4096];
	lk->fd = -1;
	if (snprintf(path, sizeof path, "%s/job.lock", dir) >= (int)sizeof path)
		return cloq_err_set(err, CLOQ_EUSAGE, "path too long: %s", dir);
	int fd = open(path, (exclusive ? O_RDWR | O_CREAT : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0 && !exclusive && errno == ENOENT)
		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0) {
		if (!exclusive) /* nowhere to put a lock: no writer can be at work here either */
			return CLOQ_OK;
		return cloq_err_set(err, CLOQ_EIO, "%s: cannot create the job's lock file: %s", path, strerror(errno));
	}
	if (flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0) {
		int e = errno;
		if (e != EWOULDBLOCK) {
			close(fd);
			return cloq_err_set(err, CLOQ_EIO, "%s: cannot lock: %s", path, strerror(e));
		}
		char who[1024];
		int writer = 0;
		int n = holders(fd, who, sizeof who, &writer);
		close(fd);
		if (!exclusive || writer)
			return cloq_err_set(err, CLOQ_EBUSY,
					    "%s is being written by another cloq process (%s); %s", dir,
					    n ? who : "pid unknown",
					    exclusive ? "one job directory has one writer: wait for it to end, or use another -o"
						      : "read it when that process has finished");
		return cloq_err_set(err, CLOQ_EBUSY, "%s is being read by %d other cloq process%s (%s); try again when %s",
				    dir, n, n == 1 ? "" : "es", n ? who : "pids unknown",
				    n == 1 ? "it has finished" : "they have finished");
	}
	if (exclusive) {
		/* the note for people; the lock itself is the flock */
		char note[512];
		time_t now = time(NULL);
		struct tm tm;
		char when[64] = "?";
		if (gmtime_r(&now, &tm))
			strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
		int len = snprintf(note, sizeof note, "pid %ld\nstarted %s\ncommand %s\n", (long)getpid(), when, what);
		if (ftruncate(fd, 0) == 0 && len > 0) {
			ssize_t w = pwrite(fd, note, (size_t)len < sizeof note ? (size_t)len : sizeof note - 1, 0);
			(void)w; /* a note that could not be written does not weaken the lock */
		}
	}
	lk->fd = fd;
	return CLOQ_OK;
}

void cloq_lock_release(cloq_lock *lk)
{
	if (lk && lk->fd >= 0) {
		close(lk->fd);
		lk->fd = -1;
	}
}
