/*
 * test_onepass.c: a one-pass pipeline (pipeline.one_pass, as masq run and
 * masq resume drive it) frees each group's whitening bases and Gram
 * matrices once the group is quantized.  The figures and factors must be
 * the bits the workbench's pipeline (which keeps them) computes, every
 * Gram matrix must be gone after the quantization, and a later use of
 * them in the layer must be refused with a message, not read freed memory;
 * calibrating the layer again brings them back.  So with the linears' f32
 * weights, freed as each linear is done (no training chain here), and
 * loaded one at a time (lazy_w): none is resident between the calibration
 * forward and the quantized one, and what needs them all (a search) loads
 * them, to the workbench's bits; no sampled rows are kept, so a preview is
 * refused.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/calib.h"
#include "core/demo.h"
#include "core/model.h"
#include "core/pipeline.h"
#include "tests/tap.h"

/* Calibrate and quantize layer 0 of the demo under mas-cmc; 0 on success. */
static int
quantize0(pipeline *p, model *m, calib *c, int one_pass, masq_err *err)
{
	pipe_opts po;
	pipe_opts_default(&po);
	po.method = METHOD_MAS_CMC;
	po.epochs = 0;
	if (pipe_init(p, m, c, &po, err) < 0)
		return -1;
	p->one_pass = one_pass;
	/* o_proj uncompensated: its Gram matrices never become bases, so
	 * what a one-pass run frees shows in the statistics */
	p->settings[0].rank[LIN_O] = 0;
	if (pipe_calibrate(p, err) < 0 || pipe_quantize(p, err) < 0)
		return -1;
	return 0;
}

int
main(void)
{
	masq_err err = {0};
	const char *bd = getenv("builddir");
	char dir[600], path[700];
	model m;
	calib c;
	pipeline keep, once;

	masq_blas_set_threads(1);
	snprintf(dir, sizeof dir, "%s/work/test_onepass", bd ? bd : ".");
	demo_preset pr;
	demo_preset_get("tiny", &pr);
	snprintf(path, sizeof path, "%s/model", dir);
	if (demo_write(dir, &pr, DEMO_DEFAULT_SEED, &err) < 0 || model_open(&m, path, &err) < 0 ||
	    (snprintf(path, sizeof path, "%s/calib.safetensors", dir), calib_load(&c, path, m.cfg.hidden, &err)) < 0) {
		tap_ok(0, "the tiny demo: %s", err.msg);
		return tap_done();
	}
	if (!tap_ok(quantize0(&keep, &m, &c, 0, &err) == 0, "the workbench's pipeline quantizes layer 0 (%s)", err.msg) ||
	    !tap_ok(quantize0(&once, &m, &c, 1, &err) == 0, "a one-pass pipeline quantizes layer 0 (%s)", err.msg))
		return tap_done();

	/* the same bits */
	const pipe_layer_result *a = &keep.results[0], *b = &once.results[0];
	int same = memcmp(a->sqnr, b->sqnr, sizeof a->sqnr) == 0;
	for (int k = 0; k < LIN_COUNT; k++)
		same &= memcmp(a->lin[k].sqnr, b->lin[k].sqnr, sizeof a->lin[k].sqnr) == 0;
	tap_ok(same, "the same layer and per-linear SQNR, to the bit");
	int factors = 0, fsame = 1;
	for (int k = 0; k < LIN_COUNT; k++)
		for (int md = 0; md < MOD_COUNT; md++) {
			int r = keep.plan.lin[k].rank[md];
			if (r != once.plan.lin[k].rank[md]) {
				fsame = 0;
				continue;
			}
			if (r == 0)
				continue;
			int out, in;
			layer_lin_shape(&m.cfg, k, &out, &in);
			factors++;
			fsame &= memcmp(keep.plan.lin[k].L1[md], once.plan.lin[k].L1[md], (size_t)in * r * sizeof(float)) == 0 &&
			    memcmp(keep.plan.lin[k].L2[md], once.plan.lin[k].L2[md], (size_t)r * out * sizeof(float)) == 0;
		}
	tap_ok(factors > 0 && fsame, "the same compensation factors, to the bit (%d linear x modality)", factors);

	/* what it freed: the o input's Gram matrices, which no basis took */
	int left = 0, kept = 0;
	for (int s = 0; s < SITE_COUNT; s++)
		for (int md = 0; md < MOD_COUNT; md++) {
			left += once.st[s].gram[md] != NULL;
			kept += keep.st[s].gram[md] != NULL;
		}
	tap_ok(kept > 0 && left == 0, "the Gram matrices no basis took: kept by the workbench's pipeline (%d), "
	    "freed by the one-pass one (%d left)", kept, left);
	int wleft = 0, wkept = 0;
	for (int k = 0; k < LIN_COUNT; k++) {
		wleft += once.w.w[k] != NULL;
		wkept += keep.w.w[k] != NULL;
	}
	tap_ok(wkept == LIN_COUNT && wleft == 0 && once.w_spent && !keep.w_spent,
	    "the linears' f32 weights: kept by the workbench's pipeline (%d of %d), freed by the one-pass one "
	    "(%d left)", wkept, LIN_COUNT, wleft);
	err = (masq_err){0};
	tap_ok(pipe_quantize(&keep, &err) == 0 && memcmp(keep.results[0].sqnr, b->sqnr, sizeof b->sqnr) == 0,
	    "the workbench's pipeline quantizes again from its kept bases, to the same bits (%s)", err.msg);

	/* later uses are refused */
	pipe_preview pv;
	err = (masq_err){0};
	tap_ok(pipe_preview_sample(&keep, -1, -1, &pv, &err) == 0, "the workbench's pipeline previews afterwards (%s)",
	    err.msg);
	err = (masq_err){0};
	int rc = pipe_preview_sample(&once, -1, -1, &pv, &err);
	tap_ok(rc < 0, "a preview of the one-pass layer is refused");
	tap_contains(err.msg, "freed after it was quantized", "... saying the Gram matrices were freed");
	err = (masq_err){0};
	tap_ok(pipe_quantize(&once, &err) < 0, "so is quantizing it again");
	tap_contains(err.msg, "weights were freed", "... saying its weights were freed");
	tap_contains(err.msg, "calibrate the layer again", "... and what to do");
	err = (masq_err){0};
	tap_ok(pipe_search_alpha(&once, &err) < 0, "so is searching alpha on it");
	tap_contains(err.msg, "weights were freed", "... with the same message");
	err = (masq_err){0};
	tap_ok(pipe_calibrate(&once, &err) == 0 && !once.w_spent && pipe_quantize(&once, &err) == 0,
	    "calibrated again (its weights loaded again), it quantizes (%s)", err.msg);
	tap_ok(memcmp(once.results[0].sqnr, a->sqnr, sizeof a->sqnr) == 0, "... to the same bits");

	/* one linear at a time: after the calibration forward none is loaded,
	 * and the maxima the factors use are the workbench's */
	pipeline lazy, ks;
	pipe_opts po;
	pipe_opts_default(&po);
	po.method = METHOD_MAS_CMC;
	po.epochs = 0;
	err = (masq_err){0};
	if (tap_ok(pipe_init(&lazy, &m, &c, &po, &err) == 0 && pipe_init(&ks, &m, &c, &po, &err) == 0,
	    "two more pipelines (%s)", err.msg)) {
		lazy.one_pass = 1;
		int cal = pipe_calibrate(&lazy, &err) == 0 && pipe_calibrate(&ks, &err) == 0;
		tap_ok(cal, "both calibrate layer 0 (%s)", err.msg);
		int loaded = 0, wsame = 1;
		for (int k = 0; k < LIN_COUNT && cal; k++) {
			int out, in;
			layer_lin_shape(&m.cfg, k, &out, &in);
			loaded += lazy.w.w[k] != NULL;
			wsame &= memcmp(lazy.wmax_lin[k], ks.wmax_lin[k], (size_t)in * sizeof(float)) == 0;
			int g = smooth_lin_group(k);
			if (g >= 0)
				wsame &= memcmp(lazy.wmax_grp[g], ks.wmax_grp[g], (size_t)in * sizeof(float)) == 0;
		}
		tap_ok(cal && lazy.lazy_w && !ks.lazy_w && loaded == 0, "a one-pass calibration leaves no linear weight "
		    "loaded (%d of %d)", loaded, LIN_COUNT);
		tap_ok(cal && wsame, "... and the same weight column maxima, per linear and per group, to the bit");
		/* nor the sampled rows only previews read: a preview is refused */
		int sampled = 0, ksampled = 0;
		for (int st = 0; st < SITE_COUNT && cal; st++)
			for (int md = 0; md < MOD_COUNT; md++) {
				sampled += lazy.st[st].sample_n[md];
				ksampled += ks.st[st].sample_n[md];
			}
		tap_ok(cal && sampled == 0 && ksampled > 0, "no sampled rows kept by the one-pass calibration (%d; the "
		    "workbench's %d)", sampled, ksampled);
		/* every Gram matrix waits for its basis packed, in both */
		int grams = 0, packed = 0;
		for (int st = 0; st < SITE_COUNT && cal; st++)
			for (int md = 0; md < MOD_COUNT; md++)
				if (lazy.st[st].gram[md] != NULL && ks.st[st].gram[md] != NULL) {
					grams++;
					packed += lazy.st[st].gram_packed[md] && ks.st[st].gram_packed[md];
				}
		tap_ok(grams > 0 && packed == grams, "every Gram matrix packed after the calibration (%d of %d)", packed,
		    grams);
		err = (masq_err){0};
		tap_ok(cal && pipe_preview_sample(&lazy, -1, -1, &pv, &err) < 0, "a preview of it is refused");
		tap_contains(err.msg, "keeps no sampled rows", "... saying why");
		/* a search runs the linears many times: it loads them all */
		err = (masq_err){0};
		int srch = cal && pipe_search_alpha(&ks, &err) == 0 && pipe_search_alpha(&lazy, &err) == 0;
		tap_ok(srch, "both search alpha (%s)", err.msg);
		const pipe_search *sa = &ks.results[0].search, *sb = &lazy.results[0].search;
		tap_ok(srch && sa->done && sb->done && memcmp(sa->sqnr, sb->sqnr, sizeof sa->sqnr) == 0 &&
		    memcmp(ks.settings[0].alpha, lazy.settings[0].alpha, sizeof ks.settings[0].alpha) == 0,
		    "... with the same SQNR at every grid point and the same alphas, to the bit");
		err = (masq_err){0};
		int qz = srch && pipe_quantize(&ks, &err) == 0 && pipe_quantize(&lazy, &err) == 0;
		tap_ok(qz && memcmp(ks.results[0].sqnr, lazy.results[0].sqnr, sizeof ks.results[0].sqnr) == 0,
		    "... and quantize to the same bits (%s)", err.msg);
		pipe_done(&lazy);
		pipe_done(&ks);
	}

	pipe_done(&keep);
	pipe_done(&once);
	calib_done(&c);
	model_close(&m);
	return tap_done();
}
