// SPDX-License-Identifier: GPL-2.0
/* apple_dma: the bounce pool. */

#include "apple_dma.h"

/* ---- bounce pool -------------------------------------------------------- */

bool ad_is_bounce(struct apple_dma *ad, u64 bus)
{
	u64 base = READ_ONCE(ad->bounce_bus);

	return READ_ONCE(ad->bounce_pages) && bus >= base && bus - base < ad->bounce_len;
}

void *ad_bounce_va(struct apple_dma *ad, u32 head)
{
	return ad->bounce_va + (size_t)head * PAGE_SIZE +
	       offset_in_page(ad->bounce_slots[head].orig);
}

/* Copy part of a bounced mapping between the pool and the original buffer. */
static void ad_bounce_copy(struct apple_dma *ad, u32 head, u64 off, u64 len, bool to_pool)
{
	void *pool = ad_bounce_va(ad, head) + off;
	void *orig = phys_to_virt(ad->bounce_slots[head].orig + off);

	if (to_pool)
		memcpy(pool, orig, len);
	else
		memcpy(orig, pool, len);
}

/* Bounce @r through the pool, if its bus range fits @limit.  Any context. */
int ad_bounce_map(struct apple_dma *ad, struct ad_range *r, u64 limit)
{
	u64 off = offset_in_page(r->gpa);
	unsigned long npages, idx, i, flags;
	int ret = -ENOMEM;

	if (!ad->bounce_page || r->len > ad->bounce_len ||
	    !pfn_valid(PHYS_PFN(r->gpa)) || !pfn_valid(PHYS_PFN(r->gpa + r->len - 1)))
		return -ENOMEM;
	npages = DIV_ROUND_UP(off + r->len, PAGE_SIZE);
	spin_lock_irqsave(&ad->bounce_lock, flags);
	if (!ad->bounce_pages || ad->pool_lost ||
	    ad->bounce_bus + ad->bounce_len - 1 > limit)
		goto out;
	idx = bitmap_find_next_zero_area(ad->bounce_map, ad->bounce_pages, 0, npages, 0);
	if (idx >= ad->bounce_pages)
		goto out;
	bitmap_set(ad->bounce_map, idx, npages);
	for (i = 0; i < npages; i++)
		ad->bounce_slots[idx + i].head = idx;
	ad->bounce_slots[idx].orig = r->gpa;
	ad->bounce_slots[idx].len = r->len;
	ad->bounce_slots[idx].npages = npages;
	ad->bounce_slots[idx].dir = r->dir;
	/* Copy in every direction: a partial device write must not leak old pool data. */
	ad_bounce_copy(ad, idx, 0, r->len, true);
	r->bus = ad->bounce_bus + idx * PAGE_SIZE + off;
	r->bounced = true;
	ad_add(&ad->pstats->bounce_maps, 1);
	ad_add(&ad->pstats->bounce_bytes, r->len);
	ret = 0;
out:
	spin_unlock_irqrestore(&ad->bounce_lock, flags);
	return ret;
}

/* The head slot of a live bounced mapping holding @bus, or -1.  bounce_lock held. */
long ad_bounce_head(struct apple_dma *ad, u64 bus, u64 *off)
{
	u32 page;
	u32 head;
	u64 base;

	if (!ad_is_bounce(ad, bus))
		return -1;
	page = (bus - ad->bounce_bus) >> PAGE_SHIFT;
	if (!test_bit(page, ad->bounce_map))
		return -1;
	head = ad->bounce_slots[page].head;
	if (head >= ad->bounce_pages || !ad->bounce_slots[head].len)
		return -1;
	base = ad->bounce_bus + (u64)head * PAGE_SIZE +
	       offset_in_page(ad->bounce_slots[head].orig);
	if (bus < base || bus - base >= ad->bounce_slots[head].len)
		return -1;
	*off = bus - base;
	return head;
}

void ad_bounce_unmap(struct apple_dma *ad, u64 bus, bool copy_back)
{
	struct ad_bounce_slot *s;
	unsigned long flags;
	u64 off;
	long head;

	spin_lock_irqsave(&ad->bounce_lock, flags);
	head = ad_bounce_head(ad, bus, &off);
	if (head < 0 || off) {
		spin_unlock_irqrestore(&ad->bounce_lock, flags);
		ad_add(&ad->pstats->unknown_unmaps, 1);
		dev_warn_ratelimited(ad->dev, "unmap of unknown bounce address %#llx\n", bus);
		return;
	}
	s = &ad->bounce_slots[head];
	if (copy_back && (s->dir == DMA_FROM_DEVICE || s->dir == DMA_BIDIRECTIONAL))
		ad_bounce_copy(ad, head, 0, s->len, false);
	/* Strict: the pool (always reachable) holds only buffers mapped now. */
	if (ad->strict)
		memset(ad_bounce_va(ad, head), 0, s->len);
	bitmap_clear(ad->bounce_map, head, s->npages);
	s->len = 0;
	spin_unlock_irqrestore(&ad->bounce_lock, flags);
}

void ad_bounce_sync(struct apple_dma *ad, u64 bus, u64 len, enum dma_data_direction dir,
		    bool for_cpu)
{
	unsigned long flags;
	u64 off;
	long head;

	spin_lock_irqsave(&ad->bounce_lock, flags);
	head = ad_bounce_head(ad, bus, &off);
	if (head >= 0) {
		len = min_t(u64, len, ad->bounce_slots[head].len - off);
		if (for_cpu && (dir == DMA_FROM_DEVICE || dir == DMA_BIDIRECTIONAL))
			ad_bounce_copy(ad, head, off, len, false);
		if (!for_cpu && (dir == DMA_TO_DEVICE || dir == DMA_BIDIRECTIONAL))
			ad_bounce_copy(ad, head, off, len, true);
	}
	spin_unlock_irqrestore(&ad->bounce_lock, flags);
}
