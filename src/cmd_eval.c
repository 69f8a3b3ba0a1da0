/*
 * cmd_eval.c: masq eval, an exported model run with deployment semantics
 * (core/deploy.h) beside the FP model on a calibration set, per layer and
 * per modality.
 */
#include "config.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/calib.h"
#include "core/deploy.h"
#include "core/export.h"
#include "sessions/session.h"
#include "src/cli.h"



/* The per-layer table and the summary, as text. */
static void
eval_print(const deploy_result *r, const calib *c, const char *model_dir, const char *ref_dir)
{
	char t[STATS_ROWS][32];

	printf("export %s (%s", model_dir, export_format_name(r->format));
	if (r->format != EXPORT_FAKE)
		printf(", W%d A%d", r->wbits, r->abits);
	printf(") against %s\n", ref_dir);
	printf("calibration: %d tokens (text %d, vision %d, audio %d)\n\n", c->n_tokens, c->n_mod[0],
	    c->n_mod[1], c->n_mod[2]);
	printf("SQNR (dB) of each layer's output against the FP model's:\n");
	printf("%-6s %8s %8s %8s %8s\n", "layer", "text", "vision", "audio", "all");
	for (int l = 0; l < r->n_layers; l++) {
		for (int m = 0; m < STATS_ROWS; m++)
			cli_fmt_db(t[m], sizeof t[m], m < MOD_COUNT && !c->n_mod[m] ? NAN : r->layers[l].sqnr[m]);
		printf("%-6d %8s %8s %8s %8s\n", l, t[0], t[1], t[2], t[3]);
	}
	printf("\nsummary, SQNR (dB) of the last layer's output against the FP model:\n ");
	for (int m = 0; m < MOD_COUNT; m++)
		if (c->n_mod[m])
			printf(" %s %.2f", modality_name(m), r->sqnr[m]);
	printf("  all %.2f\nMAE:", r->sqnr[STATS_ALL]);
	for (int m = 0; m < MOD_COUNT; m++)
		if (c->n_mod[m])
			printf(" %s %.4g", modality_name(m), r->mae[m]);
	if (isfinite(r->kl_text))
		printf("\nKL of next-token distributions at text positions: %.4g", r->kl_text);
	printf("\n%.1f s in all\n", r->seconds);
}

/* The whole result as one JSON document. */
static void
eval_json(const deploy_result *r, const calib *c, const char *model_dir, const char *ref_dir,
    const char *calib_path)
{
	json_t *d = json_object(), *layers = json_array(), *sum = json_object();

	json_object_set_new(d, "model", json_string(model_dir));
	json_object_set_new(d, "reference", json_string(ref_dir));
	json_object_set_new(d, "calib", json_string(calib_path));
	json_object_set_new(d, "format", json_string(export_format_name(r->format)));
	json_object_set_new(d, "wbits", r->wbits ? json_integer(r->wbits) : json_null());
	json_object_set_new(d, "abits", r->abits ? json_integer(r->abits) : json_null());
	json_object_set_new(d, "tokens", json_pack("{s:i, s:i, s:i, s:i}", "all", c->n_tokens, "text",
	    c->n_mod[0], "vision", c->n_mod[1], "audio", c->n_mod[2]));
	for (int l = 0; l < r->n_layers; l++)
		json_array_append_new(layers, json_pack("{s:i, s:o, s:o}", "layer", l, "sqnr_db",
		    sess_json_mods_counts(c->n_mod, r->layers[l].sqnr, 1), "mae", sess_json_mods_counts(c->n_mod, r->layers[l].mae, 1)));
	json_object_set_new(d, "layers", layers);
	json_object_set_new(sum, "sqnr_db", sess_json_mods_counts(c->n_mod, r->sqnr, 1));
	json_object_set_new(sum, "mae", sess_json_mods_counts(c->n_mod, r->mae, 1));
	json_object_set_new(sum, "kl_text", sess_json_num(r->kl_text));
	json_object_set_new(sum, "seconds", json_real(r->seconds));
	json_object_set_new(d, "summary", sum);
	json_dumpf(d, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
	printf("\n");
	json_decref(d);
}

int
cmd_eval(int argc, char **argv)
{
	static const struct option opts[] = {
		{"model", required_argument, NULL, 'm'},
		{"reference", required_argument, NULL, 'r'},
		{"calib", required_argument, NULL, 'c'},
		{"threads", required_argument, NULL, 't'},
		{"json", no_argument, NULL, 'j'},
		{"layer-prefix", required_argument, NULL, 'p'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	const char *model_dir = NULL, *ref_dir = NULL, *calib_path = NULL, *prefix = NULL;
	long threads = 0;
	int json = 0, c;
	masq_err err = {0};
	calib cal;
	deploy_result r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'm': model_dir = optarg; break;
		case 'r': ref_dir = optarg; break;
		case 'c': calib_path = optarg; break;
		case 't':
			if (cli_int("eval", "--threads", optarg, 1, 512, &threads) < 0)
				return 2;
			break;
		case 'j': json = 1; break;
		case 'p': prefix = optarg; break;
		case 'h': cli_cmd_help("eval"); return 0;
		default:
			return cli_usage("eval", "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return cli_usage("eval", "unexpected argument '%s'", argv[optind]);
	if (model_dir == NULL)
		return cli_usage("eval", "--model EXPORT_DIR is required (the exported model to run)");
	if (ref_dir == NULL)
		return cli_usage("eval", "--reference DIR is required (the full-precision model it came from)");
	if (calib_path == NULL)
		return cli_usage("eval", "--calib FILE is required (the calibration set to run on)");
	cli_set_threads(threads);
	if (calib_load(&cal, calib_path, 0, &err) < 0)
		return cli_fail(&err);
	if (deploy_eval(model_dir, ref_dir, prefix, &cal, &r, &err) < 0) {
		calib_done(&cal);
		return cli_fail(&err);
	}
	if (json)
		eval_json(&r, &cal, model_dir, ref_dir, calib_path);
	else
		eval_print(&r, &cal, model_dir, ref_dir);
	deploy_result_done(&r);
	calib_done(&cal);
	return 0;
}
