/*
 * bench_forward.c - how close the forward pass runs to this machine's sgemm peak, and what the
 * activation cache does to real activations.
 *
 * Part 1, sgemm peak: cblas_sgemm of a large square fp32 matrix (default 4096^3, best of 2), with
 * OpenBLAS at the same thread count as everything below.
 * Part 2, one Llama-2-7B-geometry decoder block (hidden 4096, intermediate 11008, 32 heads, 32 kv
 * heads, head_dim 128), random weights with std 1/sqrt(in) (Irwin-Hall, as tests/tools/mkmodel),
 * through cloq_block_forward (src/model/cloq_llama.h) at seqlen 512 and 2048. FLOPs counted:
 *   linears     2 * T * params, params = 4 * 4096^2 + 3 * 4096 * 11008 = 202.4 M
 *   attention   4 * T^2 * heads * head_dim (QK^T and PV as computed: the full T x T square,
 *               masked half included, since that is what the code multiplies)
 * Time is split into the seven linears alone (cloq_linear_fwd on the same shapes, timed apart: the
 * GEMM-bound part, compared with the sgemm peak; target >= 70%) and "other" = block - linears
 * (attention with its softmax, RoPE, norms, SiLU, residuals). The passes stopped after group QKV
 * and O (what cloq's statistics passes run) are timed too and printed below the table.
 * Part 3, the activation cache (io/cloq_actcache.h) on REAL activations: stories260K
 * (fixtures/stories260K) over fixtures/reference/calib_tokens_128x256.npy, hidden states at layer
 * boundaries 0 (embeddings), 1, 3, 5 (last block's output), written one frame per window (as the
 * pipeline does) and read back, fp32 and bf16 at zstd level 1 (the pipeline's). MB/s are counted in
 * fp32 bytes (rows x cols x 4) and reads come from the page cache (decode speed, not the disk).
 *
 * Every table line carries the 1-minute load average when it was measured: the machine is shared.
 *
 * usage: bench_forward [--threads N] [--seqlens 512,2048] [--reps N] [--peak-n N]
 *                      [--no-block] [--no-cache] [--dir D]
 * Default: all cores, seqlens 512 and 2048, 1 rep of each (about 1-2 minutes on 2 cores).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#include <omp.h>

#include "cloq_actcache.h"
#include "cloq_calib.h"
#include "cloq_config.h"
#include "cloq_error.h"
#include "cloq_eval.h"
#include "cloq_llama.h"
#include "cloq_model.h"
#include "cloq_npy.h"
#include "cloq_sys.h"

extern void openblas_set_num_threads(int);

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double load1(void)
{
	double l = -1;
	FILE *f = fopen("/proc/loadavg", "r");
	if (f) {
		if (fscanf(f, "%lf", &l) != 1)
			l = -1;
		fclose(f);
	}
	return l;
}

/* Irwin-Hall "normal" (sum of four 16-bit uniforms), std `sd`, one stream per row. */
static void fill_normal(float *a, size_t rows, size_t cols, double sd, uint64_t seed)
{
	/* the sum of 4 U(0,1) has mean 2 and variance 4/12 */
	double k = sd / sqrt(4.0 / 12.0);
#pragma omp parallel for schedule(static)
	for (size_t r = 0; r < rows; r++) {
		uint64_t s = seed ^ (0x9E3779B97F4A7C15ull * (r + 1));
		for (size_t c = 0; c < cols; c++) {
			uint64_t z = cloq_splitmix64(&s);
			double u = (double)(z & 0xffff) + (double)((z >> 16) & 0xffff) + (double)((z >> 32) & 0xffff) +
				   (double)(z >> 48);
			a[r * cols + c] = (float)((u / 65535.0 - 2.0) * k);
		}
	}
}

/* ---- part 1: sgemm peak ------------------------------------------------------------------- */
static double sgemm_peak(int n, int reps, double *secs)
{
	size_t nn = (size_t)n * n;
	float *A = cloq_aligned_alloc(64, nn * 4), *B = cloq_aligned_alloc(64, nn * 4), *C = cloq_aligned_alloc(64, nn * 4);
	if (!A || !B || !C) {
		fprintf(stderr, "bench_forward: out of memory for the sgemm peak\n");
		exit(3);
	}
	fill_normal(A, n, n, 1.0, 1);
	fill_normal(B, n, n, 1.0, 2);
	/* warm-up: thread pool start, page faults of C */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 512, 512, 512, 1.0f, A, n, B, n, 0.0f, C, n);
	double best = 1e30;
	for (int r = 0; r < reps; r++) {
		double t = now();
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
		t = now() - t;
		best = t < best ? t : best;
	}
	cloq_free(A);
	cloq_free(B);
	cloq_free(C);
	*secs = best;
	return 2.0 * n * (double)n * n / best / 1e9;
}

/* ---- part 2: one 7B block ----------------------------------------------------------------- */
static cloq_config geom_7b(void)
{
	cloq_config c;
	memset(&c, 0, sizeof c);
	c.arch = CLOQ_ARCH_LLAMA;
	snprintf(c.arch_name, sizeof c.arch_name, "LlamaForCausalLM");
	c.hidden = 4096;
	c.intermediate = 11008;
	c.layers = 1;
	c.heads = 32;
	c.kv_heads = 32;
	c.head_dim = 128;
	c.vocab = 32000;
	c.max_pos = 4096;
	c.rms_eps = 1e-5;
	c.rope_theta = 10000.0;
	c.rope_type = CLOQ_ROPE_DEFAULT;
	c.bos_id = 1;
	c.eos_id = 2;
	return c;
}

/* wall seconds of the passes that cloq's statistics stage runs: stopped after group g, and full */
struct passes {
	int T;
	double s[CLOQ_GROUPS + 1];
};

static int block_bench(const cloq_config *c, const cloq_layer_w *w, int T, int reps, double peak, struct passes *ps)
{
	int rc = CLOQ_OK;
	cloq_err err;
	cloq_err_clear(&err);
	cloq_rope rope = {0};
	cloq_block_ws *ws = NULL;
	size_t xn = (size_t)T * c->hidden;
	float *x0 = cloq_malloc(xn * 4), *x = cloq_malloc(xn * 4), *y = NULL;
	size_t ymax = (size_t)T * c->intermediate;
	y = cloq_malloc(ymax * 4);
	if (!x0 || !x || !y) {
		fprintf(stderr, "bench_forward: out of memory\n");
		rc = CLOQ_EIO;
		goto out;
	}
	fill_normal(x0, T, c->hidden, 1.0, 77);
	if ((rc = cloq_rope_init(&rope, c, T, &err)) || (rc = cloq_block_ws_create(c, T, &ws, &err))) {
		fprintf(stderr, "bench_forward: %s\n", err.msg);
		goto out;
	}
	double lin_params = 0;
	for (int l = 0; l < CLOQ_LINEARS; l++) {
		int o, i;
		cloq_linear_shape(c, l, &o, &i);
		lin_params += (double)o * i;
	}
	double f_lin = 2.0 * T * lin_params;
	double f_att = 4.0 * (double)T * T * c->heads * c->head_dim;
	double t_full = 1e30, t_qkv = 1e30, t_o = 1e30, t_gu = 1e30, t_dn = 1e30, t_lin = 1e30;
	double la0 = load1();
	/* no warm-up run: the workspace's page faults (~0.4 GB at T = 2048) cost ~0.1 s of ~10-40 s */
	for (int r = 0; r < reps; r++) {
		double t;
		memcpy(x, x0, xn * 4);
		t = now();
		if ((rc = cloq_block_forward(c, 0, w, &rope, ws, x, T, NULL, NULL, -1, &err)))
			break;
		t = now() - t;
		t_full = t < t_full ? t : t_full;
		memcpy(x, x0, xn * 4);
		t = now();
		if ((rc = cloq_block_forward(c, 0, w, &rope, ws, x, T, NULL, NULL, CLOQ_GROUP_QKV, &err)))
			break;
		t = now() - t;
		t_qkv = t < t_qkv ? t : t_qkv;
		t = now();
		if ((rc = cloq_block_forward(c, 0, w, &rope, ws, x, T, NULL, NULL, CLOQ_GROUP_O, &err)))
			break;
		t = now() - t;
		t_o = t < t_o ? t : t_o;
		t = now();
		if ((rc = cloq_block_forward(c, 0, w, &rope, ws, x, T, NULL, NULL, CLOQ_GROUP_GATEUP, &err)))
			break;
		t = now() - t;
		t_gu = t < t_gu ? t : t_gu;
		t = now();
		if ((rc = cloq_block_forward(c, 0, w, &rope, ws, x, T, NULL, NULL, CLOQ_GROUP_DOWN, &err)))
			break;
		t = now() - t;
		t_dn = t < t_dn ? t : t_dn;
		/* the seven linears alone, same shapes, inputs of the right width */
		t = now();
		for (int l = 0; l < CLOQ_LINEARS; l++) {
			int o, i;
			cloq_linear_shape(c, l, &o, &i);
			/* order q k v o gate up down: down reads the (T, intermediate) up_proj left in y */
			const float *in = i == c->hidden ? x0 : y;
			float *outp = i == c->hidden ? y : x;
			cloq_linear_fwd(in, w->w[l], NULL, outp, T, i, o);
		}
		t = now() - t;
		t_lin = t < t_lin ? t : t_lin;
	}
	if (rc) {
		fprintf(stderr, "bench_forward: %s\n", err.msg);
		goto out;
	}
	double la1 = load1();
	/* everything that is not one of the seven GEMMs: attention (its two GEMMs per head and the
	 * softmax), RoPE, norms, SiLU, residuals; the difference of two timings, so noisy under load */
	double t_other = t_full - t_lin;
	ps->T = T;
	ps->s[CLOQ_GROUP_QKV] = t_qkv;
	ps->s[CLOQ_GROUP_O] = t_o;
	ps->s[CLOQ_GROUP_GATEUP] = t_gu;
	ps->s[CLOQ_GROUP_DOWN] = t_dn;
	ps->s[CLOQ_GROUPS] = t_full;
	printf("| %5d | %8.0f | %7.2f | %8.1f | %7.2f | %8.1f | %6.0f%% | %7.2f | %8.1f | %6.0f%% | %4.1f-%4.1f |\n", T,
	       T / t_full, t_full, (f_lin + f_att) / t_full / 1e9, t_lin, f_lin / t_lin / 1e9,
	       100.0 * f_lin / t_lin / 1e9 / peak, t_other, f_att / 1e9, 100.0 * (f_lin + f_att) / t_full / 1e9 / peak,
	       la0, la1);
	fflush(stdout);
out:
	cloq_free(x0);
	cloq_free(x);
	cloq_free(y);
	cloq_block_ws_free(ws);
	cloq_rope_free(&rope);
	return rc;
}

static int part_block(const int *seqlens, int nseq, int reps, double *peak, int peak_n)
{
	cloq_config c = geom_7b();
	cloq_layer_w w;
	memset(&w, 0, sizeof w);
	int rc = CLOQ_OK;
	double t = now();
	w.attn_norm = cloq_malloc((size_t)c.hidden * 4);
	w.ffn_norm = cloq_malloc((size_t)c.hidden * 4);
	if (!w.attn_norm || !w.ffn_norm) {
		rc = CLOQ_EIO;
		goto out;
	}
	for (int i = 0; i < c.hidden; i++)
		w.attn_norm[i] = w.ffn_norm[i] = 1.0f;
	for (int l = 0; l < CLOQ_LINEARS; l++) {
		int o, i;
		cloq_linear_shape(&c, l, &o, &i);
		w.w[l] = cloq_aligned_alloc(64, (size_t)o * i * 4);
		if (!w.w[l]) {
			rc = CLOQ_EIO;
			goto out;
		}
		fill_normal(w.w[l], o, i, 1.0 / sqrt((double)i), 1000 + l);
	}
	printf("\none Llama-2-7B-geometry block (4096/11008, 32 heads, 32 kv heads), random weights std 1/sqrt(in), "
	       "fp32, best of %d (weights made in %.1fs)\n", reps, now() - t);
	printf("FLOPs: linears 2*T*202.4M params; attention 4*T^2*heads*head_dim (the full square; cloq computes the causal half in 64-row blocks)\n");
	/* warm-up, untimed: OpenBLAS's thread pool, first touches of the weights by the GEMMs */
	{
		struct passes dummy;
		int so = dup(1);
		fflush(stdout);
		if (so >= 0 && freopen("/dev/null", "w", stdout)) {
			rc = block_bench(&c, &w, 128, 1, 1.0, &dummy);
			fflush(stdout);
			dup2(so, 1);
			close(so);
		}
		if (rc)
			goto out;
	}
	printf("| T     | tokens/s | block s | block GF/s | linears s | linears GF/s | of peak | other s | attn GFLOP | block of peak | load 1m |\n");
	printf("|-------|----------|---------|------------|-----------|--------------|---------|---------|------------|---------------|---------|\n");
	struct passes ps[8];
	int done = 0;
	for (int k = 0; k < nseq && !rc; k++) {
		/* the machine is shared: take the peak again right before each row and keep the highest,
		 * so that a ratio is never flattered by a peak measured in a busier moment */
		double secs, p = sgemm_peak(peak_n, 1, &secs);
		*peak = p > *peak ? p : *peak;
		if (!(rc = block_bench(&c, &w, seqlens[k], reps, *peak, &ps[k])))
			done++;
	}
	printf("(of peak: against the highest sgemm peak measured so far, %.1f GFLOP/s)\n", *peak);
	printf("\ncloq's per-layer forward work (true-sequential: one pass stopped after each group collects its "
	       "Gram input, then the full propagate pass), seconds per window, Gram accumulation not included:\n");
	printf("| T     | to qkv | to o  | to gateup | to down | full  | 4 stats passes + propagate | in full passes |\n");
	printf("|-------|--------|-------|-----------|---------|-------|----------------------------|----------------|\n");
	for (int k = 0; k < done; k++) {
		double sum = 0;
		for (int g = 0; g <= CLOQ_GROUPS; g++)
			sum += ps[k].s[g];
		printf("| %5d | %6.2f | %5.2f | %9.2f | %7.2f | %5.2f | %26.2f | %14.2f |\n", ps[k].T, ps[k].s[0], ps[k].s[1],
		       ps[k].s[2], ps[k].s[3], ps[k].s[4], sum, sum / ps[k].s[4]);
	}
out:
	if (rc == CLOQ_EIO)
		fprintf(stderr, "bench_forward: out of memory for the 7B block\n");
	cloq_layer_w_free(&w);
	return rc;
}

/* ---- part 3: the activation cache on stories260K's activations ----------------------------- */
struct cres {
	double ratio, wmbs, rmbs;
};

static int cache_roundtrip(const char *path, const float *X, int nwin, int T, int cols, int enc, struct cres *res,
			   cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_cache_writer *w = NULL;
	cloq_cache_reader *r = NULL;
	float *buf = cloq_malloc((size_t)T * cols * 4);
	CLOQ_FAIL_IF(!buf, err, CLOQ_EIO, "out of memory");
	double t0 = now();
	CLOQ_TRY(cloq_cache_create(path, (size_t)cols, enc, 1, &w, err));
	for (int i = 0; i < nwin; i++)
		CLOQ_TRY(cloq_cache_append(w, X + (size_t)i * T * cols, T, err));
	CLOQ_TRY(cloq_cache_commit(w, err));
	double t1 = now();
	struct stat st;
	CLOQ_FAIL_IF(stat(path, &st) != 0, err, CLOQ_EIO, "%s: stat failed", path);
	double t2 = now();
	CLOQ_TRY(cloq_cache_open(path, &r, err));
	for (int i = 0; i < nwin; i++) {
		int rows = 0;
		CLOQ_TRY(cloq_cache_read_frame(r, (size_t)i, buf, &rows, err));
		CLOQ_FAIL_IF(rows != T, err, CLOQ_EINTEGRITY, "%s: frame %d has %d rows", path, i, rows);
		/* fp32 must round-trip bit for bit */
		if (enc == CLOQ_CACHE_F32)
			CLOQ_FAIL_IF(memcmp(buf, X + (size_t)i * T * cols, (size_t)T * cols * 4) != 0, err,
				     CLOQ_EINTEGRITY, "%s: frame %d does not round-trip", path, i);
	}
	double t3 = now();
	double in = (double)nwin * T * cols * 4.0;
	res->ratio = in / (double)st.st_size;
	res->wmbs = in / 1e6 / (t1 - t0);
	res->rmbs = in / 1e6 / (t3 - t2);
fail:
	cloq_cache_writer_free(w);
	cloq_cache_close(r);
	cloq_free(buf);
	unlink(path);
	return rc;
}

static int part_cache(const char *dir, int reps)
{
	int rc = CLOQ_OK;
	cloq_err err;
	cloq_err_clear(&err);
	cloq_model *m = NULL;
	int32_t *ids = NULL;
	float *acts = NULL;
	cloq_rope rope = {0};
	cloq_block_ws *ws = NULL;
	cloq_npy_info info;
	const char *model = "fixtures/stories260K", *toks = "fixtures/reference/calib_tokens_128x256.npy";
	CLOQ_TRY(cloq_model_open(model, &m, &err));
	CLOQ_TRY(cloq_npy_read_i32(toks, &ids, &info, &err));
	CLOQ_FAIL_IF(info.ndim != 2, &err, CLOQ_EINPUT, "%s: expected (n, seqlen) windows", toks);
	const cloq_config *c = &m->cfg;
	int nwin = (int)info.shape[0], T = (int)info.shape[1], D = c->hidden, L = c->layers;
	size_t per = (size_t)nwin * T * D;
	/* hidden states at every boundary 0..L, (nwin * T, D) each */
	acts = cloq_malloc((size_t)(L + 1) * per * 4);
	CLOQ_FAIL_IF(!acts, &err, CLOQ_EIO, "out of memory for %d boundaries", L + 1);
	cloq_lm lm;
	cloq_model_lm(m, &lm);
	CLOQ_TRY(cloq_rope_init(&rope, c, T, &err));
	CLOQ_TRY(cloq_block_ws_create(c, T, &ws, &err));
	double t = now();
	for (int i = 0; i < nwin; i++)
		CLOQ_TRY(lm.embed(lm.ctx, ids + (size_t)i * T, T, acts + (size_t)i * T * D, &err));
	for (int l = 0; l < L; l++) {
		cloq_layer_w w;
		CLOQ_TRY(lm.layer(lm.ctx, l, &w, &err));
		float *src = acts + (size_t)l * per, *dst = acts + (size_t)(l + 1) * per;
		memcpy(dst, src, per * 4);
		for (int i = 0; i < nwin; i++)
			CLOQ_TRY(cloq_block_forward(c, 0, &w, &rope, ws, dst + (size_t)i * T * D, T, NULL, NULL, -1, &err));
	}
	printf("\nactivation cache on REAL activations: stories260K (%s) over %s, %d windows x %d tokens x %d wide "
	       "(%.1f MB fp32 per boundary, forward %.1fs); one frame per window, zstd level 1, best of %d; "
	       "MB/s in fp32 bytes, reads from the page cache\n",
	       model, toks, nwin, T, D, per * 4 / 1e6, now() - t, reps);
	printf("| boundary | encoding | ratio vs fp32 | bits/value | write MB/s | read MB/s | load 1m |\n");
	printf("|----------|----------|---------------|------------|------------|-----------|---------|\n");
	int bounds[4] = {0, 1, L / 2 + 1, L};
	char path[4096];
	snprintf(path, sizeof path, "%s/bench_forward.%ld.cloqact", dir, (long)getpid());
	for (int b = 0; b < 4; b++) {
		if (b > 0 && bounds[b] == bounds[b - 1])
			continue;
		for (int e = 0; e < 2; e++) {
			int enc = e ? CLOQ_CACHE_BF16 : CLOQ_CACHE_F32;
			struct cres best = {0, 0, 0}, cur = {0, 0, 0};
			for (int r = 0; r < reps; r++) {
				CLOQ_TRY(cache_roundtrip(path, acts + (size_t)bounds[b] * per, nwin, T, D, enc, &cur, &err));
				best.ratio = cur.ratio;
				best.wmbs = cur.wmbs > best.wmbs ? cur.wmbs : best.wmbs;
				best.rmbs = cur.rmbs > best.rmbs ? cur.rmbs : best.rmbs;
			}
			char name[32];
			if (bounds[b] == 0)
				snprintf(name, sizeof name, "embed");
			else
				snprintf(name, sizeof name, "after L%d", bounds[b] - 1);
			printf("| %-8s | %-8s | %13.2f | %10.2f | %10.0f | %9.0f | %7.2f |\n", name, e ? "bf16" : "fp32",
			       best.ratio, 32.0 / best.ratio, best.wmbs, best.rmbs, load1());
		}
	}
fail:
	if (rc)
		fprintf(stderr, "bench_forward: %s\n", err.msg);
	cloq_free(acts);
	cloq_free(ids);
	cloq_block_ws_free(ws);
	cloq_rope_free(&rope);
	cloq_model_close(m);
	return rc;
}

int main(int argc, char **argv)
{
	int threads = (int)sysconf(_SC_NPROCESSORS_ONLN), reps = 1, peak_n = 4096, do_block = 1, do_cache = 1;
	int seqlens[8] = {512, 2048}, nseq = 2;
	const char *dir = "/tmp";
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
			threads = atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
			reps = atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--peak-n") && i + 1 < argc) {
			peak_n = atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--seqlens") && i + 1 < argc) {
			nseq = 0;
			for (char *s = argv[++i]; *s && nseq < 8;) {
				seqlens[nseq++] = (int)strtol(s, &s, 10);
				if (*s == ',')
					s++;
				else if (*s)
					break;
			}
		} else if (!strcmp(argv[i], "--no-block")) {
			do_block = 0;
		} else if (!strcmp(argv[i], "--no-cache")) {
			do_cache = 0;
		} else if (!strcmp(argv[i], "--dir") && i + 1 < argc) {
			dir = argv[++i];
		} else {
			fprintf(stderr, "usage: %s [--threads N] [--seqlens 512,2048] [--reps N] [--peak-n N] "
					"[--no-block] [--no-cache] [--dir D]\n", argv[0]);
			return 1;
		}
	}
	for (int k = 0; k < nseq; k++)
		if (seqlens[k] < 1 || seqlens[k] > 4096) {
			fprintf(stderr, "bench_forward: seqlens must be in 1..4096\n");
			return 1;
		}
	if (threads < 1 || reps < 1 || peak_n < 64) {
		fprintf(stderr, "bench_forward: --threads, --reps >= 1, --peak-n >= 64\n");
		return 1;
	}
	openblas_set_num_threads(threads);
	omp_set_num_threads(threads);
	double secs, la = load1();
	double peak = sgemm_peak(peak_n, 2, &secs);
	printf("sgemm peak: %d^3 fp32 (OpenBLAS, %d threads, best of 2): %.1f GFLOP/s (%.2fs)  load 1m %.2f -> %.2f\n",
	       peak_n, threads, peak, secs, la, load1());
	fflush(stdout);
	int rc = 0;
	if (do_block)
		rc = part_block(seqlens, nseq, reps, &peak, peak_n);
	if (!rc && do_cache)
		rc = part_cache(dir, reps < 3 ? 3 : reps);
	return rc ? 3 : 0;
}
