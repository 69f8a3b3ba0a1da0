/*
 * scr_overview.c: every layer in one sortable table (the field table's
 * method, alphas, rank and SQNR per modality), figures below a threshold
 * marked, a key to the worst layer.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ui/internal.h"

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

/* The field of overview column c; the SQNR columns show each layer's
 * output, or (v) the error the layer adds itself. */
static const int ov_field[OV_COLS] = {SF_LAYER, SF_METHOD, SF_ALPHA_T, SF_ALPHA_V, SF_ALPHA_A, SF_RANK, SF_SQNR_T,
	SF_SQNR_V, SF_SQNR_A, SF_SQNR_ALL};

static int
ov_field_of(const ui *u, int c)
{
	if (u->ov_own && c >= OV_ST && c <= OV_SALL)
		return (u->ov_own == 1 ? SF_OWN_T : SF_HELD_T) + (c - OV_ST);
	return ov_field[c];
}

/* Layer l's value in overview column c (NAN: none); the method sorts by its number. */
static double
ov_value(const ui *u, int l, int c)
{
	if (c == OV_METHOD)
		return sess_layer_method(u->s, l);
	return sess_fields[ov_field_of(u, c)].value(u->s, l);
}

/* Layers in the overview's order (sort column, direction; NAN last) into idx. */
static void
ov_order(const ui *u, int *idx)
{
	int n = sess_view_get(u->s)->n_layers;
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
	for (int l = 0; l < sess_view_get(u->s)->n_layers; l++) {
		double v = ov_value(u, l, OV_ST + m);
		if (isfinite(v) && v < bv) {
			bv = v;
			best = l;
		}
	}
	if (best < 0) {
		ui_msg(u, MSG_ERROR, "no layer is measured for %s yet", m == STATS_ALL ? "all tokens" : modality_name(m));
		return;
	}
	u->sel = best;
	ui_msg(u, MSG_INFO, "%s for %s: layer %d at %.2f dB (threshold %.1f dB): Enter opens it",
	    u->ov_own == 1 ? "adds the most error" : "worst", m == STATS_ALL ? "all tokens" : modality_name(m), best, bv,
	    u->ov_thr);
}

/* The overview's own actions: moving in its order, sorting, the worst
 * layer, the threshold. */
static int
overview_act(ui *u, int action)
{
	int n = sess_view_get(u->s)->n_layers, idx[n > 0 ? n : 1], pos = 0;
	ov_order(u, idx);
	while (pos < n - 1 && idx[pos] != u->sel)
		pos++;
	switch (action) {
	case UA_UP: if (pos > 0) u->sel = idx[pos - 1]; return 1;
	case UA_DOWN: if (pos < n - 1) u->sel = idx[pos + 1]; return 1;
	case UA_PGUP: u->sel = idx[pos > 10 ? pos - 10 : 0]; return 1;
	case UA_PGDN: u->sel = idx[pos + 10 < n ? pos + 10 : n - 1]; return 1;
	case UA_HOME: u->sel = idx[0]; return 1;
	case UA_END: u->sel = idx[n - 1]; return 1;
	case UA_SORT_PREV: u->ov_col = (u->ov_col + OV_COLS - 1) % OV_COLS; return 1;
	case UA_SORT_NEXT: u->ov_col = (u->ov_col + 1) % OV_COLS; return 1;
	case UA_INVERT: u->ov_desc = !u->ov_desc; return 1;
	case UA_WORST: ov_worst(u); return 1;
	case UA_THRESHOLD: ui_prompt_open(u, PR_THRESH, "SQNR threshold in dB (now %.1f)", u->ov_thr); return 1;
	case UA_OWN: {
		/* output -> own error -> held-out output (with a split) -> output */
		int held = isfinite(sess_fields[SF_HELD_ALL].value(u->s, 0));
		u->ov_own = (u->ov_own + 1) % (held ? 3 : 2);
		ui_msg(u, MSG_INFO, "%s", u->ov_own == 1 ? "SQNR of the error each layer adds itself (its output's less its "
		    "input's): sort and w find the layers most sensitive to quantizing" : u->ov_own == 2 ?
		    "SQNR of each layer's output on the held-out sequences" : "SQNR of each layer's output");
		return 1;
	}
	}
	return 0;
}

/* The overview screen. */
static void
overview_draw(ui *u)
{
	static const char *const head[OV_COLS] = {"layer", "method", "a.t", "a.v", "a.a", "rank", "text", "vision",
		"audio", "all"};
	static const int width[OV_COLS] = {7, 8, 5, 5, 5, 6, 8, 8, 8, 8};
	const sess_view *v = sess_view_get(u->s);
	int n = v->n_layers, idx[n > 0 ? n : 1], rows = LINES - 6, pos = 0;
	const char *arrow = u->g.utf8 ? (u->ov_desc ? "\xe2\x96\xbc" : "\xe2\x96\xb2") : (u->ov_desc ? "v" : "^");

	ov_order(u, idx);
	while (pos < n - 1 && idx[pos] != u->sel)
		pos++;
	if (pos < u->ov_top)
		u->ov_top = pos;
	if (pos >= u->ov_top + rows)
		u->ov_top = pos - rows + 1;
	ui_fill(0, 0, -1, ui_title_attr(&u->g));
	ui_text(0, 0, -1, ui_title_attr(&u->g), " overview%s%d layers%s%s SQNR below %.1f dB marked !%ssorted by %s %s",
	    u->g.sep, n, u->g.sep, u->ov_own == 1 ? "own" : u->ov_own == 2 ? "held-out" : "output", u->ov_thr, u->g.sep,
	    head[u->ov_col], arrow);
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
		ui_text(y, 0, 1, rowattr, "%s", l == v->cursor ? ">" : " ");
		x = 1;
		for (int c = 0; c < OV_COLS; c++) {
			double fv = ov_value(u, l, c);
			char t[32];
			int a = rowattr;
			if (c == OV_LAYER)
				snprintf(t, sizeof t, "%-6d", l);
			else if (c == OV_METHOD)
				snprintf(t, sizeof t, "%-7s", method_name((int)fv));
			else if (isnan(fv))
				snprintf(t, sizeof t, "%*s", width[c] - 1, "-");
			else if (c <= OV_RANK)
				sess_field_format(u->s, ov_field_of(u, c), l, width[c] - 1, t, sizeof t);
			else {
				snprintf(t, sizeof t, "%*.2f%s", width[c] - 2, fv, fv < u->ov_thr ? "!" : " ");
				a |= ui_sqnr_attr(&u->g, fv, u->ov_thr, u->ov_thr + 10);
			}
			ui_text(y, x, width[c], a, "%s", t);
			x += width[c];
		}
		ui_text(y, x, -1, rowattr | A_DIM, "%s", sess_layer_state_name(sess_layer_state(u->s, l)));
	}
	ui_text(LINES - 4, 0, -1, A_DIM, " alpha of qkv; rank of q_proj; SQNR of %s",
	    u->ov_own == 1 ? "the error each layer adds itself" : u->ov_own == 2 ? "the held-out sequences" :
	    "each layer's output");
	ui_draw_message(u, LINES - 3);
	const char *kv[] = {u->g.leftright, "sort column", "i", "invert", "w", "worst layer", "v", u->ov_own == 1 ? "next" :
	    "own error", "t", "threshold", "Enter", "view", "Esc", "back", NULL};
	ui_draw_keys(u, LINES - 2, kv);
	ui_draw_status(u);
}

const ui_screen_ops ui_scr_overview = {"overview", NULL, NULL, overview_act, overview_draw};
