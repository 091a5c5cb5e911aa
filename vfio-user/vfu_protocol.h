/* SPDX-License-Identifier: MIT */
/*
 * The vfio-user wire format (QEMU docs/interop/vfio-user.rst), as far as
 * this server speaks it.  Every message is a 16-byte header followed by a
 * command-specific payload; all fields are host-endian (little-endian on
 * every platform we run on).  The VFIO constants below are the values of
 * Linux's <linux/vfio.h>, which the protocol reuses; they are repeated here
 * so the server also builds where that header does not exist (macOS).
 *
 * Shared by the server and the test client.
 */
#ifndef VFA_VFU_PROTOCOL_H
#define VFA_VFU_PROTOCOL_H

#include <stdint.h>

enum vfu_command {
	VFU_CMD_VERSION = 1,
	VFU_CMD_DMA_MAP = 2,
	VFU_CMD_DMA_UNMAP = 3,
	VFU_CMD_DEVICE_GET_INFO = 4,
	VFU_CMD_DEVICE_GET_REGION_INFO = 5,
	VFU_CMD_DEVICE_GET_REGION_IO_FDS = 6,
	VFU_CMD_DEVICE_GET_IRQ_INFO = 7,
	VFU_CMD_DEVICE_SET_IRQS = 8,
	VFU_CMD_REGION_READ = 9,
	VFU_CMD_REGION_WRITE = 10,
	VFU_CMD_DMA_READ = 11,
	VFU_CMD_DMA_WRITE = 12,
	VFU_CMD_DEVICE_RESET = 13,
	VFU_CMD_DIRTY_PAGES = 14,
	VFU_CMD_REGION_WRITE_MULTI = 15,
	VFU_CMD_DEVICE_FEATURE = 16,
};

/* Header flags. */
#define VFU_FLAG_TYPE_MASK 0xfu
#define VFU_FLAG_TYPE_REQUEST 0x0u
#define VFU_FLAG_TYPE_REPLY 0x1u
#define VFU_FLAG_NO_REPLY 0x10u
#define VFU_FLAG_ERROR 0x20u

struct vfu_hdr {
	uint16_t id;      /* echoed in the reply */
	uint16_t command; /* enum vfu_command */
	uint32_t size;    /* whole message, header included */
	uint32_t flags;
	uint32_t error;   /* positive errno in an error reply */
};

/* Protocol version this server speaks (the QEMU 11.1 client: 0.0). */
#define VFU_VERSION_MAJOR 0
#define VFU_VERSION_MINOR 0

struct vfu_version {
	uint16_t major;
	uint16_t minor;
	/* followed by optional NUL-terminated JSON: {"capabilities":{...}} */
};

struct vfu_dma_map {
	uint32_t argsz; /* 32 */
	uint32_t flags; /* VFU_DMA_MAP_FLAG_* */
	uint64_t offset; /* in the fd sent with the message */
	uint64_t addr;   /* guest-physical (DMA) address */
	uint64_t size;
};

struct vfu_dma_unmap {
	uint32_t argsz; /* 24 */
	uint32_t flags; /* VFU_DMA_UNMAP_FLAG_* */
	uint64_t addr;
	uint64_t size;
};

struct vfu_device_info {
	uint32_t argsz;
	uint32_t flags; /* VFU_DEVICE_FLAGS_* */
	uint32_t num_regions;
	uint32_t num_irqs;
};

struct vfu_region_info {
	uint32_t argsz;
	uint32_t flags; /* VFU_REGION_INFO_FLAG_* */
	uint32_t index;
	uint32_t cap_offset;
	uint64_t size;
	uint64_t offset;
};

struct vfu_irq_info {
	uint32_t argsz;
	uint32_t flags; /* VFU_IRQ_INFO_* */
	uint32_t index;
	uint32_t count;
};

struct vfu_irq_set {
	uint32_t argsz;
	uint32_t flags; /* one VFU_IRQ_SET_DATA_* | one VFU_IRQ_SET_ACTION_* */
	uint32_t index;
	uint32_t start;
	uint32_t count;
	/* DATA_BOOL: count bytes follow; DATA_EVENTFD: the fds travel as SCM_RIGHTS */
};

/* REGION_READ request, REGION_READ reply (+ data), REGION_WRITE (+ data). */
struct vfu_region_rw {
	uint64_t offset;
	uint32_t region;
	uint32_t count;
};

/* REGION_WRITE_MULTI: uint64_t count, then that many of these. */
#define VFU_MULTI_DATA 8
#define VFU_MULTI_MAX 200
struct vfu_region_write_one {
	uint64_t offset;
	uint32_t region;
	uint32_t count; /* <= VFU_MULTI_DATA */
	uint8_t data[VFU_MULTI_DATA];
};

/* Values of <linux/vfio.h>. */
#define VFU_DMA_MAP_FLAG_READ (1u << 0)
#define VFU_DMA_MAP_FLAG_WRITE (1u << 1)
#define VFU_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP (1u << 0)
#define VFU_DMA_UNMAP_FLAG_ALL (1u << 1)
#define VFU_DEVICE_FLAGS_RESET (1u << 0)
#define VFU_DEVICE_FLAGS_PCI (1u << 1)
#define VFU_REGION_INFO_FLAG_READ (1u << 0)
#define VFU_REGION_INFO_FLAG_WRITE (1u << 1)
#define VFU_REGION_INFO_FLAG_MMAP (1u << 2)
#define VFU_REGION_INFO_FLAG_CAPS (1u << 3)
#define VFU_IRQ_INFO_EVENTFD (1u << 0)
#define VFU_IRQ_INFO_MASKABLE (1u << 1)
#define VFU_IRQ_INFO_AUTOMASKED (1u << 2)
#define VFU_IRQ_INFO_NORESIZE (1u << 3)
#define VFU_IRQ_SET_DATA_NONE (1u << 0)
#define VFU_IRQ_SET_DATA_BOOL (1u << 1)
#define VFU_IRQ_SET_DATA_EVENTFD (1u << 2)
#define VFU_IRQ_SET_ACTION_MASK (1u << 3)
#define VFU_IRQ_SET_ACTION_UNMASK (1u << 4)
#define VFU_IRQ_SET_ACTION_TRIGGER (1u << 5)
#define VFU_IRQ_SET_DATA_MASK (VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_DATA_BOOL | VFU_IRQ_SET_DATA_EVENTFD)
#define VFU_IRQ_SET_ACTION_MASK_ALL \
	(VFU_IRQ_SET_ACTION_MASK | VFU_IRQ_SET_ACTION_UNMASK | VFU_IRQ_SET_ACTION_TRIGGER)

/* VFIO_PCI_*_REGION_INDEX and VFIO_PCI_*_IRQ_INDEX. */
enum {
	VFU_PCI_BAR0_REGION = 0,
	VFU_PCI_BAR5_REGION = 5,
	VFU_PCI_ROM_REGION = 6,
	VFU_PCI_CONFIG_REGION = 7,
	VFU_PCI_VGA_REGION = 8,
	VFU_PCI_NUM_REGIONS = 9,
};
enum {
	VFU_PCI_INTX_IRQ = 0,
	VFU_PCI_MSI_IRQ = 1,
	VFU_PCI_MSIX_IRQ = 2,
	VFU_PCI_ERR_IRQ = 3,
	VFU_PCI_REQ_IRQ = 4,
	VFU_PCI_NUM_IRQS = 5,
};

/* What this server accepts and advertises. */
#define VFU_MAX_MSG_FDS 16           /* fds in one message */
#define VFU_MAX_DATA_XFER (1u << 20) /* bytes in one region read/write */
#define VFU_MAX_DMA_MAPS 1024        /* live DMA_MAP windows */
#define VFU_DMA_PGSIZE 4096u
#define VFU_MAX_VECTORS 2048u        /* per IRQ index (PCI MSI-X maximum) */
#define VFU_MAX_VERSION_JSON 4096u   /* capabilities text in VERSION */
/* The largest request: a REGION_WRITE of VFU_MAX_DATA_XFER bytes. */
#define VFU_MAX_MSG_SIZE (sizeof(struct vfu_hdr) + sizeof(struct vfu_region_rw) + VFU_MAX_DATA_XFER)

#endif
