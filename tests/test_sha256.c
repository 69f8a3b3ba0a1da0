/*
 * test_sha256.c: SHA-256 against the FIPS 180-2 / NIST example vectors
 * ("", "abc", the 448- and 896-bit messages, one million 'a' fed in uneven
 * chunks), digests of a byte pattern at the padding boundaries computed
 * offline with Python's hashlib:
 *
 *	pat = lambda n: bytes((i * 7 + 3) & 0xff for i in range(n))
 *	hashlib.sha256(pat(n)).hexdigest()
 *
 * and sha256_file: streamed over more than one 64 KiB buffer, and its
 * errors (missing file, a directory) naming the path.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sha256.h"
#include "tests/tap.h"

static char workdir[1024];

static const struct {
	const char *msg;
	const char *hex;
} nist[] = {
	{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	{"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
	    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
	{"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqr"
	    "lmnopqrsmnopqrstnopqrstu",
	    "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
};

static const struct {
	size_t n;
	const char *hex;
} pattern[] = {
	{1, "084fed08b978af4d7d196a7446a86b58009e636b611db16211b65a9aadff29c5"},
	{55, "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b"},
	{56, "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27"},
	{57, "35df609437dcfea3279283ab79fd554e2bf78f8f7ae2de532d8ee300b09e8f73"},
	{63, "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055"},
	{64, "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241"},
	{65, "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e"},
	{119, "9ce7368e4daf32341631b492e80359dc9f594b48453cd0dd5bf0b19279cc177e"},
	{120, "7836b787757e95e58b3ca5aec90b1b004e8deba1e50e9675af9cabf1a13a04b5"},
	{128, "d2742f1f4ac6bb7ca2b239ee18402ba8b3f9f8e652d2a72973c2b9ba11c08cf6"},
	{1000, "1e9bc38cbf860b9ec31918b065f9b52476c549a782e0e7990bed8ce3868d2371"},
	{200 * 1024 + 13, "c7c40de0e7d2c2d86c1900cf749d3b6008c871cbf290b88f20732785c8623274"},
};

/* n bytes of the pattern (i * 7 + 3) mod 256, a new buffer. */
static uint8_t *
pattern_new(size_t n)
{
	uint8_t *p = xmalloc(n);
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 7 + 3);
	return p;
}

static void
test_vectors(void)
{
	char hex[65];

	for (size_t i = 0; i < sizeof nist / sizeof nist[0]; i++) {
		sha256_buf(nist[i].msg, strlen(nist[i].msg), hex);
		tap_streq(hex, nist[i].hex, "NIST vector");
	}

	/* one million 'a', in chunks of 1, 2, ..., 97 bytes, cycling */
	{
		char a[97];
		sha256_ctx c;
		size_t left = 1000000, k = 0;

		memset(a, 'a', sizeof a);
		sha256_init(&c);
		while (left > 0) {
			size_t take = k % 97 + 1;
			if (take > left)
				take = left;
			sha256_update(&c, a, take);
			left -= take;
			k++;
		}
		sha256_hex(&c, hex);
		tap_streq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
		    "one million 'a' in uneven chunks");
	}

	for (size_t i = 0; i < sizeof pattern / sizeof pattern[0]; i++) {
		uint8_t *p = pattern_new(pattern[i].n);
		char name[64];
		sha256_ctx c;

		snprintf(name, sizeof name, "pattern of %zu bytes, one call", pattern[i].n);
		sha256_buf(p, pattern[i].n, hex);
		tap_streq(hex, pattern[i].hex, name);

		/* every split into two calls gives the same digest (small sizes) */
		if (pattern[i].n <= 128) {
			int same = 1;
			for (size_t cut = 0; cut <= pattern[i].n; cut++) {
				sha256_init(&c);
				sha256_update(&c, p, cut);
				sha256_update(&c, p + cut, pattern[i].n - cut);
				sha256_hex(&c, hex);
				same &= strcmp(hex, pattern[i].hex) == 0;
			}
			tap_ok(same, "pattern of %zu bytes, every split into two calls", pattern[i].n);
		}
		free(p);
	}

	/* sha256_final's raw digest agrees with the hex form */
	{
		uint8_t d[32];
		sha256_ctx c;
		char h2[65];

		sha256_init(&c);
		sha256_update(&c, "abc", 3);
		sha256_final(&c, d);
		for (int i = 0; i < 32; i++)
			snprintf(h2 + 2 * i, 3, "%02x", d[i]);
		tap_streq(h2, nist[1].hex, "sha256_final: raw digest of \"abc\"");
	}
}

static void
test_file(void)
{
	masq_err err = {0};
	char path[1100], hex[65];
	size_t n = 200 * 1024 + 13;
	uint8_t *p = pattern_new(n);
	FILE *fp;

	snprintf(path, sizeof path, "%s/pattern.bin", workdir);
	fp = fopen(path, "wb");
	tap_ok(fp != NULL && fwrite(p, 1, n, fp) == n && fclose(fp) == 0, "write a 200 KiB file");
	tap_ok(sha256_file(path, hex, &err) == 0, "sha256_file: reads it");
	tap_streq(hex, pattern[sizeof pattern / sizeof pattern[0] - 1].hex,
	    "sha256_file: over several 64 KiB reads");
	free(p);

	snprintf(path, sizeof path, "%s/empty.bin", workdir);
	fp = fopen(path, "wb");
	tap_ok(fp != NULL && fclose(fp) == 0, "write an empty file");
	tap_ok(sha256_file(path, hex, &err) == 0 && strcmp(hex, nist[0].hex) == 0,
	    "sha256_file: empty file");

	snprintf(path, sizeof path, "%s/no-such-file", workdir);
	memset(&err, 0, sizeof err);
	tap_ok(sha256_file(path, hex, &err) == -1 && err.status == MASQ_ERR_IO,
	    "sha256_file: missing file is an I/O error");
	tap_contains(err.msg, path, "sha256_file: the message names the path");

	memset(&err, 0, sizeof err);
	tap_ok(sha256_file(workdir, hex, &err) == -1 && err.status == MASQ_ERR_IO,
	    "sha256_file: a directory is an I/O error");
	tap_contains(err.msg, workdir, "sha256_file: the message names the directory");
	tap_diag("%s", err.msg);
}

int
main(void)
{
	masq_err err = {0};
	const char *bd = getenv("builddir");

	snprintf(workdir, sizeof workdir, "%s/work/test_sha256", bd && *bd ? bd : ".");
	if (masq_mkdir_p(workdir, &err) < 0) {
		printf("Bail out! %s\n", err.msg);
		return 99;
	}
	test_vectors();
	test_file();
	return tap_done();
}
