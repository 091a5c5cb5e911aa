/* SPDX-License-Identifier: MIT */
/*
 * The one helper for "fill the caller's error buffer": the pieces that
 * report a reason to their caller (err, errlen) instead of logging it.
 */
#ifndef VFA_ERRMSG_H
#define VFA_ERRMSG_H

#include <stdarg.h>
#include <stddef.h>

/* printf into err (at most errlen bytes, NUL-terminated); nothing when err is NULL or errlen 0. */
void vfa_set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void vfa_vset_err(char *err, size_t errlen, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));

#endif
