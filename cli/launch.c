// SPDX-License-Identifier: MIT
/*
 * The launcher (launch.h): QEMU discovery for both modes, sockets, the
 * broker, QEMU's command line and teardown.  Shared so that
 * the VM (vm.c) and the demo share it without calling each other.
 */
#include "launch.h"

#include "clock.h"
#include "unix_socket.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

const char *launch_source_dir(void)
{
	const char *dir = getenv("VFA_SOURCE_DIR");

	return dir && *dir ? dir : VFA_DEFAULT_SOURCE_DIR;
}

const char *launch_cache_dir(void)
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

/* ---- vfio-user mode: QEMU >= 10.1 ---------------------------------------- */

int launch_find_qemu(const char *explicit_path, bool may_use_root, struct qemu_choice *q, char *err, size_t errlen)
{
	char out[512], host_found[PATH_MAX + 128] = "";
	unsigned major, minor, micro;
	const char *name = LAUNCH_QEMU_SYSTEM;

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

		snprintf(root_qemu, sizeof(root_qemu), "%s/trixie/usr/bin/qemu-system-x86_64", launch_cache_dir());
		if (access(root_qemu, X_OK) == 0 && geteuid() == 0) {
			char in_root[PATH_MAX];
			char *argv[] = { in_root, (char *)"--", (char *)"/usr/bin/qemu-system-x86_64", (char *)"--version",
					 NULL };

			snprintf(in_root, sizeof(in_root), "%s/provision/in-root.sh", launch_source_dir());
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
			 "%s: vfio-user-pci needs QEMU >= %d.%d; install a newer " LAUNCH_QEMU_SYSTEM ", or run "
			 "`vfio-apple run` once as root (no arguments) to provision QEMU 11.1 into %s",
			 host_found, QEMU_MIN_MAJOR, QEMU_MIN_MINOR, launch_cache_dir());
	else
		snprintf(err, errlen,
			 "no " LAUNCH_QEMU_SYSTEM " found (needs QEMU >= %d.%d for vfio-user-pci): install one, or run "
			 "`vfio-apple run` once as root (no arguments) to provision QEMU 11.1 into %s",
			 QEMU_MIN_MAJOR, QEMU_MIN_MINOR, launch_cache_dir());
	return -ENOENT;
}

/* ---- in-process mode: a QEMU with vfio-apple-pci ------------------------- */

bool launch_help_has_inprocess(const char *device_help)
{
	/* QEMU lists each device as: name "NAME", bus PCI, ... */
	return device_help && strstr(device_help, "name \"vfio-apple-pci\"") != NULL;
}

/*
 * Check one candidate: 1 when it has the devices (version filled in), 0
 * when not, with why in note ("missing", "no vfio-apple-pci in QEMU X.Y.Z").
 */
static int inprocess_candidate(const char *path, struct qemu_choice *q, char *note, size_t len)
{
	static char help[512 * 1024];
	char version[512];
	char *help_argv[] = { (char *)path, (char *)"-device", (char *)"help", NULL };
	char *version_argv[] = { (char *)path, (char *)"--version", NULL };
	unsigned major = 0, minor = 0, micro = 0;
	bool versioned;
	int rc;

	if (access(path, X_OK) < 0) {
		snprintf(note, len, "%s: %s", path, errno == ENOENT ? "no such executable" : strerror(errno));
		return 0;
	}
	versioned = proc_capture(version_argv, version, sizeof(version), false) == 0 &&
		    qemu_version_parse(version, &major, &minor, &micro) == 0;
	if (!versioned) {
		snprintf(note, len, "%s does not answer --version like QEMU", path);
		return 0;
	}
	rc = proc_capture(help_argv, help, sizeof(help), false);
	if (rc != 0 || !launch_help_has_inprocess(help)) {
		snprintf(note, len, "QEMU %u.%u.%u at %s has no vfio-apple-pci", major, minor, micro, path);
		return 0;
	}
	memset(q, 0, sizeof(*q));
	snprintf(q->path, sizeof(q->path), "%s", path);
	q->major = major, q->minor = minor, q->micro = micro;
	return 1;
}

int launch_find_inprocess_qemu(const char *explicit_path, const char *system, struct qemu_choice *q, char *err,
			       size_t errlen)
{
	const char *env_name;
	const char *env;
	char path[PATH_MAX], notes[3][PATH_MAX + 96];
	size_t n = 0;

	if (!system)
		system = LAUNCH_QEMU_SYSTEM;
	env_name = strcmp(system, "qemu-system-aarch64") == 0 ? "QEMU_BIN_ARM" : "QEMU_BIN";
	env = getenv(env_name);
	memset(q, 0, sizeof(*q));
	/* Given explicitly (--qemu, then the environment): that one or nothing. */
	if (explicit_path || (env && *env)) {
		const char *given = explicit_path ? explicit_path : env;
		char note[PATH_MAX + 96];

		if (!find_in_path(given, path, sizeof(path))) {
			snprintf(err, errlen, "%s%s%s: no such executable", explicit_path ? "--qemu " : env_name,
				 explicit_path ? "" : "=", given);
			return -ENOENT;
		}
		if (inprocess_candidate(path, q, note, sizeof(note)) == 1)
			return 0;
		snprintf(err, errlen,
			 "%s (from %s): build QEMU >= 10.2 with the project's devices added as docs/qemu.md says",
			 note, explicit_path ? "--qemu" : env_name);
		return -ENOEXEC;
	}
	snprintf(path, sizeof(path), "%s/" LAUNCH_INPROCESS_PREFIX "/bin/%s", launch_cache_dir(), system);
	if (inprocess_candidate(path, q, notes[n], sizeof(notes[n])) == 1)
		return 0;
	n++;
	if (find_in_path(system, path, sizeof(path))) {
		if (inprocess_candidate(path, q, notes[n], sizeof(notes[n])) == 1)
			return 0;
		n++;
	} else {
		snprintf(notes[n++], sizeof(notes[0]), "no %s on PATH", system);
	}
	snprintf(err, errlen,
		 "no QEMU with vfio-apple-pci (%s; %s): build QEMU >= 10.2 with the project's devices as docs/qemu.md "
		 "says, install it under %s/" LAUNCH_INPROCESS_PREFIX ", or give --qemu PATH or %s",
		 notes[0], notes[1], launch_cache_dir(), env_name);
	return -ENOENT;
}

int launch_inprocess_device(const char *device, bool companion, char *buf, size_t len)
{
	size_t used;
	int n = snprintf(buf, len, "vfio-apple-pci,id=" LAUNCH_INPROCESS_ID ",host=");

	if (n < 0 || (size_t)n >= len)
		return -E2BIG;
	used = (size_t)n;
	for (const char *p = device; *p; p++) {
		size_t need = *p == ',' ? 2 : 1;

		if (used + need >= len)
			return -E2BIG;
		buf[used++] = *p;
		if (*p == ',')
			buf[used++] = ',';
	}
	n = snprintf(buf + used, len - used, ",addr=0x5,%s", companion ? "companion-addr=0x6" : "companion=off");
	if (n < 0 || (size_t)n >= len - used)
		return -E2BIG;
	return 0;
}

/* ---- QEMU's command line ------------------------------------------------- */

static int argv_add(struct launch_argv *a, const char *arg)
{
	if (a->count + 2 > LAUNCH_ARGV_MAX)
		return -E2BIG;
	a->v[a->count] = strdup(arg);
	if (!a->v[a->count])
		return -ENOMEM;
	a->count++;
	a->v[a->count] = NULL;
	return 0;
}

void launch_argv_free(struct launch_argv *a)
{
	for (size_t i = 0; i < a->count; i++)
		free(a->v[i]);
	a->count = 0;
	a->v[0] = NULL;
}

static int argv_addf(struct launch_argv *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int argv_addf(struct launch_argv *a, const char *fmt, ...)
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

/* in-root.sh --bind ... -- /bin/sh -c 'cd ...': QEMU inside the trixie root. */
static int root_prefix(const struct launch *l, int user_argc, char *const user_argv[], struct launch_argv *a)
{
	char cwd[PATH_MAX];
	int ret = 0;

	/* Inside the root: sockets, work files and the current directory
	 * appear at their own paths; the shell keeps the directory. */
	if (!getcwd(cwd, sizeof(cwd)))
		snprintf(cwd, sizeof(cwd), "/");
	ret |= argv_add(a, l->qemu_bin.in_root);
	ret |= argv_add(a, "--bind");
	ret |= argv_add(a, l->sockets.dir);
	for (size_t i = 0; i < l->bind_count && i < LAUNCH_BINDS_MAX; i++) {
		ret |= argv_add(a, "--bind");
		ret |= argv_add(a, l->binds[i]);
	}
	if (strcmp(cwd, "/") != 0) {
		ret |= argv_add(a, "--bind");
		ret |= argv_add(a, cwd);
	}
	/* Absolute paths among the user's arguments (kernel, disks). */
	for (int i = 0; i < user_argc; i++) {
		char dir[PATH_MAX];
		struct stat st;

		if (user_argv[i][0] != '/' || stat(user_argv[i], &st) < 0 || strlen(user_argv[i]) >= sizeof(dir))
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
	return ret;
}

/* ---- slots (launch.h): hot-pluggable PCIe slots for `run` -------------- */

unsigned launch_slot_bus(unsigned slot)
{
	return slot + 1;
}

int launch_port_option(unsigned slot, char *buf, size_t len)
{
	/* All ports in slot 2 of bus 0, one function each: the first bridges
	 * the guest numbers (bus S + 1), whatever the user's arguments add. */
	int n = snprintf(buf, len, "pcie-root-port,id=vfa-port%u,bus=pcie.0,addr=0x2.0x%x,chassis=%u,port=0x%x%s", slot,
			 slot, 0x40 + slot, 0x40 + slot, slot == 0 ? ",multifunction=on" : "");

	return n < 0 || (size_t)n >= len ? -E2BIG : 0;
}

int launch_slot_device_json(enum launch_mode mode, const struct launch_slot_dev *d, unsigned slot, bool with_companion,
			    bool companion, char *buf, size_t len)
{
	char quoted[2 * PATH_MAX];
	const char *text = companion ? d->companion : mode == LAUNCH_IN_PROCESS ? d->device : d->passthrough;
	int n;

	if (!text && !(companion && mode == LAUNCH_IN_PROCESS))
		return -EINVAL;
	if (text && vfa_json_quote(text, quoted, sizeof(quoted)) < 0)
		return -E2BIG;
	if (companion && mode == LAUNCH_IN_PROCESS)
		n = snprintf(buf, len,
			     "{\"driver\":\"apple-dma-pci\",\"id\":\"%s-dma\",\"bus\":\"vfa-port%u\","
			     "\"addr\":\"0.0\",\"multifunction\":true}",
			     d->id, slot);
	else if (companion)
		/* Non-posted: a DOORBELL is done when the guest's write returns. */
		n = snprintf(buf, len,
			     "{\"driver\":\"vfio-user-pci\",\"id\":\"%s-dma\",\"bus\":\"vfa-port%u\",\"addr\":\"0.0\","
			     "\"multifunction\":true,\"socket\":{\"type\":\"unix\",\"path\":%s},"
			     "\"x-no-posted-writes\":true}",
			     d->id, slot, quoted);
	else if (mode == LAUNCH_IN_PROCESS)
		n = snprintf(buf, len,
			     "{\"driver\":\"vfio-apple-pci\",\"id\":\"%s\",\"bus\":\"vfa-port%u\",\"addr\":\"%s\","
			     "\"host\":%s,\"companion\":false}",
			     d->id, slot, with_companion ? "0.1" : "0.0", quoted);
	else
		n = snprintf(buf, len,
			     "{\"driver\":\"vfio-user-pci\",\"id\":\"%s\",\"bus\":\"vfa-port%u\",\"addr\":\"%s\","
			     "\"socket\":{\"type\":\"unix\",\"path\":%s}}",
			     d->id, slot, with_companion ? "0.1" : "0.0", quoted);
	return n < 0 || (size_t)n >= len ? -E2BIG : 0;
}

/* The slots: every port, and the devices plugged in at start. */
static int slot_args(const struct launch *l, struct launch_argv *a)
{
	char buf[3 * PATH_MAX];
	int ret = 0;

	for (unsigned s = 0; s < l->slots && s < LAUNCH_SLOTS_MAX; s++) {
		if (launch_port_option(s, buf, sizeof(buf)) < 0)
			return -E2BIG;
		ret |= argv_add(a, "-device");
		ret |= argv_add(a, buf);
	}
	for (unsigned s = 0; s < l->slots && s < LAUNCH_SLOTS_MAX; s++) {
		const struct launch_slot_dev *d = &l->slot_dev[s];

		if (!d->used)
			continue;
		if (launch_slot_device_json(l->mode, d, s, l->companion, false, buf, sizeof(buf)) < 0)
			return -E2BIG;
		ret |= argv_add(a, "-device");
		ret |= argv_add(a, buf);
		if (!l->companion)
			continue;
		if (launch_slot_device_json(l->mode, d, s, true, true, buf, sizeof(buf)) < 0)
			return -E2BIG;
		ret |= argv_add(a, "-device");
		ret |= argv_add(a, buf);
	}
	if (l->run_qmp[0]) {
		ret |= argv_add(a, "-qmp");
		ret |= argv_addf(a, "unix:%s,server=on,wait=off", l->run_qmp);
	}
	return ret;
}

/* vfio-user: shareable RAM and the two vfio-user-pci devices. */
static int vfio_user_args(const struct launch *l, struct launch_argv *a)
{
	char pt_path[2 * PATH_MAX], comp_path[2 * PATH_MAX];
	int ret = 0;

	ret |= argv_add(a, "-object");
	ret |= argv_addf(a, LAUNCH_RAM_BACKEND ",id=vfa-ram,size=%s,share=on", l->memory);
	ret |= argv_add(a, "-machine");
	ret |= argv_add(a, LAUNCH_MACHINE ",memory-backend=vfa-ram");
	ret |= argv_add(a, "-m");
	ret |= argv_add(a, l->memory);
	if (l->slots)
		return ret | slot_args(l, a);
	/* The passthrough function keeps QEMU's posted writes: its doorbells
	 * are fast that way, and nvme never depends on a write having landed
	 * before its next read (a read is never posted). */
	/* Socket paths go into JSON quoted, so that no path can close the
	 * string and add keys of its own. */
	if (vfa_json_quote(l->sockets.passthrough, pt_path, sizeof(pt_path)) < 0 ||
	    vfa_json_quote(l->sockets.companion, comp_path, sizeof(comp_path)) < 0)
		return -1;
	ret |= argv_add(a, "-device");
	ret |= argv_addf(a, "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":%s},\"addr\":\"0x5\"}",
			 pt_path);
	if (l->companion) {
		/* The companion's DOORBELL must complete before the guest's write
		 * returns (the protocol's promise; reference-style guest modules
		 * read the responses without reading STATUS): no posted writes. */
		ret |= argv_add(a, "-device");
		ret |= argv_addf(a,
				 "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":%s},"
				 "\"addr\":\"0x6\",\"x-no-posted-writes\":true}",
				 comp_path);
	}
	return ret;
}

/* in-process: plain RAM, vfio-apple-pci (its companion comes along), QMP. */
static int inprocess_args(const struct launch *l, struct launch_argv *a)
{
	char dev[1024];
	int ret = 0;

	ret |= argv_add(a, "-machine");
	ret |= argv_add(a, LAUNCH_MACHINE);
	ret |= argv_add(a, "-m");
	ret |= argv_add(a, l->memory);
	if (l->slots) {
		ret |= slot_args(l, a);
	} else {
		if (launch_inprocess_device(l->device, l->companion, dev, sizeof(dev)) < 0)
			return -E2BIG;
		ret |= argv_add(a, "-device");
		ret |= argv_add(a, dev);
	}
	if (l->qmp[0]) {
		ret |= argv_add(a, "-qmp");
		ret |= argv_addf(a, "unix:%s,server=on,wait=off", l->qmp);
	}
	if (l->no_shutdown)
		ret |= argv_add(a, "-no-shutdown");
	return ret;
}

int launch_qemu_argv(const struct launch *l, int user_argc, char *const user_argv[], struct launch_argv *a)
{
	int ret = 0;

	a->count = 0;
	a->v[0] = NULL;
	if (l->qemu_bin.in_root[0])
		ret |= root_prefix(l, user_argc, user_argv, a);
	ret |= argv_add(a, l->qemu_bin.path);
	if (l->mode == LAUNCH_IN_PROCESS)
		ret |= inprocess_args(l, a);
	else
		ret |= vfio_user_args(l, a);
	for (int i = 0; i < user_argc && ret == 0; i++)
		ret |= argv_add(a, user_argv[i]);
	if (ret) {
		launch_argv_free(a);
		return -E2BIG;
	}
	return 0;
}

/* ---- sockets and the broker ---------------------------------------------- */

static bool is_socket(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

int launch_prepare_sockets(struct launch *l, char *err, size_t errlen)
{
	/* Control first: see serve.c. */
	const char *const broker_socks[] = { l->sockets.control, l->sockets.passthrough, l->sockets.companion };
	const char *const qmp_socks[] = { l->qmp };
	const char *const *socks = l->mode == LAUNCH_IN_PROCESS ? qmp_socks : broker_socks;
	size_t n = l->mode == LAUNCH_IN_PROCESS ? (l->qmp[0] ? 1 : 0) : 3;

	/* Ours, 0700 and no symlink: another local user must not be able to
	 * swap a socket and receive the guest's RAM (docs/vfio-user.md). */
	int rc = vfa_socket_dir_prepare(l->sockets.dir, err, errlen);

	if (rc < 0)
		return rc;
	for (size_t i = 0; i < n; i++) {
		int ret = socket_path_prepare(socks[i], err, errlen);

		if (ret < 0)
			return ret;
	}
	return 0;
}

int launch_start_broker(struct launch *l, int log_fd, char *err, size_t errlen)
{
	const struct broker_start how = {
		.device = l->device,
		.sockets = &l->sockets,
		.guest_addr = "00:05.0",
		.companion = l->companion,
		.log_level = l->log_level,
		.log_fd = log_fd,
	};

	return launch_start_broker_for(&l->broker, &how, err, errlen);
}

int launch_start_broker_for(struct child *broker, const struct broker_start *how, char *err, size_t errlen)
{
	char self[PATH_MAX];
	char *argv[16] = { self,
			   (char *)"serve",
			   (char *)"--device",
			   (char *)how->device,
			   (char *)"--socket-dir",
			   (char *)how->sockets->dir,
			   (char *)"--guest-addr",
			   (char *)how->guest_addr,
			   (char *)"--log-level",
			   (char *)(how->log_level ? how->log_level : how->log_fd >= 0 ? "info" : "warn") };
	size_t argc = 10;
	struct child_io io = { .in = -1, .out = how->log_fd, .err = how->log_fd };
	struct child *const kids[] = { broker };
	int64_t deadline;
	int ret;

	if (!how->companion)
		argv[argc++] = (char *)"--no-companion";
	if (how->prefer_msi)
		argv[argc++] = (char *)"--prefer-msi";
	argv[argc] = NULL;
	ret = cli_self_path(self, sizeof(self));
	if (ret < 0) {
		snprintf(err, errlen, "cannot find the vfio-apple executable itself: %s", strerror(-ret));
		return ret;
	}
	if (!broker->name)
		broker->name = "broker";
	ret = proc_spawn(broker, argv, &io);
	if (ret < 0) {
		snprintf(err, errlen, "cannot start the broker: %s", strerror(-ret));
		return ret;
	}
	/* Ready when the vfio-user sockets exist and the control socket answers
	 * (connecting to a vfio-user socket would take the VMM's place). */
	deadline = vfa_now_ms() + 15000;
	while (vfa_now_ms() < deadline) {
		char qerr[CLI_ERR_LEN];
		struct json_object *status;

		proc_reap(kids, 1);
		if (broker->exited) {
			snprintf(err, errlen, "the broker exited (status %d) before its sockets appeared; %s",
				 proc_exit_code(broker->status), how->log_fd >= 0 ? "see its log" : "see its message above");
			return -ECHILD;
		}
		if (proc_stop_signal())
			return -EINTR;
		if (is_socket(how->sockets->passthrough) && (!how->companion || is_socket(how->sockets->companion))) {
			status = control_query(how->sockets->control, 1000, qerr, sizeof(qerr));
			if (status) {
				json_object_put(status);
				return 0;
			}
		}
		poll(NULL, 0, 50);
	}
	snprintf(err, errlen, "the broker's sockets in %s did not appear within 15 s", how->sockets->dir);
	return -ETIMEDOUT;
}

/* Stop QEMU first (the VMM lets go of the devices), then the broker, which
 * releases every DMA mapping on SIGTERM.  Returns the broker's exit code. */
int launch_stop_all(struct launch *l)
{
	proc_stop(&l->qemu, SIGTERM, 5000);
	if (l->broker.pid && !l->broker.exited) {
		proc_stop(&l->broker, SIGTERM, 10000);
		return proc_exit_code(l->broker.status);
	}
	return l->broker.pid ? proc_exit_code(l->broker.status) : 0;
}

bool launch_memory_valid(const char *text)
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
