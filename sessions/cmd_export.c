/*
 * cmd_export.c: the export command and the export preview: a session's
 * quantized model written by core/export from each layer's latest plan
 * blob, with a provenance file; replay checks exports without writing, or
 * writes each into a subfolder of its own.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/export.h"
#include "core/sha256.h"
#include "sessions/internal.h"

/* The export's plan callback: each layer's latest plan blob. */
static int
export_plan(void *ctx, int layer, qplan_layer *plan, masq_err *err)
{
	sess *s = ctx;
	if (s->db == NULL)
		return masq_err_set(err, MASQ_ERR_USAGE, "the session is not recorded: nothing to export");
	if (s->plan_sha == NULL || s->plan_sha[layer] == NULL)
		return masq_err_set(err, MASQ_ERR_USAGE, "layer %d has not been quantized in this session", layer);
	char *path = sess_blob_path(s, s->plan_sha[layer], err);
	if (path == NULL)
		return -1;
	int rc = qplan_read(plan, &s->m.cfg, path, err);
	free(path);
	return rc;
}

/* sha256 of every regular file under dir, as {relative name: sha}. */
static int
hash_tree(const char *dir, const char *rel, json_t *out, masq_err *err)
{
	char *path = rel[0] ? masq_path_join(dir, rel) : xstrdup(dir);
	char **names;
	int n = masq_dir_list(path, &names, err), rc = 0;

	free(path);
	if (n < 0)
		return -1;
	for (int i = 0; i < n && rc == 0; i++) {
		char *r2 = rel[0] ? masq_path_join(rel, names[i]) : xstrdup(names[i]);
		char *full = masq_path_join(dir, r2), hex[65];
		struct stat sb;
		if (stat(full, &sb) == 0 && S_ISDIR(sb.st_mode))
			rc = hash_tree(dir, r2, out, err);
		else if ((rc = sha256_file(full, hex, err)) == 0)
			json_object_set_new(out, r2, json_string(hex));
		free(r2);
		free(full);
	}
	masq_dir_list_free(names, n);
	return rc;
}

char *
sess_export_preview(sess *s, int format, export_report *rep, masq_err *err)
{
	export_opts o = {0};

	if (!s->opened) {
		masq_err_set(err, MASQ_ERR_USAGE, "no model is open (the session starts with 'open')");
		return NULL;
	}
	o.format = format;
	o.cmc_dtype = s->opts.cmc_dtype;
	return export_preview(&s->m, export_plan, s, &o, rep, err);
}

/* Replay --export DIR: where the export recorded as going to out goes,
 * DIR/<out's last name>, or DIR/<name>-<event> when an earlier export of
 * this replay took that name (a new string). */
static char *
export_target(sess *s, const char *out)
{
	char *o = xstrdup(out);
	size_t n = strlen(o);
	while (n > 1 && o[n - 1] == '/')
		o[--n] = '\0';
	const char *base = strrchr(o, '/') ? strrchr(o, '/') + 1 : o;
	if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		base = "export";
	char *t = masq_path_join(s->export_redirect, base);
	size_t i;
	json_t *e;
	json_array_foreach(s->exports_done, i, e)
		if (strcmp(json_string_value(json_object_get(e, "dir")), t) == 0) {
			char name[300];
			snprintf(name, sizeof name, "%s-%lld", base, (long long)s->cur_event);
			free(t);
			t = masq_path_join(s->export_redirect, name);
			break;
		}
	free(o);
	return t;
}

/* What the export weighs: its tensor data, the compensation's share, and
 * the source checkpoint's. */
static void
export_sizes_json(const export_report *rep, json_t *res)
{
	json_t *b = json_pack("{s:I, s:I, s:I, s:I}", "tensors", (json_int_t)rep->planned_bytes,
	    "compensation", (json_int_t)rep->cmc_bytes, "source", (json_int_t)rep->source_bytes,
	    "source_weights", (json_int_t)rep->source_weight_bytes);
	for (int p = 0; p < EXPORT_PART_COUNT; p++)
		json_object_set_new(b, export_part_name(p), json_integer((json_int_t)rep->part_bytes[p]));
	json_object_set_new(res, "bytes", b);
}

void
sess_export_sizes(const json_t *res, export_report *r)
{
	const json_t *b = json_object_get(res, "bytes");
	memset(r, 0, sizeof *r);
	r->planned_bytes = (uint64_t)json_integer_value(json_object_get(b, "tensors"));
	r->cmc_bytes = (uint64_t)json_integer_value(json_object_get(b, "compensation"));
	r->source_bytes = (uint64_t)json_integer_value(json_object_get(b, "source"));
	r->source_weight_bytes = (uint64_t)json_integer_value(json_object_get(b, "source_weights"));
	for (int p = 0; p < EXPORT_PART_COUNT; p++)
		r->part_bytes[p] = (uint64_t)json_integer_value(json_object_get(b, export_part_name(p)));
}

sess_retval
scmd_export(sess *s, json_t *args, json_t *res, masq_err *err)
{
	const char *fmt = sess_arg_str(args, "format", "masquant"), *out = sess_arg_str(args, "out", NULL);
	export_opts o = {0};
	export_report rep;

	o.cmc_dtype = s->opts.cmc_dtype;
	if ((o.format = export_format_parse(fmt)) < 0)
		return masq_err_set(err, MASQ_ERR_USAGE, "unknown export format '%s' (fake, compressed-tensors, masquant)", fmt);
	if (out == NULL || *out == '\0')
		return masq_err_set(err, MASQ_ERR_USAGE, "export needs an output directory");
	if (s->db == NULL)
		return masq_err_set(err, MASQ_ERR_USAGE, "export needs a recorded session (its plans live beside the database)");
	if (s->skip_exports) {
		/* replay without --export: everything the export checks, nothing
		 * written (the file system is not part of what replays) */
		char *t = export_preview(&s->m, export_plan, s, &o, &rep, err);
		if (t == NULL)
			return SESS_ERROR;
		free(t);
		json_object_set_new(res, "skipped", json_true());
		export_sizes_json(&rep, res);
		return SESS_SKIPPED;
	}
	char *target = s->export_redirect != NULL ? export_target(s, out) : xstrdup(out);
	json_t *prov = json_object();
	json_object_set_new(prov, "masq_version", json_string(PACKAGE_VERSION));
	json_object_set_new(prov, "session", json_integer(s->id));
	json_object_set_new(prov, "database", json_string(sdb_path(s->db)));
	json_object_set_new(prov, "model_fp", json_string(s->model_fp));
	json_object_set_new(prov, "calib_fp", json_string(s->calib_fp));
	json_object_set_new(prov, "settings", sess_opts_json(&s->opts));
	json_object_set_new(prov, "format", json_string(fmt));
	char *ptext = json_dumps(prov, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(prov);
	o.provenance = ptext;
	int rc = export_write(&s->m, export_plan, s, &o, target, &rep, err);
	free(ptext);
	if (rc == 0 && s->export_redirect != NULL) {
		if (s->exports_done == NULL)
			s->exports_done = json_array();
		json_array_append_new(s->exports_done, json_pack("{s:I, s:s, s:s}", "event", (json_int_t)s->cur_event,
		    "format", fmt, "dir", target));
	}
	json_t *files = json_object();
	if (rc == 0 && hash_tree(target, "", files, err) < 0)
		rc = -1;
	free(target);
	if (rc < 0) {
		json_decref(files);
		return SESS_ERROR;
	}
	json_object_set_new(res, "format", json_string(fmt));
	json_object_set_new(res, "files", files);
	json_object_set_new(res, "dropped", json_string(rep.dropped));
	export_sizes_json(&rep, res);
	return SESS_OK;
}
