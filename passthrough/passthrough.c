// SPDX-License-Identifier: MIT
/* The passthrough function model; the policy is described in passthrough.h. */
#include "passthrough.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "errmsg.h"
#include "le.h"
#include "log.h"

/* Standard config-space offsets (PCI Local Bus 3.0, type 0 header). */
#define CFG_COMMAND 0x04
#define CFG_STATUS 0x06
#define CFG_HEADER_TYPE 0x0E
#define CFG_BAR0 0x10
#define CFG_BAR_END 0x28 /* one past BAR5 */
#define CFG_ROM 0x30
#define CFG_CAP_PTR 0x34
#define STATUS_CAP_LIST 0x10
#define CFG_SPACE_LEGACY 256
#define CFG_SPACE_EXPRESS 4096

#define CAP_ID_PM 0x01
#define CAP_ID_MSI 0x05
#define CAP_ID_EXP 0x10
#define CAP_ID_MSIX 0x11
#define EXT_CAP_ID_REBAR 0x0015
#define EXT_CAP_ID_AER 0x0001
#define EXT_CAP_ID_SRIOV 0x0010
#define EXT_CAP_ID_LTR 0x0018
#define EXT_CAP_ID_L1SS 0x001E
#define PM_CSR 4       /* PMCSR, PMCSR_BSE, Data: 4 bytes from the capability + 4 */
#define AER_REGS 0x28  /* +4..+0x2B: status, mask, severity (both kinds), control, header log */
#define SRIOV_REGS 0x3C /* +4..+0x3F: control, NumVFs, VF BARs... */
#define LTR_REGS 4     /* +4..+7: max snoop / no-snoop latency */
#define L1SS_REGS 0x0C /* +4..+0xF: capabilities, control 1 and 2 */
#define MSIX_TABLE 4   /* Table Offset/BIR, from the capability start */
#define MSIX_PBA 8     /* PBA Offset/BIR */
#define MSIX_BIR 0x7

#define MSIX_CTRL 2            /* Message Control, from the capability start */
#define MSIX_TABLE_SIZE 0x07FF /* N - 1 */
#define MSIX_CAP_LEN 12
#define MSI_CTRL 2
#define MSI_CTRL_MMC 0x000E /* Multiple Message Capable: log2(vectors) */
#define MSI_CTRL_64BIT 0x0080
#define MSI_CTRL_MASKING 0x0100
#define EXP_DEVCAP 0x04
#define EXP_DEVCAP_FLR 0x10000000u
#define EXP_DEVCTL 0x08
#define EXP_DEVCTL_BCR_FLR 0x8000u /* Initiate Function Level Reset */
#define EXP_DEVCTL2 0x28
#define REBAR_CAP_LEN (4 + 8 * HD_NUM_BARS)

#define MAX_CAPS 64 /* guard against capability-list loops */

enum byte_policy {
	POLICY_FORWARD,      /* to the host in aligned 1/2/4-byte writes */
	POLICY_FORWARD_BYTE, /* to the host one byte at a time (COMMAND) */
	POLICY_DROP,         /* never reaches the host */
	POLICY_EMULATE,      /* BAR registers: kept here */
};

/* A byte range of config space whose writes are dropped. */
struct drop_range {
	uint32_t start;
	uint32_t len;
};

#define MAX_DROP_RANGES 16

/* A range of a BAR the VMM may not touch (the host's MSI-X table or PBA). */
struct msix_window {
	unsigned bar;
	uint64_t off, len;
};

struct passthrough {
	struct host_device *hd;
	struct hd_identity id;
	uint32_t config_size;

	struct hd_bar_info bar[HD_NUM_BARS]; /* upper half of a 64-bit BAR: size 0, HD_BAR_UNUSED */
	bool bar_upper_half[HD_NUM_BARS];
	volatile uint8_t *bar_ptr[HD_NUM_BARS]; /* from bar_map, NULL: trap through mmio_* */
	uint32_t bar_reg[HD_NUM_BARS];          /* emulated BAR registers */
	uint32_t rom_reg;

	uint16_t command_at_claim;
	uint16_t command; /* last COMMAND value forwarded to the host */

	/* Capabilities (0: absent). */
	uint8_t msi_pos, msix_pos, exp_pos, pm_pos;
	bool flr_capable; /* the host's DEVCAP offers FLR: emulated on DEVCTL writes */
	uint16_t msix_host_ctrl_size; /* host table size (N), to clamp */
	bool hide_msi;
	uint8_t msi_link_off; /* byte that points to the MSI cap (0x34 or prev + 1) */
	uint8_t msi_next;     /* what that byte reads while MSI is hidden */
	bool hide_msix;       /* opts.prefer_msi on a function with both */
	uint8_t msix_link_off;
	uint8_t msix_next;

	struct drop_range drop[MAX_DROP_RANGES];
	unsigned ndrop;

	/* The host's MSI-X table and PBA inside their BARs: never written, read as 0. */
	struct msix_window msix_win[2];
	unsigned nmsix_win;

	/* Interrupts. */
	unsigned nvectors;
	unsigned irq_index; /* PT_IRQ_MSIX, PT_IRQ_MSI, or PT_IRQ_NUM_INDEXES (none) */
	bool have_sink;
	struct pt_irq_sink sink;
	uint64_t host_mask[HD_IRQ_WORDS];
	uint64_t latched[HD_IRQ_WORDS];

	struct passthrough_stats stats;
};

/* The host function is gone (surprise removal): accesses become all ones / dropped. */
static bool gone(const struct passthrough *pt)
{
	return !host_device_present(pt->hd);
}

/* A host call failed because the function just went away. */
static bool gone_now(const struct passthrough *pt, int rc)
{
	return rc == -ENODEV && gone(pt);
}

bool passthrough_present(const struct passthrough *pt)
{
	return !gone(pt);
}

static int cfg_read(struct passthrough *pt, uint32_t off, unsigned width, uint32_t *v)
{
	return pt->hd->ops->config_read(pt->hd, off, width, v);
}

/*
 * Keep guest writes to [start, start + len) from the host.  A full table is
 * an error, never a rule silently left out (the table holds every rule the
 * policy makes: one each for MSI, MSI-X, DEVCTL, DEVCTL2, ReBAR, PMCSR, AER,
 * SR-IOV, LTR and L1SS).
 */
static int add_drop(struct passthrough *pt, uint32_t start, uint32_t len)
{
	if (start >= pt->config_size)
		return 0;
	if (pt->ndrop == MAX_DROP_RANGES)
		return -ENOSPC;
	if (len > pt->config_size - start)
		len = pt->config_size - start;
	pt->drop[pt->ndrop++] = (struct drop_range){ start, len };
	return 0;
}

/* Marks dword off as visited; false when it was already (a capability list loop). */
static bool first_visit(uint64_t *seen, uint32_t off)
{
	uint32_t dw = off / 4;
	uint64_t bit = 1ULL << (dw % 64);

	if (seen[dw / 64] & bit)
		return false;
	seen[dw / 64] |= bit;
	return true;
}

static uint32_t msi_cap_len(uint16_t ctrl)
{
	uint32_t len = (ctrl & MSI_CTRL_64BIT) ? 14 : 10;

	if (ctrl & MSI_CTRL_MASKING)
		len += 10; /* reserved/pad, mask bits, pending bits */
	return len;
}

/* Walk the standard capability list, remembering the ones the policy needs. */
static int scan_caps(struct passthrough *pt)
{
	uint32_t status, ptr, link = CFG_CAP_PTR;
	uint64_t seen[CFG_SPACE_LEGACY / 4 / 64] = { 0 };
	int rc;

	rc = cfg_read(pt, CFG_STATUS, 2, &status);
	if (rc < 0)
		return rc;
	if (!(status & STATUS_CAP_LIST))
		return 0;
	rc = cfg_read(pt, CFG_CAP_PTR, 1, &ptr);
	if (rc < 0)
		return rc;
	for (unsigned n = 0; n < MAX_CAPS; n++) {
		uint32_t hdr;

		ptr &= 0xFC;
		if (ptr < 0x40 || !first_visit(seen, ptr))
			break;
		rc = cfg_read(pt, ptr, 2, &hdr);
		if (rc < 0)
			return rc;
		switch (hdr & 0xFF) {
		case CAP_ID_MSI:
			if (!pt->msi_pos) {
				pt->msi_pos = (uint8_t)ptr;
				pt->msi_link_off = (uint8_t)link;
				pt->msi_next = (uint8_t)(hdr >> 8);
			}
			break;
		case CAP_ID_MSIX:
			if (!pt->msix_pos) {
				pt->msix_pos = (uint8_t)ptr;
				pt->msix_link_off = (uint8_t)link;
				pt->msix_next = (uint8_t)(hdr >> 8);
			}
			break;
		case CAP_ID_EXP:
			if (!pt->exp_pos)
				pt->exp_pos = (uint8_t)ptr;
			break;
		case CAP_ID_PM:
			if (!pt->pm_pos)
				pt->pm_pos = (uint8_t)ptr;
			break;
		default:
			break;
		}
		link = ptr + 1;
		ptr = hdr >> 8;
	}
	return 0;
}

/*
 * Walk the extended capability list for Resizable BAR (the first one: a
 * function has at most one).  The list comes from the host: a loop ends the
 * walk, it does not repeat it.
 */
/*
 * Extended capabilities whose registers are the host's (docs/passthrough.md,
 * "Config space", decided register by register): writes to these many bytes
 * after the header are dropped, never past the next capability.
 */
static const struct {
	uint16_t id;
	uint32_t regs;
} host_ext_caps[] = {
	{ EXT_CAP_ID_AER, AER_REGS },
	{ EXT_CAP_ID_SRIOV, SRIOV_REGS },
	{ EXT_CAP_ID_LTR, LTR_REGS },
	{ EXT_CAP_ID_L1SS, L1SS_REGS },
};

static int drop_ext_cap(struct passthrough *pt, uint32_t off, uint32_t hdr)
{
	uint32_t next = (hdr >> 20) & 0xFFC;

	for (size_t i = 0; i < sizeof(host_ext_caps) / sizeof(host_ext_caps[0]); i++) {
		uint32_t len = host_ext_caps[i].regs;

		if ((hdr & 0xFFFF) != host_ext_caps[i].id)
			continue;
		if (next > off && next - off - 4 < len)
			len = next - off - 4;
		return add_drop(pt, off + 4, len);
	}
	return 0;
}

static int scan_ext_caps(struct passthrough *pt, uint32_t *rebar_pos)
{
	uint32_t off = CFG_SPACE_LEGACY;
	uint64_t seen[CFG_SPACE_EXPRESS / 4 / 64] = { 0 };

	*rebar_pos = 0;
	for (unsigned n = 0; n < MAX_CAPS && off >= CFG_SPACE_LEGACY && off + 4 <= pt->config_size; n++) {
		uint32_t hdr;
		int rc;

		if (!first_visit(seen, off))
			break;
		rc = cfg_read(pt, off, 4, &hdr);
		if (rc < 0)
			return rc;
		if (hdr == 0 || hdr == 0xFFFFFFFF)
			break;
		if ((hdr & 0xFFFF) == EXT_CAP_ID_REBAR && !*rebar_pos)
			*rebar_pos = off;
		rc = drop_ext_cap(pt, off, hdr);
		if (rc < 0)
			return rc;
		off = (hdr >> 20) & 0xFFC;
	}
	return 0;
}

static int setup_bars(struct passthrough *pt, char *err, size_t errlen)
{
	for (unsigned i = 0; i < HD_NUM_BARS; i++) {
		struct hd_bar_info *b = &pt->bar[i];
		volatile void *ptr = NULL;
		int rc;

		if (pt->bar_upper_half[i])
			continue;
		rc = pt->hd->ops->bar_info(pt->hd, i, b);
		if (rc < 0) {
			vfa_set_err(err, errlen, "BAR%u info: %s", i, host_device_error(pt->hd));
			return rc;
		}
		if (b->type == HD_BAR_UNUSED || b->size == 0) {
			*b = (struct hd_bar_info){ 0 };
			continue;
		}
		if ((b->size & (b->size - 1)) != 0 || (b->type == HD_BAR_MEM64 && i + 1 >= HD_NUM_BARS) ||
		    (b->type != HD_BAR_MEM64 && b->size > (1ULL << 31)) ||
		    (b->type == HD_BAR_IO && b->size > 256)) {
			vfa_set_err(err, errlen, "BAR%u: the host reports an impossible BAR (size 0x%llx, type %d)", i,
				(unsigned long long)b->size, (int)b->type);
			return -EINVAL;
		}
		if (b->type == HD_BAR_MEM64)
			pt->bar_upper_half[i + 1] = true;
		if (b->type != HD_BAR_IO) {
			rc = pt->hd->ops->bar_map(pt->hd, i, &ptr);
			if (rc == 0)
				pt->bar_ptr[i] = (volatile uint8_t *)ptr;
			else if (rc != -EOPNOTSUPP) {
				vfa_set_err(err, errlen, "BAR%u map: %s", i, host_device_error(pt->hd));
				return rc;
			}
		}
	}
	return 0;
}

/* The type bits a BAR register shows below its address. */
static uint32_t bar_type_bits(const struct hd_bar_info *b)
{
	switch (b->type) {
	case HD_BAR_IO:
		return 0x1;
	case HD_BAR_MEM32:
		return b->prefetchable ? 0x8 : 0x0;
	case HD_BAR_MEM64:
		return 0x4 | (b->prefetchable ? 0x8 : 0x0);
	case HD_BAR_UNUSED:
	default:
		return 0;
	}
}

/* Keep only the address bits the BAR's size lets software set. */
static void normalize_bar(struct passthrough *pt, unsigned i)
{
	if (pt->bar_upper_half[i]) {
		uint64_t size = pt->bar[i - 1].size;

		pt->bar_reg[i] &= ~(uint32_t)((size - 1) >> 32);
		return;
	}
	const struct hd_bar_info *b = &pt->bar[i];
	if (b->type == HD_BAR_UNUSED) {
		pt->bar_reg[i] = 0;
		return;
	}
	uint32_t low_mask = b->type == HD_BAR_IO ? 0x3 : 0xF;
	pt->bar_reg[i] = (pt->bar_reg[i] & ~(uint32_t)(b->size - 1) & ~low_mask) | bar_type_bits(b);
}

struct passthrough *passthrough_create(struct host_device *hd, char *err, size_t errlen)
{
	return passthrough_create_opts(hd, NULL, err, errlen);
}

struct passthrough *passthrough_create_opts(struct host_device *hd, const struct passthrough_opts *opts, char *err,
					    size_t errlen)
{
	struct passthrough *pt;
	uint32_t value;
	int rc;

	pt = calloc(1, sizeof(*pt));
	if (!pt) {
		vfa_set_err(err, errlen, "out of memory");
		return NULL;
	}
	pt->hd = hd;
	pt->config_size = CFG_SPACE_LEGACY;
	pt->irq_index = PT_IRQ_NUM_INDEXES;

	rc = hd->ops->identity(hd, &pt->id);
	if (rc < 0) {
		vfa_set_err(err, errlen, "identity: %s", host_device_error(hd));
		goto fail;
	}
	rc = cfg_read(pt, CFG_COMMAND, 2, &value);
	if (rc < 0) {
		vfa_set_err(err, errlen, "config read: %s", host_device_error(hd));
		goto fail;
	}
	pt->command = pt->command_at_claim = (uint16_t)value;

	rc = setup_bars(pt, err, errlen);
	if (rc < 0)
		goto fail;
	for (unsigned i = 0; i < HD_NUM_BARS; i++)
		normalize_bar(pt, i);

	rc = scan_caps(pt);
	if (rc < 0) {
		vfa_set_err(err, errlen, "capability list: %s", host_device_error(hd));
		goto fail;
	}
	/* Extended config space only if the host lets us read it. */
	uint32_t rebar_pos = 0;
	if (pt->exp_pos && cfg_read(pt, CFG_SPACE_LEGACY, 4, &value) == 0) {
		pt->config_size = CFG_SPACE_EXPRESS;
		rc = scan_ext_caps(pt, &rebar_pos);
		if (rc < 0) {
			vfa_set_err(err, errlen, "extended capability list: %s", host_device_error(hd));
			goto fail;
		}
	}

	rc = hd->ops->irq_setup(hd, &pt->nvectors);
	if (rc < 0) {
		vfa_set_err(err, errlen, "interrupt setup: %s", host_device_error(hd));
		goto fail;
	}
	if (pt->nvectors > HD_MAX_VECTORS)
		pt->nvectors = HD_MAX_VECTORS;
	if (pt->nvectors > 0) {
		/* The dext sets up MSI-X when the function has it, else MSI.  The
		 * guest is offered the same, or MSI alone when asked (prefer_msi:
		 * the host's vectors then back the guest's MSI messages). */
		if (pt->msix_pos && !(opts && opts->prefer_msi && pt->msi_pos)) {
			pt->irq_index = PT_IRQ_MSIX;
			pt->hide_msi = pt->msi_pos != 0;
		} else if (pt->msi_pos) {
			pt->irq_index = PT_IRQ_MSI;
			pt->hide_msix = pt->msix_pos != 0;
		} else {
			log_warn("passthrough: the host offers %u vectors but the function has neither MSI nor MSI-X; "
				 "no interrupts for the guest",
				 pt->nvectors);
		}
	}
	if (pt->msix_pos) {
		rc = cfg_read(pt, pt->msix_pos + MSIX_CTRL, 2, &value);
		if (rc < 0) {
			vfa_set_err(err, errlen, "MSI-X capability: %s", host_device_error(hd));
			goto fail;
		}
		pt->msix_host_ctrl_size = (uint16_t)((value & MSIX_TABLE_SIZE) + 1);
		rc = add_drop(pt, pt->msix_pos, MSIX_CAP_LEN);
		if (rc < 0)
			goto full;
		/* Table (16 bytes per entry) and PBA (a bit per entry, in qwords). */
		for (unsigned w = 0; w < 2; w++) {
			uint32_t loc;

			if (cfg_read(pt, pt->msix_pos + (w ? MSIX_PBA : MSIX_TABLE), 4, &loc) < 0 ||
			    (loc & MSIX_BIR) >= HD_NUM_BARS)
				continue;
			pt->msix_win[pt->nmsix_win++] = (struct msix_window){
				.bar = loc & MSIX_BIR,
				.off = loc & ~(uint32_t)MSIX_BIR,
				.len = w ? ((uint64_t)pt->msix_host_ctrl_size + 63) / 64 * 8
					 : (uint64_t)pt->msix_host_ctrl_size * 16,
			};
		}
	}
	if (pt->pm_pos) {
		/* PMCSR: a guest's D3hot would lose the host's BAR setup under the dext. */
		rc = add_drop(pt, pt->pm_pos + PM_CSR, 4);
		if (rc < 0)
			goto full;
	}
	if (pt->msi_pos) {
		rc = cfg_read(pt, pt->msi_pos + MSI_CTRL, 2, &value);
		if (rc < 0) {
			vfa_set_err(err, errlen, "MSI capability: %s", host_device_error(hd));
			goto fail;
		}
		rc = add_drop(pt, pt->msi_pos, msi_cap_len((uint16_t)value));
		if (rc < 0)
			goto full;
	}
	if (pt->exp_pos) {
		if (cfg_read(pt, pt->exp_pos + EXP_DEVCAP, 4, &value) == 0)
			pt->flr_capable = (value & EXP_DEVCAP_FLR) != 0;
		rc = add_drop(pt, pt->exp_pos + EXP_DEVCTL, 2);
		if (rc == 0)
			rc = add_drop(pt, pt->exp_pos + EXP_DEVCTL2, 2);
		if (rc < 0)
			goto full;
	}
	if (rebar_pos) {
		/*
		 * Its length follows the number of resizable BARs (first control
		 * register, bits 7:5): dropping a fixed 6 entries would also drop
		 * writes to a capability placed right after a shorter one.
		 */
		uint32_t nbars = 0, len = REBAR_CAP_LEN;
		if (cfg_read(pt, rebar_pos + 8, 4, &value) == 0)
			nbars = (value >> 5) & 7;
		if (nbars >= 1 && nbars <= HD_NUM_BARS)
			len = 4 + 8 * nbars;
		rc = add_drop(pt, rebar_pos + 4, len - 4);
		if (rc < 0)
			goto full;
	}

	/* Nothing may become pending before the VMM asks for a vector. */
	memset(pt->host_mask, 0, sizeof(pt->host_mask));
	rc = hd->ops->irq_set_mask(hd, pt->host_mask);
	if (rc < 0) {
		vfa_set_err(err, errlen, "interrupt mask: %s", host_device_error(hd));
		goto fail;
	}
	pt->stats.host_vectors = pt->nvectors;
	return pt;
full:
	vfa_set_err(err, errlen, "config policy: more protected ranges than the %d the table holds", MAX_DROP_RANGES);
fail:
	free(pt);
	return NULL;
}

void passthrough_destroy(struct passthrough *pt)
{
	if (!pt)
		return;
	memset(pt->host_mask, 0, sizeof(pt->host_mask));
	if (!gone(pt) && pt->hd->ops->irq_set_mask(pt->hd, pt->host_mask) < 0)
		log_warn("passthrough: masking host vectors: %s", host_device_error(pt->hd));
	free(pt);
}

const struct hd_identity *passthrough_identity(const struct passthrough *pt)
{
	return &pt->id;
}

uint32_t passthrough_config_size(const struct passthrough *pt)
{
	return pt->config_size;
}

static bool range_ok(uint64_t offset, uint64_t len, uint64_t size)
{
	return offset <= size && len <= size - offset;
}

static enum byte_policy policy_of(const struct passthrough *pt, uint32_t off)
{
	if (off == CFG_COMMAND || off == CFG_COMMAND + 1)
		return POLICY_FORWARD_BYTE;
	if (off == CFG_STATUS || off == CFG_STATUS + 1)
		return POLICY_DROP;
	if ((off >= CFG_BAR0 && off < CFG_BAR_END) || (off >= CFG_ROM && off < CFG_ROM + 4))
		return POLICY_EMULATE;
	for (unsigned i = 0; i < pt->ndrop; i++)
		if (off >= pt->drop[i].start && off - pt->drop[i].start < pt->drop[i].len)
			return POLICY_DROP;
	return POLICY_FORWARD;
}

/* Overlay the emulated and policy-adjusted bytes on what the host returned. */
static void overlay_config(const struct passthrough *pt, uint32_t base, uint8_t *buf, uint32_t len)
{
	uint32_t end = base + len;

	/* BARs and the ROM BAR: only the bytes the read covers. */
	for (uint32_t off = base > CFG_BAR0 ? base : CFG_BAR0; off < end && off < CFG_ROM + 4; off++) {
		if (off < CFG_BAR_END)
			buf[off - base] = (uint8_t)(pt->bar_reg[(off - CFG_BAR0) / 4] >> (8 * (off % 4)));
		else if (off >= CFG_ROM)
			buf[off - base] = (uint8_t)(pt->rom_reg >> (8 * (off - CFG_ROM)));
	}
	if (pt->hide_msi && pt->msi_link_off >= base && pt->msi_link_off < end)
		buf[pt->msi_link_off - base] = pt->msi_next;
	if (pt->hide_msix && pt->msix_link_off >= base && pt->msix_link_off < end)
		buf[pt->msix_link_off - base] = pt->msix_next;
	/* Clamp the MSI-X table size to the vectors the host set up. */
	if (pt->irq_index == PT_IRQ_MSIX && pt->msix_host_ctrl_size > pt->nvectors) {
		uint32_t ctrl = pt->msix_pos + MSIX_CTRL;

		if (ctrl >= base && ctrl + 2 <= base + len) {
			uint16_t v = (uint16_t)le_load(buf + (ctrl - base), 2);

			v = (uint16_t)((v & ~MSIX_TABLE_SIZE) | ((pt->nvectors - 1) & MSIX_TABLE_SIZE));
			le_store(buf + (ctrl - base), v, 2);
		}
	}
	/* Likewise MSI's Multiple Message Capable (log2 of the vectors). */
	if (pt->irq_index == PT_IRQ_MSI) {
		uint32_t ctrl = pt->msi_pos + MSI_CTRL;

		if (ctrl >= base && ctrl < end) {
			unsigned host_log2 = (buf[ctrl - base] & MSI_CTRL_MMC) >> 1, log2 = 0;

			while ((2u << log2) <= pt->nvectors && log2 < 5)
				log2++;
			if (host_log2 > log2)
				buf[ctrl - base] = (uint8_t)((buf[ctrl - base] & ~MSI_CTRL_MMC) | (log2 << 1));
		}
	}
}

int passthrough_config_read(struct passthrough *pt, uint32_t offset, void *buf, uint32_t len)
{
	uint8_t tmp[CFG_SPACE_EXPRESS];
	uint32_t start, end;
	int rc;

	if (!range_ok(offset, len, pt->config_size))
		return -EINVAL;
	if (len == 0)
		return 0;
	/* Read whole dwords so that multi-byte fields are adjusted whole. */
	start = offset & ~3u;
	end = (offset + len + 3) & ~3u;
	rc = gone(pt) ? -ENODEV : pt->hd->ops->config_read_block(pt->hd, start, tmp, end - start);
	if (gone_now(pt, rc)) {
		/* As a missing function: all ones, the emulated BARs included. */
		memset(buf, 0xFF, len);
		pt->stats.removed_reads++;
		return 0;
	}
	if (rc < 0)
		return rc;
	overlay_config(pt, start, tmp, end - start);
	memcpy(buf, tmp + (offset - start), len);
	return 0;
}

static int host_cfg_write(struct passthrough *pt, uint32_t off, unsigned width, uint32_t value)
{
	int rc = pt->hd->ops->config_write(pt->hd, off, width, value);

	if (rc < 0)
		return rc;
	pt->stats.config_writes_forwarded++;
	return 0;
}

/* Forward [off, end) as naturally aligned writes of 4, 2 or 1 bytes. */
static int forward_run(struct passthrough *pt, uint32_t off, uint32_t end, const uint8_t *src)
{
	while (off < end) {
		unsigned width = 4;
		int rc;

		while (width > 1 && (off % width != 0 || end - off < width))
			width /= 2;
		rc = host_cfg_write(pt, off, width, (uint32_t)le_load(src, width));
		if (rc < 0)
			return rc;
		off += width;
		src += width;
	}
	return 0;
}

int passthrough_config_write(struct passthrough *pt, uint32_t offset, const void *buf, uint32_t len)
{
	const uint8_t *src = buf;
	bool touched[HD_NUM_BARS + 1] = { false };
	uint32_t i = 0;
	int rc = 0;

	if (!range_ok(offset, len, pt->config_size))
		return -EINVAL;
	if (gone(pt)) {
		pt->stats.removed_writes++;
		return 0;
	}
	while (i < len && rc == 0) {
		uint32_t off = offset + i;
		uint32_t j;

		switch (policy_of(pt, off)) {
		case POLICY_DROP:
			pt->stats.config_bytes_dropped++;
			i++;
			break;
		case POLICY_EMULATE:
			if (off >= CFG_ROM) {
				unsigned shift = 8 * (off - CFG_ROM);

				pt->rom_reg = (pt->rom_reg & ~(0xFFu << shift)) | ((uint32_t)src[i] << shift);
				touched[HD_NUM_BARS] = true;
			} else {
				unsigned bar = (off - CFG_BAR0) / 4, shift = 8 * ((off - CFG_BAR0) % 4);

				pt->bar_reg[bar] = (pt->bar_reg[bar] & ~(0xFFu << shift)) | ((uint32_t)src[i] << shift);
				touched[bar] = true;
			}
			pt->stats.config_bytes_dropped++;
			i++;
			break;
		case POLICY_FORWARD_BYTE:
			rc = host_cfg_write(pt, off, 1, src[i]);
			if (rc == 0) {
				unsigned shift = 8 * (off - CFG_COMMAND);

				pt->command = (uint16_t)((pt->command & ~(0xFFu << shift)) | ((uint32_t)src[i] << shift));
			}
			i++;
			break;
		case POLICY_FORWARD:
			for (j = i + 1; j < len && policy_of(pt, offset + j) == POLICY_FORWARD; j++)
				;
			rc = forward_run(pt, off, offset + j, src + i);
			i = j;
			break;
		}
	}
	for (unsigned b = 0; b < HD_NUM_BARS; b++)
		if (touched[b])
			normalize_bar(pt, b);
	if (touched[HD_NUM_BARS])
		pt->rom_reg = 0; /* no expansion ROM is offered: the register reads 0 */
	/*
	 * DEVCTL never reaches the host, but its Initiate-FLR bit is the
	 * guest's way to reset the function (Linux's pcie_flr): do that reset
	 * through the host's verb, as Linux VFIO does for its guests.
	 */
	if (rc == 0 && pt->flr_capable) {
		uint32_t flr_byte = pt->exp_pos + EXP_DEVCTL + 1u;

		if (offset <= flr_byte && flr_byte - offset < len && (src[flr_byte - offset] & (EXP_DEVCTL_BCR_FLR >> 8)))
			rc = passthrough_reset(pt);
	}
	if (gone_now(pt, rc)) {
		pt->stats.removed_writes++;
		return 0; /* the rest of the write went nowhere, as on a missing function */
	}
	return rc;
}

uint64_t passthrough_bar_size(const struct passthrough *pt, unsigned bar)
{
	return bar < HD_NUM_BARS ? pt->bar[bar].size : 0;
}

volatile void *passthrough_bar_mapping(const struct passthrough *pt, unsigned bar)
{
	return bar < HD_NUM_BARS ? pt->bar_ptr[bar] : NULL;
}

/* The widest naturally aligned access of at most 8 bytes that fits. */
static unsigned access_width(uint64_t offset, uint64_t left)
{
	unsigned width = 8;

	while (width > 1 && (offset % width != 0 || left < width))
		width /= 2;
	return width;
}

static uint64_t ptr_load(volatile uint8_t *p, unsigned width)
{
	switch (width) {
	case 1:
		return *p;
	case 2:
		return *(volatile uint16_t *)(volatile void *)p;
	case 4:
		return *(volatile uint32_t *)(volatile void *)p;
	default:
		return *(volatile uint64_t *)(volatile void *)p;
	}
}

static void ptr_store(volatile uint8_t *p, unsigned width, uint64_t v)
{
	switch (width) {
	case 1:
		*p = (uint8_t)v;
		break;
	case 2:
		*(volatile uint16_t *)(volatile void *)p = (uint16_t)v;
		break;
	case 4:
		*(volatile uint32_t *)(volatile void *)p = (uint32_t)v;
		break;
	default:
		*(volatile uint64_t *)(volatile void *)p = v;
		break;
	}
}

static int bar_check(const struct passthrough *pt, unsigned bar, uint64_t offset, uint64_t len)
{
	if (bar >= HD_NUM_BARS || pt->bar[bar].size == 0)
		return -EINVAL;
	if (len == 0 || !range_ok(offset, len, pt->bar[bar].size))
		return -EINVAL;
	return 0;
}

/* Does [offset, offset + len) of bar touch the host's MSI-X table or PBA? */
static bool in_msix_window(const struct passthrough *pt, unsigned bar, uint64_t offset, uint64_t len)
{
	for (unsigned i = 0; i < pt->nmsix_win; i++)
		if (pt->msix_win[i].bar == bar && offset < pt->msix_win[i].off + pt->msix_win[i].len &&
		    pt->msix_win[i].off < offset + len)
			return true;
	return false;
}

int passthrough_bar_read(struct passthrough *pt, unsigned bar, uint64_t offset, void *buf, uint64_t len)
{
	uint8_t *dst = buf;
	int rc = bar_check(pt, bar, offset, len);

	if (rc < 0)
		return rc;
	if (gone(pt))
		goto all_ones;
	while (len > 0) {
		unsigned width = access_width(offset, len);
		uint64_t v;

		if (in_msix_window(pt, bar, offset, width)) {
			/* The host's vectors are not the VMM's to see: QEMU emulates the table. */
			v = 0;
			pt->stats.msix_reads_zeroed++;
		} else if (pt->bar_ptr[bar]) {
			v = ptr_load(pt->bar_ptr[bar] + offset, width);
		} else {
			rc = pt->hd->ops->mmio_read(pt->hd, bar, offset, width, &v);
			if (gone_now(pt, rc))
				goto all_ones;
			if (rc < 0)
				return rc;
		}
		le_store(dst, v, width);
		pt->stats.bar_reads++;
		dst += width;
		offset += width;
		len -= width;
	}
	return 0;
all_ones:
	/* What a read of a missing PCIe function returns; the mapping is not touched. */
	memset(dst, 0xFF, len);
	pt->stats.removed_reads++;
	return 0;
}

int passthrough_bar_write(struct passthrough *pt, unsigned bar, uint64_t offset, const void *buf, uint64_t len)
{
	const uint8_t *src = buf;
	int rc = bar_check(pt, bar, offset, len);

	if (rc < 0)
		return rc;
	if (gone(pt)) {
		pt->stats.removed_writes++;
		return 0;
	}
	while (len > 0) {
		unsigned width = access_width(offset, len);
		uint64_t v = le_load(src, width);

		if (in_msix_window(pt, bar, offset, width)) {
			/* The dext programmed these vectors; the VMM never rewrites them. */
			if (pt->stats.msix_writes_dropped++ == 0)
				log_warn("passthrough: the VMM wrote the host's MSI-X table or PBA (BAR%u+0x%llx): "
					 "dropped, as every such write will be", bar, (unsigned long long)offset);
		} else if (pt->bar_ptr[bar]) {
			ptr_store(pt->bar_ptr[bar] + offset, width, v);
		} else {
			rc = pt->hd->ops->mmio_write(pt->hd, bar, offset, width, v);
			if (gone_now(pt, rc)) {
				pt->stats.removed_writes++;
				return 0;
			}
			if (rc < 0)
				return rc;
		}
		pt->stats.bar_writes++;
		src += width;
		offset += width;
		len -= width;
	}
	return 0;
}

unsigned passthrough_irq_count(const struct passthrough *pt, unsigned index)
{
	return index == pt->irq_index ? pt->nvectors : 0;
}

static enum pt_vector_state vector_state(const struct passthrough *pt, unsigned vector)
{
	if (!pt->have_sink || pt->irq_index == PT_IRQ_NUM_INDEXES)
		return PT_VECTOR_OFF;
	return pt->sink.vector_state(pt->sink.opaque, pt->irq_index, vector);
}

static bool test_bit(const uint64_t *words, unsigned bit)
{
	return (words[bit / 64] >> (bit % 64)) & 1;
}

static void deliver(struct passthrough *pt, unsigned vector)
{
	int rc = pt->sink.trigger(pt->sink.opaque, pt->irq_index, vector);

	if (rc < 0)
		log_warn("passthrough: signalling vector %u: %s", vector, strerror(-rc));
	else
		pt->stats.irq_delivered++;
}

static int apply_mask(struct passthrough *pt, bool force)
{
	uint64_t mask[HD_IRQ_WORDS] = { 0 };
	uint32_t enabled = 0;
	int rc;

	for (unsigned v = 0; v < pt->nvectors; v++) {
		if (vector_state(pt, v) != PT_VECTOR_OFF) {
			mask[v / 64] |= 1ULL << (v % 64);
			enabled++;
		}
	}
	pt->stats.vectors_enabled = enabled;
	if (gone(pt))
		return 0; /* nothing to enable on a missing function */
	if (!force && memcmp(mask, pt->host_mask, sizeof(mask)) == 0)
		return 0;
	rc = pt->hd->ops->irq_set_mask(pt->hd, mask);
	if (rc < 0)
		return rc;
	memcpy(pt->host_mask, mask, sizeof(mask));
	return 0;
}

int passthrough_irqs_changed(struct passthrough *pt)
{
	int rc = apply_mask(pt, false);

	if (gone(pt)) {
		memset(pt->latched, 0, sizeof(pt->latched)); /* nothing more reaches the VMM */
		return 0;
	}
	for (unsigned v = 0; v < pt->nvectors; v++) {
		if (!test_bit(pt->latched, v))
			continue;
		enum pt_vector_state st = vector_state(pt, v);
		if (st == PT_VECTOR_MASKED)
			continue;
		pt->latched[v / 64] &= ~(1ULL << (v % 64));
		if (st == PT_VECTOR_READY)
			deliver(pt, v);
	}
	return rc;
}

int passthrough_set_irq_sink(struct passthrough *pt, const struct pt_irq_sink *sink)
{
	if (sink && (!sink->vector_state || !sink->trigger))
		return -EINVAL;
	pt->have_sink = sink != NULL;
	if (sink)
		pt->sink = *sink;
	else
		memset(pt->latched, 0, sizeof(pt->latched));
	return passthrough_irqs_changed(pt);
}

int passthrough_irq_wakeup_fd(const struct passthrough *pt)
{
	return pt->hd->ops->irq_wakeup_fd(pt->hd);
}

/* Empty the wake-up fd without ever blocking on it. */
static void drain_wakeup(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	uint8_t scratch[64];

	for (int guard = 0; guard < 64 && poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN); guard++)
		if (read(fd, scratch, sizeof(scratch)) <= 0)
			break;
}

int passthrough_handle_irq(struct passthrough *pt)
{
	uint64_t pending[HD_IRQ_WORDS];
	int fd = passthrough_irq_wakeup_fd(pt);
	int rc;

	if (fd >= 0)
		drain_wakeup(fd);
	if (gone(pt))
		return -ENODEV; /* no interrupt from a missing function */
	rc = pt->hd->ops->irq_read_pending(pt->hd, pending);
	if (rc < 0)
		return rc;
	for (unsigned w = 0; w < HD_IRQ_WORDS; w++) {
		while (pending[w]) {
			unsigned v = w * 64 + (unsigned)__builtin_ctzll(pending[w]);

			pending[w] &= pending[w] - 1;
			switch (v < pt->nvectors ? vector_state(pt, v) : PT_VECTOR_OFF) {
			case PT_VECTOR_READY:
				deliver(pt, v);
				break;
			case PT_VECTOR_MASKED:
				pt->latched[w] |= 1ULL << (v % 64);
				pt->stats.irq_latched++;
				break;
			case PT_VECTOR_OFF:
				pt->stats.irq_dropped++;
				break;
			}
		}
	}
	return 0;
}

int passthrough_reset(struct passthrough *pt)
{
	int rc;

	if (gone(pt)) {
		memset(pt->latched, 0, sizeof(pt->latched));
		return 0; /* nothing left to reset */
	}
	rc = pt->hd->ops->reset(pt->hd);
	if (rc < 0)
		return gone_now(pt, rc) ? 0 : rc;
	pt->stats.resets++;
	memset(pt->latched, 0, sizeof(pt->latched));
	/* What the guest last programmed, byte by byte as any COMMAND write. */
	for (uint32_t i = 0; i < 2; i++) {
		rc = host_cfg_write(pt, CFG_COMMAND + i, 1, (pt->command >> (8 * i)) & 0xFF);
		if (rc < 0)
			return gone_now(pt, rc) ? 0 : rc;
	}
	rc = apply_mask(pt, true);
	return gone_now(pt, rc) ? 0 : rc;
}

int passthrough_client_gone(struct passthrough *pt)
{
	int rc;

	passthrough_set_irq_sink(pt, NULL);
	pt->command = pt->command_at_claim;
	for (unsigned i = 0; i < HD_NUM_BARS; i++) {
		pt->bar_reg[i] = 0;
		normalize_bar(pt, i);
	}
	pt->rom_reg = 0;
	rc = passthrough_reset(pt);
	return gone_now(pt, rc) ? 0 : rc;
}

void passthrough_stats(const struct passthrough *pt, struct passthrough_stats *out)
{
	*out = pt->stats;
}
