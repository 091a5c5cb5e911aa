#!/bin/bash
# Build a busybox initramfs (newc cpio, gzip) for an e2e guest.
#
# Usage: mkinitramfs.sh -o OUT.cpio.gz -m MODULES_DIR [options]
#   -m DIR          the kernel's lib/modules/<release> (from provision.sh)
#   --load MOD      a module to make loadable with its dependencies
#                   (repeatable; default: nvme)
#   --ko FILE       an extra module file (e.g. apple_dma.ko), loadable by
#                   its base name after the --load modules' dependencies
#   --fio           copy fio and its shared libraries (from the trixie root)
#   --script FILE   the workload: run by /init as /workload.sh (sh)
#   --arch A        amd64 (default) or arm64: picks the busybox and fio build
#
# Inside the guest /init mounts proc, sys, devtmpfs and debugfs, puts the
# helpers below on PATH, runs /workload.sh, prints "VFA-RESULT init=done
# rc=N" and powers off.  Helpers: `modload NAME` (insmod NAME and its
# dependencies in order, skipping loaded ones), `result key=value...` (one
# "VFA-RESULT key=value..." line on the console).
set -euo pipefail

VFA_CACHE=${VFA_CACHE:-/var/cache/vfio-apple}
ROOT=$VFA_CACHE/trixie

die() {
	echo "mkinitramfs: $*" >&2
	exit 1
}

out=""
moddir=""
loads=()
kos=()
with_fio=0
script=""
arch=amd64
while [ $# -gt 0 ]; do
	case $1 in
	-o) out=$2; shift 2 ;;
	-m) moddir=$2; shift 2 ;;
	--load) loads+=("$2"); shift 2 ;;
	--ko) kos+=("$2"); shift 2 ;;
	--fio) with_fio=1; shift ;;
	--script) script=$2; shift 2 ;;
	--arch) arch=$2; shift 2 ;;
	*) die "unknown argument '$1' (see the header of $0)" ;;
	esac
done
[ -n "$out" ] || die "-o OUT.cpio.gz is required"
[ -n "$moddir" ] && [ -d "$moddir" ] || die "-m MODULES_DIR (a kernel's lib/modules/<release>) is required and must exist"
[ ${#loads[@]} -gt 0 ] || loads=(nvme)
[ -z "$script" ] || [ -f "$script" ] || die "workload script $script not found"
command -v cpio >/dev/null || die "the host has no cpio; run scripts/install-deps.sh"
command -v modprobe >/dev/null || die "the host has no modprobe (kmod); run scripts/install-deps.sh"

moddir=$(cd "$moddir" && pwd -P)
krel=$(basename "$moddir")
modbase=$(dirname "$(dirname "$(dirname "$moddir")")") # DIR of DIR/lib/modules/<krel>

case $arch in
amd64)
	# busybox-static (scripts/install-deps.sh) on the host, else the root's.
	busybox=/bin/busybox
	[ -x "$busybox" ] || busybox=$ROOT/bin/busybox
	fio_root=$ROOT
	;;
arm64)
	busybox=$VFA_CACHE/arm64-userland/bin/busybox
	fio_root=$VFA_CACHE/arm64-userland
	;;
*) die "--arch must be amd64 or arm64" ;;
esac
[ -x "$busybox" ] || die "no static busybox for $arch at $busybox; run provision/provision.sh${arch/amd64/}${arch/arm64/ --arm64}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{bin,sbin,dev,proc,sys,tmp,etc,lib/modules,mnt,root,run}

cp "$busybox" "$work/bin/busybox"
# Applet links instead of --install: works whatever the host's arch.
for applet in sh ash cat echo ls mount umount mkdir mknod insmod rmmod lsmod sleep \
	poweroff reboot dd cmp md5sum sha256sum grep sed awk head tail tr wc cut sort uniq \
	find xargs seq printf test [ true false dmesg stat hexdump od sync timeout \
	blockdev readlink basename dirname ln cp mv rm chmod uname date expr tee devmem; do
	ln -sf busybox "$work/bin/$applet"
done

# Modules: each requested module and its dependencies, decompressed, with a
# load-order file per requested module (modprobe --show-depends on the host).
for mod in "${loads[@]}"; do
	deps=$(modprobe -d "$modbase" -S "$krel" --show-depends "$mod" 2>&1) ||
		die "module $mod not found for $krel under $modbase: $deps"
	: >"$work/lib/modules/$mod.order"
	while read -r kind path _; do
		[ "$kind" = insmod ] || continue
		name=$(basename "$path")
		name=${name%.xz}
		name=${name%.zst}
		name=${name%.gz}
		name=${name%.ko}
		case $path in
		*.ko.xz) xz -dc "$path" >"$work/lib/modules/$name.ko" ;;
		*.ko.zst) zstd -qdc "$path" >"$work/lib/modules/$name.ko" ;;
		*.ko.gz) gzip -dc "$path" >"$work/lib/modules/$name.ko" ;;
		*) cp "$path" "$work/lib/modules/$name.ko" ;;
		esac
		echo "$name" >>"$work/lib/modules/$mod.order"
	done <<<"$deps"
done
for ko in "${kos[@]}"; do
	[ -f "$ko" ] || die "module file $ko not found"
	name=$(basename "$ko" .ko)
	cp "$ko" "$work/lib/modules/$name.ko"
	echo "$name" >"$work/lib/modules/$name.order"
done

# fio with exactly the shared libraries it needs.
if [ "$with_fio" = 1 ]; then
	[ -x "$fio_root/usr/bin/fio" ] || die "no fio in $fio_root; run provision/provision.sh"
	mkdir -p "$work/usr/bin"
	cp "$fio_root/usr/bin/fio" "$work/usr/bin/fio"
	if [ "$arch" = amd64 ]; then
		libs=$("$(dirname "$0")/in-root.sh" -- ldd /usr/bin/fio | awk '/=> \// {print $3} /^\t\/lib/ {print $1}')
	else
		libs=$(cat "$fio_root/fio.libs")
	fi
	for lib in $libs; do
		mkdir -p "$work$(dirname "$lib")"
		cp -L "$fio_root$lib" "$work$lib"
	done
	# The dynamic loader must also be at its canonical path.
	for ld in /lib64/ld-linux-x86-64.so.2 /lib/ld-linux-aarch64.so.1; do
		if [ -e "$fio_root$ld" ] && [ ! -e "$work$ld" ]; then
			mkdir -p "$work$(dirname "$ld")"
			cp -L "$fio_root$ld" "$work$ld"
		fi
	done
fi

cat >"$work/bin/modload" <<'EOF'
#!/bin/sh
# modload NAME: insmod NAME and its dependencies in order.  Parameters for
# a module M come from the variable VFA_PARAMS_M (M with "-" as "_"), e.g.
# VFA_PARAMS_nvme_core="admin_timeout=5" modload nvme
order=/lib/modules/$1.order
[ -f "$order" ] || { echo "modload: no module $1 in this initramfs" >&2; exit 1; }
while read -r m; do
	var=$(echo "$m" | tr - _)
	[ -d "/sys/module/$var" ] && continue
	eval "params=\${VFA_PARAMS_$var:-}"
	# shellcheck disable=SC2086
	if ! insmod "/lib/modules/$m.ko" $params; then
		# A dependency may be one CPU-specific variant among several
		# (crct10dif-pclmul without PCLMUL under TCG): only the module
		# asked for must load.
		[ "$m" = "$1" ] && { echo "modload: insmod $m failed" >&2; exit 1; }
		echo "modload: $m did not load (a dependency of $1); going on" >&2
	fi
done <"$order"
EOF
cat >"$work/bin/result" <<'EOF'
#!/bin/sh
echo "VFA-RESULT $*"
EOF

if [ -n "$script" ]; then
	cp "$script" "$work/workload.sh"
else
	printf '#!/bin/sh\nresult boot=ok kernel=$(uname -r)\n' >"$work/workload.sh"
fi

cat >"$work/init" <<'EOF'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tmpfs tmpfs /tmp
echo "VFA-RESULT init=start kernel=$(uname -r) arch=$(uname -m)"
sh /workload.sh
rc=$?
echo "VFA-RESULT init=done rc=$rc"
sync
poweroff -f
EOF
chmod +x "$work/init" "$work/bin/modload" "$work/bin/result" "$work/workload.sh"

mkdir -p "$(dirname "$out")"
(cd "$work" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 >"$out.tmp"
mv "$out.tmp" "$out"
echo "mkinitramfs: $out ($(du -h "$out" | cut -f1), kernel $krel, modules: $(cat "$work"/lib/modules/*.order 2>/dev/null | sort -u | tr '\n' ' '))" >&2
