/* SPDX-License-Identifier: MIT */
/*
 * The guest memory map: which guest-physical ranges the VMM has shared with
 * the broker, and where each one is mapped in the broker.  Every access to
 * guest RAM by a device model goes through guest_mem_translate(), so nothing
 * outside what the VMM shared is ever read or written.
 *
 * Ranges never overlap.  Lookup is a binary search over ranges sorted by
 * guest-physical address (O(log n)).  Not thread-safe: the broker's event
 * loop owns it.
 *
 * A range with va == NULL is known but unreachable (a vfio-user DMA_MAP
 * without a file descriptor: ROMs, peer BARs): it occupies its addresses but
 * translate() never returns it.
 *
 * An access that straddles two ranges is refused even when the ranges are
 * adjacent in guest-physical space: they are separate host mappings, so no
 * single host pointer covers them (docs/apple-dma-v3.md).
 */
#ifndef VFA_GUEST_MEM_H
#define VFA_GUEST_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct guest_mem;

struct guest_mem_range {
	uint64_t gpa;
	uint64_t len;
	void *va; /* NULL: known but unreachable */
	bool writable;
};

/* NULL on allocation failure. */
struct guest_mem *guest_mem_create(void);
/* Forgets every range; does NOT munmap (the owner of the mapping does). */
void guest_mem_destroy(struct guest_mem *gm);

/*
 * Record [gpa, gpa + len) -> va.  -EINVAL for len 0 or gpa + len beyond
 * 2^64; -EEXIST when it overlaps a recorded range; -ENOMEM.
 */
int guest_mem_add(struct guest_mem *gm, uint64_t gpa, uint64_t len, void *va, bool writable);
/* Forget exactly a range previously added; -ENOENT otherwise. */
int guest_mem_remove(struct guest_mem *gm, uint64_t gpa, uint64_t len);

/*
 * The broker address of gpa iff [gpa, gpa + len) lies inside ONE reachable
 * range (writable if write is true); NULL otherwise, including len 0 and
 * gpa + len beyond 2^64.
 */
void *guest_mem_translate(const struct guest_mem *gm, uint64_t gpa, uint64_t len, bool write);

/* The recorded range containing gpa (reachable or not): 0, or -ENOENT. */
int guest_mem_find(const struct guest_mem *gm, uint64_t gpa, struct guest_mem_range *out);

/* Number of recorded ranges. */
size_t guest_mem_count(const struct guest_mem *gm);

/*
 * Call cb once per recorded range, in ascending gpa order.  cb must not add
 * or remove ranges.
 */
typedef void (*guest_mem_cb)(uint64_t gpa, uint64_t len, void *va, bool writable, void *opaque);
void guest_mem_for_each(const struct guest_mem *gm, guest_mem_cb cb, void *opaque);

#endif
