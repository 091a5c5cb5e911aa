// SPDX-License-Identifier: MIT
/*
 * `vfio-apple run -- QEMU-ARGUMENTS`: the VM and its devices (vm.h).  One
 * poll() loop: stop signals and children, the launcher's socket (attach,
 * detach, list), each broker's "watch" stream (its host device pulled or
 * back), and the unplugs in flight, checked through QEMU's QMP.
 */
#include "vm.h"

#include "clock.h"
#include "compat.h"
#include "qmp.h"
#include "unix_socket.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <json-c/json.h>

#define VM_POLL_MS 250
#define VM_QMP_TIMEOUT_MS 5000

static const char *state_name(enum vm_dev_state s)
{
	switch (s) {
	case VM_DEV_ATTACHED:
		return "attached";
	case VM_DEV_UNPLUGGING:
		return "unplugging";
	case VM_DEV_REMOVED:
		return "removed";
	default:
		return "free";
	}
}

static unsigned dev_slot(const struct vm *vm, const struct vm_dev *d)
{
	return (unsigned)(d - vm->dev);
}

/* A slot's guest bus: the guest's numbering once known, else the usual one. */
static unsigned slot_bus(const struct vm *vm, unsigned slot)
{
	return vm->slot_bus[slot] ? vm->slot_bus[slot] : launch_slot_bus(slot);
}

/* The guest address of a slot's function (or companion), "0000:BB:00.F". */
static void guest_name(const struct vm *vm, unsigned slot, bool companion, char *buf, size_t len)
{
	unsigned fn = companion || !vm->l->companion ? 0 : 1;

	snprintf(buf, len, "0000:%02x:00.%u", slot_bus(vm, slot), fn);
}

/* The managed function's address for a broker's MANAGED_BDF, "BB:00.F". */
static void managed_addr(const struct vm *vm, unsigned slot, char *buf, size_t len)
{
	snprintf(buf, len, "%02x:00.%u", slot_bus(vm, slot), vm->l->companion ? 1 : 0);
}

/* ---- QMP: the launcher's own monitor (DIR/run-qmp.sock) ----------------- */

static struct qmp vm_qmp_conn; /* 64 KiB buffer: not on the stack */

/* One command on a fresh connection; the return value or NULL with err. */
static struct json_object *qmp_once(struct vm *vm, const char *command, struct json_object *args, char *err,
				    size_t errlen)
{
	struct json_object *ret;

	if (qmp_open(&vm_qmp_conn, vm->l->run_qmp, VM_QMP_TIMEOUT_MS, err, errlen) < 0) {
		json_object_put(args);
		return NULL;
	}
	ret = qmp_execute(&vm_qmp_conn, command, args, err, errlen);
	qmp_close(&vm_qmp_conn);
	return ret;
}

static int qmp_device_add(struct vm *vm, const char *json, char *err, size_t errlen)
{
	struct json_object *args = json_tokener_parse(json), *ret;

	if (!args) {
		snprintf(err, errlen, "internal: bad device JSON %s", json);
		return -EINVAL;
	}
	ret = qmp_once(vm, "device_add", args, err, errlen);
	if (!ret)
		return -EIO;
	json_object_put(ret);
	return 0;
}

static int qmp_device_del(struct vm *vm, const char *id, char *err, size_t errlen)
{
	struct json_object *args = json_object_new_object(), *ret;

	json_object_object_add(args, "id", json_object_new_string(id));
	ret = qmp_once(vm, "device_del", args, err, errlen);
	if (!ret)
		return -EIO;
	json_object_put(ret);
	return 0;
}

/* Is a device with this id still in QEMU?  1, 0, or -1 when QMP failed. */
static int qmp_device_exists(struct vm *vm, const char *id)
{
	char err[CLI_ERR_LEN];
	struct json_object *args = json_object_new_object(), *ret;
	int found = 0;

	json_object_object_add(args, "path", json_object_new_string("/machine/peripheral"));
	ret = qmp_once(vm, "qom-list", args, err, sizeof(err));
	if (!ret)
		return -1;
	for (size_t i = 0; json_object_is_type(ret, json_type_array) && i < json_object_array_length(ret); i++) {
		struct json_object *name;

		if (json_object_object_get_ex(json_object_array_get_idx(ret, i), "name", &name) &&
		    strcmp(json_object_get_string(name), id) == 0)
			found = 1;
	}
	json_object_put(ret);
	return found;
}

/* In-process: the device's own "present" property (-1: unknown). */
static int qmp_device_present(struct vm *vm, const char *id)
{
	char err[CLI_ERR_LEN], path[64];
	struct json_object *args = json_object_new_object(), *ret;
	int present = -1;

	snprintf(path, sizeof(path), "/machine/peripheral/%s", id);
	json_object_object_add(args, "path", json_object_new_string(path));
	json_object_object_add(args, "property", json_object_new_string("present"));
	ret = qmp_once(vm, "qom-get", args, err, sizeof(err));
	if (ret && json_object_is_type(ret, json_type_boolean))
		present = json_object_get_boolean(ret);
	json_object_put(ret);
	return present;
}

/* ---- a broker's watch stream --------------------------------------------- */

static void watch_close(struct vm_dev *d)
{
	if (d->watch_fd >= 0)
		close(d->watch_fd);
	d->watch_fd = -1;
	d->watch_len = 0;
}

/* Ask the broker to tell us when its host device goes or comes back. */
static void watch_open(struct vm_dev *d)
{
	static const char request[] = "watch\n";
	int fd = cli_unix_connect(d->sockets.control);

	if (fd < 0) {
		cli_note("%s: cannot watch its broker (%s): a pulled device will not be unplugged from the VM", d->id,
			 strerror(-fd));
		return;
	}
	if (send(fd, request, sizeof(request) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(request) - 1)) {
		close(fd);
		return;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	d->watch_fd = fd;
	d->watch_len = 0;
}

static void unplug_start(struct vm *vm, struct vm_dev *d, bool detaching);
static bool unplug_safe(struct vm *vm, struct vm_dev *d, char *why, size_t len);

/* One line of a broker's watch stream: {"event":"removed"|"present",...}. */
static void watch_event(struct vm *vm, struct vm_dev *d, const char *line)
{
	struct json_object *obj = json_tokener_parse(line), *event, *reason;
	const char *what;

	if (!obj || !json_object_object_get_ex(obj, "event", &event)) {
		json_object_put(obj);
		return; /* a reply we do not know: ignore, stay watching */
	}
	what = json_object_get_string(event);
	if (strcmp(what, "removed") == 0) {
		bool was_present = d->present;

		d->present = false;
		snprintf(d->removal, sizeof(d->removal), "%s",
			 json_object_object_get_ex(obj, "reason", &reason) ? json_object_get_string(reason) :
									      "no reason given");
		if (was_present && d->state == VM_DEV_ATTACHED) {
			char why[CLI_ERR_LEN];

			if (!unplug_safe(vm, d, why, sizeof(why))) {
				cli_note("%s (%s) was removed from the host: %s; %s (the guest's driver sees a missing "
					 "device and gives it up)",
					 d->id, d->spec, d->removal, why);
				d->state = VM_DEV_REMOVED;
				d->stuck = true;
			} else {
				cli_note("%s (%s) was removed from the host: %s; unplugging slot %u from the VM", d->id,
					 d->spec, d->removal, dev_slot(vm, d));
				unplug_start(vm, d, false);
			}
		}
	} else if (strcmp(what, "present") == 0) {
		if (!d->present && d->state == VM_DEV_REMOVED)
			cli_note("%s (%s) is back on the host: `vfio-apple attach %s` plugs it into the VM again", d->id,
				 d->spec, d->id);
		d->present = true;
		d->removal[0] = '\0';
	}
	json_object_put(obj);
}

static void watch_readable(struct vm *vm, struct vm_dev *d)
{
	for (;;) {
		ssize_t n = recv(d->watch_fd, d->watch_buf + d->watch_len, sizeof(d->watch_buf) - 1 - d->watch_len, 0);
		char *start, *nl;

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		if (n <= 0) {
			watch_close(d); /* the broker went: its exit is handled as a child's */
			return;
		}
		d->watch_len += (size_t)n;
		d->watch_buf[d->watch_len] = '\0';
		start = d->watch_buf;
		while ((nl = strchr(start, '\n'))) {
			*nl = '\0';
			watch_event(vm, d, start);
			start = nl + 1;
		}
		d->watch_len -= (size_t)(start - d->watch_buf);
		memmove(d->watch_buf, start, d->watch_len);
		if (d->watch_len == sizeof(d->watch_buf) - 1)
			d->watch_len = 0; /* a line longer than any event: drop it */
	}
}

/* ---- devices -------------------------------------------------------------- */

static void reply(int fd, struct json_object *obj)
{
	const char *text = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(text);

	/* A local client of our own uid, waiting for this line: bounded write. */
	for (size_t off = 0; off < len;) {
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		ssize_t n;

		if (poll(&pfd, 1, 1000) <= 0)
			break;
		n = send(fd, text + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	(void)!send(fd, "\n", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	json_object_put(obj);
	close(fd);
}

static struct json_object *error_reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static struct json_object *error_reply(const char *fmt, ...)
{
	struct json_object *obj = json_object_new_object();
	char text[CLI_ERR_LEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	json_object_object_add(obj, "ok", json_object_new_boolean(false));
	json_object_object_add(obj, "error", json_object_new_string(text));
	return obj;
}

static struct json_object *dev_json(const struct vm *vm, const struct vm_dev *d)
{
	struct json_object *obj = json_object_new_object();
	unsigned slot = dev_slot(vm, d);
	char name[32];

	json_object_object_add(obj, "id", json_object_new_string(d->id));
	json_object_object_add(obj, "device", json_object_new_string(d->spec));
	json_object_object_add(obj, "slot", json_object_new_int((int)slot));
	json_object_object_add(obj, "state", json_object_new_string(state_name(d->state)));
	json_object_object_add(obj, "present", json_object_new_boolean(d->present));
	if (!d->present)
		json_object_object_add(obj, "removal", json_object_new_string(d->removal));
	if (d->stuck)
		json_object_object_add(obj, "in_slot", json_object_new_boolean(true));
	guest_name(vm, slot, false, name, sizeof(name));
	json_object_object_add(obj, "function", json_object_new_string(name));
	if (vm->l->companion) {
		guest_name(vm, slot, true, name, sizeof(name));
		json_object_object_add(obj, "companion", json_object_new_string(name));
	}
	if (vm->l->mode == LAUNCH_VFIO_USER) {
		json_object_object_add(obj, "control_socket", json_object_new_string(d->sockets.control));
		json_object_object_add(obj, "broker_pid", json_object_new_int(d->broker.exited ? 0 : d->broker.pid));
	}
	return obj;
}

static struct json_object *ok_reply(const struct vm *vm, const struct vm_dev *d)
{
	struct json_object *obj = dev_json(vm, d);

	json_object_object_add(obj, "ok", json_object_new_boolean(true));
	return obj;
}

/* Start a device's broker in its own socket directory (vfio-user). */
static int dev_start_broker(struct vm *vm, struct vm_dev *d, char *err, size_t errlen)
{
	char dir[256], addr[16];
	struct broker_start how = { .device = d->spec,
				    .sockets = &d->sockets,
				    .guest_addr = addr,
				    .companion = vm->l->companion,
				    .log_level = vm->l->log_level,
				    .log_fd = -1,
				    /* Unpluggable in QEMU <= 11.1 only without MSI-X (unplug_safe). */
				    .prefer_msi = true };
	const char *const socks[] = { d->sockets.control, d->sockets.passthrough, d->sockets.companion };
	int ret;

	if ((size_t)snprintf(dir, sizeof(dir), "%.200s/%s", vm->l->sockets.dir, d->id) >= sizeof(dir) ||
	    strlen(vm->l->sockets.dir) > 200 || socket_paths_from_dir(&d->sockets, dir) < 0) {
		snprintf(err, errlen, "socket directory %s: path too long", dir);
		return -ENAMETOOLONG;
	}
	ret = vfa_socket_dir_prepare(dir, err, errlen);
	for (size_t i = 0; ret == 0 && i < 3; i++)
		ret = socket_path_prepare(socks[i], err, errlen);
	if (ret < 0)
		return ret;
	managed_addr(vm, dev_slot(vm, d), addr, sizeof(addr));
	memset(&d->broker, 0, sizeof(d->broker));
	d->broker.name = d->id;
	ret = launch_start_broker_for(&d->broker, &how, err, errlen);
	if (ret < 0 && d->broker.pid && !d->broker.exited)
		proc_stop(&d->broker, SIGTERM, 5000);
	return ret;
}

static void dev_stop_broker(struct vm_dev *d)
{
	watch_close(d);
	if (d->broker.pid && !d->broker.exited) {
		proc_stop(&d->broker, SIGTERM, 10000);
		if (proc_exit_code(d->broker.status) != 0)
			cli_note("%s: its broker exited with code %d while stopping (see its messages above)", d->id,
				 proc_exit_code(d->broker.status));
	}
}

static void dev_free(struct vm_dev *d)
{
	if (d->waiter_fd >= 0)
		close(d->waiter_fd);
	memset(d, 0, sizeof(*d));
	d->waiter_fd = -1;
	d->watch_fd = -1;
}

/* Plug a slot's devices into the running QEMU: function 1 first, then the
 * companion at function 0, whose arrival makes QEMU announce the slot. */
static int dev_plug(struct vm *vm, struct vm_dev *d, char *err, size_t errlen)
{
	struct launch_slot_dev sd = { .used = true,
				      .device = d->spec,
				      .passthrough = d->sockets.passthrough,
				      .companion = d->sockets.companion };
	unsigned slot = dev_slot(vm, d);
	char json[3 * 1024];
	int ret;

	snprintf(sd.id, sizeof(sd.id), "%s", d->id);
	if (launch_slot_device_json(vm->l->mode, &sd, slot, vm->l->companion, false, json, sizeof(json)) < 0)
		return -E2BIG;
	ret = qmp_device_add(vm, json, err, errlen);
	if (ret < 0 || !vm->l->companion)
		return ret;
	if (launch_slot_device_json(vm->l->mode, &sd, slot, true, true, json, sizeof(json)) < 0)
		return -E2BIG;
	ret = qmp_device_add(vm, json, err, errlen);
	if (ret < 0) {
		char ignored[CLI_ERR_LEN];

		/* Not yet announced (function 0 is missing): goes at once. */
		qmp_device_del(vm, d->id, ignored, sizeof(ignored));
	}
	return ret;
}

/* The id QEMU unplugs a slot by: function 0. */
static void slot_head_id(const struct vm *vm, const struct vm_dev *d, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s", d->id, vm->l->companion ? "-dma" : "");
}

/*
 * Can QEMU unplug this function without aborting?  QEMU 10.1 to 11.1's
 * vfio-user-pci cannot when the function offers MSI-X: its finalize
 * deletes the MSI-X PBA overlay region after QOM has already removed it
 * (hw/vfio-user/pci.c, vfio_user_msix_teardown), and QEMU asserts.  So
 * brokers of `run` offer MSI when the function has it (--prefer-msi), and a
 * function with MSI-X alone stays in its slot.  false with why.
 */
static bool unplug_safe(struct vm *vm, struct vm_dev *d, char *why, size_t len)
{
	const struct qemu_choice *q = &vm->l->qemu_bin;
	char err[CLI_ERR_LEN];
	struct json_object *st;
	bool msix;

	if (vm->l->mode != LAUNCH_VFIO_USER || q->major > 11 || (q->major == 11 && q->minor > 1))
		return true;
	st = control_query(d->sockets.control, 2000, err, sizeof(err));
	msix = st && strcmp(status_text(st, "interrupts", "kind"), "msix") == 0;
	json_object_put(st);
	if (!msix)
		return true;
	snprintf(why, len,
		 "%s offers the guest MSI-X only, and QEMU %u.%u's vfio-user-pci aborts when such a function is "
		 "unplugged (hw/vfio-user/pci.c frees its MSI-X PBA overlay twice): it keeps slot %u until the VM "
		 "stops; the in-process devices (run --in-process) unplug it",
		 d->id, q->major, q->minor, dev_slot(vm, d));
	return false;
}

static void unplug_start(struct vm *vm, struct vm_dev *d, bool detaching)
{
	char err[CLI_ERR_LEN], head[32];

	slot_head_id(vm, d, head, sizeof(head));
	d->detaching = detaching;
	d->state = VM_DEV_UNPLUGGING;
	d->unplug_deadline = vfa_now_ms() + VM_UNPLUG_TIMEOUT_MS;
	/* In-process, a pulled device asks QEMU itself; a second request only
	 * says one is pending. */
	if (qmp_device_del(vm, head, err, sizeof(err)) < 0 && detaching)
		cli_note("%s: device_del %s: %s", d->id, head, err);
}

/* An unplug in flight: done once QEMU has neither function of the slot. */
static void unplug_check(struct vm *vm, struct vm_dev *d)
{
	char head[32], err[CLI_ERR_LEN];
	int head_there, fn_there;

	slot_head_id(vm, d, head, sizeof(head));
	head_there = qmp_device_exists(vm, head);
	fn_there = qmp_device_exists(vm, d->id);
	if (head_there < 0 || fn_there < 0)
		return; /* QMP busy or QEMU going: next round */
	if (head_there || fn_there) {
		if (d->waiter_fd >= 0 && vfa_now_ms() > d->unplug_deadline) {
			reply(d->waiter_fd, error_reply("the guest did not let go of %s (slot %u) within %d s; it stays "
							"requested (is the guest's PCIe hot-plug, pciehp or acpiphp, "
							"on?)",
							d->id, dev_slot(vm, d), VM_UNPLUG_TIMEOUT_MS / 1000));
			d->waiter_fd = -1;
		}
		return;
	}
	if (d->detaching || vm->l->mode == LAUNCH_IN_PROCESS) {
		int waiter = d->waiter_fd;
		struct json_object *done;

		d->waiter_fd = -1;
		d->state = VM_DEV_FREE;
		done = ok_reply(vm, d);
		if (vm->l->mode == LAUNCH_VFIO_USER) {
			/* What the host still held once QEMU let go: nothing, or a leak. */
			struct json_object *st = control_query(d->sockets.control, 2000, err, sizeof(err));
			uint64_t live;

			if (st && status_get_u64(st, "dma", "live_mappings", &live))
				json_object_object_add(done, "dart_live_mappings", json_object_new_uint64(live));
			if (st && status_get_u64(st, "companion", "live_ids", &live))
				json_object_object_add(done, "companion_live_ids", json_object_new_uint64(live));
			json_object_put(st);
			dev_stop_broker(d);
		}
		cli_note("%s (%s) %s; slot %u is free", d->id, d->spec,
			 d->detaching ? "detached" : "was unplugged from the VM after its removal", dev_slot(vm, d));
		if (waiter >= 0)
			reply(waiter, done);
		else
			json_object_put(done);
		dev_free(d);
		return;
	}
	d->state = VM_DEV_REMOVED;
	cli_note("%s is out of the VM; its broker waits for the device: `vfio-apple attach %s` once it is back, or "
		 "`vfio-apple detach %s` to let it go",
		 d->id, d->id, d->id);
}

/* ---- the guest's bus numbers ---------------------------------------------- */

/*
 * Read each slot's secondary bus number from QEMU (query-pci: what the
 * guest's firmware or kernel wrote into the port), and when one changed,
 * tell that slot's broker its function's new address for MANAGED_BDF.
 * The guest numbers its buses while it enumerates, long before a module
 * such as apple_dma reads MANAGED_BDF; checked every 2 s, also after a
 * guest reboot.
 */
static void refresh_buses(struct vm *vm)
{
	char err[CLI_ERR_LEN];
	struct json_object *buses = qmp_once(vm, "query-pci", NULL, err, sizeof(err));

	for (size_t b = 0; buses && json_object_is_type(buses, json_type_array) && b < json_object_array_length(buses);
	     b++) {
		struct json_object *devs = json_object_object_get(json_object_array_get_idx(buses, b), "devices");

		for (size_t i = 0; devs && json_object_is_type(devs, json_type_array) && i < json_object_array_length(devs);
		     i++) {
			struct json_object *dev = json_object_array_get_idx(devs, i), *id, *bridge, *bus, *sec;
			unsigned slot;
			int64_t number;

			if (!json_object_object_get_ex(dev, "qdev_id", &id) ||
			    sscanf(json_object_get_string(id), "vfa-port%u", &slot) != 1 || slot >= vm->l->slots ||
			    !json_object_object_get_ex(dev, "pci_bridge", &bridge) ||
			    !json_object_object_get_ex(bridge, "bus", &bus) ||
			    !json_object_object_get_ex(bus, "secondary", &sec))
				continue;
			number = json_object_get_int64(sec);
			if (number <= 0 || number > 255 || number == vm->slot_bus[slot])
				continue;
			vm->slot_bus[slot] = (uint8_t)number;
			if (vm->l->mode == LAUNCH_VFIO_USER && vm->dev[slot].state != VM_DEV_FREE &&
			    vm->dev[slot].broker.pid && !vm->dev[slot].broker.exited) {
				char request[64], addr[16];
				struct json_object *ok;

				managed_addr(vm, slot, addr, sizeof(addr));
				snprintf(request, sizeof(request), "guest-addr %s\n", addr);
				ok = control_request(vm->dev[slot].sockets.control, request, 2000, err, sizeof(err));
				if (!ok || !json_object_get_boolean(json_object_object_get(ok, "ok")))
					cli_note("%s: cannot give its broker the guest's address %s: %s", vm->dev[slot].id, addr,
						 ok ? json_object_to_json_string(ok) : err);
				json_object_put(ok);
			}
		}
	}
	json_object_put(buses);
}

/* ---- attach / detach / list ------------------------------------------------ */

static struct vm_dev *find_id(struct vm *vm, const char *id)
{
	for (unsigned s = 0; s < vm->l->slots; s++)
		if (vm->dev[s].state != VM_DEV_FREE && strcmp(vm->dev[s].id, id) == 0)
			return &vm->dev[s];
	return NULL;
}

static struct vm_dev *new_dev(struct vm *vm, const char *spec)
{
	for (unsigned s = 0; s < vm->l->slots; s++) {
		struct vm_dev *d = &vm->dev[s];

		if (d->state != VM_DEV_FREE)
			continue;
		dev_free(d);
		snprintf(d->id, sizeof(d->id), "vfa%u", vm->next_id++);
		snprintf(d->spec, sizeof(d->spec), "%s", spec);
		d->present = true;
		return d;
	}
	return NULL;
}

static struct json_object *do_attach(struct vm *vm, const char *arg)
{
	char err[CLI_ERR_LEN];
	struct vm_dev *d = find_id(vm, arg);
	int ret;

	if (d) {
		if (d->state != VM_DEV_REMOVED)
			return error_reply("%s is %s, not removed: nothing to attach again", d->id,
					   state_name(d->state));
		if (d->stuck)
			return error_reply("%s never left its slot (QEMU could not unplug it): stop the VM to use "
					   "the device again",
					   d->id);
		if (!d->present)
			return error_reply("%s's device is still missing from the host (%s): plug it back first", d->id,
					   d->removal);
	} else {
		if (strncmp(arg, "vfa", 3) == 0 && !strchr(arg, ':'))
			return error_reply("no device %s in this VM (`vfio-apple status` lists them)", arg);
		if (device_spec_check(arg, err, sizeof(err)) < 0)
			return error_reply("%s", err);
		refresh_buses(vm);
		d = new_dev(vm, arg);
		if (!d)
			return error_reply("all %u slots are in use: detach a device, or start run with --slots N (at "
					   "most %d)",
					   vm->l->slots, LAUNCH_SLOTS_MAX);
		if (vm->l->mode == LAUNCH_VFIO_USER) {
			ret = dev_start_broker(vm, d, err, sizeof(err));
			if (ret < 0) {
				dev_free(d);
				return error_reply("%s", err);
			}
			watch_open(d);
		}
	}
	ret = dev_plug(vm, d, err, sizeof(err));
	if (ret < 0) {
		struct json_object *e = error_reply("QEMU refused the device: %s", err);

		if (d->state == VM_DEV_FREE) {
			dev_stop_broker(d);
			dev_free(d);
		}
		return e;
	}
	d->state = VM_DEV_ATTACHED;
	guest_name(vm, dev_slot(vm, d), false, err, sizeof(err));
	cli_note("%s (%s) attached in slot %u: guest function %s", d->id, d->spec, dev_slot(vm, d), err);
	return ok_reply(vm, d);
}

/* Returns a reply, or NULL when the reply waits for the unplug (waiter). */
static struct json_object *do_detach(struct vm *vm, const char *id, int fd)
{
	struct vm_dev *d = find_id(vm, id);
	struct json_object *obj;

	if (!d)
		return error_reply("no device %s in this VM (`vfio-apple status` lists them)", id);
	switch (d->state) {
	case VM_DEV_ATTACHED: {
		char why[CLI_ERR_LEN];

		if (!unplug_safe(vm, d, why, sizeof(why)))
			return error_reply("cannot detach: %s", why);
		cli_note("%s (%s): detaching, the guest is asked to let go of slot %u", d->id, d->spec, dev_slot(vm, d));
		unplug_start(vm, d, true);
		d->waiter_fd = fd;
		return NULL;
	}
	case VM_DEV_REMOVED:
		if (d->stuck)
			return error_reply("%s never left its slot (QEMU could not unplug it): it is released when the "
					   "VM stops",
					   d->id);
		obj = ok_reply(vm, d);
		dev_stop_broker(d);
		cli_note("%s (%s) let go; slot %u is free", d->id, d->spec, dev_slot(vm, d));
		dev_free(d);
		return obj;
	default:
		return error_reply("%s is already being unplugged", d->id);
	}
}

static struct json_object *do_list(struct vm *vm)
{
	struct json_object *obj = json_object_new_object(), *devs = json_object_new_array();

	json_object_object_add(obj, "ok", json_object_new_boolean(true));
	json_object_object_add(obj, "mode",
			       json_object_new_string(vm->l->mode == LAUNCH_IN_PROCESS ? "in-process" : "vfio-user"));
	json_object_object_add(obj, "slots", json_object_new_int((int)vm->l->slots));
	json_object_object_add(obj, "qemu_pid", json_object_new_int(vm->l->qemu.exited ? 0 : vm->l->qemu.pid));
	if (vm->l->mode == LAUNCH_IN_PROCESS && vm->l->qmp[0])
		json_object_object_add(obj, "qmp", json_object_new_string(vm->l->qmp));
	for (unsigned s = 0; s < vm->l->slots; s++)
		if (vm->dev[s].state != VM_DEV_FREE)
			json_object_array_add(devs, dev_json(vm, &vm->dev[s]));
	json_object_object_add(obj, "devices", devs);
	return obj;
}

/* One request from the launcher's socket: read its line (bounded), act. */
static void serve_request(struct vm *vm)
{
	char line[VM_REQUEST_MAX + 1];
	size_t used = 0;
	int64_t deadline;
	uid_t uid;
	pid_t pid;
	int fd = vfa_accept(vm->listen_fd, false);
	struct json_object *answer;

	if (fd < 0)
		return;
	if (!vfa_socket_peer_allowed(fd, &uid, &pid)) {
		cli_note("refused a connection to %s from uid %d", vm->run_socket, (int)uid);
		close(fd);
		return;
	}
	deadline = vfa_now_ms() + 2000;
	while (!memchr(line, '\n', used) && used < VM_REQUEST_MAX) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int64_t left = deadline - vfa_now_ms();
		ssize_t n;

		if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
			break;
		n = recv(fd, line + used, VM_REQUEST_MAX - used, MSG_DONTWAIT);
		if (n <= 0)
			break;
		used += (size_t)n;
	}
	line[used] = '\0';
	if (!strchr(line, '\n')) {
		reply(fd, error_reply("expected one request line (attach SPEC|ID, detach ID, list)"));
		return;
	}
	*strchr(line, '\n') = '\0';
	if (strcmp(line, "list") == 0)
		answer = do_list(vm);
	else if (strncmp(line, "attach ", 7) == 0)
		answer = do_attach(vm, line + 7);
	else if (strncmp(line, "detach ", 7) == 0)
		answer = do_detach(vm, line + 7, fd);
	else
		answer = error_reply("unknown request \"%.64s\": attach SPEC|ID, detach ID or list", line);
	if (answer)
		reply(fd, answer);
}

/* ---- the run --------------------------------------------------------------- */

static int vm_setup(struct vm *vm, const char *const specs[], size_t n, char *err, size_t errlen)
{
	int ret;

	for (unsigned s = 0; s < LAUNCH_SLOTS_MAX; s++)
		dev_free(&vm->dev[s]);
	vm->listen_fd = -1;
	ret = vfa_socket_dir_prepare(vm->l->sockets.dir, err, errlen);
	if (ret < 0)
		return ret;
	if ((size_t)snprintf(vm->run_socket, sizeof(vm->run_socket), "%s/" VM_SOCKET_NAME, vm->l->sockets.dir) >=
		    sizeof(vm->run_socket) ||
	    (size_t)snprintf(vm->l->run_qmp, sizeof(vm->l->run_qmp), "%s/" VM_QMP_NAME, vm->l->sockets.dir) >=
		    sizeof(vm->l->run_qmp)) {
		snprintf(err, errlen, "socket directory %s: path too long", vm->l->sockets.dir);
		return -ENAMETOOLONG;
	}
	ret = socket_path_prepare(vm->l->run_qmp, err, errlen);
	if (ret == 0 && vm->l->qmp[0])
		ret = socket_path_prepare(vm->l->qmp, err, errlen);
	if (ret < 0)
		return ret;
	vm->listen_fd = vfa_listen_unix(vm->run_socket, 8, err, errlen);
	if (vm->listen_fd < 0)
		return vm->listen_fd;
	for (size_t i = 0; i < n; i++) {
		struct vm_dev *d = new_dev(vm, specs[i]);
		struct launch_slot_dev *sd = &vm->l->slot_dev[i];

		if (vm->l->mode == LAUNCH_VFIO_USER) {
			ret = dev_start_broker(vm, d, err, errlen);
			if (ret < 0)
				return ret;
			watch_open(d);
		}
		d->state = VM_DEV_ATTACHED;
		sd->used = true;
		snprintf(sd->id, sizeof(sd->id), "%s", d->id);
		sd->device = d->spec;
		sd->passthrough = d->sockets.passthrough;
		sd->companion = d->sockets.companion;
	}
	return 0;
}

static void vm_teardown(struct vm *vm)
{
	proc_stop(&vm->l->qemu, SIGTERM, 5000);
	for (unsigned s = 0; s < LAUNCH_SLOTS_MAX; s++) {
		struct vm_dev *d = &vm->dev[s];

		if (d->state == VM_DEV_FREE)
			continue;
		dev_stop_broker(d);
		dev_free(d);
	}
	if (vm->listen_fd >= 0) {
		close(vm->listen_fd);
		unlink(vm->run_socket);
	}
	vm->listen_fd = -1;
}

/* A broker that ends on its own: fatal while QEMU uses its device. */
static bool brokers_reaped(struct vm *vm)
{
	bool fatal = false;

	for (unsigned s = 0; s < vm->l->slots; s++) {
		struct vm_dev *d = &vm->dev[s];

		if (d->state == VM_DEV_FREE || !d->broker.pid || !d->broker.exited)
			continue;
		if (d->state == VM_DEV_REMOVED) {
			cli_note("%s: its broker exited (code %d) while the device was out of the VM; slot %u is free", d->id,
				 proc_exit_code(d->broker.status), s);
			watch_close(d);
			dev_free(d);
			continue;
		}
		cli_error("the broker of %s exited (status %d) while QEMU was running; stopping QEMU", d->id,
			  proc_exit_code(d->broker.status));
		fatal = true;
	}
	return fatal;
}

int vm_run(struct launch *l, const char *const specs[], size_t n, int qemu_argc, char *const qemu_argv[])
{
	static struct vm vm;
	struct launch_argv args = { .count = 0 };
	char err[CLI_ERR_LEN];
	bool gave_tty = false, fatal = false;
	int64_t next_presence = 0;
	int ret;

	memset(&vm, 0, sizeof(vm));
	vm.l = l;
	if (n > l->slots) {
		cli_error("%zu devices need %zu slots; --slots is %u", n, n, l->slots);
		return 2;
	}
	ret = vm_setup(&vm, specs, n, err, sizeof(err));
	if (ret < 0) {
		if (ret != -EINTR)
			cli_error("%s", err);
		vm_teardown(&vm);
		return ret == -EINTR ? 128 + proc_stop_signal() : 1;
	}
	if (launch_qemu_argv(l, qemu_argc, qemu_argv, &args) < 0) {
		cli_error("too many QEMU arguments");
		vm_teardown(&vm);
		return 2;
	}
	if (l->mode == LAUNCH_IN_PROCESS)
		cli_note("in-process QEMU %u.%u.%u (%s); counters: vfio-apple status -s %s", l->qemu_bin.major,
			 l->qemu_bin.minor, l->qemu_bin.micro, l->qemu_bin.path, l->sockets.dir);
	for (size_t i = 0; i < n; i++) {
		char fn[32];

		guest_name(&vm, (unsigned)i, false, fn, sizeof(fn));
		cli_note("%s (%s) in slot %zu: guest function %s", vm.dev[i].id, vm.dev[i].spec, i, fn);
	}
	cli_note("%u slot(s); attach and detach with `vfio-apple attach|detach -s %s`", l->slots, l->sockets.dir);
	l->qemu.name = "qemu";
	ret = proc_spawn(&l->qemu, args.v, NULL);
	launch_argv_free(&args);
	if (ret < 0) {
		cli_error("cannot start QEMU: %s", strerror(-ret));
		vm_teardown(&vm);
		return 1;
	}
	/* An interactive QEMU (-nographic, a monitor) gets the terminal: Ctrl-C
	 * and Ctrl-A x then behave as with QEMU alone. */
	if (isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) == getpgrp()) {
		signal(SIGTTOU, SIG_IGN);
		gave_tty = tcsetpgrp(STDIN_FILENO, l->qemu.pid) == 0;
	}
	while (!l->qemu.exited && !fatal && !proc_stop_signal()) {
		struct pollfd pfd[2 + LAUNCH_SLOTS_MAX];
		struct child *kids[1 + LAUNCH_SLOTS_MAX];
		size_t nfd = 0, nkids = 0;

		pfd[nfd++] = (struct pollfd){ .fd = proc_signal_fd(), .events = POLLIN };
		pfd[nfd++] = (struct pollfd){ .fd = vm.listen_fd, .events = POLLIN };
		for (unsigned s = 0; s < l->slots; s++)
			pfd[nfd++] = (struct pollfd){ .fd = vm.dev[s].watch_fd, .events = POLLIN };
		poll(pfd, nfd, VM_POLL_MS);

		kids[nkids++] = &l->qemu;
		for (unsigned s = 0; s < l->slots; s++)
			if (vm.dev[s].broker.pid)
				kids[nkids++] = &vm.dev[s].broker;
		proc_reap(kids, nkids);
		if (l->qemu.exited)
			break;
		fatal = brokers_reaped(&vm);
		if (pfd[1].revents & POLLIN)
			serve_request(&vm);
		for (unsigned s = 0; s < l->slots; s++)
			if (vm.dev[s].watch_fd >= 0 && (pfd[2 + s].revents & (POLLIN | POLLHUP | POLLERR)))
				watch_readable(&vm, &vm.dev[s]);
		for (unsigned s = 0; s < l->slots; s++)
			if (vm.dev[s].state == VM_DEV_UNPLUGGING)
				unplug_check(&vm, &vm.dev[s]);
		if (vfa_now_ms() >= vm.next_bus_check) {
			vm.next_bus_check = vfa_now_ms() + 2000;
			refresh_buses(&vm);
		}
		/* In-process there is no broker to say a device was pulled:
		 * its "present" property does, once a second. */
		if (l->mode == LAUNCH_IN_PROCESS && vfa_now_ms() >= next_presence) {
			next_presence = vfa_now_ms() + 1000;
			for (unsigned s = 0; s < l->slots; s++) {
				struct vm_dev *d = &vm.dev[s];

				int present;

				if (d->state != VM_DEV_ATTACHED)
					continue;
				present = qmp_device_present(&vm, d->id);
				if (present == 0) {
					d->present = false;
					snprintf(d->removal, sizeof(d->removal), "the device reported it gone");
					cli_note("%s (%s) was removed from the host; unplugging slot %u from the VM", d->id,
						 d->spec, s);
					unplug_start(&vm, d, false);
				} else if (present < 0 && qmp_device_exists(&vm, d->id) == 0) {
					/* Pulled, and unplugged by the device itself, between two looks. */
					cli_note("%s (%s) was removed from the host and has left the VM; slot %u is free", d->id,
						 d->spec, s);
					dev_free(d);
				}
			}
		}
	}
	if (gave_tty)
		tcsetpgrp(STDIN_FILENO, getpgrp());
	vm_teardown(&vm);
	if (proc_stop_signal())
		return 128 + proc_stop_signal();
	if (fatal)
		return 1;
	return proc_exit_code(l->qemu.status);
}

/* ---- the client side ------------------------------------------------------- */

struct json_object *vm_request(const char *socket_dir, const char *request, int timeout_ms, char *err, size_t errlen)
{
	char path[320], *buf;
	size_t used = 0, cap = 64 * 1024;
	int64_t deadline = vfa_now_ms() + timeout_ms;
	struct json_object *obj = NULL;
	int fd;

	if ((size_t)snprintf(path, sizeof(path), "%s/" VM_SOCKET_NAME, socket_dir) >= sizeof(path)) {
		snprintf(err, errlen, "socket directory %s: path too long", socket_dir);
		return NULL;
	}
	fd = cli_unix_connect(path);
	if (fd < 0) {
		if (fd == -ENOENT || fd == -ECONNREFUSED)
			snprintf(err, errlen,
				 "no `vfio-apple run` is running with sockets in %s (no %s): start one, or pass its "
				 "--socket-dir",
				 socket_dir, path);
		else
			snprintf(err, errlen, "cannot connect to %s: %s", path, strerror(-fd));
		return NULL;
	}
	buf = malloc(cap + 1);
	if (!buf) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (send(fd, request, strlen(request), MSG_NOSIGNAL) != (ssize_t)strlen(request) ||
	    send(fd, "\n", 1, MSG_NOSIGNAL) != 1) {
		snprintf(err, errlen, "cannot send to %s: %s", path, strerror(errno));
		goto out;
	}
	while (!memchr(buf, '\n', used) && used < cap) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int64_t left = deadline - vfa_now_ms();
		ssize_t n;

		if (left <= 0 || poll(&pfd, 1, (int)left) <= 0) {
			snprintf(err, errlen, "`vfio-apple run` at %s did not answer within %d s", path,
				 timeout_ms / 1000);
			goto out;
		}
		n = recv(fd, buf + used, cap - used, 0);
		if (n <= 0)
			break;
		used += (size_t)n;
	}
	buf[used] = '\0';
	obj = json_tokener_parse(buf);
	if (!obj || !json_object_is_type(obj, json_type_object)) {
		json_object_put(obj);
		obj = NULL;
		snprintf(err, errlen, "`vfio-apple run` at %s sent no answer (%zu bytes)", path, used);
	}
out:
	free(buf);
	close(fd);
	return obj;
}
