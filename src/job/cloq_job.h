/*
 * cloq_job.h - the conversion job's state and the helpers its stages share: cloq_convert.c (the
 * job, dense layers, resume, report) and cloq_convert_moe.c (a mixture of experts' sparse layers).
 * Internal to src/job; the job's public face is cloq_convert.h.
 */
#ifndef CLOQ_JOB_H
#define CLOQ_JOB_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "cloq_actcache.h"
#include "cloq_calib.h"
#include "cloq_convert.h"
#include "cloq_journal.h"
#include "cloq_layerstore.h"
#include "cloq_lock.h"
#include "cloq_model.h"
#include "cloq_moe.h"
#include "cloq_prefetch.h"
#include "cloq_reader.h"
#include "cloq_shard.h"
#include "cloq_solver.h"

typedef struct job {
	cloq_convert_opts o;
	char out[3072];
	cloq_model *m;
	const cloq_config *cfg;
	cloq_windows win;
	cloq_journal j;
	cloq_lock lock;         /* OUT/job.lock, held exclusively for the whole run */
	cJSON *files_at_start;  /* identities of the model's files when this run opened them */
	cloq_rope rope;
	cloq_block_ws *ws;
	cloq_layerstore_params sp;
	cloq_prefetch *pf;      /* layer l+1 arrives while layer l is converted */
	int last_todo;          /* last layer this run converts */
	int cur_layer;          /* the layer being converted (for messages) */
	double io_wait_s;       /* time blocked on weight reads */
	float *xbuf;            /* (seqlen, hidden) one window of activations */
	double t0;
	double stage_s[8];      /* read, stats, quant, solve, propagate, write, report */
	long long tokens;       /* tokens per pass */
	int layers_run;         /* layers processed in this run (for the ETA) */
	double layer_s_sum;
	double layer_t0;        /* when the current layer started */
	double est_layer_s;     /* the time model's seconds per layer (until one is measured), -1 none */
	/* --asym-calib: the original model's stream (cache/fp_*.cloqact) through the original layer */
	cloq_block_ws *ws_fp;
	float *xbuf_fp;         /* (seqlen, hidden) the window's original-model input */
	float *cap;             /* (seqlen, widest group input) the original layer's input of the group */
	int cap_group;          /* which group cap holds, -1 none */
	float *diff;            /* (seqlen, widest group input) Xo - Xq */
	float *cross_work;      /* (widest group input, CLOQ_GRAM_PANEL) */
	/* the resumable passes' per-window states (attention output, h, the SwiGLU product), held in
	 * RAM when they fit (choose_stashes), else in OUT/cache/stash_*.cloqact: the same floats */
	float *stash_mem[3];
	int stash_ram;
	int64_t plan_peak;      /* the memory plan's peak, for the choice */
	/* windows forwarded at once (cloq_plan's window_slots), slot 0 being ws/xbuf above; each
	 * slot's group inputs are kept for the Gram updates, which run in window order after */
	int slots;
	struct win_slot {
		cloq_block_ws *ws;
		float *xbuf;
		float *capbuf;            /* the captured group inputs (one group a pass, or all four) */
		float *cap[CLOQ_GROUPS];
		int cap_t[CLOQ_GROUPS], cap_n[CLOQ_GROUPS];
		cloq_cache_reader *rd;    /* its reader of cache[l] during a pass (slots > 1) */
		cloq_cache_frame *frame;  /* its window's cache[l+1] frame, encoded in the slot */
		double t_read, t_write;   /* seconds of its reads / stash copies and encodes, this batch */
		int rc;
		cloq_err err;
	} *slot;
} job;

enum { ST_READ, ST_STATS, ST_QUANT, ST_SOLVE, ST_PROP, ST_WRITE, ST_NSTAGES };

double cloq_job_now(void);
/* The progress line (stderr): layer, stage, fraction, tokens a second, ETA, peak RSS. */
void cloq_job_progress(job *J, int l, const char *stage, double frac, double tok_s);
/* OUT/cache/act_NNNNN.cloqact: the input of layer l; OUT/cache/stash_*.cloqact of a state */
void cloq_job_cache_path(const job *J, int l, char *buf, size_t cap);
void cloq_job_stash_path(const job *J, int state, char *buf, size_t cap);
/* An activation cache or stash opened and checked to hold one frame a window of width cols, and
 * frame i read and checked to hold a window (CLOQ_EINTEGRITY naming the file otherwise). */
int cloq_job_open_checked(job *J, const char *path, size_t cols, cloq_cache_reader **r, cloq_err *err);
int cloq_job_read_checked(job *J, cloq_cache_reader *r, int i, float *dst, const char *path, cloq_err *err);

/* What a statistics pass collects at each group's input (cloq_job_gram_hook_fn). */
typedef struct gram_hook {
	cloq_gram *g[CLOQ_GROUPS];
	double *D[CLOQ_GROUPS]; /* --asym-calib: (Xo - Xq)^T Xq of the group, Xo from job->cap */
	job *J;
	/* a sparse layer's routing pass: the experts' input of each window (GATEUP) is routed */
	cloq_moe_routing *route;
	const float *router;
	float *probs, *wt;      /* (seqlen, experts), (seqlen, topk) */
	int *sel;               /* (seqlen, topk) */
} gram_hook;

int cloq_job_gram_hook_fn(void *ctx, int group, const float *X, int t, int n, cloq_err *err);

/* One pass over the windows of layer l through weights w, from state `start` up to group
 * stop_after, the hook's statistics collected on the way; with `stash`, the state formed before
 * stop_after's hook kept for the next pass; with `next`, the block's outputs written there. */
int cloq_job_pass(job *J, int l, const cloq_layer_w *w, gram_hook *gh, int start, int stop_after, int stash,
		  cloq_cache_writer *next, const char *stage, cloq_err *err);

/* ---- a sparse layer (cloq_convert_moe.c) ---------------------------------------------------- */
#define MOE_RB 2048 /* rows per Gram update and per expert GEMM: sums in a fixed order */

typedef struct moe_stage {
	job *J;
	int l;
	cloq_shard *in;            /* replay: the layer's shard, whose experts propagate */
	cloq_shard_writer *sw;     /* calibration: the layer's shard, each expert added when done */
	const cloq_layer_w *w;     /* ffn_norm, router, shared_gate */
	cloq_moe_routing rt;
	int64_t ntok, cap;         /* calibration tokens; rows the gather buffer holds */
	float *out;                /* (ntok, hidden) the experts' weighted sum of every token */
	float *rows;               /* (cap, hidden) the rows of a chunk of experts */
	int64_t *rtok;             /* (cap) the token of each routed row */
	float *rwt;                /* (cap) its routing weight (the shared expert: its gate's logit) */
	int64_t *off;              /* (experts + 2) each expert's first row in the gather */
	float *g, *u, *y, *xn;     /* (MOE_RB, widest) x 2, (MOE_RB, hidden), (seqlen, hidden) */
	cJSON *report;             /* calibration: one entry an expert */
	cJSON *inputs;             /* calibration: {"tensor": "xxh3"} of what was read */
	uint64_t *hash;            /* the same hashes, in reading order (the layer's digest) */
	int nhash, hcap;
	double sum_quant, sum_final; /* the experts' linears' calibrated errors, summed */
	int nlin;
	/* the experts' weights, read ahead: while expert e computes, e + 1's raw bytes arrive in the
	 * other buffer (their XXH3 computed on the way) */
	cloq_reader *rd;
	void *rbuf[2];
	size_t rcap;
	cloq_reader_req rq[2][3];
	int rexp[2];               /* the expert each buffer holds or is reading, -1 none */
	int rflight;               /* the buffer with a read in flight, -1 none */
} moe_stage;

void cloq_moe_stage_free(moe_stage *S);
/* A sparse layer's own tensors (norms, attention, router, shared expert gate) as float32, hashed
 * into S->inputs; its experts come one at a time during cloq_moe_run. */
int cloq_moe_load_layer(moe_stage *S, int l, cloq_layer_w *w, cloq_err *err);
/* The experts of sparse layer S->l after its attention (docs/DESIGN.md, "Mixtures of experts"):
 * routing pass from state `start` with weights w, every expert calibrated (S->sw set: appended to
 * that shard) or replayed from S->in, then cache[l+1] = h + the experts' sum. */
int cloq_moe_run(moe_stage *S, const cloq_layer_w *w, int start, cloq_err *err);

#endif
