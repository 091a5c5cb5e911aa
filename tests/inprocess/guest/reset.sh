# A function-level reset of 00:05.0 in the middle of verified I/O (the
# in-process vfio-apple-pci passes it to the backend): apple_dma and nvme
# bound, fio writing with crc32c verification in the background, then
# `echo 1 > .../reset`.  The nvme driver quiesces around the reset
# (reset_prepare/reset_done) and re-initialises the controller; the I/O
# must complete and verify, later I/O must work, and unloading must give
# every mapping back.  Prepended by tests/e2e/guest/common.sh.
if ! modload apple_dma; then
	result apple_dma=failed
	exit 1
fi
VFA_PARAMS_nvme_core="admin_timeout=30 io_timeout=60" modload nvme
if ! wait_for /dev/nvme0n1 90; then
	result nvme=absent driver="$(driver_of 0000:00:05.0)"
	dmesg | tail -n 20
	exit 1
fi
result nvme=bound driver="$(driver_of 0000:00:05.0)"
dev=/sys/bus/pci/devices/0000:00:05.0
[ -e "$dev/reset" ] || { result reset=no_reset_file; exit 1; }
result reset_method="$(cat "$dev/reset_method" 2>/dev/null | tr ' ' '+')"
rc=0
# --thread: the job runs in fio's own process, so its /proc/PID/io shows
# the writes as they go (a forked job's would show only after it ended).
fio --name=reset --thread --filename=/dev/nvme0n1 --direct=1 --ioengine=psync --rw=randwrite \
	--bsrange=4k-64k --size="${RESET_FIO_SIZE:-96M}" --verify=crc32c --do_verify=1 --verify_fatal=1 \
	--verify_dump=0 --eta=never --output=/tmp/fio-reset.out &
fio_pid=$!
# Reset once fio is writing (its first 4 MiB went out).
n=0
while [ "$n" -lt 100 ]; do
	[ -r /proc/$fio_pid/io ] || { sleep 2; break; }
	w=$(sed -n 's/^write_bytes: //p' /proc/$fio_pid/io 2>/dev/null)
	[ -n "$w" ] && [ "$w" -gt 4194304 ] && break
	sleep 0.1
	n=$((n + 1))
done
if kill -0 "$fio_pid" 2>/dev/null; then running=yes; else running=no; fi
if echo 1 >"$dev/reset"; then reset=ok; else reset=failed; rc=1; fi
if kill -0 "$fio_pid" 2>/dev/null; then after=yes; else after=no; fi
result reset="$reset" fio_running_at_reset="$running" fio_running_after_reset="$after" written_before_reset="${w:-0}"
if wait "$fio_pid"; then
	errs=$(grep -c 'verify:.*bad\|err=[ ]*[1-9]' /tmp/fio-reset.out)
	result fio_reset=ok errors="$errs"
else
	result fio_reset=failed
	tail -n 30 /tmp/fio-reset.out
	rc=1
fi
dmesg | grep -iE 'nvme|apple_dma' | tail -n 8
# The controller works after the reset: a fresh pattern reads back equal.
pattern_check /dev/nvme0n1 || rc=1
result driver_after="$(driver_of 0000:00:05.0)"
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
