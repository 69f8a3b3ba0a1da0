/*
 * bench_forward: one decoder layer's forward on all calibration tokens,
 * against plain cblas_sgemm at the same shapes, in the same run.
 *
 *	bench_forward MODEL_DIR CALIB [--layer N] [--threads T] [--reps R]
 *
 * The layer forward does the seven linears plus everything around them
 * (norms, RoPE, attention, SiLU, residuals).  The baseline is the seven
 * linears alone as plain cblas_sgemm calls with the layout engine_linear
 * uses (y = x W^T, row-major), on the same weights, token count and thread
 * count.  The figure of merit is
 *
 *	ratio = (linear FLOPs / layer time) / (linear FLOPs / sgemm time)
 *	      = sgemm time / layer time
 *
 * taken against this machine's own GEMM rate, so it compares across machines
 * where bare times do not (see bench/README.md).
 * Exit 0 whether or not the target is met, 2 on a usage error, and the
 * masq exit code of the fault when the model or calibration cannot be read.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/benchutil.h"
#include "core/blas.h"
#include "core/calib.h"
#include "core/engine.h"
#include "core/model.h"
#include "core/util.h"

#define BENCH_TARGET 0.70
#define BENCH_MAX_REPS 1000

/* Time segments of a hooked forward, in forward order. */
enum bench_seg {
	SEG_NORM1,	/* start -> q,k,v input: input rmsnorm */
	SEG_ATTN,	/* after v_proj -> o_proj input: rope + attention */
	SEG_NORM2,	/* after o_proj -> gate,up input: residual + post-attention rmsnorm */
	SEG_ACT,	/* after up_proj -> down_proj input: silu(gate) * up */
	SEG_TAIL,	/* after down_proj -> return: residual */
	SEG_OTHER,	/* gaps between linears of one group (should be ~0) */
	SEG_COUNT
};

static const char *const bench_seg_names[SEG_COUNT] = {
	"rmsnorm (input)",
	"rope + attention",
	"residual + rmsnorm (post-attn)",
	"silu(gate) * up",
	"residual (mlp)",
	"between linears",
};

/* State of the profiling hooks: wall-clock seconds per segment and linear. */
typedef struct bench_prof {
	const model_config *cfg;
	double t_last;			/* end of the last event */
	double seg[SEG_COUNT];		/* (SEG_COUNT) seconds, summed over passes */
	double lin[LIN_COUNT];		/* (LIN_COUNT) seconds, summed over passes */
} bench_prof;


/* Print the usage line to f. */
static void
bench_usage(FILE *f)
{
	fprintf(f, "usage: bench_forward MODEL_DIR CALIB [--layer N] [--threads T] [--reps R] [--compute f32|bf16]\n");
}




/* Observe hook: charge the time since the last event to the segment that
 * ends at this site's input. */
static void
bench_prof_observe(void *ctx, int layer, int site, const float *x, int n, int d)
{
	static const int seg_of_site[SITE_COUNT] = {
		[SITE_QKV] = SEG_NORM1, [SITE_O] = SEG_ATTN,
		[SITE_GATEUP] = SEG_NORM2, [SITE_DOWN] = SEG_ACT,
	};
	bench_prof *p = ctx;
	double t = masq_now();

	if (site >= 0 && site < SITE_COUNT)
		p->seg[seg_of_site[site]] += t - p->t_last;
	p->t_last = t;
}

/* Linear hook: time the default product (engine_linear) for linear lin. */
static int
bench_prof_linear(void *ctx, const layer_weights *w, int lin, const float *x,
    int n, float *y)
{
	bench_prof *p = ctx;
	double t0 = masq_now(), t1;
	int out, in;

	if (lin < 0 || lin >= LIN_COUNT)
		return 1;
	p->seg[SEG_OTHER] += t0 - p->t_last;
	layer_lin_shape(p->cfg, lin, &out, &in);
	engine_linear(x, n, in, w->w[lin], w->b[lin], out, y);
	t1 = masq_now();
	p->lin[lin] += t1 - t0;
	p->t_last = t1;
	return 0;
}

/* The seven plain sgemms of the baseline, y = x W^T, no bias; returns the
 * seconds taken and adds each linear's time to per_lin (may be NULL). */
static double
bench_sgemm_pass(const layer_weights *w, const int *outs, const int *ins, int m,
    const float *x, float *y, double *per_lin)
{
	double t0 = masq_now(), t, t1;

	t = t0;
	for (int l = 0; l < LIN_COUNT; l++) {
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, outs[l], ins[l],
		    1.0f, x, ins[l], w->w[l], ins[l], 0.0f, y, outs[l]);
		t1 = masq_now();
		if (per_lin != NULL)
			per_lin[l] += t1 - t;
		t = t1;
	}
	return t - t0;
}

/* The seven linears through engine_linear (bias included), as the engine
 * calls them; returns the seconds taken and adds per linear to per_lin. */
static double
bench_linear_pass(const layer_weights *w, const int *outs, const int *ins, int m,
    const float *x, float *y, double *per_lin)
{
	double t0 = masq_now(), t, t1;

	t = t0;
	for (int l = 0; l < LIN_COUNT; l++) {
		engine_linear(x, m, ins[l], w->w[l], w->b[l], outs[l], y);
		t1 = masq_now();
		per_lin[l] += t1 - t;
		t = t1;
	}
	return t - t0;
}


/* Lower-case stored dtype of the layer's q_proj weight, for the load label. */
static const char *
bench_weight_dtype(const model *m, int layer, char *buf, size_t n)
{
	char name[256];
	const st_tensor *t;
	size_t i;

	model_tensor_name(m, layer, "self_attn.q_proj.weight", name, sizeof name);
	t = st_set_find(&m->st, name);
	snprintf(buf, n, "%s", t != NULL ? st_dtype_name(t->dtype) : "?");
	for (i = 0; buf[i] != '\0'; i++)
		buf[i] = (char)tolower((unsigned char)buf[i]);
	return buf;
}

int
main(int argc, char **argv)
{
	const char *model_dir = NULL, *calib_path = NULL, *env;
	int layer = 0, threads = 2, reps = 3, npos = 0;
	masq_err err = {0};
	model m;
	calib c;
	layer_weights w;
	engine e;
	engine_batch b;
	bench_prof prof;
	bench_load ld0, ld1;
	engine_ops ops;
	int outs[LIN_COUNT], ins[LIN_COUNT], max_in = 0, max_out = 0, longest = 0;
	double flops = 0.0, lin_flops[LIN_COUNT];
	double sg_lin[LIN_COUNT] = {0}, el_lin[LIN_COUNT] = {0};
	double t0, load_s, layer_s, sgemm_s, elin_s, hooked_s, ratio, rep_ratio, attn_s;
	double lay_min = 0.0, sg_min = 0.0;
	double *lay_t, *sg_t, *el_t, *rat_t;	/* (reps) seconds per rep; ratio per rep */
	double sum_sg, sum_el, sum_in;
	float *h, *x, *y;
	size_t hn;
	char dtname[32];
	int compute = ENGINE_F32;

	env = getenv("OPENBLAS_NUM_THREADS");
	if (env != NULL && bench_parse_int(env, 1, 1024, &threads) < 0)
		threads = 2;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		int *dst = NULL, hi = 0;

		if (strcmp(a, "--layer") == 0) {
			dst = &layer;
			hi = INT_MAX;
		} else if (strcmp(a, "--threads") == 0) {
			dst = &threads;
			hi = 1024;
		} else if (strcmp(a, "--reps") == 0) {
			dst = &reps;
			hi = BENCH_MAX_REPS;
		} else if (strcmp(a, "--compute") == 0) {
			if (i + 1 >= argc || (compute = engine_compute_parse(argv[i + 1])) < 0) {
				fprintf(stderr, "bench_forward: --compute takes f32 or bf16\n");
				return 2;
			}
			i++;
			continue;
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			bench_usage(stdout);
			return 0;
		} else if (a[0] == '-' && a[1] != '\0') {
			fprintf(stderr, "bench_forward: unknown option %s\n", a);
			bench_usage(stderr);
			return 2;
		} else {
			if (npos == 0)
				model_dir = a;
			else if (npos == 1)
				calib_path = a;
			else {
				fprintf(stderr, "bench_forward: too many arguments\n");
				bench_usage(stderr);
				return 2;
			}
			npos++;
			continue;
		}
		if (i + 1 >= argc || bench_parse_int(argv[i + 1], dst == &layer ? 0 : 1,
		    hi, dst) < 0) {
			fprintf(stderr, "bench_forward: %s needs a %s integer\n", a,
			    dst == &layer ? "non-negative" : "positive");
			bench_usage(stderr);
			return 2;
		}
		i++;
	}
	if (npos != 2) {
		bench_usage(stderr);
		return 2;
	}

	masq_blas_set_threads(threads);

	if (model_open(&m, model_dir, &err) < 0) {
		fprintf(stderr, "bench_forward: %s\n", err.msg);
		return masq_exit_code(err.status);
	}
	if (layer >= m.cfg.n_layers) {
		fprintf(stderr, "bench_forward: --layer %d: %s has %d layers\n", layer,
		    model_dir, m.cfg.n_layers);
		model_close(&m);
		return 2;
	}
	t0 = masq_now();
	if (layer_weights_load(&w, &m, layer, &err) < 0) {
		fprintf(stderr, "bench_forward: %s\n", err.msg);
		model_close(&m);
		return masq_exit_code(err.status);
	}
	load_s = masq_now() - t0;
	if (calib_load(&c, calib_path, m.cfg.hidden, &err) < 0) {
		fprintf(stderr, "bench_forward: %s\n", err.msg);
		layer_weights_done(&w);
		model_close(&m);
		return masq_exit_code(err.status);
	}
	if (c.n_tokens < 1) {
		fprintf(stderr, "bench_forward: %s: no calibration tokens\n", calib_path);
		calib_done(&c);
		layer_weights_done(&w);
		model_close(&m);
		return 2;
	}
	for (int s = 0; s < c.n_seqs; s++)
		if (c.seq_lens[s] > longest)
			longest = c.seq_lens[s];

	for (int l = 0; l < LIN_COUNT; l++) {
		layer_lin_shape(&m.cfg, l, &outs[l], &ins[l]);
		lin_flops[l] = 2.0 * c.n_tokens * (double)outs[l] * ins[l];
		flops += lin_flops[l];
		if (ins[l] > max_in)
			max_in = ins[l];
		if (outs[l] > max_out)
			max_out = outs[l];
	}

	printf("bench_forward: %s layer %d/%d: hidden %d, intermediate %d, heads %d/%d kv, head_dim %d%s\n",
	    model_dir, layer, m.cfg.n_layers, m.cfg.hidden, m.cfg.intermediate,
	    m.cfg.n_heads, m.cfg.n_kv_heads, m.cfg.head_dim, m.cfg.mrope ? ", mrope" : "");
	printf("calib: %d tokens in %d sequences (longest %d, text %d, vision %d, audio %d)\n",
	    c.n_tokens, c.n_seqs, longest, c.n_mod[MOD_TEXT], c.n_mod[MOD_VISION],
	    c.n_mod[MOD_AUDIO]);
	printf("threads %d (OpenBLAS reports %d, kernels %s), reps %d (median)\n", threads,
	    masq_blas_get_threads(), openblas_get_corename(), reps);
	for (int i = 0; i < 2; i++) {
		static const char *const vars[2] = {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"};
		const char *v = getenv(vars[i]);

		if (v != NULL)
			printf("environment: %s=%s\n", vars[i], v);
	}
	printf("load+convert %s->f32 ms  %10.1f\n",
	    bench_weight_dtype(&m, layer, dtname, sizeof dtname), load_s * 1e3);
	fflush(stdout);

	lay_t = xmalloc(xmul((size_t)reps, sizeof *lay_t));
	sg_t = xmalloc(xmul((size_t)reps, sizeof *sg_t));
	el_t = xmalloc(xmul((size_t)reps, sizeof *el_t));
	rat_t = xmalloc(xmul((size_t)reps, sizeof *rat_t));
	hn = xmul((size_t)c.n_tokens, (size_t)c.hidden);
	h = xmalloc(xmul(hn, sizeof *h));
	engine_init(&e, &m.cfg);
	if (engine_compute_check(&m.cfg, compute, &err) < 0) {
		fprintf(stderr, "bench_forward: %s\n", err.msg);
		return 2;
	}
	engine_set_compute(&e, compute);
	printf("compute %s (bf16 GEMM kernel %s)\n", engine_compute_name(compute), bgemm_kernel());
	b.n_tokens = c.n_tokens;
	b.n_seqs = c.n_seqs;
	b.seq_lens = c.seq_lens;
	b.pos = c.pos;
	b.modality = c.modality;

	/* The baseline's buffers: x holds the calibration embeddings tiled to
	 * the widest input (values in the normal float range, so no denormal
	 * slow paths); y takes the widest output. */
	x = xmalloc(xmul(xmul((size_t)c.n_tokens, (size_t)max_in), sizeof *x));
	y = xmalloc(xmul(xmul((size_t)c.n_tokens, (size_t)max_out), sizeof *y));
	for (size_t i = 0, n = (size_t)c.n_tokens * (size_t)max_in; i < n; i++) {
		float v = c.embeds[i % hn];

		x[i] = v != 0.0f ? v : 1.0f;
	}
	memset(&prof, 0, sizeof prof);
	prof.cfg = &m.cfg;
	ops.ctx = &prof;
	ops.observe = bench_prof_observe;
	ops.linear = bench_prof_linear;

	/* One warm-up of each, then every rep runs the four measurements back
	 * to back, so that load from other processes falls on the layer and
	 * on its baseline alike:
	 *   the layer forward (no hooks, on a fresh copy of the embeddings),
	 *   the seven plain sgemms (the baseline, no bias),
	 *   the seven linears through engine_linear (bias added),
	 *   a hooked layer forward that splits the layer into its parts. */
	memcpy(h, c.embeds, hn * sizeof *h);
	engine_layer_forward(&e, &w, &b, h, NULL);
	bench_sgemm_pass(&w, outs, ins, c.n_tokens, x, y, NULL);
	hooked_s = 0.0;
	bench_load_take(&ld0);
	for (int r = 0; r < reps; r++) {
		memcpy(h, c.embeds, hn * sizeof *h);
		t0 = masq_now();
		engine_layer_forward(&e, &w, &b, h, NULL);
		lay_t[r] = masq_now() - t0;

		sg_t[r] = bench_sgemm_pass(&w, outs, ins, c.n_tokens, x, y, sg_lin);
		el_t[r] = bench_linear_pass(&w, outs, ins, c.n_tokens, x, y, el_lin);
		rat_t[r] = sg_t[r] / lay_t[r];

		memcpy(h, c.embeds, hn * sizeof *h);
		t0 = masq_now();
		prof.t_last = t0;
		engine_layer_forward(&e, &w, &b, h, &ops);
		prof.seg[SEG_TAIL] += masq_now() - prof.t_last;
		hooked_s += masq_now() - t0;
	}
	bench_load_take(&ld1);
	printf("per rep: layer ms");
	for (int r = 0; r < reps; r++)
		printf(" %.1f", lay_t[r] * 1e3);
	printf(" | sgemm ms");
	for (int r = 0; r < reps; r++)
		printf(" %.1f", sg_t[r] * 1e3);
	printf(" | ratio");
	for (int r = 0; r < reps; r++)
		printf(" %.3f", rat_t[r]);
	printf("\n");
	bench_load_report(&ld0, &ld1);
	for (int r = 0; r < reps; r++) {
		if (r == 0 || lay_t[r] < lay_min)
			lay_min = lay_t[r];
		if (r == 0 || sg_t[r] < sg_min)
			sg_min = sg_t[r];
	}
	layer_s = bench_median(lay_t, reps);
	sgemm_s = bench_median(sg_t, reps);
	elin_s = bench_median(el_t, reps);
	rep_ratio = bench_median(rat_t, reps);

	printf("\nper linear, mean of %d reps:\n", reps);
	printf("%-10s %6s %6s %8s %10s %8s %12s %10s\n", "linear", "out", "in",
	    "GFLOP", "sgemm ms", "GFLOP/s", "eng_lin ms", "in-layer ms");
	sum_sg = sum_el = sum_in = 0.0;
	for (int l = 0; l < LIN_COUNT; l++) {
		double sg = sg_lin[l] / reps, el = el_lin[l] / reps, il = prof.lin[l] / reps;

		sum_sg += sg;
		sum_el += el;
		sum_in += il;
		printf("%-10s %6d %6d %8.2f %10.2f %8.1f %12.2f %10.2f\n", lin_name(l),
		    outs[l], ins[l], lin_flops[l] / 1e9, sg * 1e3,
		    sg > 0 ? lin_flops[l] / sg / 1e9 : 0.0, el * 1e3, il * 1e3);
	}
	printf("%-10s %6s %6s %8.2f %10.2f %8.1f %12.2f %10.2f\n", "total", "", "",
	    flops / 1e9, sum_sg * 1e3, sum_sg > 0 ? flops / sum_sg / 1e9 : 0.0,
	    sum_el * 1e3, sum_in * 1e3);

	printf("\nlayer parts (hooked pass, mean of %d)   ms   %% of hooked layer\n", reps);
	for (int s = 0; s < SEG_COUNT; s++)
		printf("  %-32s %9.2f %6.1f%%\n", bench_seg_names[s],
		    prof.seg[s] / reps * 1e3, 100.0 * prof.seg[s] / hooked_s);
	printf("  %-32s %9.2f %6.1f%%\n", "linears (engine_linear)", sum_in * 1e3,
	    100.0 * sum_in * reps / hooked_s);
	printf("  %-32s %9.2f\n", "hooked layer total", hooked_s / reps * 1e3);

	ratio = sgemm_s / layer_s;
	attn_s = layer_s - sgemm_s;

	printf("\nlayer forward ms (median)          %10.2f\n", layer_s * 1e3);
	printf("plain sgemm ms (median, 7 calls)   %10.2f   %.1f GFLOP/s\n", sgemm_s * 1e3,
	    flops / sgemm_s / 1e9);
	printf("engine_linear ms (median, 7 calls) %10.2f   %.1f GFLOP/s\n", elin_s * 1e3,
	    flops / elin_s / 1e9);
	printf("layer rate on linear FLOPs          %9.1f GFLOP/s\n", flops / layer_s / 1e9);
	printf("attention share (layer - sgemm) ms %10.2f   %.1f%% of layer\n",
	    attn_s * 1e3, 100.0 * attn_s / layer_s);
	printf("tokens/s                           %10.1f\n", c.n_tokens / layer_s);
	printf("ratio sgemm/layer                  %10.3f   target %.2f\n", ratio, BENCH_TARGET);
	printf("  (median of per-rep ratios %.3f; ratio of best times %.3f)\n\n", rep_ratio,
	    sg_min / lay_min);
	printf("bench_forward: tokens=%d layer_ms=%.2f sgemm_ms=%.2f tokens_per_s=%.1f "
	    "sgemm_gflops=%.1f ratio=%.3f target=%.2f %s compute=%s\n", c.n_tokens, layer_s * 1e3,
	    sgemm_s * 1e3, c.n_tokens / layer_s, flops / sgemm_s / 1e9, ratio,
	    BENCH_TARGET, ratio >= BENCH_TARGET ? "PASS" : "BELOW", engine_compute_name(compute));

	free(x);
	free(y);
	free(h);
	free(lay_t);
	free(sg_t);
	free(el_t);
	free(rat_t);
	engine_done(&e);
	calib_done(&c);
	layer_weights_done(&w);
	model_close(&m);
	return 0;
}
