// SPDX-License-Identifier: MIT
/*
 * The simulated NVMe controller (see sim_nvme.h).  Guest memory is reached
 * only through the DART model; every value read from it (commands, PRP
 * lists) is copied first and then checked, since the guest may change it
 * under us.
 */
#include "sim_nvme.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compat.h"
#include "le.h"
#include "log.h"
#include "memguard.h"

/* Controller registers (BAR0). */
#define REG_CAP 0x00
#define REG_VS 0x08
#define REG_INTMS 0x0c
#define REG_INTMC 0x10
#define REG_CC 0x14
#define REG_CSTS 0x1c
#define REG_NSSR 0x20
#define REG_AQA 0x24
#define REG_ASQ 0x28
#define REG_ACQ 0x30
#define REG_DBS 0x1000

#define CC_EN (1u << 0)
#define CC_CSS(cc) (((cc) >> 4) & 0x7)
#define CC_MPS(cc) (((cc) >> 7) & 0xf)
#define CC_SHN(cc) (((cc) >> 14) & 0x3)
#define CC_SHN_MASK (3u << 14)
#define CC_IOSQES(cc) (((cc) >> 16) & 0xf)
#define CC_IOCQES(cc) (((cc) >> 20) & 0xf)
#define CC_WRITABLE 0x01fffff1u

#define CSTS_RDY (1u << 0)
#define CSTS_CFS (1u << 1)
#define CSTS_SHST_DONE (2u << 2)

#define NVME_VERSION 0x00010400u /* 1.4 */
#define MPS_MAX 4u               /* CAP.MPSMAX: pages up to 64 KiB */

/* Status: (SCT << 8) | SC; DNR is added on every error (retrying cannot help). */
#define SC_SUCCESS 0x000
#define SC_INVALID_OPCODE 0x001
#define SC_INVALID_FIELD 0x002
#define SC_DATA_TRANSFER_ERROR 0x004
#define SC_INVALID_NS 0x00b
#define SC_PRP_OFFSET_INVALID 0x013
#define SC_LBA_OUT_OF_RANGE 0x080
#define SC_CQ_INVALID 0x100
#define SC_INVALID_QID 0x101
#define SC_INVALID_QSIZE 0x102
#define SC_AER_LIMIT 0x105
#define SC_INVALID_VECTOR 0x108
#define SC_INVALID_LOG_PAGE 0x109
#define SC_INVALID_QUEUE_DELETION 0x10c
#define STATUS_DNR 0x4000

#define NQUEUES (SIM_NVME_IO_QUEUES + 1)
/* At most this much per kick; the rest resumes when the broker next polls
 * the wake-up fd (which a deferral signals) and reads the pending set. */
#define KICK_COMMANDS SIM_NVME_KICK_COMMANDS
#define KICK_BYTES SIM_NVME_KICK_BYTES
#define AERL 3 /* 0-based: four outstanding Async Event Requests */
#define SERIAL "VFA0SIM0000000000001"

/* PCI config space layout. */
#define CAP_PM 0x40
#define CAP_MSIX 0x50
#define CAP_PCIE 0x60

struct nvme_sqe {
	uint8_t opcode;
	uint8_t flags;
	uint16_t cid;
	uint32_t nsid;
	uint64_t rsvd;
	uint64_t mptr;
	uint64_t prp1;
	uint64_t prp2;
	uint32_t cdw10, cdw11, cdw12, cdw13, cdw14, cdw15;
};
_Static_assert(sizeof(struct nvme_sqe) == 64, "an NVMe command is 64 bytes");

/* One piece of a PRP transfer: at most a memory page. */
struct prp_seg {
	uint64_t bus;
	uint64_t len;
};
/* PRP1's piece, then one per page (the smallest page is 4 KiB). */
#define SIM_NVME_MAX_PRP_SEGS (1u + SIM_NVME_MAX_TRANSFER / 4096u)

struct nvme_sq {
	bool live;
	uint64_t base; /* bus address */
	uint32_t size; /* entries */
	uint32_t head, tail;
	uint16_t cqid;
};

struct nvme_cq {
	bool live;
	uint64_t base;
	uint32_t size;
	uint32_t head, tail;
	bool phase;
	bool ien;
	uint16_t vector;
	bool posted; /* completions posted since the last interrupt */
};

struct sim_nvme {
	struct host_device hd;
	struct sim_dart *dart;
	bool claimed;

	/* Config space: values and per-byte writable masks. */
	uint8_t config[SIM_NVME_CONFIG_SIZE];
	uint8_t config_wmask[SIM_NVME_CONFIG_SIZE];

	/* Controller registers. */
	uint64_t cap;
	uint32_t intms, cc, csts, aqa;
	uint64_t asq, acq;
	bool shut_down;

	struct nvme_sq sq[NQUEUES];
	struct nvme_cq cq[NQUEUES];
	unsigned aers_held;

	/* Features. */
	uint32_t feat_arbitration, feat_power, feat_temp_thresh, feat_error_recovery;
	uint32_t feat_vwc, feat_irq_coalescing, feat_write_atomicity, feat_async_config;

	uint8_t *bar4; /* MSI-X table + PBA */

	/* Interrupts (the dext's view). */
	bool irq_ready;
	uint64_t irq_mask[HD_IRQ_WORDS];
	uint64_t irq_pending[HD_IRQ_WORDS];
	int wakeup_fds[2]; /* [0] polled by the broker, [1] written (an eventfd on Linux, else a pipe) */
	/*
	 * Work per kick (a doorbell write, or a resume from irq_read_pending):
	 * what is left of the budget, and whether queued commands were left
	 * for the next kick (issue 11, item 3: one doorbell must not hold the
	 * broker's loop for the seconds that 1023 commands of 2 MiB take).
	 */
	uint32_t kick_commands;
	uint64_t kick_bytes;
	bool more_work;

	/* Backing store. */
	uint8_t *store;
	uint64_t store_size;
	int store_fd; /* -1 for anonymous memory */

	uint64_t *prp_scratch; /* one PRP list page (up to 64 KiB pages) */
	struct prp_seg *prp_segs; /* the pieces of one transfer, SIM_NVME_MAX_PRP_SEGS */
	uint8_t *scratch;      /* admin data buffer, SIM_NVME_MAX_TRANSFER bytes */

	struct sim_nvme_stats stats;
	uint64_t bad_doorbells; /* the guest's; only the first few are logged at warn level */
	uint64_t units_read, units_written; /* SMART: thousands of 512-byte units */
	uint64_t host_reads, host_writes;
};

static struct sim_nvme *to_nvme(struct host_device *hd)
{
	return (struct sim_nvme *)hd;
}

/* Space-padded ASCII field of an Identify structure. */
static void put_ascii(uint8_t *p, size_t len, const char *s)
{
	size_t n = strlen(s);

	memset(p, ' ', len);
	memcpy(p, s, n < len ? n : len);
}

/* ---------------------------------------------------------------- config */

static void config_set(struct sim_nvme *n, uint32_t off, unsigned width, uint32_t value, uint32_t wmask)
{
	for (unsigned i = 0; i < width; i++) {
		n->config[off + i] = (uint8_t)(value >> (8 * i));
		n->config_wmask[off + i] = (uint8_t)(wmask >> (8 * i));
	}
}

static void config_power_on(struct sim_nvme *n)
{
	memset(n->config, 0, sizeof(n->config));
	memset(n->config_wmask, 0, sizeof(n->config_wmask));

	config_set(n, 0x00, 2, SIM_NVME_VENDOR_ID, 0);
	config_set(n, 0x02, 2, SIM_NVME_DEVICE_ID, 0);
	/* COMMAND: memory space, bus master, parity, SERR, INTx disable. */
	config_set(n, 0x04, 2, 0, 0x0546);
	config_set(n, 0x06, 2, 0x0010, 0); /* STATUS: capability list */
	config_set(n, 0x08, 1, 0x01, 0);   /* revision */
	config_set(n, 0x09, 3, SIM_NVME_CLASS, 0);
	config_set(n, 0x0c, 1, 0, 0xff);   /* cache line size */
	/* BARs read as their type with address 0 (as the dext shows them). */
	config_set(n, 0x10, 4, 0x4, 0);    /* BAR0: 64-bit memory */
	config_set(n, 0x20, 4, 0x4, 0);    /* BAR4: 64-bit memory */
	config_set(n, 0x2c, 2, SIM_NVME_VENDOR_ID, 0);
	config_set(n, 0x2e, 2, SIM_NVME_DEVICE_ID, 0);
	config_set(n, 0x34, 1, CAP_PM, 0);
	config_set(n, 0x3c, 1, 0, 0xff);   /* interrupt line; pin stays 0 */

	/* Power management, version 3, No_Soft_Reset. */
	config_set(n, CAP_PM + 0, 2, 0x01 | CAP_MSIX << 8, 0);
	config_set(n, CAP_PM + 2, 2, 0x0003, 0);
	config_set(n, CAP_PM + 4, 2, 0x0008, 0x0003);

	/* MSI-X: table and PBA in BAR4. */
	config_set(n, CAP_MSIX + 0, 2, 0x11 | CAP_PCIE << 8, 0);
	config_set(n, CAP_MSIX + 2, 2, SIM_NVME_VECTORS - 1, 0xc000);
	config_set(n, CAP_MSIX + 4, 4, 0x0 | 4, 0);
	config_set(n, CAP_MSIX + 8, 4, SIM_NVME_MSIX_PBA_OFFSET | 4, 0);

	/* PCI Express v2 endpoint, FLR capable, x4 8 GT/s. */
	config_set(n, CAP_PCIE + 0x00, 2, 0x10, 0);
	config_set(n, CAP_PCIE + 0x02, 2, 0x0002, 0);
	config_set(n, CAP_PCIE + 0x04, 4, 0x10000001, 0);  /* DEVCAP: MPS 256, FLR */
	config_set(n, CAP_PCIE + 0x08, 2, 0x2810, 0x7fff); /* DEVCTL (bit 15: FLR) */
	config_set(n, CAP_PCIE + 0x0c, 4, 0x00000043, 0);  /* LNKCAP */
	config_set(n, CAP_PCIE + 0x10, 2, 0, 0x00c3);      /* LNKCTL */
	config_set(n, CAP_PCIE + 0x12, 2, 0x0043, 0);      /* LNKSTA */
	config_set(n, CAP_PCIE + 0x24, 4, 0x00000010, 0);  /* DEVCAP2 */
	config_set(n, CAP_PCIE + 0x28, 2, 0, 0x041f);      /* DEVCTL2 */
	config_set(n, CAP_PCIE + 0x2c, 4, 0x0000000e, 0);  /* LNKCAP2 */
	config_set(n, CAP_PCIE + 0x30, 2, 0x0003, 0x000f); /* LNKCTL2 */
	/* Extended space from 0x100: no extended capabilities (header 0). */
}

/* --------------------------------------------------------- interrupts */

static void raise_vector(struct sim_nvme *n, unsigned vector)
{
	unsigned word = vector / 64;
	uint64_t bit = 1ull << (vector % 64);

	if (!n->irq_ready || vector >= SIM_NVME_VECTORS || !(n->irq_mask[word] & bit)) {
		n->stats.interrupts_masked++;
		return;
	}
	n->irq_pending[word] |= bit;
	n->stats.interrupts++;
	if (vfa_notifier_signal(n->wakeup_fds[1]) < 0)
		log_debug("sim nvme: wake-up notifier write failed");
}

/* ----------------------------------------------------------- queues */

static void drop_queues(struct sim_nvme *n)
{
	memset(n->sq, 0, sizeof(n->sq));
	memset(n->cq, 0, sizeof(n->cq));
	n->aers_held = 0;
}

/* Power-on state of the controller registers and features. */
static void controller_power_on(struct sim_nvme *n)
{
	drop_queues(n);
	n->cc = 0;
	n->csts = 0;
	n->intms = 0;
	n->aqa = 0;
	n->asq = 0;
	n->acq = 0;
	n->shut_down = false;
	n->feat_arbitration = 0;
	n->feat_power = 0;
	n->feat_temp_thresh = 0x0157; /* 343 K */
	n->feat_error_recovery = 0;
	n->feat_vwc = 1;
	n->feat_irq_coalescing = 0;
	n->feat_write_atomicity = 0;
	n->feat_async_config = 0;
}

static uint32_t page_size(const struct sim_nvme *n)
{
	return 4096u << CC_MPS(n->cc);
}

static bool cq_full(const struct nvme_cq *cq)
{
	return (cq->tail + 1) % cq->size == cq->head;
}

/* A fatal controller error: the host must reset the controller. */
static void controller_fatal(struct sim_nvme *n, const char *why)
{
	log_warn("sim nvme: controller fatal status: %s", why);
	n->csts |= CSTS_CFS;
	n->stats.fatal = true;
}

#define BAD_DOORBELLS_LOGGED 16

/* A doorbell write a real controller would ignore; a looping guest must not flood the log. */
__attribute__((format(printf, 2, 3)))
static void bad_doorbell(struct sim_nvme *n, const char *fmt, ...)
{
	char msg[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (++n->bad_doorbells <= BAD_DOORBELLS_LOGGED)
		log_warn("sim nvme: %s%s", msg,
			 n->bad_doorbells == BAD_DOORBELLS_LOGGED ? " (further ones logged at debug level)" : "");
	else
		log_debug("sim nvme: %s", msg);
}

static void post_completion(struct sim_nvme *n, uint16_t sqid, uint16_t cid, uint16_t status, uint32_t result)
{
	struct nvme_sq *sq = &n->sq[sqid];
	struct nvme_cq *cq = &n->cq[sq->cqid];
	uint8_t cqe[16];
	uint64_t addr = cq->base + (uint64_t)cq->tail * 16;

	if (status != SC_SUCCESS) {
		status |= STATUS_DNR;
		n->stats.errors++;
	}
	le_store32(cqe, result);
	le_store32(cqe + 4, 0);
	le_store16(cqe + 8, (uint16_t)sq->head);
	le_store16(cqe + 10, sqid);
	/* The last dword carries the phase: write it after the rest. */
	uint32_t dw3 = (uint32_t)cid | (uint32_t)(cq->phase ? 1 : 0) << 16 | (uint32_t)status << 17;

	/* All of the entry or none of it: check every byte before writing any. */
	uint32_t *last = NULL;
	if (sim_dart_dma_check(n->dart, addr, 16, true) < 0 ||
	    !(last = sim_dart_translate(n->dart, addr + 12, 4, true)) || ((uintptr_t)last & 3) ||
	    sim_dart_dma_write(n->dart, addr, cqe, 12) < 0) {
		controller_fatal(n, "completion queue entry not reachable through the DART");
		return;
	}
	uint8_t le[4];
	le_store32(le, dw3);
	uint32_t dw3_le;
	memcpy(&dw3_le, le, 4);
	atomic_thread_fence(memory_order_release);
	if (vfa_guarded_store32_release(last, dw3_le) < 0) {
		controller_fatal(n, "completion queue entry lost: the guest memory behind it is gone");
		return;
	}

	cq->tail++;
	if (cq->tail == cq->size) {
		cq->tail = 0;
		cq->phase = !cq->phase;
	}
	cq->posted = true;
}

/* ---------------------------------------------------- data transfer */

static uint16_t dma_chunk(struct sim_nvme *n, uint64_t bus, uint8_t *buf, uint64_t len, bool to_guest)
{
	int ret = to_guest ? sim_dart_dma_write(n->dart, bus, buf, len) : sim_dart_dma_read(n->dart, bus, buf, len);

	if (ret < 0) {
		n->stats.dma_faults++;
		return SC_DATA_TRANSFER_ERROR;
	}
	return SC_SUCCESS;
}

/*
 * Turn PRP1/PRP2 (a data pointer or a PRP list, whose pages chain through
 * their last entry) into the pieces of a len-byte transfer.  The lists are
 * copied out of guest memory once, so the guest changing them meanwhile
 * cannot change what was checked.
 */
static uint16_t prp_segments(struct sim_nvme *n, uint64_t prp1, uint64_t prp2, uint64_t len, unsigned *nseg)
{
	uint64_t ps = page_size(n);
	struct prp_seg *seg = n->prp_segs;
	unsigned count_segs = 0;

	if (len == 0 || len > SIM_NVME_MAX_TRANSFER)
		return SC_INVALID_FIELD;
	if (prp1 & 3)
		return SC_PRP_OFFSET_INVALID;
	uint64_t first = ps - (prp1 & (ps - 1));
	if (first > len)
		first = len;
	seg[count_segs++] = (struct prp_seg){ prp1, first };
	uint64_t rem = len - first;
	if (rem > 0 && rem <= ps) {
		if (prp2 & (ps - 1))
			return SC_PRP_OFFSET_INVALID;
		seg[count_segs++] = (struct prp_seg){ prp2, rem };
		rem = 0;
	}

	/* PRP2 points into a list (any qword); a chained list starts a page. */
	uint64_t list = prp2;
	uint64_t pages_total = (rem + ps - 1) / ps;
	uint64_t hops = 0;
	if (rem && (list & 7))
		return SC_PRP_OFFSET_INVALID;
	while (rem) {
		if (++hops > pages_total)
			return SC_INVALID_FIELD; /* a chain that does not advance */
		uint64_t slots = (ps - (list & (ps - 1))) / 8;
		uint64_t pages_left = (rem + ps - 1) / ps;
		bool chained = pages_left > slots;
		uint64_t count = chained ? slots : pages_left;

		uint16_t st = dma_chunk(n, list, (uint8_t *)n->prp_scratch, count * 8, false);
		if (st)
			return st;
		uint64_t data_entries = chained ? count - 1 : count;
		for (uint64_t i = 0; i < data_entries; i++) {
			uint64_t e = n->prp_scratch[i];
			uint64_t chunk = rem < ps ? rem : ps;
			if (e & (ps - 1))
				return SC_PRP_OFFSET_INVALID;
			if (count_segs == SIM_NVME_MAX_PRP_SEGS)
				return SC_INVALID_FIELD; /* cannot happen: len <= MDTS */
			seg[count_segs++] = (struct prp_seg){ e, chunk };
			rem -= chunk;
		}
		if (chained) {
			list = n->prp_scratch[count - 1];
			/* A PRP list pointer is a PRP list entry: memory page offset 0. */
			if (list & (ps - 1))
				return SC_PRP_OFFSET_INVALID;
		}
	}
	*nseg = count_segs;
	return SC_SUCCESS;
}

/*
 * Move len bytes between buf and the guest buffer described by PRP1/PRP2.
 * Every entry and every byte's DART translation is checked before the first
 * byte moves: a command that fails changes neither guest memory nor the
 * namespace (a failed Write leaves no half-written blocks behind).
 */
static uint16_t dma_prp(struct sim_nvme *n, uint64_t prp1, uint64_t prp2, uint8_t *buf, uint64_t len, bool to_guest)
{
	unsigned nseg = 0;
	uint16_t st = prp_segments(n, prp1, prp2, len, &nseg);

	if (st)
		return st;
	for (unsigned i = 0; i < nseg; i++) {
		if (sim_dart_dma_check(n->dart, n->prp_segs[i].bus, n->prp_segs[i].len, to_guest) < 0) {
			n->stats.dma_faults++;
			return SC_DATA_TRANSFER_ERROR;
		}
	}
	for (unsigned i = 0; i < nseg; i++) {
		/* Cannot fault: the mappings are the host's and did not change since the check. */
		st = dma_chunk(n, n->prp_segs[i].bus, buf, n->prp_segs[i].len, to_guest);
		if (st)
			return st;
		buf += n->prp_segs[i].len;
	}
	return SC_SUCCESS;
}

/* ---------------------------------------------------- admin commands */

static void identify_controller(struct sim_nvme *n, uint8_t *id)
{
	le_store16(id + 0, SIM_NVME_VENDOR_ID);
	le_store16(id + 2, SIM_NVME_VENDOR_ID);
	put_ascii(id + 4, 20, SERIAL);
	put_ascii(id + 24, 40, "vfio-apple simulated NVMe");
	put_ascii(id + 64, 8, "1.0");
	id[72] = 6;                   /* RAB */
	id[77] = SIM_NVME_MDTS_SHIFT; /* MDTS */
	le_store16(id + 78, 1);            /* CNTLID */
	le_store32(id + 80, NVME_VERSION);
	id[111] = 1;                  /* CNTRLTYPE: I/O controller */
	id[258] = 3;                  /* ACL: four Aborts */
	id[259] = AERL;
	id[260] = 0x03;               /* FRMW: one slot, read-only */
	le_store16(id + 266, 0x0157);      /* WCTEMP 343 K */
	le_store16(id + 268, 0x0175);      /* CCTEMP 373 K */
	id[512] = 0x66;               /* SQES: 64 bytes */
	id[513] = 0x44;               /* CQES: 16 bytes */
	le_store32(id + 516, 1);           /* NN */
	id[525] = 1;                  /* VWC present */
	snprintf((char *)id + 768, 256, "nqn.2026-01.io.vfio-apple:sim-nvme:%s", SERIAL);
	le_store16(id + 2048, 2500);       /* PSD0: 25 W */
	(void)n;
}

static void namespace_guid(uint8_t *g)
{
	static const char tag[16] = "vfa-sim-nvme-ns1";

	memcpy(g, tag, 16);
}

static void identify_namespace(struct sim_nvme *n, uint8_t *id)
{
	uint64_t blocks = n->store_size / SIM_NVME_LBA_SIZE;

	le_store64(id + 0, blocks);  /* NSZE */
	le_store64(id + 8, blocks);  /* NCAP */
	le_store64(id + 16, blocks); /* NUSE */
	id[25] = 0;             /* NLBAF: one format */
	id[26] = 0;             /* FLBAS: format 0 */
	namespace_guid(id + 104);
	le_store32(id + 128, 9u << 16); /* LBAF0: 512-byte data, no metadata */
}

static uint16_t admin_identify(struct sim_nvme *n, const struct nvme_sqe *c)
{
	uint8_t cns = (uint8_t)c->cdw10;
	uint8_t csi = (uint8_t)(c->cdw11 >> 24);
	uint8_t *id = n->scratch;

	memset(id, 0, 4096);
	switch (cns) {
	case 0x00: /* namespace */
		if (c->nsid != 1)
			return SC_INVALID_NS;
		identify_namespace(n, id);
		break;
	case 0x01: /* controller */
		identify_controller(n, id);
		break;
	case 0x02: /* active namespace list: IDs above nsid */
		if (c->nsid >= 0xfffffffe)
			return SC_INVALID_NS;
		if (c->nsid < 1)
			le_store32(id, 1);
		break;
	case 0x03: /* namespace identification descriptors */
		if (c->nsid != 1)
			return SC_INVALID_NS;
		id[0] = 2;  /* NIDT: NGUID */
		id[1] = 16; /* NIDL */
		namespace_guid(id + 4);
		break;
	case 0x05: /* I/O command set specific namespace: NVM has nothing more */
		if (c->nsid != 1)
			return SC_INVALID_NS;
		if (csi != 0)
			return SC_INVALID_FIELD;
		break;
	case 0x06: /* I/O command set specific controller: no extra limits */
		if (csi != 0)
			return SC_INVALID_FIELD;
		break;
	case 0x08: /* command set independent namespace */
		if (c->nsid != 1)
			return SC_INVALID_NS;
		id[14] = 1; /* NSTAT: ready */
		break;
	default:
		return SC_INVALID_FIELD;
	}
	return dma_prp(n, c->prp1, c->prp2, id, 4096, true);
}

static uint16_t admin_create_cq(struct sim_nvme *n, const struct nvme_sqe *c)
{
	uint16_t qid = (uint16_t)c->cdw10;
	uint32_t qsize = (c->cdw10 >> 16) + 1;
	bool pc = c->cdw11 & 1;
	bool ien = c->cdw11 & 2;
	uint16_t vector = (uint16_t)(c->cdw11 >> 16);

	if (qid == 0 || qid >= NQUEUES || n->cq[qid].live)
		return SC_INVALID_QID;
	if (qsize < 2 || qsize > SIM_NVME_MAX_QUEUE_ENTRIES)
		return SC_INVALID_QSIZE;
	if (!pc)
		return SC_INVALID_FIELD; /* CAP.CQR: queues must be contiguous */
	if (c->prp1 & (page_size(n) - 1))
		return SC_PRP_OFFSET_INVALID;
	if (vector >= SIM_NVME_VECTORS)
		return SC_INVALID_VECTOR;
	n->cq[qid] = (struct nvme_cq){
		.live = true, .base = c->prp1, .size = qsize, .phase = true, .ien = ien, .vector = vector,
	};
	return SC_SUCCESS;
}

static uint16_t admin_create_sq(struct sim_nvme *n, const struct nvme_sqe *c)
{
	uint16_t qid = (uint16_t)c->cdw10;
	uint32_t qsize = (c->cdw10 >> 16) + 1;
	bool pc = c->cdw11 & 1;
	uint16_t cqid = (uint16_t)(c->cdw11 >> 16);

	if (qid == 0 || qid >= NQUEUES || n->sq[qid].live)
		return SC_INVALID_QID;
	if (cqid == 0 || cqid >= NQUEUES || !n->cq[cqid].live)
		return SC_CQ_INVALID;
	if (qsize < 2 || qsize > SIM_NVME_MAX_QUEUE_ENTRIES)
		return SC_INVALID_QSIZE;
	if (!pc)
		return SC_INVALID_FIELD;
	if (c->prp1 & (page_size(n) - 1))
		return SC_PRP_OFFSET_INVALID;
	n->sq[qid] = (struct nvme_sq){ .live = true, .base = c->prp1, .size = qsize, .cqid = cqid };
	return SC_SUCCESS;
}

static uint16_t admin_delete_sq(struct sim_nvme *n, const struct nvme_sqe *c)
{
	uint16_t qid = (uint16_t)c->cdw10;

	if (qid == 0 || qid >= NQUEUES || !n->sq[qid].live)
		return SC_INVALID_QID;
	/* Commands run synchronously, so none is outstanding to abort. */
	memset(&n->sq[qid], 0, sizeof(n->sq[qid]));
	return SC_SUCCESS;
}

static uint16_t admin_delete_cq(struct sim_nvme *n, const struct nvme_sqe *c)
{
	uint16_t qid = (uint16_t)c->cdw10;

	if (qid == 0 || qid >= NQUEUES || !n->cq[qid].live)
		return SC_INVALID_QID;
	for (unsigned i = 1; i < NQUEUES; i++)
		if (n->sq[i].live && n->sq[i].cqid == qid)
			return SC_INVALID_QUEUE_DELETION;
	memset(&n->cq[qid], 0, sizeof(n->cq[qid]));
	return SC_SUCCESS;
}

static uint32_t *feature_slot(struct sim_nvme *n, uint8_t fid)
{
	switch (fid) {
	case 0x01: return &n->feat_arbitration;
	case 0x02: return &n->feat_power;
	case 0x04: return &n->feat_temp_thresh;
	case 0x05: return &n->feat_error_recovery;
	case 0x06: return &n->feat_vwc;
	case 0x08: return &n->feat_irq_coalescing;
	case 0x0a: return &n->feat_write_atomicity;
	case 0x0b: return &n->feat_async_config;
	default: return NULL;
	}
}

static uint16_t admin_set_features(struct sim_nvme *n, const struct nvme_sqe *c, uint32_t *result)
{
	uint8_t fid = (uint8_t)c->cdw10;

	if (fid == 0x07) { /* Number of Queues */
		uint32_t nsq = (c->cdw11 & 0xffff) + 1, ncq = (c->cdw11 >> 16) + 1;
		if (nsq == 0x10000 || ncq == 0x10000)
			return SC_INVALID_FIELD;
		/* Always all of them, as many controllers do. */
		*result = (SIM_NVME_IO_QUEUES - 1) | (SIM_NVME_IO_QUEUES - 1) << 16;
		return SC_SUCCESS;
	}
	if (fid == 0x09) { /* Interrupt Vector Configuration */
		if ((c->cdw11 & 0xffff) >= SIM_NVME_VECTORS)
			return SC_INVALID_FIELD;
		return SC_SUCCESS;
	}
	if (fid == 0x02 && (c->cdw11 & 0x1f) != 0)
		return SC_INVALID_FIELD; /* one power state */
	uint32_t *slot = feature_slot(n, fid);
	if (!slot)
		return SC_INVALID_FIELD;
	*slot = fid == 0x06 ? (c->cdw11 & 1) : c->cdw11;
	return SC_SUCCESS;
}

static uint16_t admin_get_features(struct sim_nvme *n, const struct nvme_sqe *c, uint32_t *result)
{
	uint8_t fid = (uint8_t)c->cdw10;
	unsigned sel = (c->cdw10 >> 8) & 7;

	if (sel == 3) { /* supported capabilities: nothing saveable or per-namespace */
		if (fid != 0x07 && fid != 0x09 && !feature_slot(n, fid))
			return SC_INVALID_FIELD;
		*result = 0;
		return SC_SUCCESS;
	}
	if (sel > 3)
		return SC_INVALID_FIELD;
	if (fid == 0x07) {
		*result = (SIM_NVME_IO_QUEUES - 1) | (SIM_NVME_IO_QUEUES - 1) << 16;
		return SC_SUCCESS;
	}
	if (fid == 0x09) {
		if ((c->cdw11 & 0xffff) >= SIM_NVME_VECTORS)
			return SC_INVALID_FIELD;
		*result = c->cdw11 & 0xffff;
		return SC_SUCCESS;
	}
	uint32_t *slot = feature_slot(n, fid);
	if (!slot)
		return SC_INVALID_FIELD;
	if (sel == 1) { /* default: the power-on values */
		*result = fid == 0x04 ? 0x0157 : fid == 0x06 ? 1 : 0;
		return SC_SUCCESS;
	}
	*result = *slot;
	return SC_SUCCESS;
}

static uint16_t admin_get_log_page(struct sim_nvme *n, const struct nvme_sqe *c)
{
	uint8_t lid = (uint8_t)c->cdw10;
	uint64_t numd = ((uint64_t)(c->cdw11 & 0xffff) << 16 | (c->cdw10 >> 16)) + 1;
	uint64_t len = numd * 4;
	uint64_t offset = (uint64_t)c->cdw13 << 32 | c->cdw12;
	uint8_t log[4096];
	size_t log_len;

	if (len > SIM_NVME_MAX_TRANSFER || (offset & 3))
		return SC_INVALID_FIELD;
	memset(log, 0, sizeof(log));
	switch (lid) {
	case 0x00: /* supported log pages */
		log_len = 1024;
		for (unsigned l = 0; l <= 5; l++)
			if (l != 4)
				le_store32(log + 4 * l, 1);
		break;
	case 0x01: /* error information: one empty entry */
		log_len = 64;
		break;
	case 0x02: { /* SMART / health */
		log_len = 512;
		le_store16(log + 1, 310); /* composite temperature, K */
		log[3] = 100;        /* available spare % */
		log[4] = 10;         /* spare threshold */
		le_store64(log + 32, n->units_read);
		le_store64(log + 48, n->units_written);
		le_store64(log + 64, n->host_reads);
		le_store64(log + 80, n->host_writes);
		le_store64(log + 112, 1); /* power cycles */
		break;
	}
	case 0x03: /* firmware slots */
		log_len = 512;
		log[0] = 1;
		put_ascii(log + 8, 8, "1.0");
		break;
	case 0x05: { /* commands supported and effects */
		static const uint8_t admin_ops[] = { 0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x09, 0x0a, 0x0c };
		static const uint8_t io_ops[] = { 0x00, 0x01, 0x02 };
		log_len = 4096;
		for (size_t i = 0; i < sizeof(admin_ops); i++)
			le_store32(log + 4 * admin_ops[i], 1);
		for (size_t i = 0; i < sizeof(io_ops); i++)
			le_store32(log + 1024 + 4 * io_ops[i], io_ops[i] == 0x01 ? 3 : 1); /* write: LBCC */
		break;
	}
	default:
		return SC_INVALID_LOG_PAGE;
	}
	if (offset >= log_len)
		return SC_INVALID_FIELD;
	/* Bytes past the end of the log read as zero. */
	memset(n->scratch, 0, len);
	uint64_t avail = log_len - offset;
	memcpy(n->scratch, log + offset, len < avail ? len : avail);
	return dma_prp(n, c->prp1, c->prp2, n->scratch, len, true);
}

/* Returns false when the command is held (no completion now). */
static bool admin_command(struct sim_nvme *n, const struct nvme_sqe *c, uint16_t *status, uint32_t *result)
{
	n->stats.admin_commands++;
	*result = 0;
	if ((c->flags & 0xc3) != 0) { /* fused operations or SGLs: not supported */
		*status = SC_INVALID_FIELD;
		return true;
	}
	switch (c->opcode) {
	case 0x00: *status = admin_delete_sq(n, c); break;
	case 0x01: *status = admin_create_sq(n, c); break;
	case 0x02: *status = admin_get_log_page(n, c); break;
	case 0x04: *status = admin_delete_cq(n, c); break;
	case 0x05: *status = admin_create_cq(n, c); break;
	case 0x06: *status = admin_identify(n, c); break;
	case 0x08: /* Abort: commands complete at once, so nothing to abort */
		*status = SC_SUCCESS;
		*result = 1;
		break;
	case 0x09: *status = admin_set_features(n, c, result); break;
	case 0x0a: *status = admin_get_features(n, c, result); break;
	case 0x0c: /* Async Event Request: held until reset (no events to report) */
		if (n->aers_held > AERL) {
			*status = SC_AER_LIMIT;
			break;
		}
		n->aers_held++;
		return false;
	default:
		*status = SC_INVALID_OPCODE;
		break;
	}
	return true;
}

/* -------------------------------------------------------- I/O commands */

static uint16_t io_command(struct sim_nvme *n, const struct nvme_sqe *c)
{
	n->stats.io_commands++;
	if ((c->flags & 0xc3) != 0)
		return SC_INVALID_FIELD;
	switch (c->opcode) {
	case 0x00: /* Flush */
		if (c->nsid != 1 && c->nsid != 0xffffffff)
			return SC_INVALID_NS;
		if (n->store_fd >= 0 && msync(n->store, n->store_size, MS_SYNC) < 0)
			log_warn("sim nvme: flushing the backing file failed: %s", strerror(errno));
		return SC_SUCCESS;
	case 0x01:   /* Write */
	case 0x02: { /* Read */
		uint64_t slba = (uint64_t)c->cdw11 << 32 | c->cdw10;
		uint64_t nlb = (uint64_t)(c->cdw12 & 0xffff) + 1;
		uint64_t blocks = n->store_size / SIM_NVME_LBA_SIZE;
		bool is_read = c->opcode == 0x02;

		if (c->nsid != 1)
			return SC_INVALID_NS;
		if (slba >= blocks || nlb > blocks - slba)
			return SC_LBA_OUT_OF_RANGE;
		uint64_t len = nlb * SIM_NVME_LBA_SIZE;
		if (len > SIM_NVME_MAX_TRANSFER)
			return SC_INVALID_FIELD;
		n->kick_bytes = len < n->kick_bytes ? n->kick_bytes - len : 0;
		uint16_t st = dma_prp(n, c->prp1, c->prp2, n->store + slba * SIM_NVME_LBA_SIZE, len, is_read);
		if (st == SC_SUCCESS) {
			if (is_read) {
				n->host_reads++;
				n->units_read += (nlb + 999) / 1000;
			} else {
				n->host_writes++;
				n->units_written += (nlb + 999) / 1000;
			}
		}
		return st;
	}
	default:
		return SC_INVALID_OPCODE;
	}
}

/* -------------------------------------------------------- doorbells */

/* Run what the guest queued on one SQ while its CQ has room. */
static void process_sq(struct sim_nvme *n, uint16_t sqid)
{
	struct nvme_sq *sq = &n->sq[sqid];

	while (sq->live && sq->head != sq->tail && !(n->csts & CSTS_CFS) && !n->shut_down) {
		struct nvme_cq *cq = &n->cq[sq->cqid];
		struct nvme_sqe cmd;
		uint8_t raw[64];
		uint16_t status;
		uint32_t result = 0;
		bool complete = true;

		if (!cq->live || cq_full(cq))
			break; /* resumes on the CQ head doorbell */
		if (n->kick_commands == 0 || n->kick_bytes == 0) {
			n->more_work = true; /* resumes on the next kick */
			break;
		}
		n->kick_commands--;
		if (sim_dart_dma_read(n->dart, sq->base + (uint64_t)sq->head * 64, raw, 64) < 0) {
			controller_fatal(n, "submission queue entry not reachable through the DART");
			break;
		}
		memcpy(&cmd, raw, sizeof(cmd)); /* little-endian host, as every supported one is */
		sq->head = (sq->head + 1) % sq->size;
		if (sqid == 0) {
			complete = admin_command(n, &cmd, &status, &result);
		} else {
			status = io_command(n, &cmd);
		}
		if (complete)
			post_completion(n, sqid, cmd.cid, status, result);
	}
}

static void deliver_interrupts(struct sim_nvme *n)
{
	for (unsigned i = 0; i < NQUEUES; i++) {
		struct nvme_cq *cq = &n->cq[i];
		if (cq->live && cq->posted) {
			cq->posted = false;
			if (cq->ien)
				raise_vector(n, cq->vector);
		}
	}
}

static void kick_begin(struct sim_nvme *n)
{
	n->kick_commands = KICK_COMMANDS;
	n->kick_bytes = KICK_BYTES;
	n->more_work = false;
}

/* Interrupts for what completed; if commands were left, have the broker come back. */
static void kick_end(struct sim_nvme *n)
{
	deliver_interrupts(n);
	if (n->more_work) {
		n->stats.kicks_deferred++;
		if (vfa_notifier_signal(n->wakeup_fds[1]) < 0)
			log_debug("sim nvme: wake-up notifier write failed");
	}
}

/* The commands a budget left queued: every live SQ with entries, in order. */
static void resume_work(struct sim_nvme *n)
{
	if (!n->more_work)
		return;
	kick_begin(n);
	for (unsigned i = 0; i < NQUEUES && (n->csts & CSTS_RDY); i++)
		if (n->sq[i].live && n->sq[i].head != n->sq[i].tail)
			process_sq(n, (uint16_t)i);
	kick_end(n);
}

static void doorbell_write(struct sim_nvme *n, uint64_t offset, uint32_t value)
{
	uint64_t index = (offset - REG_DBS) / 4;
	uint16_t qid = (uint16_t)(index / 2);
	bool is_cq = index & 1;

	if (!(n->csts & CSTS_RDY) || n->shut_down || qid >= NQUEUES) {
		log_debug("sim nvme: doorbell 0x%" PRIx64 " written while not ready or out of range: ignored", offset);
		return;
	}
	if (is_cq) {
		struct nvme_cq *cq = &n->cq[qid];
		if (!cq->live || value >= cq->size) {
			bad_doorbell(n, "invalid CQ %u head doorbell value %u: ignored", qid, value);
			return;
		}
		cq->head = value;
		kick_begin(n);
		/* Restart SQs that stalled on this CQ being full. */
		for (unsigned i = 0; i < NQUEUES; i++)
			if (n->sq[i].live && n->sq[i].cqid == qid)
				process_sq(n, (uint16_t)i);
	} else {
		struct nvme_sq *sq = &n->sq[qid];
		if (!sq->live || value >= sq->size) {
			bad_doorbell(n, "invalid SQ %u tail doorbell value %u: ignored", qid, value);
			return;
		}
		sq->tail = value;
		kick_begin(n);
		process_sq(n, qid);
	}
	kick_end(n);
}

/* ---------------------------------------------------- register file */

static void controller_enable(struct sim_nvme *n)
{
	uint32_t asqs = (n->aqa & 0xfff) + 1, acqs = ((n->aqa >> 16) & 0xfff) + 1;

	if (CC_CSS(n->cc) != 0 || CC_MPS(n->cc) > MPS_MAX || CC_IOSQES(n->cc) != 6 || CC_IOCQES(n->cc) != 4 ||
	    asqs < 2 || acqs < 2 || (n->asq & 0xfff) || (n->acq & 0xfff)) {
		controller_fatal(n, "enabled with an invalid CC, AQA, ASQ or ACQ");
		return;
	}
	drop_queues(n);
	n->sq[0] = (struct nvme_sq){ .live = true, .base = n->asq, .size = asqs, .cqid = 0 };
	n->cq[0] = (struct nvme_cq){ .live = true, .base = n->acq, .size = acqs, .phase = true, .ien = true,
				     .vector = 0 };
	n->shut_down = false;
	n->csts = CSTS_RDY;
}

static void cc_write(struct sim_nvme *n, uint32_t value)
{
	uint32_t old = n->cc;

	if ((old & CC_EN) && (value & CC_EN))
		/* While enabled only SHN may change (the rest was checked at enable). */
		n->cc = (old & ~CC_SHN_MASK) | (value & CC_SHN_MASK);
	else
		n->cc = value & CC_WRITABLE;
	if (!(old & CC_EN) && (n->cc & CC_EN)) {
		controller_enable(n);
	} else if ((old & CC_EN) && !(n->cc & CC_EN)) {
		/* Controller reset: queues and held commands go; AQA/ASQ/ACQ stay. */
		drop_queues(n);
		n->csts = 0;
		n->shut_down = false;
	}
	if (CC_SHN(n->cc) && !CC_SHN(old)) {
		/* Nothing is in flight: the shutdown completes at once. */
		n->aers_held = 0;
		n->shut_down = true;
		n->csts |= CSTS_SHST_DONE;
	} else if (!CC_SHN(n->cc) && CC_SHN(old) && !(n->cc & CC_EN)) {
		n->csts &= ~CSTS_SHST_DONE;
	}
}

static uint32_t reg_read32(struct sim_nvme *n, uint64_t off)
{
	switch (off) {
	case REG_CAP: return (uint32_t)n->cap;
	case REG_CAP + 4: return (uint32_t)(n->cap >> 32);
	case REG_VS: return NVME_VERSION;
	case REG_INTMS:
	case REG_INTMC: return n->intms;
	case REG_CC: return n->cc;
	case REG_CSTS: return n->csts;
	case REG_AQA: return n->aqa;
	case REG_ASQ: return (uint32_t)n->asq;
	case REG_ASQ + 4: return (uint32_t)(n->asq >> 32);
	case REG_ACQ: return (uint32_t)n->acq;
	case REG_ACQ + 4: return (uint32_t)(n->acq >> 32);
	default: return 0; /* reserved, CMB/PMR absent, doorbells read 0 */
	}
}

static void reg_write32(struct sim_nvme *n, uint64_t off, uint32_t value)
{
	bool disabled = !(n->cc & CC_EN);

	if (off >= REG_DBS) {
		doorbell_write(n, off, value);
		return;
	}
	switch (off) {
	case REG_INTMS: n->intms |= value; break;
	case REG_INTMC: n->intms &= ~value; break;
	case REG_CC: cc_write(n, value); break;
	case REG_AQA: if (disabled) n->aqa = value & 0x0fff0fff; break;
	case REG_ASQ: if (disabled) n->asq = (n->asq & ~0xffffffffull) | value; break;
	case REG_ASQ + 4: if (disabled) n->asq = (n->asq & 0xffffffffull) | (uint64_t)value << 32; break;
	case REG_ACQ: if (disabled) n->acq = (n->acq & ~0xffffffffull) | value; break;
	case REG_ACQ + 4: if (disabled) n->acq = (n->acq & 0xffffffffull) | (uint64_t)value << 32; break;
	default: break; /* read-only, reserved, NSSR (not supported) */
	}
}

/* ------------------------------------------------ host_device ops */

static int nvme_identity(struct host_device *hd, struct hd_identity *out)
{
	(void)hd;
	*out = (struct hd_identity){
		.bus = 1, .device = 0, .function = 0,
		.vendor_id = SIM_NVME_VENDOR_ID, .device_id = SIM_NVME_DEVICE_ID, .class_code = SIM_NVME_CLASS,
	};
	return 0;
}

static int nvme_claim(struct host_device *hd)
{
	struct sim_nvme *n = to_nvme(hd);

	n->claimed = true;
	n->config[0x04] |= 0x06; /* memory space + bus master, as the dext does */
	return 0;
}

static void nvme_release(struct host_device *hd)
{
	to_nvme(hd)->claimed = false;
}

static int need_claim(struct sim_nvme *n, const char *what)
{
	if (!n->claimed)
		return hd_fail(&n->hd, -EACCES, "%s before claim: claim the device first", what);
	return 0;
}

static int config_check(struct sim_nvme *n, uint32_t offset, unsigned width)
{
	if (width != 1 && width != 2 && width != 4)
		return hd_fail(&n->hd, -EINVAL, "config access width %u: must be 1, 2 or 4", width);
	if (offset % width || offset >= SIM_NVME_CONFIG_SIZE || width > SIM_NVME_CONFIG_SIZE - offset)
		return hd_fail(&n->hd, -EINVAL, "config access at 0x%x width %u: unaligned or outside 4 KiB",
			       offset, width);
	return 0;
}

static int nvme_config_read(struct host_device *hd, uint32_t offset, unsigned width, uint32_t *value)
{
	struct sim_nvme *n = to_nvme(hd);
	int ret = need_claim(n, "config read");

	if (ret < 0 || (ret = config_check(n, offset, width)) < 0)
		return ret;
	uint32_t v = 0;
	for (unsigned i = 0; i < width; i++)
		v |= (uint32_t)n->config[offset + i] << (8 * i);
	*value = v;
	return 0;
}

static void nvme_flr(struct sim_nvme *n);

static int nvme_config_write(struct host_device *hd, uint32_t offset, unsigned width, uint32_t value)
{
	struct sim_nvme *n = to_nvme(hd);
	int ret = need_claim(n, "config write");
	bool flr = false;

	if (ret < 0 || (ret = config_check(n, offset, width)) < 0)
		return ret;
	for (unsigned i = 0; i < width; i++) {
		uint32_t at = offset + i;
		uint8_t b = (uint8_t)(value >> (8 * i));
		if (at == CAP_PCIE + 0x09 && (b & 0x80))
			flr = true; /* DEVCTL "initiate function-level reset" */
		n->config[at] = (uint8_t)((n->config[at] & ~n->config_wmask[at]) | (b & n->config_wmask[at]));
	}
	if (flr)
		nvme_flr(n);
	return 0;
}

static int nvme_config_read_block(struct host_device *hd, uint32_t offset, void *buf, size_t len)
{
	struct sim_nvme *n = to_nvme(hd);
	int ret = need_claim(n, "config read");

	if (ret < 0)
		return ret;
	if (offset > SIM_NVME_CONFIG_SIZE || len > SIM_NVME_CONFIG_SIZE - offset)
		return hd_fail(hd, -EINVAL, "config read of %zu bytes at 0x%x: outside 4 KiB", len, offset);
	memcpy(buf, n->config + offset, len);
	return 0;
}

static int nvme_bar_info(struct host_device *hd, unsigned bar, struct hd_bar_info *out)
{
	if (bar >= HD_NUM_BARS)
		return hd_fail(hd, -EINVAL, "BAR %u does not exist (0..5)", bar);
	*out = (struct hd_bar_info){ 0 };
	if (bar == 0) {
		out->size = SIM_NVME_BAR0_SIZE;
		out->type = HD_BAR_MEM64;
	} else if (bar == 4) {
		out->size = SIM_NVME_BAR4_SIZE;
		out->type = HD_BAR_MEM64;
	}
	return 0;
}

static int nvme_bar_map(struct host_device *hd, unsigned bar, volatile void **out)
{
	struct sim_nvme *n = to_nvme(hd);
	int ret = need_claim(n, "BAR map");

	if (ret < 0)
		return ret;
	if (bar == 0)
		return hd_fail(hd, -EOPNOTSUPP, "BAR0 of the simulated NVMe is trapped: use mmio_read/mmio_write");
	if (bar != 4)
		return hd_fail(hd, -EINVAL, "BAR %u is not implemented", bar);
	*out = n->bar4;
	return 0;
}

static int mmio_check(struct sim_nvme *n, unsigned bar, uint64_t offset, unsigned width)
{
	uint64_t size = bar == 0 ? SIM_NVME_BAR0_SIZE : bar == 4 ? SIM_NVME_BAR4_SIZE : 0;

	if (!size)
		return hd_fail(&n->hd, -EINVAL, "MMIO to BAR %u: not implemented (BAR0 and BAR4 are)", bar);
	if (width != 1 && width != 2 && width != 4 && width != 8)
		return hd_fail(&n->hd, -EINVAL, "MMIO width %u: must be 1, 2, 4 or 8", width);
	if (offset % width || offset >= size || width > size - offset)
		return hd_fail(&n->hd, -EINVAL, "MMIO at BAR%u+0x%" PRIx64 " width %u: unaligned or outside the BAR",
			       bar, offset, width);
	return 0;
}

static int nvme_mmio_read(struct host_device *hd, unsigned bar, uint64_t offset, unsigned width, uint64_t *value)
{
	struct sim_nvme *n = to_nvme(hd);
	int ret = need_claim(n, "MMIO read");

	if (ret < 0 || (ret = mmio_check(n, bar, offset, width)) < 0)
		return ret;
	if (bar == 4) {
		uint64_t v = 0;
		memcpy(&v, n->bar4 + offset, width);
		*value = v;
		return 0;
	}
	if (width == 8) {
		*value = reg_read32(n, offset) | (uint64_t)reg_read32(n, offset + 4) << 32;
		return 0;
	}
	uint32_t dword = reg_read32(n, offset & ~3ull);
	uint32_t shift = (uint32_t)(offset & 3) * 8;
	*value = (dword >> shift) & (width == 4 ? 0xffffffffu : (1u << (8 * width)) - 1);
	return 0;
}

static int nvme_mmio_write(struct host_device *hd, unsigned bar, uint64_t offset, unsigned width, uint64_t value)
{
	struct sim_nvme *n = to_nvme(hd);
	int ret = need_claim(n, "MMIO write");

	if (ret < 0 || (ret = mmio_check(n, bar, offset, width)) < 0)
		return ret;
	if (bar == 4) {
		memcpy(n->bar4 + offset, &value, width);
		return 0;
	}
	if (width == 8) { /* low dword first, as lo_hi_writeq does */
		reg_write32(n, offset, (uint32_t)value);
		reg_write32(n, offset + 4, (uint32_t)(value >> 32));
		return 0;
	}
	if (width < 4) {
		if (offset >= REG_DBS) {
			bad_doorbell(n, "%u-byte doorbell write at 0x%" PRIx64 ": doorbells are 32-bit, ignored",
				     width, offset);
			return 0;
		}
		uint32_t shift = (uint32_t)(offset & 3) * 8;
		uint32_t mask = ((1u << (8 * width)) - 1) << shift;
		uint64_t reg = offset & ~3ull;
		uint32_t dword = ((uint32_t)value << shift) & mask;
		/*
		 * Write-1-to-set/clear registers take only the written bytes; the
		 * others merge with the current value (a read-modify-write of
		 * INTMC would clear every bit set in the bytes not written).
		 */
		if (reg != REG_INTMS && reg != REG_INTMC)
			dword |= reg_read32(n, reg) & ~mask;
		reg_write32(n, reg, dword);
		return 0;
	}
	reg_write32(n, offset, (uint32_t)value);
	return 0;
}

static int nvme_dma_register(struct host_device *hd, uint64_t key, void *host_addr, uint64_t size,
			     uint64_t *bus_addr, uint64_t *bus_len)
{
	struct sim_nvme *n = to_nvme(hd);
	int ret = sim_dart_map(n->dart, key, host_addr, size, bus_addr, bus_len);

	if (ret < 0)
		return hd_fail(hd, ret, "%s", sim_dart_error(n->dart));
	return 0;
}

static int nvme_dma_unregister(struct host_device *hd, uint64_t key)
{
	struct sim_nvme *n = to_nvme(hd);
	int ret = sim_dart_unmap(n->dart, key);

	if (ret < 0)
		return hd_fail(hd, ret, "%s", sim_dart_error(n->dart));
	return 0;
}

static int nvme_irq_setup(struct host_device *hd, unsigned *nvectors)
{
	struct sim_nvme *n = to_nvme(hd);
	int ret = need_claim(n, "interrupt setup");

	if (ret < 0)
		return ret;
	n->irq_ready = true;
	*nvectors = SIM_NVME_VECTORS;
	return 0;
}

static int nvme_irq_set_mask(struct host_device *hd, const uint64_t mask[HD_IRQ_WORDS])
{
	struct sim_nvme *n = to_nvme(hd);

	memcpy(n->irq_mask, mask, sizeof(n->irq_mask));
	return 0;
}

static int nvme_irq_read_pending(struct host_device *hd, uint64_t pending[HD_IRQ_WORDS])
{
	struct sim_nvme *n = to_nvme(hd);

	/* The broker is here because the wake-up fd fired: continue what a
	 * doorbell's budget left, so that its completions are in this set. */
	resume_work(n);
	memcpy(pending, n->irq_pending, sizeof(n->irq_pending));
	memset(n->irq_pending, 0, sizeof(n->irq_pending));
	return 0;
}

static int nvme_irq_wakeup_fd(struct host_device *hd)
{
	return to_nvme(hd)->wakeup_fds[0];
}

/* Function-level reset: the device returns to power-on state; data stays. */
static void nvme_flr(struct sim_nvme *n)
{
	uint8_t command = n->config[0x04];

	controller_power_on(n);
	config_power_on(n);
	/* The host restores COMMAND around a reset (the dext keeps its claim). */
	n->config[0x04] = command;
	memset(n->bar4, 0, SIM_NVME_BAR4_SIZE);
	for (unsigned v = 0; v < SIM_NVME_VECTORS; v++)
		le_store32(n->bar4 + 16 * v + 12, 1); /* vector control: masked */
	memset(n->irq_pending, 0, sizeof(n->irq_pending));
	n->stats.fatal = false;
}

static int nvme_reset(struct host_device *hd)
{
	struct sim_nvme *n = to_nvme(hd);
	int ret = need_claim(n, "reset");

	if (ret < 0)
		return ret;
	nvme_flr(n);
	return 0;
}

static int nvme_dma_stats(struct host_device *hd, struct hd_dma_stats *out)
{
	sim_dart_stats(to_nvme(hd)->dart, out);
	return 0;
}

static void nvme_destroy(struct host_device *hd)
{
	struct sim_nvme *n = to_nvme(hd);

	if (!n)
		return;
	sim_dart_destroy(n->dart);
	if (n->store && n->store != MAP_FAILED)
		munmap(n->store, n->store_size);
	if (n->store_fd >= 0)
		close(n->store_fd);
	if (n->bar4 && n->bar4 != MAP_FAILED)
		munmap(n->bar4, SIM_NVME_BAR4_SIZE);
	vfa_notifier_close(n->wakeup_fds);
	free(n->prp_scratch);
	free(n->prp_segs);
	free(n->scratch);
	free(n);
}

static const struct host_device_ops sim_nvme_ops = {
	.identity = nvme_identity,
	.claim = nvme_claim,
	.release = nvme_release,
	.config_read = nvme_config_read,
	.config_write = nvme_config_write,
	.config_read_block = nvme_config_read_block,
	.bar_info = nvme_bar_info,
	.bar_map = nvme_bar_map,
	.mmio_read = nvme_mmio_read,
	.mmio_write = nvme_mmio_write,
	.dma_register = nvme_dma_register,
	.dma_unregister = nvme_dma_unregister,
	.irq_setup = nvme_irq_setup,
	.irq_set_mask = nvme_irq_set_mask,
	.irq_read_pending = nvme_irq_read_pending,
	.irq_wakeup_fd = nvme_irq_wakeup_fd,
	.reset = nvme_reset,
	.dma_stats = nvme_dma_stats,
	.destroy = nvme_destroy,
};

static int open_store(struct sim_nvme *n, const struct sim_nvme_config *cfg, char *err, size_t errlen)
{
	uint64_t size = cfg->size;

	if (cfg->backing) {
		struct stat st;
		n->store_fd = open(cfg->backing, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (n->store_fd < 0 || fstat(n->store_fd, &st) < 0) {
			snprintf(err, errlen, "cannot open backing file %s: %s", cfg->backing, strerror(errno));
			return -errno;
		}
		if (!size)
			size = st.st_size ? (uint64_t)st.st_size : SIM_NVME_DEFAULT_SIZE;
		if ((uint64_t)st.st_size < size && ftruncate(n->store_fd, (off_t)size) < 0) {
			snprintf(err, errlen, "cannot grow backing file %s to %" PRIu64 " bytes: %s", cfg->backing,
				 size, strerror(errno));
			return -errno;
		}
	} else if (!size) {
		size = SIM_NVME_DEFAULT_SIZE;
	}
	if (size % SIM_NVME_LBA_SIZE || size < SIM_NVME_MIN_SIZE || size > SIM_NVME_MAX_SIZE) {
		snprintf(err, errlen, "namespace size %" PRIu64 " bytes: must be a multiple of 512 between 1 MiB and 1 TiB",
			 size);
		return -EINVAL;
	}
	n->store_size = size;
	if (n->store_fd >= 0)
		n->store = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, n->store_fd, 0);
	else
		n->store = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (n->store == MAP_FAILED) {
		n->store = NULL;
		snprintf(err, errlen, "cannot map %" PRIu64 " bytes of backing store: %s", size, strerror(errno));
		return -ENOMEM;
	}
	return 0;
}

struct host_device *sim_nvme_open(const struct sim_nvme_config *cfg, char *err, size_t errlen)
{
	struct sim_nvme *n = calloc(1, sizeof(*n));

	if (!n) {
		snprintf(err, errlen, "out of memory creating the simulated NVMe");
		return NULL;
	}
	n->hd.ops = &sim_nvme_ops;
	n->store_fd = -1;
	n->wakeup_fds[0] = n->wakeup_fds[1] = -1;
	int notifier_rc = vfa_notifier_open(n->wakeup_fds);
	n->bar4 = mmap(NULL, SIM_NVME_BAR4_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	n->prp_scratch = malloc((4096u << MPS_MAX) / 8 * sizeof(uint64_t));
	n->scratch = malloc(SIM_NVME_MAX_TRANSFER);
	n->prp_segs = calloc(SIM_NVME_MAX_PRP_SEGS, sizeof(*n->prp_segs));
	if (notifier_rc < 0)
		errno = -notifier_rc;
	if (notifier_rc < 0 || n->bar4 == MAP_FAILED || !n->prp_scratch || !n->scratch || !n->prp_segs) {
		snprintf(err, errlen, "cannot allocate the simulated NVMe's resources: %s", strerror(errno));
		nvme_destroy(&n->hd);
		return NULL;
	}
	if (open_store(n, cfg, err, errlen) < 0) {
		nvme_destroy(&n->hd);
		return NULL;
	}
	n->dart = sim_dart_create(&cfg->dart, err, errlen);
	if (!n->dart) {
		nvme_destroy(&n->hd);
		return NULL;
	}
	sim_dart_limits(n->dart, &n->hd.limits);
	n->hd.identity_dma = sim_dart_identity(n->dart);

	/* CAP: MQES 1023, CQR, TO 10 s, DSTRD 0, CSS NVM, MPSMIN 4 KiB, MPSMAX 64 KiB. */
	n->cap = (uint64_t)(SIM_NVME_MAX_QUEUE_ENTRIES - 1) | 1ull << 16 | 20ull << 24 | 1ull << 37 |
		 (uint64_t)MPS_MAX << 52;
	controller_power_on(n);
	config_power_on(n);
	nvme_flr(n);
	return &n->hd;
}

struct sim_dart *sim_nvme_dart(struct host_device *hd)
{
	return hd && hd->ops == &sim_nvme_ops ? to_nvme(hd)->dart : NULL;
}

void sim_nvme_get_stats(struct host_device *hd, struct sim_nvme_stats *out)
{
	struct sim_nvme *n = to_nvme(hd);

	memset(out, 0, sizeof(*out));
	if (!hd || hd->ops != &sim_nvme_ops)
		return;
	*out = n->stats;
	out->aers_held = n->aers_held;
	out->fatal = (n->csts & CSTS_CFS) != 0;
}
