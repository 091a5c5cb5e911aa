/* SPDX-License-Identifier: MIT */
/*
 * The host-device interface: the verbs of the VFIOUserPCIDriver dext
 * (shared/spec/dext-abi.md), and nothing else.  The simulated backend
 * (backends/sim) and the macOS backend (backends/darwin) both implement it,
 * so a bug seen with one is a bug in the other.
 *
 * Conventions:
 *  - every call returns 0 or a negative errno value;
 *  - on failure the backend also leaves a message a person can act on,
 *    read with host_device_error();
 *  - calls are made from one thread (the broker's event loop); a backend
 *    that uses threads internally hides them.
 *
 * Surprise removal (the function disappears without warning: a Thunderbolt
 * cable pulled, the dext's service terminated, the device not answering):
 *  - the backend marks the host device gone with hd_mark_gone() (once, with
 *    a reason a person can read) before it returns -ENODEV from a verb; from
 *    then on every verb fails with -ENODEV without touching the device,
 *    except these, which always work: release, destroy, dma_stats,
 *    irq_wakeup_fd, and dma_unregister, which releases the registration
 *    (or forgets it when the platform already dropped it with the device)
 *    and returns 0, or -ENOENT for a key that is not registered;
 *  - a backend that learns of the removal asynchronously (the darwin
 *    backend's service-termination notification) makes the irq wake-up fd
 *    readable; the next irq_read_pending then fails with -ENODEV and marks
 *    the device gone.  A simulated removal does the same;
 *  - front ends therefore learn it promptly in two ways: after any verb
 *    fails with -ENODEV, and when the wake-up fd fires: they check
 *    host_device_present() and, once false, answer the VMM as a missing
 *    PCIe function does (reads all ones, writes dropped), register no new
 *    DMA, deliver no interrupt, and unregister every mapping they hold;
 *  - being gone is final for that host_device object, except for the
 *    simulator, which can be plugged back (sim_nvme_replug(): a fresh
 *    device in the same object, to be claimed again).
 */
#ifndef VFA_HOST_DEVICE_H
#define VFA_HOST_DEVICE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HD_NUM_BARS 6
#define HD_MAX_VECTORS 256
#define HD_IRQ_WORDS (HD_MAX_VECTORS / 64) /* 4 x 64-bit words */
#define HD_ERROR_LEN 256

/* Selector 0 (GetIdentity). */
struct hd_identity {
	uint8_t bus;
	uint8_t device;   /* 0..31 */
	uint8_t function; /* 0..7 */
	uint16_t vendor_id;
	uint16_t device_id;
	uint32_t class_code; /* 24 bits: base class << 16 | sub << 8 | prog-if */
};

enum hd_bar_type {
	HD_BAR_UNUSED = 0, /* BAR not implemented (size 0) */
	HD_BAR_IO,
	HD_BAR_MEM32,
	HD_BAR_MEM64, /* occupies this BAR and the next one */
};

/* Selector 10 (GetBARInfo). */
struct hd_bar_info {
	uint64_t size; /* bytes, a power of two, 0 when unused */
	enum hd_bar_type type;
	bool prefetchable;
};

/*
 * Limits of the platform's DMA translation (the DART).  Not a dext verb but
 * a property of the platform; the companion advertises it to the guest.
 */
struct hd_dma_limits {
	uint64_t max_bytes;    /* bytes registered at once (Apple: 1.5 GiB) */
	uint32_t max_mappings; /* live registrations (Apple: 65,536) */
	uint32_t granule;      /* translation page size (Apple: 16 KiB) */
};

/* Diagnostics for `vfio-apple status`; counters a backend cannot know are 0. */
struct hd_dma_stats {
	uint64_t live_mappings;
	uint64_t live_bytes;
	uint64_t peak_mappings;
	uint64_t peak_bytes;
	uint64_t faults; /* device accesses to unmapped bus addresses */
	uint64_t registers;
	uint64_t unregisters;
	uint64_t register_failures;
};

struct host_device;

struct host_device_ops {
	/* Selector 0. */
	int (*identity)(struct host_device *hd, struct hd_identity *out);
	/* Selector 1: open the function, enable memory space + bus master. */
	int (*claim)(struct host_device *hd);
	/* Give the claim back (the dext drops its reference on close). */
	void (*release)(struct host_device *hd);

	/* Selectors 8/9; width is 1, 2 or 4 and offset is width-aligned. */
	int (*config_read)(struct host_device *hd, uint32_t offset, unsigned width, uint32_t *value);
	int (*config_write)(struct host_device *hd, uint32_t offset, unsigned width, uint32_t value);
	/* Any length inside the config space, as a series of reads. */
	int (*config_read_block)(struct host_device *hd, uint32_t offset, void *buf, size_t len);

	/* Selector 10. */
	int (*bar_info)(struct host_device *hd, unsigned bar, struct hd_bar_info *out);
	/*
	 * Map a BAR into this process (IOConnectMapMemory64).  Returns
	 * -EOPNOTSUPP when the BAR must be reached through mmio_read/write
	 * instead (the simulator traps every access, for instance).
	 */
	int (*bar_map)(struct host_device *hd, unsigned bar, volatile void **out);
	/* Selectors 11/12; width is 1, 2, 4 or 8. */
	int (*mmio_read)(struct host_device *hd, unsigned bar, uint64_t offset, unsigned width, uint64_t *value);
	int (*mmio_write)(struct host_device *hd, unsigned bar, uint64_t offset, unsigned width, uint64_t value);

	/*
	 * Selector 5: make [host_addr, host_addr + size) of this process
	 * reachable by the device.  The platform picks the bus address.  The
	 * key is the caller's handle; a live key cannot be registered twice
	 * (-EEXIST).  The whole range comes back as one contiguous bus range
	 * or the call fails.
	 */
	int (*dma_register)(struct host_device *hd, uint64_t key, void *host_addr, uint64_t size,
			    uint64_t *bus_addr, uint64_t *bus_len);
	/* Selector 6; -ENOENT for an unknown key. */
	int (*dma_unregister)(struct host_device *hd, uint64_t key);

	/* Selector 13: returns the vector count (MSI-X table size, else MSI). */
	int (*irq_setup)(struct host_device *hd, unsigned *nvectors);
	/* Selector 16: only enabled vectors become pending. */
	int (*irq_set_mask)(struct host_device *hd, const uint64_t mask[HD_IRQ_WORDS]);
	/* Selector 14: read and clear the pending set atomically. */
	int (*irq_read_pending)(struct host_device *hd, uint64_t pending[HD_IRQ_WORDS]);
	/*
	 * Selector 15 as a file descriptor: readable while a vector may be
	 * pending.  The caller polls it, drains it (read() until EAGAIN is
	 * harmless) and then calls irq_read_pending.  Owned by the backend.
	 */
	int (*irq_wakeup_fd)(struct host_device *hd);

	/* Selector 17: function-level reset (hot reset as fallback). */
	int (*reset)(struct host_device *hd);

	/* Optional (may be NULL): counters for diagnostics only. */
	int (*dma_stats)(struct host_device *hd, struct hd_dma_stats *out);

	/* Release everything and free hd. */
	void (*destroy)(struct host_device *hd);
};

struct host_device {
	const struct host_device_ops *ops;
	struct hd_dma_limits limits;
	/*
	 * True when the device sees guest-physical addresses directly (the
	 * simulator's DART-off "identity" mode): the front end must then
	 * register all guest RAM with key = bus address = guest-physical
	 * address, as Linux VFIO would.
	 */
	bool identity_dma;
	char error[HD_ERROR_LEN];
	/* Surprise removal (see the top of this file): set by hd_mark_gone() only. */
	bool gone;
	char removal[HD_ERROR_LEN];
};

/* Record a message for the caller and return err (a negative errno). */
int hd_fail(struct host_device *hd, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
const char *host_device_error(const struct host_device *hd);

/*
 * The function is gone (surprise removal): records the reason (the first
 * one wins), and the verb's error too.  Backends call it; returns -ENODEV.
 */
int hd_mark_gone(struct host_device *hd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* False once the backend has marked the function gone. */
bool host_device_present(const struct host_device *hd);
/* Why the function is gone, or NULL while it is present. */
const char *host_device_removal(const struct host_device *hd);
/* Backends only: the device is present again (the simulator's replug). */
void hd_mark_present(struct host_device *hd);

#endif
