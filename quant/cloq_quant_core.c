/*
 * cloq_quant_core.c - the AutoGPTQ quantizer (find_params / quantize), RTN, dequantization, the
 * calibrated error, fp16 rounding, parameter and input validation shared by the quantizers.
 */
#include "cloq_quant_internal.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "cloq_dtype.h"
#include "cloq_sys.h"

/* ======== fp16 ================================================================================ */
/* A local helper (io/ has its own for files): quant/ needs it to round scales exactly as the
 * exported fp16 tensor will hold them. */
/* fp16 conversions are io/'s (exhaustively tested there): quant/ keeps these two names as its
 * own vocabulary, so packing and scale rounding read naturally. */
uint16_t cloq_quant_f32_to_f16(float f) { return cloq_f32_to_f16_ref(f); }

float cloq_quant_f16_to_f32(uint16_t h) { return cloq_f16_to_f32_ref(h); }

/* ======== parameters and validation ============================================================= */
cloq_quant_params cloq_quant_default_params(void)
{
	cloq_quant_params p = {
		.bits = 4, .group_size = 64, .sym = 0, .act_order = 0, .static_groups = 0,
		.block_size = 128, .damp = 0.01, .fp16_scales = 1, .v1_zeros = 0,
	};
	return p;
}

int cloq_quant__cfg(const cloq_quant_params *p, int rows, int cols, cloq_quant_cfg *c,
		    cloq_err *err)
{
	if (!p)
		return cloq_err_set(err, CLOQ_EINPUT, "quant: no parameters");
	if (rows < 1 || cols < 1)
		return cloq_err_set(err, CLOQ_EINPUT, "quant: bad shape (%d, %d)", rows, cols);
	if (p->bits < 2 || p->bits > 8)
		return cloq_err_set(err, CLOQ_EINPUT, "quant: bits %d not in 2..8", p->bits);
	if (p->group_size == 0 || p->group_size < -1)
		return cloq_err_set(err, CLOQ_EINPUT, "quant: group size %d (use >= 1 or -1)",
				    p->group_size);
	if (p->block_size < 1)
		return cloq_err_set(err, CLOQ_EINPUT, "quant: block size %d < 1", p->block_size);
	if (!(p->damp >= 0.0) || !isfinite(p->damp))
		return cloq_err_set(err, CLOQ_EINPUT, "quant: damping %g not finite and >= 0", p->damp);
	memset(c, 0, sizeof *c);
	c->bits = p->bits;
	c->maxq = (1 << p->bits) - 1;
	c->gs = (p->group_size < 0 || p->group_size >= cols) ? cols : p->group_size;
	c->ngroups = (cols + c->gs - 1) / c->gs;
	c->sym = !!p->sym;
	c->fp16 = !!p->fp16_scales;
	c->act_order = !!p->act_order;
	c->static_groups = !!p->static_groups;
	c->stale = !p->static_groups && p->autogptq_groups;
	c->block_size = p->block_size;
	c->damp = p->damp;
	c->v1_zeros = !!p->v1_zeros;
	return CLOQ_OK;
}

int cloq_quant__check_w(const float *W, int rows, int cols, cloq_err *err)
{
	size_t n = (size_t)rows * (size_t)cols;
	for (size_t i = 0; i < n; i++)
		if (!isfinite(W[i]))
			return cloq_err_set(err, CLOQ_EINPUT, "quant: weight %s at row %zu, column %zu",
					    isnan(W[i]) ? "NaN" : "Inf", i / (size_t)cols,
					    i % (size_t)cols);
	return CLOQ_OK;
}

int cloq_quant__check_h(const double *H, int n, cloq_err *err)
{
	size_t N = (size_t)n;
	double maxdiag = 0.0;
	for (size_t i = 0; i < N; i++) {
		double d = H[i * N + i];
		if (!isfinite(d) || d < 0.0)
			return cloq_err_set(err, CLOQ_EINPUT,
					    "quant: H diagonal (%zu, %zu) = %g is not finite and >= 0",
					    i, i, d);
		if (d > maxdiag)
			maxdiag = d;
	}
	/* Symmetry to a relative tolerance: accumulation order may differ between triangles. Tiled
	 * so that the transposed read stays in cache. */
	const size_t T = 64;
	for (size_t i0 = 0; i0 < N; i0 += T)
		for (size_t j0 = i0; j0 < N; j0 += T)
			for (size_t i = i0; i < i0 + T && i < N; i++)
				for (size_t j = (j0 > i ? j0 : i); j < j0 + T && j < N; j++) {
					double a = H[i * N + j], b = H[j * N + i];
					if (!isfinite(a) || !isfinite(b))
						return cloq_err_set(err, CLOQ_EINPUT,
								    "quant: H (%zu, %zu) is not finite",
								    isfinite(a) ? j : i, isfinite(a) ? i : j);
					if (fabs(a - b) > 1e-6 * (fabs(a) + fabs(b)) + 1e-12 * maxdiag)
						return cloq_err_set(err, CLOQ_EINPUT,
								    "quant: H not symmetric at (%zu, %zu): %g vs %g",
								    i, j, a, b);
				}
	return CLOQ_OK;
}

/* ======== the quantizer ========================================================================= */
/* A raw step s for the range [lo, hi] made usable: never Inf, 0 or NaN; rounded to fp16 when asked. */
static int finish_scale(float s, float lo, float hi, const cloq_quant_cfg *c, int r, int g, float *out,
			cloq_err *err)
{
	if (isinf(s)) /* the range overflowed float32 although both ends are finite */
		s = (float)(((double)hi - (double)lo) / c->maxq);
	if (!(s > 0.0f)) /* denormal range that underflowed: any tiny positive step will do */
		s = FLT_MIN;
	if (c->fp16) {
		float s16 = cloq_quant_f16_to_f32(cloq_quant_f32_to_f16(s));
		if (isinf(s16))
			return cloq_err_set(err, CLOQ_EINPUT,
					    "quant: row %d group %d: scale %g exceeds the fp16 range "
					    "(weights up to %g); quantize with fp16_scales = 0",
					    r, g, (double)s, (double)(hi > -lo ? hi : -lo));
		if (s16 == 0.0f)
			s16 = 0x1p-24f; /* smallest fp16 subnormal */
		s = s16;
	}
	*out = s;
	return CLOQ_OK;
}

int cloq_quant__params(const float *x, int n, const cloq_quant_cfg *c, float *scale,
		       int32_t *zero, int r, int g, cloq_err *err)
{
	float xmin = 0.0f, xmax = 0.0f;
	for (int i = 0; i < n; i++) {
		if (!isfinite(x[i])) /* RTN checked its input: only a diverged GPTQ update gets here */
			return cloq_err_set(err, CLOQ_EINPUT,
					    "quant: row %d group %d: non-finite weight %g", r, g,
					    (double)x[i]);
		if (x[i] < xmin)
			xmin = x[i];
		if (x[i] > xmax)
			xmax = x[i];
	}
	if (c->sym) {
		if (-xmin > xmax)
			xmax = -xmin;
		if (xmin < 0.0f)
			xmin = -xmax;
	}
	if (xmin == 0.0f && xmax == 0.0f) { /* AutoGPTQ's guard: all-zero group */
		xmin = -1.0f;
		xmax = 1.0f;
	}
	float s;
	int rc = finish_scale((xmax - xmin) / (float)c->maxq, xmin, xmax, c, r, g, &s, err);
	if (rc)
		return rc;
	if (c->sym) {
		*scale = s;
		*zero = (c->maxq + 1) / 2;
		return CLOQ_OK;
	}
	float z = rintf(-xmin / s);
	if (z < 0.0f)
		z = 0.0f;
	if (z > (float)c->maxq) /* only when an fp16 scale rounded down at the very edge */
		z = (float)c->maxq;
	if (z == 0.0f && c->v1_zeros) {
		/* GPTQ v1 cannot store zero 0: the finest grid with zero 1 that still spans the group,
		 * s (q - 1) for q in [0, maxq], i.e. [-s, (maxq - 1) s] with xmax on it (see the header).
		 * z == 0 means -xmin < s / 2 and xmax > 0 (an all-zero group has z = round(maxq / 2)). */
		rc = finish_scale(xmax / (float)(c->maxq - 1), xmin, xmax, c, r, g, &s, err);
		if (rc)
			return rc;
		z = 1.0f;
	}
	*scale = s;
	*zero = (int32_t)z;
	return CLOQ_OK;
}

/* ======== qtensor =============================================================================== */
int cloq_qtensor_alloc(cloq_qtensor *t, int rows, int cols, int bits, int group_size, cloq_err *err)
{
	int rc = CLOQ_OK;
	memset(t, 0, sizeof *t);
	CLOQ_FAIL_IF(rows < 1 || cols < 1, err, CLOQ_EINPUT, "quant: bad shape (%d, %d)", rows, cols);
	CLOQ_FAIL_IF(bits < 1 || bits > 8, err, CLOQ_EINPUT, "quant: bits %d not in 1..8", bits);
	int gs = (group_size <= 0 || group_size >= cols) ? cols : group_size;
	int ng = (cols + gs - 1) / gs;
	size_t nq, ns;
	CLOQ_FAIL_IF(!cloq_mul_ok((size_t)rows, (size_t)cols, &nq) ||
		     !cloq_mul_ok((size_t)rows, (size_t)ng, &ns), err, CLOQ_EINPUT,
		     "quant: shape (%d, %d) too large", rows, cols);
	t->rows = rows;
	t->cols = cols;
	t->bits = bits;
	t->group_size = gs;
	t->ngroups = ng;
	t->q = cloq_calloc(nq, 1);
	t->scale = cloq_calloc(ns, sizeof *t->scale);
	t->zero = cloq_calloc(ns, sizeof *t->zero);
	t->g_idx = cloq_calloc((size_t)cols, sizeof *t->g_idx);
	CLOQ_FAIL_IF(!t->q || !t->scale || !t->zero || !t->g_idx, err, CLOQ_EIO,
		     "quant: out of memory for a (%d, %d) quantized tensor", rows, cols);
	return CLOQ_OK;
fail:
	cloq_qtensor_free(t);
	return rc;
}

void cloq_qtensor_free(cloq_qtensor *t)
{
	if (!t)
		return;
	cloq_free(t->q);
	cloq_free(t->scale);
	cloq_free(t->zero);
	cloq_free(t->g_idx);
	cloq_free(t->absmax);
	cloq_free(t->qabsmax);
	cloq_free(t->absmax2);
	memset(t, 0, sizeof *t);
}

/* ======== RTN =================================================================================== */
int cloq_quant_rtn(const float *W, int rows, int cols, const cloq_quant_params *p,
		   cloq_qtensor *out, cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_quant_cfg c;
	memset(out, 0, sizeof *out);
	CLOQ_TRY(cloq_quant__cfg(p, rows, cols, &c, err));
	CLOQ_TRY(cloq_quant__check_w(W, rows, cols, err));
	CLOQ_TRY(cloq_qtensor_alloc(out, rows, cols, c.bits, c.gs, err));
	for (int j = 0; j < cols; j++)
		out->g_idx[j] = j / c.gs;
	int bad_row = -1;
#pragma omp parallel for schedule(static) if ((size_t)rows * (size_t)cols > 65536)
	for (int r = 0; r < rows; r++) {
		const float *w = W + (size_t)r * cols;
		uint8_t *q = out->q + (size_t)r * cols;
		for (int g = 0; g < c.ngroups; g++) {
			int j0 = g * c.gs, n = cols - j0 < c.gs ? cols - j0 : c.gs;
			float s;
			int32_t z;
			if (cloq_quant__params(w + j0, n, &c, &s, &z, r, g, NULL) != CLOQ_OK) {
#pragma omp critical(cloq_quant_rtn_bad)
				if (bad_row < 0 || r < bad_row)
					bad_row = r;
				break;
			}
			out->scale[(size_t)r * c.ngroups + g] = s;
			out->zero[(size_t)r * c.ngroups + g] = z;
			for (int j = j0; j < j0 + n; j++)
				q[j] = (uint8_t)cloq_quant__code(w[j], s, z, c.maxq);
		}
	}
	if (bad_row >= 0) { /* redo the failing row serially for its message */
		for (int g = 0; g < c.ngroups; g++) {
			int j0 = g * c.gs, n = cols - j0 < c.gs ? cols - j0 : c.gs;
			float s;
			int32_t z;
			CLOQ_TRY(cloq_quant__params(W + (size_t)bad_row * cols + j0, n, &c, &s, &z,
						    bad_row, g, err));
		}
	}
	return CLOQ_OK;
fail:
	cloq_qtensor_free(out);
	return rc;
}

/* ======== dequantization and the calibrated error ================================================ */
void cloq_quant_dequant(const cloq_qtensor *q, float *W)
{
	if (q->nf_block > 0) {
		cloq_quant__nf_dequant(q, W);
		return;
	}
	int rows = q->rows, cols = q->cols, ng = q->ngroups;
#pragma omp parallel for schedule(static) if ((size_t)rows * (size_t)cols > 65536)
	for (int r = 0; r < rows; r++) {
		const float *s = q->scale + (size_t)r * ng;
		const int32_t *z = q->zero + (size_t)r * ng;
		const uint8_t *c = q->q + (size_t)r * cols;
		float *w = W + (size_t)r * cols;
		for (int j = 0; j < cols; j++) {
			int g = q->g_idx[j];
			w[j] = cloq_quant__deq(c[j], s[g], z[g]);
		}
	}
}

int cloq_quant_hloss(const float *W, const float *Wdeq, const double *H, int rows, int cols,
		     double *out, cloq_err *err)
{
	int rc = CLOQ_OK;
	const int chunk = 256;
	size_t n = (size_t)cols, cr = (size_t)(rows < chunk ? rows : chunk), sz;
	double *E = NULL, *T = NULL;
	CLOQ_FAIL_IF(rows < 1 || cols < 1, err, CLOQ_EINPUT, "quant: bad shape (%d, %d)", rows, cols);
	CLOQ_FAIL_IF(!cloq_mul_ok(cr, n, &sz) || !cloq_mul_ok(sz, sizeof(double), &sz), err,
		     CLOQ_EINPUT, "quant: shape (%d, %d) too large", rows, cols);
	E = cloq_aligned_alloc(64, sz);
	T = cloq_aligned_alloc(64, sz);
	CLOQ_FAIL_IF(!E || !T, err, CLOQ_EIO, "quant: out of memory for the calibrated error");
	double acc = 0.0;
	for (int r0 = 0; r0 < rows; r0 += chunk) {
		int m = rows - r0 < chunk ? rows - r0 : chunk;
		for (size_t i = 0; i < (size_t)m * n; i++)
			E[i] = (double)W[(size_t)r0 * n + i] - (double)Wdeq[(size_t)r0 * n + i];
		/* T = E H; tr(E H E^T) = sum E .* T */
		cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, cols, cols, 1.0, E, cols,
			    H, cols, 0.0, T, cols);
		for (size_t i = 0; i < (size_t)m * n; i++)
			acc += E[i] * T[i];
	}
	*out = acc;
fail:
	cloq_free(T);
	cloq_free(E);
	return rc;
}

/* ======== act-order permutation ================================================================== */
struct perm_key {
	double d;
	int j;
};

static int perm_cmp(const void *a, const void *b)
{
	const struct perm_key *x = a, *y = b;
	if (x->d != y->d)
		return x->d > y->d ? -1 : 1; /* descending diag */
	return (x->j > y->j) - (x->j < y->j); /* ties in index order: deterministic */
}

int cloq_quant__perm(const double *H, int n, int act_order, int *perm, cloq_err *err)
{
	if (!act_order) {
		for (int j = 0; j < n; j++)
			perm[j] = j;
		return CLOQ_OK;
	}
	struct perm_key *k = cloq_malloc((size_t)n * sizeof *k);
	if (!k)
		return cloq_err_set(err, CLOQ_EIO, "quant: out of memory for the act-order permutation");
	for (int j = 0; j < n; j++) {
		double d = H[(size_t)j * n + j];
		k[j].d = d == 0.0 ? 1.0 : d; /* dead columns count as diag 1, as AutoGPTQ sets them */
		k[j].j = j;
	}
	qsort(k, (size_t)n, sizeof *k, perm_cmp);
	for (int j = 0; j < n; j++)
		perm[j] = k[j].j;
	cloq_free(k);
	return CLOQ_OK;
}
