/* SPDX-License-Identifier: MIT */
/*
 * A tiny NVMe driver for tests: it reaches the simulated controller only
 * through the host-device interface, as the broker does for a guest.  Guest
 * memory is one arena registered with the DART; helpers turn arena pointers
 * into bus addresses.
 */
#ifndef VFA_TEST_NVME_DRIVER_H
#define VFA_TEST_NVME_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "host_device.h"

#define DRV_ARENA_SIZE (16u << 20)
#define DRV_QDEPTH 64u
/* The arena's DMA key: a guest-physical-like address (the bus address in identity mode). */
#define DRV_ARENA_KEY 0x40000000u
#define DRV_MAX_QUEUES 17u

struct drv_queue {
	uint8_t *sq;      /* arena memory */
	uint8_t *cq;
	uint32_t depth;
	uint32_t sq_tail;
	uint32_t cq_head;
	bool phase;
	uint16_t next_cid;
};

struct drv {
	struct host_device *hd;
	uint8_t *arena;    /* DRV_ARENA_SIZE, page aligned */
	uint64_t arena_bus;
	size_t arena_used; /* bump allocator */
	struct drv_queue q[DRV_MAX_QUEUES];
};

struct drv_cqe {
	uint32_t result;
	uint16_t sq_head;
	uint16_t sqid;
	uint16_t cid;
	uint16_t status; /* (SCT << 8) | SC, without DNR */
	bool dnr;
};

struct drv_cmd {
	uint8_t opcode;
	uint8_t flags;
	uint32_t nsid;
	uint64_t prp1, prp2;
	uint32_t cdw10, cdw11, cdw12, cdw13;
};

/* Open "spec" (a sim: string), claim, set up interrupts, register the arena. */
void drv_open(struct drv *d, const char *spec);
void drv_close(struct drv *d);

/* Zeroed, page-aligned arena memory (aborts the test when the arena is full). */
void *drv_alloc(struct drv *d, size_t size);
uint64_t drv_bus(const struct drv *d, const void *p);

uint32_t drv_reg32(struct drv *d, uint64_t off);
void drv_wreg32(struct drv *d, uint64_t off, uint32_t v);

/* Disable, program the admin queue, enable; asserts CSTS.RDY. */
void drv_enable(struct drv *d);
/* Create I/O CQ+SQ qid (depth entries) with interrupt vector = qid; returns the statuses ORed. */
uint16_t drv_create_io_queue(struct drv *d, uint16_t qid, uint32_t depth);

/* Put a command on qid's SQ without ringing; returns its cid. */
uint16_t drv_queue_cmd(struct drv *d, uint16_t qid, const struct drv_cmd *c);
void drv_ring(struct drv *d, uint16_t qid);
/* Take the next completion of qid if one is posted (updates the CQ head doorbell). */
bool drv_reap(struct drv *d, uint16_t qid, struct drv_cqe *out);
/* Submit, ring and reap one command; asserts it completed. */
struct drv_cqe drv_exec(struct drv *d, uint16_t qid, const struct drv_cmd *c);

/* Fill the PRPs of c for buf (arena memory), building (chained) PRP lists as needed. */
void drv_prps(struct drv *d, struct drv_cmd *c, void *buf, size_t len);

#endif
