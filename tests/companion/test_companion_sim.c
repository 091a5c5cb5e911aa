// SPDX-License-Identifier: MIT
/*
 * The companion over the simulated NVMe's DART model (backends/sim): the bus
 * addresses it hands the guest really translate back to the guest's buffers,
 * the DART's limits surface as per-entry IOERR, and nothing stays mapped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "companion.h"
#include "guest_mem.h"
#include "log.h"
#include "sim_dart.h"
#include "sim_nvme.h"

#define RAM_GPA 0x100000ull
#define RAM_SIZE 0x400000ull
#define PAGE (RAM_GPA)
#define REQ (RAM_GPA + 0x1000)
#define RESP (RAM_GPA + 0x20000)
#define BUF (RAM_GPA + 0x100000)

struct env {
	struct host_device *hd;
	struct sim_dart *dart;
	struct guest_mem *gm;
	struct companion *c;
	uint8_t *ram;
};

static uint8_t *at(struct env *e, uint64_t gpa)
{
	return e->ram + (gpa - RAM_GPA);
}

static void st32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void st64(uint8_t *p, uint64_t v)
{
	st32(p, (uint32_t)v);
	st32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t ld(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint32_t ring(struct env *e, uint32_t type, uint32_t count)
{
	st32(at(e, PAGE), type);
	st32(at(e, PAGE) + 4, count);
	st64(at(e, PAGE) + 16, REQ);
	st64(at(e, PAGE) + 24, RESP);
	companion_mmio_write(e->c, APPLE_DMA_REG_CMD_GPA_LO, 4, (uint32_t)PAGE);
	companion_mmio_write(e->c, APPLE_DMA_REG_CMD_GPA_HI, 4, 0);
	companion_mmio_write(e->c, APPLE_DMA_REG_DOORBELL, 4, 1);
	uint32_t st = companion_mmio_read(e->c, APPLE_DMA_REG_STATUS, 4);
	/* After a removal STATUS reads all ones; the batch status is on the command page. */
	return st == 0xffffffffu ? (uint32_t)ld(at(e, PAGE) + 8, 4) : st;
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	struct sim_nvme_config cfg = {
		.size = 1 << 20,
		.dart = { .max_bytes = 0x40000, .max_mappings = 8, .seeded = true, .seed = 42 },
	};
	char err[256];

	e->hd = sim_nvme_open(&cfg, err, sizeof(err));
	assert_non_null(e->hd);
	e->dart = sim_nvme_dart(e->hd);
	e->gm = guest_mem_create();
	e->ram = calloc(1, RAM_SIZE);
	assert_int_equal(guest_mem_add(e->gm, RAM_GPA, RAM_SIZE, e->ram, true), 0);
	e->c = companion_create(e->hd, e->gm, 0x28, 0);
	assert_non_null(e->c);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	if (e->c)
		companion_destroy(e->c);
	guest_mem_destroy(e->gm);
	e->hd->ops->destroy(e->hd);
	free(e->ram);
	free(e);
	return 0;
}

static void test_sim_budget_registers(void **state)
{
	struct env *e = *state;

	assert_int_equal(companion_mmio_read(e->c, APPLE_DMA_REG_FEATURES, 4), 7);
	assert_int_equal(companion_mmio_read(e->c, APPLE_DMA_REG_DART_MAX_BYTES_LO, 4), 0x40000);
	assert_int_equal(companion_mmio_read(e->c, APPLE_DMA_REG_DART_MAX_BYTES_HI, 4), 0);
	assert_int_equal(companion_mmio_read(e->c, APPLE_DMA_REG_DART_MAX_MAPPINGS, 4), 8);
	assert_int_equal(companion_mmio_read(e->c, APPLE_DMA_REG_DART_GRANULE, 4), SIM_DART_GRANULE);
}

static void test_sim_map_translate_unmap(void **state)
{
	struct env *e = *state;
	uint64_t ids[10], bus[10];
	struct hd_dma_stats ds;

	/* 10 entries, the DART takes 8 mappings: the last two fail */
	for (uint32_t i = 0; i < 10; i++) {
		st64(at(e, REQ) + i * 16, BUF + i * 0x3000 + 0x10);
		st32(at(e, REQ) + i * 16 + 8, 0x2000);
		st32(at(e, REQ) + i * 16 + 12, 0);
	}
	assert_int_equal(ring(e, APPLE_DMA_CMD_MAP, 10), APPLE_DMA_IOERR);
	for (uint32_t i = 0; i < 10; i++) {
		uint8_t *r = at(e, RESP) + i * 24;

		assert_int_equal(ld(r + 20, 4), i < 8 ? APPLE_DMA_OK : APPLE_DMA_IOERR);
		ids[i] = ld(r, 8);
		bus[i] = ld(r + 8, 8);
		if (i >= 8)
			continue;
		assert_int_equal(ld(r + 16, 4), 0x2000);
		/* the bus address reaches exactly the guest's buffer */
		assert_ptr_equal(sim_dart_translate(e->dart, bus[i], 0x2000, true), at(e, BUF + i * 0x3000 + 0x10));
		assert_null(sim_dart_translate(e->dart, bus[i], 0x2001, true));
		assert_int_equal(bus[i] & (SIM_DART_GRANULE - 1), (uintptr_t)at(e, BUF + i * 0x3000 + 0x10) & (SIM_DART_GRANULE - 1));
	}
	/* device DMA lands in guest RAM */
	assert_int_equal(sim_dart_dma_write(e->dart, bus[3] + 0x100, "hello", 5), 0);
	assert_memory_equal(at(e, BUF + 3 * 0x3000 + 0x110), "hello", 5);
	sim_dart_stats(e->dart, &ds);
	assert_int_equal(ds.live_mappings, 8);
	/* unmap 0..3 */
	for (uint32_t i = 0; i < 4; i++) {
		st64(at(e, REQ) + i * 16, ids[i]);
		st64(at(e, REQ) + i * 16 + 8, 0x2000);
	}
	assert_int_equal(ring(e, APPLE_DMA_CMD_UNMAP, 4), APPLE_DMA_OK);
	for (uint32_t i = 0; i < 4; i++)
		assert_null(sim_dart_translate(e->dart, bus[i], 1, false));
	assert_non_null(sim_dart_translate(e->dart, bus[4], 1, false));
	sim_dart_stats(e->dart, &ds);
	assert_int_equal(ds.live_mappings, 4);
	/* the byte limit: 4 x 8 KiB live, 256 KiB max: a 240 KiB entry fails,
	 * a 200 KiB one fits */
	st64(at(e, REQ), BUF);
	st32(at(e, REQ) + 8, 0x3c000);
	st64(at(e, REQ) + 16, BUF);
	st32(at(e, REQ) + 24, 200 * 1024);
	assert_int_equal(ring(e, APPLE_DMA_CMD_MAP, 2), APPLE_DMA_IOERR);
	assert_int_equal(ld(at(e, RESP) + 20, 4), APPLE_DMA_IOERR);
	assert_int_equal(ld(at(e, RESP) + 24 + 20, 4), APPLE_DMA_OK);
	/* destroy (VMM gone): the DART is empty */
	companion_destroy(e->c);
	e->c = NULL;
	sim_dart_stats(e->dart, &ds);
	assert_int_equal(ds.live_mappings, 0);
	assert_int_equal(ds.live_bytes, 0);
}

static void test_sim_ram_removed_and_reset(void **state)
{
	struct env *e = *state;
	struct hd_dma_stats ds;
	uint64_t bus0;

	for (uint32_t i = 0; i < 4; i++) {
		st64(at(e, REQ) + i * 16, BUF + i * 0x1000);
		st32(at(e, REQ) + i * 16 + 8, 0x1000);
		st32(at(e, REQ) + i * 16 + 12, 0);
	}
	assert_int_equal(ring(e, APPLE_DMA_CMD_MAP, 4), APPLE_DMA_OK);
	bus0 = ld(at(e, RESP) + 8, 8);
	companion_guest_ram_removed(e->c, BUF, 0x2000);
	sim_dart_stats(e->dart, &ds);
	assert_int_equal(ds.live_mappings, 2);
	assert_null(sim_dart_translate(e->dart, bus0, 1, false));
	companion_reset(e->c);
	sim_dart_stats(e->dart, &ds);
	assert_int_equal(ds.live_mappings, 0);
}


/*
 * Surprise removal (issue 14, item 3): the DART empties at once, new MAPs
 * fail with IOERR, UNMAPs of ids that were live succeed once (no second
 * host unregister), UNMAP_ALL works, and after a replug MAPs work again.
 */
static void test_sim_removal_releases_and_refuses(void **state)
{
	struct env *e = *state;
	uint64_t ids[4];
	struct hd_dma_stats ds;
	struct companion_stats cs;
	char err[128];

	for (uint32_t i = 0; i < 4; i++) {
		st64(at(e, REQ) + i * 16, BUF + i * 0x4000);
		st32(at(e, REQ) + i * 16 + 8, 0x1000);
	}
	assert_int_equal(ring(e, APPLE_DMA_CMD_MAP, 4), APPLE_DMA_OK);
	for (uint32_t i = 0; i < 4; i++)
		ids[i] = ld(at(e, RESP) + i * 24, 8);
	uint64_t bus0 = ld(at(e, RESP) + 8, 8);
	sim_dart_stats(e->dart, &ds);
	assert_int_equal(ds.live_mappings, 4);

	/* Pulled: the companion notices at its next doorbell by itself. */
	assert_int_equal(sim_nvme_vanish(e->hd, NULL), 0);
	st64(at(e, REQ), BUF + 0x40000);
	st32(at(e, REQ) + 8, 0x1000);
	assert_int_equal(ring(e, APPLE_DMA_CMD_MAP, 1), APPLE_DMA_IOERR);
	assert_int_equal(ld(at(e, RESP) + 20, 4), APPLE_DMA_IOERR);
	/* Its registers read as a missing device's: the guest's sign. */
	assert_int_equal(companion_mmio_read(e->c, APPLE_DMA_REG_STATUS, 4), 0xffffffffu);
	assert_int_equal(companion_mmio_read(e->c, APPLE_DMA_REG_VERSION, 4), 0xffffffffu);
	assert_int_equal(companion_mmio_read(e->c, APPLE_DMA_REG_VERSION, 2), 0xffffu);
	assert_true(companion_host_is_gone(e->c));
	sim_dart_stats(e->dart, &ds);
	assert_int_equal(ds.live_mappings, 0); /* every mapping released */
	assert_int_equal(ds.unregisters, 4);
	assert_null(sim_dart_translate(e->dart, bus0, 1, false));
	companion_stats(e->c, &cs);
	assert_int_equal(cs.removed_refused, 1);
	assert_int_equal(cs.orphaned_ids, 4);
	assert_int_equal(cs.live_ids, 4); /* the guest still holds them */
	/* The front end telling it again changes nothing. */
	assert_int_equal(companion_host_gone(e->c), 0);

	/* UNMAP of two live ids: OK, no host call; again: unknown, IOERR. */
	for (uint32_t i = 0; i < 2; i++) {
		st64(at(e, REQ) + i * 16, ids[i]);
		st64(at(e, REQ) + i * 16 + 8, 0x1000);
	}
	assert_int_equal(ring(e, APPLE_DMA_CMD_UNMAP, 2), APPLE_DMA_OK);
	assert_int_equal(ring(e, APPLE_DMA_CMD_UNMAP, 2), APPLE_DMA_IOERR);
	/* A wrong size for an orphaned id is still refused. */
	st64(at(e, REQ), ids[2]);
	st64(at(e, REQ) + 8, 0x2000);
	assert_int_equal(ring(e, APPLE_DMA_CMD_UNMAP, 1), APPLE_DMA_IOERR);
	/* UNMAP_ALL takes the rest. */
	assert_int_equal(ring(e, APPLE_DMA_CMD_UNMAP_ALL, 0), APPLE_DMA_OK);
	companion_stats(e->c, &cs);
	assert_int_equal(cs.live_ids, 0);
	assert_int_equal(cs.orphaned_ids, 0);
	sim_dart_stats(e->dart, &ds);
	assert_int_equal(ds.unregisters, 4); /* never twice */

	/* Back: a fresh device (fresh DART); MAPs work again once claimed. */
	assert_int_equal(sim_nvme_replug(e->hd, err, sizeof(err)), 0);
	assert_int_equal(e->hd->ops->claim(e->hd), 0);
	companion_host_back(e->c);
	assert_int_equal(companion_mmio_read(e->c, APPLE_DMA_REG_VERSION, 4), APPLE_DMA_VERSION);
	e->dart = sim_nvme_dart(e->hd);
	st64(at(e, REQ), BUF);
	st32(at(e, REQ) + 8, 0x1000);
	assert_int_equal(ring(e, APPLE_DMA_CMD_MAP, 1), APPLE_DMA_OK);
	assert_true(ld(at(e, RESP), 8) > ids[3]); /* ids stay unique */
	sim_dart_stats(e->dart, &ds);
	assert_int_equal(ds.live_mappings, 1);
	assert_int_equal(ds.registers, 1);
}

/* Removed with mappings live and the companion destroyed at once: released, once. */
static void test_sim_removal_then_destroy(void **state)
{
	struct env *e = *state;
	struct hd_dma_stats ds;

	st64(at(e, REQ), BUF);
	st32(at(e, REQ) + 8, 0x1000);
	assert_int_equal(ring(e, APPLE_DMA_CMD_MAP, 1), APPLE_DMA_OK);
	assert_int_equal(sim_nvme_vanish(e->hd, NULL), 0);
	assert_int_equal(companion_host_gone(e->c), 1);
	companion_destroy(e->c);
	e->c = NULL;
	sim_dart_stats(e->dart, &ds);
	assert_int_equal(ds.live_mappings, 0);
	assert_int_equal(ds.unregisters, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_sim_budget_registers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sim_map_translate_unmap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sim_removal_releases_and_refuses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sim_removal_then_destroy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sim_ram_removed_and_reset, setup, teardown),
	};

	/* the faults provoked on purpose would fill the log */
	vfa_log_set_level(VFA_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
