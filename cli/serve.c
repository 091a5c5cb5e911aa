// SPDX-License-Identifier: MIT
/* `vfio-apple serve`: the broker in the foreground. */
#include "cli.h"
#include "log.h"
#include "unix_socket.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifdef VFA_HAVE_DARWIN
#include "darwin_backend.h"
#endif
#ifdef VFA_HAVE_BROKER
#include "broker.h"
#endif

static void usage(FILE *out)
{
	fputs("Usage: vfio-apple serve [options]\n"
	      "\n"
	      "Serve one host PCI function and its apple-dma companion to a VMM over\n"
	      "vfio-user, plus a control socket for `vfio-apple status`.  Stays in the\n"
	      "foreground; SIGINT, SIGTERM, SIGHUP or SIGQUIT releases every DMA mapping\n"
	      "and exits 0.  The socket directory must be the caller's, mode 0700 and no\n"
	      "symlink (it is created so); only the caller's uid or root may connect.\n"
	      "\n"
	      "  -d, --device SPEC             the host device (default sim:nvme):\n"
	      "                                  sim:nvme[,size=256M][,dart=apple|identity][,backing=FILE]\n"
	      "                                    [,seed=N][,max_bytes=B][,max_mappings=N][,msi=on|off]\n"
	      "                                  sim-dext:nvme[,...]   (Mac backend over the dext model)\n"
	      "                                  BB:DD.F[@HOSTROOT]    (macOS: a function bound to the dext;\n"
	      "                                                        `vfio-apple list` shows them)\n"
	      "  -s, --socket-dir DIR          where the sockets go (default /run/vfio-apple for root,\n"
	      "                                else $XDG_RUNTIME_DIR/vfio-apple): passthrough.sock,\n"
	      "                                companion.sock, control.sock\n"
	      "      --passthrough-socket PATH the function's vfio-user socket\n"
	      "      --companion-socket PATH   the companion's vfio-user socket\n"
	      "      --control-socket PATH     the status socket\n"
	      "      --no-companion            serve the function alone (guests then need dart=identity)\n"
	      "  -g, --guest-addr BB:DD.F      the function's address in the guest, which the\n"
	      "                                companion reports as MANAGED_BDF (default 00:05.0)\n"
	      "      --max-entries N           entries per companion doorbell (default 4096)\n"
	      "      --prefer-msi              offer the guest MSI, not MSI-X, when the function has\n"
	      "                                both (QEMU 10.1 to 11.1 abort when a vfio-user-pci\n"
	      "                                with MSI-X is hot-unplugged; `run` sets it)\n"
	      "  -l, --log-level LEVEL         error, warn (default), info or debug\n"
	      "  -h, --help                    this text\n"
	      "\n"
	      "In QEMU (>= 10.1), with guest RAM from memory-backend-memfd,share=on:\n"
	      "  -device '{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"DIR/passthrough.sock\"},\"addr\":\"0x5\"}'\n"
	      "  -device '{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"DIR/companion.sock\"},\"addr\":\"0x6\",\n"
	      "            \"x-no-posted-writes\":true}'\n"
	      "The companion needs x-no-posted-writes: a guest's DOORBELL write must not return\n"
	      "before the batch is done (guest drivers written for the reference never read\n"
	      "STATUS); the broker warns when it sees a posted doorbell.  The passthrough\n"
	      "function keeps posted writes (faster doorbells).\n"
	      "`vfio-apple run` does all of this for you.\n",
	      out);
}

int cmd_serve(int argc, char **argv)
{
	enum { OPT_PT = 256, OPT_COMP, OPT_CTL, OPT_NO_COMP, OPT_MAX, OPT_PREFER_MSI };
	static const struct option options[] = {
		{ "device", required_argument, NULL, 'd' },
		{ "socket-dir", required_argument, NULL, 's' },
		{ "passthrough-socket", required_argument, NULL, OPT_PT },
		{ "companion-socket", required_argument, NULL, OPT_COMP },
		{ "control-socket", required_argument, NULL, OPT_CTL },
		{ "no-companion", no_argument, NULL, OPT_NO_COMP },
		{ "guest-addr", required_argument, NULL, 'g' },
		{ "max-entries", required_argument, NULL, OPT_MAX },
		{ "prefer-msi", no_argument, NULL, OPT_PREFER_MSI },
		{ "log-level", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *device = "sim:nvme";
	const char *pt_sock = NULL, *comp_sock = NULL, *ctl_sock = NULL;
	bool prefer_msi = false;
	const char *guest_addr = "00:05.0";
	bool companion = true;
	long max_entries = 0;
	int log_level = VFA_LOG_WARN;
	struct socket_paths paths;
	char dir[256], err[CLI_ERR_LEN];
	uint8_t bus, devfn;
	int opt;

	socket_paths_default_dir(dir, sizeof(dir));
	while ((opt = getopt_long(argc, argv, "d:s:g:l:h", options, NULL)) != -1) {
		switch (opt) {
		case 'd':
			device = optarg;
			break;
		case 's':
			snprintf(dir, sizeof(dir), "%s", optarg);
			break;
		case OPT_PT:
			pt_sock = optarg;
			break;
		case OPT_COMP:
			comp_sock = optarg;
			break;
		case OPT_CTL:
			ctl_sock = optarg;
			break;
		case OPT_NO_COMP:
			companion = false;
			break;
		case OPT_PREFER_MSI:
			prefer_msi = true;
			break;
		case 'g':
			guest_addr = optarg;
			break;
		case OPT_MAX:
			if (cli_parse_number(optarg, 0, 1, 65536, &max_entries) < 0) {
				cli_error("bad --max-entries '%s': give a count from 1 to 65536", optarg);
				return 2;
			}
			break;
		case 'l':
			log_level = cli_parse_log_level(optarg);
			if (log_level < 0)
				return 2;
			break;
		default:
			return cli_usage_exit(opt, usage);
		}
	}
	if (cli_no_operands("serve", argc, argv, optind))
		return 2;
	if (device_spec_check(device, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		return 2;
	}
	if (guest_addr_parse(guest_addr, &bus, &devfn) < 0) {
		cli_error("bad --guest-addr '%s': write BB:DD.F in hex, e.g. 00:05.0 (QEMU addr 0x5)", guest_addr);
		return 2;
	}
	if (socket_paths_from_dir(&paths, dir) < 0) {
		cli_error("socket directory %s is too long for a UNIX socket path: choose a shorter --socket-dir", dir);
		return 2;
	}
	if (!pt_sock)
		pt_sock = paths.passthrough;
	if (!comp_sock)
		comp_sock = paths.companion;
	if (!ctl_sock)
		ctl_sock = paths.control;
	/* Sockets (and anything else) are private to us from here on. */
	umask(077);
	/* Owned by us, 0700, no symlink: another user must not plant sockets. */
	if ((strcmp(pt_sock, paths.passthrough) == 0 || strcmp(comp_sock, paths.companion) == 0 ||
	     strcmp(ctl_sock, paths.control) == 0) &&
	    vfa_socket_dir_prepare(dir, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		return 1;
	}
	{
		/* The control socket first: probing a live broker's vfio-user
		 * socket would look like a VMM attaching and leaving. */
		const char *const socks[] = { ctl_sock, pt_sock, companion ? comp_sock : NULL };

		for (size_t i = 0; i < 3; i++) {
			if (socks[i] && socket_path_prepare(socks[i], err, sizeof(err)) < 0) {
				cli_error("%s", err);
				return 1;
			}
		}
	}
	vfa_log_set_level((enum vfa_log_level)log_level);

#ifdef VFA_HAVE_BROKER
	{
		struct broker_config cfg = {
			.device_spec = device,
			.passthrough_socket = pt_sock,
			.companion_socket = companion ? comp_sock : NULL,
			.control_socket = ctl_sock,
			.passthrough_bus = bus,
			.passthrough_devfn = devfn,
			.companion_max_entries = (uint32_t)max_entries,
			.prefer_msi = prefer_msi,
		};

#ifdef VFA_HAVE_DARWIN
		/* Guest RAM this broker gets from QEMU is copy-on-write for the
		 * dext: say at start which path works on a Mac. */
		if (strncmp(device, "sim", 3) != 0)
			darwin_log_serve_note();
#endif
		return broker_run(&cfg);
	}
#else
	cli_error("this vfio-apple was built without the broker (broker/ was not in the build): "
		  "rebuild from a tree that has it");
	return 1;
#endif
}
