/* SPDX-License-Identifier: MIT */
/*
 * The broker's control socket: a client connects, writes one request line
 * and reads one JSON line back (docs/passthrough.md, "Control socket"):
 *   status      the status document (broker/status.c writes it), then close;
 *   watch       the connection stays open: one event line now (the current
 *               state) and one more at every change (control_broadcast);
 *   anything else goes to the command handler (control_set_handlers), whose
 *               one-line answer is sent before the connection closes.
 * At most CONTROL_MAX_CONNS connections at once (for a newcomer the oldest
 * is dropped, a watcher only when every slot watches); peers of another
 * uid are refused; nothing blocks: an answer the peer does not read waits
 * in its connection's buffer, polled for POLLOUT, and a watcher whose
 * unread events pass CONTROL_WATCH_BUF bytes is dropped.
 */
#ifndef VFA_BROKER_CONTROL_H
#define VFA_BROKER_CONTROL_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

#define CONTROL_MAX_CONNS 8
#define CONTROL_REQUEST_MAX 64
#define CONTROL_WATCH_BUF 4096 /* unread event bytes a watcher may have waiting */

struct control;

/* The answer to "status": a malloc'ed string (one JSON object, no newline), or NULL. */
typedef char *(*control_status_fn)(void *opaque);

/*
 * A request other than "status" and "watch" (no newline): a malloc'ed JSON
 * object (no newline), or NULL for a request it does not know.
 */
typedef char *(*control_command_fn)(void *opaque, const char *request);
/* For "watch": the current state as one event, a malloc'ed JSON object (no newline). */
typedef char *(*control_event_fn)(void *opaque);

/* Listen on path (common/unix_socket.h rules).  NULL with err on failure. */
struct control *control_create(const char *path, control_status_fn status, void *opaque, char *err,
			       size_t errlen);
/* Optional: commands and "watch" (without them both are unknown requests). */
void control_set_handlers(struct control *c, control_command_fn command, control_event_fn current);
/* Send one event (a JSON object, no newline) to every watcher. */
void control_broadcast(struct control *c, const char *event);
/* Connections watching now, and watchers dropped for not reading since create. */
unsigned control_watchers(const struct control *c);
uint64_t control_watchers_dropped(const struct control *c);

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
