// SPDX-License-Identifier: MIT
/*
 * Unit tests of the launcher unit (cli/launch.c: the in-process QEMU's
 * discovery and command line), the QMP client and its counters
 * (cli/qmp.c, against a fake QMP server), and common/clock.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "clock.h"
#include "cli.h"
#include "launch.h"
#include "qmp.h"

static char tmpdir[64];

static int make_tmpdir(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/vfa-launch-test.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_clock(void **state)
{
	int64_t t0 = vfa_now_ms(), t1;

	(void)state;
	usleep(50 * 1000);
	t1 = vfa_now_ms();
	assert_true(t1 - t0 >= 45);
	assert_true(t1 - t0 < 5000);
	assert_true(vfa_now_ms() >= t1);
}

/* ---- the in-process device and command line ------------------------------- */

static void test_inprocess_device(void **state)
{
	char buf[256];

	(void)state;
	assert_int_equal(launch_inprocess_device("sim:nvme,size=256M,dart=apple", true, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "vfio-apple-pci,id=vfa0,host=sim:nvme,,size=256M,,dart=apple,addr=0x5,companion-addr=0x6");
	assert_int_equal(launch_inprocess_device("01:00.0", false, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "vfio-apple-pci,id=vfa0,host=01:00.0,addr=0x5,companion=off");
	/* too small: refused, never cut (a cut host string names another device) */
	assert_int_equal(launch_inprocess_device("sim:nvme,size=256M", true, buf, 40), -E2BIG);
	assert_int_equal(launch_inprocess_device("sim:nvme,size=256M", true, buf, 60), -E2BIG);
	assert_int_equal(launch_inprocess_device("sim:nvme,size=256M", true, buf, 30), -E2BIG);
}

/* run's slots: the ports, and each device as JSON for -device and device_add. */
static void test_slot_devices(void **state)
{
	struct launch_slot_dev d = { .used = true, .id = "vfa2", .device = "sim:nvme,size=64M",
				     .passthrough = "/run/v \"x\"/vfa2/passthrough.sock",
				     .companion = "/run/v/vfa2/companion.sock" };
	char buf[1024];

	(void)state;
	assert_int_equal(launch_slot_bus(0), 1);
	assert_int_equal(launch_port_option(0, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "pcie-root-port,id=vfa-port0,bus=pcie.0,addr=0x2.0x0,chassis=64,port=0x40,multifunction=on");
	assert_int_equal(launch_port_option(7, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "pcie-root-port,id=vfa-port7,bus=pcie.0,addr=0x2.0x7,chassis=71,port=0x47");
	assert_int_equal(launch_port_option(7, buf, 20), -E2BIG);
	/* vfio-user: the function at 1 (its path JSON-escaped), the companion at 0. */
	assert_int_equal(launch_slot_device_json(LAUNCH_VFIO_USER, &d, 2, true, false, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "{\"driver\":\"vfio-user-pci\",\"id\":\"vfa2\",\"bus\":\"vfa-port2\",\"addr\":\"0.1\","
				 "\"socket\":{\"type\":\"unix\",\"path\":\"/run/v \\\"x\\\"/vfa2/passthrough.sock\"}}");
	assert_int_equal(launch_slot_device_json(LAUNCH_VFIO_USER, &d, 2, true, true, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "{\"driver\":\"vfio-user-pci\",\"id\":\"vfa2-dma\",\"bus\":\"vfa-port2\",\"addr\":\"0.0\","
				 "\"multifunction\":true,\"socket\":{\"type\":\"unix\",\"path\":\"/run/v/vfa2/companion.sock\"},"
				 "\"x-no-posted-writes\":true}");
	/* Without a companion the function is function 0. */
	assert_int_equal(launch_slot_device_json(LAUNCH_VFIO_USER, &d, 2, false, false, buf, sizeof(buf)), 0);
	assert_non_null(strstr(buf, "\"addr\":\"0.0\""));
	/* In-process: the host string is a JSON string, never options. */
	assert_int_equal(launch_slot_device_json(LAUNCH_IN_PROCESS, &d, 1, true, false, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "{\"driver\":\"vfio-apple-pci\",\"id\":\"vfa2\",\"bus\":\"vfa-port1\",\"addr\":\"0.1\","
				 "\"host\":\"sim:nvme,size=64M\",\"companion\":false}");
	assert_int_equal(launch_slot_device_json(LAUNCH_IN_PROCESS, &d, 1, true, true, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "{\"driver\":\"apple-dma-pci\",\"id\":\"vfa2-dma\",\"bus\":\"vfa-port1\",\"addr\":\"0.0\","
				 "\"multifunction\":true}");
	assert_int_equal(launch_slot_device_json(LAUNCH_VFIO_USER, &d, 2, true, true, buf, 40), -E2BIG);
	d.passthrough = NULL;
	assert_int_equal(launch_slot_device_json(LAUNCH_VFIO_USER, &d, 2, true, false, buf, sizeof(buf)), -EINVAL);
}

static void test_help_detection(void **state)
{
	(void)state;
	assert_true(launch_help_has_inprocess("Misc devices:\nname \"apple-dma-pci\", bus PCI\n"
					      "name \"vfio-apple-pci\", bus PCI, desc \"Apple PCI passthrough\"\n"));
	assert_false(launch_help_has_inprocess("name \"vfio-user-pci\", bus PCI\nname \"vfio-pci\", bus PCI\n"));
	assert_false(launch_help_has_inprocess("name \"vfio-apple-pcie\", bus PCI\n"));
	assert_false(launch_help_has_inprocess(""));
	assert_false(launch_help_has_inprocess(NULL));
}

static bool argv_has(const struct launch_argv *a, const char *arg)
{
	for (size_t i = 0; i < a->count; i++)
		if (strcmp(a->v[i], arg) == 0)
			return true;
	return false;
}

static void test_inprocess_argv(void **state)
{
	struct launch l;
	struct launch_argv a = { .count = 0 };
	char *user[] = { (char *)"-nographic", (char *)"-kernel", (char *)"bzImage" };
	static const char *const want[] = {
		"/opt/q/bin/qemu-system-x86_64", "-machine", "q35", "-m", "2G", "-device",
		"vfio-apple-pci,id=vfa0,host=sim:nvme,,size=64M,addr=0x5,companion-addr=0x6", "-qmp",
		"unix:/tmp/s/qmp.sock,server=on,wait=off", "-no-shutdown", "-nographic", "-kernel", "bzImage",
	};

	(void)state;
	memset(&l, 0, sizeof(l));
	l.mode = LAUNCH_IN_PROCESS;
	l.device = "sim:nvme,size=64M";
	l.memory = "2G";
	l.companion = true;
	l.no_shutdown = true;
	assert_int_equal(socket_paths_from_dir(&l.sockets, "/tmp/s"), 0);
	snprintf(l.qmp, sizeof(l.qmp), "/tmp/s/qmp.sock");
	snprintf(l.qemu_bin.path, sizeof(l.qemu_bin.path), "/opt/q/bin/qemu-system-x86_64");
	assert_int_equal(launch_qemu_argv(&l, 3, user, &a), 0);
	assert_int_equal(a.count, sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < a.count; i++)
		assert_string_equal(a.v[i], want[i]);
	assert_null(a.v[a.count]);
	launch_argv_free(&a);

	/* no QMP socket, no -no-shutdown, no companion: none of them appear;
	 * and never shareable RAM or vfio-user-pci in this mode */
	l.qmp[0] = '\0';
	l.no_shutdown = false;
	l.companion = false;
	assert_int_equal(launch_qemu_argv(&l, 0, NULL, &a), 0);
	assert_false(argv_has(&a, "-qmp"));
	assert_false(argv_has(&a, "-no-shutdown"));
	assert_true(argv_has(&a, "vfio-apple-pci,id=vfa0,host=sim:nvme,,size=64M,addr=0x5,companion=off"));
	for (size_t i = 0; i < a.count; i++) {
		assert_null(strstr(a.v[i], "share=on"));
		assert_null(strstr(a.v[i], "vfio-user-pci"));
	}
	launch_argv_free(&a);
}

/* ---- finding the in-process QEMU ------------------------------------------- */

/* A fake qemu-system-x86_64 that answers --version and -device help. */
static void fake_qemu(const char *path, const char *version, bool has_device)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fprintf(f,
		"#!/bin/sh\n"
		"if [ \"$1\" = --version ]; then echo 'QEMU emulator version %s'; exit 0; fi\n"
		"if [ \"$1\" = -device ] && [ \"$2\" = help ]; then\n"
		"  echo 'name \"virtio-blk-pci\", bus PCI'\n"
		"  %s\n"
		"  exit 0\n"
		"fi\n"
		"exit 1\n",
		version, has_device ? "echo 'name \"vfio-apple-pci\", bus PCI, desc \"Apple device passthrough\"'" : ":");
	fclose(f);
	assert_int_equal(chmod(path, 0755), 0);
}

static void test_find_inprocess(void **state)
{
	char cache[128], bin[192], good[192], plain[192], pathdir[128], err[CLI_ERR_LEN];
	char *old_path = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
	struct qemu_choice q;

	(void)state;
	snprintf(cache, sizeof(cache), "%s/cache", tmpdir);
	snprintf(bin, sizeof(bin), "%s/qemu-inprocess/bin", cache);
	snprintf(pathdir, sizeof(pathdir), "%s/path", tmpdir);
	assert_int_equal(system("true"), 0);
	{
		char cmd[512];

		snprintf(cmd, sizeof(cmd), "mkdir -p %s %s", bin, pathdir);
		assert_int_equal(system(cmd), 0);
	}
	snprintf(good, sizeof(good), "%s/good-qemu", tmpdir);
	snprintf(plain, sizeof(plain), "%s/plain-qemu", tmpdir);
	fake_qemu(good, "10.2.0", true);
	fake_qemu(plain, "7.2.0", false);
	setenv("VFA_CACHE", cache, 1);
	unsetenv("QEMU_BIN");
	unsetenv("QEMU_BIN_ARM");
	setenv("PATH", pathdir, 1);

	/* nothing anywhere: what was tried, and how to provide one */
	assert_int_equal(launch_find_inprocess_qemu(NULL, "qemu-system-x86_64", &q, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "no QEMU with vfio-apple-pci"));
	assert_non_null(strstr(err, "docs/qemu.md"));
	assert_non_null(strstr(err, "qemu-inprocess/bin/qemu-system-x86_64: no such executable"));
	assert_non_null(strstr(err, "no qemu-system-x86_64 on PATH"));
	assert_non_null(strstr(err, "QEMU_BIN"));

	/* on PATH, but without the devices: said so, not taken */
	{
		char p[256];

		snprintf(p, sizeof(p), "%s/qemu-system-x86_64", pathdir);
		fake_qemu(p, "7.2.0", false);
		assert_int_equal(launch_find_inprocess_qemu(NULL, NULL, &q, err, sizeof(err)), -ENOENT);
		assert_non_null(strstr(err, "QEMU 7.2.0 at"));
		assert_non_null(strstr(err, "has no vfio-apple-pci"));
		/* with the devices: taken */
		fake_qemu(p, "10.2.1", true);
		assert_int_equal(launch_find_inprocess_qemu(NULL, NULL, &q, err, sizeof(err)), 0);
		assert_string_equal(q.path, p);
		assert_int_equal(q.major * 10000 + q.minor * 100 + q.micro, 100201);
		assert_string_equal(q.in_root, "");
		fake_qemu(p, "7.2.0", false);
	}

	/* the project's default location wins over PATH */
	{
		char p[256];

		snprintf(p, sizeof(p), "%s/qemu-system-x86_64", bin);
		fake_qemu(p, "10.2.0", true);
		assert_int_equal(launch_find_inprocess_qemu(NULL, NULL, &q, err, sizeof(err)), 0);
		assert_string_equal(q.path, p);
		/* the aarch64 one is looked for under its own name */
		assert_int_equal(launch_find_inprocess_qemu(NULL, "qemu-system-aarch64", &q, err, sizeof(err)),
				 -ENOENT);
		assert_non_null(strstr(err, "QEMU_BIN_ARM"));
	}

	/* QEMU_BIN, then --qemu: that one or an error naming it */
	setenv("QEMU_BIN", plain, 1);
	assert_int_equal(launch_find_inprocess_qemu(NULL, NULL, &q, err, sizeof(err)), -ENOEXEC);
	assert_non_null(strstr(err, "has no vfio-apple-pci (from QEMU_BIN)"));
	assert_non_null(strstr(err, "docs/qemu.md"));
	setenv("QEMU_BIN", good, 1);
	assert_int_equal(launch_find_inprocess_qemu(NULL, NULL, &q, err, sizeof(err)), 0);
	assert_string_equal(q.path, good);
	setenv("QEMU_BIN_ARM", plain, 1);
	assert_int_equal(launch_find_inprocess_qemu(NULL, "qemu-system-aarch64", &q, err, sizeof(err)), -ENOEXEC);
	assert_non_null(strstr(err, "(from QEMU_BIN_ARM)"));
	assert_int_equal(launch_find_inprocess_qemu(plain, NULL, &q, err, sizeof(err)), -ENOEXEC);
	assert_non_null(strstr(err, "(from --qemu)"));
	assert_int_equal(launch_find_inprocess_qemu("/nonexistent/q", NULL, &q, err, sizeof(err)), -ENOENT);
	assert_string_equal(err, "--qemu /nonexistent/q: no such executable");
	setenv("QEMU_BIN", "/nonexistent/q", 1);
	assert_int_equal(launch_find_inprocess_qemu(NULL, NULL, &q, err, sizeof(err)), -ENOENT);
	assert_string_equal(err, "QEMU_BIN=/nonexistent/q: no such executable");
	assert_int_equal(launch_find_inprocess_qemu(good, NULL, &q, err, sizeof(err)), 0);
	assert_string_equal(q.path, good);

	unsetenv("QEMU_BIN");
	unsetenv("QEMU_BIN_ARM");
	unsetenv("VFA_CACHE");
	if (old_path)
		setenv("PATH", old_path, 1);
	free(old_path);
}

/* ---- QMP -------------------------------------------------------------------- */

/* A fake QEMU monitor: greets, wants qmp_capabilities first, answers
 * qom-list, qom-get from a table, query-status and quit; an event comes
 * before every answer.  Serves `clients` connections one after the other. */
struct prop {
	const char *path, *name, *json;
};

static const struct prop fake_props[] = {
	{ "/machine/peripheral/vfa0", "host", "\"sim:nvme,size=256M,dart=apple\"" },
	{ "/machine/peripheral/vfa0", "dart-live-mappings", "6" },
	{ "/machine/peripheral/vfa0", "dart-live-bytes", "11534336" },
	{ "/machine/peripheral/vfa0", "dart-peak-mappings", "9" },
	{ "/machine/peripheral/vfa0", "dart-peak-bytes", "12582912" },
	{ "/machine/peripheral/vfa0", "dart-faults", "0" },
	{ "/machine/peripheral/vfa0", "dart-register-failures", "1" },
	{ "/machine/peripheral/vfa0", "irqs-delivered", "1394" },
	{ "/machine/peripheral/vfa0", "resets", "2" },
	{ "/machine/peripheral/vfa0", "irqs-dropped", "0" },
	{ "/machine/peripheral/vfa0", "bar-reads", "321" },
	{ "/machine/peripheral/vfa0", "dma-stats-known", "true" },
	{ "/machine/peripheral/vfa0", "companion-path", "\"/machine/peripheral-anon/device[0]\"" },
	{ "/machine/peripheral-anon/device[0]", "doorbells", "7" },
	{ "/machine/peripheral-anon/device[0]", "map-entries", "6" },
	{ "/machine/peripheral-anon/device[0]", "unmap-entries", "3" },
	{ "/machine/peripheral-anon/device[0]", "live-ids", "5" },
	{ "/machine/peripheral-anon/device[0]", "live-bytes", "10485760" },
	{ "/machine/peripheral-anon/device[0]", "inval-batches", "0" },
	{ "/machine/peripheral-anon/device[0]", "ioerr-batches", "4" },
	/* a device that is not ours: no counters */
	{ "/machine/peripheral/other", "host", "\"x\"" },
};

static void say(int fd, const char *text)
{
	size_t len = strlen(text);

	if (write(fd, text, len) != (ssize_t)len)
		_exit(3);
}

static void fake_qmp_session(int fd, const char *run_state)
{
	char buf[4096];
	size_t used = 0;
	bool negotiated = false;

	say(fd, "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 10}}, \"capabilities\": []}}\r\n");
	for (;;) {
		char *nl;
		ssize_t n = read(fd, buf + used, sizeof(buf) - 1 - used);

		if (n <= 0)
			return;
		used += (size_t)n;
		buf[used] = '\0';
		while ((nl = strchr(buf, '\n')) != NULL) {
			struct json_object *msg, *cmd, *args, *v;
			const char *name;
			char out[1024];

			*nl = '\0';
			msg = json_tokener_parse(buf);
			used -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, used + 1);
			if (!msg || !json_object_object_get_ex(msg, "execute", &cmd))
				_exit(4);
			name = json_object_get_string(cmd);
			say(fd, "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"RTC_CHANGE\", \"data\": {}}\r\n");
			if (!negotiated && strcmp(name, "qmp_capabilities") != 0) {
				say(fd, "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Expecting capabilities negotiation with 'qmp_capabilities'\"}}\r\n");
			} else if (strcmp(name, "qmp_capabilities") == 0) {
				negotiated = true;
				say(fd, "{\"return\": {}}\r\n");
			} else if (strcmp(name, "qom-list") == 0) {
				const char *path = json_object_object_get_ex(msg, "arguments", &args) &&
							   json_object_object_get_ex(args, "path", &v)
						   ? json_object_get_string(v)
						   : "";

				if (strcmp(path, "/machine/peripheral") == 0)
					say(fd, "{\"return\": [{\"name\": \"type\", \"type\": \"string\"}, {\"name\": \"other\", \"type\": \"child<virtio-blk-pci>\"}, {\"name\": \"vfa0\", \"type\": \"child<vfio-apple-pci>\"}]}\r\n");
				else
					say(fd, "{\"return\": [{\"name\": \"type\", \"type\": \"string\"}]}\r\n");
			} else if (strcmp(name, "qom-get") == 0) {
				const char *path = "", *prop = "";
				const char *answer = NULL;

				if (json_object_object_get_ex(msg, "arguments", &args)) {
					if (json_object_object_get_ex(args, "path", &v))
						path = json_object_get_string(v);
					if (json_object_object_get_ex(args, "property", &v))
						prop = json_object_get_string(v);
				}
				for (size_t i = 0; i < sizeof(fake_props) / sizeof(fake_props[0]); i++)
					if (strcmp(fake_props[i].path, path) == 0 && strcmp(fake_props[i].name, prop) == 0)
						answer = fake_props[i].json;
				if (answer)
					snprintf(out, sizeof(out), "{\"return\": %s}\r\n", answer);
				else
					snprintf(out, sizeof(out),
						 "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Property '%s.%s' not found\"}}\r\n",
						 path, prop);
				say(fd, out);
			} else if (strcmp(name, "query-status") == 0) {
				snprintf(out, sizeof(out), "{\"return\": {\"status\": \"%s\", \"running\": false}}\r\n",
					 run_state);
				say(fd, out);
			} else if (strcmp(name, "quit") == 0) {
				say(fd, "{\"return\": {}}\r\n");
				json_object_put(msg);
				_exit(0);
			} else {
				say(fd, "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command x has not been found\"}}\r\n");
			}
			json_object_put(msg);
		}
	}
}

static pid_t fake_qmp_start(const char *path, int clients, const char *run_state)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	pid_t pid;

	assert_true(fd >= 0);
	unlink(path);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(fd, 4), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		for (int i = 0; i < clients; i++) {
			int c = accept(fd, NULL, NULL);

			if (c < 0)
				_exit(2);
			fake_qmp_session(c, run_state);
			close(c);
		}
		_exit(0);
	}
	close(fd);
	return pid;
}

static uint64_t field_u64(struct json_object *o, const char *sect, const char *name)
{
	struct json_object *s, *v;

	assert_true(json_object_object_get_ex(o, sect, &s));
	if (!json_object_object_get_ex(s, name, &v))
		fail_msg("no %s.%s", sect, name);
	return (uint64_t)json_object_get_uint64(v);
}

static const char *field_str(struct json_object *o, const char *name)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, name, &v))
		fail_msg("no %s", name);
	return json_object_get_string(v);
}

static void test_qmp_counters(void **state)
{
	char path[96], err[CLI_ERR_LEN];
	struct json_object *st;
	pid_t pid;
	int wstatus;

	(void)state;
	snprintf(path, sizeof(path), "%s/qmp.sock", tmpdir);
	pid = fake_qmp_start(path, 3, "shutdown");

	/* 1: found by searching /machine/peripheral, every counter mapped */
	st = qmp_query_counters(path, NULL, 2000, err, sizeof(err));
	if (!st)
		fail_msg("qmp_query_counters: %s", err);
	assert_string_equal(field_str(st, "source"), "qmp");
	assert_string_equal(field_str(st, "qmp"), path);
	assert_string_equal(field_str(st, "device_path"), "/machine/peripheral/vfa0");
	assert_string_equal(field_str(st, "companion_path"), "/machine/peripheral-anon/device[0]");
	assert_string_equal(field_str(st, "host"), "sim:nvme,size=256M,dart=apple");
	assert_string_equal(field_str(st, "run_state"), "shutdown");
	assert_int_equal(field_u64(st, "dma", "live_mappings"), 6);
	assert_int_equal(field_u64(st, "dma", "live_bytes"), 11534336);
	assert_int_equal(field_u64(st, "dma", "peak_mappings"), 9);
	assert_int_equal(field_u64(st, "dma", "peak_bytes"), 12582912);
	assert_int_equal(field_u64(st, "dma", "faults"), 0);
	assert_int_equal(field_u64(st, "dma", "register_failures"), 1);
	assert_int_equal(field_u64(st, "interrupts", "delivered"), 1394);
	assert_int_equal(field_u64(st, "device", "resets"), 2);
	assert_int_equal(field_u64(st, "companion", "doorbells"), 7);
	assert_int_equal(field_u64(st, "companion", "map_entries"), 6);
	assert_int_equal(field_u64(st, "companion", "unmap_entries"), 3);
	assert_int_equal(field_u64(st, "companion", "live_ids"), 5);
	assert_int_equal(field_u64(st, "companion", "live_bytes"), 10485760);
	assert_int_equal(field_u64(st, "companion", "inval"), 0);
	assert_int_equal(field_u64(st, "companion", "ioerr"), 4);
	assert_int_equal(field_u64(st, "interrupts", "dropped"), 0);
	assert_int_equal(field_u64(st, "device", "bar_reads"), 321);
	{
		struct json_object *dma, *v;

		assert_true(json_object_object_get_ex(st, "dma", &dma));
		assert_true(json_object_object_get_ex(dma, "stats_known", &v));
		assert_true(json_object_get_boolean(v));
		assert_false(json_object_object_get_ex(dma, "bar_writes", &v));
	}

	/* the table says where it read from and what */
	{
		char *text = NULL;
		size_t len = 0;
		FILE *out = open_memstream(&text, &len);

		qmp_status_print(out, st);
		fclose(out);
		assert_non_null(strstr(text, "source       QMP "));
		assert_non_null(strstr(text, "(in-process QEMU, no broker), guest shutdown\n"));
		assert_non_null(strstr(text, "device       vfio-apple-pci /machine/peripheral/vfa0, host sim:nvme,size=256M,dart=apple\n"));
		assert_non_null(strstr(text, "companion    /machine/peripheral-anon/device[0]\n"));
		assert_non_null(strstr(text, "  live       6 mappings, 11.0 MiB\n"));
		assert_non_null(strstr(text, "  peak       9 mappings, 12.0 MiB\n"));
		assert_non_null(strstr(text, "  faults     0 (register failures 1)\n"));
		assert_non_null(strstr(text, "  doorbells  7 (map entries 6, unmap entries 3)\n"));
		assert_non_null(strstr(text, "  live ids   5 (10.0 MiB), invalid batches 0, I/O error batches 4\n"));
		assert_non_null(strstr(text, "  delivered  1394 (dropped 0, vectors enabled -)\n"));
		assert_non_null(strstr(text, "device       resets 2, BAR reads 321, BAR writes -\n"));
		assert_null(strstr(text, "does not report"));
		assert_non_null(strstr(text, "read         qom-get of dart-live-mappings"));
		assert_non_null(strstr(text, " resets irqs-dropped bar-reads; companion"));
		assert_non_null(strstr(text, "; companion doorbells map-entries"));
		free(text);
	}
	json_object_put(st);

	/* 2: a device that is not ours: refused, saying which counter is missing */
	st = qmp_query_counters(path, "/machine/peripheral/other", 2000, err, sizeof(err));
	assert_null(st);
	assert_non_null(strstr(err, "/machine/peripheral/other has no counter dart-live-mappings"));
	assert_non_null(strstr(err, "not found"));

	/* 3: quit ends the fake QEMU */
	assert_int_equal(qmp_quit(path, 2000), 0);
	assert_int_equal(waitpid(pid, &wstatus, 0), pid);
	assert_true(WIFEXITED(wstatus));
	assert_int_equal(WEXITSTATUS(wstatus), 0);

	/* nobody listening: an actionable error */
	st = qmp_query_counters(path, NULL, 500, err, sizeof(err));
	assert_null(st);
	assert_non_null(strstr(err, "no QEMU answers on the QMP socket"));
	assert_non_null(strstr(err, "-qmp unix:"));
}

/* A QMP peer that never greets: bounded by the timeout. */
static void test_qmp_silent(void **state)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	char path[96], err[CLI_ERR_LEN];
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	int64_t t0;

	(void)state;
	snprintf(path, sizeof(path), "%s/silent.sock", tmpdir);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(fd, 4), 0);
	t0 = vfa_now_ms();
	assert_null(qmp_query_counters(path, NULL, 300, err, sizeof(err)));
	assert_true(vfa_now_ms() - t0 < 3000);
	assert_non_null(strstr(err, "did not greet like QMP"));
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clock),
		cmocka_unit_test(test_inprocess_device),
		cmocka_unit_test(test_slot_devices),
		cmocka_unit_test(test_help_detection),
		cmocka_unit_test(test_inprocess_argv),
		cmocka_unit_test(test_find_inprocess),
		cmocka_unit_test(test_qmp_counters),
		cmocka_unit_test(test_qmp_silent),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
