/* cloq_prefetch.c - layer read-ahead over the streaming reader (see cloq_prefetch.h). */
#include "cloq_prefetch.h"

#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "cloq_inputs.h"
#include "cloq_reader.h"
#include "cloq_sys.h"

#define DIRECT_ALIGN 4096

struct cloq_prefetch {
	cloq_model *m;
	cloq_reader *r;
	void *buf[2];
	size_t buf_size;
	cloq_st_span_plan plan[2];
	int layer[2];      /* layer held (or in flight) in each buffer, -1 none */
	int in_flight;     /* buffer index with a batch started and not waited, -1 none */
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int cloq_prefetch_create(cloq_model *m, cloq_prefetch **out, cloq_err *err)
{
	int rc = CLOQ_OK;
	const char **paths = NULL;
	cloq_prefetch *p = cloq_calloc(1, sizeof *p);
	if (!p)
		return cloq_err_set(err, CLOQ_EIO, "out of memory");
	p->m = m;
	p->layer[0] = p->layer[1] = -1;
	p->in_flight = -1;
	/* every layer has the same tensors; size the buffers for the largest plan */
	for (int l = 0; l < m->cfg.layers; l++) {
		cloq_st_span_plan sp;
		if (cloq_layer_is_moe(&m->cfg, l)) /* a sparse layer's experts stream one by one instead */
			continue;
		CLOQ_TRY(cloq_st_layer_span_plan(m->st, l, DIRECT_ALIGN, NULL, 0, &sp, err));
		if (sp.needed > p->buf_size)
			p->buf_size = sp.needed;
	}
	/* one buffer: a layer's bytes are converted to fp32 as soon as it is taken, so the next
	 * layer's read can start in the same buffer right after (buf[1] stays unused) */
	p->buf[0] = p->buf_size ? cloq_aligned_alloc(DIRECT_ALIGN, p->buf_size) : NULL;
	CLOQ_FAIL_IF(p->buf_size && !p->buf[0], err, CLOQ_EIO, "out of memory for a %zu MiB layer read buffer", p->buf_size >> 20);
	size_t nf = cloq_st_nfiles(m->st);
	paths = cloq_malloc(nf * sizeof *paths);
	CLOQ_FAIL_IF(!paths, err, CLOQ_EIO, "out of memory");
	for (size_t i = 0; i < nf; i++)
		paths[i] = cloq_st_file_path(m->st, i);
	cloq_reader_params rp = cloq_reader_default_params();
	rp.direct = 1;
	CLOQ_TRY(cloq_reader_create(paths, nf, &rp, &p->r, err));
	cloq_free(paths);
	*out = p;
	return CLOQ_OK;
fail:
	cloq_free(paths);
	cloq_prefetch_free(p);
	return rc;
}

void cloq_prefetch_free(cloq_prefetch *p)
{
	if (!p)
		return;
	if (p->in_flight >= 0)
		cloq_reader_wait(p->r, NULL);
	cloq_reader_free(p->r);
	cloq_free(p->buf[0]);
	cloq_free(p->buf[1]);
	cloq_free(p);
}

const char *cloq_prefetch_backend(const cloq_prefetch *p) { return cloq_reader_backend(p->r); }

static int wait_flight(cloq_prefetch *p, double *wait_s, cloq_err *err)
{
	if (p->in_flight < 0)
		return CLOQ_OK;
	double t = now();
	int i = p->in_flight;
	p->in_flight = -1;
	int rc = cloq_reader_wait(p->r, err);
	if (wait_s)
		*wait_s += now() - t;
	if (rc)
		p->layer[i] = -1;
	return rc;
}

int cloq_prefetch_start(cloq_prefetch *p, int l, cloq_err *err)
{
	if (l < 0 || l >= p->m->cfg.layers || p->layer[0] == l || p->layer[1] == l || cloq_layer_is_moe(&p->m->cfg, l))
		return CLOQ_OK;
	/* the reader runs one batch at a time: finish the one in flight first */
	int rc = wait_flight(p, NULL, err);
	if (rc)
		return rc;
	/* the buffer is free, or holds a read-ahead nobody took (a skipped layer): overwrite it */
	int i = 0;
	p->layer[i] = -1;
	rc = cloq_st_layer_span_plan(p->m->st, l, DIRECT_ALIGN, p->buf[i], p->buf_size, &p->plan[i], err);
	if (rc)
		return rc;
	rc = cloq_reader_start(p->r, p->plan[i].req, p->plan[i].nreq, err);
	if (rc)
		return rc;
	p->layer[i] = l;
	p->in_flight = i;
	return CLOQ_OK;
}

/* Tensor t's raw bytes to fp32; their XXH3 goes to inputs[t->name] and to the running list h. */
static int convert(cloq_prefetch *p, int i, const cloq_st_tensor *t, float **dst, cJSON *inputs, uint64_t *h,
		   int *nh, cloq_err *err)
{
	*dst = NULL;
	if (!t)
		return CLOQ_OK;
	const void *raw = cloq_st_span_data(&p->plan[i], t);
	if (!raw)
		return cloq_err_set(err, CLOQ_EINPUT, "tensor '%s' is outside its layer's byte span", t->name);
	uint64_t th = XXH3_64bits(raw, t->nbytes);
	h[(*nh)++] = th;
	if (inputs) {
		char hex[17];
		cloq_inputs_hex(th, hex);
		if (!cJSON_AddStringToObject(inputs, t->name, hex))
			return cloq_err_set(err, CLOQ_EIO, "out of memory");
	}
	*dst = cloq_malloc(t->nelem * sizeof(float));
	if (!*dst)
		return cloq_err_set(err, CLOQ_EIO, "out of memory loading '%s'", t->name);
	return cloq_st_convert_f32(p->m->st, t, raw, *dst, err);
}

int cloq_prefetch_take(cloq_prefetch *p, int l, cloq_layer_w *w, uint64_t *digest, cJSON **inputs, double *wait_s,
		       cloq_err *err)
{
	int rc = CLOQ_OK, i = -1, nh = 0;
	uint64_t h[6 + 2 * CLOQ_LINEARS];
	cJSON *in = NULL;
	memset(w, 0, sizeof *w);
	if (inputs) {
		*inputs = NULL;
		in = cJSON_CreateObject();
		CLOQ_FAIL_IF(!in, err, CLOQ_EIO, "out of memory");
	}
	CLOQ_FAIL_IF(cloq_layer_is_moe(&p->m->cfg, l), err, CLOQ_EUSAGE, "layer %d is sparse: its experts are not prefetched", l);
	if (p->layer[0] != l && p->layer[1] != l)
		CLOQ_TRY(cloq_prefetch_start(p, l, err));
	i = p->layer[0] == l ? 0 : 1;
	if (p->in_flight == i)
		CLOQ_TRY(wait_flight(p, wait_s, err));
	float **slot[4] = {&w->attn_norm, &w->ffn_norm, &w->post_attn_norm, &w->post_ffn_norm};
	for (int role = 0; role < 4; role++)
		CLOQ_TRY(convert(p, i, cloq_model_norm(p->m, l, role), slot[role], in, h, &nh, err));
	if (p->m->cfg.qk_norm) {
		CLOQ_TRY(convert(p, i, cloq_model_qk_norm(p->m, l, 0), &w->q_norm, in, h, &nh, err));
		CLOQ_TRY(convert(p, i, cloq_model_qk_norm(p->m, l, 1), &w->k_norm, in, h, &nh, err));
	}
	for (int lin = 0; lin < CLOQ_LINEARS; lin++) {
		CLOQ_TRY(convert(p, i, cloq_model_linear(p->m, l, lin, 0), &w->w[lin], in, h, &nh, err));
		CLOQ_TRY(convert(p, i, cloq_model_linear(p->m, l, lin, 1), &w->b[lin], in, h, &nh, err));
	}
	if (digest)
		*digest = XXH3_64bits(h, (size_t)nh * sizeof h[0]);
	if (inputs)
		*inputs = in;
	/* the bytes are converted: the buffer may now take the next layer */
	p->layer[i] = -1;
	return CLOQ_OK;
fail:
	cJSON_Delete(in);
	cloq_layer_w_free(w);
	if (i >= 0)
		p->layer[i] = -1;
	return rc;
}
