// SPDX-License-Identifier: GPL-2.0
/* apple_dma: the probe-time self-test through the managed function. */

#include "apple_dma.h"

/* ---- self-test ----------------------------------------------------------- */

static u64 ad_doorbell_count(struct apple_dma *ad)
{
	unsigned long flags;
	u64 n;

	spin_lock_irqsave(&ad->lock, flags);
	n = ad->stats.doorbells;
	spin_unlock_irqrestore(&ad->lock, flags);
	return n;
}

#define AD_ST_BLOCKS 4

/*
 * Through @dev's (our) ops: an sg list over AD_ST_BLOCKS windows, two
 * entries in each, rings at most one doorbell and keeps in-window offsets;
 * a mapping with interrupts off works; a coherent buffer is zeroed and its
 * sg table names its page.  Returns NULL or the name of the failed check.
 */
#define AD_ST_MAX_HOLD 32

/*
 * Only with a tiny window table (max_windows <= AD_ST_MAX_HOLD): hold a
 * mapping in every slot, so that the next map must come from the bounce
 * pool; the pool must carry the buffer's bytes, and the unmap must bring
 * what the "device" wrote there back into the buffer.
 */
static const char *ad_selftest_bounce(struct apple_dma *ad, struct device *dev)
{
	dma_addr_t held[AD_ST_MAX_HOLD];
	unsigned int nr = ad->nr_windows, order, i, mapped = 0;
	const char *failed = NULL;
	struct page *block, *page;
	unsigned long flags;
	phys_addr_t base;
	dma_addr_t bus;
	u8 *pool = NULL;
	long head = -1;
	u64 off = 0;
	u8 *cpu;

	if (nr > AD_ST_MAX_HOLD || !ad->bounce_pages)
		return NULL;
	order = get_order((u64)(nr + 2) * ad->window);
	if (order > AD_MAX_ORDER)
		return NULL;
	block = alloc_pages(GFP_KERNEL | __GFP_NOWARN, order);
	if (!block)
		return "memory";
	base = ALIGN(page_to_phys(block), ad->window);

	for (i = 0; i < nr && !failed; i++) {
		page = pfn_to_page(PHYS_PFN(base + (u64)i * ad->window));
		held[i] = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
		if (dma_mapping_error(dev, held[i]))
			failed = "bounce_hold";
		else
			mapped++;
	}
	if (failed)
		goto out;

	page = pfn_to_page(PHYS_PFN(base + (u64)nr * ad->window));
	cpu = page_address(page);
	memset(cpu, 0x5a, PAGE_SIZE);
	bus = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
	if (dma_mapping_error(dev, bus)) {
		failed = "bounce_map";
		goto out;
	}
	spin_lock_irqsave(&ad->bounce_lock, flags);
	head = ad_bounce_head(ad, bus, &off);
	if (head >= 0 && !off)
		pool = ad_bounce_va(ad, head);
	spin_unlock_irqrestore(&ad->bounce_lock, flags);
	if (!pool) {
		failed = "bounce_not_bounced";
	} else if (memchr_inv(pool, 0x5a, PAGE_SIZE)) {
		failed = "bounce_copy_in";
	} else {
		/* What the device would write lands in the pool... */
		memset(pool, 0xa5, PAGE_SIZE);
	}
	dma_unmap_page(dev, bus, PAGE_SIZE, DMA_BIDIRECTIONAL);
	/* ...and the unmap copies it back into the buffer. */
	if (!failed && memchr_inv(cpu, 0xa5, PAGE_SIZE))
		failed = "bounce_copy_back";
out:
	for (i = 0; i < mapped; i++)
		dma_unmap_page(dev, held[i], PAGE_SIZE, DMA_BIDIRECTIONAL);
	__free_pages(block, order);
	return failed;
}

static const char *ad_selftest_run(struct apple_dma *ad, struct device *dev)
{
	unsigned int order = get_order(2 * ad->window);
	struct page *blocks[AD_ST_BLOCKS] = { };
	struct scatterlist sgl[2 * AD_ST_BLOCKS];
	const char *failed = NULL;
	struct sg_table sgt;
	unsigned long flags;
	dma_addr_t bus;
	u64 before;
	void *cpu;
	int i, n;

	if (order > AD_MAX_ORDER)
		return "window_too_large";
	/* The host may hand out any bus address: drivers must be told 64 bits. */
	if (dma_get_required_mask(dev) != DMA_BIT_MASK(64))
		return "required_mask";
	for (i = 0; i < AD_ST_BLOCKS; i++) {
		blocks[i] = alloc_pages(GFP_KERNEL | __GFP_NOWARN, order);
		if (!blocks[i]) {
			failed = "memory";
			goto out;
		}
	}

	/* Each block of two windows holds one whole aligned window. */
	sg_init_table(sgl, ARRAY_SIZE(sgl));
	for (i = 0; i < AD_ST_BLOCKS; i++) {
		phys_addr_t base = ALIGN(page_to_phys(blocks[i]), ad->window);

		sg_set_page(&sgl[2 * i], pfn_to_page(PHYS_PFN(base)), PAGE_SIZE, 0);
		sg_set_page(&sgl[2 * i + 1], pfn_to_page(PHYS_PFN(base + ad->window / 2)),
			    PAGE_SIZE, 0);
	}
	before = ad_doorbell_count(ad);
	n = dma_map_sg(dev, sgl, ARRAY_SIZE(sgl), DMA_BIDIRECTIONAL);
	if (n != ARRAY_SIZE(sgl)) {
		failed = "map_sg";
		goto out;
	}
	if (ad_doorbell_count(ad) - before > 1)
		failed = "map_sg_doorbells";
	for (i = 0; i < AD_ST_BLOCKS && !failed; i++)
		if (sg_dma_address(&sgl[2 * i + 1]) - sg_dma_address(&sgl[2 * i]) !=
		    ad->window / 2)
			failed = "map_sg_offsets";
	dma_unmap_sg(dev, sgl, ARRAY_SIZE(sgl), DMA_BIDIRECTIONAL);
	if (failed)
		goto out;

	/* A block's first page may lie in a window not mapped yet: a doorbell with IRQs off. */
	local_irq_save(flags);
	bus = dma_map_page(dev, blocks[0], 0, PAGE_SIZE, DMA_TO_DEVICE);
	if (!dma_mapping_error(dev, bus))
		dma_unmap_page(dev, bus, PAGE_SIZE, DMA_TO_DEVICE);
	local_irq_restore(flags);
	if (dma_mapping_error(dev, bus)) {
		failed = "atomic_map";
		goto out;
	}

	cpu = dma_alloc_coherent(dev, PAGE_SIZE, &bus, GFP_KERNEL);
	if (!cpu) {
		failed = "coherent";
		goto out;
	}
	if (memchr_inv(cpu, 0, PAGE_SIZE)) {
		failed = "coherent_zero";
	} else if (dma_get_sgtable(dev, &sgt, cpu, bus, PAGE_SIZE)) {
		failed = "sgtable";
	} else {
		if (sgt.nents != 1 || sg_page(sgt.sgl) != virt_to_page(cpu))
			failed = "sgtable_page";
		sg_free_table(&sgt);
	}
	dma_free_coherent(dev, PAGE_SIZE, cpu, bus);
	if (!failed)
		failed = ad_selftest_bounce(ad, dev);
out:
	for (i = 0; i < AD_ST_BLOCKS; i++)
		if (blocks[i])
			__free_pages(blocks[i], order);
	return failed;
}

void ad_selftest(struct apple_dma *ad)
{
	struct pci_dev *mdev;
	const char *failed;

	mutex_lock(&ad_instances_lock);
	mdev = ad->managed ? pci_dev_get(ad->managed) : NULL;
	mutex_unlock(&ad_instances_lock);
	if (!mdev) {
		ad->selftest_result = "skipped_no_function";
		return;
	}
	/*
	 * Only while no driver owns the function (the lock keeps one from
	 * binding meanwhile), with a 64-bit mask for the test's mappings: the
	 * host may hand out bus addresses above 4 GiB.
	 */
	device_lock(&mdev->dev);
	if (mdev->dev.driver) {
		failed = "skipped_driver_bound";
	} else {
		u64 mask = dma_get_mask(&mdev->dev);
		u64 coherent_mask = mdev->dev.coherent_dma_mask;

		if (dma_set_mask_and_coherent(&mdev->dev, DMA_BIT_MASK(64))) {
			failed = "set_mask";
		} else {
			failed = ad_selftest_run(ad, &mdev->dev);
			dma_set_mask(&mdev->dev, mask);
			dma_set_coherent_mask(&mdev->dev, coherent_mask);
		}
	}
	device_unlock(&mdev->dev);
	pci_dev_put(mdev);
	if (failed) {
		ad->selftest_result = failed;
		dev_err(ad->dev, "self-test failed: %s\n", failed);
	} else {
		ad->selftest_result = "passed";
		dev_info(ad->dev, "self-test passed\n");
	}
}
