/*
 * cloq_convert.c - the conversion job: the staged per-layer pipeline, resume, report
 * (see cloq_convert.h for the OUT/ layout and the order of durable steps).
 */
#include "cloq_convert.h"
#include "cloq_job.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#include <cjson/cJSON.h>
#include <omp.h>
#include <xxhash.h>

#include "cloq_actcache.h"
#include "cloq_calib.h"
#include "cloq_cli.h"
#include "cloq_inputs.h"
#include "cloq_interrupt.h"
#include "cloq_jobcheck.h"
#include "cloq_journal.h"
#include "cloq_layerstore.h"
#include "cloq_lock.h"
#include "cloq_model.h"
#include "cloq_moe.h"
#include "cloq_plan.h"
#include "cloq_prefetch.h"
#include "cloq_reader.h"
#include "cloq_quant.h"
#include "cloq_shard.h"
#include "cloq_solver.h"
#include "cloq_sys.h"

extern void openblas_set_num_threads(int);

/* ---- small utilities ---------------------------------------------------------------------- */
double cloq_job_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double cloq_peak_rss_gib(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss / (1024.0 * 1024.0);
}

static void fmt_eta(double s, char *buf, size_t cap)
{
	if (!(s >= 0) || s > 1e7) {
		snprintf(buf, cap, "--:--:--");
		return;
	}
	long t = (long)(s + 0.5);
	snprintf(buf, cap, "%02ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

static void hex64(uint64_t h, char out[40])
{
	snprintf(out, 40, "%016llx", (unsigned long long)h);
}

/* XXH3-64 of a whole file as the journal and manifest keep it (hex), and its size. */
static int hash_file(const char *path, char hex[40], uint64_t *size, cloq_err *err)
{
	int rc = cloq_file_xxh3_hex(path, hex, err);
	struct stat st;
	if (rc == CLOQ_OK && size)
		*size = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
	return rc;
}

/* ---- the job ------------------------------------------------------------------------------- */
static const char *const stage_names[ST_NSTAGES] = {"read", "statistics", "quantize", "solve", "propagate",
						    "write"};

void cloq_job_progress(job *J, int l, const char *stage, double frac, double tok_s)
{
	if (J->o.quiet)
		return;
	char eta[32];
	int L = J->cfg->layers;
	/* seconds per layer: measured once a layer of this run is done, before that the time model's
	 * (inspect's, at the sgemm rate probed when the run started); the current layer's remainder
	 * is that minus the time it has already taken */
	double per_layer = J->layers_run ? J->layer_s_sum / J->layers_run : J->est_layer_s;
	double in_layer = cloq_job_now() - J->layer_t0, left = per_layer - in_layer;
	if (left < 0.05 * per_layer)
		left = 0.05 * per_layer;
	fmt_eta(per_layer < 0 ? -1 : per_layer * (J->last_todo - l) + left, eta, sizeof eta);
	int tty = isatty(2);
	fprintf(stderr, "%slayer %d/%d  %-10s %5.1f%%  %8.0f tok/s  ETA %s  peak RSS %.2f GiB%s", tty ? "\r\033[K" : "",
		l + 1, L, stage, 100.0 * frac, tok_s, eta, cloq_peak_rss_gib(), tty ? "" : "\n");
	fflush(stderr);
}

void cloq_job_cache_path(const job *J, int l, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/cache/act_%05d.cloqact", J->out, l);
}

/* --asym-calib: the original model's activations at layer l */
static void cache_fp_path(const job *J, int l, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/cache/fp_%05d.cloqact", J->out, l);
}

/* ---- settings and fingerprint -------------------------------------------------------------- */
static const char *quantizer_name(int q)
{
	return q == CLOQ_Q_RTN ? "rtn" : q == CLOQ_Q_NF ? "nf" : q == CLOQ_Q_NF4_BNB ? "nf4-bnb" : "gptq";
}
static const char *init_name(int i) { return i == CLOQ_INIT_LOFTQ ? "loftq" : i == CLOQ_INIT_ZERO ? "zero" : "cloq"; }
static const char *prop_name(int p) { return p == CLOQ_PROP_LORA ? "lora" : p == CLOQ_PROP_FP ? "fp" : "quantized"; }

static cJSON *settings_json(const cloq_convert_opts *o)
{
	cJSON *s = cJSON_CreateObject();
	char abs[4096];
	cJSON_AddStringToObject(s, "model_dir", realpath(o->model_dir, abs) ? abs : o->model_dir);
	if (o->calib_text)
		cJSON_AddStringToObject(s, "calib", realpath(o->calib_text, abs) ? abs : o->calib_text);
	else
		cJSON_AddStringToObject(s, "calib_tokens", realpath(o->calib_tokens, abs) ? abs : o->calib_tokens);
	cJSON_AddNumberToObject(s, "nsamples", o->nsamples_given ? o->nsamples : 0);
	cJSON_AddNumberToObject(s, "seqlen", o->seqlen);
	cJSON_AddNumberToObject(s, "seed", (double)o->seed);
	cJSON_AddNumberToObject(s, "bits", o->bits);
	cJSON_AddNumberToObject(s, "group_size", o->group_size);
	cJSON_AddStringToObject(s, "quantizer", quantizer_name(o->quantizer));
	if (o->quantizer == CLOQ_Q_NF || o->quantizer == CLOQ_Q_NF4_BNB) { /* only then: older jobs keep their settings */
		cJSON_AddNumberToObject(s, "nf_block", o->nf_block);
		cJSON_AddStringToObject(s, "nf_dtype", cloq_dtype_name((enum cloq_dtype)o->nf_dtype));
	}
	if (o->quantizer == CLOQ_Q_NF4_BNB)
		cJSON_AddBoolToObject(s, "bnb_double_quant", o->bnb_double_quant);
	cJSON_AddBoolToObject(s, "sym", o->sym);
	cJSON_AddBoolToObject(s, "act_order", o->act_order);
	if (o->magr) /* only then: older jobs keep their settings */
		cJSON_AddBoolToObject(s, "magr", 1);
	if (o->asym)
		cJSON_AddBoolToObject(s, "asym_calib", 1);
	cJSON_AddStringToObject(s, "gptq_zeros", o->gptq_zeros == 2 ? "v2" : "v1");
	cJSON_AddStringToObject(s, "init", init_name(o->init));
	cJSON_AddNumberToObject(s, "rank", o->rank);
	cJSON_AddNumberToObject(s, "lora_alpha", o->lora_alpha > 0 ? o->lora_alpha : o->rank);
	cJSON_AddNumberToObject(s, "cloq_iters", o->cloq_iters);
	cJSON_AddNumberToObject(s, "loftq_iters", o->loftq_iters);
	cJSON_AddStringToObject(s, "propagate", prop_name(o->propagate));
	cJSON_AddBoolToObject(s, "one_pass", o->one_pass);
	cJSON_AddStringToObject(s, "cache_dtype", o->cache_bf16 ? "bf16" : "fp32");
	cJSON_AddBoolToObject(s, "baselines", o->baselines);
	/* OpenBLAS's sums depend on its thread count, so the bytes of a job do too: the count is
	 * part of what a job is, and resume reuses it (see run()). */
	cJSON_AddNumberToObject(s, "threads", o->threads);
	/* so are the forward's, on the number of windows forwarded at once (cloq_plan.h) */
	cJSON_AddNumberToObject(s, "window_slots", o->window_slots > 0 ? o->window_slots : 1);
	return s;
}

int cloq_convert_check_settings(const cJSON *s, const char *path, cloq_err *err)
{
	static const struct {
		const char *key;
		double lo, hi;
	} ints[] = {
		{"nsamples", 0, 1 << 24}, {"seqlen", 2, 1 << 20}, {"seed", 0, 0x7fffffff}, {"bits", 2, 8},
		{"group_size", 1, 1 << 20}, {"rank", 1, 1 << 16}, {"cloq_iters", 1, 100}, {"loftq_iters", 1, 100},
		{"threads", 0, 1024},
	};
	if (!cJSON_IsObject(s))
		return cloq_err_set(err, CLOQ_EINPUT, "%s: 'settings' is not an object", path);
	const cJSON *ws = cJSON_GetObjectItemCaseSensitive(s, "window_slots"); /* absent: one slot */
	if (ws && (!cJSON_IsNumber(ws) || ws->valuedouble < 1 || ws->valuedouble > 1024 ||
		   ws->valuedouble != floor(ws->valuedouble)))
		return cloq_err_set(err, CLOQ_EINPUT, "%s: settings.window_slots: expected an integer in [1, 1024]", path);
	for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, ints[i].key);
		if (!cJSON_IsNumber(v))
			return cloq_err_set(err, CLOQ_EINPUT, "%s: settings.%s is missing or not a number", path, ints[i].key);
		double x = v->valuedouble;
		if (!(x >= ints[i].lo && x <= ints[i].hi) || x != floor(x))
			return cloq_err_set(err, CLOQ_EINPUT, "%s: settings.%s: expected an integer in [%.0f, %.0f], got %.17g",
					    path, ints[i].key, ints[i].lo, ints[i].hi, x);
	}
	const cJSON *gz = cJSON_GetObjectItemCaseSensitive(s, "gptq_zeros");
	if (gz && (!cJSON_IsString(gz) || (strcmp(gz->valuestring, "v1") && strcmp(gz->valuestring, "v2"))))
		return cloq_err_set(err, CLOQ_EINPUT, "%s: settings.gptq_zeros: expected \"v1\" or \"v2\"", path);
	const cJSON *qz = cJSON_GetObjectItemCaseSensitive(s, "quantizer");
	static const char *const qnames[] = {"gptq", "rtn", "nf", "nf4-bnb"};
	int qk = -1;
	for (int i = 0; i < 4 && cJSON_IsString(qz); i++)
		if (!strcmp(qz->valuestring, qnames[i]))
			qk = i;
	if (qk < 0)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: settings.quantizer: expected gptq, rtn, nf or nf4-bnb", path);
	if (qk >= CLOQ_Q_NF) {
		const cJSON *nb = cJSON_GetObjectItemCaseSensitive(s, "nf_block");
		const cJSON *nd = cJSON_GetObjectItemCaseSensitive(s, "nf_dtype");
		enum cloq_dtype dt = cJSON_IsString(nd) ? cloq_dtype_from_name(nd->valuestring) : CLOQ_DT_INVALID;
		if (!cJSON_IsNumber(nb) || nb->valuedouble != floor(nb->valuedouble) || nb->valuedouble < 1 ||
		    nb->valuedouble > 4096)
			return cloq_err_set(err, CLOQ_EINPUT, "%s: settings.nf_block: expected an integer in [1, 4096]", path);
		if (dt != CLOQ_DT_F32 && dt != CLOQ_DT_BF16 && dt != CLOQ_DT_F16)
			return cloq_err_set(err, CLOQ_EINPUT, "%s: settings.nf_dtype: expected \"F32\", \"BF16\" or \"F16\"",
					    path);
		if (qk == CLOQ_Q_NF4_BNB && !cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(s, "bnb_double_quant")))
			return cloq_err_set(err, CLOQ_EINPUT, "%s: settings.bnb_double_quant: expected true or false", path);
	}
	int bits = cJSON_GetObjectItemCaseSensitive(s, "bits")->valueint;
	if (qk >= CLOQ_Q_NF && bits > 4)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: settings.bits: %d with a NormalFloat quantizer", path, bits);
	if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: settings.bits: expected 2, 3, 4 or 8, got %d", path, bits);
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(s, "lora_alpha");
	if (!cJSON_IsNumber(a))
		return cloq_err_set(err, CLOQ_EINPUT, "%s: settings.lora_alpha is missing or not a number", path);
	double rank = cJSON_GetObjectItemCaseSensitive(s, "rank")->valuedouble, sc = a->valuedouble / rank;
	if (!isfinite(a->valuedouble) || !(sc >= CLOQ_SCALING_MIN && sc <= CLOQ_SCALING_MAX))
		return cloq_err_set(err, CLOQ_EINPUT,
				    "%s: settings.lora_alpha: %g gives the scaling alpha / rank = %g, outside [%g, %g]", path,
				    a->valuedouble, sc, CLOQ_SCALING_MIN, CLOQ_SCALING_MAX);
	return CLOQ_OK;
}

static int settings_from_json(const cJSON *s, const char *out_dir, cloq_convert_opts *o, cloq_err *err)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/journal.json", out_dir);
	int rc = cloq_convert_check_settings(s, path, err);
	if (rc)
		return rc;
	cloq_convert_default_opts(o);
#define STR(k) (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(s, k)) ? cJSON_GetObjectItemCaseSensitive(s, k)->valuestring : NULL)
#define NUM(k) (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(s, k)) ? cJSON_GetObjectItemCaseSensitive(s, k)->valuedouble : -1)
#define BOOL(k) cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(s, k))
	o->model_dir = STR("model_dir");
	o->calib_text = STR("calib");
	o->calib_tokens = STR("calib_tokens");
	if (!o->model_dir || (!o->calib_text && !o->calib_tokens))
		return cloq_err_set(err, CLOQ_EINPUT, "%s: settings lack model_dir or a calibration source", path);
	o->nsamples = (int)NUM("nsamples");
	o->nsamples_given = o->nsamples > 0;
	if (!o->nsamples_given)
		o->nsamples = 128;
	o->seqlen = (int)NUM("seqlen");
	o->seqlen_given = 1;
	o->seed = (uint64_t)NUM("seed");
	o->bits = (int)NUM("bits");
	o->group_size = (int)NUM("group_size");
	const char *q = STR("quantizer"), *in = STR("init"), *p = STR("propagate"), *cd = STR("cache_dtype");
	o->quantizer = q && !strcmp(q, "rtn") ? CLOQ_Q_RTN : q && !strcmp(q, "nf") ? CLOQ_Q_NF
		       : q && !strcmp(q, "nf4-bnb") ? CLOQ_Q_NF4_BNB : CLOQ_Q_GPTQ;
	if (o->quantizer == CLOQ_Q_NF || o->quantizer == CLOQ_Q_NF4_BNB) {
		o->nf_block = (int)NUM("nf_block");
		o->nf_dtype = cloq_dtype_from_name(STR("nf_dtype"));
		o->bnb_double_quant = BOOL("bnb_double_quant");
	}
	o->init = in && !strcmp(in, "loftq") ? CLOQ_INIT_LOFTQ : in && !strcmp(in, "zero") ? CLOQ_INIT_ZERO : CLOQ_INIT_CLOQ;
	o->propagate = p && !strcmp(p, "lora") ? CLOQ_PROP_LORA : p && !strcmp(p, "fp") ? CLOQ_PROP_FP : CLOQ_PROP_QUANTIZED;
	o->cache_bf16 = cd && !strcmp(cd, "bf16");
	o->sym = BOOL("sym");
	o->act_order = BOOL("act_order");
	o->magr = BOOL("magr");
	o->asym = BOOL("asym_calib");
	const char *gz = STR("gptq_zeros"); /* absent: a job from before the option, unconstrained */
	o->gptq_zeros = gz && !strcmp(gz, "v1") ? 1 : 2;
	o->rank = (int)NUM("rank");
	o->lora_alpha = NUM("lora_alpha");
	o->cloq_iters = (int)NUM("cloq_iters");
	o->loftq_iters = (int)NUM("loftq_iters");
	o->one_pass = BOOL("one_pass");
	o->baselines = BOOL("baselines");
	o->threads = (int)NUM("threads");
	o->window_slots = NUM("window_slots") > 0 ? (int)NUM("window_slots") : 1;
#undef STR
#undef NUM
#undef BOOL
	return CLOQ_OK;
}

/* What the output depends on besides the settings: the bytes of config.json, each safetensors
 * file's size and header, the calibration windows, the tool version and its numeric build. The
 * weights' bytes are pinned tensor by tensor as they are read (src/job/cloq_inputs.h), not here:
 * reading whole weight files up front would double the job's I/O. */
static int fingerprint_json(job *J, cJSON **out, cloq_err *err)
{
	int rc = CLOQ_OK;
	char path[4096];
	cJSON *fp = cJSON_CreateObject(), *files = NULL;
	CLOQ_FAIL_IF(!fp, err, CLOQ_EIO, "out of memory");
	char tool[64];
	snprintf(tool, sizeof tool, "cloq %s", cloq_version());
	cJSON_AddStringToObject(fp, "tool", tool);
	cJSON_AddStringToObject(fp, "numerics", cloq_build_numerics());
	snprintf(path, sizeof path, "%s/config.json", J->o.model_dir);
	char hex[40];
	CLOQ_TRY(hash_file(path, hex, NULL, err));
	cJSON_AddStringToObject(fp, "config_xxh3", hex);
	files = cJSON_AddArrayToObject(fp, "safetensors");
	for (size_t i = 0; i < cloq_st_nfiles(J->m->st); i++) {
		const char *p = cloq_st_file_path(J->m->st, i);
		uint64_t hdr = cloq_st_file_data_offset(J->m->st, i);
		char *buf = cloq_malloc(hdr);
		CLOQ_FAIL_IF(!buf, err, CLOQ_EIO, "out of memory");
		FILE *f = fopen(p, "rb");
		size_t got = f ? fread(buf, 1, hdr, f) : 0;
		if (f)
			fclose(f);
		uint64_t hh = XXH3_64bits(buf, got);
		cloq_free(buf);
		CLOQ_FAIL_IF(got != hdr, err, CLOQ_EIO, "%s: cannot read its header", p);
		cJSON *e = cJSON_CreateObject();
		const char *base = strrchr(p, '/');
		cJSON_AddStringToObject(e, "file", base ? base + 1 : p);
		cJSON_AddNumberToObject(e, "bytes", (double)cloq_st_file_size(J->m->st, i));
		hex64(hh, hex);
		cJSON_AddStringToObject(e, "header_xxh3", hex);
		cJSON_AddItemToArray(files, e);
	}
	hex64(XXH3_64bits(J->win.ids, (size_t)J->win.n * J->win.seqlen * sizeof(int32_t)), hex);
	cJSON_AddStringToObject(fp, "calib_windows_xxh3", hex);
	cJSON_AddNumberToObject(fp, "calib_windows", J->win.n);
	*out = fp;
	return CLOQ_OK;
fail:
	cJSON_Delete(fp);
	return rc;
}

/* ---- calibration windows ------------------------------------------------------------------- */
static int load_windows(job *J, cloq_err *err)
{
	int rc = CLOQ_OK;
	const cloq_convert_opts *o = &J->o;
	int32_t *ids = NULL;
	size_t n = 0;
	if (o->calib_tokens) {
		CLOQ_TRY(cloq_calib_from_npy(o->calib_tokens, o->nsamples_given ? o->nsamples : 0,
					     o->seqlen_given ? o->seqlen : 0, o->seed, &J->win, err));
	} else {
		CLOQ_TRY(cloq_calib_tokenize_file(o->model_dir, o->calib_text, &ids, &n, err));
		CLOQ_TRY(cloq_calib_draw(ids, n, o->nsamples, o->seqlen, o->seed, o->calib_text, &J->win, err));
	}
	CLOQ_TRY(cloq_windows_check(&J->win, J->cfg->vocab, J->cfg->max_pos,
				    o->calib_text ? o->calib_text : o->calib_tokens, err));
	CLOQ_TRY(cloq_config_check_seqlen(J->cfg, J->win.seqlen, o->model_dir, err));
	J->o.seqlen = J->win.seqlen;
	J->tokens = (long long)J->win.n * J->win.seqlen;
fail:
	cloq_free(ids);
	return rc;
}

/* ---- statistics ---------------------------------------------------------------------------- */
int cloq_job_gram_hook_fn(void *ctx, int group, const float *X, int t, int n, cloq_err *err)
{
	gram_hook *gh = ctx;
	if (gh->route && group == CLOQ_GROUP_GATEUP) { /* windows arrive in order: tokens are numbered so */
		cloq_moe_route(gh->J->cfg, gh->router, X, t, gh->probs, gh->sel, gh->wt);
		return cloq_moe_routing_add(gh->route, gh->probs, gh->sel, gh->wt, t, err);
	}
	if (!gh->g[group])
		return CLOQ_OK;
	if (gh->D[group]) {
		job *J = gh->J;
		if (J->cap_group != group)
			return cloq_err_set(err, CLOQ_EUSAGE, "asymmetric statistics without the original layer's input");
		for (size_t i = 0; i < (size_t)t * n; i++)
			J->diff[i] = J->cap[i] - X[i];
		cloq_cross_add(gh->D[group], J->cross_work, J->diff, X, t, n);
	}
	return cloq_gram_add(gh->g[group], X, t, err);
}

/* --asym-calib: the original layer's group inputs, appended to their stashes */
static int fp_stash_hook_fn(void *ctx, int group, const float *X, int t, int n, cloq_err *err)
{
	cloq_cache_writer **w = ctx;
	(void)n;
	return w[group] ? cloq_cache_append(w[group], X, t, err) : CLOQ_OK;
}

/* Scratch of the resumable passes (cloq_block_forward_from): per window, the state where the next
 * statistics pass of the same layer starts. Float32 always (bit-exact resumption, whatever the
 * cache encoding); rewritten by every layer and removed when the layer is done. */
static const int stash_cols_state[] = {CLOQ_STATE_ATT, CLOQ_STATE_H, CLOQ_STATE_ACT};
static const char *const stash_names[] = {"att", "h", "act"};

void cloq_job_stash_path(const job *J, int state, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/cache/stash_%s.cloqact", J->out, stash_names[state - CLOQ_STATE_ATT]);
}

static size_t state_cols(const cloq_config *c, int state)
{
	return state == CLOQ_STATE_ATT ? (size_t)c->heads * c->head_dim
	       : state == CLOQ_STATE_ACT ? (size_t)c->intermediate
					 : (size_t)c->hidden;
}

/* --asym-calib: the original layer's input of group g, one frame per window */
static void fp_stash_path(const job *J, int g, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/cache/fpin_%s.cloqact", J->out, cloq_group_names[g]);
}
static void remove_stashes(const job *J)
{
	char path[4096];
	for (size_t i = 0; i < sizeof stash_cols_state / sizeof stash_cols_state[0]; i++) {
		cloq_job_stash_path(J, stash_cols_state[i], path, sizeof path);
		unlink(path);
	}
	for (int g = 0; g < CLOQ_GROUPS; g++) {
		fp_stash_path(J, g, path, sizeof path);
		unlink(path);
	}
}

int cloq_job_open_checked(job *J, const char *path, size_t cols, cloq_cache_reader **r, cloq_err *err)
{
	int rc = CLOQ_OK;
	CLOQ_TRY(cloq_cache_open(path, r, err));
	CLOQ_FAIL_IF(cloq_cache_frames(*r) != (size_t)J->win.n || cloq_cache_cols(*r) != cols, err, CLOQ_EINTEGRITY,
		     "%s: holds %zu frames of width %zu, expected %d of %zu", path, cloq_cache_frames(*r),
		     cloq_cache_cols(*r), J->win.n, cols);
fail:
	return rc;
}

/* Frame i of a cache into dst, which must be one window: seqlen rows (the timing is the caller's). */
static int read_window(const job *J, cloq_cache_reader *r, int i, float *dst, const char *path, cloq_err *err)
{
	int rc = CLOQ_OK, rows = 0;
	CLOQ_TRY(cloq_cache_read_frame(r, (size_t)i, dst, &rows, err));
	CLOQ_FAIL_IF(rows != J->win.seqlen, err, CLOQ_EINTEGRITY, "%s: frame %d has %d rows, expected %d", path, i, rows,
		     J->win.seqlen);
fail:
	return rc;
}

int cloq_job_read_checked(job *J, cloq_cache_reader *r, int i, float *dst, const char *path, cloq_err *err)
{
	double tr = cloq_job_now();
	int rc = read_window(J, r, i, dst, path, err);
	J->stage_s[ST_READ] += cloq_job_now() - tr;
	return rc;
}

/* Window slots (J->slots > 1): the forward of a slot runs on one thread, and the group inputs the
 * Gram hook would see are copied aside, to be handed to it in window order once the batch is done
 * (the Gram matrices are sums in a fixed order: the same bytes as one window at a time). */
static int capture_hook_fn(void *ctx, int group, const float *X, int t, int n, cloq_err *err)
{
	struct win_slot *s = ctx;
	(void)err;
	memcpy(s->cap[group], X, (size_t)t * n * sizeof(float));
	s->cap_t[group] = t;
	s->cap_n[group] = n;
	return CLOQ_OK;
}

/* The in-RAM stashes (J->stash_ram): window i's states that a pass starting at `start` needs, into
 * the slot's workspace; and the state formed at out_state, from it. Windows own disjoint parts of
 * the stashes, so slots copy at once. */
static void stash_in(job *J, struct win_slot *s, int i, int start)
{
	const cloq_config *c = J->cfg;
	for (int st = CLOQ_STATE_ATT; st <= CLOQ_STATE_ACT; st++)
		if (start == st || (st == CLOQ_STATE_H && start == CLOQ_STATE_ACT)) {
			size_t n = (size_t)J->win.seqlen * state_cols(c, st);
			memcpy(cloq_block_ws_state(s->ws, st), J->stash_mem[st - CLOQ_STATE_ATT] + (size_t)i * n,
			       n * sizeof(float));
		}
}

static void stash_out(job *J, struct win_slot *s, int i, int out_state)
{
	size_t n = (size_t)J->win.seqlen * state_cols(J->cfg, out_state);
	memcpy(J->stash_mem[out_state - CLOQ_STATE_ATT] + (size_t)i * n, cloq_block_ws_state(s->ws, out_state),
	       n * sizeof(float));
}

/* A slot's whole window when slots run at once: its cache frame read with its own reader, its
 * in-RAM states, the forward, then its states out and its cache[l+1] frame encoded for the
 * in-order append. The read and write seconds go to the slot (summed per batch by the caller). */
static int slot_window(job *J, struct win_slot *s, int l, const cloq_layer_w *w, int i, int start, int stop_after,
		       int out_state, int hook, const cloq_cache_writer *next, const char *path, cloq_err *err)
{
	int rc = CLOQ_OK;
	double t = cloq_job_now();
	for (int g = 0; g < CLOQ_GROUPS; g++)
		s->cap_t[g] = 0;
	if (s->rd)
		CLOQ_TRY(read_window(J, s->rd, i, s->xbuf, path, err));
	if (J->stash_ram)
		stash_in(J, s, i, start);
	s->t_read += cloq_job_now() - t;
	CLOQ_TRY(cloq_block_forward_from(J->cfg, l, w, &J->rope, s->ws, s->xbuf, J->win.seqlen, start,
					 hook ? capture_hook_fn : NULL, s, stop_after, err));
	t = cloq_job_now();
	if (out_state >= 0 && J->stash_ram)
		stash_out(J, s, i, out_state);
	if (next)
		CLOQ_TRY(cloq_cache_encode(next, s->frame, s->xbuf, J->win.seqlen, err));
	s->t_write += cloq_job_now() - t;
fail:
	return rc;
}

/* One pass over the windows of layer l: each window through the block with weights w from state
 * `start` (INPUT: cache[l]; later states: the stashes of the previous pass) up to stop_after, the
 * requested Gram matrices collected on the way. With `stash` the state formed right before the
 * hook of group stop_after (O: ATT, GATEUP: H, DOWN: ACT) is kept for the next pass; with `next`
 * set, the block's outputs go there.
 *
 * Windows go in batches of J->slots: read (in order), forwarded in parallel, one window a thread,
 * then their Gram updates and writes in order. With one slot the forward's GEMMs are threaded
 * instead. On a machine shared with other work the slots keep the threads apart: a thread that
 * loses its core delays one window, not every GEMM (docs/PERFORMANCE.md section 8). */
int cloq_job_pass(job *J, int l, const cloq_layer_w *w, gram_hook *gh, int start, int stop_after, int stash,
		cloq_cache_writer *next, const char *stage, cloq_err *err)
{
	int rc = CLOQ_OK;
	const cloq_config *c = J->cfg;
	char path[4096], p_att[4096], p_h[4096], p_act[4096], p_out[4096], p_fp[4096];
	cloq_cache_reader *r = NULL, *r_att = NULL, *r_h = NULL, *r_act = NULL, *r_fp = NULL;
	cloq_cache_writer *sw = NULL;
	int out_state = stash && stop_after > CLOQ_GROUP_QKV ? stop_after : -1; /* group g's input is state g */
	int asym_g = -1; /* --asym-calib: the group whose original inputs (fp_pass) pair with these */
	for (int g = 0; g < CLOQ_GROUPS && gh && J->o.asym; g++)
		if (gh->D[g])
			asym_g = g;
	cloq_job_cache_path(J, l, path, sizeof path);
	if (asym_g >= 0) {
		fp_stash_path(J, asym_g, p_fp, sizeof p_fp);
		CLOQ_TRY(cloq_job_open_checked(J, p_fp, cloq_group_cols(c, asym_g), &r_fp, err));
	}
	cloq_job_stash_path(J, CLOQ_STATE_ATT, p_att, sizeof p_att);
	cloq_job_stash_path(J, CLOQ_STATE_H, p_h, sizeof p_h);
	cloq_job_stash_path(J, CLOQ_STATE_ACT, p_act, sizeof p_act);
	int P = J->slots, rows = J->win.seqlen;
	if (start <= CLOQ_STATE_ATT && P == 1)
		CLOQ_TRY(cloq_job_open_checked(J, path, (size_t)c->hidden, &r, err));
	for (int k = 0; k < P && P > 1 && start <= CLOQ_STATE_ATT; k++) /* a reader a slot: frames read at once */
		CLOQ_TRY(cloq_job_open_checked(J, path, (size_t)c->hidden, &J->slot[k].rd, err));
	if (start == CLOQ_STATE_ATT && !J->stash_ram)
		CLOQ_TRY(cloq_job_open_checked(J, p_att, state_cols(c, CLOQ_STATE_ATT), &r_att, err));
	if (start >= CLOQ_STATE_H && !J->stash_ram)
		CLOQ_TRY(cloq_job_open_checked(J, p_h, state_cols(c, CLOQ_STATE_H), &r_h, err));
	if (start == CLOQ_STATE_ACT && !J->stash_ram)
		CLOQ_TRY(cloq_job_open_checked(J, p_act, state_cols(c, CLOQ_STATE_ACT), &r_act, err));
	if (out_state >= 0 && !J->stash_ram) {
		cloq_job_stash_path(J, out_state, p_out, sizeof p_out);
		CLOQ_TRY(cloq_cache_create(p_out, state_cols(c, out_state), CLOQ_CACHE_F32, 1, &sw, err));
		cloq_cache_writer_set_scratch(sw);
	}
	double t0 = cloq_job_now(), last = t0;
	for (int i0 = 0; i0 < J->win.n; i0 += P) {
		int nb = J->win.n - i0 < P ? J->win.n - i0 : P;
		CLOQ_TRY(cloq_interrupt_check(stage, err));
		for (int k = 0; k < nb; k++) { /* the batch's inputs, in window order */
			struct win_slot *s = &J->slot[k];
			int i = i0 + k;
			if (r)
				CLOQ_TRY(cloq_job_read_checked(J, r, i, s->xbuf, path, err));
			if (r_att)
				CLOQ_TRY(cloq_job_read_checked(J, r_att, i, cloq_block_ws_state(s->ws, CLOQ_STATE_ATT), p_att, err));
			if (r_h)
				CLOQ_TRY(cloq_job_read_checked(J, r_h, i, cloq_block_ws_state(s->ws, CLOQ_STATE_H), p_h, err));
			if (r_act)
				CLOQ_TRY(cloq_job_read_checked(J, r_act, i, cloq_block_ws_state(s->ws, CLOQ_STATE_ACT), p_act, err));
			if (J->stash_ram && P == 1)
				stash_in(J, s, i, start);
		}
		if (P == 1) {
			if (r_fp) {
				CLOQ_TRY(cloq_job_read_checked(J, r_fp, i0, J->cap, p_fp, err));
				J->cap_group = asym_g;
			}
			CLOQ_TRY(cloq_block_forward_from(c, l, w, &J->rope, J->ws, J->xbuf, rows, start,
							 gh ? cloq_job_gram_hook_fn : NULL, gh, stop_after, err));
		} else {
			for (int k = 0; k < nb; k++)
				J->slot[k].t_read = J->slot[k].t_write = 0.0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(cloq_team_cap(nb))
			for (int k = 0; k < nb; k++)
				J->slot[k].rc = slot_window(J, &J->slot[k], l, w, i0 + k, start, stop_after, out_state, gh != NULL,
							    next, path, &J->slot[k].err);
			double tr = 0.0, tw = 0.0; /* the batch's wall share: its slowest slot's */
			for (int k = 0; k < nb; k++) {
				tr = J->slot[k].t_read > tr ? J->slot[k].t_read : tr;
				tw = J->slot[k].t_write > tw ? J->slot[k].t_write : tw;
			}
			J->stage_s[ST_READ] += tr;
			J->stage_s[ST_WRITE] += tw;
			for (int k = 0; k < nb; k++)
				if (J->slot[k].rc) {
					if (err)
						*err = J->slot[k].err;
					rc = J->slot[k].rc;
					goto fail;
				}
		}
		for (int k = 0; k < nb; k++) { /* Gram updates and writes, in window order */
			struct win_slot *s = &J->slot[k];
			int i = i0 + k;
			if (P > 1 && gh) {
				if (r_fp) {
					CLOQ_TRY(cloq_job_read_checked(J, r_fp, i, J->cap, p_fp, err));
					J->cap_group = asym_g;
				}
				for (int g = 0; g < CLOQ_GROUPS; g++)
					if (s->cap_t[g])
						CLOQ_TRY(cloq_job_gram_hook_fn(gh, g, s->cap[g], s->cap_t[g], s->cap_n[g], err));
			}
			double tw = cloq_job_now();
			if (sw)
				CLOQ_TRY(cloq_cache_append(sw, cloq_block_ws_state(s->ws, out_state), rows, err));
			if (out_state >= 0 && J->stash_ram && P == 1)
				stash_out(J, s, i, out_state);
			if (next && P == 1)
				CLOQ_TRY(cloq_cache_append(next, s->xbuf, rows, err));
			else if (next)
				CLOQ_TRY(cloq_cache_append_frame(next, s->frame, err));
			J->stage_s[ST_WRITE] += cloq_job_now() - tw;
		}
		double t = cloq_job_now();
		if (t - last > 0.5 || i0 + nb == J->win.n) {
			cloq_job_progress(J, l, stage, (i0 + nb + 0.0) / J->win.n, (i0 + nb + 0.0) * J->win.seqlen / (t - t0 + 1e-9));
			last = t;
		}
	}
	if (sw) {
		double tw = cloq_job_now();
		CLOQ_TRY(cloq_cache_commit(sw, err));
		J->stage_s[ST_WRITE] += cloq_job_now() - tw;
	}
fail:
	for (int k = 0; k < J->slots; k++) {
		cloq_cache_close(J->slot[k].rd);
		J->slot[k].rd = NULL;
	}
	cloq_cache_writer_free(sw);
	cloq_cache_close(r);
	cloq_cache_close(r_att);
	cloq_cache_close(r_h);
	cloq_cache_close(r_act);
	cloq_cache_close(r_fp);
	return rc;
}

/* cache[0]: the embeddings of the calibration windows. */
static int build_cache0(job *J, cloq_err *err)
{
	int rc = CLOQ_OK;
	char path[4096];
	cloq_cache_writer *w = NULL, *wf = NULL;
	cloq_lm lm;
	cloq_model_lm(J->m, &lm);
	cloq_job_cache_path(J, 0, path, sizeof path);
	CLOQ_TRY(cloq_cache_create(path, (size_t)J->cfg->hidden, J->o.cache_bf16 ? CLOQ_CACHE_BF16 : CLOQ_CACHE_F32, 1,
				   &w, err));
	if (J->o.asym) { /* both streams start from the same embeddings */
		cache_fp_path(J, 0, path, sizeof path);
		CLOQ_TRY(cloq_cache_create(path, (size_t)J->cfg->hidden,
					   J->o.cache_bf16 ? CLOQ_CACHE_BF16 : CLOQ_CACHE_F32, 1, &wf, err));
	}
	for (int i = 0; i < J->win.n; i++) {
		CLOQ_TRY(cloq_lm_embed(&lm, J->win.ids + (size_t)i * J->win.seqlen, J->win.seqlen, J->xbuf, err));
		CLOQ_TRY(cloq_cache_append(w, J->xbuf, J->win.seqlen, err));
		if (wf)
			CLOQ_TRY(cloq_cache_append(wf, J->xbuf, J->win.seqlen, err));
	}
	CLOQ_TRY(cloq_cache_commit(w, err));
	if (wf)
		CLOQ_TRY(cloq_cache_commit(wf, err));
fail:
	cloq_cache_writer_free(w);
	cloq_cache_writer_free(wf);
	return rc;
}

/* cache[l+1] from cache[l] through weights w (start: CLOQ_STATE_INPUT, or ACT after the
 * true-sequential statistics passes left their stashes). */
static int propagate(job *J, int l, const cloq_layer_w *w, int start, cloq_err *err)
{
	int rc = CLOQ_OK;
	char path[4096];
	cloq_cache_writer *next = NULL;
	cloq_job_cache_path(J, l + 1, path, sizeof path);
	double t0 = cloq_job_now();
	CLOQ_TRY(cloq_cache_create(path, (size_t)J->cfg->hidden, J->o.cache_bf16 ? CLOQ_CACHE_BF16 : CLOQ_CACHE_F32, 1,
				   &next, err));
	CLOQ_TRY(cloq_job_pass(J, l, w, NULL, start, -1, 0, next, "propagate", err));
	double tc = cloq_job_now();
	CLOQ_TRY(cloq_cache_commit(next, err));
	J->stage_s[ST_WRITE] += cloq_job_now() - tc;
fail:
	cloq_cache_writer_free(next);
	J->stage_s[ST_PROP] += cloq_job_now() - t0;
	return rc;
}

/* --asym-calib: the original stream through the original layer, once per layer: cache_fp[l+1],
 * and (with stash) each group's input on the way, for the statistics passes to pair with the
 * quantized stream's (their cross Gram D). */
static int fp_pass(job *J, int l, const cloq_layer_w *orig, int stash, cloq_err *err)
{
	int rc = CLOQ_OK;
	const cloq_config *c = J->cfg;
	char path[4096];
	cloq_cache_reader *r = NULL;
	cloq_cache_writer *next = NULL, *sw[CLOQ_GROUPS] = {0};
	double t0 = cloq_job_now();
	cache_fp_path(J, l, path, sizeof path);
	CLOQ_TRY(cloq_job_open_checked(J, path, (size_t)c->hidden, &r, err));
	cache_fp_path(J, l + 1, path, sizeof path);
	CLOQ_TRY(cloq_cache_create(path, (size_t)c->hidden, J->o.cache_bf16 ? CLOQ_CACHE_BF16 : CLOQ_CACHE_F32, 1, &next,
				   err));
	for (int g = 0; g < CLOQ_GROUPS && stash; g++) {
		fp_stash_path(J, g, path, sizeof path);
		CLOQ_TRY(cloq_cache_create(path, cloq_group_cols(c, g), CLOQ_CACHE_F32, 1, &sw[g], err));
		cloq_cache_writer_set_scratch(sw[g]);
	}
	cache_fp_path(J, l, path, sizeof path);
	for (int i = 0; i < J->win.n; i++) {
		CLOQ_TRY(cloq_interrupt_check("original stream", err));
		CLOQ_TRY(cloq_job_read_checked(J, r, i, J->xbuf_fp, path, err));
		CLOQ_TRY(cloq_block_forward_from(c, l, orig, &J->rope, J->ws_fp, J->xbuf_fp, J->win.seqlen, CLOQ_STATE_INPUT,
						 stash ? fp_stash_hook_fn : NULL, sw, -1, err));
		CLOQ_TRY(cloq_cache_append(next, J->xbuf_fp, J->win.seqlen, err));
	}
	for (int g = 0; g < CLOQ_GROUPS && stash; g++)
		CLOQ_TRY(cloq_cache_commit(sw[g], err));
	CLOQ_TRY(cloq_cache_commit(next, err));
fail:
	cloq_cache_close(r);
	cloq_cache_writer_free(next);
	for (int g = 0; g < CLOQ_GROUPS; g++)
		cloq_cache_writer_free(sw[g]);
	J->stage_s[ST_PROP] += cloq_job_now() - t0;
	return rc;
}

/* ---- one layer ----------------------------------------------------------------------------- */
static int process_layer(job *J, int l, cloq_err *err)
{
	int rc = CLOQ_OK;
	const cloq_config *c = J->cfg;
	double t_layer = cloq_job_now(), t;
	J->layer_t0 = t_layer;
	cloq_team_update(); /* the CPUs this process may use now (cloq_sys.h) */
	cloq_layer_w w = {0}, wp = {0}, orig = {0};
	cloq_layer_result res[CLOQ_LINEARS];
	cloq_gram grams[CLOQ_GROUPS];
	gram_hook gh;
	memset(&gh, 0, sizeof gh);
	double *D = NULL; /* --asym-calib: (Xo - Xq)^T Xq of the group being collected */
	memset(res, 0, sizeof res);
	memset(grams, 0, sizeof grams);

	t = cloq_job_now();
	uint64_t digest = 0;
	cJSON *inputs = NULL;
	int moe = cloq_layer_is_moe(c, l);
	moe_stage S;
	memset(&S, 0, sizeof S);
	S.J = J, S.l = l;
	if (moe) { /* its own tensors now, its experts one at a time later (hashed as they are read) */
		inputs = S.inputs = cJSON_CreateObject();
		S.report = cJSON_CreateArray();
		CLOQ_FAIL_IF(!inputs || !S.report, err, CLOQ_EIO, "out of memory");
		CLOQ_TRY(cloq_moe_load_layer(&S, l, &w, err));
	} else {
		CLOQ_TRY(cloq_prefetch_take(J->pf, l, &w, &digest, &inputs, &J->io_wait_s, err));
	}
	/* the bytes are in memory: if the file changed since the run began, they may not be the
	 * bytes of the model this job is converting */
	CLOQ_TRY(cloq_inputs_check_unchanged(J->m->st, J->files_at_start, err));
	/* the next layer to convert streams in while this one computes */
	for (int n = l + 1; n <= J->last_todo; n++)
		if (!J->j.layer_done[n]) {
			CLOQ_TRY(cloq_prefetch_start(J->pf, n, err));
			break;
		}
	if (J->o.asym) { /* the original layer on the original stream, first: its group inputs and
			  * cache_fp[l+1] (its own copy of the weights: w's linears become their targets) */
		CLOQ_TRY(cloq_model_load_layer(J->m, l, &orig, err));
		J->stage_s[ST_READ] += cloq_job_now() - t;
		CLOQ_TRY(fp_pass(J, l, &orig, 1, err));
		t = cloq_job_now();
	}
	J->stage_s[ST_READ] += cloq_job_now() - t;
	/* wp: the weights that feed what comes after each processed group (propagate setting). */
	wp = w;

	/* Gram matrices are allocated when their group comes (all four at once only with
	 * --one-pass): the widest, down_proj's, dominates a layer's memory. */
	int gram_n[CLOQ_GROUPS];
	for (int g = 0; g < CLOQ_GROUPS; g++) {
		gram_n[g] = (int)cloq_group_cols(c, g);
		if (J->o.one_pass)
			CLOQ_TRY(cloq_gram_init(&grams[g], gram_n[g], err));
	}
	t = cloq_job_now();
	if (J->o.one_pass) {
		for (int g = 0; g < CLOQ_GROUPS; g++)
			gh.g[g] = &grams[g];
		CLOQ_TRY(cloq_job_pass(J, l, &w, &gh, CLOQ_STATE_INPUT, CLOQ_GROUP_DOWN, 0, NULL, "statistics", err));
	}
	J->stage_s[ST_STATS] += cloq_job_now() - t;
	for (int g = 0; g < (moe ? CLOQ_GROUP_GATEUP : CLOQ_GROUPS); g++) { /* a sparse layer's MLP: moe_run */
		if (!J->o.one_pass) {
			CLOQ_TRY(cloq_gram_init(&grams[g], gram_n[g], err));
			memset(&gh, 0, sizeof gh);
			gh.g[g] = &grams[g];
			gh.J = J;
			if (J->o.asym) {
				D = cloq_calloc((size_t)gram_n[g] * gram_n[g], sizeof(double));
				CLOQ_FAIL_IF(!D, err, CLOQ_EIO, "out of memory for a %d x %d cross Gram", gram_n[g], gram_n[g]);
				gh.D[g] = D;
			}
			t = cloq_job_now();
			char stage[32];
			snprintf(stage, sizeof stage, "stats %s", cloq_group_names[g]);
			/* each pass resumes where the previous one stopped: O's from the input (q, k, v
			 * changed), GATEUP's from the attention output, DOWN's from h */
			int full = J->o.full_passes;
			int start = full		     ? CLOQ_STATE_INPUT
				    : g == CLOQ_GROUP_GATEUP ? CLOQ_STATE_ATT
				    : g == CLOQ_GROUP_DOWN   ? CLOQ_STATE_H
							     : CLOQ_STATE_INPUT;
			CLOQ_TRY(cloq_job_pass(J, l, &wp, &gh, start, g, !full, NULL, stage, err));
			J->stage_s[ST_STATS] += cloq_job_now() - t;
		}
		cloq_gram_finish(&grams[g]);
		if (D) { /* each linear of the group now fits its asymmetric target (cloq_solver.h) */
			t = cloq_job_now();
			for (int lin = 0; lin < CLOQ_LINEARS; lin++) {
				int out, in;
				if (cloq_linear_group(lin) != g || !cloq_linear_present(c, lin))
					continue;
				cloq_linear_shape(c, lin, &out, &in);
				rc = cloq_solver_asym_target(grams[g].H, D, in, w.w[lin], out, CLOQ_ASYM_LAMBDA_REL, w.w[lin], err);
				if (rc) {
					cloq_err_wrap(err, rc, "model.layers.%d.%s.%s: asymmetric target", l, cloq_linear_parent(lin),
						      cloq_linear_name(c, lin));
					goto fail;
				}
			}
			cloq_free(D);
			D = NULL;
			J->stage_s[ST_SOLVE] += cloq_job_now() - t;
		}
		CLOQ_TRY(cloq_interrupt_check("before a solve", err));
		cloq_job_progress(J, l, "solve", 0.25 * (g + 1), 0);
		/* deq(Q) of the groups already done fed this group's statistics; while this group is
		 * solved (its H, factors and workspaces are a layer's peak) only their codes stay */
		if (J->sp.propagate != CLOQ_PROP_FP)
			for (int lin = 0; lin < CLOQ_LINEARS; lin++)
				if (cloq_linear_group(lin) < g && cloq_linear_present(c, lin)) {
					cloq_layer_result_shed(&res[lin]);
					wp.w[lin] = NULL;
				}
		CLOQ_TRY(cloq_layer_solve_group(J->cfg, &J->sp, l, g, &grams[g], &w, res, &J->stage_s[ST_QUANT],
						&J->stage_s[ST_SOLVE], err));
		for (int lin = 0; lin < CLOQ_LINEARS; lin++)
			if (cloq_linear_group(lin) < g && cloq_linear_present(c, lin) && !wp.w[lin]) {
				CLOQ_TRY(cloq_layer_result_restore(&res[lin], J->sp.propagate, J->sp.scaling, err));
				wp.w[lin] = cloq_layer_result_propagated(&res[lin], J->sp.propagate, w.w[lin]);
			}
		for (int lin = 0; lin < CLOQ_LINEARS; lin++) {
			if (cloq_linear_group(lin) != g || !cloq_linear_present(c, lin))
				continue;
			wp.w[lin] = cloq_layer_result_propagated(&res[lin], J->sp.propagate, w.w[lin]);
			/* the original weight has served its purpose unless it is what propagates:
			 * release it now, so a layer never holds W and deq(Q) of every linear at once */
			if (wp.w[lin] != w.w[lin]) {
				cloq_free(w.w[lin]);
				w.w[lin] = NULL;
			}
		}
		cloq_gram_free(&grams[g]);
	}

	/* propagate, then the shard, then the journal: a layer is done only once all are durable */
	char shard[4096];
	snprintf(shard, sizeof shard, "%s/shards/layer_%05d.cloqshard", J->out, l);
	if (moe) { /* the experts, each added to the shard when done; the next cache */
		CLOQ_TRY(cloq_layer_shard_begin(shard, c, l, &w, res, &S.sw, err));
		CLOQ_TRY(cloq_moe_run(&S, &wp, J->o.full_passes ? CLOQ_STATE_INPUT : CLOQ_STATE_ATT, err));
		/* every expert's bytes are in: if a file changed since the run began, they may not be
		 * the bytes of the model this job is converting */
		CLOQ_TRY(cloq_inputs_check_unchanged(J->m->st, J->files_at_start, err));
		digest = XXH3_64bits(S.hash, (size_t)S.nhash * sizeof *S.hash);
		t = cloq_job_now();
		CLOQ_TRY(cloq_shard_commit(S.sw, err));
		J->stage_s[ST_WRITE] += cloq_job_now() - t;
	} else {
		CLOQ_TRY(propagate(J, l, &wp, J->o.one_pass || J->o.full_passes ? CLOQ_STATE_INPUT : CLOQ_STATE_ACT, err));
		t = cloq_job_now();
		CLOQ_TRY(cloq_layer_write_shard(shard, J->cfg, l, &w, res, err));
		J->stage_s[ST_WRITE] += cloq_job_now() - t;
	}
	remove_stashes(J);
	t = cloq_job_now();
	CLOQ_TRY(hash_file(shard, J->j.layer_hash[l], NULL, err));
	J->stage_s[ST_WRITE] += cloq_job_now() - t;

	cJSON *rep = cloq_layer_report_json(J->cfg, l, res, cloq_job_now() - t_layer);
	if (moe && rep) { /* every expert, and which ones the few-token rule filled (cloq_moe.h) */
		cJSON *filled = cJSON_CreateArray();
		cJSON *x;
		cJSON_ArrayForEach(x, S.report)
		{
			const cJSON *f = cJSON_GetObjectItemCaseSensitive(x, "filled");
			const cJSON *id = cJSON_GetObjectItemCaseSensitive(x, "expert");
			if (cJSON_IsNumber(f) && f->valuedouble > 0 && cJSON_IsNumber(id))
				cJSON_AddItemToArray(filled, cJSON_CreateNumber(id->valuedouble));
		}
		cJSON_AddNumberToObject(rep, "moe_min_rows", CLOQ_MOE_MIN_ROWS);
		cJSON_AddItemToObject(rep, "experts_filled", filled);
		cJSON_AddItemToObject(rep, "experts", S.report);
		S.report = NULL;
	}
	char hex[40];
	hex64(digest, hex);
	cJSON_AddStringToObject(rep, "input_xxh3", hex);
	/* report.json is built from the journal's copy of each layer's figures, and a resumed job
	 * has read those back from journal.json, where cJSON prints a double with 15 digits when
	 * that is within an ulp. Keep the same rounded values in memory, so that report.json does
	 * not depend on where (or whether) the job was interrupted. */
	char *rep_text = rep ? cJSON_PrintUnformatted(rep) : NULL;
	cJSON *rep_rt = rep_text ? cJSON_Parse(rep_text) : NULL;
	cJSON_free(rep_text);
	if (rep_rt) {
		cJSON_Delete(rep);
		rep = rep_rt;
	}
	cJSON_Delete(J->j.layer_report[l]);
	J->j.layer_report[l] = rep;
	J->j.layer_done[l] = 1;
	cJSON_Delete(J->j.layer_inputs[l]);
	J->j.layer_inputs[l] = inputs;
	inputs = NULL;
	CLOQ_TRY(cloq_journal_save(J->out, &J->j, err));
	J->layers_run++;
	J->layer_s_sum += cloq_job_now() - t_layer;
	if (!J->o.quiet) {
		double zero = S.sum_quant, fin = S.sum_final;
		int nl = S.nlin;
		for (int lin = 0; lin < CLOQ_LINEARS; lin++) {
			if (!cloq_layer_has_linear(c, l, lin))
				continue;
			zero += res[lin].rel_quant;
			fin += res[lin].rel_final;
			nl++;
		}
		zero /= nl, fin /= nl;
		fprintf(stderr, "%slayer %d/%d done in %.1fs: mean calibrated error %.4f quantized -> %.4f with %s LoRA\n",
			isatty(2) ? "\r\033[K" : "", l + 1, c->layers, cloq_job_now() - t_layer, zero, fin, init_name(J->o.init));
	}
fail:
	cloq_moe_stage_free(&S); /* S.inputs is `inputs`, deleted below unless the journal took it */
	cJSON_Delete(inputs);
	for (int g = 0; g < CLOQ_GROUPS; g++)
		cloq_gram_free(&grams[g]);
	for (int lin = 0; lin < CLOQ_LINEARS; lin++)
		cloq_layer_result_free(&res[lin]);
	cloq_layer_w_free(&w);
	cloq_layer_w_free(&orig);
	cloq_free(D);
	return rc;
}

/* Layer l is done and its shard still checks out: push cache[l] to cache[l+1] through the
 * stored weights instead of recomputing them (--asym-calib: and the original stream through the
 * original layer). */
static int replay_layer(job *J, int l, cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_layer_w w = {0}, orig = {0};
	char shard[4096];
	snprintf(shard, sizeof shard, "%s/shards/layer_%05d.cloqshard", J->out, l);
	cloq_team_update();
	int moe = cloq_layer_is_moe(J->cfg, l);
	moe_stage S;
	memset(&S, 0, sizeof S);
	S.J = J, S.l = l;
	if (J->sp.propagate == CLOQ_PROP_FP || J->o.asym) /* a sparse layer's experts: one at a time */
		CLOQ_TRY(cloq_model_load_layer_opt(J->m, l, !moe, &orig, err));
	cloq_qform qf = {J->sp.bits, J->sp.group_size, J->sp.quantizer, J->sp.nf_block, J->sp.nf_double, J->sp.nf_dtype};
	CLOQ_TRY(cloq_layer_load_shard(shard, J->cfg, l, &qf, J->sp.propagate, J->sp.scaling,
				       &orig, &w, err));
	if (moe) {
		CLOQ_TRY(cloq_shard_open(shard, &S.in, err));
		CLOQ_TRY(cloq_moe_run(&S, &w, CLOQ_STATE_INPUT, err));
		remove_stashes(J);
	} else {
		CLOQ_TRY(propagate(J, l, &w, CLOQ_STATE_INPUT, err));
	}
	if (J->o.asym)
		CLOQ_TRY(fp_pass(J, l, &orig, 0, err));
fail:
	cloq_moe_stage_free(&S);
	cloq_layer_w_free(&w);
	cloq_layer_w_free(&orig);
	return rc;
}

static int shard_ok(job *J, int l)
{
	char shard[4096], hex[40];
	snprintf(shard, sizeof shard, "%s/shards/layer_%05d.cloqshard", J->out, l);
	if (hash_file(shard, hex, NULL, NULL) != CLOQ_OK)
		return 0;
	return strcmp(hex, J->j.layer_hash[l]) == 0;
}

/* ---- non-layer tensors, manifest, report --------------------------------------------------- */
/* The base shard, and the hashes of the tensors it was made from: kept in the journal only once
 * the model's files are known not to have changed while they were read. */
static int write_base(job *J, cloq_err *err)
{
	int rc = CLOQ_OK;
	char path[4096];
	cJSON *inputs = cJSON_CreateObject();
	CLOQ_FAIL_IF(!inputs, err, CLOQ_EIO, "out of memory");
	snprintf(path, sizeof path, "%s/shards/base.cloqshard", J->out);
	CLOQ_TRY(cloq_base_write_shard(path, J->m, inputs, err));
	CLOQ_TRY(cloq_inputs_check_unchanged(J->m->st, J->files_at_start, err));
	cJSON_Delete(J->j.base_inputs);
	J->j.base_inputs = inputs;
	return CLOQ_OK;
fail:
	cJSON_Delete(inputs);
	return rc;
}

static int write_report(job *J, int final, cloq_err *err)
{
	int rc = CLOQ_OK;
	char path[4096], *text = NULL;
	cJSON *r = cJSON_CreateObject();
	CLOQ_FAIL_IF(!r, err, CLOQ_EIO, "out of memory");
	char tool[64];
	snprintf(tool, sizeof tool, "cloq %s", cloq_version());
	cJSON_AddStringToObject(r, "tool", tool);
	cJSON_AddStringToObject(r, "numerics", cloq_build_numerics());
	cJSON_AddItemToObject(r, "settings", cJSON_Duplicate(J->j.settings, 1));
	cJSON_AddStringToObject(r, "model", J->cfg->arch_name);
	cJSON_AddNumberToObject(r, "calib_windows", J->win.n);
	cJSON_AddNumberToObject(r, "calib_seqlen", J->win.seqlen);
	cJSON *layers = cJSON_AddArrayToObject(r, "layers");
	double sums[4] = {0};
	int cnt = 0;
	for (int l = 0; l < J->cfg->layers; l++) {
		if (!J->j.layer_report[l])
			continue;
		cJSON_AddItemToArray(layers, cJSON_Duplicate(J->j.layer_report[l], 1));
		/* every linear: the layer's own, then a sparse layer's experts' */
		const cJSON *xs = cJSON_GetObjectItemCaseSensitive(J->j.layer_report[l], "experts");
		int nx = cJSON_IsArray(xs) ? cJSON_GetArraySize(xs) : 0;
		for (int x = -1; x < nx; x++) {
			const cJSON *owner = x < 0 ? J->j.layer_report[l] : cJSON_GetArrayItem(xs, x);
			cJSON *lins = cJSON_GetObjectItemCaseSensitive(owner, "linears");
			cJSON *e;
			cJSON_ArrayForEach(e, lins)
			{
				const char *keys[4] = {"quantized", "zero", "loftq1", "final"};
				for (int k = 0; k < 4; k++) {
					cJSON *v = cJSON_GetObjectItemCaseSensitive(e, keys[k]);
					if (cJSON_IsNumber(v))
						sums[k] += v->valuedouble;
				}
				cnt++;
			}
		}
	}
	cJSON *mean = cJSON_AddObjectToObject(r, "mean_calibrated_rel_error");
	if (cnt) {
		cJSON_AddNumberToObject(mean, "quantized", sums[0] / cnt);
		if (J->o.baselines)
			cJSON_AddNumberToObject(mean, "loftq1", sums[2] / cnt);
		cJSON_AddNumberToObject(mean, "final", sums[3] / cnt);
		cJSON_AddNumberToObject(mean, "linears", cnt);
	}
	cJSON *st = cJSON_AddObjectToObject(r, "run_seconds");
	for (int s = 0; s < ST_NSTAGES; s++)
		cJSON_AddNumberToObject(st, stage_names[s], J->stage_s[s]);
	cJSON_AddNumberToObject(st, "total", cloq_job_now() - J->t0);
	cJSON_AddNumberToObject(st, "weight_read_wait", J->io_wait_s);
	if (J->pf)
		cJSON_AddStringToObject(r, "reader", cloq_prefetch_backend(J->pf));
	cJSON_AddStringToObject(r, "stashes", J->stash_ram ? "ram" : J->o.one_pass || J->o.full_passes ? "none" : "disk");
	cJSON_AddNumberToObject(r, "peak_rss_gib", cloq_peak_rss_gib());
	{ /* the calibration passes' arithmetic (the time model's, src/job/cloq_plan.h): a benchmark divides
	   * it by the statistics + propagate seconds */
		cloq_plan pl;
		cloq_convert_opts po = J->o;
		po.one_pass = po.full_passes = 0; /* one forward pass: what a job is, not how this run did it */
		cloq_plan_compute(J->cfg, &po, J->win.n, J->win.seqlen, &pl);
		cJSON *wk = cJSON_AddObjectToObject(r, "work");
		cJSON_AddNumberToObject(wk, "forward_flops", pl.flops_forward);
		cJSON_AddNumberToObject(wk, "gram_flops", pl.flops_gram / 2.0);
	}
	cJSON_AddBoolToObject(r, "finished", final);
	text = cJSON_Print(r);
	CLOQ_FAIL_IF(!text, err, CLOQ_EIO, "out of memory");
	snprintf(path, sizeof path, "%s/report.json", J->out);
	rc = cloq_write_file_atomic(path, text, strlen(text), err);
fail:
	cJSON_free(text);
	cJSON_Delete(r);
	return rc;
}

static int write_manifest(job *J, cloq_err *err)
{
	int rc = CLOQ_OK;
	char path[4096], *text = NULL;
	cJSON *r = cJSON_CreateObject();
	CLOQ_FAIL_IF(!r, err, CLOQ_EIO, "out of memory");
	cJSON_AddStringToObject(r, "format", "cloq-manifest");
	cJSON_AddNumberToObject(r, "version", 1);
	cJSON_AddNumberToObject(r, "layers", J->cfg->layers);
	cJSON_AddItemToObject(r, "settings", cJSON_Duplicate(J->j.settings, 1));
	cJSON *sh = cJSON_AddArrayToObject(r, "shards");
	for (int l = 0; l <= J->cfg->layers; l++) {
		char rel[64], hex[40];
		uint64_t size;
		if (l < J->cfg->layers)
			snprintf(rel, sizeof rel, "shards/layer_%05d.cloqshard", l);
		else
			snprintf(rel, sizeof rel, "shards/base.cloqshard");
		snprintf(path, sizeof path, "%s/%s", J->out, rel);
		CLOQ_TRY(hash_file(path, hex, &size, err));
		cJSON *e = cJSON_CreateObject();
		cJSON_AddStringToObject(e, "file", rel);
		if (l < J->cfg->layers)
			cJSON_AddNumberToObject(e, "layer", l);
		cJSON_AddNumberToObject(e, "bytes", (double)size);
		cJSON_AddStringToObject(e, "xxh3", hex);
		cJSON_AddItemToArray(sh, e);
	}
	text = cJSON_Print(r);
	CLOQ_FAIL_IF(!text, err, CLOQ_EIO, "out of memory");
	snprintf(path, sizeof path, "%s/manifest.json", J->out);
	rc = cloq_write_file_atomic(path, text, strlen(text), err);
fail:
	cJSON_free(text);
	cJSON_Delete(r);
	return rc;
}

/* Copy config.json and the tokenizer files so OUT is self-contained for ppl and export. */
static int copy_model_files(job *J, cloq_err *err)
{
	static const char *const files[] = {"config.json", "tokenizer.json", "tokenizer_config.json",
					    "generation_config.json", "special_tokens_map.json", "tokenizer.model"};
	char src[4096], dst[4096];
	snprintf(dst, sizeof dst, "%s/model", J->out);
	int rc = cloq_mkdir_p(dst, err);
	if (rc)
		return rc;
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		snprintf(src, sizeof src, "%s/%s", J->o.model_dir, files[i]);
		if (!cloq_file_exists(src))
			continue;
		char *data;
		size_t n;
		rc = cloq_read_file(src, &data, &n, err);
		if (rc)
			return rc;
		snprintf(dst, sizeof dst, "%s/model/%s", J->out, files[i]);
		rc = cloq_write_file_atomic(dst, data, n, err);
		cloq_free(data);
		if (rc)
			return rc;
	}
	return CLOQ_OK;
}

/* A killed run leaves its temp files ("NAME.tmp.PID", "NAME.data.tmp.PID") behind, and the next
 * run has another pid, so nothing else would remove them. Remove those whose writer is gone; a
 * live pid's are left alone. */
static void remove_dead_temps(const char *dir)
{
	char path[4096 + 512];
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		const char *t = strstr(e->d_name, ".tmp.");
		if (!t)
			continue;
		char *end;
		long pid = strtol(t + 5, &end, 10);
		if (*end || pid <= 0 || (pid_t)pid == getpid())
			continue;
		if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		unlink(path);
	}
	closedir(d);
}

static void remove_stale_caches(job *J, int keep)
{
	char path[4096];
	for (int l = 0; l <= J->cfg->layers; l++) {
		if (l == keep)
			continue;
		cloq_job_cache_path(J, l, path, sizeof path);
		unlink(path);
		cache_fp_path(J, l, path, sizeof path);
		unlink(path);
	}
}

/* The resumable passes keep three per-window states of a layer on disk (fp32 attention output,
 * h, SwiGLU product) next to the activation caches. When the output's file system cannot hold
 * them with room to spare, recompute from the layer input instead: same bytes, more arithmetic. */
/* Free bytes under OUT/cache, -1 when unknown. */
static double cache_free_bytes(const job *J)
{
	char dir[4096];
	struct statfs v;
	snprintf(dir, sizeof dir, "%s/cache", J->out);
	return statfs(dir, &v) == 0 ? (double)v.f_bavail * v.f_bsize : -1.0;
}

/* --asym-calib's original stream needs its caches and the four group inputs of a layer on disk;
 * refused up front (exit 3) when OUT/cache's file system cannot hold them. */
static int check_asym_disk(job *J, cloq_err *err)
{
	const cloq_config *c = J->cfg;
	double avail = cache_free_bytes(J);
	if (!J->o.asym || avail < 0)
		return CLOQ_OK;
	double tok = (double)J->win.n * J->win.seqlen;
	double need = tok * c->hidden * (J->o.cache_bf16 ? 2 : 4) * 2 +
		      tok * (2.0 * c->hidden + (double)c->heads * c->head_dim + c->intermediate) * 4;
	if (avail >= 1.1 * need)
		return CLOQ_OK;
	return cloq_err_set(err, CLOQ_EIO,
			    "%s/cache: --asym-calib keeps the original model's activations there too, about %.2f GiB more, "
			    "and %.2f GiB are free; free space, or convert without --asym-calib", J->out, need / 1073741824.0,
			    avail / 1073741824.0);
}

/* The resumable passes' states in RAM when they fit: at most a quarter of the memory available
 * now, and within --mem-budget on top of the plan. They are per-layer scratch (a killed job redoes
 * the layer), so RAM loses nothing a resume needs; the floats are the disk path's (its stashes are
 * lossless fp32), so the output is the same bytes. CLOQ_STASH=disk forces the files. */
static int choose_stashes(job *J, cloq_err *err)
{
	int rc = CLOQ_OK;
	const cloq_config *c = J->cfg;
	if (J->o.one_pass || J->o.full_passes)
		return CLOQ_OK;
	const char *env = getenv("CLOQ_STASH");
	if (env && !strcmp(env, "disk"))
		return CLOQ_OK;
	double tok = (double)J->win.n * J->win.seqlen;
	double bytes = tok * (double)cloq_plan_stash_cols(c) * 4;
	if (bytes > 0.25 * cloq_mem_available() || (J->o.mem_budget > 0 && J->plan_peak + bytes > (double)J->o.mem_budget))
		return CLOQ_OK;
	for (int st = CLOQ_STATE_ATT; st <= CLOQ_STATE_ACT; st++) {
		size_t n = (size_t)tok * state_cols(c, st);
		if (st == CLOQ_STATE_ACT && cloq_config_sparse_layers(c) == c->layers)
			continue; /* every layer sparse: no SwiGLU product to stash */
		J->stash_mem[st - CLOQ_STATE_ATT] = cloq_malloc(n * sizeof(float));
		CLOQ_FAIL_IF(!J->stash_mem[st - CLOQ_STATE_ATT], err, CLOQ_EIO, "out of memory for %zu stashed floats", n);
	}
	J->stash_ram = 1;
fail:
	return rc;
}

static void choose_passes(job *J)
{
	if (J->o.one_pass || J->o.full_passes || J->stash_ram)
		return;
	const cloq_config *c = J->cfg;
	double per_tok = 4.0 * ((double)c->heads * c->head_dim + c->hidden + c->intermediate);
	double need = (double)J->win.n * J->win.seqlen * per_tok;
	double caches = 2.0 * J->win.n * J->win.seqlen * c->hidden * (J->o.cache_bf16 ? 2 : 4);
	double avail = cache_free_bytes(J);
	if (avail < 0 || avail >= 1.25 * (need + caches) + (256.0 * (1 << 20)))
		return;
	J->o.full_passes = 1;
	if (!J->o.quiet)
		fprintf(stderr,
			"cloq: %.1f GiB free under %s/cache; resumable passes would keep %.1f GiB of per-window states "
			"there: recomputing each statistics pass from the layer input instead (same output, about "
			"2.5 forward passes per layer instead of 1; --full-passes says so explicitly)\n",
			avail / 1073741824.0, J->out, need / 1073741824.0);
}

/* A job resumed: the tensors its finished layers and base shard were made from must be the
 * model's tensors now (src/job/cloq_inputs.h). Only files whose identity changed are read again. */
static int check_inputs(job *J, cloq_err *err)
{
	int rc = CLOQ_OK, checked = 0;
	const cloq_st_model *st = J->m->st;
	int *chg = cloq_calloc(cloq_st_nfiles(st), sizeof *chg);
	CLOQ_FAIL_IF(!chg, err, CLOQ_EIO, "out of memory");
	if (cloq_inputs_files_changed(st, J->j.input_files, chg) == 0)
		goto fail; /* nothing changed: nothing to read */
	for (size_t i = 0; i < cloq_st_nfiles(st); i++)
		if (chg[i] && !J->o.quiet)
			fprintf(stderr, "cloq: %s changed since the job last ran: re-checking the tensors the finished "
					"layers were made from\n",
				cloq_st_file_path(st, i));
	char what[64];
	for (int l = 0; l < J->j.nlayers; l++) {
		if (!J->j.layer_done[l])
			continue;
		snprintf(what, sizeof what, "layer %d", l);
		CLOQ_FAIL_IF(!J->j.layer_inputs[l], err, CLOQ_EINPUT,
			     "%s/journal.json: layer %d is done but its input hashes are not recorded", J->out, l);
		CLOQ_TRY(cloq_inputs_check(st, J->j.layer_inputs[l], chg, what, &checked, err));
	}
	if (J->j.base_done && J->j.base_inputs)
		CLOQ_TRY(cloq_inputs_check(st, J->j.base_inputs, chg, "the base shard", &checked, err));
	if (!J->o.quiet)
		fprintf(stderr, "cloq: the %d tensors the finished work was made from are unchanged\n", checked);
fail:
	cloq_free(chg);
	return rc;
}

/* ---- driver -------------------------------------------------------------------------------- */
/* The thread count of a job: --threads, else the one its journal recorded, else the CPUs this
 * process may use (affinity mask, cgroup quota: cloq_cpus_available). */
static int setup_threads(cloq_convert_opts *o)
{
	cloq_journal j;
	int have = cloq_journal_load(o->out_dir, &j, NULL) == CLOQ_OK, jt = 0, jws = 0;
	if (have) {
		const cJSON *t = cJSON_GetObjectItemCaseSensitive(j.settings, "threads");
		const cJSON *ws = cJSON_GetObjectItemCaseSensitive(j.settings, "window_slots");
		jt = cJSON_IsNumber(t) && t->valueint > 0 ? t->valueint : 0;
		jws = cJSON_IsNumber(ws) && ws->valueint > 0 ? ws->valueint : 0;
		cloq_journal_free(&j);
	}
	if (o->threads <= 0 && jt > 0)
		o->threads = jt;
	if (o->threads <= 0)
		o->threads = cloq_cpus_available();
	if (o->threads < 1)
		o->threads = 1;
	/* a job's window slots go with its thread count (both set its sums), whatever --mem-budget
	 * says this time; --force starts a new job, which the planner sizes afresh */
	if (jt == o->threads && jws > 0 && o->window_slots <= 0 && !o->force)
		o->window_slots = jws;
	openblas_set_num_threads(o->threads);
	omp_set_num_threads(o->threads);
	return o->threads;
}

/* The dtype deq(Q) is rounded to. bitsandbytes dequantizes NF4 into the weight's own dtype, so
 * for nf4-bnb that is the checkpoint's: every decoder linear must have the same one (a mixed
 * checkpoint would be loaded by transformers in one torch_dtype, which cloq cannot guess).
 * LoftQ's NF dequantizes in float32. */
static int nf_dtype_of_model(job *J, cloq_err *err)
{
	cloq_convert_opts *o = &J->o;
	o->nf_dtype = CLOQ_DT_F32;
	if (o->quantizer != CLOQ_Q_NF4_BNB)
		return CLOQ_OK;
	const cloq_st_tensor *first = NULL;
	for (int l = 0; l < J->m->cfg.layers; l++)
		for (int lin = 0; lin < CLOQ_LINEARS; lin++) {
			const cloq_st_tensor *t = cloq_model_linear(J->m, l, lin, 0);
			if (!t)
				continue;
			if (!first)
				first = t;
			if (t->dtype != first->dtype)
				return cloq_err_set(err, CLOQ_EINPUT,
						    "%s: --quantizer nf4-bnb: '%s' is %s but '%s' is %s; bitsandbytes "
						    "dequantizes into the one dtype the model is loaded in, so a checkpoint "
						    "with mixed linear dtypes is refused",
						    o->model_dir, t->name, cloq_dtype_name(t->dtype), first->name,
						    cloq_dtype_name(first->dtype));
		}
	if (first)
		o->nf_dtype = first->dtype;
	return CLOQ_OK;
}

int cloq_convert_settings_qform(const cJSON *settings, const char *path, cloq_qform *qf, cloq_err *err)
{
	int rc = cloq_convert_check_settings(settings, path, err);
	if (rc)
		return rc;
	const cJSON *q = cJSON_GetObjectItemCaseSensitive(settings, "quantizer");
	memset(qf, 0, sizeof *qf);
	qf->bits = cJSON_GetObjectItemCaseSensitive(settings, "bits")->valueint;
	qf->group_size = cJSON_GetObjectItemCaseSensitive(settings, "group_size")->valueint;
	qf->quantizer = !strcmp(q->valuestring, "rtn") ? CLOQ_Q_RTN : !strcmp(q->valuestring, "nf") ? CLOQ_Q_NF
			: !strcmp(q->valuestring, "nf4-bnb") ? CLOQ_Q_NF4_BNB : CLOQ_Q_GPTQ;
	if (qf->quantizer == CLOQ_Q_NF || qf->quantizer == CLOQ_Q_NF4_BNB) {
		qf->nf_block = cJSON_GetObjectItemCaseSensitive(settings, "nf_block")->valueint;
		qf->nf_dtype = cloq_dtype_from_name(cJSON_GetObjectItemCaseSensitive(settings, "nf_dtype")->valuestring);
		qf->nf_double = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(settings, "bnb_double_quant"));
	}
	return CLOQ_OK;
}

static int run(job *J, cloq_err *err)
{
	int rc = CLOQ_OK;
	cloq_convert_opts *o = &J->o;
	char path[4096];
	cJSON *settings = NULL, *fp = NULL;
	J->t0 = cloq_job_now();
	setup_threads(o);
	snprintf(J->out, sizeof J->out, "%s", o->out_dir);
	CLOQ_TRY(cloq_model_open(o->model_dir, &J->m, err));
	J->cfg = &J->m->cfg;
	/* bitsandbytes turns every nn.Linear of the loaded model into a 4-bit one unless the user
	 * skips it, routers included; cloq calibrates against a float32 router, so the Q a QLoRA user's
	 * GPU holds would not be the Q this adapter was made for */
	CLOQ_FAIL_IF(J->cfg->moe && o->quantizer == CLOQ_Q_NF4_BNB, err, CLOQ_EUSAGE,
		     "%s: %s is a mixture of experts: with --quantizer nf4-bnb the adapter is for the checkpoint as "
		     "bitsandbytes loads it, which quantizes the router too unless told to skip it, while cloq keeps the "
		     "router in float; refusing rather than calibrate against a model the GPU will not hold (use "
		     "--quantizer gptq or nf)",
		     o->model_dir, J->cfg->arch_name);
	CLOQ_FAIL_IF(J->cfg->moe && (o->one_pass || o->asym), err, CLOQ_EUSAGE,
		     "%s: %s is a mixture of experts: its experts are calibrated one at a time on the tokens routed to "
		     "them, which %s does not do yet; convert without it",
		     o->model_dir, J->cfg->arch_name, o->one_pass ? "--one-pass" : "--asym-calib");
	CLOQ_TRY(cloq_inputs_files_json(J->m->st, &J->files_at_start, err));
	CLOQ_TRY(nf_dtype_of_model(J, err));
	CLOQ_TRY(load_windows(J, err));

	/* the memory plan: refuse early rather than fail at layer 40 */
	cloq_plan plan;
	cloq_plan_compute(J->cfg, o, J->win.n, J->win.seqlen, &plan);
	o->window_slots = plan.window_slots;
	J->plan_peak = plan.peak_bytes;
	J->est_layer_s = -1;
	if (!o->quiet) { /* the ETA before a layer is done: the time model at the rate probed now
			  * (a third of a second; a small job, mostly fixed costs, takes a nominal rate) */
		double work = plan.flops_forward + plan.flops_gram + plan.flops_quantize + plan.flops_solve;
		double gf = work > 5e11 ? cloq_plan_measure_gflops() : 250.0;
		double peak = work > 5e11 ? cloq_plan_peak_gflops(gf, omp_get_max_threads(), NULL, 0) : gf;
		if (gf > 0)
			J->est_layer_s = cloq_plan_seconds_load(&plan, gf, peak / gf, NULL) / J->cfg->layers;
	}
	if (o->mem_budget > 0 && plan.peak_bytes > o->mem_budget)
		CLOQ_FAIL_IF(1, err, CLOQ_EUSAGE,
			     "--mem-budget %.2f GiB is too small: one layer's working set needs %.2f GiB (%s)",
			     o->mem_budget / 1073741824.0, plan.peak_bytes / 1073741824.0, plan.largest_item);

	/* one writer per job: from here on OUT is ours until the process ends */
	CLOQ_TRY(cloq_mkdir_p(J->out, err));
	CLOQ_TRY(cloq_lock_take(J->out, 1, "cloq convert", &J->lock, err));
	snprintf(path, sizeof path, "%s/shards", J->out);
	CLOQ_TRY(cloq_mkdir_p(path, err));
	snprintf(path, sizeof path, "%s/cache", J->out);
	CLOQ_TRY(cloq_mkdir_p(path, err));
	static const char *const subdirs[] = {"", "/shards", "/cache", "/model"};
	for (size_t i = 0; i < sizeof subdirs / sizeof subdirs[0]; i++) {
		snprintf(path, sizeof path, "%s%s", J->out, subdirs[i]);
		remove_dead_temps(path);
	}

	settings = settings_json(o);
	CLOQ_TRY(fingerprint_json(J, &fp, err));
	snprintf(path, sizeof path, "%s/journal.json", J->out);
	if (cloq_file_exists(path) && o->force && cloq_journal_load(J->out, &J->j, NULL) != CLOQ_OK) {
		/* an unreadable journal describes no job: --force starts over rather than refusing */
		if (!o->quiet)
			fprintf(stderr, "cloq: --force: %s/journal.json is unreadable, starting over\n", J->out);
		unlink(path);
	}
	cloq_journal_free(&J->j);
	if (cloq_file_exists(path)) {
		CLOQ_TRY(cloq_journal_load_writer(J->out, &J->j, err));
		char diff[CLOQ_ERR_MSG_MAX] = "";
		int changed = cloq_json_diff(J->j.settings, settings, diff, sizeof diff);
		if (!changed && cloq_json_diff(J->j.fingerprint, fp, diff, sizeof diff))
			changed = 2;
		if (!changed && J->j.nlayers != J->cfg->layers) {
			snprintf(diff, sizeof diff, "layers: %d -> %d", J->j.nlayers, J->cfg->layers);
			changed = 2;
		}
		if (!changed) {
			int crc = check_inputs(J, err);
			if (crc && !(crc == CLOQ_EINPUT && o->force))
				CLOQ_TRY(crc);
			if (crc) {
				snprintf(diff, sizeof diff, "%s", err->msg);
				changed = 3;
			}
		}
		if (changed == 2 && !o->force && (!strncmp(diff, "tool:", 5) || !strncmp(diff, "numerics:", 9)))
			CLOQ_FAIL_IF(1, err, CLOQ_EINPUT,
				     "%s was started by another build of cloq (%s): layers made by two builds may round "
				     "differently, so one job is made by one build; resume it with that build, or use "
				     "--force to start over",
				     J->out, diff);
		if (changed && changed < 3 && !o->force)
			CLOQ_FAIL_IF(1, err, CLOQ_EINPUT,
				     "%s holds a job with other %s (%s); use another -o, or --force to start over", J->out,
				     changed == 1 ? "settings" : "inputs", diff);
		if (changed) {
			if (!o->quiet)
				fprintf(stderr, "cloq: --force: starting over in %s (%s)\n", J->out, diff);
			cloq_journal_free(&J->j);
		} else {
			cJSON_Delete(settings);
			cJSON_Delete(fp);
			settings = fp = NULL;
		}
	}
	if (settings) {
		CLOQ_TRY(cloq_journal_init(&J->j, J->cfg->layers, settings, fp, err));
		settings = fp = NULL;
	}
	/* the files as this run reads them: what a later run compares with */
	cJSON_Delete(J->j.input_files);
	J->j.input_files = cJSON_Duplicate(J->files_at_start, 1);
	CLOQ_FAIL_IF(!J->j.input_files, err, CLOQ_EIO, "out of memory");
	CLOQ_TRY(cloq_journal_save(J->out, &J->j, err));

	J->sp.bits = o->bits;
	J->sp.group_size = o->group_size;
	J->sp.quantizer = o->quantizer;
	J->sp.nf_block = o->nf_block;
	J->sp.nf_double = o->bnb_double_quant;
	J->sp.nf_dtype = o->nf_dtype;
	J->sp.sym = o->sym;
	J->sp.act_order = o->act_order;
	J->sp.magr = o->magr;
	J->sp.v1_zeros = o->gptq_zeros == 1;
	J->sp.init = o->init;
	J->sp.rank = o->rank;
	J->sp.scaling = (o->lora_alpha > 0 ? o->lora_alpha : o->rank) / (double)o->rank;
	J->sp.cloq_iters = o->cloq_iters;
	J->sp.loftq_iters = o->loftq_iters;
	J->sp.propagate = o->propagate;
	J->sp.baselines = o->baselines;
	J->sp.seed = o->seed;

	snprintf(path, sizeof path, "%s/calib_windows.npy", J->out);
	CLOQ_TRY(cloq_windows_save(&J->win, path, err));
	CLOQ_TRY(copy_model_files(J, err));
	/* The journal keeps no hash of the base shard, so a resumed job re-checks it: trusting
	 * base_done alone would let the manifest bless a damaged or missing file. */
	snprintf(path, sizeof path, "%s/shards/base.cloqshard", J->out);
	if (J->j.base_done && cloq_shard_verify(path, NULL, NULL) != CLOQ_OK) {
		if (!o->quiet)
			fprintf(stderr, "cloq: the base shard is damaged or missing: rewriting it\n");
		J->j.base_done = 0;
		J->j.finished = 0;
	}
	if (!J->j.base_done) {
		CLOQ_TRY(write_base(J, err));
		J->j.base_done = 1;
		CLOQ_TRY(cloq_journal_save(J->out, &J->j, err));
	}

	/* the first layer that needs work, and the last */
	int L = J->cfg->layers, first = -1, last = -1;
	for (int l = 0; l < L; l++) {
		int ok = J->j.layer_done[l] && shard_ok(J, l);
		if (J->j.layer_done[l] && !ok) {
			if (!o->quiet)
				fprintf(stderr, "cloq: layer %d's shard does not match the journal: redoing it\n", l);
			J->j.layer_done[l] = 0;
			J->j.finished = 0;
		}
		if (!J->j.layer_done[l]) {
			if (first < 0)
				first = l;
			last = l;
		}
	}
	CLOQ_TRY(cloq_rope_init(&J->rope, J->cfg, J->win.seqlen, err));
	CLOQ_TRY(cloq_block_ws_create(J->cfg, J->win.seqlen, &J->ws, err));
	CLOQ_TRY(check_asym_disk(J, err));
	CLOQ_TRY(choose_stashes(J, err));
	choose_passes(J);
	J->xbuf = cloq_malloc((size_t)J->win.seqlen * J->cfg->hidden * sizeof(float));
	CLOQ_FAIL_IF(!J->xbuf, err, CLOQ_EIO, "out of memory");
	J->slots = o->window_slots > 1 ? o->window_slots : 1;
	J->slot = cloq_calloc((size_t)J->slots, sizeof *J->slot);
	CLOQ_FAIL_IF(!J->slot, err, CLOQ_EIO, "out of memory");
	J->slot[0].ws = J->ws;
	J->slot[0].xbuf = J->xbuf;
	if (J->slots > 1) { /* cloq_plan.c: a workspace, a window and the captured group inputs a slot */
		size_t off[CLOQ_GROUPS], capw = cloq_plan_capture_cols(J->cfg, o->one_pass, off);
		for (int k = 0; k < J->slots; k++) {
			struct win_slot *sl = &J->slot[k];
			if (k > 0) {
				CLOQ_TRY(cloq_block_ws_create(J->cfg, J->win.seqlen, &sl->ws, err));
				sl->xbuf = cloq_malloc((size_t)J->win.seqlen * J->cfg->hidden * sizeof(float));
			}
			sl->capbuf = cloq_malloc((size_t)J->win.seqlen * capw * sizeof(float));
			sl->frame = cloq_cache_frame_new();
			CLOQ_FAIL_IF(!sl->xbuf || !sl->capbuf || !sl->frame, err, CLOQ_EIO, "out of memory for %d window slots",
				     J->slots);
			for (int g = 0; g < CLOQ_GROUPS; g++)
				sl->cap[g] = sl->capbuf + off[g] * J->win.seqlen;
		}
	}
	if (o->asym) { /* the original stream's window, its group input, Xo - Xq, the cross panel */
		const cloq_config *c = J->cfg;
		size_t wide = 0;
		for (int g = 0; g < CLOQ_GROUPS; g++)
			wide = cloq_group_cols(c, g) > wide ? cloq_group_cols(c, g) : wide;
		CLOQ_TRY(cloq_block_ws_create(J->cfg, J->win.seqlen, &J->ws_fp, err));
		J->xbuf_fp = cloq_malloc((size_t)J->win.seqlen * c->hidden * sizeof(float));
		J->cap = cloq_malloc((size_t)J->win.seqlen * wide * sizeof(float));
		J->diff = cloq_malloc((size_t)J->win.seqlen * wide * sizeof(float));
		J->cross_work = cloq_malloc(wide * CLOQ_GRAM_PANEL * sizeof(float));
		CLOQ_FAIL_IF(!J->xbuf_fp || !J->cap || !J->diff || !J->cross_work, err, CLOQ_EIO, "out of memory");
	}

	if (first >= 0) {
		if (!o->quiet && first > 0)
			fprintf(stderr, "cloq: resuming %s at layer %d/%d\n", J->out, first + 1, L);
		/* cache[first] must hold the inputs of layer `first`; if it is missing or damaged,
		 * rebuild it from the embeddings through the finished layers' shards. */
		int start = first;
		cloq_cache_reader *cr = NULL;
		cloq_job_cache_path(J, first, path, sizeof path);
		if (cloq_cache_open(path, &cr, NULL) != CLOQ_OK || cloq_cache_frames(cr) != (size_t)J->win.n) {
			start = 0;
		}
		cloq_cache_close(cr);
		cr = NULL;
		cache_fp_path(J, first, path, sizeof path);
		if (o->asym && (cloq_cache_open(path, &cr, NULL) != CLOQ_OK || cloq_cache_frames(cr) != (size_t)J->win.n))
			start = 0;
		cloq_cache_close(cr);
		remove_stale_caches(J, start);
		J->last_todo = last;
		CLOQ_TRY(cloq_prefetch_create(J->m, &J->pf, err));
		if (start == 0)
			CLOQ_TRY(build_cache0(J, err));
		for (int l = start; l <= last; l++) {
			J->cur_layer = l;
			CLOQ_TRY(cloq_interrupt_check("between layers", err));
			if (J->j.layer_done[l])
				CLOQ_TRY(replay_layer(J, l, err));
			else
				CLOQ_TRY(process_layer(J, l, err));
			cloq_job_cache_path(J, l, path, sizeof path);
			unlink(path);
			cache_fp_path(J, l, path, sizeof path);
			unlink(path);
		}
		cloq_job_cache_path(J, last + 1, path, sizeof path);
		unlink(path);
		cache_fp_path(J, last + 1, path, sizeof path);
		unlink(path);
	}
	/* A run killed after its last journal save but before those unlinks left caches that no
	 * layer needs; with every layer done the loop above does not run to remove them. */
	remove_stale_caches(J, -1);
	remove_stashes(J);
	CLOQ_TRY(write_manifest(J, err));
	J->j.finished = 1;
	CLOQ_TRY(cloq_journal_save(J->out, &J->j, err));
	CLOQ_TRY(write_report(J, 1, err));
	if (!o->quiet)
		fprintf(stderr, "cloq: %s finished in %.1fs (peak RSS %.2f GiB); check it with 'cloq verify %s'\n",
			J->out, cloq_job_now() - J->t0, cloq_peak_rss_gib(), J->out);
fail:
	if (rc && J->m && J->j.layer_done)
		write_report(J, 0, NULL);
	if (rc == CLOQ_EINTERRUPTED && J->j.layer_done) {
		int done = 0;
		for (int l = 0; l < J->j.nlayers; l++)
			done += J->j.layer_done[l];
		char was[CLOQ_ERR_MSG_MAX];
		snprintf(was, sizeof was, "%s", err->msg);
		cloq_err_set(err, rc, "%s in layer %d/%d; %d of %d layers are done and kept: continue with 'cloq resume %s'",
			     was, J->cur_layer + 1, J->j.nlayers, done, J->j.nlayers, J->out);
	}
	cJSON_Delete(settings);
	cJSON_Delete(fp);
	return rc;
}

static void job_free(job *J)
{
	cloq_prefetch_free(J->pf);
	for (int k = 0; J->slot && k < J->slots; k++) { /* slot 0 is ws/xbuf */
		if (k > 0) {
			cloq_block_ws_free(J->slot[k].ws);
			cloq_free(J->slot[k].xbuf);
		}
		cloq_free(J->slot[k].capbuf);
		cloq_cache_frame_free(J->slot[k].frame);
	}
	cloq_free(J->slot);
	cloq_free(J->xbuf);
	cloq_block_ws_free(J->ws);
	cloq_block_ws_free(J->ws_fp);
	cloq_free(J->xbuf_fp);
	cloq_free(J->cap);
	cloq_free(J->diff);
	cloq_free(J->cross_work);
	for (int i = 0; i < 3; i++)
		cloq_free(J->stash_mem[i]);
	cloq_rope_free(&J->rope);
	cloq_journal_free(&J->j);
	cloq_windows_free(&J->win);
	cloq_model_close(J->m);
	cJSON_Delete(J->files_at_start);
	cloq_lock_release(&J->lock); /* last: the job is consistent on disk by now */
}

int cloq_convert_run(const cloq_convert_opts *o, cloq_err *err)
{
	job J;
	memset(&J, 0, sizeof J);
	J.lock.fd = -1;
	J.o = *o;
	int rc = run(&J, err);
	job_free(&J);
	return rc;
}

int cloq_convert_resume(const char *out_dir, int force, int quiet, cloq_err *err)
{
	cloq_journal j;
	int rc = cloq_journal_load_writer(out_dir, &j, err);
	if (rc)
		return rc == CLOQ_EINTEGRITY ? rc : cloq_err_wrap(err, rc, "%s: no job to resume", out_dir);
	cloq_convert_opts o;
	rc = settings_from_json(j.settings, out_dir, &o, err);
	if (rc == CLOQ_OK) {
		o.out_dir = out_dir;
		o.force = force;
		o.quiet = quiet;
		rc = cloq_convert_run(&o, err);
	}
	cloq_journal_free(&j);
	return rc;
}
