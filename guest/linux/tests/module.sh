# Guest workload (prepended by tests/e2e/guest/common.sh): apple_dma routes
# the unmodified nvme driver's DMA through the companion (dart=apple).
list_pci

# Every counter of the module's debugfs file as one result line.
ad_stats() {
	tag=$1
	f=/sys/kernel/debug/apple_dma/0000:00:06.0/stats
	[ -r "$f" ] || { result "${tag}_stats=absent"; return; }
	line=""
	while read -r key val rest; do
		[ -z "$rest" ] || continue	# the histogram line
		line="$line ${tag}_$key=$val"
	done <"$f"
	result $line
}

VFA_PARAMS_apple_dma="selftest=1 unittest=1" modload apple_dma || { result apple_dma=load_failed; exit 1; }
result apple_dma_loaded=1
# The unit tests against a fake doorbell (cache, ladder, masks, reset, modes).
result "unittest=$(tr ' ' '_' </sys/kernel/debug/apple_dma/unittest)"
result apple_dma=loaded companion_driver="$(driver_of 0000:00:06.0)"
ad_stats probe
VFA_PARAMS_nvme_core="admin_timeout=30 io_timeout=30" modload nvme
if wait_for /dev/nvme0n1 60; then
	result nvme=bound driver="$(driver_of 0000:00:05.0)"
else
	result nvme=absent driver="$(driver_of 0000:00:05.0)"
	dmesg | tail -n 30
	exit 1
fi
rc=0
pattern_check /dev/nvme0n1 || rc=1
run_fio module --rw=randwrite --bsrange=4k-256k --size=32M --offset=32M || rc=1
ad_stats io
# Steady state: 4096 reads into one buffer cost the doorbells that map its
# window and, once idle, unmap it (fio's buffer lands on fresh pages in
# each run), not one per read.
before=$(sed -n 's/^doorbells //p' /sys/kernel/debug/apple_dma/0000:00:06.0/stats)
fio --name=steady --filename=/dev/nvme0n1 --direct=1 --ioengine=psync --rw=randread \
	--bs=4k --size=16M --io_size=16M --eta=never --output=/tmp/fio-steady.out || rc=1
after=$(sed -n 's/^doorbells //p' /sys/kernel/debug/apple_dma/0000:00:06.0/stats)
result steady_ios=4096 steady_doorbells=$((after - before))
# Lazy mode: idle windows are unmapped within about 2 x idle_ms plus a tick.
sleep 0.5
ad_stats rest

# Unload: the module unbinds nvme first; reload: nvme binds again.
BAR=$(cut -d' ' -f1 /sys/bus/pci/devices/0000:00:06.0/resource | head -n1)
reg() { printf '0x%x' $((BAR + $1)); }

rmmod apple_dma && result unload=ok || { result unload=failed; rc=1; }
result after_unload_driver="$(driver_of 0000:00:05.0)"
# A stray doorbell after remove finds no command page (INVAL = 3): the
# module cleared CMD_GPA, so the device cannot read freed memory.
devmem "$(reg 0x18)" 32 1
result stray_doorbell_status="$(($(devmem "$(reg 0x0c)" 32)))"
modload apple_dma
if wait_for /dev/nvme0n1 60; then
	dd if=/dev/nvme0n1 of=/dev/null bs=1M count=8 2>/dev/null && result reload_read=ok || { result reload_read=failed; rc=1; }
else
	result reload_read=no_disk
	rc=1
fi
result reload_driver="$(driver_of 0000:00:05.0)"
ad_stats reload
# The companion loses the command page (as on a reset of its registers)
# while the host keeps the mappings: the module restores the page and I/O
# goes on, verified.  Idle windows go first, so the I/O needs a doorbell.
devmem "$(reg 0x10)" 32 0
devmem "$(reg 0x14)" 32 0
devmem "$(reg 0x3c)" 32 0
sleep 0.3
run_fio lostpage --rw=randwrite --bsrange=4k-64k --size=8M --offset=96M || rc=1
ad_stats lost
dmesg | grep -i -E 'apple_dma|BUG|WARNING|Oops' | tail -n 20
exit $rc
