/*
 * recipe.c: the per-layer recipe, written once for every driver (masq run,
 * masq resume, the workbench's run-to and run-all): calibrate, search when
 * the session searches, learn the factors when the layer's setting learns,
 * quantize, commit, with a progress callback that can stop between
 * commands.
 */
#include "config.h"

#include "sessions/internal.h"

/* Tell the hook about command cmd on layer l in phase ph; its answer. */
static int
report(sess *s, int cmd, int phase, int rc)
{
	if (s->progress == NULL)
		return 0;
	sess_progress p = {.cmd = cmd, .phase = phase, .layer = s->p.layer, .until = s->progress_until,
		.frac = phase == SP_AFTER ? 1.0 : 0.0, .rc = rc};
	return s->progress(s->progress_ctx, &p);
}

/* Run command cmd on the cursor's layer between two reports; 1 when the
 * hook asked to stop before it. */
static int
step(sess *s, int cmd, masq_err *err)
{
	if (report(s, cmd, SP_BEFORE, 0))
		return 1;
	json_t *args = json_pack("{s:i}", "layer", s->p.layer);
	int rc = sess_dispatch(s, cmd, args, NULL, err);
	json_decref(args);
	/* the layer the command acted on (next-layer has moved the cursor) */
	if (s->progress != NULL) {
		sess_progress p = {.cmd = cmd, .phase = SP_AFTER, .layer = cmd == SC_NEXT ? s->p.layer - 1 : s->p.layer,
			.until = s->progress_until, .frac = 1.0, .rc = rc};
		s->progress(s->progress_ctx, &p);
	}
	return rc < 0 ? -1 : 0;
}

int
sess_run_to(sess *s, int until, sess_progress_fn progress, void *ctx, masq_err *err)
{
	if (!s->opened)
		return masq_err_set(err, MASQ_ERR_USAGE, "no model is open (the session starts with 'open')");
	if (until > s->p.n_layers)
		until = s->p.n_layers;
	sess_progress_fn keep = s->progress;
	void *keep_ctx = s->progress_ctx;
	int keep_until = s->progress_until;
	s->progress = progress;
	s->progress_ctx = ctx;
	s->progress_until = until;
	int rc = 0;
	while (rc == 0 && s->p.layer < until) {
		int l = s->p.layer;
		if (!s->p.calibrated)
			rc = step(s, SC_CALIBRATE, err);
		if (rc == 0 && s->opts.search && !s->p.results[l].search.done)
			rc = step(s, SC_SEARCH, err);
		if (rc == 0 && !pipe_factors_ready(&s->p))
			rc = step(s, SC_TRAIN, err);
		if (rc == 0 && (!(s->live[l] & SLIVE_QUANT) || (s->live[l] & SLIVE_STALE)))
			rc = step(s, SC_QUANTIZE, err);
		if (rc == 0)
			rc = step(s, SC_NEXT, err);
	}
	s->progress = keep;
	s->progress_ctx = keep_ctx;
	s->progress_until = keep_until;
	return rc;
}
