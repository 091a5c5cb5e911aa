// SPDX-License-Identifier: GPL-2.0
/* apple_dma: module parameters, probe and remove, module init. */

#include "apple_dma.h"

unsigned int window_kb = 2048;
module_param(window_kb, uint, 0444);
MODULE_PARM_DESC(window_kb, "Size of the shared aligned mapping windows in KiB, a power of two (default 2048; lazy mode only)");

unsigned int batch_cap = 64;
module_param(batch_cap, uint, 0444);
MODULE_PARM_DESC(batch_cap, "Most entries per doorbell (doorbells run with interrupts off), further capped by MAX_ENTRIES (default 64)");

unsigned int bounce_kb = 1024;
module_param(bounce_kb, uint, 0444);
MODULE_PARM_DESC(bounce_kb, "Bounce pool mapped at probe in KiB, 0 for none (default 1024; strict mode: at least 4096)");

unsigned int max_windows = 8192;
module_param(max_windows, uint, 0444);
MODULE_PARM_DESC(max_windows, "Most live mappings kept per companion (default 8192)");

bool strict;
module_param(strict, bool, 0444);
MODULE_PARM_DESC(strict, "Strict isolation: the device reaches only the granules of buffers mapped now (sub-granule buffers bounce), unmapped within one timer tick of the last unmap (default N: lazy)");

unsigned int idle_ms = 3;
module_param(idle_ms, uint, 0444);
MODULE_PARM_DESC(idle_ms, "Lazy mode: an idle window is unmapped once idle this long and unused for one pass of the idle worker (one timer tick or idle_ms apart), 1..5 ms (default 3)");

bool v2_only;
module_param(v2_only, bool, 0444);
MODULE_PARM_DESC(v2_only, "Ignore the version 3 features and use only protocol version 2 (default N)");

bool selftest;
module_param(selftest, bool, 0444);
MODULE_PARM_DESC(selftest, "At probe, check batching, atomic mapping, coherent buffers and (with max_windows <= 32) bouncing through the managed function's ops; result in debugfs (default N)");

bool unittest;
module_param(unittest, bool, 0444);
MODULE_PARM_DESC(unittest, "At load, run the cache, eviction, fallback, mask, reset and isolation tests against a fake doorbell; result in debugfs unittest (default N)");

bool rebind = true;
module_param(rebind, bool, 0444);
MODULE_PARM_DESC(rebind, "Unbind and rebind the managed function's driver if it is already bound (default Y); N refuses to probe instead");

unsigned int swap_delay_ms;
module_param(swap_delay_ms, uint, 0644);
MODULE_PARM_DESC(swap_delay_ms, "For tests: wait this long between unbinding the managed function's driver and swapping its DMA operations, which widens the window a racing bind would use (default 0)");

LIST_HEAD(ad_instances);
/* Guards ad_instances and each instance's managed function. */
DEFINE_MUTEX(ad_instances_lock);
struct dentry *ad_debugfs_root;

/* ---- probe and remove ---------------------------------------------------- */

static int ad_read_limits(struct apple_dma *ad)
{
	struct device *dev = ad->dev;
	u64 bytes = AD_DEFAULT_MAX_BYTES, mappings = AD_DEFAULT_MAX_MAPPINGS;
	u64 granule = AD_DEFAULT_GRANULE;

	if (ad->features & AD_FEAT_BUDGET) {
		bytes = readl(ad->regs + AD_REG_DART_MAX_BYTES_LO) |
			(u64)readl(ad->regs + AD_REG_DART_MAX_BYTES_HI) << 32;
		mappings = readl(ad->regs + AD_REG_DART_MAX_MAPPINGS);
		granule = readl(ad->regs + AD_REG_DART_GRANULE);
		if (!bytes || !mappings || !is_power_of_2(granule) || granule > SZ_1M) {
			dev_err(dev, "device publishes an unusable budget: %llu bytes, %llu mappings, granule %llu\n",
				bytes, mappings, granule);
			return -ENODEV;
		}
	}
	ad->granule = max_t(u64, granule, PAGE_SIZE);
	ad->window = (u64)window_kb * SZ_1K;
	if (!is_power_of_2(ad->window) || ad->window < ad->granule || ad->window > AD_MAX_SPAN)
		ad->window = max_t(u64, ad->granule, SZ_2M);
	if (ad->strict)
		ad->window = ad->granule;	/* never more than a buffer's granules */
	ad->budget_bytes = bytes;
	ad->budget_mappings = min_t(u64, mappings, max(max_windows, 16U));
	ad->idle_ns = (u64)clamp(idle_ms, 1U, 5U) * NSEC_PER_MSEC;
	ad->idle_delay = ad->strict ? 1 : max(1UL, msecs_to_jiffies(clamp(idle_ms, 1U, 5U)));
	return 0;
}

int ad_alloc_state(struct apple_dma *ad)
{
	size_t req_size, resp_size;
	u32 i;

	ad->batch_max = min3(ad->max_entries, max(batch_cap, 1U), 4096U);
	req_size = (size_t)ad->batch_max * sizeof(struct ad_map_req);
	resp_size = (size_t)ad->batch_max * sizeof(struct ad_map_resp);
	ad->cmd_area_size = PAGE_ALIGN(sizeof(struct ad_cmd)) + req_size + resp_size;
	ad->cmd_area = alloc_pages_exact(ad->cmd_area_size, GFP_KERNEL | __GFP_ZERO);
	if (!ad->cmd_area)
		return -ENOMEM;
	ad->cmd = ad->cmd_area;
	ad->req = ad->cmd_area + PAGE_ALIGN(sizeof(struct ad_cmd));
	ad->resp = ad->req + req_size;
	ad->cmd_gpa = virt_to_phys(ad->cmd);
	ad->req_gpa = virt_to_phys(ad->req);
	ad->resp_gpa = virt_to_phys(ad->resp);

	ad->ranges = kcalloc(ad->batch_max, sizeof(*ad->ranges), GFP_KERNEL);
	ad->nr_windows = ad->budget_mappings;
	ad->windows = kvcalloc(ad->nr_windows, sizeof(*ad->windows), GFP_KERNEL);
	if (!ad->ranges || !ad->windows)
		return -ENOMEM;
	for (i = 0; i < ad->nr_windows; i++) {
		atomic_set(&ad->windows[i].refs, AD_REFS_DEAD);
		list_add_tail(&ad->windows[i].link, &ad->free_list);
	}
	return 0;
}

/* Allocate and map the bounce pool; without it the driver still works (lazy mode). */
int ad_setup_bounce(struct apple_dma *ad)
{
	u64 kb = ad->strict ? max(bounce_kb, 4096U) : bounce_kb;
	u32 pages = DIV_ROUND_UP(kb * SZ_1K, PAGE_SIZE);
	unsigned long flags;
	int ret;

	if (!pages)
		return -ENOMEM;
	ad->bounce_order = min_t(unsigned int, get_order((u64)pages * PAGE_SIZE), AD_MAX_ORDER);
	/* Whole granules, so that nothing else shares the pool's mapping. */
	ad->bounce_order = max_t(unsigned int, ad->bounce_order, get_order(ad->granule));
	pages = 1U << ad->bounce_order;
	ad->bounce_page = alloc_pages(GFP_KERNEL | __GFP_ZERO | __GFP_NOWARN, ad->bounce_order);
	ad->bounce_map = bitmap_zalloc(pages, GFP_KERNEL);
	ad->bounce_slots = kcalloc(pages, sizeof(*ad->bounce_slots), GFP_KERNEL);
	if (!ad->bounce_page || !ad->bounce_map || !ad->bounce_slots) {
		ret = -ENOMEM;
		goto fail;
	}
	ad->bounce_va = page_address(ad->bounce_page);

	spin_lock_irqsave(&ad->lock, flags);
	ret = ad_pool_map(ad);
	spin_unlock_irqrestore(&ad->lock, flags);
	if (!ret)
		return 0;
	dev_warn(ad->dev, "host refused the %u KiB bounce pool: running without it\n",
		 pages * (u32)(PAGE_SIZE / SZ_1K));
fail:
	if (ad->bounce_page)
		__free_pages(ad->bounce_page, ad->bounce_order);
	ad->bounce_page = NULL;
	bitmap_free(ad->bounce_map);
	ad->bounce_map = NULL;
	kfree(ad->bounce_slots);
	ad->bounce_slots = NULL;
	return ret;
}

/*
 * Unmap everything this instance holds on the host (at remove), then point
 * the device at no command page, so that a stray doorbell cannot make it
 * read memory that is about to be reused.  One batch per hold of the lock,
 * so that interrupts are off for one doorbell of batch_max entries at a
 * time.  A companion that is gone answers nothing: its windows are
 * dropped without the host (ad_mark_gone()).
 */
void ad_release_all(struct apple_dma *ad)
{
	LIST_HEAD(batch);
	unsigned long flags;
	u32 i = 0, n, busy = 0, stuck = 0, released = 0, holds = 0;
	bool gone;

	spin_lock_irqsave(&ad->lock, flags);
	ad->dead = true;
	WRITE_ONCE(ad->idle_work_ready, false);
	spin_unlock_irqrestore(&ad->lock, flags);
	cancel_delayed_work_sync(&ad->idle_work);

	while (i < ad->nr_windows) {
		n = 0;
		spin_lock_irqsave(&ad->lock, flags);
		for (; i < ad->nr_windows && n < ad->batch_max; i++) {
			struct ad_window *w = &ad->windows[i];

			if (w->state != AD_WIN_LIVE && w->state != AD_WIN_STUCK)
				continue;
			if (w->state == AD_WIN_LIVE && atomic_read(&w->refs) > 0 &&
			    w->kind != AD_KIND_POOL)
				busy++;
			atomic_set(&w->refs, AD_REFS_DEAD);
			w->state = AD_WIN_DYING;
			ad_win_unlink_seq(ad, w);
			list_move_tail(&w->link, &batch);
			n++;
		}
		if (n)
			ad_release_list(ad, &batch);
		released += n;
		spin_unlock_irqrestore(&ad->lock, flags);
	}

	spin_lock_irqsave(&ad->lock, flags);
	stuck = list_count_nodes(&ad->stuck_list);
	if (stuck && (ad->features & AD_FEAT_UNMAP_ALL) &&
	    ad_doorbell(ad, AD_CMD_UNMAP_ALL, 0) == AD_ST_OK) {
		struct ad_window *w, *tmp;

		list_for_each_entry_safe(w, tmp, &ad->stuck_list, link)
			ad_win_free(ad, w);
		stuck = 0;
	}
	gone = ad->gone;
	if (!gone) {
		holds = ad_device_live_mappings(ad);	/* 0 when the device does not say */
		ad_set_cmd(ad, 0);
	}
	ad->broken = true;	/* no doorbell after this */
	spin_unlock_irqrestore(&ad->lock, flags);
	if (busy && !gone)
		dev_warn(ad->dev, "%u mappings were still in use at remove\n", busy);
	if (ad->pdev && gone)
		dev_info(ad->dev, "remove: the companion is gone; %llu mappings were dropped without it\n",
			 ad->stats.gone_dropped);
	else if (ad->pdev && (ad->features & AD_FEAT_BUDGET))
		dev_info(ad->dev, "remove: %u mappings released; the companion holds %u\n",
			 released - stuck, holds);
	else if (ad->pdev)
		dev_info(ad->dev, "remove: %u mappings released (version 2: the companion does not say what it holds)\n",
			 released - stuck);
	if (stuck)
		dev_err(ad->dev, "%u mappings the host refused to unmap stay registered\n", stuck);
}

void ad_free_state(struct apple_dma *ad)
{
	/* Pool pages the host still maps never go back to the allocator. */
	if (ad->bounce_win && ad->bounce_win->state == AD_WIN_STUCK)
		ad->bounce_page = NULL;
	if (ad->bounce_page)
		__free_pages(ad->bounce_page, ad->bounce_order);
	bitmap_free(ad->bounce_map);
	kfree(ad->bounce_slots);
	kvfree(ad->windows);
	kfree(ad->ranges);
	if (ad->cmd_area)
		free_pages_exact(ad->cmd_area, ad->cmd_area_size);
}

/* List @ad so the bus notifier finds it; one companion per managed function. */
static int ad_register_instance(struct apple_dma *ad)
{
	struct apple_dma *other;
	int ret = 0;

	mutex_lock(&ad_instances_lock);
	list_for_each_entry(other, &ad_instances, node) {
		if (other->managed_bdf == ad->managed_bdf) {
			dev_err(ad->dev, "%s already manages function %#x\n",
				pci_name(other->pdev), ad->managed_bdf);
			ret = -EBUSY;
			break;
		}
	}
	if (!ret)
		list_add_tail(&ad->node, &ad_instances);
	mutex_unlock(&ad_instances_lock);
	return ret;
}

/* The parts of an instance that do not depend on the device. */
struct apple_dma *ad_new_instance(struct device *dev, bool strict_mode)
{
	struct apple_dma *ad = kzalloc(sizeof(*ad), GFP_KERNEL);

	if (!ad)
		return NULL;
	ad->pstats = alloc_percpu(struct ad_pcpu_stats);
	if (!ad->pstats) {
		kfree(ad);
		return NULL;
	}
	ad->dev = dev;
	ad->strict = strict_mode;
	ad->selftest_result = "off";
	spin_lock_init(&ad->lock);
	spin_lock_init(&ad->cmd_lock);
	spin_lock_init(&ad->bounce_lock);
	seqcount_spinlock_init(&ad->tree_seq, &ad->lock);
	INIT_LIST_HEAD(&ad->node);
	INIT_LIST_HEAD(&ad->free_list);
	INIT_LIST_HEAD(&ad->live_list);
	INIT_LIST_HEAD(&ad->stuck_list);
	INIT_DELAYED_WORK(&ad->idle_work, ad_idle_work);
	ad->gpa_root = RB_ROOT_CACHED;
	ad->bus_root = RB_ROOT_CACHED;
	ad_init_ops(&ad->ops);
	return ad;
}

static int ad_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct device *dev = &pdev->dev;
	struct apple_dma *ad;
	u32 version, bdf;
	unsigned long flags;
	int ret;

	ad = ad_new_instance(dev, strict);
	if (!ad)
		return -ENOMEM;
	ad->pdev = pdev;

	ret = pci_enable_device_mem(pdev);
	if (ret) {
		dev_err(dev, "cannot enable the companion's memory BAR: %d\n", ret);
		goto err_free;
	}
	if (!(pci_resource_flags(pdev, 0) & IORESOURCE_MEM) ||
	    pci_resource_len(pdev, 0) < 0x40) {
		dev_err(dev, "BAR0 is not a memory BAR of at least 64 bytes\n");
		ret = -ENODEV;
		goto err_disable;
	}
	ret = pci_request_region(pdev, 0, AD_NAME);
	if (ret) {
		dev_err(dev, "BAR0 is busy: %d\n", ret);
		goto err_disable;
	}
	ad->regs = pci_iomap(pdev, 0, 0);
	if (!ad->regs) {
		ret = -ENOMEM;
		goto err_region;
	}

	version = readl(ad->regs + AD_REG_VERSION);
	if (version == U32_MAX) {
		dev_err(dev, "the companion reads all-ones: it is gone (surprise removal?)\n");
		ret = -ENODEV;
		goto err_unmap;
	}
	if (version != AD_PROTOCOL_VERSION) {
		dev_err(dev, "companion speaks protocol version %#x, this driver version %u\n",
			version, AD_PROTOCOL_VERSION);
		ret = -ENODEV;
		goto err_unmap;
	}
	bdf = readl(ad->regs + AD_REG_MANAGED_BDF);
	ad->max_entries = readl(ad->regs + AD_REG_MAX_ENTRIES);
	if (bdf > 0xffff || !ad->max_entries ||
	    (pci_domain_nr(pdev->bus) == 0 && bdf == PCI_DEVID(pdev->bus->number, pdev->devfn))) {
		dev_err(dev, "companion publishes an unusable MANAGED_BDF %#x or MAX_ENTRIES %u\n",
			bdf, ad->max_entries);
		ret = -ENODEV;
		goto err_unmap;
	}
	ad->managed_bdf = bdf;
	if (device_iommu_mapped(dev)) {
		/* Our own command page would be given translated addresses. */
		dev_err(dev, "the companion is behind a guest IOMMU, so the host cannot read its command page: remove the vIOMMU from the VM\n");
		ret = -ENODEV;
		goto err_unmap;
	}
	ad->features = v2_only ? 0 : readl(ad->regs + AD_REG_FEATURES);
	ret = ad_read_limits(ad);
	if (ret)
		goto err_unmap;
	ret = ad_alloc_state(ad);
	if (ret) {
		dev_err(dev, "out of memory for the command page and mapping table\n");
		goto err_state;
	}

	if (ad->features)
		ad->guest_features = ad->features & AD_FEAT_KNOWN;
	ad_set_cmd(ad, ad->cmd_gpa);
	if (ad->features & AD_FEAT_UNMAP_ALL) {
		/* Mappings a previous instance left behind would eat the budget. */
		spin_lock_irqsave(&ad->lock, flags);
		if (ad_doorbell(ad, AD_CMD_UNMAP_ALL, 0) != AD_ST_OK)
			dev_warn(dev, "UNMAP_ALL failed; stale mappings may remain\n");
		spin_unlock_irqrestore(&ad->lock, flags);
	}
	if (ad_setup_bounce(ad) && ad->strict) {
		dev_err(dev, "strict mode needs the bounce pool (sub-granule buffers bounce)\n");
		ret = -ENOMEM;
		goto err_release;
	}
	WRITE_ONCE(ad->idle_work_ready, true);

	pci_set_drvdata(pdev, ad);
	ad_debugfs_add(ad);

	ret = ad_register_instance(ad);
	if (ret)
		goto err_debugfs;

	ret = ad_claim_present(ad);
	if (ret)
		goto err_listed;
	if (selftest)
		ad_selftest(ad);

	dev_info(dev, "apple-dma v%u%s, %s mode: manages 0000:%02x:%02x.%d, %u entries per doorbell, window %llu KiB, budget %llu MiB / %llu mappings, bounce %llu KiB\n",
		 version, ad->features ? " (v3 features)" : "", ad->strict ? "strict" : "lazy",
		 bdf >> 8, PCI_SLOT(bdf),
		 PCI_FUNC(bdf), ad->batch_max, ad->window / SZ_1K, ad->budget_bytes >> 20,
		 ad->budget_mappings, ad->bounce_len / SZ_1K);
	return 0;

err_listed:
	ad_release_managed(ad);
err_debugfs:
	debugfs_remove_recursive(ad->debugfs);
err_release:
	ad_release_all(ad);
err_state:
	ad_free_state(ad);
err_unmap:
	pci_iounmap(pdev, ad->regs);
err_region:
	pci_release_region(pdev, 0);
err_disable:
	pci_disable_device(pdev);
err_free:
	free_percpu(ad->pstats);
	kfree(ad);
	return ret;
}

/*
 * The end of an instance, after ad_release_all().  If the managed function
 * kept a driver (@restored false), its DMA operations still point into
 * @ad: freeing them would be a use after free.  Then the instance stays
 * (dead: every map fails, without a doorbell) and the module is pinned for
 * good.  Returns true when @ad was freed.
 */
bool ad_teardown(struct apple_dma *ad, bool restored)
{
	if (!restored) {
		dev_err(ad->dev,
			"0000:%02x:%02x.%d kept its driver: keeping apple_dma's DMA operations (every mapping fails) and the module loaded\n",
			ad->managed_bdf >> 8, PCI_SLOT(ad->managed_bdf), PCI_FUNC(ad->managed_bdf));
		__module_get(THIS_MODULE);
		return false;
	}
	ad_free_state(ad);
	free_percpu(ad->pstats);
	kfree(ad);
	return true;
}

void ad_remove(struct pci_dev *pdev)
{
	struct apple_dma *ad = pci_get_drvdata(pdev);
	bool restored = ad_release_managed(ad);

	debugfs_remove_recursive(ad->debugfs);
	ad_release_all(ad);
	pci_iounmap(pdev, ad->regs);
	pci_release_region(pdev, 0);
	pci_disable_device(pdev);
	ad_teardown(ad, restored);
}

static const struct pci_device_id ad_ids[] = {
	{ PCI_DEVICE(0x1b36, 0x0015) },
	{ }
};
MODULE_DEVICE_TABLE(pci, ad_ids);

/*
 * The companion was reset and every host mapping with it: drop the cache
 * and restore the command page now, before a cache hit can hand out a dead
 * bus address.
 */
void ad_reset_notify(struct apple_dma *ad)
{
	unsigned long flags;

	spin_lock_irqsave(&ad->lock, flags);
	if (!ad->dead)
		ad_recover(ad);
	spin_unlock_irqrestore(&ad->lock, flags);
}

/* The kernel reset the companion (pci_reset_function() and friends). */
static void ad_reset_done(struct pci_dev *pdev)
{
	struct apple_dma *ad = pci_get_drvdata(pdev);

	if (ad)
		ad_reset_notify(ad);
}

static const struct pci_error_handlers ad_err_handlers = {
	.reset_done = ad_reset_done,
};

static struct pci_driver ad_driver = {
	.name = AD_NAME,
	.id_table = ad_ids,
	.probe = ad_probe,
	.remove = ad_remove,
	.err_handler = &ad_err_handlers,
};

static int __init ad_init(void)
{
	int ret;

	ad_debugfs_root = debugfs_create_dir(AD_NAME, NULL);
	if (unittest)
		ad_unittest_run();
	ret = bus_register_notifier(&pci_bus_type, &ad_bus_nb);
	if (ret)
		goto err_debugfs;
	ret = pci_register_driver(&ad_driver);
	if (ret)
		goto err_notifier;
	return 0;

err_notifier:
	bus_unregister_notifier(&pci_bus_type, &ad_bus_nb);
err_debugfs:
	debugfs_remove_recursive(ad_debugfs_root);
	return ret;
}

static void __exit ad_exit(void)
{
	pci_unregister_driver(&ad_driver);
	bus_unregister_notifier(&pci_bus_type, &ad_bus_nb);
	debugfs_remove_recursive(ad_debugfs_root);
}

module_init(ad_init);
module_exit(ad_exit);

MODULE_DESCRIPTION("DMA through the apple-dma-pci companion for passthrough on Apple Silicon hosts");
MODULE_LICENSE("GPL");
