// SPDX-License-Identifier: MIT
#include "errmsg.h"

#include <stdarg.h>
#include <stdio.h>

void vfa_vset_err(char *err, size_t errlen, const char *fmt, va_list ap)
{
	if (err && errlen)
		vsnprintf(err, errlen, fmt, ap);
}

void vfa_set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfa_vset_err(err, errlen, fmt, ap);
	va_end(ap);
}
