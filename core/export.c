/*
 * export.c: the exports of export.h, written shard by shard; what the
 * formats share.  Where they differ, a format's hooks (export_internal.h:
 * export_fake.c, export_ct.c, export_masquant.c) are called.
 *
 * An export runs in three passes over the layers' plans (the callback is
 * called once per layer in each, in layer order, so a plan is in memory
 * only while its layer is handled):
 *   1. planning: every plan is checked and summarised (bits, factors
 *      present, ranks); the output tensors (name, dtype, shape, shard), the
 *      text files (config.json, the index, side files, provenance) and the
 *      report are built.  Usage errors stop here, before any file exists.
 *   2. shards: each shard is declared and streamed with st_writer; copied
 *      tensors come straight from the input's mmap, a layer's quantized
 *      tensors are computed when its first one is reached and dropped when
 *      another layer's is (tensors are in natural name order, so each
 *      layer's are contiguous, except that export_align moves a tensor that
 *      is not a whole number of 8-byte words to the shard's end, where its
 *      layer is computed again).
 *   3. the format's side files (masquant: masquant.safetensors, one
 *      layer's factors at a time).
 * Everything goes to ".<name>.tmp-<pid>" beside the target, which is
 * renamed into place (refusing to replace anything) once complete.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "core/cmc.h"
#include "core/export_internal.h"
#include "core/quant.h"
#include "core/smooth.h"

/* The formats, in enum export_format's order. */
static const export_format_ops *const formats[EXPORT_FORMAT_COUNT] = {
	[EXPORT_FAKE] = &export_fake_ops,
	[EXPORT_COMPRESSED_TENSORS] = &export_ct_ops,
	[EXPORT_MASQUANT] = &export_masquant_ops,
};

const char *
export_format_name(int f)
{
	return (unsigned)f < EXPORT_FORMAT_COUNT ? formats[f]->name : "?";
}

int
export_format_parse(const char *s)
{
	for (int f = 0; f < EXPORT_FORMAT_COUNT; f++)
		if (strcmp(s, formats[f]->name) == 0)
			return f;
	return -1;
}

const char *
export_format_describe(int f)
{
	return (unsigned)f < EXPORT_FORMAT_COUNT ? formats[f]->describe : "?";
}

const char *
export_format_drops(int f)
{
	return (unsigned)f < EXPORT_FORMAT_COUNT ? formats[f]->drops : "?";
}

/* ---- the job --------------------------------------------------------------- */

/* Release everything the job holds. */
static void
job_free(xjob *j)
{
	for (int i = 0; i < j->nt; i++)
		free(j->t[i].name);
	for (int i = 0; i < j->nside; i++)
		free(j->side[i].name);
	for (int i = 0; i < j->nshards; i++)
		free(j->shard_file[i]);
	for (int i = 0; i < j->ncopies; i++)
		free(j->copies[i]);
	free(j->t);
	free(j->side);
	free(j->shard_file);
	free(j->shard_size);
	free(j->copies);
	free(j->copy_size);
	free(j->ls);
	free(j->config_text);
	free(j->index_text);
	free(j->manifest_text);
	free(j->prov_text);
	memset(j, 0, sizeof *j);
}

/* Append a tensor to list *v (n, cap) and return it. */
otensor *
otensor_push(otensor **v, int *n, int *cap, const char *name, st_dtype dt, int ndim,
    const int64_t *shape, int kind)
{
	otensor *o;
	uint64_t ne = 1;

	if (*n == *cap) {
		*cap = *cap ? 2 * *cap : 64;
		*v = xrealloc(*v, xmul((size_t)*cap, sizeof **v));
	}
	o = &(*v)[(*n)++];
	memset(o, 0, sizeof *o);
	o->name = xstrdup(name);
	o->dtype = dt;
	o->ndim = ndim;
	for (int i = 0; i < ndim; i++) {
		o->shape[i] = shape[i];
		ne *= (uint64_t)shape[i];
	}
	o->nbytes = st_dtype_bytes(dt, ne);	/* whole bytes: the input's own tensors, or masq's */
	o->kind = kind;
	o->layer = o->lin = o->mod = -1;
	return o;
}

/* Natural order: runs of digits compare as numbers, so layers.2 < layers.10
 * and every layer's tensors are contiguous. */
static int
natcmp(const char *a, const char *b)
{
	while (*a != '\0' && *b != '\0') {
		if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
			const char *ea = a, *eb = b;
			while (*a == '0' && isdigit((unsigned char)a[1]))
				a++;
			while (*b == '0' && isdigit((unsigned char)b[1]))
				b++;
			for (ea = a; isdigit((unsigned char)*ea); ea++)
				;
			for (eb = b; isdigit((unsigned char)*eb); eb++)
				;
			if (ea - a != eb - b)
				return ea - a < eb - b ? -1 : 1;
			int c = strncmp(a, b, (size_t)(ea - a));
			if (c != 0)
				return c;
			a = ea;
			b = eb;
			continue;
		}
		if (*a != *b)
			return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
		a++;
		b++;
	}
	return (*a != '\0') - (*b != '\0');
}

/* qsort order of output tensors: natural, then bytewise. */
static int
otensor_cmp(const void *x, const void *y)
{
	const otensor *a = x, *b = y;
	int c = natcmp(a->name, b->name);
	return c != 0 ? c : strcmp(a->name, b->name);
}

/* ---- plans ------------------------------------------------------------------- */

/* The factor the stored weight of linear lin carries: the base modality's
 * (mas-cmc), else the text factor (mas: its text weight; sq: the shared
 * one), else any present; NULL for 1 (rtn, down_proj, sq's o_proj). */
const float *
export_stored_factor(const qplan_layer *q, int lin)
{
	const qplan_linear *l = &q->lin[lin];

	if (l->base >= 0 && l->smooth[l->base] != NULL)
		return l->smooth[l->base];
	if (l->smooth[MOD_TEXT] != NULL)
		return l->smooth[MOD_TEXT];
	for (int m = 0; m < MOD_COUNT; m++)
		if (l->smooth[m] != NULL)
			return l->smooth[m];
	return NULL;
}

/* A linear whose tokens use their own modality's factor against one stored
 * weight (mas-cmc's q..up); every other linear applies one factor to all. */
int
export_per_modality(const qplan_layer *q, int lin)
{
	return q->method == METHOD_MAS_CMC && smooth_lin_group(lin) >= 0 && q->lin[lin].base >= 0;
}

/* Fetch layer l's plan through the callback and check it fits the model. */
int
export_plan_get(xjob *j, int l, qplan_layer *q, masq_err *err)
{
	const model_config *c = &j->m->cfg;

	memset(q, 0, sizeof *q);
	if (j->plan_fn(j->ctx, l, q, err) < 0) {
		qplan_layer_done(q);
		return masq_err_prefix(err, "the plan of layer %d", l);
	}
	if (q->layer != l) {
		masq_err_set(err, MASQ_ERR_FORMAT, "the plan asked for layer %d is layer %d's", l, q->layer);
		goto fail;
	}
	if (q->method < 0 || q->method >= METHOD_COUNT || q->wbits < 2 || q->wbits > 16 ||
	    q->abits < 2 || q->abits > 16 || q->wgroup < 0) {
		masq_err_set(err, MASQ_ERR_FORMAT,
		    "the plan of layer %d has method %d, W%d A%d, group %d: out of range", l, q->method,
		    q->wbits, q->abits, q->wgroup);
		goto fail;
	}
	for (int k = 0; k < LIN_COUNT; k++) {
		const qplan_linear *ql = &q->lin[k];
		int out, in;
		layer_lin_shape(c, k, &out, &in);
		if (ql->in != in || ql->out != out) {
			masq_err_set(err, MASQ_ERR_FORMAT,
			    "the plan of layer %d gives %s as %d x %d, the model has %d x %d", l, lin_name(k),
			    ql->out, ql->in, out, in);
			goto fail;
		}
		if (ql->base >= MOD_COUNT || (ql->base >= 0 && ql->smooth[ql->base] == NULL)) {
			masq_err_set(err, MASQ_ERR_FORMAT,
			    "the plan of layer %d names a base modality for %s without its factor", l, lin_name(k));
			goto fail;
		}
		for (int m = 0; m < MOD_COUNT; m++) {
			if (ql->smooth[m] != NULL)
				for (int i = 0; i < in; i++)
					if (!(ql->smooth[m][i] > 0.0f) || !isfinite(ql->smooth[m][i])) {
						masq_err_set(err, MASQ_ERR_FORMAT,
						    "the plan of layer %d: %s.smooth.%s[%d] = %g is not a positive number",
						    l, lin_name(k), modality_name(m), i, (double)ql->smooth[m][i]);
						goto fail;
					}
			if (ql->rank[m] < 0 || ql->rank[m] > (in < out ? in : out) ||
			    (ql->rank[m] > 0 && (ql->L1[m] == NULL || ql->L2[m] == NULL))) {
				masq_err_set(err, MASQ_ERR_FORMAT,
				    "the plan of layer %d: %s has a bad CMC rank %d for %s", l, lin_name(k),
				    ql->rank[m], modality_name(m));
				goto fail;
			}
		}
	}
	return 0;
fail:
	qplan_layer_done(q);
	return -1;
}

/* Keep what the later passes need to know of plan q without its arrays. */
static void
lsum_fill(lsum *s, const qplan_layer *q, int cmc_dtype)
{
	memset(s, 0, sizeof *s);
	s->method = q->method;
	s->wbits = q->wbits;
	s->abits = q->abits;
	s->wgroup = q->wgroup;
	for (int k = 0; k < LIN_COUNT; k++) {
		s->smoothed[k] = export_stored_factor(q, k) != NULL;
		s->permod[k] = export_per_modality(q, k);
		for (int m = 0; m < MOD_COUNT; m++) {
			const qplan_linear *l = &q->lin[k];
			s->rank[k][m] = export_per_modality(q, k) && m != MOD_TEXT ? l->rank[m] : 0;
			s->cmc_dtype[k][m] = s->rank[k][m] > 0 ? cmc_stored_dtype(cmc_dtype, l->L1[m], l->L2[m], l->in,
			    l->out, l->rank[m]) : cmc_dtype;
		}
	}
}

/* ---- planning ---------------------------------------------------------------- */

/* Layer and linear (or norm) of a decoder tensor name, else -1. */
int
export_decoder_tensor(const model *m, const char *name, int *layer, int *lin, int *norm)
{
	size_t pl = strlen(m->prefix);
	char *end;
	long l;

	*lin = *norm = -1;
	if (strncmp(name, m->prefix, pl) != 0 || !isdigit((unsigned char)name[pl]))
		return -1;
	l = strtol(name + pl, &end, 10);
	if (*end != '.' || l < 0 || l >= m->cfg.n_layers)
		return -1;
	*layer = (int)l;
	end++;
	for (int k = 0; k < LIN_COUNT; k++) {
		size_t n = strlen(lin_path(k));
		if (strncmp(end, lin_path(k), n) == 0 && strcmp(end + n, ".weight") == 0) {
			*lin = k;
			return 0;
		}
	}
	if (strcmp(end, "input_layernorm.weight") == 0)
		*norm = 0;
	else if (strcmp(end, "post_attention_layernorm.weight") == 0)
		*norm = 1;
	return 0;
}

/* A file of the input directory that is copied verbatim. */
static int
copied_file(const char *name)
{
	size_t n = strlen(name);
	return !(n >= 12 && strcmp(name + n - 12, ".safetensors") == 0) &&
	    strcmp(name, "model.safetensors.index.json") != 0 &&
	    strcmp(name, "masq-provenance.json") != 0 && strcmp(name, "masquant.json") != 0 &&
	    name[0] != '.';
}

/* List the input's non-weight regular files (in byte order). */
static int
plan_copies(xjob *j, masq_err *err)
{
	char **names;
	int n = masq_dir_list(j->m->dir, &names, err), cap = 0;

	if (n < 0)
		return -1;
	for (int i = 0; i < n; i++) {
		struct stat sb;
		char *p;
		if (!copied_file(names[i]))
			continue;
		p = masq_path_join(j->m->dir, names[i]);
		if (masq_check_within(j->m->dir, p, err) < 0) {
			free(p);
			masq_dir_list_free(names, n);
			return -1;
		}
		if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) {
			if (j->ncopies == cap) {
				cap = cap ? 2 * cap : 16;
				j->copies = xrealloc(j->copies, xmul((size_t)cap, sizeof(char *)));
			}
			j->copies[j->ncopies++] = xstrdup(names[i]);
		}
		free(p);
	}
	masq_dir_list_free(names, n);
	j->copy_size = xcalloc((size_t)j->ncopies + 1, sizeof(uint64_t));
	for (int i = 0; i < j->ncopies; i++) {
		struct stat sb;
		char *p = masq_path_join(j->m->dir, j->copies[i]);
		if (stat(p, &sb) == 0)
			j->copy_size[i] = (uint64_t)sb.st_size;
		free(p);
	}
	return 0;
}

/* A JSON document as text with a final newline (a new string). */
char *
export_json_text(json_t *doc)
{
	char *s = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	char *t;

	if (s == NULL)
		fatal("out of memory writing JSON");
	t = xmalloc(strlen(s) + 2);
	sprintf(t, "%s\n", s);
	free(s);
	return t;
}

/* config.json with qc (taken) as its quantization_config: inserted
 * before the final '}', so the rest of the file keeps its bytes (jansson
 * would reprint 1e-6 as 9.99...e-7), or replacing an existing block (then
 * the whole file is rewritten). */
int
export_config_amend(xjob *j, json_t *qc, masq_err *err)
{
	char *path = masq_path_join(j->m->dir, "config.json");
	json_error_t je;
	json_t *root = json_load_file(path, 0, &je);

	if (root == NULL || !json_is_object(root)) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: cannot read as a JSON object: %s", path,
		    root ? "not an object" : je.text);
		json_decref(root);
		json_decref(qc);
		free(path);
		return -1;
	}
	if (json_object_get(root, "quantization_config") != NULL) {
		json_object_set_new(root, "quantization_config", qc);
		j->config_text = export_json_text(root);
		json_decref(root);
		free(path);
		return 0;
	}
	json_decref(root);
	size_t n;
	char *text = masq_read_file(path, 64u << 20, &n, err);
	free(path);
	if (text == NULL) {
		json_decref(qc);
		return -1;
	}
	char *block = json_dumps(qc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(qc);
	if (block == NULL)
		fatal("out of memory building quantization_config");
	while (n > 0 && text[n - 1] != '\0' && strchr(" \t\r\n", text[n - 1]) != NULL)
		n--;
	MASQ_ASSERT(n > 0 && text[n - 1] == '}');	/* it parsed as an object */
	size_t body = n - 1, bl = strlen(block);
	while (body > 0 && text[body - 1] != '\0' && strchr(" \t\r\n", text[body - 1]) != NULL)
		body--;
	int empty = body > 0 && text[body - 1] == '{';
	/* the block indented by two spaces, as a top-level member */
	char *out = xmalloc(body + 2 * bl + 64), *o = out;
	memcpy(o, text, body);
	o += body;
	o += sprintf(o, "%s\n  \"quantization_config\": ", empty ? "" : ",");
	for (size_t i = 0; i < bl; i++) {
		*o++ = block[i];
		if (block[i] == '\n') {
			*o++ = ' ';
			*o++ = ' ';
		}
	}
	strcpy(o, "\n}\n");
	j->config_text = out;
	free(block);
	free(text);
	return 0;
}

/* A writer with the tensors of list v whose shard is `shard` (-1: all) declared. */
st_writer *
export_declare(const otensor *v, int n, int shard, masq_err *err)
{
	st_writer *w = st_writer_new();

	if (st_writer_meta(w, "masq_version", PACKAGE_VERSION, err) < 0)
		goto fail;
	for (int i = 0; i < n; i++)
		if ((shard < 0 || v[i].shard == shard) &&
		    st_writer_add(w, v[i].name, v[i].dtype, v[i].ndim, v[i].shape, err) < 0)
			goto fail;
	return w;
fail:
	st_writer_free(w);
	return NULL;
}

void
export_plan_levels(xjob *j, const st_tensor *t, int l, int lin, int u4x2)
{
	int out, in;
	int64_t sh[2], wsh[2];
	layer_lin_shape(&j->m->cfg, lin, &out, &in);
	sh[0] = wsh[0] = out;
	sh[1] = 1;
	wsh[1] = u4x2 ? (in + 1) / 2 : in;
	char *sn = xmalloc(strlen(t->name) + 8);
	otensor *o = otensor_push(&j->t, &j->nt, &j->tcap, t->name, u4x2 ? ST_U8 : ST_I8, 2, wsh, OK_WEIGHT);
	o->src = t;
	o->layer = l;
	o->lin = lin;
	sprintf(sn, "%s_scale", t->name);
	o = otensor_push(&j->t, &j->nt, &j->tcap, sn, ST_F32, 2, sh, OK_SCALE);
	o->src = t;
	o->layer = l;
	o->lin = lin;
	free(sn);
}

/* How many layers of each kind the job exports. */
static void
job_counts(const xjob *j, export_counts *n)
{
	memset(n, 0, sizeof *n);
	n->layers = j->m->cfg.n_layers;
	for (int l = 0; l < j->m->cfg.n_layers; l++) {
		const lsum *s = &j->ls[l];
		n->mas += s->method == METHOD_MAS;
		n->cmc += s->method == METHOD_MAS_CMC;
		n->act += s->abits < 16;
		for (int k = 0; k < LIN_COUNT; k++)
			for (int m = 0; m < MOD_COUNT; m++)
				if (s->rank[k][m] > 0) {
					n->cmc_rank++;
					k = LIN_COUNT;
					break;
				}
	}
}

/* The writing order within each shard: every tensor at an offset that is a
 * multiple of its element size.  Tensors of a whole number of 8-byte words
 * keep the natural order (so a layer's tensors stay together and each
 * layer is computed once: on real models that is every tensor), then the
 * others, larger elements first; the data starts 8-aligned, so each lands
 * aligned.  The official writer sorts by dtype alone. */
static int
align_rank(const otensor *o)
{
	size_t es = st_dtype_size(o->dtype);
	if (o->nbytes % 8 == 0)
		return 0;
	return es >= 8 ? 1 : es == 4 ? 2 : es == 2 ? 3 : 4;
}

static int
align_cmp(const void *x, const void *y)
{
	const otensor *a = x, *b = y;
	if (a->shard != b->shard)
		return a->shard < b->shard ? -1 : 1;
	if (align_rank(a) != align_rank(b))
		return align_rank(a) < align_rank(b) ? -1 : 1;
	return a->seq < b->seq ? -1 : a->seq > b->seq;
}

void
export_align(otensor *v, int n)
{
	for (int i = 0; i < n; i++)
		v[i].seq = i;
	if (n > 1)
		qsort(v, (size_t)n, sizeof *v, align_cmp);
}

/* Pass 1: summarise the plans, lay out every output file. */
static int
job_plan(xjob *j, masq_err *err)
{
	const model *m = j->m;
	const st_set *s = &m->st;
	uint64_t acc = 0;

	j->ls = xcalloc((size_t)m->cfg.n_layers, sizeof *j->ls);
	for (int l = 0; l < m->cfg.n_layers; l++) {
		qplan_layer q;
		if (export_plan_get(j, l, &q, err) < 0)
			return -1;
		/* only the masquant export stores L1/L2: the others need not scan them */
		lsum_fill(&j->ls[l], &q, j->format == EXPORT_MASQUANT ? j->cmc_dtype : ST_F32);
		qplan_layer_done(&q);
		if (j->fmt->check != NULL && j->fmt->check(j, l, &j->ls[l], err) < 0)
			return -1;
	}

	/* the model's tensors, as the format writes each */
	for (int i = 0; i < s->ntensors; i++) {
		const st_tensor *t = s->index[i];
		int l = -1, k = -1, nm = -1;
		if (export_decoder_tensor(m, t->name, &l, &k, &nm) < 0)
			l = k = nm = -1;
		j->fmt->plan_tensor(j, t, l, k, nm);
	}
	if (j->nt == 0)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: the model has no tensors", m->dir);
	qsort(j->t, (size_t)j->nt, sizeof *j->t, otensor_cmp);

	/* shards */
	j->nshards = 1;
	for (int i = 0; i < j->nt; i++) {
		if (acc > 0 && acc + j->t[i].nbytes > j->shard_bytes) {
			j->nshards++;
			acc = 0;
		}
		j->t[i].shard = j->nshards - 1;
		acc += j->t[i].nbytes;
	}
	export_align(j->t, j->nt);
	j->shard_file = xcalloc((size_t)j->nshards, sizeof(char *));
	j->shard_size = xcalloc((size_t)j->nshards, sizeof(uint64_t));
	for (int i = 0; i < j->nshards; i++) {
		char name[64];
		if (j->nshards == 1)
			snprintf(name, sizeof name, "model.safetensors");
		else
			snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", i + 1, j->nshards);
		j->shard_file[i] = xstrdup(name);
		st_writer *w = export_declare(j->t, j->nt, i, err);
		if (w == NULL)
			return -1;
		j->shard_size[i] = st_writer_size(w);
		st_writer_free(w);
	}
	if (j->nshards > 1) {
		json_t *map = json_object();
		uint64_t total = 0;
		for (int i = 0; i < j->nt; i++) {
			json_object_set_new(map, j->t[i].name, json_string(j->shard_file[j->t[i].shard]));
			total += j->t[i].nbytes;
		}
		json_t *doc = json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)total,
		    "weight_map", map);
		j->index_text = export_json_text(doc);
		json_decref(doc);
	}

	/* the other files */
	if (plan_copies(j, err) < 0)
		return -1;
	if (j->fmt->plan_files != NULL && j->fmt->plan_files(j, err) < 0)
		return -1;
	if (j->provenance != NULL) {
		size_t n = strlen(j->provenance);
		j->prov_text = xmalloc(n + 2);
		sprintf(j->prov_text, "%s%s", j->provenance, n > 0 && j->provenance[n - 1] == '\n' ? "" : "\n");
	} else {
		json_t *doc = json_pack("{s:s, s:s, s:s}", "masq_version", PACKAGE_VERSION, "format",
		    export_format_name(j->format), "model", m->dir);
		j->prov_text = export_json_text(doc);
		json_decref(doc);
	}
	export_counts cnt;
	job_counts(j, &cnt);
	j->rep.dropped[0] = '\0';
	j->fmt->dropped(j, &cnt);

	/* the report */
	export_report *r = &j->rep;
	r->files = j->nshards + (j->index_text != NULL) + j->ncopies + 1 + j->fmt->side_files;
	r->tensors = j->nt + j->nside;
	r->bytes = strlen(j->prov_text);
	for (int i = 0; i < j->nshards; i++)
		r->bytes += j->shard_size[i];
	/* config.json is among the copies: model_open read it */
	for (int i = 0; i < j->ncopies; i++)
		r->bytes += j->config_text != NULL && strcmp(j->copies[i], "config.json") == 0 ?
		    strlen(j->config_text) : j->copy_size[i];
	if (j->index_text != NULL)
		r->bytes += strlen(j->index_text);
	if (j->manifest_text != NULL)
		r->bytes += strlen(j->manifest_text);
	r->bytes += j->side_size;
	return 0;
}

const char *
export_part_name(int p)
{
	static const char *const names[EXPORT_PART_COUNT] = {"weights", "scales", "factors", "low_rank", "other"};
	return (unsigned)p < EXPORT_PART_COUNT ? names[p] : "?";
}

char *
export_report_sizes(const export_report *r, char *buf, size_t n)
{
	char b[4][32];
	size_t k;

	k = (size_t)snprintf(buf, n, "%s of tensors", masq_fmt_bytes(r->planned_bytes, b[0], sizeof b[0]));
	if (r->source_bytes > 0 && k < n)
		k += (size_t)snprintf(buf + k, n - k, ", %.2fx the checkpoint's %s", (double)r->planned_bytes /
		    (double)r->source_bytes, masq_fmt_bytes(r->source_bytes, b[0], sizeof b[0]));
	for (int p = 0; p < EXPORT_PART_COUNT && k < n; p++) {
		k += (size_t)snprintf(buf + k, n - k, "%s %s %s", p == 0 ? ":" : ",", p == EXPORT_PART_LOWRANK ?
		    "low-rank" : export_part_name(p), masq_fmt_bytes(r->part_bytes[p], b[1], sizeof b[1]));
		if (p == EXPORT_PART_WEIGHTS && r->source_weight_bytes > 0 && k < n)
			k += (size_t)snprintf(buf + k, n - k, " (%.2fx its %s of decoder linears)",
			    (double)r->part_bytes[p] / (double)r->source_weight_bytes,
			    masq_fmt_bytes(r->source_weight_bytes, b[2], sizeof b[2]));
	}
	return buf;
}

/* What an output tensor's bytes count as. */
static int
otensor_part(const otensor *o)
{
	switch (o->kind) {
	case OK_WEIGHT:
	case OK_PACKED:
		return EXPORT_PART_WEIGHTS;
	case OK_SCALE:
	case OK_ZP:
	case OK_WSHAPE:
		return EXPORT_PART_SCALES;
	case OK_SMOOTH:
		return EXPORT_PART_FACTORS;
	case OK_L1:
	case OK_L2:
		return EXPORT_PART_LOWRANK;
	default:
		return EXPORT_PART_OTHER;
	}
}

/* Set the job up from the options and run the planning pass. */
static int
job_init(xjob *j, const model *m, export_plan_fn plan_fn, void *ctx, const export_opts *o,
    masq_err *err)
{
	memset(j, 0, sizeof *j);
	j->m = m;
	j->plan_fn = plan_fn;
	j->ctx = ctx;
	if (o->format < 0 || o->format >= EXPORT_FORMAT_COUNT)
		return masq_err_set(err, MASQ_ERR_USAGE, "unknown export format %d", o->format);
	j->format = o->format;
	j->fmt = formats[o->format];
	j->shard_bytes = o->shard_bytes ? o->shard_bytes : EXPORT_DEFAULT_SHARD;
	j->provenance = o->provenance;
	j->cmc_dtype = o->cmc_dtype;
	if (!export_cmc_dtype_ok(j->cmc_dtype))
		return masq_err_set(err, MASQ_ERR_USAGE, "the compensation factors are stored as F32, F16 or BF16, "
		    "not %s", st_dtype_name(j->cmc_dtype));
	if (plan_fn == NULL)
		return masq_err_set(err, MASQ_ERR_INTERNAL, "export: no plan callback");
	if (job_plan(j, err) < 0)
		return -1;
	for (int pass = 0; pass < 2; pass++) {
		const otensor *v = pass == 0 ? j->t : j->side;
		int n = pass == 0 ? j->nt : j->nside;
		for (int i = 0; i < n; i++) {
			j->rep.planned_bytes += v[i].nbytes;
			if (v[i].kind == OK_L1 || v[i].kind == OK_L2)
				j->rep.cmc_bytes += v[i].nbytes;
			j->rep.part_bytes[otensor_part(&v[i])] += v[i].nbytes;
		}
	}
	for (int i = 0; i < m->st.ntensors; i++) {
		const st_tensor *t = m->st.index[i];
		int l, k, nm;
		j->rep.source_bytes += t->end - t->begin;
		if (export_decoder_tensor(m, t->name, &l, &k, &nm) == 0 && k >= 0)
			j->rep.source_weight_bytes += t->end - t->begin;
	}
	return 0;
}

/* ---- computing a layer ---------------------------------------------------------- */

/* Free a layer cache's arrays and mark it empty. */
static void
lcache_clear(lcache *c)
{
	for (int k = 0; k < LIN_COUNT; k++) {
		free(c->w[k]);
		free(c->q[k]);
		free(c->scale[k]);
		free(c->packed[k]);
		free(c->zp[k]);
	}
	free(c->norm[0]);
	free(c->norm[1]);
	memset(c, 0, sizeof *c);
	c->layer = -1;
}

/* x (n) rounded to dtype dt's precision (F16, BF16; others unchanged). */
void
export_round_to_dtype(float *x, size_t n, st_dtype dt)
{
	if (dt != ST_BF16 && dt != ST_F16)
		return;
	uint16_t *b = xmalloc(xmul(n, sizeof(uint16_t)));
	st_from_f32(b, x, dt, n);
	st_to_f32(x, b, dt, n);
	free(b);
}

/* W diag(s) (out, in) as a new array (s NULL: a copy). */
static float *
scaled(const float *W, const float *s, int out, int in)
{
	float *y = xmalloc(xmul((size_t)out * in, sizeof(float)));
	for (int o = 0; o < out; o++)
		for (int i = 0; i < in; i++)
			y[(size_t)o * in + i] = s != NULL ? W[(size_t)o * in + i] * s[i] : W[(size_t)o * in + i];
	return y;
}

/* Compute layer l's tensors of the format into c. */
static int
layer_compute(xjob *j, int l, lcache *c, masq_err *err)
{
	const model *m = j->m;
	qplan_layer q;
	layer_weights w;
	float *s_fold[2] = {NULL, NULL};	/* factors folded elsewhere (compressed-tensors: the norms) */

	lcache_clear(c);
	if (export_plan_get(j, l, &q, err) < 0)
		return -1;
	if (layer_weights_load(&w, m, l, err) < 0) {
		qplan_layer_done(&q);
		return -1;
	}
	if (j->fmt->layer_begin != NULL)
		j->fmt->layer_begin(j, c, &q, &w, s_fold);
	for (int k = 0; k < LIN_COUNT; k++) {
		int out, in;
		const float *s = export_stored_factor(&q, k);
		layer_lin_shape(&m->cfg, k, &out, &in);
		if (j->fmt->layer_begin != NULL) {
			/* one folded factor per group: q's for q,k,v, up's for gate,up; o and down: none */
			int g = smooth_lin_group(k);
			s = g == GRP_QKV ? s_fold[0] : g == GRP_GATEUP ? s_fold[1] : NULL;
		}
		if (j->fmt->linear(j, c, &q, k, scaled(w.w[k], s, out, in), s, out, in, err) < 0) {
			free(s_fold[0]);
			free(s_fold[1]);
			layer_weights_done(&w);
			qplan_layer_done(&q);
			lcache_clear(c);
			return masq_err_prefix(err, "layer %d %s", l, lin_name(k));
		}
	}
	free(s_fold[0]);
	free(s_fold[1]);
	layer_weights_done(&w);
	qplan_layer_done(&q);
	c->layer = l;
	return 0;
}

/* ---- writing ---------------------------------------------------------------------- */

/* Write text to dir/name, fsync'd. */
int
export_write_text(const char *dir, const char *name, const char *text, size_t n, masq_err *err)
{
	char *p = masq_path_join(dir, name);
	int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0666), e = 0;
	size_t off = 0;

	if (fd < 0) {
		masq_err_set(err, MASQ_ERR_IO, "%s: cannot create: %s", p, strerror(errno));
		free(p);
		return -1;
	}
	while (off < n) {
		ssize_t k = write(fd, text + off, n - off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			e = k < 0 ? errno : ENOSPC;
			break;
		}
		off += (size_t)k;
	}
	if (e == 0 && fsync(fd) != 0)
		e = errno;
	if (close(fd) != 0 && e == 0)
		e = errno;
	if (e != 0) {
		masq_err_set(err, MASQ_ERR_IO, "%s: write error: %s", p, strerror(e));
		free(p);
		return -1;
	}
	free(p);
	return 0;
}

/* Copy the input's file name into dir, in pieces, fsync'd. */
static int
copy_file(const char *src_dir, const char *dir, const char *name, masq_err *err)
{
	char *src = masq_path_join(src_dir, name), *dst = masq_path_join(dir, name);
	char *buf = xmalloc(1 << 20);
	int in = open(src, O_RDONLY), out = -1, rc = -1;

	if (in < 0) {
		masq_err_set(err, MASQ_ERR_IO, "%s: cannot read: %s", src, strerror(errno));
		goto done;
	}
	if ((out = open(dst, O_WRONLY | O_CREAT | O_EXCL, 0666)) < 0) {
		masq_err_set(err, MASQ_ERR_IO, "%s: cannot create: %s", dst, strerror(errno));
		goto done;
	}
	for (;;) {
		ssize_t n = read(in, buf, 1 << 20), off = 0;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			masq_err_set(err, MASQ_ERR_IO, "%s: read error: %s", src, strerror(errno));
			goto done;
		}
		if (n == 0)
			break;
		while (off < n) {
			ssize_t k = write(out, buf + off, (size_t)(n - off));
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0) {
				masq_err_set(err, MASQ_ERR_IO, "%s: write error: %s", dst,
				    strerror(k < 0 ? errno : ENOSPC));
				goto done;
			}
			off += k;
		}
	}
	if (fsync(out) != 0) {
		masq_err_set(err, MASQ_ERR_IO, "%s: write error: %s", dst, strerror(errno));
		goto done;
	}
	rc = 0;
done:
	if (out >= 0 && close(out) != 0 && rc == 0)
		rc = masq_err_set(err, MASQ_ERR_IO, "%s: write error: %s", dst, strerror(errno));
	if (in >= 0)
		close(in);
	free(buf);
	free(src);
	free(dst);
	return rc;
}

/* Pass 2: the model's shards. */
static int
write_shards(xjob *j, const char *dir, masq_err *err)
{
	lcache c;
	int rc = -1, i = 0;

	memset(&c, 0, sizeof c);
	c.layer = -1;
	for (int sh = 0; sh < j->nshards; sh++) {
		int r;
		char *path = masq_path_join(dir, j->shard_file[sh]);
		st_writer *w = export_declare(j->t, j->nt, sh, err);
		if (w == NULL || st_writer_begin(w, path, err) < 0) {
			st_writer_free(w);
			free(path);
			goto out;
		}
		free(path);
		for (; i < j->nt && j->t[i].shard == sh; i++) {
			const otensor *o = &j->t[i];
			int out = 0, in = 0;
			r = 0;
			if (o->kind != OK_COPY && o->kind != OK_WSHAPE && o->layer != c.layer &&
			    layer_compute(j, o->layer, &c, err) < 0) {
				st_writer_free(w);
				goto out;
			}
			if (o->kind != OK_COPY)
				layer_lin_shape(&j->m->cfg, o->lin >= 0 ? o->lin : 0, &out, &in);
			switch (o->kind) {
			case OK_COPY:
				r = st_writer_write(w, o->src->data, (size_t)o->nbytes, err);
				break;
			case OK_WEIGHT:
				if (c.w[o->lin] != NULL)
					r = st_writer_write_f32(w, c.w[o->lin], (size_t)out * in, err);
				else
					r = st_writer_write(w, c.q[o->lin], (size_t)o->nbytes, err);
				break;
			case OK_SCALE:
				r = st_writer_write_f32(w, c.scale[o->lin], (size_t)(o->nbytes / st_dtype_size(o->dtype)), err);
				break;
			case OK_PACKED:
				r = st_writer_write(w, c.packed[o->lin], (size_t)o->nbytes, err);
				break;
			case OK_ZP:
				r = st_writer_write(w, c.zp[o->lin], (size_t)o->nbytes, err);
				break;
			case OK_WSHAPE: {
				unsigned char b[16];
				for (int bi = 0; bi < 8; bi++) {
					b[bi] = (unsigned char)((uint64_t)out >> (8 * bi));
					b[8 + bi] = (unsigned char)((uint64_t)in >> (8 * bi));
				}
				r = st_writer_write(w, b, sizeof b, err);
				break;
			}
			case OK_NORM:
				r = st_writer_write_f32(w, c.norm[o->lin], (size_t)j->m->cfg.hidden, err);
				break;
			}
			if (r < 0) {
				st_writer_free(w);
				goto out;
			}
		}
		r = st_writer_finish(w, err);
		st_writer_free(w);
		if (r < 0)
			goto out;
	}
	rc = 0;
out:
	lcache_clear(&c);
	return rc;
}

/* fsync a directory, so the names in it are durable. */
static int
fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY);
	int rc;

	if (fd < 0)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

/* Rename tmp to out unless out exists (atomically where the kernel can). */
static int
rename_noreplace(const char *tmp, const char *out)
{
#ifdef RENAME_NOREPLACE
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, out, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
#endif
	struct stat sb;
	if (lstat(out, &sb) == 0) {
		errno = EEXIST;
		return -1;
	}
	return rename(tmp, out);
}

int
export_write(const model *m, export_plan_fn plan_fn, void *ctx, const export_opts *o,
    const char *out_dir, export_report *rep, masq_err *err)
{
	xjob j;
	struct stat sb;
	char *out = NULL, *parent, *base, *tmp = NULL;
	int rc = -1, made = 0;
	size_t n;

	if (out_dir == NULL || out_dir[0] == '\0')
		return masq_err_set(err, MASQ_ERR_USAGE, "export: no output directory");
	/* DIR without trailing slashes, split into parent and name */
	out = xstrdup(out_dir);
	for (n = strlen(out); n > 1 && out[n - 1] == '/'; n--)
		out[n - 1] = '\0';
	if (lstat(out, &sb) == 0) {
		/* about the file system, not the quantization: an I/O error (a
		 * replay does not expect to meet it again) */
		masq_err_set(err, MASQ_ERR_IO,
		    "%s: already exists; an export never replaces anything (remove it or choose another directory)",
		    out);
		free(out);
		return -1;
	}
	base = strrchr(out, '/');
	if (base == NULL) {
		parent = xstrdup(".");
		base = out;
	} else {
		parent = base == out ? xstrdup("/") : strndup(out, (size_t)(base - out));
		if (parent == NULL)
			fatal("out of memory");
		base++;
	}
	if (base[0] == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
		masq_err_set(err, MASQ_ERR_USAGE, "%s: not a directory name to create", out_dir);
		free(parent);
		free(out);
		return -1;
	}
	if (job_init(&j, m, plan_fn, ctx, o, err) < 0)
		goto out;
	if (masq_mkdir_p(parent, err) < 0) {
		masq_err_prefix(err, "export to %s", out);
		goto out;
	}
	tmp = xmalloc(strlen(parent) + strlen(base) + 48);
	sprintf(tmp, "%s/.%s.tmp-%ld", parent, base, (long)getpid());
	if (mkdir(tmp, 0777) != 0) {
		masq_err_set(err, MASQ_ERR_IO, "%s: cannot create the temporary directory: %s", tmp,
		    strerror(errno));
		goto out;
	}
	made = 1;
	if (write_shards(&j, tmp, err) < 0)
		goto out;
	if (j.index_text != NULL &&
	    export_write_text(tmp, "model.safetensors.index.json", j.index_text, strlen(j.index_text), err) < 0)
		goto out;
	for (int i = 0; i < j.ncopies; i++) {
		int r;
		if (j.config_text != NULL && strcmp(j.copies[i], "config.json") == 0)
			r = export_write_text(tmp, "config.json", j.config_text, strlen(j.config_text), err);
		else
			r = copy_file(m->dir, tmp, j.copies[i], err);
		if (r < 0)
			goto out;
	}
	if (export_write_text(tmp, "masq-provenance.json", j.prov_text, strlen(j.prov_text), err) < 0)
		goto out;
	if (j.fmt->write_files != NULL && j.fmt->write_files(&j, tmp, err) < 0)
		goto out;
	if (fsync_dir(tmp) != 0) {
		masq_err_set(err, MASQ_ERR_IO, "%s: fsync: %s", tmp, strerror(errno));
		goto out;
	}
	if (rename_noreplace(tmp, out) != 0) {
		int e = errno;
		masq_err_set(err, MASQ_ERR_IO, "%s: cannot move the finished export into place: %s", out,
		    strerror(e));
		goto out;
	}
	made = 0;
	fsync_dir(parent);
	if (rep != NULL)
		*rep = j.rep;
	rc = 0;
out:
	if (made)
		masq_remove_flat_dir(tmp);
	if (rc < 0 && err != NULL && err->status == MASQ_OK)
		masq_err_set(err, MASQ_ERR_INTERNAL, "export failed");
	job_free(&j);
	free(tmp);
	free(parent);
	free(out);
	return rc;
}

char *
export_preview(const model *m, export_plan_fn plan_fn, void *ctx, const export_opts *o,
    export_report *rep, masq_err *err)
{
	xjob j;
	json_t *a;
	char *s;

	if (job_init(&j, m, plan_fn, ctx, o, err) < 0) {
		job_free(&j);
		return NULL;
	}
	a = json_array();
	for (int pass = 0; pass < 2; pass++) {
		const otensor *v = pass == 0 ? j.t : j.side;
		int n = pass == 0 ? j.nt : j.nside;
		for (int i = 0; i < n; i++) {
			json_t *sh = json_array();
			for (int d = 0; d < v[i].ndim; d++)
				json_array_append_new(sh, json_integer(v[i].shape[d]));
			json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:o}", "file",
			    pass == 0 ? j.shard_file[v[i].shard] : "masquant.safetensors", "name", v[i].name,
			    "dtype", st_dtype_name(v[i].dtype), "shape", sh));
		}
	}
	s = json_dumps(a, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(a);
	if (s == NULL)
		fatal("out of memory");
	if (rep != NULL)
		*rep = j.rep;
	job_free(&j);
	return s;
}
