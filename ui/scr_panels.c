/*
 * scr_panels.c: the top panels of the layer view ('v' cycles them): the
 * alpha search curves, the rank view of the compensation, the sorted range
 * profiles, the learning curve; and the histogram range the histograms
 * share.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/engine.h"
#include "ui/internal.h"

/* The range of non-empty histogram bins over the modalities present at
 * site st (bin 0, the zeros and underflow, left out); 0 when empty. */
int
ui_hist_range(const ui *u, const site_stats *st, int *b0, int *b1)
{
	*b0 = STATS_HIST_BINS;
	*b1 = -1;
	for (int m = 0; m < MOD_COUNT; m++) {
		if (!sess_mod_present(u->s, m) || st->count[m] == 0)
			continue;
		const uint64_t *h = st->hist + (size_t)m * STATS_HIST_BINS;
		for (int b = 1; b < STATS_HIST_BINS; b++)
			if (h[b] > 0) {
				if (b < *b0)
					*b0 = b;
				if (b > *b1)
					*b1 = b;
			}
	}
	if (*b1 < 0)
		return 0;
	/* at least 8 bins, so a narrow distribution still reads as one */
	while (*b1 - *b0 + 1 < 8) {
		if (*b0 > 1)
			(*b0)--;
		if (*b1 - *b0 + 1 < 8 && *b1 < STATS_HIST_BINS - 1)
			(*b1)++;
	}
	return 1;
}

/* The alpha search of layer l: per searched row, the layer output's SQNR
 * against alpha (one point per grid alpha, each plot spanning its own
 * minimum to maximum), the chosen alpha marked, in panels pw wide from row
 * y: a caption, hh plot rows and an axis row. */
void
ui_draw_search_panel(ui *u, int l, int y, int pw, int hh)
{
	const pipe_search *sr = &sess_layer_result(u->s, l)->search;
	int rows[ALPHA_ROWS], nr = 0;

	if (!sr->done || sr->n <= 0) {
		ui_text(y + hh / 2, 2, -1, A_DIM, "layer %d has no alpha search: %s searches the cursor's calibrated layer",
		    l, ui_key_for_cmd(SC_SEARCH, SCR_LAYER));
		return;
	}
	for (int row = 0; row < ALPHA_ROWS; row++) {
		int any = 0;
		for (int i = 0; i < sr->n; i++)
			any |= isfinite(sr->sqnr[row][i]) && sr->sqnr[row][i] != 0.0;
		if (any && (row == ALPHA_UNIFIED || sess_mod_present(u->s, row)))
			rows[nr++] = row;
	}
	for (int ri = 0; ri < nr && ri < 3; ri++) {
		int row = rows[ri], px = 1 + ri * (pw + 1), bi = 0;
		double lo = INFINITY, hi = -INFINITY;
		for (int i = 0; i < sr->n; i++) {
			double v = sr->sqnr[row][i];
			if (isfinite(v)) {
				lo = fmin(lo, v);
				hi = fmax(hi, v);
			}
			if (sr->alpha[i] == sr->best[row])
				bi = i;
		}
		if (!(hi > lo)) {
			lo -= 0.5;
			hi += 0.5;
		}
		int a = row < MOD_COUNT ? ui_mod_attr(&u->g, row) : (int)A_NORMAL;
		ui_text(y, px, pw, a | A_BOLD, "%s: %.2f, %.2f dB", ui_row_name(row), sr->best[row], sr->sqnr[row][bi]);
		for (int i = 0; i < sr->n; i++) {
			double v = sr->sqnr[row][i];
			if (!isfinite(v))
				continue;
			int cx = sr->n > 1 ? i * (pw - 1) / (sr->n - 1) : 0;
			int ry = (int)((hi - v) / (hi - lo) * (hh - 1) + 0.5);
			if (i == bi)
				ui_text(y + 1 + ry, px + cx, 1, a | A_BOLD | A_REVERSE, "%s", u->g.utf8 ? "\xe2\x97\x86" : "O");
			else
				ui_text(y + 1 + ry, px + cx, 1, a, "%s", u->g.utf8 ? "\xe2\x80\xa2" : "*");
		}
		int bx = sr->n > 1 ? bi * (pw - 1) / (sr->n - 1) : 0;
		char l0[16], l1[16];
		snprintf(l0, sizeof l0, "%.2f", sr->alpha[0]);
		snprintf(l1, sizeof l1, "%.2f", sr->alpha[sr->n - 1]);
		if (bx > (int)strlen(l0) && bx < pw - (int)strlen(l1) - 1)
			ui_text(y + 1 + hh, px + bx, 1, a | A_BOLD, "%s", u->g.utf8 ? "\xe2\x96\xb2" : "^");
		ui_text(y + 1 + hh, px, pw, A_DIM, "%s", l0);
		ui_text(y + 1 + hh, px + pw - (int)strlen(l1), pw, A_DIM, "%s", l1);
	}
}

/* The compensation of layer l's linears at the view's site: per linear
 * and modality, the rank in use, the effective rank, the whitened relative
 * error at that rank and at each pipe_rank_curve ratio (the ratio nearest
 * the rank in use bold), in up to hh + 2 rows from y. */
void
ui_draw_rank_panel(ui *u, int l, int y, int hh)
{
	static const char *const ratio[PIPE_RANK_CURVE] = {"0.8%", "1.6%", "3.1%", "6%", "12%", "25%", "50%", "100%"};
	const pipe_layer_result *r = sess_layer_result(u->s, l);

	if (!sess_layer_linears_known(u->s, l) || r->method != METHOD_MAS_CMC) {
		ui_text(y + hh / 2, 2, -1, A_DIM, "the rank view needs layer %d quantized with mas-cmc (%s method, %s quantizes)",
		    l, ui_key_for_cmd(SC_SET_METHOD, SCR_LAYER), ui_key_for_cmd(SC_QUANTIZE, SCR_LAYER));
		return;
	}
	int x = ui_text(y, 1, -1, A_BOLD, "%-8s %-6s %4s %6s %7s ", "linear", "", "rank", "erank", "error");
	for (int i = 0; i < PIPE_RANK_CURVE; i++)
		x += ui_text(y, 1 + x, -1, A_BOLD, "%5s", ratio[i]);
	y++;
	int used = 0;
	for (int k = 0; k < LIN_COUNT; k++) {
		if (engine_lin_site(k) != u->site)
			continue;
		for (int m = MOD_VISION; m < MOD_COUNT && used < hh; m++) {
			const pipe_cmc_diag *d = &r->lin[k].cmc[m];
			if (!sess_mod_present(u->s, m))
				continue;
			char er[16];
			ui_fmt_db(er, sizeof er, 6, d->erank);
			if (isfinite(d->erank))
				snprintf(er, sizeof er, "%6.1f", d->erank);
			x = ui_text(y, 1, -1, A_NORMAL, "%-8s ", lin_name(k));
			x += ui_text(y, 1 + x, -1, ui_mod_attr(&u->g, m), "%-6s ", modality_name(m));
			x += ui_text(y, 1 + x, -1, A_NORMAL, "%4d %s %7.4f ", d->rank, er, d->rel_err);
			/* the ratio whose rank is nearest the one in use: the curve's
			 * ranks are min(in, out) times the ratios; rank r at ratio 1
			 * is the full rank, unknown here, so compare errors instead */
			int near = -1;
			double bd = INFINITY;
			for (int i = 0; i < PIPE_RANK_CURVE; i++)
				if (isfinite(d->curve[i]) && fabs(d->curve[i] - d->rel_err) < bd) {
					bd = fabs(d->curve[i] - d->rel_err);
					near = i;
				}
			for (int i = 0; i < PIPE_RANK_CURVE; i++) {
				char t[16];
				if (isfinite(d->curve[i]))
					snprintf(t, sizeof t, "%5.2f", d->curve[i]);
				else
					snprintf(t, sizeof t, "%5s", "-");
				x += ui_text(y, 1 + x, -1, i == near ? (int)(A_BOLD | A_UNDERLINE) : (int)A_NORMAL, "%s", t);
			}
			y++;
			used++;
		}
	}
	/* what the ranks cost, and who decided them */
	int64_t site_p = 0, floored = 0, nlin = 0;
	for (int k = 0; k < LIN_COUNT; k++)
		if (engine_lin_site(k) == u->site && k != LIN_DOWN) {
			site_p += sess_lin_cmc_params(u->s, l, k);
			floored += sess_lin_rank_floored(u->s, l, k);
			nlin++;
		}
	char b1[32], b2[32], b3[32], b4[32];
	int eb = sess_cmc_elem_bytes(u->s);
	if (used < hh)
		ui_text(y + 1, 1, -1, A_DIM, "whitened error at rank = %% of min(in, out)%s",
		    floored == 0 ? "" : floored == nlin ? "; the floor set these ranks" :
		    "; the floor set some ranks");
	if (used + 1 < hh)
		ui_text(y + 2, 1, -1, A_DIM, "L1+L2 %s: site %s  layer %s  model %s  checkpoint %s",
		    sess_cmc_dtype_name(u->s), masq_fmt_bytes((uint64_t)(site_p * eb), b1, sizeof b1),
		    masq_fmt_bytes((uint64_t)(sess_layer_cmc_params(u->s, l) * eb), b2, sizeof b2),
		    masq_fmt_bytes((uint64_t)(sess_cmc_params(u->s) * eb), b3, sizeof b3),
		    masq_fmt_bytes(sess_checkpoint_bytes(u->s), b4, sizeof b4));
}

/* The per-channel ranges R^m (max|x|) of each modality at the view's site,
 * each sorted in descending order (a drawn copy), on one log2 axis, in
 * panels pw wide from row y: a caption, hh plot rows and an axis row. */
void
ui_draw_profile_panel(ui *u, const site_stats *ss, int y, int pw, int hh)
{
	double lo = INFINITY, hi = -INFINITY;
	for (int m = 0; m < MOD_COUNT; m++) {
		if (!sess_mod_present(u->s, m) || ss->count[m] == 0)
			continue;
		const float *r = ss->absmax + (size_t)m * (size_t)ss->d;
		for (int i = 0; i < ss->d; i++)
			if (r[i] > 0) {
				lo = fmin(lo, log2(r[i]));
				hi = fmax(hi, log2(r[i]));
			}
	}
	if (!(hi >= lo)) {
		ui_text(y + hh / 2, 2, -1, A_DIM, "no channel has a range yet");
		return;
	}
	lo = floor(lo) - 1;	/* the smallest range still shows */
	hi = ceil(hi);
	if (!(hi > lo))
		hi = lo + 1;
	for (int m = 0; m < MOD_COUNT; m++) {
		int px = 1 + m * (pw + 1);
		if (!sess_mod_present(u->s, m) || ss->count[m] == 0) {
			ui_text(y, px, pw, A_DIM, "%s: no tokens", modality_name(m));
			continue;
		}
		const float *r = ss->absmax + (size_t)m * (size_t)ss->d;
		float top = 0;
		for (int i = 0; i < ss->d; i++)
			top = fmaxf(top, r[i]);
		ui_text(y, px, pw, ui_mod_attr(&u->g, m) | A_BOLD, "%s R, max %.3g", modality_name(m), top);
		int used = ui_profile_draw(&u->g, y + 1, px, hh, pw, r, ss->d, lo, hi, ui_mod_attr(&u->g, m));
		char right[16];
		snprintf(right, sizeof right, "%d", ss->d);
		ui_text(y + 1 + hh, px, pw, A_DIM, "1");
		if (used > 14)
			ui_text(y + 1 + hh, px + (used - 8) / 2, 8, A_DIM, "channels");
		ui_text(y + 1 + hh, px + used - (int)strlen(right), pw, A_DIM, "%s", right);
	}
}

void
ui_draw_sparkline(ui *u, int y, int x, int w, const double *v, int n)
{
	static const char *const blocks[8] = {"\xe2\x96\x81", "\xe2\x96\x82", "\xe2\x96\x83", "\xe2\x96\x84",
		"\xe2\x96\x85", "\xe2\x96\x86", "\xe2\x96\x87", "\xe2\x96\x88"};
	static const char ascii[8] = {'_', '.', '-', '~', '=', '+', '*', '#'};
	double lo = INFINITY, hi = -INFINITY;

	if (n <= 0 || w <= 0)
		return;
	if (w > n)
		w = n;
	for (int i = 0; i < n; i++)
		if (isfinite(v[i])) {
			lo = fmin(lo, v[i]);
			hi = fmax(hi, v[i]);
		}
	for (int c = 0; c < w; c++) {
		/* the mean of the points that fall in column c */
		int i0 = (int)((long long)c * n / w), i1 = (int)((long long)(c + 1) * n / w);
		double sum = 0.0;
		int k = 0;
		for (int i = i0; i < i1; i++)
			if (isfinite(v[i])) {
				sum += v[i];
				k++;
			}
		if (k == 0)
			continue;
		int lvl = hi > lo ? (int)((sum / k - lo) / (hi - lo) * 7.0 + 0.5) : 3;
		if (u->g.utf8)
			ui_text(y, x + c, 1, A_NORMAL, "%s", blocks[lvl]);
		else
			ui_text(y, x + c, 1, A_NORMAL, "%c", ascii[lvl]);
	}
}

void
ui_draw_learn_panel(ui *u, int l, int y, int pw, int hh)
{
	const pipe_layer_result *r = sess_layer_result(u->s, l);
	const pipe_learn_result *lr = &r->learn;
	const layer_setting *ls = sess_layer_setting(u->s, l);

	if (!lr->done || lr->steps <= 0) {
		if (ls != NULL && method_learns(ls->method) && ls->epochs > 0)
			ui_text(y + hh / 2, 2, -1, A_DIM, "layer %d has not learned in this process: %s learns the cursor's layer "
			    "(%s, %d epochs)", l, ui_key_for_cmd(SC_TRAIN, SCR_LAYER), method_name(ls->method), ls->epochs);
		else
			ui_text(y + hh / 2, 2, -1, A_DIM, "layer %d does not learn (%s%s): mas, mas-cmc and usq learn with "
			    "epochs > 0 (:set assignment=%d.epochs=2)", l, ls ? method_name(ls->method) : "?",
			    ls && method_learns(ls->method) ? ", 0 epochs" : "", l);
		return;
	}
	/* the loss per step, across two panels' width */
	int w = 2 * pw + 1, n = lr->steps;
	double lo = INFINITY, hi = -INFINITY;
	for (int i = 0; i < n; i++)
		if (isfinite(lr->loss[i])) {
			lo = fmin(lo, lr->loss[i]);
			hi = fmax(hi, lr->loss[i]);
		}
	if (!(hi > lo)) {
		lo -= 1e-9;
		hi += 1e-9;
	}
	ui_text(y, 1, w, A_BOLD, "%s loss, %d x %d steps: %.4g to %.4g", learn_loss_name(ls->loss), lr->epochs,
	    lr->epochs > 0 ? n / lr->epochs : n, lr->loss[0], lr->loss[n - 1]);
	for (int c = 0; c < w && c < n; c++) {
		int i0 = n > w ? (int)((long long)c * n / w) : c, i1 = n > w ? (int)((long long)(c + 1) * n / w) : c + 1;
		double sum = 0.0;
		int k = 0;
		for (int i = i0; i < i1; i++)
			if (isfinite(lr->loss[i])) {
				sum += lr->loss[i];
				k++;
			}
		if (k == 0)
			continue;
		int cx = n > w ? c : (n > 1 ? c * (w - 1) / (n - 1) : 0);
		int ry = (int)((hi - sum / k) / (hi - lo) * (hh - 1) + 0.5);
		ui_text(y + 1 + ry, 1 + cx, 1, A_NORMAL, "%s", u->g.utf8 ? "\xe2\x80\xa2" : "*");
	}
	/* epoch boundaries on the axis row */
	for (int e = 1; e < lr->epochs && n > 1; e++) {
		int step = e * (n / lr->epochs);
		int cx = n > w ? (int)((long long)step * w / n) : step * (w - 1) / (n - 1);
		ui_text(y + 1 + hh, 1 + cx, 1, A_DIM, "|");
	}
	ui_text(y + 1 + hh, 1, 6, A_DIM, "step 1");
	/* before and after, per modality */
	int px = 2 + w + 1;
	ui_text(y, px, pw, A_BOLD, "train-mode SQNR (dB)");
	ui_text(y + 1, px, pw, A_BOLD, "%-7s %7s %7s %6s", "", "start", "learned", "gain");
	int row = y + 2;
	for (int m = 0; m < STATS_ROWS; m++) {
		if (m < MOD_COUNT && !sess_mod_present(u->s, m))
			continue;
		double a = lr->sqnr_init[m], b = lr->sqnr_learned[m];
		int attr = m < MOD_COUNT ? ui_mod_attr(&u->g, m) : (int)A_NORMAL;
		ui_text(row++, px, pw, attr, "%-7s %7.2f %7.2f %+6.2f", m < MOD_COUNT ? modality_name(m) : "all", a, b, b - a);
	}
	row++;
	ui_text(row++, px, pw, A_NORMAL, "lr %g, %s%s", ls->lr, ls->tie ? "tied, " : "",
	    lr->chain ? "on the MAS chain" : "on the deployed chain");
	if (lr->skipped > 0)
		ui_text(row++, px, pw, A_BOLD, "%d steps skipped (not finite)", lr->skipped);
	ui_text(row, px, pw, A_DIM, "learned in %.1fs", lr->seconds);
}
