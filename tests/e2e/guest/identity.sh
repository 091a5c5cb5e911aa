# Identity DMA (dart=identity): the unmodified nvme driver binds and does
# verified I/O, its MSI-X vectors count.
list_pci
VFA_PARAMS_nvme_core="admin_timeout=30 io_timeout=30" modload nvme
if wait_for /dev/nvme0n1 60; then
	result nvme=bound driver="$(driver_of 0000:00:05.0)"
else
	result nvme=absent driver="$(driver_of 0000:00:05.0)"
	dmesg | grep -i nvme | tail -n 20
	exit 1
fi
result disk_bytes="$(blockdev --getsize64 /dev/nvme0n1)"
rc=0
pattern_check /dev/nvme0n1 || rc=1
run_fio identity --rw=randwrite --bsrange=4k-256k --size=32M --offset=32M || rc=1
result nvme_irqs="$(nvme_irqs)"
grep nvme /proc/interrupts
exit $rc
