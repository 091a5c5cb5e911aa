/* SPDX-License-Identifier: MIT */
/*
 * The simulated NVMe controller's insides, shared by its four files
 * (sim_nvme.h is the interface the rest of the tree uses):
 *
 *   sim_nvme.c         registers, queues and doorbells, interrupts, the
 *                      controller's state machine, the host_device verbs
 *   sim_nvme_config.c  PCI config space
 *   sim_nvme_admin.c   admin commands (table: nvme_admin_cmds[]), features
 *                      (table: nvme_features[]), Identify, log pages
 *   sim_nvme_io.c      I/O commands, PRP transfers through the DART, the
 *                      backing store
 *
 * The calls go one way: sim_nvme.c runs commands through the admin file
 * (which moves data through the I/O file) and the I/O file, and config
 * space through the config file; none of them calls back into sim_nvme.c.  (Modelled on QEMU hw/nvme/ctrl.c's tables.)
 */
#ifndef VFA_SIM_NVME_INT_H
#define VFA_SIM_NVME_INT_H

#include "sim_nvme.h"

#include <stdbool.h>
#include <stdint.h>

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
#define CAP_MSI 0xa0 /* after the 0x3c bytes of the PCIe capability */

/* Admin command set opcodes (NVMe base 1.4, figure 139). */
enum nvme_admin_opcode {
	NVME_ADM_DELETE_SQ = 0x00,
	NVME_ADM_CREATE_SQ = 0x01,
	NVME_ADM_GET_LOG_PAGE = 0x02,
	NVME_ADM_DELETE_CQ = 0x04,
	NVME_ADM_CREATE_CQ = 0x05,
	NVME_ADM_IDENTIFY = 0x06,
	NVME_ADM_ABORT = 0x08,
	NVME_ADM_SET_FEATURES = 0x09,
	NVME_ADM_GET_FEATURES = 0x0a,
	NVME_ADM_ASYNC_EVENT = 0x0c,
};

/* NVM command set opcodes. */
enum nvme_io_opcode {
	NVME_CMD_FLUSH = 0x00,
	NVME_CMD_WRITE = 0x01,
	NVME_CMD_READ = 0x02,
};

/* Feature identifiers (Set/Get Features, CDW10 bits 7:0). */
enum nvme_feature_id {
	NVME_FEAT_ARBITRATION = 0x01,
	NVME_FEAT_POWER_MGMT = 0x02,
	NVME_FEAT_TEMP_THRESH = 0x04,
	NVME_FEAT_ERROR_RECOVERY = 0x05,
	NVME_FEAT_VOLATILE_WC = 0x06,
	NVME_FEAT_NUM_QUEUES = 0x07,
	NVME_FEAT_IRQ_COALESCE = 0x08,
	NVME_FEAT_IRQ_CONFIG = 0x09,
	NVME_FEAT_WRITE_ATOMIC = 0x0a,
	NVME_FEAT_ASYNC_EVENT = 0x0b,
};

/* Command Dword 0 flags: FUSE (bits 1:0) and PSDT (bits 7:6, SGLs); neither is supported. */
#define SQE_FLAGS_FUSE 0x03u
#define SQE_FLAGS_PSDT 0xc0u
#define SQE_FLAGS_UNSUPPORTED (SQE_FLAGS_FUSE | SQE_FLAGS_PSDT)

/* Commands Supported and Effects log: CSUPP, LBCC (changes the namespace's data). */
#define CSE_CSUPP 0x1u
#define CSE_LBCC 0x2u

/* One command, as parsed from its 64 little-endian bytes (sim_nvme_sqe_parse). */
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
#define NVME_SQE_SIZE 64

/* The features kept per controller: nvme_features[] in sim_nvme_admin.c. */
#define NVME_NFEATURES 8

/* One piece of a PRP transfer: at most a memory page. */
struct prp_seg {
	uint64_t bus;
	uint64_t len;
};
/* PRP1's piece, then one per page (the smallest page is 4 KiB). */
#define SIM_NVME_MAX_PRP_SEGS (1u + SIM_NVME_MAX_TRANSFER / 4096u)

/*
 * The controller's state (issue 13, item 6), kept in step with CSTS: the
 * legal transitions are ctrl_legal[] in sim_nvme.c, an illegal one is
 * logged (and not taken).  A function-level reset returns to DISABLED from
 * anywhere.
 */
enum nvme_ctrl_state {
	NVME_CTRL_DISABLED = SIM_NVME_DISABLED, /* CC.EN 0: registers may be set up */
	NVME_CTRL_READY = SIM_NVME_READY,       /* CSTS.RDY: queues run */
	NVME_CTRL_SHUTDOWN = SIM_NVME_SHUTDOWN, /* CC.SHN done: no command runs until CC.EN goes 0 (or a new enable) */
	NVME_CTRL_FATAL = SIM_NVME_FATAL,       /* CSTS.CFS: only a reset helps */
	NVME_CTRL_NSTATES,
};

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
	struct sim_dart_config dart_cfg; /* kept for a replug's fresh DART */
	bool no_msi;                     /* sim_nvme_config.no_msi */
	bool claimed;
	/* sim_nvme_vanish_after(): run this many more commands, then vanish. */
	bool vanish_armed;
	uint64_t vanish_budget;
	char vanish_reason[96]; /* "": the default reason */

	/* Config space: values and per-byte writable masks. */
	uint8_t config[SIM_NVME_CONFIG_SIZE];
	uint8_t config_wmask[SIM_NVME_CONFIG_SIZE];

	/* Controller registers. */
	uint64_t cap;
	uint32_t intms, cc, csts, aqa;
	uint64_t asq, acq;
	bool shut_down;
	enum nvme_ctrl_state state;

	struct nvme_sq sq[NQUEUES];
	struct nvme_cq cq[NQUEUES];
	unsigned aers_held;

	/* Features, in the order of nvme_features[] (sim_nvme_admin.c). */
	uint32_t feat[NVME_NFEATURES];

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

static inline struct sim_nvme *to_nvme(struct host_device *hd)
{
	return (struct sim_nvme *)hd;
}

static inline uint32_t page_size(const struct sim_nvme *n)
{
	return 4096u << CC_MPS(n->cc);
}

/* Parse a submission queue entry: little-endian fields, any host. */
void sim_nvme_sqe_parse(const uint8_t raw[NVME_SQE_SIZE], struct nvme_sqe *c);

/*
 * sim_nvme_config.c: config space as such (the claim check and the FLR a
 * DEVCTL write asks for are the caller's, sim_nvme.c's host_device verbs).
 */
void sim_nvme_config_power_on(struct sim_nvme *n);
int sim_nvme_cfg_read(struct sim_nvme *n, uint32_t offset, unsigned width, uint32_t *value);
/* *flr: the write set DEVCTL's "initiate function-level reset". */
int sim_nvme_cfg_write(struct sim_nvme *n, uint32_t offset, unsigned width, uint32_t value, bool *flr);
int sim_nvme_cfg_read_block(struct sim_nvme *n, uint32_t offset, void *buf, size_t len);

/* sim_nvme_admin.c: false when the command is held (no completion now). */
bool sim_nvme_admin_command(struct sim_nvme *n, const struct nvme_sqe *c, uint16_t *status, uint32_t *result);
/* Power-on values of the features. */
void sim_nvme_features_power_on(struct sim_nvme *n);

/* Commands Supported and Effects entries of the I/O command set (log page 05h). */
void sim_nvme_io_effects(uint8_t *log_io_part);

/* sim_nvme_io.c */
uint16_t sim_nvme_io_command(struct sim_nvme *n, const struct nvme_sqe *c);
uint16_t sim_nvme_dma_prp(struct sim_nvme *n, uint64_t prp1, uint64_t prp2, uint8_t *buf, uint64_t len, bool to_guest);
int sim_nvme_open_store(struct sim_nvme *n, const struct sim_nvme_config *cfg, char *err, size_t errlen);

#endif
