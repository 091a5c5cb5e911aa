// SPDX-License-Identifier: MIT
/*
 * What a guest MMIO access or a DMA window costs over the vfio-user socket:
 * the server runs its own poll loop in a thread (as in the broker), the
 * client in main() writes raw messages.  Prints the median over repeated
 * runs of the per-operation time, and ratios measured side by side.
 */
#include "vfu_protocol.h"
#include "vfu_server.h"
#include "bench_util.h"
#include "compat.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define RUNS 15

static uint8_t bar0[4096];

static int region_info(void *opaque, unsigned index, uint64_t *size, uint32_t *flags)
{
	(void)opaque;
	*size = index == 0 ? sizeof(bar0) : 0;
	*flags = index == 0 ? VFU_REGION_INFO_FLAG_READ | VFU_REGION_INFO_FLAG_WRITE : 0;
	return 0;
}

static int region_read(void *opaque, unsigned index, uint64_t offset, void *buf, uint32_t count)
{
	(void)opaque;
	(void)index;
	memcpy(buf, bar0 + offset, count);
	return 0;
}

static int region_write(void *opaque, unsigned index, uint64_t offset, const void *buf, uint32_t count)
{
	(void)opaque;
	(void)index;
	memcpy(bar0 + offset, buf, count);
	return 0;
}

static const struct vfu_device_ops ops = {
	.region_info = region_info,
	.region_read = region_read,
	.region_write = region_write,
};

struct server_thread {
	struct vfu_server *s;
	int stop[2];
};

static void *serve(void *arg)
{
	struct server_thread *t = arg;

	for (;;) {
		struct pollfd p[3] = {
			{ .fd = t->stop[0], .events = POLLIN },
			{ .fd = vfu_server_listen_fd(t->s), .events = POLLIN },
			{ .fd = vfu_server_client_fd(t->s), .events = vfu_server_poll_events(t->s) },
		};

		if (poll(p, 3, -1) < 0 && errno != EINTR)
			break;
		if (p[0].revents)
			break;
		if (p[1].revents)
			vfu_server_accept(t->s);
		if (p[2].fd >= 0 && p[2].revents)
			vfu_server_handle(t->s);
	}
	return NULL;
}

/* Baseline: a bare echo of 32-byte messages on a socketpair, same threads. */
static void *echo(void *arg)
{
	int fd = *(int *)arg;
	uint8_t buf[32];

	for (;;) {
		size_t got = 0;

		while (got < sizeof(buf)) {
			ssize_t n = recv(fd, buf + got, sizeof(buf) - got, 0);

			if (n <= 0)
				return NULL;
			got += (size_t)n;
		}
		if (send(fd, buf, sizeof(buf), MSG_NOSIGNAL) != (ssize_t)sizeof(buf))
			return NULL;
	}
}

static void die(const char *what)
{
	fprintf(stderr, "bench_vfu: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void send_all(int fd, const void *buf, size_t len, int pass_fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (pass_fd >= 0) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof(ctl.buf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
	}
	if (sendmsg(fd, &mh, MSG_NOSIGNAL) != (ssize_t)len)
		die("send");
}

/* Read one reply; fails the bench on an error reply. */
static void recv_reply(int fd)
{
	uint8_t buf[256];
	struct vfu_hdr h;
	size_t got = 0;

	while (got < sizeof(h)) {
		ssize_t n = recv(fd, (uint8_t *)&h + got, sizeof(h) - got, 0);

		if (n <= 0)
			die("recv");
		got += (size_t)n;
	}
	if (h.flags & VFU_FLAG_ERROR) {
		errno = (int)h.error;
		die("error reply");
	}
	for (size_t left = h.size - sizeof(h); left;) {
		ssize_t n = recv(fd, buf, left < sizeof(buf) ? left : sizeof(buf), 0);

		if (n <= 0)
			die("recv");
		left -= (size_t)n;
	}
}

struct msg_rw {
	struct vfu_hdr h;
	struct vfu_region_rw rw;
	uint32_t data;
};

static struct msg_rw rw_msg(uint16_t cmd, uint32_t flags, uint64_t offset)
{
	struct msg_rw m = {
		.h = { .command = cmd, .flags = flags },
		.rw = { .offset = offset, .region = 0, .count = 4 },
		.data = 0x12345678,
	};

	/* not sizeof(m): the struct has tail padding */
	m.h.size = sizeof(m.h) + sizeof(m.rw) + (cmd == VFU_CMD_REGION_READ ? 0 : sizeof(m.data));
	return m;
}

/* ns per operation of n operations */
static double read_roundtrips(int c, int n)
{
	struct msg_rw m = rw_msg(VFU_CMD_REGION_READ, 0, 0x40);
	double t0 = bench_now_ns();

	for (int i = 0; i < n; i++) {
		send_all(c, &m, m.h.size, -1);
		recv_reply(c);
	}
	return (bench_now_ns() - t0) / n;
}

static double write_roundtrips(int c, int n)
{
	struct msg_rw m = rw_msg(VFU_CMD_REGION_WRITE, 0, 0x40);
	double t0 = bench_now_ns();

	for (int i = 0; i < n; i++) {
		send_all(c, &m, m.h.size, -1);
		recv_reply(c);
	}
	return (bench_now_ns() - t0) / n;
}

/* n posted writes, then one read that cannot pass them */
static double posted_writes(int c, int n)
{
	struct msg_rw w = rw_msg(VFU_CMD_REGION_WRITE, VFU_FLAG_NO_REPLY, 0x40);
	struct msg_rw r = rw_msg(VFU_CMD_REGION_READ, 0, 0x40);
	double t0 = bench_now_ns();

	for (int i = 0; i < n; i++)
		send_all(c, &w, w.h.size, -1);
	send_all(c, &r, r.h.size, -1);
	recv_reply(c);
	return (bench_now_ns() - t0) / n;
}

/* n writes in WRITE_MULTI messages of VFU_MULTI_MAX, then one read */
static double multi_writes(int c, int n)
{
	static struct {
		struct vfu_hdr h;
		uint64_t count;
		struct vfu_region_write_one w[VFU_MULTI_MAX];
	} m;
	struct msg_rw r = rw_msg(VFU_CMD_REGION_READ, 0, 0x40);
	double t0;

	m.h = (struct vfu_hdr){ .command = VFU_CMD_REGION_WRITE_MULTI, .size = sizeof(m),
				.flags = VFU_FLAG_NO_REPLY };
	m.count = VFU_MULTI_MAX;
	for (int i = 0; i < VFU_MULTI_MAX; i++)
		m.w[i] = (struct vfu_region_write_one){ .offset = (uint64_t)(i % 64) * 4, .region = 0, .count = 4 };
	t0 = bench_now_ns();
	for (int i = 0; i < n; i += VFU_MULTI_MAX)
		send_all(c, &m, sizeof(m), -1);
	send_all(c, &r, r.h.size, -1);
	recv_reply(c);
	return (bench_now_ns() - t0) / n;
}

static double echo_roundtrips(int c, int n)
{
	uint8_t buf[32] = { 0 };
	double t0 = bench_now_ns();

	for (int i = 0; i < n; i++) {
		size_t got = 0;

		if (send(c, buf, sizeof(buf), MSG_NOSIGNAL) != (ssize_t)sizeof(buf))
			die("send");
		while (got < sizeof(buf)) {
			ssize_t k = recv(c, buf + got, sizeof(buf) - got, 0);

			if (k <= 0)
				die("recv");
			got += (size_t)k;
		}
	}
	return (bench_now_ns() - t0) / n;
}

/* DMA_MAP of a 2 MiB memfd window, then its DMA_UNMAP: ns per pair */
static double map_unmap(int c, int memfd, int n)
{
	struct {
		struct vfu_hdr h;
		struct vfu_dma_map m;
	} map = {
		.h = { .command = VFU_CMD_DMA_MAP, .size = sizeof(map) },
		.m = { .argsz = sizeof(map.m), .flags = VFU_DMA_MAP_FLAG_READ | VFU_DMA_MAP_FLAG_WRITE,
		       .addr = 1ull << 32, .size = 2u << 20 },
	};
	struct {
		struct vfu_hdr h;
		struct vfu_dma_unmap u;
	} unmap = {
		.h = { .command = VFU_CMD_DMA_UNMAP, .size = sizeof(unmap) },
		.u = { .argsz = sizeof(unmap.u), .addr = 1ull << 32, .size = 2u << 20 },
	};
	double t0 = bench_now_ns();

	for (int i = 0; i < n; i++) {
		send_all(c, &map, sizeof(map), memfd);
		recv_reply(c);
		send_all(c, &unmap, sizeof(unmap), -1);
		recv_reply(c);
	}
	return (bench_now_ns() - t0) / n;
}

static int connect_to(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	if (strlen(path) >= sizeof(a.sun_path))
		die("socket path too long");
	memcpy(a.sun_path, path, strlen(path) + 1);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("connect");
	return fd;
}

static void handshake(int c)
{
	static const char caps[] = "{\"capabilities\":{\"max_msg_fds\":16,\"pgsizes\":4096,\"write_multiple\":true}}";
	struct {
		struct vfu_hdr h;
		struct vfu_version v;
		char json[sizeof(caps)];
	} m = {
		.h = { .command = VFU_CMD_VERSION, .size = sizeof(m) },
	};

	memcpy(m.json, caps, sizeof(caps));
	send_all(c, &m, sizeof(m), -1);
	recv_reply(c);
}

int main(void)
{
	char dir[] = "/tmp/bench-vfu-XXXXXX", path[128], err[256];
	struct server_thread t;
	pthread_t th;
	double rd[RUNS], wr[RUNS], post[RUNS], multi[RUNS], dma[RUNS], raw[RUNS];
	int c, memfd, pair[2];
	pthread_t echo_th;

	if (!mkdtemp(dir))
		die("mkdtemp");
	snprintf(path, sizeof(path), "%s/bench.sock", dir);
	t.s = vfu_server_create(path, &ops, NULL, err, sizeof(err));
	if (!t.s) {
		fprintf(stderr, "bench_vfu: %s\n", err);
		return 1;
	}
	if (pipe(t.stop) < 0 || pthread_create(&th, NULL, serve, &t) != 0)
		die("thread");
	c = connect_to(path);
	handshake(c);
	memfd = vfa_shared_memory_fd("bench-ram", 2u << 20);
	if (memfd < 0)
		die("memfd");
#ifdef F_ADD_SEALS
	/* sealed as QEMU's memfd guest RAM is (the server warns otherwise) */
	if (fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK) < 0)
		die("memfd seal");
#endif
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) < 0 || pthread_create(&echo_th, NULL, echo, &pair[1]) != 0)
		die("echo thread");

	/* warm up, then interleave the variants so drift hits all alike */
	read_roundtrips(c, 2000);
	for (int r = 0; r < RUNS; r++) {
		raw[r] = echo_roundtrips(pair[0], 2000);
		rd[r] = read_roundtrips(c, 2000);
		wr[r] = write_roundtrips(c, 2000);
		post[r] = posted_writes(c, 2000);
		multi[r] = multi_writes(c, 20000);
		dma[r] = map_unmap(c, memfd, 200);
	}
	{
		double mr = bench_median(rd, RUNS), mw = bench_median(wr, RUNS), mp = bench_median(post, RUNS);
		double mm = bench_median(multi, RUNS), md = bench_median(dma, RUNS), me = bench_median(raw, RUNS);

		printf("vfio-user server, 4-byte BAR accesses over a UNIX socket (median of %d runs)\n", RUNS);
		printf("  bare socket echo round trip     %9.0f ns (baseline)\n", me);
		printf("  REGION_READ round trip          %9.0f ns\n", mr);
		printf("  REGION_WRITE round trip         %9.0f ns\n", mw);
		printf("  REGION_WRITE posted (NO_REPLY)  %9.0f ns per write\n", mp);
		printf("  REGION_WRITE_MULTI (200/msg)    %9.0f ns per write\n", mm);
		printf("  DMA_MAP + DMA_UNMAP, 2 MiB memfd %8.0f ns per pair\n", md);
		printf("  ratio REGION_READ / bare echo:         %.2fx\n", mr / me);
		printf("  ratio round-trip write / posted write: %.1fx\n", mw / mp);
		printf("  ratio posted write / multi write:      %.1fx\n", mp / mm);
	}

	close(c);
	close(memfd);
	shutdown(pair[0], SHUT_RDWR);
	pthread_join(echo_th, NULL);
	close(pair[0]);
	close(pair[1]);
	if (write(t.stop[1], "x", 1) != 1)
		die("stop");
	pthread_join(th, NULL);
	close(t.stop[0]);
	close(t.stop[1]);
	vfu_server_destroy(t.s);
	rmdir(dir);
	return 0;
}
