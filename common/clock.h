/* SPDX-License-Identifier: MIT */
/* The one monotonic clock helper of the project (timeouts, progress). */
#ifndef VFA_CLOCK_H
#define VFA_CLOCK_H

#include <stdint.h>

/* Milliseconds of CLOCK_MONOTONIC: for deadlines and durations only. */
int64_t vfa_now_ms(void);

#endif
