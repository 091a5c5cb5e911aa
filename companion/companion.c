// SPDX-License-Identifier: MIT
/*
 * The apple-dma-pci companion device model.  Protocol: docs/apple-dma-v3.md
 * (version 2 made precise in its section 1, the negotiated version 3 in
 * section 2).  The step numbers in the comments below are those of its
 * "Processing a doorbell" list.
 *
 * Safety rules followed throughout: guest RAM is only reached through
 * guest_mem_translate(); the command page and the whole request array are
 * copied out before anything is acted on (the guest may change them, or
 * point the response array over them); responses are built privately and
 * written back in one copy.
 */
#include "companion.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "le.h"
#include "log.h"
#include "memguard.h"

/* Live-id cap when the platform reports no mapping limit (identity mode). */
#define DEFAULT_MAX_LIVE 65536u

/* One live mapping; id 0 marks a free hash slot. */
struct mapping {
	uint64_t id;
	uint64_t gpa;
	uint64_t len;
	uint64_t bus;
	bool orphaned; /* the host mapping was released at removal: nothing to unregister */
};

struct companion {
	struct host_device *hd;
	struct guest_mem *gm;
	uint16_t managed_bdf;
	uint32_t max_entries;
	uint32_t max_live;
	bool maps_refused; /* companion_refuse_maps(): no passthrough client to map for */
	bool host_gone;    /* companion_host_gone(): the managed function was removed */
	size_t orphaned;   /* live mappings with orphaned set */

	/* registers */
	uint32_t status;
	uint64_t cmd_gpa;
	uint32_t guest_features;

	uint8_t config[COMPANION_CONFIG_SIZE];

	/* Live mappings: open addressing, linear probing, keyed by id. */
	struct mapping *slots;
	size_t nslots; /* a power of two, at least twice the live count */
	size_t live;
	uint64_t live_bytes;
	uint64_t next_id;

	/* Private copies of one batch (max_entries entries each). */
	uint8_t *req_copy;
	uint8_t *resp_buf;

	struct companion_stats stats;
};

/* ---- the id table ---- */

static size_t home_slot(uint64_t id, size_t nslots)
{
	/* Fibonacci hashing spreads sequential ids over the table. */
	return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 17) & (nslots - 1);
}

static size_t slot_of(const struct companion *c, uint64_t id)
{
	return home_slot(id, c->nslots);
}

static struct mapping *lookup(struct companion *c, uint64_t id)
{
	if (id == 0)
		return NULL;
	for (size_t i = slot_of(c, id);; i = (i + 1) & (c->nslots - 1)) {
		if (c->slots[i].id == id)
			return &c->slots[i];
		if (c->slots[i].id == 0)
			return NULL;
	}
}

static void place(struct mapping *slots, size_t nslots, const struct mapping *m)
{
	size_t i = home_slot(m->id, nslots);

	while (slots[i].id != 0)
		i = (i + 1) & (nslots - 1);
	slots[i] = *m;
}

static int grow(struct companion *c)
{
	size_t nslots = c->nslots * 2;
	struct mapping *slots = calloc(nslots, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	for (size_t i = 0; i < c->nslots; i++)
		if (c->slots[i].id)
			place(slots, nslots, &c->slots[i]);
	free(c->slots);
	c->slots = slots;
	c->nslots = nslots;
	return 0;
}

static int insert(struct companion *c, const struct mapping *m)
{
	if ((c->live + 1) * 2 > c->nslots && grow(c) < 0)
		return -ENOMEM;
	place(c->slots, c->nslots, m);
	c->live++;
	c->live_bytes += m->len;
	if (c->live > c->stats.peak_ids)
		c->stats.peak_ids = c->live;
	if (c->live_bytes > c->stats.peak_bytes)
		c->stats.peak_bytes = c->live_bytes;
	return 0;
}

/* Delete slot m with backward shifting, so that lookups need no tombstones. */
static void erase(struct companion *c, struct mapping *m)
{
	size_t mask = c->nslots - 1;
	size_t hole = (size_t)(m - c->slots);

	c->live--;
	c->live_bytes -= m->len;
	if (m->orphaned)
		c->orphaned--;
	for (size_t i = (hole + 1) & mask; c->slots[i].id != 0; i = (i + 1) & mask) {
		size_t home = slot_of(c, c->slots[i].id);

		/* Move the entry into the hole unless its home lies cyclically
		 * in (hole, i]: then it would no longer be found. */
		if (((i - home) & mask) >= ((i - hole) & mask)) {
			c->slots[hole] = c->slots[i];
			hole = i;
		}
	}
	c->slots[hole].id = 0;
}

/* Unregister m from the host; 0, or the host's negative errno. */
static int host_unregister(struct companion *c, const struct mapping *m)
{
	int rc;

	if (c->hd->identity_dma || m->orphaned)
		return 0;
	rc = c->hd->ops->dma_unregister(c->hd, m->id);
	if (rc < 0)
		log_warn("apple-dma: unregistering id %#llx (gpa %#llx, %llu bytes) failed: %s",
			 (unsigned long long)m->id, (unsigned long long)m->gpa, (unsigned long long)m->len,
			 host_device_error(c->hd));
	return rc;
}

/*
 * Unregister and forget every mapping overlapping [gpa, gpa + len) (all of
 * them when all is true).  The host memory is going away, so a mapping is
 * forgotten even if the host refuses to unregister it.  Returns the number
 * of host failures.
 */
static unsigned forget_mappings(struct companion *c, bool all, uint64_t gpa, uint64_t len)
{
	unsigned failures = 0;

	for (size_t i = 0; i < c->nslots && c->live > 0;) {
		struct mapping *m = &c->slots[i];
		bool hit;

		if (m->id == 0) {
			i++;
			continue;
		}
		/* overlap of [m->gpa, +m->len) and [gpa, +len), overflow-safe */
		hit = all || (m->gpa >= gpa ? m->gpa - gpa < len : gpa - m->gpa < m->len);
		if (!hit) {
			i++;
			continue;
		}
		if (host_unregister(c, m) < 0)
			failures++;
		/* erase may shift another entry into slot i: look at it again */
		erase(c, m);
	}
	return failures;
}

/* ---- command processing ---- */

static uint32_t map_one(struct companion *c, const uint8_t *req, uint8_t *resp)
{
	uint64_t gpa = le_load64(req);
	uint32_t len = le_load32(req + 8);
	/* flags (req + 12) are reserved: ignored, see docs/apple-dma-v3.md */
	struct mapping m = { 0 };
	uint64_t bus_len = 0;
	void *va;
	int rc;

	memset(resp, 0, APPLE_DMA_MAP_RESP_SIZE);
	if (len == 0 || gpa + len < gpa) {
		log_debug("apple-dma: MAP gpa %#llx len %u: malformed", (unsigned long long)gpa, len);
		return APPLE_DMA_INVAL;
	}
	/* The platform has no DMA direction: the device may write anything
	 * that is registered, so the whole range must be writable. */
	va = guest_mem_translate(c->gm, gpa, len, true);
	if (!va) {
		log_debug("apple-dma: MAP gpa %#llx len %u: not inside one writable guest RAM range",
			  (unsigned long long)gpa, len);
		return APPLE_DMA_IOERR;
	}
	if (c->host_gone || !host_device_present(c->hd)) {
		log_debug("apple-dma: MAP gpa %#llx len %u refused: the managed function is gone",
			  (unsigned long long)gpa, len);
		c->stats.removed_refused++;
		return APPLE_DMA_IOERR;
	}
	if (c->maps_refused) {
		log_debug("apple-dma: MAP gpa %#llx len %u refused: no passthrough client to map for",
			  (unsigned long long)gpa, len);
		return APPLE_DMA_IOERR;
	}
	if (c->live >= c->max_live) {
		log_debug("apple-dma: MAP refused: %zu live mappings (limit %u)", c->live, c->max_live);
		return APPLE_DMA_IOERR;
	}
	m.id = c->next_id++;
	m.gpa = gpa;
	m.len = len;
	if (c->hd->identity_dma) {
		m.bus = gpa;
	} else {
		rc = c->hd->ops->dma_register(c->hd, m.id, va, len, &m.bus, &bus_len);
		if (rc == -ENODEV && !host_device_present(c->hd))
			c->stats.removed_refused++;
		if (rc < 0) {
			log_debug("apple-dma: MAP gpa %#llx len %u: host refused: %s", (unsigned long long)gpa,
				  len, host_device_error(c->hd));
			return APPLE_DMA_IOERR;
		}
		if (bus_len < len) {
			/* A short mapping must fail rather than come back short. */
			log_debug("apple-dma: MAP gpa %#llx len %u: host gave only %llu bytes",
				  (unsigned long long)gpa, len, (unsigned long long)bus_len);
			host_unregister(c, &m);
			return APPLE_DMA_IOERR;
		}
	}
	if (insert(c, &m) < 0) {
		log_error("apple-dma: out of memory tracking mapping of gpa %#llx", (unsigned long long)gpa);
		host_unregister(c, &m);
		return APPLE_DMA_IOERR;
	}
	le_store64(resp, m.id);
	le_store64(resp + 8, m.bus);
	le_store32(resp + 16, len);
	return APPLE_DMA_OK;
}

static uint32_t unmap_one(struct companion *c, const uint8_t *req, uint8_t *resp)
{
	uint64_t id = le_load64(req);
	uint64_t size = le_load64(req + 8);
	struct mapping *m = lookup(c, id);
	int rc;

	memset(resp, 0, APPLE_DMA_UNMAP_RESP_SIZE);
	le_store64(resp, id);
	if (!m) {
		log_debug("apple-dma: UNMAP id %#llx: unknown id", (unsigned long long)id);
		return APPLE_DMA_IOERR;
	}
	if (size != m->len) {
		log_debug("apple-dma: UNMAP id %#llx: size %llu but the mapping has %llu bytes",
			  (unsigned long long)id, (unsigned long long)size, (unsigned long long)m->len);
		return APPLE_DMA_IOERR;
	}
	rc = host_unregister(c, m);
	if (rc < 0 && rc != -ENOENT)
		return APPLE_DMA_IOERR; /* still registered: keep it */
	erase(c, m);
	/* -ENOENT: the host had already lost it; gone either way, but say so */
	return rc == 0 ? APPLE_DMA_OK : APPLE_DMA_IOERR;
}

/*
 * Process one batch; returns the batch status.  Steps 4-9 of "Processing a
 * doorbell" in docs/apple-dma-v3.md.
 */
static uint32_t run_batch(struct companion *c, uint32_t type, uint32_t count, uint64_t req_gpa,
			  uint64_t resp_gpa)
{
	size_t req_size, resp_size;
	const void *req;
	void *resp;
	uint32_t batch = APPLE_DMA_OK;

	if (type == APPLE_DMA_CMD_UNMAP_ALL) /* 4 (v3): count and arrays ignored */
		return forget_mappings(c, true, 0, 0) ? APPLE_DMA_IOERR : APPLE_DMA_OK;
	/* 5 */
	if (count == 0 || count > c->max_entries || req_gpa == 0 || resp_gpa == 0) {
		log_debug("apple-dma: batch refused: count %u (max %u), req %#llx, resp %#llx", count,
			  c->max_entries, (unsigned long long)req_gpa, (unsigned long long)resp_gpa);
		return APPLE_DMA_INVAL;
	}
	/* 6 */
	if (type == APPLE_DMA_CMD_MAP) {
		req_size = APPLE_DMA_MAP_REQ_SIZE;
		resp_size = APPLE_DMA_MAP_RESP_SIZE;
	} else if (type == APPLE_DMA_CMD_UNMAP) {
		req_size = APPLE_DMA_UNMAP_REQ_SIZE;
		resp_size = APPLE_DMA_UNMAP_RESP_SIZE;
	} else {
		log_debug("apple-dma: unknown command type %u", type);
		return APPLE_DMA_INVAL;
	}
	/* 7; count <= 65536 so the sizes cannot overflow */
	req = guest_mem_translate(c->gm, req_gpa, (uint64_t)count * req_size, false);
	resp = guest_mem_translate(c->gm, resp_gpa, (uint64_t)count * resp_size, true);
	if (!req || !resp) {
		log_debug("apple-dma: %s array of %u entries at %#llx is not inside one guest RAM range",
			  !req ? "request" : "response", count,
			  (unsigned long long)(!req ? req_gpa : resp_gpa));
		return APPLE_DMA_INVAL;
	}
	/* 8: copy every request out before writing anything (req and resp may
	 * overlap, and the guest may be changing them). */
	/* Guarded: a VMM that truncated its RAM file gets an error, not a dead broker. */
	if (vfa_guarded_copy(c->req_copy, req, (size_t)count * req_size) < 0) {
		log_warn("apple-dma: the request array at %#llx is gone (its memory file was truncated)",
			 (unsigned long long)req_gpa);
		return APPLE_DMA_INVAL;
	}
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *rq = c->req_copy + (size_t)i * req_size;
		uint8_t *rs = c->resp_buf + (size_t)i * resp_size;
		uint32_t st;

		if (type == APPLE_DMA_CMD_MAP) {
			st = map_one(c, rq, rs);
			c->stats.map_entries++;
			le_store32(rs + 20, st);
		} else {
			st = unmap_one(c, rq, rs);
			c->stats.unmap_entries++;
			le_store32(rs + 8, st);
		}
		if (st != APPLE_DMA_OK) {
			c->stats.failed_entries++;
			batch = APPLE_DMA_IOERR; /* 9 */
		}
	}
	if (vfa_guarded_copy(resp, c->resp_buf, (size_t)count * resp_size) < 0) {
		log_warn("apple-dma: the response array at %#llx is gone (its memory file was truncated)",
			 (unsigned long long)resp_gpa);
		return APPLE_DMA_IOERR;
	}
	return batch;
}

static void doorbell(struct companion *c)
{
	uint8_t page[APPLE_DMA_CMD_PAGE_SIZE];
	const void *src;
	uint8_t *dst;
	uint32_t st;

	c->stats.doorbells++;
	if (!c->host_gone && !host_device_present(c->hd))
		companion_host_gone(c); /* before anything of this batch */
	/* 1, 2: no page, or not readable: STATUS only */
	src = c->cmd_gpa ? guest_mem_translate(c->gm, c->cmd_gpa, sizeof(page), false) : NULL;
	if (!src) {
		log_debug("apple-dma: doorbell with %s command page %#llx", c->cmd_gpa ? "unreachable" : "no",
			  (unsigned long long)c->cmd_gpa);
		c->status = APPLE_DMA_INVAL;
		c->stats.inval++;
		return;
	}
	/* 3: copied out once */
	if (vfa_guarded_copy(page, src, sizeof(page)) < 0) {
		log_warn("apple-dma: the command page at %#llx is gone (its memory file was truncated)",
			 (unsigned long long)c->cmd_gpa);
		c->status = APPLE_DMA_INVAL;
		c->stats.inval++;
		return;
	}
	st = run_batch(c, le_load32(page), le_load32(page + 4), le_load64(page + 16), le_load64(page + 24));
	/* 10: the page's status field (if the page is writable) and STATUS */
	dst = guest_mem_translate(c->gm, c->cmd_gpa, sizeof(page), true);
	if (dst)
		(void)vfa_guarded_copy(dst + 8, (uint8_t[4]){ (uint8_t)st, 0, 0, 0 }, 4);
	c->status = st;
	if (st == APPLE_DMA_INVAL)
		c->stats.inval++;
	else if (st == APPLE_DMA_IOERR)
		c->stats.ioerr++;
}

/* ---- BAR0 ---- */

static uint32_t reg_read(struct companion *c, uint64_t reg)
{
	const struct hd_dma_limits *lim = &c->hd->limits;

	switch (reg) {
	case APPLE_DMA_REG_VERSION:
		return APPLE_DMA_VERSION;
	case APPLE_DMA_REG_MANAGED_BDF:
		return c->managed_bdf;
	case APPLE_DMA_REG_MAX_ENTRIES:
		return c->max_entries;
	case APPLE_DMA_REG_STATUS:
		return c->status;
	case APPLE_DMA_REG_FEATURES:
		return APPLE_DMA_FEATURES;
	case APPLE_DMA_REG_DART_MAX_BYTES_LO:
		return (uint32_t)lim->max_bytes;
	case APPLE_DMA_REG_DART_MAX_BYTES_HI:
		return (uint32_t)(lim->max_bytes >> 32);
	case APPLE_DMA_REG_DART_MAX_MAPPINGS:
		return lim->max_mappings;
	case APPLE_DMA_REG_DART_GRANULE:
		return lim->granule;
	case APPLE_DMA_REG_LIVE_BYTES_LO:
		return (uint32_t)c->live_bytes;
	case APPLE_DMA_REG_LIVE_BYTES_HI:
		return (uint32_t)(c->live_bytes >> 32);
	case APPLE_DMA_REG_LIVE_MAPPINGS:
		return (uint32_t)c->live;
	case APPLE_DMA_REG_GUEST_FEATURES:
		return c->guest_features;
	default: /* write-only registers and unlisted offsets */
		return 0;
	}
}

uint32_t companion_mmio_read(struct companion *c, uint64_t offset, unsigned width)
{
	unsigned shift;

	if ((width != 1 && width != 2 && width != 4) || offset >= COMPANION_BAR0_SIZE ||
	    (offset & 3) + width > 4) {
		c->stats.bad_accesses++;
		return 0;
	}
	/* The managed function is gone: registers read as a missing device's (the guest's sign). */
	if (!c->host_gone && !host_device_present(c->hd))
		companion_host_gone(c);
	if (c->host_gone)
		return (uint32_t)(0xffffffffull >> (32 - 8 * width));
	shift = (unsigned)(offset & 3) * 8;
	return (uint32_t)((reg_read(c, offset & ~3ull) >> shift) & (0xffffffffull >> (32 - 8 * width)));
}

void companion_mmio_write(struct companion *c, uint64_t offset, unsigned width, uint32_t value)
{
	if (width != 4 || (offset & 3) || offset >= COMPANION_BAR0_SIZE) {
		c->stats.bad_accesses++;
		return;
	}
	switch (offset) {
	case APPLE_DMA_REG_CMD_GPA_LO:
		c->cmd_gpa = (c->cmd_gpa & 0xffffffff00000000ull) | value;
		break;
	case APPLE_DMA_REG_CMD_GPA_HI:
		c->cmd_gpa = (c->cmd_gpa & 0xffffffffull) | (uint64_t)value << 32;
		break;
	case APPLE_DMA_REG_DOORBELL:
		doorbell(c);
		break;
	case APPLE_DMA_REG_GUEST_FEATURES:
		/* only what the device offers can be in use */
		c->guest_features = value & APPLE_DMA_FEATURES;
		break;
	default: /* read-only registers and unlisted offsets */
		break;
	}
}

/* ---- config space ---- */

/* Bits of each config byte the guest may change; everything else is fixed. */
static uint8_t config_wmask(uint32_t off)
{
	switch (off) {
	case 0x04: /* COMMAND: memory space, bus master */
		return 0x06;
	case 0x05: /* COMMAND: INTx disable */
		return 0x04;
	case 0x0c: /* cache line size */
		return 0xff;
	case 0x11: /* BAR0: 4 KiB, so address bits 31..12 */
		return 0xf0;
	case 0x12:
	case 0x13:
		return 0xff;
	case 0x3c: /* interrupt line: a scratch byte for the OS */
		return 0xff;
	default:
		return 0;
	}
}

static void config_init(struct companion *c)
{
	uint8_t *cfg = c->config;

	memset(cfg, 0, sizeof(c->config));
	cfg[0x00] = COMPANION_VENDOR_ID & 0xff;
	cfg[0x01] = COMPANION_VENDOR_ID >> 8;
	cfg[0x02] = COMPANION_DEVICE_ID & 0xff;
	cfg[0x03] = COMPANION_DEVICE_ID >> 8;
	cfg[0x09] = COMPANION_CLASS_CODE & 0xff;
	cfg[0x0a] = (COMPANION_CLASS_CODE >> 8) & 0xff;
	cfg[0x0b] = COMPANION_CLASS_CODE >> 16;
	/* BAR0 low bits 0: 32-bit memory, not prefetchable. */
	/* Subsystem: QEMU's defaults (1af4:1100), as the reference device has. */
	cfg[0x2c] = 0xf4;
	cfg[0x2d] = 0x1a;
	cfg[0x2e] = 0x00;
	cfg[0x2f] = 0x11;
}

int companion_config_read(struct companion *c, uint32_t offset, void *buf, uint32_t len)
{
	if (offset > COMPANION_CONFIG_SIZE || len > COMPANION_CONFIG_SIZE - offset)
		return -EINVAL;
	memcpy(buf, c->config + offset, len);
	return 0;
}

int companion_config_write(struct companion *c, uint32_t offset, const void *buf, uint32_t len)
{
	const uint8_t *src = buf;

	if (offset > COMPANION_CONFIG_SIZE || len > COMPANION_CONFIG_SIZE - offset)
		return -EINVAL;
	for (uint32_t i = 0; i < len; i++) {
		uint8_t wm = config_wmask(offset + i);
		uint8_t *b = &c->config[offset + i];

		*b = (uint8_t)((*b & ~wm) | (src[i] & wm));
	}
	return 0;
}

/* ---- lifetime ---- */

void companion_set_managed_bdf(struct companion *c, uint16_t managed_bdf)
{
	c->managed_bdf = managed_bdf;
}

struct companion *companion_create(struct host_device *hd, struct guest_mem *gm, uint16_t managed_bdf,
				   uint32_t max_entries)
{
	struct companion *c;

	if (!hd || !gm) {
		log_error("apple-dma: companion needs a host device and a guest memory map");
		return NULL;
	}
	if (max_entries == 0)
		max_entries = COMPANION_DEFAULT_MAX_ENTRIES;
	if (max_entries > COMPANION_LIMIT_MAX_ENTRIES) {
		log_error("apple-dma: max_entries %u is above the limit of %u", max_entries,
			  COMPANION_LIMIT_MAX_ENTRIES);
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		goto nomem;
	c->hd = hd;
	c->gm = gm;
	c->managed_bdf = managed_bdf;
	c->max_entries = max_entries;
	c->max_live = hd->limits.max_mappings ? hd->limits.max_mappings : DEFAULT_MAX_LIVE;
	c->next_id = 1;
	c->nslots = 64;
	c->slots = calloc(c->nslots, sizeof(*c->slots));
	/* the larger entry size of each array, so any type fits */
	c->req_copy = malloc((size_t)max_entries * APPLE_DMA_MAP_REQ_SIZE);
	c->resp_buf = malloc((size_t)max_entries * APPLE_DMA_MAP_RESP_SIZE);
	if (!c->slots || !c->req_copy || !c->resp_buf)
		goto nomem;
	config_init(c);
	return c;
nomem:
	log_error("apple-dma: out of memory creating the companion");
	companion_destroy(c);
	return NULL;
}

void companion_destroy(struct companion *c)
{
	if (!c)
		return;
	if (c->slots)
		forget_mappings(c, true, 0, 0);
	free(c->slots);
	free(c->req_copy);
	free(c->resp_buf);
	free(c);
}

void companion_reset(struct companion *c)
{
	c->stats.resets++;
	forget_mappings(c, true, 0, 0);
	c->status = 0;
	c->cmd_gpa = 0;
	c->guest_features = 0;
	/* COMMAND back to 0 (a reset function stops decoding); BAR0 and the
	 * interrupt line keep their values, which the VMM owns. */
	c->config[0x04] = 0;
	c->config[0x05] = 0;
	/* next_id is NOT reset: ids from before the reset stay unknown. */
}

void companion_release_mappings(struct companion *c)
{
	if (c->live > 0)
		log_info("apple-dma: releasing %zu mappings: the managed function was reset", c->live);
	forget_mappings(c, true, 0, 0);
}

void companion_guest_ram_removed(struct companion *c, uint64_t gpa, uint64_t len)
{
	if (len == 0)
		return;
	forget_mappings(c, false, gpa, len);
}

void companion_stats(const struct companion *c, struct companion_stats *out)
{
	*out = c->stats;
	out->live_ids = c->live;
	out->live_bytes = c->live_bytes;
	out->guest_features = c->guest_features;
	out->orphaned_ids = c->orphaned;
}

void companion_refuse_maps(struct companion *c, bool refuse)
{
	c->maps_refused = refuse;
}

unsigned companion_host_gone(struct companion *c)
{
	unsigned released = 0;

	if (!c->host_gone)
		log_warn("apple-dma: the managed function is gone: releasing %zu mappings, refusing new ones",
			 c->live - c->orphaned);
	c->host_gone = true;
	for (size_t i = 0; i < c->nslots && c->orphaned < c->live; i++) {
		struct mapping *m = &c->slots[i];

		if (m->id == 0 || m->orphaned)
			continue;
		/* Released once, here; the id stays for the guest's UNMAP. */
		if (host_unregister(c, m) == 0)
			released++;
		m->orphaned = true;
		c->orphaned++;
	}
	return released;
}

void companion_host_back(struct companion *c)
{
	c->host_gone = false;
}

bool companion_host_is_gone(const struct companion *c)
{
	return c->host_gone;
}
