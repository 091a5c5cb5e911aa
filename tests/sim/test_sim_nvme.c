// SPDX-License-Identifier: MIT
/*
 * The simulated NVMe driven only through the host-device interface, as the
 * Linux nvme driver would drive it through the broker.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "nvme_driver.h"
#include "sim_nvme.h"

/* Status codes ((SCT << 8) | SC). */
#define SC_INVALID_OPCODE 0x001
#define SC_INVALID_FIELD 0x002
#define SC_DATA_TRANSFER_ERROR 0x004
#define SC_INVALID_NS 0x00b
#define SC_PRP_OFFSET_INVALID 0x013
#define SC_LBA_OUT_OF_RANGE 0x080
#define SC_CQ_INVALID 0x100
#define SC_INVALID_QID 0x101
#define SC_INVALID_QSIZE 0x102
#define SC_AER_LIMIT 0x105
#define SC_INVALID_VECTOR 0x108
#define SC_INVALID_LOG_PAGE 0x109
#define SC_INVALID_QUEUE_DELETION 0x10c

static int setup(void **state)
{
	struct drv *d = calloc(1, sizeof(*d));

	drv_open(d, "sim:nvme,size=64M,seed=42");
	*state = d;
	return 0;
}

static int teardown(void **state)
{
	struct drv *d = *state;

	drv_close(d);
	free(d);
	return 0;
}

static uint32_t cfg32(struct drv *d, uint32_t off)
{
	uint32_t v = 0;

	assert_int_equal(d->hd->ops->config_read(d->hd, off, 4, &v), 0);
	return v;
}

static struct drv_cqe identify(struct drv *d, uint8_t cns, uint32_t nsid, void *buf)
{
	struct drv_cmd c = { .opcode = 0x06, .nsid = nsid, .cdw10 = cns };

	drv_prps(d, &c, buf, 4096);
	return drv_exec(d, 0, &c);
}

static struct drv_cqe rw(struct drv *d, uint16_t qid, bool write, uint64_t slba, uint32_t nlb, void *buf)
{
	struct drv_cmd c = { .opcode = write ? 0x01 : 0x02, .nsid = 1, .cdw10 = (uint32_t)slba,
			     .cdw11 = (uint32_t)(slba >> 32), .cdw12 = nlb - 1 };

	drv_prps(d, &c, buf, (size_t)nlb * 512);
	return drv_exec(d, qid, &c);
}

static void fill(uint8_t *p, size_t len, uint32_t seed)
{
	for (size_t i = 0; i < len; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (uint8_t)(seed >> 16);
	}
}

/* ------------------------------------------------------------------ */

static void test_config_space(void **state)
{
	struct drv *d = *state;
	struct host_device *hd = d->hd;
	struct hd_bar_info bi;
	volatile void *map = NULL;
	uint32_t v;
	unsigned caps = 0;

	assert_int_equal(cfg32(d, 0x00), 0x00f01b36);
	assert_int_equal(cfg32(d, 0x08) >> 8, 0x010802);
	assert_int_equal(cfg32(d, 0x04) & 0x6, 0x6); /* claim enabled memory + master */
	assert_int_equal(cfg32(d, 0x10), 0x4);        /* BAR type, address 0 */
	assert_int_equal(cfg32(d, 0x20), 0x4);
	assert_int_equal((cfg32(d, 0x3c) >> 8) & 0xff, 0); /* interrupt pin */
	/* BAR writes do not stick. */
	assert_int_equal(hd->ops->config_write(hd, 0x10, 4, 0xfebf0000), 0);
	assert_int_equal(cfg32(d, 0x10), 0x4);
	/* Walk the capability list: PM, MSI-X (17 vectors in BAR4), PCIe, MSI. */
	for (uint32_t p = cfg32(d, 0x34) & 0xff; p; p = (cfg32(d, p) >> 8) & 0xff) {
		uint32_t hdr = cfg32(d, p);
		switch (hdr & 0xff) {
		case 0x01: caps |= 1; break;
		case 0x11:
			caps |= 2;
			assert_int_equal((hdr >> 16) & 0x7ff, 16);
			assert_int_equal(cfg32(d, p + 4), 4);
			assert_int_equal(cfg32(d, p + 8), 0x1004);
			break;
		case 0x10:
			caps |= 4;
			assert_int_equal(cfg32(d, p + 4) & (1u << 28), 1u << 28); /* FLR */
			break;
		case 0x05:
			/* MSI: 64-bit, 16 of the 17 vectors (a power of two), no masking. */
			caps |= 8;
			assert_int_equal((hdr >> 16) & 0x1ff, 0x0080 | 4 << 1);
			break;
		default: fail_msg("unexpected capability 0x%x", hdr & 0xff);
		}
	}
	assert_int_equal(caps, 15);
	assert_int_equal(cfg32(d, 0x100), 0); /* no extended capabilities */
	/* Bad accesses. */
	assert_int_equal(hd->ops->config_read(hd, 0x1000, 4, &v), -EINVAL);
	assert_int_equal(hd->ops->config_read(hd, 0x2, 4, &v), -EINVAL);
	assert_int_equal(hd->ops->config_read(hd, 0x0, 3, &v), -EINVAL);
	uint8_t block[64];
	assert_int_equal(hd->ops->config_read_block(hd, 0xfc0, block, 64), 0);
	assert_int_equal(hd->ops->config_read_block(hd, 0xfc1, block, 64), -EINVAL);
	/* BARs. */
	assert_int_equal(hd->ops->bar_info(hd, 0, &bi), 0);
	assert_int_equal(bi.size, SIM_NVME_BAR0_SIZE);
	assert_int_equal(bi.type, HD_BAR_MEM64);
	assert_int_equal(hd->ops->bar_info(hd, 2, &bi), 0);
	assert_int_equal(bi.size, 0);
	assert_int_equal(hd->ops->bar_info(hd, 6, &bi), -EINVAL);
	assert_int_equal(hd->ops->bar_map(hd, 0, &map), -EOPNOTSUPP);
	assert_non_null(strstr(host_device_error(hd), "mmio_read"));
	assert_int_equal(hd->ops->bar_map(hd, 4, &map), 0);
	assert_non_null(map);
	/* MSI-X table after power-on: every vector masked. */
	uint32_t vctl;
	memcpy(&vctl, (const uint8_t *)(uintptr_t)map + 16 * 3 + 12, 4);
	assert_int_equal(vctl, 1);
	uint64_t mv = 0;
	assert_int_equal(hd->ops->mmio_write(hd, 4, 16, 8, 0xfee00000ull), 0);
	assert_int_equal(hd->ops->mmio_read(hd, 4, 16, 8, &mv), 0);
	assert_int_equal(mv, 0xfee00000ull);
	assert_int_equal(hd->ops->mmio_read(hd, 2, 0, 4, &mv), -EINVAL);
	assert_int_equal(hd->ops->mmio_read(hd, 0, 0x4000, 4, &mv), -EINVAL);
	assert_int_equal(hd->ops->mmio_read(hd, 0, 2, 4, &mv), -EINVAL);
}

static void test_claim_required(void **state)
{
	char err[256];
	struct host_device *hd = NULL;
	uint32_t v;
	uint64_t v64;

	(void)state;
	extern struct host_device *host_device_open(const char *, char *, size_t);
	hd = host_device_open("sim:nvme", err, sizeof(err));
	assert_non_null(hd);
	assert_int_equal(hd->ops->config_read(hd, 0, 4, &v), -EACCES);
	assert_int_equal(hd->ops->mmio_read(hd, 0, 0, 4, &v64), -EACCES);
	assert_non_null(strstr(host_device_error(hd), "claim"));
	assert_int_equal(hd->ops->claim(hd), 0);
	assert_int_equal(hd->ops->mmio_read(hd, 0, 0, 8, &v64), 0);
	assert_int_equal(v64 & 0xffff, 1023);             /* MQES */
	assert_int_equal((v64 >> 37) & 1, 1);              /* CSS: NVM */
	assert_int_equal(hd->ops->mmio_read(hd, 0, 8, 4, &v64), 0);
	assert_int_equal(v64, 0x00010400);
	hd->ops->destroy(hd);
}

static void test_bring_up_and_identify(void **state)
{
	struct drv *d = *state;
	uint8_t *id = drv_alloc(d, 4096);
	struct drv_cqe cqe;
	uint32_t nn, nsid;
	uint64_t nsze;

	drv_enable(d);
	cqe = identify(d, 1, 0, id);
	assert_int_equal(cqe.status, 0);
	assert_int_equal(id[0] | id[1] << 8, 0x1b36);
	assert_memory_equal(id + 4, "VFA0SIM0", 8);
	assert_int_equal(id[77], 9);       /* MDTS: 2 MiB */
	assert_int_equal(id[512], 0x66);
	assert_int_equal(id[513], 0x44);
	memcpy(&nn, id + 516, 4);
	assert_int_equal(nn, 1);
	assert_int_equal(id[525] & 1, 1);  /* volatile write cache */
	assert_memory_equal(id + 768, "nqn.2026-01.io.vfio-apple:sim-nvme:", 35);

	memset(id, 0xff, 4096);
	cqe = identify(d, 0, 1, id);
	assert_int_equal(cqe.status, 0);
	memcpy(&nsze, id, 8);
	assert_int_equal(nsze, (64u << 20) / 512);
	assert_int_equal(id[130], 9); /* LBAF0.LBADS: 512 bytes */
	assert_int_equal(id[200], 0);

	cqe = identify(d, 2, 0, id);
	assert_int_equal(cqe.status, 0);
	memcpy(&nsid, id, 4);
	assert_int_equal(nsid, 1);
	memcpy(&nsid, id + 4, 4);
	assert_int_equal(nsid, 0);
	cqe = identify(d, 3, 1, id);
	assert_int_equal(cqe.status, 0);
	assert_int_equal(id[0], 2);
	assert_int_equal(id[1], 16);
	cqe = identify(d, 6, 0, id);
	assert_int_equal(cqe.status, 0);

	/* Errors: no namespace 2, unknown CNS. */
	assert_int_equal(identify(d, 0, 2, id).status, SC_INVALID_NS);
	cqe = identify(d, 0x1f, 0, id);
	assert_int_equal(cqe.status, SC_INVALID_FIELD);
	assert_true(cqe.dnr);
}

static void test_features_logs_and_queues(void **state)
{
	struct drv *d = *state;
	struct drv_cmd c;
	struct drv_cqe cqe;
	uint8_t *log = drv_alloc(d, 4096);

	drv_enable(d);
	c = (struct drv_cmd){ .opcode = 0x09, .cdw10 = 0x07, .cdw11 = (3u << 16) | 3u };
	cqe = drv_exec(d, 0, &c);
	assert_int_equal(cqe.status, 0);
	assert_int_equal(cqe.result, (15u << 16) | 15u);
	c = (struct drv_cmd){ .opcode = 0x09, .cdw10 = 0x06, .cdw11 = 0 };
	assert_int_equal(drv_exec(d, 0, &c).status, 0);
	c = (struct drv_cmd){ .opcode = 0x0a, .cdw10 = 0x06 };
	cqe = drv_exec(d, 0, &c);
	assert_int_equal(cqe.status, 0);
	assert_int_equal(cqe.result, 0);
	c = (struct drv_cmd){ .opcode = 0x09, .cdw10 = 0x0c }; /* APST: not supported */
	assert_int_equal(drv_exec(d, 0, &c).status, SC_INVALID_FIELD);

	/* SMART log. */
	c = (struct drv_cmd){ .opcode = 0x02, .nsid = 0xffffffff, .cdw10 = ((512 / 4 - 1) << 16) | 0x02 };
	drv_prps(d, &c, log, 512);
	assert_int_equal(drv_exec(d, 0, &c).status, 0);
	assert_int_equal(log[1] | log[2] << 8, 310);
	assert_int_equal(log[3], 100);
	c.cdw10 = ((512 / 4 - 1) << 16) | 0x70;
	assert_int_equal(drv_exec(d, 0, &c).status, SC_INVALID_LOG_PAGE);
	/* Supported log pages; then the SMART log from offset 4, past its end zero. */
	c.cdw10 = ((1024 / 4 - 1) << 16) | 0x00;
	drv_prps(d, &c, log, 1024);
	assert_int_equal(drv_exec(d, 0, &c).status, 0);
	assert_int_equal(log[4 * 2], 1);
	assert_int_equal(log[4 * 4], 0);
	memset(log, 0xff, 4096);
	c.cdw10 = ((1024 / 4 - 1) << 16) | 0x02;
	c.cdw12 = 4;
	assert_int_equal(drv_exec(d, 0, &c).status, 0);
	assert_int_equal(log[0], 10);    /* byte 4 of the log: spare threshold */
	assert_int_equal(log[600], 0);   /* beyond the 512-byte log */
	assert_int_equal(log[1024], 0xff); /* beyond the transfer: untouched */
	c.cdw12 = 512;
	assert_int_equal(drv_exec(d, 0, &c).status, SC_INVALID_FIELD);
	c.cdw12 = 0;
	/* NUMD above MDTS (through NUMDU too) and an unaligned offset: Invalid Field, nothing written. */
	memset(log, 0xff, 4096);
	c.cdw10 = (0xffffu << 16) | 0x02;
	c.cdw11 = 0x0008; /* 0x90000 dwords */
	assert_int_equal(drv_exec(d, 0, &c).status, SC_INVALID_FIELD);
	c.cdw11 = 0xffff;
	assert_int_equal(drv_exec(d, 0, &c).status, SC_INVALID_FIELD);
	c.cdw10 = ((512 / 4 - 1) << 16) | 0x02;
	c.cdw11 = 0;
	c.cdw12 = 2;
	assert_int_equal(drv_exec(d, 0, &c).status, SC_INVALID_FIELD);
	c.cdw12 = 0;
	assert_int_equal(log[0], 0xff);

	/* Queue creation and its errors. */
	assert_int_equal(drv_create_io_queue(d, 1, DRV_QDEPTH), 0);
	uint8_t *mem = drv_alloc(d, 64 * 64);
	c = (struct drv_cmd){ .opcode = 0x05, .prp1 = drv_bus(d, mem), .cdw10 = (63u << 16) | 1, .cdw11 = 3 };
	assert_int_equal(drv_exec(d, 0, &c).status, SC_INVALID_QID);   /* exists */
	c.cdw10 = (63u << 16) | 17;
	assert_int_equal(drv_exec(d, 0, &c).status, SC_INVALID_QID);   /* too high */
	c.cdw10 = (63u << 16) | 0;
	assert_int_equal(drv_exec(d, 0, &c).status, SC_INVALID_QID);   /* admin */
	c.cdw10 = (4095u << 16) | 2;
	assert_int_equal(drv_exec(d, 0, &c).status, SC_INVALID_QSIZE);
	c.cdw10 = (63u << 16) | 2;
	c.cdw11 = (17u << 16) | 3;
	assert_int_equal(drv_exec(d, 0, &c).status, SC_INVALID_VECTOR);
	c.cdw11 = (2u << 16) | 2; /* not physically contiguous */
	assert_int_equal(drv_exec(d, 0, &c).status, SC_INVALID_FIELD);
	c.cdw11 = (2u << 16) | 3;
	c.prp1 += 8;
	assert_int_equal(drv_exec(d, 0, &c).status, SC_PRP_OFFSET_INVALID);
	c = (struct drv_cmd){ .opcode = 0x01, .prp1 = drv_bus(d, mem), .cdw10 = (63u << 16) | 2, .cdw11 = (5u << 16) | 1 };
	assert_int_equal(drv_exec(d, 0, &c).status, SC_CQ_INVALID);
	c = (struct drv_cmd){ .opcode = 0x04, .cdw10 = 1 };
	assert_int_equal(drv_exec(d, 0, &c).status, SC_INVALID_QUEUE_DELETION);
	c = (struct drv_cmd){ .opcode = 0x00, .cdw10 = 1 };
	assert_int_equal(drv_exec(d, 0, &c).status, 0);
	assert_int_equal(drv_exec(d, 0, &c).status, SC_INVALID_QID);
	c = (struct drv_cmd){ .opcode = 0x04, .cdw10 = 1 };
	assert_int_equal(drv_exec(d, 0, &c).status, 0);
	/* Abort: nothing to abort, bit 0 of the result says so. */
	c = (struct drv_cmd){ .opcode = 0x08, .cdw10 = 5u << 16 };
	cqe = drv_exec(d, 0, &c);
	assert_int_equal(cqe.status, 0);
	assert_int_equal(cqe.result & 1, 1);
	/* Unknown admin opcode. */
	c = (struct drv_cmd){ .opcode = 0x7f };
	assert_int_equal(drv_exec(d, 0, &c).status, SC_INVALID_OPCODE);
}

static void test_read_write_prp_lists(void **state)
{
	struct drv *d = *state;
	const size_t big = 2u << 20; /* MDTS */
	uint8_t *wbuf = drv_alloc(d, big + 4096);
	uint8_t *rbuf = drv_alloc(d, big + 4096);
	struct sim_nvme_stats st;

	drv_enable(d);
	assert_int_equal(drv_create_io_queue(d, 1, DRV_QDEPTH), 0);
	assert_int_equal(drv_create_io_queue(d, 16, DRV_QDEPTH), 0);

	/* Many sizes and alignments: PRP1 only, PRP1+PRP2, lists, chained lists. */
	static const struct { uint32_t nlb; size_t off; uint64_t slba; uint16_t q; } cases[] = {
		{ 1, 0, 0, 1 }, { 8, 0, 8, 1 }, { 9, 0, 100, 1 }, { 16, 0, 200, 16 },
		{ 1, 512, 300, 1 }, { 8, 512, 400, 1 }, { 24, 1024, 500, 16 },
		{ 256, 0, 1000, 1 }, { 4096, 0, 10000, 16 }, { 4095, 512, 20000, 1 },
		{ 2048, 2048, 30000, 16 }, { 1, 4092 - 508, 131071, 1 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = (size_t)cases[i].nlb * 512;
		uint8_t *w = wbuf + cases[i].off, *r = rbuf + cases[i].off;
		fill(w, len, (uint32_t)i + 1);
		memset(r, 0, len);
		assert_int_equal(rw(d, cases[i].q, true, cases[i].slba, cases[i].nlb, w).status, 0);
		assert_int_equal(rw(d, cases[i].q, false, cases[i].slba, cases[i].nlb, r).status, 0);
		if (memcmp(w, r, len) != 0)
			fail_msg("case %zu: data read back differs", i);
	}
	/* Earlier data survives later writes elsewhere. */
	fill(wbuf, 8 * 512, 2);
	assert_int_equal(rw(d, 1, false, 8, 8, rbuf).status, 0);
	assert_memory_equal(wbuf, rbuf, 8 * 512);

	sim_nvme_get_stats(d->hd, &st);
	assert_int_equal(st.errors, 0);
	assert_int_equal(st.dma_faults, 0);
	/*
	 * A first list that starts mid-page (3 slots, the last one chaining);
	 * the chained list starts its page, as a PRP list pointer must.
	 */
	uint64_t *l1 = drv_alloc(d, 4096), *l2 = drv_alloc(d, 4096);
	uint64_t *l1s = l1 + 509, *l2s = l2;
	uint8_t *pages = drv_alloc(d, 5 * 4096);
	fill(pages, 5 * 4096, 99);
	l1s[0] = drv_bus(d, pages + 4096);
	l1s[1] = drv_bus(d, pages + 2 * 4096);
	l1s[2] = drv_bus(d, l2s);
	l2s[0] = drv_bus(d, pages + 3 * 4096);
	l2s[1] = drv_bus(d, pages + 4 * 4096);
	struct drv_cmd c = { .opcode = 0x01, .nsid = 1, .cdw10 = 5000, .cdw12 = 39, .prp1 = drv_bus(d, pages),
			     .prp2 = drv_bus(d, l1s) };
	assert_int_equal(drv_exec(d, 1, &c).status, 0);
	memset(rbuf, 0, 5 * 4096);
	assert_int_equal(rw(d, 1, false, 5000, 40, rbuf).status, 0);
	assert_memory_equal(pages, rbuf, 5 * 4096);
	/* A chained list pointer with a page offset: PRP Offset Invalid, nothing written. */
	l1s[2] = drv_bus(d, l2 + 510);
	l2[510] = drv_bus(d, pages + 3 * 4096);
	l2[511] = drv_bus(d, pages + 4 * 4096);
	c.cdw10 = 6000;
	assert_int_equal(drv_exec(d, 1, &c).status, SC_PRP_OFFSET_INVALID);
	memset(rbuf, 0xee, 5 * 4096);
	assert_int_equal(rw(d, 1, false, 6000, 40, rbuf).status, 0);
	for (size_t i = 0; i < 5 * 4096; i++)
		if (rbuf[i] != 0)
			fail_msg("byte %zu of a refused Write reached the namespace", i);
}

/*
 * A command that fails part-way through its PRPs moves no byte: a refused
 * Write leaves the blocks as they were (a later Read must not return half
 * of it as good data) and a refused Read leaves guest memory alone.
 */
static void test_failed_transfer_moves_nothing(void **state)
{
	struct drv *d = *state;
	uint8_t *old = drv_alloc(d, 8 * 4096), *fresh = drv_alloc(d, 8 * 4096), *back = drv_alloc(d, 8 * 4096);
	uint64_t *list = drv_alloc(d, 4096);
	struct sim_nvme_stats st;

	drv_enable(d);
	assert_int_equal(drv_create_io_queue(d, 1, DRV_QDEPTH), 0);
	fill(old, 8 * 4096, 7);
	fill(fresh, 8 * 4096, 8);
	assert_int_equal(rw(d, 1, true, 64, 64, old).status, 0);

	/* PRP1 + a list of 7 pages: the 5th list entry is bad in three ways. */
	static const struct { uint64_t bad_entry; uint16_t status; } cases[] = {
		{ 0x1000, SC_DATA_TRANSFER_ERROR },   /* a bus address the DART never handed out */
		{ 8, SC_PRP_OFFSET_INVALID },         /* an offset inside a page: set below */
		{ 0, SC_DATA_TRANSFER_ERROR },        /* just past the arena: set below */
	};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		for (unsigned i = 0; i < 7; i++)
			list[i] = drv_bus(d, fresh + (i + 1) * 4096);
		list[4] = k == 0 ? cases[k].bad_entry
			: k == 1 ? drv_bus(d, fresh + 5 * 4096) + cases[k].bad_entry
				 : d->arena_bus + DRV_ARENA_SIZE;
		struct drv_cmd c = { .opcode = 0x01, .nsid = 1, .cdw10 = 64, .cdw12 = 63, .prp1 = drv_bus(d, fresh),
				     .prp2 = drv_bus(d, list) };
		assert_int_equal(drv_exec(d, 1, &c).status, cases[k].status);
		memset(back, 0, 8 * 4096);
		assert_int_equal(rw(d, 1, false, 64, 64, back).status, 0);
		if (memcmp(back, old, 8 * 4096) != 0)
			fail_msg("case %zu: a refused Write changed the namespace", k);

		/* The same PRPs for a Read: the guest buffer stays as it was. */
		memset(fresh, 0x5a, 8 * 4096);
		c.opcode = 0x02;
		assert_int_equal(drv_exec(d, 1, &c).status, cases[k].status);
		for (size_t i = 0; i < 8 * 4096; i++)
			if (fresh[i] != 0x5a)
				fail_msg("case %zu: a refused Read wrote guest byte %zu", k, i);
		fill(fresh, 8 * 4096, 8);
	}
	sim_nvme_get_stats(d->hd, &st);
	assert_int_equal(st.dma_faults, 4);
	assert_false(st.fatal);
}

/* A completion entry the DART maps only in part is not written at all. */
static void test_partly_mapped_cqe(void **state)
{
	struct drv *d = *state;
	uint8_t *cqmem = aligned_alloc(16384, 16384);
	const uint64_t mapped = 2 * 16 + 12; /* entries 0 and 1, and 12 bytes of entry 2 */
	uint64_t bus, len;
	struct drv_cmd c;
	struct sim_nvme_stats st;

	assert_non_null(cqmem);
	memset(cqmem, 0xee, 16384);
	assert_int_equal(d->hd->ops->dma_register(d->hd, 0x9000000, cqmem, mapped, &bus, &len), 0);
	assert_int_equal(bus & 4095, 0);
	drv_enable(d);
	/* CQ 2 of 4 entries in cqmem, no interrupts; SQ 2 in the arena. */
	c = (struct drv_cmd){ .opcode = 0x05, .prp1 = bus, .cdw10 = (3u << 16) | 2, .cdw11 = 1 };
	assert_int_equal(drv_exec(d, 0, &c).status, 0);
	struct drv_queue *q = &d->q[2];
	memset(q, 0, sizeof(*q));
	q->depth = 4;
	q->sq = drv_alloc(d, 4 * 64);
	q->cq = cqmem;
	q->phase = true;
	c = (struct drv_cmd){ .opcode = 0x01, .prp1 = drv_bus(d, q->sq), .cdw10 = (3u << 16) | 2,
			      .cdw11 = (2u << 16) | 1 };
	assert_int_equal(drv_exec(d, 0, &c).status, 0);
	c = (struct drv_cmd){ .opcode = 0x00, .nsid = 1 }; /* Flush */
	assert_int_equal(drv_exec(d, 2, &c).status, 0);
	assert_int_equal(drv_exec(d, 2, &c).status, 0);
	drv_queue_cmd(d, 2, &c);
	drv_ring(d, 2);
	sim_nvme_get_stats(d->hd, &st);
	assert_true(st.fatal);
	for (size_t i = 32; i < 16384; i++)
		if (cqmem[i] != 0xee)
			fail_msg("byte %zu of a partly mapped completion entry was written", i);
	/* The host's reset brings the controller back. */
	assert_int_equal(d->hd->ops->reset(d->hd), 0);
	drv_enable(d);
	sim_nvme_get_stats(d->hd, &st);
	assert_false(st.fatal);
	assert_int_equal(d->hd->ops->dma_unregister(d->hd, 0x9000000), 0);
	free(cqmem);
}

static void test_dma_faults(void **state)
{
	struct drv *d = *state;
	struct sim_nvme_stats st;
	struct hd_dma_stats ds;
	uint8_t *buf = aligned_alloc(4096, 3 * 4096);
	uint64_t bus, len;

	drv_enable(d);
	assert_int_equal(drv_create_io_queue(d, 1, DRV_QDEPTH), 0);
	/* A buffer registered on its own, then unregistered: reads must fault. */
	memset(buf, 0xcc, 3 * 4096);
	assert_int_equal(d->hd->ops->dma_register(d->hd, 77, buf + 4096, 4096, &bus, &len), 0);
	struct drv_cmd c = { .opcode = 0x02, .nsid = 1, .cdw10 = 0, .cdw12 = 7, .prp1 = bus };
	assert_int_equal(drv_exec(d, 1, &c).status, 0);
	assert_int_equal(buf[4096], 0); /* the device wrote the (zero) data */
	memset(buf, 0xcc, 3 * 4096);
	assert_int_equal(d->hd->ops->dma_unregister(d->hd, 77), 0);
	assert_int_equal(d->hd->ops->dma_unregister(d->hd, 77), -ENOENT);
	struct drv_cqe cqe = drv_exec(d, 1, &c);
	assert_int_equal(cqe.status, SC_DATA_TRANSFER_ERROR);
	assert_true(cqe.dnr);
	for (int i = 0; i < 3 * 4096; i++)
		if (buf[i] != 0xcc)
			fail_msg("byte %d changed by a faulting DMA", i);
	/* A bus address the DART never handed out. */
	c.prp1 = 0x1000;
	assert_int_equal(drv_exec(d, 1, &c).status, SC_DATA_TRANSFER_ERROR);
	/* Data pages fine, PRP list page unmapped. */
	uint8_t *data = drv_alloc(d, 4 * 4096);
	c = (struct drv_cmd){ .opcode = 0x01, .nsid = 1, .cdw12 = 31, .prp1 = drv_bus(d, data), .prp2 = 0x2000 };
	assert_int_equal(drv_exec(d, 1, &c).status, SC_DATA_TRANSFER_ERROR);
	/* Past the end of the arena registration (strict bounds). */
	c = (struct drv_cmd){ .opcode = 0x02, .nsid = 1, .cdw12 = 7, .prp1 = drv_bus(d, d->arena + DRV_ARENA_SIZE - 2048) };
	assert_int_equal(drv_exec(d, 1, &c).status, SC_DATA_TRANSFER_ERROR);
	sim_nvme_get_stats(d->hd, &st);
	assert_int_equal(st.dma_faults, 4);
	assert_false(st.fatal);
	assert_int_equal(d->hd->ops->dma_stats(d->hd, &ds), 0);
	assert_int_equal(ds.faults, 4);
	assert_int_equal(ds.live_mappings, 1);
	free(buf);
}

static void test_dart_limits_through_device(void **state)
{
	struct drv d;
	uint8_t *buf = aligned_alloc(16384, 64 * 16384);
	uint64_t bus, len;
	int ret = 0;
	unsigned n = 0;

	(void)state;
	drv_open(&d, "sim:nvme,max_mappings=8,max_bytes=1G");
	assert_int_equal(d.hd->limits.max_mappings, 8);
	/* The arena is one mapping; seven more fit. */
	while (n < 64 && (ret = d.hd->ops->dma_register(d.hd, 1000 + n, buf + n * 16384, 4096, &bus, &len)) == 0)
		n++;
	assert_int_equal(n, 7);
	assert_int_equal(ret, -ENOSPC);
	assert_non_null(strstr(host_device_error(d.hd), "DART full"));
	assert_int_equal(d.hd->ops->dma_unregister(d.hd, 1000), 0);
	assert_int_equal(d.hd->ops->dma_register(d.hd, 2000, buf, 4096, &bus, &len), 0);
	assert_int_equal(d.hd->ops->dma_register(d.hd, 2000, buf, 4096, &bus, &len), -EEXIST);
	drv_close(&d);

	drv_open(&d, "sim:nvme,max_bytes=17M");
	assert_int_equal(d.hd->ops->dma_register(d.hd, 1, buf, 1u << 20, &bus, &len), 0);
	assert_int_equal(d.hd->ops->dma_register(d.hd, 2, buf, 1u << 20, &bus, &len), -ENOSPC);
	struct hd_dma_stats ds;
	assert_int_equal(d.hd->ops->dma_stats(d.hd, &ds), 0);
	assert_int_equal(ds.live_bytes, 17u << 20);
	assert_int_equal(ds.register_failures, 1);
	drv_close(&d);
	free(buf);
}

static void test_interrupts(void **state)
{
	struct drv *d = *state;
	uint64_t pending[HD_IRQ_WORDS], mask[HD_IRQ_WORDS] = { 0 };
	uint64_t count;
	int fd = d->hd->ops->irq_wakeup_fd(d->hd);
	uint8_t *buf = drv_alloc(d, 4096);
	struct sim_nvme_stats st;

	drv_enable(d);
	assert_int_equal(drv_create_io_queue(d, 3, DRV_QDEPTH), 0);
	assert_int_equal(d->hd->ops->irq_read_pending(d->hd, pending), 0);
	assert_int_equal(pending[0], 1); /* admin completions on vector 0 */
	while (read(fd, &count, sizeof(count)) > 0)
		;
	assert_int_equal(rw(d, 3, false, 0, 1, buf).status, 0);
	assert_int_equal(read(fd, &count, sizeof(count)), sizeof(count));
	assert_int_equal(d->hd->ops->irq_read_pending(d->hd, pending), 0);
	assert_int_equal(pending[0], 1u << 3);
	assert_int_equal(d->hd->ops->irq_read_pending(d->hd, pending), 0);
	assert_int_equal(pending[0], 0); /* reading cleared it */
	/* Masked vector: completion posted, nothing pending, no wake-up. */
	assert_int_equal(d->hd->ops->irq_set_mask(d->hd, mask), 0);
	sim_nvme_get_stats(d->hd, &st);
	uint64_t masked = st.interrupts_masked;
	assert_int_equal(rw(d, 3, false, 0, 1, buf).status, 0);
	assert_int_equal(read(fd, &count, sizeof(count)), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(d->hd->ops->irq_read_pending(d->hd, pending), 0);
	assert_int_equal(pending[0], 0);
	sim_nvme_get_stats(d->hd, &st);
	assert_int_equal(st.interrupts_masked, masked + 1);
}

static void test_malformed_commands(void **state)
{
	struct drv *d = *state;
	uint8_t *buf = drv_alloc(d, 3 * 4096);
	struct drv_cmd c;
	struct sim_nvme_stats st;

	drv_enable(d);
	assert_int_equal(drv_create_io_queue(d, 1, DRV_QDEPTH), 0);
	c = (struct drv_cmd){ .opcode = 0x7e, .nsid = 1 };
	assert_int_equal(drv_exec(d, 1, &c).status, SC_INVALID_OPCODE);
	/* LBA out of range: start beyond, and a range that runs past the end. */
	assert_int_equal(rw(d, 1, false, (64u << 20) / 512, 1, buf).status, SC_LBA_OUT_OF_RANGE);
	assert_int_equal(rw(d, 1, true, (64u << 20) / 512 - 1, 2, buf).status, SC_LBA_OUT_OF_RANGE);
	c = (struct drv_cmd){ .opcode = 0x02, .nsid = 1, .cdw10 = 0xffffffff, .cdw11 = 0xffffffff, .cdw12 = 0xffff,
			      .prp1 = drv_bus(d, buf) };
	assert_int_equal(drv_exec(d, 1, &c).status, SC_LBA_OUT_OF_RANGE);
	/* Wrong namespace. */
	c = (struct drv_cmd){ .opcode = 0x02, .nsid = 2, .prp1 = drv_bus(d, buf) };
	assert_int_equal(drv_exec(d, 1, &c).status, SC_INVALID_NS);
	/* Bad PRP offsets: PRP1 not dword aligned; PRP2 data pointer with an offset. */
	c = (struct drv_cmd){ .opcode = 0x02, .nsid = 1, .prp1 = drv_bus(d, buf) + 2 };
	assert_int_equal(drv_exec(d, 1, &c).status, SC_PRP_OFFSET_INVALID);
	c = (struct drv_cmd){ .opcode = 0x02, .nsid = 1, .cdw12 = 15, .prp1 = drv_bus(d, buf),
			      .prp2 = drv_bus(d, buf + 4096) + 512 };
	assert_int_equal(drv_exec(d, 1, &c).status, SC_PRP_OFFSET_INVALID);
	/* A PRP list entry with an offset. */
	uint64_t *list = drv_alloc(d, 4096);
	list[0] = drv_bus(d, buf + 4096);
	list[1] = drv_bus(d, buf + 2 * 4096) + 8;
	c = (struct drv_cmd){ .opcode = 0x02, .nsid = 1, .cdw12 = 23, .prp1 = drv_bus(d, buf), .prp2 = drv_bus(d, list) };
	assert_int_equal(drv_exec(d, 1, &c).status, SC_PRP_OFFSET_INVALID);
	/*
	 * A chain pointing back at itself: refused, as a list pointer must start
	 * a page.  Pointing at the start of its own page it is a plain list
	 * (a page-aligned 4 KiB list holds every entry MDTS allows): no loop.
	 */
	uint64_t *self = (uint64_t *)drv_alloc(d, 4096) + 511;
	*self = drv_bus(d, self);
	c = (struct drv_cmd){ .opcode = 0x02, .nsid = 1, .cdw12 = 31, .prp1 = drv_bus(d, buf), .prp2 = drv_bus(d, self) };
	assert_int_equal(drv_exec(d, 1, &c).status, SC_PRP_OFFSET_INVALID);
	*self = drv_bus(d, self - 511);
	self[-511] = drv_bus(d, buf + 4096);
	for (unsigned i = 1; i < 511; i++)
		self[-511 + (int)i] = drv_bus(d, buf);
	c.cdw12 = 4095; /* 2 MiB */
	assert_int_equal(drv_exec(d, 1, &c).status, 0);
	/* Above MDTS (2 MiB): 4097 blocks... the count field tops out at 65536. */
	c = (struct drv_cmd){ .opcode = 0x02, .nsid = 1, .cdw12 = 4096, .prp1 = drv_bus(d, buf) };
	assert_int_equal(drv_exec(d, 1, &c).status, SC_INVALID_FIELD);
	/* Fused or SGL commands. */
	c = (struct drv_cmd){ .opcode = 0x02, .flags = 0x40, .nsid = 1, .prp1 = drv_bus(d, buf) };
	assert_int_equal(drv_exec(d, 1, &c).status, SC_INVALID_FIELD);
	/* Doorbells of queues that do not exist, or beyond a queue's size, are ignored. */
	drv_wreg32(d, 0x1000 + 8 * 5, 1);
	drv_wreg32(d, 0x1000 + 8 * 1, DRV_QDEPTH + 3);
	drv_wreg32(d, 0x1000 + 8 * 30, 1);
	/* The controller keeps serving. */
	assert_int_equal(rw(d, 1, false, 0, 1, buf).status, 0);
	sim_nvme_get_stats(d->hd, &st);
	assert_false(st.fatal);
	assert_int_equal(st.errors, 11);
}

static void test_aer_and_shutdown(void **state)
{
	struct drv *d = *state;
	struct drv_cmd c = { .opcode = 0x0c };
	struct drv_cqe cqe;
	struct sim_nvme_stats st;

	sim_nvme_get_stats(d->hd, &st);
	assert_int_equal(st.state, SIM_NVME_DISABLED);
	drv_enable(d);
	sim_nvme_get_stats(d->hd, &st);
	assert_int_equal(st.state, SIM_NVME_READY);
	for (int i = 0; i < 4; i++) {
		drv_queue_cmd(d, 0, &c);
		drv_ring(d, 0);
		assert_false(drv_reap(d, 0, &cqe)); /* held */
	}
	sim_nvme_get_stats(d->hd, &st);
	assert_int_equal(st.aers_held, 4);
	cqe = drv_exec(d, 0, &c);
	assert_int_equal(cqe.status, SC_AER_LIMIT);
	/* Normal shutdown. */
	drv_wreg32(d, 0x14, drv_reg32(d, 0x14) | (1u << 14));
	assert_int_equal((drv_reg32(d, 0x1c) >> 2) & 3, 2);
	sim_nvme_get_stats(d->hd, &st);
	assert_int_equal(st.aers_held, 0);
	assert_int_equal(st.state, SIM_NVME_SHUTDOWN);
	/* shut down: a doorbell runs nothing */
	drv_queue_cmd(d, 0, &(struct drv_cmd){ .opcode = 0x06, .cdw10 = 1 });
	drv_ring(d, 0);
	assert_false(drv_reap(d, 0, &cqe));
	/* Disable and enable again: the controller works. */
	drv_enable(d);
	sim_nvme_get_stats(d->hd, &st);
	assert_int_equal(st.state, SIM_NVME_READY);
	assert_int_equal((drv_reg32(d, 0x1c) >> 2) & 3, 0);
	assert_int_equal(drv_create_io_queue(d, 1, DRV_QDEPTH), 0);
	sim_nvme_get_stats(d->hd, &st);
	assert_int_equal(st.illegal_transitions, 0);
}

static void test_reset_mid_traffic(void **state)
{
	struct drv *d = *state;
	uint8_t *buf = drv_alloc(d, 64 * 512);
	uint8_t *rbuf = drv_alloc(d, 64 * 512);
	struct drv_cqe cqe;
	struct drv_cmd c;

	drv_enable(d);
	assert_int_equal(drv_create_io_queue(d, 2, DRV_QDEPTH), 0);
	fill(buf, 64 * 512, 7);
	assert_int_equal(rw(d, 2, true, 64, 64, buf).status, 0);
	/* Queue commands, ring, and reset before reaping. */
	for (int i = 0; i < 10; i++) {
		c = (struct drv_cmd){ .opcode = 0x02, .nsid = 1, .cdw10 = 64, .cdw12 = 0 };
		drv_prps(d, &c, rbuf, 512);
		drv_queue_cmd(d, 2, &c);
	}
	drv_ring(d, 2);
	c = (struct drv_cmd){ .opcode = 0x0c };
	drv_queue_cmd(d, 0, &c);
	drv_ring(d, 0);
	assert_int_equal(d->hd->ops->reset(d->hd), 0);
	assert_int_equal(drv_reg32(d, 0x14), 0);
	assert_int_equal(drv_reg32(d, 0x1c), 0);
	assert_int_equal(drv_reg32(d, 0x24), 0);
	struct sim_nvme_stats st;
	sim_nvme_get_stats(d->hd, &st);
	assert_int_equal(st.aers_held, 0);
	uint64_t pending[HD_IRQ_WORDS];
	assert_int_equal(d->hd->ops->irq_read_pending(d->hd, pending), 0);
	assert_int_equal(pending[0], 0);
	/* Doorbells of the old queues do nothing now. */
	drv_wreg32(d, 0x1000 + 8 * 2, 3);
	/* A driver brings it up again; data written before the reset is there. */
	drv_enable(d);
	assert_int_equal(drv_create_io_queue(d, 2, DRV_QDEPTH), 0);
	memset(rbuf, 0, 64 * 512);
	cqe = rw(d, 2, false, 64, 64, rbuf);
	assert_int_equal(cqe.status, 0);
	assert_memory_equal(buf, rbuf, 64 * 512);

	/* FLR through PCIe DEVCTL does the same. */
	assert_int_equal(d->hd->ops->config_write(d->hd, 0x68, 2, 0x8000 | 0x2810), 0);
	assert_int_equal(drv_reg32(d, 0x1c), 0);
}

static void test_cq_full_stalls(void **state)
{
	struct drv *d = *state;
	struct drv_queue *q = &d->q[1];
	struct drv_cmd c;
	struct drv_cqe cqe;
	uint8_t *buf = drv_alloc(d, 4096);

	drv_enable(d);
	/* CQ of 2 entries holds one completion; SQ of 8. */
	memset(q, 0, sizeof(*q));
	q->depth = 2;
	q->cq = drv_alloc(d, 4096);
	q->phase = true;
	c = (struct drv_cmd){ .opcode = 0x05, .prp1 = drv_bus(d, q->cq), .cdw10 = (1u << 16) | 1, .cdw11 = (1u << 16) | 3 };
	assert_int_equal(drv_exec(d, 0, &c).status, 0);
	uint8_t *sq = drv_alloc(d, 8 * 64);
	c = (struct drv_cmd){ .opcode = 0x01, .prp1 = drv_bus(d, sq), .cdw10 = (7u << 16) | 1, .cdw11 = (1u << 16) | 1 };
	assert_int_equal(drv_exec(d, 0, &c).status, 0);
	/* Write three reads straight into the SQ. */
	for (unsigned i = 0; i < 3; i++) {
		uint8_t *e = sq + i * 64;
		uint16_t cid = (uint16_t)(100 + i);
		uint32_t nsid = 1;
		uint64_t prp = drv_bus(d, buf);
		memset(e, 0, 64);
		e[0] = 0x02;
		memcpy(e + 2, &cid, 2);
		memcpy(e + 4, &nsid, 4);
		memcpy(e + 24, &prp, 8);
	}
	drv_wreg32(d, 0x1000 + 8, 3);
	assert_true(drv_reap(d, 1, &cqe)); /* rings the CQ head: the next one runs */
	assert_int_equal(cqe.cid, 100);
	assert_int_equal(cqe.sq_head, 1);
	assert_true(drv_reap(d, 1, &cqe));
	assert_int_equal(cqe.cid, 101);
	assert_true(drv_reap(d, 1, &cqe));
	assert_int_equal(cqe.cid, 102);
	assert_int_equal(cqe.sq_head, 3);
	assert_false(drv_reap(d, 1, &cqe));
}

static void test_invalid_enable(void **state)
{
	struct drv *d = *state;
	struct sim_nvme_stats st;

	drv_wreg32(d, 0x24, 0); /* admin queues of one entry */
	drv_wreg32(d, 0x14, (4u << 20) | (6u << 16) | 1u);
	assert_int_equal(drv_reg32(d, 0x1c) & 3, 2); /* CFS, not ready */
	sim_nvme_get_stats(d->hd, &st);
	assert_true(st.fatal);
	drv_enable(d);
	assert_int_equal(drv_reg32(d, 0x1c), 1);
	/* While enabled, CC fields other than SHN do not change. */
	uint32_t cc = drv_reg32(d, 0x14);
	drv_wreg32(d, 0x14, cc | (15u << 7));
	assert_int_equal(drv_reg32(d, 0x14), cc);
	assert_int_equal(drv_create_io_queue(d, 1, 8), 0);
}

/* Byte and word writes: registers merge, INTMS/INTMC act on the written bytes only. */
static void test_narrow_register_writes(void **state)
{
	struct drv *d = *state;
	struct host_device *hd = d->hd;

	drv_wreg32(d, 0x0c, 0x00010101); /* INTMS: set bits 0, 8, 16 */
	assert_int_equal(drv_reg32(d, 0x0c), 0x00010101);
	assert_int_equal(hd->ops->mmio_write(hd, 0, 0x10, 1, 0x01), 0); /* INTMC, byte 0: clear bit 0 */
	assert_int_equal(drv_reg32(d, 0x0c), 0x00010100);
	assert_int_equal(hd->ops->mmio_write(hd, 0, 0x0e, 2, 0x0002), 0); /* INTMS, bytes 2-3: set bit 17 */
	assert_int_equal(drv_reg32(d, 0x0c), 0x00030100);
	assert_int_equal(hd->ops->mmio_write(hd, 0, 0x11, 1, 0x01), 0); /* INTMC, byte 1: clear bit 8 */
	assert_int_equal(drv_reg32(d, 0x10), 0x00030000);
	/* AQA written a byte at a time keeps the other bytes. */
	drv_wreg32(d, 0x24, 0x001f001f);
	assert_int_equal(hd->ops->mmio_write(hd, 0, 0x26, 1, 0x07), 0);
	assert_int_equal(drv_reg32(d, 0x24), 0x0007001f);
}

static void test_identity_dart(void **state)
{
	struct drv d;
	uint8_t *buf;

	(void)state;
	drv_open(&d, "sim:nvme,dart=identity,size=4M");
	assert_true(d.hd->identity_dma);
	assert_int_equal(d.arena_bus, DRV_ARENA_KEY); /* bus address = key */
	drv_enable(&d);
	assert_int_equal(drv_create_io_queue(&d, 1, 16), 0);
	buf = drv_alloc(&d, 8192);
	fill(buf, 8192, 5);
	assert_int_equal(rw(&d, 1, true, 7, 16, buf).status, 0);
	memset(buf, 0, 8192);
	assert_int_equal(rw(&d, 1, false, 7, 16, buf).status, 0);
	uint8_t expect[8192];
	fill(expect, 8192, 5);
	assert_memory_equal(buf, expect, 8192);
	drv_close(&d);
}

static void test_file_backing(void **state)
{
	char path[] = "/tmp/vfa-sim-nvme-XXXXXX";
	int fd = mkstemp(path);
	char spec[128];
	struct drv d;
	uint8_t *buf, got[1024];

	(void)state;
	assert_true(fd >= 0);
	snprintf(spec, sizeof(spec), "sim:nvme,size=2M,backing=%s", path);
	drv_open(&d, spec);
	drv_enable(&d);
	assert_int_equal(drv_create_io_queue(&d, 1, 16), 0);
	buf = drv_alloc(&d, 4096);
	fill(buf, 1024, 11);
	assert_int_equal(rw(&d, 1, true, 3, 2, buf).status, 0);
	struct drv_cmd c = { .opcode = 0x00, .nsid = 1 };
	assert_int_equal(drv_exec(&d, 1, &c).status, 0);
	assert_int_equal(pread(fd, got, 1024, 3 * 512), 1024);
	assert_memory_equal(got, buf, 1024);
	drv_close(&d);
	/* Reopened without a size: the file's size, and the data is there. */
	snprintf(spec, sizeof(spec), "sim:nvme,backing=%s", path);
	drv_open(&d, spec);
	drv_enable(&d);
	assert_int_equal(drv_create_io_queue(&d, 1, 16), 0);
	buf = drv_alloc(&d, 4096);
	assert_int_equal(rw(&d, 1, false, 3, 2, buf).status, 0);
	assert_memory_equal(got, buf, 1024);
	assert_int_equal(rw(&d, 1, false, 4096, 1, buf).status, SC_LBA_OUT_OF_RANGE);
	drv_close(&d);
	close(fd);
	unlink(path);
}

static unsigned reap_all(struct drv *d, uint16_t qid)
{
	struct drv_cqe cqe;
	unsigned n = 0;

	while (drv_reap(d, qid, &cqe)) {
		assert_int_equal(cqe.status, 0);
		n++;
	}
	return n;
}

static bool wakeup_signalled(struct drv *d)
{
	struct pollfd pfd = { .fd = d->hd->ops->irq_wakeup_fd(d->hd), .events = POLLIN };

	return poll(&pfd, 1, 0) == 1;
}

static void drain_wakeup(struct drv *d)
{
	uint64_t v;

	while (read(d->hd->ops->irq_wakeup_fd(d->hd), &v, sizeof(v)) > 0)
		;
}

static uint64_t io_done(struct drv *d)
{
	struct sim_nvme_stats st;

	sim_nvme_get_stats(d->hd, &st);
	return st.io_commands;
}

/*
 * One doorbell does a bounded amount of work (issue 11, item 3): of 200
 * queued commands one SQ doorbell runs 64, of 2 MiB reads 4 (8 MiB); the
 * rest resumes, one bounded kick at a time, through the wake-up fd and
 * irq_read_pending(), as the broker's loop drives it, with the
 * interrupts of each part.  (The CQ head doorbell is a kick too, so the
 * completions are reaped only at the end.)
 */
static void test_doorbell_work_bounded(void **state)
{
	struct drv *d = *state;
	uint64_t pending[HD_IRQ_WORDS];
	struct sim_nvme_stats st;
	uint8_t *buf;
	uint64_t base;
	unsigned kicks = 0;

	drv_enable(d);
	assert_int_equal(drv_create_io_queue(d, 1, 256), 0);
	drain_wakeup(d);
	base = io_done(d);
	for (int i = 0; i < 200; i++) {
		struct drv_cmd c = { .opcode = 0x00, .nsid = 1 }; /* Flush: no data */

		drv_queue_cmd(d, 1, &c);
	}
	drv_ring(d, 1);
	assert_int_equal(io_done(d) - base, SIM_NVME_KICK_COMMANDS);
	while (io_done(d) - base < 200) {
		assert_true(wakeup_signalled(d));
		drain_wakeup(d);
		assert_int_equal(d->hd->ops->irq_read_pending(d->hd, pending), 0);
		assert_true(pending[0] & 2); /* vector 1: this queue's completions */
		assert_true(++kicks <= 3);
		assert_int_equal(io_done(d) - base, kicks < 3 ? (kicks + 1) * 64 : 200);
	}
	assert_int_equal(kicks, 3); /* 64 + 64 + 64 + 8 */
	sim_nvme_get_stats(d->hd, &st);
	assert_int_equal(st.kicks_deferred, 3);
	assert_int_equal(reap_all(d, 1), 200);

	/* bytes: 2 MiB reads, 8 MiB per kick */
	buf = drv_alloc(d, SIM_NVME_MAX_TRANSFER);
	base = io_done(d);
	for (int i = 0; i < 10; i++) {
		struct drv_cmd c = { .opcode = 0x02, .nsid = 1, .cdw12 = SIM_NVME_MAX_TRANSFER / 512 - 1 };

		drv_prps(d, &c, buf, SIM_NVME_MAX_TRANSFER);
		drv_queue_cmd(d, 1, &c);
	}
	drv_ring(d, 1);
	assert_int_equal(io_done(d) - base, 4);
	assert_true(wakeup_signalled(d));
	drain_wakeup(d);
	assert_int_equal(d->hd->ops->irq_read_pending(d->hd, pending), 0);
	assert_int_equal(io_done(d) - base, 8);
	drain_wakeup(d);
	assert_int_equal(d->hd->ops->irq_read_pending(d->hd, pending), 0);
	assert_int_equal(io_done(d) - base, 10);
	assert_int_equal(reap_all(d, 1), 10);
	sim_nvme_get_stats(d->hd, &st);
	assert_int_equal(st.kicks_deferred, 3 + 2);
	assert_false(st.fatal);
}


/* ---- surprise removal (issue 14, item 3) ---- */

/* Queue n one-block writes of LBA first.. from buf (one block each), without ringing. */
static void queue_writes(struct drv *d, uint16_t qid, uint8_t *buf, unsigned first, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		struct drv_cmd c = { .opcode = 0x01, .nsid = 1, .cdw10 = first + i };

		drv_prps(d, &c, buf + (size_t)i * 512, 512);
		drv_queue_cmd(d, qid, &c);
	}
}

/* Completions posted on qid's CQ (read from memory: no doorbell reaches a removed device). */
static unsigned posted(struct drv *d, uint16_t qid)
{
	struct drv_queue *q = &d->q[qid];
	uint32_t head = q->cq_head;
	bool phase = q->phase;
	unsigned n = 0;

	for (;;) {
		uint32_t dw3;

		memcpy(&dw3, q->cq + (size_t)head * 16 + 12, 4);
		if (((dw3 >> 16) & 1) != (phase ? 1u : 0u) || n == q->depth)
			return n;
		assert_int_equal((dw3 >> 17) & 0x7ff, 0);
		n++;
		if (++head == q->depth) {
			head = 0;
			phase = !phase;
		}
	}
}

/* After a replug: claim, interrupts, the arena registered again with the fresh DART. */
static void replug_and_reopen(struct drv *d)
{
	char err[256] = "";
	unsigned nvec = 0;
	uint64_t mask[HD_IRQ_WORDS] = { ~0ull, ~0ull, ~0ull, ~0ull }, bus_len = 0;
	uint32_t v;

	assert_int_equal(sim_nvme_replug(d->hd, err, sizeof(err)), 0);
	assert_true(host_device_present(d->hd));
	assert_null(host_device_removal(d->hd));
	/* A fresh device: not claimed, COMMAND 0, an empty DART. */
	assert_int_equal(d->hd->ops->config_read(d->hd, 0, 4, &v), -EACCES);
	assert_int_equal(d->hd->ops->claim(d->hd), 0);
	assert_int_equal(d->hd->ops->irq_setup(d->hd, &nvec), 0);
	assert_int_equal(d->hd->ops->irq_set_mask(d->hd, mask), 0);
	struct hd_dma_stats ds;
	assert_int_equal(d->hd->ops->dma_stats(d->hd, &ds), 0);
	assert_int_equal(ds.live_mappings, 0);
	assert_int_equal(ds.registers, 0);
	assert_int_equal(d->hd->ops->dma_register(d->hd, DRV_ARENA_KEY, d->arena, DRV_ARENA_SIZE, &d->arena_bus,
						   &bus_len), 0);
	drain_wakeup(d);
	drv_enable(d);
}

/*
 * Pulled in the middle of a doorbell's batch: the commands before run and
 * complete, the rest never run (no DMA, no completion), no interrupt is
 * raised, every verb but unregister fails with -ENODEV, the wake-up says
 * so at once, the DART empties; replugged, the data written before the
 * removal is there and nothing after it.
 */
static void test_vanish_mid_doorbell(void **state)
{
	struct drv *d = *state;
	uint64_t pending[HD_IRQ_WORDS], base, bus, len, mask[HD_IRQ_WORDS] = { 0 };
	struct sim_nvme_stats st;
	struct hd_dma_stats ds;
	uint8_t *old = drv_alloc(d, 64 * 512), *fresh = drv_alloc(d, 64 * 512), *back = drv_alloc(d, 64 * 512);
	uint32_t v;
	unsigned nvec;

	drv_enable(d);
	assert_int_equal(drv_create_io_queue(d, 1, 256), 0);
	fill(old, 64 * 512, 1);
	fill(fresh, 64 * 512, 2);
	for (unsigned i = 0; i < 64; i++)
		assert_int_equal(rw(d, 1, true, i, 1, old + i * 512).status, 0);
	drain_wakeup(d);
	assert_int_equal(d->hd->ops->irq_read_pending(d->hd, pending), 0);
	sim_nvme_get_stats(d->hd, &st);
	uint64_t irqs = st.interrupts;
	base = io_done(d);

	assert_int_equal(sim_nvme_vanish_after(d->hd, 10, "test: pulled mid-doorbell"), 0);
	queue_writes(d, 1, fresh, 0, 40);
	assert_int_equal(d->hd->ops->mmio_write(d->hd, 0, 0x1000 + 8, 4, d->q[1].sq_tail), 0);
	assert_int_equal(io_done(d) - base, 10); /* the rest of the batch never ran */
	assert_false(host_device_present(d->hd));
	assert_string_equal(host_device_removal(d->hd), "test: pulled mid-doorbell");
	assert_true(wakeup_signalled(d)); /* the front end hears it at once */
	drain_wakeup(d);
	assert_int_equal(d->hd->ops->irq_read_pending(d->hd, pending), -ENODEV);
	sim_nvme_get_stats(d->hd, &st);
	assert_int_equal(st.interrupts, irqs); /* the 10 completions raised nothing */
	assert_int_equal(posted(d, 1), 10);

	/* Every verb fails, except unregister, dma_stats and the wake-up fd. */
	assert_int_equal(d->hd->ops->mmio_write(d->hd, 0, 0x1000 + 8, 4, d->q[1].sq_tail), -ENODEV);
	uint64_t csts;
	assert_int_equal(d->hd->ops->mmio_read(d->hd, 0, 0x1c, 4, &csts), -ENODEV);
	assert_int_equal(d->hd->ops->config_read(d->hd, 0, 4, &v), -ENODEV);
	assert_int_equal(d->hd->ops->config_write(d->hd, 4, 2, 0), -ENODEV);
	assert_int_equal(d->hd->ops->dma_register(d->hd, 7, back, 4096, &bus, &len), -ENODEV);
	assert_int_equal(d->hd->ops->irq_set_mask(d->hd, mask), -ENODEV);
	assert_int_equal(d->hd->ops->irq_setup(d->hd, &nvec), -ENODEV);
	assert_int_equal(d->hd->ops->reset(d->hd), -ENODEV);
	assert_int_equal(d->hd->ops->claim(d->hd), -ENODEV);
	assert_non_null(strstr(host_device_error(d->hd), "pulled"));
	assert_true(d->hd->ops->irq_wakeup_fd(d->hd) >= 0);
	assert_false(wakeup_signalled(d));
	assert_int_equal(io_done(d) - base, 10); /* the refused doorbell ran nothing */
	assert_int_equal(d->hd->ops->dma_unregister(d->hd, DRV_ARENA_KEY), 0);
	assert_int_equal(d->hd->ops->dma_unregister(d->hd, DRV_ARENA_KEY), -ENOENT);
	assert_int_equal(d->hd->ops->dma_stats(d->hd, &ds), 0);
	assert_int_equal(ds.live_mappings, 0);
	/* A second vanish is harmless; replug refuses a present device, not this one. */
	assert_int_equal(sim_nvme_vanish(d->hd, NULL), 0);

	replug_and_reopen(d);
	char err[128];
	assert_int_equal(sim_nvme_replug(d->hd, err, sizeof(err)), -EBUSY);
	assert_int_equal(drv_create_io_queue(d, 1, 256), 0);
	for (unsigned i = 0; i < 40; i++) {
		assert_int_equal(rw(d, 1, false, i, 1, back + i * 512).status, 0);
		/* the first 10 writes ran before the removal, the other 30 never did */
		assert_memory_equal(back + i * 512, (i < 10 ? fresh : old) + i * 512, 512);
	}
	sim_nvme_get_stats(d->hd, &st);
	assert_false(st.fatal);
}

/*
 * Pulled while a doorbell's budget left work queued (mid-DMA): the
 * resumption never comes, no more commands run or interrupts come.
 */
static void test_vanish_with_work_left(void **state)
{
	struct drv *d = *state;
	uint64_t pending[HD_IRQ_WORDS], base;
	struct sim_nvme_stats st;
	uint8_t *buf = drv_alloc(d, 200 * 512);

	drv_enable(d);
	assert_int_equal(drv_create_io_queue(d, 1, 256), 0);
	drain_wakeup(d);
	assert_int_equal(d->hd->ops->irq_read_pending(d->hd, pending), 0);
	base = io_done(d);
	queue_writes(d, 1, buf, 0, 200);
	drv_ring(d, 1);
	assert_int_equal(io_done(d) - base, SIM_NVME_KICK_COMMANDS);
	assert_true(wakeup_signalled(d)); /* work left: come back */
	sim_nvme_get_stats(d->hd, &st);
	uint64_t irqs = st.interrupts;
	assert_int_equal(sim_nvme_vanish(d->hd, "test: pulled mid-DMA"), 0);
	drain_wakeup(d);
	assert_int_equal(d->hd->ops->irq_read_pending(d->hd, pending), -ENODEV);
	assert_int_equal(d->hd->ops->irq_read_pending(d->hd, pending), -ENODEV);
	assert_int_equal(io_done(d) - base, SIM_NVME_KICK_COMMANDS);
	sim_nvme_get_stats(d->hd, &st);
	assert_int_equal(st.interrupts, irqs);
	assert_string_equal(host_device_removal(d->hd), "test: pulled mid-DMA");
	/* Not a sim: refused. */
	struct host_device other = { 0 };
	assert_int_equal(sim_nvme_vanish(&other, NULL), -EINVAL);
	assert_false(sim_nvme_is(&other));
	assert_true(sim_nvme_is(d->hd));
}

static unsigned ctrl_state(struct drv *d)
{
	struct sim_nvme_stats st;

	sim_nvme_get_stats(d->hd, &st);
	assert_int_equal(st.illegal_transitions, 0);
	return st.state;
}

/*
 * Issue 13, item 6: the controller's states follow CSTS through every legal
 * transition of ctrl_legal[] (sim_nvme.c), and none is refused.
 */
static void test_controller_states(void **state)
{
	struct drv *d = *state;
	const uint32_t good = (4u << 20) | (6u << 16); /* IOCQES 16 B, IOSQES 64 B */

	assert_int_equal(ctrl_state(d), SIM_NVME_DISABLED);
	/* an enable with a bad setup: fatal (CFS), and CC.EN 0 clears it */
	drv_wreg32(d, 0x24, 0x001f001f);
	drv_wreg32(d, 0x14, 1); /* IOSQES 0 */
	assert_int_equal(ctrl_state(d), SIM_NVME_FATAL);
	assert_true(drv_reg32(d, 0x1c) & 2);
	drv_wreg32(d, 0x14, 0);
	assert_int_equal(ctrl_state(d), SIM_NVME_DISABLED);
	/* ready, shut down, disabled */
	drv_enable(d);
	assert_int_equal(ctrl_state(d), SIM_NVME_READY);
	drv_wreg32(d, 0x14, good | 1 | (1u << 14));
	assert_int_equal(ctrl_state(d), SIM_NVME_SHUTDOWN);
	drv_wreg32(d, 0x14, good);
	assert_int_equal(ctrl_state(d), SIM_NVME_DISABLED);
	/* a shutdown asked while disabled, then an enable: ready */
	drv_wreg32(d, 0x14, good | (1u << 14));
	assert_int_equal(ctrl_state(d), SIM_NVME_SHUTDOWN);
	drv_enable(d);
	assert_int_equal(ctrl_state(d), SIM_NVME_READY);
	/* a function-level reset: disabled from anywhere */
	assert_int_equal(d->hd->ops->reset(d->hd), 0);
	assert_int_equal(ctrl_state(d), SIM_NVME_DISABLED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_config_space, setup, teardown),
		cmocka_unit_test(test_claim_required),
		cmocka_unit_test_setup_teardown(test_bring_up_and_identify, setup, teardown),
		cmocka_unit_test_setup_teardown(test_features_logs_and_queues, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_write_prp_lists, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dma_faults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_transfer_moves_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_partly_mapped_cqe, setup, teardown),
		cmocka_unit_test(test_dart_limits_through_device),
		cmocka_unit_test_setup_teardown(test_interrupts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_commands, setup, teardown),
		cmocka_unit_test_setup_teardown(test_aer_and_shutdown, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset_mid_traffic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cq_full_stalls, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_enable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_narrow_register_writes, setup, teardown),
		cmocka_unit_test(test_identity_dart),
		cmocka_unit_test(test_file_backing),
		cmocka_unit_test_setup_teardown(test_doorbell_work_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_controller_states, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vanish_mid_doorbell, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vanish_with_work_left, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
