#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"

static void (*fatal_hook)(void);

int
masq_err_set(masq_err *err, masq_status st, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL)
		return -1;
	err->status = st;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof err->msg, fmt, ap);
	va_end(ap);
	return -1;
}

int
masq_err_prefix(masq_err *err, const char *fmt, ...)
{
	char pre[256];
	size_t lp, lm, cap = sizeof err->msg;
	va_list ap;

	if (err == NULL)
		return -1;
	va_start(ap, fmt);
	vsnprintf(pre, sizeof pre, fmt, ap);
	va_end(ap);
	/* "pre: old", cut at the buffer's end */
	lp = strlen(pre) + 2;
	lm = strnlen(err->msg, cap - 1);
	if (lp + lm >= cap)
		lm = cap - 1 - lp;
	memmove(err->msg + lp, err->msg, lm);
	memcpy(err->msg, pre, lp - 2);
	err->msg[lp - 2] = ':';
	err->msg[lp - 1] = ' ';
	err->msg[lp + lm] = '\0';
	return -1;
}

int
masq_exit_code(masq_status st)
{
	switch (st) {
	case MASQ_OK:
		return 0;
	case MASQ_ERR_MISMATCH:
		return 1;
	case MASQ_ERR_INTERNAL:
		return 3;
	default:
		return 2;
	}
}

const char *
masq_status_name(masq_status st)
{
	static const char *const names[] = {
		"ok", "usage error", "format error", "i/o error", "mismatch", "internal error"
	};
	if ((unsigned)st < sizeof names / sizeof names[0])
		return names[st];
	return "unknown error";
}

void
masq_set_fatal_hook(void (*hook)(void))
{
	fatal_hook = hook;
}

void
fatal(const char *fmt, ...)
{
	va_list ap;

	if (fatal_hook != NULL) {
		void (*h)(void) = fatal_hook;
		fatal_hook = NULL;
		h();
	}
	fflush(stdout);
	fputs("masq: fatal: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(3);
}

void
masq_assert_fail(const char *expr, const char *file, int line)
{
	fatal("assertion failed: %s (%s:%d)", expr, file, line);
}

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (p == NULL)
		fatal("out of memory allocating %zu bytes", n);
	return p;
}

void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (p == NULL)
		fatal("out of memory allocating %zu x %zu bytes", n, size);
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (q == NULL)
		fatal("out of memory reallocating %zu bytes", n);
	return q;
}

char *
xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = xmalloc(n);
	memcpy(p, s, n);
	return p;
}

size_t
xmul(size_t n, size_t size)
{
	if (size != 0 && n > SIZE_MAX / size)
		fatal("size overflow: %zu x %zu", n, size);
	return n * size;
}

double
masq_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

char *
masq_path_join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *p = xmalloc(a + b + 2);
	memcpy(p, dir, a);
	if (a > 0 && dir[a - 1] != '/')
		p[a++] = '/';
	memcpy(p + a, name, b + 1);
	return p;
}

int
masq_open_regular(const char *path, masq_err *err)
{
	struct stat sb;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return masq_err_set(err, MASQ_ERR_IO, "%s: %s", path, strerror(errno));
	if (fstat(fd, &sb) < 0) {
		int e = errno;
		close(fd);
		return masq_err_set(err, MASQ_ERR_IO, "%s: %s", path, strerror(e));
	}
	if (!S_ISREG(sb.st_mode)) {
		close(fd);
		return masq_err_set(err, MASQ_ERR_IO, "%s: not a regular file (%s)", path,
		    S_ISFIFO(sb.st_mode) ? "a FIFO" : S_ISDIR(sb.st_mode) ? "a directory" :
		    S_ISCHR(sb.st_mode) || S_ISBLK(sb.st_mode) ? "a device" : S_ISSOCK(sb.st_mode) ? "a socket" : "not a file");
	}
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	return fd;
}

/* p starts with the directory d (a prefix that ends at a '/'). */
static int
path_under(const char *p, const char *d)
{
	size_t n = strlen(d);
	return strncmp(p, d, n) == 0 && (p[n] == '/' || (n > 0 && d[n - 1] == '/'));
}

int
masq_check_within(const char *dir, const char *path, masq_err *err)
{
	struct stat sb;
	if (lstat(path, &sb) < 0 || !S_ISLNK(sb.st_mode))
		return 0;	/* absent (the caller says so) or not a link */
	const char *follow = getenv("MASQ_FOLLOW_SYMLINKS");
	if (follow != NULL && strcmp(follow, "1") == 0)
		return 0;
	char *rd = realpath(dir, NULL), *rt = realpath(path, NULL);
	int ok = 0;
	if (rd != NULL && rt != NULL) {
		ok = path_under(rt, rd);
		/* a Hugging Face cache: REPO/snapshots/REV/name -> REPO/blobs/HASH */
		char *s = strrchr(rd, '/');
		if (!ok && s != NULL && s > rd) {
			char *snap = s;
			while (snap > rd && snap[-1] != '/')
				snap--;
			if (s - snap == 9 && strncmp(snap, "snapshots", 9) == 0 && snap > rd) {
				size_t root = (size_t)(snap - rd);	/* REPO/ */
				char *blobs = xmalloc(root + 8);
				memcpy(blobs, rd, root);
				strcpy(blobs + root, "blobs");
				ok = path_under(rt, blobs);
				free(blobs);
			}
		}
	}
	int rc = 0;
	if (!ok)
		rc = masq_err_set(err, MASQ_ERR_USAGE, "%s is a symbolic link to %s, outside the model directory: masq "
		    "follows links only within it or into a Hugging Face cache's blobs/ (set MASQ_FOLLOW_SYMLINKS=1 to "
		    "follow it)", path, rt != NULL ? rt : "a file that does not exist");
	free(rd);
	free(rt);
	return rc;
}

char *
masq_read_file(const char *path, size_t max, size_t *len, masq_err *err)
{
	FILE *fp;
	char *buf;
	size_t cap = 4096, n = 0;

	int fd = masq_open_regular(path, err);
	if (fd < 0)
		return NULL;
	fp = fdopen(fd, "rb");
	if (fp == NULL) {
		masq_err_set(err, MASQ_ERR_IO, "%s: %s", path, strerror(errno));
		close(fd);
		return NULL;
	}
	buf = xmalloc(cap + 1);
	for (;;) {
		size_t got = fread(buf + n, 1, cap - n, fp);
		n += got;
		if (n > max) {
			free(buf);
			fclose(fp);
			masq_err_set(err, MASQ_ERR_FORMAT, "%s: file larger than %zu bytes", path, max);
			return NULL;
		}
		if (got == 0)
			break;
		if (n == cap) {
			cap *= 2;
			buf = xrealloc(buf, cap + 1);
		}
	}
	if (ferror(fp)) {
		free(buf);
		fclose(fp);
		masq_err_set(err, MASQ_ERR_IO, "%s: read error", path);
		return NULL;
	}
	fclose(fp);
	buf[n] = '\0';
	if (len != NULL)
		*len = n;
	return buf;
}

int
masq_mkdir_p(const char *path, masq_err *err)
{
	char *p = xstrdup(path);
	struct stat sb;

	for (char *s = p + 1; ; s++) {
		if (*s == '/' || *s == '\0') {
			char c = *s;
			*s = '\0';
			if (mkdir(p, 0777) < 0 && errno != EEXIST) {
				masq_err_set(err, MASQ_ERR_IO, "%s: cannot create directory: %s", p, strerror(errno));
				free(p);
				return -1;
			}
			*s = c;
			if (c == '\0')
				break;
		}
	}
	if (stat(path, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
		masq_err_set(err, MASQ_ERR_IO, "%s: not a directory", path);
		free(p);
		return -1;
	}
	free(p);
	return 0;
}

static int
dir_entry_wanted(const struct dirent *e)
{
	return strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
}

static int
dir_entry_cmp(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

int
masq_dir_list(const char *dir, char ***names, masq_err *err)
{
	struct dirent **ents = NULL;
	int n = scandir(dir, &ents, dir_entry_wanted, dir_entry_cmp);

	*names = NULL;
	if (n < 0)
		return masq_err_set(err, MASQ_ERR_IO, "%s: cannot list: %s", dir, strerror(errno));
	*names = xcalloc((size_t)n + 1, sizeof **names);
	for (int i = 0; i < n; i++) {
		(*names)[i] = xstrdup(ents[i]->d_name);
		free(ents[i]);
	}
	free(ents);
	return n;
}

void
masq_dir_list_free(char **names, int n)
{
	for (int i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

void
masq_remove_flat_dir(const char *dir)
{
	char **names;
	int n = masq_dir_list(dir, &names, NULL);
	for (int i = 0; i < n; i++) {
		char *p = masq_path_join(dir, names[i]);
		unlink(p);
		free(p);
	}
	if (n >= 0)
		masq_dir_list_free(names, n);
	rmdir(dir);
}

char *
masq_fmt_bytes(uint64_t n, char *buf, size_t size)
{
	static const char *const unit[] = {"B", "kB", "MB", "GB", "TB", "PB"};
	double v = (double)n;
	int u = 0;
	while (v >= 1000.0 && u < 5) {
		v /= 1000.0;
		u++;
	}
	if (u == 0)
		snprintf(buf, size, "%llu B", (unsigned long long)n);
	else
		snprintf(buf, size, v < 10 ? "%.2f %s" : v < 100 ? "%.1f %s" : "%.0f %s", v, unit[u]);
	return buf;
}

int
masq_parse_bytes(const char *s, double *out, masq_err *err)
{
	static const struct { const char *u; double f; } units[] = {
		{"", 1}, {"b", 1}, {"k", 1e3}, {"kb", 1e3}, {"m", 1e6}, {"mb", 1e6}, {"g", 1e9}, {"gb", 1e9},
		{"t", 1e12}, {"tb", 1e12}, {"kib", 1024.0}, {"mib", 1048576.0}, {"gib", 1073741824.0},
		{"tib", 1099511627776.0},
	};
	char *end;
	double v = strtod(s, &end);
	if (end == s || !isfinite(v) || !(v > 0))
		return masq_err_set(err, MASQ_ERR_USAGE, "'%s' is not a size (a positive number, e.g. 2MB or 512KiB)", s);
	while (*end == ' ')
		end++;
	char u[8];
	size_t n = strlen(end);
	if (n >= sizeof u)
		return masq_err_set(err, MASQ_ERR_USAGE, "'%s': unknown unit '%s' (B, kB, MB, GB, KiB, MiB, GiB)", s, end);
	for (size_t i = 0; i <= n; i++)
		u[i] = (char)tolower((unsigned char)end[i]);
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
		if (strcmp(u, units[i].u) == 0) {
			*out = v * units[i].f;
			return 0;
		}
	return masq_err_set(err, MASQ_ERR_USAGE, "'%s': unknown unit '%s' (B, kB, MB, GB, KiB, MiB, GiB)", s, end);
}

struct range_job {
	masq_range_fn fn;
	void *ctx;
	int lo, hi, tid;
};

static void *
range_main(void *arg)
{
	struct range_job *j = arg;
	j->fn(j->ctx, j->lo, j->hi, j->tid);
	return NULL;
}

void
masq_parallel(int n, int nthreads, masq_range_fn fn, void *ctx)
{
	struct range_job jobs[MASQ_MAX_THREADS];
	pthread_t th[MASQ_MAX_THREADS];
	int started[MASQ_MAX_THREADS] = {0};

	if (n <= 0)
		return;
	if (nthreads > MASQ_MAX_THREADS)
		nthreads = MASQ_MAX_THREADS;
	if (nthreads > n)
		nthreads = n;
	if (nthreads < 1)
		nthreads = 1;
	for (int t = 0; t < nthreads; t++)
		jobs[t] = (struct range_job){fn, ctx, (int)((long long)n * t / nthreads),
		    (int)((long long)n * (t + 1) / nthreads), t};
	for (int t = 1; t < nthreads; t++)
		started[t] = pthread_create(&th[t], NULL, range_main, &jobs[t]) == 0;
	range_main(&jobs[0]);
	for (int t = 1; t < nthreads; t++) {
		if (started[t])
			pthread_join(th[t], NULL);
		else
			range_main(&jobs[t]);
	}
}
