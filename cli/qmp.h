/* SPDX-License-Identifier: MIT */
/*
 * A small QMP client, and the in-process devices' counters read through it
 * (read-only QOM properties of vfio-apple-pci and of its apple-dma-pci
 * companion), shaped like the broker's status object so that the demo and
 * `status` read both the same way.
 */
#ifndef VFA_CLI_QMP_H
#define VFA_CLI_QMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct json_object;

struct qmp {
	int fd;
	int timeout_ms;  /* per exchange */
	size_t used;
	char buf[64 * 1024]; /* bytes received, not yet a whole line */
};

/* Connect, read the greeting, leave capabilities negotiation.  0 or -errno
 * with a one-line reason in err. */
int qmp_open(struct qmp *q, const char *path, int timeout_ms, char *err, size_t errlen);
void qmp_close(struct qmp *q);

/*
 * Execute a command (args may be NULL; it is taken over) and return its
 * "return" value (json_object_put it; a JSON null return comes back as a
 * fresh empty object), or NULL with QMP's error or the transport's in err.
 * Events arriving meanwhile are skipped.
 */
struct json_object *qmp_execute(struct qmp *q, const char *command, struct json_object *args, char *err,
				size_t errlen);

/* The counters of one vfio-apple-pci: QOM property -> status field. */
struct qmp_counter {
	const char *property; /* QOM name */
	const char *section;  /* status object section */
	const char *field;    /* status object field */
};
extern const struct qmp_counter qmp_device_counters[];
extern const size_t qmp_device_counter_count;
extern const struct qmp_counter qmp_companion_counters[];
extern const size_t qmp_companion_counter_count;

/*
 * Read the counters of the vfio-apple-pci at qom_path (NULL: the first one
 * found under /machine/peripheral, then /machine/peripheral-anon) and of its
 * companion (its companion-path property) into a status object:
 *   {"source":"qmp","qmp":SOCKET,"device_path":..,"companion_path":..,
 *    "run_state":"running"|"shutdown"|..,"host":..,
 *    "dma":{live_mappings,live_bytes,peak_mappings,peak_bytes,faults,register_failures},
 *    "interrupts":{"delivered"},"device":{"resets"},
 *    "companion":{doorbells,map_entries,unmap_entries,live_ids,live_bytes,inval,ioerr}}
 * A counter QEMU does not have is left out (the device's own are required:
 * NULL and why in err).  json_object_put the result.
 */
struct json_object *qmp_read_counters(struct qmp *q, const char *socket_path, const char *qom_path, char *err,
				      size_t errlen);

/* Connect, read the counters, disconnect (QEMU serves one QMP client at a time). */
struct json_object *qmp_query_counters(const char *socket_path, const char *qom_path, int timeout_ms, char *err,
				       size_t errlen);

/* Send "quit" (QEMU exits); 0 or -errno. */
int qmp_quit(const char *socket_path, int timeout_ms);

/* The human table of a qmp_read_counters() object. */
void qmp_status_print(FILE *out, struct json_object *status);

#endif
