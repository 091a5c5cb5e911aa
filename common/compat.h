/* SPDX-License-Identifier: MIT */
/*
 * The few host facilities that Linux and macOS spell differently, each with
 * a POSIX fallback.  The fallbacks are compiled on Linux too (the *_posix
 * names), so the unit tests exercise the code a Mac would run.
 */
#ifndef VFA_COMPAT_H
#define VFA_COMPAT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* macOS has no MSG_NOSIGNAL: callers there rely on SO_NOSIGPIPE or an
 * ignored SIGPIPE instead (vfa_socket_unix sets SO_NOSIGPIPE). */
#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

/* FD_CLOEXEC, and O_NONBLOCK when nonblock.  0 or -errno. */
int vfa_set_cloexec(int fd, bool nonblock);

/*
 * An AF_UNIX stream socket, close-on-exec (and non-blocking when asked),
 * with SIGPIPE off where the platform has SO_NOSIGPIPE: what
 * socket(SOCK_CLOEXEC | SOCK_NONBLOCK) and accept4() do on Linux.
 * fd or -errno.
 */
int vfa_socket_unix(bool nonblock);
int vfa_accept(int listen_fd, bool nonblock);
int vfa_socket_unix_posix(bool nonblock);
int vfa_accept_posix(int listen_fd, bool nonblock);

/*
 * An interrupt notifier: fds[1] is written to signal, fds[0] is polled and
 * drained.  Linux: one eventfd (fds[0] == fds[1]); elsewhere a non-blocking
 * close-on-exec pipe.  Signals are 8-byte writes of 1, as QEMU's event
 * notifiers write them.  0 or -errno.
 */
int vfa_notifier_open(int fds[2]);
int vfa_notifier_open_posix(int fds[2]);
/* Closes both ends (once when they are the same fd) and sets them to -1. */
void vfa_notifier_close(int fds[2]);
/* Signal: 0, also when the notifier is already full (it stays signalled). */
int vfa_notifier_signal(int write_fd);
/* Read everything pending: 1 if it was signalled, 0 if not, or -errno. */
int vfa_notifier_drain(int read_fd);

/*
 * A file descriptor of size zeroed bytes that another process can mmap
 * MAP_SHARED (what QEMU's shareable guest RAM is).  Linux: a memfd that
 * accepts seals; elsewhere shm_open() of a unique name, unlinked at once.
 * fd (close-on-exec) or -errno.
 */
int vfa_shared_memory_fd(const char *name, size_t size);
int vfa_shared_memory_fd_posix(const char *name, size_t size);

/* Fill buf from the kernel's random source (getrandom / getentropy).
 * 0 or -errno. */
int vfa_random_bytes(void *buf, size_t len);

/*
 * tdestroy() is a GNU extension: free every node of a tsearch() tree and
 * leave *root NULL.  free_key (may be NULL) is called on each key after its
 * node is gone.  cmp is the tree's comparison function.
 */
void vfa_tdestroy(void **root, int (*cmp)(const void *, const void *), void (*free_key)(void *));

#endif
