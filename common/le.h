/* SPDX-License-Identifier: MIT */
/*
 * Little-endian loads and stores on byte buffers: the apple-dma and NVMe
 * structures in guest memory are little-endian whatever the host is, and
 * byte-wise access needs no alignment.
 */
#ifndef VFA_LE_H
#define VFA_LE_H

#include <stdint.h>

static inline uint16_t le_load16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t le_load32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t le_load64(const uint8_t *p)
{
	return (uint64_t)le_load32(p) | (uint64_t)le_load32(p + 4) << 32;
}

static inline void le_store16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void le_store32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void le_store64(uint8_t *p, uint64_t v)
{
	le_store32(p, (uint32_t)v);
	le_store32(p + 4, (uint32_t)(v >> 32));
}

/* width (1..8) bytes, for register accesses whose size is a run-time value. */
static inline uint64_t le_load(const uint8_t *p, unsigned width)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < width; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static inline void le_store(uint8_t *p, uint64_t v, unsigned width)
{
	for (unsigned i = 0; i < width; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

#endif
