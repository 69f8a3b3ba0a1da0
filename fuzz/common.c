/*
 * common.c: the scratch directory, files, and the tiny demo of the
 * harnesses (fuzz.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/engine.h"
#include "core/demo.h"
#include "fuzz/fuzz.h"

static char *scratch;		/* the scratch directory */
static pid_t scratch_pid;	/* the process that made it (a fork must not remove it) */
static char *demo_model, *demo_calib;
static model_config demo_cfg;
static int demo_done;

void
fz_die(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "fuzz harness: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	abort();
}

void
fz_note(const char *what, const masq_err *err)
{
	static int verbose = -1;
	if (verbose < 0)
		verbose = getenv("FUZZ_VERBOSE") != NULL && *getenv("FUZZ_VERBOSE") != '\0';
	if (verbose)
		fprintf(stderr, "%s: %s\n", what, err->msg[0] ? err->msg : "(no message)");
}

static int
rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(p);
	else
		unlink(p);
	return 0;
}

void
fz_rm_rf(const char *path)
{
	struct stat sb;
	if (lstat(path, &sb) != 0)
		return;
	if (!S_ISDIR(sb.st_mode)) {
		unlink(path);
		return;
	}
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void
fz_clear_dir(const char *dir)
{
	char **names;
	int n = masq_dir_list(dir, &names, NULL);
	for (int i = 0; i < n; i++) {
		char *p = masq_path_join(dir, names[i]);
		fz_rm_rf(p);
		free(p);
	}
	if (n >= 0)
		masq_dir_list_free(names, n);
}

static void
cleanup(void)
{
	if (scratch != NULL && getpid() == scratch_pid)
		fz_rm_rf(scratch);
	free(scratch);
	scratch = NULL;
	free(demo_model);
	free(demo_calib);
	demo_model = demo_calib = NULL;
}

void
fz_init(void)
{
	if (scratch != NULL)
		return;
	const char *t = getenv("TMPDIR");
	scratch = masq_path_join(t && *t ? t : "/tmp", "masq-fuzz-XXXXXX");
	if (mkdtemp(scratch) == NULL)
		fz_die("%s: %s", scratch, strerror(errno));
	scratch_pid = getpid();
	atexit(cleanup);
	/* one BLAS thread: the harness is one process per core */
	masq_blas_set_threads(1);
}

const char *
fz_dir(void)
{
	fz_init();
	return scratch;
}

char *
fz_path(const char *name)
{
	return masq_path_join(fz_dir(), name);
}

void
fz_write(const char *path, const void *data, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	const char *p = data;
	if (fd < 0)
		fz_die("%s: %s", path, strerror(errno));
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			fz_die("%s: write: %s", path, strerror(errno));
		p += w;
		n -= (size_t)w;
	}
	if (close(fd) != 0)
		fz_die("%s: close: %s", path, strerror(errno));
}

void *
fz_read(const char *path, size_t *n)
{
	masq_err err = {0};
	void *p = masq_read_file(path, 1u << 30, n, &err);
	if (p == NULL)
		fz_die("%s", err.msg);
	return p;
}

void
fz_copy(const char *src, const char *dst)
{
	size_t n;
	void *p = fz_read(src, &n);
	fz_write(dst, p, n);
	free(p);
}

static void
demo_make(void)
{
	masq_err err = {0};
	demo_preset pr;
	if (demo_done)
		return;
	char *d = fz_path("demo");
	if (demo_preset_get("tiny", &pr) < 0 || demo_write(d, &pr, DEMO_DEFAULT_SEED, &err) < 0)
		fz_die("the tiny demo: %s", err.msg);
	demo_model = masq_path_join(d, "model");
	demo_calib = masq_path_join(d, "calib.safetensors");
	char *cfg = masq_path_join(demo_model, "config.json");
	if (model_config_load(&demo_cfg, cfg, &err) < 0)
		fz_die("the tiny demo's config: %s", err.msg);
	free(cfg);
	free(d);
	demo_done = 1;
}

const char *
fz_demo_model(void)
{
	demo_make();
	return demo_model;
}

const char *
fz_demo_calib(void)
{
	demo_make();
	return demo_calib;
}

const model_config *
fz_demo_config(void)
{
	demo_make();
	return &demo_cfg;
}
