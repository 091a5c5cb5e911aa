/*
 * apple-dma-pci: the companion through which a guest asks for DMA mappings
 * of its managed vfio-apple-pci function (1b36:0015; the wire protocol is
 * vfio-apple's docs/apple-dma-v3.md, version 2 plus negotiated extensions).
 *
 * The protocol lives in vfio-apple's core (companion/); this file binds it
 * to QEMU.  A doorbell is handled in the vCPU thread that wrote it, so by
 * the time the guest's write returns the responses are in guest RAM: the
 * device is synchronous by construction, as the protocol promises.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/visitor.h"
#include "qemu/error-report.h"
#include "qemu/module.h"
#include "hw/pci/pci.h"
#include "hw/qdev-properties.h"
#include "migration/vmstate.h"
#include "system/system.h"
#include "vfio-apple.h"

#include "companion.h"
#include "host_device.h"
#include "passthrough.h"

#define APPLE_DMA_UNSET UINT32_MAX

static uint64_t apple_dma_bar_read(void *opaque, hwaddr addr, unsigned size)
{
    AppleDMAPCIState *s = opaque;

    if (!s->core) {
        return 0; /* unbound: VERSION reads 0, no driver binds */
    }
    /*
     * MANAGED_BDF is the managed function's guest address now: a bus
     * number behind a bridge exists only once the guest programmed it.
     * Once the function is gone the core answers all ones.
     */
    if (addr == APPLE_DMA_REG_MANAGED_BDF && size == 4 && s->managed &&
        s->managed->hd && host_device_present(s->managed->hd)) {
        return pci_get_bdf(PCI_DEVICE(s->managed));
    }
    return companion_mmio_read(s->core, addr, size);
}

static void apple_dma_bar_write(void *opaque, hwaddr addr, uint64_t val,
                                unsigned size)
{
    AppleDMAPCIState *s = opaque;

    if (s->core) {
        companion_mmio_write(s->core, addr, size, (uint32_t)val);
    }
}

/* 8-byte accesses reach the core as two 4-byte ones, low half first. */
static const MemoryRegionOps apple_dma_bar_ops = {
    .read = apple_dma_bar_read,
    .write = apple_dma_bar_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = {
        .min_access_size = 1,
        .max_access_size = 8,
    },
    .impl = {
        .min_access_size = 1,
        .max_access_size = 4,
    },
};

bool apple_dma_pci_bind(AppleDMAPCIState *s, VFIOApplePCIState *managed,
                        Error **errp)
{
    PCIDevice *mdev = PCI_DEVICE(managed);
    uint16_t bdf = pci_get_bdf(mdev);

    if (s->core || s->managed) {
        error_setg(errp, "apple-dma-pci %s already serves a vfio-apple-pci",
                   DEVICE(s)->id ? DEVICE(s)->id : "(no id)");
        return false;
    }
    if (managed->companion) {
        error_setg(errp, "vfio-apple-pci at %02x:%02x.%x already has a "
                   "companion: give -device apple-dma-pci before it, or "
                   "companion=off on it", pci_dev_bus_num(mdev),
                   PCI_SLOT(mdev->devfn), PCI_FUNC(mdev->devfn));
        return false;
    }
    s->core = companion_create(managed->hd, managed->gm, bdf, s->max_entries);
    if (!s->core) {
        error_setg(errp, "apple-dma-pci: cannot create the companion "
                   "(max-entries %u: at most %u)", s->max_entries,
                   COMPANION_LIMIT_MAX_ENTRIES);
        return false;
    }
    s->managed = managed;
    s->managed_bdf = bdf;
    managed->companion = s;
    return true;
}

void apple_dma_pci_unbind(AppleDMAPCIState *s)
{
    if (s->core) {
        companion_destroy(s->core); /* unregisters every mapping */
        s->core = NULL;
    }
    if (s->managed) {
        s->managed->companion = NULL;
        s->managed = NULL;
    }
}

void apple_dma_pci_host_gone(AppleDMAPCIState *s)
{
    if (s->core) {
        companion_host_gone(s->core);
    }
}

void apple_dma_pci_host_back(AppleDMAPCIState *s)
{
    if (s->core) {
        companion_host_back(s->core);
    }
}

void apple_dma_pci_ram_removed(AppleDMAPCIState *s, uint64_t gpa, uint64_t len)
{
    if (s->core) {
        companion_guest_ram_removed(s->core, gpa, len);
    }
}

typedef struct AppleDMAFind {
    AppleDMAPCIState *s;
    VFIOApplePCIState *match;
    VFIOApplePCIState *served; /* matches, but has a companion already */
    bool match_same_slot;
} AppleDMAFind;

bool apple_dma_pci_host_matches(AppleDMAPCIState *s, VFIOApplePCIState *m)
{
    const struct hd_identity *id = m->pt ? passthrough_identity(m->pt) : NULL;

    if (s->host_bus == APPLE_DMA_UNSET) {
        return true;
    }
    return id && id->bus == s->host_bus && id->device == s->host_device &&
           id->function == s->host_function;
}

/* Another function of the slot a (the same bus and device number). */
static bool apple_dma_same_slot(PCIDevice *a, PCIDevice *b)
{
    return pci_get_bus(a) == pci_get_bus(b) &&
           PCI_SLOT(a->devfn) == PCI_SLOT(b->devfn);
}

/* A managed function for a companion given on the command line. */
static void apple_dma_find_managed(PCIBus *bus, PCIDevice *pdev, void *opaque)
{
    AppleDMAFind *f = opaque;
    VFIOApplePCIState *m;
    bool same_slot;

    if (f->match_same_slot ||
        !object_dynamic_cast(OBJECT(pdev), TYPE_VFIO_APPLE_PCI)) {
        return;
    }
    m = VFIO_APPLE_PCI(pdev);
    if (!m->pt) {
        return; /* not realized yet: it finds us when it is */
    }
    if (f->s->managed_bdf != APPLE_DMA_UNSET &&
        f->s->managed_bdf != pci_get_bdf(pdev)) {
        return;
    }
    if (m->companion) {
        if (f->s->managed_bdf != APPLE_DMA_UNSET) {
            f->served = m;
        }
        return;
    }
    if (!apple_dma_pci_host_matches(f->s, m)) {
        return;
    }
    /*
     * Without managed-bdf, a function of our own slot wins (the hot-plug
     * layout: the companion at function 0, the function beside it).
     */
    same_slot = apple_dma_same_slot(PCI_DEVICE(f->s), pdev);
    if (!f->match || same_slot) {
        f->match = m;
        f->match_same_slot = same_slot;
    }
}

/* Every bus of the machine: the function may sit behind a root port. */
static void apple_dma_find_on_bus(PCIBus *bus, void *opaque)
{
    pci_for_each_device_under_bus(bus, apple_dma_find_managed, opaque);
}

/* Every companion must have found its function once the machine is built. */
static void apple_dma_init_done(Notifier *notifier, void *data)
{
    AppleDMAPCIState *s = container_of(notifier, AppleDMAPCIState, init_done);

    if (!s->core) {
        g_autofree char *host = s->host_bus == APPLE_DMA_UNSET ? g_strdup("") :
            g_strdup_printf(" and host %02x:%02x.%x", s->host_bus,
                            s->host_device, s->host_function);

        error_report("apple-dma-pci at %02x.%x: no vfio-apple-pci without a "
                     "companion matches managed-bdf=0x%x%s; give the managed "
                     "function's guest address (bus << 8 | devfn) and host "
                     "address, or drop this device",
                     PCI_SLOT(PCI_DEVICE(s)->devfn),
                     PCI_FUNC(PCI_DEVICE(s)->devfn), s->managed_bdf, host);
        exit(1);
    }
}

static void apple_dma_realize(PCIDevice *pdev, Error **errp)
{
    AppleDMAPCIState *s = APPLE_DMA_PCI(pdev);
    AppleDMAFind f = { .s = s };
    bool some_host = s->host_bus != APPLE_DMA_UNSET ||
                     s->host_device != APPLE_DMA_UNSET ||
                     s->host_function != APPLE_DMA_UNSET;
    bool all_host = s->host_bus != APPLE_DMA_UNSET &&
                    s->host_device != APPLE_DMA_UNSET &&
                    s->host_function != APPLE_DMA_UNSET;

    if (some_host && !all_host) {
        error_setg(errp, "apple-dma-pci: give all of x-apple-host-bus, "
                   "x-apple-host-device and x-apple-host-function, or none");
        return;
    }
    if (s->max_entries == 0 || s->max_entries > COMPANION_LIMIT_MAX_ENTRIES) {
        error_setg(errp, "apple-dma-pci: max-entries must be 1..%u",
                   COMPANION_LIMIT_MAX_ENTRIES);
        return;
    }
    pci_config_set_interrupt_pin(pdev->config, 0); /* no interrupts */
    memory_region_init_io(&s->bar, OBJECT(s), &apple_dma_bar_ops, s,
                          "apple-dma-bar0", COMPANION_BAR0_SIZE);
    pci_register_bar(pdev, 0, PCI_BASE_ADDRESS_SPACE_MEMORY, &s->bar);

    /*
     * Bind to the function realized before us that matches managed-bdf
     * (and the host address, when given), or wait for one realized after
     * us to find us.  With neither given, the first function without a
     * companion is ours.
     */
    pci_for_each_bus(pci_device_root_bus(pdev), apple_dma_find_on_bus, &f);
    if (f.match && !apple_dma_pci_bind(s, f.match, errp)) {
        return;
    }
    if (!f.match && f.served) {
        PCIDevice *m = PCI_DEVICE(f.served);

        error_setg(errp, "vfio-apple-pci at %02x:%02x.%x already has a "
                   "companion (created for it): give -device apple-dma-pci "
                   "before it, or companion=off on it", pci_dev_bus_num(m),
                   PCI_SLOT(m->devfn), PCI_FUNC(m->devfn));
        return;
    }
    if (!s->core && DEVICE(s)->hotplugged) {
        /*
         * Hot-plugged: nothing will come after us (QEMU exposes no function
         * of a slot once its function 0 is there), so the function must be
         * there first.
         */
        error_setg(errp, "apple-dma-pci: no vfio-apple-pci without a "
                   "companion matches it; hot-plug the vfio-apple-pci first "
                   "(companion=off, e.g. at function 1 of the slot), then "
                   "this companion (at function 0 with multifunction=on)");
        return;
    }
    if (!s->core) {
        s->init_done.notify = apple_dma_init_done;
        qemu_add_machine_init_done_notifier(&s->init_done);
    }
}

static void apple_dma_exit(PCIDevice *pdev)
{
    AppleDMAPCIState *s = APPLE_DMA_PCI(pdev);

    if (s->init_done.notify) {
        qemu_remove_machine_init_done_notifier(&s->init_done);
        s->init_done.notify = NULL;
    }
    apple_dma_pci_unbind(s);
}

static void apple_dma_reset(DeviceState *dev)
{
    AppleDMAPCIState *s = APPLE_DMA_PCI(dev);

    if (s->core) {
        companion_reset(s->core); /* every mapping goes, registers clear */
    }
}

/* Read-only counters for QMP (qom-get) and `vfio-apple status --qmp`. */
enum apple_dma_counter {
    AD_DOORBELLS,
    AD_MAP_ENTRIES,
    AD_UNMAP_ENTRIES,
    AD_LIVE_IDS,
    AD_LIVE_BYTES,
    AD_PEAK_IDS,
    AD_PEAK_BYTES,
    AD_INVAL_BATCHES,
    AD_IOERR_BATCHES,
    AD_FAILED_ENTRIES,
    AD_GUEST_FEATURES,
};

static const char *const apple_dma_counter_names[] = {
    [AD_DOORBELLS] = "doorbells",
    [AD_MAP_ENTRIES] = "map-entries",
    [AD_UNMAP_ENTRIES] = "unmap-entries",
    [AD_LIVE_IDS] = "live-ids",
    [AD_LIVE_BYTES] = "live-bytes",
    [AD_PEAK_IDS] = "peak-ids",
    [AD_PEAK_BYTES] = "peak-bytes",
    [AD_INVAL_BATCHES] = "inval-batches",
    [AD_IOERR_BATCHES] = "ioerr-batches",
    [AD_FAILED_ENTRIES] = "failed-entries",
    [AD_GUEST_FEATURES] = "guest-features",
};

static void apple_dma_get_counter(Object *obj, Visitor *v, const char *name,
                                  void *opaque, Error **errp)
{
    AppleDMAPCIState *s = APPLE_DMA_PCI(obj);
    struct companion_stats st = { 0 };
    uint64_t value = 0;

    if (s->core) {
        companion_stats(s->core, &st);
    }
    switch ((enum apple_dma_counter)(uintptr_t)opaque) {
    case AD_DOORBELLS:
        value = st.doorbells;
        break;
    case AD_MAP_ENTRIES:
        value = st.map_entries;
        break;
    case AD_UNMAP_ENTRIES:
        value = st.unmap_entries;
        break;
    case AD_LIVE_IDS:
        value = st.live_ids;
        break;
    case AD_LIVE_BYTES:
        value = st.live_bytes;
        break;
    case AD_PEAK_IDS:
        value = st.peak_ids;
        break;
    case AD_PEAK_BYTES:
        value = st.peak_bytes;
        break;
    case AD_INVAL_BATCHES:
        value = st.inval;
        break;
    case AD_IOERR_BATCHES:
        value = st.ioerr;
        break;
    case AD_FAILED_ENTRIES:
        value = st.failed_entries;
        break;
    case AD_GUEST_FEATURES:
        value = st.guest_features;
        break;
    }
    visit_type_uint64(v, name, &value, errp);
}

static const VMStateDescription vmstate_apple_dma = {
    .name = TYPE_APPLE_DMA_PCI,
    .unmigratable = 1, /* its mappings live in the host's DART */
};

static const Property apple_dma_properties[] = {
    DEFINE_PROP_UINT32("managed-bdf", AppleDMAPCIState, managed_bdf,
                       APPLE_DMA_UNSET),
    DEFINE_PROP_UINT32("max-entries", AppleDMAPCIState, max_entries,
                       COMPANION_DEFAULT_MAX_ENTRIES),
    DEFINE_PROP_UINT32("x-apple-host-bus", AppleDMAPCIState, host_bus,
                       APPLE_DMA_UNSET),
    DEFINE_PROP_UINT32("x-apple-host-device", AppleDMAPCIState, host_device,
                       APPLE_DMA_UNSET),
    DEFINE_PROP_UINT32("x-apple-host-function", AppleDMAPCIState,
                       host_function, APPLE_DMA_UNSET),
};

static void apple_dma_class_init(ObjectClass *klass, const void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    PCIDeviceClass *k = PCI_DEVICE_CLASS(klass);

    k->realize = apple_dma_realize;
    k->exit = apple_dma_exit;
    k->vendor_id = COMPANION_VENDOR_ID;
    k->device_id = COMPANION_DEVICE_ID;
    k->revision = 0;
    k->class_id = COMPANION_CLASS_CODE >> 8;
    device_class_set_legacy_reset(dc, apple_dma_reset);
    device_class_set_props(dc, apple_dma_properties);
    dc->vmsd = &vmstate_apple_dma;
    dc->desc = "vfio-apple DMA-mapping companion (apple-dma v2/v3)";
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
    for (size_t i = 0; i < ARRAY_SIZE(apple_dma_counter_names); i++) {
        object_class_property_add(klass, apple_dma_counter_names[i], "uint64",
                                  apple_dma_get_counter, NULL, NULL,
                                  (void *)(uintptr_t)i);
    }
}

static const TypeInfo apple_dma_info = {
    .name = TYPE_APPLE_DMA_PCI,
    .parent = TYPE_PCI_DEVICE,
    .instance_size = sizeof(AppleDMAPCIState),
    .class_init = apple_dma_class_init,
    .interfaces = (const InterfaceInfo[]) {
        { INTERFACE_CONVENTIONAL_PCI_DEVICE },
        { }
    },
};

static void apple_dma_register_types(void)
{
    type_register_static(&apple_dma_info);
}

type_init(apple_dma_register_types)
