/*
 * cloq_cli_args.c - option values for every command (see cloq_cli.h): integers with a range,
 * finite numbers, sizes with a K/M/G/T suffix, and "option X needs a value". The parsers accept
 * the decimal text people type and refuse everything strtol/strtod would quietly take as well
 * (leading blanks, '+', hex, "inf", "nan", trailing junk) or wrap (out of range).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_cli.h"

int cloq_cli_value(int argc, char **argv, int *i, const char **v, cloq_err *err)
{
	if (*i + 1 >= argc)
		return cloq_err_set(err, CLOQ_EUSAGE, "option %s needs a value", argv[*i]);
	*v = argv[++*i];
	return CLOQ_OK;
}

int cloq_cli_int(const char *opt, const char *v, long long lo, long long hi, long long *out, cloq_err *err)
{
	const char *p = v;
	if (*p == '-')
		p++;
	int ok = *p >= '0' && *p <= '9';
	for (; ok && *p; p++)
		ok = *p >= '0' && *p <= '9';
	long long x = 0;
	if (ok) {
		char *end;
		errno = 0;
		x = strtoll(v, &end, 10);
		ok = errno == 0 && *end == '\0' && x >= lo && x <= hi;
	}
	if (!ok)
		return cloq_err_set(err, CLOQ_EUSAGE, "%s: expected an integer in [%lld, %lld], got '%.64s'", opt, lo, hi,
				    v);
	*out = x;
	return CLOQ_OK;
}

/* Decimal number text: [-]digits[.digits][(e|E)[+|-]digits], or [-].digits...; the length of
 * the number part, 0 when v does not start with one. */
static size_t decimal_prefix(const char *v, int allow_exp)
{
	const char *p = v;
	if (*p == '-')
		p++;
	size_t digits = 0;
	while (*p >= '0' && *p <= '9')
		p++, digits++;
	if (*p == '.') {
		p++;
		while (*p >= '0' && *p <= '9')
			p++, digits++;
	}
	if (!digits)
		return 0;
	if (allow_exp && (*p == 'e' || *p == 'E')) {
		const char *q = p + 1;
		if (*q == '+' || *q == '-')
			q++;
		if (*q >= '0' && *q <= '9') {
			while (*q >= '0' && *q <= '9')
				q++;
			p = q;
		}
	}
	return (size_t)(p - v);
}

int cloq_cli_double(const char *opt, const char *v, double lo, double hi, double *out, cloq_err *err)
{
	size_t n = decimal_prefix(v, 1);
	if (!n || v[n] != '\0')
		return cloq_err_set(err, CLOQ_EUSAGE, "%s: expected a number in [%g, %g], got '%.64s'", opt, lo, hi, v);
	double x = strtod(v, NULL);
	if (!isfinite(x) || x < lo || x > hi)
		return cloq_err_set(err, CLOQ_EUSAGE, "%s: %.64s is out of range: expected a finite number in [%g, %g]",
				    opt, v, lo, hi);
	*out = x;
	return CLOQ_OK;
}

int cloq_cli_size(const char *opt, const char *v, uint64_t lo, uint64_t hi, uint64_t *out, cloq_err *err)
{
	size_t n = v[0] == '-' ? 0 : decimal_prefix(v, 0);
	const char *s = v + n;
	double mul = 1;
	switch (*s) {
	case 'k': case 'K': mul = 1024.0; s++; break;
	case 'm': case 'M': mul = 1024.0 * 1024; s++; break;
	case 'g': case 'G': mul = 1024.0 * 1024 * 1024; s++; break;
	case 't': case 'T': mul = 1024.0 * 1024 * 1024 * 1024; s++; break;
	}
	if (mul > 1 && *s == 'i')
		s++;
	if (*s == 'B' || *s == 'b')
		s++;
	if (!n || *s != '\0')
		return cloq_err_set(err, CLOQ_EUSAGE,
				    "%s: expected a size such as 32G (a number of bytes with an optional K, M, G or T "
				    "suffix), got '%.64s'",
				    opt, v);
	double x = strtod(v, NULL) * mul;
	/* hi < 2^63 in every use, so the comparison in double decides before any cast */
	if (!isfinite(x) || x > (double)hi)
		return cloq_err_set(err, CLOQ_EUSAGE, "%s: %.64s is too large (at most %llu bytes)", opt, v,
				    (unsigned long long)hi);
	uint64_t b = (uint64_t)x;
	if (b < lo)
		return cloq_err_set(err, CLOQ_EUSAGE, "%s: %.64s is too small (at least %llu bytes)", opt, v,
				    (unsigned long long)lo);
	*out = b;
	return CLOQ_OK;
}
