/*
 * test_model.c: config.json parsing for the Qwen2 / Llama family as it
 * appears at the top level, under text_config (Qwen2.5-VL) and under
 * thinker_config.text_config (Qwen2.5-Omni), and its errors.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/model.h"
#include "tests/tap.h"

static char dir[512];

static const char *
write_cfg(const char *name, const char *text)
{
	static char path[600];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *fp = fopen(path, "w");
	if (fp == NULL) {
		perror(path);
		exit(99);
	}
	fputs(text, fp);
	fclose(fp);
	return path;
}

static void
expect_error(const char *name, const char *text, const char *needle)
{
	model_config c;
	masq_err err = {0};
	int rc = model_config_load(&c, write_cfg(name, text), &err);
	tap_ok(rc < 0 && err.status == MASQ_ERR_FORMAT, "%s is rejected as a format error", name);
	tap_contains(err.msg, needle, name);
	tap_contains(err.msg, name, "the message names the file");
}

int
main(void)
{
	const char *b = getenv("builddir");
	model_config c;
	masq_err err = {0};
	char cmd[700];

	snprintf(dir, sizeof dir, "%s/work/test_model", b ? b : ".");
	snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
	if (system(cmd) != 0)
		return 99;

	/* Qwen2.5-VL-3B as transformers >= 4.52 writes it (abridged). */
	tap_ok(model_config_load(&c, write_cfg("vl.json",
	    "{\"architectures\": [\"Qwen2_5_VLForConditionalGeneration\"], \"model_type\": \"qwen2_5_vl\","
	    " \"image_token_id\": 151655, \"vision_config\": {\"hidden_size\": 1280},"
	    " \"text_config\": {\"model_type\": \"qwen2_5_vl_text\", \"hidden_size\": 2048,"
	    " \"intermediate_size\": 11008, \"num_hidden_layers\": 36, \"num_attention_heads\": 16,"
	    " \"num_key_value_heads\": 2, \"rms_norm_eps\": 1e-06, \"rope_theta\": 1000000.0,"
	    " \"vocab_size\": 151936, \"rope_scaling\": {\"type\": \"mrope\", \"mrope_section\": [16, 24, 24]}},"
	    " \"tie_word_embeddings\": true}"), &err) == 0, "Qwen2.5-VL text_config parses");
	tap_ok(c.hidden == 2048 && c.intermediate == 11008 && c.n_layers == 36 && c.n_heads == 16 &&
	    c.n_kv_heads == 2 && c.head_dim == 128 && c.vocab == 151936, "VL sizes");
	tap_ok(c.mrope && c.mrope_section[0] == 16 && c.mrope_section[1] == 24 &&
	    c.mrope_section[2] == 24, "VL mrope section");
	tap_ok(c.tied_embeddings, "tie_word_embeddings found at the top level");
	tap_streq(c.text_source, "text_config", "text config source");
	tap_streq(c.arch, "Qwen2_5_VLForConditionalGeneration", "architecture");
	tap_near(c.rope_theta, 1e6, 0, "rope theta");
	tap_near(c.rms_eps, 1e-6, 1e-12, "rms eps");

	/* Older Qwen2.5-VL: everything at the top level. */
	tap_ok(model_config_load(&c, write_cfg("vl-flat.json",
	    "{\"architectures\": [\"Qwen2_5_VLForConditionalGeneration\"], \"hidden_size\": 3584,"
	    " \"intermediate_size\": 18944, \"num_hidden_layers\": 28, \"num_attention_heads\": 28,"
	    " \"num_key_value_heads\": 4, \"rope_scaling\": {\"type\": \"mrope\", \"mrope_section\": [16, 24, 24]}}"),
	    &err) == 0 && c.hidden == 3584 && c.head_dim == 128 && c.mrope && c.text_source[0] == '\0',
	    "flat Qwen2.5-VL-7B config parses");

	/* Qwen2.5-Omni: thinker_config.text_config. */
	tap_ok(model_config_load(&c, write_cfg("omni.json",
	    "{\"architectures\": [\"Qwen2_5OmniModel\"], \"thinker_config\": {\"audio_token_index\": 151646,"
	    " \"text_config\": {\"hidden_size\": 2048, \"intermediate_size\": 11008, \"num_hidden_layers\": 36,"
	    " \"num_attention_heads\": 16, \"num_key_value_heads\": 2, \"rope_theta\": 1000000.0,"
	    " \"rope_scaling\": {\"mrope_section\": [16, 24, 24], \"rope_type\": \"default\", \"type\": \"default\"}}},"
	    " \"talker_config\": {\"hidden_size\": 896}}"), &err) == 0, "Qwen2.5-Omni thinker config parses");
	tap_ok(c.hidden == 2048 && c.n_layers == 36 && c.mrope, "Omni sizes come from the thinker, not the talker");
	tap_streq(c.text_source, "thinker_config.text_config", "Omni text config source");

	/* Llama: explicit head_dim, no mrope. */
	tap_ok(model_config_load(&c, write_cfg("llama.json",
	    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 4096,"
	    " \"intermediate_size\": 14336, \"num_hidden_layers\": 32, \"num_attention_heads\": 32,"
	    " \"num_key_value_heads\": 8, \"head_dim\": 128, \"rms_norm_eps\": 1e-05, \"rope_theta\": 500000.0,"
	    " \"hidden_act\": \"silu\", \"vocab_size\": 128256}"), &err) == 0 && !c.mrope &&
	    c.n_kv_heads == 8 && c.head_dim == 128 && !c.tied_embeddings, "Llama config parses");

	expect_error("bad.json", "{\"hidden_size\": 64,", "invalid JSON");
	expect_error("nohidden.json", "{\"num_hidden_layers\": 2}", "\"hidden_size\"");
	expect_error("heads.json", "{\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2,"
	    " \"num_attention_heads\": 4, \"num_key_value_heads\": 3}", "not a multiple");
	expect_error("mrope.json", "{\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2,"
	    " \"num_attention_heads\": 4, \"rope_scaling\": {\"mrope_section\": [2, 3, 4]}}", "sums to 9");
	expect_error("huge.json", "{\"hidden_size\": 99999999999, \"intermediate_size\": 128,"
	    " \"num_hidden_layers\": 2, \"num_attention_heads\": 4}", "out of range");
	expect_error("act.json", "{\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2,"
	    " \"num_attention_heads\": 4, \"hidden_act\": \"gelu\"}", "not supported");
	expect_error("dup.json", "{\"hidden_size\": 64, \"hidden_size\": 32}", "duplicate");
	expect_error("yarn.json", "{\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2,"
	    " \"num_attention_heads\": 4, \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}}",
	    "not supported");

	tap_ok(lin_parse("q") == LIN_Q && lin_parse("down_proj") == LIN_DOWN &&
	    lin_parse("mlp.up_proj") == LIN_UP && lin_parse("x") == -1, "linear names parse");
	return tap_done();
}
