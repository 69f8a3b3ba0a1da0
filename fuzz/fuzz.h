/*
 * fuzz.h: what the libFuzzer harnesses of fuzz/ share (HACKING.md,
 * Fuzzing): a per-process scratch directory, removed at exit; writing the
 * input as a real file (the readers mmap files and refuse anything that is
 * not regular); the tiny demo, written once per process; and the recorded
 * sessions the session targets start from (recipes.c), which the seed
 * writer (make_seeds.c) records the same way, so that the blobs their
 * events name exist in every harness's own blob directory.
 *
 *	int LLVMFuzzerInitialize(int *argc, char ***argv) { fz_init(); return 0; }
 *	int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
 *		char *p = fz_path("input.safetensors");
 *		fz_write(p, d, n);
 *		... st_open(&f, p, &err) ...
 *		unlink(p);
 *		free(p);
 *		return 0;
 *	}
 *
 * Nothing here keeps state that one input could leave for the next: the
 * demo and the template files are written at start-up and only read.
 */
#ifndef MASQ_FUZZ_H
#define MASQ_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include "core/model.h"
#include "core/util.h"

/* Create the scratch directory ($TMPDIR/masq-fuzz-XXXXXX) and register
 * its removal at exit; one BLAS thread.  Idempotent. */
void fz_init(void);
/* The scratch directory. */
const char *fz_dir(void);
/* A new string: the scratch directory joined with name. */
char *fz_path(const char *name);
/* Write n bytes to path as a new regular file (aborts on an I/O error:
 * that is the machine, not a finding). */
void fz_write(const char *path, const void *data, size_t n);
/* Read a whole file (aborts when it cannot); *n gets its size. */
void *fz_read(const char *path, size_t *n);
/* Copy file src to dst. */
void fz_copy(const char *src, const char *dst);
/* Remove path and, if it is a directory, everything under it. */
void fz_rm_rf(const char *path);
/* Remove what is in directory dir (not dir itself). */
void fz_clear_dir(const char *dir);
/* With FUZZ_VERBOSE set in the environment, print what refused the input
 * (err's message, after what) on stderr: how a finding is read, and how a
 * regression case's expected message is found. */
void fz_note(const char *what, const masq_err *err);
/* Abort with a message: the harness itself could not do its work. */
void fz_die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* The tiny demo under the scratch directory (written on first use). */
const char *fz_demo_model(void);
const char *fz_demo_calib(void);
/* Its config.json, loaded. */
const model_config *fz_demo_config(void);

/* The recorded sessions every session target starts from, on the tiny
 * demo at model_dir/calib_path (the paths are recorded as given):
 * FZ_RECIPES sessions, each a different walk through the command table,
 * recorded into the database at db_path with their blobs beside it. */
#define FZ_RECIPES 6
extern const char *const fz_recipe_names[FZ_RECIPES];
void fz_recipes_record(const char *db_path, const char *model_dir, const char *calib_path);

/* Structure-aware mutations (mutate.c), for LLVMFuzzerCustomMutator: one
 * value of a JSON text changed, removed or repeated (a new string, NULL
 * when text is not JSON); one line of a fuzz_events input changed, left
 * out, repeated or moved; one change to a session database through SQLite
 * (a payload's value, an event's name or kind, an event left out, a
 * session's column or settings, a session copied).  Each falls back to
 * libFuzzer's byte mutations a third of the time and whenever the result
 * would not fit max. */
size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max);
unsigned fz_rand(unsigned *state);
char *fz_json_mutate(const char *text, size_t len, unsigned *state);
size_t fz_events_mutate(uint8_t *data, size_t size, size_t max, unsigned seed);
size_t fz_db_mutate(uint8_t *data, size_t size, size_t max, unsigned seed);

/* The events input of fuzz_events (one line each, see fuzz_events.c):
 * session sid of db_path as text, a new string. */
char *fz_events_text(const char *db_path, int64_t sid);

#endif
