// SPDX-License-Identifier: MIT
/* `vfio-apple list`: the host devices that can be passed through. */
#include "cli.h"
#include "list.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

static void usage(FILE *out)
{
	fputs("Usage: vfio-apple list [--json] [--pci-ids FILE]\n"
	      "\n"
	      "Show the host devices that vfio-apple can pass through, with the string\n"
	      "to give `serve --device` or `run --device`.  On Linux these are the\n"
	      "simulated devices; on macOS the PCI functions bound to the\n"
	      "VFIOUserPCIDriver dext (bus:device.function, vendor:device, class, and\n"
	      "names from pci.ids when it is installed).\n"
	      "\n"
	      "  --json           a JSON array (for scripts)\n"
	      "  --pci-ids FILE   names from FILE instead of /usr/share/misc/pci.ids or\n"
	      "                   /usr/share/hwdata/pci.ids\n"
	      "  -h, --help       this text\n",
	      out);
}

static const struct sim_kind {
	const char *device;
	const char *description;
} sim_kinds[] = {
	{ "sim:nvme", "simulated NVMe controller behind a simulated Apple DART "
		      "(16 KiB pages, 1.5 GiB and 65,536 mappings; options size=, dart=apple|identity, backing=FILE)" },
#if defined(VFA_HAVE_DEXT_MODEL) && !defined(__APPLE__) /* the model is built on Linux only */
	{ "sim-dext:nvme", "the same NVMe reached through the macOS backend and a model of the "
			   "VFIOUserPCIDriver dext (tests the Mac code path on Linux)" },
#endif
};

static void add_names(struct json_object *entry, const struct host_function *fn, const char *ids_path)
{
	struct pci_names names;

	if (!ids_path || pciids_lookup(ids_path, fn->vendor_id, fn->device_id, fn->class_code, &names) < 0)
		return;
	if (names.vendor[0])
		json_object_object_add(entry, "vendor", json_object_new_string(names.vendor));
	if (names.device[0])
		json_object_object_add(entry, "name", json_object_new_string(names.device));
	if (names.class_name[0])
		json_object_object_add(entry, "class_name", json_object_new_string(names.class_name));
}

static const char *str_or(struct json_object *entry, const char *key, const char *fallback)
{
	struct json_object *value;

	return json_object_object_get_ex(entry, key, &value) ? json_object_get_string(value) : fallback;
}

struct json_object *list_build(const struct host_function *fns, size_t count, const char *ids_path)
{
	struct json_object *array = json_object_new_array();

	for (size_t i = 0; i < sizeof(sim_kinds) / sizeof(sim_kinds[0]); i++) {
		struct json_object *entry = json_object_new_object();

		json_object_object_add(entry, "device", json_object_new_string(sim_kinds[i].device));
		json_object_object_add(entry, "kind", json_object_new_string("simulated"));
		json_object_object_add(entry, "description", json_object_new_string(sim_kinds[i].description));
		json_object_array_add(array, entry);
	}
	for (size_t i = 0; i < count; i++) {
		const struct host_function *fn = &fns[i];
		struct json_object *entry = json_object_new_object();
		char text[16];

		snprintf(text, sizeof(text), "%02x:%02x.%x", fn->bus, fn->device, fn->function);
		json_object_object_add(entry, "device", json_object_new_string(text));
		json_object_object_add(entry, "kind", json_object_new_string("host"));
		json_object_object_add(entry, "bus", json_object_new_int(fn->bus));
		json_object_object_add(entry, "slot", json_object_new_int(fn->device));
		json_object_object_add(entry, "function", json_object_new_int(fn->function));
		snprintf(text, sizeof(text), "%04x", fn->vendor_id);
		json_object_object_add(entry, "vendor_id", json_object_new_string(text));
		snprintf(text, sizeof(text), "%04x", fn->device_id);
		json_object_object_add(entry, "device_id", json_object_new_string(text));
		snprintf(text, sizeof(text), "%06x", fn->class_code & 0xffffff);
		json_object_object_add(entry, "class", json_object_new_string(text));
		if (fn->host_root[0])
			json_object_object_add(entry, "host_root", json_object_new_string(fn->host_root));
		add_names(entry, fn, ids_path);
		json_object_array_add(array, entry);
	}
	return array;
}

void list_print(FILE *out, struct json_object *array)
{
	size_t n = json_object_array_length(array);

	for (size_t i = 0; i < n; i++) {
		struct json_object *entry = json_object_array_get_idx(array, i);
		const char *kind = str_or(entry, "kind", "");

		if (strcmp(kind, "simulated") == 0) {
			fprintf(out, "%-16s %s\n", str_or(entry, "device", "?"), str_or(entry, "description", ""));
			continue;
		}
		fprintf(out, "%-16s %s:%s class %s", str_or(entry, "device", "?"), str_or(entry, "vendor_id", "?"),
			str_or(entry, "device_id", "?"), str_or(entry, "class", "?"));
		if (json_object_object_get_ex(entry, "vendor", NULL) || json_object_object_get_ex(entry, "name", NULL))
			fprintf(out, "  %s %s", str_or(entry, "vendor", ""), str_or(entry, "name", ""));
		if (json_object_object_get_ex(entry, "class_name", NULL))
			fprintf(out, " (%s)", str_or(entry, "class_name", ""));
		if (json_object_object_get_ex(entry, "host_root", NULL))
			fprintf(out, "  host root %s", str_or(entry, "host_root", ""));
		fputc('\n', out);
	}
}

int cmd_list(int argc, char **argv)
{
	static const struct option options[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "pci-ids", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *ids_path = pciids_default_path();
	struct host_function *fns = NULL;
	struct json_object *array;
	char err[CLI_ERR_LEN];
	bool json = false;
	size_t count = 0;
	int opt, ret = 0;

	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (opt) {
		case 'j':
			json = true;
			break;
		case 'p':
			ids_path = optarg;
			break;
		default:
			return cli_usage_exit(opt, usage);
		}
	}
	if (cli_no_operands("list", argc, argv, optind))
		return 2;
	if (host_functions_enumerate(&fns, &count, err, sizeof(err)) < 0) {
		/* Still show what can be used; say why host functions are missing. */
		cli_error("%s", err);
		ret = 1;
	}
	array = list_build(fns, count, ids_path);
	if (json)
		printf("%s\n", json_object_to_json_string_ext(array, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED));
	else
		list_print(stdout, array);
	json_object_put(array);
	free(fns);
	return ret;
}

#ifndef __APPLE__
/* Linux has no dext: no host functions to offer. */
int host_functions_enumerate(struct host_function **out, size_t *count, char *err, size_t errlen)
{
	(void)err;
	(void)errlen;
	*out = NULL;
	*count = 0;
	return 0;
}
#endif
