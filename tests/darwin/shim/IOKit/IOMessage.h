/* SPDX-License-Identifier: MIT */
/*
 * TEST MODEL shim (Linux only): the message the darwin backend watches for,
 * with the name and value of Apple's <IOKit/IOMessage.h>.
 */
#ifndef VFA_SHIM_IOMESSAGE_H
#define VFA_SHIM_IOMESSAGE_H

#include <stdint.h>

/* iokit_common_msg(x) = sys_iokit | sub_iokit_common | x */
#define iokit_common_msg(message) ((uint32_t)(0xe0000000u | (message)))
#define kIOMessageServiceIsTerminated iokit_common_msg(0x010)

#endif
