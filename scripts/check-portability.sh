#!/bin/bash
# The code a Mac build compiles must build there.  Checked here, on Linux:
#  1. the core (common, hostdev, guestmem, backends, companion, passthrough)
#     builds with --werror WITHOUT _GNU_SOURCE (meson -Dcore_only=true, which
#     is also how a QEMU with the in-process devices builds it);
#  2. no object of it references a Linux-only call, except common/compat.c;
#  3. in common/compat.c those calls appear only inside `#ifdef __linux__`
#     branches (whose `#else` is the code a Mac runs);
#  4. the in-process QEMU devices (qemu/) name none of them and include
#     nothing of hw/vfio or linux/.
# The darwin backend's dext TEST MODEL (tests/darwin/model) is test code a
# Mac never builds, so its objects are left out of 2.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_CORE=${BUILD_CORE:-build-core}
LINUX_ONLY='eventfd eventfd_read eventfd_write memfd_create epoll_create epoll_create1
epoll_ctl epoll_wait epoll_pwait signalfd timerfd_create timerfd_settime inotify_init
inotify_init1 inotify_add_watch getrandom tdestroy accept4 pipe2 splice tee vmsplice
fallocate prctl gettid sendfile mremap sched_getaffinity'
fail=0

if [ ! -f "$BUILD_CORE/build.ninja" ]; then
	meson setup "$BUILD_CORE" -Dcore_only=true --werror >/dev/null
fi
ninja -C "$BUILD_CORE" >/dev/null
if grep -q -- '-D_GNU_SOURCE' "$BUILD_CORE/compile_commands.json"; then
	echo "portability: the core build defines _GNU_SOURCE" >&2
	fail=1
fi

# 2. Undefined symbols of every core object but compat.c's.
objects=$(find "$BUILD_CORE" -name '*.o' ! -path '*dext-model*' | sort)
[ -n "$objects" ] || { echo "portability: no objects in $BUILD_CORE" >&2; exit 1; }
checked=0
for obj in $objects; do
	case $obj in */compat.c.o) continue ;; esac
	checked=$((checked + 1))
	undef=$(nm -u --format=posix "$obj" | awk '{print $1}')
	for sym in $LINUX_ONLY; do
		if grep -qx "$sym" <<<"$undef"; then
			echo "portability: $obj calls $sym, which macOS does not have (use common/compat.h)" >&2
			fail=1
		fi
	done
done

# 3. compat.c: Linux-only names only inside #ifdef __linux__ (not its #else).
awk -v names="$LINUX_ONLY" '
BEGIN { n = split(names, list, /[ \n]+/) }
/^#[ \t]*if/ {
	depth++
	linux[depth] = ($0 ~ /^#[ \t]*ifdef[ \t]+__linux__/ || $0 ~ /^#[ \t]*if[ \t]+defined\(__linux__\)[ \t]*$/)
	next
}
/^#[ \t]*else/ { linux[depth] = 0; next }
/^#[ \t]*elif/ { linux[depth] = 0; next }
/^#[ \t]*endif/ { depth--; next }
{
	inside = 0
	for (d = 1; d <= depth; d++) if (linux[d]) inside = 1
	if (inside || $0 ~ /^[ \t]*(\/\*|\*)/) next
	for (i = 1; i <= n; i++) {
		if (list[i] != "" && match($0, "(^|[^A-Za-z0-9_])" list[i] "[ \t]*\\(")) {
			printf "portability: common/compat.c:%d calls %s outside #ifdef __linux__\n", NR, list[i] > "/dev/stderr"
			bad = 1
		}
	}
}
END { exit bad }' common/compat.c || fail=1

# 4. The QEMU devices: only QEMU's generic APIs and the core.
for f in qemu/*.c qemu/*.h; do
	if grep -nE '#include *[<"](hw/vfio|linux/|sys/eventfd|sys/epoll)' "$f" >&2; then
		echo "portability: $f includes a Linux-only or hw/vfio header" >&2
		fail=1
	fi
	for sym in $LINUX_ONLY; do
		if grep -qE "(^|[^A-Za-z0-9_])$sym[[:space:]]*\(" "$f"; then
			echo "portability: $f calls $sym" >&2
			fail=1
		fi
	done
done

if [ "$fail" -ne 0 ]; then
	echo "portability: FAIL"
	exit 1
fi
echo "portability: PASS (core built without _GNU_SOURCE; $checked objects and qemu/ free of Linux-only calls; compat.c keeps them in its Linux branch)"
