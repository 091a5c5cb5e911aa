/* SPDX-License-Identifier: MIT */
/* Choosing a host backend from the user's device string. */
#ifndef VFA_BACKENDS_H
#define VFA_BACKENDS_H

#include <stddef.h>

#include "host_device.h"

/*
 * Open a host device from a user-facing string:
 *   "sim:nvme[,size=64M|1G|BYTES][,dart=apple|identity][,backing=PATH]"
 *   "sim-dext:nvme[,...]"  the darwin backend over the dext test model
 *   "BB:DD.F"              macOS: a PCI function bound to the dext
 * On failure returns NULL and writes a one-line reason a person can act on
 * into err.
 */
struct host_device *host_device_open(const char *spec, char *err, size_t errlen);

#endif
