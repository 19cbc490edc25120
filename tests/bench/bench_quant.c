/*
 * bench_quant.c - GPTQ (4 bits, group 64) on LLaMA down_proj shapes, with RTN alongside.
 *
 *   build/bench/bench_quant              Llama-2-7B down_proj: W 4096 x 11008, H 11008^2 (~1 min,
 *                                        ~3 GB), and the projected time of the 70B shape
 *   build/bench/bench_quant --big        + Llama-3-70B down_proj: W 8192 x 28672, H 28672^2
 *                                        (measured; ~16 GB and about 15 min on 2 cores)
 *   build/bench/bench_quant --shape 1024x2752 [--act-order]
 *
 * H (in, in) = diag(d) + F F^T / 256 with F (in, 256) Gaussian and channel energies d_j decaying
 * like (1 + j/8)^-1.5: a random SPD matrix with the decaying spectrum and shared directions of real
 * activations, built in O(in^2 * 256) instead of a token-by-token Gram. W Gaussian, sd 0.02.
 * The GPTQ time splits into the H^-1 factor (O(in^3), LAPACK) and the column loop (O(out in^2),
 * float32 GEMM); the projection scales each part by its own exponent.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "cloq_error.h"
#include "cloq_quant.h"
#include "cloq_sys.h"

static uint64_t st = 88172645463325252ull;

static double urand(void)
{
	st ^= st << 13;
	st ^= st >> 7;
	st ^= st << 17;
	return ((double)(st >> 11) + 0.5) / 9007199254740992.0;
}

static double grand(void) { return sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand()); }

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* CPU seconds of the whole process (all threads): cpu / wall shows how many cores it really got
 * on a shared machine. */
static double cpu_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

struct result {
	int rows, cols;
	double t_gen, t_rtn, t_factor, t_loop, t_total, cpu_total, rel_gptq, rel_rtn;
	int ok;
};

static int run(int rows, int cols, int act_order, struct result *res)
{
	size_t n = (size_t)cols, k = 256;
	int ER = rows < 256 ? rows : 256; /* rows over which the calibrated error is reported */
	memset(res, 0, sizeof *res);
	res->rows = rows;
	res->cols = cols;
	double t0 = now_s();
	double *H = malloc(n * n * sizeof *H), *F = malloc(n * k * sizeof *F);
	float *W = malloc((size_t)rows * n * sizeof *W), *D = malloc((size_t)rows * n * sizeof *D);
	if (!H || !F || !W || !D) {
		fprintf(stderr, "bench_quant: out of memory for %d x %d\n", rows, cols);
		free(H), free(F), free(W), free(D);
		return 1;
	}
	for (size_t i = 0; i < n * k; i++)
		F[i] = grand();
	cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, cols, (int)k, 1.0 / (double)k, F,
		    (int)k, 0.0, H, cols);
	for (size_t i = 0; i < n; i++) {
		size_t p = (size_t)(urand() * (double)n) % n; /* channel energies, shuffled-ish */
		H[i * n + i] += pow(1.0 + (double)p / 8.0, -1.5);
		for (size_t j = i + 1; j < n; j++)
			H[j * n + i] = H[i * n + j];
	}
	for (size_t i = 0; i < (size_t)rows * n; i++)
		W[i] = (float)(0.02 * grand());
	free(F);
	res->t_gen = now_s() - t0;

	cloq_quant_params p = cloq_quant_default_params(); /* 4 bits, group 64, block 128 */
	p.act_order = act_order;
	cloq_qtensor q = {0};
	cloq_quant_gptq_info info;
	cloq_err err;
	t0 = now_s();
	int rc = cloq_quant_rtn(W, rows, cols, &p, &q, &err);
	res->t_rtn = now_s() - t0;
	double wh = 0, lr = 0, lg = 0;
	if (rc == CLOQ_OK) {
		cloq_quant_dequant(&q, D);
		cloq_qtensor_free(&q);
		/* the error is a GEMM as big as GPTQ's own: measured on the first rows only */
		cloq_quant_hloss(W, D, H, ER, cols, &lr, NULL);
		t0 = now_s();
		double c0 = cpu_s();
		rc = cloq_quant_gptq_ex(W, H, rows, cols, &p, &q, &info, &err);
		res->t_total = now_s() - t0;
		res->cpu_total = cpu_s() - c0;
	}
	if (rc != CLOQ_OK) {
		fprintf(stderr, "bench_quant: %s\n", err.msg);
		free(H), free(W), free(D);
		return 1;
	}
	res->t_factor = info.t_factor_s;
	res->t_loop = info.t_quant_s;
	if (lr > 0) {
		cloq_quant_dequant(&q, D);
		cloq_quant_hloss(W, D, H, ER, cols, &lg, NULL);
		float *Z = calloc((size_t)ER * n, sizeof *Z);
		cloq_quant_hloss(W, Z, H, ER, cols, &wh, NULL);
		free(Z);
		res->rel_gptq = sqrt(lg / wh);
		res->rel_rtn = sqrt(lr / wh);
	}
	res->ok = 1;
	cloq_qtensor_free(&q);
	free(H), free(W), free(D);
	return 0;
}

static void print_row(const struct result *r)
{
	printf("| %5d x %-5d | %6.1f | %6.2f | %8.1f | %7.1f | %7.1f | %5.1f | ", r->rows, r->cols,
	       r->t_gen, r->t_rtn, r->t_factor, r->t_loop, r->t_total, r->cpu_total / r->t_total);
	if (r->rel_rtn > 0)
		printf("  %.4f / %.4f   |\n", r->rel_gptq, r->rel_rtn);
	else
		printf("        -         |\n");
}

int main(int argc, char **argv)
{
	int big = 0, act = 0, rows = 4096, cols = 11008;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--big"))
			big = 1;
		else if (!strcmp(argv[i], "--act-order"))
			act = 1;
		else if (!strcmp(argv[i], "--shape") && i + 1 < argc &&
			 sscanf(argv[++i], "%dx%d", &rows, &cols) == 2 && rows > 0 && cols > 0)
			;
		else {
			fprintf(stderr, "usage: bench_quant [--big] [--act-order] [--shape OUTxIN]\n");
			return 1;
		}
	}
	printf("GPTQ 4 bits, group 64, block 128, damp 0.01, fp16 scales%s (wall seconds; cores = "
	       "GPTQ CPU time / wall time; relerr = "
	       "sqrt(tr(E H E^T) / tr(W H W^T)) over the first 256 rows)\n\n", act ? ", act-order" : "");
	printf("| W (out x in)  | make H | RTN    | H^-1 fac | loop    | GPTQ    | cores | relerr gptq / rtn |\n");
	printf("|---------------|--------|--------|----------|---------|---------|-------|-------------------|\n");
	struct result r;
	if (run(rows, cols, act, &r))
		return 1;
	print_row(&r);
	if (r.t_factor > 0 && r.t_loop > 0) {
		double fn = pow(28672.0 / cols, 3), fl = (8192.0 / rows) * pow(28672.0 / cols, 2);
		printf("\nprojected 8192 x 28672 (70B down_proj): factor %.0f s + loop %.0f s = %.0f s "
		       "(factor scales in^3, loop out*in^2)\n",
		       r.t_factor * fn, r.t_loop * fl, r.t_factor * fn + r.t_loop * fl);
	}
	if (big) {
		if (run(8192, 28672, act, &r))
			return 1;
		print_row(&r);
	}
	return 0;
}
