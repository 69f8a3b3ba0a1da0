/*
 * ui.c: the workbench's life cycle, its key loop (a prompt, a job, the
 * screen's own keys, then the key table), the screens' dispatch, the
 * helpers every screen draws with, and the screen dump of the tests.
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

#include "ui/internal.h"

static const ui_screen_ops *const screens[SCR_COUNT] = {
	[SCR_LIST] = &ui_scr_list, [SCR_LAYER] = &ui_scr_layer, [SCR_OVERVIEW] = &ui_scr_overview,
	[SCR_HELP] = &ui_scr_help, [SCR_EXPORT] = &ui_scr_export, [SCR_DIFF] = &ui_scr_diff,
};

/* curses is called under this lock; fatal() takes it before endwin, so a
 * worker that dies does not tear the terminal down under the UI thread. */
static pthread_mutex_t curses_mu;
static pthread_once_t curses_mu_once = PTHREAD_ONCE_INIT;

static void
curses_mu_init(void)
{
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&curses_mu, &a);
	pthread_mutexattr_destroy(&a);
}

/* ---- helpers -------------------------------------------------------------------- */

void
ui_msg(ui *u, int kind, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(u->msg, sizeof u->msg, fmt, ap);
	va_end(ap);
	u->msg_kind = kind;
}

void
ui_prompt_open(ui *u, int kind, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(u->plabel, sizeof u->plabel, fmt, ap);
	va_end(ap);
	u->prompt = kind;
	u->pbuf[0] = '\0';
}

void
ui_screen_set(ui *u, int scr)
{
	u->screen = scr;
	if (screens[scr]->open != NULL)
		screens[scr]->open(u);
}

int
ui_screen_act(ui *u, int action)
{
	return screens[u->screen]->act != NULL && screens[u->screen]->act(u, action);
}

int
ui_cursor(const ui *u)
{
	const sess_view *v = sess_view_get(u->s);
	return v->cursor < v->n_layers ? v->cursor : -1;
}

int
ui_uncommitted(const ui *u)
{
	int l = ui_cursor(u), st = sess_layer_state(u->s, l);
	return l >= 0 && st != SLS_PENDING;
}

int
ui_alpha_rows(const ui *u, int l, int *rows)
{
	int n = 0, method = sess_layer_setting(u->s, l)->method;
	if (method == METHOD_SQ || method == METHOD_USQ) {
		rows[n++] = ALPHA_UNIFIED;
	} else if (method != METHOD_RTN) {
		for (int m = 0; m < MOD_COUNT; m++)
			if (sess_mod_present(u->s, m))
				rows[n++] = m;
	}
	return n;
}

const char *
ui_row_name(int row)
{
	return row == ALPHA_UNIFIED ? "unified" : modality_name(row);
}

void
ui_row_fix(ui *u, int l)
{
	int rows[ALPHA_ROWS], n = ui_alpha_rows(u, l, rows);
	for (int i = 0; i < n; i++)
		if (rows[i] == u->row)
			return;
	u->row = n ? rows[0] : MOD_VISION;
	for (int i = 0; i < n; i++)
		if (rows[i] == MOD_VISION)
			u->row = MOD_VISION;
}

int
ui_target_layer(const ui *u)
{
	return u->screen == SCR_LAYER ? u->view : u->sel;
}

void
ui_draw_status(ui *u)
{
	const sess_view *v = sess_view_get(u->s);
	char where[160];
	int l = ui_cursor(u), st = sess_layer_state(u->s, l);

	if (v->finished)
		snprintf(where, sizeof where, "finished");
	else if (l < 0)
		snprintf(where, sizeof where, "all %d layers committed", v->n_layers);
	else if (st != SLS_PENDING)
		snprintf(where, sizeof where, "cursor layer %d %s, not committed", l, sess_layer_state_name(st));
	else
		snprintf(where, sizeof where, "cursor layer %d (of 0-%d)", l, v->n_layers - 1);
	int a = ui_title_attr(&u->g);
	ui_fill(LINES - 1, 0, -1, a);
	if (v->id > 0)
		ui_text(LINES - 1, 0, COLS - 8, a, " session %lld%s%s%sW%dA%d%s%s", (long long)v->id, u->g.sep,
		    u->o.db_label ? u->o.db_label : "", u->g.sep, v->wbits, v->abits, u->g.sep, where);
	else
		ui_text(LINES - 1, 0, COLS - 8, a, " not recorded%sW%dA%d%s%s", u->g.sep, v->wbits, v->abits, u->g.sep,
		    where);
	ui_text(LINES - 1, COLS - 7, 7, a, "? help");
}

void
ui_draw_message(ui *u, int y)
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

void
ui_draw_keys(ui *u, int y, const char *const *kv)
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

/* ---- the key loop ------------------------------------------------------------------ */

/* Q or Ctrl-C: quit, asking first when the cursor's layer is not committed. */
static void
quit_ask(ui *u)
{
	int l = ui_cursor(u);
	if (!ui_uncommitted(u)) {
		u->quit = 1;
		return;
	}
	ui_prompt_open(u, PR_QUIT, "layer %d is %s but not committed (a resume redoes it); quit? [y/N]", l,
	    sess_layer_state_name(sess_layer_state(u->s, l)));
}

/* Route a key: a running job, a prompt, the screen's own keys, the key table. */
static void
handle_key(ui *u, int ch)
{
	if (ch == KEY_RESIZE) {
		clear();
		return;
	}
	if (u->busy) {
		ui_job_key(u, ch);
		return;
	}
	if (u->prompt != PR_NONE) {
		ui_prompt_key(u, ch);
		return;
	}
	if (screens[u->screen]->key != NULL && screens[u->screen]->key(u, ch))
		return;
	const ui_key *k = ui_key_find(ch, u->screen);
	if (u->screen == SCR_HELP) {
		/* help closes on any key; one that means something elsewhere acts there */
		u->screen = u->back;
		if (k != NULL && k->action == UA_HELP)
			return;
		if (ch == KEY_ESC || ch == 'q')
			return;
		handle_key(u, ch);
		return;
	}
	if (k == NULL) {
		ui_msg(u, MSG_ERROR, "no key '%s' here (? lists the keys)", keyname(ch) ? keyname(ch) : "?");
		return;
	}
	if (k->action == UA_QUIT) {
		quit_ask(u);
		return;
	}
	ui_act(u, k);
}

void
ui_draw(ui *u)
{
	pthread_mutex_lock(&curses_mu);
	erase();
	if (COLS < 80 || LINES < 24) {
		ui_text(0, 0, -1, A_BOLD, "masq needs a terminal of at least 80x24");
		ui_text(1, 0, -1, A_NORMAL, "(this one is %dx%d); Q quits", COLS, LINES);
	} else if (u->busy) {
		ui_job_draw(u);
	} else {
		screens[u->screen]->draw(u);
	}
	refresh();
	pthread_mutex_unlock(&curses_mu);
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
	const sess_view *v = sess_view_get(s);

	pthread_once(&curses_mu_once, curses_mu_init);
	u->s = s;
	u->o = *o;
	u->locale_utf8 = cs != NULL && strcmp(cs, "UTF-8") == 0;
	u->sel = v->cursor < v->n_layers ? v->cursor : v->n_layers - 1;
	if (u->sel < 0)
		u->sel = 0;
	u->row = MOD_VISION;
	u->ex_fmt = EXPORT_MASQUANT;
	u->ov_thr = o->sqnr_bad;
	u->clock = masq_now;
	ui_job_init(u);
	keypad(stdscr, TRUE);
	noecho();
	raw();
	nonl();
	curs_set(0);
	set_escdelay(25);
	gfx_setup(u);
	ui_msg(u, MSG_INFO, "%s calibrates layer %d, a runs every layer, ? lists the keys",
	    ui_key_for_cmd(SC_CALIBRATE, SCR_LIST), v->cursor);
	return u;
}

void
ui_free(ui *u)
{
	if (u == NULL)
		return;
	ui_job_done(u);
	json_decref(u->ex_list);
	json_decref(u->diff_rows);
	free(u);
}

int
ui_step(ui *u)
{
	pthread_mutex_lock(&curses_mu);
	int ch = getch(), was = u->busy;
	pthread_mutex_unlock(&curses_mu);
	ui_job_poll(u);
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
	u->job.clock = u->clock;
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

/* fatal()'s clean-up: give the terminal back, under the curses lock (the
 * UI thread may be inside a curses call when a worker dies). */
static void
endwin_hook(void)
{
	pthread_mutex_lock(&curses_mu);
	if (!isendwin())
		endwin();
}

int
ui_run(sess *s, const ui_opts *o, masq_err *err)
{
	ui *u;
	SCREEN *scr;

	pthread_once(&curses_mu_once, curses_mu_init);
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
	pthread_mutex_lock(&curses_mu);
	endwin();
	delscreen(scr);
	pthread_mutex_unlock(&curses_mu);
	masq_set_fatal_hook(NULL);
	return 0;
}
