// SPDX-License-Identifier: MIT
/*
 * macOS: the PCI functions bound to the VFIOUserPCIDriver dext.  Each is an
 * IOUserService whose IOUserClass is "VFIOUserPCIDriver"; its user client
 * answers selector 0 (GetIdentity) with bus, device, function, vendor,
 * device id and class code (shared/spec/dext-abi.md).  Opening a user
 * client does not claim the function.
 *
 * NOT compiled or run on this project's Linux machines: checked by reading
 * only (see README, "What is verified").
 */
#include "cli.h"
#include "list.h"

#include <errno.h>
#include <stdlib.h>

#include <CoreFoundation/CoreFoundation.h>
#include <IOKit/IOKitLib.h>

#define SEL_GET_IDENTITY 0

int host_functions_enumerate(struct host_function **out, size_t *count, char *err, size_t errlen)
{
	CFMutableDictionaryRef match = IOServiceMatching("IOUserService");
	CFMutableDictionaryRef props;
	io_iterator_t iter = IO_OBJECT_NULL;
	io_service_t service;
	struct host_function *fns = NULL;
	size_t n = 0, cap = 0;
	kern_return_t kr;

	*out = NULL;
	*count = 0;
	if (!match) {
		snprintf(err, errlen, "IOServiceMatching failed");
		return -ENOMEM;
	}
	props = CFDictionaryCreateMutable(kCFAllocatorDefault, 1, &kCFTypeDictionaryKeyCallBacks,
					  &kCFTypeDictionaryValueCallBacks);
	CFDictionarySetValue(props, CFSTR("IOUserClass"), CFSTR("VFIOUserPCIDriver"));
	CFDictionarySetValue(match, CFSTR(kIOPropertyMatchKey), props);
	CFRelease(props);
	/* Consumes match. */
	kr = IOServiceGetMatchingServices(MACH_PORT_NULL, match, &iter);
	if (kr != KERN_SUCCESS) {
		snprintf(err, errlen, "cannot search IOKit for the VFIOUserPCIDriver dext (0x%x)", kr);
		return -EIO;
	}
	while ((service = IOIteratorNext(iter)) != IO_OBJECT_NULL) {
		io_connect_t conn = IO_OBJECT_NULL;
		uint64_t id[6] = { 0 };
		uint32_t id_count = 6;

		kr = IOServiceOpen(service, mach_task_self(), 0, &conn);
		IOObjectRelease(service);
		if (kr != KERN_SUCCESS)
			continue; /* not ours to open (another user's session): skip */
		kr = IOConnectCallScalarMethod(conn, SEL_GET_IDENTITY, NULL, 0, id, &id_count);
		IOServiceClose(conn);
		if (kr != KERN_SUCCESS || id_count < 6)
			continue;
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
		fns[n].bus = (uint8_t)id[0];
		fns[n].device = (uint8_t)(id[1] & 0x1f);
		fns[n].function = (uint8_t)(id[2] & 7);
		fns[n].vendor_id = (uint16_t)id[3];
		fns[n].device_id = (uint16_t)id[4];
		fns[n].class_code = (uint32_t)(id[5] & 0xffffff);
		n++;
	}
	IOObjectRelease(iter);
	if (n == 0) {
		snprintf(err, errlen,
			 "no PCI function is bound to the VFIOUserPCIDriver dext: install and approve the dext "
			 "(docs/macos.md), then attach the device");
		*out = fns;
		return -ENODEV;
	}
	*out = fns;
	*count = n;
	return 0;
}
