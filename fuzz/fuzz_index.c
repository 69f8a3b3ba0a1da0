/*
 * fuzz_index.c: a sharded model directory through the shard-set opener
 * (st_set_open_dir, core/safetensors.h): model.safetensors.index.json and
 * the files it names.
 *
 * The input is the index's text, then any number of files, each
 * introduced by a line "@@@ NAME" (FZ_SEP below: a newline, "@@@ ", the
 * name, a newline) and holding the bytes up to the next one:
 *
 *	{"metadata": {...}, "weight_map": {"a": "model-00001-of-00002.safetensors", ...}}
 *	@@@ model-00001-of-00002.safetensors
 *	<the shard's bytes>
 *	@@@ model-00002-of-00002.safetensors
 *	<...>
 *
 * An empty index part writes no index (the opener then looks for
 * model.safetensors).  A name is a plain file name of at most 100 bytes of
 * [A-Za-z0-9._-] (not "." or ".."); a part with another name is dropped,
 * so that nothing is written outside the model directory.  Once the set
 * opens, every tensor is found by name and its file named, and the small
 * float tensors converted.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/safetensors.h"
#include "fuzz/fuzz.h"

#define FZ_SEP "\n@@@ "

static char *dir;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	masq_err err = {0};
	(void)argc;
	(void)argv;
	fz_init();
	dir = fz_path("model");
	if (masq_mkdir_p(dir, &err) < 0)
		fz_die("%s", err.msg);
	return 0;
}

static int
plain_name(const char *s, size_t n)
{
	if (n == 0 || n > 100 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
		    s[i] == '.' || s[i] == '_' || s[i] == '-'))
			return 0;
	return 1;
}

/* Write the part [p, end) named name (n bytes) into the directory. */
static void
put(const char *name, size_t n, const uint8_t *p, const uint8_t *end)
{
	char nm[128];
	if (!plain_name(name, n))
		return;
	memcpy(nm, name, n);
	nm[n] = '\0';
	char *path = masq_path_join(dir, nm);
	fz_write(path, p, (size_t)(end - p));
	free(path);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	masq_err err = {0};
	const uint8_t *end = data + size;
	const size_t sl = sizeof FZ_SEP - 1;
	st_set s;

	/* the parts: [data, first separator) is the index */
	const uint8_t *p = data, *q = memmem(p, size, FZ_SEP, sl);
	const char *name = "model.safetensors.index.json";
	size_t nlen = strlen(name);
	for (;;) {
		const uint8_t *stop = q ? q : end;
		if (!(p == data && stop == data))	/* an empty index part: no index */
			put(name, nlen, p, stop);
		if (q == NULL)
			break;
		/* the name runs to the end of the line */
		const uint8_t *nm = q + sl, *nl = memchr(nm, '\n', (size_t)(end - nm));
		if (nl == NULL)
			break;
		name = (const char *)nm;
		nlen = (size_t)(nl - nm);
		p = nl + 1;
		q = memmem(p, (size_t)(end - p), FZ_SEP, sl);
	}

	if (st_set_open_dir(&s, dir, &err) == 0) {
		for (int i = 0; i < s.ntensors; i++) {
			const st_tensor *t = s.index[i];
			if (st_set_find(&s, t->name) != t)
				fz_die("st_set_find(\"%s\") does not find the tensor of that name", t->name);
			if (st_set_file_path(&s, t) == NULL)
				fz_die("tensor \"%s\" has no file", t->name);
			if (t->nelem <= 4096)
				free(st_tensor_to_f32(t));
		}
		st_set_close(&s);
	} else {
		fz_note("st_set_open_dir", &err);
		if (err.msg[0] == '\0')
			fz_die("st_set_open_dir failed without a message");
	}
	fz_clear_dir(dir);
	return 0;
}
