/*
 * test_plan.c - the planner's time and size model (src/job/cloq_plan.c): the export size against a
 * hand count of the GPTQ files for Llama-2-7B, the time model's scaling identities, and the
 * record of the best sgemm rate (a file under $XDG_CACHE_HOME) kept across calls.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cloq_config.h"
#include "cloq_convert.h"
#include "cloq_plan.h"
#include "cloq_sys.h"

static int rel_close(double a, double b, double tol) { return fabs(a - b) <= tol * fabs(b); }

static void test_export_size_llama2(void **state)
{
	(void)state;
	cloq_config c;
	cloq_err err;
	char *text = NULL;
	size_t n;
	assert_int_equal(cloq_read_file("fixtures/configs/llama-2-7b.json", &text, &n, &err), CLOQ_OK);
	assert_int_equal(cloq_config_parse(text, "llama-2-7b.json", &c, &err), CLOQ_OK);
	free(text);
	cloq_convert_opts o;
	cloq_convert_default_opts(&o);
	o.bits = 4;
	o.group_size = 128;
	o.rank = 64;
	cloq_plan p;
	cloq_plan_compute(&c, &o, 128, 2048, &p);
	/* by hand, per layer: q, k, v, o 4096 x 4096; gate, up 11008 x 4096; down 4096 x 11008.
	 * GPTQ: qweight in*out/2 bytes, qzeros and scales (in/128) * out * (1/2 + 2), g_idx 4 in;
	 * adapter r (in + out) 4; norms 2 x 4096 fp16; then embedding and lm_head 32000 x 4096 fp16 */
	double layer = 0.0;
	const double sh[7][2] = {{4096, 4096}, {4096, 4096}, {4096, 4096}, {4096, 4096},
				 {11008, 4096}, {11008, 4096}, {4096, 11008}};
	for (int i = 0; i < 7; i++) {
		double out = sh[i][0], in = sh[i][1];
		layer += in * out / 2 + (in / 128) * out * 2.5 + 4 * in + 64 * (in + out) * 4;
	}
	layer += 2 * 4096 * 2;
	double want = 32 * layer + 2.0 * 32000 * 4096 * 2;
	/* plus the safetensors headers and JSON files, some 200 KB of 6.7 GB */
	assert_true(p.export_bytes > want && rel_close((double)p.export_bytes, want, 1e-4));
	/* the job's shards: smaller than the fp16 model, larger than the 4-bit codes alone */
	assert_true(p.output_bytes < 6.8e9 * 2 && p.output_bytes > 6.5e9 / 2);
}

static void test_time_model_scaling(void **state)
{
	(void)state;
	cloq_config c;
	cloq_err err;
	char *text = NULL;
	size_t n;
	assert_int_equal(cloq_read_file("fixtures/configs/llama-3.1-8b.json", &text, &n, &err), CLOQ_OK);
	assert_int_equal(cloq_config_parse(text, "x", &c, &err), CLOQ_OK);
	free(text);
	cloq_convert_opts o;
	cloq_convert_default_opts(&o);
	cloq_plan p, p2;
	cloq_plan_compute(&c, &o, 128, 2048, &p);
	double a[5], b[5], d[5];
	double s1 = cloq_plan_seconds(&p, 100.0, a), s2 = cloq_plan_seconds(&p, 200.0, b);
	/* twice the rate halves the GEMM stages, leaves I/O and fixed costs */
	for (int i = 0; i < 3; i++)
		assert_true(rel_close(b[i], a[i] / 2, 1e-12));
	assert_true(b[3] == a[3] && b[4] == a[4] && s2 < s1);
	assert_true(rel_close(s1, a[0] + a[1] + a[2] + a[3] + a[4], 1e-12));
	/* load 4: I/O and fixed costs x2 (the square root), GEMM stages as at that rate */
	cloq_plan_seconds_load(&p, 100.0, 4.0, d);
	assert_true(rel_close(d[3], 2 * a[3], 1e-12) && rel_close(d[4], 2 * a[4], 1e-12) && d[0] == a[0]);
	/* the Gram matrices are in: Llama-3.1-8B at 128 x 2048 tokens, about 2.2 PFLOP (the issue's
	 * count: 32 layers x 262144 tokens x (3 x 4096^2 + 14336^2), the symmetric product's n(n+1)/2
	 * entries at 2 flops each, is 2.15e15), counted twice as float64 work */
	assert_true(rel_close(p.flops_gram / 2, 2.15e15, 0.02));
	/* twice the windows: twice the forward and Gram work, the same GPTQ and solve */
	cloq_plan_compute(&c, &o, 256, 2048, &p2);
	assert_true(rel_close(p2.flops_forward, 2 * p.flops_forward, 1e-12));
	assert_true(rel_close(p2.flops_gram, 2 * p.flops_gram, 1e-12));
	assert_true(p2.flops_quantize == p.flops_quantize && p2.flops_solve == p.flops_solve);
	/* the baselines add to the solve only; RTN has no GPTQ stage */
	o.baselines = 0;
	cloq_plan_compute(&c, &o, 128, 2048, &p2);
	assert_true(p2.flops_solve < p.flops_solve && p2.flops_quantize == p.flops_quantize);
	o.quantizer = CLOQ_Q_RTN;
	cloq_plan_compute(&c, &o, 128, 2048, &p2);
	assert_true(p2.flops_quantize == 0.0);
}

static void test_peak_record(void **state)
{
	(void)state;
	char dir[] = "/tmp/cloq_test_plan.XXXXXX", path[256], when[32], line[128];
	assert_non_null(mkdtemp(dir));
	setenv("XDG_CACHE_HOME", dir, 1);
	assert_true(cloq_plan_peak_gflops(100.0, 2, when, sizeof when) == 100.0);
	assert_string_equal(when, "now");
	assert_true(cloq_plan_peak_gflops(50.0, 2, when, sizeof when) == 100.0);
	assert_int_equal(strlen(when), 10); /* YYYY-MM-DD */
	assert_true(cloq_plan_peak_gflops(70.0, 4, when, sizeof when) == 70.0); /* per thread count */
	assert_true(cloq_plan_peak_gflops(150.0, 2, NULL, 0) == 150.0);
	assert_true(cloq_plan_peak_gflops(10.0, 2, NULL, 0) == 150.0);
	assert_true(cloq_plan_peak_gflops(10.0, 4, NULL, 0) == 70.0);
	/* one line per thread count, the other's kept */
	snprintf(path, sizeof path, "%s/cloq/sgemm-peak", dir);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	int lines = 0, saw2 = 0, saw4 = 0;
	while (fgets(line, sizeof line, f)) {
		lines++;
		saw2 |= !strncmp(line, "2 150.0 ", 8);
		saw4 |= !strncmp(line, "4 70.0 ", 7);
	}
	fclose(f);
	assert_true(lines == 2 && saw2 && saw4);
	/* a damaged file is no record, never an error */
	f = fopen(path, "w");
	fputs("garbage\n2 nan x\n", f);
	fclose(f);
	assert_true(cloq_plan_peak_gflops(20.0, 2, NULL, 0) == 20.0);
	/* nowhere to keep it: the rate itself */
	setenv("XDG_CACHE_HOME", "/proc/no/such/dir", 1);
	assert_true(cloq_plan_peak_gflops(33.0, 2, when, sizeof when) == 33.0);
	unsetenv("XDG_CACHE_HOME");
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_export_size_llama2),
		cmocka_unit_test(test_time_model_scaling),
		cmocka_unit_test(test_peak_record),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
