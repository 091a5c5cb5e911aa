// SPDX-License-Identifier: MIT
#include "host_device.h"

#include <stdio.h>

int hd_fail(struct host_device *hd, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(hd->error, sizeof(hd->error), fmt, ap);
	va_end(ap);
	return err;
}

const char *host_device_error(const struct host_device *hd)
{
	return hd->error[0] ? hd->error : "no error recorded";
}
