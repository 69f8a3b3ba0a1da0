/*
 * draw.c: the workbench's widgets (see draw.h).
 */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "core/calib.h"
#include "core/util.h"
#include "ui/draw.h"

void
ui_gfx_init(ui_gfx *g, int utf8, int color)
{
	memset(g, 0, sizeof *g);
	g->utf8 = utf8;
	g->sep = utf8 ? " \xc2\xb7 " : " | ";
	g->updown = utf8 ? "\xe2\x86\x91\xe2\x86\x93" : "Up/Down";
	g->leftright = utf8 ? "\xe2\x86\x90\xe2\x86\x92" : "Left/Right";
	if (color && has_colors() && start_color() != ERR) {
		use_default_colors();
		init_pair(UI_PAIR_GOOD, COLOR_GREEN, -1);
		init_pair(UI_PAIR_WARN, COLOR_YELLOW, -1);
		init_pair(UI_PAIR_BAD, COLOR_RED, -1);
		init_pair(UI_PAIR_TITLE, COLOR_WHITE, COLOR_BLUE);
		init_pair(UI_PAIR_TEXT, COLOR_CYAN, -1);
		init_pair(UI_PAIR_VISION, COLOR_MAGENTA, -1);
		init_pair(UI_PAIR_AUDIO, COLOR_GREEN, -1);
		init_pair(UI_PAIR_KEY, COLOR_YELLOW, -1);
		g->color = 1;
	}
}

/* Put the wide string w (n characters) at (y, x), at most cols columns;
 * returns the columns used. */
static int
put_wide(int y, int x, int cols, const wchar_t *w, size_t n)
{
	int used = 0;
	for (size_t i = 0; i < n && used < cols; i++) {
		int cw = wcwidth(w[i]);
		if (cw < 0)
			cw = 1;
		if (used + cw > cols)
			break;
		mvaddnwstr(y, x + used, &w[i], 1);
		used += cw;
	}
	return used;
}

int
ui_text(int y, int x, int w, int attr, const char *fmt, ...)
{
	char buf[1024];
	wchar_t wb[1024];
	va_list ap;
	size_t n;

	if (w < 0)
		w = COLS - x;
	if (w <= 0 || y < 0 || y >= LINES || x >= COLS)
		return 0;
	if (x + w > COLS)
		w = COLS - x;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	n = mbstowcs(wb, buf, sizeof wb / sizeof wb[0] - 1);
	if (n == (size_t)-1) {
		/* not valid in this locale: show the bytes as ASCII */
		for (n = 0; buf[n] != '\0'; n++)
			wb[n] = (unsigned char)buf[n] < 128 ? (wchar_t)buf[n] : L'?';
		wb[n] = 0;
	}
	attrset(attr);
	int used = put_wide(y, x, w, wb, n);
	attrset(A_NORMAL);
	return used;
}

void
ui_fill(int y, int x, int w, int attr)
{
	if (y < 0 || y >= LINES || x >= COLS)
		return;
	if (w < 0 || x + w > COLS)
		w = COLS - x;
	attrset(attr);
	mvhline(y, x, ' ', w);
	attrset(A_NORMAL);
}

/* One cell of a bar of `eighths` (0..8) eighths, vertical or horizontal. */
static void
put_eighths(const ui_gfx *g, int y, int x, int eighths, int vertical)
{
	static const wchar_t vert[9] = {L' ', 0x2581, 0x2582, 0x2583, 0x2584, 0x2585, 0x2586, 0x2587, 0x2588};
	static const wchar_t horiz[9] = {L' ', 0x258f, 0x258e, 0x258d, 0x258c, 0x258b, 0x258a, 0x2589, 0x2588};
	wchar_t c;

	if (eighths < 0)
		eighths = 0;
	if (eighths > 8)
		eighths = 8;
	if (g->utf8)
		c = vertical ? vert[eighths] : horiz[eighths];
	else if (vertical)
		c = eighths == 0 ? L' ' : eighths == 8 ? L'#' : eighths >= 4 ? L':' : L'.';
	else
		c = eighths == 0 ? L' ' : eighths >= 6 ? L'=' : L'-';
	mvaddnwstr(y, x, &c, 1);
}

int
ui_hist_draw(const ui_gfx *g, int y, int x, int h, int w, const uint64_t *bins, int b0, int b1, int attr)
{
	int nb = b1 - b0 + 1;
	uint64_t col[512], top = 0;

	if (h <= 0 || w <= 0 || nb <= 0)
		return 0;
	if (w > 512)
		w = 512;
	/* each bin spans `wide` columns, or each column sums `per` bins */
	int wide = nb <= w ? w / nb : 1, per = nb <= w ? 1 : (nb + w - 1) / w;
	int used = nb <= w ? nb * wide : (nb + per - 1) / per;
	memset(col, 0, sizeof col);
	for (int i = 0; i < nb; i++)
		for (int k = 0; k < wide; k++)
			col[i / per * wide + k] += bins[b0 + i];
	for (int c = 0; c < used; c++)
		if (col[c] > top)
			top = col[c];
	attrset(attr);
	for (int c = 0; c < used; c++) {
		/* height in eighths of a cell; any non-empty column shows */
		int e = top == 0 ? 0 : (int)((double)col[c] / (double)top * h * 8 + 0.5);
		if (col[c] > 0 && e == 0)
			e = 1;
		for (int r = 0; r < h; r++)
			put_eighths(g, y + r, x + c, e - (h - 1 - r) * 8, 1);
	}
	attrset(A_NORMAL);
	return used;
}

/* Descending order of floats, for qsort. */
static int
cmp_float_desc(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x < y) - (x > y);
}

int
ui_profile_draw(const ui_gfx *g, int y, int x, int h, int w, const float *v, int n, double lo, double hi,
    int attr)
{
	if (h <= 0 || w <= 0 || n <= 0 || !(hi > lo))
		return 0;
	float *sorted = xmalloc((size_t)n * sizeof *sorted);	/* (n) a copy of v, descending */
	memcpy(sorted, v, (size_t)n * sizeof *sorted);
	qsort(sorted, (size_t)n, sizeof *sorted, cmp_float_desc);
	int used = n < w ? n : w;
	attrset(attr);
	for (int c = 0; c < used; c++) {
		/* column c: the largest value of its share of the sorted channels */
		float top = sorted[(size_t)c * (size_t)n / (size_t)used];
		int e = 0;
		if (top > 0) {
			double f = (log2(top) - lo) / (hi - lo);
			e = (int)(f * h * 8 + 0.5);
			if (e < 1)
				e = 1;
		}
		for (int r = 0; r < h; r++)
			put_eighths(g, y + r, x + c, e - (h - 1 - r) * 8, 1);
	}
	attrset(A_NORMAL);
	free(sorted);
	return used;
}

void
ui_bar_draw(const ui_gfx *g, int y, int x, int w, double frac, int attr)
{
	if (!(frac >= 0))
		frac = 0;
	if (frac > 1)
		frac = 1;
	int e = (int)(frac * w * 8 + 0.5);
	attrset(attr);
	for (int c = 0; c < w; c++)
		put_eighths(g, y, x + c, e - c * 8, 0);
	attrset(A_NORMAL);
}

int
ui_sqnr_attr(const ui_gfx *g, double db, double bad, double good)
{
	if (!isfinite(db))
		return A_NORMAL;
	if (db < bad)
		return g->color ? (int)(COLOR_PAIR(UI_PAIR_BAD) | A_BOLD) : (int)(A_BOLD | A_UNDERLINE);
	if (db < good)
		return g->color ? (int)COLOR_PAIR(UI_PAIR_WARN) : (int)A_UNDERLINE;
	return g->color ? (int)COLOR_PAIR(UI_PAIR_GOOD) : A_NORMAL;
}

int
ui_mod_attr(const ui_gfx *g, int m)
{
	static const int pair[MOD_COUNT] = {UI_PAIR_TEXT, UI_PAIR_VISION, UI_PAIR_AUDIO};
	if (!g->color || m < 0 || m >= MOD_COUNT)
		return A_NORMAL;
	return (int)COLOR_PAIR(pair[m]);
}

int
ui_title_attr(const ui_gfx *g)
{
	return g->color ? (int)(COLOR_PAIR(UI_PAIR_TITLE) | A_BOLD) : (int)A_REVERSE;
}

int
ui_key_attr(const ui_gfx *g)
{
	return g->color ? (int)(COLOR_PAIR(UI_PAIR_KEY) | A_BOLD) : (int)A_BOLD;
}

int
ui_error_attr(const ui_gfx *g)
{
	return g->color ? (int)(COLOR_PAIR(UI_PAIR_BAD) | A_BOLD) : (int)(A_BOLD | A_REVERSE);
}

int
ui_working_attr(const ui_gfx *g)
{
	return g->color ? (int)(COLOR_PAIR(UI_PAIR_WARN) | A_BOLD) : (int)A_BOLD;
}

void
ui_fmt_db(char *buf, size_t n, int w, double x)
{
	if (isfinite(x))
		snprintf(buf, n, "%*.2f", w, x);
	else
		snprintf(buf, n, "%*s", w, "-");
}
