// SPDX-License-Identifier: MIT
/* Unit tests of the guest memory map (guestmem/). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>

#include "guest_mem.h"

static uint8_t ram_a[0x4000];
static uint8_t ram_b[0x2000];

static void test_add_translate(void **state)
{
	struct guest_mem *gm = guest_mem_create();

	(void)state;
	assert_non_null(gm);
	assert_int_equal(guest_mem_add(gm, 0x10000, sizeof(ram_a), ram_a, true), 0);
	assert_ptr_equal(guest_mem_translate(gm, 0x10000, 1, false), ram_a);
	assert_ptr_equal(guest_mem_translate(gm, 0x10010, 0x10, true), ram_a + 0x10);
	/* the last byte, and the whole range */
	assert_ptr_equal(guest_mem_translate(gm, 0x13fff, 1, true), ram_a + 0x3fff);
	assert_ptr_equal(guest_mem_translate(gm, 0x10000, sizeof(ram_a), true), ram_a);
	/* one byte beyond either end */
	assert_null(guest_mem_translate(gm, 0xffff, 1, false));
	assert_null(guest_mem_translate(gm, 0xffff, 2, false));
	assert_null(guest_mem_translate(gm, 0x13fff, 2, false));
	assert_null(guest_mem_translate(gm, 0x14000, 1, false));
	assert_null(guest_mem_translate(gm, 0x10000, sizeof(ram_a) + 1, false));
	/* len 0 is never a reachable access */
	assert_null(guest_mem_translate(gm, 0x10000, 0, false));
	assert_int_equal(guest_mem_count(gm), 1);
	guest_mem_destroy(gm);
}

static void test_add_refusals(void **state)
{
	struct guest_mem *gm = guest_mem_create();

	(void)state;
	assert_int_equal(guest_mem_add(gm, 0x10000, 0x4000, ram_a, true), 0);
	assert_int_equal(guest_mem_add(gm, 0x10000, 0, ram_b, true), -EINVAL);
	assert_int_equal(guest_mem_add(gm, UINT64_MAX - 0xfff, 0x1000, ram_b, true), -EINVAL); /* ends at 2^64 */
	assert_int_equal(guest_mem_add(gm, UINT64_MAX, 2, ram_b, true), -EINVAL);
	assert_int_equal(guest_mem_add(gm, 0x10000, 0x4000, ram_b, true), -EEXIST);  /* same */
	assert_int_equal(guest_mem_add(gm, 0xf000, 0x1001, ram_b, true), -EEXIST);   /* left edge */
	assert_int_equal(guest_mem_add(gm, 0x13fff, 0x1000, ram_b, true), -EEXIST);  /* right edge */
	assert_int_equal(guest_mem_add(gm, 0x11000, 0x10, ram_b, true), -EEXIST);    /* inside */
	assert_int_equal(guest_mem_add(gm, 0x0, 0x100000, ram_b, true), -EEXIST);    /* around */
	/* touching on either side is fine */
	assert_int_equal(guest_mem_add(gm, 0xf000, 0x1000, ram_b, true), 0);
	assert_int_equal(guest_mem_add(gm, 0x14000, 0x1000, NULL, false), 0);
	assert_int_equal(guest_mem_count(gm), 3);
	guest_mem_destroy(gm);
}

static void test_straddle_refused(void **state)
{
	struct guest_mem *gm = guest_mem_create();

	(void)state;
	/* adjacent in guest-physical space, separate host mappings */
	assert_int_equal(guest_mem_add(gm, 0x10000, sizeof(ram_a), ram_a, true), 0);
	assert_int_equal(guest_mem_add(gm, 0x14000, sizeof(ram_b), ram_b, true), 0);
	assert_ptr_equal(guest_mem_translate(gm, 0x13ff0, 0x10, false), ram_a + 0x3ff0);
	assert_ptr_equal(guest_mem_translate(gm, 0x14000, 0x10, false), ram_b);
	assert_null(guest_mem_translate(gm, 0x13ff0, 0x20, false));
	assert_null(guest_mem_translate(gm, 0x13fff, 2, false));
	guest_mem_destroy(gm);
}

static void test_unreachable_and_readonly(void **state)
{
	struct guest_mem *gm = guest_mem_create();
	struct guest_mem_range r;

	(void)state;
	assert_int_equal(guest_mem_add(gm, 0xfffc0000, 0x40000, NULL, false), 0);
	assert_int_equal(guest_mem_add(gm, 0x10000, sizeof(ram_a), ram_a, false), 0);
	assert_null(guest_mem_translate(gm, 0xfffc0000, 4, false));
	assert_ptr_equal(guest_mem_translate(gm, 0x10004, 4, false), ram_a + 4);
	assert_null(guest_mem_translate(gm, 0x10004, 4, true));
	/* find sees both kinds */
	assert_int_equal(guest_mem_find(gm, 0xfffc1234, &r), 0);
	assert_int_equal(r.gpa, 0xfffc0000);
	assert_int_equal(r.len, 0x40000);
	assert_null(r.va);
	assert_false(r.writable);
	assert_int_equal(guest_mem_find(gm, 0x13fff, &r), 0);
	assert_ptr_equal(r.va, ram_a);
	assert_int_equal(guest_mem_find(gm, 0x14000, &r), -ENOENT);
	assert_int_equal(guest_mem_find(gm, 0, NULL), -ENOENT);
	guest_mem_destroy(gm);
}

static void test_overflow_safe(void **state)
{
	struct guest_mem *gm = guest_mem_create();

	(void)state;
	assert_int_equal(guest_mem_add(gm, 0xfffffffffff00000ull, 0x4000, ram_a, true), 0);
	assert_ptr_equal(guest_mem_translate(gm, 0xfffffffffff00000ull, 0x4000, true), ram_a);
	/* lengths that would wrap the end around 2^64 */
	assert_null(guest_mem_translate(gm, 0xfffffffffff00010ull, UINT64_MAX, false));
	assert_null(guest_mem_translate(gm, 0xfffffffffff00010ull, UINT64_MAX - 0xf, false));
	assert_null(guest_mem_translate(gm, UINT64_MAX, 1, false));
	assert_null(guest_mem_translate(gm, 0, UINT64_MAX, false));
	guest_mem_destroy(gm);
}

static void test_remove(void **state)
{
	struct guest_mem *gm = guest_mem_create();

	(void)state;
	assert_int_equal(guest_mem_add(gm, 0x10000, 0x4000, ram_a, true), 0);
	assert_int_equal(guest_mem_add(gm, 0x20000, 0x2000, ram_b, true), 0);
	assert_int_equal(guest_mem_remove(gm, 0x10000, 0x1000), -ENOENT); /* part */
	assert_int_equal(guest_mem_remove(gm, 0x11000, 0x3000), -ENOENT);
	assert_int_equal(guest_mem_remove(gm, 0x30000, 0x1000), -ENOENT);
	assert_int_equal(guest_mem_remove(gm, 0x10000, 0x4000), 0);
	assert_null(guest_mem_translate(gm, 0x10000, 1, false));
	assert_ptr_equal(guest_mem_translate(gm, 0x20000, 1, false), ram_b);
	assert_int_equal(guest_mem_remove(gm, 0x10000, 0x4000), -ENOENT); /* twice */
	/* re-adding after removal works (QEMU's map/unmap churn) */
	assert_int_equal(guest_mem_add(gm, 0x10000, 0x2000, ram_a, true), 0);
	assert_int_equal(guest_mem_count(gm), 2);
	guest_mem_destroy(gm);
}

struct walk {
	uint64_t gpas[8];
	int n;
};

static void walk_cb(uint64_t gpa, uint64_t len, void *va, bool writable, void *opaque)
{
	struct walk *w = opaque;

	(void)len;
	(void)va;
	(void)writable;
	w->gpas[w->n++] = gpa;
}

static void test_for_each_order(void **state)
{
	struct guest_mem *gm = guest_mem_create();
	struct walk w = { .n = 0 };

	(void)state;
	assert_int_equal(guest_mem_add(gm, 0x30000, 0x1000, NULL, false), 0);
	assert_int_equal(guest_mem_add(gm, 0x10000, 0x1000, ram_a, true), 0);
	assert_int_equal(guest_mem_add(gm, 0x20000, 0x1000, ram_b, true), 0);
	guest_mem_for_each(gm, walk_cb, &w);
	assert_int_equal(w.n, 3);
	assert_int_equal(w.gpas[0], 0x10000);
	assert_int_equal(w.gpas[1], 0x20000);
	assert_int_equal(w.gpas[2], 0x30000);
	guest_mem_destroy(gm);
}

/* Random ranges against a brute-force model of which page belongs to which. */
#define PAGES 512
static void test_random_vs_model(void **state)
{
	static int owner[PAGES]; /* index of the range owning page, -1: none */
	struct {
		uint64_t first, n;
		bool live;
	} ranges[256];
	int nranges = 0;
	struct guest_mem *gm = guest_mem_create();
	unsigned seed = 12345;

	(void)state;
	memset(owner, -1, sizeof(owner));
	for (int step = 0; step < 20000; step++) {
		seed = seed * 1103515245u + 12345u;
		unsigned r = seed >> 8;
		uint64_t first = r % PAGES, n = 1 + (r >> 9) % 16;

		if (r % 3 == 0 && nranges > 0) {
			int k = (int)(r % (unsigned)nranges);
			int rc;

			/* a dead entry may have been re-added as another entry */
			for (int j = 0; j < nranges && !ranges[k].live; j++)
				if (ranges[j].live && ranges[j].first == ranges[k].first && ranges[j].n == ranges[k].n)
					k = j;
			rc = guest_mem_remove(gm, ranges[k].first * 0x1000, ranges[k].n * 0x1000);
			assert_int_equal(rc, ranges[k].live ? 0 : -ENOENT);
			if (ranges[k].live)
				for (uint64_t p = ranges[k].first; p < ranges[k].first + ranges[k].n; p++)
					owner[p] = -1;
			ranges[k].live = false;
		} else if (nranges < 256 && first + n <= PAGES) {
			bool free_pages = true;
			int rc;

			for (uint64_t p = first; p < first + n; p++)
				free_pages &= owner[p] < 0;
			rc = guest_mem_add(gm, first * 0x1000, n * 0x1000, (void *)(uintptr_t)(first * 0x1000 + 0x1000000),
					   true);
			assert_int_equal(rc, free_pages ? 0 : -EEXIST);
			if (rc == 0) {
				ranges[nranges].first = first;
				ranges[nranges].n = n;
				ranges[nranges].live = true;
				for (uint64_t p = first; p < first + n; p++)
					owner[p] = nranges;
				nranges++;
			}
		}
		/* a random access: reachable iff every page has the same owner */
		uint64_t a = (r >> 3) % PAGES, alen = 1 + (r >> 13) % 3;
		bool one = a + alen <= PAGES && owner[a] >= 0;

		for (uint64_t p = a; one && p < a + alen; p++)
			one = owner[p] == owner[a];
		void *va = guest_mem_translate(gm, a * 0x1000 + 8, alen * 0x1000 - 16, false);

		if (one)
			assert_ptr_equal(va, (void *)(uintptr_t)(a * 0x1000 + 8 + 0x1000000));
		else
			assert_null(va);
	}
	guest_mem_destroy(gm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_add_translate),
		cmocka_unit_test(test_add_refusals),
		cmocka_unit_test(test_straddle_refused),
		cmocka_unit_test(test_unreachable_and_readonly),
		cmocka_unit_test(test_overflow_safe),
		cmocka_unit_test(test_remove),
		cmocka_unit_test(test_for_each_order),
		cmocka_unit_test(test_random_vs_model),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
