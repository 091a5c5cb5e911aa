// SPDX-License-Identifier: MIT
/*
 * Random commands from an untrusted guest: the simulated NVMe must complete
 * each with a status a real controller could return, keep serving, and
 * never touch memory the DART does not map.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nvme_driver.h"
#include "sim_dart.h"
#include "log.h"
#include "sim_nvme.h"

#define COMMANDS 20000

static uint64_t state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	state ^= state << 13;
	state ^= state >> 7;
	state ^= state << 17;
	return state;
}

/* A PRP value: usually inside the arena, sometimes misaligned or wild. */
static uint64_t random_prp(struct drv *d)
{
	switch (rnd() % 6) {
	case 0: return rnd();
	case 1: return d->arena_bus + DRV_ARENA_SIZE - (rnd() % 8192);
	case 2: return drv_bus(d, d->arena) + (rnd() % DRV_ARENA_SIZE);
	default: return drv_bus(d, d->arena) + ((rnd() % DRV_ARENA_SIZE) & ~4095ull);
	}
}

static bool status_allowed(uint16_t st, bool admin)
{
	static const uint16_t io_ok[] = { 0x000, 0x001, 0x002, 0x004, 0x00b, 0x013, 0x080 };
	static const uint16_t admin_ok[] = { 0x000, 0x001, 0x002, 0x004, 0x00b, 0x013, 0x109 };
	const uint16_t *ok = admin ? admin_ok : io_ok;

	for (size_t i = 0; i < 7; i++)
		if (st == ok[i])
			return true;
	return false;
}

static void test_random_commands(void **unused)
{
	struct drv d;
	/* Host memory the device must never reach: not registered. */
	uint8_t *canary = malloc(1 << 20);
	struct sim_nvme_stats st;
	struct hd_dma_stats ds;
	unsigned completed = 0;

	(void)unused;
	assert_non_null(canary);
	memset(canary, 0xa5, 1 << 20);
	drv_open(&d, "sim:nvme,size=8M,seed=3");
	drv_enable(&d);
	assert_int_equal(drv_create_io_queue(&d, 1, DRV_QDEPTH), 0);
	/* Queue memory is allocated; everything after is a scratch area the commands may scribble on. */
	for (unsigned i = 0; i < COMMANDS; i++) {
		bool admin = rnd() % 4 == 0;
		struct drv_cmd c = {
			.flags = rnd() % 8 == 0 ? (uint8_t)rnd() : 0,
			.nsid = rnd() % 4 == 0 ? (uint32_t)rnd() : 1,
			.prp1 = random_prp(&d),
			.prp2 = random_prp(&d),
			.cdw10 = (uint32_t)rnd(),
			.cdw11 = rnd() % 2 ? (uint32_t)rnd() : 0,
			.cdw12 = rnd() % 2 ? (uint32_t)rnd() : (uint32_t)(rnd() % 64),
			.cdw13 = rnd() % 4 ? 0 : (uint32_t)rnd(),
		};
		if (admin) {
			/* Not the queue-management and AER opcodes: this test keeps its queues. */
			static const uint8_t ops[] = { 0x02, 0x06, 0x08, 0x09, 0x0a, 0x10, 0x11, 0x7f, 0x80, 0xff };
			c.opcode = ops[rnd() % sizeof(ops)];
			if (c.opcode == 0x06)
				c.cdw10 &= 0xff; /* reach the real CNS values more often */
			if (c.opcode == 0x02 && rnd() % 2)
				c.cdw10 = (c.cdw10 & 0x00ff00ff) | (uint32_t)(rnd() % 6);
		} else {
			c.opcode = rnd() % 3 ? (uint8_t)(rnd() % 3) : (uint8_t)rnd();
			if (rnd() % 2)
				c.cdw11 = 0, c.cdw10 %= 16384; /* in range more often */
		}
		struct drv_cqe cqe = drv_exec(&d, admin ? 0 : 1, &c);
		if (!status_allowed(cqe.status, admin))
			fail_msg("command %u (opcode 0x%02x, %s): unexpected status 0x%03x", i, c.opcode,
				 admin ? "admin" : "I/O", cqe.status);
		if (cqe.status)
			assert_true(cqe.dnr);
		completed++;
	}
	sim_nvme_get_stats(d.hd, &st);
	print_message("%u commands: %llu admin, %llu I/O, %llu errors, %llu DMA faults\n", completed,
		      (unsigned long long)st.admin_commands, (unsigned long long)st.io_commands,
		      (unsigned long long)st.errors, (unsigned long long)st.dma_faults);
	assert_false(st.fatal);
	assert_int_equal(completed, COMMANDS);
	assert_true(st.dma_faults > 100); /* the wild PRPs did fault */
	assert_int_equal(d.hd->ops->dma_stats(d.hd, &ds), 0);
	assert_int_equal(ds.faults, st.dma_faults);
	for (size_t i = 0; i < (1 << 20); i++)
		if (canary[i] != 0xa5)
			fail_msg("unregistered memory changed at %zu", i);
	/* Still a working controller. */
	uint8_t *buf = drv_alloc(&d, 4096);
	memset(buf, 0x3c, 4096);
	struct drv_cmd w = { .opcode = 0x01, .nsid = 1, .cdw12 = 7 };
	drv_prps(&d, &w, buf, 4096);
	assert_int_equal(drv_exec(&d, 1, &w).status, 0);
	memset(buf, 0, 4096);
	w.opcode = 0x02;
	assert_int_equal(drv_exec(&d, 1, &w).status, 0);
	assert_int_equal(buf[4095], 0x3c);
	drv_close(&d);
	free(canary);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_commands),
	};

	vfa_log_set_level(VFA_LOG_ERROR); /* thousands of expected DART faults */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
