/*
 * internal.h: what the files of ui/ share: the workbench's state, the
 * screens' ops table (tig's view_ops: a screen is one file and one ops
 * value), the one key table every key comes from, the job record a long
 * command runs with, and the drawing helpers of every screen.
 *
 * Threads: the UI thread owns struct ui and, while no job runs, the
 * session.  A job's worker thread owns the session while it runs and
 * writes nothing but the job record (under job.mu); the UI thread forms
 * every message from that record once the job is done.  curses is only
 * called on the UI thread, under curses_mu, which fatal() takes before it
 * gives the terminal back.
 */
#ifndef MASQ_UI_INTERNAL_H
#define MASQ_UI_INTERNAL_H

#include <pthread.h>

#include <jansson.h>

#include "core/export.h"
#include "core/pipeline.h"
#include "sessions/session.h"
#include "ui/curses.h"
#include "ui/draw.h"
#include "ui/ui.h"

enum ui_scr { SCR_LIST, SCR_LAYER, SCR_OVERVIEW, SCR_HELP, SCR_EXPORT, SCR_DIFF, SCR_COUNT };
#define UI_ON(s) (1u << (s))
#define UI_ON_MAIN (UI_ON(SCR_LIST) | UI_ON(SCR_LAYER) | UI_ON(SCR_OVERVIEW))
#define UI_ON_ALL (UI_ON_MAIN | UI_ON(SCR_HELP) | UI_ON(SCR_DIFF))

enum ui_prompt { PR_NONE, PR_QUIT, PR_RUN_ALL, PR_DIFF, PR_ALPHA, PR_RANK, PR_BITS, PR_COMMAND, PR_THRESH, PR_UNTIL };
enum msg_kind { MSG_INFO, MSG_ERROR, MSG_WORKING };
/* What the top of the layer view shows ('v' cycles). */
enum ui_panel { PANEL_HIST, PANEL_SEARCH, PANEL_RANK, PANEL_PROFILE, PANEL_LEARN, PANEL_COUNT };

#define KEY_CTRL_C 3
#define KEY_CTRL_U 21
#define KEY_ESC 27
#define ALPHA_STEP 0.05

/* ---- the key table (keys.c) ----------------------------------------------------- */

enum ui_action {
	UA_CMD,			/* run .cmd on the cursor's layer (a job when it is long work) */
	UA_METHOD,		/* set-method: cycle the target layer's method */
	UA_BITS,		/* set-bits: typed */
	UA_ALPHA,		/* set-alpha: typed */
	UA_ALPHA_UP, UA_ALPHA_DOWN,	/* set-alpha: one step */
	UA_RANK,		/* set-rank: typed */
	UA_EXPORT,		/* export: the dialog */
	UA_COMMAND,		/* any command, typed by name */
	UA_RUN_ALL, UA_RUN_TO,	/* the recipe as a job */
	UA_HELP, UA_QUIT, UA_OVERVIEW, UA_LIST, UA_OPEN, UA_BACK,
	UA_UP, UA_DOWN, UA_PGUP, UA_PGDN, UA_HOME, UA_END,
	UA_SITE_NEXT, UA_SITE_PREV, UA_GROUP_PREV, UA_GROUP_NEXT, UA_ROW_PREV, UA_ROW_NEXT,
	UA_UNDO,		/* undo: the last setting change */
	UA_DIFF,		/* the diff screen: ask for the session */
	UA_PANEL, UA_COMPARE, UA_SORT_PREV, UA_SORT_NEXT, UA_INVERT, UA_WORST, UA_THRESHOLD, UA_OWN,
	UA_COUNT
};

typedef struct ui_key {
	int key;		/* the key code curses returns */
	const char *name;	/* as help and masq(1) spell it */
	unsigned screens;	/* UI_ON() of the screens it acts on */
	int action;		/* enum ui_action */
	int cmd;		/* the session command it issues (enum sess_cmd_id), -1 for none */
	const char *label;	/* what it does in two or three words (the help screen) */
	const char *help;	/* what it does, one line (masq(1)); NULL for an alias of the entry before */
} ui_key;

/* Every key of the workbench, terminated by a 0 key. */
extern const ui_key ui_keys[];
/* The title of the help line of the keys acting on screens ("layer view"). */
const char *ui_key_section(unsigned screens);
/* The names of entry k and of the entries after it with the same label
 * and screens ("Up/k"; aliases, the entries without help, too when
 * aliases), into names; how many entries that is. */
int ui_key_group(const ui_key *k, int aliases, char *names, size_t n);
/* The position of the help line of screens among the help's lines (the
 * "anywhere" screens share the first). */
int ui_key_section_order(unsigned screens);
/* The entry of key ch on screen scr, or NULL. */
const ui_key *ui_key_find(int ch, int scr);
/* The name of the (first) key that issues command cmd on screen scr, ":"
 * when none does. */
const char *ui_key_for_cmd(int cmd, int scr);

/* ---- the job (job.c) ---------------------------------------------------------------- */

enum job_kind { JOB_NONE, JOB_ONE, JOB_RUN };
/* Long commands, as the progress estimates count them. */
enum job_cmd { JC_CALIB, JC_SEARCH, JC_TRAIN, JC_QUANT, JC_NEXT, JC_COUNT };
#define UI_LOSS_CAP 512	/* loss points the progress screen keeps (older ones thinned) */

/* A layer a job committed, as the progress screen lists it. */
typedef struct ui_done_layer {
	int layer;
	double secs;			/* calibrate + search + quantize, the pipeline's own times */
	double sqnr[STATS_ROWS];	/* its output's SQNR (NAN: modality absent) */
} ui_done_layer;

/* The record of a job: the UI thread fills the set-up before the worker
 * starts; the worker writes the rest under mu; the UI thread reads it
 * under mu (the progress screen) and, once finished, forms the messages. */
typedef struct ui_job {
	pthread_mutex_t mu;
	/* set-up (constant while the job runs) */
	int kind;		/* enum job_kind */
	int cmd;		/* JOB_ONE: the command */
	json_t *args;		/* JOB_ONE: its arguments (owned) */
	int first, until;	/* JOB_RUN: from the cursor up to (not including) until */
	int then;		/* JOB_ONE: a command to run after cmd succeeded (quantize after learning), or -1 */
	int n_layers, tokens, search, learn;
	int64_t session;	/* the session's id, for the status line */
	double (*clock)(void);
	/* written by the worker */
	int cur;		/* the command running (enum sess_cmd_id), -1 before the first */
	int layer;		/* its layer */
	double t_job, t_cmd;	/* the clock at the job's and at the command's start */
	double frac;		/* the part of the command done (0 until it reports) */
	char what[96];		/* what it reported doing, or "" */
	int step, steps;	/* train-layer: the step done of steps */
	double loss[UI_LOSS_CAP];	/* its losses so far, every loss_every-th */
	int n_loss, loss_every;
	double est_sum[JC_COUNT];	/* seconds of the finished commands of each kind (kept across jobs) */
	int est_n[JC_COUNT];
	long long tokens_done;
	ui_done_layer *done_l;	/* (n_layers) the layers this job committed */
	int n_done;
	int stopped;		/* it stopped because the UI asked */
	int rc;			/* -1 when a command failed */
	int failed_cmd;		/* which */
	masq_err err;		/* and why */
	json_t *res;		/* JOB_ONE: the command's result */
	int finished;		/* the worker has returned */
	/* written by the UI thread */
	int stop;		/* stop before the next command */
} ui_job;

/* ---- the workbench ---------------------------------------------------------------------- */

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
	int view_back;		/* where Esc in the layer view returns */
	int panel;		/* layer view: enum ui_panel */
	int pv_valid, pv_grp, pv_mod, pv_layer;
	pipe_preview pv;
	/* 'u': the group's previews under sq and under mas, with the alpha preview */
	int cmp_on, cmp_valid, cmp_grp, cmp_layer;
	pipe_preview cmp[2];	/* [0] sq (the unified factor), [1] mas (per-modality factors) */
	char msg[1024];
	int msg_kind;
	int prompt;
	char plabel[160], pbuf[256];
	/* export dialog */
	int ex_fmt, ex_edited;
	char ex_dir[256];
	json_t *ex_list;	/* export_preview's tensor list, or NULL */
	json_t *diff_rows;	/* the diff screen's rows (sess_diff), or NULL */
	long diff_other;	/* the session compared with */
	int diff_top, diff_back;	/* first row shown; the screen to return to */
	export_report ex_rep;
	char ex_err[1024];
	int quit;
	/* the overview */
	int ov_col, ov_desc, ov_top;	/* sort column (OV_*), descending, first row shown */
	int ov_own;		/* the SQNR columns show: 0 the output, 1 the error each layer adds
				   itself, 2 the output on the held-out sequences */
	double ov_thr;		/* SQNR threshold (dB) below which figures are marked */
	/* the job */
	int busy;		/* a job owns the session: draw its record only */
	int sync;		/* run jobs on the UI thread (tests) */
	void (*busy_hook)(void *);	/* sync: called after each progress screen */
	void *busy_arg;
	double (*clock)(void);	/* seconds, for the progress figures */
	pthread_t th;
	ui_job job;
	int quit_after;		/* quit once the job is done */
	char busy_msg[256];	/* the message line while busy */
	int ahead[16], n_ahead;	/* keys typed while busy, read when the job is done */
};

/* A screen (tig's view_ops). */
typedef struct ui_screen_ops {
	const char *name;
	void (*open)(ui *u);	/* on entering it (may be NULL) */
	/* its own handling of a key before the key table (the export
	 * dialog's typing); 1 when handled (may be NULL) */
	int (*key)(ui *u, int ch);
	/* the actions of the key table that are the screen's own (moving
	 * through its rows, sorting); 1 when handled (may be NULL) */
	int (*act)(ui *u, int action);
	void (*draw)(ui *u);
} ui_screen_ops;

extern const ui_screen_ops ui_scr_list, ui_scr_layer, ui_scr_overview, ui_scr_help, ui_scr_export, ui_scr_diff;
/* D: show this session against session id (scr_diff.c). */
void ui_diff_open(ui *u, long id);

/* ---- shared helpers (ui.c) ------------------------------------------------------------------ */

void ui_msg(ui *u, int kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void ui_prompt_open(ui *u, int kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void ui_screen_set(ui *u, int scr);
/* Let the current screen act on one of its own actions; 1 when it did. */
int ui_screen_act(ui *u, int action);
void ui_draw_status(ui *u);
void ui_draw_message(ui *u, int y);
/* Key hints: pairs of key and label, as many as fit, at row y. */
void ui_draw_keys(ui *u, int y, const char *const *kv);
/* The cursor's layer, or -1 when every layer is committed. */
int ui_cursor(const ui *u);
/* The cursor's layer has work that a resume would redo. */
int ui_uncommitted(const ui *u);
/* Alpha rows the method of layer l tunes, into rows; how many. */
int ui_alpha_rows(const ui *u, int l, int *rows);
/* The name of an alpha row, as set-alpha takes it. */
const char *ui_row_name(int row);
/* Make u->row one of layer l's alpha rows (vision first by default). */
void ui_row_fix(ui *u, int l);
/* The layer commands act on: the view's in the layer view, else the selection. */
int ui_target_layer(const ui *u);

/* ---- the layer view's panels (scr_panels.c) ---------------------------------------------------- */

/* The range of non-empty histogram bins over the modalities present at
 * site st (bin 0 left out); 0 when empty. */
int ui_hist_range(const ui *u, const site_stats *st, int *b0, int *b1);
void ui_draw_search_panel(ui *u, int l, int y, int pw, int hh);
void ui_draw_rank_panel(ui *u, int l, int y, int hh);
/* Layer l's learning: the loss per step, the SQNR before and after per modality. */
void ui_draw_learn_panel(ui *u, int l, int y, int pw, int hh);
/* v (n) as one row of w block characters from x, lowest to highest. */
void ui_draw_sparkline(ui *u, int y, int x, int w, const double *v, int n);
void ui_draw_profile_panel(ui *u, const site_stats *ss, int y, int pw, int hh);

/* ---- actions (act.c) ------------------------------------------------------------------------- */

/* Act on key entry k. */
void ui_act(ui *u, const ui_key *k);
/* Issue command cmd with args (taken over): a job when it is long work,
 * else at once, its result the message. */
void ui_issue(ui *u, int cmd, json_t *args);
/* Run a short command now (a reference to args is taken over); the error
 * becomes the message.  0 or -1. */
int ui_run_cmd(ui *u, int cmd, json_t *args, json_t **res);
void ui_prompt_key(ui *u, int ch);
void ui_preview_clear(ui *u);
void ui_preview_refresh(ui *u);
/* Open the layer view on layer l. */
void ui_view_open(ui *u, int l);
/* Why alpha cannot be tuned in the layer view right now, or NULL. */
const char *ui_alpha_blocked(const ui *u);

/* ---- jobs (job.c) ------------------------------------------------------------------------------ */

void ui_job_init(ui *u);
void ui_job_done(ui *u);
/* Start command cmd (args taken over) as a job, or the recipe up to until. */
void ui_job_start_cmd(ui *u, int cmd, json_t *args);
/* cmd, then (when it succeeded) `then` with the same arguments, as one job. */
void ui_job_start_pair(ui *u, int cmd, int then, json_t *args);
void ui_job_start_run(ui *u, int until);
/* Join the worker when it has returned (UI thread). */
void ui_job_poll(ui *u);
/* A key while a job runs. */
void ui_job_key(ui *u, int ch);
/* The progress screen. */
void ui_job_draw(ui *u);

#endif
