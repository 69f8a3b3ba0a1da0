/*
 * fuzz_plan.c: the plan blob reader (qplan_read, core/qplan.h), against
 * the tiny demo's config.  The input is the file.  A plan it accepts is
 * compared with itself (qplan_compare must find it equal) and written
 * again; the copy must read back.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/qplan.h"
#include "fuzz/fuzz.h"

static char *path, *copy;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_init();
	(void)fz_demo_config();
	path = fz_path("plan.safetensors");
	copy = fz_path("plan-copy.safetensors");
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	masq_err err = {0};
	const model_config *c = fz_demo_config();
	qplan_layer q, r;

	fz_write(path, data, size);
	if (qplan_read(&q, c, path, &err) == 0) {
		double fac, cmc;
		char fac_at[64], cmc_at[64], what[256];
		if (qplan_compare(&q, &q, &fac, fac_at, &cmc, cmc_at, sizeof fac_at, what, sizeof what) < 0)
			fz_die("a plan differs from itself: %s", what);
		if (qplan_write(&q, copy, &err) < 0)
			fz_die("a plan that reads does not write: %s", err.msg);
		if (qplan_read(&r, c, copy, &err) < 0)
			fz_die("a plan written from one that reads does not read back: %s", err.msg);
		qplan_layer_done(&r);
		qplan_layer_done(&q);
		unlink(copy);
	} else {
		fz_note("qplan_read", &err);
		if (err.msg[0] == '\0')
			fz_die("qplan_read failed without a message");
	}
	unlink(path);
	return 0;
}
