/* SPDX-License-Identifier: MIT */
/*
 * The launcher: find a QEMU, prepare sockets, start the broker, build QEMU's
 * command line, and tear everything down.  One layer below the things that
 * launch (the foreground `run` in run.c, the demo in demo.c); it calls
 * neither of them back.
 *
 * Two modes:
 *   vfio-user    a broker (`vfio-apple serve`) and QEMU >= 10.1 with two
 *                vfio-user-pci devices over shareable guest RAM;
 *   in-process   a QEMU that has the project's vfio-apple-pci and
 *                apple-dma-pci devices (docs/qemu.md): no broker, plain
 *                guest RAM, counters over QMP (qmp.h).
 */
#ifndef VFA_CLI_LAUNCH_H
#define VFA_CLI_LAUNCH_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "cli.h"
#include "proc.h"

#ifdef __APPLE__
/* Apple Silicon runs arm64 guests; macOS has no memfd: POSIX shm instead.
 * (Not built or run on a Mac yet: see README.) */
#define LAUNCH_QEMU_SYSTEM "qemu-system-aarch64"
#define LAUNCH_RAM_BACKEND "memory-backend-shm"
#define LAUNCH_MACHINE "virt"
#else
#define LAUNCH_QEMU_SYSTEM "qemu-system-x86_64"
#define LAUNCH_RAM_BACKEND "memory-backend-memfd"
#define LAUNCH_MACHINE "q35"
#endif

/* The in-process QEMU's place in the cache: $VFA_CACHE/<this>/bin/qemu-system-*. */
#define LAUNCH_INPROCESS_PREFIX "qemu-inprocess"
/* The in-process device's QOM id (QOM path /machine/peripheral/vfa0). */
#define LAUNCH_INPROCESS_ID "vfa0"

enum launch_mode {
	LAUNCH_VFIO_USER,
	LAUNCH_IN_PROCESS,
};

/* Which QEMU to run, and how. */
struct qemu_choice {
	char path[PATH_MAX];    /* the binary (a path inside the root when in_root is set) */
	char in_root[PATH_MAX]; /* provision/in-root.sh when QEMU lives in the trixie root, else "" */
	unsigned major, minor, micro;
};

#define LAUNCH_BINDS_MAX 4

struct launch {
	enum launch_mode mode;
	const char *device;
	const char *memory;    /* QEMU size syntax */
	const char *log_level; /* the broker's; NULL: warn (info when it logs to a file) */
	bool companion;
	/* vfio-user: the broker's sockets; in-process: sockets.dir holds qmp.sock */
	struct socket_paths sockets;
	char qmp[PATH_MAX];    /* in-process: QEMU's QMP socket ("" for none) */
	bool no_shutdown;      /* in-process: QEMU stays after the guest powers off (QMP quit ends it) */
	/* Directories QEMU must see when it runs inside the trixie root. */
	const char *binds[LAUNCH_BINDS_MAX];
	size_t bind_count;
	struct qemu_choice qemu_bin;
	struct child broker;
	struct child qemu;
};

#define LAUNCH_ARGV_MAX 512

struct launch_argv {
	char *v[LAUNCH_ARGV_MAX];
	size_t count;
};

/* The source tree (provision/, guest/linux/): $VFA_SOURCE_DIR or the build's. */
const char *launch_source_dir(void);
/* $VFA_CACHE or /var/cache/vfio-apple. */
const char *launch_cache_dir(void);

/*
 * vfio-user mode: pick QEMU: explicit_path, else qemu-system-* on PATH if
 * >= 10.1, else (may_use_root, as root) the provisioned trixie root's.
 * Returns 0, or -errno with an actionable line in err (version found and
 * needed).
 */
int launch_find_qemu(const char *explicit_path, bool may_use_root, struct qemu_choice *q, char *err,
		     size_t errlen);

/* Does `-device help` output list the in-process device? */
bool launch_help_has_inprocess(const char *device_help);

/*
 * In-process mode: the first of explicit_path (--qemu), $QEMU_BIN ($QEMU_BIN_ARM
 * when system is qemu-system-aarch64), $VFA_CACHE/qemu-inprocess/bin/SYSTEM,
 * then SYSTEM on PATH whose `-device help` lists vfio-apple-pci.  system NULL:
 * this host's (LAUNCH_QEMU_SYSTEM).  Returns 0, or -ENOENT with a line in
 * err saying what each candidate lacked and how to provide one (docs/qemu.md).
 */
int launch_find_inprocess_qemu(const char *explicit_path, const char *system, struct qemu_choice *q, char *err,
			       size_t errlen);

/*
 * The in-process device option: "vfio-apple-pci,id=vfa0,host=H,addr=0x5,
 * companion-addr=0x6" (or companion=off), the commas of H doubled as QEMU's
 * option syntax wants.  0, or -E2BIG when it does not fit.
 */
int launch_inprocess_device(const char *device, bool companion, char *buf, size_t len);

/* QEMU's command line: our RAM, devices (and QMP), then the user's. */
int launch_qemu_argv(const struct launch *l, int user_argc, char *const user_argv[], struct launch_argv *a);
void launch_argv_free(struct launch_argv *a);

/*
 * Socket directory and the sockets of the mode (vfio-user: control,
 * passthrough, companion; in-process: the QMP socket): free, or an
 * actionable error.
 */
int launch_prepare_sockets(struct launch *l, char *err, size_t errlen);
/* Start `vfio-apple serve` (output to log_fd, or inherited if -1) and wait
 * until it answers on its control socket. */
int launch_start_broker(struct launch *l, int log_fd, char *err, size_t errlen);
/* QEMU, then the broker (if any); returns the broker's exit code (0 without one). */
int launch_stop_all(struct launch *l);

bool launch_memory_valid(const char *text);

#endif
