/* SPDX-License-Identifier: MIT */
/* Leveled logging to stderr, shared by every host-side piece. */
#ifndef VFA_LOG_H
#define VFA_LOG_H

enum vfa_log_level {
	VFA_LOG_ERROR = 0,
	VFA_LOG_WARN,
	VFA_LOG_INFO,
	VFA_LOG_DEBUG,
};

void vfa_log_set_level(enum vfa_log_level level);
enum vfa_log_level vfa_log_get_level(void);
/* Parses "error", "warn", "info", "debug"; returns -1 if unknown. */
int vfa_log_parse_level(const char *name);
void vfa_log(enum vfa_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) vfa_log(VFA_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) vfa_log(VFA_LOG_WARN, __VA_ARGS__)
#define log_info(...) vfa_log(VFA_LOG_INFO, __VA_ARGS__)
#define log_debug(...) vfa_log(VFA_LOG_DEBUG, __VA_ARGS__)

#endif
