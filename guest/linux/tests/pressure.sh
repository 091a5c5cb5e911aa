# Guest workload (prepended by tests/e2e/guest/common.sh), dart=apple:
# a tiny cache (16 window slots of 16 KiB) under QD32 verified I/O from two
# CPUs: windows must be evicted, a buffer bounced when every slot is busy
# (forced by the probe-time self-test; fio may add more), and every byte
# still verify.  v2_only=1: the version 2 protocol path
# (published limits, no GUEST_FEATURES, no UNMAP_ALL).
list_pci >/dev/null
result cpus="$(grep -c ^processor /proc/cpuinfo)"
VFA_PARAMS_apple_dma="max_windows=16 window_kb=16 v2_only=1 selftest=1" modload apple_dma || { result apple_dma=load_failed; exit 1; }
# The probe-time self-test holds all 16 slots and maps once more: that map
# must bounce (pool carries the bytes both ways) whatever fio's timing does.
result "p_selftest=$(sed -n 's/^selftest //p' /sys/kernel/debug/apple_dma/0000:00:06.0/stats)"
result "p_selftest_bounces=$(sed -n 's/^bounce_maps //p' /sys/kernel/debug/apple_dma/0000:00:06.0/stats)"
VFA_PARAMS_nvme_core="admin_timeout=30 io_timeout=30" modload nvme
wait_for /dev/nvme0n1 60 || { result nvme=absent; dmesg | tail -n 30; exit 1; }
rc=0
fio --name=pressure --filename=/dev/nvme0n1 --direct=1 --ioengine=libaio --iodepth=32 \
	--rw=randwrite --bsrange=4k-16k --size=16M --verify=crc32c --do_verify=1 \
	--verify_fatal=1 --eta=never --output=/tmp/fio-pressure.out && result fio_pressure=ok ||
	{ result fio_pressure=failed; tail -n 20 /tmp/fio-pressure.out; rc=1; }
fio --name=parallel --filename=/dev/nvme0n1 --direct=1 --ioengine=libaio --iodepth=16 \
	--numjobs=2 --rw=randread --bs=4k --size=32M --time_based --runtime=5 \
	--eta=never --output=/tmp/fio-parallel.out && result fio_parallel=ok ||
	{ result fio_parallel=failed; tail -n 20 /tmp/fio-parallel.out; rc=1; }
f=/sys/kernel/debug/apple_dma/0000:00:06.0/stats
for k in evictions bounce_maps failures map_calls unknown_unmaps live_mappings budget_mappings doorbells guest_features max_resolve_doorbells max_doorbell_entries; do
	result "p_$k=$(sed -n "s/^$k //p" $f)"
done
dmesg | grep -i -E 'apple_dma|BUG|WARNING|Oops' | tail -n 10
exit $rc
