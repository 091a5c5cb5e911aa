// SPDX-License-Identifier: MIT
/* The shared benchmark helpers: the median every figure is printed from. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "bench_util.h"

static void median_sorts_and_takes_the_middle(void **state)
{
	double v[] = { 9.0, 1.0, 5.0, 3.0, 7.0 };

	(void)state;
	assert_true(bench_median(v, 5) == 5.0);
	/* sorted in place, ascending */
	for (int i = 0; i < 4; i++)
		assert_true(v[i] < v[i + 1]);
}

static void median_of_even_count_is_the_upper_middle(void **state)
{
	double v[] = { 4.0, 2.0, 8.0, 6.0 };
	double one[] = { 42.5 };

	(void)state;
	assert_true(bench_median(v, 4) == 6.0);
	assert_true(bench_median(one, 1) == 42.5);
}

static void median_keeps_duplicates_and_negatives(void **state)
{
	double v[] = { -1.0, 3.0, 3.0, -7.0, 3.0 };

	(void)state;
	assert_true(bench_median(v, 5) == 3.0);
	assert_true(v[0] == -7.0 && v[1] == -1.0);
}

static void clock_is_monotonic_and_in_ns(void **state)
{
	double a = bench_now_ns(), b = bench_now_ns();

	(void)state;
	assert_true(a > 0);
	assert_true(b >= a);
	/* two back-to-back reads are far less than a second apart */
	assert_true(b - a < 1e9);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(median_sorts_and_takes_the_middle),
		cmocka_unit_test(median_of_even_count_is_the_upper_middle),
		cmocka_unit_test(median_keeps_duplicates_and_negatives),
		cmocka_unit_test(clock_is_monotonic_and_in_ns),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
