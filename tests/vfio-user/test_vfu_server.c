// SPDX-License-Identifier: MIT
/*
 * Protocol tests of the vfio-user server: a fake device records every
 * callback, a test client (vfu_client.c) speaks the wire format, good and
 * broken.  Server and client run in this one thread: the client writes,
 * vfu_server_handle() processes, the client reads the reply.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "guest_mem.h"
#include "vfu_client.h"
#include "vfu_protocol.h"
#include "vfu_server.h"
#include "vuser_tran.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <linux/magic.h>
#include <time.h>
#include <unistd.h>

#define BAR0_SIZE 4096
#define BAR2_SIZE 16384
#define CFG_SIZE 256
#define MSIX_VECTORS 8
#define TIMEOUT_MS 2000

struct unmap_rec {
	uint64_t gpa, len;
	bool still_in_guest_mem; /* the range was still known when the device was told */
};

struct fake_dev {
	struct vfu_server *s;
	uint8_t bar0[BAR0_SIZE];
	uint8_t bar2[BAR2_SIZE]; /* read-only region */
	uint8_t config[CFG_SIZE];
	unsigned reads, writes;
	unsigned last_index;
	uint64_t last_offset;
	uint32_t last_count;
	int rw_result;
	unsigned irqs_changed[VFU_PCI_NUM_IRQS];
	unsigned resets;
	int reset_result;
	struct unmap_rec unmaps[64];
	unsigned nunmaps;
	unsigned maps;
	int map_result;
	unsigned gone;
	size_t ranges_at_gone;
	unsigned unmaps_at_gone; /* dma_unmap calls before client_gone */
	unsigned ready;
};

static uint8_t *region_mem(struct fake_dev *d, unsigned index, uint64_t *size)
{
	switch (index) {
	case 0:
		*size = BAR0_SIZE;
		return d->bar0;
	case 2:
		*size = BAR2_SIZE;
		return d->bar2;
	case VFU_PCI_CONFIG_REGION:
		*size = CFG_SIZE;
		return d->config;
	default:
		*size = 0;
		return NULL;
	}
}

static int dev_region_info(void *opaque, unsigned index, uint64_t *size, uint32_t *flags)
{
	struct fake_dev *d = opaque;

	region_mem(d, index, size);
	*flags = 0;
	if (*size)
		*flags = VFU_REGION_INFO_FLAG_READ | (index == 2 ? 0 : VFU_REGION_INFO_FLAG_WRITE) |
			 VFU_REGION_INFO_FLAG_MMAP; /* the server must strip MMAP */
	return 0;
}

static int dev_region_read(void *opaque, unsigned index, uint64_t offset, void *buf, uint32_t count)
{
	struct fake_dev *d = opaque;
	uint64_t size;
	uint8_t *m = region_mem(d, index, &size);

	d->reads++;
	d->last_index = index;
	d->last_offset = offset;
	d->last_count = count;
	/* the server promised to check bounds: fail loudly if it did not */
	assert_non_null(m);
	assert_true(offset + count <= size);
	if (d->rw_result)
		return d->rw_result;
	memcpy(buf, m + offset, count);
	return 0;
}

static int dev_region_write(void *opaque, unsigned index, uint64_t offset, const void *buf, uint32_t count)
{
	struct fake_dev *d = opaque;
	uint64_t size;
	uint8_t *m = region_mem(d, index, &size);

	d->writes++;
	d->last_index = index;
	d->last_offset = offset;
	d->last_count = count;
	assert_non_null(m);
	assert_true(offset + count <= size);
	if (d->rw_result)
		return d->rw_result;
	memcpy(m + offset, buf, count);
	return 0;
}

static unsigned dev_irq_count(void *opaque, unsigned index)
{
	(void)opaque;
	switch (index) {
	case VFU_PCI_MSI_IRQ:
		return 1;
	case VFU_PCI_MSIX_IRQ:
		return MSIX_VECTORS;
	default:
		return 0;
	}
}

static void dev_irqs_changed(void *opaque, unsigned index)
{
	struct fake_dev *d = opaque;

	assert_true(index < VFU_PCI_NUM_IRQS);
	d->irqs_changed[index]++;
}

static int dev_reset(void *opaque)
{
	struct fake_dev *d = opaque;

	d->resets++;
	return d->reset_result;
}

static void dev_dma_unmap(void *opaque, uint64_t gpa, uint64_t len)
{
	struct fake_dev *d = opaque;
	struct guest_mem_range r;

	if (d->nunmaps++ >= 64)
		return; /* counted, not recorded */
	d->unmaps[d->nunmaps - 1] = (struct unmap_rec){
		.gpa = gpa,
		.len = len,
		.still_in_guest_mem = guest_mem_find(vfu_server_guest_mem(d->s), gpa, &r) == 0 &&
				      r.gpa == gpa && r.len == len,
	};
}

static int dev_dma_map(void *opaque, uint64_t gpa, uint64_t len, void *va, bool writable)
{
	struct fake_dev *d = opaque;

	(void)gpa;
	(void)len;
	(void)va;
	(void)writable;
	d->maps++;
	return d->map_result;
}

static void dev_client_gone(void *opaque)
{
	struct fake_dev *d = opaque;

	d->gone++;
	d->ranges_at_gone = guest_mem_count(vfu_server_guest_mem(d->s));
	d->unmaps_at_gone = d->nunmaps;
}

static void dev_client_ready(void *opaque)
{
	((struct fake_dev *)opaque)->ready++;
}

static const struct vfu_device_ops fake_ops = {
	.region_info = dev_region_info,
	.region_read = dev_region_read,
	.region_write = dev_region_write,
	.irq_count = dev_irq_count,
	.irqs_changed = dev_irqs_changed,
	.reset = dev_reset,
	.dma_unmap = dev_dma_unmap,
	.client_gone = dev_client_gone,
	.dma_map = dev_dma_map,
	.client_ready = dev_client_ready,
};

struct fx {
	char dir[64];
	char path[128];
	struct fake_dev dev;
	struct vfu_server *s;
	int c; /* client socket */
	uint16_t next_id;
	int fds_at_start;
};

static const char *const QEMU_CAPS =
	"{\"capabilities\":{\"migration\":{\"pgsize\":4096,\"max_bitmap_size\":268435456},"
	"\"max_msg_fds\":16,\"max_data_xfer_size\":1048576,\"pgsizes\":4096,"
	"\"max_dma_maps\":65535,\"write_multiple\":true}}";

/* ------------------------------------------------------------- helpers */

static void client_connect(struct fx *f)
{
	f->c = vfuc_connect(f->path);
	assert_true(f->c >= 0);
	assert_true(vfu_server_accept(f->s) > 0);
	assert_true(vfu_server_client_fd(f->s) >= 0);
}

/* Send a request, let the server run, read the reply; returns payload length. */
static ssize_t roundtrip_fds(struct fx *f, uint16_t cmd, const void *payload, size_t len, const int *fds,
			     unsigned nfds, struct vfu_hdr *h, void *reply, size_t cap)
{
	uint16_t id = ++f->next_id;
	ssize_t n;

	assert_int_equal(vfuc_send(f->c, id, cmd, 0, payload, len, fds, nfds), 0);
	assert_int_equal(vfu_server_handle(f->s), 0);
	n = vfuc_recv(f->c, h, reply, cap, TIMEOUT_MS);
	assert_true(n >= 0);
	assert_int_equal(h->id, id);
	assert_int_equal(h->command, cmd);
	assert_int_equal(h->flags & VFU_FLAG_TYPE_MASK, VFU_FLAG_TYPE_REPLY);
	return n;
}

static ssize_t roundtrip(struct fx *f, uint16_t cmd, const void *payload, size_t len, struct vfu_hdr *h,
			 void *reply, size_t cap)
{
	return roundtrip_fds(f, cmd, payload, len, NULL, 0, h, reply, cap);
}

/* The request must fail with exactly err, and the reply be header-only. */
static void expect_error_fds(struct fx *f, uint16_t cmd, const void *payload, size_t len, const int *fds,
			     unsigned nfds, int err)
{
	struct vfu_hdr h;
	uint8_t buf[64];
	ssize_t n = roundtrip_fds(f, cmd, payload, len, fds, nfds, &h, buf, sizeof(buf));

	assert_int_equal(n, 0);
	assert_true(h.flags & VFU_FLAG_ERROR);
	assert_int_equal(h.error, err);
}

static void expect_error(struct fx *f, uint16_t cmd, const void *payload, size_t len, int err)
{
	expect_error_fds(f, cmd, payload, len, NULL, 0, err);
}

static void expect_ok_fds(struct fx *f, uint16_t cmd, const void *payload, size_t len, const int *fds,
			  unsigned nfds)
{
	struct vfu_hdr h;
	uint8_t buf[256];

	roundtrip_fds(f, cmd, payload, len, fds, nfds, &h, buf, sizeof(buf));
	assert_false(h.flags & VFU_FLAG_ERROR);
	assert_int_equal(h.error, 0);
}

static void expect_ok(struct fx *f, uint16_t cmd, const void *payload, size_t len)
{
	expect_ok_fds(f, cmd, payload, len, NULL, 0);
}

static void handshake(struct fx *f, const char *json)
{
	uint8_t req[1024], rep[1024];
	size_t len = vfuc_version_payload(req, sizeof(req), 0, 0, json);
	struct vfu_hdr h;
	ssize_t n = roundtrip(f, VFU_CMD_VERSION, req, len, &h, rep, sizeof(rep));

	assert_false(h.flags & VFU_FLAG_ERROR);
	assert_true(n > (ssize_t)sizeof(struct vfu_version));
}

static struct fx *fx_new(bool do_handshake)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256] = "";

	assert_non_null(f);
	f->fds_at_start = vfuc_count_fds();
	strcpy(f->dir, "/tmp/vfu-test-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/dev.sock", f->dir);
	f->s = vfu_server_create(f->path, &fake_ops, &f->dev, err, sizeof(err));
	assert_non_null(f->s);
	f->dev.s = f->s;
	for (unsigned i = 0; i < CFG_SIZE; i++)
		f->dev.config[i] = (uint8_t)i;
	for (unsigned i = 0; i < BAR2_SIZE; i++)
		f->dev.bar2[i] = (uint8_t)(i * 7);
	client_connect(f);
	if (do_handshake)
		handshake(f, QEMU_CAPS);
	return f;
}

static void fx_free(struct fx *f)
{
	if (f->c >= 0)
		close(f->c);
	vfu_server_destroy(f->s);
	rmdir(f->dir);
	/* nothing the server took from us (eventfds, memfds) may remain open */
	assert_int_equal(vfuc_count_fds(), f->fds_at_start);
	free(f);
}

static int setup(void **state)
{
	*state = fx_new(true);
	return 0;
}

static int setup_raw(void **state)
{
	*state = fx_new(false);
	return 0;
}

static int teardown(void **state)
{
	fx_free(*state);
	return 0;
}

/* The server dropped the client: EOF on the client side. */
static void expect_dropped(struct fx *f)
{
	struct vfu_hdr h;
	uint8_t buf[64];
	ssize_t n;

	/* an error reply may come first */
	do {
		n = vfuc_recv(f->c, &h, buf, sizeof(buf), TIMEOUT_MS);
	} while (n >= 0);
	assert_int_equal(n, -ECONNRESET);
	assert_int_equal(vfu_server_client_fd(f->s), -1);
	close(f->c);
	f->c = -1;
}

/* ------------------------------------------------------------- version */

static void test_version_caps(void **state)
{
	struct fx *f = *state;
	uint8_t req[512], rep[512];
	struct vfu_hdr h;
	struct vfu_version v;
	size_t len = vfuc_version_payload(req, sizeof(req), 0, 3, QEMU_CAPS);
	ssize_t n = roundtrip(f, VFU_CMD_VERSION, req, len, &h, rep, sizeof(rep));
	const char *json = (const char *)rep + sizeof(v);

	assert_false(h.flags & VFU_FLAG_ERROR);
	memcpy(&v, rep, sizeof(v));
	assert_int_equal(v.major, 0);
	assert_int_equal(v.minor, 0); /* the QEMU client refuses anything above its own */
	assert_int_equal(rep[n - 1], '\0');
	/* QEMU reads the reply into the request's buffer: it must not be larger */
	assert_true((size_t)n <= len);
	assert_non_null(strstr(json, "\"pgsizes\":4096"));
	assert_non_null(strstr(json, "\"max_msg_fds\":16"));
	assert_non_null(strstr(json, "\"max_data_xfer_size\":1048576"));
	assert_non_null(strstr(json, "\"max_dma_maps\":1024"));
	assert_non_null(strstr(json, "\"write_multiple\":true"));
	assert_null(strstr(json, "migration"));
	assert_int_equal(f->dev.ready, 1);

	/* a second VERSION on the same connection is refused */
	expect_error(f, VFU_CMD_VERSION, req, len, EINVAL);
}

static void test_version_without_multi(void **state)
{
	struct fx *f = *state;
	uint8_t req[512], rep[512];
	struct vfu_hdr h;
	size_t len = vfuc_version_payload(req, sizeof(req), 0, 0, "{\"capabilities\":{\"max_msg_fds\":8}}");
	ssize_t n = roundtrip(f, VFU_CMD_VERSION, req, len, &h, rep, sizeof(rep));

	assert_true(n > 4);
	assert_false(h.flags & VFU_FLAG_ERROR);
	assert_null(strstr((const char *)rep + 4, "write_multiple"));

	/* no JSON at all is fine too (new client) */
	close(f->c);
	assert_true(vfu_server_handle(f->s) < 0);
	client_connect(f);
	len = vfuc_version_payload(req, sizeof(req), 0, 0, NULL);
	n = roundtrip(f, VFU_CMD_VERSION, req, len, &h, rep, sizeof(rep));
	assert_false(h.flags & VFU_FLAG_ERROR);
	assert_null(strstr((const char *)rep + 4, "write_multiple"));
}

static void test_version_malformed(void **state)
{
	struct fx *f = *state;
	uint8_t req[512];
	size_t len;
	static const char *const bad_json[] = {
		"{\"capabilities\":",                       /* truncated */
		"[1,2,3]",                                  /* not an object */
		"{\"capabilities\":7}",                     /* capabilities not an object */
		"{\"capabilities\":{\"max_msg_fds\":\"x\"}}", /* wrong type */
		"{\"capabilities\":{\"max_msg_fds\":-1}}",
		"{\"capabilities\":{\"write_multiple\":1}}",
		"{} trailing",
		"",
	};
	struct vfu_dma_unmap u = { .argsz = sizeof(u) };

	/* anything but VERSION first is refused */
	expect_error(f, VFU_CMD_DMA_UNMAP, &u, sizeof(u), EINVAL);
	for (size_t i = 0; i < sizeof(bad_json) / sizeof(bad_json[0]); i++) {
		len = vfuc_version_payload(req, sizeof(req), 0, 0, bad_json[i]);
		expect_error(f, VFU_CMD_VERSION, req, len, EINVAL);
	}
	/* JSON without its terminating NUL */
	len = vfuc_version_payload(req, sizeof(req), 0, 0, "{}");
	expect_error(f, VFU_CMD_VERSION, req, len - 1, EINVAL);
	/* too short for major/minor */
	expect_error(f, VFU_CMD_VERSION, req, 3, EINVAL);
	/* another major version */
	len = vfuc_version_payload(req, sizeof(req), 1, 0, "{}");
	expect_error(f, VFU_CMD_VERSION, req, len, ENOTSUP);
	/* page sizes without 4 KiB */
	len = vfuc_version_payload(req, sizeof(req), 0, 0, "{\"capabilities\":{\"pgsizes\":65536}}");
	expect_error(f, VFU_CMD_VERSION, req, len, ENOTSUP);
	assert_int_equal(f->dev.ready, 0);
	/* the connection still works */
	handshake(f, QEMU_CAPS);
	assert_int_equal(f->dev.ready, 1);
}

/* --------------------------------------------------------- device info */

static void test_device_info(void **state)
{
	struct fx *f = *state;
	struct vfu_device_info di = { .argsz = sizeof(di) }, out;
	struct vfu_hdr h;
	ssize_t n = roundtrip(f, VFU_CMD_DEVICE_GET_INFO, &di, sizeof(di), &h, &out, sizeof(out));

	assert_int_equal(n, sizeof(out));
	assert_int_equal(out.argsz, 16);
	assert_int_equal(out.flags, VFU_DEVICE_FLAGS_PCI | VFU_DEVICE_FLAGS_RESET);
	assert_int_equal(out.num_regions, 9);
	assert_int_equal(out.num_irqs, 5);

	di.argsz = 8;
	expect_error(f, VFU_CMD_DEVICE_GET_INFO, &di, sizeof(di), EINVAL);
	expect_error(f, VFU_CMD_DEVICE_GET_INFO, &di, 4, EINVAL); /* truncated payload */
}

static void test_region_info(void **state)
{
	struct fx *f = *state;
	static const struct {
		unsigned index;
		uint64_t size;
		uint32_t flags;
	} want[] = {
		{ 0, BAR0_SIZE, VFU_REGION_INFO_FLAG_READ | VFU_REGION_INFO_FLAG_WRITE },
		{ 1, 0, 0 },
		{ 2, BAR2_SIZE, VFU_REGION_INFO_FLAG_READ },
		{ 5, 0, 0 },
		{ VFU_PCI_ROM_REGION, 0, 0 },
		{ VFU_PCI_CONFIG_REGION, CFG_SIZE, VFU_REGION_INFO_FLAG_READ | VFU_REGION_INFO_FLAG_WRITE },
		{ VFU_PCI_VGA_REGION, 0, 0 },
	};

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		struct vfu_region_info ri = { .argsz = 64, .index = want[i].index }, out;
		struct vfu_hdr h;
		ssize_t n = roundtrip(f, VFU_CMD_DEVICE_GET_REGION_INFO, &ri, sizeof(ri), &h, &out, sizeof(out));

		assert_int_equal(n, sizeof(out));
		assert_int_equal(out.argsz, sizeof(out));
		assert_int_equal(out.index, want[i].index);
		assert_int_equal(out.size, want[i].size);
		assert_int_equal(out.flags, want[i].flags); /* MMAP stripped */
		assert_int_equal(out.cap_offset, 0);
	}
	{
		struct vfu_region_info ri = { .argsz = sizeof(ri), .index = VFU_PCI_NUM_REGIONS };

		expect_error(f, VFU_CMD_DEVICE_GET_REGION_INFO, &ri, sizeof(ri), EINVAL);
		ri.index = 0xffffffffu;
		expect_error(f, VFU_CMD_DEVICE_GET_REGION_INFO, &ri, sizeof(ri), EINVAL);
		ri.index = 0;
		ri.argsz = 16; /* smaller than the reply */
		expect_error(f, VFU_CMD_DEVICE_GET_REGION_INFO, &ri, sizeof(ri), EINVAL);
		ri.argsz = sizeof(ri);
		expect_error(f, VFU_CMD_DEVICE_GET_REGION_INFO, &ri, 12, EINVAL);
	}
}

static void test_irq_info(void **state)
{
	struct fx *f = *state;
	static const struct {
		unsigned index, count;
		uint32_t flags;
	} want[] = {
		{ VFU_PCI_INTX_IRQ, 0, VFU_IRQ_INFO_EVENTFD },
		{ VFU_PCI_MSI_IRQ, 1, VFU_IRQ_INFO_EVENTFD | VFU_IRQ_INFO_NORESIZE },
		{ VFU_PCI_MSIX_IRQ, MSIX_VECTORS, VFU_IRQ_INFO_EVENTFD },
		{ VFU_PCI_ERR_IRQ, 0, VFU_IRQ_INFO_EVENTFD },
		{ VFU_PCI_REQ_IRQ, 0, VFU_IRQ_INFO_EVENTFD },
	};

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		struct vfu_irq_info ii = { .argsz = sizeof(ii), .index = want[i].index }, out;
		struct vfu_hdr h;
		ssize_t n = roundtrip(f, VFU_CMD_DEVICE_GET_IRQ_INFO, &ii, sizeof(ii), &h, &out, sizeof(out));

		assert_int_equal(n, sizeof(out));
		assert_int_equal(out.index, want[i].index);
		assert_int_equal(out.count, want[i].count);
		assert_int_equal(out.flags, want[i].flags);
	}
	{
		struct vfu_irq_info ii = { .argsz = sizeof(ii), .index = VFU_PCI_NUM_IRQS };

		expect_error(f, VFU_CMD_DEVICE_GET_IRQ_INFO, &ii, sizeof(ii), EINVAL);
		ii.index = 0;
		ii.argsz = 4;
		expect_error(f, VFU_CMD_DEVICE_GET_IRQ_INFO, &ii, sizeof(ii), EINVAL);
	}
}

/* ------------------------------------------------------ region access */

struct rw_msg {
	struct vfu_region_rw rw;
	uint8_t data[512];
};

static void region_write(struct fx *f, unsigned region, uint64_t off, const void *data, uint32_t count)
{
	struct rw_msg m = { .rw = { .offset = off, .region = region, .count = count } };
	struct vfu_region_rw out;
	struct vfu_hdr h;

	assert_true(count <= sizeof(m.data));
	memcpy(m.data, data, count);
	assert_int_equal(roundtrip(f, VFU_CMD_REGION_WRITE, &m, sizeof(m.rw) + count, &h, &out, sizeof(out)),
			 sizeof(out));
	assert_false(h.flags & VFU_FLAG_ERROR);
	assert_int_equal(out.offset, off);
	assert_int_equal(out.region, region);
	assert_int_equal(out.count, count);
}

static void region_read(struct fx *f, unsigned region, uint64_t off, void *data, uint32_t count)
{
	struct vfu_region_rw rw = { .offset = off, .region = region, .count = count };
	struct rw_msg out;
	struct vfu_hdr h;
	ssize_t n = roundtrip(f, VFU_CMD_REGION_READ, &rw, sizeof(rw), &h, &out, sizeof(out));

	assert_false(h.flags & VFU_FLAG_ERROR);
	assert_int_equal(n, sizeof(rw) + count);
	assert_int_equal(out.rw.offset, off);
	assert_int_equal(out.rw.region, region);
	assert_int_equal(out.rw.count, count);
	memcpy(data, out.data, count);
}

static void test_region_rw(void **state)
{
	struct fx *f = *state;
	uint8_t buf[256];
	uint32_t v = 0xa1b2c3d4, got = 0;

	region_write(f, 0, 0x10, &v, 4);
	assert_memory_equal(f->dev.bar0 + 0x10, &v, 4);
	assert_int_equal(f->dev.writes, 1);
	region_read(f, 0, 0x10, &got, 4);
	assert_int_equal(got, v);
	/* the last byte of a region */
	region_write(f, 0, BAR0_SIZE - 1, "\x5a", 1);
	assert_int_equal(f->dev.bar0[BAR0_SIZE - 1], 0x5a);
	/* the whole config space in one read, as QEMU does */
	region_read(f, VFU_PCI_CONFIG_REGION, 0, buf, CFG_SIZE);
	for (unsigned i = 0; i < CFG_SIZE; i++)
		assert_int_equal(buf[i], i);
	/* read-only region reads */
	region_read(f, 2, 100, buf, 8);
	assert_memory_equal(buf, f->dev.bar2 + 100, 8);
	assert_int_equal(f->dev.reads, 3);
}

static void test_region_rw_errors(void **state)
{
	struct fx *f = *state;
	struct rw_msg m = { .rw = { .offset = 0, .region = 0, .count = 4 } };
	struct vfu_region_rw rw;
	unsigned reads = f->dev.reads, writes = f->dev.writes;

	/* out of range, straddling the end, and offset overflow */
	rw = (struct vfu_region_rw){ .offset = BAR0_SIZE, .region = 0, .count = 1 };
	expect_error(f, VFU_CMD_REGION_READ, &rw, sizeof(rw), EINVAL);
	rw = (struct vfu_region_rw){ .offset = BAR0_SIZE - 2, .region = 0, .count = 4 };
	expect_error(f, VFU_CMD_REGION_READ, &rw, sizeof(rw), EINVAL);
	rw = (struct vfu_region_rw){ .offset = UINT64_MAX - 1, .region = 0, .count = 4 };
	expect_error(f, VFU_CMD_REGION_READ, &rw, sizeof(rw), EINVAL);
	/* zero count, too big a count, bad and absent regions */
	rw = (struct vfu_region_rw){ .offset = 0, .region = 0, .count = 0 };
	expect_error(f, VFU_CMD_REGION_READ, &rw, sizeof(rw), EINVAL);
	rw = (struct vfu_region_rw){ .offset = 0, .region = 0, .count = VFU_MAX_DATA_XFER + 1 };
	expect_error(f, VFU_CMD_REGION_READ, &rw, sizeof(rw), E2BIG);
	rw = (struct vfu_region_rw){ .offset = 0, .region = 9, .count = 4 };
	expect_error(f, VFU_CMD_REGION_READ, &rw, sizeof(rw), EINVAL);
	rw = (struct vfu_region_rw){ .offset = 0, .region = 1, .count = 4 };
	expect_error(f, VFU_CMD_REGION_READ, &rw, sizeof(rw), EINVAL);
	/* truncated request */
	expect_error(f, VFU_CMD_REGION_READ, &rw, 8, EINVAL);
	/* write: count disagreeing with the data that came */
	m.rw.count = 8;
	expect_error(f, VFU_CMD_REGION_WRITE, &m, sizeof(m.rw) + 4, EINVAL);
	m.rw.count = 4;
	expect_error(f, VFU_CMD_REGION_WRITE, &m, sizeof(m.rw) + 8, EINVAL);
	/* write to a read-only region */
	m.rw.region = 2;
	expect_error(f, VFU_CMD_REGION_WRITE, &m, sizeof(m.rw) + 4, EINVAL);
	assert_int_equal(f->dev.reads, reads);
	assert_int_equal(f->dev.writes, writes);
	/* the device's own error comes back */
	f->dev.rw_result = -EIO;
	m.rw.region = 0;
	expect_error(f, VFU_CMD_REGION_WRITE, &m, sizeof(m.rw) + 4, EIO);
	rw = (struct vfu_region_rw){ .offset = 0, .region = 0, .count = 4 };
	f->dev.rw_result = -EBUSY;
	expect_error(f, VFU_CMD_REGION_READ, &rw, sizeof(rw), EBUSY);
	f->dev.rw_result = 0;
}

static void test_posted_write(void **state)
{
	struct fx *f = *state;
	struct rw_msg m = { .rw = { .offset = 0x20, .region = 0, .count = 4 } };
	uint32_t v = 0x11223344, got = 0;

	memcpy(m.data, &v, 4);
	assert_int_equal(vfuc_send(f->c, 77, VFU_CMD_REGION_WRITE, VFU_FLAG_NO_REPLY, &m, sizeof(m.rw) + 4, NULL, 0),
			 0);
	assert_int_equal(vfu_server_handle(f->s), 0);
	assert_true(vfuc_quiet(f->c, 50)); /* no reply */
	assert_memory_equal(f->dev.bar0 + 0x20, &v, 4);
	/* a failing posted write is not answered either */
	m.rw.offset = BAR0_SIZE;
	assert_int_equal(vfuc_send(f->c, 78, VFU_CMD_REGION_WRITE, VFU_FLAG_NO_REPLY, &m, sizeof(m.rw) + 4, NULL, 0),
			 0);
	assert_int_equal(vfu_server_handle(f->s), 0);
	assert_true(vfuc_quiet(f->c, 50));
	/* and the next read gets its own reply */
	region_read(f, 0, 0x20, &got, 4);
	assert_int_equal(got, v);
}

static void test_write_multi(void **state)
{
	struct fx *f = *state;
	struct {
		uint64_t n;
		struct vfu_region_write_one w[3];
	} m = { .n = 3 };
	uint8_t buf[16];

	m.w[0] = (struct vfu_region_write_one){ .offset = 0x100, .region = 0, .count = 4, .data = { 1, 2, 3, 4 } };
	m.w[1] = (struct vfu_region_write_one){ .offset = 0x104, .region = 0, .count = 8,
						.data = { 5, 6, 7, 8, 9, 10, 11, 12 } };
	m.w[2] = (struct vfu_region_write_one){ .offset = 0x10, .region = VFU_PCI_CONFIG_REGION, .count = 2,
						.data = { 0xee, 0xff } };
	assert_int_equal(vfuc_send(f->c, 5, VFU_CMD_REGION_WRITE_MULTI, VFU_FLAG_NO_REPLY, &m, sizeof(m), NULL, 0), 0);
	assert_int_equal(vfu_server_handle(f->s), 0);
	assert_true(vfuc_quiet(f->c, 50));
	region_read(f, 0, 0x100, buf, 12);
	assert_memory_equal(buf, ((uint8_t[]){ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 }), 12);
	assert_int_equal(f->dev.config[0x10], 0xee);
	assert_int_equal(f->dev.config[0x11], 0xff);

	/* a bad entry (count > 8) applies none of them; asked for a reply it errs */
	m.w[0].data[0] = 0x99;
	m.w[2].count = 9;
	expect_error(f, VFU_CMD_REGION_WRITE_MULTI, &m, sizeof(m), EINVAL);
	assert_int_equal(f->dev.bar0[0x100], 1);
	/* a count disagreeing with the size */
	m.w[2].count = 2;
	m.n = 4;
	expect_error(f, VFU_CMD_REGION_WRITE_MULTI, &m, sizeof(m), EINVAL);
	m.n = 0;
	expect_error(f, VFU_CMD_REGION_WRITE_MULTI, &m, sizeof(m.n), EINVAL);
	/* good again, with a reply */
	m.n = 3;
	expect_ok(f, VFU_CMD_REGION_WRITE_MULTI, &m, sizeof(m));
	assert_int_equal(f->dev.bar0[0x100], 0x99);
}

/* ----------------------------------------------------------------- DMA */

static int make_memfd(size_t size)
{
	int fd = memfd_create("guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK), 0);
	return fd;
}

static void dma_map(struct fx *f, uint64_t gpa, uint64_t size, uint64_t offset, uint32_t flags, int fd, int err)
{
	struct vfu_dma_map m = { .argsz = sizeof(m), .flags = flags, .offset = offset, .addr = gpa, .size = size };

	if (err)
		expect_error_fds(f, VFU_CMD_DMA_MAP, &m, sizeof(m), &fd, fd >= 0 ? 1 : 0, err);
	else
		expect_ok_fds(f, VFU_CMD_DMA_MAP, &m, sizeof(m), &fd, fd >= 0 ? 1 : 0);
}

static void dma_unmap(struct fx *f, uint64_t gpa, uint64_t size, uint32_t flags, int err)
{
	struct vfu_dma_unmap u = { .argsz = sizeof(u), .flags = flags, .addr = gpa, .size = size }, out;
	struct vfu_hdr h;
	ssize_t n;

	if (err) {
		expect_error(f, VFU_CMD_DMA_UNMAP, &u, sizeof(u), err);
		return;
	}
	n = roundtrip(f, VFU_CMD_DMA_UNMAP, &u, sizeof(u), &h, &out, sizeof(out));
	assert_false(h.flags & VFU_FLAG_ERROR);
	assert_int_equal(n, sizeof(out));
	assert_memory_equal(&out, &u, sizeof(u));
}

#define RW (VFU_DMA_MAP_FLAG_READ | VFU_DMA_MAP_FLAG_WRITE)
#define MiB (1024u * 1024u)

static void test_dma_map_fd(void **state)
{
	struct fx *f = *state;
	struct guest_mem *gm = vfu_server_guest_mem(f->s);
	int fd = make_memfd(4 * MiB);
	uint8_t *va, back[8] = { 0 };
	uint32_t pattern = 0xdeadbeef;

	/* guest-physical 1 GiB .. +2 MiB is file offset 1 MiB */
	dma_map(f, 1ull << 30, 2 * MiB, 1 * MiB, RW, fd, 0);
	assert_int_equal(f->dev.maps, 1);
	va = guest_mem_translate(gm, (1ull << 30) + 0x1000, 4, true);
	assert_non_null(va);
	/* bytes the "device" writes through the mapping land in the VMM's file */
	memcpy(va, &pattern, 4);
	assert_int_equal(pread(fd, back, 4, 1 * MiB + 0x1000), 4);
	assert_memory_equal(back, &pattern, 4);
	/* and what the VMM writes, the device sees */
	assert_int_equal(pwrite(fd, "guest!", 6, 1 * MiB + 0x2000), 6);
	va = guest_mem_translate(gm, (1ull << 30) + 0x2000, 6, false);
	assert_non_null(va);
	assert_memory_equal(va, "guest!", 6);
	/* beyond the window: not reachable */
	assert_null(guest_mem_translate(gm, (1ull << 30) + 2 * MiB - 2, 4, false));

	/* a read-only window refuses device writes */
	dma_map(f, 0x100000, 0x10000, 0, VFU_DMA_MAP_FLAG_READ, fd, 0);
	assert_non_null(guest_mem_translate(gm, 0x100000, 16, false));
	assert_null(guest_mem_translate(gm, 0x100000, 16, true));

	/* overlap: EEXIST, nothing changes */
	dma_map(f, (1ull << 30) + MiB, 2 * MiB, 0, RW, fd, EEXIST);
	assert_int_equal(guest_mem_count(gm), 2);

	/* unmap: the device hears of it while the range is still there */
	dma_unmap(f, 1ull << 30, 2 * MiB, 0, 0);
	assert_int_equal(f->dev.nunmaps, 1);
	assert_int_equal(f->dev.unmaps[0].gpa, 1ull << 30);
	assert_int_equal(f->dev.unmaps[0].len, 2 * MiB);
	assert_true(f->dev.unmaps[0].still_in_guest_mem);
	assert_null(guest_mem_translate(gm, 1ull << 30, 4, false));
	/* the same addresses can be mapped again (QEMU's churn) */
	dma_map(f, 1ull << 30, 4 * MiB, 0, RW, fd, 0);
	va = guest_mem_translate(gm, (1ull << 30) + MiB + 0x1000, 4, false);
	assert_non_null(va);
	assert_memory_equal(va, &pattern, 4);
	close(fd);
	/* the mapping outlives our fd: the server keeps the memory mapped */
	assert_memory_equal(va, &pattern, 4);
}

/*
 * The server maps guest RAM at host addresses that agree with the
 * guest-physical address below 2 MiB, whatever the fd offset: the DART
 * keeps a buffer's offset within its 16 KiB granule, and apple_dma refuses
 * a bus address whose offset differs from the guest address's.
 */
static void test_dma_map_congruent(void **state)
{
	struct fx *f = *state;
	struct guest_mem *gm = vfu_server_guest_mem(f->s);
	int fd = make_memfd(4 * MiB);
	static const uint64_t cases[][2] = {
		/* gpa, fd offset */
		{ 0x6400000, 0x100000 },
		{ 0x100000, 0x3000 },
		{ (1ull << 32) + 0x5000, 0x1000 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t *va;

		dma_map(f, cases[i][0], 0x20000, cases[i][1], RW, fd, 0);
		va = guest_mem_translate(gm, cases[i][0] + 0x10, 4, true);
		assert_non_null(va);
		assert_int_equal(((uintptr_t)va - 0x10) & (2 * MiB - 1), cases[i][0] & (2 * MiB - 1));
		/* and it is the right file page */
		assert_int_equal(pwrite(fd, "ok", 2, (off_t)(cases[i][1] + 0x10)), 2);
		assert_memory_equal(va, "ok", 2);
	}
	close(fd);
}

static void test_dma_map_no_fd(void **state)
{
	struct fx *f = *state;
	struct guest_mem *gm = vfu_server_guest_mem(f->s);
	struct guest_mem_range r;

	/* a ROM without fd: known but unreachable */
	dma_map(f, 0xfffc0000, 0x40000, 0, VFU_DMA_MAP_FLAG_READ, -1, 0);
	assert_int_equal(guest_mem_find(gm, 0xfffc1000, &r), 0);
	assert_int_equal(r.gpa, 0xfffc0000);
	assert_null(r.va);
	assert_null(guest_mem_translate(gm, 0xfffc1000, 4, false));
	dma_unmap(f, 0xfffc0000, 0x40000, 0, 0);
	assert_int_equal(f->dev.nunmaps, 1);
	assert_int_equal(guest_mem_count(gm), 0);
}

static void test_dma_map_errors(void **state)
{
	struct fx *f = *state;
	struct guest_mem *gm = vfu_server_guest_mem(f->s);
	int fd = make_memfd(MiB), fd2 = make_memfd(MiB);
	int pipefd[2];
	int both[2] = { fd, fd2 };
	struct vfu_dma_map m = { .argsz = sizeof(m), .flags = RW, .addr = 0, .size = 0x1000 };

	dma_map(f, 0x1000, 0x800, 0, RW, fd, EINVAL);          /* size not 4 KiB aligned */
	dma_map(f, 0x1800, 0x1000, 0, RW, fd, EINVAL);         /* address not aligned */
	dma_map(f, 0x1000, 0, 0, RW, fd, EINVAL);              /* empty */
	dma_map(f, 0xfffffffffffff000ull, 0x2000, 0, RW, -1, EINVAL); /* wraps */
	dma_map(f, 0x1000, 0x1000, 0, 0, fd, EINVAL);          /* neither read nor write */
	dma_map(f, 0x1000, 0x1000, 0, RW | 4, fd, EINVAL);     /* unknown flag */
	dma_map(f, 0x1000, 2 * MiB, 0, RW, fd, EINVAL);        /* beyond the file */
	dma_map(f, 0x1000, 0x1000, MiB, RW, fd, EINVAL);       /* offset at the end */
	dma_map(f, 0x1000, 0x1000, UINT64_MAX - 0xfff, RW, fd, EINVAL); /* offset wraps */
	assert_int_equal(pipe(pipefd), 0);
	dma_map(f, 0x1000, 0x1000, 0, RW, pipefd[0], EINVAL);  /* not a memory file */
	close(pipefd[0]);
	close(pipefd[1]);
	/* two fds */
	expect_error_fds(f, VFU_CMD_DMA_MAP, &m, sizeof(m), both, 2, EINVAL);
	/* bad argsz, truncated */
	m.argsz = 16;
	expect_error_fds(f, VFU_CMD_DMA_MAP, &m, sizeof(m), &fd, 1, EINVAL);
	m.argsz = sizeof(m);
	expect_error_fds(f, VFU_CMD_DMA_MAP, &m, 20, &fd, 1, EINVAL);
	/* the device may refuse */
	f->dev.map_result = -ENOSPC;
	dma_map(f, 0x1000, 0x1000, 0, RW, fd, ENOSPC);
	f->dev.map_result = 0;
	assert_int_equal(guest_mem_count(gm), 0);
	close(fd);
	close(fd2);
}

static void test_dma_unmap_ranges(void **state)
{
	struct fx *f = *state;
	struct guest_mem *gm = vfu_server_guest_mem(f->s);
	int fd = make_memfd(MiB);

	dma_map(f, 0x10000, 0x4000, 0, RW, fd, 0);
	dma_map(f, 0x14000, 0x4000, 0x4000, RW, fd, 0);
	dma_map(f, 0x20000, 0x1000, 0, RW, -1, 0);
	dma_map(f, 0x40000, 0x1000, 0, RW, fd, 0);

	/* a range that cuts a window in two is refused and changes nothing */
	dma_unmap(f, 0x12000, 0x4000, 0, EINVAL);
	dma_unmap(f, 0x10000, 0x2000, 0, EINVAL);
	assert_int_equal(guest_mem_count(gm), 4);
	assert_int_equal(f->dev.nunmaps, 0);
	/* bad requests */
	dma_unmap(f, 0x10000, 0, 0, EINVAL);
	dma_unmap(f, 0x10000, UINT64_MAX, 0, EINVAL);                 /* wraps */
	dma_unmap(f, 0x10000, 0x4000, VFU_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, ENOTSUP);
	dma_unmap(f, 0x10000, 0x4000, 1u << 7, EINVAL);
	dma_unmap(f, 0x10000, 0x4000, VFU_DMA_UNMAP_FLAG_ALL, EINVAL); /* ALL wants 0/0 */
	{
		struct vfu_dma_unmap u = { .argsz = 8, .addr = 0x10000, .size = 0x4000 };

		expect_error(f, VFU_CMD_DMA_UNMAP, &u, sizeof(u), EINVAL);
		u.argsz = sizeof(u);
		expect_error(f, VFU_CMD_DMA_UNMAP, &u, 12, EINVAL);
	}
	/* one range covering two whole windows (and a hole) */
	dma_unmap(f, 0x10000, 0x10000, 0, 0);
	assert_int_equal(f->dev.nunmaps, 2);
	assert_true(f->dev.unmaps[0].still_in_guest_mem && f->dev.unmaps[1].still_in_guest_mem);
	assert_int_equal(guest_mem_count(gm), 2);
	/* nothing there: fine, as in Linux VFIO */
	dma_unmap(f, 0x80000, 0x1000, 0, 0);
	assert_int_equal(f->dev.nunmaps, 2);
	/* everything */
	dma_unmap(f, 0, 0, VFU_DMA_UNMAP_FLAG_ALL, 0);
	assert_int_equal(f->dev.nunmaps, 4);
	assert_int_equal(guest_mem_count(gm), 0);
	close(fd);
}

static void test_dma_limit(void **state)
{
	struct fx *f = *state;

	for (unsigned i = 0; i < VFU_MAX_DMA_MAPS; i++) {
		struct vfu_dma_map m = { .argsz = sizeof(m), .flags = RW, .addr = (uint64_t)i << 12, .size = 0x1000 };
		struct vfu_hdr h;
		uint8_t buf[16];

		assert_int_equal(vfuc_send(f->c, 1, VFU_CMD_DMA_MAP, 0, &m, sizeof(m), NULL, 0), 0);
		assert_int_equal(vfu_server_handle(f->s), 0);
		assert_int_equal(vfuc_recv(f->c, &h, buf, sizeof(buf), TIMEOUT_MS), 0);
		assert_false(h.flags & VFU_FLAG_ERROR);
	}
	dma_map(f, 1ull << 40, 0x1000, 0, RW, -1, ENOSPC);
	dma_unmap(f, 0, 0, VFU_DMA_UNMAP_FLAG_ALL, 0);
	assert_int_equal(f->dev.nunmaps, VFU_MAX_DMA_MAPS);
	assert_int_equal(guest_mem_count(vfu_server_guest_mem(f->s)), 0);
	dma_map(f, 1ull << 40, 0x1000, 0, RW, -1, 0);
}

/* ---------------------------------------------------------------- IRQs */

struct irq_msg {
	struct vfu_irq_set is;
	uint8_t data[16];
};

static void set_irqs(struct fx *f, uint32_t flags, unsigned index, unsigned start, unsigned count,
		     const uint8_t *bools, const int *fds, unsigned nfds, int err)
{
	struct irq_msg m = { .is = { .argsz = sizeof(m.is), .flags = flags, .index = index, .start = start,
				     .count = count } };
	size_t len = sizeof(m.is);

	if (bools) {
		memcpy(m.data, bools, count);
		m.is.argsz += count;
		len += count;
	}
	if (err)
		expect_error_fds(f, VFU_CMD_DEVICE_SET_IRQS, &m, len, fds, nfds, err);
	else
		expect_ok_fds(f, VFU_CMD_DEVICE_SET_IRQS, &m, len, fds, nfds);
}

static uint64_t drain(int efd)
{
	uint64_t v = 0;

	if (read(efd, &v, sizeof(v)) != sizeof(v))
		return 0;
	return v;
}

#define EVT (VFU_IRQ_SET_DATA_EVENTFD | VFU_IRQ_SET_ACTION_TRIGGER)
#define NONE_TRIG (VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_TRIGGER)

static void test_irqs_eventfd(void **state)
{
	struct fx *f = *state;
	int efd[4];
	struct vfu_stats st;

	for (int i = 0; i < 4; i++)
		efd[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	/* nothing assigned yet */
	assert_false(vfu_server_irq_enabled(f->s, VFU_PCI_MSIX_IRQ, 0));
	assert_int_equal(vfu_server_irq_trigger(f->s, VFU_PCI_MSIX_IRQ, 0), -ENOENT);
	assert_int_equal(vfu_server_irq_trigger(f->s, 7, 0), -EINVAL);

	/* vectors 2..5 get eventfds */
	set_irqs(f, EVT, VFU_PCI_MSIX_IRQ, 2, 4, NULL, efd, 4, 0);
	assert_int_equal(f->dev.irqs_changed[VFU_PCI_MSIX_IRQ], 1);
	assert_false(vfu_server_irq_enabled(f->s, VFU_PCI_MSIX_IRQ, 1));
	for (unsigned v = 2; v < 6; v++)
		assert_true(vfu_server_irq_enabled(f->s, VFU_PCI_MSIX_IRQ, v));
	assert_int_equal(vfu_server_irq_trigger(f->s, VFU_PCI_MSIX_IRQ, 3), 0);
	assert_int_equal(drain(efd[1]), 1);
	assert_int_equal(drain(efd[0]), 0);

	/* mask vector 3: a trigger is latched, then fires on unmask */
	set_irqs(f, VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_MASK, VFU_PCI_MSIX_IRQ, 3, 1, NULL, NULL, 0, 0);
	assert_false(vfu_server_irq_enabled(f->s, VFU_PCI_MSIX_IRQ, 3));
	assert_true(vfu_server_irq_assigned(f->s, VFU_PCI_MSIX_IRQ, 3));
	assert_int_equal(vfu_server_irq_trigger(f->s, VFU_PCI_MSIX_IRQ, 3), 0);
	assert_int_equal(vfu_server_irq_trigger(f->s, VFU_PCI_MSIX_IRQ, 3), 0);
	assert_int_equal(drain(efd[1]), 0);
	set_irqs(f, VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_UNMASK, VFU_PCI_MSIX_IRQ, 3, 1, NULL, NULL, 0, 0);
	assert_int_equal(drain(efd[1]), 1);
	assert_true(vfu_server_irq_enabled(f->s, VFU_PCI_MSIX_IRQ, 3));

	/* masks by bool: vectors 2 and 4 of 2..5 */
	set_irqs(f, VFU_IRQ_SET_DATA_BOOL | VFU_IRQ_SET_ACTION_MASK, VFU_PCI_MSIX_IRQ, 2, 4,
		 (const uint8_t[]){ 1, 0, 1, 0 }, NULL, 0, 0);
	assert_false(vfu_server_irq_enabled(f->s, VFU_PCI_MSIX_IRQ, 2));
	assert_true(vfu_server_irq_enabled(f->s, VFU_PCI_MSIX_IRQ, 3));
	assert_false(vfu_server_irq_enabled(f->s, VFU_PCI_MSIX_IRQ, 4));
	assert_true(vfu_server_irq_enabled(f->s, VFU_PCI_MSIX_IRQ, 5));
	set_irqs(f, VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_UNMASK, VFU_PCI_MSIX_IRQ, 0, MSIX_VECTORS, NULL,
		 NULL, 0, 0);

	/* loopback triggers from the client: all, or by bool */
	set_irqs(f, NONE_TRIG, VFU_PCI_MSIX_IRQ, 2, 2, NULL, NULL, 0, 0);
	assert_int_equal(drain(efd[0]), 1);
	assert_int_equal(drain(efd[1]), 1);
	set_irqs(f, VFU_IRQ_SET_DATA_BOOL | VFU_IRQ_SET_ACTION_TRIGGER, VFU_PCI_MSIX_IRQ, 4, 2,
		 (const uint8_t[]){ 0, 1 }, NULL, 0, 0);
	assert_int_equal(drain(efd[2]), 0);
	assert_int_equal(drain(efd[3]), 1);

	/* de-assign vectors 4..5 (eventfd action with no fds: QEMU's fd -1) */
	set_irqs(f, EVT, VFU_PCI_MSIX_IRQ, 4, 2, NULL, NULL, 0, 0);
	assert_false(vfu_server_irq_assigned(f->s, VFU_PCI_MSIX_IRQ, 4));
	assert_true(vfu_server_irq_assigned(f->s, VFU_PCI_MSIX_IRQ, 3));
	assert_int_equal(vfu_server_irq_trigger(f->s, VFU_PCI_MSIX_IRQ, 4), -ENOENT);

	/* count 0: the whole index is disabled */
	set_irqs(f, NONE_TRIG, VFU_PCI_MSIX_IRQ, 0, 0, NULL, NULL, 0, 0);
	assert_false(vfu_server_irq_assigned(f->s, VFU_PCI_MSIX_IRQ, 2));
	assert_false(vfu_server_irq_assigned(f->s, VFU_PCI_MSIX_IRQ, 3));
	/* INTx, ERR and REQ have no vectors, but may be disabled */
	set_irqs(f, NONE_TRIG, VFU_PCI_INTX_IRQ, 0, 0, NULL, NULL, 0, 0);
	set_irqs(f, NONE_TRIG, VFU_PCI_ERR_IRQ, 0, 0, NULL, NULL, 0, 0);
	set_irqs(f, NONE_TRIG, VFU_PCI_REQ_IRQ, 0, 0, NULL, NULL, 0, 0);
	vfu_server_stats(f->s, &st);
	assert_int_equal(st.irqs_triggered, 5);
	assert_int_equal(st.irqs_latched, 1);

	/* MSI: one vector */
	set_irqs(f, EVT, VFU_PCI_MSI_IRQ, 0, 1, NULL, efd, 1, 0);
	assert_int_equal(vfu_server_irq_trigger(f->s, VFU_PCI_MSI_IRQ, 0), 0);
	assert_int_equal(drain(efd[0]), 1);
	/* a pipe is an interrupt too (QEMU's notifier where eventfd is missing) */
	{
		int pfd[2];
		uint64_t v = 0;

		assert_int_equal(pipe(pfd), 0);
		set_irqs(f, EVT, VFU_PCI_MSI_IRQ, 0, 1, NULL, &pfd[1], 1, 0);
		close(pfd[1]);
		assert_int_equal(vfu_server_irq_trigger(f->s, VFU_PCI_MSI_IRQ, 0), 0);
		assert_int_equal(read(pfd[0], &v, sizeof(v)), (ssize_t)sizeof(v));
		assert_int_equal(v, 1);
		set_irqs(f, EVT, VFU_PCI_MSI_IRQ, 0, 1, NULL, NULL, 0, 0);
		close(pfd[0]);
	}
	for (int i = 0; i < 4; i++)
		close(efd[i]);
}

static void test_irqs_errors(void **state)
{
	struct fx *f = *state;
	int efd[3];
	unsigned changed = f->dev.irqs_changed[VFU_PCI_MSIX_IRQ];

	for (int i = 0; i < 3; i++)
		efd[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	/* two data types, two actions, none, unknown bits */
	set_irqs(f, VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_DATA_BOOL | VFU_IRQ_SET_ACTION_TRIGGER,
		 VFU_PCI_MSIX_IRQ, 0, 1, NULL, NULL, 0, EINVAL);
	set_irqs(f, VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_MASK | VFU_IRQ_SET_ACTION_UNMASK,
		 VFU_PCI_MSIX_IRQ, 0, 1, NULL, NULL, 0, EINVAL);
	set_irqs(f, VFU_IRQ_SET_DATA_NONE, VFU_PCI_MSIX_IRQ, 0, 1, NULL, NULL, 0, EINVAL);
	set_irqs(f, VFU_IRQ_SET_ACTION_TRIGGER, VFU_PCI_MSIX_IRQ, 0, 1, NULL, NULL, 0, EINVAL);
	set_irqs(f, NONE_TRIG | (1u << 9), VFU_PCI_MSIX_IRQ, 0, 1, NULL, NULL, 0, EINVAL);
	/* bad index, vectors beyond the count (and the wrap-around) */
	set_irqs(f, NONE_TRIG, VFU_PCI_NUM_IRQS, 0, 1, NULL, NULL, 0, EINVAL);
	set_irqs(f, NONE_TRIG, VFU_PCI_MSIX_IRQ, MSIX_VECTORS - 1, 2, NULL, NULL, 0, EINVAL);
	set_irqs(f, NONE_TRIG, VFU_PCI_MSIX_IRQ, 0xffffffffu, 2, NULL, NULL, 0, EINVAL);
	set_irqs(f, NONE_TRIG, VFU_PCI_INTX_IRQ, 0, 1, NULL, NULL, 0, EINVAL);
	/* fd count disagrees with count */
	set_irqs(f, EVT, VFU_PCI_MSIX_IRQ, 0, 3, NULL, efd, 2, EINVAL);
	set_irqs(f, EVT, VFU_PCI_MSIX_IRQ, 0, 1, NULL, efd, 2, EINVAL);
	/* fds on a non-eventfd request, eventfds for a mask action */
	set_irqs(f, NONE_TRIG, VFU_PCI_MSIX_IRQ, 0, 1, NULL, efd, 1, EINVAL);
	set_irqs(f, VFU_IRQ_SET_DATA_EVENTFD | VFU_IRQ_SET_ACTION_MASK, VFU_PCI_MSIX_IRQ, 0, 1, NULL, efd, 1,
		 EINVAL);
	/* count 0 with data */
	set_irqs(f, EVT, VFU_PCI_MSIX_IRQ, 0, 0, NULL, efd, 1, EINVAL);
	/*
	 * Only eventfds and pipes are interrupts: a regular file (whose write
	 * may block whatever O_NONBLOCK says) or a socket is refused, even
	 * next to a good eventfd, and never written.
	 */
	{
		int mfd = make_memfd(4096), sv[2], bad[2];
		struct stat st;

		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
		bad[0] = efd[0];
		bad[1] = mfd;
		set_irqs(f, EVT, VFU_PCI_MSIX_IRQ, 0, 2, NULL, bad, 2, EINVAL);
		set_irqs(f, EVT, VFU_PCI_MSIX_IRQ, 0, 1, NULL, &sv[0], 1, EINVAL);
		assert_int_equal(vfu_server_irq_trigger(f->s, VFU_PCI_MSIX_IRQ, 1), -ENOENT);
		assert_int_equal(fstat(mfd, &st), 0);
		assert_int_equal(st.st_size, 4096);
		assert_int_equal(lseek(mfd, 0, SEEK_CUR), 0);
		close(mfd);
		close(sv[0]);
		close(sv[1]);
	}
	/* bools missing */
	{
		struct vfu_irq_set is = { .argsz = sizeof(is) + 4, .flags = VFU_IRQ_SET_DATA_BOOL |
			VFU_IRQ_SET_ACTION_TRIGGER, .index = VFU_PCI_MSIX_IRQ, .start = 0, .count = 4 };

		expect_error(f, VFU_CMD_DEVICE_SET_IRQS, &is, sizeof(is), EINVAL);
		is.argsz = 8;
		expect_error(f, VFU_CMD_DEVICE_SET_IRQS, &is, sizeof(is), EINVAL);
		expect_error(f, VFU_CMD_DEVICE_SET_IRQS, &is, 12, EINVAL);
	}
	assert_int_equal(f->dev.irqs_changed[VFU_PCI_MSIX_IRQ], changed);
	assert_false(vfu_server_irq_assigned(f->s, VFU_PCI_MSIX_IRQ, 0));
	for (int i = 0; i < 3; i++)
		close(efd[i]);
}

/* ---------------------------------------------------- reset, unknowns */

static void test_reset_and_unknown(void **state)
{
	struct fx *f = *state;

	expect_ok(f, VFU_CMD_DEVICE_RESET, NULL, 0);
	assert_int_equal(f->dev.resets, 1);
	f->dev.reset_result = -EIO;
	expect_error(f, VFU_CMD_DEVICE_RESET, NULL, 0, EIO);
	assert_int_equal(f->dev.resets, 2);
	f->dev.reset_result = 0;

	expect_error(f, 99, NULL, 0, ENOSYS);
	expect_error(f, 0, NULL, 0, ENOSYS);
	expect_error(f, VFU_CMD_DMA_READ, "12345678", 8, ENOSYS);
	expect_error(f, VFU_CMD_DIRTY_PAGES, NULL, 0, ENOSYS);
	expect_error(f, VFU_CMD_DEVICE_GET_REGION_IO_FDS, "1234567812345678", 16, ENOSYS);
	expect_error(f, VFU_CMD_DEVICE_FEATURE, NULL, 0, ENOSYS);
}

static void test_fds_on_wrong_command(void **state)
{
	struct fx *f = *state;
	int efd = eventfd(0, EFD_CLOEXEC);
	int before = vfuc_count_fds();
	struct vfu_device_info di = { .argsz = sizeof(di) };

	expect_error_fds(f, VFU_CMD_DEVICE_GET_INFO, &di, sizeof(di), &efd, 1, EINVAL);
	/* the server's copy of the fd has been closed */
	assert_int_equal(vfuc_count_fds(), before);
	/* too many fds in one message: refused, all closed */
	{
		int many[20];
		struct vfu_dma_map m = { .argsz = sizeof(m), .flags = RW, .size = 0x1000 };

		for (int i = 0; i < 20; i++)
			many[i] = efd;
		expect_error_fds(f, VFU_CMD_DMA_MAP, &m, sizeof(m), many, 20, EINVAL);
		assert_int_equal(vfuc_count_fds(), before);
	}
	close(efd);
}

/* --------------------------------------------------- framing and streams */

static void test_split_and_batched(void **state)
{
	struct fx *f = *state;
	struct {
		struct vfu_hdr h;
		struct vfu_region_rw rw;
	} msg[3];
	uint8_t raw[sizeof(msg)];
	struct vfu_hdr h;
	uint8_t buf[64];

	for (int i = 0; i < 3; i++) {
		msg[i].h = (struct vfu_hdr){ .id = (uint16_t)(100 + i), .command = VFU_CMD_REGION_READ,
					     .size = sizeof(msg[0]) };
		msg[i].rw = (struct vfu_region_rw){ .offset = (uint64_t)i * 4, .region = VFU_PCI_CONFIG_REGION,
						    .count = 4 };
	}
	memcpy(raw, msg, sizeof(msg));
	/* byte by byte for the first message: the server waits for the rest */
	for (size_t i = 0; i < sizeof(msg[0]); i++) {
		assert_int_equal(vfuc_send_raw(f->c, raw + i, 1, NULL, 0), 0);
		assert_int_equal(vfu_server_handle(f->s), 0);
		if (i + 1 < sizeof(msg[0]))
			assert_true(vfuc_quiet(f->c, 0));
	}
	/* then two messages in one write */
	assert_int_equal(vfuc_send_raw(f->c, raw + sizeof(msg[0]), 2 * sizeof(msg[0]), NULL, 0), 0);
	assert_int_equal(vfu_server_handle(f->s), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(vfuc_recv(f->c, &h, buf, sizeof(buf), TIMEOUT_MS), sizeof(struct vfu_region_rw) + 4);
		assert_int_equal(h.id, 100 + i);
		assert_false(h.flags & VFU_FLAG_ERROR);
		assert_memory_equal(buf + sizeof(struct vfu_region_rw),
				    ((uint8_t[]){ (uint8_t)(i * 4), (uint8_t)(i * 4 + 1), (uint8_t)(i * 4 + 2),
						  (uint8_t)(i * 4 + 3) }), 4);
	}
}

static void test_reply_type_ignored(void **state)
{
	struct fx *f = *state;
	struct vfu_device_info di = { .argsz = sizeof(di) };

	assert_int_equal(vfuc_send(f->c, 9, VFU_CMD_DEVICE_GET_INFO, VFU_FLAG_TYPE_REPLY, &di, sizeof(di), NULL, 0),
			 0);
	assert_int_equal(vfu_server_handle(f->s), 0);
	assert_true(vfuc_quiet(f->c, 50));
	expect_ok(f, VFU_CMD_DEVICE_GET_INFO, &di, sizeof(di));
}

/* A broken message drops the client; the next client is served. */
static void check_next_client_served(struct fx *f)
{
	struct vfu_stats st;

	vfu_server_stats(f->s, &st);
	assert_false(st.connected);
	client_connect(f);
	handshake(f, QEMU_CAPS);
	region_write(f, 0, 0, "ok", 2);
	assert_memory_equal(f->dev.bar0, "ok", 2);
}

/* The fixture's client leaves; the next one is served. */
static void check_next_client_served_after(struct fx *f)
{
	close(f->c);
	f->c = -1;
	assert_true(vfu_server_handle(f->s) < 0);
	check_next_client_served(f);
}

static void test_size_smaller_than_header(void **state)
{
	struct fx *f = *state;
	struct vfu_hdr h = { .id = 1, .command = VFU_CMD_DEVICE_GET_INFO, .size = 8 };
	struct vfu_stats st;

	assert_int_equal(vfuc_send_raw(f->c, &h, sizeof(h), NULL, 0), 0);
	assert_true(vfu_server_handle(f->s) < 0);
	expect_dropped(f);
	vfu_server_stats(f->s, &st);
	assert_int_equal(st.dropped, 1);
	check_next_client_served(f);
}

static void test_size_too_large(void **state)
{
	struct fx *f = *state;
	struct vfu_hdr h = { .id = 1, .command = VFU_CMD_REGION_WRITE, .size = 0xfffffff0u }, rh;
	uint8_t buf[16];

	assert_int_equal(vfuc_send_raw(f->c, &h, sizeof(h), NULL, 0), 0);
	assert_true(vfu_server_handle(f->s) < 0);
	/* an E2BIG reply, then the connection closes */
	assert_int_equal(vfuc_recv(f->c, &rh, buf, sizeof(buf), TIMEOUT_MS), 0);
	assert_true(rh.flags & VFU_FLAG_ERROR);
	assert_int_equal(rh.error, E2BIG);
	expect_dropped(f);
	check_next_client_served(f);
}

static void test_truncated_then_gone(void **state)
{
	struct fx *f = *state;
	struct vfu_hdr h = { .id = 1, .command = VFU_CMD_REGION_WRITE, .size = 64 };
	int efd = eventfd(0, EFD_CLOEXEC);

	/* half a header, with an fd attached, then the client dies */
	assert_int_equal(vfuc_send_raw(f->c, &h, 10, &efd, 1), 0);
	assert_int_equal(vfu_server_handle(f->s), 0);
	close(f->c);
	f->c = -1;
	assert_true(vfu_server_handle(f->s) < 0);
	close(efd);
	check_next_client_served(f);
	/* a full header and half a body */
	assert_int_equal(vfuc_send_raw(f->c, &h, sizeof(h), NULL, 0), 0);
	assert_int_equal(vfu_server_handle(f->s), 0);
	close(f->c);
	f->c = -1;
	assert_true(vfu_server_handle(f->s) < 0);
	check_next_client_served(f);
}

static void test_disconnect_cleanup(void **state)
{
	struct fx *f = *state;
	struct guest_mem *gm = vfu_server_guest_mem(f->s);
	int mfd = make_memfd(MiB);
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	int before;

	dma_map(f, 0x100000, 0x40000, 0, RW, mfd, 0);
	dma_map(f, 0x200000, 0x1000, 0, RW, -1, 0);
	set_irqs(f, EVT, VFU_PCI_MSIX_IRQ, 0, 1, NULL, &efd, 1, 0);
	close(mfd);
	close(efd);
	before = vfuc_count_fds(); /* the server still holds the eventfd */
	close(f->c);
	f->c = -1;
	assert_true(vfu_server_handle(f->s) < 0);
	/*
	 * "gone" first, with every range still registered and mapped (the
	 * device is reset while its DMA still lands in valid memory), then
	 * each range, still mapped, then the memory goes.
	 */
	assert_int_equal(f->dev.gone, 1);
	assert_int_equal(f->dev.ranges_at_gone, 2);
	assert_int_equal(f->dev.unmaps_at_gone, 0);
	assert_int_equal(f->dev.nunmaps, 2);
	assert_true(f->dev.unmaps[0].still_in_guest_mem);
	assert_true(f->dev.unmaps[1].still_in_guest_mem);
	assert_int_equal(guest_mem_count(gm), 0);
	assert_false(vfu_server_irq_assigned(f->s, VFU_PCI_MSIX_IRQ, 0));
	/* the eventfd and the server's end of the socket, plus our end */
	assert_int_equal(vfuc_count_fds(), before - 3);
	assert_int_equal(vfu_server_client_fd(f->s), -1);
	assert_int_equal(vfu_server_handle(f->s), -ENOTCONN);
	check_next_client_served(f);
}

/* A client that never completed VERSION could set nothing up. */
static void test_gone_only_after_ready(void **state)
{
	struct fx *f = *state;

	close(f->c);
	f->c = -1;
	assert_true(vfu_server_handle(f->s) < 0);
	assert_int_equal(f->dev.ready, 0);
	assert_int_equal(f->dev.gone, 0);
	check_next_client_served(f);
	assert_int_equal(f->dev.ready, 1);
	close(f->c);
	f->c = -1;
	assert_true(vfu_server_handle(f->s) < 0);
	assert_int_equal(f->dev.gone, 1);
}

static void test_second_client_refused(void **state)
{
	struct fx *f = *state;
	int c2 = vfuc_connect(f->path);
	struct vfu_hdr h;
	uint8_t buf[16];
	struct vfu_stats st;

	assert_true(c2 >= 0);
	assert_int_equal(vfu_server_accept(f->s), 0);
	assert_int_equal(vfuc_recv(c2, &h, buf, sizeof(buf), TIMEOUT_MS), -ECONNRESET);
	close(c2);
	vfu_server_stats(f->s, &st);
	assert_int_equal(st.refused, 1);
	assert_int_equal(st.clients, 1);
	/* the first is still served */
	region_write(f, 0, 8, "x", 1);
	assert_int_equal(f->dev.bar0[8], 'x');
	/* nothing pending: accept reports nothing */
	assert_int_equal(vfu_server_accept(f->s), 0);
}

/*
 * Random requests (seeded, so a failure repeats): valid headers around
 * random payloads of every command, some with an fd.  The fake device
 * asserts that no access reaches it out of bounds; the server must answer
 * each request (or drop the client) and keep serving.
 */
static void test_random_requests(void **state)
{
	struct fx *f = *state;
	int efd = eventfd(0, EFD_CLOEXEC);
	uint32_t seed = 12345;
	unsigned replies = 0, drops = 0, ok = 0;

	for (int iter = 0; iter < 5000; iter++) {
		uint8_t payload[96];
		size_t len;
		uint16_t cmd;
		uint32_t flags;
		struct vfu_hdr h;
		uint8_t buf[2048];
		ssize_t n;

		seed = seed * 1103515245u + 12345u;
		cmd = (uint16_t)(2 + (seed >> 16) % 16); /* VERSION is done already */
		len = (seed >> 8) % sizeof(payload);
		/* 32-bit words, mostly small: plausible indices, counts, offsets */
		for (size_t i = 0; i < len; i += 4) {
			uint32_t w, r;

			seed = seed * 1103515245u + 12345u;
			r = seed >> 16;
			seed = seed * 1103515245u + 12345u;
			w = r % 100 < 40 ? 0 : r % 100 < 70 ? (seed >> 16) % 16 : r % 100 < 85 ? (seed >> 16) % 5000
										 : seed ^ (r << 16);
			memcpy(payload + i, &w, len - i < 4 ? len - i : 4);
		}
		/* writes whose count matches their data, half of the time */
		if (cmd == VFU_CMD_REGION_WRITE && len >= sizeof(struct vfu_region_rw) && (seed & 0x80)) {
			uint32_t count = (uint32_t)(len - sizeof(struct vfu_region_rw));

			memcpy(payload + offsetof(struct vfu_region_rw, count), &count, sizeof(count));
		}
		flags = (seed & 0x100) ? VFU_FLAG_NO_REPLY : 0;
		assert_int_equal(vfuc_send(f->c, (uint16_t)iter, cmd, flags, payload, len, &efd, (seed & 0x6000) ? 0 : 1),
				 0);
		if (vfu_server_handle(f->s) < 0) {
			drops++;
			close(f->c);
			f->c = -1;
			check_next_client_served(f);
			continue;
		}
		if (flags & VFU_FLAG_NO_REPLY) {
			assert_true(vfuc_quiet(f->c, 0));
			continue;
		}
		n = vfuc_recv(f->c, &h, buf, sizeof(buf), TIMEOUT_MS);
		assert_true(n >= 0);
		assert_int_equal(h.id, (uint16_t)iter);
		if (h.flags & VFU_FLAG_ERROR) {
			assert_int_equal(n, 0);
			assert_true(h.error > 0);
		} else {
			ok++;
		}
		replies++;
	}
	/* still serving, and the fds we sent are all closed but for our own */
	expect_ok(f, VFU_CMD_DEVICE_GET_INFO, &(struct vfu_device_info){ .argsz = 16 }, 16);
	assert_true(replies > 1000);
	assert_true(ok > 100 && f->dev.reads > 2 && f->dev.writes > 5);
	print_message("random requests: %u replies (%u ok), %u drops; device saw %u reads, %u writes, "
		      "%u unmaps\n", replies, ok, drops, f->dev.reads, f->dev.writes, f->dev.nunmaps);
	close(efd);
}

/* ------------------------------------------------------ socket handling */

static void test_socket_path_handling(void **state)
{
	char dir[] = "/tmp/vfu-sock-XXXXXX", path[128], err[256];
	struct fake_dev dev = { 0 };
	struct vfu_server *s, *s2;
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd, before = vfuc_count_fds();

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/x.sock", dir);

	/* a stale socket file (its process died) is replaced */
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	strcpy(addr.sun_path, path);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	close(fd);
	s = vfu_server_create(path, &fake_ops, &dev, err, sizeof(err));
	assert_non_null(s);
	dev.s = s;

	/* a live one is not */
	err[0] = 0;
	s2 = vfu_server_create(path, &fake_ops, &dev, err, sizeof(err));
	assert_null(s2);
	assert_non_null(strstr(err, "is in use by another process"));
	assert_non_null(strstr(err, path));
	vfu_server_destroy(s);
	assert_int_equal(access(path, F_OK), -1); /* unlinked */

	/* a regular file is never deleted */
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	close(fd);
	s = vfu_server_create(path, &fake_ops, &dev, err, sizeof(err));
	assert_null(s);
	assert_non_null(strstr(err, "not a socket"));
	assert_int_equal(access(path, F_OK), 0);
	unlink(path);

	/* a path too long for a UNIX socket */
	{
		char longp[200];

		memset(longp, 'a', sizeof(longp) - 1);
		longp[0] = '/';
		longp[sizeof(longp) - 1] = 0;
		assert_null(vfu_server_create(longp, &fake_ops, &dev, err, sizeof(err)));
		assert_non_null(strstr(err, "too long"));
	}
	rmdir(dir);
	assert_int_equal(vfuc_count_fds(), before);
}

/* With stdin closed, accept() yields fd 0, which must not read as "none". */
static void test_accept_with_stdin_closed(void **state)
{
	struct fx *f = *state;
	int saved = dup(0), c2, fd;

	close(f->c); /* the fixture's client goes first */
	f->c = -1;
	assert_true(vfu_server_handle(f->s) < 0);
	c2 = vfuc_connect(f->path);
	assert_true(c2 > 0);
	close(0);
	fd = vfu_server_accept(f->s);
	assert_true(dup2(saved, 0) == 0);
	close(saved);
	assert_true(fd > 0);
	assert_int_equal(vfu_server_client_fd(f->s), fd);
	f->c = c2;
	handshake(f, QEMU_CAPS);
}

static void test_stats(void **state)
{
	struct fx *f = *state;
	struct vfu_stats st;
	uint8_t b;

	region_read(f, 0, 0, &b, 1);
	expect_error(f, 99, NULL, 0, ENOSYS);
	vfu_server_stats(f->s, &st);
	assert_int_equal(st.messages, 3); /* VERSION, READ, 99 */
	assert_int_equal(st.errors, 1);
	assert_int_equal(st.region_reads, 1);
	assert_int_equal(st.clients, 1);
	assert_true(st.connected);
	assert_string_equal(vfu_server_socket_path(f->s), f->path);
}

/*
 * A client that pipelines requests and never reads its replies (issue 11,
 * item 3): the server never blocks on it.  Each handle() returns at once;
 * replies wait in the output queue, and once it holds VUSER_TXQ_PAUSE
 * bytes the server stops reading (poll events: POLLOUT only): the
 * requests wait in the client's socket and its own sends block, not the
 * broker.  When the client reads, every
 * reply arrives, in order.
 */
static void test_reader_that_never_reads(void **state)
{
	struct fx *f = *state;
	struct vfu_region_rw rw = { .offset = 0, .region = 2, .count = BAR2_SIZE };
	struct vfu_stats st;
	struct timespec t0, t1;
	static uint8_t buf[sizeof(rw) + BAR2_SIZE];
	int sent = 0;

	/* 16 KiB per reply; far more than a socket buffer holds */
	fcntl(f->c, F_SETFL, fcntl(f->c, F_GETFL) | O_NONBLOCK);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int round = 0; round < 200; round++) {
		while (sent < 280 && vfuc_send(f->c, (uint16_t)(100 + sent), VFU_CMD_REGION_READ, 0, &rw, sizeof(rw),
					       NULL, 0) == 0)
			sent++;
		assert_int_equal(vfu_server_handle(f->s), 0);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	/* 200 wake-ups took no time: nothing waited for the client */
	assert_true((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 1000);
	vfu_server_stats(f->s, &st);
	assert_true(st.connected);
	assert_int_equal(st.dropped, 0);
	assert_true(st.queued_bytes >= 64 * 1024);
	assert_int_equal(vfu_server_poll_events(f->s), POLLOUT); /* paused: no POLLIN */
	/* it stopped reading: the rest of the requests wait in the socket */
	assert_true(st.region_reads < 280);
	assert_true(st.queued_bytes < 64 * 1024 + sizeof(buf) + 16);

	/* the client reads now: every reply, in order, while the server keeps going */
	fcntl(f->c, F_SETFL, fcntl(f->c, F_GETFL) & ~O_NONBLOCK);
	for (int i = 0; i < 280; i++) {
		struct vfu_hdr h;
		ssize_t n;

		while (sent < 280 && vfuc_send(f->c, (uint16_t)(100 + sent), VFU_CMD_REGION_READ, 0, &rw,
					       sizeof(rw), NULL, 0) == 0)
			sent++;
		do {
			assert_true(vfu_server_handle(f->s) == 0);
			n = vfuc_recv(f->c, &h, buf, sizeof(buf), 10);
		} while (n == -ETIMEDOUT);
		assert_int_equal(n, sizeof(buf));
		assert_int_equal(h.id, 100 + i);
		assert_false(h.flags & VFU_FLAG_ERROR);
	}
	vfu_server_stats(f->s, &st);
	assert_int_equal(st.region_reads, 280);
	assert_int_equal(st.queued_bytes, 0);
	assert_int_equal(vfu_server_poll_events(f->s), POLLIN);
	check_next_client_served_after(f);
}

/* Guest RAM must not be able to shrink or block (issue 11, item 2). */
static void test_dma_map_file_policy(void **state)
{
	struct fx *f = *state;
	struct guest_mem *gm = vfu_server_guest_mem(f->s);
	char shm[64], disk[64];
	int fd;

	/* an unsealed memfd: its VMM could truncate it under the mapping */
	fd = memfd_create("unsealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, MiB), 0);
	dma_map(f, 0x100000, MiB, 0, RW, fd, EINVAL);
	/* sealed against growing only: still refused */
	assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_GROW), 0);
	dma_map(f, 0x100000, MiB, 0, RW, fd, EINVAL);
	/* sealed against shrinking: taken */
	assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK), 0);
	dma_map(f, 0x100000, MiB, 0, RW, fd, 0);
	close(fd);
	assert_int_equal(guest_mem_count(gm), 1);

	/* a named file on tmpfs (memory-backend-file,mem-path=/dev/shm/...): taken */
	snprintf(shm, sizeof(shm), "/dev/shm/vfa-test-%d", (int)getpid());
	fd = open(shm, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd >= 0) {
		assert_int_equal(ftruncate(fd, MiB), 0);
		dma_map(f, 0x200000, MiB, 0, RW, fd, 0);
		close(fd);
		unlink(shm);
	} else {
		print_message("no /dev/shm: the tmpfs case is not checked\n");
	}

	/* a file on a disk file system (or FUSE): refused */
	snprintf(disk, sizeof(disk), "vfa-test-ram-%d", (int)getpid());
	fd = open(disk, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	unlink(disk);
	assert_int_equal(ftruncate(fd, MiB), 0);
	{
		struct statfs fs;

		assert_int_equal(fstatfs(fd, &fs), 0);
		if (fs.f_type != TMPFS_MAGIC)
			dma_map(f, 0x300000, MiB, 0, RW, fd, EINVAL);
		else
			print_message("the build directory is on tmpfs: the disk case is not checked\n");
	}
	close(fd);
}

/* Only our uid or root may connect (issue 11, item 1). */
static void test_stranger_refused(void **state)
{
	struct fx *f = *state;
	struct vfu_stats st;
	pid_t child;
	int status;

	if (geteuid() != 0) {
		print_message("a peer of another uid needs root to setuid: not checked\n");
		return;
	}
	/* open the directory and socket for the test (the broker keeps both private) */
	assert_int_equal(chmod(f->dir, 0711), 0);
	assert_int_equal(chmod(f->path, 0666), 0);
	close(f->c);
	f->c = -1;
	assert_true(vfu_server_handle(f->s) < 0);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		char b;
		int fd;

		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(2);
		fd = vfuc_connect(f->path);
		if (fd < 0)
			_exit(3);
		_exit(read(fd, &b, 1) == 0 ? 0 : 4); /* closed on us */
	}
	st.refused_peers = 0;
	for (int i = 0; i < 2000 && st.refused_peers == 0; i++) {
		assert_int_equal(vfu_server_accept(f->s), 0);
		vfu_server_stats(f->s, &st);
		usleep(1000);
	}
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	vfu_server_stats(f->s, &st);
	assert_int_equal(st.refused_peers, 1);
	assert_false(st.connected);
	assert_int_equal(chmod(f->dir, 0700), 0);
	/* ours: served, and its pid is known */
	check_next_client_served(f);
	assert_int_equal(vfu_server_peer_pid(f->s), getpid());
}

/* One request through the memory transport: push, handle, take the reply. */
static size_t mem_roundtrip(struct vfu_server *s, struct vuser_tran *t, uint16_t id, uint16_t cmd, const void *payload,
			    size_t len, const int *fds, unsigned nfds, struct vfu_hdr *h, uint8_t *reply, size_t cap)
{
	static uint8_t msg[4096];
	struct vfu_hdr req = { .id = id, .command = cmd, .size = (uint32_t)(sizeof(req) + len) };
	uint8_t out[8192];
	size_t n;

	assert_true(sizeof(req) + len <= sizeof(msg));
	memcpy(msg, &req, sizeof(req));
	if (len)
		memcpy(msg + sizeof(req), payload, len);
	assert_int_equal(vuser_tran_mem_push(t, msg, sizeof(req) + len, fds, nfds), 0);
	assert_int_equal(vfu_server_handle(s), 0);
	n = vuser_tran_mem_take(t, out, sizeof(out));
	assert_true(n >= sizeof(*h));
	memcpy(h, out, sizeof(*h));
	assert_int_equal(h->size, n); /* one reply, whole */
	assert_int_equal(h->id, id);
	assert_int_equal(h->command, cmd);
	assert_true(n - sizeof(*h) <= cap);
	memcpy(reply, out + sizeof(*h), n - sizeof(*h));
	return n - sizeof(*h);
}

/*
 * Issue 13, item 2: the dispatch runs with no socket (the memory transport,
 * vfio-user/vuser_tran_mem.c): VERSION, region write and read, DMA_MAP
 * with an fd, SET_IRQS, and the client leaving, each checked on the device
 * and in the reply bytes.
 */
static void test_dispatch_without_socket(void **state)
{
	struct fake_dev dev = { 0 };
	struct vuser_tran *t = vuser_tran_mem_create();
	struct vfu_server *s;
	struct vfu_hdr h;
	uint8_t req[1024], rep[1024];
	char err[256];
	size_t len;
	int mfd, efd, fds0 = vfuc_count_fds();

	(void)state;
	assert_non_null(t);
	s = vfu_server_create_on(t, "memory", &fake_ops, &dev, err, sizeof(err));
	assert_non_null(s);
	dev.s = s;
	assert_int_equal(vfu_server_listen_fd(s), -1);
	assert_true(vfu_server_accept(s) > 0);

	len = vfuc_version_payload(req, sizeof(req), 0, 0, QEMU_CAPS);
	assert_true(mem_roundtrip(s, t, 1, VFU_CMD_VERSION, req, len, NULL, 0, &h, rep, sizeof(rep)) >
		    sizeof(struct vfu_version));
	assert_false(h.flags & VFU_FLAG_ERROR);
	assert_int_equal(dev.ready, 1);
	assert_true(vfu_server_negotiated(s));

	/* REGION_WRITE then REGION_READ of BAR0 */
	struct vfu_region_rw rw = { .offset = 8, .region = 0, .count = 4 };
	memcpy(req, &rw, sizeof(rw));
	memcpy(req + sizeof(rw), "mem!", 4);
	assert_int_equal(mem_roundtrip(s, t, 2, VFU_CMD_REGION_WRITE, req, sizeof(rw) + 4, NULL, 0, &h, rep,
				       sizeof(rep)), sizeof(rw));
	assert_memory_equal(dev.bar0 + 8, "mem!", 4);
	assert_int_equal(mem_roundtrip(s, t, 3, VFU_CMD_REGION_READ, &rw, sizeof(rw), NULL, 0, &h, rep,
				       sizeof(rep)), sizeof(rw) + 4);
	assert_memory_equal(rep + sizeof(rw), "mem!", 4);

	/* DMA_MAP with a sealed memfd: mapped and in the guest memory map */
	mfd = make_memfd(MiB);
	struct vfu_dma_map m = { .argsz = sizeof(m), .flags = RW, .addr = 0x100000, .size = MiB };
	mem_roundtrip(s, t, 4, VFU_CMD_DMA_MAP, &m, sizeof(m), &mfd, 1, &h, rep, sizeof(rep));
	assert_false(h.flags & VFU_FLAG_ERROR);
	assert_int_equal(guest_mem_count(vfu_server_guest_mem(s)), 1);
	assert_non_null(guest_mem_translate(vfu_server_guest_mem(s), 0x100000, 4096, true));

	/* SET_IRQS with an eventfd, then a trigger reaches it */
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	assert_true(efd >= 0);
	struct vfu_irq_set is = { .argsz = sizeof(is), .flags = VFU_IRQ_SET_DATA_EVENTFD | VFU_IRQ_SET_ACTION_TRIGGER,
				  .index = VFU_PCI_MSIX_IRQ, .start = 0, .count = 1 };
	int dup_efd = dup(efd);
	mem_roundtrip(s, t, 5, VFU_CMD_DEVICE_SET_IRQS, &is, sizeof(is), &dup_efd, 1, &h, rep, sizeof(rep));
	assert_false(h.flags & VFU_FLAG_ERROR);
	assert_int_equal(vfu_server_irq_trigger(s, VFU_PCI_MSIX_IRQ, 0), 0);
	uint64_t count = 0;
	assert_int_equal(read(efd, &count, 8), 8);
	assert_int_equal(count, 1);
	close(efd);

	/* an unknown command: ENOSYS in the reply */
	mem_roundtrip(s, t, 6, 99, NULL, 0, NULL, 0, &h, rep, sizeof(rep));
	assert_true(h.flags & VFU_FLAG_ERROR);
	assert_int_equal(h.error, ENOSYS);

	/* the client leaves: the device hears of it, the memory goes */
	vuser_tran_mem_hangup(t);
	assert_true(vfu_server_handle(s) < 0);
	assert_int_equal(dev.gone, 1);
	assert_int_equal(guest_mem_count(vfu_server_guest_mem(s)), 0);
	vfu_server_destroy(s);
	assert_int_equal(vfuc_count_fds(), fds0); /* the memfd and the eventfd it was given are closed */
}

/*
 * The transport's output queue is bounded: what the socket does not take
 * waits (up to VUSER_TXQ_MAX bytes), more is refused with -ENOBUFS (the
 * server then drops the client), and a reader gets every queued byte in
 * order.  (Through the server this cannot happen today: it stops reading
 * requests at VUSER_TXQ_PAUSE and one reply is at most a largest message.)
 */
static void test_transport_queue_bounded(void **state)
{
	char dir[] = "/tmp/vfu-txq-XXXXXX", path[128], err[256];
	struct vuser_tran *t;
	struct vuser_accept a;
	static uint8_t chunk[256 * 1024], back[256 * 1024];
	size_t queued_total = 0, got = 0;
	int c;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/q.sock", dir);
	t = vuser_tran_sock_listen(path, err, sizeof(err));
	assert_non_null(t);
	c = vfuc_connect(path);
	assert_true(c >= 0);
	assert_int_equal(t->ops->accept(t, &a), 0);
	assert_true(a.fd > 0);
	for (size_t i = 0; i < sizeof(chunk); i++)
		chunk[i] = (uint8_t)(i * 7 + 1);
	/* the peer reads nothing: the socket fills, then the queue, then -ENOBUFS */
	for (;;) {
		int r = t->ops->send(t, chunk, sizeof(chunk));

		if (r == -ENOBUFS)
			break;
		assert_int_equal(r, 0);
		queued_total += sizeof(chunk);
		assert_true(queued_total < 64u << 20);
	}
	assert_true(t->ops->queued(t) > 0);
	assert_true(t->ops->queued(t) <= VUSER_TXQ_MAX);
	/* the reader drains; every byte arrives, in order */
	while (got < queued_total) {
		ssize_t n = recv(c, back, sizeof(back), MSG_DONTWAIT);

		if (n < 0) {
			assert_int_equal(errno, EAGAIN);
			assert_int_equal(t->ops->flush(t), 0);
			continue;
		}
		assert_true(n > 0);
		for (ssize_t i = 0; i < n; i++)
			if (back[i] != chunk[(got + (size_t)i) % sizeof(chunk)])
				fail_msg("byte %zu differs", got + (size_t)i);
		got += (size_t)n;
	}
	assert_int_equal(t->ops->queued(t), 0);
	close(c);
	t->ops->unlink(t);
	t->ops->destroy(t);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_version_caps, setup_raw, teardown),
		cmocka_unit_test_setup_teardown(test_version_without_multi, setup_raw, teardown),
		cmocka_unit_test_setup_teardown(test_version_malformed, setup_raw, teardown),
		cmocka_unit_test_setup_teardown(test_device_info, setup, teardown),
		cmocka_unit_test_setup_teardown(test_region_info, setup, teardown),
		cmocka_unit_test_setup_teardown(test_irq_info, setup, teardown),
		cmocka_unit_test_setup_teardown(test_region_rw, setup, teardown),
		cmocka_unit_test_setup_teardown(test_region_rw_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_posted_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_multi, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dma_map_fd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dma_map_congruent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dma_map_no_fd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dma_map_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dma_unmap_ranges, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dma_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_irqs_eventfd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_irqs_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset_and_unknown, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fds_on_wrong_command, setup, teardown),
		cmocka_unit_test_setup_teardown(test_split_and_batched, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reply_type_ignored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_size_smaller_than_header, setup, teardown),
		cmocka_unit_test_setup_teardown(test_size_too_large, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_then_gone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disconnect_cleanup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gone_only_after_ready, setup_raw, teardown),
		cmocka_unit_test_setup_teardown(test_second_client_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_random_requests, setup, teardown),
		cmocka_unit_test(test_socket_path_handling),
		cmocka_unit_test_setup_teardown(test_accept_with_stdin_closed, setup_raw, teardown),
		cmocka_unit_test_setup_teardown(test_stats, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reader_that_never_reads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dma_map_file_policy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stranger_refused, setup, teardown),
		cmocka_unit_test(test_dispatch_without_socket),
		cmocka_unit_test(test_transport_queue_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
