/*
 * tap.h: a tiny Test Anything Protocol emitter for the C unit tests.
 * Each check prints "ok N - name" or "not ok N - name" with a diagnostic;
 * tap_done() prints the plan and returns the exit status.
 *
 *	int main(void) {
 *		tap_ok(1 + 1 == 2, "addition");
 *		tap_near(x, 0.5, 1e-6, "x is one half");
 *		return tap_done();
 *	}
 */
#ifndef MASQ_TAP_H
#define MASQ_TAP_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;

static inline int tap_ok(int cond, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static inline int
tap_ok(int cond, const char *fmt, ...)
{
	va_list ap;
	tap_n++;
	printf("%sok %d - ", cond ? "" : "not ", tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (!cond)
		tap_failed++;
	fflush(stdout);
	return cond;
}

/* Print a diagnostic line ("# ..."). */
static inline void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void
tap_diag(const char *fmt, ...)
{
	va_list ap;
	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

/* |got - want| <= tol */
static inline int
tap_near(double got, double want, double tol, const char *name)
{
	int ok = fabs(got - want) <= tol;
	tap_ok(ok, "%s", name);
	if (!ok)
		tap_diag("got %.9g, want %.9g, tolerance %.3g", got, want, tol);
	return ok;
}

static inline int
tap_streq(const char *got, const char *want, const char *name)
{
	int ok = got && want && strcmp(got, want) == 0;
	tap_ok(ok, "%s", name);
	if (!ok)
		tap_diag("got \"%s\", want \"%s\"", got ? got : "(null)", want ? want : "(null)");
	return ok;
}

/* Substring check, for error messages. */
static inline int
tap_contains(const char *hay, const char *needle, const char *name)
{
	int ok = hay && needle && strstr(hay, needle) != NULL;
	tap_ok(ok, "%s", name);
	if (!ok)
		tap_diag("\"%s\" does not contain \"%s\"", hay ? hay : "(null)", needle);
	return ok;
}

static inline int
tap_done(void)
{
	printf("1..%d\n", tap_n);
	return tap_failed ? 1 : 0;
}

#endif
