/*
 * cmd_inspect.c: masq inspect PATH [--json]: what a model directory, a
 * calibration set or any safetensors file holds.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "core/calib.h"
#include "core/engine.h"
#include "core/model.h"
#include "core/safetensors.h"
#include "src/cli.h"


static json_t *
shape_json(const st_tensor *t)
{
	json_t *a = json_array();
	for (int i = 0; i < t->ndim; i++)
		json_array_append_new(a, json_integer(t->shape[i]));
	return a;
}

static void
shape_print(const st_tensor *t)
{
	printf("[");
	for (int i = 0; i < t->ndim; i++)
		printf("%s%lld", i ? ", " : "", (long long)t->shape[i]);
	printf("]");
}

static int
inspect_model(const char *dir, const char *prefix, int json)
{
	model m;
	masq_err err = {0};
	uint64_t dt_count[ST_DTYPE_COUNT] = {0}, decoder = 0, other = 0;
	int n_other = 0;

	if (model_open_prefix(&m, dir, prefix, &err) < 0)
		return cli_fail(&err);
	const model_config *c = &m.cfg;
	/* every value, once: a NaN or an infinity is a corrupt checkpoint */
	for (int i = 0; i < m.st.ntensors; i++) {
		int64_t bad;
		double v;
		if (model_tensor_check_finite(m.st.index[i], &bad, &v)) {
			masq_err_set(&err, MASQ_ERR_FORMAT, "tensor %s: element %lld is %g, not a finite number: the checkpoint is corrupt",
			    m.st.index[i]->name, (long long)bad, v);
			model_close(&m);
			return cli_fail(&err);
		}
	}
	for (int i = 0; i < m.st.ntensors; i++) {
		const st_tensor *t = m.st.index[i];
		dt_count[t->dtype] += t->nelem;
		if (strncmp(t->name, m.prefix, strlen(m.prefix)) == 0)
			decoder += t->nelem;
		else {
			other += t->nelem;
			n_other++;
		}
	}
	if (json) {
		json_t *d = json_object(), *a, *ls = json_array();
		json_object_set_new(d, "kind", json_string("model"));
		json_object_set_new(d, "path", json_string(dir));
		json_object_set_new(d, "architecture", json_string(c->arch));
		json_object_set_new(d, "model_type", json_string(c->model_type));
		json_object_set_new(d, "text_config", json_string(c->text_source));
		json_object_set_new(d, "layer_prefix", json_string(m.prefix));
		json_object_set_new(d, "layers", json_integer(c->n_layers));
		json_object_set_new(d, "hidden_size", json_integer(c->hidden));
		json_object_set_new(d, "intermediate_size", json_integer(c->intermediate));
		json_object_set_new(d, "num_attention_heads", json_integer(c->n_heads));
		json_object_set_new(d, "num_key_value_heads", json_integer(c->n_kv_heads));
		json_object_set_new(d, "head_dim", json_integer(c->head_dim));
		json_object_set_new(d, "vocab_size", json_integer(c->vocab));
		json_object_set_new(d, "rms_norm_eps", json_real(c->rms_eps));
		json_object_set_new(d, "rope_theta", json_real(c->rope_theta));
		a = json_array();
		if (c->mrope)
			for (int i = 0; i < 3; i++)
				json_array_append_new(a, json_integer(c->mrope_section[i]));
		json_object_set_new(d, "mrope_section", a);
		json_object_set_new(d, "mrope_interleaved", json_boolean(c->mrope_interleaved));
		json_object_set_new(d, "qk_norm", json_boolean(c->qk_norm));
		json_object_set_new(d, "qkv_bias", json_boolean(c->qkv_bias));
		json_object_set_new(d, "tie_word_embeddings", json_boolean(c->tied_embeddings));
		json_object_set_new(d, "shards", json_integer(m.st.nfiles));
		json_object_set_new(d, "tensors", json_integer(m.st.ntensors));
		json_object_set_new(d, "parameters", json_integer((json_int_t)model_param_count(&m)));
		json_object_set_new(d, "decoder_parameters", json_integer((json_int_t)decoder));
		json_object_set_new(d, "other_parameters", json_integer((json_int_t)other));
		json_t *dts = json_object();
		for (int i = 0; i < ST_DTYPE_COUNT; i++)
			if (dt_count[i])
				json_object_set_new(dts, st_dtype_name((st_dtype)i), json_integer((json_int_t)dt_count[i]));
		json_object_set_new(d, "dtypes", dts);
		for (int k = 0; k < LIN_COUNT; k++) {
			int out, in;
			layer_lin_shape(c, k, &out, &in);
			json_t *o = json_object();
			json_object_set_new(o, "name", json_string(lin_path(k)));
			json_object_set_new(o, "out", json_integer(out));
			json_object_set_new(o, "in", json_integer(in));
			json_array_append_new(ls, o);
		}
		json_object_set_new(d, "linears", ls);
		json_t *srcs = json_object();
		for (int i = 0; i < CFG_NSRC; i++)
			json_object_set_new(srcs, cfg_src_names[i], json_string(c->src[i]));
		json_object_set_new(d, "sources", srcs);
		json_object_set_new(d, "embed_tokens", m.embed_name ? json_string(m.embed_name) : json_null());
		json_object_set_new(d, "lm_head", m.lm_head_name ? json_string(m.lm_head_name) : json_null());
		json_dumpf(d, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		printf("\n");
		json_decref(d);
	} else {
		printf("model          %s\n", dir);
		printf("architecture   %s (%s%s%s)\n", c->arch[0] ? c->arch : "?",
		    c->model_type[0] ? c->model_type : "?", c->text_source[0] ? ", from " : "",
		    c->text_source);
		printf("layers         %d under %s\n", c->n_layers, m.prefix);
		printf("hidden         %d, intermediate %d, vocab %d\n", c->hidden, c->intermediate, c->vocab);
		printf("attention      %d heads, %d KV heads, head dim %d, q/k/v bias %s%s\n", c->n_heads,
		    c->n_kv_heads, c->head_dim, c->qkv_bias ? "yes" : "no",
		    c->qk_norm ? ", per-head q/k RMSNorm (Qwen3)" : "");
		if (c->mrope)
			printf("rope           theta %g, multimodal sections t %d, h %d, w %d%s\n", c->rope_theta,
			    c->mrope_section[0], c->mrope_section[1], c->mrope_section[2],
			    c->mrope_interleaved ? ", interleaved (Qwen3-VL)" : "");
		else
			printf("rope           theta %g\n", c->rope_theta);
		printf("norm eps       %g; embeddings %s\n", c->rms_eps, c->tied_embeddings ? "tied" : "untied");
		printf("read from      config.json:\n");
		for (int i = 0; i < CFG_NSRC; i++)
			printf("  %-20s %s\n", cfg_src_names[i], c->src[i]);
		printf("files          %d shard%s, %d tensors\n", m.st.nfiles, m.st.nfiles == 1 ? "" : "s",
		    m.st.ntensors);
		printf("parameters     %.3fM in all: decoder layers %.3fM, other %.3fM in %d tensors\n",
		    model_param_count(&m) / 1e6, decoder / 1e6, other / 1e6, n_other);
		printf("dtypes        ");
		for (int i = 0; i < ST_DTYPE_COUNT; i++)
			if (dt_count[i])
				printf(" %s %.3fM", st_dtype_name((st_dtype)i), dt_count[i] / 1e6);
		printf("\nlinears per layer (out x in):\n");
		for (int k = 0; k < LIN_COUNT; k++) {
			int out, in;
			layer_lin_shape(c, k, &out, &in);
			printf("  %-18s %6d x %-6d  input site %s\n", lin_path(k), out, in,
			    engine_site_name(engine_lin_site(k)));
		}
		printf("embedding      %s\nlm_head        %s\n", m.embed_name ? m.embed_name : "(none)",
		    m.lm_head_name ? m.lm_head_name : "(none)");
	}
	model_close(&m);
	return 0;
}

static int
inspect_calib(const char *path, int json)
{
	calib c;
	masq_err err = {0};
	int lmin = 0, lmax = 0;

	if (calib_load(&c, path, 0, &err) < 0)
		return cli_fail(&err);
	for (int s = 0; s < c.n_seqs; s++) {
		if (s == 0 || c.seq_lens[s] < lmin)
			lmin = c.seq_lens[s];
		if (c.seq_lens[s] > lmax)
			lmax = c.seq_lens[s];
	}
	const char *pos = !c.has_pos ? "none (0..len-1 per sequence)" :
	    c.pos_rows == 3 ? "3 rows (multimodal RoPE)" : "1 row";
	if (json) {
		json_t *d = json_object(), *mods = json_object(), *lens = json_array();
		json_object_set_new(d, "kind", json_string("calib"));
		json_object_set_new(d, "path", json_string(path));
		json_object_set_new(d, "sequences", json_integer(c.n_seqs));
		json_object_set_new(d, "tokens", json_integer(c.n_tokens));
		json_object_set_new(d, "hidden", json_integer(c.hidden));
		for (int m = 0; m < MOD_COUNT; m++)
			json_object_set_new(mods, modality_name(m), json_integer(c.n_mod[m]));
		json_object_set_new(d, "modality_tokens", mods);
		for (int s = 0; s < c.n_seqs; s++)
			json_array_append_new(lens, json_integer(c.seq_lens[s]));
		json_object_set_new(d, "seq_lens", lens);
		json_object_set_new(d, "position_rows", json_integer(c.has_pos ? c.pos_rows : 0));
		json_object_set_new(d, "deepstack", json_integer(c.n_deepstack));
		json_object_set_new(d, "format", c.format ? json_string(c.format) : json_null());
		json_object_set_new(d, "version", c.version ? json_string(c.version) : json_null());
		json_object_set_new(d, "source", c.source ? json_string(c.source) : json_null());
		json_dumpf(d, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		printf("\n");
		json_decref(d);
	} else {
		printf("calibration set %s\n", path);
		printf("sequences      %d (length %d to %d)\n", c.n_seqs, lmin, lmax);
		printf("tokens         %d, hidden %d\n", c.n_tokens, c.hidden);
		for (int m = 0; m < MOD_COUNT; m++)
			printf("  %-12s %6d tokens (%.1f%%)\n", modality_name(m), c.n_mod[m],
			    100.0 * c.n_mod[m] / c.n_tokens);
		printf("positions      %s\n", pos);
		if (c.n_deepstack > 0)
			printf("deepstack      %d features (Qwen3-VL), added after layers 0 to %d at the vision tokens\n",
			    c.n_deepstack, c.n_deepstack - 1);
		if (c.source)
			printf("source         %s\n", c.source);
		if (c.format)
			printf("format         %s version %s\n", c.format, c.version ? c.version : "?");
	}
	calib_done(&c);
	return 0;
}

static int
inspect_file(const char *path, int json)
{
	st_file f;
	masq_err err = {0};
	uint64_t bytes = 0;

	if (st_open(&f, path, &err) < 0)
		return cli_fail(&err);
	if (st_find(&f, "inputs_embeds") != NULL && st_find(&f, "modality") != NULL) {
		st_close(&f);
		return inspect_calib(path, json);
	}
	for (int i = 0; i < f.ntensors; i++)
		bytes += f.tensors[i].end - f.tensors[i].begin;
	if (json) {
		json_t *d = json_object(), *ts = json_array(), *meta = json_object();
		json_object_set_new(d, "kind", json_string("safetensors"));
		json_object_set_new(d, "path", json_string(path));
		json_object_set_new(d, "data_bytes", json_integer((json_int_t)bytes));
		for (int i = 0; i < f.nmeta; i++)
			json_object_set_new(meta, f.meta_keys[i], json_string(f.meta_values[i]));
		json_object_set_new(d, "metadata", meta);
		for (int i = 0; i < f.ntensors; i++) {
			json_t *t = json_object();
			json_object_set_new(t, "name", json_string(f.tensors[i].name));
			json_object_set_new(t, "dtype", json_string(st_dtype_name(f.tensors[i].dtype)));
			json_object_set_new(t, "shape", shape_json(&f.tensors[i]));
			json_array_append_new(ts, t);
		}
		json_object_set_new(d, "tensors", ts);
		json_dumpf(d, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		printf("\n");
		json_decref(d);
	} else {
		printf("safetensors %s: %d tensors, %llu bytes of data\n", path, f.ntensors,
		    (unsigned long long)bytes);
		for (int i = 0; i < f.nmeta; i++)
			printf("  metadata %s = %s\n", f.meta_keys[i], f.meta_values[i]);
		for (int i = 0; i < f.ntensors; i++) {
			printf("  %-48s %-5s ", f.tensors[i].name, st_dtype_name(f.tensors[i].dtype));
			shape_print(&f.tensors[i]);
			printf("\n");
		}
	}
	st_close(&f);
	return 0;
}

int
cmd_inspect(int argc, char **argv)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'},
		{"layer-prefix", required_argument, NULL, 'p'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int json = 0, c;
	const char *prefix = NULL;
	struct stat sb;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'j': json = 1; break;
		case 'p': prefix = optarg; break;
		case 'h': cli_cmd_help("inspect"); return 0;
		default:
			return cli_usage("inspect", "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc - 1)
		return cli_usage("inspect", "expected one path, got %d arguments", argc - optind);
	const char *path = argv[optind];
	if (stat(path, &sb) != 0) {
		fprintf(stderr, "masq: %s: no such file or directory\n", path);
		return 2;
	}
	return S_ISDIR(sb.st_mode) ? inspect_model(path, prefix, json) : inspect_file(path, json);
}
