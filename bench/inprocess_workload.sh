# Guest side of bench_inprocess (prepended by tests/e2e/guest/common.sh; a
# line above sets BENCH_RUNTIME, BENCH_REPS, BENCH_MMIO_COUNT).  Three NVMe
# functions in this one guest, all DART-identity or plain:
#   inproc    00:05.0  vfio-apple-pci (in-process, sim:nvme)
#   vfiouser  00:07.0  vfio-user-pci to a broker (sim:nvme)
#   emulated  00:08.0  QEMU's own nvme, a raw image in the host's page cache
# The two sims report the same subsystem NQN and controller ID, and Linux
# refuses a second controller with a duplicate ID in one subsystem: only one
# of them is bound to nvme at a time (sysfs unbind/bind before each run).
# For each device: its BAR0 read latency (CSTS, 0x1c) with guest_mmio_lat,
# then 4 KiB random reads at QD1 and QD32, the devices in a rotating order
# each repetition so that all see the same machine load.
VFA_PARAMS_nvme_core="admin_timeout=30 io_timeout=30" modload nvme
DRV=/sys/bus/pci/drivers/nvme
names="inproc vfiouser emulated"
pci_inproc=0000:00:05.0 pci_vfiouser=0000:00:07.0 pci_emulated=0000:00:08.0
dev_of() { # PCI address -> nvmeXn1, waiting up to 30 s for it
	n=0
	while [ $n -lt 300 ]; do
		for b in /sys/block/nvme*n1; do
			[ -e "$b" ] || continue
			[ "$(basename "$(readlink -f "$b/device/device")")" = "$1" ] && { basename "$b"; return 0; }
		done
		sleep 0.1
		n=$((n + 1))
	done
	return 1
}
# use NAME: NAME's function bound to nvme (the other sim unbound first).
use() {
	eval pci=\$pci_$1
	case $1 in
	inproc) other=$pci_vfiouser ;;
	vfiouser) other=$pci_inproc ;;
	*) other= ;;
	esac
	[ -n "$other" ] && [ -e "$DRV/$other" ] && echo "$other" >"$DRV/unbind"
	[ -e "$DRV/$pci" ] || echo "$pci" >"$DRV/bind" 2>/dev/null
	dev=$(dev_of "$pci") || { result bench=no_disk name=$1 pci=$pci; ls /sys/block; dmesg | tail -n 5; exit 1; }
	# the first time: fill the region read below so reads see written blocks
	if ! grep -qx "$1" /tmp/filled 2>/dev/null; then
		dd if=/dev/zero of=/dev/$dev bs=1M count=64 oflag=direct 2>/dev/null
		echo "$1" >>/tmp/filled
	fi
}
sleep 2 # let the asynchronous probes settle (one sim loses the race)
for name in $names; do
	use $name
	result bench_dev=$name pci=$pci disk=$dev
	out=$(/bin/guest_mmio_lat /sys/bus/pci/devices/$pci/resource0 0x1c "${BENCH_MMIO_COUNT:-2000}" 9) ||
		{ result bench=mmio_failed name=$name; exit 1; }
	result bench_mmio=$name $out
done
rep=0
while [ "$rep" -lt "$BENCH_REPS" ]; do
	for qd in 1 32; do
		# rotate: rep 0 inproc first, rep 1 vfiouser first, rep 2 emulated first
		order=$(echo $names $names | cut -d' ' -f$((rep % 3 + 1))-$((rep % 3 + 3)))
		for name in $order; do
			use $name
			# terse: field 6 = KiB read, field 8 = read IOPS
			line=$(fio --name=b --filename=/dev/$dev --direct=1 --ioengine=libaio \
				--iodepth="$qd" --rw=randread --bs=4k --size=64M --time_based \
				--runtime="$BENCH_RUNTIME" --minimal --eta=never 2>/dev/null | tail -n1)
			result bench_fio=$name qd=$qd rep=$rep iops="$(echo "$line" | cut -d';' -f8)" \
				kib="$(echo "$line" | cut -d';' -f6)"
		done
	done
	rep=$((rep + 1))
done
result bench=done
