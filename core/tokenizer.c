/*
 * tokenizer.c: byte-level BPE from a Hugging Face tokenizer.json (see
 * tokenizer.h for the steps).  The split patterns run in PCRE2 with
 * Unicode properties (JIT-compiled when the library can), the normalizer
 * in utf8proc; the merges are a hash of id pairs and each piece merges in
 * O(n log n) with a heap of candidate pairs, so no input line, however
 * long, makes the encoder quadratic.  Pieces seen before come from a
 * bounded cache.
 */
#include "config.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include "core/tokenizer.h"

#define TOK_MAX_FILE	((size_t)512 << 20)	/* tokenizer.json: 11 MB for Qwen3 */
#define TOK_MAX_SPLITS	8
#define CACHE_SLOTS	(1u << 16)		/* piece cache entries (power of two) */
#define CACHE_MAX_PIECE	256			/* longer pieces are not cached */
#define CACHE_ARENA	((size_t)8 << 20)	/* bytes of keys and ids before a flush */

/* GPT-2's regex, what ByteLevel with use_regex splits on. */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ---- hash maps --------------------------------------------------------- */

static uint64_t
hash_bytes(const void *p, size_t n)
{
	const unsigned char *s = p;
	uint64_t h = 1469598103934665603ull;	/* FNV-1a */
	for (size_t i = 0; i < n; i++) {
		h ^= s[i];
		h *= 1099511628211ull;
	}
	return h ^ (h >> 29);
}

static uint64_t
hash_u64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

static uint32_t
pow2_at_least(size_t n)
{
	uint32_t c = 16;
	while (c < n)
		c <<= 1;
	return c;
}

/* string -> id, strings owned by the tokenizer's arena */
typedef struct str_ent {
	const char *k;
	uint32_t len;
	int32_t id;		/* -1: empty */
} str_ent;

typedef struct strmap {
	str_ent *e;
	uint32_t mask;
} strmap;

static void
strmap_init(strmap *m, size_t n)
{
	uint32_t cap = pow2_at_least(2 * n + 1);
	m->e = xmalloc(xmul(cap, sizeof *m->e));
	for (uint32_t i = 0; i < cap; i++)
		m->e[i].id = -1;
	m->mask = cap - 1;
}

static int32_t
strmap_get(const strmap *m, const char *k, size_t len)
{
	for (uint32_t i = (uint32_t)hash_bytes(k, len) & m->mask;; i = (i + 1) & m->mask) {
		const str_ent *e = &m->e[i];
		if (e->id < 0)
			return -1;
		if (e->len == len && memcmp(e->k, k, len) == 0)
			return e->id;
	}
}

/* 0 inserted, 1 already there (left as it was) */
static int
strmap_put(strmap *m, const char *k, size_t len, int32_t id)
{
	for (uint32_t i = (uint32_t)hash_bytes(k, len) & m->mask;; i = (i + 1) & m->mask) {
		str_ent *e = &m->e[i];
		if (e->id < 0) {
			e->k = k;
			e->len = (uint32_t)len;
			e->id = id;
			return 0;
		}
		if (e->len == len && memcmp(e->k, k, len) == 0)
			return 1;
	}
}

/* (left id, right id) -> rank and the merged id */
typedef struct merge_ent {
	uint64_t key;		/* UINT64_MAX: empty */
	int32_t rank, id;
} merge_ent;

/* ---- the tokenizer ----------------------------------------------------- */

typedef struct added_tok {
	char *s;
	size_t len;
	int32_t id;
	unsigned special:1, normalized:1, lstrip:1, rstrip:1;
} added_tok;

typedef struct cache_ent {
	uint64_t h;
	uint32_t koff, klen, ioff, ilen;
	int used;
} cache_ent;

struct masq_tok {
	char *arena;		/* the vocabulary's strings */
	size_t arena_len, arena_cap;
	int32_t n_ids;
	const char **piece;	/* [n_ids]: string of each id, or NULL */
	uint32_t *piece_len;
	unsigned char *special;	/* [n_ids] */
	strmap vocab;		/* model.vocab */
	strmap addmap;		/* added_tokens' contents */
	merge_ent *merges;
	uint32_t merge_mask;
	int32_t byte_id[256];	/* the vocabulary id of each byte's symbol */
	uint32_t byte_cp[256];	/* GPT-2's bytes_to_unicode */
	int ignore_merges;

	enum { NORM_NONE, NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD } norm;

	pcre2_code *re[TOK_MAX_SPLITS];
	int n_re;
	pcre2_match_data *md;
	pcre2_match_context *mctx;
	pcre2_jit_stack *jit;	/* 8 MiB at most: long lines of backtracking patterns */

	added_tok *added;	/* longest first */
	int n_added;
	int16_t *first;		/* [256 * (n_added + 1)]: per first byte, indices into added, -1 ended */

	/* piece cache */
	cache_ent *cache;
	char *ckeys;
	int32_t *cids;
	size_t ckeys_len, cids_len, cache_n;

	/* scratch for one piece's merge */
	int32_t *sym, *prev, *next;
	struct heap_ent { int32_t rank, pos, l, r; } *heap;
	size_t scratch_cap, heap_cap;
	char *bl;		/* a piece in byte-level symbols */
	size_t bl_cap;
};

/* Copy s into the arena; returns its offset (pointers only once the arena
 * stops growing). */
static size_t
arena_add(masq_tok *t, const char *s, size_t n)
{
	if (t->arena_len + n + 1 > t->arena_cap) {
		t->arena_cap = (t->arena_len + n + 1) * 2;
		t->arena = xrealloc(t->arena, t->arena_cap);
	}
	size_t off = t->arena_len;
	memcpy(t->arena + off, s, n);
	t->arena[off + n] = '\0';
	t->arena_len += n + 1;
	return off;
}

void
tok_ids_push(tok_ids *ids, int32_t id)
{
	if (ids->n == ids->cap) {
		ids->cap = ids->cap ? ids->cap * 2 : 64;
		ids->v = xrealloc(ids->v, xmul(ids->cap, sizeof *ids->v));
	}
	ids->v[ids->n++] = id;
}

void
tok_ids_free(tok_ids *ids)
{
	free(ids->v);
	memset(ids, 0, sizeof *ids);
}

void
tok_free(masq_tok *t)
{
	if (t == NULL)
		return;
	for (int i = 0; i < t->n_re; i++)
		pcre2_code_free(t->re[i]);
	pcre2_match_data_free(t->md);
	pcre2_match_context_free(t->mctx);
	pcre2_jit_stack_free(t->jit);
	for (int i = 0; i < t->n_added; i++)
		free(t->added[i].s);
	free(t->added);
	free(t->first);
	free(t->arena);
	free(t->piece);
	free(t->piece_len);
	free(t->special);
	free(t->vocab.e);
	free(t->addmap.e);
	free(t->merges);
	free(t->cache);
	free(t->ckeys);
	free(t->cids);
	free(t->sym);
	free(t->prev);
	free(t->next);
	free(t->heap);
	free(t->bl);
	free(t);
}

/* UTF-8 of code point cp into out (at least 4 bytes); returns the length. */
static int
utf8_put(uint32_t cp, char *out)
{
	utf8proc_ssize_t n = utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)out);
	return (int)n;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves,
 * the others for 256, 257, ... in byte order. */
static void
byte_alphabet(uint32_t cp[256])
{
	uint32_t next = 256;
	for (int b = 0; b < 256; b++) {
		int keep = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
		cp[b] = keep ? (uint32_t)b : next++;
	}
}

int
tok_byte_symbol(int b, char *out)
{
	uint32_t cp[256];
	byte_alphabet(cp);
	return utf8_put(cp[b & 0xff], out);
}

/* Rust's char::is_whitespace (Unicode White_Space), what lstrip and rstrip
 * of an added token strip. */
static int
is_white(int32_t c)
{
	return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
	    (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
	    c == 0x3000;
}

/* Offset of the first byte that is not valid UTF-8 (overlong forms,
 * surrogates and code points past U+10FFFF are not), or len. */
static size_t
utf8_check(const unsigned char *s, size_t len)
{
	size_t i = 0;
	while (i < len) {
		unsigned c = s[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t n;
		uint32_t cp, min;
		if ((c & 0xe0) == 0xc0) {
			n = 2, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			n = 3, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			n = 4, cp = c & 0x07, min = 0x10000;
		} else {
			return i;
		}
		if (i + n > len)
			return i;
		for (size_t k = 1; k < n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return i;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return i;
		i += n;
	}
	return len;
}

/* ---- loading ----------------------------------------------------------- */

static const char *
jstr(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* a boolean field, absent or null meaning def; -1 when of another type */
static int
jbool(json_t *o, const char *key, int def)
{
	json_t *v = json_object_get(o, key);
	if (v == NULL || json_is_null(v))
		return def;
	if (!json_is_boolean(v))
		return -1;
	return json_is_true(v);
}

static int
load_normalizer(masq_tok *t, json_t *n, const char *name, masq_err *err)
{
	if (n == NULL || json_is_null(n))
		return 0;
	const char *type = jstr(n, "type");
	if (type != NULL && strcmp(type, "Sequence") == 0) {
		json_t *list = json_object_get(n, "normalizers");
		if (!json_is_array(list))
			return masq_err_set(err, MASQ_ERR_FORMAT, "%s: normalizer: a Sequence without a normalizers list",
			    name);
		if (json_array_size(list) == 0)
			return 0;
		if (json_array_size(list) > 1)
			return masq_err_set(err, MASQ_ERR_FORMAT,
			    "%s: normalizer: a Sequence of %zu normalizers; masq applies one Unicode normal form only",
			    name, json_array_size(list));
		return load_normalizer(t, json_array_get(list, 0), name, err);
	}
	static const struct { const char *name; int norm; } forms[] = {
		{"NFC", NORM_NFC}, {"NFD", NORM_NFD}, {"NFKC", NORM_NFKC}, {"NFKD", NORM_NFKD},
	};
	for (size_t i = 0; type != NULL && i < sizeof forms / sizeof forms[0]; i++)
		if (strcmp(type, forms[i].name) == 0) {
			t->norm = forms[i].norm;
			return 0;
		}
	return masq_err_set(err, MASQ_ERR_FORMAT,
	    "%s: normalizer '%s' is not supported (masq applies none, NFC, NFD, NFKC or NFKD)", name,
	    type ? type : "(no type)");
}

/*
 * The tokenizers library runs its patterns in Oniguruma, whose \s is
 * Unicode's White_Space; PCRE2's \s (with PCRE2_UCP) is the Z categories
 * and \t-\r, which leaves out one White_Space character, U+0085 (NEL).
 * Rewrite \s as [\s\x{85}] and \S as [^\s\x{85}] so the two agree; a \S
 * inside a character class has no such spelling and is refused.  The
 * result is a new string, or NULL with err.
 */
static char *
onig_spaces(const char *pat, size_t len, size_t *out_len, const char *name, masq_err *err)
{
	char *o = xmalloc(xmul(len, 8) + 1);
	size_t n = 0;
	int in_class = 0;
	for (size_t i = 0; i < len; i++) {
		char c = pat[i];
		if (c == '\\' && i + 1 < len) {
			char d = pat[++i];
			const char *rep = NULL;
			if (d == 's')
				rep = in_class ? "\\s\\x{85}" : "[\\s\\x{85}]";
			else if (d == 'S' && !in_class)
				rep = "[^\\s\\x{85}]";
			else if (d == 'S') {
				free(o);
				masq_err_set(err, MASQ_ERR_FORMAT, "%s: pre_tokenizer: the Split pattern has \\S inside "
				    "a character class, which masq cannot match as Oniguruma does", name);
				return NULL;
			}
			if (rep != NULL) {
				memcpy(o + n, rep, strlen(rep));
				n += strlen(rep);
			} else {
				o[n++] = c;
				o[n++] = d;
			}
			continue;
		}
		o[n++] = c;
		if (!in_class && c == '[') {
			in_class = 1;
			/* a ] first in the class (after an optional ^) is literal */
			if (i + 1 < len && pat[i + 1] == '^')
				o[n++] = pat[++i];
			if (i + 1 < len && pat[i + 1] == ']')
				o[n++] = pat[++i];
		} else if (in_class && c == '[' && i + 1 < len && pat[i + 1] == ':') {
			/* [:alpha:] inside a class */
			const char *end = strstr(pat + i, ":]");
			if (end != NULL && (size_t)(end - pat) < len) {
				size_t k = (size_t)(end - pat) + 2;
				memcpy(o + n, pat + i + 1, k - i - 1);
				n += k - i - 1;
				i = k - 1;
			}
		} else if (in_class && c == ']') {
			in_class = 0;
		}
	}
	o[n] = '\0';
	*out_len = n;
	return o;
}

static int
add_regex(masq_tok *t, const char *src, size_t src_len, int literal, const char *name, masq_err *err)
{
	int ec;
	PCRE2_SIZE eo;
	size_t len = src_len;
	if (t->n_re == TOK_MAX_SPLITS)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: pre_tokenizer: more than %d Split steps", name,
		    TOK_MAX_SPLITS);
	char *pat;
	if (literal) {
		pat = xmalloc(src_len + 1);
		memcpy(pat, src, src_len + 1);
	} else if ((pat = onig_spaces(src, src_len, &len, name, err)) == NULL) {
		return -1;
	}
	/* PCRE2 takes no UCP with a literal */
	pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP), &ec,
	    &eo, NULL);
	free(pat);
	if (re == NULL) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(ec, msg, sizeof msg);
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: pre_tokenizer: the Split pattern does not compile "
		    "(near offset %zu of its rewriting): %s", name, (size_t)eo, (const char *)msg);
	}
	(void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);	/* the interpreter when JIT is not there */
	t->re[t->n_re++] = re;
	return 0;
}

static int
load_bytelevel(masq_tok *t, json_t *p, int last, const char *name, masq_err *err)
{
	if (!last)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: pre_tokenizer: ByteLevel must be the last step", name);
	int aps = jbool(p, "add_prefix_space", 1);
	if (aps != 0)
		return masq_err_set(err, MASQ_ERR_FORMAT,
		    "%s: pre_tokenizer: ByteLevel with add_prefix_space is not supported", name);
	int use_regex = jbool(p, "use_regex", 1);
	if (use_regex < 0)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: pre_tokenizer: ByteLevel use_regex is not a boolean",
		    name);
	if (use_regex)
		return add_regex(t, gpt2_pattern, strlen(gpt2_pattern), 0, name, err);
	return 0;
}

static int
load_split(masq_tok *t, json_t *p, const char *name, masq_err *err)
{
	const char *behavior = jstr(p, "behavior");
	if (behavior == NULL || strcmp(behavior, "Isolated") != 0)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: pre_tokenizer: Split behavior '%s' is not supported "
		    "(masq splits Isolated)", name, behavior ? behavior : "(none)");
	if (jbool(p, "invert", 0) != 0)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: pre_tokenizer: an inverted Split is not supported",
		    name);
	json_t *pat = json_object_get(p, "pattern");
	json_t *rx = json_object_get(pat, "Regex"), *lit = json_object_get(pat, "String");
	if (json_is_string(rx))
		return add_regex(t, json_string_value(rx), json_string_length(rx), 0, name, err);
	if (json_is_string(lit))
		return add_regex(t, json_string_value(lit), json_string_length(lit), 1, name, err);
	return masq_err_set(err, MASQ_ERR_FORMAT, "%s: pre_tokenizer: a Split without a Regex or String pattern",
	    name);
}

static int
load_pretokenizer(masq_tok *t, json_t *p, const char *name, masq_err *err)
{
	if (p == NULL || json_is_null(p))
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: no pre_tokenizer: not a byte-level BPE tokenizer", name);
	const char *type = jstr(p, "type");
	json_t *steps;
	size_t n;
	if (type != NULL && strcmp(type, "Sequence") == 0) {
		steps = json_object_get(p, "pretokenizers");
		n = json_array_size(steps);
	} else {
		steps = NULL;
		n = 1;
	}
	int have_bytelevel = 0;
	for (size_t i = 0; i < n; i++) {
		json_t *s = steps ? json_array_get(steps, i) : p;
		const char *st = jstr(s, "type");
		int rc;
		if (st != NULL && strcmp(st, "ByteLevel") == 0) {
			rc = load_bytelevel(t, s, i + 1 == n, name, err);
			have_bytelevel = 1;
		} else if (st != NULL && strcmp(st, "Split") == 0) {
			rc = load_split(t, s, name, err);
		} else {
			rc = masq_err_set(err, MASQ_ERR_FORMAT, "%s: pre_tokenizer '%s' is not supported "
			    "(masq reads byte-level BPE: Split patterns, then ByteLevel)", name, st ? st : "(no type)");
		}
		if (rc < 0)
			return -1;
	}
	if (!have_bytelevel)
		return masq_err_set(err, MASQ_ERR_FORMAT,
		    "%s: the pre_tokenizer has no ByteLevel step: not a byte-level BPE tokenizer", name);
	return 0;
}

static int
id_ok(json_t *v, json_int_t *out)
{
	if (!json_is_integer(v))
		return 0;
	json_int_t x = json_integer_value(v);
	if (x < 0 || x >= INT32_MAX - 1)
		return 0;
	*out = x;
	return 1;
}

static int
load_added(masq_tok *t, json_t *list, const char *name, masq_err *err)
{
	if (list == NULL || json_is_null(list))
		return 0;
	if (!json_is_array(list))
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: added_tokens is not a list", name);
	size_t n = json_array_size(list);
	if (n > 30000)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: %zu added tokens; masq takes at most 30000", name, n);
	t->added = xcalloc(n ? n : 1, sizeof *t->added);
	for (size_t i = 0; i < n; i++) {
		json_t *a = json_array_get(list, i);
		json_t *c = json_object_get(a, "content");
		json_int_t id;
		if (!json_is_string(c) || json_string_length(c) == 0 || !id_ok(json_object_get(a, "id"), &id))
			return masq_err_set(err, MASQ_ERR_FORMAT,
			    "%s: added_tokens[%zu] needs a non-empty content and an id in [0, 2^31-2]", name, i);
		int sp = jbool(a, "special", 0), nm = jbool(a, "normalized", 0);
		int ls = jbool(a, "lstrip", 0), rs = jbool(a, "rstrip", 0), sw = jbool(a, "single_word", 0);
		if (sp < 0 || nm < 0 || ls < 0 || rs < 0 || sw < 0)
			return masq_err_set(err, MASQ_ERR_FORMAT, "%s: added_tokens[%zu] ('%s'): %s is not a boolean",
			    name, i, json_string_value(c), sp < 0 ? "special" : nm < 0 ? "normalized" : ls < 0 ? "lstrip" :
			    rs < 0 ? "rstrip" : "single_word");
		if (sw)
			return masq_err_set(err, MASQ_ERR_FORMAT,
			    "%s: added_tokens[%zu] ('%s') is single_word, which masq does not match", name, i,
			    json_string_value(c));
		if (utf8_check((const unsigned char *)json_string_value(c), json_string_length(c)) !=
		    json_string_length(c))
			return masq_err_set(err, MASQ_ERR_FORMAT, "%s: added_tokens[%zu]: content is not valid UTF-8",
			    name, i);
		added_tok *d = &t->added[t->n_added++];
		d->len = json_string_length(c);
		d->s = xmalloc(d->len + 1);
		memcpy(d->s, json_string_value(c), d->len + 1);
		d->id = (int32_t)id;
		d->special = sp;
		d->normalized = nm;
		d->lstrip = ls;
		d->rstrip = rs;
	}
	return 0;
}

static int
cmp_added(const void *a, const void *b)
{
	const added_tok *x = a, *y = b;
	if (x->len != y->len)
		return x->len > y->len ? -1 : 1;
	return memcmp(x->s, y->s, x->len);
}

/* the merge "a b" or ["a", "b"] at index i into its two halves */
static int
merge_halves(json_t *m, size_t i, const char **a, size_t *al, const char **b, size_t *bl, const char *name,
    masq_err *err)
{
	if (json_is_string(m)) {
		const char *s = json_string_value(m), *sp = strchr(s, ' ');
		if (sp == NULL || strchr(sp + 1, ' ') != NULL || sp == s || sp[1] == '\0')
			return masq_err_set(err, MASQ_ERR_FORMAT, "%s: model.merges[%zu] ('%s') is not two symbols "
			    "separated by one space", name, i, s);
		*a = s, *al = (size_t)(sp - s), *b = sp + 1, *bl = strlen(sp + 1);
		return 0;
	}
	if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
	    json_is_string(json_array_get(m, 1))) {
		*a = json_string_value(json_array_get(m, 0)), *al = json_string_length(json_array_get(m, 0));
		*b = json_string_value(json_array_get(m, 1)), *bl = json_string_length(json_array_get(m, 1));
		return 0;
	}
	return masq_err_set(err, MASQ_ERR_FORMAT, "%s: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]",
	    name, i);
}

static int
load_model(masq_tok *t, json_t *model, json_t *added_list, const char *name, masq_err *err)
{
	const char *type = jstr(model, "type");
	if (type == NULL || strcmp(type, "BPE") != 0)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: model.type is '%s'; masq reads byte-level BPE "
		    "tokenizers only", name, type ? type : "(none)");
	if (jbool(model, "byte_fallback", 0) != 0)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: model.byte_fallback is not supported", name);
	json_t *dropout = json_object_get(model, "dropout");
	if (dropout != NULL && !json_is_null(dropout) && json_number_value(dropout) != 0.0)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: model.dropout is set: BPE dropout is not "
		    "deterministic, masq does not apply it", name);
	const char *csp = jstr(model, "continuing_subword_prefix"), *eow = jstr(model, "end_of_word_suffix");
	if ((csp != NULL && *csp) || (eow != NULL && *eow))
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: model.continuing_subword_prefix and "
		    "end_of_word_suffix are not supported", name);
	t->ignore_merges = jbool(model, "ignore_merges", 0) == 1;

	json_t *vocab = json_object_get(model, "vocab");
	json_t *merges = json_object_get(model, "merges");
	if (!json_is_object(vocab) || json_object_size(vocab) == 0)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: model.vocab is not a non-empty object", name);
	if (merges != NULL && !json_is_null(merges) && !json_is_array(merges))
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: model.merges is not a list", name);
	if (json_object_size(vocab) > 4000000)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: model.vocab has %zu entries; masq takes at most 4M",
		    name, json_object_size(vocab));

	/* ids */
	json_int_t max_id = -1, id = 0;
	const char *key;
	json_t *v;
	json_object_foreach(vocab, key, v) {
		if (!id_ok(v, &id))
			return masq_err_set(err, MASQ_ERR_FORMAT, "%s: model.vocab['%s'] is not an id in [0, 2^31-2]",
			    name, key);
		if (id > max_id)
			max_id = id;
	}
	if (load_added(t, added_list, name, err) < 0)
		return -1;
	for (int i = 0; i < t->n_added; i++)
		if (t->added[i].id > max_id)
			max_id = t->added[i].id;
	if (max_id >= 16000000)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: token id %lld is too large (masq takes ids below 16M)",
		    name, (long long)max_id);
	t->n_ids = (int32_t)max_id + 1;
	size_t *off = xmalloc(xmul((size_t)t->n_ids, sizeof *off));
	for (int32_t i = 0; i < t->n_ids; i++)
		off[i] = SIZE_MAX;
	t->piece_len = xcalloc((size_t)t->n_ids, sizeof *t->piece_len);
	t->special = xcalloc((size_t)t->n_ids, 1);

	json_object_foreach(vocab, key, v) {
		id_ok(v, &id);
		if (off[id] != SIZE_MAX) {
			free(off);
			return masq_err_set(err, MASQ_ERR_FORMAT, "%s: model.vocab gives id %lld to two strings", name,
			    (long long)id);
		}
		size_t kl = strlen(key);
		off[id] = arena_add(t, key, kl);
		t->piece_len[id] = (uint32_t)kl;
	}
	/* an added token's id spells its content, in or beside the vocabulary */
	for (int i = 0; i < t->n_added; i++) {
		added_tok *a = &t->added[i];
		if (off[a->id] != SIZE_MAX && (t->piece_len[a->id] != a->len ||
		    memcmp(t->arena + off[a->id], a->s, a->len) != 0)) {
			free(off);
			return masq_err_set(err, MASQ_ERR_FORMAT, "%s: added_tokens[%d] ('%s') has id %d, which the "
			    "vocabulary gives to another string", name, i, a->s, a->id);
		}
		if (off[a->id] == SIZE_MAX) {
			off[a->id] = arena_add(t, a->s, a->len);
			t->piece_len[a->id] = (uint32_t)a->len;
		}
		t->special[a->id] = a->special;
	}
	t->piece = xmalloc(xmul((size_t)t->n_ids, sizeof *t->piece));
	for (int32_t i = 0; i < t->n_ids; i++)
		t->piece[i] = off[i] == SIZE_MAX ? NULL : t->arena + off[i];
	free(off);

	/* the model's vocabulary alone (merges, bytes and ignore_merges look
	 * there, as the tokenizers library's BPE does), the added tokens apart
	 * (the arena no longer moves) */
	strmap_init(&t->vocab, json_object_size(vocab));
	json_object_foreach(vocab, key, v) {
		id_ok(v, &id);
		strmap_put(&t->vocab, t->piece[id], t->piece_len[id], (int32_t)id);
	}
	strmap_init(&t->addmap, (size_t)t->n_added);
	for (int i = 0; i < t->n_added; i++)
		strmap_put(&t->addmap, t->piece[t->added[i].id], t->piece_len[t->added[i].id], t->added[i].id);

	/* the byte alphabet */
	byte_alphabet(t->byte_cp);
	for (int b = 0; b < 256; b++) {
		char u[4];
		int n = utf8_put(t->byte_cp[b], u);
		t->byte_id[b] = strmap_get(&t->vocab, u, (size_t)n);
		if (t->byte_id[b] < 0)
			return masq_err_set(err, MASQ_ERR_FORMAT, "%s: the vocabulary lacks the byte-level symbol "
			    "'%.*s' of byte 0x%02x: not a byte-level BPE vocabulary", name, n, u, b);
	}

	/* merges: ranks in order; a pair given twice keeps its last rank, as
	 * the tokenizers library's map of merges does */
	size_t nm = json_array_size(merges);
	t->merge_mask = pow2_at_least(2 * nm + 1) - 1;
	t->merges = xmalloc(xmul((size_t)t->merge_mask + 1, sizeof *t->merges));
	for (uint32_t i = 0; i <= t->merge_mask; i++)
		t->merges[i].key = UINT64_MAX;
	char *cat = NULL;
	size_t cat_cap = 0;
	for (size_t i = 0; i < nm; i++) {
		const char *a = NULL, *b = NULL;
		size_t al = 0, bl = 0;
		if (merge_halves(json_array_get(merges, i), i, &a, &al, &b, &bl, name, err) < 0) {
			free(cat);
			return -1;
		}
		int32_t ia = strmap_get(&t->vocab, a, al), ib = strmap_get(&t->vocab, b, bl);
		if (al + bl > cat_cap) {
			cat_cap = 2 * (al + bl);
			cat = xrealloc(cat, cat_cap);
		}
		memcpy(cat, a, al);
		memcpy(cat + al, b, bl);
		int32_t im = strmap_get(&t->vocab, cat, al + bl);
		if (ia < 0 || ib < 0 || im < 0) {
			free(cat);
			return masq_err_set(err, MASQ_ERR_FORMAT, "%s: model.merges[%zu] ('%.*s' '%.*s'): '%.*s' is not "
			    "in the vocabulary", name, i, (int)al, a, (int)bl, b,
			    ia < 0 ? (int)al : ib < 0 ? (int)bl : (int)(al + bl), ia < 0 ? a : ib < 0 ? b : cat);
		}
		uint64_t k = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
		for (uint32_t s = (uint32_t)hash_u64(k) & t->merge_mask;; s = (s + 1) & t->merge_mask) {
			merge_ent *e = &t->merges[s];
			if (e->key == UINT64_MAX || e->key == k) {
				e->key = k;
				e->rank = (int32_t)i;
				e->id = im;
				break;
			}
		}
	}
	free(cat);
	return 0;
}

static void
index_added(masq_tok *t)
{
	if (t->n_added > 0)
		qsort(t->added, (size_t)t->n_added, sizeof *t->added, cmp_added);
	size_t w = (size_t)t->n_added + 1;
	t->first = xmalloc(xmul(256 * w, sizeof *t->first));
	for (int b = 0; b < 256; b++) {
		int16_t *row = t->first + (size_t)b * w;
		int k = 0;
		for (int i = 0; i < t->n_added; i++)
			if ((unsigned char)t->added[i].s[0] == b)
				row[k++] = (int16_t)i;
		row[k] = -1;
	}
}

int
tok_load_buf(masq_tok **out, const char *buf, size_t len, const char *name, masq_err *err)
{
	json_error_t je;
	json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	*out = NULL;
	if (root == NULL)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: not a JSON document: line %d: %s", name, je.line,
		    je.text);
	if (!json_is_object(root)) {
		json_decref(root);
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: not a JSON object", name);
	}
	masq_tok *t = xcalloc(1, sizeof *t);
	int rc = -1;
	json_t *model = json_object_get(root, "model");
	if (!json_is_object(model)) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: no model object: not a tokenizer.json", name);
		goto done;
	}
	if (load_model(t, model, json_object_get(root, "added_tokens"), name, err) < 0 ||
	    load_normalizer(t, json_object_get(root, "normalizer"), name, err) < 0 ||
	    load_pretokenizer(t, json_object_get(root, "pre_tokenizer"), name, err) < 0)
		goto done;
	index_added(t);
	t->md = pcre2_match_data_create(1, NULL);
	t->mctx = pcre2_match_context_create(NULL);
	t->jit = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
	if (t->md == NULL || t->mctx == NULL || t->jit == NULL)
		fatal("out of memory (pcre2 match data)");
	pcre2_jit_stack_assign(t->mctx, NULL, t->jit);
	rc = 0;
done:
	json_decref(root);
	if (rc < 0)
		tok_free(t);
	else
		*out = t;
	return rc;
}

int
tok_load(masq_tok **out, const char *path, masq_err *err)
{
	size_t len;
	*out = NULL;
	char *buf = masq_read_file(path, TOK_MAX_FILE, &len, err);
	if (buf == NULL)
		return -1;
	int rc = tok_load_buf(out, buf, len, path, err);
	free(buf);
	return rc;
}

/* ---- encoding ---------------------------------------------------------- */

static int
merge_get(const masq_tok *t, int32_t a, int32_t b, int32_t *rank, int32_t *id)
{
	uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
	for (uint32_t s = (uint32_t)hash_u64(k) & t->merge_mask;; s = (s + 1) & t->merge_mask) {
		const merge_ent *e = &t->merges[s];
		if (e->key == UINT64_MAX)
			return 0;
		if (e->key == k) {
			*rank = e->rank;
			*id = e->id;
			return 1;
		}
	}
}

static int
heap_less(const struct heap_ent *x, const struct heap_ent *y)
{
	return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static void
heap_push(masq_tok *t, size_t *n, struct heap_ent e)
{
	if (*n == t->heap_cap) {
		t->heap_cap = t->heap_cap ? 2 * t->heap_cap : 64;
		t->heap = xrealloc(t->heap, xmul(t->heap_cap, sizeof *t->heap));
	}
	size_t i = (*n)++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!heap_less(&e, &t->heap[p]))
			break;
		t->heap[i] = t->heap[p];
		i = p;
	}
	t->heap[i] = e;
}

static struct heap_ent
heap_pop(masq_tok *t, size_t *n)
{
	struct heap_ent top = t->heap[0], last = t->heap[--(*n)];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= *n)
			break;
		if (c + 1 < *n && heap_less(&t->heap[c + 1], &t->heap[c]))
			c++;
		if (!heap_less(&t->heap[c], &last))
			break;
		t->heap[i] = t->heap[c];
		i = c;
	}
	if (*n > 0)
		t->heap[i] = last;
	return top;
}

static void
push_pair(masq_tok *t, size_t *hn, int32_t pos)
{
	int32_t nx = t->next[pos], rank, id;
	if (nx < 0 || !merge_get(t, t->sym[pos], t->sym[nx], &rank, &id))
		return;
	heap_push(t, hn, (struct heap_ent){rank, pos, t->sym[pos], t->sym[nx]});
}

/* BPE of one piece: the symbols of its bytes merged by rank, the lowest
 * rank first and, between equal ranks, the leftmost. */
static void
bpe_merge(masq_tok *t, const unsigned char *s, size_t n, tok_ids *ids)
{
	if (n > t->scratch_cap) {
		t->scratch_cap = n * 2;
		t->sym = xrealloc(t->sym, xmul(t->scratch_cap, sizeof *t->sym));
		t->prev = xrealloc(t->prev, xmul(t->scratch_cap, sizeof *t->prev));
		t->next = xrealloc(t->next, xmul(t->scratch_cap, sizeof *t->next));
	}
	for (size_t i = 0; i < n; i++) {
		t->sym[i] = t->byte_id[s[i]];
		t->prev[i] = (int32_t)i - 1;
		t->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
	}
	size_t hn = 0;
	for (size_t i = 0; i + 1 < n; i++)
		push_pair(t, &hn, (int32_t)i);
	while (hn > 0) {
		struct heap_ent e = heap_pop(t, &hn);
		int32_t nx = t->next[e.pos];
		/* stale: a neighbour merged since this pair was queued */
		if (t->sym[e.pos] != e.l || nx < 0 || t->sym[nx] != e.r)
			continue;
		int32_t rank, id;
		merge_get(t, e.l, e.r, &rank, &id);
		t->sym[e.pos] = id;
		t->sym[nx] = -1;
		t->next[e.pos] = t->next[nx];
		if (t->next[nx] >= 0)
			t->prev[t->next[nx]] = e.pos;
		if (t->prev[e.pos] >= 0)
			push_pair(t, &hn, t->prev[e.pos]);
		push_pair(t, &hn, e.pos);
	}
	for (int32_t i = 0; i >= 0; i = t->next[i])
		tok_ids_push(ids, t->sym[i]);
}

static void
cache_flush(masq_tok *t)
{
	if (t->cache == NULL) {
		t->cache = xmalloc(xmul(CACHE_SLOTS, sizeof *t->cache));
		t->ckeys = xmalloc(CACHE_ARENA);
		t->cids = xmalloc(xmul(CACHE_ARENA / 4, sizeof *t->cids));
	}
	memset(t->cache, 0, CACHE_SLOTS * sizeof *t->cache);
	t->ckeys_len = t->cids_len = t->cache_n = 0;
}

static void
bpe_piece(masq_tok *t, const unsigned char *s, size_t n, tok_ids *ids)
{
	if (n == 1) {
		tok_ids_push(ids, t->byte_id[s[0]]);
		return;
	}
	uint64_t h = 0;
	cache_ent *slot = NULL;
	if (n <= CACHE_MAX_PIECE) {
		if (t->cache == NULL)
			cache_flush(t);
		h = hash_bytes(s, n);
		for (uint32_t i = (uint32_t)h & (CACHE_SLOTS - 1);; i = (i + 1) & (CACHE_SLOTS - 1)) {
			cache_ent *e = &t->cache[i];
			if (!e->used) {
				slot = e;
				break;
			}
			if (e->h == h && e->klen == n && memcmp(t->ckeys + e->koff, s, n) == 0) {
				for (uint32_t k = 0; k < e->ilen; k++)
					tok_ids_push(ids, t->cids[e->ioff + k]);
				return;
			}
		}
	}
	size_t first = ids->n;
	int whole = -1;
	if (t->ignore_merges) {
		/* a piece the vocabulary has whole is that token, merges or not */
		if (4 * n > t->bl_cap) {
			t->bl_cap = 8 * n;
			t->bl = xrealloc(t->bl, t->bl_cap);
		}
		size_t m = 0;
		for (size_t i = 0; i < n; i++)
			m += (size_t)utf8_put(t->byte_cp[s[i]], t->bl + m);
		whole = strmap_get(&t->vocab, t->bl, m);
	}
	if (whole >= 0)
		tok_ids_push(ids, whole);
	else
		bpe_merge(t, s, n, ids);
	if (slot == NULL)
		return;
	size_t got = ids->n - first;
	if (t->cache_n * 2 >= CACHE_SLOTS || t->ckeys_len + n > CACHE_ARENA || t->cids_len + got > CACHE_ARENA / 4) {
		cache_flush(t);
		/* the slot found before the flush is gone: find it again */
		for (uint32_t i = (uint32_t)h & (CACHE_SLOTS - 1);; i = (i + 1) & (CACHE_SLOTS - 1))
			if (!t->cache[i].used) {
				slot = &t->cache[i];
				break;
			}
	}
	memcpy(t->ckeys + t->ckeys_len, s, n);
	memcpy(t->cids + t->cids_len, ids->v + first, got * sizeof *ids->v);
	*slot = (cache_ent){h, (uint32_t)t->ckeys_len, (uint32_t)n, (uint32_t)t->cids_len, (uint32_t)got, 1};
	t->ckeys_len += n;
	t->cids_len += got;
	t->cache_n++;
}

/* The pre-tokenizer's Split steps from level on: matches and the gaps
 * between them become pieces (Isolated), each cut again by the next
 * pattern, and the last level's pieces go to BPE. */
static int
split_level(masq_tok *t, int level, const char *s, size_t n, tok_ids *ids, masq_err *err)
{
	if (n == 0)
		return 0;
	if (level == t->n_re) {
		bpe_piece(t, (const unsigned char *)s, n, ids);
		return 0;
	}
	size_t off = 0, done = 0;
	while (off < n) {
		int rc = pcre2_match(t->re[level], (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, t->md, t->mctx);
		if (rc == PCRE2_ERROR_JIT_STACKLIMIT)	/* the interpreter, whose heap grows */
			rc = pcre2_match(t->re[level], (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, t->md,
			    t->mctx);
		if (rc == PCRE2_ERROR_NOMATCH)
			break;
		if (rc < 0) {
			PCRE2_UCHAR msg[256];
			pcre2_get_error_message(rc, msg, sizeof msg);
			return masq_err_set(err, MASQ_ERR_FORMAT, "the pre-tokenizer's pattern %d failed: %s", level + 1,
			    (const char *)msg);
		}
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
		size_t ms = ov[0], me = ov[1];
		if (me == ms) {
			/* an empty match splits nothing: step over one character */
			off = ms + 1;
			while (off < n && ((unsigned char)s[off] & 0xc0) == 0x80)
				off++;
			continue;
		}
		if (ms > done && split_level(t, level + 1, s + done, ms - done, ids, err) < 0)
			return -1;
		if (split_level(t, level + 1, s + ms, me - ms, ids, err) < 0)
			return -1;
		done = off = me;
	}
	if (done < n)
		return split_level(t, level + 1, s + done, n - done, ids, err);
	return 0;
}

/* The next added token (of the normalized kind asked) at or after from in
 * s[0, n): leftmost, then longest.  Returns its index in t->added, or -1. */
static int
added_find(const masq_tok *t, const char *s, size_t n, size_t from, int normalized, int flags, size_t *at)
{
	if (t->n_added == 0)
		return -1;
	size_t w = (size_t)t->n_added + 1;
	for (size_t i = from; i < n; i++) {
		const int16_t *row = t->first + (size_t)(unsigned char)s[i] * w;
		for (; *row >= 0; row++) {
			const added_tok *a = &t->added[*row];
			(void)flags;
			if (a->normalized != normalized)
				continue;
			if (a->len <= n - i && memcmp(s + i, a->s, a->len) == 0) {
				*at = i;
				return *row;
			}
		}
	}
	return -1;
}

static int32_t
char_before(const char *s, size_t lo, size_t pos, size_t *start)
{
	size_t i = pos - 1;
	while (i > lo && ((unsigned char)s[i] & 0xc0) == 0x80)
		i--;
	utf8proc_int32_t c;
	utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(pos - i), &c);
	*start = i;
	return c;
}

/* Cut s[0, n) at the added tokens of the kind asked; the text between goes
 * to next (normalize-and-split or the pre-tokenizer). */
static int
split_added(masq_tok *t, const char *s, size_t n, int normalized, int flags, tok_ids *ids, masq_err *err,
    int (*next)(masq_tok *, const char *, size_t, int, tok_ids *, masq_err *))
{
	size_t pos = 0, from = 0;
	for (;;) {
		size_t at;
		int k = added_find(t, s, n, from, normalized, flags, &at);
		if (k < 0)
			break;
		const added_tok *a = &t->added[k];
		if (a->special && (flags & TOK_SPLIT_SPECIAL)) {
			/* text, but its span is taken: the library matches it and
			 * then leaves it to the text, so nothing inside it matches */
			from = at + a->len;
			continue;
		}
		size_t ms = at, me = at + a->len;
		if (a->lstrip) {
			size_t st;
			while (ms > pos && is_white(char_before(s, pos, ms, &st)))
				ms = st;
		}
		if (a->rstrip) {
			utf8proc_int32_t c;
			utf8proc_ssize_t l;
			while (me < n && (l = utf8proc_iterate((const utf8proc_uint8_t *)s + me,
			    (utf8proc_ssize_t)(n - me), &c)) > 0 && is_white(c))
				me += (size_t)l;
		}
		if (ms > pos && next(t, s + pos, ms - pos, flags, ids, err) < 0)
			return -1;
		tok_ids_push(ids, a->id);
		pos = from = me;
	}
	if (pos < n)
		return next(t, s + pos, n - pos, flags, ids, err);
	return 0;
}

static int
pretokenize(masq_tok *t, const char *s, size_t n, int flags, tok_ids *ids, masq_err *err)
{
	(void)flags;
	return split_level(t, 0, s, n, ids, err);
}

static int
normalize_then(masq_tok *t, const char *s, size_t n, int flags, tok_ids *ids, masq_err *err)
{
	int ascii = 1;
	for (size_t i = 0; i < n && ascii; i++)
		ascii = (unsigned char)s[i] < 0x80;
	if (t->norm == NORM_NONE || ascii)	/* every normal form leaves ASCII as it is */
		return split_added(t, s, n, 1, flags, ids, err, pretokenize);
	int opt = UTF8PROC_STABLE;
	switch (t->norm) {
	case NORM_NFC: opt |= UTF8PROC_COMPOSE; break;
	case NORM_NFD: opt |= UTF8PROC_DECOMPOSE; break;
	case NORM_NFKC: opt |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
	case NORM_NFKD: opt |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
	default: break;
	}
	utf8proc_uint8_t *d = NULL;
	utf8proc_ssize_t dn = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &d, opt);
	if (dn < 0)
		return masq_err_set(err, MASQ_ERR_FORMAT, "normalizing the text failed: %s", utf8proc_errmsg(dn));
	int rc = split_added(t, (const char *)d, (size_t)dn, 1, flags, ids, err, pretokenize);
	free(d);
	return rc;
}

int
tok_encode(masq_tok *t, const char *text, size_t len, int flags, tok_ids *ids, masq_err *err)
{
	size_t bad = utf8_check((const unsigned char *)text, len);
	if (bad < len)
		return masq_err_set(err, MASQ_ERR_FORMAT, "not valid UTF-8 at byte %zu (0x%02x)", bad + 1,
		    (unsigned char)text[bad]);
	size_t n0 = ids->n;
	if (split_added(t, text, len, 0, flags, ids, err, normalize_then) < 0) {
		ids->n = n0;
		return -1;
	}
	return 0;
}

/* ---- lookups ----------------------------------------------------------- */

const char *
tok_piece(const masq_tok *t, int32_t id, size_t *len)
{
	if (id < 0 || id >= t->n_ids || t->piece[id] == NULL)
		return NULL;
	if (len != NULL)
		*len = t->piece_len[id];
	return t->piece[id];
}

int
tok_is_special(const masq_tok *t, int32_t id)
{
	return id >= 0 && id < t->n_ids && t->special[id];
}

static int
is_added(const masq_tok *t, int32_t id)
{
	for (int i = 0; i < t->n_added; i++)
		if (t->added[i].id == id)
			return 1;
	return 0;
}

int
tok_bytes(const masq_tok *t, int32_t id, char *buf, size_t cap)
{
	size_t n;
	const char *p = tok_piece(t, id, &n);
	if (p == NULL)
		return -1;
	if (is_added(t, id)) {
		if (n > cap)
			n = cap;
		memcpy(buf, p, n);
		return (int)n;
	}
	size_t o = 0, i = 0;
	while (i < n && o < cap) {
		utf8proc_int32_t c;
		utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)p + i, (utf8proc_ssize_t)(n - i), &c);
		if (l <= 0)
			break;
		int b = -1;
		for (int k = 0; k < 256 && b < 0; k++)
			if (t->byte_cp[k] == (uint32_t)c)
				b = k;
		if (b >= 0) {
			buf[o++] = (char)b;
		} else {
			/* not of the byte alphabet: the symbol itself */
			if (o + (size_t)l > cap)
				break;
			memcpy(buf + o, p + i, (size_t)l);
			o += (size_t)l;
		}
		i += (size_t)l;
	}
	return (int)o;
}

int32_t
tok_id(const masq_tok *t, const char *s)
{
	int32_t id = strmap_get(&t->vocab, s, strlen(s));
	return id >= 0 || t->addmap.e == NULL ? id : strmap_get(&t->addmap, s, strlen(s));
}

int32_t
tok_n_ids(const masq_tok *t)
{
	return t->n_ids;
}
