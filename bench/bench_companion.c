// SPDX-License-Identifier: MIT
/*
 * Host cost of the companion per batch entry: 256-entry MAP and UNMAP
 * batches, each timed from DOORBELL write to STATUS read (what the broker
 * spends per doorbell, without the vfio-user socket).  Three hosts side by
 * side: identity mode (no registration: the companion alone), the test's
 * fake DART (trivial registration) and the simulator's DART model.
 * Prints medians over many rounds.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "companion.h"
#include "fake_hd.h"
#include "guest_mem.h"
#include "le.h"
#include "log.h"
#include "sim_dart.h"
#include "sim_nvme.h"

#define BATCH 256
#define ROUNDS 401
#define RAM_GPA 0x100000ull
#define RAM_SIZE (8ull << 20)
#define PAGE_GPA RAM_GPA
#define REQ_GPA (RAM_GPA + 0x1000)
#define RESP_GPA (RAM_GPA + 0x10000)
#define BUF_GPA (RAM_GPA + 0x100000)

/* Ring one batch whose page is already in RAM; returns elapsed ns. */
static double ring(struct companion *c, uint8_t *ram, uint32_t type, uint32_t *status)
{
	uint8_t *page = ram + (PAGE_GPA - RAM_GPA);
	double t0;

	le_store32(page, type);
	le_store32(page + 4, BATCH);
	le_store64(page + 16, REQ_GPA);
	le_store64(page + 24, RESP_GPA);
	companion_mmio_write(c, APPLE_DMA_REG_CMD_GPA_LO, 4, (uint32_t)PAGE_GPA);
	companion_mmio_write(c, APPLE_DMA_REG_CMD_GPA_HI, 4, 0);
	t0 = bench_now_ns();
	companion_mmio_write(c, APPLE_DMA_REG_DOORBELL, 4, 1);
	*status = companion_mmio_read(c, APPLE_DMA_REG_STATUS, 4);
	return bench_now_ns() - t0;
}

/* Median ns per entry of MAP and UNMAP batches against hd. */
static int measure(struct host_device *hd, double *map_ns, double *unmap_ns)
{
	uint8_t *ram = calloc(1, RAM_SIZE);
	struct guest_mem *gm = guest_mem_create();
	struct companion *c;
	static double map_t[ROUNDS], unmap_t[ROUNDS];
	uint8_t *req = ram + (REQ_GPA - RAM_GPA), *resp = ram + (RESP_GPA - RAM_GPA);
	uint32_t st;

	if (!ram || !gm || guest_mem_add(gm, RAM_GPA, RAM_SIZE, ram, true) < 0)
		return -1;
	c = companion_create(hd, gm, 0x28, 0);
	if (!c)
		return -1;
	for (int r = 0; r < ROUNDS; r++) {
		/* 256 buffers of 4 KiB at a random-ish spread */
		for (uint32_t i = 0; i < BATCH; i++) {
			le_store64(req + i * 16, BUF_GPA + (uint64_t)((i * 37 + (uint32_t)r) % 1024) * 0x1000);
			le_store32(req + i * 16 + 8, 0x1000);
			le_store32(req + i * 16 + 12, 0);
		}
		map_t[r] = ring(c, ram, APPLE_DMA_CMD_MAP, &st);
		if (st != APPLE_DMA_OK) {
			fprintf(stderr, "bench_companion: MAP batch failed (status %u)\n", st);
			return -1;
		}
		/* release in reverse order (what a driver's unmap of a list does) */
		for (uint32_t i = 0; i < BATCH; i++) {
			le_store64(req + i * 16, le_load64(resp + (BATCH - 1 - i) * 24));
			le_store64(req + i * 16 + 8, 0x1000);
		}
		unmap_t[r] = ring(c, ram, APPLE_DMA_CMD_UNMAP, &st);
		if (st != APPLE_DMA_OK) {
			fprintf(stderr, "bench_companion: UNMAP batch failed (status %u)\n", st);
			return -1;
		}
	}
	*map_ns = bench_median(map_t, ROUNDS) / BATCH;
	*unmap_ns = bench_median(unmap_t, ROUNDS) / BATCH;
	companion_destroy(c);
	guest_mem_destroy(gm);
	free(ram);
	return 0;
}

int main(void)
{
	struct fake_hd *ident = fake_hd_create(0, 0, 16384, true);
	struct fake_hd *fake = fake_hd_create(0, 0, 16384, false);
	struct sim_nvme_config cfg = { .size = 1 << 20, .dart = { .seeded = true, .seed = 1 } };
	char err[256];
	struct host_device *sim = sim_nvme_open(&cfg, err, sizeof(err));
	double m[3], u[3];

	vfa_log_set_level(VFA_LOG_ERROR);
	if (!ident || !fake || !sim) {
		fprintf(stderr, "bench_companion: cannot create the hosts: %s\n", sim ? "out of memory" : err);
		return 1;
	}
	if (measure(&ident->hd, &m[0], &u[0]) || measure(&fake->hd, &m[1], &u[1]) || measure(sim, &m[2], &u[2]))
		return 1;
	printf("companion: host ns per entry, %d-entry batches, median of %d rounds\n", BATCH, ROUNDS);
	printf("  %-30s %10s %10s\n", "host", "MAP", "UNMAP");
	printf("  %-30s %10.1f %10.1f\n", "identity (companion alone)", m[0], u[0]);
	printf("  %-30s %10.1f %10.1f\n", "fake DART (tests/companion)", m[1], u[1]);
	printf("  %-30s %10.1f %10.1f\n", "sim DART model", m[2], u[2]);
	printf("  sim DART / companion alone:   %9.1fx %9.1fx\n", m[2] / m[0], u[2] / u[0]);
	printf("  a 256-entry MAP batch on the sim DART: %.1f us\n", m[2] * BATCH / 1000.0);
	fake_hd_destroy(ident);
	fake_hd_destroy(fake);
	sim->ops->destroy(sim);
	return 0;
}
