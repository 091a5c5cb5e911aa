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
 *
 * Removal (hostdev/host_device.h, "Surprise removal").  The dext releases
 * a pending wait without completing it when its user client stops, so no
 * completion ever says "gone".  An interest notification on the service
 * (kIOMessageServiceIsTerminated), delivered on the same queue, marks the
 * function dead and writes to the same pipe; a dead port
 * (MACH_SEND_INVALID_DEST), a dead dext (MIG_SERVER_DIED) or a terminated
 * service (kIOReturnNotAttached) seen by any call does the same, and so
 * does a device that stopped answering (kIOReturnNoDevice,
 * kIOReturnNotResponding, kIOReturnOffline from any verb: the function fell
 * off the bus while the dext still runs).  A dead function answers every
 * verb with -ENODEV without calling the dext, and the host_device is marked
 * gone (hd_mark_gone) at the first such answer, which the wake-up makes
 * come at once (irq_read_pending).  UnregisterDMARegion is the exception:
 * while the connection itself works (the device, not the dext, is gone) it
 * is still sent, so the DART lets go; once the connection is dead the
 * registration died with it, and it is only forgotten here.  Either way it
 * returns 0, and the live counters reach 0.
 *
 * The dext checks none of the DART's limits and can panic the host from
 * PrepareForDMA when the DART refuses; registration is refused here first
 * (-ENOSPC) once live bytes or mappings would pass the platform's limits.
 */
#include "darwin_backend.h"
#include "darwin_registry.h"

#include <CoreFoundation/CoreFoundation.h>
#include <IOKit/IOKitLib.h>
#include <IOKit/IOMessage.h>
#include <dispatch/dispatch.h>
#include <mach/mach.h>
#include <mach/mach_vm.h>
#include <mach/mig_errors.h>

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

#define DEXT_USER_CLASS DARWIN_DEXT_USER_CLASS
#define DEXT_SERVICE_CLASS "IOUserService"
#define PCI_CONFIG_SIZE 4096u
#define PCI_FUNCTIONS 8

enum dext_selector {
	SEL_GET_IDENTITY = 0,
	SEL_CLAIM = 1,
	SEL_REGISTER_DMA = 5,
	SEL_UNREGISTER_DMA = 6,
	SEL_PROBE_DMA = 7,
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
	atomic_bool dead;      /* the function is gone: terminated, dead port or dext, or not answering */
	atomic_bool conn_dead; /* ... and the connection with it: nothing can be sent any more */
	char reason[128];      /* why, set once with dead (under lock) */
	struct darwin_waiter *next_retired;
};

/* Copy-on-write check of registered memory (docs/macos.md, "Memory from another process"). */
enum cow_state { COW_UNCHECKED = 0, COW_OK, COW_BROKEN };

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
	unsigned nvectors; /* selector 13 answers once per connection (StillOpen after) */
	struct darwin_waiter *waiter;
	int wake_read_fd;
	io_object_t interest; /* kIOMessageServiceIsTerminated notification, or 0 */
	enum cow_state cow;

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
	case kIOReturnOverrun: return "kIOReturnOverrun";
	case MACH_SEND_INVALID_DEST: return "MACH_SEND_INVALID_DEST";
	case MIG_SERVER_DIED: return "MIG_SERVER_DIED";
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
	case kIOReturnIPCError:
	case MACH_SEND_INVALID_DEST:
	case MIG_SERVER_DIED: return -ENODEV;
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
	case kIOReturnNotResponding:
	case kIOReturnIPCError:
	case MACH_SEND_INVALID_DEST:
	case MIG_SERVER_DIED:
		return "; the device is gone (unplugged, or the dext was terminated or crashed): close it and open it "
		       "again once it is back";
	case kIOReturnNotPrivileged:
	case kIOReturnNotPermitted:
		return "; the dext refused this process: it needs the com.apple.developer.driverkit.userclient-access "
		       "entitlement (sudo does not help; docs/macos.md)";
	case kIOReturnNotReady: return "; set up interrupts first";
	default: return "";
	}
}

/*
 * Returned by call() for a function already known to be dead, without a
 * call into the dext.  Not an IOReturn any dext or IOKit produces.
 */
#define DARWIN_GONE ((IOReturn)0xe00a0001)

/* Transport errors: the dext's service, its port or its process is gone (the connection with it). */
static bool conn_gone(IOReturn kr)
{
	return kr == kIOReturnNotAttached || kr == MACH_SEND_INVALID_DEST || kr == MIG_SERVER_DIED;
}

/* Final: the function is gone for good (marked dead at the first one). */
static bool is_final(IOReturn kr)
{
	return conn_gone(kr) || kr == kIOReturnNoDevice || kr == kIOReturnNotResponding;
}

/* The dext or the device could not be reached (final, or an IPC failure that may pass). */
static bool is_gone(IOReturn kr)
{
	return kr == DARWIN_GONE || is_final(kr) || kr == kIOReturnIPCError || kr == kIOReturnOffline;
}

static const char *waiter_reason(struct darwin_waiter *w);
static bool fn_dead(const struct darwin_fn *fn);
static void note_gone(struct darwin_fn *fn, uint32_t selector, IOReturn kr);

static int call_fail(struct host_device *hd, const char *what, IOReturn kr)
{
	struct darwin_fn *fn = ((struct darwin_dev *)hd)->fn;

	if (kr == DARWIN_GONE) {
		hd_mark_gone(hd, "%s", waiter_reason(fn->waiter));
		return hd_fail(hd, -ENODEV, "dext %s: the device is gone (%s); close it and open it again once it is back",
			       what, waiter_reason(fn->waiter));
	}
	if (is_final(kr)) {
		/* call() marked it dead already; a call made without it (map, wait) is marked here. */
		if (!fn_dead(fn))
			note_gone(fn, UINT32_MAX, kr);
		hd_mark_gone(hd, "%s", waiter_reason(fn->waiter));
	}
	return hd_fail(hd, ioreturn_errno(kr), "dext %s failed: %s (0x%08x)%s", what, ioreturn_name(kr),
		       (unsigned)kr, ioreturn_hint(kr));
}

/* Wake the event loop: one byte in the pipe (a full pipe already means "wake up"). */
static void waiter_wake(struct darwin_waiter *w)
{
	char byte = 1;

	if (w->write_fd >= 0) {
		ssize_t n = write(w->write_fd, &byte, 1);
		(void)n;
	}
}

/*
 * The function is gone for good: every verb fails from now on, and the
 * event loop learns it at once.  conn: the connection is dead too.  Any
 * thread (the interest notification comes on the slot's queue).
 */
static void mark_dead(struct darwin_waiter *w, bool conn, const char *reason)
{
	pthread_mutex_lock(&w->lock);
	if (conn)
		atomic_store(&w->conn_dead, true);
	if (!atomic_load(&w->dead)) {
		snprintf(w->reason, sizeof(w->reason), "%s", reason);
		atomic_store(&w->dead, true);
		log_warn("darwin: the device is gone: %s", reason);
		waiter_wake(w);
	}
	pthread_mutex_unlock(&w->lock);
}

static const char *waiter_reason(struct darwin_waiter *w)
{
	/* Written once, before dead is set, under the lock; read after dead was seen. */
	return atomic_load(&w->dead) && w->reason[0] ? w->reason : "the device is gone";
}

static bool fn_dead(const struct darwin_fn *fn)
{
	return atomic_load(&fn->waiter->dead);
}

static const char *const selector_names[] = {
	[SEL_GET_IDENTITY] = "GetIdentity", [SEL_CLAIM] = "Claim",
	[SEL_REGISTER_DMA] = "RegisterDMARegion", [SEL_UNREGISTER_DMA] = "UnregisterDMARegion",
	[SEL_PROBE_DMA] = "ProbeDMARegion", [SEL_CONFIG_READ] = "ConfigRead", [SEL_CONFIG_WRITE] = "ConfigWrite",
	[SEL_BAR_INFO] = "GetBARInfo", [SEL_MMIO_READ] = "MMIORead", [SEL_MMIO_WRITE] = "MMIOWrite",
	[SEL_SETUP_INTERRUPTS] = "SetupInterrupts", [SEL_CHECK_INTERRUPT] = "CheckInterrupt",
	[SEL_WAIT_INTERRUPT] = "WaitInterrupt", [SEL_SET_IRQ_MASK] = "SetIRQMask", [SEL_RESET] = "ResetDevice",
};

/* A transport or device failure: the function is gone. */
static void note_gone(struct darwin_fn *fn, uint32_t selector, IOReturn kr)
{
	char why[128];
	const char *sel = selector < sizeof(selector_names) / sizeof(selector_names[0]) && selector_names[selector]
				  ? selector_names[selector]
				  : "a call";

	if (kr == kIOReturnNotAttached)
		snprintf(why, sizeof(why), "its dext service was terminated (unplugged, or the dext stopped)");
	else if (kr == MACH_SEND_INVALID_DEST || kr == MIG_SERVER_DIED)
		snprintf(why, sizeof(why), "the dext died (%s from %s)", ioreturn_name(kr), sel);
	else
		snprintf(why, sizeof(why), "the device stopped answering (%s from %s)", ioreturn_name(kr), sel);
	mark_dead(fn->waiter, conn_gone(kr), why);
}

static IOReturn call(struct darwin_fn *fn, uint32_t selector, const uint64_t *in, uint32_t nin, uint64_t *out,
		     uint32_t nout)
{
	uint32_t got = nout;
	IOReturn kr;

	/* Only UnregisterDMARegion still goes out to a function that is gone, while the connection works. */
	if (fn_dead(fn) && (selector != SEL_UNREGISTER_DMA || atomic_load(&fn->waiter->conn_dead)))
		return DARWIN_GONE;
	kr = IOConnectCallScalarMethod(fn->conn, selector, in, nin, out, out ? &got : NULL);
	if (is_final(kr))
		note_gone(fn, selector, kr);
	if (kr == kIOReturnSuccess && got != nout)
		return kIOReturnInternalError; /* an older or different dext */
	return kr;
}

/* ---- interrupt wake-up and removal ---- */

/*
 * The completion of WaitInterrupt.  The dext completes with no arguments,
 * so IOKitLib calls the IOAsyncCallback0 shape.  Any completion wakes the
 * loop (a spurious wake-up is allowed; selector 14 then tells).
 */
static void waiter_completed(void *refcon, IOReturn result)
{
	struct darwin_waiter *w = refcon;

	(void)result;
	pthread_mutex_lock(&w->lock);
	atomic_store(&w->armed, false);
	waiter_wake(w);
	pthread_mutex_unlock(&w->lock);
}

/* Interest notification on the dext service, on the slot's queue. */
static void service_interest(void *refcon, io_service_t service, uint32_t message, void *argument)
{
	(void)service;
	(void)argument;
	if (message == kIOMessageServiceIsTerminated)
		mark_dead(refcon, true, "its dext service was terminated (unplugged, or the dext stopped)");
}

static int arm_wait(struct host_device *hd, struct darwin_fn *fn)
{
	const IOAsyncCallback0 completion = waiter_completed; /* the compiler checks the shape */
	uint64_t ref[kOSAsyncRef64Count] = {0};
	IOReturn kr;

	if (fn_dead(fn))
		return call_fail(hd, "WaitInterrupt", DARWIN_GONE);
	if (atomic_exchange(&fn->waiter->armed, true))
		return 0; /* one wait outstanding is enough (a second would silently replace it) */
	ref[kIOAsyncCalloutFuncIndex] = (io_user_reference_t)(uintptr_t)completion;
	ref[kIOAsyncCalloutRefconIndex] = (io_user_reference_t)(uintptr_t)fn->waiter;
	kr = IOConnectCallAsyncMethod(fn->conn, SEL_WAIT_INTERRUPT, IONotificationPortGetMachPort(fn->slot->port),
				      ref, kOSAsyncRef64Count, NULL, 0, NULL, 0, NULL, NULL, NULL, NULL);
	if (kr != kIOReturnSuccess) {
		atomic_store(&fn->waiter->armed, false);
		if (is_final(kr))
			note_gone(fn, SEL_WAIT_INTERRUPT, kr);
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
	if (is_gone(kr))
		return call_fail(hd, "GetBARInfo", kr);
	if (kr != kIOReturnSuccess) {
		/*
		 * The dext passes PCIDriverKit's error for an unused BAR, or the
		 * upper half of a 64-bit one, through unchanged, and that code is
		 * undocumented: any failure but a transport one means "not
		 * implemented".
		 */
		log_debug("darwin: GetBARInfo(%u): %s (0x%08x): not implemented", bar, ioreturn_name(kr), (unsigned)kr);
		v[0] = 0;
		v[1] = 0;
		v[2] = 0;
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
	/*
	 * Uncached for every BAR, prefetchable or not, as Linux VFIO maps BARs:
	 * nothing here issues the barriers Normal-NC (write-combined) memory
	 * needs before a doorbell store.  Never executable.
	 */
	options |= kIOMapInhibitCache;
	if (fn_dead(fn))
		return call_fail(hd, "IOConnectMapMemory64", DARWIN_GONE);
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

/* Short enough for a host_device error (HD_ERROR_LEN); the log says more. */
static const char cow_refusal[] =
	"DMA memory is copy-on-write for the dext (shared from another process?): the device would not see it. "
	"The in-process devices are the supported path on macOS (docs/macos.md)";
static const char cow_explained[] =
	"a word written after registering guest memory was not what the dext read back through ProbeDMARegion: "
	"the memory is copy-on-write for the dext, so the device would not see the guest's memory nor the guest "
	"the device's writes; this happens when the memory was shared from another process (the VMM)";

/* Whether this process may write at addr (the check must never fault on read-only guest memory). */
static bool writable(const void *addr)
{
	mach_vm_address_t at = (mach_vm_address_t)(uintptr_t)addr;
	mach_vm_size_t size = 0;
	vm_region_basic_info_data_64_t info;
	mach_msg_type_number_t count = VM_REGION_BASIC_INFO_COUNT_64;
	mach_port_t object = MACH_PORT_NULL;

	if (mach_vm_region(mach_task_self(), &at, &size, VM_REGION_BASIC_INFO_64, (vm_region_info_t)&info, &count,
			   &object) != KERN_SUCCESS)
		return false;
	return at <= (mach_vm_address_t)(uintptr_t)addr && (info.protection & VM_PROT_WRITE);
}

/*
 * On the first registration of a connection: write a word of the region
 * (atomically, and put back unless something else wrote it meanwhile), read
 * it through the dext's descriptor (selector 7), and refuse loudly when the
 * dext does not see the write: the memory is copy-on-write for the device.
 * Returns 0 (checked, or postponed to a later region that has a writable,
 * aligned word) or a negative errno.
 */
static int cow_check(struct host_device *hd, struct darwin_fn *fn, uint64_t key, void *host_addr, uint64_t size)
{
	uintptr_t first = ((uintptr_t)host_addr + 7) & ~(uintptr_t)7;
	uint64_t offset = first - (uintptr_t)host_addr, in[2], seen = 0;
	uint64_t *word = (uint64_t *)first, was, mark;
	IOReturn kr;
	int tries;

	if (offset > size || size - offset < 8 || !writable(word))
		return 0; /* no word to try here: the next region will */
	for (tries = 0; tries < 4; tries++) {
		was = __atomic_load_n(word, __ATOMIC_ACQUIRE);
		mark = was ^ 0x5a17c0de0ddba11ull;
		if (__atomic_compare_exchange_n(word, &was, mark, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			break;
	}
	if (tries == 4)
		return 0; /* the word keeps changing under us: try on the next region */
	in[0] = key;
	in[1] = offset;
	kr = call(fn, SEL_PROBE_DMA, in, 2, &seen, 1);
	/* Put the word back unless someone wrote it meanwhile (their write wins). */
	__atomic_compare_exchange_n(word, &mark, was, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
	if (is_gone(kr))
		return call_fail(hd, "ProbeDMARegion", kr);
	if (kr != kIOReturnSuccess) {
		log_warn("darwin: cannot check DMA memory for copy-on-write: ProbeDMARegion failed: %s (0x%08x)",
			 ioreturn_name(kr), (unsigned)kr);
		fn->cow = COW_OK;
		return 0;
	}
	if (seen != mark) {
		fn->cow = COW_BROKEN;
		log_error("darwin: %s. %s", cow_explained, cow_refusal);
		return hd_fail(hd, -EFAULT, "%s", cow_refusal);
	}
	fn->cow = COW_OK;
	return 0;
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
	/*
	 * The dext caps nothing but its table (65,536 regions of up to 128
	 * chunks of 1.5 GiB), and PrepareForDMA can panic the host from inside
	 * IODARTMapper when the DART refuses: stay within the DART's limits
	 * here, before the dext is asked.
	 */
	if (fn->stats.live_mappings >= hd->limits.max_mappings || size > hd->limits.max_bytes ||
	    fn->stats.live_bytes > hd->limits.max_bytes - size) {
		note_failure(fn);
		return hd_fail(hd, -ENOSPC,
			       "DMA region of 0x%" PRIx64 " bytes refused: with %" PRIu64 " mappings and 0x%" PRIx64
			       " bytes live it would pass the DART's limits (%u mappings, 0x%" PRIx64 " bytes); the dext "
			       "does not check them and the host could panic",
			       size, fn->stats.live_mappings, fn->stats.live_bytes, hd->limits.max_mappings,
			       hd->limits.max_bytes);
	}
	if (fn->cow == COW_BROKEN) {
		note_failure(fn);
		return hd_fail(hd, -EFAULT, "%s", cow_refusal);
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
	if (fn->cow == COW_UNCHECKED) {
		int rc = cow_check(hd, fn, key, host_addr, size);

		if (rc) {
			IOReturn ukr = call(fn, SEL_UNREGISTER_DMA, &key, 1, NULL, 0);

			if (ukr != kIOReturnSuccess)
				log_warn("darwin: unregistering DMA key 0x%" PRIx64 " after the copy-on-write check: %s", key,
					 ioreturn_name(ukr));
			tdelete(e, &fn->dma_tree, dma_cmp);
			free(e);
			note_failure(fn);
			return rc;
		}
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

	if (kr == DARWIN_GONE || is_final(kr)) {
		/*
		 * The function (and with a dead connection, the client) is gone:
		 * the registration went with it.  Forget it; 0 for a key we held.
		 */
		hd_mark_gone(hd, "%s", waiter_reason(fn->waiter));
		if (!tfind(&probe, &fn->dma_tree, dma_cmp))
			return hd_fail(hd, -ENOENT, "DMA key 0x%" PRIx64 " is not registered", key);
		kr = kIOReturnSuccess;
	}
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

/*
 * Selector 13 once per connection: the dext answers a second call on the
 * same client with kIOReturnStillOpen, so the vector count is kept.  Its
 * enable mask starts all ones; the interface (and the simulator) start with
 * every vector disabled until irq_set_mask, so clear it here.
 */
static int dv_irq_setup(struct host_device *hd, unsigned *nvectors)
{
	struct darwin_fn *fn = to_dev(hd)->fn;
	uint64_t n, none[HD_IRQ_WORDS] = {0};
	IOReturn kr;
	int rc;

	if (!fn->irq_ready) {
		kr = call(fn, SEL_SETUP_INTERRUPTS, NULL, 0, &n, 1);
		if (kr != kIOReturnSuccess)
			return call_fail(hd, "SetupInterrupts", kr);
		if (n > HD_MAX_VECTORS)
			return hd_fail(hd, -EIO, "the dext reports %" PRIu64 " vectors; at most %d are possible", n,
				       HD_MAX_VECTORS);
		kr = call(fn, SEL_SET_IRQ_MASK, none, HD_IRQ_WORDS, NULL, 0);
		if (kr != kIOReturnSuccess)
			return call_fail(hd, "SetIRQMask", kr);
		fn->nvectors = (unsigned)n;
		fn->irq_ready = true;
	}
	rc = arm_wait(hd, fn);
	if (rc)
		return rc;
	*nvectors = fn->nvectors;
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
	if (fn->interest)
		IOObjectRelease(fn->interest); /* no notification starts after this; one in flight finds the waiter retired */
	for (unsigned bar = 0; bar < HD_NUM_BARS; bar++) {
		if (fn->bar_map[bar])
			IOConnectUnmapMemory64(fn->conn, MEMORY_TYPE_BAR0 + bar, mach_task_self(), fn->bar_map[bar]);
	}
	/* Closing drops the claim and every DMA registration in the dext, and releases the wait (uncompleted). */
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

static struct darwin_fn *fn_create(struct darwin_slot *slot, io_service_t service, io_connect_t conn,
				   uint64_t entry_id, const struct hd_identity *ident, char *err, size_t errlen)
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
	atomic_init(&w->dead, false);
	atomic_init(&w->conn_dead, false);
	fn->waiter = w;
	fn->wake_read_fd = p[0];
	fn->slot = slot;
	fn->refs = 1;
	fn->conn = conn;
	fn->entry_id = entry_id;
	fn->ident = *ident;
	slot->fns[ident->function] = fn;
	/* Removal: told on the slot's queue, like the interrupt completions. */
	kern_return_t kr = IOServiceAddInterestNotification(slot->port, service, kIOGeneralInterest,
							    service_interest, w, &fn->interest);
	if (kr != KERN_SUCCESS) {
		fn->interest = 0;
		log_warn("darwin: no removal notification for %02x:%02x.%x (%s, 0x%08x): a removed device is noticed "
			 "only when a call fails",
			 ident->bus, ident->device, ident->function, ioreturn_name(kr), (unsigned)kr);
	}
	return fn;
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

/* The last IOServiceOpen failure, reported with its hint when nothing else matched. */
struct open_failure {
	unsigned count;
	IOReturn last;
};

static void note_open_failure(struct open_failure *of, IOReturn kr)
{
	of->count++;
	of->last = kr;
	log_debug("darwin: IOServiceOpen of a dext service failed: %s (0x%08x)", ioreturn_name(kr), (unsigned)kr);
}

/*
 * Walk every dext service and find the wanted function by its registry
 * identity; only the match is opened (its identity then confirmed with
 * selector 0).  A service whose registry lacks the identity is opened to
 * ask selector 0.  Returns the unique match (already open: *shared; newly
 * opened: *conn, with its service in *service_out, retained).
 */
static int find_function(const struct wanted *w, struct darwin_fn **shared, io_connect_t *conn,
			 io_service_t *service_out, uint64_t *entry_id, struct hd_identity *ident, io_name_t root,
			 char *err, size_t errlen)
{
	io_iterator_t iter;
	io_service_t service;
	unsigned matches = 0, services = 0;
	struct open_failure of = {0};
	char roots[192] = "";
	kern_return_t kr;
	int rc = 0;

	*shared = NULL;
	*conn = 0;
	*service_out = 0;
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

		if (!darwin_is_dext_service(service)) {
			IOObjectRelease(service);
			continue;
		}
		services++;
		IORegistryEntryGetRegistryEntryID(service, &eid);
		darwin_host_root(service, this_root, sizeof(this_root));
		if (w->host_root && strcmp(w->host_root, this_root)) {
			IOObjectRelease(service); /* another root: no need to ask its identity */
			continue;
		}
		open_fn = find_open_fn(eid);
		if (open_fn) {
			id = open_fn->ident;
		} else if (!darwin_registry_identity(service, &id)) {
			/* No identity in the registry: ask the dext. */
			kr = IOServiceOpen(service, mach_task_self(), 0, &c);
			if (kr == KERN_SUCCESS && (kr = darwin_read_identity(c, &id)) != kIOReturnSuccess) {
				IOServiceClose(c);
				c = 0;
			}
			if (kr != KERN_SUCCESS) {
				note_open_failure(&of, kr);
				IOObjectRelease(service);
				continue;
			}
		}
		if (id.bus != w->bus || id.device != w->device || id.function != w->function) {
			if (c)
				IOServiceClose(c);
			IOObjectRelease(service);
			continue;
		}
		matches++;
		size_t rl = strlen(roots);
		snprintf(roots + rl, sizeof(roots) - rl, "%s\"%s\"", rl ? ", " : "", this_root);
		if (matches > 1) {
			if (c)
				IOServiceClose(c);
			IOObjectRelease(service);
			continue;
		}
		*shared = open_fn;
		*conn = c;
		*service_out = service; /* kept: opened below, and watched for termination */
		*entry_id = eid;
		*ident = id;
		memcpy(root, this_root, sizeof(this_root));
	}
	IOObjectRelease(iter);
	if (matches > 1) {
		snprintf(err, errlen,
			 "%02x:%02x.%x exists under several host roots (%s); add @ROOT to choose one, e.g. %02x:%02x.%x@NAME",
			 w->bus, w->device, w->function, roots, w->bus, w->device, w->function);
		rc = -EEXIST;
		goto fail;
	}
	if (matches == 0) {
		char why[384] = "";

		if (of.count)
			snprintf(why, sizeof(why), "; %u could not be opened, the last with %s (0x%08x)%s", of.count,
				 ioreturn_name(of.last), (unsigned)of.last, ioreturn_hint(of.last));
		snprintf(err, errlen,
			 "no %s service for %02x:%02x.%x%s%s (%u dext services found%s): is the device connected and "
			 "the dext enabled and bound to it? (audio functions, class 0x04, are never bound)",
			 DEXT_USER_CLASS, w->bus, w->device, w->function, w->host_root ? " under host root " : "",
			 w->host_root ? w->host_root : "", services, why);
		rc = -ENODEV;
		goto fail;
	}
	if (*shared) {
		IOObjectRelease(*service_out);
		*service_out = 0;
		return 0;
	}
	if (!*conn) {
		/* Found in the registry: open it now, and make sure the dext agrees on who it is. */
		kr = IOServiceOpen(*service_out, mach_task_self(), 0, conn);
		if (kr != KERN_SUCCESS) {
			*conn = 0;
			snprintf(err, errlen, "cannot open the %s service of %02x:%02x.%x: IOServiceOpen failed: %s (0x%08x)%s",
				 DEXT_USER_CLASS, w->bus, w->device, w->function, ioreturn_name(kr), (unsigned)kr,
				 ioreturn_hint(kr));
			rc = ioreturn_errno(kr);
			goto fail;
		}
		struct hd_identity check;
		kr = darwin_read_identity(*conn, &check);
		if (kr != kIOReturnSuccess || check.bus != ident->bus || check.device != ident->device ||
		    check.function != ident->function) {
			if (kr != kIOReturnSuccess)
				snprintf(err, errlen, "dext GetIdentity of %02x:%02x.%x failed: %s (0x%08x)%s", w->bus,
					 w->device, w->function, ioreturn_name(kr), (unsigned)kr, ioreturn_hint(kr));
			else
				snprintf(err, errlen,
					 "the registry says %02x:%02x.%x but the dext's GetIdentity says %02x:%02x.%x",
					 ident->bus, ident->device, ident->function, check.bus, check.device, check.function);
			rc = kr != kIOReturnSuccess ? ioreturn_errno(kr) : -EIO;
			goto fail;
		}
		*ident = check; /* the dext's word for the rest (vendor, device, class) */
	}
	return 0;
fail:
	if (*conn)
		IOServiceClose(*conn);
	if (*service_out)
		IOObjectRelease(*service_out);
	*conn = 0;
	*service_out = 0;
	*shared = NULL;
	return rc;
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

const char *darwin_serve_note(void)
{
	return "macOS: this broker drives the device from outside the VMM, and memory the VMM shares with it may "
	       "be copy-on-write for the VFIOUserPCIDriver dext (the first DMA registration checks and refuses "
	       "if so); the in-process devices are the supported path on macOS (docs/macos.md)";
}

void darwin_log_serve_note(void)
{
	log_warn("%s", darwin_serve_note());
}

struct host_device *darwin_open(const char *spec, char *err, size_t errlen)
{
	struct wanted w;
	struct darwin_fn *fn = NULL;
	struct darwin_slot *slot;
	struct darwin_dev *dev;
	struct hd_identity ident;
	io_connect_t conn = 0;
	io_service_t service = 0;
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
	rc = find_function(&w, &fn, &conn, &service, &entry_id, &ident, root, err, errlen);
	if (rc)
		goto fail;
	if (fn) {
		fn->refs++;
	} else {
		slot = slot_get(ident.bus, ident.device, root, err, errlen);
		if (!slot) {
			IOServiceClose(conn);
			IOObjectRelease(service);
			goto fail;
		}
		fn = fn_create(slot, service, conn, entry_id, &ident, err, errlen);
		IOObjectRelease(service);
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
