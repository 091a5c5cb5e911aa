// SPDX-License-Identifier: MIT
/*
 * The broker: one host function, its passthrough model and its companion,
 * each served on a vfio-user socket, plus a control socket, all driven by
 * one poll() loop on one thread.  poll() rather than epoll and a self-pipe
 * rather than signalfd: a dozen fds at most, and the same code builds on
 * macOS, where the broker must eventually run.
 *
 *   tags                 what
 *   TAG_SIGNAL           self-pipe written by the SIGINT/SIGTERM/SIGHUP/SIGQUIT handler:
 *                        clean shutdown
 *   TAG_IRQ              host interrupt wake-up -> passthrough router
 *   TAG_*_LISTEN/CLIENT  the two vfio-user servers (one client each)
 *   TAG_CTRL + i         control socket (broker/control.c): 0 listens, 1.. connections
 *
 * Nothing in the loop blocks on a peer: the vfio-user servers queue their
 * replies and say which events they wait for (vfu_server_poll_events), the
 * control socket likewise, and each wake-up does a bounded amount of work
 * per fd (issue 11, item 3).
 *
 * Surprise removal (hostdev/host_device.h): after every dispatch the loop
 * checks whether the host function is still present.  Once it is gone,
 * device_removed() releases every DART mapping it holds (identity ranges,
 * the companion's: their ids stay known for the guest's UNMAPs), stops
 * watching the interrupt wake-up, and tells `watch` connections; the
 * passthrough and companion models answer all ones and refuse MAPs by
 * themselves.  Nothing else changes: both sockets keep serving.  The
 * control commands sim-vanish and sim-replug pull and re-plug a simulated
 * device (sim:nvme); a replug builds a fresh passthrough function over the
 * fresh device, refused while a passthrough client holds the old one.
 *
 * Teardown order matters: a vfio-user client's ranges are released while
 * still mapped (the device models drop every use first), the passthrough
 * function is reset before its VMM's memory goes away, and on shutdown
 * every DMA registration is released before the claim is given back.
 */
#include "broker.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "backends.h"
#include "compat.h"
#include "sim_nvme.h"
#include "control.h"
#include "memguard.h"
#include "status.h"
#include "companion.h"
#include "guest_mem.h"
#include "log.h"
#include "passthrough.h"
#include "vfu_protocol.h"
#include "vfu_server.h"


enum {
	TAG_SIGNAL = 1,
	TAG_IRQ,
	TAG_PT_LISTEN,
	TAG_PT_CLIENT,
	TAG_COMP_LISTEN,
	TAG_COMP_CLIENT,
	TAG_CTRL, /* + control slot (0: listening socket) */
};

struct broker {
	const struct broker_config *cfg;
	struct host_device *hd;
	bool claimed;
	struct passthrough *pt;
	struct passthrough_opts pt_opts; /* kept for a replug's fresh function model */
	struct companion *comp;
	struct vfu_server *pt_srv;
	struct vfu_server *comp_srv;
	int pt_client_fd;
	int comp_client_fd;
	/* DOORBELL writes the companion's VMM posted (no reply awaited); warned once per VMM. */
	uint64_t posted_doorbells;
	bool posted_doorbell_warned;
	unsigned posted_delay_ms; /* VFA_TEST_POSTED_DOORBELL_DELAY_MS (tests only) */
	/* Identity mode: the passthrough client's RAM registered with the host (va unused). */
	struct guest_mem *identity_regs;
	uint64_t identity_register_failures;
	int sig_read; /* self-pipe: the signal handler writes the signal number */
	struct control *ctrl;
	/* Companion clients refused: not the process that holds the passthrough socket. */
	uint64_t companion_refused;
	struct timespec started;
	bool stop;
	bool removal_handled; /* device_removed() ran for the current removal */
};

static void device_removed(struct broker *b);

/* ---- the passthrough function as a vfio-user device ---------------------- */

static enum pt_vector_state pt_sink_state(void *opaque, unsigned index, unsigned vector)
{
	struct broker *b = opaque;

	if (!vfu_server_irq_assigned(b->pt_srv, index, vector))
		return PT_VECTOR_OFF;
	return vfu_server_irq_enabled(b->pt_srv, index, vector) ? PT_VECTOR_READY : PT_VECTOR_MASKED;
}

static int pt_sink_trigger(void *opaque, unsigned index, unsigned vector)
{
	struct broker *b = opaque;

	return vfu_server_irq_trigger(b->pt_srv, index, vector);
}

static int pt_region_info(void *opaque, unsigned index, uint64_t *size, uint32_t *flags)
{
	struct broker *b = opaque;

	if (index >= VFU_PCI_NUM_REGIONS)
		return -EINVAL;
	if (index <= VFU_PCI_BAR5_REGION)
		*size = passthrough_bar_size(b->pt, index);
	else if (index == VFU_PCI_CONFIG_REGION)
		*size = passthrough_config_size(b->pt);
	else
		*size = 0; /* no ROM, no VGA */
	*flags = *size ? VFU_REGION_INFO_FLAG_READ | VFU_REGION_INFO_FLAG_WRITE : 0;
	return 0;
}

static int pt_region_read(void *opaque, unsigned index, uint64_t offset, void *buf, uint32_t count)
{
	struct broker *b = opaque;

	if (index <= VFU_PCI_BAR5_REGION)
		return passthrough_bar_read(b->pt, index, offset, buf, count);
	if (index == VFU_PCI_CONFIG_REGION && offset <= UINT32_MAX)
		return passthrough_config_read(b->pt, (uint32_t)offset, buf, count);
	return -EINVAL;
}

static int pt_region_write(void *opaque, unsigned index, uint64_t offset, const void *buf, uint32_t count)
{
	struct broker *b = opaque;

	if (index <= VFU_PCI_BAR5_REGION)
		return passthrough_bar_write(b->pt, index, offset, buf, count);
	if (index == VFU_PCI_CONFIG_REGION && offset <= UINT32_MAX)
		return passthrough_config_write(b->pt, (uint32_t)offset, buf, count);
	return -EINVAL;
}

static unsigned pt_irq_count(void *opaque, unsigned index)
{
	struct broker *b = opaque;

	return passthrough_irq_count(b->pt, index);
}

static void pt_irqs_changed(void *opaque, unsigned index)
{
	struct broker *b = opaque;
	int rc = passthrough_irqs_changed(b->pt);

	(void)index;
	if (rc < 0)
		log_warn("passthrough: updating the host interrupt mask: %s", host_device_error(b->hd));
}

static int pt_reset(void *opaque)
{
	struct broker *b = opaque;
	int rc = passthrough_reset(b->pt);

	if (rc < 0)
		log_warn("passthrough: reset: %s", host_device_error(b->hd));
	return rc;
}

/* Identity mode (Linux VFIO semantics): guest RAM is registered as it is shared. */
static int pt_dma_map(void *opaque, uint64_t gpa, uint64_t len, void *va, bool writable)
{
	struct broker *b = opaque;
	uint64_t bus = 0, bus_len = 0;
	int rc;

	if (!b->hd->identity_dma || !va)
		return 0; /* DART mode: the companion maps on request; no fd: unreachable */
	if (!host_device_present(b->hd))
		return 0; /* nothing to register with a function that is gone (the VMM's map still succeeds) */
	/*
	 * The platform has no DMA direction: a registered window is writable
	 * by the device, and a read-only one is mapped read-only here (a
	 * device write would fault in the broker).  Like a map without fd, it
	 * stays unreachable; the companion refuses read-only windows too.
	 */
	if (!writable) {
		log_info("identity DMA: read-only guest memory 0x%llx+0x%llx is not registered (the "
			 "device could write it)", (unsigned long long)gpa, (unsigned long long)len);
		return 0;
	}
	rc = b->hd->ops->dma_register(b->hd, gpa, va, len, &bus, &bus_len);
	if (rc < 0) {
		b->identity_register_failures++;
		log_warn("identity DMA: registering guest RAM 0x%llx+0x%llx: %s", (unsigned long long)gpa,
			 (unsigned long long)len, host_device_error(b->hd));
		return rc;
	}
	if (bus != gpa || bus_len != len) {
		log_warn("identity DMA: the host mapped 0x%llx+0x%llx at bus 0x%llx+0x%llx, not 1:1",
			 (unsigned long long)gpa, (unsigned long long)len, (unsigned long long)bus,
			 (unsigned long long)bus_len);
		b->hd->ops->dma_unregister(b->hd, gpa);
		b->identity_register_failures++;
		return -EINVAL;
	}
	rc = guest_mem_add(b->identity_regs, gpa, len, NULL, writable);
	if (rc < 0) {
		b->hd->ops->dma_unregister(b->hd, gpa);
		return rc;
	}
	return 0;
}

static void pt_dma_unmap(void *opaque, uint64_t gpa, uint64_t len)
{
	struct broker *b = opaque;

	if (guest_mem_remove(b->identity_regs, gpa, len) < 0)
		return; /* never registered */
	if (b->hd->ops->dma_unregister(b->hd, gpa) < 0)
		log_warn("identity DMA: unregistering 0x%llx: %s", (unsigned long long)gpa,
			 host_device_error(b->hd));
}

static void pt_client_ready(void *opaque)
{
	struct broker *b = opaque;
	const struct pt_irq_sink sink = { pt_sink_state, pt_sink_trigger, b };

	log_info("passthrough: VMM attached on %s", vfu_server_socket_path(b->pt_srv));
	if (passthrough_set_irq_sink(b->pt, &sink) < 0)
		log_warn("passthrough: interrupt mask: %s", host_device_error(b->hd));
	/* Now there is a function to map for (issue 11, item 4). */
	if (b->comp)
		companion_refuse_maps(b->comp, false);
}

/* Unregister identity ranges the client left behind (normally none by now). */
static void unregister_identity_range(uint64_t gpa, uint64_t len, void *va, bool writable, void *opaque)
{
	struct broker *b = opaque;

	(void)len;
	(void)va;
	(void)writable;
	if (b->hd->ops->dma_unregister(b->hd, gpa) < 0)
		log_warn("identity DMA: unregistering 0x%llx: %s", (unsigned long long)gpa,
			 host_device_error(b->hd));
}

static void release_identity_ranges(struct broker *b)
{
	if (!b->identity_regs || guest_mem_count(b->identity_regs) == 0)
		return;
	guest_mem_for_each(b->identity_regs, unregister_identity_range, b);
	guest_mem_destroy(b->identity_regs);
	b->identity_regs = guest_mem_create();
}

static void pt_client_gone(void *opaque)
{
	struct broker *b = opaque;

	log_info("passthrough: VMM detached; resetting the function");
	/* Masks every vector and resets the function: its DMA stops here. */
	if (passthrough_client_gone(b->pt) < 0)
		log_warn("passthrough: reset after disconnect: %s", host_device_error(b->hd));
	release_identity_ranges(b);
	/*
	 * The companion's mappings exist for this function only and point
	 * into the leaving VM's RAM: a VMM attaching to the passthrough
	 * socket next must not inherit them.
	 */
	if (b->comp) {
		companion_release_mappings(b->comp);
		companion_refuse_maps(b->comp, true);
	}
}

static const struct vfu_device_ops passthrough_vfu_ops = {
	.region_info = pt_region_info,
	.region_read = pt_region_read,
	.region_write = pt_region_write,
	.irq_count = pt_irq_count,
	.irqs_changed = pt_irqs_changed,
	.reset = pt_reset,
	.dma_unmap = pt_dma_unmap,
	.client_gone = pt_client_gone,
	.dma_map = pt_dma_map,
	.client_ready = pt_client_ready,
};

/* ---- the companion as a vfio-user device --------------------------------- */

static int comp_region_info(void *opaque, unsigned index, uint64_t *size, uint32_t *flags)
{
	(void)opaque;
	if (index >= VFU_PCI_NUM_REGIONS)
		return -EINVAL;
	if (index == VFU_PCI_BAR0_REGION)
		*size = COMPANION_BAR0_SIZE;
	else if (index == VFU_PCI_CONFIG_REGION)
		*size = COMPANION_CONFIG_SIZE;
	else
		*size = 0;
	*flags = *size ? VFU_REGION_INFO_FLAG_READ | VFU_REGION_INFO_FLAG_WRITE : 0;
	return 0;
}

/* BAR0 in naturally aligned pieces of at most 4 bytes (an 8-byte access: low half first). */
static unsigned comp_piece(uint64_t offset, uint64_t left)
{
	unsigned width = 4;

	while (width > 1 && (offset % width != 0 || left < width))
		width /= 2;
	return width;
}

static int comp_region_read(void *opaque, unsigned index, uint64_t offset, void *buf, uint32_t count)
{
	struct broker *b = opaque;
	uint8_t *dst = buf;

	if (index == VFU_PCI_CONFIG_REGION && offset <= UINT32_MAX)
		return companion_config_read(b->comp, (uint32_t)offset, buf, count);
	if (index != VFU_PCI_BAR0_REGION || offset > COMPANION_BAR0_SIZE || count > COMPANION_BAR0_SIZE - offset)
		return -EINVAL;
	while (count > 0) {
		unsigned width = comp_piece(offset, count);
		uint32_t v = companion_mmio_read(b->comp, offset, width);

		for (unsigned i = 0; i < width; i++)
			dst[i] = (uint8_t)(v >> (8 * i));
		dst += width;
		offset += width;
		count -= width;
	}
	return 0;
}

/*
 * The protocol promises that a batch is done when the guest's DOORBELL write
 * returns; a posted write breaks that promise (docs/vfio-user.md).
 */
static void comp_posted_doorbell(struct broker *b)
{
	b->posted_doorbells++;
	/* Tests only (tests/e2e refguest): lose the race a posted doorbell
	 * runs against the guest every time, not only when the scheduler
	 * says so; never set outside tests, since it stalls the loop. */
	if (b->posted_delay_ms) {
		struct timespec ts = { .tv_sec = b->posted_delay_ms / 1000,
				       .tv_nsec = (long)(b->posted_delay_ms % 1000) * 1000000L };

		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	if (b->posted_doorbell_warned)
		return;
	b->posted_doorbell_warned = true;
	log_warn("companion: the VMM posts its DOORBELL writes (vfio-user NO_REPLY): the guest's write "
		 "returns before the batch is processed, so a guest driver that does not read STATUS after "
		 "the doorbell (as the reference's apple-dma module) reads stale responses and breaks; start "
		 "the companion's vfio-user-pci with x-no-posted-writes=on (logged once per VMM)");
}

static int comp_region_write(void *opaque, unsigned index, uint64_t offset, const void *buf, uint32_t count)
{
	struct broker *b = opaque;
	const uint8_t *src = buf;

	if (index == VFU_PCI_CONFIG_REGION && offset <= UINT32_MAX)
		return companion_config_write(b->comp, (uint32_t)offset, buf, count);
	if (index != VFU_PCI_BAR0_REGION || offset > COMPANION_BAR0_SIZE || count > COMPANION_BAR0_SIZE - offset)
		return -EINVAL;
	while (count > 0) {
		unsigned width = comp_piece(offset, count);
		uint32_t v = 0;

		for (unsigned i = 0; i < width; i++)
			v |= (uint32_t)src[i] << (8 * i);
		if (offset == APPLE_DMA_REG_DOORBELL && width == 4 && vfu_server_write_posted(b->comp_srv))
			comp_posted_doorbell(b);
		companion_mmio_write(b->comp, offset, width, v);
		src += width;
		offset += width;
		count -= width;
	}
	return 0;
}

static unsigned comp_irq_count(void *opaque, unsigned index)
{
	(void)opaque;
	(void)index;
	return 0; /* every request completes synchronously */
}

static void comp_irqs_changed(void *opaque, unsigned index)
{
	(void)opaque;
	(void)index;
}

static int comp_reset(void *opaque)
{
	struct broker *b = opaque;

	companion_reset(b->comp);
	return 0;
}

static void comp_dma_unmap(void *opaque, uint64_t gpa, uint64_t len)
{
	struct broker *b = opaque;

	companion_guest_ram_removed(b->comp, gpa, len);
}

static void comp_client_ready(void *opaque)
{
	struct broker *b = opaque;

	log_info("companion: VMM attached on %s", vfu_server_socket_path(b->comp_srv));
	b->posted_doorbell_warned = false;
}

static void comp_client_gone(void *opaque)
{
	struct broker *b = opaque;

	log_info("companion: VMM detached; releasing its mappings");
	companion_reset(b->comp);
}

static const struct vfu_device_ops companion_vfu_ops = {
	.region_info = comp_region_info,
	.region_read = comp_region_read,
	.region_write = comp_region_write,
	.irq_count = comp_irq_count,
	.irqs_changed = comp_irqs_changed,
	.reset = comp_reset,
	.dma_unmap = comp_dma_unmap,
	.client_gone = comp_client_gone,
	.client_ready = comp_client_ready,
};

/* ---- status (broker/status.c writes the JSON) ----------------------------- */

static char *status_text(void *opaque)
{
	const struct broker *b = opaque;
	const struct broker_status_src src = {
		.cfg = b->cfg,
		.hd = b->hd,
		.pt = b->pt,
		.comp = b->comp,
		.pt_srv = b->pt_srv,
		.comp_srv = b->comp_srv,
		.started = b->started,
		.identity_register_failures = b->identity_register_failures,
		.posted_doorbells = b->posted_doorbells,
		.control_refused_peers = b->ctrl ? control_refused_peers(b->ctrl) : 0,
		.control_watchers = b->ctrl ? control_watchers(b->ctrl) : 0,
		.control_watchers_dropped = b->ctrl ? control_watchers_dropped(b->ctrl) : 0,
		.companion_refused = b->companion_refused,
	};

	return broker_status_json(&src);
}

static char *presence_event(void *opaque)
{
	const struct broker *b = opaque;

	return broker_presence_event(b->hd);
}

/* ---- surprise removal ------------------------------------------------------ */

/*
 * The host function is gone: release what is registered with it, stop
 * listening for its interrupts, tell the watchers.  Both sockets keep
 * serving: the models answer all ones and refuse new DMA by themselves.
 */
static void device_removed(struct broker *b)
{
	char *event;
	unsigned released = 0;

	if (b->removal_handled)
		return;
	b->removal_handled = true;
	log_warn("%s is gone: %s; reads answer all ones and DMA is refused until it is back", b->cfg->device_spec,
		 host_device_removal(b->hd));
	release_identity_ranges(b);
	if (b->comp)
		released = companion_host_gone(b->comp);
	if (released)
		log_info("companion: %u DART mappings released", released);
	event = broker_presence_event(b->hd);
	if (event && b->ctrl)
		control_broadcast(b->ctrl, event);
	free(event);
}

static char *cmd_sim_vanish(struct broker *b)
{
	if (!sim_nvme_is(b->hd))
		return broker_command_answer("sim-vanish works on a simulated device (sim:nvme) only");
	sim_nvme_vanish(b->hd, "the simulated device was pulled (sim-vanish)");
	device_removed(b);
	return broker_command_answer(NULL);
}

static char *cmd_sim_replug(struct broker *b)
{
	char err[HD_ERROR_LEN + 64] = "", msg[HD_ERROR_LEN + 128];
	struct passthrough *fresh;
	char *event;
	int rc;

	if (!sim_nvme_is(b->hd))
		return broker_command_answer("sim-replug works on a simulated device (sim:nvme) only");
	if (host_device_present(b->hd))
		return broker_command_answer("the simulated device is present: nothing to plug back");
	if (b->pt_client_fd >= 0)
		return broker_command_answer("the VMM still holds the function; detach it first");
	rc = sim_nvme_replug(b->hd, err, sizeof(err));
	if (rc == 0)
		rc = b->hd->ops->claim(b->hd);
	fresh = rc == 0 ? passthrough_create_opts(b->hd, &b->pt_opts, err, sizeof(err)) : NULL;
	if (!fresh) {
		snprintf(msg, sizeof(msg), "plugging back failed: %s", err[0] ? err : host_device_error(b->hd));
		sim_nvme_vanish(b->hd, msg); /* stays gone, served as before */
		return broker_command_answer(msg);
	}
	passthrough_destroy(b->pt);
	b->pt = fresh;
	if (b->comp)
		companion_host_back(b->comp); /* MAPs still wait for a passthrough client */
	b->removal_handled = false;
	log_info("%s is back (a fresh device; the namespace's data is kept)", b->cfg->device_spec);
	event = broker_presence_event(b->hd);
	if (event && b->ctrl)
		control_broadcast(b->ctrl, event);
	free(event);
	return broker_command_answer(NULL);
}

/*
 * "guest-addr BB:DD.F": where the guest put the managed function, for
 * MANAGED_BDF.  `vfio-apple run` learns it from QEMU once the guest has
 * numbered the bus of the function's slot (firmware and kernels differ).
 */
static char *cmd_guest_addr(struct broker *b, const char *text)
{
	unsigned bus, dev, fn;
	char end;

	if (sscanf(text, "%2x:%2x.%1x%c", &bus, &dev, &fn, &end) != 3 || bus > 0xff || dev > 0x1f || fn > 7)
		return broker_command_answer("guest-addr needs BB:DD.F in hex, e.g. 02:00.1");
	if (!b->comp)
		return broker_command_answer("this broker has no companion");
	companion_set_managed_bdf(b->comp, (uint16_t)(bus << 8 | dev << 3 | fn));
	log_info("companion: the managed function is at guest %02x:%02x.%x now", bus, dev, fn);
	return broker_command_answer(NULL);
}

/*
 * "sim-reset-companion": the companion drops every mapping and its
 * registers (the command page included), as a reset by the VMM does, and
 * nobody tells the guest.  For testing how a guest driver notices and
 * recovers; nothing else triggers it.
 */
static char *cmd_sim_reset_companion(struct broker *b)
{
	struct companion_stats cs;

	if (!b->comp)
		return broker_command_answer("this broker has no companion");
	companion_stats(b->comp, &cs);
	log_info("companion: reset from the control socket (sim-reset-companion); %" PRIu64 " mappings go",
		 cs.live_ids);
	companion_reset(b->comp);
	return broker_command_answer(NULL);
}

static char *control_command(void *opaque, const char *request)
{
	struct broker *b = opaque;

	if (!strncmp(request, "guest-addr ", 11))
		return cmd_guest_addr(b, request + 11);
	if (!strcmp(request, "sim-vanish"))
		return cmd_sim_vanish(b);
	if (!strcmp(request, "sim-replug"))
		return cmd_sim_replug(b);
	if (!strcmp(request, "sim-reset-companion"))
		return cmd_sim_reset_companion(b);
	return NULL;
}

/* ---- the loop ------------------------------------------------------------ */

/*
 * Both sockets must be held by one VMM process (issue 11, item 4): a
 * companion client of another process could otherwise map its memory for
 * a function another VM drives.  Checked whenever both are attached; the
 * companion's client is the one dropped.
 */
static void check_same_vmm(struct broker *b)
{
	pid_t pt, comp;

	if (!b->comp_srv || b->comp_client_fd < 0 || b->pt_client_fd < 0)
		return;
	pt = vfu_server_peer_pid(b->pt_srv);
	comp = vfu_server_peer_pid(b->comp_srv);
	if (pt == comp || pt == 0 || comp == 0) /* 0: the platform cannot say */
		return;
	log_warn("companion: refusing the client of pid %d: the passthrough socket is held by pid %d (both "
		 "devices must belong to one VMM)", (int)comp, (int)pt);
	b->companion_refused++;
	vfu_server_disconnect(b->comp_srv);
	b->comp_client_fd = -1;
}

static void server_accept(struct broker *b, struct vfu_server *s, int *client_fd)
{
	int fd = vfu_server_accept(s);

	if (fd < 0)
		log_warn("%s: accept: %s", vfu_server_socket_path(s), strerror(-fd));
	else if (fd > 0)
		*client_fd = fd;
	check_same_vmm(b);
}

static void server_handle(struct vfu_server *s, int *client_fd)
{
	if (vfu_server_handle(s) < 0)
		*client_fd = -1; /* gone; the server has closed the fd */
}

static void dispatch(struct broker *b, uint32_t tag, short revents)
{
	switch (tag) {
	case TAG_SIGNAL: {
		uint8_t signo = 0;

		if (read(b->sig_read, &signo, 1) == 1)
			log_info("signal %u: shutting down", signo);
		b->stop = true;
		break;
	}
	case TAG_IRQ:
		if (passthrough_handle_irq(b->pt) < 0 && passthrough_present(b->pt))
			log_warn("interrupts: reading the host's pending set: %s", host_device_error(b->hd));
		break;
	case TAG_PT_LISTEN:
		server_accept(b, b->pt_srv, &b->pt_client_fd);
		break;
	case TAG_PT_CLIENT:
		server_handle(b->pt_srv, &b->pt_client_fd);
		break;
	case TAG_COMP_LISTEN:
		server_accept(b, b->comp_srv, &b->comp_client_fd);
		break;
	case TAG_COMP_CLIENT:
		server_handle(b->comp_srv, &b->comp_client_fd);
		break;
	default:
		if (tag >= TAG_CTRL && tag <= TAG_CTRL + CONTROL_MAX_CONNS && b->ctrl)
			control_handle(b->ctrl, tag - TAG_CTRL, revents);
		break;
	}
	/* Any verb may have found the function gone, the wake-up included. */
	if (!b->removal_handled && !host_device_present(b->hd))
		device_removed(b);
}

static bool is_listen_tag(uint32_t tag)
{
	return tag == TAG_PT_LISTEN || tag == TAG_COMP_LISTEN || tag == TAG_CTRL;
}

#define MAX_POLL_FDS (7 + CONTROL_MAX_CONNS)

struct watch {
	struct pollfd pfd[MAX_POLL_FDS];
	uint32_t tag[MAX_POLL_FDS];
	nfds_t n;
};

static void watch(struct watch *w, int fd, short events, uint32_t tag)
{
	if (fd < 0 || events == 0 || w->n >= MAX_POLL_FDS)
		return;
	w->pfd[w->n] = (struct pollfd){ .fd = fd, .events = events };
	w->tag[w->n++] = tag;
}

/* The fd a tag stands for now (-1: gone since the poll). */
static int tag_fd(const struct broker *b, uint32_t tag)
{
	short events;
	int fd = -1;

	switch (tag) {
	case TAG_SIGNAL:
		return b->sig_read;
	case TAG_IRQ:
		return b->removal_handled ? -1 : passthrough_irq_wakeup_fd(b->pt);
	case TAG_PT_LISTEN:
		return vfu_server_listen_fd(b->pt_srv);
	case TAG_PT_CLIENT:
		return b->pt_client_fd;
	case TAG_COMP_LISTEN:
		return b->comp_srv ? vfu_server_listen_fd(b->comp_srv) : -1;
	case TAG_COMP_CLIENT:
		return b->comp_client_fd;
	default:
		if (b->ctrl && tag >= TAG_CTRL && tag <= TAG_CTRL + CONTROL_MAX_CONNS)
			control_poll_slot(b->ctrl, tag - TAG_CTRL, &fd, &events);
		return fd;
	}
}

static int loop(struct broker *b)
{
	while (!b->stop) {
		struct watch w = { .n = 0 };
		int n;

		watch(&w, b->sig_read, POLLIN, TAG_SIGNAL);
		if (!b->removal_handled) /* a removed function raises nothing */
			watch(&w, passthrough_irq_wakeup_fd(b->pt), POLLIN, TAG_IRQ);
		watch(&w, vfu_server_listen_fd(b->pt_srv), POLLIN, TAG_PT_LISTEN);
		watch(&w, b->pt_client_fd, vfu_server_poll_events(b->pt_srv), TAG_PT_CLIENT);
		if (b->comp_srv) {
			watch(&w, vfu_server_listen_fd(b->comp_srv), POLLIN, TAG_COMP_LISTEN);
			watch(&w, b->comp_client_fd, vfu_server_poll_events(b->comp_srv), TAG_COMP_CLIENT);
		}
		for (uint32_t i = 0; b->ctrl && i <= CONTROL_MAX_CONNS; i++) {
			short events;
			int fd;

			control_poll_slot(b->ctrl, i, &fd, &events);
			watch(&w, fd, events, TAG_CTRL + i);
		}

		n = poll(w.pfd, w.n, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "vfio-apple: poll: %s\n", strerror(errno));
			return -errno;
		}
		/*
		 * A signal wins over the rest; a client's hang-up is handled
		 * before new connections, so a VMM that reconnects at once is
		 * not refused as a second client.  An fd dropped by an earlier
		 * handler in this round is skipped.
		 */
		for (int pass = 0; pass < 3 && !b->stop; pass++) {
			for (nfds_t i = 0; i < w.n && !b->stop; i++) {
				uint32_t tag = w.tag[i];
				int want = tag == TAG_SIGNAL ? 0 : is_listen_tag(tag) ? 2 : 1;

				if (want != pass || !w.pfd[i].revents || tag_fd(b, tag) != w.pfd[i].fd)
					continue;
				dispatch(b, tag, w.pfd[i].revents);
			}
		}
	}
	return 0;
}

/* ---- setup and teardown -------------------------------------------------- */

static int setup(struct broker *b, char *err, size_t errlen)
{
	const struct broker_config *cfg = b->cfg;
	int rc;

	if (!cfg->device_spec || !cfg->passthrough_socket) {
		snprintf(err, errlen, "a device and a passthrough socket are required");
		return -EINVAL;
	}
	clock_gettime(CLOCK_MONOTONIC, &b->started);

	b->hd = host_device_open(cfg->device_spec, err, errlen);
	if (!b->hd)
		return -ENODEV;
	rc = b->hd->ops->claim(b->hd);
	if (rc < 0) {
		snprintf(err, errlen, "claiming %s: %s", cfg->device_spec, host_device_error(b->hd));
		return rc;
	}
	b->claimed = true;
	b->pt_opts.prefer_msi = cfg->prefer_msi;
	b->pt = passthrough_create_opts(b->hd, &b->pt_opts, err, errlen);
	if (!b->pt)
		return -EIO;
	b->identity_regs = guest_mem_create();
	if (!b->identity_regs) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}

	b->pt_srv = vfu_server_create(cfg->passthrough_socket, &passthrough_vfu_ops, b, err, errlen);
	if (!b->pt_srv)
		return -EIO;
	if (cfg->companion_socket) {
		uint16_t bdf = (uint16_t)(cfg->passthrough_bus << 8 | cfg->passthrough_devfn);

		b->comp_srv = vfu_server_create(cfg->companion_socket, &companion_vfu_ops, b, err, errlen);
		if (!b->comp_srv)
			return -EIO;
		b->comp = companion_create(b->hd, vfu_server_guest_mem(b->comp_srv), bdf,
					   cfg->companion_max_entries);
		if (!b->comp) {
			snprintf(err, errlen, "cannot create the companion (max entries %u, at most %u)",
				 cfg->companion_max_entries, COMPANION_LIMIT_MAX_ENTRIES);
			return -EINVAL;
		}
		/* No MAP until a passthrough client is there to use it (issue 11, item 4). */
		companion_refuse_maps(b->comp, true);
	}
	if (cfg->control_socket) {
		b->ctrl = control_create(cfg->control_socket, status_text, b, err, errlen);
		if (!b->ctrl)
			return -EIO;
		control_set_handlers(b->ctrl, control_command, presence_event);
	}
	return 0;
}

/* Release everything; returns the number of DMA mappings still live after. */
static uint64_t teardown(struct broker *b)
{
	struct hd_dma_stats dma = { 0 };

	control_destroy(b->ctrl);
	b->ctrl = NULL;
	/* Each server drops its client (callbacks above run) and unlinks its socket. */
	if (b->pt_srv)
		vfu_server_destroy(b->pt_srv);
	if (b->comp_srv)
		vfu_server_destroy(b->comp_srv);
	companion_destroy(b->comp);
	if (b->hd && b->identity_regs)
		release_identity_ranges(b);
	guest_mem_destroy(b->identity_regs);
	passthrough_destroy(b->pt);
	if (b->hd) {
		if (b->hd->ops->dma_stats)
			b->hd->ops->dma_stats(b->hd, &dma);
		if (b->claimed)
			b->hd->ops->release(b->hd);
		b->hd->ops->destroy(b->hd);
	}
	return dma.live_mappings;
}

/* The self-pipe's write end, for the signal handler (one broker per process). */
static volatile sig_atomic_t signal_pipe_write = -1;

static void on_signal(int signo)
{
	int saved = errno;
	uint8_t byte = (uint8_t)signo;

	if (signal_pipe_write >= 0 && write(signal_pipe_write, &byte, 1) < 0) {
		/* full pipe: a shutdown is already pending */
	}
	errno = saved;
}

/* Every signal that asks a daemon to stop gets the same clean shutdown. */
static const int stop_signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
#define NSTOP (sizeof(stop_signals) / sizeof(stop_signals[0]))

int broker_run(const struct broker_config *cfg)
{
	struct broker b = { .cfg = cfg, .pt_client_fd = -1, .comp_client_fd = -1 };
	struct sigaction sa = { .sa_handler = on_signal }, old_stop[NSTOP], old_pipe;
	int pipefd[2];
	char err[512] = "";
	uint64_t live;
	int rc;

	if (pipe(pipefd) < 0 || vfa_set_cloexec(pipefd[0], true) < 0 || vfa_set_cloexec(pipefd[1], true) < 0) {
		fprintf(stderr, "vfio-apple: signal pipe: %s\n", strerror(errno));
		return 1;
	}
	b.sig_read = pipefd[0];
	signal_pipe_write = pipefd[1];
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < NSTOP; i++)
		sigaction(stop_signals[i], &sa, &old_stop[i]);
	sa.sa_handler = SIG_IGN; /* a VMM that vanishes mid-reply is handled by the server */
	sigaction(SIGPIPE, &sa, &old_pipe);
	/* Guest RAM a VMM truncates fails the access, not the broker (common/memguard.h). */
	vfa_memguard_install();

	{
		const char *delay = getenv("VFA_TEST_POSTED_DOORBELL_DELAY_MS");

		if (delay && *delay) {
			b.posted_delay_ms = (unsigned)strtoul(delay, NULL, 10) % 1000;
			log_warn("VFA_TEST_POSTED_DOORBELL_DELAY_MS=%u: posted doorbells wait that long (a test hook)",
				 b.posted_delay_ms);
		}
	}
	rc = setup(&b, err, sizeof(err));
	if (rc == 0) {
		log_info("serving %s: passthrough on %s%s%s%s%s", cfg->device_spec, cfg->passthrough_socket,
			 cfg->companion_socket ? ", companion on " : "",
			 cfg->companion_socket ? cfg->companion_socket : "",
			 cfg->control_socket ? ", control on " : "", cfg->control_socket ? cfg->control_socket : "");
		rc = loop(&b);
	} else {
		fprintf(stderr, "vfio-apple: %s\n", err[0] ? err : strerror(-rc));
	}
	live = teardown(&b);
	for (size_t i = 0; i < NSTOP; i++)
		sigaction(stop_signals[i], &old_stop[i], NULL);
	sigaction(SIGPIPE, &old_pipe, NULL);
	signal_pipe_write = -1;
	close(pipefd[0]);
	close(pipefd[1]);
	if (live != 0) {
		fprintf(stderr, "vfio-apple: %llu DMA mappings still registered after shutdown\n",
			(unsigned long long)live);
		return 1;
	}
	return rc == 0 ? 0 : 1;
}
