/* SPDX-License-Identifier: MIT */
/*
 * The apple-dma-pci companion device (1b36:0015): the guest's channel for
 * asking the host to map its buffers for device DMA.  Version 2 of the wire
 * protocol byte for byte, plus the negotiated version-3 registers: both
 * specified in docs/apple-dma-v3.md.
 *
 * Free of any VMM or OS type: a front end forwards BAR0 and config-space
 * accesses here, and tells the companion before guest RAM goes away.  All
 * guest RAM is reached through the guest memory map; every MAP entry is
 * registered with the host device under a unique 64-bit id (never 0), which
 * is also the dma_register key.  In identity mode (hd->identity_dma) a MAP
 * returns dma_addr = gpa and registers nothing; ids stay unique.
 *
 * Not thread-safe: the broker's event loop owns it.
 */
#ifndef VFA_COMPANION_H
#define VFA_COMPANION_H

#include <stdbool.h>
#include <stdint.h>

#include "guest_mem.h"
#include "host_device.h"

#define COMPANION_VENDOR_ID 0x1b36
#define COMPANION_DEVICE_ID 0x0015
#define COMPANION_CLASS_CODE 0x088000 /* system peripheral, other */
#define COMPANION_BAR0_SIZE 4096
#define COMPANION_CONFIG_SIZE 256
#define COMPANION_DEFAULT_MAX_ENTRIES 4096
#define COMPANION_LIMIT_MAX_ENTRIES 65536 /* largest max_entries accepted */

/* BAR0 registers (32-bit little-endian). */
enum companion_reg {
	APPLE_DMA_REG_VERSION = 0x00,
	APPLE_DMA_REG_MANAGED_BDF = 0x04,
	APPLE_DMA_REG_MAX_ENTRIES = 0x08,
	APPLE_DMA_REG_STATUS = 0x0C,
	APPLE_DMA_REG_CMD_GPA_LO = 0x10,
	APPLE_DMA_REG_CMD_GPA_HI = 0x14,
	APPLE_DMA_REG_DOORBELL = 0x18,
	/* version 3 (read 0 on a version-2 device) */
	APPLE_DMA_REG_FEATURES = 0x1C,
	APPLE_DMA_REG_DART_MAX_BYTES_LO = 0x20,
	APPLE_DMA_REG_DART_MAX_BYTES_HI = 0x24,
	APPLE_DMA_REG_DART_MAX_MAPPINGS = 0x28,
	APPLE_DMA_REG_DART_GRANULE = 0x2C,
	APPLE_DMA_REG_LIVE_BYTES_LO = 0x30,
	APPLE_DMA_REG_LIVE_BYTES_HI = 0x34,
	APPLE_DMA_REG_LIVE_MAPPINGS = 0x38,
	APPLE_DMA_REG_GUEST_FEATURES = 0x3C,
};

#define APPLE_DMA_VERSION 2
#define APPLE_DMA_FEAT_BUDGET (1u << 0)
#define APPLE_DMA_FEAT_UNIQUE_IDS (1u << 1)
#define APPLE_DMA_FEAT_UNMAP_ALL (1u << 2)
#define APPLE_DMA_FEATURES (APPLE_DMA_FEAT_BUDGET | APPLE_DMA_FEAT_UNIQUE_IDS | APPLE_DMA_FEAT_UNMAP_ALL)

enum apple_dma_cmd_type {
	APPLE_DMA_CMD_MAP = 1,
	APPLE_DMA_CMD_UNMAP = 2,
	APPLE_DMA_CMD_UNMAP_ALL = 3, /* version 3 */
};

enum apple_dma_status {
	APPLE_DMA_OK = 0,
	APPLE_DMA_IOERR = 1,
	APPLE_DMA_INVAL = 3,
};

/* Wire sizes (packed little-endian layouts, see the protocol page). */
#define APPLE_DMA_CMD_PAGE_SIZE 32
#define APPLE_DMA_MAP_REQ_SIZE 16
#define APPLE_DMA_MAP_RESP_SIZE 24
#define APPLE_DMA_UNMAP_REQ_SIZE 16
#define APPLE_DMA_UNMAP_RESP_SIZE 16

struct companion;

struct companion_stats {
	uint64_t doorbells;      /* DOORBELL writes */
	uint64_t map_entries;    /* MAP entries processed (ok or not) */
	uint64_t unmap_entries;  /* UNMAP entries processed (ok or not) */
	uint64_t inval;          /* doorbells whose batch status was INVAL */
	uint64_t ioerr;          /* doorbells whose batch status was IOERR */
	uint64_t failed_entries; /* entries with a status other than OK */
	uint64_t bad_accesses;   /* BAR0 accesses ignored: width, alignment, offset */
	uint64_t live_ids;
	uint64_t live_bytes;
	uint64_t peak_ids;
	uint64_t peak_bytes;
	uint32_t guest_features; /* last value the guest wrote to GUEST_FEATURES */
	uint64_t removed_refused; /* MAP entries refused (IOERR) because the host function is gone */
	uint64_t orphaned_ids;    /* live ids whose host mapping was released at removal (UNMAP still OK) */
	uint64_t resets;          /* companion_reset() calls: the VMM's, a client leaving, sim-reset-companion */
};

/*
 * hd and gm must outlive the companion.  managed_bdf is the guest
 * (bus << 8 | devfn) of the passthrough function.  max_entries 0 means
 * COMPANION_DEFAULT_MAX_ENTRIES; above COMPANION_LIMIT_MAX_ENTRIES is
 * refused.  NULL (with a log message) on bad arguments or no memory.
 */
struct companion *companion_create(struct host_device *hd, struct guest_mem *gm, uint16_t managed_bdf,
				   uint32_t max_entries);
/* The managed function's guest address changed (the guest renumbered its buses). */
void companion_set_managed_bdf(struct companion *c, uint16_t managed_bdf);
/* Unregisters every live mapping (the VMM went away), then frees. */
void companion_destroy(struct companion *c);

/*
 * BAR0.  Aligned 32-bit accesses are the protocol.  A 1- or 2-byte read
 * inside one register returns those bytes of it; any other read (width not
 * 1, 2 or 4, crossing a 4-byte boundary, beyond BAR0) returns 0.  Writes
 * other than aligned 32-bit ones are ignored.  A front end that receives
 * an 8-byte access splits it into two 32-bit ones (low half first).
 */
uint32_t companion_mmio_read(struct companion *c, uint64_t offset, unsigned width);
void companion_mmio_write(struct companion *c, uint64_t offset, unsigned width, uint32_t value);

/*
 * The 256-byte PCI config space: 1b36:0015, class 0x088000, BAR0 32-bit
 * memory 4 KiB with sizing semantics, no capabilities, interrupt pin 0.
 * Any length; -EINVAL when [offset, offset + len) leaves the 256 bytes.
 * Writes change only the writable bits (COMMAND, cache line, BAR0,
 * interrupt line).
 */
int companion_config_read(struct companion *c, uint32_t offset, void *buf, uint32_t len);
int companion_config_write(struct companion *c, uint32_t offset, const void *buf, uint32_t len);

/* Device reset: unregister every mapping, clear the registers. */
void companion_reset(struct companion *c);

/*
 * The managed function was reset with no VMM driving it (its passthrough
 * client left): unregister every mapping, as nothing may reach the guest's
 * RAM through them any more.  Registers and config space are the
 * companion's own client's and stay; its old ids become unknown.
 */
void companion_release_mappings(struct companion *c);

/*
 * The VMM is about to remove [gpa, gpa + len) from guest RAM: unregister
 * every mapping that overlaps it.  Call BEFORE the range is munmapped.
 */
void companion_guest_ram_removed(struct companion *c, uint64_t gpa, uint64_t len);

void companion_stats(const struct companion *c, struct companion_stats *out);
/*
 * While refuse is set, every MAP entry fails with IOERR (UNMAPs still
 * work): the broker refuses maps while no passthrough client is there to
 * use them (issue 11, item 4).  Off at create.
 */
void companion_refuse_maps(struct companion *c, bool refuse);

/*
 * Surprise removal of the managed function (hostdev/host_device.h).
 * companion_host_gone: every live mapping is unregistered from the host
 * now (the DART is emptied as far as the host lets it) but its id stays
 * known, "orphaned": a later UNMAP of it (or UNMAP_ALL, or a reset)
 * succeeds without calling the host again, so nothing is released twice
 * and the guest's teardown sees OK.  From then on every MAP entry fails
 * with IOERR, and every BAR0 register reads all ones, as the companion of
 * a removed slot (the guest module takes STATUS or VERSION all ones as the
 * sign that the function is gone); batches are still processed, so the
 * response array and the command page's status field say IOERR for a MAP
 * and OK for the UNMAP of an orphaned id.  Idempotent; the companion also
 * does it by itself when it finds the host device gone at a doorbell or a
 * register read.  Returns the number of host mappings released.
 *
 * companion_host_back: the function is present again (a fresh device
 * behind the same host_device): MAPs work again; orphaned ids stay until
 * the guest unmaps them or the companion resets.
 */
unsigned companion_host_gone(struct companion *c);
void companion_host_back(struct companion *c);
/* Whether companion_host_gone() is in force. */
bool companion_host_is_gone(const struct companion *c);

#endif
