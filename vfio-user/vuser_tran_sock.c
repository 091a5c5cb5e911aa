// SPDX-License-Identifier: MIT
/*
 * The vfio-user transport over a UNIX stream socket (vuser_tran.h): exact
 * framing with SCM_RIGHTS, a bounded non-blocking output queue, one client
 * at a time, peers of our uid or root only.
 */
#include "vuser_tran.h"

#include "compat.h"
#include "errmsg.h"
#include "log.h"
#include "unix_socket.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Received fds close-on-exec: atomically where recvmsg can (Linux), else just after. */
#ifdef MSG_CMSG_CLOEXEC
#define RECV_CLOEXEC MSG_CMSG_CLOEXEC
#define SET_CLOEXEC_AFTER 0
#else
#define RECV_CLOEXEC 0
#define SET_CLOEXEC_AFTER 1
#endif

#define HDR_SIZE ((uint32_t)sizeof(struct vfu_hdr))

struct tran_sock {
	struct vuser_tran t; /* first: the server's handle */
	char *path;
	int listen_fd;
	int fd; /* the client, -1 when none */

	/* Receive state of the message being read. */
	struct vfu_hdr rx_hdr;
	size_t rx_hdr_have;
	uint8_t *rx_body;
	size_t rx_body_cap;
	size_t rx_body_have;
	int rx_fds[VFU_MAX_MSG_FDS];
	unsigned rx_nfds;
	bool rx_fds_lost;

	/* Output queue: bytes [tx_off, tx_len) of tx wait for the socket. */
	uint8_t *tx;
	size_t tx_cap, tx_off, tx_len;
};

static struct tran_sock *to_sock(struct vuser_tran *t)
{
	return (struct tran_sock *)t;
}

static const struct tran_sock *to_csock(const struct vuser_tran *t)
{
	return (const struct tran_sock *)t;
}

static void close_rx_fds(struct tran_sock *s)
{
	for (unsigned i = 0; i < s->rx_nfds; i++)
		if (s->rx_fds[i] >= 0)
			close(s->rx_fds[i]);
	s->rx_nfds = 0;
	s->rx_fds_lost = false;
}

static void reset_rx(struct tran_sock *s)
{
	close_rx_fds(s);
	s->rx_hdr_have = 0;
	s->rx_body_have = 0;
	memset(&s->rx_hdr, 0, sizeof(s->rx_hdr));
}

/* Receive up to len bytes; fds that come along are kept for this message. */
static ssize_t recv_some(struct tran_sock *s, void *dst, size_t len)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * VFU_MAX_MSG_FDS)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = dst, .iov_len = len };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = ctl.buf,
		.msg_controllen = sizeof(ctl.buf),
	};
	ssize_t n;

	do {
		n = recvmsg(s->fd, &mh, MSG_DONTWAIT | RECV_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (mh.msg_flags & MSG_CTRUNC)
		s->rx_fds_lost = true;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		size_t nfds;
		const uint8_t *data;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		data = CMSG_DATA(c);
		for (size_t i = 0; i < nfds; i++) {
			int fd;

			memcpy(&fd, data + i * sizeof(int), sizeof(int));
			if (SET_CLOEXEC_AFTER)
				fcntl(fd, F_SETFD, FD_CLOEXEC);
			if (s->rx_nfds < VFU_MAX_MSG_FDS) {
				s->rx_fds[s->rx_nfds++] = fd;
			} else {
				close(fd);
				s->rx_fds_lost = true;
			}
		}
	}
	return n;
}

static int ensure_cap(uint8_t **buf, size_t *cap, size_t need)
{
	uint8_t *n;

	if (*cap >= need)
		return 0;
	n = realloc(*buf, need);
	if (!n)
		return -ENOMEM;
	*buf = n;
	*cap = need;
	return 0;
}

static enum vuser_rx sock_recv(struct vuser_tran *t, struct vuser_msg *msg)
{
	struct tran_sock *s = to_sock(t);
	ssize_t n;

	if (s->fd < 0)
		return VUSER_RX_EOF;
	if (s->rx_hdr_have < HDR_SIZE) {
		n = recv_some(s, (uint8_t *)&s->rx_hdr + s->rx_hdr_have, HDR_SIZE - s->rx_hdr_have);
		if (n == -EAGAIN || n == -EWOULDBLOCK)
			return VUSER_RX_AGAIN;
		if (n <= 0)
			return VUSER_RX_EOF;
		s->rx_hdr_have += (size_t)n;
		if (s->rx_hdr_have < HDR_SIZE)
			return VUSER_RX_AGAIN;
		if (s->rx_hdr.size < HDR_SIZE) {
			log_warn("vfio-user %s: message size %u is smaller than its header; dropping the client",
				 s->path, s->rx_hdr.size);
			return VUSER_RX_BROKEN;
		}
		if (s->rx_hdr.size > VFU_MAX_MSG_SIZE) {
			log_warn("vfio-user %s: message size %u exceeds the limit %zu; dropping the client",
				 s->path, s->rx_hdr.size, (size_t)VFU_MAX_MSG_SIZE);
			msg->hdr = s->rx_hdr;
			return VUSER_RX_TOO_BIG;
		}
		if (ensure_cap(&s->rx_body, &s->rx_body_cap, s->rx_hdr.size - HDR_SIZE + 1) < 0)
			return VUSER_RX_BROKEN;
		s->rx_body_have = 0;
	}
	if (s->rx_body_have < s->rx_hdr.size - HDR_SIZE) {
		n = recv_some(s, s->rx_body + s->rx_body_have, s->rx_hdr.size - HDR_SIZE - s->rx_body_have);
		if (n == -EAGAIN || n == -EWOULDBLOCK)
			return VUSER_RX_AGAIN;
		if (n <= 0)
			return VUSER_RX_EOF; /* EOF in the middle of a message */
		s->rx_body_have += (size_t)n;
		if (s->rx_body_have < s->rx_hdr.size - HDR_SIZE)
			return VUSER_RX_AGAIN;
	}
	*msg = (struct vuser_msg){
		.hdr = s->rx_hdr,
		.body = s->rx_body,
		.len = s->rx_hdr.size - HDR_SIZE,
		.fds = s->rx_fds,
		.nfds = s->rx_nfds,
		.fds_lost = s->rx_fds_lost,
	};
	return VUSER_RX_MSG;
}

static void sock_msg_done(struct vuser_tran *t)
{
	reset_rx(to_sock(t));
}

/* Send from the queue what the socket takes now. */
static int sock_flush(struct vuser_tran *t)
{
	struct tran_sock *s = to_sock(t);

	while (s->tx_off < s->tx_len) {
		ssize_t n = send(s->fd, s->tx + s->tx_off, s->tx_len - s->tx_off, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			s->tx_off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		return n < 0 ? -errno : -EIO;
	}
	s->tx_off = s->tx_len = 0;
	return 0;
}

static int sock_send(struct vuser_tran *t, const void *buf, size_t len)
{
	struct tran_sock *s = to_sock(t);
	const uint8_t *p = buf;

	if (s->fd < 0)
		return -ENOTCONN;
	/* Straight out when nothing waits before it (the common case). */
	while (s->tx_len == 0 && len > 0) {
		ssize_t n = send(s->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		return n < 0 ? -errno : -EIO;
	}
	if (len == 0)
		return 0;
	if (s->tx_len - s->tx_off + len > VUSER_TXQ_MAX)
		return -ENOBUFS;
	if (s->tx_off > 0) { /* compact: the sent head goes */
		memmove(s->tx, s->tx + s->tx_off, s->tx_len - s->tx_off);
		s->tx_len -= s->tx_off;
		s->tx_off = 0;
	}
	if (ensure_cap(&s->tx, &s->tx_cap, s->tx_len + len) < 0)
		return -ENOMEM;
	memcpy(s->tx + s->tx_len, p, len);
	s->tx_len += len;
	return 0;
}

static size_t sock_queued(const struct vuser_tran *t)
{
	const struct tran_sock *s = to_csock(t);

	return s->tx_len - s->tx_off;
}

static void sock_close_client(struct vuser_tran *t)
{
	struct tran_sock *s = to_sock(t);

	reset_rx(s);
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->tx_off = s->tx_len = 0;
	/* A big queue or body is not kept for the next client. */
	if (s->tx_cap > VUSER_TXQ_PAUSE) {
		free(s->tx);
		s->tx = NULL;
		s->tx_cap = 0;
	}
}

static int sock_client_fd(const struct vuser_tran *t)
{
	return to_csock(t)->fd;
}

static void sock_destroy(struct vuser_tran *t)
{
	struct tran_sock *s = to_sock(t);

	if (!t)
		return;
	sock_close_client(t);
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	free(s->rx_body);
	free(s->tx);
	free(s->path);
	free(s);
}

static int sock_listen_fd(const struct vuser_tran *t);
static int sock_accept(struct vuser_tran *t, struct vuser_accept *out);
static void sock_unlink(struct vuser_tran *t);

static const struct vuser_tran_ops sock_ops = {
	.listen_fd = sock_listen_fd,
	.accept = sock_accept,
	.unlink = sock_unlink,
	.recv = sock_recv,
	.msg_done = sock_msg_done,
	.send = sock_send,
	.flush = sock_flush,
	.queued = sock_queued,
	.close_client = sock_close_client,
	.client_fd = sock_client_fd,
	.destroy = sock_destroy,
};

struct vuser_tran *vuser_tran_sock_listen(const char *path, char *err, size_t errlen)
{
	struct tran_sock *s = calloc(1, sizeof(*s));

	if (!s || !(s->path = strdup(path))) {
		free(s);
		vfa_set_err(err, errlen, "out of memory");
		return NULL;
	}
	s->t.ops = &sock_ops;
	s->fd = -1;
	s->listen_fd = vfa_listen_unix(path, 4, err, errlen);
	if (s->listen_fd < 0) {
		free(s->path);
		free(s);
		return NULL;
	}
	return &s->t;
}

static int sock_listen_fd(const struct vuser_tran *t)
{
	return to_csock(t)->listen_fd;
}

static int sock_accept(struct vuser_tran *t, struct vuser_accept *out)
{
	struct tran_sock *s = to_sock(t);
	int fd;

	*out = (struct vuser_accept){ .fd = 0, .uid = (uid_t)-1 };
	do {
		fd = vfa_accept(s->listen_fd, true);
	} while (fd == -EINTR);
	if (fd < 0)
		return fd == -EAGAIN || fd == -EWOULDBLOCK || fd == -ECONNABORTED ? 0 : fd;
	if (fd == 0) {
		/* 0 means "nothing accepted" to our caller: move it (stdin was closed) */
		int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);

		close(fd);
		if (moved < 0)
			return -errno;
		fd = moved;
	}
	if (!vfa_socket_peer_allowed(fd, &out->uid, &out->pid)) {
		out->stranger = true;
		close(fd);
		return 0;
	}
	if (s->fd >= 0) {
		/* one VMM per device: the newcomer just sees the socket close */
		out->busy = true;
		close(fd);
		return 0;
	}
	s->fd = fd;
	reset_rx(s);
	s->tx_off = s->tx_len = 0;
	out->fd = fd;
	return 0;
}

static void sock_unlink(struct vuser_tran *t)
{
	unlink(to_sock(t)->path);
}
