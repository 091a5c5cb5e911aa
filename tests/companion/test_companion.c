// SPDX-License-Identifier: MIT
/* Byte-level unit tests of the apple-dma-pci companion (companion/). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>

#include "companion_fixture.h"

static int setup(void **state)
{
	*state = fixture_new(0, 0, false);
	return 0;
}

static int teardown(void **state)
{
	fixture_free(*state);
	return 0;
}

/* ---- config space ---- */

static void test_config_identity(void **state)
{
	struct fixture *fx = *state;
	uint8_t cfg[256];
	static const uint8_t head[16] = { 0x36, 0x1b, 0x15, 0x00, 0, 0, 0, 0, 0x00, 0x00, 0x80, 0x08, 0, 0, 0, 0 };

	assert_int_equal(companion_config_read(fx->c, 0, cfg, sizeof(cfg)), 0);
	assert_memory_equal(cfg, head, sizeof(head));
	assert_int_equal(ld32(cfg + 0x10), 0); /* BAR0: mem32, not prefetchable */
	for (int bar = 1; bar < 6; bar++)
		assert_int_equal(ld32(cfg + 0x10 + 4 * bar), 0);
	assert_int_equal(ld32(cfg + 0x2c), 0x11001af4); /* subsystem */
	assert_int_equal(ld32(cfg + 0x30), 0);          /* no ROM */
	assert_int_equal(cfg[0x34], 0);                 /* no capabilities */
	assert_int_equal(cfg[0x06] & 0x10, 0);          /* STATUS: no cap list */
	assert_int_equal(cfg[0x3d], 0);                 /* interrupt pin: none */
	for (int i = 0x40; i < 256; i++)
		assert_int_equal(cfg[i], 0);
	/* a partial read at the end, and reads leaving the space */
	assert_int_equal(companion_config_read(fx->c, 255, cfg, 1), 0);
	assert_int_equal(companion_config_read(fx->c, 255, cfg, 2), -EINVAL);
	assert_int_equal(companion_config_read(fx->c, 256, cfg, 1), -EINVAL);
	assert_int_equal(companion_config_read(fx->c, 0xffffffffu, cfg, 2), -EINVAL);
	assert_int_equal(companion_config_read(fx->c, 4, cfg, 0xfffffffeu), -EINVAL);
}

static void test_config_bar_sizing(void **state)
{
	struct fixture *fx = *state;
	uint8_t v[4];

	st32(v, 0xffffffff);
	assert_int_equal(companion_config_write(fx->c, 0x10, v, 4), 0);
	assert_int_equal(companion_config_read(fx->c, 0x10, v, 4), 0);
	assert_int_equal(ld32(v), 0xfffff000); /* 4 KiB, mem32 */
	st32(v, 0xfebf1234);
	assert_int_equal(companion_config_write(fx->c, 0x10, v, 4), 0);
	assert_int_equal(companion_config_read(fx->c, 0x10, v, 4), 0);
	assert_int_equal(ld32(v), 0xfebf1000);
	/* other BARs are not implemented: sizing reads 0 */
	st32(v, 0xffffffff);
	assert_int_equal(companion_config_write(fx->c, 0x14, v, 4), 0);
	assert_int_equal(companion_config_read(fx->c, 0x14, v, 4), 0);
	assert_int_equal(ld32(v), 0);
}

static void test_config_writable_bits(void **state)
{
	struct fixture *fx = *state;
	uint8_t ones[256], cfg[256];

	memset(ones, 0xff, sizeof(ones));
	assert_int_equal(companion_config_write(fx->c, 0, ones, sizeof(ones)), 0);
	assert_int_equal(companion_config_read(fx->c, 0, cfg, sizeof(cfg)), 0);
	assert_int_equal(ld32(cfg), 0x00151b36);       /* ids fixed */
	assert_int_equal(cfg[0x04], 0x06);             /* memory space + bus master */
	assert_int_equal(cfg[0x05], 0x04);             /* INTx disable */
	assert_int_equal(cfg[0x06] | cfg[0x07], 0);    /* STATUS fixed */
	assert_int_equal(ld32(cfg + 0x08), 0x08800000); /* class fixed */
	assert_int_equal(cfg[0x0c], 0xff);             /* cache line size */
	assert_int_equal(cfg[0x0e], 0);                /* header type 0 */
	assert_int_equal(ld32(cfg + 0x10), 0xfffff000);
	assert_int_equal(ld32(cfg + 0x2c), 0x11001af4);
	assert_int_equal(cfg[0x34], 0);
	assert_int_equal(cfg[0x3c], 0xff);             /* interrupt line */
	assert_int_equal(cfg[0x3d], 0);                /* pin stays 0 */
	for (int i = 0x40; i < 256; i++)
		assert_int_equal(cfg[i], 0);
	assert_int_equal(companion_config_write(fx->c, 250, ones, 7), -EINVAL);
	/* reset clears COMMAND */
	companion_reset(fx->c);
	assert_int_equal(companion_config_read(fx->c, 4, cfg, 2), 0);
	assert_int_equal(cfg[0] | cfg[1], 0);
}

/* ---- registers ---- */

static void test_registers_initial(void **state)
{
	struct fixture *fx = *state;

	assert_int_equal(companion_mmio_read(fx->c, 0x00, 4), 2);
	assert_int_equal(companion_mmio_read(fx->c, 0x04, 4), MANAGED_BDF);
	assert_int_equal(companion_mmio_read(fx->c, 0x08, 4), 4096);
	assert_int_equal(companion_mmio_read(fx->c, 0x0c, 4), 0);
	/* write-only registers read 0 */
	assert_int_equal(companion_mmio_read(fx->c, 0x10, 4), 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x14, 4), 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x18, 4), 0);
	/* v3 */
	assert_int_equal(companion_mmio_read(fx->c, 0x1c, 4), 7);
	assert_int_equal(companion_mmio_read(fx->c, 0x3c, 4), 0);
	/* every unlisted offset reads 0 */
	for (uint64_t off = 0x40; off < 4096; off += 4)
		assert_int_equal(companion_mmio_read(fx->c, off, 4), 0);
}

static void test_registers_budget(void **state)
{
	struct fixture *fx = fixture_new(0x60000000ull | (3ull << 32), 65536, false);

	(void)state;
	assert_int_equal(companion_mmio_read(fx->c, 0x20, 4), 0x60000000);
	assert_int_equal(companion_mmio_read(fx->c, 0x24, 4), 3);
	assert_int_equal(companion_mmio_read(fx->c, 0x28, 4), 65536);
	assert_int_equal(companion_mmio_read(fx->c, 0x2c, 4), 16384);
	assert_int_equal(companion_mmio_read(fx->c, 0x30, 4), 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x34, 4), 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x38, 4), 0);
	assert_int_not_equal(map1(fx, BUF_GPA, 0x3000), 0);
	assert_int_not_equal(map1(fx, BUF_GPA, 0x5000), 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x30, 4), 0x8000);
	assert_int_equal(companion_mmio_read(fx->c, 0x34, 4), 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x38, 4), 2);
	fixture_free(fx);
}

static void test_registers_read_only(void **state)
{
	struct fixture *fx = *state;
	struct companion_stats st;

	for (uint64_t off = 0; off < 0x40; off += 4)
		if (off != 0x10 && off != 0x14 && off != 0x18 && off != 0x3c)
			companion_mmio_write(fx->c, off, 4, 0xdeadbeef);
	for (uint64_t off = 0x40; off < 4096; off += 4)
		companion_mmio_write(fx->c, off, 4, 0xdeadbeef);
	assert_int_equal(companion_mmio_read(fx->c, 0x00, 4), 2);
	assert_int_equal(companion_mmio_read(fx->c, 0x04, 4), MANAGED_BDF);
	assert_int_equal(companion_mmio_read(fx->c, 0x08, 4), 4096);
	assert_int_equal(companion_mmio_read(fx->c, 0x0c, 4), 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x1c, 4), 7);
	assert_int_equal(companion_mmio_read(fx->c, 0x38, 4), 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x100, 4), 0);
	companion_stats(fx->c, &st);
	assert_int_equal(st.doorbells, 0);
	assert_int_equal(st.bad_accesses, 0);
}

static void test_guest_features(void **state)
{
	struct fixture *fx = *state;
	struct companion_stats st;

	companion_mmio_write(fx->c, 0x3c, 4, 0x5);
	assert_int_equal(companion_mmio_read(fx->c, 0x3c, 4), 0x5);
	/* bits the device does not offer are dropped */
	companion_mmio_write(fx->c, 0x3c, 4, 0xfffffffe);
	assert_int_equal(companion_mmio_read(fx->c, 0x3c, 4), 0x6);
	companion_stats(fx->c, &st);
	assert_int_equal(st.guest_features, 0x6);
	companion_reset(fx->c);
	assert_int_equal(companion_mmio_read(fx->c, 0x3c, 4), 0);
}

static void test_narrow_and_bad_accesses(void **state)
{
	struct fixture *fx = *state;
	struct companion_stats st;

	/* 1- and 2-byte reads inside a register see its bytes */
	assert_int_equal(companion_mmio_read(fx->c, 0x04, 1), 0x28);
	assert_int_equal(companion_mmio_read(fx->c, 0x05, 1), 0x00);
	assert_int_equal(companion_mmio_read(fx->c, 0x08, 2), 4096);
	assert_int_equal(companion_mmio_read(fx->c, 0x09, 1), 0x10);
	assert_int_equal(companion_mmio_read(fx->c, 0x09, 2), 0x10);
	assert_int_equal(companion_mmio_read(fx->c, 0x1c, 1), 7);
	companion_stats(fx->c, &st);
	assert_int_equal(st.bad_accesses, 0);
	/* bad widths, misaligned 32-bit, crossing a register, beyond BAR0: 0 */
	assert_int_equal(companion_mmio_read(fx->c, 0x00, 0), 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x00, 3), 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x00, 8), 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x01, 4), 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x03, 2), 0);
	assert_int_equal(companion_mmio_read(fx->c, 4096, 4), 0);
	assert_int_equal(companion_mmio_read(fx->c, UINT64_MAX - 1, 2), 0);
	assert_int_equal(companion_mmio_read(fx->c, UINT64_MAX, 1), 0);
	companion_stats(fx->c, &st);
	assert_int_equal(st.bad_accesses, 8);

	/* only aligned 32-bit writes act: a narrow doorbell does not ring */
	put_map_req(fx, REQ_GPA, 0, BUF_GPA, 0x1000);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 1, REQ_GPA, RESP_GPA);
	companion_mmio_write(fx->c, 0x10, 4, (uint32_t)PAGE_GPA);
	companion_mmio_write(fx->c, 0x18, 1, 1);
	companion_mmio_write(fx->c, 0x18, 2, 1);
	companion_mmio_write(fx->c, 0x19, 4, 1);
	companion_mmio_write(fx->c, 0x18, 8, 1);
	companion_mmio_write(fx->c, 0x18 + 4096, 4, 1);
	/* a narrow write to CMD_GPA_LO is ignored as well */
	companion_mmio_write(fx->c, 0x10, 2, 0x5555);
	companion_stats(fx->c, &st);
	assert_int_equal(st.doorbells, 0);
	assert_int_equal(st.bad_accesses, 14);
	assert_int_equal(page_status(fx, PAGE_GPA), 0xAA);
	companion_mmio_write(fx->c, 0x18, 4, 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x0c, 4), APPLE_DMA_OK);
	assert_int_equal(page_status(fx, PAGE_GPA), APPLE_DMA_OK);
	assert_int_equal(fx->f->nregs, 1);
}

static void test_cmd_gpa_halves(void **state)
{
	struct fixture *fx = *state;

	/* HI written alone: page at 2^32 + PAGE_GPA is outside RAM */
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_UNMAP_ALL, 0, 0, 0);
	companion_mmio_write(fx->c, 0x10, 4, (uint32_t)PAGE_GPA);
	companion_mmio_write(fx->c, 0x14, 4, 1);
	companion_mmio_write(fx->c, 0x18, 4, 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x0c, 4), APPLE_DMA_INVAL);
	assert_int_equal(page_status(fx, PAGE_GPA), 0xAA);
	/* rewriting LO keeps HI */
	companion_mmio_write(fx->c, 0x10, 4, (uint32_t)PAGE_GPA);
	companion_mmio_write(fx->c, 0x18, 4, 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x0c, 4), APPLE_DMA_INVAL);
	/* clearing HI alone makes the page reachable */
	companion_mmio_write(fx->c, 0x14, 4, 0);
	companion_mmio_write(fx->c, 0x18, 4, 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x0c, 4), APPLE_DMA_OK);
	assert_int_equal(page_status(fx, PAGE_GPA), APPLE_DMA_OK);
}

/* ---- batch-level INVAL ---- */

/* Ring with a page that must be refused; checks STATUS, the page's status
 * field (when the page is in writable RAM) and that no response was written. */
static void expect_inval(struct fixture *fx, uint64_t page_gpa, bool page_written)
{
	uint8_t before[64];
	struct companion_stats st0, st1;

	memcpy(before, gp(fx, RESP_GPA), sizeof(before));
	companion_stats(fx->c, &st0);
	assert_int_equal(ring(fx, page_gpa), APPLE_DMA_INVAL);
	companion_stats(fx->c, &st1);
	assert_int_equal(st1.inval, st0.inval + 1);
	assert_int_equal(st1.map_entries, st0.map_entries);
	assert_int_equal(st1.unmap_entries, st0.unmap_entries);
	if (page_written)
		assert_int_equal(page_status(fx, page_gpa), APPLE_DMA_INVAL);
	assert_memory_equal(gp(fx, RESP_GPA), before, sizeof(before));
	assert_int_equal(fx->f->registers, 0);
}

static void test_inval_no_page(void **state)
{
	struct fixture *fx = *state;
	uint8_t *snap = malloc(SIZE_A);

	memcpy(snap, fx->a, SIZE_A);
	companion_mmio_write(fx->c, 0x18, 4, 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x0c, 4), APPLE_DMA_INVAL);
	assert_memory_equal(fx->a, snap, SIZE_A); /* nothing written to RAM */
	free(snap);
}

static void test_inval_page_unreachable(void **state)
{
	struct fixture *fx = *state;
	uint8_t *snap = malloc(SIZE_A);

	memcpy(snap, fx->a, SIZE_A);
	/* outside RAM, in a no-fd range, straddling A and B, partly beyond B */
	static const uint64_t pages[] = { 0x1000, GPA_NOVA, GPA_B - 16, GPA_B + SIZE_B - 31, 0xffffffffffffffe0ull };

	for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++)
		expect_inval(fx, pages[i], false);
	assert_memory_equal(fx->a, snap, SIZE_A);
	free(snap);
}

static void test_inval_page_fields(void **state)
{
	struct fixture *fx = *state;

	put_map_req(fx, REQ_GPA, 0, BUF_GPA, 0x1000);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 0, REQ_GPA, RESP_GPA); /* count 0 */
	expect_inval(fx, PAGE_GPA, true);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 4097, REQ_GPA, RESP_GPA); /* > MAX_ENTRIES */
	expect_inval(fx, PAGE_GPA, true);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_UNMAP, 0xffffffffu, REQ_GPA, RESP_GPA);
	expect_inval(fx, PAGE_GPA, true);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 1, 0, RESP_GPA); /* req 0 */
	expect_inval(fx, PAGE_GPA, true);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 1, REQ_GPA, 0); /* resp 0 */
	expect_inval(fx, PAGE_GPA, true);
	static const uint32_t bad_types[] = { 0, 4, 0x100, 0xffffffffu };
	for (size_t i = 0; i < 4; i++) {
		put_page(fx, PAGE_GPA, bad_types[i], 1, REQ_GPA, RESP_GPA);
		expect_inval(fx, PAGE_GPA, true);
	}
	/* the page in B works the same */
	put_page(fx, GPA_B, 7, 1, REQ_GPA, RESP_GPA);
	expect_inval(fx, GPA_B, true);
}

static void test_inval_arrays(void **state)
{
	struct fixture *fx = *state;
	/* request array: outside RAM, no-fd, straddling A|B, running off B */
	static const uint64_t bad_req[] = { 0x1000, GPA_NOVA, GPA_B - 16, GPA_B + SIZE_B - 16 };
	/* response array: the same plus read-only memory */
	static const uint64_t bad_resp[] = { 0x1000, GPA_NOVA, GPA_B - 24, GPA_B + SIZE_B - 24, GPA_RO };

	put_map_req(fx, REQ_GPA, 0, BUF_GPA, 0x1000);
	put_map_req(fx, REQ_GPA, 1, BUF_GPA, 0x1000);
	for (size_t i = 0; i < sizeof(bad_req) / sizeof(bad_req[0]); i++) {
		put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 2, bad_req[i], RESP_GPA);
		expect_inval(fx, PAGE_GPA, true);
	}
	for (size_t i = 0; i < sizeof(bad_resp) / sizeof(bad_resp[0]); i++) {
		put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 2, REQ_GPA, bad_resp[i]);
		expect_inval(fx, PAGE_GPA, true);
		put_page(fx, PAGE_GPA, APPLE_DMA_CMD_UNMAP, 2, REQ_GPA, bad_resp[i]);
		expect_inval(fx, PAGE_GPA, true);
	}
	/* a 2-entry MAP response (48 bytes) that ends 8 bytes past the RAM */
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 2, REQ_GPA, GPA_B + SIZE_B - 40);
	expect_inval(fx, PAGE_GPA, true);
	/* ... while a 2-entry UNMAP response (32 bytes) there fits */
	put_unmap_req(fx, REQ_GPA, 0, 12345, 1);
	put_unmap_req(fx, REQ_GPA, 1, 12346, 1);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_UNMAP, 2, REQ_GPA, GPA_B + SIZE_B - 32);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_IOERR);
	assert_int_equal(ld32(gp(fx, GPA_B + SIZE_B - 32) + 8), APPLE_DMA_IOERR);
	assert_int_equal(ld32(gp(fx, GPA_B + SIZE_B - 16) + 8), APPLE_DMA_IOERR);
}

static void test_readonly_page(void **state)
{
	struct fixture *fx = *state;

	/* requests may live in read-only memory; a read-only page is processed
	 * but its status field cannot be written: STATUS alone reports */
	put_map_req(fx, GPA_RO + 0x100, 0, BUF_GPA, 0x1000);
	put_page(fx, GPA_RO, APPLE_DMA_CMD_MAP, 1, GPA_RO + 0x100, RESP_GPA);
	assert_int_equal(ring(fx, GPA_RO), APPLE_DMA_OK);
	assert_int_equal(page_status(fx, GPA_RO), 0xAA);
	assert_int_equal(map_status(fx, 0), APPLE_DMA_OK);
	assert_int_equal(fx->f->nregs, 1);
}

/* ---- MAP ---- */

static void test_map_one(void **state)
{
	struct fixture *fx = *state;
	const struct fake_reg *r;
	uint64_t id;

	put_map_req(fx, REQ_GPA, 0, BUF_GPA + 0x234, 0x1800);
	memset(gp(fx, RESP_GPA), 0xee, 24 + 8);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 1, REQ_GPA, RESP_GPA);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_OK);
	assert_int_equal(page_status(fx, PAGE_GPA), APPLE_DMA_OK);
	assert_int_equal(ld32(gp(fx, PAGE_GPA) + 12), 0); /* reserved untouched */
	id = map_id(fx, 0);
	assert_int_not_equal(id, 0);
	r = fake_hd_find(fx->f, id);
	assert_non_null(r);
	assert_ptr_equal(r->host_addr, gp(fx, BUF_GPA + 0x234));
	assert_int_equal(r->size, 0x1800);
	assert_int_equal(map_dma(fx, 0), r->bus);
	assert_int_equal(map_dma_len(fx, 0), 0x1800);
	assert_int_equal(map_status(fx, 0), APPLE_DMA_OK);
	/* nothing written past the one response */
	for (int i = 24; i < 32; i++)
		assert_int_equal(gp(fx, RESP_GPA)[i], 0xee);
	assert_int_equal(companion_mmio_read(fx->c, 0x38, 4), 1);
	assert_int_equal(companion_mmio_read(fx->c, 0x30, 4), 0x1800);
}

static void test_map_flags_ignored(void **state)
{
	struct fixture *fx = *state;

	put_map_req(fx, REQ_GPA, 0, BUF_GPA, 0x1000);
	st32(gp(fx, REQ_GPA) + 12, 0xffffffff);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 1, REQ_GPA, RESP_GPA);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_OK);
	assert_int_equal(map_status(fx, 0), APPLE_DMA_OK);
}

static void test_map_entry_errors(void **state)
{
	struct fixture *fx = *state;
	struct companion_stats st;
	/* entry i: gpa, len, expected status */
	static const struct {
		uint64_t gpa;
		uint32_t len;
		uint32_t status;
	} e[] = {
		{ BUF_GPA, 0x1000, APPLE_DMA_OK },
		{ BUF_GPA, 0, APPLE_DMA_INVAL },                             /* empty */
		{ 0xfffffffffffff000ull, 0x2000, APPLE_DMA_INVAL },          /* wraps */
		{ 0x1000, 0x1000, APPLE_DMA_IOERR },                         /* not RAM */
		{ GPA_B - 0x800, 0x1000, APPLE_DMA_IOERR },                  /* straddles A|B */
		{ GPA_RO, 0x1000, APPLE_DMA_IOERR },                         /* read-only */
		{ GPA_NOVA, 0x1000, APPLE_DMA_IOERR },                       /* no fd */
		{ GPA_B + SIZE_B - 0x800, 0x1000, APPLE_DMA_IOERR },         /* runs off */
		{ GPA_B, (uint32_t)SIZE_B, APPLE_DMA_OK },                   /* all of B */
		{ GPA_A + SIZE_A - 1, 1, APPLE_DMA_OK },                     /* last byte of A */
	};
	const uint32_t n = sizeof(e) / sizeof(e[0]);

	for (uint32_t i = 0; i < n; i++)
		put_map_req(fx, REQ_GPA, i, e[i].gpa, e[i].len);
	memset(gp(fx, RESP_GPA), 0xee, n * 24);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, n, REQ_GPA, RESP_GPA);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_IOERR);
	assert_int_equal(page_status(fx, PAGE_GPA), APPLE_DMA_IOERR);
	for (uint32_t i = 0; i < n; i++) {
		assert_int_equal(map_status(fx, i), e[i].status);
		if (e[i].status == APPLE_DMA_OK) {
			const struct fake_reg *r = fake_hd_find(fx->f, map_id(fx, i));

			assert_non_null(r);
			assert_ptr_equal(r->host_addr, gp(fx, e[i].gpa));
			assert_int_equal(map_dma_len(fx, i), e[i].len);
		} else {
			/* failed entries: zeros, never stale bytes */
			assert_int_equal(map_id(fx, i), 0);
			assert_int_equal(map_dma(fx, i), 0);
			assert_int_equal(map_dma_len(fx, i), 0);
		}
	}
	assert_int_equal(fx->f->nregs, 3);
	companion_stats(fx->c, &st);
	assert_int_equal(st.map_entries, n);
	assert_int_equal(st.failed_entries, 7);
	assert_int_equal(st.ioerr, 1);
	assert_int_equal(st.live_ids, 3);
	assert_int_equal(st.live_bytes, 0x1000 + SIZE_B + 1);
}

static void test_map_host_refuses(void **state)
{
	struct fixture *fx = *state;

	fx->f->fail_register_call = 2;
	for (uint32_t i = 0; i < 3; i++)
		put_map_req(fx, REQ_GPA, i, BUF_GPA + i * 0x1000, 0x1000);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 3, REQ_GPA, RESP_GPA);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_IOERR);
	assert_int_equal(map_status(fx, 0), APPLE_DMA_OK);
	assert_int_equal(map_status(fx, 1), APPLE_DMA_IOERR);
	assert_int_equal(map_status(fx, 2), APPLE_DMA_OK);
	assert_int_equal(fx->f->nregs, 2);
	assert_int_equal(companion_mmio_read(fx->c, 0x38, 4), 2);
	assert_int_not_equal(map_id(fx, 0), map_id(fx, 2));
}

static void test_map_short_bus_range_fails(void **state)
{
	struct fixture *fx = *state;

	fx->f->short_bus_len = true;
	assert_int_equal(map1(fx, BUF_GPA, 0x4000), 0);
	assert_int_equal(map_status(fx, 0), APPLE_DMA_IOERR);
	/* registered then unregistered: nothing left behind */
	assert_int_equal(fx->f->registers, 1);
	assert_int_equal(fx->f->unregisters, 1);
	assert_int_equal(fx->f->nregs, 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x38, 4), 0);
}

static void test_same_range_twice(void **state)
{
	struct fixture *fx = *state;
	uint64_t id1 = map1(fx, BUF_GPA, 0x2000);
	uint64_t id2 = map1(fx, BUF_GPA, 0x2000);

	assert_int_not_equal(id1, 0);
	assert_int_not_equal(id2, 0);
	assert_int_not_equal(id1, id2);
	assert_int_equal(fx->f->nregs, 2);
	assert_int_equal(unmap1(fx, id1, 0x2000), APPLE_DMA_OK);
	assert_null(fake_hd_find(fx->f, id1));
	assert_non_null(fake_hd_find(fx->f, id2));
	assert_int_equal(unmap1(fx, id1, 0x2000), APPLE_DMA_IOERR); /* stale */
	assert_int_equal(unmap1(fx, id2, 0x2000), APPLE_DMA_OK);
	assert_int_equal(fx->f->nregs, 0);
}

/* ---- UNMAP ---- */

static void test_unmap_entry_errors(void **state)
{
	struct fixture *fx = *state;
	uint64_t id = map1(fx, BUF_GPA, 0x3000);
	uint64_t id2 = map1(fx, BUF_GPA + 0x3000, 0x1000);
	struct companion_stats st;

	assert_int_not_equal(id, 0);
	put_unmap_req(fx, REQ_GPA, 0, id, 0x2000);       /* wrong size: kept */
	put_unmap_req(fx, REQ_GPA, 1, 0, 0x1000);        /* id 0 */
	put_unmap_req(fx, REQ_GPA, 2, id + 1000, 0x1000); /* never issued */
	put_unmap_req(fx, REQ_GPA, 3, id2, 0x1000);      /* ok */
	put_unmap_req(fx, REQ_GPA, 4, id2, 0x1000);      /* twice in a batch */
	put_unmap_req(fx, REQ_GPA, 5, id, 0x3000);       /* right size: ok */
	memset(gp(fx, RESP_GPA), 0xee, 6 * 16);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_UNMAP, 6, REQ_GPA, RESP_GPA);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_IOERR);
	assert_int_equal(page_status(fx, PAGE_GPA), APPLE_DMA_IOERR);
	static const uint32_t want[] = { APPLE_DMA_IOERR, APPLE_DMA_IOERR, APPLE_DMA_IOERR,
					 APPLE_DMA_OK,    APPLE_DMA_IOERR, APPLE_DMA_OK };
	for (uint32_t i = 0; i < 6; i++) {
		uint8_t *r = gp(fx, RESP_GPA) + i * 16;

		assert_int_equal(ld64(r), ld64(gp(fx, REQ_GPA) + i * 16)); /* id echoed */
		assert_int_equal(ld32(r + 8), want[i]);
		assert_int_equal(ld32(r + 12), 0); /* reserved */
	}
	assert_int_equal(fx->f->nregs, 0);
	companion_stats(fx->c, &st);
	assert_int_equal(st.unmap_entries, 6);
	assert_int_equal(st.live_ids, 0);
	assert_int_equal(st.live_bytes, 0);
}

static void test_unmap_host_refuses(void **state)
{
	struct fixture *fx = *state;
	uint64_t id = map1(fx, BUF_GPA, 0x1000);

	fx->f->fail_unregister = true;
	assert_int_equal(unmap1(fx, id, 0x1000), APPLE_DMA_IOERR);
	assert_int_equal(companion_mmio_read(fx->c, 0x38, 4), 1); /* still live */
	fx->f->fail_unregister = false;
	assert_int_equal(unmap1(fx, id, 0x1000), APPLE_DMA_OK);
	assert_int_equal(fx->f->nregs, 0);
}

static void test_unmap_host_lost_it(void **state)
{
	struct fixture *fx = *state;
	uint64_t id = map1(fx, BUF_GPA, 0x1000);

	/* the host forgot the key behind our back: IOERR, and the id is gone */
	fx->f->nregs = 0;
	fx->f->live_bytes = 0;
	assert_int_equal(unmap1(fx, id, 0x1000), APPLE_DMA_IOERR);
	assert_int_equal(companion_mmio_read(fx->c, 0x38, 4), 0);
	assert_int_equal(unmap1(fx, id, 0x1000), APPLE_DMA_IOERR);
}

/* ---- batches ---- */

static void test_batch_4096(void **state)
{
	struct fixture *fx = *state;
	struct companion_stats st;
	uint64_t ids[4096];

	for (uint32_t i = 0; i < 4096; i++)
		put_map_req(fx, REQ_GPA, i, BUF_GPA + (uint64_t)i * 64, 64 + (i % 7));
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 4096, REQ_GPA, RESP_GPA);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_OK);
	for (uint32_t i = 0; i < 4096; i++) {
		const struct fake_reg *r;

		assert_int_equal(map_status(fx, i), APPLE_DMA_OK);
		ids[i] = map_id(fx, i);
		r = fake_hd_find(fx->f, ids[i]);
		assert_non_null(r);
		assert_ptr_equal(r->host_addr, gp(fx, BUF_GPA + (uint64_t)i * 64));
		assert_int_equal(map_dma(fx, i), r->bus);
		assert_int_equal(map_dma_len(fx, i), 64 + (i % 7));
		if (i > 0)
			assert_true(ids[i] != ids[i - 1]);
	}
	assert_int_equal(fx->f->nregs, 4096);
	assert_int_equal(companion_mmio_read(fx->c, 0x38, 4), 4096);
	/* unmap them all in reverse order in one batch */
	for (uint32_t i = 0; i < 4096; i++)
		put_unmap_req(fx, REQ_GPA, i, ids[4095 - i], 64 + ((4095 - i) % 7));
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_UNMAP, 4096, REQ_GPA, RESP_GPA);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_OK);
	for (uint32_t i = 0; i < 4096; i++)
		assert_int_equal(unmap_status(fx, i), APPLE_DMA_OK);
	assert_int_equal(fx->f->nregs, 0);
	companion_stats(fx->c, &st);
	assert_int_equal(st.live_ids, 0);
	assert_int_equal(st.live_bytes, 0);
	assert_int_equal(st.peak_ids, 4096);
	assert_int_equal(st.map_entries, 4096);
	assert_int_equal(st.unmap_entries, 4096);
	assert_int_equal(st.failed_entries, 0);
}

/* The id table under churn: unmap in a shuffled order, remap, unmap again. */
static void test_id_table_churn(void **state)
{
	struct fixture *fx = *state;
	static uint64_t ids[3000];
	static uint32_t order[3000];
	unsigned seed = 7;

	for (uint32_t i = 0; i < 3000; i++)
		put_map_req(fx, REQ_GPA, i, BUF_GPA + i, 1 + i % 100);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 3000, REQ_GPA, RESP_GPA);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_OK);
	for (uint32_t i = 0; i < 3000; i++) {
		ids[i] = map_id(fx, i);
		order[i] = i;
	}
	for (uint32_t i = 2999; i > 0; i--) {
		uint32_t j, t;

		seed = seed * 1103515245u + 12345u;
		j = (seed >> 8) % (i + 1);
		t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	/* half of them, shuffled, each twice in the batch: second is IOERR */
	for (uint32_t k = 0; k < 1500; k++) {
		put_unmap_req(fx, REQ_GPA, 2 * k, ids[order[k]], 1 + order[k] % 100);
		put_unmap_req(fx, REQ_GPA, 2 * k + 1, ids[order[k]], 1 + order[k] % 100);
	}
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_UNMAP, 3000, REQ_GPA, RESP_GPA);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_IOERR);
	for (uint32_t k = 0; k < 1500; k++) {
		assert_int_equal(unmap_status(fx, 2 * k), APPLE_DMA_OK);
		assert_int_equal(unmap_status(fx, 2 * k + 1), APPLE_DMA_IOERR);
	}
	assert_int_equal(fx->f->nregs, 1500);
	/* the other half is still found, in shuffled order */
	for (uint32_t k = 1500; k < 3000; k++)
		put_unmap_req(fx, REQ_GPA, k - 1500, ids[order[k]], 1 + order[k] % 100);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_UNMAP, 1500, REQ_GPA, RESP_GPA);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_OK);
	assert_int_equal(fx->f->nregs, 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x38, 4), 0);
}

static void test_dart_exhaustion_mid_batch(void **state)
{
	/* 100 mappings or 1 MiB, whichever comes first */
	struct fixture *fx = fixture_new(0x100000, 100, false);
	uint64_t ok_ids[200];
	uint32_t nok = 0;

	(void)state;
	/* 150 x 4 KiB: the mapping count runs out at entry 100 */
	for (uint32_t i = 0; i < 150; i++)
		put_map_req(fx, REQ_GPA, i, BUF_GPA + (uint64_t)i * 0x1000, 0x1000);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 150, REQ_GPA, RESP_GPA);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_IOERR);
	for (uint32_t i = 0; i < 150; i++) {
		assert_int_equal(map_status(fx, i), i < 100 ? APPLE_DMA_OK : APPLE_DMA_IOERR);
		if (i < 100)
			ok_ids[nok++] = map_id(fx, i);
	}
	assert_int_equal(fx->f->nregs, 100);
	assert_int_equal(companion_mmio_read(fx->c, 0x38, 4), 100);
	assert_int_equal(companion_mmio_read(fx->c, 0x30, 4), 100 * 0x1000);
	/* free 10, then a batch where the byte budget runs out first:
	 * 90 x 4 KiB = 360 KiB live; entries of 256 KiB: 2 fit (872 KiB),
	 * the third would exceed 1 MiB, a small one after it still fits */
	for (uint32_t i = 0; i < 10; i++)
		put_unmap_req(fx, REQ_GPA, i, ok_ids[i], 0x1000);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_UNMAP, 10, REQ_GPA, RESP_GPA);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_OK);
	for (uint32_t i = 0; i < 3; i++)
		put_map_req(fx, REQ_GPA, i, BUF_GPA + 0x100000, 0x40000);
	put_map_req(fx, REQ_GPA, 3, BUF_GPA, 0x1000);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 4, REQ_GPA, RESP_GPA);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_IOERR);
	assert_int_equal(map_status(fx, 0), APPLE_DMA_OK);
	assert_int_equal(map_status(fx, 1), APPLE_DMA_OK);
	assert_int_equal(map_status(fx, 2), APPLE_DMA_IOERR);
	assert_int_equal(map_status(fx, 3), APPLE_DMA_OK);
	assert_int_equal(fx->f->nregs, 93);
	assert_int_equal(fx->f->live_bytes, 91 * 0x1000 + 2 * 0x40000);
	assert_int_equal(companion_mmio_read(fx->c, 0x30, 4), fx->f->live_bytes);
	/* nothing leaks: UNMAP_ALL empties the DART */
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_UNMAP_ALL, 0, 0, 0);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_OK);
	assert_int_equal(fx->f->nregs, 0);
	assert_int_equal(fx->f->live_bytes, 0);
	fixture_free(fx);
}

static void test_overlapping_req_resp(void **state)
{
	struct fixture *fx = *state;

	/* responses written over the requests: every request must still be
	 * honoured as the guest wrote it */
	for (uint32_t i = 0; i < 64; i++)
		put_map_req(fx, REQ_GPA, i, BUF_GPA + (uint64_t)i * 0x100, 0x100 + i);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 64, REQ_GPA, REQ_GPA);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_OK);
	for (uint32_t i = 0; i < 64; i++) {
		uint8_t *r = gp(fx, REQ_GPA) + i * 24;
		const struct fake_reg *reg = fake_hd_find(fx->f, ld64(r));

		assert_non_null(reg);
		assert_ptr_equal(reg->host_addr, gp(fx, BUF_GPA + (uint64_t)i * 0x100));
		assert_int_equal(reg->size, 0x100 + i);
		assert_int_equal(ld32(r + 20), APPLE_DMA_OK);
	}
	/* and the command page itself as the array */
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 1, PAGE_GPA, PAGE_GPA);
	/* entry 0 = page bytes 0..15: gpa = type | count << 32 -> not RAM */
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_IOERR);
	assert_int_equal(ld32(gp(fx, PAGE_GPA) + 20), APPLE_DMA_IOERR);
	assert_int_equal(page_status(fx, PAGE_GPA), APPLE_DMA_IOERR);
}

/* ---- v3 UNMAP_ALL, lifetime ---- */

static void test_unmap_all(void **state)
{
	struct fixture *fx = *state;
	struct companion_stats st;

	for (int i = 0; i < 20; i++)
		assert_int_not_equal(map1(fx, BUF_GPA + (uint64_t)i * 0x1000, 0x1000), 0);
	assert_int_equal(fx->f->nregs, 20);
	/* count, req and resp are ignored (garbage here) */
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_UNMAP_ALL, 0xffffffff, 0x1234, 0);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_OK);
	assert_int_equal(page_status(fx, PAGE_GPA), APPLE_DMA_OK);
	assert_int_equal(fx->f->nregs, 0);
	companion_stats(fx->c, &st);
	assert_int_equal(st.live_ids, 0);
	assert_int_equal(st.live_bytes, 0);
	/* an empty UNMAP_ALL is fine too */
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_OK);
	/* host refusing: IOERR, and the ids are forgotten */
	assert_int_not_equal(map1(fx, BUF_GPA, 0x1000), 0);
	fx->f->fail_unregister = true;
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_UNMAP_ALL, 0, 0, 0);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_IOERR);
	assert_int_equal(companion_mmio_read(fx->c, 0x38, 4), 0);
	fx->f->fail_unregister = false;
}

static void test_reset(void **state)
{
	struct fixture *fx = *state;
	uint64_t id;

	for (int i = 0; i < 10; i++)
		assert_int_not_equal(map1(fx, BUF_GPA + (uint64_t)i * 0x1000, 0x1000), 0);
	id = map_id(fx, 0);
	companion_mmio_write(fx->c, 0x3c, 4, 7);
	companion_reset(fx->c);
	assert_int_equal(fx->f->nregs, 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x0c, 4), 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x38, 4), 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x30, 4), 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x3c, 4), 0);
	/* the command page address was cleared: a bare doorbell is INVAL */
	companion_mmio_write(fx->c, 0x18, 4, 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x0c, 4), APPLE_DMA_INVAL);
	/* ids from before the reset are unknown, and never handed out again */
	assert_int_equal(unmap1(fx, id, 0x1000), APPLE_DMA_IOERR);
	assert_true(map1(fx, BUF_GPA, 0x1000) > id);
}

/* The managed function was reset: every mapping goes, the registers stay. */
static void test_release_mappings(void **state)
{
	struct fixture *fx = *state;
	uint64_t id;

	for (int i = 0; i < 10; i++)
		assert_int_not_equal(map1(fx, BUF_GPA + (uint64_t)i * 0x1000, 0x1000), 0);
	id = map_id(fx, 0);
	companion_mmio_write(fx->c, 0x3c, 4, APPLE_DMA_FEAT_BUDGET);
	assert_int_equal(fx->f->nregs, 10);
	companion_release_mappings(fx->c);
	assert_int_equal(fx->f->nregs, 0);
	assert_int_equal(companion_mmio_read(fx->c, 0x38, 4), 0); /* LIVE_MAPPINGS */
	assert_int_equal(companion_mmio_read(fx->c, 0x30, 4), 0); /* LIVE_BYTES */
	assert_int_equal(companion_mmio_read(fx->c, 0x3c, 4), APPLE_DMA_FEAT_BUDGET);
	/* the old id is unknown; the command page address was kept */
	assert_int_equal(unmap1(fx, id, 0x1000), APPLE_DMA_IOERR);
	companion_release_mappings(fx->c); /* nothing left: harmless */
	assert_true(map1(fx, BUF_GPA, 0x1000) > id);
	assert_int_equal(fx->f->nregs, 1);
}

static void test_guest_ram_removed(void **state)
{
	struct fixture *fx = *state;
	uint64_t in_b1 = map1(fx, GPA_B, 0x1000);
	uint64_t in_b2 = map1(fx, GPA_B + 0x8000, 0x8000);
	uint64_t in_a = map1(fx, BUF_GPA, 0x1000);
	uint64_t a_end = map1(fx, GPA_A + SIZE_A - 0x10, 0x10);

	assert_int_equal(fx->f->nregs, 4);
	/* a removal that touches none of them */
	companion_guest_ram_removed(fx->c, GPA_RO, SIZE_RO);
	companion_guest_ram_removed(fx->c, 0, 0);
	assert_int_equal(fx->f->nregs, 4);
	/* B goes away: both mappings inside it, nothing else */
	companion_guest_ram_removed(fx->c, GPA_B, SIZE_B);
	assert_int_equal(guest_mem_remove(fx->gm, GPA_B, SIZE_B), 0);
	assert_null(fake_hd_find(fx->f, in_b1));
	assert_null(fake_hd_find(fx->f, in_b2));
	assert_non_null(fake_hd_find(fx->f, in_a));
	assert_non_null(fake_hd_find(fx->f, a_end));
	assert_int_equal(unmap1(fx, in_b1, 0x1000), APPLE_DMA_IOERR);
	/* a removal overlapping a mapping only partly still drops it */
	companion_guest_ram_removed(fx->c, BUF_GPA + 0xfff, 1);
	assert_null(fake_hd_find(fx->f, in_a));
	companion_guest_ram_removed(fx->c, GPA_A + SIZE_A - 1, UINT64_MAX);
	assert_int_equal(fx->f->nregs, 0);
	/* mapping B again now fails; A still works */
	assert_int_equal(map1(fx, GPA_B, 0x1000), 0);
	assert_int_not_equal(map1(fx, BUF_GPA, 0x1000), 0);
}

static void test_destroy_unregisters(void **state)
{
	struct fixture *fx = fixture_new(0, 0, false);

	(void)state;
	for (int i = 0; i < 300; i++)
		assert_int_not_equal(map1(fx, BUF_GPA + (uint64_t)i * 0x100, 0x100), 0);
	assert_int_equal(fx->f->nregs, 300);
	companion_destroy(fx->c);
	fx->c = NULL;
	assert_int_equal(fx->f->nregs, 0);
	assert_int_equal(fx->f->unregisters, 300);
	fixture_free(fx);
}

static void test_identity_mode(void **state)
{
	struct fixture *fx = fixture_new(0, 4, true);
	uint64_t ids[4];

	(void)state;
	for (uint32_t i = 0; i < 5; i++)
		put_map_req(fx, REQ_GPA, i, BUF_GPA + i * 0x1000ull + 8, 0x100);
	put_map_req(fx, REQ_GPA, 5, 0x1000, 0x100); /* not RAM: still refused */
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 6, REQ_GPA, RESP_GPA);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_IOERR);
	for (uint32_t i = 0; i < 4; i++) {
		assert_int_equal(map_status(fx, i), APPLE_DMA_OK);
		assert_int_equal(map_dma(fx, i), BUF_GPA + i * 0x1000ull + 8);
		assert_int_equal(map_dma_len(fx, i), 0x100);
		ids[i] = map_id(fx, i);
		assert_int_not_equal(ids[i], 0);
		for (uint32_t j = 0; j < i; j++)
			assert_int_not_equal(ids[i], ids[j]);
	}
	assert_int_equal(map_status(fx, 4), APPLE_DMA_IOERR); /* the id limit */
	assert_int_equal(map_status(fx, 5), APPLE_DMA_IOERR);
	assert_int_equal(fx->f->register_calls, 0); /* nothing registered */
	assert_int_equal(companion_mmio_read(fx->c, 0x38, 4), 4);
	assert_int_equal(unmap1(fx, ids[2], 0x100), APPLE_DMA_OK);
	assert_int_equal(unmap1(fx, ids[2], 0x100), APPLE_DMA_IOERR);
	assert_int_equal(fx->f->unregisters + fx->f->unregister_failures, 0);
	companion_reset(fx->c);
	assert_int_equal(companion_mmio_read(fx->c, 0x38, 4), 0);
	fixture_free(fx);
}

static void test_create_arguments(void **state)
{
	struct fixture *fx = *state;
	struct companion *c;

	assert_null(companion_create(NULL, fx->gm, 0, 0));
	assert_null(companion_create(&fx->f->hd, NULL, 0, 0));
	assert_null(companion_create(&fx->f->hd, fx->gm, 0, COMPANION_LIMIT_MAX_ENTRIES + 1));
	c = companion_create(&fx->f->hd, fx->gm, 0x1234, 16);
	assert_non_null(c);
	assert_int_equal(companion_mmio_read(c, 0x08, 4), 16);
	assert_int_equal(companion_mmio_read(c, 0x04, 4), 0x1234);
	companion_destroy(c);
	companion_destroy(NULL);
}

/*
 * ---- the older reference guest module's layouts (docs/apple-dma-v3.md) ----
 *
 * That module declares the MAP request as u64 gpa, u64 len, u32 flags (24
 * bytes with C alignment) and the MAP response as u64 iova, u64 dma_addr,
 * u64 dma_len, u32 status (32 bytes).  The device never guesses a layout:
 * entry k is always bytes 16k..16k+15 of the request array and 24k..24k+23
 * of the response array, exactly as the reference device.
 */
#define OLD_REQ 24
#define OLD_RESP 32

static void put_old_map_req(uint8_t *arr, uint32_t j, uint64_t gpa, uint64_t len, uint32_t flags)
{
	uint8_t *e = arr + (size_t)j * OLD_REQ;

	st64(e, gpa);
	st64(e + 8, len);
	st32(e + 16, flags);
	st32(e + 20, 0); /* the compiler's padding: zeroed by kzalloc */
}

/* The 24 bytes the device writes for one MAP entry. */
static void expect_resp(const uint8_t *got, uint64_t id, uint64_t dma, uint32_t dma_len, uint32_t status)
{
	uint8_t want[24];

	st64(want, id);
	st64(want + 8, dma);
	st32(want + 16, dma_len);
	st32(want + 20, status);
	assert_memory_equal(got, want, sizeof(want));
}

/* count 1: the old request's first 16 bytes line up; its response reads line up but for status. */
static void test_legacy_layout_count1(void **state)
{
	struct fixture *fx = *state;
	uint8_t *resp = gp(fx, RESP_GPA);
	const struct fake_reg *r;
	uint64_t id;

	/* The device reads gpa, the low half of len as len, its high half (0) as flags. */
	put_old_map_req(gp(fx, REQ_GPA), 0, BUF_GPA + 0x200, 0x3000, 0);
	memset(gp(fx, REQ_GPA) + 16, 0xcc, 8); /* old flags + padding: never read */
	memset(resp, 0xee, 2 * OLD_RESP);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 1, REQ_GPA, RESP_GPA);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_OK);
	assert_int_equal(page_status(fx, PAGE_GPA), APPLE_DMA_OK);
	id = ld64(resp);
	r = fake_hd_find(fx->f, id);
	assert_non_null(r);
	assert_ptr_equal(r->host_addr, gp(fx, BUF_GPA + 0x200));
	assert_int_equal(r->size, 0x3000);
	expect_resp(resp, id, r->bus, 0x3000, APPLE_DMA_OK);
	for (int i = 24; i < 2 * OLD_RESP; i++) /* the old status field (24..27) is never written */
		assert_int_equal(resp[i], 0xee);
	/* What the old module reads: iova = id, dma_addr, u64 dma_len = dma_len | status << 32. */
	assert_int_equal(ld64(resp), id);
	assert_int_equal(ld64(resp + 8), r->bus);
	assert_int_equal(ld64(resp + 16), 0x3000);

	/* A failed entry: its status lands in the old dma_len's upper half. */
	put_old_map_req(gp(fx, REQ_GPA), 0, GPA_NOVA, 0x1000, 0);
	memset(resp, 0xee, 2 * OLD_RESP);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_IOERR);
	assert_int_equal(page_status(fx, PAGE_GPA), APPLE_DMA_IOERR);
	expect_resp(resp, 0, 0, 0, APPLE_DMA_IOERR);
	assert_int_equal(ld64(resp + 16), (uint64_t)APPLE_DMA_IOERR << 32);
	assert_int_equal(ld32(resp + 24), 0xeeeeeeee); /* the old status: stale */
	assert_int_equal(fx->f->nregs, 1);
}

/* count 1, old len of 4 GiB or more: the device maps len mod 2^32, the high half is flags (ignored). */
static void test_legacy_layout_len_above_4g(void **state)
{
	struct fixture *fx = *state;
	uint8_t *resp = gp(fx, RESP_GPA);
	const struct fake_reg *r;

	put_old_map_req(gp(fx, REQ_GPA), 0, BUF_GPA, 0x100002000ull, 0);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 1, REQ_GPA, RESP_GPA);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_OK);
	r = fake_hd_find(fx->f, ld64(resp));
	assert_non_null(r);
	assert_int_equal(r->size, 0x2000);
	expect_resp(resp, r->key, r->bus, 0x2000, APPLE_DMA_OK);
	assert_int_equal(ld64(resp + 16), 0x2000); /* the old module sees a short dma_len */

	/* exactly 4 GiB: len 0, so the entry is INVAL and nothing is mapped */
	put_old_map_req(gp(fx, REQ_GPA), 0, BUF_GPA, 0x100000000ull, 0);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_IOERR);
	expect_resp(resp, 0, 0, 0, APPLE_DMA_INVAL);
	assert_int_equal(fx->f->nregs, 1);
}

/*
 * count 2 in the old layout: device entry 1 is bytes 16..31, i.e. gpa =
 * old[0].flags | padding << 32 (0), len = low half of old[0+1].gpa, flags =
 * its high half.  With RAM at 0 (x86 low memory) that maps the WRONG range
 * and says OK; old[1]'s buffer is never mapped; the old module then reads
 * its second response from bytes 32..63, of which the device wrote 32..47.
 */
static void test_legacy_layout_count2(void **state)
{
	struct fixture *fx = *state;
	uint8_t *low = calloc(1, 0x10000), *high = calloc(1, 0x10000), *resp = gp(fx, RESP_GPA);
	const struct fake_reg *r0, *r1;

	assert_int_equal(guest_mem_add(fx->gm, 0, 0x10000, low, true), 0);
	assert_int_equal(guest_mem_add(fx->gm, 0x100000000ull, 0x10000, high, true), 0);
	put_old_map_req(gp(fx, REQ_GPA), 0, BUF_GPA, 0x1000, 0);
	put_old_map_req(gp(fx, REQ_GPA), 1, 0x100002000ull, 0x3000, 0);
	memset(resp, 0xee, 2 * OLD_RESP);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 2, REQ_GPA, RESP_GPA);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_OK);
	r0 = fake_hd_find(fx->f, ld64(resp));
	r1 = fake_hd_find(fx->f, ld64(resp + 24));
	assert_non_null(r0);
	assert_non_null(r1);
	assert_ptr_equal(r0->host_addr, gp(fx, BUF_GPA));
	assert_int_equal(r0->size, 0x1000);
	assert_ptr_equal(r1->host_addr, low); /* [0, 0x2000): not what the guest asked for */
	assert_int_equal(r1->size, 0x2000);
	assert_int_equal(fx->f->nregs, 2); /* old[1]'s buffer at 0x100002000 is not mapped */
	expect_resp(resp, r0->key, r0->bus, 0x1000, APPLE_DMA_OK);
	expect_resp(resp + 24, r1->key, r1->bus, 0x2000, APPLE_DMA_OK);
	for (int i = 48; i < 2 * OLD_RESP; i++)
		assert_int_equal(resp[i], 0xee);
	/* The old module's view of its second response: iova = entry 1's dma_addr, ... */
	assert_int_equal(ld64(resp + OLD_RESP), r1->bus);
	assert_int_equal(ld64(resp + OLD_RESP + 8), 0x2000);      /* dma_len | status << 32 */
	assert_int_equal(ld64(resp + OLD_RESP + 16), 0xeeeeeeeeeeeeeeeeull); /* never written */

	/* Without RAM at 0 (arm64 virt, this fixture's default) entry 1 fails. */
	assert_int_equal(unmap1(fx, r1->key, 0x2000), APPLE_DMA_OK);
	assert_int_equal(guest_mem_remove(fx->gm, 0, 0x10000), 0);
	assert_int_equal(unmap1(fx, r0->key, 0x1000), APPLE_DMA_OK);
	put_old_map_req(gp(fx, REQ_GPA), 0, BUF_GPA, 0x1000, 0);
	put_old_map_req(gp(fx, REQ_GPA), 1, 0x100002000ull, 0x3000, 0);
	memset(resp, 0xee, 2 * OLD_RESP);
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 2, REQ_GPA, RESP_GPA);
	assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_IOERR);
	r0 = fake_hd_find(fx->f, ld64(resp));
	assert_non_null(r0);
	expect_resp(resp, r0->key, r0->bus, 0x1000, APPLE_DMA_OK);
	expect_resp(resp + 24, 0, 0, 0, APPLE_DMA_IOERR);
	assert_int_equal(fx->f->nregs, 1);
	free(low);
	free(high);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_config_identity),
		T(test_config_bar_sizing),
		T(test_config_writable_bits),
		T(test_registers_initial),
		T(test_registers_budget),
		T(test_registers_read_only),
		T(test_guest_features),
		T(test_narrow_and_bad_accesses),
		T(test_cmd_gpa_halves),
		T(test_inval_no_page),
		T(test_inval_page_unreachable),
		T(test_inval_page_fields),
		T(test_inval_arrays),
		T(test_readonly_page),
		T(test_map_one),
		T(test_map_flags_ignored),
		T(test_map_entry_errors),
		T(test_map_host_refuses),
		T(test_map_short_bus_range_fails),
		T(test_same_range_twice),
		T(test_unmap_entry_errors),
		T(test_unmap_host_refuses),
		T(test_unmap_host_lost_it),
		T(test_batch_4096),
		T(test_id_table_churn),
		T(test_dart_exhaustion_mid_batch),
		T(test_overlapping_req_resp),
		T(test_unmap_all),
		T(test_reset),
		T(test_release_mappings),
		T(test_guest_ram_removed),
		T(test_destroy_unregisters),
		T(test_identity_mode),
		T(test_create_arguments),
		T(test_legacy_layout_count1),
		T(test_legacy_layout_len_above_4g),
		T(test_legacy_layout_count2),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
