// SPDX-License-Identifier: MIT
/*
 * QMP client (qmp.h): one JSON object per line each way.  QEMU greets with
 * {"QMP":{...}}, wants {"execute":"qmp_capabilities"} first, then answers
 * each command with {"return":...} or {"error":{"class","desc"}}, with
 * {"event":...} lines possibly in between.
 */
#include "qmp.h"

#include "clock.h"
#include "compat.h"
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <json-c/json.h>

const struct qmp_counter qmp_device_counters[] = {
	{ "dart-live-mappings", "dma", "live_mappings" },
	{ "dart-live-bytes", "dma", "live_bytes" },
	{ "dart-peak-mappings", "dma", "peak_mappings" },
	{ "dart-peak-bytes", "dma", "peak_bytes" },
	{ "dart-faults", "dma", "faults" },
	{ "dart-register-failures", "dma", "register_failures" },
	{ "irqs-delivered", "interrupts", "delivered" },
	{ "resets", "device", "resets" },
};
const size_t qmp_device_counter_count = sizeof(qmp_device_counters) / sizeof(qmp_device_counters[0]);

/* Read when the device has them (a later or earlier build may not). */
static const struct qmp_counter optional_counters[] = {
	{ "irqs-dropped", "interrupts", "dropped" },
	{ "vectors-enabled", "interrupts", "vectors_enabled" },
	{ "bar-reads", "device", "bar_reads" },
	{ "bar-writes", "device", "bar_writes" },
};

const struct qmp_counter qmp_companion_counters[] = {
	{ "doorbells", "companion", "doorbells" },
	{ "map-entries", "companion", "map_entries" },
	{ "unmap-entries", "companion", "unmap_entries" },
	{ "live-ids", "companion", "live_ids" },
	{ "live-bytes", "companion", "live_bytes" },
	{ "inval-batches", "companion", "inval" },
	{ "ioerr-batches", "companion", "ioerr" },
};
const size_t qmp_companion_counter_count = sizeof(qmp_companion_counters) / sizeof(qmp_companion_counters[0]);

void qmp_close(struct qmp *q)
{
	if (q->fd >= 0)
		close(q->fd);
	q->fd = -1;
	q->used = 0;
}

/* One whole line (a JSON message) parsed, or NULL: -errno in *ret. */
static struct json_object *read_message(struct qmp *q, int64_t deadline, int *ret)
{
	for (;;) {
		char *nl = memchr(q->buf, '\n', q->used);

		if (nl) {
			struct json_object *obj;
			size_t len = (size_t)(nl - q->buf);

			*nl = '\0';
			obj = json_tokener_parse(q->buf);
			q->used -= len + 1;
			memmove(q->buf, nl + 1, q->used);
			if (obj && json_object_is_type(obj, json_type_object))
				return obj;
			json_object_put(obj);
			*ret = -EPROTO;
			return NULL;
		}
		if (q->used == sizeof(q->buf)) {
			*ret = -EMSGSIZE;
			return NULL;
		}
		{
			int64_t left = deadline - vfa_now_ms();
			struct pollfd pfd = { .fd = q->fd, .events = POLLIN };
			ssize_t n;
			int pr;

			if (left <= 0) {
				*ret = -ETIMEDOUT;
				return NULL;
			}
			pr = poll(&pfd, 1, (int)left);
			if (pr < 0 && errno == EINTR)
				continue;
			if (pr <= 0) {
				*ret = pr == 0 ? -ETIMEDOUT : -errno;
				return NULL;
			}
			n = read(q->fd, q->buf + q->used, sizeof(q->buf) - q->used);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				*ret = n == 0 ? -ECONNRESET : -errno;
				return NULL;
			}
			q->used += (size_t)n;
		}
	}
}

static int send_all(int fd, const char *data, size_t len)
{
	while (len) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -errno;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

struct json_object *qmp_execute(struct qmp *q, const char *command, struct json_object *args, char *err,
				size_t errlen)
{
	struct json_object *msg = json_object_new_object();
	int64_t deadline = vfa_now_ms() + q->timeout_ms;
	const char *text;
	char *line;
	int ret;

	json_object_object_add(msg, "execute", json_object_new_string(command));
	if (args)
		json_object_object_add(msg, "arguments", args);
	text = json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN);
	line = malloc(strlen(text) + 2);
	if (!line) {
		json_object_put(msg);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	sprintf(line, "%s\n", text);
	json_object_put(msg);
	ret = send_all(q->fd, line, strlen(line));
	free(line);
	if (ret < 0) {
		snprintf(err, errlen, "QMP %s: cannot send: %s", command, strerror(-ret));
		return NULL;
	}
	for (;;) {
		struct json_object *reply = read_message(q, deadline, &ret), *value, *desc;

		if (!reply) {
			snprintf(err, errlen, "QMP %s: %s", command,
				 ret == -EPROTO ? "QEMU sent something that is not a JSON object" : strerror(-ret));
			return NULL;
		}
		if (json_object_object_get_ex(reply, "return", &value)) {
			value = value ? json_object_get(value) : json_object_new_object();
			json_object_put(reply);
			return value;
		}
		if (json_object_object_get_ex(reply, "error", &value)) {
			snprintf(err, errlen, "QMP %s: %s", command,
				 json_object_object_get_ex(value, "desc", &desc) ? json_object_get_string(desc)
										  : "error without a description");
			json_object_put(reply);
			return NULL;
		}
		json_object_put(reply); /* an event */
	}
}

int qmp_open(struct qmp *q, const char *path, int timeout_ms, char *err, size_t errlen)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct json_object *greeting, *value;
	int ret;

	q->fd = -1;
	q->used = 0;
	q->timeout_ms = timeout_ms;
	if (strlen(path) >= sizeof(addr.sun_path)) {
		snprintf(err, errlen, "QMP socket path %s is too long", path);
		return -ENAMETOOLONG;
	}
	memcpy(addr.sun_path, path, strlen(path) + 1);
	q->fd = vfa_socket_unix(false);
	if (q->fd < 0) {
		ret = q->fd;
		q->fd = -1;
		snprintf(err, errlen, "cannot create a socket: %s", strerror(-ret));
		return ret;
	}
	if (connect(q->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		ret = -errno;
		snprintf(err, errlen, "no QEMU answers on the QMP socket %s: %s (start QEMU with -qmp unix:%s,server=on,wait=off)",
			 path, strerror(errno), path);
		qmp_close(q);
		return ret;
	}
	greeting = read_message(q, vfa_now_ms() + timeout_ms, &ret);
	if (!greeting || !json_object_object_get_ex(greeting, "QMP", &value)) {
		snprintf(err, errlen, "%s did not greet like QMP: %s", path,
			 greeting ? "no \"QMP\" object" : ret == -ETIMEDOUT ? "no greeting in time (another client?)"
										: strerror(-ret));
		json_object_put(greeting);
		qmp_close(q);
		return greeting ? -EPROTO : ret;
	}
	json_object_put(greeting);
	value = qmp_execute(q, "qmp_capabilities", NULL, err, errlen);
	if (!value) {
		qmp_close(q);
		return -EPROTO;
	}
	json_object_put(value);
	return 0;
}

/* qom-get PATH PROPERTY: the value (json_object_put it) or NULL. */
static struct json_object *qom_get(struct qmp *q, const char *path, const char *property, char *err, size_t errlen)
{
	struct json_object *args = json_object_new_object();

	json_object_object_add(args, "path", json_object_new_string(path));
	json_object_object_add(args, "property", json_object_new_string(property));
	return qmp_execute(q, "qom-get", args, err, errlen);
}

/* The first child<vfio-apple-pci> under a container, into out. */
static bool find_device(struct qmp *q, const char *container, char *out, size_t len)
{
	char err[CLI_ERR_LEN];
	struct json_object *args = json_object_new_object(), *list;
	bool found = false;

	json_object_object_add(args, "path", json_object_new_string(container));
	list = qmp_execute(q, "qom-list", args, err, sizeof(err));
	if (!list)
		return false;
	if (json_object_is_type(list, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(list) && !found; i++) {
			struct json_object *item = json_object_array_get_idx(list, i), *name, *type;

			if (json_object_object_get_ex(item, "name", &name) &&
			    json_object_object_get_ex(item, "type", &type) &&
			    strcmp(json_object_get_string(type), "child<vfio-apple-pci>") == 0) {
				snprintf(out, len, "%s/%s", container, json_object_get_string(name));
				found = true;
			}
		}
	}
	json_object_put(list);
	return found;
}

static struct json_object *section(struct json_object *status, const char *name)
{
	struct json_object *sub;

	if (json_object_object_get_ex(status, name, &sub))
		return sub;
	sub = json_object_new_object();
	json_object_object_add(status, name, sub);
	return sub;
}

/* Read a table of counters from one QOM object; -1 on the first missing
 * one when required (err says which), else the number read. */
static int read_table(struct qmp *q, const char *path, const struct qmp_counter *table, size_t n, bool required,
		      struct json_object *status, char *err, size_t errlen)
{
	int count = 0;

	for (size_t i = 0; i < n; i++) {
		char why[CLI_ERR_LEN];
		struct json_object *value = qom_get(q, path, table[i].property, why, sizeof(why));

		if (!value || !json_object_is_type(value, json_type_int)) {
			if (required) {
				snprintf(err, errlen, "%s has no counter %s (%s): is it the project's vfio-apple-pci?",
					 path, table[i].property, value ? "not a number" : why);
				json_object_put(value);
				return -1;
			}
			json_object_put(value);
			continue;
		}
		json_object_object_add(section(status, table[i].section), table[i].field, value);
		count++;
	}
	return count;
}

struct json_object *qmp_read_counters(struct qmp *q, const char *socket_path, const char *qom_path, char *err,
				      size_t errlen)
{
	struct json_object *status, *value;
	char path[512], why[CLI_ERR_LEN];

	if (qom_path) {
		snprintf(path, sizeof(path), "%s", qom_path);
	} else if (!find_device(q, "/machine/peripheral", path, sizeof(path)) &&
		   !find_device(q, "/machine/peripheral-anon", path, sizeof(path))) {
		snprintf(err, errlen, "QEMU behind %s has no vfio-apple-pci device (looked in /machine/peripheral and "
			 "/machine/peripheral-anon)", socket_path);
		return NULL;
	}
	status = json_object_new_object();
	json_object_object_add(status, "source", json_object_new_string("qmp"));
	json_object_object_add(status, "qmp", json_object_new_string(socket_path));
	json_object_object_add(status, "device_path", json_object_new_string(path));
	value = qom_get(q, path, "host", why, sizeof(why));
	if (value && json_object_is_type(value, json_type_string))
		json_object_object_add(status, "host", json_object_get(value));
	json_object_put(value);
	if (read_table(q, path, qmp_device_counters, qmp_device_counter_count, true, status, err, errlen) < 0) {
		json_object_put(status);
		return NULL;
	}
	read_table(q, path, optional_counters, sizeof(optional_counters) / sizeof(optional_counters[0]), false, status,
		   err, errlen);
	/* false: the backend cannot count DART use and faults (the dext) */
	value = qom_get(q, path, "dma-stats-known", why, sizeof(why));
	if (value && json_object_is_type(value, json_type_boolean))
		json_object_object_add(section(status, "dma"), "stats_known", json_object_get(value));
	json_object_put(value);
	value = qom_get(q, path, "companion-path", why, sizeof(why));
	if (value && json_object_is_type(value, json_type_string) && json_object_get_string_len(value) > 0) {
		const char *companion = json_object_get_string(value);

		json_object_object_add(status, "companion_path", json_object_new_string(companion));
		if (read_table(q, companion, qmp_companion_counters, qmp_companion_counter_count, true, status, err,
			       errlen) < 0) {
			json_object_put(value);
			json_object_put(status);
			return NULL;
		}
	}
	json_object_put(value);
	value = qmp_execute(q, "query-status", NULL, why, sizeof(why));
	if (value) {
		struct json_object *state;

		if (json_object_object_get_ex(value, "status", &state))
			json_object_object_add(status, "run_state", json_object_get(state));
		json_object_put(value);
	}
	return status;
}

struct json_object *qmp_query_counters(const char *socket_path, const char *qom_path, int timeout_ms, char *err,
				       size_t errlen)
{
	struct qmp *q = malloc(sizeof(*q));
	struct json_object *status = NULL;

	if (!q) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (qmp_open(q, socket_path, timeout_ms, err, errlen) == 0) {
		status = qmp_read_counters(q, socket_path, qom_path, err, errlen);
		qmp_close(q);
	}
	free(q);
	return status;
}

int qmp_quit(const char *socket_path, int timeout_ms)
{
	struct qmp *q = malloc(sizeof(*q));
	char err[CLI_ERR_LEN];
	struct json_object *value;
	int ret;

	if (!q)
		return -ENOMEM;
	ret = qmp_open(q, socket_path, timeout_ms, err, sizeof(err));
	if (ret == 0) {
		value = qmp_execute(q, "quit", NULL, err, sizeof(err));
		ret = value ? 0 : -EPROTO;
		json_object_put(value);
		qmp_close(q);
	}
	free(q);
	return ret;
}

/* ---- the table ----------------------------------------------------------- */

static bool has(struct json_object *status, const char *sect, const char *name)
{
	uint64_t v;

	return status_get_u64(status, sect, name, &v);
}

static bool stats_unknown(struct json_object *status)
{
	struct json_object *dma, *known;

	return json_object_object_get_ex(status, "dma", &dma) && json_object_object_get_ex(dma, "stats_known", &known) &&
	       !json_object_get_boolean(known);
}

void qmp_status_print(FILE *out, struct json_object *status)
{
	char a[32], b[32], c[32], d[32];
	struct json_object *companion;
	bool has_companion = json_object_object_get_ex(status, "companion_path", &companion);

	fprintf(out, "source       QMP %s (in-process QEMU, no broker), guest %s\n", status_text(status, NULL, "qmp"),
		status_text(status, NULL, "run_state"));
	fprintf(out, "device       vfio-apple-pci %s, host %s\n", status_text(status, NULL, "device_path"),
		status_text(status, NULL, "host"));
	fprintf(out, "companion    %s\n",
		has_companion ? status_text(status, NULL, "companion_path") : "none (companion=off)");
	fputs("DMA (DART)\n", out);
	fprintf(out, "  live       %s mappings, %s\n", status_num(status, "dma", "live_mappings", a, sizeof(a)),
		status_bytes(status, "dma", "live_bytes", b, sizeof(b)));
	fprintf(out, "  peak       %s mappings, %s\n", status_num(status, "dma", "peak_mappings", a, sizeof(a)),
		status_bytes(status, "dma", "peak_bytes", b, sizeof(b)));
	fprintf(out, "  faults     %s (register failures %s)%s\n", status_num(status, "dma", "faults", a, sizeof(a)),
		status_num(status, "dma", "register_failures", b, sizeof(b)),
		stats_unknown(status) ? "; this backend does not report DART use or faults (the dext)" : "");
	if (has_companion) {
		fputs("companion\n", out);
		fprintf(out, "  doorbells  %s (map entries %s, unmap entries %s)\n",
			status_num(status, "companion", "doorbells", a, sizeof(a)),
			status_num(status, "companion", "map_entries", b, sizeof(b)),
			status_num(status, "companion", "unmap_entries", c, sizeof(c)));
		fprintf(out, "  live ids   %s (%s), invalid batches %s, I/O error batches %s\n",
			status_num(status, "companion", "live_ids", a, sizeof(a)),
			status_bytes(status, "companion", "live_bytes", b, sizeof(b)),
			status_num(status, "companion", "inval", c, sizeof(c)),
			status_num(status, "companion", "ioerr", d, sizeof(d)));
	}
	fputs("interrupts\n", out);
	fprintf(out, "  delivered  %s (dropped %s, vectors enabled %s)\n",
		status_num(status, "interrupts", "delivered", a, sizeof(a)),
		status_num(status, "interrupts", "dropped", b, sizeof(b)),
		status_num(status, "interrupts", "vectors_enabled", c, sizeof(c)));
	fprintf(out, "device       resets %s, BAR reads %s, BAR writes %s\n",
		status_num(status, "device", "resets", a, sizeof(a)), status_num(status, "device", "bar_reads", b, sizeof(b)),
		status_num(status, "device", "bar_writes", c, sizeof(c)));
	fputs("read         qom-get of", out);
	for (size_t i = 0; i < qmp_device_counter_count; i++)
		fprintf(out, " %s", qmp_device_counters[i].property);
	for (size_t i = 0; i < sizeof(optional_counters) / sizeof(optional_counters[0]); i++)
		if (has(status, optional_counters[i].section, optional_counters[i].field))
			fprintf(out, " %s", optional_counters[i].property);
	if (has_companion) {
		fputs("; companion", out);
		for (size_t i = 0; i < qmp_companion_counter_count; i++)
			fprintf(out, " %s", qmp_companion_counters[i].property);
	}
	fputc('\n', out);
}
