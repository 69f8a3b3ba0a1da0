/*
 * cmd_calib.c: masq calib: a calibration set (masq-calib(5)) from prompts
 * and images, for Qwen2.5-VL, with no Python: the chat template
 * (core/chat.c), the tokenizer (core/tokenizer.c), Pillow's pixels and the
 * image processor (core/image.c), the vision tower (core/vision.c), the
 * language model's embedding table and get_rope_index's positions.
 *
 * Two passes: the first reads every sample, renders and tokenizes it and
 * sizes its images from their headers, so a bad sample is refused before
 * anything is computed and the file's tensors can be declared; the second
 * runs the tower over chunks of images (one block of weights at a time, a
 * chunk's patches bounded) and streams the embeddings out.  The file is
 * written beside its name and renamed when complete.
 */
#include "config.h"

#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/calib.h"
#include "core/chat.h"
#include "core/dtype.h"
#include "core/engine.h"
#include "core/image.h"
#include "core/model.h"
#include "core/safetensors.h"
#include "core/tokenizer.h"
#include "core/vision.h"
#include "src/cli.h"

#define CHUNK_PATCHES (1 << 16)	/* patches the tower runs at once (x hidden floats a block) */
#define MAX_SAMPLES 1000000

typedef struct sample {
	int line;		/* in the prompts file */
	int n_img;
	char **img;		/* paths */
	int (*grid)[3];		/* each image's patch grid */
	int (*size)[2];		/* resized (h, w) */
	tok_ids ids;		/* the prompt's ids, each image pad once */
	int n_tokens;		/* with the image pads expanded */
	int first_img;		/* index of its first image among all */
} sample;

typedef struct calib_args {
	const char *model, *prompts, *out, *images;
	long min_pixels, max_pixels, threads;
	int json, dry_run;
} calib_args;

typedef struct calib_job {
	calib_args a;
	masq_tok *tok;
	vl_preproc pp;
	char *tmpl;
	int32_t image_tok, vstart_tok;
	sample *s;
	int n;
	int n_img_total;
	long tokens[MOD_COUNT];
} calib_job;

static int fail_sample(masq_err *err, const calib_job *j, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int
fail_sample(masq_err *err, const calib_job *j, int line, const char *fmt, ...)
{
	char m[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m, sizeof m, fmt, ap);
	va_end(ap);
	return masq_err_set(err, MASQ_ERR_FORMAT, "%s, line %d: %.900s", j->a.prompts, line, m);
}

/* the path of image name of a sample: absolute, under --images, or beside
 * the prompts file */
static char *
image_path(const calib_job *j, const char *name)
{
	if (name[0] == '/')
		return xstrdup(name);
	if (j->a.images != NULL)
		return masq_path_join(j->a.images, name);
	const char *slash = strrchr(j->a.prompts, '/');
	if (slash == NULL)
		return xstrdup(name);
	char *dir = xstrdup(j->a.prompts);
	dir[slash - j->a.prompts] = '\0';
	char *p = masq_path_join(dir, name);
	free(dir);
	return p;
}

static int
count_marks(const char *s)
{
	int n = 0;
	for (const char *p = s; (p = strstr(p, "<image>")) != NULL; p += 7)
		n++;
	return n;
}

/* One line of the prompts file into s: parsed, checked, rendered,
 * tokenized, its images sized. */
static int
read_sample(calib_job *j, json_t *o, int line, sample *s, masq_err *err)
{
	const char *key;
	json_t *v;
	memset(s, 0, sizeof *s);
	s->line = line;
	if (!json_is_object(o))
		return fail_sample(err, j, line, "%s", "not a JSON object");
	json_object_foreach(o, key, v) {
		if (strcmp(key, "videos") == 0 || strcmp(key, "audio") == 0)
			return fail_sample(err, j, line, "'%s': masq calib takes images; video and audio still need "
			    "masq-capture (masq-calib(5))", key);
		if (strcmp(key, "text") != 0 && strcmp(key, "images") != 0 && strcmp(key, "system") != 0 &&
		    strcmp(key, "prompt") != 0)
			return fail_sample(err, j, line, "unknown key '%s' (text, images, system, prompt)", key);
	}
	json_t *text = json_object_get(o, "text"), *system = json_object_get(o, "system");
	json_t *prompt = json_object_get(o, "prompt"), *images = json_object_get(o, "images");
	if ((text != NULL && !json_is_string(text)) || (system != NULL && !json_is_string(system)) ||
	    (prompt != NULL && !json_is_string(prompt)))
		return fail_sample(err, j, line, "%s", "text, system and prompt must be strings");
	if (prompt != NULL && (text != NULL || system != NULL))
		return fail_sample(err, j, line, "%s", "prompt is the whole prompt: not with text or system");
	if (prompt == NULL && text == NULL)
		return fail_sample(err, j, line, "%s", "neither text nor prompt");
	if (images != NULL && !json_is_array(images))
		return fail_sample(err, j, line, "%s", "images must be a list of file names");
	s->n_img = (int)json_array_size(images);
	if (s->n_img > 4096)
		return fail_sample(err, j, line, "%s", "more than 4096 images");
	s->img = xcalloc((size_t)s->n_img + 1, sizeof *s->img);
	s->grid = xcalloc((size_t)s->n_img + 1, sizeof *s->grid);
	s->size = xcalloc((size_t)s->n_img + 1, sizeof *s->size);
	for (int i = 0; i < s->n_img; i++) {
		json_t *e = json_array_get(images, (size_t)i);
		if (!json_is_string(e) || json_string_length(e) == 0)
			return fail_sample(err, j, line, "%s", "images must be a list of file names");
		s->img[i] = image_path(j, json_string_value(e));
		int w, h;
		masq_err ie = {0};
		if (image_probe(s->img[i], &w, &h, &ie) < 0 ||
		    vl_smart_resize(&j->pp, h, w, &s->size[i][0], &s->size[i][1], &ie) < 0)
			return fail_sample(err, j, line, "%s", ie.msg);
		if (!j->pp.do_resize) {
			if (h % (j->pp.patch * j->pp.merge) || w % (j->pp.patch * j->pp.merge))
				return fail_sample(err, j, line, "%s", "an image whose sides are not multiples of patch x "
				    "merge, with do_resize off");
			s->size[i][0] = h, s->size[i][1] = w;
		}
		s->grid[i][0] = 1;
		s->grid[i][1] = s->size[i][0] / j->pp.patch;
		s->grid[i][2] = s->size[i][1] / j->pp.patch;
	}

	/* the prompt */
	char *p;
	if (prompt != NULL) {
		p = xstrdup(json_string_value(prompt));
	} else {
		if (j->tmpl == NULL || !chat_is_qwen2vl(j->tmpl))
			return fail_sample(err, j, line, "%s", "the model's chat template is not Qwen2-VL's, the one masq "
			    "renders; give the prompt in full (\"prompt\")");
		const char *t = json_string_value(text);
		int marks = count_marks(t);
		if (marks > 0 && marks != s->n_img) {
			char m[128];
			snprintf(m, sizeof m, "%d <image> markers for %d images", marks, s->n_img);
			return fail_sample(err, j, line, "%s", m);
		}
		/* images where the markers are, else first */
		chat_part *parts = xcalloc((size_t)(2 * s->n_img + 2), sizeof *parts);
		char *copy = xstrdup(t);
		int np = 0;
		if (marks == 0)
			for (int i = 0; i < s->n_img; i++)
				parts[np++] = (chat_part){CHAT_IMAGE, NULL};
		char *q = copy, *m;
		while ((m = strstr(q, "<image>")) != NULL) {
			*m = '\0';
			if (*q)
				parts[np++] = (chat_part){CHAT_TEXT, q};
			parts[np++] = (chat_part){CHAT_IMAGE, NULL};
			q = m + 7;
		}
		if (*q)
			parts[np++] = (chat_part){CHAT_TEXT, q};
		p = chat_render_qwen2vl(system ? json_string_value(system) : NULL, parts, np, 1);
		free(parts);
		free(copy);
	}
	masq_err te = {0};
	int rc = tok_encode(j->tok, p, strlen(p), 0, &s->ids, &te);
	free(p);
	if (rc < 0)
		return fail_sample(err, j, line, "%s", te.msg);
	int pads = 0;
	for (size_t i = 0; i < s->ids.n; i++)
		pads += s->ids.v[i] == j->image_tok;
	if (pads != s->n_img) {
		char m[160];
		snprintf(m, sizeof m, "the prompt has %d image placeholders for %d images", pads, s->n_img);
		return fail_sample(err, j, line, "%s", m);
	}
	s->n_tokens = (int)s->ids.n - pads;
	int mm = j->pp.merge * j->pp.merge;
	for (int i = 0; i < s->n_img; i++)
		s->n_tokens += s->grid[i][1] * s->grid[i][2] / mm;
	return 0;
}

static void
samples_free(calib_job *j)
{
	for (int i = 0; i < j->n; i++) {
		for (int k = 0; k < j->s[i].n_img; k++)
			free(j->s[i].img[k]);
		free(j->s[i].img);
		free(j->s[i].grid);
		free(j->s[i].size);
		tok_ids_free(&j->s[i].ids);
	}
	free(j->s);
}

static int
read_samples(calib_job *j, masq_err *err)
{
	int fd = masq_open_regular(j->a.prompts, err);
	if (fd < 0)
		return -1;
	FILE *fp = fdopen(fd, "r");
	char *line = NULL;
	size_t cap = 0, sc = 0;
	ssize_t len;
	int ln = 0, rc = 0;
	while (rc == 0 && (len = getline(&line, &cap, fp)) >= 0) {
		ln++;
		size_t k = 0;
		while (k < (size_t)len && (line[k] == ' ' || line[k] == '\t' || line[k] == '\n' || line[k] == '\r'))
			k++;
		if (k == (size_t)len)
			continue;	/* a blank line */
		json_error_t je;
		json_t *o = json_loadb(line, (size_t)len, JSON_REJECT_DUPLICATES, &je);
		if (o == NULL) {
			rc = masq_err_set(err, MASQ_ERR_FORMAT, "%s, line %d: not JSON: %s", j->a.prompts, ln, je.text);
			break;
		}
		if ((size_t)j->n == sc) {
			sc = sc ? 2 * sc : 64;
			j->s = xrealloc(j->s, xmul(sc, sizeof *j->s));
		}
		rc = read_sample(j, o, ln, &j->s[j->n], err);
		j->s[j->n].first_img = j->n_img_total;
		j->n_img_total += j->s[j->n].n_img;
		j->n++;
		json_decref(o);
		if (j->n > MAX_SAMPLES)
			rc = masq_err_set(err, MASQ_ERR_FORMAT, "%s: more than %d samples", j->a.prompts, MAX_SAMPLES);
	}
	free(line);
	fclose(fp);
	if (rc == 0 && j->n == 0)
		rc = masq_err_set(err, MASQ_ERR_FORMAT, "%s: no samples", j->a.prompts);
	return rc;
}

/* one row of the embedding table in float32 */
static void
embed_row(const st_tensor *t, int64_t row, int hidden, float *out)
{
	const char *p = (const char *)t->data + (size_t)row * hidden * st_dtype_size(t->dtype);
	for (int k = 0; k < hidden; k++) {
		switch (t->dtype) {
		case ST_F32: memcpy(&out[k], p + 4 * k, 4); break;
		case ST_BF16: { uint16_t h; memcpy(&h, p + 2 * k, 2); out[k] = bf16_to_f32(h); break; }
		case ST_F16: { uint16_t h; memcpy(&h, p + 2 * k, 2); out[k] = f16_to_f32(h); break; }
		default: { double d; memcpy(&d, p + 8 * k, 8); out[k] = (float)d; break; }
		}
	}
}

static void
progress(const calib_job *j, int done, double t0, int tty, int final)
{
	double dt = masq_now() - t0, rate = dt > 0 ? done / dt : 0;
	double left = rate > 0 ? (j->n_img_total - done) / rate : 0;
	fprintf(stderr, "%smasq calib: %d/%d images, %.2f images/s, %d:%02d left%s", tty ? "\r" : "", done,
	    j->n_img_total, rate, (int)left / 60, (int)left % 60, tty && !final ? "" : "\n");
	fflush(stderr);
}

static int
calib_write(calib_job *j, model *m, vit_model *v, const char *tmp, double *tower_s, masq_err *err)
{
	int hidden = m->cfg.hidden, mm = j->pp.merge * j->pp.merge, rc = -1;
	const st_tensor *emb = st_set_find(&m->st, m->embed_name);
	long total = 0;
	for (int i = 0; i < j->n; i++)
		total += j->s[i].n_tokens;
	if (total > INT32_MAX / 2)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%ld tokens in all: more than a calibration set holds", total);
	st_writer *w = st_writer_new();
	uint8_t *mod = xmalloc((size_t)total);
	int32_t *lens = xmalloc(xmul((size_t)j->n, sizeof *lens));
	int64_t *pos = xmalloc(xmul((size_t)total * 3, sizeof *pos));
	char src[512];
	snprintf(src, sizeof src, "masq calib %s: %d samples, %d images from %s", PACKAGE_VERSION, j->n,
	    j->n_img_total, j->a.prompts);
	/* the writer aligns each tensor to its element: wider ones first */
	if (st_writer_add(w, "inputs_embeds", ST_F32, 2, (const int64_t[]){total, hidden}, err) < 0 ||
	    st_writer_add(w, "position_ids", ST_I64, 2, (const int64_t[]){3, total}, err) < 0 ||
	    st_writer_add(w, "seq_lens", ST_I32, 1, (const int64_t[]){j->n}, err) < 0 ||
	    st_writer_add(w, "modality", ST_U8, 1, (const int64_t[]){total}, err) < 0 ||
	    st_writer_meta(w, "calib_format", "masq-calib", err) < 0 ||
	    st_writer_meta(w, "calib_version", "1", err) < 0 || st_writer_meta(w, "source", src, err) < 0 ||
	    st_writer_begin(w, tmp, err) < 0)
		goto done;

	float *row = xmalloc(xmul((size_t)hidden, sizeof *row));
	int tty = isatty(2), done_img = 0;
	double t0 = masq_now();
	long at = 0;
	for (int s0 = 0; s0 < j->n;) {
		/* a chunk: whole samples, up to CHUNK_PATCHES patches (at least one sample) */
		int s1 = s0, patches = 0;
		while (s1 < j->n) {
			int p = 0;
			for (int k = 0; k < j->s[s1].n_img; k++)
				p += j->s[s1].grid[k][1] * j->s[s1].grid[k][2];
			if (s1 > s0 && patches + p > CHUNK_PATCHES)
				break;
			patches += p;
			s1++;
		}
		int ni = j->s[s1 - 1].first_img + j->s[s1 - 1].n_img - j->s[s0].first_img;
		float **px = xcalloc((size_t)ni + 1, sizeof *px), **feat = xcalloc((size_t)ni + 1, sizeof *feat);
		int (*grid)[3] = xcalloc((size_t)ni + 1, sizeof *grid);
		int k = 0, bad = 0;
		for (int s = s0; s < s1 && !bad; s++)
			for (int q = 0; q < j->s[s].n_img && !bad; q++, k++) {
				masq_image im, r;
				masq_err ie = {0};
				if (image_load(&im, j->s[s].img[q], &ie) < 0) {
					fail_sample(err, j, j->s[s].line, "%s", ie.msg);
					bad = 1;
					break;
				}
				if (j->pp.do_resize)
					image_resize(&im, j->s[s].size[q][1], j->s[s].size[q][0], j->pp.resample, &r);
				else
					r = im, im.rgb = NULL;
				image_free(&im);
				int g[3];
				vl_patchify(&j->pp, &r, &px[k], g);
				image_free(&r);
				memcpy(grid[k], j->s[s].grid[q], sizeof grid[k]);
				MASQ_ASSERT(g[1] == grid[k][1] && g[2] == grid[k][2]);
			}
		double tv = masq_now();
		if (!bad && vit_forward(v, ni, px, (const int (*)[3])grid, feat, 0, NULL, NULL, err) < 0)
			bad = 1;
		*tower_s += masq_now() - tv;
		for (int q = 0; q < ni; q++)
			free(px[q]);
		free(px);
		/* the chunk's samples, token by token */
		k = 0;
		for (int s = s0; s < s1 && !bad; s++) {
			sample *S = &j->s[s];
			int32_t *ids = xmalloc(xmul((size_t)S->n_tokens, sizeof *ids));
			int t = 0, img = 0;
			for (size_t i = 0; i < S->ids.n && !bad; i++) {
				if (S->ids.v[i] == j->image_tok) {
					int cnt = S->grid[img][1] * S->grid[img][2] / mm;
					for (int c = 0; c < cnt; c++, t++) {
						ids[t] = j->image_tok;
						mod[at + t] = MOD_VISION;
						if (st_writer_write(w, feat[k] + (size_t)c * hidden, (size_t)hidden * sizeof(float),
						    err) < 0)
							bad = 1;
					}
					img++, k++;
					continue;
				}
				int32_t id = S->ids.v[i];
				if (id < 0 || id >= emb->shape[0]) {
					char msg[160];
					snprintf(msg, sizeof msg, "token id %d is past the embedding table's %lld rows", id,
					    (long long)emb->shape[0]);
					fail_sample(err, j, S->line, "%s", msg);
					bad = 1;
					break;
				}
				embed_row(emb, id, hidden, row);
				ids[t] = id;
				mod[at + t] = MOD_TEXT;
				if (st_writer_write(w, row, (size_t)hidden * sizeof(float), err) < 0)
					bad = 1;
				t++;
			}
			if (!bad) {
				int64_t *p3 = xmalloc(xmul((size_t)S->n_tokens * 3, sizeof *p3));
				if (chat_rope_index(ids, S->n_tokens, j->image_tok, j->pp.merge, (const int (*)[3])S->grid,
				    S->n_img, p3, err) < 0)
					bad = 1;
				for (int r = 0; r < 3 && !bad; r++)
					memcpy(pos + (size_t)r * total + at, p3 + (size_t)r * S->n_tokens,
					    (size_t)S->n_tokens * sizeof *p3);
				free(p3);
			}
			free(ids);
			lens[s] = S->n_tokens;
			at += S->n_tokens;
		}
		for (int q = 0; q < ni; q++)
			free(feat[q]);
		free(feat);
		free(grid);
		if (bad) {
			free(row);
			goto done;
		}
		done_img += ni;
		progress(j, done_img, t0, tty, s1 == j->n);
		s0 = s1;
	}
	free(row);
	for (long i = 0; i < total; i++)
		j->tokens[mod[i]]++;
	if (st_writer_write(w, pos, (size_t)total * 3 * sizeof *pos, err) < 0 ||
	    st_writer_write(w, lens, (size_t)j->n * sizeof *lens, err) < 0 ||
	    st_writer_write(w, mod, (size_t)total, err) < 0 || st_writer_finish(w, err) < 0)
		goto done;
	rc = 0;
done:
	st_writer_free(w);
	free(mod);
	free(lens);
	free(pos);
	return rc;
}

/* config.json's media token ids, else the tokenizer's */
static int
token_ids(calib_job *j, const char *dir, masq_err *err)
{
	char *p = masq_path_join(dir, "config.json");
	size_t len;
	char *buf = masq_read_file(p, 16u << 20, &len, err);
	free(p);
	if (buf == NULL)
		return -1;
	json_t *o = json_loadb(buf, len, 0, NULL);
	free(buf);
	json_t *it = json_object_get(o, "image_token_id"), *vs = json_object_get(o, "vision_start_token_id");
	j->image_tok = json_is_integer(it) ? (int32_t)json_integer_value(it) : tok_id(j->tok, "<|image_pad|>");
	j->vstart_tok = json_is_integer(vs) ? (int32_t)json_integer_value(vs) : tok_id(j->tok, "<|vision_start|>");
	json_decref(o);
	if (j->image_tok < 0)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: no image_token_id in config.json and no <|image_pad|> "
		    "token in tokenizer.json", dir);
	size_t n;
	const char *piece = tok_piece(j->tok, j->image_tok, &n);
	if (piece == NULL || strncmp(piece, "<|image_pad|>", n) != 0 || n != strlen("<|image_pad|>"))
		return masq_err_set(err, MASQ_ERR_FORMAT, "%s: config.json's image_token_id %d is not the tokenizer's "
		    "<|image_pad|>", dir, j->image_tok);
	return 0;
}

int
cmd_calib(int argc, char **argv)
{
	static const struct option opts[] = {
		{"model", required_argument, NULL, 'm'},
		{"prompts", required_argument, NULL, 'p'},
		{"samples", required_argument, NULL, 'p'},
		{"out", required_argument, NULL, 'o'},
		{"images", required_argument, NULL, 'i'},
		{"min-pixels", required_argument, NULL, 'n'},
		{"max-pixels", required_argument, NULL, 'x'},
		{"threads", required_argument, NULL, 't'},
		{"json", no_argument, NULL, 'j'},
		{"dry-run", no_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	calib_job j;
	memset(&j, 0, sizeof j);
	j.a.min_pixels = j.a.max_pixels = -1;
	int c;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'm': j.a.model = optarg; break;
		case 'p': j.a.prompts = optarg; break;
		case 'o': j.a.out = optarg; break;
		case 'i': j.a.images = optarg; break;
		case 'n':
			if (cli_int("calib", "--min-pixels", optarg, 1, IMAGE_MAX_PIXELS, &j.a.min_pixels) < 0)
				return 2;
			break;
		case 'x':
			if (cli_int("calib", "--max-pixels", optarg, 1, IMAGE_MAX_PIXELS, &j.a.max_pixels) < 0)
				return 2;
			break;
		case 't':
			if (cli_int("calib", "--threads", optarg, 1, 1024, &j.a.threads) < 0)
				return 2;
			break;
		case 'j': j.a.json = 1; break;
		case 'd': j.a.dry_run = 1; break;
		case 'h': cli_cmd_help("calib"); return 0;
		default:
			return cli_usage("calib", "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return cli_usage("calib", "unexpected argument '%s'", argv[optind]);
	if (j.a.model == NULL || j.a.prompts == NULL || (j.a.out == NULL && !j.a.dry_run))
		return cli_usage("calib", "--model, --prompts and --out are required (--out not with --dry-run)");
	cli_set_threads(j.a.threads);

	masq_err err = {0};
	double t_start = masq_now(), tower_s = 0;
	model m;
	vit_model v;
	int have_m = 0, have_v = 0, rc = 2;
	char *tp = masq_path_join(j.a.model, "tokenizer.json"), *tmp = NULL;
	if (vit_open(&v, j.a.model, &err) < 0)
		goto out;
	have_v = 1;
	if (masq_check_within(j.a.model, tp, &err) < 0 || tok_load(&j.tok, tp, &err) < 0 ||
	    vl_preproc_load(&j.pp, j.a.model, &err) < 0 || token_ids(&j, j.a.model, &err) < 0)
		goto out;
	if (j.a.min_pixels > 0)
		j.pp.min_pixels = j.a.min_pixels;
	if (j.a.max_pixels > 0)
		j.pp.max_pixels = j.a.max_pixels;
	if (j.pp.min_pixels > j.pp.max_pixels) {
		masq_err_set(&err, MASQ_ERR_USAGE, "min_pixels %ld is above max_pixels %ld", j.pp.min_pixels,
		    j.pp.max_pixels);
		goto out;
	}
	if (j.pp.patch != v.cfg.patch || j.pp.merge != v.cfg.merge || j.pp.temporal != v.cfg.temporal) {
		masq_err_set(&err, MASQ_ERR_FORMAT, "%s: preprocessor_config.json's patch %d, merge %d, temporal %d are not "
		    "the vision tower's %d, %d, %d", j.a.model, j.pp.patch, j.pp.merge, j.pp.temporal, v.cfg.patch,
		    v.cfg.merge, v.cfg.temporal);
		goto out;
	}
	masq_err te = {0};
	if (chat_template_load(j.a.model, &j.tmpl, &te) < 0)
		j.tmpl = NULL;	/* only samples without a prompt need it: refused then */
	if (read_samples(&j, &err) < 0)
		goto out;
	if (j.a.dry_run) {
		for (int i = 0; i < j.n; i++) {
			printf("line %d: %d tokens, %zu of the prompt", j.s[i].line, j.s[i].n_tokens, j.s[i].ids.n);
			for (int k = 0; k < j.s[i].n_img; k++)
				printf("%s %dx%d (%d tokens)", k ? "," : ";", j.s[i].size[k][1], j.s[i].size[k][0],
				    j.s[i].grid[k][1] * j.s[i].grid[k][2] / (j.pp.merge * j.pp.merge));
			printf("\n");
		}
		rc = 0;
		goto out;
	}
	if (model_open(&m, j.a.model, &err) < 0)
		goto out;
	have_m = 1;
	if (m.embed_name == NULL) {
		masq_err_set(&err, MASQ_ERR_FORMAT, "%s: the language model has no embedding table", j.a.model);
		goto out;
	}
	if (v.cfg.out_hidden != m.cfg.hidden) {
		masq_err_set(&err, MASQ_ERR_FORMAT, "%s: the vision tower's out_hidden_size %d is not the language model's "
		    "hidden_size %d", j.a.model, v.cfg.out_hidden, m.cfg.hidden);
		goto out;
	}
	size_t tl = strlen(j.a.out) + 16;
	tmp = xmalloc(tl);
	snprintf(tmp, tl, "%s.tmp", j.a.out);
	if (calib_write(&j, &m, &v, tmp, &tower_s, &err) < 0) {
		unlink(tmp);
		goto out;
	}
	if (rename(tmp, j.a.out) != 0) {
		masq_err_set(&err, MASQ_ERR_IO, "%s: cannot rename it to %s", tmp, j.a.out);
		unlink(tmp);
		goto out;
	}
	double dt = masq_now() - t_start;
	long total = j.tokens[MOD_TEXT] + j.tokens[MOD_VISION];
	if (j.a.json) {
		json_t *o = json_pack("{s:s, s:i, s:i, s:{s:I, s:I, s:I}, s:f, s:f, s:f}", "out", j.a.out, "samples", j.n,
		    "images", j.n_img_total, "tokens", "text", (json_int_t)j.tokens[MOD_TEXT], "vision",
		    (json_int_t)j.tokens[MOD_VISION], "total", (json_int_t)total, "seconds", dt, "tower_seconds", tower_s,
		    "images_per_second", tower_s > 0 ? j.n_img_total / tower_s : 0.0);
		json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		printf("\n");
		json_decref(o);
	} else {
		printf("%s: %d samples, %d images, %ld tokens (%ld text, %ld vision) in %.1f s; the vision tower %.2f "
		    "images/s\n", j.a.out, j.n, j.n_img_total, total, j.tokens[MOD_TEXT], j.tokens[MOD_VISION], dt,
		    tower_s > 0 ? j.n_img_total / tower_s : 0.0);
	}
	rc = 0;
out:
	if (rc != 0)
		rc = cli_fail(&err);
	free(tp);
	free(tmp);
	free(j.tmpl);
	samples_free(&j);
	tok_free(j.tok);
	if (have_m)
		model_close(&m);
	if (have_v)
		vit_close(&v);
	return rc;
}
