/*
 * util.h: memory, errors and small helpers shared by every floor.
 *
 * Three tiers of errors (STYLE.md item 6):
 *   - what the user can cause (a bad file, a bad option) is a masq_err filled
 *     by the failing function, which returns -1; the caller prints it and
 *     exits with masq_exit_code(err->status);
 *   - running out of memory or a broken environment is fatal(), which runs
 *     the registered clean-up hook (the UI restores the terminal) and exits;
 *   - numeric invariants are MASQ_ASSERT, always on.
 *
 *	masq_err err = {0};
 *	if (st_open(&f, path, &err) < 0) {
 *		fprintf(stderr, "masq: %s\n", err.msg);
 *		return masq_exit_code(err.status);
 *	}
 */
#ifndef MASQ_UTIL_H
#define MASQ_UTIL_H

#include <stddef.h>
#include <stdint.h>

typedef enum masq_status {
	MASQ_OK = 0,
	MASQ_ERR_USAGE,		/* bad command line or argument */
	MASQ_ERR_FORMAT,	/* a file is malformed or inconsistent */
	MASQ_ERR_IO,		/* a file could not be read or written */
	MASQ_ERR_MISMATCH,	/* results differ from what was recorded */
	MASQ_ERR_INTERNAL
} masq_status;

typedef struct masq_err {
	masq_status status;
	char msg[1024];
} masq_err;

/* Fill err (if not NULL) with a formatted message; always returns -1. */
int masq_err_set(masq_err *err, masq_status st, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Prefix an existing message: "prefix: old message". Returns -1. */
int masq_err_prefix(masq_err *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Exit status for a status: 0 ok, 1 mismatch, 2 usage/format/io, 3 internal. */
int masq_exit_code(masq_status st);
const char *masq_status_name(masq_status st);

/* Allocation that never returns NULL (fatal() on failure). */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* n * size with overflow detection; fatal() on overflow. */
size_t xmul(size_t n, size_t size);

/* Print "masq: fatal: ...", run the clean-up hook, exit(3). */
void fatal(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
/* Register a function fatal() calls before exiting (ui: endwin). */
void masq_set_fatal_hook(void (*hook)(void));

void masq_assert_fail(const char *expr, const char *file, int line)
	__attribute__((noreturn));
/*
 * MASQ_VECTOR_CLONES before a function with an elementwise loop: GCC
 * compiles it also for AVX-512 and AVX2 and picks at load time (ifunc).
 * Only for loops of exactly rounded IEEE operations (add, multiply,
 * divide, compare, copysign: no sums whose order the width would change,
 * no multiply-add GCC could fuse), so every clone gives the same bits.
 * Not under ThreadSanitizer: its instrumented ifunc resolver runs before
 * its runtime and crashes the loader.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__has_attribute) && \
    !defined(__SANITIZE_THREAD__)
#if __has_attribute(target_clones)
#define MASQ_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef MASQ_VECTOR_CLONES
#define MASQ_VECTOR_CLONES
#endif

/*
 * fn(ctx, lo, hi, tid) over 0..n-1 in nthreads contiguous ranges (at most
 * MASQ_MAX_THREADS, at most n), range 0 on this thread; a thread that
 * cannot start has its range run here.  The ranges depend only on n and
 * the thread count, so a computation whose items are independent gives
 * the same result for any split.
 */
#define MASQ_MAX_THREADS 16
typedef void (*masq_range_fn)(void *ctx, int lo, int hi, int tid);
void masq_parallel(int n, int nthreads, masq_range_fn fn, void *ctx);

#define MASQ_ASSERT(x) \
	do { if (!(x)) masq_assert_fail(#x, __FILE__, __LINE__); } while (0)

/* Wall-clock seconds from a monotonic clock. */
double masq_now(void);

/* Join a directory and a file name into a new string. */
char *masq_path_join(const char *dir, const char *name);
/* Open path for reading, refusing (MASQ_ERR_IO, -1) anything that is not a
 * regular file: the open never blocks (a FIFO in place of a file would
 * wait forever for a writer), the check is on the opened file (fstat).
 * Returns the descriptor. */
int masq_open_regular(const char *path, masq_err *err);
/* A file of a model directory that is a symbolic link must resolve inside
 * dir, or into a Hugging Face cache's blobs/ (dir being
 * .../snapshots/REV); else it is refused (a usage error naming both ends),
 * unless MASQ_FOLLOW_SYMLINKS=1.  A file that is not a link passes. */
int masq_check_within(const char *dir, const char *path, masq_err *err);
/* Read a whole (small) file into a NUL-terminated buffer; *len gets its size. */
char *masq_read_file(const char *path, size_t max, size_t *len, masq_err *err);
/* mkdir -p; returns -1 with err filled on failure. */
int masq_mkdir_p(const char *path, masq_err *err);
/* The entries of directory dir but "." and "..", in byte order (strcmp, not
 * the locale's collation: listings must not depend on LANG), as a new
 * array of new strings in *names; returns how many, or -1 with err. */
int masq_dir_list(const char *dir, char ***names, masq_err *err);
void masq_dir_list_free(char **names, int n);
/* Remove dir and the files in it (one level, what masq itself writes
 * there: a temporary export, a replay's scratch blobs). */
void masq_remove_flat_dir(const char *dir);
/* n bytes in decimal units for people ("812 B", "41.3 kB", "7.90 MB",
 * "12.4 GB"), into buf; returns buf. */
char *masq_fmt_bytes(uint64_t n, char *buf, size_t size);
/* A size as people write it: a number with an optional unit, decimal
 * (k, kB, M, MB, G, GB, T, TB) or binary (KiB, MiB, GiB, TiB), B or none
 * for bytes, case-insensitive, blanks allowed before the unit; finite and
 * positive.  -1 with err (MASQ_ERR_USAGE) naming the text otherwise. */
int masq_parse_bytes(const char *s, double *out, masq_err *err);

#endif
