#!/bin/bash
# Run a command inside the provisioned trixie root (QEMU 11.1, compilers).
#
# Usage: in-root.sh [--bind DIR]... -- COMMAND [ARG]...
#
# /dev, /proc and /sys are mounted, and every --bind DIR appears at the same
# path inside the root (sockets, kernels, initramfs, module sources), so a
# path means the same thing on both sides.  The mounts live in a private
# mount namespace: they vanish when the command ends, whatever happens, and
# concurrent users of the root do not disturb each other.
set -euo pipefail

VFA_CACHE=${VFA_CACHE:-/var/cache/vfio-apple}
ROOT=$VFA_CACHE/trixie

die() {
	echo "in-root: $*" >&2
	exit 1
}

binds=()
while [ $# -gt 0 ]; do
	case $1 in
	--bind)
		[ $# -ge 2 ] || die "--bind needs a directory"
		[ -d "$2" ] || die "--bind $2: not a directory"
		binds+=("$(cd "$2" && pwd -P)")
		shift 2
		;;
	--) shift; break ;;
	*) break ;;
	esac
done
[ $# -gt 0 ] || die "usage: in-root.sh [--bind DIR]... -- COMMAND [ARG]..."
[ "$(id -u)" = 0 ] || die "needs root (mount namespaces and chroot)"
[ -f "$ROOT/.vfa-root-ok" ] || die "no trixie root at $ROOT; run provision/provision.sh first"

# The mount script gets the binds as arguments after the root; the command
# follows a "--" separator.
exec unshare --mount --propagation private -- /bin/bash -c '
	set -e
	root=$1; shift
	mount --rbind /dev "$root/dev"
	mount -t proc proc "$root/proc"
	mount --rbind /sys "$root/sys"
	while [ "$1" != "--" ]; do
		mkdir -p "$root$1"
		mount --bind "$1" "$root$1"
		shift
	done
	shift
	cp -f /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
	exec chroot "$root" "$@"
' in-root "$ROOT" "${binds[@]}" -- "$@"
