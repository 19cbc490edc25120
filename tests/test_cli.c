/* test_cli.c - the shared option-value parsers (src/cli/cloq_cli_args.c): integers never wrap, numbers
 * are finite decimals, sizes take K/M/G/T, and every refusal is CLOQ_EUSAGE naming the option. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "cloq_cli.h"

static void refuse_int(const char *v, long long lo, long long hi)
{
	cloq_err err;
	cloq_err_clear(&err);
	long long x = 12345;
	assert_int_equal(cloq_cli_int("--n", v, lo, hi, &x, &err), CLOQ_EUSAGE);
	assert_int_equal(x, 12345);
	assert_non_null(strstr(err.msg, "--n: expected an integer in ["));
	assert_non_null(strstr(err.msg, v));
}

static void test_int(void **state)
{
	cloq_err err;
	long long x;
	assert_int_equal(cloq_cli_int("--n", "42", 0, 100, &x, &err), CLOQ_OK);
	assert_int_equal(x, 42);
	assert_int_equal(cloq_cli_int("--n", "-7", -10, 10, &x, &err), CLOQ_OK);
	assert_int_equal(x, -7);
	assert_int_equal(cloq_cli_int("--n", "9223372036854775807", 0, INT64_MAX, &x, &err), CLOQ_OK);
	assert_int_equal(x, INT64_MAX);
	const char *bad[] = {"", "-", "+5", " 5", "5 ", "0x10", "1e3", "1.5", "2^62", "4611686018427387904",
			     "9223372036854775808", "99999999999999999999999", "-99999999999999999999", "101", "-1"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		refuse_int(bad[i], 0, 100);
	cloq_err_clear(&err);
	assert_int_equal(cloq_cli_int("--seed", "4611686018427387904", 0, 2147483647, &x, &err), CLOQ_EUSAGE);
	assert_string_equal(err.msg, "--seed: expected an integer in [0, 2147483647], got '4611686018427387904'");
}

static void test_double(void **state)
{
	cloq_err err;
	double x;
	assert_int_equal(cloq_cli_double("--a", "16", 1e-6, 1e6, &x, &err), CLOQ_OK);
	assert_true(x == 16.0);
	assert_int_equal(cloq_cli_double("--a", "0.5e2", 1e-6, 1e6, &x, &err), CLOQ_OK);
	assert_true(x == 50.0);
	assert_int_equal(cloq_cli_double("--a", ".25", 1e-6, 1e6, &x, &err), CLOQ_OK);
	assert_true(x == 0.25);
	const char *bad[] = {"", "nan", "NAN", "inf", "-inf", "infinity", "0x10", "1e308", "1e999", "-1", "0",
			     "1e-300", " 1", "1 ", "1,5", "1e", "--1", "."};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		cloq_err_clear(&err);
		x = -5;
		assert_int_equal(cloq_cli_double("--a", bad[i], 1e-6, 1e6, &x, &err), CLOQ_EUSAGE);
		assert_true(x == -5);
		assert_non_null(strstr(err.msg, "--a"));
	}
}

static void test_size(void **state)
{
	cloq_err err;
	uint64_t b;
	const struct {
		const char *v;
		uint64_t want;
	} good[] = {{"4096", 4096}, {"32G", 32ULL << 30}, {"32GiB", 32ULL << 30}, {"32GB", 32ULL << 30},
		    {"1.5K", 1536}, {"2t", 2ULL << 40}, {"7M", 7ULL << 20}, {"100B", 100}};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		assert_int_equal(cloq_cli_size("--s", good[i].v, 1, 1ULL << 50, &b, &err), CLOQ_OK);
		assert_true(b == good[i].want);
	}
	const char *bad[] = {"", "inf", "nan", "-5", "-5G", "1e30G", "5X", "32GiBs", "G", "1 G", "0x10",
			     "18446744073709551616", "99999999T", "0", "0.5"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		cloq_err_clear(&err);
		b = 7;
		assert_int_equal(cloq_cli_size("--s", bad[i], 1, 1ULL << 50, &b, &err), CLOQ_EUSAGE);
		assert_true(b == 7);
		assert_non_null(strstr(err.msg, "--s"));
	}
	cloq_err_clear(&err);
	assert_int_equal(cloq_cli_size("--s", "99999999T", 1, 1ULL << 50, &b, &err), CLOQ_EUSAGE);
	assert_non_null(strstr(err.msg, "too large"));
}

static void test_value(void **state)
{
	char *argv[] = {"cmd", "--x", "v", "--y"};
	cloq_err err;
	const char *v = NULL;
	int i = 1;
	assert_int_equal(cloq_cli_value(4, argv, &i, &v, &err), CLOQ_OK);
	assert_string_equal(v, "v");
	assert_int_equal(i, 2);
	i = 3;
	cloq_err_clear(&err);
	assert_int_equal(cloq_cli_value(4, argv, &i, &v, &err), CLOQ_EUSAGE);
	assert_string_equal(err.msg, "option --y needs a value");
	assert_int_equal(i, 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_int),
		cmocka_unit_test(test_double),
		cmocka_unit_test(test_size),
		cmocka_unit_test(test_value),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
