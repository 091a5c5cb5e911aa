/* SPDX-License-Identifier: MIT */
/*
 * TEST MODEL of the VFIOUserPCIDriver dext (shared/spec/dext-abi.md) for
 * Linux.  It is NOT the dext and never ran against it: it implements the
 * published ABI (selectors 0-17, memory types 0-7, the async wait), corrected
 * where the dext's published source says otherwise (docs/macos.md lists
 * what), over any host_device (normally the simulated NVMe), behind an
 * IOKit/CF/mach shim (tests/darwin/shim) so that backends/darwin runs
 * unchanged.
 *
 * Every shim call takes one model lock; the function behind a service is
 * only ever called under it, so a single-threaded backend (sim) is safe.
 * One thread per service with interrupts set up watches the function's
 * wake-up fd and completes WaitInterrupt on the waiter's dispatch queue.
 */
#ifndef VFA_DEXT_MODEL_H
#define VFA_DEXT_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "host_device.h"

#define DEXT_MODEL_SELECTORS 18

struct dext_model_service_config {
	struct host_device *dev;   /* the PCI function behind the service */
	bool owns_dev;             /* destroy dev when the service goes away */
	const char *host_root;     /* topmost IOPCIDevice ancestor's name; NULL: "pcie-root0" */
	const char *user_class;    /* IOUserClass property; NULL: "VFIOUserPCIDriver" */
	bool set_location;         /* report bus/device/function below instead of dev's */
	uint8_t bus, device, function;
	bool hide_pci_properties;  /* the IOPCIDevice parent publishes no vendor-id/device-id/class-code/pcidebug */
	bool copy_on_write;        /* registered memory is copy-on-write for the device (memory shared from
				    * another process): the device keeps the pages as they were at registration */
	uint64_t dart_max_bytes;   /* the DART's capacity; 0: 1.5 GiB */
};

/*
 * Publish a service, as the dext does when it binds to a function.
 * -EPERM for base class 0x04 (the dext refuses audio functions).
 */
int dext_model_publish(const struct dext_model_service_config *cfg, uint64_t *service_id, char *err, size_t errlen);
/*
 * Take the service out of IOKit matching; it lives on until its last client
 * and handle are gone.  terminate: the dext going away, open clients then
 * see kIOReturnNotAttached.
 */
int dext_model_unpublish(uint64_t service_id, bool terminate);

/*
 * Make the next call of selector (0..17, or 100 + memory type for
 * IOConnectMapMemory64, or DEXT_MODEL_FAIL_OPEN for IOServiceOpen) fail
 * with kr.
 */
#define DEXT_MODEL_FAIL_OPEN 200u
void dext_model_fail_next(uint32_t selector, int kr);
/*
 * The dext process dies: the service terminates (interest notifications get
 * kIOMessageServiceIsTerminated), pending waits are dropped without a
 * completion, and every later call fails with MIG_SERVER_DIED.
 */
int dext_model_crash(uint64_t service_id);

/*
 * The function falls off the bus while the dext stays (a surprise removal
 * before macOS terminates the service, or a device that hangs): every later
 * call that reaches the device fails with kr (kIOReturnNoDevice or
 * kIOReturnNotResponding); UnregisterDMARegion, FreeDMABuffer and Terminate
 * still work, as they are the dext's own bookkeeping.  0 clears it.  A
 * function that reports -ENODEV (a vanished sim) gives kIOReturnNoDevice
 * by itself.
 */
int dext_model_device_lost(uint64_t service_id, int kr);

struct dext_model_stats {
	uint64_t services_live;
	uint64_t service_opens;   /* IOServiceOpen successes */
	uint64_t clients_live;
	uint64_t ports_created;   /* IONotificationPortCreate */
	uint64_t ports_live;
	uint64_t objects_live;    /* io_object_t handles not yet released */
	uint64_t calls[DEXT_MODEL_SELECTORS];
	uint64_t maps;
	uint32_t last_map_type;
	uint32_t last_map_options;
	uint64_t waits_armed;
	uint64_t waits_completed; /* delivered (always kIOReturnSuccess, as from the dext) */
	uint64_t waits_replaced;  /* a second WaitInterrupt replaced an armed one, silently */
	uint64_t waits_dropped;   /* released without a completion (client or service stopped) */
	uint64_t live_dma;        /* registrations over all clients */
	/*
	 * Registrations that reached the DART beyond its capacity.  The dext
	 * does not check; on a Mac PrepareForDMA can then panic the host from
	 * inside IODARTMapper.  The model fails the call and counts it here:
	 * any non-zero value is a host panic the backend failed to prevent.
	 */
	uint64_t dart_overcommits;
	uint64_t interest_sent;   /* kIOMessageServiceIsTerminated messages queued */
};
void dext_model_get_stats(struct dext_model_stats *out);
/* Clients of the service holding a claim (the dext's refcount). */
int dext_model_claims(uint64_t service_id);

#endif
