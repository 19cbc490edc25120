/*
 * cloq_quant_gptq.c - GPTQ (Frantar et al. 2022) as AutoGPTQ's fasterquant, blocked for speed.
 *
 * Per row r and column i (in processing order), with U the upper Cholesky factor of H^-1:
 *     q_i = quant(w_i);  e_i = (w_i - q_i) / U_ii;  w_j -= e_i * U_ij  for j > i.
 * Rows are independent given U, so the in-block work runs row-parallel on a row-major copy of W,
 * and the updates of columns beyond the current block are deferred and applied once per block as
 * one float32 GEMM (the "lazy batch" update): W[:, i2:] -= E[:, blk] @ U[blk, i2:].
 *
 * Where this differs from AutoGPTQ's code, and why:
 *  - AutoGPTQ computes a group's parameters from W[:, i:i+gs] of the *global* W, which misses the
 *    in-block updates when a group starts mid-block (group 64 < block 128). Here group parameters
 *    come from the current, fully updated weights (what the GPTQ method intends and what the
 *    unblocked reference computes): blocks are cut so that a group starting mid-block lies
 *    wholly inside the block (block rounded down to a multiple of gs), and when gs > block every
 *    group starts a block. block_size stays a performance knob only.
 *    autogptq_groups = 1 reproduces AutoGPTQ's code instead (blocks of exactly block_size, a
 *    group's parameters from a snapshot of the row taken when its block started; right-looking
 *    only), for comparisons with AutoGPTQ and references written from its code.
 *  - U = chol(H^-1, upper) is computed as R^-1 where H = R R^T with R upper, i.e. the lower
 *    Cholesky factor of the reversed H, reversed back: one spotrf + one strtri (2n^3/3 flops)
 *    instead of potrf + potri + potrf (5n^3/3), about 2.5x less time on the dominant step. In
 *    float32, as AutoGPTQ factors its float32 H (twice the float64 rate here: 5.6 s instead of
 *    11.8 s at n = 11008); the 1% damping dwarfs float32's rounding of the normalised H.
 *    The reference (cloq_quant_ref.c) keeps AutoGPTQ's route in float64; the tests compare.
 *  - H is divided by mean(diag H) first (GPTQ is invariant to scaling H), so that U fits float32
 *    whatever the scale of the activations.
 *  - Dead columns also get their off-diagonal H entries zeroed (a true Gram matrix has them zero
 *    already; this keeps an inconsistent input from breaking the factorisation).
 */
#include "cloq_quant_internal.h"

#include <math.h>
#include <string.h>
#include <time.h>

#include <cblas.h>
#include <lapacke.h>

#include "cloq_chol.h"
#include "cloq_sys.h"

/* ======== H^-1 factor ============================================================================ */
static void reverse_floats(float *a, size_t n)
{
	for (size_t i = 0, j = n - 1; i < j; i++, j--) {
		float t = a[i];
		a[i] = a[j];
		a[j] = t;
	}
}

int cloq_quant__hinv_upper_fast(float *H, int n)
{
	size_t N = (size_t)n;
	/* Row-major symmetric H read column-major and reversed is K = J H J. spotrf('U') gives
	 * K = V^T V; with L = V^T lower, H = (J L J)(J L J)^T = R R^T and U = R^-1 = J L^-1 J, which
	 * read back row-major is the reversed buffer of V^-1 (strtri 'U'). */
	reverse_floats(H, N * N);
	int info = cloq_s_potrf_upper(n, H, n);
	if (info != 0)
		return info > 0 ? info : n + 1;
	info = cloq_s_trtri_upper(n, H, n);
	if (info != 0)
		return info > 0 ? info : n + 1;
	reverse_floats(H, N * N);
	for (size_t i = 1; i < N; i++)
		memset(H + i * N, 0, i * sizeof *H);
	return 0;
}

/* The left-looking form of the same factor (see the banner): H = R R^T as above, then for each
 * block [b0, b1) of the partition (starts bstart[0..nb), bstart[nb] = n) the diagonal block
 * becomes U_bb = R_bb^-1 and the column block above it T_b = R[0:b0, b0:b1] U_bb. One spotrf
 * plus nb small strtri and trmm (n^2 B / 2 flops): about half the factor's work. */
int cloq_quant__hfactor_blocked(float *H, int n, const int *bstart, int nb)
{
	size_t N = (size_t)n;
	reverse_floats(H, N * N);
	int info = cloq_s_potrf_upper(n, H, n);
	if (info != 0)
		return info > 0 ? info : n + 1;
	reverse_floats(H, N * N); /* R, row-major upper; below the diagonal: what H left there */
	for (size_t i = 1; i < N; i++)
		memset(H + i * N, 0, i * sizeof *H);
	for (int b = 0; b < nb; b++) {
		int b0 = bstart[b], w = bstart[b + 1] - b0;
		float *Ubb = H + (size_t)b0 * N + b0;
		info = LAPACKE_strtri(LAPACK_ROW_MAJOR, 'U', 'N', w, Ubb, n);
		if (info != 0)
			return info > 0 ? b0 + info : n + 1;
		if (b0 > 0)
			cblas_strmm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, b0, w,
				    1.0f, Ubb, n, H + b0, n);
	}
	return 0;
}

/* ======== shared set-up =========================================================================== */
/* Build the permuted, dead-column-handled, mean-diag-normalised, damped H into Hd (float32: the
 * factorisation runs in float32 as AutoGPTQ's does; entries are O(1) after the normalisation).
 * Returns the number of dead columns; *mdiag gets mean(diag H) after dead diag := 1 (AutoGPTQ's
 * damp base). */
static int build_h(const double *H, int n, const int *perm, double damp_rel, float *Hd,
		   double *mdiag_out)
{
	size_t N = (size_t)n;
	int ndead = 0;
	double sum = 0.0;
	for (size_t j = 0; j < N; j++) {
		double d = H[j * N + j];
		if (d == 0.0) {
			ndead++;
			d = 1.0;
		}
		sum += d;
	}
	double mdiag = sum / (double)n, inv = 1.0 / mdiag;
#pragma omp parallel for schedule(static) if (N > 256)
	for (size_t i = 0; i < N; i++) {
		size_t pi = (size_t)perm[i];
		int dead_i = H[pi * N + pi] == 0.0;
		const double *src = H + pi * N;
		float *dst = Hd + i * N;
		for (size_t j = 0; j < N; j++) {
			size_t pj = (size_t)perm[j];
			double v = src[pj];
			if (dead_i || H[pj * N + pj] == 0.0)
				v = 0.0;
			dst[j] = (float)(v * inv);
		}
		dst[i] = (float)((dead_i ? 1.0 : src[pi]) * inv + damp_rel);
	}
	*mdiag_out = mdiag;
	return ndead;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double attempt_damp(double damp, int k)
{
	if (k == 0)
		return damp;
	return (damp > 1e-6 ? damp : 1e-6) * pow(10.0, k);
}

#define GPTQ_MAX_ESCALATIONS 4

/* The effective block (see the banner) and the end of the block starting at i1. */
static int eff_block(const cloq_quant_cfg *c, int cols)
{
	int blk = c->block_size;
	if (c->stale)
		return blk > cols ? cols : blk;
	if (!c->static_groups && c->gs <= blk)
		blk = (blk / c->gs) * c->gs;
	return blk > cols ? cols : blk;
}

static int block_end(const cloq_quant_cfg *c, int blk, int cols, int i1)
{
	int i2 = i1 + blk;
	if (!c->static_groups && !c->stale && c->gs > blk) { /* every group starts a block */
		int next = (i1 / c->gs + 1) * c->gs;
		if (next < i2)
			i2 = next;
	}
	return i2 > cols ? cols : i2;
}

/* Left-looking needs each group's weights current when it starts, i.e. inside its block: true
 * unless groups are wider than blocks (and not static). It saves strtri's n^3/3 flops but
 * re-packs the finished columns for every block's GEMM (~rows n^2 / 2B floats per linear): a win
 * for wide factors (7B-geometry convert, n = 11008: -2.4 s per down_proj), a small loss at
 * n = 4096 with 1-3 linears of 4096-11008 rows sharing the factor (+0.1-0.3 s each). */
int cloq_quant__left_min_cols = 8192;
static int left_looking(const cloq_quant_cfg *c, int blk, int cols)
{
	return cols >= cloq_quant__left_min_cols && !c->stale && (c->static_groups || c->gs <= blk);
}

/* ======== the factor, shareable by the linears that read the same input ======================= */
struct cloq_quant_hinv {
	int n, act_order;
	int *perm;           /* (n) original column at processing position j */
	unsigned char *dead; /* (n) diag H == 0, by original column */
	/* (n, n) row-major, upper, of the permuted, normalised H: left-looking form when nb > 0
	 * (blocks bstart[0..nb], cloq_quant__hfactor_blocked), else U = chol(H'^-1) */
	float *U;
	int nb, *bstart;
	int blk, gs, static_groups, stale; /* the partition's inputs, checked by cloq_quant_gptq_hinv */
	double damp_used, t_factor_s;
	int escalations, ndead;
};

void cloq_quant_hinv_free(cloq_quant_hinv *h)
{
	if (!h)
		return;
	cloq_free(h->U);
	cloq_free(h->bstart);
	cloq_free(h->dead);
	cloq_free(h->perm);
	cloq_free(h);
}

int cloq_quant_hinv_create(const double *H, int cols, const cloq_quant_params *p,
			   cloq_quant_hinv **out, cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_quant_cfg c;
	cloq_quant_hinv *h = NULL;
	unsigned char *hbuf = NULL;
	size_t N = (size_t)cols, nn;
	double t0 = now_s();

	*out = NULL;
	CLOQ_TRY(cloq_quant__cfg(p, 1, cols, &c, err));
	CLOQ_FAIL_IF(!H, err, CLOQ_EINPUT, "gptq: no H");
	CLOQ_FAIL_IF(!cloq_mul_ok(N, N, &nn) || !cloq_mul_ok(nn, sizeof(float), &nn), err,
		     CLOQ_EINPUT, "gptq: H (%d x %d) too large", cols, cols);
	CLOQ_TRY(cloq_quant__check_h(H, cols, err));
	h = cloq_calloc(1, sizeof *h);
	CLOQ_FAIL_IF(!h, err, CLOQ_EIO, "gptq: out of memory for the H factor");
	h->n = cols;
	h->act_order = c.act_order;
	h->perm = cloq_malloc(N * sizeof *h->perm);
	h->dead = cloq_malloc(N);
	hbuf = cloq_aligned_alloc(64, nn);
	CLOQ_FAIL_IF(!h->perm || !h->dead || !hbuf, err, CLOQ_EIO,
		     "gptq: out of memory for the H factor (%d x %d)", cols, cols);
	CLOQ_TRY(cloq_quant__perm(H, cols, c.act_order, h->perm, err));
	for (size_t j = 0; j < N; j++)
		h->dead[j] = H[j * N + j] == 0.0;

	h->blk = eff_block(&c, cols);
	h->gs = c.gs;
	h->static_groups = c.static_groups;
	h->stale = c.stale;
	if (left_looking(&c, h->blk, cols)) {
		for (int i1 = 0; i1 < cols; i1 = block_end(&c, h->blk, cols, i1))
			h->nb++;
		h->bstart = cloq_malloc(((size_t)h->nb + 1) * sizeof *h->bstart);
		CLOQ_FAIL_IF(!h->bstart, err, CLOQ_EIO, "gptq: out of memory");
		int b = 0;
		for (int i1 = 0; i1 < cols; i1 = block_end(&c, h->blk, cols, i1))
			h->bstart[b++] = i1;
		h->bstart[b] = cols;
	}

	/* the factor, escalating the damping when H is not numerically SPD */
	float *Hd = (float *)(void *)hbuf;
	double damp = 0.0, mdiag = 1.0;
	int k, fact = -1;
	for (k = 0; k <= GPTQ_MAX_ESCALATIONS; k++) {
		damp = attempt_damp(c.damp, k);
		h->ndead = build_h(H, cols, h->perm, damp, Hd, &mdiag);
		fact = h->nb ? cloq_quant__hfactor_blocked(Hd, cols, h->bstart, h->nb)
			     : cloq_quant__hinv_upper_fast(Hd, cols);
		for (size_t i = 0; fact == 0 && i < N; i++)
			for (size_t j = i; j < N; j++)
				if (!isfinite(Hd[i * N + j]) || (j == i && !(Hd[i * N + i] > 0.0f))) {
					fact = 1;
					break;
				}
		if (fact == 0)
			break;
	}
	CLOQ_FAIL_IF(fact != 0, err, CLOQ_EINPUT,
		     "gptq: H (%d x %d) is not positive definite even with damping %g x mean diag",
		     cols, cols, damp);
	h->U = Hd;
	hbuf = NULL;
	h->damp_used = damp;
	h->escalations = k;
	h->t_factor_s = now_s() - t0;
	*out = h;
	return CLOQ_OK;
fail:
	cloq_free(hbuf);
	cloq_quant_hinv_free(h);
	return rc;
}

/* ======== GPTQ ==================================================================================== */
int cloq_quant_gptq(const float *W, const double *H, int rows, int cols, const cloq_quant_params *p,
		    cloq_qtensor *out, cloq_err *err)
{
	return cloq_quant_gptq_ex(W, H, rows, cols, p, out, NULL, err);
}

int cloq_quant_gptq_ex(const float *W, const double *H, int rows, int cols,
		       const cloq_quant_params *p, cloq_qtensor *out, cloq_quant_gptq_info *info,
		       cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_quant_cfg c;
	cloq_quant_hinv *h = NULL;
	memset(out, 0, sizeof *out);
	/* cheap checks first: a bad W must not cost an O(cols^3) factorisation */
	CLOQ_TRY(cloq_quant__cfg(p, rows, cols, &c, err));
	CLOQ_FAIL_IF(!W, err, CLOQ_EINPUT, "gptq: no W");
	CLOQ_TRY(cloq_quant__check_w(W, rows, cols, err));
	CLOQ_TRY(cloq_quant_hinv_create(H, cols, p, &h, err));
	CLOQ_TRY(cloq_quant_gptq_hinv(W, rows, h, p, out, info, err));
fail:
	cloq_quant_hinv_free(h);
	return rc;
}

/*
 * One row's columns [i1, i2) of a block, in processing order: group parameters where a group
 * starts, code, error e_i = (w_i - q_i) / U_ii, and the in-block update w_j -= e_i U_ij. wb holds
 * the row's current block weights (wb[i - i1]); F's rows give U_ij within the block (U itself or
 * the blocked factor's U_bb). Optional outputs: e (e[i - i1], right-looking's lazy update) and
 * drow (drow[i] = w_orig - deq(q), left-looking's D; w_orig from Wrow, dead columns 0).
 * *loss gets sum (w_i - q_i)^2 / U_ii^2. Returns -1 when a group's parameters failed, else 0.
 */
static inline int quant_row_block(float *wb, int i1, int i2, const cloq_quant_hinv *h,
				  const cloq_quant_cfg *c, cloq_qtensor *out, size_t r, const float *Wrow,
				  const float *snap, float *e, float *drow, double *loss)
{
	const size_t N = (size_t)h->n;
	float *sc = out->scale + r * c->ngroups;
	int32_t *zp = out->zero + r * c->ngroups;
	uint8_t *q = out->q + r * N;
	double l = 0.0;
	for (int i = i1; i < i2; i++) {
		int g;
		if (c->static_groups) {
			g = h->perm[i] / c->gs;
		} else {
			g = i / c->gs;
			if (i % c->gs == 0) {
				int m = h->n - i < c->gs ? h->n - i : c->gs;
				/* snap: the row as it was when the block started (AutoGPTQ) */
				if (cloq_quant__params((snap ? snap : wb) + (i - i1), m, c, &sc[g], &zp[g],
						       (int)r, g, NULL) != CLOQ_OK)
					return -1;
			}
		}
		float x = wb[i - i1], s = sc[g];
		int32_t z = zp[g];
		int qc = cloq_quant__code(x, s, z, c->maxq);
		float dq = cloq_quant__deq(qc, s, z);
		size_t pi = (size_t)h->perm[i];
		q[pi] = (uint8_t)qc;
		if (drow)
			drow[i] = (h->dead[pi] ? 0.0f : Wrow[pi]) - dq;
		const float *u = h->U + (size_t)i * N;
		float d = u[i], er = (x - dq) / d;
		l += (double)(x - dq) * (double)(x - dq) / ((double)d * (double)d);
		if (e)
			e[i - i1] = er;
		float *wj = wb - i1;
		for (int j = i + 1; j < i2; j++)
			wj[j] -= er * u[j];
	}
	*loss += 0.5 * l;
	return 0;
}

/*
 * The column loop, left-looking (the factor from cloq_quant__hfactor_blocked). With D = W - Q
 * over the columns done so far, the weights of block b as the right-looking loop would have them
 * when it reaches b are W_b + D[:, 0:b0] T_b (from W - Q = E U and R U = I); so each block is
 * one float32 GEMM of the finished columns instead of an update of all later ones, and no
 * inverse of R is ever formed. Wcur: (rows, blk) the current block; D: (rows, n) row-major.
 * Returns the first row whose group parameters failed, or -1; *fail_i1 is the last block's start
 * (the failing block's, whose current weights Wcur still holds).
 */
static int gptq_left(const float *W, int rows, const cloq_quant_hinv *h, const cloq_quant_cfg *cp,
		     float *D, float *Wcur, double *loss, cloq_qtensor *out, int *fail_i1)
{
	const cloq_quant_cfg c = *cp;
	const int cols = h->n, blk = h->blk;
	const size_t N = (size_t)cols, R = (size_t)rows;
	const int *perm = h->perm;
	const unsigned char *dead = h->dead;
	const float *F = h->U;
	int bad_row = -1;
	for (int b = 0; b < h->nb && bad_row < 0; b++) {
		int i1 = h->bstart[b], i2 = h->bstart[b + 1], w = i2 - i1;
#pragma omp parallel for schedule(static) if (R * (size_t)w > 65536)
		for (size_t r = 0; r < R; r++)
			for (int j = 0; j < w; j++) {
				size_t pj = (size_t)perm[i1 + j];
				Wcur[r * (size_t)blk + j] = dead[pj] ? 0.0f : W[r * N + pj];
			}
		if (i1 > 0)
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, w, i1, 1.0f, D, cols,
				    F + i1, cols, 1.0f, Wcur, blk);
#pragma omp parallel for schedule(dynamic, 8) if (R * (size_t)w > 16384)
		for (size_t r = 0; r < R; r++)
			if (quant_row_block(Wcur + r * (size_t)blk, i1, i2, h, &c, out, r, W + r * N, NULL,
					    NULL, D + r * N, &loss[r]) != 0) {
#pragma omp critical(cloq_quant_gptq_bad)
				if (bad_row < 0 || (int)r < bad_row)
					bad_row = (int)r;
			}
		*fail_i1 = i1;
	}
	return bad_row;
}

int cloq_quant_gptq_hinv(const float *W, int rows, const cloq_quant_hinv *h,
			 const cloq_quant_params *p, cloq_qtensor *out, cloq_quant_gptq_info *info,
			 cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_quant_cfg c;
	float *Wp = NULL, *Err = NULL, *row = NULL, *Snap = NULL;
	double *loss = NULL;
	size_t rn;
	double t1 = now_s();

	memset(out, 0, sizeof *out);
	CLOQ_FAIL_IF(!h || !W, err, CLOQ_EINPUT, "gptq: no W or H factor");
	int cols = h->n;
	size_t N = (size_t)cols, R = (size_t)rows;
	const int *perm = h->perm;
	const unsigned char *dead = h->dead;
	const float *U = h->U;
	CLOQ_TRY(cloq_quant__cfg(p, rows, cols, &c, err));
	CLOQ_FAIL_IF(c.act_order != h->act_order, err, CLOQ_EINPUT,
		     "gptq: act_order %d but the H factor was made with act_order %d", c.act_order,
		     h->act_order);
	CLOQ_FAIL_IF(!cloq_mul_ok(R, N, &rn) || !cloq_mul_ok(rn, sizeof(float), &rn), err,
		     CLOQ_EINPUT, "gptq: shape (%d, %d) too large", rows, cols);
	CLOQ_TRY(cloq_quant__check_w(W, rows, cols, err));

	/* Effective block: see the banner. */
	int blk = eff_block(&c, cols);
	CLOQ_FAIL_IF(blk != h->blk || c.gs != h->gs || c.static_groups != h->static_groups ||
		     c.stale != h->stale, err,
		     CLOQ_EINPUT, "gptq: block %d, group %d, static %d, autogptq groups %d but the H "
		     "factor was made for block %d, group %d, static %d, autogptq groups %d", blk, c.gs,
		     c.static_groups, c.stale, h->blk, h->gs, h->static_groups, h->stale);
	size_t snapw = (size_t)blk + (size_t)c.gs;

	Wp = cloq_aligned_alloc(64, rn);
	Err = cloq_aligned_alloc(64, R * (size_t)blk * sizeof *Err);
	loss = cloq_calloc(R, sizeof *loss);
	row = cloq_malloc(N * sizeof *row);
	if (c.stale)
		Snap = cloq_malloc(R * snapw * sizeof *Snap);
	CLOQ_FAIL_IF(!Wp || !Err || !loss || !row || (c.stale && !Snap), err, CLOQ_EIO,
		     "gptq: out of memory for a (%d, %d) weight", rows, cols);
	CLOQ_TRY(cloq_qtensor_alloc(out, rows, cols, c.bits, c.gs, err));

	/* ---- working copy of W in processing order, dead columns zeroed (right-looking only;
	 * left-looking fills Wp with W - Q as it goes) ---- */
	if (!h->nb) {
#pragma omp parallel for schedule(static) if (R * N > 65536)
		for (size_t r = 0; r < R; r++) {
			const float *src = W + r * N;
			float *dst = Wp + r * N;
			for (size_t j = 0; j < N; j++) {
				size_t pj = (size_t)perm[j];
				dst[j] = dead[pj] ? 0.0f : src[pj];
			}
		}
	}
	if (c.static_groups) { /* groups fixed up front on the original W, natural order */
		for (size_t r = 0; r < R; r++) {
			for (size_t j = 0; j < N; j++)
				row[j] = dead[j] ? 0.0f : W[r * N + j];
			for (int g = 0; g < c.ngroups; g++) {
				int j0 = g * c.gs, m = cols - j0 < c.gs ? cols - j0 : c.gs;
				CLOQ_TRY(cloq_quant__params(row + j0, m, &c,
							    &out->scale[r * c.ngroups + g],
							    &out->zero[r * c.ngroups + g], (int)r, g,
							    err));
			}
		}
	}

	/* ---- blocks ---- */
	int bad_row = -1, fail_i1 = 0;
	if (h->nb) {
		bad_row = gptq_left(W, rows, h, &c, Wp, Err, loss, out, &fail_i1);
		goto blocks_done;
	}
	for (int i1 = 0; i1 < cols && bad_row < 0;) {
		int i2 = block_end(&c, blk, cols, i1);
#pragma omp parallel for schedule(dynamic, 8) if (R * (size_t)(i2 - i1) > 16384)
		for (size_t r = 0; r < R; r++) {
			float *snap = NULL;
			if (Snap) {
				size_t m = N - (size_t)i1 < snapw ? N - (size_t)i1 : snapw;
				snap = Snap + r * snapw;
				memcpy(snap, Wp + r * N + i1, m * sizeof *snap);
			}
			if (quant_row_block(Wp + r * N + i1, i1, i2, h, &c, out, r, NULL, snap,
					    Err + r * (size_t)blk, NULL, &loss[r]) != 0) {
#pragma omp critical(cloq_quant_gptq_bad)
				if (bad_row < 0 || (int)r < bad_row)
					bad_row = (int)r;
			}
		}
		if (bad_row < 0 && i2 < cols)
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, cols - i2,
				    i2 - i1, -1.0f, Err, blk, U + (size_t)i1 * N + i2, cols, 1.0f,
				    Wp + i2, cols);
		i1 = i2;
	}
blocks_done:
	if (bad_row >= 0 && h->nb) { /* the failing block's groups again, for the message */
		for (int j0 = fail_i1; j0 < cols && j0 < fail_i1 + blk; j0 += c.gs) {
			int m = cols - j0 < c.gs ? cols - j0 : c.gs;
			CLOQ_TRY(cloq_quant__params(Err + (size_t)bad_row * blk + (j0 - fail_i1), m, &c,
						    &out->scale[0], &out->zero[0], bad_row, j0 / c.gs, err));
		}
		CLOQ_FAIL_IF(1, err, CLOQ_EINPUT, "gptq: row %d failed", bad_row);
	}
	if (bad_row >= 0) {
		for (int g = 0; g < c.ngroups; g++) {
			int j0 = g * c.gs, m = cols - j0 < c.gs ? cols - j0 : c.gs;
			CLOQ_TRY(cloq_quant__params(Wp + (size_t)bad_row * N + j0, m, &c, &out->scale[0],
						    &out->zero[0], bad_row, g, err));
		}
		CLOQ_FAIL_IF(1, err, CLOQ_EINPUT, "gptq: row %d failed", bad_row);
	}

	if (c.static_groups)
		for (int j = 0; j < cols; j++)
			out->g_idx[j] = j / c.gs;
	else
		for (int j = 0; j < cols; j++)
			out->g_idx[perm[j]] = j / c.gs;

	if (info) {
		info->damp_used = h->damp_used;
		info->damp_escalations = h->escalations;
		info->dead_cols = h->ndead;
		info->loss = 0.0;
		for (size_t r = 0; r < R; r++)
			info->loss += loss[r];
		info->t_factor_s = h->t_factor_s;
		info->t_quant_s = now_s() - t1;
	}
	rc = CLOQ_OK;
fail:
	if (rc != CLOQ_OK)
		cloq_qtensor_free(out);
	cloq_free(Snap);
	cloq_free(row);
	cloq_free(loss);
	cloq_free(Err);
	cloq_free(Wp);
	return rc;
}
