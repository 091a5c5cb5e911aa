// SPDX-License-Identifier: GPL-2.0
/* apple_dma: statistics in debugfs. */

#include "apple_dma.h"

/* ---- statistics ---------------------------------------------------------- */

static int ad_stats_show(struct seq_file *m, void *unused)
{
	struct apple_dma *ad = m->private;
	struct ad_pcpu_stats p = { };
	struct ad_stats s;
	u64 live_bytes, live_mappings, idle = 0, stuck = 0, entries;
	struct ad_window *w;
	unsigned long flags;
	unsigned int i;
	int cpu;

	for_each_possible_cpu(cpu) {
		struct ad_pcpu_stats *c = per_cpu_ptr(ad->pstats, cpu);

		p.map_calls += READ_ONCE(c->map_calls);
		p.sg_calls += READ_ONCE(c->sg_calls);
		p.unmap_calls += READ_ONCE(c->unmap_calls);
		p.cache_hits += READ_ONCE(c->cache_hits);
		p.bounce_maps += READ_ONCE(c->bounce_maps);
		p.bounce_bytes += READ_ONCE(c->bounce_bytes);
		p.failures += READ_ONCE(c->failures);
		p.unknown_unmaps += READ_ONCE(c->unknown_unmaps);
	}
	spin_lock_irqsave(&ad->lock, flags);
	s = ad->stats;
	live_bytes = ad->live_bytes;
	live_mappings = ad->live_mappings;
	list_for_each_entry(w, &ad->live_list, link)
		if (ad_win_idle(w))
			idle++;
	list_for_each_entry(w, &ad->stuck_list, link)
		stuck++;
	spin_unlock_irqrestore(&ad->lock, flags);

	entries = s.map_entries + s.unmap_entries;
	mutex_lock(&ad_instances_lock);
	seq_printf(m, "managed %s\n", ad->managed ? pci_name(ad->managed) : "-");
	mutex_unlock(&ad_instances_lock);
	seq_printf(m, "features %#x\n", ad->features);
	seq_printf(m, "guest_features %#x\n", ad->guest_features);
	seq_printf(m, "max_entries %u\n", ad->max_entries);
	seq_printf(m, "batch_max %u\n", ad->batch_max);
	seq_printf(m, "window_bytes %llu\n", ad->window);
	seq_printf(m, "granule_bytes %llu\n", ad->granule);
	seq_printf(m, "budget_bytes %llu\n", ad->budget_bytes);
	seq_printf(m, "budget_mappings %llu\n", ad->budget_mappings);
	seq_printf(m, "doorbells %llu\n", s.doorbells);
	seq_printf(m, "doorbell_errors %llu\n", s.doorbell_errors);
	seq_printf(m, "map_entries %llu\n", s.map_entries);
	seq_printf(m, "unmap_entries %llu\n", s.unmap_entries);
	seq_printf(m, "entries_per_doorbell_x100 %llu\n",
		   s.doorbells ? div64_u64(entries * 100, s.doorbells) : 0);
	seq_puts(m, "entries_hist");
	for (i = 0; i < AD_HIST_BUCKETS; i++)
		seq_printf(m, " %llu", s.entries_hist[i]);
	seq_puts(m, "\n");
	seq_printf(m, "map_calls %llu\n", p.map_calls);
	seq_printf(m, "sg_calls %llu\n", p.sg_calls);
	seq_printf(m, "unmap_calls %llu\n", p.unmap_calls);
	seq_printf(m, "cache_hits %llu\n", s.cache_hits + p.cache_hits);
	seq_printf(m, "cache_misses %llu\n", s.cache_misses);
	seq_printf(m, "map_refused %llu\n", s.map_refused);
	seq_printf(m, "evictions %llu\n", s.evictions);
	seq_printf(m, "live_mappings %llu\n", live_mappings);
	seq_printf(m, "live_bytes %llu\n", live_bytes);
	seq_printf(m, "idle_mappings %llu\n", idle);
	seq_printf(m, "peak_live_mappings %llu\n", s.peak_live_mappings);
	seq_printf(m, "peak_live_bytes %llu\n", s.peak_live_bytes);
	seq_printf(m, "bounce_maps %llu\n", p.bounce_maps);
	seq_printf(m, "bounce_bytes %llu\n", p.bounce_bytes);
	seq_printf(m, "failures %llu\n", p.failures);
	seq_printf(m, "unknown_unmaps %llu\n", p.unknown_unmaps);
	seq_printf(m, "unmap_errors %llu\n", s.unmap_errors);
	seq_printf(m, "selftest %s\n", ad->selftest_result);
	/* What the device says this companion holds (version 3; 0 otherwise). */
	if ((ad->features & AD_FEAT_BUDGET) && !READ_ONCE(ad->gone)) {
		seq_printf(m, "device_live_mappings %u\n",
			   readl(ad->regs + AD_REG_LIVE_MAPPINGS));
		seq_printf(m, "device_live_bytes %llu\n",
			   readl(ad->regs + AD_REG_LIVE_BYTES_LO) |
			   (u64)readl(ad->regs + AD_REG_LIVE_BYTES_HI) << 32);
	} else {
		seq_puts(m, "device_live_mappings 0\ndevice_live_bytes 0\n");
	}
	seq_printf(m, "mode %s\n", ad->strict ? "strict" : "lazy");
	seq_printf(m, "idle_ms %llu\n", ad->strict ? 0 : div_u64(ad->idle_ns, NSEC_PER_MSEC));
	seq_printf(m, "max_doorbell_entries %llu\n", s.max_doorbell_entries);
	seq_printf(m, "max_resolve_doorbells %llu\n", s.max_resolve_doorbells);
	seq_printf(m, "slow_paths %llu\n", s.slow_paths);
	seq_printf(m, "mask_misses %llu\n", s.mask_misses);
	seq_printf(m, "bad_bus %llu\n", s.bad_bus);
	seq_printf(m, "resets %llu\n", s.resets);
	seq_printf(m, "reset_lost %llu\n", s.reset_lost);
	seq_printf(m, "cmd_restores %llu\n", s.cmd_restores);
	seq_printf(m, "stuck_mappings %llu\n", stuck);
	seq_printf(m, "idle_releases %llu\n", s.idle_releases);
	seq_printf(m, "strict_releases %llu\n", s.strict_releases);
	seq_printf(m, "idle_release_max_us %llu\n", div_u64(s.idle_release_max_ns, NSEC_PER_USEC));
	seq_printf(m, "private_unmaps %llu\n", s.private_unmaps);
	seq_printf(m, "pool_bus %#llx\n", (u64)ad->bounce_bus);
	seq_printf(m, "gone %d\n", READ_ONCE(ad->gone));
	seq_printf(m, "gone_dropped %llu\n", s.gone_dropped);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(ad_stats);

/* The companion's directory and its stats file. */
void ad_debugfs_add(struct apple_dma *ad)
{
	ad->debugfs = debugfs_create_dir(pci_name(ad->pdev), ad_debugfs_root);
	debugfs_create_file("stats", 0444, ad->debugfs, ad, &ad_stats_fops);
}
