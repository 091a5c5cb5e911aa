// SPDX-License-Identifier: MIT
/*
 * `vfio-apple run`: start the broker, wait for its sockets, start QEMU with
 * shareable guest RAM and both vfio-user-pci devices, and clean everything
 * up however it ends.  With no QEMU arguments on Linux it runs the demo
 * (demo.c): a provisioned guest that does verified I/O.
 */
#include "cli.h"
#include "log.h"
#include "proc.h"
#include "run.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#ifdef __APPLE__
/* Apple Silicon runs arm64 guests; macOS has no memfd: POSIX shm instead.
 * (Not built or run on a Mac yet: see README.) */
#define QEMU_SYSTEM "qemu-system-aarch64"
#define RAM_BACKEND "memory-backend-shm"
#define MACHINE "virt"
#else
#define QEMU_SYSTEM "qemu-system-x86_64"
#define RAM_BACKEND "memory-backend-memfd"
#define MACHINE "q35"
#endif

static void usage(FILE *out)
{
	fputs("Usage: vfio-apple run [options] [-- QEMU-ARGUMENTS...]\n"
	      "\n"
	      "Start a broker (vfio-apple serve), wait for its sockets, then QEMU with\n"
	      "shareable guest RAM (" RAM_BACKEND ",share=on) and two vfio-user-pci\n"
	      "devices: the passthrough function at 00:05.0 and the apple-dma companion\n"
	      "at 00:06.0.  Arguments after -- go to QEMU verbatim.  The broker and QEMU\n"
	      "are always stopped on the way out, also on Ctrl-C.\n"
	      "\n"
	      "Without QEMU arguments (Linux) it runs the simulated demo: provisions QEMU\n"
	      "11.1, a guest kernel and an initramfs with apple_dma and fio (cached in\n"
	      "$VFA_CACHE, default /var/cache/vfio-apple; the first time needs root),\n"
	      "boots the guest, runs verified I/O and prints a summary.  Exit status 0\n"
	      "only if the I/O was verified and the DART saw no fault.\n"
	      "\n"
	      "  -d, --device SPEC       host device (default sim:nvme,size=256M,dart=apple);\n"
	      "                          see `vfio-apple serve --help`\n"
	      "  -s, --socket-dir DIR    broker sockets (default as for serve)\n"
	      "  -m, --memory SIZE       guest RAM, QEMU syntax (default 1G)\n"
	      "      --qemu PATH         the qemu-system binary (default: " QEMU_SYSTEM " on\n"
	      "                          PATH if >= 10.1, else the provisioned trixie root's)\n"
	      "  -k, --kernel VERSION    demo guest kernel: 6.1 (default), 6.12 or 7.3\n"
	      "      --timeout SECONDS   demo: give up after this long (default 900)\n"
	      "      --keep              demo: keep the work directory (console log, initramfs)\n"
	      "  -l, --log-level LEVEL   the broker's: error, warn (default; the demo's log: info),\n"
	      "                          info, debug\n"
	      "  -h, --help              this text\n"
	      "\n"
	      "Guest RAM must stay shareable: -m, -mem-path, memory-backend-ram and\n"
	      "memory-backend= in -machine are refused after --.\n",
	      out);
}


const char *run_source_dir(void)
{
	const char *dir = getenv("VFA_SOURCE_DIR");

	return dir && *dir ? dir : VFA_DEFAULT_SOURCE_DIR;
}

const char *run_cache_dir(void)
{
	const char *dir = getenv("VFA_CACHE");

	return dir && *dir ? dir : "/var/cache/vfio-apple";
}

/* First executable `name` on PATH, like execvp would pick. */
static bool find_in_path(const char *name, char *out, size_t len)
{
	const char *path = getenv("PATH");

	if (strchr(name, '/')) {
		snprintf(out, len, "%s", name);
		return access(name, X_OK) == 0;
	}
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	while (*path) {
		size_t dir_len = strcspn(path, ":");

		if (dir_len && (size_t)snprintf(out, len, "%.*s/%s", (int)dir_len, path, name) < len &&
		    access(out, X_OK) == 0)
			return true;
		path += dir_len;
		if (*path == ':')
			path++;
	}
	return false;
}

int run_find_qemu(const char *explicit_path, bool may_use_root, struct qemu_choice *q, char *err, size_t errlen)
{
	char out[512], host_found[PATH_MAX + 128] = "";
	unsigned major, minor, micro;
	const char *name = QEMU_SYSTEM;

	bool found;

	memset(q, 0, sizeof(*q));
	found = find_in_path(explicit_path ? explicit_path : name, q->path, sizeof(q->path));
	if (explicit_path && !found) {
		snprintf(err, errlen, "--qemu %s: no such executable", explicit_path);
		return -ENOENT;
	}
	if (found) {
		char *argv[] = { q->path, (char *)"--version", NULL };
		int rc;

		rc = proc_capture(argv, out, sizeof(out), false);
		if (rc != 0 || qemu_version_parse(out, &major, &minor, &micro) < 0) {
			snprintf(host_found, sizeof(host_found), "%s does not answer --version like QEMU", q->path);
		} else if (qemu_version_ok(major, minor)) {
			q->major = major, q->minor = minor, q->micro = micro;
			return 0;
		} else {
			snprintf(host_found, sizeof(host_found), "QEMU %u.%u.%u at %s is too old", major, minor, micro,
				 q->path);
		}
		if (explicit_path) {
			snprintf(err, errlen, "%s: vfio-user-pci needs QEMU >= %d.%d; give --qemu a newer one", host_found,
				 QEMU_MIN_MAJOR, QEMU_MIN_MINOR);
			return -ENOEXEC;
		}
	}

	/* The provisioned trixie root (provision/provision.sh) has QEMU 11.1. */
	if (may_use_root) {
		char root_qemu[PATH_MAX];

		snprintf(root_qemu, sizeof(root_qemu), "%s/trixie/usr/bin/qemu-system-x86_64", run_cache_dir());
		if (access(root_qemu, X_OK) == 0 && geteuid() == 0) {
			char in_root[PATH_MAX];
			char *argv[] = { in_root, (char *)"--", (char *)"/usr/bin/qemu-system-x86_64", (char *)"--version",
					 NULL };

			snprintf(in_root, sizeof(in_root), "%s/provision/in-root.sh", run_source_dir());
			if (proc_capture(argv, out, sizeof(out), false) == 0 &&
			    qemu_version_parse(out, &major, &minor, &micro) == 0 && qemu_version_ok(major, minor)) {
				snprintf(q->path, sizeof(q->path), "/usr/bin/qemu-system-x86_64");
				snprintf(q->in_root, sizeof(q->in_root), "%s", in_root);
				q->major = major, q->minor = minor, q->micro = micro;
				return 0;
			}
		}
	}
	if (host_found[0])
		snprintf(err, errlen,
			 "%s: vfio-user-pci needs QEMU >= %d.%d; install a newer " QEMU_SYSTEM ", or run "
			 "`vfio-apple run` once as root (no arguments) to provision QEMU 11.1 into %s",
			 host_found, QEMU_MIN_MAJOR, QEMU_MIN_MINOR, run_cache_dir());
	else
		snprintf(err, errlen,
			 "no " QEMU_SYSTEM " found (needs QEMU >= %d.%d for vfio-user-pci): install one, or run "
			 "`vfio-apple run` once as root (no arguments) to provision QEMU 11.1 into %s",
			 QEMU_MIN_MAJOR, QEMU_MIN_MINOR, run_cache_dir());
	return -ENOENT;
}

/* A growable argv. */
static int argv_add(struct run_argv *a, const char *arg)
{
	if (a->count + 2 > RUN_ARGV_MAX)
		return -E2BIG;
	a->v[a->count] = strdup(arg);
	if (!a->v[a->count])
		return -ENOMEM;
	a->count++;
	a->v[a->count] = NULL;
	return 0;
}

void run_argv_free(struct run_argv *a)
{
	for (size_t i = 0; i < a->count; i++)
		free(a->v[i]);
	a->count = 0;
	a->v[0] = NULL;
}

static int argv_addf(struct run_argv *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int argv_addf(struct run_argv *a, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf))
		return -E2BIG;
	return argv_add(a, buf);
}

int run_qemu_argv(const struct run_plan *plan, int user_argc, char *const user_argv[], struct run_argv *a)
{
	int ret = 0;
	char cwd[PATH_MAX];

	a->count = 0;
	a->v[0] = NULL;
	if (plan->qemu_bin.in_root[0]) {
		/* Inside the root: sockets, work files and the current directory
		 * appear at their own paths; the shell keeps the directory. */
		if (!getcwd(cwd, sizeof(cwd)))
			snprintf(cwd, sizeof(cwd), "/");
		ret |= argv_add(a, plan->qemu_bin.in_root);
		ret |= argv_add(a, "--bind");
		ret |= argv_add(a, plan->sockets.dir);
		if (plan->work_dir[0]) {
			ret |= argv_add(a, "--bind");
			ret |= argv_add(a, plan->work_dir);
		}
		if (strcmp(cwd, "/") != 0) {
			ret |= argv_add(a, "--bind");
			ret |= argv_add(a, cwd);
		}
		/* Absolute paths among the user's arguments (kernel, disks). */
		for (int i = 0; i < user_argc; i++) {
			char dir[PATH_MAX];
			struct stat st;

			if (user_argv[i][0] != '/' || stat(user_argv[i], &st) < 0 ||
			    strlen(user_argv[i]) >= sizeof(dir))
				continue;
			memcpy(dir, user_argv[i], strlen(user_argv[i]) + 1);
			if (!S_ISDIR(st.st_mode))
				*strrchr(dir, '/') = '\0';
			if (!dir[0] || strcmp(dir, "/") == 0)
				continue; /* never hide the root's own / */
			ret |= argv_add(a, "--bind");
			ret |= argv_add(a, dir);
		}
		ret |= argv_add(a, "--");
		ret |= argv_add(a, "/bin/sh");
		ret |= argv_add(a, "-c");
		ret |= argv_add(a, "cd \"$0\" && exec \"$@\"");
		ret |= argv_add(a, cwd);
	}
	ret |= argv_add(a, plan->qemu_bin.path);
	ret |= argv_addf(a, RAM_BACKEND ",id=vfa-ram,size=%s,share=on", plan->memory);
	/* (the option name goes before its value) */
	if (ret == 0) {
		char *value = a->v[a->count - 1];

		a->v[a->count - 1] = strdup("-object");
		ret |= a->v[a->count - 1] ? argv_add(a, value) : -ENOMEM;
		free(value);
	}
	ret |= argv_add(a, "-machine");
	ret |= argv_add(a, MACHINE ",memory-backend=vfa-ram");
	ret |= argv_add(a, "-m");
	ret |= argv_add(a, plan->memory);
	ret |= argv_add(a, "-device");
	ret |= argv_addf(a, "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"%s\"},\"addr\":\"0x5\"}",
			 plan->sockets.passthrough);
	if (plan->companion) {
		ret |= argv_add(a, "-device");
		ret |= argv_addf(a,
				 "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"%s\"},\"addr\":\"0x6\"}",
				 plan->sockets.companion);
	}
	for (int i = 0; i < user_argc && ret == 0; i++)
		ret |= argv_add(a, user_argv[i]);
	return ret ? -E2BIG : 0;
}

/* ---- the broker ---------------------------------------------------------- */

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool is_socket(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

int run_start_broker(struct run_plan *plan, int log_fd, char *err, size_t errlen)
{
	char self[PATH_MAX];
	char *argv[] = { self,
			 (char *)"serve",
			 (char *)"--device",
			 (char *)plan->device,
			 (char *)"--socket-dir",
			 plan->sockets.dir,
			 (char *)"--guest-addr",
			 (char *)"00:05.0",
			 (char *)"--log-level",
			 (char *)(plan->log_level ? plan->log_level : log_fd >= 0 ? "info" : "warn"),
			 plan->companion ? NULL : (char *)"--no-companion",
			 NULL };
	struct child_io io = { .in = -1, .out = log_fd, .err = log_fd };
	struct child *const kids[] = { &plan->broker };
	long long deadline;
	int ret;

	ret = cli_self_path(self, sizeof(self));
	if (ret < 0) {
		snprintf(err, errlen, "cannot find the vfio-apple executable itself: %s", strerror(-ret));
		return ret;
	}
	plan->broker.name = "broker";
	ret = proc_spawn(&plan->broker, argv, &io);
	if (ret < 0) {
		snprintf(err, errlen, "cannot start the broker: %s", strerror(-ret));
		return ret;
	}
	/* Ready when the vfio-user sockets exist and the control socket answers
	 * (connecting to a vfio-user socket would take the VMM's place). */
	deadline = now_ms() + 15000;
	while (now_ms() < deadline) {
		char qerr[CLI_ERR_LEN];
		struct json_object *status;

		proc_reap(kids, 1);
		if (plan->broker.exited) {
			snprintf(err, errlen, "the broker exited (status %d) before its sockets appeared; %s",
				 proc_exit_code(plan->broker.status),
				 log_fd >= 0 ? "see its log" : "see its message above");
			return -ECHILD;
		}
		if (proc_stop_signal())
			return -EINTR;
		if (is_socket(plan->sockets.passthrough) && (!plan->companion || is_socket(plan->sockets.companion))) {
			status = control_query(plan->sockets.control, 1000, qerr, sizeof(qerr));
			if (status) {
				json_object_put(status);
				return 0;
			}
		}
		poll(NULL, 0, 50);
	}
	snprintf(err, errlen, "the broker's sockets in %s did not appear within 15 s", plan->sockets.dir);
	return -ETIMEDOUT;
}

/* Stop QEMU first (the VMM lets go of the devices), then the broker, which
 * releases every DMA mapping on SIGTERM.  Returns the broker's exit code. */
int run_stop_all(struct run_plan *plan)
{
	proc_stop(&plan->qemu, SIGTERM, 5000);
	if (plan->broker.pid && !plan->broker.exited) {
		proc_stop(&plan->broker, SIGTERM, 10000);
		return proc_exit_code(plan->broker.status);
	}
	return plan->broker.pid ? proc_exit_code(plan->broker.status) : 0;
}

int run_prepare_sockets(struct run_plan *plan, char *err, size_t errlen)
{
	/* Control first: see serve.c. */
	const char *const socks[] = { plan->sockets.control, plan->sockets.passthrough, plan->sockets.companion };

	if (mkdir(plan->sockets.dir, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "cannot create socket directory %s: %s (run as root, or choose --socket-dir)",
			 plan->sockets.dir, strerror(errno));
		return -errno;
	}
	for (size_t i = 0; i < 3; i++) {
		int ret = socket_path_prepare(socks[i], err, errlen);

		if (ret < 0)
			return ret;
	}
	return 0;
}

/* ---- launcher mode ------------------------------------------------------- */

static int launch(struct run_plan *plan, int qemu_argc, char *const qemu_argv[])
{
	struct child *const kids[] = { &plan->qemu, &plan->broker };
	struct run_argv args = { .count = 0 };
	char err[CLI_ERR_LEN];
	bool gave_tty = false;
	int ret, broker_rc, qemu_rc;

	ret = run_start_broker(plan, -1, err, sizeof(err));
	if (ret < 0) {
		if (ret != -EINTR)
			cli_error("%s", err);
		run_stop_all(plan);
		return ret == -EINTR ? 128 + proc_stop_signal() : 1;
	}
	if (run_qemu_argv(plan, qemu_argc, qemu_argv, &args) < 0) {
		cli_error("too many QEMU arguments");
		run_stop_all(plan);
		return 2;
	}
	plan->qemu.name = "qemu";
	ret = proc_spawn(&plan->qemu, args.v, NULL);
	run_argv_free(&args);
	if (ret < 0) {
		cli_error("cannot start QEMU: %s", strerror(-ret));
		run_stop_all(plan);
		return 1;
	}
	/* An interactive QEMU (-nographic, a monitor) gets the terminal: Ctrl-C
	 * and Ctrl-A x then behave as with QEMU alone. */
	if (isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) == getpgrp()) {
		signal(SIGTTOU, SIG_IGN);
		gave_tty = tcsetpgrp(STDIN_FILENO, plan->qemu.pid) == 0;
	}
	while (!plan->qemu.exited && !plan->broker.exited && !proc_stop_signal()) {
		struct pollfd pfd = { .fd = proc_signal_fd(), .events = POLLIN };

		poll(&pfd, 1, 1000);
		proc_reap(kids, 2);
	}
	if (gave_tty)
		tcsetpgrp(STDIN_FILENO, getpgrp());
	if (plan->broker.exited && !plan->qemu.exited)
		cli_error("the broker exited (status %d) while QEMU was running; stopping QEMU",
			  proc_exit_code(plan->broker.status));
	broker_rc = run_stop_all(plan);
	qemu_rc = proc_exit_code(plan->qemu.status);
	if (proc_stop_signal())
		return 128 + proc_stop_signal();
	if (broker_rc != 0) {
		cli_error("the broker did not shut down cleanly (exit code %d)", broker_rc);
		return qemu_rc ? qemu_rc : 1;
	}
	return qemu_rc;
}

int cmd_run(int argc, char **argv)
{
	enum { OPT_QEMU = 256, OPT_TIMEOUT, OPT_KEEP };
	static const struct option options[] = {
		{ "device", required_argument, NULL, 'd' },
		{ "socket-dir", required_argument, NULL, 's' },
		{ "memory", required_argument, NULL, 'm' },
		{ "qemu", required_argument, NULL, OPT_QEMU },
		{ "kernel", required_argument, NULL, 'k' },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "keep", no_argument, NULL, OPT_KEEP },
		{ "log-level", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct run_plan plan;
	const char *qemu_path = NULL;
	char dir[256], err[CLI_ERR_LEN];
	bool demo;
	int opt, ret;

	memset(&plan, 0, sizeof(plan));
	plan.device = NULL;
	plan.memory = "1G";
	plan.log_level = NULL;
	plan.kernel = "6.1";
	plan.timeout_s = 900;
	plan.companion = true;
	socket_paths_default_dir(dir, sizeof(dir));
	while ((opt = getopt_long(argc, argv, "+d:s:m:k:l:h", options, NULL)) != -1) {
		switch (opt) {
		case 'd':
			plan.device = optarg;
			break;
		case 's':
			snprintf(dir, sizeof(dir), "%s", optarg);
			break;
		case 'm':
			plan.memory = optarg;
			break;
		case OPT_QEMU:
			qemu_path = optarg;
			break;
		case 'k':
			plan.kernel = optarg;
			break;
		case OPT_TIMEOUT: {
			long value;

			if (cli_parse_number(optarg, 10, 1, 86400, &value) < 0) {
				cli_error("bad --timeout '%s': give seconds, 1 to 86400", optarg);
				return 2;
			}
			plan.timeout_s = (int)value;
			break;
		}
		case OPT_KEEP:
			plan.keep = true;
			break;
		case 'l':
			if (cli_parse_log_level(optarg) < 0)
				return 2;
			plan.log_level = optarg;
			break;
		default:
			return cli_usage_exit(opt, usage);
		}
	}
	/* Everything left follows "--" (getopt stops there and at the first
	 * non-option, which must then be a mistake). */
	if (optind < argc && strcmp(argv[optind - 1], "--") != 0) {
		cli_error("unexpected argument '%s': QEMU arguments go after --, e.g. `vfio-apple run -- -nographic`",
			  argv[optind]);
		return 2;
	}
	demo = optind == argc;
	if (!plan.device)
		plan.device = "sim:nvme,size=256M,dart=apple";
	if (device_spec_check(plan.device, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		return 2;
	}
	if (!run_memory_valid(plan.memory)) {
		cli_error("bad --memory '%s': give a size such as 512M or 2G", plan.memory);
		return 2;
	}
	if (!demo && qemu_args_check(argc - optind, argv + optind, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		return 2;
	}
	if (socket_paths_from_dir(&plan.sockets, dir) < 0) {
		cli_error("socket directory %s is too long for a UNIX socket path: choose a shorter --socket-dir", dir);
		return 2;
	}
	if (proc_signals_init() < 0) {
		cli_error("cannot install signal handlers: %s", strerror(errno));
		return 1;
	}
	if (demo) {
#ifdef __linux__
		return run_demo(&plan, qemu_path);
#else
		cli_error("the simulated demo runs on Linux; on macOS give QEMU arguments after -- "
			  "(see docs/macos.md)");
		return 2;
#endif
	}
	ret = run_find_qemu(qemu_path, true, &plan.qemu_bin, err, sizeof(err));
	if (ret < 0) {
		cli_error("%s", err);
		return 1;
	}
	if (run_prepare_sockets(&plan, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		return 1;
	}
	return launch(&plan, argc - optind, argv + optind);
}

bool run_memory_valid(const char *text)
{
	char *end;
	unsigned long long value;

	if (!text || !*text || text[0] == '-')
		return false;
	errno = 0;
	value = strtoull(text, &end, 10);
	if (errno || end == text || value == 0)
		return false;
	if (*end == '\0')
		return true;
	return strchr("kKmMgGtT", *end) && end[1] == '\0';
}
