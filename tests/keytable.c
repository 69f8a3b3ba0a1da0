/*
 * keytable.c: the workbench's key table (ui_keys, ui/keys.c) as the
 * documentation and the tests see it.
 *
 *	tests/keytable            TAP: the table is well formed (every key
 *	                          acts somewhere, once per screen; names,
 *	                          labels, help; the commands it issues exist;
 *	                          every session command a front end needs has
 *	                          a key or is typed with ':')
 *	tests/keytable --list     one line per key: NAME <tab> SCREENS <tab>
 *	                          COMMAND (or -) <tab> HELP
 *	tests/keytable --mdoc     the key list of masq(1), THE WORKBENCH
 *
 * tests/docs.sh checks that masq(1) holds the --mdoc list word for word.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "tests/tap.h"
#include "ui/internal.h"

static const char *const scr_names[SCR_COUNT] = {"list", "layer", "overview", "help", "export"};

/* The screens of k as words, "," joined. */
static void
keytable_screens(const ui_key *k, char *buf, size_t n)
{
	size_t used = 0;
	buf[0] = '\0';
	for (int s = 0; s < SCR_COUNT; s++)
		if (k->screens & UI_ON(s))
			used += (size_t)snprintf(buf + used, n - used, "%s%s", used ? "," : "", scr_names[s]);
}

static void
keytable_list(void)
{
	for (const ui_key *k = ui_keys; k->key != 0; k++) {
		char sc[64];
		if (k->help == NULL)
			continue;
		keytable_screens(k, sc, sizeof sc);
		printf("%s\t%s\t%s\t%s\n", k->name, sc, k->cmd >= 0 ? sess_cmds[k->cmd].name : "-", k->help);
	}
}

/* mdoc text: a line must not start with a dot or a quote. */
static void
keytable_text(const char *s)
{
	if (s[0] == '.' || s[0] == '\'')
		fputs("\\&", stdout);
	for (const char *p = s; *p; p++)
		if (*p == '\\')
			fputs("\\e", stdout);
		else
			putchar(*p);
	putchar('\n');
}

/* The key list of THE WORKBENCH: per group of aliases its names, where it
 * acts, the command it issues and what it does. */
static void
keytable_mdoc(void)
{
	puts(".Bl -tag -width Ds");
	for (const ui_key *k = ui_keys; k->key != 0; ) {
		char names[64];
		int n = ui_key_group(k, 1, names, sizeof names);
		if (k->help == NULL) {
			k += n;
			continue;
		}
		printf(".It");
		char buf[64];
		snprintf(buf, sizeof buf, "%s", names);
		for (char *t = strtok(buf, "/"), *first = t; t != NULL; t = strtok(NULL, "/")) {
			if (t != first)
				printf(" ,");
			/* mdoc's delimiters need \& to be taken as an argument */
			printf(" Ic %s%s", strlen(t) == 1 && strchr("([.,:;)]?!|", t[0]) ? "\\&" : "", t);
		}
		putchar('\n');
		if (k->cmd >= 0)
			printf(".Cm %s :\n", sess_cmds[k->cmd].name);
		char line[256];
		const char *sec = ui_key_section(k->screens);
		snprintf(line, sizeof line, "%c%s: %s.", sec[0] - 32, sec + 1, k->help);
		keytable_text(line);
		k += n;
	}
	puts(".El");
}

static int
keytable_check(void)
{
	int n = 0;
	for (const ui_key *k = ui_keys; k->key != 0; k++, n++) {
		tap_ok(k->name != NULL && k->name[0] != '\0' && k->label != NULL && k->label[0] != '\0',
		    "key %d (%s): a name and a label", n, k->name ? k->name : "?");
		tap_ok(k->screens != 0 && (k->screens & ~((1u << SCR_COUNT) - 1)) == 0, "key %s acts on some screen",
		    k->name);
		tap_ok(k->action >= 0 && k->action < UA_COUNT, "key %s: a known action", k->name);
		tap_ok(k->cmd >= -1 && k->cmd < SC_COUNT, "key %s: its command exists", k->name);
		tap_ok(k->help != NULL || (n > 0 && k[-1].action == k->action && k[-1].screens == k->screens),
		    "key %s: a help text, or an alias of the entry before", k->name);
		int dup = 0;
		for (const ui_key *d = ui_keys; d < k; d++)
			dup |= d->key == k->key && (d->screens & k->screens);
		tap_ok(!dup, "key %s does one thing on each screen", k->name);
	}
	/* the commands a user issues in the workbench: each has a key */
	static const int want[] = {SC_CALIBRATE, SC_SET_METHOD, SC_SET_BITS, SC_SET_ALPHA, SC_SEARCH, SC_SET_RANK,
		SC_QUANTIZE, SC_NEXT, SC_FINISH, SC_EXPORT};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		int found = 0;
		for (const ui_key *k = ui_keys; k->key != 0; k++)
			found |= k->cmd == want[i];
		tap_ok(found, "the command %s has a key", sess_cmds[want[i]].name);
	}
	tap_ok(ui_key_find(':', SCR_LIST) != NULL && ui_key_find(':', SCR_LIST)->action == UA_COMMAND,
	    "':' types any other command");
	return tap_done();
}

int
main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--list") == 0) {
		keytable_list();
		return 0;
	}
	if (argc == 2 && strcmp(argv[1], "--mdoc") == 0) {
		keytable_mdoc();
		return 0;
	}
	if (argc != 1) {
		fprintf(stderr, "usage: keytable [--list | --mdoc]\n");
		return 2;
	}
	return keytable_check();
}
