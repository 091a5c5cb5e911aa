/* SPDX-License-Identifier: MIT */
/*
 * The `vfio-apple` command: subcommands and the small pure helpers they
 * share (argument checks, QEMU version, sockets, pci.ids), kept apart from
 * main() so that tests/cli can call them directly.
 */
#ifndef VFA_CLI_H
#define VFA_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct json_object;

#define CLI_ERR_LEN 512

/* The QEMU release that brought the vfio-user-pci client. */
#define QEMU_MIN_MAJOR 10
#define QEMU_MIN_MINOR 1

/* Subcommands: each returns the process exit code. */
int cmd_serve(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_attach(int argc, char **argv);
int cmd_detach(int argc, char **argv);
int cmd_sim(int argc, char **argv);

/* Print "vfio-apple: <message>" on stderr, one line. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same for progress a person at the terminal follows (vfio-apple run). */
void cli_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Option parsing shared by the subcommands.  cli_usage_exit ends each
 * option switch: for -h/--help it prints usage on stdout and returns 0;
 * for anything else (getopt has already named the bad option) usage on
 * stderr and 2.  cli_no_operands returns 0 when argv has nothing past
 * optind, else says so and returns 2.  Both return exit codes.
 */
int cli_usage_exit(int opt, void (*usage)(FILE *out));
int cli_no_operands(const char *command, int argc, char **argv, int first_operand);

/*
 * A whole number in [min, max] (min >= 0) in the given strtol base (0: also
 * 0x hex and 0 octal).  Returns 0, or -EINVAL for a sign, junk, overflow or
 * a value out of range.
 */
int cli_parse_number(const char *text, int base, long min, long max, long *out);

/* --log-level's argument as a VFA_LOG_* level, or -1 after saying why. */
int cli_parse_log_level(const char *text);

/*
 * Check the syntax of a device string (backends/backends.h lists the forms).
 * Returns 0, or -EINVAL with a one-line reason in err.
 */
int device_spec_check(const char *spec, char *err, size_t errlen);

/*
 * Parse a guest PCI address "BB:DD.F" or "DD.F" (hex; bus 0 by default)
 * into bus and devfn = (slot << 3) | function.  Returns 0 or -EINVAL.
 */
int guest_addr_parse(const char *text, uint8_t *bus, uint8_t *devfn);

/*
 * Find "version X.Y[.Z]" in the output of `qemu-system-* --version`.
 * Returns 0 and fills major/minor/micro, or -EINVAL.
 */
int qemu_version_parse(const char *text, unsigned *major, unsigned *minor, unsigned *micro);
bool qemu_version_ok(unsigned major, unsigned minor);

/*
 * Check the QEMU arguments a user passes after `--` against what vfio-user
 * needs: guest RAM must stay the shareable backend the launcher adds.
 * Returns 0, or -EINVAL with a one-line reason in err.
 */
int qemu_args_check(int argc, char *const argv[], char *err, size_t errlen);

/*
 * Prepare a UNIX socket path for a server: 0 if free (a stale socket left by
 * a dead process is removed), -EADDRINUSE if a live process accepts on it,
 * -ENOTSOCK if something else is there, other -errno otherwise; err says
 * what to do.
 */
int socket_path_prepare(const char *path, char *err, size_t errlen);

/*
 * Ask the broker behind a control socket for its state ("status\n", one
 * JSON line back).  Returns the parsed object (json_object_put it) or NULL
 * with a one-line reason in err.  timeout_ms bounds the whole exchange.
 */
struct json_object *control_query(const char *path, int timeout_ms, char *err, size_t errlen);
/* Connect to a UNIX stream socket: close-on-exec, SIGPIPE off where the
 * platform needs it (common/compat.h).  fd, or -errno (-ENAMETOOLONG for a
 * path that does not fit). */
int cli_unix_connect(const char *path);
/* The same with another request line (newline included), e.g. "sim-vanish\n". */
struct json_object *control_request(const char *path, const char *request, int timeout_ms, char *err, size_t errlen);

/* Human table of a status object (fields missing from it print as "-"). */
void status_print(FILE *out, struct json_object *status);

/*
 * Fields of a status object, status.section.name (section NULL: top level),
 * for the tables of `status` and `status --qmp`: a number (false when
 * missing), a number or byte size as text and a string, "-" when missing.
 */
bool status_get_u64(struct json_object *obj, const char *section, const char *name, uint64_t *out);
const char *status_num(struct json_object *obj, const char *section, const char *name, char *buf, size_t len);
const char *status_bytes(struct json_object *obj, const char *section, const char *name, char *buf, size_t len);
const char *status_text(struct json_object *obj, const char *section, const char *name);

/* Sizes for people: "1.5 GiB", "640.0 KiB", "512 B". */
void format_bytes(uint64_t bytes, char *buf, size_t len);

/* Names from pci.ids (empty strings when not found). */
struct pci_names {
	char vendor[128];
	char device[160];
	char class_name[128]; /* subclass name when known, else the base class */
};

/*
 * Look a function up in a pci.ids file (the pciutils format).  Returns 0
 * (names that were found are filled, the rest empty), or -errno when the
 * file cannot be read.
 */
int pciids_lookup(const char *path, uint16_t vendor, uint16_t device, uint32_t class_code,
		  struct pci_names *out);
/* The first pci.ids that exists among the usual places, or NULL. */
const char *pciids_default_path(void);

/* Socket paths the subcommands agree on. */
struct socket_paths {
	char dir[256];
	char passthrough[320];
	char companion[320];
	char control[320];
};

/*
 * Default socket directory: /run/vfio-apple for root, else
 * $XDG_RUNTIME_DIR/vfio-apple, else /tmp/vfio-apple-UID.
 */
void socket_paths_default_dir(char *buf, size_t len);
/* Fill the three paths from dir; returns -ENAMETOOLONG if they don't fit. */
int socket_paths_from_dir(struct socket_paths *paths, const char *dir);

#endif
