// SPDX-License-Identifier: MIT
/*
 * The macOS backend: every verb of hostdev/host_device.h as a call into the
 * VFIOUserPCIDriver dext's user client (shared/spec/dext-abi.md).
 *
 * Sharing.  A slot (bus, device, host root) owns one IONotificationPort on
 * one serial dispatch queue; every function of the slot opened by this
 * process uses it.  Each function has one user-client connection, shared by
 * every host_device that opens that function (the dext keys DMA, claim and
 * the pending bitmap per connection, so two connections to one function
 * would fight).  Both are reference counted.
 *
 * Interrupts.  WaitInterrupt (selector 15) completes on the dispatch queue;
 * the completion writes one byte into a pipe, which is the interface's
 * pollable wake-up.  The wait is re-armed by the event-loop thread after it
 * has read and cleared the pending bits (selector 14), never from the
 * completion itself: the dext completes a wait at once while bits are
 * pending, so re-arming there would spin until the bits are read.
 */
#include "darwin_backend.h"

#include <CoreFoundation/CoreFoundation.h>
#include <IOKit/IOKitLib.h>
#include <dispatch/dispatch.h>
#include <mach/mach.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <search.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define DEXT_USER_CLASS "VFIOUserPCIDriver"
#define DEXT_SERVICE_CLASS "IOUserService"
#define PCI_CONFIG_SIZE 4096u
#define PCI_FUNCTIONS 8

enum dext_selector {
	SEL_GET_IDENTITY = 0,
	SEL_CLAIM = 1,
	SEL_REGISTER_DMA = 5,
	SEL_UNREGISTER_DMA = 6,
	SEL_CONFIG_READ = 8,
	SEL_CONFIG_WRITE = 9,
	SEL_BAR_INFO = 10,
	SEL_MMIO_READ = 11,
	SEL_MMIO_WRITE = 12,
	SEL_SETUP_INTERRUPTS = 13,
	SEL_CHECK_INTERRUPT = 14,
	SEL_WAIT_INTERRUPT = 15,
	SEL_SET_IRQ_MASK = 16,
	SEL_RESET = 17,
};

/* GetBARInfo type bits (the BAR register's own low bits). */
#define BAR_TYPE_IO 0x01u
#define BAR_TYPE_64BIT 0x04u
#define BAR_TYPE_PREFETCH 0x08u

/*
 * The default main port.  MACH_PORT_NULL means the same as kIOMainPortDefault
 * and, unlike it (macOS 12+), builds for any deployment target.
 */
#define MAIN_PORT MACH_PORT_NULL

/* Memory types of IOConnectMapMemory64: 1 + BAR index for BARs. */
#define MEMORY_TYPE_BAR0 1u

/*
 * What the completion callback needs.  Lives until the slot's notification
 * port is destroyed, so a late completion never touches freed memory.
 */
struct darwin_waiter {
	pthread_mutex_t lock;
	int write_fd; /* -1 once the function is closed */
	atomic_bool armed;
	struct darwin_waiter *next_retired;
};

struct darwin_slot;

struct dma_entry {
	uint64_t key;
	uint64_t size;
};

/* One function's user-client connection. */
struct darwin_fn {
	struct darwin_slot *slot;
	unsigned refs;
	io_connect_t conn;
	uint64_t entry_id; /* registry entry ID of the dext service */
	struct hd_identity ident;
	bool claimed;

	bool bar_known[HD_NUM_BARS];
	uint8_t bar_mem_index[HD_NUM_BARS];
	uint8_t bar_type_bits[HD_NUM_BARS];
	uint64_t bar_size[HD_NUM_BARS];
	mach_vm_address_t bar_map[HD_NUM_BARS];

	bool irq_ready;
	struct darwin_waiter *waiter;
	int wake_read_fd;

	void *dma_tree; /* tsearch tree of struct dma_entry by key */
	struct hd_dma_stats stats;
};

struct darwin_slot {
	struct darwin_slot *next;
	unsigned refs;
	uint8_t bus;
	uint8_t device;
	io_name_t host_root;
	IONotificationPortRef port;
	dispatch_queue_t queue;
	struct darwin_fn *fns[PCI_FUNCTIONS];
	struct darwin_waiter *retired;
};

struct darwin_dev {
	struct host_device hd;
	struct darwin_fn *fn;
	bool claimed;
};

/* Open slots of this process; opens and closes are rare, a list is enough. */
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static struct darwin_slot *slots;

static struct darwin_dev *to_dev(struct host_device *hd)
{
	return (struct darwin_dev *)hd;
}

static const char *ioreturn_name(IOReturn kr)
{
	switch (kr) {
	case kIOReturnSuccess: return "kIOReturnSuccess";
	case kIOReturnError: return "kIOReturnError";
	case kIOReturnNoMemory: return "kIOReturnNoMemory";
	case kIOReturnNoResources: return "kIOReturnNoResources";
	case kIOReturnIPCError: return "kIOReturnIPCError";
	case kIOReturnNoDevice: return "kIOReturnNoDevice";
	case kIOReturnNotPrivileged: return "kIOReturnNotPrivileged";
	case kIOReturnBadArgument: return "kIOReturnBadArgument";
	case kIOReturnExclusiveAccess: return "kIOReturnExclusiveAccess";
	case kIOReturnUnsupported: return "kIOReturnUnsupported";
	case kIOReturnVMError: return "kIOReturnVMError";
	case kIOReturnInternalError: return "kIOReturnInternalError";
	case kIOReturnIOError: return "kIOReturnIOError";
	case kIOReturnNotOpen: return "kIOReturnNotOpen";
	case kIOReturnNotAligned: return "kIOReturnNotAligned";
	case kIOReturnStillOpen: return "kIOReturnStillOpen";
	case kIOReturnBusy: return "kIOReturnBusy";
	case kIOReturnTimeout: return "kIOReturnTimeout";
	case kIOReturnOffline: return "kIOReturnOffline";
	case kIOReturnNotReady: return "kIOReturnNotReady";
	case kIOReturnNotAttached: return "kIOReturnNotAttached";
	case kIOReturnNoSpace: return "kIOReturnNoSpace";
	case kIOReturnNotPermitted: return "kIOReturnNotPermitted";
	case kIOReturnDeviceError: return "kIOReturnDeviceError";
	case kIOReturnAborted: return "kIOReturnAborted";
	case kIOReturnNotResponding: return "kIOReturnNotResponding";
	case kIOReturnNotFound: return "kIOReturnNotFound";
	default: return "IOReturn";
	}
}

/* The errno a caller of the host-device interface can act on. */
static int ioreturn_errno(IOReturn kr)
{
	switch (kr) {
	case kIOReturnSuccess: return 0;
	case kIOReturnStillOpen: return -EEXIST;
	case kIOReturnNotFound: return -ENOENT;
	case kIOReturnNotAligned: return -ERANGE;
	case kIOReturnBadArgument: return -EINVAL;
	case kIOReturnNoMemory:
	case kIOReturnNoResources:
	case kIOReturnNoSpace: return -ENOSPC;
	case kIOReturnNotPrivileged:
	case kIOReturnNotPermitted:
	case kIOReturnNotOpen: return -EPERM;
	case kIOReturnExclusiveAccess:
	case kIOReturnBusy: return -EBUSY;
	case kIOReturnUnsupported: return -EOPNOTSUPP;
	case kIOReturnNoDevice:
	case kIOReturnNotAttached:
	case kIOReturnOffline:
	case kIOReturnNotResponding:
	case kIOReturnIPCError: return -ENODEV;
	case kIOReturnTimeout: return -ETIMEDOUT;
	case kIOReturnNotReady: return -EAGAIN;
	case kIOReturnAborted: return -ECANCELED;
	case kIOReturnVMError: return -EFAULT;
	default: return -EIO;
	}
}

/* A hint for the codes a person can do something about. */
static const char *ioreturn_hint(IOReturn kr)
{
	switch (kr) {
	case kIOReturnNotOpen: return "; claim the device first";
	case kIOReturnNotAttached:
	case kIOReturnNoDevice:
	case kIOReturnIPCError: return "; the dext service is gone (device unplugged or driver terminated)";
	case kIOReturnNotPrivileged:
	case kIOReturnNotPermitted: return "; the dext refused this process (check its entitlements)";
	case kIOReturnNotReady: return "; set up interrupts first";
	default: return "";
	}
}

static int call_fail(struct host_device *hd, const char *what, IOReturn kr)
{
	return hd_fail(hd, ioreturn_errno(kr), "dext %s failed: %s (0x%08x)%s", what, ioreturn_name(kr),
		       (unsigned)kr, ioreturn_hint(kr));
}

static IOReturn call(struct darwin_fn *fn, uint32_t selector, const uint64_t *in, uint32_t nin, uint64_t *out,
		     uint32_t nout)
{
	uint32_t got = nout;
	IOReturn kr = IOConnectCallScalarMethod(fn->conn, selector, in, nin, out, out ? &got : NULL);

	if (kr == kIOReturnSuccess && got != nout)
		return kIOReturnInternalError; /* an older or different dext */
	return kr;
}

/* ---- interrupt wake-up ---- */

static void waiter_completed(void *refcon, IOReturn result, void **args, uint32_t nargs)
{
	struct darwin_waiter *w = refcon;
	char byte = 1;

	(void)args;
	(void)nargs;
	pthread_mutex_lock(&w->lock);
	atomic_store(&w->armed, false);
	/* Aborted waits (the connection closing) wake nobody. */
	if (result == kIOReturnSuccess && w->write_fd >= 0) {
		/* A full pipe already means "wake up": EAGAIN is fine. */
		ssize_t n = write(w->write_fd, &byte, 1);
		(void)n;
	}
	pthread_mutex_unlock(&w->lock);
}

static int arm_wait(struct host_device *hd, struct darwin_fn *fn)
{
	uint64_t ref[kOSAsyncRef64Count] = {0};
	IOReturn kr;

	if (atomic_exchange(&fn->waiter->armed, true))
		return 0; /* one wait outstanding is enough */
	ref[kIOAsyncCalloutFuncIndex] = (io_user_reference_t)(uintptr_t)waiter_completed;
	ref[kIOAsyncCalloutRefconIndex] = (io_user_reference_t)(uintptr_t)fn->waiter;
	kr = IOConnectCallAsyncMethod(fn->conn, SEL_WAIT_INTERRUPT, IONotificationPortGetMachPort(fn->slot->port),
				      ref, kOSAsyncRef64Count, NULL, 0, NULL, 0, NULL, NULL, NULL, NULL);
	if (kr != kIOReturnSuccess) {
		atomic_store(&fn->waiter->armed, false);
		return call_fail(hd, "WaitInterrupt", kr);
	}
	return 0;
}

static int set_nonblock_cloexec(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		return -errno;
	return 0;
}

/* ---- verbs ---- */

static int dv_identity(struct host_device *hd, struct hd_identity *out)
{
	struct darwin_fn *fn = to_dev(hd)->fn;
	uint64_t v[6];
	IOReturn kr = call(fn, SEL_GET_IDENTITY, NULL, 0, v, 6);

	if (kr != kIOReturnSuccess)
		return call_fail(hd, "GetIdentity", kr);
	out->bus = (uint8_t)v[0];
	out->device = (uint8_t)(v[1] & 0x1f);
	out->function = (uint8_t)(v[2] & 0x7);
	out->vendor_id = (uint16_t)v[3];
	out->device_id = (uint16_t)v[4];
	out->class_code = (uint32_t)(v[5] & 0xffffff);
	return 0;
}

static int dv_claim(struct host_device *hd)
{
	struct darwin_dev *dev = to_dev(hd);
	IOReturn kr;

	if (!dev->fn->claimed) {
		kr = call(dev->fn, SEL_CLAIM, NULL, 0, NULL, 0);
		if (kr != kIOReturnSuccess)
			return call_fail(hd, "Claim", kr);
		dev->fn->claimed = true;
	}
	dev->claimed = true;
	return 0;
}

/* The dext has no un-claim: it drops the claim when the connection closes. */
static void dv_release(struct host_device *hd)
{
	to_dev(hd)->claimed = false;
}

static int check_config(struct host_device *hd, uint32_t offset, unsigned width)
{
	if (width != 1 && width != 2 && width != 4)
		return hd_fail(hd, -EINVAL, "config access width %u (must be 1, 2 or 4)", width);
	if (offset % width || offset > PCI_CONFIG_SIZE - width)
		return hd_fail(hd, -EINVAL, "config access at 0x%x width %u is unaligned or beyond 4 KiB", offset,
			       width);
	return 0;
}

static int dv_config_read(struct host_device *hd, uint32_t offset, unsigned width, uint32_t *value)
{
	uint64_t in[2] = {offset, width}, v;
	IOReturn kr;
	int rc = check_config(hd, offset, width);

	if (rc)
		return rc;
	kr = call(to_dev(hd)->fn, SEL_CONFIG_READ, in, 2, &v, 1);
	if (kr != kIOReturnSuccess)
		return call_fail(hd, "ConfigRead", kr);
	*value = (uint32_t)v;
	return 0;
}

static int dv_config_write(struct host_device *hd, uint32_t offset, unsigned width, uint32_t value)
{
	uint64_t in[3] = {offset, width, value};
	IOReturn kr;
	int rc = check_config(hd, offset, width);

	if (rc)
		return rc;
	kr = call(to_dev(hd)->fn, SEL_CONFIG_WRITE, in, 3, NULL, 0);
	if (kr != kIOReturnSuccess)
		return call_fail(hd, "ConfigWrite", kr);
	return 0;
}

static int dv_config_read_block(struct host_device *hd, uint32_t offset, void *buf, size_t len)
{
	uint8_t *dst = buf;

	if (offset > PCI_CONFIG_SIZE || len > PCI_CONFIG_SIZE - offset)
		return hd_fail(hd, -EINVAL, "config block 0x%x+%zu lies beyond the 4 KiB config space", offset, len);
	while (len) {
		unsigned width = (offset % 4 == 0 && len >= 4) ? 4 : 1;
		uint32_t v;
		int rc = dv_config_read(hd, offset, width, &v);

		if (rc)
			return rc;
		for (unsigned i = 0; i < width; i++)
			dst[i] = (uint8_t)(v >> (8 * i)); /* config space is little-endian */
		dst += width;
		offset += width;
		len -= width;
	}
	return 0;
}

/* Selector 10, cached: the answer does not change while the device is bound. */
static int query_bar(struct host_device *hd, unsigned bar)
{
	struct darwin_fn *fn = to_dev(hd)->fn;
	uint64_t in = bar, v[3];
	IOReturn kr;

	if (bar >= HD_NUM_BARS)
		return hd_fail(hd, -EINVAL, "BAR %u does not exist (0..5)", bar);
	if (fn->bar_known[bar])
		return 0;
	kr = call(fn, SEL_BAR_INFO, &in, 1, v, 3);
	if (kr == kIOReturnNotFound || kr == kIOReturnBadArgument) {
		v[0] = 0; /* not implemented */
		v[1] = 0;
		v[2] = 0;
	} else if (kr != kIOReturnSuccess) {
		return call_fail(hd, "GetBARInfo", kr);
	}
	if (v[1] && (v[1] & (v[1] - 1)))
		return hd_fail(hd, -EIO, "dext reports BAR %u size 0x%" PRIx64 ", not a power of two", bar, v[1]);
	fn->bar_mem_index[bar] = (uint8_t)v[0];
	fn->bar_size[bar] = v[1];
	fn->bar_type_bits[bar] = (uint8_t)v[2];
	fn->bar_known[bar] = true;
	return 0;
}

static int dv_bar_info(struct host_device *hd, unsigned bar, struct hd_bar_info *out)
{
	struct darwin_fn *fn = to_dev(hd)->fn;
	int rc = query_bar(hd, bar);

	if (rc)
		return rc;
	memset(out, 0, sizeof(*out));
	out->size = fn->bar_size[bar];
	if (!out->size) {
		out->type = HD_BAR_UNUSED;
		return 0;
	}
	if (fn->bar_type_bits[bar] & BAR_TYPE_IO)
		out->type = HD_BAR_IO;
	else
		out->type = (fn->bar_type_bits[bar] & BAR_TYPE_64BIT) ? HD_BAR_MEM64 : HD_BAR_MEM32;
	out->prefetchable = out->type != HD_BAR_IO && (fn->bar_type_bits[bar] & BAR_TYPE_PREFETCH);
	return 0;
}

static int dv_bar_map(struct host_device *hd, unsigned bar, volatile void **out)
{
	struct darwin_fn *fn = to_dev(hd)->fn;
	struct hd_bar_info info;
	mach_vm_address_t addr = 0;
	mach_vm_size_t size = 0;
	IOOptionBits options = kIOMapAnywhere;
	IOReturn kr;
	int rc = dv_bar_info(hd, bar, &info);

	if (rc)
		return rc;
	if (info.type == HD_BAR_UNUSED)
		return hd_fail(hd, -EINVAL, "BAR %u is not implemented", bar);
	if (info.type == HD_BAR_IO)
		return hd_fail(hd, -EOPNOTSUPP, "BAR %u is an I/O BAR; use MMIO read/write", bar);
	if (fn->bar_map[bar]) {
		*out = (volatile void *)(uintptr_t)fn->bar_map[bar];
		return 0;
	}
	/* Write-combining only where the device allows it; the mapping is never executable. */
	if (info.prefetchable)
		options |= kIOMapWriteCombineCache;
	kr = IOConnectMapMemory64(fn->conn, MEMORY_TYPE_BAR0 + bar, mach_task_self(), &addr, &size, options);
	if (kr == kIOReturnUnsupported)
		return hd_fail(hd, -EOPNOTSUPP, "the dext cannot map BAR %u; falling back to MMIO read/write", bar);
	if (kr != kIOReturnSuccess)
		return call_fail(hd, "IOConnectMapMemory64", kr);
	if (!addr || size < info.size) {
		IOConnectUnmapMemory64(fn->conn, MEMORY_TYPE_BAR0 + bar, mach_task_self(), addr);
		return hd_fail(hd, -EIO, "the dext mapped 0x%" PRIx64 " bytes of BAR %u, which has 0x%" PRIx64,
			       (uint64_t)size, bar, info.size);
	}
	fn->bar_map[bar] = addr;
	*out = (volatile void *)(uintptr_t)addr;
	return 0;
}

static int check_mmio(struct host_device *hd, unsigned bar, uint64_t offset, unsigned width)
{
	struct darwin_fn *fn = to_dev(hd)->fn;
	int rc = query_bar(hd, bar);

	if (rc)
		return rc;
	if (width != 1 && width != 2 && width != 4 && width != 8)
		return hd_fail(hd, -EINVAL, "MMIO width %u (must be 1, 2, 4 or 8)", width);
	if (!fn->bar_size[bar])
		return hd_fail(hd, -EINVAL, "BAR %u is not implemented", bar);
	if (offset % width || width > fn->bar_size[bar] || offset > fn->bar_size[bar] - width)
		return hd_fail(hd, -EINVAL, "MMIO at BAR %u + 0x%" PRIx64 " width %u is unaligned or beyond the BAR",
			       bar, offset, width);
	return 0;
}

static int dv_mmio_read(struct host_device *hd, unsigned bar, uint64_t offset, unsigned width, uint64_t *value)
{
	struct darwin_fn *fn = to_dev(hd)->fn;
	IOReturn kr;
	int rc = check_mmio(hd, bar, offset, width);

	if (rc)
		return rc;
	uint64_t in[3] = {fn->bar_mem_index[bar], offset, width};
	kr = call(fn, SEL_MMIO_READ, in, 3, value, 1);
	if (kr != kIOReturnSuccess)
		return call_fail(hd, "MMIORead", kr);
	return 0;
}

static int dv_mmio_write(struct host_device *hd, unsigned bar, uint64_t offset, unsigned width, uint64_t value)
{
	struct darwin_fn *fn = to_dev(hd)->fn;
	IOReturn kr;
	int rc = check_mmio(hd, bar, offset, width);

	if (rc)
		return rc;
	uint64_t in[4] = {fn->bar_mem_index[bar], offset, width, value};
	kr = call(fn, SEL_MMIO_WRITE, in, 4, NULL, 0);
	if (kr != kIOReturnSuccess)
		return call_fail(hd, "MMIOWrite", kr);
	return 0;
}

static int dma_cmp(const void *a, const void *b)
{
	uint64_t ka = ((const struct dma_entry *)a)->key, kb = ((const struct dma_entry *)b)->key;

	return ka < kb ? -1 : ka > kb;
}

static void note_failure(struct darwin_fn *fn)
{
	fn->stats.register_failures++;
}

static int dv_dma_register(struct host_device *hd, uint64_t key, void *host_addr, uint64_t size, uint64_t *bus_addr,
			   uint64_t *bus_len)
{
	struct darwin_fn *fn = to_dev(hd)->fn;
	uint64_t in[3] = {key, (uint64_t)(uintptr_t)host_addr, size}, v[3];
	struct dma_entry *e;
	IOReturn kr;

	if (!host_addr || !size || (uint64_t)(uintptr_t)host_addr > UINT64_MAX - size) {
		note_failure(fn);
		return hd_fail(hd, -EINVAL, "DMA region %p+0x%" PRIx64 " is empty or wraps", host_addr, size);
	}
	e = malloc(sizeof(*e));
	if (!e) {
		note_failure(fn);
		return hd_fail(hd, -ENOMEM, "out of memory tracking a DMA region");
	}
	kr = call(fn, SEL_REGISTER_DMA, in, 3, v, 3);
	if (kr != kIOReturnSuccess) {
		free(e);
		note_failure(fn);
		switch (kr) {
		case kIOReturnStillOpen:
			return hd_fail(hd, -EEXIST, "DMA key 0x%" PRIx64 " is already registered", key);
		case kIOReturnNotAligned:
			return hd_fail(hd, -ERANGE,
				       "DMA region 0x%" PRIx64 " bytes does not resolve to one contiguous bus segment "
				       "(kIOReturnNotAligned); register smaller pieces (at most 1.5 GiB each)",
				       size);
		case kIOReturnNoMemory:
		case kIOReturnNoResources:
		case kIOReturnNoSpace:
			return hd_fail(hd, -ENOSPC,
				       "the DART is full (%s): at most %u mappings and 1.5 GiB may be registered at once",
				       ioreturn_name(kr), DARWIN_DART_MAX_MAPPINGS);
		default:
			return call_fail(hd, "RegisterDMARegion", kr);
		}
	}
	if (v[0] != 1 || v[2] < size) {
		call(fn, SEL_UNREGISTER_DMA, &key, 1, NULL, 0);
		free(e);
		note_failure(fn);
		return hd_fail(hd, -ERANGE,
			       "the dext returned %" PRIu64 " bus segments (0x%" PRIx64 " bytes) for 0x%" PRIx64
			       " bytes; one contiguous segment is required",
			       v[0], v[2], size);
	}
	e->key = key;
	e->size = size;
	void **node = tsearch(e, &fn->dma_tree, dma_cmp);
	if (!node) {
		call(fn, SEL_UNREGISTER_DMA, &key, 1, NULL, 0);
		free(e);
		note_failure(fn);
		return hd_fail(hd, -ENOMEM, "out of memory tracking a DMA region");
	}
	if (*node != e) {
		/* The dext accepted a live key twice: trust it, but count the key once. */
		log_warn("darwin: the dext registered live DMA key 0x%" PRIx64 " again", key);
		free(e);
		*bus_addr = v[1];
		*bus_len = v[2];
		return 0;
	}
	fn->stats.registers++;
	fn->stats.live_mappings++;
	fn->stats.live_bytes += size;
	if (fn->stats.live_mappings > fn->stats.peak_mappings)
		fn->stats.peak_mappings = fn->stats.live_mappings;
	if (fn->stats.live_bytes > fn->stats.peak_bytes)
		fn->stats.peak_bytes = fn->stats.live_bytes;
	*bus_addr = v[1];
	*bus_len = v[2];
	return 0;
}

static int dv_dma_unregister(struct host_device *hd, uint64_t key)
{
	struct darwin_fn *fn = to_dev(hd)->fn;
	struct dma_entry probe = {.key = key}, *e;
	void **found;
	IOReturn kr = call(fn, SEL_UNREGISTER_DMA, &key, 1, NULL, 0);

	if (kr == kIOReturnNotFound)
		return hd_fail(hd, -ENOENT, "DMA key 0x%" PRIx64 " is not registered", key);
	if (kr != kIOReturnSuccess)
		return call_fail(hd, "UnregisterDMARegion", kr);
	found = tfind(&probe, &fn->dma_tree, dma_cmp);
	if (found) {
		e = *found;
		tdelete(&probe, &fn->dma_tree, dma_cmp);
		fn->stats.live_mappings--;
		fn->stats.live_bytes -= e->size;
		free(e);
	}
	fn->stats.unregisters++;
	return 0;
}

static int dv_irq_setup(struct host_device *hd, unsigned *nvectors)
{
	struct darwin_fn *fn = to_dev(hd)->fn;
	uint64_t n;
	IOReturn kr = call(fn, SEL_SETUP_INTERRUPTS, NULL, 0, &n, 1);
	int rc;

	if (kr != kIOReturnSuccess)
		return call_fail(hd, "SetupInterrupts", kr);
	if (n > HD_MAX_VECTORS)
		return hd_fail(hd, -EIO, "the dext reports %" PRIu64 " vectors; at most %d are possible", n,
			       HD_MAX_VECTORS);
	fn->irq_ready = true;
	rc = arm_wait(hd, fn);
	if (rc)
		return rc;
	*nvectors = (unsigned)n;
	return 0;
}

static int dv_irq_set_mask(struct host_device *hd, const uint64_t mask[HD_IRQ_WORDS])
{
	IOReturn kr = call(to_dev(hd)->fn, SEL_SET_IRQ_MASK, mask, HD_IRQ_WORDS, NULL, 0);

	if (kr != kIOReturnSuccess)
		return call_fail(hd, "SetIRQMask", kr);
	return 0;
}

static int dv_irq_read_pending(struct host_device *hd, uint64_t pending[HD_IRQ_WORDS])
{
	struct darwin_fn *fn = to_dev(hd)->fn;
	IOReturn kr = call(fn, SEL_CHECK_INTERRUPT, NULL, 0, pending, HD_IRQ_WORDS);

	if (kr != kIOReturnSuccess)
		return call_fail(hd, "CheckInterrupt", kr);
	/*
	 * After the read: a vector that fires from now on completes the new
	 * wait.  If re-arming fails the bits just read are still good; the
	 * next read tries again.
	 */
	if (fn->irq_ready && arm_wait(hd, fn))
		log_warn("darwin: %s; no interrupt wake-up until the next read", host_device_error(hd));
	return 0;
}

static int dv_irq_wakeup_fd(struct host_device *hd)
{
	return to_dev(hd)->fn->wake_read_fd;
}

static int dv_reset(struct host_device *hd)
{
	IOReturn kr = call(to_dev(hd)->fn, SEL_RESET, NULL, 0, NULL, 0);

	if (kr != kIOReturnSuccess)
		return call_fail(hd, "ResetDevice", kr);
	return 0;
}

static int dv_dma_stats(struct host_device *hd, struct hd_dma_stats *out)
{
	*out = to_dev(hd)->fn->stats;
	return 0;
}

/* ---- opening and sharing ---- */

static void flush_queue(void *unused)
{
	(void)unused;
}

static void slot_put(struct darwin_slot *slot)
{
	struct darwin_slot **pp;

	if (--slot->refs)
		return;
	for (pp = &slots; *pp; pp = &(*pp)->next) {
		if (*pp == slot) {
			*pp = slot->next;
			break;
		}
	}
	/* No completion can start after the port is gone; wait for one in flight. */
	IONotificationPortDestroy(slot->port);
	dispatch_sync_f(slot->queue, NULL, flush_queue);
	dispatch_release(slot->queue);
	while (slot->retired) {
		struct darwin_waiter *w = slot->retired;

		slot->retired = w->next_retired;
		pthread_mutex_destroy(&w->lock);
		free(w);
	}
	free(slot);
}

static struct darwin_slot *slot_get(uint8_t bus, uint8_t device, const char *host_root, char *err, size_t errlen)
{
	struct darwin_slot *slot;

	for (slot = slots; slot; slot = slot->next) {
		if (slot->bus == bus && slot->device == device && !strcmp(slot->host_root, host_root)) {
			slot->refs++;
			return slot;
		}
	}
	slot = calloc(1, sizeof(*slot));
	if (!slot) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	slot->bus = bus;
	slot->device = device;
	snprintf(slot->host_root, sizeof(slot->host_root), "%s", host_root);
	slot->port = IONotificationPortCreate(MAIN_PORT);
	slot->queue = dispatch_queue_create("vfio-apple.dext-interrupts", DISPATCH_QUEUE_SERIAL);
	if (!slot->port || !slot->queue) {
		if (slot->port)
			IONotificationPortDestroy(slot->port);
		if (slot->queue)
			dispatch_release(slot->queue);
		free(slot);
		snprintf(err, errlen, "cannot create an IOKit notification port for interrupts");
		return NULL;
	}
	IONotificationPortSetDispatchQueue(slot->port, slot->queue);
	slot->refs = 1;
	slot->next = slots;
	slots = slot;
	return slot;
}

static void fn_put(struct darwin_fn *fn)
{
	struct darwin_slot *slot = fn->slot;

	if (--fn->refs)
		return;
	slot->fns[fn->ident.function] = NULL;
	for (unsigned bar = 0; bar < HD_NUM_BARS; bar++) {
		if (fn->bar_map[bar])
			IOConnectUnmapMemory64(fn->conn, MEMORY_TYPE_BAR0 + bar, mach_task_self(), fn->bar_map[bar]);
	}
	/* Closing drops the claim and every DMA registration in the dext, and aborts the wait. */
	IOServiceClose(fn->conn);
	pthread_mutex_lock(&fn->waiter->lock);
	close(fn->waiter->write_fd);
	fn->waiter->write_fd = -1;
	pthread_mutex_unlock(&fn->waiter->lock);
	fn->waiter->next_retired = slot->retired;
	slot->retired = fn->waiter;
	close(fn->wake_read_fd);
	/* tdestroy is GNU-only: take the root apart node by node. */
	while (fn->dma_tree) {
		struct dma_entry *e = *(struct dma_entry **)fn->dma_tree;

		tdelete(e, &fn->dma_tree, dma_cmp);
		free(e);
	}
	free(fn);
	slot_put(slot);
}

static struct darwin_fn *fn_create(struct darwin_slot *slot, io_connect_t conn, uint64_t entry_id,
				   const struct hd_identity *ident, char *err, size_t errlen)
{
	struct darwin_fn *fn = calloc(1, sizeof(*fn));
	struct darwin_waiter *w = calloc(1, sizeof(*w));
	int p[2] = {-1, -1};

	if (!fn || !w || pipe(p) < 0 || set_nonblock_cloexec(p[0]) || set_nonblock_cloexec(p[1])) {
		snprintf(err, errlen, "cannot create the interrupt wake-up pipe: %s", strerror(errno));
		if (p[0] >= 0) {
			close(p[0]);
			close(p[1]);
		}
		free(fn);
		free(w);
		return NULL;
	}
	pthread_mutex_init(&w->lock, NULL);
	w->write_fd = p[1];
	atomic_init(&w->armed, false);
	fn->waiter = w;
	fn->wake_read_fd = p[0];
	fn->slot = slot;
	fn->refs = 1;
	fn->conn = conn;
	fn->entry_id = entry_id;
	fn->ident = *ident;
	slot->fns[ident->function] = fn;
	return fn;
}

/* Name of the topmost IOPCIDevice above the service: tells Thunderbolt roots apart. */
static void find_host_root(io_service_t service, io_name_t root)
{
	io_registry_entry_t entry = service, parent;

	root[0] = '\0';
	while (IORegistryEntryGetParentEntry(entry, kIOServicePlane, &parent) == KERN_SUCCESS) {
		if (entry != service)
			IOObjectRelease(entry);
		entry = parent;
		if (IOObjectConformsTo(entry, "IOPCIDevice")) {
			io_name_t name;

			if (IORegistryEntryGetName(entry, name) == KERN_SUCCESS)
				memcpy(root, name, sizeof(name));
		}
	}
	if (entry != service)
		IOObjectRelease(entry);
}

static bool is_dext_service(io_service_t service)
{
	CFTypeRef cls = IORegistryEntryCreateCFProperty(service, CFSTR("IOUserClass"), kCFAllocatorDefault, 0);
	bool match = false;

	if (!cls)
		return false;
	if (CFGetTypeID(cls) == CFStringGetTypeID())
		match = CFEqual(cls, CFSTR(DEXT_USER_CLASS));
	CFRelease(cls);
	return match;
}

static IOReturn read_identity(io_connect_t conn, struct hd_identity *id)
{
	uint64_t v[6];
	uint32_t n = 6;
	IOReturn kr = IOConnectCallScalarMethod(conn, SEL_GET_IDENTITY, NULL, 0, v, &n);

	if (kr != kIOReturnSuccess)
		return kr;
	if (n != 6)
		return kIOReturnInternalError;
	id->bus = (uint8_t)v[0];
	id->device = (uint8_t)(v[1] & 0x1f);
	id->function = (uint8_t)(v[2] & 0x7);
	id->vendor_id = (uint16_t)v[3];
	id->device_id = (uint16_t)v[4];
	id->class_code = (uint32_t)(v[5] & 0xffffff);
	return kIOReturnSuccess;
}

static struct darwin_fn *find_open_fn(uint64_t entry_id)
{
	for (struct darwin_slot *s = slots; s; s = s->next) {
		for (unsigned f = 0; f < PCI_FUNCTIONS; f++) {
			if (s->fns[f] && s->fns[f]->entry_id == entry_id)
				return s->fns[f];
		}
	}
	return NULL;
}

struct wanted {
	unsigned bus, device, function;
	const char *host_root; /* NULL: any */
};

static int parse_spec(const char *spec, struct wanted *w)
{
	int used = 0;

	memset(w, 0, sizeof(*w));
	if (sscanf(spec, "%2x:%2x.%1x%n", &w->bus, &w->device, &w->function, &used) != 3 || w->device > 0x1f ||
	    w->function > 7)
		return -EINVAL;
	if (spec[used] == '@' && spec[used + 1])
		w->host_root = spec + used + 1;
	else if (spec[used])
		return -EINVAL;
	return 0;
}

/*
 * Walk every dext service; open the ones not yet open to ask their identity.
 * Returns the unique match (already open: *shared; newly opened: *conn).
 */
static int find_function(const struct wanted *w, struct darwin_fn **shared, io_connect_t *conn, uint64_t *entry_id,
			 struct hd_identity *ident, io_name_t root, char *err, size_t errlen)
{
	io_iterator_t iter;
	io_service_t service;
	unsigned matches = 0, services = 0;
	char roots[192] = "";
	kern_return_t kr;

	*shared = NULL;
	*conn = 0;
	kr = IOServiceGetMatchingServices(MAIN_PORT, IOServiceMatching(DEXT_SERVICE_CLASS), &iter);
	if (kr != KERN_SUCCESS) {
		snprintf(err, errlen, "cannot list IOKit services: %s (0x%08x)", ioreturn_name(kr), (unsigned)kr);
		return -EIO;
	}
	while ((service = IOIteratorNext(iter))) {
		struct darwin_fn *open_fn = NULL;
		io_connect_t c = 0;
		struct hd_identity id;
		io_name_t this_root;
		uint64_t eid = 0;

		if (!is_dext_service(service)) {
			IOObjectRelease(service);
			continue;
		}
		services++;
		IORegistryEntryGetRegistryEntryID(service, &eid);
		find_host_root(service, this_root);
		if (w->host_root && strcmp(w->host_root, this_root)) {
			IOObjectRelease(service); /* another root: no need to ask its identity */
			continue;
		}
		open_fn = find_open_fn(eid);
		if (open_fn) {
			id = open_fn->ident;
		} else {
			kr = IOServiceOpen(service, mach_task_self(), 0, &c);
			if (kr == KERN_SUCCESS && read_identity(c, &id) != kIOReturnSuccess) {
				IOServiceClose(c);
				kr = kIOReturnError;
			}
			if (kr != KERN_SUCCESS) {
				log_debug("darwin: skipping a dext service that cannot be opened (0x%08x)", (unsigned)kr);
				IOObjectRelease(service);
				continue;
			}
		}
		IOObjectRelease(service);
		if (id.bus != w->bus || id.device != w->device || id.function != w->function) {
			if (c)
				IOServiceClose(c);
			continue;
		}
		matches++;
		size_t rl = strlen(roots);
		snprintf(roots + rl, sizeof(roots) - rl, "%s\"%s\"", rl ? ", " : "", this_root);
		if (matches > 1) {
			if (c)
				IOServiceClose(c);
			continue;
		}
		*shared = open_fn;
		*conn = c;
		*entry_id = eid;
		*ident = id;
		memcpy(root, this_root, sizeof(this_root));
	}
	IOObjectRelease(iter);
	if (matches == 1)
		return 0;
	if (*conn)
		IOServiceClose(*conn);
	*conn = 0;
	*shared = NULL;
	if (matches > 1) {
		snprintf(err, errlen,
			 "%02x:%02x.%x exists under several host roots (%s); add @ROOT to choose one, e.g. %02x:%02x.%x@NAME",
			 w->bus, w->device, w->function, roots, w->bus, w->device, w->function);
		return -EEXIST;
	}
	snprintf(err, errlen,
		 "no %s service for %02x:%02x.%x%s%s (%u dext services found): is the device connected and the "
		 "dext enabled and bound to it? (audio functions, class 0x04, are never bound)",
		 DEXT_USER_CLASS, w->bus, w->device, w->function, w->host_root ? " under host root " : "",
		 w->host_root ? w->host_root : "", services);
	return -ENODEV;
}

static void dv_destroy(struct host_device *hd);

static const struct host_device_ops darwin_ops = {
	.identity = dv_identity,
	.claim = dv_claim,
	.release = dv_release,
	.config_read = dv_config_read,
	.config_write = dv_config_write,
	.config_read_block = dv_config_read_block,
	.bar_info = dv_bar_info,
	.bar_map = dv_bar_map,
	.mmio_read = dv_mmio_read,
	.mmio_write = dv_mmio_write,
	.dma_register = dv_dma_register,
	.dma_unregister = dv_dma_unregister,
	.irq_setup = dv_irq_setup,
	.irq_set_mask = dv_irq_set_mask,
	.irq_read_pending = dv_irq_read_pending,
	.irq_wakeup_fd = dv_irq_wakeup_fd,
	.reset = dv_reset,
	.dma_stats = dv_dma_stats,
	.destroy = dv_destroy,
};

static void dv_destroy(struct host_device *hd)
{
	struct darwin_dev *dev = to_dev(hd);

	pthread_mutex_lock(&slots_lock);
	fn_put(dev->fn);
	pthread_mutex_unlock(&slots_lock);
	free(dev);
}

struct host_device *darwin_open(const char *spec, char *err, size_t errlen)
{
	struct wanted w;
	struct darwin_fn *fn = NULL;
	struct darwin_slot *slot;
	struct darwin_dev *dev;
	struct hd_identity ident;
	io_connect_t conn = 0;
	io_name_t root;
	uint64_t entry_id = 0;
	int rc;

	if (!spec || parse_spec(spec, &w)) {
		snprintf(err, errlen, "device \"%s\" is not BB:DD.F or BB:DD.F@ROOT (hex bus, device, function)",
			 spec ? spec : "");
		return NULL;
	}
	dev = calloc(1, sizeof(*dev));
	if (!dev) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_lock(&slots_lock);
	rc = find_function(&w, &fn, &conn, &entry_id, &ident, root, err, errlen);
	if (rc)
		goto fail;
	if (fn) {
		fn->refs++;
	} else {
		slot = slot_get(ident.bus, ident.device, root, err, errlen);
		if (!slot) {
			IOServiceClose(conn);
			goto fail;
		}
		fn = fn_create(slot, conn, entry_id, &ident, err, errlen);
		if (!fn) {
			IOServiceClose(conn);
			slot_put(slot);
			goto fail;
		}
	}
	pthread_mutex_unlock(&slots_lock);
	dev->fn = fn;
	dev->hd.ops = &darwin_ops;
	dev->hd.limits.max_bytes = DARWIN_DART_MAX_BYTES;
	dev->hd.limits.max_mappings = DARWIN_DART_MAX_MAPPINGS;
	dev->hd.limits.granule = DARWIN_DART_GRANULE;
	dev->hd.identity_dma = false; /* the DART always translates */
	log_info("darwin: opened %02x:%02x.%x (%04x:%04x) under host root \"%s\"", ident.bus, ident.device,
		 ident.function, ident.vendor_id, ident.device_id, fn->slot->host_root);
	return &dev->hd;
fail:
	pthread_mutex_unlock(&slots_lock);
	free(dev);
	return NULL;
}
