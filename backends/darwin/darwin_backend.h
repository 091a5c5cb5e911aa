/* SPDX-License-Identifier: MIT */
/*
 * The macOS backend: an IOKit client of the VFIOUserPCIDriver dext
 * (shared/spec/dext-abi.md) behind the host-device interface.  On Linux the
 * same source is compiled against the dext TEST MODEL's shim (tests/darwin).
 */
#ifndef VFA_DARWIN_BACKEND_H
#define VFA_DARWIN_BACKEND_H

#include <stddef.h>

#include "host_device.h"

/* The platform's DART as published (shared/spec/platform.md). */
#define DARWIN_DART_MAX_BYTES (3ull << 29) /* 1.5 GiB */
#define DARWIN_DART_MAX_MAPPINGS 65536u
#define DARWIN_DART_GRANULE 16384u

/*
 * Open the PCI function "BB:DD.F" (hex) bound to the dext, optionally
 * "BB:DD.F@ROOT" where ROOT is the name of the function's topmost IOPCIDevice
 * ancestor (the host root), needed only when two Thunderbolt roots reuse the
 * bus number.  Functions of one slot share the notification machinery; the
 * same function opened twice shares one dext connection (reference counted).
 * On failure returns NULL with a reason in err.
 */
struct host_device *darwin_open(const char *spec, char *err, size_t errlen);

/*
 * The line `vfio-apple serve` logs at startup on macOS (out-of-process
 * service: guest memory the VMM shares may be copy-on-write for the dext;
 * the in-process devices are the supported path).  darwin_log_serve_note()
 * logs it at warning level; serve calls it when it opens a BB:DD.F device.
 */
const char *darwin_serve_note(void);
void darwin_log_serve_note(void);

#endif
