/*
 * view.c: what front ends read of a session (the view, each layer's state
 * and figures, the field table every table and --json of a layer reads)
 * and the queries that change nothing (previews).
 */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "core/export.h"
#include "sessions/internal.h"

const char *
sess_layer_state_name(int st)
{
	static const char *const n[SLS_COUNT] = {"pending", "calibrated", "quantized", "stale", "committed", "learned"};
	return st >= 0 && st < SLS_COUNT ? n[st] : "?";
}

const sess_view *
sess_view_get(const sess *cs)
{
	sess *s = (sess *)cs;	/* the view is a cache of the session's own fields */
	sess_view *v = &s->view;
	memset(v, 0, sizeof *v);
	v->id = s->id;
	v->db_path = s->db ? sdb_path(s->db) : NULL;
	v->model_dir = s->model_dir;
	v->calib_path = s->calib_path;
	v->opened = s->opened;
	v->opts = &s->opts;
	v->search = s->opts.search;
	if (!s->opened)
		return v;
	v->n_layers = s->p.n_layers;
	v->cursor = s->p.layer;
	v->finished = s->p.finished;
	v->wbits = s->p.opts.wbits;
	v->abits = s->p.opts.abits;
	v->wgroup = s->p.opts.wgroup;
	v->tokens = s->c.n_tokens;
	for (int m = 0; m < MOD_COUNT; m++)
		v->tokens_mod[m] = s->c.n_mod[m];
	v->deepstack = s->c.n_deepstack;
	v->deepstack_missing = s->m.cfg.mrope_interleaved && s->c.n_mod[MOD_VISION] > 0 && s->c.n_deepstack == 0;
	v->summary = &s->p.summary;
	return v;
}

int
sess_layer_state(const sess *s, int l)
{
	if (!s->opened || l < 0 || l >= s->p.n_layers)
		return SLS_PENDING;
	if (l < s->p.layer)
		return SLS_COMMITTED;
	if (l > s->p.layer)
		return SLS_PENDING;
	if (s->live[l] & SLIVE_QUANT)
		return s->live[l] & SLIVE_STALE ? SLS_STALE : SLS_QUANTIZED;
	if (!s->p.calibrated)
		return SLS_PENDING;
	return s->p.learned_valid && pipe_factors_ready(&s->p) ? SLS_LEARNED : SLS_CALIBRATED;
}

int
sess_layer_needs_learning(const sess *s, int l)
{
	if (!s->opened || l < 0 || l >= s->p.n_layers || l < s->p.layer)
		return 0;
	if (l > s->p.layer || !s->p.calibrated)
		return setting_learns(&s->p.settings[l]);
	return !pipe_factors_ready(&s->p);
}

int
sess_layer_measured(const sess *s, int l)
{
	if (!s->opened || l < 0 || l >= s->p.n_layers)
		return 0;
	return l < s->p.layer ? s->p.results[l].done : (s->live[l] & SLIVE_QUANT) != 0;
}

int
sess_layer_linears_known(const sess *s, int l)
{
	return s->opened && l >= 0 && l < s->p.n_layers && (s->live[l] & SLIVE_QUANT);
}

int
sess_layer_misalign_known(const sess *s, int l)
{
	return s->opened && l >= 0 && l < s->p.n_layers && (s->live[l] & SLIVE_CALIB);
}

int
sess_layer_method(const sess *s, int l)
{
	if (!s->opened || l < 0 || l >= s->p.n_layers)
		return s->opts.method;
	int st = sess_layer_state(s, l);
	return (st == SLS_COMMITTED || st == SLS_QUANTIZED) && s->p.results[l].done ? s->p.results[l].method :
	    s->p.settings[l].method;
}

const layer_setting *
sess_layer_setting(const sess *s, int l)
{
	return s->opened && l >= 0 && l < s->p.n_layers ? &s->p.settings[l] : NULL;
}

const pipe_layer_result *
sess_layer_result(const sess *s, int l)
{
	return s->opened && l >= 0 && l < s->p.n_layers ? &s->p.results[l] : NULL;
}

const site_stats *
sess_cursor_stats(const sess *s, int site)
{
	if (!s->opened || !s->p.calibrated || site < 0 || site >= SITE_COUNT)
		return NULL;
	return &s->p.st[site];
}

int
sess_mod_present(const sess *s, int m)
{
	return s->opened && m >= 0 && m < MOD_COUNT && s->c.n_mod[m] > 0;
}

int
sess_threads(const sess *s)
{
	return s->threads;
}

json_t *
sess_environment(const sess *s)
{
	return s->env;
}

const char *
sess_model_fingerprint(const sess *s)
{
	return s->model_fp ? s->model_fp : "";
}

const char *
sess_calib_fingerprint(const sess *s)
{
	return s->calib_fp ? s->calib_fp : "";
}

int
sess_failed(const sess *s)
{
	return s->status != NULL && strcmp(s->status, "failed") == 0;
}

/* A recorded figure of layer l (the pipe_layer_result array at off) for
 * modality m: NAN until measured or when the modality has no tokens. */
static double
fig_of(const sess *s, int l, int m, size_t off)
{
	if (!sess_layer_measured(s, l) || (m < MOD_COUNT && !sess_mod_present(s, m)))
		return NAN;
	return ((const double *)((const char *)&s->p.results[l] + off))[m];
}

/* ---- what the compensation costs ------------------------------------------------------ */

int64_t
sess_lin_cmc_params(const sess *s, int l, int k)
{
	int out, in;
	int64_t n = 0;
	if (!s->opened || l < 0 || l >= s->p.n_layers || k < 0 || k >= LIN_COUNT || k == LIN_DOWN ||
	    sess_layer_method(s, l) != METHOD_MAS_CMC)
		return 0;
	layer_lin_shape(&s->m.cfg, k, &out, &in);
	const layer_setting *ls = &s->p.settings[l];
	for (int m = MOD_VISION; m < MOD_COUNT; m++) {
		if (!sess_mod_present(s, m))
			continue;
		int r = sess_layer_linears_known(s, l) ? s->p.results[l].lin[k].cmc[m].rank :
		    cmc_rank_resolve(ls->rank[k], ls->rank_floor, in, out);
		n += (int64_t)r * (in + out);
	}
	return n;
}

int
sess_n_seqs(const sess *s)
{
	return s->opened ? s->c.n_seqs : 0;
}

int
sess_seq_held(const sess *s, int i)
{
	return s->opened && s->p.held != NULL && i >= 0 && i < s->c.n_seqs && s->p.held[i];
}

int
sess_lin_rank(const sess *s, int l, int k)
{
	int out, in;
	if (!s->opened || l < 0 || l >= s->p.n_layers || k < 0 || k >= LIN_COUNT || k == LIN_DOWN ||
	    sess_layer_method(s, l) != METHOD_MAS_CMC)
		return 0;
	if (sess_layer_linears_known(s, l))
		return s->p.results[l].lin[k].rank;
	layer_lin_shape(&s->m.cfg, k, &out, &in);
	return cmc_rank_resolve(s->p.settings[l].rank[k], s->p.settings[l].rank_floor, in, out);
}

int64_t
sess_layer_cmc_params(const sess *s, int l)
{
	int64_t n = 0;
	for (int k = 0; k < LIN_COUNT; k++)
		n += sess_lin_cmc_params(s, l, k);
	return n;
}

int
sess_cmc_elem_bytes(const sess *s)
{
	return (int)st_dtype_size(s->opts.cmc_dtype);
}

const char *
sess_cmc_dtype_name(const sess *s)
{
	return st_dtype_name(s->opts.cmc_dtype);
}

int64_t
sess_cmc_params(const sess *s)
{
	int64_t n = 0;
	for (int l = 0; s->opened && l < s->p.n_layers; l++)
		n += sess_layer_cmc_params(s, l);
	return n;
}

uint64_t
sess_checkpoint_bytes(const sess *s)
{
	uint64_t n = 0;
	for (int i = 0; s->opened && i < s->m.st.ntensors; i++)
		n += s->m.st.index[i]->end - s->m.st.index[i]->begin;
	return n;
}

int
sess_lin_cmc_hurts(const sess *s, int l, int k, int m, double *without)
{
	if (!s->opened || l < 0 || l >= s->p.n_layers || k < 0 || k >= LIN_COUNT || m <= MOD_TEXT || m >= MOD_COUNT ||
	    !sess_layer_linears_known(s, l) || !sess_mod_present(s, m))
		return 0;
	const pipe_lin_result *lr = &s->p.results[l].lin[k];
	if (without != NULL)
		*without = lr->sqnr_no_cmc[m];
	return isfinite(lr->sqnr_no_cmc[m]) && isfinite(lr->sqnr[m]) && lr->sqnr[m] < lr->sqnr_no_cmc[m] - SESS_CMC_WORSE_DB;
}

int
sess_lin_rank_floored(const sess *s, int l, int k)
{
	int out, in;
	if (!s->opened || l < 0 || l >= s->p.n_layers || k < 0 || k >= LIN_COUNT || k == LIN_DOWN)
		return 0;
	const layer_setting *ls = &s->p.settings[l];
	layer_lin_shape(&s->m.cfg, k, &out, &in);
	int mn = in < out ? in : out;
	return ls->rank[k] > 0 && ls->rank[k] <= 1 && (int)floor(ls->rank[k] * mn) < ls->rank_floor;
}

/* Sensitivity: the error layer l adds itself, as an SQNR.  The noise-to-
 * signal ratio of its output less that of its input (the previous layer's
 * output; none before layer 0), from the recorded per-token mean SQNRs, so
 * an estimate: low where quantizing the layer costs the most, whatever
 * came before it.  Capped at 120 dB where the layer adds nothing. */
static double
own_of(const sess *s, int l, int m)
{
	if (!sess_layer_measured(s, l) || (m < MOD_COUNT && !sess_mod_present(s, m)))
		return NAN;
	double out = pow(10.0, -s->p.results[l].sqnr[m] / 10.0), in = 0;
	if (l > 0) {
		if (!sess_layer_measured(s, l - 1))
			return NAN;
		in = pow(10.0, -s->p.results[l - 1].sqnr[m] / 10.0);
	}
	return fmin(120.0, -10.0 * log10(fmax(out - in, 1e-12)));
}

static double f_own_t(const sess *s, int l) { return own_of(s, l, MOD_TEXT); }
static double f_own_v(const sess *s, int l) { return own_of(s, l, MOD_VISION); }
static double f_own_a(const sess *s, int l) { return own_of(s, l, MOD_AUDIO); }
static double f_own_all(const sess *s, int l) { return own_of(s, l, STATS_ALL); }

/* The layer's SQNR on the held-out tokens (NAN without a split). */
static double
held_of(const sess *s, int l, int m)
{
	return fig_of(s, l, m, offsetof(pipe_layer_result, sqnr_held));
}

static double f_held_t(const sess *s, int l) { return held_of(s, l, MOD_TEXT); }
static double f_held_v(const sess *s, int l) { return held_of(s, l, MOD_VISION); }
static double f_held_a(const sess *s, int l) { return held_of(s, l, MOD_AUDIO); }
static double f_held_all(const sess *s, int l) { return held_of(s, l, STATS_ALL); }

/* The layer's compensation in bytes (NAN when it has none). */
static double
f_cmc_bytes(const sess *s, int l)
{
	if (sess_layer_method(s, l) != METHOD_MAS_CMC)
		return NAN;
	return (double)sess_layer_cmc_params(s, l) * sess_cmc_elem_bytes(s);
}

/* ---- the field table ---------------------------------------------------------------- */

static double
f_layer(const sess *s, int l)
{
	(void)s;
	return l;
}

static const char *
f_state(const sess *s, int l)
{
	return sess_layer_state_name(sess_layer_state(s, l));
}

static const char *
f_method(const sess *s, int l)
{
	return method_name(sess_layer_method(s, l));
}

/* The qkv alpha of modality m (or the unified one for sq), the setting
 * the layer's figures were or will be made with. */
static double
alpha_of(const sess *s, int l, int m)
{
	int method = sess_layer_method(s, l);
	if (method == METHOD_RTN || !sess_mod_present(s, m))
		return NAN;
	return s->p.settings[l].alpha[GRP_QKV][method_per_modality(method) ? m : ALPHA_UNIFIED];
}

static double f_alpha_t(const sess *s, int l) { return alpha_of(s, l, MOD_TEXT); }
static double f_alpha_v(const sess *s, int l) { return alpha_of(s, l, MOD_VISION); }
static double f_alpha_a(const sess *s, int l) { return alpha_of(s, l, MOD_AUDIO); }

static const char *
f_alphas(const sess *s, int l)
{
	static char buf[4][32];
	static int next;
	char *b = buf[next++ % 4];
	int method = sess_layer_method(s, l);
	const layer_setting *ls = &s->p.settings[l];
	if (method == METHOD_RTN)
		snprintf(b, 32, "-");
	else if (!method_per_modality(method))
		snprintf(b, 32, "%.2f", ls->alpha[GRP_QKV][ALPHA_UNIFIED]);
	else
		snprintf(b, 32, "%.2f/%.2f/%.2f", ls->alpha[GRP_QKV][0], ls->alpha[GRP_QKV][1], ls->alpha[GRP_QKV][2]);
	return b;
}

/* q_proj's rank: in effect when measured, else the setting. */
static double
f_rank(const sess *s, int l)
{
	if (sess_layer_method(s, l) != METHOD_MAS_CMC)
		return NAN;
	return sess_layer_linears_known(s, l) ? s->p.results[l].lin[LIN_Q].rank : s->p.settings[l].rank[LIN_Q];
}

static double
sqnr_of(const sess *s, int l, int m)
{
	return fig_of(s, l, m, offsetof(pipe_layer_result, sqnr));
}

static double f_sqnr_t(const sess *s, int l) { return sqnr_of(s, l, MOD_TEXT); }
static double f_sqnr_v(const sess *s, int l) { return sqnr_of(s, l, MOD_VISION); }
static double f_sqnr_a(const sess *s, int l) { return sqnr_of(s, l, MOD_AUDIO); }
static double f_sqnr_all(const sess *s, int l) { return sqnr_of(s, l, STATS_ALL); }

static double
mae_of(const sess *s, int l, int m)
{
	return fig_of(s, l, m, offsetof(pipe_layer_result, mae));
}

static double f_mae_t(const sess *s, int l) { return mae_of(s, l, MOD_TEXT); }
static double f_mae_v(const sess *s, int l) { return mae_of(s, l, MOD_VISION); }
static double f_mae_a(const sess *s, int l) { return mae_of(s, l, MOD_AUDIO); }
static double f_mae_all(const sess *s, int l) { return mae_of(s, l, STATS_ALL); }

/* The epochs the layer learns for (its setting), when its method learns. */
static double
f_epochs(const sess *s, int l)
{
	const layer_setting *ls = &s->p.settings[l];
	return method_learns(ls->method) ? ls->epochs : NAN;
}

/* What learning gained on all tokens of the layer's train-mode output, dB. */
static double
f_gain(const sess *s, int l)
{
	const pipe_learn_result *lr = &s->p.results[l].learn;
	return lr->done ? lr->sqnr_learned[STATS_ALL] - lr->sqnr_init[STATS_ALL] : NAN;
}

/* The seconds the layer took (calibrate, search, learn, quantize) in this process. */
static double
f_seconds(const sess *s, int l)
{
	const pipe_layer_result *r = &s->p.results[l];
	double t = r->t_calib + r->t_search + r->learn.seconds + r->t_quant;
	if (sess_layer_measured(s, l) && t > 0)
		return t;
	if (sess_layer_state(s, l) == SLS_CALIBRATED || sess_layer_state(s, l) == SLS_LEARNED)
		return r->t_calib + r->t_search + r->learn.seconds;
	return NAN;
}

const sess_field sess_fields[SF_COUNT] = {
	[SF_LAYER] = {"layer", "layer", 6, SFK_INT, "layer", NULL, f_layer, NULL},
	[SF_STATE] = {"state", "state", 11, SFK_TEXT, NULL, NULL, NULL, f_state},
	[SF_METHOD] = {"method", "method", 8, SFK_TEXT, "method", NULL, NULL, f_method},
	[SF_ALPHAS] = {"alphas", "alpha t/v/a", 15, SFK_TEXT, NULL, NULL, NULL, f_alphas},
	[SF_ALPHA_T] = {"alpha.text", "a.t", 5, SFK_ALPHA, NULL, NULL, f_alpha_t, NULL},
	[SF_ALPHA_V] = {"alpha.vision", "a.v", 5, SFK_ALPHA, NULL, NULL, f_alpha_v, NULL},
	[SF_ALPHA_A] = {"alpha.audio", "a.a", 5, SFK_ALPHA, NULL, NULL, f_alpha_a, NULL},
	[SF_RANK] = {"rank", "rank", 6, SFK_RANK, NULL, NULL, f_rank, NULL},
	[SF_SQNR_T] = {"text", "text", 7, SFK_DB, "sqnr_db", "text", f_sqnr_t, NULL},
	[SF_SQNR_V] = {"vision", "vision", 7, SFK_DB, "sqnr_db", "vision", f_sqnr_v, NULL},
	[SF_SQNR_A] = {"audio", "audio", 7, SFK_DB, "sqnr_db", "audio", f_sqnr_a, NULL},
	[SF_SQNR_ALL] = {"all", "all", 7, SFK_DB, "sqnr_db", "all", f_sqnr_all, NULL},
	[SF_MAE_T] = {"mae.text", "mae t", 9, SFK_DB, "mae", "text", f_mae_t, NULL},
	[SF_MAE_V] = {"mae.vision", "mae v", 9, SFK_DB, "mae", "vision", f_mae_v, NULL},
	[SF_MAE_A] = {"mae.audio", "mae a", 9, SFK_DB, "mae", "audio", f_mae_a, NULL},
	[SF_MAE_ALL] = {"mae.all", "mae", 9, SFK_DB, "mae", "all", f_mae_all, NULL},
	[SF_SECONDS] = {"seconds", "time", 7, SFK_SECONDS, NULL, NULL, f_seconds, NULL},
	[SF_EPOCHS] = {"epochs", "ep", 4, SFK_INT, "epochs", NULL, f_epochs, NULL},
	[SF_GAIN] = {"learn.gain", "gain", 6, SFK_DB, "learn_gain_db", NULL, f_gain, NULL},
	[SF_CMC_BYTES] = {"cmc.bytes", "comp", 9, SFK_BYTES, "cmc_bytes", NULL, f_cmc_bytes, NULL},
	[SF_OWN_T] = {"own.text", "text", 7, SFK_DB, "own_sqnr_db", "text", f_own_t, NULL},
	[SF_OWN_V] = {"own.vision", "vision", 7, SFK_DB, "own_sqnr_db", "vision", f_own_v, NULL},
	[SF_OWN_A] = {"own.audio", "audio", 7, SFK_DB, "own_sqnr_db", "audio", f_own_a, NULL},
	[SF_OWN_ALL] = {"own.all", "all", 7, SFK_DB, "own_sqnr_db", "all", f_own_all, NULL},
	[SF_HELD_T] = {"held.text", "text", 7, SFK_DB, "held_out_sqnr_db", "text", f_held_t, NULL},
	[SF_HELD_V] = {"held.vision", "vision", 7, SFK_DB, "held_out_sqnr_db", "vision", f_held_v, NULL},
	[SF_HELD_A] = {"held.audio", "audio", 7, SFK_DB, "held_out_sqnr_db", "audio", f_held_a, NULL},
	[SF_HELD_ALL] = {"held.all", "all", 7, SFK_DB, "held_out_sqnr_db", "all", f_held_all, NULL},
};

void
sess_field_format(const sess *s, int id, int l, int w, char *buf, size_t n)
{
	const sess_field *f = &sess_fields[id];
	if (f->kind == SFK_TEXT) {
		snprintf(buf, n, "%-*s", w, f->text(s, l));
		return;
	}
	double v = f->value(s, l);
	if (!isfinite(v)) {
		snprintf(buf, n, "%*s", w, "-");
		return;
	}
	switch (f->kind) {
	case SFK_INT: snprintf(buf, n, "%*d", w, (int)v); break;
	case SFK_RANK: snprintf(buf, n, "%*g", w, v); break;
	case SFK_SECONDS: snprintf(buf, n, "%*.2fs", w > 0 ? w - 1 : 0, v); break;
	case SFK_BYTES: {
		char b[32];
		snprintf(buf, n, "%*s", w, masq_fmt_bytes((uint64_t)v, b, sizeof b));
		break;
	}
	case SFK_DB: case SFK_ALPHA: default: snprintf(buf, n, "%*.2f", w, v); break;
	}
}

void
sess_fields_json(const sess *s, int l, json_t *o)
{
	for (int id = 0; id < SF_COUNT; id++) {
		const sess_field *f = &sess_fields[id];
		if (f->json == NULL || (id >= SF_HELD_T && id <= SF_HELD_ALL && s->p.mod_held == NULL))
			continue;	/* no split: no held-out figures */
		json_t *v;
		if (f->kind == SFK_TEXT)
			v = json_string(f->text(s, l));
		else if (f->kind == SFK_INT || f->kind == SFK_BYTES)
			v = isfinite(f->value(s, l)) ? json_integer((json_int_t)f->value(s, l)) : json_null();
		else
			v = sess_json_num(f->value(s, l));
		if (f->json_sub == NULL) {
			json_object_set_new(o, f->json, v);
		} else {
			json_t *sub = json_object_get(o, f->json);
			if (sub == NULL) {
				sub = json_object();
				json_object_set_new(o, f->json, sub);
			}
			/* a modality without tokens is null, as everywhere */
			json_object_set_new(sub, f->json_sub, v);
		}
	}
}

/* ---- queries ------------------------------------------------------------------------ */

int
sess_preview(sess *s, int grp, int mod, pipe_preview *out, masq_err *err)
{
	if (!s->opened)
		return masq_err_set(err, MASQ_ERR_USAGE, "no model is open (the session starts with 'open')");
	return pipe_preview_sample(&s->p, grp, mod, out, err);
}

int
sess_preview_method(sess *s, int method, int grp, int mod, pipe_preview *out, masq_err *err)
{
	if (!s->opened)
		return masq_err_set(err, MASQ_ERR_USAGE, "no model is open (the session starts with 'open')");
	pipeline *p = &s->p;
	if (method < 0 || method >= METHOD_COUNT)
		return masq_err_set(err, MASQ_ERR_USAGE, "preview: no method %d", method);
	if (p->layer >= p->n_layers)
		return masq_err_set(err, MASQ_ERR_USAGE, "preview: every layer is committed");
	layer_setting keep = p->settings[p->layer];	/* restored below */
	p->settings[p->layer].method = method;
	int rc = pipe_preview_sample(p, grp, mod, out, err);
	p->settings[p->layer].method = keep.method;
	return rc;
}

/* ---- comparing two sessions ---------------------------------------------------------- */

struct diff {
	json_t *rows;		/* [{layer, what, a, b}] */
};

static void
diff_row(struct diff *d, int layer, const char *what, json_t *a, json_t *b, int always)
{
	if (!always && json_equal(a, b)) {
		json_decref(a);
		json_decref(b);
		return;
	}
	json_t *r = json_object();
	json_object_set_new(r, "layer", layer >= 0 ? json_integer(layer) : json_string("model"));
	json_object_set_new(r, "what", json_string(what));
	json_object_set_new(r, "a", a);
	json_object_set_new(r, "b", b);
	if (json_is_number(a) && json_is_number(b) && (strncmp(what, "SQNR", 4) == 0 || strncmp(what, "KL", 2) == 0 ||
	    strstr(what, "bytes") != NULL))
		json_object_set_new(r, "b_minus_a", json_real(json_number_value(b) - json_number_value(a)));
	json_array_append_new(d->rows, r);
}

static json_t *
dnum(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

/* Layer l's setting and figures in a against b: the rows that differ, and
 * the SQNR per modality always. */
static void
diff_layer(struct diff *d, sess *a, sess *b, int l)
{
	const layer_setting *sa = sess_layer_setting(a, l), *sb = sess_layer_setting(b, l);
	char what[64];
	int ma = sess_layer_method(a, l), mb = sess_layer_method(b, l);
	diff_row(d, l, "method", json_string(method_name(ma)), json_string(method_name(mb)), 0);
	for (int g = 0; g < GRP_COUNT; g++)
		for (int row = 0; row < ALPHA_ROWS; row++) {
			int used_a = ma != METHOD_RTN && (row == ALPHA_UNIFIED) != method_per_modality(ma);
			int used_b = mb != METHOD_RTN && (row == ALPHA_UNIFIED) != method_per_modality(mb);
			if ((!used_a && !used_b) || (row < MOD_COUNT && !sess_mod_present(a, row)))
				continue;
			snprintf(what, sizeof what, "%s alpha %s", smooth_group_name(g),
			    row == ALPHA_UNIFIED ? "unified" : modality_name(row));
			diff_row(d, l, what, used_a ? dnum(sa->alpha[g][row]) : json_null(),
			    used_b ? dnum(sb->alpha[g][row]) : json_null(), 0);
		}
	for (int k = 0; k < LIN_COUNT; k++) {
		if (k == LIN_DOWN || (ma != METHOD_MAS_CMC && mb != METHOD_MAS_CMC))
			continue;
		/* the rank in effect: a ratio and a whole number compare as ranks */
		snprintf(what, sizeof what, "%s rank", lin_name(k));
		diff_row(d, l, what, ma == METHOD_MAS_CMC ? json_integer(sess_lin_rank(a, l, k)) : json_null(),
		    mb == METHOD_MAS_CMC ? json_integer(sess_lin_rank(b, l, k)) : json_null(), 0);
	}
	diff_row(d, l, "epochs", method_learns(ma) ? json_integer(sa->epochs) : json_null(),
	    method_learns(mb) ? json_integer(sb->epochs) : json_null(), 0);
	for (int m = 0; m < STATS_ROWS; m++) {
		if (m < MOD_COUNT && !sess_mod_present(a, m))
			continue;
		snprintf(what, sizeof what, "SQNR %s", m < MOD_COUNT ? modality_name(m) : "all");
		diff_row(d, l, what, sess_layer_measured(a, l) ? dnum(sess_layer_result(a, l)->sqnr[m]) : json_null(),
		    sess_layer_measured(b, l) ? dnum(sess_layer_result(b, l)->sqnr[m]) : json_null(), 1);
	}
	int eb = sess_cmc_elem_bytes(a);
	diff_row(d, l, "compensation bytes", json_integer(sess_layer_cmc_params(a, l) * eb),
	    json_integer(sess_layer_cmc_params(b, l) * eb), 0);
}

json_t *
sess_diff(sess *a, int fa, sess *b, int fb, masq_err *err)
{
	const sess_view *va = sess_view_get(a), *vb = sess_view_get(b);
	if (!va->opened || !vb->opened)
		return masq_err_set(err, MASQ_ERR_USAGE, "a session to compare has not opened its model"), NULL;
	if (va->n_layers != vb->n_layers || strcmp(sess_model_fingerprint(a), sess_model_fingerprint(b)) != 0)
		return masq_err_set(err, MASQ_ERR_USAGE, "they are of different models: nothing to compare layer by layer"),
		    NULL;
	struct diff d = {json_array()};
	diff_row(&d, -1, "calibration", json_string(sess_calib_fingerprint(a)), json_string(sess_calib_fingerprint(b)), 0);
	diff_row(&d, -1, "bits", json_pack("[i, i]", va->wbits, va->abits), json_pack("[i, i]", vb->wbits, vb->abits), 0);
	diff_row(&d, -1, "weight group", json_integer(va->wgroup), json_integer(vb->wgroup), 0);
	diff_row(&d, -1, "seed", json_integer((json_int_t)va->opts->seed), json_integer((json_int_t)vb->opts->seed), 0);
	diff_row(&d, -1, "rank floor", json_integer(va->opts->rank_floor), json_integer(vb->opts->rank_floor), 0);
	diff_row(&d, -1, "whiten", json_boolean(va->opts->whiten), json_boolean(vb->opts->whiten), 0);
	diff_row(&d, -1, "whitener", json_string(va->opts->whiten_kind == CMC_WHITEN_CHOL ? "cholesky" : "eig"),
	    json_string(vb->opts->whiten_kind == CMC_WHITEN_CHOL ? "cholesky" : "eig"), 0);
	diff_row(&d, -1, "randomized SVD", json_string(pipe_rsvd_name(va->opts->rsvd_gram)),
	    json_string(pipe_rsvd_name(vb->opts->rsvd_gram)), 0);
	for (int l = 0; l < va->n_layers; l++)
		diff_layer(&d, a, b, l);
	for (int m = 0; m < STATS_ROWS; m++) {
		char what[32];
		if (m < MOD_COUNT && !sess_mod_present(a, m))
			continue;
		snprintf(what, sizeof what, "SQNR %s", m < MOD_COUNT ? modality_name(m) : "all");
		diff_row(&d, -1, what, fa ? dnum(va->summary->sqnr[m]) : json_null(),
		    fb ? dnum(vb->summary->sqnr[m]) : json_null(), 1);
	}
	diff_row(&d, -1, "KL text", fa ? dnum(va->summary->kl_text) : json_null(),
	    fb ? dnum(vb->summary->kl_text) : json_null(), 1);
	diff_row(&d, -1, "compensation bytes", json_integer(sess_cmc_params(a) * sess_cmc_elem_bytes(a)),
	    json_integer(sess_cmc_params(b) * sess_cmc_elem_bytes(b)),
	    1);
	return d.rows;
}

sdb *
sess_db(const sess *s)
{
	return s->db;
}

const char *
sess_recorded_version(const sess *s)
{
	return s->recorded_version != NULL ? s->recorded_version : PACKAGE_VERSION;
}
