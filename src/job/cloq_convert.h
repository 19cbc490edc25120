/*
 * cloq_convert.h - the conversion job: settings, and the staged per-layer pipeline.
 *
 * OUT/ layout (a job directory):
 *   journal.json            settings, input fingerprint, per-layer state; rewritten atomically.
 *                           A layer is "done" only after its shard is durable.
 *   calib_windows.npy       the calibration windows used, int32 (n, seqlen)
 *   shards/layer_NNNNN.cloqshard   one per decoder layer (docs/FORMAT.md)
 *   shards/base.cloqshard   embeddings, final norm, lm_head (original dtype)
 *   cache/act_NNNNN.cloqact activation cache at the input of layer N (only the newest is kept)
 *   manifest.json           written at the end: shards, their XXH3 and tensors
 *   report.json             per-layer errors, timings, peak memory, settings
 *
 * Per layer l: statistics (Gram matrices from cache l, true-sequential by group unless one_pass),
 * quantize + solve each linear, propagate (cache l -> cache l+1 through Q, Q + sBA or W),
 * write the shard, commit the journal. Same inputs and settings give the same shard bytes, and a
 * resumed job gives the same bytes as an uninterrupted one.
 */
#ifndef CLOQ_CONVERT_H
#define CLOQ_CONVERT_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "cloq_error.h"

/* NF: LoftQ's NormalFloat (NF2/3/4, float32); NF4_BNB: bitsandbytes' NF4 exactly (the Q a QLoRA
 * user's GPU holds when it loads the original checkpoint with load_in_4bit, nf4). */
enum cloq_quantizer_kind { CLOQ_Q_GPTQ, CLOQ_Q_RTN, CLOQ_Q_NF, CLOQ_Q_NF4_BNB };
enum cloq_init_kind { CLOQ_INIT_CLOQ, CLOQ_INIT_LOFTQ, CLOQ_INIT_ZERO };
enum cloq_propagate_kind { CLOQ_PROP_QUANTIZED, CLOQ_PROP_LORA, CLOQ_PROP_FP };

typedef struct cloq_convert_opts {
	const char *model_dir;
	const char *out_dir;
	const char *calib_text;     /* --calib */
	const char *calib_tokens;   /* --calib-tokens (.npy) */
	int nsamples;               /* 128; with a 2-D tokens file: 0 = all rows */
	int nsamples_given;
	int seqlen;                 /* 2048 (clamped to max_position_embeddings when not given) */
	int seqlen_given;
	uint64_t seed;              /* 0 */
	int bits;                   /* 4 */
	int group_size;             /* 64 */
	int quantizer;              /* enum cloq_quantizer_kind */
	int nf_block;               /* NF quantizers: values per absmax block (--bnb-blocksize, 64) */
	int bnb_double_quant;       /* nf4-bnb: 8-bit absmax (bitsandbytes' compress_statistics) */
	int nf_dtype;               /* NF quantizers: enum cloq_dtype deq(Q) is rounded to; set by
	                             * the job from the checkpoint's linear weights (nf4-bnb) */
	int sym, act_order;
	int magr;                   /* MagR weight magnitude reduction before GPTQ/RTN (quant/cloq_quant.h) */
	int asym;                   /* --asym-calib: each linear fits what the original layer computes from
	                             * the original model's input (a second activation stream) */
	int gptq_zeros;             /* 1: every zero point GPTQ v1 can store (default), 2: any (v2) */
	int init;                   /* enum cloq_init_kind */
	int rank;                   /* 64 */
	double lora_alpha;          /* 0 = rank (s = 1) */
	int cloq_iters, loftq_iters;/* 1, 1 */
	int propagate;              /* enum cloq_propagate_kind */
	int one_pass;
	int full_passes;            /* statistics passes recompute from the layer input instead of
	                             * resuming from per-window stashes (no stash disk; same bytes out).
	                             * Not a job setting: a resumed job may switch. Set automatically
	                             * when the output's file system lacks the stashes' space. */
	int cache_bf16;             /* activation cache in bf16 (default fp32: bit-exact) */
	int baselines;              /* also compute zero/LoftQ(T=1) objectives for the report (1) */
	int64_t mem_budget;         /* bytes, 0 = none */
	int threads;                /* 0 = all cores */
	int window_slots;           /* calibration windows forwarded at once (cloq_plan's
	                             * window_slots); 0 = the plan chooses. A job records it: the
	                             * forward's sums depend on it */
	int force;                  /* start over when settings or inputs differ */
	int quiet;
} cloq_convert_opts;

void cloq_convert_default_opts(cloq_convert_opts *o);
/* Parse convert's options (argv[0] is "convert"); fills o. Every value is checked here, before
 * any work (src/cli/cloq_cli_args.c). parse_args also requires MODEL_DIR, -o and the calibration
 * source; parse_opts (for `cloq inspect`) does not. */
int cloq_convert_parse_args(int argc, char **argv, cloq_convert_opts *o, cloq_err *err);
int cloq_convert_parse_opts(int argc, char **argv, cloq_convert_opts *o, cloq_err *err);
extern const char cloq_convert_help[];

/* Run or continue the job in o->out_dir. */
int cloq_convert_run(const cloq_convert_opts *o, cloq_err *err);

/* Check the settings a job's journal recorded (path: the journal, for messages): every number
 * present, an integer in its option's range, lora_alpha finite with alpha / rank in
 * [CLOQ_SCALING_MIN, CLOQ_SCALING_MAX]. CLOQ_EINPUT naming the file and the field otherwise. */
int cloq_convert_check_settings(const cJSON *settings, const char *path, cloq_err *err);
/* The same check, then how the job's codes are stored (bits, groups, quantizer, NF block and
 * dtype): what readers of its shards need. */
struct cloq_qform;
int cloq_convert_settings_qform(const cJSON *settings, const char *path, struct cloq_qform *qf, cloq_err *err);

/* Continue the job in out_dir with the settings its journal recorded. */
int cloq_convert_resume(const char *out_dir, int force, int quiet, cloq_err *err);

#endif
