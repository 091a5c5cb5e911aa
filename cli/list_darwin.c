// SPDX-License-Identifier: MIT
/*
 * macOS: the PCI functions bound to the VFIOUserPCIDriver dext.  Each is an
 * IOUserService whose IOUserClass is "VFIOUserPCIDriver", a child of the
 * function's IOPCIDevice.  The identity is read from that IOPCIDevice's
 * registry properties (vendor-id, device-id, class-code: 4-byte
 * little-endian data; pcidebug: "bus:device:function"), without opening a
 * user client: each client costs the dext its table of 65,536 DMA regions,
 * hundreds of MiB.  Only when those properties are missing is the service
 * opened and asked (selector 0, GetIdentity; opening does not claim).
 * The host root is the name of the topmost IOPCIDevice above the service,
 * what `serve --device BB:DD.F@ROOT` takes when two Thunderbolt roots reuse
 * a bus number.
 *
 * Compiled on Linux only against the dext TEST MODEL's IOKit shim
 * (tests/darwin, test-list-darwin); never compiled with Apple's SDK (see
 * docs/macos.md, "What has been verified").
 */
#include "cli.h"
#include "darwin_registry.h"
#include "list.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CoreFoundation/CoreFoundation.h>
#include <IOKit/IOKitLib.h>

/*
 * The identity: from the registry, or only when that lacks it from the dext
 * (IOServiceOpen and selector 0; opening does not claim).  The IOServiceOpen
 * or call result.
 */
static kern_return_t identify(io_service_t service, struct host_function *fn)
{
	struct hd_identity id;
	io_connect_t conn = IO_OBJECT_NULL;
	kern_return_t kr = KERN_SUCCESS;

	if (!darwin_registry_identity(service, &id)) {
		kr = IOServiceOpen(service, mach_task_self(), 0, &conn);
		if (kr != KERN_SUCCESS)
			return kr;
		kr = darwin_read_identity(conn, &id);
		IOServiceClose(conn);
		if (kr != KERN_SUCCESS)
			return kr;
	}
	fn->bus = id.bus;
	fn->device = id.device;
	fn->function = id.function;
	fn->vendor_id = id.vendor_id;
	fn->device_id = id.device_id;
	fn->class_code = id.class_code;
	return KERN_SUCCESS;
}

int host_functions_enumerate(struct host_function **out, size_t *count, char *err, size_t errlen)
{
	io_iterator_t iter = IO_OBJECT_NULL;
	io_service_t service;
	struct host_function *fns = NULL;
	size_t n = 0, cap = 0;
	unsigned unopened = 0;
	kern_return_t kr, last = KERN_SUCCESS;

	*out = NULL;
	*count = 0;
	/* Consumes the matching dictionary. */
	kr = IOServiceGetMatchingServices(MACH_PORT_NULL, IOServiceMatching("IOUserService"), &iter);
	if (kr != KERN_SUCCESS) {
		snprintf(err, errlen, "cannot search IOKit for the VFIOUserPCIDriver dext (0x%x)", (unsigned)kr);
		return -EIO;
	}
	while ((service = IOIteratorNext(iter)) != IO_OBJECT_NULL) {
		struct host_function fn;

		memset(&fn, 0, sizeof(fn));
		if (!darwin_is_dext_service(service)) {
			IOObjectRelease(service);
			continue;
		}
		if ((kr = identify(service, &fn)) != KERN_SUCCESS) {
			unopened++;
			last = kr;
			IOObjectRelease(service);
			continue;
		}
		darwin_host_root(service, fn.host_root, sizeof(fn.host_root));
		IOObjectRelease(service);
		if (n == cap) {
			size_t new_cap = cap ? cap * 2 : 8;
			struct host_function *grown = realloc(fns, new_cap * sizeof(*fns));

			if (!grown) {
				free(fns);
				IOObjectRelease(iter);
				snprintf(err, errlen, "out of memory");
				return -ENOMEM;
			}
			fns = grown;
			cap = new_cap;
		}
		fns[n++] = fn;
	}
	IOObjectRelease(iter);
	*out = fns;
	*count = n;
	if (unopened) {
		/* Still list the others; say why some are missing. */
		snprintf(err, errlen,
			 "%u function(s) bound to the VFIOUserPCIDriver dext could not be identified: IOServiceOpen or "
			 "GetIdentity failed with 0x%08x%s",
			 unopened, (unsigned)last,
			 last == (kern_return_t)kIOReturnNotPermitted || last == (kern_return_t)kIOReturnNotPrivileged
				 ? " (this program lacks the com.apple.developer.driverkit.userclient-access entitlement; "
				   "docs/macos.md)"
				 : "");
		return -EPERM;
	}
	if (n == 0) {
		snprintf(err, errlen,
			 "no PCI function is bound to the VFIOUserPCIDriver dext: install and approve the dext "
			 "(docs/macos.md), then attach the device");
		return -ENODEV;
	}
	return 0;
}
