/*
 * cmd_tokenize.c: masq tokenize: text on standard input, one line of token
 * ids out per line in, with the model's own tokenizer.json, so that anyone
 * can hold masq's tokenizer against another one.
 */
#include "config.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "core/tokenizer.h"
#include "src/cli.h"

/* One line's ids, or {"ids": [...], "tokens": [...]} with --json. */
static void
print_line(const masq_tok *t, const tok_ids *ids, int json)
{
	if (!json) {
		for (size_t i = 0; i < ids->n; i++)
			printf(i ? " %d" : "%d", ids->v[i]);
		putchar('\n');
		return;
	}
	json_t *o = json_object(), *a = json_array(), *p = json_array();
	for (size_t i = 0; i < ids->n; i++) {
		size_t n;
		const char *s = tok_piece(t, ids->v[i], &n);
		json_array_append_new(a, json_integer(ids->v[i]));
		json_array_append_new(p, s ? json_stringn(s, n) : json_null());
	}
	json_object_set_new(o, "ids", a);
	json_object_set_new(o, "tokens", p);
	json_dumpf(o, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
	putchar('\n');
	json_decref(o);
}

int
cmd_tokenize(int argc, char **argv)
{
	static const struct option opts[] = {
		{"model", required_argument, NULL, 'm'},
		{"tokenizer", required_argument, NULL, 't'},
		{"json", no_argument, NULL, 'j'},
		{"split-special", no_argument, NULL, 's'},
		{"stats", no_argument, NULL, 'S'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	const char *model = NULL, *file = NULL;
	int json = 0, flags = 0, stats = 0, c;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'm': model = optarg; break;
		case 't': file = optarg; break;
		case 'j': json = 1; break;
		case 's': flags |= TOK_SPLIT_SPECIAL; break;
		case 'S': stats = 1; break;
		case 'h': cli_cmd_help("tokenize"); return 0;
		case ':':
			return cli_usage("tokenize", "%s needs a value", argv[optind - 1]);
		default:
			return cli_usage("tokenize", "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return cli_usage("tokenize", "unexpected argument '%s' (the text comes on standard input)",
		    argv[optind]);
	if ((model == NULL) == (file == NULL))
		return cli_usage("tokenize", "give one of --model DIR and --tokenizer FILE");

	masq_err err = {0};
	char *path = file ? xstrdup(file) : masq_path_join(model, "tokenizer.json");
	masq_tok *t = NULL;
	if ((model != NULL && masq_check_within(model, path, &err) < 0) || tok_load(&t, path, &err) < 0) {
		free(path);
		return cli_fail(&err);
	}
	free(path);

	char *line = NULL;
	size_t cap = 0, lines = 0, bytes = 0, tokens = 0;
	ssize_t n;
	tok_ids ids = {0};
	int rc = 0;
	double t0 = masq_now();
	while ((n = getline(&line, &cap, stdin)) >= 0) {
		lines++;
		bytes += (size_t)n;
		if (n > 0 && line[n - 1] == '\n')
			n--;
		ids.n = 0;
		if (tok_encode(t, line, (size_t)n, flags, &ids, &err) < 0) {
			fflush(stdout);
			fprintf(stderr, "masq tokenize: standard input, line %zu: %s\n", lines, err.msg);
			rc = masq_exit_code(err.status);
			break;
		}
		tokens += ids.n;
		print_line(t, &ids, json);
	}
	double dt = masq_now() - t0;
	if (rc == 0 && ferror(stdin)) {
		fprintf(stderr, "masq tokenize: reading standard input failed after line %zu\n", lines);
		rc = 2;
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "masq tokenize: writing standard output failed\n");
		rc = 2;
	}
	if (stats)
		fprintf(stderr, "masq tokenize: %zu lines, %zu bytes, %zu tokens in %.3f s (%.0f tokens/s, %.2f MB/s)\n",
		    lines, bytes, tokens, dt, dt > 0 ? (double)tokens / dt : 0.0, dt > 0 ? (double)bytes / dt / 1e6 : 0.0);
	free(line);
	tok_ids_free(&ids);
	tok_free(t);
	return rc;
}
