/*
 * scr_help.c: the help screen, generated from the command table and the
 * key table: each session command with the key that issues it, then the
 * UI's own keys per screen.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "ui/internal.h"

/* The key that issues command cmd, marked '*' when it does only in the
 * layer view (the same key does something else on the list). */
static void
cmd_key(int cmd, char *buf, size_t n)
{
	for (const ui_key *k = ui_keys; k->key != 0; k++)
		if (k->cmd == cmd && k->help != NULL && k->action != UA_ALPHA_UP && k->action != UA_ALPHA_DOWN) {
			snprintf(buf, n, "%s%s", k->name, (k->screens & UI_ON(SCR_LIST)) ? "" : "*");
			return;
		}
	snprintf(buf, n, ":");
}

static void
help_draw(ui *u)
{
	int y = 2;
	ui_fill(0, 0, -1, ui_title_attr(&u->g));
	ui_text(0, 0, -1, ui_title_attr(&u->g), " help: keys and the session commands they run");
	ui_text(1, 0, -1, A_BOLD, " key  command          what it does");
	/* a row per command a key issues; those typed after ':' share one, so
	 * the UI's keys below still fit at 80x24 */
	char typed[256] = "";
	for (const sess_cmd *c = sess_cmds; c->name != NULL; c++) {
		char k[16];
		cmd_key(sess_cmd_id(c), k, sizeof k);
		if (strcmp(k, ":") == 0) {
			size_t l = strlen(typed);
			snprintf(typed + l, sizeof typed - l, "%s%s", l ? ", " : "", c->name);
			continue;
		}
		if (y >= LINES - 7)
			continue;
		ui_text(y, 1, 4, ui_key_attr(&u->g), "%s", k);
		ui_text(y, 6, 16, A_NORMAL, "%s", c->name);
		ui_text(y, 23, -1, A_NORMAL, "%s", c->summary);
		y++;
	}
	if (typed[0] != '\0') {
		ui_text(y, 1, 4, ui_key_attr(&u->g), ":");
		ui_text(y, 6, -1, A_NORMAL, "%s (typed by name; masq(1) describes each)", typed);
		y++;
	}
	/* the UI's own keys, a line per group of screens, wrapped */
	for (int sec = 0; sec < 8 && y < LINES - 2; sec++) {
		int x = 0, started = 0;
		for (const ui_key *k = ui_keys; k->key != 0 && y < LINES - 2; ) {
			char names[64];
			int n = ui_key_group(k, 0, names, sizeof names);
			if ((k->cmd >= 0 && k->action != UA_ALPHA_UP && k->action != UA_ALPHA_DOWN) || k->help == NULL ||
			    ui_key_section_order(k->screens) != sec) {
				k += n;
				continue;
			}
			int need = (int)(strlen(names) + strlen(k->label) + 3);
			if (!started) {
				x = ui_text(y, 0, -1, A_BOLD, " %s:", ui_key_section(k->screens));
				started = 1;
			} else if (x + need > COLS) {
				if (++y >= LINES - 2)
					break;
				x = ui_text(y, 0, -1, A_NORMAL, "   ");
			}
			x += ui_text(y, x, -1, ui_key_attr(&u->g), " %s", names);
			x += ui_text(y, x, -1, A_NORMAL, " %s ", k->label);
			k += n;
		}
		if (started)
			y++;
	}
	ui_draw_message(u, LINES - 2);
	ui_draw_status(u);
}

const ui_screen_ops ui_scr_help = {"help", NULL, NULL, NULL, help_draw};
