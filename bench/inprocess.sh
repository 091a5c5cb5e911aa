#!/bin/bash
# bench_inprocess: the in-process devices against the vfio-user path and
# QEMU's own emulated NVMe, side by side in ONE TCG x86_64 guest (Debian
# 6.1), so that all three see the same guest, kernel and machine load:
#   in-process  vfio-apple-pci,host=sim:nvme,dart=identity at 00:05.0
#   vfio-user   vfio-user-pci to `vfio-apple serve -d sim:nvme,dart=identity`
#               at 00:07.0 (posted writes, as run gives the passthrough)
#   emulated    -device nvme over a raw 256 MiB image in the host's page cache
#               at 00:08.0
# The unmodified nvme driver on all three (identity DART: no apple_dma), so
# that only the transport differs between the first two (the two sims have
# the same NVMe identity, so the guest binds one of them at a time, between
# runs).  Measured in the
# guest: 4 KiB random reads (fio, libaio) at QD1 and QD32, BENCH_REPS
# repetitions of BENCH_RUNTIME s each, devices in rotating order; and one
# BAR0 register read (CSTS) as the guest sees it (bench/guest_mmio_lat.c,
# median of 9 batches).  Prints medians and the ratios in-process /
# vfio-user and in-process / emulated (targets: >= 1.3x and >= 1.0x at QD1).
# TCG makes absolute figures small; the ratios are what carries over.
#
# QEMU: one that has vfio-apple-pci and vfio-user-pci ($QEMU_BIN, default
# $VFA_CACHE/qemu-inprocess/bin/qemu-system-x86_64); says "skipped" without
# one, without root, or without a C compiler that links statically.
# Env: BENCH_RUNTIME (s per run, 5), BENCH_REPS (5), BENCH_MMIO_COUNT (2000),
#      VFA_BIN, VFA_CACHE.
set -uo pipefail
REPO=@REPO@
BUILD_ROOT=@BUILD_ROOT@
[ -d "$REPO/tests/e2e" ] || REPO=$(cd "$(dirname "$0")/.." && pwd)
[ -d "$BUILD_ROOT" ] || BUILD_ROOT=$REPO/build
VFA_CACHE=${VFA_CACHE:-/var/cache/vfio-apple}
skip() {
	echo "bench_inprocess: skipped ($*)"
	exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root for the guest"
QEMU=${QEMU_BIN:-$VFA_CACHE/qemu-inprocess/bin/qemu-system-x86_64}
[ -x "$QEMU" ] || skip "no in-process QEMU at $QEMU: build one as docs/qemu.md says, or set QEMU_BIN"
help=$("$QEMU" -device help 2>/dev/null)
grep -q 'name "vfio-apple-pci"' <<<"$help" || skip "$QEMU has no vfio-apple-pci (docs/qemu.md)"
grep -q 'name "vfio-user-pci"' <<<"$help" || skip "$QEMU has no vfio-user-pci: the one-guest comparison needs both"

. "$REPO/tests/e2e/lib.sh"
VFA_BIN=${VFA_BIN:-$BUILD_ROOT/cli/vfio-apple}
find_vfio_apple
provision_env
runtime=${BENCH_RUNTIME:-5}
reps=${BENCH_REPS:-5}
KERNEL=${KERNEL_6_1:-}
MODULES=${MODULES_6_1:-}
[ -n "$KERNEL" ] && [ -n "$MODULES" ] || die "no provisioned 6.1 kernel"
make_work

# The guest's register-latency tool, static (the initramfs has no libc).
${CC:-cc} -static -O2 -o "$WORK/guest_mmio_lat" "$REPO/bench/guest_mmio_lat.c" 2>"$WORK/cc.log" ||
	{ cat "$WORK/cc.log"; skip "cannot link bench/guest_mmio_lat.c statically (libc6-dev's libc.a)"; }
{
	echo "BENCH_RUNTIME=$runtime BENCH_REPS=$reps BENCH_MMIO_COUNT=${BENCH_MMIO_COUNT:-2000}"
	cat "$E2E_DIR/guest/common.sh" "$REPO/bench/inprocess_workload.sh"
} >"$WORK/workload.sh"
"$PROVISION/mkinitramfs.sh" -o "$WORK/initrd.cpio.gz" -m "$MODULES" --load nvme --fio \
	--script "$WORK/workload.sh" >"$WORK/mkinitramfs.log" 2>&1 || { cat "$WORK/mkinitramfs.log"; die "mkinitramfs failed"; }
# A second archive with the tool; the kernel unpacks concatenated ones.
mkdir -p "$WORK/extra/bin"
cp "$WORK/guest_mmio_lat" "$WORK/extra/bin/"
(cd "$WORK/extra" && find bin | cpio -o -H newc --quiet | gzip) >>"$WORK/initrd.cpio.gz"

# The emulated NVMe's image: real blocks, read once into the page cache.
dd if=/dev/zero of="$WORK/disk.raw" bs=1M count=256 status=none
cat "$WORK/disk.raw" >/dev/null

start_broker vfiouser "sim:nvme,size=256M,dart=identity"
CONSOLE=$WORK/guest.console
limit=$((240 + reps * 2 * 3 * (runtime + 4)))
setpriv --pdeathsig TERM -- timeout -k 5 "$limit" "$QEMU" -accel tcg -nodefaults -no-reboot -display none \
	-m 1G -smp 1 -object memory-backend-memfd,id=mem,size=1G,share=on -machine q35,memory-backend=mem \
	-bios qboot.rom -serial stdio -kernel "$KERNEL" -initrd "$WORK/initrd.cpio.gz" \
	-append "console=ttyS0 $GUEST_CMDLINE" \
	-device vfio-apple-pci,id=vfa0,host=sim:nvme,,size=256M,,dart=identity,addr=0x5,companion=off \
	-device '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"'"$WORK/sock/passthrough.sock"'"},"addr":"0x7"}' \
	-drive file="$WORK/disk.raw",if=none,id=nv,format=raw \
	-device nvme,serial=vfa-bench,drive=nv,addr=0x8 </dev/null >"$CONSOLE" 2>&1 &
qemu_pid=$!
{ wait "$qemu_pid"; } 2>/dev/null
qemu_rc=$?
qemu_pid=""
stop_broker_only
grep -aq 'VFA-RESULT bench=done' "$CONSOLE" || { show_context; die "the guest did not finish (QEMU exit $qemu_rc)"; }
grep -a 'VFA-RESULT bench_' "$CONSOLE" | tr -d '\r' >"$WORK/results"

# median NAME QD: IOPS over the repetitions
median() {
	grep "bench_fio=$1 qd=$2 " "$WORK/results" | tr ' ' '\n' | sed -n 's/^iops=//p' | sort -n |
		awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# spread NAME QD: "min-max" IOPS over the repetitions
spread() {
	grep "bench_fio=$1 qd=$2 " "$WORK/results" | tr ' ' '\n' | sed -n 's/^iops=//p' | sort -n |
		awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
mmio() { grep "bench_mmio=$1 " "$WORK/results" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

echo "bench_inprocess: one TCG x86_64 guest (Linux 6.1), $("$QEMU" --version | head -n1) ($QEMU)"
echo "  4 KiB randread, fio libaio, ${runtime} s x $reps per point (median IOPS)"
printf '  %-4s %14s %14s %14s %12s %12s\n' QD in-process vfio-user emulated "inproc/vfu" "inproc/emul"
for qd in 1 32; do
	i=$(median inproc $qd) v=$(median vfiouser $qd) e=$(median emulated $qd)
	printf '  %-4s %14s %14s %14s %12s %12s\n' "$qd" "$i" "$v" "$e" "$(ratio "$i" "$v")x" "$(ratio "$i" "$e")x"
	[ $qd = 1 ] && qd1=("$i" "$v" "$e")
done
echo "  range over the repetitions (min-max IOPS; the machine is shared, TCG):"
for qd in 1 32; do
	printf '  %-4s %14s %14s %14s\n' "$qd" "$(spread inproc $qd)" "$(spread vfiouser $qd)" "$(spread emulated $qd)"
done
echo "  BAR0 read (CSTS) from the guest, ns per read (median of 9 batches of ${BENCH_MMIO_COUNT:-2000}; min)"
printf '  %-12s %8s %8s\n' device median min
for n in inproc vfiouser emulated; do
	printf '  %-12s %8s %8s\n' "$n" "$(mmio $n ns)" "$(mmio $n min_ns)"
done
echo "  BAR0 read: vfio-user / in-process = $(ratio "$(mmio vfiouser ns)" "$(mmio inproc ns)")x"
r1=$(ratio "${qd1[0]}" "${qd1[1]}") r2=$(ratio "${qd1[0]}" "${qd1[2]}")
echo "  QD1 targets: in-process >= 1.3x vfio-user: ${r1}x ($(awk -v r="$r1" 'BEGIN { print (r >= 1.3) ? "met" : "MISSED" }')); in-process >= 1.0x emulated: ${r2}x ($(awk -v r="$r2" 'BEGIN { print (r >= 1.0) ? "met" : "MISSED" }'))"
