/* cloq_cmd_inspect.c - `cloq inspect MODEL_DIR`: what the model is and what converting it costs. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <omp.h>

#include "cloq_cli.h"
#include "cloq_convert.h"
#include "cloq_dtype.h"
#include "cloq_model.h"
#include "cloq_npy.h"
#include "cloq_plan.h"
#include "cloq_sys.h"

static const char help[] =
	"usage: cloq inspect MODEL_DIR [conversion options]\n"
	"\n"
	"Prints the architecture, parameter count, dtypes, safetensors files, the tensors of one decoder\n"
	"layer, and the memory plan of a conversion: predicted peak memory and disk scratch. Conversion\n"
	"options (--nsamples, --seqlen, --rank, --bits, --cache-dtype, --propagate) change the plan.\n";

static void human(double b, char *buf, size_t cap)
{
	const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int i = 0;
	while (b >= 1024 && i < 4) {
		b /= 1024;
		i++;
	}
	snprintf(buf, cap, i ? "%.2f %s" : "%.0f %s", b, u[i]);
}

/* 260032 -> "260,032" */
static void commas(long long v, char *buf, size_t cap)
{
	char tmp[32];
	int n = snprintf(tmp, sizeof tmp, "%lld", v), o = 0;
	for (int i = 0; i < n && o + 2 < (int)cap; i++) {
		if (i && (n - i) % 3 == 0 && tmp[i - 1] != '-')
			buf[o++] = ',';
		buf[o++] = tmp[i];
	}
	buf[o] = '\0';
}

static void print_shape(const cloq_st_tensor *t)
{
	char s[64] = "";
	for (int d = 0; d < t->ndim; d++)
		snprintf(s + strlen(s), sizeof s - strlen(s), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
	printf("    %-48s %-5s [%s]\n", t->name, cloq_dtype_name(t->dtype), s);
}

int cloq_cmd_inspect(int argc, char **argv, cloq_err *err)
{
	if (cloq_cli_wants_help(argc, argv) || argc < 2) {
		fputs(help, argc < 2 ? stderr : stdout);
		return argc < 2 ? cloq_err_set(err, CLOQ_EUSAGE, "missing MODEL_DIR") : CLOQ_OK;
	}
	/* reuse convert's option parser (and its checks) for the plan; -o and calibration are not
	 * needed here */
	cloq_convert_opts o;
	int rc = cloq_convert_parse_opts(argc, argv, &o, err);
	if (rc)
		return rc;
	if (!o.model_dir)
		return cloq_err_set(err, CLOQ_EUSAGE, "missing MODEL_DIR");
	cloq_model *m = NULL;
	cloq_config cfg_only;
	const cloq_config *c;
	char probe[4096], probe2[4096];
	snprintf(probe, sizeof probe, "%s/model.safetensors", o.model_dir);
	snprintf(probe2, sizeof probe2, "%s/model.safetensors.index.json", o.model_dir);
	if (!cloq_file_exists(probe) && !cloq_file_exists(probe2)) {
		/* config.json alone: the plan of a model not downloaded yet */
		rc = cloq_config_load(o.model_dir, &cfg_only, err);
		if (rc)
			return rc;
		c = &cfg_only;
		char pc[32];
		commas(cloq_config_total_params(c), pc, sizeof pc);
		printf("model        %s (config.json only: no weights found, figures from the config)\n", o.model_dir);
		printf("architecture %s, %s parameters\n", c->arch_name, pc);
		printf("layers       %d decoder layers, hidden %d, intermediate %d, %d/%d heads, vocab %d\n", c->layers, c->hidden,
		       c->intermediate, c->heads, c->kv_heads, c->vocab);
		goto plan;
	}
	rc = cloq_model_open(o.model_dir, &m, err);
	if (rc)
		return rc;
	c = &m->cfg;
	char b1[32], b2[32], b3[32];
	long long params = 0;
	int dt_count[CLOQ_DT_COUNT] = {0};
	uint64_t bytes = 0;
	for (size_t i = 0; i < cloq_st_count(m->st); i++) {
		const cloq_st_tensor *t = cloq_st_tensor_at(m->st, i);
		params += (long long)t->nelem;
		bytes += t->nbytes;
		if (t->dtype >= 0 && t->dtype < CLOQ_DT_COUNT)
			dt_count[t->dtype]++;
	}
	printf("model        %s\n", o.model_dir);
	printf("architecture %s\n", c->arch_name);
	char pc[32];
	commas(params, pc, sizeof pc);
	human((double)bytes, b1, sizeof b1);
	if (params >= 1000000000LL)
		printf("parameters   %s (%.2f B) in %zu tensors, %s\n", pc, params / 1e9, cloq_st_count(m->st), b1);
	else
		printf("parameters   %s (%.2f M) in %zu tensors, %s\n", pc, params / 1e6, cloq_st_count(m->st), b1);
	printf("dtypes      ");
	for (int d = 0; d < CLOQ_DT_COUNT; d++)
		if (dt_count[d])
			printf(" %s x%d", cloq_dtype_name(d), dt_count[d]);
	printf("\n");
	printf("layers       %d decoder layers, hidden %d, intermediate %d\n", c->layers, c->hidden, c->intermediate);
	static const char *const rope_kind[] = {"", " (linear scaling)", " (llama3 scaling)",
						" (dynamic NTK: unscaled up to max positions)", " (longrope)"};
	char rot[64] = "";
	if (c->rotary_dim > 0 && c->rotary_dim != c->head_dim)
		snprintf(rot, sizeof rot, " on %d of the %d dims", c->rotary_dim, c->head_dim);
	printf("attention    %d query heads, %d key-value heads%s, head dim %d, rope theta %g%s%s\n", c->heads,
	       c->kv_heads, c->kv_heads < c->heads ? " (GQA)" : "", c->head_dim, c->rope_theta, rot,
	       rope_kind[c->rope_type]);
	if (c->window_attention) {
		int n = 0;
		for (int l = 0; l < c->layers; l++)
			n += c->layer_sliding[l];
		printf("window       sliding window of %d tokens on %d of %d layers\n", c->sliding_window, n, c->layers);
	}
	printf("vocabulary   %d, %s embeddings, max positions %d, rms eps %g\n", c->vocab,
	       c->tie_embeddings ? "tied" : "separate lm_head", c->max_pos, c->rms_eps);
	printf("files        %zu safetensors file%s\n", cloq_st_nfiles(m->st), cloq_st_nfiles(m->st) == 1 ? "" : "s");
	for (size_t f = 0; f < cloq_st_nfiles(m->st); f++)
		printf("    %s (%s)\n", cloq_st_file_path(m->st, f), (human((double)cloq_st_file_size(m->st, f), b1, sizeof b1), b1));
	int same = 1; /* a mixture of experts may mix dense and sparse layers */
	for (int l = 1; l < c->layers; l++)
		same &= cloq_layer_is_moe(c, l) == cloq_layer_is_moe(c, 0);
	printf("layer 0 tensors (%s):\n", same ? "every layer has the same"
					: cloq_layer_is_moe(c, 0) ? "its MLP has experts; the dense layers have a plain MLP"
								  : "its MLP is dense; the sparse layers have experts");
	size_t idx[64];
	size_t k = cloq_st_layer_tensors(m->st, 0, idx, 64);
	for (size_t i = 0; i < k && i < 64; i++)
		print_shape(cloq_st_tensor_at(m->st, idx[i]));
	printf("other tensors:\n");
	for (size_t i = 0; i < cloq_st_count(m->st); i++) {
		const cloq_st_tensor *t = cloq_st_tensor_at(m->st, i);
		if (strncmp(t->name, "model.layers.", 13) != 0)
			print_shape(t);
	}
plan:;
	int seqlen = o.seqlen_given ? o.seqlen : (c->max_pos < 2048 ? c->max_pos : 2048);
	if (o.calib_tokens) { /* a 2-D tokens file is the windows themselves, as convert reads it */
		int32_t *ids = NULL;
		cloq_npy_info ni;
		cloq_err e2;
		if (cloq_npy_read_i32(o.calib_tokens, &ids, &ni, &e2) == CLOQ_OK && ni.ndim == 2) {
			seqlen = (int)ni.shape[1];
			if (!o.nsamples_given || o.nsamples > (int)ni.shape[0])
				o.nsamples = (int)ni.shape[0];
		}
		cloq_free(ids);
	}
	cloq_err sw;
	cloq_err_clear(&sw);
	if (cloq_config_check_seqlen(c, seqlen, o.model_dir, &sw))
		printf("warning      convert would refuse this --seqlen: %s\n", sw.msg);
	if (c->moe)
		printf("experts      %d per layer, top-%d%s, width %d, in %d of %d layers%s\n", c->moe, c->moe_topk,
		       c->moe_norm_topk ? " (weights renormalised)" : "", c->moe_inter, cloq_config_sparse_layers(c), c->layers,
		       c->moe_shared_inter ? ", plus a shared expert" : "");
	cloq_plan p;
	cloq_plan_compute(c, &o, o.nsamples, seqlen, &p);
	printf("conversion plan (%d x %d calibration tokens, INT%d group %d, rank %d):\n", o.nsamples, seqlen, o.bits,
	       o.group_size, o.rank);
	human((double)p.peak_bytes, b1, sizeof b1);
	printf("    peak memory    %s (dominated by %s)\n", b1, p.largest_item);
	human((double)p.weights_bytes, b1, sizeof b1);
	human((double)p.solver_bytes, b2, sizeof b2);
	human((double)p.forward_bytes, b3, sizeof b3);
	printf("                   layer weights %s, solver %s, forward %s\n", b1, b2, b3);
	human((double)p.scratch_disk, b1, sizeof b1);
	human((double)p.output_bytes, b2, sizeof b2);
	if (o.quantizer != CLOQ_Q_NF4_BNB) { /* the export also copies the tokenizer and generation files */
		static const char *const copies[] = {"tokenizer.json", "tokenizer_config.json", "generation_config.json",
						     "special_tokens_map.json", "tokenizer.model", "config.json"};
		for (size_t i = 0; i < sizeof copies / sizeof copies[0]; i++) {
			char fp[4200];
			struct stat st;
			snprintf(fp, sizeof fp, "%s/%s", o.model_dir, copies[i]);
			if (stat(fp, &st) == 0)
				p.export_bytes += st.st_size;
		}
	}
	human((double)p.export_bytes, b3, sizeof b3);
	printf("    disk scratch   %s (activation caches, before compression)\n", b1);
	if (!o.one_pass && !o.full_passes) { /* convert's choose_stashes */
		char b4[32];
		char b5[32];
		human((double)p.stash_bytes, b4, sizeof b4);
		human((double)(p.peak_bytes + p.stash_bytes), b5, sizeof b5);
		printf("    stashes        %s of per-window states: in RAM on top of the peak (%s in all) when that is under "
		       "a quarter of the free memory (and within --mem-budget), else on disk\n", b4, b5);
	}
	if (p.window_slots > 1)
		printf("    windows        %d at once, one a thread (their workspaces are in the peak)\n", p.window_slots);
	else
		printf("    windows        one at a time, threaded GEMMs (window slots need two windows a thread and "
		       "room: cloq_plan.h)\n");
	printf("    output         about %s of shards in OUT; 'cloq export' (%s) about %s\n", b2,
	       o.quantizer == CLOQ_Q_NF4_BNB ? "the adapter" : o.quantizer == CLOQ_Q_NF ? "dense fp16" : "GPTQ", b3);
	printf("    fits           16 GiB: %s; 32 GiB: %s (the peak, with 1 GiB left for the system)\n",
	       p.peak_bytes + (1LL << 30) <= (16LL << 30) ? "yes" : "no", p.peak_bytes + (1LL << 30) <= (32LL << 30) ? "yes" : "no");
	if (o.mem_budget > 0) {
		human((double)o.mem_budget, b1, sizeof b1);
		printf("    --mem-budget   %s: %s\n", b1, p.peak_bytes <= o.mem_budget ? "fits" : "does NOT fit (convert will refuse)");
	}
	double gf = cloq_plan_measure_gflops();
	if (gf > 0) {
		char when[32];
		double peak = cloq_plan_peak_gflops(gf, omp_get_max_threads(), when, sizeof when);
		double parts[5], s = cloq_plan_seconds_load(&p, gf, peak / gf, parts);
		char t[32];
		if (s >= 3600)
			snprintf(t, sizeof t, "%.1f h", s / 3600);
		else if (s >= 60)
			snprintf(t, sizeof t, "%.1f min", s / 60);
		else
			snprintf(t, sizeof t, "%.1f s", s);
		printf("    time           about %s here: forward + Gram %.3g s, GPTQ %.3g s, solve %.3g s, I/O %.3g s,\n"
		       "                   fixed costs %.3g s; at the %.0f GFLOP/s sgemm rate measured now (best of 5\n"
		       "                   probes, %d threads; this machine's best, %.0f GFLOP/s, recorded %s: I/O and\n"
		       "                   fixed costs stretched by the ratio) and the stage efficiencies of\n"
		       "                   docs/PERFORMANCE.md section 9; a change of load or a slower disk moves it\n",
		       t, parts[0], parts[1], parts[2], parts[3], parts[4], gf, omp_get_max_threads(), peak, when);
	}
	cloq_model_close(m);
	return CLOQ_OK;
}
