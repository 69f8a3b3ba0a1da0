/*
 * chat.c: Qwen2-VL's chat template and get_rope_index (see chat.h).
 */
#include "config.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/chat.h"

const char chat_qwen2vl_template[] =
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in "
    "messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string "
    "%}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if "
    "content['type'] == 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = "
    "image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif "
    "%}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content "
    "%}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value "
    "}}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ "
    "content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt "
    "%}<|im_start|>assistant\n{% endif %}";

static char *
template_from(const char *path, masq_err *err, int *missing)
{
	size_t len;
	masq_err quiet = {0};
	char *buf = masq_read_file(path, 16u << 20, &len, &quiet);
	*missing = buf == NULL;
	if (buf == NULL)
		return NULL;
	json_error_t je;
	json_t *o = json_loadb(buf, len, 0, &je);
	free(buf);
	char *out = NULL;
	json_t *t = json_object_get(o, "chat_template");
	if (o == NULL) {
		masq_err_set(err, MASQ_ERR_FORMAT, "%s: not JSON (line %d: %s)", path, je.line, je.text);
	} else if (json_is_string(t)) {
		out = xstrdup(json_string_value(t));
	} else if (json_is_array(t)) {
		for (size_t i = 0; i < json_array_size(t); i++) {
			json_t *e = json_array_get(t, i);
			const char *name = json_string_value(json_object_get(e, "name"));
			const char *body = json_string_value(json_object_get(e, "template"));
			if (name != NULL && body != NULL && strcmp(name, "default") == 0)
				out = xstrdup(body);
		}
		if (out == NULL)
			masq_err_set(err, MASQ_ERR_FORMAT, "%s: chat_template is a list without a \"default\" entry", path);
	} else {
		*missing = 1;
	}
	json_decref(o);
	return out;
}

int
chat_template_load(const char *model_dir, char **tmpl, masq_err *err)
{
	static const char *const files[] = {"chat_template.json", "tokenizer_config.json"};
	*tmpl = NULL;
	for (size_t i = 0; i < 2; i++) {
		char *p = masq_path_join(model_dir, files[i]);
		int missing;
		if (masq_check_within(model_dir, p, err) < 0) {
			free(p);
			return -1;
		}
		*tmpl = template_from(p, err, &missing);
		free(p);
		if (*tmpl != NULL)
			return 0;
		if (!missing)
			return -1;
	}
	return masq_err_set(err, MASQ_ERR_FORMAT, "%s: no chat template (chat_template.json or tokenizer_config.json's "
	    "chat_template); give each sample's prompt in full (\"prompt\")", model_dir);
}

int
chat_is_qwen2vl(const char *tmpl)
{
	return tmpl != NULL && strcmp(tmpl, chat_qwen2vl_template) == 0;
}

static void
cat(char **s, size_t *len, size_t *cap, const char *t)
{
	size_t n = strlen(t);
	if (*len + n + 1 > *cap) {
		*cap = (*len + n + 1) * 2;
		*s = xrealloc(*s, *cap);
	}
	memcpy(*s + *len, t, n + 1);
	*len += n;
}

char *
chat_render_qwen2vl(const char *system, const chat_part *parts, int n, int add_generation_prompt)
{
	char *s = NULL;
	size_t len = 0, cap = 0;
	cat(&s, &len, &cap, "");
	/* the first message is the system's, or the default one goes first */
	if (system == NULL) {
		cat(&s, &len, &cap, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n");
	} else {
		cat(&s, &len, &cap, "<|im_start|>system\n");
		cat(&s, &len, &cap, system);
		cat(&s, &len, &cap, "<|im_end|>\n");
	}
	cat(&s, &len, &cap, "<|im_start|>user\n");
	for (int i = 0; i < n; i++)
		cat(&s, &len, &cap, parts[i].kind == CHAT_IMAGE ? "<|vision_start|><|image_pad|><|vision_end|>" :
		    parts[i].text);
	cat(&s, &len, &cap, "<|im_end|>\n");
	if (add_generation_prompt)
		cat(&s, &len, &cap, "<|im_start|>assistant\n");
	return s;
}

int
chat_rope_index(const int32_t *ids, int n, int32_t image_token, int merge, const int (*grid)[3], int n_images,
    int64_t *pos, masq_err *err)
{
	int64_t next = 0;	/* max position so far + 1 */
	int st = 0, img = 0;
	int64_t *pt = pos, *ph = pos + n, *pw = pos + 2 * (size_t)n;
	while (st < n) {
		int ed = st;
		while (ed < n && ids[ed] != image_token)
			ed++;
		/* text before the image (or to the end): 0, 1, ... after the last */
		for (int i = st; i < ed; i++)
			pt[i] = ph[i] = pw[i] = next + (i - st);
		int64_t base = next + (ed - st);
		next = base;
		if (ed == n)
			break;
		if (img == n_images)
			return masq_err_set(err, MASQ_ERR_FORMAT, "token %d is an image token past the %d images", ed,
			    n_images);
		int t = grid[img][0], h = grid[img][1] / merge, w = grid[img][2] / merge;
		int count = t * h * w;
		if (ed + count > n)
			return masq_err_set(err, MASQ_ERR_FORMAT, "image %d needs %d tokens from token %d; the sequence "
			    "ends first", img + 1, count, ed);
		int64_t top = base - 1;
		for (int k = 0; k < count; k++) {
			if (ids[ed + k] != image_token)
				return masq_err_set(err, MASQ_ERR_FORMAT, "image %d: token %d is not an image token (the "
				    "image takes %d)", img + 1, ed + k, count);
			/* an image's frames are all at time 0 (no seconds per grid) */
			int y = (k / w) % h, x = k % w;
			pt[ed + k] = base;
			ph[ed + k] = base + y;
			pw[ed + k] = base + x;
			int64_t mx = base + (y > x ? y : x);
			top = mx > top ? mx : top;
		}
		next = top + 1;
		st = ed + count;
		img++;
	}
	if (img != n_images)
		return masq_err_set(err, MASQ_ERR_FORMAT, "%d images, but image tokens for %d", n_images, img);
	return img;
}
