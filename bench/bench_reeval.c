/*
 * bench_reeval: how long the workbench waits after an alpha change.
 *
 * Loads one layer of a model (the 3b demo preset in `make bench`), runs its
 * calibration (FP forward with statistics), then changes the vision alpha
 * of the q/k/v group and re-evaluates from the token sample
 * (pipe_preview_sample), the path the TUI takes on every key press.  The
 * baseline, measured in the same run, is the full re-quantization of the
 * layer on every calibration token (pipe_quantize) under the same method
 * (mas by default; --method mas-cmc previews with compensation, whose
 * whitening bases are built on the first preview and shared by the rest).
 *
 * usage: bench_reeval MODEL_DIR CALIB [--layer N] [--threads T] [--reps R] [--method M]
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/benchutil.h"
#include "core/calib.h"
#include "core/engine.h"
#include "core/model.h"
#include "core/pipeline.h"


int
main(int argc, char **argv)
{
	int layer = 0, threads = 2, reps = 5, method = METHOD_MAS;
	masq_err err = {0};
	model m;
	calib c;
	pipeline p;
	pipe_opts o;

	if (argc < 3) {
		fprintf(stderr, "usage: bench_reeval MODEL_DIR CALIB [--layer N] [--threads T] [--reps R] [--method M]\n");
		return 2;
	}
	for (int i = 3; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--layer") == 0)
			layer = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--threads") == 0)
			threads = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--reps") == 0)
			reps = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--method") == 0) {
			method = method_parse(argv[i + 1]);
			if (method != METHOD_MAS && method != METHOD_MAS_CMC) {
				fprintf(stderr, "bench_reeval: --method is mas or mas-cmc, not %s\n", argv[i + 1]);
				return 2;
			}
		}
		else {
			fprintf(stderr, "bench_reeval: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	if (reps < 1 || reps > 100 || threads < 1) {
		fprintf(stderr, "bench_reeval: bad --reps or --threads\n");
		return 2;
	}
	masq_blas_set_threads(threads);
	if (model_open(&m, argv[1], &err) < 0 || calib_load(&c, argv[2], m.cfg.hidden, &err) < 0) {
		fprintf(stderr, "bench_reeval: %s\n", err.msg);
		return 2;
	}
	pipe_opts_default(&o);
	o.method = method;
	o.epochs = 0;	/* the closed form: previews evaluate it */
	if (pipe_init(&p, &m, &c, &o, &err) < 0) {
		fprintf(stderr, "bench_reeval: %s\n", err.msg);
		return 2;
	}
	/* walk to the layer (FP only; the quantized state is irrelevant here) */
	double t0 = masq_now();
	for (;;) {
		if (pipe_calibrate(&p, &err) < 0) {
			fprintf(stderr, "bench_reeval: %s\n", err.msg);
			return 1;
		}
		if (p.layer == layer)
			break;
		p.results[p.layer].done = 1;
		if (pipe_next(&p, &err) < 0) {
			fprintf(stderr, "bench_reeval: %s\n", err.msg);
			return 1;
		}
	}
	double t_calib = masq_now() - t0;

	double *tp = malloc(sizeof(double) * reps), *tq = malloc(sizeof(double) * reps);
	double *tall = malloc(sizeof(double) * reps);
	pipe_preview pv;
	for (int r = 0; r < reps; r++) {
		float a = 0.4f + 0.05f * (float)(r % 5);
		for (int g = 0; g < GRP_COUNT; g++)
			p.settings[layer].alpha[g][MOD_VISION] = a;
		if (pipe_preview_sample(&p, GRP_QKV, MOD_VISION, &pv, &err) < 0) {
			fprintf(stderr, "bench_reeval: %s\n", err.msg);
			return 1;
		}
		tp[r] = pv.seconds;
		if (pipe_preview_sample(&p, -1, -1, &pv, &err) < 0)
			return 1;
		tall[r] = pv.seconds;
		t0 = masq_now();
		if (pipe_quantize(&p, &err) < 0) {
			fprintf(stderr, "bench_reeval: %s\n", err.msg);
			return 1;
		}
		tq[r] = masq_now() - t0;
	}
	double mp = bench_median(tp, reps), mq = bench_median(tq, reps), ma = bench_median(tall, reps);
	printf("layer %d of %s: hidden %d, intermediate %d, %d tokens, %d BLAS threads, %s\n", layer, argv[1],
	    m.cfg.hidden, m.cfg.intermediate, c.n_tokens, masq_blas_get_threads(), method_name(method));
	printf("  calibrate (FP forward + statistics, up to the layer)  %8.1f ms\n", 1e3 * t_calib);
	printf("  preview: q/k/v, vision alpha changed, %3d sampled tokens %8.1f ms\n", pv.rows[MOD_VISION], 1e3 * mp);
	printf("  preview: every linear, every modality                 %8.1f ms\n", 1e3 * ma);
	printf("  full re-quantization of the layer (baseline)          %8.1f ms\n", 1e3 * mq);
	printf("bench_reeval: method=%s preview_ms=%.1f first_ms=%.1f all_ms=%.1f full_ms=%.1f speedup=%.1f target_ms=100 %s\n",
	    method_name(method), 1e3 * mp, 1e3 * tp[0], 1e3 * ma, 1e3 * mq, mq / mp, mp < 0.100 ? "PASS" : "BELOW");
	free(tp); free(tq); free(tall);
	pipe_done(&p);
	calib_done(&c);
	model_close(&m);
	return 0;
}
