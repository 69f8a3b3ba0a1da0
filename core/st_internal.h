/*
 * st_internal.h: what the safetensors reader (safetensors.c) and writer
 * (st_writer.c) share: the wording of their messages.
 */
#ifndef MASQ_ST_INTERNAL_H
#define MASQ_ST_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

/* Longest tensor name quoted in full in a message. */
#define NAME_QUOTE_MAX 160

/* Copy s into buf (n bytes) for quoting in a message: control bytes become
 * \xNN and a long name is cut with "...".  Returns buf. */
const char *st_name_quote(const char *s, char *buf, size_t n);
/* Fill err with "<path>: <fault>", or "<path>: tensor '<name>': <fault>"
 * when name is not NULL; returns -1. */
int st_fail(masq_err *err, masq_status st, const char *path, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
/* Offset of the first byte of s[0..n) that is not well-formed UTF-8, or n. */
size_t st_utf8_bad_offset(const unsigned char *s, size_t n);
/* Format shape as "[a, b, c]" into buf. */
const char *st_shape_str(const int64_t *shape, int ndim, char *buf, size_t n);

#endif
