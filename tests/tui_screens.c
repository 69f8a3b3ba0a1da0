/*
 * tui_screens.c: drives the workbench (ui/) for tests/screens.sh.
 *
 *   tui_screens --model DIR --calib FILE --db FILE --out DIR
 *
 * Starts a recorded session on the model, starts curses with newterm on
 * /dev/null (TERM xterm, 80x24 from LINES and COLUMNS), and plays a key
 * script through the normal input path: each key is pushed with ungetch
 * and read by ui_step through wgetch.  After each step the screen is
 * written to OUT/NN-name.txt (ui_screen_dump); screens.sh masks timings and
 * compares them with tests/screens/.  Checks that need the session's state
 * (the preview changed with alpha, the session finished, the export was
 * written) are TAP lines here.  Without arguments it prints a TAP skip
 * (make check runs every check program).
 */
#include "config.h"

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "sessions/db.h"
#include "sessions/session.h"
#include "tests/tap.h"
#include "ui/curses.h"
#include "ui/ui.h"

enum action { A_NONE, A_RESIZE, A_ASCII, A_UTF8 };

struct step {
	const char *name;
	int keys[8];		/* 0-terminated */
	int action;		/* done before the keys */
	int lines, cols;	/* A_RESIZE */
	int busy;		/* also keep the last progress screen as NN-name-busy.txt */
};

/* The script: start on the demo (mas-cmc, learning 2 epochs), step two
 * layers (learn with l and watch it, quantize), open a layer's view (its
 * panels: the alpha search, the rank view, the range profiles, the
 * learning curve, the log2|x| histograms), change an alpha and see the
 * preview change, export, quit. */
static const struct step script[] = {
	{"start", {0}, A_NONE, 0, 0, 0},
	{"help", {'?'}, A_NONE, 0, 0, 0},
	{"calibrate-0", {'?', 'c'}, A_NONE, 0, 0, 1},
	{"search-0", {'\r', 's'}, A_NONE, 0, 0, 0},
	{"learn-0", {'l'}, A_NONE, 0, 0, 1},
	{"rank-0", {'x', 'v', 'v', 'v'}, A_NONE, 0, 0, 0},
	{"next-0", {'q', 'n'}, A_NONE, 0, 0, 0},
	{"one-cursor", {KEY_UP, 'c'}, A_NONE, 0, 0, 0},
	{"calibrate-1", {KEY_DOWN, 'c'}, A_NONE, 0, 0, 0},
	{"layer-view", {'\r'}, A_NONE, 0, 0, 0},
	{"alpha-up", {'+'}, A_NONE, 0, 0, 0},
	{"alpha-typed-2", {'a', '9', 21, '2', '\r'}, A_NONE, 0, 0, 0},
	{"ascii", {0}, A_ASCII, 0, 0, 0},
	{"site-gateup", {'\t', '\t'}, A_UTF8, 0, 0, 0},
	{"profile-gateup", {'v'}, A_NONE, 0, 0, 0},
	{"learn-gateup", {'v'}, A_NONE, 0, 0, 0},
	{"hist-gateup", {'v'}, A_NONE, 0, 0, 0},
	{"sq-mas-gateup", {'u'}, A_NONE, 0, 0, 0},
	{"sq-mas-o", {KEY_UP}, A_NONE, 0, 0, 0},
	{"quit-ask", {'q', 'q'}, A_NONE, 0, 0, 0},
	{"quit-no", {'n'}, A_NONE, 0, 0, 0},
	{"run-to-ask", {'g'}, A_NONE, 0, 0, 0},
	{"run-to-bad", {'7', '\r'}, A_NONE, 0, 0, 0},
	{"run-all-ask", {'a'}, A_NONE, 0, 0, 0},
	{"run-all-1", {'y'}, A_NONE, 0, 0, 1},
	{"overview", {'o'}, A_NONE, 0, 0, 0},
	{"overview-by-vision", {KEY_LEFT, KEY_LEFT, KEY_LEFT}, A_NONE, 0, 0, 0},
	{"overview-worst", {'w'}, A_NONE, 0, 0, 0},
	{"overview-threshold", {'t', '4', '0', '\r'}, A_NONE, 0, 0, 0},
	{"overview-invert", {'i'}, A_NONE, 0, 0, 0},
	{"overview-own", {'v', 'w'}, A_NONE, 0, 0, 0},
	{"finish", {27, 'f'}, A_NONE, 0, 0, 0},
	{"export-masquant", {'e'}, A_NONE, 0, 0, 0},
	{"export-fake", {'\t'}, A_NONE, 0, 0, 0},
	{"export-compressed", {'\t'}, A_NONE, 0, 0, 0},
	{"export-written", {'\t', '\r'}, A_NONE, 0, 0, 0},
	{"resize-100x30", {0}, A_RESIZE, 30, 100, 0},
	{"resize-70x20", {0}, A_RESIZE, 20, 70, 0},
	{"resize-80x24", {0}, A_RESIZE, 24, 80, 0},
	{"quit", {'Q'}, A_NONE, 0, 0, 0},
};
#define NSTEPS (sizeof script / sizeof script[0])

static char busy_path[4096];

/* The progress screens' clock: a quarter second per reading, so their
 * figures do not depend on the machine. */
static double
fake_clock(void)
{
	static double t;
	return t += 0.25;
}

/* ui_set_sync's hook: the progress screen just drawn, to busy_path. */
static void
busy_dump(void *arg)
{
	(void)arg;
	FILE *fp = fopen(busy_path, "w");
	if (fp != NULL) {
		ui_screen_dump(fp);
		fclose(fp);
	}
}

/* Write the screen to DIR/NN-name.txt. */
static int
dump(const char *dir, int i, const char *name)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%02d-%s.txt", dir, i, name);
	FILE *fp = fopen(path, "w");
	if (fp == NULL)
		return -1;
	ui_screen_dump(fp);
	return fclose(fp);
}

int
main(int argc, char **argv)
{
	const char *model_dir = NULL, *calib_path = NULL, *db_path = NULL, *out = NULL;
	masq_err err = {0};
	sdb *db = NULL;
	sess *s = NULL;
	pipe_opts o;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--model") == 0)
			model_dir = argv[i + 1];
		else if (strcmp(argv[i], "--calib") == 0)
			calib_path = argv[i + 1];
		else if (strcmp(argv[i], "--db") == 0)
			db_path = argv[i + 1];
		else if (strcmp(argv[i], "--out") == 0)
			out = argv[i + 1];
	}
	if (model_dir == NULL || calib_path == NULL || db_path == NULL || out == NULL) {
		printf("1..0 # SKIP the driver of tests/screens.sh\n");
		return 0;
	}
	setenv("TERM", "xterm", 1);
	setenv("LINES", "24", 1);
	setenv("COLUMNS", "80", 1);
	setlocale(LC_CTYPE, "");

	pipe_opts_default(&o);
	o.epochs = 2;	/* as masq run */
	if (sdb_open(&db, db_path, SDB_CREATE, &err) < 0 || sess_create(&s, db, &o, model_dir, calib_path, 0, &err) < 0) {
		fprintf(stderr, "tui_screens: %s\n", err.msg);
		return 99;
	}
	json_t *args = json_pack("{s:s, s:s}", "model", model_dir, "calib", calib_path);
	int rc = sess_dispatch(s, SC_OPEN, args, NULL, &err);
	json_decref(args);
	tap_ok(rc == 0, "the session opens the demo%s%s", rc ? ": " : "", rc ? err.msg : "");

	FILE *fin = fopen("/dev/null", "r"), *fout = fopen("/dev/null", "w");
	SCREEN *scr = newterm("xterm", fout, fin);
	if (scr == NULL) {
		printf("1..0 # SKIP newterm cannot start xterm here\n");
		return 0;
	}
	set_term(scr);
	ui_opts uo;
	ui_opts_default(&uo);
	uo.db_label = db_path;
	ui *u = ui_new(s, &uo);
	snprintf(busy_path, sizeof busy_path, "%s/busy.tmp", out);
	ui_set_sync(u, 1, busy_dump, NULL);
	ui_set_clock(u, fake_clock);
	tap_ok(LINES == 24 && COLS == 80, "curses starts at 80x24 (got %dx%d)", COLS, LINES);
	ui_draw(u);

	pipe_preview pv0, pv1;
	int have0 = 0, have1 = 0, quit = 0, g, m;
	for (size_t i = 0; i < NSTEPS && !quit; i++) {
		const struct step *st = &script[i];
		if (st->action == A_RESIZE) {
			resizeterm(st->lines, st->cols);
			/* resizeterm queues KEY_RESIZE itself when the size changed;
			 * push one otherwise, so the UI always sees it */
			nodelay(stdscr, TRUE);
			int ch = getch();
			nodelay(stdscr, FALSE);
			ungetch(ch == ERR ? KEY_RESIZE : ch);
			quit = ui_step(u);
		} else if (st->action == A_ASCII || st->action == A_UTF8) {
			ui_set_ascii(u, st->action == A_ASCII);
			ui_draw(u);
		}
		for (int k = 0; k < 8 && st->keys[k] != 0 && !quit; k++) {
			ungetch(st->keys[k]);
			quit = ui_step(u);
		}
		if (strcmp(st->name, "layer-view") == 0)
			have0 = ui_preview_get(u, &pv0, &g, &m) && g == SITE_QKV && m == MOD_VISION;
		if (strcmp(st->name, "alpha-up") == 0)
			have1 = ui_preview_get(u, &pv1, &g, &m) && g == SITE_QKV && m == MOD_VISION;
		if (strcmp(st->name, "sq-mas-o") == 0)
			tap_ok(sess_layer_setting(s, 1)->method == METHOD_MAS_CMC && sess_view_get(s)->cursor == 1 &&
			    sess_layer_state(s, 1) == SLS_CALIBRATED,
			    "previewing sq and mas leaves layer 1's method (mas-cmc) and state alone");
		if (!quit)
			dump(out, (int)i, st->name);
		if (st->busy) {
			char to[4200];
			snprintf(to, sizeof to, "%s/%02zu-%s-busy.txt", out, i, st->name);
			tap_ok(rename(busy_path, to) == 0, "step %02zu %s drew a progress screen", i, st->name);
		}
		remove(busy_path);
		tap_ok(quit == (i == NSTEPS - 1), "step %02zu %s%s", i, st->name, quit ? " (quit)" : "");
	}
	tap_ok(have0, "the layer view previews qkv for vision on opening");
	tap_ok(have1, "the preview is shown after '+'");
	if (have0 && have1) {
		double a = pv0.sqnr[LIN_Q][MOD_VISION], b = pv1.sqnr[LIN_Q][MOD_VISION];
		tap_ok(isfinite(a) && isfinite(b) && a != b, "q_proj's vision SQNR preview changes with alpha: %.4f -> %.4f dB",
		    a, b);
	}
	tap_ok(fabsf(sess_layer_setting(s, 1)->alpha[GRP_QKV][MOD_VISION] - 0.55f) < 1e-6f,
	    "layer 1 qkv vision alpha is 0.55 after '+'");
	tap_ok(sess_view_get(s)->finished, "the session finished");
	struct stat sb;
	char ex[64];
	snprintf(ex, sizeof ex, "masq-export-%lld-masquant", (long long)sess_view_get(s)->id);
	tap_ok(stat(ex, &sb) == 0 && S_ISDIR(sb.st_mode), "the export dialog wrote %s", ex);

	ui_free(u);
	endwin();
	delscreen(scr);
	fclose(fin);
	fclose(fout);
	sess_free(s);
	sdb_close(db);
	return tap_done();
}
