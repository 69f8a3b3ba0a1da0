/*
 * cmd_tui.c: masq tui, the interactive workbench (ui/) on a recorded
 * session: a new one on the given model (the demo by default), or an
 * existing one resumed with --session.
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
#include "ui/ui.h"


int
cmd_tui(int argc, char **argv)
{
	enum { O_MODEL = 256, O_CALIB, O_DB, O_SESSION, O_METHOD, O_WBITS, O_ABITS, O_THREADS, O_ASCII };
	static const struct option opts[] = {
		{"model", required_argument, NULL, O_MODEL},
		{"calib", required_argument, NULL, O_CALIB},
		{"db", required_argument, NULL, O_DB},
		{"session", required_argument, NULL, O_SESSION},
		{"method", required_argument, NULL, O_METHOD},
		{"wbits", required_argument, NULL, O_WBITS},
		{"abits", required_argument, NULL, O_ABITS},
		{"threads", required_argument, NULL, O_THREADS},
		{"ascii", no_argument, NULL, O_ASCII},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	char *model_dir = NULL, *calib_path = NULL;
	const char *db_path = NULL;
	long session = 0, threads = 0, v;
	int c, rc = 2, news = 0, opened = 0;
	pipe_opts o;
	ui_opts uo;
	masq_err err = {0};
	sdb *db = NULL;
	sess *s = NULL;

	pipe_opts_default(&o);
	ui_opts_default(&uo);
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case O_MODEL: free(model_dir); model_dir = xstrdup(optarg); break;
		case O_CALIB: free(calib_path); calib_path = xstrdup(optarg); break;
		case O_DB: db_path = optarg; break;
		case O_SESSION:
			if (cli_int("tui", "--session", optarg, 1, 0x7fffffffL, &session) < 0)
				goto done;
			break;
		case O_METHOD:
			if ((o.method = method_parse(optarg)) < 0) {
				rc = cli_usage("tui", "unknown method '%s' (rtn, sq, mas, mas-cmc)", optarg);
				goto done;
			}
			news = 1;
			break;
		case O_WBITS:
		case O_ABITS:
			if (cli_int("tui", c == O_WBITS ? "--wbits" : "--abits", optarg, 2, 16, &v) < 0)
				goto done;
			if (v > 8 && v != 16) {
				rc = cli_usage("tui", "%s must be 2 to 8, or 16 for no quantization",
				    c == O_WBITS ? "--wbits" : "--abits");
				goto done;
			}
			*(c == O_WBITS ? &o.wbits : &o.abits) = (int)v;
			news = 1;
			break;
		case O_THREADS:
			if (cli_int("tui", "--threads", optarg, 1, 512, &threads) < 0)
				goto done;
			break;
		case O_ASCII: uo.ascii = 1; break;
		case 'h': cli_cmd_help("tui"); rc = 0; goto done;
		default:
			rc = cli_usage("tui", "unknown or incomplete option '%s'", argv[optind - 1]);
			goto done;
		}
	}
	if (optind != argc) {
		rc = cli_usage("tui", "unexpected argument '%s'", argv[optind]);
		goto done;
	}
	if (session > 0 && news) {
		rc = cli_usage("tui", "--method, --wbits and --abits set up a new session, not one resumed with --session");
		goto done;
	}
	if ((model_dir == NULL) != (calib_path == NULL)) {
		rc = cli_usage("tui", "--model and --calib go together");
		goto done;
	}
	if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
		rc = cli_usage("tui", "needs a terminal (masq run and masq replay are the headless drivers)");
		goto done;
	}
	cli_set_threads(threads);
	if (db_path == NULL)
		db_path = getenv("MASQ_DB") && *getenv("MASQ_DB") ? getenv("MASQ_DB") : SDB_DEFAULT_PATH;
	if (session > 0) {
		int finished;
		if (sdb_open(&db, db_path, 0, &err) < 0 ||
		    sess_attach(&s, db, session, model_dir, calib_path, 1, &err) < 0) {
			rc = cli_fail(&err);
			goto done;
		}
		opened = 1;
		if (sess_restore(s, &finished, &err) < 0) {
			rc = cli_fail(&err);
			goto done;
		}
	} else {
		if (cli_default_inputs(&model_dir, &calib_path, &err) < 0 ||
		    sdb_open(&db, db_path, SDB_CREATE, &err) < 0 ||
		    sess_create(&s, db, &o, model_dir, calib_path, (int)threads, &err) < 0) {
			rc = cli_fail(&err);
			goto done;
		}
		opened = 1;
		json_t *args = json_pack("{s:s, s:s}", "model", model_dir, "calib", calib_path);
		int r = sess_dispatch(s, SC_OPEN, args, NULL, &err);
		json_decref(args);
		if (r < 0) {
			rc = cli_fail(&err);
			goto done;
		}
	}
	uo.db_label = db_path;
	if (ui_run(s, &uo, &err) < 0) {
		rc = cli_fail(&err);
		goto done;
	}
	fprintf(stderr, "masq: session %lld is recorded in %s (masq replay --db %s --session %lld)\n",
	    (long long)sess_view_get(s)->id, db_path, db_path, (long long)sess_view_get(s)->id);
	rc = 0;
done:
	if (opened)
		sess_free(s);
	if (db != NULL)
		sdb_close(db);
	free(model_dir);
	free(calib_path);
	return rc;
}
