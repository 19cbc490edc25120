/*
 * bench_solver.c - CLoQ solve at rank 64: the fast path (Cholesky + randomized SVD) against the
 * baseline (eigendecomposition root + full SVD), same inputs, same run.
 *
 *   build/bench/bench_solver            7B down_proj shape at 1/4 and 1/3 scale (~1-2 min here)
 *   build/bench/bench_solver --full     + 1/2 scale and the Llama-2-7B down_proj shape, out 4096 x
 *                                        in 11008 (~15 min on 2 shared cores)
 *   build/bench/bench_solver --big      + Llama-3-70B down_proj, 8192 x 28672 (fast path only;
 *                                        add --baseline for the eig + full SVD too: hours, ~30 GB)
 *   build/bench/bench_solver --shape 4096x11008 [--rank R] [--oversample P] [--power Q]
 *   build/bench/bench_solver --shape 1024x2752 --sweep   excess over (oversample, power_iters)
 *   --fast-only skips the baseline (and the excess) on every row
 *   --no-gptq skips the last column: GPTQ INT4 g128 of a Gaussian W of the row's shape against
 *   the same H (cloq_quant_hinv_create + cloq_quant_gptq_hinv, seconds)
 *
 * H (in, in) = diag(d) + F F^T: channel energies d_j ~ (1 + j/8)^-1.5 (shuffled) plus 256 shared
 * directions of decaying strength, i.e. a full-rank H with the decaying spectrum and dominant
 * directions of real LLM activations, built in O(in^2 256) instead of a 262144-token Gram.
 * dW = W - RTN INT2 g64 (W) for a Gaussian W: the flat quantization-noise residual.
 * The relative objective excess is (obj_fast - obj_base) / obj_base of the damped objective
 * tr(E (H + lambda I) E^T) (same lambda in both), evaluated from the returned float32 A, B by
 * cloq_solver_objective (not taken from the solver's info; --sweep uses info). Also prints the
 * Gram throughput.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "cloq_error.h"
#include "cloq_quant.h"
#include "cloq_solver.h"
#include "cloq_sys.h"

static uint64_t st = 88172645463325252ull;

static double urand(void)
{
	st ^= st << 13;
	st ^= st >> 7;
	st ^= st << 17;
	return ((double)(st >> 11) + 0.5) / 9007199254740992.0;
}

static double grand(void)
{
	return sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand());
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double *make_H(int n)
{
	const int k = 256;
	double *H = calloc((size_t)n * n, sizeof(double)), *F = malloc((size_t)n * k * 8);
	int *perm = malloc((size_t)n * sizeof(int));
	if (!H || !F || !perm) {
		free(H);
		free(F);
		free(perm);
		return NULL;
	}
	for (int i = 0; i < n; i++)
		perm[i] = i;
	for (int i = n - 1; i > 0; i--) {
		int j = (int)(urand() * (i + 1)), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	for (int i = 0; i < n; i++)
		for (int c = 0; c < k; c++)
			F[(size_t)i * k + c] = grand() * 0.5 / (1.0 + c) / sqrt((double)n) * 8.0;
	cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, k, 1.0, F, k, 0.0, H, n);
	for (int i = 0; i < n; i++) {
		H[(size_t)i * n + i] += pow(1.0 + perm[i] / 8.0, -1.5);
		for (int j = 0; j < i; j++)
			H[(size_t)i * n + j] = H[(size_t)j * n + i];
	}
	free(perm);
	free(F);
	return H;
}

static float *make_dW(int out, int in)
{
	float *d = malloc((size_t)out * in * sizeof(float));
	if (!d)
		return NULL;
	for (int o = 0; o < out; o++)
		for (int g = 0; g < in; g += 64) {
			int ge = g + 64 < in ? g + 64 : in;
			float w[64], mn = 0.0f, mx = 0.0f;
			for (int j = g; j < ge; j++) {
				w[j - g] = (float)(0.02 * grand());
				mn = w[j - g] < mn ? w[j - g] : mn;
				mx = w[j - g] > mx ? w[j - g] : mx;
			}
			float sc = (mx - mn) / 3.0f, z = nearbyintf(-mn / sc);
			for (int j = g; j < ge; j++) {
				float q = nearbyintf(w[j - g] / sc) + z;
				q = q < 0.0f ? 0.0f : q > 3.0f ? 3.0f : q;
				d[(size_t)o * in + j] = w[j - g] - sc * (q - z);
			}
		}
	return d;
}

static double gram_rate(int n)
{
	const int t = 2048;
	float *X = malloc((size_t)t * n * sizeof(float));
	cloq_gram g;
	double r = 0.0;
	if (!X)
		return 0.0;
	for (size_t i = 0; i < (size_t)t * n; i++)
		X[i] = (float)grand();
	if (cloq_gram_init(&g, n, NULL) == CLOQ_OK) {
		double t0 = now();
		if (cloq_gram_add(&g, X, t, NULL) == CLOQ_OK)
			r = t / (now() - t0);
		cloq_gram_free(&g);
	}
	free(X);
	return r;
}

struct row {
	const char *name;
	int out, in;
};

/* tr(E (H + lambda I) E^T), E = dW - B A, evaluated independently of the solver's info */
static double eval_obj(const double *H, double lam, const float *dW, const float *A,
		       const float *B, int out, int in, int r)
{
	float *E = malloc((size_t)out * in * sizeof(float));
	double *Hl = malloc((size_t)in * in * sizeof(double)), o = NAN;
	if (E && Hl) {
		memcpy(Hl, H, (size_t)in * in * sizeof(double));
		for (int i = 0; i < in; i++)
			Hl[(size_t)i * in + i] += lam;
		memcpy(E, dW, (size_t)out * in * sizeof(float));
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, in, r, -1.0f, B, r, A,
			    in, 1.0f, E, in);
		o = cloq_solver_objective(Hl, E, out, in);
	}
	free(Hl);
	free(E);
	return o;
}

static int g_over = -1, g_power = -1, g_sweep = 0, g_gptq = 1; /* -1: the library's defaults */

/* fast path at several (oversample, power_iters) against one baseline objective */
static void sweep(const cloq_factor *fc, const float *dW, int out, int in, int rank, double base,
		  float *A, float *B)
{
	static const int ps[] = { 8, 16, 32, 64 }, qs[] = { 2, 4, 6, 8 };
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 4; j++) {
			cloq_lora_params p = cloq_lora_default_params();
			cloq_solve_info in_ = { 0 };
			p.rank = rank;
			p.svd = CLOQ_SVD_RANDOMIZED;
			p.oversample = ps[i];
			p.power_iters = qs[j];
			if (cloq_solver_cloq(fc, dW, out, in, &p, A, B, &in_, NULL) == CLOQ_OK)
				printf("  sweep oversample %2d power %d: solve %6.2f s excess %.2e\n",
				       ps[i], qs[j], in_.seconds, (in_.objective - base) / base);
		}
}

/* GPTQ INT4 group 128 of a Gaussian W (out, in) against H: its H^-1 factor + the column loop. */
static double gptq_seconds(const double *H, int out, int in)
{
	cloq_err err = { 0 };
	cloq_quant_params qp = cloq_quant_default_params();
	cloq_quant_hinv *h = NULL;
	cloq_qtensor q;
	float *W = malloc((size_t)out * in * sizeof(float));
	double t0 = now(), t = NAN;
	memset(&q, 0, sizeof q);
	qp.bits = 4;
	qp.group_size = 128;
	if (!W)
		return NAN;
	for (size_t i = 0; i < (size_t)out * in; i++)
		W[i] = (float)(0.02 * grand());
	t0 = now();
	if (cloq_quant_hinv_create(H, in, &qp, &h, &err) == CLOQ_OK &&
	    cloq_quant_gptq_hinv(W, out, h, &qp, &q, NULL, &err) == CLOQ_OK)
		t = now() - t0;
	else
		fprintf(stderr, "bench: gptq: %s\n", err.msg);
	cloq_qtensor_free(&q);
	cloq_quant_hinv_free(h);
	free(W);
	return t;
}

static int run(const struct row *rw, int rank, int baseline)
{
	int out = rw->out, in = rw->in, rc = 1;
	cloq_err err = { 0 };
	cloq_factor *fc = NULL, *fe = NULL;
	cloq_lora_params p = cloq_lora_default_params();
	cloq_solve_info ifast = { 0 }, ibase = { 0 };
	float *A = malloc((size_t)rank * in * 4), *B = malloc((size_t)out * rank * 4);
	double t0, tg = NAN, tf_fac = 0, tf_svd = 0, tb_fac = 0, tb_svd = 0, of = NAN, ob = NAN, lam = 0;
	double *H = make_H(in);
	float *dW = make_dW(out, in);

	p.rank = rank;
	if (g_over >= 0)
		p.oversample = g_over;
	if (g_power >= 0)
		p.power_iters = g_power;
	if (!A || !B || !H || !dW) {
		fprintf(stderr, "bench: out of memory for %s\n", rw->name);
		goto done;
	}
	t0 = now();
	if (cloq_solver_factor(H, in, CLOQ_LAMBDA_REL_DEFAULT, &fc, &err) != CLOQ_OK)
		goto fail;
	tf_fac = now() - t0;
	p.svd = CLOQ_SVD_RANDOMIZED;
	if (cloq_solver_cloq(fc, dW, out, in, &p, A, B, &ifast, &err) != CLOQ_OK)
		goto fail;
	tf_svd = ifast.seconds;
	lam = cloq_factor_lambda(fc);
	if (baseline)
		of = eval_obj(H, lam, dW, A, B, out, in, rank);
	if (!g_sweep) {
		cloq_factor_free(fc);
		fc = NULL;
	}
	tg = g_gptq ? gptq_seconds(H, out, in) : NAN;
	if (baseline) {
		t0 = now();
		if (cloq_solver_factor_eig(H, in, CLOQ_LAMBDA_REL_DEFAULT, &fe, &err) != CLOQ_OK)
			goto fail;
		tb_fac = now() - t0;
		p.svd = CLOQ_SVD_EXACT;
		if (cloq_solver_cloq(fe, dW, out, in, &p, A, B, &ibase, &err) != CLOQ_OK)
			goto fail;
		tb_svd = ibase.seconds;
		ob = eval_obj(H, lam, dW, A, B, out, in, rank);
		if (g_sweep)
			sweep(fc, dW, out, in, rank, ibase.objective, A, B);
		printf("%-16s %5d x %-6d %8.2f %8.2f %8.2f | %8.2f %8.2f %8.2f | %7.1fx %10.2e | %8.2f\n",
		       rw->name, out, in, tf_fac, tf_svd, tf_fac + tf_svd, tb_fac, tb_svd,
		       tb_fac + tb_svd, (tb_fac + tb_svd) / (tf_fac + tf_svd),
		       (of - ob) / ob, tg);
	} else {
		printf("%-16s %5d x %-6d %8.2f %8.2f %8.2f | %8s %8s %8s | %8s %10s | %8.2f\n", rw->name,
		       out, in, tf_fac, tf_svd, tf_fac + tf_svd, "-", "-", "-", "-", "-", tg);
	}
	fflush(stdout);
	rc = 0;
	goto done;
fail:
	fprintf(stderr, "bench %s: %s\n", rw->name, err.msg);
done:
	cloq_factor_free(fe);
	cloq_factor_free(fc);
	free(dW);
	free(H);
	free(B);
	free(A);
	return rc;
}

int main(int argc, char **argv)
{
	struct row rows[8];
	int nrows = 0, rank = 64, full = 0, big = 0, baseline_big = 0, custom = 0, rc = 0;
	int fast_only = 0;
	static char custom_name[64];

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--full"))
			full = 1;
		else if (!strcmp(argv[i], "--big"))
			big = 1;
		else if (!strcmp(argv[i], "--baseline"))
			baseline_big = 1;
		else if (!strcmp(argv[i], "--fast-only"))
			fast_only = 1;
		else if (!strcmp(argv[i], "--no-gptq"))
			g_gptq = 0;
		else if (!strcmp(argv[i], "--sweep"))
			g_sweep = 1;
		else if (!strcmp(argv[i], "--oversample") && i + 1 < argc)
			g_over = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--power") && i + 1 < argc)
			g_power = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--rank") && i + 1 < argc)
			rank = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--shape") && i + 1 < argc &&
			 sscanf(argv[++i], "%dx%d", &rows[0].out, &rows[0].in) == 2) {
			custom = 1;
		} else {
			fprintf(stderr, "usage: %s [--full] [--big [--baseline]] [--shape OUTxIN] "
				"[--rank R] [--oversample P] [--power Q] [--sweep] [--fast-only] [--no-gptq]\n", argv[0]);
			return 1;
		}
	}
	if (custom) {
		snprintf(custom_name, sizeof custom_name, "custom");
		rows[0].name = custom_name;
		nrows = 1;
	} else {
		rows[nrows++] = (struct row){ "7B down/4", 1024, 2752 };
		rows[nrows++] = (struct row){ "7B down/3", 1368, 3672 };
		if (full) {
			rows[nrows++] = (struct row){ "7B down/2", 2048, 5504 };
			rows[nrows++] = (struct row){ "7B down_proj", 4096, 11008 };
		}
	}
	if (g_over < 0)
		g_over = cloq_lora_default_params().oversample;
	if (g_power < 0)
		g_power = cloq_lora_default_params().power_iters;
	printf("CLoQ solve, rank %d, damped objective; fast = Cholesky + randomized SVD "
	       "(oversample %d, %d power iterations); base = eig root (dsyevd) + full SVD (dgesdd); "
	       "float64; seconds\n", rank, g_over, g_power);
	printf("%-16s %-14s %8s %8s %8s | %8s %8s %8s | %8s %10s | %8s\n", "layer", "out x in",
	       "f.factor", "f.solve", "f.total", "b.factor", "b.solve", "b.total", "speed-up",
	       "obj excess", "gptq");
	for (int i = 0; i < nrows; i++)
		rc |= run(&rows[i], rank, !fast_only);
	if (big) {
		struct row r70 = { "70B down_proj", 8192, 28672 };
		rc |= run(&r70, rank, baseline_big);
	}
	int gw[3] = { 4096, 11008, 28672 };
	for (int i = 0; i < (big ? 3 : 2); i++) {
		double r = gram_rate(gw[i]);
		printf("gram H += X^T X, width %5d: %9.0f tokens/s (262144 tokens: %.0f s)\n", gw[i],
		       r, r > 0 ? 262144.0 / r : 0.0);
	}
	return rc;
}
