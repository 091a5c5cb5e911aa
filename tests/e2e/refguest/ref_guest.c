// SPDX-License-Identifier: GPL-2.0
/*
 * ref_guest: an e2e test that drives the apple-dma companion (1b36:0015)
 * the way a guest driver written for the reference device does (issue 16):
 * it writes the command page, CMD_GPA_LO, CMD_GPA_HI and DOORBELL, and then
 * reads the page's status and the responses straight from RAM.  It NEVER
 * reads STATUS (an MMIO read would wait for the posted doorbell and hide the
 * problem).  So it passes only when the doorbell write completes the batch
 * before it returns: with QEMU's vfio-user-pci that means
 * x-no-posted-writes=on on the companion; with posted writes it fails.
 *
 * At probe, for each companion, `rounds` times four batches (protocol
 * version 2 layouts):
 *   map1    MAP of 1 entry;
 *   mapN    MAP of `many` entries plus one with len 0 in the middle (that
 *           entry: INVAL and an all-zero response; the batch: IOERR);
 *   unmap1  UNMAP of map1's id;
 *   unmapN  UNMAP of mapN's ids plus map1's id again (released: IOERR).
 * Every response field and the page's status field are checked; before each
 * doorbell the response array and the page's status are filled with 0xa5 so
 * that nothing stale can pass.  (With posted writes whether one batch reads
 * stale data is a race with the host; several rounds make losing it every
 * time unlikely.)  The outcome is one kernel log line
 *   VFA-REFGUEST refSS_result=pass|fail refSS_checks=N refSS_failed=N
 *                refSS_batches=N refSS_batches_failed=N
 *                refSS_first=BATCH.FIELD[ENTRY] refSS_live=LIVE_MAPPINGS
 * (SS: the companion's PCI slot, two hex digits) for the e2e workload.
 */
#include <linux/io.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/slab.h>

#define RG_NAME "ref_guest"
#define RG_MAX_MANY 128	/* a MAP response array of many + 1 entries fits a page */
#define RG_BUF_ORDER 2		/* 16 KiB per mapped buffer */

/* Registers and wire layouts of shared/spec/apple-dma-protocol.md. */
#define RG_REG_VERSION 0x00
#define RG_REG_MAX_ENTRIES 0x08
#define RG_REG_CMD_GPA_LO 0x10
#define RG_REG_CMD_GPA_HI 0x14
#define RG_REG_DOORBELL 0x18
#define RG_REG_LIVE_MAPPINGS 0x38
#define RG_MAP 1
#define RG_UNMAP 2
#define RG_OK 0
#define RG_IOERR 1
#define RG_INVAL 3
#define RG_POISON8 0xa5
#define RG_POISON32 0xa5a5a5a5u

struct rg_cmd {
	__le32 type;
	__le32 count;
	__le32 status;
	__le32 reserved;
	__le64 req_gpa;
	__le64 resp_gpa;
} __packed;

struct rg_map_req {
	__le64 gpa;
	__le32 len;
	__le32 flags;
} __packed;

struct rg_map_resp {
	__le64 id;
	__le64 dma_addr;
	__le32 dma_len;
	__le32 status;
} __packed;

struct rg_unmap_req {
	__le64 id;
	__le64 size;
} __packed;

struct rg_unmap_resp {
	__le64 id;
	__le32 status;
	__le32 reserved;
} __packed;

static unsigned int many = 128;
module_param(many, uint, 0444);
MODULE_PARM_DESC(many, "Entries in the large MAP and UNMAP batches, 2..128 (default 128)");

static unsigned int rounds = 8;
module_param(rounds, uint, 0444);
MODULE_PARM_DESC(rounds, "Times the four batches run, 1..1000 (default 8)");

struct rg_entry {
	struct page *page;
	u64 gpa;
	u32 len;
	u64 id;
	u64 dma_addr;
};

struct rg_dev {
	struct pci_dev *pdev;
	void __iomem *regs;
	struct rg_cmd *cmd;
	void *req;
	void *resp;
	void **pool;		/* 3 pages per round: command page, requests, responses */
	void *snap;		/* the responses as read right after the doorbell */
	u32 snap_status;	/* the page's status, read first */
	struct rg_entry *ent;	/* ent[0]: map1; ent[1..many + 1]: mapN */
	u64 want_id[RG_MAX_MANY + 2];		/* an UNMAP batch's expected responses */
	u32 want_status[RG_MAX_MANY + 2];
	unsigned int nent;
	unsigned int checks;
	unsigned int failed;
	unsigned int batches;
	unsigned int batches_failed;
	char first[48];
};

static void rg_check(struct rg_dev *rg, bool ok, const char *what, unsigned int entry,
		     u64 got, u64 want)
{
	rg->checks++;
	if (ok)
		return;
	if (!rg->failed)
		snprintf(rg->first, sizeof(rg->first), "%s[%u]", what, entry);
	if (rg->failed < 8)
		dev_err(&rg->pdev->dev, "%s[%u]: got 0x%llx, want 0x%llx\n",
			what, entry, got, want);
	rg->failed++;
}

static void rg_eq(struct rg_dev *rg, const char *what, unsigned int i, u64 got, u64 want)
{
	rg_check(rg, got == want, what, i, got, want);
}

/*
 * One batch as the reference guest rings it: the page and the request array
 * are in RAM, then CMD_GPA_LO, CMD_GPA_HI, DOORBELL; no STATUS read.  The
 * responses and the page's status are poisoned first.
 */
static void rg_ring(struct rg_dev *rg, u32 type, u32 count, size_t resp_size)
{
	u64 page = virt_to_phys(rg->cmd);

	memset(rg->resp, RG_POISON8, count * resp_size);
	rg->cmd->type = cpu_to_le32(type);
	rg->cmd->count = cpu_to_le32(count);
	rg->cmd->status = cpu_to_le32(RG_POISON32);
	rg->cmd->reserved = 0;
	rg->cmd->req_gpa = cpu_to_le64(virt_to_phys(rg->req));
	rg->cmd->resp_gpa = cpu_to_le64(virt_to_phys(rg->resp));
	/* writel orders the RAM writes above before the register writes */
	writel(lower_32_bits(page), rg->regs + RG_REG_CMD_GPA_LO);
	writel(upper_32_bits(page), rg->regs + RG_REG_CMD_GPA_HI);
	writel(1, rg->regs + RG_REG_DOORBELL);
	/*
	 * As the reference guest: the results are read at once, from RAM.
	 * (Checked afterwards from this copy, so that the time the checks take
	 * does not give a posted doorbell time to land.)
	 */
	rg->snap_status = le32_to_cpu(READ_ONCE(rg->cmd->status));
	memcpy(rg->snap, rg->resp, count * resp_size);
	rg->batches++;
}

/* Returns the value of rg->failed before the batch (for rg_batch_done). */
static unsigned int rg_map(struct rg_dev *rg, const char *name, unsigned int first,
			   unsigned int count, unsigned int bad)
{
	struct rg_map_req *req = rg->req;
	struct rg_map_resp *resp = rg->snap;
	unsigned int i, failed = rg->failed;
	char what[32];

	for (i = 0; i < count; i++) {
		struct rg_entry *e = &rg->ent[first + i];

		req[i].gpa = cpu_to_le64(e->gpa);
		req[i].len = cpu_to_le32(i == bad ? 0 : e->len);
		req[i].flags = 0;
	}
	rg_ring(rg, RG_MAP, count, sizeof(*resp));

	snprintf(what, sizeof(what), "%s.page_status", name);
	rg_eq(rg, what, 0, rg->snap_status, bad < count ? RG_IOERR : RG_OK);
	for (i = 0; i < count; i++) {
		struct rg_entry *e = &rg->ent[first + i];
		u64 id = le64_to_cpu(resp[i].id), dma = le64_to_cpu(resp[i].dma_addr);

		if (i == bad) {
			snprintf(what, sizeof(what), "%s.status", name);
			rg_eq(rg, what, i, le32_to_cpu(resp[i].status), RG_INVAL);
			snprintf(what, sizeof(what), "%s.id", name);
			rg_eq(rg, what, i, id, 0);
			snprintf(what, sizeof(what), "%s.dma_addr", name);
			rg_eq(rg, what, i, dma, 0);
			snprintf(what, sizeof(what), "%s.dma_len", name);
			rg_eq(rg, what, i, le32_to_cpu(resp[i].dma_len), 0);
			e->id = 0;
			continue;
		}
		snprintf(what, sizeof(what), "%s.status", name);
		rg_eq(rg, what, i, le32_to_cpu(resp[i].status), RG_OK);
		snprintf(what, sizeof(what), "%s.dma_len", name);
		rg_eq(rg, what, i, le32_to_cpu(resp[i].dma_len), e->len);
		snprintf(what, sizeof(what), "%s.id_nonzero", name);
		rg_check(rg, id != 0 && id != 0xa5a5a5a5a5a5a5a5ull, what, i, id, 1);
		snprintf(what, sizeof(what), "%s.dma_addr_nonzero", name);
		rg_check(rg, dma != 0 && dma != 0xa5a5a5a5a5a5a5a5ull && dma + e->len > dma,
			 what, i, dma, 1);
		/* a DART keeps the offset inside its page; guest RAM is mapped 4 KiB aligned */
		snprintf(what, sizeof(what), "%s.dma_addr_offset", name);
		rg_eq(rg, what, i, dma & 0xfff, e->gpa & 0xfff);
		e->id = id;
		e->dma_addr = dma;
	}
	return failed;
}

/* Ids unique, bus ranges disjoint, over every entry mapped so far. */
static void rg_check_distinct(struct rg_dev *rg)
{
	unsigned int i, j;

	for (i = 0; i < rg->nent; i++) {
		struct rg_entry *a = &rg->ent[i];

		if (!a->id)
			continue;
		for (j = i + 1; j < rg->nent; j++) {
			struct rg_entry *b = &rg->ent[j];

			if (!b->id)
				continue;
			rg_check(rg, a->id != b->id, "ids_unique", j, b->id, i);
			rg_check(rg, a->dma_addr + a->len <= b->dma_addr ||
				 b->dma_addr + b->len <= a->dma_addr,
				 "dma_ranges_disjoint", j, b->dma_addr, a->dma_addr);
		}
	}
}

/* UNMAP of the ids of ent[first..first + count), then stale (NULL: none), which must be IOERR. */
static unsigned int rg_unmap(struct rg_dev *rg, const char *name, unsigned int first,
			     unsigned int count, const struct rg_entry *stale)
{
	struct rg_unmap_req *req = rg->req;
	struct rg_unmap_resp *resp = rg->snap;
	u64 *want_id = rg->want_id;
	u32 *want_status = rg->want_status;
	unsigned int i, n = 0, failed = rg->failed;
	char what[32];

	for (i = 0; i < count; i++) {
		const struct rg_entry *e = &rg->ent[first + i];

		if (!e->id)
			continue;
		req[n].id = cpu_to_le64(e->id);
		req[n].size = cpu_to_le64(e->len);
		want_id[n] = e->id;
		want_status[n++] = RG_OK;
	}
	if (stale) {
		req[n].id = cpu_to_le64(stale->id);
		req[n].size = cpu_to_le64(stale->len);
		want_id[n] = stale->id;
		want_status[n++] = RG_IOERR;
	}
	rg_ring(rg, RG_UNMAP, n, sizeof(*resp));

	snprintf(what, sizeof(what), "%s.page_status", name);
	rg_eq(rg, what, 0, rg->snap_status, stale ? RG_IOERR : RG_OK);
	for (i = 0; i < n; i++) {
		snprintf(what, sizeof(what), "%s.id", name);
		rg_eq(rg, what, i, le64_to_cpu(resp[i].id), want_id[i]);
		snprintf(what, sizeof(what), "%s.status", name);
		rg_eq(rg, what, i, le32_to_cpu(resp[i].status), want_status[i]);
		snprintf(what, sizeof(what), "%s.reserved", name);
		rg_eq(rg, what, i, le32_to_cpu(resp[i].reserved), 0);
	}
	return failed;
}

static void rg_batch_done(struct rg_dev *rg, unsigned int failed_before)
{
	if (rg->failed != failed_before)
		rg->batches_failed++;
}

static void rg_free(struct rg_dev *rg)
{
	unsigned int i;

	if (rg->ent) {
		for (i = 0; i < rg->nent; i++)
			if (rg->ent[i].page)
				__free_pages(rg->ent[i].page, RG_BUF_ORDER);
		kfree(rg->ent);
	}
	if (rg->pool) {
		for (i = 0; i < 3 * rounds; i++)
			free_page((unsigned long)rg->pool[i]);
		kfree(rg->pool);
	}
	free_page((unsigned long)rg->snap);
}

static int rg_alloc(struct rg_dev *rg)
{
	unsigned int i;

	rg->pool = kcalloc(3 * rounds, sizeof(*rg->pool), GFP_KERNEL);
	rg->snap = (void *)get_zeroed_page(GFP_KERNEL);
	rg->nent = many + 2;
	rg->ent = kcalloc(rg->nent, sizeof(*rg->ent), GFP_KERNEL);
	if (!rg->pool || !rg->snap || !rg->ent)
		return -ENOMEM;
	for (i = 0; i < 3 * rounds; i++) {
		rg->pool[i] = (void *)get_zeroed_page(GFP_KERNEL);
		if (!rg->pool[i])
			return -ENOMEM;
	}
	for (i = 0; i < rg->nent; i++) {
		struct rg_entry *e = &rg->ent[i];
		u32 off = (i % 4) * 512;

		e->page = alloc_pages(GFP_KERNEL | __GFP_ZERO, RG_BUF_ORDER);
		if (!e->page)
			return -ENOMEM;
		/* lengths 4 KiB..12 KiB + 400, at offsets 0..1536 inside 16 KiB */
		e->gpa = page_to_phys(e->page) + off;
		e->len = 4096 * (1 + i % 3) + 100 * (i % 5);
	}
	return 0;
}

static int rg_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct rg_dev *rg;
	unsigned int slot = PCI_SLOT(pdev->devfn);
	u32 version, max_entries, live;
	unsigned int r;
	int ret;

	if (many < 2 || many > RG_MAX_MANY || rounds < 1 || rounds > 1000)
		return -EINVAL;
	rg = devm_kzalloc(&pdev->dev, sizeof(*rg), GFP_KERNEL);
	if (!rg)
		return -ENOMEM;
	rg->pdev = pdev;
	ret = pci_enable_device_mem(pdev);
	if (ret)
		return ret;
	ret = pci_request_region(pdev, 0, RG_NAME);
	if (ret)
		goto disable;
	rg->regs = pci_iomap(pdev, 0, 0);
	if (!rg->regs) {
		ret = -ENOMEM;
		goto release;
	}
	ret = rg_alloc(rg);
	if (ret)
		goto free;
	pci_set_drvdata(pdev, rg);

	/* Reads before any doorbell, as the reference does at probe. */
	version = readl(rg->regs + RG_REG_VERSION);
	max_entries = readl(rg->regs + RG_REG_MAX_ENTRIES);
	rg_eq(rg, "version", 0, version, 2);
	rg_check(rg, max_entries >= many + 1, "max_entries", 0, max_entries, many + 1);
	for (r = 0; r < rounds && version == 2 && max_entries >= many + 1; r++) {
		/*
		 * Fresh command page and arrays each round, as a driver that
		 * allocates them per request: the host has not touched them yet.
		 */
		rg->cmd = rg->pool[3 * r];
		rg->req = rg->pool[3 * r + 1];
		rg->resp = rg->pool[3 * r + 2];
		rg_batch_done(rg, rg_map(rg, "map1", 0, 1, UINT_MAX));
		rg_batch_done(rg, rg_map(rg, "mapN", 1, many + 1, many / 2));
		rg_check_distinct(rg);
		rg_batch_done(rg, rg_unmap(rg, "unmap1", 0, 1, NULL));
		rg_batch_done(rg, rg_unmap(rg, "unmapN", 1, many + 1, &rg->ent[0]));
	}
	/* Only now an MMIO read: the device's count of this guest's live ids. */
	live = readl(rg->regs + RG_REG_LIVE_MAPPINGS);
	dev_info(&pdev->dev,
		 "VFA-REFGUEST ref%02x_result=%s ref%02x_checks=%u ref%02x_failed=%u ref%02x_batches=%u ref%02x_batches_failed=%u ref%02x_first=%s ref%02x_live=%u\n",
		 slot, rg->failed ? "fail" : "pass", slot, rg->checks, slot, rg->failed,
		 slot, rg->batches, slot, rg->batches_failed,
		 slot, rg->failed ? rg->first : "none", slot, live);
	return 0;

free:
	rg_free(rg);
	pci_iounmap(pdev, rg->regs);
release:
	pci_release_region(pdev, 0);
disable:
	pci_disable_device(pdev);
	dev_err(&pdev->dev, "VFA-REFGUEST ref%02x_result=error ref%02x_errno=%d\n",
		slot, slot, ret);
	return ret;
}

static void rg_remove(struct pci_dev *pdev)
{
	struct rg_dev *rg = pci_get_drvdata(pdev);

	rg_free(rg);
	pci_iounmap(pdev, rg->regs);
	pci_release_region(pdev, 0);
	pci_disable_device(pdev);
}

static const struct pci_device_id rg_ids[] = {
	{ PCI_DEVICE(0x1b36, 0x0015) },
	{ }
};
MODULE_DEVICE_TABLE(pci, rg_ids);

static struct pci_driver rg_driver = {
	.name = RG_NAME,
	.id_table = rg_ids,
	.probe = rg_probe,
	.remove = rg_remove,
};
module_pci_driver(rg_driver);

MODULE_DESCRIPTION("e2e test: drives apple-dma-pci as a reference guest does, never reading STATUS");
MODULE_LICENSE("GPL");
