#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/metrics.h"
#include "core/qplan.h"
#include "core/safetensors.h"
#include "sessions/internal.h"
#include "sessions/replay.h"

const char *
replay_kind_name(int k)
{
	static const char *const n[RK_COUNT] = {"statistics", "quantized", "sqnr_db", "learned", "learned_sqnr_db"};
	return k >= 0 && k < RK_COUNT ? n[k] : "?";
}

double
replay_kind_tol(int k)
{
	static const double tol[RK_COUNT] = {REPLAY_TOL_STAT, REPLAY_TOL_QUANT, REPLAY_TOL_DB, REPLAY_TOL_LEARN,
		REPLAY_TOL_LEARN_DB};
	return k >= 0 && k < RK_COUNT ? tol[k] : 0.0;
}

/* ---- what a field is ---------------------------------------------------------- */

/* How a recorded value is compared in tolerance mode. */
enum vkind {
	VK_QUANT,	/* a real of the quantized chain: relative REPLAY_TOL_QUANT */
	VK_STAT,	/* a real of the FP chain's statistics: relative REPLAY_TOL_STAT */
	VK_DB,		/* an SQNR: absolute REPLAY_TOL_DB */
	VK_EXACT,	/* a decision: equal in every mode */
	VK_CURVE,	/* [alpha, sqnr] pairs: alpha exact, sqnr as VK_DB */
	VK_BLOB,	/* the sha256 of a blob beside the database: its contents */
	VK_HASH,	/* a sha256 with nothing beside it to compare */
	VK_FILES,	/* an export's {file: sha256}: the names exactly */
	VK_LEARN,	/* what learning gives: relative REPLAY_TOL_LEARN */
	VK_LEARN_DB,	/* an SQNR after learning: absolute REPLAY_TOL_LEARN_DB */
	VK_ADOPT,	/* a decision made from reals (allocated ranks): exact, or in
			   tolerance mode not compared and the recorded one adopted */
};

/* The kind of the value under key k of an object of kind parent. */
static int
vkind_of(const char *k, int parent)
{
	static const char *const exact[] = {"layer", "layers", "rank", "hidden", "tokens", "method", "best",
		"dominant_share", "value", "wbits", "abits", "wgroup", "model_fp", "calib_fp", "format", "applied",
		"name", "skipped", "floored_eigenvalues"};
	if (parent == VK_FILES)
		return VK_HASH;
	if (strcmp(k, "plan") == 0 || strcmp(k, "checkpoint") == 0 || strcmp(k, "stats") == 0 ||
	    strcmp(k, "factors") == 0)
		return VK_BLOB;
	if (strcmp(k, "absmax_sha256") == 0 || strcmp(k, "factors_sha256") == 0)
		return VK_HASH;
	if (strcmp(k, "losses") == 0)
		return VK_LEARN;
	if (strcmp(k, "sqnr_learned_db") == 0)
		return VK_LEARN_DB;
	if (strcmp(k, "files") == 0)
		return VK_FILES;
	if (strcmp(k, "ranks") == 0)
		return VK_ADOPT;
	if (strcmp(k, "sqnr_db") == 0)
		return VK_DB;
	if (strcmp(k, "curves") == 0 || strcmp(k, "curve") == 0)
		return VK_CURVE;
	if (strcmp(k, "misalignment") == 0)
		return VK_STAT;
	for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
		if (strcmp(k, exact[i]) == 0)
			return VK_EXACT;
	return parent;	/* modality names below a figure keep its kind */
}

/* ---- comparing ------------------------------------------------------------------ */

struct cmp {
	sess *s;
	replay_report *rep;
	int tol;
	int64_t event;
	const char *cmd;
	json_t *fields;		/* this event's differences */
	masq_err *err;
	int failed;		/* an error (not a difference) while comparing */
};

/* A difference at path: recorded a, replayed b (either may be NULL). */
static void
differ(struct cmp *c, const char *path, json_t *a, json_t *b, const char *detail)
{
	json_t *f = json_object();
	json_object_set_new(f, "path", json_string(path[0] ? path : "(the result)"));
	json_object_set(f, "recorded", a ? a : json_null());
	json_object_set(f, "replayed", b ? b : json_null());
	if (a == NULL)
		json_object_set_new(f, "recorded_absent", json_true());
	if (b == NULL)
		json_object_set_new(f, "replayed_absent", json_true());
	if (detail != NULL)
		json_object_set_new(f, "detail", json_string(detail));
	json_array_append_new(c->fields, f);
}

/* A deviation of kind k of size v at path: kept when the largest so far;
 * 1 when within the tolerance. */
static int
deviation(struct cmp *c, int k, double v, const char *path)
{
	replay_dev *d = &c->rep->dev[k];
	if (!(v <= d->value)) {
		d->value = isnan(v) ? INFINITY : v;
		d->event = c->event;
		snprintf(d->cmd, sizeof d->cmd, "%s", c->cmd);
		snprintf(d->path, sizeof d->path, "%s", path);
	}
	return v <= replay_kind_tol(k);
}

static void
path_key(char *out, size_t n, const char *path, const char *k)
{
	snprintf(out, n, "%s%s%s", path, path[0] ? "." : "", k);
}

/* Compare two blobs a (recorded) and b (replayed) of kind key by content;
 * 1 when within tolerance, 0 when not (differ() called), -1 on an error. */
static int
blob_compare(struct cmp *c, const char *key, const char *path, json_t *ja, json_t *jb)
{
	const char *a = json_string_value(ja), *b = json_string_value(jb);
	masq_err e = {0};
	char *pa = sdb_blob_path(c->s->db, a, &e), *pb = NULL;	/* the recorded one: beside the database */
	char detail[512], where[512];
	int ok = 1;

	if (pa == NULL) {
		/* a dump loaded without its blobs: nothing to compare with */
		c->rep->uncompared++;
		return 1;
	}
	if ((pb = sess_blob_path(c->s, b, c->err)) == NULL) {
		free(pa);
		return -1;
	}
	if (strcmp(key, "plan") == 0) {
		qplan_layer qa, qb;
		double fac, cmc;
		char fat[96], cat[96], what[256];
		if (qplan_read(&qa, &c->s->m.cfg, pa, c->err) < 0) {
			free(pa);
			free(pb);
			return -1;
		}
		if (qplan_read(&qb, &c->s->m.cfg, pb, c->err) < 0) {
			qplan_layer_done(&qa);
			free(pa);
			free(pb);
			return -1;
		}
		if (qplan_compare(&qa, &qb, &fac, fat, &cmc, cat, sizeof fat, what, sizeof what) < 0) {
			differ(c, path, ja, jb, what);
			ok = 0;
		} else {
			snprintf(where, sizeof where, "%s:%s", path, fat);
			if (fat[0] && !deviation(c, RK_STAT, fac, where)) {
				snprintf(detail, sizeof detail, "%s: relative difference %.3g > %g", fat, fac, REPLAY_TOL_STAT);
				differ(c, path, ja, jb, detail);
				ok = 0;
			}
			snprintf(where, sizeof where, "%s:%s", path, cat);
			if (ok && cat[0] && !deviation(c, RK_QUANT, cmc, where)) {
				snprintf(detail, sizeof detail, "%s: relative difference %.3g > %g", cat, cmc, REPLAY_TOL_QUANT);
				differ(c, path, ja, jb, detail);
				ok = 0;
			}
		}
		qplan_layer_done(&qa);
		qplan_layer_done(&qb);
	} else {
		st_file fa, fb;
		if (st_open(&fa, pa, c->err) < 0) {
			free(pa);
			free(pb);
			return -1;
		}
		if (st_open(&fb, pb, c->err) < 0) {
			st_close(&fa);
			free(pa);
			free(pb);
			return -1;
		}
		for (int i = 0; i < fa.ntensors && ok; i++) {
			const st_tensor *ta = &fa.tensors[i], *tb = st_find(&fb, ta->name);
			int same = tb != NULL && tb->dtype == ST_F32 && ta->dtype == ST_F32 && tb->ndim == ta->ndim;
			for (int d = 0; same && d < ta->ndim; d++)
				same = ta->shape[d] == tb->shape[d];
			if (!same) {
				snprintf(detail, sizeof detail, "tensor %s: not the same name, dtype or shape", ta->name);
				differ(c, path, ja, jb, detail);
				ok = 0;
				break;
			}
			double el, fro;
			metrics_rel_diff(ta->data, tb->data, (size_t)ta->nelem, REPLAY_TOL_FLOOR, &el, &fro, NULL);
			/* the statistics element by element; hidden states as a whole
			 * (a value near zero moves by more than its own size) */
			int kind = strcmp(key, "factors") == 0 ? RK_LEARN : strcmp(ta->name, "h_q") == 0 ||
			    strcmp(ta->name, "h_train") == 0 ? RK_QUANT : RK_STAT;	/* h_fp, h_fpe: the FP chains */
			double v = strcmp(key, "stats") == 0 ? el : fro;
			snprintf(where, sizeof where, "%s:%s", path, ta->name);
			if (!deviation(c, kind, v, where)) {
				snprintf(detail, sizeof detail, "tensor %s: relative difference %.3g > %g", ta->name, v,
				    replay_kind_tol(kind));
				differ(c, path, ja, jb, detail);
				ok = 0;
			}
		}
		if (ok && fa.ntensors != fb.ntensors) {
			differ(c, path, ja, jb, "the replayed file has other tensors");
			ok = 0;
		}
		st_close(&fa);
		st_close(&fb);
	}
	free(pa);
	free(pb);
	return ok;
}

/* Compare recorded a with replayed b at path, of kind k. */
static void
compare(struct cmp *c, json_t *a, json_t *b, const char *path, int k, const char *key)
{
	char sub[512];

	if (c->failed)
		return;
	if (k == VK_ADOPT && c->tol) {
		if (!json_equal(a, b))
			c->rep->uncompared++;
		return;
	}
	if (json_is_object(a)) {
		const char *kk;
		json_t *v;
		if (!json_is_object(b)) {
			differ(c, path, a, b, NULL);
			return;
		}
		json_object_foreach(a, kk, v) {
			json_t *w = json_object_get(b, kk);
			/* the hash of the maxima is covered by their blob, compared by value */
			if (c->tol && strcmp(kk, "absmax_sha256") == 0 && json_object_get(a, "stats") != NULL)
				continue;
			path_key(sub, sizeof sub, path, kk);
			if (w == NULL) {
				differ(c, sub, v, NULL, "absent in the replay");
				continue;
			}
			compare(c, v, w, sub, vkind_of(kk, k), kk);
		}
		json_object_foreach(b, kk, v)
			if (json_object_get(a, kk) == NULL)
				c->rep->new_fields++;
		return;
	}
	if (json_is_array(a)) {
		if (!json_is_array(b) || json_array_size(a) != json_array_size(b)) {
			differ(c, path, a, b, json_is_array(b) ? "not as many elements" : NULL);
			return;
		}
		for (size_t i = 0; i < json_array_size(a); i++) {
			json_t *x = json_array_get(a, i);
			int ek = k;
			if (k == VK_CURVE && json_is_number(x))
				ek = i == 0 ? VK_EXACT : VK_DB;	/* [alpha, sqnr] */
			snprintf(sub, sizeof sub, "%s[%zu]", path, i);
			compare(c, x, json_array_get(b, i), sub, ek, key);
		}
		return;
	}
	if (json_is_real(a) && json_is_real(b) && c->tol && k != VK_EXACT) {
		double x = json_real_value(a), y = json_real_value(b);
		if (x == y)
			return;
		if (k == VK_DB || k == VK_CURVE || k == VK_LEARN_DB) {
			if (!deviation(c, k == VK_LEARN_DB ? RK_LEARN_DB : RK_DB, fabs(x - y), path))
				differ(c, path, a, b, NULL);
		} else {
			int rk = k == VK_STAT ? RK_STAT : k == VK_LEARN ? RK_LEARN : RK_QUANT;
			double r = fabs(x - y) / (fmax(fabs(x), fabs(y)) + REPLAY_TOL_FLOOR);
			if (!deviation(c, rk, r, path))
				differ(c, path, a, b, NULL);
		}
		return;
	}
	if (json_is_string(a) && json_is_string(b) && c->tol && (k == VK_BLOB || k == VK_HASH)) {
		if (strcmp(json_string_value(a), json_string_value(b)) == 0)
			return;
		if (k == VK_HASH) {
			c->rep->uncompared++;
			return;
		}
		if (blob_compare(c, key, path, a, b) < 0)
			c->failed = 1;
		return;
	}
	if (!json_equal(a, b))
		differ(c, path, a, b, NULL);
}

/* ---- the replay ------------------------------------------------------------------- */

/*
 * After a train-layer matched within tolerance: continue from the
 * recorded factors (when they differ and their blob is there), so that
 * the layers after it compare at the tight tolerances.
 */
static int
adopt_factors(sess *s, json_t *want, json_t *got, replay_report *rep, masq_err *err)
{
	const char *a = json_string_value(json_object_get(want, "factors_sha256"));
	const char *b = json_string_value(json_object_get(got, "factors_sha256"));
	const char *blob = json_string_value(json_object_get(want, "factors"));
	if (a == NULL || b == NULL || strcmp(a, b) == 0 || blob == NULL)
		return 0;
	masq_err e = {0};
	char *path = sdb_blob_path(s->db, blob, &e);
	if (path == NULL)
		return 0;	/* a dump without its blobs: the replay goes on with its own */
	int rc = sess_factors_read(s, path, err);
	free(path);
	if (rc < 0)
		return masq_err_prefix(err, "the recorded factors %.12s...", blob);
	rep->adopted++;
	return 0;
}

/* The recorded error's message and status ("" when not recorded). */
static void
error_of(const char *payload, char *msg, size_t nm, char *st, size_t ns)
{
	json_t *j = json_loads(payload, 0, NULL);
	const char *m = json_string_value(json_object_get(j, "message"));
	const char *t = json_string_value(json_object_get(j, "status"));
	snprintf(msg, nm, "%s", m ? m : "");
	snprintf(st, ns, "%s", t ? t : "");
	json_decref(j);
}

static void
diverge(replay_report *rep, int64_t event, const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void
diverge(replay_report *rep, int64_t event, const char *cmd, const char *fmt, ...)
{
	va_list ap;
	rep->diverged = 1;
	rep->div_event = event;
	snprintf(rep->div_cmd, sizeof rep->div_cmd, "%s", cmd);
	va_start(ap, fmt);
	vsnprintf(rep->div_reason, sizeof rep->div_reason, fmt, ap);
	va_end(ap);
}

int
sess_replay(sess *s, const replay_opts *ro, replay_report *rep, masq_err *err)
{
	sess_evlist l = {0};
	int rc = 0, tolerance = ro->tolerance;
	FILE *progress = ro->progress;

	memset(rep, 0, sizeof *rep);
	rep->tolerance = tolerance;
	free(s->blob_scratch);
	s->blob_scratch = ro->scratch ? xstrdup(ro->scratch) : NULL;
	free(s->export_redirect);
	s->export_redirect = ro->export_dir ? xstrdup(ro->export_dir) : NULL;
	s->skip_exports = ro->export_dir == NULL;
	if (sdb_event_each(s->db, s->id, sess_evlist_collect, &l, err) < 0) {
		sess_evlist_free(&l);
		return -1;
	}
	s->record = 0;
	for (size_t i = 0; i < l.n && rc == 0; i++) {
		sess_ev *e = &l.v[i];
		if (strcmp(e->kind, "command") != 0)
			continue;
		if (sess_cmd_find(e->name) == NULL) {
			rc = masq_err_set(err, MASQ_ERR_FORMAT, "event %lld: unknown command '%s' (recorded by another masq?)",
			    (long long)e->seq, e->name);
			break;
		}
		long o = sess_evlist_outcome(&l, i);
		if (o < 0) {
			/* The process died before this command's outcome was
			 * recorded: its effects died with it (resume issued it
			 * again), so replay must not apply them either. */
			rep->interrupted++;
			if (progress != NULL)
				fprintf(progress, "event %lld %s: no outcome recorded (interrupted); skipped\n",
				    (long long)e->seq, e->name);
			continue;
		}
		json_error_t je;
		json_t *args = json_loads(e->payload, 0, &je), *got = NULL;
		masq_err e2 = {0};
		s->cur_event = e->seq;
		rep->commands++;
		int r = sess_dispatch_name(s, e->name, args, &got, &e2);
		json_decref(args);
		const sess_ev *out = &l.v[o];
		if (progress != NULL)
			fprintf(progress, "event %lld %s: %s\n", (long long)e->seq, e->name,
			    r < 0 ? "error" : r == 1 ? "checked (not written)" : "ok");
		/* a session another masq version recorded: its exports' files
		 * follow that version's formats, and its messages that version's
		 * wording; what they computed is compared all the same */
		const sess_cmd *cc = sess_cmd_find(e->name);
		int older = s->recorded_version != NULL && strcmp(s->recorded_version, PACKAGE_VERSION) != 0;
		if (older && (cc->flags & SCF_FILES)) {
			rep->other_version++;
			if (progress != NULL)
				fprintf(progress, "event %lld %s: written by masq %s, whose export formats differ from %s's: "
				    "not compared\n", (long long)e->seq, e->name, s->recorded_version, PACKAGE_VERSION);
		} else if (strcmp(out->kind, "error") == 0) {
			char msg[1024], st[32];
			error_of(out->payload, msg, sizeof msg, st, sizeof st);
			const sess_cmd *c = cc;
			if ((c->flags & SCF_FILES) && strcmp(st, masq_status_name(MASQ_ERR_IO)) == 0) {
				rep->fs_errors++;	/* the file system is not replayed */
			} else if (older && r < 0 && strcmp(st, masq_status_name(e2.status)) == 0) {
				rep->errors_matched++;	/* the same refusal in another version's words */
			} else if (r >= 0) {
				rc = 1;
				diverge(rep, out->seq, e->name, "recorded an error, the replay succeeded; recorded: %s", msg);
			} else if (strcmp(msg, e2.msg) != 0) {
				rc = 1;
				diverge(rep, out->seq, e->name, "recorded one error, the replay another");
				rep->div_fields = json_array();
				json_array_append_new(rep->div_fields, json_pack("{s:s, s:s, s:s}", "path", "message",
				    "recorded", msg, "replayed", e2.msg));
			} else {
				rep->errors_matched++;
			}
		} else if (r < 0) {
			rc = 1;
			diverge(rep, out->seq, e->name, "recorded a result, the replay failed: %s", e2.msg);
		} else if (r == 1) {
			rep->exports_checked++;
		} else {
			json_t *want = json_loads(out->payload, 0, &je);
			struct cmp c = {s, rep, tolerance, out->seq, e->name, json_array(), err, 0};
			if (want == NULL) {
				rc = masq_err_set(err, MASQ_ERR_FORMAT, "event %lld (%s): the recorded result is not JSON",
				    (long long)out->seq, e->name);
			} else {
				compare(&c, want, got, "", VK_QUANT, "");
				if (c.failed) {
					rc = -1;
				} else if (json_array_size(c.fields) > 0) {
					rc = 1;
					diverge(rep, out->seq, e->name, "%zu field%s differ%s", json_array_size(c.fields),
					    json_array_size(c.fields) == 1 ? "" : "s", json_array_size(c.fields) == 1 ? "s" : "");
					rep->div_fields = json_incref(c.fields);
				}
			}
			json_decref(c.fields);
			if (rc == 0 && tolerance && strcmp(e->name, "train-layer") == 0 &&
			    adopt_factors(s, want, got, rep, err) < 0)
				rc = -1;
			if (rc == 0 && tolerance && strcmp(e->name, "allocate-ranks") == 0 &&
			    !json_equal(json_object_get(want, "ranks"), json_object_get(got, "ranks"))) {
				/* the ranks decided from last bits: go on with the recorded ones */
				if (scmd_allocate_ranks_restore(s, NULL, want, NULL, err) < 0)
					rc = masq_err_prefix(err, "event %lld (allocate-ranks)", (long long)out->seq);
				else
					rep->adopted++;
			}
			json_decref(want);
			/* a replay keeps no more than it needs: checkpoints and
			 * statistics are compared and gone (plans stay for exports) */
			if (s->blob_scratch != NULL) {
				static const char *const drop[] = {"checkpoint", "stats"};
				for (int d = 0; d < 2; d++) {
					const char *sha = json_string_value(json_object_get(got, drop[d]));
					if (sha != NULL && strchr(sha, '/') == NULL) {
						char *p = masq_path_join(s->blob_scratch, sha);
						unlink(p);
						free(p);
					}
				}
			}
		}
		json_decref(got);
	}
	if (s->exports_done != NULL)
		rep->exports = json_incref(s->exports_done);
	sess_evlist_free(&l);
	return rc;
}

void
replay_report_done(replay_report *rep)
{
	json_decref(rep->div_fields);
	json_decref(rep->exports);
	memset(rep, 0, sizeof *rep);
}

json_t *
replay_report_json(const replay_report *rep)
{
	json_t *j = json_object(), *tol = json_object(), *dev = json_object();

	json_object_set_new(j, "mode", json_string(rep->tolerance ? "tolerance" : "exact"));
	json_object_set_new(j, "result", json_string(rep->diverged ? "diverged" : "match"));
	json_object_set_new(j, "commands", json_integer(rep->commands));
	json_object_set_new(j, "interrupted", json_integer(rep->interrupted));
	json_object_set_new(j, "errors_matched", json_integer(rep->errors_matched));
	json_object_set_new(j, "exports_of_another_version", json_integer(rep->other_version));
	json_object_set_new(j, "file_system_errors", json_integer(rep->fs_errors));
	json_object_set_new(j, "exports_checked", json_integer(rep->exports_checked));
	json_object_set_new(j, "uncompared", json_integer(rep->uncompared));
	json_object_set_new(j, "new_fields", json_integer(rep->new_fields));
	json_object_set_new(j, "adopted_factors", json_integer(rep->adopted));
	for (int k = 0; k < RK_COUNT; k++) {
		json_object_set_new(tol, replay_kind_name(k), json_real(replay_kind_tol(k)));
		const replay_dev *d = &rep->dev[k];
		json_object_set_new(dev, replay_kind_name(k), d->event == 0 ? json_null() :
		    json_pack("{s:f, s:I, s:s, s:s}", "value", isfinite(d->value) ? d->value : -1.0, "event",
		    (json_int_t)d->event, "command", d->cmd, "path", d->path));
	}
	json_object_set_new(j, "tolerances", tol);
	json_object_set_new(j, "max_deviation", dev);
	if (rep->diverged) {
		json_t *d = json_pack("{s:I, s:s, s:s}", "event", (json_int_t)rep->div_event, "command", rep->div_cmd,
		    "reason", rep->div_reason);
		json_object_set_new(d, "fields", rep->div_fields ? json_incref(rep->div_fields) : json_array());
		json_object_set_new(j, "divergence", d);
	} else {
		json_object_set_new(j, "divergence", json_null());
	}
	json_object_set_new(j, "exports", rep->exports ? json_incref(rep->exports) : json_array());
	return j;
}
