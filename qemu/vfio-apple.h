/*
 * vfio-apple in-process devices: vfio-apple-pci (a host PCI function passed
 * through) and apple-dma-pci (its DMA-mapping companion), over the
 * vfio-apple core linked as a static library.
 *
 * Only QEMU's generic PCI, memory, MSI/MSI-X and main-loop APIs are used,
 * never hw/vfio, so that these files build wherever QEMU does (macOS too).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VFIO_APPLE_H
#define HW_VFIO_APPLE_H

#include "hw/pci/pci_device.h"
#include "system/memory.h"
#include "qom/object.h"
#include "qapi/qapi-types-common.h"

#define TYPE_VFIO_APPLE_PCI "vfio-apple-pci"
#define TYPE_APPLE_DMA_PCI "apple-dma-pci"

OBJECT_DECLARE_SIMPLE_TYPE(VFIOApplePCIState, VFIO_APPLE_PCI)
OBJECT_DECLARE_SIMPLE_TYPE(AppleDMAPCIState, APPLE_DMA_PCI)

/* The core's objects (vfio-apple's hostdev/, passthrough/, ...). */
struct host_device;
struct passthrough;
struct companion;
struct guest_mem;

#define VFIO_APPLE_NUM_BARS 6
#define VFIO_APPLE_BAR_PIECES 3 /* direct-mapped pieces around MSI-X */

/* A trapped BAR write not yet given to the host (posted, as on PCIe). */
typedef struct VFIOApplePostedWrite {
    uint64_t addr;
    uint64_t val;
    uint8_t bar;
    uint8_t size;
} VFIOApplePostedWrite;

#define VFIO_APPLE_POSTED_MAX 256

typedef struct VFIOAppleBar {
    VFIOApplePCIState *dev;
    unsigned nr;
    MemoryRegion mr;                               /* trapped: into the core */
    MemoryRegion direct[VFIO_APPLE_BAR_PIECES];    /* the backend's mapping */
    unsigned ndirect;
} VFIOAppleBar;

struct VFIOApplePCIState {
    PCIDevice parent_obj;

    /* Properties. */
    char *host;              /* device string, as `vfio-apple serve -d` */
    bool companion_auto;     /* create an apple-dma-pci next to it */
    int32_t companion_devfn; /* where (-1: the first free slot) */
    uint32_t companion_max_entries;
    OnOffAuto direct_bars;   /* auto: off under HVF (see vap_direct_bars) */
    bool posted_writes;      /* trapped BAR writes complete in the main loop */

    struct host_device *hd;
    bool claimed;
    struct passthrough *pt;
    struct guest_mem *gm;       /* guest RAM, fed by the listener */
    MemoryListener listener;
    bool listening;
    unsigned identity_regions;  /* identity mode: RAM sections registered */

    VFIOAppleBar bars[VFIO_APPLE_NUM_BARS];
    char *bar_layout;          /* "BAR0 16K trapped, BAR4 16K 8K-direct" */
    uint8_t emulated[PCIE_CONFIG_SPACE_SIZE]; /* 0xff: byte served by QEMU */
    uint8_t msix_pos, msi_pos;
    uint8_t msix_table_bir, msix_pba_bir;
    int irq_fd;

    /* Posted trapped-BAR writes, in order; any read or config access first
     * drains them, as a PCIe read may not pass earlier posted writes. */
    VFIOApplePostedWrite posted[VFIO_APPLE_POSTED_MAX];
    unsigned nposted;
    QEMUBH *posted_bh;
    uint64_t posted_count;

    Error *migration_blocker;
    AppleDMAPCIState *companion;
    bool companion_created; /* we created it, so we remove it */

    /* Surprise removal (vfio-apple's hostdev/host_device.h). */
    bool removed;            /* the host function is gone: all ones, no DMA */
    bool unplug_requested;   /* qdev_unplug() asked (once per removal) */
    QEMUBH *unplug_bh;       /* asks for the unplug outside the access */
};

struct AppleDMAPCIState {
    PCIDevice parent_obj;

    /* Properties (the reference implementation's names). */
    uint32_t managed_bdf;   /* (bus << 8) | devfn; UINT32_MAX: not given */
    uint32_t max_entries;
    uint32_t host_bus, host_device, host_function; /* UINT32_MAX: not given */

    MemoryRegion bar;
    struct companion *core;     /* NULL while no managed function is bound */
    VFIOApplePCIState *managed;
    Notifier init_done;
};

/*
 * Bind a companion to its managed function: from then on its MAPs register
 * memory with that function's host device.  Fails when either side is
 * already bound.
 */
bool apple_dma_pci_bind(AppleDMAPCIState *s, VFIOApplePCIState *managed,
                        Error **errp);
/* Drop every mapping and forget the managed function. */
void apple_dma_pci_unbind(AppleDMAPCIState *s);
/* Guest RAM [gpa, gpa + len) is about to go: drop mappings inside it. */
void apple_dma_pci_ram_removed(AppleDMAPCIState *s, uint64_t gpa,
                               uint64_t len);
/*
 * The managed function's host device is gone: release every mapping now
 * (ids stay known for the guest's UNMAPs), refuse MAPs, read all ones;
 * host_back: it is present again (the simulator's x-sim-present=on).
 */
void apple_dma_pci_host_gone(AppleDMAPCIState *s);
void apple_dma_pci_host_back(AppleDMAPCIState *s);
/*
 * Whether companion s may serve m by its x-apple-host-* address (true when
 * the companion was given none).
 */
bool apple_dma_pci_host_matches(AppleDMAPCIState *s, VFIOApplePCIState *m);

#endif
