/* SPDX-License-Identifier: MIT */
/*
 * The broker's UNIX sockets, with one rule for each question: where they may
 * live, how one is bound, and who may connect.  Used by the vfio-user
 * servers (vfio-user/), the control socket (broker/) and the command's
 * pre-flight checks (cli/), so that all three agree.
 *
 * The threat (issue 11, item 1): the sockets carry guest RAM (DMA_MAP's
 * memfd).  Another local user must not be able to plant a socket in their
 * place, read them, or connect to them.
 */
#ifndef VFA_UNIX_SOCKET_H
#define VFA_UNIX_SOCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/*
 * Create dir if missing (its missing parents 0755, dir itself 0700), then
 * require: a real directory (not a symlink), owned by the effective uid,
 * no access for group or others.  A directory of ours that only we can
 * write (mkdir under umask 022: 0755) is made 0700, since nothing can have
 * been planted in it; one that others can write is refused, whoever owns
 * it.  0, or -errno with a sentence in err that names the fix (remove it,
 * chmod 700, or choose another directory).
 */
int vfa_socket_dir_prepare(const char *dir, char *err, size_t errlen);

/*
 * Make path free for a server socket.  The rule, the same everywhere:
 *   - nothing there: free;
 *   - a socket nobody accepts on (connect refused: its server died):
 *     stale, unlinked, free;
 *   - a socket someone accepts on: -EADDRINUSE ("in use by a running
 *     process");
 *   - anything else (a file, a directory, a symlink): -ENOTSOCK, never
 *     deleted.
 * 0 or -errno with a sentence in err.
 */
int vfa_socket_path_free(const char *path, char *err, size_t errlen);

/*
 * A listening, non-blocking, close-on-exec UNIX socket on path, after
 * vfa_socket_path_free().  It is bound under umask 077 (and chmod 0600
 * after), so only its owner can connect even in a shared directory.
 * fd, or -errno with a sentence in err.
 */
int vfa_listen_unix(const char *path, int backlog, char *err, size_t errlen);

/*
 * Who is at the other end of a connected UNIX socket: SO_PEERCRED on Linux,
 * getpeereid() (and LOCAL_PEERPID where it exists) elsewhere.  pid is 0
 * when the platform cannot say.  0 or -errno.
 */
int vfa_socket_peer(int fd, uid_t *uid, pid_t *pid);

/*
 * May this peer use the broker?  Only the broker's own effective uid or
 * root.  On false, *uid holds the peer's uid (or (uid_t)-1 when it could
 * not be read) for the log line.
 */
bool vfa_socket_peer_allowed(int fd, uid_t *uid, pid_t *pid);

/*
 * text as a JSON string literal, quotes included, for QEMU's JSON -device
 * arguments ({"socket":{"type":"unix","path":...}}): '"' and backslash are
 * escaped and control bytes become backslash-u00XX, so a socket path can
 * never end the string and add keys of its own.  0, or -ENAMETOOLONG if
 * out (outlen bytes, NUL included) is too small (never cut short).
 */
int vfa_json_quote(const char *text, char *out, size_t outlen);

#endif
