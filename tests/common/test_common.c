// SPDX-License-Identifier: MIT
/*
 * common/le.h and common/compat.h.  Every compat helper is tested through
 * the platform's path and through its POSIX fallback (the code a Mac runs),
 * on real descriptors: flags, bytes through shared mappings, poll states.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <search.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "compat.h"
#include "le.h"

static void test_le_roundtrip(void **state)
{
	uint8_t b[8];

	(void)state;
	le_store64(b, 0x0123456789abcdefull);
	static const uint8_t want[8] = { 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01 };
	assert_memory_equal(b, want, 8);
	assert_true(le_load64(b) == 0x0123456789abcdefull);
	assert_int_equal(le_load32(b + 4), 0x01234567u);
	assert_int_equal(le_load16(b + 1), 0xabcd);
	le_store32(b, 0xfffffffeu);
	assert_int_equal(b[0], 0xfe);
	assert_int_equal(b[3], 0xff);
	le_store16(b + 6, 0x8001);
	assert_int_equal(b[6], 0x01);
	assert_int_equal(b[7], 0x80);
	assert_true(le_load64(b) == 0x80014567fffffffeull);
}

static bool readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static void check_cloexec(int fd, bool nonblock)
{
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(!!(fcntl(fd, F_GETFL) & O_NONBLOCK), nonblock);
}

static void check_notifier(int (*open_fn)(int fds[2]))
{
	int fds[2] = { -1, -1 };

	assert_int_equal(open_fn(fds), 0);
	check_cloexec(fds[0], true);
	check_cloexec(fds[1], true);
	assert_false(readable(fds[0]));
	assert_int_equal(vfa_notifier_drain(fds[0]), 0);

	/* several signals before a drain: one wake-up, then quiet again */
	for (int i = 0; i < 3; i++)
		assert_int_equal(vfa_notifier_signal(fds[1]), 0);
	assert_true(readable(fds[0]));
	assert_int_equal(vfa_notifier_drain(fds[0]), 1);
	assert_false(readable(fds[0]));

	/* a QEMU-style 8-byte write wakes it as well */
	uint64_t one = 1;
	assert_int_equal(write(fds[1], &one, sizeof(one)), (ssize_t)sizeof(one));
	assert_int_equal(vfa_notifier_drain(fds[0]), 1);

	vfa_notifier_close(fds);
	assert_int_equal(fds[0], -1);
	assert_int_equal(fds[1], -1);
}

static void test_notifier(void **state)
{
	(void)state;
	check_notifier(vfa_notifier_open);
	check_notifier(vfa_notifier_open_posix);
}

static void test_notifier_full_pipe_stays_signalled(void **state)
{
	int fds[2];

	(void)state;
	assert_int_equal(vfa_notifier_open_posix(fds), 0);
	/* far more signals than a pipe holds: none fails */
	for (int i = 0; i < 100000; i++)
		assert_int_equal(vfa_notifier_signal(fds[1]), 0);
	assert_int_equal(vfa_notifier_drain(fds[0]), 1);
	assert_false(readable(fds[0]));
	vfa_notifier_close(fds);
	/* a closed fd is an error, not a silent success */
	assert_int_equal(vfa_notifier_signal(fds[1]), -EBADF);
}

static void check_shared_memory(int (*open_fn)(const char *, size_t))
{
	const size_t size = 3u << 20;
	struct stat st;
	int fd = open_fn("test", size);

	assert_true(fd >= 0);
	check_cloexec(fd, false);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, (off_t)size);

	/* two shared mappings see the same bytes (as QEMU and the broker do) */
	uint8_t *a = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	uint8_t *b = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(a != MAP_FAILED && b != MAP_FAILED);
	assert_int_equal(b[size - 1], 0);
	memcpy(a + size - 4, "DART", 4);
	assert_memory_equal(b + size - 4, "DART", 4);
	munmap(a, size);
	munmap(b, size);
	close(fd);
}

static void test_shared_memory(void **state)
{
	(void)state;
	check_shared_memory(vfa_shared_memory_fd);
	check_shared_memory(vfa_shared_memory_fd_posix);
	/* the POSIX one leaves no name behind and makes new ones each time */
	int x = vfa_shared_memory_fd_posix("a-long-name-cut-to-fit", 4096);
	int y = vfa_shared_memory_fd_posix("a-long-name-cut-to-fit", 4096);
	assert_true(x >= 0 && y >= 0);
	close(x);
	close(y);
}

static void check_sockets(int (*sock_fn)(bool), int (*accept_fn)(int, bool))
{
	char dir[] = "/tmp/vfa-compat-XXXXXX";
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int l, c, a;

	assert_non_null(mkdtemp(dir));
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/s", dir);
	/* a non-blocking listener: accepted sockets must still follow the flag asked for */
	l = sock_fn(true);
	assert_true(l >= 0);
	check_cloexec(l, true);
	assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(l, 4), 0);
	assert_int_equal(accept_fn(l, true), -EAGAIN);

	for (int nonblock = 0; nonblock < 2; nonblock++) {
		c = sock_fn(false);
		assert_true(c >= 0);
		check_cloexec(c, false);
		assert_int_equal(connect(c, (struct sockaddr *)&sa, sizeof(sa)), 0);
		a = accept_fn(l, nonblock);
		assert_true(a >= 0);
		check_cloexec(a, nonblock);
		assert_int_equal(send(a, "hi", 2, MSG_NOSIGNAL), 2);
		char buf[2];
		assert_int_equal(recv(c, buf, 2, 0), 2);
		assert_memory_equal(buf, "hi", 2);
		close(c);
		close(a);
	}
	close(l);
	unlink(sa.sun_path);
	rmdir(dir);
}

static void test_sockets(void **state)
{
	(void)state;
	check_sockets(vfa_socket_unix, vfa_accept);
	check_sockets(vfa_socket_unix_posix, vfa_accept_posix);
}

static void test_random_bytes(void **state)
{
	uint8_t a[1000], b[1000], zero[1000] = { 0 };

	(void)state;
	memset(a, 0, sizeof(a));
	memset(b, 0, sizeof(b));
	/* more than getentropy's 256 bytes per call */
	assert_int_equal(vfa_random_bytes(a, sizeof(a)), 0);
	assert_int_equal(vfa_random_bytes(b, sizeof(b)), 0);
	assert_memory_not_equal(a, b, sizeof(a));
	/* the tail is filled too */
	assert_memory_not_equal(a + 744, zero, 256);
	assert_int_equal(vfa_random_bytes(a, 0), 0);
}

static int cmp_int(const void *x, const void *y)
{
	int a = *(const int *)x, b = *(const int *)y;

	return (a > b) - (a < b);
}

static int freed;

static void count_free(void *key)
{
	freed++;
	free(key);
}

static void test_tdestroy(void **state)
{
	void *root = NULL;

	(void)state;
	for (int i = 0; i < 1000; i++) {
		int *k = malloc(sizeof(*k));

		assert_non_null(k);
		*k = (i * 7919) % 1000;
		assert_non_null(tsearch(k, &root, cmp_int));
	}
	freed = 0;
	vfa_tdestroy(&root, cmp_int, count_free);
	assert_null(root);
	assert_int_equal(freed, 1000);
	/* an empty tree and no free function */
	vfa_tdestroy(&root, cmp_int, NULL);
	assert_null(root);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_le_roundtrip),
		cmocka_unit_test(test_notifier),
		cmocka_unit_test(test_notifier_full_pipe_stays_signalled),
		cmocka_unit_test(test_shared_memory),
		cmocka_unit_test(test_sockets),
		cmocka_unit_test(test_random_bytes),
		cmocka_unit_test(test_tdestroy),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
