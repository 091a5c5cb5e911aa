// SPDX-License-Identifier: MIT
#include "fake_hd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Keys live in an array searched linearly from the end: tests hold at most a
 * few thousand, and the benchmark unmaps in the order it mapped. */
static struct fake_reg *find(struct fake_hd *f, uint64_t key)
{
	for (size_t i = f->nregs; i-- > 0;)
		if (f->regs[i].key == key)
			return &f->regs[i];
	return NULL;
}

const struct fake_reg *fake_hd_find(const struct fake_hd *f, uint64_t key)
{
	return find((struct fake_hd *)f, key);
}

static struct fake_hd *fake_of(struct host_device *hd)
{
	return (struct fake_hd *)hd;
}

static int fake_dma_register(struct host_device *hd, uint64_t key, void *host_addr, uint64_t size,
			     uint64_t *bus_addr, uint64_t *bus_len)
{
	struct fake_hd *f = fake_of(hd);
	uint64_t granule = hd->limits.granule ? hd->limits.granule : 4096;
	uint64_t offset = (uintptr_t)host_addr & (granule - 1);
	uint64_t span = (offset + size + granule - 1) / granule * granule;
	struct fake_reg *r;

	f->register_calls++;
	if (f->fail_register_call && f->register_calls == f->fail_register_call) {
		f->register_failures++;
		return hd_fail(hd, -EIO, "fake: register call %llu refused by the test",
			       (unsigned long long)f->register_calls);
	}
	if (size == 0 || !host_addr) {
		f->register_failures++;
		return hd_fail(hd, -EINVAL, "fake: empty registration");
	}
	/* keys above every key seen cannot be live: skips the linear search
	 * for the companion's increasing ids */
	if (key <= f->max_key && find(f, key)) {
		f->register_failures++;
		return hd_fail(hd, -EEXIST, "fake: key %#llx is live", (unsigned long long)key);
	}
	if ((hd->limits.max_mappings && f->nregs >= hd->limits.max_mappings) ||
	    (hd->limits.max_bytes && f->live_bytes + size > hd->limits.max_bytes)) {
		f->register_failures++;
		return hd_fail(hd, -ENOSPC, "fake: DART full (%zu mappings, %llu bytes)", f->nregs,
			       (unsigned long long)f->live_bytes);
	}
	if (f->nregs == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 64;
		struct fake_reg *regs = realloc(f->regs, cap * sizeof(*regs));

		if (!regs)
			return hd_fail(hd, -ENOMEM, "fake: out of memory");
		f->regs = regs;
		f->cap = cap;
	}
	if (key > f->max_key)
		f->max_key = key;
	r = &f->regs[f->nregs++];
	r->key = key;
	r->host_addr = host_addr;
	r->size = size;
	r->bus = f->next_bus + offset;
	f->next_bus += span + granule; /* a guard page between mappings */
	f->live_bytes += size;
	f->registers++;
	*bus_addr = r->bus;
	*bus_len = f->short_bus_len ? size / 2 : size;
	return 0;
}

static int fake_dma_unregister(struct host_device *hd, uint64_t key)
{
	struct fake_hd *f = fake_of(hd);
	struct fake_reg *r = find(f, key);

	if (f->fail_unregister) {
		f->unregister_failures++;
		return hd_fail(hd, -EIO, "fake: unregister refused by the test");
	}
	if (!r) {
		f->unregister_failures++;
		return hd_fail(hd, -ENOENT, "fake: unknown key %#llx", (unsigned long long)key);
	}
	f->live_bytes -= r->size;
	*r = f->regs[--f->nregs];
	f->unregisters++;
	return 0;
}

static int fake_reset(struct host_device *hd)
{
	(void)hd;
	return 0;
}

static void fake_destroy_op(struct host_device *hd)
{
	fake_hd_destroy(fake_of(hd));
}

static const struct host_device_ops fake_ops = {
	.dma_register = fake_dma_register,
	.dma_unregister = fake_dma_unregister,
	.reset = fake_reset,
	.destroy = fake_destroy_op,
};

struct fake_hd *fake_hd_create(uint64_t max_bytes, uint32_t max_mappings, uint32_t granule, bool identity)
{
	struct fake_hd *f = calloc(1, sizeof(*f));

	if (!f)
		return NULL;
	f->hd.ops = &fake_ops;
	f->hd.limits.max_bytes = max_bytes;
	f->hd.limits.max_mappings = max_mappings;
	f->hd.limits.granule = granule;
	f->hd.identity_dma = identity;
	f->next_bus = FAKE_BUS_BASE;
	return f;
}

void fake_hd_destroy(struct fake_hd *f)
{
	if (!f)
		return;
	free(f->regs);
	free(f);
}
