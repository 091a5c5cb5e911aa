// SPDX-License-Identifier: MIT
/* The broker's status document (status.h). */
#include "status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "broker.h"
#include "companion.h"
#include "host_device.h"
#include "memguard.h"
#include "passthrough.h"
#include "vfu_server.h"

#ifndef VFA_VERSION
#define VFA_VERSION "unknown"
#endif

static void add_u64(json_object *o, const char *key, uint64_t v)
{
	json_object_object_add(o, key, json_object_new_int64(v > INT64_MAX ? INT64_MAX : (int64_t)v));
}

static json_object *client_json(struct vfu_server *s, const char *path)
{
	json_object *o = json_object_new_object();
	struct vfu_stats st = { 0 };

	if (s)
		vfu_server_stats(s, &st);
	json_object_object_add(o, "socket", path ? json_object_new_string(path) : NULL);
	json_object_object_add(o, "connected", json_object_new_boolean(st.connected));
	add_u64(o, "clients", st.clients);
	add_u64(o, "messages", st.messages);
	add_u64(o, "errors", st.errors);
	add_u64(o, "dma_maps", st.dma_maps);
	add_u64(o, "refused", st.refused);
	add_u64(o, "refused_peers", st.refused_peers);
	add_u64(o, "dropped", st.dropped);
	add_u64(o, "overflows", st.overflows);
	add_u64(o, "queued_bytes", st.queued_bytes);
	return o;
}

/* The status document: one JSON object (fields in docs/passthrough.md). */
char *broker_status_json(const struct broker_status_src *b)
{
	struct hd_dma_stats dma = { 0 };
	struct companion_stats cs = { 0 };
	struct passthrough_stats ps = { 0 };
	const struct hd_identity *id = passthrough_identity(b->pt);
	struct timespec now;
	json_object *root = json_object_new_object(), *o;
	char text[32];
	char *out;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (b->hd->ops->dma_stats)
		b->hd->ops->dma_stats(b->hd, &dma);
	if (b->comp)
		companion_stats(b->comp, &cs);
	passthrough_stats(b->pt, &ps);

	json_object_object_add(root, "version", json_object_new_string(VFA_VERSION));
	add_u64(root, "pid", (uint64_t)getpid());
	add_u64(root, "uptime_s", (uint64_t)(now.tv_sec - b->started.tv_sec));
	json_object_object_add(root, "device", json_object_new_string(b->cfg->device_spec));
	/* Surprise removal: the function is gone (all-ones answers) until plugged back. */
	json_object_object_add(root, "present", json_object_new_boolean(host_device_present(b->hd)));
	json_object_object_add(root, "removal",
			       host_device_removal(b->hd) ? json_object_new_string(host_device_removal(b->hd)) : NULL);

	o = json_object_new_object();
	snprintf(text, sizeof(text), "%02x:%02x.%x", id->bus, id->device, id->function);
	json_object_object_add(o, "address", json_object_new_string(text));
	snprintf(text, sizeof(text), "%04x:%04x", id->vendor_id, id->device_id);
	json_object_object_add(o, "id", json_object_new_string(text));
	snprintf(text, sizeof(text), "0x%06x", id->class_code);
	json_object_object_add(o, "class", json_object_new_string(text));
	json_object_object_add(o, "identity_dma", json_object_new_boolean(b->hd->identity_dma));
	json_object_object_add(root, "host", o);

	o = json_object_new_object();
	json_object_object_add(o, "passthrough", client_json(b->pt_srv, b->cfg->passthrough_socket));
	json_object_object_add(o, "companion", client_json(b->comp_srv, b->cfg->companion_socket));
	json_object_object_add(root, "clients", o);

	o = json_object_new_object();
	add_u64(o, "live_mappings", dma.live_mappings);
	add_u64(o, "live_bytes", dma.live_bytes);
	add_u64(o, "peak_mappings", dma.peak_mappings);
	add_u64(o, "peak_bytes", dma.peak_bytes);
	add_u64(o, "max_mappings", b->hd->limits.max_mappings);
	add_u64(o, "max_bytes", b->hd->limits.max_bytes);
	add_u64(o, "granule", b->hd->limits.granule);
	add_u64(o, "faults", dma.faults);
	add_u64(o, "registers", dma.registers);
	add_u64(o, "unregisters", dma.unregisters);
	add_u64(o, "register_failures", dma.register_failures);
	add_u64(o, "identity_register_failures", b->identity_register_failures);
	add_u64(o, "memory_faults", vfa_memguard_faults());
	json_object_object_add(root, "dma", o);

	o = json_object_new_object();
	add_u64(o, "doorbells", cs.doorbells);
	add_u64(o, "map_entries", cs.map_entries);
	add_u64(o, "unmap_entries", cs.unmap_entries);
	add_u64(o, "inval", cs.inval);
	add_u64(o, "ioerr", cs.ioerr);
	add_u64(o, "failed_entries", cs.failed_entries);
	add_u64(o, "live_ids", cs.live_ids);
	add_u64(o, "live_bytes", cs.live_bytes);
	add_u64(o, "peak_ids", cs.peak_ids);
	add_u64(o, "peak_bytes", cs.peak_bytes);
	add_u64(o, "guest_features", cs.guest_features);
	add_u64(o, "posted_doorbells", b->posted_doorbells);
	add_u64(o, "refused_clients", b->companion_refused);
	add_u64(o, "removed_refused", cs.removed_refused);
	add_u64(o, "orphaned_ids", cs.orphaned_ids);
	add_u64(o, "resets", cs.resets);
	json_object_object_add(root, "companion", o);

	o = json_object_new_object();
	add_u64(o, "delivered", ps.irq_delivered);
	add_u64(o, "vectors_enabled", ps.vectors_enabled);
	add_u64(o, "host_vectors", ps.host_vectors);
	add_u64(o, "latched", ps.irq_latched);
	add_u64(o, "dropped", ps.irq_dropped);
	/* What the guest is offered: `run` cannot unplug an MSI-X function from QEMU <= 11.1. */
	json_object_object_add(o, "kind",
			       json_object_new_string(!b->pt ? "none" :
						      passthrough_irq_count(b->pt, PT_IRQ_MSIX) ? "msix" :
						      passthrough_irq_count(b->pt, PT_IRQ_MSI) ? "msi" : "none"));
	json_object_object_add(root, "interrupts", o);

	o = json_object_new_object();
	add_u64(o, "config_writes_forwarded", ps.config_writes_forwarded);
	add_u64(o, "config_bytes_dropped", ps.config_bytes_dropped);
	add_u64(o, "bar_reads", ps.bar_reads);
	add_u64(o, "bar_writes", ps.bar_writes);
	add_u64(o, "resets", ps.resets);
	add_u64(o, "msix_writes_dropped", ps.msix_writes_dropped);
	add_u64(o, "msix_reads_zeroed", ps.msix_reads_zeroed);
	add_u64(o, "removed_reads", ps.removed_reads);
	add_u64(o, "removed_writes", ps.removed_writes);
	json_object_object_add(root, "passthrough", o);

	o = json_object_new_object();
	add_u64(o, "refused_peers", b->control_refused_peers);
	add_u64(o, "watchers", b->control_watchers);
	add_u64(o, "watchers_dropped", b->control_watchers_dropped);
	json_object_object_add(root, "control", o);

	out = strdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
	json_object_put(root);
	return out;
}

static char *plain(json_object *root)
{
	char *out = root ? strdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN)) : NULL;

	json_object_put(root);
	return out;
}

char *broker_presence_event(const struct host_device *hd)
{
	json_object *root = json_object_new_object();
	const char *reason = host_device_removal(hd);

	json_object_object_add(root, "event", json_object_new_string(reason ? "removed" : "present"));
	if (reason)
		json_object_object_add(root, "reason", json_object_new_string(reason));
	return plain(root);
}

char *broker_command_answer(const char *error)
{
	json_object *root = json_object_new_object();

	json_object_object_add(root, "ok", json_object_new_boolean(!error));
	if (error)
		json_object_object_add(root, "error", json_object_new_string(error));
	return plain(root);
}
