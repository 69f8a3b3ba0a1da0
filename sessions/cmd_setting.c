/*
 * cmd_setting.c: the commands that change settings (set-method, set-bits,
 * set-alpha, set-rank, set) and note.  The --set grammar
 * LAYER.LINEAR.KEY=VALUE is parsed here, once, into a sess_assign; the
 * typed set-* commands build the same assignment from their arguments;
 * core's setters (core/smooth.h) check the ranges.  An error names what
 * the user wrote and what is wrong with it.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sessions/internal.h"

void
sess_mark_stale(sess *s, int l0, int l1)
{
	for (int l = l0; l <= l1 && l < s->p.n_layers; l++)
		if (l >= s->p.layer && (s->live[l] & SLIVE_QUANT))
			s->live[l] |= SLIVE_STALE;
}

/* LAYER: an index of the model or '*'. */
static int
parse_layers(const char *t, int n_layers, int *l0, int *l1, masq_err *err)
{
	char *end;
	if (strcmp(t, "*") == 0) {
		*l0 = 0;
		*l1 = n_layers - 1;
		return 0;
	}
	errno = 0;
	long v = strtol(t, &end, 10);
	if (errno || end == t || *end || v < 0 || v >= n_layers)
		return masq_err_set(err, MASQ_ERR_USAGE, "layer '%s' is not in 0..%d or '*'", t, n_layers - 1);
	*l0 = *l1 = (int)v;
	return 0;
}

/* LINEAR: a linear, a group (qkv, gateup, o), or '*'. */
static int
parse_linears(const char *t, sess_assign *a, masq_err *err)
{
	a->nl = 0;
	if (strcmp(t, "*") == 0) {
		for (int k = 0; k < LIN_COUNT; k++)
			a->lins[a->nl++] = k;
	} else if (strcmp(t, "qkv") == 0) {
		a->lins[a->nl++] = LIN_Q;
		a->lins[a->nl++] = LIN_K;
		a->lins[a->nl++] = LIN_V;
	} else if (strcmp(t, "gateup") == 0) {
		a->lins[a->nl++] = LIN_GATE;
		a->lins[a->nl++] = LIN_UP;
	} else if ((a->lins[0] = lin_parse(t)) >= 0) {
		a->nl = 1;
	} else {
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "linear '%s' is not q, k, v, o, gate, up, down, qkv, gateup or '*'", t);
	}
	return 0;
}

/* An alpha row: a modality, "unified", or "all" (-1). */
static int
parse_row(const char *t, int *row, masq_err *err)
{
	if (strcmp(t, "all") == 0) {
		*row = -1;
		return 0;
	}
	if (strcmp(t, "unified") == 0) {
		*row = ALPHA_UNIFIED;
		return 0;
	}
	for (int m = 0; m < MOD_COUNT; m++)
		if (strcmp(t, modality_name(m)) == 0) {
			*row = m;
			return 0;
		}
	return masq_err_set(err, MASQ_ERR_USAGE, "modality '%s' is not text, vision, audio, unified or all", t);
}

int
sess_assign_parse(const char *text, int n_layers, sess_assign *a, masq_err *err)
{
	char buf[256], *parts[4], *val, *end;
	int np = 0;

	memset(a, 0, sizeof *a);
	a->row = -1;
	if (strlen(text) >= sizeof buf)
		return masq_err_set(err, MASQ_ERR_USAGE, "'%.60s...': too long", text);
	strcpy(buf, text);
	if ((val = strchr(buf, '=')) == NULL)
		return masq_err_set(err, MASQ_ERR_USAGE, "'%s': expected LAYER.LINEAR.KEY=VALUE", text);
	*val++ = '\0';
	for (char *t = strtok(buf, "."); t != NULL; t = strtok(NULL, ".")) {
		if (np == 4)
			return masq_err_set(err, MASQ_ERR_USAGE, "'%s': expected LAYER.LINEAR.KEY=VALUE", text);
		parts[np++] = t;
	}
	if (np < 2)
		return masq_err_set(err, MASQ_ERR_USAGE, "'%s': expected LAYER.LINEAR.KEY=VALUE", text);
	if (parse_layers(parts[0], n_layers, &a->l0, &a->l1, err) < 0)
		return masq_err_prefix(err, "'%s'", text);
	/* "L.method=X" is short for "L.*.method=X" */
	const char *lin_s = np == 2 ? "*" : parts[1];
	const char *key_s = np == 2 ? parts[1] : parts[2];
	const char *sub = np == 4 ? parts[3] : NULL;
	static const struct { const char *name; int key; } keys[] = {
		{"alpha", SA_ALPHA}, {"rank", SA_RANK}, {"method", SA_METHOD}, {"epochs", SA_EPOCHS}, {"lr", SA_LR},
		{"loss", SA_LOSS}, {"loss_weights", SA_WEIGHTS}, {"tie", SA_TIE},
	};
	a->key = -1;
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
		if (strcmp(key_s, keys[i].name) == 0)
			a->key = keys[i].key;
	if (a->key < 0)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "'%s': unknown key '%s' (alpha, alpha.MODALITY, rank, method, epochs, lr, loss, loss_weights, tie)",
		    text, key_s);
	if (sub != NULL && a->key != SA_ALPHA)
		return masq_err_set(err, MASQ_ERR_USAGE, "'%s': only alpha takes a modality", text);
	if (sub != NULL && (parse_row(sub, &a->row, err) < 0 || strcmp(sub, "all") == 0)) {
		if (strcmp(sub, "all") == 0)
			masq_err_set(err, MASQ_ERR_USAGE, "modality 'all' is written as plain alpha");
		return masq_err_prefix(err, "'%s'", text);
	}
	if (parse_linears(lin_s, a, err) < 0)
		return masq_err_prefix(err, "'%s'", text);
	if (a->key != SA_ALPHA && a->key != SA_RANK && a->nl != LIN_COUNT) {
		static const char *const noun[] = {[SA_METHOD] = "the method", [SA_EPOCHS] = "the number of epochs",
			[SA_LR] = "the learning rate", [SA_LOSS] = "the loss", [SA_WEIGHTS] = "the loss weights",
			[SA_TIE] = "tying"};
		return masq_err_set(err, MASQ_ERR_USAGE, "'%s': %s is chosen per layer (use %s.%s=%s)", text, noun[a->key],
		    parts[0], key_s, val);
	}
	if (a->key == SA_METHOD) {
		if ((a->method = method_parse(val)) < 0)
			return masq_err_set(err, MASQ_ERR_USAGE, "'%s': unknown method '%s' (rtn, sq, mas, mas-cmc, usq)",
			    text, val);
		return 0;
	}
	masq_err e = {0};
	if (a->key == SA_LOSS) {
		if ((a->ivalue = learn_loss_parse(val)) < 0)
			return masq_err_set(err, MASQ_ERR_USAGE, "'%s': the loss is mae or mse, not '%s'", text, val);
		return 0;
	}
	if (a->key == SA_WEIGHTS) {
		if (setting_parse_lambda(val, a->lambda, &e) < 0)
			return masq_err_set(err, MASQ_ERR_USAGE, "'%s': %s", text, e.msg);
		return 0;
	}
	if (a->key == SA_EPOCHS || a->key == SA_TIE) {
		errno = 0;
		long iv = strtol(val, &end, 10);
		if (errno || end == val || *end || iv < INT32_MIN || iv > INT32_MAX)
			return masq_err_set(err, MASQ_ERR_USAGE, "'%s': '%s' is not a whole number", text, val);
		a->ivalue = (int)iv;
		if (a->key == SA_TIE && iv != 0 && iv != 1)
			return masq_err_set(err, MASQ_ERR_USAGE, "'%s': tie is 0 or 1", text);
		if (a->key == SA_EPOCHS && setting_check_epochs(a->ivalue, &e) < 0)
			return masq_err_set(err, MASQ_ERR_USAGE, "'%s': %s", text, e.msg);
		return 0;
	}
	errno = 0;
	a->value = strtod(val, &end);
	if (errno || end == val || *end || !isfinite(a->value))
		return masq_err_set(err, MASQ_ERR_USAGE, "'%s': '%s' is not a number", text, val);
	if ((a->key == SA_ALPHA ? setting_check_alpha(a->value, &e) : a->key == SA_LR ? setting_check_lr(a->value, &e) :
	    setting_check_rank(a->value, &e)) < 0)
		return masq_err_set(err, MASQ_ERR_USAGE, "'%s': %s", text, e.msg);
	if (a->nl == 1 && a->lins[0] == LIN_DOWN)
		return masq_err_set(err, MASQ_ERR_USAGE, a->key == SA_ALPHA ?
		    "'%s': down_proj is quantized but not smoothed; it has no alpha" :
		    "'%s': down_proj gets no compensation (it is not smoothed)", text);
	return 0;
}

int
sess_assign_apply(sess *s, const sess_assign *a, masq_err *err)
{
	if (a->key == SA_RANK && s->opened && pipe_check_rank(&s->p.m->cfg, a->value, err) < 0)
		return -1;
	for (int l = a->l0; l <= a->l1; l++) {
		layer_setting *ls = &s->p.settings[l];
		layer_setting before = *ls;
		int rc = 0;
		if (a->key == SA_METHOD) {
			rc = setting_set_method(ls, a->method, err);
		} else if (a->key >= SA_EPOCHS) {
			int epochs = a->key == SA_EPOCHS ? a->ivalue : ls->epochs;
			double lr = a->key == SA_LR ? a->value : ls->lr;
			int loss = a->key == SA_LOSS ? a->ivalue : ls->loss;
			int tie = a->key == SA_TIE ? a->ivalue : ls->tie;
			rc = setting_set_learning(ls, epochs, lr, loss, a->key == SA_WEIGHTS ? a->lambda : ls->lambda, tie, err);
		} else {
			for (int i = 0; i < a->nl && rc == 0; i++) {
				int k = a->lins[i], g = smooth_lin_group(k);
				if (k == LIN_DOWN)
					continue;	/* a group or '*' reaching down_proj: nothing to set */
				rc = a->key == SA_ALPHA ? setting_set_alpha(ls, g, a->row, a->value, err) :
				    setting_set_rank(ls, k, a->value, err);
			}
		}
		if (rc < 0)
			return -1;
		if (memcmp(&before, ls, sizeof before) != 0)
			sess_mark_stale(s, l, l);
	}
	return 0;
}

/* Apply a and record what it was as the result's "applied". */
static sess_retval
apply(sess *s, const sess_assign *a, const char *what, json_t *res, masq_err *err)
{
	if (sess_assign_apply(s, a, err) < 0)
		return SESS_ERROR;
	json_object_set_new(res, "applied", json_string(what));
	return SESS_OK;
}

sess_retval
scmd_set(sess *s, json_t *args, json_t *res, masq_err *err)
{
	sess_assign a;
	const char *t = sess_arg_str(args, "assignment", "");
	if (sess_assign_parse(t, s->p.n_layers, &a, err) < 0)
		return SESS_ERROR;
	return apply(s, &a, t, res, err);
}

sess_retval
scmd_set_method(sess *s, json_t *args, json_t *res, masq_err *err)
{
	sess_assign a;
	const char *ls = sess_arg_str(args, "layer", "*"), *m = sess_arg_str(args, "method", "");
	char what[160];
	memset(&a, 0, sizeof a);
	a.key = SA_METHOD;
	if (parse_layers(ls, s->p.n_layers, &a.l0, &a.l1, err) < 0)
		return SESS_ERROR;
	if ((a.method = method_parse(m)) < 0)
		return masq_err_set(err, MASQ_ERR_USAGE, "method '%s' is not rtn, sq, mas, mas-cmc or usq", m);
	/* what masq 0.1 recorded, so replays of its sessions compare */
	snprintf(what, sizeof what, "%s.*.method=%s", ls, m);
	return apply(s, &a, what, res, err);
}

sess_retval
scmd_set_alpha(sess *s, json_t *args, json_t *res, masq_err *err)
{
	sess_assign a;
	const char *ls = sess_arg_str(args, "layer", "*"), *lin = sess_arg_str(args, "linear", "*");
	const char *mod = sess_arg_str(args, "modality", "all");
	double v = sess_arg_num(args, "value", NAN);
	char what[160];
	memset(&a, 0, sizeof a);
	a.key = SA_ALPHA;
	a.value = v;
	if (parse_layers(ls, s->p.n_layers, &a.l0, &a.l1, err) < 0 || parse_linears(lin, &a, err) < 0 ||
	    parse_row(mod, &a.row, err) < 0 || setting_check_alpha(v, err) < 0)
		return SESS_ERROR;
	if (a.nl == 1 && a.lins[0] == LIN_DOWN)
		return masq_err_set(err, MASQ_ERR_USAGE, "down_proj is quantized but not smoothed; it has no alpha");
	snprintf(what, sizeof what, "%s.%s.alpha%s%s=%.9g", ls, lin, a.row < 0 ? "" : ".", a.row < 0 ? "" : mod, v);
	return apply(s, &a, what, res, err);
}

sess_retval
scmd_set_rank(sess *s, json_t *args, json_t *res, masq_err *err)
{
	sess_assign a;
	const char *ls = sess_arg_str(args, "layer", "*"), *lin = sess_arg_str(args, "linear", "*");
	double v = sess_arg_num(args, "value", NAN);
	char what[160];
	memset(&a, 0, sizeof a);
	a.key = SA_RANK;
	a.value = v;
	if (parse_layers(ls, s->p.n_layers, &a.l0, &a.l1, err) < 0 || parse_linears(lin, &a, err) < 0 ||
	    setting_check_rank(v, err) < 0)
		return SESS_ERROR;
	if (a.nl == 1 && a.lins[0] == LIN_DOWN)
		return masq_err_set(err, MASQ_ERR_USAGE, "down_proj gets no compensation (it is not smoothed)");
	snprintf(what, sizeof what, "%s.%s.rank=%.9g", ls, lin, v);
	return apply(s, &a, what, res, err);
}

sess_retval
scmd_set_bits(sess *s, json_t *args, json_t *res, masq_err *err)
{
	json_int_t wb = json_integer_value(json_object_get(args, "wbits"));
	json_int_t ab = json_integer_value(json_object_get(args, "abits"));
	if (wb < -0x7fffffffLL || wb > 0x7fffffffLL || ab < -0x7fffffffLL || ab > 0x7fffffffLL ||
	    setting_check_bits((int)wb, (int)ab, err) < 0)
		return masq_err_set(err, MASQ_ERR_USAGE, "bits must be 2 to 8, or 16 for not quantized: not W%lld A%lld",
		    (long long)wb, (long long)ab);
	int changed = s->p.opts.wbits != wb || s->p.opts.abits != ab;
	s->p.opts.wbits = (int)wb;
	s->p.opts.abits = (int)ab;
	if (s->opts.wgroup < 0)
		s->p.opts.wgroup = ab >= 16 ? 128 : 0;
	if (changed)
		sess_mark_stale(s, s->p.layer, s->p.layer);
	json_object_set_new(res, "wbits", json_integer(wb));
	json_object_set_new(res, "abits", json_integer(ab));
	json_object_set_new(res, "wgroup", json_integer(s->p.opts.wgroup));
	return SESS_OK;
}

sess_retval
scmd_note(sess *s, json_t *args, json_t *res, masq_err *err)
{
	(void)s;
	(void)err;
	json_object_set_new(res, "text", json_string(sess_arg_str(args, "text", "")));
	return SESS_OK;
}

/* ---- undo ------------------------------------------------------------------------ */

sess_undo *
sess_undo_take(sess *s)
{
	if (!s->opened)
		return NULL;
	sess_undo *u = xcalloc(1, sizeof *u);
	u->set = xmalloc(xmul((size_t)s->p.n_layers, sizeof *u->set));
	memcpy(u->set, s->p.settings, (size_t)s->p.n_layers * sizeof *u->set);
	u->wbits = s->p.opts.wbits;
	u->abits = s->p.opts.abits;
	u->wgroup = s->p.opts.wgroup;
	return u;
}

static void
undo_free(sess_undo *u)
{
	if (u != NULL)
		free(u->set);
	free(u);
}

void
sess_undo_push(sess *s, sess_undo *u, const char *what)
{
	if (u == NULL)
		return;
	if (memcmp(u->set, s->p.settings, (size_t)s->p.n_layers * sizeof *u->set) == 0 && u->wbits == s->p.opts.wbits &&
	    u->abits == s->p.opts.abits) {
		undo_free(u);
		return;
	}
	snprintf(u->what, sizeof u->what, "%s", what);
	if (s->n_undo == s->cap_undo)
		s->undo = xrealloc(s->undo, (size_t)(s->cap_undo = s->cap_undo ? 2 * s->cap_undo : 16) * sizeof *s->undo);
	s->undo[s->n_undo++] = *u;
	free(u);
}

void
sess_undo_free_all(sess *s)
{
	for (int i = 0; i < s->n_undo; i++)
		free(s->undo[i].set);
	free(s->undo);
	s->undo = NULL;
	s->n_undo = s->cap_undo = 0;
}

sess_retval
scmd_undo(sess *s, json_t *args, json_t *res, masq_err *err)
{
	(void)args;
	if (s->n_undo == 0)
		return masq_err_set(err, MASQ_ERR_USAGE, "nothing to undo: no setting was changed in this session");
	sess_undo *u = &s->undo[s->n_undo - 1];
	json_t *layers = json_array();
	for (int l = 0; l < s->p.n_layers; l++)
		if (memcmp(&u->set[l], &s->p.settings[l], sizeof *u->set) != 0) {
			s->p.settings[l] = u->set[l];
			sess_mark_stale(s, l, l);
			json_array_append_new(layers, json_integer(l));
		}
	if (u->wbits != s->p.opts.wbits || u->abits != s->p.opts.abits) {
		s->p.opts.wbits = u->wbits;
		s->p.opts.abits = u->abits;
		s->p.opts.wgroup = u->wgroup;
		sess_mark_stale(s, s->p.layer, s->p.layer);
	}
	json_object_set_new(res, "undid", json_string(u->what));
	json_object_set_new(res, "layers", layers);
	json_object_set_new(res, "wbits", json_integer(s->p.opts.wbits));
	json_object_set_new(res, "abits", json_integer(s->p.opts.abits));
	free(u->set);
	s->n_undo--;
	return SESS_OK;
}
