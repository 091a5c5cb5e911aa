/* SPDX-License-Identifier: MIT */
/* `vfio-apple list`: host functions and their presentation. */
#ifndef VFA_CLI_LIST_H
#define VFA_CLI_LIST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct json_object;

/* A host PCI function bound to the VFIOUserPCIDriver dext (macOS). */
struct host_function {
	uint8_t bus, device, function;
	uint16_t vendor_id, device_id;
	uint32_t class_code;
	char host_root[128]; /* topmost IOPCIDevice's name ("" if unknown): BB:DD.F@ROOT */
};

/*
 * The functions bound to the dext (malloc'ed array in *out; none on Linux).
 * Returns 0, or -errno with a reason in err.
 */
int host_functions_enumerate(struct host_function **out, size_t *count, char *err, size_t errlen);

/* The JSON array `list --json` prints: simulated kinds, then host functions. */
struct json_object *list_build(const struct host_function *fns, size_t count, const char *ids_path);
/* One line per entry. */
void list_print(FILE *out, struct json_object *array);

#endif
