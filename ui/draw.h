/*
 * draw.h: the workbench's widgets (text, histogram, bar, figure cells).
 * They draw what they are given into stdscr; they know nothing of
 * sessions.  The character set (UTF-8 blocks or ASCII) and colour are
 * chosen once per screen in a ui_gfx.
 *
 *	ui_gfx g;
 *	ui_gfx_init(&g, utf8, color);         // after initscr / newterm
 *	ui_hist_draw(&g, y, x, h, w, bins, b0, b1, ui_mod_attr(&g, MOD_VISION));
 */
#ifndef MASQ_UI_DRAW_H
#define MASQ_UI_DRAW_H

#include <stdint.h>

#include "ui/curses.h"

/* Colour pairs (used only when ui_gfx.color). */
enum {
	UI_PAIR_GOOD = 1, UI_PAIR_WARN, UI_PAIR_BAD, UI_PAIR_TITLE,
	UI_PAIR_TEXT, UI_PAIR_VISION, UI_PAIR_AUDIO, UI_PAIR_KEY
};

typedef struct ui_gfx {
	int utf8;		/* block characters and symbols from UTF-8 */
	int color;		/* colour pairs are initialised */
	const char *sep;	/* separator in title and status lines */
	const char *updown, *leftright;	/* arrow names in key hints */
} ui_gfx;

/* Choose the character set and start colours (when color and the terminal
 * has them). */
void ui_gfx_init(ui_gfx *g, int utf8, int color);

/* Text (UTF-8, printf-style) at (y, x), clipped to w columns; returns the
 * columns drawn. */
int ui_text(int y, int x, int w, int attr, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Blank w columns from (y, x) with attr (w < 0: to the right edge). */
void ui_fill(int y, int x, int w, int attr);

/* A vertical-bar histogram of bins[b0..b1] in an h x w box whose top-left
 * corner is (y, x): each bin spans w / nb columns, or, with more bins than
 * columns, each column sums ceil(nb / w) bins (pass a range that is a
 * multiple of that); bars are scaled to the tallest column and drawn in
 * eighths of a cell (UTF-8) or with '.', ':' and '#' (ASCII).  Returns the
 * columns used. */
int ui_hist_draw(const ui_gfx *g, int y, int x, int h, int w, const uint64_t *bins, int b0, int b1,
    int attr);
/* The profile of v (n values, left unchanged) sorted in descending order,
 * in an h x w box whose top-left corner is (y, x): one column per value, or
 * with more values than columns, each column the largest of its share; bar
 * heights on a log2 scale from lo (empty) to hi (full).  Returns the
 * columns used. */
int ui_profile_draw(const ui_gfx *g, int y, int x, int h, int w, const float *v, int n, double lo, double hi,
    int attr);
/* A horizontal bar of frac (0..1) of w columns. */
void ui_bar_draw(const ui_gfx *g, int y, int x, int w, double frac, int attr);

/* The attribute of an SQNR figure against the thresholds (bad below bad,
 * good from good); NAN figures are plain. */
int ui_sqnr_attr(const ui_gfx *g, double db, double bad, double good);
/* The attribute of modality m's plots and labels. */
int ui_mod_attr(const ui_gfx *g, int m);
/* Attributes of titles, key names, errors and working lines. */
int ui_title_attr(const ui_gfx *g);
int ui_key_attr(const ui_gfx *g);
int ui_error_attr(const ui_gfx *g);
int ui_working_attr(const ui_gfx *g);

/* "%*.2f" of a figure in w columns, or "-" for a NAN. */
void ui_fmt_db(char *buf, size_t n, int w, double x);

#endif
