// SPDX-License-Identifier: MIT
/*
 * The one place for calls that differ between Linux and macOS.  Its Linux
 * branch is the only code of the core that may use Linux-only calls
 * (eventfd, memfd_create, accept4, getrandom, tdestroy):
 * scripts/check-portability.sh checks that with nm.
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif
#include "compat.h"

#include <errno.h>
#include <fcntl.h>
#include <search.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include <sys/random.h>

#ifdef __linux__
#include <sys/eventfd.h>
#endif

int vfa_set_cloexec(int fd, bool nonblock)
{
	int fdflags = fcntl(fd, F_GETFD);

	if (fdflags < 0 || fcntl(fd, F_SETFD, fdflags | FD_CLOEXEC) < 0)
		return -errno;
	if (nonblock) {
		int flags = fcntl(fd, F_GETFL);

		if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
			return -errno;
	}
	return 0;
}

/* SIGPIPE off per socket where the platform allows it (macOS, BSDs). */
static void no_sigpipe(int fd)
{
#ifdef SO_NOSIGPIPE
	int one = 1;

	setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof(one));
#else
	(void)fd;
#endif
}

/* Finish a descriptor made without the atomic flags; closes it on failure. */
static int finish_fd(int fd, bool nonblock)
{
	int rc;

	if (fd < 0)
		return -errno;
	rc = vfa_set_cloexec(fd, nonblock);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	no_sigpipe(fd);
	return fd;
}

/* Not atomic: a fork() in another thread could inherit the fd meanwhile. */
int vfa_socket_unix_posix(bool nonblock)
{
	return finish_fd(socket(AF_UNIX, SOCK_STREAM, 0), nonblock);
}

int vfa_accept_posix(int listen_fd, bool nonblock)
{
	/* Whether O_NONBLOCK is inherited from the listener differs between
	 * systems: set or clear it explicitly. */
	int fd = finish_fd(accept(listen_fd, NULL, NULL), nonblock);
	int flags;

	if (fd >= 0 && !nonblock && (flags = fcntl(fd, F_GETFL)) >= 0 && (flags & O_NONBLOCK))
		fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
	return fd;
}

int vfa_socket_unix(bool nonblock)
{
#ifdef __linux__
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);

	return fd < 0 ? -errno : fd;
#else
	return vfa_socket_unix_posix(nonblock);
#endif
}

int vfa_accept(int listen_fd, bool nonblock)
{
#ifdef __linux__
	int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0));

	return fd < 0 ? -errno : fd;
#else
	return vfa_accept_posix(listen_fd, nonblock);
#endif
}

int vfa_notifier_open_posix(int fds[2])
{
	int p[2], rc;

	if (pipe(p) < 0)
		return -errno;
	rc = vfa_set_cloexec(p[0], true);
	if (rc == 0)
		rc = vfa_set_cloexec(p[1], true);
	if (rc < 0) {
		close(p[0]);
		close(p[1]);
		return rc;
	}
	fds[0] = p[0];
	fds[1] = p[1];
	return 0;
}

int vfa_notifier_open(int fds[2])
{
#ifdef __linux__
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	if (fd < 0)
		return -errno;
	fds[0] = fds[1] = fd;
	return 0;
#else
	return vfa_notifier_open_posix(fds);
#endif
}

void vfa_notifier_close(int fds[2])
{
	if (fds[0] >= 0)
		close(fds[0]);
	if (fds[1] >= 0 && fds[1] != fds[0])
		close(fds[1]);
	fds[0] = fds[1] = -1;
}

int vfa_notifier_signal(int write_fd)
{
	const uint64_t one = 1;

	if (write(write_fd, &one, sizeof(one)) == (ssize_t)sizeof(one))
		return 0;
	/* A full pipe or a saturated eventfd is still signalled. */
	return errno == EAGAIN ? 0 : -errno;
}

int vfa_notifier_drain(int read_fd)
{
	uint64_t buf[64];
	int signalled = 0;

	for (;;) {
		ssize_t n = read(read_fd, buf, sizeof(buf));

		if (n > 0) {
			signalled = 1;
			continue;
		}
		if (n == 0 || errno == EAGAIN)
			return signalled;
		if (errno != EINTR)
			return -errno;
	}
}

int vfa_shared_memory_fd_posix(const char *name, size_t size)
{
	static unsigned counter;
	char path[64];
	int fd = -1, rc;

	/* A unique name, removed at once: only the fd keeps the memory. */
	for (int tries = 0; tries < 16 && fd < 0; tries++) {
		/* macOS allows 31 characters: "/vfa-" + 6 + "-" + pid + "-" + counter fits. */
		snprintf(path, sizeof(path), "/vfa-%.6s-%ld-%u", name, (long)getpid(), counter++);
		fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
		if (fd < 0 && errno != EEXIST)
			return -errno;
	}
	if (fd < 0)
		return -EEXIST;
	shm_unlink(path);
	rc = vfa_set_cloexec(fd, false);
	if (rc == 0 && ftruncate(fd, (off_t)size) < 0)
		rc = -errno;
	if (rc < 0) {
		close(fd);
		return rc;
	}
	return fd;
}

int vfa_shared_memory_fd(const char *name, size_t size)
{
#ifdef __linux__
	int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0) {
		int rc = -errno;

		close(fd);
		return rc;
	}
	return fd;
#else
	return vfa_shared_memory_fd_posix(name, size);
#endif
}

int vfa_random_bytes(void *buf, size_t len)
{
	uint8_t *p = buf;

	/* getentropy: glibc >= 2.25 and macOS >= 10.12; at most 256 bytes a call. */
	while (len > 0) {
		size_t chunk = len < 256 ? len : 256;

		if (getentropy(p, chunk) < 0)
			return -errno;
		p += chunk;
		len -= chunk;
	}
	return 0;
}

void vfa_tdestroy(void **root, int (*cmp)(const void *, const void *), void (*free_key)(void *))
{
	/* POSIX: a node's first member is the pointer to its key. */
	while (*root) {
		void *key = *(void **)*root;

		tdelete(key, root, cmp);
		if (free_key)
			free_key(key);
	}
}
