/* cloq_convert_args.c - `cloq convert` options and help (see cloq_convert.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_cli.h"
#include "cloq_convert.h"

/* --mem-budget: at most 1 PiB; anything larger is a typo, not a machine */
#define MEM_BUDGET_MAX (1ULL << 50)

const char cloq_convert_help[] =
	"usage: cloq convert MODEL_DIR -o OUT [options]\n"
	"\n"
	"Quantize every decoder layer of MODEL_DIR and initialise a LoRA adapter, one layer at a time.\n"
	"Re-running the same command (or 'cloq resume OUT') continues an interrupted job.\n"
	"\n"
	"calibration:\n"
	"  --calib FILE.txt          text to tokenize with MODEL_DIR's tokenizer\n"
	"  --calib-tokens FILE.npy   int32/int64 ids: 2-D = these exact windows, 1-D = a stream\n"
	"  --nsamples N              windows (default 128; 2-D tokens: all rows)\n"
	"  --seqlen N                tokens per window (default 2048, at most max_position_embeddings)\n"
	"  --seed N                  window draw seed (default 0)\n"
	"quantization:\n"
	"  --bits 2|3|4|8            (default 4)\n"
	"  --group-size N            input columns per scale/zero group (default 64)\n"
	"  --quantizer gptq|rtn|nf|nf4-bnb   (default gptq)\n"
	"                            nf: LoftQ's NormalFloat NF2/3/4 (--bits 2..4), blocks of\n"
	"                            --bnb-blocksize values; nf4-bnb: bitsandbytes' NF4 bit for bit, the\n"
	"                            Q a QLoRA user's GPU computes from the original checkpoint\n"
	"                            (load_in_4bit, nf4): export with --format peft-only and train on\n"
	"                            the stock checkpoint. --bits is 4, no groups, sym or act-order\n"
	"  --bnb-blocksize N         NF block: 32, 64 (default, as bitsandbytes), ..., 4096\n"
	"  --bnb-double-quant        nf4-bnb: 8-bit absmax, as bnb_4bit_use_double_quant=True\n"
	"                            (default off, as transformers' BitsAndBytesConfig)\n"
	"  --sym                     symmetric groups (default asymmetric)\n"
	"  --asym-calib              asymmetric calibration: with propagation through Q, layer l's\n"
	"                            inputs are the quantized model's, but each linear is fitted to what\n"
	"                            the original layer computes from the original model's inputs: its\n"
	"                            target becomes W + W (Xo - Xq)^T Xq (Xq^T Xq + lambda I)^-1, for the\n"
	"                            quantizer and the LoRA solve alike. Costs a second activation stream\n"
	"                            (cache on disk, a forward of the original layer) and full passes\n"
	"  --magr                    MagR before quantizing (the CLoQ paper's quantizer: MagR + OPTQ):\n"
	"                            each linear's weights are replaced by ones of smaller magnitude that\n"
	"                            give nearly the same outputs on the calibration data (proximal\n"
	"                            gradient; alpha 1e-4, 150 steps with groups, 1e-3, 200 per channel).\n"
	"                            The LoRA still targets the original weights; with LoftQ or\n"
	"                            alternating CLoQ each re-quantization is MagR'd. Costs about\n"
	"                            300 x (rows x cols^2) flops per linear and quantization\n"
	"  --act-order               GPTQ act-order with static groups\n"
	"  --gptq-zeros v1|v2        v1 (default): keep every asymmetric zero point in [1, 2^bits - 1], so\n"
	"                            'cloq export' writes checkpoint_format gptq (v1), which every GPTQ\n"
	"                            loader reads; a group that would get zero 0 (all weights >= about 0)\n"
	"                            gets zero 1 and the step max / (2^bits - 2) instead.\n"
	"                            v2: zero 0 allowed (AutoGPTQ's own rule); an export with one is\n"
	"                            gptq_v2, which AutoGPTQ and transformers <= 4.48 + auto-gptq read\n"
	"                            silently wrong (README: loader compatibility)\n"
	"LoRA initialisation:\n"
	"  --init cloq|loftq|zero    (default cloq)\n"
	"  --rank R                  (default 64)\n"
	"  --lora-alpha A            scaling s = A / R (default A = R, s = 1; s in [1e-6, 1e6])\n"
	"  --cloq-iters T            alternating CLoQ iterations (default 1 = the paper's one-shot)\n"
	"  --loftq-iters T           LoftQ iterations (default 1)\n"
	"  --no-baselines            skip the zero/LoftQ comparison errors in report.json\n"
	"pipeline:\n"
	"  --propagate quantized|lora|fp   what feeds layer l+1 (default quantized)\n"
	"  --one-pass                all Gram matrices of a layer from one pass with the original weights\n"
	"  --full-passes             true-sequential passes recompute the block from the layer input\n"
	"                            instead of resuming from per-window states kept on disk (about\n"
	"                            2.5 forward passes per layer instead of 1, no stash files; the same\n"
	"                            output bytes). Chosen automatically when the disk is short\n"
	"  --cache-dtype fp32|bf16   activation cache encoding (default fp32, bit-exact)\n"
	"  --mem-budget SIZE         e.g. 32G (K/M/G/T: powers of 1024); refuse to start when a layer\n"
	"                            cannot fit\n"
	"  --threads N               (default: the CPUs this process may use: its affinity mask, capped\n"
	"                            by a cgroup CPU quota; recorded in the job, since results depend\n"
	"                            on it in the last bits, and reused when the job is resumed)\n"
	"  --device cpu              (cuda: only in builds with CUDA=1)\n"
	"  --force                   start over when the job in OUT has other settings or inputs\n"
	"  --quiet                   no progress lines\n";

void cloq_convert_default_opts(cloq_convert_opts *o)
{
	memset(o, 0, sizeof *o);
	o->nsamples = 128;
	o->seqlen = 2048;
	o->seed = 0;
	o->bits = 4;
	o->group_size = 64;
	o->quantizer = CLOQ_Q_GPTQ;
	o->nf_block = 64;
	o->gptq_zeros = 1;
	o->init = CLOQ_INIT_CLOQ;
	o->rank = 64;
	o->cloq_iters = 1;
	o->loftq_iters = 1;
	o->propagate = CLOQ_PROP_QUANTIZED;
	o->baselines = 1;
}

int cloq_convert_parse_opts(int argc, char **argv, cloq_convert_opts *o, cloq_err *err)
{
	cloq_convert_default_opts(o);
	long long x;
	int rc;
	/* options that only mean something for some quantizers: refused, not ignored, elsewhere */
	const char *gs_given = NULL, *grid_given = NULL, *nf_given = NULL, *bnb_given = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = NULL;
#define NEED()                                                                                 \
	do {                                                                                   \
		if ((rc = cloq_cli_value(argc, argv, &i, &v, err)))                            \
			return rc;                                                             \
	} while (0)
#define LONGOPT(name, lo, hi, field)                                                           \
	if (!strcmp(a, name)) {                                                                \
		NEED();                                                                        \
		if ((rc = cloq_cli_int(a, v, lo, hi, &x, err)))                                \
			return rc;                                                             \
		o->field = (int)x;                                                             \
		continue;                                                                      \
	}
		if (a[0] != '-') {
			if (o->model_dir)
				return cloq_err_set(err, CLOQ_EUSAGE, "unexpected argument '%s'", a);
			o->model_dir = a;
			continue;
		}
		if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
			NEED();
			o->out_dir = v;
			continue;
		}
		if (!strcmp(a, "--calib")) {
			NEED();
			o->calib_text = v;
			continue;
		}
		if (!strcmp(a, "--calib-tokens")) {
			NEED();
			o->calib_tokens = v;
			continue;
		}
		if (!strcmp(a, "--nsamples")) {
			NEED();
			if ((rc = cloq_cli_int(a, v, 1, 1 << 24, &x, err)))
				return rc;
			o->nsamples = (int)x;
			o->nsamples_given = 1;
			continue;
		}
		if (!strcmp(a, "--seqlen")) {
			NEED();
			if ((rc = cloq_cli_int(a, v, 2, 1 << 20, &x, err)))
				return rc;
			o->seqlen = (int)x;
			o->seqlen_given = 1;
			continue;
		}
		if (!strcmp(a, "--seed")) {
			NEED();
			if ((rc = cloq_cli_int(a, v, 0, 0x7fffffffL, &x, err)))
				return rc;
			o->seed = (uint64_t)x;
			continue;
		}
		if (!strcmp(a, "--bits")) {
			NEED();
			if ((rc = cloq_cli_int(a, v, 2, 8, &x, err)))
				return rc;
			if (x != 2 && x != 3 && x != 4 && x != 8)
				return cloq_err_set(err, CLOQ_EUSAGE, "--bits: expected 2, 3, 4 or 8, got %lld", x);
			o->bits = (int)x;
			continue;
		}
		if (!strcmp(a, "--group-size")) {
			NEED();
			if ((rc = cloq_cli_int(a, v, 1, 1 << 20, &x, err)))
				return rc;
			o->group_size = (int)x;
			gs_given = a;
			continue;
		}
		LONGOPT("--rank", 1, 1 << 16, rank)
		LONGOPT("--cloq-iters", 1, 100, cloq_iters)
		LONGOPT("--loftq-iters", 1, 100, loftq_iters)
		LONGOPT("--threads", 1, 1024, threads)
		if (!strcmp(a, "--lora-alpha")) {
			NEED();
			/* the scaling alpha / rank is checked once --rank is known, below */
			if ((rc = cloq_cli_double(a, v, CLOQ_SCALING_MIN, CLOQ_SCALING_MAX * (1 << 16), &o->lora_alpha,
						  err)))
				return rc;
			continue;
		}
		if (!strcmp(a, "--quantizer")) {
			NEED();
			if (!strcmp(v, "gptq"))
				o->quantizer = CLOQ_Q_GPTQ;
			else if (!strcmp(v, "rtn"))
				o->quantizer = CLOQ_Q_RTN;
			else if (!strcmp(v, "nf"))
				o->quantizer = CLOQ_Q_NF;
			else if (!strcmp(v, "nf4-bnb"))
				o->quantizer = CLOQ_Q_NF4_BNB;
			else
				return cloq_err_set(err, CLOQ_EUSAGE,
						    "--quantizer: expected gptq, rtn, nf or nf4-bnb, got '%s'", v);
			continue;
		}
		if (!strcmp(a, "--bnb-blocksize")) {
			NEED();
			if ((rc = cloq_cli_int(a, v, 32, 4096, &x, err)))
				return rc;
			if (x & (x - 1))
				return cloq_err_set(err, CLOQ_EUSAGE,
						    "--bnb-blocksize: expected 32, 64, 128, ..., 4096 (bitsandbytes' sizes), got %lld", x);
			o->nf_block = (int)x;
			nf_given = a;
			continue;
		}
		if (!strcmp(a, "--bnb-double-quant")) { o->bnb_double_quant = 1; bnb_given = a; continue; }
		if (!strcmp(a, "--gptq-zeros")) {
			NEED();
			if (!strcmp(v, "v1"))
				o->gptq_zeros = 1;
			else if (!strcmp(v, "v2"))
				o->gptq_zeros = 2;
			else
				return cloq_err_set(err, CLOQ_EUSAGE, "--gptq-zeros: expected v1 or v2, got '%s'", v);
			grid_given = a;
			continue;
		}
		if (!strcmp(a, "--init")) {
			NEED();
			if (!strcmp(v, "cloq"))
				o->init = CLOQ_INIT_CLOQ;
			else if (!strcmp(v, "loftq"))
				o->init = CLOQ_INIT_LOFTQ;
			else if (!strcmp(v, "zero"))
				o->init = CLOQ_INIT_ZERO;
			else
				return cloq_err_set(err, CLOQ_EUSAGE, "--init: expected cloq, loftq or zero, got '%s'", v);
			continue;
		}
		if (!strcmp(a, "--propagate")) {
			NEED();
			if (!strcmp(v, "quantized"))
				o->propagate = CLOQ_PROP_QUANTIZED;
			else if (!strcmp(v, "lora"))
				o->propagate = CLOQ_PROP_LORA;
			else if (!strcmp(v, "fp"))
				o->propagate = CLOQ_PROP_FP;
			else
				return cloq_err_set(err, CLOQ_EUSAGE, "--propagate: expected quantized, lora or fp, got '%s'", v);
			continue;
		}
		if (!strcmp(a, "--cache-dtype")) {
			NEED();
			if (!strcmp(v, "fp32"))
				o->cache_bf16 = 0;
			else if (!strcmp(v, "bf16"))
				o->cache_bf16 = 1;
			else
				return cloq_err_set(err, CLOQ_EUSAGE, "--cache-dtype: expected fp32 or bf16, got '%s'", v);
			continue;
		}
		if (!strcmp(a, "--mem-budget")) {
			NEED();
			uint64_t b;
			if ((rc = cloq_cli_size(a, v, 1, MEM_BUDGET_MAX, &b, err)))
				return rc;
			o->mem_budget = (int64_t)b;
			continue;
		}
		if (!strcmp(a, "--device")) {
			NEED();
			if (strcmp(v, "cpu") != 0)
				return cloq_err_set(err, CLOQ_EUSAGE, "--device %s: this build has only the cpu backend", v);
			continue;
		}
		if (!strcmp(a, "--sym")) { o->sym = 1; grid_given = a; continue; }
		if (!strcmp(a, "--magr")) { o->magr = 1; grid_given = a; continue; }
		if (!strcmp(a, "--asym-calib")) { o->asym = 1; continue; }
		if (!strcmp(a, "--act-order")) { o->act_order = 1; grid_given = a; continue; }
		if (!strcmp(a, "--one-pass")) { o->one_pass = 1; continue; }
		if (!strcmp(a, "--full-passes")) { o->full_passes = 1; continue; }
		if (!strcmp(a, "--no-baselines")) { o->baselines = 0; continue; }
		if (!strcmp(a, "--force")) { o->force = 1; continue; }
		if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) { o->quiet = 1; continue; }
		return cloq_err_set(err, CLOQ_EUSAGE, "unknown option '%s'", a);
#undef NEED
#undef LONGOPT
	}
	if (o->asym && o->propagate == CLOQ_PROP_FP)
		return cloq_err_set(err, CLOQ_EUSAGE, "--asym-calib with --propagate fp: each layer's inputs are the "
				    "original model's already, there is nothing to correct");
	if (o->asym && o->one_pass)
		return cloq_err_set(err, CLOQ_EUSAGE, "--asym-calib with --one-pass: the asymmetric statistics need "
				    "the true-sequential passes");
	int nf = o->quantizer == CLOQ_Q_NF || o->quantizer == CLOQ_Q_NF4_BNB;
	const char *qn = o->quantizer == CLOQ_Q_NF ? "nf" : o->quantizer == CLOQ_Q_NF4_BNB ? "nf4-bnb"
			 : o->quantizer == CLOQ_Q_RTN ? "rtn" : "gptq";
	if (nf && (gs_given || grid_given))
		return cloq_err_set(err, CLOQ_EUSAGE,
				    "%s does not apply to --quantizer %s (NormalFloat has one absmax per block of "
				    "--bnb-blocksize values, no groups, zero points or column order)",
				    gs_given ? gs_given : grid_given, qn);
	if (!nf && (nf_given || bnb_given))
		return cloq_err_set(err, CLOQ_EUSAGE, "%s applies to --quantizer nf or nf4-bnb only, not %s",
				    nf_given ? nf_given : bnb_given, qn);
	if (o->quantizer == CLOQ_Q_NF && bnb_given)
		return cloq_err_set(err, CLOQ_EUSAGE, "%s is bitsandbytes' (--quantizer nf4-bnb), not LoftQ's nf", bnb_given);
	if (o->quantizer == CLOQ_Q_NF4_BNB && o->bits != 4)
		return cloq_err_set(err, CLOQ_EUSAGE, "--quantizer nf4-bnb is 4-bit (bitsandbytes' NF4), not --bits %d",
				    o->bits);
	if (o->quantizer == CLOQ_Q_NF && o->bits > 4)
		return cloq_err_set(err, CLOQ_EUSAGE, "--quantizer nf has NF2, NF3 and NF4, not --bits %d", o->bits);
	if (nf)
		o->group_size = o->nf_block; /* recorded so; the block is what the codes are grouped by */
	if (o->lora_alpha > 0) {
		double s = o->lora_alpha / o->rank;
		if (!(s >= CLOQ_SCALING_MIN && s <= CLOQ_SCALING_MAX))
			return cloq_err_set(err, CLOQ_EUSAGE,
					    "--lora-alpha %g with --rank %d: the scaling alpha / rank = %g is outside [%g, %g]",
					    o->lora_alpha, o->rank, s, CLOQ_SCALING_MIN, CLOQ_SCALING_MAX);
	}
	return CLOQ_OK;
}

int cloq_convert_parse_args(int argc, char **argv, cloq_convert_opts *o, cloq_err *err)
{
	int rc = cloq_convert_parse_opts(argc, argv, o, err);
	if (rc)
		return rc;
	if (!o->model_dir)
		return cloq_err_set(err, CLOQ_EUSAGE, "missing MODEL_DIR");
	if (!o->out_dir)
		return cloq_err_set(err, CLOQ_EUSAGE, "missing -o OUT");
	if (!o->calib_text && !o->calib_tokens)
		return cloq_err_set(err, CLOQ_EUSAGE, "missing calibration data: --calib FILE.txt or --calib-tokens FILE.npy");
	if (o->calib_text && o->calib_tokens)
		return cloq_err_set(err, CLOQ_EUSAGE, "give either --calib or --calib-tokens, not both");
	return CLOQ_OK;
}
