/* SPDX-License-Identifier: MIT */
/*
 * The broker: one process that serves one host PCI function and its
 * apple-dma companion to one VMM, each on its own vfio-user socket, plus a
 * control socket for `vfio-apple status`.  Single-threaded, poll()-driven.
 */
#ifndef VFA_BROKER_H
#define VFA_BROKER_H

#include <stdbool.h>
#include <stdint.h>

struct broker_config {
	const char *device_spec;        /* e.g. "sim:nvme,size=256M,dart=apple" */
	const char *passthrough_socket; /* vfio-user socket of the function */
	const char *companion_socket;   /* vfio-user socket of apple-dma-pci; NULL: none */
	const char *control_socket;     /* status socket; NULL: none */
	uint8_t passthrough_bus;        /* guest address of the function, for MANAGED_BDF */
	uint8_t passthrough_devfn;      /* (slot << 3) | function */
	uint32_t companion_max_entries; /* MAX_ENTRIES; 0: the default 4096 */
	bool prefer_msi;                /* passthrough_opts.prefer_msi */
};

/*
 * Serve until SIGINT or SIGTERM (or a fatal error).  On the way out every
 * DMA mapping is released.  Returns a process exit code: 0 after a clean
 * shutdown, nonzero with a one-line reason on stderr otherwise.
 */
int broker_run(const struct broker_config *cfg);

#endif
