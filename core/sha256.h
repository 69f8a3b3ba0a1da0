/*
 * sha256.h: SHA-256 (FIPS 180-4), for fingerprints of models and
 * calibration sets and for naming the files kept beside a session database.
 *
 *	sha256_ctx c;
 *	sha256_init(&c);
 *	sha256_update(&c, data, n);     // any number of times
 *	char hex[65];
 *	sha256_hex(&c, hex);            // finishes; hex is NUL-terminated
 */
#ifndef MASQ_SHA256_H
#define MASQ_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

typedef struct sha256_ctx {
	uint32_t h[8];
	uint64_t len;		/* bytes hashed */
	uint8_t buf[64];
	size_t nbuf;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
/* Finish and write the 32-byte digest. */
void sha256_final(sha256_ctx *c, uint8_t out[32]);
/* Finish and write 64 lowercase hex digits and a NUL. */
void sha256_hex(sha256_ctx *c, char out[65]);
/* Hash a whole file (streamed); -1 with err on I/O errors. */
int sha256_file(const char *path, char out[65], masq_err *err);
/* Hash n bytes. */
void sha256_buf(const void *data, size_t n, char out[65]);

#endif
