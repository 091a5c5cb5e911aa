#!/bin/sh
# The guest side of `vfio-apple run` (the demo): /workload.sh in the
# initramfs that provision/mkinitramfs.sh builds.  The launcher reads the
# "VFA-RESULT key=value" and "VFA-FIO-JSON {...}" lines on the console.
fail() {
	result "$@"
	echo "--- guest kernel log (last lines) ---"
	dmesg | tail -n 40
	exit 1
}

# The launcher notes the DART's fault count now (the firmware's, if any).
sleep 0.5

# apple_dma first: it must own the device's DMA before nvme maps anything.
modload apple_dma || fail stage=apple_dma error=load-failed
modload nvme || fail stage=nvme error=load-failed

n=0
while [ ! -b /dev/nvme0n1 ] && [ $n -lt 300 ]; do
	sleep 0.1
	n=$((n + 1))
done
[ -b /dev/nvme0n1 ] || fail stage=device error=no-nvme0n1
pci=$(basename "$(readlink -f /sys/block/nvme0n1/device/device)")
result device=seen disk=nvme0n1 bytes=$(blockdev --getsize64 /dev/nvme0n1) pci=$pci

companion=none
for d in /sys/bus/pci/drivers/apple_dma/0000:*; do
	[ -e "$d" ] && companion=$(basename "$d")
done
result companion=$companion

# Random writes of mixed sizes (scatter-gather through the companion), then
# every block read back and checked (crc32c in each block header).
fio --name=demo --filename=/dev/nvme0n1 --direct=1 --ioengine=libaio --iodepth=8 \
	--rw=randwrite --bsrange=4k-128k --size="${VFA_DEMO_SIZE:-32M}" \
	--verify=crc32c --do_verify=1 --verify_fatal=1 \
	--eta=never --output-format=json --output=/tmp/fio.json
rc=$?
[ -s /tmp/fio.json ] && echo "VFA-FIO-JSON $(tr -d '\n' </tmp/fio.json)"
result fio_rc=$rc
[ $rc -eq 0 ] || fail stage=fio error=rc$rc
exit 0
