// SPDX-License-Identifier: MIT
/*
 * Guest side of bench_inprocess: the latency of one 32-bit read of a
 * device register as the guest sees it.  Maps a BAR through sysfs
 * (/sys/bus/pci/devices/D/resource0; the kernel needs iomem=relaxed when a
 * driver holds the device) and times COUNT reads of OFFSET, BATCHES times;
 * prints the median and the smallest batch's ns per read.
 *
 * Built on the host, statically, for an x86_64 guest (bench/inprocess.sh).
 * Usage: guest_mmio_lat RESOURCE OFFSET COUNT BATCHES
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	unsigned long offset, count, batches;
	volatile const uint32_t *reg;
	double per[64];
	uint32_t sink = 0;
	void *map;
	int fd;

	if (argc != 5) {
		fprintf(stderr, "usage: %s RESOURCE OFFSET COUNT BATCHES\n", argv[0]);
		return 2;
	}
	offset = strtoul(argv[2], NULL, 0);
	count = strtoul(argv[3], NULL, 0);
	batches = strtoul(argv[4], NULL, 0);
	if (!count || !batches || batches > 64 || offset % 4 || offset >= 4096) {
		fprintf(stderr, "%s: COUNT > 0, 1 <= BATCHES <= 64, OFFSET 4-aligned below 4096\n", argv[0]);
		return 2;
	}
	fd = open(argv[1], O_RDONLY | O_SYNC);
	if (fd < 0) {
		perror(argv[1]);
		return 1;
	}
	map = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	reg = (volatile const uint32_t *)((volatile const char *)map + offset);
	for (unsigned long b = 0; b < batches; b++) {
		double t0 = now_ns();

		for (unsigned long i = 0; i < count; i++)
			sink += *reg;
		per[b] = (now_ns() - t0) / (double)count;
	}
	qsort(per, batches, sizeof(per[0]), cmp);
	printf("ns=%.0f min_ns=%.0f value=0x%x\n", per[batches / 2], per[0], (unsigned)(sink / (count * batches)));
	return 0;
}
