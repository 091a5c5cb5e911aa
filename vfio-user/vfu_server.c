// SPDX-License-Identifier: MIT
/*
 * The vfio-user server: message dispatch for one device behind struct
 * vfu_device_ops, and the life of its one client.  See vfu_server.h for
 * the API and docs/vfio-user.md for what is supported and why.
 *
 * Its parts, each in its own file, called from here and never calling back:
 *   vuser_tran.h / vuser_tran_sock.c   transport: framing, SCM_RIGHTS, the
 *                                      non-blocking output queue, accept
 *   vuser_dma.h / vuser_dma.c          the DMA region table (DMA_MAP windows)
 *   vuser_irq.h / vuser_irq.c          interrupts: eventfds, masks, latches
 *
 * The loop never blocks on a client (issue 11, item 3): replies wait in the
 * transport's bounded queue; while it is full no new request is read
 * (vfu_server_poll_events() then asks for POLLOUT only), one wake-up
 * handles at most VFU_BATCH messages, and a client whose queue would
 * overflow is dropped.
 */
#include "vfu_server.h"

#include "errmsg.h"
#include "guest_mem.h"
#include "log.h"
#include "vfu_protocol.h"
#include "vuser_dma.h"
#include "vuser_irq.h"
#include "vuser_tran.h"

#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define VFU_BATCH 16 /* messages per vfu_server_handle() call */
#define HDR_SIZE ((uint32_t)sizeof(struct vfu_hdr))

/*
 * The connection (issue 13, item 6).  Legal transitions are the table
 * below; anything else is a bug, logged and refused.
 *
 *   NONE --accept--> CONNECTED --VERSION--> NEGOTIATED
 *   CONNECTED | NEGOTIATED --EOF, broken framing, overflow--> DROPPING
 *   CONNECTED | NEGOTIATED | DROPPING --cleanup done--> NONE
 */
enum conn_state { CONN_NONE, CONN_CONNECTED, CONN_NEGOTIATED, CONN_DROPPING, CONN_STATES };

static const char *const conn_state_names[CONN_STATES] = { "none", "connected", "negotiated", "dropping" };

static const bool conn_legal[CONN_STATES][CONN_STATES] = {
	[CONN_NONE] = { [CONN_CONNECTED] = true },
	[CONN_CONNECTED] = { [CONN_NEGOTIATED] = true, [CONN_DROPPING] = true, [CONN_NONE] = true },
	[CONN_NEGOTIATED] = { [CONN_DROPPING] = true, [CONN_NONE] = true },
	[CONN_DROPPING] = { [CONN_NONE] = true },
};

struct vfu_server {
	char *path;
	struct vuser_tran *tran;
	const struct vfu_device_ops *ops;
	void *opaque;

	enum conn_state state;
	pid_t peer_pid;
	bool posted; /* the message being processed is a posted write (vfu_server_write_posted) */

	/* Reply buffer (header + payload), handed to the transport whole. */
	uint8_t *tx;
	size_t tx_cap;

	struct vuser_dma *dma;
	struct vuser_irqs *irqs;

	struct vfu_stats stats;
};

/* ---------------------------------------------------------------- utils */

static bool conn_to(struct vfu_server *s, enum conn_state to)
{
	if (!conn_legal[s->state][to]) {
		log_error("vfio-user %s: illegal connection transition %s -> %s (ignored)", s->path,
			  conn_state_names[s->state], conn_state_names[to]);
		return false;
	}
	s->state = to;
	return true;
}

static bool negotiated(const struct vfu_server *s)
{
	return s->state == CONN_NEGOTIATED;
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
	r = s->tran->ops->send(s->tran, s->tx, h.size);
	if (r < 0) {
		if (r == -ENOBUFS)
			s->stats.overflows++;
		log_warn("vfio-user %s: cannot send a reply (%s); dropping the client", s->path,
			 r == -ENOBUFS ? "it does not read its replies: output queue full" : strerror(-r));
		if (s->state != CONN_DROPPING)
			conn_to(s, CONN_DROPPING);
	}
}

static int device_result(int r)
{
	return r > 0 ? -EIO : r;
}

/* ------------------------------------------------------------------ DMA */

static void tell_unmap(void *opaque, uint64_t gpa, uint64_t len)
{
	struct vfu_server *s = opaque;

	s->ops->dma_unmap(s->opaque, gpa, len);
}

static int handle_dma_map(struct vfu_server *s, const struct vuser_msg *m)
{
	struct vfu_dma_map dm;
	void *va = NULL;
	bool writable;
	int r;

	if (m->len < sizeof(dm))
		return -EINVAL;
	memcpy(&dm, m->body, sizeof(dm));
	if (dm.argsz < sizeof(dm))
		return -EINVAL;
	if (dm.flags & ~(VFU_DMA_MAP_FLAG_READ | VFU_DMA_MAP_FLAG_WRITE))
		return -EINVAL;
	/* Like Linux VFIO: a window the device cannot even read is useless. */
	if (!(dm.flags & VFU_DMA_MAP_FLAG_READ))
		return -EINVAL;
	if (dm.size == 0 || dm.addr + dm.size < dm.addr || ((dm.addr | dm.size) & (VFU_DMA_PGSIZE - 1)))
		return -EINVAL;
	if (m->nfds > 1)
		return -EINVAL;
	writable = dm.flags & VFU_DMA_MAP_FLAG_WRITE;
	r = vuser_dma_add(s->dma, dm.addr, dm.size, m->nfds == 1 ? m->fds[0] : -1, dm.offset, writable, &va);
	if (r < 0)
		return r;
	if (s->ops->dma_map) {
		r = s->ops->dma_map(s->opaque, dm.addr, dm.size, va, writable);
		if (r < 0) {
			vuser_dma_drop(s->dma, dm.addr);
			return r;
		}
	}
	s->stats.dma_maps++;
	log_debug("vfio-user: DMA_MAP 0x%llx+0x%llx %s%s", (unsigned long long)dm.addr,
		  (unsigned long long)dm.size, writable ? "rw" : "ro", va ? "" : " (no fd: unreachable)");
	/* the mapping keeps the memory; the fd itself is not needed */
	return 0;
}

static int handle_dma_unmap(struct vfu_server *s, const struct vuser_msg *m, uint32_t *reply_len)
{
	struct vfu_dma_unmap u;
	uint64_t last;

	if (m->len < sizeof(u))
		return -EINVAL;
	memcpy(&u, m->body, sizeof(u));
	if (u.argsz < sizeof(u))
		return -EINVAL;
	if (u.flags & VFU_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP)
		return -ENOTSUP;
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
		if (vuser_dma_cuts(s->dma, u.addr, last))
			return -EINVAL;
	}
	/* The device lets go first, while the memory is still there. */
	if (s->ops->dma_unmap)
		vuser_dma_for_each(s->dma, u.addr, last, tell_unmap, s);
	s->stats.dma_unmaps += vuser_dma_remove(s->dma, u.addr, last);
	/* The reply carries the request's entry back. */
	memcpy(s->tx + HDR_SIZE, m->body, sizeof(u));
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
static void release_client_state(struct vfu_server *s, bool was_negotiated)
{
	if (was_negotiated && s->ops->client_gone)
		s->ops->client_gone(s->opaque);
	if (s->ops->dma_unmap)
		vuser_dma_for_each(s->dma, 0, UINT64_MAX, tell_unmap, s);
	vuser_dma_remove(s->dma, 0, UINT64_MAX);
}

/* ----------------------------------------------------------------- IRQs */

static unsigned device_irq_count(struct vfu_server *s, unsigned index)
{
	unsigned n = s->ops->irq_count ? s->ops->irq_count(s->opaque, index) : 0;

	return n > VFU_MAX_VECTORS ? VFU_MAX_VECTORS : n;
}

static int handle_set_irqs(struct vfu_server *s, const struct vuser_msg *m)
{
	struct vfu_irq_set is;
	uint32_t nbools;
	bool changed = false;
	int r;

	if (m->len < sizeof(is))
		return -EINVAL;
	memcpy(&is, m->body, sizeof(is));
	if (is.argsz < sizeof(is) || is.index >= VFU_PCI_NUM_IRQS)
		return -EINVAL;
	nbools = m->len - (uint32_t)sizeof(is);
	if (is.argsz - sizeof(is) < nbools)
		nbools = is.argsz - (uint32_t)sizeof(is);
	r = vuser_irqs_set(s->irqs, &is, m->body + sizeof(is), nbools, m->fds, m->nfds,
			   device_irq_count(s, is.index), &changed);
	if (r == 0 && changed && s->ops->irqs_changed)
		s->ops->irqs_changed(s->opaque, is.index);
	return r;
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

	if (negotiated(s))
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

	conn_to(s, CONN_NEGOTIATED);
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

/* One complete message: act on it and queue its reply. */
static void dispatch(struct vfu_server *s, const struct vuser_msg *m)
{
	const struct vfu_hdr *h = &m->hdr;
	const uint8_t *p = m->body;
	uint32_t len = m->len;
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
	} else if (m->fds_lost || (m->nfds > 0 && !takes_fds)) {
		r = -EINVAL;
	} else if (!negotiated(s) && h->command != VFU_CMD_VERSION) {
		r = -EINVAL;
	} else {
		switch (h->command) {
		case VFU_CMD_VERSION:
			r = handle_version(s, p, len, &reply_len);
			break;
		case VFU_CMD_DMA_MAP:
			r = handle_dma_map(s, m);
			break;
		case VFU_CMD_DMA_UNMAP:
			r = handle_dma_unmap(s, m, &reply_len);
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
			r = handle_set_irqs(s, m);
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
	if (!(h->flags & VFU_FLAG_NO_REPLY) && s->state != CONN_NONE)
		send_msg(s, h, reply_len, r < 0 ? -r : 0);
}

bool vfu_server_write_posted(const struct vfu_server *s)
{
	return s->posted;
}

/* ------------------------------------------------------------ lifecycle */

void vfu_server_disconnect(struct vfu_server *s)
{
	bool was_negotiated;

	if (!s || s->state == CONN_NONE)
		return;
	was_negotiated = negotiated(s);
	if (s->state != CONN_DROPPING)
		conn_to(s, CONN_DROPPING);
	release_client_state(s, was_negotiated);
	vuser_irqs_clear(s->irqs);
	s->tran->ops->close_client(s->tran);
	s->peer_pid = 0;
	conn_to(s, CONN_NONE);
	s->stats.connected = false;
	log_info("vfio-user %s: client disconnected", s->path);
}

short vfu_server_poll_events(const struct vfu_server *s)
{
	size_t queued;

	if (s->state == CONN_NONE)
		return 0;
	queued = s->tran->ops->queued(s->tran);
	/* A full queue: read nothing more until the client takes its replies. */
	return (short)((queued < VUSER_TXQ_PAUSE ? POLLIN : 0) | (queued ? POLLOUT : 0));
}

int vfu_server_handle(struct vfu_server *s)
{
	const struct vuser_tran_ops *t = s->tran->ops;
	int r;

	if (s->state == CONN_NONE)
		return -ENOTCONN;
	/* What the client has room for now. */
	r = t->flush(s->tran);
	if (r < 0) {
		log_info("vfio-user %s: sending to the client: %s", s->path, strerror(-r));
		goto gone;
	}
	for (int batch = 0; batch < VFU_BATCH && t->queued(s->tran) < VUSER_TXQ_PAUSE; batch++) {
		struct vuser_msg m;

		switch (t->recv(s->tran, &m)) {
		case VUSER_RX_MSG:
			break;
		case VUSER_RX_AGAIN:
			return 0;
		case VUSER_RX_EOF:
			goto gone;
		case VUSER_RX_TOO_BIG:
			if ((m.hdr.flags & VFU_FLAG_TYPE_MASK) == VFU_FLAG_TYPE_REQUEST &&
			    ensure_cap(&s->tx, &s->tx_cap, HDR_SIZE) == 0)
				send_msg(s, &m.hdr, 0, E2BIG);
			t->flush(s->tran);
			goto broken;
		case VUSER_RX_BROKEN:
		default:
			goto broken;
		}
		dispatch(s, &m);
		t->msg_done(s->tran);
		if (s->state == CONN_NONE)
			return -ECONNRESET; /* a callback disconnected it */
		if (s->state == CONN_DROPPING)
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
	struct vuser_accept a;
	int r = s->tran->ops->accept(s->tran, &a);

	if (r < 0)
		return r;
	if (a.stranger) {
		log_warn("vfio-user %s: refusing a connection from uid %d (pid %d): only uid %u or root may "
			 "connect", s->path, (int)a.uid, (int)a.pid, (unsigned)geteuid());
		s->stats.refused++;
		s->stats.refused_peers++;
		return 0;
	}
	if (a.busy) {
		log_warn("vfio-user %s: refusing a second client while one is attached", s->path);
		s->stats.refused++;
		return 0;
	}
	if (a.fd <= 0)
		return 0;
	conn_to(s, CONN_CONNECTED);
	s->peer_pid = a.pid;
	s->stats.clients++;
	s->stats.connected = true;
	log_info("vfio-user %s: client connected (pid %d)", s->path, (int)a.pid);
	return a.fd;
}

struct vfu_server *vfu_server_create_on(struct vuser_tran *tran, const char *name, const struct vfu_device_ops *ops,
					void *opaque, char *err, size_t errlen)
{
	struct vfu_server *s;

	if (!tran || !name || !ops || !ops->region_info || !ops->region_read || !ops->region_write) {
		vfa_set_err(err, errlen, "vfio-user server: a transport, a name and region callbacks are required");
		if (tran)
			tran->ops->destroy(tran);
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s || !(s->path = strdup(name)) || !(s->dma = vuser_dma_create(VFU_MAX_DMA_MAPS)) ||
	    !(s->irqs = vuser_irqs_create())) {
		vfa_set_err(err, errlen, "out of memory");
		if (s) {
			vuser_irqs_destroy(s->irqs);
			vuser_dma_destroy(s->dma);
			free(s->path);
			free(s);
		}
		tran->ops->destroy(tran);
		return NULL;
	}
	s->ops = ops;
	s->opaque = opaque;
	s->tran = tran;
	return s;
}

struct vfu_server *vfu_server_create(const char *socket_path, const struct vfu_device_ops *ops,
				     void *opaque, char *err, size_t errlen)
{
	struct vuser_tran *t;

	if (!socket_path || !ops || !ops->region_info || !ops->region_read || !ops->region_write) {
		vfa_set_err(err, errlen, "vfio-user server: socket path and region callbacks are required");
		return NULL;
	}
	t = vuser_tran_sock_listen(socket_path, err, errlen);
	if (!t)
		return NULL;
	return vfu_server_create_on(t, socket_path, ops, opaque, err, errlen);
}

void vfu_server_destroy(struct vfu_server *s)
{
	if (!s)
		return;
	vfu_server_disconnect(s);
	s->tran->ops->unlink(s->tran);
	s->tran->ops->destroy(s->tran);
	vuser_dma_destroy(s->dma);
	vuser_irqs_destroy(s->irqs);
	free(s->tx);
	free(s->path);
	free(s);
}

/* -------------------------------------------------------------- queries */

int vfu_server_listen_fd(const struct vfu_server *s)
{
	return s->tran->ops->listen_fd(s->tran);
}

int vfu_server_client_fd(const struct vfu_server *s)
{
	return s->tran->ops->client_fd(s->tran);
}

pid_t vfu_server_peer_pid(const struct vfu_server *s)
{
	return s->state == CONN_NONE ? 0 : s->peer_pid;
}

bool vfu_server_negotiated(const struct vfu_server *s)
{
	return negotiated(s);
}

struct guest_mem *vfu_server_guest_mem(struct vfu_server *s)
{
	return vuser_dma_guest_mem(s->dma);
}

bool vfu_server_irq_assigned(const struct vfu_server *s, unsigned index, unsigned vector)
{
	return vuser_irq_assigned(s->irqs, index, vector);
}

bool vfu_server_irq_enabled(const struct vfu_server *s, unsigned index, unsigned vector)
{
	return vuser_irq_enabled(s->irqs, index, vector);
}

int vfu_server_irq_trigger(struct vfu_server *s, unsigned index, unsigned vector)
{
	return vuser_irq_trigger(s->irqs, index, vector);
}

void vfu_server_stats(const struct vfu_server *s, struct vfu_stats *out)
{
	*out = s->stats;
	vuser_irqs_counts(s->irqs, &out->irqs_triggered, &out->irqs_latched);
	out->queued_bytes = s->state == CONN_NONE ? 0 : s->tran->ops->queued(s->tran);
}

const char *vfu_server_socket_path(const struct vfu_server *s)
{
	return s->path;
}
