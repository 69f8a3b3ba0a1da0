/*
 * scr_diff.c: this session against another of the same model, layer by
 * layer (sess_diff): every setting that differs and the SQNR per
 * modality everywhere, the difference beside it.  D on the list asks for
 * the other session; the rows scroll with the moving keys; Esc or q
 * returns.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ui/internal.h"

static int diff_act(ui *u, int action);

/* D: compare with session id (restored read-only beside this one). */
void
ui_diff_open(ui *u, long id)
{
	masq_err err = {0};
	sess *o = NULL;
	int fo;
	sdb *db = sess_db(u->s);
	if (db == NULL) {
		ui_msg(u, MSG_ERROR, "this session is not recorded: there is no other to compare it with");
		return;
	}
	if (id == sess_view_get(u->s)->id) {
		ui_msg(u, MSG_ERROR, "session %ld is this one", id);
		return;
	}
	if (sess_attach(&o, db, id, NULL, NULL, 0, &err) < 0 || sess_restore(o, &fo, &err) < 0) {
		ui_msg(u, MSG_ERROR, "session %ld: %s", id, err.msg);
		sess_free(o);
		return;
	}
	json_t *rows = sess_diff(o, fo, u->s, sess_view_get(u->s)->finished, &err);
	sess_free(o);
	if (rows == NULL) {
		ui_msg(u, MSG_ERROR, "session %ld against this one: %s", id, err.msg);
		return;
	}
	json_decref(u->diff_rows);
	u->diff_rows = rows;
	u->diff_other = id;
	u->diff_top = 0;
	u->diff_back = u->screen;
	u->screen = SCR_DIFF;
	ui_msg(u, MSG_INFO, "session %ld (a) against this one (b): %zu rows", id, json_array_size(rows));
}

/* The diff screen's keys: moving, and back. */
static int
diff_key(ui *u, int ch)
{
	static const struct { int ch, action; } map[] = {
		{KEY_UP, UA_UP}, {'k', UA_UP}, {KEY_DOWN, UA_DOWN}, {'j', UA_DOWN}, {KEY_PPAGE, UA_PGUP},
		{KEY_NPAGE, UA_PGDN}, {KEY_HOME, UA_HOME}, {KEY_END, UA_END}, {KEY_ESC, UA_BACK}, {'q', UA_BACK},
		{KEY_BACKSPACE, UA_BACK}, {127, UA_BACK},
	};
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (map[i].ch == ch) {
			if (map[i].action == UA_BACK)
				ui_msg(u, MSG_INFO, " ");
			return diff_act(u, map[i].action);
		}
	return 0;	/* the keys of every screen: help, quit */
}

static int
diff_act(ui *u, int action)
{
	int n = (int)json_array_size(u->diff_rows), rows = LINES - 6;
	switch (action) {
	case UA_UP: if (u->diff_top > 0) u->diff_top--; return 1;
	case UA_DOWN: if (u->diff_top < n - rows) u->diff_top++; return 1;
	case UA_PGUP: u->diff_top = u->diff_top > rows ? u->diff_top - rows : 0; return 1;
	case UA_PGDN: u->diff_top = u->diff_top + rows < n - rows ? u->diff_top + rows : (n > rows ? n - rows : 0); return 1;
	case UA_HOME: u->diff_top = 0; return 1;
	case UA_END: u->diff_top = n > rows ? n - rows : 0; return 1;
	case UA_BACK: case UA_LIST: case UA_QUIT: u->screen = u->diff_back; return 1;
	}
	return 0;
}

static void
cell(char *t, size_t n, json_t *v, const char *what)
{
	char b[32];
	if (v == NULL || json_is_null(v))
		snprintf(t, n, "-");
	else if (strstr(what, "bytes") != NULL && json_is_number(v))
		snprintf(t, n, "%s", masq_fmt_bytes((uint64_t)fabs(json_number_value(v)), b, sizeof b));
	else if (json_is_integer(v))
		snprintf(t, n, "%lld", (long long)json_integer_value(v));
	else if (json_is_real(v))
		snprintf(t, n, strncmp(what, "SQNR", 4) == 0 ? "%.2f" : "%.4g", json_real_value(v));
	else if (json_is_string(v))
		snprintf(t, n, "%.12s", json_string_value(v));
	else
		snprintf(t, n, "[...]");
}

static void
diff_draw(ui *u)
{
	int n = (int)json_array_size(u->diff_rows), rows = LINES - 6;
	ui_fill(0, 0, -1, ui_title_attr(&u->g));
	ui_text(0, 0, -1, ui_title_attr(&u->g), " session %lld (a) against session %lld (b)%swhat differs, and the SQNR",
	    (long long)u->diff_other, (long long)sess_view_get(u->s)->id, u->g.sep);
	ui_text(1, 0, -1, A_BOLD, " %-6s %-24s %12s %12s %10s", "layer", "", "a", "b", "b - a");
	for (int i = 0; i < rows && u->diff_top + i < n; i++) {
		json_t *r = json_array_get(u->diff_rows, (size_t)(u->diff_top + i)), *ly = json_object_get(r, "layer");
		const char *what = json_string_value(json_object_get(r, "what"));
		char a[32], b[32], d[32] = "";
		cell(a, sizeof a, json_object_get(r, "a"), what);
		cell(b, sizeof b, json_object_get(r, "b"), what);
		json_t *dd = json_object_get(r, "b_minus_a");
		int attr = A_NORMAL;
		if (dd != NULL) {
			double x = json_real_value(dd);
			if (strstr(what, "bytes") != NULL) {
				char t[32];
				snprintf(d, sizeof d, "%s%s", x < 0 ? "-" : "+", masq_fmt_bytes((uint64_t)fabs(x), t, sizeof t));
			} else {
				snprintf(d, sizeof d, strncmp(what, "SQNR", 4) == 0 ? "%+.2f" : "%+.3g", x);
				if (strncmp(what, "SQNR", 4) == 0)
					attr = x < -0.05 ? ui_error_attr(&u->g) : x > 0.05 ? (int)A_BOLD : (int)A_NORMAL;
			}
		}
		char l[16];
		if (json_is_integer(ly))
			snprintf(l, sizeof l, "%lld", (long long)json_integer_value(ly));
		else
			snprintf(l, sizeof l, "model");
		int x = ui_text(2 + i, 0, -1, A_NORMAL, " %-6s %-24s %12s %12s ", l, what ? what : "", a, b);
		ui_text(2 + i, x, -1, attr, "%10s", d);
	}
	ui_draw_message(u, LINES - 3);
	const char *kv[] = {u->g.updown, "scroll", "PgUp/PgDn", "page", "Esc", "back", NULL};
	ui_draw_keys(u, LINES - 2, kv);
	ui_draw_status(u);
}

const ui_screen_ops ui_scr_diff = {"diff", NULL, diff_key, diff_act, diff_draw};
