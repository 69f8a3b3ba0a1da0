/*
 * cmdtable.c: the session command table (sess_cmds, sessions/session.c)
 * as the documentation sees it.
 *
 *	tests/cmdtable            TAP: the table is well formed (names, keys,
 *	                          summaries, arguments)
 *	tests/cmdtable --list     one line per command:
 *	                          NAME <tab> KEY <tab> ARGS <tab> SUMMARY
 *	                          (KEY "-" when none; ARGS "name:type" words,
 *	                          optional ones in brackets, "-" when none)
 *	tests/cmdtable --mdoc     the SESSION COMMANDS list of masq(1) and
 *	                          masq-session(5), in mdoc
 *
 * tests/docs.sh uses --list to check that every command is documented.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "sessions/session.h"
#include "tests/tap.h"

/* The name of an argument type, as the pages spell it. */
static const char *
cmdtable_type_name(sess_arg_type t)
{
	switch (t) {
	case SARG_INT: return "integer";
	case SARG_NUM: return "number";
	case SARG_STR: return "string";
	case SARG_BOOL: return "boolean";
	}
	return "?";
}

/* True when s is a non-empty run of lowercase letters and inner hyphens. */
static int
cmdtable_name_ok(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;

	if (n == 0 || !islower((unsigned char)s[0]) || s[n - 1] == '-')
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!islower((unsigned char)s[i]) && s[i] != '-')
			return 0;
	return 1;
}

/* Print the table, one tab-separated line per command, to stdout. */
static void
cmdtable_list(void)
{
	for (const sess_cmd *c = sess_cmds; c->name != NULL; c++) {
		int any = 0;

		printf("%s\t", c->name);
		if (c->key > 0 && c->key < 127 && isgraph(c->key))
			printf("%c\t", c->key);
		else
			printf("-\t");
		for (const sess_arg *a = c->args; a != NULL && a->name != NULL; a++, any = 1)
			printf(a->required ? "%s%s:%s" : "%s[%s:%s]", any ? " " : "", a->name,
			    cmdtable_type_name(a->type));
		printf("%s\t%s\n", any ? "" : "-", c->summary);
	}
}

/* Print s as mdoc running text: first letter capitalised, a final full
 * stop; a line that would start with a control character gets \&. */
static void
cmdtable_mdoc_text(const char *s, int sentence)
{
	if (s[0] == '.' || s[0] == '\'')
		fputs("\\&", stdout);
	for (const char *p = s; *p != '\0'; p++) {
		int ch = p == s && sentence ? toupper((unsigned char)*p) : (unsigned char)*p;
		if (ch == '\\')
			fputs("\\e", stdout);
		else
			putchar(ch);
	}
	if (sentence && s[0] != '\0' && s[strlen(s) - 1] != '.')
		putchar('.');
	putchar('\n');
}

/* Print the SESSION COMMANDS list in mdoc: per command its name and
 * arguments, its summary, its TUI key and a list of its arguments. */
static void
cmdtable_mdoc(void)
{
	puts(".Bl -tag -width Ds");
	for (const sess_cmd *c = sess_cmds; c->name != NULL; c++) {
		size_t wide = 0;
		const char *widest = NULL;

		printf(".It Ic %s", c->name);
		for (const sess_arg *a = c->args; a != NULL && a->name != NULL; a++) {
			printf(a->required ? " Ar %s" : " Oo Ar %s Oc", a->name);
			if (strlen(a->name) > wide) {
				wide = strlen(a->name);
				widest = a->name;
			}
		}
		putchar('\n');
		cmdtable_mdoc_text(c->summary, 1);
		if (c->key > 0 && c->key < 127 && isgraph(c->key))
			printf("TUI key:\n.Ic %c .\n", c->key);
		else
			puts("No TUI key.");
		if (widest == NULL)
			continue;
		printf(".Bl -tag -width %s -compact\n", widest);
		for (const sess_arg *a = c->args; a->name != NULL; a++) {
			printf(".It Ar %s\n%s%s: ", a->name, cmdtable_type_name(a->type),
			    a->required ? "" : ", optional");
			cmdtable_mdoc_text(a->help != NULL ? a->help : "", 0);
		}
		puts(".El");
	}
	puts(".El");
}

/* TAP checks that the table is well formed. */
static int
cmdtable_check(void)
{
	int n = 0;

	for (const sess_cmd *c = sess_cmds; c->name != NULL; c++, n++) {
		int dup = 0, keydup = 0, args_ok = 1;

		tap_ok(cmdtable_name_ok(c->name), "'%s' is lowercase words joined by hyphens", c->name);
		for (const sess_cmd *d = sess_cmds; d < c; d++) {
			dup |= strcmp(d->name, c->name) == 0;
			keydup |= c->key != 0 && d->key == c->key;
		}
		tap_ok(!dup, "'%s' appears once", c->name);
		tap_ok(sess_cmd_find(c->name) == c, "sess_cmd_find finds '%s'", c->name);
		tap_ok(c->summary != NULL && c->summary[0] != '\0' && strchr(c->summary, '\n') == NULL,
		    "'%s' has a one-line summary", c->name);
		tap_ok(c->key == 0 || (c->key > 0 && c->key < 127 && isgraph(c->key) && !keydup),
		    "'%s': its key is a printable character no other command has, or none", c->name);
		tap_ok(c->exec != NULL, "'%s' has an exec function", c->name);
		if (c->args == NULL) {
			args_ok = 0;
		} else {
			for (const sess_arg *a = c->args; a->name != NULL; a++)
				if (!cmdtable_name_ok(a->name) || a->help == NULL || a->help[0] == '\0' ||
				    (a->type != SARG_INT && a->type != SARG_NUM && a->type != SARG_STR &&
				    a->type != SARG_BOOL))
					args_ok = 0;
		}
		tap_ok(args_ok, "'%s': every argument has a name, a type and a help text", c->name);
	}
	tap_ok(n > 0, "the table has %d commands", n);
	return tap_done();
}

int
main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--list") == 0) {
		cmdtable_list();
		return 0;
	}
	if (argc == 2 && strcmp(argv[1], "--mdoc") == 0) {
		cmdtable_mdoc();
		return 0;
	}
	if (argc != 1) {
		fprintf(stderr, "usage: cmdtable [--list | --mdoc]\n");
		return 2;
	}
	return cmdtable_check();
}
