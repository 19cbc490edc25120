/*
 * cloq_tokenizer.c - Hugging Face tokenizer.json BPE encoder (see cloq_tokenizer.h).
 *
 * Layout: UTF-8 helpers, growable buffers, the two hash tables (string -> id, id pair -> merge),
 * regex wrapper, normalizers, pre-tokenizers, BPE, added-token splitting, loading, encoding.
 *
 * Everything the model sees is UTF-8: sentencepiece-style files work on "▁"-joined text and
 * byte-level files on the GPT-2 byte-to-unicode alphabet, so one BPE over code points serves
 * both. Merges are keyed by (left id, right id) as in the Rust library, so byte-fallback pieces
 * and ordinary pieces go through the same loop.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "cloq_tokenizer.h"

#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "cloq_sys.h"
#include "cloq_tokenizer_internal.h"

/* ================================================================================================
 * UTF-8
 * ============================================================================================== */

/* Length of the UTF-8 sequence starting with lead byte c (input already validated). */
static inline size_t u8_len(unsigned char c)
{
	return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

static uint32_t u8_decode(const unsigned char *s, size_t *n)
{
	unsigned char c = s[0];
	if (c < 0x80) {
		*n = 1;
		return c;
	}
	if (c < 0xE0) {
		*n = 2;
		return ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F);
	}
	if (c < 0xF0) {
		*n = 3;
		return ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
	}
	*n = 4;
	return ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
	       ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

static size_t u8_encode(uint32_t cp, char *out)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xC0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xE0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		out[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char)(0xF0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	out[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

/* Returns len when s is valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF),
 * else the byte offset of the first bad sequence. */
static size_t u8_validate(const unsigned char *s, size_t len)
{
	size_t i = 0;
	while (i < len) {
		unsigned char c = s[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t n;
		uint32_t min;
		if (c >= 0xC2 && c <= 0xDF) {
			n = 2;
			min = 0x80;
		} else if (c >= 0xE0 && c <= 0xEF) {
			n = 3;
			min = 0x800;
		} else if (c >= 0xF0 && c <= 0xF4) {
			n = 4;
			min = 0x10000;
		} else {
			return i;
		}
		if (len - i < n)
			return i;
		for (size_t k = 1; k < n; k++)
			if ((s[i + k] & 0xC0) != 0x80)
				return i;
		size_t m;
		uint32_t cp = u8_decode(s + i, &m);
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return i;
		i += n;
	}
	return len;
}

/* Unicode White_Space, the definition of Rust's char::is_whitespace (used by lstrip / rstrip of
 * added tokens and the Strip normalizer). */
static int u_is_space(uint32_t c)
{
	return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
	       (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
	       c == 0x205F || c == 0x3000;
}

/* Start of the character that ends just before s + i (i > 0). */
static size_t u8_prev(const char *s, size_t i)
{
	do
		i--;
	while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80);
	return i;
}

/* ================================================================================================
 * Growable buffers
 * ============================================================================================== */

struct tok_buf {
	char *p;
	size_t len, cap;
};

struct tok_ids {
	int32_t *p;
	size_t n, cap;
};

/* Grow `*p` (elements of `size` bytes, capacity *cap) to hold at least `need`. 0 ok, -1 OOM. */
static int grow(void **p, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return 0;
	size_t nc = *cap ? *cap : 16;
	while (nc < need) {
		if (nc > SIZE_MAX / 2)
			return -1;
		nc *= 2;
	}
	size_t bytes;
	if (!cloq_mul_ok(nc, size, &bytes))
		return -1;
	void *q = cloq_realloc(*p, bytes);
	if (!q)
		return -1;
	*p = q;
	*cap = nc;
	return 0;
}

static int buf_put(struct tok_buf *b, const void *s, size_t n)
{
	if (b->len + n < b->len || grow((void **)&b->p, &b->cap, b->len + n + 1, 1))
		return -1;
	if (n)
		memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static int ids_put(struct tok_ids *v, const int32_t *ids, size_t n)
{
	if (grow((void **)&v->p, &v->cap, v->n + n, sizeof *v->p))
		return -1;
	if (n)
		memcpy(v->p + v->n, ids, n * sizeof *ids);
	v->n += n;
	return 0;
}

/* ================================================================================================
 * String -> int32 hash map (open addressing, linear probing, keys copied into one arena)
 * ============================================================================================== */

struct tok_sent {
	uint64_t h;
	size_t off;   /* key bytes in keys.p */
	uint32_t len;
	int32_t val;
};

struct tok_smap {
	uint32_t *slot; /* entry index + 1; 0 = empty; mask + 1 slots */
	size_t mask;
	struct tok_sent *ent;
	size_t n, cap;
	struct tok_buf keys;
};

static void smap_free(struct tok_smap *m)
{
	cloq_free(m->slot);
	cloq_free(m->ent);
	cloq_free(m->keys.p);
	memset(m, 0, sizeof *m);
}

static inline uint64_t str_hash(const void *s, size_t n)
{
	return XXH3_64bits(s, n);
}

static int32_t smap_get(const struct tok_smap *m, const void *key, size_t len)
{
	if (!m->slot)
		return -1;
	uint64_t h = str_hash(key, len);
	for (size_t i = (size_t)h & m->mask;; i = (i + 1) & m->mask) {
		uint32_t s = m->slot[i];
		if (!s)
			return -1;
		const struct tok_sent *e = &m->ent[s - 1];
		if (e->h == h && e->len == len && !memcmp(m->keys.p + e->off, key, len))
			return e->val;
	}
}

static int smap_rehash(struct tok_smap *m, size_t nslots)
{
	uint32_t *slot = cloq_calloc(nslots, sizeof *slot);
	if (!slot)
		return -1;
	size_t mask = nslots - 1;
	for (size_t k = 0; k < m->n; k++) {
		size_t i = (size_t)m->ent[k].h & mask;
		while (slot[i])
			i = (i + 1) & mask;
		slot[i] = (uint32_t)(k + 1);
	}
	cloq_free(m->slot);
	m->slot = slot;
	m->mask = mask;
	return 0;
}

/* Insert or overwrite (the last value given for a key wins, as in the HF library's maps). */
static int smap_put(struct tok_smap *m, const void *key, size_t len, int32_t val)
{
	if (len > UINT32_MAX || m->n >= UINT32_MAX - 1)
		return -1;
	if (!m->slot || (m->n + 1) * 2 > m->mask + 1)
		if (smap_rehash(m, m->slot ? (m->mask + 1) * 2 : 64))
			return -1;
	uint64_t h = str_hash(key, len);
	size_t i = (size_t)h & m->mask;
	for (;; i = (i + 1) & m->mask) {
		uint32_t s = m->slot[i];
		if (!s)
			break;
		struct tok_sent *e = &m->ent[s - 1];
		if (e->h == h && e->len == len && !memcmp(m->keys.p + e->off, key, len)) {
			e->val = val;
			return 0;
		}
	}
	if (grow((void **)&m->ent, &m->cap, m->n + 1, sizeof *m->ent))
		return -1;
	size_t off = m->keys.len;
	if (buf_put(&m->keys, key, len))
		return -1;
	m->ent[m->n] = (struct tok_sent){.h = h, .off = off, .len = (uint32_t)len, .val = val};
	m->slot[i] = (uint32_t)(++m->n);
	return 0;
}

/* ================================================================================================
 * (left id, right id) -> (rank, merged id) hash map
 * ============================================================================================== */

struct tok_mslot {
	uint64_t key; /* UINT64_MAX = empty */
	uint32_t rank;
	int32_t id;
};

struct tok_mmap {
	struct tok_mslot *s;
	size_t mask, n;
};

static inline uint64_t pair_key(int32_t a, int32_t b)
{
	return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

static inline size_t pair_slot(uint64_t key, size_t mask)
{
	return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 29) & mask;
}

static int mmap_init(struct tok_mmap *m, size_t count)
{
	size_t n = 64;
	while (n < count * 2 + 1) {
		if (n > SIZE_MAX / 4)
			return -1;
		n *= 2;
	}
	m->s = cloq_malloc(n * sizeof *m->s);
	if (!m->s)
		return -1;
	for (size_t i = 0; i < n; i++)
		m->s[i].key = UINT64_MAX;
	m->mask = n - 1;
	m->n = 0;
	return 0;
}

static inline const struct tok_mslot *mmap_get(const struct tok_mmap *m, int32_t a, int32_t b)
{
	uint64_t key = pair_key(a, b);
	for (size_t i = pair_slot(key, m->mask);; i = (i + 1) & m->mask) {
		const struct tok_mslot *s = &m->s[i];
		if (s->key == key)
			return s;
		if (s->key == UINT64_MAX)
			return NULL;
	}
}

/* The table was sized for every merge at init, so it never fills. Later duplicates overwrite. */
static void mmap_put(struct tok_mmap *m, int32_t a, int32_t b, uint32_t rank, int32_t id)
{
	uint64_t key = pair_key(a, b);
	size_t i = pair_slot(key, m->mask);
	while (m->s[i].key != UINT64_MAX && m->s[i].key != key)
		i = (i + 1) & m->mask;
	if (m->s[i].key == UINT64_MAX)
		m->n++;
	m->s[i] = (struct tok_mslot){.key = key, .rank = rank, .id = id};
}

/* ================================================================================================
 * Regex (PCRE2, UTF + UCP, JIT when the library has it)
 * ============================================================================================== */

struct tok_re {
	pcre2_code *code;
};

static int re_compile(struct tok_re *re, const char *pat, size_t len, const char *path,
		      const char *where, cloq_err *err)
{
	int ec;
	PCRE2_SIZE eoff;
	re->code = pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | PCRE2_UCP, &ec, &eoff, NULL);
	if (!re->code) {
		PCRE2_UCHAR msg[160];
		pcre2_get_error_message(ec, msg, sizeof msg);
		return cloq_err_set(err, CLOQ_EINPUT, "%s: %s: regex does not compile at offset %zu: %s",
				    path, where, (size_t)eoff, (char *)msg);
	}
	/* JIT is an optimisation only: without it (no JIT support, or no executable memory in a
	 * hardened container) the interpreter gives the same matches. */
	(void)pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE);
	return CLOQ_OK;
}

/* A literal string as a PCRE2 pattern: every ASCII punctuation byte escaped (in PCRE2 a backslash
 * before a non-alphanumeric ASCII character always means the character itself). */
static int re_compile_literal(struct tok_re *re, const char *s, size_t len, const char *path,
			      const char *where, cloq_err *err)
{
	struct tok_buf b = {0};
	int rc = CLOQ_OK;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		int esc = c < 0x80 && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
					(c >= 'A' && c <= 'Z'));
		if (c == 0) {
			CLOQ_FAIL_IF(buf_put(&b, "\\x{0}", 5), err, CLOQ_EIO, "out of memory");
			continue;
		}
		CLOQ_FAIL_IF((esc && buf_put(&b, "\\", 1)) || buf_put(&b, s + i, 1), err, CLOQ_EIO,
			     "out of memory");
	}
	rc = re_compile(re, b.p ? b.p : "", b.len, path, where, err);
fail:
	cloq_free(b.p);
	return rc;
}

static void re_free(struct tok_re *re)
{
	pcre2_code_free(re->code);
	re->code = NULL;
}

/* ================================================================================================
 * The tokenizer
 * ============================================================================================== */

enum norm_kind { NORM_PREPEND, NORM_REPLACE_STR, NORM_REPLACE_RE, NORM_STRIP, NORM_NFC };

struct tok_norm {
	int kind;
	char *a;          /* Prepend: the prefix; Replace: the pattern (String) */
	size_t alen;
	char *b;          /* Replace: the content */
	size_t blen;
	struct tok_re re; /* Replace with a Regex pattern */
	int left, right;  /* Strip */
};

enum pre_kind { PRE_SPLIT, PRE_BYTELEVEL, PRE_METASPACE };
enum split_behavior { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS };
enum prepend_scheme { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };

struct tok_pre {
	int kind;
	struct tok_re re;     /* Split pattern */
	int behavior, invert; /* Split */
	int add_prefix_space, use_regex; /* ByteLevel */
	char rep[8];          /* Metaspace replacement (one character, UTF-8) */
	size_t replen;
	int scheme, split;    /* Metaspace */
};

struct tok_added {
	char *s;
	size_t len;
	int32_t id;
	int special, lstrip, rstrip, single_word;
};

struct cloq_tokenizer {
	char *path; /* DIR/tokenizer.json, for messages */

	/* model: BPE */
	struct tok_smap vocab;
	struct tok_mmap merges;
	int32_t ascii_id[128];  /* vocab id of each one-byte character, -1 when absent */
	int32_t byte_id[256];   /* <0xNN> ids for byte fallback, -1 when absent */
	int byte_fallback, fuse_unk, ignore_merges;
	/* Every merge result holds "▁" only in a leading run, and no merge takes a byte-fallback or
	 * unk piece: then no token can span a "▁" that follows another character, and a long
	 * sentencepiece word may be encoded piecewise, cut before each such "▁" (exactly the same
	 * ids, much faster, and the pieces repeat so the word cache works). */
	int meta_split;
	int32_t unk_id;         /* -1: none */

	struct tok_norm *norm;
	size_t nnorm;
	struct tok_pre *pre;
	size_t npre;
	struct tok_re gpt2;     /* ByteLevel use_regex pattern, compiled when needed */
	char byte_char[256][3]; /* ByteLevel byte -> UTF-8 of its stand-in character */
	uint8_t byte_char_len[256];

	struct tok_added *added;
	size_t nadded;
	uint32_t *added_order;  /* added tokens sorted by first byte, then longest first */
	uint32_t added_first[257];
	struct tok_re word_re;  /* \w, for single_word added tokens */

	int32_t *prefix, *suffix; /* post-processor: ids before and after the text */
	size_t nprefix, nsuffix;

	size_t vocab_size;
	int32_t bos_id, eos_id;
};

/* ================================================================================================
 * Encoding context: per call scratch, so a loaded tokenizer stays immutable
 * ============================================================================================== */

struct tok_piece {
	size_t off, len;
	int at_start; /* begins at offset 0 of the original text (Metaspace prepend_scheme "first") */
};

struct tok_plist {
	struct tok_buf text;
	struct tok_piece *p;
	size_t n, cap;
};

struct tok_seg {
	size_t a, b;
	int m;
};

struct tok_sym {
	int32_t id; /* -1: merged into its left neighbour */
	int32_t prev, next;
};

struct tok_heap_ent {
	uint64_t key; /* rank << 32 | position of the left symbol: lowest rank, then leftmost */
	int32_t id;
};

struct tok_cent {
	size_t off;
	size_t n;
};

#define TOK_CACHE_MAX_KEY 64
#define TOK_CACHE_MAX_ENTRIES (1u << 18)

struct tok_ctx {
	const cloq_tokenizer *t;
	unsigned flags;
	cloq_err *err;
	struct tok_ids out;
	struct tok_buf nb[2];
	struct tok_plist pl[2];
	struct tok_seg *seg;
	size_t nseg, segcap;
	struct tok_sym *sym;
	size_t symcap;
	struct tok_heap_ent *heap;
	size_t heapcap;
	pcre2_match_data *md;
	pcre2_match_context *mc;
	pcre2_jit_stack *js;
	struct tok_smap cache;      /* word -> index into cent */
	struct tok_cent *cent;
	size_t ncent, centcap;
	struct tok_ids cache_ids;
};

static int oom(struct tok_ctx *c)
{
	return cloq_err_set(c->err, CLOQ_EIO, "tokenizer: out of memory");
}

/* ---- regex matching -------------------------------------------------------------------------- */

/* Split s[0, len) into segments (a, b, is_match) that cover it, from the matches of re, as the HF
 * library's NormalizedString::split does (an empty match still marks a boundary). */
static int re_segments(struct tok_ctx *c, const struct tok_re *re, const char *s, size_t len)
{
	c->nseg = 0;
	size_t prev = 0, start = 0;
	while (start <= len) {
		int r = pcre2_match(re->code, (PCRE2_SPTR)s, len, start, PCRE2_NO_UTF_CHECK, c->md, c->mc);
		if (r == PCRE2_ERROR_NOMATCH)
			break;
		if (r < 0) {
			PCRE2_UCHAR msg[160];
			pcre2_get_error_message(r, msg, sizeof msg);
			return cloq_err_set(c->err, CLOQ_EINPUT, "%s: pre-tokenizer regex failed: %s",
					    c->t->path, (char *)msg);
		}
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
		size_t ms = ov[0], me = ov[1];
		if (grow((void **)&c->seg, &c->segcap, c->nseg + 2, sizeof *c->seg))
			return oom(c);
		if (ms > prev)
			c->seg[c->nseg++] = (struct tok_seg){prev, ms, 0};
		c->seg[c->nseg++] = (struct tok_seg){ms, me, 1};
		prev = me;
		if (me == ms) {
			if (me >= len)
				break;
			start = me + u8_len((unsigned char)s[me]);
		} else {
			start = me;
		}
	}
	if (prev < len) {
		if (grow((void **)&c->seg, &c->segcap, c->nseg + 1, sizeof *c->seg))
			return oom(c);
		c->seg[c->nseg++] = (struct tok_seg){prev, len, 0};
	}
	return CLOQ_OK;
}

/* ---- piece lists ----------------------------------------------------------------------------- */

static int pl_add(struct tok_plist *l, const char *s, size_t len, int at_start)
{
	if (grow((void **)&l->p, &l->cap, l->n + 1, sizeof *l->p))
		return -1;
	size_t off = l->text.len;
	if (buf_put(&l->text, s, len))
		return -1;
	l->p[l->n++] = (struct tok_piece){off, len, at_start};
	return 0;
}

/* Apply a split behaviour to the segments in c->seg and emit the non-empty pieces of s. */
static int emit_split(struct tok_ctx *c, struct tok_plist *dst, const char *s, int behavior,
		      int invert, int at_start)
{
	struct tok_seg *g = c->seg;
	size_t n = c->nseg, k = 0; /* pieces are rewritten in place into g[0..k) */
	int prev_match = 0;
	if (invert)
		for (size_t i = 0; i < n; i++)
			g[i].m = !g[i].m;
	switch (behavior) {
	case SPLIT_REMOVED:
		for (size_t i = 0; i < n; i++)
			if (!g[i].m)
				g[k++] = g[i];
		break;
	case SPLIT_ISOLATED:
		k = n;
		break;
	case SPLIT_MERGED_PREV:
		for (size_t i = 0; i < n; i++) {
			if (g[i].m && !prev_match && k > 0)
				g[k - 1].b = g[i].b;
			else
				g[k++] = g[i];
			prev_match = g[i].m;
		}
		break;
	case SPLIT_MERGED_NEXT: {
		/* Mirror image of MergedWithPrevious: walk from the right, pieces land at the top. */
		size_t top = n;
		for (size_t i = n; i-- > 0;) {
			struct tok_seg cur = g[i];
			if (cur.m && !prev_match && top < n)
				g[top].a = cur.a;
			else
				g[--top] = cur;
			prev_match = cur.m;
		}
		memmove(g, g + top, (n - top) * sizeof *g);
		k = n - top;
		break;
	}
	case SPLIT_CONTIGUOUS:
		for (size_t i = 0; i < n; i++) {
			int m = g[i].m;
			if (m == prev_match && k > 0)
				g[k - 1].b = g[i].b;
			else
				g[k++] = g[i];
			prev_match = m;
		}
		break;
	}
	for (size_t i = 0; i < k; i++)
		if (g[i].b > g[i].a && pl_add(dst, s + g[i].a, g[i].b - g[i].a, at_start && g[i].a == 0))
			return oom(c);
	return CLOQ_OK;
}

/* ---- normalizers ----------------------------------------------------------------------------- */

static int norm_apply(struct tok_ctx *c, const struct tok_norm *nm, const char *s, size_t len,
		      struct tok_buf *o)
{
	o->len = 0;
	switch (nm->kind) {
	case NORM_PREPEND:
		if (len && buf_put(o, nm->a, nm->alen))
			return oom(c);
		if (buf_put(o, s, len))
			return oom(c);
		return CLOQ_OK;
	case NORM_REPLACE_STR: {
		size_t i = 0, from = 0;
		while (i + nm->alen <= len) {
			if (!memcmp(s + i, nm->a, nm->alen)) {
				if (buf_put(o, s + from, i - from) || buf_put(o, nm->b, nm->blen))
					return oom(c);
				i += nm->alen;
				from = i;
			} else {
				i++;
			}
		}
		if (buf_put(o, s + from, len - from))
			return oom(c);
		return CLOQ_OK;
	}
	case NORM_REPLACE_RE: {
		int rc = re_segments(c, &nm->re, s, len);
		if (rc)
			return rc;
		for (size_t i = 0; i < c->nseg; i++) {
			const struct tok_seg *g = &c->seg[i];
			if (g->m ? buf_put(o, nm->b, nm->blen) : buf_put(o, s + g->a, g->b - g->a))
				return oom(c);
		}
		if (buf_put(o, "", 0))
			return oom(c);
		return CLOQ_OK;
	}
	case NORM_STRIP: {
		size_t a = 0, b = len, n;
		while (nm->left && a < b && u_is_space(u8_decode((const unsigned char *)s + a, &n)))
			a += n;
		while (nm->right && b > a) {
			size_t p = u8_prev(s, b);
			if (!u_is_space(u8_decode((const unsigned char *)s + p, &n)))
				break;
			b = p;
		}
		if (buf_put(o, s + a, b - a))
			return oom(c);
		return CLOQ_OK;
	}
	case NORM_NFC:
		if (cloq_tok_nfc(s, len, &o->p, &o->cap, &o->len))
			return oom(c);
		return CLOQ_OK;
	}
	return CLOQ_OK;
}

/* ---- pre-tokenizers -------------------------------------------------------------------------- */

static int pre_bytelevel_map(struct tok_ctx *c, struct tok_plist *dst, const char *s, size_t len,
			     int at_start)
{
	const cloq_tokenizer *t = c->t;
	if (grow((void **)&dst->p, &dst->cap, dst->n + 1, sizeof *dst->p) ||
	    grow((void **)&dst->text.p, &dst->text.cap, dst->text.len + 2 * len + 1, 1))
		return oom(c);
	size_t off = dst->text.len;
	char *o = dst->text.p + off;
	for (size_t i = 0; i < len; i++) {
		unsigned char b = (unsigned char)s[i];
		memcpy(o, t->byte_char[b], t->byte_char_len[b]);
		o += t->byte_char_len[b];
	}
	size_t n = (size_t)(o - (dst->text.p + off));
	dst->text.len += n;
	dst->text.p[dst->text.len] = '\0';
	dst->p[dst->n++] = (struct tok_piece){off, n, at_start};
	return CLOQ_OK;
}

static int pre_apply(struct tok_ctx *c, const struct tok_pre *pr, const char *s, size_t len,
		     int at_start, struct tok_plist *dst)
{
	int rc = CLOQ_OK;
	switch (pr->kind) {
	case PRE_SPLIT:
		rc = re_segments(c, &pr->re, s, len);
		if (!rc)
			rc = emit_split(c, dst, s, pr->behavior, pr->invert, at_start);
		return rc;
	case PRE_BYTELEVEL: {
		struct tok_buf *tmp = &c->nb[0]; /* free while pre-tokenizing */
		if (pr->add_prefix_space && (len == 0 || s[0] != ' ')) {
			tmp->len = 0;
			if (buf_put(tmp, " ", 1) || buf_put(tmp, s, len))
				return oom(c);
			s = tmp->p;
			len = tmp->len;
		}
		if (!pr->use_regex)
			return pre_bytelevel_map(c, dst, s, len, at_start);
		rc = re_segments(c, &c->t->gpt2, s, len);
		for (size_t i = 0; !rc && i < c->nseg; i++)
			if (c->seg[i].b > c->seg[i].a)
				rc = pre_bytelevel_map(c, dst, s + c->seg[i].a, c->seg[i].b - c->seg[i].a,
						       at_start && c->seg[i].a == 0);
		return rc;
	}
	case PRE_METASPACE: {
		struct tok_buf *tmp = &c->nb[0];
		tmp->len = 0;
		int prepend = pr->scheme == PREPEND_ALWAYS || (pr->scheme == PREPEND_FIRST && at_start);
		if (prepend && !(len >= pr->replen && !memcmp(s, pr->rep, pr->replen)))
			if (buf_put(tmp, pr->rep, pr->replen))
				return oom(c);
		size_t from = 0;
		for (size_t i = 0; i < len; i++)
			if (s[i] == ' ') {
				if (buf_put(tmp, s + from, i - from) || buf_put(tmp, pr->rep, pr->replen))
					return oom(c);
				from = i + 1;
			}
		if (buf_put(tmp, s + from, len - from))
			return oom(c);
		if (!pr->split) {
			if (tmp->len && pl_add(dst, tmp->p, tmp->len, at_start))
				return oom(c);
			return CLOQ_OK;
		}
		/* Split on each replacement character, each one starting the next piece. */
		c->nseg = 0;
		size_t prev = 0;
		for (size_t i = 0; i + pr->replen <= tmp->len;) {
			if (!memcmp(tmp->p + i, pr->rep, pr->replen)) {
				if (grow((void **)&c->seg, &c->segcap, c->nseg + 2, sizeof *c->seg))
					return oom(c);
				if (i > prev)
					c->seg[c->nseg++] = (struct tok_seg){prev, i, 0};
				c->seg[c->nseg++] = (struct tok_seg){i, i + pr->replen, 1};
				i += pr->replen;
				prev = i;
			} else {
				i++;
			}
		}
		if (prev < tmp->len) {
			if (grow((void **)&c->seg, &c->segcap, c->nseg + 1, sizeof *c->seg))
				return oom(c);
			c->seg[c->nseg++] = (struct tok_seg){prev, tmp->len, 0};
		}
		return emit_split(c, dst, tmp->p, SPLIT_MERGED_NEXT, 0, at_start);
	}
	}
	return rc;
}

/* ---- BPE ------------------------------------------------------------------------------------- */

static void heap_push(struct tok_heap_ent *h, size_t *n, struct tok_heap_ent e)
{
	size_t i = (*n)++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (h[p].key <= e.key)
			break;
		h[i] = h[p];
		i = p;
	}
	h[i] = e;
}

static void heap_sift_down(struct tok_heap_ent *h, size_t n, size_t i)
{
	struct tok_heap_ent e = h[i];
	for (;;) {
		size_t l = 2 * i + 1;
		if (l >= n)
			break;
		size_t m = (l + 1 < n && h[l + 1].key < h[l].key) ? l + 1 : l;
		if (h[m].key >= e.key)
			break;
		h[i] = h[m];
		i = m;
	}
	h[i] = e;
}

static int bpe_chunk(struct tok_ctx *c, const char *s, size_t len)
{
	const cloq_tokenizer *t = c->t;
	int cacheable = len <= TOK_CACHE_MAX_KEY;
	if (cacheable) {
		int32_t k = smap_get(&c->cache, s, len);
		if (k >= 0)
			return ids_put(&c->out, c->cache_ids.p + c->cent[k].off, c->cent[k].n) ? oom(c)
											    : CLOQ_OK;
	}

	/* Initial symbols: one per character, or its <0xNN> bytes, or (fused) unk. */
	if (len > INT32_MAX / 2)
		return cloq_err_set(c->err, CLOQ_EINPUT, "tokenizer: a word of %zu bytes is too long", len);
	if (grow((void **)&c->sym, &c->symcap, len, sizeof *c->sym))
		return oom(c);
	struct tok_sym *sym = c->sym;
	int32_t n = 0;
	int unk_pending = 0;
	for (size_t i = 0; i < len;) {
		unsigned char ch = (unsigned char)s[i];
		size_t cl = u8_len(ch);
		int32_t id = ch < 0x80 ? t->ascii_id[ch] : smap_get(&t->vocab, s + i, cl);
		if (id >= 0) {
			if (unk_pending) {
				sym[n++].id = t->unk_id;
				unk_pending = 0;
			}
			sym[n++].id = id;
		} else {
			int fell_back = 0;
			if (t->byte_fallback) {
				fell_back = 1;
				for (size_t k = 0; k < cl; k++)
					if (t->byte_id[(unsigned char)s[i + k]] < 0)
						fell_back = 0;
				if (fell_back) {
					if (unk_pending) {
						sym[n++].id = t->unk_id;
						unk_pending = 0;
					}
					for (size_t k = 0; k < cl; k++)
						sym[n++].id = t->byte_id[(unsigned char)s[i + k]];
				}
			}
			if (!fell_back) {
				if (t->unk_id < 0) {
					size_t m;
					return cloq_err_set(c->err, CLOQ_EINPUT,
							    "%s: character U+%04X has no token and the model has no unk_token in its vocabulary",
							    t->path, (unsigned)u8_decode((const unsigned char *)s + i, &m));
				}
				if (unk_pending && !t->fuse_unk)
					sym[n++].id = t->unk_id;
				unk_pending = 1;
			}
		}
		i += cl;
	}
	if (unk_pending)
		sym[n++].id = t->unk_id;
	for (int32_t i = 0; i < n; i++) {
		sym[i].prev = i - 1;
		sym[i].next = i + 1 < n ? i + 1 : -1;
	}

	/* Merge the lowest-ranked adjacent pair first (leftmost on ties), re-queueing the two new
	 * pairs each merge makes; stale queue entries are recognised and dropped when popped. */
	if (n >= 2 && t->merges.n) {
		if (grow((void **)&c->heap, &c->heapcap, (size_t)n * 2, sizeof *c->heap))
			return oom(c);
		struct tok_heap_ent *h = c->heap;
		size_t hn = 0;
		for (int32_t i = 0; i + 1 < n; i++) {
			const struct tok_mslot *m = mmap_get(&t->merges, sym[i].id, sym[i + 1].id);
			if (m)
				h[hn++] = (struct tok_heap_ent){((uint64_t)m->rank << 32) | (uint32_t)i, m->id};
		}
		for (size_t i = hn / 2; i-- > 0;)
			heap_sift_down(h, hn, i);
		while (hn) {
			struct tok_heap_ent top = h[0];
			h[0] = h[--hn];
			if (hn)
				heap_sift_down(h, hn, 0);
			int32_t pos = (int32_t)(uint32_t)top.key;
			if (sym[pos].id < 0)
				continue;
			int32_t nx = sym[pos].next;
			if (nx < 0)
				continue;
			const struct tok_mslot *m = mmap_get(&t->merges, sym[pos].id, sym[nx].id);
			if (!m || m->id != top.id)
				continue;
			sym[pos].id = top.id;
			sym[nx].id = -1;
			sym[pos].next = sym[nx].next;
			if (sym[pos].next >= 0)
				sym[sym[pos].next].prev = pos;
			/* At most two pushes per pop after n - 1 initial entries: 2n slots suffice. */
			int32_t pv = sym[pos].prev;
			if (pv >= 0 && (m = mmap_get(&t->merges, sym[pv].id, sym[pos].id)))
				heap_push(h, &hn, (struct tok_heap_ent){((uint64_t)m->rank << 32) | (uint32_t)pv, m->id});
			nx = sym[pos].next;
			if (nx >= 0 && (m = mmap_get(&t->merges, sym[pos].id, sym[nx].id)))
				heap_push(h, &hn, (struct tok_heap_ent){((uint64_t)m->rank << 32) | (uint32_t)pos, m->id});
		}
	}

	size_t first = c->out.n;
	for (int32_t i = 0; i >= 0 && i < n; i = sym[i].next)
		if (ids_put(&c->out, &sym[i].id, 1))
			return oom(c);
	if (cacheable && c->ncent < TOK_CACHE_MAX_ENTRIES) {
		size_t cnt = c->out.n - first;
		if (grow((void **)&c->cent, &c->centcap, c->ncent + 1, sizeof *c->cent))
			return oom(c);
		c->cent[c->ncent] = (struct tok_cent){c->cache_ids.n, cnt};
		if (ids_put(&c->cache_ids, c->out.p + first, cnt) ||
		    smap_put(&c->cache, s, len, (int32_t)c->ncent))
			return oom(c);
		c->ncent++;
	}
	return CLOQ_OK;
}

#define META "\xe2\x96\x81" /* U+2581, sentencepiece's word boundary */

/* One pre-tokenized word. ignore_merges looks the whole word up first, as the HF library does. */
static int bpe_word(struct tok_ctx *c, const char *s, size_t len)
{
	const cloq_tokenizer *t = c->t;
	if (len == 0)
		return CLOQ_OK;
	if (t->ignore_merges) {
		int32_t id = smap_get(&t->vocab, s, len);
		if (id >= 0)
			return ids_put(&c->out, &id, 1) ? oom(c) : CLOQ_OK;
	}
	if (!t->meta_split || (c->flags & CLOQ_TOK_ONE_PIECE))
		return bpe_chunk(c, s, len);
	size_t from = 0;
	for (size_t i = 1; i + 3 <= len; i++) {
		if (memcmp(s + i, META, 3) != 0)
			continue;
		size_t p = u8_prev(s, i);
		if (i - p == 3 && !memcmp(s + p, META, 3))
			continue; /* inside a run of "▁": tokens such as "▁▁▁▁" may span it */
		int rc = bpe_chunk(c, s + from, i - from);
		if (rc)
			return rc;
		from = i;
		i += 2;
	}
	return bpe_chunk(c, s + from, len - from);
}

/* ---- one section of text between added tokens ------------------------------------------------ */

static int encode_section(struct tok_ctx *c, const char *s, size_t len, int at_start)
{
	const cloq_tokenizer *t = c->t;
	int rc = CLOQ_OK;
	for (size_t i = 0; i < t->nnorm; i++) {
		struct tok_buf *o = &c->nb[i & 1];
		CLOQ_TRY(norm_apply(c, &t->norm[i], s, len, o));
		s = o->p ? o->p : "";
		len = o->len;
	}
	if (len == 0)
		return CLOQ_OK;
	if (t->npre == 0)
		return bpe_word(c, s, len);

	/* The normalized text may live in nb[0], which ByteLevel / Metaspace reuse: copy it into
	 * the first piece list before pre-tokenizing. */
	struct tok_plist *src = &c->pl[0], *dst = &c->pl[1];
	src->n = 0;
	src->text.len = 0;
	if (pl_add(src, s, len, at_start))
		return oom(c);
	for (size_t k = 0; k < t->npre; k++) {
		dst->n = 0;
		dst->text.len = 0;
		for (size_t i = 0; i < src->n; i++)
			CLOQ_TRY(pre_apply(c, &t->pre[k], src->text.p + src->p[i].off, src->p[i].len,
					   src->p[i].at_start, dst));
		struct tok_plist *x = src;
		src = dst;
		dst = x;
	}
	for (size_t i = 0; i < src->n; i++)
		CLOQ_TRY(bpe_word(c, src->text.p + src->p[i].off, src->p[i].len));
fail:
	return rc;
}

/* ---- added tokens ---------------------------------------------------------------------------- */

static int is_word_char_at(const struct tok_ctx *c, const char *s, size_t len, size_t at)
{
	int r = pcre2_match(c->t->word_re.code, (PCRE2_SPTR)s, len, at,
			    PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED, c->md, c->mc);
	return r >= 0;
}

/* Find the leftmost added token at or after `from` (longest first at one position). Returns its
 * index or -1; *ms / *me are the match bounds, widened over whitespace for lstrip / rstrip. */
static long find_added(const struct tok_ctx *c, const char *s, size_t len, size_t from,
		       size_t *ms, size_t *me)
{
	const cloq_tokenizer *t = c->t;
	if (!t->nadded)
		return -1;
	for (size_t p = from; p < len; p++) {
		unsigned char b = (unsigned char)s[p];
		for (uint32_t k = t->added_first[b]; k < t->added_first[b + 1]; k++) {
			const struct tok_added *a = &t->added[t->added_order[k]];
			if (a->len > len - p || memcmp(s + p, a->s, a->len))
				continue;
			size_t e = p + a->len;
			if (a->single_word &&
			    ((p > 0 && is_word_char_at(c, s, len, u8_prev(s, p))) ||
			     (e < len && is_word_char_at(c, s, len, e))))
				continue;
			size_t st = p, n;
			if (a->lstrip)
				while (st > from) {
					size_t q = u8_prev(s, st);
					if (!u_is_space(u8_decode((const unsigned char *)s + q, &n)))
						break;
					st = q;
				}
			if (a->rstrip)
				while (e < len && u_is_space(u8_decode((const unsigned char *)s + e, &n)))
					e += n;
			*ms = st;
			*me = e;
			return (long)t->added_order[k];
		}
	}
	return -1;
}

/* ---- public encode --------------------------------------------------------------------------- */

static void ctx_free(struct tok_ctx *c)
{
	cloq_free(c->out.p);
	for (int i = 0; i < 2; i++) {
		cloq_free(c->nb[i].p);
		cloq_free(c->pl[i].text.p);
		cloq_free(c->pl[i].p);
	}
	cloq_free(c->seg);
	cloq_free(c->sym);
	cloq_free(c->heap);
	pcre2_match_data_free(c->md);
	pcre2_match_context_free(c->mc);
	pcre2_jit_stack_free(c->js);
	smap_free(&c->cache);
	cloq_free(c->cent);
	cloq_free(c->cache_ids.p);
}

int cloq_tok_encode_ex(const cloq_tokenizer *t, const char *text, size_t len, unsigned flags,
		       int32_t **ids, size_t *n, cloq_err *err)
{
	int rc = CLOQ_OK;
	struct tok_ctx c = {.t = t, .flags = flags, .err = err};
	*ids = NULL;
	*n = 0;
	if (!text && len)
		return cloq_err_set(err, CLOQ_EINPUT, "tokenizer: NULL text");
	if (!text)
		text = "";
	size_t bad = u8_validate((const unsigned char *)text, len);
	CLOQ_FAIL_IF(bad != len, err, CLOQ_EINPUT, "tokenizer: text is not valid UTF-8 at byte offset %zu", bad);

	c.md = pcre2_match_data_create(1, NULL);
	c.mc = pcre2_match_context_create(NULL);
	CLOQ_FAIL_IF(!c.md || !c.mc, err, CLOQ_EIO, "tokenizer: out of memory");
	/* The default 32 KiB JIT stack is small for patterns that backtrack over long runs (such as
	 * `\s+(?!\S)` on pages of blanks); 1 MiB is ample. Should it fail to allocate, matching
	 * still works on the default stack. */
	c.js = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, NULL);
	if (c.js)
		pcre2_jit_stack_assign(c.mc, NULL, c.js);
	/* Room for about one id per three bytes saves most regrowth. */
	CLOQ_FAIL_IF(grow((void **)&c.out.p, &c.out.cap, len / 3 + 16, sizeof *c.out.p), err, CLOQ_EIO,
		     "tokenizer: out of memory");

	int special = !(flags & CLOQ_TOK_NO_SPECIAL);
	if (special && ids_put(&c.out, t->prefix, t->nprefix))
		CLOQ_TRY(oom(&c));
	size_t pos = 0;
	while (pos < len) {
		size_t ms = len, me = len;
		long k = find_added(&c, text, len, pos, &ms, &me);
		if (ms > pos)
			CLOQ_TRY(encode_section(&c, text + pos, ms - pos, pos == 0));
		if (k < 0)
			break;
		if (ids_put(&c.out, &t->added[k].id, 1))
			CLOQ_TRY(oom(&c));
		pos = me;
	}
	if (special && ids_put(&c.out, t->suffix, t->nsuffix))
		CLOQ_TRY(oom(&c));
	if (!c.out.p) /* zero ids and nothing allocated: still hand back an array */
		CLOQ_FAIL_IF(grow((void **)&c.out.p, &c.out.cap, 1, sizeof *c.out.p), err, CLOQ_EIO,
			     "tokenizer: out of memory");
	*ids = c.out.p;
	*n = c.out.n;
	c.out.p = NULL;
fail:
	ctx_free(&c);
	return rc;
}

int cloq_tok_encode(const cloq_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n,
		    cloq_err *err)
{
	return cloq_tok_encode_ex(t, text, len, 0, ids, n, err);
}

size_t cloq_tok_vocab_size(const cloq_tokenizer *t)
{
	return t ? t->vocab_size : 0;
}

int32_t cloq_tok_bos_id(const cloq_tokenizer *t)
{
	return t ? t->bos_id : -1;
}

int32_t cloq_tok_eos_id(const cloq_tokenizer *t)
{
	return t ? t->eos_id : -1;
}

/* ================================================================================================
 * Loading
 * ============================================================================================== */

void cloq_tok_free(cloq_tokenizer *t)
{
	if (!t)
		return;
	cloq_free(t->path);
	smap_free(&t->vocab);
	cloq_free(t->merges.s);
	for (size_t i = 0; i < t->nnorm; i++) {
		cloq_free(t->norm[i].a);
		cloq_free(t->norm[i].b);
		re_free(&t->norm[i].re);
	}
	cloq_free(t->norm);
	for (size_t i = 0; i < t->npre; i++)
		re_free(&t->pre[i].re);
	cloq_free(t->pre);
	re_free(&t->gpt2);
	for (size_t i = 0; i < t->nadded; i++)
		cloq_free(t->added[i].s);
	cloq_free(t->added);
	cloq_free(t->added_order);
	re_free(&t->word_re);
	cloq_free(t->prefix);
	cloq_free(t->suffix);
	cloq_free(t);
}

static const char *jstr(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Boolean field with a default (absent or null). */
static int jbool(const cJSON *o, const char *name, int dflt)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	if (cJSON_IsBool(v))
		return cJSON_IsTrue(v);
	return dflt;
}

static int is_null(const cJSON *v)
{
	return !v || cJSON_IsNull(v);
}

static char *dup_n(const char *s, size_t n)
{
	char *p = cloq_malloc(n + 1);
	if (p) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

static int32_t token_id(const cloq_tokenizer *t, const char *s)
{
	if (!s)
		return -1;
	for (size_t i = 0; i < t->nadded; i++)
		if (t->added[i].len == strlen(s) && !memcmp(t->added[i].s, s, t->added[i].len))
			return t->added[i].id;
	return smap_get(&t->vocab, s, strlen(s));
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
 * for U+0100.. in byte order. */
static void init_byte_chars(cloq_tokenizer *t)
{
	uint32_t next = 256;
	for (int b = 0; b < 256; b++) {
		int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
		uint32_t cp = keep ? (uint32_t)b : next++;
		t->byte_char_len[b] = (uint8_t)u8_encode(cp, t->byte_char[b]);
	}
}

/* "<0xNN>": a byte-fallback piece. */
static int is_byte_piece(const char *s, size_t n)
{
	return n == 6 && !memcmp(s, "<0x", 3) && s[5] == '>';
}

static int load_model(cloq_tokenizer *t, const cJSON *model, cloq_err *err)
{
	int rc = CLOQ_OK;
	const char *P = t->path;
	CLOQ_FAIL_IF(!cJSON_IsObject(model), err, CLOQ_EINPUT, "%s: no \"model\" object", P);
	const char *type = jstr(model, "type");
	const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
	const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
	/* Old files omit model.type; the serde loader then recognises BPE by its merges. */
	CLOQ_FAIL_IF(type ? strcmp(type, "BPE") != 0 : !merges, err, CLOQ_EINPUT,
		     "%s: model type '%s' is not supported (supported: BPE)", P, type ? type : "(none)");
	CLOQ_FAIL_IF(!cJSON_IsObject(vocab), err, CLOQ_EINPUT, "%s: model.vocab is not an object", P);
	CLOQ_FAIL_IF(!cJSON_IsArray(merges), err, CLOQ_EINPUT, "%s: model.merges is not an array", P);
	const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
	CLOQ_FAIL_IF(cJSON_IsNumber(dropout) && dropout->valuedouble > 0.0, err, CLOQ_EINPUT,
		     "%s: model.dropout %g is not supported (encoding would be random)", P,
		     dropout->valuedouble);
	const char *csp = jstr(model, "continuing_subword_prefix");
	const char *eows = jstr(model, "end_of_word_suffix");
	CLOQ_FAIL_IF((csp && *csp) || (eows && *eows), err, CLOQ_EINPUT,
		     "%s: model.continuing_subword_prefix / end_of_word_suffix are not supported", P);

	int32_t maxid = -1;
	const cJSON *it;
	cJSON_ArrayForEach(it, vocab)
	{
		double d = it->valuedouble;
		CLOQ_FAIL_IF(!cJSON_IsNumber(it) || d < 0 || d > INT32_MAX - 1 || d != (double)(int32_t)d,
			     err, CLOQ_EINPUT, "%s: model.vocab[\"%s\"] is not a valid token id", P,
			     it->string ? it->string : "");
		int32_t id = (int32_t)d;
		CLOQ_FAIL_IF(smap_put(&t->vocab, it->string, strlen(it->string), id), err, CLOQ_EIO,
			     "%s: out of memory loading the vocabulary", P);
		if (id > maxid)
			maxid = id;
	}
	t->vocab_size = (size_t)maxid + 1;

	size_t nm = (size_t)cJSON_GetArraySize(merges);
	CLOQ_FAIL_IF(mmap_init(&t->merges, nm), err, CLOQ_EIO, "%s: out of memory loading merges", P);
	uint32_t rank = 0;
	struct tok_buf cat = {0};
	const char *unk = jstr(model, "unk_token");
	int meta_ok = smap_get(&t->vocab, META, 3) >= 0;
	cJSON_ArrayForEach(it, merges)
	{
		const char *a, *b;
		size_t al, bl;
		if (cJSON_IsString(it)) {
			/* Legacy "a b": exactly one space (tokens with spaces need the pair form). */
			const char *sp = strchr(it->valuestring, ' ');
			if (!sp || strchr(sp + 1, ' ')) {
				cloq_free(cat.p);
				CLOQ_FAIL_IF(1, err, CLOQ_EINPUT, "%s: model.merges[%u] \"%s\" is not \"left right\"",
					     P, rank, it->valuestring);
			}
			a = it->valuestring;
			al = (size_t)(sp - a);
			b = sp + 1;
			bl = strlen(b);
		} else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
			   cJSON_IsString(cJSON_GetArrayItem(it, 0)) && cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
			a = cJSON_GetArrayItem(it, 0)->valuestring;
			b = cJSON_GetArrayItem(it, 1)->valuestring;
			al = strlen(a);
			bl = strlen(b);
		} else {
			cloq_free(cat.p);
			CLOQ_FAIL_IF(1, err, CLOQ_EINPUT, "%s: model.merges[%u] is neither \"a b\" nor [\"a\", \"b\"]",
				     P, rank);
		}
		int32_t ia = smap_get(&t->vocab, a, al), ib = smap_get(&t->vocab, b, bl);
		cat.len = 0;
		if (buf_put(&cat, a, al) || buf_put(&cat, b, bl)) {
			cloq_free(cat.p);
			CLOQ_FAIL_IF(1, err, CLOQ_EIO, "%s: out of memory loading merges", P);
		}
		int32_t ic = smap_get(&t->vocab, cat.p, cat.len);
		/* A merge naming a token outside the vocabulary can never fire: skip it. */
		if (ia >= 0 && ib >= 0 && ic >= 0) {
			mmap_put(&t->merges, ia, ib, rank, ic);
			size_t k = 0;
			while (k + 3 <= cat.len && !memcmp(cat.p + k, META, 3))
				k += 3;
			if (memmem(cat.p + k, cat.len - k, META, 3) || is_byte_piece(a, al) ||
			    is_byte_piece(b, bl) || (unk && ((al == strlen(unk) && !memcmp(a, unk, al)) ||
							     (bl == strlen(unk) && !memcmp(b, unk, bl)))))
				meta_ok = 0;
		}
		rank++;
	}
	cloq_free(cat.p);

	t->byte_fallback = jbool(model, "byte_fallback", 0);
	t->fuse_unk = jbool(model, "fuse_unk", 0);
	t->ignore_merges = jbool(model, "ignore_merges", 0);
	t->meta_split = meta_ok;
	/* An unk_token outside the vocabulary only matters when a character needs it (then encode
	 * fails, as in the HF library). */
	t->unk_id = unk ? smap_get(&t->vocab, unk, strlen(unk)) : -1;
	for (int b = 0; b < 256; b++) {
		char name[8];
		snprintf(name, sizeof name, "<0x%02X>", b);
		t->byte_id[b] = smap_get(&t->vocab, name, 6);
	}
	for (int ch = 0; ch < 128; ch++) {
		char s = (char)ch;
		t->ascii_id[ch] = smap_get(&t->vocab, &s, 1);
	}
fail:
	return rc;
}

static int add_norm(cloq_tokenizer *t, const cJSON *n, cloq_err *err, int depth)
{
	int rc = CLOQ_OK;
	struct tok_norm *nm = NULL;
	const char *P = t->path;
	if (is_null(n))
		return CLOQ_OK;
	const char *type = jstr(n, "type");
	CLOQ_FAIL_IF(!type || depth > 8, err, CLOQ_EINPUT, "%s: normalizer without a type", P);
	if (!strcmp(type, "Sequence")) {
		const cJSON *it, *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
		CLOQ_FAIL_IF(!cJSON_IsArray(list), err, CLOQ_EINPUT, "%s: normalizer Sequence without \"normalizers\"", P);
		cJSON_ArrayForEach(it, list)
			CLOQ_TRY(add_norm(t, it, err, depth + 1));
		return CLOQ_OK;
	}
	size_t cap = t->nnorm; /* grown one at a time: a handful of entries */
	CLOQ_FAIL_IF(grow((void **)&t->norm, &cap, t->nnorm + 1, sizeof *t->norm), err, CLOQ_EIO,
		     "%s: out of memory", P);
	nm = &t->norm[t->nnorm];
	memset(nm, 0, sizeof *nm);
	if (!strcmp(type, "Prepend")) {
		const char *s = jstr(n, "prepend");
		CLOQ_FAIL_IF(!s, err, CLOQ_EINPUT, "%s: normalizer Prepend without \"prepend\"", P);
		nm->kind = NORM_PREPEND;
		nm->alen = strlen(s);
		nm->a = dup_n(s, nm->alen);
		CLOQ_FAIL_IF(!nm->a, err, CLOQ_EIO, "%s: out of memory", P);
	} else if (!strcmp(type, "Replace")) {
		const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
		const char *content = jstr(n, "content");
		const char *str = jstr(pat, "String"), *re = jstr(pat, "Regex");
		CLOQ_FAIL_IF(!content || (!str && !re), err, CLOQ_EINPUT,
			     "%s: normalizer Replace needs \"content\" and a String or Regex pattern", P);
		nm->blen = strlen(content);
		nm->b = dup_n(content, nm->blen);
		CLOQ_FAIL_IF(!nm->b, err, CLOQ_EIO, "%s: out of memory", P);
		if (str && *str) {
			nm->kind = NORM_REPLACE_STR;
			nm->alen = strlen(str);
			nm->a = dup_n(str, nm->alen);
			CLOQ_FAIL_IF(!nm->a, err, CLOQ_EIO, "%s: out of memory", P);
		} else {
			nm->kind = NORM_REPLACE_RE;
			if (str)
				rc = re_compile_literal(&nm->re, str, strlen(str), P, "normalizer Replace", err);
			else
				rc = re_compile(&nm->re, re, strlen(re), P, "normalizer Replace", err);
			if (rc)
				goto fail;
		}
	} else if (!strcmp(type, "Strip")) {
		nm->kind = NORM_STRIP;
		nm->left = jbool(n, "strip_left", 1);
		nm->right = jbool(n, "strip_right", 1);
	} else if (!strcmp(type, "NFC")) {
		nm->kind = NORM_NFC;
	} else {
		CLOQ_FAIL_IF(1, err, CLOQ_EINPUT,
			     "%s: normalizer type '%s' is not supported (supported: Sequence, Prepend, Replace, Strip, NFC)",
			     P, type);
	}
	t->nnorm++;
	return CLOQ_OK;
fail:
	if (nm) { /* the half-built entry is not counted: free what it holds */
		cloq_free(nm->a);
		cloq_free(nm->b);
		re_free(&nm->re);
		memset(nm, 0, sizeof *nm);
	}
	return rc;
}

static int split_behavior(const char *s)
{
	static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
	for (int i = 0; i < 5; i++)
		if (s && !strcmp(s, names[i]))
			return i;
	return -1;
}

static int add_pre(cloq_tokenizer *t, const cJSON *n, cloq_err *err, int depth)
{
	int rc = CLOQ_OK;
	const char *P = t->path;
	if (is_null(n))
		return CLOQ_OK;
	const char *type = jstr(n, "type");
	CLOQ_FAIL_IF(!type || depth > 8, err, CLOQ_EINPUT, "%s: pre_tokenizer without a type", P);
	if (!strcmp(type, "Sequence")) {
		const cJSON *it, *list = cJSON_GetObjectItemCaseSensitive(n, "pretokenizers");
		CLOQ_FAIL_IF(!cJSON_IsArray(list), err, CLOQ_EINPUT, "%s: pre_tokenizer Sequence without \"pretokenizers\"", P);
		cJSON_ArrayForEach(it, list)
			CLOQ_TRY(add_pre(t, it, err, depth + 1));
		return CLOQ_OK;
	}
	size_t cap = t->npre;
	CLOQ_FAIL_IF(grow((void **)&t->pre, &cap, t->npre + 1, sizeof *t->pre), err, CLOQ_EIO,
		     "%s: out of memory", P);
	struct tok_pre *pr = &t->pre[t->npre];
	memset(pr, 0, sizeof *pr);
	if (!strcmp(type, "Split")) {
		const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
		const char *str = jstr(pat, "String"), *re = jstr(pat, "Regex");
		const char *beh = jstr(n, "behavior");
		CLOQ_FAIL_IF(!str && !re, err, CLOQ_EINPUT, "%s: pre_tokenizer Split needs a String or Regex pattern", P);
		pr->kind = PRE_SPLIT;
		pr->behavior = split_behavior(beh);
		CLOQ_FAIL_IF(pr->behavior < 0, err, CLOQ_EINPUT,
			     "%s: pre_tokenizer Split behavior '%s' is not supported (supported: Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous)",
			     P, beh ? beh : "(none)");
		pr->invert = jbool(n, "invert", 0);
		if (str)
			CLOQ_TRY(re_compile_literal(&pr->re, str, strlen(str), P, "pre_tokenizer Split", err));
		else
			CLOQ_TRY(re_compile(&pr->re, re, strlen(re), P, "pre_tokenizer Split", err));
	} else if (!strcmp(type, "ByteLevel")) {
		pr->kind = PRE_BYTELEVEL;
		pr->add_prefix_space = jbool(n, "add_prefix_space", 1);
		pr->use_regex = jbool(n, "use_regex", 1);
		if (pr->use_regex && !t->gpt2.code) {
			static const char gpt2[] =
				"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
			CLOQ_TRY(re_compile(&t->gpt2, gpt2, sizeof gpt2 - 1, P, "pre_tokenizer ByteLevel", err));
		}
	} else if (!strcmp(type, "Metaspace")) {
		pr->kind = PRE_METASPACE;
		const char *rep = jstr(n, "replacement");
		if (!rep)
			rep = "\xe2\x96\x81";
		size_t rl = strlen(rep);
		CLOQ_FAIL_IF(rl == 0 || rl >= sizeof pr->rep || u8_len((unsigned char)rep[0]) != rl, err,
			     CLOQ_EINPUT, "%s: pre_tokenizer Metaspace replacement must be one character", P);
		memcpy(pr->rep, rep, rl);
		pr->replen = rl;
		const char *scheme = jstr(n, "prepend_scheme");
		if (scheme) {
			if (!strcmp(scheme, "always"))
				pr->scheme = PREPEND_ALWAYS;
			else if (!strcmp(scheme, "first"))
				pr->scheme = PREPEND_FIRST;
			else if (!strcmp(scheme, "never"))
				pr->scheme = PREPEND_NEVER;
			else
				CLOQ_FAIL_IF(1, err, CLOQ_EINPUT,
					     "%s: pre_tokenizer Metaspace prepend_scheme '%s' is not supported (supported: always, first, never)",
					     P, scheme);
		} else {
			pr->scheme = jbool(n, "add_prefix_space", 1) ? PREPEND_ALWAYS : PREPEND_NEVER;
		}
		pr->split = jbool(n, "split", 1);
	} else {
		CLOQ_FAIL_IF(1, err, CLOQ_EINPUT,
			     "%s: pre_tokenizer type '%s' is not supported (supported: Sequence, Split, ByteLevel, Metaspace)",
			     P, type);
	}
	t->npre++;
fail:
	return rc;
}

/* Ids of one special token of a TemplateProcessing ("special_tokens": {name: {"ids": [...]}}). */
static int template_ids(cloq_tokenizer *t, const cJSON *specials, const char *name, int32_t **v,
			size_t *nv, cloq_err *err)
{
	int rc = CLOQ_OK;
	const cJSON *st = cJSON_GetObjectItemCaseSensitive(specials, name);
	const cJSON *ids = cJSON_GetObjectItemCaseSensitive(st, "ids"), *it;
	CLOQ_FAIL_IF(!cJSON_IsArray(ids), err, CLOQ_EINPUT,
		     "%s: post_processor special token '%s' is not in \"special_tokens\"", t->path, name);
	cJSON_ArrayForEach(it, ids)
	{
		CLOQ_FAIL_IF(!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > INT32_MAX, err,
			     CLOQ_EINPUT, "%s: post_processor special token '%s' has a bad id", t->path, name);
		size_t cap = *nv;
		CLOQ_FAIL_IF(grow((void **)v, &cap, *nv + 1, sizeof **v), err, CLOQ_EIO, "%s: out of memory", t->path);
		(*v)[(*nv)++] = (int32_t)it->valuedouble;
	}
fail:
	return rc;
}

static int push_id(cloq_tokenizer *t, int32_t **v, size_t *nv, int32_t id, cloq_err *err)
{
	size_t cap = *nv;
	if (grow((void **)v, &cap, *nv + 1, sizeof **v))
		return cloq_err_set(err, CLOQ_EIO, "%s: out of memory", t->path);
	(*v)[(*nv)++] = id;
	return CLOQ_OK;
}

static int load_post(cloq_tokenizer *t, const cJSON *pp, cloq_err *err, int depth)
{
	int rc = CLOQ_OK;
	const char *P = t->path;
	if (is_null(pp))
		return CLOQ_OK;
	const char *type = jstr(pp, "type");
	CLOQ_FAIL_IF(!type || depth > 8, err, CLOQ_EINPUT, "%s: post_processor without a type", P);
	if (!strcmp(type, "Sequence")) {
		const cJSON *it, *list = cJSON_GetObjectItemCaseSensitive(pp, "processors");
		CLOQ_FAIL_IF(!cJSON_IsArray(list), err, CLOQ_EINPUT, "%s: post_processor Sequence without \"processors\"", P);
		cJSON_ArrayForEach(it, list)
			CLOQ_TRY(load_post(t, it, err, depth + 1));
	} else if (!strcmp(type, "ByteLevel")) {
		/* only adjusts offsets */
	} else if (!strcmp(type, "TemplateProcessing")) {
		const cJSON *single = cJSON_GetObjectItemCaseSensitive(pp, "single");
		const cJSON *specials = cJSON_GetObjectItemCaseSensitive(pp, "special_tokens"), *it;
		CLOQ_FAIL_IF(!cJSON_IsArray(single), err, CLOQ_EINPUT, "%s: post_processor TemplateProcessing without \"single\"", P);
		int seen_a = 0;
		cJSON_ArrayForEach(it, single)
		{
			const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
			const cJSON *sq = cJSON_GetObjectItemCaseSensitive(it, "Sequence");
			if (sq) {
				seen_a = 1;
			} else if (sp && jstr(sp, "id")) {
				if (seen_a)
					CLOQ_TRY(template_ids(t, specials, jstr(sp, "id"), &t->suffix, &t->nsuffix, err));
				else
					CLOQ_TRY(template_ids(t, specials, jstr(sp, "id"), &t->prefix, &t->nprefix, err));
			} else {
				CLOQ_FAIL_IF(1, err, CLOQ_EINPUT, "%s: post_processor TemplateProcessing has a bad \"single\" item", P);
			}
		}
	} else if (!strcmp(type, "BertProcessing") || !strcmp(type, "RobertaProcessing")) {
		const cJSON *cls = cJSON_GetObjectItemCaseSensitive(pp, "cls");
		const cJSON *sep = cJSON_GetObjectItemCaseSensitive(pp, "sep");
		const cJSON *ci = cJSON_GetArrayItem(cls, 1), *si = cJSON_GetArrayItem(sep, 1);
		CLOQ_FAIL_IF(!cJSON_IsNumber(ci) || !cJSON_IsNumber(si), err, CLOQ_EINPUT,
			     "%s: post_processor %s needs \"cls\" and \"sep\" as [token, id]", P, type);
		CLOQ_TRY(push_id(t, &t->prefix, &t->nprefix, (int32_t)ci->valuedouble, err));
		CLOQ_TRY(push_id(t, &t->suffix, &t->nsuffix, (int32_t)si->valuedouble, err));
	} else {
		CLOQ_FAIL_IF(1, err, CLOQ_EINPUT,
			     "%s: post_processor type '%s' is not supported (supported: TemplateProcessing, ByteLevel, Sequence, BertProcessing, RobertaProcessing)",
			     P, type);
	}
fail:
	return rc;
}

static int load_added(cloq_tokenizer *t, const cJSON *list, cloq_err *err)
{
	int rc = CLOQ_OK;
	const char *P = t->path;
	if (is_null(list))
		return CLOQ_OK;
	CLOQ_FAIL_IF(!cJSON_IsArray(list), err, CLOQ_EINPUT, "%s: added_tokens is not an array", P);
	size_t n = (size_t)cJSON_GetArraySize(list);
	if (!n)
		return CLOQ_OK;
	t->added = cloq_calloc(n, sizeof *t->added);
	t->added_order = cloq_calloc(n, sizeof *t->added_order);
	CLOQ_FAIL_IF(!t->added || !t->added_order, err, CLOQ_EIO, "%s: out of memory", P);
	const cJSON *it;
	int need_word = 0;
	cJSON_ArrayForEach(it, list)
	{
		const char *s = jstr(it, "content");
		const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
		CLOQ_FAIL_IF(!s || !*s || !cJSON_IsNumber(id) || id->valuedouble < 0 ||
				     id->valuedouble > INT32_MAX - 1,
			     err, CLOQ_EINPUT, "%s: added_tokens[%zu] needs a non-empty \"content\" and an \"id\"", P,
			     t->nadded);
		struct tok_added *a = &t->added[t->nadded];
		a->len = strlen(s);
		a->s = dup_n(s, a->len);
		CLOQ_FAIL_IF(!a->s, err, CLOQ_EIO, "%s: out of memory", P);
		a->id = (int32_t)id->valuedouble;
		a->special = jbool(it, "special", 0);
		a->lstrip = jbool(it, "lstrip", 0);
		a->rstrip = jbool(it, "rstrip", 0);
		a->single_word = jbool(it, "single_word", 0);
		need_word |= a->single_word;
		if ((size_t)a->id + 1 > t->vocab_size)
			t->vocab_size = (size_t)a->id + 1;
		t->nadded++;
	}
	/* Index by first byte, longest first, so the scan tries the longest token at each position. */
	uint32_t count[256] = {0};
	for (size_t i = 0; i < n; i++)
		count[(unsigned char)t->added[i].s[0]]++;
	t->added_first[0] = 0;
	for (int b = 0; b < 256; b++)
		t->added_first[b + 1] = t->added_first[b] + count[b];
	uint32_t fill[256];
	memcpy(fill, t->added_first, sizeof fill);
	for (size_t i = 0; i < n; i++)
		t->added_order[fill[(unsigned char)t->added[i].s[0]]++] = (uint32_t)i;
	for (int b = 0; b < 256; b++) {
		uint32_t lo = t->added_first[b], hi = t->added_first[b + 1];
		for (uint32_t i = lo + 1; i < hi; i++) { /* insertion sort: stable, small buckets */
			uint32_t x = t->added_order[i], j = i;
			while (j > lo && t->added[t->added_order[j - 1]].len < t->added[x].len) {
				t->added_order[j] = t->added_order[j - 1];
				j--;
			}
			t->added_order[j] = x;
		}
	}
	if (need_word)
		CLOQ_TRY(re_compile(&t->word_re, "\\w", 2, P, "single_word", err));
fail:
	return rc;
}

/* tokenizer_config.json: bos/eos tokens, and the LlamaTokenizerFast post-processor rebuild. */
static int load_config(cloq_tokenizer *t, const char *dir, cloq_err *err)
{
	int rc = CLOQ_OK;
	char *path = NULL, *data = NULL;
	cJSON *cfg = NULL;
	size_t plen = strlen(dir) + sizeof "/tokenizer_config.json";
	path = cloq_malloc(plen);
	CLOQ_FAIL_IF(!path, err, CLOQ_EIO, "out of memory");
	snprintf(path, plen, "%s/tokenizer_config.json", dir);

	const char *bos = NULL, *eos = NULL;
	if (cloq_file_exists(path)) {
		size_t size;
		CLOQ_TRY(cloq_read_file(path, &data, &size, err));
		const char *end = NULL;
		cfg = cJSON_ParseWithLengthOpts(data, size, &end, 0);
		CLOQ_FAIL_IF(!cfg || !cJSON_IsObject(cfg), err, CLOQ_EINPUT, "%s: invalid JSON near byte offset %zu",
			     path, end && end >= data ? (size_t)(end - data) : (size_t)0);
		/* bos_token / eos_token: a string or an AddedToken object {"content": ...} */
		const cJSON *b = cJSON_GetObjectItemCaseSensitive(cfg, "bos_token");
		const cJSON *e = cJSON_GetObjectItemCaseSensitive(cfg, "eos_token");
		bos = cJSON_IsString(b) ? b->valuestring : jstr(b, "content");
		eos = cJSON_IsString(e) ? e->valuestring : jstr(e, "content");
		const char *cls = jstr(cfg, "tokenizer_class");
		if (cls && (!strncmp(cls, "LlamaTokenizer", 14) || !strncmp(cls, "CodeLlamaTokenizer", 18))) {
			/* transformers' LlamaTokenizerFast.update_post_processor: BOS? text EOS? */
			int add_bos = jbool(cfg, "add_bos_token", 1), add_eos = jbool(cfg, "add_eos_token", 0);
			int32_t bid = token_id(t, bos), eid = token_id(t, eos);
			CLOQ_FAIL_IF((add_bos && bid < 0) || (add_eos && eid < 0), err, CLOQ_EINPUT,
				     "%s: add_%s_token is set but the token is not in the vocabulary", path,
				     add_bos && bid < 0 ? "bos" : "eos");
			t->nprefix = t->nsuffix = 0;
			if (add_bos)
				CLOQ_TRY(push_id(t, &t->prefix, &t->nprefix, bid, err));
			if (add_eos)
				CLOQ_TRY(push_id(t, &t->suffix, &t->nsuffix, eid, err));
		}
	}
	t->bos_id = bos ? token_id(t, bos) : (t->nprefix ? t->prefix[0] : -1);
	t->eos_id = token_id(t, eos);
	if (!eos && t->eos_id < 0)
		t->eos_id = token_id(t, "</s>");
	if (!eos && t->eos_id < 0)
		t->eos_id = token_id(t, "<|endoftext|>");
fail:
	cJSON_Delete(cfg);
	cloq_free(data);
	cloq_free(path);
	return rc;
}

int cloq_tok_load(const char *dir, cloq_tokenizer **out, cloq_err *err)
{
	int rc = CLOQ_OK;
	char *data = NULL;
	cJSON *root = NULL;
	*out = NULL;
	cloq_tokenizer *t = cloq_calloc(1, sizeof *t);
	CLOQ_FAIL_IF(!t, err, CLOQ_EIO, "out of memory");
	t->unk_id = t->bos_id = t->eos_id = -1;
	size_t plen = strlen(dir) + sizeof "/tokenizer.json";
	t->path = cloq_malloc(plen);
	CLOQ_FAIL_IF(!t->path, err, CLOQ_EIO, "out of memory");
	snprintf(t->path, plen, "%s/tokenizer.json", dir);
	init_byte_chars(t);

	size_t size;
	CLOQ_TRY(cloq_read_file(t->path, &data, &size, err));
	const char *end = NULL;
	root = cJSON_ParseWithLengthOpts(data, size, &end, 0);
	CLOQ_FAIL_IF(!root || !cJSON_IsObject(root), err, CLOQ_EINPUT, "%s: invalid JSON near byte offset %zu",
		     t->path, end && end >= data ? (size_t)(end - data) : (size_t)0);
	cloq_free(data);
	data = NULL;

	CLOQ_TRY(load_model(t, cJSON_GetObjectItemCaseSensitive(root, "model"), err));
	CLOQ_TRY(load_added(t, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), err));
	CLOQ_TRY(add_norm(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), err, 0));
	CLOQ_TRY(add_pre(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), err, 0));
	CLOQ_TRY(load_post(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), err, 0));
	CLOQ_TRY(load_config(t, dir, err));
	cJSON_Delete(root);
	*out = t;
	return CLOQ_OK;
fail:
	cJSON_Delete(root);
	cloq_free(data);
	cloq_tok_free(t);
	return rc;
}
