/*
 * cmd_session.c: the commands that work on recorded sessions: masq sessions
 * (list, show, dump), masq replay, masq resume and masq export.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "core/dist.h"
#include "core/numenv.h"
#include "sessions/db.h"
#include "sessions/replay.h"
#include "sessions/session.h"
#include "src/cli.h"


struct sopts {
	const char *db;
	long session;
	const char *model, *calib, *export_dir, *format, *out;
	int json, verbose;
	int exact, tolerance;	/* replay: demand exactness / compare within tolerances */
	int dry_run;		/* sessions gc: count only */
};

/* Common options; returns optind or -1 after printing a usage error. */
static int
parse(const char *cmd, int argc, char **argv, struct sopts *o, int *rc)
{
	enum { O_DB = 256, O_SESSION, O_MODEL, O_CALIB, O_EXPORT, O_FORMAT, O_OUT, O_JSON, O_VERBOSE,
	    O_EXACT, O_TOLERANCE, O_DRY_RUN };
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
		{"exact", no_argument, NULL, O_EXACT},
		{"tolerance", no_argument, NULL, O_TOLERANCE},
		{"dry-run", no_argument, NULL, O_DRY_RUN},
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
		case O_DRY_RUN: o->dry_run = 1; break;
		case O_VERBOSE: o->verbose = 1; break;
		case O_EXACT: o->exact = 1; break;
		case O_TOLERANCE: o->tolerance = 1; break;
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
	if (o->exact && o->tolerance) {
		*rc = cli_usage(cmd, "--exact and --tolerance contradict each other");
		return -1;
	}
	if ((o->exact || o->tolerance) && strcmp(cmd, "replay") != 0) {
		*rc = cli_usage(cmd, "--%s is an option of masq replay", o->exact ? "exact" : "tolerance");
		return -1;
	}
	return optind;
}

static int
open_db(const struct sopts *o, sdb **db)
{
	masq_err err = {0};
	/* under mpirun (masq resume) rank 0 alone opens the database; the
	 * others learn whether it could */
	*db = NULL;
	int rc = dist_rank() == 0 ? sdb_open(db, o->db, 0, &err) : 0;
	if (dist_size() > 1 && dist_agree(rc < 0, &err))
		rc = -1;
	return rc < 0 ? cli_fail(&err) : 0;
}

/* What a session's events say of its end: the last finish's SQNR per
 * modality, the last export's tensor bytes. */
struct ends {
	double sqnr[MOD_COUNT];
	double export_bytes;
};

static int
ends_event(void *ctx, const sdb_event *e)
{
	struct ends *x = ctx;
	if (strcmp(e->kind, "result") != 0)
		return 0;
	if (strcmp(e->name, "finish") == 0 || strcmp(e->name, "export") == 0) {
		json_t *j = json_loads(e->payload, 0, NULL);
		if (strcmp(e->name, "finish") == 0) {
			json_t *sq = json_object_get(j, "sqnr_db");
			for (int m = 0; m < MOD_COUNT; m++) {
				json_t *v = json_object_get(sq, modality_name(m));
				x->sqnr[m] = json_is_number(v) ? json_number_value(v) : NAN;
			}
		} else {
			json_t *v = json_object_get(json_object_get(j, "bytes"), "tensors");
			if (json_is_number(v))
				x->export_bytes = json_number_value(v);
		}
		json_decref(j);
	}
	return 0;
}

struct list_ctx {
	sdb *db;
	json_t *arr;	/* --json */
	masq_err *err;
};

static int
list_one(void *ctx, const sdb_session *s)
{
	struct list_ctx *lc = ctx;
	struct ends x = {{NAN, NAN, NAN}, NAN};
	if (sdb_event_each(lc->db, s->id, ends_event, &x, lc->err) < 0)
		return masq_err_prefix(lc->err, "session %lld", (long long)s->id);
	json_t *st = json_loads(s->settings, 0, NULL);
	if (lc->arr != NULL) {
		json_t *j = json_object(), *sq = json_object();
		json_object_set_new(j, "id", json_integer(s->id));
		json_object_set_new(j, "created", json_string(s->created));
		json_object_set_new(j, "status", json_string(s->status));
		json_object_set_new(j, "model", json_string(s->model_path ? s->model_path : ""));
		json_object_set_new(j, "calib", json_string(s->calib_path ? s->calib_path : ""));
		json_object_set_new(j, "settings", st ? json_incref(st) : json_null());
		for (int m = 0; m < MOD_COUNT; m++)
			json_object_set_new(sq, modality_name(m), isfinite(x.sqnr[m]) ? json_real(x.sqnr[m]) : json_null());
		json_object_set_new(j, "sqnr_db", sq);
		json_object_set_new(j, "export_bytes", isfinite(x.export_bytes) ? json_integer((json_int_t)x.export_bytes) :
		    json_null());
		json_array_append_new(lc->arr, j);
		json_decref(st);
		return 0;
	}
	char t[MOD_COUNT][16], eb[32] = "-";
	for (int m = 0; m < MOD_COUNT; m++)
		cli_fmt_db(t[m], sizeof t[m], x.sqnr[m]);
	if (isfinite(x.export_bytes))
		masq_fmt_bytes((uint64_t)x.export_bytes, eb, sizeof eb);
	printf("%-5lld %-24s %-9s %-8s W%lldA%-3lld %7s %7s %7s %9s  %s\n", (long long)s->id, s->created, s->status,
	    json_string_value(json_object_get(st, "method")) ? json_string_value(json_object_get(st, "method")) : "?",
	    (long long)json_integer_value(json_object_get(st, "wbits")),
	    (long long)json_integer_value(json_object_get(st, "abits")), t[0], t[1], t[2], eb,
	    s->model_path ? s->model_path : "");
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

static int
show_event_json(void *ctx, const sdb_event *e)
{
	json_t *arr = ctx;
	json_t *p = json_loads(e->payload, 0, NULL);
	json_array_append_new(arr, json_pack("{s:I, s:s, s:s, s:o, s:s}", "seq", (json_int_t)e->seq, "kind", e->kind,
	    "name", e->name, "payload", p ? p : json_string(e->payload), "created", e->created));
	return 0;
}

/* The numeric environment of a session row, as sessions show prints it. */
static void
show_environment(const sdb_session *s)
{
	json_t *env = s->environment ? json_loads(s->environment, 0, NULL) : NULL;
	if (env == NULL) {
		printf("numeric environment: not recorded (a session of masq 0.1; replay compares within tolerances)\n");
		return;
	}
	json_t *b = json_object_get(env, "build"), *bl = json_object_get(env, "blas"), *cpu = json_object_get(env, "cpu");
	printf("numeric environment:\n");
	printf("  masq %s, built by %s (%s; %s; sanitizers: %s)\n", json_string_value(json_object_get(env, "masq")),
	    json_string_value(json_object_get(b, "compiler")), json_string_value(json_object_get(b, "isa")),
	    json_string_value(json_object_get(b, "fp")), json_string_value(json_object_get(b, "sanitizers")));
	printf("  %s\n", json_string_value(json_object_get(env, "libc")));
	printf("  BLAS: %s, kernels %s, %s, %lld threads%s%s\n", json_string_value(json_object_get(bl, "config")),
	    json_string_value(json_object_get(bl, "corename")),
	    json_string_value(json_object_get(bl, "parallel")) ? json_string_value(json_object_get(bl, "parallel")) : "?",
	    (long long)json_integer_value(json_object_get(bl, "threads")),
	    json_is_string(json_object_get(bl, "coretype_env")) ? ", OPENBLAS_CORETYPE=" : "",
	    json_is_string(json_object_get(bl, "coretype_env")) ? json_string_value(json_object_get(bl, "coretype_env")) : "");
	printf("  CPU: %s, %s; features", json_string_value(json_object_get(cpu, "vendor")),
	    json_string_value(json_object_get(cpu, "model")));
	size_t i;
	json_t *f;
	json_array_foreach(json_object_get(cpu, "features"), i, f)
		printf(" %s", json_string_value(f));
	printf("\n  probe %s (the bits of the BLAS and LAPACK calls masq makes)\n",
	    json_string_value(json_object_get(env, "probe")));
	json_decref(env);
}

/* ---- sessions diff ------------------------------------------------------------ */

static void
print_cell(json_t *v, int w, int bytes)
{
	char b[32];
	if (json_is_null(v))
		printf(" %*s", w, "-");
	else if (bytes == 1 && json_is_number(v))
		printf(" %*s", w, masq_fmt_bytes((uint64_t)fabs(json_number_value(v)), b, sizeof b));
	else if (bytes == 2 && json_is_number(v))
		printf(" %*.2f", w, json_number_value(v));
	else if (json_is_integer(v))
		printf(" %*lld", w, (long long)json_integer_value(v));
	else if (json_is_real(v))
		printf(" %*.4g", w, json_real_value(v));
	else
		printf(" %*s", w, json_string_value(v) ? json_string_value(v) : "?");
}

static int
sessions_diff(const struct sopts *o, sdb *db, long ia, long ib)
{
	masq_err err = {0};
	sess *a = NULL, *b = NULL;
	int fa, fb, rc = 2;

	if (sess_attach(&a, db, ia, o->model, o->calib, 0, &err) < 0 || sess_restore(a, &fa, &err) < 0 ||
	    sess_attach(&b, db, ib, o->model, o->calib, 0, &err) < 0 || sess_restore(b, &fb, &err) < 0) {
		masq_err_prefix(&err, "sessions diff %ld %ld", ia, ib);
		rc = cli_fail(&err);
		goto out;
	}
	struct { json_t *rows; } d;
	if ((d.rows = sess_diff(a, fa, b, fb, &err)) == NULL) {
		masq_err_prefix(&err, "sessions %ld and %ld", ia, ib);
		rc = cli_fail(&err);
		goto out;
	}
	if (o->json) {
		json_t *doc = json_pack("{s:I, s:I, s:o}", "a", (json_int_t)ia, "b", (json_int_t)ib, "rows", d.rows);
		json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		printf("\n");
		json_decref(doc);
	} else {
		size_t i;
		json_t *r;
		printf("session %ld (a) against session %ld (b): what differs, and the SQNR (dB) everywhere\n", ia, ib);
		printf("%-5s %-22s %12s %12s %9s\n", "layer", "", "a", "b", "b - a");
		json_array_foreach(d.rows, i, r) {
			json_t *ly = json_object_get(r, "layer");
			if (json_is_integer(ly))
				printf("%-5lld", (long long)json_integer_value(ly));
			else
				printf("%-5s", "model");
			const char *wh = json_string_value(json_object_get(r, "what"));
			int bytes = strstr(wh, "bytes") != NULL ? 1 : strncmp(wh, "SQNR", 4) == 0 ? 2 : 0;
			printf(" %-22s", wh);
			print_cell(json_object_get(r, "a"), 12, bytes);
			print_cell(json_object_get(r, "b"), 12, bytes);
			json_t *dd = json_object_get(r, "b_minus_a");
			char bb[32];
			if (dd != NULL && bytes == 1)
				printf(" %s%s", json_real_value(dd) < 0 ? "-" : "+",
				    masq_fmt_bytes((uint64_t)fabs(json_real_value(dd)), bb, sizeof bb));
			else if (dd != NULL)
				printf(bytes == 2 ? " %+9.2f" : " %+9.3g", json_real_value(dd));
			printf("\n");
		}
		json_decref(d.rows);
	}
	rc = 0;
out:
	sess_free(a);
	sess_free(b);
	return rc;
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
		/* masq sessions load FILE.sql: one session's rows, read as data */
		if (i != argc - 1)
			return cli_usage("sessions", "load takes one SQL file");
		size_t len;
		char *text = masq_read_file(argv[i], 256u << 20, &len, &err);
		if (text == NULL)
			return cli_fail(&err);
		if (strlen(text) != len) {
			free(text);
			return cli_usage("sessions", "%s: not a text file (it holds a NUL byte)", argv[i]);
		}
		if (sdb_open(&db, o.db, SDB_CREATE, &err) < 0) {
			free(text);
			return cli_fail(&err);
		}
		int64_t nid = 0;
		if (sdb_load(db, text, &nid, &err) < 0) {
			masq_err_prefix(&err, "%s", argv[i]);
			rc = cli_fail(&err);
		} else {
			printf("loaded %s into %s as session %lld\n", argv[i], o.db, (long long)nid);
			rc = 0;
		}
		free(text);
		sdb_close(db);
		return rc;
	}
	if (strcmp(what, "gc") == 0) {
		/* masq sessions gc: the blobs no session needs any more */
		if (i != argc)
			return cli_usage("sessions", "gc takes no argument");
		if ((rc = open_db(&o, &db)) != 0)
			return rc;
		sdb_gc_report gr;
		if (sdb_blob_gc(db, o.dry_run, &gr, &err) < 0) {
			rc = cli_fail(&err);
		} else {
			char b1[32], b2[32];
			if (o.json)
				printf("{\"removed\": %d, \"removed_bytes\": %llu, \"kept\": %d, \"kept_bytes\": %llu, "
				    "\"dry_run\": %s}\n", gr.removed, (unsigned long long)gr.removed_bytes, gr.kept,
				    (unsigned long long)gr.kept_bytes, o.dry_run ? "true" : "false");
			else
				printf("%s %d blob%s (%s) no session needs; kept %d (%s)\n", o.dry_run ? "would remove" :
				    "removed", gr.removed, gr.removed == 1 ? "" : "s", masq_fmt_bytes(gr.removed_bytes, b1,
				    sizeof b1), gr.kept, masq_fmt_bytes(gr.kept_bytes, b2, sizeof b2));
			rc = 0;
		}
		sdb_close(db);
		return rc;
	}
	if (strcmp(what, "diff") == 0) {
		long ia, ib;
		if (argc - i != 2)
			return cli_usage("sessions", "diff takes two session ids");
		if (cli_int("sessions", "ID", argv[i], 1, 0x7fffffffL, &ia) < 0 ||
		    cli_int("sessions", "ID", argv[i + 1], 1, 0x7fffffffL, &ib) < 0)
			return 2;
		if ((rc = open_db(&o, &db)) != 0)
			return rc;
		rc = sessions_diff(&o, db, ia, ib);
		sdb_close(db);
		return rc;
	}
	if (i < argc && cli_int("sessions", "ID", argv[i++], 1, 0x7fffffffL, &id) < 0)
		return 2;
	if (i != argc)
		return cli_usage("sessions", "unexpected argument '%s'", argv[i]);
	if (strcmp(what, "list") != 0 && strcmp(what, "show") != 0 && strcmp(what, "dump") != 0)
		return cli_usage("sessions", "expected list, show ID, dump ID, diff A B, load FILE or gc, not '%s'", what);
	if ((rc = open_db(&o, &db)) != 0)
		return rc;
	if (strcmp(what, "list") == 0) {
		struct list_ctx lc = {db, o.json ? json_array() : NULL, &err};
		if (!o.json)
			printf("%-5s %-24s %-9s %-8s %-7s %7s %7s %7s %9s  %s\n", "id", "created", "status", "method", "bits",
			    "text", "vision", "audio", "export", "model");
		rc = sdb_session_each(db, list_one, &lc, &err) < 0 ? cli_fail(&err) : 0;
		if (lc.arr != NULL) {
			if (rc == 0) {
				json_dumpf(lc.arr, stdout, JSON_INDENT(2));
				printf("\n");
			}
			json_decref(lc.arr);
		}
	} else if (strcmp(what, "show") == 0) {
		sdb_session s;
		if (sdb_session_get(db, id, &s, &err) < 0) {
			rc = cli_fail(&err);
		} else if (o.json) {
			json_t *d = json_pack("{s:I, s:s, s:s, s:s, s:I, s:i, s:s?, s:s, s:s?, s:s}", "id", (json_int_t)s.id,
			    "created", s.created, "status", s.status, "masq_version", s.masq_version, "seed",
			    (json_int_t)s.seed, "threads", s.threads, "model", s.model_path, "model_fp", s.model_fp,
			    "calib", s.calib_path, "calib_fp", s.calib_fp);
			json_object_set_new(d, "settings", json_loads(s.settings, 0, NULL));
			json_t *env = s.environment ? json_loads(s.environment, 0, NULL) : NULL;
			json_object_set_new(d, "environment", env ? env : json_null());
			json_t *evs = json_array();
			rc = sdb_event_each(db, s.id, show_event_json, evs, &err) < 0 ? cli_fail(&err) : 0;
			json_object_set_new(d, "events", evs);
			if (rc == 0) {
				json_dumpf(d, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
				printf("\n");
			}
			json_decref(d);
			sdb_session_free(&s);
		} else {
			printf("session %lld, created %s, %s\nmasq %s, seed %lld, %d BLAS threads\n"
			    "model %s (fingerprint %s)\ncalibration %s (fingerprint %s)\nsettings %s\n",
			    (long long)s.id, s.created, s.status, s.masq_version, (long long)s.seed, s.threads,
			    s.model_path ? s.model_path : "", s.model_fp, s.calib_path ? s.calib_path : "", s.calib_fp,
			    s.settings);
			show_environment(&s);
			printf("\n");
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
attach(const char *cmd, int argc, char **argv, struct sopts *o, sdb **db, sess **s, int record, int *rc)
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
	if (strcmp(cmd, "replay") != 0 && sess_failed(*s)) {
		fprintf(stderr, "masq %s: session %lld failed before its first layer; there is nothing to %s"
		    " (masq replay shows how it failed)\n", cmd, (long long)sess_view_get(*s)->id, cmd);
		sess_free(*s);
		*s = NULL;
		sdb_close(*db);
		*rc = 2;
		return -1;
	}
	return 0;
}

/* A JSON value as text, whole, for a divergence line. */
static void
print_value(FILE *fp, json_t *v)
{
	char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
	fputs(t ? t : "?", fp);
	free(t);
}

static void
print_divergence(FILE *fp, const replay_report *rep)
{
	fprintf(fp, "masq: replay diverged at event %lld (%s): %s\n", (long long)rep->div_event, rep->div_cmd,
	    rep->div_reason);
	size_t i;
	json_t *f;
	json_array_foreach(rep->div_fields, i, f) {
		fprintf(fp, "  %s: recorded ", json_string_value(json_object_get(f, "path")));
		if (json_is_true(json_object_get(f, "recorded_absent")))
			fputs("(absent)", fp);
		else
			print_value(fp, json_object_get(f, "recorded"));
		fputs(", replayed ", fp);
		if (json_is_true(json_object_get(f, "replayed_absent")))
			fputs("(absent)", fp);
		else
			print_value(fp, json_object_get(f, "replayed"));
		const char *d = json_string_value(json_object_get(f, "detail"));
		if (d != NULL)
			fprintf(fp, " (%s)", d);
		fputc('\n', fp);
	}
}

static void
print_deviations(const replay_report *rep)
{
	for (int k = 0; k < RK_COUNT; k++) {
		const replay_dev *d = &rep->dev[k];
		int db = k == RK_DB || k == RK_LEARN_DB;
		if (d->event == 0)
			printf("  %-10s no deviation (tolerance %g%s)\n", replay_kind_name(k), replay_kind_tol(k),
			    db ? " dB" : ", relative");
		else
			printf("  %-10s largest deviation %.3g%s at event %lld (%s) %s (tolerance %g%s)\n",
			    replay_kind_name(k), d->value, db ? " dB" : "", (long long)d->event, d->cmd, d->path,
			    replay_kind_tol(k), db ? " dB" : ", relative");
	}
	if (rep->uncompared > 0)
		printf("  %d values not compared: hashes with nothing to compare by content (a dump loaded without its "
		    "blobs, export files), or allocated ranks continued from the recording\n", rep->uncompared);
	if (rep->adopted > 0)
		printf("  %d learned factors or allocated ranks differed within tolerance: the replay went on from the "
		    "recorded ones\n", rep->adopted);
}

int
cmd_replay(int argc, char **argv)
{
	struct sopts o;
	int rc;
	sdb *db = NULL;
	sess *s = NULL;
	masq_err err = {0};
	char *diffs[16];
	int ndiff = 0, tolerance;
	const char *reproduced = getenv("MASQ_REPLAY_REPRODUCING");

	if (attach("replay", argc, argv, &o, &db, &s, 0, &rc) < 0)
		return rc;
	json_t *here = numenv_collect(sess_threads(s), sess_view_get(s)->opts->compute);
	ndiff = numenv_key_diff(sess_environment(s), here, diffs, 16);
	const char *rec_core = numenv_corename(sess_environment(s)), *here_core = numenv_corename(here);
	/* A kernel set the CPU can run is chosen before OpenBLAS loads: run
	 * masq again with it (once) and compare exactly. */
	if (ndiff > 0 && !o.tolerance && rec_core != NULL && here_core != NULL && strcasecmp(rec_core, here_core) != 0 &&
	    reproduced == NULL && numenv_corename_runnable(rec_core) && cli_argv != NULL) {
		fprintf(stderr, "masq: session %lld was recorded with OpenBLAS's %s kernels (here: %s); running masq again"
		    " with OPENBLAS_CORETYPE=%s to reproduce them\n", (long long)sess_view_get(s)->id, rec_core, here_core,
		    rec_core);
		fflush(stdout);
		char core[64];
		snprintf(core, sizeof core, "%s", rec_core);
		setenv("OPENBLAS_CORETYPE", core, 1);
		setenv("MASQ_REPLAY_REPRODUCING", core, 1);
		sess_free(s);
		sdb_close(db);
		json_decref(here);
		for (int i = 0; i < ndiff && i < 16; i++)
			free(diffs[i]);
		execv("/proc/self/exe", cli_argv);
		fprintf(stderr, "masq: cannot run masq again (%s): replaying here as it is\n", strerror(errno));
		if (attach("replay", argc, argv, &o, &db, &s, 0, &rc) < 0)
			return rc;
		here = numenv_collect(sess_threads(s), sess_view_get(s)->opts->compute);
		ndiff = numenv_key_diff(sess_environment(s), here, diffs, 16);
	}
	tolerance = o.tolerance || ndiff > 0;
	if (ndiff > 0 && o.exact) {
		fprintf(stderr, "masq replay: session %lld cannot be replayed exactly here: its numeric environment"
		    " differs and cannot be reproduced:\n", (long long)sess_view_get(s)->id);
		for (int i = 0; i < ndiff && i < 16; i++)
			fprintf(stderr, "  %s\n", diffs[i]);
		fprintf(stderr, "Without --exact, masq replays it within tolerances (see REPLAY in masq(1)).\n");
		rc = 2;
		goto out;
	}
	FILE *info = o.json ? stderr : stdout;
	fprintf(info, "masq: replaying session %lld of %s with %d BLAS threads, ", (long long)sess_view_get(s)->id, o.db,
	    sess_threads(s));
	if (!tolerance)
		fprintf(info, "exact: the numeric environment is the recorded one%s%s%s\n", reproduced ? " (OPENBLAS_CORETYPE=" : "",
		    reproduced ? reproduced : "", reproduced ? ")" : "");
	else if (o.tolerance)
		fprintf(info, "in tolerance mode (--tolerance)\n");
	else {
		fprintf(info, "in tolerance mode: the recorded numeric environment cannot be reproduced here:\n");
		for (int i = 0; i < ndiff && i < 16; i++)
			fprintf(info, "  %s\n", diffs[i]);
	}
	fflush(info);

	/* What the replay computes goes to a scratch directory, not beside the
	 * database: the recorded blobs stay as they were. */
	const char *tmpd = getenv("TMPDIR");
	char *scratch = masq_path_join(tmpd && *tmpd ? tmpd : "/tmp", "masq-replay-XXXXXX");
	if (mkdtemp(scratch) == NULL) {
		masq_err_set(&err, MASQ_ERR_IO, "%s: cannot create the replay's scratch directory: %s", scratch,
		    strerror(errno));
		free(scratch);
		rc = cli_fail(&err);
		goto out;
	}
	if (o.export_dir != NULL && masq_mkdir_p(o.export_dir, &err) < 0) {
		rc = cli_fail(&err);
		goto out_scratch;
	}
	replay_report rep;
	replay_opts ro = {.tolerance = tolerance, .export_dir = o.export_dir, .scratch = scratch,
		.progress = o.verbose ? stderr : NULL};
	int r = sess_replay(s, &ro, &rep, &err);
	if (r < 0) {
		rc = cli_fail(&err);
	} else if (o.json) {
		json_t *d = replay_report_json(&rep);
		json_object_set_new(d, "session", json_integer(sess_view_get(s)->id));
		json_object_set_new(d, "database", json_string(o.db));
		json_object_set_new(d, "reproduced", reproduced ? json_pack("{s:s}", "OPENBLAS_CORETYPE", reproduced) :
		    json_null());
		json_t *ed = json_array();
		for (int i = 0; i < ndiff && i < 16; i++)
			json_array_append_new(ed, json_string(diffs[i]));
		json_object_set_new(d, "environment", json_pack("{s:O?, s:O, s:o}", "recorded", sess_environment(s), "here",
		    here, "differences", ed));
		json_dumpf(d, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		printf("\n");
		json_decref(d);
		rc = r;
	} else if (r == 1) {
		print_divergence(stderr, &rep);
		rc = 1;
	} else {
		printf("session %lld replayed: every recorded result matches (%s; %d commands", (long long)sess_view_get(s)->id,
		    tolerance ? "tolerance mode" : "exact", rep.commands);
		if (rep.interrupted)
			printf(", %d interrupted and skipped", rep.interrupted);
		if (rep.errors_matched)
			printf(", %d recorded error%s met again", rep.errors_matched, rep.errors_matched == 1 ? "" : "s");
		if (rep.fs_errors)
			printf(", %d export error%s of the file system not replayed", rep.fs_errors, rep.fs_errors == 1 ? "" : "s");
		if (rep.other_version)
			printf(", %d export%s of masq %s not compared (its formats differ from this masq's)", rep.other_version,
			    rep.other_version == 1 ? "" : "s", sess_recorded_version(s));
		if (rep.exports_checked)
			printf(", %d export%s checked, not written (--export DIR writes them)", rep.exports_checked,
			    rep.exports_checked == 1 ? "" : "s");
		printf(")\n");
		if (tolerance)
			print_deviations(&rep);
		size_t i;
		json_t *e;
		json_array_foreach(rep.exports, i, e)
			printf("  export of event %lld (%s) written to %s\n", (long long)json_integer_value(json_object_get(e, "event")),
			    json_string_value(json_object_get(e, "format")), json_string_value(json_object_get(e, "dir")));
		rc = 0;
	}
	if (r >= 0)
		replay_report_done(&rep);
out_scratch:
	masq_remove_flat_dir(scratch);
	free(scratch);
out:
	for (int i = 0; i < ndiff && i < 16; i++)
		free(diffs[i]);
	json_decref(here);
	sess_free(s);
	sdb_close(db);
	return rc;
}

/* A resume in another numeric environment than the session's (another
 * kernel set, machine or number of processes) computes its later layers in
 * this one: say so, and record it in the session's environment, so that
 * replay knows no one environment reproduces the session exactly. */
static int
resume_env_note(sess *s, sdb *db, int cursor, json_t *here, masq_err *err)
{
	json_t *rec = sess_environment(s);
	if (!json_is_object(rec))
		return 0;	/* a session of masq 0.1: its replay compares within tolerances anyway */
	json_t *bare = json_deep_copy(rec);
	json_object_del(bare, "resumed");
	char *d[16];
	int nd = numenv_key_diff(bare, here, d, 16), rc = 0;
	json_decref(bare);
	if (nd == 0)
		return 0;
	json_t *differs = json_array();
	fprintf(stderr, "masq: session %lld was recorded in another numeric environment (", (long long)sess_view_get(s)->id);
	for (int i = 0; i < nd && i < 16; i++) {
		fprintf(stderr, "%s%s", i ? "; " : "", d[i]);
		json_array_append_new(differs, json_string(d[i]));
		free(d[i]);
	}
	fprintf(stderr, "): layers from %d on are computed here, so its replay compares within tolerances\n", cursor);
	json_t *env = json_deep_copy(rec);
	if (!json_is_array(json_object_get(env, "resumed")))
		json_object_set_new(env, "resumed", json_array());
	json_array_append_new(json_object_get(env, "resumed"), json_pack("{s:i, s:o}", "layer", cursor, "differs", differs));
	char *text = json_dumps(env, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(env);
	rc = text != NULL ? sdb_session_set_environment(db, sess_view_get(s)->id, text, err) :
	    masq_err_set(err, MASQ_ERR_INTERNAL, "cannot write the numeric environment");
	free(text);
	return rc;
}

/* What rank 0 says if mpirun ends the resume (cli_stop_note). */
static int
resume_progress(void *ctx, const sess_progress *p)
{
	const sess_view *v = sess_view_get(ctx);
	if (p->phase == SP_BEFORE)
		cli_stop_note(v->db_path, (long long)v->id, p->layer, v->n_layers);
	return 0;
}

int
cmd_resume(int argc, char **argv)
{
	struct sopts o;
	int rc, finished;
	sdb *db = NULL;
	sess *s = NULL;
	masq_err err = {0};

	if (attach("resume", argc, argv, &o, &db, &s, 1, &rc) < 0)
		return rc;
	/* under mpirun rank 0 records; the others follow, each its share of
	 * the sequences (however many processes recorded the layers before) */
	sess_set_follow(s, dist_rank() != 0);
	int cursor = sess_restore(s, &finished, &err);
	const sess_view *v = sess_view_get(s);
	if (cursor < 0) {
		rc = cli_fail(&err);
		goto out;
	}
	if (finished) {
		if (dist_rank() == 0)
			fprintf(stderr, "masq: session %lld has already finished; nothing to resume\n", (long long)v->id);
		rc = 0;
		goto out;
	}
	if (dist_rank() == 0)
		fprintf(stderr, "masq: resuming session %lld at layer %d of %d\n", (long long)v->id, cursor, v->n_layers);
	/* this run's environment: every process's, compared with rank 0's */
	json_t *here = numenv_collect(sess_threads(s), v->opts->compute);
	numenv_ranks(here);
	int erc = dist_rank() == 0 ? resume_env_note(s, db, cursor, here, &err) : 0;
	json_decref(here);
	if (dist_size() > 1 && dist_agree(erc < 0, &err))
		erc = -1;
	if (erc < 0) {
		rc = cli_fail(&err);
		goto out;
	}
	sess_set_one_pass(s, 1);	/* as masq run: each layer quantized once */
	if (sess_run_to(s, v->n_layers, resume_progress, s, &err) < 0 || sess_dispatch(s, SC_FINISH, NULL, NULL, &err) < 0) {
		rc = cli_fail(&err);
		goto out;
	}
	if (dist_rank() != 0) {
		rc = 0;	/* rank 0 reports */
		goto out;
	}
	v = sess_view_get(s);
	printf("session %lld finished: SQNR of the last layer's output", (long long)v->id);
	for (int m = 0; m < MOD_COUNT; m++)
		if (sess_mod_present(s, m))
			printf(" %s %.2f", modality_name(m), v->summary->sqnr[m]);
	printf(" dB\n");
	rc = 0;
out:
	sess_free(s);
	sdb_close(db);
	return rc;
}

int
cmd_export(int argc, char **argv)
{
	struct sopts o;
	int rc, finished;
	sdb *db = NULL;
	sess *s = NULL;
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
	if (sess_restore(s, &finished, &err) < 0) {
		rc = cli_fail(&err);
		goto out;
	}
	json_t *args = json_pack("{s:s, s:s}", "format", o.format, "out", o.out);
	rc = sess_dispatch(s, SC_EXPORT, args, &res, &err);
	json_decref(args);
	if (rc < 0) {
		rc = cli_fail(&err);
		/* it was not there before, and an export is renamed into place
		 * only once complete: what failed came after (recording it) */
		if (access(o.out, F_OK) == 0)
			fprintf(stderr, "masq: %s is complete, but session %lld does not record it;"
			    " remove it to export again\n", o.out, (long long)sess_view_get(s)->id);
		goto out;
	}
	printf("session %lld exported as %s to %s (%zu files)\n", (long long)sess_view_get(s)->id, o.format, o.out,
	    json_object_size(json_object_get(res, "files")));
	export_report er;
	char line[1024];
	sess_export_sizes(res, &er);
	printf("%s\n", export_report_sizes(&er, line, sizeof line));
	const char *dropped = json_string_value(json_object_get(res, "dropped"));
	if (dropped != NULL && *dropped)
		printf("not expressible in this format: %s\n", dropped);
	rc = 0;
out:
	json_decref(res);
	sess_free(s);
	sdb_close(db);
	return rc;
}
