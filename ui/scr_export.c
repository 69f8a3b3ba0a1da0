/*
 * scr_export.c: the export dialog: the format (Tab), what it writes and
 * drops, the tensors of layer 0 as export_preview lists them, the target
 * directory typed; Enter runs the export command as a job.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "ui/internal.h"

/* Ask export_preview what the chosen format would write (or why it cannot
 * yet), and name the default target directory unless one was typed. */
static void
export_refresh(ui *u)
{
	masq_err err = {0};
	char *text;

	json_decref(u->ex_list);
	u->ex_list = NULL;
	u->ex_err[0] = '\0';
	memset(&u->ex_rep, 0, sizeof u->ex_rep);
	if (!u->ex_edited)
		snprintf(u->ex_dir, sizeof u->ex_dir, "masq-export-%lld-%s", (long long)sess_view_get(u->s)->id,
		    export_format_name(u->ex_fmt));
	text = sess_export_preview(u->s, u->ex_fmt, &u->ex_rep, &err);
	if (text == NULL) {
		snprintf(u->ex_err, sizeof u->ex_err, "%s", err.msg);
		return;
	}
	u->ex_list = json_loads(text, 0, NULL);
	free(text);
}

/* Entering the export dialog, on the current format. */
static void
export_open(ui *u)
{
	u->ex_edited = 0;
	export_refresh(u);
	ui_msg(u, MSG_INFO, "Tab picks the format; type the directory; Enter writes it");
}

/* A key in the export dialog: Tab format, typing the directory, Enter
 * export; everything but Ctrl-C is the dialog's. */
static int
export_key(ui *u, int ch)
{
	size_t n = strlen(u->ex_dir);
	if (ch == KEY_CTRL_C)
		return 0;
	if (ch == '\t' || ch == KEY_BTAB) {
		u->ex_fmt = (u->ex_fmt + (ch == '\t' ? 1 : EXPORT_FORMAT_COUNT - 1)) % EXPORT_FORMAT_COUNT;
		export_refresh(u);
	} else if (ch == KEY_ESC) {
		u->screen = u->back;
		ui_msg(u, MSG_INFO, "export cancelled");
	} else if (ch == '\n' || ch == '\r' || ch == KEY_ENTER) {
		if (n == 0) {
			ui_msg(u, MSG_ERROR, "type a target directory first");
			return 1;
		}
		/* long work: a job, whose end returns from the dialog */
		ui_issue(u, SC_EXPORT, json_pack("{s:s, s:s}", "format", export_format_name(u->ex_fmt), "out", u->ex_dir));
	} else if (ch == KEY_BACKSPACE || ch == 127 || ch == 8) {
		if (n > 0)
			u->ex_dir[n - 1] = '\0';
		u->ex_edited = 1;
	} else if (ch == KEY_CTRL_U) {
		u->ex_dir[0] = '\0';
		u->ex_edited = 1;
	} else if (ch >= 32 && ch < 127 && n + 1 < sizeof u->ex_dir) {
		if (!u->ex_edited)
			n = 0;	/* typing replaces the proposed directory */
		u->ex_dir[n] = (char)ch;
		u->ex_dir[n + 1] = '\0';
		u->ex_edited = 1;
	}
	return 1;
}

/* Text wrapped at word boundaries into w columns, at most maxl lines from
 * row y; returns the lines used. */
static int
draw_wrapped(int y, int x, int w, int maxl, int attr, const char *text)
{
	int used = 0;
	const char *s = text;
	while (*s && used < maxl) {
		int n = (int)strlen(s);
		if (n > w) {
			n = w;
			while (n > 0 && s[n] != ' ')
				n--;
			if (n == 0)
				n = w;
		}
		ui_text(y + used, x, w, attr, "%.*s", n, s);
		s += n;
		while (*s == ' ')
			s++;
		used++;
	}
	return used;
}

/* Layer 0's linear tensors of the export preview, the side file's first,
 * in at most room rows from y; returns the next row. */
static int
export_draw_tensors(ui *u, int y, int room)
{
	static const char *const files[2] = {"masquant.safetensors", NULL};
	for (int pass = 0; pass < 2; pass++) {
		size_t i;
		json_t *t;
		int head = 0, limit = pass == 0 ? room / 2 : room;	/* half the rows for the side file */
		json_array_foreach(u->ex_list, i, t) {
			const char *name = json_string_value(json_object_get(t, "name"));
			const char *file = json_string_value(json_object_get(t, "file"));
			const char *at = name ? strstr(name, "layers.0.") : NULL;
			if (limit <= 1)
				break;
			if (at == NULL || file == NULL || strstr(at, "_proj.") == NULL ||
			    (pass == 0) != (strcmp(file, files[0]) == 0))
				continue;
			if (!head) {
				ui_text(y++, 2, -1, A_DIM, "in %s, layer 0:", file);
				limit--;
				room--;
				head = 1;
			}
			char shape[64] = "";
			json_t *d;
			size_t j;
			int sn = 0;
			json_array_foreach(json_object_get(t, "shape"), j, d)
				sn += snprintf(shape + sn, sizeof shape - (size_t)sn, "%s%lld", j ? ", " : "",
				    (long long)json_integer_value(d));
			ui_text(y++, 4, -1, A_NORMAL, "%-46s %-4s [%s]", at, json_string_value(json_object_get(t, "dtype")),
			    shape);
			limit--;
			room--;
		}
	}
	return y;
}

/* The export dialog. */
static void
export_draw(ui *u)
{
	int y = 2;
	ui_fill(0, 0, -1, ui_title_attr(&u->g));
	ui_text(0, 0, -1, ui_title_attr(&u->g), " export session %lld", (long long)sess_view_get(u->s)->id);
	int x = ui_text(y, 1, -1, A_NORMAL, "format ");
	for (int f = 0; f < EXPORT_FORMAT_COUNT; f++)
		x += ui_text(y, 1 + x, -1, f == u->ex_fmt ? (int)(A_REVERSE | A_BOLD) : A_NORMAL,
		    f == u->ex_fmt ? "[%s]" : " %s ", export_format_name(f));
	y += 2;
	y += draw_wrapped(y, 1, COLS - 2, 3, A_NORMAL, export_format_describe(u->ex_fmt));
	if (u->ex_list != NULL) {
		char drops[1100];
		snprintf(drops, sizeof drops, "drops: %s", u->ex_rep.dropped[0] ? u->ex_rep.dropped : "nothing");
		y += draw_wrapped(y, 1, COLS - 2, 4, A_NORMAL, drops);
		/* tensors per file */
		json_t *files = json_object(), *t;
		size_t i;
		json_array_foreach(u->ex_list, i, t) {
			const char *f = json_string_value(json_object_get(t, "file"));
			json_t *c = json_object_get(files, f ? f : "?");
			json_object_set_new(files, f ? f : "?", json_integer(c ? json_integer_value(c) + 1 : 1));
		}
		char line[512];
		int n = snprintf(line, sizeof line, "will write %zu tensors:", json_array_size(u->ex_list));
		const char *k;
		json_t *v;
		json_object_foreach(files, k, v)
			if (n < (int)sizeof line)
				n += snprintf(line + n, sizeof line - (size_t)n, " %s %lld", k, (long long)json_integer_value(v));
		json_decref(files);
		ui_text(y++, 1, -1, A_BOLD, "%s", line);
		if (u->ex_rep.source_bytes > 0) {
			char sizes[1024];
			y += draw_wrapped(y, 1, COLS - 2, 2, u->ex_rep.planned_bytes > u->ex_rep.source_bytes ?
			    ui_error_attr(&u->g) : (int)A_NORMAL, export_report_sizes(&u->ex_rep, sizes, sizeof sizes));
		}
		/* layer 0's linears, per file: the side file first */
		y = export_draw_tensors(u, y, LINES - 5 - y);
	} else {
		char drops[1100];
		snprintf(drops, sizeof drops, "drops: %s", export_format_drops(u->ex_fmt));
		y += draw_wrapped(y, 1, COLS - 2, 2, A_NORMAL, drops);
		y += draw_wrapped(y, 1, COLS - 2, 3, ui_error_attr(&u->g), u->ex_err);
	}
	x = ui_text(LINES - 4, 1, -1, A_BOLD, "target directory: ");
	x += ui_text(LINES - 4, 1 + x, -1, A_NORMAL, "%s", u->ex_dir);
	ui_text(LINES - 4, 1 + x, 1, A_REVERSE, " ");
	ui_draw_message(u, LINES - 3);
	const char *kv[] = {"Tab", "format", "type", "the directory", "^U", "clear", "Enter", "export", "Esc", "cancel", NULL};
	ui_draw_keys(u, LINES - 2, kv);
	ui_draw_status(u);
}

const ui_screen_ops ui_scr_export = {"export", export_open, export_key, NULL, export_draw};
