#include "config.h"

#include <dirent.h>
#include <stddef.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <signal.h>

#include "core/engine.h"
#include "core/export.h"
#include "core/numenv.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "sessions/internal.h"
#include "sessions/session.h"

/* ---- JSON helpers ------------------------------------------------------------ */

char *
sess_json_text(json_t *j)
{
	return json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17) | JSON_ENCODE_ANY);
}

json_t *
sess_json_num(double x)
{
	return isfinite(x) ? json_real(x) : json_null();
}

json_t *
sess_json_mods(const double *v, const calib *c, int with_all)
{
	json_t *o = json_object();
	for (int m = 0; m < MOD_COUNT; m++)
		json_object_set_new(o, modality_name(m), c->n_mod[m] ? sess_json_num(v[m]) : json_null());
	if (with_all)
		json_object_set_new(o, "all", sess_json_num(v[STATS_ALL]));
	return o;
}

json_t *
sess_opts_json(const pipe_opts *o)
{
	json_t *j = json_object();
	json_object_set_new(j, "method", json_string(method_name(o->method)));
	json_object_set_new(j, "wbits", json_integer(o->wbits));
	json_object_set_new(j, "abits", json_integer(o->abits));
	json_object_set_new(j, "wgroup", json_integer(o->wgroup));
	json_object_set_new(j, "alpha", json_real(o->alpha));
	json_object_set_new(j, "search", json_boolean(o->search));
	json_object_set_new(j, "alpha_lo", json_real(o->alpha_lo));
	json_object_set_new(j, "alpha_hi", json_real(o->alpha_hi));
	json_object_set_new(j, "alpha_step", json_real(o->alpha_step));
	json_object_set_new(j, "search_tokens", json_integer(o->search_tokens));
	json_object_set_new(j, "rank", json_real(o->rank));
	json_object_set_new(j, "rank_floor", json_integer(o->rank_floor));
	json_object_set_new(j, "cmc_quant_target", json_boolean(o->cmc_quant_target));
	json_object_set_new(j, "whiten", json_boolean(o->whiten));
	json_object_set_new(j, "svd_mode", json_integer(o->svd_mode));
	json_object_set_new(j, "cmc_diag", json_boolean(o->cmc_diag));
	json_object_set_new(j, "sample_cap", json_integer(o->sample_cap));
	json_object_set_new(j, "seed", json_integer((json_int_t)o->seed));
	return j;
}

/* Integer and real options by name, for reading settings back. */
static int *
opt_int(pipe_opts *o, const char *k)
{
	static const struct { const char *k; size_t off; } t[] = {
		{"wbits", offsetof(pipe_opts, wbits)}, {"abits", offsetof(pipe_opts, abits)},
		{"wgroup", offsetof(pipe_opts, wgroup)}, {"search", offsetof(pipe_opts, search)},
		{"search_tokens", offsetof(pipe_opts, search_tokens)}, {"rank_floor", offsetof(pipe_opts, rank_floor)},
		{"cmc_quant_target", offsetof(pipe_opts, cmc_quant_target)}, {"whiten", offsetof(pipe_opts, whiten)},
		{"svd_mode", offsetof(pipe_opts, svd_mode)}, {"cmc_diag", offsetof(pipe_opts, cmc_diag)},
		{"sample_cap", offsetof(pipe_opts, sample_cap)},
	};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
		if (strcmp(t[i].k, k) == 0)
			return (int *)((char *)o + t[i].off);
	return NULL;
}

static float *
opt_float(pipe_opts *o, const char *k)
{
	if (strcmp(k, "alpha") == 0) return &o->alpha;
	if (strcmp(k, "alpha_lo") == 0) return &o->alpha_lo;
	if (strcmp(k, "alpha_hi") == 0) return &o->alpha_hi;
	if (strcmp(k, "alpha_step") == 0) return &o->alpha_step;
	return NULL;
}

int
sess_opts_from_json(pipe_opts *o, json_t *j, masq_err *err)
{
	const char *k;
	json_t *v;

	pipe_opts_default(o);
	if (!json_is_object(j))
		return masq_err_set(err, MASQ_ERR_FORMAT, "session settings are not a JSON object");
	json_object_foreach(j, k, v) {
		int *pi;
		float *pf;
		if (strcmp(k, "method") == 0) {
			if (!json_is_string(v) || (o->method = method_parse(json_string_value(v))) < 0)
				return masq_err_set(err, MASQ_ERR_FORMAT, "session setting \"method\" is not a method");
		} else if (strcmp(k, "rank") == 0) {
			if (!json_is_number(v))
				return masq_err_set(err, MASQ_ERR_FORMAT, "session setting \"rank\" is not a number");
			o->rank = json_number_value(v);
		} else if (strcmp(k, "seed") == 0) {
			if (!json_is_integer(v))
				return masq_err_set(err, MASQ_ERR_FORMAT, "session setting \"seed\" is not an integer");
			o->seed = (uint64_t)json_integer_value(v);
		} else if ((pi = opt_int(o, k)) != NULL) {
			if (!json_is_integer(v) && !json_is_boolean(v))
				return masq_err_set(err, MASQ_ERR_FORMAT, "session setting \"%s\" is not an integer", k);
			*pi = json_is_boolean(v) ? json_is_true(v) : (int)json_integer_value(v);
		} else if ((pf = opt_float(o, k)) != NULL) {
			if (!json_is_number(v))
				return masq_err_set(err, MASQ_ERR_FORMAT, "session setting \"%s\" is not a number", k);
			*pf = (float)json_number_value(v);
		}
		/* unknown keys are ignored: a newer masq may add settings */
	}
	return 0;
}

/* ---- fingerprints ---------------------------------------------------------------- */

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int
sess_fingerprint_model(const char *dir, char out[65], masq_err *err)
{
	sha256_ctx c;
	DIR *d;
	struct dirent *e;
	char **names = NULL;
	size_t n = 0, cap = 0;

	sha256_init(&c);
	char *cfg = masq_path_join(dir, "config.json");
	size_t len;
	char *text = masq_read_file(cfg, 16u << 20, &len, err);
	free(cfg);
	if (text == NULL)
		return -1;
	sha256_update(&c, "config.json", 12);
	sha256_update(&c, text, len);
	free(text);
	if ((d = opendir(dir)) == NULL)
		return masq_err_set(err, MASQ_ERR_IO, "%s: %s", dir, strerror(errno));
	while ((e = readdir(d)) != NULL) {
		size_t l = strlen(e->d_name);
		if (l > 12 && strcmp(e->d_name + l - 12, ".safetensors") == 0) {
			if (n == cap)
				names = xrealloc(names, (cap = cap ? 2 * cap : 8) * sizeof *names);
			names[n++] = xstrdup(e->d_name);
		}
	}
	closedir(d);
	qsort(names, n, sizeof *names, cmp_str);
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		char *p = masq_path_join(dir, names[i]);
		FILE *fp = fopen(p, "rb");
		unsigned char hl[8];
		uint64_t h = 0;
		struct stat sb;
		if (fp == NULL || fstat(fileno(fp), &sb) != 0 || fread(hl, 1, 8, fp) != 8) {
			rc = masq_err_set(err, MASQ_ERR_IO, "%s: cannot read its header", p);
		} else {
			for (int k = 7; k >= 0; k--)
				h = (h << 8) | hl[k];
			if (h > ST_MAX_HEADER || h + 8 > (uint64_t)sb.st_size) {
				rc = masq_err_set(err, MASQ_ERR_FORMAT, "%s: header length %llu is not plausible", p,
				    (unsigned long long)h);
			} else {
				char *hdr = xmalloc((size_t)h);
				if (fread(hdr, 1, (size_t)h, fp) != (size_t)h)
					rc = masq_err_set(err, MASQ_ERR_IO, "%s: cannot read its header", p);
				char meta[96];
				snprintf(meta, sizeof meta, "%s:%lld:", names[i], (long long)sb.st_size);
				sha256_update(&c, meta, strlen(meta));
				sha256_update(&c, hdr, (size_t)h);
				free(hdr);
			}
		}
		if (fp != NULL)
			fclose(fp);
		free(p);
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	if (rc == 0)
		sha256_hex(&c, out);
	return rc;
}

int
sess_fingerprint_calib(const char *path, char out[65], masq_err *err)
{
	return sha256_file(path, out, err);
}

/* ---- life cycle ----------------------------------------------------------------- */

static void
sess_zero(sess *s)
{
	memset(s, 0, sizeof *s);
}

int
sess_create(sess *s, sdb *db, const pipe_opts *o, const char *model_dir, const char *calib_path,
    int threads, masq_err *err)
{
	char mfp[65], cfp[65];
	sdb_session row;

	sess_zero(s);
	if (sess_fingerprint_model(model_dir, mfp, err) < 0 || sess_fingerprint_calib(calib_path, cfp, err) < 0)
		return -1;
	s->db = db;
	s->record = db != NULL;
	s->opts = *o;
	s->threads = threads > 0 ? threads : masq_blas_get_threads();
	s->model_dir = xstrdup(model_dir);
	s->calib_path = xstrdup(calib_path);
	s->model_fp = xstrdup(mfp);
	s->calib_fp = xstrdup(cfp);
	/* the numeric environment, with the BLAS threads the session runs on */
	s->env = numenv_collect(s->threads);
	if (db != NULL) {
		json_t *j = sess_opts_json(o);
		char *settings = sess_json_text(j);
		char *envtext = sess_json_text(s->env);
		json_decref(j);
		memset(&row, 0, sizeof row);
		row.masq_version = PACKAGE_VERSION;
		row.seed = (int64_t)o->seed;
		row.threads = s->threads;
		row.model_path = s->model_dir;
		row.model_fp = s->model_fp;
		row.calib_path = s->calib_path;
		row.calib_fp = s->calib_fp;
		row.settings = settings;
		row.status = "open";
		row.environment = envtext;
		int rc = sdb_session_new(db, &row, &s->id, err);
		free(settings);
		free(envtext);
		if (rc < 0) {
			sess_done(s);
			return -1;
		}
	}
	return 0;
}

int
sess_attach(sess *s, sdb *db, int64_t id, const char *model_dir, const char *calib_path, int record,
    masq_err *err)
{
	sdb_session row;
	char mfp[65], cfp[65];
	json_t *j;
	json_error_t je;

	sess_zero(s);
	if (sdb_session_get(db, id, &row, err) < 0)
		return -1;
	s->db = db;
	s->id = row.id;
	s->record = record;
	s->threads = row.threads;
	s->model_dir = xstrdup(model_dir ? model_dir : row.model_path ? row.model_path : "");
	s->calib_path = xstrdup(calib_path ? calib_path : row.calib_path ? row.calib_path : "");
	s->model_fp = xstrdup(row.model_fp);
	s->calib_fp = xstrdup(row.calib_fp);
	s->status = xstrdup(row.status);
	j = json_loads(row.settings, 0, &je);
	int rc = sess_opts_from_json(&s->opts, j, err);
	json_decref(j);
	if (rc == 0 && row.environment != NULL)
		s->env = json_loads(row.environment, 0, &je);	/* not inside json_is_object: a macro */
	if (rc == 0 && row.environment != NULL && !json_is_object(s->env)) {
		json_decref(s->env);
		s->env = NULL;
		rc = masq_err_set(err, MASQ_ERR_FORMAT, "session %lld: its environment is not a JSON object",
		    (long long)row.id);
	}
	sdb_session_free(&row);
	if (rc < 0) {
		masq_err_prefix(err, "session %lld", (long long)s->id);
		goto fail;
	}
	if (sess_fingerprint_model(s->model_dir, mfp, err) < 0) {
		masq_err_prefix(err, "session %lld's model", (long long)s->id);
		goto fail;
	}
	if (strcmp(mfp, s->model_fp) != 0) {
		masq_err_set(err, MASQ_ERR_USAGE,
		    "%s is not the model session %lld was recorded with (fingerprint %.12s..., recorded %.12s...)",
		    s->model_dir, (long long)s->id, mfp, s->model_fp);
		goto fail;
	}
	if (sess_fingerprint_calib(s->calib_path, cfp, err) < 0) {
		masq_err_prefix(err, "session %lld's calibration set", (long long)s->id);
		goto fail;
	}
	if (strcmp(cfp, s->calib_fp) != 0) {
		masq_err_set(err, MASQ_ERR_USAGE,
		    "%s is not the calibration set session %lld was recorded with (fingerprint %.12s..., recorded %.12s...)",
		    s->calib_path, (long long)s->id, cfp, s->calib_fp);
		goto fail;
	}
	return 0;
fail:
	sess_done(s);
	return -1;
}

void
sess_done(sess *s)
{
	if (s->opened) {
		for (int l = 0; l < s->p.n_layers; l++)
			free(s->plan_sha ? s->plan_sha[l] : NULL);
		free(s->plan_sha);
		pipe_done(&s->p);
		calib_done(&s->c);
		model_close(&s->m);
	}
	free(s->model_dir);
	free(s->calib_path);
	free(s->model_fp);
	free(s->calib_fp);
	free(s->status);
	free(s->export_redirect);
	free(s->blob_scratch);
	json_decref(s->env);
	json_decref(s->exports_done);
	sess_zero(s);
}

/* ---- blobs -------------------------------------------------------------------- */

/* A temporary path in the blob directory (which is created), or in the
 * replay's scratch directory. */
char *
sess_blob_tmp(sess *s, const char *what)
{
	masq_err e = {0};
	char name[96];
	static unsigned counter;
	const char *dir = s->blob_scratch ? s->blob_scratch : sdb_blob_dir(s->db);
	masq_mkdir_p(dir, &e);
	snprintf(name, sizeof name, ".tmp-%ld-%u-%s", (long)getpid(), counter++, what);
	return masq_path_join(dir, name);
}

/* Store the file at tmp as a blob (then remove tmp); sha gets its name.  A
 * replay keeps what it computes in its scratch directory, so the
 * database's blobs stay as they were recorded. */
int
sess_blob_store(sess *s, char *tmp, char sha[65], masq_err *err)
{
	int rc;
	if (s->blob_scratch != NULL) {
		rc = sha256_file(tmp, sha, err);
		if (rc == 0) {
			char *dst = masq_path_join(s->blob_scratch, sha);
			if (rename(tmp, dst) != 0)
				rc = masq_err_set(err, MASQ_ERR_IO, "%s: cannot rename to %s: %s", tmp, dst,
				    strerror(errno));
			free(dst);
		}
	} else {
		rc = sdb_blob_put_file(s->db, tmp, sha, err);
	}
	unlink(tmp);
	free(tmp);
	return rc;
}

char *
sess_blob_path(sess *s, const char *sha, masq_err *err)
{
	if (s->blob_scratch != NULL && strlen(sha) == 64 && strchr(sha, '/') == NULL) {
		char *p = masq_path_join(s->blob_scratch, sha), got[65];
		if (access(p, F_OK) == 0) {
			if (sha256_file(p, got, err) < 0) {
				free(p);
				return NULL;
			}
			if (strcmp(got, sha) == 0)
				return p;
		}
		free(p);
	}
	return sdb_blob_path(s->db, sha, err);
}

/* The checkpoint after a layer: both hidden states entering the cursor. */
static int
checkpoint_write(sess *s, char sha[65], masq_err *err)
{
	const pipeline *p = &s->p;
	int64_t shape[2] = {p->c->n_tokens, p->m->cfg.hidden};
	size_t n = (size_t)shape[0] * shape[1] * sizeof(float);
	char v[32];
	st_writer *w = st_writer_new();
	char *tmp = sess_blob_tmp(s, "checkpoint");
	snprintf(v, sizeof v, "%d", p->layer);
	int rc = (st_writer_add(w, "h_fp", ST_F32, 2, shape, err) < 0 ||
	    st_writer_add(w, "h_q", ST_F32, 2, shape, err) < 0 ||
	    st_writer_meta(w, "next_layer", v, err) < 0 ||
	    st_writer_begin(w, tmp, err) < 0 || st_writer_write(w, p->h_fp, n, err) < 0 ||
	    st_writer_write(w, p->h_q, n, err) < 0 || st_writer_finish(w, err) < 0) ? -1 : 0;
	st_writer_free(w);
	if (rc < 0) {
		unlink(tmp);
		free(tmp);
		return -1;
	}
	return sess_blob_store(s, tmp, sha, err);
}

/* The cursor layer's per-channel maxima, "absmax.<site>" F32 [rows, d]
 * (rows: text, vision, audio, all), as a blob. */
static int
stats_blob_write(sess *s, char sha[65], masq_err *err)
{
	const pipeline *p = &s->p;
	st_writer *w = st_writer_new();
	char *tmp = sess_blob_tmp(s, "stats"), name[64], v[32];
	int rc = 0;

	snprintf(v, sizeof v, "%d", p->layer);
	for (int site = 0; site < SITE_COUNT && rc == 0; site++) {
		int64_t shape[2] = {STATS_ROWS, p->st[site].d};
		snprintf(name, sizeof name, "absmax.%s", engine_site_name(site));
		rc = st_writer_add(w, name, ST_F32, 2, shape, err);
	}
	if (rc == 0)
		rc = st_writer_meta(w, "layer", v, err) < 0 || st_writer_begin(w, tmp, err) < 0 ? -1 : 0;
	for (int site = 0; site < SITE_COUNT && rc == 0; site++)
		rc = st_writer_write(w, p->st[site].absmax, (size_t)STATS_ROWS * p->st[site].d * sizeof(float), err);
	if (rc == 0)
		rc = st_writer_finish(w, err);
	st_writer_free(w);
	if (rc < 0) {
		unlink(tmp);
		free(tmp);
		return -1;
	}
	return sess_blob_store(s, tmp, sha, err);
}

static int
checkpoint_read(sess *s, const char *sha, masq_err *err)
{
	char *path = sess_blob_path(s, sha, err);
	st_file f;
	pipeline *p = &s->p;
	if (path == NULL)
		return -1;
	int rc = st_open(&f, path, err);
	free(path);
	if (rc < 0)
		return -1;
	const st_tensor *a = st_find(&f, "h_fp"), *b = st_find(&f, "h_q");
	if (a == NULL || b == NULL || a->dtype != ST_F32 || b->dtype != ST_F32 || a->ndim != 2 ||
	    b->ndim != 2 || a->shape[0] != p->c->n_tokens || a->shape[1] != p->m->cfg.hidden ||
	    b->shape[0] != a->shape[0] || b->shape[1] != a->shape[1]) {
		st_close(&f);
		return masq_err_set(err, MASQ_ERR_FORMAT, "checkpoint %.12s... does not fit this model and calibration set", sha);
	}
	memcpy(p->h_fp, a->data, (size_t)(a->end - a->begin));
	memcpy(p->h_q, b->data, (size_t)(b->end - b->begin));
	st_close(&f);
	return 0;
}

/* ---- the commands ------------------------------------------------------------- */

static const char *
arg_str(json_t *args, const char *k, const char *dflt)
{
	json_t *v = json_object_get(args, k);
	return json_is_string(v) ? json_string_value(v) : dflt;
}

static double
arg_num(json_t *args, const char *k, double dflt)
{
	json_t *v = json_object_get(args, k);
	return json_is_number(v) ? json_number_value(v) : dflt;
}

static int
need_open(sess *s, masq_err *err)
{
	if (!s->opened)
		return masq_err_set(err, MASQ_ERR_USAGE, "no model is open (the session starts with 'open')");
	return 0;
}

static int
need_layer(sess *s, json_t *args, masq_err *err)
{
	if (need_open(s, err) < 0)
		return -1;
	if (s->p.layer >= s->p.n_layers)
		return masq_err_set(err, MASQ_ERR_USAGE, "every layer is done");
	json_t *v = json_object_get(args, "layer");
	if (v != NULL && json_integer_value(v) != s->p.layer)
		return masq_err_set(err, MASQ_ERR_USAGE, "the cursor is at layer %d, not %lld", s->p.layer,
		    (long long)json_integer_value(v));
	return 0;
}

static int
cmd_open(sess *s, json_t *args, json_t *res, masq_err *err)
{
	(void)args;
	if (s->opened)
		return masq_err_set(err, MASQ_ERR_USAGE, "the session is already open");
	masq_blas_set_threads(s->threads);
	if (model_open(&s->m, s->model_dir, err) < 0)
		return -1;
	if (calib_load(&s->c, s->calib_path, s->m.cfg.hidden, err) < 0) {
		model_close(&s->m);
		return -1;
	}
	if (pipe_init(&s->p, &s->m, &s->c, &s->opts, err) < 0) {
		calib_done(&s->c);
		model_close(&s->m);
		return -1;
	}
	s->plan_sha = xcalloc((size_t)s->m.cfg.n_layers, sizeof *s->plan_sha);
	s->opened = 1;
	json_object_set_new(res, "model_fp", json_string(s->model_fp));
	json_object_set_new(res, "calib_fp", json_string(s->calib_fp));
	json_object_set_new(res, "layers", json_integer(s->m.cfg.n_layers));
	json_object_set_new(res, "hidden", json_integer(s->m.cfg.hidden));
	json_object_set_new(res, "tokens", json_integer(s->c.n_tokens));
	return 0;
}

static int
cmd_calibrate(sess *s, json_t *args, json_t *res, masq_err *err)
{
	if (need_layer(s, args, err) < 0 || pipe_calibrate(&s->p, err) < 0)
		return -1;
	pipeline *p = &s->p;
	sha256_ctx c;
	char hex[65];
	sha256_init(&c);
	for (int site = 0; site < SITE_COUNT; site++)
		sha256_update(&c, p->st[site].absmax, (size_t)STATS_ROWS * p->st[site].d * sizeof(float));
	sha256_hex(&c, hex);
	json_object_set_new(res, "layer", json_integer(p->layer));
	json_object_set_new(res, "absmax_sha256", json_string(hex));
	if (s->db != NULL) {
		/* the statistics themselves, so that a replay elsewhere can
		 * compare them by value when their hash cannot match */
		char sha[65];
		if (stats_blob_write(s, sha, err) < 0)
			return -1;
		json_object_set_new(res, "stats", json_string(sha));
	}
	json_t *mis = json_object();
	for (int site = 0; site < SITE_COUNT; site++) {
		const misalign *ma = &p->results[p->layer].mis[site];
		json_t *o = json_object(), *sh = json_object(), *th = json_object();
		for (int m = 0; m < MOD_COUNT; m++)
			if (ma->present[m]) {
				json_object_set_new(sh, modality_name(m), json_real(ma->dominant_share[m]));
				json_object_set_new(th, modality_name(m), sess_json_num(ma->thm1_loss_db[m]));
			}
		json_object_set_new(o, "dominant_share", sh);
		json_object_set_new(o, "thm1_loss_db", th);
		json_object_set_new(mis, engine_site_name(site), o);
	}
	json_object_set_new(res, "misalignment", mis);
	return 0;
}

/* set-method / set-alpha / set-rank / set: pipe_setting_apply assignments */
static int
apply_assignment(sess *s, const char *a, json_t *res, masq_err *err)
{
	if (need_open(s, err) < 0 || pipe_setting_apply(&s->p, a, err) < 0)
		return -1;
	json_object_set_new(res, "applied", json_string(a));
	return 0;
}

static int
cmd_set(sess *s, json_t *args, json_t *res, masq_err *err)
{
	return apply_assignment(s, arg_str(args, "assignment", ""), res, err);
}

static int
cmd_set_method(sess *s, json_t *args, json_t *res, masq_err *err)
{
	char a[160];
	snprintf(a, sizeof a, "%s.*.method=%s", arg_str(args, "layer", "*"), arg_str(args, "method", ""));
	return apply_assignment(s, a, res, err);
}

static int
cmd_set_alpha(sess *s, json_t *args, json_t *res, masq_err *err)
{
	char a[160];
	const char *mod = arg_str(args, "modality", "all");
	snprintf(a, sizeof a, "%s.%s.alpha%s%s=%.9g", arg_str(args, "layer", "*"), arg_str(args, "linear", "*"),
	    strcmp(mod, "all") == 0 ? "" : ".", strcmp(mod, "all") == 0 ? "" : mod, arg_num(args, "value", NAN));
	return apply_assignment(s, a, res, err);
}

static int
cmd_set_rank(sess *s, json_t *args, json_t *res, masq_err *err)
{
	char a[160];
	snprintf(a, sizeof a, "%s.%s.rank=%.9g", arg_str(args, "layer", "*"), arg_str(args, "linear", "*"),
	    arg_num(args, "value", NAN));
	return apply_assignment(s, a, res, err);
}

static int
cmd_set_bits(sess *s, json_t *args, json_t *res, masq_err *err)
{
	if (need_open(s, err) < 0)
		return -1;
	json_int_t wb = json_integer_value(json_object_get(args, "wbits"));
	json_int_t ab = json_integer_value(json_object_get(args, "abits"));
	if (wb < 2 || (wb > 8 && wb != 16) || ab < 2 || (ab > 8 && ab != 16))
		return masq_err_set(err, MASQ_ERR_USAGE, "bits must be 2 to 8 or 16: got W%lld A%lld",
		    (long long)wb, (long long)ab);
	s->p.opts.wbits = (int)wb;
	s->p.opts.abits = (int)ab;
	if (s->opts.wgroup < 0)
		s->p.opts.wgroup = ab >= 16 ? 128 : 0;
	json_object_set_new(res, "wbits", json_integer(wb));
	json_object_set_new(res, "abits", json_integer(ab));
	json_object_set_new(res, "wgroup", json_integer(s->p.opts.wgroup));
	return 0;
}

static int
cmd_search(sess *s, json_t *args, json_t *res, masq_err *err)
{
	if (need_layer(s, args, err) < 0 || pipe_search_alpha(&s->p, err) < 0)
		return -1;
	const pipe_search *sr = &s->p.results[s->p.layer].search;
	json_t *best = json_object(), *curves = json_object();
	for (int row = 0; row < ALPHA_ROWS; row++) {
		int any = 0;
		json_t *c = json_array();
		for (int i = 0; i < sr->n; i++)
			if (sr->sqnr[row][i] != 0.0) {
				any = 1;
				json_array_append_new(c, json_pack("[f, o]", sr->alpha[i], sess_json_num(sr->sqnr[row][i])));
			}
		const char *name = row < MOD_COUNT ? modality_name(row) : "unified";
		if (any) {
			json_object_set_new(best, name, json_real(sr->best[row]));
			json_object_set_new(curves, name, c);
		} else {
			json_decref(c);
		}
	}
	json_object_set_new(res, "layer", json_integer(s->p.layer));
	json_object_set_new(res, "best", best);
	json_object_set_new(res, "curves", curves);
	json_object_set_new(res, "tokens", json_integer(sr->tokens));
	return 0;
}

static int
cmd_quantize(sess *s, json_t *args, json_t *res, masq_err *err)
{
	pipeline *p = &s->p;
	if (need_layer(s, args, err) < 0 || pipe_quantize(p, err) < 0)
		return -1;
	const pipe_layer_result *r = &p->results[p->layer];
	json_object_set_new(res, "layer", json_integer(p->layer));
	json_object_set_new(res, "method", json_string(method_name(r->method)));
	json_object_set_new(res, "sqnr_db", sess_json_mods(r->sqnr, p->c, 1));
	json_object_set_new(res, "mae", sess_json_mods(r->mae, p->c, 1));
	json_t *lins = json_array();
	for (int k = 0; k < LIN_COUNT; k++) {
		json_t *o = json_object();
		json_object_set_new(o, "name", json_string(lin_name(k)));
		json_object_set_new(o, "rank", json_integer(r->lin[k].rank));
		json_object_set_new(o, "sqnr_db", sess_json_mods(r->lin[k].sqnr, p->c, 1));
		json_array_append_new(lins, o);
	}
	json_object_set_new(res, "linears", lins);
	if (s->db != NULL) {
		char sha[65], *tmp = sess_blob_tmp(s, "plan");
		if (qplan_write(&p->plan, tmp, err) < 0) {
			unlink(tmp);
			free(tmp);
			return -1;
		}
		if (sess_blob_store(s, tmp, sha, err) < 0)
			return -1;
		free(s->plan_sha[p->layer]);
		s->plan_sha[p->layer] = xstrdup(sha);
		json_object_set_new(res, "plan", json_string(sha));
	}
	return 0;
}

static int
cmd_next(sess *s, json_t *args, json_t *res, masq_err *err)
{
	if (need_layer(s, args, err) < 0 || pipe_next(&s->p, err) < 0)
		return -1;
	json_object_set_new(res, "layer", json_integer(s->p.layer));
	if (s->db != NULL) {
		char sha[65];
		if (checkpoint_write(s, sha, err) < 0)
			return -1;
		json_object_set_new(res, "checkpoint", json_string(sha));
	}
	return 0;
}

static int
cmd_finish(sess *s, json_t *args, json_t *res, masq_err *err)
{
	(void)args;
	if (need_open(s, err) < 0 || pipe_finish(&s->p, err) < 0)
		return -1;
	json_object_set_new(res, "sqnr_db", sess_json_mods(s->p.summary.sqnr, s->p.c, 1));
	json_object_set_new(res, "mae", sess_json_mods(s->p.summary.mae, s->p.c, 1));
	json_object_set_new(res, "kl_text", sess_json_num(s->p.summary.kl_text));
	if (s->db != NULL && s->record)
		sdb_session_set_status(s->db, s->id, "finished", NULL);
	return 0;
}

/* The export's plan callback: each layer's latest plan blob. */
static int
export_plan(void *ctx, int layer, qplan_layer *plan, masq_err *err)
{
	sess *s = ctx;
	if (s->db == NULL)
		return masq_err_set(err, MASQ_ERR_USAGE, "the session is not recorded: nothing to export");
	if (s->plan_sha == NULL || s->plan_sha[layer] == NULL)
		return masq_err_set(err, MASQ_ERR_USAGE, "layer %d has not been quantized in this session", layer);
	char *path = sess_blob_path(s, s->plan_sha[layer], err);
	if (path == NULL)
		return -1;
	int rc = qplan_read(plan, &s->m.cfg, path, err);
	free(path);
	return rc;
}

/* sha256 of every regular file under dir, as {relative name: sha}. */
static int
hash_tree(const char *dir, const char *rel, json_t *out, masq_err *err)
{
	char *path = rel[0] ? masq_path_join(dir, rel) : xstrdup(dir);
	DIR *d = opendir(path);
	struct dirent *e;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;

	if (d == NULL) {
		free(path);
		return masq_err_set(err, MASQ_ERR_IO, "%s: %s", dir, strerror(errno));
	}
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (n == cap)
			names = xrealloc(names, (cap = cap ? 2 * cap : 16) * sizeof *names);
		names[n++] = xstrdup(e->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof *names, cmp_str);
	for (size_t i = 0; i < n && rc == 0; i++) {
		char *r2 = rel[0] ? masq_path_join(rel, names[i]) : xstrdup(names[i]);
		char *full = masq_path_join(dir, r2), hex[65];
		struct stat sb;
		if (stat(full, &sb) == 0 && S_ISDIR(sb.st_mode))
			rc = hash_tree(dir, r2, out, err);
		else if ((rc = sha256_file(full, hex, err)) == 0)
			json_object_set_new(out, r2, json_string(hex));
		free(r2);
		free(full);
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(path);
	return rc;
}

char *
sess_export_preview(sess *s, int format, export_report *rep, masq_err *err)
{
	export_opts o = {0};

	if (need_open(s, err) < 0)
		return NULL;
	o.format = format;
	return export_preview(&s->m, export_plan, s, &o, rep, err);
}

/* Replay --export DIR: where the export recorded as going to out goes,
 * DIR/<out's last name>, or DIR/<name>-<event> when an earlier export of
 * this replay took that name (a new string). */
static char *
export_target(sess *s, const char *out)
{
	char *o = xstrdup(out);
	size_t n = strlen(o);
	while (n > 1 && o[n - 1] == '/')
		o[--n] = '\0';
	const char *base = strrchr(o, '/') ? strrchr(o, '/') + 1 : o;
	if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		base = "export";
	char *t = masq_path_join(s->export_redirect, base);
	size_t i;
	json_t *e;
	json_array_foreach(s->exports_done, i, e)
		if (strcmp(json_string_value(json_object_get(e, "dir")), t) == 0) {
			char name[300];
			snprintf(name, sizeof name, "%s-%lld", base, (long long)s->cur_event);
			free(t);
			t = masq_path_join(s->export_redirect, name);
			break;
		}
	free(o);
	return t;
}

static int
cmd_export(sess *s, json_t *args, json_t *res, masq_err *err)
{
	const char *fmt = arg_str(args, "format", "masquant"), *out = arg_str(args, "out", NULL);
	export_opts o = {0};
	export_report rep;

	if (need_open(s, err) < 0)
		return -1;
	if ((o.format = export_format_parse(fmt)) < 0)
		return masq_err_set(err, MASQ_ERR_USAGE, "unknown export format '%s' (fake, compressed-tensors, masquant)", fmt);
	if (out == NULL || *out == '\0')
		return masq_err_set(err, MASQ_ERR_USAGE, "export needs an output directory");
	if (s->db == NULL)
		return masq_err_set(err, MASQ_ERR_USAGE, "export needs a recorded session (its plans live beside the database)");
	if (s->skip_exports) {
		/* replay without --export: everything the export checks, nothing
		 * written (the file system is not part of what replays) */
		char *t = export_preview(&s->m, export_plan, s, &o, &rep, err);
		if (t == NULL)
			return -1;
		free(t);
		json_object_set_new(res, "skipped", json_true());
		return 1;
	}
	char *target = s->export_redirect != NULL ? export_target(s, out) : xstrdup(out);
	json_t *prov = json_object();
	json_object_set_new(prov, "masq_version", json_string(PACKAGE_VERSION));
	json_object_set_new(prov, "session", json_integer(s->id));
	json_object_set_new(prov, "database", json_string(sdb_path(s->db)));
	json_object_set_new(prov, "model_fp", json_string(s->model_fp));
	json_object_set_new(prov, "calib_fp", json_string(s->calib_fp));
	json_object_set_new(prov, "settings", sess_opts_json(&s->opts));
	json_object_set_new(prov, "format", json_string(fmt));
	char *ptext = json_dumps(prov, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(prov);
	o.provenance = ptext;
	int rc = export_write(&s->m, export_plan, s, &o, target, &rep, err);
	free(ptext);
	if (rc == 0 && s->export_redirect != NULL) {
		if (s->exports_done == NULL)
			s->exports_done = json_array();
		json_array_append_new(s->exports_done, json_pack("{s:I, s:s, s:s}", "event", (json_int_t)s->cur_event,
		    "format", fmt, "dir", target));
	}
	json_t *files = json_object();
	if (rc == 0 && hash_tree(target, "", files, err) < 0)
		rc = -1;
	free(target);
	if (rc < 0) {
		json_decref(files);
		return -1;
	}
	json_object_set_new(res, "format", json_string(fmt));
	json_object_set_new(res, "files", files);
	json_object_set_new(res, "dropped", json_string(rep.dropped));
	return 0;
}

static int
cmd_note(sess *s, json_t *args, json_t *res, masq_err *err)
{
	(void)s; (void)err;
	json_object_set_new(res, "text", json_string(arg_str(args, "text", "")));
	return 0;
}

static const sess_arg no_args[] = {{NULL, 0, 0, NULL}};
static const sess_arg open_args[] = {
	{"model", SARG_STR, 0, "model directory"}, {"calib", SARG_STR, 0, "calibration set"},
	{NULL, 0, 0, NULL}};
static const sess_arg layer_args[] = {{"layer", SARG_INT, 0, "the cursor's layer (checked)"}, {NULL, 0, 0, NULL}};
static const sess_arg method_args[] = {
	{"layer", SARG_STR, 1, "layer number or *"}, {"method", SARG_STR, 1, "rtn, sq, mas, mas-cmc"},
	{NULL, 0, 0, NULL}};
static const sess_arg alpha_args[] = {
	{"layer", SARG_STR, 1, "layer number or *"}, {"linear", SARG_STR, 0, "q..down, qkv, gateup or * (default)"},
	{"modality", SARG_STR, 0, "text, vision, audio, unified or all (default)"},
	{"value", SARG_NUM, 1, "alpha in [0, 1]"}, {NULL, 0, 0, NULL}};
static const sess_arg rank_args[] = {
	{"layer", SARG_STR, 1, "layer number or *"}, {"linear", SARG_STR, 0, "q..up, qkv, gateup or * (default)"},
	{"value", SARG_NUM, 1, "ratio in (0, 1], whole rank, or 0"}, {NULL, 0, 0, NULL}};
static const sess_arg bits_args[] = {
	{"wbits", SARG_INT, 1, "weight bits"}, {"abits", SARG_INT, 1, "activation bits"}, {NULL, 0, 0, NULL}};
static const sess_arg set_args[] = {{"assignment", SARG_STR, 1, "LAYER.LINEAR.KEY=VALUE"}, {NULL, 0, 0, NULL}};
static const sess_arg export_args[] = {
	{"format", SARG_STR, 1, "fake, compressed-tensors or masquant"}, {"out", SARG_STR, 1, "output directory"},
	{NULL, 0, 0, NULL}};
static const sess_arg note_args[] = {{"text", SARG_STR, 1, "free text"}, {NULL, 0, 0, NULL}};

const sess_cmd sess_cmds[] = {
	{"open", open_args, "load the model and calibration set; start the pipeline", 0, cmd_open},
	{"calibrate-layer", layer_args, "FP forward of the cursor's layer with statistics", 'c', cmd_calibrate},
	{"set-method", method_args, "choose a layer's method", 'm', cmd_set_method},
	{"set-bits", bits_args, "weight and activation bits for what is quantized next", 'b', cmd_set_bits},
	{"set-alpha", alpha_args, "set alpha for a layer, linear group and modality", 'a', cmd_set_alpha},
	{"search-alpha", layer_args, "grid-search alpha for the cursor's layer", 's', cmd_search},
	{"set-rank", rank_args, "set the compensation rank of a layer's linears", 'r', cmd_set_rank},
	{"set", set_args, "apply one LAYER.LINEAR.KEY=VALUE assignment (masq run --set)", 0, cmd_set},
	{"quantize-layer", layer_args, "quantize the cursor's layer and measure it", 'q', cmd_quantize},
	{"next-layer", layer_args, "commit the cursor's layer and move to the next", 'n', cmd_next},
	{"finish", no_args, "after the last layer: the model summary", 'f', cmd_finish},
	{"export", export_args, "write the quantized model", 'e', cmd_export},
	{"note", note_args, "write a note into the session", 0, cmd_note},
	{NULL, NULL, NULL, 0, NULL}
};

const sess_cmd *
sess_cmd_find(const char *name)
{
	for (const sess_cmd *c = sess_cmds; c->name != NULL; c++)
		if (strcmp(c->name, name) == 0)
			return c;
	return NULL;
}

static int
check_args(const sess_cmd *c, json_t *args, masq_err *err)
{
	const char *key;
	json_t *v;

	if (args != NULL && !json_is_object(args))
		return masq_err_set(err, MASQ_ERR_USAGE, "%s: arguments must be an object", c->name);
	json_object_foreach(args, key, v) {
		const sess_arg *a = c->args;
		while (a->name != NULL && strcmp(a->name, key) != 0)
			a++;
		if (a->name == NULL)
			return masq_err_set(err, MASQ_ERR_USAGE, "%s: unknown argument '%s'", c->name, key);
		int ok = a->type == SARG_INT ? json_is_integer(v) : a->type == SARG_NUM ? json_is_number(v) :
		    a->type == SARG_BOOL ? json_is_boolean(v) : json_is_string(v);
		if (!ok)
			return masq_err_set(err, MASQ_ERR_USAGE, "%s: argument '%s' must be %s", c->name, key,
			    a->type == SARG_INT ? "an integer" : a->type == SARG_NUM ? "a number" :
			    a->type == SARG_BOOL ? "true or false" : "a string");
	}
	for (const sess_arg *a = c->args; a->name != NULL; a++)
		if (a->required && json_object_get(args, a->name) == NULL)
			return masq_err_set(err, MASQ_ERR_USAGE, "%s: missing argument '%s'", c->name, a->name);
	return 0;
}

/* Test hook (HACKING.md): MASQ_DEBUG_KILL_AFTER_EVENT=N kills the process
 * with SIGKILL right after the session's event N is durable, so tests can
 * interrupt a run at a chosen point instead of after a guessed delay. */
static void
kill_hook(int64_t seq)
{
	static long long at = -1;
	if (at < 0) {
		const char *e = getenv("MASQ_DEBUG_KILL_AFTER_EVENT");
		at = e && *e ? atoll(e) : 0;
	}
	if (at > 0 && seq == at)
		kill(getpid(), SIGKILL);
}

/* Append an event of the dispatcher's (then the test hook). */
static int
sess_append(sess *s, const char *kind, const char *name, const char *payload, masq_err *err)
{
	int64_t seq = 0;
	if (sdb_event_append(s->db, s->id, kind, name, payload, &seq, err) < 0)
		return -1;
	kill_hook(seq);
	return 0;
}

int
sess_dispatch(sess *s, const char *name, json_t *args, json_t **result, masq_err *err)
{
	const sess_cmd *c = sess_cmd_find(name);
	json_t *a = args ? json_incref(args) : json_object();
	json_t *res = json_object();
	int rc;

	if (result != NULL)
		*result = NULL;
	if (c == NULL) {
		rc = masq_err_set(err, MASQ_ERR_USAGE, "unknown command '%s'", name);
		goto out;
	}
	if (check_args(c, a, err) < 0) {
		rc = -1;
		goto out;
	}
	if (s->record && s->db != NULL) {
		char *t = sess_json_text(a);
		rc = sess_append(s, "command", name, t, err);
		free(t);
		if (rc < 0)
			goto out;
	}
	rc = c->exec(s, a, res, err);
	if (s->record && s->db != NULL) {
		masq_err e2 = {0};
		if (rc < 0) {
			json_t *ej = json_pack("{s:s, s:s}", "message", err->msg, "status",
			    masq_status_name(err->status));
			char *t = sess_json_text(ej);
			json_decref(ej);
			sess_append(s, "error", name, t, &e2);
			free(t);
		} else {
			char *t = sess_json_text(res);
			if (sess_append(s, "result", name, t, &e2) < 0) {
				*err = e2;
				rc = -1;
			}
			free(t);
		}
	}
out:
	if (rc >= 0 && result != NULL)
		*result = json_incref(res);
	json_decref(res);
	json_decref(a);
	return rc < 0 ? -1 : rc;
}

int
sess_preview(sess *s, int grp, int mod, pipe_preview *out, masq_err *err)
{
	if (need_open(s, err) < 0)
		return -1;
	return pipe_preview_sample(&s->p, grp, mod, out, err);
}

int
sess_preview_method(sess *s, int method, int grp, int mod, pipe_preview *out, masq_err *err)
{
	if (need_open(s, err) < 0)
		return -1;
	pipeline *p = &s->p;
	if (method < 0 || method >= METHOD_COUNT)
		return masq_err_set(err, MASQ_ERR_USAGE, "preview: no method %d", method);
	if (p->layer >= p->n_layers)
		return masq_err_set(err, MASQ_ERR_USAGE, "preview: every layer is committed");
	layer_setting keep = p->settings[p->layer];	/* restored below */
	p->settings[p->layer].method = method;
	int rc = pipe_preview_sample(p, grp, mod, out, err);
	p->settings[p->layer] = keep;
	return rc;
}

/* ---- restore ------------------------------------------------------------------------ */

int
sess_evlist_collect(void *ctx, const sdb_event *e)
{
	sess_evlist *l = ctx;
	if (l->n == l->cap)
		l->v = xrealloc(l->v, (l->cap = l->cap ? 2 * l->cap : 64) * sizeof *l->v);
	l->v[l->n++] = (sess_ev){e->seq, xstrdup(e->kind), xstrdup(e->name), xstrdup(e->payload)};
	return 0;
}

void
sess_evlist_free(sess_evlist *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].kind);
		free(l->v[i].name);
		free(l->v[i].payload);
	}
	free(l->v);
	memset(l, 0, sizeof *l);
}

long
sess_evlist_outcome(const sess_evlist *l, size_t i)
{
	if (i + 1 < l->n && strcmp(l->v[i + 1].name, l->v[i].name) == 0 &&
	    (strcmp(l->v[i + 1].kind, "result") == 0 || strcmp(l->v[i + 1].kind, "error") == 0))
		return (long)(i + 1);
	return -1;
}

int
sess_restore(sess *s, int *finished, masq_err *err)
{
	sess_evlist l = {0};
	int rc = 0, cursor = 0, rec = s->record;
	char *ckpt = NULL;

	*finished = 0;
	if (sdb_event_each(s->db, s->id, sess_evlist_collect, &l, err) < 0) {
		sess_evlist_free(&l);
		return -1;
	}
	s->record = 0;
	for (size_t i = 0; i < l.n && rc == 0; i++) {
		sess_ev *e = &l.v[i];
		long o = sess_evlist_outcome(&l, i);
		if (strcmp(e->kind, "command") != 0 || o < 0 || strcmp(l.v[o].kind, "result") != 0)
			continue;
		json_error_t je;
		json_t *args = json_loads(e->payload, 0, &je), *res = json_loads(l.v[o].payload, 0, &je);
		if (strcmp(e->name, "open") == 0 || strncmp(e->name, "set", 3) == 0) {
			if (strcmp(e->name, "open") != 0 && !s->opened)
				rc = masq_err_set(err, MASQ_ERR_FORMAT, "event %lld: %s before open", (long long)e->seq, e->name);
			else
				rc = sess_dispatch(s, e->name, args, NULL, err) < 0 ? -1 : 0;
		} else if (!s->opened) {
			rc = masq_err_set(err, MASQ_ERR_FORMAT, "event %lld: %s before open", (long long)e->seq, e->name);
		} else if (strcmp(e->name, "search-alpha") == 0) {
			int layer = (int)json_integer_value(json_object_get(res, "layer"));
			json_t *best = json_object_get(res, "best");
			const char *k;
			json_t *v;
			if (layer >= 0 && layer < s->p.n_layers)
				json_object_foreach(best, k, v) {
					int row = strcmp(k, "unified") == 0 ? ALPHA_UNIFIED : -1;
					for (int m = 0; m < MOD_COUNT; m++)
						if (strcmp(k, modality_name(m)) == 0)
							row = m;
					if (row >= 0)
						for (int g = 0; g < GRP_COUNT; g++)
							s->p.settings[layer].alpha[g][row] = (float)json_number_value(v);
				}
		} else if (strcmp(e->name, "quantize-layer") == 0) {
			int layer = (int)json_integer_value(json_object_get(res, "layer"));
			const char *plan = json_string_value(json_object_get(res, "plan"));
			if (layer >= 0 && layer < s->p.n_layers) {
				pipe_layer_result *r = &s->p.results[layer];
				free(s->plan_sha[layer]);
				s->plan_sha[layer] = plan ? xstrdup(plan) : NULL;
				r->done = 1;
				r->method = method_parse(json_string_value(json_object_get(res, "method")));
				json_t *sq = json_object_get(res, "sqnr_db"), *ma = json_object_get(res, "mae");
				for (int m = 0; m < STATS_ROWS; m++) {
					const char *mn = m < MOD_COUNT ? modality_name(m) : "all";
					json_t *x = json_object_get(sq, mn), *y = json_object_get(ma, mn);
					r->sqnr[m] = json_is_number(x) ? json_number_value(x) : NAN;
					r->mae[m] = json_is_number(y) ? json_number_value(y) : NAN;
				}
			}
		} else if (strcmp(e->name, "next-layer") == 0) {
			cursor = (int)json_integer_value(json_object_get(res, "layer"));
			free(ckpt);
			const char *c = json_string_value(json_object_get(res, "checkpoint"));
			ckpt = c ? xstrdup(c) : NULL;
		} else if (strcmp(e->name, "finish") == 0) {
			*finished = 1;
		}
		json_decref(args);
		json_decref(res);
	}
	if (rc == 0 && !s->opened)
		rc = masq_err_set(err, MASQ_ERR_FORMAT, "session %lld never opened its model", (long long)s->id);
	/* Quantize results at or past the cursor were never committed: their
	 * layer must be calibrated and quantized again before next-layer. */
	if (rc == 0 && s->opened)
		for (int k = cursor; k < s->p.n_layers; k++)
			s->p.results[k].done = 0;
	if (rc == 0 && cursor > 0) {
		if (ckpt == NULL)
			rc = masq_err_set(err, MASQ_ERR_FORMAT, "session %lld: layer %d has no checkpoint", (long long)s->id, cursor - 1);
		else if (cursor > s->p.n_layers)
			rc = masq_err_set(err, MASQ_ERR_FORMAT, "session %lld: checkpoint past the last layer", (long long)s->id);
		else if ((rc = checkpoint_read(s, ckpt, err)) == 0)
			s->p.layer = cursor;
	}
	s->record = rec;
	free(ckpt);
	sess_evlist_free(&l);
	return rc < 0 ? -1 : cursor;
}
