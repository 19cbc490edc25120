/*
 * test_moe.c - a sparse layer's routing table and the few-token rule (src/job/cloq_moe.h) against
 * a brute force: an expert routed fewer than CLOQ_MOE_MIN_ROWS tokens gets, as fill, the tokens not
 * routed to it with the highest probability (ties: the earlier token), listed by token; experts
 * with enough tokens get none; every token routed to an expert is counted. Plus the must-fail
 * calls. The e2e side (tests/e2e/moe.sh) checks the counts against a float64 forward.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "cloq_moe.h"
#include "cloq_sys.h"

enum { E = 4, K = 2, N = 600, CHUNK = 77 };

static uint32_t lcg(uint32_t *s) { return *s = *s * 1664525u + 1013904223u; }

typedef struct { float p; int t; } cand;

/* better first: higher probability, then the earlier token */
static int by_rank(const void *a, const void *b)
{
	const cand *x = a, *y = b;
	if (x->p != y->p)
		return x->p > y->p ? -1 : 1;
	return x->t - y->t;
}
static int by_tok(const void *a, const void *b) { return (int)(*(const int64_t *)a - *(const int64_t *)b); }

static void test_fill_rule(void **state)
{
	(void)state;
	static float probs[N * E], wt[N * K];
	static int sel[N * K];
	uint32_t s = 12345;
	/* expert 3 is routed rarely (every 13th token), expert 2 about 100 times, 0 and 1 often;
	 * probabilities on a grid of 1/8 so that ties are common */
	for (int t = 0; t < N; t++) {
		for (int e = 0; e < E; e++)
			probs[t * E + e] = (float)(lcg(&s) >> 29) / 8.0f;
		sel[t * K] = t % 2;
		sel[t * K + 1] = t % 13 == 0 ? 3 : t % 6 == 1 ? 2 : 1 - t % 2;
		if (sel[t * K + 1] == sel[t * K])
			sel[t * K + 1] = 2;
		wt[t * K] = 0.75f, wt[t * K + 1] = 0.25f;
	}
	cloq_moe_routing r;
	cloq_err err;
	assert_int_equal(cloq_moe_routing_init(&r, E, K, N, &err), CLOQ_OK);
	for (int t0 = 0; t0 < N; t0 += CHUNK) { /* windows of uneven size */
		int T = N - t0 < CHUNK ? N - t0 : CHUNK;
		assert_int_equal(cloq_moe_routing_add(&r, probs + t0 * E, sel + t0 * K, wt + t0 * K, T, &err), CLOQ_OK);
	}
	assert_int_equal(cloq_moe_routing_finish(&r, &err), CLOQ_OK);
	int64_t total = 0;
	for (int e = 0; e < E; e++) {
		int64_t want = 0;
		for (int i = 0; i < N * K; i++)
			want += sel[i] == e;
		assert_int_equal(r.count[e], want);
		total += r.count[e];
		/* brute force: every token not routed to e, best first */
		cand c[N];
		int n = 0;
		for (int t = 0; t < N; t++)
			if (sel[t * K] != e && sel[t * K + 1] != e)
				c[n].p = probs[t * E + e], c[n].t = t, n++;
		qsort(c, (size_t)n, sizeof c[0], by_rank);
		int64_t fill = want < CLOQ_MOE_MIN_ROWS ? CLOQ_MOE_MIN_ROWS - want : 0;
		if (fill > n)
			fill = n;
		assert_int_equal(r.nfill[e], fill);
		assert_int_equal(cloq_moe_rows(&r, e), want + fill);
		int64_t exp[N];
		for (int i = 0; i < fill; i++)
			exp[i] = c[i].t;
		qsort(exp, (size_t)fill, sizeof exp[0], by_tok);
		for (int i = 0; i < fill; i++)
			assert_int_equal(r.cand_t[(size_t)e * CLOQ_MOE_MIN_ROWS + i], exp[i]);
	}
	assert_int_equal(total, (int64_t)N * K);
	assert_true(r.nfill[3] > 0 && r.count[3] < CLOQ_MOE_MIN_ROWS); /* the case under test happened */
	assert_int_equal(r.nfill[0], 0);
	for (int i = 0; i < N * K; i++) {
		assert_int_equal(r.sel[i], sel[i]);
		assert_true(r.wt[i] == wt[i]);
	}
	cloq_moe_routing_free(&r);
}

/* fewer tokens than CLOQ_MOE_MIN_ROWS in all: an unrouted expert is filled with every token */
static void test_few_tokens(void **state)
{
	(void)state;
	enum { n = 40 };
	float probs[n * 3];
	int sel[n];
	float wt[n];
	for (int t = 0; t < n; t++) {
		probs[t * 3] = 0.6f, probs[t * 3 + 1] = 0.3f, probs[t * 3 + 2] = 0.1f;
		sel[t] = 0, wt[t] = 1.0f;
	}
	cloq_moe_routing r;
	cloq_err err;
	assert_int_equal(cloq_moe_routing_init(&r, 3, 1, n, &err), CLOQ_OK);
	assert_int_equal(cloq_moe_routing_add(&r, probs, sel, wt, n, &err), CLOQ_OK);
	assert_int_equal(cloq_moe_routing_finish(&r, &err), CLOQ_OK);
	assert_int_equal(r.count[0], n);
	assert_int_equal(r.nfill[0], 0); /* nothing left to add */
	for (int e = 1; e < 3; e++) {
		assert_int_equal(r.count[e], 0);
		assert_int_equal(r.nfill[e], n);
		for (int i = 0; i < n; i++) /* all equal probabilities: every token, in order */
			assert_int_equal(r.cand_t[(size_t)e * CLOQ_MOE_MIN_ROWS + i], i);
	}
	cloq_moe_routing_free(&r);
}

static void test_must_fail(void **state)
{
	(void)state;
	cloq_moe_routing r;
	cloq_err err;
	float probs[4] = {0.5f, 0.5f, 0.5f, 0.5f}, wt[2] = {1, 1};
	int bad[2] = {2, 0}, ok2[2] = {0, 1};
	assert_int_equal(cloq_moe_routing_init(&r, 2, 3, 10, &err), CLOQ_EUSAGE); /* top-3 of 2 */
	assert_int_equal(cloq_moe_routing_init(&r, 2, 1, 0, &err), CLOQ_EUSAGE);
	assert_int_equal(cloq_moe_routing_init(&r, 2, 1, 2, &err), CLOQ_OK);
	assert_int_equal(cloq_moe_routing_add(&r, probs, bad, wt, 2, &err), CLOQ_EUSAGE); /* expert 2 of 2 */
	cloq_moe_routing_free(&r);
	assert_int_equal(cloq_moe_routing_init(&r, 2, 1, 2, &err), CLOQ_OK);
	assert_int_equal(cloq_moe_routing_add(&r, probs, ok2, wt, 1, &err), CLOQ_OK);
	assert_int_equal(cloq_moe_routing_finish(&r, &err), CLOQ_EUSAGE); /* a token missing */
	assert_int_equal(cloq_moe_routing_add(&r, probs, ok2, wt, 2, &err), CLOQ_EUSAGE); /* one too many */
	cloq_moe_routing_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fill_rule),
		cmocka_unit_test(test_few_tokens),
		cmocka_unit_test(test_must_fail),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
