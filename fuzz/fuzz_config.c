/*
 * fuzz_config.c: config.json through the model config loader
 * (model_config_load, core/model.h).  The input is the file.  When the
 * loader accepts it, the model opens with it against the tiny demo's
 * checkpoint (model_open checks every tensor against the config), and
 * when that opens too, the first layer's weights are loaded.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/model.h"
#include "fuzz/fuzz.h"

static char *dir, *path;

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
	char *src = masq_path_join(fz_demo_model(), "model.safetensors");
	char *dst = masq_path_join(dir, "model.safetensors");
	fz_copy(src, dst);
	free(src);
	free(dst);
	path = masq_path_join(dir, "config.json");
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	masq_err err = {0};
	model_config c;
	model m;

	fz_write(path, data, size);
	if (model_config_load(&c, path, &err) == 0) {
		if (model_open(&m, dir, &err) == 0) {
			layer_weights w;
			(void)model_param_count(&m);
			if (m.cfg.n_layers > 0 && layer_weights_load(&w, &m, 0, &err) == 0)
				layer_weights_done(&w);
			else
				fz_note("layer_weights_load", &err);
			model_close(&m);
		} else {
			fz_note("model_open", &err);
		}
	} else {
		fz_note("model_config_load", &err);
		if (err.msg[0] == '\0')
			fz_die("model_config_load failed without a message");
	}
	unlink(path);
	return 0;
}
