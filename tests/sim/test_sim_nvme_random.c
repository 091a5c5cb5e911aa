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

/* ------------------------------------------------------------------ */

/* What the test expects the controller's queues to be (a model). */
struct queue_model {
	bool cq_live[17], sq_live[17];
	uint16_t sq_cq[17];
};

#define QMEM_SIZE (1u << 20)
#define STEPS 100000

/*
 * Random bytes, half of the 64-byte slots made a plausible Read or Write of
 * namespace 1 whose PRPs point into qmem (any offset) or nowhere: data must
 * never land in the admin queues, whose state the test keeps.
 */
static void fill_queue_memory(uint8_t *qmem, uint64_t qbus)
{
	for (size_t k = 0; k < QMEM_SIZE; k += 8) {
		uint64_t r = rnd();
		memcpy(qmem + k, &r, 8);
	}
	for (size_t k = 0; k < QMEM_SIZE; k += 64) {
		if (rnd() % 2)
			continue;
		uint8_t *e = qmem + k;
		uint32_t nsid = 1, cdw10 = (uint32_t)(rnd() % 16384), cdw11 = 0;
		uint32_t cdw12 = (uint32_t)(rnd() % 4 ? rnd() % 64 : rnd() % 4096);
		uint64_t prp[2];
		for (int j = 0; j < 2; j++)
			prp[j] = rnd() % 8 ? qbus + (rnd() % QMEM_SIZE & (rnd() % 2 ? ~4095ull : ~7ull)) : rnd();
		e[0] = (uint8_t)(1 + rnd() % 2);
		e[1] = 0;
		memcpy(e + 4, &nsid, 4);
		memcpy(e + 24, prp, 16);
		memcpy(e + 40, &cdw10, 4);
		memcpy(e + 44, &cdw11, 4);
		memcpy(e + 48, &cdw12, 4);
	}
}

/* Disable and enable again with the same admin queue memory; the model empties. */
static void reenable(struct drv *d, struct queue_model *m)
{
	struct drv_queue *q = &d->q[0];
	uint8_t *sq = q->sq, *cq = q->cq;

	drv_wreg32(d, 0x14, 0);
	assert_int_equal(drv_reg32(d, 0x1c) & 1, 0);
	memset(sq, 0, 32 * 64);
	memset(cq, 0, 32 * 16);
	*q = (struct drv_queue){ .sq = sq, .cq = cq, .depth = 32, .phase = true };
	drv_wreg32(d, 0x24, (31u << 16) | 31u);
	assert_int_equal(d->hd->ops->mmio_write(d->hd, 0, 0x28, 8, drv_bus(d, sq)), 0);
	assert_int_equal(d->hd->ops->mmio_write(d->hd, 0, 0x30, 8, drv_bus(d, cq)), 0);
	drv_wreg32(d, 0x14, (4u << 20) | (6u << 16) | 1u);
	assert_int_equal(drv_reg32(d, 0x1c), 1);
	memset(m, 0, sizeof(*m));
}

/* The status a queue-management command must get, given the model (and update it). */
static uint16_t expected_status(struct queue_model *m, const struct drv_cmd *c)
{
	uint16_t qid = (uint16_t)c->cdw10;
	uint32_t qsize = (c->cdw10 >> 16) + 1;
	bool pc = c->cdw11 & 1;

	switch (c->opcode) {
	case 0x05: { /* Create CQ */
		uint16_t vector = (uint16_t)(c->cdw11 >> 16);
		if (qid == 0 || qid >= 17 || m->cq_live[qid])
			return 0x101;
		if (qsize < 2 || qsize > 1024)
			return 0x102;
		if (!pc)
			return 0x002;
		if (c->prp1 & 4095)
			return 0x013;
		if (vector >= 17)
			return 0x108;
		m->cq_live[qid] = true;
		return 0;
	}
	case 0x01: { /* Create SQ */
		uint16_t cqid = (uint16_t)(c->cdw11 >> 16);
		if (qid == 0 || qid >= 17 || m->sq_live[qid])
			return 0x101;
		if (cqid == 0 || cqid >= 17 || !m->cq_live[cqid])
			return 0x100;
		if (qsize < 2 || qsize > 1024)
			return 0x102;
		if (!pc)
			return 0x002;
		if (c->prp1 & 4095)
			return 0x013;
		m->sq_live[qid] = true;
		m->sq_cq[qid] = cqid;
		return 0;
	}
	case 0x00: /* Delete SQ */
		if (qid == 0 || qid >= 17 || !m->sq_live[qid])
			return 0x101;
		m->sq_live[qid] = false;
		return 0;
	default: /* Delete CQ */
		if (qid == 0 || qid >= 17 || !m->cq_live[qid])
			return 0x101;
		for (unsigned i = 1; i < 17; i++)
			if (m->sq_live[i] && m->sq_cq[i] == qid)
				return 0x10c;
		m->cq_live[qid] = false;
		return 0;
	}
}

static bool fatal_or_not_ready(struct drv *d)
{
	return (drv_reg32(d, 0x1c) & 3) != 1;
}

/*
 * A hostile guest managing queues: random Create/Delete SQ/CQ checked
 * against a model of the queues, doorbells with random queue ids and values
 * that make the controller run whatever garbage sits in the queue memory,
 * random register and config writes, resets in between.  The controller
 * must answer queue management exactly as the model says, never touch
 * memory the DART does not map, and keep coming back after a reset.
 */
static void test_random_queues_doorbells_resets(void **unused)
{
	struct drv d;
	struct queue_model m;
	uint8_t *canary = malloc(1 << 20);
	unsigned checked = 0, doorbells = 0, resets = 0, aers = 0;

	(void)unused;
	assert_non_null(canary);
	memset(canary, 0xa5, 1 << 20);
	drv_open(&d, "sim:nvme,size=8M,seed=11");
	drv_enable(&d);
	memset(&m, 0, sizeof(m));
	uint8_t *qmem = drv_alloc(&d, QMEM_SIZE);
	uint64_t qbus = drv_bus(&d, qmem);

	for (unsigned i = 0; i < STEPS; i++) {
		unsigned what = (unsigned)(rnd() % 256);

		if (i % 5000 == 0) /* commands for the random queues to run: garbage or nearly right */
			fill_queue_memory(qmem, qbus);
		if (what < 128) { /* queue management */
			static const uint8_t ops[] = { 0x00, 0x01, 0x04, 0x05 };
			struct drv_cmd c = { .opcode = ops[rnd() % 4] };
			/* Mostly in range (ids 1..16, 2..64 entries), sometimes anything. */
			uint32_t qid = rnd() % 8 ? 1 + (uint32_t)(rnd() % 16) : (uint32_t)(rnd() & 0xffff);
			uint32_t qsize = rnd() % 8 ? 1 + (uint32_t)(rnd() % 63) : (uint32_t)(rnd() & 0xffff);
			uint32_t other = rnd() % 8 ? 1 + (uint32_t)(rnd() % 16) : (uint32_t)(rnd() & 0xffff);
			c.cdw10 = qsize << 16 | qid;
			c.cdw11 = other << 16 | (rnd() % 16 ? 1u : 0u) | (rnd() % 2 ? 2u : 0u);
			switch (rnd() % 12) {
			case 0: c.prp1 = rnd(); break;
			case 1: c.prp1 = rnd() & ~4095ull; break; /* a queue the DART does not map */
			case 2: c.prp1 = qbus + (rnd() % QMEM_SIZE); break;
			default: c.prp1 = qbus + ((rnd() % QMEM_SIZE) & ~4095ull); break;
			}
			uint16_t cid = drv_queue_cmd(&d, 0, &c);
			drv_ring(&d, 0);
			struct drv_cqe cqe;
			if (!drv_reap(&d, 0, &cqe)) {
				/* Only a fatal controller (a doorbell made it fetch from nowhere) stays silent. */
				assert_true(fatal_or_not_ready(&d));
				reenable(&d, &m);
				resets++;
				continue;
			}
			assert_int_equal(cqe.cid, cid);
			assert_int_equal(cqe.sqid, 0);
			uint16_t want = expected_status(&m, &c);
			if (cqe.status != want)
				fail_msg("step %u: opcode 0x%02x cdw10 0x%08x cdw11 0x%08x prp1 0x%llx: status 0x%03x, "
					 "expected 0x%03x", i, c.opcode, c.cdw10, c.cdw11, (unsigned long long)c.prp1,
					 cqe.status, want);
			assert_true(cqe.status == 0 || cqe.dnr);
			checked++;
		} else if (what < 232) { /* a doorbell of an I/O queue, or of nothing */
			uint32_t index = rnd() % 8 ? 2 + (uint32_t)(rnd() % 34) : (uint32_t)(rnd() % 3072);
			uint32_t value = rnd() % 4 ? (uint32_t)(rnd() % 64) : (uint32_t)rnd();
			drv_wreg32(&d, 0x1000 + 4ull * index, value);
			doorbells++;
			if (fatal_or_not_ready(&d)) {
				reenable(&d, &m);
				resets++;
			}
		} else if (what < 240) { /* Async Event Requests pile up until the limit */
			struct drv_cmd c = { .opcode = 0x0c };
			drv_queue_cmd(&d, 0, &c);
			drv_ring(&d, 0);
			struct drv_cqe cqe;
			if (drv_reap(&d, 0, &cqe))
				assert_int_equal(cqe.status, 0x105);
			aers++;
		} else if (what < 242) { /* a register or config write, then start over */
			uint64_t off = rnd() % 0x40 & ~3ull;
			if (rnd() % 2)
				assert_int_equal(d.hd->ops->mmio_write(d.hd, 0, off, 4, rnd()), 0);
			else
				assert_int_equal(d.hd->ops->config_write(d.hd, (uint32_t)(rnd() % 4096) & ~3u, 4,
									 (uint32_t)rnd()), 0);
			reenable(&d, &m);
			resets++;
		} else if (what == 242) { /* a function-level reset */
			assert_int_equal(d.hd->ops->reset(d.hd), 0);
			reenable(&d, &m);
			resets++;
		}
	}
	print_message("%u queue commands checked against the model, %u doorbells, %u AERs, %u resets\n", checked,
		      doorbells, aers, resets);
	assert_true(checked > STEPS / 4);
	for (size_t i = 0; i < (1 << 20); i++)
		if (canary[i] != 0xa5)
			fail_msg("unregistered memory changed at %zu", i);

	/* Still a working controller after a reset. */
	assert_int_equal(d.hd->ops->reset(d.hd), 0);
	reenable(&d, &m);
	assert_int_equal(drv_create_io_queue(&d, 1, DRV_QDEPTH), 0);
	uint8_t *buf = drv_alloc(&d, 8192);
	memset(buf, 0x6b, 4096);
	struct drv_cmd w = { .opcode = 0x01, .nsid = 1, .cdw12 = 7 };
	drv_prps(&d, &w, buf, 4096);
	assert_int_equal(drv_exec(&d, 1, &w).status, 0);
	struct drv_cmd r = { .opcode = 0x02, .nsid = 1, .cdw12 = 7 };
	drv_prps(&d, &r, buf + 4096, 4096);
	assert_int_equal(drv_exec(&d, 1, &r).status, 0);
	assert_memory_equal(buf, buf + 4096, 4096);
	drv_close(&d);
	free(canary);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_commands),
		cmocka_unit_test(test_random_queues_doorbells_resets),
	};

	vfa_log_set_level(VFA_LOG_ERROR); /* thousands of expected DART faults */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
