// SPDX-License-Identifier: MIT
/*
 * Names from pci.ids (pciutils' format), for `vfio-apple list`:
 *   vvvv  Vendor name
 *   <TAB>dddd  Device name
 *   <TAB><TAB>ssss ssss  Subsystem name
 *   C cc  Class name
 *   <TAB>ss  Subclass name
 *   <TAB><TAB>pp  Programming interface name
 * '#' starts a comment.  One pass per lookup: list shows a few functions.
 */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Parse exactly `digits` hex digits followed by whitespace; -1 if not. */
static long hex_id(const char *p, int digits)
{
	long value = 0;

	for (int i = 0; i < digits; i++) {
		if (!isxdigit((unsigned char)p[i]))
			return -1;
		value = value * 16 + (isdigit((unsigned char)p[i]) ? p[i] - '0' : tolower((unsigned char)p[i]) - 'a' + 10);
	}
	if (p[digits] != ' ' && p[digits] != '\t')
		return -1;
	return value;
}

/* The name after the id: skip blanks, drop the line end. */
static void copy_name(char *dst, size_t len, const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	size_t n = strcspn(p, "\r\n");

	if (n >= len)
		n = len - 1; /* a long name is cut, not an error */
	memcpy(dst, p, n);
	dst[n] = '\0';
}

int pciids_lookup(const char *path, uint16_t vendor, uint16_t device, uint32_t class_code,
		  struct pci_names *out)
{
	unsigned base = (class_code >> 16) & 0xff, sub = (class_code >> 8) & 0xff;
	bool in_our_vendor = false, in_our_class = false, have_sub = false;
	char line[512];
	FILE *f;

	memset(out, 0, sizeof(*out));
	f = fopen(path, "r");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (line[0] == '#' || line[0] == '\n' || line[0] == '\r')
			continue;
		if (line[0] == 'C' && line[1] == ' ') {
			in_our_vendor = false;
			in_our_class = hex_id(line + 2, 2) == (long)base;
			if (in_our_class)
				copy_name(out->class_name, sizeof(out->class_name), line + 4);
		} else if (line[0] != '\t') {
			/* A vendor line; anything else ("ffff", other sections) ends ours too. */
			in_our_class = false;
			in_our_vendor = hex_id(line, 4) == (long)vendor;
			if (in_our_vendor)
				copy_name(out->vendor, sizeof(out->vendor), line + 4);
		} else if (line[1] != '\t') {
			if (in_our_vendor && hex_id(line + 1, 4) == (long)device)
				copy_name(out->device, sizeof(out->device), line + 5);
			else if (in_our_class && !have_sub && hex_id(line + 1, 2) == (long)sub) {
				copy_name(out->class_name, sizeof(out->class_name), line + 3);
				have_sub = true;
			}
		}
	}
	fclose(f);
	return 0;
}

const char *pciids_default_path(void)
{
	static const char *const paths[] = {
		"/usr/share/misc/pci.ids",
		"/usr/share/hwdata/pci.ids",
		"/opt/homebrew/share/pci.ids", /* pciutils from Homebrew on a Mac */
		"/usr/local/share/pci.ids",
	};

	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (access(paths[i], R_OK) == 0)
			return paths[i];
	return NULL;
}
