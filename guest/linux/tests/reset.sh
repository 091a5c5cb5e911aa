# Guest workload (prepended by tests/e2e/guest/common.sh), dart=apple: the
# host resets the companion behind the module's back (the broker's
# sim-reset-companion) while nvme is unbound.  Every host mapping and the
# command page go.  The module must notice at its next doorbell, drop what
# it held, map again, and never hand out a bus address the reset killed:
# nvme binds again and verified I/O works, with no DART fault.
list_pci >/dev/null
modload apple_dma || { result apple_dma=load_failed; exit 1; }
VFA_PARAMS_nvme_core="admin_timeout=30 io_timeout=30" modload nvme
wait_for /dev/nvme0n1 60 || { result nvme=absent; dmesg | tail -n 30; exit 1; }
rc=0
run_fio before --rw=randwrite --bsrange=4k-256k --size=16M --offset=16M || rc=1
f=/sys/kernel/debug/apple_dma/0000:00:06.0/stats
BAR=$(cut -d' ' -f1 /sys/bus/pci/devices/0000:00:06.0/resource | head -n1)
reg() { echo $(($(devmem "$(printf '0x%x' $((BAR + $1)))" 32))); }
# nvme's rings are mapped for as long as it is bound: let it go first.
echo 0000:00:05.0 >/sys/bus/pci/drivers/nvme/unbind
sleep 0.3
result r_unbound="$(driver_of 0000:00:05.0)" r_live_before="$(reg 0x38)" r_features_before="$(reg 0x3c)" \
	r_module_live_before="$(sed -n 's/^live_mappings //p' $f)"
result reset_request=1
# The host's reset clears LIVE_MAPPINGS and GUEST_FEATURES.
n=0
while { [ "$(reg 0x38)" != 0 ] || [ "$(reg 0x3c)" != 0 ]; } && [ $n -lt 600 ]; do
	sleep 0.1
	n=$((n + 1))
done
result r_live_reset="$(reg 0x38)" r_features_reset="$(reg 0x3c)"
echo 0000:00:05.0 >/sys/bus/pci/drivers/nvme/bind
if wait_for /dev/nvme0n1 60; then
	result r_rebound="$(driver_of 0000:00:05.0)"
else
	result r_rebound=none
	dmesg | tail -n 30
	exit 1
fi
run_fio after --rw=randwrite --bsrange=4k-256k --size=16M --offset=48M || rc=1
pattern_check /dev/nvme0n1 || rc=1
sleep 0.3
for k in resets reset_lost cmd_restores failures live_mappings device_live_mappings unknown_unmaps; do
	result "r_$k=$(sed -n "s/^$k //p" $f)"
done
result r_features_after="$(reg 0x3c)"
dmesg | grep -i -E 'apple_dma|BUG|WARNING|Oops' | tail -n 10
exit $rc
