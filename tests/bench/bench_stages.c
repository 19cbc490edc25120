/*
 * bench_stages.c - where the quantize and solve stages of `cloq convert` spend their time, for one
 * linear, calling the same library functions in the same order as src/job/cloq_layerstore.c
 * (cloq_layer_solve_group with the defaults: GPTQ, init cloq, cloq_iters 1):
 *
 *   gram          cloq_gram_add of T tokens (the statistics stage's own arithmetic)
 *   GPTQ factor   cloq_quant_hinv_create (float32, once per group)
 *   GPTQ loop     cloq_quant_gptq_hinv on that factor (per linear)
 *   chol          cloq_solver_factor_inplace + cloq_factor_make_f32 (once per group)
 *   cloq          cloq_solver_cloq with info: M = R dW^T, randomized SVD, A, and the energies the
 *                 quantized and final errors come from
 *   denominator   cloq_solver_factor_objective(W): tr(W H W^T) through R
 * and, for comparison in the same run, the previous way of computing the two relative errors
 * (cloq_solver_rel_error twice: four float64 E H products), with the values of both.
 *
 * H comes from T random tokens with per-channel scales log-uniform over a decade (an H with a
 * spread spectrum); W is std 1/sqrt(in); 4 bits, group 128, rank 64 (the e2e bench's settings).
 *
 * usage: bench_stages [--shape OUTxIN] [--tokens T] [--threads N]
 *        [--rank R]; default 4096x4096 (q/k/v/o of Llama-2-7B), T 2048, rank 64; 11008x4096 and
 *        4096x11008 for the MLP.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <omp.h>

#include "cloq_error.h"
#include "cloq_quant.h"
#include "cloq_solver.h"
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

static uint64_t st = 0x243F6A8885A308D3ull;
static double urand(void)
{
	st ^= st << 13;
	st ^= st >> 7;
	st ^= st << 17;
	return ((double)(st >> 11) + 0.5) / 9007199254740992.0;
}
static double grand(void) { return sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand()); }

#define CHECK(call)                                                                                  \
	do {                                                                                         \
		if ((call) != CLOQ_OK) {                                                             \
			fprintf(stderr, "bench_stages: %s\n", err.msg);                              \
			return 3;                                                                    \
		}                                                                                    \
	} while (0)

int main(int argc, char **argv)
{
	int out = 4096, in = 4096, T = 2048, threads = (int)sysconf(_SC_NPROCESSORS_ONLN), rank = 64;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--shape") && i + 1 < argc && sscanf(argv[i + 1], "%dx%d", &out, &in) == 2)
			i++;
		else if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
			T = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
			threads = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--rank") && i + 1 < argc)
			rank = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: %s [--shape OUTxIN] [--tokens T] [--threads N] [--rank R]\n", argv[0]);
			return 1;
		}
	}
	if (out < 8 || in < 8 || T < 1 || threads < 1 || rank < 1 || rank > (in < out ? in : out)) {
		fprintf(stderr, "bench_stages: bad sizes\n");
		return 1;
	}
	openblas_set_num_threads(threads);
	omp_set_num_threads(threads);
	cloq_err err;
	cloq_err_clear(&err);
	size_t wn = (size_t)out * in;
	float *X = malloc((size_t)T * in * 4), *W = malloc(wn * 4), *Wq = malloc(wn * 4), *dW = malloc(wn * 4);
	float *sc = malloc((size_t)in * 4);
	float *A = calloc((size_t)rank * in, 4), *B = calloc((size_t)out * rank, 4);
	if (!X || !W || !Wq || !dW || !sc || !A || !B) {
		fprintf(stderr, "bench_stages: out of memory\n");
		return 3;
	}
	for (int j = 0; j < in; j++)
		sc[j] = (float)pow(10.0, urand());
	for (size_t i = 0; i < (size_t)T * in; i++)
		X[i] = (float)grand() * sc[i % in];
	for (size_t i = 0; i < wn; i++)
		W[i] = (float)(grand() / sqrt((double)in));

	printf("one linear %d x %d (out x in), %d calibration tokens, 4 bits group 128, rank %d, %d threads, "
	       "load 1m %.2f at start\n", out, in, T, rank, threads, load1());
	printf("| step (as cloq_layer_solve_group runs it, defaults: GPTQ, one-shot CLoQ) | seconds | GFLOP counted | GFLOP/s |\n");
	printf("|---|---|---|---|\n");
	double t, tg, tf, th, thq, tc, to, tr;
	cloq_gram g;
	CHECK(cloq_gram_init(&g, in, &err));
	t = now();
	CHECK(cloq_gram_add(&g, X, T, &err));
	cloq_gram_finish(&g);
	tg = now() - t;
	printf("| gram: H += X^T X (%d tokens; statistics stage) | %.2f | %.1f | %.1f |\n", T, tg,
	       (double)T * in * in / 1e9, (double)T * in * in / 1e9 / tg);

	/* as cloq_layer_solve_group: GPTQ's float32 factor of H^-1 from H, the linear quantized on
	 * it, then H becomes R in place (a copy here: the float64 comparison below still needs H) */
	cloq_quant_params qp = cloq_quant_default_params();
	qp.bits = 4;
	qp.group_size = 128;
	cloq_qtensor q;
	memset(&q, 0, sizeof q);
	cloq_quant_hinv *h = NULL;
	t = now();
	CHECK(cloq_quant_hinv_create(g.H, in, &qp, &h, &err));
	th = now() - t;
	printf("| GPTQ's factor of H^-1 (float32 spotrf + strtri), once per group | %.2f | %.1f | %.1f |\n", th,
	       2.0 * in * in * in / 3e9, 2.0 * in * in * in / 3e9 / th);
	t = now();
	CHECK(cloq_quant_gptq_hinv(W, out, h, &qp, &q, NULL, &err));
	thq = now() - t;
	printf("| GPTQ column loop per linear | %.2f | %.1f | %.1f |\n", thq, (double)out * in * in / 1e9,
	       (double)out * in * in / 1e9 / thq);
	cloq_quant_dequant(&q, Wq);
	cloq_qtensor_free(&q);
	cloq_quant_hinv_free(h);

	double *Hc = malloc((size_t)in * in * sizeof(double));
	if (!Hc)
		return 3;
	memcpy(Hc, g.H, (size_t)in * in * sizeof(double));
	cloq_factor *f = NULL;
	t = now();
	CHECK(cloq_solver_factor_inplace(Hc, in, CLOQ_LAMBDA_REL_DEFAULT, &f, &err));
	CHECK(cloq_factor_make_f32(f, &err));
	tf = now() - t;
	printf("| chol(H + lambda I) in place (float64) + float32 copy, once per group | %.2f | %.1f | %.1f |\n", tf,
	       (double)in * in * in / 3e9, (double)in * in * in / 3e9 / tf);

	for (size_t i = 0; i < wn; i++)
		dW[i] = W[i] - Wq[i];
	cloq_lora_params lp = cloq_lora_default_params();
	lp.rank = rank;
	cloq_solve_info info;
	memset(&info, 0, sizeof info);
	t = now();
	CHECK(cloq_solver_cloq(f, dW, out, in, &lp, A, B, &info, &err));
	tc = now() - t;
	printf("| CLoQ: M = R dW^T (float32 trmm), randomized SVD, A; its energies | %.2f | %.1f | %.1f |\n", tc,
	       (double)out * in * in / 1e9, (double)out * in * in / 1e9 / tc);
	t = now();
	double den = cloq_solver_factor_objective(f, W, out, in);
	to = now() - t;
	printf("| tr(W H W^T) = ||R W^T||^2 - lambda ||W||^2 (float32 trmm) | %.2f | %.1f | %.1f |\n", to,
	       (double)out * in * in / 1e9, (double)out * in * in / 1e9 / to);
	double lam = cloq_factor_lambda(f), dw2 = 0;
	for (size_t i = 0; i < wn; i++)
		dw2 += (double)dW[i] * dW[i];
	double nq = info.total_energy - lam * dw2;
	double rq_new = sqrt((nq > 0 ? nq : 0) / den), rf_new = sqrt(info.objective_undamped / den);

	/* the previous session's way, for comparison in the same run: relative errors by float64
	 * tr(E H E^T) products from H (two per error) */
	double rq, rf;
	t = now();
	CHECK(cloq_solver_rel_error(g.H, W, Wq, NULL, NULL, 1.0, out, in, 0, &rq, &err));
	CHECK(cloq_solver_rel_error(g.H, W, Wq, A, B, 1.0, out, in, rank, &rf, &err));
	tr = now() - t;
	printf("| (before: rel_error x2 from H, 4 float64 E H products) | %.2f | %.1f | %.1f |\n", tr,
	       8.0 * out * in * in / 1e9, 8.0 * out * in * in / 1e9 / tr);
	double per = thq + tc + to;
	printf("\nper linear now (GPTQ loop + CLoQ + denominator): %.1fs, plus per group %.1fs (factors); the "
	       "error report's float64 way alone took %.1fs\n", per, th + tf, tr);
	printf("errors now %.6f -> %.6f, float64 from H %.6f -> %.6f (relative differences %.1e, %.1e); load 1m %.2f "
	       "at end\n", rq_new, rf_new, rq, rf, fabs(rq_new - rq) / rq, fabs(rf_new - rf) / rf, load1());
	cloq_factor_free(f); /* frees Hc's buffer, which became R */
	cloq_gram_free(&g);
	free(X);
	free(W);
	free(Wq);
	free(dW);
	free(sc);
	free(A);
	free(B);
	return 0;
}
