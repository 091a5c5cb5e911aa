// SPDX-License-Identifier: MIT
/* Pure helpers of the vfio-apple command: argument checks and formatting. */
#include "cli.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

static void vsay(const char *fmt, va_list ap)
{
	fputs("vfio-apple: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void cli_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
}

void cli_note(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
}

int cli_usage_exit(int opt, void (*usage)(FILE *out))
{
	if (opt == 'h') {
		usage(stdout);
		return 0;
	}
	usage(stderr);
	return 2;
}

int cli_no_operands(const char *command, int argc, char **argv, int first_operand)
{
	if (first_operand >= argc)
		return 0;
	cli_error("%s takes no arguments (got '%s'); see `vfio-apple %s --help`", command, argv[first_operand],
		  command);
	return 2;
}

int cli_parse_number(const char *text, int base, long min, long max, long *out)
{
	char *end;
	long value;

	errno = 0;
	value = strtol(text, &end, base);
	if (errno || end == text || *end || value < min || value > max)
		return -EINVAL;
	*out = value;
	return 0;
}

int cli_parse_log_level(const char *text)
{
	int level = vfa_log_parse_level(text);

	if (level < 0)
		cli_error("bad --log-level '%s': use error, warn, info or debug", text);
	return level;
}

static int fail(char *err, size_t errlen, int ret, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int ret, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return ret;
}

/* "256M", "1G", "4096": a positive size with an optional K/M/G/T suffix. */
static bool size_valid(const char *text, size_t len)
{
	uint64_t value = 0;
	size_t i = 0;

	while (i < len && isdigit((unsigned char)text[i])) {
		unsigned digit = (unsigned)(text[i] - '0');

		if (value > (UINT64_MAX - digit) / 10)
			return false;
		value = value * 10 + digit;
		i++;
	}
	if (i == 0 || value == 0)
		return false;
	if (i == len)
		return true;
	if (i + 1 != len)
		return false;
	return strchr("kKmMgGtT", text[i]) != NULL;
}

static bool hex_field(const char *text, size_t len, unsigned max, unsigned *out)
{
	unsigned value = 0;

	if (len == 0 || len > 4)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (!isxdigit((unsigned char)text[i]))
			return false;
		value = value * 16 + (unsigned)(isdigit((unsigned char)text[i]) ? text[i] - '0'
									 : tolower((unsigned char)text[i]) - 'a' + 10);
	}
	if (value > max)
		return false;
	*out = value;
	return true;
}

/* "BB:DD.F" into its parts; false if the syntax or a range is wrong. */
static bool bdf_parse(const char *text, unsigned *bus, unsigned *dev, unsigned *fn)
{
	const char *colon = strchr(text, ':');
	const char *dot = strrchr(text, '.');

	if (!colon || !dot || dot < colon || strchr(colon + 1, ':'))
		return false;
	return hex_field(text, (size_t)(colon - text), 0xff, bus) &&
	       hex_field(colon + 1, (size_t)(dot - colon - 1), 0x1f, dev) &&
	       hex_field(dot + 1, strlen(dot + 1), 7, fn) && strlen(dot + 1) == 1;
}

/* "BB:DD.F" or "BB:DD.F@HOSTROOT" (the root breaks ties between
 * Thunderbolt root ports that reuse a bus number; see docs/macos.md). */
static bool host_function_syntax(const char *spec, unsigned *bus, unsigned *dev, unsigned *fn)
{
	const char *at = strchr(spec, '@');
	char bdf[16];

	if (!at)
		return bdf_parse(spec, bus, dev, fn);
	if ((size_t)(at - spec) >= sizeof(bdf) || at[1] == '\0')
		return false;
	memcpy(bdf, spec, (size_t)(at - spec));
	bdf[at - spec] = '\0';
	return bdf_parse(bdf, bus, dev, fn);
}

static const char device_forms[] =
	"sim:nvme[,size=256M][,dart=apple|identity][,backing=FILE], sim-dext:nvme[,...] or BB:DD.F[@HOSTROOT]";

int device_spec_check(const char *spec, char *err, size_t errlen)
{
	const char *kind;
	unsigned bus, dev, fn;

	if (!spec || !*spec)
		return fail(err, errlen, -EINVAL, "empty device string: use %s", device_forms);
	if (strncmp(spec, "sim:", 4) == 0)
		kind = spec + 4;
	else if (strncmp(spec, "sim-dext:", 9) == 0)
		kind = spec + 9;
	else if (host_function_syntax(spec, &bus, &dev, &fn)) {
#ifdef __APPLE__
		return 0;
#else
		return fail(err, errlen, -EINVAL,
			    "device '%s' is a host PCI function, which needs macOS and the VFIOUserPCIDriver dext; "
			    "on Linux use sim:nvme (see `vfio-apple list`)",
			    spec);
#endif
	} else
		return fail(err, errlen, -EINVAL, "bad device string '%s': use %s", spec, device_forms);

	size_t kind_len = strcspn(kind, ",");
	if (kind_len != 4 || strncmp(kind, "nvme", 4) != 0)
		return fail(err, errlen, -EINVAL,
			    "unknown simulated device '%.*s' in '%s': the simulator has 'nvme' (see `vfio-apple list`)",
			    (int)kind_len, kind, spec);

	for (const char *opt = kind + kind_len; *opt == ',';) {
		const char *name = opt + 1;
		size_t len = strcspn(name, ",");
		const char *eq = memchr(name, '=', len);
		size_t name_len = eq ? (size_t)(eq - name) : len;
		const char *value = eq ? eq + 1 : NULL;
		size_t value_len = eq ? len - name_len - 1 : 0;

		if (!eq || value_len == 0)
			return fail(err, errlen, -EINVAL, "bad option '%.*s' in device '%s': write NAME=VALUE",
				    (int)len, name, spec);
		if (name_len == 4 && strncmp(name, "size", 4) == 0) {
			if (!size_valid(value, value_len))
				return fail(err, errlen, -EINVAL,
					    "bad size '%.*s' in device '%s': write bytes or a number with K, M or G (size=256M)",
					    (int)value_len, value, spec);
		} else if (name_len == 4 && strncmp(name, "dart", 4) == 0) {
			if (!((value_len == 5 && strncmp(value, "apple", 5) == 0) ||
			      (value_len == 8 && strncmp(value, "identity", 8) == 0)))
				return fail(err, errlen, -EINVAL,
					    "bad dart mode '%.*s' in device '%s': use dart=apple or dart=identity",
					    (int)value_len, value, spec);
		} else if (name_len == 3 && strncmp(name, "msi", 3) == 0) {
			if (!((value_len == 2 && strncmp(value, "on", 2) == 0) ||
			      (value_len == 3 && strncmp(value, "off", 3) == 0)))
				return fail(err, errlen, -EINVAL, "bad msi '%.*s' in device '%s': use msi=on or msi=off",
					    (int)value_len, value, spec);
		} else if (!(name_len == 7 && strncmp(name, "backing", 7) == 0) &&
			   !(name_len == 4 && strncmp(name, "seed", 4) == 0) &&
			   !(name_len == 9 && strncmp(name, "max_bytes", 9) == 0) &&
			   !(name_len == 12 && strncmp(name, "max_mappings", 12) == 0)) {
			/* (the backend checks the values of these when it opens the device) */
			return fail(err, errlen, -EINVAL,
				    "unknown option '%.*s' in device '%s': the options are size=, dart=, backing=, "
				    "seed=, max_bytes=, max_mappings=, msi=",
				    (int)name_len, name, spec);
		}
		opt = name + len;
	}
	return 0;
}

int guest_addr_parse(const char *text, uint8_t *bus, uint8_t *devfn)
{
	unsigned b = 0, d, f;
	char full[16];

	if (!text || strlen(text) > 8)
		return -EINVAL;
	if (!strchr(text, ':')) { /* "DD.F": bus 0 */
		snprintf(full, sizeof(full), "00:%s", text);
		text = full;
	}
	if (!bdf_parse(text, &b, &d, &f))
		return -EINVAL;
	*bus = (uint8_t)b;
	*devfn = (uint8_t)(d << 3 | f);
	return 0;
}

int qemu_version_parse(const char *text, unsigned *major, unsigned *minor, unsigned *micro)
{
	const char *p = text ? strstr(text, "version ") : NULL;
	unsigned long parts[3] = { 0, 0, 0 };
	int n = 0;

	if (!p)
		return -EINVAL;
	p += strlen("version ");
	while (n < 3 && isdigit((unsigned char)*p)) {
		char *end;

		parts[n++] = strtoul(p, &end, 10);
		if (parts[n - 1] > 9999)
			return -EINVAL;
		p = end;
		if (*p != '.')
			break;
		p++;
	}
	if (n < 2)
		return -EINVAL;
	*major = (unsigned)parts[0];
	*minor = (unsigned)parts[1];
	*micro = (unsigned)parts[2];
	return 0;
}

bool qemu_version_ok(unsigned major, unsigned minor)
{
	return major > QEMU_MIN_MAJOR || (major == QEMU_MIN_MAJOR && minor >= QEMU_MIN_MINOR);
}

/* QEMU accepts both "-opt" and "--opt". */
static bool is_option(const char *arg, const char *name)
{
	if (arg[0] == '-' && arg[1] == '-')
		arg++;
	return strcmp(arg, name) == 0;
}

static bool shared_on(const char *value)
{
	return strstr(value, "share=on") || strstr(value, "share=true") || strstr(value, "share=yes") ||
	       strstr(value, "\"share\":true") || strstr(value, "\"share\": true");
}

int qemu_args_check(int argc, char *const argv[], char *err, size_t errlen)
{
	static const char why[] = "vfio-user needs guest RAM shared with the broker; the launcher adds "
				  "a shareable memory-backend-memfd";

	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i];
		const char *value = i + 1 < argc ? argv[i + 1] : "";

		if (is_option(arg, "-m"))
			return fail(err, errlen, -EINVAL,
				    "refusing QEMU option -m: %s; set the size with `vfio-apple run --memory SIZE`",
				    why);
		if (is_option(arg, "-mem-path"))
			return fail(err, errlen, -EINVAL,
				    "refusing QEMU option -mem-path: %s; remove it", why);
		if ((is_option(arg, "-machine") || is_option(arg, "-M")) && strstr(value, "memory-backend="))
			return fail(err, errlen, -EINVAL,
				    "refusing '-machine %s': %s and selects it itself; remove memory-backend=",
				    value, why);
		if (is_option(arg, "-object") && strstr(value, "memory-backend-")) {
			if (strstr(value, "memory-backend-ram"))
				return fail(err, errlen, -EINVAL,
					    "guest RAM not shareable: '-object %s' is private memory; %s "
					    "(for extra backends use memory-backend-memfd with share=on)",
					    value, why);
			if (!shared_on(value))
				return fail(err, errlen, -EINVAL,
					    "guest RAM not shareable: '-object %s' lacks share=on; add share=on",
					    value);
		}
	}
	return 0;
}

void format_bytes(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = { "KiB", "MiB", "GiB", "TiB" };
	double value = (double)bytes;
	int unit = -1;

	if (bytes < 1024) {
		snprintf(buf, len, "%" PRIu64 " B", bytes);
		return;
	}
	while (value >= 1024.0 && unit < 3) {
		value /= 1024.0;
		unit++;
	}
	snprintf(buf, len, "%.1f %s", value, units[unit]);
}

void socket_paths_default_dir(char *buf, size_t len)
{
	const char *runtime = getenv("XDG_RUNTIME_DIR");

	if (geteuid() == 0)
		snprintf(buf, len, "/run/vfio-apple");
	else if (runtime && *runtime == '/')
		snprintf(buf, len, "%s/vfio-apple", runtime);
	else
		snprintf(buf, len, "/tmp/vfio-apple-%u", (unsigned)geteuid());
}

int socket_paths_from_dir(struct socket_paths *paths, const char *dir)
{
	struct sockaddr_un addr;

	/* Refuse what bind() would refuse later: sun_path holds 108 bytes on
	 * Linux, 104 on macOS. */
	if (strlen(dir) + strlen("/passthrough.sock") >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	snprintf(paths->dir, sizeof(paths->dir), "%s", dir);
	snprintf(paths->passthrough, sizeof(paths->passthrough), "%s/passthrough.sock", dir);
	snprintf(paths->companion, sizeof(paths->companion), "%s/companion.sock", dir);
	snprintf(paths->control, sizeof(paths->control), "%s/control.sock", dir);
	return 0;
}
