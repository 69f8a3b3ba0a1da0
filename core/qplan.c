#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/blas.h"
#include "core/metrics.h"
#include "core/qplan.h"
#include "core/safetensors.h"
#include "core/smooth.h"

void
qplan_layer_init(qplan_layer *q, const model_config *c, int layer)
{
	memset(q, 0, sizeof *q);
	q->layer = layer;
	for (int k = 0; k < LIN_COUNT; k++) {
		layer_lin_shape(c, k, &q->lin[k].out, &q->lin[k].in);
		q->lin[k].base = -1;
	}
}

void
qplan_layer_done(qplan_layer *q)
{
	for (int k = 0; k < LIN_COUNT; k++)
		for (int m = 0; m < MOD_COUNT; m++) {
			free(q->lin[k].smooth[m]);
			free(q->lin[k].L1[m]);
			free(q->lin[k].L2[m]);
		}
	memset(q, 0, sizeof *q);
}

int
qplan_write(const qplan_layer *q, const char *path, masq_err *err)
{
	st_writer *w = st_writer_new();
	char name[96], v[32];
	int rc = -1;

	for (int k = 0; k < LIN_COUNT; k++) {
		const qplan_linear *l = &q->lin[k];
		for (int m = 0; m < MOD_COUNT; m++) {
			int64_t s1[1] = {l->in}, s2[2] = {l->in, l->rank[m]}, s3[2] = {l->rank[m], l->out};
			if (l->smooth[m] != NULL) {
				snprintf(name, sizeof name, "%s.smooth.%s", lin_name(k), modality_name(m));
				if (st_writer_add(w, name, ST_F32, 1, s1, err) < 0)
					goto out;
			}
			if (l->rank[m] > 0) {
				snprintf(name, sizeof name, "%s.cmc.%s.L1", lin_name(k), modality_name(m));
				if (st_writer_add(w, name, ST_F32, 2, s2, err) < 0)
					goto out;
				snprintf(name, sizeof name, "%s.cmc.%s.L2", lin_name(k), modality_name(m));
				if (st_writer_add(w, name, ST_F32, 2, s3, err) < 0)
					goto out;
			}
		}
		if (l->base >= 0) {
			snprintf(name, sizeof name, "%s.base", lin_name(k));
			if (st_writer_meta(w, name, modality_name(l->base), err) < 0)
				goto out;
		}
	}
	snprintf(v, sizeof v, "%d", q->layer);
	if (st_writer_meta(w, "layer", v, err) < 0 ||
	    st_writer_meta(w, "method", method_name(q->method), err) < 0)
		goto out;
	snprintf(v, sizeof v, "%d", q->wbits);
	if (st_writer_meta(w, "wbits", v, err) < 0)
		goto out;
	snprintf(v, sizeof v, "%d", q->abits);
	if (st_writer_meta(w, "abits", v, err) < 0)
		goto out;
	snprintf(v, sizeof v, "%d", q->wgroup);
	if (st_writer_meta(w, "wgroup", v, err) < 0 || st_writer_begin(w, path, err) < 0)
		goto out;
	for (int k = 0; k < LIN_COUNT; k++) {
		const qplan_linear *l = &q->lin[k];
		for (int m = 0; m < MOD_COUNT; m++) {
			if (l->smooth[m] != NULL &&
			    st_writer_write(w, l->smooth[m], (size_t)l->in * sizeof(float), err) < 0)
				goto out;
			if (l->rank[m] > 0 &&
			    (st_writer_write(w, l->L1[m], (size_t)l->in * l->rank[m] * sizeof(float), err) < 0 ||
			     st_writer_write(w, l->L2[m], (size_t)l->rank[m] * l->out * sizeof(float), err) < 0))
				goto out;
		}
	}
	rc = st_writer_finish(w, err);
out:
	st_writer_free(w);
	return rc;
}

static int
meta_int(const st_file *f, const char *key, int lo, int hi, int *out, masq_err *err)
{
	const char *v = st_meta_get(f, key);
	char *end;
	long x;

	if (v == NULL)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: no \"%s\" in __metadata__", f->path, key);
	x = strtol(v, &end, 10);
	if (*v == '\0' || *end != '\0' || x < lo || x > hi)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: __metadata__ \"%s\" = \"%s\" is not in [%d, %d]",
		    f->path, key, v, lo, hi);
	*out = (int)x;
	return 0;
}

int
qplan_read(qplan_layer *q, const model_config *c, const char *path, masq_err *err)
{
	st_file f;
	char name[96];
	const char *v;

	if (st_open(&f, path, err) < 0)
		return -1;
	qplan_layer_init(q, c, 0);
	if (meta_int(&f, "layer", 0, c->n_layers - 1, &q->layer, err) < 0 ||
	    meta_int(&f, "wbits", 2, 16, &q->wbits, err) < 0 ||
	    meta_int(&f, "abits", 2, 16, &q->abits, err) < 0 ||
	    meta_int(&f, "wgroup", 0, 1 << 20, &q->wgroup, err) < 0)
		goto fail;
	if ((v = st_meta_get(&f, "method")) == NULL || (q->method = method_parse(v)) < 0) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: __metadata__ has no known \"method\"", path);
		goto fail;
	}
	for (int k = 0; k < LIN_COUNT; k++) {
		qplan_linear *l = &q->lin[k];
		snprintf(name, sizeof name, "%s.base", lin_name(k));
		if ((v = st_meta_get(&f, name)) != NULL) {
			for (int m = 0; m < MOD_COUNT; m++)
				if (strcmp(v, modality_name(m)) == 0)
					l->base = m;
			if (l->base < 0) {
				masq_err_set(err, MASQ_ERR_FORMAT, "%s: \"%s\" names no modality", path, name);
				goto fail;
			}
		}
		for (int m = 0; m < MOD_COUNT; m++) {
			const st_tensor *t, *t2;
			snprintf(name, sizeof name, "%s.smooth.%s", lin_name(k), modality_name(m));
			if ((t = st_find(&f, name)) != NULL) {
				if (t->dtype != ST_F32 || t->ndim != 1 || t->shape[0] != l->in) {
					masq_err_set(err, MASQ_ERR_FORMAT, "%s: tensor '%s' must be F32 [%d]", path, name, l->in);
					goto fail;
				}
				l->smooth[m] = st_tensor_to_f32(t);
			}
			snprintf(name, sizeof name, "%s.cmc.%s.L1", lin_name(k), modality_name(m));
			t = st_find(&f, name);
			snprintf(name, sizeof name, "%s.cmc.%s.L2", lin_name(k), modality_name(m));
			t2 = st_find(&f, name);
			if (t == NULL && t2 == NULL)
				continue;
			if (t == NULL || t2 == NULL || t->dtype != ST_F32 || t2->dtype != ST_F32 || t->ndim != 2 ||
			    t2->ndim != 2 || t->shape[0] != l->in || t2->shape[1] != l->out ||
			    t->shape[1] != t2->shape[0] || t->shape[1] < 1 || t->shape[1] > (l->in < l->out ? l->in : l->out)) {
				masq_err_set(err, MASQ_ERR_FORMAT,
				    "%s: %s.cmc.%s.L1/L2 must be F32 [%d, r] and [r, %d] with 1 <= r <= min(in, out)",
				    path, lin_name(k), modality_name(m), l->in, l->out);
				goto fail;
			}
			l->rank[m] = (int)t->shape[1];
			l->L1[m] = st_tensor_to_f32(t);
			l->L2[m] = st_tensor_to_f32(t2);
		}
	}
	st_close(&f);
	return 0;
fail:
	qplan_layer_done(q);
	st_close(&f);
	return -1;
}

int
qplan_compare(const qplan_layer *a, const qplan_layer *b, double *fac, char *fac_at, double *cmc,
    char *cmc_at, size_t n_at, char *what, size_t n_what)
{
	*fac = *cmc = 0.0;
	fac_at[0] = cmc_at[0] = '\0';
	if (a->layer != b->layer || a->method != b->method || a->wbits != b->wbits || a->abits != b->abits ||
	    a->wgroup != b->wgroup) {
		snprintf(what, n_what, "layer %d %s W%dA%d group %d, replayed layer %d %s W%dA%d group %d", a->layer,
		    method_name(a->method), a->wbits, a->abits, a->wgroup, b->layer, method_name(b->method), b->wbits,
		    b->abits, b->wgroup);
		return -1;
	}
	for (int k = 0; k < LIN_COUNT; k++) {
		const qplan_linear *x = &a->lin[k], *y = &b->lin[k];
		if (x->base != y->base) {
			snprintf(what, n_what, "%s: the stored weight carries the %s factor, replayed %s", lin_name(k),
			    x->base >= 0 ? modality_name(x->base) : "no", y->base >= 0 ? modality_name(y->base) : "no");
			return -1;
		}
		for (int m = 0; m < MOD_COUNT; m++) {
			if ((x->smooth[m] == NULL) != (y->smooth[m] == NULL) || x->rank[m] != y->rank[m]) {
				snprintf(what, n_what, "%s %s: factor %s, rank %d; replayed factor %s, rank %d", lin_name(k),
				    modality_name(m), x->smooth[m] ? "present" : "absent", x->rank[m],
				    y->smooth[m] ? "present" : "absent", y->rank[m]);
				return -1;
			}
			double e, f;
			if (x->smooth[m] != NULL) {
				metrics_rel_diff(x->smooth[m], y->smooth[m], (size_t)x->in, 0.0, &e, &f, NULL);
				if (!(e <= *fac)) {
					*fac = e;
					snprintf(fac_at, n_at, "%s.smooth.%s", lin_name(k), modality_name(m));
				}
			}
			int r = x->rank[m];
			if (r > 0) {
				size_t n = (size_t)x->in * x->out;
				float *pa = xmalloc(xmul(n, sizeof(float))), *pb = xmalloc(xmul(n, sizeof(float)));
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, x->in, x->out, r, 1.0f, x->L1[m], r,
				    x->L2[m], x->out, 0.0f, pa, x->out);
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, x->in, x->out, r, 1.0f, y->L1[m], r,
				    y->L2[m], x->out, 0.0f, pb, x->out);
				metrics_rel_diff(pa, pb, n, 0.0, &e, &f, NULL);
				if (!(f <= *cmc)) {
					*cmc = f;
					snprintf(cmc_at, n_at, "%s.cmc.%s (L1 L2)", lin_name(k), modality_name(m));
				}
				free(pa);
				free(pb);
			}
		}
	}
	return 0;
}
