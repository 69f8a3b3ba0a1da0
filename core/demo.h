/*
 * demo.h: the embedded demo, a deterministic Qwen2.5-VL-shaped model and a
 * calibration set whose activations show the multimodal misalignment
 * MASQuant addresses (see masq(1), DEMO).
 *
 *	demo_preset p;
 *	demo_preset_get("tiny", &p);
 *	if (demo_write("out", &p, 42, &err) < 0) ...
 *	// out/model/{config.json, model*.safetensors[, index]}, out/calib.safetensors
 */
#ifndef MASQ_DEMO_H
#define MASQ_DEMO_H

#include <stdint.h>

#include "core/util.h"

typedef struct demo_preset {
	const char *name;
	int hidden, intermediate, n_layers, n_heads, n_kv_heads, head_dim;
	int mrope_section[3];
	int vocab;
	int n_seqs;		/* calibration sequences */
	int target_tokens;	/* approximate calibration tokens in all */
	uint64_t shard_bytes;	/* shard the weights above this size (0: one file) */
	int vl;			/* a vision tower of 4 blocks (window and full attention),
				   a tokenizer, a chat template and an image processor:
				   what masq calib needs (tiny-vl) */
} demo_preset;

/* Fill p with the named preset (tiny, tiny-vl, small, 3b, 7b, 72b); -1 when unknown. */
int demo_preset_get(const char *name, demo_preset *p);
/* Names of the presets, NULL-terminated. */
extern const char *const demo_preset_names[];

#define DEMO_DEFAULT_SEED 20260305u

/* Write dir/model and dir/calib.safetensors; dir is created if needed.
 * Same preset and seed give byte-identical files. */
int demo_write(const char *dir, const demo_preset *p, uint64_t seed, masq_err *err);

#endif
