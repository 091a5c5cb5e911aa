// SPDX-License-Identifier: MIT
/*
 * The simulated NVMe's own cost per command, as the broker pays it inside a
 * doorbell write: 4 KiB and 128 KiB reads (PRP list) through the DART, with
 * 1 and 64k other live DART mappings.  Medians of several runs.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "backends.h"
#include "bench_util.h"
#include "le.h"
#include "log.h"

#define RUNS 7
#define COMMANDS 20000u
#define ARENA (4u << 20)
#define DEPTH 64u

struct bench {
	struct host_device *hd;
	uint8_t *arena;
	uint64_t bus;
	uint8_t *sq, *cq;
	uint32_t tail, head;
	bool phase;
};

static uint64_t busof(struct bench *b, void *p)
{
	return b->bus + (uint64_t)((uint8_t *)p - b->arena);
}

static int wr(struct bench *b, uint64_t off, uint32_t v)
{
	return b->hd->ops->mmio_write(b->hd, 0, off, 4, v);
}

/* Submit on qid, ring, reap; returns the status or -1. */
static int exec(struct bench *b, unsigned qid, uint8_t *sq, uint8_t *cq, uint32_t depth, uint32_t *tail,
		uint32_t *head, bool *phase, const uint32_t cmd[16])
{
	memcpy(sq + (size_t)*tail * 64, cmd, 64);
	*tail = (*tail + 1) % depth;
	if (wr(b, 0x1000 + 8 * qid, *tail) < 0)
		return -1;
	uint32_t dw3;
	memcpy(&dw3, cq + (size_t)*head * 16 + 12, 4);
	if (((dw3 >> 16) & 1) != (*phase ? 1u : 0u))
		return -1;
	if (++*head == depth) {
		*head = 0;
		*phase = !*phase;
	}
	if (wr(b, 0x1000 + 8 * qid + 4, *head) < 0)
		return -1;
	return (int)((dw3 >> 17) & 0x7ff);
}

static int setup(struct bench *b, uint32_t extra_maps, uint8_t *extra)
{
	char err[256];
	uint64_t len, junk;
	uint32_t adm_tail = 0, adm_head = 0;
	bool adm_phase = true;
	unsigned nvec;

	memset(b, 0, sizeof(*b));
	b->hd = host_device_open("sim:nvme,size=64M,seed=1", err, sizeof(err));
	if (!b->hd) {
		fprintf(stderr, "bench_sim_nvme: %s\n", err);
		return -1;
	}
	b->arena = mmap(NULL, ARENA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (b->arena == MAP_FAILED || b->hd->ops->claim(b->hd) < 0 || b->hd->ops->irq_setup(b->hd, &nvec) < 0 ||
	    b->hd->ops->dma_register(b->hd, 1ull << 40, b->arena, ARENA, &b->bus, &len) < 0)
		return -1;
	for (uint32_t i = 0; i < extra_maps; i++)
		if (b->hd->ops->dma_register(b->hd, i, extra + (size_t)i * 64, 64, &junk, &len) < 0)
			return -1;
	uint8_t *asq = b->arena, *acq = b->arena + 4096;
	b->sq = b->arena + 8192;
	b->cq = b->arena + 3 * 4096 + 8192;
	if (wr(b, 0x24, (31u << 16) | 31u) < 0 ||
	    b->hd->ops->mmio_write(b->hd, 0, 0x28, 8, busof(b, asq)) < 0 ||
	    b->hd->ops->mmio_write(b->hd, 0, 0x30, 8, busof(b, acq)) < 0 ||
	    wr(b, 0x14, (4u << 20) | (6u << 16) | 1u) < 0)
		return -1;
	uint32_t cmd[16] = { 0 };
	cmd[0] = 0x05;
	memcpy(&cmd[6], &(uint64_t){ busof(b, b->cq) }, 8);
	cmd[10] = ((DEPTH - 1) << 16) | 1;
	cmd[11] = (1u << 16) | 3;
	if (exec(b, 0, asq, acq, 32, &adm_tail, &adm_head, &adm_phase, cmd) != 0)
		return -1;
	cmd[0] = 0x01;
	memcpy(&cmd[6], &(uint64_t){ busof(b, b->sq) }, 8);
	cmd[11] = (1u << 16) | 1;
	if (exec(b, 0, asq, acq, 32, &adm_tail, &adm_head, &adm_phase, cmd) != 0)
		return -1;
	b->phase = true;
	return 0;
}

/* ns per read of blocks 512-byte LBAs. */
static double run_reads(struct bench *b, uint32_t blocks)
{
	uint8_t *data = b->arena + (1u << 20);
	uint8_t *list = b->arena + 64 * 1024; /* PRP list: little-endian 64-bit entries */
	uint32_t cmd[16] = { 0 };
	uint32_t pages = blocks * 512 / 4096;

	for (uint32_t i = 1; i < pages; i++)
		le_store64(list + (size_t)(i - 1) * 8, busof(b, data + (size_t)i * 4096));
	cmd[0] = 0x02;
	cmd[1] = 1;
	memcpy(&cmd[6], &(uint64_t){ busof(b, data) }, 8);
	uint64_t prp2 = pages == 2 ? busof(b, data + 4096) : pages > 2 ? busof(b, list) : 0;
	memcpy(&cmd[8], &prp2, 8);
	cmd[12] = blocks - 1;
	double t0 = bench_now_ns();
	for (uint32_t i = 0; i < COMMANDS; i++) {
		cmd[10] = (i * blocks) % (100000u);
		if (exec(b, 1, b->sq, b->cq, DEPTH, &b->tail, &b->head, &b->phase, cmd) != 0)
			return -1;
	}
	return (bench_now_ns() - t0) / COMMANDS;
}

int main(void)
{
	static const uint32_t maps[] = { 0, 65535 };
	static const uint32_t sizes[] = { 8, 256 };
	double med[2][2];
	uint8_t *extra = malloc((size_t)65536 * 64);

	if (!extra)
		return 1;
	vfa_log_set_level(VFA_LOG_ERROR);
	for (int m = 0; m < 2; m++) {
		for (int s = 0; s < 2; s++) {
			double v[RUNS];
			for (int r = 0; r < RUNS; r++) {
				struct bench b;
				if (setup(&b, maps[m], extra) < 0 || (v[r] = run_reads(&b, sizes[s])) < 0) {
					fprintf(stderr, "bench_sim_nvme: the simulated NVMe failed a command\n");
					return 1;
				}
				b.hd->ops->destroy(b.hd);
				munmap(b.arena, ARENA);
			}
			med[m][s] = bench_median(v, RUNS);
		}
	}
	printf("bench_sim_nvme: simulated NVMe read command, doorbell to completion (median of %d runs x %u)\n",
	       RUNS, COMMANDS);
	printf("%-18s %14s %20s\n", "live DART maps", "4 KiB read", "128 KiB read (list)");
	for (int m = 0; m < 2; m++)
		printf("%-18u %11.0f ns %11.0f ns %5.0f MB/s\n", maps[m] + 1, med[m][0], med[m][1],
		       128.0 * 1024 / med[m][1] * 1e3);
	printf("%-18s %13.2fx %19.2fx\n", "64k / 1", med[1][0] / med[0][0], med[1][1] / med[0][1]);
	free(extra);
	return 0;
}
