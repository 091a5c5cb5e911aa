// SPDX-License-Identifier: MIT
/*
 * The simulated NVMe controller (see sim_nvme.h; its parts: sim_nvme_int.h):
 * registers, queues and doorbells, interrupts and the host_device verbs.
 * Guest memory is reached only through the DART model; every value read
 * from it (commands, PRP lists) is copied first and then checked, since the
 * guest may change it under us.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat.h"
#include "le.h"
#include "log.h"
#include "memguard.h"
#include "sim_nvme_int.h"

static void raise_vector(struct sim_nvme *n, unsigned vector)
{
	unsigned word = vector / 64;
	uint64_t bit = 1ull << (vector % 64);

	if (n->hd.gone)
		return; /* a removed device raises nothing */
	if (!n->irq_ready || vector >= SIM_NVME_VECTORS || !(n->irq_mask[word] & bit)) {
		n->stats.interrupts_masked++;
		return;
	}
	n->irq_pending[word] |= bit;
	n->stats.interrupts++;
	if (vfa_notifier_signal(n->wakeup_fds[1]) < 0)
		log_debug("sim nvme: wake-up notifier write failed");
}

static void drop_queues(struct sim_nvme *n)
{
	memset(n->sq, 0, sizeof(n->sq));
	memset(n->cq, 0, sizeof(n->cq));
	n->aers_held = 0;
}

/* Power-on state of the controller registers and features. */
static void controller_power_on(struct sim_nvme *n)
{
	drop_queues(n);
	n->cc = 0;
	n->csts = 0;
	n->state = NVME_CTRL_DISABLED; /* reset: from anywhere */
	n->intms = 0;
	n->aqa = 0;
	n->asq = 0;
	n->acq = 0;
	n->shut_down = false;
	sim_nvme_features_power_on(n);
}

static bool cq_full(const struct nvme_cq *cq)
{
	return (cq->tail + 1) % cq->size == cq->head;
}

/* A fatal controller error: the host must reset the controller. */
static const char *const ctrl_state_names[NVME_CTRL_NSTATES] = { "disabled", "ready", "shutting down",
								 "fatal" };

/* From state (row) to state (column).  Reset (FLR, power-on) is not here: always legal. */
static const bool ctrl_legal[NVME_CTRL_NSTATES][NVME_CTRL_NSTATES] = {
	/* CC.EN 1 (checked: READY, or FATAL for a bad setup); CC.SHN set while disabled */
	[NVME_CTRL_DISABLED] = { [NVME_CTRL_READY] = true, [NVME_CTRL_FATAL] = true, [NVME_CTRL_SHUTDOWN] = true },
	/* CC.SHN; a queue fault; CC.EN 0 */
	[NVME_CTRL_READY] = { [NVME_CTRL_SHUTDOWN] = true, [NVME_CTRL_FATAL] = true, [NVME_CTRL_DISABLED] = true },
	/* CC.EN 0; CC.EN 1 after a shutdown requested while disabled (READY, or FATAL for a bad setup) */
	[NVME_CTRL_SHUTDOWN] = { [NVME_CTRL_DISABLED] = true, [NVME_CTRL_READY] = true, [NVME_CTRL_FATAL] = true },
	/* CC.EN 0 */
	[NVME_CTRL_FATAL] = { [NVME_CTRL_DISABLED] = true },
};

/* Move to state to (staying put is no transition); false and logged if illegal. */
static bool ctrl_to(struct sim_nvme *n, enum nvme_ctrl_state to)
{
	if (n->state == to)
		return true;
	if (!ctrl_legal[n->state][to]) {
		log_error("sim nvme: illegal controller transition %s -> %s (not taken)", ctrl_state_names[n->state],
			  ctrl_state_names[to]);
		n->stats.illegal_transitions++;
		return false;
	}
	n->state = to;
	return true;
}

static void controller_fatal(struct sim_nvme *n, const char *why)
{
	log_warn("sim nvme: controller fatal status: %s", why);
	ctrl_to(n, NVME_CTRL_FATAL);
	n->csts |= CSTS_CFS;
	n->stats.fatal = true;
}

#define BAD_DOORBELLS_LOGGED 16

/* A doorbell write a real controller would ignore; a looping guest must not flood the log. */
__attribute__((format(printf, 2, 3)))
static void bad_doorbell(struct sim_nvme *n, const char *fmt, ...)
{
	char msg[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (++n->bad_doorbells <= BAD_DOORBELLS_LOGGED)
		log_warn("sim nvme: %s%s", msg,
			 n->bad_doorbells == BAD_DOORBELLS_LOGGED ? " (further ones logged at debug level)" : "");
	else
		log_debug("sim nvme: %s", msg);
}

static void post_completion(struct sim_nvme *n, uint16_t sqid, uint16_t cid, uint16_t status, uint32_t result)
{
	struct nvme_sq *sq = &n->sq[sqid];
	struct nvme_cq *cq = &n->cq[sq->cqid];
	uint8_t cqe[16];
	uint64_t addr = cq->base + (uint64_t)cq->tail * 16;

	if (status != SC_SUCCESS) {
		status |= STATUS_DNR;
		n->stats.errors++;
	}
	le_store32(cqe, result);
	le_store32(cqe + 4, 0);
	le_store16(cqe + 8, (uint16_t)sq->head);
	le_store16(cqe + 10, sqid);
	/* The last dword carries the phase: write it after the rest. */
	uint32_t dw3 = (uint32_t)cid | (uint32_t)(cq->phase ? 1 : 0) << 16 | (uint32_t)status << 17;

	/* All of the entry or none of it: check every byte before writing any. */
	uint32_t *last = NULL;
	if (sim_dart_dma_check(n->dart, addr, 16, true) < 0 ||
	    !(last = sim_dart_translate(n->dart, addr + 12, 4, true)) || ((uintptr_t)last & 3) ||
	    sim_dart_dma_write(n->dart, addr, cqe, 12) < 0) {
		controller_fatal(n, "completion queue entry not reachable through the DART");
		return;
	}
	uint8_t le[4];
	le_store32(le, dw3);
	uint32_t dw3_le;
	memcpy(&dw3_le, le, 4);
	atomic_thread_fence(memory_order_release);
	if (vfa_guarded_store32_release(last, dw3_le) < 0) {
		controller_fatal(n, "completion queue entry lost: the guest memory behind it is gone");
		return;
	}

	cq->tail++;
	if (cq->tail == cq->size) {
		cq->tail = 0;
		cq->phase = !cq->phase;
	}
	cq->posted = true;
}

void sim_nvme_sqe_parse(const uint8_t raw[NVME_SQE_SIZE], struct nvme_sqe *c)
{
	*c = (struct nvme_sqe){
		.opcode = raw[0],
		.flags = raw[1],
		.cid = le_load16(raw + 2),
		.nsid = le_load32(raw + 4),
		.rsvd = le_load64(raw + 8),
		.mptr = le_load64(raw + 16),
		.prp1 = le_load64(raw + 24),
		.prp2 = le_load64(raw + 32),
		.cdw10 = le_load32(raw + 40),
		.cdw11 = le_load32(raw + 44),
		.cdw12 = le_load32(raw + 48),
		.cdw13 = le_load32(raw + 52),
		.cdw14 = le_load32(raw + 56),
		.cdw15 = le_load32(raw + 60),
	};
}

static void vanish(struct sim_nvme *n, const char *reason);

/* Run what the guest queued on one SQ while its CQ has room. */
static void process_sq(struct sim_nvme *n, uint16_t sqid)
{
	struct nvme_sq *sq = &n->sq[sqid];

	while (sq->live && sq->head != sq->tail && !(n->csts & CSTS_CFS) && !n->shut_down && !n->hd.gone) {
		struct nvme_cq *cq = &n->cq[sq->cqid];
		struct nvme_sqe cmd;
		uint8_t raw[NVME_SQE_SIZE];
		uint16_t status;
		uint32_t result = 0;
		bool complete = true;

		if (!cq->live || cq_full(cq))
			break; /* resumes on the CQ head doorbell */
		if (n->kick_commands == 0 || n->kick_bytes == 0) {
			n->more_work = true; /* resumes on the next kick */
			break;
		}
		if (n->vanish_armed && n->vanish_budget-- == 0) {
			vanish(n, n->vanish_reason[0] ? n->vanish_reason : NULL); /* pulled in the middle of the batch */
			break;
		}
		n->kick_commands--;
		if (sim_dart_dma_read(n->dart, sq->base + (uint64_t)sq->head * NVME_SQE_SIZE, raw, NVME_SQE_SIZE) < 0) {
			controller_fatal(n, "submission queue entry not reachable through the DART");
			break;
		}
		sim_nvme_sqe_parse(raw, &cmd);
		sq->head = (sq->head + 1) % sq->size;
		if (sqid == 0) {
			complete = sim_nvme_admin_command(n, &cmd, &status, &result);
		} else {
			status = sim_nvme_io_command(n, &cmd);
		}
		if (complete)
			post_completion(n, sqid, cmd.cid, status, result);
	}
}

static void deliver_interrupts(struct sim_nvme *n)
{
	for (unsigned i = 0; i < NQUEUES; i++) {
		struct nvme_cq *cq = &n->cq[i];
		if (cq->live && cq->posted) {
			cq->posted = false;
			if (cq->ien)
				raise_vector(n, cq->vector);
		}
	}
}

static void kick_begin(struct sim_nvme *n)
{
	n->kick_commands = KICK_COMMANDS;
	n->kick_bytes = KICK_BYTES;
	n->more_work = false;
}

/* Interrupts for what completed; if commands were left, have the broker come back. */
static void kick_end(struct sim_nvme *n)
{
	deliver_interrupts(n);
	if (n->more_work) {
		n->stats.kicks_deferred++;
		if (vfa_notifier_signal(n->wakeup_fds[1]) < 0)
			log_debug("sim nvme: wake-up notifier write failed");
	}
}

/* The commands a budget left queued: every live SQ with entries, in order. */
static void resume_work(struct sim_nvme *n)
{
	if (!n->more_work || n->hd.gone)
		return;
	kick_begin(n);
	for (unsigned i = 0; i < NQUEUES && (n->csts & CSTS_RDY); i++)
		if (n->sq[i].live && n->sq[i].head != n->sq[i].tail)
			process_sq(n, (uint16_t)i);
	kick_end(n);
}

static void doorbell_write(struct sim_nvme *n, uint64_t offset, uint32_t value)
{
	uint64_t index = (offset - REG_DBS) / 4;
	uint16_t qid = (uint16_t)(index / 2);
	bool is_cq = index & 1;

	if (!(n->csts & CSTS_RDY) || n->shut_down || qid >= NQUEUES) {
		log_debug("sim nvme: doorbell 0x%" PRIx64 " written while not ready or out of range: ignored", offset);
		return;
	}
	if (is_cq) {
		struct nvme_cq *cq = &n->cq[qid];
		if (!cq->live || value >= cq->size) {
			bad_doorbell(n, "invalid CQ %u head doorbell value %u: ignored", qid, value);
			return;
		}
		cq->head = value;
		kick_begin(n);
		/* Restart SQs that stalled on this CQ being full. */
		for (unsigned i = 0; i < NQUEUES; i++)
			if (n->sq[i].live && n->sq[i].cqid == qid)
				process_sq(n, (uint16_t)i);
	} else {
		struct nvme_sq *sq = &n->sq[qid];
		if (!sq->live || value >= sq->size) {
			bad_doorbell(n, "invalid SQ %u tail doorbell value %u: ignored", qid, value);
			return;
		}
		sq->tail = value;
		kick_begin(n);
		process_sq(n, qid);
	}
	kick_end(n);
}

static void controller_enable(struct sim_nvme *n)
{
	uint32_t asqs = (n->aqa & 0xfff) + 1, acqs = ((n->aqa >> 16) & 0xfff) + 1;

	if (CC_CSS(n->cc) != 0 || CC_MPS(n->cc) > MPS_MAX || CC_IOSQES(n->cc) != 6 || CC_IOCQES(n->cc) != 4 ||
	    asqs < 2 || acqs < 2 || (n->asq & 0xfff) || (n->acq & 0xfff)) {
		controller_fatal(n, "enabled with an invalid CC, AQA, ASQ or ACQ");
		return;
	}
	drop_queues(n);
	n->sq[0] = (struct nvme_sq){ .live = true, .base = n->asq, .size = asqs, .cqid = 0 };
	n->cq[0] = (struct nvme_cq){ .live = true, .base = n->acq, .size = acqs, .phase = true, .ien = true,
				     .vector = 0 };
	n->shut_down = false;
	n->csts = CSTS_RDY;
	ctrl_to(n, NVME_CTRL_READY);
}

static void cc_write(struct sim_nvme *n, uint32_t value)
{
	uint32_t old = n->cc;

	if ((old & CC_EN) && (value & CC_EN))
		/* While enabled only SHN may change (the rest was checked at enable). */
		n->cc = (old & ~CC_SHN_MASK) | (value & CC_SHN_MASK);
	else
		n->cc = value & CC_WRITABLE;
	if (!(old & CC_EN) && (n->cc & CC_EN)) {
		controller_enable(n);
	} else if ((old & CC_EN) && !(n->cc & CC_EN)) {
		/* Controller reset: queues and held commands go; AQA/ASQ/ACQ stay. */
		drop_queues(n);
		n->csts = 0;
		n->shut_down = false;
		ctrl_to(n, NVME_CTRL_DISABLED);
	}
	if (CC_SHN(n->cc) && !CC_SHN(old)) {
		/* Nothing is in flight: the shutdown completes at once. */
		n->aers_held = 0;
		n->shut_down = true;
		n->csts |= CSTS_SHST_DONE;
		if (n->state != NVME_CTRL_FATAL) /* fatal stays fatal */
			ctrl_to(n, NVME_CTRL_SHUTDOWN);
	} else if (!CC_SHN(n->cc) && CC_SHN(old) && !(n->cc & CC_EN)) {
		n->csts &= ~CSTS_SHST_DONE;
	}
}

static uint32_t reg_read32(struct sim_nvme *n, uint64_t off)
{
	switch (off) {
	case REG_CAP: return (uint32_t)n->cap;
	case REG_CAP + 4: return (uint32_t)(n->cap >> 32);
	case REG_VS: return NVME_VERSION;
	case REG_INTMS:
	case REG_INTMC: return n->intms;
	case REG_CC: return n->cc;
	case REG_CSTS: return n->csts;
	case REG_AQA: return n->aqa;
	case REG_ASQ: return (uint32_t)n->asq;
	case REG_ASQ + 4: return (uint32_t)(n->asq >> 32);
	case REG_ACQ: return (uint32_t)n->acq;
	case REG_ACQ + 4: return (uint32_t)(n->acq >> 32);
	default: return 0; /* reserved, CMB/PMR absent, doorbells read 0 */
	}
}

static void reg_write32(struct sim_nvme *n, uint64_t off, uint32_t value)
{
	bool disabled = !(n->cc & CC_EN);

	if (off >= REG_DBS) {
		doorbell_write(n, off, value);
		return;
	}
	switch (off) {
	case REG_INTMS: n->intms |= value; break;
	case REG_INTMC: n->intms &= ~value; break;
	case REG_CC: cc_write(n, value); break;
	case REG_AQA: if (disabled) n->aqa = value & 0x0fff0fff; break;
	case REG_ASQ: if (disabled) n->asq = (n->asq & ~0xffffffffull) | value; break;
	case REG_ASQ + 4: if (disabled) n->asq = (n->asq & 0xffffffffull) | (uint64_t)value << 32; break;
	case REG_ACQ: if (disabled) n->acq = (n->acq & ~0xffffffffull) | value; break;
	case REG_ACQ + 4: if (disabled) n->acq = (n->acq & 0xffffffffull) | (uint64_t)value << 32; break;
	default: break; /* read-only, reserved, NSSR (not supported) */
	}
}

/* Every verb but release, destroy, dma_stats, irq_wakeup_fd and dma_unregister. */
static int gone_fail(struct sim_nvme *n)
{
	return hd_mark_gone(&n->hd, "%s", "the simulated device was pulled");
}

static int nvme_identity(struct host_device *hd, struct hd_identity *out)
{
	if (hd->gone)
		return gone_fail(to_nvme(hd));
	*out = (struct hd_identity){
		.bus = 1, .device = 0, .function = 0,
		.vendor_id = SIM_NVME_VENDOR_ID, .device_id = SIM_NVME_DEVICE_ID, .class_code = SIM_NVME_CLASS,
	};
	return 0;
}

static int nvme_claim(struct host_device *hd)
{
	struct sim_nvme *n = to_nvme(hd);

	if (hd->gone)
		return gone_fail(n);
	n->claimed = true;
	n->config[0x04] |= 0x06; /* memory space + bus master, as the dext does */
	return 0;
}

static void nvme_release(struct host_device *hd)
{
	to_nvme(hd)->claimed = false;
}

static int need_claim(struct sim_nvme *n, const char *what)
{
	if (n->hd.gone)
		return gone_fail(n);
	if (!n->claimed)
		return hd_fail(&n->hd, -EACCES, "%s before claim: claim the device first", what);
	return 0;
}

static int nvme_config_read(struct host_device *hd, uint32_t offset, unsigned width, uint32_t *value)
{
	struct sim_nvme *n = to_nvme(hd);
	int ret = need_claim(n, "config read");

	return ret < 0 ? ret : sim_nvme_cfg_read(n, offset, width, value);
}

static void nvme_flr(struct sim_nvme *n);

static int nvme_config_write(struct host_device *hd, uint32_t offset, unsigned width, uint32_t value)
{
	struct sim_nvme *n = to_nvme(hd);
	int ret = need_claim(n, "config write");
	bool flr = false;

	if (ret < 0 || (ret = sim_nvme_cfg_write(n, offset, width, value, &flr)) < 0)
		return ret;
	if (flr)
		nvme_flr(n);
	return 0;
}

static int nvme_config_read_block(struct host_device *hd, uint32_t offset, void *buf, size_t len)
{
	struct sim_nvme *n = to_nvme(hd);
	int ret = need_claim(n, "config read");

	return ret < 0 ? ret : sim_nvme_cfg_read_block(n, offset, buf, len);
}

static int nvme_bar_info(struct host_device *hd, unsigned bar, struct hd_bar_info *out)
{
	if (hd->gone)
		return gone_fail(to_nvme(hd));
	if (bar >= HD_NUM_BARS)
		return hd_fail(hd, -EINVAL, "BAR %u does not exist (0..5)", bar);
	*out = (struct hd_bar_info){ 0 };
	if (bar == 0) {
		out->size = SIM_NVME_BAR0_SIZE;
		out->type = HD_BAR_MEM64;
	} else if (bar == 4) {
		out->size = SIM_NVME_BAR4_SIZE;
		out->type = HD_BAR_MEM64;
	}
	return 0;
}

static int nvme_bar_map(struct host_device *hd, unsigned bar, volatile void **out)
{
	struct sim_nvme *n = to_nvme(hd);
	int ret = need_claim(n, "BAR map");

	if (ret < 0)
		return ret;
	if (bar == 0)
		return hd_fail(hd, -EOPNOTSUPP, "BAR0 of the simulated NVMe is trapped: use mmio_read/mmio_write");
	if (bar != 4)
		return hd_fail(hd, -EINVAL, "BAR %u is not implemented", bar);
	*out = n->bar4;
	return 0;
}

static int mmio_check(struct sim_nvme *n, unsigned bar, uint64_t offset, unsigned width)
{
	uint64_t size = bar == 0 ? SIM_NVME_BAR0_SIZE : bar == 4 ? SIM_NVME_BAR4_SIZE : 0;

	if (!size)
		return hd_fail(&n->hd, -EINVAL, "MMIO to BAR %u: not implemented (BAR0 and BAR4 are)", bar);
	if (width != 1 && width != 2 && width != 4 && width != 8)
		return hd_fail(&n->hd, -EINVAL, "MMIO width %u: must be 1, 2, 4 or 8", width);
	if (offset % width || offset >= size || width > size - offset)
		return hd_fail(&n->hd, -EINVAL, "MMIO at BAR%u+0x%" PRIx64 " width %u: unaligned or outside the BAR",
			       bar, offset, width);
	return 0;
}

static int nvme_mmio_read(struct host_device *hd, unsigned bar, uint64_t offset, unsigned width, uint64_t *value)
{
	struct sim_nvme *n = to_nvme(hd);
	int ret = need_claim(n, "MMIO read");

	if (ret < 0 || (ret = mmio_check(n, bar, offset, width)) < 0)
		return ret;
	if (bar == 4) {
		uint64_t v = 0;
		memcpy(&v, n->bar4 + offset, width);
		*value = v;
		return 0;
	}
	if (width == 8) {
		*value = reg_read32(n, offset) | (uint64_t)reg_read32(n, offset + 4) << 32;
		return 0;
	}
	uint32_t dword = reg_read32(n, offset & ~3ull);
	uint32_t shift = (uint32_t)(offset & 3) * 8;
	*value = (dword >> shift) & (width == 4 ? 0xffffffffu : (1u << (8 * width)) - 1);
	return 0;
}

static int nvme_mmio_write(struct host_device *hd, unsigned bar, uint64_t offset, unsigned width, uint64_t value)
{
	struct sim_nvme *n = to_nvme(hd);
	int ret = need_claim(n, "MMIO write");

	if (ret < 0 || (ret = mmio_check(n, bar, offset, width)) < 0)
		return ret;
	if (bar == 4) {
		memcpy(n->bar4 + offset, &value, width);
		return 0;
	}
	if (width == 8) { /* low dword first, as lo_hi_writeq does */
		reg_write32(n, offset, (uint32_t)value);
		reg_write32(n, offset + 4, (uint32_t)(value >> 32));
		return 0;
	}
	if (width < 4) {
		if (offset >= REG_DBS) {
			bad_doorbell(n, "%u-byte doorbell write at 0x%" PRIx64 ": doorbells are 32-bit, ignored",
				     width, offset);
			return 0;
		}
		uint32_t shift = (uint32_t)(offset & 3) * 8;
		uint32_t mask = ((1u << (8 * width)) - 1) << shift;
		uint64_t reg = offset & ~3ull;
		uint32_t dword = ((uint32_t)value << shift) & mask;
		/*
		 * Write-1-to-set/clear registers take only the written bytes; the
		 * others merge with the current value (a read-modify-write of
		 * INTMC would clear every bit set in the bytes not written).
		 */
		if (reg != REG_INTMS && reg != REG_INTMC)
			dword |= reg_read32(n, reg) & ~mask;
		reg_write32(n, reg, dword);
		return 0;
	}
	reg_write32(n, offset, (uint32_t)value);
	return 0;
}

static int nvme_dma_register(struct host_device *hd, uint64_t key, void *host_addr, uint64_t size,
			     uint64_t *bus_addr, uint64_t *bus_len)
{
	struct sim_nvme *n = to_nvme(hd);
	int ret;

	if (hd->gone)
		return gone_fail(n);
	ret = sim_dart_map(n->dart, key, host_addr, size, bus_addr, bus_len);
	if (ret < 0)
		return hd_fail(hd, ret, "%s", sim_dart_error(n->dart));
	return 0;
}

static int nvme_dma_unregister(struct host_device *hd, uint64_t key)
{
	struct sim_nvme *n = to_nvme(hd);
	int ret = sim_dart_unmap(n->dart, key);

	if (ret < 0)
		return hd_fail(hd, ret, "%s", sim_dart_error(n->dart));
	return 0;
}

static int nvme_irq_setup(struct host_device *hd, unsigned *nvectors)
{
	struct sim_nvme *n = to_nvme(hd);
	int ret = need_claim(n, "interrupt setup");

	if (ret < 0)
		return ret;
	n->irq_ready = true;
	*nvectors = SIM_NVME_VECTORS;
	return 0;
}

static int nvme_irq_set_mask(struct host_device *hd, const uint64_t mask[HD_IRQ_WORDS])
{
	struct sim_nvme *n = to_nvme(hd);

	if (hd->gone)
		return gone_fail(n);
	memcpy(n->irq_mask, mask, sizeof(n->irq_mask));
	return 0;
}

static int nvme_irq_read_pending(struct host_device *hd, uint64_t pending[HD_IRQ_WORDS])
{
	struct sim_nvme *n = to_nvme(hd);

	if (hd->gone)
		return gone_fail(n);
	/* The broker is here because the wake-up fd fired: continue what a
	 * doorbell's budget left, so that its completions are in this set. */
	resume_work(n);
	memcpy(pending, n->irq_pending, sizeof(n->irq_pending));
	memset(n->irq_pending, 0, sizeof(n->irq_pending));
	return 0;
}

static int nvme_irq_wakeup_fd(struct host_device *hd)
{
	return to_nvme(hd)->wakeup_fds[0];
}

/* Function-level reset: the device returns to power-on state; data stays. */
static void nvme_flr(struct sim_nvme *n)
{
	uint8_t command = n->config[0x04];

	controller_power_on(n);
	sim_nvme_config_power_on(n);
	/* The host restores COMMAND around a reset (the dext keeps its claim). */
	n->config[0x04] = command;
	memset(n->bar4, 0, SIM_NVME_BAR4_SIZE);
	for (unsigned v = 0; v < SIM_NVME_VECTORS; v++)
		le_store32(n->bar4 + 16 * v + 12, 1); /* vector control: masked */
	memset(n->irq_pending, 0, sizeof(n->irq_pending));
	n->stats.fatal = false;
}

static int nvme_reset(struct host_device *hd)
{
	struct sim_nvme *n = to_nvme(hd);
	int ret = need_claim(n, "reset");

	if (ret < 0)
		return ret;
	nvme_flr(n);
	return 0;
}

static int nvme_dma_stats(struct host_device *hd, struct hd_dma_stats *out)
{
	sim_dart_stats(to_nvme(hd)->dart, out);
	return 0;
}

static void nvme_destroy(struct host_device *hd)
{
	struct sim_nvme *n = to_nvme(hd);

	if (!n)
		return;
	sim_dart_destroy(n->dart);
	if (n->store && n->store != MAP_FAILED)
		munmap(n->store, n->store_size);
	if (n->store_fd >= 0)
		close(n->store_fd);
	if (n->bar4 && n->bar4 != MAP_FAILED)
		munmap(n->bar4, SIM_NVME_BAR4_SIZE);
	vfa_notifier_close(n->wakeup_fds);
	free(n->prp_scratch);
	free(n->prp_segs);
	free(n->scratch);
	free(n);
}

static const struct host_device_ops sim_nvme_ops = {
	.identity = nvme_identity,
	.claim = nvme_claim,
	.release = nvme_release,
	.config_read = nvme_config_read,
	.config_write = nvme_config_write,
	.config_read_block = nvme_config_read_block,
	.bar_info = nvme_bar_info,
	.bar_map = nvme_bar_map,
	.mmio_read = nvme_mmio_read,
	.mmio_write = nvme_mmio_write,
	.dma_register = nvme_dma_register,
	.dma_unregister = nvme_dma_unregister,
	.irq_setup = nvme_irq_setup,
	.irq_set_mask = nvme_irq_set_mask,
	.irq_read_pending = nvme_irq_read_pending,
	.irq_wakeup_fd = nvme_irq_wakeup_fd,
	.reset = nvme_reset,
	.dma_stats = nvme_dma_stats,
	.destroy = nvme_destroy,
};

struct host_device *sim_nvme_open(const struct sim_nvme_config *cfg, char *err, size_t errlen)
{
	struct sim_nvme *n = calloc(1, sizeof(*n));

	if (!n) {
		snprintf(err, errlen, "out of memory creating the simulated NVMe");
		return NULL;
	}
	n->hd.ops = &sim_nvme_ops;
	n->dart_cfg = cfg->dart;
	n->no_msi = cfg->no_msi;
	n->store_fd = -1;
	n->wakeup_fds[0] = n->wakeup_fds[1] = -1;
	int notifier_rc = vfa_notifier_open(n->wakeup_fds);
	n->bar4 = mmap(NULL, SIM_NVME_BAR4_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	n->prp_scratch = malloc((4096u << MPS_MAX) / 8 * sizeof(uint64_t));
	n->scratch = malloc(SIM_NVME_MAX_TRANSFER);
	n->prp_segs = calloc(SIM_NVME_MAX_PRP_SEGS, sizeof(*n->prp_segs));
	if (notifier_rc < 0)
		errno = -notifier_rc;
	if (notifier_rc < 0 || n->bar4 == MAP_FAILED || !n->prp_scratch || !n->scratch || !n->prp_segs) {
		snprintf(err, errlen, "cannot allocate the simulated NVMe's resources: %s", strerror(errno));
		nvme_destroy(&n->hd);
		return NULL;
	}
	if (sim_nvme_open_store(n, cfg, err, errlen) < 0) {
		nvme_destroy(&n->hd);
		return NULL;
	}
	n->dart = sim_dart_create(&cfg->dart, err, errlen);
	if (!n->dart) {
		nvme_destroy(&n->hd);
		return NULL;
	}
	sim_dart_limits(n->dart, &n->hd.limits);
	n->hd.identity_dma = sim_dart_identity(n->dart);

	/* CAP: MQES 1023, CQR, TO 10 s, DSTRD 0, CSS NVM, MPSMIN 4 KiB, MPSMAX 64 KiB. */
	n->cap = (uint64_t)(SIM_NVME_MAX_QUEUE_ENTRIES - 1) | 1ull << 16 | 20ull << 24 | 1ull << 37 |
		 (uint64_t)MPS_MAX << 52;
	controller_power_on(n);
	sim_nvme_config_power_on(n);
	nvme_flr(n);
	return &n->hd;
}

struct sim_dart *sim_nvme_dart(struct host_device *hd)
{
	return hd && hd->ops == &sim_nvme_ops ? to_nvme(hd)->dart : NULL;
}

void sim_nvme_get_stats(struct host_device *hd, struct sim_nvme_stats *out)
{
	struct sim_nvme *n = to_nvme(hd);

	memset(out, 0, sizeof(*out));
	if (!hd || hd->ops != &sim_nvme_ops)
		return;
	*out = n->stats;
	out->aers_held = n->aers_held;
	out->fatal = (n->csts & CSTS_CFS) != 0;
	out->state = n->state;
}


bool sim_nvme_is(const struct host_device *hd)
{
	return hd && hd->ops == &sim_nvme_ops;
}

/* Pulled: nothing runs, moves or interrupts from now on; the front end hears it on the wake-up fd. */
static void vanish(struct sim_nvme *n, const char *reason)
{
	if (!n->hd.gone)
		log_warn("sim nvme: %s", reason ? reason : "the simulated device was pulled");
	hd_mark_gone(&n->hd, "%s", reason ? reason : "the simulated device was pulled");
	n->vanish_armed = false;
	n->more_work = false;
	memset(n->irq_pending, 0, sizeof(n->irq_pending));
	if (vfa_notifier_signal(n->wakeup_fds[1]) < 0)
		log_debug("sim nvme: wake-up notifier write failed");
}

int sim_nvme_vanish(struct host_device *hd, const char *reason)
{
	if (!sim_nvme_is(hd))
		return -EINVAL;
	vanish(to_nvme(hd), reason);
	return 0;
}

int sim_nvme_vanish_after(struct host_device *hd, uint64_t commands, const char *reason)
{
	struct sim_nvme *n = to_nvme(hd);

	if (!sim_nvme_is(hd))
		return -EINVAL;
	snprintf(n->vanish_reason, sizeof(n->vanish_reason), "%s", reason ? reason : "");
	n->vanish_armed = true;
	n->vanish_budget = commands;
	return 0;
}

int sim_nvme_replug(struct host_device *hd, char *err, size_t errlen)
{
	struct sim_nvme *n = to_nvme(hd);
	struct sim_dart *fresh;

	if (!sim_nvme_is(hd)) {
		snprintf(err, errlen, "not a simulated device");
		return -EINVAL;
	}
	if (!hd->gone) {
		snprintf(err, errlen, "the simulated device is present: make it vanish first");
		return -EBUSY;
	}
	fresh = sim_dart_create(&n->dart_cfg, err, errlen);
	if (!fresh)
		return -ENOMEM;
	/* Whatever the front end did not unregister dies with the old DART. */
	sim_dart_destroy(n->dart);
	n->dart = fresh;
	sim_dart_limits(n->dart, &n->hd.limits);
	n->hd.identity_dma = sim_dart_identity(n->dart);
	n->claimed = false;
	n->irq_ready = false;
	memset(n->irq_mask, 0, sizeof(n->irq_mask));
	n->more_work = false;
	n->vanish_armed = false;
	memset(&n->stats, 0, sizeof(n->stats));
	n->bad_doorbells = 0;
	controller_power_on(n);
	sim_nvme_config_power_on(n);
	nvme_flr(n);
	n->config[0x04] = 0; /* not claimed: memory space and bus master off */
	n->config[0x05] = 0;
	vfa_notifier_drain(n->wakeup_fds[0]);
	hd_mark_present(hd);
	log_info("sim nvme: plugged back in (a fresh device; the namespace's data is kept)");
	return 0;
}
