/*
 * bench_stages.c - where the quantize and solve stages of `cloq convert` spend their time, for one
 * linear, calling the same library functions in the same order as src/cloq_layerstore.c
 * (cloq_layer_solve_group with the defaults: GPTQ, init cloq, cloq_iters 1), and the same work
 * with the reuse the library already allows:
 *
 *   gram          cloq_gram_add of T tokens (the statistics stage's own arithmetic)
 *   factor        cloq_solver_factor: Cholesky of H + lambda I (once per group)
 *   gptq          cloq_quant_gptq_ex (its H^-1 factor, then the column loop: info splits the two)
 *   gptq_hinv     cloq_quant_gptq_hinv on a factor made once by cloq_quant_hinv_create (what q/k/v
 *                 and gate/up could share)
 *   cloq          cloq_solver_cloq: M = R dW^T, randomized SVD, A = ... R^-T
 *   alt objective the one objective_d that cloq_solver_cloq_alt evaluates even at iters = 1
 *   rel_error x2  cloq_solver_rel_error for rel_quant and rel_final (two float64 E H products each)
 *
 * H comes from T random tokens with per-channel scales log-uniform over a decade (an H with a
 * spread spectrum); W is std 1/sqrt(in); 4 bits, group 128, rank 64 (the e2e bench's settings).
 *
 * usage: bench_stages [--shape OUTxIN] [--tokens T] [--threads N]
 *        default 4096x4096 (q/k/v/o of Llama-2-7B), T 2048; 11008x4096 and 4096x11008 for the MLP.
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
	int out = 4096, in = 4096, T = 2048, threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--shape") && i + 1 < argc && sscanf(argv[i + 1], "%dx%d", &out, &in) == 2)
			i++;
		else if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
			T = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
			threads = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: %s [--shape OUTxIN] [--tokens T] [--threads N]\n", argv[0]);
			return 1;
		}
	}
	if (out < 8 || in < 8 || T < 1 || threads < 1) {
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
	int rank = 64;
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

	printf("one linear %d x %d (out x in), %d calibration tokens, 4 bits group 128, rank 64, %d threads, "
	       "load 1m %.2f at start\n", out, in, T, threads, load1());
	printf("| step (as cloq_layer_solve_group runs it) | seconds | GFLOP counted | GFLOP/s |\n");
	printf("|---|---|---|---|\n");
	double t, tg, tf, tq, th, thq, tc, to, tr;
	cloq_gram g;
	CHECK(cloq_gram_init(&g, in, &err));
	t = now();
	CHECK(cloq_gram_add(&g, X, T, &err));
	cloq_gram_finish(&g);
	tg = now() - t;
	printf("| gram: H += X^T X (%d tokens; statistics stage) | %.2f | %.1f | %.1f |\n", T, tg,
	       (double)T * in * in / 1e9, (double)T * in * in / 1e9 / tg);

	cloq_factor *f = NULL;
	t = now();
	CHECK(cloq_solver_factor(g.H, in, CLOQ_LAMBDA_REL_DEFAULT, &f, &err));
	tf = now() - t;
	printf("| factor: chol(H + lambda I), once per group | %.2f | %.1f | %.1f |\n", tf, (double)in * in * in / 3e9,
	       (double)in * in * in / 3e9 / tf);

	cloq_quant_params qp = cloq_quant_default_params();
	qp.bits = 4;
	qp.group_size = 128;
	cloq_qtensor q;
	memset(&q, 0, sizeof q);
	cloq_quant_gptq_info qi;
	t = now();
	CHECK(cloq_quant_gptq_ex(W, g.H, out, in, &qp, &q, &qi, &err));
	tq = now() - t;
	printf("| gptq: cloq_quant_gptq per linear (today) | %.2f | %.1f | %.1f |\n", tq,
	       (2.0 * in * in * in / 3 + (double)out * in * in) / 1e9, (2.0 * in * in * in / 3 + (double)out * in * in) / 1e9 / tq);
	printf("|   of which its H^-1 factor | %.2f | %.1f | |\n", qi.t_factor_s, 2.0 * in * in * in / 3e9);
	printf("|   of which the column loop | %.2f | %.1f | |\n", qi.t_quant_s, (double)out * in * in / 1e9);
	cloq_quant_dequant(&q, Wq);
	cloq_qtensor_free(&q);

	cloq_quant_hinv *h = NULL;
	t = now();
	CHECK(cloq_quant_hinv_create(g.H, in, &qp, &h, &err));
	th = now() - t;
	t = now();
	CHECK(cloq_quant_gptq_hinv(W, out, h, &qp, &q, NULL, &err));
	thq = now() - t;
	printf("| gptq_hinv: factor once per group | %.2f | | |\n", th);
	printf("| gptq_hinv: per linear on the shared factor | %.2f | | |\n", thq);
	float *Wq2 = malloc(wn * 4);
	int same = 0;
	if (Wq2) {
		cloq_quant_dequant(&q, Wq2);
		same = memcmp(Wq, Wq2, wn * 4) == 0;
		free(Wq2);
	}
	cloq_qtensor_free(&q);
	cloq_quant_hinv_free(h);

	for (size_t i = 0; i < wn; i++)
		dW[i] = W[i] - Wq[i];
	cloq_lora_params lp = cloq_lora_default_params();
	lp.rank = rank;
	t = now();
	CHECK(cloq_solver_cloq(f, dW, out, in, &lp, A, B, NULL, &err));
	tc = now() - t;
	printf("| cloq: M = R dW^T, randomized SVD, A | %.2f | %.1f | %.1f |\n", tc, (double)out * in * in / 1e9,
	       (double)out * in * in / 1e9 / tc);

	/* the objective cloq_solver_cloq_alt evaluates for its one iterate: E = dW - BA, tr(E H E^T) */
	float *E = malloc(wn * 4);
	if (!E)
		return 3;
	for (int o = 0; o < out; o++)
		for (int i = 0; i < in; i++) {
			double s = 0;
			for (int k = 0; k < rank; k++)
				s += (double)B[(size_t)o * rank + k] * A[(size_t)k * in + i];
			E[(size_t)o * in + i] = (float)(dW[(size_t)o * in + i] - s);
		}
	t = now();
	double obj = cloq_solver_objective(g.H, E, out, in);
	to = now() - t;
	printf("| alt objective tr(E H E^T), float64 (iters = 1 too) | %.2f | %.1f | %.1f |\n", to,
	       2.0 * out * in * in / 1e9, 2.0 * out * in * in / 1e9 / to);
	double rq, rf;
	t = now();
	CHECK(cloq_solver_rel_error(g.H, W, Wq, NULL, NULL, 1.0, out, in, 0, &rq, &err));
	CHECK(cloq_solver_rel_error(g.H, W, Wq, A, B, 1.0, out, in, rank, &rf, &err));
	tr = now() - t;
	printf("| rel_error x2 (rel_quant, rel_final; 4 float64 E H products) | %.2f | %.1f | %.1f |\n", tr,
	       8.0 * out * in * in / 1e9, 8.0 * out * in * in / 1e9 / tr);
	double today = tq + tc + to + tr;
	printf("\nper linear today (gptq + cloq + objective + rel_error x2): %.1fs; errors %.4f -> %.4f (objective %.3g)\n",
	       today, rq, rf, obj);
	printf("GPTQ on a shared factor gives %s codes; for a group of k linears the factor is paid once instead "
	       "of k times (saves (k-1) x %.1fs)\n", same ? "identical" : "DIFFERENT", qi.t_factor_s);
	printf("errors from quantities the solver already has (||R dW^T||^2 for rel_quant, the SVD tail for rel_final)"
	       " plus one tr(W H W^T) would save ~%.1fs of %.1fs per linear (%.0f%%); load 1m %.2f at end\n",
	       to + tr * 3.0 / 4.0, today, 100.0 * (to + tr * 3.0 / 4.0) / today, load1());
	cloq_factor_free(f);
	cloq_gram_free(&g);
	free(X);
	free(W);
	free(Wq);
	free(dW);
	free(sc);
	free(A);
	free(B);
	free(E);
	return 0;
}
