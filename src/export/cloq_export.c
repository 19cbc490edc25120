/*
 * cloq_export.c - `cloq export OUT --to DIR`: a Hugging Face GPTQ checkpoint (or a dense fp16/bf16
 * base holding deq(Q)) plus DIR/adapter, a PEFT LoRA adapter.
 *
 * GPTQ layout per quantized linear P (= model.layers.N.(self_attn|mlp).X_proj):
 *   P.qweight int32 (in*bits/32, out)   codes packed along the input dimension
 *   P.qzeros  int32 (ngroups, out*bits/32)  v1: zero - 1; v2: the true zero
 *   P.scales  fp16  (ngroups, out)
 *   P.g_idx   int32 (in)
 *   P.bias    fp16  (out)               when the model has one
 * A linear whose shape the format cannot pack stays dense: P.weight fp16 (out, in) = deq(Q), so the
 * adapter still applies, and it is left out of quantization_config.modules_in_block_to_quantize.
 * v1 cannot hold a zero point of 0 (it stores zero - 1); when any group has one, the whole
 * checkpoint is written as checkpoint_format gptq_v2 (true zeros, as GPTQModel does). Jobs made
 * with --gptq-zeros v1 (the default) have none: their exports are always v1, and a zero of 0
 * found in one is refused (exit 4) naming the linear. Jobs from before the option (no
 * settings.gptq_zeros) are treated as v2 jobs.
 *
 * The export is built whole in a sibling temp directory DIR.tmp.PID (same parent, so renames
 * stay on one file system; every file fsynced, config.json last) and only then swapped in, so a
 * killed or failed export never leaves a partial export at DIR: DIR is the previous export or the
 * new one, never a mix. An absent or empty DIR is replaced by rename(2); a previous export of the
 * same job by renameat2(RENAME_EXCHANGE) (or, where the file system lacks it, DIR -> DIR.old.PID,
 * temp -> DIR), after which the old tree is removed. Temp siblings of dead processes are removed.
 *
 * DIR/cloq_export.json marks an export: {"format": "cloq-export", "version": 1, "job": JOB}
 * where JOB is the XXH3-64 (16 hex digits) of OUT/manifest.json's bytes. The manifest is written
 * once, when the job finishes, and holds the job's settings and every shard's hash, so JOB
 * names the converted model itself: two job directories with identical outputs export alike, a
 * re-run with other settings does not. A non-empty DIR without this file, or with another JOB,
 * is refused (exit 2) and left untouched: export never deletes files it did not write.
 *
 * adapter_config.json's base_model_name_or_path names the base the adapter was calibrated for,
 * never by a local path. For gptq and dequant that base is the export itself: DIR's own name (the
 * original model's name would make PEFT's AutoPeftModelForCausalLM build the adapter on the
 * unquantized original, a different model, without a word; with DIR's name it finds DIR from its
 * parent folder, or a Hub repository of that name, or fails). For peft-only the base is the
 * original checkpoint as bitsandbytes loads it: "_name_or_path" of OUT/model/config.json when it
 * is set and not absolute, else the last component of the job's model_dir.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <linux/fs.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <xxhash.h>

#include "cloq_cli.h"
#include "cloq_dtype.h"
#include "cloq_layerstore.h"
#include "cloq_outmodel.h"
#include "cloq_convert.h"
#include "cloq_quant.h"
#include "cloq_safetensors.h"
#include "cloq_shard.h"
#include "cloq_sys.h"

enum { FMT_GPTQ, FMT_DEQUANT, FMT_PEFT };

#define MAX_SHARD_BYTES (5ULL * 1000 * 1000 * 1000) /* HF's default max_shard_size "5GB" */
#define MAX_SHARD_LIMIT (1ULL << 50)                /* --max-shard-size: 1 PiB */

static const char help[] =
	"usage: cloq export OUT --to DIR [--format gptq|dequant|peft-only] [--dtype fp16|bf16|fp32]\n"
	"                   [--adapter-dtype fp32|bf16] [--max-shard-size SIZE]\n"
	"\n"
	"Write the converted model in OUT as standard files:\n"
	"  --format gptq     (default) a Hugging Face GPTQ checkpoint: qweight/qzeros/scales/g_idx per\n"
	"                    quantized linear, config.json with quantization_config, quantize_config.json.\n"
	"                    Linears the format cannot pack stay dense (deq(Q)) and are listed.\n"
	"  --format dequant  a dense model holding deq(Q)\n"
	"  --format peft-only  (default for --quantizer nf4-bnb jobs, refused for others) only the\n"
	"                    adapter, in DIR itself, with DIR/README.md showing the QLoRA load lines:\n"
	"                    the base is the original checkpoint loaded by bitsandbytes (nf4), whose Q\n"
	"                    the job calibrated against\n"
	"  --dtype           of every tensor that is not packed (default fp16; fp32 keeps the converted\n"
	"                    model's numbers exactly, e.g. for checking an export against 'cloq ppl OUT')\n"
	"gptq and dequant write DIR/adapter/ (adapter_model.safetensors + adapter_config.json, PEFT LoRA) and copy\n"
	"the tokenizer and generation files. Shards of at most 5 GB (--max-shard-size: bytes, or with\n"
	"a K/M/G/T suffix, powers of 1024; at least 1024), with model.safetensors.index.json when more\n"
	"than one.\n"
	"DIR must be new, empty, or a previous export of this same job (DIR/cloq_export.json), which is\n"
	"replaced; any other directory is refused (exit 2) and left as it is. The export is built in\n"
	"DIR.tmp.PID and swapped in whole: an interrupted export leaves DIR as it was.\n"
	"OUT is checked first, as 'cloq verify' checks it: every shard's file hash against the journal\n"
	"and manifest.\n"
	"exit status: 0 ok, 1 usage, 2 OUT is not a cloq job, or DIR is not this job's export (or another\n"
	"  bad input), 3 I/O failure, 4 integrity failure (a shard damaged, missing or from another job,\n"
	"  journal.json damaged), 5 a convert or resume is writing OUT, 6 the job is unfinished\n";

typedef struct out_tensor {
	char name[160];
	enum cloq_dtype dtype;
	int ndim;
	int64_t shape[2];
	int layer;     /* -1: base tensor */
	int lin;       /* linear index, or -1 */
	int kind;      /* see enum below */
	int file;
} out_tensor;

/* K_NORM0 + role (cloq_norm_names), then Qwen3's q_norm and k_norm */
enum { K_QWEIGHT, K_QZEROS, K_SCALES, K_GIDX, K_BIAS, K_DENSE, K_NORM0, K_NORM1, K_NORM2, K_NORM3, K_QNORM, K_KNORM,
       K_EMBED, K_FNORM, K_HEAD, K_LORA_A, K_LORA_B, K_ROUTER, K_SGATE };

/* A linear of a layer as exported: a slot (lin < CLOQ_LINEARS) or, in a sparse layer, linear k of
 * expert e as lin = CLOQ_LINEARS + 3 e + k (e = experts: Qwen2-MoE's shared expert). */
typedef struct xlin {
	int lin, out, in;
	char p[160];  /* its Hugging Face prefix, model.layers.L.... */
} xlin;

/* The linears layer l exports, in order: its own slots, then its experts; at most
 * CLOQ_LINEARS + 3 (experts + 1). */
static int layer_linears(const cloq_config *c, int l, xlin *x)
{
	int n = 0;
	for (int lin = 0; lin < CLOQ_LINEARS; lin++) {
		if (!cloq_layer_has_linear(c, l, lin))
			continue;
		x[n].lin = lin;
		cloq_linear_shape(c, lin, &x[n].out, &x[n].in);
		snprintf(x[n].p, sizeof x[n].p, "model.layers.%d.%s.%s", l, cloq_linear_parent(lin), cloq_linear_name(c, lin));
		n++;
	}
	if (!cloq_layer_is_moe(c, l))
		return n;
	for (int e = 0; e < c->moe + (c->moe_shared_inter > 0); e++) /* e = experts: the shared one */
		for (int k = 0; k < 3; k++, n++) {
			x[n].lin = CLOQ_LINEARS + 3 * e + k;
			cloq_moe_linear_shape(c, e < c->moe ? e : -1, k, &x[n].out, &x[n].in);
			cloq_moe_linear_prefix(c, l, e < c->moe ? e : -1, k, x[n].p, sizeof x[n].p);
		}
	return n;
}

typedef struct exporter {
	cloq_outmodel *om;
	const cloq_config *cfg;
	int gptq;              /* 0: dequant */
	int format;            /* CLOQ_GPTQ_V1 / V2 */
	enum cloq_dtype dtype; /* dense tensors */
	enum cloq_dtype adtype;
	int act_order, sym;
	/* the layer whose stored linears are loaded */
	int cur_layer;
	cloq_shard *cur_shard;
	cloq_stored_linear cur[CLOQ_LINEARS];
	float *cur_norm[6];       /* the layer's norms by role (cloq_norm_names), Qwen3's q_norm, k_norm */
	float *cur_router, *cur_sgate; /* a sparse layer's router and shared expert gate */
	int cur_e;                /* the expert whose linears cur_x holds, -1 none */
	cloq_stored_linear cur_x[3];
	xlin *xl;                 /* scratch for layer_linears */
} exporter;

/* GPTQ packs a linear of this shape (else it stays dense) */
static int packable(const exporter *E, int out, int in) { return E->gptq && cloq_quant_gptq_packable(out, in, E->om->bits); }

static void unload(exporter *E)
{
	for (int i = 0; i < CLOQ_LINEARS; i++)
		cloq_stored_linear_free(&E->cur[i]);
	for (int k = 0; k < 6; k++) {
		cloq_free(E->cur_norm[k]);
		E->cur_norm[k] = NULL;
	}
	for (int k = 0; k < 3; k++)
		cloq_stored_linear_free(&E->cur_x[k]);
	cloq_free(E->cur_router);
	cloq_free(E->cur_sgate);
	E->cur_router = E->cur_sgate = NULL;
	E->cur_e = -1;
	cloq_shard_close(E->cur_shard);
	E->cur_shard = NULL;
	E->cur_layer = -1;
}

static int load_layer(exporter *E, int l, cloq_err *err)
{
	int rc = CLOQ_OK;
	char path[4096], name[160];
	if (E->cur_layer == l)
		return CLOQ_OK;
	unload(E);
	snprintf(path, sizeof path, "%s/shards/layer_%05d.cloqshard", E->om->dir, l);
	CLOQ_TRY(cloq_shard_open(path, &E->cur_shard, err));
	for (int lin = 0; lin < CLOQ_LINEARS; lin++)
		if (cloq_layer_has_linear(E->cfg, l, lin))
			CLOQ_TRY(cloq_layer_read_linear(E->cur_shard, E->cfg, l, lin, &E->om->qf, &E->cur[lin], err));
	if (cloq_layer_is_moe(E->cfg, l)) { /* the experts come one at a time (linear_of) */
		size_t nr = (size_t)E->cfg->moe * E->cfg->hidden, ng = (size_t)E->cfg->hidden;
		E->cur_router = cloq_malloc(nr * sizeof(float));
		E->cur_sgate = E->cfg->moe_shared_inter ? cloq_malloc(ng * sizeof(float)) : NULL;
		CLOQ_FAIL_IF(!E->cur_router || (E->cfg->moe_shared_inter && !E->cur_sgate), err, CLOQ_EIO, "out of memory");
		cloq_moe_router_name(E->cfg, l, name, sizeof name);
		CLOQ_TRY(cloq_shard_read_name(E->cur_shard, name, E->cur_router, nr * sizeof(float), err));
		if (E->cur_sgate) {
			cloq_moe_shared_gate_name(l, name, sizeof name);
			CLOQ_TRY(cloq_shard_read_name(E->cur_shard, name, E->cur_sgate, ng * sizeof(float), err));
		}
	}
	const char *norms[6] = {NULL, NULL, NULL, NULL, E->cfg->qk_norm ? "self_attn.q_norm" : NULL,
				E->cfg->qk_norm ? "self_attn.k_norm" : NULL};
	cloq_norm_names(E->cfg, norms);
	for (int k = 0; k < 6; k++) {
		if (!norms[k])
			continue;
		size_t n = (size_t)(k < 4 ? E->cfg->hidden : E->cfg->head_dim);
		E->cur_norm[k] = cloq_malloc(n * sizeof(float));
		CLOQ_FAIL_IF(!E->cur_norm[k], err, CLOQ_EIO, "out of memory");
		snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, norms[k]);
		CLOQ_TRY(cloq_shard_read_name(E->cur_shard, name, E->cur_norm[k], n * sizeof(float), err));
	}
	E->cur_layer = l;
	return CLOQ_OK;
fail:
	unload(E);
	return cloq_err_wrap(err, rc, "%s", path);
}

/* The stored linear of tensor t (its layer loaded): a slot's, or an expert's, read when first asked */
static int linear_of(exporter *E, const out_tensor *t, const cloq_stored_linear **s, cloq_err *err)
{
	int rc = CLOQ_OK;
	*s = NULL;
	if (t->lin < 0)
		return CLOQ_OK;
	if (t->lin < CLOQ_LINEARS) {
		*s = &E->cur[t->lin];
		return CLOQ_OK;
	}
	const cloq_config *c = E->cfg;
	int x = t->lin - CLOQ_LINEARS, e = x / 3, k = x % 3;
	if (E->cur_e != e) {
		for (int i = 0; i < 3; i++)
			cloq_stored_linear_free(&E->cur_x[i]);
		E->cur_e = -1;
		for (int i = 0; i < 3; i++) {
			char p[160];
			int out, in;
			cloq_moe_linear_prefix(c, t->layer, e < c->moe ? e : -1, i, p, sizeof p);
			cloq_moe_linear_shape(c, e < c->moe ? e : -1, i, &out, &in);
			CLOQ_TRY(cloq_layer_read_linear_at(E->cur_shard, p, out, in, &E->om->qf, &E->cur_x[i], err));
		}
		E->cur_e = e;
	}
	*s = &E->cur_x[k];
fail:
	return rc;
}

static void add(out_tensor *t, size_t *n, enum cloq_dtype dt, int64_t d0, int64_t d1, int layer, int lin, int kind,
		const char *fmt, ...) __attribute__((format(printf, 9, 10)));
static void add(out_tensor *t, size_t *n, enum cloq_dtype dt, int64_t d0, int64_t d1, int layer, int lin, int kind,
		const char *fmt, ...)
{
	out_tensor *o = &t[(*n)++];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(o->name, sizeof o->name, fmt, ap);
	va_end(ap);
	o->dtype = dt;
	o->ndim = d1 ? 2 : 1;
	o->shape[0] = d0;
	o->shape[1] = d1;
	o->layer = layer;
	o->lin = lin;
	o->kind = kind;
}

static uint64_t tbytes(const out_tensor *t)
{
	return (uint64_t)t->shape[0] * (t->ndim > 1 ? (uint64_t)t->shape[1] : 1) * cloq_dtype_size(t->dtype);
}

/* Produce the bytes of tensor t into buf (tbytes(t) bytes). */
static int produce(exporter *E, const out_tensor *t, void *buf, cloq_err *err)
{
	int rc = CLOQ_OK;
	size_t n = (size_t)(t->shape[0] * (t->ndim > 1 ? t->shape[1] : 1));
	const float *src = NULL;
	float *tmp = NULL;
	const cloq_stored_linear *s = NULL;
	if (t->layer >= 0)
		CLOQ_TRY(load_layer(E, t->layer, err));
	CLOQ_TRY(linear_of(E, t, &s, err));
	switch (t->kind) {
	case K_QWEIGHT:
	case K_QZEROS:
	case K_SCALES:
	case K_GIDX: {
		/* pack once into scratch, hand out the requested part */
		int out = s->q.rows, in = s->q.cols, b = s->q.bits, ng = s->q.ngroups;
		int32_t *qw = cloq_malloc((size_t)in * b / 32 * out * 4);
		int32_t *qz = cloq_malloc((size_t)ng * out * b / 32 * 4);
		uint16_t *sc = cloq_malloc((size_t)ng * out * 2);
		int32_t *gi = cloq_malloc((size_t)in * 4);
		if (!qw || !qz || !sc || !gi)
			rc = cloq_err_set(err, CLOQ_EIO, "out of memory packing '%s'", t->name);
		else
			rc = cloq_quant_pack_gptq_fmt(&s->q, E->format, qw, qz, sc, gi, err);
		if (rc == CLOQ_OK) {
			const void *p = t->kind == K_QWEIGHT ? (void *)qw : t->kind == K_QZEROS ? (void *)qz :
							   t->kind == K_SCALES ? (void *)sc : (void *)gi;
			memcpy(buf, p, tbytes(t));
		}
		cloq_free(qw);
		cloq_free(qz);
		cloq_free(sc);
		cloq_free(gi);
		if (rc)
			return cloq_err_wrap(err, rc, "%s", t->name);
		return CLOQ_OK;
	}
	case K_BIAS: src = s->bias; break;
	case K_DENSE:
		tmp = cloq_malloc(n * sizeof(float));
		CLOQ_FAIL_IF(!tmp, err, CLOQ_EIO, "out of memory");
		cloq_quant_dequant(&s->q, tmp);
		src = tmp;
		break;
	case K_NORM0: case K_NORM1: case K_NORM2: case K_NORM3: src = E->cur_norm[t->kind - K_NORM0]; break;
	case K_QNORM: src = E->cur_norm[4]; break;
	case K_KNORM: src = E->cur_norm[5]; break;
	case K_EMBED: src = E->om->embed; break;
	case K_FNORM: src = E->om->final_norm; break;
	case K_HEAD: src = E->om->head; break;
	case K_LORA_A: src = s->A; break;
	case K_LORA_B: src = s->B; break;
	case K_ROUTER: src = E->cur_router; break;
	case K_SGATE: src = E->cur_sgate; break;
	}
	CLOQ_FAIL_IF(!src, err, CLOQ_EINPUT, "no data for tensor '%s'", t->name);
	if (t->dtype == CLOQ_DT_F32)
		memcpy(buf, src, n * sizeof(float));
	else
		cloq_dtype_from_f32(t->dtype, src, buf, n);
fail:
	cloq_free(tmp);
	return rc;
}

/* Write tensors [0, n) into files of at most max_bytes: model.safetensors, or
 * <stem>-0000i-of-0000N.safetensors + <index> when more than one. */
static int write_files(exporter *E, const char *dir, const char *single, const char *stem, const char *index,
		       out_tensor *ts, size_t n, uint64_t max_bytes, cloq_err *err)
{
	int rc = CLOQ_OK;
	int nfiles = 1;
	uint64_t cur = 0, total = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t b = tbytes(&ts[i]);
		if (cur > 0 && cur + b > max_bytes) {
			nfiles++;
			cur = 0;
		}
		ts[i].file = nfiles - 1;
		cur += b;
		total += b;
	}
	char path[4096];
	cloq_st_writer *w = NULL;
	void *buf = NULL;
	cJSON *idx = NULL;
	char *text = NULL;
	for (int f = 0; f < nfiles; f++) {
		if (nfiles == 1)
			snprintf(path, sizeof path, "%s/%s", dir, single);
		else
			snprintf(path, sizeof path, "%s/%s-%05d-of-%05d.safetensors", dir, stem, f + 1, nfiles);
		CLOQ_TRY(cloq_st_writer_create(path, &w, err));
		for (size_t i = 0; i < n; i++)
			if (ts[i].file == f)
				CLOQ_TRY(cloq_st_writer_add(w, ts[i].name, ts[i].dtype, ts[i].ndim, ts[i].shape, err));
		CLOQ_TRY(cloq_st_writer_begin(w, err));
		size_t k = 0;
		for (size_t i = 0; i < n; i++) {
			if (ts[i].file != f)
				continue;
			buf = cloq_malloc(tbytes(&ts[i]));
			CLOQ_FAIL_IF(!buf, err, CLOQ_EIO, "out of memory for '%s'", ts[i].name);
			CLOQ_TRY(produce(E, &ts[i], buf, err));
			CLOQ_TRY(cloq_st_writer_write(w, k++, buf, tbytes(&ts[i]), err));
			cloq_free(buf);
			buf = NULL;
		}
		CLOQ_TRY(cloq_st_writer_commit(w, err));
		cloq_st_writer_free(w);
		w = NULL;
	}
	if (nfiles > 1) {
		idx = cJSON_CreateObject();
		cJSON *meta = cJSON_AddObjectToObject(idx, "metadata");
		cJSON_AddNumberToObject(meta, "total_size", (double)total);
		cJSON *map = cJSON_AddObjectToObject(idx, "weight_map");
		for (size_t i = 0; i < n; i++) {
			char fname[320];
			snprintf(fname, sizeof fname, "%s-%05d-of-%05d.safetensors", stem, ts[i].file + 1, nfiles);
			cJSON_AddStringToObject(map, ts[i].name, fname);
		}
		text = cJSON_Print(idx);
		snprintf(path, sizeof path, "%s/%s", dir, index);
		CLOQ_TRY(cloq_write_file_atomic(path, text, strlen(text), err));
	}
fail:
	cloq_free(buf);
	cloq_st_writer_free(w);
	cJSON_free(text);
	cJSON_Delete(idx);
	return rc;
}

/* append string v to array a unless it is there */
static void add_unique(cJSON *a, const char *v)
{
	const cJSON *x;
	cJSON_ArrayForEach(x, a)
	{
		if (cJSON_IsString(x) && !strcmp(x->valuestring, v))
			return;
	}
	cJSON_AddItemToArray(a, cJSON_CreateString(v));
}

static int write_json(const char *dir, const char *name, cJSON *j, cloq_err *err)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	char *text = cJSON_Print(j);
	if (!text)
		return cloq_err_set(err, CLOQ_EIO, "out of memory");
	int rc = cloq_write_file_atomic(path, text, strlen(text), err);
	cJSON_free(text);
	return rc;
}

static int copy_file(const char *from_dir, const char *to_dir, const char *name, cloq_err *err)
{
	char src[4096], dst[4096];
	if (snprintf(src, sizeof src, "%s/%s", from_dir, name) >= (int)sizeof src ||
	    snprintf(dst, sizeof dst, "%s/%s", to_dir, name) >= (int)sizeof dst)
		return cloq_err_set(err, CLOQ_EUSAGE, "path too long: %s", to_dir);
	if (!cloq_file_exists(src))
		return CLOQ_OK;
	char *data;
	size_t n;
	int rc = cloq_read_file(src, &data, &n, err);
	if (rc)
		return rc;
	rc = cloq_write_file_atomic(dst, data, n, err);
	cloq_free(data);
	return rc;
}

#define MARKER "cloq_export.json"

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

/* Remove a tree (best effort: used on our own temp directories). */
static void rm_tree(const char *path)
{
	nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Siblings "BASE.tmp.PID" / "BASE.old.PID" of dir left by export processes that are gone. */
static void remove_dead_temps(const char *parent, const char *base)
{
	DIR *d = opendir(parent);
	if (!d)
		return;
	size_t bl = strlen(base);
	char path[PATH_MAX + 256];
	for (struct dirent *e; (e = readdir(d));) {
		const char *n = e->d_name;
		if (strncmp(n, base, bl) != 0 || (strncmp(n + bl, ".tmp.", 5) != 0 && strncmp(n + bl, ".old.", 5) != 0))
			continue;
		char *end;
		long pid = strtol(n + bl + 5, &end, 10);
		if (*end || pid <= 0 || (pid_t)pid == getpid())
			continue;
		if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		snprintf(path, sizeof path, "%s/%s", parent, n);
		rm_tree(path);
	}
	closedir(d);
}

/* XXH3-64 of OUT/manifest.json, the job's identity in cloq_export.json (see the top). */
static int job_identity(const char *out, char hex[17], cloq_err *err)
{
	char path[4096], *text = NULL;
	size_t len;
	snprintf(path, sizeof path, "%s/manifest.json", out);
	if (!cloq_file_exists(path))
		return cloq_err_set(err, CLOQ_EINCOMPLETE, "%s: missing: the job is not finished; run 'cloq resume %s'",
				    path, out);
	int rc = cloq_read_file(path, &text, &len, err);
	if (rc)
		return rc;
	snprintf(hex, 17, "%016llx", (unsigned long long)XXH3_64bits(text, len));
	cloq_free(text);
	return CLOQ_OK;
}

enum { DIR_ABSENT, DIR_EMPTY, DIR_SAME_JOB };

/* What DIR is: absent, an empty directory, or a previous export of job `ident`. Anything else is
 * refused with CLOQ_EINPUT naming DIR and up to two of its entries. */
static int classify_dir(const char *dir, const char *ident, int *state, cloq_err *err)
{
	int rc = CLOQ_OK;
	struct stat st;
	DIR *d = NULL;
	char *text = NULL;
	cJSON *m = NULL;
	if (stat(dir, &st) != 0) {
		CLOQ_FAIL_IF(errno != ENOENT, err, CLOQ_EIO, "%s: cannot stat: %s", dir, strerror(errno));
		*state = DIR_ABSENT;
		return CLOQ_OK;
	}
	CLOQ_FAIL_IF(!S_ISDIR(st.st_mode), err, CLOQ_EINPUT, "--to %s: exists and is not a directory", dir);
	d = opendir(dir);
	CLOQ_FAIL_IF(!d, err, CLOQ_EIO, "%s: cannot list: %s", dir, strerror(errno));
	char names[2][256] = {"", ""};
	int n = 0, has_marker = 0;
	for (struct dirent *e; (e = readdir(d));) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (!strcmp(e->d_name, MARKER))
			has_marker = 1;
		if (n < 2)
			snprintf(names[n], sizeof names[n], "%s", e->d_name);
		n++;
	}
	if (n == 0) {
		*state = DIR_EMPTY;
		goto fail;
	}
	const char *other = NULL;
	if (has_marker) {
		char path[4096];
		size_t len;
		snprintf(path, sizeof path, "%s/%s", dir, MARKER);
		CLOQ_TRY(cloq_read_file(path, &text, &len, err));
		m = cJSON_ParseWithLength(text, len);
		const cJSON *f = cJSON_GetObjectItemCaseSensitive(m, "format");
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, "version");
		const cJSON *j = cJSON_GetObjectItemCaseSensitive(m, "job");
		if (cJSON_IsString(f) && !strcmp(f->valuestring, "cloq-export") && cJSON_IsNumber(v) &&
		    v->valueint == 1 && cJSON_IsString(j)) {
			if (!strcmp(j->valuestring, ident)) {
				*state = DIR_SAME_JOB;
				goto fail;
			}
			other = j->valuestring;
		}
	}
	if (other)
		CLOQ_FAIL_IF(1, err, CLOQ_EINPUT,
			     "--to %s holds the export of another job (job %.32s; this job is %s); export to another "
			     "directory or remove it first",
			     dir, other, ident);
	CLOQ_FAIL_IF(1, err, CLOQ_EINPUT,
		     "--to %s is not empty and is not an export of this job (it holds '%s'%s%s%s%s); export to an "
		     "empty or new directory",
		     dir, names[0], n > 1 ? ", '" : "", n > 1 ? names[1] : "", n > 1 ? "'" : "",
		     n > 2 ? " and more" : "");
fail:
	if (d)
		closedir(d);
	cJSON_Delete(m);
	cloq_free(text);
	return rc;
}

static int exchange(const char *a, const char *b)
{
#ifdef SYS_renameat2
	return (int)syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE);
#else
	errno = ENOSYS;
	return -1;
#endif
}

/* Put the finished temp tree `tmp` at `dir` (state from classify_dir), then remove what was
 * there. `parent` is fsynced so the swap is durable. */
static int swap_in(const char *tmp, const char *dir, const char *parent, int state, cloq_err *err)
{
	if (state != DIR_SAME_JOB) {
		/* rename(2) replaces an empty directory; a file that appeared meanwhile makes it fail */
		if (rename(tmp, dir) != 0)
			return cloq_err_set(err, errno == ENOTEMPTY || errno == EEXIST ? CLOQ_EINPUT : CLOQ_EIO,
					    "%s: cannot move the export into place: %s", dir, strerror(errno));
		return cloq_fsync_dir(parent, err);
	}
	if (exchange(tmp, dir) == 0) {
		int rc = cloq_fsync_dir(parent, err);
		rm_tree(tmp); /* the previous export, now at tmp */
		return rc;
	}
	if (errno != EINVAL && errno != ENOSYS)
		return cloq_err_set(err, CLOQ_EIO, "%s: cannot swap in the new export: %s", dir, strerror(errno));
	char old[PATH_MAX + 64];
	snprintf(old, sizeof old, "%s.old.%ld", dir, (long)getpid());
	if (rename(dir, old) != 0)
		return cloq_err_set(err, CLOQ_EIO, "%s: cannot move the previous export aside: %s", dir, strerror(errno));
	if (rename(tmp, dir) != 0) {
		int e = errno;
		rename(old, dir);
		return cloq_err_set(err, CLOQ_EIO, "%s: cannot move the export into place: %s", dir, strerror(e));
	}
	int rc = cloq_fsync_dir(parent, err);
	rm_tree(old);
	return rc;
}

/* adapter_config.json's base_model_name_or_path (see the top): never an absolute path. */
/* DIR/README.md of a peft-only export: the QLoRA lines that rebuild the Q the job used. */
static int write_qlora_readme(const char *dir, const char *base, const cloq_qform *qf, cloq_err *err)
{
	const char *td = qf->nf_dtype == CLOQ_DT_BF16 ? "torch.bfloat16" : qf->nf_dtype == CLOQ_DT_F16 ? "torch.float16"
												: "torch.float32";
	char text[8192], path[4096];
	int len = snprintf(text, sizeof text,
		"# CLoQ adapter for %s, 4-bit NF4 (bitsandbytes)\n"
		"\n"
		"Made by cloq against exactly the NF4 weights bitsandbytes computes from the original\n"
		"checkpoint (block size %d%s, weights in %s). Load the base the same way:\n"
		"\n"
		"```python\n"
		"import torch\n"
		"from transformers import AutoModelForCausalLM, BitsAndBytesConfig\n"
		"from peft import PeftModel\n"
		"\n"
		"bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=\"nf4\",\n"
		"                         bnb_4bit_use_double_quant=%s, bnb_4bit_compute_dtype=%s)\n"
		"model = AutoModelForCausalLM.from_pretrained(\"%s\", quantization_config=bnb,\n"
		"                                             torch_dtype=%s)\n"
		"model = PeftModel.from_pretrained(model, \"PATH/TO/THIS/DIRECTORY\", is_trainable=True)\n"
		"```\n"
		"\n"
		"`torch_dtype` must be the checkpoint's own dtype (bitsandbytes rounds the dequantized\n"
		"weights to it) and the double-quantization flag as above; another setting gives another\n"
		"base than the one this adapter was calibrated against.%s\n",
		base, qf->nf_block, qf->nf_double ? ", double quantization" : "", cloq_dtype_name(qf->nf_dtype),
		qf->nf_double ? "True" : "False", td, base, td,
		qf->nf_block != 64 ? " The block size is not transformers' 64: build the base with\n"
				     "bitsandbytes' Linear4bit(blocksize=...) yourself." : "");
	if (len < 0 || len >= (int)sizeof text || snprintf(path, sizeof path, "%s/README.md", dir) >= (int)sizeof path)
		return cloq_err_set(err, CLOQ_EUSAGE, "%s: name too long", dir);
	return cloq_write_file_atomic(path, text, (size_t)len, err);
}

static void base_model_name(const char *out, const cJSON *settings, char *buf, size_t cap)
{
	char path[4096], *text = NULL;
	size_t len;
	cJSON *c = NULL;
	buf[0] = '\0';
	snprintf(path, sizeof path, "%s/model/config.json", out);
	if (cloq_read_file(path, &text, &len, NULL) == CLOQ_OK && (c = cJSON_ParseWithLength(text, len))) {
		const cJSON *n = cJSON_GetObjectItemCaseSensitive(c, "_name_or_path");
		if (cJSON_IsString(n) && n->valuestring[0] && n->valuestring[0] != '/')
			snprintf(buf, cap, "%s", n->valuestring);
	}
	cJSON_Delete(c);
	cloq_free(text);
	if (buf[0])
		return;
	const cJSON *md = cJSON_GetObjectItemCaseSensitive(settings, "model_dir");
	if (cJSON_IsString(md)) {
		snprintf(path, sizeof path, "%s", md->valuestring);
		size_t n = strlen(path);
		while (n > 1 && path[n - 1] == '/')
			path[--n] = '\0';
		const char *b = strrchr(path, '/');
		snprintf(buf, cap, "%s", b ? b + 1 : path);
	}
	if (!buf[0] || !strcmp(buf, ".") || !strcmp(buf, ".."))
		snprintf(buf, cap, "model");
}

/* Is any zero point 0 anywhere? Then v1 cannot hold the checkpoint. A job made with
 * --gptq-zeros v1 promises none: one found is refused, naming the linear, rather than written as
 * a gptq_v2 file its user did not ask for. */
static int scan_needs_v2(exporter *E, int v1_job, int *needs, cloq_err *err)
{
	*needs = 0;
	for (int l = 0; l < E->cfg->layers && !*needs; l++) {
		int rc = load_layer(E, l, err);
		if (rc)
			return rc;
		int nx = layer_linears(E->cfg, l, E->xl);
		for (int i = 0; i < nx && !*needs; i++) {
			const cloq_stored_linear *s;
			out_tensor t = {.layer = l, .lin = E->xl[i].lin};
			if (!packable(E, E->xl[i].out, E->xl[i].in))
				continue;
			if ((rc = linear_of(E, &t, &s, err)))
				return rc;
			const cloq_qtensor *q = &s->q;
			if (!cloq_quant_needs_v2(q))
				continue;
			*needs = 1;
			size_t k = 0;
			while (q->zero[k] != 0)
				k++;
			if (v1_job)
				return cloq_err_set(err, CLOQ_EINTEGRITY,
						    "%s: zero point 0 at row %zu, group %zu, in a job "
						    "made with --gptq-zeros v1: GPTQ v1 cannot store it, and this job "
						    "promises a v1 checkpoint; refusing to export",
						    E->xl[i].p, k / (size_t)q->ngroups, k % (size_t)q->ngroups);
		}
	}
	return CLOQ_OK;
}

int cloq_cmd_export(int argc, char **argv, cloq_err *err)
{
	int rc = CLOQ_OK;
	const char *out = NULL, *to = NULL;
	int gptq = 1, fmt = -1; /* FMT_*; -1: the job's default */
	enum cloq_dtype dtype = CLOQ_DT_F16, adtype = CLOQ_DT_F32;
	uint64_t max_bytes = MAX_SHARD_BYTES;
	exporter E;
	memset(&E, 0, sizeof E);
	E.cur_layer = -1;
	E.cur_e = -1;
	out_tensor *ts = NULL, *ad = NULL;
	cJSON *cfgj = NULL, *qc = NULL, *acfg = NULL, *marker = NULL;
	char *cfgtext = NULL;
	if (cloq_cli_wants_help(argc, argv)) {
		fputs(help, stdout);
		return CLOQ_OK;
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = NULL;
		int takes = !strcmp(a, "--to") || !strcmp(a, "--format") || !strcmp(a, "--dtype") ||
			    !strcmp(a, "--adapter-dtype") || !strcmp(a, "--max-shard-size");
		if (takes && (rc = cloq_cli_value(argc, argv, &i, &v, err)))
			return rc;
		if (!strcmp(a, "--to")) {
			to = v;
		} else if (!strcmp(a, "--format")) {
			if (!strcmp(v, "gptq"))
				fmt = FMT_GPTQ;
			else if (!strcmp(v, "dequant"))
				fmt = FMT_DEQUANT;
			else if (!strcmp(v, "peft-only"))
				fmt = FMT_PEFT;
			else
				return cloq_err_set(err, CLOQ_EUSAGE, "--format: expected gptq, dequant or peft-only, got '%s'",
						    v);
		} else if (!strcmp(a, "--dtype") || !strcmp(a, "--adapter-dtype")) {
			enum cloq_dtype d = !strcmp(v, "fp16") ? CLOQ_DT_F16 : !strcmp(v, "bf16") ? CLOQ_DT_BF16 :
					    !strcmp(v, "fp32") ? CLOQ_DT_F32 : CLOQ_DT_INVALID;
			if (d == CLOQ_DT_INVALID || (a[2] == 'a' && d == CLOQ_DT_F16))
				return cloq_err_set(err, CLOQ_EUSAGE, "%s: expected %s, got '%s'", a,
						    a[2] == 'a' ? "fp32 or bf16" : "fp16, bf16 or fp32", v);
			if (a[2] == 'a')
				adtype = d;
			else
				dtype = d;
		} else if (!strcmp(a, "--max-shard-size")) {
			if ((rc = cloq_cli_size(a, v, 1024, MAX_SHARD_LIMIT, &max_bytes, err)))
				return rc;
		} else if (a[0] == '-' && a[1] != '\0') {
			return cloq_err_set(err, CLOQ_EUSAGE, "unknown option '%s'", a);
		} else if (!out) {
			out = a;
		} else {
			return cloq_err_set(err, CLOQ_EUSAGE, "unexpected argument '%s'", a);
		}
	}
	if (!out || !to)
		return cloq_err_set(err, CLOQ_EUSAGE, "need OUT and --to DIR");

	/* DIR without trailing slashes (a symbolic link: its target), its parent and last name */
	char dir[PATH_MAX], parent[PATH_MAX], tmp[PATH_MAX + 64], ident[17];
	int made_tmp = 0, state = DIR_ABSENT;
	struct stat lst;
	if (snprintf(dir, sizeof dir, "%s", to) >= (int)sizeof dir)
		return cloq_err_set(err, CLOQ_EUSAGE, "--to: path too long");
	for (size_t k = strlen(dir); k > 1 && dir[k - 1] == '/';)
		dir[--k] = '\0';
	if (lstat(dir, &lst) == 0 && S_ISLNK(lst.st_mode) && !realpath(to, dir))
		return cloq_err_set(err, CLOQ_EINPUT, "--to %s: a symbolic link that does not resolve: %s", to,
				    strerror(errno));
	const char *slash = strrchr(dir, '/');
	const char *base = slash ? slash + 1 : dir;
	if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
		return cloq_err_set(err, CLOQ_EUSAGE, "--to %s: name a directory by its own name, not '%s'", to,
				    *base ? base : "/");
	snprintf(parent, sizeof parent, "%.*s", slash ? (int)(slash - dir) : 1, slash ? dir : ".");
	if (!parent[0])
		snprintf(parent, sizeof parent, "/");

	/* not a job 2, busy 5, a shard missing or from another job 4, unfinished 6: as verify */
	CLOQ_TRY(cloq_outmodel_open(out, 1, "cloq export", &E.om, err));
	const cloq_journal *j = &E.om->job.j;
	CLOQ_TRY(job_identity(out, ident, err));
	CLOQ_TRY(classify_dir(dir, ident, &state, err));
	E.cfg = &E.om->cfg;
	{
		const cloq_qform *qf = &E.om->qf;
		const char *qn = qf->quantizer == CLOQ_Q_NF ? "nf" : qf->quantizer == CLOQ_Q_NF4_BNB ? "nf4-bnb" : NULL;
		if (fmt < 0)
			fmt = qf->quantizer == CLOQ_Q_NF4_BNB ? FMT_PEFT : qf->quantizer == CLOQ_Q_NF ? FMT_DEQUANT : FMT_GPTQ;
		CLOQ_FAIL_IF(fmt == FMT_GPTQ && qn, err, CLOQ_EINPUT,
			     "%s was quantized with --quantizer %s (NormalFloat codes), which a GPTQ checkpoint "
			     "cannot hold; export it with --format %s or --format dequant",
			     out, qn, qf->quantizer == CLOQ_Q_NF4_BNB ? "peft-only" : "dequant");
		CLOQ_FAIL_IF(fmt == FMT_PEFT && qf->quantizer != CLOQ_Q_NF4_BNB, err, CLOQ_EINPUT,
			     "%s: --format peft-only writes an adapter for the original checkpoint loaded by "
			     "bitsandbytes (NF4), so it needs a job made with --quantizer nf4-bnb; this job's "
			     "adapter belongs to its own quantized base (--format gptq or dequant)",
			     out);
		gptq = fmt == FMT_GPTQ;
	}
	E.gptq = gptq;
	E.dtype = dtype;
	E.adtype = adtype;
	E.sym = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j->settings, "sym"));
	E.act_order = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j->settings, "act_order"));
	E.xl = cloq_malloc((size_t)(CLOQ_LINEARS + 3 * (E.cfg->moe + 1)) * sizeof *E.xl);
	CLOQ_FAIL_IF(!E.xl, err, CLOQ_EIO, "out of memory");
	E.format = CLOQ_GPTQ_V1;
	if (gptq) {
		int needs = 0;
		const cJSON *gz = cJSON_GetObjectItemCaseSensitive(j->settings, "gptq_zeros");
		CLOQ_TRY(scan_needs_v2(&E, cJSON_IsString(gz) && !strcmp(gz->valuestring, "v1"), &needs, err));
		if (needs)
			E.format = CLOQ_GPTQ_V2;
	}
	/* build the whole export in DIR.tmp.PID beside DIR, then swap it in (DIR's parents are made
	 * as `convert -o` makes OUT's) */
	CLOQ_TRY(cloq_mkdir_p(parent, err));
	remove_dead_temps(parent, base);
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dir, (long)getpid());
	rm_tree(tmp);
	CLOQ_FAIL_IF(mkdir(tmp, 0777) != 0, err, CLOQ_EIO, "%s: cannot create: %s", tmp, strerror(errno));
	made_tmp = 1;
	const char *to_w = tmp;
	char adir[PATH_MAX + 128];
	snprintf(adir, sizeof adir, fmt == FMT_PEFT ? "%s" : "%s/adapter", tmp);
	CLOQ_TRY(cloq_mkdir_p(adir, err));

	/* ---- the base model ---- */
	const cloq_config *c = E.cfg;
	size_t per = (size_t)CLOQ_LINEARS + 3 * (c->moe + 1); /* linears a layer, at most */
	size_t cap = (size_t)c->layers * (per * 5 + 8) + 3;
	ts = cloq_calloc(cap, sizeof *ts);
	ad = cloq_calloc((size_t)c->layers * per * 2, sizeof *ad);
	CLOQ_FAIL_IF(!ts || !ad, err, CLOQ_EIO, "out of memory");
	size_t n = 0, na = 0;
	add(ts, &n, dtype, c->vocab, c->hidden, -1, -1, K_EMBED, "model.embed_tokens.weight");
	for (int l = 0; l < c->layers; l++) {
		const char *nn[4];
		cloq_norm_names(c, nn);
		for (int role = 0; role < 4; role++)
			if (nn[role])
				add(ts, &n, dtype, c->hidden, 0, l, -1, K_NORM0 + role, "model.layers.%d.%s.weight", l, nn[role]);
		if (c->qk_norm) {
			add(ts, &n, dtype, c->head_dim, 0, l, -1, K_QNORM, "model.layers.%d.self_attn.q_norm.weight", l);
			add(ts, &n, dtype, c->head_dim, 0, l, -1, K_KNORM, "model.layers.%d.self_attn.k_norm.weight", l);
		}
		if (cloq_layer_is_moe(c, l)) { /* the router and the shared expert's gate stay dense */
			char rn[160];
			cloq_moe_router_name(c, l, rn, sizeof rn);
			add(ts, &n, dtype, c->moe, c->hidden, l, -1, K_ROUTER, "%s", rn);
			if (c->moe_shared_inter) {
				cloq_moe_shared_gate_name(l, rn, sizeof rn);
				add(ts, &n, dtype, 1, c->hidden, l, -1, K_SGATE, "%s", rn);
			}
		}
		int nx = layer_linears(c, l, E.xl);
		for (int i = 0; i < nx; i++) {
			int lin = E.xl[i].lin, o = E.xl[i].out, in = E.xl[i].in;
			const char *p = E.xl[i].p;
			int b = E.om->bits, ng = (in + E.om->group_size - 1) / E.om->group_size;
			if (packable(&E, o, in)) {
				add(ts, &n, CLOQ_DT_I32, (int64_t)in * b / 32, o, l, lin, K_QWEIGHT, "%s.qweight", p);
				add(ts, &n, CLOQ_DT_I32, ng, (int64_t)o * b / 32, l, lin, K_QZEROS, "%s.qzeros", p);
				add(ts, &n, CLOQ_DT_F16, ng, o, l, lin, K_SCALES, "%s.scales", p);
				add(ts, &n, CLOQ_DT_I32, in, 0, l, lin, K_GIDX, "%s.g_idx", p);
			} else {
				add(ts, &n, dtype, o, in, l, lin, K_DENSE, "%s.weight", p);
			}
			int has_bias = lin <= CLOQ_LIN_V ? c->qkv_bias : lin == CLOQ_LIN_O ? c->o_bias : lin < CLOQ_LINEARS && c->mlp_bias;
			if (has_bias)
				add(ts, &n, gptq ? CLOQ_DT_F16 : dtype, o, 0, l, lin, K_BIAS, "%s.bias", p);
			add(ad, &na, adtype, E.om->rank, in, l, lin, K_LORA_A, "base_model.model.%s.lora_A.weight", p);
			add(ad, &na, adtype, o, E.om->rank, l, lin, K_LORA_B, "base_model.model.%s.lora_B.weight", p);
		}
	}
	add(ts, &n, dtype, c->hidden, 0, -1, -1, K_FNORM, "model.norm.weight");
	if (E.om->head != E.om->embed)
		add(ts, &n, dtype, c->vocab, c->hidden, -1, -1, K_HEAD, "lm_head.weight");
	if (fmt != FMT_PEFT)
		CLOQ_TRY(write_files(&E, to_w, "model.safetensors", "model", "model.safetensors.index.json", ts, n, max_bytes,
				     err));
	CLOQ_TRY(write_files(&E, adir, "adapter_model.safetensors", "adapter_model", "adapter_model.safetensors.index.json",
			     ad, na, UINT64_MAX, err));

	/* ---- small files; config.json last ---- */
	char mdir[4096];
	snprintf(mdir, sizeof mdir, "%s/model", out);
	static const char *const copies[] = {"tokenizer.json", "tokenizer_config.json", "generation_config.json",
					     "special_tokens_map.json", "tokenizer.model"};
	for (size_t i = 0; i < sizeof copies / sizeof copies[0] && fmt != FMT_PEFT; i++)
		CLOQ_TRY(copy_file(mdir, to_w, copies[i], err));

	acfg = cJSON_CreateObject();
	cJSON_AddStringToObject(acfg, "peft_type", "LORA");
	cJSON_AddStringToObject(acfg, "task_type", "CAUSAL_LM");
	cJSON_AddNumberToObject(acfg, "r", E.om->rank);
	cJSON_AddNumberToObject(acfg, "lora_alpha", E.om->scaling * E.om->rank);
	cJSON_AddNumberToObject(acfg, "lora_dropout", 0.0);
	cJSON_AddStringToObject(acfg, "bias", "none");
	cJSON_AddBoolToObject(acfg, "fan_in_fan_out", 0);
	cJSON_AddBoolToObject(acfg, "inference_mode", 0);
	cJSON_AddBoolToObject(acfg, "init_lora_weights", 1);
	char bname[512];
	if (fmt == FMT_PEFT)
		base_model_name(out, j->settings, bname, sizeof bname);
	else /* the adapter belongs with the quantized base in DIR (see the top) */
		snprintf(bname, sizeof bname, "%s", base);
	cJSON_AddStringToObject(acfg, "base_model_name_or_path", bname);
	/* PEFT matches a target against the end of each module's name: the linears' last components
	 * (a sparse layer's router, mlp.gate / block_sparse_moe.gate, matches none of them) */
	cJSON *tm = cJSON_AddArrayToObject(acfg, "target_modules");
	for (int l = 0; l < c->layers; l++) {
		int nx = layer_linears(c, l, E.xl);
		for (int i = 0; i < nx; i++)
			add_unique(tm, strrchr(E.xl[i].p, '.') + 1);
	}
	/* Only LoraConfig fields: PEFT before huggingface/peft#2038 raises TypeError on any other key
	 * ("LoraConfig.__init__() got an unexpected keyword argument"); the init is in OUT's journal. */
	CLOQ_TRY(write_json(adir, "adapter_config.json", acfg, err));

	if (fmt == FMT_PEFT) {
		CLOQ_TRY(write_qlora_readme(tmp, bname, &E.om->qf, err));
		goto marker;
	}
	snprintf(mdir, sizeof mdir, "%s/model/config.json", out);
	size_t len;
	CLOQ_TRY(cloq_read_file(mdir, &cfgtext, &len, err));
	cfgj = cJSON_Parse(cfgtext);
	CLOQ_FAIL_IF(!cfgj, err, CLOQ_EINPUT, "%s: not valid JSON", mdir);
	cJSON_DeleteItemFromObjectCaseSensitive(cfgj, "torch_dtype");
	cJSON_AddStringToObject(cfgj, "torch_dtype", dtype == CLOQ_DT_BF16 ? "bfloat16" : dtype == CLOQ_DT_F32 ? "float32" : "float16");
	cJSON_DeleteItemFromObjectCaseSensitive(cfgj, "quantization_config");
	if (gptq) {
		qc = cJSON_CreateObject();
		cJSON_AddStringToObject(qc, "quant_method", "gptq");
		cJSON_AddNumberToObject(qc, "bits", E.om->bits);
		cJSON_AddNumberToObject(qc, "group_size", E.om->group_size);
		cJSON_AddBoolToObject(qc, "desc_act", E.act_order);
		cJSON_AddBoolToObject(qc, "static_groups", E.act_order);
		cJSON_AddBoolToObject(qc, "sym", E.sym);
		cJSON_AddBoolToObject(qc, "true_sequential", 1);
		cJSON_AddNumberToObject(qc, "damp_percent", 0.01);
		cJSON_AddStringToObject(qc, "checkpoint_format", E.format == CLOQ_GPTQ_V2 ? "gptq_v2" : "gptq");
		cJSON *blk = cJSON_CreateArray(), *grp = cJSON_CreateArray();
		cJSON *dense = cJSON_CreateArray();
		for (int l = 0; l < c->layers; l++) { /* names within a block, over every kind of block */
			int nx = layer_linears(c, l, E.xl);
			for (int i = 0; i < nx; i++)
				add_unique(packable(&E, E.xl[i].out, E.xl[i].in) ? grp : dense, strchr(E.xl[i].p + 13, '.') + 1);
			if (cloq_layer_is_moe(c, l)) { /* the router (and shared expert gate): full precision */
				add_unique(dense, c->moe_mixtral_names ? "block_sparse_moe.gate" : "mlp.gate");
				if (c->moe_shared_inter)
					add_unique(dense, "mlp.shared_expert_gate");
			}
		}
		cJSON_AddItemToArray(blk, grp);
		cJSON_AddItemToObject(qc, "modules_in_block_to_quantize", blk);
		cJSON_AddItemToObject(qc, "modules_not_converted", dense);
		CLOQ_TRY(write_json(to_w, "quantize_config.json", qc, err));
		cJSON_AddItemToObject(cfgj, "quantization_config", cJSON_Duplicate(qc, 1));
	}
	CLOQ_TRY(write_json(to_w, "config.json", cfgj, err));
marker:
	marker = cJSON_CreateObject();
	CLOQ_FAIL_IF(!marker, err, CLOQ_EIO, "out of memory");
	cJSON_AddStringToObject(marker, "format", "cloq-export");
	cJSON_AddNumberToObject(marker, "version", 1);
	cJSON_AddStringToObject(marker, "job", ident);
	CLOQ_TRY(write_json(to_w, MARKER, marker, err));
	CLOQ_TRY(cloq_fsync_dir(adir, err));
	CLOQ_TRY(cloq_fsync_dir(tmp, err));
	CLOQ_TRY(swap_in(tmp, dir, parent, state, err));
	made_tmp = 0;
	int dense_n = 0, all_n = 0;
	for (int l = 0; l < E.cfg->layers; l++) {
		int nx = layer_linears(E.cfg, l, E.xl);
		for (int i = 0; i < nx; i++)
			dense_n += gptq && !packable(&E, E.xl[i].out, E.xl[i].in);
		all_n += nx;
	}
	if (fmt == FMT_PEFT) {
		printf("exported the LoRA adapter of %s to %s (PEFT, for the original checkpoint loaded by bitsandbytes "
		       "NF4%s); %s/README.md has the load lines\n",
		       out, dir, E.om->qf.nf_double ? " with double quantization" : "", dir);
		if (E.om->qf.nf_block != 64)
			printf("note: block size %d: transformers' BitsAndBytesConfig always uses 64; load the base "
			       "with bitsandbytes' Linear4bit(blocksize=%d) yourself\n",
			       E.om->qf.nf_block, E.om->qf.nf_block);
		goto fail;
	}
	printf("exported %s to %s (%s%s", out, dir, gptq ? "GPTQ " : "dense ",
	       gptq ? (E.format == CLOQ_GPTQ_V2 ? "gptq_v2, zero points of 0 present" : "v1") : cloq_dtype_name(dtype));
	if (dense_n)
		printf("; %d of %d linears stay dense: their shapes cannot be packed", dense_n, all_n);
	printf(") and the LoRA adapter to %s/adapter\n", dir);
	if (gptq && E.format == CLOQ_GPTQ_V2)
		printf("note: checkpoint_format gptq_v2 (true zero points) is read right by GPTQModel and by\n"
		       "  transformers >= 4.49 with gptqmodel (+ optimum); AutoGPTQ's kernels, transformers <= 4.48\n"
		       "  with auto-gptq, and any loader that ignores checkpoint_format read it silently wrong.\n"
		       "  For a file every loader reads: 'cloq convert ... --gptq-zeros v1' (the default)\n");
fail:
	if (made_tmp)
		rm_tree(tmp);
	cJSON_Delete(marker);
	unload(&E);
	cloq_outmodel_close(E.om);
	cloq_free(E.xl);
	cloq_free(ts);
	cloq_free(ad);
	cloq_free(cfgtext);
	cJSON_Delete(cfgj);
	cJSON_Delete(qc);
	cJSON_Delete(acfg);
	return rc;
}
