// SPDX-License-Identifier: MIT
/* The DMA region table of a vfio-user client (vuser_dma.h). */
#include "vuser_dma.h"

#include "guest_mem.h"
#include "log.h"
#include "vfu_protocol.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/magic.h>
#include <sys/vfs.h>
#endif

struct window {
	uint64_t gpa;
	uint64_t len;
	void *map_base; /* mmap() result (page-aligned); NULL without fd */
	size_t map_len;
};

struct vuser_dma {
	struct guest_mem *gm;
	struct window *w;
	size_t n, max;
};

struct vuser_dma *vuser_dma_create(size_t max_windows)
{
	struct vuser_dma *d = calloc(1, sizeof(*d));

	if (!d || !(d->gm = guest_mem_create()) || !(d->w = calloc(max_windows, sizeof(*d->w)))) {
		if (d)
			guest_mem_destroy(d->gm);
		free(d);
		return NULL;
	}
	d->max = max_windows;
	return d;
}

static void forget(struct vuser_dma *d, size_t i)
{
	struct window *w = &d->w[i];

	if (guest_mem_remove(d->gm, w->gpa, w->len) < 0)
		log_error("vfio-user: DMA window 0x%llx+0x%llx missing from the guest memory map",
			  (unsigned long long)w->gpa, (unsigned long long)w->len);
	if (w->map_base)
		munmap(w->map_base, w->map_len);
	d->w[i] = d->w[--d->n];
}

void vuser_dma_destroy(struct vuser_dma *d)
{
	if (!d)
		return;
	while (d->n > 0)
		forget(d, d->n - 1);
	guest_mem_destroy(d->gm);
	free(d->w);
	free(d);
}

struct guest_mem *vuser_dma_guest_mem(struct vuser_dma *d)
{
	return d->gm;
}

size_t vuser_dma_count(const struct vuser_dma *d)
{
	return d->n;
}

int vuser_dma_file_ok(int fd, const char **why)
{
	struct stat st;

	*why = "";
	if (fstat(fd, &st) < 0) {
		*why = "cannot fstat it";
		return -EINVAL;
	}
	/* memfd, shm, hugetlbfs and plain files are regular files */
	if (!S_ISREG(st.st_mode)) {
		*why = "not a regular file";
		return -EINVAL;
	}
#ifdef __linux__
	{
		int seals = fcntl(fd, F_GET_SEALS);
		struct statfs fs;

		if (seals >= 0 && (seals & F_SEAL_SHRINK))
			return 0; /* cannot shrink: QEMU's memfd backend */
		if (fstatfs(fd, &fs) < 0) {
			*why = "cannot fstatfs it";
			return -EINVAL;
		}
		if ((unsigned long)fs.f_type == (unsigned long)HUGETLBFS_MAGIC)
			return 0;
		/* A named tmpfs file (memory-backend-file on /dev/shm); an unsealed
		 * memfd is tmpfs too but has no name: that is the one to seal. */
		if ((unsigned long)fs.f_type == (unsigned long)TMPFS_MAGIC && st.st_nlink > 0)
			return 0;
		*why = (unsigned long)fs.f_type == (unsigned long)TMPFS_MAGIC
			       ? "a memfd not sealed against shrinking (F_SEAL_SHRINK; QEMU: memory-backend-memfd "
				 "with seal=on, the default)"
			       : "not on tmpfs or hugetlbfs (a file elsewhere may shrink or block a page fault)";
		return -EINVAL;
	}
#else
	return 0;
#endif
}
/*
 * Map [off, off + len) of fd at an address congruent to the guest-physical
 * address gpa modulo VUSER_DMA_ALIGN.  The DART keeps a buffer's offset
 * within its 16 KiB granule, and a guest checks that the bus address has the
 * same offset as its guest-physical address (docs/apple-dma-v3.md): that
 * holds only when host address and guest-physical address agree below the
 * granule, as they do on a Mac (16 KiB pages) and as QEMU lays out its RAM.
 * NULL with errno set on failure.
 */
#define VUSER_DMA_ALIGN ((uint64_t)2 << 20)

static void *map_congruent(int fd, uint64_t off, size_t len, uint64_t gpa, uint64_t pg, bool writable)
{
	uint64_t want = (gpa & (VUSER_DMA_ALIGN - 1)) & ~(pg - 1);
	size_t span;
	uint8_t *res, *at, *tail;
	void *base;

	if (len > SIZE_MAX - 2 * VUSER_DMA_ALIGN) {
		errno = EINVAL;
		return NULL;
	}
	span = len + 2 * VUSER_DMA_ALIGN;
	res = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (res == MAP_FAILED)
		return NULL;
	at = res + ((VUSER_DMA_ALIGN - ((uintptr_t)res & (VUSER_DMA_ALIGN - 1))) & (VUSER_DMA_ALIGN - 1)) + want;
	base = mmap(at, len, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED | MAP_FIXED, fd, (off_t)off);
	if (base == MAP_FAILED) {
		int err = errno;

		munmap(res, span);
		errno = err;
		return NULL;
	}
	/* Give back the reservation around the mapping. */
	if (at > res)
		munmap(res, (size_t)(at - res));
	tail = at + ((len + pg - 1) & ~(pg - 1));
	if (tail < res + span)
		munmap(tail, (size_t)(res + span - tail));
	return base;
}


int vuser_dma_add(struct vuser_dma *d, uint64_t gpa, uint64_t len, int fd, uint64_t offset, bool writable,
		  void **va)
{
	void *base = NULL;
	size_t map_len = 0;
	int r;

	*va = NULL;
	if (d->n >= d->max)
		return -ENOSPC;
	if (fd >= 0) {
		struct stat st;
		long pg = sysconf(_SC_PAGESIZE);
		uint64_t delta;
		const char *why;

		if (vuser_dma_file_ok(fd, &why) < 0) {
			log_warn("vfio-user: DMA_MAP 0x%llx+0x%llx refused: guest memory is %s",
				 (unsigned long long)gpa, (unsigned long long)len, why);
			return -EINVAL;
		}
		if (fstat(fd, &st) < 0)
			return -errno;
		if (offset + len < offset || offset + len > (uint64_t)st.st_size)
			return -EINVAL;
		if (pg <= 0)
			pg = 4096;
		delta = offset % (uint64_t)pg;
		if (len > SIZE_MAX - delta)
			return -EINVAL;
		map_len = (size_t)(len + delta);
		base = map_congruent(fd, offset - delta, map_len, gpa - delta, (uint64_t)pg, writable);
		if (!base)
			return -errno;
		*va = (uint8_t *)base + delta;
	}
	r = guest_mem_add(d->gm, gpa, len, *va, writable);
	if (r < 0) {
		if (base)
			munmap(base, map_len);
		*va = NULL;
		return r;
	}
	d->w[d->n++] = (struct window){ .gpa = gpa, .len = len, .map_base = base, .map_len = map_len };
	return 0;
}

void vuser_dma_drop(struct vuser_dma *d, uint64_t gpa)
{
	for (size_t i = 0; i < d->n; i++) {
		if (d->w[i].gpa == gpa) {
			forget(d, i);
			return;
		}
	}
}

static bool inside(const struct window *w, uint64_t addr, uint64_t last)
{
	return w->gpa >= addr && w->gpa + (w->len - 1) <= last;
}

bool vuser_dma_cuts(const struct vuser_dma *d, uint64_t addr, uint64_t last)
{
	for (size_t i = 0; i < d->n; i++) {
		const struct window *w = &d->w[i];
		uint64_t wlast = w->gpa + (w->len - 1);

		if (w->gpa <= last && wlast >= addr && !inside(w, addr, last))
			return true;
	}
	return false;
}

void vuser_dma_for_each(const struct vuser_dma *d, uint64_t addr, uint64_t last,
			void (*fn)(void *opaque, uint64_t gpa, uint64_t len), void *opaque)
{
	for (size_t i = 0; i < d->n; i++)
		if (inside(&d->w[i], addr, last))
			fn(opaque, d->w[i].gpa, d->w[i].len);
}

size_t vuser_dma_remove(struct vuser_dma *d, uint64_t addr, uint64_t last)
{
	size_t removed = 0;

	for (size_t i = 0; i < d->n;) {
		if (inside(&d->w[i], addr, last)) {
			forget(d, i);
			removed++;
		} else {
			i++;
		}
	}
	return removed;
}
