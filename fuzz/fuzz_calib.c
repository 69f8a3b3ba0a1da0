/*
 * fuzz_calib.c: the calibration set loader (calib_load, core/calib.h).
 * The input is the file; it is loaded with any width, then with the tiny
 * demo's (64) when that differs, as opening a session loads it.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/calib.h"
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
	path = fz_path("calib.safetensors");
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	masq_err err = {0};
	calib c;

	fz_write(path, data, size);
	if (calib_load(&c, path, 0, &err) == 0) {
		int h = c.hidden;
		calib_done(&c);
		if (h != 64) {
			if (calib_load(&c, path, 64, &err) == 0)
				fz_die("calib_load accepted hidden %d as 64", h);
			fz_note("calib_load with hidden 64", &err);
		}
	} else {
		fz_note("calib_load", &err);
		if (err.msg[0] == '\0')
			fz_die("calib_load failed without a message");
	}
	unlink(path);
	return 0;
}
