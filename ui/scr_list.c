/*
 * scr_list.c: the layer list, the workbench's first screen: every layer's
 * state, method, alphas, output SQNR per modality and time (columns of the
 * session's field table), the selected layer's misalignment below.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/engine.h"
#include "ui/internal.h"

/* The list's columns after the layer number, from the field table. */
static const struct { int field, width; } cols[] = {
	{SF_STATE, 10}, {SF_METHOD, 7}, {SF_ALPHAS, 14}, {SF_SQNR_T, 7}, {SF_SQNR_V, 7}, {SF_SQNR_A, 7},
	{SF_SQNR_ALL, 7},
};
#define NCOLS (sizeof cols / sizeof cols[0])

/* Layer l's misalignment figures per site, a header and four rows from y. */
static void
draw_misalign(ui *u, int l, int y)
{
	const pipe_layer_result *r = sess_layer_result(u->s, l);
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

static void
list_draw(ui *u)
{
	const sess_view *v = sess_view_get(u->s);
	int n = v->n_layers, rows = LINES - 6;

	ui_fill(0, 0, -1, ui_title_attr(&u->g));
	ui_text(0, 0, -1, ui_title_attr(&u->g), " masq%s%s%s%d layers, %d tokens (text %d, vision %d, audio %d)",
	    u->g.sep, v->model_dir, u->g.sep, n, v->tokens, v->tokens_mod[0], v->tokens_mod[1], v->tokens_mod[2]);
	int x = ui_text(1, 0, -1, A_BOLD, "  layer");
	for (size_t c = 0; c < NCOLS; c++) {
		const sess_field *f = &sess_fields[cols[c].field];
		x += ui_text(1, x, -1, A_BOLD, f->kind == SFK_TEXT ? " %-*s" : "%*s", cols[c].width, f->title);
	}
	ui_text(1, x, -1, A_BOLD, " %6s", sess_fields[SF_SECONDS].title);
	if (u->sel >= n)
		u->sel = n - 1;
	if (u->sel < u->top)
		u->top = u->sel;
	if (u->sel >= u->top + rows)
		u->top = u->sel - rows + 1;
	for (int i = 0; i < rows && u->top + i < n; i++) {
		int l = u->top + i, y = 2 + i;
		int rowattr = l == u->sel ? A_REVERSE : A_NORMAL;
		char t[64];
		ui_fill(y, 0, -1, rowattr);
		x = ui_text(y, 0, -1, rowattr, "%s %5d", l == v->cursor ? ">" : " ", l);
		for (size_t c = 0; c < NCOLS; c++) {
			const sess_field *f = &sess_fields[cols[c].field];
			sess_field_format(u->s, cols[c].field, l, cols[c].width, t, sizeof t);
			if (f->kind == SFK_TEXT)
				x += ui_text(y, x, -1, rowattr, " %s", t);
			else
				x += ui_text(y, x, cols[c].width, rowattr | ui_sqnr_attr(&u->g, f->value(u->s, l), u->o.sqnr_bad,
				    u->o.sqnr_good), "%s", t);
		}
		if (isfinite(sess_fields[SF_SECONDS].value(u->s, l))) {
			sess_field_format(u->s, SF_SECONDS, l, 7, t, sizeof t);
			ui_text(y, x, -1, rowattr, " %s", t);
		}
	}
	/* the selected layer's misalignment, when every row fits above it */
	if (n + 2 + 7 <= LINES - 4 && sess_layer_misalign_known(u->s, u->sel))
		draw_misalign(u, u->sel, LINES - 10);
	int y = LINES - 4;
	if (v->finished) {
		char t[STATS_ROWS][16];
		for (int m = 0; m < STATS_ROWS; m++)
			ui_fmt_db(t[m], sizeof t[m], 0, m < MOD_COUNT && !sess_mod_present(u->s, m) ? NAN : v->summary->sqnr[m]);
		ui_text(y, 0, -1, A_BOLD, " model: text %s  vision %s  audio %s  all %s dB", t[0], t[1], t[2], t[3]);
		if (isfinite(v->summary->kl_text))
			ui_text(y, 60, -1, A_BOLD, "KL %.3g", v->summary->kl_text);
	} else {
		ui_text(y, 0, -1, A_DIM, " SQNR (dB) of each layer's output against the FP model; below %.0f is bad",
		    u->o.sqnr_bad);
	}
	ui_draw_message(u, LINES - 3);
	const char *kv[] = {ui_key_for_cmd(SC_CALIBRATE, SCR_LIST), "calib", ui_key_for_cmd(SC_QUANTIZE, SCR_LIST), "quant",
	    ui_key_for_cmd(SC_NEXT, SCR_LIST), "next", "a", "all", "Enter", "view", ui_key_for_cmd(SC_EXPORT, SCR_LIST),
	    "export", ui_key_for_cmd(SC_FINISH, SCR_LIST), "finish", "q", "quit", "o", "overview",
	    ui_key_for_cmd(SC_SEARCH, SCR_LIST), "search", ui_key_for_cmd(SC_SET_METHOD, SCR_LIST), "method", NULL};
	ui_draw_keys(u, LINES - 2, kv);
	ui_draw_status(u);
}

/* Moving through the rows. */
static int
list_act(ui *u, int action)
{
	int n = sess_view_get(u->s)->n_layers;
	switch (action) {
	case UA_UP: if (u->sel > 0) u->sel--; return 1;
	case UA_DOWN: if (u->sel < n - 1) u->sel++; return 1;
	case UA_PGUP: u->sel = u->sel > 10 ? u->sel - 10 : 0; return 1;
	case UA_PGDN: u->sel = u->sel + 10 < n ? u->sel + 10 : n - 1; return 1;
	case UA_HOME: u->sel = 0; return 1;
	case UA_END: u->sel = n - 1; return 1;
	}
	return 0;
}

const ui_screen_ops ui_scr_list = {"list", NULL, NULL, list_act, list_draw};
