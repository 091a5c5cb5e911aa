#!/bin/bash
# Boot x86_64 guests (TCG) with apple_dma and check it end to end:
#
#   apple    dart=apple: the unmodified nvme driver works only through the
#            module: verified I/O, cache hits, steady state without
#            doorbells, rmmod unbinds nvme, reload rebinds it, no new DART
#            fault once the module is in;
#   rebind   dart=identity, 2 CPUs: nvme bound before the module; rebind=0
#            makes the probe fail cleanly, the default rebind=1 takes it
#            over; then a loop binds nvme nonstop through 8 unloads and
#            loads of the module, which must each route nvme's DMA;
#   pressure dart=apple, 2 CPUs, 16 window slots of 16 KiB: QD32 verified
#            I/O forces evictions and bounces and still verifies.
#   strict   dart=apple, strict=1: sub-granule buffers bounce, granule
#            buffers are unmapped after use; verified I/O.
#   reset    dart=apple: with nvme unbound, the host resets the companion
#            (every mapping and the command page go, the guest is not
#            told); the module notices, maps again, and nvme bound again
#            verifies its I/O with no DART fault.
#   iommu    (x86) a vIOMMU in the VM: apple_dma refuses to bind, loudly.
#   hotplug  a second slot (companion at function 0, nvme at 1, its
#            own broker) hot-added through QMP, used next to the first,
#            unplugged, re-added, then pulled mid-I/O (sim-vanish) and
#            unplugged: tests/hotplug.sh says how.
#   noncoherent (arm64) the PCIe host bridge's device-tree node says
#            dma-noncoherent: apple_dma refuses the function, loudly.
#
# apple also runs the module's unit tests (unittest=1: a fake doorbell).
#
# Usage: guest/linux/test-guest.sh [-k 6_1|6_12|7_3|6_12_ARM64] [apple] [rebind] [pressure] [strict] [reset] [iommu] [hotplug] [noncoherent]
#        6_12_ARM64 boots an arm64 guest (QEMU virt, cpu max, TCG).
# Env:   VFA_BIN (default ./build/cli/vfio-apple), VFA_CACHE, E2E_KEEP=1
# Reuses tests/e2e/lib.sh (broker, QEMU, console results); the last line
# is "N passed, N failed".
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../../tests/e2e/lib.sh"

tag=6_1
if [ "${1:-}" = -k ]; then
	tag=$2
	shift 2
fi
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(apple rebind pressure)
find_vfio_apple
provision_env --headers
kernel_var=KERNEL_$tag modules_var=MODULES_$tag krel_var=KREL_$tag
KERNEL=${!kernel_var:-}
MODULES=${!modules_var:-}
[ -n "$KERNEL" ] && [ -n "$MODULES" ] || die "no provisioned kernel for $tag"
make_work

arch=amd64
case $tag in *_ARM64) arch=arm64 ;; esac
ko=$(OUT=$WORK/ko "$HERE/build.sh" "${!krel_var}" | tail -n1) || die "module build failed"
initrd_for() {
	cat "$E2E_DIR/guest/common.sh" "$HERE/tests/$1.sh" >"$WORK/$1.workload.sh"
	"$PROVISION/mkinitramfs.sh" -o "$WORK/$1.cpio.gz" -m "$MODULES" --load nvme --fio \
		--ko "$ko" --script "$WORK/$1.workload.sh" --arch "$arch" 2>&1 | sed 's/^/e2e: /'
}

# boot NAME INITRD TIMEOUT_S [extra QEMU args]: lib.sh's x86 or arm64 guest.
boot() {
	local name=$1 initrd=$2 limit=$3
	shift 3
	if [ "$arch" = arm64 ]; then
		run_arm64_guest "$name" "$KERNEL" "$initrd" "$limit" "$@"
	else
		run_x86_guest "$name" "$KERNEL" "$initrd" "$limit" "$@"
	fi
}

# The broker's status once it has seen the VMM go (it notices the closed
# sockets on its own, and only then releases what the guest left mapped),
# at most 5 s after QEMU exited.
final_status() {
	for _ in $(seq 50); do
		broker_status >"$1" 2>/dev/null &&
			[ "$(json_get "$1" clients.passthrough.connected)/$(json_get "$1" clients.companion.connected)" = False/False ] &&
			return 0
		sleep 0.1
	done
	broker_status >"$1"
}

# Snapshot the broker's status once the guest says the module is in: DART
# faults before that come from the firmware's own NVMe probe.
watch_module_loaded() {
	(
		for _ in $(seq 600); do
			grep -aq 'VFA-RESULT apple_dma_loaded=1' "$WORK/$1.console" 2>/dev/null && break
			sleep 0.5
		done
		broker_status >"$WORK/$1.at-load"
	) &
	watcher_pid=$!
}

run_apple() {
	say "=== apple on $tag: dart=apple, nvme through the companion ==="
	initrd_for module
	start_broker apple "sim:nvme,size=256M,dart=apple"
	start_status_poller apple
	watch_module_loaded apple
	CONSOLE=$WORK/apple.console
	boot apple "$WORK/module.cpio.gz" 400
	wait "$watcher_pid"
	stop_status_poller
	local final=$WORK/apple.final
	check "broker answers status after the guest left" eval 'final_status "$final"'
	check "apple_dma bound the companion" eq "$(result companion_driver)" apple_dma
	check "unit tests against a fake doorbell ($(result unittest))" \
		eq "$(result unittest | sed 's/_failed_.*//')/$(result unittest | sed -n 's/.*_failed_//p')" passed_21/0
	check "self-test at probe: one doorbell for a 4-window sg list, IRQs-off map, coherent + sg table" \
		eq "$(result probe_selftest)" passed
	check "the self-test's sg list went out as one batch ($(result probe_map_entries) entries, $(result probe_doorbells) doorbells)" \
		gt "$(result probe_entries_per_doorbell_x100)" 100
	check "nvme bound through apple_dma" eq "$(result driver)" nvme
	check "pattern written and read back equal" eq "$(result pattern)" match
	check "fio verify passed with 0 errors" eq "$(result fio_module)/$(result errors)" ok/0
	check "doorbells rang ($(result io_doorbells))" gt "$(result io_doorbells)" 0
	# The lazy release unmaps windows idle for two passes of its worker
	# (about 8 ms): few, slow I/Os (7.3 maps whole 256 KiB segments, under
	# TCG) miss more often than many small ones, hence 5:1, not more.
	check "cache hits ($(result io_cache_hits)) outnumber misses ($(result io_cache_misses)) 5:1" \
		gt "$(result io_cache_hits)" "$(($(result io_cache_misses) * 5))"
	# fio's buffers are mapped and, idle after the run (or a stall of the
	# TCG guest), unmapped by the lazy release: a few doorbells, not one per
	# read (bench_guest_fio measures the rate: about 0.15 per 1,000).
	check "steady state: 4096 reads, under 1 doorbell per 100 ($(result steady_doorbells))" \
		gt 41 "$(result steady_doorbells)"
	check "no failed mapping" eq "$(result io_failures)" 0
	check "no unknown unmap" eq "$(result io_unknown_unmaps)" 0
	check "the device holds what the module counts ($(result io_live_mappings) mappings)" \
		eq "$(result io_device_live_mappings)/$(result io_device_live_bytes)" \
		"$(result io_live_mappings)/$(result io_live_bytes)"
	check "idle windows unmapped once idle (lazy, $(result rest_idle_release_max_us) us at worst)" \
		eq "$(result rest_idle_mappings)" 0
	check "lazy mode by default" eq "$(result rest_mode)" lazy
	check "rmmod apple_dma unbinds nvme" eq "$(result after_unload_driver)" none
	check "a stray doorbell after rmmod finds no command page (INVAL)" \
		eq "$(result stray_doorbell_status)" 3
	check "reloading rebinds nvme and reads work" eq "$(result reload_read)/$(result reload_driver)" ok/nvme
	check "command page lost: restored once, mappings kept ($(result lost_cmd_restores)/$(result lost_resets))" \
		eq "$(result lost_cmd_restores)/$(result lost_resets)" 1/0
	check "verified I/O after the lost command page" eq "$(result fio_lostpage)/$(result errors)" ok/0
	check "no failed mapping after it" eq "$(result lost_failures)" 0
	check "no DART fault once the module is in ($(json_get "$WORK/apple.at-load" dma.faults) at load)" \
		eq "$(json_get "$final" dma.faults)" "$(json_get "$WORK/apple.at-load" dma.faults)"
	check "no oops or warning in the guest" eval '! grep -aqE "Oops|BUG:|WARNING:|Call Trace" "$CONSOLE"'
	stop_broker
	check "broker exits 0 on SIGTERM" eq "$broker_rc" 0
	check "nothing left mapped on the host" eq "$(json_get "$final" dma.live_mappings)" 0
	[ $e2e_fail -eq 0 ] || show_context
}

run_rebind() {
	say "=== rebind on $tag: dart=identity, nvme bound before the module ==="
	initrd_for rebind
	start_broker rebind "sim:nvme,size=256M,dart=identity"
	boot rebind "$WORK/rebind.cpio.gz" 400 -smp 2
	check "nvme bound first" eq "$(result first_driver)" nvme
	check "rebind=0: the probe refused, nvme untouched" \
		eq "$(result refused_companion_driver)/$(result refused_nvme_driver)" none/nvme
	check "rebind=0: the refusal says why" eq "$(result refusal_messages)" 1
	check "default: apple_dma took nvme over" eq "$(result companion_driver)/$(result rebound_driver)" apple_dma/nvme
	check "fio verify passed with 0 errors" eq "$(result fio_rebind)/$(result errors)" ok/0
	check "its DMA went through the module ($(result rebind_map_calls) maps)" gt "$(result rebind_map_calls)" 0
	check "no failed mapping" eq "$(result rebind_failures)" 0
	check "a bind loop racing 8 unloads and loads: every unload done" \
		eq "$(result race_cycles)/$(result race_unloads)" 8/8
	check "after each load nvme's I/O went through the module ($(result race_routed) of 8)" \
		eq "$(result race_routed)/$(result race_driver)" 8/nvme
	check "no function kept a driver with the wrong operations" eq "$(result race_kept)" 0
	check "no oops or warning in the guest" eval '! grep -aqE "Oops|BUG:|WARNING:|Call Trace" "$CONSOLE"'
	stop_broker
	[ $e2e_fail -eq 0 ] || show_context
}

run_pressure() {
	say "=== pressure on $tag: dart=apple, 2 CPUs, tiny cache, QD32 ==="
	initrd_for pressure
	start_broker pressure "sim:nvme,size=256M,dart=apple"
	boot pressure "$WORK/pressure.cpio.gz" 400 -smp 2
	local final=$WORK/pressure.final
	check "broker answers status after the guest left" eval 'final_status "$final"'
	check "the guest has 2 CPUs" eq "$(result cpus)" 2
	check "QD32 verified writes through a 16-slot cache" eq "$(result fio_pressure)" ok
	check "two CPUs reading at QD16 each" eq "$(result fio_parallel)" ok
	check "windows were evicted ($(result p_evictions))" gt "$(result p_evictions)" 0
	check "self-test with every slot held passed ($(result p_selftest))" eq "$(result p_selftest)" passed
	check "the self-test's extra map bounced ($(result p_selftest_bounces))" gt "$(result p_selftest_bounces)" 0
	check "bounces counted after fio ($(result p_bounce_maps))" ge "$(result p_bounce_maps)" "$(result p_selftest_bounces)"
	check "live mappings within the 16 slots ($(result p_live_mappings))" gt 17 "$(result p_live_mappings)"
	# Per round of the ladder: one eviction batch, one MAP, one UNMAP of
	# mask misses; two rounds ring doorbells.  Each of at most batch_cap.
	check "one hold of the lock rang at most 6 doorbells ($(result p_max_resolve_doorbells)) of at most 64 entries ($(result p_max_doorbell_entries))" \
		eq "$([ "$(result p_max_resolve_doorbells)" -le 6 ] 2>/dev/null && [ "$(result p_max_doorbell_entries)" -le 64 ] && echo y)" y
	check "v2_only: no feature used" eq "$(result p_guest_features)" 0x0
	# With every slot busy a coherent allocation (nvme's PRP pages) cannot
	# bounce and fails; nvme retries it.  Rare, and the data still verify.
	check "failed mappings ($(result p_failures)) under 1% of $(result p_map_calls)" \
		gt "$(result p_map_calls)" "$(($(result p_failures) * 100))"
	check "no unknown unmap" eq "$(result p_unknown_unmaps)" 0
	check "no oops or warning in the guest" eval '! grep -aqE "Oops|BUG:|WARNING:|Call Trace" "$CONSOLE"'
	stop_broker
	check "nothing left mapped on the host" eq "$(json_get "$final" dma.live_mappings)" 0
	[ $e2e_fail -eq 0 ] || show_context
}

run_strict() {
	say "=== strict on $tag: dart=apple, strict=1 ==="
	initrd_for strict
	start_broker strict "sim:nvme,size=256M,dart=apple"
	boot strict "$WORK/strict.cpio.gz" 400
	local final=$WORK/strict.final
	check "broker answers status after the guest left" eval 'final_status "$final"'
	check "strict mode" eq "$(result s_mode)" strict
	check "verified I/O, 4-256 KiB" eq "$(result fio_strict)/$(result errors)" ok/0
	check "QD32 4 KiB reads" eq "$(result fio_qd32)" ok
	check "granule-aligned verified I/O" eq "$(result fio_aligned)" ok
	check "sub-granule buffers bounced ($(result s_bounce_maps))" gt "$(result s_bounce_maps)" 0
	check "granule buffers unmapped after use ($(result s_strict_releases), $(result s_idle_release_max_us) us at worst)" \
		gt "$(result s_strict_releases)" 0
	check "nothing idle left mapped at rest" eq "$(result s_idle_mappings)" 0
	check "failed mappings ($(result s_failures)) under 1% of $(result s_map_calls)" \
		gt "$(result s_map_calls)" "$(($(result s_failures) * 100))"
	check "no unknown unmap" eq "$(result s_unknown_unmaps)" 0
	check "the device holds what the module counts" eq "$(result s_device_live_mappings)" "$(result s_live_mappings)"
	check "no oops or warning in the guest" eval '! grep -aqE "Oops|BUG:|WARNING:|Call Trace" "$CONSOLE"'
	stop_broker
	check "nothing left mapped on the host" eq "$(json_get "$final" dma.live_mappings)" 0
	[ $e2e_fail -eq 0 ] || show_context
}

run_reset() {
	say "=== reset on $tag: the host resets the companion behind the module ==="
	initrd_for reset
	start_broker reset "sim:nvme,size=256M,dart=apple"
	CONSOLE=$WORK/reset.console
	rm -f "$CONSOLE"
	{
		wait_console 'VFA-RESULT reset_request=1' 300 || exit 1
		broker_status >"$WORK/reset.before"
		"$VFA_BIN" sim reset-companion --control-socket "$WORK/sock/control.sock" || exit 1
		broker_status >"$WORK/reset.after"
		echo "host: done"
	} >"$WORK/reset.host" 2>&1 &
	local driver=$!
	boot reset "$WORK/reset.cpio.gz" 400
	kill "$driver" 2>/dev/null
	wait "$driver"
	local final=$WORK/reset.final
	check "broker answers status after the guest left" eval 'final_status "$final"'
	sed 's/^/e2e:     /' "$WORK/reset.host"
	check "the host reset the companion" eq "$(tail -n1 "$WORK/reset.host")" "host: done"
	check "verified I/O before" eq "$(result fio_before)/$(result errors)" ok/0
	check "nvme unbound, the module still held mappings ($(result r_live_before)) with features on ($(result r_features_before))" \
		eq "$(result r_unbound)/$([ "$(result r_live_before)" -gt 0 ] 2>/dev/null && [ "$(result r_features_before)" != 0 ] && echo y)" none/y
	local resets=$(($(json_get "$WORK/reset.after" companion.resets) - $(json_get "$WORK/reset.before" companion.resets)))
	check "the host dropped them all ($(json_get "$WORK/reset.before" dma.live_mappings) -> $(json_get "$WORK/reset.after" dma.live_mappings) DART mappings)" \
		eq "$(json_get "$WORK/reset.after" dma.live_mappings)/$resets/$(result r_live_reset)/$(result r_features_reset)" 0/1/0/0
	check "the module saw one reset and restored nothing it did not own" \
		eq "$(result r_resets)/$(result r_cmd_restores)" 1/0
	check "nvme bound again through the module" eq "$(result r_rebound)" nvme
	check "verified I/O after the reset" eq "$(result fio_after)/$(result errors)/$(result pattern)" ok/0/match
	check "features negotiated again ($(result r_features_after))" eq "$(result r_features_after)" "$(result r_features_before)"
	check "no failed mapping, no unknown unmap" eq "$(result r_failures)/$(result r_unknown_unmaps)" 0/0
	check "the device holds what the module counts ($(result r_live_mappings))" \
		eq "$(result r_device_live_mappings)" "$(result r_live_mappings)"
	check "no DART fault: no dead bus address was handed out" eq "$(json_get "$final" dma.faults)" 0
	check "no oops or warning in the guest" eval '! grep -aqE "Oops|BUG:|WARNING:|Call Trace" "$CONSOLE"'
	stop_broker
	check "nothing left mapped on the host" eq "$(json_get "$final" dma.live_mappings)" 0
	[ $e2e_fail -eq 0 ] || show_context
}

# qmp COMMAND-JSON...: run QMP commands on $WORK/qmp.sock in order; prints
# each answer; exit 1 when one is an error.
qmp() {
	"$PYTHON" - "$WORK/qmp.sock" "$@" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
s.connect(sys.argv[1])
f = s.makefile("rw")
def answer():
    while True:
        line = f.readline()
        if not line:
            raise SystemExit("qmp: connection closed")
        msg = json.loads(line)
        if "return" in msg or "error" in msg:
            return msg
json.loads(f.readline())  # greeting
f.write(json.dumps({"execute": "qmp_capabilities"}) + "\n"); f.flush()
answer()
rc = 0
for cmd in sys.argv[2:]:
    f.write(cmd + "\n"); f.flush()
    msg = answer()
    print("qmp: %s -> %s" % (cmd, json.dumps(msg)))
    if "error" in msg:
        rc = 1
sys.exit(rc)
EOF
}

# The slot's two functions, function 1 first: QEMU tells the guest about
# a multifunction slot when function 0 arrives, and the guest scans it all.
hp_add_slot() {
	local s=$WORK/sock2
	qmp '{"execute":"device_add","arguments":{"driver":"vfio-user-pci","id":"hp-fn","bus":"rp1","addr":"0.1","socket":{"type":"unix","path":"'"$s"'/passthrough.sock"}}}' \
		'{"execute":"device_add","arguments":{"driver":"vfio-user-pci","id":"hp-comp","bus":"rp1","addr":"0.0","multifunction":true,"x-no-posted-writes":true,"socket":{"type":"unix","path":"'"$s"'/companion.sock"}}}'
}

# The host side of tests/hotplug.sh, in the background while the guest
# runs: it acts on the guest's hp_* markers.
hp_driver() {
	{
		wait_console 'VFA-RESULT hp_add=1' 300 || exit 1
		echo "host: adding the slot"
		hp_add_slot || exit 1
		wait_console 'VFA-RESULT hp_unplugged=' 300 || exit 1
		BROKER_SOCK_DIR=$WORK/sock2 broker_status >"$WORK/hotplug.after-unplug"
		echo "host: status after the unplug read"
		wait_console 'VFA-RESULT hp_pull=1' 300 || exit 1
		echo "host: the host device vanishes (sim-vanish on its broker)"
		"$VFA_BIN" sim vanish --control-socket "$WORK/sock2/control.sock" || exit 1
		sleep 1
		BROKER_SOCK_DIR=$WORK/sock2 broker_status >"$WORK/hotplug.after-vanish"
		echo "host: done"
	} >"$WORK/hotplug.host" 2>&1
}

run_hotplug() {
	say "=== hotplug on $tag: a second slot added, used, unplugged, re-added and pulled ==="
	initrd_for hotplug
	start_broker hotplug "sim:nvme,size=256M,dart=apple"
	# The slot's own broker: its function is function 1 behind the root
	# port, whose secondary bus the guest numbers 1 (checked below).
	mkdir -p "$WORK/sock2"
	chmod 700 "$WORK/sock2"
	setpriv --pdeathsig TERM -- "$VFA_BIN" serve -d "sim:nvme,size=128M,dart=apple" -s "$WORK/sock2" \
		-g 01:00.1 -l info >"$WORK/hotplug.broker2.log" 2>&1 &
	broker2_pid=$!
	for _ in $(seq 100); do
		[ -S "$WORK/sock2/control.sock" ] && break
		sleep 0.1
	done
	CONSOLE=$WORK/hotplug.console
	rm -f "$CONSOLE"
	hp_driver &
	local driver=$!
	boot hotplug "$WORK/hotplug.cpio.gz" 600 \
		-device pcie-root-port,id=rp1,bus=pcie.0,addr=0x7,chassis=1,slot=1 \
		-qmp "unix:$WORK/qmp.sock,server=on,wait=off"
	kill "$driver" 2>/dev/null
	wait "$driver"
	sed 's/^/e2e:     /' "$WORK/hotplug.host"
	check "the host side ran to the end" eq "$(tail -n1 "$WORK/hotplug.host")" "host: done"
	check "the root port's bus is 01 ($(result hp_bus))" eq "$(result hp_bus)" 01
	check "hot-add: apple_dma took the companion, nvme the function" \
		eq "$(result hp_comp_driver)/$(result hp_fn_driver)" apple_dma/nvme
	check "each companion manages its own function ($(result cold_managed), $(result hp_managed))" \
		eq "$(result cold_managed)/$(result hp_managed)" 0000:00:05.0/0000:01:00.1
	check "the ops went in before nvme's probe" eq "$(result hp_order)" 1
	check "nvme's first DMA went through the new companion ($(result hp_first_maps) maps)" \
		gt "$(result hp_first_maps)" 0
	check "verified I/O on both disks at once" eq "$(result fio_hpa)/$(result fio_hpb)" ok/ok
	check "both companions mapped, none failed ($(result cold_maps), $(result hp_maps))" \
		eq "$([ "$(result cold_maps)" -gt 0 ] 2>/dev/null && [ "$(result hp_maps)" -gt 0 ] && echo y)/$(result cold_failures)/$(result hp_failures)" y/0/0
	check "the hot companion's device holds what it counts ($(result hp_live))" \
		eq "$(result hp_device_live)" "$(result hp_live)"
	check "no DART fault on the hot-added device" \
		eq "$(json_get "$WORK/hotplug.after-unplug" dma.faults)" 0
	check "unplugged: the slot left the guest" \
		eq "$(result hp_unplugged)/$(result hp_fn_left)/$(result hp_debugfs_left)" yes/no/no
	check "remove released everything before the companion went (it held $(result hp_remove_holds))" \
		eq "$(result hp_remove_holds)" 0
	check "the host holds nothing after the unplug, QEMU still connected" \
		eq "$(json_get "$WORK/hotplug.after-unplug" dma.live_mappings)" 0
	check "the cold disk kept working meanwhile" eq "$(result hp_bg)/$(result cold_after_failures)" ok/0
	check "re-plugged: nvme bound again through its companion" \
		eq "$(result hp_replugged)/$(result hp_replug_driver)/$(result hp_replug_managed)" yes/nvme/0000:01:00.1
	check "pulled: the slot left the guest ($(result hp_pull_unplug_s) s)" eq "$(result hp_pulled_gone)" yes
	check "pulled: fio failed and did not hang ($(result hp_pull_fio_rc), $(result hp_pull_fio_wait) s after)" \
		eq "$([ "$(result hp_pull_fio_rc)" != 0 ] && [ "$(result hp_pull_fio_wait)" -lt 60 ] 2>/dev/null && echo y)" y
	check "pulled: apple_dma said once that the companion is gone ($(result hp_gone_msgs))" \
		eq "$(result hp_gone_msgs)" 1
	check "pulled: no mapping left stuck, remove ran" \
		eq "$(result hp_stuck_msgs)/$(result hp_pull_remove_line)" 0/1
	check "the cold disk still verifies" eq "$(result fio_after)" ok
	check "no oops or warning in the guest" eval '! grep -aqE "Oops|BUG:|WARNING:|Call Trace" "$CONSOLE"'
	stop_broker
	[ $e2e_fail -eq 0 ] || show_context
}

run_iommu() {
	if [ "$arch" = arm64 ]; then
		echo "iommu: SKIPPED (the x86 vIOMMU scenario; arm64's SMMUv3 model cannot serve vfio devices)"
		return
	fi
	say "=== iommu on $tag: a vIOMMU in the VM, apple_dma must refuse ==="
	initrd_for iommu
	start_broker iommu "sim:nvme,size=256M,dart=identity"
	boot iommu "$WORK/iommu.cpio.gz" 300 -device intel-iommu,caching-mode=on
	check "the guest sees IOMMU groups ($(result iommu_groups))" gt "$(result iommu_groups)" 0
	check "apple_dma did not bind the companion" eq "$(result companion_driver)" none
	check "it said why (guest IOMMU)" gt "$(result refusal)" 0
	check "no oops or warning in the guest" eval '! grep -aqE "Oops|BUG:|WARNING:|Call Trace" "$CONSOLE"'
	stop_broker
	[ $e2e_fail -eq 0 ] || show_context
}

# arm64 only: the PCIe host bridge's device-tree node says dma-noncoherent
# (QEMU's own tree, dumped with the same machine options, edited with
# fdtput): apple_dma must refuse the function (issue 12, item 2).
run_noncoherent() {
	if [ "$arch" != arm64 ]; then
		echo "noncoherent: SKIPPED (x86 PCI devices are always cache-coherent; the arm64 guest runs it)"
		return
	fi
	say "=== noncoherent on $tag: a non-coherent PCIe host bridge, apple_dma must refuse ==="
	command -v fdtput >/dev/null || die "fdtput missing (Debian package device-tree-compiler; make deps installs it)"
	"$PROVISION/in-root.sh" --bind "$WORK" -- qemu-system-aarch64 -machine virt,memory-backend=mem,dumpdtb="$WORK/virt.dtb" \
		-cpu max -accel tcg -m 1G -smp 1 -object memory-backend-memfd,id=mem,size=1G,share=on \
		-nodefaults -display none >/dev/null 2>&1
	[ -s "$WORK/virt.dtb" ] || die "QEMU did not dump virt's device tree"
	fdtput -d "$WORK/virt.dtb" /pcie@10000000 dma-coherent 2>/dev/null
	fdtput -t s "$WORK/virt.dtb" /pcie@10000000 dma-noncoherent "" || die "fdtput failed on $WORK/virt.dtb"
	initrd_for noncoherent
	start_broker noncoherent "sim:nvme,size=64M,dart=apple"
	boot noncoherent "$WORK/noncoherent.cpio.gz" 300 -dtb "$WORK/virt.dtb"
	check "the guest booted with the non-coherent tree" eq "$(result dt_noncoherent)" yes
	check "apple_dma bound its companion" eq "$(result companion_driver)" apple_dma
	check "it refused the non-coherent function, saying why" gt "$(result refusal)" 0
	check "no oops or warning in the guest" eval '! grep -aqE "Oops|BUG:|WARNING:|Call Trace" "$CONSOLE"'
	stop_broker
	[ $e2e_fail -eq 0 ] || show_context
}

for s in "${scenarios[@]}"; do
	case $s in
	noncoherent) run_noncoherent ;;
	apple) run_apple ;;
	rebind) run_rebind ;;
	pressure) run_pressure ;;
	strict) run_strict ;;
	reset) run_reset ;;
	iommu) run_iommu ;;
	hotplug) run_hotplug ;;
	*) die "unknown scenario '$s' (apple, rebind, pressure, strict, reset, iommu, hotplug, noncoherent)" ;;
	esac
done
echo "$e2e_pass passed, $e2e_fail failed"
[ $e2e_fail -eq 0 ]
