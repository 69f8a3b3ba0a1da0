/*
 * job.c: long work on a worker thread.  A job is one long command or the
 * session's recipe up to a layer (sess_run_to); while it runs the worker
 * owns the session and writes only the job record, and the UI thread draws
 * the progress screen from that record, ten times a second.  When the
 * worker has returned, the UI thread takes the session back and forms the
 * messages (job_finish).  The screen tests run jobs on the UI thread
 * (ui_set_sync) with a fake clock.
 */
#include "config.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ui/internal.h"

/* The kind of command cmd, as the progress estimates count them; -1 for others. */
static int
jc_of(int cmd)
{
	switch (cmd) {
	case SC_CALIBRATE: return JC_CALIB;
	case SC_SEARCH: return JC_SEARCH;
	case SC_TRAIN: return JC_TRAIN;
	case SC_QUANTIZE: return JC_QUANT;
	case SC_NEXT: return JC_NEXT;
	default: return -1;
	}
}

void
ui_job_init(ui *u)
{
	ui_job *g = &u->job;
	const sess_view *v = sess_view_get(u->s);
	int n = v->n_layers > 0 ? v->n_layers : 1;

	memset(g, 0, sizeof *g);
	pthread_mutex_init(&g->mu, NULL);
	g->n_layers = v->n_layers;
	g->tokens = v->tokens;
	g->session = v->id;
	g->clock = u->clock;
	g->cur = -1;
	g->done_l = xcalloc((size_t)n, sizeof *g->done_l);
	/* estimates from the committed layers' times until this UI measures its own */
	for (int l = 0; l < v->cursor && l < v->n_layers; l++) {
		const pipe_layer_result *r = sess_layer_result(u->s, l);
		const double t[4] = {r->t_calib, r->t_search, r->learn.seconds, r->t_quant};
		const int k[4] = {JC_CALIB, JC_SEARCH, JC_TRAIN, JC_QUANT};
		for (int i = 0; i < 4; i++)
			if (r->done && t[i] > 0) {
				g->est_sum[k[i]] += t[i];
				g->est_n[k[i]]++;
			}
	}
}

void
ui_job_done(ui *u)
{
	if (u->busy && !u->sync)
		pthread_join(u->th, NULL);
	pthread_mutex_destroy(&u->job.mu);
	free(u->job.done_l);
	json_decref(u->job.args);
	json_decref(u->job.res);
}

/* The progress hook (on the worker, or the UI thread when sync): the
 * record, and whether the UI asked to stop. */
static int
job_progress(void *ctx, const sess_progress *p)
{
	ui *u = ctx;
	ui_job *g = &u->job;
	double now = g->clock();
	int stop;

	pthread_mutex_lock(&g->mu);
	if (p->phase == SP_BEFORE) {
		g->cur = p->cmd;
		g->layer = p->layer;
		g->t_cmd = now;
		g->frac = 0;
		g->what[0] = '\0';
		g->step = g->steps = g->n_loss = 0;
		g->loss_every = 1;
	} else if (p->phase == SP_WORK) {
		g->frac = p->frac;
		if (p->what != NULL)
			snprintf(g->what, sizeof g->what, "%s", p->what);
		if (p->steps > 0) {
			g->step = p->step;
			g->steps = p->steps;
			if (p->step % g->loss_every == 0) {
				if (g->n_loss == UI_LOSS_CAP) {
					/* full: keep every other point, and from now on every 2k-th step */
					for (int i = 0; i < UI_LOSS_CAP / 2; i++)
						g->loss[i] = g->loss[2 * i + 1];
					g->n_loss = UI_LOSS_CAP / 2;
					g->loss_every *= 2;
				}
				if (p->step % g->loss_every == 0)
					g->loss[g->n_loss++] = p->loss;
			}
		}
	} else if (p->rc >= 0) {
		int k = jc_of(p->cmd);
		if (k >= 0) {
			g->est_sum[k] += now - g->t_cmd;
			g->est_n[k]++;
		}
		if (k == JC_CALIB || k == JC_QUANT)
			g->tokens_done += g->tokens;
		if (p->cmd == SC_NEXT && g->n_done < g->n_layers) {
			/* the worker owns the session: reading it is safe here */
			const pipe_layer_result *r = sess_layer_result(u->s, p->layer);
			ui_done_layer *d = &g->done_l[g->n_done++];
			d->layer = p->layer;
			d->secs = r->t_calib + r->t_search + r->learn.seconds + r->t_quant;
			for (int m = 0; m < STATS_ROWS; m++)
				d->sqnr[m] = m == STATS_ALL || sess_mod_present(u->s, m) ? r->sqnr[m] : NAN;
		}
	}
	stop = g->stop;
	if (stop && p->phase == SP_BEFORE)
		g->stopped = 1;
	pthread_mutex_unlock(&g->mu);
	if (u->sync && (p->phase == SP_BEFORE || (p->phase == SP_WORK && p->steps > 0)) && !stop) {
		ui_draw(u);
		if (u->busy_hook != NULL)
			u->busy_hook(u->busy_arg);
	}
	return stop;
}

/* The job's body, on the worker. */
static void
job_body(ui *u)
{
	ui_job *g = &u->job;
	masq_err err = {0};
	int rc;

	if (g->kind == JOB_ONE) {
		int cmds[2] = {g->cmd, g->then}, n = g->then >= 0 ? 2 : 1;
		json_t *res = NULL;
		rc = 0;
		sess_set_progress(u->s, job_progress, u);
		for (int i = 0; i < n && rc >= 0; i++) {
			sess_progress p = {.cmd = cmds[i], .phase = SP_BEFORE, .layer = sess_view_get(u->s)->cursor};
			job_progress(u, &p);
			json_decref(res);
			res = NULL;
			rc = sess_dispatch(u->s, cmds[i], g->args, &res, &err);
			p.phase = SP_AFTER;
			p.rc = rc;
			job_progress(u, &p);
		}
		sess_set_progress(u->s, NULL, NULL);
		pthread_mutex_lock(&g->mu);
		g->res = res;
		pthread_mutex_unlock(&g->mu);
	} else {
		rc = sess_run_to(u->s, g->until, job_progress, u, &err);
	}
	pthread_mutex_lock(&g->mu);
	g->rc = rc < 0 ? -1 : 0;
	if (rc < 0) {
		g->failed_cmd = g->cur;
		g->err = err;
	}
	pthread_mutex_unlock(&g->mu);
}

static void *
job_main(void *arg)
{
	ui *u = arg;
	job_body(u);
	pthread_mutex_lock(&u->job.mu);
	u->job.finished = 1;
	pthread_mutex_unlock(&u->job.mu);
	return NULL;
}

/* The message after command cmd succeeded on layer l (UI thread). */
static void
cmd_message(ui *u, int cmd, int l)
{
	const sess_view *v = sess_view_get(u->s);
	const pipe_layer_result *r = sess_layer_result(u->s, l < v->n_layers ? l : v->n_layers - 1);
	char t[STATS_ROWS][16];
	for (int m = 0; m < STATS_ROWS; m++)
		ui_fmt_db(t[m], sizeof t[m], 0, m < MOD_COUNT && !sess_mod_present(u->s, m) ? NAN : r->sqnr[m]);
	switch (cmd) {
	case SC_CALIBRATE:
		ui_msg(u, MSG_INFO, "layer %d calibrated (%.2fs): Enter shows its histograms", l, r->t_calib);
		break;
	case SC_QUANTIZE:
		ui_msg(u, MSG_INFO, "layer %d quantized (%s, %.2fs): SQNR text %s vision %s audio %s dB", l,
		    method_name(r->method), r->t_quant, t[0], t[1], t[2]);
		break;
	case SC_TRAIN: {
		const pipe_learn_result *lr = &r->learn;
		char a[STATS_ROWS][16];
		for (int m = 0; m < STATS_ROWS; m++) {
			int on = m == STATS_ALL || sess_mod_present(u->s, m);
			ui_fmt_db(t[m], sizeof t[m], 0, on ? lr->sqnr_init[m] : NAN);
			ui_fmt_db(a[m], sizeof a[m], 0, on ? lr->sqnr_learned[m] : NAN);
		}
		ui_msg(u, MSG_INFO, "layer %d learned (%d steps, %.1fs): text %s>%s vision %s>%s audio %s>%s dB; %s quantizes",
		    l, lr->steps, lr->seconds, t[0], a[0], t[1], a[1], t[2], a[2], ui_key_for_cmd(SC_QUANTIZE, u->screen));
		u->panel = PANEL_LEARN;	/* show the curve just learned */
		break;
	}
	case SC_SEARCH: {
		const pipe_search *sr = &r->search;
		if (!method_per_modality(sess_layer_setting(u->s, l)->method))
			ui_msg(u, MSG_INFO, "layer %d alpha searched on %d tokens: unified %.2f (%s undoes)", l, sr->tokens,
			    sr->best[ALPHA_UNIFIED], ui_key_for_cmd(SC_UNDO, u->screen));
		else
			ui_msg(u, MSG_INFO, "layer %d alpha searched on %d tokens: text %.2f vision %.2f audio %.2f (%s undoes)",
			    l, sr->tokens, sr->best[0], sr->best[1], sr->best[2], ui_key_for_cmd(SC_UNDO, u->screen));
		u->panel = PANEL_SEARCH;	/* show the curve just searched */
		break;
	}
	case SC_NEXT:
		if (v->cursor < v->n_layers)
			ui_msg(u, MSG_INFO, "layer %d committed; the cursor is at layer %d", l, v->cursor);
		else
			ui_msg(u, MSG_INFO, "layer %d committed; every layer is done: %s finishes", l,
			    ui_key_for_cmd(SC_FINISH, SCR_LIST));
		break;
	case SC_FINISH: {
		const pipe_summary *sm = v->summary;
		for (int m = 0; m < STATS_ROWS; m++)
			ui_fmt_db(t[m], sizeof t[m], 0, m < MOD_COUNT && !sess_mod_present(u->s, m) ? NAN : sm->sqnr[m]);
		ui_msg(u, MSG_INFO, "finished: last layer's output SQNR text %s vision %s audio %s all %s dB", t[0], t[1],
		    t[2], t[3]);
		break;
	}
	case SC_EXPORT: {
		json_t *res = u->job.res;
		const char *dropped = json_string_value(json_object_get(res, "dropped"));
		export_report er;
		char sizes[1024];
		sess_export_sizes(res, &er);
		ui_msg(u, MSG_INFO, "exported as %s to %s (%zu files), %s%s%s",
		    json_string_value(json_object_get(u->job.args, "format")),
		    json_string_value(json_object_get(u->job.args, "out")), json_object_size(json_object_get(res, "files")),
		    export_report_sizes(&er, sizes, sizeof sizes), dropped && *dropped ? "; dropped: " : "",
		    dropped && *dropped ? dropped : "");
		if (u->screen == SCR_EXPORT)
			u->screen = u->back;
		break;
	}
	default:
		ui_msg(u, MSG_INFO, "%s done", sess_cmds[cmd].name);
		break;
	}
}

/* On the UI thread once the job has returned: the session is the UI's
 * again; the closing message, the selection, the preview, the quit asked
 * for meanwhile, the keys typed ahead. */
static void
job_finish(ui *u)
{
	ui_job *g = &u->job;
	const sess_view *v = sess_view_get(u->s);
	u->busy = 0;
	if (u->prompt == PR_QUIT)	/* asked while busy, not answered yet: ask on */
		snprintf(u->plabel, sizeof u->plabel, "%s; quit? [y/N]", ui_uncommitted(u) ?
		    "the command is done, the cursor's layer is not committed (a resume redoes it)" : "the command is done");
	if (g->rc < 0) {
		int c = g->kind == JOB_ONE ? g->cmd : g->failed_cmd;
		ui_msg(u, MSG_ERROR, "%s: %s", c >= 0 ? sess_cmds[c].name : "run", g->err.msg);
	} else if (g->kind == JOB_ONE) {
		int last = g->then >= 0 ? g->then : g->cmd;
		cmd_message(u, last, last == SC_NEXT ? v->cursor - 1 : g->layer);
	} else if (g->stopped && v->cursor < v->n_layers) {
		ui_msg(u, MSG_INFO, "stopped before finishing layer %d", v->cursor);
	} else if (v->cursor < v->n_layers) {
		ui_msg(u, MSG_INFO, "layers %d to %d done: the cursor is at layer %d", g->first, v->cursor - 1, v->cursor);
	} else if (!g->stopped) {
		ui_msg(u, MSG_INFO, "layers %d to %d done: %s finishes, %s exports", g->first, v->n_layers - 1,
		    ui_key_for_cmd(SC_FINISH, SCR_LIST), ui_key_for_cmd(SC_EXPORT, SCR_LIST));
	} else {
		cmd_message(u, SC_NEXT, v->n_layers - 1);
	}
	if (g->n_done > 0 || (g->kind == JOB_ONE && g->cmd == SC_NEXT && g->rc == 0)) {
		u->sel = v->cursor < v->n_layers ? v->cursor : v->n_layers - 1;
		if (u->screen == SCR_LAYER)
			u->view = u->sel;
	}
	ui_preview_refresh(u);
	if (u->quit_after) {
		u->quit = 1;
		u->n_ahead = 0;
	}
	/* the keys typed meanwhile come next, in their order */
	while (u->n_ahead > 0)
		ungetch(u->ahead[--u->n_ahead]);
}

void
ui_job_poll(ui *u)
{
	if (!u->busy || u->sync)
		return;
	pthread_mutex_lock(&u->job.mu);
	int fin = u->job.finished;
	pthread_mutex_unlock(&u->job.mu);
	if (fin) {
		pthread_join(u->th, NULL);
		job_finish(u);
	}
}

/* Start a job of kind (JOB_ONE: cmd with args, taken over; JOB_RUN: the
 * recipe up to until).  From here until job_finish the session belongs to
 * the job. */
static void
job_start(ui *u, int kind, int cmd, json_t *args, int until, int then)
{
	ui_job *g = &u->job;
	const sess_view *v = sess_view_get(u->s);
	int learn = 0;

	for (int l = v->cursor; l < (kind == JOB_RUN ? until : v->cursor + 1) && l < v->n_layers; l++)
		learn |= sess_layer_needs_learning(u->s, l);

	u->quit_after = 0;
	u->n_ahead = 0;
	ui_preview_clear(u);
	pthread_mutex_lock(&g->mu);
	json_decref(g->args);
	json_decref(g->res);
	g->kind = kind;
	g->cmd = cmd;
	g->then = then;
	g->learn = learn;
	g->args = args;
	g->res = NULL;
	g->first = v->cursor;
	g->until = kind == JOB_RUN ? until : v->cursor + 1;
	g->search = v->search;
	g->clock = u->clock;
	g->cur = kind == JOB_ONE ? cmd : -1;
	g->layer = v->cursor;
	g->t_job = g->t_cmd = u->clock();
	g->frac = 0;
	g->step = g->steps = g->n_loss = 0;
	g->loss_every = 1;
	g->tokens_done = 0;
	g->n_done = 0;
	g->stop = 0;
	g->stopped = 0;
	g->rc = 0;
	g->failed_cmd = -1;
	g->finished = 0;
	pthread_mutex_unlock(&g->mu);
	snprintf(u->busy_msg, sizeof u->busy_msg, "%s", kind == JOB_RUN ?
	    "Esc stops after the current command; Q quits when it is done" : "Q quits when it is done");
	u->busy = 1;
	if (u->sync || pthread_create(&u->th, NULL, job_main, u) != 0) {
		job_body(u);
		job_finish(u);
	}
}

void
ui_job_start_cmd(ui *u, int cmd, json_t *args)
{
	job_start(u, JOB_ONE, cmd, args, 0, -1);
}

void
ui_job_start_pair(ui *u, int cmd, int then, json_t *args)
{
	job_start(u, JOB_ONE, cmd, args, 0, then);
}

void
ui_job_start_run(ui *u, int until)
{
	job_start(u, JOB_RUN, -1, NULL, until, -1);
}

void
ui_job_key(ui *u, int ch)
{
	if (u->prompt == PR_QUIT) {
		u->prompt = PR_NONE;
		if (ch == 'y' || ch == 'Y') {
			pthread_mutex_lock(&u->job.mu);
			u->job.stop = 1;
			pthread_mutex_unlock(&u->job.mu);
			u->quit_after = 1;
			snprintf(u->busy_msg, sizeof u->busy_msg, "quitting when the current command is done");
		} else {
			snprintf(u->busy_msg, sizeof u->busy_msg, "not quitting");
		}
		return;
	}
	if (ch == 'Q' || ch == KEY_CTRL_C) {
		ui_prompt_open(u, PR_QUIT, "a command is running; quit when it is done? [y/N]");
	} else if (ch == KEY_ESC && u->job.kind == JOB_RUN) {
		pthread_mutex_lock(&u->job.mu);
		u->job.stop = 1;
		pthread_mutex_unlock(&u->job.mu);
		snprintf(u->busy_msg, sizeof u->busy_msg, "stopping after the current command");
	} else if (u->n_ahead < (int)(sizeof u->ahead / sizeof u->ahead[0])) {
		u->ahead[u->n_ahead++] = ch;
		snprintf(u->busy_msg, sizeof u->busy_msg, "%d key%s typed ahead, read when this is done", u->n_ahead,
		    u->n_ahead == 1 ? "" : "s");
	}
}

/* ---- the progress screen ----------------------------------------------------------------
 * Drawn from the job record alone: the worker owns the session meanwhile. */

/* Seconds job g still needs by the mean duration of each kind of command so
 * far (now: the clock), or -1 while a kind it needs has no measurement. */
static double
prog_left(const ui_job *g, double now)
{
	static const int order[JC_COUNT] = {JC_CALIB, JC_SEARCH, JC_TRAIN, JC_QUANT, JC_NEXT};
	double mean[JC_COUNT], left, per = 0;
	int cur = jc_of(g->cur), after = 0;

	for (int k = 0; k < JC_COUNT; k++)
		mean[k] = g->est_n[k] > 0 ? g->est_sum[k] / g->est_n[k] : -1;
	if (cur == JC_TRAIN && g->step > 0 && g->steps > 0) {
		/* learning reports its steps: its own pace is the estimate */
		double el = now - g->t_cmd;
		left = el * (g->steps - g->step) / g->step;
		if (mean[cur] < 0)
			mean[cur] = el * g->steps / g->step;
	} else if (cur >= 0 && mean[cur] < 0 && g->frac > 0.02) {
		/* no command of this kind measured yet: the pace it reports from inside */
		double el = now - g->t_cmd;
		mean[cur] = el / g->frac;
		left = mean[cur] - el;
	} else {
		if (cur < 0 || mean[cur] < 0)
			return -1;
		left = mean[cur] - (now - g->t_cmd);
	}
	if (left < 0)
		left = 0;
	if (g->then >= 0 && g->kind == JOB_ONE && g->cur != g->then) {
		int t = jc_of(g->then);
		if (t < 0 || mean[t] < 0)
			return -1;
		left += mean[t];
	}
	if (g->kind != JOB_RUN)
		return left;
	for (int i = 0; i < JC_COUNT; i++) {
		int k = order[i];
		if ((k == JC_SEARCH && !g->search) || (k == JC_TRAIN && !g->learn))
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

void
ui_job_draw(ui *u)
{
	ui_job g;
	ui_done_layer done[64];
	int nd, first_d;

	pthread_mutex_lock(&u->job.mu);
	g = u->job;
	nd = g.n_done < 64 ? g.n_done : 64;
	first_d = g.n_done - nd;
	memcpy(done, u->job.done_l + first_d, (size_t)nd * sizeof done[0]);
	pthread_mutex_unlock(&u->job.mu);
	double now = u->clock(), left = prog_left(&g, now), el = now - g.t_job;
	const char *cmd = g.cur >= 0 ? sess_cmds[g.cur].name : "";

	ui_fill(0, 0, -1, ui_title_attr(&u->g));
	if (g.kind == JOB_RUN)
		ui_text(0, 0, -1, ui_title_attr(&u->g), " masq%sworking%srun %s layer from %d to %d", u->g.sep, u->g.sep,
		    g.until >= g.n_layers ? "every" : "each", g.first, g.until - 1);
	else
		ui_text(0, 0, -1, ui_title_attr(&u->g), " masq%sworking%s%s", u->g.sep, u->g.sep, cmd);
	if (cmd[0] != '\0')
		ui_text(2, 1, -1, A_BOLD, "layer %d of 0-%d: %s, running for %.1fs", g.layer, g.n_layers - 1, cmd,
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
		ui_text(5, 1 + x, -1, A_DIM, "   time left: estimating (no %s measured yet)", cmd[0] ? cmd : "command");
	int y = 7;
	if (g.what[0] != '\0' && !(g.cur == SC_TRAIN && g.steps > 0))
		ui_text(6, 1, -1, A_NORMAL, "%s: %3.0f%% of the command, %s", cmd, 100.0 * g.frac, g.what);
	if (g.cur == SC_TRAIN && g.steps > 0) {
		double tc = now - g.t_cmd;
		x = ui_text(6, 1, -1, A_NORMAL, "learning: step %d of %d", g.step, g.steps);
		if (g.step > 0 && tc > 0)
			x += ui_text(6, 1 + x, -1, A_NORMAL, "   %.1f steps/s", g.step / tc);
		if (g.n_loss > 0)
			ui_text(6, 1 + x, -1, A_NORMAL, "   loss %.5g", g.loss[g.n_loss - 1]);
		if (g.n_loss > 1) {
			ui_text(7, 1, -1, A_DIM, "loss per step:");
			ui_draw_sparkline(u, 7, 16, COLS - 18, g.loss, g.n_loss);
		}
		y = 9;
	}
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
		ui_draw_message(u, LINES - 3);
	else
		ui_text(LINES - 3, 0, -1, ui_working_attr(&u->g), "%s", u->busy_msg);
	const char *kv_all[] = {"Esc", "stop after this command", "Q", "quit when done", NULL};
	ui_draw_keys(u, LINES - 2, g.kind == JOB_RUN ? kv_all : kv_all + 2);
	int a = ui_title_attr(&u->g);
	ui_fill(LINES - 1, 0, -1, a);
	ui_text(LINES - 1, 0, COLS - 8, a, " session %lld%s%s%sworking", (long long)g.session, u->g.sep,
	    u->o.db_label ? u->o.db_label : "", u->g.sep);
	ui_text(LINES - 1, COLS - 7, 7, a, "? help");
}
