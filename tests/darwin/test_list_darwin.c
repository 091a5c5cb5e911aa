// SPDX-License-Identifier: MIT
/*
 * `vfio-apple list` as built for macOS (cli/list_darwin.c and cli/list.c
 * compiled with __APPLE__ defined), run on Linux against the dext TEST MODEL
 * behind the IOKit shim.  Checks that the identity comes from the registry
 * without opening a user client, that the host root is shown, and that the
 * Linux-only sim-dext device is not offered.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <IOKit/IOKitLib.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cli.h"
#include "dext_model.h"
#include "list.h"
#include "sim_nvme.h"

#ifndef __APPLE__
#error "this test builds list.c and list_darwin.c as on macOS: compile it with -D__APPLE__"
#endif

/* What cmd_list needs from cli/util.c, which this test does not build. */
void cli_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int cli_usage_exit(int opt, void (*usage)(FILE *out))
{
	(void)opt;
	usage(stderr);
	return 2;
}

int cli_no_operands(const char *command, int argc, char **argv, int first_operand)
{
	(void)command;
	(void)argv;
	return first_operand < argc;
}

static struct host_device *sim_new(void)
{
	struct sim_nvme_config cfg = {.size = 1 << 20};
	char err[256];
	struct host_device *sim = sim_nvme_open(&cfg, err, sizeof(err));

	assert_non_null(sim);
	return sim;
}

static const char *entry_str(struct json_object *entry, const char *key)
{
	struct json_object *value;

	return json_object_object_get_ex(entry, key, &value) ? json_object_get_string(value) : NULL;
}

static void test_list_on_macos(void **state)
{
	struct host_device *s1 = sim_new(), *s2 = sim_new();
	struct dext_model_service_config c1 = {
		.dev = s1, .host_root = "pcic2-bridge", .set_location = true, .bus = 3, .device = 0, .function = 0,
	};
	struct dext_model_service_config c2 = {
		.dev = s2, .host_root = "pcic3-bridge", .set_location = true, .bus = 3, .device = 0, .function = 0,
		.hide_pci_properties = true,
	};
	struct dext_model_stats a, b;
	struct host_function *fns = NULL;
	struct json_object *array;
	char err[512] = "", *text = NULL;
	uint64_t id1, id2;
	size_t n = 0, len = 0;
	bool saw_sim_dext = false, saw_sim = false;
	FILE *f;

	(void)state;
	assert_int_equal(dext_model_publish(&c1, &id1, err, sizeof(err)), 0);
	assert_int_equal(dext_model_publish(&c2, &id2, err, sizeof(err)), 0);
	dext_model_get_stats(&a);
	assert_int_equal(host_functions_enumerate(&fns, &n, err, sizeof(err)), 0);
	dext_model_get_stats(&b);
	assert_int_equal(n, 2);
	/* Only the service without registry identity was opened (and asked selector 0). */
	assert_int_equal(b.service_opens - a.service_opens, 1);
	assert_int_equal(b.calls[0] - a.calls[0], 1);
	assert_int_equal(b.clients_live, a.clients_live);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(fns[i].bus, 3);
		assert_int_equal(fns[i].vendor_id, SIM_NVME_VENDOR_ID);
		assert_int_equal(fns[i].device_id, SIM_NVME_DEVICE_ID);
		assert_int_equal(fns[i].class_code, SIM_NVME_CLASS);
		assert_true(!strcmp(fns[i].host_root, "pcic2-bridge") || !strcmp(fns[i].host_root, "pcic3-bridge"));
	}
	assert_string_not_equal(fns[0].host_root, fns[1].host_root);

	array = list_build(fns, n, NULL);
	for (size_t i = 0; i < json_object_array_length(array); i++) {
		const char *dev = entry_str(json_object_array_get_idx(array, i), "device");

		saw_sim_dext |= !strncmp(dev, "sim-dext:", 9);
		saw_sim |= !strcmp(dev, "sim:nvme");
	}
	assert_true(saw_sim);
	assert_false(saw_sim_dext); /* open refuses it on macOS: not offered */
	f = open_memstream(&text, &len);
	list_print(f, array);
	fclose(f);
	assert_non_null(strstr(text, "host root pcic2-bridge"));
	assert_non_null(strstr(text, "host root pcic3-bridge"));
	assert_null(strstr(text, "sim-dext"));
	free(text);
	json_object_put(array);
	free(fns);

	/* A service that cannot be opened is reported with the entitlement hint; the rest are listed. */
	dext_model_fail_next(DEXT_MODEL_FAIL_OPEN, kIOReturnNotPermitted);
	assert_int_equal(host_functions_enumerate(&fns, &n, err, sizeof(err)), -EPERM);
	assert_int_equal(n, 1);
	assert_string_equal(fns[0].host_root, "pcic2-bridge");
	assert_non_null(strstr(err, "0xe00002e2"));
	assert_non_null(strstr(err, "userclient-access"));
	free(fns);

	dext_model_unpublish(id1, true);
	dext_model_unpublish(id2, true);
	assert_int_equal(host_functions_enumerate(&fns, &n, err, sizeof(err)), -ENODEV);
	assert_int_equal(n, 0);
	free(fns);
	s1->ops->destroy(s1);
	s2->ops->destroy(s2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_list_on_macos),
	};

	return cmocka_run_group_tests_name("vfio-apple list as on macOS, over the dext TEST MODEL", tests, NULL, NULL);
}
