/*
 * dispatch.c: the command table, the one dispatcher that runs and records
 * its commands, and restore, which rebuilds a session from its recorded
 * events by each command's restore rule.
 */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/dist.h"
#include "sessions/internal.h"
#include "sessions/session.h"

/* ---- the table ---------------------------------------------------------------- */

static const sess_arg no_args[] = {{NULL, 0, 0, NULL}};
static const sess_arg open_args[] = {
	{"model", SARG_STR, 0, "model directory"}, {"calib", SARG_STR, 0, "calibration set"},
	{"prefix", SARG_STR, 0, "the decoder layers' tensor prefix (--layer-prefix), when not found"}, {NULL, 0, 0, NULL}};
static const sess_arg layer_args[] = {{"layer", SARG_INT, 0, "the cursor's layer (checked)"}, {NULL, 0, 0, NULL}};
static const sess_arg method_args[] = {
	{"layer", SARG_STR, 1, "layer number or *"}, {"method", SARG_STR, 1, "rtn, sq, mas, mas-cmc, usq"},
	{NULL, 0, 0, NULL}};
static const sess_arg alpha_args[] = {
	{"layer", SARG_STR, 1, "layer number or *"}, {"linear", SARG_STR, 0, "q..down, qkv, gateup or * (default)"},
	{"modality", SARG_STR, 0, "text, vision, audio, unified or all (default)"},
	{"value", SARG_NUM, 1, "alpha in [0, 1]"}, {NULL, 0, 0, NULL}};
static const sess_arg rank_args[] = {
	{"layer", SARG_STR, 1, "layer number or *"}, {"linear", SARG_STR, 0, "q..up, qkv, gateup or * (default)"},
	{"value", SARG_NUM, 1, "ratio in (0, 1], whole rank, or 0"}, {NULL, 0, 0, NULL}};
static const sess_arg bits_args[] = {
	{"wbits", SARG_INT, 1, "weight bits"}, {"abits", SARG_INT, 1, "activation bits"}, {NULL, 0, 0, NULL}};
static const sess_arg set_args[] = {{"assignment", SARG_STR, 1, "LAYER.LINEAR.KEY=VALUE"}, {NULL, 0, 0, NULL}};
static const sess_arg export_args[] = {
	{"format", SARG_STR, 1, "fake, compressed-tensors or masquant"}, {"out", SARG_STR, 1, "output directory"},
	{NULL, 0, 0, NULL}};
static const sess_arg note_args[] = {{"text", SARG_STR, 1, "free text"}, {NULL, 0, 0, NULL}};
static const sess_arg alloc_args[] = {
	{"budget", SARG_STR, 0, "bytes of L1/L2 for the layers left, e.g. 2MB"},
	{"target", SARG_NUM, 0, "or: the whitened error to reach, in dB (below 0) of none"},
	{"objective", SARG_STR, 0, "relative (default: each linear's own error) or absolute"}, {NULL, 0, 0, NULL}};

#define LAYER_CMD (SCF_NEEDS_OPEN | SCF_LAYER | SCF_LONG)
#define SETTING_CMD (SCF_NEEDS_OPEN | SCF_SETTING)

const sess_cmd sess_cmds[SC_COUNT + 1] = {
	[SC_OPEN] = {
		.name = "open", .args = open_args,
		.summary = "load the model and calibration set; start the pipeline",
		.flags = 0, .restore = SR_RERUN, .exec = scmd_open },
	[SC_CALIBRATE] = {
		.name = "calibrate-layer", .args = layer_args,
		.summary = "FP forward of the cursor's layer with statistics",
		.flags = LAYER_CMD, .restore = SR_NONE, .exec = scmd_calibrate },
	[SC_SET_METHOD] = {
		.name = "set-method", .args = method_args, .summary = "choose a layer's method",
		.flags = SETTING_CMD, .restore = SR_RERUN, .exec = scmd_set_method },
	[SC_SET_BITS] = {
		.name = "set-bits", .args = bits_args,
		.summary = "weight and activation bits for what is quantized next",
		.flags = SETTING_CMD, .restore = SR_RERUN, .exec = scmd_set_bits },
	[SC_SET_ALPHA] = {
		.name = "set-alpha", .args = alpha_args,
		.summary = "set alpha for a layer, linear group and modality",
		.flags = SETTING_CMD, .restore = SR_RERUN, .exec = scmd_set_alpha },
	[SC_SEARCH] = {
		.name = "search-alpha", .args = layer_args, .summary = "grid-search alpha for the cursor's layer",
		.flags = LAYER_CMD, .restore = SR_RESULT, .exec = scmd_search, .restore_fn = scmd_search_restore },
	[SC_SET_RANK] = {
		.name = "set-rank", .args = rank_args, .summary = "set the compensation rank of a layer's linears",
		.flags = SETTING_CMD, .restore = SR_RERUN, .exec = scmd_set_rank },
	[SC_SET] = {
		.name = "set", .args = set_args,
		.summary = "apply one LAYER.LINEAR.KEY=VALUE assignment (masq run --set)",
		.flags = SETTING_CMD, .restore = SR_RERUN, .exec = scmd_set },
	[SC_QUANTIZE] = {
		.name = "quantize-layer", .args = layer_args, .summary = "quantize the cursor's layer and measure it",
		.flags = LAYER_CMD, .restore = SR_RESULT, .exec = scmd_quantize, .restore_fn = scmd_quantize_restore },
	[SC_NEXT] = {
		.name = "next-layer", .args = layer_args, .summary = "commit the cursor's layer and move to the next",
		.flags = LAYER_CMD, .restore = SR_RESULT, .exec = scmd_next, .restore_fn = scmd_next_restore },
	[SC_FINISH] = {
		.name = "finish", .args = no_args, .summary = "after the last layer: the model summary",
		.flags = SCF_NEEDS_OPEN | SCF_LONG, .restore = SR_RESULT, .exec = scmd_finish,
		.restore_fn = scmd_finish_restore },
	[SC_EXPORT] = {
		.name = "export", .args = export_args, .summary = "write the quantized model",
		.flags = SCF_NEEDS_OPEN | SCF_LONG | SCF_FILES, .restore = SR_NONE, .exec = scmd_export },
	[SC_NOTE] = {
		.name = "note", .args = note_args, .summary = "write a note into the session",
		.flags = 0, .restore = SR_NONE, .exec = scmd_note },
	[SC_TRAIN] = {
		.name = "train-layer", .args = layer_args,
		.summary = "learn the cursor layer's smoothing factors (mas, mas-cmc, usq with epochs > 0)",
		.flags = LAYER_CMD, .restore = SR_RESULT, .exec = scmd_train, .restore_fn = scmd_train_restore },
	[SC_ALLOC] = {
		.name = "allocate-ranks", .args = alloc_args,
		.summary = "choose every compensated linear's rank from the layers' spectra for a byte budget or a target",
		.flags = SCF_NEEDS_OPEN | SCF_LONG, .restore = SR_RESULT, .exec = scmd_allocate_ranks,
		.restore_fn = scmd_allocate_ranks_restore },
	[SC_UNDO] = {
		.name = "undo", .args = no_args,
		.summary = "restore the settings as they were before the last command that changed them",
		.flags = SETTING_CMD, .restore = SR_RERUN, .exec = scmd_undo },
	[SC_COUNT] = {0},
};

/* What undo restores: the settings commands (but undo), a search's
 * alphas, an allocation's ranks. */
static int
changes_settings(int id)
{
	return id != SC_UNDO && ((sess_cmds[id].flags & SCF_SETTING) || id == SC_SEARCH || id == SC_ALLOC);
}

const sess_cmd *
sess_cmd_find(const char *name)
{
	for (const sess_cmd *c = sess_cmds; c->name != NULL; c++)
		if (strcmp(c->name, name) == 0)
			return c;
	return NULL;
}

int
sess_cmd_id(const sess_cmd *c)
{
	return (int)(c - sess_cmds);
}

/* ---- the dispatcher ---------------------------------------------------------- */

/* The arguments against the command's table: known names, types, the
 * required ones present. */
static int
check_args(const sess_cmd *c, json_t *args, masq_err *err)
{
	const char *key;
	json_t *v;

	if (args != NULL && !json_is_object(args))
		return masq_err_set(err, MASQ_ERR_USAGE, "%s: arguments must be an object", c->name);
	json_object_foreach(args, key, v) {
		const sess_arg *a = c->args;
		while (a->name != NULL && strcmp(a->name, key) != 0)
			a++;
		if (a->name == NULL)
			return masq_err_set(err, MASQ_ERR_USAGE, "%s: unknown argument '%s'", c->name, key);
		int ok = a->type == SARG_INT ? json_is_integer(v) : a->type == SARG_NUM ? json_is_number(v) :
		    a->type == SARG_BOOL ? json_is_boolean(v) : json_is_string(v);
		if (!ok)
			return masq_err_set(err, MASQ_ERR_USAGE, "%s: argument '%s' must be %s", c->name, key,
			    a->type == SARG_INT ? "an integer" : a->type == SARG_NUM ? "a number" :
			    a->type == SARG_BOOL ? "true or false" : "a string");
	}
	for (const sess_arg *a = c->args; a->name != NULL; a++)
		if (a->required && json_object_get(args, a->name) == NULL)
			return masq_err_set(err, MASQ_ERR_USAGE, "%s: missing argument '%s'", c->name, a->name);
	return 0;
}

/* What the command's flags demand of the session's state. */
static int
check_state(sess *s, const sess_cmd *c, json_t *args, masq_err *err)
{
	if ((c->flags & SCF_NEEDS_OPEN) && !s->opened)
		return masq_err_set(err, MASQ_ERR_USAGE, "no model is open (the session starts with 'open')");
	if (c->flags & SCF_LAYER) {
		if (s->p.layer >= s->p.n_layers)
			return masq_err_set(err, MASQ_ERR_USAGE, "every layer is done");
		json_t *v = json_object_get(args, "layer");
		if (v != NULL && json_integer_value(v) != s->p.layer)
			return masq_err_set(err, MASQ_ERR_USAGE, "the cursor is at layer %d, not %lld: %s acts on the cursor's layer",
			    s->p.layer, (long long)json_integer_value(v), c->name);
	}
	return 0;
}

/* Test hook (HACKING.md): MASQ_DEBUG_KILL_AFTER_EVENT=N kills the process
 * with SIGKILL right after the session's event N is durable, so tests can
 * interrupt a run at a chosen point instead of after a guessed delay. */
static void
kill_hook(int64_t seq)
{
	static long long at = -1;
	if (at < 0) {
		const char *e = getenv("MASQ_DEBUG_KILL_AFTER_EVENT");
		at = e && *e ? atoll(e) : 0;
	}
	if (at > 0 && seq == at)
		kill(getpid(), SIGKILL);
}

/* Test hook: MASQ_DEBUG_KILL_AT_LAYER=L kills the process with SIGKILL as
 * it begins a command on layer L (from 0), in whichever process has it
 * set: a rank of several that dies in the middle of a layer. */
static void
kill_layer_hook(const sess *s, const sess_cmd *c)
{
	static int at = -2;
	if (at == -2) {
		const char *e = getenv("MASQ_DEBUG_KILL_AT_LAYER");
		at = e && *e ? atoi(e) : -1;
	}
	if (at >= 0 && (c->flags & LAYER_CMD) && s->opened && s->p.layer == at)
		kill(getpid(), SIGKILL);
}

/* MASQ_KEEP_CHECKPOINTS=1 keeps every layer's checkpoint. */
static int
keep_checkpoints(void)
{
	const char *k = getenv("MASQ_KEEP_CHECKPOINTS");
	return k != NULL && strcmp(k, "1") == 0;
}

/* Append an event of the dispatcher's (then the test hook). */
static int
append(sess *s, const char *kind, const char *name, const char *payload, masq_err *err)
{
	int64_t seq = 0;
	if (sdb_event_append(s->db, s->id, kind, name, payload, &seq, err) < 0)
		return -1;
	kill_hook(seq);
	return 0;
}

int
sess_dispatch(sess *s, int id, json_t *args, json_t **result, masq_err *err)
{
	json_t *a = args ? json_incref(args) : json_object();
	json_t *res = json_object();
	int rc;

	if (result != NULL)
		*result = NULL;
	if (id < 0 || id >= SC_COUNT) {
		rc = masq_err_set(err, MASQ_ERR_INTERNAL, "sess_dispatch: no command %d", id);
		goto out;
	}
	const sess_cmd *c = &sess_cmds[id];
	if (check_args(c, a, err) < 0) {
		rc = SESS_ERROR;
		goto out;
	}
	int rec = s->record && s->db != NULL, many = dist_size() > 1;
	rc = 0;
	if (rec) {
		char *t = sess_json_text(a);
		rc = append(s, "command", c->name, t, err);
		free(t);
	}
	/* several processes run every command together, each its share of
	 * the tokens; rank 0 records it.  They agree after each step that
	 * may fail on one of them, so that none waits for another that
	 * stopped, and rank 0 records the failing rank's message. */
	if (many && dist_agree(rc < 0, err))
		rc = SESS_ERROR;
	if (rc < 0)
		goto out;
	rc = check_state(s, c, a, err);
	kill_layer_hook(s, c);
	/* what a command changes in the settings, undo restores */
	sess_undo *u = rc == 0 && changes_settings(id) ? sess_undo_take(s) : NULL;
	int outer = s->cur_cmd;
	s->cur_cmd = id;
	if (rc == 0)
		rc = c->exec(s, a, res, err);
	if (many && dist_agree(rc < 0, err))
		rc = SESS_ERROR;
	s->cur_cmd = outer;
	if (rc >= 0)
		sess_undo_push(s, u, c->name);
	else if (u != NULL) {
		free(u->set);
		free(u);
	}
	if (rec) {
		masq_err e2 = {0};
		if (rc < 0) {
			json_t *ej = json_pack("{s:s, s:s}", "message", err->msg, "status",
			    masq_status_name(err->status));
			char *t = sess_json_text(ej);
			json_decref(ej);
			append(s, "error", c->name, t, &e2);
			free(t);
		} else {
			char *t = sess_json_text(res);
			if (append(s, "result", c->name, t, &e2) < 0) {
				*err = e2;
				rc = SESS_ERROR;
			} else if (id == SC_NEXT && !keep_checkpoints()) {
				/* the new checkpoint is recorded: the one it supersedes
				 * is no longer needed (a failure here costs disk only) */
				masq_err e3 = {0};
				sdb_checkpoint_release(s->db, s->id, &e3);
			}
			free(t);
		}
	}
	if (many && dist_agree(rc < 0, err))
		rc = SESS_ERROR;
out:
	if (rc >= 0 && result != NULL)
		*result = json_incref(res);
	json_decref(res);
	json_decref(a);
	return rc < 0 ? SESS_ERROR : rc;
}

int
sess_dispatch_name(sess *s, const char *name, json_t *args, json_t **result, masq_err *err)
{
	const sess_cmd *c = sess_cmd_find(name);
	if (result != NULL)
		*result = NULL;
	if (c == NULL)
		return masq_err_set(err, MASQ_ERR_USAGE, "unknown command '%s'", name);
	return sess_dispatch(s, sess_cmd_id(c), args, result, err);
}

void
sess_report_work(sess *s, int cmd, double frac, const char *what)
{
	if (s->progress == NULL)
		return;
	sess_progress p = {.cmd = cmd, .phase = SP_WORK, .layer = s->p.layer, .until = s->progress_until,
		.frac = frac, .what = what};
	s->progress(s->progress_ctx, &p);
}

void
sess_work(void *ctx, double frac, const char *what)
{
	sess *s = ctx;
	if (s->cur_cmd >= 0)
		sess_report_work(s, s->cur_cmd, frac, what);
}

void
sess_report_step(sess *s, int cmd, int step, int steps, double loss)
{
	if (s->progress == NULL)
		return;
	sess_progress p = {.cmd = cmd, .phase = SP_WORK, .layer = s->p.layer, .until = s->progress_until,
		.frac = steps > 0 ? (double)step / steps : 1.0, .step = step, .steps = steps, .loss = loss};
	s->progress(s->progress_ctx, &p);
}

void
sess_set_progress(sess *s, sess_progress_fn fn, void *ctx)
{
	s->progress = fn;
	s->progress_ctx = ctx;
	s->progress_until = s->opened ? s->p.layer + 1 : 0;
}

void
sess_set_one_pass(sess *s, int on)
{
	s->p.one_pass = on != 0;
}

void
sess_set_follow(sess *s, int on)
{
	s->follow = on != 0;
}

/* ---- restore -------------------------------------------------------------------- */

int
sess_evlist_collect(void *ctx, const sdb_event *e)
{
	sess_evlist *l = ctx;
	if (l->n == l->cap)
		l->v = xrealloc(l->v, (l->cap = l->cap ? 2 * l->cap : 64) * sizeof *l->v);
	l->v[l->n++] = (sess_ev){e->seq, xstrdup(e->kind), xstrdup(e->name), xstrdup(e->payload)};
	return 0;
}

void
sess_evlist_free(sess_evlist *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].kind);
		free(l->v[i].name);
		free(l->v[i].payload);
	}
	free(l->v);
	memset(l, 0, sizeof *l);
}

long
sess_evlist_outcome(const sess_evlist *l, size_t i)
{
	if (i + 1 < l->n && strcmp(l->v[i + 1].name, l->v[i].name) == 0 &&
	    (strcmp(l->v[i + 1].kind, "result") == 0 || strcmp(l->v[i + 1].kind, "error") == 0))
		return (long)(i + 1);
	return -1;
}

/* Rank 0's events, on every rank of several: their number, then four
 * strings each (seq, kind, name, payload), exactly as read. */
static void
evlist_share(sess_evlist *l)
{
	uint64_t n = l->n;
	dist_bcast_from(&n, sizeof n, 0);
	const char **in = xcalloc(xmul((size_t)n, 4) + 1, sizeof *in);
	char **out = xcalloc(xmul((size_t)n, 4) + 1, sizeof *out), (*seq)[24] = NULL;
	if (dist_rank() == 0) {
		seq = xcalloc((size_t)n + 1, sizeof *seq);
		for (size_t i = 0; i < n; i++) {
			snprintf(seq[i], sizeof seq[i], "%lld", (long long)l->v[i].seq);
			in[4 * i] = seq[i];
			in[4 * i + 1] = l->v[i].kind;
			in[4 * i + 2] = l->v[i].name;
			in[4 * i + 3] = l->v[i].payload;
		}
	}
	dist_bcast_strings(in, out, 4 * (size_t)n);
	for (size_t i = 0; i < n && dist_rank() != 0; i++) {
		sdb_event ev = {.seq = strtoll(out[4 * i], NULL, 10), .kind = out[4 * i + 1], .name = out[4 * i + 2],
			.payload = out[4 * i + 3]};
		sess_evlist_collect(l, &ev);
	}
	for (size_t i = 0; i < 4 * n; i++)
		free(out[i]);
	free(out);
	free(in);
	free(seq);
}

int
sess_restore(sess *s, int *finished, masq_err *err)
{
	sess_evlist l = {0};
	sess_restore_state rs = {0};
	int rc = 0, rec = s->record;

	*finished = 0;
	/* several processes: rank 0 reads the events, every rank rebuilds
	 * from them (the open among them runs on every rank, sharded) */
	int crc = dist_rank() == 0 ? sdb_event_each(s->db, s->id, sess_evlist_collect, &l, err) : 0;
	if (dist_size() > 1 && dist_agree(crc < 0, err))
		crc = -1;
	if (crc < 0) {
		sess_evlist_free(&l);
		return -1;
	}
	if (dist_size() > 1)
		evlist_share(&l);
	s->record = 0;
	for (size_t i = 0; i < l.n && rc == 0; i++) {
		sess_ev *e = &l.v[i];
		long o = sess_evlist_outcome(&l, i);
		/* what failed or was cut off changed nothing */
		if (strcmp(e->kind, "command") != 0 || o < 0 || strcmp(l.v[o].kind, "result") != 0)
			continue;
		const sess_cmd *c = sess_cmd_find(e->name);
		if (c == NULL) {
			rc = masq_err_set(err, MASQ_ERR_FORMAT, "event %lld: unknown command '%s' (recorded by another masq?)",
			    (long long)e->seq, e->name);
			break;
		}
		if (c->restore == SR_NONE)
			continue;
		if (c != &sess_cmds[SC_OPEN] && !s->opened) {
			rc = masq_err_set(err, MASQ_ERR_FORMAT, "event %lld: %s before open", (long long)e->seq, e->name);
			break;
		}
		json_error_t je;
		json_t *args = json_loads(e->payload, 0, &je), *res = json_loads(l.v[o].payload, 0, &je);
		rs.event = e->seq;
		if (!json_is_object(args) || !json_is_object(res)) {
			rc = masq_err_set(err, MASQ_ERR_FORMAT, "event %lld (%s): its payload is not a JSON object",
			    (long long)(json_is_object(args) ? l.v[o].seq : e->seq), e->name);
		} else if (c->restore == SR_RERUN) {
			/* the command's own checks apply to what is read back */
			if (sess_dispatch(s, sess_cmd_id(c), args, NULL, err) < 0) {
				masq_err_prefix(err, "session %lld, event %lld (%s)", (long long)s->id, (long long)e->seq,
				    e->name);
				err->status = MASQ_ERR_FORMAT;
				rc = -1;
			}
		} else {
			sess_undo *u = changes_settings(sess_cmd_id(c)) ? sess_undo_take(s) : NULL;
			if (c->restore_fn(s, args, res, &rs, err) < 0) {
				masq_err_prefix(err, "session %lld, event %lld (%s)", (long long)s->id, (long long)l.v[o].seq,
				    e->name);
				rc = -1;
			}
			sess_undo_push(s, u, c->name);
		}
		json_decref(args);
		json_decref(res);
	}
	if (rc == 0 && !s->opened)
		rc = masq_err_set(err, MASQ_ERR_FORMAT, "session %lld never opened its model", (long long)s->id);
	/* Quantize results at or past the cursor were never committed: their
	 * layer must be calibrated and quantized again before next-layer. */
	if (rc == 0)
		for (int k = rs.cursor; k < s->p.n_layers; k++)
			s->p.results[k].done = 0;
	if (rc == 0 && rs.cursor > 0) {
		if (rs.checkpoint == NULL)
			rc = masq_err_set(err, MASQ_ERR_FORMAT, "session %lld: layer %d has no checkpoint", (long long)s->id,
			    rs.cursor - 1);
		else if ((rc = sess_checkpoint_read(s, rs.checkpoint, err)) == 0)
			s->p.layer = rs.cursor;
	}
	s->record = rec;
	*finished = rs.finished;
	free(rs.checkpoint);
	sess_evlist_free(&l);
	return rc < 0 ? -1 : rs.cursor;
}
