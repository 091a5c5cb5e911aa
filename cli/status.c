// SPDX-License-Identifier: MIT
/*
 * `vfio-apple status`: a running broker's state, from its control socket;
 * or, with --qmp, the in-process devices' counters from QEMU's QMP socket.
 */
#include "cli.h"
#include "qmp.h"
#include "vm.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <json-c/json.h>

static void usage(FILE *out)
{
	fputs("Usage: vfio-apple status [--json] [--socket-dir DIR | --control-socket PATH]\n"
	      "       vfio-apple status [--json] --qmp PATH [--qom-path PATH]\n"
	      "\n"
	      "Ask a running broker (vfio-apple serve or run) for its state: clients,\n"
	      "live DMA mappings and bytes against the DART limits, companion doorbells,\n"
	      "interrupts delivered, faults, uptime.\n"
	      "With --qmp, read the same counters from a QEMU that has the in-process\n"
	      "devices (vfio-apple-pci and its apple-dma-pci companion), through its QMP\n"
	      "socket (qom-get of their read-only counter properties); the table says\n"
	      "which objects and properties it read.\n"
	      "When DIR holds a `vfio-apple run` (DIR/run.sock), every device of its VM\n"
	      "is shown: id, slot, guest address, attached / unplugging / removed, then\n"
	      "its counters.\n"
	      "\n"
	      "  --json                  print the JSON object as is (for scripts)\n"
	      "  -s, --socket-dir DIR    the broker's socket directory (default: /run/vfio-apple\n"
	      "                          for root, else $XDG_RUNTIME_DIR/vfio-apple)\n"
	      "  --control-socket PATH   the control socket itself (default: DIR/control.sock)\n"
	      "  --qmp PATH              QEMU's QMP socket (-qmp unix:PATH,server=on,wait=off;\n"
	      "                          `run --in-process` makes DIR/qmp.sock)\n"
	      "  --qom-path PATH         the vfio-apple-pci to read (default: the first one under\n"
	      "                          /machine/peripheral, then /machine/peripheral-anon)\n"
	      "  --timeout MS            how long to wait for the answer (default 2000)\n"
	      "  -h, --help              this text\n"
	      "\n"
	      "Exit status: 0 when a broker (or QEMU) answered, 1 otherwise.\n",
	      out);
}

/* obj.a.b... as a field, or NULL. */
static struct json_object *field(struct json_object *obj, const char *section, const char *name)
{
	struct json_object *sub = NULL, *value = NULL;

	if (section) {
		if (!json_object_object_get_ex(obj, section, &sub))
			return NULL;
		obj = sub;
	}
	if (!json_object_object_get_ex(obj, name, &value))
		return NULL;
	return value;
}

bool status_get_u64(struct json_object *obj, const char *section, const char *name, uint64_t *out)
{
	struct json_object *value = field(obj, section, name);

	if (!value || !(json_object_is_type(value, json_type_int) || json_object_is_type(value, json_type_double)))
		return false;
	*out = (uint64_t)json_object_get_uint64(value);
	return true;
}

/* A counter as text, "-" when the broker did not send it. */
const char *status_num(struct json_object *obj, const char *section, const char *name, char *buf, size_t len)
{
	uint64_t value;

	if (!status_get_u64(obj, section, name, &value))
		return "-";
	snprintf(buf, len, "%" PRIu64, value);
	return buf;
}

const char *status_bytes(struct json_object *obj, const char *section, const char *name, char *buf, size_t len)
{
	uint64_t value;

	if (!status_get_u64(obj, section, name, &value))
		return "-";
	format_bytes(value, buf, len);
	return buf;
}

const char *status_text(struct json_object *obj, const char *section, const char *name)
{
	struct json_object *value = field(obj, section, name);

	return value && json_object_is_type(value, json_type_string) ? json_object_get_string(value) : "-";
}

static void print_client(FILE *out, struct json_object *status, const char *role)
{
	struct json_object *clients = field(status, NULL, "clients");
	struct json_object *client = clients ? field(clients, NULL, role) : NULL;
	struct json_object *connected = client ? field(client, NULL, "connected") : NULL;
	const char *state = "-";

	if (connected && json_object_is_type(connected, json_type_boolean))
		state = json_object_get_boolean(connected) ? "connected" : "waiting";
	fprintf(out, "  %-12s %-10s %s\n", role, state, client ? status_text(client, NULL, "socket") : "-");
}

void status_print(FILE *out, struct json_object *status)
{
	char a[32], b[32], c[32], d[32];
	uint64_t uptime, features;

	fprintf(out, "broker       pid %s, version %s, up ", status_num(status, NULL, "pid", a, sizeof(a)),
		status_text(status, NULL, "version"));
	if (status_get_u64(status, NULL, "uptime_s", &uptime))
		fprintf(out, "%" PRIu64 ":%02" PRIu64 ":%02" PRIu64 "\n", uptime / 3600, uptime / 60 % 60,
			uptime % 60);
	else
		fputs("-\n", out);
	fprintf(out, "device       %s\n", status_text(status, NULL, "device"));
	if (field(status, NULL, "present") && !json_object_get_boolean(field(status, NULL, "present")))
		fprintf(out, "             REMOVED from the host: %s\n", status_text(status, NULL, "removal"));
	if (field(status, NULL, "host"))
		fprintf(out, "host         %s %s class %s\n", status_text(status, "host", "address"),
			status_text(status, "host", "id"), status_text(status, "host", "class"));
	fputs("clients\n", out);
	print_client(out, status, "passthrough");
	print_client(out, status, "companion");

	fputs("DMA (DART)\n", out);
	fprintf(out, "  live       %s of %s mappings, %s of %s\n", status_num(status, "dma", "live_mappings", a, sizeof(a)),
		status_num(status, "dma", "max_mappings", b, sizeof(b)), status_bytes(status, "dma", "live_bytes", c, sizeof(c)),
		status_bytes(status, "dma", "max_bytes", d, sizeof(d)));
	fprintf(out, "  peak       %s mappings, %s\n", status_num(status, "dma", "peak_mappings", a, sizeof(a)),
		status_bytes(status, "dma", "peak_bytes", b, sizeof(b)));
	fprintf(out, "  faults     %s (register failures %s)\n", status_num(status, "dma", "faults", a, sizeof(a)),
		status_num(status, "dma", "register_failures", b, sizeof(b)));

	fputs("companion\n", out);
	fprintf(out, "  doorbells  %s (map entries %s, unmap entries %s)\n",
		status_num(status, "companion", "doorbells", a, sizeof(a)),
		status_num(status, "companion", "map_entries", b, sizeof(b)),
		status_num(status, "companion", "unmap_entries", c, sizeof(c)));
	fprintf(out, "  live ids   %s, invalid requests %s, I/O errors %s\n",
		status_num(status, "companion", "live_ids", a, sizeof(a)), status_num(status, "companion", "inval", b, sizeof(b)),
		status_num(status, "companion", "ioerr", c, sizeof(c)));
	if (status_get_u64(status, "companion", "guest_features", &features))
		fprintf(out, "  guest uses 0x%" PRIx64 "%s%s%s\n", features, features & 1 ? " budget" : "",
			features & 2 ? " unique-ids" : "", features & 4 ? " unmap-all" : "");
	else
		fputs("  guest uses -\n", out);
	if (status_get_u64(status, "companion", "posted_doorbells", &features) && features > 0)
		fprintf(out, "  WARNING    %" PRIu64 " doorbells were posted writes: a guest that does not read STATUS\n"
			     "             breaks; give the companion's vfio-user-pci x-no-posted-writes=on\n",
			features);

	fputs("interrupts\n", out);
	fprintf(out, "  delivered  %s (vectors enabled %s)\n", status_num(status, "interrupts", "delivered", a, sizeof(a)),
		status_num(status, "interrupts", "vectors_enabled", b, sizeof(b)));
}

/* Every device of a `run`: its list, and each device's own counters. */
static int status_of_run(const char *dir, bool json, int timeout_ms)
{
	char err[CLI_ERR_LEN];
	struct json_object *list = vm_request(dir, "list", timeout_ms, err, sizeof(err)), *devs, *qmp;
	bool in_process;

	if (!list) {
		cli_error("%s", err);
		return 1;
	}
	in_process = strcmp(status_text(list, NULL, "mode"), "in-process") == 0;
	if (!json_object_object_get_ex(list, "devices", &devs) || !json_object_is_type(devs, json_type_array)) {
		cli_error("run at %s answered without a device list", dir);
		json_object_put(list);
		return 1;
	}
	if (!json)
		printf("run          %s, QEMU pid %s, %zu device(s) in %s slot(s)\n", status_text(list, NULL, "mode"),
		       status_num(list, NULL, "qemu_pid", err, sizeof(err)), json_object_array_length(devs),
		       json_object_to_json_string(json_object_object_get(list, "slots")));
	for (size_t i = 0; i < json_object_array_length(devs); i++) {
		struct json_object *dev = json_object_array_get_idx(devs, i), *status;
		char qom[64];

		if (in_process && json_object_object_get_ex(list, "qmp", &qmp)) {
			snprintf(qom, sizeof(qom), "/machine/peripheral/%s", status_text(dev, NULL, "id"));
			status = strcmp(status_text(dev, NULL, "state"), "attached") == 0 ?
					 qmp_query_counters(json_object_get_string(qmp), qom, timeout_ms, err,
							    sizeof(err)) :
					 NULL;
		} else {
			status = control_query(status_text(dev, NULL, "control_socket"), timeout_ms, err, sizeof(err));
		}
		if (!json) {
			printf("\n== %s  %s, slot %s, guest %s, %s%s%s\n", status_text(dev, NULL, "id"),
			       status_text(dev, NULL, "device"),
			       json_object_to_json_string(json_object_object_get(dev, "slot")),
			       status_text(dev, NULL, "function"), status_text(dev, NULL, "state"),
			       field(dev, NULL, "removal") ? ", removed from the host: " : "",
			       field(dev, NULL, "removal") ? status_text(dev, NULL, "removal") : "");
			if (status && in_process)
				qmp_status_print(stdout, status);
			else if (status)
				status_print(stdout, status);
			else
				printf("(no counters: %s)\n", in_process ? "not in the VM" : err);
		}
		if (status)
			json_object_object_add(dev, "status", status);
	}
	if (json)
		printf("%s\n", json_object_to_json_string_ext(list, JSON_C_TO_STRING_PLAIN));
	json_object_put(list);
	return 0;
}

int cmd_status(int argc, char **argv)
{
	static const struct option options[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "socket-dir", required_argument, NULL, 's' },
		{ "control-socket", required_argument, NULL, 'c' },
		{ "timeout", required_argument, NULL, 't' },
		{ "qmp", required_argument, NULL, 'q' },
		{ "qom-path", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct socket_paths paths;
	char dir[256], err[CLI_ERR_LEN];
	const char *control = NULL, *qmp = NULL, *qom_path = NULL;
	struct json_object *status;
	bool json = false;
	int timeout_ms = 2000;
	int opt;

	socket_paths_default_dir(dir, sizeof(dir));
	while ((opt = getopt_long(argc, argv, "s:h", options, NULL)) != -1) {
		switch (opt) {
		case 'j':
			json = true;
			break;
		case 'd':
		case 's':
			snprintf(dir, sizeof(dir), "%s", optarg);
			break;
		case 'c':
			control = optarg;
			break;
		case 'q':
			qmp = optarg;
			break;
		case 'o':
			qom_path = optarg;
			break;
		case 't': {
			long value;

			if (cli_parse_number(optarg, 10, 1, 600000, &value) < 0) {
				cli_error("bad --timeout '%s': give milliseconds, 1 to 600000", optarg);
				return 2;
			}
			timeout_ms = (int)value;
			break;
		}
		default:
			return cli_usage_exit(opt, usage);
		}
	}
	if (cli_no_operands("status", argc, argv, optind))
		return 2;
	if (qom_path && !qmp) {
		cli_error("--qom-path needs --qmp PATH (a broker has no QOM)");
		return 2;
	}
	if (qmp) {
		status = qmp_query_counters(qmp, qom_path, timeout_ms, err, sizeof(err));
		if (!status) {
			cli_error("%s", err);
			return 1;
		}
		if (json)
			printf("%s\n", json_object_to_json_string_ext(status, JSON_C_TO_STRING_PLAIN));
		else
			qmp_status_print(stdout, status);
		json_object_put(status);
		return 0;
	}
	if (!control) {
		char run_socket[320];
		struct stat st;

		/* A `run` answers for every device of its VM. */
		if ((size_t)snprintf(run_socket, sizeof(run_socket), "%s/" VM_SOCKET_NAME, dir) < sizeof(run_socket) &&
		    stat(run_socket, &st) == 0 && S_ISSOCK(st.st_mode))
			return status_of_run(dir, json, timeout_ms);
		if (socket_paths_from_dir(&paths, dir) < 0) {
			cli_error("socket directory %s is too long: choose a shorter --socket-dir", dir);
			return 2;
		}
		control = paths.control;
	}
	status = control_query(control, timeout_ms, err, sizeof(err));
	if (!status) {
		cli_error("%s", err);
		return 1;
	}
	if (json)
		printf("%s\n", json_object_to_json_string_ext(status, JSON_C_TO_STRING_PLAIN));
	else
		status_print(stdout, status);
	json_object_put(status);
	return 0;
}
