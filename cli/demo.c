// SPDX-License-Identifier: MIT
/*
 * The simulated demo of `vfio-apple run` (no QEMU arguments, Linux):
 *   1. provision/provision.sh --headers: QEMU 11.1 root, guest kernels (cached);
 *   2. guest/linux/build.sh: apple_dma for the guest kernel;
 *   3. provision/mkinitramfs.sh: busybox, nvme, apple_dma, fio and
 *      cli/demo-workload.sh;
 *   4. the broker (DART mode), then QEMU under TCG; the guest loads
 *      apple_dma and nvme and runs fio with verification;
 *   5. a summary from the guest's console lines and the broker's status.
 * Exit 0 only if everything was verified.
 */
#include "cli.h"
#include "demo.h"
#include "run.h"

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
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>


static long long start_ms;

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One progress line: "[  12 s] text". */
static void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void progress(const char *fmt, ...)
{
	va_list ap;

	printf("[%4lld s] ", (now_ms() - start_ms) / 1000);
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

	snprintf(script, sizeof(script), "%s/guest/linux/build.sh", run_source_dir());
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
	fprintf(out, "  DART peak      %" PRIu64 " of %" PRIu64 " mappings, %s of %s\n", r->peak_mappings, max_mappings,
	       peak, limit);
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

/* Boot the guest and follow its console until QEMU exits. */
static int boot_guest(struct run_plan *plan, const char *kernel, const char *initrd, struct demo_result *r)
{
	struct child *const kids[] = { &plan->qemu, &plan->broker };
	char console_path[PATH_MAX + 16], err[CLI_ERR_LEN];
	char *guest_args[] = { (char *)"-accel", (char *)"tcg", (char *)"-nodefaults", (char *)"-no-reboot",
			       (char *)"-display", (char *)"none", (char *)"-smp", (char *)"1",
			       (char *)"-cpu", (char *)"max",
			       (char *)"-bios", (char *)"qboot.rom",
			       (char *)"-serial", (char *)"stdio", (char *)"-kernel", (char *)kernel,
			       (char *)"-initrd", (char *)initrd, (char *)"-append",
			       (char *)"console=ttyS0 panic=-1 quiet loglevel=1" };
	struct run_argv args = { .count = 0 };
	long long deadline = now_ms() + (long long)plan->timeout_s * 1000, next_status = 0;
	static char line[256 * 1024];
	size_t used = 0;
	int pipefd[2], devnull, console, ret;
	struct child_io io;

	snprintf(console_path, sizeof(console_path), "%s/console.log", plan->work_dir);
	console = open(console_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (console < 0 || pipe(pipefd) < 0) {
		cli_error("cannot create %s or a pipe: %s", console_path, strerror(errno));
		return -1;
	}
	if (run_qemu_argv(plan, (int)(sizeof(guest_args) / sizeof(guest_args[0])), guest_args, &args) < 0) {
		cli_error("QEMU command line too long");
		return -1;
	}
	devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	io = (struct child_io){ .in = devnull, .out = pipefd[1], .err = pipefd[1] };
	plan->qemu.name = "qemu";
	ret = proc_spawn(&plan->qemu, args.v, &io);
	run_argv_free(&args);
	close(pipefd[1]);
	if (devnull >= 0)
		close(devnull);
	if (ret < 0) {
		cli_error("cannot start QEMU: %s", strerror(-ret));
		close(pipefd[0]);
		close(console);
		return -1;
	}
	progress("QEMU %u.%u.%u started (TCG); guest console in %s", plan->qemu_bin.major, plan->qemu_bin.minor,
		 plan->qemu_bin.micro, console_path);
	fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
	for (bool open_pipe = true; open_pipe || !plan->qemu.exited;) {
		struct pollfd pfds[2] = { { .fd = proc_signal_fd(), .events = POLLIN },
					  { .fd = open_pipe ? pipefd[0] : -1, .events = POLLIN } };

		poll(pfds, 2, 500);
		proc_reap(kids, 2);
		if (proc_stop_signal()) {
			progress("interrupted: stopping QEMU and the broker");
			break;
		}
		if (now_ms() > deadline) {
			cli_error("the guest did not finish within %d s (--timeout): stopping it", plan->timeout_s);
			break;
		}
		if (plan->broker.exited) {
			cli_error("the broker exited (status %d) while the guest ran; see %s/broker.log",
				  proc_exit_code(plan->broker.status), plan->work_dir);
			break;
		}
		/* Counters while the devices are in use. */
		if (now_ms() >= next_status && !plan->qemu.exited) {
			struct json_object *status = control_query(plan->sockets.control, 1000, err, sizeof(err));

			if (status) {
				demo_keep_status(r, status);
				json_object_put(r->status);
				r->status = status;
			}
			next_status = now_ms() + 1000;
		}
		if (r->want_baseline) {
			struct json_object *status = control_query(plan->sockets.control, 1000, err, sizeof(err));

			if (status) {
				r->boot_faults = status_u64(status, "dma", "faults");
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

int run_demo(struct run_plan *plan, const char *qemu_path)
{
	char provision[PATH_MAX], mkinitramfs[PATH_MAX], workload[PATH_MAX], env[8192];
	char key[64], kernel[PATH_MAX], modules[PATH_MAX], krel[128], ko[PATH_MAX], initrd[PATH_MAX + 32];
	char broker_log[PATH_MAX + 16], err[CLI_ERR_LEN];
	const char *tag = kernel_tag(plan->kernel);
	struct demo_result r;
	int rc, broker_rc, log_fd;
	bool ok;

	start_ms = now_ms();
	memset(&r, 0, sizeof(r));
	if (!tag) {
		cli_error("bad --kernel '%s': the demo has guest kernels 6.1, 6.12 and 7.3", plan->kernel);
		return 2;
	}
	if (geteuid() != 0) {
		cli_error("the demo needs root: provisioning (debootstrap, apt, chroot into %s) and QEMU in that root; "
			  "run `sudo make demo` or `sudo vfio-apple run`",
			  run_cache_dir());
		return 1;
	}
	snprintf(provision, sizeof(provision), "%s/provision/provision.sh", run_source_dir());
	snprintf(mkinitramfs, sizeof(mkinitramfs), "%s/provision/mkinitramfs.sh", run_source_dir());
	snprintf(workload, sizeof(workload), "%s/cli/demo-workload.sh", run_source_dir());
	if (access(provision, X_OK) < 0 || access(mkinitramfs, X_OK) < 0 || access(workload, R_OK) < 0) {
		cli_error("the demo needs the source tree's provision/ and cli/demo-workload.sh, not found under %s: "
			  "run it from the build tree or set VFA_SOURCE_DIR",
			  run_source_dir());
		return 1;
	}

	/* 1. provisioning (cached; prints its own progress on stderr) */
	progress("provisioning QEMU 11.1, guest kernels and headers into %s (cached; the first time takes minutes)",
		 run_cache_dir());
	{
		char *argv[] = { provision, (char *)"--headers", NULL };
		char *env_argv[] = { provision, (char *)"env", NULL };

		rc = run_step(argv, true);
		if (rc != 0) {
			if (rc < 128)
				cli_error("provisioning failed (exit %d): see the messages above and %s/provision.log", rc,
					  run_cache_dir());
			return rc >= 128 ? rc : 1;
		}
		if (proc_capture(env_argv, env, sizeof(env), false) != 0) {
			cli_error("provision/provision.sh env failed after provisioning");
			return 1;
		}
	}
	snprintf(key, sizeof(key), "KERNEL_%s", tag);
	rc = demo_env_value(env, key, kernel, sizeof(kernel));
	snprintf(key, sizeof(key), "MODULES_%s", tag);
	rc = rc && demo_env_value(env, key, modules, sizeof(modules));
	snprintf(key, sizeof(key), "KREL_%s", tag);
	if (!rc || !demo_env_value(env, key, krel, sizeof(krel))) {
		cli_error("provisioning did not produce the %s guest kernel (no %s): see %s/provision.log", plan->kernel,
			  key, run_cache_dir());
		return 1;
	}

	/* 2. the guest module, built in a fresh work directory (build.sh's
	 * $OUT) so that concurrent builds of the tree do not collide */
	snprintf(plan->work_dir, sizeof(plan->work_dir), "/tmp/vfio-apple-demo.XXXXXX");
	if (!mkdtemp(plan->work_dir)) {
		cli_error("cannot create a work directory in /tmp: %s", strerror(errno));
		return 1;
	}
	progress("building apple_dma for Linux %s", krel);
	setenv("OUT", plan->work_dir, 1);
	if (build_module(krel, ko, sizeof(ko)) < 0) {
		rc = 1;
		goto out_workdir;
	}

	/* 3. the initramfs */
	snprintf(initrd, sizeof(initrd), "%s/initramfs.cpio.gz", plan->work_dir);
	progress("building the guest's initramfs (busybox, nvme, apple_dma, fio) in %s", plan->work_dir);
	{
		char *argv[] = { mkinitramfs, (char *)"-o", initrd, (char *)"-m", modules, (char *)"--load",
				 (char *)"nvme", (char *)"--ko", ko, (char *)"--fio", (char *)"--script", workload,
				 NULL };

		rc = run_step(argv, false);
		if (rc != 0) {
			if (rc < 128)
				cli_error("building the initramfs failed (exit %d): see the messages above", rc);
			goto out_workdir;
		}
	}

	/* 4. QEMU, sockets, broker, guest */
	if (run_find_qemu(qemu_path, true, &plan->qemu_bin, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		rc = 1;
		goto out_workdir;
	}
	if (run_prepare_sockets(plan, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		rc = 1;
		goto out_workdir;
	}
	snprintf(broker_log, sizeof(broker_log), "%s/broker.log", plan->work_dir);
	log_fd = open(broker_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (log_fd < 0) {
		cli_error("cannot create %s: %s", broker_log, strerror(errno));
		rc = 1;
		goto out_workdir;
	}
	progress("starting the broker: %s, sockets in %s (log %s)", plan->device, plan->sockets.dir, broker_log);
	rc = run_start_broker(plan, log_fd, err, sizeof(err));
	close(log_fd);
	if (rc < 0) {
		if (rc != -EINTR) {
			cli_error("%s", err);
			show_tail(broker_log, 20);
		}
		run_stop_all(plan);
		rc = rc == -EINTR ? 128 + proc_stop_signal() : 1;
		goto out_workdir;
	}
	boot_guest(plan, kernel, initrd, &r);

	/* 5. last counters, then a clean shutdown, then the verdict */
	if (!plan->broker.exited) {
		struct json_object *status = control_query(plan->sockets.control, 2000, err, sizeof(err));

		demo_keep_status(&r, status);
		if (!r.status)
			r.status = status;
		else
			json_object_put(status);
	}
	broker_rc = run_stop_all(plan);
	if (proc_stop_signal()) {
		rc = 128 + proc_stop_signal();
		goto out_result;
	}
	ok = demo_summarize(stdout, plan->device, &r, broker_rc);
	if (!ok) {
		char console_path[PATH_MAX + 16];

		snprintf(console_path, sizeof(console_path), "%s/console.log", plan->work_dir);
		show_tail(console_path, 30);
		show_tail(broker_log, 15);
		plan->keep = true;
	}
	rc = ok ? 0 : 1;
out_result:
	json_object_put(r.fio);
	json_object_put(r.status);
out_workdir:
	if (plan->keep || rc != 0) {
		fprintf(stderr, "vfio-apple: demo files kept in %s\n", plan->work_dir);
	} else {
		char *argv[] = { (char *)"rm", (char *)"-rf", plan->work_dir, NULL };
		char scratch[16];

		proc_capture(argv, scratch, sizeof(scratch), false);
	}
	return rc;
}
