// SPDX-License-Identifier: MIT
/* vfio-apple: serve, run, list, status. */
#include "cli.h"
#include "proc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
	fputs("Usage: vfio-apple COMMAND [options]\n"
	      "\n"
	      "Pass a PCI device of an Apple Silicon Mac (on Linux: a simulated one) to a\n"
	      "Linux VM over vfio-user.\n"
	      "\n"
	      "Commands:\n"
	      "  serve    run the broker in the foreground (the device's vfio-user server)\n"
	      "  run      start QEMU with the devices (a broker each, or in-process) and\n"
	      "           supervise it; with no QEMU arguments, the demo\n"
	      "  list     show the host devices that can be passed through\n"
	      "  status   ask a running broker, or every device of a run, for its state\n"
	      "  attach   plug a device into the VM of a running `run`\n"
	      "  detach   unplug a device from it\n"
	      "  sim      make a simulated device vanish or come back (testing)\n"
	      "\n"
	      "`vfio-apple COMMAND --help` describes each; `man vfio-apple` all of them.\n"
	      "  -h, --help      this text\n"
	      "  -V, --version   the version\n",
	      out);
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*run)(int argc, char **argv);
	} commands[] = {
		{ "serve", cmd_serve },
		{ "run", cmd_run },
		{ "list", cmd_list },
		{ "status", cmd_status },
		{ "attach", cmd_attach },
		{ "detach", cmd_detach },
		{ "sim", cmd_sim },
	};
	const char *name;

	cli_set_argv0(argv[0]);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	name = argv[1];
	if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(name, "-V") == 0 || strcmp(name, "--version") == 0) {
		printf("vfio-apple %s\n", VFA_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(name, commands[i].name) == 0)
			return commands[i].run(argc - 1, argv + 1);
	cli_error("unknown command '%s': use serve, run, list, status, attach, detach or sim (see `vfio-apple --help`)", name);
	return 2;
}
