// SPDX-License-Identifier: MIT
/*
 * The darwin backend's test suite, run unchanged against the dext TEST MODEL
 * (tests/darwin/model) over the simulated NVMe.  It checks every verb, the
 * kIOReturn -> errno mapping, sharing of connections, the interrupt wake-up
 * through the pipe, and DMA registration through to the sim's DART.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <IOKit/IOKitLib.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backends.h"
#include "darwin_backend.h"
#include "dext_model.h"
#include "dext_model_sim.h"
#include "sim_dart.h"
#include "sim_nvme.h"

#define NVME_CC 0x14
#define NVME_CSTS 0x1c
#define NVME_AQA 0x24
#define NVME_ASQ 0x28
#define NVME_ACQ 0x30
#define NVME_SQ0_TAIL 0x1000
#define NVME_CQ0_HEAD 0x1004

/* ---- fixtures ---- */

static struct host_device *sim_new(void)
{
	struct sim_nvme_config cfg = {.size = 1 << 20, .dart = {.seeded = true, .seed = 7}};
	char err[256];
	struct host_device *sim = sim_nvme_open(&cfg, err, sizeof(err));

	assert_non_null(sim);
	return sim;
}

static uint64_t publish(struct host_device *dev, const char *root, uint8_t bus, uint8_t device, uint8_t function)
{
	struct dext_model_service_config cfg = {
		.dev = dev,
		.host_root = root,
		.set_location = true,
		.bus = bus,
		.device = device,
		.function = function,
	};
	char err[256];
	uint64_t id = 0;

	assert_int_equal(dext_model_publish(&cfg, &id, err, sizeof(err)), 0);
	return id;
}

static struct host_device *must_open(const char *spec)
{
	char err[256] = "";
	struct host_device *hd = darwin_open(spec, err, sizeof(err));

	if (!hd)
		fail_msg("darwin_open(%s): %s", spec, err);
	return hd;
}

/* One sim NVMe published at 03:00.0 under "tb-root0", opened and claimed. */
struct fixture {
	struct host_device *sim;
	uint64_t service;
	struct host_device *hd;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->sim = sim_new();
	f->service = publish(f->sim, "tb-root0", 3, 0, 0);
	f->hd = must_open("03:00.0");
	assert_int_equal(f->hd->ops->claim(f->hd), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	struct dext_model_stats st;

	if (f->hd)
		f->hd->ops->destroy(f->hd);
	dext_model_unpublish(f->service, true);
	f->sim->ops->destroy(f->sim);
	free(f);
	dext_model_get_stats(&st);
	/* Nothing may outlive the test: no client, port, handle or service. */
	assert_int_equal(st.clients_live, 0);
	assert_int_equal(st.ports_live, 0);
	assert_int_equal(st.objects_live, 0);
	assert_int_equal(st.services_live, 0);
	return 0;
}

static bool readable(int fd, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

static void drain(int fd)
{
	char buf[64];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

/* ---- opening ---- */

static void test_open_identity_limits(void **state)
{
	struct fixture *f = *state;
	struct hd_identity id;
	struct dext_model_stats st;

	assert_int_equal(f->hd->ops->identity(f->hd, &id), 0);
	assert_int_equal(id.bus, 3);
	assert_int_equal(id.device, 0);
	assert_int_equal(id.function, 0);
	assert_int_equal(id.vendor_id, SIM_NVME_VENDOR_ID);
	assert_int_equal(id.device_id, SIM_NVME_DEVICE_ID);
	assert_int_equal(id.class_code, SIM_NVME_CLASS);
	assert_int_equal(f->hd->limits.max_bytes, 1536ull << 20);
	assert_int_equal(f->hd->limits.max_mappings, 65536);
	assert_int_equal(f->hd->limits.granule, 16384);
	assert_false(f->hd->identity_dma);
	assert_int_equal(dext_model_claims(f->service), 1);
	dext_model_get_stats(&st);
	assert_true(st.service_opens >= 1);
	assert_int_equal(st.clients_live, 1);
	assert_int_equal(st.ports_live, 1);
}

static void test_open_errors(void **state)
{
	struct fixture *f = *state;
	struct host_device *decoy = sim_new();
	struct dext_model_service_config cfg = {
		.dev = decoy, .host_root = "tb-root9", .user_class = "SomeOtherDriver",
		.set_location = true, .bus = 5,
	};
	struct dext_model_stats before, after;
	uint64_t decoy_id;
	char err[256];

	(void)f;
	assert_int_equal(dext_model_publish(&cfg, &decoy_id, err, sizeof(err)), 0);
	const char *bad[] = {"", "3", "03:00", "03:20.0", "03:00.8", "zz:00.0", "03:00.0x", "03:00.0@"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_null(darwin_open(bad[i], err, sizeof(err)));
		assert_non_null(strstr(err, "BB:DD.F"));
	}
	dext_model_get_stats(&before);
	/* A service of another IOUserClass is never opened, even at the right address. */
	assert_null(darwin_open("05:00.0", err, sizeof(err)));
	assert_non_null(strstr(err, "no VFIOUserPCIDriver service for 05:00.0"));
	dext_model_get_stats(&after);
	assert_int_equal(after.service_opens, before.service_opens); /* 03:00.0 is shared, decoy skipped */
	assert_null(darwin_open("03:00.0@tb-root1", err, sizeof(err)));
	assert_non_null(strstr(err, "under host root tb-root1"));
	dext_model_unpublish(decoy_id, true);
	decoy->ops->destroy(decoy);
}

static void test_host_root_tiebreak(void **state)
{
	struct fixture *f = *state;
	struct host_device *sim2 = sim_new(), *sim3 = sim_new(), *hd2;
	uint64_t id2 = publish(sim2, "tb-root1", 3, 0, 0);
	uint64_t id3 = publish(sim3, "tb-root2", 3, 0, 0);
	char err[256];

	/* Two Thunderbolt roots reuse bus 3: the bare address is ambiguous. */
	assert_null(darwin_open("03:00.0", err, sizeof(err)));
	assert_non_null(strstr(err, "several host roots"));
	assert_non_null(strstr(err, "\"tb-root0\""));
	assert_non_null(strstr(err, "\"tb-root1\""));
	assert_non_null(strstr(err, "\"tb-root2\""));
	struct dext_model_stats a, b;
	dext_model_get_stats(&a);
	hd2 = must_open("03:00.0@tb-root1");
	dext_model_get_stats(&b);
	assert_int_equal(b.service_opens - a.service_opens, 1); /* other roots are not even opened */
	assert_int_equal(hd2->ops->claim(hd2), 0);
	assert_int_equal(dext_model_claims(id2), 1);
	assert_int_equal(dext_model_claims(f->service), 1);
	hd2->ops->destroy(hd2);
	assert_int_equal(dext_model_claims(id2), 0);
	dext_model_unpublish(id2, true);
	dext_model_unpublish(id3, true);
	sim2->ops->destroy(sim2);
	sim3->ops->destroy(sim3);
}

/* ---- sharing ---- */

static void test_same_function_shares_connection(void **state)
{
	struct fixture *f = *state;
	struct dext_model_stats a, b;
	struct host_device *again;

	dext_model_get_stats(&a);
	again = must_open("03:00.0");
	dext_model_get_stats(&b);
	assert_int_equal(b.service_opens, a.service_opens); /* no new IOServiceOpen */
	assert_int_equal(b.clients_live, 1);
	assert_int_equal(b.ports_created, a.ports_created);
	assert_int_equal(again->ops->irq_wakeup_fd(again), f->hd->ops->irq_wakeup_fd(f->hd));
	assert_int_equal(again->ops->claim(again), 0);
	assert_int_equal(dext_model_claims(f->service), 1); /* one connection, one claim */

	/* A registration made through one is visible (as a live key) through the other. */
	static uint8_t buf[16384] __attribute__((aligned(16384)));
	uint64_t bus, len;
	assert_int_equal(f->hd->ops->dma_register(f->hd, 42, buf, sizeof(buf), &bus, &len), 0);
	assert_int_equal(again->ops->dma_register(again, 42, buf, sizeof(buf), &bus, &len), -EEXIST);

	again->ops->destroy(again);
	dext_model_get_stats(&b);
	assert_int_equal(b.clients_live, 1); /* still open for f->hd */
	assert_int_equal(f->hd->ops->dma_unregister(f->hd, 42), 0);
}

static void test_functions_of_a_slot_share_notifications(void **state)
{
	(void)state;
	struct host_device *s0 = sim_new(), *s1 = sim_new(), *s2 = sim_new();
	uint64_t i0 = publish(s0, "tb-root3", 7, 0, 0);
	uint64_t i1 = publish(s1, "tb-root3", 7, 0, 1);
	uint64_t i2 = publish(s2, "tb-root3", 8, 0, 0);
	struct dext_model_stats a, b;
	struct hd_identity id;

	dext_model_get_stats(&a);
	struct host_device *f0 = must_open("07:00.0"), *f1 = must_open("07:00.1"), *g = must_open("08:00.0");
	dext_model_get_stats(&b);
	assert_int_equal(b.clients_live - a.clients_live, 3); /* one connection per function */
	assert_int_equal(b.ports_created - a.ports_created, 2); /* slot 07:00 shares one port */
	assert_int_equal(f1->ops->identity(f1, &id), 0);
	assert_int_equal(id.function, 1);
	assert_int_not_equal(f0->ops->irq_wakeup_fd(f0), f1->ops->irq_wakeup_fd(f1));
	f0->ops->destroy(f0);
	dext_model_get_stats(&b);
	assert_int_equal(b.ports_live - a.ports_live, 2); /* 07:00.1 still holds the slot */
	f1->ops->destroy(f1);
	g->ops->destroy(g);
	dext_model_get_stats(&b);
	assert_int_equal(b.ports_live, a.ports_live);
	assert_int_equal(b.clients_live, a.clients_live);
	dext_model_unpublish(i0, true);
	dext_model_unpublish(i1, true);
	dext_model_unpublish(i2, true);
	s0->ops->destroy(s0);
	s1->ops->destroy(s1);
	s2->ops->destroy(s2);
}

/* ---- config space ---- */

static void test_claim_required(void **state)
{
	(void)state;
	struct host_device *sim = sim_new(), *hd;
	uint64_t sid = publish(sim, "tb-root4", 9, 0, 0);
	uint32_t v;

	hd = must_open("09:00.0");
	assert_int_equal(hd->ops->config_read(hd, 0, 4, &v), -EPERM);
	assert_non_null(strstr(host_device_error(hd), "kIOReturnNotOpen"));
	assert_non_null(strstr(host_device_error(hd), "claim the device first"));
	assert_int_equal(dext_model_claims(sid), 0);
	assert_int_equal(hd->ops->claim(hd), 0);
	assert_int_equal(hd->ops->claim(hd), 0);
	assert_int_equal(dext_model_claims(sid), 1);
	hd->ops->release(hd); /* bookkeeping only: the dext drops the claim on close */
	assert_int_equal(dext_model_claims(sid), 1);
	hd->ops->destroy(hd);
	assert_int_equal(dext_model_claims(sid), 0);
	dext_model_unpublish(sid, true);
	sim->ops->destroy(sim);
}

static void test_config(void **state)
{
	struct fixture *f = *state;
	struct host_device *hd = f->hd;
	uint32_t v, cmd;
	uint8_t block[64];

	assert_int_equal(hd->ops->config_read(hd, 0, 2, &v), 0);
	assert_int_equal(v, SIM_NVME_VENDOR_ID);
	assert_int_equal(hd->ops->config_read(hd, 2, 2, &v), 0);
	assert_int_equal(v, SIM_NVME_DEVICE_ID);
	assert_int_equal(hd->ops->config_read(hd, 4, 2, &cmd), 0);
	assert_int_equal(cmd & 0x6, 0x6); /* claim: memory space + bus master */
	/* BARs read as their synthesized type, address 0. */
	assert_int_equal(hd->ops->config_read(hd, 0x10, 4, &v), 0);
	assert_int_equal(v, 0x4);
	assert_int_equal(hd->ops->config_read(hd, 0x14, 4, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(hd->ops->config_read(hd, 0x20, 4, &v), 0);
	assert_int_equal(v, 0x4);
	assert_int_equal(hd->ops->config_read(hd, 0x10, 1, &v), 0);
	assert_int_equal(v, 0x4);
	/* The block read is the same bytes as single reads, little-endian. */
	assert_int_equal(hd->ops->config_read_block(hd, 1, block, sizeof(block)), 0);
	for (unsigned i = 0; i < sizeof(block); i++) {
		assert_int_equal(hd->ops->config_read(hd, 1 + i, 1, &v), 0);
		assert_int_equal(block[i], v);
	}
	assert_int_equal(block[0], SIM_NVME_VENDOR_ID >> 8);
	/* Writes reach the device. */
	assert_int_equal(hd->ops->config_write(hd, 4, 2, cmd | 0x400), 0);
	assert_int_equal(hd->ops->config_read(hd, 4, 2, &v), 0);
	assert_int_equal(v, cmd | 0x400);
	/* Bad accesses never reach the dext. */
	struct dext_model_stats a, b;
	dext_model_get_stats(&a);
	assert_int_equal(hd->ops->config_read(hd, 0, 3, &v), -EINVAL);
	assert_int_equal(hd->ops->config_read(hd, 2, 4, &v), -EINVAL);
	assert_int_equal(hd->ops->config_read(hd, 4096, 1, &v), -EINVAL);
	assert_int_equal(hd->ops->config_write(hd, 4094, 4, 0), -EINVAL);
	assert_int_equal(hd->ops->config_read_block(hd, 4000, block, 97), -EINVAL);
	assert_int_equal(hd->ops->config_read_block(hd, UINT32_MAX, block, 1), -EINVAL);
	dext_model_get_stats(&b);
	assert_int_equal(b.calls[8], a.calls[8]);
	assert_int_equal(b.calls[9], a.calls[9]);
}

/* ---- BARs ---- */

static void test_bar_info_and_map(void **state)
{
	struct fixture *f = *state;
	struct host_device *hd = f->hd;
	struct hd_bar_info bi;
	struct dext_model_stats st;
	volatile void *p;
	uint64_t v;

	assert_int_equal(hd->ops->bar_info(hd, 0, &bi), 0);
	assert_int_equal(bi.type, HD_BAR_MEM64);
	assert_int_equal(bi.size, SIM_NVME_BAR0_SIZE);
	assert_false(bi.prefetchable);
	assert_int_equal(hd->ops->bar_info(hd, 1, &bi), 0);
	assert_int_equal(bi.type, HD_BAR_UNUSED);
	assert_int_equal(bi.size, 0);
	assert_int_equal(hd->ops->bar_info(hd, 4, &bi), 0);
	assert_int_equal(bi.type, HD_BAR_MEM64);
	assert_int_equal(hd->ops->bar_info(hd, 6, &bi), -EINVAL);

	/* BAR0 of the sim traps every access: the dext model cannot map it. */
	assert_int_equal(hd->ops->bar_map(hd, 0, &p), -EOPNOTSUPP);
	dext_model_get_stats(&st);
	assert_int_equal(st.last_map_type, 1); /* 1 + BAR index */
	assert_int_equal(st.last_map_options, kIOMapAnywhere | kIOMapInhibitCache);
	assert_int_equal(hd->ops->bar_map(hd, 1, &p), -EINVAL);

	assert_int_equal(hd->ops->bar_map(hd, 4, &p), 0);
	dext_model_get_stats(&st);
	assert_int_equal(st.last_map_type, 5);
	assert_int_equal(st.last_map_options, kIOMapAnywhere | kIOMapInhibitCache);
	/* The mapping is the device's memory: what MMIO reads back. */
	((volatile uint32_t *)p)[2] = 0xfeedf00d;
	assert_int_equal(hd->ops->mmio_read(hd, 4, 8, 4, &v), 0);
	assert_int_equal(v, 0xfeedf00d);
	assert_int_equal(hd->ops->mmio_write(hd, 4, 16, 8, 0x0123456789abcdefull), 0);
	assert_int_equal(((volatile uint64_t *)p)[2], 0x0123456789abcdefull);
	/* Mapped once per connection. */
	volatile void *again;
	uint64_t maps = st.maps;
	assert_int_equal(hd->ops->bar_map(hd, 4, &again), 0);
	assert_ptr_equal(again, p);
	dext_model_get_stats(&st);
	assert_int_equal(st.maps, maps);
}

/* A device with a prefetchable BAR and an I/O BAR, behind the same model. */
static uint8_t fake_bar2[4096];
static uint32_t fake_class = 0x030000;
static int fake_identity(struct host_device *hd, struct hd_identity *o)
{
	(void)hd;
	*o = (struct hd_identity){.vendor_id = 0x10de, .device_id = 0x2b85, .class_code = fake_class};
	return 0;
}
static int fake_claim(struct host_device *hd) { (void)hd; return 0; }
static void fake_release(struct host_device *hd) { (void)hd; }
static int fake_bar_info(struct host_device *hd, unsigned bar, struct hd_bar_info *o)
{
	(void)hd;
	memset(o, 0, sizeof(*o));
	if (bar == 2)
		*o = (struct hd_bar_info){.size = sizeof(fake_bar2), .type = HD_BAR_MEM32, .prefetchable = true};
	if (bar == 5)
		*o = (struct hd_bar_info){.size = 256, .type = HD_BAR_IO};
	return 0;
}
static int fake_bar_map(struct host_device *hd, unsigned bar, volatile void **out)
{
	(void)hd;
	if (bar != 2)
		return -EOPNOTSUPP;
	*out = fake_bar2;
	return 0;
}
static int fake_config_read(struct host_device *hd, uint32_t off, unsigned w, uint32_t *v)
{
	(void)hd;
	(void)off;
	(void)w;
	*v = 0;
	return 0;
}
static int fake_config_write(struct host_device *hd, uint32_t off, unsigned w, uint32_t v)
{
	(void)hd;
	(void)off;
	(void)w;
	(void)v;
	return 0;
}
static const struct host_device_ops fake_ops = {
	.identity = fake_identity,
	.claim = fake_claim,
	.release = fake_release,
	.bar_info = fake_bar_info,
	.bar_map = fake_bar_map,
	.config_read = fake_config_read,
	.config_write = fake_config_write,
};

/* Item 4: a prefetchable BAR is mapped uncached too (no write-combining: no barriers before doorbells). */
static void test_prefetchable_bar_uncached(void **state)
{
	(void)state;
	struct host_device fake = {.ops = &fake_ops};
	struct dext_model_service_config cfg = {.dev = &fake, .host_root = "tb-gpu", .set_location = true, .bus = 0x20};
	struct dext_model_stats st;
	struct hd_bar_info bi;
	volatile void *p;
	char err[256];
	uint64_t sid;
	uint32_t v;

	assert_int_equal(dext_model_publish(&cfg, &sid, err, sizeof(err)), 0);
	struct host_device *hd = must_open("20:00.0");
	assert_int_equal(hd->ops->claim(hd), 0);
	assert_int_equal(hd->ops->bar_info(hd, 2, &bi), 0);
	assert_int_equal(bi.type, HD_BAR_MEM32);
	assert_true(bi.prefetchable);
	assert_int_equal(hd->ops->bar_info(hd, 5, &bi), 0);
	assert_int_equal(bi.type, HD_BAR_IO);
	assert_int_equal(hd->ops->config_read(hd, 0x18, 4, &v), 0);
	assert_int_equal(v, 0x8); /* 32-bit, prefetchable */
	assert_int_equal(hd->ops->config_read(hd, 0x24, 4, &v), 0);
	assert_int_equal(v, 0x1); /* I/O */
	assert_int_equal(hd->ops->bar_map(hd, 2, &p), 0);
	assert_ptr_equal(p, fake_bar2);
	dext_model_get_stats(&st);
	assert_int_equal(st.last_map_type, 3);
	assert_int_equal(st.last_map_options, kIOMapAnywhere | kIOMapInhibitCache);
	assert_int_equal(hd->ops->bar_map(hd, 5, &p), -EOPNOTSUPP);
	hd->ops->destroy(hd);
	dext_model_unpublish(sid, true);
}

/* The dext never binds to an audio function (a GPU's HDMI audio, say). */
static void test_audio_refused(void **state)
{
	(void)state;
	struct host_device fake = {.ops = &fake_ops};
	struct dext_model_service_config cfg = {.dev = &fake, .set_location = true, .bus = 0x20, .function = 1};
	char err[256];
	uint64_t sid;

	fake_class = 0x040300;
	assert_int_equal(dext_model_publish(&cfg, &sid, err, sizeof(err)), -EPERM);
	fake_class = 0x030000;
	assert_non_null(strstr(err, "audio"));
	assert_null(darwin_open("20:00.1", err, sizeof(err)));
	assert_non_null(strstr(err, "audio functions, class 0x04, are never bound"));
	assert_int_equal(dext_model_publish(NULL, &sid, err, sizeof(err)), -EINVAL);
}

static void test_mmio(void **state)
{
	struct fixture *f = *state;
	struct host_device *hd = f->hd;
	uint64_t v;

	assert_int_equal(hd->ops->mmio_read(hd, 0, 8, 4, &v), 0);
	assert_int_equal(v, 0x00010400); /* NVMe 1.4 */
	assert_int_equal(hd->ops->mmio_read(hd, 0, 0, 8, &v), 0);
	assert_int_equal(v & 0xffff, SIM_NVME_MAX_QUEUE_ENTRIES - 1); /* CAP.MQES */
	assert_int_equal(hd->ops->mmio_write(hd, 0, NVME_AQA, 4, 0x00030003), 0);
	assert_int_equal(hd->ops->mmio_read(hd, 0, NVME_AQA, 4, &v), 0);
	assert_int_equal(v, 0x00030003);
	assert_int_equal(hd->ops->mmio_read(hd, 0, 2, 4, &v), -EINVAL);
	assert_int_equal(hd->ops->mmio_read(hd, 0, SIM_NVME_BAR0_SIZE - 4, 8, &v), -EINVAL);
	assert_int_equal(hd->ops->mmio_read(hd, 0, SIM_NVME_BAR0_SIZE, 1, &v), -EINVAL);
	assert_int_equal(hd->ops->mmio_read(hd, 0, 0, 3, &v), -EINVAL);
	assert_int_equal(hd->ops->mmio_read(hd, 1, 0, 4, &v), -EINVAL);
	assert_int_equal(hd->ops->mmio_write(hd, 9, 0, 4, 0), -EINVAL);
	assert_int_equal(hd->ops->mmio_read(hd, 0, UINT64_MAX - 3, 4, &v), -EINVAL);
}

/* ---- DMA ---- */

static void test_dma_through_to_the_dart(void **state)
{
	struct fixture *f = *state;
	struct host_device *hd = f->hd;
	struct sim_dart *dart = sim_nvme_dart(f->sim);
	uint8_t *buf = aligned_alloc(16384, 65536);
	uint64_t bus, len, bus2, len2;
	struct hd_dma_stats ds, darts;

	memset(buf, 0x5a, 65536);
	assert_int_equal(hd->ops->dma_register(hd, 0x1000, buf + 100, 5000, &bus, &len), 0);
	assert_int_equal(len, 5000);
	/* The bus address is the DART's choice, and it reaches exactly our bytes. */
	assert_ptr_equal(sim_dart_translate(dart, bus, len, false), buf + 100);
	assert_int_equal(bus % 16384, (uintptr_t)(buf + 100) % 16384);
	assert_int_not_equal(bus, (uintptr_t)(buf + 100));
	assert_null(sim_dart_translate(dart, bus + len, 1, false));
	assert_int_equal(hd->ops->dma_register(hd, 0x2000, buf + 32768, 32768, &bus2, &len2), 0);
	assert_ptr_equal(sim_dart_translate(dart, bus2, 32768, true), buf + 32768);

	assert_int_equal(hd->ops->dma_register(hd, 0x1000, buf, 4096, &bus2, &len2), -EEXIST);
	assert_non_null(strstr(host_device_error(hd), "already registered"));
	assert_int_equal(hd->ops->dma_register(hd, 0x3000, buf, 0, &bus2, &len2), -EINVAL);
	assert_int_equal(hd->ops->dma_register(hd, 0x3000, NULL, 4096, &bus2, &len2), -EINVAL);
	assert_int_equal(hd->ops->dma_register(hd, 0x3000, (void *)(uintptr_t)(UINT64_MAX - 10), 4096, &bus2, &len2),
			 -EINVAL);
	/* Memory this process does not have cannot be registered. */
	assert_int_equal(hd->ops->dma_register(hd, 0x3000, (void *)(uintptr_t)0x1000, 4096, &bus2, &len2), -EFAULT);
	assert_non_null(strstr(host_device_error(hd), "kIOReturnVMError"));
	assert_int_equal(hd->ops->dma_unregister(hd, 0x9999), -ENOENT);
	assert_non_null(strstr(host_device_error(hd), "not registered"));

	assert_int_equal(hd->ops->dma_stats(hd, &ds), 0);
	assert_int_equal(ds.live_mappings, 2);
	assert_int_equal(ds.live_bytes, 5000 + 32768);
	assert_int_equal(ds.register_failures, 5);
	assert_int_equal(hd->ops->dma_unregister(hd, 0x1000), 0);
	assert_null(sim_dart_translate(dart, bus, 1, false));
	assert_int_equal(hd->ops->dma_stats(hd, &ds), 0);
	assert_int_equal(ds.live_mappings, 1);
	assert_int_equal(ds.live_bytes, 32768);
	assert_int_equal(ds.peak_mappings, 2);
	assert_int_equal(ds.registers, 2);
	assert_int_equal(ds.unregisters, 1);

	/* Closing the connection releases what it held, in the DART too. */
	hd->ops->destroy(hd);
	f->hd = NULL;
	sim_dart_stats(dart, &darts);
	assert_int_equal(darts.live_mappings, 0);
	assert_int_equal(dext_model_claims(f->service), 0);
	free(buf);
}

static void test_dma_dart_full(void **state)
{
	(void)state;
	struct sim_nvme_config cfg = {.size = 1 << 20, .dart = {.max_mappings = 2}};
	char err[256];
	struct host_device *sim = sim_nvme_open(&cfg, err, sizeof(err));
	uint64_t sid = publish(sim, "tb-root5", 0x11, 0, 0);
	struct host_device *hd = must_open("11:00.0");
	static uint8_t buf[3][4096];
	uint64_t bus, len;

	assert_int_equal(hd->ops->claim(hd), 0);
	assert_int_equal(hd->ops->dma_register(hd, 1, buf[0], 4096, &bus, &len), 0);
	assert_int_equal(hd->ops->dma_register(hd, 2, buf[1], 4096, &bus, &len), 0);
	/* The sim DART's -ENOSPC crosses the dext as kIOReturnNoResources and comes back. */
	assert_int_equal(hd->ops->dma_register(hd, 3, buf[2], 4096, &bus, &len), -ENOSPC);
	assert_non_null(strstr(host_device_error(hd), "DART is full"));
	hd->ops->destroy(hd);
	dext_model_unpublish(sid, true);
	sim->ops->destroy(sim);
}

/* Every kIOReturn a caller can act on becomes the errno the interface promises. */
static void test_error_mapping(void **state)
{
	struct fixture *f = *state;
	struct host_device *hd = f->hd;
	static const struct {
		IOReturn kr;
		int err;
		const char *text;
	} map[] = {
		{kIOReturnStillOpen, -EEXIST, "kIOReturnStillOpen"},
		{kIOReturnNotFound, -ENOENT, "kIOReturnNotFound"},
		{kIOReturnNotAligned, -ERANGE, "kIOReturnNotAligned"},
		{kIOReturnNoMemory, -ENOSPC, "kIOReturnNoMemory"},
		{kIOReturnNoResources, -ENOSPC, "kIOReturnNoResources"},
		{kIOReturnBadArgument, -EINVAL, "kIOReturnBadArgument"},
		{kIOReturnNotOpen, -EPERM, "claim the device first"},
		{kIOReturnNotPermitted, -EPERM, "userclient-access"},
		{kIOReturnBusy, -EBUSY, "kIOReturnBusy"},
		{kIOReturnUnsupported, -EOPNOTSUPP, "kIOReturnUnsupported"},
		{kIOReturnIPCError, -ENODEV, "kIOReturnIPCError"},
		{kIOReturnOffline, -ENODEV, "kIOReturnOffline"},
		{kIOReturnTimeout, -ETIMEDOUT, "kIOReturnTimeout"},
		{kIOReturnAborted, -ECANCELED, "kIOReturnAborted"},
		{kIOReturnIOError, -EIO, "kIOReturnIOError"},
		{(IOReturn)0xe00002ff, -EIO, "0xe00002ff"},
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		dext_model_fail_next(17, map[i].kr);
		assert_int_equal(hd->ops->reset(hd), map[i].err);
		if (!strstr(host_device_error(hd), map[i].text))
			fail_msg("0x%08x: \"%s\" lacks \"%s\"", (unsigned)map[i].kr, host_device_error(hd), map[i].text);
		assert_non_null(strstr(host_device_error(hd), "ResetDevice"));
	}
	assert_int_equal(hd->ops->reset(hd), 0);

	/* Registration failures get their own words. */
	static uint8_t buf[4096];
	uint64_t bus, len;
	dext_model_fail_next(5, kIOReturnNotAligned);
	assert_int_equal(hd->ops->dma_register(hd, 1, buf, sizeof(buf), &bus, &len), -ERANGE);
	assert_non_null(strstr(host_device_error(hd), "one contiguous bus segment"));
	dext_model_fail_next(5, kIOReturnNoMemory);
	assert_int_equal(hd->ops->dma_register(hd, 1, buf, sizeof(buf), &bus, &len), -ENOSPC);
	dext_model_fail_next(5, kIOReturnStillOpen);
	assert_int_equal(hd->ops->dma_register(hd, 1, buf, sizeof(buf), &bus, &len), -EEXIST);
	dext_model_fail_next(6, kIOReturnNotFound);
	assert_int_equal(hd->ops->dma_unregister(hd, 1), -ENOENT);
	dext_model_fail_next(101, kIOReturnNoMemory); /* IOConnectMapMemory64 of BAR0 */
	volatile void *p;
	assert_int_equal(hd->ops->bar_map(hd, 0, &p), -ENOSPC);
	assert_non_null(strstr(host_device_error(hd), "IOConnectMapMemory64"));
	dext_model_fail_next(8, kIOReturnIPCError);
	uint32_t v;
	assert_int_equal(hd->ops->config_read(hd, 0, 4, &v), -ENODEV);
	/* An IPC failure may pass: the function is still there. */
	assert_true(host_device_present(hd));
	assert_int_equal(hd->ops->config_read(hd, 0, 4, &v), 0);
	/* kIOReturnNotAttached is final (the service terminated): the function is gone. */
	dext_model_fail_next(0, kIOReturnNotAttached);
	struct hd_identity id;
	assert_int_equal(hd->ops->identity(hd, &id), -ENODEV);
	assert_non_null(strstr(host_device_error(hd), "unplugged"));
	assert_false(host_device_present(hd));
	assert_non_null(strstr(host_device_removal(hd), "terminated"));
}

static void test_terminated_service(void **state)
{
	struct fixture *f = *state;
	uint32_t v;

	/* A call racing the termination notice gets the dext's own answer. */
	dext_model_fail_next(8, kIOReturnNotAttached);
	assert_int_equal(f->hd->ops->config_read(f->hd, 0, 4, &v), -ENODEV);
	assert_non_null(strstr(host_device_error(f->hd), "kIOReturnNotAttached"));
	assert_non_null(strstr(host_device_error(f->hd), "device is gone"));
	dext_model_unpublish(f->service, true);
	assert_true(readable(f->hd->ops->irq_wakeup_fd(f->hd), 5000));
	assert_int_equal(f->hd->ops->config_read(f->hd, 0, 4, &v), -ENODEV);
	assert_non_null(strstr(host_device_error(f->hd), "device is gone"));
	/* Destroying a device whose dext went away still releases everything. */
}

/* ---- interrupts ---- */

struct admin {
	uint8_t *sq, *cq, *data;
	uint64_t sq_bus, cq_bus, data_bus;
	unsigned tail;
};

static void admin_setup(struct host_device *hd, struct admin *a)
{
	uint64_t len, v;

	a->sq = aligned_alloc(4096, 4096);
	a->cq = aligned_alloc(4096, 4096);
	a->data = aligned_alloc(4096, 4096);
	memset(a->sq, 0, 4096);
	memset(a->cq, 0, 4096);
	memset(a->data, 0, 4096);
	assert_int_equal(hd->ops->dma_register(hd, 0xa000, a->sq, 4096, &a->sq_bus, &len), 0);
	assert_int_equal(hd->ops->dma_register(hd, 0xb000, a->cq, 4096, &a->cq_bus, &len), 0);
	assert_int_equal(hd->ops->dma_register(hd, 0xc000, a->data, 4096, &a->data_bus, &len), 0);
	assert_int_equal(hd->ops->mmio_write(hd, 0, NVME_AQA, 4, 0x00030003), 0);
	assert_int_equal(hd->ops->mmio_write(hd, 0, NVME_ASQ, 8, a->sq_bus), 0);
	assert_int_equal(hd->ops->mmio_write(hd, 0, NVME_ACQ, 8, a->cq_bus), 0);
	assert_int_equal(hd->ops->mmio_write(hd, 0, NVME_CC, 4, 1 | (6u << 16) | (4u << 20)), 0);
	assert_int_equal(hd->ops->mmio_read(hd, 0, NVME_CSTS, 4, &v), 0);
	assert_int_equal(v & 1, 1);
}

/* Identify Controller into a->data; the completion raises vector 0. */
static void admin_identify(struct host_device *hd, struct admin *a, uint16_t cid)
{
	uint8_t *sqe = a->sq + 64 * a->tail;
	uint32_t dw0 = 0x06u | (uint32_t)cid << 16, cns = 1;

	memset(sqe, 0, 64);
	memcpy(sqe, &dw0, 4);
	memcpy(sqe + 24, &a->data_bus, 8);
	memcpy(sqe + 40, &cns, 4);
	a->tail = (a->tail + 1) % 4;
	assert_int_equal(hd->ops->mmio_write(hd, 0, NVME_SQ0_TAIL, 4, a->tail), 0);
	/* The sim completes inside the doorbell write: consume it so the 4-entry CQ never fills. */
	assert_int_equal(hd->ops->mmio_write(hd, 0, NVME_CQ0_HEAD, 4, a->tail), 0);
}

static void admin_free(struct admin *a)
{
	free(a->sq);
	free(a->cq);
	free(a->data);
}

static void test_interrupt_wakeup(void **state)
{
	struct fixture *f = *state;
	struct host_device *hd = f->hd;
	int fd = hd->ops->irq_wakeup_fd(hd);
	uint64_t pending[HD_IRQ_WORDS], mask[HD_IRQ_WORDS] = {1};
	struct dext_model_stats st;
	struct admin a = {0};
	unsigned n = 0;

	assert_true(fd >= 0);
	assert_int_equal(hd->ops->irq_read_pending(hd, pending), -EAGAIN); /* before setup */
	assert_int_equal(hd->ops->irq_setup(hd, &n), 0);
	assert_int_equal(n, SIM_NVME_VECTORS);
	assert_int_equal(hd->ops->irq_set_mask(hd, mask), 0);
	assert_false(readable(fd, 50));
	admin_setup(hd, &a);

	admin_identify(hd, &a, 7);
	assert_true(readable(fd, 5000));
	drain(fd);
	assert_int_equal(hd->ops->irq_read_pending(hd, pending), 0);
	assert_int_equal(pending[0], 1);
	assert_int_equal(pending[1] | pending[2] | pending[3], 0);
	/* The command really ran, with its DMA through the DART. */
	uint32_t dw3;
	memcpy(&dw3, a.cq + 12, 4);
	assert_int_equal(dw3 & 0xffff, 7);
	assert_int_equal((dw3 >> 16) & 1, 1);
	assert_int_equal(dw3 >> 17, 0);
	assert_int_equal(a.data[0] | a.data[1] << 8, SIM_NVME_VENDOR_ID);
	/* Read-and-clear. */
	assert_int_equal(hd->ops->irq_read_pending(hd, pending), 0);
	assert_int_equal(pending[0], 0);
	assert_false(readable(fd, 50));

	/* Re-armed after the read: the next completion wakes us again. */
	admin_identify(hd, &a, 8);
	assert_true(readable(fd, 5000));
	drain(fd);
	assert_int_equal(hd->ops->irq_read_pending(hd, pending), 0);
	assert_int_equal(pending[0], 1);

	/* Re-arming fails once: the bits read are still delivered; the next read re-arms. */
	admin_identify(hd, &a, 10);
	dext_model_fail_next(15, kIOReturnIPCError);
	assert_int_equal(hd->ops->irq_read_pending(hd, pending), 0);
	assert_int_equal(pending[0], 1);
	assert_int_equal(hd->ops->irq_read_pending(hd, pending), 0);
	assert_int_equal(pending[0], 0);
	admin_identify(hd, &a, 11);
	assert_true(readable(fd, 5000));
	drain(fd);
	assert_int_equal(hd->ops->irq_read_pending(hd, pending), 0);
	assert_int_equal(pending[0], 1);

	/* A masked vector never becomes pending and wakes nobody. */
	uint64_t none[HD_IRQ_WORDS] = {0};
	assert_int_equal(hd->ops->irq_set_mask(hd, none), 0);
	/*
	 * The previous completion's wake-up is written from the notification
	 * thread and may land after the drain above on a loaded machine (a
	 * spurious wake-up, which the interface allows): absorb it first.
	 */
	if (readable(fd, 200))
		drain(fd);
	admin_identify(hd, &a, 9);
	assert_false(readable(fd, 200));
	assert_int_equal(hd->ops->irq_read_pending(hd, pending), 0);
	assert_int_equal(pending[0], 0);

	dext_model_get_stats(&st);
	assert_true(st.waits_completed >= 2);
	assert_int_equal(st.calls[16], 3); /* the backend's own clear after setup, then ours */
	uint64_t dropped = st.waits_dropped, completed = st.waits_completed;
	hd->ops->destroy(hd);
	f->hd = NULL;
	usleep(100000);
	dext_model_get_stats(&st);
	assert_int_equal(st.waits_dropped, dropped + 1);     /* the armed wait, at close ... */
	assert_int_equal(st.waits_completed, completed); /* ... released, never completed */
	admin_free(&a);
}

/*
 * No lost wake-up: completions racing the re-arm (sometimes read at once,
 * sometimes only after the pipe) must each be seen within a bounded wait.
 * The pipe may wake spuriously; it may never stay silent over a pending bit.
 */
static void test_interrupt_no_lost_wakeup(void **state)
{
	struct fixture *f = *state;
	struct host_device *hd = f->hd;
	int fd = hd->ops->irq_wakeup_fd(hd);
	uint64_t pending[HD_IRQ_WORDS], mask[HD_IRQ_WORDS] = {1};
	struct admin a = {0};
	unsigned n, spurious = 0;

	assert_int_equal(hd->ops->irq_setup(hd, &n), 0);
	assert_int_equal(hd->ops->irq_set_mask(hd, mask), 0);
	admin_setup(hd, &a);
	for (unsigned i = 0; i < 300; i++) {
		bool seen = false;

		admin_identify(hd, &a, (uint16_t)i);
		if (i % 2) {
			assert_int_equal(hd->ops->irq_read_pending(hd, pending), 0);
			seen = pending[0] & 1;
		}
		for (int tries = 0; !seen && tries < 4; tries++) {
			if (!readable(fd, 5000))
				fail_msg("command %u: vector 0 pending but no wake-up within 5 s", i);
			drain(fd);
			assert_int_equal(hd->ops->irq_read_pending(hd, pending), 0);
			seen = pending[0] & 1;
			spurious += !seen;
		}
		assert_true(seen);
	}
	print_message("300 completions, %u spurious wake-ups\n", spurious);
	admin_free(&a);
}

/* ---- the model's own semantics, through raw IOKit calls ---- */

static io_service_t find_service_entry(uint64_t want)
{
	io_iterator_t it;
	io_service_t s, found = 0;
	uint64_t id;

	assert_int_equal(IOServiceGetMatchingServices(kIOMainPortDefault, IOServiceMatching("IOUserService"), &it), 0);
	while ((s = IOIteratorNext(it))) {
		if (!found && IORegistryEntryGetRegistryEntryID(s, &id) == 0 && id == want)
			found = s;
		else
			IOObjectRelease(s);
	}
	IOObjectRelease(it);
	return found;
}

static int completions;
static IOReturn last_result;
static void on_wait(void *refcon, IOReturn result)
{
	__atomic_store_n(&last_result, result, __ATOMIC_SEQ_CST);
	__atomic_add_fetch((int *)refcon, 1, __ATOMIC_SEQ_CST);
}

static void wait_for(int *counter, int value)
{
	for (int i = 0; i < 500 && __atomic_load_n(counter, __ATOMIC_SEQ_CST) < value; i++)
		usleep(10000);
	assert_int_equal(__atomic_load_n(counter, __ATOMIC_SEQ_CST), value);
}

static void test_model_semantics(void **state)
{
	struct fixture *f = *state;
	io_service_t svc = find_service_entry(f->service);
	io_connect_t c;
	uint64_t out[6], in[4];
	uint32_t n;
	mach_vm_address_t addr = 0;
	mach_vm_size_t size = 0;

	assert_int_not_equal(svc, 0);
	assert_int_equal(IOServiceOpen(svc, mach_task_self(), 1, &c), kIOReturnUnsupported); /* type 0 only */
	assert_int_equal(IOServiceOpen(svc, mach_task_self(), 0, &c), 0);
	IOObjectRelease(svc);

	/* Claims are refcounted over clients. */
	assert_int_equal(IOConnectCallScalarMethod(c, 1, NULL, 0, NULL, NULL), 0);
	assert_int_equal(dext_model_claims(f->service), 2);

	/* Wrong argument counts and unknown selectors. */
	n = 6;
	assert_int_equal(IOConnectCallScalarMethod(c, 8, in, 1, out, &n), kIOReturnBadArgument);
	n = 6;
	assert_int_equal(IOConnectCallScalarMethod(c, 18, NULL, 0, out, &n), kIOReturnUnsupported);
	n = 0;
	assert_int_equal(IOConnectCallScalarMethod(c, 15, NULL, 0, NULL, &n), kIOReturnBadArgument);

	/* DMA keys are per client; probing reads through the registration. */
	static uint64_t words[512] = {[3] = 0x1122334455667788ull};
	in[0] = 5;
	in[1] = (uintptr_t)words;
	in[2] = sizeof(words);
	n = 3;
	assert_int_equal(IOConnectCallScalarMethod(c, 5, in, 3, out, &n), 0);
	assert_int_equal(out[0], 1);
	assert_int_equal(out[2], sizeof(words));
	n = 3;
	assert_int_equal(IOConnectCallScalarMethod(c, 5, in, 3, out, &n), kIOReturnStillOpen);
	in[1] = 24;
	n = 1;
	assert_int_equal(IOConnectCallScalarMethod(c, 7, in, 2, out, &n), 0);
	assert_int_equal(out[0], 0x1122334455667788ull);
	in[1] = sizeof(words) - 4;
	n = 1;
	assert_int_equal(IOConnectCallScalarMethod(c, 7, in, 2, out, &n), kIOReturnOverrun);
	in[0] = 6;
	assert_int_equal(IOConnectCallScalarMethod(c, 6, in, 1, NULL, NULL), kIOReturnNotFound);

	/* The dext's own DMA buffer, memory type 0. */
	in[0] = 10000;
	in[1] = 4096;
	n = 6;
	assert_int_equal(IOConnectCallScalarMethod(c, 3, in, 2, out, &n), 0);
	assert_int_equal(out[0], 16384);
	assert_int_equal(out[2], 1);
	assert_ptr_not_equal(sim_dart_translate(sim_nvme_dart(f->sim), out[3], 16384, true), NULL);
	assert_int_equal(out[5], SIM_NVME_CLASS);
	assert_int_equal(IOConnectMapMemory64(c, 0, mach_task_self(), &addr, &size, kIOMapAnywhere), 0);
	assert_int_equal(size, 16384);
	assert_ptr_equal(sim_dart_translate(sim_nvme_dart(f->sim), out[3], 16384, true), (void *)(uintptr_t)addr);
	assert_int_equal(IOConnectCallScalarMethod(c, 4, NULL, 0, NULL, NULL), kIOReturnBusy); /* still mapped */
	assert_int_equal(IOConnectUnmapMemory64(c, 0, mach_task_self(), addr), 0);
	assert_int_equal(IOConnectCallScalarMethod(c, 4, NULL, 0, NULL, NULL), 0);
	assert_int_equal(IOConnectCallScalarMethod(c, 4, NULL, 0, NULL, NULL), kIOReturnNotFound);
	/* Mapping needs kIOMapAnywhere; the cache mode is the client's (the dext returns options 0). */
	assert_int_equal(IOConnectMapMemory64(c, 5, mach_task_self(), &addr, &size, 0), kIOReturnBadArgument);
	assert_int_equal(IOConnectMapMemory64(c, 5, mach_task_self(), &addr, &size,
					      kIOMapAnywhere | kIOMapWriteCombineCache),
			 0);
	assert_int_equal(IOConnectUnmapMemory64(c, 5, mach_task_self(), addr), 0);

	/* Interrupt state page (type 7), pending cleared on read, wait completing at once. */
	IONotificationPortRef port = IONotificationPortCreate(kIOMainPortDefault);
	dispatch_queue_t q = dispatch_queue_create("test", DISPATCH_QUEUE_SERIAL);
	uint64_t ref[kOSAsyncRef64Count] = {0};
	IONotificationPortSetDispatchQueue(port, q);
	ref[kIOAsyncCalloutFuncIndex] = (uintptr_t)on_wait;
	ref[kIOAsyncCalloutRefconIndex] = (uintptr_t)&completions;
	assert_int_equal(IOConnectCallAsyncMethod(c, 15, IONotificationPortGetMachPort(port), ref, kOSAsyncRef64Count,
						  NULL, 0, NULL, 0, NULL, NULL, NULL, NULL),
			 kIOReturnNotReady);
	assert_int_equal(IOConnectMapMemory64(c, 7, mach_task_self(), &addr, &size, kIOMapAnywhere),
			 kIOReturnNotReady); /* the page comes with SetupInterrupts */
	n = 1;
	assert_int_equal(IOConnectCallScalarMethod(c, 13, NULL, 0, out, &n), 0);
	assert_int_equal(out[0], SIM_NVME_VECTORS);
	uint64_t mask[4] = {1, 0, 0, 0x8000000000000000ull};
	assert_int_equal(IOConnectCallScalarMethod(c, 16, mask, 4, NULL, NULL), 0);
	assert_int_equal(IOConnectMapMemory64(c, 7, mach_task_self(), &addr, &size, kIOMapAnywhere), 0);
	/* Shared with the dext (here: its interrupt thread): read atomically. */
	uint64_t *page = (uint64_t *)(uintptr_t)addr;
#define PAGE(i) __atomic_load_n(&page[i], __ATOMIC_ACQUIRE)
	assert_int_equal(PAGE(4), 1);
	assert_int_equal(PAGE(7), 0x8000000000000000ull);

	struct admin a = {0};
	admin_setup(f->hd, &a);
	admin_identify(f->hd, &a, 1); /* vector 0 becomes pending before any wait */
	for (int i = 0; i < 500 && !PAGE(0); i++)
		usleep(10000);
	assert_int_equal(PAGE(0), 1);
	assert_int_equal(IOConnectCallAsyncMethod(c, 15, IONotificationPortGetMachPort(port), ref, kOSAsyncRef64Count,
						  NULL, 0, NULL, 0, NULL, NULL, NULL, NULL),
			 0);
	wait_for(&completions, 1); /* at once: a bit was already pending */
	assert_int_equal(__atomic_load_n(&last_result, __ATOMIC_SEQ_CST), kIOReturnSuccess);
	n = 4;
	assert_int_equal(IOConnectCallScalarMethod(c, 14, NULL, 0, out, &n), 0);
	assert_int_equal(out[0], 1);
	assert_int_equal(PAGE(0), 0);
	n = 4;
	assert_int_equal(IOConnectCallScalarMethod(c, 14, NULL, 0, out, &n), 0);
	assert_int_equal(out[0], 0);
	/* An armed wait is released without a completion when its client closes. */
	assert_int_equal(IOConnectCallAsyncMethod(c, 15, IONotificationPortGetMachPort(port), ref, kOSAsyncRef64Count,
						  NULL, 0, NULL, 0, NULL, NULL, NULL, NULL),
			 0);
	assert_int_equal(IOConnectUnmapMemory64(c, 7, mach_task_self(), addr), 0);
	assert_int_equal(IOServiceClose(c), 0);
	usleep(200000);
	assert_int_equal(__atomic_load_n(&completions, __ATOMIC_SEQ_CST), 1);
	assert_int_equal(dext_model_claims(f->service), 1);
	IONotificationPortDestroy(port);
	dispatch_release(q);
	admin_free(&a);

	/* Terminate (selector 2): the service leaves matching and refuses calls. */
	svc = find_service_entry(f->service);
	assert_int_equal(IOServiceOpen(svc, mach_task_self(), 0, &c), 0);
	IOObjectRelease(svc);
	assert_int_equal(IOConnectCallScalarMethod(c, 2, NULL, 0, NULL, NULL), 0);
	n = 6;
	assert_int_equal(IOConnectCallScalarMethod(c, 0, NULL, 0, out, &n), kIOReturnNotAttached);
	assert_int_equal(find_service_entry(f->service), 0);
	IOServiceClose(c);
}


/* ---- issue 15: the backend against the corrected model ---- */

/* A function with cheap DMA (no DART), for counting tests: bus address = host address. */
static int cheap_dma_register(struct host_device *hd, uint64_t key, void *va, uint64_t size, uint64_t *bus,
			      uint64_t *len)
{
	(void)hd;
	(void)key;
	*bus = (uint64_t)(uintptr_t)va;
	*len = size;
	return 0;
}
static int cheap_dma_unregister(struct host_device *hd, uint64_t key)
{
	(void)hd;
	(void)key;
	return 0;
}
static const struct host_device_ops cheap_ops = {
	.identity = fake_identity,
	.claim = fake_claim,
	.release = fake_release,
	.bar_info = fake_bar_info,
	.bar_map = fake_bar_map,
	.config_read = fake_config_read,
	.config_write = fake_config_write,
	.dma_register = cheap_dma_register,
	.dma_unregister = cheap_dma_unregister,
};

static void *reserve(uint64_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	assert_true(p != MAP_FAILED);
	return p;
}

/*
 * Item 1: about 1.5 GiB live is refused with -ENOSPC before selector 5; the
 * model, like the dext, would pass it on to the DART (an overcommit: a host
 * panic on a Mac).
 */
static void test_dart_bytes_enforced_before_the_dext(void **state)
{
	struct fixture *f = *state;
	struct host_device *hd = f->hd;
	uint64_t size = (3ull << 29) + 16384, bus, len;
	uint8_t *mem = reserve(size);
	struct dext_model_stats a, b;
	struct hd_dma_stats ds;

	assert_int_equal(hd->ops->dma_register(hd, 1, mem, 1ull << 30, &bus, &len), 0);
	assert_int_equal(len, 1ull << 30);
	dext_model_get_stats(&a);
	assert_int_equal(hd->ops->dma_register(hd, 2, mem + (1ull << 30), (1ull << 29) + 16384, &bus, &len),
			 -ENOSPC);
	assert_non_null(strstr(host_device_error(hd), "DART's limits"));
	dext_model_get_stats(&b);
	assert_int_equal(b.calls[5], a.calls[5]); /* never reached the dext */
	/* Exactly the limit is allowed; a byte more is not. */
	assert_int_equal(hd->ops->dma_register(hd, 2, mem + (1ull << 30), 1ull << 29, &bus, &len), 0);
	dext_model_get_stats(&a);
	assert_int_equal(hd->ops->dma_register(hd, 3, mem + (3ull << 29), 16384, &bus, &len), -ENOSPC);
	dext_model_get_stats(&b);
	assert_int_equal(b.calls[5], a.calls[5]);
	/* One region larger than the limit by itself. */
	assert_int_equal(hd->ops->dma_unregister(hd, 1), 0);
	assert_int_equal(hd->ops->dma_unregister(hd, 2), 0);
	assert_int_equal(hd->ops->dma_register(hd, 4, mem, size, &bus, &len), -ENOSPC);
	dext_model_get_stats(&a);
	assert_int_equal(a.calls[5], b.calls[5]);
	assert_int_equal(a.dart_overcommits, 0);
	assert_int_equal(hd->ops->dma_register(hd, 3, mem + (3ull << 29), 16384, &bus, &len), 0);
	assert_int_equal(hd->ops->dma_stats(hd, &ds), 0);
	assert_int_equal(ds.live_bytes, 16384);
	assert_int_equal(ds.register_failures, 3);
	munmap(mem, size);
}

/* Item 1: mapping 65,537 is refused before selector 5. */
static void test_dart_mappings_enforced_before_the_dext(void **state)
{
	(void)state;
	struct host_device fake = {.ops = &cheap_ops};
	struct dext_model_service_config cfg = {.dev = &fake, .host_root = "tb-count", .set_location = true, .bus = 0x21};
	struct dext_model_stats a, b;
	uint64_t sid, bus, len, n = DARWIN_DART_MAX_MAPPINGS;
	uint8_t *mem = reserve(n * 16384);
	char err[256];

	assert_int_equal(dext_model_publish(&cfg, &sid, err, sizeof(err)), 0);
	struct host_device *hd = must_open("21:00.0");
	assert_int_equal(hd->ops->claim(hd), 0);
	for (uint64_t i = 0; i < n; i++) {
		if (hd->ops->dma_register(hd, i, mem + i * 16384, 16384, &bus, &len))
			fail_msg("register %" PRIu64 ": %s", i, host_device_error(hd));
	}
	dext_model_get_stats(&a);
	assert_int_equal(hd->ops->dma_register(hd, n, mem, 4096, &bus, &len), -ENOSPC);
	assert_non_null(strstr(host_device_error(hd), "65536 mappings"));
	dext_model_get_stats(&b);
	assert_int_equal(b.calls[5], a.calls[5]);
	assert_int_equal(b.dart_overcommits, 0);
	assert_int_equal(hd->ops->dma_unregister(hd, 7), 0);
	assert_int_equal(hd->ops->dma_register(hd, n, mem, 4096, &bus, &len), 0);
	hd->ops->destroy(hd);
	dext_model_unpublish(sid, true);
	munmap(mem, n * 16384);
}

/*
 * Item 1: a register above 1.5 GiB reaches the model's DART as the dext
 * would send it (chunks of 1.5 GiB, only the first chunk's range returned);
 * beyond the DART's capacity it is an overcommit.  The backend, even with
 * its limit raised, refuses a short bus range.
 */
static void test_model_register_above_the_cap(void **state)
{
	(void)state;
	struct host_device fake = {.ops = &cheap_ops};
	struct dext_model_service_config cfg = {
		.dev = &fake, .host_root = "tb-big", .set_location = true, .bus = 0x22, .dart_max_bytes = 3ull << 30,
	};
	uint64_t sid, size = 2ull << 30, bus, len, in[3], out[3];
	uint8_t *mem = reserve(size);
	struct dext_model_stats a, b;
	struct hd_dma_stats ds;
	char err[256];
	uint32_t n;

	assert_int_equal(dext_model_publish(&cfg, &sid, err, sizeof(err)), 0);
	struct host_device *hd = must_open("22:00.0");
	assert_int_equal(hd->ops->claim(hd), 0);
	io_service_t svc = find_service_entry(sid);
	io_connect_t c;
	assert_int_equal(IOServiceOpen(svc, mach_task_self(), 0, &c), 0);
	IOObjectRelease(svc);
	assert_int_equal(IOConnectCallScalarMethod(c, 1, NULL, 0, NULL, NULL), 0);
	in[0] = 1;
	in[1] = (uintptr_t)mem;
	in[2] = size;
	n = 3;
	assert_int_equal(IOConnectCallScalarMethod(c, 5, in, 3, out, &n), 0);
	assert_int_equal(out[0], 1);
	assert_int_equal(out[1], (uintptr_t)mem);
	assert_int_equal(out[2], 3ull << 29); /* the first chunk only */
	/* No cap in the dext: a second one goes to the DART, which cannot hold it. */
	in[0] = 2;
	n = 3;
	dext_model_get_stats(&a);
	assert_int_equal(IOConnectCallScalarMethod(c, 5, in, 3, out, &n), kIOReturnNoResources);
	dext_model_get_stats(&b);
	assert_int_equal(b.dart_overcommits, a.dart_overcommits + 1);
	IOServiceClose(c);

	/* The backend with a raised limit: the short bus range is refused and undone. */
	hd->limits.max_bytes = 4ull << 30;
	assert_int_equal(hd->ops->dma_register(hd, 9, mem, size, &bus, &len), -ERANGE);
	assert_non_null(strstr(host_device_error(hd), "one contiguous segment"));
	dext_model_get_stats(&a);
	assert_int_equal(a.live_dma, 0);
	assert_int_equal(hd->ops->dma_stats(hd, &ds), 0);
	assert_int_equal(ds.live_mappings, 0);
	hd->ops->destroy(hd);
	dext_model_unpublish(sid, true);
	munmap(mem, size);
}

/* Item 2: any GetBARInfo failure means "not implemented", except a transport error (the dext is gone). */
static void test_unused_bar_any_error(void **state)
{
	struct fixture *f = *state;
	struct host_device *hd = f->hd;
	struct hd_bar_info bi;
	struct dext_model_stats a, b;
	uint32_t v;

	/* The model answers BAR1 (unused) and BAR5 (upper half of BAR4) with kIOReturnError. */
	assert_int_equal(hd->ops->bar_info(hd, 1, &bi), 0);
	assert_int_equal(bi.type, HD_BAR_UNUSED);
	assert_int_equal(hd->ops->bar_info(hd, 5, &bi), 0);
	assert_int_equal(bi.type, HD_BAR_UNUSED);
	dext_model_fail_next(10, kIOReturnUnsupported);
	assert_int_equal(hd->ops->bar_info(hd, 2, &bi), 0);
	assert_int_equal(bi.type, HD_BAR_UNUSED);
	dext_model_fail_next(10, (IOReturn)0xe00002ff);
	assert_int_equal(hd->ops->bar_info(hd, 3, &bi), 0);
	assert_int_equal(bi.type, HD_BAR_UNUSED);
	/* An IPC failure: the dext could not be reached; not cached as unused. */
	dext_model_fail_next(10, kIOReturnIPCError);
	assert_int_equal(hd->ops->bar_info(hd, 4, &bi), -ENODEV);
	dext_model_fail_next(10, kIOReturnIPCError);
	assert_int_equal(hd->ops->bar_info(hd, 4, &bi), -ENODEV);
	assert_int_equal(hd->ops->bar_info(hd, 4, &bi), 0);
	assert_int_equal(bi.type, HD_BAR_MEM64);
	/* A dead port or a dead dext: gone for good, and nothing more is sent. */
	dext_model_fail_next(10, MACH_SEND_INVALID_DEST);
	assert_int_equal(hd->ops->bar_info(hd, 0, &bi), -ENODEV);
	assert_non_null(strstr(host_device_error(hd), "MACH_SEND_INVALID_DEST"));
	assert_non_null(strstr(host_device_error(hd), "device is gone"));
	assert_true(readable(hd->ops->irq_wakeup_fd(hd), 1000));
	dext_model_get_stats(&a);
	assert_int_equal(hd->ops->config_read(hd, 0, 4, &v), -ENODEV);
	assert_int_equal(hd->ops->bar_info(hd, 0, &bi), -ENODEV);
	dext_model_get_stats(&b);
	assert_int_equal(b.calls[8], a.calls[8]);
	assert_int_equal(b.calls[10], a.calls[10]);
}

/* Item 5: MIG_SERVER_DIED is a dead dext too. */
static void test_mig_server_died(void **state)
{
	struct fixture *f = *state;
	struct host_device *hd = f->hd;
	struct dext_model_stats a, b;

	dext_model_fail_next(17, MIG_SERVER_DIED);
	assert_int_equal(hd->ops->reset(hd), -ENODEV);
	assert_non_null(strstr(host_device_error(hd), "MIG_SERVER_DIED"));
	assert_non_null(strstr(host_device_error(hd), "device is gone"));
	assert_true(readable(hd->ops->irq_wakeup_fd(hd), 1000));
	dext_model_get_stats(&a);
	assert_int_equal(hd->ops->reset(hd), -ENODEV);
	dext_model_get_stats(&b);
	assert_int_equal(b.calls[17], a.calls[17]);
}

/* Item 3: selector 13 once per function; the dext's StillOpen on a second call never surfaces. */
static void test_irq_setup_once(void **state)
{
	struct fixture *f = *state;
	struct host_device *hd = f->hd, *again = must_open("03:00.0");
	struct dext_model_stats a, st;
	unsigned n1 = 0, n2 = 0, n3 = 0;

	dext_model_get_stats(&a);
	assert_int_equal(hd->ops->irq_setup(hd, &n1), 0);
	assert_int_equal(hd->ops->irq_setup(hd, &n2), 0);
	assert_int_equal(again->ops->irq_setup(again, &n3), 0); /* the same connection */
	assert_int_equal(n1, SIM_NVME_VECTORS);
	assert_int_equal(n2, n1);
	assert_int_equal(n3, n1);
	dext_model_get_stats(&st);
	assert_int_equal(st.calls[13] - a.calls[13], 1);
	again->ops->destroy(again);
}

/*
 * Item 3: the dext's enable mask starts all ones; through the backend, as
 * with the simulator, no vector is pending before the caller enables it.
 */
static void test_irq_nothing_pending_before_the_mask(void **state)
{
	struct fixture *f = *state;
	struct host_device *hd = f->hd;
	uint64_t pending[HD_IRQ_WORDS], mask[HD_IRQ_WORDS] = {1};
	struct admin a = {0};
	unsigned n;

	assert_int_equal(hd->ops->irq_setup(hd, &n), 0);
	admin_setup(hd, &a);
	admin_identify(hd, &a, 1);
	usleep(100000);
	assert_int_equal(hd->ops->irq_read_pending(hd, pending), 0);
	assert_int_equal(pending[0], 0);
	assert_int_equal(hd->ops->irq_set_mask(hd, mask), 0);
	admin_identify(hd, &a, 2);
	assert_true(readable(hd->ops->irq_wakeup_fd(hd), 5000));
	assert_int_equal(hd->ops->irq_read_pending(hd, pending), 0);
	assert_int_equal(pending[0], 1);
	admin_free(&a);
}

static int wait_a, wait_b;
static void on_wait_count(void *refcon, IOReturn result)
{
	(void)result;
	__atomic_add_fetch((int *)refcon, 1, __ATOMIC_SEQ_CST);
}

/*
 * Item 3, the model against the dext's source: per-client setup refused a
 * second time (StillOpen), a 16 KiB state page with the enable words all
 * ones, a vector pending before any mask, and a second wait replacing the
 * first silently.
 */
static void test_model_interrupt_semantics(void **state)
{
	struct fixture *f = *state;
	io_service_t svc = find_service_entry(f->service);
	io_connect_t c;
	uint64_t out[4], ref[kOSAsyncRef64Count] = {0};
	mach_vm_address_t addr = 0;
	mach_vm_size_t size = 0;
	struct dext_model_stats a, b;
	struct admin adm = {0};
	uint32_t n;

	assert_int_equal(IOServiceOpen(svc, mach_task_self(), 0, &c), 0);
	IOObjectRelease(svc);
	assert_int_equal(IOConnectCallScalarMethod(c, 1, NULL, 0, NULL, NULL), 0);
	n = 1;
	assert_int_equal(IOConnectCallScalarMethod(c, 13, NULL, 0, out, &n), 0);
	n = 1;
	assert_int_equal(IOConnectCallScalarMethod(c, 13, NULL, 0, out, &n), kIOReturnStillOpen);
	assert_int_equal(IOConnectMapMemory64(c, 7, mach_task_self(), &addr, &size, kIOMapAnywhere), 0);
	assert_int_equal(size, 16384);
	uint64_t *page = (uint64_t *)(uintptr_t)addr;
	for (unsigned i = 0; i < 4; i++)
		assert_true(__atomic_load_n(&page[4 + i], __ATOMIC_ACQUIRE) == UINT64_MAX);

	/* Before any SetIRQMask, a vector that fires is pending. */
	admin_setup(f->hd, &adm);
	admin_identify(f->hd, &adm, 1);
	for (int i = 0; i < 500 && !__atomic_load_n(&page[0], __ATOMIC_ACQUIRE); i++)
		usleep(10000);
	n = 4;
	assert_int_equal(IOConnectCallScalarMethod(c, 14, NULL, 0, out, &n), 0);
	assert_int_equal(out[0], 1);

	/* A second wait replaces the first: only the second completes. */
	IONotificationPortRef port = IONotificationPortCreate(kIOMainPortDefault);
	dispatch_queue_t q = dispatch_queue_create("test", DISPATCH_QUEUE_SERIAL);
	IONotificationPortSetDispatchQueue(port, q);
	dext_model_get_stats(&a);
	ref[kIOAsyncCalloutFuncIndex] = (uintptr_t)on_wait_count;
	ref[kIOAsyncCalloutRefconIndex] = (uintptr_t)&wait_a;
	assert_int_equal(IOConnectCallAsyncMethod(c, 15, IONotificationPortGetMachPort(port), ref, kOSAsyncRef64Count,
						  NULL, 0, NULL, 0, NULL, NULL, NULL, NULL),
			 0);
	ref[kIOAsyncCalloutRefconIndex] = (uintptr_t)&wait_b;
	assert_int_equal(IOConnectCallAsyncMethod(c, 15, IONotificationPortGetMachPort(port), ref, kOSAsyncRef64Count,
						  NULL, 0, NULL, 0, NULL, NULL, NULL, NULL),
			 0);
	admin_identify(f->hd, &adm, 2);
	wait_for(&wait_b, 1);
	usleep(100000);
	assert_int_equal(__atomic_load_n(&wait_a, __ATOMIC_SEQ_CST), 0);
	dext_model_get_stats(&b);
	assert_int_equal(b.waits_replaced, a.waits_replaced + 1);
	assert_int_equal(IOConnectUnmapMemory64(c, 7, mach_task_self(), addr), 0);
	IOServiceClose(c);
	IONotificationPortDestroy(port);
	dispatch_release(q);
	admin_free(&adm);
}

/*
 * Item 5: the service terminating is noticed at once through the interest
 * notification: the wake-up fd becomes readable though the dext completes
 * no wait, and every verb then fails with -ENODEV without calling it.
 */
static void removal_noticed(struct fixture *f, bool crash)
{
	struct host_device *hd = f->hd;
	int fd = hd->ops->irq_wakeup_fd(hd);
	uint64_t pending[HD_IRQ_WORDS], mask[HD_IRQ_WORDS] = {1}, bus, len;
	struct dext_model_stats a, b;
	static uint8_t buf[16384];
	unsigned n;
	uint32_t v;

	assert_int_equal(hd->ops->irq_setup(hd, &n), 0);
	assert_int_equal(hd->ops->irq_set_mask(hd, mask), 0);
	assert_false(readable(fd, 50));
	dext_model_get_stats(&a);
	if (crash)
		assert_int_equal(dext_model_crash(f->service), 0);
	else
		assert_int_equal(dext_model_unpublish(f->service, true), 0);
	if (!readable(fd, 5000))
		fail_msg("the removal woke nobody");
	dext_model_get_stats(&b);
	assert_int_equal(b.waits_completed, a.waits_completed); /* no completion says "gone" */
	assert_int_equal(b.waits_dropped, a.waits_dropped + 1);
	assert_int_equal(b.interest_sent, a.interest_sent + 1);
	assert_int_equal(hd->ops->irq_read_pending(hd, pending), -ENODEV);
	assert_non_null(strstr(host_device_error(hd), "device is gone"));
	assert_int_equal(hd->ops->config_read(hd, 0, 4, &v), -ENODEV);
	assert_int_equal(hd->ops->dma_register(hd, 1, buf, sizeof(buf), &bus, &len), -ENODEV);
	assert_int_equal(hd->ops->reset(hd), -ENODEV);
	dext_model_get_stats(&a);
	assert_int_equal(a.calls[14], b.calls[14]);
	assert_int_equal(a.calls[8], b.calls[8]);
	assert_int_equal(a.calls[5], b.calls[5]);
	assert_int_equal(a.calls[17], b.calls[17]);
}

static void test_removal_noticed(void **state)
{
	removal_noticed(*state, false);
}

static void test_dext_crash_noticed(void **state)
{
	removal_noticed(*state, true);
}

/*
 * Item 6: memory that is copy-on-write for the dext is refused loudly on the
 * first registration (the probe reads the old page), and the word written
 * for the check is put back.
 */
static void test_copy_on_write_refused(void **state)
{
	(void)state;
	struct host_device *sim = sim_new(), *hd;
	struct dext_model_service_config cfg = {
		.dev = sim, .host_root = "tb-cow", .set_location = true, .bus = 0x23, .copy_on_write = true,
	};
	uint8_t *buf = aligned_alloc(16384, 16384), before[64];
	struct dext_model_stats a, b;
	struct hd_dma_stats ds;
	uint64_t sid, bus, len;
	char err[256];

	for (unsigned i = 0; i < 16384; i++)
		buf[i] = (uint8_t)(i * 7 + 1);
	memcpy(before, buf, sizeof(before));
	assert_int_equal(dext_model_publish(&cfg, &sid, err, sizeof(err)), 0);
	hd = must_open("23:00.0");
	assert_int_equal(hd->ops->claim(hd), 0);
	dext_model_get_stats(&a);
	assert_int_equal(hd->ops->dma_register(hd, 0x10, buf + 4, 8192, &bus, &len), -EFAULT);
	assert_non_null(strstr(host_device_error(hd), "copy-on-write"));
	assert_non_null(strstr(host_device_error(hd), "in-process devices are the supported path on macOS"));
	dext_model_get_stats(&b);
	assert_int_equal(b.calls[7] - a.calls[7], 1); /* probed once */
	assert_int_equal(b.calls[6] - a.calls[6], 1); /* and undone */
	assert_int_equal(b.live_dma, a.live_dma);
	assert_memory_equal(buf, before, sizeof(before)); /* the checked word is back */
	/* Refused from now on, without asking the dext. */
	assert_int_equal(hd->ops->dma_register(hd, 0x11, buf, 16384, &bus, &len), -EFAULT);
	dext_model_get_stats(&a);
	assert_int_equal(a.calls[5], b.calls[5]);
	assert_int_equal(hd->ops->dma_stats(hd, &ds), 0);
	assert_int_equal(ds.live_mappings, 0);
	assert_int_equal(ds.register_failures, 2);
	hd->ops->destroy(hd);
	dext_model_unpublish(sid, true);
	sim->ops->destroy(sim);
	free(buf);
}

/* Item 6: ordinary memory passes the check once; read-only memory is never written (checked later). */
static void test_copy_on_write_check_once(void **state)
{
	struct fixture *f = *state;
	struct host_device *hd = f->hd;
	uint8_t *ro = mmap(NULL, 16384, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *rw = aligned_alloc(16384, 16384);
	struct dext_model_stats a, b;
	uint64_t bus, len;

	assert_true(ro != MAP_FAILED);
	memset(rw, 0x3c, 16384);
	dext_model_get_stats(&a);
	assert_int_equal(hd->ops->dma_register(hd, 1, ro, 16384, &bus, &len), 0); /* no fault, no probe */
	dext_model_get_stats(&b);
	assert_int_equal(b.calls[7], a.calls[7]);
	assert_int_equal(hd->ops->dma_register(hd, 2, rw + 3, 4, &bus, &len), 0); /* no aligned word inside */
	dext_model_get_stats(&a);
	assert_int_equal(a.calls[7], b.calls[7]);
	assert_int_equal(hd->ops->dma_register(hd, 3, rw + 8, 64, &bus, &len), 0);
	dext_model_get_stats(&b);
	assert_int_equal(b.calls[7], a.calls[7] + 1);
	assert_int_equal(rw[8], 0x3c);
	assert_int_equal(hd->ops->dma_register(hd, 4, rw + 4096, 4096, &bus, &len), 0);
	dext_model_get_stats(&a);
	assert_int_equal(a.calls[7], b.calls[7]); /* once per connection */
	munmap(ro, 16384);
	hd->ops->destroy(hd);
	f->hd = NULL;
	free(rw);
}

/* Item 6: the startup line serve logs on macOS names the supported path. */
static void test_serve_note(void **state)
{
	(void)state;
	char path[] = "/tmp/vfa-darwin-note-XXXXXX", text[1024] = "";
	int fd = mkstemp(path), saved = dup(2);
	ssize_t n;

	assert_true(fd >= 0 && saved >= 0);
	fflush(stderr);
	assert_true(dup2(fd, 2) >= 0);
	darwin_log_serve_note();
	fflush(stderr);
	assert_true(dup2(saved, 2) >= 0);
	close(saved);
	n = pread(fd, text, sizeof(text) - 1, 0);
	close(fd);
	unlink(path);
	assert_true(n > 0);
	assert_non_null(strstr(text, "in-process devices are the supported path on macOS"));
	assert_non_null(strstr(text, "copy-on-write"));
}

/* Item 7: an IOServiceOpen failure is reported with its code and hint, not as "no service". */
static void test_open_failure_reported(void **state)
{
	(void)state;
	struct host_device *s1 = sim_new(), *s2 = sim_new();
	uint64_t id1 = publish(s1, "tb-ent", 0x24, 0, 0);
	struct dext_model_service_config cfg = {
		.dev = s2, .host_root = "tb-ent", .set_location = true, .bus = 0x25, .hide_pci_properties = true,
	};
	uint64_t id2;
	char err[512];

	/* Found in the registry, refused when opened. */
	dext_model_fail_next(DEXT_MODEL_FAIL_OPEN, kIOReturnNotPermitted);
	assert_null(darwin_open("24:00.0", err, sizeof(err)));
	assert_non_null(strstr(err, "IOServiceOpen failed: kIOReturnNotPermitted"));
	assert_non_null(strstr(err, "com.apple.developer.driverkit.userclient-access"));
	assert_int_equal(dext_model_publish(&cfg, &id2, err, sizeof(err)), 0);
	/* Not in the registry: opened to ask, refused, and the last refusal reported. */
	dext_model_fail_next(DEXT_MODEL_FAIL_OPEN, kIOReturnNotPrivileged);
	assert_null(darwin_open("26:00.0@tb-ent", err, sizeof(err)));
	assert_non_null(strstr(err, "no VFIOUserPCIDriver service for 26:00.0"));
	assert_non_null(strstr(err, "1 could not be opened, the last with kIOReturnNotPrivileged"));
	assert_non_null(strstr(err, "userclient-access"));
	dext_model_unpublish(id1, true);
	dext_model_unpublish(id2, true);
	s1->ops->destroy(s1);
	s2->ops->destroy(s2);
}

/* Item 8: the identity comes from the registry: only the wanted service is opened. */
static void test_identity_from_registry(void **state)
{
	struct fixture *f = *state;
	struct host_device *s1 = sim_new(), *s2 = sim_new(), *hd;
	uint64_t id1 = publish(s1, "tb-reg", 0x31, 0, 0);
	uint64_t id2 = publish(s2, "tb-reg", 0x32, 0, 0);
	struct dext_model_stats a, b;
	struct hd_identity id;

	(void)f;
	dext_model_get_stats(&a);
	hd = must_open("32:00.0");
	dext_model_get_stats(&b);
	assert_int_equal(b.service_opens - a.service_opens, 1);
	assert_int_equal(hd->ops->identity(hd, &id), 0);
	assert_int_equal(id.bus, 0x32);
	assert_int_equal(id.vendor_id, SIM_NVME_VENDOR_ID);
	assert_int_equal(id.class_code, SIM_NVME_CLASS);
	hd->ops->destroy(hd);
	dext_model_unpublish(id1, true);
	dext_model_unpublish(id2, true);
	s1->ops->destroy(s1);
	s2->ops->destroy(s2);
}

/* Item 8: without the registry's identity, the service is opened and asked (selector 0). */
static void test_identity_fallback(void **state)
{
	(void)state;
	struct host_device *s1 = sim_new(), *hd;
	struct dext_model_service_config cfg = {
		.dev = s1, .host_root = "tb-hid", .set_location = true, .bus = 0x33, .hide_pci_properties = true,
	};
	struct dext_model_stats a, b;
	uint64_t id1;
	char err[256];

	assert_int_equal(dext_model_publish(&cfg, &id1, err, sizeof(err)), 0);
	dext_model_get_stats(&a);
	hd = must_open("33:00.0");
	dext_model_get_stats(&b);
	assert_int_equal(b.service_opens - a.service_opens, 1);
	assert_int_equal(b.calls[0] - a.calls[0], 1);
	hd->ops->destroy(hd);
	dext_model_unpublish(id1, true);
	s1->ops->destroy(s1);
}

/* ---- "sim-dext:" ---- */

static void test_sim_dext(void **state)
{
	(void)state;
	char err[256] = "";
	struct host_device *hd = host_device_open("sim-dext:nvme,size=2M,seed=3", err, sizeof(err));
	struct hd_identity id;
	struct hd_dma_stats ds;
	static uint8_t buf[8192];
	uint64_t bus, len, v;
	struct dext_model_stats st;

	if (!hd)
		fail_msg("sim-dext: %s", err);
	assert_int_equal(hd->ops->claim(hd), 0);
	assert_int_equal(hd->ops->identity(hd, &id), 0);
	assert_int_equal(id.vendor_id, SIM_NVME_VENDOR_ID);
	assert_false(hd->identity_dma);
	assert_int_equal(hd->limits.granule, 16384);
	assert_int_equal(hd->ops->mmio_read(hd, 0, 8, 4, &v), 0);
	assert_int_equal(v, 0x00010400);
	assert_int_equal(hd->ops->dma_register(hd, 1, buf, sizeof(buf), &bus, &len), 0);
	assert_int_equal(hd->ops->dma_stats(hd, &ds), 0);
	assert_int_equal(ds.live_mappings, 1);
	/* Its service is out of matching: a second open cannot find it. */
	assert_null(darwin_open("01:00.0", err, sizeof(err)));
	hd->ops->destroy(hd);
	dext_model_get_stats(&st);
	assert_int_equal(st.services_live, 1); /* the fixture's; the sim-dext one is gone */

	assert_null(host_device_open("sim-dext:nvme,dart=identity", err, sizeof(err)));
	assert_non_null(strstr(err, "always translates"));
	assert_null(host_device_open("sim-dext:nvme,bogus=1", err, sizeof(err)));
	assert_non_null(strstr(err, "bogus"));
	assert_null(host_device_open("sim-dext:gpu", err, sizeof(err)));
	assert_non_null(strstr(err, "sim-dext:nvme"));
	assert_null(host_device_open("03:00.0", err, sizeof(err)));
	assert_non_null(strstr(err, "macOS"));
}


/* ---- surprise removal (issue 14, item 3) ---- */

/* Two registrations live, as a companion would hold them. */
static void register_two(struct host_device *hd, uint8_t *buf)
{
	uint64_t bus, len;
	struct hd_dma_stats ds;

	assert_int_equal(hd->ops->dma_register(hd, 0x1000, buf, 16384, &bus, &len), 0);
	assert_int_equal(hd->ops->dma_register(hd, 0x2000, buf + 16384, 16384, &bus, &len), 0);
	assert_int_equal(hd->ops->dma_stats(hd, &ds), 0);
	assert_int_equal(ds.live_mappings, 2);
}

/* After removal: unregister releases what was held (0), then -ENOENT; live counters reach 0. */
static void unregister_after_removal(struct host_device *hd)
{
	struct hd_dma_stats ds;

	assert_int_equal(hd->ops->dma_unregister(hd, 0x1000), 0);
	assert_int_equal(hd->ops->dma_unregister(hd, 0x1000), -ENOENT);
	assert_int_equal(hd->ops->dma_unregister(hd, 0x2000), 0);
	assert_int_equal(hd->ops->dma_unregister(hd, 0x3000), -ENOENT);
	assert_int_equal(hd->ops->dma_stats(hd, &ds), 0);
	assert_int_equal(ds.live_mappings, 0);
	assert_int_equal(ds.live_bytes, 0);
	assert_true(hd->ops->irq_wakeup_fd(hd) >= 0);
}

/*
 * The dext's service terminates (the function was unplugged): the wake-up
 * fires, the next verb marks the host device gone with the reason,
 * nothing more reaches the dext, and the registrations are forgotten
 * (they died with the client), so the live counters reach 0.
 */
static void test_termination_marks_gone(void **state)
{
	struct fixture *f = *state;
	struct host_device *hd = f->hd;
	static uint8_t buf[65536] __attribute__((aligned(16384)));
	uint64_t pending[HD_IRQ_WORDS];
	struct dext_model_stats a, b;
	unsigned n;

	assert_int_equal(hd->ops->irq_setup(hd, &n), 0);
	register_two(hd, buf);
	assert_true(host_device_present(hd));
	assert_null(host_device_removal(hd));
	assert_int_equal(dext_model_unpublish(f->service, true), 0);
	assert_true(readable(hd->ops->irq_wakeup_fd(hd), 5000));
	assert_true(host_device_present(hd)); /* marked by the verb the wake-up leads to */
	assert_int_equal(hd->ops->irq_read_pending(hd, pending), -ENODEV);
	assert_false(host_device_present(hd));
	assert_non_null(strstr(host_device_removal(hd), "terminated"));
	dext_model_get_stats(&a);
	unregister_after_removal(hd);
	dext_model_get_stats(&b);
	assert_int_equal(b.calls[6], a.calls[6]); /* the connection is dead: nothing sent */
}

/*
 * The device falls off the bus while the dext stays (kIOReturnNoDevice,
 * then kIOReturnNotResponding in the second round): the first verb to see
 * it marks the function gone and wakes the loop; later verbs do not reach
 * the dext; UnregisterDMARegion still does, so the dext's DART lets go.
 */
static void device_lost(struct fixture *f, IOReturn kr, const char *name)
{
	struct host_device *hd = f->hd;
	static uint8_t buf[65536] __attribute__((aligned(16384)));
	uint64_t v64, pending[HD_IRQ_WORDS];
	struct dext_model_stats a, b;
	uint32_t v;
	unsigned n;

	assert_int_equal(hd->ops->irq_setup(hd, &n), 0);
	register_two(hd, buf);
	dext_model_get_stats(&a);
	assert_int_equal(a.live_dma, 2);
	assert_int_equal(dext_model_device_lost(f->service, kr), 0);
	assert_false(readable(hd->ops->irq_wakeup_fd(hd), 0));
	assert_int_equal(hd->ops->config_read(hd, 0, 4, &v), -ENODEV);
	assert_false(host_device_present(hd));
	assert_non_null(strstr(host_device_removal(hd), name));
	assert_non_null(strstr(host_device_removal(hd), "ConfigRead"));
	assert_non_null(strstr(host_device_error(hd), name));
	assert_true(readable(hd->ops->irq_wakeup_fd(hd), 1000)); /* the loop hears it too */
	dext_model_get_stats(&a);
	assert_int_equal(hd->ops->mmio_read(hd, 0, 0x1c, 4, &v64), -ENODEV);
	assert_int_equal(hd->ops->config_read(hd, 0, 4, &v), -ENODEV);
	assert_int_equal(hd->ops->irq_read_pending(hd, pending), -ENODEV);
	assert_int_equal(hd->ops->reset(hd), -ENODEV);
	uint64_t bus, len;
	assert_int_equal(hd->ops->dma_register(hd, 0x4000, buf, 16384, &bus, &len), -ENODEV);
	dext_model_get_stats(&b);
	assert_int_equal(b.calls[8], a.calls[8]);
	assert_int_equal(b.calls[10], a.calls[10]);
	assert_int_equal(b.calls[11], a.calls[11]);
	assert_int_equal(b.calls[14], a.calls[14]);
	assert_int_equal(b.calls[17], a.calls[17]);
	assert_int_equal(b.calls[5], a.calls[5]);
	unregister_after_removal(hd);
	dext_model_get_stats(&b);
	assert_int_equal(b.calls[6], a.calls[6] + 4); /* all four still sent: the connection works */
	assert_int_equal(b.live_dma, 0);               /* and the dext's DART let go */
	assert_int_equal(dext_model_device_lost(f->service, 0), 0);
}

static void test_no_device_marks_gone(void **state)
{
	device_lost(*state, kIOReturnNoDevice, "kIOReturnNoDevice");
}

static void test_not_responding_marks_gone(void **state)
{
	device_lost(*state, kIOReturnNotResponding, "kIOReturnNotResponding");
}

/* The simulated function behind the model vanishes: the dext answers kIOReturnNoDevice, the backend says gone. */
static void test_sim_vanish_through_the_dext(void **state)
{
	struct fixture *f = *state;
	struct host_device *hd = f->hd;
	uint32_t v;

	assert_int_equal(hd->ops->config_read(hd, 0, 4, &v), 0);
	assert_int_equal(sim_nvme_vanish(f->sim, NULL), 0);
	assert_int_equal(hd->ops->config_read(hd, 0, 4, &v), -ENODEV);
	assert_false(host_device_present(hd));
	assert_non_null(strstr(host_device_removal(hd), "kIOReturnNoDevice"));
	/* Not a sim: the darwin host device cannot be told to vanish itself. */
	assert_int_equal(sim_nvme_vanish(hd, NULL), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_identity_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_audio_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_root_tiebreak, setup, teardown),
		cmocka_unit_test_setup_teardown(test_same_function_shares_connection, setup, teardown),
		cmocka_unit_test_setup_teardown(test_functions_of_a_slot_share_notifications, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claim_required, setup, teardown),
		cmocka_unit_test_setup_teardown(test_config, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bar_info_and_map, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prefetchable_bar_uncached, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mmio, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dma_through_to_the_dart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dma_dart_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_mapping, setup, teardown),
		cmocka_unit_test_setup_teardown(test_terminated_service, setup, teardown),
		cmocka_unit_test_setup_teardown(test_interrupt_wakeup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_interrupt_no_lost_wakeup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_model_semantics, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sim_dext, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dart_bytes_enforced_before_the_dext, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dart_mappings_enforced_before_the_dext, setup, teardown),
		cmocka_unit_test_setup_teardown(test_model_register_above_the_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unused_bar_any_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mig_server_died, setup, teardown),
		cmocka_unit_test_setup_teardown(test_irq_setup_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_irq_nothing_pending_before_the_mask, setup, teardown),
		cmocka_unit_test_setup_teardown(test_model_interrupt_semantics, setup, teardown),
		cmocka_unit_test_setup_teardown(test_removal_noticed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dext_crash_noticed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_on_write_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_on_write_check_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_serve_note, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_failure_reported, setup, teardown),
		cmocka_unit_test_setup_teardown(test_identity_from_registry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_identity_fallback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_termination_marks_gone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_device_marks_gone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_responding_marks_gone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sim_vanish_through_the_dext, setup, teardown),
	};

	return cmocka_run_group_tests_name("darwin backend over the dext TEST MODEL", tests, NULL, NULL);
}
