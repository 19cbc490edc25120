/*
 * mkmodel - write a random-weight Hugging Face LlamaForCausalLM directory of any geometry:
 * config.json + model.safetensors, or with --shards N the files model-0000i-of-0000N.safetensors
 * plus model.safetensors.index.json. Used by tests and benchmarks to get a realistic model (names,
 * shapes, dtypes, sharding) of any size without downloading one.
 *
 * Weights: every Linear (out, in) is drawn i.i.d. with mean 0 and std 1/sqrt(in) so activations
 * keep their scale through the layers; embeddings (and an untied lm_head) std 1/sqrt(hidden);
 * RMSNorm weights 1 + N(0, 0.05^2). The "normal" is the sum of four 16-bit uniforms (Irwin-Hall),
 * rescaled: cheap, bounded (|x| < 3.5 std) and deterministic. Each tensor has its own stream seeded
 * by (--seed, tensor name), so the values do not depend on --shards or on the tensor order.
 * Output streams tensor by tensor in 1 Mi-element pieces: memory stays ~10 MB for any model size.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_dtype.h"
#include "cloq_error.h"
#include "cloq_safetensors.h"
#include "cloq_sys.h"

/* What a family changes in the files. Norm kinds: 2 around 1 (w applied as is), 3 around 0
 * (Gemma: applied as 1 + w). */
struct family {
	const char *name, *arch, *model_type;
	int qk_norm;     /* self_attn.q_norm / k_norm (head_dim) per layer */
	int gemma;       /* four norms a layer around 0, gelu-tanh */
	int qkv_bias;    /* q/k/v biases (Qwen2) */
	int fused;       /* Phi-3: self_attn.qkv_proj = [q; k; v], mlp.gate_up_proj = [gate; up] */
	const char *extra; /* config.json lines of its own */
	int moe;         /* 1: Mixtral's block_sparse_moe (w1/w3/w2); 2: Qwen's mlp.gate, mlp.experts.E.*_proj */
	int shared;      /* Qwen2-MoE's shared expert */
};

static const struct family families[] = {
	{"llama", "LlamaForCausalLM", "llama", 0, 0, 0, 0, "", 0, 0},
	{"mistral", "MistralForCausalLM", "mistral", 0, 0, 0, 0, "", 0, 0},
	{"qwen2", "Qwen2ForCausalLM", "qwen2", 0, 0, 1, 0, "", 0, 0},
	{"qwen3", "Qwen3ForCausalLM", "qwen3", 1, 0, 0, 0, "  \"attention_bias\": false,\n", 0, 0},
	{"gemma2", "Gemma2ForCausalLM", "gemma2", 0, 1, 0, 0,
	 "  \"attention_bias\": false,\n  \"hidden_activation\": \"gelu_pytorch_tanh\",\n"
	 "  \"query_pre_attn_scalar\": 24,\n  \"attn_logit_softcapping\": 50.0,\n"
	 "  \"final_logit_softcapping\": 30.0,\n", 0, 0},
	{"gemma3", "Gemma3ForCausalLM", "gemma3_text", 1, 1, 0, 0,
	 "  \"attention_bias\": false,\n  \"hidden_activation\": \"gelu_pytorch_tanh\",\n"
	 "  \"query_pre_attn_scalar\": 24,\n  \"attn_logit_softcapping\": null,\n"
	 "  \"final_logit_softcapping\": null,\n"
	 "  \"sliding_window_pattern\": 2,\n  \"rope_local_base_freq\": 10000.0,\n"
	 "  \"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 8.0},\n", 0, 0},
	{"phi3", "Phi3ForCausalLM", "phi3", 0, 0, 0, 1,
	 "  \"attention_bias\": false,\n  \"embd_pdrop\": 0.0,\n  \"resid_pdrop\": 0.0,\n"
	 "  \"rope_scaling\": null,\n", 0, 0},
	{"mixtral", "MixtralForCausalLM", "mixtral", 0, 0, 0, 0, "", 1, 0},
	{"qwen2_moe", "Qwen2MoeForCausalLM", "qwen2_moe", 0, 0, 1, 0, "", 2, 1},
	{"qwen3_moe", "Qwen3MoeForCausalLM", "qwen3_moe", 1, 0, 0, 0, "  \"attention_bias\": false,\n", 2, 0},
};
#define N_FAMILIES (sizeof families / sizeof families[0])

struct geom {
	long hidden, inter, layers, heads, kv_heads, head_dim, vocab, max_pos;
	double rope_theta;
	int tied;
	const struct family *fam; /* --family (default llama) */
	long window;              /* --sliding-window N: the config's sliding_window (0: the family's) */
	long max_window_layers;   /* --max-window-layers N (Qwen2/3; with --sliding-window) */
	long experts, topk, moe_inter, shared_inter, sparse_step; /* mixture of experts */
	enum cloq_dtype dtype;
	unsigned long long seed;
	int shards;
	const char *out;
	int quiet;
};

struct tdesc {
	char name[96];
	int ndim;
	int64_t shape[2];
	int kind; /* 0 linear, 1 embedding, 2 norm */
	uint64_t nbytes;
	int shard;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: mkmodel --out DIR [options]\n"
		"Writes a random LlamaForCausalLM model directory (config.json + safetensors).\n"
		"  --preset NAME       llama2-7b (4096/11008, 32 heads, 32 kv, vocab 32000, 32 layers)\n"
		"                      llama3-70b (8192/28672, 64 heads, 8 kv, vocab 128256, 80 layers)\n"
		"                      tiny (64/172, 8 heads, 4 kv, vocab 512, 2 layers; the default)\n"
		"  --hidden N --intermediate N --layers N --heads N --kv-heads N --head-dim N --vocab N\n"
		"                      override the preset (e.g. --preset llama3-70b --layers 2 --vocab 1024)\n"
		"  --dtype f32|f16|bf16  (default bf16)\n"
		"  --seed N            (default 0; same seed = same bytes)\n"
		"  --tied              tie lm_head to the embedding (no lm_head.weight)\n"
		"  --family NAME       llama (default), mistral, qwen2 (q/k/v biases), qwen3 (q_norm/k_norm),\n"
		"                      gemma2 (four norms a layer around 0, soft-capping 50/30, gelu-tanh),\n"
		"                      gemma3 (text: gemma2's layer, q/k norms, no caps, sliding window 32 on\n"
		"                      every other layer, local RoPE base 1e4, global linear scaling 8),\n"
		"                      phi3 (fused self_attn.qkv_proj and mlp.gate_up_proj)\n"
		"                      mixtral, qwen2_moe (shared expert), qwen3_moe (q/k norms): mixtures of\n"
		"                      experts, with --experts N (default 4) --topk K (2) --moe-intermediate N\n"
		"                      (48) --shared-intermediate N (qwen2_moe, 64) --decoder-sparse-step S (1:\n"
		"                      every layer sparse; 2: layers 1, 3, ... sparse, the others dense)\n"
		"  --sliding-window N  the config's sliding_window (mistral, phi3: every layer; qwen2/3: with\n"
		"                      use_sliding_window, layers >= --max-window-layers (default 0);\n"
		"                      gemma2: even layers, default 4096; gemma3: default 32)\n"
		"  --shards N          write N shards + model.safetensors.index.json (default 1: model.safetensors)\n"
		"  --max-pos N --rope-theta X   config values (defaults per preset)\n"
		"  --quiet             no summary on stdout\n");
}

/* ---- deterministic random numbers ----------------------------------------------------------- */
static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

struct rng {
	uint64_t s[4];
};

static void rng_seed(struct rng *r, uint64_t seed, const char *name)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a of the name */
	for (const char *p = name; *p; p++)
		h = (h ^ (uint8_t)*p) * 1099511628211ull;
	uint64_t s = seed ^ h;
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&s);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t xoshiro(struct rng *r) /* xoshiro256** */
{
	uint64_t *s = r->s, res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return res;
}

/* mean 0, variance 1 */
static inline float approx_normal(struct rng *r)
{
	uint64_t v = xoshiro(r);
	uint32_t a = (uint32_t)(v & 0xffff) + (uint32_t)((v >> 16) & 0xffff) +
		     (uint32_t)((v >> 32) & 0xffff) + (uint32_t)(v >> 48);
	/* sum of 4 U(0,1) has mean 2 and variance 1/3 */
	return ((float)a * (1.0f / 65536.0f) - 2.0f) * 1.7320508f;
}

/* ---- arguments ------------------------------------------------------------------------------ */
static int parse_long(const char *s, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || v <= 0)
		return 0;
	*out = v;
	return 1;
}

static int preset(struct geom *g, const char *name)
{
	if (strcmp(name, "tiny") == 0) {
		g->hidden = 64, g->inter = 172, g->layers = 2, g->heads = 8, g->kv_heads = 4;
		g->vocab = 512, g->max_pos = 512, g->rope_theta = 10000.0;
	} else if (strcmp(name, "llama2-7b") == 0) {
		g->hidden = 4096, g->inter = 11008, g->layers = 32, g->heads = 32, g->kv_heads = 32;
		g->vocab = 32000, g->max_pos = 4096, g->rope_theta = 10000.0;
	} else if (strcmp(name, "llama3-70b") == 0) {
		g->hidden = 8192, g->inter = 28672, g->layers = 80, g->heads = 64, g->kv_heads = 8;
		g->vocab = 128256, g->max_pos = 8192, g->rope_theta = 500000.0;
	} else {
		return 0;
	}
	g->head_dim = 0;
	return 1;
}

static int parse_args(int argc, char **argv, struct geom *g)
{
	memset(g, 0, sizeof *g);
	preset(g, "tiny");
	g->fam = &families[0];
	g->dtype = CLOQ_DT_BF16;
	g->experts = 4, g->topk = 2, g->moe_inter = 48, g->shared_inter = 64, g->sparse_step = 1;
	g->shards = 1;
	/* the preset first, so that explicit sizes override it wherever they appear */
	for (int i = 1; i + 1 < argc; i++)
		if (strcmp(argv[i], "--preset") == 0 && !preset(g, argv[i + 1])) {
			fprintf(stderr, "mkmodel: unknown preset '%s'\n", argv[i + 1]);
			return 0;
		}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		long n;
		if (strcmp(a, "--family") == 0 && v) {
			g->fam = NULL;
			for (size_t k = 0; k < N_FAMILIES; k++)
				if (!strcmp(v, families[k].name))
					g->fam = &families[k];
			if (!g->fam) {
				fprintf(stderr, "mkmodel: unknown family '%s'\n", v);
				return 0;
			}
			i++;
			continue;
		}
		if (strcmp(a, "--tied") == 0) {
			g->tied = 1;
			continue;
		}
		if (strcmp(a, "--quiet") == 0) {
			g->quiet = 1;
			continue;
		}
		if (!v) {
			fprintf(stderr, "mkmodel: %s needs a value\n", a);
			return 0;
		}
		i++;
		if (strcmp(a, "--preset") == 0)
			continue;
		if (strcmp(a, "--out") == 0) {
			g->out = v;
		} else if (strcmp(a, "--dtype") == 0) {
			if (strcmp(v, "f32") == 0)
				g->dtype = CLOQ_DT_F32;
			else if (strcmp(v, "f16") == 0)
				g->dtype = CLOQ_DT_F16;
			else if (strcmp(v, "bf16") == 0)
				g->dtype = CLOQ_DT_BF16;
			else {
				fprintf(stderr, "mkmodel: --dtype must be f32, f16 or bf16\n");
				return 0;
			}
		} else if (strcmp(a, "--seed") == 0) {
			char *end;
			g->seed = strtoull(v, &end, 10);
			if (*end) {
				fprintf(stderr, "mkmodel: bad --seed '%s'\n", v);
				return 0;
			}
		} else if (strcmp(a, "--rope-theta") == 0) {
			g->rope_theta = atof(v);
		} else {
			if (!parse_long(v, &n)) {
				fprintf(stderr, "mkmodel: %s needs a positive integer, got '%s'\n", a, v);
				return 0;
			}
			if (strcmp(a, "--hidden") == 0)
				g->hidden = n;
			else if (strcmp(a, "--intermediate") == 0)
				g->inter = n;
			else if (strcmp(a, "--layers") == 0)
				g->layers = n;
			else if (strcmp(a, "--heads") == 0)
				g->heads = n;
			else if (strcmp(a, "--kv-heads") == 0)
				g->kv_heads = n;
			else if (strcmp(a, "--head-dim") == 0)
				g->head_dim = n;
			else if (strcmp(a, "--vocab") == 0)
				g->vocab = n;
			else if (strcmp(a, "--shards") == 0)
				g->shards = (int)n;
			else if (strcmp(a, "--max-pos") == 0)
				g->max_pos = n;
			else if (strcmp(a, "--sliding-window") == 0)
				g->window = n;
			else if (strcmp(a, "--experts") == 0)
				g->experts = n;
			else if (strcmp(a, "--topk") == 0)
				g->topk = n;
			else if (strcmp(a, "--moe-intermediate") == 0)
				g->moe_inter = n;
			else if (strcmp(a, "--shared-intermediate") == 0)
				g->shared_inter = n;
			else if (strcmp(a, "--decoder-sparse-step") == 0)
				g->sparse_step = n;
			else if (strcmp(a, "--max-window-layers") == 0)
				g->max_window_layers = n;
			else {
				fprintf(stderr, "mkmodel: unknown option '%s'\n", a);
				return 0;
			}
		}
	}
	if (!g->out) {
		fprintf(stderr, "mkmodel: --out DIR is required\n");
		return 0;
	}
	if (g->head_dim == 0) {
		if (g->hidden % g->heads) {
			fprintf(stderr, "mkmodel: hidden %ld is not a multiple of heads %ld (give --head-dim)\n",
				g->hidden, g->heads);
			return 0;
		}
		g->head_dim = g->hidden / g->heads;
	}
	if (g->heads % g->kv_heads) {
		fprintf(stderr, "mkmodel: heads %ld is not a multiple of kv-heads %ld\n", g->heads, g->kv_heads);
		return 0;
	}
	return 1;
}

/* ---- the model ------------------------------------------------------------------------------ */
static size_t list_tensors(const struct geom *g, struct tdesc *t)
{
	size_t n = 0;
	long q = g->heads * g->head_dim, kv = g->kv_heads * g->head_dim;
#define ADD(k, nd, d0, d1, ...)                                                        \
	do {                                                                           \
		snprintf(t[n].name, sizeof t[n].name, __VA_ARGS__);                    \
		t[n].kind = (k), t[n].ndim = (nd), t[n].shape[0] = (d0), t[n].shape[1] = (d1); \
		n++;                                                                   \
	} while (0)
	const struct family *f = g->fam;
	int nk = f->gemma ? 3 : 2; /* the kind of the norms */
	ADD(1, 2, g->vocab, g->hidden, "model.embed_tokens.weight");
	for (long l = 0; l < g->layers; l++) {
		ADD(nk, 1, g->hidden, 0, "model.layers.%ld.input_layernorm.weight", l);
		int sparse = f->moe && (l + 1) % g->sparse_step == 0;
		if (sparse) {
			const char *blk = f->moe == 1 ? "block_sparse_moe" : "mlp";
			long I = f->moe == 1 ? g->inter : g->moe_inter;
			ADD(0, 2, g->experts, g->hidden, "model.layers.%ld.%s.gate.weight", l, blk);
			for (long e = 0; e < g->experts; e++) {
				if (f->moe == 1) {
					ADD(0, 2, I, g->hidden, "model.layers.%ld.block_sparse_moe.experts.%ld.w1.weight", l, e);
					ADD(0, 2, g->hidden, I, "model.layers.%ld.block_sparse_moe.experts.%ld.w2.weight", l, e);
					ADD(0, 2, I, g->hidden, "model.layers.%ld.block_sparse_moe.experts.%ld.w3.weight", l, e);
				} else {
					ADD(0, 2, g->hidden, I, "model.layers.%ld.mlp.experts.%ld.down_proj.weight", l, e);
					ADD(0, 2, I, g->hidden, "model.layers.%ld.mlp.experts.%ld.gate_proj.weight", l, e);
					ADD(0, 2, I, g->hidden, "model.layers.%ld.mlp.experts.%ld.up_proj.weight", l, e);
				}
			}
			if (f->shared) {
				ADD(0, 2, g->hidden, g->shared_inter, "model.layers.%ld.mlp.shared_expert.down_proj.weight", l);
				ADD(0, 2, g->shared_inter, g->hidden, "model.layers.%ld.mlp.shared_expert.gate_proj.weight", l);
				ADD(0, 2, g->shared_inter, g->hidden, "model.layers.%ld.mlp.shared_expert.up_proj.weight", l);
				ADD(0, 2, 1, g->hidden, "model.layers.%ld.mlp.shared_expert_gate.weight", l);
			}
		} else {
			ADD(0, 2, g->hidden, g->inter, "model.layers.%ld.mlp.down_proj.weight", l);
		}
		if (sparse) {
		} else if (f->fused) {
			ADD(0, 2, 2 * g->inter, g->hidden, "model.layers.%ld.mlp.gate_up_proj.weight", l);
		} else {
			ADD(0, 2, g->inter, g->hidden, "model.layers.%ld.mlp.gate_proj.weight", l);
			ADD(0, 2, g->inter, g->hidden, "model.layers.%ld.mlp.up_proj.weight", l);
		}
		ADD(nk, 1, g->hidden, 0, "model.layers.%ld.post_attention_layernorm.weight", l);
		if (f->gemma) {
			ADD(3, 1, g->hidden, 0, "model.layers.%ld.post_feedforward_layernorm.weight", l);
			ADD(3, 1, g->hidden, 0, "model.layers.%ld.pre_feedforward_layernorm.weight", l);
		}
		if (f->qkv_bias)
			ADD(4, 1, kv, 0, "model.layers.%ld.self_attn.k_proj.bias", l);
		if (f->qk_norm)
			ADD(nk, 1, g->head_dim, 0, "model.layers.%ld.self_attn.k_norm.weight", l);
		if (!f->fused)
			ADD(0, 2, kv, g->hidden, "model.layers.%ld.self_attn.k_proj.weight", l);
		ADD(0, 2, g->hidden, q, "model.layers.%ld.self_attn.o_proj.weight", l);
		if (f->qkv_bias)
			ADD(4, 1, q, 0, "model.layers.%ld.self_attn.q_proj.bias", l);
		if (f->qk_norm)
			ADD(nk, 1, g->head_dim, 0, "model.layers.%ld.self_attn.q_norm.weight", l);
		if (f->fused) {
			ADD(0, 2, q + 2 * kv, g->hidden, "model.layers.%ld.self_attn.qkv_proj.weight", l);
		} else {
			ADD(0, 2, q, g->hidden, "model.layers.%ld.self_attn.q_proj.weight", l);
			if (f->qkv_bias)
				ADD(4, 1, kv, 0, "model.layers.%ld.self_attn.v_proj.bias", l);
			ADD(0, 2, kv, g->hidden, "model.layers.%ld.self_attn.v_proj.weight", l);
		}
	}
	ADD(nk, 1, g->hidden, 0, "model.norm.weight");
	if (!g->tied)
		ADD(1, 2, g->vocab, g->hidden, "lm_head.weight");
#undef ADD
	size_t esz = cloq_dtype_size(g->dtype);
	for (size_t i = 0; i < n; i++)
		t[i].nbytes = (uint64_t)t[i].shape[0] * (uint64_t)(t[i].ndim == 2 ? t[i].shape[1] : 1) * esz;
	return n;
}

static int write_tensor(cloq_st_writer *w, size_t index, const struct geom *g, const struct tdesc *t,
			float *fbuf, void *obuf, size_t piece, cloq_err *err)
{
	struct rng r;
	rng_seed(&r, g->seed, t->name);
	uint64_t nelem = (uint64_t)t->shape[0] * (uint64_t)(t->ndim == 2 ? t->shape[1] : 1);
	float std = t->kind == 0 ? 1.0f / sqrtf((float)t->shape[1])
		  : t->kind == 1 ? 1.0f / sqrtf((float)g->hidden)
				 : 0.05f;
	float mean = t->kind == 2 ? 1.0f : 0.0f; /* kind 3: Gemma's norms, applied as 1 + w */
	if (t->kind == 3 || t->kind == 4) /* 4: biases */
		std = 0.1f;
	size_t esz = cloq_dtype_size(g->dtype);
	for (uint64_t done = 0; done < nelem;) {
		size_t k = nelem - done < piece ? (size_t)(nelem - done) : piece;
		for (size_t i = 0; i < k; i++)
			fbuf[i] = mean + std * approx_normal(&r);
		cloq_dtype_from_f32(g->dtype, fbuf, obuf, k);
		int rc = cloq_st_writer_write(w, index, obuf, k * esz, err);
		if (rc)
			return rc;
		done += k;
	}
	return CLOQ_OK;
}

static int write_config(const struct geom *g, cloq_err *err)
{
	char path[4096], buf[4096], win[256] = "";
	const struct family *f = g->fam;
	snprintf(path, sizeof path, "%s/config.json", g->out);
	const char *td = g->dtype == CLOQ_DT_F32 ? "float32" : g->dtype == CLOQ_DT_F16 ? "float16" : "bfloat16";
	long w = g->window ? g->window : !strcmp(f->name, "gemma3") ? 32 : !strcmp(f->name, "gemma2") ? 4096 : 0;
	if (!strcmp(f->name, "qwen2") || !strcmp(f->name, "qwen3") || f->moe == 2)
		snprintf(win, sizeof win, "  \"use_sliding_window\": %s,\n  \"sliding_window\": %ld,\n"
			 "  \"max_window_layers\": %ld,\n", w ? "true" : "false", w ? w : 4096, g->max_window_layers);
	else if (w)
		snprintf(win, sizeof win, "  \"sliding_window\": %ld,\n", w);
	else if (!strcmp(f->name, "mistral") || !strcmp(f->name, "phi3") || f->moe == 1)
		snprintf(win, sizeof win, "  \"sliding_window\": null,\n");
	char moe[512] = "";
	if (f->moe == 1)
		snprintf(moe, sizeof moe, "  \"num_local_experts\": %ld,\n  \"num_experts_per_tok\": %ld,\n", g->experts,
			 g->topk);
	else if (f->moe == 2)
		snprintf(moe, sizeof moe,
			 "  \"num_experts\": %ld,\n  \"num_experts_per_tok\": %ld,\n  \"moe_intermediate_size\": %ld,\n"
			 "  \"norm_topk_prob\": %s,\n  \"decoder_sparse_step\": %ld,\n  \"mlp_only_layers\": [],\n",
			 g->experts, g->topk, g->moe_inter, f->shared ? "false" : "true", g->sparse_step);
	if (f->shared)
		snprintf(moe + strlen(moe), sizeof moe - strlen(moe), "  \"shared_expert_intermediate_size\": %ld,\n",
			 g->shared_inter);
	int n = snprintf(buf, sizeof buf,
			 "{\n"
			 "  \"architectures\": [\"%s\"],\n"
			 "  \"model_type\": \"%s\",\n%s%s%s"
			 "  \"hidden_size\": %ld,\n"
			 "  \"intermediate_size\": %ld,\n"
			 "  \"num_hidden_layers\": %ld,\n"
			 "  \"num_attention_heads\": %ld,\n"
			 "  \"num_key_value_heads\": %ld,\n"
			 "  \"head_dim\": %ld,\n"
			 "  \"vocab_size\": %ld,\n"
			 "  \"max_position_embeddings\": %ld,\n"
			 "  \"rms_norm_eps\": 1e-05,\n"
			 "  \"rope_theta\": %.1f,\n"
			 "  \"hidden_act\": \"%s\",\n"
			 "  \"tie_word_embeddings\": %s,\n"
			 "  \"bos_token_id\": 1,\n"
			 "  \"eos_token_id\": 2,\n"
			 "  \"torch_dtype\": \"%s\"\n"
			 "}\n",
			 f->arch, f->model_type, f->extra, win, moe, g->hidden, g->inter, g->layers, g->heads, g->kv_heads,
			 g->head_dim, g->vocab, g->max_pos, g->rope_theta, f->gemma ? "gelu_pytorch_tanh" : "silu",
			 g->tied ? "true" : "false", td);
	if (n < 0 || (size_t)n >= sizeof buf)
		return cloq_err_set(err, CLOQ_EUSAGE, "config.json too long");
	return cloq_write_file_atomic(path, buf, (size_t)n, err);
}

static void shard_name(char *out, size_t cap, const struct geom *g, int s)
{
	if (g->shards == 1)
		snprintf(out, cap, "model.safetensors");
	else
		snprintf(out, cap, "model-%05d-of-%05d.safetensors", s + 1, g->shards);
}

static int write_index(const struct geom *g, const struct tdesc *t, size_t n, uint64_t total,
		       cloq_err *err)
{
	char path[4096], name[64];
	size_t cap = 256 + n * 160, len = 0;
	char *buf = cloq_malloc(cap);
	if (!buf)
		return cloq_err_set(err, CLOQ_EIO, "out of memory");
	len += (size_t)snprintf(buf + len, cap - len,
				"{\n  \"metadata\": {\"total_size\": %llu},\n  \"weight_map\": {\n",
				(unsigned long long)total);
	for (size_t i = 0; i < n; i++) {
		shard_name(name, sizeof name, g, t[i].shard);
		len += (size_t)snprintf(buf + len, cap - len, "    \"%s\": \"%s\"%s\n", t[i].name, name,
					i + 1 < n ? "," : "");
	}
	len += (size_t)snprintf(buf + len, cap - len, "  }\n}\n");
	snprintf(path, sizeof path, "%s/model.safetensors.index.json", g->out);
	int rc = cloq_write_file_atomic(path, buf, len, err);
	cloq_free(buf);
	return rc;
}

int main(int argc, char **argv)
{
	struct geom g;
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		}
	if (!parse_args(argc, argv, &g)) {
		fprintf(stderr, "mkmodel: see mkmodel --help\n");
		return CLOQ_EUSAGE;
	}
	cloq_err err;
	cloq_err_clear(&err);
	int rc = CLOQ_OK;
	size_t nmax = 3 + (size_t)g.layers * (16 + 3 * (size_t)g.experts);
	struct tdesc *t = cloq_calloc(nmax, sizeof *t);
	const size_t piece = (size_t)1 << 20;
	float *fbuf = cloq_aligned_alloc(64, piece * sizeof(float));
	void *obuf = cloq_aligned_alloc(64, piece * sizeof(float));
	cloq_st_writer *w = NULL;
	if (!t || !fbuf || !obuf) {
		rc = cloq_err_set(&err, CLOQ_EIO, "out of memory");
		goto out;
	}
	size_t n = list_tensors(&g, t);
	uint64_t total = 0;
	for (size_t i = 0; i < n; i++)
		total += t[i].nbytes;
	if ((size_t)g.shards > n) {
		rc = cloq_err_set(&err, CLOQ_EUSAGE, "--shards %d exceeds the %zu tensors", g.shards, n);
		goto out;
	}
	/* split in order into shards of about total/N bytes, each non-empty */
	uint64_t target = (total + (uint64_t)g.shards - 1) / (uint64_t)g.shards, in_shard = 0;
	int s = 0;
	size_t count = 0;
	for (size_t i = 0; i < n; i++) {
		size_t left = n - i;
		if (s < g.shards - 1 && count > 0 &&
		    (in_shard + t[i].nbytes > target || left <= (size_t)(g.shards - 1 - s))) {
			s++;
			in_shard = 0;
			count = 0;
		}
		t[i].shard = s;
		in_shard += t[i].nbytes;
		count++;
	}
	if ((rc = cloq_mkdir_p(g.out, &err)))
		goto out;
	size_t first = 0;
	for (int sh = 0; sh < g.shards; sh++) {
		char name[64], path[4096];
		shard_name(name, sizeof name, &g, sh);
		snprintf(path, sizeof path, "%s/%s", g.out, name);
		if ((rc = cloq_st_writer_create(path, &w, &err)))
			goto out;
		size_t last = first;
		while (last < n && t[last].shard == sh)
			last++;
		for (size_t i = first; i < last; i++)
			if ((rc = cloq_st_writer_add(w, t[i].name, g.dtype, t[i].ndim, t[i].shape, &err)))
				goto out;
		if ((rc = cloq_st_writer_begin(w, &err)))
			goto out;
		for (size_t i = first; i < last; i++)
			if ((rc = write_tensor(w, i - first, &g, &t[i], fbuf, obuf, piece, &err)))
				goto out;
		if ((rc = cloq_st_writer_commit(w, &err)))
			goto out;
		cloq_st_writer_free(w);
		w = NULL;
		first = last;
	}
	if (g.shards > 1 && (rc = write_index(&g, t, n, total, &err)))
		goto out;
	if ((rc = write_config(&g, &err)))
		goto out;
	if (!g.quiet)
		printf("mkmodel: %s: %zu tensors, %llu bytes in %d file(s), %s, hidden %ld, intermediate %ld, "
		       "%ld layers, %ld/%ld heads, head_dim %ld, vocab %ld%s\n",
		       g.out, n, (unsigned long long)total, g.shards, cloq_dtype_name(g.dtype), g.hidden,
		       g.inter, g.layers, g.heads, g.kv_heads, g.head_dim, g.vocab, g.tied ? ", tied" : "");
out:
	if (rc)
		fprintf(stderr, "mkmodel: %s\n", err.msg);
	cloq_st_writer_free(w);
	cloq_free(t);
	cloq_free(fbuf);
	cloq_free(obuf);
	return rc;
}
