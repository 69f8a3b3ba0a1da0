/*
 * ui.h: the ncurses workbench (issue 5), one more driver of a session.
 *
 * The UI turns keys into session commands (sess_dispatch, so every change
 * is recorded and replays headlessly) and draws the session's state (the
 * pipeline's settings, results and the cursor layer's statistics).  It
 * computes no statistic and runs no SQL; the fast alpha preview is
 * sess_preview.  Keys come from the command table (sess_cmds[].key); the
 * help screen is generated from it.  No curses type appears here, so src/
 * needs no curses header.
 *
 *	ui_opts o;
 *	ui_opts_default(&o);
 *	o.db_label = "masq.db";
 *	if (ui_run(&s, &o, &err) < 0) ...      // initscr ... endwin
 *
 * Tests start curses themselves (newterm on /dev/null), then:
 *
 *	ui *u = ui_new(&s, &o);
 *	ui_draw(u);
 *	ungetch('c'); ui_step(u);              // one key through wgetch
 *	ui_screen_dump(stdout);                // the screen as UTF-8 text
 *	ui_free(u);
 */
#ifndef MASQ_UI_H
#define MASQ_UI_H

#include <stdio.h>

#include "core/pipeline.h"
#include "sessions/session.h"

typedef struct ui_opts {
	const char *db_label;	/* the database as the status line names it (NULL: none) */
	int ascii;		/* 1: ASCII plots even in a UTF-8 locale */
	int color;		/* -1: auto (NO_COLOR, the terminal), 0: monochrome, 1: colour */
	double sqnr_bad;	/* below this (dB) a figure is drawn as bad (default 20) */
	double sqnr_good;	/* from this (dB) it is good (default 30); between: a warning */
} ui_opts;

void ui_opts_default(ui_opts *o);

typedef struct ui ui;

/* Run the workbench on an open session (its "open" dispatched or restored)
 * on the controlling terminal: initscr, the key loop, endwin.  Returns 0
 * when the user quit, -1 with err when curses could not start. */
int ui_run(sess *s, const ui_opts *o, masq_err *err);

/* A workbench on the current curses screen (the caller started curses). */
ui *ui_new(sess *s, const ui_opts *o);
void ui_free(ui *u);
/* Draw the current screen into stdscr and refresh. */
void ui_draw(ui *u);
/* Read one key through wgetch, act on it and redraw; 1 when the user has
 * quit, 0 otherwise (also when no key was pending). */
int ui_step(ui *u);
/* Test hook: run long commands on the calling thread (sync 1) instead of a
 * worker thread; hook (if not NULL) is called with arg after each progress
 * screen is drawn, before its command runs. */
void ui_set_sync(ui *u, int sync, void (*hook)(void *), void *arg);
/* Test hook: the clock (seconds) of the progress figures (NULL: masq_now). */
void ui_set_clock(ui *u, double (*clock)(void));
/* Test hook: switch the plots to ASCII (1) or back to the locale's choice (0). */
void ui_set_ascii(ui *u, int ascii);
/* Test hook: the last alpha preview, when one is shown (1) or not (0). */
int ui_preview_get(const ui *u, pipe_preview *out, int *grp, int *mod);
/* Write the physical screen (curscr) as UTF-8 text, one line per row,
 * trailing blanks removed. */
void ui_screen_dump(FILE *fp);

#endif
