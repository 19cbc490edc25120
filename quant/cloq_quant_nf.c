/*
 * cloq_quant_nf.c - NormalFloat block-absmax fake quantization (QLoRA NF4; LoftQ's NF2/NF3).
 *
 * The tables are built the way LoftQ's NFQuantizer.create_normal_map (and bitsandbytes'
 * create_normal_map for NF4) build them: normal quantiles of a float32 torch.linspace from
 * offset = 0.9677083 towards 0.5, 2^(b-1) positive values, a 0, 2^(b-1) - 1 negative values,
 * rounded to float32, sorted and divided by the largest. The normal quantile is Wichura's AS241
 * (PPND16, about 1e-16 relative), the same algorithm as R's qnorm.
 */
#include "cloq_quant_internal.h"

#include <math.h>
#include <string.h>

#include "cloq_sys.h"

/* Wichura, Algorithm AS241 (Applied Statistics 37, 1988), PPND16. 0 < p < 1. */
static double ndtri(double p)
{
	double q = p - 0.5, r, val;
	if (fabs(q) <= 0.425) {
		r = 0.180625 - q * q;
		return q * (((((((r * 2509.0809287301226727 + 33430.575583588128105) * r +
				 67265.770927008700853) * r + 45921.953931549871457) * r +
			       13731.693765509461125) * r + 1971.5909503065514427) * r +
			     133.14166789178437745) * r + 3.387132872796366608) /
		       (((((((r * 5226.495278852545925 + 28729.085735721942674) * r +
			     39307.89580009271061) * r + 21213.794301586595867) * r +
			   5394.1960214247511077) * r + 687.1870074920579083) * r +
			 42.313330701600911252) * r + 1.0);
	}
	r = q < 0.0 ? p : 1.0 - p;
	r = sqrt(-log(r));
	if (r <= 5.0) {
		r -= 1.6;
		val = (((((((r * 7.7454501427834140764e-4 + 0.0227238449892691845833) * r +
			    0.24178072517745061177) * r + 1.27045825245236838258) * r +
			  3.64784832476320460504) * r + 5.7694972214606914055) * r +
			4.6303378461565452959) * r + 1.42343711074968357734) /
		      (((((((r * 1.05075007164441684324e-9 + 5.475938084995344946e-4) * r +
			    0.0151986665636164571966) * r + 0.14810397642748007459) * r +
			  0.68976733498510000455) * r + 1.6763848301838038494) * r +
			2.05319162663775882187) * r + 1.0);
	} else {
		r -= 5.0;
		val = (((((((r * 2.01033439929228813265e-7 + 2.71155556874348757815e-5) * r +
			    0.0012426609473880784386) * r + 0.026532189526576123093) * r +
			  0.29656057182850489123) * r + 1.7848265399172913358) * r +
			5.4637849111641143699) * r + 6.6579046435011037772) /
		      (((((((r * 2.04426310338993978564e-15 + 1.4215117583164458887e-7) * r +
			    1.8463183175100546818e-5) * r + 7.868691311456132591e-4) * r +
			  0.0148753612908506148525) * r + 0.13692988092273580531) * r +
			0.59983220655588793769) * r + 1.0);
	}
	return q < 0.0 ? -val : val;
}

/* torch.linspace(start, end, steps) for float32 on CPU (scalar path; steps < 16 never takes
 * the vectorised one). */
static void linspace_f32(float start, float end, int steps, float *out)
{
	float step = (end - start) / (float)(steps - 1);
	int halfway = steps / 2;
	for (int i = 0; i < steps; i++)
		out[i] = i < halfway ? start + step * (float)i : end - step * (float)(steps - i - 1);
}

int cloq_quant_nf_table(int bits, float *table, cloq_err *err)
{
	if (bits < 2 || bits > 4)
		return cloq_err_set(err, CLOQ_EINPUT, "nf: bits %d not in 2..4", bits);
	const float offset = 0.9677083f;
	int v = 1 << bits, half = v / 2, k = 0;
	float lin[9], vals[16];
	linspace_f32(offset, 0.5f, half + 1, lin); /* positive side, the 0.5 end dropped */
	for (int i = 0; i < half; i++)
		vals[k++] = (float)ndtri((double)lin[i]);
	vals[k++] = 0.0f;
	linspace_f32(offset, 0.5f, half, lin); /* one value fewer on the negative side */
	for (int i = 0; i < half - 1; i++)
		vals[k++] = -(float)ndtri((double)lin[i]);
	for (int i = 1; i < v; i++) /* insertion sort, ascending */
		for (int j = i; j > 0 && vals[j - 1] > vals[j]; j--) {
			float t = vals[j];
			vals[j] = vals[j - 1];
			vals[j - 1] = t;
		}
	float mx = vals[v - 1];
	for (int i = 0; i < v; i++)
		table[i] = vals[i] / mx;
	return CLOQ_OK;
}

int cloq_quant_nf(const float *W, int rows, int cols, int bits, int block, float *Wdeq,
		  cloq_err *err)
{
	int rc = CLOQ_OK;
	float t[16];
	CLOQ_FAIL_IF(rows < 1 || cols < 1, err, CLOQ_EINPUT, "nf: bad shape (%d, %d)", rows, cols);
	CLOQ_FAIL_IF(block < 1, err, CLOQ_EINPUT, "nf: block size %d < 1", block);
	CLOQ_TRY(cloq_quant_nf_table(bits, t, err));
	CLOQ_TRY(cloq_quant__check_w(W, rows, cols, err));
	size_t n = (size_t)rows * (size_t)cols, nb = (n + (size_t)block - 1) / (size_t)block;
	int nt = 1 << bits;
#pragma omp parallel for schedule(static) if (n > 65536)
	for (size_t b = 0; b < nb; b++) {
		size_t k0 = b * (size_t)block, k1 = k0 + (size_t)block < n ? k0 + (size_t)block : n;
		float mx = 0.0f;
		for (size_t k = k0; k < k1; k++)
			if (fabsf(W[k]) > mx)
				mx = fabsf(W[k]);
		for (size_t k = k0; k < k1; k++) {
			if (mx == 0.0f) { /* LoftQ would divide 0 by 0 here */
				Wdeq[k] = 0.0f;
				continue;
			}
			float x = W[k] / mx, best = fabsf(x - t[0]);
			int bi = 0;
			for (int i = 1; i < nt; i++) {
				float d = fabsf(x - t[i]);
				if (d < best) { /* strict: the first minimum wins, as torch.argmin */
					best = d;
					bi = i;
				}
			}
			Wdeq[k] = t[bi] * mx;
		}
	}
fail:
	return rc;
}
