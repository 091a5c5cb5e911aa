/* SPDX-License-Identifier: MIT */
/*
 * A simulated NVMe controller behind the host-device interface, its DMA
 * going through the DART model (sim_dart.h).  Good enough for the unmodified
 * Linux nvme driver (kernels 6.1 to 7.3).
 *
 * What the device looks like:
 *  - PCI 1b36:00f0 (an ID matching no quirk of drivers/nvme/host/pci.c),
 *    class 0x010802, 4 KiB config space with power-management, MSI-X and
 *    PCI Express capabilities, no INTx (interrupt pin 0); config reads of
 *    BARs return the BAR type with address 0, as the dext does;
 *  - BAR0: 16 KiB of NVMe registers and doorbells (64-bit, trapped:
 *    bar_map says -EOPNOTSUPP, use mmio_read/write);
 *  - BAR4: 16 KiB of plain memory holding the MSI-X table (offset 0,
 *    SIM_NVME_VECTORS entries) and PBA (offset 0x1000); bar_map returns it.
 *    As with the dext, interrupt delivery does not depend on its contents:
 *    a completion raises its CQ's vector through the pending set when that
 *    vector is enabled by irq_set_mask, and signals the wake-up eventfd;
 *  - NVMe 1.4, one namespace (NSID 1) of 512-byte LBAs, 16 I/O queue pairs
 *    of up to 1024 entries, MDTS 2 MiB, volatile write cache (Flush);
 *  - the backing store is anonymous memory or a file (mmap'ed shared);
 *  - commands run synchronously inside the SQ tail doorbell write.
 */
#ifndef VFA_SIM_NVME_H
#define VFA_SIM_NVME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "host_device.h"
#include "sim_dart.h"

#define SIM_NVME_VENDOR_ID 0x1b36
#define SIM_NVME_DEVICE_ID 0x00f0
#define SIM_NVME_CLASS 0x010802
#define SIM_NVME_DEFAULT_SIZE (64ull * 1024 * 1024)
#define SIM_NVME_MIN_SIZE (1ull * 1024 * 1024)
#define SIM_NVME_MAX_SIZE (1ull << 40)
#define SIM_NVME_LBA_SIZE 512u
#define SIM_NVME_IO_QUEUES 16u                      /* I/O SQ/CQ pairs */
#define SIM_NVME_VECTORS (SIM_NVME_IO_QUEUES + 1u)  /* MSI-X table size */
#define SIM_NVME_MAX_QUEUE_ENTRIES 1024u
#define SIM_NVME_MDTS_SHIFT 9u                      /* 2^9 x 4 KiB = 2 MiB */
#define SIM_NVME_MAX_TRANSFER (4096u << SIM_NVME_MDTS_SHIFT)
/*
 * Work one doorbell write does before returning: at most this many commands
 * and (about) this many bytes of data.  What is left is resumed on the next
 * irq_read_pending(), which the wake-up fd, signalled at once, asks the
 * broker for: its loop serves other sockets in between.
 */
#define SIM_NVME_KICK_COMMANDS 64u
#define SIM_NVME_KICK_BYTES (8ull << 20)
#define SIM_NVME_BAR0_SIZE 0x4000u
#define SIM_NVME_BAR4_SIZE 0x4000u
#define SIM_NVME_MSIX_PBA_OFFSET 0x1000u
#define SIM_NVME_CONFIG_SIZE 4096u

struct sim_nvme_config {
	uint64_t size;          /* bytes, a multiple of 512; 0: the backing file's size or 64 MiB */
	const char *backing;    /* file path; NULL: anonymous memory */
	struct sim_dart_config dart;
	bool no_msi;            /* MSI-X alone, as some devices are (default: MSI-X and MSI) */
};

/* NULL with a one-line reason in err on failure. */
struct host_device *sim_nvme_open(const struct sim_nvme_config *cfg, char *err, size_t errlen);

/* For tests and the dext model: the DART behind a sim NVMe host device (NULL for any other). */
struct sim_dart *sim_nvme_dart(struct host_device *hd);

/* Counters a test can check. */
struct sim_nvme_stats {
	uint64_t admin_commands;
	uint64_t io_commands;
	uint64_t errors;          /* completions with a non-zero status */
	uint64_t dma_faults;      /* commands failed with Data Transfer Error */
	uint64_t interrupts;      /* vectors made pending */
	uint64_t interrupts_masked; /* completions whose vector was not enabled */
	uint64_t aers_held;       /* Async Event Requests outstanding now */
	uint64_t kicks_deferred;  /* doorbells whose commands outran one kick's budget */
	unsigned state;           /* enum sim_nvme_state */
	uint64_t illegal_transitions; /* state changes the table refused (logged; a model bug) */
	bool fatal;               /* CSTS.CFS */
};
/* The controller's state (sim_nvme.c keeps it in step with CSTS). */
enum sim_nvme_state {
	SIM_NVME_DISABLED, /* CC.EN 0 */
	SIM_NVME_READY,    /* CSTS.RDY: queues run */
	SIM_NVME_SHUTDOWN, /* CC.SHN done */
	SIM_NVME_FATAL,    /* CSTS.CFS: a reset is needed */
};
/* All zero for a host device that is not a sim NVMe. */
void sim_nvme_get_stats(struct host_device *hd, struct sim_nvme_stats *out);

/*
 * Surprise removal, for tests and the broker's `sim-vanish`/`sim-replug`
 * (hostdev/host_device.h, "Surprise removal").
 *
 * sim_nvme_vanish: the device disappears at once, as with a pulled cable:
 * it is marked gone (reason: NULL for "the simulated device was pulled"),
 * its wake-up fd is signalled, no command runs and no DMA or interrupt
 * happens any more (work a doorbell's budget left queued is dropped); every
 * verb fails with -ENODEV except dma_unregister, which still empties the
 * DART, and release/destroy/dma_stats/irq_wakeup_fd.  -EINVAL when hd is
 * not a sim NVMe; vanishing twice is harmless.
 *
 * sim_nvme_vanish_after: the device runs `commands` more commands, then
 * vanishes before it fetches the next one (a removal in the middle of a
 * doorbell's batch).
 *
 * sim_nvme_replug: a vanished device comes back as a fresh one in the same
 * object: power-on state (config space, registers, no queues, interrupts
 * not set up), not claimed, counters zero, and a fresh DART of the same
 * configuration (no mappings; a new bus base unless seeded: sim_nvme_dart()
 * returns the new one).  The namespace's data is kept (same store).
 * -EINVAL when hd is not a sim NVMe, -EBUSY when it is present, -ENOMEM.
 */
int sim_nvme_vanish(struct host_device *hd, const char *reason);
int sim_nvme_vanish_after(struct host_device *hd, uint64_t commands, const char *reason);
int sim_nvme_replug(struct host_device *hd, char *err, size_t errlen);
/* Whether hd is a sim NVMe (the only backend that can be told to vanish). */
bool sim_nvme_is(const struct host_device *hd);

#endif
