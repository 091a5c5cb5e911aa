/* SPDX-License-Identifier: MIT */
/*
 * The launcher: find a QEMU, prepare sockets, start the broker, build QEMU's
 * command line, and tear everything down.  One layer below the things that
 * launch (the VM of `run` in vm.c, the demo in demo.c); it calls
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

/*
 * `vfio-apple run`'s layout (the demo keeps the fixed one below): every
 * device in its own hot-pluggable PCIe slot, a pcie-root-port at
 * 00:02.SLOT, so that it can be attached, detached and pulled while the
 * guest runs.  In a slot the companion is function 0 (multifunction) and
 * the managed function is function 1: Linux scans a hot-added slot whole
 * and then binds drivers in function order, so apple_dma owns the function
 * before its driver probes.  The ports are the first bridges on bus 0,
 * so the guest numbers slot S's bus S + 1 (the companion's MANAGED_BDF).
 */
#define LAUNCH_SLOTS_MAX 8
#define LAUNCH_SLOTS_DEFAULT 4

/* A device cold-plugged into a slot at start. */
struct launch_slot_dev {
	bool used;
	char id[16];              /* the function's QEMU id: vfa<N>; its companion's is vfa<N>-dma */
	const char *device;       /* the host device string */
	const char *passthrough;  /* vfio-user: the broker's sockets */
	const char *companion;
};

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
	/* 0: the demo's fixed layout (function 00:05.0, companion 00:06.0);
	 * else that many slots (LAUNCH_SLOTS_MAX at most), slot_dev[] in them. */
	unsigned slots;
	struct launch_slot_dev slot_dev[LAUNCH_SLOTS_MAX];
	char run_qmp[PATH_MAX]; /* the launcher's own QMP monitor ("" for none) */
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

/* Slot S's guest bus number (its port's secondary bus). */
unsigned launch_slot_bus(unsigned slot);
/* "pcie-root-port,id=vfa-port<S>,..." for -device.  0 or -E2BIG. */
int launch_port_option(unsigned slot, char *buf, size_t len);
/*
 * One device of a slot as a JSON object, for -device and QMP device_add
 * alike: the managed function (companion false) or its companion.  Paths
 * and host strings are JSON-quoted.  0, or -E2BIG.
 */
int launch_slot_device_json(enum launch_mode mode, const struct launch_slot_dev *d, unsigned slot, bool with_companion,
			    bool companion, char *buf, size_t len);

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
/* One broker, for the launcher of several devices (vm.c). */
struct broker_start {
	const char *device;
	const struct socket_paths *sockets;
	const char *guest_addr; /* MANAGED_BDF, "BB:DD.F" */
	bool companion;
	const char *log_level;  /* NULL: warn (info when it logs to a file) */
	int log_fd;             /* -1: inherited */
	bool prefer_msi;        /* serve --prefer-msi */
};
int launch_start_broker_for(struct child *broker, const struct broker_start *how, char *err, size_t errlen);
/* QEMU, then the broker (if any); returns the broker's exit code (0 without one). */
int launch_stop_all(struct launch *l);

bool launch_memory_valid(const char *text);

#endif
