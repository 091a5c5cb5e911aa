/* SPDX-License-Identifier: MIT */
/*
 * TEST MODEL shim (Linux only): the IOKit calls, types and constants the
 * darwin backend uses, with the names, signatures and values of Apple's
 * <IOKit/IOKitLib.h> (and the headers it pulls in).  Behind it is the dext
 * TEST MODEL (tests/darwin/model), not IOKit.
 */
#ifndef VFA_SHIM_IOKITLIB_H
#define VFA_SHIM_IOKITLIB_H

#include <stddef.h>
#include <stdint.h>

#include <CoreFoundation/CoreFoundation.h>
#include <dispatch/dispatch.h>
#include <mach/mach.h>

typedef mach_port_t io_object_t;
typedef io_object_t io_connect_t;
typedef io_object_t io_iterator_t;
typedef io_object_t io_registry_entry_t;
typedef io_object_t io_service_t;
typedef char io_name_t[128];
typedef kern_return_t IOReturn;
typedef uint32_t IOOptionBits;
typedef uint64_t io_user_reference_t;
typedef struct IONotificationPort *IONotificationPortRef;
/*
 * IOKitLib calls an async completion with the shape matching its argument
 * count: no arguments (what the dext's AsyncCompletion(..., nullptr, 0)
 * sends) means IOAsyncCallback0.
 */
typedef void (*IOAsyncCallback0)(void *refcon, IOReturn result);
typedef void (*IOAsyncCallback)(void *refcon, IOReturn result, void **args, uint32_t numArgs);
typedef void (*IOServiceInterestCallback)(void *refcon, io_service_t service, uint32_t messageType,
					  void *messageArgument);

#define kIOServicePlane "IOService"
#define kIOGeneralInterest "IOGeneralInterest"
#define kIOPropertyMatchKey "IOPropertyMatch"
#define IO_OBJECT_NULL ((io_object_t)0)

/* <IOKit/IOReturn.h>: iokit_common_err(x) = sys_iokit | sub_iokit_common | x */
#define iokit_common_err(return) ((IOReturn)(0xe0000000u | (return)))
#define kIOReturnSuccess KERN_SUCCESS
#define kIOReturnError iokit_common_err(0x2bc)
#define kIOReturnNoMemory iokit_common_err(0x2bd)
#define kIOReturnNoResources iokit_common_err(0x2be)
#define kIOReturnIPCError iokit_common_err(0x2bf)
#define kIOReturnNoDevice iokit_common_err(0x2c0)
#define kIOReturnNotPrivileged iokit_common_err(0x2c1)
#define kIOReturnBadArgument iokit_common_err(0x2c2)
#define kIOReturnExclusiveAccess iokit_common_err(0x2c5)
#define kIOReturnUnsupported iokit_common_err(0x2c7)
#define kIOReturnVMError iokit_common_err(0x2c8)
#define kIOReturnInternalError iokit_common_err(0x2c9)
#define kIOReturnIOError iokit_common_err(0x2ca)
#define kIOReturnNotOpen iokit_common_err(0x2cd)
#define kIOReturnNotAligned iokit_common_err(0x2d0)
#define kIOReturnStillOpen iokit_common_err(0x2d2)
#define kIOReturnBusy iokit_common_err(0x2d5)
#define kIOReturnTimeout iokit_common_err(0x2d6)
#define kIOReturnOffline iokit_common_err(0x2d7)
#define kIOReturnNotReady iokit_common_err(0x2d8)
#define kIOReturnNotAttached iokit_common_err(0x2d9)
#define kIOReturnNoSpace iokit_common_err(0x2db)
#define kIOReturnNotPermitted iokit_common_err(0x2e2)
#define kIOReturnOverrun iokit_common_err(0x2e4)
#define kIOReturnDeviceError iokit_common_err(0x2e9)
#define kIOReturnAborted iokit_common_err(0x2eb)
#define kIOReturnNotResponding iokit_common_err(0x2ed)
#define kIOReturnNotFound iokit_common_err(0x2f0)

/* <IOKit/IOTypes.h> mapping options */
#define kIOMapAnywhere 0x00000001u
#define kIOMapCacheMask 0x00000700u
#define kIOMapDefaultCache 0x00000000u
#define kIOMapInhibitCache 0x00000100u
#define kIOMapWriteThruCache 0x00000200u
#define kIOMapCopybackCache 0x00000300u
#define kIOMapWriteCombineCache 0x00000400u
#define kIOMapReadOnly 0x00001000u

/* <IOKit/OSMessageNotification.h> */
#define kOSAsyncRef64Count 8
#define kIOAsyncReservedIndex 0
#define kIOAsyncCalloutFuncIndex 1
#define kIOAsyncCalloutRefconIndex 2

extern const mach_port_t kIOMainPortDefault;

CFMutableDictionaryRef IOServiceMatching(const char *name);
kern_return_t IOServiceGetMatchingServices(mach_port_t mainPort, CFDictionaryRef matching,
					   io_iterator_t *existing);
io_object_t IOIteratorNext(io_iterator_t iterator);
kern_return_t IOObjectRelease(io_object_t object);
/* Apple declares these const io_name_t; the same type after decay, without GCC's 128-byte read warning. */
boolean_t IOObjectConformsTo(io_object_t object, const char *className);

kern_return_t IORegistryEntryCreateCFProperties(io_registry_entry_t entry, CFMutableDictionaryRef *properties,
					       CFAllocatorRef allocator, IOOptionBits options);
CFTypeRef IORegistryEntryCreateCFProperty(io_registry_entry_t entry, CFStringRef key,
					  CFAllocatorRef allocator, IOOptionBits options);
kern_return_t IORegistryEntryGetParentEntry(io_registry_entry_t entry, const char *plane,
					    io_registry_entry_t *parent);
kern_return_t IORegistryEntryGetName(io_registry_entry_t entry, io_name_t name);
kern_return_t IORegistryEntryGetRegistryEntryID(io_registry_entry_t entry, uint64_t *entryID);

kern_return_t IOServiceAddInterestNotification(IONotificationPortRef notifyPort, io_service_t service,
					       const char *interestType, IOServiceInterestCallback callback,
					       void *refCon, io_object_t *notification);

kern_return_t IOServiceOpen(io_service_t service, task_port_t owningTask, uint32_t type,
			    io_connect_t *connect);
kern_return_t IOServiceClose(io_connect_t connect);

kern_return_t IOConnectCallScalarMethod(mach_port_t connection, uint32_t selector,
					const uint64_t *input, uint32_t inputCnt, uint64_t *output,
					uint32_t *outputCnt);
kern_return_t IOConnectCallAsyncMethod(mach_port_t connection, uint32_t selector, mach_port_t wake_port,
				       uint64_t *reference, uint32_t referenceCnt, const uint64_t *input,
				       uint32_t inputCnt, const void *inputStruct, size_t inputStructCnt,
				       uint64_t *output, uint32_t *outputCnt, void *outputStruct,
				       size_t *outputStructCnt);
kern_return_t IOConnectMapMemory64(io_connect_t connect, uint32_t memoryType, task_port_t intoTask,
				   mach_vm_address_t *atAddress, mach_vm_size_t *ofSize, IOOptionBits options);
kern_return_t IOConnectUnmapMemory64(io_connect_t connect, uint32_t memoryType, task_port_t fromTask,
				     mach_vm_address_t atAddress);

IONotificationPortRef IONotificationPortCreate(mach_port_t mainPort);
void IONotificationPortDestroy(IONotificationPortRef notify);
mach_port_t IONotificationPortGetMachPort(IONotificationPortRef notify);
void IONotificationPortSetDispatchQueue(IONotificationPortRef notify, dispatch_queue_t queue);

#endif
