// SPDX-License-Identifier: MIT
/*
 * The DART model's cost per operation at 1k and at 64k live mappings:
 * translate, register, unregister.  Prints the median of several runs
 * and the 64k/1k ratio measured side by side (O(log n) keeps it small).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "bench_util.h"
#include "sim_dart.h"

#define RUNS 7
#define BATCH 1000u
#define LOOKUPS 1000000u

struct figures {
	double translate_ns, register_ns, unregister_ns;
};

static uint64_t rng_state = 88172645463325252ull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static volatile uintptr_t sink;

/* One run at n live mappings; 0 or -1 on an unexpected failure. */
static int run(uint32_t n, uint8_t *mem, struct figures *out)
{
	struct sim_dart_config cfg = { .seeded = true, .seed = 1 };
	char err[256];
	struct sim_dart *d = sim_dart_create(&cfg, err, sizeof(err));
	uint64_t *bus = malloc(sizeof(uint64_t) * n);
	uint32_t *probe = malloc(sizeof(uint32_t) * LOOKUPS);
	uint64_t len;
	double t0;
	int ret = -1;

	if (!d || !bus || !probe)
		goto out;
	for (uint32_t k = 0; k < n; k++)
		if (sim_dart_map(d, k, mem + (size_t)k * 64, 64, &bus[k], &len) < 0)
			goto out;
	for (uint32_t i = 0; i < LOOKUPS; i++)
		probe[i] = (uint32_t)(rng() % n);

	t0 = bench_now_ns();
	for (uint32_t i = 0; i < LOOKUPS; i++)
		sink ^= (uintptr_t)sim_dart_translate(d, bus[probe[i]] + 8, 32, false);
	out->translate_ns = (bench_now_ns() - t0) / LOOKUPS;

	/* Unregister BATCH random live keys, then register them again. */
	uint32_t *keys = probe; /* reuse: BATCH distinct keys */
	for (uint32_t i = 0; i < BATCH; i++)
		keys[i] = (uint32_t)(((uint64_t)i * n) / BATCH + rng() % (n / BATCH));
	t0 = bench_now_ns();
	for (uint32_t i = 0; i < BATCH; i++)
		if (sim_dart_unmap(d, keys[i]) < 0)
			goto out;
	out->unregister_ns = (bench_now_ns() - t0) / BATCH;
	t0 = bench_now_ns();
	for (uint32_t i = 0; i < BATCH; i++)
		if (sim_dart_map(d, keys[i], mem + (size_t)keys[i] * 64, 64, &bus[keys[i]], &len) < 0)
			goto out;
	out->register_ns = (bench_now_ns() - t0) / BATCH;
	ret = 0;
out:
	sim_dart_destroy(d);
	free(bus);
	free(probe);
	return ret;
}

int main(void)
{
	static const uint32_t sizes[] = { 1024, 65536 };
	struct figures med[2];
	uint8_t *mem = malloc((size_t)65536 * 64);

	if (!mem)
		return 1;
	vfa_log_set_level(VFA_LOG_ERROR);
	memset(mem, 0, (size_t)65536 * 64);
	for (int s = 0; s < 2; s++) {
		double tr[RUNS], reg[RUNS], unreg[RUNS];
		for (int r = 0; r < RUNS; r++) {
			struct figures f;
			if (run(sizes[s], mem, &f) < 0) {
				fprintf(stderr, "bench_dart: a DART operation failed unexpectedly\n");
				return 1;
			}
			tr[r] = f.translate_ns;
			reg[r] = f.register_ns;
			unreg[r] = f.unregister_ns;
		}
		med[s] = (struct figures){ bench_median(tr, RUNS), bench_median(reg, RUNS), bench_median(unreg, RUNS) };
	}
	printf("bench_dart: DART model cost per operation (median of %d runs)\n", RUNS);
	printf("%-12s %12s %12s %12s\n", "live maps", "translate", "register", "unregister");
	for (int s = 0; s < 2; s++)
		printf("%-12u %9.1f ns %9.1f ns %9.1f ns\n", sizes[s], med[s].translate_ns, med[s].register_ns,
		       med[s].unregister_ns);
	printf("%-12s %11.2fx %11.2fx %11.2fx\n", "64k / 1k", med[1].translate_ns / med[0].translate_ns,
	       med[1].register_ns / med[0].register_ns, med[1].unregister_ns / med[0].unregister_ns);
	free(mem);
	return 0;
}
