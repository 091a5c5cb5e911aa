# Guest workload (prepended by tests/e2e/guest/common.sh), dart=identity:
# nvme binds first; apple_dma with rebind=0 must refuse cleanly, then with
# the default rebind=1 take the function over and keep verified I/O working.
list_pci
VFA_PARAMS_nvme_core="admin_timeout=30 io_timeout=30" modload nvme
wait_for /dev/nvme0n1 60 && result first_driver="$(driver_of 0000:00:05.0)"
VFA_PARAMS_apple_dma="rebind=0" modload apple_dma
result refused_companion_driver="$(driver_of 0000:00:06.0)" refused_nvme_driver="$(driver_of 0000:00:05.0)"
dmesg | grep -c 'already bound to a driver' | sed 's/^/refusal_messages=/' | while read -r l; do result "$l"; done
rmmod apple_dma
modload apple_dma
rc=0
if wait_for /dev/nvme0n1 60; then
	result rebound_driver="$(driver_of 0000:00:05.0)" companion_driver="$(driver_of 0000:00:06.0)"
else
	result rebound_driver=none
	exit 1
fi
run_fio rebind --rw=randwrite --bsrange=4k-128k --size=16M --offset=16M || rc=1
f=/sys/kernel/debug/apple_dma/0000:00:06.0/stats
result rebind_map_calls="$(sed -n 's/^map_calls //p' $f)" rebind_failures="$(sed -n 's/^failures //p' $f)"
dmesg | grep -i -E 'apple_dma|BUG|WARNING|Oops' | tail -n 20
exit $rc
