/* SPDX-License-Identifier: MIT */
/*
 * Finding and identifying the dext's functions in the IOKit registry: one
 * home for what the backend (darwin_open) and `vfio-apple list` both need.
 */
#ifndef VFA_DARWIN_REGISTRY_H
#define VFA_DARWIN_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include <IOKit/IOKitLib.h>

#include "host_device.h"

#define DARWIN_DEXT_USER_CLASS "VFIOUserPCIDriver"
#define DARWIN_SEL_GET_IDENTITY 0

/* An IOUserService whose IOUserClass is the dext's. */
bool darwin_is_dext_service(io_service_t service);

/*
 * The identity from the registry, without opening a user client (each one
 * costs the dext its table of 65,536 DMA regions: hundreds of MiB): the
 * IOPCIDevice provider's vendor-id, device-id and class-code, and its
 * "pcidebug" property, "bus:device:function" in decimal.  False if any is
 * missing.
 */
bool darwin_registry_identity(io_service_t service, struct hd_identity *id);

/* Selector 0 (GetIdentity) on an open connection. */
IOReturn darwin_read_identity(io_connect_t conn, struct hd_identity *id);

/*
 * Name of the topmost IOPCIDevice above the service ("" if none): tells
 * Thunderbolt roots that reuse a bus number apart.
 */
void darwin_host_root(io_service_t service, char *root, size_t len);

#endif
