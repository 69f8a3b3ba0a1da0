/*
 * scr_layer.c: the layer view: for the cursor's calibrated layer the
 * histograms of log2|x| per modality at one input site (or a panel of
 * scr_panels.c), the site's misalignment figures, per-linear SQNR with the
 * alpha preview from the token sample, and the tuning line.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/engine.h"
#include "core/stats.h"
#include "ui/internal.h"

/* The linears that read an input site, for labels. */
static const char *
site_linears(int site)
{
	static const char *const n[SITE_COUNT] = {"q, k, v", "o", "gate, up", "down"};
	return n[site];
}

/* The layer view screen. */
static void
layer_draw(ui *u)
{
	const sess_view *v = sess_view_get(u->s);
	int l = u->view, st = sess_layer_state(u->s, l);
	/* statistics in memory */
	int live = l == ui_cursor(u) && sess_cursor_stats(u->s, 0) != NULL;
	const pipe_layer_result *r = sess_layer_result(u->s, l);
	const layer_setting *ls = sess_layer_setting(u->s, l);
	int method = sess_layer_method(u->s, l);
	int pw = (COLS - 4) / 3, hh = LINES - 16, y;

	ui_fill(0, 0, -1, ui_title_attr(&u->g));
	ui_text(0, 0, -1, ui_title_attr(&u->g), " layer %d (of 0-%d)%s%s%s%s%sW%dA%d", l, v->n_layers - 1, u->g.sep,
	    sess_layer_state_name(st), u->g.sep, method_name(method), u->g.sep, v->wbits, v->abits);
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
	else if (u->panel == PANEL_LEARN)
		ui_text(1, x, -1, A_DIM, "  learning the factors (v: view)");
	else if (live)
		ui_text(1, x, -1, A_DIM, "  log2|x| at the input of %s, %d channels", site_linears(u->site),
		    sess_cursor_stats(u->s, u->site)->d);
	else
		ui_text(1, x, -1, A_DIM, "  the input of %s", site_linears(u->site));

	/* histograms of log2|x| per modality, one shared axis */
	y = 2;
	int b0 = 0, b1 = 0;
	const site_stats *ss = live ? sess_cursor_stats(u->s, u->site) : NULL;
	if (u->panel == PANEL_SEARCH) {
		ui_draw_search_panel(u, l, y, pw, hh);
	} else if (u->panel == PANEL_RANK) {
		ui_draw_rank_panel(u, l, y, hh);
	} else if (u->panel == PANEL_LEARN) {
		ui_draw_learn_panel(u, l, y, pw, hh);
	} else if (u->panel == PANEL_PROFILE && ss != NULL) {
		ui_draw_profile_panel(u, ss, y, pw, hh);
	} else if (ss != NULL && ui_hist_range(u, ss, &b0, &b1)) {
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
			if (!sess_mod_present(u->s, m)) {
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
		ui_text(y + hh / 2, 2, -1, A_DIM, l < v->cursor ?
		    "layer %d is committed: its statistics were released (the figures below remain)" :
		    "layer %d is not calibrated: c calibrates the cursor's layer", l);
	}
	y += hh + 2;

	/* misalignment at this site */
	const misalign *ma = &r->mis[u->site];
	int have_mis = sess_layer_misalign_known(u->s, l) || live, dom = -1;
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
		if (!sess_mod_present(u->s, m))
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
	/* the preview runs the layer's method, mas-cmc's compensation included,
	 * on FP inputs from the token sample */
	ui_text(y, 0, -1, A_BOLD, " %-10s%7s%7s%7s%7s  %s", "SQNR dB", "text", "vision", "audio", "all",
	    !pv ? "" : sess_layer_setting(u->s, l)->method == METHOD_MAS_CMC ? "| preview with CMC" :
	    "| preview (token sample)");
	if (pv)
		ui_text(y, 67, -1, A_DIM, "%.1fms", u->pv.seconds * 1e3);
	y++;
	int hurt_k = -1, hurt_m = -1;
	double hurt_wo = NAN;
	for (int k = 0; k < LIN_COUNT; k++) {
		if (engine_lin_site(k) != u->site)
			continue;
		x = ui_text(y, 0, -1, A_NORMAL, " %-10s", lin_name(k));
		for (int m = 0; m < STATS_ROWS; m++) {
			char t[16];
			/* per-linear figures exist for what this UI quantized */
			double fv = sess_layer_linears_known(u->s, l) && (m == STATS_ALL || sess_mod_present(u->s, m)) ?
			    r->lin[k].sqnr[m] : NAN;
			double wo;
			int hurts = m < MOD_COUNT && sess_lin_cmc_hurts(u->s, l, k, m, &wo);
			ui_fmt_db(t, sizeof t, 7, fv);
			if (hurts) {
				/* the compensation costs more than it mends: marked */
				snprintf(t, sizeof t, "!%6.2f", fv);
				if (hurt_k < 0)
					hurt_k = k, hurt_m = m, hurt_wo = wo;
			}
			x += ui_text(y, x, 7, ui_sqnr_attr(&u->g, fv, u->o.sqnr_bad, u->o.sqnr_good), "%s", t);
		}
		if (pv) {
			x += ui_text(y, x, -1, A_NORMAL, "  |");
			for (int m = 0; m < MOD_COUNT; m++) {
				char t[16];
				double pv_v = sess_mod_present(u->s, m) ? u->pv.sqnr[k][m] : NAN;
				ui_fmt_db(t, sizeof t, 7, pv_v);
				x += ui_text(y, x, 7, ui_sqnr_attr(&u->g, pv_v, u->o.sqnr_bad, u->o.sqnr_good), "%s", t);
			}
		}
		y++;
	}
	if (hurt_k >= 0 && y < LINES - 4)
		ui_text(y, 0, -1, ui_error_attr(&u->g), " ! %s %s: %.2f dB with the compensation, %.2f without: %s 0 sets rank 0",
		    lin_name(hurt_k), modality_name(hurt_m), r->lin[hurt_k].sqnr[hurt_m], hurt_wo,
		    ui_key_for_cmd(SC_SET_RANK, SCR_LAYER));

	/* the tuning line */
	y = LINES - 4;
	const char *why = ui_alpha_blocked(u);
	if (why != NULL) {
		ui_text(y, 0, -1, A_DIM, " %s", why);
	} else {
		int rows[ALPHA_ROWS], nr = ui_alpha_rows(u, l, rows);
		x = ui_text(y, 0, -1, A_NORMAL, " alpha %s:", smooth_group_name(u->site));
		for (int i = 0; i < nr; i++) {
			int sel = rows[i] == u->row;
			int a = (sel ? (int)(A_REVERSE | A_BOLD) : A_NORMAL) | (rows[i] < MOD_COUNT ? ui_mod_attr(&u->g, rows[i]) : 0);
			x += ui_text(y, x, -1, a, sel ? "[%s %.2f]" : " %s %.2f ", ui_row_name(rows[i]),
			    ls->alpha[u->site][rows[i]]);
		}
		int k0 = u->site == SITE_QKV ? LIN_Q : u->site == SITE_O ? LIN_O : LIN_GATE;
		if (method == METHOD_MAS_CMC)
			x += ui_text(y, x, -1, A_NORMAL, "   rank %g", ls->rank[k0]);
	}
	ui_draw_message(u, LINES - 3);
	const char *kv[] = {"Tab", "site", u->g.updown, "group", u->g.leftright, "modality", "+/-", "alpha",
	    ui_key_for_cmd(SC_SET_ALPHA, SCR_LAYER), "alpha=", ui_key_for_cmd(SC_SET_RANK, SCR_LAYER), "rank",
	    ui_key_for_cmd(SC_QUANTIZE, SCR_LAYER), "quant", "q", "back", NULL};
	ui_draw_keys(u, LINES - 2, kv);
	ui_draw_status(u);
}

const ui_screen_ops ui_scr_layer = {"layer", NULL, NULL, NULL, layer_draw};
