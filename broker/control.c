// SPDX-License-Identifier: MIT
/* The broker's control socket (control.h). */
#include "control.h"

#include "compat.h"
#include "log.h"
#include "unix_socket.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct conn {
	int fd;          /* -1: free slot */
	uint64_t serial; /* accept order: the oldest is evicted when all slots are busy */
	char in[CONTROL_REQUEST_MAX];
	size_t in_len;
	char *out;       /* the answer, being sent; NULL while reading the request */
	size_t out_len, out_off;
	bool watching;   /* "watch": out is a CONTROL_WATCH_BUF buffer, the connection stays */
};

struct control {
	char *path;
	int listen_fd;
	struct conn conn[CONTROL_MAX_CONNS];
	uint64_t serial;
	uint64_t refused_peers;
	control_status_fn status;
	control_command_fn command;
	control_event_fn current;
	void *opaque;
	uint64_t watchers_dropped;
};

static void conn_close(struct conn *k)
{
	if (k->fd >= 0)
		close(k->fd);
	free(k->out);
	*k = (struct conn){ .fd = -1 };
}

struct control *control_create(const char *path, control_status_fn status, void *opaque, char *err,
			       size_t errlen)
{
	struct control *c = calloc(1, sizeof(*c));

	if (!c || !(c->path = strdup(path))) {
		free(c);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	for (unsigned i = 0; i < CONTROL_MAX_CONNS; i++)
		c->conn[i].fd = -1;
	c->status = status;
	c->opaque = opaque;
	c->listen_fd = vfa_listen_unix(path, 8, err, errlen);
	if (c->listen_fd < 0) {
		free(c->path);
		free(c);
		return NULL;
	}
	return c;
}

void control_destroy(struct control *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < CONTROL_MAX_CONNS; i++)
		conn_close(&c->conn[i]);
	close(c->listen_fd);
	unlink(c->path);
	free(c->path);
	free(c);
}

void control_poll_slot(const struct control *c, unsigned slot, int *fd, short *events)
{
	const struct conn *k;

	if (slot == 0) {
		*fd = c->listen_fd;
		*events = POLLIN;
		return;
	}
	k = &c->conn[slot - 1];
	*fd = k->fd;
	/* A watcher with nothing to send still polls for input: its hang-up. */
	*events = k->out && k->out_off < k->out_len ? POLLOUT : POLLIN;
}

static void accept_one(struct control *c)
{
	int fd = vfa_accept(c->listen_fd, true);
	struct conn *slot = NULL;
	uid_t uid;
	pid_t pid;

	if (fd < 0)
		return;
	if (!vfa_socket_peer_allowed(fd, &uid, &pid)) {
		log_warn("control: refusing a connection from uid %d (pid %d): only uid %u or root may ask",
			 (int)uid, (int)pid, (unsigned)geteuid());
		c->refused_peers++;
		close(fd);
		return;
	}
	/* A free slot, else the oldest connection (a watcher only if all watch). */
	for (unsigned i = 0; i < CONTROL_MAX_CONNS; i++) {
		struct conn *k = &c->conn[i];

		if (k->fd < 0) {
			slot = k;
			break;
		}
		if (!slot || (slot->watching && !k->watching) ||
		    (slot->watching == k->watching && k->serial < slot->serial))
			slot = k;
	}
	if (slot->fd >= 0) {
		log_warn("control: too many status requests at once; dropping the oldest");
		conn_close(slot);
	}
	slot->fd = fd;
	slot->serial = ++c->serial;
}

/* Send what the socket takes; the connection closes once all is out. */
static void send_some(struct conn *k)
{
	while (k->out_off < k->out_len) {
		ssize_t n = send(k->fd, k->out + k->out_off, k->out_len - k->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			k->out_off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return; /* the rest when the peer reads: POLLOUT */
		conn_close(k); /* the peer is gone */
		return;
	}
	if (k->watching) {
		k->out_len = k->out_off = 0; /* all out: wait for the next event */
		return;
	}
	conn_close(k);
}

/* Queue one line for a watcher; a watcher that does not read is dropped. */
static bool watch_queue(struct control *c, struct conn *k, const char *event)
{
	size_t len = strlen(event);

	if (k->out_off) {
		memmove(k->out, k->out + k->out_off, k->out_len - k->out_off);
		k->out_len -= k->out_off;
		k->out_off = 0;
	}
	if (len + 1 > CONTROL_WATCH_BUF - k->out_len) {
		log_warn("control: a watcher left %zu bytes of events unread: dropped", k->out_len);
		c->watchers_dropped++;
		conn_close(k);
		return false;
	}
	memcpy(k->out + k->out_len, event, len);
	k->out[k->out_len + len] = '\n';
	k->out_len += len + 1;
	return true;
}

static void start_watch(struct control *c, struct conn *k)
{
	char *now = c->current(c->opaque);

	k->out = malloc(CONTROL_WATCH_BUF);
	if (!now || !k->out) {
		free(now);
		conn_close(k);
		return;
	}
	k->watching = true;
	k->out_len = k->out_off = 0;
	if (watch_queue(c, k, now))
		send_some(k);
	free(now);
}

void control_broadcast(struct control *c, const char *event)
{
	for (unsigned i = 0; c && i < CONTROL_MAX_CONNS; i++) {
		struct conn *k = &c->conn[i];

		if (k->fd >= 0 && k->watching && watch_queue(c, k, event))
			send_some(k);
	}
}

unsigned control_watchers(const struct control *c)
{
	unsigned n = 0;

	for (unsigned i = 0; i < CONTROL_MAX_CONNS; i++)
		n += c->conn[i].fd >= 0 && c->conn[i].watching;
	return n;
}

uint64_t control_watchers_dropped(const struct control *c)
{
	return c->watchers_dropped;
}

void control_set_handlers(struct control *c, control_command_fn command, control_event_fn current)
{
	c->command = command;
	c->current = current;
}

static void answer(struct conn *k, char *text)
{
	size_t len = text ? strlen(text) : 0;

	k->out = text ? realloc(text, len + 2) : NULL;
	if (!k->out) {
		free(text);
		conn_close(k);
		return;
	}
	k->out[len] = '\n';
	k->out[len + 1] = '\0';
	k->out_len = len + 1;
	k->out_off = 0;
	send_some(k);
}

/* A watcher says nothing more; what it writes is discarded, its hang-up closes it. */
static void watcher_readable(struct conn *k)
{
	char scratch[64];
	ssize_t n = recv(k->fd, scratch, sizeof(scratch), MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0)
		conn_close(k);
}

static void readable(struct control *c, struct conn *k)
{
	ssize_t n;
	char *nl, *answer_text = NULL;

	if (k->watching) {
		watcher_readable(k);
		return;
	}
	n = recv(k->fd, k->in + k->in_len, sizeof(k->in) - 1 - k->in_len, MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_close(k);
		return;
	}
	k->in_len += (size_t)n;
	k->in[k->in_len] = '\0';
	nl = strchr(k->in, '\n');
	if (!nl) {
		if (k->in_len == sizeof(k->in) - 1)
			answer(k, strdup("{\"error\":\"request too long\"}"));
		return;
	}
	*nl = '\0';
	if (nl > k->in && nl[-1] == '\r')
		nl[-1] = '\0';
	if (strcmp(k->in, "status") == 0) {
		answer(k, c->status(c->opaque));
		return;
	}
	if (strcmp(k->in, "watch") == 0 && c->current) {
		start_watch(c, k);
		return;
	}
	if (c->command)
		answer_text = c->command(c->opaque, k->in);
	if (!answer_text)
		answer_text = strdup(c->command ? "{\"error\":\"unknown request; use status, watch, sim-vanish, "
						  "sim-replug or guest-addr BB:DD.F\"}"
						: "{\"error\":\"unknown request; the only one is status\"}");
	answer(k, answer_text);
}

void control_handle(struct control *c, unsigned slot, short revents)
{
	struct conn *k;

	if (slot == 0) {
		accept_one(c);
		return;
	}
	if (slot > CONTROL_MAX_CONNS)
		return;
	k = &c->conn[slot - 1];
	if (k->fd < 0)
		return;
	if (k->watching) {
		if (k->out_off < k->out_len && (revents & (POLLOUT | POLLERR | POLLHUP)))
			send_some(k);
		else if (revents & (POLLIN | POLLERR | POLLHUP))
			watcher_readable(k);
		return;
	}
	if (k->out) {
		if (revents & (POLLOUT | POLLERR | POLLHUP))
			send_some(k);
		return;
	}
	if (revents & (POLLIN | POLLERR | POLLHUP))
		readable(c, k);
}

uint64_t control_refused_peers(const struct control *c)
{
	return c->refused_peers;
}
