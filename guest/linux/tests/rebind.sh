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

# A loop binds nvme as fast as it can while apple_dma is unloaded and
# loaded again, with 50 ms between each unbind and the swap of nvme's DMA
# operations (swap_delay_ms), so that the loop surely tries to bind in
# between.  Whoever wins, nvme never keeps a driver with the wrong
# operations, nor operations that point into the unloaded module: while
# apple_dma swaps them, no driver can bind the function.
(while :; do echo 0000:00:05.0 >/sys/bus/pci/drivers/nvme/bind; done) 2>/dev/null &
binder=$!
cycles=0 unloads=0 routed=0
echo 50 >/sys/module/apple_dma/parameters/swap_delay_ms
while [ $cycles -lt 8 ]; do
	cycles=$((cycles + 1))
	rmmod apple_dma && unloads=$((unloads + 1))
	VFA_PARAMS_apple_dma="swap_delay_ms=50" modload apple_dma
	wait_for /dev/nvme0n1 60 || break
	before=$(sed -n 's/^map_calls //p' $f)
	fio --name=race --filename=/dev/nvme0n1 --direct=1 --rw=read --bs=64k --size=1M \
		--eta=never --output=/dev/null || rc=1
	after=$(sed -n 's/^map_calls //p' $f)
	[ "${after:-0}" -gt "${before:-0}" ] && routed=$((routed + 1))
done
kill $binder
wait $binder 2>/dev/null
result race_cycles=$cycles race_unloads=$unloads race_routed=$routed \
	race_kept="$(dmesg | grep -c -E 'kept its driver|kept a driver')" \
	race_driver="$(driver_of 0000:00:05.0)"
dmesg | grep -i -E 'apple_dma|BUG|WARNING|Oops' | tail -n 20
exit $rc
