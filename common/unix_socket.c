// SPDX-License-Identifier: MIT
/* The broker's UNIX sockets: directory, binding, peers (unix_socket.h). */
#include "unix_socket.h"

#include "compat.h"
#include "errmsg.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int fail(char *err, size_t errlen, int e, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfa_vset_err(err, errlen, fmt, ap);
	va_end(ap);
	return -e;
}

int vfa_socket_dir_prepare(const char *dir, char *err, size_t errlen)
{
	char path[256];
	struct stat st;
	int fd, e;

	if (!dir || !*dir || snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path))
		return fail(err, errlen, ENAMETOOLONG, "socket directory %s is too long: choose a shorter one", dir ? dir : "");
	/* Parents as mkdir -p would (0755), the directory itself private. */
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST) {
			e = errno;
			*p = '/';
			return fail(err, errlen, e,
				    "cannot create socket directory %s: %s (run as root, or choose --socket-dir)",
				    dir, strerror(e));
		}
		*p = '/';
	}
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		e = errno;
		return fail(err, errlen, e, "cannot create socket directory %s: %s (run as root, or choose --socket-dir)",
			    dir, strerror(e));
	}
	/* Judge what is there now, through a descriptor: no symlink is followed. */
	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		e = errno;
		if (e == ELOOP || e == ENOTDIR || (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)))
			return fail(err, errlen, ENOTDIR,
				    "socket directory %s is a symlink or not a directory: remove it, or choose "
				    "another --socket-dir (another user may have planted it)",
				    dir);
		return fail(err, errlen, e, "cannot open socket directory %s: %s", dir, strerror(e));
	}
	e = fstat(fd, &st) < 0 ? errno : 0;
	/*
	 * Ours, and nobody else could ever write to it (e.g. made by `mkdir`
	 * under umask 022): nothing can have been planted, so make it private.
	 * Writable by others: refused below, whoever owns it.
	 */
	if (!e && S_ISDIR(st.st_mode) && st.st_uid == geteuid() && (st.st_mode & 077) &&
	    !(st.st_mode & 022) && fchmod(fd, 0700) == 0)
		st.st_mode &= ~(mode_t)077;
	close(fd);
	if (e)
		return fail(err, errlen, e, "cannot inspect socket directory %s: %s", dir, strerror(e));
	if (st.st_uid != geteuid()) {
		return fail(err, errlen, EPERM,
			    "socket directory %s is owned by uid %u, not by uid %u: remove it or choose another "
			    "--socket-dir (another user may have planted it)",
			    dir, (unsigned)st.st_uid, (unsigned)geteuid());
	}
	if (st.st_mode & 077) {
		return fail(err, errlen, EPERM,
			    "socket directory %s has mode %03o: it must be private to its owner (chmod 700 it, "
			    "or choose another --socket-dir)",
			    dir, (unsigned)(st.st_mode & 0777));
	}
	return 0;
}

static int address(const char *path, struct sockaddr_un *sa, char *err, size_t errlen)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (!path || strlen(path) >= sizeof(sa->sun_path)) {
		return fail(err, errlen, ENAMETOOLONG,
			    "socket path %s is too long (at most %zu bytes): choose a shorter one", path ? path : "",
			    sizeof(sa->sun_path) - 1);
	}
	memcpy(sa->sun_path, path, strlen(path) + 1);
	return 0;
}

int vfa_socket_path_free(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	struct stat st;
	int fd, rc, e;

	rc = address(path, &sa, err, errlen);
	if (rc < 0)
		return rc;
	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		e = errno;
		return fail(err, errlen, e, "cannot inspect socket path %s: %s", path, strerror(e));
	}
	if (!S_ISSOCK(st.st_mode))
		return fail(err, errlen, ENOTSOCK, "%s exists and is not a socket: remove it or choose another socket path",
			    path);
	fd = vfa_socket_unix(false);
	if (fd < 0)
		return fail(err, errlen, -fd, "socket(): %s", strerror(-fd));
	rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	e = errno;
	close(fd);
	if (rc == 0)
		return fail(err, errlen, EADDRINUSE,
			    "socket %s is in use by another process (a broker already running? `vfio-apple "
			    "status` shows it): stop it or use another --socket-dir",
			    path);
	if (e != ECONNREFUSED)
		return fail(err, errlen, e, "cannot check socket %s: %s", path, strerror(e));
	/* Nobody accepts: a dead server left it behind. */
	if (unlink(path) < 0 && errno != ENOENT) {
		e = errno;
		return fail(err, errlen, e, "cannot remove stale socket %s: %s", path, strerror(e));
	}
	return 0;
}

int vfa_listen_unix(const char *path, int backlog, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	mode_t old;
	int fd, rc, e;

	rc = address(path, &sa, err, errlen);
	if (rc < 0)
		return rc;
	rc = vfa_socket_path_free(path, err, errlen);
	if (rc < 0)
		return rc;
	fd = vfa_socket_unix(true);
	if (fd < 0)
		return fail(err, errlen, -fd, "socket(): %s", strerror(-fd));
	old = umask(077);
	rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	e = errno;
	umask(old);
	if (rc < 0) {
		close(fd);
		return fail(err, errlen, e, "cannot bind socket %s: %s", path, strerror(e));
	}
	/* Also when another thread changed the umask meanwhile. */
	if (chmod(path, 0600) < 0 || listen(fd, backlog) < 0) {
		e = errno;
		close(fd);
		unlink(path);
		return fail(err, errlen, e, "cannot listen on %s: %s", path, strerror(e));
	}
	return fd;
}

int vfa_socket_peer(int fd, uid_t *uid, pid_t *pid)
{
#if defined(SO_PEERCRED) && defined(__linux__)
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	*uid = cred.uid;
	*pid = cred.pid;
	return 0;
#else
	gid_t gid;

	if (getpeereid(fd, uid, &gid) < 0)
		return -errno;
	*pid = 0;
#ifdef LOCAL_PEERPID
	{
		socklen_t len = sizeof(*pid);

		if (getsockopt(fd, SOL_LOCAL, LOCAL_PEERPID, pid, &len) < 0)
			*pid = 0;
	}
#endif
	return 0;
#endif
}

bool vfa_socket_peer_allowed(int fd, uid_t *uid, pid_t *pid)
{
	*uid = (uid_t)-1;
	*pid = 0;
	if (vfa_socket_peer(fd, uid, pid) < 0) {
		*uid = (uid_t)-1;
		return false;
	}
	return *uid == geteuid() || *uid == 0;
}

int vfa_json_quote(const char *text, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (outlen < 3)
		return -ENAMETOOLONG;
	out[o++] = '"';
	for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
		char esc[6];
		size_t n = 0;

		if (*p == '"' || *p == '\\') {
			esc[n++] = '\\';
			esc[n++] = (char)*p;
		} else if (*p < 0x20 || *p == 0x7f) {
			memcpy(esc, "\\u00", 4);
			n = 4;
			esc[n++] = hex[*p >> 4];
			esc[n++] = hex[*p & 15];
		} else {
			esc[n++] = (char)*p;
		}
		/* room for this, the closing quote and the NUL */
		if (o + n + 2 > outlen)
			return -ENAMETOOLONG;
		memcpy(out + o, esc, n);
		o += n;
	}
	out[o++] = '"';
	out[o] = '\0';
	return 0;
}
