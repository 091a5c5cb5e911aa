// SPDX-License-Identifier: MIT
/*
 * The passthrough function against a fake host device that records every
 * call: which config bytes reach the host, BAR bounds and access widths,
 * interrupt routing to eventfds, reset forwarding.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cmocka.h>

#include "passthrough.h"

#define MSI_POS 0x50
#define MSIX_POS 0x70
#define EXP_POS 0x90
#define PM_POS 0xD0
#define REBAR_POS 0x100
#define AER_POS 0x140
#define SRIOV_POS 0x180
#define LTR_POS 0x1C0
#define L1SS_POS 0x1D0
#define MSIX_TABLE_OFF 0x2000u /* BAR0: 32 entries of 16 bytes */
#define MSIX_PBA_OFF 0x3000u   /* BAR0: 32 bits, one qword */
#define BAR0_SIZE 0x4000u /* 64-bit, BAR0+BAR1 */
#define BAR2_SIZE 0x1000u /* 32-bit prefetchable, mapped */
#define BAR4_SIZE 0x20u   /* I/O */
#define NVEC 8

struct call {
	char what; /* 'w' config write, 'r' mmio read, 'W' mmio write */
	uint32_t bar;
	uint64_t offset;
	unsigned width;
	uint64_t value;
};

struct fake {
	struct host_device hd;
	uint8_t cfg[4096];
	uint8_t bar0[BAR0_SIZE];
	uint8_t bar2[BAR2_SIZE];
	uint8_t bar4[BAR4_SIZE];
	bool with_msix;
	bool legacy_only; /* config reads beyond 255 fail, as on a conventional PCI host */
	bool impossible_bar;
	bool fail_config_write;
	bool pull_on_mmio; /* the next MMIO access finds the function gone (surprise removal) */
	struct call calls[256];
	unsigned ncalls;
	uint64_t mask[HD_IRQ_WORDS];
	unsigned set_mask_calls;
	uint64_t pending[HD_IRQ_WORDS];
	int wakeup_fd;
	unsigned resets;
};

static struct fake *F(struct host_device *hd)
{
	return (struct fake *)hd;
}

static void record(struct fake *f, char what, uint32_t bar, uint64_t off, unsigned width, uint64_t v)
{
	assert_true(f->ncalls < 256);
	f->calls[f->ncalls++] = (struct call){ what, bar, off, width, v };
}

static int fk_identity(struct host_device *hd, struct hd_identity *out)
{
	(void)hd;
	*out = (struct hd_identity){ .bus = 3, .vendor_id = 0x144d, .device_id = 0xa808, .class_code = 0x010802 };
	return 0;
}

static int fk_config_read(struct host_device *hd, uint32_t off, unsigned width, uint32_t *v)
{
	struct fake *f = F(hd);

	if (off + width > sizeof(f->cfg) || off % width || (f->legacy_only && off >= 256))
		return -EINVAL;
	*v = 0;
	for (unsigned i = 0; i < width; i++)
		*v |= (uint32_t)f->cfg[off + i] << (8 * i);
	return 0;
}

static int fk_config_read_block(struct host_device *hd, uint32_t off, void *buf, size_t len)
{
	struct fake *f = F(hd);

	if (off + len > sizeof(f->cfg) || (f->legacy_only && off + len > 256))
		return -EINVAL;
	memcpy(buf, f->cfg + off, len);
	return 0;
}

static int fk_config_write(struct host_device *hd, uint32_t off, unsigned width, uint32_t v)
{
	struct fake *f = F(hd);

	assert_true(width == 1 || width == 2 || width == 4);
	assert_int_equal(off % width, 0);
	if (f->fail_config_write)
		return hd_fail(hd, -EIO, "config write refused");
	record(f, 'w', 0, off, width, v);
	return 0;
}

static int fk_bar_info(struct host_device *hd, unsigned bar, struct hd_bar_info *out)
{
	*out = (struct hd_bar_info){ 0 };
	if (F(hd)->impossible_bar && bar == 2) {
		*out = (struct hd_bar_info){ 0x3000, HD_BAR_MEM32, false }; /* not a power of two */
		return 0;
	}
	if (bar == 0)
		*out = (struct hd_bar_info){ BAR0_SIZE, HD_BAR_MEM64, false };
	else if (bar == 2)
		*out = (struct hd_bar_info){ BAR2_SIZE, HD_BAR_MEM32, true };
	else if (bar == 4)
		*out = (struct hd_bar_info){ BAR4_SIZE, HD_BAR_IO, false };
	return 0;
}

static int fk_bar_map(struct host_device *hd, unsigned bar, volatile void **out)
{
	if (bar != 2)
		return -EOPNOTSUPP;
	*out = F(hd)->bar2;
	return 0;
}

static uint8_t *bar_mem(struct fake *f, unsigned bar, uint64_t *size)
{
	if (bar == 0) {
		*size = BAR0_SIZE;
		return f->bar0;
	}
	*size = BAR4_SIZE;
	return f->bar4;
}

static int fk_mmio_read(struct host_device *hd, unsigned bar, uint64_t off, unsigned width, uint64_t *v)
{
	struct fake *f = F(hd);
	uint64_t size;
	uint8_t *mem = bar_mem(f, bar, &size);

	if (f->pull_on_mmio)
		return hd_mark_gone(hd, "fake: pulled during an MMIO read");
	assert_true(bar == 0 || bar == 4);
	assert_true(off + width <= size);
	assert_int_equal(off % width, 0);
	*v = 0;
	for (unsigned i = 0; i < width; i++)
		*v |= (uint64_t)mem[off + i] << (8 * i);
	record(f, 'r', bar, off, width, *v);
	return 0;
}

static int fk_mmio_write(struct host_device *hd, unsigned bar, uint64_t off, unsigned width, uint64_t v)
{
	struct fake *f = F(hd);
	uint64_t size;
	uint8_t *mem = bar_mem(f, bar, &size);

	if (f->pull_on_mmio)
		return hd_mark_gone(hd, "fake: pulled during an MMIO write");
	assert_true(bar == 0 || bar == 4);
	assert_true(off + width <= size);
	assert_int_equal(off % width, 0);
	for (unsigned i = 0; i < width; i++)
		mem[off + i] = (uint8_t)(v >> (8 * i));
	record(f, 'W', bar, off, width, v);
	return 0;
}

static int fk_irq_setup(struct host_device *hd, unsigned *n)
{
	(void)hd;
	*n = NVEC;
	return 0;
}

static int fk_irq_set_mask(struct host_device *hd, const uint64_t mask[HD_IRQ_WORDS])
{
	struct fake *f = F(hd);

	memcpy(f->mask, mask, sizeof(f->mask));
	f->set_mask_calls++;
	return 0;
}

static int fk_irq_read_pending(struct host_device *hd, uint64_t pending[HD_IRQ_WORDS])
{
	struct fake *f = F(hd);

	memcpy(pending, f->pending, sizeof(f->pending));
	memset(f->pending, 0, sizeof(f->pending));
	return 0;
}

static int fk_irq_wakeup_fd(struct host_device *hd)
{
	return F(hd)->wakeup_fd;
}

static int fk_reset(struct host_device *hd)
{
	F(hd)->resets++;
	return 0;
}

static const struct host_device_ops fake_ops = {
	.identity = fk_identity,
	.config_read = fk_config_read,
	.config_write = fk_config_write,
	.config_read_block = fk_config_read_block,
	.bar_info = fk_bar_info,
	.bar_map = fk_bar_map,
	.mmio_read = fk_mmio_read,
	.mmio_write = fk_mmio_write,
	.irq_setup = fk_irq_setup,
	.irq_set_mask = fk_irq_set_mask,
	.irq_read_pending = fk_irq_read_pending,
	.irq_wakeup_fd = fk_irq_wakeup_fd,
	.reset = fk_reset,
};

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

static uint32_t get32(const uint8_t *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Config space: caps 0x34 -> MSI 0x50 -> MSI-X 0x70 -> PCIe 0x90; ReBAR at 0x100. */
static struct fake *fake_new(bool with_msix)
{
	struct fake *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->hd.ops = &fake_ops;
	f->with_msix = with_msix;
	f->wakeup_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	assert_true(f->wakeup_fd >= 0);
	put16(f->cfg + 0x00, 0x144d);
	put16(f->cfg + 0x02, 0xa808);
	put16(f->cfg + 0x04, 0x0006); /* the claim set memory space + bus master */
	put16(f->cfg + 0x06, 0x0010); /* capability list */
	put32(f->cfg + 0x10, 0x4);    /* the dext's synthesized BAR types, address 0 */
	put32(f->cfg + 0x18, 0x8);
	put32(f->cfg + 0x20, 0x1);
	f->cfg[0x34] = MSI_POS;
	f->cfg[MSI_POS] = 0x05;
	f->cfg[MSI_POS + 1] = with_msix ? MSIX_POS : EXP_POS;
	put16(f->cfg + MSI_POS + 2, 0x018A); /* 64-bit, per-vector masking (24 bytes), 32 vectors */
	if (with_msix) {
		f->cfg[MSIX_POS] = 0x11;
		f->cfg[MSIX_POS + 1] = EXP_POS;
		put16(f->cfg + MSIX_POS + 2, 0x001F); /* 32 entries */
		put32(f->cfg + MSIX_POS + 4, MSIX_TABLE_OFF); /* BIR 0 */
		put32(f->cfg + MSIX_POS + 8, MSIX_PBA_OFF);   /* BIR 0 */
	}
	f->cfg[EXP_POS] = 0x10;
	f->cfg[EXP_POS + 1] = PM_POS;
	f->cfg[PM_POS] = 0x01;
	f->cfg[PM_POS + 1] = 0;
	/* ReBAR -> AER -> SR-IOV -> LTR -> L1SS (header: id, version 1, next) */
	put32(f->cfg + REBAR_POS, 0x0015 | (1u << 16) | ((uint32_t)AER_POS << 20));
	put32(f->cfg + AER_POS, 0x0001 | (1u << 16) | ((uint32_t)SRIOV_POS << 20));
	put32(f->cfg + SRIOV_POS, 0x0010 | (1u << 16) | ((uint32_t)LTR_POS << 20));
	put32(f->cfg + LTR_POS, 0x0018 | (1u << 16) | ((uint32_t)L1SS_POS << 20));
	put32(f->cfg + L1SS_POS, 0x001E | (1u << 16));
	return f;
}

static void fake_free(struct fake *f)
{
	close(f->wakeup_fd);
	free(f);
}

struct ctx {
	struct fake *f;
	struct passthrough *pt;
};

static int setup_common(void **state, bool with_msix)
{
	struct ctx *c = calloc(1, sizeof(*c));
	char err[256] = "";

	assert_non_null(c);
	c->f = fake_new(with_msix);
	c->pt = passthrough_create(&c->f->hd, err, sizeof(err));
	if (!c->pt)
		fail_msg("passthrough_create: %s", err);
	c->f->ncalls = 0;
	*state = c;
	return 0;
}

static int setup(void **state)
{
	return setup_common(state, true);
}

static int setup_msi_only(void **state)
{
	return setup_common(state, false);
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	passthrough_destroy(c->pt);
	fake_free(c->f);
	free(c);
	return 0;
}

static uint32_t cfg_read32(struct passthrough *pt, uint32_t off)
{
	uint8_t b[4];

	assert_int_equal(passthrough_config_read(pt, off, b, 4), 0);
	return get32(b);
}

static void cfg_write32(struct passthrough *pt, uint32_t off, uint32_t v)
{
	uint8_t b[4];

	put32(b, v);
	assert_int_equal(passthrough_config_write(pt, off, b, 4), 0);
}

static void cfg_write16(struct passthrough *pt, uint32_t off, uint16_t v)
{
	uint8_t b[2];

	put16(b, v);
	assert_int_equal(passthrough_config_write(pt, off, b, 2), 0);
}

static void expect_call(const struct fake *f, unsigned i, char what, uint64_t off, unsigned width, uint64_t v)
{
	assert_true(i < f->ncalls);
	assert_int_equal(f->calls[i].what, what);
	assert_int_equal(f->calls[i].offset, off);
	assert_int_equal(f->calls[i].width, width);
	assert_int_equal(f->calls[i].value, v);
}

static void test_command_forwarded_bytewise_status_dropped(void **state)
{
	struct ctx *c = *state;
	struct passthrough_stats st;

	cfg_write32(c->pt, 0x04, 0xFFFF0406); /* COMMAND 0x0406, STATUS all ones (RW1C) */
	assert_int_equal(c->f->ncalls, 2);
	expect_call(c->f, 0, 'w', 0x04, 1, 0x06);
	expect_call(c->f, 1, 'w', 0x05, 1, 0x04);
	passthrough_stats(c->pt, &st);
	assert_int_equal(st.config_bytes_dropped, 2);
	assert_int_equal(st.config_writes_forwarded, 2);

	c->f->ncalls = 0;
	cfg_write16(c->pt, 0x06, 0xFFFF);
	assert_int_equal(c->f->ncalls, 0);
}

static void test_bars_emulated_with_sizing(void **state)
{
	struct ctx *c = *state;

	/* Before any write: address 0 plus the type bits. */
	assert_int_equal(cfg_read32(c->pt, 0x10), 0x4);
	assert_int_equal(cfg_read32(c->pt, 0x18), 0x8);
	assert_int_equal(cfg_read32(c->pt, 0x20), 0x1);
	for (uint32_t off = 0x10; off < 0x28; off += 4)
		cfg_write32(c->pt, off, 0xFFFFFFFF);
	cfg_write32(c->pt, 0x30, 0xFFFFFFFF);
	assert_int_equal(c->f->ncalls, 0); /* nothing reached the host */
	assert_int_equal(cfg_read32(c->pt, 0x10), (uint32_t)~(BAR0_SIZE - 1) | 0x4);
	assert_int_equal(cfg_read32(c->pt, 0x14), 0xFFFFFFFF); /* upper half of a 16 KiB BAR */
	assert_int_equal(cfg_read32(c->pt, 0x18), (uint32_t)~(BAR2_SIZE - 1) | 0x8);
	assert_int_equal(cfg_read32(c->pt, 0x1C), 0);
	assert_int_equal(cfg_read32(c->pt, 0x20), (uint32_t)~(BAR4_SIZE - 1) | 0x1);
	assert_int_equal(cfg_read32(c->pt, 0x24), 0);
	assert_int_equal(cfg_read32(c->pt, 0x30), 0); /* no ROM */

	/* An address is kept (masked), byte writes merge. */
	cfg_write32(c->pt, 0x18, 0xFEBC1234);
	assert_int_equal(cfg_read32(c->pt, 0x18), 0xFEBC1008);
	uint8_t b = 0xAB;
	assert_int_equal(passthrough_config_write(c->pt, 0x1B, &b, 1), 0);
	assert_int_equal(cfg_read32(c->pt, 0x18), 0xABBC1008);
	assert_int_equal(c->f->ncalls, 0);
}

static void test_capability_writes(void **state)
{
	struct ctx *c = *state;
	uint8_t buf[24];

	memset(buf, 0xFF, sizeof(buf));
	/* MSI (24 bytes), MSI-X (12), DEVCTL, DEVCTL2, ReBAR control: dropped. */
	assert_int_equal(passthrough_config_write(c->pt, MSI_POS, buf, 24), 0);
	assert_int_equal(passthrough_config_write(c->pt, MSIX_POS, buf, 12), 0);
	cfg_write16(c->pt, EXP_POS + 0x08, 0x8000); /* initiate FLR */
	cfg_write16(c->pt, EXP_POS + 0x28, 0xFFFF);
	cfg_write32(c->pt, REBAR_POS + 8, 0x00000700);
	assert_int_equal(c->f->ncalls, 0);

	/* Next to them: forwarded, in aligned pieces. */
	cfg_write16(c->pt, EXP_POS + 0x10, 0x0040); /* LNKCTL */
	cfg_write32(c->pt, 0x40, 0x11223344);
	uint8_t three[3] = { 0xA1, 0xA2, 0xA3 };
	assert_int_equal(passthrough_config_write(c->pt, 0x41, three, 3), 0);
	/* DEVCTL (dropped) + DEVSTA (forwarded) in one dword. */
	cfg_write32(c->pt, EXP_POS + 0x08, 0x00042FFF);
	assert_int_equal(c->f->ncalls, 5);
	expect_call(c->f, 0, 'w', EXP_POS + 0x10, 2, 0x0040);
	expect_call(c->f, 1, 'w', 0x40, 4, 0x11223344);
	expect_call(c->f, 2, 'w', 0x41, 1, 0xA1);
	expect_call(c->f, 3, 'w', 0x42, 2, 0xA3A2);
	expect_call(c->f, 4, 'w', EXP_POS + 0x0A, 2, 0x0004);
}

static void test_config_reads_and_bounds(void **state)
{
	struct ctx *c = *state;
	uint8_t b[8];

	assert_int_equal(passthrough_config_size(c->pt), 4096);
	/* MSI hidden from the list: 0x34 now points at MSI-X. */
	assert_int_equal(passthrough_config_read(c->pt, 0x34, b, 1), 0);
	assert_int_equal(b[0], MSIX_POS);
	/* MSI-X table size clamped to the host's 8 vectors; other bytes intact. */
	assert_int_equal(cfg_read32(c->pt, MSIX_POS), 0x00079011u);
	assert_int_equal(cfg_read32(c->pt, MSIX_POS + 4), 0x2000);
	/* A read that starts mid-dword still gets the adjusted bytes. */
	assert_int_equal(passthrough_config_read(c->pt, MSIX_POS + 1, b, 2), 0);
	assert_int_equal(b[0], EXP_POS);
	assert_int_equal(b[1], 0x07);
	assert_int_equal(cfg_read32(c->pt, 0x00), 0xa808144d);

	assert_int_equal(passthrough_config_read(c->pt, 4095, b, 2), -EINVAL);
	assert_int_equal(passthrough_config_read(c->pt, 4096, b, 1), -EINVAL);
	assert_int_equal(passthrough_config_read(c->pt, 8, b, UINT32_MAX), -EINVAL);
	assert_int_equal(passthrough_config_write(c->pt, 4094, b, 4), -EINVAL);
	assert_int_equal(passthrough_config_write(c->pt, UINT32_MAX, b, 2), -EINVAL);
	assert_int_equal(c->f->ncalls, 0);
}

static void test_msi_only_device(void **state)
{
	struct ctx *c = *state;
	uint8_t b;

	assert_int_equal(passthrough_irq_count(c->pt, PT_IRQ_MSI), NVEC);
	assert_int_equal(passthrough_irq_count(c->pt, PT_IRQ_MSIX), 0);
	assert_int_equal(passthrough_config_read(c->pt, 0x34, &b, 1), 0);
	assert_int_equal(b, MSI_POS); /* MSI stays visible */
	/* 32 vectors capable on the device, 8 set up by the host: reads 8. */
	assert_int_equal(cfg_read32(c->pt, MSI_POS), 0x01860000u | EXP_POS << 8 | 0x05);
	cfg_write16(c->pt, MSI_POS + 2, 0x0001);
	assert_int_equal(c->f->ncalls, 0);
}

/* prefer_msi on a function with both: MSI offered, MSI-X out of the list. */
static void test_prefer_msi_hides_msix(void **state)
{
	const struct passthrough_opts opts = { .prefer_msi = true };
	struct fake *f = fake_new(true);
	struct passthrough *pt;
	char err[256] = "";
	uint8_t b;

	(void)state;
	pt = passthrough_create_opts(&f->hd, &opts, err, sizeof(err));
	if (!pt)
		fail_msg("passthrough_create_opts: %s", err);
	f->ncalls = 0;
	assert_int_equal(passthrough_irq_count(pt, PT_IRQ_MSI), NVEC);
	assert_int_equal(passthrough_irq_count(pt, PT_IRQ_MSIX), 0);
	assert_int_equal(passthrough_config_read(pt, 0x34, &b, 1), 0);
	assert_int_equal(b, MSI_POS);
	/* MSI's next pointer skips MSI-X: MSI -> PCIe -> PM. */
	assert_int_equal(cfg_read32(pt, MSI_POS), 0x01860000u | EXP_POS << 8 | 0x05);
	/* The hidden MSI-X's control is still never written to the host. */
	cfg_write16(pt, MSIX_POS + 2, 0x8000);
	assert_int_equal(f->ncalls, 0);
	passthrough_destroy(pt);
	/* Without MSI, prefer_msi changes nothing: MSI-X stays. */
	fake_free(f);
	f = fake_new(true);
	f->cfg[0x34] = MSIX_POS;
	pt = passthrough_create_opts(&f->hd, &opts, err, sizeof(err));
	assert_non_null(pt);
	assert_int_equal(passthrough_irq_count(pt, PT_IRQ_MSIX), NVEC);
	assert_int_equal(passthrough_irq_count(pt, PT_IRQ_MSI), 0);
	passthrough_destroy(pt);
	fake_free(f);
}

static void test_bar_bounds_and_widths(void **state)
{
	struct ctx *c = *state;
	uint8_t buf[16];

	assert_int_equal(passthrough_bar_size(c->pt, 0), BAR0_SIZE);
	assert_int_equal(passthrough_bar_size(c->pt, 1), 0);
	assert_int_equal(passthrough_bar_size(c->pt, PT_ROM_INDEX), 0);
	assert_int_equal(passthrough_bar_read(c->pt, 0, BAR0_SIZE - 2, buf, 4), -EINVAL);
	assert_int_equal(passthrough_bar_read(c->pt, 0, BAR0_SIZE, buf, 1), -EINVAL);
	assert_int_equal(passthrough_bar_read(c->pt, 0, UINT64_MAX - 1, buf, 4), -EINVAL);
	assert_int_equal(passthrough_bar_read(c->pt, 0, 0, buf, 0), -EINVAL);
	assert_int_equal(passthrough_bar_write(c->pt, 1, 0, buf, 4), -EINVAL);
	assert_int_equal(passthrough_bar_write(c->pt, 3, 0, buf, 4), -EINVAL);
	assert_int_equal(passthrough_bar_write(c->pt, 6, 0, buf, 4), -EINVAL);
	assert_int_equal(passthrough_bar_write(c->pt, 4, BAR4_SIZE - 1, buf, 2), -EINVAL);
	assert_int_equal(c->f->ncalls, 0);

	/* 16 bytes at offset 4: split 4 + 8 + 4, bytes land in order. */
	for (unsigned i = 0; i < 16; i++)
		buf[i] = (uint8_t)(0x10 + i);
	assert_int_equal(passthrough_bar_write(c->pt, 0, BAR0_SIZE - 20, buf, 16), 0);
	assert_int_equal(c->f->ncalls, 3);
	expect_call(c->f, 0, 'W', BAR0_SIZE - 20, 4, 0x13121110);
	expect_call(c->f, 1, 'W', BAR0_SIZE - 16, 8, 0x1b1a191817161514ULL);
	expect_call(c->f, 2, 'W', BAR0_SIZE - 8, 4, 0x1f1e1d1c);
	assert_memory_equal(c->f->bar0 + BAR0_SIZE - 20, buf, 16);

	/* 3 bytes at offset 1: 1 + 2. */
	c->f->ncalls = 0;
	memset(buf, 0, sizeof(buf));
	assert_int_equal(passthrough_bar_read(c->pt, 0, BAR0_SIZE - 19, buf, 3), 0);
	assert_int_equal(c->f->ncalls, 2);
	assert_int_equal(c->f->calls[0].width, 1);
	assert_int_equal(c->f->calls[1].width, 2);
	assert_int_equal(buf[0], 0x11);
	assert_int_equal(buf[1], 0x12);
	assert_int_equal(buf[2], 0x13);

	/* A mapped BAR goes through the pointer, not through mmio calls. */
	c->f->ncalls = 0;
	uint32_t v = 0xCAFEF00D;
	assert_int_equal(passthrough_bar_write(c->pt, 2, 0x100, &v, 4), 0);
	assert_int_equal(c->f->ncalls, 0);
	assert_int_equal(get32(c->f->bar2 + 0x100), 0xCAFEF00D);
	c->f->bar2[0xFFF] = 0x5A;
	assert_int_equal(passthrough_bar_read(c->pt, 2, 0xFFF, buf, 1), 0);
	assert_int_equal(buf[0], 0x5A);
	assert_int_equal(passthrough_bar_read(c->pt, 2, 0xFFF, buf, 2), -EINVAL);

	struct passthrough_stats st;
	passthrough_stats(c->pt, &st);
	assert_int_equal(st.bar_writes, 4);
	assert_int_equal(st.bar_reads, 3);
}

/* The test's VMM: one eventfd per vector and a state per vector. */
struct vmm {
	int efd[NVEC];
	enum pt_vector_state state[NVEC];
	unsigned last_index;
};

static enum pt_vector_state vmm_state(void *opaque, unsigned index, unsigned vector)
{
	struct vmm *v = opaque;

	v->last_index = index;
	return vector < NVEC ? v->state[vector] : PT_VECTOR_OFF;
}

static int vmm_trigger(void *opaque, unsigned index, unsigned vector)
{
	struct vmm *v = opaque;
	uint64_t one = 1;

	assert_int_equal(index, PT_IRQ_MSIX);
	assert_true(vector < NVEC);
	return write(v->efd[vector], &one, 8) == 8 ? 0 : -errno;
}

static uint64_t efd_take(int fd)
{
	uint64_t n = 0;

	if (read(fd, &n, 8) != 8)
		return 0;
	return n;
}

static void test_interrupt_routing(void **state)
{
	struct ctx *c = *state;
	struct vmm vmm = { .state = { PT_VECTOR_READY, PT_VECTOR_MASKED, PT_VECTOR_OFF, PT_VECTOR_READY } };
	struct pt_irq_sink sink = { vmm_state, vmm_trigger, &vmm };
	struct passthrough_stats st;
	uint64_t one = 1;

	for (unsigned i = 0; i < NVEC; i++) {
		vmm.efd[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		assert_true(vmm.efd[i] >= 0);
	}
	assert_int_equal(passthrough_irq_count(c->pt, PT_IRQ_MSIX), NVEC);
	assert_int_equal(passthrough_irq_count(c->pt, PT_IRQ_MSI), 0);
	assert_int_equal(passthrough_irq_count(c->pt, PT_IRQ_INTX), 0);
	assert_int_equal(passthrough_irq_count(c->pt, PT_IRQ_ERR), 0);
	assert_int_equal(passthrough_irq_wakeup_fd(c->pt), c->f->wakeup_fd);
	assert_int_equal(c->f->mask[0], 0); /* all masked after create */

	assert_int_equal(passthrough_set_irq_sink(c->pt, &sink), 0);
	assert_int_equal(vmm.last_index, PT_IRQ_MSIX);
	assert_int_equal(c->f->mask[0], 0x0B); /* vectors with a notifier: 0, 1, 3 */
	passthrough_stats(c->pt, &st);
	assert_int_equal(st.vectors_enabled, 3);

	/* The host raises 0, 1, 2, 3, 5 and a stray 200. */
	c->f->pending[0] = 0x2F;
	c->f->pending[3] = 1ULL << (200 - 192);
	assert_int_equal(write(c->f->wakeup_fd, &one, 8), 8);
	assert_int_equal(passthrough_handle_irq(c->pt), 0);
	assert_int_equal(efd_take(c->f->wakeup_fd), 0); /* drained */
	assert_int_equal(efd_take(vmm.efd[0]), 1);
	assert_int_equal(efd_take(vmm.efd[3]), 1);
	assert_int_equal(efd_take(vmm.efd[1]), 0);
	assert_int_equal(efd_take(vmm.efd[2]), 0);
	assert_int_equal(efd_take(vmm.efd[5]), 0);
	passthrough_stats(c->pt, &st);
	assert_int_equal(st.irq_delivered, 2);
	assert_int_equal(st.irq_latched, 1);
	assert_int_equal(st.irq_dropped, 3);

	/* Unmasking vector 1 delivers what was latched, once. */
	vmm.state[1] = PT_VECTOR_READY;
	unsigned mask_calls = c->f->set_mask_calls;
	assert_int_equal(passthrough_irqs_changed(c->pt), 0);
	assert_int_equal(c->f->set_mask_calls, mask_calls); /* same mask: no host call */
	assert_int_equal(efd_take(vmm.efd[1]), 1);
	assert_int_equal(passthrough_irqs_changed(c->pt), 0);
	assert_int_equal(efd_take(vmm.efd[1]), 0);
	passthrough_stats(c->pt, &st);
	assert_int_equal(st.irq_delivered, 3);

	/* Vector 3 loses its notifier: the host mask follows. */
	vmm.state[3] = PT_VECTOR_OFF;
	vmm.state[7] = PT_VECTOR_READY;
	assert_int_equal(passthrough_irqs_changed(c->pt), 0);
	assert_int_equal(c->f->mask[0], 0x83);

	/* Detached: everything masked, nothing delivered. */
	assert_int_equal(passthrough_set_irq_sink(c->pt, NULL), 0);
	assert_int_equal(c->f->mask[0], 0);
	c->f->pending[0] = 0x1;
	assert_int_equal(passthrough_handle_irq(c->pt), 0);
	assert_int_equal(efd_take(vmm.efd[0]), 0);
	passthrough_stats(c->pt, &st);
	assert_int_equal(st.irq_delivered, 3);
	assert_int_equal(st.irq_dropped, 4);
	for (unsigned i = 0; i < NVEC; i++)
		close(vmm.efd[i]);
}

static void test_reset_forwarded(void **state)
{
	struct ctx *c = *state;
	struct vmm vmm = { .state = { PT_VECTOR_READY, PT_VECTOR_MASKED } };
	struct pt_irq_sink sink = { vmm_state, vmm_trigger, &vmm };
	struct passthrough_stats st;

	for (unsigned i = 0; i < NVEC; i++)
		vmm.efd[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	assert_int_equal(passthrough_set_irq_sink(c->pt, &sink), 0);
	cfg_write16(c->pt, 0x04, 0x0402);
	cfg_write32(c->pt, 0x10, 0xFE000000);
	c->f->pending[0] = 0x2; /* latched on masked vector 1 */
	assert_int_equal(passthrough_handle_irq(c->pt), 0);

	c->f->ncalls = 0;
	unsigned mask_calls = c->f->set_mask_calls;
	assert_int_equal(passthrough_reset(c->pt), 0);
	assert_int_equal(c->f->resets, 1);
	/* COMMAND re-applied as the guest left it, byte by byte; mask re-applied. */
	assert_int_equal(c->f->ncalls, 2);
	expect_call(c->f, 0, 'w', 0x04, 1, 0x02);
	expect_call(c->f, 1, 'w', 0x05, 1, 0x04);
	assert_int_equal(c->f->set_mask_calls, mask_calls + 1);
	assert_int_equal(c->f->mask[0], 0x3);
	/* The latch died with the reset. */
	vmm.state[1] = PT_VECTOR_READY;
	assert_int_equal(passthrough_irqs_changed(c->pt), 0);
	assert_int_equal(efd_take(vmm.efd[1]), 0);
	assert_int_equal(cfg_read32(c->pt, 0x10), 0xFE000004); /* a guest reset keeps BARs */

	/* The VMM leaves: reset, claim-time COMMAND, BARs forgotten, all masked. */
	c->f->ncalls = 0;
	assert_int_equal(passthrough_client_gone(c->pt), 0);
	assert_int_equal(c->f->resets, 2);
	expect_call(c->f, 0, 'w', 0x04, 1, 0x06);
	expect_call(c->f, 1, 'w', 0x05, 1, 0x00);
	assert_int_equal(c->f->mask[0], 0);
	assert_int_equal(cfg_read32(c->pt, 0x10), 0x4);
	passthrough_stats(c->pt, &st);
	assert_int_equal(st.resets, 2);
	for (unsigned i = 0; i < NVEC; i++)
		close(vmm.efd[i]);
}

/*
 * DEVCTL never reaches the host, but a guest's Initiate-FLR write (Linux's
 * pcie_flr, sysfs "reset") becomes the host's reset verb when the host
 * offers FLR; other DEVCTL writes and hosts without FLR reset nothing.
 */
static void test_flr_write_resets_the_function(void **state)
{
	struct ctx *c = *state;
	struct fake *f = fake_new(true);
	struct passthrough *pt;
	struct passthrough_stats st;
	char err[256] = "";

	/* The default fake has no FLR in DEVCAP: DEVCTL writes are only dropped. */
	cfg_write16(c->pt, EXP_POS + 0x08, 0x8000);
	assert_int_equal(c->f->resets, 0);

	put32(f->cfg + EXP_POS + 0x04, 0x10000000); /* DEVCAP: FLR capable */
	pt = passthrough_create(&f->hd, err, sizeof(err));
	assert_non_null(pt);
	cfg_write16(pt, 0x04, 0x0006);
	f->ncalls = 0;
	cfg_write16(pt, EXP_POS + 0x08, 0x2810); /* MPS/MRRS: no FLR bit */
	assert_int_equal(f->resets, 0);
	assert_int_equal(f->ncalls, 0);
	cfg_write16(pt, EXP_POS + 0x08, 0xA810); /* Initiate FLR */
	assert_int_equal(f->resets, 1);
	/* DEVCTL itself still never reached the host; COMMAND was re-applied. */
	expect_call(f, 0, 'w', 0x04, 1, 0x06);
	expect_call(f, 1, 'w', 0x05, 1, 0x00);
	assert_int_equal(f->ncalls, 2);
	/* A byte write of DEVCTL's upper half alone also initiates it. */
	assert_int_equal(passthrough_config_write(pt, EXP_POS + 0x09, (uint8_t[]){ 0x80 }, 1), 0);
	assert_int_equal(f->resets, 2);
	passthrough_stats(pt, &st);
	assert_int_equal(st.resets, 2);
	passthrough_destroy(pt);
	fake_free(f);
}

static void test_create_checks_the_host(void **state)
{
	char err[256] = "";
	struct fake *f = fake_new(true);
	struct passthrough *pt;

	(void)state;
	f->impossible_bar = true;
	assert_null(passthrough_create(&f->hd, err, sizeof(err)));
	assert_non_null(strstr(err, "BAR2"));
	assert_int_equal(f->set_mask_calls, 0);

	/* A host that cannot read extended config space: 256 bytes, no ReBAR rule. */
	f->impossible_bar = false;
	f->legacy_only = true;
	pt = passthrough_create(&f->hd, err, sizeof(err));
	assert_non_null(pt);
	assert_int_equal(passthrough_config_size(pt), 256);
	uint8_t b[4];
	assert_int_equal(passthrough_config_read(pt, 0xFC, b, 4), 0);
	assert_int_equal(passthrough_config_read(pt, 0x100, b, 4), -EINVAL);

	/* A host error on a forwarded write comes back to the caller. */
	f->fail_config_write = true;
	b[0] = 1;
	assert_int_equal(passthrough_config_write(pt, 0x3C, b, 1), -EIO);
	assert_int_equal(passthrough_config_write(pt, 0x06, b, 1), 0); /* dropped: never asked */
	passthrough_destroy(pt);
	fake_free(f);
}

/* After create: none of the policy's protected writes reach the host. */
static void expect_policy_intact(struct fake *f, struct passthrough *pt)
{
	uint8_t ones[24];

	memset(ones, 0xFF, sizeof(ones));
	f->ncalls = 0;
	assert_int_equal(passthrough_config_write(pt, MSI_POS, ones, 24), 0);
	assert_int_equal(passthrough_config_write(pt, MSIX_POS, ones, 12), 0);
	cfg_write16(pt, EXP_POS + 0x08, 0x8000); /* initiate FLR */
	cfg_write16(pt, EXP_POS + 0x28, 0xFFFF);
	cfg_write32(pt, REBAR_POS + 8, 0x00000700);
	assert_int_equal(f->ncalls, 0);
	/* And the hidden MSI stays hidden. */
	uint8_t b;
	assert_int_equal(passthrough_config_read(pt, 0x34, &b, 1), 0);
	assert_int_equal(b, MSIX_POS);
}

/*
 * Capability lists are the host's: loops (self, back to the start, between
 * extended capabilities) end the walk without costing the policy any of its
 * rules.  A ReBAR capability that points at itself used to fill the rule
 * table, so MSI-X, MSI and DEVCTL writes (FLR!) reached the host.
 */
static void test_capability_list_loops(void **state)
{
	static const struct { uint32_t at; uint32_t hdr; uint32_t at2; uint32_t hdr2; uint8_t exp_next; } cases[] = {
		{ REBAR_POS, 0x0015 | 1u << 16 | (uint32_t)REBAR_POS << 20, 0, 0, 0 },        /* ReBAR -> itself */
		{ REBAR_POS, 0x0015 | 1u << 16 | 0x140u << 20, 0x140, 0x0001 | 1u << 16 | (uint32_t)REBAR_POS << 20,
		  0 },                                                                         /* ReBAR <-> AER */
		{ REBAR_POS, 0x0015 | 1u << 16, 0, 0, MSI_POS },                               /* PCIe -> MSI: loop */
		{ REBAR_POS, 0x0015 | 1u << 16, 0, 0, EXP_POS },                               /* PCIe -> itself */
		{ REBAR_POS, 0x0015 | 1u << 16 | 0xFFCu << 20, 0xFFC, 0x0015 | 1u << 16 | 0x100u << 20,
		  0xFF },                                                                      /* end of space; 0xFF */
		{ REBAR_POS, 0x0015 | 1u << 16 | 0x0F0u << 20, 0, 0, 0 },                      /* into the legacy space */
	};
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fake *f = fake_new(true);

		put32(f->cfg + cases[i].at, cases[i].hdr);
		if (cases[i].at2)
			put32(f->cfg + cases[i].at2, cases[i].hdr2);
		f->cfg[EXP_POS + 1] = cases[i].exp_next;
		struct passthrough *pt = passthrough_create(&f->hd, err, sizeof(err));
		if (!pt)
			fail_msg("case %zu: passthrough_create: %s", i, err);
		expect_policy_intact(f, pt);
		assert_int_equal(passthrough_irq_count(pt, PT_IRQ_MSIX), NVEC);
		passthrough_destroy(pt);
		fake_free(f);
	}
}

/*
 * ReBAR's length follows its number of BARs: writes to a capability right
 * after a one-BAR ReBAR reach the host; an impossible count drops all six.
 */
static void test_rebar_length(void **state)
{
	char err[256];

	(void)state;
	for (uint32_t nbars = 0; nbars < 8; nbars++) {
		struct fake *f = fake_new(true);
		uint32_t len = nbars >= 1 && nbars <= 6 ? 4 + 8 * nbars : 52;

		put32(f->cfg + REBAR_POS + 8, nbars << 5);
		struct passthrough *pt = passthrough_create(&f->hd, err, sizeof(err));
		assert_non_null(pt);
		for (uint32_t off = REBAR_POS + 4; off < REBAR_POS + 64; off += 4) {
			f->ncalls = 0;
			cfg_write32(pt, off, 0x12345678);
			if (off < REBAR_POS + len) {
				assert_int_equal(f->ncalls, 0);
			} else {
				assert_int_equal(f->ncalls, 1);
				expect_call(f, 0, 'w', off, 4, 0x12345678);
			}
		}
		passthrough_destroy(pt);
		fake_free(f);
	}
}

/* Bytes the policy must keep from the host (with the fake's layout). */
static bool protected_byte(uint32_t off)
{
	return (off >= 0x06 && off < 0x08) || (off >= 0x10 && off < 0x28) || (off >= 0x30 && off < 0x34) ||
	       (off >= MSI_POS && off < MSI_POS + 24) || (off >= MSIX_POS && off < MSIX_POS + 12) ||
	       (off >= EXP_POS + 0x08 && off < EXP_POS + 0x0A) || (off >= EXP_POS + 0x28 && off < EXP_POS + 0x2A) ||
	       (off >= REBAR_POS + 4 && off < REBAR_POS + 4 + 8 * 6) || (off >= PM_POS + 4 && off < PM_POS + 8) ||
	       (off >= AER_POS + 4 && off < AER_POS + 0x2C) || (off >= SRIOV_POS + 4 && off < SRIOV_POS + 0x40) ||
	       (off >= LTR_POS + 4 && off < LTR_POS + 8) || (off >= L1SS_POS + 4 && off < L1SS_POS + 0x10);
}

/*
 * Random writes anywhere: every guest byte outside the protected set reaches
 * the host exactly once with its value, in aligned writes (COMMAND one byte
 * at a time); no protected byte ever does; out-of-range writes reach nothing.
 */
static void test_random_writes_follow_the_policy(void **state)
{
	struct ctx *c = *state;
	uint64_t seed = 0x9E3779B97F4A7C15ull;
	uint8_t buf[64];

	for (unsigned iter = 0; iter < 20000; iter++) {
		seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
		uint32_t off = (uint32_t)(seed % 4200), len = (uint32_t)((seed >> 16) % 40) + 1;
		for (uint32_t i = 0; i < len; i++)
			buf[i] = (uint8_t)(seed >> (i % 56));
		c->f->ncalls = 0;
		int rc = passthrough_config_write(c->pt, off, buf, len);
		if (off + len > 4096) {
			assert_int_equal(rc, -EINVAL);
			assert_int_equal(c->f->ncalls, 0);
			continue;
		}
		assert_int_equal(rc, 0);
		uint8_t seen[64] = { 0 };
		for (unsigned k = 0; k < c->f->ncalls; k++) {
			const struct call *w = &c->f->calls[k];
			assert_int_equal(w->what, 'w');
			assert_true(w->offset >= off && w->offset + w->width <= off + len);
			if (w->offset + w->width > 0x04 && w->offset < 0x06)
				assert_int_equal(w->width, 1); /* COMMAND: byte by byte */
			assert_int_equal(w->offset % w->width, 0);
			for (unsigned b = 0; b < w->width; b++) {
				uint32_t at = (uint32_t)w->offset + b;
				assert_false(protected_byte(at));
				assert_int_equal((uint8_t)(w->value >> (8 * b)), buf[at - off]);
				seen[at - off]++;
			}
		}
		for (uint32_t i = 0; i < len; i++)
			assert_int_equal(seen[i], protected_byte(off + i) ? 0 : 1);
	}
}

/*
 * Issue 11, item 5: the host's MSI-X table and PBA inside BAR0.  A VMM's
 * REGION_WRITE there (which QEMU never sends: it emulates the table) would
 * rewrite the vectors the dext programmed: dropped and counted.  Reads are
 * answered 0 without touching the host.  Bytes next to them pass.
 */
static void test_msix_table_and_pba_protected(void **state)
{
	struct ctx *c = *state;
	struct passthrough_stats st;
	uint8_t entry[16], buf[16];

	memset(entry, 0xAB, sizeof(entry));
	memset(c->f->bar0 + MSIX_TABLE_OFF, 0x11, 32 * 16);
	memset(c->f->bar0 + MSIX_PBA_OFF, 0x22, 8);
	/* entry 0 (address, data, mask), the last entry, the PBA */
	assert_int_equal(passthrough_bar_write(c->pt, 0, MSIX_TABLE_OFF, entry, 16), 0);
	assert_int_equal(passthrough_bar_write(c->pt, 0, MSIX_TABLE_OFF + 31 * 16 + 12, entry, 4), 0);
	assert_int_equal(passthrough_bar_write(c->pt, 0, MSIX_PBA_OFF, entry, 8), 0);
	assert_int_equal(c->f->ncalls, 0);
	for (unsigned i = 0; i < 32 * 16; i++)
		assert_int_equal(c->f->bar0[MSIX_TABLE_OFF + i], 0x11);
	assert_int_equal(c->f->bar0[MSIX_PBA_OFF], 0x22);
	/* reads: zero, and the host is not asked */
	memset(buf, 0xFF, sizeof(buf));
	assert_int_equal(passthrough_bar_read(c->pt, 0, MSIX_TABLE_OFF, buf, 16), 0);
	assert_int_equal(passthrough_bar_read(c->pt, 0, MSIX_PBA_OFF, buf + 8, 8), 0);
	for (unsigned i = 0; i < 16; i++)
		assert_int_equal(buf[i], 0);
	assert_int_equal(c->f->ncalls, 0);
	passthrough_stats(c->pt, &st);
	assert_int_equal(st.msix_writes_dropped, 4); /* 8 + 8, 4, 8 */
	assert_int_equal(st.msix_reads_zeroed, 3);
	assert_int_equal(st.bar_writes, 4); /* counted as accesses, none reached the host */
	/* right after the table and right before the PBA: the device's */
	assert_int_equal(passthrough_bar_write(c->pt, 0, MSIX_TABLE_OFF + 32 * 16, entry, 8), 0);
	assert_int_equal(passthrough_bar_write(c->pt, 0, MSIX_PBA_OFF - 8, entry, 8), 0);
	assert_int_equal(c->f->ncalls, 2);
	expect_call(c->f, 0, 'W', MSIX_TABLE_OFF + 32 * 16, 8, 0xABABABABABABABABULL);
	expect_call(c->f, 1, 'W', MSIX_PBA_OFF - 8, 8, 0xABABABABABABABABULL);
}

/*
 * The per-register review of "forward the rest" (docs/passthrough.md):
 * PM control/status, AER, SR-IOV, LTR and L1SS registers are the host's.
 */
static void test_host_owned_capabilities_dropped(void **state)
{
	struct ctx *c = *state;
	uint8_t ones[0x40];

	memset(ones, 0xFF, sizeof(ones));
	cfg_write16(c->pt, PM_POS + 4, 0x0003); /* PowerState D3hot */
	assert_int_equal(passthrough_config_write(c->pt, AER_POS + 4, ones, 0x28), 0); /* clear, mask, severity */
	cfg_write16(c->pt, SRIOV_POS + 8, 0x0009);  /* VF Enable + VF MSE */
	cfg_write16(c->pt, SRIOV_POS + 0x10, 0x0040); /* NumVFs */
	cfg_write32(c->pt, LTR_POS + 4, 0x10031003);
	cfg_write32(c->pt, L1SS_POS + 8, 0x0000000F); /* ASPM/PCI-PM L1.1/L1.2 enables */
	cfg_write32(c->pt, L1SS_POS + 0xC, 0x000000FF);
	assert_int_equal(c->f->ncalls, 0);
	/* their headers and what follows the last one still pass */
	cfg_write32(c->pt, L1SS_POS + 0x10, 0x12345678);
	cfg_write16(c->pt, PM_POS + 2, 0x0003); /* PMC (read-only on the host; forwarded) */
	assert_int_equal(c->f->ncalls, 2);
	expect_call(c->f, 0, 'w', L1SS_POS + 0x10, 4, 0x12345678);
	expect_call(c->f, 1, 'w', PM_POS + 2, 2, 0x0003);
}


/*
 * Surprise removal (issue 14, item 3): once the host function is gone the
 * model answers as a missing PCIe function: every read all ones (the
 * emulated BARs too; a mapped BAR is not touched), writes dropped without
 * reaching the host, bounds still checked, no interrupt delivered, no reset.
 */
static void test_removed_function_reads_all_ones(void **state)
{
	struct ctx *c = *state;
	struct vmm vmm = { .state = { PT_VECTOR_READY, PT_VECTOR_MASKED } };
	struct pt_irq_sink sink = { vmm_state, vmm_trigger, &vmm };
	struct passthrough_stats st;
	uint8_t buf[64], ones[64];
	uint64_t one = 1;

	memset(ones, 0xFF, sizeof(ones));
	for (unsigned i = 0; i < NVEC; i++) {
		vmm.efd[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		assert_true(vmm.efd[i] >= 0);
	}
	assert_int_equal(passthrough_set_irq_sink(c->pt, &sink), 0);
	/* A BAR write of the guest's, then a vector latched while masked: both from before. */
	put32(buf, 0xFEDC0000);
	assert_int_equal(passthrough_config_write(c->pt, 0x10, buf, 4), 0);
	c->f->pending[0] = 0x2;
	assert_int_equal(passthrough_handle_irq(c->pt), 0);
	c->f->bar2[8] = 0x5A;
	assert_true(passthrough_present(c->pt));

	/* Pulled while the guest reads a trapped BAR: that read is all ones already. */
	c->f->pull_on_mmio = true;
	memset(buf, 0, sizeof(buf));
	assert_int_equal(passthrough_bar_read(c->pt, 0, 0x10, buf, 8), 0);
	assert_memory_equal(buf, ones, 8);
	assert_false(passthrough_present(c->pt));
	assert_false(host_device_present(&c->f->hd));
	c->f->pull_on_mmio = false;
	c->f->ncalls = 0;
	unsigned mask_calls = c->f->set_mask_calls;

	/* Config space: all ones, the emulated BAR the guest wrote included, any width. */
	memset(buf, 0, sizeof(buf));
	assert_int_equal(passthrough_config_read(c->pt, 0, buf, 64), 0);
	assert_memory_equal(buf, ones, 64);
	assert_int_equal(passthrough_config_read(c->pt, 0x10, buf, 4), 0);
	assert_int_equal(get32(buf), 0xFFFFFFFFu);
	assert_int_equal(passthrough_config_read(c->pt, 0x101, buf, 1), 0);
	assert_int_equal(buf[0], 0xFF);
	/* BARs: trapped and mapped alike; the mapping is not read. */
	assert_int_equal(passthrough_bar_read(c->pt, 0, 0, buf, 4), 0);
	assert_memory_equal(buf, ones, 4);
	assert_int_equal(passthrough_bar_read(c->pt, 2, 8, buf, 1), 0);
	assert_int_equal(buf[0], 0xFF);
	/* Writes: dropped, successful, nothing reaches the host or the mapping. */
	put32(buf, 0x6);
	assert_int_equal(passthrough_config_write(c->pt, 0x04, buf, 2), 0);
	assert_int_equal(passthrough_bar_write(c->pt, 0, 0x100, buf, 4), 0);
	assert_int_equal(passthrough_bar_write(c->pt, 2, 8, buf, 1), 0);
	assert_int_equal(c->f->bar2[8], 0x5A);
	assert_int_equal(c->f->ncalls, 0);
	/* Bounds are still the guest's problem. */
	assert_int_equal(passthrough_bar_read(c->pt, 0, BAR0_SIZE, buf, 4), -EINVAL);
	assert_int_equal(passthrough_bar_read(c->pt, 1, 0, buf, 4), -EINVAL);
	assert_int_equal(passthrough_config_read(c->pt, 4095, buf, 2), -EINVAL);

	/* Interrupts: pending bits and latches never reach the VMM. */
	c->f->pending[0] = 0x1;
	assert_int_equal(write(c->f->wakeup_fd, &one, 8), 8);
	assert_int_equal(passthrough_handle_irq(c->pt), -ENODEV);
	assert_int_equal(efd_take(c->f->wakeup_fd), 0); /* drained all the same */
	assert_int_equal(c->f->pending[0], 0x1);        /* not even read */
	vmm.state[1] = PT_VECTOR_READY;
	assert_int_equal(passthrough_irqs_changed(c->pt), 0);
	for (unsigned i = 0; i < NVEC; i++)
		assert_int_equal(efd_take(vmm.efd[i]), 0);
	assert_int_equal(c->f->set_mask_calls, mask_calls);
	/* Reset and the VMM leaving: nothing to do, no error. */
	assert_int_equal(passthrough_reset(c->pt), 0);
	assert_int_equal(passthrough_client_gone(c->pt), 0);
	assert_int_equal(c->f->resets, 0);
	passthrough_stats(c->pt, &st);
	assert_int_equal(st.irq_delivered, 0);
	assert_int_equal(st.removed_reads, 6);
	assert_int_equal(st.removed_writes, 3);
	assert_int_equal(st.resets, 0);
	for (unsigned i = 0; i < NVEC; i++)
		close(vmm.efd[i]);
}

/* Pulled during a BAR write: the rest of the write goes nowhere, no error. */
static void test_removed_during_write(void **state)
{
	struct ctx *c = *state;
	uint8_t buf[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
	struct passthrough_stats st;

	c->f->pull_on_mmio = true;
	assert_int_equal(passthrough_bar_write(c->pt, 0, 0x100, buf, 16), 0);
	assert_false(passthrough_present(c->pt));
	assert_int_equal(c->f->ncalls, 0);
	passthrough_stats(c->pt, &st);
	assert_int_equal(st.removed_writes, 1);
	assert_int_equal(st.bar_writes, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_command_forwarded_bytewise_status_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bars_emulated_with_sizing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_capability_writes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_config_reads_and_bounds, setup, teardown),
		cmocka_unit_test_setup_teardown(test_msi_only_device, setup_msi_only, teardown),
		cmocka_unit_test(test_prefer_msi_hides_msix),
		cmocka_unit_test_setup_teardown(test_bar_bounds_and_widths, setup, teardown),
		cmocka_unit_test_setup_teardown(test_interrupt_routing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset_forwarded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flr_write_resets_the_function, setup, teardown),
		cmocka_unit_test(test_create_checks_the_host),
		cmocka_unit_test(test_capability_list_loops),
		cmocka_unit_test(test_rebar_length),
		cmocka_unit_test_setup_teardown(test_random_writes_follow_the_policy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_msix_table_and_pba_protected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_owned_capabilities_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_removed_function_reads_all_ones, setup, teardown),
		cmocka_unit_test_setup_teardown(test_removed_during_write, setup, teardown),
	};

	return cmocka_run_group_tests_name("passthrough", tests, NULL, NULL);
}
