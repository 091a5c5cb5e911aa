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

mach_port_t mach_task_self(void);

#endif
