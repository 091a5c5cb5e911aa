// SPDX-License-Identifier: MIT
/* Child processes of the launcher; see proc.h. */
#include "proc.h"

#include "clock.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#ifdef __APPLE__
#include <mach-o/dyld.h>
#endif

static int signal_pipe[2] = { -1, -1 };
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
	int saved = errno;
	char byte = 1;

	if (sig != SIGCHLD)
		stop_signal = sig;
	if (write(signal_pipe[1], &byte, 1) < 0) {
		/* Pipe full: a wake-up is already pending. */
	}
	errno = saved;
}

int proc_signals_init(void)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGCHLD };
	struct sigaction sa;

	if (signal_pipe[0] >= 0)
		return 0;
	if (pipe(signal_pipe) < 0)
		return -errno;
	for (int i = 0; i < 2; i++) {
		fcntl(signal_pipe[i], F_SETFD, FD_CLOEXEC);
		fcntl(signal_pipe[i], F_SETFL, O_NONBLOCK);
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (sigaction(sigs[i], &sa, NULL) < 0)
			return -errno;
	return 0;
}

int proc_signal_fd(void)
{
	return signal_pipe[0];
}

int proc_stop_signal(void)
{
	return stop_signal;
}

void proc_reap(struct child *const children[], size_t n)
{
	char buf[64];
	pid_t pid;
	int status;

	while (signal_pipe[0] >= 0 && read(signal_pipe[0], buf, sizeof(buf)) > 0)
		;
	for (size_t i = 0; i < n; i++) {
		struct child *c = children[i];

		if (!c->pid || c->exited)
			continue;
		pid = waitpid(c->pid, &status, WNOHANG);
		if (pid == c->pid) {
			c->exited = true;
			c->status = status;
		}
	}
}

int proc_spawn(struct child *c, char *const argv[], const struct child_io *io)
{
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		sigset_t none;

		setpgid(0, 0);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		signal(SIGCHLD, SIG_DFL);
		signal(SIGTTOU, SIG_DFL);
		signal(SIGTTIN, SIG_DFL);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
#ifdef __linux__
		/* Nothing outlives a launcher that was killed outright. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
		if (io) {
			if (io->in >= 0)
				dup2(io->in, 0);
			if (io->out >= 0)
				dup2(io->out, 1);
			if (io->err >= 0)
				dup2(io->err, 2);
		}
		execvp(argv[0], argv);
		fprintf(stderr, "vfio-apple: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	setpgid(pid, pid); /* also here: no race with the child's own call */
	c->pid = pid;
	c->exited = false;
	c->status = 0;
	return 0;
}

void proc_stop(struct child *c, int sig, int grace_ms)
{
	struct child *const one[] = { c };
	int64_t deadline = vfa_now_ms() + grace_ms;

	if (!c->pid || c->exited)
		return;
	/* One signal only: a second one could hit a broker that has already
	 * restored default handling while it shuts down. */
	if (kill(-c->pid, sig) < 0)
		kill(c->pid, sig); /* it left its group */
	for (;;) {
		proc_reap(one, 1);
		if (c->exited)
			return;
		if (vfa_now_ms() >= deadline)
			break;
		poll(NULL, 0, 20);
	}
	if (kill(-c->pid, SIGKILL) < 0)
		kill(c->pid, SIGKILL);
	if (waitpid(c->pid, &c->status, 0) != c->pid)
		c->status = 0; /* already collected elsewhere */
	c->exited = true;
}

int proc_capture(char *const argv[], char *buf, size_t len, bool keep_stderr)
{
	int fds[2], status;
	size_t used = 0;
	pid_t pid;

	if (pipe(fds) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		int ret = -errno;

		close(fds[0]);
		close(fds[1]);
		return ret;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDWR);

		dup2(fds[1], 1);
		if (devnull >= 0) {
			dup2(devnull, 0);
			if (!keep_stderr)
				dup2(devnull, 2);
		}
		close(fds[0]);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(fds[1]);
	for (;;) {
		char scratch[4096];
		char *dst = used + 1 < len ? buf + used : scratch;
		size_t room = used + 1 < len ? len - 1 - used : sizeof(scratch);
		ssize_t n = read(fds[0], dst, room);

		if (n > 0) {
			if (dst != scratch)
				used += (size_t)n;
		} else if (n == 0 || errno != EINTR) {
			break;
		}
	}
	close(fds[0]);
	if (len)
		buf[used] = '\0';
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return proc_exit_code(status);
}

int proc_exit_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 1;
}

static const char *program_argv0;

void cli_set_argv0(const char *argv0)
{
	program_argv0 = argv0;
}

int cli_self_path(char *buf, size_t len)
{
#ifdef __linux__
	ssize_t n = readlink("/proc/self/exe", buf, len - 1);

	if (n > 0) {
		buf[n] = '\0';
		return 0;
	}
#endif
#ifdef __APPLE__
	/* macOS has no /proc; dyld knows the path (maybe through symlinks). */
	char raw[PATH_MAX], resolved[PATH_MAX];
	uint32_t rawlen = sizeof(raw);

	if (_NSGetExecutablePath(raw, &rawlen) == 0 && realpath(raw, resolved)) {
		if (strlen(resolved) >= len)
			return -ENAMETOOLONG;
		memcpy(buf, resolved, strlen(resolved) + 1);
		return 0;
	}
#endif
	if (program_argv0 && strchr(program_argv0, '/')) {
		char resolved[PATH_MAX];

		if (!realpath(program_argv0, resolved))
			return -errno;
		if (strlen(resolved) >= len)
			return -ENAMETOOLONG;
		memcpy(buf, resolved, strlen(resolved) + 1);
		return 0;
	}
	return -ENOENT;
}
