/* SPDX-License-Identifier: MIT */
/*
 * TEST MODEL shim (Linux only): the few Mach types and calls the darwin
 * backend uses, with the names and signatures of Apple's <mach/mach.h>, so
 * that backends/darwin compiles unchanged against the dext TEST MODEL.
 * This is not Mach.
 */
#ifndef VFA_SHIM_MACH_MACH_H
#define VFA_SHIM_MACH_MACH_H

#include <stdint.h>

typedef unsigned int mach_port_t;
typedef mach_port_t task_t;
typedef mach_port_t task_port_t;
typedef int kern_return_t;
typedef int boolean_t;
typedef uint64_t mach_vm_address_t;
typedef uint64_t mach_vm_size_t;

#define KERN_SUCCESS 0
#define MACH_PORT_NULL ((mach_port_t)0)
#define KERN_INVALID_ADDRESS 1

/* <mach/message.h>: the port a message was sent to is dead (the dext's user client is gone). */
#define MACH_SEND_INVALID_DEST 0x10000003
/* <mach/mig_errors.h>: the server process (here: the dext) died during the call. */
#define MIG_SERVER_DIED (-308)

/* <mach/vm_prot.h> */
typedef int vm_prot_t;
#define VM_PROT_READ ((vm_prot_t)0x01)
#define VM_PROT_WRITE ((vm_prot_t)0x02)
#define VM_PROT_EXECUTE ((vm_prot_t)0x04)

/* <mach/vm_region.h>: only what the backend reads (the protection). */
typedef int vm_region_flavor_t;
typedef int *vm_region_info_t;
typedef unsigned int mach_msg_type_number_t;
typedef unsigned int vm_inherit_t;
typedef int vm_behavior_t;
typedef unsigned long long memory_object_offset_t;
struct vm_region_basic_info_64 {
	vm_prot_t protection;
	vm_prot_t max_protection;
	vm_inherit_t inheritance;
	boolean_t shared;
	boolean_t reserved;
	memory_object_offset_t offset;
	vm_behavior_t behavior;
	unsigned short user_wired_count;
};
typedef struct vm_region_basic_info_64 vm_region_basic_info_data_64_t;
#define VM_REGION_BASIC_INFO_64 9
#define VM_REGION_BASIC_INFO_COUNT_64 \
	((mach_msg_type_number_t)(sizeof(vm_region_basic_info_data_64_t) / sizeof(int)))

mach_port_t mach_task_self(void);

#endif
