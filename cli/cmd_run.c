// SPDX-License-Identifier: MIT
/*
 * `vfio-apple run`: its options, and which of its two siblings runs them:
 * the VM supervisor (vm.c, QEMU arguments after --) or the demo
 * (demo.c, no QEMU arguments).  Each of those uses the launcher unit
 * (launch.c); neither calls the other.
 */
#include "cli.h"
#include "demo.h"
#include "launch.h"
#include "vm.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *out)
{
	fputs("Usage: vfio-apple run [options] [-- QEMU-ARGUMENTS...]\n"
	      "\n"
	      "With QEMU arguments: start a VM with the devices given (-d, repeatable) and\n"
	      "supervise it.  Every device sits in its own hot-pluggable PCIe slot (a\n"
	      "pcie-root-port at 00:02.S): its apple-dma companion at function 0, the\n"
	      "function at 1, so slot S's function is guest 0000:(S+1):00.1.  While it runs:\n"
	      "  vfio-apple attach SPEC|ID    plug a device into a free slot (ID: bring back\n"
	      "                               one that was pulled from the host)\n"
	      "  vfio-apple detach ID         unplug it in order, then release it\n"
	      "  vfio-apple status            every device, with its broker's counters\n"
	      "A device pulled from the host is unplugged from the VM by itself.\n"
	      "vfio-user (the default on Linux): one broker (vfio-apple serve) per device,\n"
	      "sockets in DIR/vfaN/, QEMU with shareable guest RAM (" LAUNCH_RAM_BACKEND ",share=on)\n"
	      "and vfio-user-pci devices (the companion without posted writes).\n"
	      "In-process (--in-process; the default on macOS): no broker; a QEMU that has\n"
	      "the project's vfio-apple-pci and apple-dma-pci devices (docs/qemu.md), with\n"
	      "a QMP socket DIR/qmp.sock for `vfio-apple status`.\n"
	      "Arguments after -- go to QEMU verbatim.  QEMU and the brokers are always\n"
	      "stopped on the way out, also on Ctrl-C.\n"
	      "\n"
	      "Without QEMU arguments (Linux) it runs the simulated demo with one device at\n"
	      "00:05.0 (companion 00:06.0): provisions QEMU 11.1, a guest kernel and an\n"
	      "initramfs with apple_dma and fio (cached in $VFA_CACHE, default\n"
	      "/var/cache/vfio-apple; the first time needs root), boots the guest, runs\n"
	      "verified I/O and prints a summary.  Exit status 0 only if the I/O was\n"
	      "verified and the DART saw no fault.\n"
	      "\n"
	      "  -d, --device SPEC       host device (default sim:nvme,size=256M,dart=apple);\n"
	      "                          repeat for several; see `vfio-apple serve --help`\n"
	      "      --slots N           hot-pluggable slots (default 4, at least one per -d; at most 8)\n"
	      "  -s, --socket-dir DIR    sockets: run.sock, the brokers' (DIR/vfaN/), QMP\n"
	      "                          (default as for serve)\n"
	      "  -m, --memory SIZE       guest RAM, QEMU syntax (default 1G)\n"
	      "      --in-process        use a QEMU with vfio-apple-pci, no broker\n"
	      "      --vfio-user         use brokers and vfio-user-pci (default on Linux)\n"
	      "      --qemu PATH         the qemu-system binary (vfio-user default: " LAUNCH_QEMU_SYSTEM "\n"
	      "                          on PATH if >= 10.1, else the provisioned trixie root's;\n"
	      "                          in-process default: $QEMU_BIN, then\n"
	      "                          $VFA_CACHE/" LAUNCH_INPROCESS_PREFIX "/bin/" LAUNCH_QEMU_SYSTEM ", then PATH)\n"
	      "  -k, --kernel VERSION    demo guest kernel: 6.1 (default), 6.12 or 7.3\n"
	      "      --timeout SECONDS   demo: give up after this long (default 900)\n"
	      "      --keep              demo: keep the work directory (console log, initramfs)\n"
	      "  -l, --log-level LEVEL   the brokers': error, warn (default; the demo's log: info),\n"
	      "                          info, debug\n"
	      "  -h, --help              this text\n"
	      "\n"
	      "vfio-user guest RAM must stay shareable: -m, -mem-path, memory-backend-ram\n"
	      "and memory-backend= in -machine are refused after --.\n",
	      out);
}

int cmd_run(int argc, char **argv)
{
	enum { OPT_QEMU = 256, OPT_TIMEOUT, OPT_KEEP, OPT_IN_PROCESS, OPT_VFIO_USER, OPT_SLOTS };
	static const struct option options[] = {
		{ "device", required_argument, NULL, 'd' },
		{ "socket-dir", required_argument, NULL, 's' },
		{ "memory", required_argument, NULL, 'm' },
		{ "qemu", required_argument, NULL, OPT_QEMU },
		{ "in-process", no_argument, NULL, OPT_IN_PROCESS },
		{ "vfio-user", no_argument, NULL, OPT_VFIO_USER },
		{ "kernel", required_argument, NULL, 'k' },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "keep", no_argument, NULL, OPT_KEEP },
		{ "log-level", required_argument, NULL, 'l' },
		{ "slots", required_argument, NULL, OPT_SLOTS },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct launch l;
	struct demo_options demo_opts = { .kernel = "6.1", .timeout_s = 900 };
	char dir[256], err[CLI_ERR_LEN];
	const char *specs[LAUNCH_SLOTS_MAX];
	size_t nspecs = 0;
	long slots = -1;
	bool demo;
	int opt, ret;

	memset(&l, 0, sizeof(l));
#ifdef __APPLE__
	/* A Mac's QEMU has no vfio-user-pci client, and the dext can DMA only
	 * into its own client's memory: the devices must live in QEMU. */
	l.mode = LAUNCH_IN_PROCESS;
#else
	l.mode = LAUNCH_VFIO_USER;
#endif
	l.memory = "1G";
	l.companion = true;
	socket_paths_default_dir(dir, sizeof(dir));
	while ((opt = getopt_long(argc, argv, "+d:s:m:k:l:h", options, NULL)) != -1) {
		switch (opt) {
		case 'd':
			if (nspecs == LAUNCH_SLOTS_MAX) {
				cli_error("at most %d devices (-d) in one VM", LAUNCH_SLOTS_MAX);
				return 2;
			}
			specs[nspecs++] = optarg;
			l.device = specs[0];
			break;
		case OPT_SLOTS:
			if (cli_parse_number(optarg, 10, 1, LAUNCH_SLOTS_MAX, &slots) < 0) {
				cli_error("bad --slots '%s': give 1 to %d", optarg, LAUNCH_SLOTS_MAX);
				return 2;
			}
			break;
		case 's':
			snprintf(dir, sizeof(dir), "%s", optarg);
			break;
		case 'm':
			l.memory = optarg;
			break;
		case OPT_QEMU:
			demo_opts.qemu_path = optarg;
			break;
		case OPT_IN_PROCESS:
			l.mode = LAUNCH_IN_PROCESS;
			break;
		case OPT_VFIO_USER:
			l.mode = LAUNCH_VFIO_USER;
			break;
		case 'k':
			demo_opts.kernel = optarg;
			break;
		case OPT_TIMEOUT: {
			long value;

			if (cli_parse_number(optarg, 10, 1, 86400, &value) < 0) {
				cli_error("bad --timeout '%s': give seconds, 1 to 86400", optarg);
				return 2;
			}
			demo_opts.timeout_s = (int)value;
			break;
		}
		case OPT_KEEP:
			demo_opts.keep = true;
			break;
		case 'l':
			if (cli_parse_log_level(optarg) < 0)
				return 2;
			l.log_level = optarg;
			break;
		default:
			return cli_usage_exit(opt, usage);
		}
	}
	/* Everything left follows "--" (getopt stops there and at the first
	 * non-option, which must then be a mistake). */
	if (optind < argc && strcmp(argv[optind - 1], "--") != 0) {
		cli_error("unexpected argument '%s': QEMU arguments go after --, e.g. `vfio-apple run -- -nographic`",
			  argv[optind]);
		return 2;
	}
	demo = optind == argc;
	if (!nspecs)
		specs[nspecs++] = l.device = "sim:nvme,size=256M,dart=apple";
	for (size_t i = 0; i < nspecs; i++) {
		if (device_spec_check(specs[i], err, sizeof(err)) < 0) {
			cli_error("%s", err);
			return 2;
		}
	}
	if (demo && nspecs > 1) {
		cli_error("the demo takes one device; for several, give QEMU arguments after -- (see --help)");
		return 2;
	}
	l.slots = (unsigned)(slots > 0 ? slots : nspecs > LAUNCH_SLOTS_DEFAULT ? (long)nspecs : LAUNCH_SLOTS_DEFAULT);
	if (nspecs > l.slots) {
		cli_error("%zu devices need %zu slots: raise --slots", nspecs, nspecs);
		return 2;
	}
	if (!launch_memory_valid(l.memory)) {
		cli_error("bad --memory '%s': give a size such as 512M or 2G", l.memory);
		return 2;
	}
	/* Shareable RAM is vfio-user's need; in-process QEMU owns plain RAM. */
	if (!demo && l.mode == LAUNCH_VFIO_USER && qemu_args_check(argc - optind, argv + optind, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		return 2;
	}
	if (socket_paths_from_dir(&l.sockets, dir) < 0 ||
	    (size_t)snprintf(l.qmp, sizeof(l.qmp), "%s/qmp.sock", dir) >= sizeof(l.qmp)) {
		cli_error("socket directory %s is too long for a UNIX socket path: choose a shorter --socket-dir", dir);
		return 2;
	}
	if (proc_signals_init() < 0) {
		cli_error("cannot install signal handlers: %s", strerror(errno));
		return 1;
	}
	if (demo) {
#ifdef __linux__
		l.slots = 0; /* the demo's fixed layout */
		return demo_run(&l, &demo_opts);
#else
		cli_error("the simulated demo runs on Linux; on macOS give QEMU arguments after -- "
			  "(see docs/macos.md)");
		return 2;
#endif
	}
	if (l.mode == LAUNCH_IN_PROCESS)
		ret = launch_find_inprocess_qemu(demo_opts.qemu_path, NULL, &l.qemu_bin, err, sizeof(err));
	else
		ret = launch_find_qemu(demo_opts.qemu_path, true, &l.qemu_bin, err, sizeof(err));
	if (ret < 0) {
		cli_error("%s", err);
		return 1;
	}
	return vm_run(&l, specs, nspecs, argc - optind, argv + optind);
}
