/*
 * act.c: what the keys do: each entry of the key table names an action;
 * the actions that change the session issue its commands (short ones
 * here, long work as a job), the rest move the screens.  Prompts and the
 * command line live here too.
 */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ui/internal.h"

/* ---- commands ------------------------------------------------------------------ */

int
ui_run_cmd(ui *u, int cmd, json_t *args, json_t **res)
{
	masq_err err = {0};
	int l = ui_cursor(u);

	if (l >= 0)
		ui_msg(u, MSG_WORKING, "working: layer %d %s...", l, sess_cmds[cmd].name);
	else
		ui_msg(u, MSG_WORKING, "working: %s...", sess_cmds[cmd].name);
	ui_draw(u);
	int rc = sess_dispatch(u->s, cmd, args, res, &err);
	json_decref(args);
	if (rc < 0) {
		ui_msg(u, MSG_ERROR, "%s: %s", sess_cmds[cmd].name, err.msg);
		return -1;
	}
	ui_msg(u, MSG_INFO, "%s done", sess_cmds[cmd].name);
	return 0;
}

void
ui_issue(ui *u, int cmd, json_t *args)
{
	const sess_view *v = sess_view_get(u->s);
	if ((sess_cmds[cmd].flags & SCF_LAYER) && v->cursor >= v->n_layers) {
		json_decref(args);
		ui_msg(u, MSG_ERROR, "every layer is committed: %s finishes", ui_key_for_cmd(SC_FINISH, u->screen));
		return;
	}
	if (cmd == SC_NEXT && !sess_layer_linears_known(u->s, v->cursor)) {
		/* a resumed session may hold the cursor layer's recorded result
		 * without its output: say how to get there, rather than fail */
		json_decref(args);
		ui_msg(u, MSG_ERROR, "layer %d is not quantized yet: %s calibrates, %s quantizes", v->cursor,
		    ui_key_for_cmd(SC_CALIBRATE, u->screen), ui_key_for_cmd(SC_QUANTIZE, u->screen));
		return;
	}
	if (cmd == SC_QUANTIZE && sess_layer_needs_learning(u->s, v->cursor) &&
	    sess_layer_state(u->s, v->cursor) != SLS_PENDING) {
		/* the layer's setting learns: learn, then quantize, one job */
		ui_job_start_pair(u, SC_TRAIN, SC_QUANTIZE, args);
		return;
	}
	if (sess_cmds[cmd].flags & SCF_LONG) {
		ui_job_start_cmd(u, cmd, args);
		return;
	}
	json_t *res = NULL;
	if (ui_run_cmd(u, cmd, args, &res) == 0) {
		char *t = json_dumps(res, JSON_COMPACT | JSON_SORT_KEYS);
		ui_msg(u, MSG_INFO, "%s: %s", sess_cmds[cmd].name, t ? t : "done");
		free(t);
	}
	json_decref(res);
	ui_preview_refresh(u);
}

/* ---- the preview ------------------------------------------------------------------ */

void
ui_preview_clear(ui *u)
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
	if (!u->cmp_on || u->busy || u->screen != SCR_LAYER || u->view != ui_cursor(u) ||
	    sess_cursor_stats(u->s, 0) == NULL || u->site == SITE_DOWN)
		return;
	if (sess_preview_method(u->s, METHOD_SQ, u->site, -1, &u->cmp[0], &err) < 0 ||
	    sess_preview_method(u->s, METHOD_MAS, u->site, -1, &u->cmp[1], &err) < 0) {
		ui_msg(u, MSG_ERROR, "preview: %s", err.msg);
		return;
	}
	u->cmp_valid = 1;
	u->cmp_grp = u->site;
	u->cmp_layer = u->view;
}

void
ui_preview_refresh(ui *u)
{
	masq_err err = {0};

	u->pv_valid = 0;
	compare_refresh(u);
	if (u->busy || u->screen != SCR_LAYER || u->view != ui_cursor(u) || sess_cursor_stats(u->s, 0) == NULL)
		return;
	int mod = u->site == SITE_DOWN || u->row == ALPHA_UNIFIED || !sess_mod_present(u->s, u->row) ? -1 : u->row;
	if (sess_layer_setting(u->s, u->view)->method == METHOD_RTN)
		mod = -1;
	if (sess_preview(u->s, u->site, mod, &u->pv, &err) < 0) {
		ui_msg(u, MSG_ERROR, "preview: %s", err.msg);
		return;
	}
	u->pv_valid = 1;
	u->pv_grp = u->site;
	u->pv_mod = mod;
	u->pv_layer = u->view;
}

/* ---- settings ------------------------------------------------------------------------ */

/* Cycle the target layer's method with set-method. */
static void
act_method(ui *u)
{
	int l = ui_target_layer(u);
	if (l < sess_view_get(u->s)->cursor) {
		ui_msg(u, MSG_ERROR, "layer %d is committed; its method no longer matters", l);
		return;
	}
	int m = (sess_layer_setting(u->s, l)->method + 1) % METHOD_COUNT;
	char ls[16];
	snprintf(ls, sizeof ls, "%d", l);
	if (ui_run_cmd(u, SC_SET_METHOD, json_pack("{s:s, s:s}", "layer", ls, "method", method_name(m)), NULL) == 0)
		ui_msg(u, MSG_INFO, "layer %d: method %s (%s cycles rtn, sq, mas, mas-cmc)", l, method_name(m),
		    ui_key_for_cmd(SC_SET_METHOD, u->screen));
	ui_row_fix(u, l);
	ui_preview_refresh(u);
}

const char *
ui_alpha_blocked(const ui *u)
{
	if (u->view < sess_view_get(u->s)->cursor)
		return "this layer is committed";
	if (u->site == SITE_DOWN)
		return "down_proj is quantized but not smoothed: it has no alpha";
	if (sess_layer_setting(u->s, u->view)->method == METHOD_RTN)
		return "rtn does not smooth: m changes the method";
	return NULL;
}

/* Set alpha of the view's group and alpha row to v, which the command
 * checks as the command line does. */
static void
alpha_set(ui *u, double v)
{
	char ls[16];
	snprintf(ls, sizeof ls, "%d", u->view);
	json_t *a = json_pack("{s:s, s:s, s:s, s:f}", "layer", ls, "linear", smooth_group_name(u->site),
	    "modality", ui_row_name(u->row), "value", v);
	if (ui_run_cmd(u, SC_SET_ALPHA, a, NULL) == 0) {
		ui_preview_refresh(u);
		ui_msg(u, MSG_INFO, "layer %d %s alpha %s %.2f%s", u->view, smooth_group_name(u->site),
		    ui_row_name(u->row), v, u->pv_valid ? ": preview from the token sample; x measures" : "");
	}
}

/* '+' and '-': move the view's alpha by d, when it can be tuned. */
static void
act_alpha_step(ui *u, double d)
{
	const char *why = ui_alpha_blocked(u);
	if (why != NULL) {
		ui_msg(u, MSG_ERROR, "%s", why);
		return;
	}
	ui_row_fix(u, u->view);
	double a = sess_layer_setting(u->s, u->view)->alpha[u->site][u->row];
	if ((d > 0 && a >= 1) || (d < 0 && a <= 0)) {
		ui_msg(u, MSG_ERROR, "alpha is already %g, the end of [0, 1]", a);
		return;
	}
	/* a step lands on the 0.05 grid, within [0, 1] */
	double v = nearbyint((a + d) / ALPHA_STEP) * ALPHA_STEP;
	alpha_set(u, fmin(1.0, fmax(0.0, nearbyint(v * 100.0) / 100.0)));
}

/* ---- prompts ----------------------------------------------------------------------------- */

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
		ui_msg(u, MSG_ERROR, "unknown command '%s' (? lists them)", name);
		return;
	}
	args = json_object();
	for (char *t = strtok_r(NULL, " \t", &save); t != NULL; t = strtok_r(NULL, " \t", &save)) {
		char *eq = strchr(t, '=');
		const sess_arg *a;
		if (eq == NULL) {
			ui_msg(u, MSG_ERROR, "%s: expected KEY=VALUE, not '%s'", name, t);
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
	ui_issue(u, sess_cmd_id(c), args);
}

/* 'g': ask for the layer a run stops before. */
static void
act_run_to_ask(ui *u)
{
	const sess_view *v = sess_view_get(u->s);
	if (v->cursor >= v->n_layers) {
		ui_msg(u, MSG_ERROR, "every layer is committed: %s finishes", ui_key_for_cmd(SC_FINISH, u->screen));
		return;
	}
	ui_prompt_open(u, PR_UNTIL, "run layers %d up to (not including) layer (%d to %d)", v->cursor, v->cursor + 1,
	    v->n_layers);
}

/* Calibrate, quantize and commit every layer from the cursor up to (not
 * including) layer until, as a job. */
static void
act_run_to(ui *u, int until)
{
	const sess_view *v = sess_view_get(u->s);
	if (v->cursor >= v->n_layers) {
		ui_msg(u, MSG_ERROR, "every layer is committed: %s finishes", ui_key_for_cmd(SC_FINISH, u->screen));
		return;
	}
	ui_job_start_run(u, until);
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
			ui_msg(u, MSG_ERROR, "'%s' is not a number", u->pbuf);
			return;
		}
		if (kind == PR_ALPHA) {
			masq_err e = {0};
			if (setting_check_alpha(v, &e) < 0) {
				ui_msg(u, MSG_ERROR, "%s", e.msg);
				return;
			}
			alpha_set(u, v);
			return;
		}
		char ls[16];
		int l = ui_target_layer(u);
		snprintf(ls, sizeof ls, "%d", l);
		const char *lin = u->screen == SCR_LAYER && u->site != SITE_DOWN ? smooth_group_name(u->site) : "*";
		if (ui_run_cmd(u, SC_SET_RANK, json_pack("{s:s, s:s, s:f}", "layer", ls, "linear", lin, "value", v), NULL) == 0)
			ui_msg(u, MSG_INFO, "layer %d %s: rank %g (applies at the next quantize)", l, lin, v);
	} else if (kind == PR_BITS) {
		int w, a;
		char tail;
		if (sscanf(u->pbuf, "%d %d%c", &w, &a, &tail) != 2) {
			ui_msg(u, MSG_ERROR, "expected two numbers, weight and activation bits: '%s'", u->pbuf);
			return;
		}
		if (ui_run_cmd(u, SC_SET_BITS, json_pack("{s:i, s:i}", "wbits", w, "abits", a), NULL) == 0)
			ui_msg(u, MSG_INFO, "W%dA%d from the next quantize on", w, a);
	} else if (kind == PR_COMMAND) {
		act_command_line(u, u->pbuf);
	} else if (kind == PR_UNTIL) {
		long v = strtol(u->pbuf, &end, 10);
		const sess_view *vw = sess_view_get(u->s);
		if (end == u->pbuf || *end != '\0') {
			ui_msg(u, MSG_ERROR, "'%s' is not a layer number", u->pbuf);
			return;
		}
		if (v <= vw->cursor || v > vw->n_layers) {
			ui_msg(u, MSG_ERROR, "layer %ld: a run from the cursor (layer %d) stops before a layer from %d to %d",
			    v, vw->cursor, vw->cursor + 1, vw->n_layers);
			return;
		}
		act_run_to(u, (int)v);
	} else if (kind == PR_DIFF) {
		long v = strtol(u->pbuf, &end, 10);
		if (end == u->pbuf || *end != '\0' || v < 1) {
			ui_msg(u, MSG_ERROR, "'%s' is not a session id", u->pbuf);
			return;
		}
		ui_diff_open(u, v);
	} else if (kind == PR_THRESH) {
		double v = strtod(u->pbuf, &end);
		if (end == u->pbuf || *end != '\0' || !isfinite(v)) {
			ui_msg(u, MSG_ERROR, "'%s' is not a number", u->pbuf);
			return;
		}
		u->ov_thr = v;
		ui_msg(u, MSG_INFO, "SQNR threshold %.1f dB", v);
	}
}

void
ui_prompt_key(ui *u, int ch)
{
	size_t n = strlen(u->pbuf);
	if (u->prompt == PR_QUIT) {
		u->prompt = PR_NONE;
		if (ch == 'y' || ch == 'Y')
			u->quit = 1;
		else
			ui_msg(u, MSG_INFO, "not quitting");
		return;
	}
	if (u->prompt == PR_RUN_ALL) {
		u->prompt = PR_NONE;
		if (ch == 'y' || ch == 'Y')
			act_run_to(u, sess_view_get(u->s)->n_layers);
		else
			ui_msg(u, MSG_INFO, "nothing run");
		return;
	}
	if (ch == KEY_ESC || ch == KEY_CTRL_C) {
		u->prompt = PR_NONE;
		ui_msg(u, MSG_INFO, "cancelled");
	} else if (ch == '\n' || ch == '\r' || ch == KEY_ENTER) {
		prompt_accept(u);
	} else if (ch == KEY_BACKSPACE || ch == 127 || ch == 8) {
		if (n > 0)
			u->pbuf[n - 1] = '\0';
	} else if (ch == KEY_CTRL_U) {
		u->pbuf[0] = '\0';
	} else if (ch >= 32 && ch < 127 && n + 1 < sizeof u->pbuf) {
		u->pbuf[n] = (char)ch;
		u->pbuf[n + 1] = '\0';
	}
}

/* ---- the screens' moves -------------------------------------------------------------------- */

void
ui_view_open(ui *u, int l)
{
	u->screen = SCR_LAYER;
	u->view_back = SCR_LIST;
	u->view = l;
	ui_row_fix(u, l);
	ui_preview_refresh(u);
	int c = ui_cursor(u);
	if (c < 0)
		ui_msg(u, MSG_INFO, "every layer is committed: the statistics were released");
	else if (l != c || sess_cursor_stats(u->s, 0) == NULL)
		ui_msg(u, MSG_INFO, "statistics are kept for the cursor's calibrated layer only; %s calibrates layer %d",
		    ui_key_for_cmd(SC_CALIBRATE, SCR_LAYER), c);
}

/* Move the layer view's selection of site, group or alpha row. */
static void
layer_move(ui *u, int action)
{
	int rows[ALPHA_ROWS], nr = ui_alpha_rows(u, u->view, rows), i;
	switch (action) {
	case UA_SITE_NEXT: u->site = (u->site + 1) % SITE_COUNT; break;
	case UA_SITE_PREV: u->site = (u->site + SITE_COUNT - 1) % SITE_COUNT; break;
	case UA_GROUP_PREV: u->site = u->site == SITE_DOWN ? GRP_GATEUP : (u->site + GRP_COUNT - 1) % GRP_COUNT; break;
	case UA_GROUP_NEXT: u->site = u->site == SITE_DOWN ? GRP_QKV : (u->site + 1) % GRP_COUNT; break;
	case UA_ROW_PREV: case UA_ROW_NEXT:
		for (i = 0; i < nr && rows[i] != u->row; i++)
			;
		if (nr > 0)
			u->row = rows[i >= nr ? 0 : (i + (action == UA_ROW_NEXT ? 1 : nr - 1)) % nr];
		break;
	}
	ui_preview_refresh(u);
}

void
ui_act(ui *u, const ui_key *k)
{
	switch (k->action) {
	case UA_CMD: {
		int l = ui_cursor(u), t = ui_target_layer(u);
		if ((sess_cmds[k->cmd].flags & SCF_LAYER) && l >= 0 && t != l) {
			/* one cursor: every key acts on the highlighted layer */
			ui_msg(u, MSG_ERROR, "%s works on the cursor's layer %d (marked >), not layer %d: %s", k->name, l, t,
			    t < l ? "it is committed" : "g runs up to it");
			break;
		}
		ui_issue(u, k->cmd, (sess_cmds[k->cmd].flags & SCF_LAYER) && l >= 0 ? json_pack("{s:i}", "layer", l) : NULL);
		break;
	}
	case UA_METHOD: act_method(u); break;
	case UA_UNDO: {
		json_t *res = NULL;
		if (ui_run_cmd(u, SC_UNDO, NULL, &res) == 0) {
			json_t *ls = json_object_get(res, "layers");
			ui_msg(u, MSG_INFO, "undid %s (%zu layer%s)", json_string_value(json_object_get(res, "undid")),
			    json_array_size(ls), json_array_size(ls) == 1 ? "" : "s");
			ui_row_fix(u, ui_target_layer(u));
			ui_preview_refresh(u);
		}
		json_decref(res);
		break;
	}
	case UA_BITS: {
		const sess_view *v = sess_view_get(u->s);
		ui_prompt_open(u, PR_BITS, "bits now W%dA%d; weight and activation bits (e.g. 8 8)", v->wbits, v->abits);
		break;
	}
	case UA_ALPHA: {
		const char *why = u->screen == SCR_LAYER ? ui_alpha_blocked(u) : "alpha is set in the layer view (Enter)";
		if (why != NULL) {
			ui_msg(u, MSG_ERROR, "%s", why);
			break;
		}
		ui_row_fix(u, u->view);
		ui_prompt_open(u, PR_ALPHA, "alpha of layer %d %s %s (0 to 1)", u->view, smooth_group_name(u->site),
		    ui_row_name(u->row));
		break;
	}
	case UA_ALPHA_UP: act_alpha_step(u, ALPHA_STEP); break;
	case UA_ALPHA_DOWN: act_alpha_step(u, -ALPHA_STEP); break;
	case UA_RANK: {
		int l = ui_target_layer(u);
		ui_prompt_open(u, PR_RANK, "rank of layer %d %s (a ratio, a whole rank, or 0 for none)", l,
		    u->screen == SCR_LAYER && u->site != SITE_DOWN ? smooth_group_name(u->site) : "linears");
		break;
	}
	case UA_EXPORT:
		if (u->screen != SCR_EXPORT)
			u->back = u->screen;
		ui_screen_set(u, SCR_EXPORT);
		break;
	case UA_COMMAND: ui_prompt_open(u, PR_COMMAND, "command (NAME KEY=VALUE ...)"); break;
	case UA_RUN_ALL: {
		/* it commits many layers: ask first */
		const sess_view *v = sess_view_get(u->s);
		if (v->cursor >= v->n_layers) {
			ui_msg(u, MSG_ERROR, "every layer is committed: %s finishes", ui_key_for_cmd(SC_FINISH, u->screen));
			break;
		}
		ui_prompt_open(u, PR_RUN_ALL, "run and commit layer%s %d%s%.0d (calibrate, search, learn, quantize, next)? [y/N]",
		    v->n_layers - v->cursor > 1 ? "s" : "", v->cursor, v->n_layers - v->cursor > 1 ? " to " : "",
		    v->n_layers - v->cursor > 1 ? v->n_layers - 1 : 0);
		break;
	}
	case UA_RUN_TO: act_run_to_ask(u); break;
	case UA_DIFF: ui_prompt_open(u, PR_DIFF, "compare with session (id)"); break;
	case UA_HELP:
		u->back = u->screen;
		u->screen = SCR_HELP;
		break;
	case UA_OVERVIEW:
		u->screen = u->screen == SCR_OVERVIEW ? SCR_LIST : SCR_OVERVIEW;
		break;
	case UA_LIST: u->screen = SCR_LIST; break;
	case UA_OPEN: {
		int back = u->screen;
		ui_view_open(u, u->sel);
		u->view_back = back;
		break;
	}
	case UA_BACK:
		u->screen = u->view_back;
		u->sel = u->view;
		ui_preview_clear(u);
		ui_msg(u, MSG_INFO, " ");
		break;
	case UA_SITE_NEXT: case UA_SITE_PREV: case UA_GROUP_PREV: case UA_GROUP_NEXT: case UA_ROW_PREV:
	case UA_ROW_NEXT:
		layer_move(u, k->action);
		break;
	case UA_PANEL:
		u->panel = (u->panel + 1) % PANEL_COUNT;
		ui_msg(u, MSG_INFO, "%s", u->panel == PANEL_SEARCH ? "the alpha search: SQNR against alpha, the chosen alpha marked" :
		    u->panel == PANEL_RANK ? "the rank view: whitened error against rank, effective rank, rank in use" :
		    u->panel == PANEL_PROFILE ? "the range profiles: each modality's per-channel max|x|, sorted, log2 axis" :
		    u->panel == PANEL_LEARN ? "learning: the loss per step, the SQNR before and after per modality" :
		    "the histograms of log2|x| per modality");
		break;
	case UA_COMPARE:
		u->cmp_on = !u->cmp_on;
		ui_msg(u, MSG_INFO, "%s", !u->cmp_on ? "sq against mas: off" : u->site == SITE_DOWN ?
		    "sq against mas: down_proj is not smoothed, another site shows it" :
		    "the first linear's sample SQNR under sq (one factor), mas (per modality)");
		ui_preview_refresh(u);
		break;
	default:
		/* moving in the list and the overview, sorting: the screen's own */
		if (!ui_screen_act(u, k->action))
			ui_msg(u, MSG_ERROR, "%s does nothing here", k->name);
		break;
	}
}
