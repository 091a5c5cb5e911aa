/* SPDX-License-Identifier: MIT */
/*
 * The broker's status document, the one JSON line the control socket
 * answers (broker/control.c) and `vfio-apple status` prints; its fields are
 * listed in docs/passthrough.md.
 */
#ifndef VFA_BROKER_STATUS_H
#define VFA_BROKER_STATUS_H

#include <stdint.h>
#include <time.h>

struct broker_config;
struct companion;
struct host_device;
struct passthrough;
struct vfu_server;

/* What the document is made of (the broker's pieces, read only). */
struct broker_status_src {
	const struct broker_config *cfg;
	struct host_device *hd;
	struct passthrough *pt;
	struct companion *comp;      /* NULL: no companion */
	struct vfu_server *pt_srv;
	struct vfu_server *comp_srv; /* NULL: no companion */
	struct timespec started;     /* CLOCK_MONOTONIC */
	uint64_t identity_register_failures;
	uint64_t posted_doorbells;
	uint64_t control_refused_peers;
	uint64_t control_watchers;         /* `watch` connections now */
	uint64_t control_watchers_dropped; /* watchers dropped for not reading their events */
	uint64_t companion_refused;  /* companion clients refused: not the passthrough client's process */
};

/* A malloc'ed JSON object (no newline), or NULL. */
char *broker_status_json(const struct broker_status_src *src);

/*
 * The `watch` event for hd's presence: {"event":"present"} or
 * {"event":"removed","reason":"..."}.  Malloc'ed, no newline, or NULL.
 */
char *broker_presence_event(const struct host_device *hd);
/* A command's answer: {"ok":true} or {"ok":false,"error":"..."}.  Malloc'ed, or NULL. */
char *broker_command_answer(const char *error);

#endif
