/* SPDX-License-Identifier: GPL-2.0 */
#ifndef AD_APPLE_DMA_H
#define AD_APPLE_DMA_H
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
 *
 * Files, along the seams of kernel/dma: ad_proto.c (command page and
 * doorbell), ad_cache.c (windows, eviction, the resolution ladder, reset,
 * idle release), ad_bounce.c (bounce pool), ad_ops.c (dma_map_ops),
 * ad_owner.c (the managed function), ad_debugfs.c, ad_selftest.c,
 * ad_unittest.c (fake doorbell) and ad_main.c (parameters, probe, remove).
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
/* Not a device status: the companion is gone (reads all-ones: surprise removal). */
#define AD_ST_GONE		0x101

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
/* Unbind and swap the managed function's ops; again if a bind got in first. */
#define AD_RELEASE_TRIES	5
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
	u64 max_resolve_doorbells;	/* most doorbells one locked resolution rang */
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
	u64 gone_dropped;
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
	bool gone;			/* the companion vanished: every map fails */
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

extern unsigned int window_kb;
extern unsigned int batch_cap;
extern unsigned int bounce_kb;
extern unsigned int max_windows;
extern bool strict;
extern unsigned int idle_ms;
extern bool v2_only;
extern bool selftest;
extern bool unittest;
extern bool rebind;
extern unsigned int swap_delay_ms;

extern struct list_head ad_instances;
extern struct mutex ad_instances_lock;
extern struct dentry *ad_debugfs_root;
extern struct notifier_block ad_bus_nb;

static inline void ad_add(u64 __percpu *counter, u64 n)
{
	this_cpu_add(*counter, n);
}

static inline struct apple_dma *ad_from_dev(struct device *dev)
{
	return container_of(get_dma_ops(dev), struct apple_dma, ops);
}

/* ad_bounce.c */
bool ad_is_bounce(struct apple_dma *ad, u64 bus);
void *ad_bounce_va(struct apple_dma *ad, u32 head);
int ad_bounce_map(struct apple_dma *ad, struct ad_range *r, u64 limit);
long ad_bounce_head(struct apple_dma *ad, u64 bus, u64 *off);
void ad_bounce_unmap(struct apple_dma *ad, u64 bus, bool copy_back);
void ad_bounce_sync(struct apple_dma *ad, u64 bus, u64 len, enum dma_data_direction dir,
		    bool for_cpu);

/* ad_cache.c */
void ad_win_unlink_seq(struct apple_dma *ad, struct ad_window *w);
void ad_win_free(struct apple_dma *ad, struct ad_window *w);
void ad_release_list(struct apple_dma *ad, struct list_head *list);
bool ad_win_idle(const struct ad_window *w);
bool ad_win_put(struct apple_dma *ad, struct ad_window *w);
struct ad_window *ad_lookup_bus(struct apple_dma *ad, u64 bus, u64 len, bool locked);
struct ad_window *ad_hit(struct apple_dma *ad, u64 gpa, u64 len);
int ad_pool_map(struct apple_dma *ad);
int ad_resolve(struct apple_dma *ad, struct ad_range *r, u32 n, u8 first_level, bool may_bounce,
	       u64 limit);
void ad_recover(struct apple_dma *ad);
void ad_forget_all(struct apple_dma *ad, bool keep_bounces);
void ad_idle_work(struct work_struct *work);
void ad_unmap_bus(struct apple_dma *ad, u64 bus, u64 len, bool copy_back);
u64 ad_mask_limit(struct device *dev, bool coherent);

struct ad_window *ad_find_private(struct apple_dma *ad, u64 bus, u64 len, phys_addr_t gpa);

/* ad_main.c */
int ad_alloc_state(struct apple_dma *ad);
int ad_setup_bounce(struct apple_dma *ad);
void ad_release_all(struct apple_dma *ad);
void ad_free_state(struct apple_dma *ad);
struct apple_dma *ad_new_instance(struct device *dev, bool strict_mode);
void ad_remove(struct pci_dev *pdev);
bool ad_teardown(struct apple_dma *ad, bool restored);
void ad_reset_notify(struct apple_dma *ad);

/* ad_ops.c */
dma_addr_t ad_map_one(struct device *dev, phys_addr_t phys, size_t size,
		      enum dma_data_direction dir, bool may_bounce, u8 kind, u64 limit);
void ad_unmap_sg(struct device *dev, struct scatterlist *sgl, int nents,
		 enum dma_data_direction dir, unsigned long attrs);
int ad_map_sg(struct device *dev, struct scatterlist *sgl, int nents, enum dma_data_direction dir,
	      unsigned long attrs);
void *ad_alloc(struct device *dev, size_t size, dma_addr_t *handle, gfp_t gfp, unsigned long attrs);
void ad_free(struct device *dev, size_t size, void *vaddr, dma_addr_t bus, unsigned long attrs);
int ad_dma_supported(struct device *dev, u64 mask);
u64 ad_get_required_mask(struct device *dev);
size_t ad_max_mapping_size(struct device *dev);
void ad_init_ops(struct dma_map_ops *ops);

/* ad_debugfs.c */
void ad_debugfs_add(struct apple_dma *ad);

/* ad_owner.c */
int ad_claim_present(struct apple_dma *ad);
const char *ad_unusable(struct device *dev, bool configured);
bool ad_release_managed(struct apple_dma *ad);

/* ad_proto.c */
void ad_set_cmd(struct apple_dma *ad, u64 gpa);
u32 ad_doorbell(struct apple_dma *ad, u32 type, u32 count);
bool ad_gone(struct apple_dma *ad);
u32 ad_device_live_mappings(struct apple_dma *ad);
void ad_mark_gone(struct apple_dma *ad, const char *how);

/* ad_selftest.c */
void ad_selftest(struct apple_dma *ad);

/* ad_unittest.c */
u32 ad_fake_live(struct apple_dma *ad);
u32 ad_fake_version(struct apple_dma *ad);
void ad_fake_set_cmd(struct apple_dma *ad, u64 gpa);
u32 ad_fake_ring(struct apple_dma *ad);
void ad_unittest_run(void);

#endif /* AD_APPLE_DMA_H */
