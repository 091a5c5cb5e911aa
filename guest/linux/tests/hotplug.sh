# Guest workload (prepended by tests/e2e/guest/common.sh), dart=apple:
# one companion + nvme at boot (00:06.0 / 00:05.0), and an empty PCIe root
# port whose slot the host fills through QMP (test-guest.sh's hotplug
# scenario; the host acts on the "hp_*=1" markers printed here).  The
# unplugs are done from here, the way pciehp does them (the functions
# removed in reverse order), because QEMU 11.1 aborts when a vfio-user-pci
# device is unplugged (device_del); the re-plug is a rescan of the port,
# the path a hot-add takes (the whole slot scanned, then drivers bound in
# function order).
list_pci

# The companion of a slot's stats (disk_of, wait_disk, wait_gone,
# run_fio_on: common.sh).
stat_of() { sed -n "s/^$2 //p" "/sys/kernel/debug/apple_dma/$1/stats" 2>/dev/null; }
# unplug_slot: what pciehp does when the slot goes: its functions removed
# in reverse order (the managed function's driver first).
unplug_slot() {
	echo 1 >"/sys/bus/pci/devices/$F/remove"
	echo 1 >"/sys/bus/pci/devices/$C/remove"
}

modload apple_dma || { result apple_dma=load_failed; exit 1; }
VFA_PARAMS_nvme_core="admin_timeout=15 io_timeout=15" modload nvme
cold=$(wait_disk 0000:00:05.0 60) || { result cold_disk=absent; exit 1; }
result cold_disk="$cold"

# The root port (the only PCI bridge) and the bus behind it.
port=""
for d in /sys/bus/pci/devices/*; do
	case $(cat "$d/class") in 0x0604*) port=${d##*/} ;; esac
done
bus=$(ls "/sys/bus/pci/devices/$port/pci_bus/" 2>/dev/null | head -n1)
bus=${bus#*:}
result hp_port="$port" hp_bus="$bus"
C=0000:$bus:00.0
F=0000:$bus:00.1
dmesg -c >/dev/null

rc=0
# ---- 1. hot-add: the host adds function 1 (nvme), then function 0 (the companion)
result hp_add=1
if ! hot=$(wait_disk "$F" 120); then
	result hp_added=no hp_comp_driver="$(driver_of "$C")" hp_fn_driver="$(driver_of "$F")"
	dmesg | tail -n 30
	exit 1
fi
result hp_added=yes hp_comp_driver="$(driver_of "$C")" hp_fn_driver="$(driver_of "$F")"
result hp_managed="$(stat_of "$C" managed)" cold_managed="$(stat_of 0000:00:06.0 managed)"
result hp_first_maps="$(stat_of "$C" map_calls)" hp_first_failures="$(stat_of "$C" failures)"
# The order the kernel took: companion probe and "now goes through" before nvme's probe.
result hp_order="$(dmesg | grep -E "apple_dma $C: DMA of $F now goes through|nvme $F: " | head -n1 | grep -c 'apple_dma')"
# Both disks at once, verified; each companion counts its own.
run_fio hpa --rw=randwrite --bsrange=4k-128k --size=16M --offset=16M &
a=$!
run_fio_on "$hot" hpb --rw=randwrite --bsrange=4k-128k --size=16M --offset=16M &
b=$!
wait $a || rc=1
wait $b || rc=1
result hp_maps="$(stat_of "$C" map_calls)" hp_failures="$(stat_of "$C" failures)" \
	hp_live="$(stat_of "$C" live_mappings)" hp_device_live="$(stat_of "$C" device_live_mappings)" \
	hp_unknown="$(stat_of "$C" unknown_unmaps)" \
	cold_maps="$(stat_of 0000:00:06.0 map_calls)" cold_failures="$(stat_of 0000:00:06.0 failures)" \
	hp_budget="$(stat_of "$C" budget_mappings)" cold_live="$(stat_of 0000:00:06.0 live_mappings)"

# ---- 2. orderly unplug while the cold disk works
fio --name=bg --filename="$cold" --direct=1 --ioengine=psync --rw=randread --bs=4k \
	--size=16M --time_based --runtime=15 --eta=never --output=/tmp/fio-bg.out &
bg=$!
sleep 1
unplug_slot
if wait_gone "/sys/bus/pci/devices/$C" 90; then
	result hp_unplugged=yes
else
	result hp_unplugged=no
	rc=1
fi
result hp_fn_left="$([ -e "/sys/bus/pci/devices/$F" ] && echo yes || echo no)" \
	hp_debugfs_left="$([ -e "/sys/kernel/debug/apple_dma/$C" ] && echo yes || echo no)"
# What the module said at remove: "remove: N mappings released; the companion holds M".
result hp_remove_holds="$(dmesg | sed -n "s/.*apple_dma $C: remove: .*the companion holds \([0-9]*\).*/\1/p" | tail -n1)"
wait $bg && result hp_bg=ok || { result hp_bg=failed; rc=1; }
result cold_after_failures="$(stat_of 0000:00:06.0 failures)"
sleep 4	# the host reads its broker's status now

# ---- 3. re-plug (a rescan), then the host device vanishes mid-I/O and the slot goes
dmesg -c >/dev/null
echo 1 >"/sys/bus/pci/devices/$port/rescan"
if ! hot=$(wait_disk "$F" 120); then
	result hp_replugged=no
	exit 1
fi
result hp_replugged=yes hp_replug_driver="$(driver_of "$F")" hp_replug_managed="$(stat_of "$C" managed)"
fio --name=pull --filename="$hot" --direct=1 --ioengine=psync --rw=randwrite --bsrange=4k-64k \
	--size=32M --time_based --runtime=60 --numjobs=2 --eta=never --output=/tmp/fio-pull.out &
pull=$!
sleep 2
result hp_pull=1
sleep 3	# the host pulls the device, then asks for the unplug
t0=$(cut -d. -f1 /proc/uptime)
unplug_slot
if wait_gone "/sys/bus/pci/devices/$C" 120; then
	result hp_pulled_gone=yes hp_pull_unplug_s=$(($(cut -d. -f1 /proc/uptime) - t0))
else
	result hp_pulled_gone=no
	rc=1
fi
t0=$(cut -d. -f1 /proc/uptime)
wait $pull
result hp_pull_fio_rc=$? hp_pull_fio_wait=$(($(cut -d. -f1 /proc/uptime) - t0))
result hp_gone_msgs="$(dmesg | grep -c "apple_dma $C: the companion is gone")" \
	hp_stuck_msgs="$(dmesg | grep -c "apple_dma $C: .*refused to unmap")" \
	hp_pull_remove_line="$(dmesg | grep -c "apple_dma $C: remove: ")"
# The cold disk still works.
run_fio after --rw=randwrite --bsrange=4k-64k --size=8M --offset=64M || rc=1
dmesg | grep -i -E 'apple_dma|pcieport|pciehp|nvme|BUG|WARNING|Oops' | tail -n 40
exit $rc
