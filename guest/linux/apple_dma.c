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
 * Cost model: one doorbell is one VM exit plus a host round trip.  In the
 * default (lazy) mode buffers are mapped inside aligned windows that are
 * shared and kept for a bounded time after their last user; in strict mode
 * only the granules of buffers mapped now are reachable (sub-granule
 * buffers bounce).  Cache hits and unmaps take no lock (seqcount-protected
 * trees, atomic reference counts); misses, eviction and the idle release
 * take the instance lock and ring the doorbell under the command page's
 * own lock, with at most batch_cap entries per doorbell.  See
 * docs/guest-module.md.
 */

#include <linux/atomic.h>
#include <linux/bitmap.h>
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/dma-map-ops.h>
#include <linux/interval_tree_generic.h>
#include <linux/io.h>
#include <linux/ktime.h>
#include <linux/list.h>
#include <linux/log2.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/percpu.h>
#include <linux/scatterlist.h>
#include <linux/seqlock.h>
#include <linux/seq_file.h>
#include <linux/sizes.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/version.h>
#include <linux/workqueue.h>

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
/* Not a device status: the command page was lost (reset) while ringing. */
#define AD_ST_RESET		0x100

/* Published Apple DART limits, used when the device does not publish its own. */
#define AD_DEFAULT_MAX_BYTES	(3ULL * SZ_512M)
#define AD_DEFAULT_MAX_MAPPINGS	65536
#define AD_DEFAULT_GRANULE	SZ_16K

/* Largest single mapping this driver asks for (MAP's len field is 32-bit). */
#define AD_MAX_SPAN		SZ_64M
/* Idle windows evicted at once when room is needed: amortizes the doorbell. */
#define AD_EVICT_MIN		8
#define AD_HIST_BUCKETS		10
/* Lockless lookups give up (and take the lock) after this many nodes. */
#define AD_LOCKLESS_STEPS	64
/* A refused UNMAP is retried this many times by the idle worker, then reported. */
#define AD_UNMAP_TRIES		5
/* refs of a window claimed for release: lockless users can no longer take it. */
#define AD_REFS_DEAD		(INT_MIN / 2)

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
MODULE_PARM_DESC(window_kb, "Size of the shared aligned mapping windows in KiB, a power of two (default 2048; lazy mode only)");

static unsigned int batch_cap = 64;
module_param(batch_cap, uint, 0444);
MODULE_PARM_DESC(batch_cap, "Most entries per doorbell (doorbells run with interrupts off), further capped by MAX_ENTRIES (default 64)");

static unsigned int bounce_kb = 1024;
module_param(bounce_kb, uint, 0444);
MODULE_PARM_DESC(bounce_kb, "Bounce pool mapped at probe in KiB, 0 for none (default 1024; strict mode: at least 4096)");

static unsigned int max_windows = 8192;
module_param(max_windows, uint, 0444);
MODULE_PARM_DESC(max_windows, "Most live mappings kept per companion (default 8192)");

static bool strict;
module_param(strict, bool, 0444);
MODULE_PARM_DESC(strict, "Strict isolation: the device reaches only the granules of buffers mapped now (sub-granule buffers bounce), unmapped within one timer tick of the last unmap (default N: lazy)");

static unsigned int idle_ms = 3;
module_param(idle_ms, uint, 0444);
MODULE_PARM_DESC(idle_ms, "Lazy mode: an idle window is unmapped once idle this long and unused for one pass of the idle worker (one timer tick or idle_ms apart), 1..5 ms (default 3)");

static bool v2_only;
module_param(v2_only, bool, 0444);
MODULE_PARM_DESC(v2_only, "Ignore the version 3 features and use only protocol version 2 (default N)");

static bool selftest;
module_param(selftest, bool, 0444);
MODULE_PARM_DESC(selftest, "At probe, check batching, atomic mapping, coherent buffers and (with max_windows <= 32) bouncing through the managed function's ops; result in debugfs (default N)");

static bool unittest;
module_param(unittest, bool, 0444);
MODULE_PARM_DESC(unittest, "At load, run the cache, eviction, fallback, mask, reset and isolation tests against a fake doorbell; result in debugfs unittest (default N)");

static bool rebind = true;
module_param(rebind, bool, 0444);
MODULE_PARM_DESC(rebind, "Unbind and rebind the managed function's driver if it is already bound (default Y); N refuses to probe instead");

enum ad_win_state {
	AD_WIN_FREE,
	AD_WIN_PENDING,		/* in the batch being built */
	AD_WIN_LIVE,
	AD_WIN_FAILED,		/* the device refused it; freed after the batch */
	AD_WIN_DYING,		/* claimed for release, off the trees */
	AD_WIN_STUCK,		/* the device refused to unmap it: still held, retried */
	AD_WIN_ORPHAN,		/* in use when the companion was reset: never reused */
};

enum ad_win_kind {
	AD_KIND_SHARED,		/* a window or exact range that cache hits may share */
	AD_KIND_PRIVATE,	/* one coherent allocation: unmapped when it is freed */
	AD_KIND_POOL,		/* the bounce pool */
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
	struct list_head link;	/* free list, live list, stuck list, or a batch */
	u64 id;
	u64 seq;		/* order in which windows went live (aliasing rule) */
	u64 idle_since;		/* ktime (ns) of the put that left it without users */
	struct page *free_page;	/* pages to free once the host let go of them */
	atomic_t refs;
	u8 used;		/* lazy: put since the idle worker last looked */
	u8 free_order;
	u8 state;
	u8 kind;
	u8 unmap_tries;
	bool in_gpa;
	bool in_bus;
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
	struct scatterlist *sg;	/* map_sg: the entry this range maps */
	struct ad_window *win;
	dma_addr_t bus;
	enum dma_data_direction dir;
	u8 level;
	u8 first;		/* lowest level this range may use */
	u8 kind;
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

/* Counters of the lockless paths, per CPU. */
struct ad_pcpu_stats {
	u64 map_calls;
	u64 sg_calls;
	u64 unmap_calls;
	u64 cache_hits;
	u64 bounce_maps;
	u64 bounce_bytes;
	u64 failures;
	u64 unknown_unmaps;
};

/* Counters kept under ad->lock. */
struct ad_stats {
	u64 doorbells;
	u64 doorbell_errors;
	u64 map_entries;
	u64 unmap_entries;
	u64 entries_hist[AD_HIST_BUCKETS];
	u64 max_doorbell_entries;
	u64 cache_hits;
	u64 cache_misses;
	u64 map_refused;
	u64 evictions;
	u64 unmap_errors;
	u64 peak_live_bytes;
	u64 peak_live_mappings;
	u64 slow_paths;
	u64 mask_misses;
	u64 bad_bus;
	u64 resets;
	u64 reset_lost;
	u64 cmd_restores;
	u64 idle_releases;
	u64 idle_release_max_ns;
	u64 strict_releases;
	u64 private_unmaps;
};

struct ad_fake;

struct apple_dma {
	struct pci_dev *pdev;		/* NULL for a unit-test instance */
	struct device *dev;		/* for messages */
	void __iomem *regs;
	struct ad_fake *fake;		/* unit tests: the doorbell goes here */
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

	bool strict;
	u32 features;
	u32 guest_features;
	u32 max_entries;
	u32 batch_max;
	u64 granule;
	u64 window;
	u64 budget_bytes;
	u64 budget_mappings;
	u64 idle_ns;			/* lazy: idle age at which a window is released */
	unsigned long idle_delay;	/* jiffies between idle scans */

	/* The instance lock: windows, trees, budget, stats.  Taken irqsave. */
	spinlock_t lock;
	/* Lockless readers of the two trees retry when a writer was active. */
	seqcount_spinlock_t tree_seq;
	bool dead;
	bool broken;			/* the command page cannot be restored */
	bool pool_lost;			/* companion reset: pool mapping gone */
	bool bus_alias;			/* two live windows share bus addresses */
	bool restoring;			/* ringing again after restoring the page */
	u64 next_seq;
	u64 reset_gen;

	/* The command page and its arrays; taken inside ad->lock. */
	spinlock_t cmd_lock;
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
	struct list_head live_list;	/* every LIVE window */
	struct list_head stuck_list;	/* UNMAP refused, still held on the host */
	struct rb_root_cached gpa_root;
	struct rb_root_cached bus_root;
	u64 live_bytes;			/* pending and stuck windows included */
	u64 live_mappings;
	struct ad_range *ranges;	/* scratch for map_sg, batch_max long */
	struct delayed_work idle_work;
	bool idle_work_ready;

	/* The bounce pool; its own lock (taken inside ad->lock when both are). */
	spinlock_t bounce_lock;
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
	struct ad_pcpu_stats __percpu *pstats;
	struct dentry *debugfs;
	const char *selftest_result;
};

static LIST_HEAD(ad_instances);
static DEFINE_MUTEX(ad_instances_lock);
static struct dentry *ad_debugfs_root;

static inline void ad_add(u64 __percpu *counter, u64 n)
{
	this_cpu_add(*counter, n);
}

static struct apple_dma *ad_from_dev(struct device *dev)
{
	return container_of(get_dma_ops(dev), struct apple_dma, ops);
}

/* ---- the doorbell ------------------------------------------------------ */

static u32 ad_fake_ring(struct apple_dma *ad);
static void ad_fake_set_cmd(struct apple_dma *ad, u64 gpa);
static void ad_recover(struct apple_dma *ad);
static void ad_unittest_run(void);

/* Point the device at the command page (0: at nothing) and say what we use. */
static void ad_set_cmd(struct apple_dma *ad, u64 gpa)
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

static u32 ad_fake_live(struct apple_dma *ad);

/* LIVE_MAPPINGS (version 3 BUDGET), or 0 when the device does not say. */
static u32 ad_device_live_mappings(struct apple_dma *ad)
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
static u32 ad_doorbell(struct apple_dma *ad, u32 type, u32 count)
{
	u32 status;
	unsigned int bucket;

	lockdep_assert_held(&ad->lock);
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

/* ---- windows ------------------------------------------------------------ */

static u64 ad_win_len(const struct ad_window *w)
{
	return w->gpa_last - w->gpa_start + 1;
}

/* Caller holds ad->lock and is inside a tree_seq write section. */
static void ad_win_unlink(struct apple_dma *ad, struct ad_window *w)
{
	if (w->in_gpa)
		ad_gpa_tree_remove(w, &ad->gpa_root);
	if (w->in_bus)
		ad_bus_tree_remove(w, &ad->bus_root);
	w->in_gpa = false;
	w->in_bus = false;
}

static void ad_win_unlink_seq(struct apple_dma *ad, struct ad_window *w)
{
	write_seqcount_begin(&ad->tree_seq);
	ad_win_unlink(ad, w);
	write_seqcount_end(&ad->tree_seq);
}

/* Return a window's slot (and budget); its host mapping is gone. */
static void ad_win_free(struct apple_dma *ad, struct ad_window *w)
{
	if (w->in_gpa || w->in_bus)
		ad_win_unlink_seq(ad, w);
	ad->live_bytes -= ad_win_len(w);
	ad->live_mappings--;
	if (w->free_page)
		__free_pages(w->free_page, w->free_order);
	w->free_page = NULL;
	w->state = AD_WIN_FREE;
	atomic_set(&w->refs, AD_REFS_DEAD);
	w->unmap_tries = 0;
	list_move(&w->link, &ad->free_list);
}

/*
 * Unmap every window on @list (claimed: DYING or STUCK, off the trees),
 * batched, and free their slots.  A window the device refuses to unmap is
 * still held by the host: it stays counted and goes to the stuck list, to
 * be retried; it is never forgotten.
 */
static void ad_release_list(struct apple_dma *ad, struct list_head *list)
{
	struct ad_unmap_req *req = ad->req;
	struct ad_unmap_resp *resp = ad->resp;
	struct ad_window *w, *tmp;
	u64 gen = ad->reset_gen;
	u32 n, i, status;

	while (!list_empty(list)) {
		if (ad->reset_gen != gen) {
			/* A reset dropped them on the host. */
			list_for_each_entry_safe(w, tmp, list, link)
				ad_win_free(ad, w);
			break;
		}
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
			if (i++ == n)
				break;
			if (status == AD_ST_RESET ||
			    ((status == AD_ST_OK || status == AD_ST_IOERR) &&
			     le32_to_cpu(resp[i - 1].status) == AD_ST_OK)) {
				/* Done, or dropped by the reset: nothing left on the host. */
				ad_win_free(ad, w);
				continue;
			}
			ad->stats.unmap_errors++;
			w->unmap_tries++;
			w->state = AD_WIN_STUCK;
			list_move_tail(&w->link, &ad->stuck_list);
			if (w->unmap_tries == AD_UNMAP_TRIES)
				dev_err(ad->dev,
					"host refused %u times to unmap id %#llx (gpa %#llx, %llu bytes): it stays mapped and counted%s\n",
					w->unmap_tries, w->id, w->gpa_start, ad_win_len(w),
					w->free_page ? "; its pages are kept" : "");
			else
				dev_warn_ratelimited(ad->dev,
						     "host refused to unmap id %#llx (%llu bytes); will retry\n",
						     w->id, ad_win_len(w));
		}
	}
}

/*
 * Claim @w for release if it has no users: lockless users can no longer
 * take it.  Caller holds ad->lock.  Unlinks it; the caller releases it.
 */
static bool ad_win_claim(struct apple_dma *ad, struct ad_window *w)
{
	if (w->state != AD_WIN_LIVE || atomic_cmpxchg(&w->refs, 0, AD_REFS_DEAD) != 0)
		return false;
	w->state = AD_WIN_DYING;
	ad_win_unlink_seq(ad, w);
	list_del_init(&w->link);	/* leaves the live list */
	return true;
}

static bool ad_win_idle(const struct ad_window *w)
{
	return w->state == AD_WIN_LIVE && w->kind == AD_KIND_SHARED && !atomic_read(&w->refs);
}

/*
 * Evict idle windows, older than the average idle one first, until @bytes
 * and @count are freed or at least AD_EVICT_MIN windows went; at most one
 * batch.  Returns how many went.
 */
static u32 ad_evict(struct apple_dma *ad, u64 bytes, u64 count)
{
	LIST_HEAD(victims);
	struct ad_window *w, *tmp;
	u64 freed_bytes = 0, sum = 0, avg, nidle = 0;
	u32 n = 0;
	int pass;

	count = max_t(u64, count, AD_EVICT_MIN);
	list_for_each_entry(w, &ad->live_list, link) {
		if (ad_win_idle(w)) {
			sum += READ_ONCE(w->idle_since) >> 10;
			nidle++;
		}
	}
	if (!nidle)
		return 0;
	avg = div64_u64(sum, nidle) << 10;
	for (pass = 0; pass < 2; pass++) {
		list_for_each_entry_safe(w, tmp, &ad->live_list, link) {
			if ((freed_bytes >= bytes && n >= count) || n == ad->batch_max)
				break;
			if (!ad_win_idle(w) || (!pass && READ_ONCE(w->idle_since) > avg))
				continue;
			if (!ad_win_claim(ad, w))
				continue;
			list_add_tail(&w->link, &victims);
			freed_bytes += ad_win_len(w);
			n++;
		}
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

static void ad_kick_idle(struct apple_dma *ad)
{
	if (READ_ONCE(ad->idle_work_ready) && !delayed_work_pending(&ad->idle_work))
		queue_delayed_work(system_highpri_wq, &ad->idle_work, ad->idle_delay);
}

/* Take a user on a window found under ad->lock (never DEAD there). */
static void ad_win_get(struct apple_dma *ad, struct ad_window *w)
{
	atomic_inc(&w->refs);
}

/* Drop a user; lockless.  The last one starts the idle clock.  False: no user. */
static bool ad_win_put(struct apple_dma *ad, struct ad_window *w)
{
	int left = atomic_dec_if_positive(&w->refs);

	if (left < 0)
		return false;
	if (left == 0 && w->kind == AD_KIND_SHARED) {
		WRITE_ONCE(w->idle_since, ktime_get_ns());
		WRITE_ONCE(w->used, 1);
		ad_kick_idle(ad);
	}
	return true;
}

static bool ad_win_holds(const struct ad_window *w, u64 gpa, u64 last)
{
	return w->gpa_start <= gpa && w->gpa_last >= last;
}

/*
 * A live (or, under the lock, pending) shared window that holds all of
 * [gpa, gpa + len).  Lockless callers pass @locked false and see only LIVE
 * windows, within AD_LOCKLESS_STEPS nodes.
 */
static struct ad_window *ad_lookup_gpa(struct apple_dma *ad, u64 gpa, u64 len, bool locked)
{
	u64 last = gpa + len - 1;
	struct ad_window *w;
	int steps = 0;

	for (w = ad_gpa_tree_iter_first(&ad->gpa_root, gpa, last); w;
	     w = ad_gpa_tree_iter_next(w, gpa, last)) {
		u8 state = READ_ONCE(w->state);

		if (!locked && ++steps > AD_LOCKLESS_STEPS)
			return NULL;
		if (!ad_win_holds(w, gpa, last) || w->kind != AD_KIND_SHARED ||
		    !(state == AD_WIN_LIVE || (locked && state == AD_WIN_PENDING)))
			continue;
		/* Strict: only a mapping of exactly this range's granules. */
		if (ad->strict && (w->gpa_start != ALIGN_DOWN(gpa, ad->granule) ||
				   w->gpa_last != ALIGN(last + 1, ad->granule) - 1))
			continue;
		return w;
	}
	return NULL;
}

/*
 * The window that owns a mapping of [bus, bus + len): a live shared window
 * with users that holds it.  When two live windows share bus addresses
 * (identity mode) the owner is the one that went live first, the same rule
 * the map side follows (ad_canonical()), so unmaps never drop the wrong one.
 */
static struct ad_window *ad_lookup_bus(struct apple_dma *ad, u64 bus, u64 len, bool locked)
{
	u64 last = bus + len - 1;
	struct ad_window *w, *best = NULL;
	int steps = 0;

	if (!len || last < bus)
		return NULL;
	for (w = ad_bus_tree_iter_first(&ad->bus_root, bus, last); w;
	     w = ad_bus_tree_iter_next(w, bus, last)) {
		if (!locked && ++steps > AD_LOCKLESS_STEPS)
			return NULL;
		if (w->bus_start <= bus && w->bus_last >= last && w->kind != AD_KIND_POOL &&
		    READ_ONCE(w->state) == AD_WIN_LIVE && atomic_read(&w->refs) > 0 &&
		    (!best || w->seq < best->seq))
			best = w;
		if (best && !READ_ONCE(ad->bus_alias))
			break;
	}
	return best;
}

/*
 * With aliasing bus ranges, a mapping of [bus, bus + len) must belong to
 * the earliest live window holding it with the same translation.
 */
static struct ad_window *ad_canonical(struct apple_dma *ad, struct ad_window *w,
				      u64 bus, u64 len)
{
	u64 last = bus + len - 1, delta = w->bus_start - w->gpa_start;
	struct ad_window *o, *best = w;
	int steps = 0;

	for (o = ad_bus_tree_iter_first(&ad->bus_root, bus, last); o;
	     o = ad_bus_tree_iter_next(o, bus, last)) {
		if (++steps > AD_LOCKLESS_STEPS)
			break;
		if (o->bus_start <= bus && o->bus_last >= last && o->kind == AD_KIND_SHARED &&
		    READ_ONCE(o->state) == AD_WIN_LIVE && o->seq < best->seq &&
		    o->bus_start - o->gpa_start == delta)
			best = o;
	}
	if (best == w || !atomic_inc_unless_negative(&best->refs))
		return w;
	/* Pairs with the release in ad_flush_maps(): a LIVE window's fields are set. */
	if (smp_load_acquire(&best->state) != AD_WIN_LIVE) {
		ad_win_put(ad, best);
		return w;
	}
	ad_win_put(ad, w);
	return best;
}

/*
 * Cache hit without the lock: a live window holding [gpa, gpa + len), with
 * a user taken.  NULL sends the caller to the locked slow path.
 */
static struct ad_window *ad_hit(struct apple_dma *ad, u64 gpa, u64 len)
{
	struct ad_window *w;
	unsigned int seq;
	int tries;

	for (tries = 0; tries < 3; tries++) {
		seq = read_seqcount_begin(&ad->tree_seq);
		w = ad_lookup_gpa(ad, gpa, len, false);
		if (read_seqcount_retry(&ad->tree_seq, seq))
			continue;
		if (!w || !atomic_inc_unless_negative(&w->refs))
			return NULL;
		/*
		 * Evicted and reused meanwhile?  Only a live one that still holds
		 * it; the acquire pairs with the release in ad_flush_maps().
		 */
		if (smp_load_acquire(&w->state) == AD_WIN_LIVE && w->kind == AD_KIND_SHARED &&
		    ad_win_holds(w, gpa, gpa + len - 1))
			return w;
		ad_win_put(ad, w);
		return NULL;
	}
	return NULL;
}

/* A new pending window for @r at its level, or NULL when there is no room. */
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
	/* An exact retry follows a refusal or a miss: free host budget first. */
	if (r->level == AD_LVL_EXACT && r->kind == AD_KIND_SHARED)
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
	w->kind = r->kind;
	w->free_page = NULL;
	w->unmap_tries = 0;
	w->idle_since = 0;
	atomic_set(&w->refs, 0);
	WRITE_ONCE(w->state, AD_WIN_PENDING);
	write_seqcount_begin(&ad->tree_seq);
	ad_gpa_tree_insert(w, &ad->gpa_root);
	write_seqcount_end(&ad->tree_seq);
	w->in_gpa = true;
	ad->live_bytes += len;
	ad->live_mappings++;
	return w;
}

/*
 * Is the bus range the device gave @w usable?  Its offset within the
 * granule must be the guest range's, and it must not alias another live
 * window with a different translation.  Sets bus_alias for benign aliasing
 * (identity mode: bus == gpa for every window).
 */
static bool ad_bus_ok(struct apple_dma *ad, struct ad_window *w, u64 dma, u64 len)
{
	struct ad_window *o;

	if ((dma ^ w->gpa_start) & (ad->granule - 1))
		return false;
	for (o = ad_bus_tree_iter_first(&ad->bus_root, dma, dma + len - 1); o;
	     o = ad_bus_tree_iter_next(o, dma, dma + len - 1)) {
		if (o->bus_start - o->gpa_start != dma - w->gpa_start)
			return false;
		WRITE_ONCE(ad->bus_alias, true);
	}
	return true;
}

/*
 * Map the pending windows on @batch with one doorbell.  Each becomes LIVE
 * or FAILED (moved to @failed); a mapping the device made but answered
 * wrongly (short, wrapping, misaligned, aliasing) is released again.
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
			ad_win_unlink_seq(ad, w);
			w->state = AD_WIN_FAILED;
			list_add_tail(&w->link, failed);
			i++;
			continue;
		}
		w->id = le64_to_cpu(resp[i].id);
		dma = le64_to_cpu(resp[i].dma_addr);
		if (le32_to_cpu(resp[i].dma_len) < len || dma + len - 1 < dma ||
		    !ad_bus_ok(ad, w, dma, len)) {
			ad->stats.bad_bus++;
			dev_warn_ratelimited(ad->dev,
					     "device mapped gpa %#llx+%#llx as %#llx+%#x: unusable (short, wrapping, misaligned or aliasing), released\n",
					     w->gpa_start, len, dma,
					     le32_to_cpu(resp[i].dma_len));
			ad_win_unlink_seq(ad, w);
			w->state = AD_WIN_DYING;
			list_add_tail(&w->link, &bad);
			i++;
			continue;
		}
		write_seqcount_begin(&ad->tree_seq);
		w->bus_start = dma;
		w->bus_last = dma + len - 1;
		w->seq = ++ad->next_seq;
		ad_bus_tree_insert(w, &ad->bus_root);
		w->in_bus = true;
		/* Lockless readers that see LIVE (acquire) see the bus range too. */
		smp_store_release(&w->state, AD_WIN_LIVE);
		write_seqcount_end(&ad->tree_seq);
		list_add_tail(&w->link, &ad->live_list);
		i++;
	}
	ad->stats.peak_live_bytes = max(ad->stats.peak_live_bytes, ad->live_bytes);
	ad->stats.peak_live_mappings = max(ad->stats.peak_live_mappings, ad->live_mappings);

	/* Free them on the host; their ranges see a non-live window and move on. */
	if (!list_empty(&bad))
		ad_release_list(ad, &bad);
}

/* ---- bounce pool -------------------------------------------------------- */

static bool ad_is_bounce(struct apple_dma *ad, u64 bus)
{
	u64 base = READ_ONCE(ad->bounce_bus);

	return READ_ONCE(ad->bounce_pages) && bus >= base && bus - base < ad->bounce_len;
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

/* Bounce @r through the pool, if its bus range fits @limit.  Any context. */
static int ad_bounce_map(struct apple_dma *ad, struct ad_range *r, u64 limit)
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
static long ad_bounce_head(struct apple_dma *ad, u64 bus, u64 *off)
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

static void ad_bounce_unmap(struct apple_dma *ad, u64 bus, bool copy_back)
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

static void ad_bounce_sync(struct apple_dma *ad, u64 bus, u64 len,
			   enum dma_data_direction dir, bool for_cpu)
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

/* ---- resolving ranges to bus addresses ---------------------------------- */

static int ad_resolve(struct apple_dma *ad, struct ad_range *r, u32 n, u8 first_level,
		      bool may_bounce, u64 limit);

/* Map the pool's pages as one exact mapping of their own.  ad->lock held. */
static int ad_pool_map(struct apple_dma *ad)
{
	struct ad_range r = { .dir = DMA_BIDIRECTIONAL, .kind = AD_KIND_POOL };
	unsigned long flags;
	u32 pages = 1U << ad->bounce_order;
	int ret;

	r.gpa = page_to_phys(ad->bounce_page);
	r.len = (u64)pages * PAGE_SIZE;
	ret = ad_resolve(ad, &r, 1, AD_LVL_EXACT, false, U64_MAX);
	spin_lock_irqsave(&ad->bounce_lock, flags);
	if (!ret) {
		ad->bounce_win = r.win;
		ad->bounce_bus = r.bus;
		ad->bounce_len = r.len;
		ad->bounce_pages = pages;
		ad->pool_lost = false;
	}
	spin_unlock_irqrestore(&ad->bounce_lock, flags);
	return ret;
}

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

/* Drop @r's window because its bus range missed the mask; evict it if idle. */
static void ad_drop_missed(struct apple_dma *ad, struct ad_range *r)
{
	struct ad_window *w = r->win;
	LIST_HEAD(victim);

	ad->stats.mask_misses++;
	r->win = NULL;
	ad_win_put(ad, w);
	if (w->kind == AD_KIND_SHARED && ad_win_claim(ad, w)) {
		list_add_tail(&w->link, &victim);
		ad->stats.evictions++;
		ad_release_list(ad, &victim);
	}
}

/*
 * Give each of @n ranges a bus address at or below @limit.  Cached windows
 * cost nothing; the misses of one round share one MAP doorbell.  A range
 * goes down the ladder WINDOW -> EXACT -> BOUNCE (if @may_bounce) -> FAIL
 * when its window finds no room, is refused, or misses @limit (the missed
 * window is evicted); each step only goes down, so this ends.  A companion
 * reset in the middle restarts the ranges once.  Returns 0, or -ENOMEM
 * with nothing left mapped.  Caller holds ad->lock.
 */
static int ad_resolve(struct apple_dma *ad, struct ad_range *r, u32 n, u8 first_level,
		      bool may_bounce, u64 limit)
{
	LIST_HEAD(batch);
	LIST_HEAD(failed);
	struct ad_window *w, *tmp;
	bool again, failed_any = false;
	u64 gen = ad->reset_gen;
	int restarts = 0;
	u32 i, nb;

	ad->stats.slow_paths++;
restart:
	for (i = 0; i < n; i++) {
		r[i].win = NULL;
		r[i].level = max(first_level, r[i].first);
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
				if (may_bounce && ad->pool_lost && ad->bounce_page)
					ad_pool_map(ad);
				if (may_bounce && !ad_bounce_map(ad, ri, limit)) {
					ri->done = true;
				} else {
					ri->level = AD_LVL_FAIL;
					failed_any = true;
				}
				continue;
			}
			if (ri->level == AD_LVL_FAIL)
				continue;
			w = ri->kind == AD_KIND_SHARED ?
			    ad_lookup_gpa(ad, ri->gpa, ri->len, true) : NULL;
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
				ri->level++;	/* no room: a smaller mapping, then a bounce */
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
		list_for_each_entry_safe(w, tmp, &failed, link)
			ad_win_free(ad, w);
		if (ad->reset_gen != gen) {
			/* Every bus address handed out above is dead. */
			for (i = 0; i < n; i++)
				if (r[i].bounced)
					r[i].bounced = false;	/* the pool was reset */
				else if (r[i].done || r[i].win)
					ad_range_put(ad, &r[i]);
			gen = ad->reset_gen;
			if (restarts++ || ad->broken)
				goto fail;
			failed_any = false;
			goto restart;
		}
		for (i = 0; i < n; i++) {
			struct ad_range *ri = &r[i];

			if (ri->done || !ri->win)
				continue;
			if (ri->win->state != AD_WIN_LIVE) {
				/* Its window was refused: try the next level. */
				ad_win_put(ad, ri->win);
				ri->win = NULL;
				ri->level++;
				again = true;
				continue;
			}
			ri->bus = ri->win->bus_start + (ri->gpa - ri->win->gpa_start);
			if (ri->bus + ri->len - 1 > limit) {
				ad_drop_missed(ad, ri);
				ri->level++;
				again = true;
				continue;
			}
			if (READ_ONCE(ad->bus_alias) && ri->kind == AD_KIND_SHARED)
				ri->win = ad_canonical(ad, ri->win, ri->bus, ri->len);
			ri->done = true;
		}
		if (failed_any)
			break;
	} while (again);

	/* After a reset, map the pool again before anything needs it. */
	if (may_bounce && ad->pool_lost && ad->bounce_page)
		ad_pool_map(ad);
	if (!failed_any)
		return 0;
fail:
	for (i = 0; i < n; i++)
		if (r[i].done)
			ad_range_put(ad, &r[i]);
	return -ENOMEM;
}

/* ---- companion reset ----------------------------------------------------- */

/*
 * The companion lost our command page: it was reset, and a reset drops
 * every mapping.  Restore the page, then forget every window: idle ones are
 * freed, ones in use become orphans (their users hold dead bus addresses;
 * their unmaps are counted as unknown), the pool is mapped again before its
 * next use.  Called from ad_doorbell() with ad->lock held.
 */
static void ad_recover(struct apple_dma *ad)
{
	unsigned long flags;
	u32 i;

	ad->stats.resets++;
	ad->reset_gen++;
	ad_set_cmd(ad, ad->cmd_gpa);
	write_seqcount_begin(&ad->tree_seq);
	for (i = 0; i < ad->nr_windows; i++) {
		struct ad_window *w = &ad->windows[i];

		if (w->state != AD_WIN_LIVE && w->state != AD_WIN_STUCK &&
		    w->state != AD_WIN_DYING)
			continue;
		ad_win_unlink(ad, w);
		if (w->state == AD_WIN_LIVE && w->kind != AD_KIND_POOL &&
		    atomic_cmpxchg(&w->refs, 0, AD_REFS_DEAD) != 0) {
			w->state = AD_WIN_ORPHAN;
			list_del_init(&w->link);
			ad->live_bytes -= ad_win_len(w);
			ad->live_mappings--;
			ad->stats.reset_lost++;
			continue;
		}
		if (w->state == AD_WIN_DYING)
			continue;	/* on a release list being processed */
		w->in_gpa = false;
		w->in_bus = false;
		ad->live_bytes -= ad_win_len(w);
		ad->live_mappings--;
		if (w->free_page)
			__free_pages(w->free_page, w->free_order);
		w->free_page = NULL;
		w->state = AD_WIN_FREE;
		atomic_set(&w->refs, AD_REFS_DEAD);
		list_move(&w->link, &ad->free_list);
	}
	ad->bus_alias = false;
	write_seqcount_end(&ad->tree_seq);
	/* Bounced buffers in flight pointed into the dead pool mapping. */
	spin_lock_irqsave(&ad->bounce_lock, flags);
	if (ad->bounce_page) {
		ad->pool_lost = true;
		ad->bounce_win = NULL;
		bitmap_zero(ad->bounce_map, 1U << ad->bounce_order);
		memset(ad->bounce_slots, 0, sizeof(*ad->bounce_slots) << ad->bounce_order);
	}
	spin_unlock_irqrestore(&ad->bounce_lock, flags);
	if (ad->stats.reset_lost)
		dev_warn(ad->dev, "%llu mappings in use were lost with the reset\n",
			 ad->stats.reset_lost);
}

/* ---- idle release -------------------------------------------------------- */

/*
 * Release idle windows: strict mode every window without users, lazy mode
 * those idle for idle_ms; retry refused UNMAPs.  One batch (batch_cap
 * entries) per pass with the lock, so interrupts are never off for more
 * than one doorbell of batch_cap entries here.  Re-arms while idle windows
 * remain.
 */
static void ad_idle_scan(struct apple_dma *ad, bool *rearm)
{
	LIST_HEAD(victims);
	struct ad_window *w, *tmp;
	unsigned long flags;
	u64 now, age, soonest = U64_MAX;
	u32 n;

	*rearm = false;
	do {
		n = 0;
		spin_lock_irqsave(&ad->lock, flags);
		if (ad->dead) {
			spin_unlock_irqrestore(&ad->lock, flags);
			return;
		}
		now = ktime_get_ns();
		list_for_each_entry_safe(w, tmp, &ad->live_list, link) {
			if (n == ad->batch_max)
				break;
			if (!ad_win_idle(w))
				continue;
			age = now - min(now, READ_ONCE(w->idle_since));
			/*
			 * Lazy: idle for idle_ms and not used since the last
			 * pass, so that a window in steady use is not released
			 * because the vCPU (or this worker) ran late.
			 */
			if (!ad->strict && (READ_ONCE(w->used) || age < ad->idle_ns)) {
				WRITE_ONCE(w->used, 0);
				soonest = min(soonest, ad->idle_ns);
				continue;
			}
			if (!ad_win_claim(ad, w))
				continue;
			list_add_tail(&w->link, &victims);
			ad->stats.idle_release_max_ns = max(ad->stats.idle_release_max_ns, age);
			n++;
		}
		if (n) {
			if (ad->strict)
				ad->stats.strict_releases += n;
			else
				ad->stats.idle_releases += n;
			ad_release_list(ad, &victims);
		}
		if (n < ad->batch_max) {
			/* Retry what the host refused to unmap. */
			list_for_each_entry_safe(w, tmp, &ad->stuck_list, link)
				if (w->unmap_tries < AD_UNMAP_TRIES)
					list_move_tail(&w->link, &victims);
			if (!list_empty(&victims))
				ad_release_list(ad, &victims);
			list_for_each_entry(w, &ad->stuck_list, link)
				if (w->unmap_tries < AD_UNMAP_TRIES)
					*rearm = true;
		}
		spin_unlock_irqrestore(&ad->lock, flags);
	} while (n == ad->batch_max);
	if (soonest != U64_MAX)
		*rearm = true;
}

static void ad_idle_work(struct work_struct *work)
{
	struct apple_dma *ad = container_of(to_delayed_work(work), struct apple_dma, idle_work);
	bool rearm;

	ad_idle_scan(ad, &rearm);
	if (rearm)
		ad_kick_idle(ad);
}

/* Drop one user of the mapping at [bus, bus + len); lockless. */
static void ad_unmap_bus(struct apple_dma *ad, u64 bus, u64 len, bool copy_back)
{
	struct ad_window *w;
	unsigned int seq;
	int tries;

	ad_add(&ad->pstats->unmap_calls, 1);
	if (ad_is_bounce(ad, bus)) {
		ad_bounce_unmap(ad, bus, copy_back);
		return;
	}
	for (tries = 0; tries < 3; tries++) {
		seq = read_seqcount_begin(&ad->tree_seq);
		w = ad_lookup_bus(ad, bus, len, false);
		if (!read_seqcount_retry(&ad->tree_seq, seq))
			break;
		w = NULL;
	}
	if (!w) {
		unsigned long flags;

		/* A busy tree or a long walk: look again under the lock. */
		spin_lock_irqsave(&ad->lock, flags);
		w = ad_lookup_bus(ad, bus, len, true);
		if (w && !ad_win_put(ad, w))
			w = NULL;
		spin_unlock_irqrestore(&ad->lock, flags);
	} else if (!ad_win_put(ad, w)) {
		w = NULL;
	}
	if (!w) {
		ad_add(&ad->pstats->unknown_unmaps, 1);
		dev_warn_ratelimited(ad->dev,
				     "unmap of unknown bus range %#llx+%#llx ignored\n", bus, len);
	}
}

static u64 ad_mask_limit(struct device *dev, bool coherent)
{
	u64 mask = coherent ? dev->coherent_dma_mask : dma_get_mask(dev);

	return min_not_zero(mask, dev->bus_dma_limit);
}

/* ---- the DMA operations -------------------------------------------------- */

/* Strict mode bounces a buffer that does not cover whole granules. */
static bool ad_sub_granule(struct apple_dma *ad, u64 gpa, u64 len)
{
	return ad->strict && ((gpa | len) & (ad->granule - 1));
}

static dma_addr_t ad_map_one(struct device *dev, phys_addr_t phys, size_t size,
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
	if (!size || phys + size - 1 < phys || READ_ONCE(ad->dead))
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
			if (bus + size - 1 <= limit) {
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

static void ad_unmap_sg(struct device *dev, struct scatterlist *sgl, int nents,
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
static int ad_map_sg(struct device *dev, struct scatterlist *sgl, int nents,
		     enum dma_data_direction dir, unsigned long attrs)
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
	if (READ_ONCE(ad->dead)) {
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
	struct ad_window *w, *found = NULL;
	unsigned long flags;
	LIST_HEAD(one);

	ad_add(&ad->pstats->unmap_calls, 1);
	spin_lock_irqsave(&ad->lock, flags);
	for (w = ad_bus_tree_iter_first(&ad->bus_root, bus, bus + len - 1); w;
	     w = ad_bus_tree_iter_next(w, bus, bus + len - 1)) {
		if (w->kind == AD_KIND_PRIVATE && w->state == AD_WIN_LIVE && w->bus_start == bus &&
		    w->gpa_start == page_to_phys(page)) {
			found = w;
			break;
		}
	}
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

/*
 * The protocol cannot ask the host for a low bus address.  A mask is
 * honoured when every mapping can fall back to the bounce pool within it
 * (the pool's bus range fits), or when it is 64 bits wide.
 */
static int ad_dma_supported(struct device *dev, u64 mask)
{
	struct apple_dma *ad = ad_from_dev(dev);

	if (mask == DMA_BIT_MASK(64))
		return 1;
	return READ_ONCE(ad->bounce_pages) && !READ_ONCE(ad->pool_lost) &&
	       ad->bounce_bus + ad->bounce_len - 1 <= mask;
}

/* Host bus addresses may lie anywhere: drivers must be able to use all 64 bits. */
static u64 ad_get_required_mask(struct device *dev)
{
	return DMA_BIT_MASK(64);
}

/*
 * The largest buffer that can always be mapped: its granule-rounded range
 * (one granule more at worst) within the span and the budget; in strict
 * mode a buffer that does not cover whole granules bounces, so the pool's
 * size bounds it.
 */
static size_t ad_max_mapping_size(struct device *dev)
{
	struct apple_dma *ad = ad_from_dev(dev);
	u64 max = min_t(u64, AD_MAX_SPAN, ad->budget_bytes) - ad->granule;

	if (ad->strict)
		max = min_t(u64, max, ad->bounce_len);
	return max;
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
	if (ad->features & AD_FEAT_BUDGET) {
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
 * Why @dev cannot have its DMA routed through the companion, or NULL.
 * Behind a guest IOMMU the device would be given the vIOMMU's addresses
 * (and from 6.12 the kernel ignores replaced DMA operations there); a
 * device that is not cache-coherent needs cache maintenance, which a
 * module cannot do (arch_sync_dma_* is not exported).  Coherence is known
 * only once the driver core configured the device's DMA (@configured: at
 * BUS_NOTIFY_BIND_DRIVER, or with a driver bound); before, arm64 says "not
 * coherent" for every device.
 */
static const char *ad_unusable(struct device *dev, bool configured)
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
	if (was_bound && get_dma_ops(&mdev->dev) != &ad->ops) {
		if (!rebind) {
			dev_err(ad->dev,
				"%s is already bound to a driver that uses other DMA addresses; unbind it first (or load with rebind=1)\n",
				pci_name(mdev));
			ret = -EBUSY;
			goto out;
		}
		dev_warn(ad->dev, "%s is already bound: unbinding its driver to route its DMA\n",
			 pci_name(mdev));
		device_release_driver(&mdev->dev);
	}
	device_lock(&mdev->dev);
	if (!mdev->dev.driver) {
		mutex_lock(&ad_instances_lock);
		ad_install_ops(ad, mdev, false);
		mutex_unlock(&ad_instances_lock);
	}
	device_unlock(&mdev->dev);
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
static bool ad_release_managed(struct apple_dma *ad)
{
	struct pci_dev *mdev;
	bool restored = false;
	int tries;

	mutex_lock(&ad_instances_lock);
	ad->removing = true;
	list_del_init(&ad->node);
	mdev = ad->managed ? pci_dev_get(ad->managed) : NULL;
	mutex_unlock(&ad_instances_lock);
	if (!mdev)
		return true;
	for (tries = 0; tries < 5; tries++) {
		if (mdev->dev.driver) {
			dev_info(ad->dev, "unbinding %s: its DMA cannot work without the companion\n",
				 pci_name(mdev));
			device_release_driver(&mdev->dev);
		}
		device_lock(&mdev->dev);
		if (!mdev->dev.driver) {
			if (get_dma_ops(&mdev->dev) == &ad->ops)
				set_dma_ops(&mdev->dev, ad->managed_orig_ops);
			device_unlock(&mdev->dev);
			restored = true;
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
	if (!restored && get_dma_ops(&mdev->dev) != &ad->ops)
		restored = true;	/* another driver path put other ops in */
	pci_dev_put(mdev);
	return restored;
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
		dev_err(ad->dev, "self-test failed: %s\n", failed);
	} else {
		ad->selftest_result = "passed";
		dev_info(ad->dev, "self-test passed\n");
	}
}

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
	for (i = 0; i < ad->nr_windows; i++) {
		atomic_set(&ad->windows[i].refs, AD_REFS_DEAD);
		list_add_tail(&ad->windows[i].link, &ad->free_list);
	}
	return 0;
}

/* Allocate and map the bounce pool; without it the driver still works (lazy mode). */
static int ad_setup_bounce(struct apple_dma *ad)
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
 * read memory that is about to be reused.
 */
static void ad_release_all(struct apple_dma *ad)
{
	LIST_HEAD(all);
	unsigned long flags;
	u32 i, busy = 0, stuck = 0;

	spin_lock_irqsave(&ad->lock, flags);
	ad->dead = true;
	WRITE_ONCE(ad->idle_work_ready, false);
	spin_unlock_irqrestore(&ad->lock, flags);
	cancel_delayed_work_sync(&ad->idle_work);

	spin_lock_irqsave(&ad->lock, flags);
	for (i = 0; i < ad->nr_windows; i++) {
		struct ad_window *w = &ad->windows[i];

		if (w->state != AD_WIN_LIVE && w->state != AD_WIN_STUCK)
			continue;
		if (w->state == AD_WIN_LIVE && atomic_read(&w->refs) > 0 &&
		    w->kind != AD_KIND_POOL)
			busy++;
		atomic_set(&w->refs, AD_REFS_DEAD);
		w->state = AD_WIN_DYING;
		ad_win_unlink_seq(ad, w);
		list_move_tail(&w->link, &all);
	}
	if (!list_empty(&all))
		ad_release_list(ad, &all);
	stuck = list_count_nodes(&ad->stuck_list);
	if (stuck && (ad->features & AD_FEAT_UNMAP_ALL) &&
	    ad_doorbell(ad, AD_CMD_UNMAP_ALL, 0) == AD_ST_OK) {
		struct ad_window *w, *tmp;

		list_for_each_entry_safe(w, tmp, &ad->stuck_list, link)
			ad_win_free(ad, w);
		stuck = 0;
	}
	ad_set_cmd(ad, 0);
	ad->broken = true;	/* no doorbell after this */
	spin_unlock_irqrestore(&ad->lock, flags);
	if (busy)
		dev_warn(ad->dev, "%u mappings were still in use at remove\n", busy);
	if (stuck)
		dev_err(ad->dev, "%u mappings the host refused to unmap stay registered\n", stuck);
}

static void ad_free_state(struct apple_dma *ad)
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
static struct apple_dma *ad_new_instance(struct device *dev, bool strict_mode)
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

static void ad_remove(struct pci_dev *pdev)
{
	struct apple_dma *ad = pci_get_drvdata(pdev);
	bool restored = ad_release_managed(ad);

	debugfs_remove_recursive(ad->debugfs);
	ad_release_all(ad);
	if (!restored) {
		/*
		 * A driver still holds the function with our ops: freeing them
		 * would be a use after free.  Keep the (dead: every map fails)
		 * instance and the module for good.
		 */
		dev_err(&pdev->dev, "%s kept its driver: keeping apple_dma's DMA operations (every mapping fails) and the module loaded\n",
			ad->managed ? pci_name(ad->managed) : "the managed function");
		__module_get(THIS_MODULE);
		pci_iounmap(pdev, ad->regs);
		pci_release_region(pdev, 0);
		pci_disable_device(pdev);
		return;
	}
	ad_free_state(ad);
	pci_iounmap(pdev, ad->regs);
	pci_release_region(pdev, 0);
	pci_disable_device(pdev);
	free_percpu(ad->pstats);
	kfree(ad);
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
static void ad_reset_notify(struct apple_dma *ad)
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

static u32 ad_fake_live(struct apple_dma *ad)
{
	return ad->fake->live;
}

static void ad_fake_set_cmd(struct apple_dma *ad, u64 gpa)
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

static u32 ad_fake_ring(struct apple_dma *ad)
{
	struct ad_fake *f = ad->fake;
	u32 type = le32_to_cpu(ad->cmd->type), count = le32_to_cpu(ad->cmd->count);
	u32 i, k, batch = AD_ST_OK;

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
		ad_free_state(ad);
		free_percpu(ad->pstats);
		kfree(ad);
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
};

static char ad_unit_result[256] = "off";

static int ad_unit_show(struct seq_file *m, void *unused)
{
	seq_printf(m, "%s\n", ad_unit_result);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(ad_unit);

static void ad_unittest_run(void)
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
