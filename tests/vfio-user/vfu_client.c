// SPDX-License-Identifier: MIT
#include "vfu_client.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int vfuc_connect(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

int vfuc_send_raw(int fd, const void *buf, size_t len, const int *fds, unsigned nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 64)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (nfds > 64)
		return -EINVAL;
	if (nfds) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	n = sendmsg(fd, &mh, MSG_NOSIGNAL);
	if (n < 0)
		return -errno;
	if ((size_t)n < len) {
		/* the rest without fds */
		const char *p = (const char *)buf + n;
		size_t left = len - (size_t)n;

		while (left) {
			ssize_t m = send(fd, p, left, MSG_NOSIGNAL);

			if (m < 0)
				return -errno;
			p += m;
			left -= (size_t)m;
		}
	}
	return 0;
}

int vfuc_send(int fd, uint16_t id, uint16_t cmd, uint32_t flags, const void *payload, size_t len,
	      const int *fds, unsigned nfds)
{
	uint8_t *buf = malloc(sizeof(struct vfu_hdr) + len);
	struct vfu_hdr h = {
		.id = id,
		.command = cmd,
		.size = (uint32_t)(sizeof(h) + len),
		.flags = flags,
	};
	int r;

	if (!buf)
		return -ENOMEM;
	memcpy(buf, &h, sizeof(h));
	if (len)
		memcpy(buf + sizeof(h), payload, len);
	r = vfuc_send_raw(fd, buf, sizeof(h) + len, fds, nfds);
	free(buf);
	return r;
}

static ssize_t read_exact(int fd, void *buf, size_t len, int timeout_ms)
{
	uint8_t *p = buf;

	while (len) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		ssize_t n;
		int r = poll(&pfd, 1, timeout_ms);

		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		n = recv(fd, p, len, 0);
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

ssize_t vfuc_recv(int fd, struct vfu_hdr *hdr, void *buf, size_t cap, int timeout_ms)
{
	ssize_t r = read_exact(fd, hdr, sizeof(*hdr), timeout_ms);
	size_t len;

	if (r < 0)
		return r;
	if (hdr->size < sizeof(*hdr))
		return -EPROTO;
	len = hdr->size - sizeof(*hdr);
	if (len > cap)
		return -EMSGSIZE;
	r = read_exact(fd, buf, len, timeout_ms);
	return r < 0 ? r : (ssize_t)len;
}

int vfuc_quiet(int fd, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	return poll(&pfd, 1, timeout_ms) == 0;
}

size_t vfuc_version_payload(void *buf, size_t cap, uint16_t major, uint16_t minor, const char *json)
{
	struct vfu_version v = { .major = major, .minor = minor };
	size_t jlen = json ? strlen(json) + 1 : 0;

	if (sizeof(v) + jlen > cap)
		return 0;
	memcpy(buf, &v, sizeof(v));
	if (json)
		memcpy((uint8_t *)buf + sizeof(v), json, jlen);
	return sizeof(v) + jlen;
}

int vfuc_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own fd */
}
