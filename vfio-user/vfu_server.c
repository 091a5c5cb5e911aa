// SPDX-License-Identifier: MIT
/*
 * The vfio-user server: one listening socket, at most one client, one
 * device behind struct vfu_device_ops.  See vfu_server.h for the API and
 * docs/vfio-user.md for what is supported and why.
 *
 * Receiving: messages are read one at a time with exact lengths (header,
 * then body), so the file descriptors a client attaches to a message
 * (SCM_RIGHTS) arrive with that message's first bytes and never with a
 * neighbour's.  Partial reads are kept between calls.
 *
 * Replying: replies go out in order, on the non-blocking socket, waiting
 * for room (poll) at most VFU_SEND_TIMEOUT_MS; a client that does not read
 * its replies for that long is dropped.
 */
#include "vfu_server.h"

#include "guest_mem.h"
#include "log.h"
#include "vfu_protocol.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* macOS: SO_NOSIGPIPE is set on the socket instead */
#endif
#ifndef MSG_CMSG_CLOEXEC
#define MSG_CMSG_CLOEXEC 0
#endif

#define VFU_SEND_TIMEOUT_MS 5000
#define VFU_BATCH 64 /* messages per vfu_server_handle() call */
#define HDR_SIZE ((uint32_t)sizeof(struct vfu_hdr))

struct vfu_vector {
	int fd; /* eventfd from the client, -1 when none */
	bool masked;
	bool pending; /* triggered while masked */
};

struct vfu_irq_index {
	unsigned count;
	struct vfu_vector *v;
};

/* One DMA_MAP window. */
struct vfu_dma {
	uint64_t gpa;
	uint64_t len;
	void *map_base; /* mmap() result (page-aligned); NULL without fd */
	size_t map_len;
};

struct vfu_server {
	char *path;
	int listen_fd;
	const struct vfu_device_ops *ops;
	void *opaque;

	/* The client (fd -1 when none). */
	int client_fd;
	bool negotiated;
	bool drop; /* a send failed: drop the client after this message */
	bool posted; /* the message being processed is a posted write (vfu_server_write_posted) */

	/* Receive state of the message being read. */
	struct vfu_hdr rx_hdr;
	size_t rx_hdr_have;
	uint8_t *rx_body;
	size_t rx_body_cap;
	size_t rx_body_have;
	int rx_fds[VFU_MAX_MSG_FDS];
	unsigned rx_nfds;
	bool rx_fds_lost; /* more fds than we take, or truncated */

	/* Reply buffer (header + payload). */
	uint8_t *tx;
	size_t tx_cap;

	struct guest_mem *gm;
	struct vfu_dma *dma;
	size_t ndma;
	struct vfu_irq_index irqs[VFU_PCI_NUM_IRQS];

	struct vfu_stats stats;
};

/* ---------------------------------------------------------------- utils */

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static void close_rx_fds(struct vfu_server *s)
{
	for (unsigned i = 0; i < s->rx_nfds; i++)
		if (s->rx_fds[i] >= 0)
			close(s->rx_fds[i]);
	s->rx_nfds = 0;
	s->rx_fds_lost = false;
}

static void reset_rx(struct vfu_server *s)
{
	close_rx_fds(s);
	s->rx_hdr_have = 0;
	s->rx_body_have = 0;
	memset(&s->rx_hdr, 0, sizeof(s->rx_hdr));
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

/* ---------------------------------------------------------- send/receive */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Write all of buf, waiting for room at most VFU_SEND_TIMEOUT_MS overall. */
static int send_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	int64_t deadline = -1;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };
			int64_t left;

			if (deadline < 0)
				deadline = now_ms() + VFU_SEND_TIMEOUT_MS;
			left = deadline - now_ms();
			if (left <= 0)
				return -ETIMEDOUT;
			if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
				return -errno;
			continue;
		}
		return n < 0 ? -errno : -EIO;
	}
	return 0;
}

static void send_msg(struct vfu_server *s, const struct vfu_hdr *req, uint32_t payload_len, int error)
{
	struct vfu_hdr h = {
		.id = req->id,
		.command = req->command,
		.size = HDR_SIZE + (error ? 0 : payload_len),
		.flags = VFU_FLAG_TYPE_REPLY | (error ? VFU_FLAG_ERROR : 0),
		.error = (uint32_t)error,
	};
	int r;

	memcpy(s->tx, &h, sizeof(h));
	r = send_all(s->client_fd, s->tx, h.size);
	if (r < 0) {
		log_warn("vfio-user %s: cannot send a reply (%s); dropping the client", s->path, strerror(-r));
		s->drop = true;
	}
}

/* Receive up to len bytes; fds that come along are kept for this message. */
static ssize_t recv_some(struct vfu_server *s, void *dst, size_t len)
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
		n = recvmsg(s->client_fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
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

/* ------------------------------------------------------------------ DMA */

static void dma_forget(struct vfu_server *s, size_t i)
{
	struct vfu_dma *d = &s->dma[i];
	int r = guest_mem_remove(s->gm, d->gpa, d->len);

	if (r < 0)
		log_error("vfio-user: DMA window 0x%llx+0x%llx missing from the guest memory map",
			  (unsigned long long)d->gpa, (unsigned long long)d->len);
	if (d->map_base)
		munmap(d->map_base, d->map_len);
	s->dma[i] = s->dma[--s->ndma];
}

static void warn_unsealed(int fd)
{
#ifdef F_GET_SEALS
	int seals = fcntl(fd, F_GET_SEALS);

	if (seals >= 0 && (seals & F_SEAL_SHRINK))
		return;
#else
	(void)fd;
#endif
	static bool warned;

	if (!warned) {
		warned = true;
		log_warn("vfio-user: guest memory file is not sealed against shrinking; a VMM that "
			 "truncates it can crash the broker (use a sealed memfd backend)");
	}
}

static int handle_dma_map(struct vfu_server *s, const uint8_t *p, uint32_t len)
{
	struct vfu_dma_map m;
	void *base = NULL, *va = NULL;
	size_t map_len = 0;
	bool writable;
	int fd = -1, r;

	if (len < sizeof(m))
		return -EINVAL;
	memcpy(&m, p, sizeof(m));
	if (m.argsz < sizeof(m))
		return -EINVAL;
	if (m.flags & ~(VFU_DMA_MAP_FLAG_READ | VFU_DMA_MAP_FLAG_WRITE))
		return -EINVAL;
	/* Like Linux VFIO: a window the device cannot even read is useless. */
	if (!(m.flags & VFU_DMA_MAP_FLAG_READ))
		return -EINVAL;
	if (m.size == 0 || m.addr + m.size < m.addr || ((m.addr | m.size) & (VFU_DMA_PGSIZE - 1)))
		return -EINVAL;
	if (s->rx_nfds > 1)
		return -EINVAL;
	if (s->ndma >= VFU_MAX_DMA_MAPS)
		return -ENOSPC;
	writable = m.flags & VFU_DMA_MAP_FLAG_WRITE;

	if (s->rx_nfds == 1) {
		struct stat st;
		long pg = sysconf(_SC_PAGESIZE);
		uint64_t delta;

		fd = s->rx_fds[0];
		if (fstat(fd, &st) < 0)
			return -errno;
		/* memfd, shm, hugetlbfs and plain files are regular files */
		if (!S_ISREG(st.st_mode))
			return -EINVAL;
		if (m.offset + m.size < m.offset || m.offset + m.size > (uint64_t)st.st_size)
			return -EINVAL;
		if (pg <= 0)
			pg = 4096;
		delta = m.offset % (uint64_t)pg;
		if (m.size > SIZE_MAX - delta)
			return -EINVAL;
		map_len = (size_t)(m.size + delta);
		base = mmap(NULL, map_len, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd,
			    (off_t)(m.offset - delta));
		if (base == MAP_FAILED)
			return -errno;
		va = (uint8_t *)base + delta;
		warn_unsealed(fd);
	}

	r = guest_mem_add(s->gm, m.addr, m.size, va, writable);
	if (r < 0)
		goto undo_mmap;
	if (s->ops->dma_map) {
		r = s->ops->dma_map(s->opaque, m.addr, m.size, va, writable);
		if (r < 0) {
			guest_mem_remove(s->gm, m.addr, m.size);
			goto undo_mmap;
		}
	}
	s->dma[s->ndma++] = (struct vfu_dma){ .gpa = m.addr, .len = m.size, .map_base = base, .map_len = map_len };
	s->stats.dma_maps++;
	log_debug("vfio-user: DMA_MAP 0x%llx+0x%llx %s%s", (unsigned long long)m.addr,
		  (unsigned long long)m.size, writable ? "rw" : "ro", va ? "" : " (no fd: unreachable)");
	/* the mapping keeps the memory; the fd itself is not needed */
	return 0;

undo_mmap:
	if (base)
		munmap(base, map_len);
	return r;
}

static int handle_dma_unmap(struct vfu_server *s, const uint8_t *p, uint32_t len, uint32_t *reply_len)
{
	struct vfu_dma_unmap u;
	uint64_t last;

	if (len < sizeof(u))
		return -EINVAL;
	memcpy(&u, p, sizeof(u));
	if (u.argsz < sizeof(u))
		return -EINVAL;
	if (u.flags & VFU_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP)
		return -ENOTSUP; /* no migration, no dirty tracking */
	if (u.flags & ~VFU_DMA_UNMAP_FLAG_ALL)
		return -EINVAL;

	if (u.flags & VFU_DMA_UNMAP_FLAG_ALL) {
		if (u.addr != 0 || u.size != 0)
			return -EINVAL;
		last = UINT64_MAX;
		u.addr = 0;
	} else {
		if (u.size == 0 || u.size - 1 > UINT64_MAX - u.addr)
			return -EINVAL;
		last = u.addr + (u.size - 1);
		/* A window cut in two by the range is an error, as in Linux VFIO. */
		for (size_t i = 0; i < s->ndma; i++) {
			const struct vfu_dma *d = &s->dma[i];
			uint64_t dlast = d->gpa + (d->len - 1);
			bool overlaps = d->gpa <= last && dlast >= u.addr;
			bool inside = d->gpa >= u.addr && dlast <= last;

			if (overlaps && !inside)
				return -EINVAL;
		}
	}

	/* The device lets go first, while the memory is still there. */
	for (size_t i = 0; i < s->ndma; i++) {
		const struct vfu_dma *d = &s->dma[i];

		if (d->gpa >= u.addr && d->gpa + (d->len - 1) <= last && s->ops->dma_unmap)
			s->ops->dma_unmap(s->opaque, d->gpa, d->len);
	}
	for (size_t i = 0; i < s->ndma;) {
		const struct vfu_dma *d = &s->dma[i];

		if (d->gpa >= u.addr && d->gpa + (d->len - 1) <= last) {
			dma_forget(s, i);
			s->stats.dma_unmaps++;
		} else {
			i++;
		}
	}
	/* The reply carries the request's entry back. */
	memcpy(s->tx + HDR_SIZE, p, sizeof(u));
	*reply_len = sizeof(u);
	return 0;
}

/*
 * The client is leaving.  The device is told first (only a client that
 * completed VERSION: before it nothing could be set up), so it is reset
 * while every window is still registered and mapped: DMA in flight lands in
 * valid memory instead of faulting on a window already withdrawn.  Then
 * each window is released, still mapped, and only then does the memory go.
 */
static void release_client_state(struct vfu_server *s)
{
	if (s->negotiated && s->ops->client_gone)
		s->ops->client_gone(s->opaque);
	if (s->ops->dma_unmap)
		for (size_t i = 0; i < s->ndma; i++)
			s->ops->dma_unmap(s->opaque, s->dma[i].gpa, s->dma[i].len);
	while (s->ndma > 0)
		dma_forget(s, s->ndma - 1);
}

/* ----------------------------------------------------------------- IRQs */

static unsigned device_irq_count(struct vfu_server *s, unsigned index)
{
	unsigned n = s->ops->irq_count ? s->ops->irq_count(s->opaque, index) : 0;

	return n > VFU_MAX_VECTORS ? VFU_MAX_VECTORS : n;
}

/* The vector table of index, sized to the device's count. */
static struct vfu_irq_index *irq_table(struct vfu_server *s, unsigned index, unsigned count)
{
	struct vfu_irq_index *t = &s->irqs[index];

	if (t->count < count) {
		struct vfu_vector *v = realloc(t->v, count * sizeof(*v));

		if (!v)
			return NULL;
		for (unsigned i = t->count; i < count; i++)
			v[i] = (struct vfu_vector){ .fd = -1 };
		t->v = v;
		t->count = count;
	}
	return t;
}

static void irq_close_index(struct vfu_server *s, unsigned index)
{
	struct vfu_irq_index *t = &s->irqs[index];

	for (unsigned i = 0; i < t->count; i++) {
		if (t->v[i].fd >= 0)
			close(t->v[i].fd);
		t->v[i] = (struct vfu_vector){ .fd = -1 };
	}
}

static int irq_signal(struct vfu_server *s, struct vfu_vector *v)
{
	uint64_t one = 1;
	ssize_t n;

	do {
		n = write(v->fd, &one, sizeof(one));
	} while (n < 0 && errno == EINTR);
	/* EAGAIN: the counter is saturated, so the interrupt is pending anyway */
	if (n < 0 && errno != EAGAIN)
		return -errno;
	s->stats.irqs_triggered++;
	return 0;
}

static int irq_fire(struct vfu_server *s, struct vfu_vector *v)
{
	if (v->fd < 0)
		return -ENOENT;
	if (v->masked) {
		if (!v->pending)
			s->stats.irqs_latched++;
		v->pending = true;
		return 0;
	}
	return irq_signal(s, v);
}

/*
 * An fd the client offers as an interrupt must be one whose write cannot
 * block the event loop: a Linux eventfd (an anonymous inode, no file type)
 * or a pipe (QEMU's event notifier where eventfd does not exist).  A
 * regular file ignores O_NONBLOCK (one on a FUSE mount the VMM serves could
 * hang every signal), and devices and sockets are no interrupts either.
 */
static bool is_event_fd(int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return false;
	return (st.st_mode & S_IFMT) == 0 || S_ISFIFO(st.st_mode);
}

static int handle_set_irqs(struct vfu_server *s, const uint8_t *p, uint32_t len)
{
	struct vfu_irq_set is;
	uint32_t data, action;
	struct vfu_irq_index *t;
	unsigned n;
	bool changed = false;

	if (len < sizeof(is))
		return -EINVAL;
	memcpy(&is, p, sizeof(is));
	if (is.argsz < sizeof(is))
		return -EINVAL;
	data = is.flags & VFU_IRQ_SET_DATA_MASK;
	action = is.flags & VFU_IRQ_SET_ACTION_MASK_ALL;
	/* exactly one data type and one action, nothing else */
	if ((is.flags & ~(VFU_IRQ_SET_DATA_MASK | VFU_IRQ_SET_ACTION_MASK_ALL)) || data == 0 ||
	    (data & (data - 1)) || action == 0 || (action & (action - 1)))
		return -EINVAL;
	if (is.index >= VFU_PCI_NUM_IRQS)
		return -EINVAL;
	if (data != VFU_IRQ_SET_DATA_EVENTFD && s->rx_nfds > 0)
		return -EINVAL;
	n = device_irq_count(s, is.index);

	if (is.count == 0) {
		if (data != VFU_IRQ_SET_DATA_NONE)
			return -EINVAL;
		if (action == VFU_IRQ_SET_ACTION_TRIGGER) {
			/* disable the whole index */
			irq_close_index(s, is.index);
			if (s->ops->irqs_changed)
				s->ops->irqs_changed(s->opaque, is.index);
		}
		return 0;
	}
	if (is.start >= n || is.count > n - is.start)
		return -EINVAL;
	if (data == VFU_IRQ_SET_DATA_BOOL &&
	    (len - sizeof(is) < is.count || is.argsz - sizeof(is) < is.count))
		return -EINVAL;
	if (data == VFU_IRQ_SET_DATA_EVENTFD) {
		/* eventfds only trigger; all of them or none (de-assign) */
		if (action != VFU_IRQ_SET_ACTION_TRIGGER)
			return -EINVAL;
		if (s->rx_nfds != 0 && s->rx_nfds != is.count)
			return -EINVAL;
		for (unsigned i = 0; i < s->rx_nfds; i++)
			if (!is_event_fd(s->rx_fds[i]))
				return -EINVAL;
	}
	t = irq_table(s, is.index, n);
	if (!t)
		return -ENOMEM;

	for (uint32_t i = 0; i < is.count; i++) {
		struct vfu_vector *v = &t->v[is.start + i];
		bool apply = data != VFU_IRQ_SET_DATA_BOOL || p[sizeof(is) + i] != 0;

		if (data == VFU_IRQ_SET_DATA_EVENTFD) {
			if (v->fd >= 0)
				close(v->fd);
			v->fd = -1;
			if (s->rx_nfds) {
				int fd = s->rx_fds[i];
				int fl = fcntl(fd, F_GETFL);

				/* a signal must never block the event loop */
				if (fl >= 0 && !(fl & O_NONBLOCK))
					fcntl(fd, F_SETFL, fl | O_NONBLOCK);
				v->fd = fd;
				s->rx_fds[i] = -1; /* taken */
			}
			changed = true;
			continue;
		}
		if (!apply)
			continue;
		switch (action) {
		case VFU_IRQ_SET_ACTION_MASK:
			v->masked = true;
			changed = true;
			break;
		case VFU_IRQ_SET_ACTION_UNMASK:
			v->masked = false;
			changed = true;
			if (v->pending && v->fd >= 0) {
				v->pending = false;
				irq_signal(s, v);
			}
			break;
		default: /* loopback trigger, as Linux VFIO does */
			irq_fire(s, v);
			break;
		}
	}
	if (changed && s->ops->irqs_changed)
		s->ops->irqs_changed(s->opaque, is.index);
	return 0;
}

/* -------------------------------------------------------------- regions */

/* The region's size if [offset, offset + count) may be accessed. */
static int region_check(struct vfu_server *s, uint32_t index, uint64_t offset, uint32_t count, bool write)
{
	uint64_t size = 0;
	uint32_t flags = 0;
	int r;

	if (index >= VFU_PCI_NUM_REGIONS || count == 0)
		return -EINVAL;
	if (count > VFU_MAX_DATA_XFER)
		return -E2BIG;
	r = s->ops->region_info(s->opaque, index, &size, &flags);
	if (r < 0)
		return r;
	if (!(flags & (write ? VFU_REGION_INFO_FLAG_WRITE : VFU_REGION_INFO_FLAG_READ)))
		return -EINVAL;
	if (offset > size || count > size - offset)
		return -EINVAL;
	return 0;
}

static int device_result(int r)
{
	return r > 0 ? -EIO : r;
}

static int handle_region_read(struct vfu_server *s, const uint8_t *p, uint32_t len, uint32_t *reply_len)
{
	struct vfu_region_rw rw;
	int r;

	if (len < sizeof(rw))
		return -EINVAL;
	memcpy(&rw, p, sizeof(rw));
	r = region_check(s, rw.region, rw.offset, rw.count, false);
	if (r < 0)
		return r;
	r = ensure_cap(&s->tx, &s->tx_cap, HDR_SIZE + sizeof(rw) + rw.count);
	if (r < 0)
		return r;
	r = device_result(s->ops->region_read(s->opaque, rw.region, rw.offset,
					      s->tx + HDR_SIZE + sizeof(rw), rw.count));
	if (r < 0)
		return r;
	memcpy(s->tx + HDR_SIZE, &rw, sizeof(rw));
	*reply_len = (uint32_t)sizeof(rw) + rw.count;
	s->stats.region_reads++;
	return 0;
}

static int handle_region_write(struct vfu_server *s, const uint8_t *p, uint32_t len, uint32_t *reply_len)
{
	struct vfu_region_rw rw;
	int r;

	if (len < sizeof(rw))
		return -EINVAL;
	memcpy(&rw, p, sizeof(rw));
	if (rw.count != len - sizeof(rw))
		return -EINVAL;
	r = region_check(s, rw.region, rw.offset, rw.count, true);
	if (r < 0)
		return r;
	r = device_result(s->ops->region_write(s->opaque, rw.region, rw.offset, p + sizeof(rw), rw.count));
	if (r < 0)
		return r;
	memcpy(s->tx + HDR_SIZE, &rw, sizeof(rw));
	*reply_len = sizeof(rw);
	s->stats.region_writes++;
	return 0;
}

static int handle_region_write_multi(struct vfu_server *s, const uint8_t *p, uint32_t len)
{
	uint64_t n;

	if (len < sizeof(n))
		return -EINVAL;
	memcpy(&n, p, sizeof(n));
	if (n == 0 || n > VFU_MULTI_MAX || len - sizeof(n) != n * sizeof(struct vfu_region_write_one))
		return -EINVAL;
	/* Validate all first so a bad entry applies none of them. */
	for (uint64_t i = 0; i < n; i++) {
		struct vfu_region_write_one w;
		int r;

		memcpy(&w, p + sizeof(n) + i * sizeof(w), sizeof(w));
		if (w.count > VFU_MULTI_DATA)
			return -EINVAL;
		r = region_check(s, w.region, w.offset, w.count, true);
		if (r < 0)
			return r;
	}
	for (uint64_t i = 0; i < n; i++) {
		struct vfu_region_write_one w;
		int r;

		memcpy(&w, p + sizeof(n) + i * sizeof(w), sizeof(w));
		r = device_result(s->ops->region_write(s->opaque, w.region, w.offset, w.data, w.count));
		if (r < 0)
			return r;
		s->stats.region_writes++;
	}
	return 0;
}

static int handle_region_info(struct vfu_server *s, const uint8_t *p, uint32_t len, uint32_t *reply_len)
{
	struct vfu_region_info ri;
	uint64_t size = 0;
	uint32_t flags = 0;
	int r;

	if (len < sizeof(ri))
		return -EINVAL;
	memcpy(&ri, p, sizeof(ri));
	/* We never add capabilities, so the minimum is also all we need. */
	if (ri.argsz < sizeof(ri) || ri.index >= VFU_PCI_NUM_REGIONS)
		return -EINVAL;
	r = s->ops->region_info(s->opaque, ri.index, &size, &flags);
	if (r < 0)
		return r;
	ri = (struct vfu_region_info){
		.argsz = sizeof(ri),
		.flags = size ? flags & (VFU_REGION_INFO_FLAG_READ | VFU_REGION_INFO_FLAG_WRITE) : 0,
		.index = ri.index,
		.size = size,
	};
	memcpy(s->tx + HDR_SIZE, &ri, sizeof(ri));
	*reply_len = sizeof(ri);
	return 0;
}

static int handle_irq_info(struct vfu_server *s, const uint8_t *p, uint32_t len, uint32_t *reply_len)
{
	struct vfu_irq_info ii;
	unsigned n;

	if (len < sizeof(ii))
		return -EINVAL;
	memcpy(&ii, p, sizeof(ii));
	if (ii.argsz < sizeof(ii) || ii.index >= VFU_PCI_NUM_IRQS)
		return -EINVAL;
	n = device_irq_count(s, ii.index);
	ii.argsz = sizeof(ii);
	ii.count = n;
	ii.flags = VFU_IRQ_INFO_EVENTFD;
	if (ii.index == VFU_PCI_INTX_IRQ && n)
		ii.flags |= VFU_IRQ_INFO_MASKABLE | VFU_IRQ_INFO_AUTOMASKED;
	/* MSI-X vectors can be added one by one (no NORESIZE), MSI cannot. */
	if (ii.index == VFU_PCI_MSI_IRQ)
		ii.flags |= VFU_IRQ_INFO_NORESIZE;
	memcpy(s->tx + HDR_SIZE, &ii, sizeof(ii));
	*reply_len = sizeof(ii);
	return 0;
}

static int handle_device_info(struct vfu_server *s, const uint8_t *p, uint32_t len, uint32_t *reply_len)
{
	struct vfu_device_info di;

	if (len < sizeof(di))
		return -EINVAL;
	memcpy(&di, p, sizeof(di));
	if (di.argsz < sizeof(di))
		return -EINVAL;
	di = (struct vfu_device_info){
		.argsz = sizeof(di),
		.flags = VFU_DEVICE_FLAGS_PCI | (s->ops->reset ? VFU_DEVICE_FLAGS_RESET : 0),
		.num_regions = VFU_PCI_NUM_REGIONS,
		.num_irqs = VFU_PCI_NUM_IRQS,
	};
	memcpy(s->tx + HDR_SIZE, &di, sizeof(di));
	*reply_len = sizeof(di);
	return 0;
}

/* -------------------------------------------------------------- version */

static bool json_is_uint(struct json_object *o)
{
	return json_object_is_type(o, json_type_int) && json_object_get_int64(o) >= 0;
}

/* Checks the client's capabilities; sets *multi if it offers write_multiple. */
static int parse_client_caps(const char *text, size_t len, bool *multi)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *root, *caps, *o;
	int r = 0;

	*multi = false;
	if (!tok)
		return -ENOMEM;
	root = json_tokener_parse_ex(tok, text, (int)len);
	if (!root || json_tokener_get_error(tok) != json_tokener_success) {
		r = -EINVAL;
		goto out;
	}
	/* nothing but blanks after the object */
	for (size_t i = json_tokener_get_parse_end(tok); i < len; i++)
		if (text[i] != ' ' && text[i] != '\n' && text[i] != '\t' && text[i] != '\r')
			r = -EINVAL;
	if (r < 0 || !json_object_is_type(root, json_type_object)) {
		r = -EINVAL;
		goto out;
	}
	if (!json_object_object_get_ex(root, "capabilities", &caps))
		goto out;
	if (!json_object_is_type(caps, json_type_object)) {
		r = -EINVAL;
		goto out;
	}
	if ((json_object_object_get_ex(caps, "max_msg_fds", &o) && !json_is_uint(o)) ||
	    (json_object_object_get_ex(caps, "max_data_xfer_size", &o) && !json_is_uint(o)) ||
	    (json_object_object_get_ex(caps, "max_dma_maps", &o) && !json_is_uint(o)) ||
	    (json_object_object_get_ex(caps, "migration", &o) && !json_object_is_type(o, json_type_object))) {
		r = -EINVAL;
		goto out;
	}
	if (json_object_object_get_ex(caps, "pgsizes", &o)) {
		/* we map in 4 KiB pages; the client must allow them */
		if (!json_is_uint(o)) {
			r = -EINVAL;
			goto out;
		}
		if (!((uint64_t)json_object_get_int64(o) & VFU_DMA_PGSIZE)) {
			r = -ENOTSUP;
			goto out;
		}
	}
	if (json_object_object_get_ex(caps, "write_multiple", &o)) {
		if (!json_object_is_type(o, json_type_boolean)) {
			r = -EINVAL;
			goto out;
		}
		*multi = json_object_get_boolean(o);
	}
out:
	json_object_put(root);
	json_tokener_free(tok);
	return r;
}

static int handle_version(struct vfu_server *s, const uint8_t *p, uint32_t len, uint32_t *reply_len)
{
	struct vfu_version v;
	struct json_object *root, *caps;
	const char *json;
	size_t jlen;
	bool multi = false;
	int r;

	if (s->negotiated)
		return -EINVAL;
	if (len < sizeof(v))
		return -EINVAL;
	memcpy(&v, p, sizeof(v));
	if (v.major != VFU_VERSION_MAJOR)
		return -ENOTSUP;
	if (len > sizeof(v)) {
		const char *text = (const char *)p + sizeof(v);
		size_t tlen = len - sizeof(v);
		const char *nul = memchr(text, '\0', tlen);

		if (tlen > VFU_MAX_VERSION_JSON || !nul)
			return -EINVAL;
		r = parse_client_caps(text, (size_t)(nul - text), &multi);
		if (r < 0)
			return r;
	}

	root = json_object_new_object();
	caps = json_object_new_object();
	if (!root || !caps) {
		json_object_put(root);
		json_object_put(caps);
		return -ENOMEM;
	}
	json_object_object_add(caps, "max_msg_fds", json_object_new_int(VFU_MAX_MSG_FDS));
	json_object_object_add(caps, "max_data_xfer_size", json_object_new_int64(VFU_MAX_DATA_XFER));
	json_object_object_add(caps, "pgsizes", json_object_new_int64(VFU_DMA_PGSIZE));
	json_object_object_add(caps, "max_dma_maps", json_object_new_int(VFU_MAX_DMA_MAPS));
	/* a reply's capabilities must be a subset of the client's */
	if (multi)
		json_object_object_add(caps, "write_multiple", json_object_new_boolean(true));
	json_object_object_add(root, "capabilities", caps);
	json = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
	jlen = strlen(json) + 1;
	v.major = VFU_VERSION_MAJOR;
	v.minor = VFU_VERSION_MINOR; /* <= whatever the client proposed */
	memcpy(s->tx + HDR_SIZE, &v, sizeof(v));
	memcpy(s->tx + HDR_SIZE + sizeof(v), json, jlen);
	*reply_len = (uint32_t)(sizeof(v) + jlen);
	json_object_put(root);

	s->negotiated = true;
	log_info("vfio-user %s: client negotiated protocol %u.%u%s", s->path, VFU_VERSION_MAJOR,
		 VFU_VERSION_MINOR, multi ? " with write_multiple" : "");
	if (s->ops->client_ready)
		s->ops->client_ready(s->opaque);
	return 0;
}

/* ------------------------------------------------------------- dispatch */

static const char *command_name(uint16_t cmd)
{
	static const char *const names[] = {
		[VFU_CMD_VERSION] = "VERSION",
		[VFU_CMD_DMA_MAP] = "DMA_MAP",
		[VFU_CMD_DMA_UNMAP] = "DMA_UNMAP",
		[VFU_CMD_DEVICE_GET_INFO] = "DEVICE_GET_INFO",
		[VFU_CMD_DEVICE_GET_REGION_INFO] = "DEVICE_GET_REGION_INFO",
		[VFU_CMD_DEVICE_GET_REGION_IO_FDS] = "DEVICE_GET_REGION_IO_FDS",
		[VFU_CMD_DEVICE_GET_IRQ_INFO] = "DEVICE_GET_IRQ_INFO",
		[VFU_CMD_DEVICE_SET_IRQS] = "DEVICE_SET_IRQS",
		[VFU_CMD_REGION_READ] = "REGION_READ",
		[VFU_CMD_REGION_WRITE] = "REGION_WRITE",
		[VFU_CMD_DMA_READ] = "DMA_READ",
		[VFU_CMD_DMA_WRITE] = "DMA_WRITE",
		[VFU_CMD_DEVICE_RESET] = "DEVICE_RESET",
		[VFU_CMD_DIRTY_PAGES] = "DIRTY_PAGES",
		[VFU_CMD_REGION_WRITE_MULTI] = "REGION_WRITE_MULTI",
		[VFU_CMD_DEVICE_FEATURE] = "DEVICE_FEATURE",
	};

	return cmd < sizeof(names) / sizeof(names[0]) && names[cmd] ? names[cmd] : "unknown";
}

/* One complete message is in rx_hdr/rx_body: act on it and reply. */
static void dispatch(struct vfu_server *s)
{
	const struct vfu_hdr *h = &s->rx_hdr;
	const uint8_t *p = s->rx_body;
	uint32_t len = h->size - HDR_SIZE;
	uint32_t reply_len = 0;
	bool takes_fds = h->command == VFU_CMD_DMA_MAP || h->command == VFU_CMD_DEVICE_SET_IRQS;
	int r;

	if ((h->flags & VFU_FLAG_TYPE_MASK) != VFU_FLAG_TYPE_REQUEST) {
		/* we send no requests, so no reply can be expected */
		log_warn("vfio-user %s: unexpected message type %u (command %u); ignored", s->path,
			 h->flags & VFU_FLAG_TYPE_MASK, h->command);
		s->stats.errors++;
		return;
	}
	s->stats.messages++;
	/* Nobody waits for these: QEMU's posted MMIO writes (vfu_server_write_posted). */
	s->posted = (h->flags & VFU_FLAG_NO_REPLY) || h->command == VFU_CMD_REGION_WRITE_MULTI;
	if (ensure_cap(&s->tx, &s->tx_cap, HDR_SIZE + 64 + VFU_MAX_VERSION_JSON) < 0) {
		r = -ENOMEM;
	} else if (s->rx_fds_lost || (s->rx_nfds > 0 && !takes_fds)) {
		r = -EINVAL;
	} else if (!s->negotiated && h->command != VFU_CMD_VERSION) {
		r = -EINVAL;
	} else {
		switch (h->command) {
		case VFU_CMD_VERSION:
			r = handle_version(s, p, len, &reply_len);
			break;
		case VFU_CMD_DMA_MAP:
			r = handle_dma_map(s, p, len);
			break;
		case VFU_CMD_DMA_UNMAP:
			r = handle_dma_unmap(s, p, len, &reply_len);
			break;
		case VFU_CMD_DEVICE_GET_INFO:
			r = handle_device_info(s, p, len, &reply_len);
			break;
		case VFU_CMD_DEVICE_GET_REGION_INFO:
			r = handle_region_info(s, p, len, &reply_len);
			break;
		case VFU_CMD_DEVICE_GET_IRQ_INFO:
			r = handle_irq_info(s, p, len, &reply_len);
			break;
		case VFU_CMD_DEVICE_SET_IRQS:
			r = handle_set_irqs(s, p, len);
			break;
		case VFU_CMD_REGION_READ:
			r = handle_region_read(s, p, len, &reply_len);
			break;
		case VFU_CMD_REGION_WRITE:
			r = handle_region_write(s, p, len, &reply_len);
			break;
		case VFU_CMD_REGION_WRITE_MULTI:
			r = handle_region_write_multi(s, p, len);
			break;
		case VFU_CMD_DEVICE_RESET:
			r = s->ops->reset ? device_result(s->ops->reset(s->opaque)) : -ENOTSUP;
			break;
		default:
			r = -ENOSYS;
			break;
		}
	}
	if (r < 0) {
		s->stats.errors++;
		log_debug("vfio-user %s: %s (id %u) failed: %s", s->path, command_name(h->command), h->id,
			  strerror(-r));
	}
	s->posted = false;
	if (!(h->flags & VFU_FLAG_NO_REPLY))
		send_msg(s, h, reply_len, r < 0 ? -r : 0);
}

bool vfu_server_write_posted(const struct vfu_server *s)
{
	return s->posted;
}

/* ------------------------------------------------------------ lifecycle */

void vfu_server_disconnect(struct vfu_server *s)
{
	if (!s || s->client_fd < 0)
		return;
	release_client_state(s);
	for (unsigned i = 0; i < VFU_PCI_NUM_IRQS; i++) {
		irq_close_index(s, i);
		free(s->irqs[i].v);
		s->irqs[i] = (struct vfu_irq_index){ 0 };
	}
	reset_rx(s);
	close(s->client_fd);
	s->client_fd = -1;
	s->negotiated = false;
	s->drop = false;
	s->stats.connected = false;
	log_info("vfio-user %s: client disconnected", s->path);
}

int vfu_server_handle(struct vfu_server *s)
{
	if (s->client_fd < 0)
		return -ENOTCONN;
	for (int batch = 0; batch < VFU_BATCH; batch++) {
		ssize_t n;

		if (s->rx_hdr_have < HDR_SIZE) {
			n = recv_some(s, (uint8_t *)&s->rx_hdr + s->rx_hdr_have, HDR_SIZE - s->rx_hdr_have);
			if (n == -EAGAIN || n == -EWOULDBLOCK)
				return 0;
			if (n <= 0)
				goto gone;
			s->rx_hdr_have += (size_t)n;
			if (s->rx_hdr_have < HDR_SIZE)
				continue;
			if (s->rx_hdr.size < HDR_SIZE) {
				log_warn("vfio-user %s: message size %u is smaller than its header; dropping "
					 "the client", s->path, s->rx_hdr.size);
				goto broken;
			}
			if (s->rx_hdr.size > VFU_MAX_MSG_SIZE) {
				log_warn("vfio-user %s: message size %u exceeds the limit %zu; dropping the "
					 "client", s->path, s->rx_hdr.size, (size_t)VFU_MAX_MSG_SIZE);
				if ((s->rx_hdr.flags & VFU_FLAG_TYPE_MASK) == VFU_FLAG_TYPE_REQUEST &&
				    ensure_cap(&s->tx, &s->tx_cap, HDR_SIZE) == 0)
					send_msg(s, &s->rx_hdr, 0, E2BIG);
				goto broken;
			}
			if (ensure_cap(&s->rx_body, &s->rx_body_cap, s->rx_hdr.size - HDR_SIZE + 1) < 0)
				goto broken;
			s->rx_body_have = 0;
		}
		if (s->rx_body_have < s->rx_hdr.size - HDR_SIZE) {
			n = recv_some(s, s->rx_body + s->rx_body_have, s->rx_hdr.size - HDR_SIZE - s->rx_body_have);
			if (n == -EAGAIN || n == -EWOULDBLOCK)
				return 0;
			if (n <= 0)
				goto gone;
			s->rx_body_have += (size_t)n;
			if (s->rx_body_have < s->rx_hdr.size - HDR_SIZE)
				continue;
		}
		dispatch(s);
		reset_rx(s);
		if (s->client_fd < 0)
			return -ECONNRESET; /* a callback disconnected it */
		if (s->drop)
			goto broken;
	}
	return 0;

gone:
	vfu_server_disconnect(s);
	return -ECONNRESET;
broken:
	s->stats.dropped++;
	vfu_server_disconnect(s);
	return -EPROTO;
}

int vfu_server_accept(struct vfu_server *s)
{
	int fd;

	do {
#ifdef SOCK_CLOEXEC
		fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
#else
		fd = accept(s->listen_fd, NULL, NULL);
#endif
	} while (fd < 0 && errno == EINTR);
	if (fd < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED)
			return 0;
		return -errno;
	}
	if (fd == 0) {
		/* 0 means "nothing accepted" to our caller: move it (stdin was closed) */
		int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);

		close(fd);
		if (moved < 0)
			return -errno;
		fd = moved;
	}
#ifndef SOCK_CLOEXEC
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
#ifdef SO_NOSIGPIPE
	setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &(int){ 1 }, sizeof(int));
#endif
	if (s->client_fd >= 0) {
		/* one VMM per device: the newcomer just sees the socket close */
		log_warn("vfio-user %s: refusing a second client while one is attached", s->path);
		close(fd);
		s->stats.refused++;
		return 0;
	}
	s->client_fd = fd;
	s->negotiated = false;
	s->drop = false;
	reset_rx(s);
	s->stats.clients++;
	s->stats.connected = true;
	log_info("vfio-user %s: client connected", s->path);
	return fd;
}

/* bind() on path; a stale socket file (nobody listening) is replaced. */
static int bind_socket(int fd, const char *path, char *err, size_t errlen)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct stat st;

	memcpy(addr.sun_path, path, strlen(path) + 1);
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
		return 0;
	if (errno != EADDRINUSE) {
		int e = errno;

		set_err(err, errlen, "cannot bind socket %s: %s", path, strerror(e));
		return -e;
	}
	if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
		set_err(err, errlen, "%s exists and is not a socket; remove it or choose another path", path);
		return -EEXIST;
	}
	{
		int probe = socket(AF_UNIX, SOCK_STREAM, 0);
		int r, e;

		if (probe < 0) {
			e = errno;
			set_err(err, errlen, "cannot create socket: %s", strerror(e));
			return -e;
		}
		r = connect(probe, (struct sockaddr *)&addr, sizeof(addr));
		e = errno;
		close(probe);
		if (r == 0 || e != ECONNREFUSED) {
			set_err(err, errlen, "socket %s is in use by a running process", path);
			return -EADDRINUSE;
		}
	}
	/* stale: left behind by a process that died */
	unlink(path);
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
		return 0;
	{
		int e = errno;

		set_err(err, errlen, "cannot bind socket %s: %s", path, strerror(e));
		return -e;
	}
}

struct vfu_server *vfu_server_create(const char *socket_path, const struct vfu_device_ops *ops,
				     void *opaque, char *err, size_t errlen)
{
	struct sockaddr_un addr;
	struct vfu_server *s;

	if (!socket_path || !ops || !ops->region_info || !ops->region_read || !ops->region_write) {
		set_err(err, errlen, "vfio-user server: socket path and region callbacks are required");
		return NULL;
	}
	if (strlen(socket_path) >= sizeof(addr.sun_path)) {
		set_err(err, errlen, "socket path %s is longer than %zu bytes", socket_path,
			sizeof(addr.sun_path) - 1);
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (s)
		s->listen_fd = -1;
	if (!s || !(s->path = strdup(socket_path)) || !(s->gm = guest_mem_create()) ||
	    !(s->dma = calloc(VFU_MAX_DMA_MAPS, sizeof(*s->dma)))) {
		set_err(err, errlen, "out of memory");
		goto fail;
	}
	s->ops = ops;
	s->opaque = opaque;
	s->client_fd = -1;
	s->listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (s->listen_fd < 0) {
		set_err(err, errlen, "cannot create socket: %s", strerror(errno));
		goto fail;
	}
	fcntl(s->listen_fd, F_SETFD, FD_CLOEXEC);
	fcntl(s->listen_fd, F_SETFL, fcntl(s->listen_fd, F_GETFL) | O_NONBLOCK);
	if (bind_socket(s->listen_fd, socket_path, err, errlen) < 0)
		goto fail_unbound;
	if (listen(s->listen_fd, 4) < 0) {
		set_err(err, errlen, "cannot listen on %s: %s", socket_path, strerror(errno));
		unlink(socket_path);
		goto fail_unbound;
	}
	return s;

fail_unbound:
	close(s->listen_fd);
	s->listen_fd = -1;
fail:
	if (s) {
		if (s->listen_fd >= 0)
			close(s->listen_fd);
		guest_mem_destroy(s->gm);
		free(s->dma);
		free(s->path);
		free(s);
	}
	return NULL;
}

void vfu_server_destroy(struct vfu_server *s)
{
	if (!s)
		return;
	vfu_server_disconnect(s);
	close(s->listen_fd);
	unlink(s->path);
	guest_mem_destroy(s->gm);
	free(s->dma);
	free(s->rx_body);
	free(s->tx);
	free(s->path);
	free(s);
}

/* -------------------------------------------------------------- queries */

int vfu_server_listen_fd(const struct vfu_server *s)
{
	return s->listen_fd;
}

int vfu_server_client_fd(const struct vfu_server *s)
{
	return s->client_fd;
}

struct guest_mem *vfu_server_guest_mem(struct vfu_server *s)
{
	return s->gm;
}

static const struct vfu_vector *vector_at(const struct vfu_server *s, unsigned index, unsigned vector)
{
	if (index >= VFU_PCI_NUM_IRQS || vector >= s->irqs[index].count)
		return NULL;
	return &s->irqs[index].v[vector];
}

bool vfu_irq_assigned(const struct vfu_server *s, unsigned index, unsigned vector)
{
	const struct vfu_vector *v = vector_at(s, index, vector);

	return v && v->fd >= 0;
}

bool vfu_irq_enabled(const struct vfu_server *s, unsigned index, unsigned vector)
{
	const struct vfu_vector *v = vector_at(s, index, vector);

	return v && v->fd >= 0 && !v->masked;
}

int vfu_irq_trigger(struct vfu_server *s, unsigned index, unsigned vector)
{
	if (index >= VFU_PCI_NUM_IRQS || vector >= VFU_MAX_VECTORS)
		return -EINVAL;
	if (vector >= s->irqs[index].count)
		return -ENOENT;
	return irq_fire(s, &s->irqs[index].v[vector]);
}

void vfu_server_stats(const struct vfu_server *s, struct vfu_stats *out)
{
	*out = s->stats;
}

const char *vfu_server_socket_path(const struct vfu_server *s)
{
	return s->path;
}
