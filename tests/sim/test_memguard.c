// SPDX-License-Identifier: MIT
/*
 * Guest RAM that vanishes (issue 11, item 2): a VMM truncates the file
 * behind its DMA_MAP, and the next access to a lost page raises SIGBUS.
 * The broker's accesses go through common/memguard.c: the access fails
 * and the process lives on.  Here: the guarded copies themselves, that an
 * unguarded fault still kills (we do not swallow real crashes), and the
 * simulated NVMe moving data into, out of and completing into truncated
 * memory.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "compat.h"
#include "memguard.h"
#include "nvme_driver.h"
#include "sim_nvme.h"

#define SC_DATA_TRANSFER_ERROR 0x04

/* Two pages of shared file memory, then the file cut to nothing. */
static uint8_t *truncated_mapping(size_t len)
{
	int fd = vfa_shared_memory_fd("vfa-memguard", len);
	uint8_t *p;

	assert_true(fd >= 0);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(p != MAP_FAILED);
	memset(p, 0x5a, len);
	assert_int_equal(ftruncate(fd, 0), 0);
	close(fd);
	return p;
}

static void test_guarded_copy(void **state)
{
	uint8_t *p = truncated_mapping(8192), buf[64] = { 0 }, ok[64];
	uint64_t before = vfa_memguard_faults();
	uint32_t word = 0;

	(void)state;
	vfa_memguard_install(); /* over cmocka's own SIGBUS handler */
	assert_int_equal(vfa_guarded_copy(buf, p, sizeof(buf)), -EFAULT);
	assert_int_equal(vfa_guarded_copy(p + 4096, buf, sizeof(buf)), -EFAULT);
	assert_int_equal(vfa_guarded_set(p, 0, 4096), -EFAULT);
	assert_int_equal(vfa_guarded_store32_release((uint32_t *)(void *)p, 1), -EFAULT);
	assert_int_equal(vfa_memguard_faults() - before, 4);
	/* and memory that is there still copies, after as before */
	memset(ok, 7, sizeof(ok));
	assert_int_equal(vfa_guarded_copy(buf, ok, sizeof(buf)), 0);
	assert_memory_equal(buf, ok, sizeof(buf));
	assert_int_equal(vfa_guarded_store32_release(&word, 0x12345678), 0);
	assert_int_equal(word, 0x12345678);
	assert_int_equal(vfa_memguard_faults() - before, 4);
	munmap(p, 8192);
}

/* A SIGBUS outside a guarded access is a real crash and stays one. */
static void test_unguarded_fault_kills(void **state)
{
	int status;
	pid_t pid;

	(void)state;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		volatile uint8_t *p = truncated_mapping(4096);
		uint8_t b;

		signal(SIGBUS, SIG_DFL); /* not cmocka's: what a broker starts with */
		vfa_memguard_install();
		(void)vfa_guarded_copy(&b, (const void *)p, 1); /* installs the handler */
		b = p[0];
		(void)b;
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGBUS);
}

static void test_nvme_dma_truncated(void **state)
{
	struct drv d;
	struct sim_nvme_stats st;
	uint64_t bus = 0, len = 0;
	uint8_t *lost = truncated_mapping(8192), *good;
	struct drv_cmd c;

	(void)state;
	vfa_memguard_install();
	drv_open(&d, "sim:nvme,size=1M");
	drv_enable(&d);
	assert_int_equal(drv_create_io_queue(&d, 1, DRV_QDEPTH), 0);
	assert_int_equal(d.hd->ops->dma_register(d.hd, 77, lost, 8192, &bus, &len), 0);

	/* Read: the device writes into the lost pages */
	c = (struct drv_cmd){ .opcode = 0x02, .nsid = 1, .cdw12 = 7, .prp1 = bus };
	assert_int_equal(drv_exec(&d, 1, &c).status, SC_DATA_TRANSFER_ERROR);
	/* Write: the device reads them */
	c.opcode = 0x01;
	assert_int_equal(drv_exec(&d, 1, &c).status, SC_DATA_TRANSFER_ERROR);
	/* The controller is fine: the next command into good memory works. */
	good = drv_alloc(&d, 4096);
	memset(good, 0xee, 4096);
	c = (struct drv_cmd){ .opcode = 0x02, .nsid = 1, .cdw12 = 7, .prp1 = drv_bus(&d, good) };
	assert_int_equal(drv_exec(&d, 1, &c).status, 0);
	assert_int_equal(good[0], 0);
	sim_nvme_get_stats(d.hd, &st);
	assert_false(st.fatal);
	assert_int_equal(d.hd->ops->dma_unregister(d.hd, 77), 0);
	drv_close(&d);
	munmap(lost, 8192);
}

/* Queues in lost memory: the controller fails (CFS), the process lives. */
static void test_nvme_queue_truncated(void **state)
{
	struct drv d;
	struct sim_nvme_stats st;
	uint64_t bus = 0, len = 0;
	uint8_t *lost = truncated_mapping(8192);
	struct drv_cmd c;

	(void)state;
	vfa_memguard_install();
	drv_open(&d, "sim:nvme,size=1M");
	drv_enable(&d);
	assert_int_equal(d.hd->ops->dma_register(d.hd, 78, lost, 8192, &bus, &len), 0);
	/* an I/O CQ in the lost page, then its SQ in the arena */
	c = (struct drv_cmd){ .opcode = 0x05, .prp1 = bus, .cdw10 = (15u << 16) | 1, .cdw11 = (1u << 16) | 1 };
	assert_int_equal(drv_exec(&d, 0, &c).status, 0);
	d.q[1].depth = 16;
	d.q[1].sq = drv_alloc(&d, 16 * 64);
	c = (struct drv_cmd){ .opcode = 0x01, .prp1 = drv_bus(&d, d.q[1].sq), .cdw10 = (15u << 16) | 1,
			      .cdw11 = (1u << 16) | 1 };
	assert_int_equal(drv_exec(&d, 0, &c).status, 0);
	/* a command whose completion cannot be written */
	c = (struct drv_cmd){ .opcode = 0x00, .nsid = 1 };
	drv_queue_cmd(&d, 1, &c);
	drv_ring(&d, 1);
	sim_nvme_get_stats(d.hd, &st);
	assert_true(st.fatal);
	assert_true(drv_reg32(&d, 0x1c) & 2); /* CSTS.CFS */
	drv_close(&d);
	munmap(lost, 8192);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_guarded_copy),
		cmocka_unit_test(test_unguarded_fault_kills),
		cmocka_unit_test(test_nvme_dma_truncated),
		cmocka_unit_test(test_nvme_queue_truncated),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
