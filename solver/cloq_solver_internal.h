/*
 * cloq_solver_internal.h - helpers shared by the solver's translation units (not a public API).
 */
#ifndef CLOQ_SOLVER_INTERNAL_H
#define CLOQ_SOLVER_INTERNAL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "cloq_solver.h"
#include "cloq_sys.h"

#include <omp.h>

/* Small LAPACK factorisations (the sketch's QR, the projection's SVD: a few hundred columns)
 * are sequences of many small BLAS calls; threaded, each is a parallel region whose barrier
 * waits for a thread that may have lost its core to other work. Their flops are a few percent
 * of a solve's, so they run on the calling thread (same sums whatever the job's thread count).
 * OpenBLAS's count is global: only touched outside parallel regions (inside one, OpenBLAS runs
 * single-threaded anyway). */
extern void openblas_set_num_threads(int);
extern int openblas_get_num_threads(void);
static inline int cloq_blas_serial_begin(void)
{
	if (omp_in_parallel())
		return 0;
	int n = openblas_get_num_threads();
	if (n > 1)
		openblas_set_num_threads(1);
	return n;
}
static inline void cloq_blas_serial_end(int n)
{
	if (n > 1)
		openblas_set_num_threads(n);
}

/* xoshiro256** seeded through splitmix64: a small, fast generator whose stream is fixed by the
 * seed alone (no hidden global state), so sketches and zero-init are reproducible. */
typedef struct cloq_rng {
	uint64_t s[4];
} cloq_rng;

static inline uint64_t cloq_splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline void cloq_rng_seed(cloq_rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = cloq_splitmix64(&seed);
}

static inline uint64_t cloq_rng_next(cloq_rng *r)
{
	uint64_t *s = r->s;
	uint64_t x = s[1] * 5;
	uint64_t res = ((x << 7) | (x >> 57)) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = (s[3] << 45) | (s[3] >> 19);
	return res;
}

/* Uniform in (0, 1): 53 random bits, never 0 (Box-Muller takes its log). */
static inline double cloq_rng_uniform(cloq_rng *r)
{
	return ((double)(cloq_rng_next(r) >> 11) + 0.5) * 0x1.0p-53;
}

/* Fill x[0..n) with i.i.d. N(0, 1) by Box-Muller (both outputs used). */
static inline void cloq_rng_gauss(cloq_rng *r, double *x, size_t n)
{
	for (size_t i = 0; i < n; i += 2) {
		double u1 = cloq_rng_uniform(r), u2 = cloq_rng_uniform(r);
		double rad = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
		x[i] = rad * cos(th);
		if (i + 1 < n)
			x[i + 1] = rad * sin(th);
	}
}

static inline double cloq_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Bytes for a (a x b) array of elements of size `el`, overflow-checked; 0 on overflow. */
static inline size_t cloq_bytes3(size_t a, size_t b, size_t el)
{
	size_t ab, n;
	if (!cloq_mul_ok(a, b, &ab) || !cloq_mul_ok(ab, el, &n))
		return 0;
	return n ? n : el;
}

/* Flip singular pairs so each left vector's largest-magnitude entry is positive. U (m, k),
 * V (n, k) column-major. */
void cloq_svd_fix_signs(double *U, int m, double *V, int n, int k);

/* Orthonormal Q (m, l) column-major float64 spanning the dominant l-dimensional range of
 * M (m, n) column-major float32: seeded Gaussian sketch + q float32 power iterations with QR,
 * re-orthonormalised in float64. Requires l <= min(m, n). */
int cloq_svd_range_f32(const float *M, int m, int n, int l, int q, uint64_t seed, double *Q,
		       cloq_err *err);

#endif /* CLOQ_SOLVER_INTERNAL_H */
