/* SPDX-License-Identifier: MIT */
/*
 * A minimal vfio-user client for the tests: it writes raw messages (so tests
 * can also write broken ones) and reads replies with a timeout.
 */
#ifndef VFA_TEST_VFU_CLIENT_H
#define VFA_TEST_VFU_CLIENT_H

#include "vfu_protocol.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Connected, blocking socket, or -errno. */
int vfuc_connect(const char *path);
/* Send bytes as one sendmsg with fds attached; 0 or -errno. */
int vfuc_send_raw(int fd, const void *buf, size_t len, const int *fds, unsigned nfds);
/* Send a request: header (size computed) + payload; 0 or -errno. */
int vfuc_send(int fd, uint16_t id, uint16_t cmd, uint32_t flags, const void *payload, size_t len,
	      const int *fds, unsigned nfds);
/*
 * Read one message (waits at most timeout_ms): header into *hdr, payload
 * (at most cap bytes; larger is an error) into buf.  Returns the payload
 * length, -ETIMEDOUT, -ECONNRESET on EOF, or -errno.
 */
ssize_t vfuc_recv(int fd, struct vfu_hdr *hdr, void *buf, size_t cap, int timeout_ms);
/* True when nothing arrives within timeout_ms (and no EOF). */
int vfuc_quiet(int fd, int timeout_ms);
/* A VERSION payload with the given JSON (NULL: no JSON); returns its length. */
size_t vfuc_version_payload(void *buf, size_t cap, uint16_t major, uint16_t minor, const char *json);
/* Open file descriptors in this process (to prove fds are not leaked). */
int vfuc_count_fds(void);

#endif
