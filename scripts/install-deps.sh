#!/bin/sh
# Install, from Debian's packages, what building and testing vfio-apple needs
# on the host.  Guest-side material (QEMU 11.1, guest kernels, a trixie root)
# is provisioned by provision/provision.sh into $VFA_CACHE; only the 6.1
# kernel headers (bookworm, matching the host's gcc-12) go into this system.
set -eu

PKGS="gcc make meson ninja-build pkg-config libcmocka-dev libjson-c-dev
clang libclang-rt-14-dev valgrind cpio debootstrap busybox-static
kmod xz-utils zstd ca-certificates python3 groff-base util-linux device-tree-compiler"

missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "vfio-apple: missing Debian packages:$missing; run as root (or: apt-get install$missing)" >&2
	exit 1
fi
echo "vfio-apple: installing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
