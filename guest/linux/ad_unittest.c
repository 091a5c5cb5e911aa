// SPDX-License-Identifier: GPL-2.0
/* apple_dma: unit tests against a fake doorbell. */

#include "apple_dma.h"

/* ---- unit tests against a fake doorbell ---------------------------------- */

/*
 * A private instance whose doorbell is answered by this code instead of the
 * companion: it maps with a bump allocator (or identity), and can refuse
 * long maps, all maps or unmaps, misalign bus addresses, or lose the
 * command page as a reset does.  The guest addresses are never touched
 * (except for bounces, which use real pages), so any range can be mapped.
 */
#define AD_FAKE_MAPS	128

struct ad_fake {
	u64 next_bus;
	bool identity;
	u64 refuse_over;	/* refuse MAP entries longer than this (0: none) */
	bool refuse_maps;
	u64 misalign;
	u32 refuse_unmaps;	/* refuse this many UNMAP entries */
	bool dead;		/* vanished: every register reads all-ones */
	u32 rings;		/* doorbells that reached the fake */
	bool cmd_set;
	u64 next_id;
	u32 live;
	struct {
		u64 id, gpa, len, bus;
		bool live;
	} maps[AD_FAKE_MAPS];
	struct device dev;
	u64 mask;
	struct apple_dma *ad;
};

u32 ad_fake_live(struct apple_dma *ad)
{
	return ad->fake->dead ? U32_MAX : ad->fake->live;
}

u32 ad_fake_version(struct apple_dma *ad)
{
	return ad->fake->dead ? U32_MAX : AD_PROTOCOL_VERSION;
}

void ad_fake_set_cmd(struct apple_dma *ad, u64 gpa)
{
	ad->fake->cmd_set = gpa != 0;
}

/* A reset: the command page and every mapping are gone. */
static void ad_fake_reset(struct ad_fake *f)
{
	memset(f->maps, 0, sizeof(f->maps));
	f->live = 0;
	f->cmd_set = false;
}

u32 ad_fake_ring(struct apple_dma *ad)
{
	struct ad_fake *f = ad->fake;
	u32 type = le32_to_cpu(ad->cmd->type), count = le32_to_cpu(ad->cmd->count);
	u32 i, k, batch = AD_ST_OK;

	f->rings++;
	if (f->dead)
		return U32_MAX;	/* a missing device: writes dropped, reads all-ones */
	if (!f->cmd_set)
		return AD_ST_INVAL;
	if (type == AD_CMD_UNMAP_ALL) {
		ad_fake_reset(f);
		f->cmd_set = true;
		return AD_ST_OK;
	}
	for (i = 0; i < count; i++) {
		if (type == AD_CMD_MAP) {
			struct ad_map_req *q = (struct ad_map_req *)ad->req + i;
			struct ad_map_resp *s = (struct ad_map_resp *)ad->resp + i;
			u64 len = le32_to_cpu(q->len), gpa = le64_to_cpu(q->gpa);

			memset(s, 0, sizeof(*s));
			for (k = 0; k < AD_FAKE_MAPS && f->maps[k].live; k++)
				;
			if (f->refuse_maps || (f->refuse_over && len > f->refuse_over) ||
			    k == AD_FAKE_MAPS) {
				s->status = cpu_to_le32(AD_ST_IOERR);
				batch = AD_ST_IOERR;
				continue;
			}
			f->maps[k].live = true;
			f->maps[k].id = ++f->next_id;
			f->maps[k].gpa = gpa;
			f->maps[k].len = len;
			if (f->identity) {
				f->maps[k].bus = gpa;
			} else {
				f->maps[k].bus = f->next_bus + f->misalign;
				f->next_bus += ALIGN(len, SZ_16K) + SZ_16K;
			}
			f->live++;
			s->id = cpu_to_le64(f->maps[k].id);
			s->dma_addr = cpu_to_le64(f->maps[k].bus);
			s->dma_len = cpu_to_le32(len);
		} else {
			struct ad_unmap_req *q = (struct ad_unmap_req *)ad->req + i;
			struct ad_unmap_resp *s = (struct ad_unmap_resp *)ad->resp + i;
			u64 id = le64_to_cpu(q->id);

			s->id = q->id;
			s->status = cpu_to_le32(AD_ST_IOERR);
			for (k = 0; k < AD_FAKE_MAPS; k++)
				if (f->maps[k].live && f->maps[k].id == id)
					break;
			if (k == AD_FAKE_MAPS || f->refuse_unmaps) {
				if (f->refuse_unmaps)
					f->refuse_unmaps--;
				batch = AD_ST_IOERR;
				continue;
			}
			f->maps[k].live = false;
			f->live--;
			s->status = cpu_to_le32(AD_ST_OK);
		}
	}
	return batch;
}

/* Does the fake host map the bus range [bus, bus + len) for gpa? */
static bool ad_fake_maps(struct ad_fake *f, u64 bus, u64 len, u64 gpa)
{
	u32 k;

	for (k = 0; k < AD_FAKE_MAPS; k++)
		if (f->maps[k].live && bus >= f->maps[k].bus &&
		    bus + len <= f->maps[k].bus + f->maps[k].len &&
		    gpa - f->maps[k].gpa == bus - f->maps[k].bus)
			return true;
	return false;
}

struct ad_fake_cfg {
	bool strict;
	bool identity;
	u64 budget_bytes;
	u32 windows;
	u64 pool_bus;		/* the pool (mapped first) gets this bus address */
	u64 next_bus;		/* later mappings from here */
};

static void ad_fake_destroy(struct ad_fake *f)
{
	struct apple_dma *ad = f->ad;

	if (ad) {
		ad_release_all(ad);
		ad_teardown(ad, true);
	}
	kfree(f);
}

static struct ad_fake *ad_fake_create(const struct ad_fake_cfg *cfg)
{
	struct ad_fake *f = kzalloc(sizeof(*f), GFP_KERNEL);
	struct apple_dma *ad;

	if (!f)
		return NULL;
	f->dev.init_name = "apple_dma-unittest";
	f->mask = DMA_BIT_MASK(64);
	f->dev.dma_mask = &f->mask;
	f->dev.coherent_dma_mask = DMA_BIT_MASK(64);
	f->identity = cfg->identity;
	f->next_bus = cfg->pool_bus ? cfg->pool_bus : SZ_1G;
	f->cmd_set = false;
	ad = ad_new_instance(&f->dev, cfg->strict);
	if (!ad)
		goto fail;
	f->ad = ad;
	ad->fake = f;
	ad->max_entries = 64;
	ad->features = AD_FEAT_UNIQUE_IDS | AD_FEAT_BUDGET;
	ad->guest_features = ad->features;
	ad->granule = SZ_16K;
	ad->window = cfg->strict ? SZ_16K : SZ_2M;
	ad->budget_bytes = cfg->budget_bytes ? cfg->budget_bytes : SZ_1G;
	ad->budget_mappings = cfg->windows ? cfg->windows : 32;
	ad->idle_ns = 3 * NSEC_PER_MSEC;
	ad->idle_delay = cfg->strict ? 1 : max(1UL, msecs_to_jiffies(3));
	if (ad_alloc_state(ad))
		goto fail;
	ad_set_cmd(ad, ad->cmd_gpa);
	if (ad_setup_bounce(ad))
		goto fail;
	if (cfg->next_bus)
		f->next_bus = cfg->next_bus;
	set_dma_ops(&f->dev, &ad->ops);
	WRITE_ONCE(ad->idle_work_ready, true);
	return f;
fail:
	ad_fake_destroy(f);
	return NULL;
}

static dma_addr_t ad_t_map(struct ad_fake *f, u64 gpa, u64 len)
{
	return ad_map_one(&f->dev, gpa, len, DMA_BIDIRECTIONAL, true, AD_KIND_SHARED,
			  ad_mask_limit(&f->dev, false));
}

static void ad_t_unmap(struct ad_fake *f, dma_addr_t bus, u64 len)
{
	ad_unmap_bus(f->ad, bus, len, false);
}

/* A page of real memory (for bounces), aligned to 2 MiB + @off inside a block. */
#define AD_T_GPA	(SZ_1G * 3ULL)

/* Room failure (window larger than the budget) goes to EXACT, not to the pool. */
static const char *ad_t_ladder_room(void)
{
	struct ad_fake_cfg cfg = { .budget_bytes = SZ_1M + SZ_64K };
	struct ad_fake *f = ad_fake_create(&cfg);
	dma_addr_t bus;
	const char *r = NULL;

	if (!f)
		return "ladder_room_setup";
	bus = ad_t_map(f, AD_T_GPA + SZ_4K, SZ_4K);
	if (bus == DMA_MAPPING_ERROR || ad_is_bounce(f->ad, bus))
		r = "ladder_room_bounced";
	else if (!ad_fake_maps(f, bus, SZ_4K, AD_T_GPA + SZ_4K))
		r = "ladder_room_unmapped";
	ad_fake_destroy(f);
	return r;
}

/* A refused window is retried exact (one granule), then works. */
static const char *ad_t_ladder_refused(void)
{
	struct ad_fake_cfg cfg = { };
	struct ad_fake *f = ad_fake_create(&cfg);
	dma_addr_t bus;
	const char *r = NULL;

	if (!f)
		return "ladder_refused_setup";
	f->refuse_over = SZ_16K;
	bus = ad_t_map(f, AD_T_GPA + SZ_4K, SZ_4K);
	if (bus == DMA_MAPPING_ERROR || ad_is_bounce(f->ad, bus) ||
	    !ad_fake_maps(f, bus, SZ_4K, AD_T_GPA + SZ_4K))
		r = "ladder_refused_not_exact";
	ad_fake_destroy(f);
	return r;
}

/*
 * A window outside the mask is evicted, the exact retry misses too, the
 * buffer bounces through the (low) pool: it works, every time, no loop.
 */
static const char *ad_t_mask_miss(void)
{
	struct ad_fake_cfg cfg = { .pool_bus = SZ_256M, .next_bus = SZ_16G };
	struct ad_fake *f = ad_fake_create(&cfg);
	struct page *page = alloc_page(GFP_KERNEL);
	const char *r = NULL;
	dma_addr_t bus;
	u64 before;
	int i;

	if (!f || !page) {
		r = "mask_setup";
		goto out;
	}
	bus = ad_t_map(f, page_to_phys(page), SZ_4K);	/* caches a high window */
	ad_t_unmap(f, bus, SZ_4K);
	if (!ad_dma_supported(&f->dev, DMA_BIT_MASK(32))) {
		r = "mask_pool_fits_but_refused";
		goto out;
	}
	f->mask = DMA_BIT_MASK(32);
	for (i = 0; i < 2 && !r; i++) {
		before = f->ad->stats.doorbells;
		bus = ad_t_map(f, page_to_phys(page), SZ_4K);
		if (bus == DMA_MAPPING_ERROR || bus + SZ_4K - 1 > DMA_BIT_MASK(32))
			r = "mask_miss_failed";
		else if (f->ad->stats.doorbells - before > 4)
			r = "mask_miss_doorbells";
		else
			ad_t_unmap(f, bus, SZ_4K);
	}
	if (!r && f->ad->stats.mask_misses == 0)
		r = "mask_miss_not_counted";
out:
	if (page)
		__free_page(page);
	if (f)
		ad_fake_destroy(f);
	return r;
}

/* A mask the pool does not fit is refused; the required mask is 64 bits. */
static const char *ad_t_mask_refuse(void)
{
	struct ad_fake_cfg cfg = { .pool_bus = SZ_16G };
	struct ad_fake *f = ad_fake_create(&cfg);
	const char *r = NULL;

	if (!f)
		return "mask_refuse_setup";
	if (ad_dma_supported(&f->dev, DMA_BIT_MASK(32)))
		r = "mask_refuse_accepted_32";
	else if (!ad_dma_supported(&f->dev, DMA_BIT_MASK(64)))
		r = "mask_refuse_refused_64";
	else if (ad_get_required_mask(&f->dev) != DMA_BIT_MASK(64))
		r = "mask_required";
	ad_fake_destroy(f);
	return r;
}

/* A bus address whose granule offset differs from the guest's is refused. */
static const char *ad_t_offset(void)
{
	struct ad_fake_cfg cfg = { };
	struct ad_fake *f = ad_fake_create(&cfg);
	struct page *page = alloc_page(GFP_KERNEL);
	const char *r = NULL;
	dma_addr_t bus;

	if (!f || !page) {
		r = "offset_setup";
		goto out;
	}
	f->misalign = SZ_4K;
	bus = ad_t_map(f, page_to_phys(page), SZ_4K);
	if (bus == DMA_MAPPING_ERROR)
		r = "offset_failed";
	else if (!ad_is_bounce(f->ad, bus))
		r = "offset_misaligned_used";
	else
		ad_t_unmap(f, bus, SZ_4K);
	if (!r && f->ad->stats.bad_bus == 0)
		r = "offset_not_counted";
out:
	if (page)
		__free_page(page);
	if (f)
		ad_fake_destroy(f);
	return r;
}

/*
 * Identity mode: a buffer D mapped through an exact window E that crosses
 * a window boundary, then a window W over D's part goes live; unmapping D
 * must drop E's user, not W's.
 */
static const char *ad_t_alias(void)
{
	struct ad_fake_cfg cfg = { .identity = true };
	struct ad_fake *f = ad_fake_create(&cfg);
	u64 base = AD_T_GPA + SZ_2M;	/* a window boundary */
	dma_addr_t c, d, fb;
	struct ad_window *e, *w;
	const char *r = NULL;

	if (!f)
		return "alias_setup";
	c = ad_t_map(f, base - SZ_4K, SZ_8K);		/* E: [base - 16K, base + 16K) */
	d = ad_t_map(f, base - SZ_8K, SZ_4K);		/* inside E and inside W */
	fb = ad_t_map(f, base - SZ_1M, SZ_4K);		/* W: [base - 2M, base) */
	if (c == DMA_MAPPING_ERROR || d == DMA_MAPPING_ERROR || fb == DMA_MAPPING_ERROR) {
		r = "alias_map";
		goto out;
	}
	ad_t_unmap(f, d, SZ_4K);
	e = ad_lookup_bus(f->ad, c, SZ_8K, true);
	w = ad_lookup_bus(f->ad, fb, SZ_4K, true);
	if (!e || !w || e == w)
		r = "alias_lookup";
	else if (atomic_read(&e->refs) != 1 || atomic_read(&w->refs) != 1)
		r = "alias_wrong_window_dropped";
	ad_t_unmap(f, c, SZ_8K);
	ad_t_unmap(f, fb, SZ_4K);
out:
	ad_fake_destroy(f);
	return r;
}

/* A refused UNMAP keeps the mapping counted and is retried until it works. */
static const char *ad_t_unmap_refused(void)
{
	struct ad_fake_cfg cfg = { };
	struct ad_fake *f = ad_fake_create(&cfg);
	const char *r = NULL;
	dma_addr_t bus;
	u64 live;
	int i;

	if (!f)
		return "unmap_refused_setup";
	bus = ad_t_map(f, AD_T_GPA, SZ_4K);
	ad_t_unmap(f, bus, SZ_4K);
	live = f->ad->live_mappings;
	f->refuse_unmaps = 1;
	for (i = 0; i < 100 && f->live == live; i++)
		usleep_range(5000, 6000);
	/* Refused once, then retried: the host holds only the pool again. */
	if (f->ad->stats.unmap_errors != 1)
		r = "unmap_refused_not_seen";
	else if (f->live != 1 || f->ad->live_mappings != 1)
		r = "unmap_refused_forgotten_or_kept";
	ad_fake_destroy(f);
	return r;
}

/* A reset: maps go on, with new (live) bus addresses, the pool mapped again. */
static const char *ad_t_reset(void)
{
	struct ad_fake_cfg cfg = { };
	struct ad_fake *f = ad_fake_create(&cfg);
	struct page *page = alloc_page(GFP_KERNEL);
	const char *r = NULL;
	dma_addr_t a, b;

	if (!f || !page) {
		r = "reset_setup";
		goto out;
	}
	a = ad_t_map(f, AD_T_GPA, SZ_4K);
	ad_t_unmap(f, a, SZ_4K);
	ad_fake_reset(f);
	b = ad_t_map(f, AD_T_GPA + SZ_4M, SZ_4K);
	if (b == DMA_MAPPING_ERROR || !ad_fake_maps(f, b, SZ_4K, AD_T_GPA + SZ_4M))
		r = "reset_map_dead";
	else if (f->ad->stats.resets != 1)
		r = "reset_not_seen";
	ad_t_unmap(f, b, SZ_4K);
	/* The old window is gone: mapping its range again rings the doorbell. */
	b = ad_t_map(f, AD_T_GPA, SZ_4K);
	if (!r && (b == DMA_MAPPING_ERROR || !ad_fake_maps(f, b, SZ_4K, AD_T_GPA)))
		r = "reset_stale_window";
	ad_t_unmap(f, b, SZ_4K);
	if (!r) {
		f->refuse_maps = true;	/* a bounce must use the re-mapped pool */
		b = ad_t_map(f, page_to_phys(page), SZ_4K);
		if (b == DMA_MAPPING_ERROR || !ad_is_bounce(f->ad, b) ||
		    !ad_fake_maps(f, f->ad->bounce_bus, f->ad->bounce_len,
				  page_to_phys(f->ad->bounce_page)))
			r = "reset_pool_dead";
		else
			ad_t_unmap(f, b, SZ_4K);
	}
out:
	if (page)
		__free_page(page);
	if (f)
		ad_fake_destroy(f);
	return r;
}

/* A reset the kernel reports (reset_done): no cache hit returns a dead address. */
static const char *ad_t_reset_done(void)
{
	struct ad_fake_cfg cfg = { };
	struct ad_fake *f = ad_fake_create(&cfg);
	const char *r = NULL;
	dma_addr_t a, b;
	u64 before;

	if (!f)
		return "reset_done_setup";
	a = ad_t_map(f, AD_T_GPA, SZ_4K);
	ad_t_unmap(f, a, SZ_4K);	/* cached, idle */
	ad_fake_reset(f);
	ad_reset_notify(f->ad);
	before = f->ad->stats.doorbells;
	b = ad_t_map(f, AD_T_GPA, SZ_4K);
	if (b == DMA_MAPPING_ERROR || !ad_fake_maps(f, b, SZ_4K, AD_T_GPA))
		r = "reset_done_dead_address";
	else if (f->ad->stats.doorbells == before)
		r = "reset_done_cache_kept";
	ad_t_unmap(f, b, SZ_4K);
	ad_fake_destroy(f);
	return r;
}

/* Only the command page lost (the host kept our mappings): restore it, keep the cache. */
static const char *ad_t_lost_page(void)
{
	struct ad_fake_cfg cfg = { };
	struct ad_fake *f = ad_fake_create(&cfg);
	const char *r = NULL;
	dma_addr_t a, b;

	if (!f)
		return "lost_page_setup";
	a = ad_t_map(f, AD_T_GPA, SZ_4K);
	f->cmd_set = false;
	b = ad_t_map(f, AD_T_GPA + SZ_4M, SZ_4K);
	if (a == DMA_MAPPING_ERROR || b == DMA_MAPPING_ERROR ||
	    !ad_fake_maps(f, b, SZ_4K, AD_T_GPA + SZ_4M) || !ad_fake_maps(f, a, SZ_4K, AD_T_GPA))
		r = "lost_page_map";
	else if (f->ad->stats.cmd_restores != 1 || f->ad->stats.resets)
		r = "lost_page_not_restored";
	ad_t_unmap(f, a, SZ_4K);
	ad_t_unmap(f, b, SZ_4K);
	ad_fake_destroy(f);
	return r;
}

/* Strict: a 4 KiB buffer bounces (no doorbell); a granule buffer is unmapped soon. */
static const char *ad_t_strict(void)
{
	struct ad_fake_cfg cfg = { .strict = true };
	struct ad_fake *f = ad_fake_create(&cfg);
	struct page *page = alloc_page(GFP_KERNEL);
	const char *r = NULL;
	dma_addr_t bus;
	u64 before;
	int i;

	if (!f || !page) {
		r = "strict_setup";
		goto out;
	}
	before = f->ad->stats.doorbells;
	bus = ad_t_map(f, page_to_phys(page), SZ_4K);
	if (bus == DMA_MAPPING_ERROR || !ad_is_bounce(f->ad, bus) ||
	    f->ad->stats.doorbells != before) {
		r = "strict_subgranule_mapped";
		goto out;
	}
	ad_t_unmap(f, bus, SZ_4K);
	bus = ad_t_map(f, AD_T_GPA, SZ_16K);
	if (bus == DMA_MAPPING_ERROR || ad_is_bounce(f->ad, bus) || f->live != 2) {
		r = "strict_granule";
		goto out;
	}
	ad_t_unmap(f, bus, SZ_16K);
	for (i = 0; i < 50 && f->live != 1; i++)
		usleep_range(1000, 2000);
	/* How late is measured (idle_release_max_us), not asserted: TCG stalls. */
	if (f->live != 1)
		r = "strict_not_unmapped";
out:
	if (page)
		__free_page(page);
	if (f)
		ad_fake_destroy(f);
	return r;
}

/* Lazy: an idle window goes after idle_ms; coherent memory is unmapped at free. */
static const char *ad_t_lazy(void)
{
	struct ad_fake_cfg cfg = { };
	struct ad_fake *f = ad_fake_create(&cfg);
	const char *r = NULL;
	dma_addr_t bus;
	void *cpu;
	int i;

	if (!f)
		return "lazy_setup";
	bus = ad_t_map(f, AD_T_GPA, SZ_4K);
	ad_t_unmap(f, bus, SZ_4K);
	if (f->live != 2) {
		r = "lazy_not_cached";
		goto out;
	}
	for (i = 0; i < 100 && f->live != 1; i++)
		usleep_range(1000, 2000);
	if (f->live != 1) {
		r = "lazy_idle_kept";
		goto out;
	}
	cpu = ad_alloc(&f->dev, SZ_4K, &bus, GFP_KERNEL, 0);
	if (!cpu || f->live != 2) {
		r = "lazy_coherent";
		goto out;
	}
	ad_free(&f->dev, SZ_4K, cpu, bus, 0);
	if (f->live != 1)
		r = "lazy_freed_still_mapped";
out:
	ad_fake_destroy(f);
	return r;
}

/* MMIO fails without a doorbell; max_mapping_size can really be mapped. */
static const char *ad_t_mmio_max(void)
{
	struct ad_fake_cfg cfg = { };
	struct ad_fake *f = ad_fake_create(&cfg);
	const char *r = NULL;
	size_t max;
	dma_addr_t bus;
	u64 before;

	if (!f)
		return "mmio_setup";
	before = f->ad->stats.doorbells;
#ifdef AD_HAVE_MAP_PHYS	/* Kbuild compile probe */
	bus = f->ad->ops.map_phys(&f->dev, 0xfe000000, SZ_4K, DMA_BIDIRECTIONAL, DMA_ATTR_MMIO);
#else
	bus = f->ad->ops.map_resource(&f->dev, 0xfe000000, SZ_4K, DMA_BIDIRECTIONAL, 0);
#endif
	if (bus != DMA_MAPPING_ERROR || f->ad->stats.doorbells != before) {
		r = "mmio_not_fast";
		goto out;
	}
	max = ad_max_mapping_size(&f->dev);
	bus = ad_t_map(f, AD_T_GPA + SZ_16K - SZ_4K, max);
	if (bus == DMA_MAPPING_ERROR)
		r = "max_mapping_size_lies";
	else
		ad_t_unmap(f, bus, max);
out:
	ad_fake_destroy(f);
	return r;
}

/* A cache hit takes no lock; a doorbell carries at most batch_max entries. */
static const char *ad_t_lockless(void)
{
	struct ad_fake_cfg cfg = { .windows = 256 };
	struct ad_fake *f = ad_fake_create(&cfg);
	struct scatterlist *sgl;
	const char *r = NULL;
	dma_addr_t bus;
	u64 slow;
	int i, n = 80;

	if (!f)
		return "lockless_setup";
	bus = ad_t_map(f, AD_T_GPA, SZ_4K);
	slow = f->ad->stats.slow_paths;
	bus = ad_t_map(f, AD_T_GPA + SZ_8K, SZ_4K);
	if (bus == DMA_MAPPING_ERROR || f->ad->stats.slow_paths != slow) {
		r = "lockless_hit_took_lock";
		goto out;
	}
	sgl = kcalloc(n, sizeof(*sgl), GFP_KERNEL);
	if (!sgl) {
		r = "lockless_setup";
		goto out;
	}
	sg_init_table(sgl, n);
	/* 80 windows, more than batch_max; the fake never touches the pages. */
	for (i = 0; i < n; i++)
		sg_set_page(&sgl[i], pfn_to_page(PHYS_PFN(AD_T_GPA + SZ_4M * (i + 1ULL))),
			    SZ_4K, 0);
	if (ad_map_sg(&f->dev, sgl, n, DMA_BIDIRECTIONAL, 0) != n)
		r = "lockless_sg";
	else if (f->ad->stats.max_doorbell_entries > f->ad->batch_max)
		r = "lockless_doorbell_unbounded";
	else
		ad_unmap_sg(&f->dev, sgl, n, DMA_BIDIRECTIONAL, 0);
	kfree(sgl);
out:
	ad_fake_destroy(f);
	return r;
}

/*
 * One locked resolution rings a bounded number of doorbells, whatever the
 * pressure: 60 misses that need about 60 idle windows evicted cost one
 * eviction batch and one MAP, not an eviction every few misses.
 */
static const char *ad_t_hold(void)
{
	struct ad_fake_cfg cfg = { .windows = 64 };
	struct ad_fake *f = ad_fake_create(&cfg);
	struct scatterlist *sgl;
	const char *r = NULL;
	dma_addr_t bus;
	int i, n = 60;

	if (!f)
		return "hold_setup";
	WRITE_ONCE(f->ad->idle_work_ready, false);	/* idle windows stay, to be evicted */
	for (i = 0; i < n && !r; i++) {
		bus = ad_t_map(f, AD_T_GPA + SZ_4M * (i + 1ULL), SZ_4K);
		if (bus == DMA_MAPPING_ERROR)
			r = "hold_fill";
		else
			ad_t_unmap(f, bus, SZ_4K);
	}
	sgl = r ? NULL : kcalloc(n, sizeof(*sgl), GFP_KERNEL);
	if (!sgl) {
		r = r ?: "hold_setup";
		goto out;
	}
	sg_init_table(sgl, n);
	for (i = 0; i < n; i++)
		sg_set_page(&sgl[i], pfn_to_page(PHYS_PFN(AD_T_GPA + SZ_512M + SZ_4M * (i + 1ULL))),
			    SZ_4K, 0);
	f->ad->stats.max_resolve_doorbells = 0;
	if (ad_map_sg(&f->dev, sgl, n, DMA_BIDIRECTIONAL, 0) != n)
		r = "hold_sg";
	else if (f->ad->stats.evictions < n - 8)
		r = "hold_no_pressure";
	else if (f->ad->stats.max_resolve_doorbells > 2)
		r = "hold_doorbells";
	if (!r)
		ad_unmap_sg(&f->dev, sgl, n, DMA_BIDIRECTIONAL, 0);
	kfree(sgl);
out:
	ad_fake_destroy(f);
	return r;
}

/* Unknown unmaps counted so far (per CPU counters). */
static u64 ad_t_unknown(struct apple_dma *ad)
{
	u64 n = 0;
	int cpu;

	for_each_possible_cpu(cpu)
		n += per_cpu_ptr(ad->pstats, cpu)->unknown_unmaps;
	return n;
}

/*
 * Surprise removal: the companion reads all-ones (STATUS, VERSION, LIVE).
 * The first doorbell notices; from then on every map fails at once (no
 * doorbell, no bus address, no retry), cached windows are dropped without
 * the host, unmaps of what was mapped before are quiet, a bounced buffer
 * still gets back what the device wrote before it went, coherent memory
 * is freed, and remove rings nothing and keeps nothing.
 */
static const char *ad_t_gone(void)
{
	struct ad_fake_cfg cfg = { };
	struct ad_fake *f = ad_fake_create(&cfg);
	struct page *page = alloc_page(GFP_KERNEL);
	dma_addr_t busy, idle, bounced = DMA_MAPPING_ERROR, coh_bus = 0, b;
	struct scatterlist sg;
	const char *r = NULL;
	void *coh = NULL;
	u8 *buf;
	u32 rings;

	if (!f || !page) {
		r = "gone_setup";
		goto out;
	}
	buf = page_address(page);
	memset(buf, 0, PAGE_SIZE);
	busy = ad_t_map(f, AD_T_GPA, SZ_4K);			/* in use when it goes */
	idle = ad_t_map(f, AD_T_GPA + SZ_4M, SZ_4K);
	ad_t_unmap(f, idle, SZ_4K);				/* cached, idle */
	coh = ad_alloc(&f->dev, SZ_4K, &coh_bus, GFP_KERNEL, 0);
	f->refuse_maps = true;					/* this one bounces */
	bounced = ad_map_one(&f->dev, page_to_phys(page), 512, DMA_FROM_DEVICE, true,
			     AD_KIND_SHARED, U64_MAX);
	f->refuse_maps = false;
	if (busy == DMA_MAPPING_ERROR || idle == DMA_MAPPING_ERROR || !coh ||
	    bounced == DMA_MAPPING_ERROR || !ad_is_bounce(f->ad, bounced)) {
		r = "gone_setup_maps";
		goto out;
	}
	/* The device wrote into the bounce slot, then vanished. */
	memset(f->ad->bounce_va + (bounced - f->ad->bounce_bus), 0x5a, 512);
	f->dead = true;

	rings = f->rings;
	b = ad_t_map(f, AD_T_GPA + SZ_8M, SZ_4K);		/* a miss: one doorbell */
	if (b != DMA_MAPPING_ERROR)
		r = "gone_miss_handed_out";
	else if (f->rings - rings != 1)
		r = "gone_doorbell_retried";
	else if (!f->ad->gone || !f->ad->stats.gone_dropped)
		r = "gone_not_said";
	rings = f->rings;
	b = ad_t_map(f, AD_T_GPA + SZ_4M + SZ_8K, SZ_4K);	/* was a cache hit */
	if (!r && (b != DMA_MAPPING_ERROR || f->rings != rings))
		r = "gone_hit_handed_out";
	sg_init_table(&sg, 1);
	sg_set_page(&sg, page, SZ_4K, 0);
	if (!r && (ad_map_sg(&f->dev, &sg, 1, DMA_TO_DEVICE, 0) != -EIO || f->rings != rings))
		r = "gone_sg_not_eio";
	if (!r && f->ad->live_mappings)
		r = "gone_windows_kept";
	/* What the driver unmaps and frees on its way out. */
	ad_t_unmap(f, busy, SZ_4K);
	ad_unmap_bus(f->ad, bounced, 512, true);
	ad_free(&f->dev, SZ_4K, coh, coh_bus, 0);
	coh = NULL;
	if (!r && ad_t_unknown(f->ad))
		r = "gone_unmap_unknown";
	if (!r && (buf[0] != 0x5a || buf[511] != 0x5a))
		r = "gone_bounce_lost";
	if (!r && f->rings != rings)
		r = "gone_unmap_rang";
	ad_release_all(f->ad);
	if (!r && f->rings != rings)
		r = "gone_remove_rang";
	if (!r && (f->ad->live_mappings || !list_empty(&f->ad->stuck_list)))
		r = "gone_remove_kept";
out:
	if (coh)
		ad_free(&f->dev, SZ_4K, coh, coh_bus, 0);
	if (page)
		__free_page(page);
	if (f)
		ad_fake_destroy(f);
	return r;
}

/* Gone under the lazy release: its UNMAP reads all-ones; dropped, not retried. */
static const char *ad_t_gone_idle(void)
{
	struct ad_fake_cfg cfg = { };
	struct ad_fake *f = ad_fake_create(&cfg);
	const char *r = NULL;
	unsigned long flags;
	dma_addr_t bus;
	u32 rings;
	int i;

	if (!f)
		return "gone_idle_setup";
	bus = ad_t_map(f, AD_T_GPA, SZ_4K);
	ad_t_unmap(f, bus, SZ_4K);
	f->dead = true;
	rings = f->rings;
	for (i = 0; i < 100 && !READ_ONCE(f->ad->gone); i++)
		usleep_range(1000, 2000);
	msleep(20);	/* a worker that would retry has had its passes */
	spin_lock_irqsave(&f->ad->lock, flags);
	if (!f->ad->gone)
		r = "gone_idle_not_noticed";
	else if (f->ad->stats.unmap_errors || !list_empty(&f->ad->stuck_list))
		r = "gone_idle_stuck";
	else if (f->rings - rings != 1)
		r = "gone_idle_retried";
	else if (f->ad->live_mappings)
		r = "gone_idle_kept";
	spin_unlock_irqrestore(&f->ad->lock, flags);
	ad_fake_destroy(f);
	return r;
}

/*
 * Remove with live mappings (a hot-unplug whose driver left buffers
 * mapped, or a coherent buffer it never freed): everything is unmapped on
 * the host, in doorbells of at most batch_max entries; later maps fail
 * without a doorbell; a late unmap or free is harmless.
 */
static const char *ad_t_remove_live(void)
{
	struct ad_fake_cfg cfg = { .windows = 256 };
	struct ad_fake *f = ad_fake_create(&cfg);
	dma_addr_t bus[100], coh_bus = 0, b;
	const char *r = NULL;
	void *coh;
	u64 doorbells;
	u32 rings;
	int i;

	if (!f)
		return "remove_live_setup";
	for (i = 0; i < 100; i++) {
		bus[i] = ad_t_map(f, AD_T_GPA + SZ_4M * (i + 1ULL), SZ_4K);
		if (bus[i] == DMA_MAPPING_ERROR) {
			r = "remove_live_map";
			goto out;
		}
		if (i % 2)
			ad_t_unmap(f, bus[i], SZ_4K);	/* half idle, half in use */
	}
	coh = ad_alloc(&f->dev, SZ_4K, &coh_bus, GFP_KERNEL, 0);
	if (!coh || f->live < 50) {
		r = "remove_live_setup_maps";
		goto out;
	}
	f->ad->stats.max_doorbell_entries = 0;
	doorbells = f->ad->stats.doorbells;
	ad_release_all(f->ad);
	if (f->live || f->ad->live_mappings)
		r = "remove_live_left_mapped";
	else if (f->ad->stats.max_doorbell_entries > f->ad->batch_max)
		r = "remove_live_doorbell_unbounded";
	else if (f->ad->stats.doorbells - doorbells < 2)
		r = "remove_live_one_doorbell";
	rings = f->rings;
	b = ad_t_map(f, AD_T_GPA, SZ_4K);
	if (!r && (b != DMA_MAPPING_ERROR || f->rings != rings))
		r = "remove_live_maps_after";
	for (i = 0; i < 100; i += 2)
		ad_t_unmap(f, bus[i], SZ_4K);
	ad_free(&f->dev, SZ_4K, coh, coh_bus, 0);
	if (!r && f->rings != rings)
		r = "remove_live_late_unmap_rang";
out:
	ad_fake_destroy(f);
	return r;
}

/*
 * The managed function kept its driver through remove: its ops point into
 * the instance, so the instance stays (every map fails, no doorbell) and
 * the module is pinned; a late unmap is harmless.
 */
static const char *ad_t_pinned(void)
{
	struct ad_fake_cfg cfg = { };
	struct ad_fake *f = ad_fake_create(&cfg);
	const char *r = NULL;
	dma_addr_t bus, b;
	int refs;
	u32 rings;

	if (!f)
		return "pinned_setup";
	bus = ad_t_map(f, AD_T_GPA, SZ_4K);
	refs = module_refcount(THIS_MODULE);
	ad_release_all(f->ad);
	if (ad_teardown(f->ad, false)) {
		f->ad = NULL;	/* freed: the driver's ops would dangle */
		r = "pinned_freed";
		goto out;
	}
	if (module_refcount(THIS_MODULE) != refs + 1) {
		r = "pinned_module_not_pinned";
		goto out_put;
	}
	rings = f->rings;
	b = ad_t_map(f, AD_T_GPA + SZ_4M, SZ_4K);
	if (b != DMA_MAPPING_ERROR || f->rings != rings)
		r = "pinned_maps";
	ad_t_unmap(f, bus, SZ_4K);
	if (!r && f->rings != rings)
		r = "pinned_unmap_rang";
out_put:
	module_put(THIS_MODULE);	/* the test's own instance: give it back */
out:
	if (f)
		ad_fake_destroy(f);
	return r;
}

/*
 * Two companions: each instance keeps its own budget and host.  One full
 * instance bounces; the other still maps a window of its own.
 */
static const char *ad_t_two(void)
{
	struct ad_fake_cfg cfg = { .windows = 16 };
	struct ad_fake *a = ad_fake_create(&cfg), *b = ad_fake_create(&cfg);
	struct page *page = alloc_page(GFP_KERNEL);
	dma_addr_t held[15], x, y;
	const char *r = NULL;
	u32 live_a;
	int i;

	if (!a || !b || !page) {
		r = "two_setup";
		goto out;
	}
	for (i = 0; i < 15; i++) {
		held[i] = ad_t_map(a, AD_T_GPA + SZ_4M * (i + 1ULL), SZ_4K);
		if (held[i] == DMA_MAPPING_ERROR) {
			r = "two_fill";
			goto out;
		}
	}
	live_a = a->live;
	x = ad_t_map(a, page_to_phys(page), SZ_4K);
	y = ad_t_map(b, page_to_phys(page), SZ_4K);
	if (x == DMA_MAPPING_ERROR || !ad_is_bounce(a->ad, x))
		r = "two_full_not_bounced";
	else if (y == DMA_MAPPING_ERROR || ad_is_bounce(b->ad, y) ||
		 !ad_fake_maps(b, y, SZ_4K, page_to_phys(page)))
		r = "two_budget_shared";
	else if (a->live != live_a || b->live != 2 || ad_fake_maps(a, y, SZ_4K, page_to_phys(page)))
		r = "two_hosts_mixed";
	if (x != DMA_MAPPING_ERROR)
		ad_t_unmap(a, x, SZ_4K);
	if (y != DMA_MAPPING_ERROR)
		ad_t_unmap(b, y, SZ_4K);
	for (i = 0; i < 15; i++)
		ad_t_unmap(a, held[i], SZ_4K);
out:
	if (page)
		__free_page(page);
	if (a)
		ad_fake_destroy(a);
	if (b)
		ad_fake_destroy(b);
	return r;
}

/*
 * The refusal of a function that is not DMA-coherent (the module cannot
 * do cache maintenance): decided once the core configured its DMA.  Only
 * architectures with per-device coherence (arm64) can say "not coherent";
 * elsewhere every device is coherent and must be accepted.
 */
static const char *ad_t_noncoherent(void)
{
	struct ad_fake_cfg cfg = { };
	struct ad_fake *f = ad_fake_create(&cfg);
	const char *r = NULL;

	if (!f)
		return "noncoherent_setup";
#if defined(CONFIG_ARCH_HAS_SYNC_DMA_FOR_DEVICE) || defined(CONFIG_ARCH_HAS_SYNC_DMA_FOR_CPU) || \
	defined(CONFIG_ARCH_HAS_SYNC_DMA_FOR_CPU_ALL)
	f->dev.dma_coherent = false;
	if (!ad_unusable(&f->dev, true))
		r = "noncoherent_accepted";
	else if (ad_unusable(&f->dev, false))
		r = "noncoherent_refused_before_configured";
	f->dev.dma_coherent = true;
	if (!r && ad_unusable(&f->dev, true))
		r = "noncoherent_coherent_refused";
#else
	if (ad_unusable(&f->dev, true))
		r = "noncoherent_coherent_refused";
#endif
	ad_fake_destroy(f);
	return r;
}

static const struct {
	const char *name;
	const char *(*fn)(void);
} ad_unit_tests[] = {
	{ "ladder_room", ad_t_ladder_room },
	{ "ladder_refused", ad_t_ladder_refused },
	{ "mask_miss", ad_t_mask_miss },
	{ "mask_refuse", ad_t_mask_refuse },
	{ "offset", ad_t_offset },
	{ "alias", ad_t_alias },
	{ "unmap_refused", ad_t_unmap_refused },
	{ "reset", ad_t_reset },
	{ "lost_page", ad_t_lost_page },
	{ "reset_done", ad_t_reset_done },
	{ "strict", ad_t_strict },
	{ "lazy", ad_t_lazy },
	{ "mmio_max", ad_t_mmio_max },
	{ "lockless", ad_t_lockless },
	{ "hold", ad_t_hold },
	{ "gone", ad_t_gone },
	{ "gone_idle", ad_t_gone_idle },
	{ "remove_live", ad_t_remove_live },
	{ "pinned", ad_t_pinned },
	{ "two", ad_t_two },
	{ "noncoherent", ad_t_noncoherent },
};

static char ad_unit_result[256] = "off";

static int ad_unit_show(struct seq_file *m, void *unused)
{
	seq_printf(m, "%s\n", ad_unit_result);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(ad_unit);

void ad_unittest_run(void)
{
	unsigned int i, passed = 0, failed = 0;
	char fails[160] = "";
	const char *r;

	for (i = 0; i < ARRAY_SIZE(ad_unit_tests); i++) {
		r = ad_unit_tests[i].fn();
		if (r) {
			failed++;
			pr_err(AD_NAME ": unit test %s failed: %s\n", ad_unit_tests[i].name, r);
			strlcat(fails, " ", sizeof(fails));
			strlcat(fails, r, sizeof(fails));
		} else {
			passed++;
		}
	}
	snprintf(ad_unit_result, sizeof(ad_unit_result), "passed %u failed %u%s",
		 passed, failed, fails);
	pr_info(AD_NAME ": unit tests: %s\n", ad_unit_result);
	debugfs_create_file("unittest", 0444, ad_debugfs_root, NULL, &ad_unit_fops);
}
