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

#include <float.h>
#include <math.h>
#include <string.h>

#include "cloq_dtype.h"
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

/* ======== codebook tensors: LoftQ's NF and bitsandbytes' NF4 ===================================== */
int cloq_qtensor_alloc_nf(cloq_qtensor *t, int rows, int cols, const cloq_nf_params *p, cloq_err *err)
{
	int rc = CLOQ_OK;
	size_t n;
	memset(t, 0, sizeof *t);
	CLOQ_FAIL_IF(rows < 1 || cols < 1, err, CLOQ_EINPUT, "nf: bad shape (%d, %d)", rows, cols);
	CLOQ_FAIL_IF(!cloq_mul_ok((size_t)rows, (size_t)cols, &n), err, CLOQ_EINPUT, "nf: shape (%d, %d) too large",
		     rows, cols);
	CLOQ_FAIL_IF(p->block < 1, err, CLOQ_EINPUT, "nf: block size %d < 1", p->block);
	CLOQ_FAIL_IF(p->out_dtype != CLOQ_DT_F32 && p->out_dtype != CLOQ_DT_BF16 && p->out_dtype != CLOQ_DT_F16, err,
		     CLOQ_EINPUT, "nf: output dtype %d is not F32, BF16 or F16", p->out_dtype);
	CLOQ_TRY(cloq_quant_nf_table(p->bits, t->nf_code, err));
	t->rows = rows;
	t->cols = cols;
	t->bits = p->bits;
	t->nf_block = p->block;
	t->nf_dtype = p->out_dtype;
	t->nf_bnb = p->bnb;
	t->nf_nblocks = (n + (size_t)p->block - 1) / (size_t)p->block;
	t->q = cloq_calloc(n, 1);
	t->absmax = cloq_calloc(t->nf_nblocks, sizeof *t->absmax);
	CLOQ_FAIL_IF(!t->q || !t->absmax, err, CLOQ_EIO, "nf: out of memory for a (%d, %d) tensor", rows, cols);
	if (p->double_quant) {
		t->qabsmax = cloq_calloc(t->nf_nblocks, 1);
		t->absmax2 = cloq_calloc((t->nf_nblocks + 255) / 256, sizeof *t->absmax2);
		CLOQ_FAIL_IF(!t->qabsmax || !t->absmax2, err, CLOQ_EIO, "nf: out of memory for a (%d, %d) tensor",
			     rows, cols);
	}
	return CLOQ_OK;
fail:
	cloq_qtensor_free(t);
	return rc;
}

/* torch.linspace for float32 on CPU as x86 builds of torch compute it for the dynamic map: the
 * formula of linspace_f32 with the product and the sum fused into one rounding (an FMA). This is
 * what a published dump of bitsandbytes' table holds; the unfused formula differs in 42 of 256. */
static float lin_at(float start, float end, int steps, int i)
{
	float step = (end - start) / (float)(steps - 1);
	return i < steps / 2 ? fmaf(step, (float)i, start) : fmaf(-step, (float)(steps - i - 1), end);
}

void cloq_quant_nf_dynamic_map(float map[256])
{
	/* signed, 7 exponent bits, 8 bits: for i = 0..6, the 2^i midpoints of a float32 linspace of
	 * 2^i + 1 points in [0.1, 1], times 10^(i - 6) (a Python float made float32 by torch), both
	 * signs; then 0 and 1; sorted. 2 * 127 + 2 = 256 values. */
	int k = 0;
	for (int i = 0; i < 7; i++) {
		int nb = (1 << i) + 1;
		float scale = (float)pow(10.0, (double)(i - 6));
		for (int j = 0; j + 1 < nb; j++) {
			float mean = (lin_at(0.1f, 1.0f, nb, j) + lin_at(0.1f, 1.0f, nb, j + 1)) / 2.0f;
			float v = scale * mean;
			map[k++] = v;
			map[k++] = -v;
		}
	}
	map[k++] = 0.0f;
	map[k++] = 1.0f;
	for (int i = 1; i < 256; i++) /* insertion sort, ascending */
		for (int j = i; j > 0 && map[j - 1] > map[j]; j--) {
			float t = map[j];
			map[j] = map[j - 1];
			map[j - 1] = t;
		}
}

/* bitsandbytes' dQuantize<0>: binary search over the 256-value map, then the nearer neighbour. */
static uint8_t dyn_quantize(const float *code, float x)
{
	int pivot = 127, upper_pivot = 255, lower_pivot = 0;
	float lower = -1.0f, upper = 1.0f, val = code[pivot];
	for (int i = 64; i > 0; i >>= 1) {
		if (x > val) {
			lower_pivot = pivot;
			lower = val;
			pivot += i;
		} else {
			upper_pivot = pivot;
			upper = val;
			pivot -= i;
		}
		val = code[pivot];
	}
	if (upper_pivot == 255)
		upper = code[upper_pivot];
	if (lower_pivot == 0)
		lower = code[lower_pivot];
	if (x > val)
		return (uint8_t)(x > (upper + val) * 0.5f ? upper_pivot : pivot);
	return (uint8_t)(x < (lower + val) * 0.5f ? lower_pivot : pivot);
}

/* Rebuild the dequantization absmax of every block from the double-quantized form. */
static void dq_rebuild(const cloq_qtensor *t, const float *map, float *absmax)
{
	for (size_t b = 0; b < t->nf_nblocks; b++)
		absmax[b] = map[t->qabsmax[b]] * t->absmax2[b / 256] + t->nf_offset;
}

static float round_to(int dtype, float v)
{
	if (dtype == CLOQ_DT_BF16)
		return cloq_bf16_to_f32_ref(cloq_f32_to_bf16_ref(v));
	if (dtype == CLOQ_DT_F16)
		return cloq_f16_to_f32_ref(cloq_f32_to_f16_ref(v));
	return v;
}

/* bitsandbytes' dQuantizeNF4 decision tree (csrc/kernels.cu) compares with these float32
 * constants. They are the float64 midpoints of adjacent NF4 values written as decimals and
 * rounded to float32 by the compiler, which at 4 of them (an exact float32 tie) is one ulp away
 * from rounding the float64 midpoint itself: so they are data, not computed here. */
static const float bnb_thr[15] = {
	-0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
	-0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
	0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
	0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f};

/* The CUDA build runs with --use_fast_math, which flushes subnormal operands and results to 0. */
static float ftz(float x) { return fabsf(x) < FLT_MIN ? 0.0f * x : x; }

int cloq_quant_nf_codes(const float *W, int rows, int cols, const cloq_nf_params *p, cloq_qtensor *out,
			cloq_err *err)
{
	int rc = CLOQ_OK;
	memset(out, 0, sizeof *out);
	if (p->bnb) {
		CLOQ_FAIL_IF(p->bits != 4, err, CLOQ_EINPUT, "nf4-bnb: bitsandbytes' NF is 4-bit, not %d", p->bits);
		CLOQ_FAIL_IF(p->block < 32 || p->block > 4096 || (p->block & (p->block - 1)), err, CLOQ_EINPUT,
			     "nf4-bnb: block size %d is not one of bitsandbytes' 32, 64, ..., 4096", p->block);
	} else {
		CLOQ_FAIL_IF(p->double_quant, err, CLOQ_EINPUT, "nf: double quantization is bitsandbytes' only");
		CLOQ_FAIL_IF(p->out_dtype != CLOQ_DT_F32, err, CLOQ_EINPUT, "nf: LoftQ's NF dequantizes in float32");
	}
	CLOQ_TRY(cloq_quant__check_w(W, rows, cols, err));
	CLOQ_TRY(cloq_qtensor_alloc_nf(out, rows, cols, p, err));
	size_t n = (size_t)rows * (size_t)cols, nb = out->nf_nblocks, block = (size_t)p->block;
	int nt = 1 << p->bits;
	const float *t = out->nf_code;
	int zero_code = 0;
	while (t[zero_code] != 0.0f)
		zero_code++;
#pragma omp parallel for schedule(static) if (n > 65536)
	for (size_t b = 0; b < nb; b++) {
		size_t k0 = b * block, k1 = k0 + block < n ? k0 + block : n;
		float mx = 0.0f;
		if (p->bnb) {
			for (size_t k = k0; k < k1; k++)
				mx = fmaxf(mx, ftz(fabsf(W[k])));
			out->absmax[b] = mx;
			float r = ftz(1.0f / mx); /* Inf for an all-zero block: x = NaN, code 0 */
			for (size_t k = k0; k < k1; k++) {
				float x = ftz(W[k]) * r;
				int c = 0;
				while (c < 15 && x > bnb_thr[c])
					c++;
				out->q[k] = (uint8_t)c;
			}
			continue;
		}
		for (size_t k = k0; k < k1; k++)
			mx = fmaxf(mx, fabsf(W[k]));
		out->absmax[b] = mx;
		{
			for (size_t k = k0; k < k1; k++) {
				if (mx == 0.0f) {
					out->q[k] = (uint8_t)zero_code;
					continue;
				}
				float x = W[k] / mx, best = fabsf(x - t[0]);
				int bi = 0;
				for (int i = 1; i < nt; i++) {
					float d = fabsf(x - t[i]);
					if (d < best) {
						best = d;
						bi = i;
					}
				}
				out->q[k] = (uint8_t)bi;
			}
		}
	}
	if (p->double_quant) {
		float map[256];
		cloq_quant_nf_dynamic_map(map);
		double s = 0.0;
		for (size_t b = 0; b < nb; b++)
			s += out->absmax[b];
		out->nf_offset = (float)(s / (double)nb);
		for (size_t j = 0; j < (nb + 255) / 256; j++) {
			size_t b0 = j * 256, b1 = b0 + 256 < nb ? b0 + 256 : nb;
			float mx = 0.0f; /* the same kernel: flushed subnormals, a reciprocal */
			for (size_t b = b0; b < b1; b++)
				mx = fmaxf(mx, ftz(fabsf(out->absmax[b] - out->nf_offset)));
			out->absmax2[j] = mx;
			float r = ftz(1.0f / mx);
			for (size_t b = b0; b < b1; b++)
				out->qabsmax[b] = dyn_quantize(map, ftz(out->absmax[b] - out->nf_offset) * r);
		}
		dq_rebuild(out, map, out->absmax);
	}
	return CLOQ_OK;
fail:
	cloq_qtensor_free(out);
	return rc;
}

void cloq_quant__nf_dequant(const cloq_qtensor *q, float *W)
{
	size_t n = (size_t)q->rows * (size_t)q->cols, block = (size_t)q->nf_block;
#pragma omp parallel for schedule(static) if (n > 65536)
	for (size_t b = 0; b < q->nf_nblocks; b++) {
		size_t k0 = b * block, k1 = k0 + block < n ? k0 + block : n;
		float mx = q->absmax[b];
		for (size_t k = k0; k < k1; k++)
			W[k] = round_to(q->nf_dtype, q->nf_code[q->q[k]] * mx);
	}
}

int cloq_quant_nf_check(const cloq_qtensor *q, cloq_err *err)
{
	size_t n = (size_t)q->rows * (size_t)q->cols;
	for (size_t k = 0; k < n; k++)
		if (q->q[k] >> q->bits)
			return cloq_err_set(err, CLOQ_EINPUT, "code %d at %zu exceeds %d bits", q->q[k], k, q->bits);
	for (size_t b = 0; b < q->nf_nblocks; b++)
		if (!(q->absmax[b] >= 0.0f && isfinite(q->absmax[b])))
			return cloq_err_set(err, CLOQ_EINPUT, "absmax of block %zu is %g, not finite and >= 0", b,
					    (double)q->absmax[b]);
	if (q->qabsmax) {
		float map[256], v;
		cloq_quant_nf_dynamic_map(map);
		for (size_t b = 0; b < q->nf_nblocks; b++) {
			v = map[q->qabsmax[b]] * q->absmax2[b / 256] + q->nf_offset;
			if (memcmp(&v, &q->absmax[b], sizeof v))
				return cloq_err_set(err, CLOQ_EINPUT,
						    "absmax of block %zu is %.9g, but its double-quantized form gives %.9g",
						    b, (double)q->absmax[b], (double)v);
		}
	}
	return CLOQ_OK;
}
