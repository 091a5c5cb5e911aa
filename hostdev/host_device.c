// SPDX-License-Identifier: MIT
#include "host_device.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

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

int hd_mark_gone(struct host_device *hd, const char *fmt, ...)
{
	va_list ap;

	if (!hd->gone) {
		va_start(ap, fmt);
		vsnprintf(hd->removal, sizeof(hd->removal), fmt, ap);
		va_end(ap);
		if (!hd->removal[0])
			snprintf(hd->removal, sizeof(hd->removal), "the device is gone");
		hd->gone = true;
	}
	/* The reason is short; the error says it whole or cut at HD_ERROR_LEN. */
	memcpy(hd->error, "gone: ", 6);
	memcpy(hd->error + 6, hd->removal, sizeof(hd->error) - 7);
	hd->error[sizeof(hd->error) - 1] = '\0';
	return -ENODEV;
}

bool host_device_present(const struct host_device *hd)
{
	return !hd->gone;
}

const char *host_device_removal(const struct host_device *hd)
{
	return hd->gone ? hd->removal : NULL;
}

void hd_mark_present(struct host_device *hd)
{
	hd->gone = false;
	memset(hd->removal, 0, sizeof(hd->removal));
	hd->error[0] = '\0';
}
