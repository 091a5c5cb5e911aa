/* SPDX-License-Identifier: MIT */
/*
 * The passthrough function: what the VMM sees of the host PCI function.
 * Free of any VMM or OS type; the front end (vfio-user) binds it to a
 * socket.  Three jobs:
 *
 *  - the config-space policy (see docs/passthrough.md):
 *      STATUS                 writes dropped (the host owns error bits)
 *      BAR0..BAR5, ROM BAR    emulated here: reads give address bits the
 *                             guest wrote, masked by the BAR size, plus the
 *                             host's type bits; nothing reaches the host
 *      COMMAND                forwarded byte by byte
 *      MSI / MSI-X capability writes dropped: the VMM emulates MSI/MSI-X
 *                             and asks for vectors with SET_IRQS; on macOS
 *                             the dext programs the vectors itself
 *      PCIe DEVCTL, DEVCTL2   writes dropped (payload sizes and completion
 *                             timeouts belong to the host fabric); a write
 *                             setting Initiate-FLR, when the host offers
 *                             FLR, becomes the host's reset verb instead
 *      Resizable BAR control  writes dropped (BAR sizes are fixed by the host)
 *      everything else        forwarded, in naturally aligned 1/2/4-byte writes
 *    When the host serves MSI-X, the MSI capability is hidden from the
 *    capability list (the dext sets up one of the two, MSI-X first), and the
 *    MSI-X table size (or MSI's Multiple Message Capable) is clamped to the
 *    host's vector count.
 *
 *  - BAR accesses, bounds-checked against the BAR size and split into
 *    naturally aligned 1/2/4/8-byte host accesses (through the BAR mapping
 *    when the backend offers one, else mmio_read/mmio_write);
 *
 *  - the interrupt router: host pending bits -> the VMM's per-vector
 *    notifiers (eventfds in vfio-user), for vectors the VMM enabled; the
 *    host enable mask follows which vectors have a notifier.
 */
#ifndef VFA_PASSTHROUGH_H
#define VFA_PASSTHROUGH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "host_device.h"

/* Interrupt indexes, numbered as in Linux VFIO (VFIO_PCI_*_IRQ_INDEX). */
enum pt_irq_index {
	PT_IRQ_INTX = 0,
	PT_IRQ_MSI = 1,
	PT_IRQ_MSIX = 2,
	PT_IRQ_ERR = 3,
	PT_IRQ_REQ = 4,
	PT_IRQ_NUM_INDEXES,
};

/* What the VMM has set up for one vector. */
enum pt_vector_state {
	PT_VECTOR_OFF = 0, /* no notifier: the interrupt is dropped */
	PT_VECTOR_MASKED,  /* notifier present but masked: latched until unmasked */
	PT_VECTOR_READY,   /* notifier present and unmasked: delivered at once */
};

/* The VMM side of the interrupt router (the vfio-user server's eventfds). */
struct pt_irq_sink {
	enum pt_vector_state (*vector_state)(void *opaque, unsigned index, unsigned vector);
	/* Signal the vector's notifier; 0 or a negative errno. */
	int (*trigger)(void *opaque, unsigned index, unsigned vector);
	void *opaque;
};

struct passthrough_stats {
	uint64_t irq_delivered;   /* notifiers signalled */
	uint64_t irq_latched;     /* arrived while masked (delivered later) */
	uint64_t irq_dropped;     /* arrived with no notifier */
	uint32_t vectors_enabled; /* vectors enabled in the host mask now */
	uint32_t host_vectors;    /* vectors the host set up */
	uint64_t config_writes_forwarded; /* host config_write calls */
	uint64_t config_bytes_dropped;    /* guest bytes the policy kept away */
	uint64_t bar_reads;
	uint64_t bar_writes;
	uint64_t msix_writes_dropped; /* BAR writes into the host's MSI-X table or PBA (dropped) */
	uint64_t msix_reads_zeroed;   /* BAR reads of them (answered 0) */
	uint64_t resets;
	uint64_t removed_reads;  /* config/BAR reads answered all ones: the host function is gone */
	uint64_t removed_writes; /* config/BAR writes dropped: the host function is gone */
};

#define PT_ROM_INDEX 6 /* passthrough_bar_size(pt, PT_ROM_INDEX): always 0 */

struct passthrough;

/*
 * Build the function model over a claimed host device: reads BAR info, walks
 * the capability lists, sets up the host's interrupts (all masked).  On
 * failure returns NULL with a reason in err.
 */
struct passthrough *passthrough_create(struct host_device *hd, char *err, size_t errlen);

struct passthrough_opts {
	/*
	 * Offer the guest the function's MSI capability and hide its MSI-X
	 * (only when it has both).  For VMMs that cannot unplug a function
	 * with MSI-X: QEMU 10.1 to 11.1's vfio-user-pci aborts then
	 * (docs/vfio-user.md, "Hot-unplug").
	 */
	bool prefer_msi;
};
struct passthrough *passthrough_create_opts(struct host_device *hd, const struct passthrough_opts *opts, char *err,
					    size_t errlen);
/* Masks every host vector; does not release or destroy hd. */
void passthrough_destroy(struct passthrough *pt);

/* Config space: 4096 bytes for a PCI Express function, else 256. */
uint32_t passthrough_config_size(const struct passthrough *pt);
int passthrough_config_read(struct passthrough *pt, uint32_t offset, void *buf, uint32_t len);
int passthrough_config_write(struct passthrough *pt, uint32_t offset, const void *buf, uint32_t len);

/* BARs 0..5 (a 64-bit BAR's upper half has size 0); PT_ROM_INDEX is 0. */
uint64_t passthrough_bar_size(const struct passthrough *pt, unsigned bar);
int passthrough_bar_read(struct passthrough *pt, unsigned bar, uint64_t offset, void *buf, uint64_t len);
/*
 * The backend's mapping of a BAR in this process, or NULL when the BAR is
 * trapped (reached through mmio_read/mmio_write).  An in-process front end
 * maps it straight into the guest, except the MSI-X table and PBA pages.
 */
volatile void *passthrough_bar_mapping(const struct passthrough *pt, unsigned bar);
int passthrough_bar_write(struct passthrough *pt, unsigned bar, uint64_t offset, const void *buf, uint64_t len);

/* Vectors offered per index: MSI-X or MSI (as the host set up), never INTx/ERR/REQ. */
unsigned passthrough_irq_count(const struct passthrough *pt, unsigned index);

/*
 * Attach the VMM (NULL detaches: every host vector masked, latches dropped).
 * The sink is copied.
 */
int passthrough_set_irq_sink(struct passthrough *pt, const struct pt_irq_sink *sink);
/*
 * The VMM changed its notifiers or masks: recompute the host enable mask and
 * deliver latched interrupts whose vector is now unmasked.
 */
int passthrough_irqs_changed(struct passthrough *pt);
/* The host's wake-up fd: poll it and call passthrough_handle_irq when readable. */
int passthrough_irq_wakeup_fd(const struct passthrough *pt);
/* Drain the wake-up, read-and-clear the host pending set and route it. */
int passthrough_handle_irq(struct passthrough *pt);

/* Device reset: host reset, then COMMAND and the host enable mask re-applied. */
int passthrough_reset(struct passthrough *pt);

/*
 * The VMM went away: detach the sink, forget the emulated BAR registers and
 * reset the function (which stops its DMA before the caller releases the
 * client's memory), leaving COMMAND as the claim set it.
 */
int passthrough_client_gone(struct passthrough *pt);

/*
 * Surprise removal (hostdev/host_device.h): once the host function is gone
 * the model answers as a missing PCIe function does.  Config and BAR reads
 * return all ones and writes are dropped, both still bounds-checked and
 * successful (0), never reaching the host (a BAR mapping is no longer
 * touched); no interrupt is delivered (passthrough_handle_irq drains the
 * wake-up and returns -ENODEV); reset, client_gone and the interrupt mask
 * are no-ops.  A front end checks passthrough_present() after any -ENODEV
 * and after passthrough_handle_irq.
 */
bool passthrough_present(const struct passthrough *pt);

void passthrough_stats(const struct passthrough *pt, struct passthrough_stats *out);
const struct hd_identity *passthrough_identity(const struct passthrough *pt);

#endif
