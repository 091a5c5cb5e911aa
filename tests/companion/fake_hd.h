/* SPDX-License-Identifier: MIT */
/*
 * A small fake host device for the companion's tests, fuzzer and benchmark:
 * only the DMA verbs do anything.  It keeps every registration so tests can
 * compare them with what the companion believes, enforces configurable DART
 * limits, picks bus addresses itself, and can be told to fail.
 */
#ifndef VFA_FAKE_HD_H
#define VFA_FAKE_HD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "host_device.h"

#define FAKE_BUS_BASE 0x7f0000000ull

struct fake_reg {
	uint64_t key;
	void *host_addr;
	uint64_t size;
	uint64_t bus;
};

struct fake_hd {
	struct host_device hd; /* first: tests pass &f->hd */
	struct fake_reg *regs; /* live registrations, unordered */
	size_t nregs;
	size_t cap;
	uint64_t live_bytes;
	uint64_t next_bus;
	uint64_t max_key; /* largest key ever registered */
	/* counters */
	uint64_t registers;
	uint64_t unregisters;
	uint64_t register_failures;
	uint64_t unregister_failures;
	/* fault injection */
	uint64_t fail_register_call; /* 1-based call number to refuse; 0: none */
	uint64_t register_calls;
	bool fail_unregister;        /* every unregister fails with -EIO */
	bool short_bus_len;          /* return half the length */
};

/* limits: max_bytes 0 / max_mappings 0 mean unlimited. */
struct fake_hd *fake_hd_create(uint64_t max_bytes, uint32_t max_mappings, uint32_t granule, bool identity);
void fake_hd_destroy(struct fake_hd *f);
/* The live registration with this key, or NULL. */
const struct fake_reg *fake_hd_find(const struct fake_hd *f, uint64_t key);

#endif
