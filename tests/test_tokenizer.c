/*
 * test_tokenizer.c: the byte-level BPE of core/tokenizer.c held against a
 * plain twin written here from the definition (merge the adjacent pair of
 * lowest rank, the leftmost of equal ranks, until none has a rank), on a
 * synthetic tokenizer.json whose merges collide a lot; bytes back from
 * ids; pathological pieces (a megabyte of one letter) in bounded time; and
 * every malformed tokenizer.json refused by name.  Agreement with a real
 * tokenizer (Qwen's, through transformers.js) is tests/tokenize.sh.
 */
#include "config.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/tokenizer.h"
#include "core/util.h"
#include "tests/tap.h"

/* GPT-2's bytes_to_unicode, from its definition (encoder.py) */
static void
gpt2_bytes(char sym[256][4])
{
	int n = 0;
	for (int b = 0; b < 256; b++) {
		int cp = ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) ? b : 256 + n++;
		memset(sym[b], 0, 4);
		if (cp < 0x80) {
			sym[b][0] = (char)cp;
		} else {
			sym[b][0] = (char)(0xc0 | (cp >> 6));
			sym[b][1] = (char)(0x80 | (cp & 0x3f));
		}
	}
}

#define MAXV 4096
static char *vstr[MAXV];	/* the synthetic vocabulary, by id */
static int nv;
static int mrg_a[MAXV], mrg_b[MAXV], nm;
static int *rank, merged[MAXV];	/* the twin's: [a * nv + b] -> rank or -1; merge -> id */

static int
vfind(const char *s)
{
	for (int i = 0; i < nv; i++)
		if (strcmp(vstr[i], s) == 0)
			return i;
	return -1;
}

/* 256 byte symbols, then merges drawn over the bytes "ab c" so that many
 * pairs compete */
static char *
synth_json(uint64_t seed, int merges, int ignore_merges)
{
	char sym[256][4];
	gpt2_bytes(sym);
	for (int i = 0; i < nv; i++)
		free(vstr[i]);
	nv = nm = 0;
	for (int b = 0; b < 256; b++)
		vstr[nv++] = xstrdup(sym[b]);
	int base[4] = {'a', 'b', ' ', 'c'};
	int pool[MAXV], np = 0;
	for (int i = 0; i < 4; i++)
		pool[np++] = vfind(sym[base[i]]);
	rng r;
	rng_init(&r, seed);
	while (nm < merges) {
		int a = pool[(int)rng_below(&r, (uint64_t)np)], b = pool[(int)rng_below(&r, (uint64_t)np)];
		char cat[256];
		size_t la = strlen(vstr[a]), lb = strlen(vstr[b]);
		if (la + lb >= sizeof cat)
			continue;
		memcpy(cat, vstr[a], la);
		memcpy(cat + la, vstr[b], lb + 1);
		int dup = 0;
		for (int k = 0; k < nm; k++)
			dup |= mrg_a[k] == a && mrg_b[k] == b;
		if (dup)
			continue;
		int id = vfind(cat);
		if (id < 0) {
			id = nv;
			vstr[nv++] = xstrdup(cat);
			pool[np++] = id;
		}
		mrg_a[nm] = a, mrg_b[nm] = b, nm++;
	}
	/* the twin's tables: the rank of each pair, the merged id of each merge */
	free(rank);
	rank = xmalloc(xmul((size_t)nv * (size_t)nv, sizeof *rank));
	for (size_t i = 0; i < (size_t)nv * (size_t)nv; i++)
		rank[i] = -1;
	for (int k = 0; k < nm; k++) {
		char cat[512];
		snprintf(cat, sizeof cat, "%s%s", vstr[mrg_a[k]], vstr[mrg_b[k]]);
		rank[mrg_a[k] * nv + mrg_b[k]] = k;
		merged[k] = vfind(cat);
	}
	json_t *vocab = json_object(), *ml = json_array();
	for (int i = 0; i < nv; i++)
		json_object_set_new(vocab, vstr[i], json_integer(i));
	for (int k = 0; k < nm; k++)
		json_array_append_new(ml, json_pack("[ss]", vstr[mrg_a[k]], vstr[mrg_b[k]]));
	json_t *root = json_pack("{s:o, s:n, s:{s:s, s:b, s:b}, s:{s:s, s:o, s:o, s:b}}",
	    "added_tokens", json_pack("[{s:i, s:s, s:b, s:b}]", "id", nv, "content", "<|x|>", "special", 1,
	    "normalized", 0),
	    "normalizer",
	    "pre_tokenizer", "type", "ByteLevel", "add_prefix_space", 0, "use_regex", 0,
	    "model", "type", "BPE", "vocab", vocab, "merges", ml, "ignore_merges", ignore_merges);
	char *s = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	return s;
}

/* the twin: symbols as strings, the lowest-rank pair merged, leftmost first */
static int
twin_bpe(const unsigned char *s, size_t n, int32_t *out)
{
	char sym[256][4];
	gpt2_bytes(sym);
	int *p = xmalloc(xmul(n ? n : 1, sizeof *p));
	size_t m = n;
	for (size_t i = 0; i < n; i++)
		p[i] = vfind(sym[s[i]]);
	for (;;) {
		int best = -1;
		size_t at = 0;
		for (size_t i = 0; i + 1 < m; i++) {
			int k = rank[p[i] * nv + p[i + 1]];
			if (k >= 0 && (best < 0 || k < best))
				best = k, at = i;
		}
		if (best < 0)
			break;
		p[at] = merged[best];
		memmove(p + at + 1, p + at + 2, (m - at - 2) * sizeof *p);
		m--;
	}
	for (size_t i = 0; i < m; i++)
		out[i] = p[i];
	free(p);
	return (int)m;
}

static void
random_text(rng *r, char *buf, size_t n)
{
	static const char alpha[] = "aabbc  ab";
	for (size_t i = 0; i < n; i++)
		buf[i] = alpha[rng_below(r, sizeof alpha - 1)];
}

static void
test_twin(void)
{
	masq_err err = {0};
	for (int variant = 0; variant < 2; variant++) {
		char *js = synth_json(100 + (uint64_t)variant, 300, 0);
		masq_tok *t;
		if (!tap_ok(tok_load_buf(&t, js, strlen(js), "synthetic", &err) == 0, "synthetic tokenizer %d loads: %s",
		    variant, err.msg)) {
			free(js);
			continue;
		}
		rng r;
		rng_init(&r, 7 + (uint64_t)variant);
		int bad = 0, cases = 0;
		char buf[4000];
		int32_t want[4000];
		for (int c = 0; c < 1500; c++) {
			size_t n = c < 1490 ? rng_below(&r, 120) : 2000 + rng_below(&r, 2000);
			random_text(&r, buf, n);
			tok_ids ids = {0};
			if (tok_encode(t, buf, n, 0, &ids, &err) < 0) {
				bad++;
				continue;
			}
			int m = twin_bpe((unsigned char *)buf, n, want);
			if ((size_t)m != ids.n || (m > 0 && memcmp(want, ids.v, ids.n * sizeof *ids.v) != 0)) {
				if (bad++ == 0)
					tap_diag("first difference: '%.*s' (%zu ids, twin %d)", (int)n, buf, ids.n, m);
			}
			cases++;
			tok_ids_free(&ids);
		}
		tap_ok(bad == 0, "tokenizer %d: heap BPE equals the twin on %d texts (%d differ)", variant, cases, bad);

		/* the added token splits the text and comes back whole */
		tok_ids ids = {0};
		const char *s = "ab<|x|>ba<|x|><|x|>";
		tok_encode(t, s, strlen(s), 0, &ids, &err);
		int nx = 0;
		for (size_t i = 0; i < ids.n; i++)
			nx += ids.v[i] == nv;
		tap_ok(nx == 3, "the added token is matched three times (%d)", nx);
		ids.n = 0;
		tok_encode(t, s, strlen(s), TOK_SPLIT_SPECIAL, &ids, &err);
		nx = 0;
		for (size_t i = 0; i < ids.n; i++)
			nx += ids.v[i] == nv;
		tap_ok(nx == 0, "with TOK_SPLIT_SPECIAL the special token is text (%d matched)", nx);
		tok_ids_free(&ids);
		tok_free(t);
		free(js);
	}
}

/* ids back to bytes give the text again */
static int
round_trip(masq_tok *t, const char *s, size_t n)
{
	tok_ids ids = {0};
	masq_err err = {0};
	if (tok_encode(t, s, n, 0, &ids, &err) < 0)
		return 0;
	char *back = xmalloc(n + 16);
	size_t o = 0;
	int ok = 1;
	for (size_t i = 0; i < ids.n && ok; i++) {
		int k = tok_bytes(t, ids.v[i], back + o, n + 16 - o);
		ok = k >= 0;
		o += (size_t)(k > 0 ? k : 0);
	}
	ok = ok && o == n && memcmp(back, s, n) == 0;
	free(back);
	tok_ids_free(&ids);
	return ok;
}

static void
test_long(void)
{
	masq_err err = {0};
	char *js = synth_json(5, 400, 0);
	masq_tok *t;
	if (tok_load_buf(&t, js, strlen(js), "synthetic", &err) < 0) {
		tap_ok(0, "synthetic tokenizer loads: %s", err.msg);
		free(js);
		return;
	}
	size_t n = (size_t)1 << 20;
	char *buf = xmalloc(n);
	static const char runs[] = "a b";
	for (int k = 0; k < 3; k++) {
		memset(buf, runs[k], n);
		double t0 = masq_now();
		int ok = round_trip(t, buf, n);
		double dt = masq_now() - t0;
		/* a quadratic merge would take hours; this is seconds under ASan */
		tap_ok(ok && dt < 60, "1 MiB of '%c' as one piece: ids back to the same bytes in %.2f s", runs[k], dt);
	}
	rng r;
	rng_init(&r, 11);
	random_text(&r, buf, n);
	tap_ok(round_trip(t, buf, n), "1 MiB of random 'ab c': ids back to the same bytes");
	for (size_t i = 0; i < n; i++)
		buf[i] = (char)(rng_next(&r) & 0xff);
	/* not UTF-8: refused, with the offset */
	tok_ids ids = {0};
	buf[0] = 'x';
	buf[1] = (char)0xff;
	int rc = tok_encode(t, buf, 4, 0, &ids, &err);
	tap_ok(rc < 0 && err.status == MASQ_ERR_FORMAT && strstr(err.msg, "not valid UTF-8 at byte 2") != NULL &&
	    ids.n == 0, "invalid UTF-8 refused at its byte: %s", err.msg);
	const char *cases[] = {"\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "a\x80"};
	int refused = 0;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		refused += tok_encode(t, cases[i], strlen(cases[i]), 0, &ids, &err) < 0;
	tap_ok(refused == 5, "overlong, surrogate, past U+10FFFF, cut short, a lone continuation: %d of 5 refused",
	    refused);
	tok_ids_free(&ids);
	free(buf);
	tok_free(t);
	free(js);
}

/* a tokenizer.json with one field changed must be refused naming it */
static void
refuse(const char *what, const char *json, const char *needle)
{
	masq_err err = {0};
	masq_tok *t = (masq_tok *)1;
	int rc = tok_load_buf(&t, json, strlen(json), "tok.json", &err);
	tap_ok(rc < 0 && t == NULL && strstr(err.msg, needle) != NULL && strstr(err.msg, "tok.json") != NULL,
	    "%s: refused (%s)", what, err.msg);
	if (rc == 0)
		tok_free(t);
}

static void
test_refusals(void)
{
	char *good = synth_json(3, 20, 0);
	json_t *base = json_loads(good, 0, NULL);
	free(good);
	struct { const char *what, *path, *value, *needle; } c[] = {
		{"WordPiece model", "model.type", "\"WordPiece\"", "model.type is 'WordPiece'"},
		{"byte fallback", "model.byte_fallback", "true", "byte_fallback"},
		{"dropout", "model.dropout", "0.1", "dropout"},
		{"subword prefix", "model.continuing_subword_prefix", "\"##\"", "continuing_subword_prefix"},
		{"Metaspace", "pre_tokenizer", "{\"type\":\"Metaspace\"}", "pre_tokenizer 'Metaspace'"},
		{"no pre-tokenizer", "pre_tokenizer", "null", "no pre_tokenizer"},
		{"prefix space", "pre_tokenizer", "{\"type\":\"ByteLevel\",\"add_prefix_space\":true}", "add_prefix_space"},
		{"bad regex", "pre_tokenizer", "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
		    "\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\","
		    "\"add_prefix_space\":false,\"use_regex\":false}]}", "does not compile"},
		{"Split Removed", "pre_tokenizer", "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
		    "\"pattern\":{\"Regex\":\" \"},\"behavior\":\"Removed\",\"invert\":false},{\"type\":\"ByteLevel\","
		    "\"add_prefix_space\":false,\"use_regex\":false}]}", "behavior 'Removed'"},
		{"\\S in a class", "pre_tokenizer", "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
		    "\"pattern\":{\"Regex\":\"[\\\\S]+\"},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":"
		    "\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]}", "inside a character class"},
		{"Lowercase normalizer", "normalizer", "{\"type\":\"Lowercase\"}", "normalizer 'Lowercase'"},
		{"single_word token", "added_tokens", "[{\"id\":1,\"content\":\"x\",\"single_word\":true}]", "single_word"},
		{"empty added token", "added_tokens", "[{\"id\":1,\"content\":\"\"}]", "added_tokens[0]"},
		{"negative id", "model.vocab", "{\"a\":-1}", "model.vocab['a']"},
		{"no byte symbols", "model.vocab", "{\"a\":0}", "byte-level symbol"},
		{"merge of an unknown symbol", "model.merges", "[\"a zz\"]", "'zz' is not in the vocabulary"},
		{"merge of three", "model.merges", "[\"a b c\"]", "model.merges[0]"},
		{"merges not a list", "model.merges", "{}", "model.merges is not a list"},
		{"an added token on a vocabulary id", "added_tokens", "[{\"id\":0,\"content\":\"zz\"}]",
		    "gives to another string"},
	};
	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
		json_t *doc = json_deep_copy(base), *at = doc;
		char path[128];
		snprintf(path, sizeof path, "%s", c[i].path);
		char *key = path, *dot;
		while ((dot = strchr(key, '.')) != NULL) {
			*dot = '\0';
			at = json_object_get(at, key);
			key = dot + 1;
		}
		json_object_set_new(at, key, json_loads(c[i].value, JSON_DECODE_ANY, NULL));
		char *s = json_dumps(doc, JSON_COMPACT);
		refuse(c[i].what, s, c[i].needle);
		free(s);
		json_decref(doc);
	}
	/* what loads: a literal Split, no added tokens at all */
	json_t *doc = json_deep_copy(base);
	json_object_del(doc, "added_tokens");
	json_object_set_new(doc, "pre_tokenizer", json_loads("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":"
	    "\"Split\",\"pattern\":{\"String\":\" \"},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":"
	    "\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]}", 0, NULL));
	char *js = json_dumps(doc, JSON_COMPACT);
	masq_err err = {0};
	masq_tok *t = NULL;
	int rc = tok_load_buf(&t, js, strlen(js), "tok.json", &err);
	tok_ids ids = {0}, parts = {0};
	if (rc == 0)
		rc = tok_encode(t, "ab ab", 5, 0, &ids, &err);
	/* split at the space: the ids of "ab", " ", "ab" one after the other */
	if (rc == 0)
		rc = tok_encode(t, "ab", 2, 0, &parts, &err) | tok_encode(t, " ", 1, 0, &parts, &err) |
		    tok_encode(t, "ab", 2, 0, &parts, &err);
	tap_ok(rc == 0 && ids.n == parts.n && memcmp(ids.v, parts.v, ids.n * sizeof *ids.v) == 0,
	    "a literal Split and no added_tokens load and cut the text at the literal (%s)", err.msg);
	tok_ids_free(&ids);
	tok_ids_free(&parts);
	tok_free(t);
	free(js);
	json_decref(doc);
	json_decref(base);
	refuse("not JSON", "{\"model\": ", "not a JSON document");
	refuse("no model", "{\"added_tokens\": []}", "no model object");
	refuse("duplicate keys", "{\"model\": {}, \"model\": {}}", "not a JSON document");
}

int
main(void)
{
	test_twin();
	test_long();
	test_refusals();
	for (int i = 0; i < nv; i++)
		free(vstr[i]);
	free(rank);
	return tap_done();
}
