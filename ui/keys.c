/*
 * keys.c: the one table of the workbench's keys, commands and the UI's own
 * actions alike.  The key loop (ui.c), the help screen (scr_help.c), the
 * key list of masq(1) (tests/keytable --mdoc) and the test of keys read it.
 */
#include "config.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "ui/internal.h"

#define L UI_ON(SCR_LIST)
#define V UI_ON(SCR_LAYER)
#define O UI_ON(SCR_OVERVIEW)
#define M UI_ON_MAIN
#define X UI_ON(SCR_EXPORT)

const ui_key ui_keys[] = {
	/* the session's commands */
	{'c', "c", M, UA_CMD, SC_CALIBRATE, "calibrate", "calibrate the cursor's layer: its FP forward with statistics"},
	{'m', "m", M, UA_METHOD, SC_SET_METHOD, "method", "cycle the selected layer's method (rtn, sq, mas, mas-cmc, usq)"},
	{'b', "b", M, UA_BITS, SC_SET_BITS, "bits", "type the weight and activation bits"},
	{'a', "a", V | O, UA_ALPHA, SC_SET_ALPHA, "alpha=", "type the alpha of the view's group and modality"},
	{'s', "s", M, UA_CMD, SC_SEARCH, "search", "grid-search alpha for the cursor's layer (U undoes what it set)"},
	{'U', "U", M, UA_UNDO, SC_UNDO, "undo", "restore the settings from before the last command that changed them"},
	{'r', "r", M, UA_RANK, SC_SET_RANK, "rank", "type the compensation rank"},
	{'l', "l", M, UA_CMD, SC_TRAIN, "learn", "learn the cursor layer's smoothing factors (mas, mas-cmc, usq; epochs > 0)"},
	{'x', "x", M, UA_CMD, SC_QUANTIZE, "quantize", "quantize the cursor's layer and measure it (learning first if it must)"},
	{'n', "n", M, UA_CMD, SC_NEXT, "next", "commit the cursor's layer and move to the next"},
	{'f', "f", M, UA_CMD, SC_FINISH, "finish", "after the last layer: the model summary"},
	{'e', "e", M, UA_EXPORT, SC_EXPORT, "export", "the export dialog"},
	{':', ":", M, UA_COMMAND, -1, "any command", "type any command by name, e.g. :set assignment=1.qkv.alpha.vision=0.6"},
	/* runs */
	{'a', "a", L, UA_RUN_ALL, -1, "run all", "run and commit every remaining layer (asks first): calibrate, search, learn, quantize, commit"},
	{'g', "g", M, UA_RUN_TO, -1, "run to", "run from the cursor up to a typed layer"},
	{'D', "D", L | O, UA_DIFF, -1, "diff", "compare this session with another of the same model, layer by layer"},
	/* everywhere */
	{'?', "?", UI_ON_ALL, UA_HELP, -1, "help", "this help"},
	{'Q', "Q", UI_ON_ALL, UA_QUIT, -1, "quit", "quit (asks when the cursor's layer is not committed)"},
	{KEY_CTRL_C, "Ctrl-C", UI_ON_ALL, UA_QUIT, -1, "quit", "quit, as Q"},
	{'q', "q", L | O, UA_QUIT, -1, "quit", "quit, as Q (in the layer view and the help: close them)"},
	/* moving */
	{KEY_UP, "Up", L | O, UA_UP, -1, "move", "the layer above"},
	{'k', "k", L | O, UA_UP, -1, "move", "the layer above"},
	{KEY_DOWN, "Down", L | O, UA_DOWN, -1, "move", "the layer below"},
	{'j', "j", L | O, UA_DOWN, -1, "move", "the layer below"},
	{KEY_PPAGE, "PgUp", L | O, UA_PGUP, -1, "move", "ten layers up"},
	{KEY_NPAGE, "PgDn", L | O, UA_PGDN, -1, "move", "ten layers down"},
	{KEY_HOME, "Home", L | O, UA_HOME, -1, "move", "the first layer"},
	{KEY_END, "End", L | O, UA_END, -1, "move", "the last layer"},
	{'\r', "Enter", L | O, UA_OPEN, -1, "layer view", "open the selected layer's view"},
	{'\n', "Enter", L | O, UA_OPEN, -1, "layer view", NULL},
	{KEY_ENTER, "Enter", L | O, UA_OPEN, -1, "layer view", NULL},
	{'o', "o", L | O, UA_OVERVIEW, -1, "overview", "the overview of every layer, and back"},
	{'\t', "Tab", L | O, UA_OVERVIEW, -1, "overview", "the overview, and back"},
	{KEY_ESC, "Esc", O, UA_LIST, -1, "the list", "back to the layer list"},
	/* the layer view */
	{KEY_ESC, "Esc", V, UA_BACK, -1, "back", "back to the list (or the overview it was opened from)"},
	{'q', "q", V, UA_BACK, -1, "back", "back, as Esc"},
	{KEY_BACKSPACE, "Backspace", V, UA_BACK, -1, "back", NULL},
	{127, "Backspace", V, UA_BACK, -1, "back", NULL},
	{'\t', "Tab", V, UA_SITE_NEXT, -1, "site", "the next input site: qkv, o, gateup, down"},
	{KEY_BTAB, "Shift-Tab", V, UA_SITE_PREV, -1, "site", "the previous input site"},
	{KEY_UP, "Up", V, UA_GROUP_PREV, -1, "group", "the previous smoothing group"},
	{'k', "k", V, UA_GROUP_PREV, -1, "group", "the previous smoothing group"},
	{KEY_DOWN, "Down", V, UA_GROUP_NEXT, -1, "group", "the next smoothing group"},
	{'j', "j", V, UA_GROUP_NEXT, -1, "group", "the next smoothing group"},
	{KEY_LEFT, "Left", V, UA_ROW_PREV, -1, "modality", "the previous modality to tune"},
	{KEY_RIGHT, "Right", V, UA_ROW_NEXT, -1, "modality", "the next modality to tune"},
	{'+', "+", V, UA_ALPHA_UP, SC_SET_ALPHA, "alpha ±0.05", "alpha of the group and modality up by 0.05"},
	{'=', "=", V, UA_ALPHA_UP, SC_SET_ALPHA, "alpha ±0.05", NULL},
	{'-', "-", V, UA_ALPHA_DOWN, SC_SET_ALPHA, "alpha ±0.05", "alpha down by 0.05"},
	{'_', "_", V, UA_ALPHA_DOWN, SC_SET_ALPHA, "alpha ±0.05", NULL},
	{'v', "v", V, UA_PANEL, -1, "panel", "the top panel: histograms, alpha search, rank view, range profiles, learning"},
	{'u', "u", V, UA_COMPARE, -1, "sq against mas", "the group's SQNR under sq against mas, on the token sample"},
	/* the overview */
	{KEY_LEFT, "Left", O, UA_SORT_PREV, -1, "sort", "sort by the column to the left"},
	{KEY_RIGHT, "Right", O, UA_SORT_NEXT, -1, "sort", "sort by the column to the right"},
	{'i', "i", O, UA_INVERT, -1, "invert", "invert the order"},
	{'w', "w", O, UA_WORST, -1, "worst layer", "select the worst layer for the sorted column's modality"},
	{'t', "t", O, UA_THRESHOLD, -1, "threshold", "type the SQNR threshold below which figures are marked"},
	{'v', "v", O, UA_OWN, -1, "own error", "the SQNR columns: each layer's output, the error it adds itself (sensitivity), the held-out output"},
	{0, NULL, 0, 0, -1, NULL, NULL}
};

/* The screens a help line speaks of, and its title, in the help's order. */
static const struct { unsigned screens; const char *title; } sections[] = {
	{UI_ON_ALL, "anywhere"}, {M, "anywhere"}, {L, "list"}, {L | O, "list, overview"}, {V, "layer view"},
	{O, "overview"}, {V | O, "layer view, overview"},
};

int
ui_key_section_order(unsigned screens)
{
	for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
		if (sections[i].screens == screens)
			return i <= 1 ? 0 : (int)i - 1;
	return (int)(sizeof sections / sizeof sections[0]);
}

const char *
ui_key_section(unsigned screens)
{
	for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
		if (sections[i].screens == screens)
			return sections[i].title;
	return "some screens";
}

int
ui_key_group(const ui_key *k, int aliases, char *names, size_t n)
{
	int used = 1;
	snprintf(names, n, "%s", k->name);
	while (k[used].key != 0 && k[used].screens == k->screens && k[used].label != NULL && k->label != NULL &&
	    strcmp(k[used].label, k->label) == 0) {
		int shown = aliases || k[used].help != NULL;
		/* a name already there ("Enter" three times) once */
		char pat[40];
		snprintf(pat, sizeof pat, "/%s/", k[used].name);
		char have[80];
		snprintf(have, sizeof have, "/%s/", names);
		if (shown && strstr(have, pat) == NULL) {
			size_t l = strlen(names);
			snprintf(names + l, n - l, "/%s", k[used].name);
		}
		used++;
	}
	return used;
}

const ui_key *
ui_key_find(int ch, int scr)
{
	for (const ui_key *k = ui_keys; k->key != 0; k++)
		if (k->key == ch && (k->screens & UI_ON(scr)))
			return k;
	return NULL;
}

const char *
ui_key_for_cmd(int cmd, int scr)
{
	for (const ui_key *k = ui_keys; k->key != 0; k++)
		if (k->cmd == cmd && k->help != NULL && (k->screens & UI_ON(scr)))
			return k->name;
	return ":";
}
