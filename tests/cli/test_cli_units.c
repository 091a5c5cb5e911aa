// SPDX-License-Identifier: MIT
/* Unit tests of the vfio-apple command's pieces (cli/). */
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

#include "cli.h"
#include "list.h"
#include "launch.h"

static char tmpdir[64];

static int make_tmpdir(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/vfa-cli-test.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- device strings and guest addresses ---------------------------------- */

static void test_device_spec_valid(void **state)
{
	static const char *const good[] = {
		"sim:nvme", "sim:nvme,size=256M", "sim:nvme,size=1G,dart=identity", "sim:nvme,dart=apple",
		"sim:nvme,size=4096,backing=/tmp/disk.img", "sim-dext:nvme", "sim-dext:nvme,size=64m",
	};
	char err[CLI_ERR_LEN];

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		err[0] = '\0';
		assert_int_equal(device_spec_check(good[i], err, sizeof(err)), 0);
		assert_string_equal(err, "");
	}
}

static void expect_bad_device(const char *spec, const char *needle)
{
	char err[CLI_ERR_LEN] = "";

	assert_int_equal(device_spec_check(spec, err, sizeof(err)), -EINVAL);
	if (!strstr(err, needle))
		fail_msg("device '%s': message '%s' lacks '%s'", spec, err, needle);
}

static void test_device_spec_invalid(void **state)
{
	(void)state;
	expect_bad_device("", "empty device string");
	expect_bad_device("foo", "bad device string 'foo'");
	expect_bad_device("sim:gpu", "unknown simulated device 'gpu'");
	expect_bad_device("sim:nvmex", "unknown simulated device 'nvmex'");
	expect_bad_device("sim:nvme,size=0", "bad size '0'");
	expect_bad_device("sim:nvme,size=12X", "bad size '12X'");
	expect_bad_device("sim:nvme,size=1GG", "bad size '1GG'");
	expect_bad_device("sim:nvme,size=99999999999999999999", "bad size");
	expect_bad_device("sim:nvme,dart=intel", "use dart=apple or dart=identity");
	expect_bad_device("sim:nvme,colour=red", "unknown option 'colour'");
	expect_bad_device("sim:nvme,size", "write NAME=VALUE");
	expect_bad_device("sim:nvme,size=", "write NAME=VALUE");
	expect_bad_device("zz:00.0", "bad device string");
	expect_bad_device("00:20.0", "bad device string"); /* slot 0x20 > 0x1f */
	expect_bad_device("00:05.8", "bad device string");
	expect_bad_device("03:00.0@", "bad device string");
	expect_bad_device("03:00.9@root", "bad device string");
#ifndef __APPLE__
	expect_bad_device("03:00.0", "needs macOS");
	expect_bad_device("03:00.0@pcic2-bridge", "needs macOS");
#endif
}

static void test_guest_addr(void **state)
{
	uint8_t bus = 0xaa, devfn = 0xaa;

	(void)state;
	assert_int_equal(guest_addr_parse("00:05.0", &bus, &devfn), 0);
	assert_int_equal(bus, 0);
	assert_int_equal(devfn, 0x28);
	assert_int_equal(guest_addr_parse("05.0", &bus, &devfn), 0);
	assert_int_equal(devfn, 0x28);
	assert_int_equal(guest_addr_parse("ff:1f.7", &bus, &devfn), 0);
	assert_int_equal(bus, 0xff);
	assert_int_equal(devfn, 0xff);
	assert_int_equal(guest_addr_parse("3:6.1", &bus, &devfn), 0);
	assert_int_equal(bus, 3);
	assert_int_equal(devfn, 0x31);
	assert_int_equal(guest_addr_parse("00:20.0", &bus, &devfn), -EINVAL);
	assert_int_equal(guest_addr_parse("00:05.8", &bus, &devfn), -EINVAL);
	assert_int_equal(guest_addr_parse("0x5", &bus, &devfn), -EINVAL);
	assert_int_equal(guest_addr_parse("", &bus, &devfn), -EINVAL);
	assert_int_equal(guest_addr_parse("100:05.0", &bus, &devfn), -EINVAL);
	assert_int_equal(guest_addr_parse("0000:00:05.0", &bus, &devfn), -EINVAL);
	assert_int_equal(guest_addr_parse(NULL, &bus, &devfn), -EINVAL);
}

/* ---- QEMU version and arguments ------------------------------------------ */

static void test_qemu_version(void **state)
{
	unsigned major = 0, minor = 0, micro = 0;

	(void)state;
	assert_int_equal(qemu_version_parse("QEMU emulator version 11.1.3 (Debian 1:11.1.3+ds-1~bpo13+1)\n"
					    "Copyright (c) 2003-2026 Fabrice Bellard and the QEMU Project developers\n",
					    &major, &minor, &micro),
			 0);
	assert_int_equal(major, 11);
	assert_int_equal(minor, 1);
	assert_int_equal(micro, 3);
	assert_int_equal(qemu_version_parse("QEMU emulator version 7.2.0\n", &major, &minor, &micro), 0);
	assert_int_equal(major, 7);
	assert_int_equal(minor, 2);
	assert_int_equal(qemu_version_parse("QEMU emulator version 10.1\n", &major, &minor, &micro), 0);
	assert_int_equal(major, 10);
	assert_int_equal(minor, 1);
	assert_int_equal(micro, 0);
	assert_int_equal(qemu_version_parse("hello", &major, &minor, &micro), -EINVAL);
	assert_int_equal(qemu_version_parse("version x.y", &major, &minor, &micro), -EINVAL);
	assert_int_equal(qemu_version_parse("version 11", &major, &minor, &micro), -EINVAL);
	assert_int_equal(qemu_version_parse(NULL, &major, &minor, &micro), -EINVAL);

	assert_false(qemu_version_ok(7, 2));
	assert_false(qemu_version_ok(9, 99));
	assert_false(qemu_version_ok(10, 0));
	assert_true(qemu_version_ok(10, 1));
	assert_true(qemu_version_ok(10, 2));
	assert_true(qemu_version_ok(11, 0));
}

static void expect_args(int expected, const char *needle, int argc, ...)
{
	char *argv[16];
	char err[CLI_ERR_LEN] = "";
	va_list ap;

	va_start(ap, argc);
	for (int i = 0; i < argc; i++)
		argv[i] = va_arg(ap, char *);
	va_end(ap);
	assert_int_equal(qemu_args_check(argc, argv, err, sizeof(err)), expected);
	if (needle && !strstr(err, needle))
		fail_msg("message '%s' lacks '%s'", err, needle);
}

static void test_qemu_args(void **state)
{
	(void)state;
	expect_args(0, NULL, 0);
	expect_args(0, NULL, 4, "-nographic", "-append", "console=ttyS0 -m", "-smp");
	expect_args(0, NULL, 2, "-object", "memory-backend-memfd,id=extra,size=1G,share=on");
	expect_args(0, NULL, 2, "-object", "{\"qom-type\":\"memory-backend-file\",\"share\":true}");
	expect_args(0, NULL, 2, "-machine", "q35,accel=tcg");
	expect_args(-EINVAL, "--memory SIZE", 2, "-m", "2G");
	expect_args(-EINVAL, "--memory SIZE", 2, "--m", "2G");
	expect_args(-EINVAL, "private memory", 2, "-object", "memory-backend-ram,id=r,size=1G");
	expect_args(-EINVAL, "lacks share=on", 2, "-object", "memory-backend-file,id=f,size=1G,mem-path=/x");
	expect_args(-EINVAL, "lacks share=on", 2, "-object", "memory-backend-memfd,id=f,size=1G,share=off");
	expect_args(-EINVAL, "memory-backend=", 2, "-machine", "q35,memory-backend=r");
	expect_args(-EINVAL, "memory-backend=", 2, "-M", "pc,memory-backend=r");
	expect_args(-EINVAL, "-mem-path", 2, "-mem-path", "/dev/hugepages");
}

static void test_format_bytes(void **state)
{
	char buf[32];

	(void)state;
	format_bytes(0, buf, sizeof(buf));
	assert_string_equal(buf, "0 B");
	format_bytes(1023, buf, sizeof(buf));
	assert_string_equal(buf, "1023 B");
	format_bytes(1024, buf, sizeof(buf));
	assert_string_equal(buf, "1.0 KiB");
	format_bytes(11534336, buf, sizeof(buf));
	assert_string_equal(buf, "11.0 MiB");
	format_bytes(1610612736, buf, sizeof(buf));
	assert_string_equal(buf, "1.5 GiB");
	format_bytes(UINT64_MAX, buf, sizeof(buf));
	assert_string_equal(buf, "16777216.0 TiB");
}

static void test_memory_valid(void **state)
{
	(void)state;
	assert_true(launch_memory_valid("1G"));
	assert_true(launch_memory_valid("512M"));
	assert_true(launch_memory_valid("1073741824"));
	assert_false(launch_memory_valid(""));
	assert_false(launch_memory_valid("0"));
	assert_false(launch_memory_valid("-1G"));
	assert_false(launch_memory_valid("1GB"));
	assert_false(launch_memory_valid("G"));
	assert_false(launch_memory_valid(NULL));
}

static void test_socket_paths(void **state)
{
	struct socket_paths paths;
	char longdir[200];

	(void)state;
	assert_int_equal(socket_paths_from_dir(&paths, "/run/vfio-apple"), 0);
	assert_string_equal(paths.passthrough, "/run/vfio-apple/passthrough.sock");
	assert_string_equal(paths.companion, "/run/vfio-apple/companion.sock");
	assert_string_equal(paths.control, "/run/vfio-apple/control.sock");
	memset(longdir, 'a', sizeof(longdir) - 1);
	longdir[0] = '/';
	longdir[sizeof(longdir) - 1] = '\0';
	assert_int_equal(socket_paths_from_dir(&paths, longdir), -ENAMETOOLONG);

	/* The limit is this platform's sun_path (108 on Linux, 104 on macOS):
	 * the longest directory accepted makes a passthrough path that fits. */
	struct sockaddr_un addr;
	size_t fits = sizeof(addr.sun_path) - 1 - strlen("/passthrough.sock");

	longdir[fits] = '\0';
	assert_int_equal(socket_paths_from_dir(&paths, longdir), 0);
	assert_int_equal(strlen(paths.passthrough), sizeof(addr.sun_path) - 1);
	longdir[fits] = 'a';
	longdir[fits + 1] = '\0';
	assert_int_equal(socket_paths_from_dir(&paths, longdir), -ENAMETOOLONG);
}

/* ---- QEMU's command line --------------------------------------------------- */

static bool argv_has(const struct launch_argv *a, const char *arg)
{
	for (size_t i = 0; i < a->count; i++)
		if (strcmp(a->v[i], arg) == 0)
			return true;
	return false;
}

static void test_qemu_argv(void **state)
{
	struct launch plan;
	struct launch_argv a = { .count = 0 };
	char *user[] = { (char *)"-nographic", (char *)"-kernel", (char *)"bzImage" };
	char pt_dev[512];

	(void)state;
	memset(&plan, 0, sizeof(plan));
	plan.memory = "2G";
	plan.companion = true;
	assert_int_equal(socket_paths_from_dir(&plan.sockets, "/tmp/s"), 0);
	snprintf(plan.qemu_bin.path, sizeof(plan.qemu_bin.path), "/opt/qemu/bin/qemu-system-x86_64");

	assert_int_equal(launch_qemu_argv(&plan, 3, user, &a), 0);
	assert_string_equal(a.v[0], "/opt/qemu/bin/qemu-system-x86_64");
	assert_true(argv_has(&a, "memory-backend-memfd,id=vfa-ram,size=2G,share=on"));
	assert_true(argv_has(&a, "q35,memory-backend=vfa-ram"));
	snprintf(pt_dev, sizeof(pt_dev),
		 "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"/tmp/s/passthrough.sock\"},"
		 "\"addr\":\"0x5\"}");
	assert_true(argv_has(&a, pt_dev));
	/* the companion's doorbell must complete before the guest's write
	 * returns: non-posted writes on it (issue 16), posted on 00:05.0 */
	assert_true(argv_has(&a, "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":"
				 "\"/tmp/s/companion.sock\"},\"addr\":\"0x6\",\"x-no-posted-writes\":true}"));
	/* "-object" right before its value; the user's arguments last, in order */
	for (size_t i = 0; i < a.count; i++)
		if (strncmp(a.v[i], "memory-backend-memfd", 20) == 0)
			assert_string_equal(a.v[i - 1], "-object");
	assert_int_equal(a.count, 14);
	assert_string_equal(a.v[11], "-nographic");
	assert_string_equal(a.v[12], "-kernel");
	assert_string_equal(a.v[13], "bzImage");
	assert_null(a.v[14]);
	launch_argv_free(&a);

	/* no companion; QEMU from the trixie root through in-root.sh */
	plan.companion = false;
	snprintf(plan.qemu_bin.in_root, sizeof(plan.qemu_bin.in_root), "/src/provision/in-root.sh");
	snprintf(plan.qemu_bin.path, sizeof(plan.qemu_bin.path), "/usr/bin/qemu-system-x86_64");
	assert_int_equal(launch_qemu_argv(&plan, 0, NULL, &a), 0);
	assert_string_equal(a.v[0], "/src/provision/in-root.sh");
	assert_string_equal(a.v[1], "--bind");
	assert_string_equal(a.v[2], "/tmp/s");
	assert_true(argv_has(&a, "--"));
	assert_true(argv_has(&a, "/usr/bin/qemu-system-x86_64"));
	for (size_t i = 0; i < a.count; i++)
		assert_null(strstr(a.v[i], "companion.sock"));
	launch_argv_free(&a);

	/* A socket directory with a quote and a backslash cannot add JSON keys:
	 * the path stays one escaped string value (issue 11 item 6). */
	plan.companion = true;
	plan.qemu_bin.in_root[0] = '\0';
	assert_int_equal(socket_paths_from_dir(&plan.sockets, "/tmp/x\",\"addr\":\"0x9\\"), 0);
	assert_int_equal(launch_qemu_argv(&plan, 0, NULL, &a), 0);
	assert_true(argv_has(&a, "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":"
				 "\"/tmp/x\\\",\\\"addr\\\":\\\"0x9\\\\/passthrough.sock\"},\"addr\":\"0x5\"}"));
	launch_argv_free(&a);
}

/* ---- sockets ---------------------------------------------------------------- */

static int listen_on(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(fd, 4), 0);
	return fd;
}

static void test_socket_prepare(void **state)
{
	char path[128], err[CLI_ERR_LEN];
	struct stat st;
	int fd;
	FILE *f;

	(void)state;
	snprintf(path, sizeof(path), "%s/free.sock", tmpdir);
	assert_int_equal(socket_path_prepare(path, err, sizeof(err)), 0);

	/* a live listener: in use, and left alone */
	snprintf(path, sizeof(path), "%s/live.sock", tmpdir);
	fd = listen_on(path);
	err[0] = '\0';
	assert_int_equal(socket_path_prepare(path, err, sizeof(err)), -EADDRINUSE);
	assert_non_null(strstr(err, "is in use by another process"));
	assert_int_equal(stat(path, &st), 0);
	/* its owner gone: stale, removed */
	close(fd);
	assert_int_equal(socket_path_prepare(path, err, sizeof(err)), 0);
	assert_int_equal(stat(path, &st), -1);
	assert_int_equal(errno, ENOENT);

	/* not a socket */
	snprintf(path, sizeof(path), "%s/plain", tmpdir);
	f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
	assert_int_equal(socket_path_prepare(path, err, sizeof(err)), -ENOTSOCK);
	assert_non_null(strstr(err, "is not a socket"));
	assert_int_equal(stat(path, &st), 0);

	/* too long for sun_path */
	memset(path, 'x', sizeof(path) - 1);
	path[0] = '/';
	path[sizeof(path) - 1] = '\0';
	assert_int_equal(socket_path_prepare(path, err, sizeof(err)), -ENAMETOOLONG);
}

/* A one-shot control server in a child: reads the request, checks it, answers. */
static pid_t fake_broker(const char *path, const char *reply, bool answer)
{
	int fd = listen_on(path);
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		char req[16] = "";
		int conn = accept(fd, NULL, NULL);
		ssize_t n = conn >= 0 ? read(conn, req, sizeof(req) - 1) : -1;

		if (n != 7 || strcmp(req, "status\n") != 0)
			_exit(3);
		if (!answer) {
			sleep(5);
			_exit(0);
		}
		if (write(conn, reply, strlen(reply)) != (ssize_t)strlen(reply))
			_exit(4);
		close(conn);
		_exit(0);
	}
	close(fd);
	return pid;
}

static int wait_child(pid_t pid)
{
	int status;

	assert_int_equal(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void test_control_query(void **state)
{
	char path[128], err[CLI_ERR_LEN];
	struct json_object *obj, *pid;
	pid_t child;

	(void)state;
	snprintf(path, sizeof(path), "%s/control.sock", tmpdir);

	child = fake_broker(path, "{\"version\":\"0.1.0\",\"pid\":4242}\n", true);
	obj = control_query(path, 2000, err, sizeof(err));
	assert_non_null(obj);
	assert_true(json_object_object_get_ex(obj, "pid", &pid));
	assert_int_equal(json_object_get_int(pid), 4242);
	json_object_put(obj);
	assert_int_equal(wait_child(child), 0);
	unlink(path);

	child = fake_broker(path, "not json\n", true);
	assert_null(control_query(path, 2000, err, sizeof(err)));
	assert_non_null(strstr(err, "not a JSON object"));
	assert_int_equal(wait_child(child), 0);
	unlink(path);

	child = fake_broker(path, "[1,2]\n", true);
	assert_null(control_query(path, 2000, err, sizeof(err)));
	assert_non_null(strstr(err, "not a JSON object"));
	assert_int_equal(wait_child(child), 0);
	unlink(path);

	child = fake_broker(path, "", true);
	assert_null(control_query(path, 2000, err, sizeof(err)));
	assert_non_null(strstr(err, "without an answer"));
	assert_int_equal(wait_child(child), 0);
	unlink(path);

	child = fake_broker(path, "", false);
	assert_null(control_query(path, 200, err, sizeof(err)));
	assert_non_null(strstr(err, "did not answer within 200 ms"));
	kill(child, SIGKILL);
	wait_child(child);
	unlink(path);

	assert_null(control_query(path, 200, err, sizeof(err)));
	assert_non_null(strstr(err, "no broker is running at"));
}

static char *print_to_string(struct json_object *status)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	assert_non_null(f);
	status_print(f, status);
	fclose(f);
	return text;
}

static void test_status_print(void **state)
{
	struct json_object *status = json_tokener_parse(
		"{\"version\":\"0.1.0\",\"pid\":77,\"uptime_s\":3723,\"device\":\"sim:nvme,dart=apple\","
		"\"clients\":{\"passthrough\":{\"socket\":\"/run/p.sock\",\"connected\":true},"
		"\"companion\":{\"socket\":\"/run/c.sock\",\"connected\":false}},"
		"\"dma\":{\"live_mappings\":12,\"live_bytes\":1048576,\"peak_mappings\":40,\"peak_bytes\":11534336,"
		"\"max_mappings\":65536,\"max_bytes\":1610612736,\"faults\":2,\"register_failures\":1},"
		"\"companion\":{\"doorbells\":99,\"map_entries\":120,\"unmap_entries\":108,\"inval\":3,\"ioerr\":0,"
		"\"live_ids\":12,\"guest_features\":7},"
		"\"interrupts\":{\"delivered\":532,\"vectors_enabled\":2}}");
	char *text;

	(void)state;
	assert_non_null(status);
	text = print_to_string(status);
	assert_non_null(strstr(text, "pid 77, version 0.1.0, up 1:02:03"));
	assert_non_null(strstr(text, "device       sim:nvme,dart=apple"));
	assert_non_null(strstr(text, "passthrough  connected  /run/p.sock"));
	assert_non_null(strstr(text, "companion    waiting    /run/c.sock"));
	assert_non_null(strstr(text, "live       12 of 65536 mappings, 1.0 MiB of 1.5 GiB"));
	assert_non_null(strstr(text, "peak       40 mappings, 11.0 MiB"));
	assert_non_null(strstr(text, "faults     2 (register failures 1)"));
	assert_non_null(strstr(text, "doorbells  99 (map entries 120, unmap entries 108)"));
	assert_non_null(strstr(text, "live ids   12, invalid requests 3, I/O errors 0"));
	assert_non_null(strstr(text, "guest uses 0x7 budget unique-ids unmap-all"));
	assert_non_null(strstr(text, "delivered  532 (vectors enabled 2)"));
	free(text);
	json_object_put(status);

	/* an older broker without most fields: dashes, no crash */
	status = json_tokener_parse("{\"pid\":1}");
	text = print_to_string(status);
	assert_non_null(strstr(text, "pid 1, version -, up -"));
	assert_non_null(strstr(text, "live       - of - mappings, - of -"));
	assert_non_null(strstr(text, "passthrough  -          -"));
	assert_non_null(strstr(text, "guest uses -"));
	free(text);
	json_object_put(status);
}

/* ---- pci.ids and list --------------------------------------------------- */

static const char pci_ids_fixture[] =
	"# pci.ids fixture\n"
	"#\tnot a device\n"
	"106b  Apple Inc.\n"
	"\t2005  ANS2 NVMe Controller\n"
	"\t\t106b 0001  subsystem line\n"
	"10de  NVIDIA Corporation\n"
	"\t2b85  GB202 [GeForce RTX 5090]\n"
	"\t2b87  GB202 [other]\n"
	"1b36  Red Hat, Inc.\n"
	"\t0015  some device\n"
	"ffff  Illegal Vendor ID\n"
	"C 01  Mass storage controller\n"
	"\t08  Non-Volatile memory controller\n"
	"\t\t02  NVM Express\n"
	"C 03  Display controller\n"
	"\t00  VGA compatible controller\n"
	"\t02  3D controller\n"
	"C 08  Generic system peripheral\n";

static void write_fixture(char *path, size_t len)
{
	FILE *f;

	snprintf(path, len, "%s/pci.ids", tmpdir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(pci_ids_fixture, f);
	fclose(f);
}

static void test_pciids(void **state)
{
	struct pci_names names;
	char path[128];

	(void)state;
	write_fixture(path, sizeof(path));
	assert_int_equal(pciids_lookup(path, 0x10de, 0x2b85, 0x030000, &names), 0);
	assert_string_equal(names.vendor, "NVIDIA Corporation");
	assert_string_equal(names.device, "GB202 [GeForce RTX 5090]");
	assert_string_equal(names.class_name, "VGA compatible controller");

	assert_int_equal(pciids_lookup(path, 0x106b, 0x2005, 0x010802, &names), 0);
	assert_string_equal(names.vendor, "Apple Inc.");
	assert_string_equal(names.device, "ANS2 NVMe Controller");
	assert_string_equal(names.class_name, "Non-Volatile memory controller");

	/* a device id that belongs to another vendor must not match */
	assert_int_equal(pciids_lookup(path, 0x106b, 0x2b85, 0x030200, &names), 0);
	assert_string_equal(names.vendor, "Apple Inc.");
	assert_string_equal(names.device, "");
	assert_string_equal(names.class_name, "3D controller");

	/* unknown subclass: the base class name */
	assert_int_equal(pciids_lookup(path, 0x1234, 0x5678, 0x088000, &names), 0);
	assert_string_equal(names.vendor, "");
	assert_string_equal(names.device, "");
	assert_string_equal(names.class_name, "Generic system peripheral");

	assert_int_equal(pciids_lookup("/nonexistent/pci.ids", 0x10de, 0x2b85, 0x030000, &names), -ENOENT);
	assert_string_equal(names.vendor, "");
}

static const char *entry_str(struct json_object *entry, const char *key)
{
	struct json_object *value;

	return json_object_object_get_ex(entry, key, &value) ? json_object_get_string(value) : NULL;
}

static void test_list_build(void **state)
{
	const struct host_function fns[] = {
		{ .bus = 3, .device = 0, .function = 0, .vendor_id = 0x10de, .device_id = 0x2b85, .class_code = 0x030000 },
		{ .bus = 0x1f, .device = 0x1f, .function = 7, .vendor_id = 0xabcd, .device_id = 0x0001, .class_code = 0x020000 },
	};
	struct json_object *array, *entry;
	char path[128], *text = NULL;
	size_t len = 0, n;
	FILE *f;

	(void)state;
	write_fixture(path, sizeof(path));
	array = list_build(fns, 2, path);
	n = json_object_array_length(array);
	assert_true(n >= 3);
	entry = json_object_array_get_idx(array, 0);
	assert_string_equal(entry_str(entry, "device"), "sim:nvme");
	assert_string_equal(entry_str(entry, "kind"), "simulated");

	entry = json_object_array_get_idx(array, n - 2);
	assert_string_equal(entry_str(entry, "device"), "03:00.0");
	assert_string_equal(entry_str(entry, "kind"), "host");
	assert_string_equal(entry_str(entry, "vendor_id"), "10de");
	assert_string_equal(entry_str(entry, "device_id"), "2b85");
	assert_string_equal(entry_str(entry, "class"), "030000");
	assert_string_equal(entry_str(entry, "vendor"), "NVIDIA Corporation");
	assert_string_equal(entry_str(entry, "name"), "GB202 [GeForce RTX 5090]");
	assert_string_equal(entry_str(entry, "class_name"), "VGA compatible controller");

	entry = json_object_array_get_idx(array, n - 1);
	assert_string_equal(entry_str(entry, "device"), "1f:1f.7");
	assert_null(entry_str(entry, "vendor"));
	assert_null(entry_str(entry, "name"));

	f = open_memstream(&text, &len);
	list_print(f, array);
	fclose(f);
	assert_non_null(strstr(text, "sim:nvme "));
	assert_non_null(strstr(text, "03:00.0          10de:2b85 class 030000  NVIDIA Corporation GB202 [GeForce RTX 5090] "
				     "(VGA compatible controller)\n"));
	assert_non_null(strstr(text, "1f:1f.7          abcd:0001 class 020000\n"));
	free(text);
	json_object_put(array);

	/* no pci.ids at all: numbers only */
	array = list_build(fns, 1, NULL);
	entry = json_object_array_get_idx(array, json_object_array_length(array) - 1);
	assert_string_equal(entry_str(entry, "vendor_id"), "10de");
	assert_null(entry_str(entry, "vendor"));
	json_object_put(array);
}

static FILE *usage_printed_to;

static void record_usage(FILE *out)
{
	usage_printed_to = out;
}

static void test_option_helpers(void **state)
{
	char cmd[] = "status", extra[] = "extra";
	char *args[] = { cmd, extra, NULL };
	long v = -1;

	(void)state;
	/* --help: usage on stdout, exit 0; any other option: stderr, exit 2 */
	assert_int_equal(cli_usage_exit('h', record_usage), 0);
	assert_ptr_equal(usage_printed_to, stdout);
	assert_int_equal(cli_usage_exit('?', record_usage), 2);
	assert_ptr_equal(usage_printed_to, stderr);

	assert_int_equal(cli_no_operands("status", 2, args, 2), 0);
	assert_int_equal(cli_no_operands("status", 2, args, 1), 2);

	assert_int_equal(cli_parse_number("600000", 10, 1, 600000, &v), 0);
	assert_int_equal(v, 600000);
	assert_int_equal(cli_parse_number("0x10", 0, 1, 65536, &v), 0);
	assert_int_equal(v, 16);
	v = 7;
	assert_int_equal(cli_parse_number("600001", 10, 1, 600000, &v), -EINVAL);
	assert_int_equal(cli_parse_number("0", 10, 1, 600000, &v), -EINVAL);
	assert_int_equal(cli_parse_number("-1", 0, 1, 65536, &v), -EINVAL);
	assert_int_equal(cli_parse_number("", 10, 1, 10, &v), -EINVAL);
	assert_int_equal(cli_parse_number("5s", 10, 1, 10, &v), -EINVAL);
	assert_int_equal(cli_parse_number("0x10", 10, 1, 100, &v), -EINVAL);
	assert_int_equal(cli_parse_number("99999999999999999999999", 10, 1, 10, &v), -EINVAL);
	assert_int_equal(v, 7); /* untouched on error */

	assert_int_equal(cli_parse_log_level("debug"), 3);
	assert_int_equal(cli_parse_log_level("error"), 0);
	assert_int_equal(cli_parse_log_level("loud"), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_device_spec_valid),
		cmocka_unit_test(test_device_spec_invalid),
		cmocka_unit_test(test_guest_addr),
		cmocka_unit_test(test_qemu_version),
		cmocka_unit_test(test_qemu_args),
		cmocka_unit_test(test_format_bytes),
		cmocka_unit_test(test_memory_valid),
		cmocka_unit_test(test_socket_paths),
		cmocka_unit_test(test_qemu_argv),
		cmocka_unit_test(test_socket_prepare),
		cmocka_unit_test(test_control_query),
		cmocka_unit_test(test_status_print),
		cmocka_unit_test(test_pciids),
		cmocka_unit_test(test_list_build),
		cmocka_unit_test(test_option_helpers),
	};

	return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
