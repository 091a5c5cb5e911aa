// SPDX-License-Identifier: MIT
/*
 * What the passthrough path costs, over the simulated NVMe:
 *  1. in process: a 4-byte BAR0 read and a 4-byte config read, straight
 *     through the host-device interface vs. through the passthrough model
 *     (the policy's overhead), measured side by side;
 *  2. through a broker in a child process, as a VMM sees it: a vfio-user
 *     REGION_READ round trip (BAR0 and config space), and the latency from
 *     an NVMe doorbell write to the completion interrupt's eventfd.
 * Prints medians over several runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backends.h"
#include "bench_util.h"
#include "broker.h"
#include "compat.h"
#include "le.h"
#include "passthrough.h"
#include "vfu_client.h"

#define RUNS 7
#define INPROC_OPS 1000000u
#define RT_OPS 2000u
#define IRQ_OPS 500u
#define RAM_GPA 0x100000ULL
#define RAM_SIZE (2u << 20)
#define QDEPTH 64u

static volatile uint64_t sink;

/* ---- 1. in process -------------------------------------------------------- */

static int bench_inproc(void)
{
	char err[256] = "";
	struct host_device *hd = host_device_open("sim:nvme,size=16M", err, sizeof(err));
	struct passthrough *pt;
	double direct_mmio[RUNS], pt_mmio[RUNS], direct_cfg[RUNS], pt_cfg[RUNS];

	if (!hd || hd->ops->claim(hd) < 0) {
		fprintf(stderr, "bench_broker: %s\n", hd ? host_device_error(hd) : err);
		return -1;
	}
	pt = passthrough_create(hd, err, sizeof(err));
	if (!pt) {
		fprintf(stderr, "bench_broker: %s\n", err);
		return -1;
	}
	for (int r = 0; r < RUNS; r++) {
		uint64_t v;
		uint32_t w;
		double t0;

		t0 = bench_now_ns();
		for (unsigned i = 0; i < INPROC_OPS; i++) {
			hd->ops->mmio_read(hd, 0, 0x1C, 4, &v);
			sink += v;
		}
		direct_mmio[r] = (bench_now_ns() - t0) / INPROC_OPS;
		t0 = bench_now_ns();
		for (unsigned i = 0; i < INPROC_OPS; i++) {
			passthrough_bar_read(pt, 0, 0x1C, &w, 4);
			sink += w;
		}
		pt_mmio[r] = (bench_now_ns() - t0) / INPROC_OPS;
		t0 = bench_now_ns();
		for (unsigned i = 0; i < INPROC_OPS; i++) {
			hd->ops->config_read(hd, 0x10, 4, &w);
			sink += w;
		}
		direct_cfg[r] = (bench_now_ns() - t0) / INPROC_OPS;
		t0 = bench_now_ns();
		for (unsigned i = 0; i < INPROC_OPS; i++) {
			passthrough_config_read(pt, 0x10, &w, 4);
			sink += w;
		}
		pt_cfg[r] = (bench_now_ns() - t0) / INPROC_OPS;
	}
	double dm = bench_median(direct_mmio, RUNS), pm = bench_median(pt_mmio, RUNS);
	double dc = bench_median(direct_cfg, RUNS), pc = bench_median(pt_cfg, RUNS);
	printf("in process (mean per op in a run of %u ops, median of %d runs)\n", INPROC_OPS, RUNS);
	printf("  BAR0 read 4 B     host %6.1f ns   passthrough %6.1f ns   ratio %.2f (+%.1f ns)\n", dm, pm, pm / dm,
	       pm - dm);
	printf("  config read 4 B   host %6.1f ns   passthrough %6.1f ns   ratio %.2f (+%.1f ns)\n", dc, pc, pc / dc,
	       pc - dc);
	passthrough_destroy(pt);
	hd->ops->release(hd);
	hd->ops->destroy(hd);
	return 0;
}

/* ---- 2. through a broker -------------------------------------------------- */

static uint8_t reply[4096];
static uint16_t next_id;

static int request(int fd, uint16_t cmd, const void *payload, size_t len, const int *fds, unsigned nfds)
{
	struct vfu_hdr h;
	uint16_t id = ++next_id;
	ssize_t n;

	if (vfuc_send(fd, id, cmd, 0, payload, len, fds, nfds) < 0)
		return -EIO;
	n = vfuc_recv(fd, &h, reply, sizeof(reply), 5000);
	if (n < 0 || h.id != id || (h.flags & VFU_FLAG_ERROR))
		return -EIO;
	return 0;
}

static int rd32(int fd, uint32_t region, uint64_t off, uint32_t *v)
{
	struct vfu_region_rw rw = { .offset = off, .region = region, .count = 4 };

	if (request(fd, VFU_CMD_REGION_READ, &rw, sizeof(rw), NULL, 0) < 0)
		return -EIO;
	memcpy(v, reply + sizeof(rw), 4);
	return 0;
}

static int wr(int fd, uint32_t region, uint64_t off, uint64_t v, uint32_t count)
{
	uint8_t msg[sizeof(struct vfu_region_rw) + 8];
	struct vfu_region_rw rw = { .offset = off, .region = region, .count = count };

	memcpy(msg, &rw, sizeof(rw));
	memcpy(msg + sizeof(rw), &v, count);
	return request(fd, VFU_CMD_REGION_WRITE, msg, sizeof(rw) + count, NULL, 0);
}

/* Admin queue in shared RAM (identity DMA), vector 0 on a notifier
 * (an eventfd on Linux, a pipe elsewhere: see common/compat.h). */
static int nvme_setup(int fd, uint8_t **ram_out, int irq[2])
{
	struct vfu_dma_map m = { .argsz = sizeof(m), .flags = 3, .addr = RAM_GPA, .size = RAM_SIZE };
	struct vfu_irq_set is = { .argsz = sizeof(is), .flags = VFU_IRQ_SET_DATA_EVENTFD | VFU_IRQ_SET_ACTION_TRIGGER,
				  .index = VFU_PCI_MSIX_IRQ, .count = 1 };
	int mfd = vfa_shared_memory_fd("ram", RAM_SIZE);
	uint32_t csts = 0;
	uint8_t *ram;

	if (mfd < 0 || vfa_notifier_open(irq) < 0)
		return -EIO;
#ifdef F_ADD_SEALS
	/* sealed as QEMU's memfd guest RAM is (the broker warns otherwise) */
	if (fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK) < 0)
		return -EIO;
#endif
	ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (ram == MAP_FAILED || request(fd, VFU_CMD_DMA_MAP, &m, sizeof(m), &mfd, 1) < 0 ||
	    request(fd, VFU_CMD_DEVICE_SET_IRQS, &is, sizeof(is), &irq[1], 1) < 0)
		return -EIO;
	close(mfd);
	if (wr(fd, 0, 0x14, 0, 4) < 0 || wr(fd, 0, 0x24, (QDEPTH - 1) | (QDEPTH - 1) << 16, 4) < 0 ||
	    wr(fd, 0, 0x28, RAM_GPA + 0x1000, 8) < 0 || wr(fd, 0, 0x30, RAM_GPA + 0x2000, 8) < 0 ||
	    wr(fd, 0, 0x14, 0x00460001, 4) < 0)
		return -EIO;
	for (int i = 0; i < 1000 && !(csts & 1); i++)
		if (rd32(fd, 0, 0x1C, &csts) < 0)
			return -EIO;
	if (!(csts & 1))
		return -EIO;
	*ram_out = ram;
	return 0;
}

static int bench_broker(void)
{
	char dir[] = "/tmp/vfa-bench-XXXXXX", pt_sock[64], ctl_sock[64];
	struct broker_config cfg = { .device_spec = "sim:nvme,size=16M,dart=identity" };
	double bar_rt[RUNS], cfg_rt[RUNS], irq_lat[RUNS];
	uint8_t *ram = NULL;
	int fd = -1, irq[2] = { -1, -1 }, status, rc = -1;
	pid_t pid;

	if (!mkdtemp(dir))
		return -1;
	snprintf(pt_sock, sizeof(pt_sock), "%s/pt.sock", dir);
	snprintf(ctl_sock, sizeof(ctl_sock), "%s/ctl.sock", dir);
	cfg.passthrough_socket = pt_sock;
	cfg.control_socket = ctl_sock;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0)
		_exit(broker_run(&cfg));
	for (int i = 0; i < 500 && fd < 0; i++) {
		int c = vfuc_connect(ctl_sock);

		if (c >= 0) {
			close(c);
			fd = vfuc_connect(pt_sock);
		} else {
			usleep(10000);
		}
	}
	uint8_t ver[256];
	size_t vlen = vfuc_version_payload(ver, sizeof(ver), 0, 0, "{\"capabilities\":{\"max_msg_fds\":16}}");
	if (fd < 0 || request(fd, VFU_CMD_VERSION, ver, vlen, NULL, 0) < 0 || nvme_setup(fd, &ram, irq) < 0) {
		fprintf(stderr, "bench_broker: could not set up the broker conversation\n");
		goto out;
	}
	unsigned slot = 0;
	for (int r = 0; r < RUNS; r++) {
		double lat[IRQ_OPS], t0;
		uint32_t v;

		t0 = bench_now_ns();
		for (unsigned i = 0; i < RT_OPS; i++)
			if (rd32(fd, 0, 0x1C, &v) < 0)
				goto out;
		bar_rt[r] = (bench_now_ns() - t0) / RT_OPS / 1000;
		t0 = bench_now_ns();
		for (unsigned i = 0; i < RT_OPS; i++)
			if (rd32(fd, VFU_PCI_CONFIG_REGION, 0, &v) < 0)
				goto out;
		cfg_rt[r] = (bench_now_ns() - t0) / RT_OPS / 1000;

		for (unsigned i = 0; i < IRQ_OPS; i++) {
			uint8_t *sqe = ram + 0x1000 + 64 * slot;
			struct pollfd p = { .fd = irq[0], .events = POLLIN };

			memset(sqe, 0, 64);
			sqe[0] = 0x06;
			le_store16(sqe + 2, (uint16_t)slot);
			le_store64(sqe + 24, RAM_GPA + 0x10000);
			le_store32(sqe + 40, 1);
			slot = (slot + 1) % QDEPTH;
			t0 = bench_now_ns();
			if (wr(fd, 0, 0x1000, slot, 4) < 0 || poll(&p, 1, 5000) != 1)
				goto out;
			lat[i] = (bench_now_ns() - t0) / 1000;
			if (vfa_notifier_drain(irq[0]) != 1)
				goto out;
			if (wr(fd, 0, 0x1004, slot, 4) < 0) /* CQ head */
				goto out;
		}
		irq_lat[r] = bench_median(lat, IRQ_OPS);
	}
	printf("through the broker (vfio-user; round trips: mean of %u per run, median of %d runs)\n", RT_OPS, RUNS);
	printf("  REGION_READ BAR0 4 B round trip     %6.2f us\n", bench_median(bar_rt, RUNS));
	printf("  REGION_READ config 4 B round trip   %6.2f us\n", bench_median(cfg_rt, RUNS));
	printf("  doorbell write -> MSI-X eventfd      %6.2f us (median of %u per run, median of runs)\n",
	       bench_median(irq_lat, RUNS), IRQ_OPS);
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	kill(pid, SIGTERM);
	waitpid(pid, &status, 0);
	if (rc == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
		fprintf(stderr, "bench_broker: the broker did not exit cleanly\n");
		rc = -1;
	}
	vfa_notifier_close(irq);
	if (ram)
		munmap(ram, RAM_SIZE);
	rmdir(dir);
	return rc;
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	if (bench_inproc() < 0 || bench_broker() < 0)
		return 1;
	return 0;
}
