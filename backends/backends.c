// SPDX-License-Identifier: MIT
/* host_device_open(): from the user's device string to a backend. */
#include "backends.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_nvme.h"
#if defined(VFA_HAVE_DEXT_MODEL)
#include "dext_model_sim.h"
#endif
#if defined(VFA_HAVE_DARWIN)
#include "darwin_backend.h"
#endif

#define SIM_USAGE "sim:nvme[,size=64M|1G|BYTES][,dart=apple|identity][,backing=PATH][,seed=N]" \
	"[,max_bytes=BYTES][,max_mappings=N][,msi=on|off]"

/* "64M", "1G", "4096", "512K": bytes, or false. */
static bool parse_size(const char *s, uint64_t *out)
{
	char *end;
	uint64_t v, mult = 1;

	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return false;
	switch (*end) {
	case 'K': case 'k': mult = 1ull << 10; end++; break;
	case 'M': case 'm': mult = 1ull << 20; end++; break;
	case 'G': case 'g': mult = 1ull << 30; end++; break;
	case 'T': case 't': mult = 1ull << 40; end++; break;
	default: break;
	}
	if (*end != '\0' || (v && mult > UINT64_MAX / v))
		return false;
	*out = v * mult;
	return true;
}

/* open_device: sim_nvme_open, or dext_model_open_sim for "sim-dext:" (same options). */
static struct host_device *open_sim(const char *spec, const char *opts,
				    struct host_device *(*open_device)(const struct sim_nvme_config *, char *, size_t),
				    char *err, size_t errlen)
{
	struct sim_nvme_config cfg = { 0 };
	struct host_device *hd = NULL;
	char *copy = strdup(opts);
	char *save = NULL;

	if (!copy) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		const char *val = eq ? eq + 1 : "";
		uint64_t num;

		if (eq)
			*eq = '\0';
		if (!eq || !*val) {
			snprintf(err, errlen, "device \"%s\": option \"%s\" needs a value; expected " SIM_USAGE, spec, tok);
			goto out;
		}
		if (!strcmp(tok, "size")) {
			if (!parse_size(val, &num) || num == 0) {
				snprintf(err, errlen, "device \"%s\": size \"%s\" is not a size like 64M, 1G or 1048576",
					 spec, val);
				goto out;
			}
			cfg.size = num;
		} else if (!strcmp(tok, "dart")) {
			if (!strcmp(val, "apple")) {
				cfg.dart.identity = false;
			} else if (!strcmp(val, "identity")) {
				cfg.dart.identity = true;
			} else {
				snprintf(err, errlen, "device \"%s\": dart=%s: use dart=apple or dart=identity", spec, val);
				goto out;
			}
		} else if (!strcmp(tok, "msi")) {
			if (strcmp(val, "on") != 0 && strcmp(val, "off") != 0) {
				snprintf(err, errlen, "device \"%s\": msi=%s: use msi=on or msi=off", spec, val);
				goto out;
			}
			cfg.no_msi = !strcmp(val, "off");
		} else if (!strcmp(tok, "backing")) {
			cfg.backing = val;
		} else if (!strcmp(tok, "seed")) {
			if (!parse_size(val, &num)) {
				snprintf(err, errlen, "device \"%s\": seed \"%s\" is not a number", spec, val);
				goto out;
			}
			cfg.dart.seeded = true;
			cfg.dart.seed = num;
		} else if (!strcmp(tok, "max_bytes")) {
			if (!parse_size(val, &num) || num == 0) {
				snprintf(err, errlen, "device \"%s\": max_bytes \"%s\" is not a size like 1536M", spec, val);
				goto out;
			}
			cfg.dart.max_bytes = num;
		} else if (!strcmp(tok, "max_mappings")) {
			if (!parse_size(val, &num) || num == 0 || num > UINT32_MAX) {
				snprintf(err, errlen, "device \"%s\": max_mappings \"%s\" is not a count from 1 to %u",
					 spec, val, UINT32_MAX);
				goto out;
			}
			cfg.dart.max_mappings = (uint32_t)num;
		} else {
			snprintf(err, errlen, "device \"%s\": unknown option \"%s\"; expected " SIM_USAGE, spec, tok);
			goto out;
		}
	}
	hd = open_device(&cfg, err, errlen);
out:
	free(copy);
	return hd;
}

struct host_device *host_device_open(const char *spec, char *err, size_t errlen)
{
	if (!spec || !*spec) {
		snprintf(err, errlen, "no device given; use " SIM_USAGE " (or BB:DD.F on macOS)");
		return NULL;
	}
	if (!strcmp(spec, "sim:nvme"))
		return open_sim(spec, "", sim_nvme_open, err, errlen);
	if (!strncmp(spec, "sim:nvme,", 9))
		return open_sim(spec, spec + 9, sim_nvme_open, err, errlen);
	if (!strncmp(spec, "sim:", 4)) {
		snprintf(err, errlen, "device \"%s\": the simulator offers only \"nvme\"; use " SIM_USAGE, spec);
		return NULL;
	}

	/* ---- DARWIN: "sim-dext:..." and "BB:DD.F". ---- */
	if (!strcmp(spec, "sim-dext:nvme") || !strncmp(spec, "sim-dext:nvme,", 14)) {
#if defined(VFA_HAVE_DEXT_MODEL)
		/* The darwin backend over the dext TEST MODEL over the simulated NVMe. */
		return open_sim(spec, spec[13] ? spec + 14 : "", dext_model_open_sim, err, errlen);
#else
		snprintf(err, errlen, "device \"%s\": sim-dext needs the dext test model (Linux, meson -Ddext_model=true)",
			 spec);
		return NULL;
#endif
	}
	if (!strncmp(spec, "sim-dext:", 9)) {
		snprintf(err, errlen, "device \"%s\": the dext model offers only \"nvme\"; use sim-dext:nvme[,options of sim:]",
			 spec);
		return NULL;
	}
	if (strlen(spec) >= 7 && spec[2] == ':' && spec[5] == '.') {
#if defined(VFA_HAVE_DARWIN)
		return darwin_open(spec, err, errlen);
#else
		snprintf(err, errlen,
			 "device \"%s\": a PCI function (BB:DD.F) needs macOS with the VFIOUserPCIDriver dext; "
			 "here use " SIM_USAGE " or sim-dext:nvme[,...]", spec);
		return NULL;
#endif
	}


	snprintf(err, errlen, "device \"%s\" not understood; use " SIM_USAGE, spec);
	return NULL;
}
