// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: the vfio-user server fed an arbitrary byte stream, cut
 * into arbitrary chunks, each of which may carry file descriptors (sealed
 * or unsealed memfds, eventfds, a read-only file).  The stream goes through
 * a real connection to the server's socket, so framing, partial reads, fds
 * arriving with any byte, and the drop/reconnect path are all exercised.
 *
 * The device behind the server checks what the server promises it: every
 * region access lies inside the region; every DMA window it is told about is
 * in the guest memory map and reachable (its first and last bytes are
 * read, so a bad mapping faults); client_gone comes once per negotiated
 * client.  After each input, every fd the server was given must be closed
 * again (no leak) and the guest memory map must be empty.
 *
 * Input: records of [ctl u8][len u16 LE][len bytes].  ctl bits 0..1: fds to
 * attach (0..3); bits 2..3: their kind (0 sealed memfd, 1 unsealed memfd,
 * 2 eventfd, 3 /dev/null read-only); bit 4: after this chunk, trigger every
 * MSI-X vector.  fuzz/make_corpus_vfu.py writes the seed corpus.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "guest_mem.h"
#include "log.h"
#include "vfu_protocol.h"
#include "vfu_server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define BAR0_SIZE 0x1000u
#define CFG_SIZE 256u
#define MSIX_VECTORS 8u
#define MEMFD_SIZE 0x10000u

static struct vfu_server *server;
static char sock_path[108];
static uint8_t bar0[BAR0_SIZE];
static uint8_t config[CFG_SIZE];
static unsigned ready_count, gone_count;

static int dev_region_info(void *opaque, unsigned index, uint64_t *size, uint32_t *flags)
{
	(void)opaque;
	*size = index == VFU_PCI_BAR0_REGION ? BAR0_SIZE : index == VFU_PCI_CONFIG_REGION ? CFG_SIZE : 0;
	*flags = *size ? VFU_REGION_INFO_FLAG_READ | VFU_REGION_INFO_FLAG_WRITE : 0;
	return 0;
}

static uint8_t *region(unsigned index, uint64_t offset, uint32_t count)
{
	uint8_t *m = index == VFU_PCI_BAR0_REGION ? bar0 : index == VFU_PCI_CONFIG_REGION ? config : NULL;
	uint64_t size = index == VFU_PCI_BAR0_REGION ? BAR0_SIZE : CFG_SIZE;

	/* the server promised the access lies inside an existing region */
	if (!m || count == 0 || offset > size || count > size - offset)
		abort();
	return m + offset;
}

static int dev_region_read(void *opaque, unsigned index, uint64_t offset, void *buf, uint32_t count)
{
	(void)opaque;
	memcpy(buf, region(index, offset, count), count);
	return 0;
}

static int dev_region_write(void *opaque, unsigned index, uint64_t offset, const void *buf, uint32_t count)
{
	(void)opaque;
	memcpy(region(index, offset, count), buf, count);
	/* a write at BAR0 offset 0 fails, so the error path is reached too */
	return index == VFU_PCI_BAR0_REGION && offset == 0 ? -EIO : 0;
}

static unsigned dev_irq_count(void *opaque, unsigned index)
{
	(void)opaque;
	return index == VFU_PCI_MSIX_IRQ ? MSIX_VECTORS : index == VFU_PCI_INTX_IRQ ? 1 : 0;
}

static void dev_irqs_changed(void *opaque, unsigned index)
{
	(void)opaque;
	if (index >= VFU_PCI_NUM_IRQS)
		abort();
}

static int dev_reset(void *opaque)
{
	(void)opaque;
	return 0;
}

/* A window the server says is shared must be in the map and readable. */
static void check_window(uint64_t gpa, uint64_t len, bool must_be_mapped)
{
	struct guest_mem_range r;
	const volatile uint8_t *va;

	if (guest_mem_find(vfu_server_guest_mem(server), gpa, &r) < 0 || r.gpa != gpa || r.len != len)
		abort();
	if (!r.va)
		return; /* DMA_MAP without an fd: known but unreachable */
	va = guest_mem_translate(vfu_server_guest_mem(server), gpa, len, false);
	if (!va || (must_be_mapped && (void *)va != r.va))
		abort();
	(void)va[0];
	(void)va[len - 1];
}

static int dev_dma_map(void *opaque, uint64_t gpa, uint64_t len, void *va, bool writable)
{
	(void)opaque;
	(void)va;
	(void)writable;
	check_window(gpa, len, true);
	/* refuse one address so the undo path runs */
	return gpa == 0xdead000 ? -EPERM : 0;
}

static void dev_dma_unmap(void *opaque, uint64_t gpa, uint64_t len)
{
	(void)opaque;
	check_window(gpa, len, false);
}

static void dev_client_ready(void *opaque)
{
	(void)opaque;
	ready_count++;
}

static void dev_client_gone(void *opaque)
{
	(void)opaque;
	gone_count++;
	if (gone_count != ready_count)
		abort();
}

static const struct vfu_device_ops ops = {
	.region_info = dev_region_info,
	.region_read = dev_region_read,
	.region_write = dev_region_write,
	.irq_count = dev_irq_count,
	.irqs_changed = dev_irqs_changed,
	.reset = dev_reset,
	.dma_unmap = dev_dma_unmap,
	.client_gone = dev_client_gone,
	.dma_map = dev_dma_map,
	.client_ready = dev_client_ready,
};

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (!d)
		abort();
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static void setup_once(void)
{
	static char dir[] = "/tmp/fuzz-vfu-XXXXXX";
	char err[256] = "";

	if (server)
		return;
	vfa_log_set_level(VFA_LOG_ERROR);
	if (!mkdtemp(dir))
		abort();
	snprintf(sock_path, sizeof(sock_path), "%s/s", dir);
	server = vfu_server_create(sock_path, &ops, NULL, err, sizeof(err));
	if (!server) {
		fprintf(stderr, "fuzz_vfu: %s\n", err);
		abort();
	}
}

static int make_fd(unsigned kind)
{
	int fd;

	switch (kind) {
	case 0:
	case 1:
		fd = memfd_create("fuzz-guest-ram", MFD_CLOEXEC | (kind == 0 ? MFD_ALLOW_SEALING : 0));
		if (fd < 0 || ftruncate(fd, MEMFD_SIZE) < 0)
			abort();
		if (kind == 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)
			abort();
		return fd;
	case 2:
		fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		break;
	default:
		fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		break;
	}
	if (fd < 0)
		abort();
	return fd;
}

/* Reads and discards the server's replies until EOF. */
/*
 * Reads and discards the server's replies until EOF, for one client at a
 * time.  One thread for the whole run: a thread per input made ASan keep a
 * record per thread, ~200 bytes of RSS per execution, which a 10^8 run
 * (fuzz/long.sh) cannot afford.
 */
static pthread_mutex_t drain_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t drain_cv = PTHREAD_COND_INITIALIZER;
static int drain_fd = -1;   /* the client to drain; -1: none yet */
static bool drain_done = true;

static void *drain(void *arg)
{
	static char buf[1 << 16];

	(void)arg;
	for (;;) {
		int fd;

		pthread_mutex_lock(&drain_mu);
		while (drain_fd < 0)
			pthread_cond_wait(&drain_cv, &drain_mu);
		fd = drain_fd;
		pthread_mutex_unlock(&drain_mu);
		for (;;) {
			ssize_t n = read(fd, buf, sizeof(buf));

			if (n == 0 || (n < 0 && errno != EINTR))
				break;
		}
		pthread_mutex_lock(&drain_mu);
		drain_fd = -1;
		drain_done = true;
		pthread_cond_broadcast(&drain_cv);
		pthread_mutex_unlock(&drain_mu);
	}
	return NULL;
}

static void drain_start(int fd)
{
	static pthread_t reader;
	static bool started;

	if (!started) {
		if (pthread_create(&reader, NULL, drain, NULL) != 0)
			abort();
		started = true;
	}
	pthread_mutex_lock(&drain_mu);
	drain_done = false;
	drain_fd = fd;
	pthread_cond_broadcast(&drain_cv);
	pthread_mutex_unlock(&drain_mu);
}

static void drain_wait(void)
{
	pthread_mutex_lock(&drain_mu);
	while (!drain_done)
		pthread_cond_wait(&drain_cv, &drain_mu);
	pthread_mutex_unlock(&drain_mu);
}

/* Send one chunk (with its fds on the first byte); false once the peer is gone. */
static bool send_chunk(int c, const uint8_t *p, size_t len, const int *fds, unsigned nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 3)];
		struct cmsghdr align;
	} ctl;
	size_t off = 0;

	while (off < len) {
		struct iovec iov = { .iov_base = (void *)(p + off), .iov_len = len - off };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t n;

		if (off == 0 && nfds) {
			struct cmsghdr *cm;

			memset(&ctl, 0, sizeof(ctl));
			mh.msg_control = ctl.buf;
			mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
			cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
			memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
		}
		n = sendmsg(c, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			/* full: let the server read */
			int sfd = vfu_server_client_fd(server);
			struct pollfd pfd = { .fd = sfd, .events = vfu_server_poll_events(server) };

			if (sfd < 0)
				return false;
			poll(&pfd, 1, 100);
			if (vfu_server_handle(server) < 0)
				return false;
			continue;
		}
		return false;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int c, base_fds, rc = 0;
	bool connected = true;

	setup_once();
	base_fds = count_fds();
	c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memcpy(addr.sun_path, sock_path, strlen(sock_path) + 1);
	if (c < 0 || connect(c, (struct sockaddr *)&addr, sizeof(addr)) < 0 || vfu_server_accept(server) <= 0)
		abort();
	drain_start(c);

	while (size >= 3 && connected) {
		unsigned ctl = data[0], nfds = ctl & 3;
		size_t len = (size_t)data[1] | (size_t)data[2] << 8;
		int fds[3];

		data += 3;
		size -= 3;
		if (len > size)
			len = size;
		for (unsigned i = 0; i < nfds; i++)
			fds[i] = make_fd((ctl >> 2) & 3);
		/* fds ride on the first byte: a chunk without bytes carries none */
		connected = len == 0 || send_chunk(c, data, len, fds, nfds);
		for (unsigned i = 0; i < nfds; i++)
			close(fds[i]);
		data += len;
		size -= len;
		/* let the server catch up with what fits in this round */
		while (connected && vfu_server_client_fd(server) >= 0) {
			struct pollfd pfd = { .fd = vfu_server_client_fd(server),
					      .events = vfu_server_poll_events(server) };

			if (poll(&pfd, 1, 0) <= 0)
				break;
			if (vfu_server_handle(server) < 0)
				connected = false;
		}
		if (connected && (ctl & 0x10))
			for (unsigned v = 0; v < MSIX_VECTORS; v++)
				vfu_server_irq_trigger(server, VFU_PCI_MSIX_IRQ, v);
	}
	/* EOF: the server must notice, clean up and close its end */
	shutdown(c, SHUT_WR);
	while (vfu_server_client_fd(server) >= 0) {
		struct pollfd pfd = { .fd = vfu_server_client_fd(server), .events = vfu_server_poll_events(server) };

		poll(&pfd, 1, 1000);
		rc = vfu_server_handle(server);
		(void)rc;
	}
	drain_wait();
	close(c);
	if (guest_mem_count(vfu_server_guest_mem(server)) != 0 || gone_count != ready_count)
		abort();
	if (count_fds() != base_fds) {
		fprintf(stderr, "fuzz_vfu: %d fds open after the client left, %d before\n", count_fds(), base_fds);
		abort();
	}
	return 0;
}
