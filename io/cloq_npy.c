/* cloq_npy.c - .npy reader and writer (see cloq_npy.h). */
#include "cloq_npy.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cloq_sys.h"

static const uint8_t npy_magic[6] = { 0x93, 'N', 'U', 'M', 'P', 'Y' };

/* ---- a tiny parser for the header's Python dict literal ------------------------------------- */
struct lex {
	const char *p, *end;
};

static void skip_ws(struct lex *l)
{
	while (l->p < l->end && (*l->p == ' ' || *l->p == '\t' || *l->p == '\n' || *l->p == '\r'))
		l->p++;
}

static int eat(struct lex *l, char c)
{
	skip_ws(l);
	if (l->p < l->end && *l->p == c) {
		l->p++;
		return 1;
	}
	return 0;
}

/* 'text' or "text" into out (at most cap-1 chars); 0 on failure */
static int lex_str(struct lex *l, char *out, size_t cap)
{
	skip_ws(l);
	if (l->p >= l->end || (*l->p != '\'' && *l->p != '"'))
		return 0;
	char q = *l->p++;
	size_t n = 0;
	while (l->p < l->end && *l->p != q) {
		if (n + 1 >= cap)
			return 0;
		out[n++] = *l->p++;
	}
	if (l->p >= l->end)
		return 0;
	l->p++;
	out[n] = '\0';
	return 1;
}

static int lex_word(struct lex *l, const char *w)
{
	skip_ws(l);
	size_t n = strlen(w);
	if ((size_t)(l->end - l->p) >= n && memcmp(l->p, w, n) == 0) {
		l->p += n;
		return 1;
	}
	return 0;
}

/* A shape entry: 1 and *v, 0 when there is none, -1 when its digits exceed NPY_DIM_MAX (then
 * l->p is left at its first digit). */
#define NPY_DIM_MAX 9007199254740992LL /* 2^53: no real array is near it, and the sums stay exact */
static int lex_uint(struct lex *l, int64_t *v)
{
	skip_ws(l);
	if (l->p >= l->end || !isdigit((unsigned char)*l->p))
		return 0;
	const char *start = l->p;
	int64_t x = 0;
	while (l->p < l->end && isdigit((unsigned char)*l->p)) {
		x = x * 10 + (*l->p++ - '0');
		if (x > NPY_DIM_MAX) {
			l->p = start;
			return -1;
		}
	}
	if (l->p < l->end && *l->p == 'L') /* Python 2 longs */
		l->p++;
	*v = x;
	return 1;
}

int cloq_npy_parse_header(const uint8_t *buf, size_t len, const char *path, cloq_npy_info *info,
			  cloq_err *err)
{
	memset(info, 0, sizeof *info);
	if (len < 10 || memcmp(buf, npy_magic, 6) != 0)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: not a .npy file (bad magic at offset 0)", path);
	int major = buf[6];
	size_t hlen, hoff;
	if (major == 1) {
		hlen = (size_t)buf[8] | (size_t)buf[9] << 8;
		hoff = 10;
	} else if (major == 2 || major == 3) {
		if (len < 12)
			return cloq_err_set(err, CLOQ_EINPUT, "%s: truncated .npy header", path);
		hlen = (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
		hoff = 12;
	} else {
		return cloq_err_set(err, CLOQ_EINPUT, "%s: unsupported .npy version %d.%d (offset 6)", path,
				    major, buf[7]);
	}
	if (hlen > len - hoff)
		return cloq_err_set(err, CLOQ_EINPUT,
				    "%s: truncated .npy header: header length %zu (offset 8) exceeds the file size %zu "
				    "(%zu bytes present after the length field)",
				    path, hlen, len, len - hoff);
	struct lex l = { (const char *)buf + hoff, (const char *)buf + hoff + hlen };
	char descr[16] = "", key[32];
	int have_descr = 0, have_order = 0, have_shape = 0, fortran = 0;
	int64_t shape[3] = { 0, 0, 0 };
	int ndim = 0;
	if (!eat(&l, '{'))
		goto bad;
	while (!eat(&l, '}')) {
		if (!lex_str(&l, key, sizeof key) || !eat(&l, ':'))
			goto bad;
		if (strcmp(key, "descr") == 0) {
			if (!lex_str(&l, descr, sizeof descr))
				goto bad;
			have_descr = 1;
		} else if (strcmp(key, "fortran_order") == 0) {
			if (lex_word(&l, "True"))
				fortran = 1;
			else if (!lex_word(&l, "False"))
				goto bad;
			have_order = 1;
		} else if (strcmp(key, "shape") == 0) {
			if (!eat(&l, '('))
				goto bad;
			while (!eat(&l, ')')) {
				int got = ndim == 3 ? 0 : lex_uint(&l, &shape[ndim]);
				if (got < 0) {
					int nd = 0;
					while (l.p + nd < l.end && isdigit((unsigned char)l.p[nd]) && nd < 40)
						nd++;
					return cloq_err_set(err, CLOQ_EINPUT,
							    "%s: shape[%d] = %.*s%s (offset %zu) is too large (limit %lld)", path,
							    ndim, nd, l.p, nd == 40 ? "..." : "", (size_t)(l.p - (const char *)buf),
							    NPY_DIM_MAX);
				}
				if (!got)
					goto bad;
				ndim++;
				if (!eat(&l, ',')) {
					if (!eat(&l, ')'))
						goto bad;
					break;
				}
			}
			have_shape = 1;
		} else {
			goto bad;
		}
		if (!eat(&l, ',')) {
			if (!eat(&l, '}'))
				goto bad;
			break;
		}
	}
	if (!have_descr || !have_order || !have_shape)
		goto bad;
	if (fortran)
		return cloq_err_set(err, CLOQ_EINPUT,
				    "%s: Fortran-order arrays are not supported (save with C order)", path);
	if (descr[0] == '>')
		return cloq_err_set(err, CLOQ_EINPUT, "%s: big-endian dtype '%s' is not supported", path,
				    descr);
	if (strcmp(descr, "<i4") == 0)
		info->dtype = CLOQ_DT_I32;
	else if (strcmp(descr, "<i8") == 0)
		info->dtype = CLOQ_DT_I64;
	else if (strcmp(descr, "<f4") == 0)
		info->dtype = CLOQ_DT_F32;
	else if (strcmp(descr, "<f8") == 0)
		info->dtype = CLOQ_DT_F64;
	else
		return cloq_err_set(err, CLOQ_EINPUT,
				    "%s: dtype '%s' is not supported (expected <i4, <i8, <f4 or <f8)",
				    path, descr);
	if (ndim < 1 || ndim > 2)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: %d-dimensional array (1 or 2 supported)", path,
				    ndim);
	info->ndim = ndim;
	info->shape[0] = shape[0];
	info->shape[1] = ndim == 2 ? shape[1] : 1;
	size_t ne, nb;
	if (!cloq_mul_ok((size_t)info->shape[0], (size_t)info->shape[1], &ne) ||
	    !cloq_mul_ok(ne, cloq_dtype_size(info->dtype), &nb))
		return cloq_err_set(err, CLOQ_EINPUT,
				    "%s: shape (%lld, %lld) is too large: its byte size overflows (limit %zu bytes)", path,
				    (long long)shape[0], (long long)shape[1], (size_t)SIZE_MAX);
	info->nelem = ne;
	info->data_offset = hoff + hlen;
	return CLOQ_OK;
bad:
	return cloq_err_set(err, CLOQ_EINPUT, "%s: malformed .npy header near offset %zu", path,
			    (size_t)(l.p - (const char *)buf));
}

/* Read the file and check the data size. */
static int load(const char *path, char **text, cloq_npy_info *info, cloq_err *err)
{
	size_t size = 0;
	int rc = cloq_read_file(path, text, &size, err);
	if (rc)
		return rc;
	rc = cloq_npy_parse_header((const uint8_t *)*text, size, path, info, err);
	if (rc == CLOQ_OK) {
		uint64_t want = info->nelem * cloq_dtype_size(info->dtype);
		uint64_t have = size - info->data_offset;
		if (have < want)
			rc = cloq_err_set(err, CLOQ_EINPUT,
					  "%s: truncated data: %llu bytes expected at offset %llu, %llu present",
					  path, (unsigned long long)want,
					  (unsigned long long)info->data_offset, (unsigned long long)have);
		else if (have > want)
			rc = cloq_err_set(err, CLOQ_EINPUT, "%s: %llu unexpected bytes after the data (offset %llu)",
					  path, (unsigned long long)(have - want),
					  (unsigned long long)(info->data_offset + want));
	}
	if (rc) {
		cloq_free(*text);
		*text = NULL;
	}
	return rc;
}

int cloq_npy_read_i32(const char *path, int32_t **data, cloq_npy_info *info, cloq_err *err)
{
	int rc = CLOQ_OK;
	char *text = NULL;
	int32_t *out = NULL;
	cloq_npy_info inf;
	*data = NULL;
	CLOQ_TRY(load(path, &text, &inf, err));
	CLOQ_FAIL_IF(inf.dtype != CLOQ_DT_I32 && inf.dtype != CLOQ_DT_I64, err, CLOQ_EINPUT,
		     "%s: expected integers (<i4 or <i8), found %s", path, cloq_dtype_name(inf.dtype));
	out = cloq_malloc((size_t)inf.nelem * sizeof *out);
	CLOQ_FAIL_IF(!out, err, CLOQ_EIO, "%s: out of memory", path);
	const char *src = text + inf.data_offset;
	if (inf.dtype == CLOQ_DT_I32) {
		memcpy(out, src, (size_t)inf.nelem * 4);
	} else {
		for (uint64_t i = 0; i < inf.nelem; i++) {
			int64_t v;
			memcpy(&v, src + i * 8, 8);
			CLOQ_FAIL_IF(v < INT32_MIN || v > INT32_MAX, err, CLOQ_EINPUT,
				     "%s: value %lld at flat index %llu does not fit int32", path,
				     (long long)v, (unsigned long long)i);
			out[i] = (int32_t)v;
		}
	}
	cloq_free(text);
	*data = out;
	if (info)
		*info = inf;
	return CLOQ_OK;
fail:
	cloq_free(out);
	cloq_free(text);
	return rc;
}

int cloq_npy_read_f32(const char *path, float **data, cloq_npy_info *info, cloq_err *err)
{
	int rc = CLOQ_OK;
	char *text = NULL;
	float *out = NULL;
	cloq_npy_info inf;
	*data = NULL;
	CLOQ_TRY(load(path, &text, &inf, err));
	out = cloq_malloc((size_t)inf.nelem * sizeof *out);
	CLOQ_FAIL_IF(!out, err, CLOQ_EIO, "%s: out of memory", path);
	const char *src = text + inf.data_offset;
	for (uint64_t i = 0; i < inf.nelem; i++) {
		switch (inf.dtype) {
		case CLOQ_DT_F32:
			memcpy(out + i, src + i * 4, 4);
			break;
		case CLOQ_DT_F64: {
			double v;
			memcpy(&v, src + i * 8, 8);
			CLOQ_FAIL_IF(isfinite(v) && fabs(v) > 3.4028234663852886e38, err, CLOQ_EINPUT,
				     "%s: value %g at flat index %llu is outside the float range", path, v,
				     (unsigned long long)i);
			out[i] = (float)v;
			break;
		}
		case CLOQ_DT_I32: {
			int32_t v;
			memcpy(&v, src + i * 4, 4);
			out[i] = (float)v;
			break;
		}
		default: {
			int64_t v;
			memcpy(&v, src + i * 8, 8);
			out[i] = (float)v;
			break;
		}
		}
	}
	cloq_free(text);
	*data = out;
	if (info)
		*info = inf;
	return CLOQ_OK;
fail:
	cloq_free(out);
	cloq_free(text);
	return rc;
}

static int write_npy(const char *path, const char *descr, const void *data, size_t esz, int ndim,
		     const int64_t *shape, cloq_err *err)
{
	if (ndim < 1 || ndim > 2 || shape[0] < 0 || (ndim == 2 && shape[1] < 0))
		return cloq_err_set(err, CLOQ_EINPUT, "%s: can only write 1-D or 2-D arrays", path);
	char hdr[256];
	int n;
	if (ndim == 1)
		n = snprintf(hdr + 10, sizeof hdr - 10,
			     "{'descr': '%s', 'fortran_order': False, 'shape': (%lld,), }", descr,
			     (long long)shape[0]);
	else
		n = snprintf(hdr + 10, sizeof hdr - 10,
			     "{'descr': '%s', 'fortran_order': False, 'shape': (%lld, %lld), }", descr,
			     (long long)shape[0], (long long)shape[1]);
	size_t total = 10 + (size_t)n + 1; /* + '\n' */
	size_t padded = (total + 63) / 64 * 64;
	memset(hdr + 10 + n, ' ', padded - total);
	hdr[padded - 1] = '\n';
	memcpy(hdr, npy_magic, 6);
	hdr[6] = 1;
	hdr[7] = 0;
	hdr[8] = (char)((padded - 10) & 0xff);
	hdr[9] = (char)((padded - 10) >> 8);
	size_t ne, nb;
	if (!cloq_mul_ok((size_t)shape[0], ndim == 2 ? (size_t)shape[1] : 1, &ne) ||
	    !cloq_mul_ok(ne, esz, &nb))
		return cloq_err_set(err, CLOQ_EINPUT, "%s: shape overflows", path);
	cloq_atomic_file f;
	int rc = cloq_atomic_open(&f, path, err);
	if (rc)
		return rc;
	if ((rc = cloq_atomic_write(&f, hdr, padded, err)) || (rc = cloq_atomic_write(&f, data, nb, err))) {
		cloq_atomic_abort(&f);
		return rc;
	}
	return cloq_atomic_commit(&f, err);
}

int cloq_npy_write_i32(const char *path, const int32_t *data, int ndim, const int64_t *shape,
		       cloq_err *err)
{
	return write_npy(path, "<i4", data, 4, ndim, shape, err);
}

int cloq_npy_write_f32(const char *path, const float *data, int ndim, const int64_t *shape,
		       cloq_err *err)
{
	return write_npy(path, "<f4", data, 4, ndim, shape, err);
}
