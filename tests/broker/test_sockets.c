// SPDX-License-Identifier: MIT
/*
 * The broker's socket rules (common/unix_socket.c, issue 11 item 1 and 6):
 * the socket directory must be ours, private and no symlink; one binding
 * rule (only a stale socket is replaced); sockets 0600 whatever the umask;
 * peers of another uid are told apart; socket paths are quoted for QEMU's
 * JSON -device.  Some checks need root (chown, setuid): they say so and
 * pass vacuously when not run as root.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
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

#include "unix_socket.h"

#define NOBODY 65534

static char base[64];

static int setup(void **state)
{
	(void)state;
	snprintf(base, sizeof(base), "/tmp/vfa-sock-XXXXXX");
	assert_non_null(mkdtemp(base));
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
	assert_int_equal(system(cmd), 0);
	return 0;
}

static void path_in(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", base, name);
}

static void test_dir_created_private(void **state)
{
	char dir[128], err[256];
	struct stat st;
	mode_t old = umask(0);

	(void)state;
	path_in(dir, sizeof(dir), "a/b/sockets");
	assert_int_equal(vfa_socket_dir_prepare(dir, err, sizeof(err)), 0);
	umask(old);
	assert_int_equal(lstat(dir, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0700);
	/* again: already there and fine */
	assert_int_equal(vfa_socket_dir_prepare(dir, err, sizeof(err)), 0);
}

static void test_dir_world_writable_refused(void **state)
{
	char dir[128], err[256];
	struct stat st;

	(void)state;
	path_in(dir, sizeof(dir), "open");
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(chmod(dir, 0777), 0);
	assert_int_equal(vfa_socket_dir_prepare(dir, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "has mode 777"));
	assert_non_null(strstr(err, "chmod 700"));
	/* left as it was: nothing of ours goes into it */
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0777);
}

static void test_dir_0755_made_private(void **state)
{
	char dir[128], err[256];
	struct stat st;

	(void)state;
	path_in(dir, sizeof(dir), "mine");
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(chmod(dir, 0755), 0);
	assert_int_equal(vfa_socket_dir_prepare(dir, err, sizeof(err)), 0);
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
}

static void test_dir_symlink_refused(void **state)
{
	char dir[128], target[128], err[256];

	(void)state;
	path_in(target, sizeof(target), "target");
	path_in(dir, sizeof(dir), "link");
	assert_int_equal(mkdir(target, 0700), 0);
	assert_int_equal(symlink(target, dir), 0);
	assert_int_equal(vfa_socket_dir_prepare(dir, err, sizeof(err)), -ENOTDIR);
	assert_non_null(strstr(err, "symlink"));
}

static void test_dir_other_owner_refused(void **state)
{
	char dir[128], err[256];

	(void)state;
	if (geteuid() != 0) {
		print_message("dir owned by another user: needs root to chown; not checked\n");
		return;
	}
	path_in(dir, sizeof(dir), "theirs");
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(chown(dir, NOBODY, NOBODY), 0);
	assert_int_equal(vfa_socket_dir_prepare(dir, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "is owned by uid 65534"));
}

static int connect_to(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void test_listen_mode_and_rules(void **state)
{
	char path[128], err[256];
	struct stat st;
	mode_t old = umask(0);
	int fd, fd2, c;

	(void)state;
	path_in(path, sizeof(path), "s.sock");
	fd = vfa_listen_unix(path, 4, err, sizeof(err));
	umask(old);
	assert_true(fd >= 0);
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600); /* umask 0 did not widen it */

	/* live: refused, and left alone */
	fd2 = vfa_listen_unix(path, 4, err, sizeof(err));
	assert_int_equal(fd2, -EADDRINUSE);
	assert_non_null(strstr(err, "is in use by another process"));
	c = connect_to(path);
	assert_true(c >= 0);
	close(c);

	/* stale (its server gone): replaced */
	close(fd);
	fd = vfa_listen_unix(path, 4, err, sizeof(err));
	assert_true(fd >= 0);
	close(fd);

	/* not a socket: never deleted */
	assert_int_equal(unlink(path), 0);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(vfa_listen_unix(path, 4, err, sizeof(err)), -ENOTSOCK);
	assert_non_null(strstr(err, "is not a socket"));
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
}

static void test_peer_uid(void **state)
{
	char path[128], err[256];
	uid_t uid;
	pid_t pid, child;
	int lfd, c, a, status;

	(void)state;
	path_in(path, sizeof(path), "peer.sock");
	lfd = vfa_listen_unix(path, 4, err, sizeof(err));
	assert_true(lfd >= 0);
	/* ourselves: allowed, and the pid is ours */
	c = connect_to(path);
	assert_true(c >= 0);
	while ((a = accept(lfd, NULL, NULL)) < 0)
		assert_int_equal(errno, EAGAIN);
	assert_true(vfa_socket_peer_allowed(a, &uid, &pid));
	assert_int_equal(uid, geteuid());
	assert_int_equal(pid, getpid());
	close(a);
	close(c);

	if (geteuid() != 0) {
		print_message("peer of another uid: needs root to setuid; not checked\n");
		close(lfd);
		return;
	}
	/* another user (the directory is ours; open the socket itself for the test) */
	assert_int_equal(chmod(base, 0711), 0);
	assert_int_equal(chmod(path, 0666), 0);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		char b;
		int fd;

		if (setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
			_exit(2);
		fd = connect_to(path);
		if (fd < 0)
			_exit(3);
		(void)!read(fd, &b, 1);
		_exit(0);
	}
	while ((a = accept(lfd, NULL, NULL)) < 0) {
		assert_int_equal(errno, EAGAIN);
		usleep(1000);
		if (waitpid(child, &status, WNOHANG) == child)
			fail_msg("the child could not connect: exit %d", WEXITSTATUS(status));
	}
	assert_false(vfa_socket_peer_allowed(a, &uid, &pid));
	assert_int_equal(uid, NOBODY);
	assert_int_equal(pid, child);
	close(a);
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_int_equal(chmod(base, 0700), 0);
	close(lfd);
}

static void test_json_quote(void **state)
{
	char out[64];

	(void)state;
	assert_int_equal(vfa_json_quote("/run/vfio-apple/x.sock", out, sizeof(out)), 0);
	assert_string_equal(out, "\"/run/vfio-apple/x.sock\"");
	/* a path that would close the string and add its own keys */
	assert_int_equal(vfa_json_quote("/tmp/a\",\"x\":\"\\\n", out, sizeof(out)), 0);
	assert_string_equal(out, "\"/tmp/a\\\",\\\"x\\\":\\\"\\\\\\u000a\"");
	assert_int_equal(vfa_json_quote("", out, sizeof(out)), 0);
	assert_string_equal(out, "\"\"");
	/* too small: refused, never cut */
	assert_int_equal(vfa_json_quote("abcdef", out, 8), -ENAMETOOLONG);
	assert_int_equal(vfa_json_quote("abcdef", out, 9), 0);
	assert_string_equal(out, "\"abcdef\"");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_dir_created_private, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dir_world_writable_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dir_0755_made_private, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dir_symlink_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dir_other_owner_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_listen_mode_and_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(test_peer_uid, setup, teardown),
		cmocka_unit_test(test_json_quote),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
