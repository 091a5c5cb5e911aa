// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: the companion device driven by arbitrary guest RAM
 * contents and an arbitrary sequence of register, config and lifetime
 * operations.  Guest RAM is four regions: two adjacent writable ones, a
 * read-only one and an unreachable one, each its own heap block so ASan
 * catches any access outside what was shared.  After every operation the
 * companion's live ids must match the fake DART's registrations exactly, and
 * every registration must lie inside shared writable RAM.
 *
 * Input: byte 0 = mode (bit 0 identity DMA, bits 1..2 limits), then
 * u16 image length + image (copied over the writable RAM), then operations
 * (see the switch below).  fuzz/make_corpus.py writes the seed corpus.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "companion.h"
#include "fake_hd.h"
#include "guest_mem.h"
#include "log.h"

#define R0_GPA 0x1000u
#define R0_SIZE 0x4000u
#define R1_GPA 0x5000u /* adjacent to R0 */
#define R1_SIZE 0x2000u
#define RO_GPA 0x10000u
#define RO_SIZE 0x1000u
#define NOVA_GPA 0x20000u
#define NOVA_SIZE 0x1000u
#define MAX_OPS 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct input {
	const uint8_t *p;
	size_t left;
};

static bool take(struct input *in, void *out, size_t n)
{
	if (in->left < n)
		return false;
	memcpy(out, in->p, n);
	in->p += n;
	in->left -= n;
	return true;
}

static uint32_t le(const uint8_t *b, int n)
{
	uint32_t v = 0;

	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | b[i];
	return v;
}

static bool inside(const void *p, uint64_t len, const uint8_t *base, uint64_t size)
{
	const uint8_t *q = p;

	return q >= base && len <= size && (uint64_t)(q - base) <= size - len;
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/*
 * An array address at the start or the end of one of the regions, moved by a
 * few bytes: where off-by-one bugs live.  sel: region (bits 0..1), end-
 * aligned (bit 2), delta direction (bit 3); delta: 0..15 bytes.
 */
static uint64_t edge_gpa(uint8_t sel, uint8_t delta, uint32_t bytes)
{
	static const uint64_t start[4] = { R0_GPA, R1_GPA, RO_GPA, NOVA_GPA };
	static const uint64_t len[4] = { R0_SIZE, R1_SIZE, RO_SIZE, NOVA_SIZE };
	uint64_t gpa = start[sel & 3] + ((sel & 4) ? len[sel & 3] - bytes : 32);

	delta &= 15;
	return (sel & 8) ? gpa + delta : gpa - delta;
}

static void check(struct companion *c, struct fake_hd *f, const uint8_t *r0, const uint8_t *r1, bool r1_present)
{
	struct companion_stats st;

	companion_stats(c, &st);
	if (f->hd.identity_dma) {
		if (f->nregs != 0)
			__builtin_trap();
		return;
	}
	if (st.live_ids != f->nregs || st.live_bytes != f->live_bytes)
		__builtin_trap();
	for (size_t i = 0; i < f->nregs; i++) {
		const struct fake_reg *r = &f->regs[i];

		if (!inside(r->host_addr, r->size, r0, R0_SIZE) &&
		    !(r1_present && inside(r->host_addr, r->size, r1, R1_SIZE)))
			__builtin_trap();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	uint8_t mode = 0, b[16];
	uint16_t image_len = 0;
	uint8_t *r0 = calloc(1, R0_SIZE), *r1 = calloc(1, R1_SIZE), *ro = calloc(1, RO_SIZE);
	struct fake_hd *f;
	struct guest_mem *gm = guest_mem_create();
	struct companion *c;
	bool r1_present = true;

	vfa_log_set_level(VFA_LOG_ERROR);
	take(&in, &mode, 1);
	f = fake_hd_create((mode & 2) ? 0x8000 : 0, (mode & 4) ? 8 : 0, 16384, mode & 1);
	guest_mem_add(gm, R0_GPA, R0_SIZE, r0, true);
	guest_mem_add(gm, R1_GPA, R1_SIZE, r1, true);
	guest_mem_add(gm, RO_GPA, RO_SIZE, ro, false);
	guest_mem_add(gm, NOVA_GPA, NOVA_SIZE, NULL, false);
	c = companion_create(&f->hd, gm, 0x28, 64);
	if (take(&in, b, 2)) {
		image_len = (uint16_t)le(b, 2);
		if (image_len > in.left)
			image_len = (uint16_t)in.left;
		for (uint16_t i = 0; i < image_len; i++) {
			uint32_t off = i % (R0_SIZE + R1_SIZE + RO_SIZE);

			if (off < R0_SIZE)
				r0[off] = in.p[i];
			else if (off < R0_SIZE + R1_SIZE)
				r1[off - R0_SIZE] = in.p[i];
			else
				ro[off - R0_SIZE - R1_SIZE] = in.p[i];
		}
		in.p += image_len;
		in.left -= image_len;
	}
	for (int ops = 0; ops < MAX_OPS && take(&in, b, 1); ops++) {
		switch (b[0] % 10) {
		case 0: /* BAR0 write: u16 offset, u8 width, u32 value */
			if (!take(&in, b, 7))
				break;
			companion_mmio_write(c, le(b, 2) % 0x1100, b[2] % 9, le(b + 3, 4));
			break;
		case 1: /* BAR0 read */
			if (!take(&in, b, 3))
				break;
			(void)companion_mmio_read(c, le(b, 2) % 0x1100, b[2] % 9);
			break;
		case 2: /* ring with a page at a u32 gpa */
			if (!take(&in, b, 4))
				break;
			companion_mmio_write(c, APPLE_DMA_REG_CMD_GPA_LO, 4, le(b, 4));
			companion_mmio_write(c, APPLE_DMA_REG_CMD_GPA_HI, 4, 0);
			companion_mmio_write(c, APPLE_DMA_REG_DOORBELL, 4, 0);
			(void)companion_mmio_read(c, APPLE_DMA_REG_STATUS, 4);
			break;
		case 3: { /* poke writable RAM: u16 offset, u8 len, bytes */
			uint8_t buf[255];
			uint32_t off, n;

			if (!take(&in, b, 3))
				break;
			off = le(b, 2) % (R0_SIZE + R1_SIZE);
			n = b[2] < in.left ? b[2] : (uint32_t)in.left;
			take(&in, buf, n);
			for (uint32_t i = 0; i < n && off + i < R0_SIZE + R1_SIZE; i++) {
				if (off + i < R0_SIZE)
					r0[off + i] = buf[i];
				else
					r1[off + i - R0_SIZE] = buf[i];
			}
			break;
		}
		case 4:
			companion_reset(c);
			break;
		case 5: /* the VMM removes R1, or shares it again */
			if (r1_present) {
				companion_guest_ram_removed(c, R1_GPA, R1_SIZE);
				guest_mem_remove(gm, R1_GPA, R1_SIZE);
			} else {
				guest_mem_add(gm, R1_GPA, R1_SIZE, r1, true);
			}
			r1_present = !r1_present;
			break;
		case 6: /* config write: u8 offset, u8 len, 8 bytes */
			if (!take(&in, b, 10))
				break;
			companion_config_write(c, b[0] + (b[1] & 0x80 ? 200u : 0u), b + 2, b[1] % 9u);
			break;
		case 7: { /* config read */
			uint8_t cfg[300];

			if (!take(&in, b, 2))
				break;
			companion_config_read(c, b[0], cfg, b[1] + 45u);
			break;
		}
		case 8: /* removal of an arbitrary range (mappings only) */
			if (!take(&in, b, 8))
				break;
			companion_guest_ram_removed(c, le(b, 4), le(b + 4, 4));
			break;
		case 9: { /* a page whose arrays sit at region edges (see edge_gpa) */
			uint8_t *pg = r0;
			uint32_t type, count, req_size, resp_size;

			if (!take(&in, b, 5))
				break;
			type = b[0] % 4;
			count = b[1] % 80;
			req_size = 16;
			resp_size = type == 1 ? 24 : 16;
			memset(pg, 0, 32);
			pg[0] = (uint8_t)type;
			pg[4] = (uint8_t)count;
			put_le64(pg + 16, edge_gpa(b[2], b[4], count * req_size));
			put_le64(pg + 24, edge_gpa(b[3], b[4] >> 4, count * resp_size));
			companion_mmio_write(c, APPLE_DMA_REG_CMD_GPA_LO, 4, R0_GPA);
			companion_mmio_write(c, APPLE_DMA_REG_CMD_GPA_HI, 4, 0);
			companion_mmio_write(c, APPLE_DMA_REG_DOORBELL, 4, 0);
			break;
		}
		}
		check(c, f, r0, r1, r1_present);
	}
	companion_destroy(c);
	if (f->nregs != 0) /* nothing stays registered */
		__builtin_trap();
	guest_mem_destroy(gm);
	fake_hd_destroy(f);
	free(r0);
	free(r1);
	free(ro);
	return 0;
}
