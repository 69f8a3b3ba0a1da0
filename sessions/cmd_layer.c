/*
 * cmd_layer.c: the commands that walk the decoder (open, calibrate-layer,
 * search-alpha, train-layer, quantize-layer, next-layer, finish), the blobs
 * they leave beside the database (statistics, learned factors, plans,
 * checkpoints), and how resume rebuilds their effect from their recorded
 * results.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/dist.h"
#include "core/engine.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "sessions/internal.h"

/* ---- blobs ------------------------------------------------------------------- */

/* The checkpoint after a layer: the hidden states entering the cursor
 * (FP, quantized, and when the run learns its two train-mode chains,
 * "h_train" and "h_fpe"). */
/* Rank 0 writes what every rank's share of a chain streams to it. */
struct ckpt_sink {
	st_writer *w;
	masq_err *err;
};

static int
ckpt_sink(void *ctx, const float *x, size_t n)
{
	struct ckpt_sink *k = ctx;
	return k->w != NULL ? st_writer_write(k->w, x, n * sizeof *x, k->err) : 0;
}

static int
checkpoint_write(sess *s, char sha[65], masq_err *err)
{
	const pipeline *p = &s->p;
	/* the whole set's tokens: one rank of several streams its share to
	 * rank 0, which alone writes */
	int64_t shape[2] = {p->all->n_tokens, p->m->cfg.hidden};
	size_t n = (size_t)p->c->n_tokens * shape[1];
	const float *chain[4] = {p->h_fp, p->h_q, p->h_train, p->h_fpe};
	static const char *const names[4] = {"h_fp", "h_q", "h_train", "h_fpe"};
	int nchain = p->h_train != NULL ? 4 : 2, rc = 0;
	char v[32];
	st_writer *w = NULL;
	char *tmp = NULL;

	if (dist_rank() == 0) {
		w = st_writer_new();
		tmp = sess_blob_tmp(s, "checkpoint");
		snprintf(v, sizeof v, "%d", p->layer);
		for (int i = 0; i < nchain && rc == 0; i++)
			rc = st_writer_add(w, names[i], ST_F32, 2, shape, err);
		if (rc == 0)
			rc = st_writer_meta(w, "next_layer", v, err);
		if (rc == 0)
			rc = st_writer_begin(w, tmp, err);
	}
	/* every rank streams every chain, whatever rank 0's writer did */
	struct ckpt_sink k = {rc == 0 ? w : NULL, err};
	for (int i = 0; i < nchain; i++) {
		int r = dist_stream_f32(chain[i], n, ckpt_sink, &k);
		if (r < 0 && rc == 0)
			rc = r;
		if (rc < 0)
			k.w = NULL;
	}
	if (dist_rank() != 0)
		return 0;
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

/* The checkpoint's chains into the pipeline's.  Under several processes rank
 * 0 alone reads the blob (beside its database) and sends each rank its
 * share of the tokens: the blob holds the whole set's, in sequence order,
 * whatever number of processes wrote it. */
int
sess_checkpoint_read(sess *s, const char *sha, masq_err *err)
{
	pipeline *p = &s->p;
	float *chain[4] = {p->h_fp, p->h_q, p->h_train, p->h_fpe};
	int nchain = p->h_train != NULL ? 4 : 2, rc = 0, opened = 0;
	const st_tensor *t[4] = {0};
	st_file f;

	if (dist_rank() == 0) {
		char *path = sess_blob_path(s, sha, err);
		rc = path != NULL ? st_open(&f, path, err) : -1;
		free(path);
		opened = rc == 0;
	}
	static const char *const names[4] = {"h_fp", "h_q", "h_train", "h_fpe"};
	for (int i = 0; i < nchain && opened && rc == 0; i++) {
		t[i] = st_find(&f, names[i]);
		if (t[i] != NULL && t[i]->dtype == ST_F32 && t[i]->ndim == 2 && t[i]->shape[0] == p->all->n_tokens &&
		    t[i]->shape[1] == p->m->cfg.hidden)
			continue;
		if (i < 2)
			rc = masq_err_set(err, MASQ_ERR_FORMAT, "checkpoint %.12s... does not fit this model and calibration set",
			    sha);
		else
			rc = masq_err_set(err, MASQ_ERR_FORMAT,
			    "checkpoint %.12s... has no %s chain, which this session's learning needs", sha,
			    i == 3 ? "train-mode FP (h_fpe)" : "train-mode (h_train)");
	}
	if (dist_size() > 1 && dist_agree(rc < 0, err))
		rc = -1;
	if (rc == 0)
		for (int i = 0; i < nchain; i++)
			dist_scatter_f32(t[i] != NULL ? (const float *)t[i]->data : NULL, chain[i],
			    (size_t)p->c->n_tokens * p->m->cfg.hidden);
	if (opened)
		st_close(&f);
	return rc < 0 ? -1 : 0;
}

int
sess_factors_read(sess *s, const char *path, masq_err *err)
{
	st_file f;
	const float *v[LEARN_LINS][MOD_COUNT];
	char name[64];
	if (st_open(&f, path, err) < 0)
		return -1;
	for (int k = 0; k < LEARN_LINS; k++)
		for (int m = 0; m < MOD_COUNT; m++) {
			int out, in;
			layer_lin_shape(&s->p.m->cfg, k, &out, &in);
			snprintf(name, sizeof name, "s.%s.%s", lin_name(k), modality_name(m));
			const st_tensor *t = st_find(&f, name);
			if (t == NULL || t->dtype != ST_F32 || t->ndim != 1 || t->shape[0] != in) {
				st_close(&f);
				return masq_err_set(err, MASQ_ERR_FORMAT, "%s: no F32 [%d] tensor %s", path, in, name);
			}
			v[k][m] = (const float *)t->data;
		}
	int rc = pipe_learned_adopt(&s->p, (const float *const (*)[MOD_COUNT])v, err);
	st_close(&f);
	return rc;
}

/* One F32 tensor of a blob. */
struct blob_tensor {
	char name[64];
	int ndim;
	int64_t shape[2];
	const float *data;
};

/* Write the n tensors (metadata "layer": the cursor's) to a new blob of
 * kind what and store it; sha gets its name. */
static int
f32_blob_store(sess *s, const char *what, const struct blob_tensor *t, int n, char sha[65], masq_err *err)
{
	st_writer *w = st_writer_new();
	char *tmp = sess_blob_tmp(s, what), v[32];
	int rc = 0;

	snprintf(v, sizeof v, "%d", s->p.layer);
	for (int i = 0; i < n && rc == 0; i++)
		rc = st_writer_add(w, t[i].name, ST_F32, t[i].ndim, t[i].shape, err);
	if (rc == 0)
		rc = st_writer_meta(w, "layer", v, err) < 0 || st_writer_begin(w, tmp, err) < 0 ? -1 : 0;
	for (int i = 0; i < n && rc == 0; i++) {
		size_t ne = (size_t)t[i].shape[0] * (size_t)(t[i].ndim > 1 ? t[i].shape[1] : 1);
		rc = st_writer_write(w, t[i].data, ne * sizeof(float), err);
	}
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

/* The cursor layer's learned factors, "s.<linear>.<modality>" F32 [in]
 * (18 vectors; with usq the three of a linear are equal), as a blob when
 * the session is recorded; hex gets the sha256 of the raw vectors in that
 * order. */
static int
factors_blob_write(sess *s, char sha[65], char hex[65], masq_err *err)
{
	const pipeline *p = &s->p;
	struct blob_tensor t[LEARN_LINS * MOD_COUNT];
	sha256_ctx hc;
	int n = 0;

	sha256_init(&hc);
	for (int k = 0; k < LEARN_LINS; k++)
		for (int m = 0; m < MOD_COUNT; m++, n++) {
			int out, in;
			layer_lin_shape(&p->m->cfg, k, &out, &in);
			sha256_update(&hc, p->learned[k][m], (size_t)in * sizeof(float));
			snprintf(t[n].name, sizeof t[n].name, "s.%s.%s", lin_name(k), modality_name(m));
			t[n].ndim = 1;
			t[n].shape[0] = in;
			t[n].data = p->learned[k][m];
		}
	sha256_hex(&hc, hex);
	return s->db != NULL ? f32_blob_store(s, "factors", t, n, sha, err) : 0;
}

/* The cursor layer's per-channel maxima, "absmax.<site>" F32 [rows, d]
 * (rows: text, vision, audio, all), as a blob. */
static int
stats_blob_write(sess *s, char sha[65], masq_err *err)
{
	const pipeline *p = &s->p;
	struct blob_tensor t[SITE_COUNT];

	for (int site = 0; site < SITE_COUNT; site++) {
		snprintf(t[site].name, sizeof t[site].name, "absmax.%s", engine_site_name(site));
		t[site].ndim = 2;
		t[site].shape[0] = STATS_ROWS;
		t[site].shape[1] = p->st[site].d;
		t[site].data = p->st[site].absmax;
	}
	return f32_blob_store(s, "stats", t, SITE_COUNT, sha, err);
}

/* ---- the commands ---------------------------------------------------------------- */

sess_retval
scmd_open(sess *s, json_t *args, json_t *res, masq_err *err)
{
	if (s->opened)
		return masq_err_set(err, MASQ_ERR_USAGE, "the session is already open");
	masq_blas_set_threads(s->threads);
	int nr = dist_size(), rc = 0, have_m = 0, have_c = 0;
	if (model_open_prefix(&s->m, s->model_dir, sess_arg_str(args, "prefix", NULL), err) < 0)
		rc = -1;
	else
		have_m = 1;
	if (rc == 0 && calib_load(&s->c, s->calib_path, s->m.cfg.hidden, err) < 0)
		rc = -1;
	else if (rc == 0)
		have_c = 1;
	if (rc == 0 && nr == 1 && pipe_init(&s->p, &s->m, &s->c, &s->opts, err) < 0)
		rc = -1;
	if (nr > 1) {
		/* one rank of several: the same model and calibration set as
		 * rank 0's, then its share of whole sequences (the whole set's
		 * sequences and modalities stay, its embeddings go) */
		int same_m = dist_same_text(s->model_fp), same_c = dist_same_text(s->calib_fp);
		if (rc == 0 && (!same_m || !same_c))
			rc = masq_err_set(err, MASQ_ERR_USAGE,
			    "%s (fingerprint %.12s...) is not the %s rank 0 reads: every process needs the same files",
			    same_m ? s->calib_path : s->model_dir, same_m ? s->calib_fp : s->model_fp,
			    same_m ? "calibration set" : "model");
		if (rc == 0 && s->c.n_seqs < nr)
			rc = masq_err_set(err, MASQ_ERR_USAGE,
			    "%d processes for %d calibration sequences: each process needs a whole sequence; "
			    "run at most %d", nr, s->c.n_seqs, s->c.n_seqs);
		if (rc == 0) {
			int *first = xmalloc(xmul((size_t)nr + 1, sizeof(int)));
			dist_shard(s->c.seq_lens, s->c.n_seqs, nr, first);
			calib_slice(&s->c, first[dist_rank()], first[dist_rank() + 1], &s->part);
			s->sharded = 1;
			free(s->c.embeds);
			s->c.embeds = NULL;
			for (int k = 0; k < s->c.n_deepstack; k++) {
				free(s->c.deepstack[k]);
				s->c.deepstack[k] = NULL;
			}
			if (pipe_init_shard(&s->p, &s->m, &s->part, &s->c, first[dist_rank()], &s->opts, err) < 0)
				rc = -1;
			free(first);
		}
		/* every rank learns whether every other opened, before any waits for it */
		int all_ok = !dist_agree(rc < 0, err);
		if (!all_ok && rc == 0) {
			pipe_done(&s->p);
			rc = -1;
		}
	}
	if (rc < 0) {
		if (s->sharded)
			calib_done(&s->part);
		s->sharded = 0;
		if (have_c)
			calib_done(&s->c);
		if (have_m)
			model_close(&s->m);
		return SESS_ERROR;
	}
	s->plan_sha = xcalloc((size_t)s->m.cfg.n_layers, sizeof *s->plan_sha);
	s->live = xcalloc((size_t)s->m.cfg.n_layers, 1);
	s->p.work = sess_work;
	s->p.work_ctx = s;
	s->opened = 1;
	json_object_set_new(res, "model_fp", json_string(s->model_fp));
	json_object_set_new(res, "calib_fp", json_string(s->calib_fp));
	json_object_set_new(res, "layers", json_integer(s->m.cfg.n_layers));
	json_object_set_new(res, "hidden", json_integer(s->m.cfg.hidden));
	json_object_set_new(res, "tokens", json_integer(s->c.n_tokens));
	return SESS_OK;
}

sess_retval
scmd_calibrate(sess *s, json_t *args, json_t *res, masq_err *err)
{
	(void)args;
	pipeline *p = &s->p;
	if (pipe_calibrate(p, err) < 0)
		return SESS_ERROR;
	s->live[p->layer] = SLIVE_CALIB;	/* a new calibration: nothing quantized yet */
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
			return SESS_ERROR;
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
	return SESS_OK;
}

sess_retval
scmd_search(sess *s, json_t *args, json_t *res, masq_err *err)
{
	(void)args;
	if (pipe_search_alpha(&s->p, err) < 0)
		return SESS_ERROR;
	sess_mark_stale(s, s->p.layer, s->p.layer);	/* the search set its alphas */
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
	return SESS_OK;
}

/* The recorded layer of a result, checked against the model. */
static int
result_layer(sess *s, json_t *res, int *layer, masq_err *err)
{
	json_t *v = json_object_get(res, "layer");
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= s->p.n_layers)
		return masq_err_set(err, MASQ_ERR_FORMAT, "its result has no layer in 0..%d", s->p.n_layers - 1);
	*layer = (int)json_integer_value(v);
	return 0;
}

int
scmd_search_restore(sess *s, json_t *args, json_t *res, sess_restore_state *rs, masq_err *err)
{
	(void)args;
	(void)rs;
	int layer;
	const char *k;
	json_t *v;
	if (result_layer(s, res, &layer, err) < 0)
		return -1;
	json_t *best = json_object_get(res, "best");
	if (!json_is_object(best))
		return masq_err_set(err, MASQ_ERR_FORMAT, "its result has no \"best\" object");
	json_object_foreach(best, k, v) {
		int row = strcmp(k, "unified") == 0 ? ALPHA_UNIFIED : -1;
		for (int m = 0; m < MOD_COUNT; m++)
			if (strcmp(k, modality_name(m)) == 0)
				row = m;
		if (row < 0)
			return masq_err_set(err, MASQ_ERR_FORMAT, "best.%s names no alpha row", k);
		if (!json_is_number(v) || setting_set_alpha(&s->p.settings[layer], -1, row, json_number_value(v), err) < 0)
			return masq_err_prefix(err, "best.%s", k);
	}
	return 0;
}

sess_retval
scmd_quantize(sess *s, json_t *args, json_t *res, masq_err *err)
{
	(void)args;
	pipeline *p = &s->p;
	if (pipe_quantize(p, err) < 0)
		return SESS_ERROR;
	s->live[p->layer] = (unsigned char)((s->live[p->layer] | SLIVE_QUANT) & ~SLIVE_STALE);
	const pipe_layer_result *r = &p->results[p->layer];
	json_object_set_new(res, "layer", json_integer(p->layer));
	json_object_set_new(res, "method", json_string(method_name(r->method)));
	json_object_set_new(res, "sqnr_db", sess_json_mods(s, r->sqnr, 1));
	json_object_set_new(res, "mae", sess_json_mods(s, r->mae, 1));
	if (p->mod_held != NULL)
		json_object_set_new(res, "held_out", json_pack("{s:o, s:o}", "sqnr_db", sess_json_mods(s, r->sqnr_held, 1),
		    "mae", sess_json_mods(s, r->mae_held, 1)));
	json_t *lins = json_array();
	for (int k = 0; k < LIN_COUNT; k++) {
		json_t *o = json_object();
		json_object_set_new(o, "name", json_string(lin_name(k)));
		json_object_set_new(o, "rank", json_integer(r->lin[k].rank));
		json_object_set_new(o, "sqnr_db", sess_json_mods(s, r->lin[k].sqnr, 1));
		if (isfinite(r->lin[k].sqnr_no_cmc[STATS_ALL]))
			json_object_set_new(o, "no_cmc", json_pack("{s:o}", "sqnr_db", sess_json_mods(s, r->lin[k].sqnr_no_cmc, 1)));
		json_array_append_new(lins, o);
	}
	json_object_set_new(res, "linears", lins);
	if (s->db != NULL) {
		char sha[65], *tmp = sess_blob_tmp(s, "plan");
		if (qplan_write(&p->plan, tmp, err) < 0) {
			unlink(tmp);
			free(tmp);
			return SESS_ERROR;
		}
		if (sess_blob_store(s, tmp, sha, err) < 0)
			return SESS_ERROR;
		free(s->plan_sha[p->layer]);
		s->plan_sha[p->layer] = xstrdup(sha);
		json_object_set_new(res, "plan", json_string(sha));
	}
	return SESS_OK;
}

/* A recorded {text, vision, audio, all} object into v (STATS_ROWS), NAN
 * where a figure is missing or not a number. */
static void
mods_from_json(json_t *o, double *v)
{
	for (int m = 0; m < STATS_ROWS; m++) {
		json_t *x = json_object_get(o, m < MOD_COUNT ? modality_name(m) : "all");
		v[m] = json_is_number(x) ? json_number_value(x) : NAN;
	}
}

int
scmd_quantize_restore(sess *s, json_t *args, json_t *res, sess_restore_state *rs, masq_err *err)
{
	(void)args;
	(void)rs;
	int layer;
	if (result_layer(s, res, &layer, err) < 0)
		return -1;
	const char *plan = json_string_value(json_object_get(res, "plan"));
	int method = method_parse(json_string_value(json_object_get(res, "method")) ?
	    json_string_value(json_object_get(res, "method")) : "");
	if (method < 0)
		return masq_err_set(err, MASQ_ERR_FORMAT, "its result names no method");
	pipe_layer_result *r = &s->p.results[layer];
	free(s->plan_sha[layer]);
	s->plan_sha[layer] = plan ? xstrdup(plan) : NULL;
	r->done = 1;
	r->method = method;
	mods_from_json(json_object_get(res, "sqnr_db"), r->sqnr);
	mods_from_json(json_object_get(res, "mae"), r->mae);
	json_t *ho = json_object_get(res, "held_out");
	mods_from_json(json_object_get(ho, "sqnr_db"), r->sqnr_held);
	mods_from_json(json_object_get(ho, "mae"), r->mae_held);
	return 0;
}

/* pipe_train's progress, to the session's hook. */
static int
train_progress(void *ctx, int done, int total, double loss)
{
	sess_report_step(ctx, SC_TRAIN, done, total, loss);
	return 0;	/* a step under way is never cut short: the record stays whole */
}

sess_retval
scmd_train(sess *s, json_t *args, json_t *res, masq_err *err)
{
	(void)args;
	pipeline *p = &s->p;
	int l = p->layer;
	if (pipe_train(p, train_progress, s, err) < 0)
		return SESS_ERROR;
	/* whatever was quantized here is gone: the layer needs quantizing again */
	s->live[l] = (unsigned char)(s->live[l] & ~(SLIVE_QUANT | SLIVE_STALE));
	const layer_setting *ls = &p->settings[l];
	const pipe_learn_result *lr = &p->results[l].learn;
	json_object_set_new(res, "layer", json_integer(l));
	json_object_set_new(res, "method", json_string(method_name(ls->method)));
	json_object_set_new(res, "epochs", json_integer(lr->epochs));
	json_object_set_new(res, "steps", json_integer(lr->steps));
	json_object_set_new(res, "skipped", json_integer(lr->skipped));
	json_object_set_new(res, "lr", json_real(ls->lr));
	json_object_set_new(res, "loss", json_string(learn_loss_name(ls->loss)));
	json_t *lw = json_object();
	for (int m = 0; m < MOD_COUNT; m++)
		json_object_set_new(lw, modality_name(m), json_real(ls->lambda[m]));
	json_object_set_new(res, "loss_weights", lw);
	json_object_set_new(res, "tie", json_boolean(ls->tie));
	json_object_set_new(res, "chain", json_string(lr->chain ? "mas" : "deployed"));
	json_t *curve = json_array();
	for (int i = 0; i < lr->steps; i++)
		json_array_append_new(curve, sess_json_num(lr->loss[i]));
	json_object_set_new(res, "losses", curve);
	json_object_set_new(res, "sqnr_init_db", sess_json_mods(s, lr->sqnr_init, 1));
	json_object_set_new(res, "sqnr_learned_db", sess_json_mods(s, lr->sqnr_learned, 1));
	char sha[65], hex[65];
	if (factors_blob_write(s, sha, hex, err) < 0)
		return SESS_ERROR;
	json_object_set_new(res, "factors_sha256", json_string(hex));
	if (s->db != NULL)
		json_object_set_new(res, "factors", json_string(sha));
	return SESS_OK;
}

/* The record of what a layer learned, for the views (the factors are not
 * restored: a resumed layer in progress learns again). */
int
scmd_train_restore(sess *s, json_t *args, json_t *res, sess_restore_state *rs, masq_err *err)
{
	(void)args;
	(void)rs;
	int layer;
	if (result_layer(s, res, &layer, err) < 0)
		return -1;
	json_t *e = json_object_get(res, "epochs"), *st = json_object_get(res, "steps");
	json_t *sk = json_object_get(res, "skipped"), *curve = json_object_get(res, "losses");
	if (!json_is_integer(e) || json_integer_value(e) < 1 || json_integer_value(e) > SETTING_EPOCHS_MAX ||
	    !json_is_integer(st) || json_integer_value(st) < 0 || json_integer_value(st) > (1 << 24) ||
	    !json_is_integer(sk) || json_integer_value(sk) < 0 || json_integer_value(sk) > json_integer_value(st) ||
	    !json_is_array(curve) || json_array_size(curve) != (size_t)json_integer_value(st))
		return masq_err_set(err, MASQ_ERR_FORMAT, "its result's epochs, steps, skipped and losses do not agree");
	pipe_learn_result *lr = &s->p.results[layer].learn;
	free(lr->loss);
	memset(lr, 0, sizeof *lr);
	lr->epochs = (int)json_integer_value(e);
	lr->steps = (int)json_integer_value(st);
	lr->skipped = (int)json_integer_value(sk);
	lr->loss = xmalloc(xmul((size_t)lr->steps + 1, sizeof(double)));
	for (int i = 0; i < lr->steps; i++) {
		json_t *x = json_array_get(curve, (size_t)i);
		lr->loss[i] = json_is_number(x) ? json_number_value(x) : NAN;
	}
	mods_from_json(json_object_get(res, "sqnr_init_db"), lr->sqnr_init);
	mods_from_json(json_object_get(res, "sqnr_learned_db"), lr->sqnr_learned);
	const char *chain = json_string_value(json_object_get(res, "chain"));
	lr->chain = chain != NULL && strcmp(chain, "mas") == 0;
	lr->done = 1;
	return 0;
}

sess_retval
scmd_next(sess *s, json_t *args, json_t *res, masq_err *err)
{
	(void)args;
	int l = s->p.layer;
	/* a resumed session may hold the cursor layer's recorded result
	 * without its output: commit only what was quantized here */
	if (!(s->live[l] & SLIVE_QUANT))
		return masq_err_set(err, MASQ_ERR_USAGE, "layer %d is not quantized yet", l);
	if (s->live[l] & SLIVE_STALE)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "layer %d is stale: a setting changed after it was quantized; quantize it again before committing", l);
	if (pipe_next(&s->p, err) < 0)
		return SESS_ERROR;
	json_object_set_new(res, "layer", json_integer(s->p.layer));
	if (s->db != NULL || s->follow) {
		/* a rank of several that rank 0 records for streams its share
		 * to rank 0, which writes the checkpoint */
		char sha[65];
		if (checkpoint_write(s, sha, err) < 0)
			return SESS_ERROR;
		if (s->db != NULL)
			json_object_set_new(res, "checkpoint", json_string(sha));
	}
	return SESS_OK;
}

int
scmd_next_restore(sess *s, json_t *args, json_t *res, sess_restore_state *rs, masq_err *err)
{
	(void)args;
	json_t *v = json_object_get(res, "layer");
	const char *c = json_string_value(json_object_get(res, "checkpoint"));
	/* the cursor after a commit: 1 .. n_layers, and never backwards */
	if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > s->p.n_layers ||
	    json_integer_value(v) != rs->cursor + 1)
		return masq_err_set(err, MASQ_ERR_FORMAT, "its result moves the cursor from layer %d to %s%lld", rs->cursor,
		    json_is_integer(v) ? "" : "(not a number) ", json_is_integer(v) ? (long long)json_integer_value(v) : 0LL);
	rs->cursor = (int)json_integer_value(v);
	free(rs->checkpoint);
	rs->checkpoint = c ? xstrdup(c) : NULL;
	return 0;
}

sess_retval
scmd_finish(sess *s, json_t *args, json_t *res, masq_err *err)
{
	(void)args;
	if (pipe_finish(&s->p, err) < 0)
		return SESS_ERROR;
	json_object_set_new(res, "sqnr_db", sess_json_mods(s, s->p.summary.sqnr, 1));
	json_object_set_new(res, "mae", sess_json_mods(s, s->p.summary.mae, 1));
	json_object_set_new(res, "kl_text", sess_json_num(s->p.summary.kl_text));
	if (s->p.mod_held != NULL)
		json_object_set_new(res, "held_out", json_pack("{s:o, s:o, s:o}", "sqnr_db",
		    sess_json_mods(s, s->p.summary.sqnr_held, 1), "mae", sess_json_mods(s, s->p.summary.mae_held, 1),
		    "kl_text", sess_json_num(s->p.summary.kl_text_held)));
	/* a status that cannot be written is this command's failure: a run
	 * must not report success while its session still reads "open" */
	if (s->db != NULL && s->record && sdb_session_set_status(s->db, s->id, "finished", err) < 0)
		return SESS_ERROR;
	return SESS_OK;
}

int
scmd_finish_restore(sess *s, json_t *args, json_t *res, sess_restore_state *rs, masq_err *err)
{
	(void)args;
	(void)err;
	rs->finished = 1;
	/* the summary, for what reads a restored session (sessions diff) */
	mods_from_json(json_object_get(res, "sqnr_db"), s->p.summary.sqnr);
	mods_from_json(json_object_get(res, "mae"), s->p.summary.mae);
	json_t *kl = json_object_get(res, "kl_text"), *ho = json_object_get(res, "held_out");
	s->p.summary.kl_text = json_is_number(kl) ? json_number_value(kl) : NAN;
	mods_from_json(json_object_get(ho, "sqnr_db"), s->p.summary.sqnr_held);
	mods_from_json(json_object_get(ho, "mae"), s->p.summary.mae_held);
	kl = json_object_get(ho, "kl_text");
	s->p.summary.kl_text_held = json_is_number(kl) ? json_number_value(kl) : NAN;
	return 0;
}
