/*
 * vfio-apple-pci: a host PCI function passed through to the guest, in
 * process.  On macOS the function is owned by the VFIOUserPCIDriver dext,
 * whose DMA reaches only memory of its own client process: QEMU itself,
 * which is why this device lives in QEMU.  On Linux the same code drives
 * vfio-apple's simulated NVMe behind a simulated DART.
 *
 * The device model is vfio-apple's core (passthrough/): config-space
 * policy, BAR accesses, the interrupt router.  This file binds it to QEMU:
 *
 *  - config space: QEMU emulates the BARs, COMMAND, the interrupt pin and
 *    the MSI-X (or MSI) capability body; every other byte is the core's
 *    view of the host, and every write also goes through the core policy;
 *  - BARs: a trapped MemoryRegion into the core, with the backend's own
 *    mapping of the BAR laid over it as RAM-device pieces where it has one,
 *    except the pages of the MSI-X table and PBA, which QEMU emulates;
 *  - interrupts: the host's wake-up fd is watched by the main loop; the
 *    core reads and clears the pending set and calls back for each vector,
 *    delivered with msix_notify() / msi_notify();
 *  - guest RAM: a memory listener feeds the core's guest-memory map (RAM
 *    only: never ROM or device memory), which the companion translates
 *    guest addresses with, so DMA registrations use QEMU's own RAM;
 *  - an apple-dma-pci companion is created on the same bus, as the
 *    reference implementation does, unless one was given for us;
 *  - surprise removal: once the host function is gone (the backend marks
 *    it, vfio-apple's hostdev/host_device.h), the device reads all ones,
 *    drops writes, delivers no interrupt, releases its DART mappings and
 *    the companion's, and asks QEMU to unplug it (qdev_unplug from a
 *    bottom half: a hot-unplug on a hot-pluggable PCIe port; elsewhere one
 *    warning, and it stays all ones).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/visitor.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/module.h"
#include "qemu/range.h"
#include "qemu/cutils.h"
#include "hw/pci/msi.h"
#include "hw/pci/msix.h"
#include "hw/pci/pci.h"
#include "hw/qdev-properties.h"
#include "hw/qdev-properties-system.h"
#include "migration/blocker.h"
#include "migration/vmstate.h"
#include "system/address-spaces.h"
#include "system/hvf.h"
#include "vfio-apple.h"

#include "backends.h"
#include "guest_mem.h"
#include "host_device.h"
#include "passthrough.h"
#include "sim_nvme.h"

#define MSIX_TABLE_BIR_MASK 0x7
#define MSI_FLAGS_OFF 2

static uint32_t mask_of(unsigned len)
{
    return len >= 4 ? UINT32_MAX : (1u << (8 * len)) - 1;
}

/* Config accesses are 1, 2 or 4 bytes wide. */
static uint32_t cfg_ld(const uint8_t *p, int len)
{
    return len == 1 ? ldub_p(p) : len == 2 ? lduw_le_p(p) : ldl_le_p(p);
}

static void cfg_st(uint8_t *p, int len, uint32_t v)
{
    if (len == 1) {
        stb_p(p, v);
    } else if (len == 2) {
        stw_le_p(p, v);
    } else {
        stl_le_p(p, v);
    }
}

/* ---- config space ---------------------------------------------------- */

static void vap_drain_posted(VFIOApplePCIState *s);
static void vap_removed(VFIOApplePCIState *s);

/* Any access may be the one that finds the host function gone. */
static inline void vap_check_present(VFIOApplePCIState *s)
{
    if (!s->removed && s->hd && !host_device_present(s->hd)) {
        vap_removed(s);
    }
}

static uint32_t vap_config_read(PCIDevice *pdev, uint32_t addr, int len)
{
    VFIOApplePCIState *s = VFIO_APPLE_PCI(pdev);
    uint32_t emu = cfg_ld(s->emulated + addr, len);
    uint32_t value = 0;

    vap_drain_posted(s);
    if (emu) {
        value = pci_default_read_config(pdev, addr, len) & emu;
    }
    if (emu != mask_of(len)) {
        uint8_t buf[4] = { 0 };

        if (passthrough_config_read(s->pt, addr, buf, len) < 0) {
            /* As a function that does not answer: all ones. */
            memset(buf, 0xff, sizeof(buf));
        }
        value |= cfg_ld(buf, len) & ~emu & mask_of(len);
    }
    vap_check_present(s);
    if (s->removed) {
        return mask_of(len); /* a missing function: QEMU's bytes too */
    }
    return value;
}

static bool vap_touches(uint32_t addr, int len, uint8_t pos, unsigned size)
{
    return pos && ranges_overlap(addr, len, pos, size);
}

static void vap_config_write(PCIDevice *pdev, uint32_t addr, uint32_t val,
                             int len)
{
    VFIOApplePCIState *s = VFIO_APPLE_PCI(pdev);
    uint8_t buf[4];
    int rc;

    vap_drain_posted(s);
    /* QEMU's side: BAR placement, COMMAND, MSI/MSI-X enable and masks. */
    pci_default_write_config(pdev, addr, val, len);
    /* The host's side, through the policy (docs/passthrough.md). */
    cfg_st(buf, len, val);
    rc = passthrough_config_write(s->pt, addr, buf, len);
    if (rc < 0) {
        warn_report_once("vfio-apple-pci %s: config write at 0x%x failed: %s",
                         s->host, addr, strerror(-rc));
    }
    if (vap_touches(addr, len, s->msix_pos, MSIX_CAP_LENGTH) ||
        vap_touches(addr, len, s->msi_pos, 24)) {
        passthrough_irqs_changed(s->pt);
    }
    vap_check_present(s);
}

static void vap_emulate(VFIOApplePCIState *s, uint32_t off, uint32_t len)
{
    memset(s->emulated + off, 0xff, len);
}

/* ---- BARs ------------------------------------------------------------ */

static uint64_t vap_bar_read(void *opaque, hwaddr addr, unsigned size)
{
    VFIOAppleBar *bar = opaque;
    uint8_t buf[8] = { 0 };

    vap_drain_posted(bar->dev); /* a read does not pass posted writes */
    if (passthrough_bar_read(bar->dev->pt, bar->nr, addr, buf, size) < 0) {
        return UINT64_MAX; /* what a read of a missing device returns */
    }
    vap_check_present(bar->dev); /* all ones from the core once gone */
    return ldn_le_p(buf, size);
}

static void vap_host_bar_write(VFIOApplePCIState *s, unsigned nr,
                               hwaddr addr, uint64_t val, unsigned size)
{
    uint8_t buf[8];
    int rc;

    stn_le_p(buf, size, val);
    rc = passthrough_bar_write(s->pt, nr, addr, buf, size);
    if (rc < 0) {
        warn_report_once("vfio-apple-pci %s: BAR%u write at 0x%" HWADDR_PRIx
                         " failed: %s", s->host, nr, addr, strerror(-rc));
    }
    vap_check_present(s);
}

/* Give the host every posted write, oldest first. */
static void vap_drain_posted(VFIOApplePCIState *s)
{
    for (unsigned i = 0; i < s->nposted; i++) {
        VFIOApplePostedWrite *w = &s->posted[i];

        vap_host_bar_write(s, w->bar, w->addr, w->val, w->size);
    }
    s->nposted = 0;
}

static void vap_posted_bh(void *opaque)
{
    vap_drain_posted(opaque);
}

/*
 * With posted-writes=on a trapped BAR write is posted, as PCIe posts memory
 * writes: the vCPU goes on while the main loop hands it to the host, so a
 * simulated device works beside the guest instead of inside its doorbell
 * write.  Off by default: measured, it costs more at QD1 (a thread hop per
 * doorbell) than it gains at QD32 (docs/qemu.md).
 */
static void vap_bar_write(void *opaque, hwaddr addr, uint64_t val,
                          unsigned size)
{
    VFIOAppleBar *bar = opaque;
    VFIOApplePCIState *s = bar->dev;

    if (!s->posted_writes || !s->posted_bh) {
        vap_host_bar_write(s, bar->nr, addr, val, size);
        return;
    }
    if (s->nposted == VFIO_APPLE_POSTED_MAX) {
        vap_drain_posted(s);
    }
    s->posted[s->nposted++] = (VFIOApplePostedWrite) {
        .addr = addr, .val = val, .bar = bar->nr, .size = size,
    };
    s->posted_count++;
    qemu_bh_schedule(s->posted_bh);
}

static const MemoryRegionOps vap_bar_ops = {
    .read = vap_bar_read,
    .write = vap_bar_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = {
        .min_access_size = 1,
        .max_access_size = 8,
    },
    .impl = {
        .min_access_size = 1,
        .max_access_size = 8,
    },
};

typedef struct VAPHole {
    uint64_t start, end; /* page-aligned [start, end) kept trapped */
} VAPHole;

/*
 * Lay the backend's mapping of BAR nr over its trapped region, in pieces
 * that leave out the pages of the MSI-X table and PBA: those are QEMU's.
 */
static void vap_map_bar_direct(VFIOApplePCIState *s, unsigned nr,
                               uint64_t size, VAPHole *holes, unsigned nholes)
{
    VFIOAppleBar *bar = &s->bars[nr];
    uint8_t *base = (uint8_t *)passthrough_bar_mapping(s->pt, nr);
    uint64_t pos = 0;

    if (!base) {
        return;
    }
    /* Sort the (at most two) holes. */
    if (nholes == 2 && holes[1].start < holes[0].start) {
        VAPHole t = holes[0];

        holes[0] = holes[1];
        holes[1] = t;
    }
    for (unsigned i = 0; i <= nholes && bar->ndirect < VFIO_APPLE_BAR_PIECES;
         i++) {
        uint64_t end = i < nholes ? MIN(holes[i].start, size) : size;

        if (end > pos) {
            MemoryRegion *mr = &bar->direct[bar->ndirect++];
            g_autofree char *name = g_strdup_printf("vfio-apple BAR%u mmap "
                                                    "@0x%" PRIx64, nr, pos);

            memory_region_init_ram_device_ptr(mr, OBJECT(s), name, end - pos,
                                              base + pos);
            memory_region_add_subregion(&bar->mr, pos, mr);
        }
        if (i < nholes) {
            pos = MAX(pos, MIN(holes[i].end, size));
        }
    }
}

/* "BAR0 16K trapped, BAR4 16K (8K direct)": for the log and QMP. */
static void vap_note_bar(VFIOApplePCIState *s, unsigned nr, uint64_t size)
{
    VFIOAppleBar *bar = &s->bars[nr];
    uint64_t direct = 0;
    g_autofree char *sz = size_to_str(size);
    g_autofree char *old = s->bar_layout;
    g_autofree char *mode = NULL;

    for (unsigned i = 0; i < bar->ndirect; i++) {
        direct += memory_region_size(&bar->direct[i]);
    }
    if (direct) {
        g_autofree char *dsz = size_to_str(direct);

        mode = g_strdup_printf("(%s mapped directly, the rest trapped)", dsz);
    } else {
        mode = g_strdup("trapped");
    }
    s->bar_layout = g_strdup_printf("%s%sBAR%u %s %s", old ? old : "",
                                    old ? ", " : "", nr, sz, mode);
}

/*
 * Map BARs straight into the guest?  Not under HVF by default: QEMU's HVF
 * maps every RAM-backed region executable (accel/hvf/hvf-all.c), and
 * device memory mapped executable into a guest can panic a Mac.  Trapped
 * accesses are slower but safe; direct-bars=on overrides.
 */
static bool vap_direct_bars(VFIOApplePCIState *s)
{
    switch (s->direct_bars) {
    case ON_OFF_AUTO_ON:
        return true;
    case ON_OFF_AUTO_OFF:
        return false;
    default:
        return !hvf_enabled();
    }
}

static bool vap_setup_bars(VFIOApplePCIState *s, Error **errp)
{
    PCIDevice *pdev = PCI_DEVICE(s);
    uint64_t page = qemu_real_host_page_size();
    uint8_t table_bir = UINT8_MAX, pba_bir = UINT8_MAX;
    uint32_t table_off = 0, pba_off = 0, nentries = 0;

    if (s->msix_pos) {
        uint8_t cap[MSIX_CAP_LENGTH];

        passthrough_config_read(s->pt, s->msix_pos, cap, sizeof(cap));
        nentries = (lduw_le_p(cap + PCI_MSIX_FLAGS) & PCI_MSIX_FLAGS_QSIZE) +
                   1;
        table_off = ldl_le_p(cap + PCI_MSIX_TABLE);
        pba_off = ldl_le_p(cap + PCI_MSIX_PBA);
        table_bir = table_off & MSIX_TABLE_BIR_MASK;
        pba_bir = pba_off & MSIX_TABLE_BIR_MASK;
        table_off &= ~MSIX_TABLE_BIR_MASK;
        pba_off &= ~MSIX_TABLE_BIR_MASK;
    }

    for (unsigned nr = 0; nr < VFIO_APPLE_NUM_BARS; nr++) {
        VFIOAppleBar *bar = &s->bars[nr];
        uint64_t size = passthrough_bar_size(s->pt, nr);
        struct hd_bar_info info;
        g_autofree char *name = NULL;
        uint8_t type;
        VAPHole holes[2];
        unsigned nholes = 0;
        int rc;

        if (!size) {
            continue;
        }
        rc = s->hd->ops->bar_info(s->hd, nr, &info);
        if (rc < 0) {
            error_setg(errp, "BAR%u: %s", nr, host_device_error(s->hd));
            return false;
        }
        bar->dev = s;
        bar->nr = nr;
        name = g_strdup_printf("vfio-apple BAR%u", nr);
        memory_region_init_io(&bar->mr, OBJECT(s), &vap_bar_ops, bar, name,
                              size);
        if (info.type == HD_BAR_IO) {
            type = PCI_BASE_ADDRESS_SPACE_IO;
        } else {
            type = PCI_BASE_ADDRESS_SPACE_MEMORY;
            if (info.type == HD_BAR_MEM64) {
                type |= PCI_BASE_ADDRESS_MEM_TYPE_64;
            }
            if (info.prefetchable) {
                type |= PCI_BASE_ADDRESS_MEM_PREFETCH;
            }
            if (nr == table_bir) {
                holes[nholes++] = (VAPHole) {
                    ROUND_DOWN(table_off, page),
                    ROUND_UP((uint64_t)table_off + nentries * PCI_MSIX_ENTRY_SIZE,
                             page) };
            }
            if (nr == pba_bir) {
                holes[nholes++] = (VAPHole) {
                    ROUND_DOWN(pba_off, page),
                    ROUND_UP((uint64_t)pba_off + DIV_ROUND_UP(nentries, 64) * 8,
                             page) };
            }
            if (vap_direct_bars(s)) {
                vap_map_bar_direct(s, nr, size, holes, nholes);
            }
        }
        pci_register_bar(pdev, nr, type, &bar->mr);
        vap_note_bar(s, nr, size);
    }

    if (s->msix_pos) {
        int rc;

        if (table_bir >= VFIO_APPLE_NUM_BARS || pba_bir >= VFIO_APPLE_NUM_BARS ||
            !passthrough_bar_size(s->pt, table_bir) ||
            !passthrough_bar_size(s->pt, pba_bir)) {
            error_setg(errp, "the host's MSI-X table (BAR%u) or PBA (BAR%u) "
                       "is not in an implemented BAR", table_bir, pba_bir);
            return false;
        }
        s->msix_table_bir = table_bir;
        s->msix_pba_bir = pba_bir;
        rc = msix_init(pdev, nentries, &s->bars[table_bir].mr, table_bir,
                       table_off, &s->bars[pba_bir].mr, pba_bir, pba_off,
                       s->msix_pos, errp);
        if (rc < 0) {
            return false;
        }
        /* msix_notify() drops vectors not marked used: all of them are. */
        for (uint32_t v = 0; v < nentries; v++) {
            msix_vector_use(pdev, v);
        }
        /* The body of the capability is QEMU's; its ID and next are the host's. */
        vap_emulate(s, s->msix_pos + PCI_MSIX_FLAGS,
                    MSIX_CAP_LENGTH - PCI_MSIX_FLAGS);
    }
    return true;
}

/* ---- capabilities and interrupts ---------------------------------- */

/* The MSI-X and MSI capabilities in the core's view of the host. */
static void vap_find_irq_caps(VFIOApplePCIState *s)
{
    uint8_t pos = 0, next, id;
    unsigned guard = 0;

    if (passthrough_config_read(s->pt, PCI_CAPABILITY_LIST, &next, 1) < 0) {
        return;
    }
    while (next >= PCI_STD_HEADER_SIZEOF && guard++ < 48) {
        pos = next & ~3;
        if (passthrough_config_read(s->pt, pos, &id, 1) < 0 ||
            passthrough_config_read(s->pt, pos + 1, &next, 1) < 0) {
            return;
        }
        if (id == PCI_CAP_ID_MSIX && !s->msix_pos) {
            s->msix_pos = pos;
        } else if (id == PCI_CAP_ID_MSI && !s->msi_pos) {
            s->msi_pos = pos;
        }
    }
}

static bool vap_setup_msi(VFIOApplePCIState *s, Error **errp)
{
    PCIDevice *pdev = PCI_DEVICE(s);
    unsigned n = passthrough_irq_count(s->pt, PT_IRQ_MSI);
    uint16_t flags;
    int rc;

    if (!s->msi_pos || !n) {
        s->msi_pos = 0;
        return true;
    }
    passthrough_config_read(s->pt, s->msi_pos + MSI_FLAGS_OFF, &flags, 2);
    flags = le16_to_cpu(flags);
    rc = msi_init(pdev, s->msi_pos, n, flags & PCI_MSI_FLAGS_64BIT,
                  flags & PCI_MSI_FLAGS_MASKBIT, errp);
    if (rc < 0) {
        return false;
    }
    vap_emulate(s, s->msi_pos + MSI_FLAGS_OFF,
                (flags & PCI_MSI_FLAGS_64BIT ? 14 : 10) - MSI_FLAGS_OFF +
                (flags & PCI_MSI_FLAGS_MASKBIT ? 10 : 0));
    return true;
}

static unsigned vap_msi_enabled_vectors(PCIDevice *pdev)
{
    uint16_t flags = pci_get_word(pdev->config + pdev->msi_cap +
                                  PCI_MSI_FLAGS);

    return 1u << ((flags & PCI_MSI_FLAGS_QSIZE) >> 4);
}

static enum pt_vector_state vap_vector_state(void *opaque, unsigned index,
                                             unsigned vector)
{
    PCIDevice *pdev = opaque;

    /*
     * A vector the guest enabled is always "ready": QEMU's MSI/MSI-X
     * emulation keeps a masked one pending and sends it on unmask.
     */
    if (index == PT_IRQ_MSIX && msix_enabled(pdev) &&
        vector < pdev->msix_entries_nr) {
        return PT_VECTOR_READY;
    }
    if (index == PT_IRQ_MSI && msi_enabled(pdev) &&
        vector < vap_msi_enabled_vectors(pdev)) {
        return PT_VECTOR_READY;
    }
    return PT_VECTOR_OFF;
}

static int vap_trigger(void *opaque, unsigned index, unsigned vector)
{
    PCIDevice *pdev = opaque;

    if (vap_vector_state(opaque, index, vector) != PT_VECTOR_READY) {
        return -EINVAL;
    }
    if (index == PT_IRQ_MSIX) {
        msix_notify(pdev, vector);
    } else {
        msi_notify(pdev, vector);
    }
    return 0;
}

/* The host's wake-up fd is readable: route what is pending. */
static void vap_irq_ready(void *opaque)
{
    VFIOApplePCIState *s = opaque;
    int rc = passthrough_handle_irq(s->pt);

    vap_check_present(s); /* the backend's removal notice comes this way */
    if (rc < 0 && !s->removed) {
        warn_report_once("vfio-apple-pci %s: reading pending interrupts "
                         "failed: %s", s->host, strerror(-rc));
    }
}

/* ---- guest RAM ------------------------------------------------------- */

/* Guest RAM only: never ROM, ROM devices or device memory (BARs). */
static bool vap_section_is_ram(MemoryRegionSection *section)
{
    MemoryRegion *mr = section->mr;

    return memory_region_is_ram(mr) && !memory_region_is_ram_device(mr) &&
           !memory_region_is_rom(mr) && !memory_region_is_romd(mr) &&
           !memory_region_is_protected(mr);
}

static void vap_region_add(MemoryListener *listener,
                           MemoryRegionSection *section)
{
    VFIOApplePCIState *s = container_of(listener, VFIOApplePCIState,
                                        listener);
    uint64_t gpa = section->offset_within_address_space;
    uint64_t len = int128_get64(section->size);
    void *va;
    int rc;

    if (!vap_section_is_ram(section) || !len) {
        return;
    }
    va = (uint8_t *)memory_region_get_ram_ptr(section->mr) +
         section->offset_within_region;
    rc = guest_mem_add(s->gm, gpa, len, va, true);
    if (rc < 0) {
        error_report("vfio-apple-pci %s: guest RAM 0x%" PRIx64 "+0x%" PRIx64
                     " not recorded: %s", s->host, gpa, len, strerror(-rc));
        return;
    }
    /* DART off: the device sees guest-physical addresses, as under VFIO. */
    if (s->hd->identity_dma && !s->removed) {
        uint64_t bus, bus_len;

        rc = s->hd->ops->dma_register(s->hd, gpa, va, len, &bus, &bus_len);
        if (rc < 0) {
            error_report("vfio-apple-pci %s: identity DMA for guest RAM "
                         "0x%" PRIx64 "+0x%" PRIx64 ": %s", s->host, gpa, len,
                         host_device_error(s->hd));
        } else {
            s->identity_regions++;
        }
    }
}

static void vap_forget_ram(VFIOApplePCIState *s, uint64_t gpa, uint64_t len)
{
    if (s->companion) {
        apple_dma_pci_ram_removed(s->companion, gpa, len);
    }
    if (s->hd->identity_dma && s->hd->ops->dma_unregister(s->hd, gpa) == 0) {
        s->identity_regions--;
    }
    guest_mem_remove(s->gm, gpa, len);
}

static void vap_region_del(MemoryListener *listener,
                           MemoryRegionSection *section)
{
    VFIOApplePCIState *s = container_of(listener, VFIOApplePCIState,
                                        listener);
    struct guest_mem_range r;
    uint64_t gpa = section->offset_within_address_space;

    if (!vap_section_is_ram(section) || guest_mem_find(s->gm, gpa, &r) < 0 ||
        r.gpa != gpa) {
        return;
    }
    vap_forget_ram(s, r.gpa, r.len);
}

typedef struct VAPRangeList {
    uint64_t gpa[64];
    uint64_t len[64];
    unsigned n;
} VAPRangeList;

static void vap_collect_range(uint64_t gpa, uint64_t len, void *va,
                              bool writable, void *opaque)
{
    VAPRangeList *l = opaque;

    if (l->n < ARRAY_SIZE(l->gpa)) {
        l->gpa[l->n] = gpa;
        l->len[l->n++] = len;
    }
}

static void vap_forget_all_ram(VFIOApplePCIState *s)
{
    size_t left = s->gm ? guest_mem_count(s->gm) : 0;

    /* In rounds of 64; a round that forgets nothing ends it. */
    while (left) {
        VAPRangeList l = { .n = 0 };

        guest_mem_for_each(s->gm, vap_collect_range, &l);
        for (unsigned i = 0; i < l.n; i++) {
            vap_forget_ram(s, l.gpa[i], l.len[i]);
        }
        if (guest_mem_count(s->gm) >= left) {
            break;
        }
        left = guest_mem_count(s->gm);
    }
}

/* ---- the companion --------------------------------------------------- */

typedef struct VAPFindCompanion {
    VFIOApplePCIState *s;
    AppleDMAPCIState *match;
} VAPFindCompanion;

/*
 * A companion given on the command line before us: for our address
 * (managed-bdf), or without one in our own slot; its x-apple-host-*
 * address, when given, must be ours.
 */
static void vap_find_companion(PCIBus *bus, PCIDevice *pdev, void *opaque)
{
    VAPFindCompanion *f = opaque;
    PCIDevice *me = PCI_DEVICE(f->s);
    AppleDMAPCIState *c;

    if (f->match || !object_dynamic_cast(OBJECT(pdev), TYPE_APPLE_DMA_PCI)) {
        return;
    }
    c = APPLE_DMA_PCI(pdev);
    if (c->core || !apple_dma_pci_host_matches(c, f->s)) {
        return;
    }
    if (c->managed_bdf == pci_get_bdf(me) ||
        (c->managed_bdf == UINT32_MAX && pci_get_bus(pdev) == pci_get_bus(me) &&
         PCI_SLOT(pdev->devfn) == PCI_SLOT(me->devfn))) {
        f->match = c;
    }
}

/* Every bus: behind a root port the companion is not on the root bus. */
static void vap_find_companion_on_bus(PCIBus *bus, void *opaque)
{
    pci_for_each_device_under_bus(bus, vap_find_companion, opaque);
}

static bool vap_attach_companion(VFIOApplePCIState *s, Error **errp)
{
    PCIDevice *pdev = PCI_DEVICE(s);
    VAPFindCompanion f = { .s = s };
    DeviceState *dev;

    pci_for_each_bus(pci_device_root_bus(pdev), vap_find_companion_on_bus,
                     &f);
    if (f.match) {
        return apple_dma_pci_bind(f.match, s, errp);
    }
    if (!s->companion_auto) {
        return true; /* one given later on the command line binds to us */
    }
    dev = qdev_new(TYPE_APPLE_DMA_PCI);
    if (!object_property_set_uint(OBJECT(dev), "managed-bdf",
                                  pci_get_bdf(pdev), errp) ||
        !object_property_set_uint(OBJECT(dev), "max-entries",
                                  s->companion_max_entries, errp) ||
        (s->companion_devfn >= 0 &&
         !object_property_set_int(OBJECT(dev), "addr", s->companion_devfn,
                                  errp))) {
        object_unref(OBJECT(dev));
        return false;
    }
    if (!qdev_realize_and_unref(dev, BUS(pci_get_bus(pdev)), errp)) {
        error_prepend(errp, "creating its apple-dma-pci companion: ");
        if (DEVICE(s)->hotplugged) {
            /* A slot's functions are exposed when its function 0 comes. */
            error_append_hint(errp, "To hot-plug onto a PCIe port: this "
                              "device with companion=off at function 1 "
                              "(addr=0.1) first, then apple-dma-pci at "
                              "addr=0.0 with multifunction=on.\n");
        }
        return false;
    }
    if (!s->companion) {
        error_setg(errp, "the apple-dma-pci companion did not bind");
        object_unparent(OBJECT(dev));
        return false;
    }
    s->companion_created = true;
    return true;
}

/* ---- surprise removal ------------------------------------------------ */

/* Direct BAR pieces on or off: off, every access goes through the core. */
static void vap_direct_enable(VFIOApplePCIState *s, bool on)
{
    memory_region_transaction_begin();
    for (unsigned nr = 0; nr < VFIO_APPLE_NUM_BARS; nr++) {
        for (unsigned i = 0; i < s->bars[nr].ndirect; i++) {
            memory_region_set_enabled(&s->bars[nr].direct[i], on);
        }
    }
    memory_region_transaction_commit();
}

static void vap_identity_unregister(uint64_t gpa, uint64_t len, void *va,
                                    bool writable, void *opaque)
{
    VFIOApplePCIState *s = opaque;

    if (s->hd->ops->dma_unregister(s->hd, gpa) == 0 && s->identity_regions) {
        s->identity_regions--;
    }
}

static void vap_identity_register(uint64_t gpa, uint64_t len, void *va,
                                  bool writable, void *opaque)
{
    VFIOApplePCIState *s = opaque;
    uint64_t bus, bus_len;

    if (va && s->hd->ops->dma_register(s->hd, gpa, va, len, &bus,
                                       &bus_len) == 0) {
        s->identity_regions++;
    }
}

/* Ask QEMU to unplug us, outside the access or callback that found it. */
static void vap_unplug_bh(void *opaque)
{
    VFIOApplePCIState *s = opaque;
    DeviceState *dev = DEVICE(s);
    Error *err = NULL;

    if (!s->removed || s->unplug_requested) {
        return;
    }
    s->unplug_requested = true;
    qdev_unplug(dev, &err);
    if (err) {
        warn_report("vfio-apple-pci %s: the host function is gone and QEMU "
                    "cannot unplug it (%s): it stays, reading all ones; put "
                    "it on a hot-pluggable PCIe root port to have the guest "
                    "see a hot-unplug", s->host, error_get_pretty(err));
        error_free(err);
        return;
    }
    info_report("vfio-apple-pci %s: unplug requested (the guest sees a "
                "hot-unplug)", s->host);
}

/*
 * The host function is gone: from now on it reads all ones (the core's
 * answers, and QEMU's own config bytes), writes go nowhere, interrupts
 * stop, every DART mapping is released; then QEMU is asked to unplug it.
 */
static void vap_removed(VFIOApplePCIState *s)
{
    if (s->removed || !s->hd || host_device_present(s->hd)) {
        return;
    }
    s->removed = true;
    warn_report("vfio-apple-pci %s: the host function is gone: %s; it reads "
                "all ones, its DMA mappings are released and new ones "
                "refused", s->host, host_device_removal(s->hd));
    s->nposted = 0; /* posted writes to a missing function go nowhere */
    if (s->irq_fd >= 0) {
        qemu_set_fd_handler(s->irq_fd, NULL, NULL, NULL);
    }
    vap_direct_enable(s, false);
    if (s->companion) {
        apple_dma_pci_host_gone(s->companion);
    }
    if (s->hd->identity_dma && s->gm) {
        guest_mem_for_each(s->gm, vap_identity_unregister, s);
    }
    if (s->unplug_bh) {
        qemu_bh_schedule(s->unplug_bh);
    }
}

/* x-sim-present=on: the simulated function is plugged back, fresh. */
static bool vap_replug(VFIOApplePCIState *s, Error **errp)
{
    PCIDevice *pdev = PCI_DEVICE(s);
    struct pt_irq_sink sink = {
        .vector_state = vap_vector_state,
        .trigger = vap_trigger,
        .opaque = pdev,
    };
    char err[HD_ERROR_LEN + 128] = "";
    struct passthrough *fresh;
    uint8_t cmd[2];

    if (sim_nvme_replug(s->hd, err, sizeof(err)) < 0 ||
        s->hd->ops->claim(s->hd) < 0) {
        error_setg(errp, "vfio-apple-pci %s: plugging back: %s", s->host,
                   err[0] ? err : host_device_error(s->hd));
        return false;
    }
    fresh = passthrough_create(s->hd, err, sizeof(err));
    if (!fresh) {
        sim_nvme_vanish(s->hd, "plugged back but could not be set up");
        error_setg(errp, "vfio-apple-pci %s: plugging back: %s", s->host, err);
        return false;
    }
    passthrough_destroy(s->pt);
    s->pt = fresh;
    s->removed = false;
    s->unplug_requested = false;
    stw_le_p(cmd, pci_get_word(pdev->config + PCI_COMMAND));
    passthrough_config_write(s->pt, PCI_COMMAND, cmd, sizeof(cmd));
    passthrough_set_irq_sink(s->pt, &sink);
    s->irq_fd = passthrough_irq_wakeup_fd(s->pt);
    if (s->irq_fd >= 0) {
        qemu_set_fd_handler(s->irq_fd, vap_irq_ready, NULL, s);
    }
    if (s->hd->identity_dma && s->gm) {
        s->identity_regions = 0;
        guest_mem_for_each(s->gm, vap_identity_register, s);
    }
    vap_direct_enable(s, true);
    if (s->companion) {
        apple_dma_pci_host_back(s->companion);
    }
    info_report("vfio-apple-pci %s: plugged back (a fresh device; the "
                "namespace's data is kept)", s->host);
    return true;
}

static bool vap_get_present(Object *obj, Error **errp)
{
    VFIOApplePCIState *s = VFIO_APPLE_PCI(obj);

    return s->hd && host_device_present(s->hd);
}

static void vap_set_sim_present(Object *obj, bool value, Error **errp)
{
    VFIOApplePCIState *s = VFIO_APPLE_PCI(obj);

    if (!s->hd) {
        error_setg(errp, "vfio-apple-pci: x-sim-present can be set on a "
                   "realized device only");
        return;
    }
    if (!sim_nvme_is(s->hd)) {
        error_setg(errp, "vfio-apple-pci %s: x-sim-present works on a "
                   "simulated host only (host=sim:nvme...)", s->host);
        return;
    }
    if (!value) {
        sim_nvme_vanish(s->hd, "the simulated device was pulled "
                        "(x-sim-present=off)");
        vap_removed(s);
    } else if (!host_device_present(s->hd)) {
        vap_replug(s, errp);
    }
}

/* ---- lifecycle ------------------------------------------------------- */

static void vap_teardown(VFIOApplePCIState *s)
{
    PCIDevice *pdev = PCI_DEVICE(s);

    if (s->unplug_bh) {
        qemu_bh_delete(s->unplug_bh);
        s->unplug_bh = NULL;
    }
    if (s->posted_bh) {
        if (s->pt) {
            vap_drain_posted(s);
        }
        qemu_bh_delete(s->posted_bh);
        s->posted_bh = NULL;
    }

    if (s->companion) {
        AppleDMAPCIState *c = s->companion;

        apple_dma_pci_unbind(c); /* its mappings go while hd is alive */
        if (s->companion_created) {
            object_unparent(OBJECT(c));
            s->companion_created = false;
        }
    }
    if (s->irq_fd >= 0) {
        qemu_set_fd_handler(s->irq_fd, NULL, NULL, NULL);
        s->irq_fd = -1;
    }
    if (s->listening) {
        memory_listener_unregister(&s->listener);
        s->listening = false;
    }
    if (s->hd) {
        vap_forget_all_ram(s);
    }
    if (s->msix_pos && msix_present(pdev)) {
        msix_uninit(pdev, &s->bars[s->msix_table_bir].mr,
                    &s->bars[s->msix_pba_bir].mr);
    }
    if (s->msi_pos) {
        msi_uninit(pdev);
    }
    if (s->pt) {
        passthrough_destroy(s->pt);
        s->pt = NULL;
    }
    if (s->gm) {
        guest_mem_destroy(s->gm);
        s->gm = NULL;
    }
    if (s->hd) {
        if (s->claimed) {
            s->hd->ops->release(s->hd);
        }
        s->hd->ops->destroy(s->hd);
        s->hd = NULL;
    }
    migrate_del_blocker(&s->migration_blocker);
    g_free(s->bar_layout);
    s->bar_layout = NULL;
}

static void vap_realize(PCIDevice *pdev, Error **errp)
{
    VFIOApplePCIState *s = VFIO_APPLE_PCI(pdev);
    struct pt_irq_sink sink = {
        .vector_state = vap_vector_state,
        .trigger = vap_trigger,
        .opaque = pdev,
    };
    const struct hd_identity *id;
    char err[HD_ERROR_LEN + 128] = "";
    uint8_t hdr[PCI_STD_HEADER_SIZEOF];
    int rc;

    s->irq_fd = -1;
    if (!s->host || !*s->host) {
        error_setg(errp, "vfio-apple-pci: host= is required (BB:DD.F on "
                   "macOS; sim:nvme or sim-dext:nvme for the simulator)");
        return;
    }
    error_setg(&s->migration_blocker, "vfio-apple-pci %s: a passed-through "
               "host function cannot be migrated: its state lives in the "
               "device and its DMA mappings in the host's DART", s->host);
    if (migrate_add_blocker(&s->migration_blocker, errp) < 0) {
        return;
    }

    s->hd = host_device_open(s->host, err, sizeof(err));
    if (!s->hd) {
        error_setg(errp, "vfio-apple-pci: %s", err);
        goto fail;
    }
    rc = s->hd->ops->claim(s->hd);
    if (rc < 0) {
        error_setg(errp, "vfio-apple-pci: claiming %s: %s", s->host,
                   host_device_error(s->hd));
        goto fail;
    }
    s->claimed = true;
    s->pt = passthrough_create(s->hd, err, sizeof(err));
    if (!s->pt) {
        error_setg(errp, "vfio-apple-pci %s: %s", s->host, err);
        goto fail;
    }
    s->posted_bh = qemu_bh_new(vap_posted_bh, s);
    s->unplug_bh = qemu_bh_new(vap_unplug_bh, s);
    s->gm = guest_mem_create();
    if (!s->gm) {
        error_setg(errp, "vfio-apple-pci: out of memory");
        goto fail;
    }

    if (passthrough_config_size(s->pt) < PCIE_CONFIG_SPACE_SIZE) {
        pdev->cap_present &= ~QEMU_PCI_CAP_EXPRESS;
    }
    /* QEMU's copy of the identity, for its own use (info pci, ACPI). */
    if (passthrough_config_read(s->pt, 0, hdr, sizeof(hdr)) < 0) {
        error_setg(errp, "vfio-apple-pci %s: reading config space: %s",
                   s->host, host_device_error(s->hd));
        goto fail;
    }
    memcpy(pdev->config + PCI_VENDOR_ID, hdr + PCI_VENDOR_ID, 4);
    memcpy(pdev->config + PCI_REVISION_ID, hdr + PCI_REVISION_ID, 4);
    memcpy(pdev->config + PCI_SUBSYSTEM_VENDOR_ID,
           hdr + PCI_SUBSYSTEM_VENDOR_ID, 4);
    pci_config_set_interrupt_pin(pdev->config, 0); /* no INTx */

    /* Bytes QEMU emulates; the rest is the core's view of the host. */
    memset(s->emulated, 0, sizeof(s->emulated));
    vap_emulate(s, PCI_COMMAND, 2);
    vap_emulate(s, PCI_BASE_ADDRESS_0, 24);
    vap_emulate(s, PCI_ROM_ADDRESS, 4);
    vap_emulate(s, PCI_INTERRUPT_LINE, 2);

    vap_find_irq_caps(s);
    if (passthrough_irq_count(s->pt, PT_IRQ_MSIX) == 0) {
        s->msix_pos = 0;
    }
    if (!vap_setup_bars(s, errp) || !vap_setup_msi(s, errp)) {
        goto fail;
    }

    rc = passthrough_set_irq_sink(s->pt, &sink);
    if (rc < 0) {
        error_setg(errp, "vfio-apple-pci %s: interrupts: %s", s->host,
                   strerror(-rc));
        goto fail;
    }
    s->irq_fd = passthrough_irq_wakeup_fd(s->pt);
    if (s->irq_fd >= 0) {
        qemu_set_fd_handler(s->irq_fd, vap_irq_ready, NULL, s);
    }

    s->listener = (MemoryListener) {
        .name = "vfio-apple",
        .region_add = vap_region_add,
        .region_del = vap_region_del,
    };
    memory_listener_register(&s->listener, &address_space_memory);
    s->listening = true;

    if (!vap_attach_companion(s, errp)) {
        goto fail;
    }
    id = passthrough_identity(s->pt);
    info_report("vfio-apple-pci: %s (host %02x:%02x.%x %04x:%04x) at "
                "%02x:%02x.%x; %s%s", s->host, id->bus, id->device,
                id->function, id->vendor_id, id->device_id,
                pci_dev_bus_num(pdev), PCI_SLOT(pdev->devfn),
                PCI_FUNC(pdev->devfn), s->bar_layout ? s->bar_layout : "no BARs",
                s->companion ? "; apple-dma-pci companion bound" : "");
    return;

fail:
    vap_teardown(s);
}

static void vap_exit(PCIDevice *pdev)
{
    vap_teardown(VFIO_APPLE_PCI(pdev));
}

/*
 * Device reset: the function goes back to its power-on state through the
 * host's reset verb (FLR, else hot reset), with COMMAND as QEMU's
 * emulation just reset it.
 */
static void vap_reset(DeviceState *dev)
{
    VFIOApplePCIState *s = VFIO_APPLE_PCI(dev);
    PCIDevice *pdev = PCI_DEVICE(dev);
    uint8_t cmd[2];
    int rc;

    if (!s->pt) {
        return;
    }
    vap_drain_posted(s);
    stw_le_p(cmd, pci_get_word(pdev->config + PCI_COMMAND));
    passthrough_config_write(s->pt, PCI_COMMAND, cmd, sizeof(cmd));
    rc = passthrough_reset(s->pt);
    if (rc < 0) {
        warn_report("vfio-apple-pci %s: reset failed: %s", s->host,
                    host_device_error(s->hd));
    }
    passthrough_irqs_changed(s->pt);
    vap_check_present(s);
}

static void vap_instance_init(Object *obj)
{
    PCIDevice *pdev = PCI_DEVICE(obj);

    /* A PCI Express function unless the host's config space says not. */
    pdev->cap_present |= QEMU_PCI_CAP_EXPRESS;
}

/* Read-only counters for QMP (qom-get) and `vfio-apple status --qmp`. */
enum vap_counter {
    VAP_DART_LIVE_MAPPINGS,
    VAP_DART_LIVE_BYTES,
    VAP_DART_PEAK_MAPPINGS,
    VAP_DART_PEAK_BYTES,
    VAP_DART_FAULTS,
    VAP_DART_REGISTER_FAILURES,
    VAP_IRQS_DELIVERED,
    VAP_IRQS_DROPPED,
    VAP_VECTORS_ENABLED,
    VAP_RESETS,
    VAP_BAR_READS,
    VAP_BAR_WRITES,
    VAP_POSTED_WRITES,
};

static const char *const vap_counter_names[] = {
    [VAP_DART_LIVE_MAPPINGS] = "dart-live-mappings",
    [VAP_DART_LIVE_BYTES] = "dart-live-bytes",
    [VAP_DART_PEAK_MAPPINGS] = "dart-peak-mappings",
    [VAP_DART_PEAK_BYTES] = "dart-peak-bytes",
    [VAP_DART_FAULTS] = "dart-faults",
    [VAP_DART_REGISTER_FAILURES] = "dart-register-failures",
    [VAP_IRQS_DELIVERED] = "irqs-delivered",
    [VAP_IRQS_DROPPED] = "irqs-dropped",
    [VAP_VECTORS_ENABLED] = "vectors-enabled",
    [VAP_RESETS] = "resets",
    [VAP_BAR_READS] = "bar-reads",
    [VAP_BAR_WRITES] = "bar-writes",
    [VAP_POSTED_WRITES] = "posted-writes-count",
};

static void vap_get_counter(Object *obj, Visitor *v, const char *name,
                            void *opaque, Error **errp)
{
    VFIOApplePCIState *s = VFIO_APPLE_PCI(obj);
    struct hd_dma_stats dma = { 0 };
    struct passthrough_stats pt = { 0 };
    uint64_t value = 0;

    if (s->hd && s->hd->ops->dma_stats) {
        s->hd->ops->dma_stats(s->hd, &dma);
    }
    if (s->pt) {
        passthrough_stats(s->pt, &pt);
    }
    switch ((enum vap_counter)(uintptr_t)opaque) {
    case VAP_DART_LIVE_MAPPINGS:
        value = dma.live_mappings;
        break;
    case VAP_DART_LIVE_BYTES:
        value = dma.live_bytes;
        break;
    case VAP_DART_PEAK_MAPPINGS:
        value = dma.peak_mappings;
        break;
    case VAP_DART_PEAK_BYTES:
        value = dma.peak_bytes;
        break;
    case VAP_DART_FAULTS:
        value = dma.faults;
        break;
    case VAP_DART_REGISTER_FAILURES:
        value = dma.register_failures;
        break;
    case VAP_IRQS_DELIVERED:
        value = pt.irq_delivered;
        break;
    case VAP_IRQS_DROPPED:
        value = pt.irq_dropped;
        break;
    case VAP_VECTORS_ENABLED:
        value = pt.vectors_enabled;
        break;
    case VAP_RESETS:
        value = pt.resets;
        break;
    case VAP_BAR_READS:
        value = pt.bar_reads;
        break;
    case VAP_BAR_WRITES:
        value = pt.bar_writes;
        break;
    case VAP_POSTED_WRITES:
        value = s->posted_count;
        break;
    }
    visit_type_uint64(v, name, &value, errp);
}

static char *vap_get_companion_path(Object *obj, Error **errp)
{
    VFIOApplePCIState *s = VFIO_APPLE_PCI(obj);

    return s->companion ? object_get_canonical_path(OBJECT(s->companion))
                        : g_strdup("");
}

static char *vap_get_bar_layout(Object *obj, Error **errp)
{
    VFIOApplePCIState *s = VFIO_APPLE_PCI(obj);

    return g_strdup(s->bar_layout ? s->bar_layout : "");
}

static bool vap_get_dma_stats_known(Object *obj, Error **errp)
{
    VFIOApplePCIState *s = VFIO_APPLE_PCI(obj);

    return s->hd && s->hd->ops->dma_stats;
}

static const Property vap_properties[] = {
    DEFINE_PROP_STRING("host", VFIOApplePCIState, host),
    DEFINE_PROP_BOOL("companion", VFIOApplePCIState, companion_auto, true),
    DEFINE_PROP_PCI_DEVFN("companion-addr", VFIOApplePCIState,
                          companion_devfn, -1),
    DEFINE_PROP_UINT32("companion-max-entries", VFIOApplePCIState,
                       companion_max_entries, 4096),
    DEFINE_PROP_ON_OFF_AUTO("direct-bars", VFIOApplePCIState, direct_bars,
                            ON_OFF_AUTO_AUTO),
    DEFINE_PROP_BOOL("posted-writes", VFIOApplePCIState, posted_writes, false),
};

static void vap_class_init(ObjectClass *klass, const void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    PCIDeviceClass *k = PCI_DEVICE_CLASS(klass);

    k->realize = vap_realize;
    k->exit = vap_exit;
    k->config_read = vap_config_read;
    k->config_write = vap_config_write;
    device_class_set_legacy_reset(dc, vap_reset);
    device_class_set_props(dc, vap_properties);
    dc->desc = "host PCI function passed through by vfio-apple "
               "(macOS dext, or the vfio-apple simulator)";
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
    for (size_t i = 0; i < ARRAY_SIZE(vap_counter_names); i++) {
        object_class_property_add(klass, vap_counter_names[i], "uint64",
                                  vap_get_counter, NULL, NULL,
                                  (void *)(uintptr_t)i);
    }
    object_class_property_add_str(klass, "companion-path",
                                  vap_get_companion_path, NULL);
    object_class_property_add_str(klass, "bar-layout", vap_get_bar_layout,
                                  NULL);
    object_class_property_add_bool(klass, "dma-stats-known",
                                   vap_get_dma_stats_known, NULL);
    object_class_property_add_bool(klass, "present", vap_get_present, NULL);
    object_class_property_add_bool(klass, "x-sim-present", vap_get_present,
                                   vap_set_sim_present);
}

static const TypeInfo vap_info = {
    .name = TYPE_VFIO_APPLE_PCI,
    .parent = TYPE_PCI_DEVICE,
    .instance_size = sizeof(VFIOApplePCIState),
    .instance_init = vap_instance_init,
    .class_init = vap_class_init,
    .interfaces = (const InterfaceInfo[]) {
        { INTERFACE_PCIE_DEVICE },
        { INTERFACE_CONVENTIONAL_PCI_DEVICE },
        { }
    },
};

static void vap_register_types(void)
{
    type_register_static(&vap_info);
}

type_init(vap_register_types)
