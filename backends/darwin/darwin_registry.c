// SPDX-License-Identifier: MIT
#include "darwin_registry.h"

#include <CoreFoundation/CoreFoundation.h>

#include <stdint.h>
#include <stdio.h>

bool darwin_is_dext_service(io_service_t service)
{
	CFTypeRef cls = IORegistryEntryCreateCFProperty(service, CFSTR("IOUserClass"), kCFAllocatorDefault, 0);
	bool match = false;

	if (!cls)
		return false;
	if (CFGetTypeID(cls) == CFStringGetTypeID())
		match = CFEqual(cls, CFSTR(DARWIN_DEXT_USER_CLASS));
	CFRelease(cls);
	return match;
}

/* A 32-bit little-endian number from a registry data property. */
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

bool darwin_registry_identity(io_service_t service, struct hd_identity *id)
{
	io_registry_entry_t pci = 0;
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
			id->bus = (uint8_t)b;
			id->device = (uint8_t)d;
			id->function = (uint8_t)f;
			id->vendor_id = (uint16_t)vendor;
			id->device_id = (uint16_t)device;
			id->class_code = class_code & 0xffffff;
			ok = true;
		}
		if (dbg)
			CFRelease(dbg);
	}
	IOObjectRelease(pci);
	return ok;
}

IOReturn darwin_read_identity(io_connect_t conn, struct hd_identity *id)
{
	uint64_t v[6];
	uint32_t n = 6;
	IOReturn kr = IOConnectCallScalarMethod(conn, DARWIN_SEL_GET_IDENTITY, NULL, 0, v, &n);

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

void darwin_host_root(io_service_t service, char *root, size_t len)
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
