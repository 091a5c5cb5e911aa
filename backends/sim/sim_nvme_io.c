// SPDX-License-Identifier: MIT
/*
 * The simulated NVMe controller: I/O commands, PRP transfers through the
 * DART, the backing store (sim_nvme_int.h).  Every value read from guest
 * memory (PRP lists) is copied first and then checked.
 */
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "le.h"
#include "log.h"
#include "sim_nvme_int.h"

static uint16_t dma_chunk(struct sim_nvme *n, uint64_t bus, uint8_t *buf, uint64_t len, bool to_guest)
{
	int ret = to_guest ? sim_dart_dma_write(n->dart, bus, buf, len) : sim_dart_dma_read(n->dart, bus, buf, len);

	if (ret < 0) {
		n->stats.dma_faults++;
		return SC_DATA_TRANSFER_ERROR;
	}
	return SC_SUCCESS;
}

/*
 * Turn PRP1/PRP2 (a data pointer or a PRP list, whose pages chain through
 * their last entry) into the pieces of a len-byte transfer.  The lists are
 * copied out of guest memory once, so the guest changing them meanwhile
 * cannot change what was checked.
 */
static uint16_t prp_segments(struct sim_nvme *n, uint64_t prp1, uint64_t prp2, uint64_t len, unsigned *nseg)
{
	uint64_t ps = page_size(n);
	struct prp_seg *seg = n->prp_segs;
	unsigned count_segs = 0;

	if (len == 0 || len > SIM_NVME_MAX_TRANSFER)
		return SC_INVALID_FIELD;
	if (prp1 & 3)
		return SC_PRP_OFFSET_INVALID;
	uint64_t first = ps - (prp1 & (ps - 1));
	if (first > len)
		first = len;
	seg[count_segs++] = (struct prp_seg){ prp1, first };
	uint64_t rem = len - first;
	if (rem > 0 && rem <= ps) {
		if (prp2 & (ps - 1))
			return SC_PRP_OFFSET_INVALID;
		seg[count_segs++] = (struct prp_seg){ prp2, rem };
		rem = 0;
	}

	/* PRP2 points into a list (any qword); a chained list starts a page. */
	uint64_t list = prp2;
	uint64_t pages_total = (rem + ps - 1) / ps;
	uint64_t hops = 0;
	if (rem && (list & 7))
		return SC_PRP_OFFSET_INVALID;
	while (rem) {
		if (++hops > pages_total)
			return SC_INVALID_FIELD; /* a chain that does not advance */
		uint64_t slots = (ps - (list & (ps - 1))) / 8;
		uint64_t pages_left = (rem + ps - 1) / ps;
		bool chained = pages_left > slots;
		uint64_t count = chained ? slots : pages_left;

		uint16_t st = dma_chunk(n, list, (uint8_t *)n->prp_scratch, count * 8, false);
		if (st)
			return st;
		uint64_t data_entries = chained ? count - 1 : count;
		for (uint64_t i = 0; i < data_entries; i++) {
			uint64_t e = n->prp_scratch[i];
			uint64_t chunk = rem < ps ? rem : ps;
			if (e & (ps - 1))
				return SC_PRP_OFFSET_INVALID;
			if (count_segs == SIM_NVME_MAX_PRP_SEGS)
				return SC_INVALID_FIELD; /* cannot happen: len <= MDTS */
			seg[count_segs++] = (struct prp_seg){ e, chunk };
			rem -= chunk;
		}
		if (chained) {
			list = n->prp_scratch[count - 1];
			/* A PRP list pointer is a PRP list entry: memory page offset 0. */
			if (list & (ps - 1))
				return SC_PRP_OFFSET_INVALID;
		}
	}
	*nseg = count_segs;
	return SC_SUCCESS;
}

/*
 * Move len bytes between buf and the guest buffer described by PRP1/PRP2.
 * Every entry and every byte's DART translation is checked before the first
 * byte moves: a command that fails changes neither guest memory nor the
 * namespace (a failed Write leaves no half-written blocks behind).
 */
uint16_t sim_nvme_dma_prp(struct sim_nvme *n, uint64_t prp1, uint64_t prp2, uint8_t *buf, uint64_t len, bool to_guest)
{
	unsigned nseg = 0;
	uint16_t st = prp_segments(n, prp1, prp2, len, &nseg);

	if (st)
		return st;
	for (unsigned i = 0; i < nseg; i++) {
		if (sim_dart_dma_check(n->dart, n->prp_segs[i].bus, n->prp_segs[i].len, to_guest) < 0) {
			n->stats.dma_faults++;
			return SC_DATA_TRANSFER_ERROR;
		}
	}
	for (unsigned i = 0; i < nseg; i++) {
		/* Cannot fault: the mappings are the host's and did not change since the check. */
		st = dma_chunk(n, n->prp_segs[i].bus, buf, n->prp_segs[i].len, to_guest);
		if (st)
			return st;
		buf += n->prp_segs[i].len;
	}
	return SC_SUCCESS;
}

/* The supported I/O commands and their effects (log page 05h, I/O part). */
static const struct io_cmd {
	uint8_t opcode;
	uint32_t effects;
} nvme_io_cmds[] = {
	{ NVME_CMD_FLUSH, CSE_CSUPP },
	{ NVME_CMD_WRITE, CSE_CSUPP | CSE_LBCC },
	{ NVME_CMD_READ, CSE_CSUPP },
};

void sim_nvme_io_effects(uint8_t *log_io_part)
{
	for (size_t i = 0; i < sizeof(nvme_io_cmds) / sizeof(nvme_io_cmds[0]); i++)
		le_store32(log_io_part + 4 * nvme_io_cmds[i].opcode, nvme_io_cmds[i].effects);
}

uint16_t sim_nvme_io_command(struct sim_nvme *n, const struct nvme_sqe *c)
{
	n->stats.io_commands++;
	if (c->flags & SQE_FLAGS_UNSUPPORTED)
		return SC_INVALID_FIELD;
	switch (c->opcode) {
	case NVME_CMD_FLUSH:
		if (c->nsid != 1 && c->nsid != 0xffffffff)
			return SC_INVALID_NS;
		if (n->store_fd >= 0 && msync(n->store, n->store_size, MS_SYNC) < 0)
			log_warn("sim nvme: flushing the backing file failed: %s", strerror(errno));
		return SC_SUCCESS;
	case NVME_CMD_WRITE:
	case NVME_CMD_READ: {
		uint64_t slba = (uint64_t)c->cdw11 << 32 | c->cdw10;
		uint64_t nlb = (uint64_t)(c->cdw12 & 0xffff) + 1;
		uint64_t blocks = n->store_size / SIM_NVME_LBA_SIZE;
		bool is_read = c->opcode == NVME_CMD_READ;

		if (c->nsid != 1)
			return SC_INVALID_NS;
		if (slba >= blocks || nlb > blocks - slba)
			return SC_LBA_OUT_OF_RANGE;
		uint64_t len = nlb * SIM_NVME_LBA_SIZE;
		if (len > SIM_NVME_MAX_TRANSFER)
			return SC_INVALID_FIELD;
		n->kick_bytes = len < n->kick_bytes ? n->kick_bytes - len : 0;
		uint16_t st = sim_nvme_dma_prp(n, c->prp1, c->prp2, n->store + slba * SIM_NVME_LBA_SIZE, len, is_read);
		if (st == SC_SUCCESS) {
			if (is_read) {
				n->host_reads++;
				n->units_read += (nlb + 999) / 1000;
			} else {
				n->host_writes++;
				n->units_written += (nlb + 999) / 1000;
			}
		}
		return st;
	}
	default:
		return SC_INVALID_OPCODE;
	}
}

int sim_nvme_open_store(struct sim_nvme *n, const struct sim_nvme_config *cfg, char *err, size_t errlen)
{
	uint64_t size = cfg->size;

	if (cfg->backing) {
		struct stat st;
		n->store_fd = open(cfg->backing, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (n->store_fd < 0 || fstat(n->store_fd, &st) < 0) {
			snprintf(err, errlen, "cannot open backing file %s: %s", cfg->backing, strerror(errno));
			return -errno;
		}
		if (!size)
			size = st.st_size ? (uint64_t)st.st_size : SIM_NVME_DEFAULT_SIZE;
		if ((uint64_t)st.st_size < size && ftruncate(n->store_fd, (off_t)size) < 0) {
			snprintf(err, errlen, "cannot grow backing file %s to %" PRIu64 " bytes: %s", cfg->backing,
				 size, strerror(errno));
			return -errno;
		}
	} else if (!size) {
		size = SIM_NVME_DEFAULT_SIZE;
	}
	if (size % SIM_NVME_LBA_SIZE || size < SIM_NVME_MIN_SIZE || size > SIM_NVME_MAX_SIZE) {
		snprintf(err, errlen, "namespace size %" PRIu64 " bytes: must be a multiple of 512 between 1 MiB and 1 TiB",
			 size);
		return -EINVAL;
	}
	n->store_size = size;
	if (n->store_fd >= 0)
		n->store = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, n->store_fd, 0);
	else
		n->store = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (n->store == MAP_FAILED) {
		n->store = NULL;
		snprintf(err, errlen, "cannot map %" PRIu64 " bytes of backing store: %s", size, strerror(errno));
		return -ENOMEM;
	}
	return 0;
}
