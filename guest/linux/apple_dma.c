// SPDX-License-Identifier: GPL-2.0
/*
 * apple_dma: guest driver for the apple-dma-pci companion device (1b36:0015).
 *
 * On Apple Silicon the host platform, not the guest, chooses the bus
 * addresses a passthrough device must use.  The companion device maps
 * guest-physical ranges on request and returns those bus addresses.  This
 * module binds to each companion, finds the function it manages and gives
 * that function DMA operations which translate every buffer through the
 * companion, so that the function's ordinary driver works unchanged.
 *
 * Cost model: one doorbell is one VM exit plus a host round trip.  Buffers
 * are therefore mapped inside aligned windows that are shared, kept after
 * their last user (lazy release) and evicted least recently used when the
 * host's DMA budget runs short; a scatter-gather list costs at most one
 * doorbell.  Everything runs under one spinlock with MMIO only, so mapping
 * works in any context; when the host cannot map, a bounce pool mapped at
 * probe time takes over.  See docs/guest-module.md.
 */

#include <linux/bitmap.h>
#include <linux/debugfs.h>
#include <linux/dma-map-ops.h>
#include <linux/interval_tree_generic.h>
#include <linux/io.h>
#include <linux/list.h>
#include <linux/log2.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/scatterlist.h>
#include <linux/seq_file.h>
#include <linux/sizes.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/version.h>

#define AD_NAME "apple_dma"

/* BAR0 registers (protocol version 2, then the version 3 extension). */
#define AD_REG_VERSION		0x00
#define AD_REG_MANAGED_BDF	0x04
#define AD_REG_MAX_ENTRIES	0x08
#define AD_REG_STATUS		0x0c
#define AD_REG_CMD_GPA_LO	0x10
#define AD_REG_CMD_GPA_HI	0x14
#define AD_REG_DOORBELL		0x18
#define AD_REG_FEATURES		0x1c
#define AD_REG_DART_MAX_BYTES_LO	0x20
#define AD_REG_DART_MAX_BYTES_HI	0x24
#define AD_REG_DART_MAX_MAPPINGS	0x28
#define AD_REG_DART_GRANULE	0x2c
#define AD_REG_LIVE_BYTES_LO	0x30
#define AD_REG_LIVE_BYTES_HI	0x34
#define AD_REG_LIVE_MAPPINGS	0x38
#define AD_REG_GUEST_FEATURES	0x3c

#define AD_PROTOCOL_VERSION	2

#define AD_FEAT_BUDGET		BIT(0)
#define AD_FEAT_UNIQUE_IDS	BIT(1)
#define AD_FEAT_UNMAP_ALL	BIT(2)
#define AD_FEAT_KNOWN		(AD_FEAT_BUDGET | AD_FEAT_UNIQUE_IDS | AD_FEAT_UNMAP_ALL)

#define AD_CMD_MAP		1
#define AD_CMD_UNMAP		2
#define AD_CMD_UNMAP_ALL	3

#define AD_ST_OK		0
#define AD_ST_IOERR		1
#define AD_ST_INVAL		3

/* Published Apple DART limits, used when the device does not publish its own. */
#define AD_DEFAULT_MAX_BYTES	(3ULL * SZ_512M)
#define AD_DEFAULT_MAX_MAPPINGS	65536
#define AD_DEFAULT_GRANULE	SZ_16K

/* Largest single mapping this driver asks for (MAP's len field is 32-bit). */
#define AD_MAX_SPAN		SZ_64M
/* Idle windows evicted at once when room is needed: amortizes the doorbell. */
#define AD_EVICT_MIN		8
#define AD_HIST_BUCKETS		10

/* Largest page order alloc_pages() serves (inclusive). */
#ifdef MAX_PAGE_ORDER
#define AD_MAX_ORDER		MAX_PAGE_ORDER
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
#define AD_MAX_ORDER		MAX_ORDER
#else
#define AD_MAX_ORDER		(MAX_ORDER - 1)
#endif

/* Command page and entries: the device's layout, little-endian, packed. */
struct ad_cmd {
	__le32 type;
	__le32 count;
	__le32 status;
	__le32 reserved;
	__le64 req_gpa;
	__le64 resp_gpa;
} __packed;

struct ad_map_req {
	__le64 gpa;
	__le32 len;
	__le32 flags;
} __packed;

struct ad_map_resp {
	__le64 id;
	__le64 dma_addr;
	__le32 dma_len;
	__le32 status;
} __packed;

struct ad_unmap_req {
	__le64 id;
	__le64 size;
} __packed;

struct ad_unmap_resp {
	__le64 id;
	__le32 status;
	__le32 reserved;
} __packed;

static_assert(sizeof(struct ad_cmd) == 32);
static_assert(sizeof(struct ad_map_req) == 16);
static_assert(sizeof(struct ad_map_resp) == 24);
static_assert(sizeof(struct ad_unmap_req) == 16);
static_assert(sizeof(struct ad_unmap_resp) == 16);

static unsigned int window_kb = 2048;
module_param(window_kb, uint, 0444);
MODULE_PARM_DESC(window_kb, "Size of the shared aligned mapping windows in KiB, a power of two (default 2048)");

static unsigned int batch_cap = 512;
module_param(batch_cap, uint, 0444);
MODULE_PARM_DESC(batch_cap, "Most entries per doorbell, further capped by MAX_ENTRIES (default 512)");

static unsigned int bounce_kb = 1024;
module_param(bounce_kb, uint, 0444);
MODULE_PARM_DESC(bounce_kb, "Bounce pool mapped at probe in KiB, 0 for none (default 1024)");

static unsigned int max_windows = 8192;
module_param(max_windows, uint, 0444);
MODULE_PARM_DESC(max_windows, "Most live mappings kept per companion (default 8192)");

static bool v2_only;
module_param(v2_only, bool, 0444);
MODULE_PARM_DESC(v2_only, "Ignore the version 3 features and use only protocol version 2 (default N)");

static bool selftest;
module_param(selftest, bool, 0444);
MODULE_PARM_DESC(selftest, "At probe, check batching, atomic mapping, coherent buffers and (with max_windows <= 32) bouncing through the managed function's ops; result in debugfs (default N)");

static bool rebind = true;
module_param(rebind, bool, 0444);
MODULE_PARM_DESC(rebind, "Unbind and rebind the managed function's driver if it is already bound (default Y); N refuses to probe instead");

enum ad_win_state {
	AD_WIN_FREE,
	AD_WIN_PENDING,		/* in the batch being built */
	AD_WIN_LIVE,
	AD_WIN_FAILED,		/* the device refused it; freed after the batch */
};

/* One mapping held by the host: a guest-physical range and its bus range. */
struct ad_window {
	struct rb_node gpa_node;
	u64 gpa_start;
	u64 gpa_last;
	u64 gpa_subtree_last;
	struct rb_node bus_node;
	u64 bus_start;
	u64 bus_last;
	u64 bus_subtree_last;
	struct list_head link;	/* free list, idle LRU, or a batch */
	u64 id;
	unsigned int refs;
	u8 state;
	bool in_gpa;
	bool in_bus;
	bool pinned;		/* the bounce pool: never shared nor evicted */
};

#define AD_GPA_START(w)	((w)->gpa_start)
#define AD_GPA_LAST(w)	((w)->gpa_last)
#define AD_BUS_START(w)	((w)->bus_start)
#define AD_BUS_LAST(w)	((w)->bus_last)

INTERVAL_TREE_DEFINE(struct ad_window, gpa_node, u64, gpa_subtree_last,
		     AD_GPA_START, AD_GPA_LAST, static, ad_gpa_tree)
INTERVAL_TREE_DEFINE(struct ad_window, bus_node, u64, bus_subtree_last,
		     AD_BUS_START, AD_BUS_LAST, static, ad_bus_tree)

enum ad_level {
	AD_LVL_WINDOW,		/* the shared aligned window around the range */
	AD_LVL_EXACT,		/* just the granules of the range, after eviction */
	AD_LVL_BOUNCE,		/* a copy in the premapped pool */
	AD_LVL_FAIL,
};

/* One range to map, with its result. */
struct ad_range {
	u64 gpa;
	u64 len;
	struct ad_window *win;
	dma_addr_t bus;
	enum dma_data_direction dir;
	u8 level;
	bool done;
	bool bounced;
};

/* Per page of the bounce pool; the first page of an allocation holds it all. */
struct ad_bounce_slot {
	phys_addr_t orig;
	u32 len;
	u32 head;
	u32 npages;
	u8 dir;
};

struct ad_stats {
	u64 doorbells;
	u64 doorbell_errors;
	u64 map_entries;
	u64 unmap_entries;
	u64 entries_hist[AD_HIST_BUCKETS];
	u64 map_calls;
	u64 sg_calls;
	u64 unmap_calls;
	u64 cache_hits;
	u64 cache_misses;
	u64 map_refused;
	u64 evictions;
	u64 bounce_maps;
	u64 bounce_bytes;
	u64 failures;
	u64 unknown_unmaps;
	u64 unmap_errors;
	u64 peak_live_bytes;
	u64 peak_live_mappings;
};

struct apple_dma {
	struct pci_dev *pdev;
	void __iomem *regs;
	/*
	 * Per instance and therefore not const: container_of() on the managed
	 * device's ops finds the instance in O(1) without a lock.
	 */
	struct dma_map_ops ops;
	struct list_head node;		/* ad_instances */
	u16 managed_bdf;
	struct pci_dev *managed;	/* referenced once the ops are installed */
	const struct dma_map_ops *managed_orig_ops;
	bool removing;

	u32 features;
	u32 guest_features;
	u32 max_entries;
	u32 batch_max;
	u64 granule;
	u64 window;
	u64 budget_bytes;
	u64 budget_mappings;

	spinlock_t lock;		/* everything below */
	bool dead;
	struct ad_cmd *cmd;
	void *req;
	void *resp;
	void *cmd_area;
	size_t cmd_area_size;
	phys_addr_t cmd_gpa;
	phys_addr_t req_gpa;
	phys_addr_t resp_gpa;

	struct ad_window *windows;
	u32 nr_windows;
	struct list_head free_list;
	struct list_head idle_lru;	/* live windows without users, oldest first */
	struct rb_root_cached gpa_root;
	struct rb_root_cached bus_root;
	u64 live_bytes;			/* pending windows included */
	u64 live_mappings;
	struct ad_range *ranges;	/* scratch for map_sg, batch_max long */

	struct page *bounce_page;
	unsigned int bounce_order;
	void *bounce_va;
	u64 bounce_len;
	dma_addr_t bounce_bus;
	u32 bounce_pages;
	struct ad_window *bounce_win;
	unsigned long *bounce_map;
	struct ad_bounce_slot *bounce_slots;

	struct ad_stats stats;
	struct dentry *debugfs;
	const char *selftest_result;
};

static LIST_HEAD(ad_instances);
static DEFINE_MUTEX(ad_instances_lock);
static struct dentry *ad_debugfs_root;

static struct apple_dma *ad_from_dev(struct device *dev)
{
	return container_of(get_dma_ops(dev), struct apple_dma, ops);
}

/* ---- the doorbell ------------------------------------------------------ */

/* Ring one command and return the device's STATUS.  Caller holds ad->lock. */
static u32 ad_doorbell(struct apple_dma *ad, u32 type, u32 count)
{
	u32 status;
	unsigned int bucket;

	lockdep_assert_held(&ad->lock);
	ad->cmd->type = cpu_to_le32(type);
	ad->cmd->count = cpu_to_le32(count);
	ad->cmd->status = cpu_to_le32(U32_MAX);
	ad->cmd->reserved = 0;
	ad->cmd->req_gpa = cpu_to_le64(ad->req_gpa);
	ad->cmd->resp_gpa = cpu_to_le64(ad->resp_gpa);
	/* writel() orders the stores above before the doorbell. */
	writel(1, ad->regs + AD_REG_DOORBELL);
	/*
	 * The doorbell write may be posted: only this read, answered after
	 * every earlier write, says the batch is done and the responses valid.
	 */
	status = readl(ad->regs + AD_REG_STATUS);

	ad->stats.doorbells++;
	bucket = count ? min_t(unsigned int, ilog2(count), AD_HIST_BUCKETS - 1) : 0;
	ad->stats.entries_hist[bucket]++;
	if (status != AD_ST_OK && status != AD_ST_IOERR) {
		ad->stats.doorbell_errors++;
		dev_err_ratelimited(&ad->pdev->dev,
				    "doorbell type %u count %u: device status %#x (command page rejected)\n",
				    type, count, status);
	}
	return status;
}

/* ---- windows ------------------------------------------------------------ */

static u64 ad_win_len(const struct ad_window *w)
{
	return w->gpa_last - w->gpa_start + 1;
}

static void ad_win_unlink(struct apple_dma *ad, struct ad_window *w)
{
	if (w->in_gpa)
		ad_gpa_tree_remove(w, &ad->gpa_root);
	if (w->in_bus)
		ad_bus_tree_remove(w, &ad->bus_root);
	w->in_gpa = false;
	w->in_bus = false;
}

static void ad_win_free(struct apple_dma *ad, struct ad_window *w)
{
	ad_win_unlink(ad, w);
	ad->live_bytes -= ad_win_len(w);
	ad->live_mappings--;
	w->state = AD_WIN_FREE;
	w->refs = 0;
	w->pinned = false;
	list_move(&w->link, &ad->free_list);
}

/* Unmap every window on @list (batched) and return them to the free list. */
static void ad_release_list(struct apple_dma *ad, struct list_head *list)
{
	struct ad_unmap_req *req = ad->req;
	struct ad_unmap_resp *resp = ad->resp;
	struct ad_window *w, *tmp;
	u32 n, i, status;

	while (!list_empty(list)) {
		n = 0;
		list_for_each_entry(w, list, link) {
			if (n == ad->batch_max)
				break;
			req[n].id = cpu_to_le64(w->id);
			req[n].size = cpu_to_le64(ad_win_len(w));
			n++;
		}
		memset(resp, 0, n * sizeof(*resp));
		status = ad_doorbell(ad, AD_CMD_UNMAP, n);
		ad->stats.unmap_entries += n;
		i = 0;
		list_for_each_entry_safe(w, tmp, list, link) {
			if (i == n)
				break;
			if ((status != AD_ST_OK && status != AD_ST_IOERR) ||
			    le32_to_cpu(resp[i].status) != AD_ST_OK) {
				ad->stats.unmap_errors++;
				dev_warn_ratelimited(&ad->pdev->dev,
						     "host refused to unmap id %#llx (%llu bytes); its budget stays used\n",
						     w->id, ad_win_len(w));
			}
			ad_win_free(ad, w);
			i++;
		}
	}
}

/*
 * Evict idle windows, oldest first, until @bytes and @count are freed or
 * at least AD_EVICT_MIN windows went; one doorbell per batch.
 */
static u32 ad_evict(struct apple_dma *ad, u64 bytes, u64 count)
{
	LIST_HEAD(victims);
	struct ad_window *w, *tmp;
	u64 freed_bytes = 0;
	u32 n = 0;

	count = max_t(u64, count, AD_EVICT_MIN);
	list_for_each_entry_safe(w, tmp, &ad->idle_lru, link) {
		if ((freed_bytes >= bytes && n >= count) || n == ad->batch_max)
			break;
		ad_win_unlink(ad, w);
		list_move_tail(&w->link, &victims);
		freed_bytes += ad_win_len(w);
		n++;
	}
	if (n) {
		ad->stats.evictions += n;
		ad_release_list(ad, &victims);
	}
	return n;
}

static bool ad_room_for(struct apple_dma *ad, u64 len)
{
	return ad->live_bytes + len <= ad->budget_bytes &&
	       ad->live_mappings + 1 <= ad->budget_mappings &&
	       !list_empty(&ad->free_list);
}

/* Make room for one more mapping of @len bytes, evicting idle windows. */
static bool ad_make_room(struct apple_dma *ad, u64 len)
{
	u64 over_bytes, over_count;

	while (!ad_room_for(ad, len)) {
		over_bytes = ad->live_bytes + len > ad->budget_bytes ?
			     ad->live_bytes + len - ad->budget_bytes : 0;
		over_count = ad->live_mappings + 1 > ad->budget_mappings ?
			     ad->live_mappings + 1 - ad->budget_mappings : 1;
		if (!ad_evict(ad, over_bytes, over_count))
			return false;
	}
	return true;
}

static void ad_win_get(struct apple_dma *ad, struct ad_window *w)
{
	if (w->state == AD_WIN_LIVE && w->refs == 0)
		list_del_init(&w->link);	/* leaves the idle LRU */
	w->refs++;
}

static void ad_win_put(struct apple_dma *ad, struct ad_window *w)
{
	if (WARN_ON_ONCE(!w->refs))
		return;
	if (--w->refs == 0 && !w->pinned)
		list_add_tail(&w->link, &ad->idle_lru);
}

/* A live or pending window that holds all of [gpa, gpa + len). */
static struct ad_window *ad_lookup_gpa(struct apple_dma *ad, u64 gpa, u64 len)
{
	u64 last = gpa + len - 1;
	struct ad_window *w;

	for (w = ad_gpa_tree_iter_first(&ad->gpa_root, gpa, last); w;
	     w = ad_gpa_tree_iter_next(w, gpa, last)) {
		if (w->gpa_start <= gpa && w->gpa_last >= last && !w->pinned &&
		    (w->state == AD_WIN_LIVE || w->state == AD_WIN_PENDING))
			return w;
	}
	return NULL;
}

/* A live window in use whose bus range holds all of [bus, bus + len). */
static struct ad_window *ad_lookup_bus(struct apple_dma *ad, u64 bus, u64 len)
{
	u64 last = bus + len - 1;
	struct ad_window *w;

	if (!len || last < bus)
		return NULL;
	for (w = ad_bus_tree_iter_first(&ad->bus_root, bus, last); w;
	     w = ad_bus_tree_iter_next(w, bus, last)) {
		if (w->bus_start <= bus && w->bus_last >= last && !w->pinned &&
		    w->state == AD_WIN_LIVE && w->refs)
			return w;
	}
	return NULL;
}

/* A new pending window for @r at @level, or NULL when there is no room. */
static struct ad_window *ad_win_new(struct apple_dma *ad, struct ad_range *r)
{
	u64 start, end, len;
	struct ad_window *w;

	start = ALIGN_DOWN(r->gpa, ad->window);
	end = start + ad->window;
	if (r->level != AD_LVL_WINDOW || end < start || r->gpa + r->len > end) {
		start = ALIGN_DOWN(r->gpa, ad->granule);
		end = ALIGN(r->gpa + r->len, ad->granule);
		if (end <= start)
			return NULL;	/* the range runs past the top */
	}
	len = end - start;
	if (len > AD_MAX_SPAN || len > ad->budget_bytes)
		return NULL;
	/* An exact retry follows a refusal: free host budget first. */
	if (r->level == AD_LVL_EXACT)
		ad_evict(ad, len, 1);
	if (!ad_make_room(ad, len))
		return NULL;

	w = list_first_entry(&ad->free_list, struct ad_window, link);
	list_del_init(&w->link);
	w->gpa_start = start;
	w->gpa_last = end - 1;
	w->bus_start = 0;
	w->bus_last = 0;
	w->id = 0;
	w->refs = 0;
	w->pinned = false;
	w->state = AD_WIN_PENDING;
	ad_gpa_tree_insert(w, &ad->gpa_root);
	w->in_gpa = true;
	ad->live_bytes += len;
	ad->live_mappings++;
	return w;
}

/*
 * Map the pending windows on @batch with one doorbell.  Each becomes LIVE
 * or FAILED (moved to @failed); a mapping the device made but answered
 * wrongly (short or wrapping) is released again.
 */
static void ad_flush_maps(struct apple_dma *ad, struct list_head *batch, u32 n,
			  struct list_head *failed)
{
	struct ad_map_req *req = ad->req;
	struct ad_map_resp *resp = ad->resp;
	LIST_HEAD(bad);
	struct ad_window *w, *tmp;
	u32 i = 0, status;
	u64 len, dma;

	list_for_each_entry(w, batch, link) {
		req[i].gpa = cpu_to_le64(w->gpa_start);
		req[i].len = cpu_to_le32((u32)ad_win_len(w));
		req[i].flags = 0;
		i++;
	}
	memset(resp, 0, n * sizeof(*resp));
	status = ad_doorbell(ad, AD_CMD_MAP, n);
	ad->stats.map_entries += n;

	i = 0;
	list_for_each_entry_safe(w, tmp, batch, link) {
		len = ad_win_len(w);
		list_del_init(&w->link);
		if ((status != AD_ST_OK && status != AD_ST_IOERR) ||
		    le32_to_cpu(resp[i].status) != AD_ST_OK) {
			ad->stats.map_refused++;
			ad_win_unlink(ad, w);
			w->state = AD_WIN_FAILED;
			list_add_tail(&w->link, failed);
			i++;
			continue;
		}
		w->id = le64_to_cpu(resp[i].id);
		dma = le64_to_cpu(resp[i].dma_addr);
		if (le32_to_cpu(resp[i].dma_len) < len || dma + len - 1 < dma) {
			dev_warn_ratelimited(&ad->pdev->dev,
					     "device mapped gpa %#llx+%#llx as %#llx+%#x: unusable, released\n",
					     w->gpa_start, len, dma,
					     le32_to_cpu(resp[i].dma_len));
			ad_win_unlink(ad, w);
			w->state = AD_WIN_FAILED;
			list_add_tail(&w->link, &bad);
			i++;
			continue;
		}
		w->bus_start = dma;
		w->bus_last = dma + len - 1;
		ad_bus_tree_insert(w, &ad->bus_root);
		w->in_bus = true;
		w->state = AD_WIN_LIVE;
		i++;
	}
	ad->stats.peak_live_bytes = max(ad->stats.peak_live_bytes, ad->live_bytes);
	ad->stats.peak_live_mappings = max(ad->stats.peak_live_mappings, ad->live_mappings);

	/* Free them on the host; their ranges see a FREE window and move on. */
	if (!list_empty(&bad))
		ad_release_list(ad, &bad);
}

/* ---- bounce pool -------------------------------------------------------- */

static bool ad_is_bounce(struct apple_dma *ad, u64 bus)
{
	return ad->bounce_pages && bus >= ad->bounce_bus &&
	       bus - ad->bounce_bus < ad->bounce_len;
}

static void *ad_bounce_va(struct apple_dma *ad, u32 head)
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

static int ad_bounce_map(struct apple_dma *ad, struct ad_range *r)
{
	u64 off = offset_in_page(r->gpa);
	unsigned long npages, idx, i;

	if (!ad->bounce_pages || r->len > ad->bounce_len ||
	    !pfn_valid(PHYS_PFN(r->gpa)) || !pfn_valid(PHYS_PFN(r->gpa + r->len - 1)))
		return -ENOMEM;
	npages = DIV_ROUND_UP(off + r->len, PAGE_SIZE);
	idx = bitmap_find_next_zero_area(ad->bounce_map, ad->bounce_pages, 0, npages, 0);
	if (idx >= ad->bounce_pages)
		return -ENOMEM;
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
	ad->stats.bounce_maps++;
	ad->stats.bounce_bytes += r->len;
	return 0;
}

/* The head slot of a live bounced mapping holding @bus, or -1. */
static long ad_bounce_head(struct apple_dma *ad, u64 bus, u64 *off)
{
	u32 page = (bus - ad->bounce_bus) >> PAGE_SHIFT;
	u32 head;
	u64 base;

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

static void ad_bounce_unmap(struct apple_dma *ad, u64 bus, bool copy_back)
{
	struct ad_bounce_slot *s;
	u64 off;
	long head = ad_bounce_head(ad, bus, &off);

	if (head < 0 || off) {
		ad->stats.unknown_unmaps++;
		dev_warn_ratelimited(&ad->pdev->dev, "unmap of unknown bounce address %#llx\n",
				     bus);
		return;
	}
	s = &ad->bounce_slots[head];
	if (copy_back && (s->dir == DMA_FROM_DEVICE || s->dir == DMA_BIDIRECTIONAL))
		ad_bounce_copy(ad, head, 0, s->len, false);
	bitmap_clear(ad->bounce_map, head, s->npages);
	s->len = 0;
}

static void ad_bounce_sync(struct apple_dma *ad, u64 bus, u64 len,
			   enum dma_data_direction dir, bool for_cpu)
{
	u64 off;
	long head = ad_bounce_head(ad, bus, &off);

	if (head < 0)
		return;
	len = min_t(u64, len, ad->bounce_slots[head].len - off);
	if (for_cpu && (dir == DMA_FROM_DEVICE || dir == DMA_BIDIRECTIONAL))
		ad_bounce_copy(ad, head, off, len, false);
	if (!for_cpu && (dir == DMA_TO_DEVICE || dir == DMA_BIDIRECTIONAL))
		ad_bounce_copy(ad, head, off, len, true);
}

/* ---- resolving ranges to bus addresses ---------------------------------- */

static void ad_range_put(struct apple_dma *ad, struct ad_range *r)
{
	if (r->bounced)
		ad_bounce_unmap(ad, r->bus, false);
	else if (r->win)
		ad_win_put(ad, r->win);
	r->win = NULL;
	r->bounced = false;
	r->done = false;
}

/*
 * Give each of @n ranges a bus address.  Cached windows cost nothing; the
 * misses of one round share one MAP doorbell.  A refused window is retried
 * as an exact mapping after eviction, then bounced (if @may_bounce).
 * Returns 0, or -ENOMEM with nothing left mapped.  Caller holds ad->lock.
 */
static int ad_resolve(struct apple_dma *ad, struct ad_range *r, u32 n, u8 first_level,
		      bool may_bounce)
{
	LIST_HEAD(batch);
	LIST_HEAD(failed);
	struct ad_window *w, *tmp;
	bool again, failed_any = false;
	u32 i, nb;

	for (i = 0; i < n; i++) {
		r[i].win = NULL;
		r[i].level = first_level;
		r[i].done = false;
		r[i].bounced = false;
	}
	do {
		again = false;
		nb = 0;
		for (i = 0; i < n; i++) {
			struct ad_range *ri = &r[i];

			if (ri->done || ri->win)
				continue;
			if (ri->level == AD_LVL_BOUNCE) {
				if (may_bounce && !ad_bounce_map(ad, ri)) {
					ri->done = true;
				} else {
					ri->level = AD_LVL_FAIL;
					failed_any = true;
				}
				continue;
			}
			if (ri->level == AD_LVL_FAIL)
				continue;
			w = ad_lookup_gpa(ad, ri->gpa, ri->len);
			if (w) {
				ad_win_get(ad, w);
				ri->win = w;
				ad->stats.cache_hits++;
				continue;
			}
			if (nb == ad->batch_max) {
				again = true;	/* next round, next doorbell */
				continue;
			}
			w = ad_win_new(ad, ri);
			if (!w) {
				ri->level = AD_LVL_BOUNCE;
				again = true;
				continue;
			}
			ad->stats.cache_misses++;
			list_add_tail(&w->link, &batch);
			nb++;
			ad_win_get(ad, w);
			ri->win = w;
		}
		if (nb)
			ad_flush_maps(ad, &batch, nb, &failed);
		for (i = 0; i < n; i++) {
			struct ad_range *ri = &r[i];

			if (ri->done || !ri->win)
				continue;
			if (ri->win->state == AD_WIN_LIVE) {
				ri->bus = ri->win->bus_start + (ri->gpa - ri->win->gpa_start);
				ri->done = true;
				continue;
			}
			/* Its window was refused: try the next level. */
			ri->win = NULL;
			ri->level++;
			again = true;
		}
		list_for_each_entry_safe(w, tmp, &failed, link)
			ad_win_free(ad, w);
		if (failed_any)
			break;
	} while (again);

	if (!failed_any)
		return 0;
	for (i = 0; i < n; i++)
		if (r[i].done)
			ad_range_put(ad, &r[i]);
	return -ENOMEM;
}

/* Drop one user of the mapping at [bus, bus + len).  Caller holds ad->lock. */
static void ad_unmap_locked(struct apple_dma *ad, u64 bus, u64 len, bool copy_back)
{
	struct ad_window *w;

	ad->stats.unmap_calls++;
	if (ad_is_bounce(ad, bus)) {
		ad_bounce_unmap(ad, bus, copy_back);
		return;
	}
	w = ad_lookup_bus(ad, bus, len);
	if (!w) {
		ad->stats.unknown_unmaps++;
		dev_warn_ratelimited(&ad->pdev->dev,
				     "unmap of unknown bus range %#llx+%#llx ignored\n", bus, len);
		return;
	}
	ad_win_put(ad, w);
}

static bool ad_fits_mask(struct device *dev, u64 bus, u64 len, bool coherent)
{
	u64 mask = coherent ? dev->coherent_dma_mask : dma_get_mask(dev);

	mask = min_not_zero(mask, dev->bus_dma_limit);
	return bus + len - 1 >= bus && bus + len - 1 <= mask;
}

/* ---- the DMA operations -------------------------------------------------- */

static dma_addr_t ad_map_one(struct device *dev, phys_addr_t phys, size_t size,
			     enum dma_data_direction dir, bool may_bounce, bool coherent)
{
	struct apple_dma *ad = ad_from_dev(dev);
	struct ad_range r = { .gpa = phys, .len = size, .dir = dir };
	unsigned long flags;
	int ret;

	if (!size || phys + size - 1 < phys)
		return DMA_MAPPING_ERROR;
	spin_lock_irqsave(&ad->lock, flags);
	ad->stats.map_calls++;
	ret = ad->dead ? -ENODEV : ad_resolve(ad, &r, 1, AD_LVL_WINDOW, may_bounce);
	if (!ret && !ad_fits_mask(dev, r.bus, size, coherent)) {
		ad_range_put(ad, &r);
		ret = -EIO;
	}
	if (ret)
		ad->stats.failures++;
	spin_unlock_irqrestore(&ad->lock, flags);
	return ret ? DMA_MAPPING_ERROR : r.bus;
}

static void ad_unmap_one(struct device *dev, dma_addr_t bus, size_t size, bool copy_back)
{
	struct apple_dma *ad = ad_from_dev(dev);
	unsigned long flags;

	spin_lock_irqsave(&ad->lock, flags);
	ad_unmap_locked(ad, bus, size, copy_back);
	spin_unlock_irqrestore(&ad->lock, flags);
}

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 18, 0)
static dma_addr_t ad_map_phys(struct device *dev, phys_addr_t phys, size_t size,
			      enum dma_data_direction dir, unsigned long attrs)
{
	/* MMIO (peer-to-peer) can be mapped by the host or not at all: no bounce. */
	return ad_map_one(dev, phys, size, dir, !(attrs & DMA_ATTR_MMIO), false);
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
	return ad_map_one(dev, page_to_phys(page) + offset, size, dir, true, false);
}

static void ad_unmap_page(struct device *dev, dma_addr_t bus, size_t size,
			  enum dma_data_direction dir, unsigned long attrs)
{
	ad_unmap_one(dev, bus, size, !(attrs & DMA_ATTR_SKIP_CPU_SYNC));
}

static dma_addr_t ad_map_resource(struct device *dev, phys_addr_t phys, size_t size,
				  enum dma_data_direction dir, unsigned long attrs)
{
	return ad_map_one(dev, phys, size, dir, false, false);
}

static void ad_unmap_resource(struct device *dev, dma_addr_t bus, size_t size,
			      enum dma_data_direction dir, unsigned long attrs)
{
	ad_unmap_one(dev, bus, size, false);
}
#endif

static void ad_unmap_sg(struct device *dev, struct scatterlist *sgl, int nents,
			enum dma_data_direction dir, unsigned long attrs)
{
	struct apple_dma *ad = ad_from_dev(dev);
	struct scatterlist *sg;
	unsigned long flags;
	int i;

	spin_lock_irqsave(&ad->lock, flags);
	/* SKIP_CPU_SYNC: the driver synced already; a copy back could undo its writes. */
	for_each_sg(sgl, sg, nents, i)
		ad_unmap_locked(ad, sg_dma_address(sg), sg_dma_len(sg),
				!(attrs & DMA_ATTR_SKIP_CPU_SYNC));
	spin_unlock_irqrestore(&ad->lock, flags);
}

/* Every entry gets its own segment; misses of up to batch_max entries share a doorbell. */
static int ad_map_sg(struct device *dev, struct scatterlist *sgl, int nents,
		     enum dma_data_direction dir, unsigned long attrs)
{
	struct apple_dma *ad = ad_from_dev(dev);
	struct scatterlist *sg, *chunk = sgl;
	unsigned long flags;
	int i, done = 0, ret = 0;
	u32 n, j;

	if (nents <= 0)
		return -EINVAL;
	spin_lock_irqsave(&ad->lock, flags);
	ad->stats.sg_calls++;
	if (ad->dead) {
		ret = -EIO;
		goto out;
	}
	while (done < nents) {
		n = min_t(u32, nents - done, ad->batch_max);
		sg = chunk;
		for (j = 0; j < n; j++, sg = sg_next(sg)) {
			ad->ranges[j].gpa = sg_phys(sg);
			ad->ranges[j].len = sg->length;
			ad->ranges[j].dir = dir;
			if (!sg->length || sg_phys(sg) + sg->length - 1 < sg_phys(sg)) {
				ret = -EINVAL;
				goto unwind;
			}
		}
		ret = ad_resolve(ad, ad->ranges, n, AD_LVL_WINDOW, true);
		if (ret)
			goto unwind;
		sg = chunk;
		for (j = 0; j < n; j++, sg = sg_next(sg)) {
			if (!ad_fits_mask(dev, ad->ranges[j].bus, sg->length, false)) {
				u32 k;

				for (k = 0; k < n; k++)
					ad_range_put(ad, &ad->ranges[k]);
				ret = -EIO;
				goto unwind;
			}
			sg->dma_address = ad->ranges[j].bus;
			sg_dma_len(sg) = sg->length;
		}
		done += n;
		chunk = sg;
	}
	ad->stats.map_calls += nents;
	spin_unlock_irqrestore(&ad->lock, flags);
	return nents;

unwind:
	for_each_sg(sgl, sg, done, i)
		ad_unmap_locked(ad, sg_dma_address(sg), sg_dma_len(sg), false);
out:
	ad->stats.failures++;
	spin_unlock_irqrestore(&ad->lock, flags);
	return ret;
}

static void ad_sync_one(struct device *dev, dma_addr_t bus, size_t size,
			enum dma_data_direction dir, bool for_cpu)
{
	struct apple_dma *ad = ad_from_dev(dev);
	unsigned long flags;

	/* Only bounced mappings need work: the managed device is cache-coherent. */
	if (!ad_is_bounce(ad, bus))
		return;
	spin_lock_irqsave(&ad->lock, flags);
	ad_bounce_sync(ad, bus, size, dir, for_cpu);
	spin_unlock_irqrestore(&ad->lock, flags);
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

/* Coherent memory: zeroed pages, mapped through the same window cache, never bounced. */
static struct page *ad_alloc_mapped(struct device *dev, size_t size, dma_addr_t *handle,
				    gfp_t gfp)
{
	unsigned int order = get_order(size);
	struct page *page;
	dma_addr_t bus;

	if (!size || order > AD_MAX_ORDER)
		return NULL;
	page = alloc_pages(gfp | __GFP_ZERO, order);
	if (!page)
		return NULL;
	bus = ad_map_one(dev, page_to_phys(page), PAGE_ALIGN(size), DMA_BIDIRECTIONAL,
			 false, true);
	if (bus == DMA_MAPPING_ERROR) {
		__free_pages(page, order);
		return NULL;
	}
	*handle = bus;
	return page;
}

static void ad_free_mapped(struct device *dev, size_t size, struct page *page, dma_addr_t bus)
{
	ad_unmap_one(dev, bus, PAGE_ALIGN(size), false);
	__free_pages(page, get_order(size));
}

static void *ad_alloc(struct device *dev, size_t size, dma_addr_t *handle, gfp_t gfp,
		      unsigned long attrs)
{
	struct page *page = ad_alloc_mapped(dev, size, handle, gfp);

	return page ? page_address(page) : NULL;
}

static void ad_free(struct device *dev, size_t size, void *vaddr, dma_addr_t bus,
		    unsigned long attrs)
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

static int ad_dma_supported(struct device *dev, u64 mask)
{
	/* Bus addresses come from the host; each mapping is checked against the mask. */
	return mask >= DMA_BIT_MASK(32);
}

static size_t ad_max_mapping_size(struct device *dev)
{
	return AD_MAX_SPAN;
}

static void ad_init_ops(struct dma_map_ops *ops)
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
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 18, 0)
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
	ops->max_mapping_size = ad_max_mapping_size;
}

/* ---- statistics ---------------------------------------------------------- */

static int ad_stats_show(struct seq_file *m, void *unused)
{
	struct apple_dma *ad = m->private;
	struct ad_stats s;
	u64 live_bytes, live_mappings, idle = 0, entries;
	struct ad_window *w;
	unsigned long flags;
	unsigned int i;

	spin_lock_irqsave(&ad->lock, flags);
	s = ad->stats;
	live_bytes = ad->live_bytes;
	live_mappings = ad->live_mappings;
	list_for_each_entry(w, &ad->idle_lru, link)
		idle++;
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
	seq_printf(m, "map_calls %llu\n", s.map_calls);
	seq_printf(m, "sg_calls %llu\n", s.sg_calls);
	seq_printf(m, "unmap_calls %llu\n", s.unmap_calls);
	seq_printf(m, "cache_hits %llu\n", s.cache_hits);
	seq_printf(m, "cache_misses %llu\n", s.cache_misses);
	seq_printf(m, "map_refused %llu\n", s.map_refused);
	seq_printf(m, "evictions %llu\n", s.evictions);
	seq_printf(m, "live_mappings %llu\n", live_mappings);
	seq_printf(m, "live_bytes %llu\n", live_bytes);
	seq_printf(m, "idle_mappings %llu\n", idle);
	seq_printf(m, "peak_live_mappings %llu\n", s.peak_live_mappings);
	seq_printf(m, "peak_live_bytes %llu\n", s.peak_live_bytes);
	seq_printf(m, "bounce_maps %llu\n", s.bounce_maps);
	seq_printf(m, "bounce_bytes %llu\n", s.bounce_bytes);
	seq_printf(m, "failures %llu\n", s.failures);
	seq_printf(m, "unknown_unmaps %llu\n", s.unknown_unmaps);
	seq_printf(m, "unmap_errors %llu\n", s.unmap_errors);
	seq_printf(m, "selftest %s\n", ad->selftest_result);
	/* What the device says this companion holds (version 3; 0 otherwise). */
	if (ad->features & AD_FEAT_BUDGET) {
		seq_printf(m, "device_live_mappings %u\n",
			   readl(ad->regs + AD_REG_LIVE_MAPPINGS));
		seq_printf(m, "device_live_bytes %llu\n",
			   readl(ad->regs + AD_REG_LIVE_BYTES_LO) |
			   (u64)readl(ad->regs + AD_REG_LIVE_BYTES_HI) << 32);
	} else {
		seq_puts(m, "device_live_mappings 0\ndevice_live_bytes 0\n");
	}
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(ad_stats);

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
 * Route @mdev's DMA through @ad.  Only while no driver is bound (the caller
 * holds the device lock, or the driver core is about to probe): the ops of
 * a device are never swapped under a running driver.
 */
static void ad_install_ops(struct apple_dma *ad, struct pci_dev *mdev)
{
	lockdep_assert_held(&ad_instances_lock);
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
	dev_info(&ad->pdev->dev, "DMA of %s now goes through the companion\n", pci_name(mdev));
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
			ad_install_ops(ad, pdev);
		mutex_unlock(&ad_instances_lock);
		break;
	case BUS_NOTIFY_DEL_DEVICE:
		mutex_lock(&ad_instances_lock);
		ad = ad_find_owner(pdev);
		if (ad && ad->managed == pdev) {
			ad->managed = NULL;
			pci_dev_put(pdev);
		}
		mutex_unlock(&ad_instances_lock);
		break;
	}
	return NOTIFY_DONE;
}

static struct notifier_block ad_bus_nb = {
	.notifier_call = ad_bus_notify,
};

/* Take over an already present managed function; 0 when it is absent. */
static int ad_claim_present(struct apple_dma *ad)
{
	struct pci_dev *mdev;
	bool was_bound;
	int ret = 0;

	mdev = pci_get_domain_bus_and_slot(0, ad->managed_bdf >> 8, ad->managed_bdf & 0xff);
	if (!mdev) {
		dev_info(&ad->pdev->dev,
			 "managed function 0000:%02x:%02x.%d not present yet; taking it when it appears\n",
			 ad->managed_bdf >> 8, PCI_SLOT(ad->managed_bdf),
			 PCI_FUNC(ad->managed_bdf));
		return 0;
	}
	was_bound = !!READ_ONCE(mdev->dev.driver);
	if (was_bound && get_dma_ops(&mdev->dev) != &ad->ops) {
		if (!rebind) {
			dev_err(&ad->pdev->dev,
				"%s is already bound to a driver that uses other DMA addresses; unbind it first (or load with rebind=1)\n",
				pci_name(mdev));
			ret = -EBUSY;
			goto out;
		}
		dev_warn(&ad->pdev->dev, "%s is already bound: unbinding its driver to route its DMA\n",
			 pci_name(mdev));
		device_release_driver(&mdev->dev);
	}
	device_lock(&mdev->dev);
	if (!mdev->dev.driver) {
		mutex_lock(&ad_instances_lock);
		ad_install_ops(ad, mdev);
		mutex_unlock(&ad_instances_lock);
	}
	device_unlock(&mdev->dev);
	/* Bind now a driver that was unbound above or that failed before us. */
	if (!READ_ONCE(mdev->dev.driver) && device_attach(&mdev->dev) < 0)
		dev_warn(&ad->pdev->dev, "binding a driver to %s failed\n", pci_name(mdev));
out:
	pci_dev_put(mdev);
	return ret;
}

/* Give the managed function back: unbind its driver, restore its ops. */
static void ad_release_managed(struct apple_dma *ad)
{
	struct pci_dev *mdev;
	int tries;

	mutex_lock(&ad_instances_lock);
	ad->removing = true;
	list_del_init(&ad->node);
	mdev = ad->managed ? pci_dev_get(ad->managed) : NULL;
	mutex_unlock(&ad_instances_lock);
	if (!mdev)
		return;
	for (tries = 0; tries < 5; tries++) {
		if (mdev->dev.driver) {
			dev_info(&ad->pdev->dev, "unbinding %s: its DMA cannot work without the companion\n",
				 pci_name(mdev));
			device_release_driver(&mdev->dev);
		}
		device_lock(&mdev->dev);
		if (!mdev->dev.driver) {
			if (get_dma_ops(&mdev->dev) == &ad->ops)
				set_dma_ops(&mdev->dev, ad->managed_orig_ops);
			device_unlock(&mdev->dev);
			break;
		}
		device_unlock(&mdev->dev);
	}
	mutex_lock(&ad_instances_lock);
	if (ad->managed) {
		pci_dev_put(ad->managed);
		ad->managed = NULL;
	}
	mutex_unlock(&ad_instances_lock);
	pci_dev_put(mdev);
}

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
	spin_lock_irqsave(&ad->lock, flags);
	if (ad_is_bounce(ad, bus))
		head = ad_bounce_head(ad, bus, &off);
	if (head >= 0 && !off)
		pool = ad_bounce_va(ad, head);
	spin_unlock_irqrestore(&ad->lock, flags);
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

static void ad_selftest(struct apple_dma *ad)
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
		dev_err(&ad->pdev->dev, "self-test failed: %s\n", failed);
	} else {
		ad->selftest_result = "passed";
		dev_info(&ad->pdev->dev, "self-test passed\n");
	}
}

/* ---- probe and remove ---------------------------------------------------- */

static int ad_read_limits(struct apple_dma *ad)
{
	struct device *dev = &ad->pdev->dev;
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
	ad->budget_bytes = bytes;
	ad->budget_mappings = min_t(u64, mappings, max(max_windows, 16U));
	return 0;
}

static int ad_alloc_state(struct apple_dma *ad)
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
	for (i = 0; i < ad->nr_windows; i++)
		list_add_tail(&ad->windows[i].link, &ad->free_list);
	return 0;
}

/* Allocate and map the bounce pool; without it the driver still works. */
static void ad_setup_bounce(struct apple_dma *ad)
{
	struct ad_range r = { .dir = DMA_BIDIRECTIONAL };
	u32 pages = DIV_ROUND_UP((u64)bounce_kb * SZ_1K, PAGE_SIZE);
	unsigned long flags;
	int ret;

	if (!pages)
		return;
	ad->bounce_order = min_t(unsigned int, get_order((u64)pages * PAGE_SIZE), AD_MAX_ORDER);
	pages = 1U << ad->bounce_order;
	ad->bounce_page = alloc_pages(GFP_KERNEL | __GFP_ZERO | __GFP_NOWARN, ad->bounce_order);
	ad->bounce_map = bitmap_zalloc(pages, GFP_KERNEL);
	ad->bounce_slots = kcalloc(pages, sizeof(*ad->bounce_slots), GFP_KERNEL);
	if (!ad->bounce_page || !ad->bounce_map || !ad->bounce_slots)
		goto fail;
	ad->bounce_va = page_address(ad->bounce_page);
	r.gpa = page_to_phys(ad->bounce_page);
	r.len = (u64)pages * PAGE_SIZE;

	spin_lock_irqsave(&ad->lock, flags);
	/* Exact, so that no buffer shares the pool's mapping. */
	ret = ad_resolve(ad, &r, 1, AD_LVL_EXACT, false);
	if (!ret) {
		r.win->pinned = true;
		ad->bounce_win = r.win;
		ad->bounce_bus = r.bus;
		ad->bounce_len = r.len;
		ad->bounce_pages = pages;
	}
	spin_unlock_irqrestore(&ad->lock, flags);
	if (!ret)
		return;
	dev_warn(&ad->pdev->dev, "host refused the %u KiB bounce pool: running without it\n",
		 pages * (u32)(PAGE_SIZE / SZ_1K));
fail:
	if (ad->bounce_page)
		__free_pages(ad->bounce_page, ad->bounce_order);
	ad->bounce_page = NULL;
	bitmap_free(ad->bounce_map);
	ad->bounce_map = NULL;
	kfree(ad->bounce_slots);
	ad->bounce_slots = NULL;
}

/* Unmap everything this instance holds on the host (at remove). */
static void ad_release_all(struct apple_dma *ad)
{
	LIST_HEAD(all);
	unsigned long flags;
	u32 i, busy = 0;

	spin_lock_irqsave(&ad->lock, flags);
	ad->dead = true;
	for (i = 0; i < ad->nr_windows; i++) {
		struct ad_window *w = &ad->windows[i];

		if (w->state != AD_WIN_LIVE)
			continue;
		if (w->refs && !w->pinned)
			busy++;
		ad_win_unlink(ad, w);
		list_move_tail(&w->link, &all);
	}
	if (!list_empty(&all))
		ad_release_list(ad, &all);
	spin_unlock_irqrestore(&ad->lock, flags);
	if (busy)
		dev_warn(&ad->pdev->dev, "%u mappings were still in use at remove\n", busy);
}

static void ad_free_state(struct apple_dma *ad)
{
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
			dev_err(&ad->pdev->dev, "%s already manages function %#x\n",
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

static int ad_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct device *dev = &pdev->dev;
	struct apple_dma *ad;
	u32 version, bdf;
	unsigned long flags;
	int ret;

	ad = kzalloc(sizeof(*ad), GFP_KERNEL);
	if (!ad)
		return -ENOMEM;
	ad->pdev = pdev;
	ad->selftest_result = "off";
	spin_lock_init(&ad->lock);
	INIT_LIST_HEAD(&ad->node);
	INIT_LIST_HEAD(&ad->free_list);
	INIT_LIST_HEAD(&ad->idle_lru);
	ad->gpa_root = RB_ROOT_CACHED;
	ad->bus_root = RB_ROOT_CACHED;
	ad_init_ops(&ad->ops);

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
	ad->features = v2_only ? 0 : readl(ad->regs + AD_REG_FEATURES);
	ret = ad_read_limits(ad);
	if (ret)
		goto err_unmap;
	ret = ad_alloc_state(ad);
	if (ret) {
		dev_err(dev, "out of memory for the command page and mapping table\n");
		goto err_state;
	}

	writel(lower_32_bits(ad->cmd_gpa), ad->regs + AD_REG_CMD_GPA_LO);
	writel(upper_32_bits(ad->cmd_gpa), ad->regs + AD_REG_CMD_GPA_HI);
	if (ad->features) {
		ad->guest_features = ad->features & AD_FEAT_KNOWN;
		writel(ad->guest_features, ad->regs + AD_REG_GUEST_FEATURES);
	}
	if (ad->features & AD_FEAT_UNMAP_ALL) {
		/* Mappings a previous instance left behind would eat the budget. */
		spin_lock_irqsave(&ad->lock, flags);
		if (ad_doorbell(ad, AD_CMD_UNMAP_ALL, 0) != AD_ST_OK)
			dev_warn(dev, "UNMAP_ALL failed; stale mappings may remain\n");
		spin_unlock_irqrestore(&ad->lock, flags);
	}
	ad_setup_bounce(ad);

	pci_set_drvdata(pdev, ad);
	ad->debugfs = debugfs_create_dir(pci_name(pdev), ad_debugfs_root);
	debugfs_create_file("stats", 0444, ad->debugfs, ad, &ad_stats_fops);

	ret = ad_register_instance(ad);
	if (ret)
		goto err_debugfs;

	ret = ad_claim_present(ad);
	if (ret)
		goto err_listed;
	if (selftest)
		ad_selftest(ad);

	dev_info(dev, "apple-dma v%u%s: manages 0000:%02x:%02x.%d, %u entries per doorbell, window %llu KiB, budget %llu MiB / %llu mappings, bounce %llu KiB\n",
		 version, ad->features ? " (v3 features)" : "", bdf >> 8, PCI_SLOT(bdf),
		 PCI_FUNC(bdf), ad->batch_max, ad->window / SZ_1K, ad->budget_bytes >> 20,
		 ad->budget_mappings, ad->bounce_len / SZ_1K);
	return 0;

err_listed:
	ad_release_managed(ad);
err_debugfs:
	debugfs_remove_recursive(ad->debugfs);
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
	kfree(ad);
	return ret;
}

static void ad_remove(struct pci_dev *pdev)
{
	struct apple_dma *ad = pci_get_drvdata(pdev);

	ad_release_managed(ad);
	debugfs_remove_recursive(ad->debugfs);
	ad_release_all(ad);
	ad_free_state(ad);
	pci_iounmap(pdev, ad->regs);
	pci_release_region(pdev, 0);
	pci_disable_device(pdev);
	kfree(ad);
}

static const struct pci_device_id ad_ids[] = {
	{ PCI_DEVICE(0x1b36, 0x0015) },
	{ }
};
MODULE_DEVICE_TABLE(pci, ad_ids);

static struct pci_driver ad_driver = {
	.name = AD_NAME,
	.id_table = ad_ids,
	.probe = ad_probe,
	.remove = ad_remove,
};

static int __init ad_init(void)
{
	int ret;

	ad_debugfs_root = debugfs_create_dir(AD_NAME, NULL);
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
