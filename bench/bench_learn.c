/*
 * bench_learn: one training step of learned MAS on one decoder layer, on
 * every calibration sequence (one AdamW step each, as an epoch does),
 * against the same layer's FP forward of the same tokens, in the same run.
 *
 *	bench_learn MODEL_DIR CALIB [--layer N] [--threads T] [--reps R] [--dump FILE]
 *
 * The step is learn_step_grad (the train-mode forward of the block with
 * per-modality weight copies, the loss, the hand-written backward) plus
 * learn_adam_step, per sequence; the baseline is engine_layer_forward with
 * no hooks on all the calibration tokens at once: the work of the FP layer
 * the quantized one is measured against.  The figure is
 *
 *	ratio = step time (all sequences) / FP forward time (same tokens)
 *
 * against a target of 4.  The train-mode forward alone (no backward) is
 * timed too, and the first step's loss printed, so that an outside
 * implementation of the same step (bench/learn_torch.py) can be checked to
 * compute the same thing: --dump FILE writes what it needs (the start
 * factors, the layer's input and target) as safetensors.
 * Exit 0 whether or not the target is met, 2 on a usage error, and the
 * masq exit code of the fault when the model or calibration cannot be read.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/benchutil.h"
#include "core/blas.h"
#include "core/engine.h"
#include "core/learn.h"
#include "core/numenv.h"
#include "core/pipeline.h"
#include "core/safetensors.h"
#include "core/util.h"

#define BENCH_TARGET 4.0

static void
usage(FILE *f)
{
	fprintf(f, "usage: bench_learn MODEL_DIR CALIB [--layer N] [--threads T] [--reps R] [--dump FILE]\n");
}

/* Start factors, input and target of the layer for an outside step. */
static int
dump(const char *path, const pipeline *p, const float *const init[LEARN_LINS][MOD_COUNT], const float *target,
    masq_err *err)
{
	st_writer *w = st_writer_new();
	int64_t hs[2] = {p->c->n_tokens, p->m->cfg.hidden};
	char name[64];
	int rc = 0;
	for (int k = 0; k < LEARN_LINS && rc == 0; k++)
		for (int m = 0; m < MOD_COUNT && rc == 0; m++) {
			int out, in;
			layer_lin_shape(&p->m->cfg, k, &out, &in);
			int64_t s[1] = {in};
			snprintf(name, sizeof name, "init.%s.%s", lin_name(k), modality_name(m));
			rc = st_writer_add(w, name, ST_F32, 1, s, err);
		}
	if (rc == 0)
		rc = st_writer_add(w, "h", ST_F32, 2, hs, err) < 0 || st_writer_add(w, "target", ST_F32, 2, hs, err) < 0 ||
		    st_writer_begin(w, path, err) < 0 ? -1 : 0;
	for (int k = 0; k < LEARN_LINS && rc == 0; k++)
		for (int m = 0; m < MOD_COUNT && rc == 0; m++) {
			int out, in;
			layer_lin_shape(&p->m->cfg, k, &out, &in);
			rc = st_writer_write_f32(w, init[k][m], (size_t)in, err);
		}
	size_t n = (size_t)hs[0] * hs[1];
	if (rc == 0)
		rc = st_writer_write_f32(w, p->h_q, n, err) < 0 || st_writer_write_f32(w, target, n, err) < 0 ||
		    st_writer_finish(w, err) < 0 ? -1 : 0;
	st_writer_free(w);
	return rc;
}

int
main(int argc, char **argv)
{
	masq_err err = {0};
	int layer = 0, threads = 2, reps = 3;
	const char *dump_path = NULL, *env = getenv("OPENBLAS_NUM_THREADS");

	if (argc < 3) {
		usage(stderr);
		return 2;
	}
	if (env != NULL && bench_parse_int(env, 1, 1024, &threads) < 0)
		threads = 2;
	for (int i = 3; i < argc; i += 2) {
		if (i + 1 >= argc) {
			usage(stderr);
			return 2;
		}
		if (strcmp(argv[i], "--layer") == 0 ? bench_parse_int(argv[i + 1], 0, 1 << 20, &layer) :
		    strcmp(argv[i], "--threads") == 0 ? bench_parse_int(argv[i + 1], 1, 1024, &threads) :
		    strcmp(argv[i], "--reps") == 0 ? bench_parse_int(argv[i + 1], 1, 1000, &reps) :
		    strcmp(argv[i], "--dump") == 0 ? (dump_path = argv[i + 1], 0) : -1) {
			usage(stderr);
			return 2;
		}
	}
	masq_blas_set_threads(threads);
	model m;
	calib c;
	if (model_open(&m, argv[1], &err) < 0 || calib_load(&c, argv[2], m.cfg.hidden, &err) < 0) {
		fprintf(stderr, "bench_learn: %s\n", err.msg);
		return masq_exit_code(err.status);
	}
	if (layer >= m.cfg.n_layers) {
		fprintf(stderr, "bench_learn: layer %d of %d\n", layer, m.cfg.n_layers);
		return 2;
	}
	/* the layer as the pipeline prepares it: calibrated, closed-form start */
	pipe_opts po;
	pipe_opts_default(&po);
	po.method = METHOD_MAS;
	pipeline p;
	if (pipe_init(&p, &m, &c, &po, &err) < 0) {
		fprintf(stderr, "bench_learn: %s\n", err.msg);
		return masq_exit_code(err.status);
	}
	for (int l = 0; l <= layer; l++) {
		if (pipe_calibrate(&p, &err) < 0 || (l < layer && (pipe_quantize(&p, &err) < 0 || pipe_next(&p, &err) < 0))) {
			fprintf(stderr, "bench_learn: %s\n", err.msg);
			return masq_exit_code(err.status);
		}
	}
	const model_config *cfg = &m.cfg;
	int D = cfg->hidden, T = c.n_tokens;
	float *init[LEARN_LINS][MOD_COUNT];
	for (int k = 0; k < LEARN_LINS; k++)
		for (int md = 0; md < MOD_COUNT; md++) {
			int out, in;
			layer_lin_shape(cfg, k, &out, &in);
			init[k][md] = xmalloc(xmul((size_t)in, sizeof(float)));
			pipe_factor(&p, &p.settings[layer], METHOD_MAS, k, md, init[k][md]);
		}
	float *target = xmalloc(xmul((size_t)T * D, sizeof(float)));
	memcpy(target, p.h_fp, (size_t)T * D * sizeof(float));
	engine_ops tops = {.linear = learn_target_linear};
	engine_layer_forward(&p.eng, &p.w, &p.batch, target, &tops);
	if (dump_path != NULL && dump(dump_path, &p, (const float *const (*)[MOD_COUNT])init, target, &err) < 0) {
		fprintf(stderr, "bench_learn: %s\n", err.msg);
		return masq_exit_code(err.status);
	}
	learn_seq *seq = xmalloc(xmul((size_t)c.n_seqs, sizeof *seq));
	for (int s = 0, t0 = 0; s < c.n_seqs; t0 += c.seq_lens[s], s++)
		seq[s] = (learn_seq){.n = c.seq_lens[s], .h = p.h_q + (size_t)t0 * D, .target = target + (size_t)t0 * D,
		    .pos = c.pos + t0, .pos_stride = T, .modality = c.modality + t0};
	learn_opts lo;
	learn_opts_default(&lo);
	float *h = xmalloc(xmul((size_t)T * D, sizeof(float)));
	double *tf = xmalloc(xmul((size_t)reps, sizeof(double))), *ts = xmalloc(xmul((size_t)reps, sizeof(double)));
	double *tt = xmalloc(xmul((size_t)reps, sizeof(double)));
	double loss0 = 0.0;
	bench_load ld0, ld1;

	/* one warm-up of each, then reps interleaved */
	for (int r = -1; r < reps; r++) {
		if (r == 0)
			bench_load_take(&ld0);
		memcpy(h, p.h_fp, (size_t)T * D * sizeof(float));
		double t0 = masq_now();
		engine_layer_forward(&p.eng, &p.w, &p.batch, h, NULL);
		double t1 = masq_now();
		learn_state L;
		learn_init(&L, cfg, &p.w, &lo, (const float *const (*)[MOD_COUNT])init);
		double t2 = masq_now();
		for (int s = 0; s < c.n_seqs; s++) {
			learn_truncate(&L);
			double l = learn_step_grad(&L, &seq[s], NULL, 1);
			learn_adam_step(&L);
			if (s == 0)
				loss0 = l;
		}
		double t3 = masq_now();
		for (int s = 0; s < c.n_seqs; s++)
			learn_forward(&L, &seq[s], h);
		double t4 = masq_now();
		learn_done(&L);
		if (r >= 0) {
			tf[r] = t1 - t0;
			ts[r] = t3 - t2;
			tt[r] = t4 - t3;
		}
	}
	bench_load_take(&ld1);
	double f = bench_median(tf, reps), st = bench_median(ts, reps), fw = bench_median(tt, reps);
	printf("bench_learn: layer %d of %s, %d tokens in %d sequences (text %d, vision %d, audio %d), %d threads, "
	    "kernels %s, median of %d\n", layer, argv[1], T, c.n_seqs, c.n_mod[0], c.n_mod[1], c.n_mod[2], threads,
	    numenv_corename_now(), reps);
	printf("  FP layer forward, all tokens      %9.3f s\n", f);
	printf("  train-mode forward, all sequences %9.3f s   %.2fx the FP forward\n", fw, fw / f);
	printf("  training step, all sequences      %9.3f s   %.2fx the FP forward (target <= %.0fx)\n", st, st / f,
	    BENCH_TARGET);
	printf("  first step's loss %.9g\n", loss0);
	bench_load_report(&ld0, &ld1);
	printf("bench_learn: tokens=%d threads=%d fp_forward_s=%.4f train_forward_s=%.4f step_s=%.4f ratio=%.3f "
	    "target=%.1f %s loss0=%.9g\n", T, threads, f, fw, st, st / f, BENCH_TARGET,
	    st / f <= BENCH_TARGET ? "met" : "MISSED", loss0);
	for (int k = 0; k < LEARN_LINS; k++)
		for (int md = 0; md < MOD_COUNT; md++)
			free(init[k][md]);
	free(target); free(seq); free(h); free(tf); free(ts); free(tt);
	pipe_done(&p);
	calib_done(&c);
	model_close(&m);
	return 0;
}
