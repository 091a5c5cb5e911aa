/* SPDX-License-Identifier: MIT */
/*
 * TEST MODEL shim (Linux only): mach_vm_region from Apple's <mach/mach_vm.h>,
 * answered by the dext TEST MODEL from /proc/self/maps.  This is not Mach.
 */
#ifndef VFA_SHIM_MACH_MACH_VM_H
#define VFA_SHIM_MACH_MACH_VM_H

#include <mach/mach.h>

/* The region containing *address, or the next one above it. */
kern_return_t mach_vm_region(mach_port_t target_task, mach_vm_address_t *address, mach_vm_size_t *size,
			     vm_region_flavor_t flavor, vm_region_info_t info, mach_msg_type_number_t *infoCnt,
			     mach_port_t *object_name);

#endif
