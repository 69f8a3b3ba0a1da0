/*
 * export_fake.c: the fake export: the input's own layout and dtypes, each
 * decoder linear replaced by its dequantized weight in the original space,
 * Q(W diag(s)) diag(s)^-1.  Any framework runs it (weights only).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/export_internal.h"
#include "core/quant.h"
#include "core/smooth.h"

static void
fake_plan_tensor(xjob *j, const st_tensor *t, int l, int lin, int nm)
{
	(void)nm;
	otensor *o = otensor_push(&j->t, &j->nt, &j->tcap, t->name, t->dtype, t->ndim, t->shape,
	    lin >= 0 ? OK_WEIGHT : OK_COPY);
	o->src = t;
	o->layer = lin >= 0 ? l : -1;
	o->lin = lin;
}

static int
fake_linear(xjob *j, lcache *c, const qplan_layer *q, int k, float *Ws, const float *s, int out, int in,
    masq_err *err)
{
	(void)j;
	(void)err;
	if (q->wbits < 16) {
		if (q->wgroup > 0)
			quant_weight_groups(Ws, Ws, out, in, q->wbits, q->wgroup);
		else
			quant_weight_rows(Ws, Ws, out, in, q->wbits);
	}
	if (s != NULL)
		for (int o = 0; o < out; o++)
			for (int i = 0; i < in; i++)
				Ws[(size_t)o * in + i] /= s[i];
	c->w[k] = Ws;
	return 0;
}

static void
fake_dropped(xjob *j, const export_counts *n)
{
	char *d = j->rep.dropped;
	if (n->act || n->mas || n->cmc)
		snprintf(d, sizeof j->rep.dropped, "the fake export holds dequantized weights only: %s%s%s.",
		    n->act ? "activation quantization" : "", n->act && (n->mas || n->cmc) ? ", " : "",
		    n->mas || n->cmc ? "the per-modality factors (every weight is quantized with the text "
		    "factor) and the CMC compensation" : "");
}

const export_format_ops export_fake_ops = {
	.name = "fake",
	.describe = "a dense model in the input's own layout, each decoder linear replaced by its dequantized "
	    "weight; any framework loads it (weights only)",
	.drops = "activation quantization, the per-modality factors and the compensation",
	.check = NULL,
	.plan_tensor = fake_plan_tensor,
	.dropped = fake_dropped,
	.linear = fake_linear,
};
