/* SPDX-License-Identifier: MIT */
/*
 * `vfio-apple run` with QEMU arguments: the foreground launcher (run.c),
 * over the launcher unit (launch.h).  The demo (demo.h) is its sibling;
 * cmd_run.c picks one of them.
 */
#ifndef VFA_CLI_RUN_H
#define VFA_CLI_RUN_H

#include "launch.h"

/*
 * Start what the launch's mode needs (vfio-user: the broker, then QEMU;
 * in-process: QEMU alone, with a QMP socket for `status --qmp`), hand QEMU
 * the terminal, wait, and stop everything however it ends.  Returns the
 * exit code (QEMU's, 128+N on signal N, 1 on a setup failure).
 */
int run_foreground(struct launch *l, int qemu_argc, char *const qemu_argv[]);

#endif
