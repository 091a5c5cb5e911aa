// SPDX-License-Identifier: MIT
/*
 * What the darwin backend path costs per verb on Linux: the simulated NVMe
 * called directly ("sim:") against the same device behind the darwin
 * backend, the IOKit shim and the dext TEST MODEL ("sim-dext:"), measured
 * side by side.  Medians of several rounds, ns per call.  On a Mac the
 * model's share is replaced by a Mach message to the dext, which this
 * cannot measure.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends.h"
#include "bench_util.h"

#define ROUNDS 11
#define CALLS 20000

enum verb { CONFIG_READ, MMIO_READ, DMA_PAIR, READ_PENDING, VERBS };
static const char *const verb_names[VERBS] = {
	"config_read (4 bytes)",
	"mmio_read (BAR0, 4 bytes)",
	"dma_register+unregister",
	"irq_read_pending",
};

static uint8_t dma_buf[16384] __attribute__((aligned(16384)));

static double one_round(struct host_device *hd, enum verb v)
{
	uint64_t pending[HD_IRQ_WORDS], bus, len, val;
	uint32_t cfg;
	double t0 = bench_now_ns();
	int rc = 0;

	for (int i = 0; i < CALLS && !rc; i++) {
		switch (v) {
		case CONFIG_READ: rc = hd->ops->config_read(hd, 0, 4, &cfg); break;
		case MMIO_READ: rc = hd->ops->mmio_read(hd, 0, 8, 4, &val); break;
		case DMA_PAIR:
			rc = hd->ops->dma_register(hd, 7, dma_buf, sizeof(dma_buf), &bus, &len);
			if (!rc)
				rc = hd->ops->dma_unregister(hd, 7);
			break;
		case READ_PENDING: rc = hd->ops->irq_read_pending(hd, pending); break;
		default: break;
		}
	}
	if (rc) {
		fprintf(stderr, "bench_darwin: %s failed: %s\n", verb_names[v], host_device_error(hd));
		exit(1);
	}
	return (bench_now_ns() - t0) / CALLS;
}

static struct host_device *open_claimed(const char *spec)
{
	char err[256];
	struct host_device *hd = host_device_open(spec, err, sizeof(err));
	unsigned n;

	if (!hd) {
		fprintf(stderr, "bench_darwin: %s: %s\n", spec, err);
		exit(1);
	}
	if (hd->ops->claim(hd) || hd->ops->irq_setup(hd, &n)) {
		fprintf(stderr, "bench_darwin: %s: %s\n", spec, host_device_error(hd));
		exit(1);
	}
	return hd;
}

int main(void)
{
	struct host_device *sim = open_claimed("sim:nvme,size=1M");
	struct host_device *dext = open_claimed("sim-dext:nvme,size=1M");

	printf("darwin backend + dext TEST MODEL vs the sim directly (median of %d rounds x %d calls)\n", ROUNDS,
	       CALLS);
	printf("%-28s %12s %14s %8s\n", "verb", "sim ns", "sim-dext ns", "ratio");
	for (int v = 0; v < VERBS; v++) {
		double a[ROUNDS], b[ROUNDS];

		/* Interleaved rounds: both see the same machine state. */
		for (int r = 0; r < ROUNDS; r++) {
			a[r] = one_round(sim, (enum verb)v);
			b[r] = one_round(dext, (enum verb)v);
		}
		double ma = bench_median(a, ROUNDS), mb = bench_median(b, ROUNDS);

		printf("%-28s %12.0f %14.0f %7.1fx\n", verb_names[v], ma, mb, mb / ma);
	}
	sim->ops->destroy(sim);
	dext->ops->destroy(dext);
	return 0;
}
