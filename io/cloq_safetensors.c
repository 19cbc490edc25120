/* cloq_safetensors.c - safetensors reader (file, directory, sharded index) and streaming writer.
 * The format and the rules enforced are in cloq_safetensors.h. */
#include "cloq_safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cloq_sys.h"

struct st_file {
	char *path;
	uint64_t size;
	uint64_t data_off; /* 8 + N */
	int fd;            /* -1 for a header parsed from memory */
};

struct cloq_st_model {
	struct st_file *files;
	size_t nfiles;
	cloq_st_tensor *tensors; /* file order once finalized; names owned */
	size_t ntensors, cap;
	size_t *by_name;         /* indices into tensors, sorted by name */
	char **meta_keys, **meta_vals;
	size_t nmeta;
};

/* Largest integer a JSON number (a double in cJSON) holds exactly; no real dim or offset is near. */
#define JSON_INT_MAX 9007199254740992.0 /* 2^53 */

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* ---- model bookkeeping ---------------------------------------------------------------------- */
static int add_file(cloq_st_model *m, const char *path, cloq_err *err)
{
	struct st_file *nf = cloq_realloc(m->files, (m->nfiles + 1) * sizeof *nf);
	if (!nf)
		return cloq_err_set(err, CLOQ_EIO, "%s: out of memory", path);
	m->files = nf;
	struct st_file *f = &m->files[m->nfiles];
	memset(f, 0, sizeof *f);
	f->fd = -1;
	f->path = cloq_strdup(path);
	if (!f->path)
		return cloq_err_set(err, CLOQ_EIO, "%s: out of memory", path);
	m->nfiles++;
	return CLOQ_OK;
}

static cloq_st_tensor *new_tensor(cloq_st_model *m)
{
	if (m->ntensors == m->cap) {
		size_t nc = m->cap ? m->cap * 2 : 64;
		cloq_st_tensor *nt = cloq_realloc(m->tensors, nc * sizeof *nt);
		if (!nt)
			return NULL;
		m->tensors = nt;
		m->cap = nc;
	}
	cloq_st_tensor *t = &m->tensors[m->ntensors];
	memset(t, 0, sizeof *t);
	return t;
}

void cloq_st_close(cloq_st_model *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nfiles; i++) {
		if (m->files[i].fd >= 0)
			close(m->files[i].fd);
		cloq_free(m->files[i].path);
	}
	cloq_free(m->files);
	for (size_t i = 0; i < m->ntensors; i++)
		cloq_free((char *)m->tensors[i].name);
	cloq_free(m->tensors);
	cloq_free(m->by_name);
	for (size_t i = 0; i < m->nmeta; i++) {
		cloq_free(m->meta_keys[i]);
		cloq_free(m->meta_vals[i]);
	}
	cloq_free(m->meta_keys);
	cloq_free(m->meta_vals);
	cloq_free(m);
}

/* ---- header parsing ------------------------------------------------------------------------- */
/* A JSON number that is an integer in [0, 2^53]: 1. Not a non-negative integer: 0. An integer
 * (or number) above 2^53, which a double cannot count exactly: -1, with *big set to it. */
static int json_uint(const cJSON *j, uint64_t *out, double *big)
{
	if (!cJSON_IsNumber(j))
		return 0;
	double v = j->valuedouble;
	if (v > JSON_INT_MAX) {
		*big = v;
		return -1;
	}
	if (!(v >= 0.0) || v != floor(v))
		return 0;
	*out = (uint64_t)v;
	return 1;
}

/* A number json_uint found too large, as written: digits up to 1e21, else %g. */
static const char *big_str(double v, char *buf, size_t cap)
{
	snprintf(buf, cap, v < 1e21 && v == floor(v) ? "%.0f" : "%.17g", v);
	return buf;
}


static int cmp_tensor_span(const void *a, const void *b, void *ctx)
{
	const cloq_st_tensor *t = ctx;
	const cloq_st_tensor *x = &t[*(const size_t *)a], *y = &t[*(const size_t *)b];
	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	if (x->nbytes != y->nbytes)
		return x->nbytes < y->nbytes ? -1 : 1;
	return 0;
}

/* The 8-byte header length n of a file of file_size bytes (>= 8): at most the limit, and within
 * the file. (8 + n cannot overflow: n is compared with file_size - 8.) */
static int check_header_len(const char *fn, uint64_t n, uint64_t file_size, cloq_err *err)
{
	if (n > CLOQ_ST_MAX_HEADER)
		return cloq_err_set(err, CLOQ_EINPUT,
				    "%s: header length %llu (bytes 0-7) is too large: the limit is %u bytes%s and the "
				    "file has %llu",
				    fn, (unsigned long long)n, CLOQ_ST_MAX_HEADER,
				    n > file_size - 8 ? "," : ";", (unsigned long long)file_size);
	if (n > file_size - 8)
		return cloq_err_set(err, CLOQ_EINPUT,
				    "%s: header length %llu (bytes 0-7) exceeds the file size %llu (at most %llu "
				    "bytes of header fit after the length field)",
				    fn, (unsigned long long)n, (unsigned long long)file_size,
				    (unsigned long long)(file_size - 8));
	return CLOQ_OK;
}

/* Parse one file's header into m as file `fi`. buf holds at least 8+N bytes. */
static int parse_into(cloq_st_model *m, size_t fi, const uint8_t *buf, size_t len,
		      uint64_t file_size, cloq_err *err)
{
	int rc = CLOQ_OK;
	cJSON *root = NULL;
	size_t *order = NULL;
	const char *fn = m->files[fi].path;
	size_t first = m->ntensors;

	CLOQ_FAIL_IF(len < 8 || file_size < 8, err, CLOQ_EINPUT,
		     "%s: too small for a safetensors file (%llu bytes, need at least 8)", fn,
		     (unsigned long long)(len < file_size ? len : file_size));
	uint64_t n = le64(buf);
	CLOQ_TRY(check_header_len(fn, n, file_size, err));
	CLOQ_FAIL_IF(8 + n > len, err, CLOQ_EINPUT,
		     "%s: truncated header: %llu bytes announced, %zu available", fn,
		     (unsigned long long)n, len - 8);
	CLOQ_FAIL_IF(n < 2 || buf[8] != '{', err, CLOQ_EINPUT,
		     "%s: header at offset 8 does not start with '{'", fn);
	const char *json = (const char *)buf + 8, *end = NULL;
	root = cJSON_ParseWithLengthOpts(json, (size_t)n, &end, 0);
	if (!root) {
		size_t pos = end ? (size_t)(end - json) : 0;
		CLOQ_FAIL_IF(1, err, CLOQ_EINPUT, "%s: invalid JSON header near offset %llu", fn,
			     (unsigned long long)(8 + pos));
	}
	/* only padding may follow the object */
	for (const char *p = end; p < json + n; p++)
		CLOQ_FAIL_IF(*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r', err, CLOQ_EINPUT,
			     "%s: unexpected bytes after the JSON header at offset %llu", fn,
			     (unsigned long long)(8 + (p - json)));
	CLOQ_FAIL_IF(!cJSON_IsObject(root), err, CLOQ_EINPUT, "%s: header is not a JSON object", fn);

	uint64_t data_off = 8 + n, data_size = file_size - data_off;
	m->files[fi].data_off = data_off;
	m->files[fi].size = file_size;

	for (cJSON *e = root->child; e; e = e->next) {
		const char *name = e->string ? e->string : "";
		if (strcmp(name, "__metadata__") == 0) {
			CLOQ_FAIL_IF(!cJSON_IsObject(e), err, CLOQ_EINPUT,
				     "%s: \"__metadata__\" is not an object", fn);
			for (cJSON *kv = e->child; kv; kv = kv->next) {
				CLOQ_FAIL_IF(!cJSON_IsString(kv), err, CLOQ_EINPUT,
					     "%s: \"__metadata__\" value of '%s' is not a string", fn,
					     kv->string ? kv->string : "");
				if (fi != 0)
					continue; /* the model's metadata is the first file's */
				char **nk = cloq_realloc(m->meta_keys, (m->nmeta + 1) * sizeof *nk);
				CLOQ_FAIL_IF(!nk, err, CLOQ_EIO, "%s: out of memory", fn);
				m->meta_keys = nk;
				char **nv = cloq_realloc(m->meta_vals, (m->nmeta + 1) * sizeof *nv);
				CLOQ_FAIL_IF(!nv, err, CLOQ_EIO, "%s: out of memory", fn);
				m->meta_vals = nv;
				char *k = cloq_strdup(kv->string ? kv->string : "");
				char *v = k ? cloq_strdup(kv->valuestring) : NULL;
				if (!v) {
					cloq_free(k);
					CLOQ_FAIL_IF(1, err, CLOQ_EIO, "%s: out of memory", fn);
				}
				m->meta_keys[m->nmeta] = k;
				m->meta_vals[m->nmeta++] = v;
			}
			continue;
		}
		CLOQ_FAIL_IF(!cJSON_IsObject(e), err, CLOQ_EINPUT,
			     "%s: tensor '%s': header entry is not an object", fn, name);
		cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
		cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
		cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
		CLOQ_FAIL_IF(!cJSON_IsString(jd), err, CLOQ_EINPUT,
			     "%s: tensor '%s': missing or non-string \"dtype\"", fn, name);
		enum cloq_dtype dt = cloq_dtype_from_name(jd->valuestring);
		CLOQ_FAIL_IF(dt == CLOQ_DT_INVALID, err, CLOQ_EINPUT,
			     "%s: tensor '%s': unknown dtype \"%.64s\"", fn, name, jd->valuestring);
		CLOQ_FAIL_IF(!cJSON_IsArray(js), err, CLOQ_EINPUT,
			     "%s: tensor '%s': missing or non-array \"shape\"", fn, name);
		int ndim = cJSON_GetArraySize(js);
		CLOQ_FAIL_IF(ndim > CLOQ_ST_MAX_DIMS, err, CLOQ_EINPUT,
			     "%s: tensor '%s': %d dimensions (at most %d supported)", fn, name, ndim,
			     CLOQ_ST_MAX_DIMS);
		CLOQ_FAIL_IF(!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2, err, CLOQ_EINPUT,
			     "%s: tensor '%s': \"data_offsets\" is not [begin, end]", fn, name);
		uint64_t begin = 0, endo = 0;
		double big = 0;
		char bigbuf[40];
		int ob = json_uint(jo->child, &begin, &big), oe = ob < 0 ? 1 : json_uint(jo->child->next, &endo, &big);
		CLOQ_FAIL_IF(ob < 0 || oe < 0, err, CLOQ_EINPUT,
			     "%s: tensor '%s': data_offsets[%d] = %s is too large (limit 2^53 = %.0f)", fn, name,
			     ob < 0 ? 0 : 1, big_str(big, bigbuf, sizeof bigbuf), JSON_INT_MAX);
		CLOQ_FAIL_IF(!ob || !oe, err, CLOQ_EINPUT,
			     "%s: tensor '%s': \"data_offsets\" are not non-negative integers", fn, name);
		CLOQ_FAIL_IF(endo < begin, err, CLOQ_EINPUT,
			     "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", fn,
			     name, (unsigned long long)begin, (unsigned long long)endo);
		CLOQ_FAIL_IF(endo > data_size, err, CLOQ_EINPUT,
			     "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the file "
			     "(data ends at relative offset %llu, absolute %llu)",
			     fn, name, (unsigned long long)begin, (unsigned long long)endo,
			     (unsigned long long)data_size, (unsigned long long)file_size);

		cloq_st_tensor *t = new_tensor(m);
		CLOQ_FAIL_IF(!t, err, CLOQ_EIO, "%s: out of memory", fn);
		t->dtype = dt;
		t->ndim = ndim;
		t->file = (int)fi;
		uint64_t nelem = 1;
		int d = 0;
		for (cJSON *x = js->child; x; x = x->next, d++) {
			uint64_t v = 0;
			int ok = json_uint(x, &v, &big);
			CLOQ_FAIL_IF(ok < 0, err, CLOQ_EINPUT,
				     "%s: tensor '%s': shape[%d] = %s is too large (limit 2^53 = %.0f)", fn, name, d,
				     big_str(big, bigbuf, sizeof bigbuf), JSON_INT_MAX);
			CLOQ_FAIL_IF(!ok, err, CLOQ_EINPUT,
				     "%s: tensor '%s': shape[%d] is not a non-negative integer", fn,
				     name, d);
			CLOQ_FAIL_IF(__builtin_mul_overflow(nelem, v, &nelem), err, CLOQ_EINPUT,
				     "%s: tensor '%s': shape product overflows: too large (limit 2^64 - 1 elements)",
				     fn, name);
			t->shape[d] = (int64_t)v;
		}
		uint64_t nbytes;
		CLOQ_FAIL_IF(__builtin_mul_overflow(nelem, (uint64_t)cloq_dtype_size(dt), &nbytes),
			     err, CLOQ_EINPUT,
			     "%s: tensor '%s': shape x dtype size overflows: too large (limit 2^64 - 1 bytes)", fn,
			     name);
		CLOQ_FAIL_IF(nbytes != endo - begin, err, CLOQ_EINPUT,
			     "%s: tensor '%s': shape x %s size = %llu bytes but data_offsets [%llu, %llu] "
			     "span %llu (offset %llu)",
			     fn, name, cloq_dtype_name(dt), (unsigned long long)nbytes,
			     (unsigned long long)begin, (unsigned long long)endo,
			     (unsigned long long)(endo - begin), (unsigned long long)(data_off + begin));
		t->nelem = nelem;
		t->nbytes = nbytes;
		t->offset = data_off + begin;
		t->name = cloq_strdup(name);
		CLOQ_FAIL_IF(!t->name, err, CLOQ_EIO, "%s: out of memory", fn);
		m->ntensors++;
	}

	/* Sorted by offset, the tensors must tile the data buffer exactly. */
	size_t cnt = m->ntensors - first;
	order = cloq_malloc((cnt ? cnt : 1) * sizeof *order);
	CLOQ_FAIL_IF(!order, err, CLOQ_EIO, "%s: out of memory", fn);
	for (size_t i = 0; i < cnt; i++)
		order[i] = first + i;
	if (cnt > 1)
		qsort_r(order, cnt, sizeof *order, cmp_tensor_span, m->tensors);
	uint64_t pos = data_off;
	const char *prev = NULL;
	for (size_t i = 0; i < cnt; i++) {
		const cloq_st_tensor *t = &m->tensors[order[i]];
		if (t->offset < pos)
			CLOQ_FAIL_IF(1, err, CLOQ_EINPUT,
				     "%s: tensor '%s': data at offset %llu overlaps tensor '%s' (which ends at %llu)",
				     fn, t->name, (unsigned long long)t->offset, prev ? prev : "?",
				     (unsigned long long)pos);
		if (t->offset > pos)
			CLOQ_FAIL_IF(1, err, CLOQ_EINPUT,
				     "%s: tensor '%s': offsets not contiguous: hole of %llu bytes before offset %llu%s%s%s",
				     fn, t->name, (unsigned long long)(t->offset - pos),
				     (unsigned long long)t->offset, prev ? " after tensor '" : "",
				     prev ? prev : "", prev ? "'" : "");
		pos = t->offset + t->nbytes;
		prev = t->name;
	}
	CLOQ_FAIL_IF(pos != file_size, err, CLOQ_EINPUT,
		     "%s: %llu bytes after the last tensor%s%s%s (offset %llu) are not covered by any tensor",
		     fn, (unsigned long long)(file_size - pos), prev ? " '" : "", prev ? prev : "",
		     prev ? "'" : "", (unsigned long long)pos);
	cloq_free(order);
	cJSON_Delete(root);
	return CLOQ_OK;
fail:
	cloq_free(order);
	cJSON_Delete(root);
	return rc;
}

static int cmp_file_order(const void *a, const void *b)
{
	const cloq_st_tensor *x = a, *y = b;
	if (x->file != y->file)
		return x->file < y->file ? -1 : 1;
	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static int cmp_name_idx(const void *a, const void *b, void *ctx)
{
	const cloq_st_tensor *t = ctx;
	return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

/* Sort into file order, build the name index, reject duplicate names (cJSON keeps them). */
static int finalize(cloq_st_model *m, cloq_err *err)
{
	if (m->ntensors > 1) /* m->tensors is NULL for a file without tensors: qsort's args are nonnull */
		qsort(m->tensors, m->ntensors, sizeof *m->tensors, cmp_file_order);
	m->by_name = cloq_malloc((m->ntensors ? m->ntensors : 1) * sizeof *m->by_name);
	if (!m->by_name)
		return cloq_err_set(err, CLOQ_EIO, "%s: out of memory", m->files[0].path);
	for (size_t i = 0; i < m->ntensors; i++)
		m->by_name[i] = i;
	if (m->ntensors > 1)
		qsort_r(m->by_name, m->ntensors, sizeof *m->by_name, cmp_name_idx, m->tensors);
	for (size_t i = 1; i < m->ntensors; i++) {
		const cloq_st_tensor *a = &m->tensors[m->by_name[i - 1]], *b = &m->tensors[m->by_name[i]];
		if (strcmp(a->name, b->name) == 0) {
			/* name the earlier copy first: lower file index, then lower offset */
			int a_first = a->file != b->file ? a->file < b->file : a->offset < b->offset;
			const cloq_st_tensor *lo = a_first ? a : b, *hi = a_first ? b : a;
			if (a->file == b->file)
				return cloq_err_set(err, CLOQ_EINPUT,
						    "%s: tensor '%s': duplicate name (at offsets %llu and %llu)",
						    m->files[a->file].path, a->name,
						    (unsigned long long)lo->offset,
						    (unsigned long long)hi->offset);
			return cloq_err_set(err, CLOQ_EINPUT,
					    "%s: tensor '%s': duplicate name, also in %s (offset %llu)",
					    m->files[lo->file].path, a->name, m->files[hi->file].path,
					    (unsigned long long)hi->offset);
		}
	}
	return CLOQ_OK;
}

int cloq_st_parse_header(const uint8_t *buf, size_t len, uint64_t file_size, const char *filename,
			 cloq_st_model **out, cloq_err *err)
{
	int rc = CLOQ_OK;
	*out = NULL;
	cloq_st_model *m = cloq_calloc(1, sizeof *m);
	CLOQ_FAIL_IF(!m, err, CLOQ_EIO, "%s: out of memory", filename);
	CLOQ_TRY(add_file(m, filename, err));
	CLOQ_TRY(parse_into(m, 0, buf, len, file_size, err));
	CLOQ_TRY(finalize(m, err));
	*out = m;
	return CLOQ_OK;
fail:
	cloq_st_close(m);
	return rc;
}

/* ---- opening files and directories ---------------------------------------------------------- */
static int open_file(cloq_st_model *m, size_t fi, cloq_err *err)
{
	int rc = CLOQ_OK;
	uint8_t *hdr = NULL;
	struct st_file *f = &m->files[fi];
	f->fd = open(f->path, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0)
		return cloq_err_set(err, errno == ENOENT || errno == ENOTDIR ? CLOQ_EINPUT : CLOQ_EIO,
				    "%s: cannot open: %s", f->path, strerror(errno));
	struct stat st;
	CLOQ_FAIL_IF(fstat(f->fd, &st) != 0, err, CLOQ_EIO, "%s: stat failed: %s", f->path,
		     strerror(errno));
	CLOQ_FAIL_IF(!S_ISREG(st.st_mode), err, CLOQ_EINPUT, "%s: not a regular file", f->path);
	uint64_t size = (uint64_t)st.st_size;
	CLOQ_FAIL_IF(size < 8, err, CLOQ_EINPUT,
		     "%s: too small for a safetensors file (%llu bytes, need at least 8)", f->path,
		     (unsigned long long)size);
	uint8_t lenbuf[8];
	CLOQ_TRY(cloq_pread_all(f->fd, lenbuf, 8, 0, f->path, err));
	uint64_t n = le64(lenbuf);
	/* The same checks run again in parse_into; here they keep a hostile N from sizing malloc. */
	CLOQ_TRY(check_header_len(f->path, n, size, err));
	hdr = cloq_malloc((size_t)(8 + n));
	CLOQ_FAIL_IF(!hdr, err, CLOQ_EIO, "%s: out of memory for a %llu-byte header", f->path,
		     (unsigned long long)n);
	CLOQ_TRY(cloq_pread_all(f->fd, hdr, (size_t)(8 + n), 0, f->path, err));
	CLOQ_TRY(parse_into(m, fi, hdr, (size_t)(8 + n), size, err));
	cloq_free(hdr);
	return CLOQ_OK;
fail:
	cloq_free(hdr);
	return rc;
}

static char *path_join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *p = cloq_malloc(a + b + 2);
	if (p) {
		memcpy(p, dir, a);
		size_t k = a;
		if (a && dir[a - 1] != '/')
			p[k++] = '/';
		memcpy(p + k, name, b + 1);
	}
	return p;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int open_index(cloq_st_model *m, const char *index_path, cloq_err *err)
{
	int rc = CLOQ_OK;
	char *text = NULL, *dir = NULL;
	const char **names = NULL;
	cJSON *root = NULL;
	size_t size = 0, nnames = 0;

	CLOQ_TRY(cloq_read_file(index_path, &text, &size, err));
	root = cJSON_ParseWithLength(text, size);
	CLOQ_FAIL_IF(!root, err, CLOQ_EINPUT, "%s: invalid JSON near offset %llu", index_path,
		     (unsigned long long)(cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - text : 0));
	cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
	CLOQ_FAIL_IF(!cJSON_IsObject(wm), err, CLOQ_EINPUT, "%s: no \"weight_map\" object",
		     index_path);
	size_t nmap = (size_t)cJSON_GetArraySize(wm);
	CLOQ_FAIL_IF(nmap == 0, err, CLOQ_EINPUT, "%s: \"weight_map\" is empty", index_path);
	names = cloq_malloc(nmap * sizeof *names);
	CLOQ_FAIL_IF(!names, err, CLOQ_EIO, "%s: out of memory", index_path);
	for (cJSON *e = wm->child; e; e = e->next) {
		CLOQ_FAIL_IF(!cJSON_IsString(e), err, CLOQ_EINPUT,
			     "%s: tensor '%s': shard name is not a string", index_path, e->string);
		const char *s = e->valuestring;
		/* shard names are plain file names next to the index: no paths out of the directory */
		CLOQ_FAIL_IF(!*s || strchr(s, '/') || strcmp(s, "..") == 0 || strcmp(s, ".") == 0, err,
			     CLOQ_EINPUT, "%s: tensor '%s': bad shard file name '%s'", index_path,
			     e->string, s);
		names[nnames++] = s;
	}
	qsort(names, nnames, sizeof *names, cmp_str);
	size_t u = 0;
	for (size_t i = 0; i < nnames; i++)
		if (u == 0 || strcmp(names[u - 1], names[i]) != 0)
			names[u++] = names[i];
	dir = cloq_strdup(index_path);
	CLOQ_FAIL_IF(!dir, err, CLOQ_EIO, "%s: out of memory", index_path);
	char *slash = strrchr(dir, '/');
	if (slash)
		slash[1] = '\0';
	else
		dir[0] = '\0';
	for (size_t i = 0; i < u; i++) {
		char *p = path_join(dir, names[i]);
		CLOQ_FAIL_IF(!p, err, CLOQ_EIO, "%s: out of memory", index_path);
		rc = add_file(m, p, err);
		cloq_free(p);
		CLOQ_TRY(rc);
		if (!cloq_file_exists(m->files[i].path))
			CLOQ_FAIL_IF(1, err, CLOQ_EINPUT, "%s: names shard '%s' which does not exist (%s)",
				     index_path, names[i], m->files[i].path);
		CLOQ_TRY(open_file(m, i, err));
	}
	CLOQ_TRY(finalize(m, err));
	/* every tensor of the map must be in the shard the map names */
	for (cJSON *e = wm->child; e; e = e->next) {
		const cloq_st_tensor *t = cloq_st_find(m, e->string);
		size_t fi = 0;
		while (fi < u && strcmp(names[fi], e->valuestring) != 0)
			fi++;
		if (!t)
			CLOQ_FAIL_IF(1, err, CLOQ_EINPUT,
				     "%s: tensor '%s': named in the index but absent from shard %s",
				     index_path, e->string, m->files[fi].path);
		if ((size_t)t->file != fi)
			CLOQ_FAIL_IF(1, err, CLOQ_EINPUT,
				     "%s: tensor '%s': the index names shard %s but it is in %s (offset %llu)",
				     index_path, e->string, m->files[fi].path, m->files[t->file].path,
				     (unsigned long long)t->offset);
	}
fail:
	cJSON_Delete(root);
	cloq_free(names);
	cloq_free(dir);
	cloq_free(text);
	return rc;
}

int cloq_st_open(const char *path, cloq_st_model **out, cloq_err *err)
{
	int rc = CLOQ_OK;
	char *single = NULL, *index = NULL;
	*out = NULL;
	cloq_st_model *m = cloq_calloc(1, sizeof *m);
	CLOQ_FAIL_IF(!m, err, CLOQ_EIO, "%s: out of memory", path);
	struct stat st;
	CLOQ_FAIL_IF(stat(path, &st) != 0, err, errno == ENOENT ? CLOQ_EINPUT : CLOQ_EIO,
		     "%s: cannot open: %s", path, strerror(errno));
	size_t plen = strlen(path);
	if (S_ISDIR(st.st_mode)) {
		single = path_join(path, "model.safetensors");
		index = path_join(path, "model.safetensors.index.json");
		CLOQ_FAIL_IF(!single || !index, err, CLOQ_EIO, "%s: out of memory", path);
		if (cloq_file_exists(single)) {
			CLOQ_TRY(add_file(m, single, err));
			CLOQ_TRY(open_file(m, 0, err));
			CLOQ_TRY(finalize(m, err));
		} else if (cloq_file_exists(index)) {
			CLOQ_TRY(open_index(m, index, err));
		} else {
			CLOQ_FAIL_IF(1, err, CLOQ_EINPUT,
				     "%s: no model.safetensors or model.safetensors.index.json in this directory",
				     path);
		}
	} else if (plen > 11 && strcmp(path + plen - 11, ".index.json") == 0) {
		CLOQ_TRY(open_index(m, path, err));
	} else {
		CLOQ_TRY(add_file(m, path, err));
		CLOQ_TRY(open_file(m, 0, err));
		CLOQ_TRY(finalize(m, err));
	}
	cloq_free(single);
	cloq_free(index);
	*out = m;
	return CLOQ_OK;
fail:
	cloq_free(single);
	cloq_free(index);
	cloq_st_close(m);
	return rc;
}

/* ---- queries -------------------------------------------------------------------------------- */
size_t cloq_st_count(const cloq_st_model *m) { return m->ntensors; }

const cloq_st_tensor *cloq_st_tensor_at(const cloq_st_model *m, size_t i)
{
	return i < m->ntensors ? &m->tensors[i] : NULL;
}

size_t cloq_st_index_of(const cloq_st_model *m, const cloq_st_tensor *t)
{
	return (size_t)(t - m->tensors);
}

const cloq_st_tensor *cloq_st_find(const cloq_st_model *m, const char *name)
{
	size_t lo = 0, hi = m->ntensors;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(m->tensors[m->by_name[mid]].name, name);
		if (c == 0)
			return &m->tensors[m->by_name[mid]];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

size_t cloq_st_nfiles(const cloq_st_model *m) { return m->nfiles; }

const char *cloq_st_file_path(const cloq_st_model *m, size_t file)
{
	return file < m->nfiles ? m->files[file].path : NULL;
}

uint64_t cloq_st_file_size(const cloq_st_model *m, size_t file)
{
	return file < m->nfiles ? m->files[file].size : 0;
}

uint64_t cloq_st_file_data_offset(const cloq_st_model *m, size_t file)
{
	return file < m->nfiles ? m->files[file].data_off : 0;
}

const char *cloq_st_meta_get(const cloq_st_model *m, const char *key)
{
	for (size_t i = 0; i < m->nmeta; i++)
		if (strcmp(m->meta_keys[i], key) == 0)
			return m->meta_vals[i];
	return NULL;
}

/* Layer number of "model.layers.N.<rest>", or -1. */
static long layer_of(const char *name)
{
	static const char pre[] = "model.layers.";
	if (strncmp(name, pre, sizeof pre - 1) != 0)
		return -1;
	const char *p = name + sizeof pre - 1;
	if (*p < '0' || *p > '9')
		return -1;
	long v = 0;
	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (*p - '0');
		if (v > 1000000000L)
			return -1;
	}
	return *p == '.' ? v : -1;
}

size_t cloq_st_layer_tensors(const cloq_st_model *m, int layer, size_t *idx, size_t cap)
{
	size_t n = 0;
	for (size_t i = 0; i < m->ntensors; i++) {
		if (layer_of(m->tensors[i].name) != layer)
			continue;
		if (n < cap)
			idx[n] = i;
		n++;
	}
	return n;
}

int cloq_st_layer_count(const cloq_st_model *m)
{
	long mx = -1;
	for (size_t i = 0; i < m->ntensors; i++) {
		long l = layer_of(m->tensors[i].name);
		if (l > mx)
			mx = l;
	}
	return (int)(mx + 1);
}

/* ---- reading tensors ------------------------------------------------------------------------ */
static int check_finite(const cloq_st_model *m, const cloq_st_tensor *t, const float *v, size_t n,
			uint64_t base, cloq_err *err)
{
	for (size_t i = 0; i < n; i++) {
		uint32_t u;
		memcpy(&u, v + i, 4);
		if ((u & 0x7f800000u) == 0x7f800000u)
			return cloq_err_set(err, CLOQ_EINPUT,
					    "%s: tensor '%s': %s at flat index %llu (offset %llu)",
					    m->files[t->file].path, t->name,
					    (u & 0x7fffffu) ? "NaN" : "Inf",
					    (unsigned long long)(base + i),
					    (unsigned long long)(t->offset +
								 (base + i) * cloq_dtype_size(t->dtype)));
	}
	return CLOQ_OK;
}

static int check_readable(const cloq_st_model *m, const cloq_st_tensor *t, cloq_err *err)
{
	if (t->file < 0 || (size_t)t->file >= m->nfiles)
		return cloq_err_set(err, CLOQ_EINPUT, "tensor '%s': bad file index %d", t->name, t->file);
	if (m->files[t->file].fd < 0)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s': file not open (header parsed from memory)",
				    m->files[t->file].path, t->name);
	return CLOQ_OK;
}

int cloq_st_read_raw(const cloq_st_model *m, const cloq_st_tensor *t, void *dst, cloq_err *err)
{
	int rc = check_readable(m, t, err);
	if (rc)
		return rc;
	const struct st_file *f = &m->files[t->file];
	rc = cloq_pread_all(f->fd, dst, (size_t)t->nbytes, t->offset, f->path, err);
	if (rc)
		cloq_err_wrap(err, rc, "tensor '%s'", t->name);
	return rc;
}

int cloq_st_read_f32(const cloq_st_model *m, const cloq_st_tensor *t, float *dst, cloq_err *err)
{
	int rc = CLOQ_OK;
	void *tmp = NULL;
	CLOQ_TRY(check_readable(m, t, err));
	const struct st_file *f = &m->files[t->file];
	CLOQ_FAIL_IF(!cloq_dtype_is_float(t->dtype), err, CLOQ_EINPUT,
		     "%s: tensor '%s': dtype %s cannot be read as floats", f->path, t->name,
		     cloq_dtype_name(t->dtype));
	if (t->dtype == CLOQ_DT_F32) {
		rc = cloq_pread_all(f->fd, dst, (size_t)t->nbytes, t->offset, f->path, err);
		if (rc) {
			cloq_err_wrap(err, rc, "tensor '%s'", t->name);
			goto fail;
		}
		CLOQ_TRY(check_finite(m, t, dst, (size_t)t->nelem, 0, err));
		return CLOQ_OK;
	}
	/* 16-bit: read through a bounded buffer and widen in place into dst */
	const size_t chunk = (size_t)1 << 19; /* elements per piece (1 MiB of halves) */
	size_t esz = cloq_dtype_size(t->dtype);
	size_t piece = t->nelem < chunk ? (size_t)t->nelem : chunk;
	tmp = cloq_aligned_alloc(64, (piece ? piece : 1) * esz);
	CLOQ_FAIL_IF(!tmp, err, CLOQ_EIO, "%s: tensor '%s': out of memory", f->path, t->name);
	for (uint64_t done = 0; done < t->nelem;) {
		size_t k = t->nelem - done < piece ? (size_t)(t->nelem - done) : piece;
		rc = cloq_pread_all(f->fd, tmp, k * esz, t->offset + done * esz, f->path, err);
		if (rc) {
			cloq_err_wrap(err, rc, "tensor '%s'", t->name);
			goto fail;
		}
		cloq_dtype_to_f32(t->dtype, tmp, dst + done, k);
		CLOQ_TRY(check_finite(m, t, dst + done, k, done, err));
		done += k;
	}
	cloq_free(tmp);
	return CLOQ_OK;
fail:
	cloq_free(tmp);
	return rc;
}

int cloq_st_convert_f32(const cloq_st_model *m, const cloq_st_tensor *t, const void *raw,
			float *dst, cloq_err *err)
{
	if (!cloq_dtype_is_float(t->dtype))
		return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s': dtype %s cannot be read as floats",
				    m->files[t->file].path, t->name, cloq_dtype_name(t->dtype));
	if (t->dtype == CLOQ_DT_F32) {
		if (raw != dst)
			memcpy(dst, raw, (size_t)t->nbytes);
	} else if (((uintptr_t)raw & 1) == 0) {
		cloq_dtype_to_f32(t->dtype, raw, dst, (size_t)t->nelem);
	} else {
		/* odd address: widen through an aligned copy, one bounded piece at a time */
		uint16_t tmp[4096];
		for (uint64_t done = 0; done < t->nelem;) {
			size_t k = t->nelem - done < 4096 ? (size_t)(t->nelem - done) : 4096;
			memcpy(tmp, (const uint8_t *)raw + done * 2, k * 2);
			cloq_dtype_to_f32(t->dtype, tmp, dst + done, k);
			done += k;
		}
	}
	return check_finite(m, t, dst, (size_t)t->nelem, 0, err);
}

/* ---- writer --------------------------------------------------------------------------------- */
struct wtensor {
	char *name;
	enum cloq_dtype dtype;
	int ndim;
	int64_t shape[CLOQ_ST_MAX_DIMS];
	uint64_t nbytes, begin;
};

enum { W_DECLARE, W_WRITING, W_DONE, W_FAILED };

struct cloq_st_writer {
	cloq_atomic_file f;
	int state;
	struct wtensor *t;
	size_t n, cap;
	char **mkeys, **mvals;
	size_t nmeta;
	size_t cur;       /* tensor being written */
	uint64_t cur_done; /* its bytes written so far */
	uint64_t data_off;
};

/* Growable string for the header. */
struct sbuf {
	char *p;
	size_t n, cap;
	int oom;
};

static void sb_put(struct sbuf *s, const char *x, size_t k)
{
	if (s->oom)
		return;
	if (s->n + k + 1 > s->cap) {
		size_t nc = s->cap ? s->cap : 1024;
		while (nc < s->n + k + 1)
			nc *= 2;
		char *np = cloq_realloc(s->p, nc);
		if (!np) {
			s->oom = 1;
			return;
		}
		s->p = np;
		s->cap = nc;
	}
	memcpy(s->p + s->n, x, k);
	s->n += k;
	s->p[s->n] = '\0';
}

static void sb_str(struct sbuf *s, const char *x) { sb_put(s, x, strlen(x)); }

static void sb_json_string(struct sbuf *s, const char *x)
{
	sb_put(s, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)x; *p; p++) {
		char e[8];
		if (*p == '"' || *p == '\\') {
			e[0] = '\\';
			e[1] = (char)*p;
			sb_put(s, e, 2);
		} else if (*p < 0x20) {
			snprintf(e, sizeof e, "\\u%04x", *p);
			sb_put(s, e, 6);
		} else {
			sb_put(s, (const char *)p, 1);
		}
	}
	sb_put(s, "\"", 1);
}

static void sb_u64(struct sbuf *s, uint64_t v)
{
	char b[24];
	int k = snprintf(b, sizeof b, "%llu", (unsigned long long)v);
	sb_put(s, b, (size_t)k);
}

int cloq_st_writer_create(const char *path, cloq_st_writer **out, cloq_err *err)
{
	*out = NULL;
	cloq_st_writer *w = cloq_calloc(1, sizeof *w);
	if (!w)
		return cloq_err_set(err, CLOQ_EIO, "%s: out of memory", path);
	w->f.fd = -1;
	int rc = cloq_atomic_open(&w->f, path, err);
	if (rc) {
		cloq_free(w);
		return rc;
	}
	*out = w;
	return CLOQ_OK;
}

int cloq_st_writer_add(cloq_st_writer *w, const char *name, enum cloq_dtype dtype, int ndim,
		       const int64_t *shape, cloq_err *err)
{
	const char *fn = w->f.path ? w->f.path : "safetensors writer";
	if (w->state != W_DECLARE)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s': declared after the header was written",
				    fn, name);
	if (cloq_dtype_size(dtype) == 0)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s': invalid dtype %d", fn, name, (int)dtype);
	if (ndim < 0 || ndim > CLOQ_ST_MAX_DIMS)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s': %d dimensions", fn, name, ndim);
	if (strcmp(name, "__metadata__") == 0)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: '__metadata__' is reserved", fn);
	uint64_t nbytes = cloq_dtype_size(dtype);
	for (int d = 0; d < ndim; d++)
		if (shape[d] < 0 || (double)shape[d] > JSON_INT_MAX ||
		    __builtin_mul_overflow(nbytes, (uint64_t)shape[d], &nbytes))
			return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s': bad shape[%d] = %lld",
					    fn, name, d, (long long)shape[d]);
	for (size_t i = 0; i < w->n; i++)
		if (strcmp(w->t[i].name, name) == 0)
			return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s': declared twice", fn, name);
	if (w->n == w->cap) {
		size_t nc = w->cap ? w->cap * 2 : 64;
		struct wtensor *nt = cloq_realloc(w->t, nc * sizeof *nt);
		if (!nt)
			return cloq_err_set(err, CLOQ_EIO, "%s: out of memory", fn);
		w->t = nt;
		w->cap = nc;
	}
	struct wtensor *t = &w->t[w->n];
	memset(t, 0, sizeof *t);
	t->name = cloq_strdup(name);
	if (!t->name)
		return cloq_err_set(err, CLOQ_EIO, "%s: out of memory", fn);
	t->dtype = dtype;
	t->ndim = ndim;
	for (int d = 0; d < ndim; d++)
		t->shape[d] = shape[d];
	t->nbytes = nbytes;
	t->begin = w->n ? w->t[w->n - 1].begin + w->t[w->n - 1].nbytes : 0;
	w->n++;
	return CLOQ_OK;
}

int cloq_st_writer_meta(cloq_st_writer *w, const char *key, const char *value, cloq_err *err)
{
	const char *fn = w->f.path ? w->f.path : "safetensors writer";
	if (w->state != W_DECLARE)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: metadata '%s' set after the header was written",
				    fn, key);
	for (size_t i = 0; i < w->nmeta; i++) {
		if (strcmp(w->mkeys[i], key) == 0) {
			char *v = cloq_strdup(value);
			if (!v)
				return cloq_err_set(err, CLOQ_EIO, "%s: out of memory", fn);
			cloq_free(w->mvals[i]);
			w->mvals[i] = v;
			return CLOQ_OK;
		}
	}
	char **nk = cloq_realloc(w->mkeys, (w->nmeta + 1) * sizeof *nk);
	if (!nk)
		return cloq_err_set(err, CLOQ_EIO, "%s: out of memory", fn);
	w->mkeys = nk;
	char **nv = cloq_realloc(w->mvals, (w->nmeta + 1) * sizeof *nv);
	if (!nv)
		return cloq_err_set(err, CLOQ_EIO, "%s: out of memory", fn);
	w->mvals = nv;
	char *k = cloq_strdup(key), *v = k ? cloq_strdup(value) : NULL;
	if (!v) {
		cloq_free(k);
		return cloq_err_set(err, CLOQ_EIO, "%s: out of memory", fn);
	}
	w->mkeys[w->nmeta] = k;
	w->mvals[w->nmeta++] = v;
	return CLOQ_OK;
}

int cloq_st_writer_begin(cloq_st_writer *w, cloq_err *err)
{
	int rc = CLOQ_OK;
	struct sbuf s = { 0 };
	const char *fn = w->f.path ? w->f.path : "safetensors writer";
	CLOQ_FAIL_IF(w->state != W_DECLARE, err, CLOQ_EINPUT, "%s: header already written", fn);
	sb_put(&s, "        ", 8); /* room for the length */
	sb_str(&s, "{\"__metadata__\":{\"format\":");
	const char *format = "pt";
	for (size_t i = 0; i < w->nmeta; i++)
		if (strcmp(w->mkeys[i], "format") == 0)
			format = w->mvals[i];
	sb_json_string(&s, format);
	for (size_t i = 0; i < w->nmeta; i++) {
		if (strcmp(w->mkeys[i], "format") == 0)
			continue;
		sb_str(&s, ",");
		sb_json_string(&s, w->mkeys[i]);
		sb_str(&s, ":");
		sb_json_string(&s, w->mvals[i]);
	}
	sb_str(&s, "}");
	for (size_t i = 0; i < w->n; i++) {
		const struct wtensor *t = &w->t[i];
		sb_str(&s, ",");
		sb_json_string(&s, t->name);
		sb_str(&s, ":{\"dtype\":\"");
		sb_str(&s, cloq_dtype_name(t->dtype));
		sb_str(&s, "\",\"shape\":[");
		for (int d = 0; d < t->ndim; d++) {
			if (d)
				sb_str(&s, ",");
			sb_u64(&s, (uint64_t)t->shape[d]);
		}
		sb_str(&s, "],\"data_offsets\":[");
		sb_u64(&s, t->begin);
		sb_str(&s, ",");
		sb_u64(&s, t->begin + t->nbytes);
		sb_str(&s, "]}");
	}
	sb_str(&s, "}");
	while (!s.oom && s.n % 8 != 0)
		sb_str(&s, " "); /* data starts 8-byte aligned, as the spec recommends */
	CLOQ_FAIL_IF(s.oom, err, CLOQ_EIO, "%s: out of memory building the header", fn);
	CLOQ_FAIL_IF(s.n - 8 > CLOQ_ST_MAX_HEADER, err, CLOQ_EINPUT,
		     "%s: header of %zu bytes exceeds the limit", fn, s.n - 8);
	put_le64((uint8_t *)s.p, s.n - 8);
	rc = cloq_atomic_write(&w->f, s.p, s.n, err);
	if (rc) {
		w->state = W_FAILED;
		goto fail;
	}
	w->data_off = s.n;
	w->state = W_WRITING;
	w->cur = 0;
	w->cur_done = 0;
fail:
	cloq_free(s.p);
	return rc;
}

int cloq_st_writer_write(cloq_st_writer *w, size_t index, const void *data, size_t nbytes,
			 cloq_err *err)
{
	const char *fn = w->f.path ? w->f.path : "safetensors writer";
	if (w->state != W_WRITING)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: write %s", fn,
				    w->state == W_DECLARE ? "before begin" : "after commit or failure");
	if (index >= w->n)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: write to tensor #%zu of %zu", fn, index, w->n);
	/* move past completed tensors up to the one addressed */
	while (w->cur < index && w->cur_done == w->t[w->cur].nbytes) {
		w->cur++;
		w->cur_done = 0;
	}
	if (w->cur != index)
		return cloq_err_set(err, CLOQ_EINPUT,
				    "%s: tensor '%s' written out of order (tensor '%s' has %llu of %llu bytes)",
				    fn, w->t[index].name, w->t[w->cur].name,
				    (unsigned long long)w->cur_done,
				    (unsigned long long)w->t[w->cur].nbytes);
	struct wtensor *t = &w->t[index];
	if (nbytes > t->nbytes - w->cur_done)
		return cloq_err_set(err, CLOQ_EINPUT,
				    "%s: tensor '%s': %zu bytes written past its end (%llu of %llu written, offset %llu)",
				    fn, t->name, nbytes, (unsigned long long)w->cur_done,
				    (unsigned long long)t->nbytes,
				    (unsigned long long)(w->data_off + t->begin + w->cur_done));
	if (nbytes == 0)
		return CLOQ_OK;
	int rc = cloq_atomic_write(&w->f, data, nbytes, err);
	if (rc) {
		w->state = W_FAILED;
		return cloq_err_wrap(err, rc, "tensor '%s'", t->name);
	}
	w->cur_done += nbytes;
	return CLOQ_OK;
}

int cloq_st_writer_write_named(cloq_st_writer *w, const char *name, const void *data,
			       size_t nbytes, cloq_err *err)
{
	/* search from the current tensor on: the usual case is O(1) */
	for (size_t i = w->cur; i < w->n; i++)
		if (strcmp(w->t[i].name, name) == 0)
			return cloq_st_writer_write(w, i, data, nbytes, err);
	for (size_t i = 0; i < w->cur && i < w->n; i++)
		if (strcmp(w->t[i].name, name) == 0)
			return cloq_st_writer_write(w, i, data, nbytes, err);
	return cloq_err_set(err, CLOQ_EINPUT, "%s: tensor '%s' was not declared",
			    w->f.path ? w->f.path : "safetensors writer", name);
}

int cloq_st_writer_commit(cloq_st_writer *w, cloq_err *err)
{
	const char *fn = w->f.path ? w->f.path : "safetensors writer";
	if (w->state == W_DECLARE) {
		int rc = cloq_st_writer_begin(w, err);
		if (rc)
			return rc;
	}
	if (w->state != W_WRITING)
		return cloq_err_set(err, CLOQ_EINPUT, "%s: commit after commit or failure", fn);
	for (size_t i = w->cur; i < w->n; i++) {
		uint64_t done = i == w->cur ? w->cur_done : 0;
		if (done != w->t[i].nbytes)
			return cloq_err_set(err, CLOQ_EINPUT,
					    "%s: tensor '%s' incomplete: %llu of %llu bytes written (offset %llu)",
					    fn, w->t[i].name, (unsigned long long)done,
					    (unsigned long long)w->t[i].nbytes,
					    (unsigned long long)(w->data_off + w->t[i].begin + done));
	}
	int rc = cloq_atomic_commit(&w->f, err);
	w->state = rc ? W_FAILED : W_DONE;
	return rc;
}

void cloq_st_writer_free(cloq_st_writer *w)
{
	if (!w)
		return;
	cloq_atomic_abort(&w->f); /* no-op after a successful commit */
	for (size_t i = 0; i < w->n; i++)
		cloq_free(w->t[i].name);
	cloq_free(w->t);
	for (size_t i = 0; i < w->nmeta; i++) {
		cloq_free(w->mkeys[i]);
		cloq_free(w->mvals[i]);
	}
	cloq_free(w->mkeys);
	cloq_free(w->mvals);
	cloq_free(w);
}
