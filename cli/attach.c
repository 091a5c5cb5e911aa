// SPDX-License-Identifier: MIT
/*
 * `vfio-apple attach`, `detach` and `sim`: requests to a running `vfio-apple
 * run` (its DIR/run.sock, vm.h) and, for `sim`, to a simulated device's
 * broker (control socket) or in-process device (QMP).
 */
#include "cli.h"
#include "qmp.h"
#include "vm.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

static void usage_body(FILE *out)
{
	fputs(
	      "attach: plug a host device (SPEC, as for `run -d`) into a free PCIe slot of\n"
	      "the VM that `vfio-apple run` supervises, or bring back a device of that VM\n"
	      "that was pulled from the host and is present again (its ID, vfaN).  The\n"
	      "guest sees a hot-plug: its own driver binds, through apple_dma.\n"
	      "detach: unplug device ID in order: the guest's driver lets go, apple_dma\n"
	      "releases every mapping, then its broker stops and releases the device.\n"
	      "Waits until the guest has let go (at most 60 s; the unplug stays requested).\n"
	      "\n"
	      "  -s, --socket-dir DIR    run's socket directory (default as for run)\n"
	      "      --json              print run's JSON answer as is\n"
	      "      --timeout SECONDS   how long to wait for run's answer (default 90)\n"
	      "  -h, --help              this text\n"
	      "\n"
	      "Exit status: 0 when done, 1 when refused (the reason on stderr), 2 on usage.\n",
	      out);
}

static void attach_usage(FILE *out)
{
	fputs("Usage: vfio-apple attach [-s DIR] [--json] SPEC|ID\n"
	      "       vfio-apple detach [-s DIR] [--json] ID\n\n",
	      out);
	usage_body(out);
}

static void detach_usage(FILE *out)
{
	fputs("Usage: vfio-apple detach [-s DIR] [--json] ID\n"
	      "       vfio-apple attach [-s DIR] [--json] SPEC|ID\n\n",
	      out);
	usage_body(out);
}

static int request_run(const char *what, int argc, char **argv)
{
	static const struct option options[] = {
		{ "socket-dir", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char dir[256], request[VM_REQUEST_MAX], err[CLI_ERR_LEN];
	struct json_object *answer, *ok, *field;
	bool json = false;
	long timeout_s = 90;
	int opt;

	socket_paths_default_dir(dir, sizeof(dir));
	while ((opt = getopt_long(argc, argv, "s:h", options, NULL)) != -1) {
		switch (opt) {
		case 's':
			snprintf(dir, sizeof(dir), "%s", optarg);
			break;
		case 'j':
			json = true;
			break;
		case 't':
			if (cli_parse_number(optarg, 10, 1, 3600, &timeout_s) < 0) {
				cli_error("bad --timeout '%s': give seconds, 1 to 3600", optarg);
				return 2;
			}
			break;
		default:
			return cli_usage_exit(opt, strcmp(what, "attach") == 0 ? attach_usage : detach_usage);
		}
	}
	if (optind != argc - 1) {
		cli_error("%s takes one %s (see `vfio-apple %s --help`)", what,
			  strcmp(what, "attach") == 0 ? "device string or ID" : "device ID", what);
		return 2;
	}
	if (strchr(argv[optind], '\n') ||
	    (size_t)snprintf(request, sizeof(request), "%s %s", what, argv[optind]) >= sizeof(request)) {
		cli_error("%s: argument too long or not one line", what);
		return 2;
	}
	/* A device string (not an id, vfaN) is checked before asking run. */
	if (strcmp(what, "attach") == 0 && (strncmp(argv[optind], "vfa", 3) != 0 || strchr(argv[optind], ':')) &&
	    device_spec_check(argv[optind], err, sizeof(err)) < 0) {
		cli_error("%s", err);
		return 2;
	}
	answer = vm_request(dir, request, (int)timeout_s * 1000, err, sizeof(err));
	if (!answer) {
		cli_error("%s", err);
		return 1;
	}
	if (json)
		printf("%s\n", json_object_to_json_string_ext(answer, JSON_C_TO_STRING_PLAIN));
	if (!json_object_object_get_ex(answer, "ok", &ok) || !json_object_get_boolean(ok)) {
		cli_error("%s", json_object_object_get_ex(answer, "error", &field) ? json_object_get_string(field) :
										     "refused without a reason");
		json_object_put(answer);
		return 1;
	}
	if (!json)
		printf("%s: %s, slot %s, guest function %s (%s)\n", status_text(answer, NULL, "id"),
		       strcmp(what, "attach") == 0 ? "attached" : "detached", json_object_to_json_string(
			       json_object_object_get(answer, "slot")),
		       status_text(answer, NULL, "function"), status_text(answer, NULL, "device"));
	json_object_put(answer);
	return 0;
}

int cmd_attach(int argc, char **argv)
{
	return request_run("attach", argc, argv);
}

int cmd_detach(int argc, char **argv)
{
	return request_run("detach", argc, argv);
}

/* ---- sim: a simulated device pulled or plugged back, a companion reset --- */

static void sim_usage(FILE *out)
{
	fputs("Usage: vfio-apple sim vanish|replug|reset-companion [-s DIR] ID\n"
	      "       vfio-apple sim vanish|replug|reset-companion --control-socket PATH\n"
	      "\n"
	      "For testing without hardware: make a simulated device (sim:nvme) of a\n"
	      "running VM vanish from the host as a pulled Thunderbolt cable would, or come\n"
	      "back.  `run` then unplugs it from the VM; after replug, `vfio-apple attach ID`\n"
	      "plugs it in again.  reset-companion resets a device's apple-dma companion\n"
	      "behind the guest's back (every DMA mapping and the command page go), to test\n"
	      "how the guest driver recovers; vfio-user devices only.  With\n"
	      "--control-socket, the broker of a `vfio-apple serve`.\n"
	      "\n"
	      "  -s, --socket-dir DIR    run's socket directory (default as for run)\n"
	      "      --control-socket P  a broker's control socket instead of a run's device\n"
	      "  -h, --help              this text\n",
	      out);
}

/* In-process: the device's x-sim-present property, over run's QMP socket. */
static int sim_qom(struct json_object *list, const char *id, bool present, char *err, size_t errlen)
{
	static struct qmp q;
	struct json_object *qmp_path, *args, *ret;
	char path[64];

	if (!json_object_object_get_ex(list, "qmp", &qmp_path)) {
		snprintf(err, errlen, "run has no QMP socket");
		return -ENOENT;
	}
	if (qmp_open(&q, json_object_get_string(qmp_path), 5000, err, errlen) < 0)
		return -EIO;
	snprintf(path, sizeof(path), "/machine/peripheral/%s", id);
	args = json_object_new_object();
	json_object_object_add(args, "path", json_object_new_string(path));
	json_object_object_add(args, "property", json_object_new_string("x-sim-present"));
	json_object_object_add(args, "value", json_object_new_boolean(present));
	ret = qmp_execute(&q, "qom-set", args, err, errlen);
	qmp_close(&q);
	if (!ret)
		return -EIO;
	json_object_put(ret);
	return 0;
}

/*
 * Each sim verb: the broker's control request, what is printed when done,
 * and the in-process device's x-sim-present value (-1: no in-process form).
 */
static const struct sim_verb {
	const char *verb, *request, *done;
	int present;
} sim_verbs[] = {
	{ "vanish", "sim-vanish\n", "vanished", 0 },
	{ "replug", "sim-replug\n", "plugged back", 1 },
	{ "reset-companion", "sim-reset-companion\n", "companion reset", -1 },
};

int cmd_sim(int argc, char **argv)
{
	static const struct option options[] = {
		{ "socket-dir", required_argument, NULL, 's' },
		{ "control-socket", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char dir[256], control[320], err[CLI_ERR_LEN];
	const char *control_path = NULL, *verb;
	const struct sim_verb *sv = NULL;
	struct json_object *answer = NULL, *field;
	int opt, rc = 1;

	socket_paths_default_dir(dir, sizeof(dir));
	while ((opt = getopt_long(argc, argv, "s:h", options, NULL)) != -1) {
		switch (opt) {
		case 's':
			snprintf(dir, sizeof(dir), "%s", optarg);
			break;
		case 'c':
			control_path = optarg;
			break;
		default:
			return cli_usage_exit(opt, sim_usage);
		}
	}
	for (size_t i = 0; optind < argc && i < sizeof(sim_verbs) / sizeof(sim_verbs[0]); i++)
		if (strcmp(argv[optind], sim_verbs[i].verb) == 0)
			sv = &sim_verbs[i];
	if (!sv) {
		cli_error("sim needs vanish, replug or reset-companion (see `vfio-apple sim --help`)");
		return 2;
	}
	verb = argv[optind++];
	if (control_path ? optind != argc : optind != argc - 1) {
		cli_error("sim %s takes %s", verb, control_path ? "no ID with --control-socket" : "one device ID (vfaN)");
		return 2;
	}
	if (!control_path) {
		const char *id = argv[optind];
		struct json_object *list = vm_request(dir, "list", 5000, err, sizeof(err)), *mode;

		if (!list) {
			cli_error("%s", err);
			return 1;
		}
		if (json_object_object_get_ex(list, "mode", &mode) &&
		    strcmp(json_object_get_string(mode), "in-process") == 0) {
			if (sv->present < 0) {
				cli_error("reset-companion works on vfio-user devices; an in-process companion resets "
					  "with the VM");
				json_object_put(list);
				return 1;
			}
			rc = sim_qom(list, id, sv->present == 1, err, sizeof(err)) == 0 ? 0 : 1;
			if (rc)
				cli_error("%s %s: %s", verb, id, err);
			else
				printf("%s: %s\n", id, sv->done);
			json_object_put(list);
			return rc;
		}
		json_object_put(list);
		if ((size_t)snprintf(control, sizeof(control), "%s/%s/control.sock", dir, id) >= sizeof(control)) {
			cli_error("socket directory %s: path too long", dir);
			return 2;
		}
		control_path = control;
	}
	answer = control_request(control_path, sv->request, 5000, err, sizeof(err));
	if (!answer) {
		cli_error("%s", err);
		return 1;
	}
	if (json_object_object_get_ex(answer, "ok", &field) && json_object_get_boolean(field)) {
		printf("%s: %s\n", control_path, sv->done);
		rc = 0;
	} else {
		cli_error("sim %s: %s", verb,
			  json_object_object_get_ex(answer, "error", &field) ? json_object_get_string(field) :
									      "refused without a reason");
	}
	json_object_put(answer);
	return rc;
}
