/* SPDX-License-Identifier: MIT */
/*
 * The vfio-user transport: how messages get in and replies get out, and
 * nothing about what they mean.  The server (vfu_server.c) holds one and
 * calls it; the transport never calls the server (the seam libvfio-user
 * draws with struct transport_ops in lib/tran.h).
 *
 * Two implementations: a UNIX stream socket (vuser_tran_sock.c, what the
 * broker serves) and memory buffers (vuser_tran_mem.c: tests and fuzzers
 * drive the server's dispatch with no socket at all).  The socket one:
 *
 * - Receiving: a message is read with exact lengths (header, then body),
 *   so the fds a client attaches (SCM_RIGHTS) arrive with that message and
 *   never with a neighbour.  Partial reads are kept between calls.
 * - Replying never blocks: what the socket does not take at once waits in
 *   a per-client output queue, sent when the socket is writable again.
 *   While the queue holds VUSER_TXQ_PAUSE bytes or more the server reads no
 *   new request (the client's own sends then block, not the broker);
 *   a queue that would grow past VUSER_TXQ_MAX drops the client.
 * - Accepting: one client at a time; only a peer of the broker's own uid or
 *   root (common/unix_socket.h) is accepted.
 */
#ifndef VFA_VUSER_TRAN_H
#define VFA_VUSER_TRAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "vfu_protocol.h"

/* Output queued beyond this: stop reading requests until it drains. */
#define VUSER_TXQ_PAUSE (64u * 1024)
/* A queue that would exceed this drops the client (one largest reply fits). */
#define VUSER_TXQ_MAX (VUSER_TXQ_PAUSE + VFU_MAX_MSG_SIZE)

/* One complete request, owned by the transport until vuser_tran_msg_done(). */
struct vuser_msg {
	struct vfu_hdr hdr;
	const uint8_t *body; /* hdr.size - header bytes */
	uint32_t len;
	int *fds;            /* fds sent with it; a consumer that keeps one sets it to -1 */
	unsigned nfds;
	bool fds_lost;       /* more fds than VFU_MAX_MSG_FDS, or truncated */
};

/* What recv found. */
enum vuser_rx {
	VUSER_RX_MSG = 1,       /* a complete message in *msg */
	VUSER_RX_AGAIN = 0,     /* nothing complete yet: wait for readability */
	VUSER_RX_EOF = -1,      /* the client closed (or an I/O error) */
	VUSER_RX_BROKEN = -2,   /* broken framing: drop the client */
	VUSER_RX_TOO_BIG = -3,  /* a size above the largest legal message (hdr is valid): reply E2BIG, drop */
};

struct vuser_tran;
struct vuser_accept;

struct vuser_tran_ops {
	/* The fd to poll for new connections (-1: none, as in memory). */
	int (*listen_fd)(const struct vuser_tran *t);
	/* Accept one connection (see struct vuser_accept).  0 or -errno. */
	int (*accept)(struct vuser_tran *t, struct vuser_accept *out);
	/* Remove what the transport left in the file system (the socket path). */
	void (*unlink)(struct vuser_tran *t);
	/* Next message of the attached client. */
	enum vuser_rx (*recv)(struct vuser_tran *t, struct vuser_msg *msg);
	/* Close the fds recv handed over that nobody took; ready for the next one. */
	void (*msg_done)(struct vuser_tran *t);
	/* Queue a reply (header included) and send what the socket takes now.
	 * 0, or -ENOBUFS (queue overflow) / -errno (socket gone): drop the client. */
	int (*send)(struct vuser_tran *t, const void *buf, size_t len);
	/* Socket writable: send from the queue.  0 or -errno (drop the client). */
	int (*flush)(struct vuser_tran *t);
	/* Bytes waiting in the output queue. */
	size_t (*queued)(const struct vuser_tran *t);
	/* Close the client's connection and forget its partial message and queue. */
	void (*close_client)(struct vuser_tran *t);
	/* The attached client's fd, -1 when none. */
	int (*client_fd)(const struct vuser_tran *t);
	void (*destroy)(struct vuser_tran *t);
};

struct vuser_tran {
	const struct vuser_tran_ops *ops;
};

/* Result of an accept. */
struct vuser_accept {
	int fd;        /* > 0: the new client; 0: none (nothing pending, or refused) */
	bool busy;     /* refused: a client is already attached */
	bool stranger; /* refused: a peer of another uid */
	uid_t uid;     /* the peer's uid and pid (pid 0: unknown) */
	pid_t pid;
};

/*
 * Listen on path (common/unix_socket.h: only a stale socket is replaced,
 * mode 0600).  NULL with a sentence in err on failure.
 */
struct vuser_tran *vuser_tran_sock_listen(const char *path, char *err, size_t errlen);

/*
 * The memory transport: one client that is always there once accepted
 * (its accept attaches it, pid = ours).  Requests are pushed whole, with
 * fds (which the transport then owns); replies collect in a buffer that
 * vuser_tran_mem_take() empties.  No fd to poll.
 */
struct vuser_tran *vuser_tran_mem_create(void);
/* Queue one complete message (header included); 0 or -ENOMEM.  A pushed
 * fd is closed by the transport unless the server keeps it. */
int vuser_tran_mem_push(struct vuser_tran *t, const void *msg, size_t len, const int *fds, unsigned nfds);
/* Copy out and remove up to cap bytes of replies; returns how many. */
size_t vuser_tran_mem_take(struct vuser_tran *t, void *buf, size_t cap);
/* The client hangs up: the next recv sees EOF. */
void vuser_tran_mem_hangup(struct vuser_tran *t);

#endif
