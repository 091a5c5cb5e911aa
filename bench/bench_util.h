/* SPDX-License-Identifier: MIT */
/* What every benchmark here needs: a monotonic clock and a median. */
#ifndef VFA_BENCH_UTIL_H
#define VFA_BENCH_UTIL_H

#include <stddef.h>

/* CLOCK_MONOTONIC in nanoseconds. */
double bench_now_ns(void);

/*
 * Sorts v[0..n) in place and returns v[n / 2] (the upper median when n is
 * even; the benchmarks use odd run counts).  n must be at least 1.
 */
double bench_median(double *v, size_t n);

#endif
