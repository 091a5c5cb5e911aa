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
#include "list.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CoreFoundation/CoreFoundation.h>
#include <IOKit/IOKitLib.h>

#define SEL_GET_IDENTITY 0
#define DEXT_USER_CLASS "VFIOUserPCIDriver"

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

static bool registry_u32(io_registry_entry_t entry, CFStringRef key, uint32_t *out)
{
	CFTypeRef v = IORegistryEntryCreateCFProperty(entry, key, kCFAllocatorDefault, 0);
	bool ok = false;

	if (!v)
		return false;
	if (CFGetTypeID(v) == CFDataGetTypeID() && CFDataGetLength((CFDataRef)v) >= 4) {
		const uint8_t *b = CFDataGetBytePtr((CFDataRef)v);

		*out = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
		ok = true;
	}
	CFRelease(v);
	return ok;
}

/* The identity from the provider IOPCIDevice's properties; false if any is missing. */
static bool registry_identity(io_service_t service, struct host_function *fn)
{
	io_registry_entry_t pci = IO_OBJECT_NULL;
	uint32_t vendor, device, class_code;
	unsigned b, d, f;
	char text[64];
	bool ok = false;

	if (IORegistryEntryGetParentEntry(service, kIOServicePlane, &pci) != KERN_SUCCESS)
		return false;
	if (IOObjectConformsTo(pci, "IOPCIDevice") && registry_u32(pci, CFSTR("vendor-id"), &vendor) &&
	    registry_u32(pci, CFSTR("device-id"), &device) && registry_u32(pci, CFSTR("class-code"), &class_code)) {
		CFTypeRef dbg = IORegistryEntryCreateCFProperty(pci, CFSTR("pcidebug"), kCFAllocatorDefault, 0);

		if (dbg && CFGetTypeID(dbg) == CFStringGetTypeID() &&
		    CFStringGetCString((CFStringRef)dbg, text, sizeof(text), kCFStringEncodingUTF8) &&
		    sscanf(text, "%u:%u:%u", &b, &d, &f) == 3 && b <= 0xff && d <= 0x1f && f <= 7) {
			fn->bus = (uint8_t)b;
			fn->device = (uint8_t)d;
			fn->function = (uint8_t)f;
			fn->vendor_id = (uint16_t)vendor;
			fn->device_id = (uint16_t)device;
			fn->class_code = class_code & 0xffffff;
			ok = true;
		}
		if (dbg)
			CFRelease(dbg);
	}
	IOObjectRelease(pci);
	return ok;
}

/* Ask the dext (selector 0).  Returns the IOServiceOpen or call result. */
static kern_return_t dext_identity(io_service_t service, struct host_function *fn)
{
	io_connect_t conn = IO_OBJECT_NULL;
	uint64_t id[6] = { 0 };
	uint32_t id_count = 6;
	kern_return_t kr = IOServiceOpen(service, mach_task_self(), 0, &conn);

	if (kr != KERN_SUCCESS)
		return kr;
	kr = IOConnectCallScalarMethod(conn, SEL_GET_IDENTITY, NULL, 0, id, &id_count);
	IOServiceClose(conn);
	if (kr != KERN_SUCCESS)
		return kr;
	if (id_count < 6)
		return kIOReturnError;
	fn->bus = (uint8_t)id[0];
	fn->device = (uint8_t)(id[1] & 0x1f);
	fn->function = (uint8_t)(id[2] & 7);
	fn->vendor_id = (uint16_t)id[3];
	fn->device_id = (uint16_t)id[4];
	fn->class_code = (uint32_t)(id[5] & 0xffffff);
	return KERN_SUCCESS;
}

/* Name of the topmost IOPCIDevice above the service: tells Thunderbolt roots apart. */
static void host_root(io_service_t service, char *root, size_t len)
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
				snprintf(root, len, "%s", name);
		}
	}
	if (entry != service)
		IOObjectRelease(entry);
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
		if (!is_dext_service(service)) {
			IOObjectRelease(service);
			continue;
		}
		if (!registry_identity(service, &fn) && (kr = dext_identity(service, &fn)) != KERN_SUCCESS) {
			unopened++;
			last = kr;
			IOObjectRelease(service);
			continue;
		}
		host_root(service, fn.host_root, sizeof(fn.host_root));
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
