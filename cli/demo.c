// SPDX-License-Identifier: MIT
/*
 * The simulated demo of `vfio-apple run` (no QEMU arguments, Linux):
 *   1. provision/provision.sh --headers: QEMU 11.1 root, guest kernels (cached);
 *   2. guest/linux/build.sh: apple_dma for the guest kernel;
 *   3. provision/mkinitramfs.sh: busybox, nvme, apple_dma, fio and
 *      cli/demo-workload.sh;
 *   4. through the launcher (launch.h): vfio-user: the broker (DART mode),
 *      then QEMU under TCG; in-process: a QEMU with vfio-apple-pci and a QMP
 *      socket; the guest loads apple_dma and nvme and runs fio with
 *      verification;
 *   5. a summary from the guest's console lines and the counters (the
 *      broker's status, or the devices' QOM counters over QMP).
 * Exit 0 only if everything was verified.
 */
#include "cli.h"
#include "clock.h"
#include "demo.h"
#include "launch.h"
#include "qmp.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>


static int64_t start_ms;

/* One progress line: "[  12 s] text". */
static void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void progress(const char *fmt, ...)
{
	va_list ap;

	printf("[%4" PRId64 " s] ", (vfa_now_ms() - start_ms) / 1000);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

/* KEY=VALUE lines of `provision.sh env`. */
bool demo_env_value(const char *env, const char *key, char *out, size_t len)
{
	size_t key_len = strlen(key);

	for (const char *line = env; line && *line;) {
		const char *end = strchr(line, '\n');
		size_t line_len = end ? (size_t)(end - line) : strlen(line);

		if (line_len > key_len && strncmp(line, key, key_len) == 0 && line[key_len] == '=') {
			size_t value_len = line_len - key_len - 1;

			if (value_len >= len)
				return false;
			memcpy(out, line + key_len + 1, value_len);
			out[value_len] = '\0';
			return true;
		}
		line = end ? end + 1 : NULL;
	}
	return false;
}

/* Run a helper script with its progress on our terminal; 0 or its code. */
static int run_step(char *const argv[], bool quiet_stdout)
{
	struct child c = { .name = argv[0] };
	struct child *const one[] = { &c };
	int devnull = quiet_stdout ? open("/dev/null", O_WRONLY | O_CLOEXEC) : -1;
	struct child_io io = { .in = -1, .out = devnull, .err = -1 };
	int ret = proc_spawn(&c, argv, &io);

	if (devnull >= 0)
		close(devnull);
	if (ret < 0)
		return 127;
	while (!c.exited) {
		struct pollfd pfd = { .fd = proc_signal_fd(), .events = POLLIN };

		if (proc_stop_signal()) {
			proc_stop(&c, SIGTERM, 5000);
			return 128 + proc_stop_signal();
		}
		poll(&pfd, 1, 500);
		proc_reap(one, 1);
	}
	return proc_exit_code(c.status);
}

static const char *kernel_tag(const char *version)
{
	if (strcmp(version, "6.1") == 0)
		return "6_1";
	if (strcmp(version, "6.12") == 0)
		return "6_12";
	if (strcmp(version, "7.3") == 0)
		return "7_3";
	return NULL;
}

/*
 * guest/linux/build.sh KREL builds apple_dma.ko; it prints the module's
 * path as its last line of output.
 */
static int build_module(const char *krel, char *ko, size_t len)
{
	char script[PATH_MAX], out[8192];
	char *argv[] = { script, (char *)krel, NULL };
	char *last, *end;
	int rc;

	snprintf(script, sizeof(script), "%s/guest/linux/build.sh", launch_source_dir());
	if (access(script, X_OK) < 0) {
		cli_error("%s is missing: the guest module's build script is not in this tree", script);
		return -ENOENT;
	}
	rc = proc_capture(argv, out, sizeof(out), true);
	/* the last non-empty line */
	end = out + strlen(out);
	while (end > out && (end[-1] == '\n' || end[-1] == '\r'))
		*--end = '\0';
	last = strrchr(out, '\n');
	last = last ? last + 1 : out;
	if (rc != 0 || strlen(last) < 4 || strcmp(last + strlen(last) - 3, ".ko") != 0 || access(last, R_OK) < 0) {
		cli_error("building apple_dma for %s failed (guest/linux/build.sh exit %d)%s%s", krel, rc,
			  rc == 0 ? "; it named no module: " : "", rc == 0 ? last : "");
		return -EIO;
	}
	snprintf(ko, len, "%s", last);
	return 0;
}

static uint64_t status_u64(struct json_object *status, const char *section, const char *name)
{
	struct json_object *sub, *value;

	if (!status || !json_object_object_get_ex(status, section, &sub) ||
	    !json_object_object_get_ex(sub, name, &value))
		return 0;
	return (uint64_t)json_object_get_uint64(value);
}

void demo_keep_status(struct demo_result *r, struct json_object *status)
{
	uint64_t v;

	if (!status)
		return;
	/* Peaks and faults only grow; keep the largest ever seen. */
	v = status_u64(status, "dma", "peak_mappings");
	r->peak_mappings = v > r->peak_mappings ? v : r->peak_mappings;
	v = status_u64(status, "dma", "peak_bytes");
	r->peak_bytes = v > r->peak_bytes ? v : r->peak_bytes;
	v = status_u64(status, "dma", "faults");
	r->faults = v > r->faults ? v : r->faults;
}

/* "key=value" in a VFA-RESULT line. */
static bool result_value(const char *line, const char *key, char *out, size_t len)
{
	size_t key_len = strlen(key);

	for (const char *p = line; (p = strstr(p, key)) != NULL; p += key_len) {
		if ((p == line || p[-1] == ' ') && p[key_len] == '=') {
			size_t n = strcspn(p + key_len + 1, " \r\n");

			if (n >= len)
				n = len - 1;
			memcpy(out, p + key_len + 1, n);
			out[n] = '\0';
			return true;
		}
	}
	return false;
}

void demo_console_line(struct demo_result *r, char *line)
{
	char value[160];

	char *marker;

	line[strcspn(line, "\r")] = '\0';
	/* Markers may follow other output on the same console line. */
	if ((marker = strstr(line, "VFA-FIO-JSON ")) != NULL) {
		json_object_put(r->fio);
		r->fio = json_tokener_parse(marker + 13);
		return;
	}
	if ((marker = strstr(line, "VFA-RESULT ")) == NULL)
		return;
	line = marker;
	if (result_value(line, "init", value, sizeof(value))) {
		if (strcmp(value, "start") == 0) {
			r->booted = true;
			result_value(line, "kernel", r->kernel, sizeof(r->kernel));
			progress("guest: Linux %s booted; loading apple_dma and nvme", r->kernel);
			r->want_baseline = true;
		} else if (strcmp(value, "done") == 0 && result_value(line, "rc", value, sizeof(value))) {
			r->init_done = true;
			r->init_rc = atoi(value);
		}
	}
	if (result_value(line, "device", value, sizeof(value)) && strcmp(value, "seen") == 0) {
		r->device_seen = true;
		result_value(line, "pci", r->pci, sizeof(r->pci));
		if (result_value(line, "bytes", value, sizeof(value)))
			r->disk_bytes = strtoull(value, NULL, 10);
		progress("guest: nvme0n1 appeared at %s; running fio with verification", r->pci);
	}
	result_value(line, "companion", r->companion, sizeof(r->companion));
	if (result_value(line, "fio_rc", value, sizeof(value))) {
		r->fio_done = true;
		r->fio_rc = atoi(value);
		progress("guest: fio finished (exit %d)", r->fio_rc);
	}
	if (result_value(line, "stage", value, 64)) {
		char error[64] = "?";

		result_value(line, "error", error, sizeof(error));
		snprintf(r->failure, sizeof(r->failure), "%.63s: %.63s", value, error);
		progress("guest: FAILED at %s (%s)", value, error);
	}
}

/* fio's job numbers: errors, KiB moved and bandwidth (KiB/s) of one direction. */
static bool fio_numbers(struct json_object *fio, const char *dir, int64_t *error, int64_t *kib, int64_t *bw)
{
	struct json_object *jobs, *job, *side, *value;

	if (!fio || !json_object_object_get_ex(fio, "jobs", &jobs) || json_object_array_length(jobs) < 1)
		return false;
	job = json_object_array_get_idx(jobs, 0);
	if (!json_object_object_get_ex(job, "error", &value))
		return false;
	*error = json_object_get_int64(value);
	if (!json_object_object_get_ex(job, dir, &side))
		return false;
	*kib = json_object_object_get_ex(side, "io_kbytes", &value) ? json_object_get_int64(value) : 0;
	*bw = json_object_object_get_ex(side, "bw", &value) ? json_object_get_int64(value) : 0;
	return true;
}

static void show_tail(const char *path, int lines)
{
	char cmd[PATH_MAX + 64];
	char *argv[] = { (char *)"tail", (char *)"-n", cmd, (char *)path, NULL };
	char out[16384];

	snprintf(cmd, sizeof(cmd), "%d", lines);
	if (proc_capture(argv, out, sizeof(out), false) == 0 && out[0]) {
		fprintf(stderr, "---- last lines of %s ----\n%s----\n", path, out);
	}
}

/* The summary; returns true when everything was verified. */
bool demo_summarize(FILE *out, const char *device, const struct demo_result *r, int broker_rc)
{
	int64_t werr = 0, wkib = 0, wbw = 0, rerr = 0, rkib = 0, rbw = 0;
	bool have_fio = fio_numbers(r->fio, "write", &werr, &wkib, &wbw) &&
			fio_numbers(r->fio, "read", &rerr, &rkib, &rbw);
	uint64_t doorbells = status_u64(r->status, "companion", "doorbells");
	uint64_t map_entries = status_u64(r->status, "companion", "map_entries");
	uint64_t max_mappings = status_u64(r->status, "dma", "max_mappings");
	uint64_t max_bytes = status_u64(r->status, "dma", "max_bytes");
	bool companion_bound = r->companion[0] && strcmp(r->companion, "none") != 0;
	bool io_ok = r->fio_done && r->fio_rc == 0 && have_fio && werr == 0 && wkib > 0 && rkib >= wkib;
	/* SeaBIOS probes NVMe with guest-physical addresses before Linux and
	 * apple_dma exist: those faults are the firmware's, counted apart. */
	uint64_t boot_faults = r->have_baseline ? r->boot_faults : 0;
	uint64_t linux_faults = r->faults - (boot_faults < r->faults ? boot_faults : r->faults);
	bool dart_ok = r->status && doorbells > 0 && r->have_baseline && linux_faults == 0;
	bool ok = r->device_seen && companion_bound && io_ok && dart_ok && r->init_done && r->init_rc == 0 &&
		  broker_rc == 0;
	char size[32], peak[32], limit[32];

	format_bytes(r->disk_bytes, size, sizeof(size));
	format_bytes(r->peak_bytes, peak, sizeof(peak));
	format_bytes(max_bytes, limit, sizeof(limit));
	fprintf(out, "\nvfio-apple demo: %s, guest Linux %s\n", device, r->kernel[0] ? r->kernel : "(did not boot)");
	fprintf(out, "  device seen    %s", r->device_seen ? "yes" : "NO");
	if (r->device_seen)
		fprintf(out, ": nvme0n1 (%s) at %s, apple_dma bound to %s", size, r->pci,
		       companion_bound ? r->companion : "NOTHING");
	fputc('\n', out);
	fprintf(out, "  I/O verified   %s", io_ok ? "yes" : "NO");
	if (have_fio)
		fprintf(out, ": %.1f MiB written at random (4-128 KiB blocks), all read back and checked (crc32c), %" PRId64
		       " errors",
		       (double)wkib / 1024.0, werr + rerr);
	else if (r->fio_done)
		fprintf(out, ": fio exit %d, no report", r->fio_rc);
	fputc('\n', out);
	if (have_fio)
		fprintf(out, "  throughput     write %.1f MiB/s, verify-read %.1f MiB/s (TCG guest)\n", (double)wbw / 1024.0,
		       (double)rbw / 1024.0);
	fprintf(out, "  doorbells      %" PRIu64 " (%" PRIu64 " map entries)\n", doorbells, map_entries);
	if (max_mappings)
		fprintf(out, "  DART peak      %" PRIu64 " of %" PRIu64 " mappings, %s of %s\n", r->peak_mappings,
			max_mappings, peak, limit);
	else /* QMP has no limits to show */
		fprintf(out, "  DART peak      %" PRIu64 " mappings, %s\n", r->peak_mappings, peak);
	fprintf(out, "  DART faults    %" PRIu64 " while Linux ran", linux_faults);
	/* The dext reports no faults, so through the darwin backend a 0 only
	 * means none was seen; the test model logs "DART fault" lines. */
	if (strncmp(device, "sim-dext:", 9) == 0)
		fprintf(out, " (the dext does not report faults: see the broker log)");
	else if (boot_faults)
		fprintf(out, " (%" PRIu64 " before, from the firmware's NVMe probe: it has no apple_dma)", boot_faults);
	else if (!r->have_baseline)
		fprintf(out, " (unknown: the guest never reached Linux)");
	fputc('\n', out);
	if (r->failure[0])
		fprintf(out, "  guest failure  %s\n", r->failure);
	if (broker_rc != 0)
		fprintf(out, "  broker         exit %d on shutdown (mappings may not all have been released)\n", broker_rc);
	fprintf(out, "demo: %s\n", ok ? "PASS" : "FAIL");
	return ok;
}


/* The counters now: the broker's status, or the devices' over QMP. */
static struct json_object *read_counters(const struct launch *l, int timeout_ms)
{
	char err[CLI_ERR_LEN];

	if (l->mode == LAUNCH_IN_PROCESS)
		return qmp_query_counters(l->qmp, NULL, timeout_ms, err, sizeof(err));
	return control_query(l->sockets.control, timeout_ms, err, sizeof(err));
}

/* In-process with -no-shutdown: QEMU waits after the guest powered off. */
static bool guest_stopped(struct json_object *status)
{
	struct json_object *state;

	return status && json_object_object_get_ex(status, "run_state", &state) &&
	       (strcmp(json_object_get_string(state), "shutdown") == 0 ||
		strcmp(json_object_get_string(state), "guest-panicked") == 0);
}

static void keep_counters(struct demo_result *r, struct json_object *status)
{
	if (!status)
		return;
	demo_keep_status(r, status);
	json_object_put(r->status);
	r->status = status;
}

/* Boot the guest and follow its console until QEMU exits; 0, or -1 when
 * QEMU could not be started (said why). */
static int boot_guest(struct launch *l, const char *work_dir, int timeout_s, const char *kernel, const char *initrd,
		      struct demo_result *r)
{
	struct child *const kids[] = { &l->qemu, &l->broker };
	char console_path[PATH_MAX + 16];
	char *guest_args[] = { (char *)"-accel", (char *)"tcg", (char *)"-nodefaults", (char *)"-no-reboot",
			       (char *)"-display", (char *)"none", (char *)"-smp", (char *)"1",
			       (char *)"-cpu", (char *)"max",
			       (char *)"-bios", (char *)"qboot.rom",
			       (char *)"-serial", (char *)"stdio", (char *)"-kernel", (char *)kernel,
			       (char *)"-initrd", (char *)initrd, (char *)"-append",
			       (char *)"console=ttyS0 panic=-1 quiet loglevel=1" };
	struct launch_argv args = { .count = 0 };
	int64_t deadline = vfa_now_ms() + (int64_t)timeout_s * 1000, next_status = 0;
	static char line[256 * 1024];
	size_t used = 0;
	int pipefd[2] = { -1, -1 }, devnull, console, ret;
	bool quit_sent = false;
	struct child_io io;

	snprintf(console_path, sizeof(console_path), "%s/console.log", work_dir);
	console = open(console_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (console < 0) {
		cli_error("cannot create %s: %s", console_path, strerror(errno));
		return -1;
	}
	if (pipe(pipefd) < 0) {
		cli_error("cannot create a pipe for the guest console: %s", strerror(errno));
		close(console);
		return -1;
	}
	if (launch_qemu_argv(l, (int)(sizeof(guest_args) / sizeof(guest_args[0])), guest_args, &args) < 0) {
		cli_error("QEMU command line too long");
		close(pipefd[0]);
		close(pipefd[1]);
		close(console);
		return -1;
	}
	devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	io = (struct child_io){ .in = devnull, .out = pipefd[1], .err = pipefd[1] };
	l->qemu.name = "qemu";
	ret = proc_spawn(&l->qemu, args.v, &io);
	launch_argv_free(&args);
	close(pipefd[1]);
	if (devnull >= 0)
		close(devnull);
	if (ret < 0) {
		cli_error("cannot start QEMU: %s", strerror(-ret));
		close(pipefd[0]);
		close(console);
		return -1;
	}
	progress("QEMU %u.%u.%u started (TCG%s); guest console in %s", l->qemu_bin.major, l->qemu_bin.minor,
		 l->qemu_bin.micro, l->mode == LAUNCH_IN_PROCESS ? ", in-process devices" : "", console_path);
	fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
	for (bool open_pipe = true; open_pipe || !l->qemu.exited;) {
		struct pollfd pfds[2] = { { .fd = proc_signal_fd(), .events = POLLIN },
					  { .fd = open_pipe ? pipefd[0] : -1, .events = POLLIN } };

		poll(pfds, 2, 500);
		proc_reap(kids, 2);
		if (proc_stop_signal()) {
			progress("interrupted: stopping QEMU%s", l->broker.pid ? " and the broker" : "");
			break;
		}
		if (vfa_now_ms() > deadline) {
			cli_error("the guest did not finish within %d s (--timeout): stopping it", timeout_s);
			break;
		}
		if (l->broker.pid && l->broker.exited) {
			cli_error("the broker exited (status %d) while the guest ran; see %s/broker.log",
				  proc_exit_code(l->broker.status), work_dir);
			break;
		}
		/* Counters while the devices are in use. */
		if (vfa_now_ms() >= next_status && !l->qemu.exited && !quit_sent) {
			struct json_object *status = read_counters(l, 1000);
			bool stopped = guest_stopped(status);

			keep_counters(r, status);
			next_status = vfa_now_ms() + 1000;
			/* In-process: the guest powered off and QEMU kept the devices
			 * (-no-shutdown) so that these last counters could be read. */
			if (stopped) {
				quit_sent = true;
				if (qmp_quit(l->qmp, 2000) < 0)
					proc_stop(&l->qemu, SIGTERM, 5000);
			}
		}
		if (r->want_baseline) {
			struct json_object *status = read_counters(l, 1000);

			if (status) {
				uint64_t faults = 0;
				struct json_object *dma, *value;

				if (json_object_object_get_ex(status, "dma", &dma) &&
				    json_object_object_get_ex(dma, "faults", &value))
					faults = (uint64_t)json_object_get_uint64(value);
				r->boot_faults = faults;
				r->have_baseline = true;
				json_object_put(status);
			}
			r->want_baseline = false;
		}
		while (open_pipe) {
			ssize_t n = read(pipefd[0], line + used, sizeof(line) - 1 - used);
			char *nl;

			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
				open_pipe = false;
				break;
			}
			if (n < 0)
				break;
			if (write(console, line + used, (size_t)n) < 0) {
				/* the log is a convenience; the run goes on */
			}
			used += (size_t)n;
			line[used] = '\0';
			while ((nl = strchr(line, '\n')) != NULL) {
				*nl = '\0';
				demo_console_line(r, line);
				used -= (size_t)(nl + 1 - line);
				memmove(line, nl + 1, used + 1);
			}
			if (used == sizeof(line) - 1)
				used = 0; /* an absurdly long line: drop it */
		}
	}
	close(pipefd[0]);
	close(console);
	return 0;
}

/* Steps 1-3: provisioning, the module, the initramfs.  0 or an exit code. */
static int prepare_guest(const struct demo_options *opts, const char *tag, const char *work_dir, char *kernel,
			 char *initrd, size_t len)
{
	char provision[PATH_MAX], mkinitramfs[PATH_MAX], workload[PATH_MAX], env[8192];
	char key[64], modules[PATH_MAX], krel[128], ko[PATH_MAX];
	int rc;

	snprintf(provision, sizeof(provision), "%s/provision/provision.sh", launch_source_dir());
	snprintf(mkinitramfs, sizeof(mkinitramfs), "%s/provision/mkinitramfs.sh", launch_source_dir());
	snprintf(workload, sizeof(workload), "%s/cli/demo-workload.sh", launch_source_dir());

	/* 1. provisioning (cached; prints its own progress on stderr) */
	progress("provisioning QEMU 11.1, guest kernels and headers into %s (cached; the first time takes minutes)",
		 launch_cache_dir());
	{
		char *argv[] = { provision, (char *)"--headers", NULL };
		char *env_argv[] = { provision, (char *)"env", NULL };

		rc = run_step(argv, true);
		if (rc != 0) {
			if (rc < 128)
				cli_error("provisioning failed (exit %d): see the messages above and %s/provision.log", rc,
					  launch_cache_dir());
			return rc >= 128 ? rc : 1;
		}
		if (proc_capture(env_argv, env, sizeof(env), false) != 0) {
			cli_error("provision/provision.sh env failed after provisioning");
			return 1;
		}
	}
	snprintf(key, sizeof(key), "KERNEL_%s", tag);
	rc = demo_env_value(env, key, kernel, len);
	snprintf(key, sizeof(key), "MODULES_%s", tag);
	rc = rc && demo_env_value(env, key, modules, sizeof(modules));
	snprintf(key, sizeof(key), "KREL_%s", tag);
	if (!rc || !demo_env_value(env, key, krel, sizeof(krel))) {
		cli_error("provisioning did not produce the %s guest kernel (no %s): see %s/provision.log", opts->kernel,
			  key, launch_cache_dir());
		return 1;
	}

	/* 2. the guest module, built in the work directory (build.sh's $OUT)
	 * so that concurrent builds of the tree do not collide */
	progress("building apple_dma for Linux %s", krel);
	setenv("OUT", work_dir, 1);
	if (build_module(krel, ko, sizeof(ko)) < 0)
		return 1;

	/* 3. the initramfs */
	if ((size_t)snprintf(initrd, len, "%s/initramfs.cpio.gz", work_dir) >= len) {
		cli_error("work directory path %s is too long", work_dir);
		return 1;
	}
	progress("building the guest's initramfs (busybox, nvme, apple_dma, fio) in %s", work_dir);
	{
		char *argv[] = { mkinitramfs, (char *)"-o", initrd, (char *)"-m", modules, (char *)"--load",
				 (char *)"nvme", (char *)"--ko", ko, (char *)"--fio", (char *)"--script", workload,
				 NULL };

		rc = run_step(argv, false);
		if (rc != 0) {
			if (rc < 128)
				cli_error("building the initramfs failed (exit %d): see the messages above", rc);
			return rc;
		}
	}
	return 0;
}

/* Step 4's start: the broker (vfio-user) or nothing (in-process).  0 or an exit code. */
static int start_devices(struct launch *l, const char *work_dir, char *broker_log, size_t len)
{
	char err[CLI_ERR_LEN];
	int log_fd, rc;

	if (launch_prepare_sockets(l, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		return 1;
	}
	if (l->mode == LAUNCH_IN_PROCESS) {
		progress("in-process devices: vfio-apple-pci host=%s in QEMU %s (no broker); counters over QMP %s",
			 l->device, l->qemu_bin.path, l->qmp);
		return 0;
	}
	snprintf(broker_log, len, "%s/broker.log", work_dir);
	log_fd = open(broker_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (log_fd < 0) {
		cli_error("cannot create %s: %s", broker_log, strerror(errno));
		return 1;
	}
	progress("starting the broker: %s, sockets in %s (log %s)", l->device, l->sockets.dir, broker_log);
	rc = launch_start_broker(l, log_fd, err, sizeof(err));
	close(log_fd);
	if (rc < 0) {
		if (rc != -EINTR) {
			cli_error("%s", err);
			show_tail(broker_log, 20);
		}
		launch_stop_all(l);
		return rc == -EINTR ? 128 + proc_stop_signal() : 1;
	}
	return 0;
}

int demo_run(struct launch *l, const struct demo_options *opts)
{
	char work_dir[PATH_MAX], kernel[PATH_MAX], initrd[PATH_MAX + 32], broker_log[PATH_MAX + 16] = "";
	char err[CLI_ERR_LEN], label[512];
	const char *tag = kernel_tag(opts->kernel);
	bool keep = opts->keep;
	struct demo_result r;
	int rc, broker_rc;
	bool ok;

	start_ms = vfa_now_ms();
	memset(&r, 0, sizeof(r));
	if (!tag) {
		cli_error("bad --kernel '%s': the demo has guest kernels 6.1, 6.12 and 7.3", opts->kernel);
		return 2;
	}
	if (geteuid() != 0) {
		cli_error("the demo needs root: provisioning (debootstrap, apt, chroot into %s) and QEMU in that root; "
			  "run `sudo make demo` or `sudo vfio-apple run`",
			  launch_cache_dir());
		return 1;
	}
	{
		char provision[PATH_MAX], mkinitramfs[PATH_MAX], workload[PATH_MAX];

		snprintf(provision, sizeof(provision), "%s/provision/provision.sh", launch_source_dir());
		snprintf(mkinitramfs, sizeof(mkinitramfs), "%s/provision/mkinitramfs.sh", launch_source_dir());
		snprintf(workload, sizeof(workload), "%s/cli/demo-workload.sh", launch_source_dir());
		if (access(provision, X_OK) < 0 || access(mkinitramfs, X_OK) < 0 || access(workload, R_OK) < 0) {
			cli_error("the demo needs the source tree's provision/ and cli/demo-workload.sh, not found under "
				  "%s: run it from the build tree or set VFA_SOURCE_DIR",
				  launch_source_dir());
			return 1;
		}
	}
	/* The in-process QEMU is known before anything slow starts. */
	if (l->mode == LAUNCH_IN_PROCESS &&
	    launch_find_inprocess_qemu(opts->qemu_path, "qemu-system-x86_64", &l->qemu_bin, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		return 1;
	}
	snprintf(work_dir, sizeof(work_dir), "/tmp/vfio-apple-demo.XXXXXX");
	if (!mkdtemp(work_dir)) {
		cli_error("cannot create a work directory in /tmp: %s", strerror(errno));
		return 1;
	}
	rc = prepare_guest(opts, tag, work_dir, kernel, initrd, sizeof(kernel));
	if (rc != 0)
		goto out_workdir;

	/* 4. QEMU, sockets, broker, guest */
	if (l->mode == LAUNCH_VFIO_USER) {
		l->binds[0] = work_dir; /* QEMU in the trixie root reads the initramfs */
		l->bind_count = 1;
		if (launch_find_qemu(opts->qemu_path, true, &l->qemu_bin, err, sizeof(err)) < 0) {
			cli_error("%s", err);
			rc = 1;
			goto out_workdir;
		}
	} else {
		/* The last counters are read after the guest powered off. */
		l->no_shutdown = true;
	}
	rc = start_devices(l, work_dir, broker_log, sizeof(broker_log));
	if (rc != 0)
		goto out_workdir;
	if (boot_guest(l, work_dir, opts->timeout_s, kernel, initrd, &r) < 0) {
		launch_stop_all(l);
		rc = 1;
		goto out_result;
	}

	/* 5. last counters, then a clean shutdown, then the verdict */
	if (!l->qemu.exited || l->mode == LAUNCH_VFIO_USER) {
		if (!(l->broker.pid && l->broker.exited)) {
			struct json_object *status = read_counters(l, 2000);

			if (status)
				keep_counters(&r, status);
		}
	}
	broker_rc = launch_stop_all(l);
	if (proc_stop_signal()) {
		rc = 128 + proc_stop_signal();
		goto out_result;
	}
	if (l->mode == LAUNCH_IN_PROCESS)
		snprintf(label, sizeof(label), "%s (in-process vfio-apple-pci, QEMU %u.%u.%u)", l->device,
			 l->qemu_bin.major, l->qemu_bin.minor, l->qemu_bin.micro);
	else
		snprintf(label, sizeof(label), "%s", l->device);
	ok = demo_summarize(stdout, label, &r, broker_rc);
	if (!ok) {
		char console_path[PATH_MAX + 16];

		snprintf(console_path, sizeof(console_path), "%s/console.log", work_dir);
		show_tail(console_path, 30);
		if (broker_log[0])
			show_tail(broker_log, 15);
		keep = true;
	}
	rc = ok ? 0 : 1;
out_result:
	json_object_put(r.fio);
	json_object_put(r.status);
out_workdir:
	if (keep || rc != 0) {
		fprintf(stderr, "vfio-apple: demo files kept in %s\n", work_dir);
	} else {
		char *argv[] = { (char *)"rm", (char *)"-rf", work_dir, NULL };
		char scratch[16];

		proc_capture(argv, scratch, sizeof(scratch), false);
	}
	return rc;
}
