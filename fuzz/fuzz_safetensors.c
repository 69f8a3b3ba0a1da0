/*
 * fuzz_safetensors.c: the safetensors reader (core/safetensors.h).  The
 * input is one file; once st_open accepts it, every tensor is looked up
 * by name and every float tensor of up to 4096 elements converted to
 * float32, so what the validation lets through is also read.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/safetensors.h"
#include "fuzz/fuzz.h"

static char *path;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_init();
	path = fz_path("input.safetensors");
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	masq_err err = {0};
	st_file f;

	fz_write(path, data, size);
	if (st_open(&f, path, &err) == 0) {
		for (int i = 0; i < f.ntensors; i++) {
			const st_tensor *t = &f.tensors[i];
			if (st_find(&f, t->name) != t)
				fz_die("st_find(\"%s\") does not find the tensor of that name", t->name);
			/* the conversions are one loop per dtype: small tensors
			 * reach them all, big ones only cost time */
			if (t->nelem <= 4096)
				free(st_tensor_to_f32(t));
		}
		for (int i = 0; i < f.nmeta; i++)
			if (st_meta_get(&f, f.meta_keys[i]) == NULL)
				fz_die("st_meta_get(\"%s\") finds nothing", f.meta_keys[i]);
		st_close(&f);
	} else {
		fz_note("st_open", &err);
		if (err.msg[0] == '\0')
			fz_die("st_open failed without a message");
	}
	unlink(path);
	return 0;
}
