/* SPDX-License-Identifier: MIT */
/*
 * The DMA region table of one vfio-user client: the windows DMA_MAP
 * created, each mmap()ed from the client's file and recorded in the guest
 * memory map (guestmem/).  It knows files and address ranges, not messages
 * and not the device: the server (vfu_server.c) decodes DMA_MAP/UNMAP and
 * tells the device, in the order docs/vfio-user.md gives.
 *
 * Which files are guest RAM (issue 11, item 2): memory that can neither
 * shrink under the mapping nor block a page fault.  Accepted: a memfd
 * sealed with F_SEAL_SHRINK (QEMU's memory-backend-memfd, seal=on by
 * default), a named file on tmpfs (/dev/shm: memory-backend-file) or any
 * file on hugetlbfs.  Refused: an unsealed memfd, files on other file
 * systems (a FUSE file served by the VMM could hang the loop on a fault).
 * A tmpfs or hugetlbfs file can still be truncated by its owner: every
 * access to guest RAM goes through common/memguard.h, so that fails the
 * access, not the broker.  Elsewhere than Linux (macOS shared memory has no
 * seals nor fstatfs magic) any regular file is taken, guarded the same way.
 */
#ifndef VFA_VUSER_DMA_H
#define VFA_VUSER_DMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct guest_mem;
struct vuser_dma;

struct vuser_dma *vuser_dma_create(size_t max_windows);
/* Unmaps every window (no callbacks: the server told the device first). */
void vuser_dma_destroy(struct vuser_dma *d);
struct guest_mem *vuser_dma_guest_mem(struct vuser_dma *d);
size_t vuser_dma_count(const struct vuser_dma *d);

/*
 * Is fd acceptable as guest RAM (see above)?  0, or -EINVAL with the
 * reason in why (static text).
 */
int vuser_dma_file_ok(int fd, const char **why);

/*
 * Add [gpa, gpa + len): from fd at offset (fd < 0: no memory, known but
 * unreachable), read-only unless writable.  Checked: the file (above) and
 * its size, overlap (-EEXIST), the table's room (-ENOSPC).  *va is the
 * window's address in this process (NULL without fd).  0 or -errno.
 */
int vuser_dma_add(struct vuser_dma *d, uint64_t gpa, uint64_t len, int fd, uint64_t offset, bool writable,
		  void **va);
/* Remove the window at exactly gpa (undo of an add the device refused). */
void vuser_dma_drop(struct vuser_dma *d, uint64_t gpa);

/* Does [addr, last] cut a window in two?  (DMA_UNMAP refuses that.) */
bool vuser_dma_cuts(const struct vuser_dma *d, uint64_t addr, uint64_t last);
/* Call fn for every window inside [addr, last] (all: 0, UINT64_MAX). */
void vuser_dma_for_each(const struct vuser_dma *d, uint64_t addr, uint64_t last,
			void (*fn)(void *opaque, uint64_t gpa, uint64_t len), void *opaque);
/* Remove (and munmap) every window inside [addr, last]; returns how many. */
size_t vuser_dma_remove(struct vuser_dma *d, uint64_t addr, uint64_t last);

#endif
