// SPDX-License-Identifier: MIT
#include "nvme_driver.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "backends.h"

#define PAGE 4096u

void drv_open(struct drv *d, const char *spec)
{
	char err[256] = "";
	unsigned nvec = 0;
	uint64_t mask[HD_IRQ_WORDS] = { ~0ull, ~0ull, ~0ull, ~0ull };
	uint64_t bus_len = 0;

	memset(d, 0, sizeof(*d));
	d->hd = host_device_open(spec, err, sizeof(err));
	if (!d->hd)
		fail_msg("host_device_open(%s): %s", spec, err);
	assert_int_equal(d->hd->ops->claim(d->hd), 0);
	assert_int_equal(d->hd->ops->irq_setup(d->hd, &nvec), 0);
	assert_int_equal(nvec, 17);
	assert_int_equal(d->hd->ops->irq_set_mask(d->hd, mask), 0);
	d->arena = mmap(NULL, DRV_ARENA_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(d->arena != MAP_FAILED);
	assert_int_equal(d->hd->ops->dma_register(d->hd, DRV_ARENA_KEY, d->arena, DRV_ARENA_SIZE, &d->arena_bus, &bus_len), 0);
	assert_int_equal(bus_len, DRV_ARENA_SIZE);
}

void drv_close(struct drv *d)
{
	if (d->hd)
		d->hd->ops->destroy(d->hd);
	munmap(d->arena, DRV_ARENA_SIZE);
	d->hd = NULL;
}

void *drv_alloc(struct drv *d, size_t size)
{
	size_t rounded = (size + PAGE - 1) & ~(size_t)(PAGE - 1);
	void *p;

	if (rounded > DRV_ARENA_SIZE - d->arena_used)
		fail_msg("test arena full");
	p = d->arena + d->arena_used;
	d->arena_used += rounded;
	memset(p, 0, rounded);
	return p;
}

uint64_t drv_bus(const struct drv *d, const void *p)
{
	return d->arena_bus + (uint64_t)((const uint8_t *)p - d->arena);
}

uint32_t drv_reg32(struct drv *d, uint64_t off)
{
	uint64_t v = 0;

	assert_int_equal(d->hd->ops->mmio_read(d->hd, 0, off, 4, &v), 0);
	return (uint32_t)v;
}

void drv_wreg32(struct drv *d, uint64_t off, uint32_t v)
{
	assert_int_equal(d->hd->ops->mmio_write(d->hd, 0, off, 4, v), 0);
}

void drv_enable(struct drv *d)
{
	struct drv_queue *q = &d->q[0];

	drv_wreg32(d, 0x14, 0);
	assert_int_equal(drv_reg32(d, 0x1c) & 1, 0);
	memset(q, 0, sizeof(*q));
	q->depth = 32;
	q->sq = drv_alloc(d, 32 * 64);
	q->cq = drv_alloc(d, 32 * 16);
	q->phase = true;
	drv_wreg32(d, 0x24, (31u << 16) | 31u);
	assert_int_equal(d->hd->ops->mmio_write(d->hd, 0, 0x28, 8, drv_bus(d, q->sq)), 0);
	assert_int_equal(d->hd->ops->mmio_write(d->hd, 0, 0x30, 8, drv_bus(d, q->cq)), 0);
	drv_wreg32(d, 0x14, (4u << 20) | (6u << 16) | 1u);
	assert_int_equal(drv_reg32(d, 0x1c), 1);
}

uint16_t drv_create_io_queue(struct drv *d, uint16_t qid, uint32_t depth)
{
	struct drv_queue *q = &d->q[qid];
	struct drv_cmd c;
	uint16_t st;

	memset(q, 0, sizeof(*q));
	q->depth = depth;
	q->sq = drv_alloc(d, depth * 64);
	q->cq = drv_alloc(d, depth * 16);
	q->phase = true;
	c = (struct drv_cmd){ .opcode = 0x05, .prp1 = drv_bus(d, q->cq),
			      .cdw10 = ((depth - 1) << 16) | qid, .cdw11 = ((uint32_t)qid << 16) | 3 };
	st = drv_exec(d, 0, &c).status;
	c = (struct drv_cmd){ .opcode = 0x01, .prp1 = drv_bus(d, q->sq),
			      .cdw10 = ((depth - 1) << 16) | qid, .cdw11 = ((uint32_t)qid << 16) | 1 };
	return st | drv_exec(d, 0, &c).status;
}

uint16_t drv_queue_cmd(struct drv *d, uint16_t qid, const struct drv_cmd *c)
{
	struct drv_queue *q = &d->q[qid];
	uint8_t *e = q->sq + (size_t)q->sq_tail * 64;
	uint16_t cid = q->next_cid++;

	memset(e, 0, 64);
	e[0] = c->opcode;
	e[1] = c->flags;
	memcpy(e + 2, &cid, 2);
	memcpy(e + 4, &c->nsid, 4);
	memcpy(e + 24, &c->prp1, 8);
	memcpy(e + 32, &c->prp2, 8);
	memcpy(e + 40, &c->cdw10, 4);
	memcpy(e + 44, &c->cdw11, 4);
	memcpy(e + 48, &c->cdw12, 4);
	memcpy(e + 52, &c->cdw13, 4);
	q->sq_tail = (q->sq_tail + 1) % q->depth;
	return cid;
}

void drv_ring(struct drv *d, uint16_t qid)
{
	drv_wreg32(d, 0x1000 + 8u * qid, d->q[qid].sq_tail);
}

bool drv_reap(struct drv *d, uint16_t qid, struct drv_cqe *out)
{
	struct drv_queue *q = &d->q[qid];
	uint8_t *e = q->cq + (size_t)q->cq_head * 16;
	uint32_t dw3;

	memcpy(&dw3, e + 12, 4);
	if (((dw3 >> 16) & 1) != (q->phase ? 1u : 0u))
		return false;
	memcpy(&out->result, e, 4);
	memcpy(&out->sq_head, e + 8, 2);
	memcpy(&out->sqid, e + 10, 2);
	out->cid = (uint16_t)dw3;
	out->status = (uint16_t)((dw3 >> 17) & 0x7ff);
	out->dnr = (dw3 >> 31) & 1;
	q->cq_head++;
	if (q->cq_head == q->depth) {
		q->cq_head = 0;
		q->phase = !q->phase;
	}
	drv_wreg32(d, 0x1000 + 8u * qid + 4, q->cq_head);
	return true;
}

struct drv_cqe drv_exec(struct drv *d, uint16_t qid, const struct drv_cmd *c)
{
	struct drv_cqe cqe;
	uint16_t cid = drv_queue_cmd(d, qid, c);

	drv_ring(d, qid);
	if (!drv_reap(d, qid, &cqe))
		fail_msg("command 0x%02x on queue %u did not complete", c->opcode, qid);
	assert_int_equal(cqe.cid, cid);
	assert_int_equal(cqe.sqid, qid);
	return cqe;
}

void drv_prps(struct drv *d, struct drv_cmd *c, void *buf, size_t len)
{
	uint8_t *p = buf;
	size_t off = (uintptr_t)p % PAGE;
	size_t first = PAGE - off < len ? PAGE - off : len;
	size_t rem = len - first;

	c->prp1 = drv_bus(d, p);
	c->prp2 = 0;
	if (rem == 0)
		return;
	p += first;
	if (rem <= PAGE) {
		c->prp2 = drv_bus(d, p);
		return;
	}
	/* PRP lists of full pages, chained through their last entry. */
	size_t pages = (rem + PAGE - 1) / PAGE;
	uint64_t *list = drv_alloc(d, PAGE);
	size_t slot = 0;
	c->prp2 = drv_bus(d, list);
	for (size_t i = 0; i < pages; i++) {
		if (slot == PAGE / 8 - 1 && pages - i > 1) {
			uint64_t *next = drv_alloc(d, PAGE);
			list[slot] = drv_bus(d, next);
			list = next;
			slot = 0;
		}
		list[slot++] = drv_bus(d, p + i * PAGE);
	}
}
