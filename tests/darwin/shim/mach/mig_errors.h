/* SPDX-License-Identifier: MIT */
/*
 * TEST MODEL shim (Linux only): MIG_SERVER_DIED from Apple's
 * <mach/mig_errors.h> (the shim's <mach/mach.h> defines it).  Not Mach.
 */
#ifndef VFA_SHIM_MACH_MIG_ERRORS_H
#define VFA_SHIM_MACH_MIG_ERRORS_H

#include <mach/mach.h>

#endif
