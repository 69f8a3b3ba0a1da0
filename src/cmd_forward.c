/*
 * cmd_forward.c: masq forward, the full-precision decoder pass, layer by
 * layer, with a per-layer per-modality summary and an optional dump of every
 * layer's output for verification.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "core/calib.h"
#include "core/dist.h"
#include "core/engine.h"
#include "core/model.h"
#include "core/safetensors.h"
#include "core/stats.h"
#include "src/cli.h"

/* Per layer: each site's statistics (core/stats), only the maxima used:
 * the largest |x| of each modality and the median over channels of its
 * per-channel max|x|. */
struct fwd_obs {
	const uint8_t *modality;
	site_stats st[SITE_COUNT];
	int ready[SITE_COUNT];
};

static void
fwd_observe(void *ctx, int layer, int site, const float *x, int n, int d)
{
	struct fwd_obs *o = ctx;
	(void)layer;
	if (o->ready[site] && o->st[site].d != d) {
		stats_site_done(&o->st[site]);
		o->ready[site] = 0;
	}
	if (!o->ready[site]) {
		stats_site_init(&o->st[site], d, 0, 0);
		o->ready[site] = 1;
	}
	stats_site_add(&o->st[site], x, o->modality, n, NULL);
}

/* Forget the layer's statistics before the next one. */
static void
fwd_obs_reset(struct fwd_obs *o)
{
	for (int s = 0; s < SITE_COUNT; s++)
		if (o->ready[s]) {
			stats_site_done(&o->st[s]);
			o->ready[s] = 0;
		}
}

/* The largest |x| and the median channel max of modality m at site s. */
static void
fwd_range(const struct fwd_obs *o, int s, int m, float *max, float *median)
{
	*max = *median = 0.0f;
	if (o->ready[s])
		stats_channel_range(&o->st[s], m, max, median);
}

/* Under mpirun, the maxima and counts of every rank's statistics, so that
 * fwd_range reads what one process over every token reads. */
static void
fwd_obs_reduce(struct fwd_obs *o)
{
	for (int s = 0; s < SITE_COUNT; s++) {
		if (!o->ready[s])
			continue;
		dist_max_f32(o->st[s].absmax, xmul((size_t)STATS_ROWS, (size_t)o->st[s].d));
		dist_sum_i64(o->st[s].count, STATS_ROWS);
	}
}

/* A failure before the layers: under mpirun every rank reports it at the
 * same point (dist_stop), so none waits for the others; one process prints
 * it as every command does. */
static int
fwd_fail(const masq_err *err)
{
	if (dist_size() == 1)
		return cli_fail(err);
	dist_stop(1, -1, err);
	return masq_exit_code(err->status == MASQ_OK ? MASQ_ERR_INTERNAL : err->status);
}

int
cmd_forward(int argc, char **argv)
{
	static const struct option opts[] = {
		{"model", required_argument, NULL, 'm'},
		{"calib", required_argument, NULL, 'c'},
		{"out", required_argument, NULL, 'o'},
		{"threads", required_argument, NULL, 't'},
		{"json", no_argument, NULL, 'j'},
		{"layer-prefix", required_argument, NULL, 'p'},
		{"compute", required_argument, NULL, 'C'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	char *model_dir = NULL, *calib_path = NULL, *tmp = NULL;
	const char *out = NULL, *prefix = NULL;
	long threads = 0;
	int json = 0, c, rc = 2, compute = ENGINE_F32;
	masq_err err = {0};
	model m;
	calib cal;
	engine eng;
	layer_weights w;
	st_writer *wr = NULL;
	struct fwd_obs obs;
	json_t *doc = NULL, *jl = NULL;
	const int nr = dist_size(), me = dist_rank();
	calib part, *lc = &cal;		/* the sequences this process runs */
	int *first = NULL;		/* under mpirun: rank r runs sequences first[r] .. first[r + 1] - 1 */
	size_t *counts = NULL;		/* floats of hidden state each rank holds */
	float *hall = NULL;		/* rank 0 with --out: every rank's rows, in token order */
	int reported = 0;		/* a failure dist_stop has printed */

	memset(&part, 0, sizeof part);
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'm': free(model_dir); model_dir = xstrdup(optarg); break;
		case 'c': free(calib_path); calib_path = xstrdup(optarg); break;
		case 'o': out = optarg; break;
		case 't':
			if (cli_int("forward", "--threads", optarg, 1, 512, &threads) < 0)
				goto done;
			break;
		case 'j': json = 1; break;
		case 'p': prefix = optarg; break;
		case 'C':
			if ((compute = engine_compute_parse(optarg)) < 0) {
				rc = cli_usage("forward", "--compute takes f32 or bf16, not '%s'", optarg);
				goto done;
			}
			break;
		case 'h': cli_cmd_help("forward"); rc = 0; goto done;
		default:
			rc = cli_usage("forward", "unknown or incomplete option '%s'", argv[optind - 1]);
			goto done;
		}
	}
	if (optind != argc) {
		rc = cli_usage("forward", "unexpected argument '%s'", argv[optind]);
		goto done;
	}
	cli_set_threads(threads);
	if (cli_default_inputs(&model_dir, &calib_path, &err) < 0) {
		rc = fwd_fail(&err);
		goto done;
	}
	if (model_open_prefix(&m, model_dir, prefix, &err) < 0) {
		rc = fwd_fail(&err);
		goto done;
	}
	if (calib_load(&cal, calib_path, m.cfg.hidden, &err) < 0) {
		rc = fwd_fail(&err);
		model_close(&m);
		goto done;
	}

	const model_config *cfg = &m.cfg;
	int n_layers = cfg->n_layers;
	if (model_deepstack_check(cfg, cal.n_deepstack, &err) < 0 || engine_compute_check(cfg, compute, &err) < 0 ||
	    (nr > cal.n_seqs && masq_err_set(&err, MASQ_ERR_USAGE,
	    "%s has %d sequences for %d processes: masq forward gives each process whole sequences",
	    calib_path, cal.n_seqs, nr) < 0)) {
		rc = fwd_fail(&err);
		calib_done(&cal);
		model_close(&m);
		goto done;
	}
	if (cfg->mrope_interleaved && cal.n_mod[MOD_VISION] > 0 && cal.n_deepstack == 0 && me == 0)
		cli_deepstack_warn(cal.n_mod[MOD_VISION]);
	size_t T = (size_t)cal.n_tokens, D = (size_t)cfg->hidden;
	size_t tok0 = 0;	/* this process's first token */
	if (nr > 1) {
		/* whole sequences, balanced by tokens; the set's own copy goes */
		first = xmalloc(xmul((size_t)nr + 1, sizeof *first));
		counts = xmalloc(xmul((size_t)nr, sizeof *counts));
		dist_shard(cal.seq_lens, cal.n_seqs, nr, first);
		for (int r = 0; r < nr; r++) {
			size_t k = 0;
			for (int q = first[r]; q < first[r + 1]; q++)
				k += (size_t)cal.seq_lens[q];
			counts[r] = k * D;
			if (r < me)
				tok0 += k;
		}
		calib_slice(&cal, first[me], first[me + 1], &part);
		lc = &part;
		free(cal.embeds);
		cal.embeds = NULL;
	}
	if (out != NULL && me == 0) {
		wr = st_writer_new();
		int64_t shape[2] = {(int64_t)T, (int64_t)D};
		char name[64];
		for (int l = 0; l < cfg->n_layers; l++) {
			snprintf(name, sizeof name, "layers.%d.output", l);
			if (st_writer_add(wr, name, ST_F32, 2, shape, &err) < 0)
				goto fail_open;
		}
		if (st_writer_meta(wr, "masq_model", model_dir, &err) < 0 ||
		    st_writer_meta(wr, "masq_calib", calib_path, &err) < 0 ||
		    st_writer_meta(wr, "masq_version", PACKAGE_VERSION, &err) < 0 ||
		    st_writer_meta(wr, "masq_compute", engine_compute_name(compute), &err) < 0)
			goto fail_open;
		/* Written beside the target and renamed into place when complete. */
		tmp = xmalloc(strlen(out) + 16);
		sprintf(tmp, "%s.tmp%ld", out, (long)getpid());
		if (st_writer_begin(wr, tmp, &err) < 0)
			goto fail_open;
	}

	/* every rank set up: from here a failure stops them all together */
	if (nr > 1 && dist_stop(0, -1, &err)) {
		rc = 2;
		calib_done(&cal);
		model_close(&m);
		goto done_tmp;	/* rank 0 may have begun the file */
	}
	size_t TL = (size_t)lc->n_tokens;	/* this process's tokens */
	float *h = xmalloc(xmul(TL * D, sizeof(float)));
	memcpy(h, lc->embeds, TL * D * sizeof(float));
	if (nr > 1 && wr != NULL)
		hall = xmalloc(xmul(T * D, sizeof(float)));
	memset(&obs, 0, sizeof obs);
	obs.modality = lc->modality;
	engine_ops ops = {.ctx = &obs, .observe = fwd_observe};
	engine_batch b = {.n_tokens = lc->n_tokens, .n_seqs = lc->n_seqs, .seq_lens = lc->seq_lens,
	    .pos = lc->pos, .modality = lc->modality};
	engine_init(&eng, cfg);
	engine_set_compute(&eng, compute);

	if (json) {
		doc = json_object();
		json_object_set_new(doc, "model", json_string(model_dir));
		json_object_set_new(doc, "calib", json_string(calib_path));
		json_object_set_new(doc, "tokens", json_integer((json_int_t)T));
		json_object_set_new(doc, "compute", json_string(engine_compute_name(compute)));
		jl = json_array();
		json_object_set_new(doc, "layers", jl);
		if (nr > 1)
			json_object_set_new(doc, "processes", json_integer(nr));
	} else if (me == 0) {
		printf("model %s: %d layers, hidden %d; calibration %s: %d sequences, %d tokens "
		    "(text %d, vision %d, audio %d)\n", model_dir, cfg->n_layers, cfg->hidden,
		    calib_path, cal.n_seqs, cal.n_tokens, cal.n_mod[0], cal.n_mod[1], cal.n_mod[2]);
		if (nr > 1)
			printf("%d processes, sequences balanced by tokens (rank 0: %d sequences, %zu tokens)\n", nr,
			    first[1], counts[0] / D);
		printf("\n");
		printf("%-5s %8s %9s | %-26s | %-26s | %-26s\n", "", "", "",
		    "qkv input: median ch. max", "down input: median ch. max", "hidden state RMS");
		printf("%-5s %8s %9s | %8s %8s %8s | %8s %8s %8s | %8s %8s %8s\n", "layer", "ms",
		    "tok/s", "text", "vision", "audio", "text", "vision", "audio", "text", "vision",
		    "audio");
	}
	int failed = 0;
	double t_all = masq_now();
	for (int l = 0; l < cfg->n_layers; l++) {
		double t0 = masq_now();
		if (dist_stop(layer_weights_load(&w, &m, l, &err) < 0, l, &err)) {
			failed = 1;
			reported = nr > 1;
			break;
		}
		fwd_obs_reset(&obs);
		engine_layer_forward(&eng, &w, &b, h, &ops);
		calib_deepstack_add(lc, l, h);	/* Qwen3-VL: the state layer l + 1 takes */
		layer_weights_done(&w);
		if (nr > 1)
			fwd_obs_reduce(&obs);
		float amax[SITE_COUNT][MOD_COUNT], med[SITE_COUNT][MOD_COUNT];
		for (int s = 0; s < SITE_COUNT; s++)
			for (int k = 0; k < MOD_COUNT; k++)
				fwd_range(&obs, s, k, &amax[s][k], &med[s][k]);
		double rms[MOD_COUNT] = {0};
		for (size_t t = 0; t < TL; t++) {
			double s = 0;
			for (size_t j = 0; j < D; j++)
				s += (double)h[t * D + j] * h[t * D + j];
			rms[lc->modality[t]] += s / (double)D;
		}
		dist_sum_f64(rms, MOD_COUNT);
		for (int k = 0; k < MOD_COUNT; k++)
			rms[k] = cal.n_mod[k] ? sqrt(rms[k] / cal.n_mod[k]) : 0.0;
		for (size_t i = 0; i < TL * D; i++)
			if (!isfinite(h[i])) {
				masq_err_set(&err, MASQ_ERR_FORMAT,
				    "%s: layer %d produced a non-finite value at token %zu (the weights or "
				    "inputs overflow float32)", model_dir, l, tok0 + i / D);
				failed = 1;
				break;
			}
		if (dist_stop(failed, l, &err)) {
			failed = 1;
			reported = nr > 1;
			break;
		}
		if (out != NULL) {
			/* rank 0 writes every rank's rows, in token order */
			const float *rows = h;
			if (nr > 1) {
				dist_gather_f32(h, counts, hall);
				rows = hall;
			}
			if (wr != NULL && st_writer_write(wr, rows, T * D * sizeof(float), &err) < 0)
				failed = 1;
			if (dist_stop(failed, l, &err)) {
				failed = 1;
				reported = nr > 1;
				break;
			}
		}
		double dt = masq_now() - t0;
		if (me != 0) {
			/* nothing to say */
		} else if (json) {
			json_t *jo = json_object();
			json_object_set_new(jo, "layer", json_integer(l));
			json_object_set_new(jo, "seconds", json_real(dt));
			for (int s = 0; s < SITE_COUNT; s++) {
				json_t *js = json_object();
				for (int k = 0; k < MOD_COUNT; k++) {
					if (!cal.n_mod[k])
						continue;
					json_t *jm = json_object();
					json_object_set_new(jm, "absmax", json_real(amax[s][k]));
					json_object_set_new(jm, "median_channel_max", json_real(med[s][k]));
					json_object_set_new(js, modality_name(k), jm);
				}
				json_object_set_new(jo, engine_site_name(s), js);
			}
			json_t *jr = json_object();
			for (int k = 0; k < MOD_COUNT; k++)
				if (cal.n_mod[k])
					json_object_set_new(jr, modality_name(k), json_real(rms[k]));
			json_object_set_new(jo, "hidden_rms", jr);
			json_array_append_new(jl, jo);
		} else {
			printf("%-5d %8.1f %9.0f | %8.3g %8.3g %8.3g | %8.3g %8.3g %8.3g | %8.3g %8.3g %8.3g\n",
			    l, 1e3 * dt, (double)T / dt, med[SITE_QKV][0], med[SITE_QKV][1], med[SITE_QKV][2],
			    med[SITE_DOWN][0], med[SITE_DOWN][1], med[SITE_DOWN][2], rms[0], rms[1], rms[2]);
			fflush(stdout);
		}
	}
	engine_done(&eng);
	fwd_obs_reset(&obs);
	free(h);
	calib_done(&cal);
	model_close(&m);
	if (failed)
		goto fail;
	if (me != 0) {
		rc = 0;
		goto done;
	}
	if (wr != NULL) {
		if (st_writer_finish(wr, &err) < 0)
			goto fail;
		if (rename(tmp, out) != 0) {
			masq_err_set(&err, MASQ_ERR_IO, "%s: cannot rename %s into place: %s", out, tmp,
			    strerror(errno));
			unlink(tmp);
			goto fail;
		}
	}
	if (json) {
		json_object_set_new(doc, "seconds", json_real(masq_now() - t_all));
		if (out != NULL)
			json_object_set_new(doc, "out", json_string(out));
		json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		printf("\n");
	} else {
		printf("\n%d layers in %.2f s", n_layers, masq_now() - t_all);
		if (out != NULL)
			printf("; every layer's output written to %s", out);
		printf("\n");
	}
	rc = 0;
	goto done;
fail_open:
	if (nr > 1) {
		rc = fwd_fail(&err);
		calib_done(&cal);
		model_close(&m);
		goto done_tmp;
	}
	calib_done(&cal);
	model_close(&m);
fail:
	rc = reported ? 2 : cli_fail(&err);
done_tmp:
	if (tmp != NULL)
		unlink(tmp);
done:
	calib_done(&part);
	free(first);
	free(counts);
	free(hall);
	if (wr != NULL)
		st_writer_free(wr);
	json_decref(doc);
	free(tmp);
	free(model_dir);
	free(calib_path);
	return rc;
}
