// SPDX-License-Identifier: MIT
/*
 * `vfio-apple run -- QEMU-ARGUMENTS`: the foreground launcher.  vfio-user
 * mode starts the broker, waits for its sockets, then QEMU with shareable
 * guest RAM and both vfio-user-pci devices; in-process mode starts a QEMU
 * that has vfio-apple-pci, with a QMP socket.  Everything is cleaned up
 * however it ends.
 */
#include "run.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int run_foreground(struct launch *l, int qemu_argc, char *const qemu_argv[])
{
	struct child *const kids[] = { &l->qemu, &l->broker };
	struct launch_argv args = { .count = 0 };
	char err[CLI_ERR_LEN];
	bool gave_tty = false;
	int ret, broker_rc, qemu_rc;

	if (l->mode == LAUNCH_VFIO_USER) {
		ret = launch_start_broker(l, -1, err, sizeof(err));
		if (ret < 0) {
			if (ret != -EINTR)
				cli_error("%s", err);
			launch_stop_all(l);
			return ret == -EINTR ? 128 + proc_stop_signal() : 1;
		}
	}
	if (launch_qemu_argv(l, qemu_argc, qemu_argv, &args) < 0) {
		cli_error("too many QEMU arguments");
		launch_stop_all(l);
		return 2;
	}
	if (l->mode == LAUNCH_IN_PROCESS)
		fprintf(stderr, "vfio-apple: in-process QEMU %u.%u.%u (%s); counters: vfio-apple status --qmp %s\n",
			l->qemu_bin.major, l->qemu_bin.minor, l->qemu_bin.micro, l->qemu_bin.path, l->qmp);
	l->qemu.name = "qemu";
	ret = proc_spawn(&l->qemu, args.v, NULL);
	launch_argv_free(&args);
	if (ret < 0) {
		cli_error("cannot start QEMU: %s", strerror(-ret));
		launch_stop_all(l);
		return 1;
	}
	/* An interactive QEMU (-nographic, a monitor) gets the terminal: Ctrl-C
	 * and Ctrl-A x then behave as with QEMU alone. */
	if (isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) == getpgrp()) {
		signal(SIGTTOU, SIG_IGN);
		gave_tty = tcsetpgrp(STDIN_FILENO, l->qemu.pid) == 0;
	}
	while (!l->qemu.exited && !(l->broker.pid && l->broker.exited) && !proc_stop_signal()) {
		struct pollfd pfd = { .fd = proc_signal_fd(), .events = POLLIN };

		poll(&pfd, 1, 1000);
		proc_reap(kids, 2);
	}
	if (gave_tty)
		tcsetpgrp(STDIN_FILENO, getpgrp());
	if (l->broker.pid && l->broker.exited && !l->qemu.exited)
		cli_error("the broker exited (status %d) while QEMU was running; stopping QEMU",
			  proc_exit_code(l->broker.status));
	broker_rc = launch_stop_all(l);
	qemu_rc = proc_exit_code(l->qemu.status);
	if (proc_stop_signal())
		return 128 + proc_stop_signal();
	if (broker_rc != 0) {
		cli_error("the broker did not shut down cleanly (exit code %d)", broker_rc);
		return qemu_rc ? qemu_rc : 1;
	}
	return qemu_rc;
}
