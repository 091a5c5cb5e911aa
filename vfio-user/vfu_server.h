/* SPDX-License-Identifier: MIT */
/*
 * A vfio-user server for one PCI device (the QEMU client: vfio-user-pci).
 *
 * Non-blocking and fd-driven, for a single-threaded poll loop that the
 * caller owns: poll vfu_server_listen_fd() and call vfu_server_accept() when
 * it is readable; poll vfu_server_client_fd() for vfu_server_poll_events()
 * and call vfu_server_handle() when any of them (or a hang-up) is
 * reported.  The client fd changes on every accept, so re-register it
 * after each accept and after a drop.  Nothing here ever blocks: replies a
 * slow client does not take wait in a bounded queue (vuser_tran.h).
 *
 * The device itself lives behind struct vfu_device_ops; this layer knows the
 * protocol only (docs/vfio-user.md).  The client is untrusted: every
 * message is checked before use, a bad one gets an error reply (or, if its
 * framing is broken, the client is dropped) and the server keeps serving.
 *
 * Region and IRQ indices are Linux VFIO's (VFIO_PCI_*_REGION_INDEX,
 * VFIO_PCI_*_IRQ_INDEX from <linux/vfio.h>).
 *
 * Every public name starts with vfu_server_ (or is a vfu_ type of this
 * project's), never one of libvfio-user's functions (vfu_irq_trigger,
 * vfu_create_ctx...), which readers of this field know by heart.
 */
#ifndef VFA_VFU_SERVER_H
#define VFA_VFU_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct guest_mem;
struct vfu_server;

/* Callbacks into the device adapter; opaque is the device. */
struct vfu_device_ops {
	/*
	 * Region index per VFIO_PCI_*_REGION_INDEX (BAR0..5, ROM, CONFIG,
	 * VGA).  size 0 = absent.  flags: VFIO_REGION_INFO_FLAG_READ|WRITE
	 * (MMAP is never offered: every access goes through region_read/
	 * write).  Return 0 or -errno.
	 */
	int (*region_info)(void *opaque, unsigned index, uint64_t *size, uint32_t *flags);
	/*
	 * The server has already checked that [offset, offset + count) lies
	 * inside the region's size and count > 0.  0 or -errno (sent back to
	 * the client as the error).
	 */
	int (*region_read)(void *opaque, unsigned index, uint64_t offset, void *buf, uint32_t count);
	int (*region_write)(void *opaque, unsigned index, uint64_t offset, const void *buf,
			    uint32_t count);
	/* Vectors of IRQ index VFIO_PCI_*_IRQ_INDEX; 0 = not supported. */
	unsigned (*irq_count)(void *opaque, unsigned index);
	/*
	 * After DEVICE_SET_IRQS changed eventfds or masks of that index (also
	 * when a disable/reset clears them).  Query with vfu_server_irq_enabled().
	 */
	void (*irqs_changed)(void *opaque, unsigned index);
	/* DEVICE_RESET.  0 or -errno. */
	int (*reset)(void *opaque);
	/*
	 * [gpa, gpa + len) is about to disappear (DMA_UNMAP or disconnect):
	 * drop every use of it.  Called while the range is still mapped and
	 * still in vfu_server_guest_mem().  May be NULL.
	 */
	void (*dma_unmap)(void *opaque, uint64_t gpa, uint64_t len);
	/*
	 * The client disconnected (or was dropped): release everything it
	 * set up (interrupt state, companion mappings...).  Order on
	 * disconnect: client_gone() first, while every range is still
	 * registered and mapped (the device is reset while a DMA it may be
	 * finishing still lands in valid memory), then dma_unmap() for every
	 * range (so it must cope with a device already released), then the
	 * ranges leave guest_mem and are munmapped.  IRQ eventfds are closed
	 * after client_gone().  Called only for a client that
	 * got client_ready() (completed VERSION): one that never did could
	 * not set anything up.  May be NULL.
	 */
	void (*client_gone)(void *opaque);
	/*
	 * Optional (may be NULL): [gpa, gpa + len) was just added to
	 * vfu_server_guest_mem() by DMA_MAP.  va is NULL for a map without
	 * an fd (known but unreachable).  Return 0, or -errno to refuse it:
	 * the map is then undone and the client gets the error.  (For the
	 * identity-DMA mode, where all guest RAM must be registered.)
	 */
	int (*dma_map)(void *opaque, uint64_t gpa, uint64_t len, void *va, bool writable);
	/*
	 * Optional (may be NULL): a client completed the version handshake,
	 * i.e. a VMM is attached.  For logging and status only.
	 */
	void (*client_ready)(void *opaque);
};

/* Counters for `vfio-apple status` (monotonic since create). */
struct vfu_stats {
	uint64_t clients;        /* connections accepted */
	uint64_t refused;        /* connections refused (one client at a time) */
	uint64_t messages;       /* requests handled */
	uint64_t errors;         /* requests answered with an error */
	uint64_t dropped;        /* clients dropped for broken framing */
	uint64_t dma_maps;       /* DMA_MAP accepted */
	uint64_t dma_unmaps;     /* ranges removed by DMA_UNMAP */
	uint64_t region_reads;
	uint64_t region_writes;
	uint64_t irqs_triggered; /* eventfd writes */
	uint64_t irqs_latched;   /* triggers on masked vectors (fired on unmask) */
	uint64_t refused_peers;  /* of refused: peers of another uid (not ours, not root) */
	uint64_t overflows;      /* clients dropped because their output queue overflowed */
	uint64_t queued_bytes;   /* replies waiting for the client now */
	bool connected;          /* a client is attached now */
};

/*
 * Bind and listen on socket_path, mode 0600 whatever the umask
 * (common/unix_socket.h: a stale socket file, nothing accepting on it, is
 * replaced; a live one gives NULL with "socket PATH is in use by another
 * process" in err; anything else at the path is never deleted).  Only
 * peers of our uid or root are accepted.  On any failure: NULL and a
 * message in err.
 */
struct vfu_server *vfu_server_create(const char *socket_path, const struct vfu_device_ops *ops,
				     void *opaque, char *err, size_t errlen);
/*
 * The same server over any transport (vfio-user/vuser_tran.h), which it
 * then owns; name is for the log and socket_path().  With the memory
 * transport (vuser_tran_mem_create) dispatch runs with no socket at all:
 * vfu_server_accept() attaches its client, pushed messages are handled by
 * vfu_server_handle().  NULL with err on failure (the transport is
 * destroyed then too).
 */
struct vuser_tran;
struct vfu_server *vfu_server_create_on(struct vuser_tran *tran, const char *name, const struct vfu_device_ops *ops,
					void *opaque, char *err, size_t errlen);
/* Closes the client (with the usual cleanup) and unlinks the socket. */
void vfu_server_destroy(struct vfu_server *s);

int vfu_server_listen_fd(const struct vfu_server *s);
/*
 * Listen fd readable: accept one connection.  Returns the new client fd
 * (> 0), 0 if nothing to accept or it was refused (closed, counted in
 * refused: a second client, or a peer of another uid), or -errno.
 */
int vfu_server_accept(struct vfu_server *s);
/* -1 when no client is attached. */
int vfu_server_client_fd(const struct vfu_server *s);
/*
 * The events to poll the client fd for now: POLLIN unless the output queue
 * is full (then the client must read first), POLLOUT while replies wait.
 * 0 without a client.
 */
short vfu_server_poll_events(const struct vfu_server *s);
/*
 * Client fd ready (or hung up): send what waits, read what is there and
 * process the complete messages (at most a bounded batch per call: poll
 * level-triggered).  0 = still connected; < 0 = the client is gone (EOF,
 * dropped for a protocol error or an overflowing output queue) and
 * everything it set up has been cleaned up; its fd is already closed.
 */
int vfu_server_handle(struct vfu_server *s);
/* The client's pid (0: none, or the platform cannot say). */
pid_t vfu_server_peer_pid(const struct vfu_server *s);
/* A client is attached and completed VERSION. */
bool vfu_server_negotiated(const struct vfu_server *s);
/* Drop the client now (as on disconnect).  No-op without one. */
void vfu_server_disconnect(struct vfu_server *s);

/* The client's DMA_MAPped guest memory (GPA -> VA in this process). */
struct guest_mem *vfu_server_guest_mem(struct vfu_server *s);

/* The vector has an eventfd and is not masked. */
bool vfu_server_irq_enabled(const struct vfu_server *s, unsigned index, unsigned vector);
/* The vector has an eventfd (masked or not). */
bool vfu_server_irq_assigned(const struct vfu_server *s, unsigned index, unsigned vector);
/*
 * Signal the vector: write its eventfd.  If it is masked, latch it pending
 * and fire on unmask.  0, or -ENOENT (no eventfd: dropped, counted nowhere),
 * -EINVAL (bad index/vector), -errno from write.
 */
int vfu_server_irq_trigger(struct vfu_server *s, unsigned index, unsigned vector);

/*
 * Inside a region_write callback: true when the client does not wait for
 * this write (a REGION_WRITE with NO_REPLY, or any write of a
 * REGION_WRITE_MULTI): QEMU's posted MMIO writes, which return to the
 * guest before the device has seen them.  False otherwise.
 */
bool vfu_server_write_posted(const struct vfu_server *s);

void vfu_server_stats(const struct vfu_server *s, struct vfu_stats *out);
const char *vfu_server_socket_path(const struct vfu_server *s);

#endif
