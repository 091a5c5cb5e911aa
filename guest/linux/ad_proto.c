// SPDX-License-Identifier: GPL-2.0
/* apple_dma: the command page and the doorbell, reset detection. */

#include "apple_dma.h"

/* ---- the doorbell ------------------------------------------------------ */

/*
 * Is the companion gone?  A PCIe device that vanished (a Thunderbolt cable
 * pulled, the host function dead) reads all-ones, and the PCI core marks a
 * device it found disconnected.  VERSION reads 2 on a live companion.
 * Lockless; one MMIO read unless the core already knows.
 */
bool ad_gone(struct apple_dma *ad)
{
	if (READ_ONCE(ad->gone))
		return true;
	if (ad->fake)
		return ad_fake_version(ad) == U32_MAX;
	if (ad->pdev && READ_ONCE(ad->pdev->error_state) == pci_channel_io_perm_failure)
		return true;
	return readl(ad->regs + AD_REG_VERSION) == U32_MAX;
}

/*
 * The companion is gone, and the host's mappings with it: from now on
 * every map fails at once (no doorbell, no retry, no bus address handed
 * out) and every window is dropped without asking the host.  Bounced
 * buffers in flight keep their slots, so that an unmap still copies back
 * what the device wrote before it vanished.  Said once.  ad->lock held.
 */
void ad_mark_gone(struct apple_dma *ad, const char *how)
{
	u64 before = ad->live_mappings;

	lockdep_assert_held(&ad->lock);
	if (ad->gone)
		return;
	WRITE_ONCE(ad->gone, true);
	ad->reset_gen++;	/* addresses handed out in the middle of a map are dead */
	ad_forget_all(ad, true);
	ad->stats.gone_dropped = before - ad->live_mappings;
	dev_err(ad->dev,
		"the companion is gone (%s: surprise removal or a dead host function): every DMA mapping of 0000:%02x:%02x.%d fails from now on; %llu mappings dropped without the host\n",
		how, ad->managed_bdf >> 8, PCI_SLOT(ad->managed_bdf), PCI_FUNC(ad->managed_bdf),
		ad->stats.gone_dropped);
}

/* Point the device at the command page (0: at nothing) and say what we use. */
void ad_set_cmd(struct apple_dma *ad, u64 gpa)
{
	unsigned long flags;

	spin_lock_irqsave(&ad->cmd_lock, flags);
	if (ad->fake) {
		ad_fake_set_cmd(ad, gpa);
	} else {
		writel(lower_32_bits(gpa), ad->regs + AD_REG_CMD_GPA_LO);
		writel(upper_32_bits(gpa), ad->regs + AD_REG_CMD_GPA_HI);
		if (ad->features)
			writel(gpa ? ad->guest_features : 0, ad->regs + AD_REG_GUEST_FEATURES);
	}
	spin_unlock_irqrestore(&ad->cmd_lock, flags);
}

/* LIVE_MAPPINGS (version 3 BUDGET), or 0 when the device does not say. */
u32 ad_device_live_mappings(struct apple_dma *ad)
{
	if (!(ad->features & AD_FEAT_BUDGET))
		return 0;
	return ad->fake ? ad_fake_live(ad) : readl(ad->regs + AD_REG_LIVE_MAPPINGS);
}

/*
 * Ring one command and return the device's STATUS, or AD_ST_RESET when the
 * device had lost the command page (a companion reset): then every host
 * mapping is gone and ad_recover() has dropped this instance's state.
 * Caller holds ad->lock; the command page has its own lock inside it.
 */
u32 ad_doorbell(struct apple_dma *ad, u32 type, u32 count)
{
	u32 status;
	unsigned int bucket;

	lockdep_assert_held(&ad->lock);
	if (ad->gone)
		return AD_ST_GONE;
	if (ad->broken)
		return AD_ST_INVAL;
	spin_lock(&ad->cmd_lock);
	ad->cmd->type = cpu_to_le32(type);
	ad->cmd->count = cpu_to_le32(count);
	ad->cmd->status = cpu_to_le32(U32_MAX);
	ad->cmd->reserved = 0;
	ad->cmd->req_gpa = cpu_to_le64(ad->req_gpa);
	ad->cmd->resp_gpa = cpu_to_le64(ad->resp_gpa);
	if (ad->fake) {
		status = ad_fake_ring(ad);
	} else {
		/* writel() orders the stores above before the doorbell. */
		writel(1, ad->regs + AD_REG_DOORBELL);
		/*
		 * The doorbell write may be posted: only this read, answered
		 * after every earlier write, says the batch is done.
		 */
		status = readl(ad->regs + AD_REG_STATUS);
	}
	spin_unlock(&ad->cmd_lock);

	ad->stats.doorbells++;
	bucket = count ? min_t(unsigned int, ilog2(count), AD_HIST_BUCKETS - 1) : 0;
	ad->stats.entries_hist[bucket]++;
	ad->stats.max_doorbell_entries = max_t(u64, ad->stats.max_doorbell_entries, count);
	if (status == AD_ST_OK || status == AD_ST_IOERR)
		return status;
	ad->stats.doorbell_errors++;
	/*
	 * A vanished device reads all-ones: nothing it answered counts, and
	 * ringing again would not help.  (Checked before INVAL, whose restore
	 * path reads LIVE_MAPPINGS, all-ones too.)
	 */
	if (ad_gone(ad)) {
		ad_mark_gone(ad, status == U32_MAX ? "STATUS reads all-ones" :
				 "VERSION reads all-ones");
		return AD_ST_GONE;
	}
	if (status == AD_ST_INVAL) {
		/*
		 * This driver only sends well-formed commands: INVAL means the
		 * device no longer has our command page.  If it still holds our
		 * mappings (version 3 tells), only the page was lost: restore
		 * it and ring again.  Otherwise it was reset, which drops every
		 * mapping: forget them all and start over.
		 */
		if (!ad->restoring && ad_device_live_mappings(ad) > 0) {
			ad->stats.cmd_restores++;
			dev_warn_ratelimited(ad->dev, "the companion lost the command page; restoring it\n");
			ad_set_cmd(ad, ad->cmd_gpa);
			ad->restoring = true;
			status = ad_doorbell(ad, type, count);
			ad->restoring = false;
			return status;
		}
		dev_warn_ratelimited(ad->dev,
				     "doorbell type %u count %u: command page rejected; the companion was reset, dropping every mapping\n",
				     type, count);
		ad_recover(ad);
		return AD_ST_RESET;
	}
	dev_err_ratelimited(ad->dev, "doorbell type %u count %u: device status %#x\n",
			    type, count, status);
	return status;
}
