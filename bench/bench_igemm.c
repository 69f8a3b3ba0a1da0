/*
 * bench_igemm: the quantized linears of one decoder layer as integer GEMMs
 * (engine_qlinear_rows_int) against the float fake-quant path
 * (engine_qlinear_rows: quantize, dequantize, cblas_sgemm), in the same run.
 *
 *	bench_igemm [--tokens 2047] [--hidden 2048] [--inter 11008] [--kv 256]
 *	    [--wbits 4] [--threads 2] [--reps 3] [--torch]
 *
 * The shapes are the seven linears of a Qwen2.5-VL-3B layer by default
 * (q, o: hidden x hidden; k, v: kv x hidden; gate, up: inter x hidden;
 * down: hidden x inter), on `tokens` activation rows with the demo's kind
 * of outlier channels.  Both paths start from the same float activations
 * and the same weight levels and do the whole job a caller sees: smoothing
 * the rows, quantizing them per token at 8 bits, the product and the
 * rescale.  Weights are packed once, outside the timing, as the pipeline
 * packs each linear once.  Each rep runs the two paths back to back, linear
 * by linear; medians over the reps.  The two outputs are compared (their
 * largest difference relative to the output's scale) so that a fast wrong
 * kernel cannot pass.
 *
 * --torch also runs bench/igemm_torch.py on the same shapes and threads
 * (torch.ao.quantization.quantize_dynamic: PyTorch's dynamic int8 Linear,
 * fbgemm on x86) when python3 can import torch, and prints its total.
 *
 * Target: total float time / total integer time >= 3 (issue 16).  Exit 0
 * whether or not it is met, 2 on a usage error.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/benchutil.h"
#include "core/engine.h"
#include "core/igemm.h"
#include "core/numenv.h"
#include "core/quant.h"
#include "core/rng.h"
#include "core/util.h"

#define BENCH_TARGET 3.0
#define NLIN 7

static const char *const lin_names[NLIN] = {"q", "k", "v", "o", "gate", "up", "down"};

static void
usage(FILE *f)
{
	fprintf(f, "usage: bench_igemm [--tokens 2047] [--hidden 2048] [--inter 11008] [--kv 256] "
	    "[--wbits 4] [--threads 2] [--reps 3] [--torch]\n");
}

int
main(int argc, char **argv)
{
	int tokens = 2047, hidden = 2048, inter = 11008, kv = 256, wbits = 4, threads = 2, reps = 3;
	int torch = 0;

	const char *e = getenv("OPENBLAS_NUM_THREADS");
	if (e != NULL)
		bench_parse_int(e, 1, 64, &threads);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		int *dst = strcmp(a, "--tokens") == 0 ? &tokens : strcmp(a, "--hidden") == 0 ? &hidden
		    : strcmp(a, "--inter") == 0 ? &inter : strcmp(a, "--kv") == 0 ? &kv
		    : strcmp(a, "--wbits") == 0 ? &wbits : strcmp(a, "--threads") == 0 ? &threads
		    : strcmp(a, "--reps") == 0 ? &reps : NULL;
		if (strcmp(a, "--torch") == 0) {
			torch = 1;
			continue;
		}
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return 0;
		}
		if (dst == NULL || i + 1 >= argc || bench_parse_int(argv[i + 1], 1, 1 << 20, dst) < 0) {
			usage(stderr);
			return 2;
		}
		i++;
	}
	if (wbits < 2 || wbits > 8 || reps > 99 || tokens > 65536) {
		usage(stderr);
		return 2;
	}
	masq_blas_set_threads(threads);
	int shape[NLIN][2] = {{hidden, hidden}, {kv, hidden}, {kv, hidden}, {hidden, hidden},
	    {inter, hidden}, {inter, hidden}, {hidden, inter}};	/* (out, in) */
	int maxin = hidden > inter ? hidden : inter, maxout = maxin;

	rng g;
	rng_init(&g, 16);
	/* activations: Gaussian, 1% of channels 30x (the outliers smoothing is for) */
	float *x = xmalloc(xmul((size_t)tokens * maxin, sizeof(float)));
	for (int j = 0; j < maxin; j++) {
		float sc = rng_below(&g, 100) == 0 ? 30.0f : 1.0f;
		for (int t = 0; t < tokens; t++)
			x[(size_t)t * maxin + j] = (float)rng_normal(&g) * sc;
	}
	float *s = xmalloc(xmul((size_t)maxin, sizeof(float)));
	for (int j = 0; j < maxin; j++)
		s[j] = (float)(0.5 + rng_uniform(&g));
	float *xs = xmalloc(xmul((size_t)tokens * maxin, sizeof(float)));
	float *xq = xmalloc(xmul((size_t)tokens * maxin, sizeof(float)));
	float *y1 = xmalloc(xmul((size_t)tokens * maxout, sizeof(float)));
	float *y2 = xmalloc(xmul((size_t)tokens * maxout, sizeof(float)));
	/* the activations are rows of an (tokens, in) array for each linear */
	float *xin = xmalloc(xmul((size_t)tokens * maxin, sizeof(float)));

	printf("bench_igemm: %d tokens, W%dA8 per channel, %d threads, BLAS kernels %s, integer kernel %s\n",
	    tokens, wbits, threads, numenv_corename_now(), igemm_kernel());
	double tf[NLIN], ti[NLIN], worst = 0, gop_total = 0;
	double tfs = 0, tis = 0;
	printf("%-6s %14s %8s %10s %10s %7s %9s\n", "linear", "out x in", "GOP", "float ms", "int8 ms", "ratio",
	    "max diff");
	for (int l = 0; l < NLIN; l++) {
		int out = shape[l][0], in = shape[l][1];
		for (int t = 0; t < tokens; t++)
			memcpy(xin + (size_t)t * in, x + (size_t)t * maxin, (size_t)in * sizeof(float));
		float *W = xmalloc(xmul((size_t)out * in, sizeof(float)));
		for (size_t i = 0; i < (size_t)out * in; i++)
			W[i] = (float)(rng_normal(&g) * 0.02);
		int8_t *lv = xmalloc(xmul((size_t)out, (size_t)in));
		float *wsc = xmalloc(xmul((size_t)out, sizeof(float)));
		quant_weight_rows_int(lv, wsc, W, out, in, wbits);
		for (int o = 0; o < out; o++)
			for (int j = 0; j < in; j++)
				W[(size_t)o * in + j] = (float)lv[(size_t)o * in + j] * wsc[o];
		igemm_b pb;
		igemm_b_pack(&pb, lv, out, in);
		double vf[100], vi[100];
		bench_load ld0, ld1;
		/* one warm-up of each */
		engine_qlinear_rows(xin, in, NULL, tokens, s, 8, W, NULL, out, 0, NULL, NULL, xs, xq, y1);
		engine_qlinear_rows_int(xin, in, NULL, tokens, s, 8, &pb, wsc, NULL, out, 0, NULL, NULL, xs, y2,
		    threads);
		bench_load_take(&ld0);
		for (int r = 0; r < reps; r++) {
			double t0 = masq_now();
			engine_qlinear_rows(xin, in, NULL, tokens, s, 8, W, NULL, out, 0, NULL, NULL, xs, xq, y1);
			double t1 = masq_now();
			engine_qlinear_rows_int(xin, in, NULL, tokens, s, 8, &pb, wsc, NULL, out, 0, NULL, NULL,
			    xs, y2, threads);
			double t2 = masq_now();
			vf[r] = t1 - t0;
			vi[r] = t2 - t1;
		}
		bench_load_take(&ld1);
		tf[l] = bench_median(vf, reps);
		ti[l] = bench_median(vi, reps);
		double scale = 0, diff = 0;
		for (size_t i = 0; i < (size_t)tokens * out; i++) {
			scale = fmax(scale, fabs(y1[i]));
			diff = fmax(diff, fabs((double)y1[i] - y2[i]));
		}
		double rd = scale > 0 ? diff / scale : 0;
		worst = fmax(worst, rd);
		double gop = 2.0 * tokens * (double)out * in * 1e-9;
		gop_total += gop;
		tfs += tf[l];
		tis += ti[l];
		printf("%-6s %6d x %-6d %8.1f %10.1f %10.1f %7.2f %9.1e\n", lin_names[l], out, in, gop, tf[l] * 1e3,
		    ti[l] * 1e3, tf[l] / ti[l], rd);
		if (l == NLIN - 1)
			bench_load_report(&ld0, &ld1);
		igemm_b_done(&pb);
		free(W);
		free(lv);
		free(wsc);
	}
	double ratio = tfs / tis;
	printf("%-6s %14s %8.1f %10.1f %10.1f %7.2f %9.1e\n", "total", "", gop_total, tfs * 1e3, tis * 1e3, ratio,
	    worst);
	printf("integer path: %.0f GOP/s; float path: %.0f GFLOP/s (whole linears: quantize, product, rescale)\n",
	    gop_total / tis, gop_total / tfs);
	double torch_ms = NAN;
	if (torch) {
		const char *srcdir = getenv("srcdir");
		char cmd[1024];
		snprintf(cmd, sizeof cmd,
		    "%s %s/bench/igemm_torch.py --tokens %d --hidden %d --inter %d --kv %d --threads %d --reps %d",
		    access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3", srcdir && *srcdir ? srcdir : ".", tokens, hidden, inter, kv, threads, reps);
		FILE *p = popen(cmd, "r");
		char line[512];
		while (p != NULL && fgets(line, sizeof line, p) != NULL) {
			fputs(line, stdout);
			char *q = strstr(line, "total_ms=");
			if (q != NULL)
				torch_ms = strtod(q + 9, NULL);
		}
		if (p != NULL)
			pclose(p);
		if (isnan(torch_ms))
			printf("pytorch: not run (python3 with torch not found)\n");
		else
			printf("pytorch dynamic int8 Linear / masq integer path: %.2f\n", torch_ms / (tis * 1e3));
	}
	printf("bench_igemm: tokens=%d wbits=%d threads=%d float_ms=%.1f int8_ms=%.1f ratio=%.2f max_rel_diff=%.1e "
	    "torch_int8_ms=%.1f target=%.1f %s\n", tokens, wbits, threads, tfs * 1e3, tis * 1e3, ratio, worst,
	    torch_ms, BENCH_TARGET, ratio >= BENCH_TARGET ? "PASS" : "BELOW");
	free(x);
	free(s);
	free(xs);
	free(xq);
	free(y1);
	free(y2);
	free(xin);
	return 0;
}
