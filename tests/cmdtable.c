/*
 * cmdtable.c: the session command table (sess_cmds, sessions/session.c)
 * as the documentation sees it.
 *
 *	tests/cmdtable            TAP: the table is well formed (names, keys,
 *	                          summaries, arguments)
 *	tests/cmdtable --list     one line per command:
 *	                          NAME <tab> FLAGS <tab> ARGS <tab> SUMMARY
 *	                          (FLAGS words such as "layer,long", "-" when
 *	                          none; ARGS "name:type" words, optional ones
 *	                          in brackets, "-" when none)
 *	tests/cmdtable --mdoc     the SESSION COMMANDS list of masq(1) and
 *	                          masq-session(5), in mdoc
 *
 * tests/docs.sh uses --list to check that every command is documented.
 * The keys that issue commands are the workbench's (tests/keytable).
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

/* The command's flags as words, comma-separated, "-" for none. */
static void
cmdtable_flags(const sess_cmd *c, char *buf, size_t n)
{
	static const struct { int f; const char *w; } fw[] = {
		{SCF_NEEDS_OPEN, "open"}, {SCF_LAYER, "layer"}, {SCF_LONG, "long"}, {SCF_SETTING, "setting"},
		{SCF_FILES, "files"},
	};
	size_t k = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < sizeof fw / sizeof fw[0]; i++)
		if (c->flags & fw[i].f)
			k += (size_t)snprintf(buf + k, n - k, "%s%s", k ? "," : "", fw[i].w);
	if (k == 0)
		snprintf(buf, n, "-");
}

/* Print the table, one tab-separated line per command, to stdout. */
static void
cmdtable_list(void)
{
	for (const sess_cmd *c = sess_cmds; c->name != NULL; c++) {
		int any = 0;
		char fl[64];

		cmdtable_flags(c, fl, sizeof fl);
		printf("%s\t%s\t", c->name, fl);
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
 * arguments, its summary, its properties and a list of its arguments. */
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
		char props[256] = "";
		size_t k = 0;
		if (c->flags & SCF_LAYER)
			k += (size_t)snprintf(props + k, sizeof props - k, "%sacts on the cursor's layer", k ? "; " : "");
		if (c->flags & SCF_LONG)
			k += (size_t)snprintf(props + k, sizeof props - k, "%slong work", k ? "; " : "");
		if (c->flags & SCF_SETTING)
			k += (size_t)snprintf(props + k, sizeof props - k, "%sa setting: resume applies it again", k ? "; " : "");
		if (c->flags & SCF_FILES)
			k += (size_t)snprintf(props + k, sizeof props - k, "%swrites files outside the database", k ? "; " : "");
		if (c->restore == SR_RESULT)
			k += (size_t)snprintf(props + k, sizeof props - k, "%sresume takes its effect from its result",
			    k ? "; " : "");
		if (k > 0)
			cmdtable_mdoc_text(props, 1);
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
		int dup = 0, args_ok = 1, has_layer = 0;

		tap_ok(cmdtable_name_ok(c->name), "'%s' is lowercase words joined by hyphens", c->name);
		for (const sess_cmd *d = sess_cmds; d < c; d++)
			dup |= strcmp(d->name, c->name) == 0;
		tap_ok(!dup, "'%s' appears once", c->name);
		tap_ok(sess_cmd_find(c->name) == c && sess_cmd_id(c) == n, "sess_cmd_find finds '%s' at its id", c->name);
		tap_ok(c->summary != NULL && c->summary[0] != '\0' && strchr(c->summary, '\n') == NULL,
		    "'%s' has a one-line summary", c->name);
		tap_ok(c->exec != NULL, "'%s' has an exec function", c->name);
		if (c->args == NULL) {
			args_ok = 0;
		} else {
			for (const sess_arg *a = c->args; a->name != NULL; a++) {
				if (!cmdtable_name_ok(a->name) || a->help == NULL || a->help[0] == '\0' ||
				    (a->type != SARG_INT && a->type != SARG_NUM && a->type != SARG_STR &&
				    a->type != SARG_BOOL))
					args_ok = 0;
				has_layer |= strcmp(a->name, "layer") == 0 && a->type == SARG_INT && !a->required;
			}
		}
		tap_ok(args_ok, "'%s': every argument has a name, a type and a help text", c->name);
		tap_ok(!(c->flags & SCF_LAYER) || (has_layer && (c->flags & SCF_NEEDS_OPEN)),
		    "'%s': a command on the cursor's layer takes an optional integer layer and needs the model open", c->name);
		tap_ok((c->restore == SR_RESULT) == (c->restore_fn != NULL),
		    "'%s': a restore hook exactly when resume takes its effect from its result", c->name);
		tap_ok(!(c->flags & SCF_SETTING) || c->restore == SR_RERUN, "'%s': a setting is applied again on resume",
		    c->name);
	}
	tap_ok(n == SC_COUNT, "the table has %d commands, one per id", n);
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
