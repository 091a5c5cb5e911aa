/* SPDX-License-Identifier: MIT */
/* The demo's reading of the guest console and its verdict (demo.c). */
#ifndef VFA_CLI_DEMO_H
#define VFA_CLI_DEMO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "launch.h"

struct json_object;

/* The demo's own options (the launch carries the device, memory, sockets). */
struct demo_options {
	const char *kernel;    /* 6.1, 6.12 or 7.3 */
	int timeout_s;
	bool keep;             /* keep the work directory */
	const char *qemu_path; /* --qemu, or NULL */
};

/*
 * The simulated demo (Linux): provision, build apple_dma and the initramfs,
 * then boot the guest through the launch's mode (vfio-user: broker + QEMU
 * 11.1; in-process: a QEMU with vfio-apple-pci, counters over QMP) and print
 * the summary.  Returns the exit code.
 */
int demo_run(struct launch *l, const struct demo_options *opts);

/* What the guest and the broker reported. */
struct demo_result {
	char kernel[80];    /* uname -r */
	bool booted;
	bool device_seen;
	char pci[32];       /* the disk's PCI function in the guest */
	uint64_t disk_bytes;
	char companion[32]; /* apple_dma's PCI function, "none" if unbound */
	bool fio_done;
	int fio_rc;
	bool init_done;
	int init_rc;
	char failure[160];  /* "stage=... error=..." from the workload */
	struct json_object *fio;    /* fio's JSON report */
	struct json_object *status; /* the last counters while QEMU ran (broker or QMP) */
	uint64_t peak_mappings, peak_bytes, faults;
	bool want_baseline;    /* Linux is up: note the faults so far */
	bool have_baseline;
	uint64_t boot_faults;  /* faults before Linux ran (the firmware's NVMe probe) */
};

/* One console line: "VFA-RESULT key=value..." and "VFA-FIO-JSON {...}"
 * markers, anywhere in the line; other text is ignored. */
void demo_console_line(struct demo_result *r, char *line);
/* Keep the largest DART peaks and fault count seen in a status object. */
void demo_keep_status(struct demo_result *r, struct json_object *status);
/* Print the summary; true only when everything was verified. */
bool demo_summarize(FILE *out, const char *device, const struct demo_result *r, int broker_rc);
/* KEY=VALUE lines (provision.sh env): the value of key, false if absent. */
bool demo_env_value(const char *env, const char *key, char *out, size_t len);

#endif
