#!/bin/sh
# Guest-side helpers shared by the workloads (prepended to each one).
# "result" and "modload" come from provision/mkinitramfs.sh's initramfs.

# Every PCI function: address, vendor:device, class.
list_pci() {
	for d in /sys/bus/pci/devices/*; do
		result pci="${d##*/}" id="$(cut -c3- "$d/vendor"):$(cut -c3- "$d/device")" class="$(cat "$d/class")"
	done
}

# wait_for PATH SECONDS: true once PATH exists.
wait_for() {
	n=0
	while [ ! -e "$1" ]; do
		[ "$n" -ge $(($2 * 10)) ] && return 1
		sleep 0.1
		n=$((n + 1))
	done
}

# wait_gone PATH SECONDS: true once PATH is gone.
wait_gone() {
	n=0
	while [ -e "$1" ]; do
		[ "$n" -ge $(($2 * 10)) ] && return 1
		sleep 0.1
		n=$((n + 1))
	done
}

# The namespace's block device of the NVMe at PCI address $1 (under
# multipath the path device nvmeXcYn1 names its head nvmeXn1).
disk_of() {
	for p in /sys/bus/pci/devices/"$1"/nvme/nvme*/nvme*n1; do
		[ -e "$p" ] || continue
		d=$(basename "$p" | sed 's/c[0-9]*n/n/')
		[ -b "/dev/$d" ] && echo "/dev/$d" && return 0
	done
	return 1
}

# wait_disk ADDR SECONDS: the disk of ADDR on stdout once it is there.
wait_disk() {
	n=0
	while ! disk_of "$1" >/dev/null; do
		[ "$n" -ge $(($2 * 10)) ] && return 1
		sleep 0.1
		n=$((n + 1))
	done
	disk_of "$1"
}

# Interrupts taken by the nvme driver's vectors, summed over CPUs.
nvme_irqs() {
	awk '/nvme/ { for (i = 2; i <= NF; i++) { if ($i !~ /^[0-9]+$/) break; s += $i } } END { print s + 0 }' /proc/interrupts
}

# The driver bound to a PCI function, or "none".
driver_of() {
	if [ -L "/sys/bus/pci/devices/$1/driver" ]; then
		basename "$(readlink "/sys/bus/pci/devices/$1/driver")"
	else
		echo none
	fi
}

# Write 16 MiB of random bytes through the page cache, flush, drop the
# cache, read them back from the device and compare.
pattern_check() {
	dev=$1
	dd if=/dev/urandom of=/tmp/pattern bs=1M count=16 2>/dev/null
	dd if=/tmp/pattern of="$dev" bs=1M 2>/dev/null && sync && blockdev --flushbufs "$dev" &&
		echo 3 >/proc/sys/vm/drop_caches &&
		dd if="$dev" of=/tmp/readback bs=1M count=16 2>/dev/null
	if cmp -s /tmp/pattern /tmp/readback; then
		result pattern=match bytes=16777216
	else
		result pattern=mismatch
		return 1
	fi
	rm -f /tmp/pattern /tmp/readback
}

# run_fio_on DISK NAME ARGS...: a verified fio run on DISK; one result
# line, output kept.
run_fio_on() {
	disk=$1 name=$2
	shift 2
	if fio --name="$name" --filename="$disk" --direct=1 --ioengine=psync \
		--verify=crc32c --do_verify=1 --verify_fatal=1 --verify_dump=0 \
		--eta=never --output=/tmp/fio-"$name".out "$@"; then
		errs=$(grep -c 'verify:.*bad\|err=[ ]*[1-9]' /tmp/fio-"$name".out)
		result fio_"$name"=ok errors="$errs"
	else
		result fio_"$name"=failed
		tail -n 30 /tmp/fio-"$name".out
		return 1
	fi
}

# run_fio NAME ARGS...: run_fio_on the first NVMe disk.
run_fio() {
	run_fio_on /dev/nvme0n1 "$@"
}
