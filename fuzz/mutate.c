/*
 * mutate.c: structure-aware mutations for the session targets (fuzz.h).
 * Byte mutations of a session's events or of its database rarely change
 * what restore reads in a way that matters (a layer that becomes -1 needs
 * one byte inserted at one place of kilobytes of JSON); these change one
 * value of the JSON a payload or a settings column holds, one event of a
 * session, or one column of a session row, and leave the rest of the
 * input whole.  The harnesses mix them with libFuzzer's own mutations.
 */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sqlite3.h>

#include "fuzz/fuzz.h"

/* ---- the generator ----------------------------------------------------------- */

unsigned
fz_rand(unsigned *st)
{
	/* xorshift32; never 0 */
	unsigned x = *st ? *st : 0x9e3779b9u;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *st = x;
}

static unsigned
pick(unsigned *st, unsigned n)
{
	return n ? fz_rand(st) % n : 0;
}

/* ---- JSON ----------------------------------------------------------------------- */

/* Strings a payload may hold that mean something to masq. */
static const char *const words[] = {
	"", "text", "vision", "audio", "unified", "all", "rtn", "sq", "mas", "mas-cmc", "usq", "q", "q_proj",
	"down_proj", "gateup", "qkv", "*", "0", "1", "-1", "mae", "mse", "mean", "sum", "F16", "BF16", "F32", "fake",
	"masquant", "compressed-tensors", "24kB", "0B", "1e30", "relative", "absolute", "mas", "deployed", "open",
	"finished", "failed", "0.q.alpha=0.5", "*.*.rank=0", "1.*.method=rtn", "*.gateup.alpha.vision=1",
	"0000000000000000000000000000000000000000000000000000000000000000", "../../etc/passwd", "caf\xc3\xa9",
};

/* A new scalar or small container to put in place of a value. */
static json_t *
interesting(unsigned *st, json_t *old)
{
	static const json_int_t ints[] = {-1, 0, 1, 2, 3, 4, 7, 8, 16, 31, 32, 63, 64, 65, 127, 128, 255, 256,
		10000, 10001, 65536, 1048576, 1048577, 2147483647LL, -2147483648LL, 2147483648LL, 4294967296LL,
		-9007199254740993LL, 9223372036854775807LL, -9223372036854775807LL - 1};
	static const double reals[] = {0.0, -0.0, 0.5, 1.0, -1.0, 1e-30, 1e30, -1e30, 1e308, 2.5, 0.05, 0.9,
		1.0000001};
	switch (pick(st, 9)) {
	case 0:
	case 1:
		if (json_is_integer(old) && pick(st, 2))	/* one up or down, wrapping */
			return json_integer((json_int_t)((unsigned long long)json_integer_value(old) +
			    (pick(st, 2) ? 1ull : ~0ull)));
		return json_integer(ints[pick(st, sizeof ints / sizeof ints[0])]);
	case 2:
		if (json_is_real(old) && pick(st, 2))
			return json_real(json_real_value(old) * (pick(st, 2) ? 2.0 : -1.0));
		return json_real(reals[pick(st, sizeof reals / sizeof reals[0])]);
	case 3:
	case 4:
		return json_string(words[pick(st, sizeof words / sizeof words[0])]);
	case 5:
		return pick(st, 2) ? json_null() : json_boolean(pick(st, 2));
	case 6:
		return pick(st, 2) ? json_object() : json_array();
	case 7:
		/* the same value wrapped, or a list of it */
		return pick(st, 2) ? json_pack("[O]", old) : json_pack("{s:O}", "x", old);
	default:
		return json_integer(pick(st, 3) - 1);
	}
}

struct slot {
	json_t *parent;		/* object or array */
	const char *key;	/* in an object */
	size_t index;		/* in an array */
};

/* Every value below j, as slots of their parents (at most cap). */
static void
collect(json_t *j, struct slot *v, size_t *n, size_t cap)
{
	const char *k;
	json_t *x;
	size_t i;
	if (json_is_object(j)) {
		json_object_foreach(j, k, x) {
			if (*n < cap)
				v[(*n)++] = (struct slot){j, k, 0};
			collect(x, v, n, cap);
		}
	} else if (json_is_array(j)) {
		json_array_foreach(j, i, x) {
			if (*n < cap)
				v[(*n)++] = (struct slot){j, NULL, i};
			collect(x, v, n, cap);
		}
	}
}

char *
fz_json_mutate(const char *text, size_t len, unsigned *st)
{
	json_t *j = json_loadb(text, len, JSON_DECODE_ANY, NULL);
	struct slot v[512];
	size_t n = 0;
	if (j == NULL)
		return NULL;
	collect(j, v, &n, sizeof v / sizeof v[0]);
	unsigned what = pick(st, 8);
	if (n == 0 || what == 0) {
		/* a new key at the top, or the whole value replaced */
		if (json_is_object(j) && pick(st, 2)) {
			static const char *const keys[] = {"layer", "method", "plan", "checkpoint", "stats", "factors",
				"best", "ranks", "epochs", "steps", "skipped", "losses", "sqnr_db", "mae", "held_out",
				"format", "out", "value", "linear", "modality", "assignment", "wbits", "abits", "text",
				"budget", "target", "objective", "model", "calib", "sample_cap", "rank", "eval_split"};
			json_object_set_new(j, keys[pick(st, sizeof keys / sizeof keys[0])], interesting(st, NULL));
		} else {
			json_t *r = interesting(st, j);
			json_decref(j);
			j = r;
		}
	} else {
		struct slot *s = &v[pick(st, (unsigned)n)];
		json_t *old = s->key ? json_object_get(s->parent, s->key) : json_array_get(s->parent, s->index);
		if (what == 1) {
			/* removed */
			if (s->key)
				json_object_del(s->parent, s->key);
			else
				json_array_remove(s->parent, s->index);
		} else if (what == 2 && json_is_array(s->parent)) {
			/* repeated */
			json_array_insert(s->parent, s->index, old);	/* takes its own reference */
		} else {
			json_t *r = interesting(st, old);
			if (s->key)
				json_object_set_new(s->parent, s->key, r);
			else
				json_array_set_new(s->parent, s->index, r);
		}
	}
	char *out = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
	json_decref(j);
	return out;
}

/* ---- a session's events, one line each (fuzz_events.c) ------------------------------- */

static const char *const kinds[] = {"command", "result", "error", "note"};
static const char *const names[] = {
	"open", "calibrate-layer", "set-method", "set-bits", "set-alpha", "search-alpha", "set-rank", "set",
	"quantize-layer", "next-layer", "finish", "export", "note", "train-layer", "allocate-ranks", "undo",
};

struct line {
	const char *p;
	size_t n;
	char *own;	/* replaced: owned text */
};

size_t
fz_events_mutate(uint8_t *data, size_t size, size_t max, unsigned seed)
{
	unsigned st = seed | 1;
	struct line *l = NULL;
	size_t nl = 0;
	const char *p = (const char *)data, *end = p + size;

	if (pick(&st, 3) == 0 || size == 0)
		return LLVMFuzzerMutate(data, size, max);
	while (p < end) {
		const char *e = memchr(p, '\n', (size_t)(end - p));
		size_t n = (size_t)((e ? e : end) - p);
		l = xrealloc(l, (nl + 1) * sizeof *l);
		l[nl++] = (struct line){p, n, NULL};
		p += n + (e != NULL);
	}
	size_t i = pick(&st, (unsigned)nl), j = pick(&st, (unsigned)nl);
	unsigned what = pick(&st, 10);
	if (what < 5) {
		/* one value of a line's JSON (its last field) */
		const char *t = memchr(l[i].p, '\t', l[i].n), *t2 = t ? memchr(t + 1, '\t', l[i].n - (size_t)(t + 1 - l[i].p)) : NULL;
		const char *js = t2 ? t2 + 1 : t ? t + 1 : NULL;
		char *m = js ? fz_json_mutate(js, l[i].n - (size_t)(js - l[i].p), &st) : NULL;
		if (m != NULL) {
			size_t head = (size_t)(js - l[i].p), mn = strlen(m);
			l[i].own = xmalloc(head + mn + 1);
			memcpy(l[i].own, l[i].p, head);
			memcpy(l[i].own + head, m, mn + 1);
			l[i].p = l[i].own;
			l[i].n = head + mn;
			free(m);
		}
	} else if (what < 7) {
		/* another kind or name */
		const char *t = memchr(l[i].p, '\t', l[i].n);
		if (t != NULL) {
			const char *t2 = memchr(t + 1, '\t', l[i].n - (size_t)(t + 1 - l[i].p));
			const char *rest = t2 ? t2 : l[i].p + l[i].n;
			char buf[64];
			int k = what == 5;
			size_t hn;
			if (k)
				hn = (size_t)snprintf(buf, sizeof buf, "%s\t%.*s", kinds[pick(&st, 4)],
				    (int)(rest - t - 1), t + 1);
			else
				hn = (size_t)snprintf(buf, sizeof buf, "%.*s\t%s", (int)(t - l[i].p), l[i].p,
				    names[pick(&st, sizeof names / sizeof names[0])]);
			if (hn < sizeof buf) {
				size_t rn = (size_t)(l[i].p + l[i].n - rest);
				char *o = xmalloc(hn + rn + 1);
				memcpy(o, buf, hn);
				memcpy(o + hn, rest, rn);
				o[hn + rn] = '\0';
				l[i].own = o;
				l[i].p = o;
				l[i].n = hn + rn;
			}
		}
	} else if (what == 7 && nl > 1) {
		/* a line left out */
		memmove(&l[i], &l[i + 1], (nl - i - 1) * sizeof *l);
		nl--;
	} else if (what == 8) {
		/* a line repeated after another */
		l = xrealloc(l, (nl + 1) * sizeof *l);
		memmove(&l[j + 1], &l[j], (nl - j) * sizeof *l);
		l[j] = l[i < j ? i : i + 1];
		l[j].own = NULL;
		nl++;
	} else {
		/* two lines swapped */
		struct line t = l[i];
		l[i] = l[j];
		l[j] = t;
	}
	/* the result, if it fits */
	size_t total = 0;
	for (size_t k = 0; k < nl; k++)
		total += l[k].n + 1;
	uint8_t *buf = NULL;
	if (total <= max) {
		buf = xmalloc(total ? total : 1);
		size_t o = 0;
		for (size_t k = 0; k < nl; k++) {
			memcpy(buf + o, l[k].p, l[k].n);
			o += l[k].n;
			buf[o++] = '\n';
		}
	}
	for (size_t k = 0; k < nl; k++)
		free(l[k].own);
	free(l);
	if (buf == NULL)
		return LLVMFuzzerMutate(data, size, max);
	memcpy(data, buf, total);
	free(buf);
	return total;
}

/* ---- a session database (fuzz_db.c) ------------------------------------------------ */

/* Run sql on h with the append-only triggers out of the way (a hostile
 * file need not have them; the mutated file keeps them); 0 when it ran. */
static int
db_write(sqlite3 *h, const char *sql, const char *text, int64_t a, int64_t b)
{
	sqlite3_stmt *st = NULL, *tr = NULL;
	char *trig[8];
	int nt = 0, rc = -1;
	if (sqlite3_prepare_v2(h, "SELECT name, sql FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = 'events'",
	    -1, &tr, NULL) != SQLITE_OK)
		return -1;
	while (nt < 8 && sqlite3_step(tr) == SQLITE_ROW) {
		const char *s = (const char *)sqlite3_column_text(tr, 1);
		char *d = sqlite3_mprintf("DROP TRIGGER \"%w\"", (const char *)sqlite3_column_text(tr, 0));
		if (s == NULL || d == NULL) {
			sqlite3_free(d);
			continue;
		}
		trig[nt++] = sqlite3_mprintf("%s", s);
		sqlite3_exec(h, d, NULL, NULL, NULL);
		sqlite3_free(d);
	}
	sqlite3_finalize(tr);
	if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK) {
		if (text != NULL)
			sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
		else
			sqlite3_bind_int64(st, 1, a);
		sqlite3_bind_int64(st, 2, b);
		rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
	}
	sqlite3_finalize(st);
	for (int i = 0; i < nt; i++) {
		sqlite3_exec(h, trig[i], NULL, NULL, NULL);
		sqlite3_free(trig[i]);
	}
	return rc;
}

/* The k-th row's rowid and text column col of table (k below its count),
 * or 0 when there is none. */
static int64_t
db_row(sqlite3 *h, const char *table, const char *col, unsigned *st, char **text)
{
	sqlite3_stmt *q;
	int64_t n = 0, id = 0;
	char *sql = sqlite3_mprintf("SELECT count(*) FROM \"%w\"", table);
	if (sqlite3_prepare_v2(h, sql, -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
		n = sqlite3_column_int64(q, 0);
	sqlite3_finalize(q);
	sqlite3_free(sql);
	if (n <= 0)
		return 0;
	sql = sqlite3_mprintf("SELECT rowid, \"%w\" FROM \"%w\" LIMIT 1 OFFSET %lld", col, table,
	    (long long)(pick(st, (unsigned)(n > 1000000 ? 1000000 : n))));
	if (sqlite3_prepare_v2(h, sql, -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW) {
		id = sqlite3_column_int64(q, 0);
		if (text != NULL) {
			const unsigned char *t = sqlite3_column_text(q, 1);
			*text = t ? xstrdup((const char *)t) : NULL;
		}
	}
	sqlite3_finalize(q);
	sqlite3_free(sql);
	return id;
}

/* One change to the database h; 0 when one was made. */
static int
db_change(sqlite3 *h, unsigned *st)
{
	static const char *const cols[] = {"created", "masq_version", "seed", "threads", "model_path", "model_fp",
		"calib_path", "calib_fp", "status", "environment"};
	char *t = NULL, *m = NULL, sql[256];
	int64_t id;
	int rc = -1;
	sqlite3_exec(h, "PRAGMA ignore_check_constraints = ON", NULL, NULL, NULL);
	switch (pick(st, 8)) {
	case 0:
	case 1:
	case 2:
		/* one value of an event's payload */
		if ((id = db_row(h, "events", "payload", st, &t)) != 0 && t != NULL &&
		    (m = fz_json_mutate(t, strlen(t), st)) != NULL)
			rc = db_write(h, "UPDATE events SET payload = ?1 WHERE rowid = ?2", m, 0, id);
		break;
	case 3: {
		/* one value of a session's settings or environment */
		const char *c = pick(st, 3) ? "settings" : "environment";
		if ((id = db_row(h, "sessions", c, st, &t)) != 0 && t != NULL &&
		    (m = fz_json_mutate(t, strlen(t), st)) != NULL) {
			snprintf(sql, sizeof sql, "UPDATE sessions SET %s = ?1 WHERE rowid = ?2", c);
			rc = db_write(h, sql, m, 0, id);
		}
		break;
	}
	case 4:
		/* another name or kind for an event */
		if ((id = db_row(h, "events", "name", st, NULL)) != 0)
			rc = pick(st, 3) ? db_write(h, "UPDATE events SET name = ?1 WHERE rowid = ?2",
			    names[pick(st, sizeof names / sizeof names[0])], 0, id) :
			    db_write(h, "UPDATE events SET kind = ?1 WHERE rowid = ?2", kinds[pick(st, 4)], 0, id);
		break;
	case 5:
		/* an event left out */
		if ((id = db_row(h, "events", "name", st, NULL)) != 0)
			rc = db_write(h, "DELETE FROM events WHERE rowid = ?1 AND ?2 = ?2", NULL, id, 0);
		break;
	case 6: {
		/* a column of a session row: NULL, a number or a word */
		const char *c = cols[pick(st, sizeof cols / sizeof cols[0])];
		if ((id = db_row(h, "sessions", "id", st, NULL)) == 0)
			break;
		unsigned w = pick(st, 3);
		if (w == 0) {
			snprintf(sql, sizeof sql, "UPDATE sessions SET %s = NULL WHERE rowid = ?2 AND ?1 IS ?1", c);
			rc = db_write(h, sql, NULL, 0, id);
		} else if (w == 1) {
			static const int64_t v[] = {-1, 0, 1, 2, 4096, 4097, 2147483647LL, 2147483648LL, -9223372036854775807LL};
			snprintf(sql, sizeof sql, "UPDATE sessions SET %s = ?1 WHERE rowid = ?2", c);
			rc = db_write(h, sql, NULL, v[pick(st, sizeof v / sizeof v[0])], id);
		} else {
			snprintf(sql, sizeof sql, "UPDATE sessions SET %s = ?1 WHERE rowid = ?2", c);
			rc = db_write(h, sql, words[pick(st, sizeof words / sizeof words[0])], 0, id);
		}
		break;
	}
	default:
		/* a session copied, with its events */
		if ((id = db_row(h, "sessions", "id", st, NULL)) != 0 &&
		    db_write(h, "INSERT INTO sessions (created, masq_version, seed, threads, model_path, model_fp, calib_path,"
		    " calib_fp, settings, status, environment) SELECT created, masq_version, seed, threads, model_path,"
		    " model_fp, calib_path, calib_fp, settings, status, environment FROM sessions WHERE id = ?1 AND ?2 = ?2",
		    NULL, id, 0) == 0)
			rc = db_write(h, "INSERT INTO events (session, seq, kind, name, payload, created) SELECT"
			    " (SELECT max(id) FROM sessions), seq, kind, name, payload, created FROM events WHERE session = ?1"
			    " AND ?2 = ?2 ORDER BY seq", NULL, id, 0);
		break;
	}
	free(t);
	free(m);
	return rc;
}

size_t
fz_db_mutate(uint8_t *data, size_t size, size_t max, unsigned seed)
{
	unsigned st = seed | 1;
	sqlite3 *h = NULL;
	size_t out = 0;

	if (pick(&st, 3) == 0 || size < 100 || memcmp(data, "SQLite format 3", 16) != 0)
		return LLVMFuzzerMutate(data, size, max);
	/* an in-memory copy (a WAL-mode file is opened as a rollback one) */
	int wal = data[18] == 2 && data[19] == 2;
	sqlite3_int64 cap = (sqlite3_int64)size + 65536;
	unsigned char *img = sqlite3_malloc64((sqlite3_uint64)cap);
	if (img == NULL)
		return LLVMFuzzerMutate(data, size, max);
	memcpy(img, data, size);
	if (wal)
		img[18] = img[19] = 1;
	if (sqlite3_open_v2(":memory:", &h, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
	    sqlite3_deserialize(h, "main", img, (sqlite3_int64)size, cap,
	    SQLITE_DESERIALIZE_FREEONCLOSE | SQLITE_DESERIALIZE_RESIZEABLE) != SQLITE_OK) {
		sqlite3_close(h);
		return LLVMFuzzerMutate(data, size, max);
	}
	if (db_change(h, &st) == 0) {
		sqlite3_int64 n = 0;
		unsigned char *o = sqlite3_serialize(h, "main", &n, 0);
		if (o != NULL && n >= 100 && (size_t)n <= max) {
			if (wal)
				o[18] = o[19] = 2;
			memcpy(data, o, (size_t)n);
			out = (size_t)n;
		}
		sqlite3_free(o);
	}
	sqlite3_close(h);
	return out ? out : LLVMFuzzerMutate(data, size, max);
}
