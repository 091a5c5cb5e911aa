/* SPDX-License-Identifier: MIT */
/*
 * A model of Apple's DART (the IOMMU in front of every PCIe device of an
 * Apple Silicon Mac), strict enough to catch guest DMA bugs:
 *
 *  - the model picks bus addresses, never the caller: a per-device random
 *    base (seedable), a 16 KiB granule; a registration of [va, va + size)
 *    takes the granules covering it and the bus address keeps va's offset
 *    inside its granule;
 *  - translation is byte-exact: an access outside a registered
 *    [bus, bus + size) faults, even inside a mapped granule (stricter than
 *    the hardware);
 *  - limits on registered bytes (default 1.5 GiB) and live mappings
 *    (default 65,536) refuse further registrations with -ENOSPC;
 *  - identity mode (DART off): bus address = key, still bounds-checked; no
 *    byte limit unless configured (all guest RAM gets registered).
 *
 * Cost: register, unregister and translate are O(log n) in the number of
 * live mappings, translate O(1) when it hits the registration the previous
 * lookup found (device DMA is mostly local) (glibc's tsearch family: red-black trees, one keyed by the
 * caller's key, one by bus range).  Choosing a bus range is next-fit from a
 * cursor over a window at least 16x larger than the most the limits allow to
 * be live, so it is one O(log n) probe except, rarely, after the cursor wraps
 * and steps over long-lived mappings (each step O(log n)).
 *
 * Single-threaded, like the rest of the broker.
 */
#ifndef VFA_SIM_DART_H
#define VFA_SIM_DART_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "host_device.h"

#define SIM_DART_GRANULE (16u * 1024u)
#define SIM_DART_DEFAULT_MAX_BYTES (1536ull * 1024 * 1024)
#define SIM_DART_DEFAULT_MAX_MAPPINGS 65536u
/* Largest max_bytes a configuration may ask for (4 TiB). */
#define SIM_DART_MAX_MAX_BYTES (1ull << 42)

struct sim_dart_config {
	uint64_t max_bytes;    /* 0: SIM_DART_DEFAULT_MAX_BYTES (identity: SIM_DART_MAX_MAX_BYTES) */
	uint32_t max_mappings; /* 0: SIM_DART_DEFAULT_MAX_MAPPINGS */
	bool identity;         /* DART off: bus address = key */
	bool seeded;           /* use seed for the bus base, else getrandom() */
	uint64_t seed;
};

struct sim_dart;

/* Returns NULL with a reason in err on a bad configuration or no memory. */
struct sim_dart *sim_dart_create(const struct sim_dart_config *cfg, char *err, size_t errlen);
void sim_dart_destroy(struct sim_dart *d);

/*
 * Make [va, va + size) reachable by the device.  Returns 0 and the bus range
 * (*bus_len == size), or -EINVAL (size 0, NULL va, wrap-around), -EEXIST
 * (live key; in identity mode also an overlapping bus range), -ENOSPC
 * (limits or bus space), -ENOMEM.  The reason is in sim_dart_error().
 */
int sim_dart_map(struct sim_dart *d, uint64_t key, void *va, uint64_t size, uint64_t *bus, uint64_t *bus_len);
/* -ENOENT for an unknown key. */
int sim_dart_unmap(struct sim_dart *d, uint64_t key);
/* Unregister everything (device reset does NOT do this: mappings are the host's). */
void sim_dart_unmap_all(struct sim_dart *d);

/*
 * The host address of [bus, bus + len) when it lies inside ONE registration,
 * else NULL: a fault, counted and logged with the address.  device_writes
 * says which way the device accesses memory (for the log).
 */
void *sim_dart_translate(struct sim_dart *d, uint64_t bus, uint64_t len, bool device_writes);

/*
 * Device DMA that may span several registrations: copies through the
 * translation, split at registration boundaries.  The whole range is checked
 * before any byte moves, so a fault copies nothing.  0 or -EFAULT (counted
 * as one fault).
 */
int sim_dart_dma_read(struct sim_dart *d, uint64_t bus, void *dst, uint64_t len);
int sim_dart_dma_write(struct sim_dart *d, uint64_t bus, const void *src, uint64_t len);
/*
 * Whether device DMA to [bus, bus + len) would succeed, for a device that
 * checks a whole command before moving a byte: 0, or -EFAULT (counted and
 * logged as one fault, like a faulting dma_read/write).
 */
int sim_dart_dma_check(struct sim_dart *d, uint64_t bus, uint64_t len, bool device_writes);

void sim_dart_limits(const struct sim_dart *d, struct hd_dma_limits *out);
void sim_dart_stats(const struct sim_dart *d, struct hd_dma_stats *out);
bool sim_dart_identity(const struct sim_dart *d);
/* First bus address the model hands out (apple mode); 0 in identity mode. */
uint64_t sim_dart_bus_base(const struct sim_dart *d);
/* The reason of the last failure. */
const char *sim_dart_error(const struct sim_dart *d);

#endif
