/*
 * test_solver.c - the solver module: Gram accumulation, the CLoQ closed form and its optimality,
 * LoftQ, alternating CLoQ, randomized SVD, edge cases, on random matrices and on the real
 * stories260K weights and Gram matrices of fixtures/solver/ (path overridable with
 * CLOQ_SOLVER_FIXTURES).
 *
 * Expectations are computed independently of the library: a hand-written Cholesky, M = R dW^T
 * by plain loops, singular values by LAPACK's dgesvd (the library uses dgesdd), objectives
 * tr(E H E^T) by plain loops in float64.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_chol.h"
#include "cloq_dtype.h"
#include "cloq_error.h"
#include "cloq_quant.h"
#include "cloq_solver.h"
#include "cloq_sys.h"

/* ================================================================================================
 * Helpers: a test-local generator (not the library's), references, RTN fake-quant
 * ============================================================================================= */
static uint64_t trng_state;

static void trng_seed(uint64_t s)
{
	trng_state = s * 2654435761u + 1;
}

static double trng_u(void) /* (0, 1) */
{
	trng_state ^= trng_state << 13;
	trng_state ^= trng_state >> 7;
	trng_state ^= trng_state << 17;
	return ((double)(trng_state >> 11) + 0.5) / 9007199254740992.0;
}

static double trng_g(void)
{
	return sqrt(-2.0 * log(trng_u())) * cos(6.283185307179586 * trng_u());
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	assert_non_null(p);
	return p;
}

/* LLM-like activations X (t, n): decaying channel scales, a few outlier channels, a shared
 * low-dimensional component so that H is far from diagonal. */
static float *make_X(int t, int n, uint64_t seed)
{
	float *X = xmalloc((size_t)t * n * sizeof(float));
	double *mix = xmalloc((size_t)4 * n * sizeof(double));
	trng_seed(seed);
	for (int i = 0; i < 4 * n; i++)
		mix[i] = trng_g();
	for (int r = 0; r < t; r++) {
		double z[4];
		for (int c = 0; c < 4; c++)
			z[c] = trng_g();
		for (int j = 0; j < n; j++) {
			double sc = 1.0 / pow(1.0 + j, 0.6) * (j % 37 == 5 ? 20.0 : 1.0);
			double v = sc * trng_g();
			for (int c = 0; c < 4; c++)
				v += 0.5 * z[c] * mix[c * n + j];
			X[(size_t)r * n + j] = (float)v;
		}
	}
	free(mix);
	return X;
}

/* H = X^T X in float64 by dsyrk on a float64 copy (the reference), full symmetric. */
static double *gram_ref(const float *X, int t, int n)
{
	double *Xd = xmalloc((size_t)t * n * sizeof(double));
	double *H = calloc((size_t)n * n, sizeof(double));
	assert_non_null(H);
	for (size_t i = 0; i < (size_t)t * n; i++)
		Xd[i] = X[i];
	cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, n, t, 1.0, Xd, n, 0.0, H, n);
	for (int i = 0; i < n; i++)
		for (int j = 0; j < i; j++)
			H[(size_t)i * n + j] = H[(size_t)j * n + i];
	free(Xd);
	return H;
}

static float *make_W(int out, int in, uint64_t seed)
{
	float *W = xmalloc((size_t)out * in * sizeof(float));
	trng_seed(seed);
	for (size_t i = 0; i < (size_t)out * in; i++)
		W[i] = (float)(0.05 * trng_g());
	return W;
}

/* RTN fake-quant, AutoGPTQ Quantizer semantics per row and group of `group` columns:
 * asymmetric min/max including 0, all-zero group -> [-1, 1], round half to even. */
typedef struct rtn_ctx {
	int out, in, bits, group;
	int calls, kept_call, keeps;
} rtn_ctx;

static void rtn_ref(const float *W, float *Wq, int out, int in, int bits, int group)
{
	float maxq = (float)((1 << bits) - 1);
	for (int o = 0; o < out; o++)
		for (int g = 0; g < in; g += group) {
			int ge = g + group < in ? g + group : in;
			const float *w = W + (size_t)o * in;
			float xmin = 0.0f, xmax = 0.0f;
			for (int j = g; j < ge; j++) {
				xmin = w[j] < xmin ? w[j] : xmin;
				xmax = w[j] > xmax ? w[j] : xmax;
			}
			if (xmin == 0.0f && xmax == 0.0f) {
				xmin = -1.0f;
				xmax = 1.0f;
			}
			float scale = (xmax - xmin) / maxq;
			float zero = nearbyintf(-xmin / scale);
			for (int j = g; j < ge; j++) {
				float q = nearbyintf(w[j] / scale) + zero;
				q = q < 0.0f ? 0.0f : q > maxq ? maxq : q;
				Wq[(size_t)o * in + j] = scale * (q - zero);
			}
		}
}

static int rtn_quantize(void *ctx, const float *W, float *Wq, cloq_err *err)
{
	rtn_ctx *c = ctx;
	c->calls++;
	rtn_ref(W, Wq, c->out, c->in, c->bits, c->group);
	return CLOQ_OK;
}

static void rtn_keep(void *ctx)
{
	rtn_ctx *c = ctx;
	c->kept_call = c->calls;
	c->keeps++;
}

static cloq_quantizer_cb rtn_cb(rtn_ctx *c, int out, int in, int bits)
{
	memset(c, 0, sizeof *c);
	c->out = out;
	c->in = in;
	c->bits = bits;
	c->group = 32;
	cloq_quantizer_cb cb = { c, rtn_quantize, rtn_keep };
	return cb;
}

/* tr(E H E^T) by plain loops in float64; E (out, in) float64. */
static double obj_ref(const double *H, const double *E, int out, int in)
{
	double acc = 0.0;
	for (int o = 0; o < out; o++) {
		const double *e = E + (size_t)o * in;
		for (int i = 0; i < in; i++) {
			double hi = 0.0;
			const double *h = H + (size_t)i * in;
			for (int j = 0; j < in; j++)
				hi += h[j] * e[j];
			acc += e[i] * hi;
		}
	}
	return acc;
}

/* E = dW - s B A (float64 from float32 factors) */
static double *resid(const float *dW, const float *A, const float *B, double s, int out, int in,
		     int r)
{
	double *E = xmalloc((size_t)out * in * sizeof(double));
	for (int o = 0; o < out; o++)
		for (int i = 0; i < in; i++) {
			double l = 0.0;
			for (int j = 0; j < r; j++)
				l += (double)B[(size_t)o * r + j] * A[(size_t)j * in + i];
			E[(size_t)o * in + i] = dW[(size_t)o * in + i] - s * l;
		}
	return E;
}

static double *damped(const double *H, int n, double lambda)
{
	double *Hl = xmalloc((size_t)n * n * sizeof(double));
	memcpy(Hl, H, (size_t)n * n * sizeof(double));
	for (int i = 0; i < n; i++)
		Hl[(size_t)i * n + i] += lambda;
	return Hl;
}

/* Reference: singular values of R dW^T, R from a hand-written Cholesky of Hl. Returns all
 * min(in, out) values (descending) in a new array. */
static double *ref_sigma(const double *Hl, const float *dW, int out, int in)
{
	double *R = calloc((size_t)in * in, sizeof(double)); /* row-major upper: R[i][j], j>=i */
	double *M = xmalloc((size_t)in * out * sizeof(double));
	int mn = in < out ? in : out;
	double *s = xmalloc((size_t)mn * sizeof(double)), *sup = xmalloc((size_t)mn * sizeof(double));
	assert_non_null(R);
	for (int j = 0; j < in; j++) {
		double d = Hl[(size_t)j * in + j];
		for (int k = 0; k < j; k++)
			d -= R[(size_t)k * in + j] * R[(size_t)k * in + j];
		assert_true(d > 0.0);
		R[(size_t)j * in + j] = sqrt(d);
		for (int i = j + 1; i < in; i++) {
			double v = Hl[(size_t)j * in + i];
			for (int k = 0; k < j; k++)
				v -= R[(size_t)k * in + j] * R[(size_t)k * in + i];
			R[(size_t)j * in + i] = v / R[(size_t)j * in + j];
		}
	}
	/* M (in, out) row-major: M[i][o] = sum_j R[i][j] dW[o][j] */
	for (int i = 0; i < in; i++)
		for (int o = 0; o < out; o++) {
			double v = 0.0;
			for (int j = i; j < in; j++)
				v += R[(size_t)i * in + j] * dW[(size_t)o * in + j];
			M[(size_t)i * out + o] = v;
		}
	assert_int_equal(LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'N', in, out, M, out, s, NULL, 1,
					NULL, 1, sup), 0);
	free(sup);
	free(M);
	free(R);
	return s;
}

static double tail_of(const double *s, int mn, int r)
{
	double t = 0.0;
	for (int j = mn - 1; j >= r; j--)
		t += s[j] * s[j];
	return t;
}

static double rel_diff(double a, double b)
{
	double d = fabs(a - b), m = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
	return m > 0.0 ? d / m : 0.0;
}

/* ||s1 B1 A1 - s2 B2 A2||_F / ||s2 B2 A2||_F */
static double lora_rel_diff(const float *A1, const float *B1, double s1, const float *A2,
			    const float *B2, double s2, int out, int in, int r)
{
	double num = 0.0, den = 0.0;
	for (int o = 0; o < out; o++)
		for (int i = 0; i < in; i++) {
			double l1 = 0.0, l2 = 0.0;
			for (int j = 0; j < r; j++) {
				l1 += (double)B1[(size_t)o * r + j] * A1[(size_t)j * in + i];
				l2 += (double)B2[(size_t)o * r + j] * A2[(size_t)j * in + i];
			}
			num += (s1 * l1 - s2 * l2) * (s1 * l1 - s2 * l2);
			den += s2 * l2 * s2 * l2;
		}
	return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

static float *sub(const float *a, const float *b, size_t n)
{
	float *d = xmalloc(n * sizeof(float));
	for (size_t i = 0; i < n; i++)
		d[i] = a[i] - b[i];
	return d;
}

static int all_finite(const float *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isfinite(x[i]))
			return 0;
	return 1;
}

/* ================================================================================================
 * (7) Gram accumulation
 * ============================================================================================= */
static void test_gram_accuracy(void **state)
{
	const int n = 384, t = 12288;
	float *X = make_X(t, n, 11);
	double *Href = gram_ref(X, t, n);
	cloq_gram g1, g2;
	cloq_err err;
	double num = 0.0, den = 0.0, maxe = 0.0, num12 = 0.0;

	assert_int_equal(cloq_gram_init(&g1, n, &err), CLOQ_OK);
	assert_int_equal(cloq_gram_init(&g2, n, &err), CLOQ_OK);
	assert_int_equal(cloq_gram_add(&g1, X, t, &err), CLOQ_OK); /* one shot */
	/* chunked, uneven sizes, including an empty chunk */
	int cuts[] = { 0, 1, 1, 1000, 1003, 5000, 9999, t };
	for (size_t c = 0; c + 1 < sizeof cuts / sizeof cuts[0]; c++)
		assert_int_equal(cloq_gram_add(&g2, X + (size_t)cuts[c] * n, cuts[c + 1] - cuts[c],
					       &err), CLOQ_OK);
	cloq_gram_finish(&g1);
	cloq_gram_finish(&g2);
	assert_int_equal(g1.ntokens, t);
	assert_int_equal(g2.ntokens, t);
	for (int i = 0; i < n; i++)
		for (int j = 0; j < n; j++) {
			double h = Href[(size_t)i * n + j], a = g1.H[(size_t)i * n + j];
			double b = g2.H[(size_t)i * n + j];
			double sc = sqrt(Href[(size_t)i * n + i] * Href[(size_t)j * n + j]);
			num += (a - h) * (a - h);
			num12 += (b - h) * (b - h);
			den += h * h;
			if (fabs(a - h) / sc > maxe)
				maxe = fabs(a - h) / sc;
			if (fabs(b - h) / sc > maxe)
				maxe = fabs(b - h) / sc;
			assert_true(a == g1.H[(size_t)j * n + i]); /* symmetric */
		}
	printf("gram: one-shot rel Frobenius err %.2e, chunked %.2e, max |dH_ij|/sqrt(H_ii H_jj) "
	       "%.2e\n", sqrt(num / den), sqrt(num12 / den), maxe);
	/* H is a function of the row stream: the chunked calls give the one-shot bytes */
	assert_memory_equal(g1.H, g2.H, (size_t)n * n * sizeof(double));
	assert_true(sqrt(num / den) < 1e-6);
	assert_true(sqrt(num12 / den) < 1e-6);
	assert_true(maxe < 1e-5);

	/* a non-finite activation is rejected, naming its place, and leaves H unchanged */
	double h00 = g1.H[0];
	X[(size_t)7 * n + 5] = NAN;
	assert_int_equal(cloq_gram_add(&g1, X, 10, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "row 7, column 5"));
	assert_true(g1.H[0] == h00);
	assert_int_equal(g1.ntokens, t);
	cloq_gram_free(&g1);
	cloq_gram_free(&g2);
	assert_int_equal(cloq_gram_init(&g2, 0, &err), CLOQ_EINPUT);
	cloq_gram_free(&g2); /* twice is fine */
	free(Href);
	free(X);
}

/* The blocks of CLOQ_GRAM_CHUNK rows are the stream's, not the calls': windows of 256 rows, one
 * call, uneven calls ending in cloq_gram_add_last, and adds after a finish (a new stream's blocks
 * start there) give the bytes of blocks formed by hand, and differ from one block a window. */
static void test_gram_stream_blocks(void **state)
{
	const int n = 96, t = 2 * CLOQ_GRAM_CHUNK + 700; /* two whole blocks and a partial one */
	float *X = make_X(t, n, 5);
	cloq_gram ref, a, b, c, w;
	cloq_err err;
	(void)state;
	/* by hand: each block a call of its own, its rows in a fresh accumulator's only call */
	assert_int_equal(cloq_gram_init(&ref, n, &err), CLOQ_OK);
	for (int r0 = 0; r0 < t; r0 += CLOQ_GRAM_CHUNK)
		assert_int_equal(cloq_gram_add(&ref, X + (size_t)r0 * n, t - r0 < CLOQ_GRAM_CHUNK ? t - r0 : CLOQ_GRAM_CHUNK,
					       &err), CLOQ_OK);
	cloq_gram_finish(&ref);
	assert_int_equal(cloq_gram_init(&a, n, &err), CLOQ_OK);
	assert_int_equal(cloq_gram_init(&b, n, &err), CLOQ_OK);
	assert_int_equal(cloq_gram_init(&c, n, &err), CLOQ_OK);
	for (int r0 = 0; r0 < t; r0 += 256) /* windows of 256 rows */
		assert_int_equal(cloq_gram_add(&a, X + (size_t)r0 * n, t - r0 < 256 ? t - r0 : 256, &err), CLOQ_OK);
	assert_non_null(a.rows); /* the partial block waits */
	assert_int_equal(a.nrows, t % CLOQ_GRAM_CHUNK);
	cloq_gram_finish(&a);
	assert_null(a.rows); /* freed by finish */
	assert_int_equal(cloq_gram_add(&b, X, 1, &err), CLOQ_OK); /* uneven calls, then add_last */
	assert_int_equal(cloq_gram_add(&b, X + n, 3000, &err), CLOQ_OK);
	assert_int_equal(cloq_gram_add_last(&b, X + (size_t)3001 * n, t - 3001, &err), CLOQ_OK);
	assert_int_equal(cloq_gram_add(&c, X, 2 * CLOQ_GRAM_CHUNK, &err), CLOQ_OK); /* whole blocks, no buffer */
	assert_null(c.rows);
	assert_int_equal(cloq_gram_add_last(&c, X + (size_t)2 * CLOQ_GRAM_CHUNK * n, 700, &err), CLOQ_OK);
	assert_null(c.rows); /* the last partial block straight from X */
	assert_int_equal(a.ntokens, t);
	assert_int_equal(b.ntokens, t);
	assert_int_equal(c.ntokens, t);
	assert_memory_equal(a.H, ref.H, (size_t)n * n * sizeof(double));
	assert_memory_equal(b.H, ref.H, (size_t)n * n * sizeof(double));
	assert_memory_equal(c.H, ref.H, (size_t)n * n * sizeof(double));
	/* a NaN in a call leaves the waiting rows as they were */
	assert_int_equal(cloq_gram_init(&w, n, &err), CLOQ_OK);
	assert_int_equal(cloq_gram_add(&w, X, 100, &err), CLOQ_OK);
	float keep = X[(size_t)150 * n + 3];
	X[(size_t)150 * n + 3] = INFINITY;
	assert_int_equal(cloq_gram_add(&w, X + (size_t)100 * n, 100, &err), CLOQ_EINPUT);
	assert_int_equal(cloq_gram_add_last(&w, X + (size_t)100 * n, 100, &err), CLOQ_EINPUT);
	assert_int_equal(w.nrows, 100);
	X[(size_t)150 * n + 3] = keep;
	assert_int_equal(cloq_gram_add_last(&w, X + (size_t)100 * n, t - 100, &err), CLOQ_OK);
	assert_memory_equal(w.H, ref.H, (size_t)n * n * sizeof(double));
	/* adds after a finish: a new block starts with them (against the by-hand blocks of the
	 * stream twice) */
	for (int r0 = 0; r0 < t; r0 += CLOQ_GRAM_CHUNK)
		assert_int_equal(cloq_gram_add(&ref, X + (size_t)r0 * n, t - r0 < CLOQ_GRAM_CHUNK ? t - r0 : CLOQ_GRAM_CHUNK,
					       &err), CLOQ_OK);
	cloq_gram_finish(&ref);
	for (int r0 = 0; r0 < t; r0 += 1000)
		assert_int_equal(cloq_gram_add(&w, X + (size_t)r0 * n, t - r0 < 1000 ? t - r0 : 1000, &err), CLOQ_OK);
	cloq_gram_finish(&w);
	assert_memory_equal(w.H, ref.H, (size_t)n * n * sizeof(double));
	/* one block a window (the old scheme) is not these bytes: the blocks are real */
	double diff = 0.0;
	cloq_gram one;
	assert_int_equal(cloq_gram_init(&one, n, &err), CLOQ_OK);
	for (int r0 = 0; r0 < t; r0 += 256) {
		assert_int_equal(cloq_gram_add_last(&one, X + (size_t)r0 * n, t - r0 < 256 ? t - r0 : 256, &err), CLOQ_OK);
	}
	for (size_t i = 0; i < (size_t)n * n; i++)
		diff += fabs(one.H[i] - ref.H[i]);
	assert_true(diff > 0.0);
	cloq_gram_free(&one);
	cloq_gram_free(&ref);
	cloq_gram_free(&a);
	cloq_gram_free(&b);
	cloq_gram_free(&c);
	cloq_gram_free(&w);
	free(X);
}

extern void openblas_set_num_threads(int);
extern int openblas_get_num_threads(void);

/* The panels are a cut of one product: H of one block equals, bit for bit, the float32 X^T X of a
 * single single-threaded sgemm widened to float64 (at n = 600, panels of 128; n = 2500, 256;
 * n = 4200, 512): the panel width, chosen by n, never changes H's bytes. */
static void test_gram_panels_one_product(void **state)
{
	const int ns[] = {600, 2500, 4200}, t = 1500;
	(void)state;
	for (size_t c = 0; c < sizeof ns / sizeof ns[0]; c++) {
		int n = ns[c];
		float *X = make_X(t, n, 17 + c), *C = malloc((size_t)n * n * sizeof(float));
		cloq_gram g;
		cloq_err err;
		assert_non_null(C);
		assert_int_equal(cloq_gram_panel(n), n < 2048 ? 128 : n < 4096 ? 256 : 512);
		assert_int_equal(cloq_gram_init(&g, n, &err), CLOQ_OK);
		assert_int_equal(cloq_gram_add(&g, X, t, &err), CLOQ_OK);
		cloq_gram_finish(&g);
		int nth = openblas_get_num_threads(); /* one thread: the kernel's own sums, uncut */
		openblas_set_num_threads(1);
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, n, t, 1.0f, X, n, X, n, 0.0f, C, n);
		openblas_set_num_threads(nth);
		size_t bad = 0;
		for (int i = 0; i < n; i++)
			for (int j = i; j < n; j++)
				bad += g.H[(size_t)i * n + j] != (double)C[(size_t)i * n + j] ||
				       g.H[(size_t)j * n + i] != (double)C[(size_t)i * n + j];
		assert_int_equal(bad, 0);
		cloq_gram_free(&g);
		free(C);
		free(X);
	}
}

/* ================================================================================================
 * (1) objective == tail energy; splits; undamped objective; cloq_solver_objective
 * ============================================================================================= */
static void check_identity(const double *H, const float *dW, int out, int in,
			   const cloq_lora_params *p, int eig)
{
	cloq_factor *f = NULL;
	cloq_err err;
	int r = p->rank, mn = in < out ? in : out;
	float *A = xmalloc((size_t)r * in * sizeof(float)), *B = xmalloc((size_t)out * r * 4);
	double *sig = xmalloc((size_t)r * sizeof(double));
	cloq_solve_info info = { .sigma = sig };

	if (eig)
		assert_int_equal(cloq_solver_factor_eig(H, in, 1e-4, &f, &err), CLOQ_OK);
	else
		assert_int_equal(cloq_solver_factor(H, in, 1e-4, &f, &err), CLOQ_OK);
	assert_int_equal(cloq_solver_cloq(f, dW, out, in, p, A, B, &info, &err), CLOQ_OK);
	double lam = cloq_factor_lambda(f);
	double md = 0.0;
	for (int i = 0; i < in; i++)
		md += H[(size_t)i * in + i] / in;
	assert_true(rel_diff(lam, 1e-4 * md) < 1e-12);
	double *Hl = damped(H, in, lam);
	double *s = ref_sigma(Hl, dW, out, in);
	int k = r < mn ? r : mn;
	double tail = tail_of(s, mn, k);
	double *E = resid(dW, A, B, p->scaling, out, in, r);
	double obj = obj_ref(Hl, E, out, in), objH = obj_ref(H, E, out, in);
	/* relative 1e-6, with a floor for a zero tail (rank >= min(out, in)): rounding A, B to
	 * float32 leaves ~1e-14 of the total energy */
	double floor_ = 1e-10 * info.total_energy;
	assert_true(fabs(obj - tail) <= 1e-6 * tail + floor_);
	assert_true(fabs(info.objective - tail) <= 1e-6 * tail + floor_);
	assert_true(fabs(info.tail_energy - tail) <= 1e-6 * tail + floor_);
	assert_true(fabs(info.objective_undamped - objH) <= 1e-6 * objH + floor_);
	assert_true(rel_diff(info.total_energy, tail_of(s, mn, 0)) < 1e-9);
	for (int j = 0; j < k; j++)
		assert_true(rel_diff(sig[j], s[j]) < 1e-8);
	/* split known answers: column j of B has squared norm sigma_j / s (balanced) or norm
	 * sigma_j / s (all in B) */
	for (int j = 0; j < k; j++) {
		double nb = 0.0;
		for (int o = 0; o < out; o++)
			nb += (double)B[(size_t)o * r + j] * B[(size_t)o * r + j];
		if (p->split == CLOQ_SPLIT_BALANCED)
			assert_true(rel_diff(nb, s[j] / p->scaling) < 1e-5);
		else
			assert_true(rel_diff(sqrt(nb), s[j] / p->scaling) < 1e-5);
	}
	/* the library's GEMM objective on a float32 E equals the loop reference on that E */
	float *Ef = xmalloc((size_t)out * in * sizeof(float));
	double *Efd = xmalloc((size_t)out * in * sizeof(double));
	for (size_t i = 0; i < (size_t)out * in; i++)
		Efd[i] = Ef[i] = (float)E[i];
	assert_true(rel_diff(cloq_solver_objective(Hl, Ef, out, in), obj_ref(Hl, Efd, out, in)) <
		    1e-10);
	free(Efd);
	free(Ef);
	free(E);
	free(s);
	free(Hl);
	free(sig);
	free(B);
	free(A);
	cloq_factor_free(f);
}

static void test_objective_identity_random(void **state)
{
	struct { int out, in, t, r; double s; int split, eig; } cs[] = {
		{ 48, 64, 4096, 8, 1.0, CLOQ_SPLIT_BALANCED, 0 },
		{ 96, 80, 4096, 6, 2.0, CLOQ_SPLIT_B, 0 },
		{ 40, 120, 4096, 16, 0.5, CLOQ_SPLIT_BALANCED, 1 },
		{ 7, 33, 2048, 12, 1.0, CLOQ_SPLIT_BALANCED, 0 }, /* rank > out: padded */
	};
	for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
		float *X = make_X(cs[c].t, cs[c].in, 100 + c);
		double *H = gram_ref(X, cs[c].t, cs[c].in);
		float *W = make_W(cs[c].out, cs[c].in, 200 + c);
		float *Wq = xmalloc((size_t)cs[c].out * cs[c].in * sizeof(float));
		rtn_ref(W, Wq, cs[c].out, cs[c].in, 2, 32);
		float *dW = sub(W, Wq, (size_t)cs[c].out * cs[c].in);
		cloq_lora_params p = cloq_lora_default_params();
		p.rank = cs[c].r;
		p.scaling = cs[c].s;
		p.split = cs[c].split;
		p.svd = CLOQ_SVD_EXACT;
		check_identity(H, dW, cs[c].out, cs[c].in, &p, cs[c].eig);
		free(dW);
		free(Wq);
		free(W);
		free(H);
		free(X);
	}
}

/* ================================================================================================
 * (2) CLoQ beats LoftQ and zero init for the same Q; perturbations never do better
 * ============================================================================================= */
static void test_optimality_and_perturbations(void **state)
{
	const int out = 40, in = 56, r = 6, t = 3000;
	float *X = make_X(t, in, 7);
	double *H = gram_ref(X, t, in);
	float *W = make_W(out, in, 8);
	float *Wq = xmalloc((size_t)out * in * 4), *Wq2 = xmalloc((size_t)out * in * 4);
	float *A = xmalloc((size_t)r * in * 4), *B = xmalloc((size_t)out * r * 4);
	float *A2 = xmalloc((size_t)r * in * 4), *B2 = xmalloc((size_t)out * r * 4);
	cloq_factor *f;
	cloq_err err;
	rtn_ctx rc;
	cloq_quantizer_cb cb = rtn_cb(&rc, out, in, 2);
	cloq_lora_params p = cloq_lora_default_params();
	p.rank = r;
	p.scaling = 2.0;

	rtn_ref(W, Wq, out, in, 2, 32);
	float *dW = sub(W, Wq, (size_t)out * in);
	assert_int_equal(cloq_solver_factor(H, in, 1e-4, &f, &err), CLOQ_OK);
	double *Hl = damped(H, in, cloq_factor_lambda(f));
	assert_int_equal(cloq_solver_cloq(f, dW, out, in, &p, A, B, NULL, &err), CLOQ_OK);
	double *E = resid(dW, A, B, p.scaling, out, in, r);
	double best = obj_ref(Hl, E, out, in), bestH = obj_ref(H, E, out, in);
	free(E);

	/* LoftQ with one iteration quantizes W itself: the same Q */
	assert_int_equal(cloq_solver_loftq(W, out, in, &cb, &p, 1, Wq2, A2, B2, &err), CLOQ_OK);
	assert_memory_equal(Wq, Wq2, (size_t)out * in * 4);
	assert_int_equal(rc.calls, 1);
	assert_int_equal(rc.keeps, 1);
	E = resid(dW, A2, B2, p.scaling, out, in, r);
	double loftq = obj_ref(Hl, E, out, in), loftqH = obj_ref(H, E, out, in);
	free(E);
	/* LoftQ's product is the plain rank-r SVD of dW: check it against dgesvd's tail */
	{
		double *Ed = resid(dW, A2, B2, p.scaling, out, in, r), fro = 0.0, tl = 0.0;
		double *D = xmalloc((size_t)out * in * 8), *sv = xmalloc((size_t)in * 8);
		double *sup = xmalloc((size_t)in * 8);
		for (size_t i = 0; i < (size_t)out * in; i++) {
			fro += Ed[i] * Ed[i];
			D[i] = dW[i];
		}
		assert_int_equal(LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'N', out, in, D, in, sv,
						NULL, 1, NULL, 1, sup), 0);
		tl = tail_of(sv, out < in ? out : in, r);
		assert_true(rel_diff(fro, tl) < 1e-6);
		free(sup);
		free(sv);
		free(D);
		free(Ed);
	}
	/* zero init: B = 0, so E = dW */
	assert_int_equal(cloq_solver_zero_init(out, in, &p, A2, B2, &err), CLOQ_OK);
	E = resid(dW, A2, B2, p.scaling, out, in, r);
	double zero = obj_ref(Hl, E, out, in), zeroH = obj_ref(H, E, out, in);
	free(E);
	printf("same Q, damped objective: CLoQ %.6g  LoftQ %.6g  zero %.6g\n", best, loftq, zero);
	assert_true(best < loftq);
	assert_true(loftq < zero);
	assert_true(bestH < loftqH && bestH < zeroH);

	/* 1000 random perturbations of the factors, at scales from 1e-4 to 1 */
	double eps[] = { 1e-4, 1e-3, 1e-2, 1e-1, 1.0 };
	float *Ap = xmalloc((size_t)r * in * 4), *Bp = xmalloc((size_t)out * r * 4);
	double na = 0.0, nb = 0.0, minrise = INFINITY;
	for (size_t i = 0; i < (size_t)r * in; i++)
		na += (double)A[i] * A[i];
	for (size_t i = 0; i < (size_t)out * r; i++)
		nb += (double)B[i] * B[i];
	na = sqrt(na / (r * in));
	nb = sqrt(nb / (out * r));
	trng_seed(99);
	int worse = 0;
	for (int trial = 0; trial < 1000; trial++) {
		double e = eps[trial % 5];
		int mode = (trial / 5) % 3; /* A only, B only, both */
		for (size_t i = 0; i < (size_t)r * in; i++)
			Ap[i] = A[i] + (mode != 1 ? (float)(e * na * trng_g()) : 0.0f);
		for (size_t i = 0; i < (size_t)out * r; i++)
			Bp[i] = B[i] + (mode != 0 ? (float)(e * nb * trng_g()) : 0.0f);
		E = resid(dW, Ap, Bp, p.scaling, out, in, r);
		double o = obj_ref(Hl, E, out, in);
		free(E);
		if (o < best * (1.0 - 1e-12))
			worse++;
		if ((o - best) / best < minrise)
			minrise = (o - best) / best;
	}
	printf("1000 perturbations: smallest relative rise %.3e, better than the solution: %d\n",
	       minrise, worse);
	assert_int_equal(worse, 0);
	free(Bp);
	free(Ap);
	free(dW);
	free(Hl);
	cloq_factor_free(f);
	free(B2);
	free(A2);
	free(B);
	free(A);
	free(Wq2);
	free(Wq);
	free(W);
	free(H);
	free(X);
}

/* ================================================================================================
 * (3) Cholesky root and eigendecomposition root give the same s B A
 * ============================================================================================= */
static double chol_vs_eig(const double *H, const float *dW, int out, int in,
			  const cloq_lora_params *p)
{
	cloq_factor *fc, *fe;
	cloq_err err;
	int r = p->rank;
	float *A1 = xmalloc((size_t)r * in * 4), *B1 = xmalloc((size_t)out * r * 4);
	float *A2 = xmalloc((size_t)r * in * 4), *B2 = xmalloc((size_t)out * r * 4);
	assert_int_equal(cloq_solver_factor(H, in, 1e-4, &fc, &err), CLOQ_OK);
	assert_int_equal(cloq_solver_factor_eig(H, in, 1e-4, &fe, &err), CLOQ_OK);
	assert_int_equal(cloq_factor_kind(fc), CLOQ_FACTOR_CHOLESKY);
	assert_int_equal(cloq_factor_kind(fe), CLOQ_FACTOR_EIG);
	assert_true(rel_diff(cloq_factor_lambda(fc), cloq_factor_lambda(fe)) < 1e-14);
	assert_int_equal(cloq_solver_cloq(fc, dW, out, in, p, A1, B1, NULL, &err), CLOQ_OK);
	assert_int_equal(cloq_solver_cloq(fe, dW, out, in, p, A2, B2, NULL, &err), CLOQ_OK);
	double d = lora_rel_diff(A1, B1, p->scaling, A2, B2, p->scaling, out, in, r);
	free(B2);
	free(A2);
	free(B1);
	free(A1);
	cloq_factor_free(fe);
	cloq_factor_free(fc);
	return d;
}

static void test_chol_vs_eig_random(void **state)
{
	const int out = 64, in = 96, t = 4096;
	float *X = make_X(t, in, 31);
	double *H = gram_ref(X, t, in);
	float *W = make_W(out, in, 32), *Wq = xmalloc((size_t)out * in * 4);
	rtn_ref(W, Wq, out, in, 2, 32);
	float *dW = sub(W, Wq, (size_t)out * in);
	cloq_lora_params p = cloq_lora_default_params();
	p.rank = 10;
	p.svd = CLOQ_SVD_EXACT;
	double d = chol_vs_eig(H, dW, out, in, &p);
	printf("Cholesky vs eigen root: relative difference of s B A %.2e\n", d);
	assert_true(d < 1e-6);
	free(dW);
	free(Wq);
	free(W);
	free(H);
	free(X);
}

/* ================================================================================================
 * (4) randomized vs exact SVD
 * ============================================================================================= */
static void test_randomized_svd(void **state)
{
	const int out = 512, in = 768, t = 4096, r = 16;
	float *X = make_X(t, in, 41);
	double *H = gram_ref(X, t, in);
	float *W = make_W(out, in, 42), *Wq = xmalloc((size_t)out * in * 4);
	float *A1 = xmalloc((size_t)r * in * 4), *B1 = xmalloc((size_t)out * r * 4);
	float *A2 = xmalloc((size_t)r * in * 4), *B2 = xmalloc((size_t)out * r * 4);
	float *A3 = xmalloc((size_t)r * in * 4), *B3 = xmalloc((size_t)out * r * 4);
	cloq_factor *f;
	cloq_err err;
	cloq_solve_info ie = { 0 }, ir = { 0 }, ia = { 0 };

	/* Two residuals: RTN INT2 noise (flat spectrum) and a residual with a decaying spectrum
	 * (sigma_j ~ 1/j over a small noise floor), the hard case for a sketch. */
	for (int kind = 0; kind < 2; kind++) {
		float *dW;
		if (kind == 0) {
			rtn_ref(W, Wq, out, in, 2, 32);
			dW = sub(W, Wq, (size_t)out * in);
		} else {
			dW = xmalloc((size_t)out * in * 4);
			trng_seed(43);
			for (size_t i = 0; i < (size_t)out * in; i++)
				dW[i] = (float)(1e-3 * trng_g());
			for (int j = 0; j < 64; j++) {
				double u[512], v[768];
				for (int o = 0; o < out; o++)
					u[o] = trng_g() / sqrt(out);
				for (int i = 0; i < in; i++)
					v[i] = trng_g() / sqrt(in);
				for (int o = 0; o < out; o++)
					for (int i = 0; i < in; i++)
						dW[(size_t)o * in + i] += (float)(u[o] * v[i] / (1 + j));
			}
		}
		assert_int_equal(cloq_solver_factor(H, in, 1e-4, &f, &err), CLOQ_OK);
		cloq_lora_params p = cloq_lora_default_params();
		p.rank = r;
		p.svd = CLOQ_SVD_EXACT;
		assert_int_equal(cloq_solver_cloq(f, dW, out, in, &p, A1, B1, &ie, &err), CLOQ_OK);
		p.svd = CLOQ_SVD_RANDOMIZED;
		assert_int_equal(cloq_solver_cloq(f, dW, out, in, &p, A2, B2, &ir, &err), CLOQ_OK);
		p.svd = CLOQ_SVD_AUTO;
		assert_int_equal(cloq_solver_cloq(f, dW, out, in, &p, A3, B3, &ia, &err), CLOQ_OK);
		assert_int_equal(ie.method, CLOQ_SVD_EXACT);
		assert_int_equal(ir.method, CLOQ_SVD_RANDOMIZED);
		assert_int_equal(ia.method, CLOQ_SVD_RANDOMIZED); /* 512 > 4 * (16 + 64) */
		/* deterministic: same seed, same bits */
		assert_memory_equal(A2, A3, (size_t)r * in * 4);
		assert_memory_equal(B2, B3, (size_t)out * r * 4);
		double *Hl = damped(H, in, cloq_factor_lambda(f));
		double *E1 = resid(dW, A1, B1, 1.0, out, in, r), *E2 = resid(dW, A2, B2, 1.0, out, in, r);
		double o1 = obj_ref(Hl, E1, out, in), o2 = obj_ref(Hl, E2, out, in);
		double excess = (o2 - o1) / o1;
		printf("randomized SVD (%s residual): exact %.8g randomized %.8g relative excess "
		       "%.2e (info: %.2e)\n", kind ? "decaying" : "RTN", o1, o2, excess,
		       (ir.objective - ie.objective) / ie.objective);
		assert_true(excess >= -1e-9);
		/* the fast path's reported objective (float32 M) is the evaluated one */
		assert_true(rel_diff(ir.objective, o2) < 1e-6);
		assert_true(excess <= 1e-3);
		assert_true((ir.objective - ie.objective) / ie.objective <= 1e-3);
		/* a different seed gives a different (but as good) sketch */
		p.seed = 12345;
		p.svd = CLOQ_SVD_RANDOMIZED;
		assert_int_equal(cloq_solver_cloq(f, dW, out, in, &p, A3, B3, &ia, &err), CLOQ_OK);
		assert_true(memcmp(A2, A3, (size_t)r * in * 4) != 0);
		assert_true((ia.objective - ie.objective) / ie.objective <= 1e-3);
		free(E2);
		free(E1);
		free(Hl);
		cloq_factor_free(f);
		free(dW);
	}
	/* the bare truncated SVD on a known spectrum: M = diag(10, 9, ..., 1) padded */
	{
		const int m = 300, n = 200, k = 5;
		double *M = calloc((size_t)m * n, 8), U[300 * 5], S[5], V[200 * 5], tail;
		int used;
		for (int j = 0; j < 10; j++)
			M[(size_t)j * m + j * 3] = 10 - j; /* column j, row 3j */
		assert_int_equal(cloq_solver_svd_topk(M, m, n, k, CLOQ_SVD_RANDOMIZED, 10, 2, 1, U, S,
						      V, &tail, &used, &err), CLOQ_OK);
		assert_int_equal(used, CLOQ_SVD_RANDOMIZED);
		for (int j = 0; j < k; j++) {
			assert_true(fabs(S[j] - (10 - j)) < 1e-10);
			assert_true(fabs(U[(size_t)j * m + 3 * j] - 1.0) < 1e-10); /* sign fixed + */
			assert_true(fabs(V[(size_t)j * n + j] - 1.0) < 1e-10);
		}
		assert_true(fabs(tail - (25 + 16 + 9 + 4 + 1)) < 1e-9);
		assert_int_equal(cloq_solver_svd_topk(M, m, n, 0, CLOQ_SVD_EXACT, 10, 2, 1, U, S, V,
						      NULL, NULL, &err), CLOQ_EINPUT);
		free(M);
	}
	free(B3);
	free(A3);
	free(B2);
	free(A2);
	free(B1);
	free(A1);
	free(Wq);
	free(W);
	free(H);
	free(X);
}

/* ================================================================================================
 * The factor in the caller's buffer, and objectives through the factor (no H)
 * ============================================================================================= */
static void test_factor_inplace_and_objective(void **state)
{
	const int out = 1100, in = 64, t = 400, r = 6;
	float *X = make_X(t, in, 71);
	double *H = gram_ref(X, t, in);
	float *W = make_W(out, in, 72), *Wq = xmalloc((size_t)out * in * 4);
	float *A1 = xmalloc((size_t)r * in * 4), *B1 = xmalloc((size_t)out * r * 4);
	float *A2 = xmalloc((size_t)r * in * 4), *B2 = xmalloc((size_t)out * r * 4);
	cloq_factor *f1 = NULL, *f2 = NULL, *fe = NULL;
	cloq_err err;
	cloq_lora_params p = cloq_lora_default_params();
	p.rank = r;
	p.svd = CLOQ_SVD_EXACT;
	rtn_ref(W, Wq, out, in, 2, 32);
	float *dW = sub(W, Wq, (size_t)out * in);

	/* singular H (dead channels, 20 tokens) at lambda 0 escalates the same way in both */
	float *Xs = make_X(20, in, 73);
	for (int tk = 0; tk < 20; tk++)
		Xs[(size_t)tk * in + 3] = 0.0f;
	double *Hs = gram_ref(Xs, 20, in);
	for (int pass = 0; pass < 2; pass++) {
		const double *Hx = pass ? Hs : H;
		double rel0 = pass ? 0.0 : 1e-4;
		double *Hc = xmalloc((size_t)in * in * sizeof(double));
		memcpy(Hc, Hx, (size_t)in * in * sizeof(double));
		assert_int_equal(cloq_solver_factor(Hx, in, rel0, &f1, &err), CLOQ_OK);
		assert_int_equal(cloq_solver_factor_inplace(Hc, in, rel0, &f2, &err), CLOQ_OK);
		assert_int_equal(cloq_factor_escalations(f1), cloq_factor_escalations(f2));
		assert_true(cloq_factor_lambda(f1) == cloq_factor_lambda(f2));
		if (pass)
			assert_true(cloq_factor_escalations(f2) >= 1);
		assert_int_equal(cloq_solver_cloq(f1, dW, out, in, &p, A1, B1, NULL, &err), CLOQ_OK);
		assert_int_equal(cloq_solver_cloq(f2, dW, out, in, &p, A2, B2, NULL, &err), CLOQ_OK);
		assert_memory_equal(A1, A2, (size_t)r * in * 4);
		assert_memory_equal(B1, B2, (size_t)out * r * 4);
		cloq_factor_free(f1);
		cloq_factor_free(f2); /* frees Hc */
	}

	/* a Cholesky that fails at every damping leaves the caller's buffer as it was */
	double Hbad[4] = { 1.0, 2.0, 2.0, 1.0 }, Hbad0[4];
	memcpy(Hbad0, Hbad, sizeof Hbad);
	assert_int_equal(cloq_solver_factor_inplace(Hbad, 2, 1e-4, &f2, &err), CLOQ_EINPUT);
	assert_null(f2);
	assert_memory_equal(Hbad, Hbad0, sizeof Hbad);
	Hbad[0] = -1.0;
	assert_int_equal(cloq_solver_factor_inplace(Hbad, 2, 1e-4, &f2, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "negative diagonal"));

	/* ||R E^T||^2 - lambda ||E||^2 == tr(E H E^T): float64 root, eigen root, float32 copy */
	float *E = xmalloc((size_t)out * in * 4);
	for (size_t i = 0; i < (size_t)out * in; i++)
		E[i] = dW[i] + 0.3f * W[i];
	double *Ed = xmalloc((size_t)out * in * sizeof(double));
	for (size_t i = 0; i < (size_t)out * in; i++)
		Ed[i] = E[i];
	double ref = obj_ref(H, Ed, out, in);
	assert_int_equal(cloq_solver_factor(H, in, 1e-4, &f1, &err), CLOQ_OK);
	assert_int_equal(cloq_solver_factor_eig(H, in, 1e-4, &fe, &err), CLOQ_OK);
	double v64 = cloq_solver_factor_objective(f1, E, out, in);
	double veig = cloq_solver_factor_objective(fe, E, out, in);
	assert_int_equal(cloq_factor_make_f32(f1, &err), CLOQ_OK);
	double v32 = cloq_solver_factor_objective(f1, E, out, in);
	printf("factor objective vs tr(E H E^T): float64 %.2e, eigen %.2e, float32 %.2e\n",
	       rel_diff(v64, ref), rel_diff(veig, ref), rel_diff(v32, ref));
	assert_true(rel_diff(v64, ref) < 1e-9);
	assert_true(rel_diff(veig, ref) < 1e-9);
	assert_true(rel_diff(v32, ref) < 1e-5);
	/* the solver's own undamped objective agrees with tr(E H E^T) of what it returns */
	cloq_solve_info info = { 0 };
	p.svd = CLOQ_SVD_RANDOMIZED;
	p.oversample = 8;
	assert_int_equal(cloq_solver_cloq(f1, dW, out, in, &p, A1, B1, &info, &err), CLOQ_OK);
	double *Er = resid(dW, A1, B1, p.scaling, out, in, r);
	double oref = obj_ref(H, Er, out, in);
	printf("randomized path objective_undamped vs reference: %.2e\n",
	       rel_diff(info.objective_undamped, oref));
	assert_true(rel_diff(info.objective_undamped, oref) < 1e-5);
	free(Er);
	/* all-zero H: R = I, lambda = 1, the undamped objective is exactly 0 */
	double *H0 = calloc((size_t)in * in, sizeof(double));
	assert_non_null(H0);
	cloq_factor *f0 = NULL;
	assert_int_equal(cloq_solver_factor_inplace(H0, in, 1e-4, &f0, &err), CLOQ_OK);
	assert_true(cloq_solver_factor_objective(f0, E, out, in) == 0.0);
	assert_int_equal(cloq_factor_make_f32(f0, &err), CLOQ_OK);
	assert_true(cloq_solver_factor_objective(f0, E, out, in) == 0.0);
	/* bad sizes: NAN, never a number */
	assert_true(isnan(cloq_solver_factor_objective(f1, E, out, in + 1)));
	cloq_factor_free(f0);

	/* alternating CLoQ without H ranks by the factor's undamped objective: never worse than
	 * its first iterate, which is one-shot CLoQ bit for bit */
	rtn_ctx c;
	cloq_quantizer_cb cb = rtn_cb(&c, out, in, 2);
	cloq_solve_info i1 = { 0 }, i3 = { 0 };
	p = cloq_lora_default_params();
	p.rank = r;
	float *Wq3 = xmalloc((size_t)out * in * 4);
	assert_int_equal(cloq_solver_cloq_alt(W, f1, NULL, out, in, &cb, &p, 1, Wq, A1, B1, &i1, &err),
			 CLOQ_OK);
	assert_int_equal(cloq_solver_cloq_alt(W, f1, NULL, out, in, &cb, &p, 3, Wq3, A2, B2, &i3, &err),
			 CLOQ_OK);
	assert_true(i3.objective_undamped <= i1.objective_undamped);
	if (i3.best_iter == 1) {
		assert_memory_equal(A1, A2, (size_t)r * in * 4);
		assert_memory_equal(Wq, Wq3, (size_t)out * in * 4);
	}
	free(Wq3);
	cloq_factor_free(f1);
	cloq_factor_free(fe);
	free(Ed);
	free(E);
	free(Hs);
	free(Xs);
	free(dW);
	free(B2);
	free(A2);
	free(B1);
	free(A1);
	free(Wq);
	free(W);
	free(H);
	free(X);
}

/* ================================================================================================
 * (5) alternating CLoQ
 * ============================================================================================= */
static void test_alternating(void **state)
{
	const int out = 64, in = 96, t = 4096, r = 8;
	float *X = make_X(t, in, 51);
	double *H = gram_ref(X, t, in);
	float *W = make_W(out, in, 52);
	float *Wq = xmalloc((size_t)out * in * 4), *Wq1 = xmalloc((size_t)out * in * 4);
	float *A = xmalloc((size_t)r * in * 4), *B = xmalloc((size_t)out * r * 4);
	float *A1 = xmalloc((size_t)r * in * 4), *B1 = xmalloc((size_t)out * r * 4);
	cloq_factor *f;
	cloq_err err;
	rtn_ctx c;
	cloq_quantizer_cb cb = rtn_cb(&c, out, in, 2);
	cloq_lora_params p = cloq_lora_default_params();
	p.rank = r;
	cloq_solve_info info = { 0 };

	assert_int_equal(cloq_solver_factor(H, in, 1e-4, &f, &err), CLOQ_OK);
	/* one-shot by hand */
	rtn_ref(W, Wq1, out, in, 2, 32);
	float *dW = sub(W, Wq1, (size_t)out * in);
	assert_int_equal(cloq_solver_cloq(f, dW, out, in, &p, A1, B1, NULL, &err), CLOQ_OK);
	/* iters = 1 is exactly one-shot */
	assert_int_equal(cloq_solver_cloq_alt(W, f, H, out, in, &cb, &p, 1, Wq, A, B, &info, &err),
			 CLOQ_OK);
	assert_memory_equal(Wq, Wq1, (size_t)out * in * 4);
	assert_memory_equal(A, A1, (size_t)r * in * 4);
	assert_memory_equal(B, B1, (size_t)out * r * 4);
	assert_int_equal(c.calls, 1);
	assert_int_equal(c.kept_call, 1);
	double one;
	assert_int_equal(cloq_solver_rel_error(H, W, Wq1, A1, B1, 1.0, out, in, r, &one, &err),
			 CLOQ_OK);
	/* T = 5 */
	cb = rtn_cb(&c, out, in, 2);
	assert_int_equal(cloq_solver_cloq_alt(W, f, H, out, in, &cb, &p, 5, Wq, A, B, &info, &err),
			 CLOQ_OK);
	assert_int_equal(c.calls, 5);
	assert_int_equal(c.kept_call, info.best_iter); /* keep() followed the returned iterate */
	double five;
	assert_int_equal(cloq_solver_rel_error(H, W, Wq, A, B, 1.0, out, in, r, &five, &err),
			 CLOQ_OK);
	/* info's calibrated objective is that of the returned iterate */
	float *dW5 = sub(W, Wq, (size_t)out * in);
	double *E = resid(dW5, A, B, 1.0, out, in, r);
	assert_true(rel_diff(info.objective_undamped, obj_ref(H, E, out, in)) < 1e-9);
	printf("alternating CLoQ: rel. calibrated error one-shot %.6f, T=5 %.6f (best iterate %d)\n",
	       one, five, info.best_iter);
	assert_true(five <= one);
	free(E);
	free(dW5);
	free(dW);
	cloq_factor_free(f);
	free(B1);
	free(A1);
	free(B);
	free(A);
	free(Wq1);
	free(Wq);
	free(W);
	free(H);
	free(X);
}

/* ================================================================================================
 * (6) singular H, dead channels, zero weights, zero H, NaN, bad arguments
 * ============================================================================================= */
static int nan_quantize(void *ctx, const float *W, float *Wq, cloq_err *err)
{
	rtn_ctx *c = ctx;
	rtn_ref(W, Wq, c->out, c->in, 2, 32);
	Wq[3] = NAN;
	return CLOQ_OK;
}

static int failing_quantize(void *ctx, const float *W, float *Wq, cloq_err *err)
{
	return cloq_err_set(err, CLOQ_EIO, "disk full while storing codes of tensor 'q_proj'");
}

static void test_edge_cases(void **state)
{
	const int out = 24, in = 64, r = 4;
	float *W = make_W(out, in, 61), *Wq = xmalloc((size_t)out * in * 4);
	float *A = xmalloc((size_t)r * in * 4), *B = xmalloc((size_t)out * r * 4);
	float *A2 = xmalloc((size_t)r * in * 4), *B2 = xmalloc((size_t)out * r * 4);
	cloq_factor *f = NULL;
	cloq_err err;
	cloq_lora_params p = cloq_lora_default_params();
	p.rank = r;
	cloq_solve_info info = { 0 };
	rtn_ref(W, Wq, out, in, 2, 32);
	float *dW = sub(W, Wq, (size_t)out * in);

	/* singular H: 20 tokens, 64 columns; dead channels: columns 0, 9 and 40 of X are zero */
	float *X = make_X(20, in, 62);
	for (int tk = 0; tk < 20; tk++)
		X[(size_t)tk * in + 0] = X[(size_t)tk * in + 9] = X[(size_t)tk * in + 40] = 0.0f;
	double *H = gram_ref(X, 20, in);
	cloq_lora_params pe = p;
	pe.svd = CLOQ_SVD_EXACT;
	check_identity(H, dW, out, in, &pe, 0);
	check_identity(H, dW, out, in, &pe, 1);
	/* lambda = 0 on a singular H: escalates and says so */
	assert_int_equal(cloq_solver_factor(H, in, 0.0, &f, &err), CLOQ_OK);
	assert_true(cloq_factor_escalations(f) >= 1);
	assert_true(cloq_factor_lambda_rel(f) >= 1e-6 && cloq_factor_lambda_rel(f) <= 0.1);
	assert_int_equal(cloq_solver_cloq(f, dW, out, in, &p, A, B, &info, &err), CLOQ_OK);
	assert_true(all_finite(A, (size_t)r * in) && all_finite(B, (size_t)out * r));
	cloq_factor_free(f);

	/* all-zero weights (and so dW = 0): A = B = 0, objective 0 */
	float *Z = calloc((size_t)out * in, 4);
	assert_int_equal(cloq_solver_factor(H, in, 1e-4, &f, &err), CLOQ_OK);
	assert_int_equal(cloq_solver_cloq(f, Z, out, in, &p, A, B, &info, &err), CLOQ_OK);
	for (size_t i = 0; i < (size_t)r * in; i++)
		assert_true(A[i] == 0.0f);
	for (size_t i = 0; i < (size_t)out * r; i++)
		assert_true(B[i] == 0.0f);
	assert_true(info.objective == 0.0 && info.objective_undamped == 0.0);
	/* the alternating solver on zero weights quantizes to zero (AutoGPTQ's [-1,1] rule keeps
	 * 0 exact) and stays finite */
	rtn_ctx c;
	cloq_quantizer_cb cb = rtn_cb(&c, out, in, 2);
	assert_int_equal(cloq_solver_cloq_alt(Z, f, H, out, in, &cb, &p, 3, Wq, A, B, &info, &err),
			 CLOQ_OK);
	assert_true(all_finite(A, (size_t)r * in) && all_finite(B, (size_t)out * r));
	double rel;
	assert_int_equal(cloq_solver_rel_error(H, Z, Wq, A, B, 1.0, out, in, r, &rel, &err),
			 CLOQ_OK);
	assert_true(rel == 0.0);

	/* NaN in dW: CLOQ_EINPUT naming the entry, outputs zeroed, no NaN out */
	float keep57 = dW[5 * in + 7];
	dW[5 * in + 7] = NAN;
	assert_int_equal(cloq_solver_cloq(f, dW, out, in, &p, A, B, &info, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "[5][7]"));
	for (size_t i = 0; i < (size_t)r * in; i++)
		assert_true(A[i] == 0.0f);
	dW[5 * in + 7] = keep57;
	/* quantizer returns NaN / fails: CLOQ_EINPUT / its own code, wrapped */
	cb.quantize = nan_quantize;
	assert_int_equal(cloq_solver_cloq_alt(W, f, H, out, in, &cb, &p, 2, Wq, A, B, NULL, &err),
			 CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "quantizer"));
	assert_int_equal(cloq_solver_loftq(W, out, in, &cb, &p, 2, Wq, A, B, &err), CLOQ_EINPUT);
	cb.quantize = failing_quantize;
	assert_int_equal(cloq_solver_loftq(W, out, in, &cb, &p, 2, Wq, A, B, &err), CLOQ_EIO);
	assert_non_null(strstr(err.msg, "q_proj"));
	assert_non_null(strstr(err.msg, "iteration 1"));
	/* bad arguments */
	cloq_lora_params bad = p;
	bad.rank = 0;
	assert_int_equal(cloq_solver_cloq(f, dW, out, in, &bad, A, B, NULL, &err), CLOQ_EINPUT);
	bad = p;
	bad.scaling = 0.0;
	assert_int_equal(cloq_solver_cloq(f, dW, out, in, &bad, A, B, NULL, &err), CLOQ_EINPUT);
	bad = p;
	bad.svd = 7;
	assert_int_equal(cloq_solver_cloq(f, dW, out, in, &bad, A, B, NULL, &err), CLOQ_EINPUT);
	assert_int_equal(cloq_solver_cloq(f, dW, in, out, &p, A, B, NULL, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "64 wide"));
	assert_int_equal(cloq_solver_cloq(NULL, dW, out, in, &p, A, B, NULL, &err), CLOQ_EINPUT);
	cloq_factor_free(f);
	cloq_factor_free(NULL);

	/* all-zero H: lambda = 1, R = I, so CLoQ is LoftQ's plain SVD of dW */
	double *H0 = calloc((size_t)in * in, 8);
	assert_int_equal(cloq_solver_factor(H0, in, 1e-4, &f, &err), CLOQ_OK);
	assert_true(cloq_factor_lambda(f) == 1.0);
	assert_int_equal(cloq_solver_cloq(f, dW, out, in, &p, A, B, &info, &err), CLOQ_OK);
	assert_true(info.objective_undamped < 1e-12 * info.objective);
	cb = rtn_cb(&c, out, in, 2);
	assert_int_equal(cloq_solver_loftq(W, out, in, &cb, &p, 1, Wq, A2, B2, &err), CLOQ_OK);
	assert_true(lora_rel_diff(A, B, 1.0, A2, B2, 1.0, out, in, r) < 1e-6);
	cloq_factor_free(f);
	/* eig root of a zero H too */
	assert_int_equal(cloq_solver_factor_eig(H0, in, 1e-4, &f, &err), CLOQ_OK);
	assert_true(cloq_factor_lambda(f) == 1.0);
	cloq_factor_free(f);

	/* NaN / negative diagonal in H; bad lambda */
	f = (cloq_factor *)&err; /* must be reset to NULL on failure */
	H[3 * in + 17] = NAN;
	assert_int_equal(cloq_solver_factor(H, in, 1e-4, &f, &err), CLOQ_EINPUT);
	assert_null(f);
	assert_non_null(strstr(err.msg, "H[3][17]"));
	assert_int_equal(cloq_solver_factor_eig(H, in, 1e-4, &f, &err), CLOQ_EINPUT);
	H[3 * in + 17] = 0.0;
	H[2 * in + 2] = -1.0;
	assert_int_equal(cloq_solver_factor(H, in, 1e-4, &f, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "negative diagonal"));
	H[2 * in + 2] = 1.0;
	assert_int_equal(cloq_solver_factor(H, in, -1.0, &f, &err), CLOQ_EINPUT);
	assert_int_equal(cloq_solver_factor(H, 0, 1e-4, &f, &err), CLOQ_EINPUT);
	/* an indefinite "H" (rank-one minus a lot off the diagonal) fails even at 1e-1 */
	double Hbad[4] = { 1.0, 3.0, 3.0, 1.0 };
	assert_int_equal(cloq_solver_factor(Hbad, 2, 1e-4, &f, &err), CLOQ_EINPUT);
	assert_non_null(strstr(err.msg, "not positive definite"));
	/* objective helper guards */
	assert_true(isnan(cloq_solver_objective(NULL, W, out, in)));
	assert_int_equal(cloq_solver_rel_error(H0, W, Wq, NULL, NULL, 1.0, out, in, 0, &rel, &err),
			 CLOQ_OK);
	assert_true(rel == 0.0); /* zero H: 0 / 0 */
	{
		/* W in the null space of H, the error not: x / 0 */
		double h2[4] = { 1.0, 0.0, 0.0, 0.0 };
		float w2[2] = { 0.0f, 1.0f }, q2[2] = { 1.0f, 1.0f };
		assert_int_equal(cloq_solver_rel_error(h2, w2, q2, NULL, NULL, 1.0, 1, 2, 0, &rel,
						       &err), CLOQ_OK);
		assert_true(isinf(rel));
		q2[0] = 0.5f; /* and an ordinary value: sqrt(0.25 / 0) -> inf, so use w2[0] = 1 */
		w2[0] = 1.0f;
		assert_int_equal(cloq_solver_rel_error(h2, w2, q2, NULL, NULL, 1.0, 1, 2, 0, &rel,
						       &err), CLOQ_OK);
		assert_true(fabs(rel - 0.5) < 1e-15); /* |1 - 0.5| / |1| */
	}

	free(H0);
	free(Z);
	free(H);
	free(X);
	free(dW);
	free(B2);
	free(A2);
	free(B);
	free(A);
	free(Wq);
	free(W);
}

/* Fail every allocation in turn: each failure is a clean CLOQ_EIO (ASan checks for leaks). */
static void test_alloc_faults(void **state)
{
	const int out = 24, in = 40, r = 4, t = 500;
	float *X = make_X(t, in, 71);
	double *H = gram_ref(X, t, in);
	float *W = make_W(out, in, 72), *Wq = xmalloc((size_t)out * in * 4);
	float *A = xmalloc((size_t)r * in * 4), *B = xmalloc((size_t)out * r * 4);
	cloq_lora_params p = cloq_lora_default_params();
	p.rank = r;
	int stage_ok[4] = { 0 };
	for (long nth = 1; nth < 200; nth++) {
		cloq_err err;
		cloq_factor *f = NULL;
		cloq_gram g;
		rtn_ctx c;
		cloq_quantizer_cb cb = rtn_cb(&c, out, in, 2);
		cloq_solve_info info = { 0 };
		int rc[4];
		cloq_fault_set(CLOQ_FAULT_ALLOC, nth);
		rc[0] = cloq_gram_init(&g, in, &err);
		if (rc[0] == CLOQ_OK) {
			rc[0] = cloq_gram_add(&g, X, t, &err);
			cloq_gram_free(&g);
		}
		rc[1] = cloq_solver_factor(H, in, 1e-4, &f, &err);
		rc[2] = f ? cloq_solver_cloq_alt(W, f, H, out, in, &cb, &p, 2, Wq, A, B, &info, &err)
			  : CLOQ_EIO;
		rc[3] = cloq_solver_loftq(W, out, in, &cb, &p, 2, Wq, A, B, &err);
		cloq_fault_set(CLOQ_FAULT_ALLOC, 0);
		cloq_factor_free(f);
		for (int s = 0; s < 4; s++) {
			assert_true(rc[s] == CLOQ_OK || rc[s] == CLOQ_EIO);
			stage_ok[s] += rc[s] == CLOQ_OK;
		}
	}
	for (int s = 0; s < 4; s++)
		assert_true(stage_ok[s] > 0);
	free(B);
	free(A);
	free(Wq);
	free(W);
	free(H);
	free(X);
}

static void test_zero_init(void **state)
{
	const int out = 30, in = 400, r = 16;
	float *A = xmalloc((size_t)r * in * 4), *B = xmalloc((size_t)out * r * 4);
	float *A2 = xmalloc((size_t)r * in * 4), *B2 = xmalloc((size_t)out * r * 4);
	cloq_lora_params p = cloq_lora_default_params();
	cloq_err err;
	p.rank = r;
	p.seed = 5;
	assert_int_equal(cloq_solver_zero_init(out, in, &p, A, B, &err), CLOQ_OK);
	assert_int_equal(cloq_solver_zero_init(out, in, &p, A2, B2, &err), CLOQ_OK);
	assert_memory_equal(A, A2, (size_t)r * in * 4);
	double bound = 1.0 / sqrt(in), m = 0.0, v = 0.0;
	for (size_t i = 0; i < (size_t)r * in; i++) {
		assert_true(fabs(A[i]) <= bound);
		m += A[i];
		v += (double)A[i] * A[i];
	}
	m /= r * in;
	v /= r * in;
	/* U(-b, b): mean 0, variance b^2 / 3; 6400 draws -> loose 5-sigma bounds */
	assert_true(fabs(m) < 5 * bound / sqrt(3.0 * r * in));
	assert_true(fabs(v / (bound * bound / 3.0) - 1.0) < 0.05);
	for (size_t i = 0; i < (size_t)out * r; i++)
		assert_true(B[i] == 0.0f);
	p.seed = 6;
	assert_int_equal(cloq_solver_zero_init(out, in, &p, A2, B2, &err), CLOQ_OK);
	assert_true(memcmp(A, A2, (size_t)r * in * 4) != 0);
	free(B2);
	free(A2);
	free(B);
	free(A);
}

/* ================================================================================================
 * Real weights: stories260K, 35 linears, RTN INT2 group 32, rank 8
 * ============================================================================================= */
static const char *fixdir(void)
{
	const char *d = getenv("CLOQ_SOLVER_FIXTURES");
	return d ? d : "fixtures/solver";
}

static void *load(const char *name, size_t bytes)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", fixdir(), name);
	FILE *fp = fopen(path, "rb");
	if (!fp)
		fprintf(stderr, "missing fixture %s\n", path);
	assert_non_null(fp);
	void *p = xmalloc(bytes);
	assert_int_equal(fread(p, 1, bytes, fp), bytes);
	assert_int_equal(fgetc(fp), EOF); /* exact size */
	fclose(fp);
	return p;
}

static void test_real_weights(void **state)
{
	static const char *proj[7] = { "q", "k", "v", "o", "gate", "up", "down" };
	static const char *grp[7] = { "qkv", "qkv", "qkv", "o", "gateup", "gateup", "down" };
	static const int shp[7][2] = { { 64, 64 }, { 32, 64 }, { 32, 64 }, { 64, 64 },
				       { 172, 64 }, { 172, 64 }, { 64, 172 } };
	const int r = 8;
	double sum_alt = 0.0, sum_loftq = 0.0, sum_one = 0.0, sum_rtn = 0.0, sum_loftq1 = 0.0;
	double worst_id = 0.0, worst_eig = 0.0, worst_known = 0.0, worst_x = 0.0;
	char name[128];
	FILE *kf;
	double known[35];
	{
		char path[512];
		snprintf(path, sizeof path, "%s/rtn_int2_g32_relerr.txt", fixdir());
		kf = fopen(path, "r");
		assert_non_null(kf);
		for (int i = 0; i < 35; i++) {
			char nm[64];
			assert_int_equal(fscanf(kf, "%63s %lf", nm, &known[i]), 2);
		}
		fclose(kf);
	}
	printf("relative calibrated error, INT2 g32 RTN, rank 8\n%-14s %8s %8s %8s %8s %8s\n",
	       "linear", "RTN", "LoftQ1", "CLoQ", "LoftQ5", "altCLoQ5");
	for (int l = 0; l < 5; l++)
		for (int q = 0; q < 7; q++) {
			int out = shp[q][0], in = shp[q][1];
			cloq_err err;
			cloq_factor *f;
			snprintf(name, sizeof name, "L%d.%s_proj.W.f32", l, proj[q]);
			float *W = load(name, (size_t)out * in * 4);
			snprintf(name, sizeof name, "L%d.%s.H.f64", l, grp[q]);
			double *H = load(name, (size_t)in * in * 8);
			float *Wq = xmalloc((size_t)out * in * 4), *Wq2 = xmalloc((size_t)out * in * 4);
			float *A = xmalloc((size_t)r * in * 4), *B = xmalloc((size_t)out * r * 4);
			float *A2 = xmalloc((size_t)r * in * 4), *B2 = xmalloc((size_t)out * r * 4);
			double e_rtn, e_one, e_loftq1, e_loftq, e_alt;
			cloq_lora_params p = cloq_lora_default_params();
			p.rank = r;
			rtn_ctx c;
			cloq_quantizer_cb cb;

			rtn_ref(W, Wq, out, in, 2, 32);
			assert_int_equal(cloq_solver_rel_error(H, W, Wq, NULL, NULL, 1.0, out, in, 0,
							       &e_rtn, &err), CLOQ_OK);
			/* the refpy helper's independent known answer for this RTN */
			if (fabs(e_rtn - known[l * 7 + q]) > worst_known)
				worst_known = fabs(e_rtn - known[l * 7 + q]);
			float *dW = sub(W, Wq, (size_t)out * in);
			/* (1) identity, with the eig root too; (3) chol vs eig */
			assert_int_equal(cloq_solver_factor(H, in, 1e-4, &f, &err), CLOQ_OK);
			{
				double *Hl = damped(H, in, cloq_factor_lambda(f));
				double *s = ref_sigma(Hl, dW, out, in);
				assert_int_equal(cloq_solver_cloq(f, dW, out, in, &p, A, B, NULL, &err),
						 CLOQ_OK);
				double *E = resid(dW, A, B, 1.0, out, in, r);
				double d = rel_diff(obj_ref(Hl, E, out, in),
						    tail_of(s, out < in ? out : in, r));
				worst_id = d > worst_id ? d : worst_id;
				assert_true(d < 1e-6);
				/* (2) CLoQ <= LoftQ(1) (same Q: quantize(W)) and zero init */
				cb = rtn_cb(&c, out, in, 2);
				assert_int_equal(cloq_solver_loftq(W, out, in, &cb, &p, 1, Wq2, A2, B2,
								   &err), CLOQ_OK);
				assert_memory_equal(Wq, Wq2, (size_t)out * in * 4);
				double *E2 = resid(dW, A2, B2, 1.0, out, in, r);
				double oc = obj_ref(Hl, E, out, in), ol = obj_ref(Hl, E2, out, in);
				for (size_t i = 0; i < (size_t)out * in; i++)
					E2[i] = dW[i];
				double oz = obj_ref(Hl, E2, out, in);
				assert_true(oc <= ol && oc <= oz);
				free(E2);
				free(E);
				free(s);
				free(Hl);
			}
			double de = chol_vs_eig(H, dW, out, in, &p);
			worst_eig = de > worst_eig ? de : worst_eig;
			assert_true(de < 1e-6);
			assert_int_equal(cloq_solver_rel_error(H, W, Wq, A, B, 1.0, out, in, r, &e_one,
							       &err), CLOQ_OK);
			assert_int_equal(cloq_solver_rel_error(H, W, Wq2, A2, B2, 1.0, out, in, r,
							       &e_loftq1, &err), CLOQ_OK);
			/* (5) alternating T = 5 vs one-shot; LoftQ T = 5 */
			cb = rtn_cb(&c, out, in, 2);
			assert_int_equal(cloq_solver_cloq_alt(W, f, H, out, in, &cb, &p, 5, Wq2, A2,
							      B2, NULL, &err), CLOQ_OK);
			assert_int_equal(cloq_solver_rel_error(H, W, Wq2, A2, B2, 1.0, out, in, r,
							       &e_alt, &err), CLOQ_OK);
			assert_true(e_alt <= e_one);
			cb = rtn_cb(&c, out, in, 2);
			assert_int_equal(cloq_solver_loftq(W, out, in, &cb, &p, 5, Wq2, A2, B2, &err),
					 CLOQ_OK);
			assert_int_equal(cloq_solver_rel_error(H, W, Wq2, A2, B2, 1.0, out, in, r,
							       &e_loftq, &err), CLOQ_OK);
			printf("L%d.%-11s %8.5f %8.5f %8.5f %8.5f %8.5f\n", l, proj[q], e_rtn, e_loftq1,
			       e_one, e_loftq, e_alt);
			sum_rtn += e_rtn;
			sum_one += e_one;
			sum_loftq1 += e_loftq1;
			sum_loftq += e_loftq;
			sum_alt += e_alt;

			/* ||X E^T||_F^2 == tr(E HX E^T) where X is provided; our Gram of X == HX */
			if ((l == 0 || l == 4) && (q == 0 || q == 3 || q == 4 || q == 6)) {
				const int t = 2048;
				snprintf(name, sizeof name, "L%d.%s.X.f32", l, grp[q]);
				float *X = load(name, (size_t)t * in * 4);
				snprintf(name, sizeof name, "L%d.%s.HX.f64", l, grp[q]);
				double *HX = load(name, (size_t)in * in * 8);
				double *E = resid(dW, A, B, 1.0, out, in, r), xe = 0.0;
				for (int tk = 0; tk < t; tk++)
					for (int o = 0; o < out; o++) {
						double v = 0.0;
						for (int i = 0; i < in; i++)
							v += (double)X[(size_t)tk * in + i] *
							     E[(size_t)o * in + i];
						xe += v * v;
					}
				double d = rel_diff(xe, obj_ref(HX, E, out, in));
				worst_x = d > worst_x ? d : worst_x;
				assert_true(d < 1e-10);
				cloq_gram g;
				assert_int_equal(cloq_gram_init(&g, in, &err), CLOQ_OK);
				assert_int_equal(cloq_gram_add(&g, X, t, &err), CLOQ_OK);
				cloq_gram_finish(&g);
				double num = 0.0, den = 0.0;
				for (size_t i = 0; i < (size_t)in * in; i++) {
					num += (g.H[i] - HX[i]) * (g.H[i] - HX[i]);
					den += HX[i] * HX[i];
				}
				assert_true(sqrt(num / den) < 1e-6);
				cloq_gram_free(&g);
				free(E);
				free(HX);
				free(X);
			}
			cloq_factor_free(f);
			free(dW);
			free(B2);
			free(A2);
			free(B);
			free(A);
			free(Wq2);
			free(Wq);
			free(H);
			free(W);
		}
	printf("mean over 35 linears: RTN %.6f  LoftQ(T=1) %.6f  CLoQ %.6f  LoftQ(T=5) %.6f  "
	       "alt CLoQ(T=5) %.6f\n", sum_rtn / 35, sum_loftq1 / 35, sum_one / 35, sum_loftq / 35,
	       sum_alt / 35);
	printf("worst: identity %.2e, chol vs eig %.2e, RTN vs known answer %.2e, "
	       "||XE^T||^2 vs tr(E HX E^T) %.2e\n", worst_id, worst_eig, worst_known, worst_x);
	assert_true(worst_known < 1e-5);
	assert_true(sum_alt < sum_loftq);
	assert_true(sum_one < sum_loftq1);
}


/* CLoQ on bitsandbytes' NF4 Q (double quantization, as QLoRA users load): on every real linear
 * the closed form reaches the SVD tail energy of an independent solve (check_identity: relative
 * 1e-6), and beats LoftQ(T=1) on the same Q and the zero init, in the calibrated objective. */
typedef struct fixed_ctx {
	const float *Wq;
	size_t n;
} fixed_ctx;

static int fixed_q(void *ctx, const float *W, float *Wq, cloq_err *err)
{
	const fixed_ctx *f = ctx;
	(void)W;
	(void)err;
	memcpy(Wq, f->Wq, f->n * sizeof(float));
	return CLOQ_OK;
}

static void test_nf4_bnb_real(void **state)
{
	(void)state;
	static const char *proj[7] = { "q", "k", "v", "o", "gate", "up", "down" };
	static const char *grp[7] = { "qkv", "qkv", "qkv", "o", "gateup", "gateup", "down" };
	static const int shp[7][2] = { { 64, 64 }, { 32, 64 }, { 32, 64 }, { 64, 64 },
				       { 172, 64 }, { 172, 64 }, { 64, 172 } };
	const int r = 8;
	char name[128];
	double sum_c = 0.0, sum_l = 0.0, sum_z = 0.0;
	for (int l = 0; l < 5; l++)
		for (int q = 0; q < 7; q++) {
			int out = shp[q][0], in = shp[q][1];
			size_t wn = (size_t)out * in;
			cloq_err err;
			snprintf(name, sizeof name, "L%d.%s_proj.W.f32", l, proj[q]);
			float *W = load(name, wn * 4);
			snprintf(name, sizeof name, "L%d.%s.H.f64", l, grp[q]);
			double *H = load(name, (size_t)in * in * 8);
			cloq_nf_params np = { 4, 64, 1, 1, CLOQ_DT_F32 };
			cloq_qtensor qt;
			assert_int_equal(cloq_quant_nf_codes(W, out, in, &np, &qt, &err), CLOQ_OK);
			float *Wq = xmalloc(wn * 4);
			cloq_quant_dequant(&qt, Wq);
			cloq_qtensor_free(&qt);
			float *dW = sub(W, Wq, wn);
			cloq_lora_params p = cloq_lora_default_params();
			p.rank = r;
			check_identity(H, dW, out, in, &p, 0);
			/* the three inits' objectives on the same Q */
			cloq_factor *f;
			float *A = xmalloc((size_t)r * in * 4), *B = xmalloc((size_t)out * r * 4);
			double ec, el, ez;
			assert_int_equal(cloq_solver_factor(H, in, 1e-4, &f, &err), CLOQ_OK);
			assert_int_equal(cloq_solver_cloq(f, dW, out, in, &p, A, B, NULL, &err), CLOQ_OK);
			assert_int_equal(cloq_solver_rel_error(H, W, Wq, A, B, 1.0, out, in, r, &ec, &err), CLOQ_OK);
			fixed_ctx fx = { Wq, wn };
			cloq_quantizer_cb cb = { &fx, fixed_q, NULL };
			float *Wq2 = xmalloc(wn * 4);
			assert_int_equal(cloq_solver_loftq(W, out, in, &cb, &p, 1, Wq2, A, B, &err), CLOQ_OK);
			assert_int_equal(cloq_solver_rel_error(H, W, Wq, A, B, 1.0, out, in, r, &el, &err), CLOQ_OK);
			assert_int_equal(cloq_solver_rel_error(H, W, Wq, NULL, NULL, 1.0, out, in, 0, &ez, &err), CLOQ_OK);
			assert_true(ec <= el * (1 + 1e-9) && ec < ez);
			sum_c += ec;
			sum_l += el;
			sum_z += ez;
			cloq_factor_free(f);
			free(Wq2);
			free(A);
			free(B);
			free(dW);
			free(Wq);
			free(W);
			free(H);
		}
	printf("# NF4 (bitsandbytes, double quant) on stories260K, mean calibrated relative error over 35 "
	       "linears: zero %.4f, LoftQ(1) %.4f, CLoQ %.4f\n", sum_z / 35, sum_l / 35, sum_c / 35);
}

/* Asymmetric calibration (cloq_solver_asym_target): the closed form against a brute-force damped
 * least squares, [Xq; sqrt(lambda) I] M^T = [Xo W^T; sqrt(lambda) W^T] by LAPACK's dgels; the cross
 * statistics of cloq_cross_add against float64 products; and Weff = W bit for bit when Xo = Xq. */
static void test_asym_target(void **state)
{
	(void)state;
	const int t = 300, n = 24, out = 7;
	float *Xq = malloc(sizeof(float) * t * n), *Xo = malloc(sizeof(float) * t * n), *Df = malloc(sizeof(float) * t * n);
	float *W = malloc(sizeof(float) * out * n), *Weff = malloc(sizeof(float) * out * n);
	float *work = malloc(sizeof(float) * n * CLOQ_GRAM_PANEL);
	double *H = calloc((size_t)n * n, sizeof(double)), *D = calloc((size_t)n * n, sizeof(double));
	double *Dref = calloc((size_t)n * n, sizeof(double));
	double *A = malloc(sizeof(double) * (t + n) * n), *B = malloc(sizeof(double) * (t + n) * out);
	assert_true(Xq && Xo && Df && W && Weff && work && H && D && Dref && A && B);
	trng_seed(12345);
	for (int i = 0; i < t * n; i++) {
		Xq[i] = (float)(trng_g() * (1.0 + (i % n) * 0.2)); /* columns of different scales */
		Xo[i] = Xq[i] + 0.3f * (float)trng_g();
		Df[i] = Xo[i] - Xq[i];
	}
	for (int i = 0; i < out * n; i++)
		W[i] = (float)trng_g();
	for (int i = 0; i < n; i++)
		for (int j = 0; j < n; j++)
			for (int r = 0; r < t; r++) {
				H[(size_t)i * n + j] += (double)Xq[(size_t)r * n + i] * Xq[(size_t)r * n + j];
				Dref[(size_t)i * n + j] += (double)Df[(size_t)r * n + i] * Xq[(size_t)r * n + j];
			}
	cloq_cross_add(D, work, Df, Xq, t, n);
	double dmax = 0, dscale = 0;
	for (int i = 0; i < n * n; i++) {
		dmax = fmax(dmax, fabs(D[i] - Dref[i]));
		dscale = fmax(dscale, fabs(Dref[i]));
	}
	assert_true(dmax <= 1e-5 * dscale);
	double lr = 0.01, mean = 0;
	for (int i = 0; i < n; i++)
		mean += H[(size_t)i * n + i] / n;
	double lam = lr * mean;
	cloq_err err;
	assert_int_equal(cloq_solver_asym_target(H, Dref, n, W, out, lr, Weff, &err), CLOQ_OK);
	/* brute force: rows 0..t-1 are Xq and Xo W^T, rows t..t+n-1 sqrt(lambda) I and sqrt(lambda) W^T */
	for (int r = 0; r < t + n; r++)
		for (int j = 0; j < n; j++)
			A[(size_t)r * n + j] = r < t ? Xq[(size_t)r * n + j] : (r - t == j ? sqrt(lam) : 0.0);
	for (int r = 0; r < t + n; r++)
		for (int o = 0; o < out; o++) {
			double v = 0;
			if (r < t)
				for (int j = 0; j < n; j++)
					v += (double)Xo[(size_t)r * n + j] * W[(size_t)o * n + j];
			else
				v = sqrt(lam) * W[(size_t)o * n + (r - t)];
			B[(size_t)r * out + o] = v;
		}
	assert_int_equal(LAPACKE_dgels(LAPACK_ROW_MAJOR, 'N', t + n, n, out, A, n, B, out), 0);
	double emax = 0, escale = 0;
	for (int o = 0; o < out; o++)
		for (int j = 0; j < n; j++) {
			double m = B[(size_t)j * out + o]; /* M^T (n, out) in B's first n rows */
			emax = fmax(emax, fabs(Weff[(size_t)o * n + j] - m));
			escale = fmax(escale, fabs(m));
		}
	print_message("asym target vs damped least squares: max |diff| %.3g of %.3g\n", emax, escale);
	assert_true(emax <= 1e-5 * escale);
	/* Xo = Xq: D = 0 and the target is W itself, bit for bit */
	memset(D, 0, sizeof(double) * n * n);
	assert_int_equal(cloq_solver_asym_target(H, D, n, W, out, lr, Weff, &err), CLOQ_OK);
	assert_memory_equal(Weff, W, sizeof(float) * out * n);
	free(Xq), free(Xo), free(Df), free(W), free(Weff), free(work), free(H), free(D), free(Dref), free(A), free(B);
}


/* The blocked Cholesky factor and triangular inverse (cloq_chol.c) against LAPACK's: sizes below,
 * at and across the 256-column block (1, 255, 256, 257, 700), double and float; U^T U gives back A
 * and U^-1 U gives I; an indefinite matrix reports the first bad minor as LAPACK does; the lower
 * triangle is left alone. */
static void test_blocked_chol(void **state)
{
	(void)state;
	static const int sizes[] = {1, 255, 256, 257, 700};
	for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
		int n = sizes[si];
		size_t nn = (size_t)n * n;
		double *G = malloc(nn * sizeof *G), *A = malloc(nn * sizeof *A), *R = malloc(nn * sizeof *R);
		float *As = malloc(nn * sizeof *As), *Rs = malloc(nn * sizeof *Rs);
		assert_non_null(G);
		assert_non_null(A);
		assert_non_null(R);
		assert_non_null(As);
		assert_non_null(Rs);
		uint64_t x = 0x9e3779b97f4a7c15ull + (uint64_t)n;
		for (size_t i = 0; i < nn; i++) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			G[i] = (double)(x >> 11) / 9007199254740992.0 - 0.5;
		}
		/* A = G^T G / n + 0.1 I, stored column-major; -7 below the diagonal marks the lower triangle */
		cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, n, n, n, 1.0 / n, G, n, G, n, 0.0, A, n);
		for (int i = 0; i < n; i++)
			A[(size_t)i * n + i] += 0.1;
		for (int j = 0; j < n; j++)
			for (int i = j + 1; i < n; i++)
				A[(size_t)j * n + i] = -7.0;
		memcpy(R, A, nn * sizeof *R);
		for (size_t i = 0; i < nn; i++)
			As[i] = (float)A[i];
		memcpy(Rs, As, nn * sizeof *Rs);
		assert_int_equal(cloq_d_potrf_upper(n, A, n), 0);
		assert_int_equal(LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', n, R, n), 0);
		assert_int_equal(cloq_s_potrf_upper(n, As, n), 0);
		assert_int_equal(LAPACKE_spotrf(LAPACK_COL_MAJOR, 'U', n, Rs, n), 0);
		double dmax = 0, smax = 0, umax = 0;
		for (int j = 0; j < n; j++)
			for (int i = 0; i <= j; i++) {
				size_t k = (size_t)j * n + i;
				dmax = fmax(dmax, fabs(A[k] - R[k]));
				smax = fmax(smax, fabs((double)As[k] - Rs[k]));
				umax = fmax(umax, fabs(R[k]));
			}
		for (int j = 0; j < n; j++)
			for (int i = j + 1; i < n; i++) {
				assert_true(A[(size_t)j * n + i] == -7.0);
				assert_true(As[(size_t)j * n + i] == -7.0f);
			}
		assert_true(dmax <= 1e-12 * umax);
		assert_true(smax <= 1e-4 * umax);
		/* the inverse: U^-1 U = I */
		memcpy(R, A, nn * sizeof *R);
		assert_int_equal(cloq_d_trtri_upper(n, R, n), 0);
		assert_int_equal(cloq_s_trtri_upper(n, Rs, n), 0); /* Rs: LAPACK's float factor */
		double ierr = 0;
		for (int j = 0; j < n; j += (n > 64 ? 7 : 1))
			for (int i = 0; i < n; i++) {
				double sum = 0; /* (U^-1 U)_ij = sum_k Uinv_ik U_kj, k in [i, j] */
				for (int k = i; k <= j; k++)
					sum += R[(size_t)k * n + i] * A[(size_t)j * n + k];
				ierr = fmax(ierr, fabs(sum - (i == j)));
			}
		assert_true(ierr < 1e-10);
		for (int j = 0; j < n; j++)
			for (int i = j + 1; i < n; i++)
				assert_true(R[(size_t)j * n + i] == -7.0);
		free(G);
		free(A);
		free(R);
		free(As);
		free(Rs);
	}
	/* indefinite: the minor of order 300 fails in the second block, as LAPACK reports it */
	int n = 400;
	double *A = calloc((size_t)n * n, sizeof *A), *R = calloc((size_t)n * n, sizeof *R);
	assert_non_null(A);
	assert_non_null(R);
	for (int i = 0; i < n; i++)
		A[(size_t)i * n + i] = i == 299 ? -1.0 : 2.0;
	memcpy(R, A, (size_t)n * n * sizeof *A);
	assert_int_equal(cloq_d_potrf_upper(n, A, n), 300);
	assert_int_equal(LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', n, R, n), 300);
	free(A);
	free(R);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gram_accuracy),
		cmocka_unit_test(test_gram_stream_blocks),
		cmocka_unit_test(test_gram_panels_one_product),
		cmocka_unit_test(test_blocked_chol),
		cmocka_unit_test(test_asym_target),
		cmocka_unit_test(test_objective_identity_random),
		cmocka_unit_test(test_optimality_and_perturbations),
		cmocka_unit_test(test_chol_vs_eig_random),
		cmocka_unit_test(test_randomized_svd),
		cmocka_unit_test(test_alternating),
		cmocka_unit_test(test_edge_cases),
		cmocka_unit_test(test_factor_inplace_and_objective),
		cmocka_unit_test(test_alloc_faults),
		cmocka_unit_test(test_zero_init),
		cmocka_unit_test(test_real_weights),
		cmocka_unit_test(test_nf4_bnb_real),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
