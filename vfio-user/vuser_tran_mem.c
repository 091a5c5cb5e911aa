// SPDX-License-Identifier: MIT
/*
 * The vfio-user transport over memory buffers (vuser_tran.h): the server's
 * dispatch with no socket, for tests and fuzzers.  Messages are pushed
 * whole; replies are appended to a buffer.
 */
#include "vuser_tran.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct pushed {
	uint8_t *bytes;
	size_t len;
	int fds[VFU_MAX_MSG_FDS];
	unsigned nfds;
	bool fds_lost;
};

struct tran_mem {
	struct vuser_tran t; /* first */
	bool attached, hung_up;
	struct pushed *q;
	size_t qlen, qcap, qhead;
	bool current; /* q[qhead - 1] was handed to recv and not yet done */
	uint8_t *out;
	size_t out_len, out_cap;
};

static struct tran_mem *to_mem(struct vuser_tran *t)
{
	return (struct tran_mem *)t;
}

static void close_fds(struct pushed *p)
{
	for (unsigned i = 0; i < p->nfds; i++)
		if (p->fds[i] >= 0)
			close(p->fds[i]);
	p->nfds = 0;
}

static void drop_queue(struct tran_mem *m)
{
	for (size_t i = 0; i < m->qlen; i++) {
		close_fds(&m->q[i]);
		free(m->q[i].bytes);
	}
	m->qlen = m->qhead = 0;
	m->current = false;
}

static int mem_listen_fd(const struct vuser_tran *t)
{
	(void)t;
	return -1;
}

static int mem_accept(struct vuser_tran *t, struct vuser_accept *out)
{
	struct tran_mem *m = to_mem(t);

	*out = (struct vuser_accept){ .fd = 0, .uid = getuid(), .pid = getpid() };
	if (m->attached) {
		out->busy = true;
		return 0;
	}
	m->attached = true;
	m->hung_up = false;
	out->fd = 1; /* "a client": there is no fd to poll */
	return 0;
}

static void mem_unlink(struct vuser_tran *t)
{
	(void)t;
}

static void mem_msg_done(struct vuser_tran *t)
{
	struct tran_mem *m = to_mem(t);

	if (m->current) {
		struct pushed *p = &m->q[m->qhead - 1];

		close_fds(p);
		free(p->bytes);
		p->bytes = NULL;
		m->current = false;
	}
	if (m->qhead == m->qlen)
		m->qhead = m->qlen = 0;
}

static enum vuser_rx mem_recv(struct vuser_tran *t, struct vuser_msg *msg)
{
	struct tran_mem *m = to_mem(t);
	struct pushed *p;
	struct vfu_hdr h;

	mem_msg_done(t);
	if (!m->attached)
		return VUSER_RX_EOF;
	if (m->qhead == m->qlen)
		return m->hung_up ? VUSER_RX_EOF : VUSER_RX_AGAIN;
	p = &m->q[m->qhead++];
	m->current = true;
	/* The same framing rules as the socket: a whole message, its size in its header. */
	if (p->len < sizeof(h))
		return VUSER_RX_BROKEN;
	memcpy(&h, p->bytes, sizeof(h));
	if (h.size < sizeof(h) || h.size != p->len)
		return VUSER_RX_BROKEN;
	if (h.size > VFU_MAX_MSG_SIZE) {
		msg->hdr = h;
		return VUSER_RX_TOO_BIG;
	}
	*msg = (struct vuser_msg){
		.hdr = h,
		.body = p->bytes + sizeof(h),
		.len = h.size - (uint32_t)sizeof(h),
		.fds = p->fds,
		.nfds = p->nfds,
		.fds_lost = p->fds_lost,
	};
	return VUSER_RX_MSG;
}

static int mem_send(struct vuser_tran *t, const void *buf, size_t len)
{
	struct tran_mem *m = to_mem(t);

	if (!m->attached)
		return -ENOTCONN;
	if (m->out_len + len > m->out_cap) {
		size_t cap = (m->out_len + len) * 2;
		uint8_t *n = realloc(m->out, cap);

		if (!n)
			return -ENOMEM;
		m->out = n;
		m->out_cap = cap;
	}
	memcpy(m->out + m->out_len, buf, len);
	m->out_len += len;
	return 0;
}

static int mem_flush(struct vuser_tran *t)
{
	(void)t;
	return 0;
}

static size_t mem_queued(const struct vuser_tran *t)
{
	(void)t;
	return 0; /* replies are taken by the test, never waiting for room */
}

static void mem_close_client(struct vuser_tran *t)
{
	struct tran_mem *m = to_mem(t);

	drop_queue(m);
	m->attached = false;
}

static int mem_client_fd(const struct vuser_tran *t)
{
	const struct tran_mem *m = (const struct tran_mem *)t;

	return m->attached ? 1 : -1;
}

static void mem_destroy(struct vuser_tran *t)
{
	struct tran_mem *m = to_mem(t);

	if (!t)
		return;
	drop_queue(m);
	free(m->q);
	free(m->out);
	free(m);
}

static const struct vuser_tran_ops mem_ops = {
	.listen_fd = mem_listen_fd,
	.accept = mem_accept,
	.unlink = mem_unlink,
	.recv = mem_recv,
	.msg_done = mem_msg_done,
	.send = mem_send,
	.flush = mem_flush,
	.queued = mem_queued,
	.close_client = mem_close_client,
	.client_fd = mem_client_fd,
	.destroy = mem_destroy,
};

struct vuser_tran *vuser_tran_mem_create(void)
{
	struct tran_mem *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->t.ops = &mem_ops;
	return &m->t;
}

int vuser_tran_mem_push(struct vuser_tran *t, const void *msg, size_t len, const int *fds, unsigned nfds)
{
	struct tran_mem *m = to_mem(t);
	struct pushed *p;

	if (m->qlen == m->qcap) {
		size_t cap = m->qcap ? m->qcap * 2 : 16;
		struct pushed *n = realloc(m->q, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		m->q = n;
		m->qcap = cap;
	}
	p = &m->q[m->qlen];
	*p = (struct pushed){ .bytes = malloc(len ? len : 1), .len = len };
	if (!p->bytes)
		return -ENOMEM;
	if (len)
		memcpy(p->bytes, msg, len);
	for (unsigned i = 0; i < nfds; i++) {
		if (p->nfds < VFU_MAX_MSG_FDS) {
			p->fds[p->nfds++] = fds[i];
		} else {
			close(fds[i]);
			p->fds_lost = true;
		}
	}
	m->qlen++;
	return 0;
}

size_t vuser_tran_mem_take(struct vuser_tran *t, void *buf, size_t cap)
{
	struct tran_mem *m = to_mem(t);
	size_t n = m->out_len < cap ? m->out_len : cap;

	if (n == 0)
		return 0;
	memcpy(buf, m->out, n);
	memmove(m->out, m->out + n, m->out_len - n);
	m->out_len -= n;
	return n;
}

void vuser_tran_mem_hangup(struct vuser_tran *t)
{
	to_mem(t)->hung_up = true;
}
