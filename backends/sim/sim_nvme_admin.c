// SPDX-License-Identifier: MIT
/* The simulated NVMe controller: admin commands, features, Identify, log pages (sim_nvme_int.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "le.h"
#include "log.h"
#include "sim_nvme_int.h"

/* Space-padded ASCII field of an Identify structure. */
static void put_ascii(uint8_t *p, size_t len, const char *s)
{
	size_t n = strlen(s);

	memset(p, ' ', len);
	memcpy(p, s, n < len ? n : len);
}

/*
 * This controller's serial number: "VFA0SIM" and 13 hex digits unique to
 * the instance (process id and the instance's address).  Linux refuses a
 * second controller with the same subsystem NQN and a namespace whose
 * NGUID another one has already, so two simulated NVMe in one guest must
 * differ in both; they derive from this.
 */
static void instance_serial(const struct sim_nvme *n, char out[21])
{
	uint64_t tag = ((uint64_t)(unsigned)getpid() << 24) ^ ((uint64_t)(uintptr_t)n >> 4);

	snprintf(out, 21, "VFA0SIM%013" PRIx64, (uint64_t)(tag & 0xfffffffffffffULL));
}

static void identify_controller(struct sim_nvme *n, uint8_t *id)
{
	char serial[21];

	instance_serial(n, serial);
	le_store16(id + 0, SIM_NVME_VENDOR_ID);
	le_store16(id + 2, SIM_NVME_VENDOR_ID);
	put_ascii(id + 4, 20, serial);
	put_ascii(id + 24, 40, "vfio-apple simulated NVMe");
	put_ascii(id + 64, 8, "1.0");
	id[72] = 6;                   /* RAB */
	id[77] = SIM_NVME_MDTS_SHIFT; /* MDTS */
	le_store16(id + 78, 1);            /* CNTLID */
	le_store32(id + 80, NVME_VERSION);
	id[111] = 1;                  /* CNTRLTYPE: I/O controller */
	id[258] = 3;                  /* ACL: four Aborts */
	id[259] = AERL;
	id[260] = 0x03;               /* FRMW: one slot, read-only */
	le_store16(id + 266, 0x0157);      /* WCTEMP 343 K */
	le_store16(id + 268, 0x0175);      /* CCTEMP 373 K */
	id[512] = 0x66;               /* SQES: 64 bytes */
	id[513] = 0x44;               /* CQES: 16 bytes */
	le_store32(id + 516, 1);           /* NN */
	id[525] = 1;                  /* VWC present */
	snprintf((char *)id + 768, 256, "nqn.2026-01.io.vfio-apple:sim-nvme:%s", serial);
	le_store16(id + 2048, 2500);       /* PSD0: 25 W */
}

/* NGUID: "vfa-" and the controller's 12 last serial digits (unique, see above). */
static void namespace_guid(const struct sim_nvme *n, uint8_t *g)
{
	char serial[21];

	instance_serial(n, serial);
	memcpy(g, "vfa-", 4);
	memcpy(g + 4, serial + 8, 12);
}

static void identify_namespace(struct sim_nvme *n, uint8_t *id)
{
	uint64_t blocks = n->store_size / SIM_NVME_LBA_SIZE;

	le_store64(id + 0, blocks);  /* NSZE */
	le_store64(id + 8, blocks);  /* NCAP */
	le_store64(id + 16, blocks); /* NUSE */
	id[25] = 0;             /* NLBAF: one format */
	id[26] = 0;             /* FLBAS: format 0 */
	namespace_guid(n, id + 104);
	le_store32(id + 128, 9u << 16); /* LBAF0: 512-byte data, no metadata */
}

static uint16_t admin_identify(struct sim_nvme *n, const struct nvme_sqe *c)
{
	uint8_t cns = (uint8_t)c->cdw10;
	uint8_t csi = (uint8_t)(c->cdw11 >> 24);
	uint8_t *id = n->scratch;

	memset(id, 0, 4096);
	switch (cns) {
	case 0x00: /* namespace */
		if (c->nsid != 1)
			return SC_INVALID_NS;
		identify_namespace(n, id);
		break;
	case 0x01: /* controller */
		identify_controller(n, id);
		break;
	case 0x02: /* active namespace list: IDs above nsid */
		if (c->nsid >= 0xfffffffe)
			return SC_INVALID_NS;
		if (c->nsid < 1)
			le_store32(id, 1);
		break;
	case 0x03: /* namespace identification descriptors */
		if (c->nsid != 1)
			return SC_INVALID_NS;
		id[0] = 2;  /* NIDT: NGUID */
		id[1] = 16; /* NIDL */
		namespace_guid(n, id + 4);
		break;
	case 0x05: /* I/O command set specific namespace: NVM has nothing more */
		if (c->nsid != 1)
			return SC_INVALID_NS;
		if (csi != 0)
			return SC_INVALID_FIELD;
		break;
	case 0x06: /* I/O command set specific controller: no extra limits */
		if (csi != 0)
			return SC_INVALID_FIELD;
		break;
	case 0x08: /* command set independent namespace */
		if (c->nsid != 1)
			return SC_INVALID_NS;
		id[14] = 1; /* NSTAT: ready */
		break;
	default:
		return SC_INVALID_FIELD;
	}
	return sim_nvme_dma_prp(n, c->prp1, c->prp2, id, 4096, true);
}

static uint16_t admin_create_cq(struct sim_nvme *n, const struct nvme_sqe *c)
{
	uint16_t qid = (uint16_t)c->cdw10;
	uint32_t qsize = (c->cdw10 >> 16) + 1;
	bool pc = c->cdw11 & 1;
	bool ien = c->cdw11 & 2;
	uint16_t vector = (uint16_t)(c->cdw11 >> 16);

	if (qid == 0 || qid >= NQUEUES || n->cq[qid].live)
		return SC_INVALID_QID;
	if (qsize < 2 || qsize > SIM_NVME_MAX_QUEUE_ENTRIES)
		return SC_INVALID_QSIZE;
	if (!pc)
		return SC_INVALID_FIELD; /* CAP.CQR: queues must be contiguous */
	if (c->prp1 & (page_size(n) - 1))
		return SC_PRP_OFFSET_INVALID;
	if (vector >= SIM_NVME_VECTORS)
		return SC_INVALID_VECTOR;
	n->cq[qid] = (struct nvme_cq){
		.live = true, .base = c->prp1, .size = qsize, .phase = true, .ien = ien, .vector = vector,
	};
	return SC_SUCCESS;
}

static uint16_t admin_create_sq(struct sim_nvme *n, const struct nvme_sqe *c)
{
	uint16_t qid = (uint16_t)c->cdw10;
	uint32_t qsize = (c->cdw10 >> 16) + 1;
	bool pc = c->cdw11 & 1;
	uint16_t cqid = (uint16_t)(c->cdw11 >> 16);

	if (qid == 0 || qid >= NQUEUES || n->sq[qid].live)
		return SC_INVALID_QID;
	if (cqid == 0 || cqid >= NQUEUES || !n->cq[cqid].live)
		return SC_CQ_INVALID;
	if (qsize < 2 || qsize > SIM_NVME_MAX_QUEUE_ENTRIES)
		return SC_INVALID_QSIZE;
	if (!pc)
		return SC_INVALID_FIELD;
	if (c->prp1 & (page_size(n) - 1))
		return SC_PRP_OFFSET_INVALID;
	n->sq[qid] = (struct nvme_sq){ .live = true, .base = c->prp1, .size = qsize, .cqid = cqid };
	return SC_SUCCESS;
}

static uint16_t admin_delete_sq(struct sim_nvme *n, const struct nvme_sqe *c)
{
	uint16_t qid = (uint16_t)c->cdw10;

	if (qid == 0 || qid >= NQUEUES || !n->sq[qid].live)
		return SC_INVALID_QID;
	/* Commands run synchronously, so none is outstanding to abort. */
	memset(&n->sq[qid], 0, sizeof(n->sq[qid]));
	return SC_SUCCESS;
}

static uint16_t admin_delete_cq(struct sim_nvme *n, const struct nvme_sqe *c)
{
	uint16_t qid = (uint16_t)c->cdw10;

	if (qid == 0 || qid >= NQUEUES || !n->cq[qid].live)
		return SC_INVALID_QID;
	for (unsigned i = 1; i < NQUEUES; i++)
		if (n->sq[i].live && n->sq[i].cqid == qid)
			return SC_INVALID_QUEUE_DELETION;
	memset(&n->cq[qid], 0, sizeof(n->cq[qid]));
	return SC_SUCCESS;
}

/*
 * The features a controller keeps (model: QEMU's nvme_feature_support[]):
 * identifier, power-on value and the CDW11 bits Set Features stores.
 * Number of Queues and Interrupt Vector Configuration are computed, not
 * kept (handled in set/get below).
 */
static const struct nvme_feature {
	uint8_t fid;
	uint32_t power_on;
	uint32_t wmask;
} nvme_features[NVME_NFEATURES] = {
	{ NVME_FEAT_ARBITRATION, 0, 0xffffffffu },
	{ NVME_FEAT_POWER_MGMT, 0, 0xffffffffu }, /* one power state: PS must be 0 */
	{ NVME_FEAT_TEMP_THRESH, 0x0157, 0xffffffffu }, /* 343 K */
	{ NVME_FEAT_ERROR_RECOVERY, 0, 0xffffffffu },
	{ NVME_FEAT_VOLATILE_WC, 1, 0x1u },
	{ NVME_FEAT_IRQ_COALESCE, 0, 0xffffffffu },
	{ NVME_FEAT_WRITE_ATOMIC, 0, 0xffffffffu },
	{ NVME_FEAT_ASYNC_EVENT, 0, 0xffffffffu },
};

void sim_nvme_features_power_on(struct sim_nvme *n)
{
	for (unsigned i = 0; i < NVME_NFEATURES; i++)
		n->feat[i] = nvme_features[i].power_on;
}

/* The kept feature fid, or NULL. */
static const struct nvme_feature *feature(uint8_t fid, unsigned *index)
{
	for (unsigned i = 0; i < NVME_NFEATURES; i++) {
		if (nvme_features[i].fid == fid) {
			*index = i;
			return &nvme_features[i];
		}
	}
	return NULL;
}

static uint32_t num_queues_result(void)
{
	/* Always all of them, as many controllers do (0-based counts). */
	return (SIM_NVME_IO_QUEUES - 1) | (SIM_NVME_IO_QUEUES - 1) << 16;
}

static uint16_t admin_set_features(struct sim_nvme *n, const struct nvme_sqe *c, uint32_t *result)
{
	uint8_t fid = (uint8_t)c->cdw10;
	const struct nvme_feature *f;
	unsigned i;

	switch (fid) {
	case NVME_FEAT_NUM_QUEUES: {
		uint32_t nsq = (c->cdw11 & 0xffff) + 1, ncq = (c->cdw11 >> 16) + 1;
		if (nsq == 0x10000 || ncq == 0x10000)
			return SC_INVALID_FIELD;
		*result = num_queues_result();
		return SC_SUCCESS;
	}
	case NVME_FEAT_IRQ_CONFIG:
		return (c->cdw11 & 0xffff) >= SIM_NVME_VECTORS ? SC_INVALID_FIELD : SC_SUCCESS;
	case NVME_FEAT_POWER_MGMT:
		if ((c->cdw11 & 0x1f) != 0)
			return SC_INVALID_FIELD; /* one power state */
		break;
	default:
		break;
	}
	f = feature(fid, &i);
	if (!f)
		return SC_INVALID_FIELD;
	n->feat[i] = c->cdw11 & f->wmask;
	return SC_SUCCESS;
}

static uint16_t admin_get_features(struct sim_nvme *n, const struct nvme_sqe *c, uint32_t *result)
{
	uint8_t fid = (uint8_t)c->cdw10;
	unsigned sel = (c->cdw10 >> 8) & 7, i;
	const struct nvme_feature *f = feature(fid, &i);

	if (sel == 3) { /* supported capabilities: nothing saveable or per-namespace */
		if (fid != NVME_FEAT_NUM_QUEUES && fid != NVME_FEAT_IRQ_CONFIG && !f)
			return SC_INVALID_FIELD;
		*result = 0;
		return SC_SUCCESS;
	}
	if (sel > 3)
		return SC_INVALID_FIELD;
	if (fid == NVME_FEAT_NUM_QUEUES) {
		*result = num_queues_result();
		return SC_SUCCESS;
	}
	if (fid == NVME_FEAT_IRQ_CONFIG) {
		if ((c->cdw11 & 0xffff) >= SIM_NVME_VECTORS)
			return SC_INVALID_FIELD;
		*result = c->cdw11 & 0xffff;
		return SC_SUCCESS;
	}
	if (!f)
		return SC_INVALID_FIELD;
	/* default (1): the power-on value; current (0), saved (2): what is set */
	*result = sel == 1 ? f->power_on : n->feat[i];
	return SC_SUCCESS;
}

/* Commands Supported and Effects, admin part: from nvme_admin_cmds[] below. */
static void admin_effects(uint8_t *log);

static uint16_t admin_get_log_page(struct sim_nvme *n, const struct nvme_sqe *c)
{
	uint8_t lid = (uint8_t)c->cdw10;
	uint64_t numd = ((uint64_t)(c->cdw11 & 0xffff) << 16 | (c->cdw10 >> 16)) + 1;
	uint64_t len = numd * 4;
	uint64_t offset = (uint64_t)c->cdw13 << 32 | c->cdw12;
	uint8_t log[4096];
	size_t log_len;

	if (len > SIM_NVME_MAX_TRANSFER || (offset & 3))
		return SC_INVALID_FIELD;
	memset(log, 0, sizeof(log));
	switch (lid) {
	case 0x00: /* supported log pages */
		log_len = 1024;
		for (unsigned l = 0; l <= 5; l++)
			if (l != 4)
				le_store32(log + 4 * l, 1);
		break;
	case 0x01: /* error information: one empty entry */
		log_len = 64;
		break;
	case 0x02: { /* SMART / health */
		log_len = 512;
		le_store16(log + 1, 310); /* composite temperature, K */
		log[3] = 100;        /* available spare % */
		log[4] = 10;         /* spare threshold */
		le_store64(log + 32, n->units_read);
		le_store64(log + 48, n->units_written);
		le_store64(log + 64, n->host_reads);
		le_store64(log + 80, n->host_writes);
		le_store64(log + 112, 1); /* power cycles */
		break;
	}
	case 0x03: /* firmware slots */
		log_len = 512;
		log[0] = 1;
		put_ascii(log + 8, 8, "1.0");
		break;
	case 0x05: /* commands supported and effects: from the command tables */
		log_len = 4096;
		admin_effects(log);
		sim_nvme_io_effects(log + 1024);
		break;
	default:
		return SC_INVALID_LOG_PAGE;
	}
	if (offset >= log_len)
		return SC_INVALID_FIELD;
	/* Bytes past the end of the log read as zero. */
	memset(n->scratch, 0, len);
	uint64_t avail = log_len - offset;
	memcpy(n->scratch, log + offset, len < avail ? len : avail);
	return sim_nvme_dma_prp(n, c->prp1, c->prp2, n->scratch, len, true);
}

static uint16_t admin_abort(struct sim_nvme *n, const struct nvme_sqe *c, uint32_t *result)
{
	(void)n;
	(void)c;
	*result = 1; /* commands complete at once, so nothing was aborted */
	return SC_SUCCESS;
}

static uint16_t admin_identify_cmd(struct sim_nvme *n, const struct nvme_sqe *c, uint32_t *result)
{
	(void)result;
	return admin_identify(n, c);
}

static uint16_t admin_log_page_cmd(struct sim_nvme *n, const struct nvme_sqe *c, uint32_t *result)
{
	(void)result;
	return admin_get_log_page(n, c);
}

#define QUEUE_CMD(fn)                                                                             \
	static uint16_t fn##_cmd(struct sim_nvme *n, const struct nvme_sqe *c, uint32_t *result) \
	{                                                                                         \
		(void)result;                                                                     \
		return fn(n, c);                                                                  \
	}
QUEUE_CMD(admin_delete_sq)
QUEUE_CMD(admin_create_sq)
QUEUE_CMD(admin_delete_cq)
QUEUE_CMD(admin_create_cq)

/*
 * The supported admin commands (model: QEMU's nvme_cse_acs_default[]): the
 * dispatch and the Commands Supported and Effects log both come from here.
 * run NULL: Async Event Request, held until reset (no events to report).
 */
static const struct admin_cmd {
	uint8_t opcode;
	uint32_t effects;
	uint16_t (*run)(struct sim_nvme *n, const struct nvme_sqe *c, uint32_t *result);
} nvme_admin_cmds[] = {
	{ NVME_ADM_DELETE_SQ, CSE_CSUPP, admin_delete_sq_cmd },
	{ NVME_ADM_CREATE_SQ, CSE_CSUPP, admin_create_sq_cmd },
	{ NVME_ADM_GET_LOG_PAGE, CSE_CSUPP, admin_log_page_cmd },
	{ NVME_ADM_DELETE_CQ, CSE_CSUPP, admin_delete_cq_cmd },
	{ NVME_ADM_CREATE_CQ, CSE_CSUPP, admin_create_cq_cmd },
	{ NVME_ADM_IDENTIFY, CSE_CSUPP, admin_identify_cmd },
	{ NVME_ADM_ABORT, CSE_CSUPP, admin_abort },
	{ NVME_ADM_SET_FEATURES, CSE_CSUPP, admin_set_features },
	{ NVME_ADM_GET_FEATURES, CSE_CSUPP, admin_get_features },
	{ NVME_ADM_ASYNC_EVENT, CSE_CSUPP, NULL },
};

static void admin_effects(uint8_t *log)
{
	for (size_t i = 0; i < sizeof(nvme_admin_cmds) / sizeof(nvme_admin_cmds[0]); i++)
		le_store32(log + 4 * nvme_admin_cmds[i].opcode, nvme_admin_cmds[i].effects);
}

/* Returns false when the command is held (no completion now). */
bool sim_nvme_admin_command(struct sim_nvme *n, const struct nvme_sqe *c, uint16_t *status, uint32_t *result)
{
	n->stats.admin_commands++;
	*result = 0;
	if (c->flags & SQE_FLAGS_UNSUPPORTED) { /* fused operations or SGLs */
		*status = SC_INVALID_FIELD;
		return true;
	}
	for (size_t i = 0; i < sizeof(nvme_admin_cmds) / sizeof(nvme_admin_cmds[0]); i++) {
		if (nvme_admin_cmds[i].opcode != c->opcode)
			continue;
		if (nvme_admin_cmds[i].run) {
			*status = nvme_admin_cmds[i].run(n, c, result);
			return true;
		}
		if (n->aers_held > AERL) {
			*status = SC_AER_LIMIT;
			return true;
		}
		n->aers_held++;
		return false;
	}
	*status = SC_INVALID_OPCODE;
	return true;
}
