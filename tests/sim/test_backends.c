// SPDX-License-Identifier: MIT
/* host_device_open(): the sim: device strings and their error messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "backends.h"
#include "sim_dart.h"
#include "sim_nvme.h"

static void test_default_sim(void **state)
{
	char err[256] = "";
	struct host_device *hd = host_device_open("sim:nvme", err, sizeof(err));
	struct hd_identity id;

	(void)state;
	assert_non_null(hd);
	assert_int_equal(hd->ops->identity(hd, &id), 0);
	assert_int_equal(id.vendor_id, SIM_NVME_VENDOR_ID);
	assert_int_equal(id.class_code, 0x010802);
	assert_false(hd->identity_dma);
	assert_int_equal(hd->limits.max_bytes, 1536ull << 20);
	assert_int_equal(hd->limits.max_mappings, 65536);
	assert_int_equal(hd->limits.granule, 16384);
	assert_non_null(sim_nvme_dart(hd));
	/* The sim accessors refuse other host devices. */
	struct host_device other = { 0 };
	struct sim_nvme_stats st;
	memset(&st, 0xff, sizeof(st));
	assert_null(sim_nvme_dart(&other));
	sim_nvme_get_stats(&other, &st);
	assert_int_equal(st.admin_commands, 0);
	assert_false(st.fatal);
	hd->ops->destroy(hd);
}

static void test_options(void **state)
{
	char err[256] = "";
	struct host_device *hd = host_device_open("sim:nvme,size=2M,dart=identity,seed=7,max_bytes=1M,max_mappings=9",
						  err, sizeof(err));

	(void)state;
	assert_non_null(hd);
	assert_true(hd->identity_dma);
	assert_int_equal(hd->limits.max_bytes, 1 << 20);
	assert_int_equal(hd->limits.max_mappings, 9);
	hd->ops->destroy(hd);
}

/* The capability IDs in the function's list, as a bit set. */
static unsigned cap_ids(struct host_device *hd)
{
	uint32_t ptr = 0, hdr = 0;
	unsigned ids = 0;

	assert_int_equal(hd->ops->claim(hd), 0);
	assert_int_equal(hd->ops->config_read(hd, 0x34, 1, &ptr), 0);
	for (int n = 0; ptr && n < 16; n++, ptr = (hdr >> 8) & 0xfc) {
		assert_int_equal(hd->ops->config_read(hd, ptr, 4, &hdr), 0);
		ids |= 1u << (hdr & 0x1f);
	}
	return ids;
}

/* msi=off: MSI-X alone (a device QEMU <= 11.1 cannot unplug over vfio-user). */
static void test_msi_option(void **state)
{
	char err[256] = "";
	struct host_device *hd = host_device_open("sim:nvme,size=1M", err, sizeof(err));

	(void)state;
	assert_non_null(hd);
	assert_int_equal(cap_ids(hd), 1u << 0x01 | 1u << 0x05 | 1u << 0x10 | 1u << 0x11);
	hd->ops->destroy(hd);
	hd = host_device_open("sim:nvme,size=1M,msi=off", err, sizeof(err));
	assert_non_null(hd);
	assert_int_equal(cap_ids(hd), 1u << 0x01 | 1u << 0x10 | 1u << 0x11);
	hd->ops->destroy(hd);
	hd = host_device_open("sim:nvme,size=1M,msi=on", err, sizeof(err));
	assert_non_null(hd);
	assert_int_equal(cap_ids(hd) & 1u << 0x05, 1u << 0x05);
	hd->ops->destroy(hd);
}

static void expect_refused(const char *spec, const char *needle)
{
	char err[256] = "";
	struct host_device *hd = host_device_open(spec, err, sizeof(err));

	assert_null(hd);
	assert_non_null(strstr(err, needle));
	assert_null(strchr(err, '\n'));
}

static void test_refusals(void **state)
{
	(void)state;
	expect_refused("", "no device given");
	expect_refused("sim:gpu", "only \"nvme\"");
	expect_refused("sim:nvme,size=abc", "not a size");
	expect_refused("sim:nvme,size=3", "multiple of 512");
	expect_refused("sim:nvme,dart=off", "dart=apple or dart=identity");
	expect_refused("sim:nvme,msi=maybe", "msi=on or msi=off");
	expect_refused("sim:nvme,colour=blue", "unknown option \"colour\"");
	expect_refused("sim:nvme,size", "needs a value");
	expect_refused("sim:nvme,backing=/nonexistent-dir/x.img", "cannot open backing file");
	expect_refused("pci:01:00.0", "not understood");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_default_sim),
		cmocka_unit_test(test_options),
		cmocka_unit_test(test_msi_option),
		cmocka_unit_test(test_refusals),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
