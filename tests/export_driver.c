/*
 * export_driver.c: drives core/export and the pipeline for tests/export.sh
 * without the session layer.
 *
 *   export_driver plan MODEL CALIB PLANDIR [--method M] [--wbits N] [--abits N]
 *                 [--wgroup N] [--rank R]
 *       run the pipeline over every layer, write PLANDIR/plan-L.safetensors
 *       (qplan_write) and print the summary as JSON
 *       {"summary": {"sqnr_db": {"text": ..}, "mae": {..}}}
 *   export_driver export MODEL PLANDIR FORMAT OUT [--shard-bytes N]
 *       export_write with plans read back from PLANDIR; prints the report
 *       as JSON; on failure "masq: message" and masq_exit_code's status
 *   export_driver preview MODEL PLANDIR FORMAT
 *       export_preview's tensor list
 * Without arguments it prints a TAP skip (make check runs every check
 * program).
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/calib.h"
#include "core/export.h"
#include "core/model.h"
#include "core/pipeline.h"
#include "core/qplan.h"

struct plans {
	const model *m;
	const char *dir;
	int calls;
};

/* The export's plan callback: PLANDIR/plan-L.safetensors. */
static int
plan_read(void *ctx, int layer, qplan_layer *plan, masq_err *err)
{
	struct plans *p = ctx;
	char name[64];
	char *path;
	int rc;

	snprintf(name, sizeof name, "plan-%d.safetensors", layer);
	path = masq_path_join(p->dir, name);
	rc = qplan_read(plan, &p->m->cfg, path, err);
	free(path);
	p->calls++;
	return rc;
}

/* Print err as masq does and return its exit status. */
static int
fail(const masq_err *err)
{
	fprintf(stderr, "masq: %s\n", err->msg);
	return masq_exit_code(err->status == MASQ_OK ? MASQ_ERR_INTERNAL : err->status);
}

/* {"text": .., "vision": .., "audio": .., "all": ..}, null where undefined. */
static json_t *
jmods(const double *v)
{
	json_t *o = json_object();
	for (int m = 0; m < STATS_ROWS; m++)
		json_object_set_new(o, m < MOD_COUNT ? modality_name(m) : "all",
		    isfinite(v[m]) ? json_real(v[m]) : json_null());
	return o;
}

/* export_driver plan: the pipeline over every layer, plans written. */
/* f32, f16, bf16 as an st_dtype (else -1, which the checks refuse). */
static int
dtype_arg(const char *s)
{
	return strcmp(s, "f32") == 0 ? ST_F32 : strcmp(s, "f16") == 0 ? ST_F16 : strcmp(s, "bf16") == 0 ? ST_BF16 : -1;
}

static int
do_plan(int argc, char **argv)
{
	model m;
	calib c;
	pipeline p;
	pipe_opts o;
	masq_err err = {0};
	int rc = 2;

	if (argc < 5)
		return fprintf(stderr, "usage: export_driver plan MODEL CALIB PLANDIR [options]\n"), 2;
	pipe_opts_default(&o);
	for (int i = 5; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--method") == 0)
			o.method = method_parse(argv[i + 1]);
		else if (strcmp(argv[i], "--wbits") == 0)
			o.wbits = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--abits") == 0)
			o.abits = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--wgroup") == 0)
			o.wgroup = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--rank") == 0)
			o.rank = atof(argv[i + 1]);
		else if (strcmp(argv[i], "--cmc-dtype") == 0)
			o.cmc_dtype = dtype_arg(argv[i + 1]);
		else
			return fprintf(stderr, "export_driver: unknown option %s\n", argv[i]), 2;
	}
	if (o.method < 0)
		return fprintf(stderr, "export_driver: unknown method\n"), 2;
	if (model_open(&m, argv[2], &err) < 0)
		return fail(&err);
	if (calib_load(&c, argv[3], m.cfg.hidden, &err) < 0) {
		model_close(&m);
		return fail(&err);
	}
	if (masq_mkdir_p(argv[4], &err) < 0 || pipe_init(&p, &m, &c, &o, &err) < 0) {
		rc = fail(&err);
		goto out_mc;
	}
	while (p.layer < p.n_layers) {
		char name[64], *path;
		snprintf(name, sizeof name, "plan-%d.safetensors", p.layer);
		path = masq_path_join(argv[4], name);
		int r = pipe_calibrate(&p, &err) < 0 || pipe_quantize(&p, &err) < 0 ||
		    qplan_write(&p.plan, path, &err) < 0 || pipe_next(&p, &err) < 0;
		free(path);
		if (r) {
			rc = fail(&err);
			goto out;
		}
	}
	if (pipe_finish(&p, &err) < 0) {
		rc = fail(&err);
		goto out;
	}
	json_t *doc = json_object(), *sum = json_object();
	json_object_set_new(doc, "method", json_string(method_name(o.method)));
	json_object_set_new(doc, "wbits", json_integer(o.wbits));
	json_object_set_new(doc, "abits", json_integer(o.abits));
	json_object_set_new(sum, "sqnr_db", jmods(p.summary.sqnr));
	json_object_set_new(sum, "mae", jmods(p.summary.mae));
	json_object_set_new(sum, "kl_text", isfinite(p.summary.kl_text) ? json_real(p.summary.kl_text) : json_null());
	json_object_set_new(doc, "summary", sum);
	json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
	printf("\n");
	json_decref(doc);
	rc = 0;
out:
	pipe_done(&p);
out_mc:
	calib_done(&c);
	model_close(&m);
	return rc;
}

/* export_driver export / preview. */
static int
do_export(int argc, char **argv, int preview)
{
	model m;
	masq_err err = {0};
	export_opts o = {0};
	export_report rep;
	struct plans pl;
	int need = preview ? 5 : 6, rc;

	if (argc < need)
		return fprintf(stderr, "usage: export_driver export MODEL PLANDIR FORMAT OUT [--shard-bytes N]\n"), 2;
	if ((o.format = export_format_parse(argv[4])) < 0)
		return fprintf(stderr, "masq: unknown format '%s'\n", argv[4]), 2;
	for (int i = need; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--shard-bytes") == 0)
			o.shard_bytes = strtoull(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--provenance") == 0)
			o.provenance = argv[i + 1];
		else if (strcmp(argv[i], "--cmc-dtype") == 0)
			o.cmc_dtype = dtype_arg(argv[i + 1]);
		else
			return fprintf(stderr, "export_driver: unknown option %s\n", argv[i]), 2;
	}
	if (model_open(&m, argv[2], &err) < 0)
		return fail(&err);
	pl.m = &m;
	pl.dir = argv[3];
	pl.calls = 0;
	if (preview) {
		char *s = export_preview(&m, plan_read, &pl, &o, &rep, &err);
		rc = s == NULL ? fail(&err) : 0;
		if (s != NULL)
			printf("%s\n", s);
		free(s);
	} else if (export_write(&m, plan_read, &pl, &o, argv[5], &rep, &err) < 0) {
		rc = fail(&err);
	} else {
		json_t *doc = json_pack("{s:s, s:i, s:I, s:i, s:s, s:i}", "format", export_format_name(o.format),
		    "files", rep.files, "bytes", (json_int_t)rep.bytes, "tensors", rep.tensors, "dropped",
		    rep.dropped, "plan_calls", pl.calls);
		json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		printf("\n");
		json_decref(doc);
		rc = 0;
	}
	model_close(&m);
	return rc;
}

int
main(int argc, char **argv)
{
	/* make check runs every check program as a TAP test: without
	 * arguments this helper reports itself skipped */
	if (argc == 1) {
		printf("1..0 # SKIP export_driver is a helper of tests/export.sh\n");
		return 0;
	}
	if (argc >= 2 && strcmp(argv[1], "plan") == 0)
		return do_plan(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "export") == 0)
		return do_export(argc, argv, 0);
	if (argc >= 2 && strcmp(argv[1], "preview") == 0)
		return do_export(argc, argv, 1);
	fprintf(stderr, "usage: export_driver plan|export|preview ...\n");
	return 2;
}
