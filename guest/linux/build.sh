#!/bin/bash
# Build apple_dma.ko for one guest kernel, against the provisioned headers.
#
# Usage: guest/linux/build.sh KREL [arm64]
#   KREL: a kernel release (6.1.0-56-amd64, 6.12.107+deb13-arm64, ...) or a
#         short tag of provision/provision.sh: 6.1, 6.12, 7.3 (with arm64:
#         the arm64 6.12).
#   arm64: cross-build for arm64 (implied by a release ending in -arm64).
#
# 6.1 builds on the host with its gcc-12 (bookworm headers in /usr/src);
# every other kernel builds inside the trixie root of provision.sh, whose
# gcc matches those kernels.  The module lands in
# guest/linux/out/<release>/apple_dma.ko (or $OUT/<release>/); the last line
# printed is its path.  Warnings are errors (W=1, -Werror).
#
# MODULE_SRC=DIR MODULE_NAME=NAME build another module's Kbuild tree the same
# way (tests/e2e/refguest/build.sh: NAME.ko from DIR's *.c, *.h and Kbuild).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SRC=${MODULE_SRC:-$HERE}
NAME=${MODULE_NAME:-apple_dma}
VFA_CACHE=${VFA_CACHE:-/var/cache/vfio-apple}
ROOT=$VFA_CACHE/trixie

die() {
	echo "build.sh: $*" >&2
	exit 1
}

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: build.sh KREL [arm64]"
krel=$1
arch=${2:-}
[ -z "$arch" ] || [ "$arch" = arm64 ] || die "second argument must be 'arm64', not '$arch'"

# A short tag: ask provision.sh which release it is.
if [[ $krel =~ ^[0-9]+\.[0-9]+$ ]]; then
	tag=${krel//./_}
	[ "$arch" = arm64 ] && tag=${tag}_ARM64
	krel=$(VFA_CACHE=$VFA_CACHE "$REPO/provision/provision.sh" env | sed -n "s/^KREL_$tag=//p")
	[ -n "$krel" ] || die "provision.sh knows no kernel for tag $1${arch:+ $arch}; run provision/provision.sh --headers${arch:+ --arm64}"
fi
case $krel in *-arm64) arch=arm64 ;; esac

out=${OUT:-$HERE/out}/$krel
mkdir -p "$out"
out=$(cd "$out" && pwd -P)
# Kbuild writes next to the sources: build a private copy per release, so
# that builds for several kernels can run at once.
shopt -s nullglob
cp -f "$SRC"/*.c "$SRC"/*.h "$SRC/Kbuild" "$out/"
shopt -u nullglob

kmake=(make -s KCFLAGS=-Werror)
[ "$arch" = arm64 ] && kmake+=(ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-)
# W=1 adds warnings but also runs kernel-doc, which needs perl's Pod::Usage
# (perl-modules): use it where that is installed.
extra_warn() {
	if "$@" perl -MPod::Usage -e 1 2>/dev/null; then
		kmake+=(W=1)
	else
		echo "build.sh: no perl Pod::Usage here: building without W=1" >&2
	fi
}

if [ -d "$ROOT/usr/src/linux-headers-$krel" ]; then
	[ -x "$REPO/provision/in-root.sh" ] || die "provision/in-root.sh missing"
	echo "build.sh: building for $krel${arch:+ ($arch)} inside $ROOT" >&2
	extra_warn "$REPO/provision/in-root.sh" --
	"$REPO/provision/in-root.sh" --bind "$out" -- \
		"${kmake[@]}" -C "/usr/src/linux-headers-$krel" M="$out" modules
elif [ -d "/usr/src/linux-headers-$krel" ]; then
	[ "$arch" != arm64 ] || die "no arm64 headers for $krel in $ROOT; run provision/provision.sh --headers --arm64"
	echo "build.sh: building for $krel on the host" >&2
	extra_warn env
	"${kmake[@]}" -C "/usr/src/linux-headers-$krel" M="$out" modules
else
	die "no headers for $krel: neither $ROOT/usr/src/linux-headers-$krel nor /usr/src/linux-headers-$krel (run provision/provision.sh --headers${arch:+ --arm64})"
fi

[ -f "$out/$NAME.ko" ] || die "the build produced no $NAME.ko in $out"
echo "$out/$NAME.ko"
