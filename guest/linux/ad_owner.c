// SPDX-License-Identifier: GPL-2.0
/* apple_dma: the managed function: ownership, notifier, refusals, release. */

#include "apple_dma.h"

/* ---- the managed function ------------------------------------------------ */

static struct apple_dma *ad_find_owner(struct pci_dev *pdev)
{
	struct apple_dma *ad;

	lockdep_assert_held(&ad_instances_lock);
	if (pci_domain_nr(pdev->bus) != 0)
		return NULL;
	list_for_each_entry(ad, &ad_instances, node)
		if (!ad->removing &&
		    ad->managed_bdf == PCI_DEVID(pdev->bus->number, pdev->devfn))
			return ad;
	return NULL;
}

/*
 * Why @dev cannot have its DMA routed through the companion, or NULL.
 * Behind a guest IOMMU the device would be given the vIOMMU's addresses
 * (and from 6.12 the kernel ignores replaced DMA operations there); a
 * device that is not cache-coherent needs cache maintenance, which a
 * module cannot do (arch_sync_dma_* is not exported).  Coherence is known
 * only once the driver core configured the device's DMA (@configured: at
 * BUS_NOTIFY_BIND_DRIVER, or with a driver bound); before, arm64 says "not
 * coherent" for every device.
 */
const char *ad_unusable(struct device *dev, bool configured)
{
	if (device_iommu_mapped(dev))
		return "is behind a guest IOMMU, whose addresses are not the DART's";
	if (configured && !dev_is_dma_coherent(dev))
		return "is not DMA-coherent; apple_dma cannot do its cache maintenance";
	return NULL;
}

/*
 * Route @mdev's DMA through @ad.  Only while no driver is bound (the caller
 * holds the device lock, or the driver core is about to probe): the ops of
 * a device are never swapped under a running driver.
 */
static void ad_install_ops(struct apple_dma *ad, struct pci_dev *mdev, bool configured)
{
	const char *why = ad_unusable(&mdev->dev, configured);

	lockdep_assert_held(&ad_instances_lock);
	if (why) {
		/* Refuse loudly; if our ops went in before (no driver yet), take them out. */
		dev_err(ad->dev, "refusing %s: it %s\n", pci_name(mdev), why);
		if (get_dma_ops(&mdev->dev) == &ad->ops)
			set_dma_ops(&mdev->dev, ad->managed_orig_ops);
		return;
	}
	if (get_dma_ops(&mdev->dev) == &ad->ops)
		return;
	if (!ad->managed) {
		ad->managed = pci_dev_get(mdev);
		ad->managed_orig_ops = get_dma_ops(&mdev->dev);
	}
	set_dma_ops(&mdev->dev, &ad->ops);
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 11, 0)
	/* The core may have decided "no syncs needed" for dma-direct: bounces need them. */
	dma_reset_need_sync(&mdev->dev);
#endif
	dev_info(ad->dev, "DMA of %s now goes through the companion\n", pci_name(mdev));
}

static int ad_bus_notify(struct notifier_block *nb, unsigned long action, void *data)
{
	struct pci_dev *pdev = to_pci_dev(data);
	struct apple_dma *ad;

	switch (action) {
	case BUS_NOTIFY_ADD_DEVICE:
	case BUS_NOTIFY_BIND_DRIVER:	/* after dma_configure, before probe */
		mutex_lock(&ad_instances_lock);
		ad = ad_find_owner(pdev);
		if (ad)
			ad_install_ops(ad, pdev, action == BUS_NOTIFY_BIND_DRIVER);
		mutex_unlock(&ad_instances_lock);
		break;
	case BUS_NOTIFY_DEL_DEVICE:
		mutex_lock(&ad_instances_lock);
		ad = ad_find_owner(pdev);
		if (ad && ad->managed == pdev) {
			/* Hot-unplug: its driver is gone; no ops into @ad stay behind. */
			if (get_dma_ops(&pdev->dev) == &ad->ops)
				set_dma_ops(&pdev->dev, ad->managed_orig_ops);
			ad->managed = NULL;
			pci_dev_put(pdev);
		}
		mutex_unlock(&ad_instances_lock);
		break;
	}
	return NOTIFY_DONE;
}

struct notifier_block ad_bus_nb = {
	.notifier_call = ad_bus_notify,
};

/*
 * While the managed function's DMA operations are swapped, no driver may
 * bind it: one bound between our unbind and the swap would run with the
 * wrong operations, and at release keep operations that point into this
 * instance (and module) after both are freed.  A driver_override naming
 * no driver stops every bind: sysfs bind, device_attach(), a driver
 * loading meanwhile.  The user's own override is saved and put back.
 * Returns the saved override (NULL: none) in *@saved; false when the
 * block could not be set (no memory), and then binding stays possible.
 */
#define AD_NO_DRIVER "apple_dma-busy"

static bool ad_block_binding(struct pci_dev *mdev, char **saved)
{
	const char *old;
	int ret;

	*saved = NULL;
#ifdef AD_HAVE_DEVICE_DRIVER_OVERRIDE
	spin_lock(&mdev->dev.driver_override.lock);
	old = mdev->dev.driver_override.name;
	if (old)
		*saved = kstrdup(old, GFP_ATOMIC);
	spin_unlock(&mdev->dev.driver_override.lock);
	if (old && !*saved)
		return false;
	ret = device_set_driver_override(&mdev->dev, AD_NO_DRIVER);
#else
	device_lock(&mdev->dev);
	old = mdev->driver_override;
	if (old)
		*saved = kstrdup(old, GFP_KERNEL);
	device_unlock(&mdev->dev);
	if (old && !*saved)
		return false;
	ret = driver_set_override(&mdev->dev, &mdev->driver_override, AD_NO_DRIVER,
				  strlen(AD_NO_DRIVER));
#endif
	if (ret) {
		kfree(*saved);
		*saved = NULL;
	}
	return !ret;
}

/* Put back what ad_block_binding() saved (clearing ours), and free it. */
static void ad_unblock_binding(struct pci_dev *mdev, char *saved)
{
	const char *s = saved ? saved : "";
	int ret;

#ifdef AD_HAVE_DEVICE_DRIVER_OVERRIDE
	ret = device_set_driver_override(&mdev->dev, s);
#else
	ret = driver_set_override(&mdev->dev, &mdev->driver_override, s, strlen(s));
#endif
	if (ret)
		dev_err(&mdev->dev, "could not restore driver_override \"%s\" (%d): write it again\n",
			s, ret);
	kfree(saved);
}

/*
 * Unbind @mdev's driver and swap its DMA operations, with binding blocked:
 * @install puts ours in, else the ones it had go back.  Again if a bind
 * got in first.  False when a driver still holds it with other operations
 * than wanted.
 */
static bool ad_swap_ops(struct apple_dma *ad, struct pci_dev *mdev, bool install)
{
	bool blocked, done = false;
	char *saved;
	int tries;

	blocked = ad_block_binding(mdev, &saved);
	for (tries = 0; tries < AD_RELEASE_TRIES && !done; tries++) {
		if (READ_ONCE(mdev->dev.driver) &&
		    (!install || get_dma_ops(&mdev->dev) != &ad->ops)) {
			if (install)
				dev_warn(ad->dev, "%s is already bound: unbinding its driver to route its DMA\n",
					 pci_name(mdev));
			else
				dev_info(ad->dev, "unbinding %s: its DMA cannot work without the companion\n",
					 pci_name(mdev));
			device_release_driver(&mdev->dev);
		}
		if (swap_delay_ms)
			msleep(swap_delay_ms);
		device_lock(&mdev->dev);
		if (mdev->dev.driver) {
			done = install && get_dma_ops(&mdev->dev) == &ad->ops;
		} else if (install) {
			mutex_lock(&ad_instances_lock);
			ad_install_ops(ad, mdev, false);
			mutex_unlock(&ad_instances_lock);
			done = true;
		} else {
			if (get_dma_ops(&mdev->dev) == &ad->ops)
				set_dma_ops(&mdev->dev, ad->managed_orig_ops);
			done = true;
		}
		device_unlock(&mdev->dev);
	}
	if (blocked)
		ad_unblock_binding(mdev, saved);
	return done;
}

/* Take over an already present managed function; 0 when it is absent. */
int ad_claim_present(struct apple_dma *ad)
{
	struct pci_dev *mdev;
	bool was_bound, done;
	int ret = 0;

	mdev = pci_get_domain_bus_and_slot(0, ad->managed_bdf >> 8, ad->managed_bdf & 0xff);
	if (!mdev) {
		dev_info(ad->dev,
			 "managed function 0000:%02x:%02x.%d not present yet; taking it when it appears\n",
			 ad->managed_bdf >> 8, PCI_SLOT(ad->managed_bdf),
			 PCI_FUNC(ad->managed_bdf));
		return 0;
	}
	if (ad_unusable(&mdev->dev, !!READ_ONCE(mdev->dev.driver))) {
		dev_err(ad->dev, "refusing %s: it %s\n", pci_name(mdev),
			ad_unusable(&mdev->dev, true));
		ret = -ENODEV;
		goto out;
	}
	was_bound = !!READ_ONCE(mdev->dev.driver);
	if (was_bound && get_dma_ops(&mdev->dev) != &ad->ops && !rebind) {
		dev_err(ad->dev,
			"%s is already bound to a driver that uses other DMA addresses; unbind it first (or load with rebind=1)\n",
			pci_name(mdev));
		ret = -EBUSY;
		goto out;
	}
	done = ad_swap_ops(ad, mdev, true);
	if (!done)
		dev_err(ad->dev, "%s kept a driver that does not use the companion: rebinding raced us; unbind it and load again\n",
			pci_name(mdev));
	/* Bind now a driver that was unbound above or that failed before us. */
	if (!READ_ONCE(mdev->dev.driver) && device_attach(&mdev->dev) < 0)
		dev_warn(ad->dev, "binding a driver to %s failed\n", pci_name(mdev));
out:
	pci_dev_put(mdev);
	return ret;
}

/*
 * Give the managed function back: unbind its driver, restore its ops.
 * False when a driver kept (or got) it bound throughout: then its ops
 * still point into @ad, which must outlive it (see ad_remove()).
 */
bool ad_release_managed(struct apple_dma *ad)
{
	struct pci_dev *mdev;
	bool restored;

	mutex_lock(&ad_instances_lock);
	ad->removing = true;
	list_del_init(&ad->node);
	mdev = ad->managed ? pci_dev_get(ad->managed) : NULL;
	mutex_unlock(&ad_instances_lock);
	if (!mdev)
		return true;
	restored = ad_swap_ops(ad, mdev, false);
	mutex_lock(&ad_instances_lock);
	if (ad->managed) {
		pci_dev_put(ad->managed);
		ad->managed = NULL;
	}
	mutex_unlock(&ad_instances_lock);
	if (!restored && get_dma_ops(&mdev->dev) != &ad->ops)
		restored = true;	/* another driver path put other ops in */
	pci_dev_put(mdev);
	return restored;
}
