/* SPDX-License-Identifier: MIT */
/*
 * The broker's control socket: `vfio-apple status` connects, writes
 * "status\n" and reads one JSON line back (docs/passthrough.md lists its
 * fields; broker/status.c writes it).  At most CONTROL_MAX_CONNS
 * connections at once (the oldest is dropped for a newcomer); peers of
 * another uid are refused; nothing blocks: an answer the peer does not
 * read waits in its connection's buffer, polled for POLLOUT.
 */
#ifndef VFA_BROKER_CONTROL_H
#define VFA_BROKER_CONTROL_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

#define CONTROL_MAX_CONNS 8
#define CONTROL_REQUEST_MAX 64

struct control;

/* The answer to "status": a malloc'ed string (one JSON object, no newline), or NULL. */
typedef char *(*control_status_fn)(void *opaque);

/* Listen on path (common/unix_socket.h rules).  NULL with err on failure. */
struct control *control_create(const char *path, control_status_fn status, void *opaque, char *err,
			       size_t errlen);
/* Closes every connection and unlinks the socket. */
void control_destroy(struct control *c);

/*
 * Poll set: slot 0 is the listening socket, 1..CONTROL_MAX_CONNS the
 * connections.  Fills fds[]/events[] for slot (fd -1: nothing to poll).
 */
void control_poll_slot(const struct control *c, unsigned slot, int *fd, short *events);
/* Slot ready (revents from poll). */
void control_handle(struct control *c, unsigned slot, short revents);

/* Connections refused for their uid since create. */
uint64_t control_refused_peers(const struct control *c);

#endif
