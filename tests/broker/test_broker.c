// SPDX-License-Identifier: MIT
/*
 * broker_run() in a child process over the simulated NVMe: the control
 * socket's JSON, a companion MAP through a real vfio-user conversation, the
 * release of everything on disconnect, identity-mode registration of the
 * passthrough client's RAM, and a clean exit 0 on SIGTERM (broker_run
 * itself fails when a mapping outlives the shutdown).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "backends.h"
#include "broker.h"
#include "vfu_client.h"

#define RAM_GPA 0x100000ULL
#define RAM_SIZE (2u << 20)
#define TIMEOUT_MS 5000

struct env {
	char dir[64];
	char pt_sock[96];
	char comp_sock[96];
	char ctrl_sock[96];
	pid_t pid;
	uint16_t next_id;
	char log[96]; /* when set: the broker's stderr goes there */
	bool prefer_msi;
};

static void start_broker(struct env *e, const char *spec)
{
	struct broker_config cfg = {
		.device_spec = spec,
		.passthrough_socket = e->pt_sock,
		.companion_socket = e->comp_sock,
		.control_socket = e->ctrl_sock,
		.passthrough_bus = 0,
		.passthrough_devfn = 5 << 3,
		.prefer_msi = e->prefer_msi,
	};

	e->pid = fork();
	assert_true(e->pid >= 0);
	if (e->pid == 0) {
		if (e->log[0]) {
			int lfd = open(e->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

			if (lfd < 0 || dup2(lfd, 2) < 0)
				_exit(98);
		}
		_exit(broker_run(&cfg));
	}
	/* Up when the control socket answers (it is created last). */
	for (int i = 0; i < TIMEOUT_MS / 10; i++) {
		int fd = vfuc_connect(e->ctrl_sock);

		if (fd >= 0) {
			close(fd);
			return;
		}
		int status;
		if (waitpid(e->pid, &status, WNOHANG) == e->pid)
			fail_msg("the broker exited early (status 0x%x)", status);
		usleep(10000);
	}
	fail_msg("the broker did not come up within %d ms", TIMEOUT_MS);
}

/* SIGTERM, then the exit status (or -1 if it did not exit normally). */
static int stop_broker(struct env *e)
{
	int status = 0;

	assert_int_equal(kill(e->pid, SIGTERM), 0);
	for (int i = 0; i < TIMEOUT_MS / 10; i++) {
		if (waitpid(e->pid, &status, WNOHANG) == e->pid) {
			e->pid = 0;
			return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
		}
		usleep(10000);
	}
	kill(e->pid, SIGKILL);
	waitpid(e->pid, &status, 0);
	e->pid = 0;
	fail_msg("the broker ignored SIGTERM");
	return -1;
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	assert_non_null(e);
	strcpy(e->dir, "/tmp/vfa-broker-test-XXXXXX");
	assert_non_null(mkdtemp(e->dir));
	snprintf(e->pt_sock, sizeof(e->pt_sock), "%s/pt.sock", e->dir);
	snprintf(e->comp_sock, sizeof(e->comp_sock), "%s/comp.sock", e->dir);
	snprintf(e->ctrl_sock, sizeof(e->ctrl_sock), "%s/ctl.sock", e->dir);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	if (e->pid > 0) {
		kill(e->pid, SIGKILL);
		waitpid(e->pid, NULL, 0);
	}
	unlink(e->pt_sock);
	unlink(e->comp_sock);
	unlink(e->ctrl_sock);
	if (e->log[0])
		unlink(e->log);
	rmdir(e->dir);
	free(e);
	return 0;
}

/* ---- control socket ------------------------------------------------------ */

static char *control_request(const char *path, const char *req)
{
	static char buf[8192];
	size_t len = 0;
	int fd = vfuc_connect(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);

		assert_true(n >= 0);
		if (n == 0)
			break;
		len += (size_t)n;
		assert_true(len < sizeof(buf) - 1);
	}
	close(fd);
	buf[len] = '\0';
	return buf;
}

static json_object *status(const struct env *e)
{
	char *text = control_request(e->ctrl_sock, "status\n");
	size_t len = strlen(text);
	json_object *o;

	assert_true(len > 2);
	assert_int_equal(text[len - 1], '\n');
	assert_null(memchr(text, '\n', len - 1)); /* one line */
	o = json_tokener_parse(text);
	assert_non_null(o);
	return o;
}

/* The member at a dotted path, which must exist. */
static json_object *jpath(json_object *o, const char *path)
{
	char key[64];
	const char *p = path;

	while (*p) {
		size_t n = strcspn(p, ".");
		json_object *next;

		assert_true(n < sizeof(key));
		memcpy(key, p, n);
		key[n] = '\0';
		if (!json_object_object_get_ex(o, key, &next))
			fail_msg("status has no %s", path);
		o = next;
		p += n + (p[n] == '.');
	}
	return o;
}

static int64_t jint(json_object *o, const char *path)
{
	json_object *v = jpath(o, path);

	assert_true(json_object_is_type(v, json_type_int));
	return json_object_get_int64(v);
}

static bool jbool(json_object *o, const char *path)
{
	json_object *v = jpath(o, path);

	assert_true(json_object_is_type(v, json_type_boolean));
	return json_object_get_boolean(v);
}

static const char *jstr(json_object *o, const char *path)
{
	json_object *v = jpath(o, path);

	assert_true(json_object_is_type(v, json_type_string));
	return json_object_get_string(v);
}

/* ---- vfio-user client ---------------------------------------------------- */

static uint8_t reply_buf[1 << 16];

static ssize_t request(struct env *e, int fd, uint16_t cmd, const void *payload, size_t len, const int *fds,
		       unsigned nfds, uint32_t *error)
{
	struct vfu_hdr h;
	uint16_t id = ++e->next_id;
	ssize_t n;

	assert_int_equal(vfuc_send(fd, id, cmd, 0, payload, len, fds, nfds), 0);
	n = vfuc_recv(fd, &h, reply_buf, sizeof(reply_buf), TIMEOUT_MS);
	assert_true(n >= 0);
	assert_int_equal(h.id, id);
	assert_int_equal(h.command, cmd);
	*error = (h.flags & VFU_FLAG_ERROR) ? h.error : 0;
	return n;
}

static int client_connect(struct env *e, const char *path)
{
	uint8_t payload[256];
	uint32_t err;
	size_t len = vfuc_version_payload(payload, sizeof(payload), 0, 0,
					  "{\"capabilities\":{\"max_msg_fds\":16,\"pgsizes\":4096}}");
	int fd = vfuc_connect(path);

	assert_true(fd >= 0);
	assert_true(len > 0);
	request(e, fd, VFU_CMD_VERSION, payload, len, NULL, 0, &err);
	assert_int_equal(err, 0);
	return fd;
}

static uint32_t region_read32(struct env *e, int fd, uint32_t region, uint64_t offset)
{
	struct vfu_region_rw rw = { .offset = offset, .region = region, .count = 4 };
	uint32_t err, v;
	ssize_t n = request(e, fd, VFU_CMD_REGION_READ, &rw, sizeof(rw), NULL, 0, &err);

	assert_int_equal(err, 0);
	assert_int_equal(n, (ssize_t)sizeof(rw) + 4);
	memcpy(&v, reply_buf + sizeof(rw), 4);
	return v;
}

static uint32_t region_write32(struct env *e, int fd, uint32_t region, uint64_t offset, uint32_t v)
{
	uint8_t msg[sizeof(struct vfu_region_rw) + 4];
	struct vfu_region_rw rw = { .offset = offset, .region = region, .count = 4 };
	uint32_t err;

	memcpy(msg, &rw, sizeof(rw));
	memcpy(msg + sizeof(rw), &v, 4);
	request(e, fd, VFU_CMD_REGION_WRITE, msg, sizeof(msg), NULL, 0, &err);
	return err;
}

static uint32_t region_write64(struct env *e, int fd, uint32_t region, uint64_t offset, uint64_t v)
{
	uint8_t msg[sizeof(struct vfu_region_rw) + 8];
	struct vfu_region_rw rw = { .offset = offset, .region = region, .count = 8 };
	uint32_t err;

	memcpy(msg, &rw, sizeof(rw));
	memcpy(msg + sizeof(rw), &v, 8);
	request(e, fd, VFU_CMD_REGION_WRITE, msg, sizeof(msg), NULL, 0, &err);
	return err;
}

/* SET_IRQS on the MSI-X index: an eventfd for vector 0 (efd >= 0), or a mask/unmask action. */
static uint32_t set_irq_vector0(struct env *e, int fd, int efd, uint32_t action)
{
	struct vfu_irq_set is = {
		.argsz = sizeof(is),
		.flags = (efd >= 0 ? VFU_IRQ_SET_DATA_EVENTFD : VFU_IRQ_SET_DATA_NONE) | action,
		.index = VFU_PCI_MSIX_IRQ,
		.start = 0,
		.count = 1,
	};
	uint32_t err;

	request(e, fd, VFU_CMD_DEVICE_SET_IRQS, &is, sizeof(is), efd >= 0 ? &efd : NULL, efd >= 0 ? 1 : 0, &err);
	return err;
}

/* The eventfd's count after waiting at most timeout_ms for it (0: nothing came). */
static uint64_t efd_wait(int efd, int timeout_ms)
{
	struct pollfd pfd = { .fd = efd, .events = POLLIN };
	uint64_t n = 0;

	if (poll(&pfd, 1, timeout_ms) == 1 && read(efd, &n, 8) != 8)
		n = 0;
	return n;
}

static void dma_map_fd(struct env *e, int fd, int mfd)
{
	struct vfu_dma_map m = {
		.argsz = sizeof(m),
		.flags = VFU_DMA_MAP_FLAG_READ | VFU_DMA_MAP_FLAG_WRITE,
		.offset = 0,
		.addr = RAM_GPA,
		.size = RAM_SIZE,
	};
	uint32_t err;

	request(e, fd, VFU_CMD_DMA_MAP, &m, sizeof(m), &mfd, 1, &err);
	assert_int_equal(err, 0);
}

/* Guest RAM as QEMU has it: a memfd; *mfd_out keeps it open when not NULL. */
static uint8_t *new_ram(int *mfd_out)
{
	int mfd = memfd_create("guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	uint8_t *ram;

	assert_true(mfd >= 0);
	assert_int_equal(ftruncate(mfd, RAM_SIZE), 0);
	/* as QEMU's memfd backend seals it: the broker takes no RAM that can shrink */
	assert_int_equal(fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
	ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	assert_true(ram != MAP_FAILED);
	if (mfd_out)
		*mfd_out = mfd;
	else
		close(mfd);
	return ram;
}

/* Share RAM_SIZE bytes of fresh "guest RAM" at RAM_GPA; returns our mapping of it. */
static uint8_t *dma_map_ram(struct env *e, int fd)
{
	int mfd;
	uint8_t *ram = new_ram(&mfd);

	dma_map_fd(e, fd, mfd);
	close(mfd);
	return ram;
}

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* One apple-dma MAP of len bytes at gpa (command page at RAM_GPA); returns the batch status. */
static uint32_t companion_map(struct env *e, int fd, uint8_t *ram, uint64_t gpa, uint32_t len, uint64_t *id,
			      uint64_t *dma_addr)
{
	uint8_t *page = ram, *req = ram + 0x100, *resp = ram + 0x200;

	memset(ram, 0, 0x1000);
	put_le(page + 0x00, 1, 4); /* MAP */
	put_le(page + 0x04, 1, 4);
	put_le(page + 0x10, RAM_GPA + 0x100, 8);
	put_le(page + 0x18, RAM_GPA + 0x200, 8);
	put_le(req + 0, gpa, 8);
	put_le(req + 8, len, 4);
	assert_int_equal(region_write32(e, fd, 0, 0x10, (uint32_t)RAM_GPA), 0);
	assert_int_equal(region_write32(e, fd, 0, 0x14, 0), 0);
	assert_int_equal(region_write32(e, fd, 0, 0x18, 1), 0);
	uint32_t st = region_read32(e, fd, 0, 0x0C);
	if (st == 0xffffffffu) /* the managed function is gone: the registers read all ones */
		st = (uint32_t)get_le(page + 0x08, 4);
	assert_int_equal(get_le(page + 0x08, 4), st);
	*id = get_le(resp, 8);
	*dma_addr = get_le(resp + 8, 8);
	if (st == 0) {
		assert_int_equal(get_le(resp + 16, 4), len); /* dma_len */
		assert_int_equal(get_le(resp + 20, 4), 0);   /* entry status */
	}
	return st;
}

static uint32_t companion_map_one(struct env *e, int fd, uint8_t *ram, uint64_t *id, uint64_t *dma_addr)
{
	return companion_map(e, fd, ram, RAM_GPA + 0x10000, 0x4000, id, dma_addr);
}

/* A dart=apple sim broker, both clients connected and sharing RAM, one companion mapping made. */
static void start_mapped(struct env *e, int mfd, uint8_t *ram, int *pt, int *comp, uint64_t *id, uint64_t *bus)
{
	start_broker(e, "sim:nvme,size=16M,dart=apple");
	*pt = client_connect(e, e->pt_sock);
	*comp = client_connect(e, e->comp_sock);
	dma_map_fd(e, *pt, mfd);
	dma_map_fd(e, *comp, mfd);
	assert_int_equal(companion_map_one(e, *comp, ram, id, bus), 0);
	json_object *s = status(e);
	assert_int_equal(jint(s, "dma.live_mappings"), 1);
	json_object_put(s);
}

/* ---- tests --------------------------------------------------------------- */

static void test_status_json_and_sigterm(void **state)
{
	struct env *e = *state;
	struct stat sb;

	start_broker(e, "sim:nvme,size=16M");
	json_object *s = status(e);

	assert_true(strlen(jstr(s, "version")) > 0);
	assert_int_equal(jint(s, "pid"), e->pid);
	assert_true(jint(s, "uptime_s") >= 0);
	assert_string_equal(jstr(s, "device"), "sim:nvme,size=16M");
	assert_string_equal(jstr(s, "clients.passthrough.socket"), e->pt_sock);
	assert_string_equal(jstr(s, "clients.companion.socket"), e->comp_sock);
	assert_false(jbool(s, "clients.passthrough.connected"));
	assert_false(jbool(s, "clients.companion.connected"));
	assert_int_equal(jint(s, "dma.live_mappings"), 0);
	assert_int_equal(jint(s, "dma.live_bytes"), 0);
	assert_int_equal(jint(s, "dma.peak_mappings"), 0);
	assert_true(jint(s, "dma.max_mappings") > 0);
	assert_true(jint(s, "dma.max_bytes") > 0);
	assert_int_equal(jint(s, "dma.faults"), 0);
	assert_int_equal(jint(s, "dma.register_failures"), 0);
	assert_int_equal(jint(s, "companion.doorbells"), 0);
	assert_int_equal(jint(s, "companion.map_entries"), 0);
	assert_int_equal(jint(s, "companion.unmap_entries"), 0);
	assert_int_equal(jint(s, "companion.inval"), 0);
	assert_int_equal(jint(s, "companion.ioerr"), 0);
	assert_int_equal(jint(s, "companion.live_ids"), 0);
	assert_int_equal(jint(s, "companion.guest_features"), 0);
	assert_int_equal(jint(s, "interrupts.delivered"), 0);
	assert_int_equal(jint(s, "interrupts.vectors_enabled"), 0);
	json_object_put(s);

	/* Anything but "status" gets an error object, and the broker serves on. */
	char *bad = control_request(e->ctrl_sock, "reboot\n");
	assert_non_null(strstr(bad, "\"error\""));
	s = status(e);
	json_object_put(s);

	/* Idle connections that never ask cannot lock the status out. */
	int idle[12];
	for (unsigned i = 0; i < 12; i++) {
		idle[i] = vfuc_connect(e->ctrl_sock);
		assert_true(idle[i] >= 0);
	}
	s = status(e);
	assert_int_equal(jint(s, "pid"), e->pid);
	json_object_put(s);
	for (unsigned i = 0; i < 12; i++)
		close(idle[i]);

	assert_int_equal(stop_broker(e), 0);
	assert_int_equal(stat(e->pt_sock, &sb), -1);
	assert_int_equal(stat(e->comp_sock, &sb), -1);
	assert_int_equal(stat(e->ctrl_sock, &sb), -1);
}

static void test_passthrough_function(void **state)
{
	struct env *e = *state;

	start_broker(e, "sim:nvme,size=16M");
	int fd = client_connect(e, e->pt_sock);
	json_object *s = status(e);
	char id[16];

	assert_true(jbool(s, "clients.passthrough.connected"));
	/* Config space comes from the host: the same IDs as the status shows. */
	uint32_t ids = region_read32(e, fd, VFU_PCI_CONFIG_REGION, 0);
	snprintf(id, sizeof(id), "%04x:%04x", ids & 0xFFFF, ids >> 16);
	assert_string_equal(jstr(s, "host.id"), id);
	json_object_put(s);

	/* BAR0 sizing is emulated: all ones read back as the size mask. */
	struct vfu_region_info ri = { .argsz = sizeof(ri), .index = 0 };
	uint32_t err;
	request(e, fd, VFU_CMD_DEVICE_GET_REGION_INFO, &ri, sizeof(ri), NULL, 0, &err);
	assert_int_equal(err, 0);
	memcpy(&ri, reply_buf, sizeof(ri));
	assert_true(ri.size >= 0x1000);
	assert_int_equal(region_write32(e, fd, VFU_PCI_CONFIG_REGION, 0x10, 0xFFFFFFFF), 0);
	assert_int_equal(region_read32(e, fd, VFU_PCI_CONFIG_REGION, 0x10) & ~0xFu, (uint32_t)~(ri.size - 1));

	/* NVMe CAP (BAR0 offset 0) is readable and not all ones; out of range fails. */
	uint32_t cap = region_read32(e, fd, 0, 0);
	assert_true(cap != 0xFFFFFFFF);
	struct vfu_region_rw rw = { .offset = ri.size - 2, .region = 0, .count = 4 };
	request(e, fd, VFU_CMD_REGION_READ, &rw, sizeof(rw), NULL, 0, &err);
	assert_true(err != 0);
	assert_int_equal(region_read32(e, fd, 0, 0), cap); /* still serving */

	/* MSI-X (or MSI) vectors come from the host; no INTx. */
	struct vfu_irq_info ii = { .argsz = sizeof(ii), .index = VFU_PCI_INTX_IRQ };
	request(e, fd, VFU_CMD_DEVICE_GET_IRQ_INFO, &ii, sizeof(ii), NULL, 0, &err);
	assert_int_equal(err, 0);
	memcpy(&ii, reply_buf, sizeof(ii));
	assert_int_equal(ii.count, 0);

	/* A VMM that reconnects at once is served, not refused as a second client. */
	for (int i = 0; i < 20; i++) {
		close(fd);
		fd = client_connect(e, e->pt_sock);
		assert_int_equal(region_read32(e, fd, VFU_PCI_CONFIG_REGION, 0), ids);
	}
	/* The emulated BARs were forgotten with the old client. */
	assert_int_equal(region_read32(e, fd, VFU_PCI_CONFIG_REGION, 0x10) & ~0xFu, 0);

	close(fd);
	assert_int_equal(stop_broker(e), 0);
}

static void test_companion_map_disconnect_and_sigterm(void **state)
{
	struct env *e = *state;
	uint64_t id, dma;

	start_broker(e, "sim:nvme,size=16M,dart=apple");
	int fd = client_connect(e, e->comp_sock);
	uint8_t *ram = dma_map_ram(e, fd);

	/* No passthrough client yet: nothing to map for, every MAP entry is IOERR (issue 11, item 4). */
	assert_int_equal(companion_map_one(e, fd, ram, &id, &dma), 1 /* IOERR */);
	assert_int_equal(get_le(ram + 0x200 + 20, 4), 1);
	json_object *s0 = status(e);
	assert_int_equal(jint(s0, "dma.live_mappings"), 0);
	assert_int_equal(jint(s0, "companion.failed_entries"), 1);
	json_object_put(s0);
	int pt = client_connect(e, e->pt_sock);

	/* The companion's identity through config space. */
	assert_int_equal(region_read32(e, fd, VFU_PCI_CONFIG_REGION, 0), 0x00151b36);
	/* MANAGED_BDF = bus 0, devfn 5.0. */
	assert_int_equal(region_read32(e, fd, 0, 0x04), 5 << 3);

	/* An 8-byte read is split into two 32-bit ones: DART_MAX_BYTES as one value. */
	struct vfu_region_rw rw = { .offset = 0x20, .region = 0, .count = 8 };
	uint32_t err;
	uint64_t max_bytes;
	request(e, fd, VFU_CMD_REGION_READ, &rw, sizeof(rw), NULL, 0, &err);
	assert_int_equal(err, 0);
	memcpy(&max_bytes, reply_buf + sizeof(rw), 8);
	/* Beyond BAR0: an error, and the companion keeps serving. */
	rw = (struct vfu_region_rw){ .offset = 4094, .region = 0, .count = 4 };
	request(e, fd, VFU_CMD_REGION_READ, &rw, sizeof(rw), NULL, 0, &err);
	assert_true(err != 0);

	assert_int_equal(companion_map_one(e, fd, ram, &id, &dma), 0);
	assert_true(id != 0);
	json_object *s = status(e);
	assert_int_equal(jint(s, "dma.max_bytes"), (int64_t)max_bytes);
	assert_true(jbool(s, "clients.companion.connected"));
	assert_int_equal(jint(s, "dma.live_mappings"), 1);
	assert_int_equal(jint(s, "dma.live_bytes") >= 0x4000, 1);
	assert_int_equal(jint(s, "companion.doorbells"), 2);
	assert_int_equal(jint(s, "companion.map_entries"), 2);
	assert_int_equal(jint(s, "companion.live_ids"), 1);
	json_object_put(s);

	/* The client goes away: its mapping is released, the next one is served. */
	close(fd);
	munmap(ram, RAM_SIZE);
	for (int i = 0; i < 200; i++) {
		s = status(e);
		bool gone = !jbool(s, "clients.companion.connected");
		json_object_put(s);
		if (gone)
			break;
		usleep(10000);
	}
	s = status(e);
	assert_false(jbool(s, "clients.companion.connected"));
	assert_int_equal(jint(s, "dma.live_mappings"), 0);
	assert_int_equal(jint(s, "companion.live_ids"), 0);
	assert_int_equal(jint(s, "dma.peak_mappings"), 1);
	json_object_put(s);

	fd = client_connect(e, e->comp_sock);
	ram = dma_map_ram(e, fd);
	assert_int_equal(companion_map_one(e, fd, ram, &id, &dma), 0);
	s = status(e);
	assert_int_equal(jint(s, "dma.live_mappings"), 1);
	json_object_put(s);

	/* SIGTERM with a live mapping: released, exit 0 (broker_run checks live == 0). */
	assert_int_equal(stop_broker(e), 0);
	close(fd);
	close(pt);
	munmap(ram, RAM_SIZE);
}

static void test_identity_mode_registers_passthrough_ram(void **state)
{
	struct env *e = *state;
	uint32_t err;

	start_broker(e, "sim:nvme,size=16M,dart=identity");
	int fd = client_connect(e, e->pt_sock);
	uint8_t *ram = dma_map_ram(e, fd);
	json_object *s = status(e);

	assert_true(jbool(s, "host.identity_dma"));
	assert_int_equal(jint(s, "dma.live_mappings"), 1);
	assert_int_equal(jint(s, "dma.live_bytes"), RAM_SIZE);
	json_object_put(s);

	/* A map without fd (a ROM, a peer BAR) is accepted but not registered. */
	struct vfu_dma_map rom = { .argsz = sizeof(rom), .flags = VFU_DMA_MAP_FLAG_READ, .addr = 0xfffc0000, .size = 0x40000 };
	request(e, fd, VFU_CMD_DMA_MAP, &rom, sizeof(rom), NULL, 0, &err);
	assert_int_equal(err, 0);
	s = status(e);
	assert_int_equal(jint(s, "dma.live_mappings"), 1);
	json_object_put(s);

	struct vfu_dma_unmap um = { .argsz = sizeof(um), .addr = RAM_GPA, .size = RAM_SIZE };
	request(e, fd, VFU_CMD_DMA_UNMAP, &um, sizeof(um), NULL, 0, &err);
	assert_int_equal(err, 0);
	s = status(e);
	assert_int_equal(jint(s, "dma.live_mappings"), 0);
	json_object_put(s);

	/* Mapped again and left for the shutdown to release. */
	munmap(ram, RAM_SIZE);
	ram = dma_map_ram(e, fd);
	s = status(e);
	assert_int_equal(jint(s, "dma.live_mappings"), 1);
	json_object_put(s);
	assert_int_equal(stop_broker(e), 0);
	close(fd);
	munmap(ram, RAM_SIZE);
}

/* NVMe admin queue in "guest RAM" (identity DMA), one Identify per call. */
#define ASQ_OFF 0x1000
#define ACQ_OFF 0x2000
#define IDENTIFY_OFF 0x10000

static void nvme_enable(struct env *e, int fd, uint64_t asq_bus, uint64_t acq_bus)
{
	assert_int_equal(region_write32(e, fd, 0, 0x14, 0), 0); /* CC.EN = 0 */
	for (int i = 0; i < 100 && (region_read32(e, fd, 0, 0x1C) & 1); i++)
		usleep(1000);
	assert_int_equal(region_write32(e, fd, 0, 0x24, 3 | 3 << 16), 0); /* AQA: 4 entries */
	assert_int_equal(region_write64(e, fd, 0, 0x28, asq_bus), 0);
	assert_int_equal(region_write64(e, fd, 0, 0x30, acq_bus), 0);
	assert_int_equal(region_write32(e, fd, 0, 0x14, 0x00460001), 0); /* IOSQES 6, IOCQES 4, EN */
	for (int i = 0; i < 100 && !(region_read32(e, fd, 0, 0x1C) & 1); i++)
		usleep(1000);
	assert_int_equal(region_read32(e, fd, 0, 0x1C) & 3, 1); /* RDY, no CFS */
}

static void nvme_identify(struct env *e, int fd, uint8_t *sq, unsigned slot, uint64_t buf_bus)
{
	uint8_t *sqe = sq + 64 * slot;

	memset(sqe, 0, 64);
	sqe[0] = 0x06; /* Identify */
	put_le(sqe + 2, slot + 1, 2);
	put_le(sqe + 24, buf_bus, 8);
	put_le(sqe + 40, 1, 4); /* CNS 1: controller */
	assert_int_equal(region_write32(e, fd, 0, 0x1000, slot + 1), 0); /* SQ0 tail doorbell */
}

static void test_interrupt_reaches_the_vmm_eventfd(void **state)
{
	struct env *e = *state;
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	assert_true(efd >= 0);
	start_broker(e, "sim:nvme,size=16M,dart=identity");
	int fd = client_connect(e, e->pt_sock);
	uint8_t *ram = dma_map_ram(e, fd);

	assert_int_equal(set_irq_vector0(e, fd, efd, VFU_IRQ_SET_ACTION_TRIGGER), 0);
	json_object *s = status(e);
	assert_int_equal(jint(s, "interrupts.vectors_enabled"), 1);
	assert_int_equal(jint(s, "interrupts.delivered"), 0);
	json_object_put(s);

	/* A command completes on the admin CQ: vector 0 reaches our eventfd. */
	nvme_enable(e, fd, RAM_GPA + ASQ_OFF, RAM_GPA + ACQ_OFF);
	nvme_identify(e, fd, ram + ASQ_OFF, 0, RAM_GPA + IDENTIFY_OFF);
	assert_int_equal(efd_wait(efd, TIMEOUT_MS), 1);
	assert_int_equal(get_le(ram + ACQ_OFF + 12, 2), 1);          /* CID */
	assert_int_equal(get_le(ram + ACQ_OFF + 14, 2) & 0xFFFF, 1); /* phase 1, status 0 */
	assert_int_equal(get_le(ram + IDENTIFY_OFF, 2), 0x1b36);      /* PCI vendor in the data */
	s = status(e);
	assert_int_equal(jint(s, "interrupts.delivered"), 1);
	json_object_put(s);

	/* Masked by the VMM: held back, then delivered on unmask. */
	assert_int_equal(set_irq_vector0(e, fd, -1, VFU_IRQ_SET_ACTION_MASK), 0);
	nvme_identify(e, fd, ram + ASQ_OFF, 1, RAM_GPA + IDENTIFY_OFF);
	assert_int_equal(efd_wait(efd, 200), 0);
	s = status(e);
	assert_int_equal(jint(s, "interrupts.delivered"), 1);
	assert_int_equal(jint(s, "interrupts.latched"), 1);
	json_object_put(s);
	assert_int_equal(set_irq_vector0(e, fd, -1, VFU_IRQ_SET_ACTION_UNMASK), 0);
	assert_int_equal(efd_wait(efd, TIMEOUT_MS), 1);
	s = status(e);
	assert_int_equal(jint(s, "interrupts.delivered"), 2);
	json_object_put(s);

	/* Without an eventfd the host vector is disabled again. */
	struct vfu_irq_set off = { .argsz = sizeof(off), .flags = VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_TRIGGER,
				   .index = VFU_PCI_MSIX_IRQ };
	uint32_t err;
	request(e, fd, VFU_CMD_DEVICE_SET_IRQS, &off, sizeof(off), NULL, 0, &err);
	assert_int_equal(err, 0);
	s = status(e);
	assert_int_equal(jint(s, "interrupts.vectors_enabled"), 0);
	json_object_put(s);

	assert_int_equal(stop_broker(e), 0);
	close(fd);
	close(efd);
	munmap(ram, RAM_SIZE);
}

/*
 * Identity mode registers only windows the device may write: the platform
 * has no DMA direction, so a registered read-only window would let the
 * device write where the broker mapped read-only memory (the simulator's
 * write would kill the broker with SIGSEGV).  A read-only window is known
 * but unreachable, like a map without fd: the device's access to it faults.
 */
#define RO_GPA 0x4000000ULL
#define RO_SIZE 0x10000u

static void test_identity_mode_read_only_window_not_registered(void **state)
{
	struct env *e = *state;
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int rofd = memfd_create("rom", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	uint32_t err;

	assert_true(efd >= 0 && rofd >= 0);
	assert_int_equal(ftruncate(rofd, RO_SIZE), 0);
	assert_int_equal(fcntl(rofd, F_ADD_SEALS, F_SEAL_SHRINK), 0);
	start_broker(e, "sim:nvme,size=16M,dart=identity");
	int fd = client_connect(e, e->pt_sock);
	uint8_t *ram = dma_map_ram(e, fd);
	struct vfu_dma_map ro = { .argsz = sizeof(ro), .flags = VFU_DMA_MAP_FLAG_READ, .addr = RO_GPA, .size = RO_SIZE };

	request(e, fd, VFU_CMD_DMA_MAP, &ro, sizeof(ro), &rofd, 1, &err);
	assert_int_equal(err, 0);
	json_object *s = status(e);
	assert_int_equal(jint(s, "dma.live_mappings"), 1); /* the RAM only */
	assert_int_equal(jint(s, "dma.live_bytes"), RAM_SIZE);
	json_object_put(s);

	/* The device writes Identify data into the read-only window: refused. */
	assert_int_equal(set_irq_vector0(e, fd, efd, VFU_IRQ_SET_ACTION_TRIGGER), 0);
	nvme_enable(e, fd, RAM_GPA + ASQ_OFF, RAM_GPA + ACQ_OFF);
	nvme_identify(e, fd, ram + ASQ_OFF, 0, RO_GPA);
	efd_wait(efd, 500);
	s = status(e); /* the broker is still serving */
	assert_int_equal(jint(s, "dma.live_mappings"), 1);
	json_object_put(s);
	/* still serving the VMM too: an Identify into RAM completes */
	nvme_identify(e, fd, ram + ASQ_OFF, 1, RAM_GPA + IDENTIFY_OFF);
	efd_wait(efd, TIMEOUT_MS);
	assert_int_equal(get_le(ram + IDENTIFY_OFF, 2), 0x1b36);

	struct vfu_dma_unmap um = { .argsz = sizeof(um), .addr = RO_GPA, .size = RO_SIZE };
	request(e, fd, VFU_CMD_DMA_UNMAP, &um, sizeof(um), NULL, 0, &err);
	assert_int_equal(err, 0);
	assert_int_equal(stop_broker(e), 0);
	close(fd);
	close(efd);
	close(rofd);
	munmap(ram, RAM_SIZE);
}

/*
 * The product's path (DART mode): the companion maps the queues and the
 * buffer, the function is programmed with the bus addresses that came back,
 * its DMA lands in guest RAM and its interrupt reaches the VMM.  Also over
 * the darwin backend talking to the dext test model, when it is built.
 */
static void dart_mode_io(struct env *e, const char *spec, bool faults_counted)
{
	uint64_t id[3], bus[3];
	int mfd, efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	uint8_t *ram = new_ram(&mfd);

	assert_true(efd >= 0);
	start_broker(e, spec);
	int pt = client_connect(e, e->pt_sock), comp = client_connect(e, e->comp_sock);
	dma_map_fd(e, pt, mfd);
	dma_map_fd(e, comp, mfd);
	assert_int_equal(set_irq_vector0(e, pt, efd, VFU_IRQ_SET_ACTION_TRIGGER), 0);
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(companion_map(e, comp, ram, RAM_GPA + 0x10000 + 0x4000 * i, 0x4000, &id[i], &bus[i]), 0);
		assert_true(id[i] != 0);
	}
	json_object *s = status(e);
	assert_false(jbool(s, "host.identity_dma"));
	assert_int_equal(jint(s, "dma.live_mappings"), 3);
	json_object_put(s);

	nvme_enable(e, pt, bus[0], bus[1]);
	nvme_identify(e, pt, ram + 0x10000, 0, bus[2]);
	assert_int_equal(efd_wait(efd, TIMEOUT_MS), 1);
	assert_int_equal(get_le(ram + 0x14000 + 12, 2), 1);          /* CID */
	assert_int_equal(get_le(ram + 0x14000 + 14, 2) & 0xFFFF, 1); /* phase 1, status 0 */
	assert_int_equal(get_le(ram + 0x18000, 2), 0x1b36);          /* PCI vendor in the data */
	s = status(e);
	assert_int_equal(jint(s, "dma.faults"), 0);
	assert_int_equal(jint(s, "interrupts.delivered"), 1);
	json_object_put(s);

	/* The companion's client leaves: its mappings go, the device now faults (the sim counts it). */
	close(comp);
	for (int i = 0; i < 200; i++) {
		s = status(e);
		int64_t live = jint(s, "dma.live_mappings");
		json_object_put(s);
		if (live == 0)
			break;
		usleep(10000);
	}
	nvme_identify(e, pt, ram + 0x10000, 1, bus[2]);
	s = status(e);
	assert_int_equal(jint(s, "dma.live_mappings"), 0);
	if (faults_counted)
		assert_true(jint(s, "dma.faults") > 0);
	assert_int_equal(efd_wait(efd, 100), 0); /* no completion */
	json_object_put(s);

	assert_int_equal(stop_broker(e), 0);
	close(pt);
	close(efd);
	close(mfd);
	munmap(ram, RAM_SIZE);
}

/*
 * The passthrough client leaves while the companion's stays: the function
 * is reset and the companion's mappings (DART registrations into the
 * leaving VM's RAM) go with it, so a VMM that attaches to the passthrough
 * socket next cannot reach that RAM through them.  The companion keeps
 * serving its client.
 */
static void test_passthrough_gone_drops_companion_mappings(void **state)
{
	struct env *e = *state;
	uint64_t id, bus;
	int mfd, pt, comp;
	uint8_t *ram = new_ram(&mfd);
	json_object *s;

	start_mapped(e, mfd, ram, &pt, &comp, &id, &bus);
	close(pt);
	for (int i = 0; i < 200; i++) {
		s = status(e);
		bool connected = jbool(s, "clients.passthrough.connected");
		json_object_put(s);
		if (!connected)
			break;
		usleep(10000);
	}
	s = status(e);
	assert_false(jbool(s, "clients.passthrough.connected"));
	assert_true(jbool(s, "clients.companion.connected"));
	assert_int_equal(jint(s, "dma.live_mappings"), 0);
	assert_int_equal(jint(s, "companion.live_ids"), 0);
	json_object_put(s);
	/*
	 * The companion still answers, but with no passthrough client a MAP
	 * would outlive the client it was made for, to be inherited by the
	 * next VMM (issue 11, item 4): refused, IOERR, nothing registered.
	 */
	assert_int_equal(companion_map_one(e, comp, ram, &id, &bus), 1 /* IOERR */);
	s = status(e);
	assert_int_equal(jint(s, "dma.live_mappings"), 0);
	json_object_put(s);
	/* The VMM's function is back: maps work again. */
	pt = client_connect(e, e->pt_sock);
	assert_int_equal(companion_map_one(e, comp, ram, &id, &bus), 0);
	s = status(e);
	assert_int_equal(jint(s, "dma.live_mappings"), 1);
	json_object_put(s);
	close(pt);

	assert_int_equal(stop_broker(e), 0);
	close(comp);
	close(mfd);
	munmap(ram, RAM_SIZE);
}

/* Times the posted-doorbell warning's fix (the QEMU property) appears in the broker's log. */
static int log_count(const char *path, const char *what)
{
	static char text[1 << 16];
	int fd = open(path, O_RDONLY | O_CLOEXEC), n = 0;
	ssize_t len;

	assert_true(fd >= 0);
	len = read(fd, text, sizeof(text) - 1);
	close(fd);
	assert_true(len >= 0);
	text[len] = '\0';
	for (const char *p = text; (p = strstr(p, what)) != NULL; p++)
		n++;
	return n;
}

/* A MAP batch of one entry set up in the command page, doorbell not rung. */
static void prepare_map(struct env *e, int fd, uint8_t *ram)
{
	uint8_t *page = ram, *req = ram + 0x100;

	memset(ram, 0, 0x1000);
	put_le(page + 0x00, 1, 4);
	put_le(page + 0x04, 1, 4);
	put_le(page + 0x10, RAM_GPA + 0x100, 8);
	put_le(page + 0x18, RAM_GPA + 0x200, 8);
	put_le(req + 0, RAM_GPA + 0x10000, 8);
	put_le(req + 8, 0x4000, 4);
	assert_int_equal(region_write32(e, fd, 0, 0x10, (uint32_t)RAM_GPA), 0);
	assert_int_equal(region_write32(e, fd, 0, 0x14, 0), 0);
}

/*
 * Issue 16: a DOORBELL that arrives as a posted write (NO_REPLY, or inside
 * WRITE_MULTI) is counted in status and warned about once per VMM, naming
 * the QEMU property that fixes it; a doorbell the VMM waits for, and posted
 * writes to other registers, are not.
 */
static void test_posted_doorbell_is_reported(void **state)
{
	struct env *e = *state;
	const char *fix = "x-no-posted-writes=on";
	uint64_t id, bus;
	uint8_t msg[sizeof(struct vfu_region_rw) + 4];
	struct vfu_region_rw rw = { .offset = 0x18, .region = 0, .count = 4 };
	uint32_t one = 1;

	snprintf(e->log, sizeof(e->log), "%s/broker.log", e->dir);
	start_broker(e, "sim:nvme,size=16M,dart=apple");
	int pt = client_connect(e, e->pt_sock); /* maps need the function's VMM */
	int fd = client_connect(e, e->comp_sock);
	uint8_t *ram = dma_map_ram(e, fd);

	/* Non-posted doorbell (what x-no-posted-writes=on gives): nothing to say. */
	assert_int_equal(companion_map_one(e, fd, ram, &id, &bus), 0);
	json_object *s = status(e);
	assert_int_equal(jint(s, "companion.doorbells"), 1);
	assert_int_equal(jint(s, "companion.posted_doorbells"), 0);
	json_object_put(s);
	/* A posted write to CMD_GPA_LO is no doorbell. */
	memcpy(msg, &(struct vfu_region_rw){ .offset = 0x10, .region = 0, .count = 4 }, sizeof(rw));
	put_le(msg + sizeof(rw), RAM_GPA, 4);
	assert_int_equal(vfuc_send(fd, ++e->next_id, VFU_CMD_REGION_WRITE, VFU_FLAG_NO_REPLY, msg, sizeof(msg),
				   NULL, 0), 0);
	s = status(e);
	assert_int_equal(jint(s, "companion.posted_doorbells"), 0);
	json_object_put(s);
	assert_int_equal(log_count(e->log, fix), 0);

	/* Posted DOORBELL (QEMU's default): processed, no reply, counted, warned. */
	prepare_map(e, fd, ram);
	memcpy(msg, &rw, sizeof(rw));
	memcpy(msg + sizeof(rw), &one, 4);
	assert_int_equal(vfuc_send(fd, ++e->next_id, VFU_CMD_REGION_WRITE, VFU_FLAG_NO_REPLY, msg, sizeof(msg),
				   NULL, 0), 0);
	assert_int_equal(region_read32(e, fd, 0, 0x0C), 0); /* the read is answered after the write */
	assert_int_equal(get_le(ram + 0x200 + 20, 4), 0);  /* the entry was mapped */
	assert_int_equal(get_le(ram + 0x200 + 16, 4), 0x4000);
	/* Again inside a WRITE_MULTI (also posted), twice. */
	struct {
		uint64_t n;
		struct vfu_region_write_one w[2];
	} m = { .n = 2 };
	for (int i = 0; i < 2; i++) {
		m.w[i] = (struct vfu_region_write_one){ .offset = 0x18, .region = 0, .count = 4 };
		memcpy(m.w[i].data, &one, 4);
	}
	prepare_map(e, fd, ram);
	assert_int_equal(vfuc_send(fd, ++e->next_id, VFU_CMD_REGION_WRITE_MULTI, VFU_FLAG_NO_REPLY, &m, sizeof(m),
				   NULL, 0), 0);
	assert_int_equal(region_read32(e, fd, 0, 0x0C), 0);
	s = status(e);
	assert_int_equal(jint(s, "companion.doorbells"), 4);
	assert_int_equal(jint(s, "companion.posted_doorbells"), 3);
	assert_int_equal(jint(s, "companion.live_ids"), 4);
	json_object_put(s);
	assert_int_equal(log_count(e->log, fix), 1); /* once, not three times */
	assert_int_equal(log_count(e->log, "does not read STATUS"), 1);

	/* A later non-posted doorbell does not clear the count. */
	assert_int_equal(companion_map_one(e, fd, ram, &id, &bus), 0);
	s = status(e);
	assert_int_equal(jint(s, "companion.posted_doorbells"), 3);
	json_object_put(s);

	/* The next VMM is warned again, once. */
	close(fd);
	munmap(ram, RAM_SIZE);
	for (int i = 0; i < 200; i++) {
		s = status(e);
		bool gone = !jbool(s, "clients.companion.connected");
		json_object_put(s);
		if (gone)
			break;
		usleep(10000);
	}
	fd = client_connect(e, e->comp_sock);
	ram = dma_map_ram(e, fd);
	for (int i = 0; i < 2; i++) {
		prepare_map(e, fd, ram);
		assert_int_equal(vfuc_send(fd, ++e->next_id, VFU_CMD_REGION_WRITE, VFU_FLAG_NO_REPLY, msg,
					   sizeof(msg), NULL, 0), 0);
		assert_int_equal(region_read32(e, fd, 0, 0x0C), 0);
	}
	s = status(e);
	assert_int_equal(jint(s, "companion.posted_doorbells"), 5);
	json_object_put(s);
	assert_int_equal(log_count(e->log, fix), 2);

	assert_int_equal(stop_broker(e), 0);
	close(fd);
	close(pt);
	munmap(ram, RAM_SIZE);
}

static void test_dart_mode_io_sim(void **state)
{
	dart_mode_io(*state, "sim:nvme,size=16M,dart=apple", true);
}

static void test_dart_mode_io_darwin_backend(void **state)
{
	char err[256];
	struct host_device *hd = host_device_open("sim-dext:nvme,size=16M", err, sizeof(err));

	if (!hd)
		skip(); /* built without the dext test model */
	hd->ops->destroy(hd);
	dart_mode_io(*state, "sim-dext:nvme,size=16M", false); /* the dext cannot see faults */
}

/* The minimal configuration: no companion, no control socket. */
static void test_passthrough_only(void **state)
{
	struct env *e = *state;
	struct broker_config cfg = { .device_spec = "sim:nvme,size=16M", .passthrough_socket = e->pt_sock };
	int fd = -1, status;
	struct stat sb;

	e->pid = fork();
	assert_true(e->pid >= 0);
	if (e->pid == 0)
		_exit(broker_run(&cfg));
	for (int i = 0; i < TIMEOUT_MS / 10 && fd < 0; i++) {
		fd = vfuc_connect(e->pt_sock);
		if (fd < 0)
			usleep(10000);
	}
	assert_true(fd >= 0);
	close(fd);
	fd = client_connect(e, e->pt_sock);
	assert_int_equal(region_read32(e, fd, VFU_PCI_CONFIG_REGION, 0), 0x00f01b36);
	assert_int_equal(stat(e->comp_sock, &sb), -1);
	assert_int_equal(stat(e->ctrl_sock, &sb), -1);
	close(fd);
	assert_int_equal(kill(e->pid, SIGINT), 0); /* SIGINT stops it as cleanly as SIGTERM */
	assert_int_equal(waitpid(e->pid, &status, 0), e->pid);
	e->pid = 0;
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(stat(e->pt_sock, &sb), -1);
}

static void test_bad_device_fails_cleanly(void **state)
{
	struct env *e = *state;
	struct broker_config cfg = {
		.device_spec = "sim:no-such-device",
		.passthrough_socket = e->pt_sock,
	};
	int status;

	e->pid = fork();
	assert_true(e->pid >= 0);
	if (e->pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);
		dup2(devnull, 2); /* the one-line reason is expected */
		_exit(broker_run(&cfg));
	}
	assert_int_equal(waitpid(e->pid, &status, 0), e->pid);
	e->pid = 0;
	assert_true(WIFEXITED(status));
	assert_int_not_equal(WEXITSTATUS(status), 0);
}

/* 1, or 20 under valgrind (its preload library is in LD_PRELOAD). */
static double slowdown(void)
{
	const char *pre = getenv("LD_PRELOAD");

	return pre && strstr(pre, "vgpreload") ? 20 : 1;
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/*
 * Issue 11, item 3: a VMM that pipelines 280 REGION_READs of 16 KiB on the
 * passthrough socket and never reads its replies used to freeze the loop
 * for 4.9 s (blocking sends, 5 s deadline per reply).  Now, for 2 s of
 * that, `status` and a companion VERSION round trip answer in well under
 * 50 ms, and the hostile client is still attached, not served.
 */

static void test_hostile_client_does_not_stall(void **state)
{
	struct env *e = *state;
	struct vfu_region_rw rw = { .region = VFU_PCI_BAR0_REGION, .offset = 0, .count = 16384 };
	double st_ms[256], ver_ms[256];
	unsigned n = 0;
	struct timespec t0, start;
	json_object *o;
	int hostile, fd, sent = 0;

	start_broker(e, "sim:nvme,size=16M");
	hostile = client_connect(e, e->pt_sock);
	fcntl(hostile, F_SETFL, fcntl(hostile, F_GETFL) | O_NONBLOCK);
	clock_gettime(CLOCK_MONOTONIC, &start);
	while (ms_since(&start) < 2000 && n < 256) {
		/* as many of the 280 as its socket takes: the broker stops reading once its queue is full */
		while (sent < 280 && vfuc_send(hostile, (uint16_t)(1000 + sent), VFU_CMD_REGION_READ, 0, &rw,
					       sizeof(rw), NULL, 0) == 0)
			sent++;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		o = status(e);
		st_ms[n] = ms_since(&t0);
		assert_true(jbool(o, "clients.passthrough.connected"));
		json_object_put(o);

		clock_gettime(CLOCK_MONOTONIC, &t0);
		fd = client_connect(e, e->comp_sock); /* VERSION and its reply */
		ver_ms[n] = ms_since(&t0);
		close(fd);
		n++;
		usleep(20000);
	}
	qsort(st_ms, n, sizeof(double), cmp_double);
	qsort(ver_ms, n, sizeof(double), cmp_double);
	print_message("hostile client (%d requests sent), %u tries: status median %.2f ms, worst %.1f ms; companion "
		      "VERSION round trip median %.2f ms, worst %.1f ms\n",
		      sent, n, st_ms[n / 2], st_ms[n - 1], ver_ms[n / 2], ver_ms[n - 1]);
	/*
	 * The target is 50 ms (the old loop stalled 5 s per reply).  The
	 * median must meet it; the worst try only has to stay far from the old
	 * stall, since on a loaded machine the scheduler alone can take longer
	 * than 50 ms once.  Under valgrind everything is ~20x slower.
	 */
	assert_true(st_ms[n / 2] < 50 * slowdown());
	assert_true(ver_ms[n / 2] < 50 * slowdown());
	assert_true(st_ms[n - 1] < 1000 * slowdown());
	assert_true(ver_ms[n - 1] < 1000 * slowdown());
	o = status(e);
	assert_true(jint(o, "clients.passthrough.queued_bytes") >= 64 * 1024);
	assert_int_equal(jint(o, "clients.passthrough.dropped"), 0);
	json_object_put(o);
	close(hostile);
	assert_int_equal(stop_broker(e), 0);
}

/* SIGHUP and SIGQUIT (a closed terminal, Ctrl-\) shut down as cleanly as SIGTERM. */
static void test_hup_and_quit_tear_down(void **state)
{
	struct env *e = *state;
	const int sigs[] = { SIGHUP, SIGQUIT };
	struct stat sb;

	for (unsigned i = 0; i < 2; i++) {
		int fd, status;

		start_broker(e, "sim:nvme,size=16M");
		fd = client_connect(e, e->pt_sock);
		assert_int_equal(kill(e->pid, sigs[i]), 0);
		assert_int_equal(waitpid(e->pid, &status, 0), e->pid);
		e->pid = 0;
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
		/* teardown ran: every socket removed */
		assert_int_equal(stat(e->pt_sock, &sb), -1);
		assert_int_equal(stat(e->comp_sock, &sb), -1);
		assert_int_equal(stat(e->ctrl_sock, &sb), -1);
		close(fd);
	}
}

/*
 * Issue 11, item 4: the companion serves the VMM that holds the passthrough
 * socket, no other process.  A companion client of another process is
 * dropped as soon as both are attached, counted in status.
 */
static void test_companion_of_another_process_refused(void **state)
{
	struct env *e = *state;
	int pt, wst;
	pid_t child;
	json_object *o;

	start_broker(e, "sim:nvme,size=16M");
	pt = client_connect(e, e->pt_sock);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		int fd = vfuc_connect(e->comp_sock);
		struct vfu_hdr h;
		uint8_t buf[64] = { 0 };

		if (fd < 0)
			_exit(2);
		/* dropped: EOF, no reply to anything */
		vfuc_send(fd, 1, VFU_CMD_DEVICE_GET_INFO, 0, buf, 32, NULL, 0);
		_exit(vfuc_recv(fd, &h, buf, sizeof(buf), TIMEOUT_MS) == -ECONNRESET ? 0 : 3);
	}
	assert_int_equal(waitpid(child, &wst, 0), child);
	assert_true(WIFEXITED(wst));
	assert_int_equal(WEXITSTATUS(wst), 0);
	o = status(e);
	assert_int_equal(jint(o, "companion.refused_clients"), 1);
	assert_false(jbool(o, "clients.companion.connected"));
	json_object_put(o);
	/* the same process: served */
	{
		int comp = client_connect(e, e->comp_sock);

		o = status(e);
		assert_true(jbool(o, "clients.companion.connected"));
		assert_int_equal(jint(o, "companion.refused_clients"), 1);
		json_object_put(o);
		close(comp);
	}
	close(pt);
	assert_int_equal(stop_broker(e), 0);
}

/*
 * Issue 11, item 2: a VMM truncates the file behind its guest RAM (a
 * named tmpfs file: accepted, but it can shrink), then rings the
 * companion's doorbell.  The broker used to die of SIGBUS with its sockets
 * left behind; now the doorbell fails (STATUS INVAL), the fault is counted
 * and the broker keeps serving.
 */
static void test_truncated_guest_ram_fails_the_access(void **state)
{
	struct env *e = *state;
	char shm[64];
	uint8_t *ram;
	int fd, pt, comp;
	json_object *o;

	snprintf(shm, sizeof(shm), "/dev/shm/vfa-broker-test-%d", (int)getpid());
	/* named while it is mapped (memory-backend-file on /dev/shm) */
	fd = open(shm, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		print_message("no /dev/shm: not checked\n");
		return;
	}
	assert_int_equal(ftruncate(fd, RAM_SIZE), 0);
	ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(ram != MAP_FAILED);
	start_broker(e, "sim:nvme,size=16M,dart=apple");
	pt = client_connect(e, e->pt_sock);
	comp = client_connect(e, e->comp_sock);
	dma_map_fd(e, comp, fd);
	unlink(shm);
	prepare_map(e, comp, ram);
	munmap(ram, RAM_SIZE);
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(region_write32(e, comp, 0, 0x18, 1), 0); /* DOORBELL */
	assert_int_equal(region_read32(e, comp, 0, 0x0C), 3 /* INVAL */);
	o = status(e);
	assert_true(jint(o, "dma.memory_faults") >= 1);
	assert_int_equal(jint(o, "dma.live_mappings"), 0);
	assert_true(jbool(o, "clients.companion.connected"));
	json_object_put(o);
	close(fd);
	close(comp);
	close(pt);
	assert_int_equal(stop_broker(e), 0);
}


/* ---- surprise removal (issue 14, item 3) --------------------------------- */

/* A `watch` connection: connected, request sent. */
static int watch_open(const struct env *e)
{
	int fd = vfuc_connect(e->ctrl_sock);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "watch\n", 6), 6);
	return fd;
}

/* The next line of a watch connection (waits at most TIMEOUT_MS), as JSON. */
static json_object *watch_next(int fd)
{
	char line[512];
	size_t len = 0;

	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		ssize_t n;

		assert_int_equal(poll(&pfd, 1, TIMEOUT_MS), 1);
		n = read(fd, line + len, 1); /* byte by byte: never past one line */
		assert_int_equal(n, 1);
		if (line[len] == '\n')
			break;
		assert_true(++len < sizeof(line) - 1);
	}
	line[len] = '\0';
	json_object *o = json_tokener_parse(line);
	assert_non_null(o);
	return o;
}

/* Nothing more on a watch connection within ms. */
static void watch_quiet(int fd, int ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	assert_int_equal(poll(&pfd, 1, ms), 0);
}

/* A control command's answer: ok, and the error text when not. */
static bool command(const struct env *e, const char *req, char *error, size_t errlen)
{
	json_object *o = json_tokener_parse(control_request(e->ctrl_sock, req)), *v;
	bool ok;

	assert_non_null(o);
	ok = jbool(o, "ok");
	if (error) {
		error[0] = '\0';
		if (json_object_object_get_ex(o, "error", &v))
			snprintf(error, errlen, "%s", json_object_get_string(v));
	}
	assert_true(ok || json_object_object_get_ex(o, "error", &v));
	json_object_put(o);
	return ok;
}

static uint32_t region_read32_any(struct env *e, int fd, uint32_t region, uint64_t offset, uint32_t *err)
{
	struct vfu_region_rw rw = { .offset = offset, .region = region, .count = 4 };
	uint32_t v = 0;
	ssize_t n = request(e, fd, VFU_CMD_REGION_READ, &rw, sizeof(rw), NULL, 0, err);

	if (*err == 0) {
		assert_int_equal(n, (ssize_t)sizeof(rw) + 4);
		memcpy(&v, reply_buf + sizeof(rw), 4);
	}
	return v;
}

/* One apple-dma UNMAP of (id, len); returns the batch status. */
static uint32_t companion_unmap(struct env *e, int fd, uint8_t *ram, uint64_t id, uint64_t len)
{
	uint8_t *page = ram, *req = ram + 0x100, *resp = ram + 0x200;

	memset(ram, 0, 0x1000);
	put_le(page + 0x00, 2, 4); /* UNMAP */
	put_le(page + 0x04, 1, 4);
	put_le(page + 0x10, RAM_GPA + 0x100, 8);
	put_le(page + 0x18, RAM_GPA + 0x200, 8);
	put_le(req + 0, id, 8);
	put_le(req + 8, len, 8);
	assert_int_equal(region_write32(e, fd, 0, 0x10, (uint32_t)RAM_GPA), 0);
	assert_int_equal(region_write32(e, fd, 0, 0x14, 0), 0);
	assert_int_equal(region_write32(e, fd, 0, 0x18, 1), 0);
	assert_int_equal(get_le(resp, 8), id);
	uint32_t st = region_read32(e, fd, 0, 0x0C);
	return st == 0xffffffffu ? (uint32_t)get_le(page + 0x08, 4) : st;
}

static void wait_pt_disconnected(struct env *e)
{
	for (int i = 0; i < 200; i++) {
		json_object *s = status(e);
		bool connected = jbool(s, "clients.passthrough.connected");

		json_object_put(s);
		if (!connected)
			return;
		usleep(10000);
	}
	fail_msg("the broker did not see the passthrough client go");
}

/*
 * sim-vanish over the control socket: the watcher hears it, status says
 * so, the DART is emptied, reads answer all ones, writes are dropped, MAPs
 * are refused, an UNMAP of an id that was live still succeeds; sim-replug
 * is refused while the VMM holds the function, then brings a fresh device.
 */
static void test_sim_vanish_and_replug_over_control(void **state)
{
	struct env *e = *state;
	char error[256];
	uint64_t id, bus, id2;
	uint32_t err;
	int mfd;
	uint8_t *ram = new_ram(&mfd);

	start_broker(e, "sim:nvme,size=16M,dart=apple");
	int w = watch_open(e);
	json_object *ev = watch_next(w);
	assert_string_equal(jstr(ev, "event"), "present");
	json_object_put(ev);
	json_object *s = status(e);
	assert_true(jbool(s, "present"));
	assert_true(json_object_is_type(jpath(s, "removal"), json_type_null));
	json_object_put(s);

	int pt = client_connect(e, e->pt_sock), comp = client_connect(e, e->comp_sock);
	dma_map_fd(e, pt, mfd);
	dma_map_fd(e, comp, mfd);
	assert_int_equal(region_read32(e, pt, VFU_PCI_CONFIG_REGION, 0), 0x00f01b36);
	assert_int_equal(companion_map_one(e, comp, ram, &id, &bus), 0);
	assert_int_equal(companion_map(e, comp, ram, RAM_GPA + 0x40000, 0x8000, &id2, &bus), 0);
	s = status(e);
	assert_int_equal(jint(s, "dma.live_mappings"), 2);
	json_object_put(s);

	/* Pulled. */
	assert_true(command(e, "sim-vanish\n", error, sizeof(error)));
	ev = watch_next(w);
	assert_string_equal(jstr(ev, "event"), "removed");
	assert_non_null(strstr(jstr(ev, "reason"), "pulled"));
	json_object_put(ev);
	s = status(e);
	assert_false(jbool(s, "present"));
	assert_non_null(strstr(jstr(s, "removal"), "pulled"));
	assert_int_equal(jint(s, "dma.live_mappings"), 0); /* released at once */
	assert_int_equal(jint(s, "companion.orphaned_ids"), 2);
	assert_string_equal(jstr(s, "host.id"), "1b36:00f0"); /* every field is still there */
	json_object_put(s);

	/* All ones from config space (the emulated BARs too) and BAR0; writes dropped, no error. */
	assert_int_equal(region_read32_any(e, pt, VFU_PCI_CONFIG_REGION, 0, &err), 0xffffffffu);
	assert_int_equal(err, 0);
	assert_int_equal(region_read32_any(e, pt, VFU_PCI_CONFIG_REGION, 0x10, &err), 0xffffffffu);
	assert_int_equal(region_read32_any(e, pt, 0, 0x1c, &err), 0xffffffffu); /* CSTS */
	assert_int_equal(err, 0);
	assert_int_equal(region_write32(e, pt, 0, 0x14, 1), 0); /* CC.EN: nowhere */
	assert_int_equal(region_write32(e, pt, VFU_PCI_CONFIG_REGION, 4, 6), 0);
	/* Out of bounds is still refused. */
	region_read32_any(e, pt, 0, 0x4000, &err);
	assert_true(err != 0);

	/* New DMA refused, the old ids unmap cleanly (once). */
	assert_int_equal(companion_map(e, comp, ram, RAM_GPA + 0x80000, 0x4000, &bus, &bus), 1 /* IOERR */);
	assert_int_equal(get_le(ram + 0x200 + 20, 4), 1);
	/* The companion's registers read as a missing device's (the guest module's sign). */
	assert_int_equal(region_read32(e, comp, 0, 0x00), 0xffffffffu); /* VERSION */
	assert_int_equal(region_read32(e, comp, 0, 0x0C), 0xffffffffu); /* STATUS */
	assert_int_equal(companion_unmap(e, comp, ram, id, 0x4000), 0);
	assert_int_equal(companion_unmap(e, comp, ram, id, 0x4000), 1); /* now unknown */
	s = status(e);
	assert_int_equal(jint(s, "dma.live_mappings"), 0);
	assert_int_equal(jint(s, "dma.registers"), 2);
	assert_int_equal(jint(s, "dma.unregisters"), 2); /* never twice */
	assert_int_equal(jint(s, "companion.removed_refused"), 1);
	assert_int_equal(jint(s, "companion.orphaned_ids"), 1);
	assert_true(jint(s, "passthrough.removed_reads") >= 3);
	assert_int_equal(jint(s, "passthrough.removed_writes"), 2);
	json_object_put(s);

	/* A second vanish changes nothing and tells nobody. */
	assert_true(command(e, "sim-vanish\n", NULL, 0));
	watch_quiet(w, 100);

	/* Replug while the VMM holds the function: refused, with the fix. */
	assert_false(command(e, "sim-replug\n", error, sizeof(error)));
	assert_non_null(strstr(error, "the VMM still holds the function; detach it first"));
	s = status(e);
	assert_false(jbool(s, "present"));
	json_object_put(s);

	close(pt);
	wait_pt_disconnected(e);
	assert_true(command(e, "sim-replug\n", error, sizeof(error)));
	ev = watch_next(w);
	assert_string_equal(jstr(ev, "event"), "present");
	assert_false(json_object_object_get_ex(ev, "reason", NULL));
	json_object_put(ev);
	s = status(e);
	assert_true(jbool(s, "present"));
	assert_true(json_object_is_type(jpath(s, "removal"), json_type_null));
	assert_int_equal(jint(s, "dma.live_mappings"), 0);
	assert_int_equal(jint(s, "dma.registers"), 0); /* a fresh DART */
	json_object_put(s);
	assert_false(command(e, "sim-replug\n", error, sizeof(error)));
	assert_non_null(strstr(error, "present"));

	/* The fresh device serves a new VMM; the companion maps again. */
	pt = client_connect(e, e->pt_sock);
	dma_map_fd(e, pt, mfd);
	assert_int_equal(region_read32(e, pt, VFU_PCI_CONFIG_REGION, 0), 0x00f01b36);
	assert_int_equal(region_read32(e, pt, 0, 0x08), 0x00010400); /* NVMe VS */
	assert_int_equal(companion_map_one(e, comp, ram, &id, &bus), 0);
	assert_int_equal(region_read32(e, comp, 0, 0x00), 2); /* VERSION again */
	s = status(e);
	assert_int_equal(jint(s, "dma.live_mappings"), 1);
	json_object_put(s);
	/*
	 * The other old id went when the passthrough client left (its mappings
	 * exist for that client only): unknown now, IOERR, nothing released twice.
	 */
	assert_int_equal(companion_unmap(e, comp, ram, id2, 0x8000), 1);
	s = status(e);
	assert_int_equal(jint(s, "dma.live_mappings"), 1);
	assert_int_equal(jint(s, "companion.orphaned_ids"), 0);
	json_object_put(s);

	/* Unknown requests still get their error, and status works beside a watcher. */
	json_object *o = json_tokener_parse(control_request(e->ctrl_sock, "bogus\n"));
	assert_non_null(strstr(jstr(o, "error"), "sim-vanish"));
	json_object_put(o);

	assert_int_equal(stop_broker(e), 0); /* 0: no mapping outlived the shutdown */
	close(w);
	close(pt);
	close(comp);
	close(mfd);
	munmap(ram, RAM_SIZE);
}


/*
 * Identity mode: the removal releases the VMM's registered RAM at once, a
 * DMA_MAP after it succeeds for the VMM but reaches no DART, and no
 * interrupt comes from the pulled device.
 */
static void test_identity_mode_removal(void **state)
{
	struct env *e = *state;
	uint32_t err;

	start_broker(e, "sim:nvme,size=16M,dart=identity");
	int fd = client_connect(e, e->pt_sock);
	uint8_t *ram = dma_map_ram(e, fd);
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	assert_true(efd >= 0);
	assert_int_equal(set_irq_vector0(e, fd, efd, VFU_IRQ_SET_ACTION_TRIGGER), 0);
	json_object *s = status(e);
	assert_int_equal(jint(s, "dma.live_mappings"), 1);
	json_object_put(s);
	assert_true(command(e, "sim-vanish\n", NULL, 0));
	s = status(e);
	assert_int_equal(jint(s, "dma.live_mappings"), 0);
	assert_int_equal(jint(s, "dma.unregisters"), 1);
	json_object_put(s);

	struct vfu_dma_unmap um = { .argsz = sizeof(um), .addr = RAM_GPA, .size = RAM_SIZE };
	request(e, fd, VFU_CMD_DMA_UNMAP, &um, sizeof(um), NULL, 0, &err);
	assert_int_equal(err, 0);
	munmap(ram, RAM_SIZE);
	ram = dma_map_ram(e, fd); /* the VMM's map works... */
	s = status(e);
	assert_int_equal(jint(s, "dma.live_mappings"), 0); /* ...but nothing is registered */
	assert_int_equal(jint(s, "dma.registers"), 1);
	assert_int_equal(jint(s, "dma.identity_register_failures"), 0);
	assert_int_equal(jint(s, "interrupts.delivered"), 0);
	json_object_put(s);
	/* Interrupt setup from the VMM still answers; nothing is signalled. */
	assert_int_equal(set_irq_vector0(e, fd, -1, VFU_IRQ_SET_ACTION_UNMASK), 0);
	assert_int_equal(efd_wait(efd, 100), 0);
	assert_int_equal(stop_broker(e), 0);
	close(efd);
	close(fd);
	munmap(ram, RAM_SIZE);
}

/* A device that is not simulated cannot be told to vanish: the darwin backend over the dext model. */
static void test_sim_commands_refused_for_other_devices(void **state)
{
	struct env *e = *state;
	char err[256], error[256];
	struct host_device *hd = host_device_open("sim-dext:nvme,size=16M", err, sizeof(err));

	if (!hd)
		skip(); /* built without the dext test model */
	hd->ops->destroy(hd);
	start_broker(e, "sim-dext:nvme,size=16M");
	assert_false(command(e, "sim-vanish\n", error, sizeof(error)));
	assert_non_null(strstr(error, "sim:nvme"));
	assert_false(command(e, "sim-replug\n", error, sizeof(error)));
	assert_non_null(strstr(error, "sim:nvme"));
	json_object *s = status(e);
	assert_true(jbool(s, "present"));
	json_object_put(s);
	assert_int_equal(stop_broker(e), 0);
}

/*
 * `run` tells a broker where the guest put its function ("guest-addr"), and
 * asks for MSI over MSI-X (--prefer-msi): status says which the guest got.
 */
static void test_guest_addr_and_prefer_msi(void **state)
{
	struct env *e = *state;
	char error[256];

	start_broker(e, "sim:nvme,size=16M,dart=apple");
	json_object *s = status(e);
	assert_string_equal(jstr(s, "interrupts.kind"), "msix");
	json_object_put(s);
	assert_int_equal(stop_broker(e), 0);

	e->prefer_msi = true;
	start_broker(e, "sim:nvme,size=16M,dart=apple");
	s = status(e);
	assert_string_equal(jstr(s, "interrupts.kind"), "msi");
	json_object_put(s);
	int fd = client_connect(e, e->comp_sock);

	assert_int_equal(region_read32(e, fd, 0, 0x04), 5 << 3);
	assert_true(command(e, "guest-addr 02:00.1\n", error, sizeof(error)));
	assert_int_equal(region_read32(e, fd, 0, 0x04), 2 << 8 | 1);
	assert_true(command(e, "guest-addr 1f:1f.7\n", error, sizeof(error)));
	assert_int_equal(region_read32(e, fd, 0, 0x04), 0x1f << 8 | 0x1f << 3 | 7);
	/* Malformed or out of range: refused, MANAGED_BDF unchanged. */
	assert_false(command(e, "guest-addr 02:20.1\n", error, sizeof(error)));
	assert_non_null(strstr(error, "BB:DD.F"));
	assert_false(command(e, "guest-addr 02:00.8\n", error, sizeof(error)));
	assert_false(command(e, "guest-addr 100:00.1\n", error, sizeof(error)));
	assert_false(command(e, "guest-addr 02:00.1x\n", error, sizeof(error)));
	assert_false(command(e, "guest-addr \n", error, sizeof(error)));
	assert_int_equal(region_read32(e, fd, 0, 0x04), 0x1f << 8 | 0x1f << 3 | 7);
	close(fd);
	e->prefer_msi = false;
	assert_int_equal(stop_broker(e), 0);
}

/*
 * sim-reset-companion: every mapping goes (DART and ids), the command page
 * is forgotten (the next doorbell answers INVAL and writes nothing), the
 * reset is counted; once the page is set again MAPs work.
 */
static void test_sim_reset_companion(void **state)
{
	struct env *e = *state;
	char error[256];
	uint64_t id, bus, id2, bus2;
	int mfd, pt, comp;
	uint8_t *ram = new_ram(&mfd);

	start_mapped(e, mfd, ram, &pt, &comp, &id, &bus);
	json_object *s = status(e);
	assert_int_equal(jint(s, "companion.resets"), 0);
	json_object_put(s);

	assert_true(command(e, "sim-reset-companion\n", error, sizeof(error)));
	s = status(e);
	assert_int_equal(jint(s, "dma.live_mappings"), 0);
	assert_int_equal(jint(s, "companion.live_ids"), 0);
	assert_int_equal(jint(s, "companion.resets"), 1);
	json_object_put(s);
	/* No command page any more: INVAL, and RAM is left alone. */
	memset(ram, 0x5a, 0x1000);
	assert_int_equal(region_write32(e, comp, 0, 0x18, 1), 0);
	assert_int_equal(region_read32(e, comp, 0, 0x0C), 3 /* INVAL */);
	assert_int_equal(ram[0x08], 0x5a);
	assert_int_equal(region_read32(e, comp, 0, 0x00), 2); /* VERSION: alive */
	/* The old id is unknown; a new MAP (page set again) works. */
	assert_int_equal(companion_map(e, comp, ram, RAM_GPA + 0x40000, 0x4000, &id2, &bus2), 0);
	assert_true(id2 != id);
	s = status(e);
	assert_int_equal(jint(s, "dma.live_mappings"), 1);
	json_object_put(s);
	close(pt);
	close(comp);
	assert_int_equal(stop_broker(e), 0);
	munmap(ram, RAM_SIZE);
	close(mfd);
}

/* Watchers: several at once, one that never reads is dropped without blocking the others. */
static void test_watchers_never_block(void **state)
{
	struct env *e = *state;
	int w1, w2;

	start_broker(e, "sim:nvme,size=16M,dart=apple");
	w1 = watch_open(e);
	w2 = watch_open(e);
	json_object_put(watch_next(w1));
	json_object_put(watch_next(w2));
	/*
	 * w2 never reads: once the socket's own buffer is full its events wait
	 * in the broker, and past CONTROL_WATCH_BUF it is dropped; w1 sees
	 * every one of them all along.
	 */
	int i;
	for (i = 0; i < 20000; i++) {
		if (i % 250 == 0) {
			json_object *st = status(e);
			int64_t dropped = jint(st, "control.watchers_dropped");

			assert_int_equal(jint(st, "control.watchers"), dropped ? 1 : 2);
			json_object_put(st);
			if (dropped)
				break;
		}
		assert_true(command(e, "sim-vanish\n", NULL, 0));
		json_object *ev = watch_next(w1);
		assert_string_equal(jstr(ev, "event"), "removed");
		json_object_put(ev);
		assert_true(command(e, "sim-replug\n", NULL, 0));
		ev = watch_next(w1);
		assert_string_equal(jstr(ev, "event"), "present");
		json_object_put(ev);
	}
	assert_true(i < 20000);
	json_object *s = status(e);
	assert_true(jbool(s, "present"));
	assert_int_equal(jint(s, "control.watchers_dropped"), 1);
	json_object_put(s);
	assert_int_equal(stop_broker(e), 0);
	close(w1);
	close(w2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_sim_vanish_and_replug_over_control, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sim_commands_refused_for_other_devices, setup, teardown),
		cmocka_unit_test_setup_teardown(test_identity_mode_removal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watchers_never_block, setup, teardown),
		cmocka_unit_test_setup_teardown(test_guest_addr_and_prefer_msi, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_client_does_not_stall, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hup_and_quit_tear_down, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_guest_ram_fails_the_access, setup, teardown),
		cmocka_unit_test_setup_teardown(test_companion_of_another_process_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_json_and_sigterm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_passthrough_function, setup, teardown),
		cmocka_unit_test_setup_teardown(test_companion_map_disconnect_and_sigterm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_identity_mode_registers_passthrough_ram, setup, teardown),
		cmocka_unit_test_setup_teardown(test_identity_mode_read_only_window_not_registered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_passthrough_gone_drops_companion_mappings, setup, teardown),
		cmocka_unit_test_setup_teardown(test_interrupt_reaches_the_vmm_eventfd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_posted_doorbell_is_reported, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dart_mode_io_sim, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dart_mode_io_darwin_backend, setup, teardown),
		cmocka_unit_test_setup_teardown(test_passthrough_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_device_fails_cleanly, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sim_reset_companion, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("broker", tests, NULL, NULL);
}
