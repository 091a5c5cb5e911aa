#!/bin/bash
# Provision what real guests need, from Debian's packages only, into a cache
# that never touches this (bookworm) system except for the 6.1 headers:
#
#   $VFA_CACHE/trixie/              trixie root: QEMU 11.1 (x86 + arm), fio,
#                                   busybox-static; with --headers also gcc,
#                                   make and the 6.12 / 7.3 amd64 headers;
#                                   with --arm64 --headers the arm64 cross kit
#   $VFA_CACHE/kernels/<release>/   vmlinuz + lib/modules/<release>/
#
# Usage: provision.sh [--arm64] [--headers]   provision (idempotent), then
#                                             print KEY=VALUE lines for eval
#        provision.sh env                     only print them
#
# Paths printed: QEMU_X86 / QEMU_ARM and HEADERS_6_12 / HEADERS_7_3 /
# HEADERS_6_12_ARM64 are paths INSIDE $QEMU_ROOT (run them with
# provision/in-root.sh); HEADERS_6_1 is a host path; the rest are host paths.
set -euo pipefail

VFA_CACHE=${VFA_CACHE:-/var/cache/vfio-apple}
ROOT=$VFA_CACHE/trixie
KERNELS=$VFA_CACHE/kernels
LOG=$VFA_CACHE/provision.log
HERE=$(cd "$(dirname "$0")" && pwd)

die() {
	echo "provision: $*" >&2
	exit 1
}

want_arm64=0
want_headers=0
env_only=0
for arg in "$@"; do
	case $arg in
	--arm64) want_arm64=1 ;;
	--headers) want_headers=1 ;;
	env) env_only=1 ;;
	-h | --help)
		sed -n '2,19p' "$0"
		exit 0
		;;
	*) die "unknown argument '$arg' (usage: provision.sh [--arm64] [--headers] | env)" ;;
	esac
done

# The KEY=VALUE lines, from what the cache holds now.
print_env() {
	echo "VFA_CACHE=$VFA_CACHE"
	echo "QEMU_ROOT=$ROOT"
	[ -x "$ROOT/usr/bin/qemu-system-x86_64" ] && echo "QEMU_X86=/usr/bin/qemu-system-x86_64"
	[ -x "$ROOT/usr/bin/qemu-system-aarch64" ] && echo "QEMU_ARM=/usr/bin/qemu-system-aarch64"
	local tag krel
	for tag in 6_1 6_12 7_3 6_12_ARM64; do
		[ -f "$VFA_CACHE/krel-$tag" ] || continue
		krel=$(cat "$VFA_CACHE/krel-$tag")
		echo "KREL_$tag=$krel"
		if [ -f "$KERNELS/$krel/vmlinuz" ]; then
			echo "KERNEL_$tag=$KERNELS/$krel/vmlinuz"
			echo "MODULES_$tag=$KERNELS/$krel/lib/modules/$krel"
		fi
		case $tag in
		6_1) [ -d "/usr/src/linux-headers-$krel" ] && echo "HEADERS_$tag=/usr/src/linux-headers-$krel" ;;
		*) [ -d "$ROOT/usr/src/linux-headers-$krel" ] && echo "HEADERS_$tag=/usr/src/linux-headers-$krel" ;;
		esac
	done
	return 0
}

if [ "$env_only" = 1 ]; then
	[ -f "$ROOT/.vfa-root-ok" ] || die "nothing provisioned under $VFA_CACHE yet; run provision/provision.sh first"
	print_env
	exit 0
fi

[ "$(id -u)" = 0 ] || die "provisioning needs root (debootstrap, chroot, apt)"
for tool in debootstrap chroot unshare apt-get dpkg depmod flock; do
	command -v "$tool" >/dev/null || die "missing '$tool' on the host; run scripts/install-deps.sh"
done

mkdir -p "$VFA_CACHE" "$KERNELS"
# One provisioning at a time: helpers and CI may call this concurrently.
exec 9>"$VFA_CACHE/.lock"
flock -w 3600 9 || die "another provision.sh holds $VFA_CACHE/.lock for over an hour"

t_start=$SECONDS
step() { echo "provision: $* ..." >&2; }
done_step() { echo "provision:   done ($((SECONDS - t_start)) s so far)" >&2; }

# Run a command, its output into the log; on failure show the log's tail.
logged() {
	echo "+ $*" >>"$LOG"
	if ! "$@" >>"$LOG" 2>&1; then
		echo "provision: failed: $*; last lines of $LOG:" >&2
		tail -n 15 "$LOG" >&2
		exit 1
	fi
}

# A command inside the root, with /proc /sys /dev mounted in a private mount
# namespace: the mounts vanish with the process, nothing to clean up.
in_root() {
	"$HERE/in-root.sh" -- "$@"
}
apt_root() {
	# A provisioning killed mid-install leaves dpkg half done: finish it.
	[ "$1" = install ] && logged in_root env DEBIAN_FRONTEND=noninteractive dpkg --configure -a
	logged in_root env DEBIAN_FRONTEND=noninteractive apt-get -q -o Dpkg::Use-Pty=0 "$@"
}

# ---- 1. the trixie root --------------------------------------------------
if [ ! -f "$ROOT/.vfa-root-ok" ]; then
	step "debootstrap trixie (minbase) into $ROOT (about 1 min)"
	rm -rf "$ROOT"
	logged debootstrap --variant=minbase trixie "$ROOT"
	# The host's apt sources with the suites renamed: no host name is
	# written anywhere, the root uses whatever mirror the host uses.
	if [ -f /etc/apt/sources.list.d/debian.sources ]; then
		sed -E -e 's/\bbookworm-updates\b/trixie-backports/g' \
			-e 's/\bbookworm-security\b/trixie-security/g' \
			-e 's/\bbookworm\b/trixie/g' \
			/etc/apt/sources.list.d/debian.sources >"$ROOT/etc/apt/sources.list.d/debian.sources"
		rm -f "$ROOT/etc/apt/sources.list"
	elif [ -f /etc/apt/sources.list ]; then
		sed -E -e 's/\bbookworm-updates\b/trixie-backports/g' \
			-e 's/\bbookworm-security\b/trixie-security/g' \
			-e 's/\bbookworm\b/trixie/g' \
			/etc/apt/sources.list >"$ROOT/etc/apt/sources.list"
	else
		die "no apt sources on the host (/etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list)"
	fi
	grep -q trixie-backports "$ROOT"/etc/apt/sources.list* -r ||
		die "the host's apt sources have no bookworm-updates line to turn into trixie-backports"
	touch "$ROOT/.vfa-root-ok"
	done_step
fi

if [ ! -f "$ROOT/.vfa-qemu-ok" ]; then
	step "apt-get update + install QEMU 11.1 (x86 + arm, trixie-backports), fio, busybox-static, kmod (about 2 min)"
	apt_root update
	apt_root install -y --no-install-recommends -t trixie-backports \
		qemu-system-x86 qemu-system-arm
	apt_root install -y --no-install-recommends fio busybox-static kmod
	in_root /usr/bin/qemu-system-x86_64 -device help 2>/dev/null | grep -q vfio-user-pci ||
		die "the root's qemu-system-x86_64 has no vfio-user-pci device (need QEMU >= 10.1 from trixie-backports)"
	touch "$ROOT/.vfa-qemu-ok"
	done_step
fi

# Name of the kernel release behind a linux-image meta package in a suite of
# the root ("trixie" or "trixie-backports"): follows the meta's dependency.
root_krel() {
	local suite=$1 arch=$2 ver dep
	ver=$(in_root apt-cache madison "linux-image-$arch" | awk -v s="$suite/" '$0 ~ " "s {print $3; exit}')
	[ -n "$ver" ] || die "no linux-image-$arch in $suite"
	dep=$(in_root apt-cache show "linux-image-$arch=$ver" | sed -n 's/^Depends: //p' | head -n1 |
		tr ',' '\n' | sed -n 's/^ *linux-image-\([^ ]*\).*/\1/p' | head -n1)
	[ -n "$dep" ] || die "cannot tell the kernel release of linux-image-$arch $ver"
	# arm64 metas in a foreign arch listing carry ":arm64" nowhere; fine.
	echo "$dep"
}

# Unpack one kernel image .deb into $KERNELS/<release>, then depmod it.
unpack_kernel() {
	local krel=$1 dest=$KERNELS/$1 deb
	shift
	rm -rf "$dest.tmp"
	mkdir -p "$dest.tmp"
	for deb in "$@"; do
		logged dpkg -x "$deb" "$dest.tmp"
	done
	# trixie's kernels ship their modules under /usr/lib (merged /usr).
	if [ -d "$dest.tmp/usr/lib/modules/$krel" ]; then
		mkdir -p "$dest.tmp/lib/modules"
		mv "$dest.tmp/usr/lib/modules/$krel" "$dest.tmp/lib/modules/$krel"
	fi
	# The image is boot/vmlinuz-<release>, or (7.x) modules/<release>/vmlinuz.
	if [ -f "$dest.tmp/boot/vmlinuz-$krel" ]; then
		mv "$dest.tmp/boot/vmlinuz-$krel" "$dest.tmp/vmlinuz"
	elif [ -f "$dest.tmp/lib/modules/$krel/vmlinuz" ]; then
		mv "$dest.tmp/lib/modules/$krel/vmlinuz" "$dest.tmp/vmlinuz"
	else
		die "$* hold no vmlinuz for $krel"
	fi
	mv "$dest.tmp/boot/config-$krel" "$dest.tmp/config" 2>/dev/null || true
	rm -rf "$dest.tmp/boot" "$dest.tmp/usr"
	[ -d "$dest.tmp/lib/modules/$krel" ] || die "$* hold no lib/modules/$krel"
	logged depmod -b "$dest.tmp" "$krel"
	rm -rf "$dest"
	mv "$dest.tmp" "$dest"
}

# ---- 2. kernels ----------------------------------------------------------
fetch_root_kernel() { # tag suite arch
	local tag=$1 suite=$2 arch=$3 krel tmp deb
	krel=$(root_krel "$suite" "$arch")
	if [ -f "$KERNELS/$krel/vmlinuz" ] && [ "$(cat "$VFA_CACHE/krel-$tag" 2>/dev/null)" = "$krel" ]; then
		return 0
	fi
	step "kernel $krel ($suite, $arch): apt-get download + dpkg -x"
	tmp=$ROOT/tmp/vfa-kernel-$tag
	rm -rf "$tmp"
	mkdir -p "$tmp"
	# Newer kernels split the image into linux-binary-* and linux-modules-*
	# packages that the linux-image-* one depends on: fetch those too.
	local pkgs p suffix=""
	[ "$arch" = arm64 ] && suffix=":arm64"
	pkgs="linux-image-$krel$suffix"
	for p in $(in_root apt-cache show "linux-image-$krel$suffix" | sed -n 's/^Depends: //p' | head -n1 |
		tr ',|' '\n\n' | sed -n 's/^ *\(linux-\(binary\|modules\)-[^ ]*\).*/\1/p'); do
		pkgs="$pkgs $p$suffix"
	done
	logged in_root sh -c "cd /tmp/vfa-kernel-$tag && apt-get download -q $pkgs"
	unpack_kernel "$krel" "$tmp"/*.deb
	rm -rf "$tmp"
	echo "$krel" >"$VFA_CACHE/krel-$tag"
	done_step
}

# bookworm 6.1, from the host's own apt.
krel61=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: linux-image-\(.*\)$/\1/p' | head -n1)
[ -n "$krel61" ] || { logged apt-get update -q; krel61=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: linux-image-\(.*\)$/\1/p' | head -n1); }
[ -n "$krel61" ] || die "the host's apt knows no linux-image-amd64 (bookworm)"
if [ ! -f "$KERNELS/$krel61/vmlinuz" ] || [ "$(cat "$VFA_CACHE/krel-6_1" 2>/dev/null)" != "$krel61" ]; then
	step "kernel $krel61 (bookworm, amd64): apt-get download + dpkg -x"
	tmp=$(mktemp -d)
	(cd "$tmp" && logged apt-get download -q "linux-image-$krel61")
	unpack_kernel "$krel61" "$tmp"/*.deb
	rm -rf "$tmp"
	echo "$krel61" >"$VFA_CACHE/krel-6_1"
	done_step
fi
fetch_root_kernel 6_12 trixie amd64
fetch_root_kernel 7_3 trixie-backports amd64

# ---- 3. headers and compilers (--headers) ---------------------------------
if [ "$want_headers" = 1 ]; then
	if ! dpkg-query -W -f='${Status}' "linux-headers-$krel61" 2>/dev/null | grep -q "install ok installed"; then
		step "host: install linux-headers-$krel61 (bookworm; builds with the host's gcc-12)"
		# Stale package lists are the usual reason this fails: refresh once.
		env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			"linux-headers-$krel61" >>"$LOG" 2>&1 || {
			logged apt-get update -q
			logged env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "linux-headers-$krel61"
		}
		done_step
	fi
	k612=$(cat "$VFA_CACHE/krel-6_12")
	k73=$(cat "$VFA_CACHE/krel-7_3")
	if [ ! -d "$ROOT/usr/src/linux-headers-$k612" ] || [ ! -d "$ROOT/usr/src/linux-headers-$k73" ]; then
		step "root: install gcc, make, linux-headers-$k612 and linux-headers-$k73 (about 2 min)"
		# kbuild needs pahole, whose libdw1t64 must come from backports to
		# match the libelf that QEMU (backports) pulled in.
		apt_root install -y --no-install-recommends -t trixie-backports libdw1t64
		apt_root install -y --no-install-recommends gcc make libc6-dev "linux-headers-$k612"
		apt_root install -y --no-install-recommends -t trixie-backports "linux-headers-$k73"
		done_step
	fi
fi

# ---- 4. arm64 (--arm64) ----------------------------------------------------
if [ "$want_arm64" = 1 ]; then
	if ! in_root dpkg --print-foreign-architectures | grep -qx arm64; then
		step "root: add the arm64 architecture"
		logged in_root dpkg --add-architecture arm64
		apt_root update
		done_step
	fi
	fetch_root_kernel 6_12_ARM64 trixie arm64
	# arm64 guest userland for the initramfs: busybox-static and fio with
	# the arm64 builds of exactly the libraries the amd64 fio uses.
	userland=$VFA_CACHE/arm64-userland
	if [ ! -f "$userland/.vfa-ok" ]; then
		step "arm64 guest userland: busybox-static and fio with its libraries (:arm64 packages, dpkg -x)"
		pkgs="busybox-static:arm64 fio:arm64 libc6:arm64"
		libs=""
		for lib in $(in_root ldd /usr/bin/fio | awk '/=> \// {print $3}'); do
			sub=${lib#*/x86_64-linux-gnu/} # "libz.so.1" or "ceph/libceph-common.so.2"
			pkg=$(in_root dpkg -S "*x86_64-linux-gnu/$sub" 2>/dev/null | head -n1 | cut -d: -f1)
			[ -n "$pkg" ] || die "no package owns $lib in the root"
			case " $pkgs " in *" $pkg:arm64 "*) ;; *) pkgs="$pkgs $pkg:arm64" ;; esac
			libs="$libs /usr/lib/aarch64-linux-gnu/$sub"
		done
		logged in_root sh -c "rm -rf /tmp/vfa-arm64 && mkdir /tmp/vfa-arm64 && cd /tmp/vfa-arm64 && apt-get download -q $pkgs"
		rm -rf "$userland"
		mkdir -p "$userland"
		for deb in "$ROOT"/tmp/vfa-arm64/*.deb; do
			logged dpkg -x "$deb" "$userland"
		done
		rm -rf "$ROOT/tmp/vfa-arm64"
		# Merged /usr: the loader's canonical path /lib/ld-linux-aarch64.so.1.
		[ -e "$userland/lib" ] || ln -s usr/lib "$userland/lib"
		[ -x "$userland/bin/busybox" ] || [ -x "$userland/usr/bin/busybox" ] || die "no busybox in busybox-static:arm64"
		[ -x "$userland/bin/busybox" ] || { mkdir -p "$userland/bin" && ln -s ../usr/bin/busybox "$userland/bin/busybox"; }
		for lib in $libs; do
			[ -e "$userland$lib" ] || die "arm64 userland lacks $lib"
		done
		echo "$libs" | tr ' ' '\n' | sed '/^$/d' >"$userland/fio.libs"
		touch "$userland/.vfa-ok"
		done_step
	fi
	if [ "$want_headers" = 1 ]; then
		ka=$(cat "$VFA_CACHE/krel-6_12_ARM64")
		if [ ! -d "$ROOT/usr/src/linux-headers-$ka" ]; then
			step "root: arm64 cross kit (gcc-aarch64-linux-gnu, pahole, linux-headers-$ka)"
			# pahole needs libdw1t64 from backports to match QEMU's libelf.
			apt_root install -y --no-install-recommends -t trixie-backports libdw1t64
			apt_root install -y --no-install-recommends gcc-aarch64-linux-gnu make pahole
			common=${ka%-arm64}
			common="${common}-common"
			# Installing the arm64 headers through apt fails on their
			# dependency on the arm64 kbuild: unpack them instead.
			logged in_root sh -c "rm -rf /tmp/vfa-hdr && mkdir /tmp/vfa-hdr && cd /tmp/vfa-hdr &&
				apt-get download -q linux-headers-$ka:arm64 linux-headers-$common linux-kbuild-${ka%%-*}:amd64 &&
				for d in *.deb; do dpkg -x \$d /; done && rm -rf /tmp/vfa-hdr"
			[ -d "$ROOT/usr/src/linux-headers-$ka" ] || die "arm64 headers did not unpack to /usr/src/linux-headers-$ka"
			done_step
		fi
	fi
fi

echo "provision: ready in $((SECONDS - t_start)) s; cache $VFA_CACHE" >&2
print_env
