// SPDX-License-Identifier: MIT
/* The simulated NVMe controller: PCI config space (sim_nvme_int.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "le.h"
#include "log.h"
#include "sim_nvme_int.h"

static void config_set(struct sim_nvme *n, uint32_t off, unsigned width, uint32_t value, uint32_t wmask)
{
	for (unsigned i = 0; i < width; i++) {
		n->config[off + i] = (uint8_t)(value >> (8 * i));
		n->config_wmask[off + i] = (uint8_t)(wmask >> (8 * i));
	}
}

void sim_nvme_config_power_on(struct sim_nvme *n)
{
	memset(n->config, 0, sizeof(n->config));
	memset(n->config_wmask, 0, sizeof(n->config_wmask));

	config_set(n, 0x00, 2, SIM_NVME_VENDOR_ID, 0);
	config_set(n, 0x02, 2, SIM_NVME_DEVICE_ID, 0);
	/* COMMAND: memory space, bus master, parity, SERR, INTx disable. */
	config_set(n, 0x04, 2, 0, 0x0546);
	config_set(n, 0x06, 2, 0x0010, 0); /* STATUS: capability list */
	config_set(n, 0x08, 1, 0x01, 0);   /* revision */
	config_set(n, 0x09, 3, SIM_NVME_CLASS, 0);
	config_set(n, 0x0c, 1, 0, 0xff);   /* cache line size */
	/* BARs read as their type with address 0 (as the dext shows them). */
	config_set(n, 0x10, 4, 0x4, 0);    /* BAR0: 64-bit memory */
	config_set(n, 0x20, 4, 0x4, 0);    /* BAR4: 64-bit memory */
	config_set(n, 0x2c, 2, SIM_NVME_VENDOR_ID, 0);
	config_set(n, 0x2e, 2, SIM_NVME_DEVICE_ID, 0);
	config_set(n, 0x34, 1, CAP_PM, 0);
	config_set(n, 0x3c, 1, 0, 0xff);   /* interrupt line; pin stays 0 */

	/* Power management, version 3, No_Soft_Reset. */
	config_set(n, CAP_PM + 0, 2, 0x01 | CAP_MSIX << 8, 0);
	config_set(n, CAP_PM + 2, 2, 0x0003, 0);
	config_set(n, CAP_PM + 4, 2, 0x0008, 0x0003);

	/* MSI-X: table and PBA in BAR4. */
	config_set(n, CAP_MSIX + 0, 2, 0x11 | CAP_PCIE << 8, 0);
	config_set(n, CAP_MSIX + 2, 2, SIM_NVME_VECTORS - 1, 0xc000);
	config_set(n, CAP_MSIX + 4, 4, 0x0 | 4, 0);
	config_set(n, CAP_MSIX + 8, 4, SIM_NVME_MSIX_PBA_OFFSET | 4, 0);

	/* PCI Express v2 endpoint, FLR capable, x4 8 GT/s. */
	config_set(n, CAP_PCIE + 0x00, 2, 0x10 | (n->no_msi ? 0 : CAP_MSI << 8), 0);
	config_set(n, CAP_PCIE + 0x02, 2, 0x0002, 0);
	config_set(n, CAP_PCIE + 0x04, 4, 0x10000001, 0);  /* DEVCAP: MPS 256, FLR */
	config_set(n, CAP_PCIE + 0x08, 2, 0x2810, 0x7fff); /* DEVCTL (bit 15: FLR) */
	config_set(n, CAP_PCIE + 0x0c, 4, 0x00000043, 0);  /* LNKCAP */
	config_set(n, CAP_PCIE + 0x10, 2, 0, 0x00c3);      /* LNKCTL */
	config_set(n, CAP_PCIE + 0x12, 2, 0x0043, 0);      /* LNKSTA */
	config_set(n, CAP_PCIE + 0x24, 4, 0x00000010, 0);  /* DEVCAP2 */
	config_set(n, CAP_PCIE + 0x28, 2, 0, 0x041f);      /* DEVCTL2 */
	config_set(n, CAP_PCIE + 0x2c, 4, 0x0000000e, 0);  /* LNKCAP2 */
	config_set(n, CAP_PCIE + 0x30, 2, 0x0003, 0x000f); /* LNKCTL2 */
	/*
	 * MSI as well, as real NVMe controllers have: 64-bit, no per-vector
	 * masking, Multiple Message Capable for the largest power of two of
	 * vectors (the host's interrupts are the same vectors either way).
	 */
	if (!n->no_msi) {
		unsigned mmc = 0;

		while ((2u << mmc) <= SIM_NVME_VECTORS && mmc < 5)
			mmc++;
		config_set(n, CAP_MSI + 0, 2, 0x05, 0);
		config_set(n, CAP_MSI + 2, 2, 0x0080 | mmc << 1, 0x0071); /* enable, MME */
		config_set(n, CAP_MSI + 4, 4, 0, 0xfffffffc);             /* address */
		config_set(n, CAP_MSI + 8, 4, 0, 0xffffffff);             /* upper address */
		config_set(n, CAP_MSI + 12, 2, 0, 0xffff);                /* data */
	}
	/* Extended space from 0x100: no extended capabilities (header 0). */
}

static int config_check(struct sim_nvme *n, uint32_t offset, unsigned width)
{
	if (width != 1 && width != 2 && width != 4)
		return hd_fail(&n->hd, -EINVAL, "config access width %u: must be 1, 2 or 4", width);
	if (offset % width || offset >= SIM_NVME_CONFIG_SIZE || width > SIM_NVME_CONFIG_SIZE - offset)
		return hd_fail(&n->hd, -EINVAL, "config access at 0x%x width %u: unaligned or outside 4 KiB",
			       offset, width);
	return 0;
}

int sim_nvme_cfg_read(struct sim_nvme *n, uint32_t offset, unsigned width, uint32_t *value)
{
	int ret = config_check(n, offset, width);

	if (ret < 0)
		return ret;
	uint32_t v = 0;
	for (unsigned i = 0; i < width; i++)
		v |= (uint32_t)n->config[offset + i] << (8 * i);
	*value = v;
	return 0;
}

int sim_nvme_cfg_write(struct sim_nvme *n, uint32_t offset, unsigned width, uint32_t value, bool *flr)
{
	int ret = config_check(n, offset, width);

	*flr = false;
	if (ret < 0)
		return ret;
	for (unsigned i = 0; i < width; i++) {
		uint32_t at = offset + i;
		uint8_t b = (uint8_t)(value >> (8 * i));
		if (at == CAP_PCIE + 0x09 && (b & 0x80))
			*flr = true; /* DEVCTL "initiate function-level reset": the caller resets */
		n->config[at] = (uint8_t)((n->config[at] & ~n->config_wmask[at]) | (b & n->config_wmask[at]));
	}
	return 0;
}

int sim_nvme_cfg_read_block(struct sim_nvme *n, uint32_t offset, void *buf, size_t len)
{
	if (offset > SIM_NVME_CONFIG_SIZE || len > SIM_NVME_CONFIG_SIZE - offset)
		return hd_fail(&n->hd, -EINVAL, "config read of %zu bytes at 0x%x: outside 4 KiB", len, offset);
	memcpy(buf, n->config + offset, len);
	return 0;
}
