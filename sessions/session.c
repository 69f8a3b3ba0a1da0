/*
 * session.c: a session's life cycle (create, attach, free), its options as
 * JSON, the fingerprints that pin its inputs, its blobs, and the JSON
 * helpers every command family uses.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/dist.h"
#include "core/engine.h"
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
sess_json_mods_counts(const int *n_mod, const double *v, int with_all)
{
	json_t *o = json_object();
	for (int m = 0; m < MOD_COUNT; m++)
		json_object_set_new(o, modality_name(m), n_mod[m] ? sess_json_num(v[m]) : json_null());
	if (with_all)
		json_object_set_new(o, "all", sess_json_num(v[STATS_ALL]));
	return o;
}

json_t *
sess_json_mods(const sess *s, const double *v, int with_all)
{
	return sess_json_mods_counts(s->c.n_mod, v, with_all);
}

const char *
sess_arg_str(json_t *args, const char *k, const char *dflt)
{
	json_t *v = json_object_get(args, k);
	return json_is_string(v) ? json_string_value(v) : dflt;
}

double
sess_arg_num(json_t *args, const char *k, double dflt)
{
	json_t *v = json_object_get(args, k);
	return json_is_number(v) ? json_number_value(v) : dflt;
}

/* ---- options --------------------------------------------------------------------- */

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
	json_object_set_new(j, "epochs", json_integer(o->epochs));
	json_object_set_new(j, "lr", json_real(o->lr));
	json_object_set_new(j, "loss", json_string(learn_loss_name(o->loss)));
	json_object_set_new(j, "loss_weights", json_pack("[f, f, f]", o->lambda[MOD_TEXT], o->lambda[MOD_VISION],
	    o->lambda[MOD_AUDIO]));
	json_object_set_new(j, "tie", json_boolean(o->tie));
	json_object_set_new(j, "sqnr_floor", json_string(o->sqnr_floor == METRICS_FLOOR_SUM ? "sum" : "mean"));
	if (o->eval_split > 0)
		json_object_set_new(j, "eval_split", json_real(o->eval_split));
	if (o->cmc_precision == CMC_F32)	/* absent reads back as f64, as sessions recorded before it */
		json_object_set_new(j, "cmc_precision", json_string("f32"));
	if (o->whiten_kind == CMC_WHITEN_CHOL)	/* absent reads back as eig, as sessions recorded before it */
		json_object_set_new(j, "cmc_whitener", json_string("cholesky"));
	if (o->rsvd_gram)	/* absent reads back as householder, as sessions recorded before it */
		json_object_set_new(j, "cmc_rsvd", json_string(pipe_rsvd_name(o->rsvd_gram)));
	if (o->compute != ENGINE_F32)	/* absent reads back as f32, as sessions recorded before it */
		json_object_set_new(j, "compute", json_string(engine_compute_name(o->compute)));
	if (o->cmc_dtype != ST_F32)	/* absent reads back as F32, as sessions recorded before it */
		json_object_set_new(j, "cmc_dtype", json_string(st_dtype_name(o->cmc_dtype)));
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
		{"sample_cap", offsetof(pipe_opts, sample_cap)}, {"epochs", offsetof(pipe_opts, epochs)},
		{"tie", offsetof(pipe_opts, tie)},
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
	if (strcmp(k, "lr") == 0) return &o->lr;
	return NULL;
}

int
sess_opts_from_json(pipe_opts *o, json_t *j, masq_err *err)
{
	const char *k;
	json_t *v;

	pipe_opts_default(o);
	o->epochs = 0;	/* sessions that do not say predate learning: they did not learn */
	o->sqnr_floor = METRICS_FLOOR_SUM;	/* ... and floored the SQNR's sum of squares */
	o->cmc_dtype = ST_F32;	/* ... and stored the compensation in F32 */
	o->cmc_precision = CMC_F64;	/* ... and computed it in double */
	o->whiten_kind = CMC_WHITEN_EIG;	/* ... and whitened with the eigendecomposition */
	o->rsvd_gram = 0;	/* ... and ran the randomized SVD's steps by Householder QR and dgesdd */
	if (!json_is_object(j))
		return masq_err_set(err, MASQ_ERR_FORMAT, "its settings are not a JSON object");
	json_object_foreach(j, k, v) {
		int *pi;
		float *pf;
		if (strcmp(k, "method") == 0) {
			if (!json_is_string(v) || (o->method = method_parse(json_string_value(v))) < 0)
				return masq_err_set(err, MASQ_ERR_FORMAT, "setting \"method\" is not a method");
		} else if (strcmp(k, "rank") == 0) {
			if (!json_is_number(v))
				return masq_err_set(err, MASQ_ERR_FORMAT, "setting \"rank\" is not a number");
			o->rank = json_number_value(v);
		} else if (strcmp(k, "eval_split") == 0) {
			if (!json_is_number(v))
				return masq_err_set(err, MASQ_ERR_FORMAT, "setting \"eval_split\" is not a number");
			o->eval_split = json_number_value(v);
		} else if (strcmp(k, "sqnr_floor") == 0) {
			const char *f = json_string_value(v);
			if (f == NULL || (strcmp(f, "mean") != 0 && strcmp(f, "sum") != 0))
				return masq_err_set(err, MASQ_ERR_FORMAT, "setting \"sqnr_floor\" is not mean or sum");
			o->sqnr_floor = strcmp(f, "mean") == 0 ? METRICS_FLOOR_MEAN : METRICS_FLOOR_SUM;
		} else if (strcmp(k, "cmc_dtype") == 0) {
			const char *d = json_string_value(v);
			if (d == NULL || (strcmp(d, "F32") != 0 && strcmp(d, "F16") != 0 && strcmp(d, "BF16") != 0))
				return masq_err_set(err, MASQ_ERR_FORMAT, "setting \"cmc_dtype\" is not F32, F16 or BF16");
			o->cmc_dtype = strcmp(d, "F32") == 0 ? ST_F32 : strcmp(d, "F16") == 0 ? ST_F16 : ST_BF16;
		} else if (strcmp(k, "compute") == 0) {
			if (!json_is_string(v) || (o->compute = engine_compute_parse(json_string_value(v))) < 0)
				return masq_err_set(err, MASQ_ERR_FORMAT, "setting \"compute\" is not f32 or bf16");
		} else if (strcmp(k, "cmc_precision") == 0) {
			const char *d = json_string_value(v);
			if (d == NULL || (strcmp(d, "f32") != 0 && strcmp(d, "f64") != 0))
				return masq_err_set(err, MASQ_ERR_FORMAT, "setting \"cmc_precision\" is not f32 or f64");
			o->cmc_precision = strcmp(d, "f32") == 0 ? CMC_F32 : CMC_F64;
		} else if (strcmp(k, "cmc_whitener") == 0) {
			const char *d = json_string_value(v);
			if (d == NULL || (strcmp(d, "eig") != 0 && strcmp(d, "cholesky") != 0))
				return masq_err_set(err, MASQ_ERR_FORMAT, "setting \"cmc_whitener\" is not eig or cholesky");
			o->whiten_kind = strcmp(d, "eig") == 0 ? CMC_WHITEN_EIG : CMC_WHITEN_CHOL;
		} else if (strcmp(k, "cmc_rsvd") == 0) {
			const char *d = json_string_value(v);
			if (d == NULL || (o->rsvd_gram = pipe_rsvd_parse(d)) < 0)
				return masq_err_set(err, MASQ_ERR_FORMAT, "setting \"cmc_rsvd\" is not gram or householder");
		} else if (strcmp(k, "loss") == 0) {
			if (!json_is_string(v) || (o->loss = learn_loss_parse(json_string_value(v))) < 0)
				return masq_err_set(err, MASQ_ERR_FORMAT, "setting \"loss\" is not mae or mse");
		} else if (strcmp(k, "loss_weights") == 0) {
			if (!json_is_array(v) || json_array_size(v) != MOD_COUNT)
				return masq_err_set(err, MASQ_ERR_FORMAT, "setting \"loss_weights\" is not 3 numbers");
			for (int m = 0; m < MOD_COUNT; m++) {
				if (!json_is_number(json_array_get(v, m)))
					return masq_err_set(err, MASQ_ERR_FORMAT, "setting \"loss_weights\" is not 3 numbers");
				o->lambda[m] = (float)json_number_value(json_array_get(v, m));
			}
		} else if (strcmp(k, "seed") == 0) {
			if (!json_is_integer(v) || json_integer_value(v) < 0)
				return masq_err_set(err, MASQ_ERR_FORMAT, "setting \"seed\" is not an integer >= 0");
			o->seed = (uint64_t)json_integer_value(v);
		} else if ((pi = opt_int(o, k)) != NULL) {
			if (!json_is_integer(v) && !json_is_boolean(v))
				return masq_err_set(err, MASQ_ERR_FORMAT, "setting \"%s\" is not an integer", k);
			json_int_t x = json_is_boolean(v) ? json_is_true(v) : json_integer_value(v);
			if (x < -0x7fffffffLL || x > 0x7fffffffLL)
				return masq_err_set(err, MASQ_ERR_FORMAT, "setting \"%s\" = %lld is out of range", k,
				    (long long)x);
			*pi = (int)x;
		} else if ((pf = opt_float(o, k)) != NULL) {
			if (!json_is_number(v))
				return masq_err_set(err, MASQ_ERR_FORMAT, "setting \"%s\" is not a number", k);
			*pf = (float)json_number_value(v);
		}
		/* unknown keys are ignored: a newer masq may add settings */
	}
	/* what is read back is input too: the command line's rules */
	if (pipe_opts_check(o, err) < 0) {
		err->status = MASQ_ERR_FORMAT;
		return masq_err_prefix(err, "its settings");
	}
	return 0;
}

/* ---- fingerprints ---------------------------------------------------------------- */

int
sess_fingerprint_model(const char *dir, char out[65], masq_err *err)
{
	sha256_ctx c;
	char **names = NULL;
	size_t len;

	sha256_init(&c);
	char *cfg = masq_path_join(dir, "config.json");
	char *text = masq_read_file(cfg, 16u << 20, &len, err);
	free(cfg);
	if (text == NULL)
		return -1;
	sha256_update(&c, "config.json", 12);
	sha256_update(&c, text, len);
	free(text);
	int n = masq_dir_list(dir, &names, err);
	if (n < 0)
		return -1;
	int rc = 0;
	for (int i = 0; i < n && rc == 0; i++) {
		size_t l = strlen(names[i]);
		if (l <= 12 || strcmp(names[i] + l - 12, ".safetensors") != 0)
			continue;
		char *p = masq_path_join(dir, names[i]);
		masq_err oe = {0};
		int fd = masq_open_regular(p, &oe);
		FILE *fp = fd >= 0 ? fdopen(fd, "rb") : NULL;
		if (fd >= 0 && fp == NULL)
			close(fd);
		unsigned char hl[8];
		uint64_t h = 0;
		struct stat sb;
		if (fp == NULL || fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode) || fread(hl, 1, 8, fp) != 8) {
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
	masq_dir_list_free(names, n);
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

int
sess_create(sess **out, sdb *db, const pipe_opts *o, const char *model_dir, const char *calib_path,
    int threads, masq_err *err)
{
	char mfp[65], cfp[65];
	sdb_session row;

	*out = NULL;
	if (pipe_opts_check(o, err) < 0)
		return -1;
	if (sess_fingerprint_model(model_dir, mfp, err) < 0 || sess_fingerprint_calib(calib_path, cfp, err) < 0)
		return -1;
	sess *s = xcalloc(1, sizeof *s);
	s->cur_cmd = -1;
	s->db = db;
	s->record = db != NULL;
	s->opts = *o;
	s->threads = threads > 0 ? threads : masq_blas_get_threads();
	s->model_dir = xstrdup(model_dir);
	s->calib_path = xstrdup(calib_path);
	s->model_fp = xstrdup(mfp);
	s->calib_fp = xstrdup(cfp);
	s->status = xstrdup("open");
	/* the numeric environment, with the BLAS threads the session runs on */
	s->env = numenv_collect(s->threads, o->compute);
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
			sess_free(s);
			return -1;
		}
	}
	*out = s;
	return 0;
}

/* Rank 0's session row, on every rank of several (what it sends is what it
 * read and checked), as text: its paths need not be UTF-8. */
static void
row_share(sdb_session *row)
{
	char num[3][32];
	snprintf(num[0], sizeof num[0], "%lld", (long long)row->id);
	snprintf(num[1], sizeof num[1], "%lld", (long long)row->seed);
	snprintf(num[2], sizeof num[2], "%d", row->threads);
	const char *in[] = {num[0], num[1], num[2], row->masq_version, row->model_path, row->model_fp,
		row->calib_path, row->calib_fp, row->settings, row->status, row->environment};
	enum { N = sizeof in / sizeof in[0] };
	char *out[N];
	dist_bcast_strings(in, out, N);
	if (dist_rank() != 0) {
		memset(row, 0, sizeof *row);
		row->id = strtoll(out[0], NULL, 10);
		row->seed = strtoll(out[1], NULL, 10);
		row->threads = (int)strtol(out[2], NULL, 10);
		char **field[] = {&row->masq_version, &row->model_path, &row->model_fp, &row->calib_path,
			&row->calib_fp, &row->settings, &row->status, &row->environment};
		for (int k = 0; k < N - 3; k++) {
			*field[k] = out[k + 3];
			out[k + 3] = NULL;
		}
	}
	for (int k = 0; k < N; k++)
		free(out[k]);
}

int
sess_attach(sess **out, sdb *db, int64_t id, const char *model_dir, const char *calib_path, int record,
    masq_err *err)
{
	sdb_session row;
	char mfp[65], cfp[65];
	json_t *j;
	json_error_t je;

	*out = NULL;
	/* several processes: rank 0 reads the row and every rank learns it */
	int many = dist_size() > 1;
	int grc = dist_rank() == 0 ? sdb_session_get(db, id, &row, err) : 0;
	if (many && dist_agree(grc < 0, err)) {
		if (grc == 0)
			sdb_session_free(&row);
		return -1;
	}
	if (grc < 0)
		return -1;
	if (many)
		row_share(&row);
	sess *s = xcalloc(1, sizeof *s);
	s->cur_cmd = -1;
	s->db = db;
	s->id = row.id;
	s->record = record;
	s->threads = row.threads;
	s->model_dir = xstrdup(model_dir ? model_dir : row.model_path ? row.model_path : "");
	s->calib_path = xstrdup(calib_path ? calib_path : row.calib_path ? row.calib_path : "");
	s->model_fp = xstrdup(row.model_fp);
	s->calib_fp = xstrdup(row.calib_fp);
	s->recorded_version = row.masq_version != NULL ? xstrdup(row.masq_version) : NULL;
	s->status = xstrdup(row.status);
	j = json_loads(row.settings, 0, &je);
	int rc = sess_opts_from_json(&s->opts, j, err);
	json_decref(j);
	if (rc == 0 && row.environment != NULL)
		s->env = json_loads(row.environment, 0, &je);	/* not inside json_is_object: a macro */
	if (rc == 0 && row.environment != NULL && !json_is_object(s->env)) {
		json_decref(s->env);
		s->env = NULL;
		rc = masq_err_set(err, MASQ_ERR_FORMAT, "its environment is not a JSON object");
	}
	sdb_session_free(&row);
	if (rc < 0) {
		masq_err_prefix(err, "session %lld", (long long)s->id);
		rc = -1;
		goto fail;
	}
	if (sess_fingerprint_model(s->model_dir, mfp, err) < 0) {
		masq_err_prefix(err, "session %lld's model", (long long)s->id);
		rc = -1;
		goto fail;
	}
	if (strcmp(mfp, s->model_fp) != 0) {
		masq_err_set(err, MASQ_ERR_USAGE,
		    "%s is not the model session %lld was recorded with (fingerprint %.12s..., recorded %.12s...)",
		    s->model_dir, (long long)s->id, mfp, s->model_fp);
		rc = -1;
		goto fail;
	}
	if (sess_fingerprint_calib(s->calib_path, cfp, err) < 0) {
		masq_err_prefix(err, "session %lld's calibration set", (long long)s->id);
		rc = -1;
		goto fail;
	}
	if (strcmp(cfp, s->calib_fp) != 0) {
		masq_err_set(err, MASQ_ERR_USAGE,
		    "%s is not the calibration set session %lld was recorded with (fingerprint %.12s..., recorded %.12s...)",
		    s->calib_path, (long long)s->id, cfp, s->calib_fp);
		rc = -1;
		goto fail;
	}
	rc = 0;
fail:
	/* every rank read the same files, or none goes on */
	if (many && dist_agree(rc < 0, err))
		rc = -1;
	if (rc < 0) {
		sess_free(s);
		return -1;
	}
	*out = s;
	return 0;
}

void
sess_free(sess *s)
{
	if (s == NULL)
		return;
	if (s->opened) {
		for (int l = 0; l < s->p.n_layers; l++)
			free(s->plan_sha ? s->plan_sha[l] : NULL);
		free(s->plan_sha);
		free(s->live);
		pipe_done(&s->p);
		if (s->sharded)
			calib_done(&s->part);
		calib_done(&s->c);
		model_close(&s->m);
	}
	free(s->model_dir);
	free(s->calib_path);
	free(s->model_fp);
	free(s->recorded_version);
	free(s->calib_fp);
	free(s->status);
	free(s->export_redirect);
	free(s->blob_scratch);
	json_decref(s->env);
	json_decref(s->exports_done);
	sess_undo_free_all(s);
	free(s);
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
