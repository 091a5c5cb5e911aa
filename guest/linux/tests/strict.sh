# Guest workload (prepended by tests/e2e/guest/common.sh), dart=apple:
# strict=1: the device reaches only the granules of buffers mapped now.
# Sub-granule buffers (every 4 KiB I/O) bounce, granule buffers get their
# own mapping, unmapped within a tick of their last unmap; verified I/O.
list_pci >/dev/null
VFA_PARAMS_apple_dma="strict=1" modload apple_dma || { result apple_dma=load_failed; exit 1; }
VFA_PARAMS_nvme_core="admin_timeout=30 io_timeout=30" modload nvme
wait_for /dev/nvme0n1 60 || { result nvme=absent; dmesg | tail -n 30; exit 1; }
rc=0
run_fio strict --rw=randwrite --bsrange=4k-256k --size=16M --offset=16M || rc=1
fio --name=qd32 --filename=/dev/nvme0n1 --direct=1 --ioengine=libaio --iodepth=32 \
	--rw=randread --bs=4k --size=32M --time_based --runtime=4 --eta=never \
	--output=/tmp/fio-qd32.out && result fio_qd32=ok || { result fio_qd32=failed; rc=1; }
# Granule-aligned, physically contiguous buffers (huge pages, 16 KiB-aligned,
# 16-64 KiB) take real mappings of their own, unmapped after use.  (User
# buffers in 4 KiB pages become 4 KiB segments: they bounce.)
echo 16 >/proc/sys/vm/nr_hugepages
fio --name=aligned --filename=/dev/nvme0n1 --direct=1 --ioengine=psync --iomem=shmhuge --iomem_align=16k \
	--rw=randwrite --bsrange=16k-64k --blockalign=16k --size=8M --offset=64M --verify=crc32c \
	--do_verify=1 --verify_fatal=1 --eta=never --output=/tmp/fio-aligned.out &&
	result fio_aligned=ok || { result fio_aligned=failed; tail -n 20 /tmp/fio-aligned.out; rc=1; }
sleep 0.5
f=/sys/kernel/debug/apple_dma/0000:00:06.0/stats
for k in mode bounce_maps failures map_calls strict_releases idle_mappings idle_release_max_us \
	live_mappings device_live_mappings unknown_unmaps private_unmaps cache_misses; do
	result "s_$k=$(sed -n "s/^$k //p" $f)"
done
dmesg | grep -i -E 'apple_dma|BUG|WARNING|Oops' | tail -n 10
exit $rc
