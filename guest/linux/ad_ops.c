// SPDX-License-Identifier: GPL-2.0
/* apple_dma: the DMA operations. */

#include "apple_dma.h"

/* ---- the DMA operations -------------------------------------------------- */

/*
 * Must every map fail at once?  After remove, or once the companion is
 * gone; the PCI core's "disconnected" mark (a surprise removal it saw) is
 * taken up here without waiting for a doorbell to read all-ones.
 */
static bool ad_refuse(struct apple_dma *ad)
{
	unsigned long flags;

	if (READ_ONCE(ad->dead) || READ_ONCE(ad->gone))
		return true;
	if (!ad->pdev || READ_ONCE(ad->pdev->error_state) != pci_channel_io_perm_failure)
		return false;
	spin_lock_irqsave(&ad->lock, flags);
	if (!ad->dead)
		ad_mark_gone(ad, "the PCI core found it disconnected");
	spin_unlock_irqrestore(&ad->lock, flags);
	return true;
}

/* Strict mode bounces a buffer that does not cover whole granules. */
static bool ad_sub_granule(struct apple_dma *ad, u64 gpa, u64 len)
{
	return ad->strict && ((gpa | len) & (ad->granule - 1));
}

dma_addr_t ad_map_one(struct device *dev, phys_addr_t phys, size_t size,
		      enum dma_data_direction dir, bool may_bounce, u8 kind, u64 limit)
{
	struct apple_dma *ad = ad_from_dev(dev);
	struct ad_range r = { .gpa = phys, .len = size, .dir = dir, .kind = kind };
	u8 level = kind == AD_KIND_SHARED ? AD_LVL_WINDOW : AD_LVL_EXACT;
	struct ad_window *w;
	unsigned long flags;
	dma_addr_t bus;
	int ret;

	ad_add(&ad->pstats->map_calls, 1);
	if (!size || phys + size - 1 < phys || ad_refuse(ad))
		goto fail;
	if (kind == AD_KIND_SHARED && ad_sub_granule(ad, phys, size)) {
		if (!may_bounce)
			goto fail;
		if (!ad_bounce_map(ad, &r, limit))
			return r.bus;
		level = AD_LVL_BOUNCE;	/* the pool may need mapping again */
	} else if (kind == AD_KIND_SHARED && !READ_ONCE(ad->bus_alias)) {
		w = ad_hit(ad, phys, size);
		if (w) {
			bus = w->bus_start + (phys - w->gpa_start);
			/* Gone meanwhile: its address is dead. */
			if (bus + size - 1 <= limit && !READ_ONCE(ad->gone)) {
				ad_add(&ad->pstats->cache_hits, 1);
				return bus;
			}
			ad_win_put(ad, w);	/* a mask miss: the slow path evicts it */
		}
	}
	spin_lock_irqsave(&ad->lock, flags);
	ret = ad->dead ? -ENODEV : ad_resolve(ad, &r, 1, level, may_bounce, limit);
	spin_unlock_irqrestore(&ad->lock, flags);
	if (!ret)
		return r.bus;
fail:
	ad_add(&ad->pstats->failures, 1);
	return DMA_MAPPING_ERROR;
}

static void ad_unmap_one(struct device *dev, dma_addr_t bus, size_t size, bool copy_back)
{
	ad_unmap_bus(ad_from_dev(dev), bus, size, copy_back);
}

/* Peer-to-peer (MMIO) ranges: the host registers only guest RAM, so fail at once. */
static dma_addr_t ad_map_mmio(struct device *dev)
{
	struct apple_dma *ad = ad_from_dev(dev);

	ad_add(&ad->pstats->map_calls, 1);
	ad_add(&ad->pstats->failures, 1);
	return DMA_MAPPING_ERROR;
}

#ifdef AD_HAVE_MAP_PHYS	/* Kbuild compile probe */
static dma_addr_t ad_map_phys(struct device *dev, phys_addr_t phys, size_t size,
			      enum dma_data_direction dir, unsigned long attrs)
{
	if (attrs & DMA_ATTR_MMIO)
		return ad_map_mmio(dev);
	return ad_map_one(dev, phys, size, dir, true, AD_KIND_SHARED,
			  ad_mask_limit(dev, false));
}

static void ad_unmap_phys(struct device *dev, dma_addr_t bus, size_t size,
			  enum dma_data_direction dir, unsigned long attrs)
{
	ad_unmap_one(dev, bus, size, !(attrs & (DMA_ATTR_MMIO | DMA_ATTR_SKIP_CPU_SYNC)));
}
#else
static dma_addr_t ad_map_page(struct device *dev, struct page *page, unsigned long offset,
			      size_t size, enum dma_data_direction dir, unsigned long attrs)
{
	return ad_map_one(dev, page_to_phys(page) + offset, size, dir, true, AD_KIND_SHARED,
			  ad_mask_limit(dev, false));
}

static void ad_unmap_page(struct device *dev, dma_addr_t bus, size_t size,
			  enum dma_data_direction dir, unsigned long attrs)
{
	ad_unmap_one(dev, bus, size, !(attrs & DMA_ATTR_SKIP_CPU_SYNC));
}

static dma_addr_t ad_map_resource(struct device *dev, phys_addr_t phys, size_t size,
				  enum dma_data_direction dir, unsigned long attrs)
{
	return ad_map_mmio(dev);
}

static void ad_unmap_resource(struct device *dev, dma_addr_t bus, size_t size,
			      enum dma_data_direction dir, unsigned long attrs)
{
	ad_unmap_one(dev, bus, size, false);
}
#endif

void ad_unmap_sg(struct device *dev, struct scatterlist *sgl, int nents,
		 enum dma_data_direction dir, unsigned long attrs)
{
	struct apple_dma *ad = ad_from_dev(dev);
	struct scatterlist *sg;
	int i;

	/* SKIP_CPU_SYNC: the driver synced already; a copy back could undo its writes. */
	for_each_sg(sgl, sg, nents, i)
		ad_unmap_bus(ad, sg_dma_address(sg), sg_dma_len(sg),
			     !(attrs & DMA_ATTR_SKIP_CPU_SYNC));
}

/*
 * Every entry gets its own segment.  Hits take no lock; the misses (up to
 * batch_max at a time) share a doorbell under the lock.
 */
int ad_map_sg(struct device *dev, struct scatterlist *sgl, int nents, enum dma_data_direction dir,
	      unsigned long attrs)
{
	struct apple_dma *ad = ad_from_dev(dev);
	u64 limit = ad_mask_limit(dev, false);
	struct scatterlist *sg;
	struct ad_window *w;
	unsigned long flags;
	int i, left = nents, ret = 0;
	u32 n, j;

	ad_add(&ad->pstats->sg_calls, 1);
	if (nents <= 0)
		return -EINVAL;
	if (ad_refuse(ad)) {
		ret = -EIO;
		goto fail;
	}
	for_each_sg(sgl, sg, nents, i) {
		sg->dma_address = DMA_MAPPING_ERROR;
		sg_dma_len(sg) = sg->length;
		if (!sg->length || sg_phys(sg) + sg->length - 1 < sg_phys(sg)) {
			ret = -EINVAL;
			goto fail;
		}
	}
	for_each_sg(sgl, sg, nents, i) {
		struct ad_range r = { .gpa = sg_phys(sg), .len = sg->length, .dir = dir };

		if (ad_sub_granule(ad, r.gpa, r.len)) {
			if (!ad_bounce_map(ad, &r, limit))
				sg->dma_address = r.bus;
		} else if (!READ_ONCE(ad->bus_alias)) {
			w = ad_hit(ad, r.gpa, r.len);
			if (w && w->bus_start + (r.gpa - w->gpa_start) + r.len - 1 <= limit) {
				sg->dma_address = w->bus_start + (r.gpa - w->gpa_start);
				ad_add(&ad->pstats->cache_hits, 1);
			} else if (w) {
				ad_win_put(ad, w);
			}
		}
		if (sg->dma_address == DMA_MAPPING_ERROR)
			left--;
	}
	left = nents - left;	/* misses */
	sg = sgl;
	i = 0;
	while (left > 0) {
		spin_lock_irqsave(&ad->lock, flags);
		for (n = 0; i < nents && n < ad->batch_max; i++, sg = sg_next(sg)) {
			if (sg->dma_address != DMA_MAPPING_ERROR)
				continue;
			ad->ranges[n] = (struct ad_range){
				.gpa = sg_phys(sg), .len = sg->length, .dir = dir,
				.kind = AD_KIND_SHARED, .sg = sg,
				.first = ad_sub_granule(ad, sg_phys(sg), sg->length) ?
					 AD_LVL_BOUNCE : AD_LVL_WINDOW,
			};
			n++;
		}
		ret = ad->dead ? -EIO : ad_resolve(ad, ad->ranges, n, AD_LVL_WINDOW, true, limit);
		if (!ret)
			for (j = 0; j < n; j++)
				ad->ranges[j].sg->dma_address = ad->ranges[j].bus;
		spin_unlock_irqrestore(&ad->lock, flags);
		if (ret)
			goto fail;
		left -= n;
	}
	if (READ_ONCE(ad->gone)) {
		ret = -EIO;	/* gone after the hits above: their addresses are dead */
		goto fail;
	}
	ad_add(&ad->pstats->map_calls, nents);
	return nents;

fail:
	/* Nothing stays mapped: the caller gets an error and no list. */
	for_each_sg(sgl, sg, nents, i)
		if (sg->dma_address != DMA_MAPPING_ERROR)
			ad_unmap_bus(ad, sg->dma_address, sg->length, false);
	ad_add(&ad->pstats->failures, 1);
	return ret == -EIO || ret == -EINVAL ? ret : -ENOMEM;
}

static void ad_sync_one(struct device *dev, dma_addr_t bus, size_t size,
			enum dma_data_direction dir, bool for_cpu)
{
	struct apple_dma *ad = ad_from_dev(dev);

	/* Only bounced mappings need work: the managed device is cache-coherent. */
	if (ad_is_bounce(ad, bus))
		ad_bounce_sync(ad, bus, size, dir, for_cpu);
}

static void ad_sync_single_for_cpu(struct device *dev, dma_addr_t bus, size_t size,
				   enum dma_data_direction dir)
{
	ad_sync_one(dev, bus, size, dir, true);
}

static void ad_sync_single_for_device(struct device *dev, dma_addr_t bus, size_t size,
				      enum dma_data_direction dir)
{
	ad_sync_one(dev, bus, size, dir, false);
}

static void ad_sync_sg_for_cpu(struct device *dev, struct scatterlist *sgl, int nents,
			       enum dma_data_direction dir)
{
	struct scatterlist *sg;
	int i;

	for_each_sg(sgl, sg, nents, i)
		ad_sync_one(dev, sg_dma_address(sg), sg_dma_len(sg), dir, true);
}

static void ad_sync_sg_for_device(struct device *dev, struct scatterlist *sgl, int nents,
				  enum dma_data_direction dir)
{
	struct scatterlist *sg;
	int i;

	for_each_sg(sgl, sg, nents, i)
		ad_sync_one(dev, sg_dma_address(sg), sg_dma_len(sg), dir, false);
}

/*
 * Coherent memory: zeroed whole granules (no neighbour shares the mapping),
 * mapped on their own, never bounced, unmapped when freed.
 */
static struct page *ad_alloc_mapped(struct device *dev, size_t size, dma_addr_t *handle,
				    gfp_t gfp)
{
	struct apple_dma *ad = ad_from_dev(dev);
	u64 len = ALIGN((u64)size, ad->granule);
	unsigned int order = get_order(len);
	struct page *page;
	dma_addr_t bus;

	if (!size || order > AD_MAX_ORDER)
		return NULL;
	page = alloc_pages(gfp | __GFP_ZERO, order);
	if (!page)
		return NULL;
	bus = ad_map_one(dev, page_to_phys(page), len, DMA_BIDIRECTIONAL, false,
			 AD_KIND_PRIVATE, ad_mask_limit(dev, true));
	if (bus == DMA_MAPPING_ERROR) {
		__free_pages(page, order);
		return NULL;
	}
	*handle = bus;
	return page;
}

/*
 * Unmap a coherent allocation before its pages go back to the allocator.
 * If the host refuses, the pages stay out of the allocator (and the
 * mapping on the stuck list) until an UNMAP succeeds.
 */
static void ad_free_mapped(struct device *dev, size_t size, struct page *page, dma_addr_t bus)
{
	struct apple_dma *ad = ad_from_dev(dev);
	u64 len = ALIGN((u64)size, ad->granule);
	unsigned int order = get_order(len);
	struct ad_window *found;
	unsigned long flags;
	LIST_HEAD(one);

	ad_add(&ad->pstats->unmap_calls, 1);
	spin_lock_irqsave(&ad->lock, flags);
	found = ad_find_private(ad, bus, len, page_to_phys(page));
	if (found && !ad->dead) {
		atomic_set(&found->refs, AD_REFS_DEAD);
		found->state = AD_WIN_DYING;
		ad_win_unlink_seq(ad, found);
		list_move_tail(&found->link, &one);
		found->free_page = page;
		found->free_order = order;
		ad->stats.private_unmaps++;
		ad_release_list(ad, &one);
		page = NULL;
	}
	spin_unlock_irqrestore(&ad->lock, flags);
	/* Not found: lost with a reset or released at remove; the host holds nothing. */
	if (page)
		__free_pages(page, order);
}

void *ad_alloc(struct device *dev, size_t size, dma_addr_t *handle, gfp_t gfp, unsigned long attrs)
{
	struct page *page = ad_alloc_mapped(dev, size, handle, gfp);

	return page ? page_address(page) : NULL;
}

void ad_free(struct device *dev, size_t size, void *vaddr, dma_addr_t bus, unsigned long attrs)
{
	ad_free_mapped(dev, size, virt_to_page(vaddr), bus);
}

static struct page *ad_alloc_pages(struct device *dev, size_t size, dma_addr_t *handle,
				   enum dma_data_direction dir, gfp_t gfp)
{
	return ad_alloc_mapped(dev, size, handle, gfp);
}

static void ad_free_pages(struct device *dev, size_t size, struct page *page, dma_addr_t bus,
			  enum dma_data_direction dir)
{
	ad_free_mapped(dev, size, page, bus);
}

/* Coherent buffers are plain pages: map them as they are (the device is coherent). */
static int ad_mmap(struct device *dev, struct vm_area_struct *vma, void *cpu_addr,
		   dma_addr_t bus, size_t size, unsigned long attrs)
{
	unsigned long count = PAGE_ALIGN(size) >> PAGE_SHIFT;
	unsigned long user_count = vma_pages(vma);
	unsigned long off = vma->vm_pgoff;

	if (off >= count || user_count > count - off)
		return -ENXIO;
	return remap_pfn_range(vma, vma->vm_start, page_to_pfn(virt_to_page(cpu_addr)) + off,
			       user_count << PAGE_SHIFT, vma->vm_page_prot);
}

static int ad_get_sgtable(struct device *dev, struct sg_table *sgt, void *cpu_addr,
			  dma_addr_t bus, size_t size, unsigned long attrs)
{
	int ret = sg_alloc_table(sgt, 1, GFP_KERNEL);

	if (!ret)
		sg_set_page(sgt->sgl, virt_to_page(cpu_addr), PAGE_ALIGN(size), 0);
	return ret;
}

/*
 * The protocol cannot ask the host for a low bus address.  A mask is
 * honoured when every mapping can fall back to the bounce pool within it
 * (the pool's bus range fits), or when it is 64 bits wide.
 */
int ad_dma_supported(struct device *dev, u64 mask)
{
	struct apple_dma *ad = ad_from_dev(dev);

	if (mask == DMA_BIT_MASK(64))
		return 1;
	return READ_ONCE(ad->bounce_pages) && !READ_ONCE(ad->pool_lost) &&
	       ad->bounce_bus + ad->bounce_len - 1 <= mask;
}

/* Host bus addresses may lie anywhere: drivers must be able to use all 64 bits. */
u64 ad_get_required_mask(struct device *dev)
{
	return DMA_BIT_MASK(64);
}

/*
 * The largest buffer that can always be mapped: its granule-rounded range
 * (one granule more at worst) within the span and the budget; in strict
 * mode a buffer that does not cover whole granules bounces, so the pool's
 * size bounds it.
 */
size_t ad_max_mapping_size(struct device *dev)
{
	struct apple_dma *ad = ad_from_dev(dev);
	u64 max = min_t(u64, AD_MAX_SPAN, ad->budget_bytes) - ad->granule;

	if (ad->strict)
		max = min_t(u64, max, ad->bounce_len);
	return max;
}

void ad_init_ops(struct dma_map_ops *ops)
{
	ops->alloc = ad_alloc;
	ops->free = ad_free;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 10, 0)
	ops->alloc_pages_op = ad_alloc_pages;
#else
	ops->alloc_pages = ad_alloc_pages;
#endif
	ops->free_pages = ad_free_pages;
	ops->mmap = ad_mmap;
	ops->get_sgtable = ad_get_sgtable;
#ifdef AD_HAVE_MAP_PHYS	/* Kbuild compile probe */
	ops->map_phys = ad_map_phys;
	ops->unmap_phys = ad_unmap_phys;
#else
	ops->map_page = ad_map_page;
	ops->unmap_page = ad_unmap_page;
	ops->map_resource = ad_map_resource;
	ops->unmap_resource = ad_unmap_resource;
#endif
	ops->map_sg = ad_map_sg;
	ops->unmap_sg = ad_unmap_sg;
	ops->sync_single_for_cpu = ad_sync_single_for_cpu;
	ops->sync_single_for_device = ad_sync_single_for_device;
	ops->sync_sg_for_cpu = ad_sync_sg_for_cpu;
	ops->sync_sg_for_device = ad_sync_sg_for_device;
	ops->dma_supported = ad_dma_supported;
	ops->get_required_mask = ad_get_required_mask;
	ops->max_mapping_size = ad_max_mapping_size;
}
