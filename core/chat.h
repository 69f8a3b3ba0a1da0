/*
 * chat.h: the chat template of the Qwen2-VL family (Qwen2-VL, Qwen2.5-VL),
 * rendered in C for the calibration builder, and the multimodal positions
 * (get_rope_index) of a tokenized sample.  masq has no Jinja engine: a
 * model's template is recognised, byte for byte, as the one masq renders,
 * or refused (a sample can then give its prompt in full).
 *
 *	char *tmpl;
 *	if (chat_template_load(dir, &tmpl, &err) < 0) ...
 *	if (!chat_is_qwen2vl(tmpl)) ... refuse
 *	chat_part parts[] = {{CHAT_IMAGE, NULL}, {CHAT_TEXT, "What is this?"}};
 *	char *prompt = chat_render_qwen2vl(NULL, parts, 2, 1);
 */
#ifndef MASQ_CHAT_H
#define MASQ_CHAT_H

#include <stdint.h>

#include "core/util.h"

/* The template of Qwen2-VL and Qwen2.5-VL's chat_template.json, verbatim. */
extern const char chat_qwen2vl_template[];

/* The model's chat template: chat_template.json's "chat_template", else
 * tokenizer_config.json's (a string, or the entry named "default" of a
 * list).  *tmpl a new string; -1 with err when the model has none. */
int chat_template_load(const char *model_dir, char **tmpl, masq_err *err);
/* 1 when tmpl is the template chat_render_qwen2vl renders. */
int chat_is_qwen2vl(const char *tmpl);

enum { CHAT_TEXT, CHAT_IMAGE };
typedef struct chat_part {
	int kind;
	const char *text;	/* CHAT_TEXT */
} chat_part;

/* The template applied to an optional system message and one user message
 * of parts (add_vision_id false), with the assistant's turn opened when
 * add_generation_prompt; a new string. */
char *chat_render_qwen2vl(const char *system, const chat_part *parts, int n, int add_generation_prompt);

/* Qwen2.5-VL's get_rope_index for one sequence of images and text: ids
 * (n), the image_token_id's runs each one image of grid[i] (t, h, w)
 * patches, merge^2 patches a token.  pos gets (3, n): rows t, h, w.
 * Returns the number of images it placed, -1 with err when the image
 * tokens do not match the grids. */
int chat_rope_index(const int32_t *ids, int n, int32_t image_token, int merge, const int (*grid)[3], int n_images,
    int64_t *pos, masq_err *err);

#endif
