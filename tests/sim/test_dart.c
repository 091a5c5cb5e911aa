// SPDX-License-Identifier: MIT
/* The DART model on its own: addresses, granule, keys, limits, strictness. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sim_dart.h"

#define G SIM_DART_GRANULE

static struct sim_dart *make(bool identity, uint64_t seed, uint64_t max_bytes, uint32_t max_mappings)
{
	struct sim_dart_config cfg = {
		.identity = identity, .seeded = true, .seed = seed, .max_bytes = max_bytes, .max_mappings = max_mappings,
	};
	char err[256];
	struct sim_dart *d = sim_dart_create(&cfg, err, sizeof(err));

	assert_non_null(d);
	return d;
}

static uint8_t *buffer(size_t size)
{
	uint8_t *p = aligned_alloc(G, size);

	assert_non_null(p);
	memset(p, 0xee, size);
	return p;
}

static void test_random_base(void **state)
{
	struct sim_dart *a = make(false, 1, 0, 0), *b = make(false, 1, 0, 0), *c = make(false, 2, 0, 0);
	uint8_t *buf = buffer(4 * G);
	uint64_t bus_a, bus_b, bus_c, len;

	(void)state;
	/* Same seed, same addresses; another seed, another base; never identity. */
	assert_int_equal(sim_dart_bus_base(a), sim_dart_bus_base(b));
	assert_int_not_equal(sim_dart_bus_base(a), sim_dart_bus_base(c));
	assert_int_equal(sim_dart_bus_base(a) % G, 0);
	assert_true(sim_dart_bus_base(a) >= (1ull << 32));
	assert_int_equal(sim_dart_map(a, 1, buf, G, &bus_a, &len), 0);
	assert_int_equal(sim_dart_map(b, 1, buf, G, &bus_b, &len), 0);
	assert_int_equal(sim_dart_map(c, 1, buf, G, &bus_c, &len), 0);
	assert_int_equal(bus_a, bus_b);
	assert_int_not_equal(bus_a, bus_c);
	assert_int_not_equal(bus_a, (uint64_t)(uintptr_t)buf);
	assert_int_equal(len, G);
	sim_dart_destroy(a);
	sim_dart_destroy(b);
	sim_dart_destroy(c);
	free(buf);
}

static void test_granule_offset_and_spacing(void **state)
{
	struct sim_dart *d = make(false, 3, 0, 0);
	uint8_t *buf = buffer(8 * G);
	uint64_t bus1, bus2, bus3, len;

	(void)state;
	/* The bus address keeps the offset inside the 16 KiB granule. */
	assert_int_equal(sim_dart_map(d, 10, buf + 0x1234, 100, &bus1, &len), 0);
	assert_int_equal(bus1 % G, 0x1234);
	assert_int_equal(len, 100);
	/* A range crossing a granule boundary takes two granules, contiguous. */
	assert_int_equal(sim_dart_map(d, 11, buf + G + G - 8, 16, &bus2, &len), 0);
	assert_int_equal(bus2 % G, G - 8);
	assert_ptr_equal(sim_dart_translate(d, bus2 + 15, 1, false), buf + 2 * G + 7);
	/* Registrations never share a granule. */
	assert_int_equal(sim_dart_map(d, 12, buf + 0x10, 4, &bus3, &len), 0);
	assert_true(bus3 / G != bus1 / G && bus3 / G != bus2 / G && bus3 / G != (bus2 + 15) / G);
	sim_dart_destroy(d);
	free(buf);
}

static void test_keys(void **state)
{
	struct sim_dart *d = make(false, 4, 0, 0);
	uint8_t *buf = buffer(2 * G);
	uint64_t bus, len;
	struct hd_dma_stats st;

	(void)state;
	assert_int_equal(sim_dart_map(d, 0xabc, buf, 64, &bus, &len), 0);
	assert_int_equal(sim_dart_map(d, 0xabc, buf + G, 64, &bus, &len), -EEXIST);
	assert_non_null(strstr(sim_dart_error(d), "already registered"));
	assert_int_equal(sim_dart_unmap(d, 0xdef), -ENOENT);
	assert_non_null(strstr(sim_dart_error(d), "not registered"));
	/* The same memory under a second key is fine (UNIQUE_IDS). */
	assert_int_equal(sim_dart_map(d, 0xdef, buf, 64, &bus, &len), 0);
	assert_int_equal(sim_dart_unmap(d, 0xabc), 0);
	assert_int_equal(sim_dart_unmap(d, 0xabc), -ENOENT);
	assert_int_equal(sim_dart_map(d, 0xabc, buf, 64, &bus, &len), 0);
	/* Bad ranges. */
	assert_int_equal(sim_dart_map(d, 1, buf, 0, &bus, &len), -EINVAL);
	assert_int_equal(sim_dart_map(d, 1, NULL, 64, &bus, &len), -EINVAL);
	assert_int_equal(sim_dart_map(d, 1, (void *)(uintptr_t)(UINTPTR_MAX - 10), 64, &bus, &len), -EINVAL);
	sim_dart_stats(d, &st);
	assert_int_equal(st.live_mappings, 2);
	assert_int_equal(st.live_bytes, 128);
	assert_int_equal(st.registers, 3);
	assert_int_equal(st.unregisters, 1);
	assert_int_equal(st.register_failures, 4);
	sim_dart_destroy(d);
	free(buf);
}

static void test_limits(void **state)
{
	struct sim_dart *d = make(false, 5, 10 * G, 4);
	uint8_t *buf = buffer(16 * G);
	uint64_t bus, len;
	struct hd_dma_limits lim;

	(void)state;
	sim_dart_limits(d, &lim);
	assert_int_equal(lim.max_bytes, 10 * G);
	assert_int_equal(lim.max_mappings, 4);
	assert_int_equal(lim.granule, G);
	for (uint64_t k = 0; k < 4; k++)
		assert_int_equal(sim_dart_map(d, k, buf + k * G, 64, &bus, &len), 0);
	assert_int_equal(sim_dart_map(d, 4, buf, 64, &bus, &len), -ENOSPC);
	assert_non_null(strstr(sim_dart_error(d), "live mappings"));
	assert_int_equal(sim_dart_unmap(d, 0), 0);
	/* Bytes: 3 x 64 live, 10 granules allowed. */
	assert_int_equal(sim_dart_map(d, 4, buf, 10 * G, &bus, &len), -ENOSPC);
	assert_non_null(strstr(sim_dart_error(d), "exceed the limit"));
	assert_int_equal(sim_dart_map(d, 4, buf, 10 * G - 192, &bus, &len), 0);
	assert_int_equal(len, 10 * G - 192);
	sim_dart_destroy(d);
	free(buf);

	/* The default limits are Apple's. */
	d = make(false, 5, 0, 0);
	sim_dart_limits(d, &lim);
	assert_int_equal(lim.max_bytes, 1536ull << 20);
	assert_int_equal(lim.max_mappings, 65536);
	sim_dart_destroy(d);
}

static void test_strict_translate(void **state)
{
	struct sim_dart *d = make(false, 6, 0, 0);
	uint8_t *buf = buffer(4 * G);
	uint64_t bus, len, bus2;
	struct hd_dma_stats st;
	uint8_t tmp[64];

	(void)state;
	assert_int_equal(sim_dart_map(d, 1, buf + 100, 1000, &bus, &len), 0);
	assert_ptr_equal(sim_dart_translate(d, bus, 1000, false), buf + 100);
	assert_ptr_equal(sim_dart_translate(d, bus + 999, 1, true), buf + 1099);
	/* Inside the mapped granule but outside the registration: faults. */
	assert_null(sim_dart_translate(d, bus - 1, 1, false));
	assert_null(sim_dart_translate(d, bus + 1000, 1, true));
	assert_null(sim_dart_translate(d, bus + 999, 2, false));
	assert_null(sim_dart_translate(d, bus, 0, false));
	assert_null(sim_dart_translate(d, UINT64_MAX, 1, false));
	assert_null(sim_dart_translate(d, bus, UINT64_MAX, false));
	sim_dart_stats(d, &st);
	assert_int_equal(st.faults, 6);

	/* DMA copies through the translation; a fault copies nothing. */
	memset(tmp, 0x5a, sizeof(tmp));
	assert_int_equal(sim_dart_dma_write(d, bus + 10, tmp, 64), 0);
	assert_int_equal(buf[110], 0x5a);
	assert_int_equal(buf[109], 0xee);
	memset(tmp, 0x77, sizeof(tmp));
	assert_int_equal(sim_dart_dma_write(d, bus + 990, tmp, 64), -EFAULT);
	assert_int_equal(buf[100 + 990], 0xee);
	assert_int_equal(sim_dart_dma_read(d, bus + 990, tmp, 64), -EFAULT);
	sim_dart_stats(d, &st);
	assert_int_equal(st.faults, 8);

	/* After unregistering, the same address faults. */
	assert_int_equal(sim_dart_unmap(d, 1), 0);
	assert_null(sim_dart_translate(d, bus, 1, false));
	/* A new registration gets a new bus address (next-fit). */
	assert_int_equal(sim_dart_map(d, 1, buf + 100, 1000, &bus2, &len), 0);
	assert_int_not_equal(bus2, bus);
	sim_dart_destroy(d);
	free(buf);
}

static void test_dma_across_registrations(void **state)
{
	struct sim_dart *d = make(true, 7, 0, 0);
	uint8_t *a = buffer(G), *b = buffer(G);
	uint64_t bus, len;
	uint8_t tmp[200];

	(void)state;
	/* Identity: two adjacent guest ranges backed by unrelated host memory. */
	assert_int_equal(sim_dart_map(d, 0x100000, a, G, &bus, &len), 0);
	assert_int_equal(bus, 0x100000);
	assert_int_equal(sim_dart_map(d, 0x100000 + G, b, G, &bus, &len), 0);
	assert_int_equal(bus, 0x100000 + G);
	for (int i = 0; i < 200; i++)
		tmp[i] = (uint8_t)i;
	assert_int_equal(sim_dart_dma_write(d, 0x100000 + G - 100, tmp, 200), 0);
	assert_int_equal(a[G - 100], 0);
	assert_int_equal(a[G - 1], 99);
	assert_int_equal(b[0], 100);
	assert_int_equal(b[99], 199);
	/* One translate cannot span the two. */
	assert_null(sim_dart_translate(d, 0x100000 + G - 100, 200, false));
	/* A check spans them like a copy; a byte past b faults, counted once. */
	struct hd_dma_stats st;
	assert_int_equal(sim_dart_dma_check(d, 0x100000 + G - 100, 200, false), 0);
	assert_int_equal(sim_dart_dma_check(d, 0x100000, 2 * G, true), 0);
	sim_dart_stats(d, &st);
	uint64_t faults = st.faults;
	assert_int_equal(sim_dart_dma_check(d, 0x100000, 2 * G + 1, true), -EFAULT);
	assert_int_equal(sim_dart_dma_check(d, UINT64_MAX - 8, 16, true), -EFAULT);
	sim_dart_stats(d, &st);
	assert_int_equal(st.faults, faults + 2);
	sim_dart_destroy(d);
	free(a);
	free(b);
}

static void test_identity_mode(void **state)
{
	struct sim_dart *d = make(true, 8, 0, 0);
	uint8_t *buf = buffer(4 * G);
	uint64_t bus, len;

	(void)state;
	assert_true(sim_dart_identity(d));
	struct hd_dma_limits lim;
	sim_dart_limits(d, &lim);
	assert_int_equal(lim.max_bytes, SIM_DART_MAX_MAX_BYTES); /* no Apple ceiling without the DART */
	assert_int_equal(lim.max_mappings, 65536);
	assert_int_equal(sim_dart_map(d, 0x7000, buf + 3, 0x3000, &bus, &len), 0);
	assert_int_equal(bus, 0x7000);
	assert_ptr_equal(sim_dart_translate(d, 0x8000, 16, false), buf + 3 + 0x1000);
	assert_null(sim_dart_translate(d, 0x6fff, 1, false));
	assert_null(sim_dart_translate(d, 0xa000, 1, false));
	/* Overlapping guest ranges are refused. */
	assert_int_equal(sim_dart_map(d, 0x9fff, buf, 2, &bus, &len), -EEXIST);
	assert_int_equal(sim_dart_map(d, UINT64_MAX - 1, buf, 4, &bus, &len), -EINVAL);
	sim_dart_destroy(d);
	free(buf);
}

static void test_many_mappings_churn(void **state)
{
	enum { N = 4096 };
	struct sim_dart *d = make(false, 9, 0, 0);
	uint8_t *buf = buffer(N * 64);
	static uint64_t bus[N];
	uint64_t len;
	struct hd_dma_stats st;

	(void)state;
	for (int round = 0; round < 3; round++) {
		for (uint64_t k = 0; k < N; k++) {
			assert_int_equal(sim_dart_map(d, k, buf + k * 64, 64, &bus[k], &len), 0);
			assert_ptr_equal(sim_dart_translate(d, bus[k], 64, false), buf + k * 64);
		}
		for (uint64_t k = 0; k < N; k += 2)
			assert_int_equal(sim_dart_unmap(d, k), 0);
		for (uint64_t k = 1; k < N; k += 2)
			assert_ptr_equal(sim_dart_translate(d, bus[k] + 63, 1, false), buf + k * 64 + 63);
		for (uint64_t k = 1; k < N; k += 2)
			assert_int_equal(sim_dart_unmap(d, k), 0);
	}
	sim_dart_stats(d, &st);
	assert_int_equal(st.live_mappings, 0);
	assert_int_equal(st.peak_mappings, N);
	assert_int_equal(st.peak_bytes, N * 64);
	assert_int_equal(st.faults, 0);
	sim_dart_destroy(d);
	free(buf);
}

static void test_bad_config(void **state)
{
	struct sim_dart_config cfg = { .max_bytes = SIM_DART_MAX_MAX_BYTES + 1 };
	char err[256] = "";

	(void)state;
	assert_null(sim_dart_create(&cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "above the model's maximum"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_base),
		cmocka_unit_test(test_granule_offset_and_spacing),
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_strict_translate),
		cmocka_unit_test(test_dma_across_registrations),
		cmocka_unit_test(test_identity_mode),
		cmocka_unit_test(test_many_mappings_churn),
		cmocka_unit_test(test_bad_config),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
