// SPDX-License-Identifier: MIT
/* UNIX sockets: is a path free for a server, and the control-socket query. */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <json-c/json.h>

#include "clock.h"
#include "compat.h"
#include "unix_socket.h"

int cli_unix_connect(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	memcpy(addr.sun_path, path, strlen(path) + 1);
	fd = vfa_socket_unix(false);
	if (fd < 0)
		return fd;
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

int socket_path_prepare(const char *path, char *err, size_t errlen)
{
	/* The one rule of common/unix_socket.c, which the broker binds with. */
	return vfa_socket_path_free(path, err, errlen);
}

/* Wait for fd to become ready for events before the deadline; 0 or -errno. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - vfa_now_ms();
		struct pollfd pfd = { .fd = fd, .events = events };
		int n;

		if (left <= 0)
			return -ETIMEDOUT;
		n = poll(&pfd, 1, (int)left);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

#define CONTROL_REPLY_MAX (64 * 1024)

struct json_object *control_query(const char *path, int timeout_ms, char *err, size_t errlen)
{
	return control_request(path, "status\n", timeout_ms, err, errlen);
}

struct json_object *control_request(const char *path, const char *request, int timeout_ms, char *err, size_t errlen)
{
	int64_t deadline = vfa_now_ms() + timeout_ms;
	struct json_object *obj = NULL;
	char *reply = NULL;
	size_t used = 0;
	int fd;

	fd = cli_unix_connect(path);
	if (fd < 0) {
		if (fd == -ENAMETOOLONG)
			snprintf(err, errlen, "control socket path %s is too long", path);
		else if (fd == -ENOENT || fd == -ECONNREFUSED)
			snprintf(err, errlen,
				 "no broker is running at %s: start one with `vfio-apple serve` or `vfio-apple run` "
				 "(or pass the --socket-dir it uses)",
				 path);
		else
			snprintf(err, errlen, "cannot connect to the broker at %s: %s", path, strerror(-fd));
		return NULL;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	for (size_t sent = 0, len = strlen(request); sent < len;) {
		ssize_t n = send(fd, request + sent, len - sent, MSG_NOSIGNAL);

		if (n > 0) {
			sent += (size_t)n;
		} else if (n < 0 && errno == EAGAIN) {
			if (wait_fd(fd, POLLOUT, deadline) < 0)
				goto timeout;
		} else if (n < 0 && errno != EINTR) {
			snprintf(err, errlen, "broker at %s closed the connection: %s", path, strerror(errno));
			goto out;
		}
	}
	reply = malloc(CONTROL_REPLY_MAX + 1);
	if (!reply) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	/* One line; the broker closes after it. */
	while (!memchr(reply, '\n', used)) {
		ssize_t n;

		if (used == CONTROL_REPLY_MAX) {
			snprintf(err, errlen, "broker at %s sent more than %d bytes without a newline", path,
				 CONTROL_REPLY_MAX);
			goto out;
		}
		n = recv(fd, reply + used, CONTROL_REPLY_MAX - used, 0);
		if (n > 0) {
			used += (size_t)n;
		} else if (n == 0) {
			break;
		} else if (errno == EAGAIN) {
			if (wait_fd(fd, POLLIN, deadline) < 0)
				goto timeout;
		} else if (errno != EINTR) {
			snprintf(err, errlen, "reading from the broker at %s: %s", path, strerror(errno));
			goto out;
		}
	}
	reply[used] = '\0';
	if (used == 0) {
		snprintf(err, errlen, "broker at %s closed the connection without an answer", path);
		goto out;
	}
	{
		enum json_tokener_error jerr;

		obj = json_tokener_parse_verbose(reply, &jerr);
		if (!obj || !json_object_is_type(obj, json_type_object)) {
			snprintf(err, errlen, "broker at %s answered something that is not a JSON object (%s)", path,
				 obj ? "wrong type" : json_tokener_error_desc(jerr));
			json_object_put(obj);
			obj = NULL;
		}
	}
	goto out;
timeout:
	snprintf(err, errlen, "broker at %s did not answer within %d ms: is it stuck? (check its log)", path,
		 timeout_ms);
out:
	free(reply);
	close(fd);
	return obj;
}
