/*
 * cloq_quant_ref.c - plain scalar float64 GPTQ, the reference the fast path is tested against.
 *
 * No blocking, no BLAS in the loop, no float32 working copy: column by column, every remaining
 * column updated at once; H^-1's factor by AutoGPTQ's route (Cholesky, inverse, Cholesky). It
 * shares with the fast path only the quantizer itself (cloq_quant__params / __code, float32 as
 * AutoGPTQ), input validation and the act-order permutation, so the tests exercise the blocking,
 * the lazy batch GEMMs, the float32 updates and the reversed-Cholesky factor.
 */
#include "cloq_quant_internal.h"

#include <math.h>
#include <string.h>

#include <lapacke.h>

#include "cloq_sys.h"

int cloq_quant__hinv_upper_ref(double *H, int n)
{
	size_t N = (size_t)n;
	/* torch.linalg.cholesky -> cholesky_inverse -> cholesky(upper=True) */
	int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', n, H, n);
	if (info != 0)
		return info > 0 ? info : n + 1;
	info = LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'L', n, H, n);
	if (info != 0)
		return info > 0 ? info : n + 1;
	for (size_t i = 0; i < N; i++) /* dpotri leaves only the lower triangle */
		for (size_t j = i + 1; j < N; j++)
			H[i * N + j] = H[j * N + i];
	info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', n, H, n);
	if (info != 0)
		return info > 0 ? info : n + 1;
	for (size_t i = 1; i < N; i++)
		memset(H + i * N, 0, i * sizeof *H);
	return 0;
}

int cloq_quant_gptq_ref(const float *W, const double *H, int rows, int cols,
			const cloq_quant_params *p, cloq_qtensor *out, cloq_quant_gptq_info *info,
			cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_quant_cfg c;
	int *perm = NULL;
	double *Hd = NULL, *Wd = NULL, *snap = NULL;
	float *tmp = NULL;
	size_t N = (size_t)cols, R = (size_t)rows;

	memset(out, 0, sizeof *out);
	CLOQ_TRY(cloq_quant__cfg(p, rows, cols, &c, err));
	CLOQ_TRY(cloq_quant__check_w(W, rows, cols, err));
	CLOQ_TRY(cloq_quant__check_h(H, cols, err));
	perm = cloq_malloc(N * sizeof *perm);
	Hd = cloq_malloc(N * N * sizeof *Hd);
	Wd = cloq_malloc(R * N * sizeof *Wd);
	tmp = cloq_malloc(N * sizeof *tmp);
	/* autogptq_groups: each row as it was when AutoGPTQ's block (block_size columns) started */
	size_t snapw = (size_t)c.block_size + (size_t)c.gs;
	if (c.stale)
		snap = cloq_malloc(R * snapw * sizeof *snap);
	CLOQ_FAIL_IF(!perm || !Hd || !Wd || !tmp || (c.stale && !snap), err, CLOQ_EIO,
		     "gptq ref: out of memory");
	CLOQ_TRY(cloq_qtensor_alloc(out, rows, cols, c.bits, c.gs, err));
	CLOQ_TRY(cloq_quant__perm(H, cols, c.act_order, perm, err));

	/* dead columns: diag := 1, weights := 0 (AutoGPTQ), off-diagonals := 0 */
	int ndead = 0;
	double sum = 0.0;
	for (size_t j = 0; j < N; j++) {
		double d = H[j * N + j];
		ndead += d == 0.0;
		sum += d == 0.0 ? 1.0 : d;
	}
	double mdiag = sum / (double)cols, damp = 0.0;
	int k, fact = -1;
	for (k = 0; k <= 4; k++) {
		damp = k == 0 ? c.damp : (c.damp > 1e-6 ? c.damp : 1e-6) * pow(10.0, k);
		for (size_t i = 0; i < N; i++)
			for (size_t j = 0; j < N; j++) {
				size_t pi = (size_t)perm[i], pj = (size_t)perm[j];
				int dead = H[pi * N + pi] == 0.0 || H[pj * N + pj] == 0.0;
				Hd[i * N + j] = dead ? 0.0 : H[pi * N + pj];
			}
		for (size_t i = 0; i < N; i++) {
			if (Hd[i * N + i] == 0.0)
				Hd[i * N + i] = 1.0;
			Hd[i * N + i] += damp * mdiag;
		}
		fact = cloq_quant__hinv_upper_ref(Hd, cols);
		if (fact == 0)
			break;
	}
	CLOQ_FAIL_IF(fact != 0, err, CLOQ_EINPUT, "gptq ref: H not positive definite");

	for (size_t r = 0; r < R; r++)
		for (size_t j = 0; j < N; j++) {
			size_t pj = (size_t)perm[j];
			Wd[r * N + j] = H[pj * N + pj] == 0.0 ? 0.0 : (double)W[r * N + pj];
		}
	if (c.static_groups)
		for (size_t r = 0; r < R; r++) {
			for (size_t j = 0; j < N; j++)
				tmp[j] = H[j * N + j] == 0.0 ? 0.0f : W[r * N + j];
			for (int g = 0; g < c.ngroups; g++) {
				int j0 = g * c.gs, m = cols - j0 < c.gs ? cols - j0 : c.gs;
				CLOQ_TRY(cloq_quant__params(tmp + j0, m, &c,
							    &out->scale[r * c.ngroups + g],
							    &out->zero[r * c.ngroups + g], (int)r, g,
							    err));
			}
		}

	double loss = 0.0;
	for (size_t i = 0; i < N; i++) {
		double d = Hd[i * N + i];
		for (size_t r = 0; r < R; r++) {
			double *w = Wd + r * N;
			int g;
			if (c.static_groups) {
				g = perm[i] / c.gs;
			} else {
				g = (int)i / c.gs;
				size_t i1 = i - i % (size_t)c.block_size;
				if (c.stale && i == i1)
					for (size_t t = 0; t < snapw && i + t < N; t++)
						snap[r * snapw + t] = w[i + t];
				if ((int)i % c.gs == 0) {
					int m = cols - (int)i < c.gs ? cols - (int)i : c.gs;
					for (int t = 0; t < m; t++)
						tmp[t] = (float)(c.stale ? snap[r * snapw + (i - i1) + (size_t)t]
									 : w[i + (size_t)t]);
					CLOQ_TRY(cloq_quant__params(tmp, m, &c,
								    &out->scale[r * c.ngroups + g],
								    &out->zero[r * c.ngroups + g], (int)r,
								    g, err));
				}
			}
			float s = out->scale[r * c.ngroups + g];
			int32_t z = out->zero[r * c.ngroups + g];
			int qc = cloq_quant__code((float)w[i], s, z, c.maxq);
			double dq = (double)cloq_quant__deq(qc, s, z);
			out->q[r * N + (size_t)perm[i]] = (uint8_t)qc;
			double e = (w[i] - dq) / d;
			loss += 0.5 * (w[i] - dq) * (w[i] - dq) / (d * d);
			for (size_t j = i + 1; j < N; j++)
				w[j] -= e * Hd[i * N + j];
		}
	}
	for (int j = 0; j < cols; j++) /* static: natural groups; else groups of the order */
		out->g_idx[c.static_groups ? j : perm[j]] = j / c.gs;
	if (info) {
		info->damp_used = damp;
		info->damp_escalations = k;
		info->dead_cols = ndead;
		info->loss = loss / mdiag; /* as the fast path, which works on H / mean diag */
		info->t_factor_s = info->t_quant_s = 0.0; /* not measured here */
	}
fail:
	if (rc != CLOQ_OK)
		cloq_qtensor_free(out);
	cloq_free(snap);
	cloq_free(tmp);
	cloq_free(Wd);
	cloq_free(Hd);
	cloq_free(perm);
	return rc;
}
