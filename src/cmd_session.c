/*
 * cmd_session.c: the commands that work on recorded sessions: masq sessions
 * (list, show, dump), masq replay, masq resume and masq export.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "sessions/db.h"
#include "sessions/session.h"
#include "src/cli.h"

void cli_cmd_help(const char *cmd);

struct sopts {
	const char *db;
	long session;
	const char *model, *calib, *export_dir, *format, *out;
	int json, verbose;
};

/* Common options; returns optind or -1 after printing a usage error. */
static int
parse(const char *cmd, int argc, char **argv, struct sopts *o, int *rc)
{
	enum { O_DB = 256, O_SESSION, O_MODEL, O_CALIB, O_EXPORT, O_FORMAT, O_OUT, O_JSON, O_VERBOSE };
	static const struct option opts[] = {
		{"db", required_argument, NULL, O_DB},
		{"session", required_argument, NULL, O_SESSION},
		{"model", required_argument, NULL, O_MODEL},
		{"calib", required_argument, NULL, O_CALIB},
		{"export", required_argument, NULL, O_EXPORT},
		{"format", required_argument, NULL, O_FORMAT},
		{"out", required_argument, NULL, O_OUT},
		{"json", no_argument, NULL, O_JSON},
		{"verbose", no_argument, NULL, O_VERBOSE},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int c;

	memset(o, 0, sizeof *o);
	o->db = getenv("MASQ_DB") && *getenv("MASQ_DB") ? getenv("MASQ_DB") : SDB_DEFAULT_PATH;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case O_DB: o->db = optarg; break;
		case O_SESSION:
			if (cli_int(cmd, "--session", optarg, 1, 0x7fffffffL, &o->session) < 0) {
				*rc = 2;
				return -1;
			}
			break;
		case O_MODEL: o->model = optarg; break;
		case O_CALIB: o->calib = optarg; break;
		case O_EXPORT: o->export_dir = optarg; break;
		case O_FORMAT: o->format = optarg; break;
		case O_OUT: o->out = optarg; break;
		case O_JSON: o->json = 1; break;
		case O_VERBOSE: o->verbose = 1; break;
		case 'h': cli_cmd_help(cmd); *rc = 0; return -1;
		default:
			*rc = cli_usage(cmd, "unknown or incomplete option '%s'", argv[optind - 1]);
			return -1;
		}
	}
	if ((o->model == NULL) != (o->calib == NULL)) {
		*rc = cli_usage(cmd, "--model and --calib go together");
		return -1;
	}
	return optind;
}

static int
open_db(const struct sopts *o, sdb **db)
{
	masq_err err = {0};
	if (sdb_open(db, o->db, 0, &err) < 0)
		return cli_fail(&err);
	return 0;
}

static int
list_one(void *ctx, const sdb_session *s)
{
	json_t *arr = ctx;
	if (arr != NULL) {
		json_t *j = json_object();
		json_object_set_new(j, "id", json_integer(s->id));
		json_object_set_new(j, "created", json_string(s->created));
		json_object_set_new(j, "status", json_string(s->status));
		json_object_set_new(j, "model", json_string(s->model_path ? s->model_path : ""));
		json_object_set_new(j, "calib", json_string(s->calib_path ? s->calib_path : ""));
		json_object_set_new(j, "settings", json_loads(s->settings, 0, NULL));
		json_array_append_new(arr, j);
		return 0;
	}
	json_t *st = json_loads(s->settings, 0, NULL);
	printf("%-5lld %-20s %-9s %-8s W%lldA%lld  %s\n", (long long)s->id, s->created, s->status,
	    json_string_value(json_object_get(st, "method")) ? json_string_value(json_object_get(st, "method")) : "?",
	    (long long)json_integer_value(json_object_get(st, "wbits")),
	    (long long)json_integer_value(json_object_get(st, "abits")), s->model_path ? s->model_path : "");
	json_decref(st);
	return 0;
}

static int
show_event(void *ctx, const sdb_event *e)
{
	int verbose = *(int *)ctx;
	if (!verbose && strlen(e->payload) > 100)
		printf("%5lld  %-7s %-15s %.96s...\n", (long long)e->seq, e->kind, e->name, e->payload);
	else
		printf("%5lld  %-7s %-15s %s\n", (long long)e->seq, e->kind, e->name, e->payload);
	return 0;
}

int
cmd_sessions(int argc, char **argv)
{
	struct sopts o;
	int rc = 2, i;
	sdb *db = NULL;
	masq_err err = {0};

	if ((i = parse("sessions", argc, argv, &o, &rc)) < 0)
		return rc;
	const char *what = i < argc ? argv[i++] : "list";
	long id = o.session;
	if (strcmp(what, "load") == 0) {
		/* masq sessions load FILE.sql: a dump into this database */
		if (i != argc - 1)
			return cli_usage("sessions", "load takes one SQL file");
		size_t len;
		char *text = masq_read_file(argv[i], 256u << 20, &len, &err);
		if (text == NULL)
			return cli_fail(&err);
		if (sdb_open(&db, o.db, SDB_CREATE, &err) < 0) {
			free(text);
			return cli_fail(&err);
		}
		rc = sdb_exec_sql(db, text, &err) < 0 ? cli_fail(&err) : 0;
		if (rc == 0)
			printf("loaded %s into %s\n", argv[i], o.db);
		free(text);
		sdb_close(db);
		return rc;
	}
	if (i < argc && cli_int("sessions", "ID", argv[i++], 1, 0x7fffffffL, &id) < 0)
		return 2;
	if (i != argc)
		return cli_usage("sessions", "unexpected argument '%s'", argv[i]);
	if (strcmp(what, "list") != 0 && strcmp(what, "show") != 0 && strcmp(what, "dump") != 0)
		return cli_usage("sessions", "expected list, show ID, dump ID or load FILE, not '%s'", what);
	if ((rc = open_db(&o, &db)) != 0)
		return rc;
	if (strcmp(what, "list") == 0) {
		json_t *arr = o.json ? json_array() : NULL;
		if (!o.json)
			printf("%-5s %-20s %-9s %-8s %-7s %s\n", "id", "created", "status", "method", "bits", "model");
		rc = sdb_session_each(db, list_one, arr, &err) < 0 ? cli_fail(&err) : 0;
		if (arr != NULL) {
			json_dumpf(arr, stdout, JSON_INDENT(2));
			printf("\n");
			json_decref(arr);
		}
	} else if (strcmp(what, "show") == 0) {
		sdb_session s;
		if (sdb_session_get(db, id, &s, &err) < 0) {
			rc = cli_fail(&err);
		} else {
			printf("session %lld, created %s, %s\nmasq %s, seed %lld, %d BLAS threads\n"
			    "model %s (fingerprint %s)\ncalibration %s (fingerprint %s)\nsettings %s\n\n",
			    (long long)s.id, s.created, s.status, s.masq_version, (long long)s.seed, s.threads,
			    s.model_path ? s.model_path : "", s.model_fp, s.calib_path ? s.calib_path : "", s.calib_fp,
			    s.settings);
			rc = sdb_event_each(db, s.id, show_event, &o.verbose, &err) < 0 ? cli_fail(&err) : 0;
			sdb_session_free(&s);
		}
	} else {
		sdb_session s;
		if (sdb_session_get(db, id, &s, &err) < 0) {
			rc = cli_fail(&err);
		} else {
			rc = sdb_dump(db, s.id, stdout, &err) < 0 ? cli_fail(&err) : 0;
			sdb_session_free(&s);
		}
	}
	sdb_close(db);
	return rc;
}

/* The preamble replay, resume and export share: parse the options, open the
 * database and attach to the session (record: whether new events are
 * appended).  Returns 0 to go on, or -1 with *rc the exit status. */
static int
attach(const char *cmd, int argc, char **argv, struct sopts *o, sdb **db, sess *s, int record, int *rc)
{
	masq_err err = {0};
	int i;

	*rc = 2;
	if ((i = parse(cmd, argc, argv, o, rc)) < 0)
		return -1;
	if (i != argc) {
		*rc = cli_usage(cmd, "unexpected argument '%s'", argv[i]);
		return -1;
	}
	if ((*rc = open_db(o, db)) != 0)
		return -1;
	if (sess_attach(s, *db, o->session, o->model, o->calib, record, &err) < 0) {
		*rc = cli_fail(&err);
		sdb_close(*db);
		return -1;
	}
	return 0;
}

int
cmd_replay(int argc, char **argv)
{
	struct sopts o;
	int rc;
	sdb *db = NULL;
	sess s;
	masq_err err = {0};

	if (attach("replay", argc, argv, &o, &db, &s, 0, &rc) < 0)
		return rc;
	if (o.export_dir != NULL)
		s.export_redirect = xstrdup(o.export_dir);
	else
		s.skip_exports = 1;
	fprintf(stderr, "masq: replaying session %lld of %s with %d BLAS threads\n", (long long)s.id, o.db, s.threads);
	int r = sess_replay(&s, o.verbose ? stderr : NULL, &err);
	if (r == 0) {
		printf("session %lld replayed: every recorded result matches\n", (long long)s.id);
		rc = 0;
	} else if (r == 1) {
		fprintf(stderr, "masq: replay diverged: %s\n", err.msg);
		rc = 1;
	} else {
		rc = cli_fail(&err);
		if (rc == 1)
			rc = 2;
	}
	sess_done(&s);
	sdb_close(db);
	return rc;
}

int
cmd_resume(int argc, char **argv)
{
	struct sopts o;
	int rc, finished;
	sdb *db = NULL;
	sess s;
	masq_err err = {0};

	if (attach("resume", argc, argv, &o, &db, &s, 1, &rc) < 0)
		return rc;
	int cursor = sess_restore(&s, &finished, &err);
	if (cursor < 0) {
		rc = cli_fail(&err);
		goto out;
	}
	if (finished) {
		fprintf(stderr, "masq: session %lld has already finished; nothing to resume\n", (long long)s.id);
		rc = 0;
		goto out;
	}
	fprintf(stderr, "masq: resuming session %lld at layer %d of %d\n", (long long)s.id, cursor, s.p.n_layers);
	rc = 0;
	while (rc == 0 && s.p.layer < s.p.n_layers) {
		json_t *args = json_pack("{s:i}", "layer", s.p.layer);
		if (sess_dispatch(&s, "calibrate-layer", args, NULL, &err) < 0 ||
		    (s.opts.search && sess_dispatch(&s, "search-alpha", args, NULL, &err) < 0) ||
		    sess_dispatch(&s, "quantize-layer", args, NULL, &err) < 0 ||
		    sess_dispatch(&s, "next-layer", args, NULL, &err) < 0)
			rc = -1;
		json_decref(args);
	}
	if (rc == 0 && sess_dispatch(&s, "finish", NULL, NULL, &err) < 0)
		rc = -1;
	if (rc < 0) {
		rc = cli_fail(&err);
		goto out;
	}
	printf("session %lld finished: SQNR of the last layer's output", (long long)s.id);
	for (int m = 0; m < MOD_COUNT; m++)
		if (s.c.n_mod[m])
			printf(" %s %.2f", modality_name(m), s.p.summary.sqnr[m]);
	printf(" dB\n");
out:
	sess_done(&s);
	sdb_close(db);
	return rc;
}

int
cmd_export(int argc, char **argv)
{
	struct sopts o;
	int rc, finished;
	sdb *db = NULL;
	sess s;
	masq_err err = {0};
	json_t *res = NULL;

	if (attach("export", argc, argv, &o, &db, &s, 1, &rc) < 0)
		return rc;
	if (o.format == NULL || o.out == NULL) {
		rc = cli_usage("export", "--format and --out are required");
		goto out;
	}
	if (access(o.out, F_OK) == 0) {
		rc = cli_usage("export", "%s exists; exports never overwrite", o.out);
		goto out;
	}
	if (sess_restore(&s, &finished, &err) < 0) {
		rc = cli_fail(&err);
		goto out;
	}
	json_t *args = json_pack("{s:s, s:s}", "format", o.format, "out", o.out);
	rc = sess_dispatch(&s, "export", args, &res, &err);
	json_decref(args);
	if (rc < 0) {
		rc = cli_fail(&err);
		goto out;
	}
	printf("session %lld exported as %s to %s (%zu files)\n", (long long)s.id, o.format, o.out,
	    json_object_size(json_object_get(res, "files")));
	const char *dropped = json_string_value(json_object_get(res, "dropped"));
	if (dropped != NULL && *dropped)
		printf("not expressible in this format: %s\n", dropped);
	rc = 0;
out:
	json_decref(res);
	sess_done(&s);
	sdb_close(db);
	return rc;
}
