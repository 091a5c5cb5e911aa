/* SPDX-License-Identifier: MIT */
/*
 * Child processes of `vfio-apple run`: each in its own process group so
 * that the launcher, not the terminal, decides the order of shutdown
 * (QEMU first, then the broker, which releases every DMA mapping).
 */
#ifndef VFA_CLI_PROC_H
#define VFA_CLI_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct child {
	const char *name;
	pid_t pid;     /* 0: not started */
	bool exited;
	int status;    /* waitpid status once exited */
};

/* Where a child's stdin/stdout/stderr go: -1 inherits. */
struct child_io {
	int in, out, err;
};

/*
 * Install handlers for SIGINT, SIGTERM, SIGHUP and SIGCHLD that only note
 * the signal; proc_signal_fd() becomes readable when one arrives.
 */
int proc_signals_init(void);
int proc_signal_fd(void);
/* The last stop signal received (SIGINT, SIGTERM, SIGHUP) or 0. */
int proc_stop_signal(void);
/* Drain the signal pipe and collect exited children. */
void proc_reap(struct child *const children[], size_t n);

/* fork + execvp argv in a new process group; 0 or -errno. */
int proc_spawn(struct child *c, char *const argv[], const struct child_io *io);
/*
 * Send sig to c's process group, wait up to grace_ms, then SIGKILL it.
 * Always leaves c exited.
 */
void proc_stop(struct child *c, int sig, int grace_ms);

/*
 * Run argv to completion, its stdout into buf (NUL-terminated, truncated
 * to len - 1); stderr to /dev/null unless keep_stderr.  Returns the exit
 * code, or -errno if it could not run.
 */
int proc_capture(char *const argv[], char *buf, size_t len, bool keep_stderr);

/* The exit code a shell would report for a waitpid status. */
int proc_exit_code(int status);

/* This executable, for re-running itself as `serve` (argv0 as fallback). */
void cli_set_argv0(const char *argv0);
int cli_self_path(char *buf, size_t len);

#endif
