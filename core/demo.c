/*
 * demo.c: the embedded demo.  A Qwen2.5-VL-shaped checkpoint with random
 * weights and a calibration set whose activations are built to show what
 * MASQuant is about: per modality a low-rank (power-law) subspace, vision
 * one to two orders of magnitude larger than text, audio in between, and
 * outlier channels that belong to one modality each, so that the modality
 * dominating max|X_j| changes from channel to channel.
 *
 * Everything is drawn from one rng seeded with the seed (which seeds a
 * weight stream and a calibration stream), in a fixed order, and written
 * one tensor (weights) or one sequence (activations) at a time.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dirent.h>
#include <unistd.h>

#include <jansson.h>

#include "core/calib.h"
#include "core/chat.h"
#include "core/demo.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/tokenizer.h"
#include "core/util.h"

const char *const demo_preset_names[] = {"tiny", "tiny-vl", "small", "3b", "7b", "72b", NULL};

static const demo_preset demo_presets[] = {
	{"tiny", 64, 176, 2, 4, 2, 16, {2, 3, 3}, 256, 4, 240, 0, 0},
	/* tiny's shapes with a vision tower and a vocabulary: masq calib's demo */
	{"tiny-vl", 64, 176, 2, 4, 2, 16, {2, 3, 3}, 512, 4, 240, 0, 1},
	{"small", 256, 704, 4, 8, 2, 32, {4, 6, 6}, 1024, 8, 1200, 4u << 20, 0},
	{"3b", 2048, 11008, 4, 16, 2, 128, {16, 24, 24}, 4096, 8, 2048, 512u << 20, 0},
	/* the memory benchmarks' shapes: Qwen2.5-VL-7B's layers (2 of them)
	 * and one Qwen2-72B layer (bench/memory.sh) */
	{"7b", 3584, 18944, 2, 28, 4, 128, {16, 24, 24}, 4096, 8, 2048, 1024u << 20, 0},
	{"72b", 8192, 29568, 1, 64, 8, 128, {16, 24, 24}, 4096, 8, 2048, 1024u << 20, 0},
};

/* Qwen2.5-VL's special token ids (config.json only: the demo has no tokenizer). */
#define DEMO_IMAGE_TOKEN 151655
#define DEMO_VIDEO_TOKEN 151656
#define DEMO_VISION_START 151652
#define DEMO_VISION_END 151653
#define DEMO_BOS 151643
#define DEMO_EOS 151645

/* The stand-in vision tower: one block of width 32, a 2x2 patch merger. */
#define VIS_HIDDEN 32
#define VIS_INTER 64
#define VIS_MERGE 4		/* spatial_merge_size^2 */

/* The vision tower: tiny-vl's has window attention (56 pixels: 2 x 2
 * merge units) in blocks 0 and 2, full attention in 1 and 3. */
typedef struct demo_vis {
	int depth, hidden, inter, heads, window, nfull, full[4];
} demo_vis;

static demo_vis
demo_vis_of(const demo_preset *p)
{
	if (p->vl)
		return (demo_vis){4, 64, 96, 4, 56, 2, {1, 3}};
	return (demo_vis){1, VIS_HIDDEN, VIS_INTER, 2, 112, 1, {0}};
}

/* ---- tiny-vl's tokenizer ------------------------------------------------ */

/* What the demo's BPE merges are learnt from. */
static const char demo_corpus[] =
    "You are a helpful assistant. What is in this picture? Describe the image in one sentence. "
    "What is the cat doing? The picture shows a cat sitting on a chair in the sun. What colour is the "
    "rocket? The rocket is white and stands on the launch pad. Compare the two images. The first image "
    "shows a coffee cup on a table; the second shows a motorcycle in a street. How many people are in "
    "the image? There is one astronaut in a white suit holding a helmet. Read the text in the image. "
    "The quantized model should answer the same question with the same words as the original model. "
    "Activations of vision tokens are larger than those of text tokens, so one smoothing factor for "
    "all of them fits neither. Describe what you see, then say what is unusual about it. The image is "
    "a photograph taken outside on a bright day; the colours are natural and the scene is calm. ";

#define DEMO_MERGES 240	/* byte symbols 0..255, merges 256..495, specials after */

typedef struct demo_tok {
	int n_merges;
	int ma[DEMO_MERGES], mb[DEMO_MERGES];
	char *str[256 + DEMO_MERGES];	/* byte-level spelling of each id */
	int32_t id_endoftext, id_im_start, id_im_end, id_vstart, id_vend, id_vpad, id_image, id_video;
} demo_tok;

static const char *const demo_specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>",
	"<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"};
#define DEMO_NSPECIAL 8

/* BPE learnt on demo_corpus: words cut at spaces (a space starts a word)
 * and at punctuation, the most frequent pair merged first, ties to the
 * smallest ids; deterministic, no random draws. */
static void
demo_tok_build(demo_tok *t)
{
	memset(t, 0, sizeof *t);
	for (int b = 0; b < 256; b++) {
		char u[4] = {0};
		tok_byte_symbol(b, u);
		t->str[b] = xstrdup(u);
	}
	size_t n = sizeof demo_corpus - 1;
	int *sym = xmalloc(xmul(n, sizeof *sym)), *wstart = xmalloc(xmul(n, sizeof *wstart));
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)demo_corpus[i];
		sym[i] = c;
		/* a pair never crosses into a word that starts here */
		wstart[i] = i == 0 || c == ' ' || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'));
	}
	int m = (int)n;
	int *cnt = xmalloc(xmul((size_t)(256 + DEMO_MERGES) * (256 + DEMO_MERGES), sizeof *cnt));
	const int V = 256 + DEMO_MERGES;
	while (t->n_merges < DEMO_MERGES) {
		memset(cnt, 0, (size_t)V * V * sizeof *cnt);
		for (int i = 0; i + 1 < m; i++)
			if (!wstart[i + 1])
				cnt[sym[i] * V + sym[i + 1]]++;
		int best = -1, bc = 1;
		for (int k = 0; k < V * V; k++)
			if (cnt[k] > bc)
				bc = cnt[k], best = k;
		if (best < 0)
			break;
		int a = best / V, b = best % V, id = 256 + t->n_merges;
		t->ma[t->n_merges] = a;
		t->mb[t->n_merges] = b;
		size_t la = strlen(t->str[a]), lb = strlen(t->str[b]);
		t->str[id] = xmalloc(la + lb + 1);
		memcpy(t->str[id], t->str[a], la);
		memcpy(t->str[id] + la, t->str[b], lb + 1);
		t->n_merges++;
		int w = 0;
		for (int i = 0; i < m; i++) {
			if (i + 1 < m && sym[i] == a && sym[i + 1] == b && !wstart[i + 1]) {
				wstart[w] = wstart[i];
				sym[w++] = id;
				i++;
			} else {
				wstart[w] = wstart[i];
				sym[w++] = sym[i];
			}
		}
		m = w;
	}
	free(cnt);
	free(sym);
	free(wstart);
	int32_t *ids[DEMO_NSPECIAL] = {&t->id_endoftext, &t->id_im_start, &t->id_im_end, &t->id_vstart,
		&t->id_vend, &t->id_vpad, &t->id_image, &t->id_video};
	for (int k = 0; k < DEMO_NSPECIAL; k++)
		*ids[k] = 256 + t->n_merges + k;
}

static void
demo_tok_free(demo_tok *t)
{
	for (int i = 0; i < 256 + t->n_merges; i++)
		free(t->str[i]);
}

/* The media and special token ids config.json names. */
typedef struct demo_ids {
	int32_t image, video, vstart, vend, vision, bos, eos;
} demo_ids;

static demo_ids
demo_ids_of(const demo_preset *p, const demo_tok *t)
{
	if (!p->vl)
		return (demo_ids){DEMO_IMAGE_TOKEN, DEMO_VIDEO_TOKEN, DEMO_VISION_START, DEMO_VISION_END, 151654,
			DEMO_BOS, DEMO_EOS};
	return (demo_ids){t->id_image, t->id_video, t->id_vstart, t->id_vend, t->id_vpad, t->id_endoftext,
		t->id_im_end};
}

/* Floats generated per piece handed to the writer. */
#define DEMO_CHUNK 65536

int
demo_preset_get(const char *name, demo_preset *p)
{
	for (size_t i = 0; i < sizeof demo_presets / sizeof demo_presets[0]; i++)
		if (name != NULL && strcmp(name, demo_presets[i].name) == 0) {
			*p = demo_presets[i];
			return 0;
		}
	return -1;
}

/* Check p's sizes are positive, consistent and small enough to generate;
 * -1 with MASQ_ERR_USAGE naming the fault. */
static int
demo_preset_check(const demo_preset *p, masq_err *err)
{
	const char *nm = p->name != NULL ? p->name : "(unnamed)";
	int sec = 0;

	if (p->hidden < 16 || p->hidden > 65536 || p->intermediate < 1 ||
	    p->intermediate > (1 << 20) || p->n_layers < 1 || p->n_layers > 1024 ||
	    p->n_heads < 1 || p->n_kv_heads < 1 || p->head_dim < 2 ||
	    p->head_dim > 4096 || p->vocab < 1 || p->vocab > (1 << 22))
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "demo preset %s: sizes out of range (hidden 16..65536, others positive)", nm);
	if (p->n_heads % p->n_kv_heads != 0)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "demo preset %s: %d heads not divisible by %d key/value heads",
		    nm, p->n_heads, p->n_kv_heads);
	if ((int64_t)p->n_heads * p->head_dim > (1 << 20))
		return masq_err_set(err, MASQ_ERR_USAGE, "demo preset %s: heads x head_dim too large", nm);
	for (int i = 0; i < 3; i++) {
		if (p->mrope_section[i] < 0)
			return masq_err_set(err, MASQ_ERR_USAGE,
			    "demo preset %s: negative mrope_section", nm);
		sec += p->mrope_section[i];
	}
	if (p->head_dim % 2 != 0 || sec != p->head_dim / 2)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "demo preset %s: mrope_section sums to %d, head_dim/2 is %d",
		    nm, sec, p->head_dim / 2);
	if (p->n_seqs < 1 || p->n_seqs > 65536 || p->target_tokens > (1 << 22) ||
	    p->target_tokens < 16 * p->n_seqs)
		return masq_err_set(err, MASQ_ERR_USAGE,
		    "demo preset %s: need 1..65536 sequences of at least 16 tokens "
		    "and at most 4194304 tokens", nm);
	return 0;
}

/* Fill x[0..n) with N(0, std^2): Box-Muller on two 24-bit uniforms taken
 * from each 64-bit draw of r, two values per draw. */
static void
demo_gauss_fill(rng *r, float *x, size_t n, float std)
{
	size_t i;

	for (i = 0; i < n; i += 2) {
		uint64_t v = rng_next(r);
		float u1 = (float)((v >> 40) + 1) * 0x1p-24f;	/* (0, 1] */
		float u2 = (float)((v >> 16) & 0xffffffu) * 0x1p-24f;
		float rad = std * sqrtf(-2.0f * logf(u1));
		float th = 6.28318531f * u2;
		x[i] = rad * cosf(th);
		if (i + 1 < n)
			x[i + 1] = rad * sinf(th);
	}
}

/* Uniform float in [lo, hi). */
static float
demo_unif(rng *r, double lo, double hi)
{
	return (float)(lo + (hi - lo) * rng_uniform(r));
}

/* Set one entry of x (n) chosen by r to a value uniform in [lo, hi), of
 * random sign when sign is set; draws index, value, sign in that order. */
static void
demo_set_random(rng *r, float *x, uint64_t n, double lo, double hi, int sign)
{
	uint64_t i = rng_below(r, n);
	float v = demo_unif(r, lo, hi);

	if (sign && rng_next(r) >> 63)
		v = -v;
	x[i] = v;
}

/* ---- config files ------------------------------------------------------ */

/* Write root to path as indented JSON with a final newline; root is
 * released in every case. */
static int
demo_json_write(json_t *root, const char *path, size_t flags, masq_err *err)
{
	FILE *fp;
	int bad;

	if (root == NULL)
		return masq_err_set(err, MASQ_ERR_INTERNAL, "%s: cannot build the JSON document", path);
	fp = fopen(path, "w");
	if (fp == NULL) {
		json_decref(root);
		return masq_err_set(err, MASQ_ERR_IO, "%s: %s", path, strerror(errno));
	}
	bad = json_dumpf(root, fp, flags) != 0;
	bad |= fputc('\n', fp) == EOF;
	bad |= fclose(fp) != 0;
	json_decref(root);
	if (bad)
		return masq_err_set(err, MASQ_ERR_IO, "%s: write failed: %s", path, strerror(errno));
	return 0;
}

/* The seed as a JSON integer, or a decimal string beyond int64. */
static json_t *
demo_json_seed(uint64_t seed)
{
	char buf[32];

	if (seed <= (uint64_t)INT64_MAX)
		return json_integer((json_int_t)seed);
	snprintf(buf, sizeof buf, "%" PRIu64, seed);
	return json_string(buf);
}

/* Qwen2's pre-tokenizer pattern, as its tokenizer.json gives it. */
static const char demo_split_pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* tiny-vl: tokenizer.json (byte-level BPE as Qwen2's, its own merges),
 * tokenizer_config.json, chat_template.json (Qwen2-VL's template) and
 * preprocessor_config.json (Qwen2-VL's processor, at most 224 x 224). */
/* demo_json_write to mdir/name. */
static int
demo_json_write_in(const char *mdir, const char *name, json_t *root, size_t flags, masq_err *err)
{
	char *path = masq_path_join(mdir, name);
	int rc = demo_json_write(root, path, flags, err);
	free(path);
	return rc;
}

static int
demo_write_vl_files(const char *mdir, const demo_tok *tk, size_t fl, masq_err *err)
{
	const demo_tok t = *tk;
	json_t *vocab = json_object(), *merges = json_array(), *added = json_array();
	for (int i = 0; i < 256 + t.n_merges; i++)
		json_object_set_new(vocab, t.str[i], json_integer(i));
	for (int k = 0; k < t.n_merges; k++)
		json_array_append_new(merges, json_pack("[ss]", t.str[t.ma[k]], t.str[t.mb[k]]));
	for (int k = 0; k < DEMO_NSPECIAL; k++)
		json_array_append_new(added, json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id",
		    256 + t.n_merges + k, "content", demo_specials[k], "single_word", 0, "lstrip", 0, "rstrip", 0,
		    "normalized", 0, "special", 1));
	json_t *bl = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 0,
	    "use_regex", 0);
	json_t *root = json_pack("{s:s, s:n, s:n, s:o, s:{s:s}, s:{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, O]}, s:O, s:O,"
	    " s:{s:s, s:n, s:n, s:s, s:s, s:b, s:b, s:b, s:o, s:o}}",
	    "version", "1.0", "truncation", "padding", "added_tokens", added,
	    "normalizer", "type", "NFC",
	    "pre_tokenizer", "type", "Sequence", "pretokenizers", "type", "Split", "pattern", "Regex",
	    demo_split_pattern, "behavior", "Isolated", "invert", 0, bl,
	    "post_processor", bl, "decoder", bl,
	    "model", "type", "BPE", "dropout", "unk_token", "continuing_subword_prefix", "", "end_of_word_suffix", "",
	    "fuse_unk", 0, "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab, "merges", merges);
	json_decref(bl);
	if (demo_json_write_in(mdir, "tokenizer.json", root, JSON_COMPACT | JSON_PRESERVE_ORDER, err) < 0)
		return -1;
	root = json_pack("{s:s, s:i, s:s, s:s, s:n, s:b, s:s}",
	    "tokenizer_class", "Qwen2Tokenizer",
	    "model_max_length", 32768,
	    "eos_token", "<|im_end|>",
	    "pad_token", "<|endoftext|>",
	    "bos_token",
	    "split_special_tokens", 0,
	    "masq_demo", "synthetic vocabulary of 256 bytes and 240 merges learnt from a paragraph of English");
	if (demo_json_write_in(mdir, "tokenizer_config.json", root, fl, err) < 0)
		return -1;
	root = json_pack("{s:s}", "chat_template", chat_qwen2vl_template);
	if (demo_json_write_in(mdir, "chat_template.json", root, fl, err) < 0)
		return -1;
	root = json_pack("{s:i, s:i, s:i, s:i, s:i, s:[f,f,f], s:[f,f,f], s:b, s:b, s:b, s:b, s:i, s:f, s:s, s:s}",
	    "min_pixels", 56 * 56, "max_pixels", 224 * 224, "patch_size", 14, "temporal_patch_size", 2,
	    "merge_size", 2, "image_mean", 0.48145466, 0.4578275, 0.40821073,
	    "image_std", 0.26862954, 0.26130258, 0.27577711, "do_resize", 1, "do_rescale", 1, "do_normalize", 1,
	    "do_convert_rgb", 1, "resample", 3, "rescale_factor", 1.0 / 255,
	    "image_processor_type", "Qwen2VLImageProcessor", "processor_class", "Qwen2_5_VLProcessor");
	return demo_json_write_in(mdir, "preprocessor_config.json", root, fl, err);
}

/* Write mdir/config.json, generation_config.json and tokenizer_config.json. */
static int
demo_write_configs(const char *mdir, const demo_preset *p, uint64_t seed, masq_err *err)
{
	const size_t fl = JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12);
	char *path;
	json_t *root;
	int rc;

	const demo_vis vis = demo_vis_of(p);
	demo_tok tok = {0};
	if (p->vl)
		demo_tok_build(&tok);	/* the ids config.json names come from it */
	const demo_ids ids = demo_ids_of(p, &tok);
	json_t *full = json_array();
	for (int i = 0; i < vis.nfull; i++)
		json_array_append_new(full, json_integer(vis.full[i]));
	root = json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:s, s:b,"
	    " s:{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:i, s:i, s:s,"
	    "    s:{s:s, s:s, s:[i,i,i]}, s:b, s:s, s:f, s:f, s:b},"
	    " s:{s:s, s:i, s:i, s:i, s:i, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:o},"
	    " s:{s:s, s:o, s:s}}",
	    "architectures", "Qwen2_5_VLForConditionalGeneration",
	    "model_type", "qwen2_5_vl",
	    "image_token_id", ids.image,
	    "video_token_id", ids.video,
	    "vision_start_token_id", ids.vstart,
	    "vision_end_token_id", ids.vend,
	    "vision_token_id", ids.vision,
	    "torch_dtype", "bfloat16",
	    "tie_word_embeddings", 0,
	    "text_config",
	    "model_type", "qwen2_5_vl_text",
	    "hidden_size", p->hidden,
	    "intermediate_size", p->intermediate,
	    "num_hidden_layers", p->n_layers,
	    "num_attention_heads", p->n_heads,
	    "num_key_value_heads", p->n_kv_heads,
	    "head_dim", p->head_dim,
	    "rms_norm_eps", 1e-6,
	    "rope_theta", 1000000.0,
	    "max_position_embeddings", 128000,
	    "vocab_size", p->vocab,
	    "hidden_act", "silu",
	    "rope_scaling", "type", "mrope", "rope_type", "default",
	    "mrope_section", p->mrope_section[0], p->mrope_section[1], p->mrope_section[2],
	    "tie_word_embeddings", 0,
	    "torch_dtype", "bfloat16",
	    "attention_dropout", 0.0,
	    "initializer_range", 0.02,
	    "use_sliding_window", 0,
	    "vision_config",
	    "model_type", "qwen2_5_vl",
	    "depth", vis.depth,
	    "hidden_size", vis.hidden,
	    "intermediate_size", vis.inter,
	    "num_heads", vis.heads,
	    "hidden_act", "silu",
	    "in_chans", 3,
	    "out_hidden_size", p->hidden,
	    "patch_size", 14,
	    "spatial_merge_size", 2,
	    "temporal_patch_size", 2,
	    "window_size", vis.window,
	    "fullatt_block_indexes", full,
	    "masq_demo",
	    "preset", p->name != NULL ? p->name : "custom",
	    "seed", demo_json_seed(seed),
	    "note", "synthetic, not a trained model");
	path = masq_path_join(mdir, "config.json");
	rc = demo_json_write(root, path, fl, err);
	free(path);
	if (rc < 0) {
		demo_tok_free(&tok);
		return -1;
	}

	root = json_pack("{s:i, s:[i,i], s:i, s:b, s:i}",
	    "bos_token_id", ids.bos,
	    "eos_token_id", ids.eos, ids.bos,
	    "pad_token_id", ids.bos,
	    "do_sample", 0,
	    "max_new_tokens", 128);
	path = masq_path_join(mdir, "generation_config.json");
	rc = demo_json_write(root, path, fl, err);
	free(path);
	if (rc < 0) {
		demo_tok_free(&tok);
		return -1;
	}

	if (p->vl) {
		rc = demo_write_vl_files(mdir, &tok, fl, err);
		demo_tok_free(&tok);
		return rc;
	}
	root = json_pack("{s:s, s:i, s:s, s:s, s:n, s:s}",
	    "tokenizer_class", "Qwen2Tokenizer",
	    "model_max_length", 128000,
	    "eos_token", "<|im_end|>",
	    "pad_token", "<|endoftext|>",
	    "bos_token",
	    "masq_demo", "synthetic model without a vocabulary; calibration "
	    "feeds inputs_embeds");
	path = masq_path_join(mdir, "tokenizer_config.json");
	rc = demo_json_write(root, path, fl, err);
	free(path);
	return rc;
}

/* ---- weights ----------------------------------------------------------- */

enum demo_wkind {
	W_LINEAR,	/* N(0, 1/in), a few input columns scaled up */
	W_BIAS,		/* N(0, 0.02^2) */
	W_QK_BIAS,	/* as W_BIAS plus a few large entries (Qwen2's q/k biases) */
	W_NORM,		/* 1 + 0.1 N(0,1), a handful of large channels */
	W_EMBED		/* N(0, 0.02^2) */
};

typedef struct demo_wspec {
	char name[96];
	int kind;
	int ndim;
	int64_t shape[5];
	uint64_t nelem;
	int shard;		/* 0-based shard index */
} demo_wspec;

typedef struct demo_wlist {
	int n, cap;
	demo_wspec *t;		/* (n) in generation and file order */
} demo_wlist;

/* Append a tensor to l: its name is prefix, then "idx." when idx >= 0,
 * then suffix; kind and shape as given. */
static void
demo_wlist_add(demo_wlist *l, int kind, int ndim, const int64_t *shape, const char *prefix,
    int idx, const char *suffix)
{
	demo_wspec *s;

	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 64;
		l->t = xrealloc(l->t, xmul((size_t)l->cap, sizeof *l->t));
	}
	s = &l->t[l->n++];
	memset(s, 0, sizeof *s);
	if (idx >= 0)
		snprintf(s->name, sizeof s->name, "%s%d.%s", prefix, idx, suffix);
	else
		snprintf(s->name, sizeof s->name, "%s%s", prefix, suffix);
	s->kind = kind;
	s->ndim = ndim;
	s->nelem = 1;
	for (int i = 0; i < ndim; i++) {
		s->shape[i] = shape[i];
		s->nelem *= (uint64_t)shape[i];
	}
}

#define DEMO_ADD1(l, k, a, pre, i, suf) \
	demo_wlist_add((l), (k), 1, (const int64_t[]){(a)}, (pre), (i), (suf))
#define DEMO_ADD2(l, k, a, b, pre, i, suf) \
	demo_wlist_add((l), (k), 2, (const int64_t[]){(a), (b)}, (pre), (i), (suf))

/* The checkpoint's tensors in the order transformers >= 4.52 saves
 * Qwen2.5-VL: the vision tower, the language model, lm_head. */
static void
demo_wlist_build(demo_wlist *l, const demo_preset *p)
{
	const int64_t h = p->hidden, qd = (int64_t)p->n_heads * p->head_dim;
	const int64_t kvd = (int64_t)p->n_kv_heads * p->head_dim, in = p->intermediate;
	const demo_vis vis = demo_vis_of(p);
	const int64_t vh = vis.hidden, vm = vis.hidden * VIS_MERGE, vi = vis.inter;
	const char *vb = "model.visual.blocks.", *lp = "model.language_model.layers.";
	const char *vm_ = "model.visual.merger.mlp.";

	demo_wlist_add(l, W_LINEAR, 5, (const int64_t[]){vh, 3, 2, 14, 14},
	    "model.visual.patch_embed.proj.weight", -1, "");
	for (int b = 0; b < vis.depth; b++) {
		DEMO_ADD1(l, W_NORM, vh, vb, b, "norm1.weight");
		DEMO_ADD2(l, W_LINEAR, 3 * vh, vh, vb, b, "attn.qkv.weight");
		DEMO_ADD1(l, W_BIAS, 3 * vh, vb, b, "attn.qkv.bias");
		DEMO_ADD2(l, W_LINEAR, vh, vh, vb, b, "attn.proj.weight");
		DEMO_ADD1(l, W_BIAS, vh, vb, b, "attn.proj.bias");
		DEMO_ADD1(l, W_NORM, vh, vb, b, "norm2.weight");
		DEMO_ADD2(l, W_LINEAR, vi, vh, vb, b, "mlp.gate_proj.weight");
		DEMO_ADD1(l, W_BIAS, vi, vb, b, "mlp.gate_proj.bias");
		DEMO_ADD2(l, W_LINEAR, vi, vh, vb, b, "mlp.up_proj.weight");
		DEMO_ADD1(l, W_BIAS, vi, vb, b, "mlp.up_proj.bias");
		DEMO_ADD2(l, W_LINEAR, vh, vi, vb, b, "mlp.down_proj.weight");
		DEMO_ADD1(l, W_BIAS, vh, vb, b, "mlp.down_proj.bias");
	}
	DEMO_ADD1(l, W_NORM, vh, "model.visual.merger.ln_q.weight", -1, "");
	DEMO_ADD2(l, W_LINEAR, vm, vm, vm_, 0, "weight");
	DEMO_ADD1(l, W_BIAS, vm, vm_, 0, "bias");
	DEMO_ADD2(l, W_LINEAR, h, vm, vm_, 2, "weight");
	DEMO_ADD1(l, W_BIAS, h, vm_, 2, "bias");

	DEMO_ADD2(l, W_EMBED, p->vocab, h, "model.language_model.embed_tokens.weight", -1, "");
	for (int i = 0; i < p->n_layers; i++) {
		DEMO_ADD1(l, W_NORM, h, lp, i, "input_layernorm.weight");
		DEMO_ADD2(l, W_LINEAR, qd, h, lp, i, "self_attn.q_proj.weight");
		DEMO_ADD1(l, W_QK_BIAS, qd, lp, i, "self_attn.q_proj.bias");
		DEMO_ADD2(l, W_LINEAR, kvd, h, lp, i, "self_attn.k_proj.weight");
		DEMO_ADD1(l, W_QK_BIAS, kvd, lp, i, "self_attn.k_proj.bias");
		DEMO_ADD2(l, W_LINEAR, kvd, h, lp, i, "self_attn.v_proj.weight");
		DEMO_ADD1(l, W_BIAS, kvd, lp, i, "self_attn.v_proj.bias");
		DEMO_ADD2(l, W_LINEAR, h, qd, lp, i, "self_attn.o_proj.weight");
		DEMO_ADD1(l, W_NORM, h, lp, i, "post_attention_layernorm.weight");
		DEMO_ADD2(l, W_LINEAR, in, h, lp, i, "mlp.gate_proj.weight");
		DEMO_ADD2(l, W_LINEAR, in, h, lp, i, "mlp.up_proj.weight");
		DEMO_ADD2(l, W_LINEAR, h, in, lp, i, "mlp.down_proj.weight");
	}
	DEMO_ADD1(l, W_NORM, h, "model.language_model.norm.weight", -1, "");
	DEMO_ADD2(l, W_LINEAR, p->vocab, h, "lm_head.weight", -1, "");
}

/* Generate tensor t from r and append it to w, DEMO_CHUNK floats at a time
 * or one row when rows are longer; buf holds at least max(DEMO_CHUNK, in)
 * floats, col and bigcol (scratch) at least `in` entries each. */
static int
demo_tensor_emit(st_writer *w, rng *r, const demo_wspec *t, float *buf, float *col,
    uint64_t *bigcol, masq_err *err)
{
	const uint64_t out = (uint64_t)t->shape[0];
	const uint64_t in = t->nelem / out;
	uint64_t rows, done;
	size_t nbig = 0;
	float std = 0.02f;

	/* Per-tensor structure first, then the bulk values. */
	switch (t->kind) {
	case W_LINEAR:
		std = 1.0f / sqrtf((float)in);
		for (uint64_t j = 0; j < in; j++)
			col[j] = 1.0f;
		if (t->ndim == 2)
			for (uint64_t i = 0; i < in / 64 + 1; i++)
				demo_set_random(r, col, in, 2.0, 5.0, 0);
		for (uint64_t j = 0; j < in; j++)
			if (col[j] != 1.0f)
				bigcol[nbig++] = j;
		break;
	case W_NORM:
	case W_BIAS:
	case W_QK_BIAS:
		/* 1-D: generate it whole, then touch it up */
		if (t->kind == W_NORM) {
			demo_gauss_fill(r, buf, out, 0.1f);
			for (uint64_t i = 0; i < out; i++)
				buf[i] += 1.0f;
			for (uint64_t i = 0; i < out / 128 + 1; i++)
				demo_set_random(r, buf, out, 2.5, 6.0, 0);
		} else {
			demo_gauss_fill(r, buf, out, 0.02f);
			if (t->kind == W_QK_BIAS)
				for (uint64_t i = 0; i < out / 32 + 1; i++)
					demo_set_random(r, buf, out, 0.5, 4.0, 1);
		}
		return st_writer_write_f32(w, buf, out, err);
	default:
		break;
	}
	rows = in >= DEMO_CHUNK ? 1 : DEMO_CHUNK / in;
	for (done = 0; done < out; done += rows) {
		uint64_t nr = out - done < rows ? out - done : rows;
		size_t n = (size_t)(nr * in);
		demo_gauss_fill(r, buf, n, std);
		for (uint64_t i = 0; i < nr; i++)
			for (size_t j = 0; j < nbig; j++)
				buf[i * in + bigcol[j]] *= col[bigcol[j]];
		if (st_writer_write_f32(w, buf, n, err) < 0)
			return -1;
	}
	return 0;
}

/* Write one shard file path holding tensors [first, last) of l. */
static int
demo_shard_write(const char *path, const demo_wlist *l, int first, int last, rng *r,
    float *buf, float *col, uint64_t *bigcol, masq_err *err)
{
	st_writer *w = st_writer_new();
	int rc = -1;

	for (int i = first; i < last; i++)
		if (st_writer_add(w, l->t[i].name, ST_BF16, l->t[i].ndim, l->t[i].shape, err) < 0)
			goto out;
	if (st_writer_begin(w, path, err) < 0)
		goto out;
	for (int i = first; i < last; i++)
		if (demo_tensor_emit(w, r, &l->t[i], buf, col, bigcol, err) < 0)
			goto out;
	rc = st_writer_finish(w, err);
out:
	st_writer_free(w);
	return rc;
}

/* True for "model-NNNNN-of-NNNNN.safetensors" (five digits each). */
static int
demo_is_shard_name(const char *s)
{
	static const char pat[] = "model-#####-of-#####.safetensors";

	for (size_t i = 0; i < sizeof pat; i++) {
		if (pat[i] == '#' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != pat[i])
			return 0;
	}
	return 1;
}

/* Remove weight files an earlier demo_write may have left in mdir (say, the
 * shards of another preset), so that the directory holds one model: only
 * model.safetensors, its index and model-NNNNN-of-NNNNN.safetensors go. */
static int
demo_clear_weights(const char *mdir, masq_err *err)
{
	DIR *d = opendir(mdir);
	struct dirent *e;
	int rc = 0;

	if (d == NULL)
		return masq_err_set(err, MASQ_ERR_IO, "%s: %s", mdir, strerror(errno));
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, "model.safetensors") != 0 &&
		    strcmp(e->d_name, "model.safetensors.index.json") != 0 &&
		    !demo_is_shard_name(e->d_name))
			continue;
		char *path = masq_path_join(mdir, e->d_name);
		if (unlink(path) < 0 && errno != ENOENT)
			rc = masq_err_set(err, MASQ_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
		free(path);
		if (rc < 0)
			break;
	}
	closedir(d);
	return rc;
}

/* Write the weights into mdir: one model.safetensors, or shards of at most
 * p->shard_bytes tensor bytes (a bigger tensor gets a shard of its own)
 * plus model.safetensors.index.json. */
static int
demo_write_weights(const char *mdir, const demo_preset *p, rng *r, masq_err *err)
{
	demo_wlist l = {0};
	uint64_t total = 0, cur = 0, maxin = 0, maxbuf = DEMO_CHUNK;
	int nshards = 1, rc = -1, first;
	float *buf = NULL, *col = NULL;
	uint64_t *bigcol = NULL;
	char name[64], *path = NULL;
	json_t *map = NULL;

	demo_wlist_build(&l, p);
	for (int i = 0; i < l.n; i++) {
		uint64_t nb = l.t[i].nelem * 2, in = l.t[i].nelem / (uint64_t)l.t[i].shape[0];
		/* shards only when the whole exceeds shard_bytes */
		if (p->shard_bytes > 0 && cur > 0 && cur + nb > p->shard_bytes) {
			nshards++;
			cur = 0;
		}
		l.t[i].shard = nshards - 1;
		cur += nb;
		total += nb;
		if (in > maxin)
			maxin = in;
		if (in > maxbuf)
			maxbuf = in;
		if (l.t[i].ndim == 1 && l.t[i].nelem > maxbuf)
			maxbuf = l.t[i].nelem;
	}
	buf = xmalloc(xmul(maxbuf, sizeof *buf));
	col = xmalloc(xmul(maxin, sizeof *col));
	bigcol = xmalloc(xmul(maxin, sizeof *bigcol));

	if (nshards > 1)
		map = json_object();
	first = 0;
	for (int s = 0; s < nshards; s++) {
		int last = first;
		while (last < l.n && l.t[last].shard == s)
			last++;
		if (nshards == 1)
			snprintf(name, sizeof name, "model.safetensors");
		else
			snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, nshards);
		free(path);
		path = masq_path_join(mdir, name);
		if (demo_shard_write(path, &l, first, last, r, buf, col, bigcol, err) < 0)
			goto out;
		for (int i = first; i < last && map != NULL; i++)
			json_object_set_new(map, l.t[i].name, json_string(name));
		first = last;
	}
	if (map != NULL) {
		json_t *root = json_pack("{s:{s:I}, s:O}", "metadata", "total_size",
		    (json_int_t)total, "weight_map", map);
		free(path);
		path = masq_path_join(mdir, "model.safetensors.index.json");
		if (demo_json_write(root, path, JSON_INDENT(2) | JSON_SORT_KEYS, err) < 0)
			goto out;
	}
	rc = 0;
out:
	json_decref(map);
	free(path);
	free(buf);
	free(col);
	free(bigcol);
	free(l.t);
	return rc;
}

/* ---- calibration set --------------------------------------------------- */

typedef struct demo_seg {
	int kind;		/* MOD_TEXT, MOD_VISION (an image) or MOD_AUDIO */
	int n;			/* tokens */
	int gh, gw;		/* image grid (gh * gw == n) */
} demo_seg;

#define DEMO_MAX_SEGS 5

typedef struct demo_seq {
	int kind;
	int len;
	int nseg;
	demo_seg seg[DEMO_MAX_SEGS];
} demo_seq;

/* Kinds of prompt: relative length and each modality's share of tokens. */
static const struct {
	double mult;		/* relative length */
	double fv, fa;		/* vision, audio shares (text takes the rest) */
	int nimg;		/* images */
} demo_kinds[] = {
	{1.0, 0.70, 0.00, 1},	/* text + image */
	{1.2, 0.56, 0.22, 1},	/* text + image + audio */
	{0.9, 0.00, 0.60, 0},	/* text + audio */
	{1.3, 0.78, 0.00, 2},	/* text + two images */
	{0.35, 0.00, 0.00, 0},	/* text only */
};
/* The fixed order of kinds (repeated): balanced so that 4 or 8 sequences give
 * about 28-30% text, 50-54% vision, 18-20% audio tokens. */
static const int demo_kind_order[8] = {0, 1, 2, 3, 1, 4, 2, 3};

/* Split n text tokens into ns segments of at least 1 (the first at least 2)
 * with random proportions; out[ns] gets the sizes. */
static void
demo_text_split(rng *r, int n, int ns, int *out)
{
	double u[DEMO_MAX_SEGS], su = 0;
	int left = n - (ns + 1), given = 0;

	for (int i = 0; i < ns; i++) {
		u[i] = 0.5 + rng_uniform(r);
		su += u[i];
	}
	for (int i = 0; i < ns; i++) {
		out[i] = (i == 0 ? 2 : 1) + (int)(left * u[i] / su);
		given += out[i];
	}
	out[0] += n - given;
}

/* Draw one sequence of about len tokens of kind k into q. */
static void
demo_seq_draw(rng *r, int k, double len, demo_seq *q)
{
	int nimg = demo_kinds[k].nimg, nv = 0, na = 0, nt, ns, tx[DEMO_MAX_SEGS], ti = 0;
	double vis = len * demo_kinds[k].fv * (0.9 + 0.2 * rng_uniform(r));
	double aud = len * demo_kinds[k].fa * (0.9 + 0.2 * rng_uniform(r));
	double first = nimg > 1 ? 0.4 + 0.2 * rng_uniform(r) : 1.0;
	demo_seg img[2];

	for (int i = 0; i < nimg; i++) {
		double want = i == 0 ? vis * first : vis - nv;
		double ar = exp(0.8 * rng_uniform(r) - 0.4);	/* height / width */
		int gh = (int)nearbyint(sqrt(want * ar)), gw;
		if (gh < 2)
			gh = 2;
		gw = (int)nearbyint(want / gh);
		if (gw < 2)
			gw = 2;
		img[i] = (demo_seg){MOD_VISION, gh * gw, gh, gw};
		nv += gh * gw;
	}
	if (demo_kinds[k].fa > 0) {
		na = (int)nearbyint(aud);
		if (na < 2)
			na = 2;
	}
	ns = 1 + nimg + (na > 0);
	nt = (int)nearbyint(len) - nv - na;
	if (nt < ns + 1)
		nt = ns + 1;
	demo_text_split(r, nt, ns, tx);

	/* [text] [image] [text] ([image] [text]) ([audio] [text]) */
	q->kind = k;
	q->nseg = 0;
	q->seg[q->nseg++] = (demo_seg){MOD_TEXT, tx[ti++], 0, 0};
	for (int i = 0; i < nimg; i++) {
		q->seg[q->nseg++] = img[i];
		q->seg[q->nseg++] = (demo_seg){MOD_TEXT, tx[ti++], 0, 0};
	}
	if (na > 0) {
		q->seg[q->nseg++] = (demo_seg){MOD_AUDIO, na, 0, 0};
		q->seg[q->nseg++] = (demo_seg){MOD_TEXT, tx[ti++], 0, 0};
	}
	q->len = nt + nv + na;
}

/* Draw the layout of all sequences: lengths varying, kinds in the fixed
 * order, redrawn (deterministically) until the token shares are 26-34% text,
 * 46-59% vision, 16-24% audio and the total is within 12% of the target. */
static void
demo_calib_plan(rng *r, const demo_preset *p, demo_seq *q, int *n_tokens)
{
	double *w = xmalloc(xmul((size_t)p->n_seqs, sizeof *w));

	for (int attempt = 0;; attempt++) {
		double sw = 0;
		int cnt[MOD_COUNT] = {0}, tot = 0;

		for (int i = 0; i < p->n_seqs; i++) {
			w[i] = demo_kinds[demo_kind_order[i % 8]].mult * (0.7 + 0.6 * rng_uniform(r));
			sw += w[i];
		}
		for (int i = 0; i < p->n_seqs; i++) {
			demo_seq_draw(r, demo_kind_order[i % 8], p->target_tokens * w[i] / sw, &q[i]);
			for (int s = 0; s < q[i].nseg; s++)
				cnt[q[i].seg[s].kind] += q[i].seg[s].n;
			tot += q[i].len;
		}
		*n_tokens = tot;
		double ft = (double)cnt[MOD_TEXT] / tot, fv = (double)cnt[MOD_VISION] / tot;
		double fa = (double)cnt[MOD_AUDIO] / tot;
		if (p->n_seqs < 4 || attempt >= 1000 ||
		    (ft >= 0.26 && ft <= 0.34 && fv >= 0.46 && fv <= 0.59 &&
		    fa >= 0.16 && fa <= 0.24 && fabs((double)(tot - p->target_tokens)) <= 0.12 * p->target_tokens))
			break;
	}
	free(w);
}

/* How one modality's embeddings are drawn: x = S (g .* (sum_k sigma_k z_k b_k
 * + eps n)) + outliers, S = scale x per-sequence gain. */
typedef struct demo_mod {
	float scale;		/* typical magnitude (text 1) */
	float corr;		/* weight of the per-block shared latent */
	int k;			/* directions */
	float *basis;		/* (k, hidden) orthonormal rows */
	float *sigma;		/* (k) spectrum, sum sigma^2 = hidden */
	float *gain;		/* (hidden) per-channel gain */
	float *out_mag;		/* (hidden) own outlier magnitude (x S), 0 elsewhere */
	float seq_gain;		/* this sequence's gain */
	float *latent;		/* (k) current block's shared latent */
} demo_mod;

typedef struct demo_act {
	int hidden;
	demo_mod mod[MOD_COUNT];	/* text, vision, audio */
	int n_massive;
	int massive_ch[2];	/* shared massive-activation channels */
	float massive_mag[2];	/* signed, x S */
	float *z, *u, *noise;	/* scratch: (k), (hidden), (hidden) */
} demo_act;

#define DEMO_NOISE 0.1f

/* Orthonormalize the k rows of b (k x n) in place, modified Gram-Schmidt with
 * double accumulation. */
static void
demo_orthonormalize(float *b, int k, int n)
{
	for (int i = 0; i < k; i++) {
		float *bi = b + (size_t)i * n;
		for (int j = 0; j < i; j++) {
			const float *bj = b + (size_t)j * n;
			double d = 0;
			for (int c = 0; c < n; c++)
				d += (double)bi[c] * bj[c];
			for (int c = 0; c < n; c++)
				bi[c] -= (float)d * bj[c];
		}
		double s = 0;
		for (int c = 0; c < n; c++)
			s += (double)bi[c] * bi[c];
		float inv = (float)(1.0 / sqrt(s > 1e-30 ? s : 1e-30));
		for (int c = 0; c < n; c++)
			bi[c] *= inv;
	}
}

/* Draw the activation model: channel roles, then per modality its basis,
 * spectrum, channel gains and outliers. */
static void
demo_act_init(demo_act *a, rng *r, int hidden)
{
	/* per modality (text, vision, audio): scale, own outliers' magnitude in
	 * units of the modality's channel std, shared-latent weight */
	static const float scale_lo[MOD_COUNT] = {1.0f, 25.0f, 2.0f};
	static const float scale_hi[MOD_COUNT] = {1.0f, 45.0f, 4.0f};
	static const float mag_lo[MOD_COUNT] = {100.0f, 8.0f, 30.0f};
	static const float mag_hi[MOD_COUNT] = {160.0f, 15.0f, 60.0f};
	static const float corr[MOD_COUNT] = {0.3f, 0.5f, 0.5f};
	int nout[MOD_COUNT], *perm = xmalloc(xmul((size_t)hidden, sizeof *perm)), pos;
	uint8_t *owner = xmalloc((size_t)hidden);	/* 0 none, 1+m outlier of m, 4 massive */
	int k = hidden < 256 ? hidden : 256;

	memset(a, 0, sizeof *a);
	a->hidden = hidden;
	/* disjoint channel roles from one random permutation */
	for (int i = 0; i < hidden; i++)
		perm[i] = i;
	for (int i = hidden - 1; i > 0; i--) {
		int j = (int)rng_below(r, (uint64_t)i + 1), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	a->n_massive = hidden >= 256 ? 2 : 1;
	nout[0] = hidden * 3 / 100 > 2 ? hidden * 3 / 100 : 2;		/* text: 3% */
	nout[1] = hidden / 100 > 1 ? hidden / 100 : 1;			/* vision: 1% */
	nout[2] = hidden * 15 / 1000 > 1 ? hidden * 15 / 1000 : 1;	/* audio: 1.5% */
	memset(owner, 0, (size_t)hidden);
	pos = 0;
	for (int i = 0; i < a->n_massive; i++) {
		a->massive_ch[i] = perm[pos++];
		owner[a->massive_ch[i]] = 4;
		a->massive_mag[i] = demo_unif(r, 5.0, 10.0);
		if (rng_next(r) >> 63)
			a->massive_mag[i] = -a->massive_mag[i];
	}
	for (int m = 0; m < MOD_COUNT; m++)
		for (int i = 0; i < nout[m]; i++)
			owner[perm[pos++]] = (uint8_t)(1 + m);

	for (int m = 0; m < MOD_COUNT; m++) {
		demo_mod *d = &a->mod[m];
		double p = 0.8 + 0.2 * rng_uniform(r), ss = 0;

		d->scale = demo_unif(r, scale_lo[m], scale_hi[m]);
		d->corr = corr[m];
		d->k = k;
		d->basis = xmalloc(xmul(xmul((size_t)k, (size_t)hidden), sizeof *d->basis));
		demo_gauss_fill(r, d->basis, (size_t)k * hidden, 1.0f);
		demo_orthonormalize(d->basis, k, hidden);
		d->sigma = xmalloc(xmul((size_t)k, sizeof *d->sigma));
		for (int i = 0; i < k; i++) {
			d->sigma[i] = (float)pow(i + 1.0, -p);
			ss += (double)d->sigma[i] * d->sigma[i];
		}
		for (int i = 0; i < k; i++)
			d->sigma[i] *= (float)sqrt(hidden * (1.0 - DEMO_NOISE * DEMO_NOISE) / ss);
		d->gain = xmalloc(xmul((size_t)hidden, sizeof *d->gain));
		d->out_mag = xcalloc((size_t)hidden, sizeof *d->out_mag);
		demo_gauss_fill(r, d->gain, (size_t)hidden, 0.35f);
		for (int c = 0; c < hidden; c++) {
			d->gain[c] = expf(d->gain[c]);
			if (owner[c] == 1 + m)
				d->out_mag[c] = demo_unif(r, mag_lo[m], mag_hi[m]);
			else if (owner[c] >= 1 && owner[c] <= 3)
				d->gain[c] *= demo_unif(r, 0.2, 0.5);	/* another modality's channel */
		}
		d->latent = xcalloc((size_t)k, sizeof *d->latent);
	}
	a->z = xmalloc(xmul((size_t)k, sizeof *a->z));
	a->u = xmalloc(xmul((size_t)hidden, sizeof *a->u));
	a->noise = xmalloc(xmul((size_t)hidden, sizeof *a->noise));
	free(perm);
	free(owner);
}

/* Free what demo_act_init allocated. */
static void
demo_act_done(demo_act *a)
{
	for (int m = 0; m < MOD_COUNT; m++) {
		free(a->mod[m].basis);
		free(a->mod[m].sigma);
		free(a->mod[m].gain);
		free(a->mod[m].out_mag);
		free(a->mod[m].latent);
	}
	free(a->z);
	free(a->u);
	free(a->noise);
}

/* Draw one token of modality m into x (hidden); first marks a sequence's
 * first token, which carries the massive activations at full strength. */
static void
demo_token_draw(demo_act *a, rng *r, int m, int first, float *x)
{
	demo_mod *d = &a->mod[m];
	const int n = a->hidden;
	const float s = d->scale * d->seq_gain, c1 = d->corr, c2 = sqrtf(1.0f - c1 * c1);

	demo_gauss_fill(r, a->z, (size_t)d->k, 1.0f);
	demo_gauss_fill(r, a->noise, (size_t)n, DEMO_NOISE);
	for (int c = 0; c < n; c++)
		a->u[c] = a->noise[c];
	for (int i = 0; i < d->k; i++)
		a->z[i] = d->sigma[i] * (c1 * d->latent[i] + c2 * a->z[i]);
	/* u += sum_i z_i b_i, four directions per pass over u */
	int i = 0;
	for (; i + 4 <= d->k; i += 4) {
		const float *b0 = d->basis + (size_t)i * n, *b1 = b0 + n, *b2 = b1 + n, *b3 = b2 + n;
		const float z0 = a->z[i], z1 = a->z[i + 1], z2 = a->z[i + 2], z3 = a->z[i + 3];
		float *u = a->u;
		for (int c = 0; c < n; c++)
			u[c] += z0 * b0[c] + z1 * b1[c] + z2 * b2[c] + z3 * b3[c];
	}
	for (; i < d->k; i++) {
		const float *b = d->basis + (size_t)i * n;
		for (int c = 0; c < n; c++)
			a->u[c] += a->z[i] * b[c];
	}
	for (int c = 0; c < n; c++) {
		float v = d->gain[c] * a->u[c];
		if (d->out_mag[c] > 0) {
			/* own outlier channel: random sign, occasional spikes */
			float o = d->out_mag[c] * demo_unif(r, 0.7, 1.0);
			if (rng_below(r, 50) == 0)
				o *= demo_unif(r, 1.5, 2.5);
			v += rng_next(r) >> 63 ? -o : o;
		}
		x[c] = s * v;
	}
	for (int j = 0; j < a->n_massive; j++)
		x[a->massive_ch[j]] += s * a->massive_mag[j] * demo_unif(r, 0.9, 1.1) *
		    (first ? 20.0f : 1.0f);
}

/* Start a new block (image, audio clip, or a sequence's text) of modality m. */
static void
demo_block_start(demo_act *a, rng *r, int m)
{
	demo_gauss_fill(r, a->mod[m].latent, (size_t)a->mod[m].k, 1.0f);
}

/* Store v little-endian in n bytes at p. */
static void
demo_put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Write path: inputs_embeds F32 [tokens, hidden] (one sequence at a time),
 * modality U8 [tokens], seq_lens I32 [n_seqs], position_ids I64 [3, tokens]
 * following Qwen2-VL's get_rope_index. */
static int
demo_write_calib(const char *path, const demo_preset *p, uint64_t seed, rng *r,
    masq_err *err)
{
	demo_seq *q = xcalloc((size_t)p->n_seqs, sizeof *q);
	demo_act a;
	st_writer *w = st_writer_new();
	int T, maxlen = 0, tok = 0, rc = -1;
	uint8_t *mod = NULL, *lens = NULL, *pos = NULL;
	float *x = NULL;
	char src[160];

	demo_calib_plan(r, p, q, &T);
	for (int i = 0; i < p->n_seqs; i++)
		if (q[i].len > maxlen)
			maxlen = q[i].len;
	mod = xmalloc((size_t)T);
	lens = xmalloc(xmul((size_t)p->n_seqs, 4));
	pos = xmalloc(xmul(xmul(3, (size_t)T), 8));
	x = xmalloc(xmul(xmul((size_t)maxlen, (size_t)p->hidden), sizeof *x));
	demo_act_init(&a, r, p->hidden);

	/* modality and positions from the layout */
	for (int i = 0; i < p->n_seqs; i++) {
		int64_t next = 0;
		demo_put_le(lens + 4 * (size_t)i, (uint32_t)q[i].len, 4);
		for (int s = 0; s < q[i].nseg; s++) {
			const demo_seg *g = &q[i].seg[s];
			for (int j = 0; j < g->n; j++, tok++) {
				int64_t pt, ph, pw;
				if (g->kind == MOD_VISION) {
					pt = next;
					ph = next + j / g->gw;
					pw = next + j % g->gw;
				} else {
					pt = ph = pw = next + j;
				}
				mod[tok] = (uint8_t)g->kind;
				demo_put_le(pos + 8 * (size_t)tok, (uint64_t)pt, 8);
				demo_put_le(pos + 8 * ((size_t)T + tok), (uint64_t)ph, 8);
				demo_put_le(pos + 8 * (2 * (size_t)T + tok), (uint64_t)pw, 8);
			}
			next += g->kind == MOD_VISION ? (g->gh > g->gw ? g->gh : g->gw) : g->n;
		}
	}

	snprintf(src, sizeof src, "masq demo preset=%s seed=%" PRIu64,
	    p->name != NULL ? p->name : "custom", seed);
	/* after inputs_embeds (a whole number of 8-byte words: hidden is even),
	 * modality, seq_lens, position_ids, as every earlier demo wrote them
	 * (so their fingerprints, which sessions record, stay), unless that
	 * would put seq_lens or position_ids off their element size: then
	 * largest elements first */
	int aligned = T % 4 == 0 && (T + 4 * p->n_seqs) % 8 == 0;
	const struct { const char *name; st_dtype dt; int ndim; int64_t sh[2]; const void *data; size_t n; } tail[2][3] = {
		{{"modality", ST_U8, 1, {T, 0}, mod, (size_t)T},
		 {"seq_lens", ST_I32, 1, {p->n_seqs, 0}, lens, (size_t)p->n_seqs * 4},
		 {"position_ids", ST_I64, 2, {3, T}, pos, (size_t)T * 24}},
		{{"position_ids", ST_I64, 2, {3, T}, pos, (size_t)T * 24},
		 {"seq_lens", ST_I32, 1, {p->n_seqs, 0}, lens, (size_t)p->n_seqs * 4},
		 {"modality", ST_U8, 1, {T, 0}, mod, (size_t)T}},
	};
	const int order = aligned ? 0 : 1;
	if (st_writer_add(w, "inputs_embeds", ST_F32, 2, (const int64_t[]){T, p->hidden}, err) < 0 ||
	    st_writer_add(w, tail[order][0].name, tail[order][0].dt, tail[order][0].ndim, tail[order][0].sh, err) < 0 ||
	    st_writer_add(w, tail[order][1].name, tail[order][1].dt, tail[order][1].ndim, tail[order][1].sh, err) < 0 ||
	    st_writer_add(w, tail[order][2].name, tail[order][2].dt, tail[order][2].ndim, tail[order][2].sh, err) < 0 ||
	    st_writer_meta(w, "calib_format", "masq-calib", err) < 0 ||
	    st_writer_meta(w, "calib_version", "1", err) < 0 ||
	    st_writer_meta(w, "source", src, err) < 0 ||
	    st_writer_begin(w, path, err) < 0)
		goto out;

	for (int i = 0; i < p->n_seqs; i++) {
		int t = 0;
		for (int m = 0; m < MOD_COUNT; m++)
			a.mod[m].seq_gain = demo_unif(r, 0.8, 1.2);
		demo_block_start(&a, r, MOD_TEXT);
		for (int s = 0; s < q[i].nseg; s++) {
			const demo_seg *g = &q[i].seg[s];
			if (g->kind != MOD_TEXT)
				demo_block_start(&a, r, g->kind);
			for (int j = 0; j < g->n; j++, t++)
				demo_token_draw(&a, r, g->kind, t == 0, x + (size_t)t * p->hidden);
		}
		if (st_writer_write_f32(w, x, (size_t)q[i].len * p->hidden, err) < 0)
			goto out;
	}
	if (st_writer_write(w, tail[order][0].data, tail[order][0].n, err) < 0 ||
	    st_writer_write(w, tail[order][1].data, tail[order][1].n, err) < 0 ||
	    st_writer_write(w, tail[order][2].data, tail[order][2].n, err) < 0 ||
	    st_writer_finish(w, err) < 0)
		goto out;
	rc = 0;
out:
	st_writer_free(w);
	demo_act_done(&a);
	free(q);
	free(mod);
	free(lens);
	free(pos);
	free(x);
	return rc;
}

int
demo_write(const char *dir, const demo_preset *p, uint64_t seed, masq_err *err)
{
	char *mdir, *cpath;
	rng root, rw, rc;
	int ret = -1;

	if (demo_preset_check(p, err) < 0)
		return -1;
	/* two streams, so the calibration set does not depend on the weights */
	rng_init(&root, seed);
	rng_init(&rw, rng_next(&root));
	rng_init(&rc, rng_next(&root));

	mdir = masq_path_join(dir, "model");
	cpath = masq_path_join(dir, "calib.safetensors");
	if (masq_mkdir_p(mdir, err) < 0 ||
	    demo_clear_weights(mdir, err) < 0 ||
	    demo_write_configs(mdir, p, seed, err) < 0 ||
	    demo_write_weights(mdir, p, &rw, err) < 0 ||
	    demo_write_calib(cpath, p, seed, &rc, err) < 0)
		goto out;
	ret = 0;
out:
	free(mdir);
	free(cpath);
	return ret;
}
