/* cloq_llama.c - LLaMA decoder block forward (see cloq_llama.h). */
#include "cloq_llama.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cblas.h>
#include <omp.h>

#include "cloq_sys.h"

static const char *const linear_names[CLOQ_LINEARS] = {"q_proj", "k_proj", "v_proj", "o_proj",
							"gate_proj", "up_proj", "down_proj"};
static const char *const linear_parent[CLOQ_LINEARS] = {"self_attn", "self_attn", "self_attn", "self_attn",
							 "mlp", "mlp", "mlp"};
const char *const cloq_group_names[CLOQ_GROUPS] = {"qkv", "o", "gateup", "down"};

int cloq_linear_group(int lin)
{
	static const int g[CLOQ_LINEARS] = {CLOQ_GROUP_QKV, CLOQ_GROUP_QKV, CLOQ_GROUP_QKV, CLOQ_GROUP_O,
					    CLOQ_GROUP_GATEUP, CLOQ_GROUP_GATEUP, CLOQ_GROUP_DOWN};
	return g[lin];
}

size_t cloq_group_cols(const cloq_config *c, int g)
{
	return g == CLOQ_GROUP_O ? (size_t)c->heads * c->head_dim : g == CLOQ_GROUP_DOWN ? (size_t)c->intermediate
										 : (size_t)c->hidden;
}

int cloq_linear_present(const cloq_config *cfg, int lin)
{
	return !(cfg->fused && (lin == CLOQ_LIN_K || lin == CLOQ_LIN_V || lin == CLOQ_LIN_UP));
}

int cloq_layer_has_linear(const cloq_config *cfg, int l, int lin)
{
	return cloq_linear_present(cfg, lin) && !(cloq_layer_is_moe(cfg, l) && cloq_linear_group(lin) >= CLOQ_GROUP_GATEUP);
}

void cloq_moe_linear_prefix(const cloq_config *c, int l, int e, int k, char *buf, size_t cap)
{
	static const char *const mix[] = {"w1", "w3", "w2"}, *const qw[] = {"gate_proj", "up_proj", "down_proj"};
	if (e < 0)
		snprintf(buf, cap, "model.layers.%d.mlp.shared_expert.%s", l, qw[k]);
	else if (c->moe_mixtral_names)
		snprintf(buf, cap, "model.layers.%d.block_sparse_moe.experts.%d.%s", l, e, mix[k]);
	else
		snprintf(buf, cap, "model.layers.%d.mlp.experts.%d.%s", l, e, qw[k]);
}

void cloq_moe_router_name(const cloq_config *c, int l, char *buf, size_t cap)
{
	snprintf(buf, cap, "model.layers.%d.%s.gate.weight", l, c->moe_mixtral_names ? "block_sparse_moe" : "mlp");
}

void cloq_moe_shared_gate_name(int l, char *buf, size_t cap)
{
	snprintf(buf, cap, "model.layers.%d.mlp.shared_expert_gate.weight", l);
}

void cloq_moe_linear_shape(const cloq_config *c, int e, int k, int *out, int *in)
{
	int width = e < 0 ? c->moe_shared_inter : c->moe_inter;
	*out = k == 2 ? c->hidden : width;
	*in = k == 2 ? width : c->hidden;
}

int cloq_linear_count(const cloq_config *cfg)
{
	return cfg->fused ? 4 : CLOQ_LINEARS;
}

const char *cloq_linear_name(const cloq_config *cfg, int lin)
{
	if (cfg->fused && lin == CLOQ_LIN_Q)
		return "qkv_proj";
	if (cfg->fused && lin == CLOQ_LIN_GATE)
		return "gate_up_proj";
	return linear_names[lin];
}

const char *cloq_linear_parent(int lin)
{
	return linear_parent[lin];
}

void cloq_linear_shape(const cloq_config *cfg, int lin, int *out, int *in)
{
	int qd = cfg->heads * cfg->head_dim, kvd = cfg->kv_heads * cfg->head_dim;
	switch (lin) {
	case CLOQ_LIN_Q: *out = cfg->fused ? qd + 2 * kvd : qd; *in = cfg->hidden; break;
	case CLOQ_LIN_K:
	case CLOQ_LIN_V: *out = kvd; *in = cfg->hidden; break;
	case CLOQ_LIN_O: *out = cfg->hidden; *in = qd; break;
	case CLOQ_LIN_GATE: *out = cfg->fused ? 2 * cfg->intermediate : cfg->intermediate; *in = cfg->hidden; break;
	case CLOQ_LIN_UP: *out = cfg->intermediate; *in = cfg->hidden; break;
	default: *out = cfg->hidden; *in = cfg->intermediate; break;
	}
}

void cloq_layer_w_free(cloq_layer_w *w)
{
	if (!w)
		return;
	cloq_free(w->attn_norm);
	cloq_free(w->ffn_norm);
	cloq_free(w->q_norm);
	cloq_free(w->k_norm);
	cloq_free(w->post_attn_norm);
	cloq_free(w->post_ffn_norm);
	for (int i = 0; i < CLOQ_LINEARS; i++) {
		cloq_free(w->w[i]);
		cloq_free(w->b[i]);
	}
	for (int i = 0; w->experts && i < 3 * w->n_experts; i++)
		cloq_free(w->experts[i]);
	cloq_free(w->experts);
	cloq_free(w->router);
	for (int i = 0; i < 3; i++)
		cloq_free(w->shared[i]);
	cloq_free(w->shared_gate);
	memset(w, 0, sizeof *w);
}

/* ---- RoPE ---------------------------------------------------------------------------------- */
/* One (max_t, half) pair of tables: cos and sin of t * inv(i), times scale, for i < half. */
static int rope_table(int max_t, int half, float **cos_out, float **sin_out, const double *inv, double scale,
		      cloq_err *err)
{
	size_t n = (size_t)max_t * (size_t)half;
	*cos_out = cloq_malloc(n * sizeof(float));
	*sin_out = cloq_malloc(n * sizeof(float));
	if (!*cos_out || !*sin_out)
		return cloq_err_set(err, CLOQ_EIO, "out of memory for RoPE tables (%zu entries)", n);
	for (int i = 0; i < half; i++)
		for (int t = 0; t < max_t; t++) {
			double a = t * inv[i];
			(*cos_out)[(size_t)t * half + i] = (float)(cos(a) * scale);
			(*sin_out)[(size_t)t * half + i] = (float)(sin(a) * scale);
		}
	return CLOQ_OK;
}

/*
 * The inverse frequencies of transformers' rope types over the rotary dims d (rotary_dim: head_dim,
 * or Phi-4-mini's partial share): inv(i) = theta^(-2i/d), then
 *   linear:   / factor;
 *   llama3:   long wavelengths / factor, short ones kept, a smooth ramp between;
 *   dynamic:  unchanged (NTK grows the base only past max_position_embeddings, which --seqlen
 *             never passes);
 *   longrope: / short_factor(i) (or long_factor(i) for windows longer than
 *             original_max_position_embeddings), cos and sin times rope_attn_factor.
 * Gemma 3's sliding layers use rope_local_theta, unscaled.
 */
int cloq_rope_init(cloq_rope *r, const cloq_config *cfg, int max_t, cloq_err *err)
{
	int rc = CLOQ_OK;
	memset(r, 0, sizeof *r);
	int d = cfg->rotary_dim > 0 ? cfg->rotary_dim : cfg->head_dim, half = d / 2;
	double inv[CLOQ_MAX_ROPE_PAIRS * 2], inv2[CLOQ_MAX_ROPE_PAIRS * 2];
	size_t n;
	CLOQ_FAIL_IF(max_t <= 0 || half <= 0 || half > CLOQ_MAX_ROPE_PAIRS * 2 ||
			     !cloq_mul_ok((size_t)max_t, (size_t)half, &n),
		     err, CLOQ_EUSAGE, "bad RoPE table size %d x %d", max_t, half);
	r->max_t = max_t;
	r->half = half;
	if (cfg->window_attention && cfg->rope_local_theta > 0) {
		for (int i = 0; i < half; i++)
			inv[i] = 1.0 / pow(cfg->rope_local_theta, (2.0 * i) / d);
		CLOQ_TRY(rope_table(max_t, half, &r->cos_l, &r->sin_l, inv, 1.0, err));
	}
	for (int i = 0; i < half; i++) {
		inv[i] = 1.0 / pow(cfg->rope_theta, (2.0 * i) / d);
		if (cfg->rope_type == CLOQ_ROPE_LINEAR) {
			inv[i] /= cfg->rope_factor;
		} else if (cfg->rope_type == CLOQ_ROPE_LLAMA3) {
			double lo_wl = cfg->rope_orig_max_pos / cfg->rope_low_freq;
			double hi_wl = cfg->rope_orig_max_pos / cfg->rope_high_freq;
			double wl = 2.0 * M_PI / inv[i];
			if (wl > lo_wl) {
				inv[i] /= cfg->rope_factor;
			} else if (wl >= hi_wl) {
				double s = (cfg->rope_orig_max_pos / wl - cfg->rope_low_freq) /
					   (cfg->rope_high_freq - cfg->rope_low_freq);
				inv[i] = (1.0 - s) * inv[i] / cfg->rope_factor + s * inv[i];
			}
		} else if (cfg->rope_type == CLOQ_ROPE_LONGROPE) {
			inv2[i] = inv[i] / cfg->rope_long[i];
			inv[i] /= cfg->rope_short[i];
		}
	}
	/* a config filled by hand (tests) leaves the factor 0: unscaled */
	double scale = cfg->rope_attn_factor > 0 ? cfg->rope_attn_factor : 1.0;
	CLOQ_TRY(rope_table(max_t, half, &r->cos, &r->sin, inv, scale, err));
	if (cfg->rope_type == CLOQ_ROPE_LONGROPE && max_t > cfg->rope_orig_max_pos) {
		r->long_from = cfg->rope_orig_max_pos + 1;
		CLOQ_TRY(rope_table(max_t, half, &r->cos_long, &r->sin_long, inv2, scale, err));
	}
	return CLOQ_OK;
fail:
	cloq_rope_free(r);
	return rc;
}

void cloq_rope_free(cloq_rope *r)
{
	cloq_free(r->cos);
	cloq_free(r->sin);
	cloq_free(r->cos_l);
	cloq_free(r->sin_l);
	cloq_free(r->cos_long);
	cloq_free(r->sin_long);
	r->cos = r->sin = r->cos_l = r->sin_l = r->cos_long = r->sin_long = NULL;
}

/* Rotate each head of x (T, nheads*hd) in place, rotate_half layout, over its first 2 * half dims
 * (the rest of a head, with partial_rotary_factor, passes unrotated). A window of more tokens
 * than longrope's original_max_position_embeddings takes the long factors, as transformers
 * chooses by the sequence's length. */
static void rope_apply(const cloq_rope *r, float *x, int T, int nheads, int hd, int local)
{
	int half = r->half, stride = nheads * hd;
	const float *ct = local && r->cos_l ? r->cos_l : r->cos, *st = local && r->sin_l ? r->sin_l : r->sin;
	if (!local && r->cos_long && T >= r->long_from) {
		ct = r->cos_long;
		st = r->sin_long;
	}
#pragma omp parallel for schedule(static) if ((size_t)T * nheads * hd > (1u << 18))
	for (int t = 0; t < T; t++) {
		const float *c = ct + (size_t)t * half, *s = st + (size_t)t * half;
		for (int h = 0; h < nheads; h++) {
			float *v = x + (size_t)t * stride + (size_t)h * hd;
			for (int i = 0; i < half; i++) {
				float a = v[i], b = v[i + half];
				v[i] = a * c[i] - b * s[i];
				v[i + half] = b * c[i] + a * s[i];
			}
		}
	}
}

/* ---- primitives ---------------------------------------------------------------------------- */
/* y = x * rsqrt(mean(x^2) + eps) * (weight + one), row by row; one is 0 or Gemma's 1 */
static void rmsnorm(const float *x, const float *weight, float one, float *y, int T, int n, double eps)
{
#pragma omp parallel for schedule(static) if ((size_t)T * n > (1u << 18))
	for (int t = 0; t < T; t++) {
		const float *xr = x + (size_t)t * n;
		float *yr = y + (size_t)t * n;
		double ss = 0;
		for (int i = 0; i < n; i++)
			ss += (double)xr[i] * xr[i];
		float inv = (float)(1.0 / sqrt(ss / n + eps));
		for (int i = 0; i < n; i++)
			yr[i] = (one + weight[i]) * (xr[i] * inv);
	}
}

void cloq_rmsnorm(const float *x, const float *weight, float *y, int T, int n, double eps)
{
	rmsnorm(x, weight, 0.0f, y, T, n, eps);
}

void cloq_rmsnorm_cfg(const cloq_config *cfg, const float *x, const float *weight, float *y, int T, int n)
{
	rmsnorm(x, weight, cfg->norm_plus_one ? 1.0f : 0.0f, y, T, n, cfg->rms_eps);
}

void cloq_norm_names(const cloq_config *cfg, const char *names[4])
{
	names[0] = "input_layernorm";
	names[1] = cfg->post_norms ? "pre_feedforward_layernorm" : "post_attention_layernorm";
	names[2] = cfg->post_norms ? "post_attention_layernorm" : NULL;
	names[3] = cfg->post_norms ? "post_feedforward_layernorm" : NULL;
}

void cloq_linear_fwd(const float *x, const float *W, const float *b, float *y, int T, int in, int out)
{
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, out, in, 1.0f, x, in, W, in, 0.0f, y, out);
	if (b) {
		for (int t = 0; t < T; t++)
			for (int o = 0; o < out; o++)
				y[(size_t)t * out + o] += b[o];
	}
}

/* ---- workspace ----------------------------------------------------------------------------- */
struct cloq_block_ws {
	int max_t;
	float *xn;    /* (T, hidden)  normed input */
	float *q;     /* (T, heads*hd) */
	float *k;     /* (T, kv*hd) */
	float *v;     /* (T, kv*hd) */
	float *att;   /* (T, heads*hd) attention output */
	float *s;     /* (s_slots x ATT_ROWS, T): each attention thread's scores of one item */
	int s_slots;  /* threads that may run attention items at once */
	float *g;     /* (T, inter) gate, then silu(gate)*up (inter: the widest MLP or expert) */
	float *u;     /* (T, inter) up */
	float *y;     /* (T, hidden) projection output */
	/* mixture of experts (cfg->moe), else empty */
	float *mo;    /* (T, hidden) the experts' weighted sum */
	float *xe;    /* (T, hidden) the rows routed to one expert */
	float *pr;    /* (T, experts) router probabilities */
	float *sw;    /* (T, topk) routing weights */
	float *sel;   /* (T, topk) selected experts (ints in float-sized room) */
};

#define WS_PARTS 14
#define ATT_ROWS 64 /* query rows of one attention work item */

/* threads that may run attention items at once (the ws's score slots) */
static int ws_slots(void)
{
	int n = omp_get_max_threads();
	return n < 1 ? 1 : n;
}

/* the widest MLP a layer of cfg computes: dense, expert or shared expert */
static size_t ws_inter(const cloq_config *c)
{
	size_t w = (size_t)c->intermediate;
	if ((size_t)c->moe_inter > w)
		w = (size_t)c->moe_inter;
	if ((size_t)c->moe_shared_inter > w)
		w = (size_t)c->moe_shared_inter;
	return w;
}

static size_t ws_floats(const cloq_config *c, int T, size_t *parts)
{
	size_t t = (size_t)T, qd = (size_t)c->heads * c->head_dim, kvd = (size_t)c->kv_heads * c->head_dim;
	size_t wi = ws_inter(c), moe = c->moe > 0, ne = (size_t)c->moe, nk = (size_t)c->moe_topk;
	size_t p[WS_PARTS] = {t * c->hidden, t * qd, t * kvd, t * kvd, t * qd, (size_t)ws_slots() * ATT_ROWS * t, t * wi, t * wi, t * c->hidden,
			      moe * t * c->hidden, moe * t * c->hidden, t * ne, t * nk, t * nk};
	size_t sum = 0;
	for (int i = 0; i < WS_PARTS; i++) {
		if (parts)
			parts[i] = p[i];
		sum += p[i];
	}
	return sum;
}

size_t cloq_block_ws_bytes(const cloq_config *cfg, int max_t)
{
	return ws_floats(cfg, max_t, NULL) * sizeof(float) + sizeof(cloq_block_ws);
}

int cloq_block_ws_create(const cloq_config *cfg, int max_t, cloq_block_ws **out, cloq_err *err)
{
	size_t parts[WS_PARTS];
	size_t total = ws_floats(cfg, max_t, parts);
	cloq_block_ws *ws = cloq_calloc(1, sizeof *ws);
	float *mem = cloq_aligned_alloc(64, total * sizeof(float));
	if (!ws || !mem) {
		cloq_free(ws);
		cloq_free(mem);
		return cloq_err_set(err, CLOQ_EIO, "out of memory for a %d-token forward workspace (%zu MiB)", max_t,
				    total * sizeof(float) >> 20);
	}
	float **slots[WS_PARTS] = {&ws->xn, &ws->q, &ws->k,  &ws->v,  &ws->att, &ws->s,  &ws->g,
				   &ws->u,  &ws->y, &ws->mo, &ws->xe, &ws->pr,  &ws->sw, &ws->sel};
	float *p = mem;
	for (int i = 0; i < WS_PARTS; i++) {
		*slots[i] = p;
		p += parts[i];
	}
	ws->max_t = max_t;
	ws->s_slots = ws_slots();
	*out = ws;
	return CLOQ_OK;
}

void cloq_block_ws_free(cloq_block_ws *ws)
{
	if (!ws)
		return;
	cloq_free(ws->xn); /* the one allocation starts at xn */
	cloq_free(ws);
}

/* ---- attention ----------------------------------------------------------------------------- */
/* exp(x) for x <= 0 (softmax after subtracting the row maximum), branch-free so the loop over a
 * score row vectorises: n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2], e^r by a degree-6
 * Taylor polynomial (relative error < 2e-7, about 2 ulp), times 2^n built in the exponent bits.
 * Inputs below -87 are clamped (e^-87 ~ 1.6e-38, the smallest normal float). With one window's
 * T^2 scores per head and small head dimensions, expf was half of a conversion's time. */
static inline float exp_nonpos(float x)
{
	x = x < -87.0f ? -87.0f : x;
	float t = x * 1.44269504088896341f;
	float n = t + 12582912.0f; /* round to nearest via the 1.5 * 2^23 trick */
	n -= 12582912.0f;
	float r = x - n * 0.693145752f;      /* ln 2 split in two for an exact product */
	r -= n * 1.42860677e-06f;
	float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
	union {
		int32_t i;
		float f;
	} s = {.i = ((int32_t)n + 127) << 23}; /* a union, not memcpy, so the loop still vectorises */
	return p * s.f;
}

/* Causal GQA attention of one window: q (T, H*hd), k, v (T, KV*hd) -> att (T, H*hd).
 * window > 0: query i attends to keys j with i - window < j <= i (sliding layers).
 *
 * The work is cut into items of one head x ATT_ROWS query rows, taken dynamically by the threads
 * of one parallel region; each item is computed by one thread with single-threaded GEMMs over
 * the keys its rows can see (j < i1, and j > i0 - window), so the masked upper half (and, with a
 * window, what lies before it) is never computed. The cut depends on T alone: the bytes are the
 * same for any thread count, and a thread that loses its core holds the others for one item at
 * most, not for a statically split half of every GEMM (one parallel region per layer instead of
 * two BLAS regions per head). */
static void attention_item(const cloq_config *c, const cloq_block_ws *ws, int T, int window, int h, int i0, float *S)
{
	int hd = c->head_dim, H = c->heads, rep = H / c->kv_heads;
	int qs = H * hd, ks = c->kv_heads * hd, g = h / rep;
	int i1 = i0 + ATT_ROWS < T ? i0 + ATT_ROWS : T, rows = i1 - i0;
	int jlo = window > 0 && i0 - window + 1 > 0 ? i0 - window + 1 : 0, n = i1 - jlo;
	/* a config not made by cloq_config_parse (tests) has 0: Llama's 1 / sqrt(head_dim) */
	float scale = (float)(c->attn_scale > 0 ? c->attn_scale : 1.0 / sqrt((double)hd)), cap = (float)c->attn_softcap;
	/* S (rows, n) = q[i0:i1]_h k[jlo:i1]_g^T * scale */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n, hd, scale, ws->q + (size_t)i0 * qs + (size_t)h * hd,
		    qs, ws->k + (size_t)jlo * ks + (size_t)g * hd, ks, 0.0f, S, n);
	for (int r = 0; r < rows; r++) {
		int i = i0 + r;
		float *row = S + (size_t)r * n;
		int j0 = (window > 0 && i - window + 1 > 0 ? i - window + 1 : 0) - jlo, je = i - jlo; /* valid: j0..je */
		for (int j = 0; j < j0; j++)
			row[j] = 0.0f;
		if (cap > 0.0f) /* Gemma 2: soft-capped scores, cap tanh(s / cap), before the mask */
			for (int j = j0; j <= je; j++)
				row[j] = cap * tanhf(row[j] / cap);
		float mx = row[j0];
		for (int j = j0 + 1; j <= je; j++)
			mx = row[j] > mx ? row[j] : mx;
		float sum = 0;
#pragma omp simd reduction(+ : sum)
		for (int j = j0; j <= je; j++) {
			row[j] = exp_nonpos(row[j] - mx);
			sum += row[j];
		}
		float inv = 1.0f / sum;
		for (int j = j0; j <= je; j++)
			row[j] *= inv;
		for (int j = je + 1; j < n; j++)
			row[j] = 0.0f;
	}
	/* att[i0:i1]_h = P v[jlo:i1]_g */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, n, 1.0f, S, n, ws->v + (size_t)jlo * ks + (size_t)g * hd,
		    ks, 0.0f, ws->att + (size_t)i0 * qs + (size_t)h * hd, qs);
}

static void attention(const cloq_config *c, cloq_block_ws *ws, int T, int window)
{
	int nb = (T + ATT_ROWS - 1) / ATT_ROWS, items = c->heads * nb;
	int nth = omp_in_parallel() ? 1 : cloq_team_cap(ws->s_slots); /* nested (windows in parallel): this thread alone */
	if (nth > items)
		nth = items;
	/* the last row blocks see the most keys: hand them out first */
#pragma omp parallel for schedule(dynamic, 1) num_threads(nth) if (nth > 1)
	for (int it = 0; it < items; it++) {
		int b = nb - 1 - it / c->heads, h = it % c->heads;
		attention_item(c, ws, T, window, h, b * ATT_ROWS, ws->s + (size_t)omp_get_thread_num() * ATT_ROWS * T);
	}
}

/* ---- block --------------------------------------------------------------------------------- */
float *cloq_block_ws_state(cloq_block_ws *ws, int state)
{
	return state == CLOQ_STATE_ATT ? ws->att : state == CLOQ_STATE_H ? ws->y : state == CLOQ_STATE_ACT ? ws->g : NULL;
}

void cloq_act_mul(const cloq_config *c, float *g, const float *u, size_t n)
{
#pragma omp parallel for schedule(static) if (n > (1u << 20))
	for (size_t i = 0; i < n; i++) {
		float gv = g[i];
		if (c->gelu_tanh) /* gelu_pytorch_tanh: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) */
			g[i] = 0.5f * gv * (1.0f + tanhf(0.7978845608028654f * (gv + 0.044715f * gv * gv * gv))) * u[i];
		else
			g[i] = gv / (1.0f + expf(-gv)) * u[i];
	}
}

/* One expert (or the shared one) on n rows: out (n, hidden) = down(act(gate x) * up x); x and out
 * may be the same buffer (x is read before out is written). */
static void expert_fwd(const cloq_config *c, cloq_block_ws *ws, const float *wg, const float *wu, const float *wd,
		       int width, const float *x, int n, float *out)
{
	cloq_linear_fwd(x, wg, NULL, ws->g, n, c->hidden, width);
	cloq_linear_fwd(x, wu, NULL, ws->u, n, c->hidden, width);
	cloq_act_mul(c, ws->g, ws->u, (size_t)n * width);
	cloq_linear_fwd(ws->g, wd, NULL, out, n, width, c->hidden);
}

/* softmax routing and top-k (cloq_llama.h), shared by the forward and the converter */
void cloq_moe_route(const cloq_config *c, const float *router, const float *xn, int T, float *probs, int *sel,
		    float *wt)
{
	int D = c->hidden, E = c->moe, K = c->moe_topk;
	cloq_linear_fwd(xn, router, NULL, probs, T, D, E);
	for (int t = 0; t < T; t++) {
		float *p = probs + (size_t)t * E, mx = p[0], sum = 0.0f;
		for (int e = 1; e < E; e++)
			mx = p[e] > mx ? p[e] : mx;
		for (int e = 0; e < E; e++) {
			p[e] = expf(p[e] - mx);
			sum += p[e];
		}
		for (int e = 0; e < E; e++)
			p[e] /= sum;
		int *st = sel + (size_t)t * K;
		float *sw = wt + (size_t)t * K, tot = 0.0f;
		for (int j = 0; j < K; j++) { /* the j-th largest, not taken yet */
			int best = -1;
			for (int e = 0; e < E; e++) {
				int taken = 0;
				for (int i = 0; i < j; i++)
					taken |= st[i] == e;
				if (!taken && (best < 0 || p[e] > p[best]))
					best = e;
			}
			st[j] = best;
			sw[j] = p[best];
			tot += sw[j];
		}
		if (c->moe_norm_topk)
			for (int j = 0; j < K; j++)
				sw[j] /= tot;
	}
}

/*
 * A mixture-of-experts MLP on ws->xn (T, hidden) -> ws->mo, as transformers' sparse MoE blocks:
 * probabilities = softmax(xn router^T) per token (float), the top-k experts by probability (ties:
 * the lower index), their weights renormalised to sum 1 with moe_norm_topk; each expert runs on the
 * rows routed to it, in expert order, its output added to those rows times their weights; then
 * Qwen2-MoE's shared expert, times sigmoid(xn . shared_gate), is added.
 */
static int moe_mlp(const cloq_config *c, const cloq_layer_w *w, cloq_block_ws *ws, int T, cloq_err *err)
{
	int rc = CLOQ_OK, D = c->hidden, E = c->moe, K = c->moe_topk;
	int *rows = cloq_malloc((size_t)T * sizeof(int));
	float *wts = cloq_malloc((size_t)T * sizeof(float));
	int *sel = (int *)ws->sel; /* (T, topk) ints in the floats' room */
	CLOQ_FAIL_IF(!rows || !wts, err, CLOQ_EIO, "out of memory routing %d tokens", T);
	CLOQ_FAIL_IF(!w->router || !w->experts || w->n_experts != E, err, CLOQ_EUSAGE,
		     "a mixture-of-experts layer without its router or %d experts", E);
	cloq_moe_route(c, w->router, ws->xn, T, ws->pr, sel, ws->sw);
	memset(ws->mo, 0, (size_t)T * D * sizeof(float));
	for (int e = 0; e < E; e++) {
		int n = 0;
		for (int t = 0; t < T; t++)
			for (int j = 0; j < K; j++)
				if (sel[(size_t)t * K + j] == e) {
					rows[n] = t;
					wts[n++] = ws->sw[(size_t)t * K + j];
				}
		if (!n)
			continue;
		for (int i = 0; i < n; i++)
			memcpy(ws->xe + (size_t)i * D, ws->xn + (size_t)rows[i] * D, (size_t)D * sizeof(float));
		expert_fwd(c, ws, w->experts[3 * e], w->experts[3 * e + 1], w->experts[3 * e + 2], c->moe_inter, ws->xe,
			   n, ws->xe);
		for (int i = 0; i < n; i++) {
			float *dst = ws->mo + (size_t)rows[i] * D;
			const float *src = ws->xe + (size_t)i * D;
			for (int d = 0; d < D; d++)
				dst[d] += wts[i] * src[d];
		}
	}
	if (c->moe_shared_inter) {
		CLOQ_FAIL_IF(!w->shared[0] || !w->shared_gate, err, CLOQ_EUSAGE, "a Qwen2-MoE layer without its shared expert");
		cloq_linear_fwd(ws->xn, w->shared_gate, NULL, wts, T, D, 1);
		expert_fwd(c, ws, w->shared[0], w->shared[1], w->shared[2], c->moe_shared_inter, ws->xn, T, ws->xe);
		for (int t = 0; t < T; t++) {
			float gate = 1.0f / (1.0f + expf(-wts[t]));
			float *dst = ws->mo + (size_t)t * D;
			const float *src = ws->xe + (size_t)t * D;
			for (int d = 0; d < D; d++)
				dst[d] += gate * src[d];
		}
	}
fail:
	cloq_free(rows);
	cloq_free(wts);
	return rc;
}

int cloq_block_forward(const cloq_config *c, int layer, const cloq_layer_w *w, const cloq_rope *rope,
		       cloq_block_ws *ws, float *x, int T, cloq_block_hook hook, void *hook_ctx, int stop_after,
		       cloq_err *err)
{
	return cloq_block_forward_from(c, layer, w, rope, ws, x, T, CLOQ_STATE_INPUT, hook, hook_ctx, stop_after,
				       err);
}

int cloq_block_forward_from(const cloq_config *c, int layer, const cloq_layer_w *w, const cloq_rope *rope,
			    cloq_block_ws *ws, float *x, int T, int start, cloq_block_hook hook, void *hook_ctx,
			    int stop_after, cloq_err *err)
{
	int rc = CLOQ_OK;
	int sliding = c->window_attention && layer >= 0 && layer < CLOQ_MAX_LAYERS && c->layer_sliding[layer];
	int D = c->hidden, NI = c->intermediate, qd = c->heads * c->head_dim, kvd = c->kv_heads * c->head_dim;
	CLOQ_FAIL_IF(T <= 0 || T > ws->max_t || T > rope->max_t, err, CLOQ_EUSAGE,
		     "window of %d tokens exceeds the forward workspace (%d)", T, ws->max_t);
	CLOQ_FAIL_IF(start < CLOQ_STATE_INPUT || start > CLOQ_STATE_ACT ||
			     (stop_after >= 0 && stop_after < start), err, CLOQ_EUSAGE,
		     "forward from state %d cannot stop after group %d", start, stop_after);
	/* the states sit right before the hooks of groups 1..3, so a resumed pass enters the same
	 * code at the same point: its arithmetic is the full pass's, bit for bit */
	switch (start) {
	case CLOQ_STATE_ATT:
		goto from_att;
	case CLOQ_STATE_H:
		goto from_h;
	case CLOQ_STATE_ACT:
		goto from_act;
	default:
		break;
	}

	/* attention */
	cloq_rmsnorm_cfg(c, x, w->attn_norm, ws->xn, T, D);
	if (hook)
		CLOQ_TRY(hook(hook_ctx, CLOQ_GROUP_QKV, ws->xn, T, D, err));
	if (stop_after == CLOQ_GROUP_QKV)
		return CLOQ_OK;
	{ /* a fused qkv_proj is read as its three row slices */
		const float *wq = w->w[CLOQ_LIN_Q], *bq = w->b[CLOQ_LIN_Q];
		const float *wk = c->fused ? wq + (size_t)qd * D : w->w[CLOQ_LIN_K];
		const float *wv = c->fused ? wk + (size_t)kvd * D : w->w[CLOQ_LIN_V];
		const float *bk = c->fused ? (bq ? bq + qd : NULL) : w->b[CLOQ_LIN_K];
		const float *bv = c->fused ? (bk ? bk + kvd : NULL) : w->b[CLOQ_LIN_V];
		cloq_linear_fwd(ws->xn, wq, bq, ws->q, T, D, qd);
		cloq_linear_fwd(ws->xn, wk, bk, ws->k, T, D, kvd);
		cloq_linear_fwd(ws->xn, wv, bv, ws->v, T, D, kvd);
	}
	if (c->qk_norm) { /* Qwen3: each head of q and k RMS-normalised over head_dim, before RoPE */
		CLOQ_FAIL_IF(!w->q_norm || !w->k_norm, err, CLOQ_EUSAGE, "a Qwen3 layer without its q/k norms");
		cloq_rmsnorm_cfg(c, ws->q, w->q_norm, ws->q, T * c->heads, c->head_dim);
		cloq_rmsnorm_cfg(c, ws->k, w->k_norm, ws->k, T * c->kv_heads, c->head_dim);
	}
	rope_apply(rope, ws->q, T, c->heads, c->head_dim, sliding);
	rope_apply(rope, ws->k, T, c->kv_heads, c->head_dim, sliding);
	attention(c, ws, T, sliding ? c->sliding_window : 0);
from_att:
	if (hook)
		CLOQ_TRY(hook(hook_ctx, CLOQ_GROUP_O, ws->att, T, qd, err));
	if (stop_after == CLOQ_GROUP_O)
		return CLOQ_OK;
	cloq_linear_fwd(ws->att, w->w[CLOQ_LIN_O], w->b[CLOQ_LIN_O], ws->y, T, qd, D);

	if (c->post_norms) /* Gemma 2: the attention output is normalised before the residual */
		cloq_rmsnorm_cfg(c, ws->y, w->post_attn_norm, ws->y, T, D);
	/* The residual is only added once the pass is known to complete, so a stopped pass leaves x
	 * untouched. h = x + attn lives in ws->y until then. */
	for (size_t i = 0; i < (size_t)T * D; i++)
		ws->y[i] += x[i];

	/* MLP */
from_h:
	cloq_rmsnorm_cfg(c, ws->y, w->ffn_norm, ws->xn, T, D);
	if (cloq_layer_is_moe(c, layer)) { /* x = h + the experts' weighted sum */
		/* calibration sees the experts' common input (the converter routes it itself) */
		if (stop_after == CLOQ_GROUP_GATEUP) {
			if (hook)
				CLOQ_TRY(hook(hook_ctx, CLOQ_GROUP_GATEUP, ws->xn, T, D, err));
			return CLOQ_OK;
		}
		CLOQ_FAIL_IF(stop_after >= 0, err, CLOQ_EUSAGE,
			     "layer %d is a mixture of experts: a pass stops at its experts' input, not after group %d",
			     layer, stop_after);
		CLOQ_TRY(moe_mlp(c, w, ws, T, err));
		for (size_t i = 0; i < (size_t)T * D; i++)
			x[i] = ws->y[i] + ws->mo[i];
		return CLOQ_OK;
	}
	if (hook)
		CLOQ_TRY(hook(hook_ctx, CLOQ_GROUP_GATEUP, ws->xn, T, D, err));
	if (stop_after == CLOQ_GROUP_GATEUP)
		return CLOQ_OK;
	{ /* a fused gate_up_proj: gate is its first NI rows, up the next NI */
		const float *wg = w->w[CLOQ_LIN_GATE], *bg = w->b[CLOQ_LIN_GATE];
		const float *wu = c->fused ? wg + (size_t)NI * D : w->w[CLOQ_LIN_UP];
		const float *bu = c->fused ? (bg ? bg + NI : NULL) : w->b[CLOQ_LIN_UP];
		cloq_linear_fwd(ws->xn, wg, bg, ws->g, T, D, NI);
		cloq_linear_fwd(ws->xn, wu, bu, ws->u, T, D, NI);
	}
	cloq_act_mul(c, ws->g, ws->u, (size_t)T * NI);
from_act:
	if (hook)
		CLOQ_TRY(hook(hook_ctx, CLOQ_GROUP_DOWN, ws->g, T, NI, err));
	if (stop_after == CLOQ_GROUP_DOWN)
		return CLOQ_OK;
	/* x = h + down(...): h is in ws->y, the down projection goes to xn (free by now). */
	cloq_linear_fwd(ws->g, w->w[CLOQ_LIN_DOWN], w->b[CLOQ_LIN_DOWN], ws->xn, T, NI, D);
	if (c->post_norms) /* Gemma 2: the MLP output too */
		cloq_rmsnorm_cfg(c, ws->xn, w->post_ffn_norm, ws->xn, T, D);
	for (size_t i = 0; i < (size_t)T * D; i++)
		x[i] = ws->y[i] + ws->xn[i];
	return CLOQ_OK;
fail:
	return rc;
}
