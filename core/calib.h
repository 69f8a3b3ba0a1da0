/*
 * calib.h: a calibration set (one safetensors file, see masq-calib(5)):
 *   inputs_embeds  F32/BF16/F16 [tokens, hidden]
 *   modality       U8 [tokens], 0 text, 1 vision, 2 audio
 *   seq_lens       I32 [sequences], summing to tokens
 *   position_ids   I64 [3, tokens] (multimodal RoPE) or [tokens]; optional,
 *                  default 0..len-1 within each sequence
 *   deepstack.N    F32/BF16/F16 [vision tokens, hidden], N = 0, 1, ...;
 *                  optional (Qwen3-VL): row r is added to the output of
 *                  decoder layer N at the r-th vision token, in token order
 */
#ifndef MASQ_CALIB_H
#define MASQ_CALIB_H

#include <stdint.h>

#include "core/util.h"

enum modality { MOD_TEXT = 0, MOD_VISION = 1, MOD_AUDIO = 2, MOD_COUNT = 3 };
/* A token a statistic or a figure leaves out (a held-out token in the
 * statistics, a fitted one in the held-out figures); never in a file. */
#define MOD_SKIP 255
/* "text", "vision", "audio" */
const char *modality_name(int m);

typedef struct calib {
	int n_tokens;
	int hidden;
	int n_seqs;
	float *embeds;		/* (n_tokens, hidden), owned */
	uint8_t *modality;	/* (n_tokens) */
	int32_t *seq_lens;	/* (n_seqs) */
	int64_t *pos;		/* (3, n_tokens): rows t, h, w */
	int has_pos;		/* position_ids was present (else generated) */
	int pos_rows;		/* 3 or 1 as stored */
	int n_mod[MOD_COUNT];	/* tokens per modality */
	int n_deepstack;	/* deepstack.N tensors */
	float **deepstack;	/* (n_deepstack) each (n_mod[MOD_VISION], hidden), owned */
	char *format;		/* __metadata__ calib_format / calib_version / source, or NULL */
	char *version;
	char *source;
} calib;

/* Load and validate path; if hidden > 0 the embedding width must match. */
int calib_load(calib *c, const char *path, int hidden, masq_err *err);
void calib_done(calib *c);
/* out = sequences seq_lo .. seq_hi - 1 of c, a set of its own (positions,
 * modalities and deepstack rows with them). */
void calib_slice(const calib *c, int seq_lo, int seq_hi, calib *out);
/* h (n_tokens, hidden) += deepstack feature `layer` at the vision tokens,
 * when the set has one (the output of decoder layer `layer` becomes the
 * next layer's input). */
void calib_deepstack_add(const calib *c, int layer, float *h);

#endif
