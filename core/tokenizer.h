/*
 * tokenizer.h: a Hugging Face tokenizer.json of the byte-level BPE kind
 * (GPT-2, Qwen2/2.5/3 and their VL models, Llama 3), encoding UTF-8 text
 * to token ids the way the tokenizers library does:
 *
 *   1. added tokens whose "normalized" is false are matched in the raw
 *      text (leftmost, longest first) and become their ids;
 *   2. the normalizer (none, NFC, NFD, NFKC, NFKD: utf8proc) runs on the
 *      text between them, and the added tokens whose "normalized" is true
 *      are matched in its result;
 *   3. the pre-tokenizer's Split patterns (PCRE2, Unicode properties)
 *      cut the rest into pieces, each piece's bytes become the byte-level
 *      alphabet's symbols, and BPE merges them by rank;
 *   4. nothing else: no post-processor templates (BOS/EOS), as the
 *      tokenizers library's encode(text, add_special_tokens=False).
 *
 * What a tokenizer.json asks for that masq does not do is refused at load
 * time, naming the field (WordPiece or Unigram models, Metaspace, byte
 * fallback, added tokens with single_word ...).
 *
 *	masq_tok *t;
 *	if (tok_load(&t, "model/tokenizer.json", &err) < 0) ...
 *	tok_ids ids = {0};
 *	if (tok_encode(t, line, len, 0, &ids, &err) < 0) ...
 *	for (size_t i = 0; i < ids.n; i++) printf("%d ", ids.v[i]);
 *	tok_ids_free(&ids);
 *	tok_free(t);
 *
 * A masq_tok is read-only after loading except for its piece cache and
 * regex scratch: one thread encodes with one masq_tok at a time.
 */
#ifndef MASQ_TOKENIZER_H
#define MASQ_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

typedef struct masq_tok masq_tok;

/* A growing array of token ids. */
typedef struct tok_ids {
	int32_t *v;
	size_t n, cap;
} tok_ids;

/* tok_encode flags */
enum {
	TOK_SPLIT_SPECIAL = 1 << 0,	/* special added tokens in the text are
					   text, not their ids (transformers'
					   split_special_tokens=True) */
};

/* Load a tokenizer.json; -1 with err naming the file and what is wrong. */
int tok_load(masq_tok **out, const char *path, masq_err *err);
/* The same from a JSON document in memory (what tok_load reads); name
 * names it in messages. */
int tok_load_buf(masq_tok **out, const char *json, size_t len, const char *name, masq_err *err);
void tok_free(masq_tok *t);

/* Append the ids of len bytes of text to ids.  Text that is not valid
 * UTF-8 is refused (MASQ_ERR_FORMAT, naming the byte offset); ids keeps
 * what it had. */
int tok_encode(masq_tok *t, const char *text, size_t len, int flags, tok_ids *ids, masq_err *err);

/* The token's string as the vocabulary spells it (byte-level symbols:
 * "Ġworld"; an added token's content), *len its length; NULL for an id
 * the tokenizer does not have. */
const char *tok_piece(const masq_tok *t, int32_t id, size_t *len);
/* The bytes a token stands for (byte-level symbols mapped back; an added
 * token's content) into buf, at most cap; returns the length, or -1 for
 * an unknown id. */
int tok_bytes(const masq_tok *t, int32_t id, char *buf, size_t cap);
/* The id of an exact vocabulary or added-token string, or -1. */
int32_t tok_id(const masq_tok *t, const char *s);
/* One past the largest id. */
int32_t tok_n_ids(const masq_tok *t);
/* 1 when id is an added token marked special. */
int tok_is_special(const masq_tok *t, int32_t id);

/* The byte-level alphabet's symbol of byte b (GPT-2's bytes_to_unicode),
 * UTF-8 into out (at least 3 bytes); returns its length. */
int tok_byte_symbol(int b, char *out);

void tok_ids_push(tok_ids *ids, int32_t id);
void tok_ids_free(tok_ids *ids);

#endif
