/* SPDX-License-Identifier: MIT */
/*
 * Shared setup of the companion tests: a fake host device, a guest memory
 * map with four kinds of region, and helpers to drive the device the way a
 * guest driver does (write the command page, ring, read STATUS).
 */
#ifndef VFA_COMPANION_FIXTURE_H
#define VFA_COMPANION_FIXTURE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "companion.h"
#include "fake_hd.h"
#include "guest_mem.h"

/* Guest-physical layout. */
#define GPA_A 0x100000ull     /* writable, 2 MiB */
#define SIZE_A 0x200000ull
#define GPA_B 0x300000ull     /* writable, 64 KiB, adjacent to A */
#define SIZE_B 0x10000ull
#define GPA_RO 0x400000ull    /* read-only, 64 KiB */
#define SIZE_RO 0x10000ull
#define GPA_NOVA 0x500000ull  /* known, unreachable (no fd), 64 KiB */
#define SIZE_NOVA 0x10000ull

#define PAGE_GPA GPA_A                 /* command page */
#define REQ_GPA (GPA_A + 0x1000)       /* 4096 x 16 bytes fit before RESP */
#define RESP_GPA (GPA_A + 0x20000)     /* 4096 x 24 bytes */
#define BUF_GPA (GPA_A + 0x40000)      /* buffers to map: up to the end of A */

#define MANAGED_BDF 0x0028

struct fixture {
	struct fake_hd *f;
	struct guest_mem *gm;
	struct companion *c;
	uint8_t *a, *b, *ro;
};

static inline struct fixture *fixture_new(uint64_t max_bytes, uint32_t max_mappings, bool identity)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	fx->f = fake_hd_create(max_bytes, max_mappings, 16384, identity);
	fx->gm = guest_mem_create();
	fx->a = calloc(1, SIZE_A);
	fx->b = calloc(1, SIZE_B);
	fx->ro = calloc(1, SIZE_RO);
	if (guest_mem_add(fx->gm, GPA_A, SIZE_A, fx->a, true) || guest_mem_add(fx->gm, GPA_B, SIZE_B, fx->b, true) ||
	    guest_mem_add(fx->gm, GPA_RO, SIZE_RO, fx->ro, false) ||
	    guest_mem_add(fx->gm, GPA_NOVA, SIZE_NOVA, NULL, false))
		abort();
	fx->c = companion_create(&fx->f->hd, fx->gm, MANAGED_BDF, 0);
	if (!fx->c)
		abort();
	return fx;
}

static inline void fixture_free(struct fixture *fx)
{
	companion_destroy(fx->c);
	guest_mem_destroy(fx->gm);
	fake_hd_destroy(fx->f);
	free(fx->a);
	free(fx->b);
	free(fx->ro);
	free(fx);
}

/* Host pointer of a guest address in A, B or RO (tests only). */
static inline uint8_t *gp(struct fixture *fx, uint64_t gpa)
{
	if (gpa >= GPA_A && gpa < GPA_A + SIZE_A)
		return fx->a + (gpa - GPA_A);
	if (gpa >= GPA_B && gpa < GPA_B + SIZE_B)
		return fx->b + (gpa - GPA_B);
	if (gpa >= GPA_RO && gpa < GPA_RO + SIZE_RO)
		return fx->ro + (gpa - GPA_RO);
	abort();
}

static inline uint32_t ld32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t ld64(const uint8_t *p)
{
	return (uint64_t)ld32(p) | (uint64_t)ld32(p + 4) << 32;
}

static inline void st32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void st64(uint8_t *p, uint64_t v)
{
	st32(p, (uint32_t)v);
	st32(p + 4, (uint32_t)(v >> 32));
}

/* Fill the command page at page_gpa (in A, B or RO); status field = 0xAA. */
static inline void put_page(struct fixture *fx, uint64_t page_gpa, uint32_t type, uint32_t count, uint64_t req,
			    uint64_t resp)
{
	uint8_t *p = gp(fx, page_gpa);

	st32(p, type);
	st32(p + 4, count);
	st32(p + 8, 0xAA);
	st32(p + 12, 0);
	st64(p + 16, req);
	st64(p + 24, resp);
}

/* What a guest driver does: address, doorbell, then read STATUS. */
static inline uint32_t ring(struct fixture *fx, uint64_t page_gpa)
{
	companion_mmio_write(fx->c, APPLE_DMA_REG_CMD_GPA_LO, 4, (uint32_t)page_gpa);
	companion_mmio_write(fx->c, APPLE_DMA_REG_CMD_GPA_HI, 4, (uint32_t)(page_gpa >> 32));
	companion_mmio_write(fx->c, APPLE_DMA_REG_DOORBELL, 4, 1);
	return companion_mmio_read(fx->c, APPLE_DMA_REG_STATUS, 4);
}

static inline void put_map_req(struct fixture *fx, uint64_t req_gpa, uint32_t i, uint64_t gpa, uint32_t len)
{
	uint8_t *e = gp(fx, req_gpa) + (size_t)i * APPLE_DMA_MAP_REQ_SIZE;

	st64(e, gpa);
	st32(e + 8, len);
	st32(e + 12, 0);
}

static inline void put_unmap_req(struct fixture *fx, uint64_t req_gpa, uint32_t i, uint64_t id, uint64_t size)
{
	uint8_t *e = gp(fx, req_gpa) + (size_t)i * APPLE_DMA_UNMAP_REQ_SIZE;

	st64(e, id);
	st64(e + 8, size);
}

/* MAP response fields of entry i. */
static inline uint64_t map_id(struct fixture *fx, uint32_t i)
{
	return ld64(gp(fx, RESP_GPA) + (size_t)i * 24);
}
static inline uint64_t map_dma(struct fixture *fx, uint32_t i)
{
	return ld64(gp(fx, RESP_GPA) + (size_t)i * 24 + 8);
}
static inline uint32_t map_dma_len(struct fixture *fx, uint32_t i)
{
	return ld32(gp(fx, RESP_GPA) + (size_t)i * 24 + 16);
}
static inline uint32_t map_status(struct fixture *fx, uint32_t i)
{
	return ld32(gp(fx, RESP_GPA) + (size_t)i * 24 + 20);
}
static inline uint32_t unmap_status(struct fixture *fx, uint32_t i)
{
	return ld32(gp(fx, RESP_GPA) + (size_t)i * 16 + 8);
}

static inline uint32_t page_status(struct fixture *fx, uint64_t page_gpa)
{
	return ld32(gp(fx, page_gpa) + 8);
}

/* Map one range; returns the id (0 when the entry failed). */
static inline uint64_t map1(struct fixture *fx, uint64_t gpa, uint32_t len)
{
	put_map_req(fx, REQ_GPA, 0, gpa, len);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 1, REQ_GPA, RESP_GPA);
	if (ring(fx, PAGE_GPA) != APPLE_DMA_OK)
		return 0;
	return map_id(fx, 0);
}

/* Unmap one id; returns the batch status. */
static inline uint32_t unmap1(struct fixture *fx, uint64_t id, uint64_t size)
{
	put_unmap_req(fx, REQ_GPA, 0, id, size);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_UNMAP, 1, REQ_GPA, RESP_GPA);
	return ring(fx, PAGE_GPA);
}

#endif
