/*
 * bench_reader - sequential read bandwidth of plain pread vs the streaming reader (io_uring and its
 * pread backend), with the page cache avoided, and the share of a simulated layer compute time
 * spent waiting for reads when the next layer is prefetched. `bench_reader --help` for arguments.
 *
 * By default it writes a ~2 GiB bf16 model of llama2-7b layer geometry (mkmodel-like content) to a
 * temporary directory under /tmp and deletes it at the end; --model uses an existing safetensors
 * file or model directory instead (never modified).
 *
 * Page cache: O_DIRECT when the file system accepts it (every bandwidth pass reads each layer's byte
 * span rounded out to 4 KiB into 4 KiB-aligned buffers), else posix_fadvise(POSIX_FADV_DONTNEED)
 * on every file before every pass. The pipeline passes read per tensor (cloq_st_layer_plan) as the
 * pipeline does, buffered with DONTNEED before it, and, when O_DIRECT works, per layer span
 * (cloq_st_layer_span_plan) with O_DIRECT. Simulated compute sleeps, so the
 * reader thread has the CPU to itself (a real compute would compete for it).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cloq_dtype.h"
#include "cloq_reader.h"
#include "cloq_safetensors.h"
#include "cloq_sys.h"

#define ALIGN 4096

struct opts {
	const char *model;
	double size_gib;
	int reps;
	double compute_ms; /* <= 0: the measured cold read time of layer 0 */
	unsigned qd;
	size_t chunk;
	int keep;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bench_reader [--model PATH] [--size GIB] [--reps N] [--compute-ms MS]\n"
		"                    [--qd N] [--chunk-kib N] [--keep]\n"
		"Measures sequential read bandwidth of plain pread vs cloq's streaming reader (io_uring, and\n"
		"its pread backend) layer by layer with the page cache avoided (O_DIRECT when the file system\n"
		"allows it, else POSIX_FADV_DONTNEED before each pass; the output says which), then the share\n"
		"of a simulated per-layer compute time spent waiting for I/O with and without prefetch.\n"
		"  --model PATH     existing .safetensors file or model directory (default: generate one)\n"
		"  --size GIB       size of the generated model, llama2-7b layers in bf16 (default 2.0)\n"
		"  --reps N         passes per method, interleaved, best kept (default 3)\n"
		"  --compute-ms MS  simulated compute per layer (default: the cold read time of layer 0)\n"
		"  --qd N           reader queue depth (default 32)\n"
		"  --chunk-kib N    reader chunk size (default 1024)\n"
		"  --keep           keep the generated model (it is under /tmp/cloq_bench_reader.*)\n"
		"Target: the reader reaches >= 90%% of pread's bandwidth. Default run < ~60 s.\n");
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_s(double s)
{
	if (s <= 0)
		return;
	struct timespec ts = { (time_t)s, (long)((s - floor(s)) * 1e9) };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

/* ---- a generated model ---------------------------------------------------------------------- */
static int generate(const char *path, double gib, cloq_err *err)
{
	const long hidden = 4096, inter = 11008;
	const uint64_t layer_bytes = (4ull * hidden * hidden + 3ull * hidden * inter + 2ull * hidden) * 2;
	int layers = (int)floor(gib * (double)(1ull << 30) / (double)layer_bytes);
	if (layers < 2)
		layers = 2;
	cloq_st_writer *w = NULL;
	int rc = cloq_st_writer_create(path, &w, err);
	if (rc)
		return rc;
	static const char *const nm[9] = { "input_layernorm", "mlp.down_proj", "mlp.gate_proj",
					   "mlp.up_proj", "post_attention_layernorm", "self_attn.k_proj",
					   "self_attn.o_proj", "self_attn.q_proj", "self_attn.v_proj" };
	const int64_t shp[9][2] = { { hidden, 0 }, { hidden, inter }, { inter, hidden }, { inter, hidden },
				    { hidden, 0 }, { hidden, hidden }, { hidden, hidden },
				    { hidden, hidden }, { hidden, hidden } };
	char name[128];
	for (int l = 0; l < layers && !rc; l++)
		for (int k = 0; k < 9 && !rc; k++) {
			snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, nm[k]);
			rc = cloq_st_writer_add(w, name, CLOQ_DT_BF16, shp[k][1] ? 2 : 1, shp[k], err);
		}
	if (!rc)
		rc = cloq_st_writer_begin(w, err);
	/* bf16 of a normal-ish distribution: 32 MiB generated once and written over and over (the
	 * read benchmark needs realistic bytes, not distinct ones; the disk is the bottleneck) */
	const size_t piece = 16u << 20; /* elements */
	float *f = cloq_malloc(piece * sizeof(float));
	uint16_t *h = cloq_malloc(piece * 2);
	uint64_t s = 0x243f6a8885a308d3ull;
	if (!f || !h)
		rc = rc ? rc : cloq_err_set(err, CLOQ_EIO, "out of memory");
	if (!rc) {
		for (size_t i = 0; i < piece; i++) {
			s ^= s << 13, s ^= s >> 7, s ^= s << 17;
			uint32_t a = (uint32_t)(s & 0xffff) + (uint32_t)((s >> 16) & 0xffff) +
				     (uint32_t)((s >> 32) & 0xffff) + (uint32_t)(s >> 48);
			f[i] = ((float)a / 65536.0f - 2.0f) * 0.027f;
		}
		cloq_f32_to_bf16(f, h, piece);
	}
	for (int l = 0; l < layers && !rc; l++)
		for (int k = 0; k < 9 && !rc; k++) {
			uint64_t n = (uint64_t)shp[k][0] * (uint64_t)(shp[k][1] ? shp[k][1] : 1);
			for (uint64_t done = 0; done < n && !rc;) {
				size_t m = n - done < piece ? (size_t)(n - done) : piece;
				rc = cloq_st_writer_write(w, (size_t)(l * 9 + k), h, m * 2, err);
				done += m;
			}
		}
	cloq_free(f);
	cloq_free(h);
	if (!rc)
		rc = cloq_st_writer_commit(w, err); /* fsync: nothing dirty stays in the cache */
	cloq_st_writer_free(w);
	return rc;
}

/* ---- page cache ----------------------------------------------------------------------------- */
static int try_direct(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECT);
	if (fd < 0)
		return 0;
	void *b = cloq_aligned_alloc(ALIGN, ALIGN);
	ssize_t r = b ? pread(fd, b, ALIGN, 0) : -1;
	cloq_free(b);
	close(fd);
	return r >= 0;
}

static void drop_cache(const cloq_st_model *m)
{
	for (size_t i = 0; i < cloq_st_nfiles(m); i++) {
		int fd = open(cloq_st_file_path(m, i), O_RDONLY);
		if (fd >= 0) {
			posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
			close(fd);
		}
	}
}

/* One request per layer: the layer's byte span, rounded out to ALIGN (spans within one file). */
struct span {
	int file;
	uint64_t off, len;
};

static int layer_spans(const cloq_st_model *m, int layers, struct span *sp, uint64_t *maxlen)
{
	size_t idx[64];
	*maxlen = 0;
	for (int l = 0; l < layers; l++) {
		size_t n = cloq_st_layer_tensors(m, l, idx, 64);
		if (n == 0 || n > 64)
			return -1;
		const cloq_st_tensor *a = cloq_st_tensor_at(m, idx[0]), *b = cloq_st_tensor_at(m, idx[n - 1]);
		for (size_t i = 1; i < n; i++)
			if (cloq_st_tensor_at(m, idx[i])->file != a->file)
				return -1; /* a layer split over shards: bandwidth passes read per file */
		uint64_t lo = a->offset / ALIGN * ALIGN, hi = (b->offset + b->nbytes + ALIGN - 1) / ALIGN * ALIGN;
		uint64_t fsz = cloq_st_file_size(m, (size_t)a->file);
		if (hi > (fsz + ALIGN - 1) / ALIGN * ALIGN)
			hi = (fsz + ALIGN - 1) / ALIGN * ALIGN;
		sp[l] = (struct span){ a->file, lo, hi - lo };
		if (hi - lo > *maxlen)
			*maxlen = hi - lo;
	}
	return 0;
}

/* O_DIRECT reads of a rounded span may end short at EOF: read what exists. */
static int pread_span(int fd, void *buf, const struct span *s, uint64_t fsz, uint64_t *got)
{
	uint64_t end = s->off + s->len < fsz ? s->off + s->len : fsz;
	uint64_t off = s->off;
	char *p = buf;
	while (off < end) {
		size_t want = s->off + s->len - off > (1u << 30) ? (1u << 30) : (size_t)(s->off + s->len - off);
		ssize_t r = pread(fd, p, want, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r == 0 ? 0 : -1;
		off += (uint64_t)r;
		p += r;
	}
	*got += end - s->off;
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = { NULL, 2.0, 3, 0, 32, 1u << 20, 0 };
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--keep")) {
			o.keep = 1;
		} else if (v && !strcmp(a, "--model")) {
			o.model = v, i++;
		} else if (v && !strcmp(a, "--size")) {
			o.size_gib = atof(v), i++;
		} else if (v && !strcmp(a, "--reps")) {
			o.reps = atoi(v), i++;
		} else if (v && !strcmp(a, "--compute-ms")) {
			o.compute_ms = atof(v), i++;
		} else if (v && !strcmp(a, "--qd")) {
			o.qd = (unsigned)atoi(v), i++;
		} else if (v && !strcmp(a, "--chunk-kib")) {
			o.chunk = (size_t)atol(v) << 10, i++;
		} else {
			fprintf(stderr, "bench_reader: bad argument '%s' (see --help)\n", a);
			return 1;
		}
	}
	if (o.reps < 1 || o.size_gib <= 0 || o.qd == 0 || o.chunk == 0) {
		fprintf(stderr, "bench_reader: bad argument values (see --help)\n");
		return 1;
	}
	cloq_err err;
	cloq_err_clear(&err);
	int rc = CLOQ_OK;
	char dir[256] = "", path[512];
	cloq_st_model *m = NULL;
	cloq_reader *r = NULL;
	void *buf[2] = { NULL, NULL };
	int *fds = NULL;
	struct span *sp = NULL;
	if (!o.model) {
		snprintf(dir, sizeof dir, "/tmp/cloq_bench_reader.XXXXXX");
		if (!mkdtemp(dir)) {
			perror("bench_reader: mkdtemp");
			return 3;
		}
		snprintf(path, sizeof path, "%s/model.safetensors", dir);
		double t0 = now_s();
		printf("bench_reader: generating %.2f GiB of bf16 llama2-7b layers in %s ...\n", o.size_gib, path);
		fflush(stdout);
		if ((rc = generate(path, o.size_gib, &err)))
			goto out;
		printf("  generated in %.1f s\n", now_s() - t0);
		o.model = path;
	}
	if ((rc = cloq_st_open(o.model, &m, &err)))
		goto out;
	int layers = cloq_st_layer_count(m);
	uint64_t total = 0;
	for (size_t i = 0; i < cloq_st_nfiles(m); i++)
		total += cloq_st_file_size(m, i);
	sp = cloq_calloc((size_t)(layers ? layers : 1), sizeof *sp);
	uint64_t maxlen = 0;
	if (!sp || layers < 1 || layer_spans(m, layers, sp, &maxlen)) {
		rc = cloq_err_set(&err, CLOQ_EINPUT, "%s: needs model.layers.N.* tensors, each layer in one file",
				  o.model);
		goto out;
	}
	int direct = try_direct(cloq_st_file_path(m, 0));
	printf("model: %s: %zu file(s), %.2f GiB, %d layers (largest %.0f MiB); page cache avoided by %s\n",
	       o.model, cloq_st_nfiles(m), (double)total / (1u << 30), layers, (double)maxlen / (1u << 20),
	       direct ? "O_DIRECT" : "posix_fadvise(POSIX_FADV_DONTNEED) before each pass");
	/* room for a layer's span, and for its per-tensor plan (64-byte padding per tensor) */
	size_t bufsz = (size_t)maxlen + 64 * CLOQ_PLAN_ALIGN;
	buf[0] = cloq_aligned_alloc(ALIGN, bufsz);
	buf[1] = cloq_aligned_alloc(ALIGN, bufsz);
	size_t nf = cloq_st_nfiles(m);
	fds = cloq_malloc(nf * sizeof *fds);
	const char **paths = cloq_malloc(nf * sizeof *paths);
	if (!buf[0] || !buf[1] || !fds || !paths) {
		cloq_free(paths);
		rc = cloq_err_set(&err, CLOQ_EIO, "out of memory for %llu-byte buffers", (unsigned long long)maxlen);
		goto out;
	}
	for (size_t i = 0; i < nf; i++) {
		paths[i] = cloq_st_file_path(m, i);
		fds[i] = open(paths[i], O_RDONLY | (direct ? O_DIRECT : 0));
	}

	/* ---- bandwidth: the same spans into the same buffers, best of reps ---- */
	const char *names[3] = { "pread, 1 call per layer", "reader io_uring", "reader pread backend" };
	double best[3] = { 0, 0, 0 };
	char label[3][96];
	snprintf(label[0], sizeof label[0], "%s", names[0]);
	for (int rep = 0; rep < o.reps; rep++) {
		for (int meth = 0; meth < 3; meth++) {
			if (!direct)
				drop_cache(m);
			double t0 = now_s();
			uint64_t got = 0;
			if (meth == 0) {
				for (int l = 0; l < layers; l++)
					if (pread_span(fds[sp[l].file], buf[l & 1], &sp[l],
						       cloq_st_file_size(m, (size_t)sp[l].file), &got)) {
						rc = cloq_err_set(&err, CLOQ_EIO, "%s: pread failed: %s",
								  paths[sp[l].file], strerror(errno));
						cloq_free(paths);
						goto out;
					}
			} else {
				cloq_reader_params p = cloq_reader_default_params();
				p.queue_depth = o.qd;
				p.chunk_bytes = o.chunk;
				p.force_pread = meth == 2;
				p.direct = direct;
				if ((rc = cloq_reader_create(paths, nf, &p, &r, &err))) {
					cloq_free(paths);
					goto out;
				}
				snprintf(label[meth], sizeof label[meth], "reader %s qd %u, %zu KiB chunks",
					 cloq_reader_backend(r), meth == 2 ? 1 : o.qd, o.chunk >> 10);
				t0 = now_s();
				for (int l = 0; l < layers; l++) {
					/* the span may be rounded past EOF: read exactly to EOF, and under
					 * O_DIRECT drop the last partial block (< 4 KiB) */
					uint64_t fsz = cloq_st_file_size(m, (size_t)sp[l].file);
					uint64_t end = sp[l].off + sp[l].len < fsz ? sp[l].off + sp[l].len : fsz;
					uint64_t len = end - sp[l].off;
					if (direct)
						len = len / ALIGN * ALIGN;
					cloq_reader_req q = { .file = sp[l].file, .offset = sp[l].off,
							      .length = (size_t)len, .dst = buf[l & 1] };
					if ((rc = cloq_reader_start(r, &q, 1, &err)) || (rc = cloq_reader_wait(r, &err))) {
						cloq_free(paths);
						goto out;
					}
					got += q.length;
				}
				cloq_reader_free(r);
				r = NULL;
			}
			double dt = now_s() - t0, bw = (double)got / dt / (1u << 30);
			if (bw > best[meth])
				best[meth] = bw;
		}
	}
	printf("\n%-44s %10s %10s\n", "sequential read, cold cache", "GiB/s", "vs pread");
	for (int meth = 0; meth < 3; meth++)
		printf("%-44s %10.2f %9.0f%%\n", label[meth], best[meth], 100.0 * best[meth] / best[0]);

	/* ---- layer pipeline: double-buffered, simulated compute ----
	 * mode 0: no prefetch, per-tensor plans, buffered (its layer-0 wait sets the default compute)
	 * mode 1: prefetch l+1, per-tensor plans, buffered (WILLNEED hints)
	 * mode 2: prefetch l+1, one aligned span per layer, O_DIRECT (when the file system allows) */
	double compute = o.compute_ms > 0 ? o.compute_ms / 1000.0 : 0;
	cloq_reader_req reqs[2][64];
	size_t n[2], need = 0;
	cloq_st_span_plan spl;
	printf("\n%-44s %8s %10s %10s %12s\n", "layer pipeline, cold cache", "total s", "I/O wait s",
	       "wait share", "steady share");
	for (int mode = 0; mode <= (direct ? 2 : 1); mode++) {
		cloq_reader_params p = cloq_reader_default_params();
		p.queue_depth = o.qd;
		p.chunk_bytes = o.chunk;
		p.direct = mode == 2;
		if ((rc = cloq_reader_create(paths, nf, &p, &r, &err))) {
			cloq_free(paths);
			goto out;
		}
		drop_cache(m);
		double t0 = now_s(), wait_all = 0, wait_first = 0, t_first = 0;
		for (int l = -1; l < layers; l++) {
			int cur = l & 1, nx = !cur;
			if (l >= 0) {
				double w0 = now_s();
				if ((rc = cloq_reader_wait(r, &err))) {
					cloq_free(paths);
					goto out;
				}
				double wt = now_s() - w0;
				wait_all += wt;
				if (l == 0) {
					wait_first = wt;
					t_first = now_s() - t0;
				}
			}
			if (l == -1)
				nx = 0;
			int next = l + 1 < layers;
			if (next) {
				if (mode == 2) {
					rc = cloq_st_layer_span_plan(m, l + 1, ALIGN, buf[nx], bufsz, &spl, &err);
					memcpy(reqs[nx], spl.req, spl.nreq * sizeof spl.req[0]);
					n[nx] = spl.nreq;
				} else {
					rc = cloq_st_layer_plan(m, l + 1, buf[nx], bufsz, reqs[nx], 64, &n[nx],
								&need, &err);
				}
				if (rc) {
					cloq_free(paths);
					goto out;
				}
			}
			if (next && (mode > 0 || l == -1) && (rc = cloq_reader_start(r, reqs[nx], n[nx], &err))) {
				cloq_free(paths);
				goto out;
			}
			if (l == -1)
				continue;
			if (compute <= 0)
				compute = wait_first;
			sleep_s(compute);
			if (next && mode == 0 && (rc = cloq_reader_start(r, reqs[nx], n[nx], &err))) {
				cloq_free(paths);
				goto out;
			}
		}
		double dt = now_s() - t0;
		cloq_reader_stats st;
		cloq_reader_get_stats(r, &st);
		char lab[96];
		snprintf(lab, sizeof lab, "%s, %.0f ms x %d",
			 mode == 0 ? "no prefetch, per tensor" : mode == 1 ? "prefetch, per tensor"
									: "prefetch, span, O_DIRECT",
			 compute * 1000, layers);
		/* steady share leaves out layer 0, whose read nothing can hide: with 80 layers it is what
		 * the whole run approaches */
		printf("%-44s %8.2f %10.2f %9.1f%% %11.1f%%\n", lab, dt, st.wait_seconds,
		       100.0 * wait_all / dt, 100.0 * (wait_all - wait_first) / (dt - t_first));
		cloq_reader_free(r);
		r = NULL;
	}
	printf("\ntarget: reader io_uring >= 90%% of pread: %s (%.0f%%)\n",
	       best[1] >= 0.9 * best[0] ? "met" : "NOT met", 100.0 * best[1] / best[0]);
	cloq_free(paths);
out:
	if (rc)
		fprintf(stderr, "bench_reader: %s\n", err.msg);
	cloq_reader_free(r);
	if (fds)
		for (size_t i = 0; m && i < cloq_st_nfiles(m); i++)
			if (fds[i] >= 0)
				close(fds[i]);
	cloq_free(fds);
	cloq_free(sp);
	cloq_free(buf[0]);
	cloq_free(buf[1]);
	cloq_st_close(m);
	if (dir[0] && !o.keep) {
		unlink(path);
		rmdir(dir);
	} else if (dir[0]) {
		printf("kept %s\n", path);
	}
	return rc;
}
