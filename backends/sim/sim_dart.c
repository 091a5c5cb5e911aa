// SPDX-License-Identifier: MIT
#include "sim_dart.h"

#include <errno.h>
#include <inttypes.h>
#include <search.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compat.h"
#include "log.h"
#include "memguard.h"

/* Faults past this many are logged at debug level only (a looping guest). */
#define DART_FAULTS_LOGGED 32

struct dart_mapping {
	uint64_t key;
	uint64_t bus;       /* first byte the device may touch */
	uint64_t len;       /* registered bytes */
	uint64_t span_bus;  /* granules taken: [span_bus, span_bus + span_len) */
	uint64_t span_len;
	uint8_t *va;
};

struct sim_dart {
	bool identity;
	uint64_t max_bytes;
	uint32_t max_mappings;
	uint64_t base;    /* bus window [base, base + window) in apple mode */
	uint64_t window;
	uint64_t cursor;  /* next-fit position, an offset into the window */

	void *by_key;     /* tsearch tree of struct dart_mapping, by key */
	void *by_bus;     /* the same nodes, by span (spans never overlap) */
	/* The last registration a lookup found: device DMA is mostly local. */
	struct dart_mapping *last_hit;

	struct hd_dma_stats stats;
	char error[HD_ERROR_LEN];
};

__attribute__((format(printf, 3, 4)))
static int dart_fail(struct sim_dart *d, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(d->error, sizeof(d->error), fmt, ap);
	va_end(ap);
	return err;
}

static int cmp_key(const void *a, const void *b)
{
	const struct dart_mapping *x = a, *y = b;

	return x->key < y->key ? -1 : x->key > y->key;
}

/* Spans of live mappings are disjoint, so "overlaps" is a consistent "equal". */
static int cmp_span(const void *a, const void *b)
{
	const struct dart_mapping *x = a, *y = b;

	if (x->span_bus + x->span_len <= y->span_bus)
		return -1;
	if (x->span_bus >= y->span_bus + y->span_len)
		return 1;
	return 0;
}

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

struct sim_dart *sim_dart_create(const struct sim_dart_config *cfg, char *err, size_t errlen)
{
	struct sim_dart *d;
	uint64_t seed = cfg->seed;

	if (cfg->max_bytes > SIM_DART_MAX_MAX_BYTES) {
		snprintf(err, errlen, "DART limit of %" PRIu64 " bytes is above the model's maximum of %llu",
			 cfg->max_bytes, (unsigned long long)SIM_DART_MAX_MAX_BYTES);
		return NULL;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		snprintf(err, errlen, "out of memory creating the DART model");
		return NULL;
	}
	d->identity = cfg->identity;
	/*
	 * DART off: like Linux VFIO, no 1.5 GiB ceiling on the guest RAM the
	 * front end registers, unless one is asked for.
	 */
	d->max_bytes = cfg->max_bytes ? cfg->max_bytes
		     : cfg->identity ? SIM_DART_MAX_MAX_BYTES : SIM_DART_DEFAULT_MAX_BYTES;
	d->max_mappings = cfg->max_mappings ? cfg->max_mappings : SIM_DART_DEFAULT_MAX_MAPPINGS;

	/*
	 * Room for 16x the most that can be live: every mapping may waste up
	 * to two granules to rounding.
	 */
	uint64_t most_live = d->max_bytes + (uint64_t)d->max_mappings * 2 * SIM_DART_GRANULE;
	d->window = 1ull << 36;
	while (d->window < most_live * 16)
		d->window <<= 1;

	if (!cfg->seeded && vfa_random_bytes(&seed, sizeof(seed)) < 0)
		seed = (uint64_t)(uintptr_t)d ^ 0x5a5a5a5a12345678ull;
	/* Base in [4 GiB, 4 GiB + 2^43), granule aligned: never identity-like. */
	d->base = (1ull << 32) + (splitmix64(&seed) & ((1ull << 43) - 1) & ~(uint64_t)(SIM_DART_GRANULE - 1));
	d->cursor = 0;
	return d;
}

static void free_mapping(void *node)
{
	free(node);
}

void sim_dart_destroy(struct sim_dart *d)
{
	if (!d)
		return;
	sim_dart_unmap_all(d);
	free(d);
}

void sim_dart_unmap_all(struct sim_dart *d)
{
	d->last_hit = NULL;
	/* Both trees hold the same mappings: free them once, with the key tree. */
	vfa_tdestroy(&d->by_bus, cmp_span, NULL);
	vfa_tdestroy(&d->by_key, cmp_key, free_mapping);
	d->by_bus = NULL;
	d->by_key = NULL;
	d->stats.unregisters += d->stats.live_mappings;
	d->stats.live_mappings = 0;
	d->stats.live_bytes = 0;
}

static struct dart_mapping *find_span(const struct sim_dart *d, uint64_t bus, uint64_t len)
{
	struct dart_mapping probe = { .span_bus = bus, .span_len = len };
	void *found = tfind(&probe, &d->by_bus, cmp_span);

	return found ? *(struct dart_mapping **)found : NULL;
}

/* Next-fit over the window; 0 or -ENOSPC. */
static int choose_span(struct sim_dart *d, uint64_t span_len, uint64_t *span_bus)
{
	uint64_t cursor = d->cursor;
	bool wrapped = false;
	/* Each step passes one live mapping; more steps than that means full. */
	uint64_t steps = d->stats.live_mappings + 2;

	while (steps--) {
		if (span_len > d->window - cursor) {
			if (wrapped)
				break;
			wrapped = true;
			cursor = 0;
			continue;
		}
		struct dart_mapping *m = find_span(d, d->base + cursor, span_len);
		if (!m) {
			*span_bus = d->base + cursor;
			d->cursor = cursor + span_len;
			return 0;
		}
		cursor = m->span_bus + m->span_len - d->base;
	}
	return -ENOSPC;
}

int sim_dart_map(struct sim_dart *d, uint64_t key, void *va, uint64_t size, uint64_t *bus, uint64_t *bus_len)
{
	uintptr_t addr = (uintptr_t)va;
	struct dart_mapping probe = { .key = key };
	int ret;

	if (!va || size == 0 || addr + size < addr || addr + size - 1 < addr) {
		ret = dart_fail(d, -EINVAL, "DMA register of %" PRIu64 " bytes at %p: empty, NULL or wrapping range",
				size, va);
		goto fail;
	}
	if (tfind(&probe, &d->by_key, cmp_key)) {
		ret = dart_fail(d, -EEXIST, "DMA key 0x%" PRIx64 " is already registered; unregister it first", key);
		goto fail;
	}
	if (d->stats.live_mappings >= d->max_mappings) {
		ret = dart_fail(d, -ENOSPC, "DART full: %" PRIu64 " live mappings is the limit (key 0x%" PRIx64 ")",
				d->stats.live_mappings, key);
		goto fail;
	}
	if (size > d->max_bytes - d->stats.live_bytes) {
		ret = dart_fail(d, -ENOSPC,
				"DART full: registering %" PRIu64 " bytes would exceed the limit of %" PRIu64
				" bytes (%" PRIu64 " registered)", size, d->max_bytes, d->stats.live_bytes);
		goto fail;
	}

	struct dart_mapping *m = calloc(1, sizeof(*m));
	if (!m) {
		ret = dart_fail(d, -ENOMEM, "out of memory registering DMA key 0x%" PRIx64, key);
		goto fail;
	}
	m->key = key;
	m->len = size;
	m->va = va;
	if (d->identity) {
		if (key + size < key) {
			free(m);
			ret = dart_fail(d, -EINVAL, "identity DMA range 0x%" PRIx64 "+0x%" PRIx64 " wraps", key, size);
			goto fail;
		}
		m->bus = key;
		m->span_bus = key;
		m->span_len = size;
		struct dart_mapping *other = find_span(d, key, size);
		if (other) {
			free(m);
			ret = dart_fail(d, -EEXIST,
					"identity DMA range 0x%" PRIx64 "+0x%" PRIx64 " overlaps key 0x%" PRIx64,
					key, size, other->key);
			goto fail;
		}
	} else {
		uint64_t offset = addr & (SIM_DART_GRANULE - 1);
		uint64_t span_len = (offset + size + SIM_DART_GRANULE - 1) & ~(uint64_t)(SIM_DART_GRANULE - 1);

		if (choose_span(d, span_len, &m->span_bus) < 0) {
			free(m);
			ret = dart_fail(d, -ENOSPC, "DART bus address space exhausted for %" PRIu64 " bytes", size);
			goto fail;
		}
		m->span_len = span_len;
		m->bus = m->span_bus + offset;
	}

	if (!tsearch(m, &d->by_key, cmp_key)) {
		free(m);
		ret = dart_fail(d, -ENOMEM, "out of memory registering DMA key 0x%" PRIx64, key);
		goto fail;
	}
	if (!tsearch(m, &d->by_bus, cmp_span)) {
		tdelete(m, &d->by_key, cmp_key);
		free(m);
		ret = dart_fail(d, -ENOMEM, "out of memory registering DMA key 0x%" PRIx64, key);
		goto fail;
	}
	d->stats.live_mappings++;
	d->stats.live_bytes += size;
	d->stats.registers++;
	if (d->stats.live_mappings > d->stats.peak_mappings)
		d->stats.peak_mappings = d->stats.live_mappings;
	if (d->stats.live_bytes > d->stats.peak_bytes)
		d->stats.peak_bytes = d->stats.live_bytes;
	*bus = m->bus;
	*bus_len = size;
	return 0;
fail:
	d->stats.register_failures++;
	return ret;
}

int sim_dart_unmap(struct sim_dart *d, uint64_t key)
{
	struct dart_mapping probe = { .key = key };
	void *found = tfind(&probe, &d->by_key, cmp_key);

	if (!found)
		return dart_fail(d, -ENOENT, "DMA key 0x%" PRIx64 " is not registered", key);
	struct dart_mapping *m = *(struct dart_mapping **)found;
	if (d->last_hit == m)
		d->last_hit = NULL;
	tdelete(m, &d->by_bus, cmp_span);
	tdelete(m, &d->by_key, cmp_key);
	d->stats.live_mappings--;
	d->stats.live_bytes -= m->len;
	d->stats.unregisters++;
	free(m);
	return 0;
}

static void count_fault(struct sim_dart *d, uint64_t bus, uint64_t len, bool device_writes)
{
	d->stats.faults++;
	if (d->stats.faults <= DART_FAULTS_LOGGED)
		log_warn("DART fault: device %s of %" PRIu64 " bytes at bus address 0x%" PRIx64
			 " is not inside one registration%s", device_writes ? "write" : "read", len, bus,
			 d->stats.faults == DART_FAULTS_LOGGED ? " (further faults logged at debug level)" : "");
	else
		log_debug("DART fault: device %s of %" PRIu64 " bytes at bus address 0x%" PRIx64,
			  device_writes ? "write" : "read", len, bus);
}

/* The registration holding byte bus, or NULL (no fault counted). */
static struct dart_mapping *lookup(struct sim_dart *d, uint64_t bus)
{
	struct dart_mapping *m = d->last_hit;

	if (m && bus >= m->bus && bus - m->bus < m->len)
		return m;
	if (bus == UINT64_MAX) /* never mapped; keeps the probe from wrapping */
		return NULL;
	m = find_span(d, bus, 1);
	if (!m || bus < m->bus || bus - m->bus >= m->len)
		return NULL;
	d->last_hit = m;
	return m;
}

void *sim_dart_translate(struct sim_dart *d, uint64_t bus, uint64_t len, bool device_writes)
{
	struct dart_mapping *m = len ? lookup(d, bus) : NULL;

	if (!m || len > m->len - (bus - m->bus)) {
		count_fault(d, bus, len, device_writes);
		return NULL;
	}
	return m->va + (bus - m->bus);
}

/* True when every byte of [bus, bus + len) is registered (maybe in several). */
static bool range_mapped(struct sim_dart *d, uint64_t bus, uint64_t len)
{
	if (bus + len < bus)
		return false;
	while (len) {
		struct dart_mapping *m = lookup(d, bus);
		if (!m)
			return false;
		uint64_t avail = m->len - (bus - m->bus);
		uint64_t chunk = len < avail ? len : avail;
		bus += chunk;
		len -= chunk;
	}
	return true;
}

static int dma_copy(struct sim_dart *d, uint64_t bus, void *host, uint64_t len, bool device_writes)
{
	uint8_t *p = host;

	if (!range_mapped(d, bus, len)) {
		count_fault(d, bus, len, device_writes);
		return -EFAULT;
	}
	while (len) {
		struct dart_mapping *m = lookup(d, bus);
		uint64_t avail = m->len - (bus - m->bus);
		uint64_t chunk = len < avail ? len : avail;
		uint8_t *va = m->va + (bus - m->bus);

		/* Guest RAM can vanish under us (a VMM truncating its file): a
		 * SIGBUS fails this transfer instead of killing the broker. */
		if (vfa_guarded_copy(device_writes ? va : p, device_writes ? p : va, chunk) < 0) {
			log_warn("DMA %s of %" PRIu64 " bytes at bus address 0x%" PRIx64 ": the memory behind "
				 "the registration is gone (SIGBUS: its file was truncated); the transfer fails",
				 device_writes ? "write" : "read", chunk, bus);
			return -EFAULT;
		}
		p += chunk;
		bus += chunk;
		len -= chunk;
	}
	return 0;
}

int sim_dart_dma_check(struct sim_dart *d, uint64_t bus, uint64_t len, bool device_writes)
{
	if (!range_mapped(d, bus, len)) {
		count_fault(d, bus, len, device_writes);
		return -EFAULT;
	}
	return 0;
}

int sim_dart_dma_read(struct sim_dart *d, uint64_t bus, void *dst, uint64_t len)
{
	return dma_copy(d, bus, dst, len, false);
}

int sim_dart_dma_write(struct sim_dart *d, uint64_t bus, const void *src, uint64_t len)
{
	return dma_copy(d, bus, (void *)(uintptr_t)src, len, true);
}

void sim_dart_limits(const struct sim_dart *d, struct hd_dma_limits *out)
{
	out->max_bytes = d->max_bytes;
	out->max_mappings = d->max_mappings;
	out->granule = SIM_DART_GRANULE;
}

void sim_dart_stats(const struct sim_dart *d, struct hd_dma_stats *out)
{
	*out = d->stats;
}

bool sim_dart_identity(const struct sim_dart *d)
{
	return d->identity;
}

uint64_t sim_dart_bus_base(const struct sim_dart *d)
{
	return d->identity ? 0 : d->base;
}

const char *sim_dart_error(const struct sim_dart *d)
{
	return d->error[0] ? d->error : "no error recorded";
}
