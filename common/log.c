// SPDX-License-Identifier: MIT
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static enum vfa_log_level current_level = VFA_LOG_WARN;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void vfa_log_set_level(enum vfa_log_level level)
{
	current_level = level;
}

enum vfa_log_level vfa_log_get_level(void)
{
	return current_level;
}

int vfa_log_parse_level(const char *name)
{
	for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (strcmp(name, level_names[i]) == 0)
			return (int)i;
	return -1;
}

void vfa_log(enum vfa_log_level level, const char *fmt, ...)
{
	struct timespec ts;
	va_list ap;

	if (level > current_level)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	fprintf(stderr, "[%5lld.%03ld] vfio-apple %s: ", (long long)ts.tv_sec, ts.tv_nsec / 1000000,
		level_names[level]);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}
