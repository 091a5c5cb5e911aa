# Apple DART mode WITH the guest module: apple_dma binds the companion and
# gives the managed function (00:05.0) DMA operations through it; the
# unmodified nvme driver binds and a verified fio workload of 256 MiB mixed
# sequential and random I/O (4 KiB to 1 MiB blocks) finds no mismatch.
list_pci
if modload apple_dma; then
	result apple_dma=loaded companion_driver="$(driver_of 0000:00:06.0)"
else
	result apple_dma=failed
	dmesg | tail -n 20
	exit 1
fi
VFA_PARAMS_nvme_core="admin_timeout=30 io_timeout=60" modload nvme
if wait_for /dev/nvme0n1 90; then
	result nvme=bound driver="$(driver_of 0000:00:05.0)"
else
	result nvme=absent driver="$(driver_of 0000:00:05.0)"
	dmesg | grep -iE 'nvme|apple' | tail -n 30
	exit 1
fi
result disk_bytes="$(blockdev --getsize64 /dev/nvme0n1)"
rc=0
pattern_check /dev/nvme0n1 || rc=1

mixed_fio() {
	# Four phases of 64 MiB each, one after the other (stonewall), on disjoint
	# ranges so that each verifies its own writes.
	cat >/tmp/mixed.fio <<'JOB'
[global]
filename=/dev/nvme0n1
direct=1
ioengine=psync
verify=crc32c
do_verify=1
verify_fatal=1
verify_dump=0
size=64M
[seq-1m]
rw=write
bs=1M
offset=0
stonewall
[rand-4k-64k]
rw=randwrite
bsrange=4k-64k
offset=64M
stonewall
[seq-128k]
rw=write
bs=128k
offset=128M
stonewall
[rand-4k-1m]
rw=randwrite
bssplit=4k/40:16k/20:64k/20:256k/10:1m/10
offset=192M
stonewall
JOB
	t0=$(date +%s)
	if fio --eta=never --output=/tmp/fio-mixed.out /tmp/mixed.fio; then
		t1=$(date +%s)
		written=$(grep -o 'WRITE: bw=[^,]*, [^,]*, io=[^ ,]*' /tmp/fio-mixed.out | sed 's/.*io=//' | tr '\n' '+')
		errs=$(grep -ciE 'verify: bad|crc32c: verify failed|bad magic' /tmp/fio-mixed.out)
		result fio_mixed=ok errors="$errs" fio_seconds=$((t1 - t0)) written="${written%+}"
	else
		result fio_mixed=failed
		tail -n 40 /tmp/fio-mixed.out
		return 1
	fi
	grep -E 'WRITE:|READ:' /tmp/fio-mixed.out
}
# QUICK=1 (set before this script by the reconnect run): no fio.
if [ -z "${QUICK:-}" ]; then
	mixed_fio || rc=1
fi
result nvme_irqs="$(nvme_irqs)"

# The module's counters, one result per "key value" line.
for f in /sys/kernel/debug/apple_dma/*/stats; do
	[ -f "$f" ] || { result apple_dma_stats=missing; rc=1; continue; }
	while read -r key value rest; do
		[ -n "$value" ] && [ -z "$rest" ] && result "ad_$key=$value"
	done <"$f"
	cat "$f"
done

# Unloading gives every mapping back: the companion's LIVE_MAPPINGS
# register (BAR0 + 0x38) reads 0 afterwards, seen from the guest itself.
bar0=$(head -n1 /sys/bus/pci/devices/0000:00:06.0/resource | cut -d' ' -f1)
live_mappings() {
	v=$(devmem $((bar0 + 0x38)) 32) && echo $((v)) || echo error
}
result companion_live_before="$(live_mappings)"
if rmmod nvme && rmmod apple_dma; then
	result unload=ok companion_live_mappings="$(live_mappings)"
else
	result unload=failed
	rc=1
fi
exit $rc
