/* test_reader.c - the streaming reader, both backends: many random requests compared byte for byte
 * and hash for hash with a plain pread + XXH3_64bits, requests past EOF (the remainder resubmitted
 * after a short read, then EOF reported), injected EIO, misuse, and a layer plan over stories260K
 * with prefetch of the next layer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "cloq_reader.h"
#include "cloq_safetensors.h"
#include "cloq_sys.h"

static char tmpdir[256];
static char fpath[2][512];
static const size_t fsize[2] = { (24u << 20) + 12345, (3u << 20) + 7 };
static uint8_t *fdata[2];

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static int setup(void **state)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/cloq_test_reader.XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	for (int f = 0; f < 2; f++) {
		snprintf(fpath[f], sizeof fpath[f], "%s/data%d.bin", tmpdir, f);
		fdata[f] = malloc(fsize[f]);
		for (size_t i = 0; i < fsize[f]; i += 8) {
			uint64_t v = rnd();
			memcpy(fdata[f] + i, &v, fsize[f] - i < 8 ? fsize[f] - i : 8);
		}
		cloq_err err;
		if (cloq_write_file_atomic(fpath[f], fdata[f], fsize[f], &err))
			return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	free(fdata[0]);
	free(fdata[1]);
	char cmd[512];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void many_requests(int force_pread)
{
	cloq_reader_params p = cloq_reader_default_params();
	p.force_pread = force_pread;
	p.queue_depth = 8;
	p.chunk_bytes = 64 << 10; /* small chunks: many per request, many in flight */
	const char *paths[2] = { fpath[0], fpath[1] };
	cloq_reader *r = NULL;
	cloq_err err;
	cloq_err_clear(&err);
	if (cloq_reader_create(paths, 2, &p, &r, &err))
		fail_msg("%s", err.msg);
	if (!force_pread && strcmp(cloq_reader_backend(r), "io_uring") != 0) {
		print_message("io_uring not available here: the io_uring half ran on pread\n");
	}
	if (force_pread)
		assert_string_equal(cloq_reader_backend(r), "pread");
	enum { NREQ = 400 };
	cloq_reader_req reqs[NREQ];
	size_t total = 0;
	for (int i = 0; i < NREQ; i++) {
		int f = (int)(rnd() % 2);
		size_t len = i % 50 == 0 ? 0 : (size_t)(rnd() % (i % 7 == 0 ? (1u << 20) : 100000));
		uint64_t off = rnd() % (fsize[f] - len + 1);
		reqs[i] = (cloq_reader_req){ .file = f, .offset = off, .length = len, .tag = (size_t)i };
		total += len;
	}
	uint8_t *buf = cloq_aligned_alloc(64, total + 1);
	size_t pos = 0;
	for (int i = 0; i < NREQ; i++) {
		reqs[i].dst = buf + pos;
		pos += reqs[i].length;
	}
	for (int round = 0; round < 2; round++) { /* a reader serves batch after batch */
		memset(buf, 0xAA, total);
		assert_int_equal(cloq_reader_start(r, reqs, NREQ, &err), CLOQ_OK);
		if (cloq_reader_wait(r, &err))
			fail_msg("%s", err.msg);
		for (int i = 0; i < NREQ; i++) {
			const uint8_t *want = fdata[reqs[i].file] + reqs[i].offset;
			if (reqs[i].length)
				assert_memory_equal(reqs[i].dst, want, reqs[i].length);
			assert_true(reqs[i].xxh3 == XXH3_64bits(want, reqs[i].length));
		}
	}
	cloq_reader_stats st;
	cloq_reader_get_stats(r, &st);
	assert_int_equal(st.bytes_read, 2 * total);
	assert_int_equal(st.requests, 2 * NREQ);
	assert_true(st.busy_seconds > 0);
	assert_true(st.wait_seconds >= 0);
	assert_string_equal(st.backend, cloq_reader_backend(r));
	cloq_reader_free(r);
	cloq_free(buf);
}

static void test_many_requests_pread(void **state) { many_requests(1); }
static void test_many_requests_uring(void **state) { many_requests(0); }

static void past_eof(int force_pread)
{
	cloq_reader_params p = cloq_reader_default_params();
	p.force_pread = force_pread;
	p.chunk_bytes = 4096;
	const char *paths[1] = { fpath[1] };
	cloq_reader *r = NULL;
	cloq_err err;
	cloq_err_clear(&err);
	assert_int_equal(cloq_reader_create(paths, 1, &p, &r, &err), CLOQ_OK);
	/* the last request's chunk straddles EOF: the kernel returns the part that exists (a short
	 * read), the remainder is resubmitted and then meets EOF */
	size_t len = 10000;
	uint8_t *a = cloq_malloc(len), *b = cloq_malloc(len);
	uint64_t off = fsize[1] - 5000;
	memset(b, 0, len);
	cloq_reader_req reqs[2] = {
		{ .file = 0, .offset = 0, .length = len, .dst = a },
		{ .file = 0, .offset = off, .length = len, .dst = b },
	};
	assert_int_equal(cloq_reader_start(r, reqs, 2, &err), CLOQ_OK);
	assert_int_equal(cloq_reader_wait(r, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "data1.bin"));
	assert_non_null(strstr(err.msg, "short read"));
	char want[64];
	snprintf(want, sizeof want, "file ends at offset %zu", fsize[1]);
	assert_non_null(strstr(err.msg, want));
	/* the part before EOF did arrive, through the resubmitted remainder */
	assert_memory_equal(b, fdata[1] + off, 5000);
	assert_memory_equal(a, fdata[1], len);
	/* a request starting beyond EOF */
	reqs[1].offset = fsize[1] + 100;
	reqs[1].length = 10;
	assert_int_equal(cloq_reader_start(r, reqs, 2, &err), CLOQ_OK);
	assert_int_equal(cloq_reader_wait(r, &err), CLOQ_EINPUT);
	/* the reader keeps working after a failed batch */
	reqs[1].offset = 1;
	assert_int_equal(cloq_reader_start(r, reqs, 2, &err), CLOQ_OK);
	assert_int_equal(cloq_reader_wait(r, &err), CLOQ_OK);
	assert_memory_equal(b, fdata[1] + 1, 10);
	assert_true(reqs[1].xxh3 == XXH3_64bits(fdata[1] + 1, 10));
	cloq_reader_free(r);
	cloq_free(a);
	cloq_free(b);
}

static void test_past_eof_pread(void **state) { past_eof(1); }
static void test_past_eof_uring(void **state) { past_eof(0); }

static void test_eio_and_misuse(void **state)
{
	for (int fp = 0; fp < 2; fp++) {
		cloq_reader_params p = cloq_reader_default_params();
		p.force_pread = fp;
		p.chunk_bytes = 4096;
		const char *paths[1] = { fpath[0] };
		cloq_reader *r = NULL;
		cloq_err err;
		cloq_err_clear(&err);
		assert_int_equal(cloq_reader_create(paths, 1, &p, &r, &err), CLOQ_OK);
		uint8_t *b = cloq_malloc(1 << 20);
		cloq_reader_req q = { .file = 0, .offset = 0, .length = 1 << 20, .dst = b };
		cloq_fault_set(CLOQ_FAULT_IO, 17);
		assert_int_equal(cloq_reader_start(r, &q, 1, &err), CLOQ_OK);
		int rc = cloq_reader_wait(r, &err);
		cloq_fault_set(CLOQ_FAULT_IO, 0);
		assert_int_equal(rc, CLOQ_EIO);
		assert_non_null(strstr(err.msg, "data0.bin"));
		assert_non_null(strstr(err.msg, "offset"));
		/* misuse */
		assert_int_equal(cloq_reader_wait(r, &err), CLOQ_EINPUT);
		q.file = 1;
		assert_int_equal(cloq_reader_start(r, &q, 1, &err), CLOQ_EINPUT);
		q.file = 0;
		q.dst = NULL;
		assert_int_equal(cloq_reader_start(r, &q, 1, &err), CLOQ_EINPUT);
		q.dst = b;
		assert_int_equal(cloq_reader_start(r, &q, 1, &err), CLOQ_OK);
		assert_int_equal(cloq_reader_start(r, &q, 1, &err), CLOQ_EINPUT); /* still in flight */
		/* free with a batch in flight waits for it */
		cloq_reader_free(r);
		assert_memory_equal(b, fdata[0], 1 << 20);
		cloq_free(b);
	}
	cloq_reader *r = (cloq_reader *)1;
	cloq_err err;
	const char *bad[1] = { "/nonexistent/file.bin" };
	assert_int_equal(cloq_reader_create(bad, 1, NULL, &r, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "/nonexistent/file.bin"));
	assert_null(r);
	cloq_reader_free(NULL);
}

/* Layer plans over the real checkpoint, double-buffered: layer l+1 is read while layer l is
 * checked, exactly as the pipeline will do it. */
static void test_layer_plan_prefetch(void **state)
{
	cloq_err err;
	cloq_err_clear(&err);
	cloq_st_model *m = NULL;
	assert_int_equal(cloq_st_open("fixtures/stories260K", &m, &err), CLOQ_OK);
	const char *paths[1] = { cloq_st_file_path(m, 0) };
	cloq_reader *r = NULL;
	assert_int_equal(cloq_reader_create(paths, 1, NULL, &r, &err), CLOQ_OK);
	size_t need = 0, nreq = 0;
	assert_int_equal(cloq_st_layer_plan(m, 0, NULL, 0, NULL, 0, &nreq, &need, &err), CLOQ_OK);
	assert_int_equal(nreq, 9);
	/* 9 tensors: 2 norms (256 B) + q,o (16 KiB) + k,v (8 KiB) + gate,up,down (43 KiB) */
	assert_int_equal(need, 2 * 256 + 2 * 16384 + 2 * 8192 + 3 * 44032);
	uint8_t *buf[2] = { cloq_aligned_alloc(64, need), cloq_aligned_alloc(64, need) };
	cloq_reader_req reqs[2][16];
	size_t n[2];
	assert_int_equal(cloq_st_layer_plan(m, 0, buf[0], need, reqs[0], 16, &n[0], &need, &err), CLOQ_OK);
	assert_int_equal(cloq_reader_start(r, reqs[0], n[0], &err), CLOQ_OK);
	for (int l = 0; l < 5; l++) {
		int cur = l & 1;
		assert_int_equal(cloq_reader_wait(r, &err), CLOQ_OK);
		if (l + 1 < 5) {
			assert_int_equal(cloq_st_layer_plan(m, l + 1, buf[!cur], need, reqs[!cur], 16,
							    &n[!cur], &need, &err), CLOQ_OK);
			assert_int_equal(cloq_reader_start(r, reqs[!cur], n[!cur], &err), CLOQ_OK);
		}
		for (size_t i = 0; i < n[cur]; i++) {
			const cloq_st_tensor *t = cloq_st_tensor_at(m, reqs[cur][i].tag);
			char pre[32];
			snprintf(pre, sizeof pre, "model.layers.%d.", l);
			assert_non_null(strstr(t->name, pre));
			assert_int_equal((uintptr_t)reqs[cur][i].dst % CLOQ_PLAN_ALIGN, 0);
			float *a = cloq_malloc(t->nbytes), *b = cloq_malloc(t->nbytes);
			assert_int_equal(cloq_st_read_f32(m, t, a, &err), CLOQ_OK);
			assert_int_equal(cloq_st_convert_f32(m, t, reqs[cur][i].dst, b, &err), CLOQ_OK);
			assert_memory_equal(a, b, t->nbytes);
			assert_true(reqs[cur][i].xxh3 == XXH3_64bits(a, t->nbytes)); /* F32: raw == fp32 */
			cloq_free(a);
			cloq_free(b);
		}
	}
	/* plan errors */
	assert_int_equal(cloq_st_layer_plan(m, 7, buf[0], need, reqs[0], 16, &nreq, &need, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "model.layers.7"));
	assert_int_equal(cloq_st_layer_plan(m, 1, buf[0], need, reqs[0], 4, &nreq, &need, &err), CLOQ_EINPUT);
	assert_int_equal(cloq_st_layer_plan(m, 1, buf[0], 1000, reqs[0], 16, &nreq, &need, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "does not fit"));
	cloq_reader_free(r);
	cloq_free(buf[0]);
	cloq_free(buf[1]);
	cloq_st_close(m);
}

/* eof_ok: a request may run past EOF; it stops there, says how much it got, hashes only that. */
static void test_eof_ok(void **state)
{
	for (int fp = 0; fp < 2; fp++) {
		cloq_reader_params p = cloq_reader_default_params();
		p.force_pread = fp;
		p.chunk_bytes = 4096;
		const char *paths[1] = { fpath[1] };
		cloq_reader *r = NULL;
		cloq_err err;
		cloq_err_clear(&err);
		assert_int_equal(cloq_reader_create(paths, 1, &p, &r, &err), CLOQ_OK);
		uint8_t *b = cloq_malloc(20000);
		memset(b, 0xCC, 20000);
		uint64_t off = fsize[1] - 5000;
		cloq_reader_req q = { .file = 0, .offset = off, .length = 20000, .dst = b, .eof_ok = 1 };
		assert_int_equal(cloq_reader_start(r, &q, 1, &err), CLOQ_OK);
		if (cloq_reader_wait(r, &err))
			fail_msg("%s", err.msg);
		assert_int_equal(q.got, 5000);
		assert_memory_equal(b, fdata[1] + off, 5000);
		assert_true(q.xxh3 == XXH3_64bits(fdata[1] + off, 5000));
		for (int i = 5000; i < 20000; i++)
			assert_int_equal(b[i], 0xCC);
		cloq_reader_free(r);
		cloq_free(b);
	}
}

static int direct_ok(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECT);
	if (fd < 0)
		return 0;
	void *b = cloq_aligned_alloc(4096, 4096);
	ssize_t r = pread(fd, b, 4096, 0);
	cloq_free(b);
	close(fd);
	return r == 4096;
}

/* O_DIRECT: aligned chunks, a request whose last block crosses EOF (the kernel returns a partial
 * block; the unaligned remainder must not be resubmitted). */
static void test_direct(void **state)
{
	if (!direct_ok(fpath[1])) {
		print_message("O_DIRECT not supported on %s: skipped\n", tmpdir);
		skip();
	}
	for (int fp = 0; fp < 2; fp++) {
		cloq_reader_params p = cloq_reader_default_params();
		p.force_pread = fp;
		p.direct = 1;
		p.chunk_bytes = 64 << 10;
		const char *paths[1] = { fpath[1] };
		cloq_reader *r = NULL;
		cloq_err err;
		cloq_err_clear(&err);
		assert_int_equal(cloq_reader_create(paths, 1, &p, &r, &err), CLOQ_OK);
		uint64_t end = (fsize[1] + 4095) / 4096 * 4096, off = end - (1u << 20);
		uint8_t *b = cloq_aligned_alloc(4096, 2u << 20);
		cloq_reader_req q[2] = {
			{ .file = 0, .offset = 0, .length = 1u << 20, .dst = b },
			{ .file = 0, .offset = off, .length = 1u << 20, .dst = b + (1u << 20), .eof_ok = 1 },
		};
		assert_int_equal(cloq_reader_start(r, q, 2, &err), CLOQ_OK);
		if (cloq_reader_wait(r, &err))
			fail_msg("%s", err.msg);
		assert_int_equal(q[1].got, fsize[1] - off);
		assert_memory_equal(b, fdata[1], 1u << 20);
		assert_memory_equal(b + (1u << 20), fdata[1] + off, fsize[1] - off);
		assert_true(q[1].xxh3 == XXH3_64bits(fdata[1] + off, fsize[1] - off));
		/* without eof_ok the same request is a short read */
		q[1].eof_ok = 0;
		assert_int_equal(cloq_reader_start(r, q, 2, &err), CLOQ_OK);
		assert_int_equal(cloq_reader_wait(r, &err), CLOQ_EINPUT);
		assert_non_null(strstr(err.msg, "short read"));
		cloq_reader_free(r);
		cloq_free(b);
	}
}

/* Span plans: one aligned request per layer, O_DIRECT where possible, tensors found inside. */
static void test_span_plan(void **state)
{
	cloq_err err;
	cloq_err_clear(&err);
	cloq_st_model *m = NULL;
	assert_int_equal(cloq_st_open("fixtures/stories260K/model.safetensors", &m, &err), CLOQ_OK);
	const char *paths[1] = { cloq_st_file_path(m, 0) };
	cloq_reader_params p = cloq_reader_default_params();
	p.direct = 1; /* falls back to buffered where the file system has no O_DIRECT */
	cloq_reader *r = NULL;
	assert_int_equal(cloq_reader_create(paths, 1, &p, &r, &err), CLOQ_OK);
	cloq_reader_stats rs;
	cloq_reader_get_stats(r, &rs);
	assert_int_equal(rs.direct, direct_ok(paths[0]));
	cloq_st_span_plan plan;
	assert_int_equal(cloq_st_layer_span_plan(m, 4, 4096, NULL, 0, &plan, &err), CLOQ_OK);
	size_t cap = plan.needed + 8192;
	uint8_t *buf = cloq_aligned_alloc(4096, cap);
	for (int l = 0; l < 5; l++) {
		assert_int_equal(cloq_st_layer_span_plan(m, l, 4096, buf, cap, &plan, &err), CLOQ_OK);
		assert_int_equal(plan.nreq, 1);
		assert_int_equal(plan.req[0].offset % 4096, 0);
		assert_int_equal(plan.req[0].length % 4096, 0);
		/* the file ends 256 bytes (model.norm) after layer 4: its rounded span passes EOF */
		assert_int_equal(plan.req[0].eof_ok, l == 4);
		assert_int_equal(cloq_reader_start(r, plan.req, plan.nreq, &err), CLOQ_OK);
		if (cloq_reader_wait(r, &err))
			fail_msg("%s", err.msg);
		if (l == 4)
			assert_int_equal(plan.req[0].offset + plan.req[0].got, 1045016);
		size_t idx[16];
		size_t n = cloq_st_layer_tensors(m, l, idx, 16);
		assert_int_equal(n, 9);
		for (size_t i = 0; i < n; i++) {
			const cloq_st_tensor *t = cloq_st_tensor_at(m, idx[i]);
			const void *d = cloq_st_span_data(&plan, t);
			assert_non_null(d);
			uint8_t *raw = cloq_malloc(t->nbytes);
			float *f = cloq_malloc(t->nbytes);
			assert_int_equal(cloq_st_read_raw(m, t, raw, &err), CLOQ_OK);
			assert_memory_equal(d, raw, t->nbytes);
			assert_int_equal(cloq_st_convert_f32(m, t, d, f, &err), CLOQ_OK);
			cloq_free(raw);
			cloq_free(f);
		}
		assert_null(cloq_st_span_data(&plan, cloq_st_find(m, "model.embed_tokens.weight")));
	}
	assert_int_equal(cloq_st_layer_span_plan(m, 0, 1000, buf, cap, &plan, &err), CLOQ_EINPUT);
	assert_int_equal(cloq_st_layer_span_plan(m, 0, 4096, buf + 64, cap, &plan, &err), CLOQ_EINPUT);
	assert_int_equal(cloq_st_layer_span_plan(m, 0, 4096, buf, 4096, &plan, &err), CLOQ_EINPUT);
	assert_int_equal(cloq_st_layer_span_plan(m, 9, 4096, buf, cap, &plan, &err), CLOQ_EINPUT);
	cloq_reader_free(r);
	cloq_free(buf);
	cloq_st_close(m);
}

/* Containers often forbid io_uring: in a child whose seccomp filter makes io_uring_setup fail
 * with ENOSYS, readers fall back to pread, still read correctly, and the notice is printed once
 * for the process however many readers are created. */
static void test_fallback_without_io_uring(void **state)
{
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(pfd[1], 2);
		close(pfd[0]);
		struct sock_filter f[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_fprog prog = { .len = sizeof f / sizeof f[0], .filter = f };
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
			_exit(77);
		const char *paths[1] = { fpath[0] };
		for (int k = 0; k < 3; k++) {
			cloq_reader *r = NULL;
			if (cloq_reader_create(paths, 1, NULL, &r, NULL) != CLOQ_OK)
				_exit(10);
			if (strcmp(cloq_reader_backend(r), "pread") != 0)
				_exit(11);
			uint8_t b[5000];
			cloq_reader_req q = { .file = 0, .offset = 123, .length = sizeof b, .dst = b };
			if (cloq_reader_start(r, &q, 1, NULL) || cloq_reader_wait(r, NULL))
				_exit(12);
			if (memcmp(b, fdata[0] + 123, sizeof b) || q.xxh3 != XXH3_64bits(b, sizeof b))
				_exit(13);
			cloq_reader_free(r);
		}
		_exit(0);
	}
	close(pfd[1]);
	char out[4096];
	size_t n = 0;
	ssize_t k;
	while (n + 1 < sizeof out && (k = read(pfd[0], out + n, sizeof out - 1 - n)) > 0)
		n += (size_t)k;
	out[n] = '\0';
	close(pfd[0]);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) == 77) {
		print_message("seccomp not available: skipped\n");
		skip();
	}
	if (WEXITSTATUS(st) != 0)
		fail_msg("child failed with %d; stderr: %s", WEXITSTATUS(st), out);
	const char *msg = "cloq: io_uring unavailable (io_uring_queue_init: Function not implemented), using pread\n";
	char *first = strstr(out, msg);
	if (!first)
		fail_msg("notice missing; stderr: %s", out);
	assert_null(strstr(first + strlen(msg), "io_uring unavailable")); /* once */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_many_requests_pread),
		cmocka_unit_test(test_many_requests_uring),
		cmocka_unit_test(test_past_eof_pread),
		cmocka_unit_test(test_past_eof_uring),
		cmocka_unit_test(test_eio_and_misuse),
		cmocka_unit_test(test_layer_plan_prefetch),
		cmocka_unit_test(test_eof_ok),
		cmocka_unit_test(test_direct),
		cmocka_unit_test(test_span_plan),
		cmocka_unit_test(test_fallback_without_io_uring),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
