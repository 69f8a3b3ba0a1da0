/*
 * faultshim.c: an LD_PRELOAD shim that makes the Nth write, fsync, rename,
 * truncate or file creation fail, for tests/faults.sh.
 *
 * It interposes the calls masq and the libraries it links (SQLite, jansson)
 * reach through the dynamic linker, as strace shows them:
 *
 *	write	write, pwrite, pwrite64, writev, pwritev, pwritev64, and the
 *		stdio calls that end in a write(2) glibc makes internally
 *		(out of an interposer's reach): fwrite, fputs, fputc, fprintf,
 *		vfprintf, and fflush and fclose when the stream holds
 *		unwritten output
 *	fsync	fsync, fdatasync
 *	rename	rename, renameat, renameat2
 *	truncate	ftruncate, ftruncate64, truncate (SQLite resizes its
 *		WAL and shm files with ftruncate)
 *	create	open, open64, openat, openat64 and creat with O_CREAT,
 *		mkdir, mkstemp, mkostemp, fopen, fopen64 with a mode that
 *		creates, when the name does not exist yet (creating is what
 *		a full disk refuses; opening an existing file is not)
 *
 * Controlled by the environment, read once when the shim is loaded:
 *
 *	FAULT_OPS=write,fsync,rename	which calls count (the default)
 *	FAULT_AT=N	fail the Nth counted call, from 1; 0 or unset: never
 *	FAULT_STICKY=1	fail every counted call from the Nth on (a full
 *		disk stays full), not only the Nth
 *	FAULT_ERRNO=ENOSPC	the errno of a failed call: ENOSPC (default),
 *		EIO, EDQUOT, EFBIG, EROFS or a number
 *	FAULT_PATHS=DIR	only calls on files under DIR count (an fd is
 *		mapped to its path through /proc/self/fd; a relative path is
 *		taken against the working directory), so writes to stdout and
 *		stderr never fail; DIR must be canonical (pwd -P)
 *	FAULT_EXCLUDE=DIR	calls on files under DIR never count
 *	FAULT_COUNT_FILE=F	at exit, write "calls C\ninjected I\n" to F:
 *		how many calls counted, how many were failed
 *	FAULT_LOG=F	append one line per counted call to F:
 *		"N OP KIND PATH", KIND file or dir (a call on a descriptor)
 *		or name (rename, create), with " FAILED" after a failed one
 *
 * A failed call does nothing and returns its error with errno set: -1, or
 * 0 items for fwrite, EOF for fputs, fputc and fflush (which also set the
 * stream's error indicator); fclose closes the stream, dropping its
 * unwritten output, and returns EOF.  The wrappers take no lock and
 * allocate nothing: the counters are atomic, paths are formed in stack
 * buffers with readlink, getcwd and fstat, and the next definitions are
 * looked up when the shim loads, so the shim is safe in threads and, as
 * far as the calls it wraps are, in signal handlers.  The shim is built without sanitizers; under an
 * ASan build of masq run it with ASAN_OPTIONS=verify_asan_link_order=0.
 *
 * Not config.h: its large-file defines would rename open, pwrite and the
 * others to their 64-bit names, which this file defines as well.
 */
#define _GNU_SOURCE 1
#undef _FILE_OFFSET_BITS

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum { OP_WRITE = 1, OP_FSYNC = 2, OP_RENAME = 4, OP_TRUNCATE = 8, OP_CREATE = 16 };

static int fs_ops = OP_WRITE | OP_FSYNC | OP_RENAME;
static long fs_at;			/* 0: never fail */
static int fs_sticky;
static int fs_errno = ENOSPC;
static char fs_prefix[PATH_MAX];	/* empty: every path */
static size_t fs_prefix_len;
static char fs_exclude[PATH_MAX];	/* empty: nothing */
static size_t fs_exclude_len;
static char fs_count_file[PATH_MAX];
static int fs_log_fd = -1;
static long fs_calls, fs_injected;	/* atomic */
static int fs_ready;

/* ---- the real functions ------------------------------------------------ */

/* The next definition of name after this shim (libasan's interceptor in an
 * ASan build, else libc's); looked up when the shim loads (fs_init), or on
 * a call before that. */
static void *
fs_next(void **slot, const char *name)
{
	void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);

	if (p == NULL) {
		p = dlsym(RTLD_NEXT, name);
		if (p == NULL)
			abort();
		__atomic_store_n(slot, p, __ATOMIC_RELEASE);
	}
	return p;
}
#define REAL(name, type) ((type)fs_next(&real_##name, #name))

static void *real_write, *real_pwrite, *real_pwrite64, *real_writev, *real_pwritev, *real_pwritev64;
static void *real_fsync, *real_fdatasync, *real_rename, *real_renameat, *real_renameat2;
static void *real_ftruncate, *real_ftruncate64, *real_truncate;
static void *real_open, *real_open64, *real_openat, *real_openat64, *real_creat, *real_mkdir;
static void *real_mkstemp, *real_mkostemp, *real_fopen, *real_fopen64;
static void *real_fwrite, *real_fputs, *real_fputc, *real_vfprintf, *real_fflush, *real_fclose;

/* ---- paths --------------------------------------------------------------- */

/* Copy s into buf at *k, bounded. */
static void
fs_append(char *buf, size_t n, size_t *k, const char *s)
{
	while (*s != '\0' && *k + 1 < n)
		buf[(*k)++] = *s++;
	buf[*k] = '\0';
}

/* Decimal digits of v into buf (at least 24 bytes). */
static const char *
fs_utoa(unsigned long v, char *buf)
{
	char *p = buf + 23;

	*p = '\0';
	do
		*--p = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	return p;
}

/* The path of fd into buf; "" when unknown. */
static void
fs_fd_path(int fd, char *buf, size_t n)
{
	char link[64], num[24];
	size_t k = 0;
	ssize_t got;

	buf[0] = '\0';
	if (fd < 0)
		return;
	fs_append(link, sizeof link, &k, "/proc/self/fd/");
	fs_append(link, sizeof link, &k, fs_utoa((unsigned long)fd, num));
	got = readlink(link, buf, n - 1);
	buf[got > 0 ? got : 0] = '\0';
}

/* path made absolute against directory fd dirfd (AT_FDCWD: the working
 * directory) into buf. */
static void
fs_abs_path(int dirfd, const char *path, char *buf, size_t n)
{
	size_t k;

	buf[0] = '\0';
	if (path == NULL)
		return;
	if (path[0] == '/') {
		k = 0;
		fs_append(buf, n, &k, path);
		return;
	}
	if (dirfd == AT_FDCWD) {
		if (getcwd(buf, n) == NULL)
			buf[0] = '\0';
	} else {
		fs_fd_path(dirfd, buf, n);
	}
	k = strlen(buf);
	fs_append(buf, n, &k, "/");
	fs_append(buf, n, &k, path);
}

/* 1 when path is dir or lies under it. */
static int
fs_in(const char *path, const char *dir, size_t len)
{
	if (strncmp(path, dir, len) != 0)
		return 0;
	return dir[len - 1] == '/' || path[len] == '\0' || path[len] == '/';
}

/* 1 when calls on path count: under FAULT_PATHS (or there is none), not
 * under FAULT_EXCLUDE. */
static int
fs_under(const char *path)
{
	if (fs_prefix_len > 0 && !fs_in(path, fs_prefix, fs_prefix_len))
		return 0;
	return fs_exclude_len == 0 || !fs_in(path, fs_exclude, fs_exclude_len);
}

/* ---- the decision -------------------------------------------------------- */

/* Count a call of kind op on path (when it counts) and say whether it must
 * fail; errno is set when it must.  kind is what the log says path is:
 * "file" or "dir" for a call on an open descriptor, "name" for one on a
 * name (rename, create). */
static int
fs_fail(int op, const char *what, const char *kind, const char *path)
{
	long k;
	int fail, e = errno;

	if (!__atomic_load_n(&fs_ready, __ATOMIC_ACQUIRE) || !(fs_ops & op) || !fs_under(path))
		return 0;
	k = __atomic_add_fetch(&fs_calls, 1, __ATOMIC_SEQ_CST);
	fail = fs_at > 0 && (k == fs_at || (fs_sticky && k > fs_at));
	if (fail)
		__atomic_add_fetch(&fs_injected, 1, __ATOMIC_SEQ_CST);
	if (fs_log_fd >= 0) {
		char line[PATH_MAX + 96], num[24];
		size_t n = 0;
		fs_append(line, sizeof line, &n, fs_utoa((unsigned long)k, num));
		fs_append(line, sizeof line, &n, " ");
		fs_append(line, sizeof line, &n, what);
		fs_append(line, sizeof line, &n, " ");
		fs_append(line, sizeof line, &n, kind);
		fs_append(line, sizeof line, &n, " ");
		fs_append(line, sizeof line, &n, path);
		fs_append(line, sizeof line, &n, fail ? " FAILED\n" : "\n");
		(void)!REAL(write, ssize_t (*)(int, const void *, size_t))(fs_log_fd, line, n);
	}
	errno = fail ? fs_errno : e;
	return fail;
}

/* fs_fail for a call on fd. */
static int
fs_fail_fd(int op, const char *what, int fd)
{
	char path[PATH_MAX];
	struct stat sb;
	int e = errno, dir;

	if (!__atomic_load_n(&fs_ready, __ATOMIC_ACQUIRE) || !(fs_ops & op))
		return 0;
	fs_fd_path(fd, path, sizeof path);
	dir = fstat(fd, &sb) == 0 && S_ISDIR(sb.st_mode);
	errno = e;
	if (path[0] == '\0')
		return 0;
	return fs_fail(op, what, dir ? "dir" : "file", path);
}

/* fs_fail for a call on a path relative to dirfd. */
static int
fs_fail_path(int op, const char *what, int dirfd, const char *p)
{
	char path[PATH_MAX];

	int e = errno;

	if (!__atomic_load_n(&fs_ready, __ATOMIC_ACQUIRE) || !(fs_ops & op))
		return 0;
	fs_abs_path(dirfd, p, path, sizeof path);
	errno = e;
	return fs_fail(op, what, "name", path);
}

/* 1 when stream fp holds output not yet handed to write(2). */
static int
fs_pending(FILE *fp)
{
#ifdef __GLIBC__
	return fp->_IO_write_ptr > fp->_IO_write_base;
#else
	(void)fp;
	return 1;
#endif
}

/* Mark stream fp failed, as a failed write(2) inside stdio does. */
static void
fs_stream_error(FILE *fp)
{
#ifdef __GLIBC__
	fp->_flags |= 0x20;	/* _IO_ERR_SEEN: ferror() is true */
#else
	(void)fp;
#endif
}

/* ---- set-up and the count at exit ---------------------------------------- */

static const struct {
	void **slot;
	const char *name;
} fs_syms[] = {
	{&real_write, "write"}, {&real_pwrite, "pwrite"}, {&real_pwrite64, "pwrite64"}, {&real_writev, "writev"},
	{&real_pwritev, "pwritev"}, {&real_pwritev64, "pwritev64"}, {&real_fsync, "fsync"},
	{&real_fdatasync, "fdatasync"}, {&real_rename, "rename"}, {&real_renameat, "renameat"},
	{&real_renameat2, "renameat2"}, {&real_ftruncate, "ftruncate"}, {&real_ftruncate64, "ftruncate64"},
	{&real_truncate, "truncate"}, {&real_open, "open"}, {&real_open64, "open64"}, {&real_openat, "openat"},
	{&real_openat64, "openat64"}, {&real_creat, "creat"}, {&real_mkdir, "mkdir"}, {&real_mkstemp, "mkstemp"},
	{&real_mkostemp, "mkostemp"}, {&real_fopen, "fopen"}, {&real_fopen64, "fopen64"}, {&real_fwrite, "fwrite"},
	{&real_fputs, "fputs"}, {&real_fputc, "fputc"}, {&real_vfprintf, "vfprintf"}, {&real_fflush, "fflush"},
	{&real_fclose, "fclose"},
};

static const struct {
	const char *name;
	int value;
} fs_errnos[] = {
	{"ENOSPC", ENOSPC}, {"EIO", EIO}, {"EDQUOT", EDQUOT}, {"EFBIG", EFBIG}, {"EROFS", EROFS},
};

__attribute__((constructor)) static void
fs_init(void)
{
	const char *v;

	/* dlsym is no call for a signal handler: look everything up now (a
	 * name this libc lacks is looked up again, and fails, if called) */
	for (size_t i = 0; i < sizeof fs_syms / sizeof fs_syms[0]; i++)
		if (*fs_syms[i].slot == NULL)
			__atomic_store_n(fs_syms[i].slot, dlsym(RTLD_NEXT, fs_syms[i].name), __ATOMIC_RELEASE);
	if ((v = getenv("FAULT_OPS")) != NULL) {
		fs_ops = 0;
		fs_ops |= strstr(v, "write") ? OP_WRITE : 0;
		fs_ops |= strstr(v, "fsync") ? OP_FSYNC : 0;
		fs_ops |= strstr(v, "rename") ? OP_RENAME : 0;
		fs_ops |= strstr(v, "truncate") ? OP_TRUNCATE : 0;
		fs_ops |= strstr(v, "create") ? OP_CREATE : 0;
	}
	if ((v = getenv("FAULT_AT")) != NULL)
		fs_at = strtol(v, NULL, 10);
	if ((v = getenv("FAULT_STICKY")) != NULL)
		fs_sticky = strcmp(v, "1") == 0;
	if ((v = getenv("FAULT_ERRNO")) != NULL) {
		for (size_t i = 0; i < sizeof fs_errnos / sizeof fs_errnos[0]; i++)
			if (strcmp(v, fs_errnos[i].name) == 0)
				fs_errno = fs_errnos[i].value;
		if (v[0] >= '0' && v[0] <= '9')
			fs_errno = (int)strtol(v, NULL, 10);
	}
	if ((v = getenv("FAULT_PATHS")) != NULL && strlen(v) < sizeof fs_prefix) {
		strcpy(fs_prefix, v);
		fs_prefix_len = strlen(fs_prefix);
	}
	if ((v = getenv("FAULT_EXCLUDE")) != NULL && strlen(v) < sizeof fs_exclude) {
		strcpy(fs_exclude, v);
		fs_exclude_len = strlen(fs_exclude);
	}
	if ((v = getenv("FAULT_COUNT_FILE")) != NULL && strlen(v) < sizeof fs_count_file)
		strcpy(fs_count_file, v);
	if ((v = getenv("FAULT_LOG")) != NULL)
		fs_log_fd = REAL(open, int (*)(const char *, int, ...))(v,
		    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
	__atomic_store_n(&fs_ready, 1, __ATOMIC_RELEASE);
}

__attribute__((destructor)) static void
fs_done(void)
{
	char text[80], num[24];
	size_t n = 0;
	int fd;

	__atomic_store_n(&fs_ready, 0, __ATOMIC_RELEASE);
	if (fs_count_file[0] == '\0')
		return;
	fs_append(text, sizeof text, &n, "calls ");
	fs_append(text, sizeof text, &n, fs_utoa((unsigned long)__atomic_load_n(&fs_calls, __ATOMIC_SEQ_CST), num));
	fs_append(text, sizeof text, &n, "\ninjected ");
	fs_append(text, sizeof text, &n, fs_utoa((unsigned long)__atomic_load_n(&fs_injected, __ATOMIC_SEQ_CST), num));
	fs_append(text, sizeof text, &n, "\n");
	fd = REAL(open, int (*)(const char *, int, ...))(fs_count_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0666);
	if (fd >= 0) {
		(void)!REAL(write, ssize_t (*)(int, const void *, size_t))(fd, text, n);
		close(fd);
	}
}

/* ---- write ------------------------------------------------------------------ */

ssize_t
write(int fd, const void *buf, size_t n)
{
	if (fs_fail_fd(OP_WRITE, "write", fd))
		return -1;
	return REAL(write, ssize_t (*)(int, const void *, size_t))(fd, buf, n);
}

ssize_t
pwrite(int fd, const void *buf, size_t n, off_t off)
{
	if (fs_fail_fd(OP_WRITE, "pwrite", fd))
		return -1;
	return REAL(pwrite, ssize_t (*)(int, const void *, size_t, off_t))(fd, buf, n, off);
}

ssize_t
pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
	if (fs_fail_fd(OP_WRITE, "pwrite64", fd))
		return -1;
	return REAL(pwrite64, ssize_t (*)(int, const void *, size_t, off64_t))(fd, buf, n, off);
}

ssize_t
writev(int fd, const struct iovec *iov, int cnt)
{
	if (fs_fail_fd(OP_WRITE, "writev", fd))
		return -1;
	return REAL(writev, ssize_t (*)(int, const struct iovec *, int))(fd, iov, cnt);
}

ssize_t
pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	if (fs_fail_fd(OP_WRITE, "pwritev", fd))
		return -1;
	return REAL(pwritev, ssize_t (*)(int, const struct iovec *, int, off_t))(fd, iov, cnt, off);
}

ssize_t
pwritev64(int fd, const struct iovec *iov, int cnt, off64_t off)
{
	if (fs_fail_fd(OP_WRITE, "pwritev64", fd))
		return -1;
	return REAL(pwritev64, ssize_t (*)(int, const struct iovec *, int, off64_t))(fd, iov, cnt, off);
}

size_t
fwrite(const void *p, size_t size, size_t n, FILE *fp)
{
	if (size > 0 && n > 0 && fs_fail_fd(OP_WRITE, "fwrite", fileno(fp))) {
		fs_stream_error(fp);
		return 0;
	}
	return REAL(fwrite, size_t (*)(const void *, size_t, size_t, FILE *))(p, size, n, fp);
}

int
fputs(const char *s, FILE *fp)
{
	if (s[0] != '\0' && fs_fail_fd(OP_WRITE, "fputs", fileno(fp))) {
		fs_stream_error(fp);
		return EOF;
	}
	return REAL(fputs, int (*)(const char *, FILE *))(s, fp);
}

int
fputc(int c, FILE *fp)
{
	if (fs_fail_fd(OP_WRITE, "fputc", fileno(fp))) {
		fs_stream_error(fp);
		return EOF;
	}
	return REAL(fputc, int (*)(int, FILE *))(c, fp);
}

int
vfprintf(FILE *fp, const char *fmt, va_list ap)
{
	if (fs_fail_fd(OP_WRITE, "vfprintf", fileno(fp))) {
		fs_stream_error(fp);
		return -1;
	}
	return REAL(vfprintf, int (*)(FILE *, const char *, va_list))(fp, fmt, ap);
}

int
fprintf(FILE *fp, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vfprintf(fp, fmt, ap);
	va_end(ap);
	return r;
}

int
fflush(FILE *fp)
{
	if (fp != NULL && fs_pending(fp) && fs_fail_fd(OP_WRITE, "fflush", fileno(fp))) {
		fs_stream_error(fp);
		return EOF;
	}
	return REAL(fflush, int (*)(FILE *))(fp);
}

int
fclose(FILE *fp)
{
	if (fs_pending(fp) && fs_fail_fd(OP_WRITE, "fclose", fileno(fp))) {
		int e = errno;
#ifdef __GLIBC__
		fp->_IO_write_ptr = fp->_IO_write_base;	/* the output is lost */
#endif
		REAL(fclose, int (*)(FILE *))(fp);
		errno = e;
		return EOF;
	}
	return REAL(fclose, int (*)(FILE *))(fp);
}

/* ---- fsync ------------------------------------------------------------------ */

int
fsync(int fd)
{
	if (fs_fail_fd(OP_FSYNC, "fsync", fd))
		return -1;
	return REAL(fsync, int (*)(int))(fd);
}

int
fdatasync(int fd)
{
	if (fs_fail_fd(OP_FSYNC, "fdatasync", fd))
		return -1;
	return REAL(fdatasync, int (*)(int))(fd);
}

/* ---- rename ---------------------------------------------------------------- */

int
rename(const char *from, const char *to)
{
	if (fs_fail_path(OP_RENAME, "rename", AT_FDCWD, from))
		return -1;
	return REAL(rename, int (*)(const char *, const char *))(from, to);
}

int
renameat(int fromfd, const char *from, int tofd, const char *to)
{
	if (fs_fail_path(OP_RENAME, "renameat", fromfd, from))
		return -1;
	return REAL(renameat, int (*)(int, const char *, int, const char *))(fromfd, from, tofd, to);
}

int
renameat2(int fromfd, const char *from, int tofd, const char *to, unsigned int flags)
{
	if (fs_fail_path(OP_RENAME, "renameat2", fromfd, from))
		return -1;
	return REAL(renameat2, int (*)(int, const char *, int, const char *, unsigned int))(fromfd, from, tofd,
	    to, flags);
}

/* ---- truncate -------------------------------------------------------------- */

int
ftruncate(int fd, off_t len)
{
	if (fs_fail_fd(OP_TRUNCATE, "ftruncate", fd))
		return -1;
	return REAL(ftruncate, int (*)(int, off_t))(fd, len);
}

int
ftruncate64(int fd, off64_t len)
{
	if (fs_fail_fd(OP_TRUNCATE, "ftruncate64", fd))
		return -1;
	return REAL(ftruncate64, int (*)(int, off64_t))(fd, len);
}

int
truncate(const char *path, off_t len)
{
	if (fs_fail_path(OP_TRUNCATE, "truncate", AT_FDCWD, path))
		return -1;
	return REAL(truncate, int (*)(const char *, off_t))(path, len);
}

/* ---- create ----------------------------------------------------------------- */

/* 1 when path (against dirfd) names nothing: only then can creating it run
 * out of space; an existing file or directory is opened, or refused with
 * EEXIST, whatever the disk holds. */
static int
fs_absent(int dirfd, const char *path)
{
	struct stat sb;
	int e = errno, r;

	if (!(fs_ops & OP_CREATE))
		return 0;
	r = fstatat(dirfd, path, &sb, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT;
	errno = e;
	return r;
}

/* 1 when open flags may create a file. */
static int
fs_creates(int flags)
{
#ifdef O_TMPFILE
	if ((flags & O_TMPFILE) == O_TMPFILE)
		return 1;
#endif
	return (flags & O_CREAT) != 0;
}

/* The mode argument of an open call with flags. */
#define FS_MODE(flags, last) \
	mode_t mode = 0; \
	if (fs_creates(flags)) { \
		va_list ap; \
		va_start(ap, last); \
		mode = (mode_t)va_arg(ap, int); \
		va_end(ap); \
	}

int
open(const char *path, int flags, ...)
{
	FS_MODE(flags, flags);
	if (fs_creates(flags) && fs_absent(AT_FDCWD, path) &&
	    fs_fail_path(OP_CREATE, "open", AT_FDCWD, path))
		return -1;
	return REAL(open, int (*)(const char *, int, ...))(path, flags, mode);
}

int
open64(const char *path, int flags, ...)
{
	FS_MODE(flags, flags);
	if (fs_creates(flags) && fs_absent(AT_FDCWD, path) &&
	    fs_fail_path(OP_CREATE, "open64", AT_FDCWD, path))
		return -1;
	return REAL(open64, int (*)(const char *, int, ...))(path, flags, mode);
}

int
openat(int dirfd, const char *path, int flags, ...)
{
	FS_MODE(flags, flags);
	if (fs_creates(flags) && fs_absent(dirfd, path) &&
	    fs_fail_path(OP_CREATE, "openat", dirfd, path))
		return -1;
	return REAL(openat, int (*)(int, const char *, int, ...))(dirfd, path, flags, mode);
}

int
openat64(int dirfd, const char *path, int flags, ...)
{
	FS_MODE(flags, flags);
	if (fs_creates(flags) && fs_absent(dirfd, path) &&
	    fs_fail_path(OP_CREATE, "openat64", dirfd, path))
		return -1;
	return REAL(openat64, int (*)(int, const char *, int, ...))(dirfd, path, flags, mode);
}

int
creat(const char *path, mode_t mode)
{
	if (fs_absent(AT_FDCWD, path) && fs_fail_path(OP_CREATE, "creat", AT_FDCWD, path))
		return -1;
	return REAL(creat, int (*)(const char *, mode_t))(path, mode);
}

int
mkdir(const char *path, mode_t mode)
{
	if (fs_absent(AT_FDCWD, path) && fs_fail_path(OP_CREATE, "mkdir", AT_FDCWD, path))
		return -1;
	return REAL(mkdir, int (*)(const char *, mode_t))(path, mode);
}

int
mkstemp(char *tmpl)
{
	if (fs_fail_path(OP_CREATE, "mkstemp", AT_FDCWD, tmpl))
		return -1;
	return REAL(mkstemp, int (*)(char *))(tmpl);
}

int
mkostemp(char *tmpl, int flags)
{
	if (fs_fail_path(OP_CREATE, "mkostemp", AT_FDCWD, tmpl))
		return -1;
	return REAL(mkostemp, int (*)(char *, int))(tmpl, flags);
}

/* 1 when an fopen mode creates the file. */
static int
fs_mode_creates(const char *mode)
{
	return mode != NULL && (mode[0] == 'w' || mode[0] == 'a');
}

FILE *
fopen(const char *path, const char *mode)
{
	if (fs_mode_creates(mode) && fs_absent(AT_FDCWD, path) &&
	    fs_fail_path(OP_CREATE, "fopen", AT_FDCWD, path))
		return NULL;
	return REAL(fopen, FILE *(*)(const char *, const char *))(path, mode);
}

FILE *
fopen64(const char *path, const char *mode)
{
	if (fs_mode_creates(mode) && fs_absent(AT_FDCWD, path) &&
	    fs_fail_path(OP_CREATE, "fopen64", AT_FDCWD, path))
		return NULL;
	return REAL(fopen64, FILE *(*)(const char *, const char *))(path, mode);
}
