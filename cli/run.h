/* SPDX-License-Identifier: MIT */
/* `vfio-apple run`: the launcher's pieces, shared with the demo (demo.c). */
#ifndef VFA_CLI_RUN_H
#define VFA_CLI_RUN_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "cli.h"
#include "proc.h"

/* Which QEMU to run, and how. */
struct qemu_choice {
	char path[PATH_MAX];    /* the binary (a path inside the root when in_root is set) */
	char in_root[PATH_MAX]; /* provision/in-root.sh when QEMU lives in the trixie root, else "" */
	unsigned major, minor, micro;
};

struct run_plan {
	const char *device;
	const char *memory;    /* QEMU size syntax */
	const char *log_level; /* the broker's; NULL: warn (demo: info, into its log file) */
	const char *kernel;    /* demo: 6.1, 6.12 or 7.3 */
	int timeout_s;         /* demo */
	bool keep;             /* demo: keep work_dir */
	bool companion;
	struct socket_paths sockets;
	char work_dir[PATH_MAX]; /* demo: console log, initramfs; "" otherwise */
	struct qemu_choice qemu_bin;
	struct child broker;
	struct child qemu;
};

#define RUN_ARGV_MAX 512

struct run_argv {
	char *v[RUN_ARGV_MAX];
	size_t count;
};

/* The source tree (provision/, guest/linux/): $VFA_SOURCE_DIR or the build's. */
const char *run_source_dir(void);
/* $VFA_CACHE or /var/cache/vfio-apple. */
const char *run_cache_dir(void);

/*
 * Pick QEMU: explicit_path, else qemu-system-x86_64 on PATH if >= 10.1,
 * else (may_use_root, as root) the provisioned trixie root's.  Returns 0,
 * or -errno with an actionable line in err (version found and needed).
 */
int run_find_qemu(const char *explicit_path, bool may_use_root, struct qemu_choice *q, char *err,
		  size_t errlen);

/* QEMU's command line: our RAM backend and devices, then the user's. */
int run_qemu_argv(const struct run_plan *plan, int user_argc, char *const user_argv[], struct run_argv *a);
void run_argv_free(struct run_argv *a);

/* Socket directory and the three sockets: free, or an actionable error. */
int run_prepare_sockets(struct run_plan *plan, char *err, size_t errlen);
/* Start `vfio-apple serve` (output to log_fd, or inherited if -1) and wait
 * until it answers on its control socket. */
int run_start_broker(struct run_plan *plan, int log_fd, char *err, size_t errlen);
/* QEMU, then the broker; returns the broker's exit code. */
int run_stop_all(struct run_plan *plan);

bool run_memory_valid(const char *text);

/* The simulated demo (Linux). */
int run_demo(struct run_plan *plan, const char *qemu_path);

#endif
