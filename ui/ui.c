/*
 * ui.c: the workbench's screens, its key loop and the key map from the
 * command table (see ui.h).
 *
 * Screens: the layer list (every layer's state, method, alpha and SQNR), the
 * layer view (histograms of log2|x| per modality at one input site, the
 * misalignment figures, per-linear SQNR and the alpha preview), the help
 * screen (generated from sess_cmds) and the export dialog.  Every change is
 * a session command; long commands run synchronously after a "working:"
 * line has been drawn.
 */
#include "config.h"

#include <langinfo.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include <jansson.h>

#include "core/export.h"
#include "core/qplan.h"
#include "core/stats.h"
#include "ui/curses.h"
#include "ui/draw.h"
#include "ui/ui.h"

enum ui_scr { SCR_LIST, SCR_LAYER, SCR_HELP, SCR_EXPORT, SCR_OVERVIEW };
enum ui_prompt { PR_NONE, PR_QUIT, PR_ALPHA, PR_RANK, PR_BITS, PR_COMMAND, PR_THRESH, PR_UNTIL };
enum msg_kind { MSG_INFO, MSG_ERROR, MSG_WORKING };
/* What the top of the layer view shows ('v' cycles). */
enum ui_panel { PANEL_HIST, PANEL_SEARCH, PANEL_RANK, PANEL_PROFILE, PANEL_COUNT };

#define KEY_CTRL_C 3
#define KEY_ESC 27
#define ALPHA_STEP 0.05

enum job_kind { JOB_NONE, JOB_ONE, JOB_ALL };
/* Long commands, as the progress estimates count them. */
enum job_cmd { JC_CALIB, JC_SEARCH, JC_QUANT, JC_NEXT, JC_COUNT };

/* A layer a job committed, as the progress screen lists it. */
typedef struct ui_done_layer {
	int layer;
	double secs;			/* calibrate + search + quantize, the pipeline's own times */
	double sqnr[STATS_ROWS];	/* its output's SQNR (NAN: modality absent) */
} ui_done_layer;

/* What the UI thread may know of a running job: written by the job's
 * thread, read by the UI thread, every field under mu. */
typedef struct ui_prog {
	pthread_mutex_t mu;
	int kind;		/* enum job_kind */
	char cmd[32];		/* the command running ("" before the first) */
	int layer;		/* its layer */
	int first;		/* the cursor when the job started */
	int until;		/* JOB_ALL: the layer it stops before (n_layers: every layer) */
	int n_layers;		/* the model's layers (constant) */
	int tokens;		/* calibration tokens, each pass over a layer (constant) */
	int search;		/* a run searches alpha at every layer */
	double t_job, t_cmd;	/* the clock at the job's and at the command's start */
	double est_sum[JC_COUNT];	/* seconds of the finished commands of each kind (kept across jobs) */
	int est_n[JC_COUNT];		/* and how many */
	long long tokens_done;	/* tokens through the calibrate and quantize commands of this job */
	ui_done_layer *done_l;	/* (n_layers) the layers this job committed */
	int n_done;
	int stop;		/* the UI asks: stop after the current command */
	int finished;		/* the job's thread has returned */
} ui_prog;

struct ui {
	sess *s;
	ui_opts o;
	ui_gfx g;
	int locale_utf8;	/* the locale's character set is UTF-8 */
	int screen, back;	/* back: where help and the export dialog return */
	int sel, top;		/* layer list: selected row, first row shown */
	int view;		/* layer view: its layer */
	int site;		/* layer view: the site shown (SITE_*) */
	int row;		/* layer view: the alpha row tuned (a modality or ALPHA_UNIFIED) */
	int pv_valid, pv_grp, pv_mod, pv_layer;
	pipe_preview pv;
	/* 'u': the group's previews under sq and under mas, with the alpha preview */
	int cmp_on, cmp_valid, cmp_grp, cmp_layer;
	pipe_preview cmp[2];	/* [0] sq (the unified factor), [1] mas (per-modality factors) */
	unsigned char *calibrated_here;	/* (n_layers) calibrated while this UI ran */
	unsigned char *quantized_here;	/* (n_layers) quantized while this UI ran */
	char msg[1024];
	int msg_kind;
	int prompt;
	char plabel[160], pbuf[256];
	/* export dialog */
	int ex_fmt, ex_edited;
	char ex_dir[256];
	json_t *ex_list;	/* export_preview's tensor list, or NULL */
	export_report ex_rep;
	char ex_err[1024];
	int quit;
	/* the overview */
	int ov_col, ov_desc, ov_top;	/* sort column (OV_*), descending, first row shown */
	double ov_thr;		/* SQNR threshold (dB) below which figures are marked */
	int view_back;		/* where Esc in the layer view returns */
	int panel;		/* layer view: enum ui_panel */
	/* the job (a long command on the worker thread) */
	int busy;		/* a job owns the pipeline: draw pg only */
	int sync;		/* run jobs on the UI thread (tests) */
	void (*busy_hook)(void *);	/* sync: called after each progress screen */
	void *busy_arg;
	double (*clock)(void);	/* seconds, for the progress figures */
	pthread_t th;
	ui_prog pg;
	int job_kind, job_first, job_until, job_rc, job_stopped, quit_after;
	char job_name[32];
	char busy_msg[256];	/* the message line while busy (UI thread only) */
	int ahead[16], n_ahead;	/* keys typed while busy, read when the job is done */
};

static void prompt_open(ui *u, int kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void draw_status(ui *u);
static void draw_message(ui *u, int y);
static void draw_keys(ui *u, int y, const char *const *kv);

/* ---- small helpers -------------------------------------------------------------- */

/* Replace the message line's text (kind: MSG_INFO, MSG_ERROR, MSG_WORKING). */
static void
msg_set(ui *u, int kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
msg_set(ui *u, int kind, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(u->msg, sizeof u->msg, fmt, ap);
	va_end(ap);
	u->msg_kind = kind;
}

/* The model's decoder layer count. */
static int
n_layers(const ui *u)
{
	return u->s->p.n_layers;
}

/* The layer under the pipeline's cursor, or -1 when every layer is committed. */
static int
cursor_layer(const ui *u)
{
	return u->s->p.layer < u->s->p.n_layers ? u->s->p.layer : -1;
}

/* Modality m has tokens in the calibration set. */
static int
mod_present(const ui *u, int m)
{
	return m >= 0 && m < MOD_COUNT && u->s->c.n_mod[m] > 0;
}

/* The cursor's layer has work that a resume would redo. */
static int
uncommitted(const ui *u)
{
	int l = cursor_layer(u);
	return l >= 0 && (u->s->p.calibrated || u->quantized_here[l]);
}

enum lstate { LS_PENDING, LS_CALIBRATED, LS_QUANTIZED, LS_COMMITTED };

/* Layer l's state as the list shows it (enum lstate). */
static int
layer_state(const ui *u, int l)
{
	const pipeline *p = &u->s->p;
	if (l < p->layer)
		return LS_COMMITTED;
	if (l > p->layer)
		return LS_PENDING;
	if (u->quantized_here[l])
		return LS_QUANTIZED;
	return p->calibrated ? LS_CALIBRATED : LS_PENDING;
}

/* The name of a layer state. */
static const char *
lstate_name(int st)
{
	static const char *const n[] = {"pending", "calibrated", "quantized", "committed"};
	return n[st];
}

/* The layer's result figures are known (quantized here, or restored). */
static int
layer_measured(const ui *u, int l)
{
	return l < u->s->p.layer ? u->s->p.results[l].done : u->quantized_here[l];
}

/* Alpha rows the method of layer l tunes, into rows; returns how many. */
static int
alpha_rows(const ui *u, int l, int *rows)
{
	int n = 0, method = u->s->p.settings[l].method;
	if (method == METHOD_SQ) {
		rows[n++] = ALPHA_UNIFIED;
	} else if (method != METHOD_RTN) {
		for (int m = 0; m < MOD_COUNT; m++)
			if (mod_present(u, m))
				rows[n++] = m;
	}
	return n;
}

/* The name of an alpha row, as set-alpha takes it. */
static const char *
row_name(int row)
{
	return row == ALPHA_UNIFIED ? "unified" : modality_name(row);
}

/* Make u->row one of layer l's alpha rows (vision first by default). */
static void
row_fix(ui *u, int l)
{
	int rows[ALPHA_ROWS], n = alpha_rows(u, l, rows);
	for (int i = 0; i < n; i++)
		if (rows[i] == u->row)
			return;
	u->row = n ? rows[0] : MOD_VISION;
	for (int i = 0; i < n; i++)
		if (rows[i] == MOD_VISION)
			u->row = MOD_VISION;
}

/* The linears that read an input site, for labels. */
static const char *
site_linears(int site)
{
	static const char *const n[SITE_COUNT] = {"q, k, v", "o", "gate, up", "down"};
	return n[site];
}

/* The key the command table binds to cmd, as a string (":" for none); the
 * string lives until 16 more calls. */
static const char *
key_name_of(const char *cmd)
{
	static char buf[16][4];
	static int next;
	const sess_cmd *c = sess_cmd_find(cmd);
	char *b = buf[next++ % 16];
	snprintf(b, 4, "%c", c != NULL && c->key ? c->key : ':');
	return b;
}

/* ---- dispatching ---------------------------------------------------------------- */

/* Draw a "working:" line, then run command name with args (a reference is
 * taken over).  On failure the error becomes the message.  Returns 0 or -1. */
static int
run_cmd(ui *u, const char *name, json_t *args, json_t **res)
{
	masq_err err = {0};
	int l = cursor_layer(u);

	if (l >= 0)
		msg_set(u, MSG_WORKING, "working: layer %d %s...", l, name);
	else
		msg_set(u, MSG_WORKING, "working: %s...", name);
	ui_draw(u);
	int rc = sess_dispatch(u->s, name, args, res, &err);
	json_decref(args);
	if (rc < 0) {
		msg_set(u, MSG_ERROR, "%s: %s", name, err.msg);
		return -1;
	}
	msg_set(u, MSG_INFO, "%s done", name);
	return 0;
}

/* Forget the shown preview. */
static void
preview_clear(ui *u)
{
	u->pv_valid = 0;
	u->cmp_valid = 0;
}

/* When asked ('u'): the view's group previewed under sq and under mas (on
 * the UI thread while no job runs; read-only, not recorded). */
static void
compare_refresh(ui *u)
{
	masq_err err = {0};
	u->cmp_valid = 0;
	if (!u->cmp_on || u->busy || u->screen != SCR_LAYER || u->view != cursor_layer(u) || !u->s->p.calibrated ||
	    u->site == SITE_DOWN)
		return;
	if (sess_preview_method(u->s, METHOD_SQ, u->site, -1, &u->cmp[0], &err) < 0 ||
	    sess_preview_method(u->s, METHOD_MAS, u->site, -1, &u->cmp[1], &err) < 0) {
		msg_set(u, MSG_ERROR, "preview: %s", err.msg);
		return;
	}
	u->cmp_valid = 1;
	u->cmp_grp = u->site;
	u->cmp_layer = u->view;
}

/* Re-run the fast preview for the layer view's group and modality (only for
 * the cursor's calibrated layer); read-only, not recorded. */
static void
preview_refresh(ui *u)
{
	masq_err err = {0};
	pipeline *p = &u->s->p;

	u->pv_valid = 0;
	compare_refresh(u);
	if (u->screen != SCR_LAYER || u->view != cursor_layer(u) || !p->calibrated)
		return;
	int mod = u->site == SITE_DOWN || u->row == ALPHA_UNIFIED || !mod_present(u, u->row) ? -1 : u->row;
	if (p->settings[u->view].method == METHOD_RTN)
		mod = -1;
	if (sess_preview(u->s, u->site, mod, &u->pv, &err) < 0) {
		msg_set(u, MSG_ERROR, "preview: %s", err.msg);
		return;
	}
	u->pv_valid = 1;
	u->pv_grp = u->site;
	u->pv_mod = mod;
	u->pv_layer = u->view;
}

/* ---- long commands on a worker thread ------------------------------------------ */

/* The kind of a long command, as the progress estimates count them; -1 for
 * other names. */
static int
jc_of(const char *name)
{
	static const char *const n[JC_COUNT] = {"calibrate-layer", "search-alpha", "quantize-layer", "next-layer"};
	for (int k = 0; k < JC_COUNT; k++)
		if (strcmp(name, n[k]) == 0)
			return k;
	return -1;
}

/* After command name succeeded on layer l (on the job's thread): the UI's
 * flags and the message.  Reads the pipeline, which the job owns. */
static void
after_cmd(ui *u, const char *name, int l)
{
	pipeline *p = &u->s->p;
	const pipe_layer_result *r = &p->results[l];
	char t[MOD_COUNT][16];
	for (int m = 0; m < MOD_COUNT; m++)
		ui_fmt_db(t[m], sizeof t[m], 0, mod_present(u, m) ? r->sqnr[m] : NAN);
	if (strcmp(name, "calibrate-layer") == 0) {
		u->calibrated_here[l] = 1;
		u->quantized_here[l] = 0;
		msg_set(u, MSG_INFO, "layer %d calibrated (%.2fs): Enter shows its histograms", l, r->t_calib);
	} else if (strcmp(name, "quantize-layer") == 0) {
		u->quantized_here[l] = 1;
		msg_set(u, MSG_INFO, "layer %d quantized (%s, %.2fs): SQNR text %s vision %s audio %s dB", l,
		    method_name(r->method), r->t_quant, t[0], t[1], t[2]);
	} else if (strcmp(name, "search-alpha") == 0) {
		const pipe_search *sr = &r->search;
		if (p->settings[l].method == METHOD_SQ)
			msg_set(u, MSG_INFO, "layer %d alpha searched on %d tokens: unified %.2f", l, sr->tokens,
			    sr->best[ALPHA_UNIFIED]);
		else
			msg_set(u, MSG_INFO, "layer %d alpha searched on %d tokens: text %.2f vision %.2f audio %.2f",
			    l, sr->tokens, sr->best[0], sr->best[1], sr->best[2]);
	} else if (strcmp(name, "next-layer") == 0) {
		if (p->layer < p->n_layers)
			msg_set(u, MSG_INFO, "layer %d committed; the cursor is at layer %d", l, p->layer);
		else
			msg_set(u, MSG_INFO, "layer %d committed; every layer is done: f finishes", l);
		u->sel = p->layer < p->n_layers ? p->layer : p->n_layers - 1;
		if (u->screen == SCR_LAYER)
			u->view = u->sel;
	}
}

/* The job asked to stop after its current command (read on the job's thread). */
static int
job_stopping(ui *u)
{
	pthread_mutex_lock(&u->pg.mu);
	int s = u->pg.stop;
	pthread_mutex_unlock(&u->pg.mu);
	if (s)
		u->job_stopped = 1;
	return s;
}

/* Run one long command on the cursor's layer (on the job's thread), keeping
 * the progress record; 0 or -1 (the error is the message). */
static int
job_cmd(ui *u, const char *name)
{
	pipeline *p = &u->s->p;
	ui_prog *g = &u->pg;
	masq_err err = {0};
	int l = p->layer, k = jc_of(name);
	double t0 = u->clock();

	pthread_mutex_lock(&g->mu);
	snprintf(g->cmd, sizeof g->cmd, "%s", name);
	g->layer = l;
	g->t_cmd = t0;
	pthread_mutex_unlock(&g->mu);
	if (u->sync) {
		ui_draw(u);
		if (u->busy_hook != NULL)
			u->busy_hook(u->busy_arg);
	}
	json_t *args = l < p->n_layers ? json_pack("{s:i}", "layer", l) : json_object();
	int rc = sess_dispatch(u->s, name, args, NULL, &err);
	json_decref(args);
	double t1 = u->clock();
	if (rc < 0) {
		msg_set(u, MSG_ERROR, "%s: %s", name, err.msg);
		u->job_rc = -1;
		return -1;
	}
	const pipe_layer_result *r = &p->results[l];
	pthread_mutex_lock(&g->mu);
	if (k >= 0) {
		g->est_sum[k] += t1 - t0;
		g->est_n[k]++;
	}
	if (k == JC_CALIB || k == JC_QUANT)
		g->tokens_done += g->tokens;
	if (k == JC_NEXT && g->n_done < g->n_layers) {
		ui_done_layer *d = &g->done_l[g->n_done++];
		d->layer = l;
		d->secs = r->t_calib + r->t_search + r->t_quant;
		for (int m = 0; m < STATS_ROWS; m++)
			d->sqnr[m] = m == STATS_ALL || mod_present(u, m) ? r->sqnr[m] : NAN;
	}
	pthread_mutex_unlock(&g->mu);
	after_cmd(u, name, l);
	return 0;
}

/* The job's body: one command, or every layer from the cursor up to (not
 * including) job_until (calibrate, search when the session searches,
 * quantize, commit), stopping between commands when asked. */
static void
job_body(ui *u)
{
	pipeline *p = &u->s->p;
	if (u->job_kind == JOB_ONE) {
		job_cmd(u, u->job_name);
		return;
	}
	while (p->layer < u->job_until && p->layer < p->n_layers) {
		int l = p->layer;
		if (!p->calibrated && (job_stopping(u) || job_cmd(u, "calibrate-layer") < 0))
			return;
		if (u->s->opts.search && !p->results[l].search.done &&
		    (job_stopping(u) || job_cmd(u, "search-alpha") < 0))
			return;
		if (!u->quantized_here[l] && (job_stopping(u) || job_cmd(u, "quantize-layer") < 0))
			return;
		if (job_stopping(u) || job_cmd(u, "next-layer") < 0)
			return;
	}
}

/* The worker thread's entry: the body, then the finished flag. */
static void *
job_main(void *arg)
{
	ui *u = arg;
	job_body(u);
	pthread_mutex_lock(&u->pg.mu);
	u->pg.finished = 1;
	pthread_mutex_unlock(&u->pg.mu);
	return NULL;
}

/* On the UI thread once the job has returned: the closing message, the
 * preview, and the quit asked for meanwhile. */
static void
job_finish(ui *u)
{
	pipeline *p = &u->s->p;
	u->busy = 0;
	if (u->prompt == PR_QUIT)	/* asked while busy, not answered yet: ask on */
		snprintf(u->plabel, sizeof u->plabel, "%s; quit? [y/N]", uncommitted(u) ?
		    "the command is done, the cursor's layer is not committed (a resume redoes it)" : "the command is done");
	if (u->job_kind == JOB_ALL && u->job_rc == 0) {
		if (u->job_stopped && p->layer < p->n_layers)
			msg_set(u, MSG_INFO, "stopped before finishing layer %d", p->layer);
		else if (!u->job_stopped && p->layer < p->n_layers)
			msg_set(u, MSG_INFO, "layers %d to %d done: the cursor is at layer %d", u->job_first, p->layer - 1,
			    p->layer);
		else if (!u->job_stopped)
			msg_set(u, MSG_INFO, "layers %d to %d done: f finishes, e exports", u->job_first, p->n_layers - 1);
	}
	if (u->job_kind == JOB_ONE && strcmp(u->job_name, "search-alpha") == 0 && u->job_rc == 0)
		u->panel = PANEL_SEARCH;	/* show the curve just searched */
	preview_refresh(u);
	if (u->quit_after) {
		u->quit = 1;
		u->n_ahead = 0;
	}
	/* the keys typed meanwhile come next, in their order */
	while (u->n_ahead > 0)
		ungetch(u->ahead[--u->n_ahead]);
}

/* Join the worker when it has returned (UI thread). */
static void
job_poll(ui *u)
{
	if (!u->busy || u->sync)
		return;
	pthread_mutex_lock(&u->pg.mu);
	int fin = u->pg.finished;
	pthread_mutex_unlock(&u->pg.mu);
	if (fin) {
		pthread_join(u->th, NULL);
		job_finish(u);
	}
}

/* Start a job: one long command (JOB_ONE, name) or every layer from the
 * cursor up to (not including) until (JOB_ALL).  From here until job_finish
 * the pipeline belongs to the job: the UI thread draws the progress record
 * only. */
static void
job_start(ui *u, int kind, const char *name, int until)
{
	ui_prog *g = &u->pg;
	pipeline *p = &u->s->p;

	u->job_kind = kind;
	snprintf(u->job_name, sizeof u->job_name, "%s", name ? name : "");
	u->job_first = p->layer;
	u->job_until = kind == JOB_ALL ? until : p->layer + 1;
	u->job_rc = 0;
	u->job_stopped = 0;
	u->quit_after = 0;
	u->n_ahead = 0;
	preview_clear(u);
	pthread_mutex_lock(&g->mu);
	g->kind = kind;
	snprintf(g->cmd, sizeof g->cmd, "%s", name ? name : "");
	g->layer = p->layer;
	g->first = p->layer;
	g->until = u->job_until;
	g->search = u->s->opts.search;
	g->t_job = g->t_cmd = u->clock();
	g->tokens_done = 0;
	g->n_done = 0;
	g->stop = 0;
	g->finished = 0;
	pthread_mutex_unlock(&g->mu);
	snprintf(u->busy_msg, sizeof u->busy_msg, "%s", kind == JOB_ALL ?
	    "Esc stops after the current command; Q quits when it is done" : "Q quits when it is done");
	u->busy = 1;
	if (u->sync || pthread_create(&u->th, NULL, job_main, u) != 0) {
		job_body(u);
		job_finish(u);
	}
}

/* A key while a job runs: only quitting (after the current command) and
 * stopping a run are possible. */
static void
busy_key(ui *u, int ch)
{
	if (u->prompt == PR_QUIT) {
		u->prompt = PR_NONE;
		if (ch == 'y' || ch == 'Y') {
			pthread_mutex_lock(&u->pg.mu);
			u->pg.stop = 1;
			pthread_mutex_unlock(&u->pg.mu);
			u->quit_after = 1;
			snprintf(u->busy_msg, sizeof u->busy_msg, "quitting when the current command is done");
		} else {
			snprintf(u->busy_msg, sizeof u->busy_msg, "not quitting");
		}
		return;
	}
	if (ch == 'Q' || ch == KEY_CTRL_C) {
		prompt_open(u, PR_QUIT, "a command is running; quit when it is done? [y/N]");
	} else if (ch == KEY_ESC && u->job_kind == JOB_ALL) {
		pthread_mutex_lock(&u->pg.mu);
		u->pg.stop = 1;
		pthread_mutex_unlock(&u->pg.mu);
		snprintf(u->busy_msg, sizeof u->busy_msg, "stopping after the current command");
	} else if (u->n_ahead < (int)(sizeof u->ahead / sizeof u->ahead[0])) {
		u->ahead[u->n_ahead++] = ch;
		snprintf(u->busy_msg, sizeof u->busy_msg, "%d key%s typed ahead, read when this is done", u->n_ahead,
		    u->n_ahead == 1 ? "" : "s");
	}
}

/* Commands that take the cursor's layer: calibrate, search, quantize, next. */
static int
act_layer_cmd(ui *u, const char *name)
{
	pipeline *p = &u->s->p;
	int l = p->layer;

	/* A resumed session may hold the cursor layer's recorded result without
	 * its output (nothing ran here yet): commit only what was quantized here. */
	if (strcmp(name, "next-layer") == 0 && l < p->n_layers && !u->quantized_here[l]) {
		msg_set(u, MSG_ERROR, "layer %d is not quantized yet: %s calibrates, %s quantizes", l,
		    key_name_of("calibrate-layer"), key_name_of("quantize-layer"));
		return -1;
	}
	if (l >= p->n_layers) {
		msg_set(u, MSG_ERROR, "every layer is committed: %s finishes", key_name_of("finish"));
		return -1;
	}
	job_start(u, JOB_ONE, name, 0);
	return u->job_rc;
}

/* Calibrate, quantize and commit every layer from the cursor up to (not
 * including) layer until on the worker. */
static void
act_run_to(ui *u, int until)
{
	if (u->s->p.layer >= u->s->p.n_layers) {
		msg_set(u, MSG_ERROR, "every layer is committed: %s finishes", key_name_of("finish"));
		return;
	}
	job_start(u, JOB_ALL, NULL, until);
}

/* Calibrate, quantize and commit every remaining layer on the worker. */
static void
act_run_all(ui *u)
{
	act_run_to(u, n_layers(u));
}

/* 'g': ask for the layer a run stops before. */
static void
act_run_to_ask(ui *u)
{
	const pipeline *p = &u->s->p;
	if (p->layer >= p->n_layers) {
		msg_set(u, MSG_ERROR, "every layer is committed: %s finishes", key_name_of("finish"));
		return;
	}
	prompt_open(u, PR_UNTIL, "run layers %d up to (not including) layer (%d to %d)", p->layer, p->layer + 1,
	    p->n_layers);
}
/* Run finish and show the model summary. */
static void
act_finish(ui *u)
{
	if (run_cmd(u, "finish", NULL, NULL) < 0)
		return;
	const pipe_summary *sm = &u->s->p.summary;
	char t[STATS_ROWS][16];
	for (int m = 0; m < STATS_ROWS; m++)
		ui_fmt_db(t[m], sizeof t[m], 0, m < MOD_COUNT && !mod_present(u, m) ? NAN : sm->sqnr[m]);
	msg_set(u, MSG_INFO, "finished: last layer's output SQNR text %s vision %s audio %s all %s dB", t[0], t[1],
	    t[2], t[3]);
}

/* The layer commands act on: the view's in the layer view, else the selection. */
static int
target_layer(const ui *u)
{
	return u->screen == SCR_LAYER ? u->view : u->sel;
}

/* Cycle the target layer's method with set-method. */
static void
act_method(ui *u)
{
	int l = target_layer(u);
	if (l < u->s->p.layer) {
		msg_set(u, MSG_ERROR, "layer %d is committed; its method no longer matters", l);
		return;
	}
	int m = (u->s->p.settings[l].method + 1) % METHOD_COUNT;
	char ls[16];
	snprintf(ls, sizeof ls, "%d", l);
	if (run_cmd(u, "set-method", json_pack("{s:s, s:s}", "layer", ls, "method", method_name(m)), NULL) == 0)
		msg_set(u, MSG_INFO, "layer %d: method %s (m cycles rtn, sq, mas, mas-cmc)", l, method_name(m));
	row_fix(u, l);
	preview_refresh(u);
}

/* Set alpha of the view's group and alpha row to v. */
static void
alpha_set(ui *u, double v)
{
	char ls[16];
	if (v < 0)
		v = 0;
	if (v > 1)
		v = 1;
	v = nearbyint(v * 100.0) / 100.0;
	snprintf(ls, sizeof ls, "%d", u->view);
	json_t *a = json_pack("{s:s, s:s, s:s, s:f}", "layer", ls, "linear", smooth_group_name(u->site),
	    "modality", row_name(u->row), "value", v);
	if (run_cmd(u, "set-alpha", a, NULL) == 0) {
		preview_refresh(u);
		msg_set(u, MSG_INFO, "layer %d %s alpha %s %.2f%s", u->view, smooth_group_name(u->site),
		    row_name(u->row), v, u->pv_valid ? ": preview from the token sample; q measures" : "");
	}
}

/* Why alpha cannot be tuned in the layer view right now, or NULL. */
static const char *
alpha_blocked(const ui *u)
{
	if (u->view < u->s->p.layer)
		return "this layer is committed";
	if (u->site == SITE_DOWN)
		return "down_proj is quantized but not smoothed: it has no alpha";
	if (u->s->p.settings[u->view].method == METHOD_RTN)
		return "rtn does not smooth: m changes the method";
	return NULL;
}

/* '+' and '-': move the view's alpha by d, when it can be tuned. */
static void
act_alpha_step(ui *u, double d)
{
	const char *why = alpha_blocked(u);
	if (why != NULL) {
		msg_set(u, MSG_ERROR, "%s", why);
		return;
	}
	row_fix(u, u->view);
	alpha_set(u, u->s->p.settings[u->view].alpha[u->site][u->row] + d);
}

/* Open a prompt of kind on the message line, labelled by fmt, empty. */
static void
prompt_open(ui *u, int kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
prompt_open(ui *u, int kind, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(u->plabel, sizeof u->plabel, fmt, ap);
	va_end(ap);
	u->prompt = kind;
	u->pbuf[0] = '\0';
}

/* Parse ":NAME KEY=VALUE ..." against the command table and run it. */
static void
act_command_line(ui *u, const char *line)
{
	char buf[256], *save = NULL;
	const sess_cmd *c;
	json_t *args;

	snprintf(buf, sizeof buf, "%s", line);
	char *name = strtok_r(buf, " \t", &save);
	if (name == NULL)
		return;
	if ((c = sess_cmd_find(name)) == NULL) {
		msg_set(u, MSG_ERROR, "unknown command '%s' (? lists them)", name);
		return;
	}
	args = json_object();
	for (char *t = strtok_r(NULL, " \t", &save); t != NULL; t = strtok_r(NULL, " \t", &save)) {
		char *eq = strchr(t, '=');
		const sess_arg *a;
		if (eq == NULL) {
			msg_set(u, MSG_ERROR, "%s: expected KEY=VALUE, not '%s'", name, t);
			json_decref(args);
			return;
		}
		*eq++ = '\0';
		for (a = c->args; a->name != NULL && strcmp(a->name, t) != 0; a++)
			;
		char *end;
		json_t *v;
		if (a->name == NULL || a->type == SARG_STR) {
			v = json_string(eq);	/* unknown names: the dispatcher says so */
		} else if (a->type == SARG_INT) {
			long long x = strtoll(eq, &end, 10);
			v = *eq && !*end ? json_integer(x) : json_string(eq);
		} else if (a->type == SARG_NUM) {
			double x = strtod(eq, &end);
			v = *eq && !*end ? json_real(x) : json_string(eq);
		} else {
			v = strcmp(eq, "true") == 0 || strcmp(eq, "1") == 0 ? json_true() :
			    strcmp(eq, "false") == 0 || strcmp(eq, "0") == 0 ? json_false() : json_string(eq);
		}
		json_object_set_new(args, t, v);
	}
	if (strcmp(name, "calibrate-layer") == 0 || strcmp(name, "quantize-layer") == 0 ||
	    strcmp(name, "next-layer") == 0 || strcmp(name, "search-alpha") == 0) {
		json_decref(args);
		act_layer_cmd(u, name);
		return;
	}
	if (strcmp(name, "finish") == 0) {
		json_decref(args);
		act_finish(u);
		return;
	}
	json_t *res = NULL;
	if (run_cmd(u, name, args, &res) == 0) {
		char *t = json_dumps(res, JSON_COMPACT | JSON_SORT_KEYS);
		msg_set(u, MSG_INFO, "%s: %s", name, t ? t : "done");
		free(t);
	}
	json_decref(res);
	preview_refresh(u);
}

/* Enter on a prompt. */
static void
prompt_accept(ui *u)
{
	int kind = u->prompt;
	char *end;
	u->prompt = PR_NONE;
	if (kind == PR_ALPHA || kind == PR_RANK) {
		double v = strtod(u->pbuf, &end);
		if (end == u->pbuf || *end != '\0') {
			msg_set(u, MSG_ERROR, "'%s' is not a number", u->pbuf);
			return;
		}
		if (kind == PR_ALPHA) {
			alpha_set(u, v);
			return;
		}
		char ls[16];
		int l = target_layer(u);
		snprintf(ls, sizeof ls, "%d", l);
		const char *lin = u->screen == SCR_LAYER && u->site != SITE_DOWN ? smooth_group_name(u->site) : "*";
		if (run_cmd(u, "set-rank", json_pack("{s:s, s:s, s:f}", "layer", ls, "linear", lin, "value", v), NULL) == 0)
			msg_set(u, MSG_INFO, "layer %d %s: rank %g (applies at the next quantize)", l, lin, v);
	} else if (kind == PR_BITS) {
		int w, a;
		char tail;
		if (sscanf(u->pbuf, "%d %d%c", &w, &a, &tail) != 2) {
			msg_set(u, MSG_ERROR, "expected two numbers, weight and activation bits: '%s'", u->pbuf);
			return;
		}
		if (run_cmd(u, "set-bits", json_pack("{s:i, s:i}", "wbits", w, "abits", a), NULL) == 0)
			msg_set(u, MSG_INFO, "W%dA%d from the next quantize on", w, a);
	} else if (kind == PR_COMMAND) {
		act_command_line(u, u->pbuf);
	} else if (kind == PR_UNTIL) {
		long v = strtol(u->pbuf, &end, 10);
		const pipeline *p = &u->s->p;
		if (end == u->pbuf || *end != '\0') {
			msg_set(u, MSG_ERROR, "'%s' is not a layer number", u->pbuf);
			return;
		}
		if (v <= p->layer || v > p->n_layers) {
			msg_set(u, MSG_ERROR, "layer %ld: a run from the cursor (layer %d) stops before a layer from %d to %d",
			    v, p->layer, p->layer + 1, p->n_layers);
			return;
		}
		act_run_to(u, (int)v);
	} else if (kind == PR_THRESH) {
		double v = strtod(u->pbuf, &end);
		if (end == u->pbuf || *end != '\0' || !isfinite(v)) {
			msg_set(u, MSG_ERROR, "'%s' is not a number", u->pbuf);
			return;
		}
		u->ov_thr = v;
		msg_set(u, MSG_INFO, "SQNR threshold %.1f dB", v);
	}
}

/* A key while a prompt is open. */
static void
prompt_key(ui *u, int ch)
{
	size_t n = strlen(u->pbuf);
	if (u->prompt == PR_QUIT) {
		u->prompt = PR_NONE;
		if (ch == 'y' || ch == 'Y')
			u->quit = 1;
		else
			msg_set(u, MSG_INFO, "not quitting");
		return;
	}
	if (ch == KEY_ESC || ch == KEY_CTRL_C) {
		u->prompt = PR_NONE;
		msg_set(u, MSG_INFO, "cancelled");
	} else if (ch == '\n' || ch == '\r' || ch == KEY_ENTER) {
		prompt_accept(u);
	} else if (ch == KEY_BACKSPACE || ch == 127 || ch == 8) {
		if (n > 0)
			u->pbuf[n - 1] = '\0';
	} else if (ch >= 32 && ch < 127 && n + 1 < sizeof u->pbuf) {
		u->pbuf[n] = (char)ch;
		u->pbuf[n + 1] = '\0';
	}
}

/* ---- the export dialog ------------------------------------------------------------ */

static const char *const ex_desc[EXPORT_FORMAT_COUNT] = {
	"a dense model in the input's own layout, each decoder linear replaced by its dequantized "
	"weight; any framework loads it (weights only)",
	"W8A8 int8 as vLLM loads it: int8 weights with per-channel scales, dynamic per-token "
	"activations, the unified (text) factor folded into the norms; needs W8",
	"weights quantized with the text factor, plus masquant.safetensors (per-modality factors, "
	"CMC L1/L2) and masquant.json; masq eval runs it",
};
static const char *const ex_drops[EXPORT_FORMAT_COUNT] = {
	"activation quantization, the per-modality factors and the compensation",
	"for mas and mas-cmc: the vision and audio factors, o_proj's factor and the compensation",
	"nothing",
};

/* Ask export_preview what the chosen format would write (or why it cannot
 * yet), and name the default target directory unless one was typed. */
static void
export_refresh(ui *u)
{
	masq_err err = {0};
	char *text;

	json_decref(u->ex_list);
	u->ex_list = NULL;
	u->ex_err[0] = '\0';
	memset(&u->ex_rep, 0, sizeof u->ex_rep);
	if (!u->ex_edited)
		snprintf(u->ex_dir, sizeof u->ex_dir, "masq-export-%lld-%s", (long long)u->s->id,
		    export_format_name(u->ex_fmt));
	text = sess_export_preview(u->s, u->ex_fmt, &u->ex_rep, &err);
	if (text == NULL) {
		snprintf(u->ex_err, sizeof u->ex_err, "%s", err.msg);
		return;
	}
	u->ex_list = json_loads(text, 0, NULL);
	free(text);
}

/* Open the export dialog on the current format. */
static void
export_open(ui *u)
{
	if (u->screen != SCR_EXPORT)
		u->back = u->screen;
	u->screen = SCR_EXPORT;
	u->ex_edited = 0;
	export_refresh(u);
	msg_set(u, MSG_INFO, "Tab picks the format; type the directory; Enter writes it");
}

/* A key in the export dialog: Tab format, typing the directory, Enter export. */
static void
export_key(ui *u, int ch)
{
	size_t n = strlen(u->ex_dir);
	if (ch == '\t' || ch == KEY_BTAB) {
		u->ex_fmt = (u->ex_fmt + (ch == '\t' ? 1 : EXPORT_FORMAT_COUNT - 1)) % EXPORT_FORMAT_COUNT;
		export_refresh(u);
	} else if (ch == KEY_ESC) {
		u->screen = u->back;
		msg_set(u, MSG_INFO, "export cancelled");
	} else if (ch == '\n' || ch == '\r' || ch == KEY_ENTER) {
		json_t *res = NULL;
		const char *fmt = export_format_name(u->ex_fmt);
		if (n == 0) {
			msg_set(u, MSG_ERROR, "type a target directory first");
			return;
		}
		if (run_cmd(u, "export", json_pack("{s:s, s:s}", "format", fmt, "out", u->ex_dir), &res) == 0) {
			const char *dropped = json_string_value(json_object_get(res, "dropped"));
			msg_set(u, MSG_INFO, "exported as %s to %s (%zu files)%s%s", fmt, u->ex_dir,
			    json_object_size(json_object_get(res, "files")), dropped && *dropped ? "; dropped: " : "",
			    dropped && *dropped ? dropped : "");
			u->screen = u->back;
		}
		json_decref(res);
	} else if (ch == KEY_BACKSPACE || ch == 127 || ch == 8) {
		if (n > 0)
			u->ex_dir[n - 1] = '\0';
		u->ex_edited = 1;
	} else if (ch >= 32 && ch < 127 && n + 1 < sizeof u->ex_dir) {
		u->ex_dir[n] = (char)ch;
		u->ex_dir[n + 1] = '\0';
		u->ex_edited = 1;
	}
}

/* ---- the key map ------------------------------------------------------------------ */

/* Run the command the table binds to key ch on this screen; 0 when no
 * command is bound to it. */
static int
table_key(ui *u, int ch)
{
	const sess_cmd *c;
	for (c = sess_cmds; c->name != NULL && c->key != ch; c++)
		;
	if (c->name == NULL || ch == 0)
		return 0;
	if (strcmp(c->name, "calibrate-layer") == 0 || strcmp(c->name, "quantize-layer") == 0 ||
	    strcmp(c->name, "next-layer") == 0 || strcmp(c->name, "search-alpha") == 0) {
		act_layer_cmd(u, c->name);
	} else if (strcmp(c->name, "finish") == 0) {
		act_finish(u);
	} else if (strcmp(c->name, "set-method") == 0) {
		act_method(u);
	} else if (strcmp(c->name, "set-bits") == 0) {
		prompt_open(u, PR_BITS, "bits now W%dA%d; weight and activation bits (e.g. 8 8)",
		    u->s->p.opts.wbits, u->s->p.opts.abits);
	} else if (strcmp(c->name, "set-alpha") == 0) {
		const char *why = u->screen == SCR_LAYER ? alpha_blocked(u) : "alpha is set in the layer view (Enter)";
		if (why != NULL) {
			msg_set(u, MSG_ERROR, "%s", why);
			return 1;
		}
		row_fix(u, u->view);
		prompt_open(u, PR_ALPHA, "alpha of layer %d %s %s (0 to 1)", u->view, smooth_group_name(u->site),
		    row_name(u->row));
	} else if (strcmp(c->name, "set-rank") == 0) {
		int l = target_layer(u);
		prompt_open(u, PR_RANK, "rank of layer %d %s (a ratio, a whole rank, or 0 for none)", l,
		    u->screen == SCR_LAYER && u->site != SITE_DOWN ? smooth_group_name(u->site) : "linears");
	} else if (strcmp(c->name, "export") == 0) {
		export_open(u);
	} else {
		prompt_open(u, PR_COMMAND, "command");
		snprintf(u->pbuf, sizeof u->pbuf, "%s ", c->name);
	}
	return 1;
}

/* Q or Ctrl-C: quit, asking first when the cursor's layer is not committed. */
static void
quit_ask(ui *u)
{
	int l = cursor_layer(u);
	if (!uncommitted(u)) {
		u->quit = 1;
		return;
	}
	prompt_open(u, PR_QUIT, "layer %d is %s but not committed (a resume redoes it); quit? [y/N]", l,
	    u->quantized_here[l] ? "quantized" : "calibrated");
}

/* Open the layer view on layer l. */
static void
view_open(ui *u, int l)
{
	u->screen = SCR_LAYER;
	u->view_back = SCR_LIST;
	u->view = l;
	row_fix(u, l);
	preview_refresh(u);
	if (cursor_layer(u) < 0)
		msg_set(u, MSG_INFO, "every layer is committed: the statistics were released");
	else if (l != cursor_layer(u) || !u->s->p.calibrated)
		msg_set(u, MSG_INFO, "statistics are kept for the cursor's calibrated layer only; %s calibrates layer %d",
		    key_name_of("calibrate-layer"), cursor_layer(u));
}

/* A key on the layer list. */
static void
list_key(ui *u, int ch)
{
	int n = n_layers(u);
	switch (ch) {
	case KEY_UP: case 'k': if (u->sel > 0) u->sel--; break;
	case KEY_DOWN: case 'j': if (u->sel < n - 1) u->sel++; break;
	case KEY_PPAGE: u->sel = u->sel > 10 ? u->sel - 10 : 0; break;
	case KEY_NPAGE: u->sel = u->sel + 10 < n ? u->sel + 10 : n - 1; break;
	case KEY_HOME: u->sel = 0; break;
	case KEY_END: u->sel = n - 1; break;
	case '\n': case '\r': case KEY_ENTER: view_open(u, u->sel); break;
	case 'a': act_run_all(u); break;	/* the list's own key: set-alpha lives in the layer view */
	case 'o': case '\t': u->screen = SCR_OVERVIEW; break;
	default:
		if (!table_key(u, ch))
			msg_set(u, MSG_ERROR, "no key '%s' here (? lists the keys)", keyname(ch) ? keyname(ch) : "?");
	}
}

/* A key in the layer view. */
static void
layer_key(ui *u, int ch)
{
	int rows[ALPHA_ROWS], nr = alpha_rows(u, u->view, rows), i;
	switch (ch) {
	case KEY_ESC: case KEY_BACKSPACE: case 127:
		u->screen = u->view_back;
		u->sel = u->view;
		preview_clear(u);
		msg_set(u, MSG_INFO, " ");
		return;
	case '\t': u->site = (u->site + 1) % SITE_COUNT; break;
	case KEY_BTAB: u->site = (u->site + SITE_COUNT - 1) % SITE_COUNT; break;
	case KEY_UP: u->site = u->site == SITE_DOWN ? GRP_GATEUP : (u->site + GRP_COUNT - 1) % GRP_COUNT; break;
	case KEY_DOWN: u->site = u->site == SITE_DOWN ? GRP_QKV : (u->site + 1) % GRP_COUNT; break;
	case KEY_LEFT: case KEY_RIGHT:
		for (i = 0; i < nr && rows[i] != u->row; i++)
			;
		if (nr > 0)
			u->row = rows[i >= nr ? 0 : (i + (ch == KEY_RIGHT ? 1 : nr - 1)) % nr];
		break;
	case '+': case '=': act_alpha_step(u, ALPHA_STEP); return;
	case '-': case '_': act_alpha_step(u, -ALPHA_STEP); return;
	case 'p': break;
	case 'u':
		u->cmp_on = !u->cmp_on;
		msg_set(u, MSG_INFO, "%s", !u->cmp_on ? "sq against mas: off" : u->site == SITE_DOWN ?
		    "sq against mas: down_proj is not smoothed, another site shows it" :
		    "the first linear's sample SQNR under sq (one factor), mas (per modality)");
		break;
	case 'v':
		u->panel = (u->panel + 1) % PANEL_COUNT;
		msg_set(u, MSG_INFO, "%s", u->panel == PANEL_SEARCH ? "the alpha search: SQNR against alpha, the chosen alpha marked" :
		    u->panel == PANEL_RANK ? "the rank view: whitened error against rank, effective rank, rank in use" :
		    u->panel == PANEL_PROFILE ? "the range profiles: each modality's per-channel max|x|, sorted, log2 axis" :
		    "the histograms of log2|x| per modality");
		return;
	default:
		if (!table_key(u, ch))
			msg_set(u, MSG_ERROR, "no key '%s' here (? lists the keys)", keyname(ch) ? keyname(ch) : "?");
		return;
	}
	preview_refresh(u);
}

/* ---- the overview: every layer's settings and figures, sortable ------------------- */

enum { OV_LAYER, OV_METHOD, OV_AT, OV_AV, OV_AA, OV_RANK, OV_ST, OV_SV, OV_SA, OV_SALL, OV_COLS };

/* The modality (or STATS_ALL) overview column c speaks of. */
static int
ov_col_mod(int c)
{
	if (c >= OV_AT && c <= OV_AA)
		return c - OV_AT;
	if (c >= OV_ST && c <= OV_SALL)
		return c - OV_ST;
	return STATS_ALL;
}

/* Layer l's value in overview column c (NAN: none). */
static double
ov_value(const ui *u, int l, int c)
{
	const pipeline *p = &u->s->p;
	const pipe_layer_result *r = &p->results[l];
	const layer_setting *ls = &p->settings[l];
	int measured = layer_measured(u, l), st = layer_state(u, l);
	int method = st == LS_COMMITTED || st == LS_QUANTIZED ? r->method : ls->method;
	int m = ov_col_mod(c);

	switch (c) {
	case OV_LAYER: return l;
	case OV_METHOD: return method;
	case OV_AT: case OV_AV: case OV_AA:
		if (method == METHOD_RTN || !mod_present(u, m))
			return NAN;
		return ls->alpha[GRP_QKV][method == METHOD_SQ ? ALPHA_UNIFIED : m];
	case OV_RANK:
		if (method != METHOD_MAS_CMC)
			return NAN;
		return measured ? r->lin[LIN_Q].rank : ls->rank[LIN_Q];
	default:
		if (!measured || (m < MOD_COUNT && !mod_present(u, m)))
			return NAN;
		return r->sqnr[m];
	}
}

/* Layers in the overview's order (sort column, direction; NAN last) into idx. */
static void
ov_order(const ui *u, int *idx)
{
	int n = n_layers(u);
	for (int i = 0; i < n; i++) {
		int l = i, j = i;
		double v = ov_value(u, l, u->ov_col);
		for (; j > 0; j--) {
			double w = ov_value(u, idx[j - 1], u->ov_col);
			int before;	/* l goes before idx[j - 1] */
			if (isnan(v))
				before = 0;
			else if (isnan(w))
				before = 1;
			else
				before = u->ov_desc ? v > w : v < w;
			if (!before)
				break;
			idx[j] = idx[j - 1];
		}
		idx[j] = l;
	}
}

/* 'w': select the measured layer with the lowest SQNR for the sort
 * column's modality (all tokens when the column is not per modality). */
static void
ov_worst(ui *u)
{
	int m = ov_col_mod(u->ov_col), best = -1;
	double bv = INFINITY;
	for (int l = 0; l < n_layers(u); l++) {
		double v = ov_value(u, l, OV_ST + m);
		if (isfinite(v) && v < bv) {
			bv = v;
			best = l;
		}
	}
	if (best < 0) {
		msg_set(u, MSG_ERROR, "no layer is measured for %s yet", m == STATS_ALL ? "all tokens" : modality_name(m));
		return;
	}
	u->sel = best;
	msg_set(u, MSG_INFO, "worst for %s: layer %d at %.2f dB (threshold %.1f dB): Enter opens it",
	    m == STATS_ALL ? "all tokens" : modality_name(m), best, bv, u->ov_thr);
}

/* A key on the overview. */
static void
overview_key(ui *u, int ch)
{
	int n = n_layers(u), idx[n > 0 ? n : 1], pos = 0;
	ov_order(u, idx);
	while (pos < n - 1 && idx[pos] != u->sel)
		pos++;
	switch (ch) {
	case KEY_UP: case 'k': if (pos > 0) u->sel = idx[pos - 1]; break;
	case KEY_DOWN: case 'j': if (pos < n - 1) u->sel = idx[pos + 1]; break;
	case KEY_PPAGE: u->sel = idx[pos > 10 ? pos - 10 : 0]; break;
	case KEY_NPAGE: u->sel = idx[pos + 10 < n ? pos + 10 : n - 1]; break;
	case KEY_HOME: u->sel = idx[0]; break;
	case KEY_END: u->sel = idx[n - 1]; break;
	case KEY_LEFT: u->ov_col = (u->ov_col + OV_COLS - 1) % OV_COLS; break;
	case KEY_RIGHT: u->ov_col = (u->ov_col + 1) % OV_COLS; break;
	case 'i': u->ov_desc = !u->ov_desc; break;
	case 'w': ov_worst(u); break;
	case 't': prompt_open(u, PR_THRESH, "SQNR threshold in dB (now %.1f)", u->ov_thr); break;
	case '\n': case '\r': case KEY_ENTER:
		view_open(u, u->sel);
		u->view_back = SCR_OVERVIEW;
		break;
	case KEY_ESC: case '\t': case 'o': u->screen = SCR_LIST; break;
	default:
		if (!table_key(u, ch))
			msg_set(u, MSG_ERROR, "no key '%s' here (? lists the keys)", keyname(ch) ? keyname(ch) : "?");
	}
}

/* The overview screen. */
static void
draw_overview(ui *u)
{
	static const char *const head[OV_COLS] = {"layer", "method", "a.t", "a.v", "a.a", "rank", "text", "vision",
		"audio", "all"};
	static const int width[OV_COLS] = {7, 8, 5, 5, 5, 6, 8, 8, 8, 8};
	const pipeline *p = &u->s->p;
	int n = n_layers(u), idx[n > 0 ? n : 1], rows = LINES - 6, pos = 0;
	const char *arrow = u->g.utf8 ? (u->ov_desc ? "\xe2\x96\xbc" : "\xe2\x96\xb2") : (u->ov_desc ? "v" : "^");

	ov_order(u, idx);
	while (pos < n - 1 && idx[pos] != u->sel)
		pos++;
	if (pos < u->ov_top)
		u->ov_top = pos;
	if (pos >= u->ov_top + rows)
		u->ov_top = pos - rows + 1;
	ui_fill(0, 0, -1, ui_title_attr(&u->g));
	ui_text(0, 0, -1, ui_title_attr(&u->g), " overview%s%d layers%sSQNR below %.1f dB marked !%ssorted by %s %s",
	    u->g.sep, n, u->g.sep, u->ov_thr, u->g.sep, head[u->ov_col], arrow);
	int x = 1;
	for (int c = 0; c < OV_COLS; c++) {
		char h[32];
		snprintf(h, sizeof h, "%s%s", head[c], c == u->ov_col ? arrow : "");
		int a = c == u->ov_col ? (int)(A_BOLD | A_REVERSE) : (int)A_BOLD;
		if (c == OV_LAYER || c == OV_METHOD)
			ui_text(1, x, width[c], a, "%-*s", width[c] - 1, h);
		else
			ui_text(1, x, width[c], a, "%*s", width[c] - 1, h);
		x += width[c];
	}
	ui_text(1, x, -1, A_DIM, "state");
	for (int i = 0; i < rows && u->ov_top + i < n; i++) {
		int l = idx[u->ov_top + i], y = 2 + i;
		int rowattr = l == u->sel ? A_REVERSE : A_NORMAL;
		ui_fill(y, 0, -1, rowattr);
		ui_text(y, 0, 1, rowattr, "%s", l == p->layer ? ">" : " ");
		x = 1;
		for (int c = 0; c < OV_COLS; c++) {
			double v = ov_value(u, l, c);
			char t[32];
			int a = rowattr;
			if (c == OV_LAYER)
				snprintf(t, sizeof t, "%-6d", l);
			else if (c == OV_METHOD)
				snprintf(t, sizeof t, "%-7s", method_name((int)v));
			else if (isnan(v))
				snprintf(t, sizeof t, "%*s", width[c] - 1, "-");
			else if (c <= OV_AA)
				snprintf(t, sizeof t, "%*.2f", width[c] - 1, v);
			else if (c == OV_RANK)
				snprintf(t, sizeof t, "%*g", width[c] - 1, v);
			else {
				snprintf(t, sizeof t, "%*.2f%s", width[c] - 2, v, v < u->ov_thr ? "!" : " ");
				a |= ui_sqnr_attr(&u->g, v, u->ov_thr, u->ov_thr + 10);
			}
			ui_text(y, x, width[c], a, "%s", t);
			x += width[c];
		}
		ui_text(y, x, -1, rowattr | A_DIM, "%s", lstate_name(layer_state(u, l)));
	}
	ui_text(LINES - 4, 0, -1, A_DIM, " alpha of qkv per modality; rank of q_proj (the setting until measured)");
	draw_message(u, LINES - 3);
	const char *kv[] = {u->g.leftright, "sort column", "i", "invert", "w", "worst layer", "t", "threshold",
	    "Enter", "view", "Esc", "back", NULL};
	draw_keys(u, LINES - 2, kv);
	draw_status(u);
}

/* Route a key: a prompt, the export dialog, the global keys, then the screen's. */
static void
handle_key(ui *u, int ch)
{
	if (ch == KEY_RESIZE) {
		clear();
		return;
	}
	if (u->busy) {
		busy_key(u, ch);
		return;
	}
	if (u->prompt != PR_NONE) {
		prompt_key(u, ch);
		return;
	}
	if (u->screen == SCR_EXPORT) {
		if (ch == KEY_CTRL_C)
			quit_ask(u);
		else
			export_key(u, ch);
		return;
	}
	if (ch == 'Q' || ch == KEY_CTRL_C) {
		quit_ask(u);
		return;
	}
	if (ch == '?' || (u->screen == SCR_HELP && (ch == KEY_ESC || ch == 'q'))) {
		if (u->screen == SCR_HELP) {
			u->screen = u->back;
		} else {
			u->back = u->screen;
			u->screen = SCR_HELP;
		}
		return;
	}
	if (u->screen == SCR_HELP) {
		u->screen = u->back;
		handle_key(u, ch);
		return;
	}
	if (ch == ':') {
		prompt_open(u, PR_COMMAND, "command (NAME KEY=VALUE ...)");
		return;
	}
	if (ch == 'g') {	/* no command has a key 'g': runs are the UI's own */
		act_run_to_ask(u);
		return;
	}
	if (u->screen == SCR_LIST)
		list_key(u, ch);
	else if (u->screen == SCR_OVERVIEW)
		overview_key(u, ch);
	else
		layer_key(u, ch);
}

/* ---- drawing ---------------------------------------------------------------------- */

/* The status line: session, database, bits and the cursor's state. */
static void
draw_status(ui *u)
{
	const pipeline *p = &u->s->p;
	char where[160];
	int l = cursor_layer(u);

	if (p->finished)
		snprintf(where, sizeof where, "finished");
	else if (l < 0)
		snprintf(where, sizeof where, "all %d layers committed", p->n_layers);
	else if (uncommitted(u))
		snprintf(where, sizeof where, "cursor layer %d %s, not committed", l,
		    u->quantized_here[l] ? "quantized" : "calibrated");
	else
		snprintf(where, sizeof where, "cursor layer %d (of 0-%d)", l, p->n_layers - 1);
	int a = ui_title_attr(&u->g);
	ui_fill(LINES - 1, 0, -1, a);
	if (u->s->db != NULL)
		ui_text(LINES - 1, 0, COLS - 8, a, " session %lld%s%s%sW%dA%d%s%s", (long long)u->s->id, u->g.sep,
		    u->o.db_label ? u->o.db_label : "", u->g.sep, p->opts.wbits, p->opts.abits, u->g.sep, where);
	else
		ui_text(LINES - 1, 0, COLS - 8, a, " not recorded%sW%dA%d%s%s", u->g.sep, p->opts.wbits, p->opts.abits,
		    u->g.sep, where);
	ui_text(LINES - 1, COLS - 7, 7, a, "? help");
}

/* The message line (or the open prompt) at row y. */
static void
draw_message(ui *u, int y)
{
	if (u->prompt != PR_NONE) {
		int x = ui_text(y, 0, -1, ui_key_attr(&u->g), "%s%s ", u->plabel, u->prompt == PR_QUIT ? "" : ":");
		x += ui_text(y, x, -1, A_NORMAL, "%s", u->pbuf);
		if (u->prompt != PR_QUIT)
			ui_text(y, x, 1, A_REVERSE, " ");
		return;
	}
	int a = u->msg_kind == MSG_ERROR ? ui_error_attr(&u->g) : u->msg_kind == MSG_WORKING ? ui_working_attr(&u->g) :
	    (int)A_NORMAL;
	ui_text(y, 0, -1, a, "%s", u->msg);
}

/* Key hints: pairs of key and label, as many as fit. */
static void
draw_keys(ui *u, int y, const char *const *kv)
{
	int x = 0;
	for (int i = 0; kv[i] != NULL; i += 2) {
		int need = (int)(strlen(kv[i]) + strlen(kv[i + 1]) + 1);
		if (x + need > COLS)
			break;
		x += ui_text(y, x, -1, ui_key_attr(&u->g), "%s", kv[i]);
		x += ui_text(y, x, -1, A_NORMAL, " %s  ", kv[i + 1]);
	}
}


/* Layer l's misalignment figures per site, a header and four rows from y. */
static void
draw_list_misalign(ui *u, int l, int y)
{
	const pipe_layer_result *r = &u->s->p.results[l];
	ui_text(y++, 0, -1, A_BOLD, " layer %-3d   channels each modality dominates    Theorem-1 loss, unified factor", l);
	for (int site = 0; site < SITE_COUNT; site++, y++) {
		const misalign *ma = &r->mis[site];
		int x = ui_text(y, 0, -1, A_NORMAL, "   %-8s", engine_site_name(site));
		for (int m = 0; m < MOD_COUNT; m++)
			x += ui_text(y, x, -1, ui_mod_attr(&u->g, m), ma->present[m] ? " %s %3.0f%%" : " %s    -",
			    m == 0 ? "t" : m == 1 ? "v" : "a", 100.0 * ma->dominant_share[m]);
		x = 48;
		for (int m = 0; m < MOD_COUNT; m++) {
			char t[16];
			ui_fmt_db(t, sizeof t, 6, ma->present[m] ? ma->thm1_loss_db[m] : NAN);
			x += ui_text(y, x, -1, ui_mod_attr(&u->g, m), " %s %s", m == 0 ? "t" : m == 1 ? "v" : "a", t);
		}
		ui_text(y, x, -1, A_NORMAL, " dB");
	}
}

/* The layer list screen. */
static void
draw_list(ui *u)
{
	const pipeline *p = &u->s->p;
	const calib *c = &u->s->c;
	int n = p->n_layers, rows = LINES - 6;

	ui_fill(0, 0, -1, ui_title_attr(&u->g));
	ui_text(0, 0, -1, ui_title_attr(&u->g), " masq%s%s%s%d layers, %d tokens (text %d, vision %d, audio %d)",
	    u->g.sep, u->s->model_dir, u->g.sep, n, c->n_tokens, c->n_mod[0], c->n_mod[1], c->n_mod[2]);
	ui_text(1, 0, -1, A_BOLD, "  layer %-10s %-7s %-14s %7s%7s%7s%7s %6s", "state", "method", "alpha t/v/a",
	    "text", "vision", "audio", "all", "time");
	if (u->sel >= n)
		u->sel = n - 1;
	if (u->sel < u->top)
		u->top = u->sel;
	if (u->sel >= u->top + rows)
		u->top = u->sel - rows + 1;
	for (int i = 0; i < rows && u->top + i < n; i++) {
		int l = u->top + i, y = 2 + i, st = layer_state(u, l);
		const pipe_layer_result *r = &p->results[l];
		const layer_setting *ls = &p->settings[l];
		int method = st == LS_COMMITTED || st == LS_QUANTIZED ? r->method : ls->method;
		int rowattr = l == u->sel ? A_REVERSE : A_NORMAL;
		char al[32];
		if (method == METHOD_RTN)
			snprintf(al, sizeof al, "-");
		else if (method == METHOD_SQ)
			snprintf(al, sizeof al, "%.2f", ls->alpha[GRP_QKV][ALPHA_UNIFIED]);
		else
			snprintf(al, sizeof al, "%.2f/%.2f/%.2f", ls->alpha[GRP_QKV][0], ls->alpha[GRP_QKV][1],
			    ls->alpha[GRP_QKV][2]);
		ui_fill(y, 0, -1, rowattr);
		int x = ui_text(y, 0, -1, rowattr, "%s %5d %-10s %-7s %-14s", l == p->layer ? ">" : " ", l,
		    lstate_name(st), method_name(method), al);
		int measured = layer_measured(u, l);
		for (int m = 0; m < STATS_ROWS; m++) {
			char t[16];
			double v = measured && (m == STATS_ALL || mod_present(u, m)) ? r->sqnr[m] : NAN;
			ui_fmt_db(t, sizeof t, 7, v);
			x += ui_text(y, x, 7, rowattr | ui_sqnr_attr(&u->g, v, u->o.sqnr_bad, u->o.sqnr_good), "%s", t);
		}
		double secs = r->t_calib + r->t_search + r->t_quant;
		if (measured && secs > 0)
			ui_text(y, x, -1, rowattr, " %6.2fs", secs);
		else if (st == LS_CALIBRATED)
			ui_text(y, x, -1, rowattr, " %6.2fs", r->t_calib);
	}
	/* the selected layer's misalignment, when every row fits above it */
	if (n + 2 + 7 <= LINES - 4 && u->calibrated_here[u->sel])
		draw_list_misalign(u, u->sel, LINES - 10);
	int y = LINES - 4;
	if (p->finished) {
		char t[STATS_ROWS][16];
		for (int m = 0; m < STATS_ROWS; m++)
			ui_fmt_db(t[m], sizeof t[m], 0, m < MOD_COUNT && !mod_present(u, m) ? NAN : p->summary.sqnr[m]);
		ui_text(y, 0, -1, A_BOLD, " model: text %s  vision %s  audio %s  all %s dB", t[0], t[1], t[2], t[3]);
		if (isfinite(p->summary.kl_text))
			ui_text(y, 60, -1, A_BOLD, "KL %.3g", p->summary.kl_text);
	} else {
		ui_text(y, 0, -1, A_DIM, " SQNR (dB) of each layer's output against the FP model; below %.0f is bad",
		    u->o.sqnr_bad);
	}
	draw_message(u, LINES - 3);
	const char *kv[] = {key_name_of("calibrate-layer"), "calib", key_name_of("quantize-layer"), "quant",
	    key_name_of("next-layer"), "next", "a", "all", "Enter", "view", key_name_of("export"), "export",
	    key_name_of("finish"), "finish", "Q", "quit", "o", "overview", key_name_of("search-alpha"), "search",
	    key_name_of("set-method"), "method", NULL};
	draw_keys(u, LINES - 2, kv);
	draw_status(u);
}

/* The range of non-empty histogram bins over the modalities present at
 * site st (bin 0, the zeros and underflow, left out); 0 when empty. */
static int
hist_range(const ui *u, const site_stats *st, int *b0, int *b1)
{
	*b0 = STATS_HIST_BINS;
	*b1 = -1;
	for (int m = 0; m < MOD_COUNT; m++) {
		if (!mod_present(u, m) || st->count[m] == 0)
			continue;
		const uint64_t *h = st->hist + (size_t)m * STATS_HIST_BINS;
		for (int b = 1; b < STATS_HIST_BINS; b++)
			if (h[b] > 0) {
				if (b < *b0)
					*b0 = b;
				if (b > *b1)
					*b1 = b;
			}
	}
	if (*b1 < 0)
		return 0;
	/* at least 8 bins, so a narrow distribution still reads as one */
	while (*b1 - *b0 + 1 < 8) {
		if (*b0 > 1)
			(*b0)--;
		if (*b1 - *b0 + 1 < 8 && *b1 < STATS_HIST_BINS - 1)
			(*b1)++;
	}
	return 1;
}

/* The alpha search of layer l: per searched row, the layer output's SQNR
 * against alpha (one point per grid alpha, each plot spanning its own
 * minimum to maximum), the chosen alpha marked, in panels pw wide from row
 * y: a caption, hh plot rows and an axis row. */
static void
draw_search_panel(ui *u, int l, int y, int pw, int hh)
{
	const pipe_search *sr = &u->s->p.results[l].search;
	int rows[ALPHA_ROWS], nr = 0;

	if (!sr->done || sr->n <= 0) {
		ui_text(y + hh / 2, 2, -1, A_DIM, "layer %d has no alpha search: %s searches the cursor's calibrated layer",
		    l, key_name_of("search-alpha"));
		return;
	}
	for (int row = 0; row < ALPHA_ROWS; row++) {
		int any = 0;
		for (int i = 0; i < sr->n; i++)
			any |= isfinite(sr->sqnr[row][i]) && sr->sqnr[row][i] != 0.0;
		if (any && (row == ALPHA_UNIFIED || mod_present(u, row)))
			rows[nr++] = row;
	}
	for (int ri = 0; ri < nr && ri < 3; ri++) {
		int row = rows[ri], px = 1 + ri * (pw + 1), bi = 0;
		double lo = INFINITY, hi = -INFINITY;
		for (int i = 0; i < sr->n; i++) {
			double v = sr->sqnr[row][i];
			if (isfinite(v)) {
				lo = fmin(lo, v);
				hi = fmax(hi, v);
			}
			if (sr->alpha[i] == sr->best[row])
				bi = i;
		}
		if (!(hi > lo)) {
			lo -= 0.5;
			hi += 0.5;
		}
		int a = row < MOD_COUNT ? ui_mod_attr(&u->g, row) : (int)A_NORMAL;
		ui_text(y, px, pw, a | A_BOLD, "%s: %.2f, %.2f dB", row_name(row), sr->best[row], sr->sqnr[row][bi]);
		for (int i = 0; i < sr->n; i++) {
			double v = sr->sqnr[row][i];
			if (!isfinite(v))
				continue;
			int cx = sr->n > 1 ? i * (pw - 1) / (sr->n - 1) : 0;
			int ry = (int)((hi - v) / (hi - lo) * (hh - 1) + 0.5);
			if (i == bi)
				ui_text(y + 1 + ry, px + cx, 1, a | A_BOLD | A_REVERSE, "%s", u->g.utf8 ? "\xe2\x97\x86" : "O");
			else
				ui_text(y + 1 + ry, px + cx, 1, a, "%s", u->g.utf8 ? "\xe2\x80\xa2" : "*");
		}
		int bx = sr->n > 1 ? bi * (pw - 1) / (sr->n - 1) : 0;
		char l0[16], l1[16];
		snprintf(l0, sizeof l0, "%.2f", sr->alpha[0]);
		snprintf(l1, sizeof l1, "%.2f", sr->alpha[sr->n - 1]);
		if (bx > (int)strlen(l0) && bx < pw - (int)strlen(l1) - 1)
			ui_text(y + 1 + hh, px + bx, 1, a | A_BOLD, "%s", u->g.utf8 ? "\xe2\x96\xb2" : "^");
		ui_text(y + 1 + hh, px, pw, A_DIM, "%s", l0);
		ui_text(y + 1 + hh, px + pw - (int)strlen(l1), pw, A_DIM, "%s", l1);
	}
}

/* The compensation of layer l's linears at the view's site: per linear
 * and modality, the rank in use, the effective rank, the whitened relative
 * error at that rank and at each pipe_rank_curve ratio (the ratio nearest
 * the rank in use bold), in up to hh + 2 rows from y. */
static void
draw_rank_panel(ui *u, int l, int y, int hh)
{
	static const char *const ratio[PIPE_RANK_CURVE] = {"0.8%", "1.6%", "3.1%", "6%", "12%", "25%", "50%", "100%"};
	const pipe_layer_result *r = &u->s->p.results[l];

	if (!layer_measured(u, l) || r->method != METHOD_MAS_CMC) {
		ui_text(y + hh / 2, 2, -1, A_DIM, "the rank view needs layer %d quantized with mas-cmc (%s method, %s quantizes)",
		    l, key_name_of("set-method"), key_name_of("quantize-layer"));
		return;
	}
	int x = ui_text(y, 1, -1, A_BOLD, "%-8s %-6s %4s %6s %7s ", "linear", "", "rank", "erank", "error");
	for (int i = 0; i < PIPE_RANK_CURVE; i++)
		x += ui_text(y, 1 + x, -1, A_BOLD, "%5s", ratio[i]);
	y++;
	int used = 0;
	for (int k = 0; k < LIN_COUNT; k++) {
		if (engine_lin_site(k) != u->site)
			continue;
		for (int m = MOD_VISION; m < MOD_COUNT && used < hh; m++) {
			const pipe_cmc_diag *d = &r->lin[k].cmc[m];
			if (!mod_present(u, m))
				continue;
			char er[16];
			ui_fmt_db(er, sizeof er, 6, d->erank);
			if (isfinite(d->erank))
				snprintf(er, sizeof er, "%6.1f", d->erank);
			x = ui_text(y, 1, -1, A_NORMAL, "%-8s ", lin_name(k));
			x += ui_text(y, 1 + x, -1, ui_mod_attr(&u->g, m), "%-6s ", modality_name(m));
			x += ui_text(y, 1 + x, -1, A_NORMAL, "%4d %s %7.4f ", d->rank, er, d->rel_err);
			/* the ratio whose rank is nearest the one in use: the curve's
			 * ranks are min(in, out) times the ratios; rank r at ratio 1
			 * is the full rank, unknown here, so compare errors instead */
			int near = -1;
			double bd = INFINITY;
			for (int i = 0; i < PIPE_RANK_CURVE; i++)
				if (isfinite(d->curve[i]) && fabs(d->curve[i] - d->rel_err) < bd) {
					bd = fabs(d->curve[i] - d->rel_err);
					near = i;
				}
			for (int i = 0; i < PIPE_RANK_CURVE; i++) {
				char t[16];
				if (isfinite(d->curve[i]))
					snprintf(t, sizeof t, "%5.2f", d->curve[i]);
				else
					snprintf(t, sizeof t, "%5s", "-");
				x += ui_text(y, 1 + x, -1, i == near ? (int)(A_BOLD | A_UNDERLINE) : (int)A_NORMAL, "%s", t);
			}
			y++;
			used++;
		}
	}
	if (used < hh)
		ui_text(y + 1, 1, -1, A_DIM, "whitened relative error of the compensation at rank = %% of min(in, out)");
}

/* The per-channel ranges R^m (max|x|) of each modality at the view's site,
 * each sorted in descending order (a drawn copy), on one log2 axis, in
 * panels pw wide from row y: a caption, hh plot rows and an axis row. */
static void
draw_profile_panel(ui *u, const site_stats *ss, int y, int pw, int hh)
{
	double lo = INFINITY, hi = -INFINITY;
	for (int m = 0; m < MOD_COUNT; m++) {
		if (!mod_present(u, m) || ss->count[m] == 0)
			continue;
		const float *r = ss->absmax + (size_t)m * (size_t)ss->d;
		for (int i = 0; i < ss->d; i++)
			if (r[i] > 0) {
				lo = fmin(lo, log2(r[i]));
				hi = fmax(hi, log2(r[i]));
			}
	}
	if (!(hi >= lo)) {
		ui_text(y + hh / 2, 2, -1, A_DIM, "no channel has a range yet");
		return;
	}
	lo = floor(lo) - 1;	/* the smallest range still shows */
	hi = ceil(hi);
	if (!(hi > lo))
		hi = lo + 1;
	for (int m = 0; m < MOD_COUNT; m++) {
		int px = 1 + m * (pw + 1);
		if (!mod_present(u, m) || ss->count[m] == 0) {
			ui_text(y, px, pw, A_DIM, "%s: no tokens", modality_name(m));
			continue;
		}
		const float *r = ss->absmax + (size_t)m * (size_t)ss->d;
		float top = 0;
		for (int i = 0; i < ss->d; i++)
			top = fmaxf(top, r[i]);
		ui_text(y, px, pw, ui_mod_attr(&u->g, m) | A_BOLD, "%s R, max %.3g", modality_name(m), top);
		int used = ui_profile_draw(&u->g, y + 1, px, hh, pw, r, ss->d, lo, hi, ui_mod_attr(&u->g, m));
		char right[16];
		snprintf(right, sizeof right, "%d", ss->d);
		ui_text(y + 1 + hh, px, pw, A_DIM, "1");
		if (used > 14)
			ui_text(y + 1 + hh, px + (used - 8) / 2, 8, A_DIM, "channels");
		ui_text(y + 1 + hh, px + used - (int)strlen(right), pw, A_DIM, "%s", right);
	}
}

/* The layer view screen. */
static void
draw_layer(ui *u)
{
	const pipeline *p = &u->s->p;
	const calib *c = &u->s->c;
	int l = u->view, st = layer_state(u, l);
	int live = l == cursor_layer(u) && p->calibrated;	/* statistics in memory */
	const pipe_layer_result *r = &p->results[l];
	const layer_setting *ls = &p->settings[l];
	int method = st == LS_COMMITTED || st == LS_QUANTIZED ? r->method : ls->method;
	int pw = (COLS - 4) / 3, hh = LINES - 16, y;

	ui_fill(0, 0, -1, ui_title_attr(&u->g));
	ui_text(0, 0, -1, ui_title_attr(&u->g), " layer %d (of 0-%d)%s%s%s%s%sW%dA%d", l, p->n_layers - 1, u->g.sep,
	    lstate_name(st), u->g.sep, method_name(method), u->g.sep, p->opts.wbits, p->opts.abits);
	int x = ui_text(1, 0, -1, A_NORMAL, " site ");
	for (int s = 0; s < SITE_COUNT; s++)
		x += ui_text(1, x, -1, s == u->site ? (int)(A_REVERSE | A_BOLD) : A_NORMAL, s == u->site ? "[%s]" : " %s ",
		    engine_site_name(s));
	if (u->panel == PANEL_SEARCH)
		ui_text(1, x, -1, A_DIM, "  layer output SQNR against alpha (v: view)");
	else if (u->panel == PANEL_RANK)
		ui_text(1, x, -1, A_DIM, "  compensation against rank (v: view)");
	else if (u->panel == PANEL_PROFILE && live)
		ui_text(1, x, -1, A_DIM, "  max|x| per channel, sorted, log2 (v: view)");
	else if (live)
		ui_text(1, x, -1, A_DIM, "  log2|x| at the input of %s, %d channels", site_linears(u->site),
		    p->st[u->site].d);
	else
		ui_text(1, x, -1, A_DIM, "  the input of %s", site_linears(u->site));

	/* histograms of log2|x| per modality, one shared axis */
	y = 2;
	int b0 = 0, b1 = 0;
	const site_stats *ss = live ? &p->st[u->site] : NULL;
	if (u->panel == PANEL_SEARCH) {
		draw_search_panel(u, l, y, pw, hh);
	} else if (u->panel == PANEL_RANK) {
		draw_rank_panel(u, l, y, hh);
	} else if (u->panel == PANEL_PROFILE && ss != NULL) {
		draw_profile_panel(u, ss, y, pw, hh);
	} else if (ss != NULL && hist_range(u, ss, &b0, &b1)) {
		/* merged bins: a whole number of bins per column */
		int per = (b1 - b0 + pw) / pw;
		while (per > 1 && (b1 - b0 + 1) % per != 0) {
			if (b1 < STATS_HIST_BINS - 1)
				b1++;
			else
				b0--;
		}
		for (int m = 0; m < MOD_COUNT; m++) {
			int px = 1 + m * (pw + 1);
			if (!mod_present(u, m)) {
				ui_text(y, px, pw, A_DIM, "%s: no tokens", modality_name(m));
				continue;
			}
			ui_text(y, px, pw, ui_mod_attr(&u->g, m) | A_BOLD, "%s, %lld tokens", modality_name(m),
			    (long long)ss->count[m]);
			int used = ui_hist_draw(&u->g, y + 1, px, hh, pw, ss->hist + (size_t)m * STATS_HIST_BINS, b0, b1,
			    ui_mod_attr(&u->g, m));
			char lo[16], hi[16];
			snprintf(lo, sizeof lo, "%g", stats_hist_edge(b0));
			if (b1 == STATS_HIST_BINS - 1)
				snprintf(hi, sizeof hi, ">%g", stats_hist_edge(b1));
			else
				snprintf(hi, sizeof hi, "%g", stats_hist_edge(b1 + 1));
			ui_text(y + 1 + hh, px, pw, A_DIM, "%s", lo);
			int mid = (used - 7) / 2;
			if (mid > (int)strlen(lo) && mid + 7 < used - (int)strlen(hi))
				ui_text(y + 1 + hh, px + mid, 7, A_DIM, "log2|x|");
			ui_text(y + 1 + hh, px + used - (int)strlen(hi), pw, A_DIM, "%s", hi);
		}
	} else {
		ui_text(y + hh / 2, 2, -1, A_DIM, l < p->layer ?
		    "layer %d is committed: its statistics were released (the figures below remain)" :
		    "layer %d is not calibrated: c calibrates the cursor's layer", l);
	}
	y += hh + 2;

	/* misalignment at this site */
	const misalign *ma = &r->mis[u->site];
	int have_mis = u->calibrated_here[l] || live, dom = -1;
	for (int m = 0; m < MOD_COUNT; m++)	/* the modality dominating most channels */
		if (ma->present[m] && (dom < 0 || ma->dominant_share[m] > ma->dominant_share[dom]))
			dom = m;
	for (int m = 0; m < MOD_COUNT; m++) {
		int px = 1 + m * (pw + 1);
		if (!have_mis || !ma->present[m]) {
			ui_text(y, px, pw, A_DIM, "%s", m == 0 && !have_mis ? "misalignment: not in memory" : "");
			continue;
		}
		x = ui_text(y, px, pw, A_NORMAL, "dominates %3.0f%% ", 100.0 * ma->dominant_share[m]);
		ui_bar_draw(&u->g, y, px + x, pw - x - 1, ma->dominant_share[m], ui_mod_attr(&u->g, m));
		if (isfinite(ma->thm1_loss_db[m]))
			ui_text(y + 1, px, pw, A_NORMAL, "Thm-1 loss %6.2f dB", ma->thm1_loss_db[m]);
		else
			ui_text(y + 1, px, pw, A_NORMAL, "Thm-1 loss      - dB");
		/* log2(R^all / R^m) over the channels, bins of 0.5 from 0, then
		 * the 90% quantile of R^dom / R^m where m does not dominate */
		if (m == dom) {
			ui_text(y + 2, px, pw, A_DIM, "others: log2 R/R^m, q90");
			continue;
		}
		uint64_t bins[16];	/* ratio_hist[m] as the widget takes it */
		for (int b = 0; b < 16; b++)
			bins[b] = (uint64_t)(ma->ratio_hist[m][b] > 0 ? ma->ratio_hist[m][b] : 0);
		x = ui_hist_draw(&u->g, y + 2, px, 1, 16, bins, 0, 15, ui_mod_attr(&u->g, m));
		ui_text(y + 2, px + x, pw - x, A_NORMAL, " %5.1fx", ma->ratio_q[m][1]);
	}
	/* the group's first linear on the token sample: one factor against per-modality factors */
	int cmp = u->cmp_valid && u->cmp_layer == l && u->cmp_grp == u->site;
	for (int m = 0, named = 0; m < MOD_COUNT && cmp; m++) {
		int px = 1 + m * (pw + 1), k0 = u->site == SITE_QKV ? LIN_Q : u->site == SITE_O ? LIN_O : LIN_GATE;
		const char *ln = lin_name(k0);
		if (!mod_present(u, m))
			continue;
		double a = u->cmp[0].sqnr[k0][m], b = u->cmp[1].sqnr[k0][m];
		char ta[16], tb[16];
		ui_fmt_db(ta, sizeof ta, 5, a);
		ui_fmt_db(tb, sizeof tb, 5, b);
		/* the linear's short name ("q" of q_proj) in the first column */
		x = ui_text(y + 3, px, pw, A_NORMAL, "%.*s%ssq ", named ? 0 : (int)strcspn(ln, "_"), ln, named ? "" : " ");
		named = 1;
		x += ui_text(y + 3, px + x, pw - x, ui_sqnr_attr(&u->g, a, u->o.sqnr_bad, u->o.sqnr_good), "%s", ta);
		x += ui_text(y + 3, px + x, pw - x, A_NORMAL, " mas ");
		ui_text(y + 3, px + x, pw - x, ui_sqnr_attr(&u->g, b, u->o.sqnr_bad, u->o.sqnr_good), "%s", tb);
	}
	if (!cmp && have_mis && live && u->site != SITE_DOWN)
		ui_text(y + 3, 1, -1, A_DIM, "u: SQNR under sq (one factor) and mas (per modality), on the token sample");
	y += 4;

	/* per-linear SQNR: last quantize, and the preview under the current setting */
	int pv = u->pv_valid && u->pv_layer == l && u->pv_grp == u->site;
	ui_text(y, 0, -1, A_BOLD, " %-10s%7s%7s%7s%7s  %s", "SQNR dB", "text", "vision", "audio", "all",
	    pv ? "| preview (token sample)" : "");
	if (pv)
		ui_text(y, 67, -1, A_DIM, "%.1fms", u->pv.seconds * 1e3);
	y++;
	for (int k = 0; k < LIN_COUNT; k++) {
		if (engine_lin_site(k) != u->site)
			continue;
		x = ui_text(y, 0, -1, A_NORMAL, " %-10s", lin_name(k));
		for (int m = 0; m < STATS_ROWS; m++) {
			char t[16];
			/* per-linear figures exist for what this UI quantized */
			double v = u->quantized_here[l] && (m == STATS_ALL || mod_present(u, m)) ? r->lin[k].sqnr[m] : NAN;
			ui_fmt_db(t, sizeof t, 7, v);
			x += ui_text(y, x, 7, ui_sqnr_attr(&u->g, v, u->o.sqnr_bad, u->o.sqnr_good), "%s", t);
		}
		if (pv) {
			x += ui_text(y, x, -1, A_NORMAL, "  |");
			for (int m = 0; m < MOD_COUNT; m++) {
				char t[16];
				double v = mod_present(u, m) ? u->pv.sqnr[k][m] : NAN;
				ui_fmt_db(t, sizeof t, 7, v);
				x += ui_text(y, x, 7, ui_sqnr_attr(&u->g, v, u->o.sqnr_bad, u->o.sqnr_good), "%s", t);
			}
		}
		y++;
	}

	/* the tuning line */
	y = LINES - 4;
	const char *why = alpha_blocked(u);
	if (why != NULL) {
		ui_text(y, 0, -1, A_DIM, " %s", why);
	} else {
		int rows[ALPHA_ROWS], nr = alpha_rows(u, l, rows);
		x = ui_text(y, 0, -1, A_NORMAL, " alpha %s:", smooth_group_name(u->site));
		for (int i = 0; i < nr; i++) {
			int sel = rows[i] == u->row;
			int a = (sel ? (int)(A_REVERSE | A_BOLD) : A_NORMAL) | (rows[i] < MOD_COUNT ? ui_mod_attr(&u->g, rows[i]) : 0);
			x += ui_text(y, x, -1, a, sel ? "[%s %.2f]" : " %s %.2f ", row_name(rows[i]),
			    ls->alpha[u->site][rows[i]]);
		}
		int k0 = u->site == SITE_QKV ? LIN_Q : u->site == SITE_O ? LIN_O : LIN_GATE;
		if (method == METHOD_MAS_CMC)
			x += ui_text(y, x, -1, A_NORMAL, "   rank %g", ls->rank[k0]);
		(void)c;
	}
	draw_message(u, LINES - 3);
	const char *kv[] = {"Tab", "site", u->g.updown, "group", u->g.leftright, "modality", "+/-", "alpha",
	    key_name_of("set-alpha"), "alpha=", key_name_of("set-rank"), "rank", key_name_of("quantize-layer"), "quant", "Esc",
	    "back", NULL};
	draw_keys(u, LINES - 2, kv);
	draw_status(u);
}

/* The help screen, generated from the command table. */
static void
draw_help(ui *u)
{
	int y = 2;
	ui_fill(0, 0, -1, ui_title_attr(&u->g));
	ui_text(0, 0, -1, ui_title_attr(&u->g), " help: keys and the session commands they run");
	ui_text(1, 0, -1, A_BOLD, " key  command          what it does");
	for (const sess_cmd *c = sess_cmds; c->name != NULL && y < LINES - 6; c++, y++) {
		char k[8];
		snprintf(k, sizeof k, "%c%s", c->key ? c->key : ':', strcmp(c->name, "set-alpha") == 0 ? "*" : "");
		ui_text(y, 1, 4, ui_key_attr(&u->g), "%s", k);
		ui_text(y, 6, 16, A_NORMAL, "%s", c->name);
		ui_text(y, 23, -1, A_NORMAL, "%s", c->summary);
	}
	ui_text(y++, 1, -1, A_NORMAL, "* in the layer view; on the list a runs every remaining layer, g up to a layer");
	ui_text(y++, 1, -1, A_NORMAL, ": runs any command by name, e.g. :set assignment=1.qkv.alpha.vision=0.6");
	ui_text(y++, 1, -1, A_NORMAL, "Enter layer view  Esc back  Tab site  %s group  %s modality  +/- alpha 0.05",
	    u->g.updown, u->g.leftright);
	ui_text(y++, 1, -1, A_NORMAL, "o, Tab: the overview (%s sort column, i invert, w worst layer, t threshold)",
	    u->g.leftright);
	ui_text(y++, 1, -1, A_NORMAL, "v in the layer view: histograms, alpha search, rank view, range profiles");
	ui_text(y++, 1, -1, A_NORMAL, "u in the layer view: its group's SQNR under sq against mas (token sample)");
	ui_text(y++, 1, -1, A_NORMAL, "? help  Q or Ctrl-C quit (asks when the cursor's layer is not committed)");
	draw_message(u, LINES - 2);
	draw_status(u);
}

/* Text wrapped at word boundaries into w columns, at most maxl lines from
 * row y; returns the lines used. */
static int
draw_wrapped(int y, int x, int w, int maxl, int attr, const char *text)
{
	int used = 0;
	const char *s = text;
	while (*s && used < maxl) {
		int n = (int)strlen(s);
		if (n > w) {
			n = w;
			while (n > 0 && s[n] != ' ')
				n--;
			if (n == 0)
				n = w;
		}
		ui_text(y + used, x, w, attr, "%.*s", n, s);
		s += n;
		while (*s == ' ')
			s++;
		used++;
	}
	return used;
}

/* Layer 0's linear tensors of the export preview, the side file's first,
 * in at most room rows from y; returns the next row. */
static int
export_draw_tensors(ui *u, int y, int room)
{
	static const char *const files[2] = {"masquant.safetensors", NULL};
	for (int pass = 0; pass < 2; pass++) {
		size_t i;
		json_t *t;
		int head = 0, limit = pass == 0 ? room / 2 : room;	/* half the rows for the side file */
		json_array_foreach(u->ex_list, i, t) {
			const char *name = json_string_value(json_object_get(t, "name"));
			const char *file = json_string_value(json_object_get(t, "file"));
			const char *at = name ? strstr(name, "layers.0.") : NULL;
			if (limit <= 1)
				break;
			if (at == NULL || file == NULL || strstr(at, "_proj.") == NULL ||
			    (pass == 0) != (strcmp(file, files[0]) == 0))
				continue;
			if (!head) {
				ui_text(y++, 2, -1, A_DIM, "in %s, layer 0:", file);
				limit--;
				room--;
				head = 1;
			}
			char shape[64] = "";
			json_t *d;
			size_t j;
			int sn = 0;
			json_array_foreach(json_object_get(t, "shape"), j, d)
				sn += snprintf(shape + sn, sizeof shape - (size_t)sn, "%s%lld", j ? ", " : "",
				    (long long)json_integer_value(d));
			ui_text(y++, 4, -1, A_NORMAL, "%-46s %-4s [%s]", at, json_string_value(json_object_get(t, "dtype")),
			    shape);
			limit--;
			room--;
		}
	}
	return y;
}

/* The export dialog. */
static void
draw_export(ui *u)
{
	int y = 2;
	ui_fill(0, 0, -1, ui_title_attr(&u->g));
	ui_text(0, 0, -1, ui_title_attr(&u->g), " export session %lld", (long long)u->s->id);
	int x = ui_text(y, 1, -1, A_NORMAL, "format ");
	for (int f = 0; f < EXPORT_FORMAT_COUNT; f++)
		x += ui_text(y, 1 + x, -1, f == u->ex_fmt ? (int)(A_REVERSE | A_BOLD) : A_NORMAL,
		    f == u->ex_fmt ? "[%s]" : " %s ", export_format_name(f));
	y += 2;
	y += draw_wrapped(y, 1, COLS - 2, 3, A_NORMAL, ex_desc[u->ex_fmt]);
	if (u->ex_list != NULL) {
		char drops[1100];
		snprintf(drops, sizeof drops, "drops: %s", u->ex_rep.dropped[0] ? u->ex_rep.dropped : "nothing");
		y += draw_wrapped(y, 1, COLS - 2, 4, A_NORMAL, drops);
		/* tensors per file */
		json_t *files = json_object(), *t;
		size_t i;
		json_array_foreach(u->ex_list, i, t) {
			const char *f = json_string_value(json_object_get(t, "file"));
			json_t *c = json_object_get(files, f ? f : "?");
			json_object_set_new(files, f ? f : "?", json_integer(c ? json_integer_value(c) + 1 : 1));
		}
		char line[512];
		int n = snprintf(line, sizeof line, "will write %zu tensors:", json_array_size(u->ex_list));
		const char *k;
		json_t *v;
		json_object_foreach(files, k, v)
			if (n < (int)sizeof line)
				n += snprintf(line + n, sizeof line - (size_t)n, " %s %lld", k, (long long)json_integer_value(v));
		json_decref(files);
		ui_text(y++, 1, -1, A_BOLD, "%s", line);
		/* layer 0's linears, per file: the side file first */
		y = export_draw_tensors(u, y, LINES - 5 - y);
	} else {
		char drops[1100];
		snprintf(drops, sizeof drops, "drops: %s", ex_drops[u->ex_fmt]);
		y += draw_wrapped(y, 1, COLS - 2, 2, A_NORMAL, drops);
		y += draw_wrapped(y, 1, COLS - 2, 3, ui_error_attr(&u->g), u->ex_err);
	}
	x = ui_text(LINES - 4, 1, -1, A_BOLD, "target directory: ");
	x += ui_text(LINES - 4, 1 + x, -1, A_NORMAL, "%s", u->ex_dir);
	ui_text(LINES - 4, 1 + x, 1, A_REVERSE, " ");
	draw_message(u, LINES - 3);
	const char *kv[] = {"Tab", "format", "type", "the directory", "Enter", "export", "Esc", "cancel", NULL};
	draw_keys(u, LINES - 2, kv);
	draw_status(u);
}

/* Seconds job g still needs by the mean duration of each kind of command so
 * far (now: the clock), or -1 while a kind it needs has no measurement. */
static double
prog_left(const ui_prog *g, double now)
{
	static const int order[JC_COUNT] = {JC_CALIB, JC_SEARCH, JC_QUANT, JC_NEXT};
	double mean[JC_COUNT], left, per = 0;
	int cur = jc_of(g->cmd), after = 0;

	for (int k = 0; k < JC_COUNT; k++)
		mean[k] = g->est_n[k] > 0 ? g->est_sum[k] / g->est_n[k] : -1;
	if (cur < 0 || mean[cur] < 0)
		return -1;
	left = mean[cur] - (now - g->t_cmd);
	if (left < 0)
		left = 0;
	if (g->kind != JOB_ALL)
		return left;
	for (int i = 0; i < JC_COUNT; i++) {
		int k = order[i];
		if (k == JC_SEARCH && !g->search)
			continue;
		if (mean[k] < 0)
			return -1;
		per += mean[k];
		if (after)
			left += mean[k];
		if (k == cur)
			after = 1;
	}
	return left + per * (g->until - g->layer - 1);
}

/* The progress screen while a job owns the pipeline: drawn from the
 * progress record alone (and the session's constants). */
static void
draw_busy(ui *u)
{
	ui_prog g;
	ui_done_layer done[64];
	int nd, first_d;

	pthread_mutex_lock(&u->pg.mu);
	g = u->pg;
	nd = g.n_done < 64 ? g.n_done : 64;
	first_d = g.n_done - nd;
	memcpy(done, u->pg.done_l + first_d, (size_t)nd * sizeof done[0]);
	pthread_mutex_unlock(&u->pg.mu);
	double now = u->clock(), left = prog_left(&g, now), el = now - g.t_job;

	ui_fill(0, 0, -1, ui_title_attr(&u->g));
	if (g.kind == JOB_ALL)
		ui_text(0, 0, -1, ui_title_attr(&u->g), " masq%sworking%srun %s layer from %d to %d", u->g.sep, u->g.sep,
		    g.until >= g.n_layers ? "every" : "each", g.first, g.until - 1);
	else
		ui_text(0, 0, -1, ui_title_attr(&u->g), " masq%sworking%s%s", u->g.sep, u->g.sep, g.cmd);
	if (g.cmd[0] != '\0')
		ui_text(2, 1, -1, A_BOLD, "layer %d of 0-%d: %s, running for %.1fs", g.layer, g.n_layers - 1, g.cmd,
		    now - g.t_cmd);
	double frac = left >= 0 && el + left > 0 ? el / (el + left) : 0;
	int bw = COLS - 12;
	ui_text(4, 1, -1, A_NORMAL, "[");
	ui_bar_draw(&u->g, 4, 2, bw, frac, ui_working_attr(&u->g));
	ui_text(4, 2 + bw, -1, A_NORMAL, "]");
	if (left >= 0)
		ui_text(4, 4 + bw, -1, A_NORMAL, "%3.0f%%", 100.0 * frac);
	int x = ui_text(5, 1, -1, A_NORMAL, "elapsed %.1fs", el);
	if (g.tokens_done > 0 && el > 0)
		x += ui_text(5, 1 + x, -1, A_NORMAL, "   %.0f tokens/s", (double)g.tokens_done / el);
	if (left >= 0)
		ui_text(5, 1 + x, -1, A_NORMAL, "   about %.1fs left", left);
	else
		ui_text(5, 1 + x, -1, A_DIM, "   time left: estimating (no %s measured yet)", g.cmd[0] ? g.cmd : "command");
	int y = 7;
	if (nd > 0) {
		ui_text(y++, 1, -1, A_BOLD, "committed in this run   time %7s%7s%7s%7s", "text", "vision", "audio", "all");
		int room = LINES - 4 - y, i0 = nd > room ? nd - room : 0;
		for (int i = i0; i < nd; i++, y++) {
			x = ui_text(y, 1, -1, A_NORMAL, "  layer %-5d %8.2fs ", done[i].layer, done[i].secs);
			for (int m = 0; m < STATS_ROWS; m++) {
				char t[16];
				ui_fmt_db(t, sizeof t, 7, done[i].sqnr[m]);
				x += ui_text(y, 1 + x, 7, ui_sqnr_attr(&u->g, done[i].sqnr[m], u->o.sqnr_bad, u->o.sqnr_good),
				    "%s", t);
			}
		}
	}
	if (u->prompt != PR_NONE)
		draw_message(u, LINES - 3);
	else
		ui_text(LINES - 3, 0, -1, ui_working_attr(&u->g), "%s", u->busy_msg);
	const char *kv_all[] = {"Esc", "stop after this command", "Q", "quit when done", NULL};
	draw_keys(u, LINES - 2, g.kind == JOB_ALL ? kv_all : kv_all + 2);
	int a = ui_title_attr(&u->g);
	ui_fill(LINES - 1, 0, -1, a);
	ui_text(LINES - 1, 0, COLS - 8, a, " session %lld%s%s%sworking", (long long)u->s->id, u->g.sep,
	    u->o.db_label ? u->o.db_label : "", u->g.sep);
	ui_text(LINES - 1, COLS - 7, 7, a, "? help");
}

void
ui_draw(ui *u)
{
	erase();
	if (COLS < 80 || LINES < 24) {
		ui_text(0, 0, -1, A_BOLD, "masq needs a terminal of at least 80x24");
		ui_text(1, 0, -1, A_NORMAL, "(this one is %dx%d); Q quits", COLS, LINES);
		refresh();
		return;
	}
	if (u->busy) {
		draw_busy(u);
		refresh();
		return;
	}
	switch (u->screen) {
	case SCR_LIST: draw_list(u); break;
	case SCR_LAYER: draw_layer(u); break;
	case SCR_HELP: draw_help(u); break;
	case SCR_EXPORT: draw_export(u); break;
	case SCR_OVERVIEW: draw_overview(u); break;
	}
	refresh();
}

/* ---- life cycle -------------------------------------------------------------------- */

void
ui_opts_default(ui_opts *o)
{
	memset(o, 0, sizeof *o);
	o->color = -1;
	o->sqnr_bad = 20.0;
	o->sqnr_good = 30.0;
}

/* Pick the character set and colour from the locale, the options and NO_COLOR. */
static void
gfx_setup(ui *u)
{
	const char *nc = getenv("NO_COLOR");
	int color = u->o.color < 0 ? !(nc != NULL && *nc != '\0') : u->o.color;
	ui_gfx_init(&u->g, u->locale_utf8 && !u->o.ascii, color);
}

ui *
ui_new(sess *s, const ui_opts *o)
{
	ui *u = xcalloc(1, sizeof *u);
	const char *cs = nl_langinfo(CODESET);

	u->s = s;
	u->o = *o;
	u->locale_utf8 = cs != NULL && strcmp(cs, "UTF-8") == 0;
	int n = s->p.n_layers > 0 ? s->p.n_layers : 1;
	u->calibrated_here = xcalloc((size_t)n, 1);
	u->quantized_here = xcalloc((size_t)n, 1);
	u->sel = s->p.layer < s->p.n_layers ? s->p.layer : s->p.n_layers - 1;
	if (u->sel < 0)
		u->sel = 0;
	u->row = MOD_VISION;
	u->ex_fmt = EXPORT_MASQUANT;
	u->ov_col = OV_LAYER;
	u->ov_thr = o->sqnr_bad;
	u->clock = masq_now;
	pthread_mutex_init(&u->pg.mu, NULL);
	u->pg.n_layers = s->p.n_layers;
	u->pg.tokens = s->c.n_tokens;
	u->pg.done_l = xcalloc((size_t)n, sizeof *u->pg.done_l);
	/* estimates from the committed layers' times until this UI measures its own */
	for (int l = 0; l < s->p.layer && l < s->p.n_layers; l++) {
		const pipe_layer_result *r = &s->p.results[l];
		const double t[3] = {r->t_calib, r->t_search, r->t_quant};
		const int k[3] = {JC_CALIB, JC_SEARCH, JC_QUANT};
		for (int i = 0; i < 3; i++)
			if (r->done && t[i] > 0) {
				u->pg.est_sum[k[i]] += t[i];
				u->pg.est_n[k[i]]++;
			}
	}
	keypad(stdscr, TRUE);
	noecho();
	raw();
	nonl();
	curs_set(0);
	set_escdelay(25);
	gfx_setup(u);
	msg_set(u, MSG_INFO, "c calibrates layer %d, a runs every layer, ? lists the keys", s->p.layer);
	return u;
}

void
ui_free(ui *u)
{
	if (u == NULL)
		return;
	if (u->busy && !u->sync)
		pthread_join(u->th, NULL);
	pthread_mutex_destroy(&u->pg.mu);
	free(u->pg.done_l);
	json_decref(u->ex_list);
	free(u->calibrated_here);
	free(u->quantized_here);
	free(u);
}

int
ui_step(ui *u)
{
	int ch = getch(), was = u->busy;
	job_poll(u);
	if (ch == ERR) {
		if (was && !u->quit)
			ui_draw(u);
		return u->quit;
	}
	handle_key(u, ch);
	if (!u->quit)
		ui_draw(u);
	return u->quit;
}

void
ui_set_sync(ui *u, int sync, void (*hook)(void *), void *arg)
{
	u->sync = sync;
	u->busy_hook = hook;
	u->busy_arg = arg;
}

void
ui_set_clock(ui *u, double (*clock)(void))
{
	u->clock = clock != NULL ? clock : masq_now;
}

void
ui_set_ascii(ui *u, int ascii)
{
	u->o.ascii = ascii;
	u->g.utf8 = u->locale_utf8 && !ascii;
	u->g.sep = u->g.utf8 ? " \xc2\xb7 " : " | ";
	u->g.updown = u->g.utf8 ? "\xe2\x86\x91\xe2\x86\x93" : "Up/Down";
	u->g.leftright = u->g.utf8 ? "\xe2\x86\x90\xe2\x86\x92" : "Left/Right";
}

int
ui_preview_get(const ui *u, pipe_preview *out, int *grp, int *mod)
{
	if (!u->pv_valid)
		return 0;
	*out = u->pv;
	*grp = u->pv_grp;
	*mod = u->pv_mod;
	return 1;
}

void
ui_screen_dump(FILE *fp)
{
	cchar_t cells[1024];
	for (int y = 0; y < LINES; y++) {
		int n = COLS < 1023 ? COLS : 1023;
		char line[8192];
		size_t len = 0, keep = 0;
		mbstate_t ps;
		memset(&ps, 0, sizeof ps);
		memset(cells, 0, sizeof cells);
		mvwin_wchnstr(curscr, y, 0, cells, n);
		for (int x = 0; x < n; x++) {
			wchar_t wc[CCHARW_MAX + 1];
			attr_t at;
			short pair;
			if (getcchar(&cells[x], wc, &at, &pair, NULL) == ERR || wc[0] == 0)
				wc[0] = L' ';
			char mb[MB_LEN_MAX];
			size_t k = wcrtomb(mb, wc[0], &ps);
			if (k == (size_t)-1) {
				mb[0] = '?';
				k = 1;
			}
			if (len + k >= sizeof line)
				break;
			memcpy(line + len, mb, k);
			len += k;
			if (wc[0] != L' ')
				keep = len;
		}
		fprintf(fp, "%.*s\n", (int)keep, line);
	}
}

/* fatal()'s clean-up: give the terminal back. */
static void
endwin_hook(void)
{
	if (!isendwin())
		endwin();
}

int
ui_run(sess *s, const ui_opts *o, masq_err *err)
{
	ui *u;
	SCREEN *scr;

	setlocale(LC_CTYPE, "");
	if ((scr = newterm(NULL, stdout, stdin)) == NULL)
		return masq_err_set(err, MASQ_ERR_USAGE, "cannot start curses on this terminal (TERM=%s)",
		    getenv("TERM") ? getenv("TERM") : "");
	set_term(scr);
	masq_set_fatal_hook(endwin_hook);
	u = ui_new(s, o);
	timeout(100);	/* redraw the progress of a running job ten times a second */
	ui_draw(u);
	while (!ui_step(u))
		;
	ui_free(u);
	endwin();
	delscreen(scr);
	masq_set_fatal_hook(NULL);
	return 0;
}
